#!/usr/bin/env bash
# Official-SDK compatibility tests: the real Python `openai` package and the real `openai` npm
# package, unchanged, pointed at keygate (keygate-testenv: keygate in front of a mock OpenAI).
#
# Installs what it needs idempotently (venv under tests/.artifacts, node_modules from the
# committed lock), starts keygate-testenv, runs pytest and `node --test`, and exits non-zero
# if either suite failed. The grant keys are passed to the suites in the environment only;
# nothing here prints them.
#
# Knobs: KG_SDK_SUITES="python node" (default both), KG_SDK_TIMEOUT (seconds per suite, 600),
# KG_TESTENV_BIN (an already built keygate-testenv: skips the cargo build).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
SDK="$ROOT/tests/sdk"
ART="$ROOT/tests/.artifacts"
VENV="$ART/venv"
RUN_DIR="$ART/sdk-run"
SUITES="${KG_SDK_SUITES:-python node}"
SUITE_TIMEOUT="${KG_SDK_TIMEOUT:-600}"
START_TIMEOUT=120

log() { printf '[sdk] %s\n' "$*" >&2; }
want() { case " $SUITES " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

mkdir -p "$ART"
rm -rf "$RUN_DIR"
mkdir -p "$RUN_DIR"
chmod 700 "$RUN_DIR"

# --- Python: venv with openai + pytest -------------------------------------------------------
if want python; then
  PY_SYS="$(command -v python3 || command -v python || true)"
  [ -n "$PY_SYS" ] || { log "python3 not found"; exit 1; }
  if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c 'import openai, pytest' >/dev/null 2>&1; then
    log "reusing venv $VENV (openai $("$VENV/bin/python" -c 'import openai; print(openai.__version__)'))"
  else
    log "creating venv $VENV"
    rm -rf "$VENV"
    "$PY_SYS" -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$SDK/python/requirements.txt"
    "$VENV/bin/python" -c 'import openai, pytest' # fail loudly if the install did not work
  fi
fi

# --- Node: node_modules from the committed lock ----------------------------------------------
if want node; then
  command -v node >/dev/null || { log "node not found"; exit 1; }
  command -v npm >/dev/null || { log "npm not found"; exit 1; }
  (
    cd "$SDK/node"
    # npm writes node_modules/.package-lock.json on every install: a stamp newer than the lock
    # means node_modules matches it.
    if [ ! -f node_modules/.package-lock.json ] || [ ! -d node_modules/openai ] ||
      { [ -f package-lock.json ] && [ package-lock.json -nt node_modules/.package-lock.json ]; } ||
      [ package.json -nt node_modules/.package-lock.json ]; then
      if [ -f package-lock.json ]; then
        log "npm ci in tests/sdk/node"
        npm ci --no-audit --no-fund --loglevel=error
      else
        log "npm install in tests/sdk/node (no lock yet)"
        npm install --no-audit --no-fund --loglevel=error
      fi
    else
      log "reusing tests/sdk/node/node_modules"
    fi
  )
fi

# --- keygate-testenv ------------------------------------------------------------------------
# Builds keygate-testenv and prints the path of the executable cargo made.
build_testenv() {
  (cd "$ROOT" && cargo build -q -p keygate-testkit --bin keygate-testenv \
    --message-format=json-render-diagnostics) |
    "${PY_SYS:-python3}" -c '
import json, sys
exe = ""
for line in sys.stdin:
    try:
        msg = json.loads(line)
    except ValueError:
        continue
    target = msg.get("target") or {}
    if msg.get("reason") == "compiler-artifact" and target.get("name") == "keygate-testenv" and msg.get("executable"):
        exe = msg["executable"]
print(exe)
'
}

if [ -n "${KG_TESTENV_BIN:-}" ]; then
  BIN="$KG_TESTENV_BIN"
else
  log "building keygate-testenv"
  BIN="$(build_testenv)"
fi
[ -n "$BIN" ] && [ -x "$BIN" ] || { log "could not build keygate-testenv"; exit 1; }

ENV_OUT="$RUN_DIR/testenv.stdout" # holds the keys: never printed
ENV_ERR="$RUN_DIR/testenv.stderr"
ENV_IN="$RUN_DIR/testenv.stdin"
mkfifo "$ENV_IN"
TESTENV_PID=""

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  exec 3>&- # closing its stdin asks the testenv to stop
  if [ -n "$TESTENV_PID" ] && kill -0 "$TESTENV_PID" 2>/dev/null; then
    kill -TERM "$TESTENV_PID" 2>/dev/null || true
    for _ in $(seq 1 50); do
      kill -0 "$TESTENV_PID" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$TESTENV_PID" 2>/dev/null || true
  fi
  wait 2>/dev/null || true
  rm -f "$ENV_OUT" "$ENV_IN"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

log "starting keygate-testenv"
"$BIN" <"$ENV_IN" >"$ENV_OUT" 2>"$ENV_ERR" &
TESTENV_PID=$!
# Hold the write end of its stdin open for as long as this script lives (also if it is killed).
exec 3>"$ENV_IN"

deadline=$((SECONDS + START_TIMEOUT))
until [ -s "$ENV_OUT" ] && [ "$(tail -c 1 "$ENV_OUT" | od -An -c | tr -d ' ')" = '\n' ]; do
  if ! kill -0 "$TESTENV_PID" 2>/dev/null; then
    log "keygate-testenv exited before it was ready; its stderr (last 40 lines):"
    tail -n 40 "$ENV_ERR" >&2 || true
    exit 1
  fi
  if [ "$SECONDS" -ge "$deadline" ]; then
    log "keygate-testenv not ready after ${START_TIMEOUT}s; its stderr (last 40 lines):"
    tail -n 40 "$ENV_ERR" >&2 || true
    exit 1
  fi
  sleep 0.2
done

# Parse the JSON line into shell assignments without printing anything.
ASSIGN="$(
  "${PY_SYS:-python3}" - "$ENV_OUT" <<'PY'
import json, shlex, sys
with open(sys.argv[1]) as f:
    line = f.readline()
env = json.loads(line)
keys = env["keys"]
values = {
    "KG_BASE_URL": env["base_url"],
    "KG_PUBLIC_URL": env.get("public_url", ""),
    "KG_MOCK_URL": env["mock_url"],
    "KG_MAX_BODY_BYTES": str(int(env["max_body_bytes"])),
    "KG_KEY_ALL": keys["all"],
    "KG_KEY_RESTRICTED": keys["restricted"],
    "KG_KEY_REVOKED": keys["revoked"],
    "KG_KEY_NOT_ENROLLED": keys["not_enrolled"],
}
for name, value in values.items():
    print(f"export {name}={shlex.quote(value)}")
PY
)" || { log "keygate-testenv printed something that is not the expected JSON line"; exit 1; }
eval "$ASSIGN"
unset ASSIGN
rm -f "$ENV_OUT"
log "keygate-testenv ready at $KG_BASE_URL (mock upstream at $KG_MOCK_URL)"

# --- the suites -----------------------------------------------------------------------------
py_rc=0
node_rc=0
if want python; then
  log "python: openai $("$VENV/bin/python" -c 'import openai; print(openai.__version__)')"
  set +e
  (cd "$ROOT" && timeout "$SUITE_TIMEOUT" "$VENV/bin/python" -m pytest -q -p no:cacheprovider \
    tests/sdk/python)
  py_rc=$?
  set -e
  if [ "$py_rc" -eq 5 ]; then
    log "pytest collected no tests: counted as a failure"
  fi
fi

if want node; then
  log "node $(node --version): openai $(node -p 'require(process.argv[1]).version' "$SDK/node/node_modules/openai/package.json")"
  set +e
  (cd "$SDK/node" && timeout "$SUITE_TIMEOUT" node --test openai.test.mjs)
  node_rc=$?
  set -e
fi

if [ "$py_rc" -ne 0 ] || [ "$node_rc" -ne 0 ]; then
  log "FAILED (pytest exit $py_rc, node --test exit $node_rc)"
  exit 1
fi
log "all SDK suites passed"
