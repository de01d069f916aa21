#!/usr/bin/env bash
# Browser end-to-end tests: keygate's pages in Debian's Chromium, driven by playwright-core,
# with a CDP virtual passkey authenticator, against keygate-testenv (keygate at
# http://localhost:PORT in front of a mock OpenAI), plus the official `openai` npm package.
#
# Idempotent: installs Chromium (apt) and node_modules (npm ci from the committed lock) only
# when they are missing or out of date, starts keygate-testenv, runs `node --test`, and
# always stops the testenv. Screenshots go to tests/.artifacts/screenshots/.
#
# Knobs: KG_BROWSER_TIMEOUT (seconds for the whole suite, default 600),
# KG_TESTENV_BIN (an already built keygate-testenv: skips the cargo build),
# KG_BROWSER_TESTS (test files to run, default every tests/browser/*.test.mjs).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
HERE="$ROOT/tests/browser"
ART="$ROOT/tests/.artifacts"
RUN_DIR="$ART/browser-run"
SUITE_TIMEOUT="${KG_BROWSER_TIMEOUT:-600}"
START_TIMEOUT=120
CHROMIUM=/usr/bin/chromium

log() { printf '[browser] %s\n' "$*" >&2; }

# --- Chromium (Debian's package) --------------------------------------------------------------
if [ ! -x "$CHROMIUM" ]; then
  log "installing chromium (apt)"
  if [ "$(id -u)" -ne 0 ]; then
    log "chromium is missing and this is not root: install it with 'apt-get install chromium'"
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq chromium fonts-dejavu-core >/dev/null
  [ -x "$CHROMIUM" ] || { log "chromium did not install"; exit 1; }
fi
log "$("$CHROMIUM" --version 2>/dev/null | head -n 1)"

# --- node_modules from the committed lock -----------------------------------------------------
command -v node >/dev/null || { log "node not found"; exit 1; }
command -v npm >/dev/null || { log "npm not found"; exit 1; }
(
  cd "$HERE"
  # npm writes node_modules/.package-lock.json on every install: a stamp newer than the lock and
  # package.json means node_modules matches them.
  if [ ! -f node_modules/.package-lock.json ] || [ ! -d node_modules/playwright-core ] ||
    [ ! -d node_modules/openai ] ||
    [ package-lock.json -nt node_modules/.package-lock.json ] ||
    [ package.json -nt node_modules/.package-lock.json ]; then
    log "npm ci in tests/browser"
    npm ci --no-audit --no-fund --loglevel=error
  else
    log "reusing tests/browser/node_modules"
  fi
)

# --- keygate-testenv --------------------------------------------------------------------------
# Builds keygate-testenv and prints the path of the executable cargo made.
build_testenv() {
  (cd "$ROOT" && cargo build -q -p keygate-testkit --bin keygate-testenv \
    --message-format=json-render-diagnostics) |
    node -e '
let exe = "";
const lines = require("fs").readFileSync(0, "utf8").split("\n");
for (const line of lines) {
  let msg;
  try { msg = JSON.parse(line); } catch { continue; }
  const target = msg.target || {};
  if (msg.reason === "compiler-artifact" && target.name === "keygate-testenv" && msg.executable) exe = msg.executable;
}
process.stdout.write(exe + "\n");
'
}

if [ -n "${KG_TESTENV_BIN:-}" ]; then
  BIN="$KG_TESTENV_BIN"
else
  log "building keygate-testenv"
  BIN="$(build_testenv)"
fi
[ -n "$BIN" ] && [ -x "$BIN" ] || { log "could not build keygate-testenv"; exit 1; }

rm -rf "$RUN_DIR"
mkdir -p "$RUN_DIR" "$ART/screenshots"
chmod 700 "$RUN_DIR"
ENV_OUT="$RUN_DIR/testenv.stdout" # holds the admin and grant keys: never printed
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
KG_TESTENV_PUBLIC_HOST=localhost "$BIN" <"$ENV_IN" >"$ENV_OUT" 2>"$ENV_ERR" &
TESTENV_PID=$!
# Hold the write end of its stdin open for as long as this script lives.
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

# Only what the browser tests need, parsed without printing anything.
ASSIGN="$(
  node - "$ENV_OUT" <<'JS'
const fs = require("fs");
const line = fs.readFileSync(process.argv[2], "utf8").split("\n")[0];
const env = JSON.parse(line);
const q = (v) => "'" + String(v).replace(/'/g, "'\\''") + "'";
const out = {
  KG_PUBLIC_URL: env.public_url,
  KG_BASE_URL: env.base_url,
  KG_MOCK_URL: env.mock_url,
  KG_DEMO_URL: env.demo_url, // the demo app on its own origin (connect*.test.mjs)
};
for (const [k, v] of Object.entries(out)) {
  if (!v) throw new Error(`testenv line has no value for ${k}`);
  console.log(`export ${k}=${q(v)}`);
}
JS
)" || { log "keygate-testenv printed something that is not the expected JSON line"; exit 1; }
eval "$ASSIGN"
unset ASSIGN
rm -f "$ENV_OUT"
case "$KG_PUBLIC_URL" in
  http://localhost:* | https://*) ;;
  *) log "keygate's public URL is $KG_PUBLIC_URL: passkeys need localhost or a domain"; exit 1 ;;
esac
log "keygate-testenv ready at $KG_PUBLIC_URL"

# --- the suite --------------------------------------------------------------------------------
export KG_SCREENSHOT_DIR="$ART/screenshots"
export KG_CHROMIUM="$CHROMIUM"
if [ -n "${KG_BROWSER_TESTS:-}" ]; then
  read -r -a TESTS <<<"$KG_BROWSER_TESTS"
else
  TESTS=("$HERE"/*.test.mjs)
fi
log "node $(node --version), playwright-core $(node -p 'require(process.argv[1]).version' "$HERE/node_modules/playwright-core/package.json"), openai $(node -p 'require(process.argv[1]).version' "$HERE/node_modules/openai/package.json")"
set +e
(cd "$ROOT" && timeout "$SUITE_TIMEOUT" node --test --test-concurrency=1 "${TESTS[@]}")
rc=$?
set -e
if [ "$rc" -ne 0 ]; then
  log "FAILED (node --test exit $rc); keygate's log: $ENV_ERR"
  exit 1
fi
log "browser suite passed; screenshots in $KG_SCREENSHOT_DIR"
