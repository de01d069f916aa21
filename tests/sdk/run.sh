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

log() { printf '[sdk] %s\n' "$*" >&2; }
want() { case " $SUITES " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

mkdir -p "$ART"
rm -rf "$RUN_DIR"
mkdir -p "$RUN_DIR"
chmod 700 "$RUN_DIR"

# --- Python: venv with openai, pytest, prometheus-client, openapi-spec-validator ----------
if want python; then
  PY_SYS="$(command -v python3 || command -v python || true)"
  [ -n "$PY_SYS" ] || { log "python3 not found"; exit 1; }
  if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c 'import openai, pytest, prometheus_client, openapi_spec_validator, yaml' >/dev/null 2>&1; then
    log "reusing venv $VENV (openai $("$VENV/bin/python" -c 'import openai; print(openai.__version__)'))"
  else
    log "creating venv $VENV"
    rm -rf "$VENV"
    "$PY_SYS" -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$SDK/python/requirements.txt"
    "$VENV/bin/python" -c 'import openai, pytest, prometheus_client, openapi_spec_validator, yaml' # fail loudly if the install did not work
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

# --- keygate-testenv (tests/lib/testenv.sh: build, start, read its line, stop on exit) -----
# shellcheck source=../lib/testenv.sh
. "$ROOT/tests/lib/testenv.sh"
BIN="$(testenv_binary)"
testenv_start "$BIN" "$RUN_DIR"
testenv_export KG_BASE_URL=base_url KG_PUBLIC_URL=public_url KG_MOCK_URL=mock_url \
  KG_MAX_BODY_BYTES=max_body_bytes KG_KEY_ALL=keys.all KG_KEY_RESTRICTED=keys.restricted \
  KG_KEY_REVOKED=keys.revoked KG_KEY_NOT_ENROLLED=keys.not_enrolled \
  KG_ADMIN_KEY=admin_key KG_OPENAI_KEY=openai_key KG_CONTROL_URL=control_url
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
  (cd "$SDK/node" && timeout "$SUITE_TIMEOUT" node --test openai.test.mjs limits.test.mjs)
  node_rc=$?
  set -e
fi

if [ "$py_rc" -ne 0 ] || [ "$node_rc" -ne 0 ]; then
  log "FAILED (pytest exit $py_rc, node --test exit $node_rc)"
  exit 1
fi
log "all SDK suites passed"
