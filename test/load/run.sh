#!/usr/bin/env bash
# Proxy overhead on loopback, measured with wrk in one run: the same requests
# straight to the mock upstream and through the gateway. The gateway is
# pinned to core 0. Figures:
#   - gateway CPU per non-streaming request at 64 connections
#     (Δ utime+stime of the gateway process / requests served), with the
#     mock upstream and wrk on core 1 so the gateway's core is its own;
#   - added p50 latency at 1 connection (gateway p50 − direct p50), twice:
#     with everything on core 0 (the gateway's own work), and with wrk and
#     the mock on core 1 (adds the VM's cross-core wake-ups: a proxied
#     request crosses cores four times, a direct one never);
#   - gateway CPU per streamed event (long streams);
#   - gateway peak RSS (VmHWM);
# and the same CPU figures, in the same layout, for two floors (test/load/
# baseline): a bare httputil.ReverseProxy (what net/http costs) and a raw
# HTTP/1.1 forwarder with nothing in the way (what the kernel and Go's
# netpoller cost), each split into user and kernel time.
# OTHER_CORE=0 puts wrk and the mock on the gateway's core for the CPU
# figures too: no cross-core wake-ups, whose cost in this VM is charged to
# the process that sends (the default, 1, keeps the gateway's core its own).
# Bounded: every wrk run has a fixed duration; all processes are stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/../.."
. test/load/lib.sh

DURATION=${DURATION:-15s}
OTHER_CORE=${OTHER_CORE:-1}
# GW_ENV: extra environment for the gateway process, e.g. GW_ENV="GOGC=200".
BIN=${BIN:-bin/tollgate}
MOCK_PORT=${MOCK_PORT:-19100}
GW_PORT=${GW_PORT:-19101}
BASE_PORT=${BASE_PORT:-19102}
RAW_PORT=${RAW_PORT:-19103}
OUT=${OUT:-test/load/results}

command -v wrk >/dev/null || { echo "installing wrk"; apt-get install -y -qq wrk >/dev/null; }
[ -x "$BIN" ] || go build -o "$BIN" ./cmd/tollgate
go build -o "$(dirname "$BIN")/load-baseline" ./test/load/baseline
mkdir -p "$OUT"

taskset -c $OTHER_CORE "$BIN" mock --listen 127.0.0.1:$MOCK_PORT 2>/dev/null & mock=$!; pids+=($mock)
taskset -c 0 env ${GW_ENV:-} "$BIN" serve --listen 127.0.0.1:$GW_PORT --data-dir "$data" --log-level error $(upstreams $MOCK_PORT) & gw=$!; pids+=($gw)
taskset -c 0 "$(dirname "$BIN")/load-baseline" --listen 127.0.0.1:$BASE_PORT --upstream http://127.0.0.1:$MOCK_PORT & base=$!; pids+=($base)
taskset -c 0 "$(dirname "$BIN")/load-baseline" --raw --listen 127.0.0.1:$RAW_PORT --upstream http://127.0.0.1:$MOCK_PORT & raw=$!; pids+=($raw)
wait_healthy $GW_PORT
TOKEN=$(bench_token "$BIN" "$data")
chat_script "$data/plain.lua" "$TOKEN" '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Tell me a joke about load tests."}]}'
# The stream's reply is fixed: the mock seeds its default reply from the
# request body, which the gateway rewrites (stream_options, the account's
# prompt_cache_key), so without it each path would stream a different joke
# and a different number of events. 100 words in 100 chunks: about one
# word per event, as a model streams.
reply=$(for i in $(seq 100); do printf 'word%d ' $i; done)
stream_body='{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"[[mock chunks=100]] [[mock reply='"$reply"']] Tell me a long joke."}]}'
chat_script "$data/stream.lua" "$TOKEN" "$stream_body"

cpu_ticks() { awk '{print $14+$15}' /proc/$1/stat; }
sys_ticks() { awk '{print $15}' /proc/$1/stat; }
# measure NAME PID URL SCRIPT PER: runs 64 connections against URL and
# prints requests, then CPU and kernel CPU of PID in µs per request
# divided by PER (events per stream, or 1).
measure() {
  local t0 s0 t1 s1 n
  t0=$(cpu_ticks $2); s0=$(sys_ticks $2)
  read -r n _ < <(run "$1" "$3" "$4" 64)
  t1=$(cpu_ticks $2); s1=$(sys_ticks $2)
  awk -v n=$n -v t=$((t1-t0)) -v s=$((s1-s0)) -v hz=$hz -v per=$5 'BEGIN{printf "%d %.2f %.2f\n", n, t/hz*1e6/n/per, s/hz*1e6/n/per}'
}
hz=$(getconf CLK_TCK)
WRK_CORE=$OTHER_CORE
run() { # name url script conns -> prints requests and p50 (ms)
  local name=$1 url=$2 script=$3 conns=$4
  taskset -c $WRK_CORE wrk -t1 -c"$conns" -d"$DURATION" --latency -s "$script" "$url" > "$OUT/$name.txt"
  local reqs p50
  reqs=$(awk '/requests in/ {print $1}' "$OUT/$name.txt")
  p50=$(awk '$1=="50%" {v=$2; if (v ~ /us$/) {sub(/us/,"",v); v=v/1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v=v*1000}; print v}' "$OUT/$name.txt")
  echo "$reqs $p50"
}

