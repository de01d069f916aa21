#!/usr/bin/env bash
# keygate's benchmark harness: every figure in docs/BENCHMARKS.md, in one run.
#
#   bash tests/bench/run.sh
#
# A measurement, not a test: it prints a Markdown table and writes the raw numbers to
# tests/.artifacts/bench-results.json; it never fails on a slow number (only when
# something could not be built, started or measured at all).
#
# What runs, all on this machine's loopback, sharing its cores:
#   - keygate-bench upstream: a zero-work OpenAI upstream (tests/bench/src/upstream.rs)
#   - keygate (cargo build --release -p keygate, RUST_LOG=warn) in front of it
#   - nginx (Debian's nginx-light, apt-get installed when missing and run as root) as a
#     plain reverse proxy in front of the same upstream: proxy_pass over an upstream
#     keep-alive pool, HTTP/1.1, no buffering, as many worker processes as keygate has
#     workers; config, pid, logs and temp dirs in tests/.artifacts/bench-run/nginx. The
#     speed reference (issue 12): every keygate figure is also a ratio to nginx's.
#   - LiteLLM's proxy (PyPI litellm[proxy], venv in tests/.artifacts/bench-venv) in
#     front of the same upstream, as the reference peer
#   - keygate-bench latency/throughput/hold (the load generator), and wrk as a
#     cross-check of the throughput figures
#   - cargo bench -p keygate-core --bench unseal (criterion)
#
# Knobs (environment): KG_BENCH_N (20000) and KG_BENCH_WARMUP (1000) sequential requests
# per path, in KG_BENCH_ROUNDS (10) rounds on new connections;
# KG_BENCH_LITELLM_N (2000) and KG_BENCH_LITELLM_WARMUP (200) for LiteLLM, which is
# ~100x slower; KG_BENCH_SECS (10) and KG_BENCH_WARMUP_SECS (3) per throughput run;
# KG_BENCH_CONC (64); KG_BENCH_HOLD (1000) idle streams (10,000 is issue 12's target:
# keygate holds two descriptors per stream, so that needs `ulimit -Hn` above ~20,100);
# KG_BENCH_PORT (18080: keygate, +1 upstream, +2 LiteLLM, +3 nginx); KEYGATE_WORKERS
# (nproc): keygate's workers and nginx's worker_processes in the main figures;
# KG_BENCH_WORKERS_LIST ("1 2"): the worker counts of the scaling phase (keygate and
# nginx restarted with each; KG_BENCH_WORKERS_N (5000) requests at c=1 per path there);
# KG_BENCH_SKIP_LITELLM=1, KG_BENCH_SKIP_WRK=1, KG_BENCH_SKIP_NGINX=1,
# KG_BENCH_SKIP_WORKERS=1, KG_BENCH_SKIP_UNSEAL=1, KG_BENCH_SKIP_LITELLM_2W=1,
# KG_BENCH_SKIP_STORES=1 to leave a part out; KG_BENCH_ONLY_STORES=1 to run only the
# issue-14 phase (below);
# KG_BENCH_LITELLM_SPEC (the pip spec); KG_BENCH_GIT_REV=HEAD to build keygate from a
# commit (a clean `git archive`) instead of the working tree; KG_BENCH_QUIET_WAIT (300)
# and KG_BENCH_QUIET_BUSY (15): before each measuring phase, wait up to that many
# seconds for the machine to be less than that % busy (0 to skip the wait);
# KG_BENCH_FOREIGN_MAX (0.3) and KG_BENCH_ATTEMPTS (3): a measurement during which
# other processes used more than that many cores is taken again (see measure()).
#
# Issue 14 phase ("stores and nodes"; KG_BENCH_SKIP_STORES=1 leaves it out): a
# PostgreSQL started with tests/lib/postgres.sh as a non-root user in a temp dir, with
# fsync, full_page_writes and synchronous_commit ON (KG_PG_DURABLE=1: a real server's
# settings, not the test suite's fsync=off), then, on the same upstream, with the same
# kind of grant (no limits) made through the admin API of each store:
#   - one keygate node on sled, then one on PostgreSQL (`KEYGATE_STORE_URL`): c=1
#     latency alternating with direct requests (KG_BENCH_STORES_N, default 5000) and
#     c=64 throughput, with the CPU of keygate, PostgreSQL (its whole process tree)
#     and the upstream;
#   - nginx (a second instance, on KG_BENCH_PORT+4) over an upstream block of keygate
#     nodes (HTTP/1.1 keep-alive pool): 1 node, then 3 nodes on the same PostgreSQL
#     (ports KG_BENCH_PORT+10..12, same KEYGATE_MASTER_KEYS, admin key and public URL,
#     each its own data dir), c=64 throughput and c=1 latency.
# KG_BENCH_NODE_WORKERS (KEYGATE_WORKERS): actix workers of each node in this phase.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
ART=$ROOT/tests/.artifacts
RUN=$ART/bench-run
OUT=$ART/bench-results.json
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BENCH=$TARGET_DIR/release/keygate-bench
KEYGATE=$TARGET_DIR/release/keygate
VENV=$ART/bench-venv

N=${KG_BENCH_N:-20000}
WARMUP=${KG_BENCH_WARMUP:-1000}
LL_N=${KG_BENCH_LITELLM_N:-2000}
LL_WARMUP=${KG_BENCH_LITELLM_WARMUP:-200}
SECS=${KG_BENCH_SECS:-10}
WARMUP_SECS=${KG_BENCH_WARMUP_SECS:-3}
CONC=${KG_BENCH_CONC:-64}
ROUNDS=${KG_BENCH_ROUNDS:-10}
HOLD=${KG_BENCH_HOLD:-1000}
KG_PORT=${KG_BENCH_PORT:-18080}
UP_PORT=$((KG_PORT + 1))
LL_PORT=$((KG_PORT + 2))
NG_PORT=$((KG_PORT + 3))
KG_WORKERS=${KEYGATE_WORKERS:-$(nproc)}
WORKERS_LIST=${KG_BENCH_WORKERS_LIST:-"1 2"}
WORKERS_N=${KG_BENCH_WORKERS_N:-5000}
LL_SPEC=${KG_BENCH_LITELLM_SPEC:-"litellm[proxy]==1.106.2"}
CLK_TCK=$(getconf CLK_TCK 2>/dev/null || echo 100)
ONLY_STORES=${KG_BENCH_ONLY_STORES:-0}
if [[ $ONLY_STORES == 1 ]]; then
  KG_BENCH_SKIP_LITELLM=1 KG_BENCH_SKIP_UNSEAL=1 KG_BENCH_SKIP_WORKERS=1 KG_BENCH_SKIP_WRK=1
  KG_BENCH_SKIP_STORES=0
