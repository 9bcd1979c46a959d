# Shared by the load scripts (sourced, not run).

# wait_healthy PORT: wait up to 5 s for the gateway's /healthz.
wait_healthy() {
  for _ in $(seq 50); do curl -sf "http://127.0.0.1:$1/healthz" >/dev/null && return; sleep 0.1; done
}

# bench_token BIN DATA: creates an enterprise account with credits to spare,
# its active project, and prints a token for it. The load is far above any
# plan's TPM: the scripts measure the gateway, not its refusals.
bench_token() {
  "$1" account create bench --plan enterprise --credits 100000000 --data-dir "$2" >/dev/null
  "$1" account set-tpm bench gpt-4o-mini 1000000000000 --data-dir "$2" >/dev/null
  "$1" project create bench --account bench --activate --data-dir "$2" >/dev/null
  "$1" token mint --data-dir "$2" --project bench
}

# chat_script FILE TOKEN BODY: a wrk script that POSTs BODY with TOKEN.
chat_script() {
  cat > "$1" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $2"
wrk.body = '$3'
LUA
}

# upstreams PORT: serve's flags for the mock providers of `tollgate mock` on PORT.
upstreams() {
  local m=http://127.0.0.1:$1
  echo "--upstream openai=$m/openai --upstream anthropic=$m/anthropic --upstream gemini=$m/gemini"
}

# Every process a script starts goes in pids; the script's data dir is data.
# cleanup, on exit, stops them and removes it.
pids=()
data=$(mktemp -d)
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$data"; }
trap cleanup EXIT
