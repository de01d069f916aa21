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

# --- keygate-testenv (tests/lib/testenv.sh: build, start, read its line, stop on exit) -------
# shellcheck source=../lib/testenv.sh
. "$ROOT/tests/lib/testenv.sh"
BIN="$(testenv_binary)"

rm -rf "$RUN_DIR"
mkdir -p "$RUN_DIR" "$ART/screenshots"
chmod 700 "$RUN_DIR"
testenv_start "$BIN" "$RUN_DIR" KG_TESTENV_PUBLIC_HOST=localhost
# Only what the browser tests need; KG_DEMO_URL is the demo app on its own origin (connect*.test.mjs),
# KG_CONTROL_URL the testenv's clock control (lib.mjs advanceClock: past the passkey fresh window),
# KG_OPERATOR_KEY the operator's key its `lent` plan lends (connect-operator.test.mjs).
testenv_export KG_PUBLIC_URL=public_url KG_BASE_URL=base_url KG_MOCK_URL=mock_url KG_DEMO_URL=demo_url \
  KG_CONTROL_URL=control_url KG_OPERATOR_KEY=operator_key
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
  log "FAILED (node --test exit $rc); keygate's log: $TESTENV_ERR"
  exit 1
fi
log "browser suite passed; screenshots in $KG_SCREENSHOT_DIR"