fi
STORES_N=${KG_BENCH_STORES_N:-5000}
NODE_WORKERS=${KG_BENCH_NODE_WORKERS:-$KG_WORKERS}
LB_PORT=$((KG_PORT + 4))
NODE_PORTS=("$((KG_PORT + 10))" "$((KG_PORT + 11))" "$((KG_PORT + 12))")
LB_URL=http://127.0.0.1:$LB_PORT/v1/chat/completions

UP_URL=http://127.0.0.1:$UP_PORT/v1/chat/completions
KG_URL=http://127.0.0.1:$KG_PORT/v1/chat/completions
LL_URL=http://127.0.0.1:$LL_PORT/v1/chat/completions
NG_URL=http://127.0.0.1:$NG_PORT/v1/chat/completions

step() { printf '\n==> %s\n' "$*" >&2; }
note() { printf '    %s\n' "$*" >&2; }

rm -rf "$RUN"
mkdir -p "$RUN"

# Every process this script starts, stopped by pid on exit (and the PostgreSQL server
# of the issue-14 phase, through tests/lib/postgres.sh, which started it).
PIDS=()
KG_PID=""
NG_PID=""
PG_STARTED=0
cleanup() {
  for pid in "${PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  if ((PG_STARTED)); then kg_pg_stop; fi
}
trap cleanup EXIT

wait_http() { # url seconds
  local url=$1 secs=$2 i
  for ((i = 0; i < secs * 10; i++)); do
    if curl -sf -o /dev/null "$url"; then return 0; fi
    sleep 0.1
  done
  return 1
}

jget() { python3 -c "import json,sys; print(json.load(sys.stdin)[sys.argv[1]])" "$1"; }

mem_json() { # pid -> {"VmRSS":..,"RssAnon":..,"RssFile":..,"VmHWM":..} in KiB
  awk 'BEGIN { printf "{"; n = 0 }
    /^(VmRSS|RssAnon|RssFile|RssShmem|VmHWM|Threads):/ { sub(":", "", $1); printf "%s\"%s\": %s", (n++ ? ", " : ""), $1, $2 }
    END { print "}" }' "/proc/$1/status"
}

# Waits (up to KG_BENCH_QUIET_WAIT s, default 300) until the machine is quiet: all CPUs
# less than KG_BENCH_QUIET_BUSY % busy (default 15) for 3 seconds in a row, so other
# people's builds and tests do not end up in the figures. Appends to quiet.txt.
QUIET_WAIT=${KG_BENCH_QUIET_WAIT:-300}
QUIET_BUSY=${KG_BENCH_QUIET_BUSY:-15}
busy_pct() { # CPU busy % over the next second
  local a b
  a=$(awk '/^cpu / {print $2+$3+$4+$7+$8+$9, $2+$3+$4+$5+$6+$7+$8+$9; exit}' /proc/stat)
  sleep 1
  b=$(awk '/^cpu / {print $2+$3+$4+$7+$8+$9, $2+$3+$4+$5+$6+$7+$8+$9; exit}' /proc/stat)
  awk -v a="$a" -v b="$b" 'BEGIN { split(a, x, " "); split(b, y, " "); t = y[2] - x[2]; printf "%d", (t > 0 ? 100 * (y[1] - x[1]) / t : 0) }'
}
wait_quiet() { # label
  local start=$SECONDS quiet=0 pct=100
  while ((SECONDS - start < QUIET_WAIT)); do
    pct=$(busy_pct)
    if ((pct < QUIET_BUSY)); then quiet=$((quiet + 1)); else quiet=0; fi
    ((quiet >= 3)) && break
  done
  local waited=$((SECONDS - start))
  echo "$1: waited ${waited}s, last second ${pct}% busy$( ((quiet >= 3)) || echo ' (NOT quiet: gave up waiting)')" >>"$RUN/quiet.txt"
  note "quiet check before $1: waited ${waited}s, ${pct}% busy$( ((quiet >= 3)) || echo ' — not quiet, going on anyway')"
}

# measure OUT CMD...: one keygate-bench measurement (its JSON to OUT). When processes
# other than the watched ones used more than KG_BENCH_FOREIGN_MAX cores (default 0.3)
# meanwhile, it waits for quiet and measures again, up to KG_BENCH_ATTEMPTS (3) times,
# and keeps the least disturbed attempt (every attempt stays in OUT.attemptN).
FOREIGN_MAX=${KG_BENCH_FOREIGN_MAX:-0.3}
ATTEMPTS=${KG_BENCH_ATTEMPTS:-3}
measure() {
  local out=$1 a f best="" best_f=999
  shift
  for ((a = 1; a <= ATTEMPTS; a++)); do
    "$@" >"$out.attempt$a"
    f=$(python3 -c 'import json,sys; print(round(json.load(open(sys.argv[1])).get("foreign_cores") or 0, 3))' "$out.attempt$a")
    note "$(basename "$out") attempt $a: other processes used $f cores meanwhile"
    if awk -v f="$f" -v b="$best_f" 'BEGIN { exit !(f < b) }'; then
      best=$out.attempt$a
      best_f=$f
    fi
    if awk -v f="$f" -v m="$FOREIGN_MAX" 'BEGIN { exit !(f <= m) }'; then break; fi
    if ((a < ATTEMPTS)); then wait_quiet "$(basename "$out" .json), attempt $((a + 1))"; fi
  done
  python3 - "$best" "$out" "$((a > ATTEMPTS ? ATTEMPTS : a))" <<'PY'
import json, sys
best, out, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
d = json.load(open(best))
d["attempts"] = n
d["foreign_cores_per_attempt"] = [
    json.load(open(f"{out}.attempt{i}")).get("foreign_cores") for i in range(1, n + 1)
]
json.dump(d, open(out, "w"))
PY
}

