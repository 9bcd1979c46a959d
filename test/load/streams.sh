#!/usr/bin/env bash
# Memory of the standalone proxy holding many open streams: CONNS (1,000 by
# default) wrk connections loop on streamed OpenAI chat calls through
# `tollgate serve` to `tollgate mock`, whose chunks are DELAY apart (20 ms),
# so about CONNS streams are open at any moment. Prints the requests served
# and the gateway's peak RSS (VmHWM) and its anonymous / file-backed parts.
# Bounded: wrk runs for DURATION (15 s); all processes are stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/../.."
. test/load/lib.sh

CONNS=${CONNS:-1000}
DURATION=${DURATION:-15s}
DELAY=${DELAY:-20ms}
CHUNKS=${CHUNKS:-20}
BIN=${BIN:-bin/tollgate}
MOCK_PORT=${MOCK_PORT:-19300}
GW_PORT=${GW_PORT:-19301}

command -v wrk >/dev/null || { echo "installing wrk"; apt-get install -y -qq wrk >/dev/null; }
[ -x "$BIN" ] || go build -o "$BIN" ./cmd/tollgate

"$BIN" mock --listen 127.0.0.1:$MOCK_PORT --chunk-delay "$DELAY" 2>/dev/null & pids+=($!)
"$BIN" serve --listen 127.0.0.1:$GW_PORT --data-dir "$data" --log-level error $(upstreams $MOCK_PORT) & gw=$!; pids+=($gw)
wait_healthy $GW_PORT
TOKEN=$(bench_token "$BIN" "$data")
chat_script "$data/stream.lua" "$TOKEN" '{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"[[mock chunks='"$CHUNKS"']] Tell me a long joke."}]}'
# Each connection is a socket at both ends of the gateway.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
wrk -t2 -c"$CONNS" -d"$DURATION" --timeout 10s -s "$data/stream.lua" \
  http://127.0.0.1:$GW_PORT/openai/v1/chat/completions | grep -E 'requests in|Non-2xx|Socket errors' || true
awk '/VmHWM|RssAnon|RssFile/ {printf "%s %.1f MiB\n", $1, $2/1024}' /proc/$gw/status