direct=http://127.0.0.1:$MOCK_PORT/openai/v1/chat/completions
via=http://127.0.0.1:$GW_PORT/openai/v1/chat/completions
bare=http://127.0.0.1:$BASE_PORT/openai/v1/chat/completions
rawurl=http://127.0.0.1:$RAW_PORT/openai/v1/chat/completions

# Warm both paths.
taskset -c $OTHER_CORE wrk -t1 -c8 -d2s -s "$data/plain.lua" "$via" >/dev/null

read -r d64 _ < <(run direct-64 "$direct" "$data/plain.lua" 64)
read -r g64 cpu_req sys_req < <(measure gateway-64 $gw "$via" "$data/plain.lua" 1)
read -r _ base_req base_sys_req < <(measure baseline-64 $base "$bare" "$data/plain.lua" 1)
read -r _ raw_req raw_sys_req < <(measure raw-64 $raw "$rawurl" "$data/plain.lua" 1)

read -r _ xdp50 < <(run direct-1-cross "$direct" "$data/plain.lua" 1)
read -r _ xgp50 < <(run gateway-1-cross "$via" "$data/plain.lua" 1)
xadded=$(awk -v a=$xgp50 -v b=$xdp50 'BEGIN{printf "%.3f", a-b}')
# -a: every thread of the mock moves, not only its first (a Go process
# runs several; without it the "one core" p50 still crossed cores).
taskset -a -p -c 0 $mock >/dev/null; WRK_CORE=0
read -r _ dp50 < <(run direct-1 "$direct" "$data/plain.lua" 1)
read -r _ gp50 < <(run gateway-1 "$via" "$data/plain.lua" 1)
added=$(awk -v a=$gp50 -v b=$dp50 'BEGIN{printf "%.3f", a-b}')
read -r _ bp50 < <(run baseline-1 "$bare" "$data/plain.lua" 1)
badded=$(awk -v a=$bp50 -v b=$dp50 'BEGIN{printf "%.3f", a-b}')
taskset -a -p -c $OTHER_CORE $mock >/dev/null; WRK_CORE=$OTHER_CORE

# events URL: the SSE events one stream delivers to the client on URL.
events() { curl -sN "$1" -H "Authorization: Bearer $TOKEN" -H 'content-type: application/json' -d "$stream_body" | grep -c '^data: '; }
events=$(events "$via")
for u in "$direct" "$bare" "$rawurl"; do
  n=$(events "$u")
  [ "$n" = "$events" ] || { echo "run.sh: $u streams $n events, the gateway $events: the per-event figures would not compare" >&2; exit 1; }
done
read -r _ cpu_event sys_event < <(measure gateway-stream-64 $gw "$via" "$data/stream.lua" $events)
read -r _ base_event base_sys_event < <(measure baseline-stream-64 $base "$bare" "$data/stream.lua" $events)
read -r _ raw_event raw_sys_event < <(measure raw-stream-64 $raw "$rawurl" "$data/stream.lua" $events)
rss=$(awk '/VmHWM/ {printf "%.1f", $2/1024}' /proc/$gw/status)
rss_split=$(awk '/RssAnon|RssFile/ {printf "%s %.1f MiB  ", $1, $2/1024}' /proc/$gw/status)

cat <<RES | tee "$OUT/summary.txt"
duration per run:                 $DURATION (wrk and mock on core $OTHER_CORE, gateway on core 0)
direct, 64 conns:                 $d64 requests
gateway, 64 conns:                $g64 requests
CPU per request (64c), total (kernel):
  gateway                         $cpu_req µs ($sys_req)
  bare ReverseProxy               $base_req µs ($base_sys_req)
  raw forwarder                   $raw_req µs ($raw_sys_req)
p50 direct / gateway (1 conn, one core):   $dp50 ms / $gp50 ms  (added $added ms; bare ReverseProxy adds $badded ms)
p50 direct / gateway (1 conn, wrk+mock on core $OTHER_CORE):  $xdp50 ms / $xgp50 ms  (added $xadded ms)
events per stream (client side):  $events
CPU per streamed event, total (kernel):
  gateway                         $cpu_event µs ($sys_event)
  bare ReverseProxy               $base_event µs ($base_sys_event)
  raw forwarder                   $raw_event µs ($raw_sys_event)
gateway peak RSS:                 $rss MiB  (now: $rss_split)
RES
