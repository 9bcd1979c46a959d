#!/usr/bin/env bash
# Memory of the standalone proxy holding many open streams: CONNS (1,000 by
# default) wrk connections loop on streamed OpenAI chat calls through
# `tollgate serve` to `tollgate mock`, whose chunks are DELAY apart (20 ms),
# so about CONNS streams are open at any moment. Prints the requests served
# and the gateway's peak RSS (VmHWM) and its anonymous / file-backed parts.
# Bounded: wrk runs for DURATION (15 s); all processes are stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/../.."

CONNS=${CONNS:-1000}
DURATION=${DURATION:-15s}
DELAY=${DELAY:-20ms}
CHUNKS=${CHUNKS:-20}
BIN=${BIN:-bin/tollgate}
MOCK_PORT=${MOCK_PORT:-19300}
GW_PORT=${GW_PORT:-19301}

command -v wrk >/dev/null || { echo "installing wrk"; apt-get install -y -qq wrk >/dev/null; }
[ -x "$BIN" ] || go build -o "$BIN" ./cmd/tollgate
data=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$data"; }
trap cleanup EXIT

"$BIN" mock --listen 127.0.0.1:$MOCK_PORT --chunk-delay "$DELAY" 2>/dev/null & pids+=($!)
"$BIN" serve --listen 127.0.0.1:$GW_PORT --data-dir "$data" --log-level error \
  --upstream openai=http://127.0.0.1:$MOCK_PORT/openai \
  --upstream anthropic=http://127.0.0.1:$MOCK_PORT/anthropic \
  --upstream gemini=http://127.0.0.1:$MOCK_PORT/gemini & gw=$!; pids+=($gw)
for _ in $(seq 50); do curl -sf http://127.0.0.1:$GW_PORT/healthz >/dev/null && break; sleep 0.1; done
"$BIN" account create bench --plan enterprise --credits 100000000 --data-dir "$data" >/dev/null
"$BIN" account set-tpm bench gpt-4o-mini 1000000000000 --data-dir "$data" >/dev/null
"$BIN" project create bench --account bench --activate --data-dir "$data" >/dev/null
TOKEN=$("$BIN" token mint --data-dir "$data" --project bench)
cat > "$data/stream.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $TOKEN"
wrk.body = '{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"[[mock chunks=$CHUNKS]] Tell me a long joke."}]}'
LUA
# Each connection is a socket at both ends of the gateway.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
wrk -t2 -c"$CONNS" -d"$DURATION" --timeout 10s -s "$data/stream.lua" \
  http://127.0.0.1:$GW_PORT/openai/v1/chat/completions | grep -E 'requests in|Non-2xx|Socket errors' || true
awk '/VmHWM|RssAnon|RssFile/ {printf "%s %.1f MiB\n", $1, $2/1024}' /proc/$gw/status
