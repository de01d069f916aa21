#!/usr/bin/env bash
# Where keygate's CPU per request goes: perf profiles of keygate under the harness's load.
#
#   bash tests/bench/profile.sh          # after `cargo build --release -p keygate -p keygate-bench`
#
# Starts the zero-work upstream and keygate (RUST_LOG=warn, KEYGATE_WORKERS, default
# nproc) like run.sh, makes a grant, then for each load — c=1 (sequential requests) and
# c=64 (closed loop) — records `perf record -e cpu-clock --call-graph dwarf` of the
# keygate process only, and prints the samples grouped by what they do
# (tests/bench/perf_groups.py) plus the top symbols. Files in
# tests/.artifacts/bench-profile/ (perf-c1.data, perf-c64.data, *.txt). A measurement,
# not a test. Needs `perf` (Debian package linux-perf) and permission to profile a
# process of this user (root, or kernel.perf_event_paranoid ≤ 1 for kernel frames).
# Knobs: KG_PROFILE_SECS (10) per load, KG_PROFILE_FREQ (1999) samples/s,
# KG_BENCH_PORT (18180 here: keygate, +1 upstream).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
OUTDIR=$ROOT/tests/.artifacts/bench-profile
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BENCH=$TARGET_DIR/release/keygate-bench
KEYGATE=$TARGET_DIR/release/keygate
SECS=${KG_PROFILE_SECS:-10}
FREQ=${KG_PROFILE_FREQ:-1999}
KG_PORT=${KG_BENCH_PORT:-18180}
UP_PORT=$((KG_PORT + 1))
KG_URL=http://127.0.0.1:$KG_PORT/v1/chat/completions
rm -rf "$OUTDIR"
mkdir -p "$OUTDIR"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
wait_http() { for ((i = 0; i < $2 * 10; i++)); do curl -sf -o /dev/null "$1" && return 0; sleep 0.1; done; return 1; }

"$BENCH" upstream --listen "127.0.0.1:$UP_PORT" 2>"$OUTDIR/upstream.log" &
PIDS+=($!)
wait_http "http://127.0.0.1:$UP_PORT/bench/stats" 10
ADMIN_KEY="bench-admin-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
env KEYGATE_DATA_DIR="$OUTDIR/keygate-data" KEYGATE_LISTEN="127.0.0.1:$KG_PORT" \
  KEYGATE_UPSTREAM_URL="http://127.0.0.1:$UP_PORT/v1" KEYGATE_ADMIN_KEY="$ADMIN_KEY" \
  KEYGATE_WORKERS="${KEYGATE_WORKERS:-$(nproc)}" RUST_LOG=warn "$KEYGATE" serve 2>"$OUTDIR/keygate.log" &
KG_PID=$!
PIDS+=("$KG_PID")
wait_http "http://127.0.0.1:$KG_PORT/healthz" 30
admin() { curl -sf -X "$1" "http://127.0.0.1:$KG_PORT$2" -H "Authorization: Bearer $ADMIN_KEY" -H 'Content-Type: application/json' -d "$3"; }
jget() { python3 -c "import json,sys; print(json.load(sys.stdin)[sys.argv[1]])" "$1"; }
USER_ID=$(admin POST /admin/users '{"name":"bench"}' | jget id)
admin PUT "/admin/users/$USER_ID/openai-key" '{"api_key":"sk-proj-bench-0123456789abcdefghijklmnopqrstuvwxyzABCDEFGH"}' >/dev/null
KEY=$(admin POST "/admin/users/$USER_ID/grants" '{"name":"bench"}' | jget api_key)
"$BENCH" latency --url "$KG_URL" --key "$KEY" --warmup 0 --n 2000 >/dev/null

profile() { # name load-command...
  local name=$1
  shift
  "$@" >"$OUTDIR/load-$name.json" &
  local load=$!
  sleep 1
  perf record -e cpu-clock -F "$FREQ" --call-graph dwarf,16384 -p "$KG_PID" \
    -o "$OUTDIR/perf-$name.data" -- sleep "$SECS" 2>"$OUTDIR/perf-$name.log" || true
  wait "$load"
  local done
  done=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d.get("completed") or (d.get("total_us") or {}).get("n") or 0)' "$OUTDIR/load-$name.json")
  perf report -i "$OUTDIR/perf-$name.data" --no-children --sort sym --stdio -g none --percent-limit 0.3 \
    2>/dev/null >"$OUTDIR/top-$name.txt" || true
  perf script -i "$OUTDIR/perf-$name.data" -F comm,tid,ip,sym 2>/dev/null |
    python3 "$ROOT/tests/bench/perf_groups.py" --title "keygate, $name ($done requests in the load run)" >"$OUTDIR/groups-$name.txt" || true
  cat "$OUTDIR/groups-$name.txt"
  echo "top symbols (self): $OUTDIR/top-$name.txt"
}
# c=1: sequential requests for SECS+2 s; c=64: closed loop.
profile c1 "$BENCH" throughput --url "$KG_URL" --key "$KEY" --concurrency 1 --warmup-secs 0.5 --secs $((SECS + 2)) \
  --watch "keygate=$KG_PID"
profile c64 "$BENCH" throughput --url "$KG_URL" --key "$KEY" --concurrency 64 --warmup-secs 0.5 --secs $((SECS + 2)) \
  --watch "keygate=$KG_PID"
