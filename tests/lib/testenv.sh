# shellcheck shell=bash
# keygate-testenv for the suites outside Rust (tests/sdk/run.sh, tests/browser/run.sh): build it,
# start it, wait for its one JSON line, export the fields a suite needs without printing them
# (the line holds grant and admin keys), and always stop it when the script exits.
#
# Source it after setting ROOT (the repository) and defining log(); then:
#
#   BIN="$(testenv_binary)"                          # KG_TESTENV_BIN, or a cargo build
#   testenv_start "$RUN_DIR" [NAME=value ...]        # env for the testenv; installs the EXIT trap
#   testenv_export KG_BASE_URL=base_url KG_KEY_ALL=keys.all ...   # dotted paths into the line
#
# The line's fields: base_url, public_url, mock_url, demo_url, control_url (POST
# {control_url}/advance?secs=N moves keygate's clock forward, POST {control_url}/reset back to
# the system time), admin_key, openai_key (the fake key the mock accepts), operator_key (the
# operator key its `lent` plan lends to people without one), max_body_bytes, keys.*.
#
# JSON is read with python3 when there is one, else node. Knobs: KG_TESTENV_BIN (an already
# built keygate-testenv: skips the cargo build), TESTENV_START_TIMEOUT (seconds, default 120).

TESTENV_PID=""
TESTENV_OUT=""
TESTENV_ERR=""
TESTENV_IN=""

# Runs a small JSON program: testenv_json_run <python source> <node source> [args...] (stdin passes through).
testenv_json_run() {
  local py="$1" js="$2"
  shift 2
  if command -v python3 >/dev/null 2>&1; then
    python3 -c "$py" "$@"
  elif command -v node >/dev/null 2>&1; then
    node -e "$js" -- "$@"
  else
    log "neither python3 nor node is installed: can't read keygate-testenv's JSON"
    return 1
  fi
}

# Builds keygate-testenv and prints the path of the executable cargo made.
testenv_build() {
  (cd "$ROOT" && cargo build -q -p keygate-testkit --bin keygate-testenv \
    --message-format=json-render-diagnostics) |
    testenv_json_run '
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
' '
let exe = "";
for (const line of require("fs").readFileSync(0, "utf8").split("\n")) {
  let msg;
  try { msg = JSON.parse(line); } catch { continue; }
  const target = msg.target || {};
  if (msg.reason === "compiler-artifact" && target.name === "keygate-testenv" && msg.executable) exe = msg.executable;
}
process.stdout.write(exe + "\n");
'
}

# The keygate-testenv executable: $KG_TESTENV_BIN, or a fresh cargo build. Exits when there is none.
testenv_binary() {
  local bin
  if [ -n "${KG_TESTENV_BIN:-}" ]; then
    bin="$KG_TESTENV_BIN"
  else
    log "building keygate-testenv"
    bin="$(testenv_build)"
  fi
  if [ -z "$bin" ] || [ ! -x "$bin" ]; then
    log "could not build keygate-testenv"
    exit 1
  fi
  printf '%s\n' "$bin"
}

# Stops the testenv (closing its stdin asks it to stop; then SIGTERM, then SIGKILL) and removes
# the file holding its keys. Installed as the EXIT trap by testenv_start; keeps the exit status.
testenv_cleanup() {
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
  [ -n "$TESTENV_OUT" ] && rm -f "$TESTENV_OUT"
  [ -n "$TESTENV_IN" ] && rm -f "$TESTENV_IN"
  exit "$rc"
}

# testenv_start BIN RUN_DIR [NAME=value ...]: starts BIN with those variables in its environment,
# its output in RUN_DIR (testenv.stdout holds the keys: never printed; testenv.stderr is keygate's
# log), and waits until it printed its JSON line. Exits with the testenv's log when it doesn't.
testenv_start() {
  local bin="$1" run_dir="$2"
  shift 2
  local start_timeout="${TESTENV_START_TIMEOUT:-120}"
  TESTENV_OUT="$run_dir/testenv.stdout"
  TESTENV_ERR="$run_dir/testenv.stderr"
  TESTENV_IN="$run_dir/testenv.stdin"
  rm -f "$TESTENV_IN"
  mkfifo "$TESTENV_IN"
  trap testenv_cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM

  log "starting keygate-testenv"
  env "$@" "$bin" <"$TESTENV_IN" >"$TESTENV_OUT" 2>"$TESTENV_ERR" &
  TESTENV_PID=$!
  # Hold the write end of its stdin open for as long as this script lives (also if it is killed).
  exec 3>"$TESTENV_IN"

  local deadline=$((SECONDS + start_timeout))
  until [ -s "$TESTENV_OUT" ] && [ "$(tail -c 1 "$TESTENV_OUT" | od -An -c | tr -d ' ')" = '\n' ]; do
    if ! kill -0 "$TESTENV_PID" 2>/dev/null; then
      log "keygate-testenv exited before it was ready; its stderr (last 40 lines):"
      tail -n 40 "$TESTENV_ERR" >&2 || true
      exit 1
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      log "keygate-testenv not ready after ${start_timeout}s; its stderr (last 40 lines):"
      tail -n 40 "$TESTENV_ERR" >&2 || true
      exit 1
    fi
    sleep 0.2
  done
}

# testenv_export NAME=path ...: exports each NAME as the value at the dotted `path` of the
# testenv's JSON line (numbers as text), without printing anything, then deletes the file that
# held the line. Exits when the line isn't JSON or a value is missing.
testenv_export() {
  local assign
  assign="$(
    testenv_json_run '
import json, shlex, sys
with open(sys.argv[1]) as f:
    env = json.loads(f.readline())
for spec in sys.argv[2:]:
    name, path = spec.split("=", 1)
    value = env
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if value is None or value == "":
        raise SystemExit(f"testenv line has no value for {name} ({path})")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    print(f"export {name}={shlex.quote(str(value))}")
' '
const fs = require("fs");
const args = process.argv.slice(1); // node -e: argv[0] is node itself, "--" is consumed
const env = JSON.parse(fs.readFileSync(args[0], "utf8").split("\n")[0]);
const q = (v) => "'"'"'" + String(v).replace(/'"'"'/g, "'"'"'\\'"'"''"'"'") + "'"'"'";
for (const spec of args.slice(1)) {
  const i = spec.indexOf("=");
  const name = spec.slice(0, i);
  let value = env;
  for (const part of spec.slice(i + 1).split(".")) value = value && typeof value === "object" ? value[part] : undefined;
  if (value === undefined || value === null || value === "") throw new Error(`testenv line has no value for ${name}`);
  console.log(`export ${name}=${q(value)}`);
}
' "$TESTENV_OUT" "$@"
  )" || {
    log "keygate-testenv printed something that is not the expected JSON line"
    exit 1
  }
  eval "$assign"
  rm -f "$TESTENV_OUT"
}
