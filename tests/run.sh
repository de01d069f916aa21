#!/usr/bin/env bash
# The whole keygate test suite, from a fresh clone: formatting, lints, every Rust test
# (unit, store, HTTP integration, binary/CLI, canary), the official openai SDKs (Python
# and Node) against a live keygate, and the browser end-to-end tests in Chromium. Installs what it needs itself, idempotently.
#
#   bash tests/run.sh            # everything
#   KG_SKIP_SDK=1 KG_SKIP_BROWSER=1 bash tests/run.sh   # Rust only (a quick local loop)
#   KG_SKIP_DURABILITY=1 ...     # without the crash/soak harness (tests/durability/run.sh)
#   KG_SKIP_CLUSTER=1 ...        # without 3 real nodes on PostgreSQL (tests/cluster/run.sh)
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "PostgreSQL for the tests (Debian's package, a non-root user, a temp dir; stopped on exit)"
# shellcheck source=tests/lib/postgres.sh
source tests/lib/postgres.sh
kg_pg_start
trap kg_pg_stop EXIT

step "cargo test (unit, store on sled and PostgreSQL, integration, CLI, canary)"
cargo test --workspace --locked

if [[ "${KG_SKIP_SDK:-}" != "1" ]]; then
  step "official openai SDKs (Python, Node) against keygate"
  bash tests/sdk/run.sh
fi

if [[ "${KG_SKIP_BROWSER:-}" != "1" ]]; then
  step "browser end-to-end tests (Chromium, virtual passkey authenticator)"
  bash tests/browser/run.sh
fi

if [[ "${KG_SKIP_DURABILITY:-}" != "1" ]]; then
  step "crash durability (SIGKILL under load, 30 restarts) and soak (5,000 requests, a canary key)"
  bash tests/durability/run.sh
fi

if [[ "${KG_SKIP_CLUSTER:-}" != "1" ]]; then
  step "cluster: 3 real keygate nodes on PostgreSQL, hand-off smoke, one node SIGKILLed under load per cycle"
  bash tests/cluster/run.sh
fi

step "short fuzz run (stable; the long cargo-fuzz runs are in docs/FUZZING.md)"
KG_FUZZ_CASES="${KG_FUZZ_CASES:-5000}" cargo test -p keygate-fuzz --locked --test short

step "all suites passed"