port_free() {
  ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Held streams need 2 descriptors each in keygate (client + upstream socket) and one in
# the load generator and the upstream: raise the soft limit to the hard one (raising
# the hard limit needs CAP_SYS_RESOURCE, which a container may not have).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if (($(ulimit -n) < 2 * HOLD + 128)); then
  note "ulimit -n is $(ulimit -n): fewer than $((2 * HOLD + 128)) for $HOLD held streams; the hold test will fail part-way"
fi

for p in "$KG_PORT" "$UP_PORT" "$LL_PORT" "$NG_PORT" "$LB_PORT" "${NODE_PORTS[@]}"; do
  if ! port_free "$p"; then
    echo "port $p is in use; set KG_BENCH_PORT to another base" >&2
    exit 1
  fi
done

# ---------------------------------------------------------------------------- setup
if [[ -n "${KG_BENCH_GIT_REV:-}" ]]; then
  KG_SOURCE_DESC="commit $(git rev-parse --short "$KG_BENCH_GIT_REV")"
else
  KG_SOURCE_DESC="working tree: HEAD $(git rev-parse --short HEAD 2>/dev/null || echo unknown) + $(git status --porcelain -- crates migrations Cargo.toml Cargo.lock 2>/dev/null | wc -l) uncommitted paths under crates/, migrations/, Cargo.*"
fi
step "machine"
{
  echo "{"
  echo "  \"date\": \"$(date -u +%Y-%m-%dT%H:%M:%SZ)\","
  echo "  \"nproc\": $(nproc),"
  echo "  \"cpu_model\": \"$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')\","
  echo "  \"kernel\": \"$(uname -r)\","
  echo "  \"mem_total_kb\": $(awk '/MemTotal/ {print $2}' /proc/meminfo),"
  echo "  \"loadavg_at_start\": \"$(cut -d' ' -f1-3 /proc/loadavg)\","
  echo "  \"git_commit\": \"$(git rev-parse --short HEAD 2>/dev/null || echo unknown)\","
  echo "  \"keygate_source\": \"$KG_SOURCE_DESC\","
  echo "  \"rustc\": \"$(rustc --version)\","
  echo "  \"ulimit_n\": $(ulimit -n),"
  echo "  \"keygate_workers\": $KG_WORKERS, \"workers_list\": \"$WORKERS_LIST\", \"workers_n\": $WORKERS_N,"
  echo "  \"n\": $N, \"warmup\": $WARMUP, \"litellm_n\": $LL_N, \"litellm_warmup\": $LL_WARMUP,"
  echo "  \"secs\": $SECS, \"warmup_secs\": $WARMUP_SECS, \"concurrency\": $CONC, \"hold\": $HOLD,"
  echo "  \"stores_n\": $STORES_N, \"node_workers\": $NODE_WORKERS, \"only_stores\": $ONLY_STORES"
  echo "}"
} >"$RUN/machine.json"
note "$(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-), load $(cut -d' ' -f1-3 /proc/loadavg)"

if [[ -n "${KG_BENCH_GIT_REV:-}" ]]; then
  # Benchmark a commit rather than the working tree (which others may be editing):
  # a clean `git archive` of it, built in its own directory.
  REV=$(git rev-parse --short "$KG_BENCH_GIT_REV")
  SRC=$ART/bench-src/$REV
  step "keygate from commit $REV: cargo build --release -p keygate in $SRC"
  if [[ ! -f $SRC/Cargo.toml ]]; then
    mkdir -p "$SRC"
    git archive "$REV" | tar -x -C "$SRC"
  fi
  # The harness itself always comes from the working tree (the commit's workspace may
  # list tests/bench as a member before the files are committed).
  rm -rf "$SRC/tests/bench" && mkdir -p "$SRC/tests" && cp -r "$ROOT/tests/bench" "$SRC/tests/bench"
  (cd "$SRC" && CARGO_TARGET_DIR="$SRC/target" cargo build --release -p keygate)
  KEYGATE=$SRC/target/release/keygate
  KEYGATE_SRC=$SRC
else
  step "cargo build --release -p keygate"
  cargo build --release -p keygate
  KEYGATE_SRC=$ROOT
fi
step "cargo build --release -p keygate-bench"
cargo build --release -p keygate-bench

USE_WRK=0
if [[ "${KG_BENCH_SKIP_WRK:-}" != "1" ]]; then
  if ! command -v wrk >/dev/null && [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
    step "apt-get install -y wrk (throughput cross-check)"
    (apt-get install -y wrk >/dev/null 2>&1 || { apt-get update >/dev/null 2>&1 && apt-get install -y wrk >/dev/null 2>&1; }) || true
  fi
  command -v wrk >/dev/null && USE_WRK=1 || note "wrk not available: no cross-check"
fi

USE_NGINX=0
if [[ "${KG_BENCH_SKIP_NGINX:-}" != "1" ]]; then
  if ! command -v nginx >/dev/null && [[ ! -x /usr/sbin/nginx ]] && [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
    step "apt-get install -y nginx-light (the reverse-proxy reference)"
    (apt-get install -y nginx-light >/dev/null 2>&1 || { apt-get update >/dev/null 2>&1 && apt-get install -y nginx-light >/dev/null 2>&1; }) || true
  fi
  NGINX_BIN=$(command -v nginx || echo /usr/sbin/nginx)
  if [[ -x $NGINX_BIN ]]; then
    USE_NGINX=1
    "$NGINX_BIN" -v 2>&1 | sed 's/^nginx version: //' >"$RUN/nginx-version.txt"
  else
    echo "nginx not available (apt-get install nginx-light)" >"$RUN/nginx-skipped.txt"
    note "nginx not available: no nginx figures"
  fi
else
  echo "skipped (KG_BENCH_SKIP_NGINX=1)" >"$RUN/nginx-skipped.txt"
fi

USE_LITELLM=0
if [[ "${KG_BENCH_SKIP_LITELLM:-}" != "1" ]]; then
  step "LiteLLM proxy ($LL_SPEC) in $VENV"
  if [[ -x "$VENV/bin/python" ]] && "$VENV/bin/python" -c 'import litellm.proxy.proxy_server' >/dev/null 2>&1; then
    note "already installed"
  else
    (python3 -m venv "$VENV" && "$VENV/bin/pip" install -q --upgrade pip &&
      "$VENV/bin/pip" install -q "$LL_SPEC") >"$RUN/litellm-install.log" 2>&1 || true
  fi
  if "$VENV/bin/python" -c 'import litellm.proxy.proxy_server' >/dev/null 2>&1; then
    USE_LITELLM=1
    "$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("litellm"))' >"$RUN/litellm-version.txt" 2>/dev/null || true
  else
    echo "LiteLLM could not be installed; see $RUN/litellm-install.log" >"$RUN/litellm-skipped.txt"
    tail -5 "$RUN/litellm-install.log" >>"$RUN/litellm-skipped.txt" 2>/dev/null || true
    note "$(head -1 "$RUN/litellm-skipped.txt")"
  fi
else
  echo "skipped (KG_BENCH_SKIP_LITELLM=1)" >"$RUN/litellm-skipped.txt"
fi

# ----------------------------------------------------------------------- unseal
if [[ "${KG_BENCH_SKIP_UNSEAL:-}" != "1" ]]; then
  step "cargo bench -p keygate-core --bench unseal"
  if [[ $KEYGATE_SRC == "$ROOT" ]]; then CRIT_TARGET=$TARGET_DIR; else CRIT_TARGET=$KEYGATE_SRC/target; fi
  # Build first, then wait for a quiet machine, then measure.
  (cd "$KEYGATE_SRC" && CARGO_TARGET_DIR="$CRIT_TARGET" cargo bench -p keygate-core --bench unseal --no-run)
  wait_quiet unseal
  (cd "$KEYGATE_SRC" && CARGO_TARGET_DIR="$CRIT_TARGET" cargo bench -p keygate-core --bench unseal) 2>&1 | tee "$RUN/unseal.txt" >&2
  for f in unseal seal; do
    est=$CRIT_TARGET/criterion/$f/new/estimates.json
    if [[ -f $est ]]; then cp "$est" "$RUN/criterion-$f.json"; fi
  done
fi

# ------------------------------------------------------------ upstream + keygate
wait_quiet "keygate measurements"
cut -d' ' -f1-3 /proc/loadavg >"$RUN/loadavg-before-measuring.txt"
step "zero-work upstream on :$UP_PORT"
"$BENCH" upstream --listen "127.0.0.1:$UP_PORT" 2>"$RUN/upstream.log" &
UP_PID=$!
PIDS+=("$UP_PID")
wait_http "http://127.0.0.1:$UP_PORT/bench/stats" 10 || { echo "upstream did not start" >&2; exit 1; }

# nginx as a plain reverse proxy over the same upstream, run in the foreground as this
# user (`user` only matters when started as root: then its workers stay this user too),
# with everything it writes under $RUN/nginx.
NG_DIR=$RUN/nginx
nginx_conf() { # dir listen-port worker_processes server... -> dir/nginx.conf
  local dir=$1 port=$2 workers=$3 servers="" s
  shift 3
  for s in "$@"; do servers+="    server $s;"$'\n'; done
  mkdir -p "$dir/tmp"
  cat >"$dir/nginx.conf" <<NGINX
daemon off;
master_process on;
worker_processes $workers;
user $(id -un) $(id -gn);
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events {
  worker_connections 16384;
}
http {
  access_log off;
  client_body_temp_path $dir/tmp/body;
  proxy_temp_path $dir/tmp/proxy;
  fastcgi_temp_path $dir/tmp/fastcgi;
  uwsgi_temp_path $dir/tmp/uwsgi;
  scgi_temp_path $dir/tmp/scgi;
  tcp_nodelay on;
  keepalive_timeout 75s;
  keepalive_requests 10000000;
  upstream bench_upstream {
$servers    keepalive 256;
    keepalive_requests 10000000;
    keepalive_timeout 75s;
  }
  server {
    listen 127.0.0.1:$port;
    location / {
      proxy_pass http://bench_upstream;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
      proxy_request_buffering off;
    }
  }
}
NGINX
}
start_nginx() { # worker_processes
  nginx_conf "$NG_DIR" "$NG_PORT" "$1" "127.0.0.1:$UP_PORT"
  "$NGINX_BIN" -p "$NG_DIR" -c "$NG_DIR/nginx.conf" -e "$NG_DIR/error.log" 2>>"$NG_DIR/stderr.log" &
  NG_PID=$!
  PIDS+=("$NG_PID")
  wait_http "http://127.0.0.1:$NG_PORT/bench/stats" 10 || { echo "nginx did not start; see $NG_DIR" >&2; cat "$NG_DIR/error.log" "$NG_DIR/stderr.log" >&2; exit 1; }
  note "nginx pid $NG_PID, worker_processes $1"
}
stop_nginx() {
  kill "$NG_PID" 2>/dev/null || true
  wait "$NG_PID" 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do port_free "$NG_PORT" && break; sleep 0.1; done
}
# The main phases (everything up to the LiteLLM runs but the issue-14 phase); left
# out with KG_BENCH_ONLY_STORES=1. Not indented, to keep the history readable.
if [[ $ONLY_STORES != 1 ]]; then
if ((USE_NGINX)); then
  step "nginx $(cat "$RUN/nginx-version.txt") reverse proxy on :$NG_PORT"
  start_nginx "$KG_WORKERS"
fi

step "keygate serve on :$KG_PORT (RUST_LOG=warn, $KG_WORKERS workers)"
ADMIN_KEY="bench-admin-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
start_keygate() { # log-name [workers]
  env KEYGATE_DATA_DIR="$RUN/keygate-data" \
    KEYGATE_WORKERS="${2:-$KG_WORKERS}" \
    KEYGATE_LISTEN="127.0.0.1:$KG_PORT" \
    KEYGATE_UPSTREAM_URL="http://127.0.0.1:$UP_PORT/v1" \
    KEYGATE_ADMIN_KEY="$ADMIN_KEY" \
    RUST_LOG=warn \
    "$KEYGATE" serve 2>"$RUN/$1" &
  KG_PID=$!
  PIDS+=("$KG_PID")
  wait_http "http://127.0.0.1:$KG_PORT/healthz" 30 || { echo "keygate did not start; see $RUN/$1" >&2; cat "$RUN/$1" >&2; exit 1; }
  note "keygate pid $KG_PID, RSS right after start $(awk '/VmRSS/ {print $2}' "/proc/$KG_PID/status") kB"
}
stop_keygate() {
  kill "$KG_PID" 2>/dev/null || true
  wait "$KG_PID" 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do port_free "$KG_PORT" && break; sleep 0.1; done
}
start_keygate keygate.log
mem_json "$KG_PID" >"$RUN/mem-start.json"

admin() { # method path json
  curl -sf -X "$1" "http://127.0.0.1:$KG_PORT$2" -H "Authorization: Bearer $ADMIN_KEY" \
    -H 'Content-Type: application/json' -d "$3"
}
USER_ID=$(admin POST /admin/users '{"name":"bench"}' | jget id)
admin PUT "/admin/users/$USER_ID/openai-key" '{"api_key":"sk-proj-bench-0123456789abcdefghijklmnopqrstuvwxyzABCDEFGH"}' >/dev/null
GRANT_KEY=$(admin POST "/admin/users/$USER_ID/grants" '{"name":"bench"}' | jget api_key)
[[ $GRANT_KEY == kg_* ]] || { echo "no grant key" >&2; exit 1; }
note "grant ready"
# A grant with every limit set (none of them reached here), so the policy and account
# phases run in full: rate buckets, concurrency lease, budget reservation with the
# prompt tokenized, settlement. Keygates from before limits refuse the field: then the
# limited paths are left out.
LIMITED_KEY=$(admin POST "/admin/users/$USER_ID/grants" \
  '{"name":"bench-limited","limits":{"rpm":100000000,"tpm":1000000000000,"max_concurrency":100000,"budget":{"usd":1000000,"tokens":1000000000000,"period":"month"}}}' \
  2>/dev/null | jget api_key 2>/dev/null || true)
if [[ $LIMITED_KEY == kg_* ]]; then note "grant with limits ready"; else LIMITED_KEY=""; note "this keygate has no grant limits: limited paths skipped"; fi

# ------------------------------------------------------------------------ memory
step "memory: idle RSS after a little traffic, then $HOLD idle streams"
"$BENCH" latency --url "$KG_URL" --key "$GRANT_KEY" --warmup 0 --n 200 >"$RUN/little-traffic.json"
"$BENCH" latency --url "$KG_URL" --key "$GRANT_KEY" --warmup 0 --n 50 --stream >>"$RUN/little-traffic.json"
sleep 2
mem_json "$KG_PID" >"$RUN/mem-idle.json"
note "idle: $(cat "$RUN/mem-idle.json") (KiB)"
"$BENCH" hold --url "$KG_URL" --key "$GRANT_KEY" --n "$HOLD" --pid "$KG_PID" \
  --upstream "http://127.0.0.1:$UP_PORT" >"$RUN/hold.json"
note "$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print("open", d["open"], "of", d["requested"], "| RSS", d["rss_before_kb"], "->", d["rss_with_kb"], "kB | upstream held", (d["upstream_with"] or {}).get("hold_open"), "| upstream released after closing:", d["upstream_released_after_s"], "s")' "$RUN/hold.json")"

# A fresh keygate (same data) for the timings, so the thousand streams above leave
# nothing behind in it (allocator state, pooled upstream connections).
step "keygate restarted for the timings"
stop_keygate
start_keygate keygate-timings.log
"$BENCH" latency --url "$KG_URL" --key "$GRANT_KEY" --warmup 0 --n 200 >/dev/null

# ------------------------------------------------------- latency at concurrency 1
# Requests alternate direct, keygate, direct, keygate, ... on two keep-alive
# connections, so both see the same conditions and the difference is keygate's; in
# $ROUNDS rounds on new connections, so that each of keygate's workers serves some.
step "latency, concurrency 1: $WARMUP warmup + $N sequential non-stream requests per path, direct and via keygate alternating"
measure "$RUN/latency-keygate.json" "$BENCH" latency --url "$KG_URL" --key "$GRANT_KEY" \
  --baseline-url "$UP_URL" --warmup "$WARMUP" --n "$N" --rounds "$ROUNDS" \
  --clk-tck "$CLK_TCK" --watch "keygate=$KG_PID" --watch "upstream=$UP_PID"

if ((USE_NGINX)); then
  step "latency, concurrency 1: the same through nginx, direct and via nginx alternating"
  measure "$RUN/latency-nginx.json" "$BENCH" latency --url "$NG_URL" \
    --baseline-url "$UP_URL" --warmup "$WARMUP" --n "$N" --rounds "$ROUNDS" \
    --clk-tck "$CLK_TCK" --watch "nginx=$NG_PID" --watch "upstream=$UP_PID"
fi

step "streaming time to first byte: $WARMUP warmup + $N sequential streams per path, alternating"
measure "$RUN/ttfb-keygate.json" "$BENCH" latency --url "$KG_URL" --key "$GRANT_KEY" \
  --baseline-url "$UP_URL" --warmup "$WARMUP" --n "$N" --rounds "$ROUNDS" --stream \
  --clk-tck "$CLK_TCK" --watch "keygate=$KG_PID" --watch "upstream=$UP_PID"
if ((USE_NGINX)); then
  measure "$RUN/ttfb-nginx.json" "$BENCH" latency --url "$NG_URL" \
    --baseline-url "$UP_URL" --warmup "$WARMUP" --n "$N" --rounds "$ROUNDS" --stream \
    --clk-tck "$CLK_TCK" --watch "nginx=$NG_PID" --watch "upstream=$UP_PID"
fi

if [[ -n $LIMITED_KEY ]]; then
  step "latency, concurrency 1, grant with limits: direct and via keygate alternating"
  measure "$RUN/latency-keygate-limited.json" "$BENCH" latency --url "$KG_URL" --key "$LIMITED_KEY" \
    --baseline-url "$UP_URL" --warmup "$WARMUP" --n "$N" --rounds "$ROUNDS" \
    --clk-tck "$CLK_TCK" --watch "keygate=$KG_PID" --watch "upstream=$UP_PID"
fi

wait_quiet "throughput"
step "throughput, concurrency $CONC: ${WARMUP_SECS}s warmup + ${SECS}s"
measure "$RUN/tput-direct.json" "$BENCH" throughput --url "$UP_URL" --concurrency "$CONC" \
  --warmup-secs "$WARMUP_SECS" --secs "$SECS" \
  --clk-tck "$CLK_TCK" --watch "keygate=$KG_PID" --watch "upstream=$UP_PID"
measure "$RUN/tput-keygate.json" "$BENCH" throughput --url "$KG_URL" --key "$GRANT_KEY" --concurrency "$CONC" \
  --warmup-secs "$WARMUP_SECS" --secs "$SECS" \
  --clk-tck "$CLK_TCK" --watch "keygate=$KG_PID" --watch "upstream=$UP_PID"
if [[ -n $LIMITED_KEY ]]; then
  measure "$RUN/tput-keygate-limited.json" "$BENCH" throughput --url "$KG_URL" --key "$LIMITED_KEY" --concurrency "$CONC" \
    --warmup-secs "$WARMUP_SECS" --secs "$SECS" \
    --clk-tck "$CLK_TCK" --watch "keygate=$KG_PID" --watch "upstream=$UP_PID"
fi
if ((USE_NGINX)); then
  measure "$RUN/tput-nginx.json" "$BENCH" throughput --url "$NG_URL" --concurrency "$CONC" \
    --warmup-secs "$WARMUP_SECS" --secs "$SECS" \
    --clk-tck "$CLK_TCK" --watch "nginx=$NG_PID" --watch "upstream=$UP_PID"
fi
mem_json "$KG_PID" >"$RUN/mem-after-load.json"

cat >"$RUN/post.lua" <<'LUA'
wrk.method = "POST"
wrk.body = '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello."}]}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. (os.getenv("KG_BENCH_KEY") or "sk-bench")
LUA
run_wrk() { # name url key
  KG_BENCH_KEY=$3 wrk -t1 -c"$CONC" -d"${WARMUP_SECS}s" -s "$RUN/post.lua" "$2" >/dev/null 2>&1 || true
  KG_BENCH_KEY=$3 wrk -t1 -c"$CONC" -d"${SECS}s" --latency -s "$RUN/post.lua" "$2" >"$RUN/wrk-$1.txt" 2>&1 || true
}
if ((USE_WRK)); then
  step "wrk cross-check (1 thread, $CONC connections, ${SECS}s)"
  run_wrk direct "$UP_URL" sk-bench
  run_wrk keygate "$KG_URL" "$GRANT_KEY"
  if ((USE_NGINX)); then run_wrk nginx "$NG_URL" sk-bench; fi
fi

# ----------------------------------------------------------- scaling with workers
# keygate and nginx restarted with each worker count: c=1 latency (shorter) and c=64
# throughput with the CPU each used per request, for sizing a machine (issue 12, 4).
if [[ "${KG_BENCH_SKIP_WORKERS:-}" != "1" ]]; then
  for w in $WORKERS_LIST; do
    step "$w worker(s): keygate and nginx restarted"
    stop_keygate
    start_keygate "keygate-w$w.log" "$w"
    "$BENCH" latency --url "$KG_URL" --key "$GRANT_KEY" --warmup 0 --n 200 >/dev/null
    if ((USE_NGINX)); then stop_nginx; start_nginx "$w"; fi
    wait_quiet "$w worker(s)"
    measure "$RUN/latency-keygate-w$w.json" "$BENCH" latency --url "$KG_URL" --key "$GRANT_KEY" \
      --baseline-url "$UP_URL" --warmup "$WARMUP" --n "$WORKERS_N" --rounds "$ROUNDS" \
      --clk-tck "$CLK_TCK" --watch "keygate=$KG_PID" --watch "upstream=$UP_PID"
    measure "$RUN/tput-keygate-w$w.json" "$BENCH" throughput --url "$KG_URL" --key "$GRANT_KEY" --concurrency "$CONC" \
      --warmup-secs "$WARMUP_SECS" --secs "$SECS" \
      --clk-tck "$CLK_TCK" --watch "keygate=$KG_PID" --watch "upstream=$UP_PID"
    if ((USE_NGINX)); then
      measure "$RUN/latency-nginx-w$w.json" "$BENCH" latency --url "$NG_URL" \
        --baseline-url "$UP_URL" --warmup "$WARMUP" --n "$WORKERS_N" --rounds "$ROUNDS" \
        --clk-tck "$CLK_TCK" --watch "nginx=$NG_PID" --watch "upstream=$UP_PID"
      measure "$RUN/tput-nginx-w$w.json" "$BENCH" throughput --url "$NG_URL" --concurrency "$CONC" \
        --warmup-secs "$WARMUP_SECS" --secs "$SECS" \
        --clk-tck "$CLK_TCK" --watch "nginx=$NG_PID" --watch "upstream=$UP_PID"
    fi
  done
fi

# keygate and nginx are done: stop them so they do not share the cores with LiteLLM.
stop_keygate
if ((USE_NGINX)); then stop_nginx; fi
fi # the main phases

# ------------------------------------------------- issue 14: stores and nodes
# One keygate node on sled beside one on PostgreSQL, then 1 and 3 PostgreSQL nodes
# behind nginx (see the header). Every node gets the same environment but its port,
# data dir and store; the PostgreSQL nodes share one database, master keyring, admin
# key and public URL, as behind a real load balancer.
if [[ "${KG_BENCH_SKIP_STORES:-}" != "1" ]]; then
  step "issue 14: PostgreSQL (tests/lib/postgres.sh, KG_PG_DURABLE=1: fsync on)"
  # shellcheck source=tests/lib/postgres.sh
  source "$ROOT/tests/lib/postgres.sh"
  KG_PG_DURABLE=1 kg_pg_start
  PG_STARTED=1
  PG_PID=$(head -n 1 "$KG_PG_DIR/data/postmaster.pid")
  # keygate refuses unknown KEYGATE_* variables, so the test ones leave the
  # environment; the URL's password is only ever in these variables, never printed.
  PG_ADMIN_URL=$KG_TEST_PG_URL
  unset KG_TEST_PG_URL KG_TEST_PG_CA KG_REQUIRE_PG
  PSQL=("$KG_PG_BIN/psql" -X -q -v ON_ERROR_STOP=1)
  "${PSQL[@]}" "$PG_ADMIN_URL" -c "CREATE DATABASE kg_bench"
  # Plain TCP on loopback, as the recorded figures (a URL without sslmode prefers TLS).
  PG_URL="${PG_ADMIN_URL%/postgres}/kg_bench?sslmode=disable"
  "${PSQL[@]}" -At "$PG_ADMIN_URL" -c "SELECT version()" >"$RUN/pg-version.txt"
  "${PSQL[@]}" -At -F= "$PG_ADMIN_URL" -c "SELECT name, setting FROM pg_settings
    WHERE name IN ('fsync', 'synchronous_commit', 'full_page_writes', 'wal_sync_method',
                   'shared_buffers', 'max_connections', 'ssl') ORDER BY name" >"$RUN/pg-settings.txt"
  note "$(head -c 60 "$RUN/pg-version.txt"); $(tr '\n' ' ' <"$RUN/pg-settings.txt")"

  ST_ADMIN="bench-admin-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
  ST_MASTER="bench1:$(head -c 32 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')"
  NODE_PIDS=("" "" "")
  start_node() { # index log-name data-dir [store-url]
    local i=$1 port=${NODE_PORTS[$1]}
    env KEYGATE_DATA_DIR="$3" \
      KEYGATE_WORKERS="$NODE_WORKERS" \
      KEYGATE_LISTEN="127.0.0.1:$port" \
      KEYGATE_UPSTREAM_URL="http://127.0.0.1:$UP_PORT/v1" \
      KEYGATE_ADMIN_KEY="$ST_ADMIN" \
      KEYGATE_MASTER_KEYS="$ST_MASTER" \
      KEYGATE_PUBLIC_URL="http://127.0.0.1:$LB_PORT" \
      ${4:+KEYGATE_STORE_URL="$4"} \
      RUST_LOG=warn \
      "$KEYGATE" serve 2>"$RUN/$2" &
    NODE_PIDS[i]=$!
    PIDS+=("$!")
    wait_http "http://127.0.0.1:$port/readyz" 60 || { echo "keygate node $i did not start; see $RUN/$2" >&2; cat "$RUN/$2" >&2; exit 1; }
    note "node $i (pid ${NODE_PIDS[i]}) on :$port, $([[ -n ${4:-} ]] && echo PostgreSQL || echo sled), $NODE_WORKERS workers"
  }
  stop_node() { # index
    local i=$1
    kill "${NODE_PIDS[i]}" 2>/dev/null || true
    wait "${NODE_PIDS[i]}" 2>/dev/null || true
    for ((j = 0; j < 100; j++)); do port_free "${NODE_PORTS[i]}" && break; sleep 0.1; done
  }
  make_grant() { # index -> the grant key on stdout
    local base=http://127.0.0.1:${NODE_PORTS[$1]} user key
    user=$(curl -sf -X POST "$base/admin/users" -H "Authorization: Bearer $ST_ADMIN" \
      -H 'Content-Type: application/json' -d '{"name":"bench"}' | jget id)
    curl -sf -X PUT "$base/admin/users/$user/openai-key" -H "Authorization: Bearer $ST_ADMIN" \
      -H 'Content-Type: application/json' \
      -d '{"api_key":"sk-proj-bench-0123456789abcdefghijklmnopqrstuvwxyzABCDEFGH"}' >/dev/null
    key=$(curl -sf -X POST "$base/admin/users/$user/grants" -H "Authorization: Bearer $ST_ADMIN" \
      -H 'Content-Type: application/json' -d '{"name":"bench"}' | jget api_key)
    [[ $key == kg_* ]] || { echo "no grant key from node $1" >&2; exit 1; }
    printf '%s\n' "$key"
  }
  node_url() { echo "http://127.0.0.1:${NODE_PORTS[$1]}/v1/chat/completions"; }
  warm() { # url key
    "$BENCH" latency --url "$1" --key "$2" --warmup 0 --n 500 >/dev/null
  }
  # c=1 latency alternating with direct requests, then c=64 throughput; extra args:
  # more --watch name=pid.
  measure_pair() { # name url key watch-args...
    local name=$1 url=$2 key=$3
    shift 3
    measure "$RUN/stores-latency-$name.json" "$BENCH" latency --url "$url" --key "$key" \
      --baseline-url "$UP_URL" --warmup "$WARMUP" --n "$STORES_N" --rounds "$ROUNDS" \
      --clk-tck "$CLK_TCK" --watch "upstream=$UP_PID" "$@"
    measure "$RUN/stores-tput-$name.json" "$BENCH" throughput --url "$url" --key "$key" --concurrency "$CONC" \
      --warmup-secs "$WARMUP_SECS" --secs "$SECS" \
      --clk-tck "$CLK_TCK" --watch "upstream=$UP_PID" "$@"
  }

  step "issue 14: one node on sled"
  start_node 0 stores-sled.log "$RUN/stores/sled"
  ST_KEY=$(make_grant 0)
  warm "$(node_url 0)" "$ST_KEY"
  wait_quiet "stores: sled"
  measure_pair sled "$(node_url 0)" "$ST_KEY" --watch "keygate=${NODE_PIDS[0]}"
  stop_node 0

  step "issue 14: one node on PostgreSQL"
  start_node 0 stores-pg0.log "$RUN/stores/pg0" "$PG_URL"
  ST_KEY=$(make_grant 0)
  warm "$(node_url 0)" "$ST_KEY"
  wait_quiet "stores: PostgreSQL"
  measure_pair pg "$(node_url 0)" "$ST_KEY" --watch "keygate=${NODE_PIDS[0]}" --watch "postgres=$PG_PID"

  if ((USE_NGINX)); then
    LB_DIR=$RUN/nginx-lb
    start_lb() { # node indexes...
      local servers=() i
      for i in "$@"; do servers+=("127.0.0.1:${NODE_PORTS[i]}"); done
      nginx_conf "$LB_DIR" "$LB_PORT" "$KG_WORKERS" "${servers[@]}"
      "$NGINX_BIN" -p "$LB_DIR" -c "$LB_DIR/nginx.conf" -e "$LB_DIR/error.log" 2>>"$LB_DIR/stderr.log" &
      LB_PID=$!
      PIDS+=("$LB_PID")
      wait_http "http://127.0.0.1:$LB_PORT/readyz" 10 || { echo "nginx (load balancer) did not start; see $LB_DIR" >&2; cat "$LB_DIR/error.log" >&2; exit 1; }
      note "nginx (pid $LB_PID) on :$LB_PORT over ${#servers[@]} node(s): ${servers[*]}"
    }
    stop_lb() {
      kill "$LB_PID" 2>/dev/null || true
      wait "$LB_PID" 2>/dev/null || true
      for ((j = 0; j < 100; j++)); do port_free "$LB_PORT" && break; sleep 0.1; done
    }
    step "issue 14: nginx over 1 PostgreSQL node"
    start_lb 0
    warm "$LB_URL" "$ST_KEY"
    wait_quiet "stores: nginx + 1 node"
    measure_pair lb1 "$LB_URL" "$ST_KEY" --watch "keygate=${NODE_PIDS[0]}" --watch "nginx=$LB_PID" \
      --watch "postgres=$PG_PID"
    stop_lb

    step "issue 14: nginx over 3 PostgreSQL nodes (one database)"
    start_node 1 stores-pg1.log "$RUN/stores/pg1" "$PG_URL"
    start_node 2 stores-pg2.log "$RUN/stores/pg2" "$PG_URL"
    start_lb 0 1 2
    warm "$LB_URL" "$ST_KEY"
    wait_quiet "stores: nginx + 3 nodes"
    measure_pair lb3 "$LB_URL" "$ST_KEY" --watch "keygate=${NODE_PIDS[0]}" --watch "keygate1=${NODE_PIDS[1]}" \
      --watch "keygate2=${NODE_PIDS[2]}" --watch "nginx=$LB_PID" --watch "postgres=$PG_PID"
    stop_lb
    stop_node 1
    stop_node 2
  else
    note "nginx not available: no load-balanced figures"
  fi
  stop_node 0
  kg_pg_stop
  PG_STARTED=0
fi

# ------------------------------------------------------------------------ LiteLLM
if ((USE_LITELLM)); then
  LL_KEY="sk-bench-master-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
  cat >"$RUN/litellm.yaml" <<YAML
model_list:
  - model_name: gpt-4o-mini
    litellm_params:
      model: openai/gpt-4o-mini
      api_base: http://127.0.0.1:$UP_PORT/v1
      api_key: sk-fake
general_settings:
  master_key: $LL_KEY
YAML
  start_litellm() { # workers
    # Offline: the bundled model cost map, no telemetry; only errors logged.
    env LITELLM_LOCAL_MODEL_COST_MAP=True LITELLM_LOG=ERROR LITELLM_TELEMETRY=False \
      TELEMETRY=False ANONYMIZED_TELEMETRY=False DO_NOT_TRACK=1 \
      "$VENV/bin/litellm" --config "$RUN/litellm.yaml" --host 127.0.0.1 --port "$LL_PORT" \
      --num_workers "$1" >"$RUN/litellm-w$1.log" 2>&1 &
    LL_PID=$!
    PIDS+=("$LL_PID")
    if wait_http "http://127.0.0.1:$LL_PORT/health/liveliness" 180; then
      note "LiteLLM $(cat "$RUN/litellm-version.txt" 2>/dev/null), $1 worker(s), up (pid $LL_PID)"
      return 0
    fi
    echo "LiteLLM ($1 workers) did not answer /health/liveliness within 180 s; see $RUN/litellm-w$1.log" >"$RUN/litellm-skipped.txt"
    tail -20 "$RUN/litellm-w$1.log" >>"$RUN/litellm-skipped.txt" || true
    note "$(head -1 "$RUN/litellm-skipped.txt")"
    return 1
  }
  stop_litellm() {
    kill "$LL_PID" 2>/dev/null || true
    wait "$LL_PID" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do port_free "$LL_PORT" && break; sleep 0.1; done
  }

  step "LiteLLM proxy on :$LL_PORT (--num_workers 1, no database)"
  if start_litellm 1 && wait_quiet "LiteLLM measurements"; then
    measure "$RUN/latency-litellm.json" "$BENCH" latency --url "$LL_URL" --key "$LL_KEY" \
      --baseline-url "$UP_URL" --warmup "$LL_WARMUP" --n "$LL_N" --rounds "$ROUNDS" \
      --clk-tck "$CLK_TCK" --watch "litellm=$LL_PID" --watch "upstream=$UP_PID"
    measure "$RUN/tput-litellm.json" "$BENCH" throughput --url "$LL_URL" --key "$LL_KEY" --concurrency "$CONC" \
      --warmup-secs "$WARMUP_SECS" --secs "$SECS" \
      --clk-tck "$CLK_TCK" --watch "litellm=$LL_PID" --watch "upstream=$UP_PID"
    mem_json "$LL_PID" >"$RUN/mem-litellm.json" 2>/dev/null || true
    if ((USE_WRK)); then run_wrk litellm "$LL_URL" "$LL_KEY"; fi
  fi
  stop_litellm

  # keygate uses both cores; LiteLLM's one worker can use only one (one Python
  # process). Its throughput with one worker per core, for a per-machine comparison.
  if [[ "${KG_BENCH_SKIP_LITELLM_2W:-}" != "1" ]]; then
    step "LiteLLM proxy, --num_workers $(nproc) (throughput only)"
    if start_litellm "$(nproc)" && wait_quiet "LiteLLM ($(nproc) workers)"; then
      measure "$RUN/tput-litellm-nproc.json" "$BENCH" throughput --url "$LL_URL" --key "$LL_KEY" --concurrency "$CONC" \
        --warmup-secs "$WARMUP_SECS" --secs "$SECS" \
        --clk-tck "$CLK_TCK" --watch "litellm=$LL_PID" --watch "upstream=$UP_PID"
    fi
    stop_litellm
  fi
fi

# ------------------------------------------------------------------------- report
step "report"
python3 "$ROOT/tests/bench/report.py" "$RUN" "$OUT" | tee "$ART/bench-results.md"
note "raw numbers: $OUT (this table: $ART/bench-results.md; every file of the run: $RUN)"
