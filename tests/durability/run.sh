#!/usr/bin/env bash
# Crash durability and soak against the real keygate binary (docs/OPERATIONS.md,
# "Durability and soak"). CI sizes by default; the documented long runs:
#
#   KG_DURA_CYCLES=1000 bash tests/durability/run.sh crash
#   KG_SOAK_REQUESTS=20000 bash tests/durability/run.sh soak
#
# Modes: crash, soak, or both (default). Knobs: KG_DURA_CYCLES (30), KG_DURA_WORKERS (3),
# KG_DURA_SEED (random; printed, replays the choice of operations), KG_SOAK_REQUESTS
# (5000 here, 20000 in the harness itself), KG_SOAK_CONCURRENCY (8).
set -euo pipefail
cd "$(dirname "$0")/../.."

mode="${1:-both}"
# The harness finds keygate next to itself: build both into the same target directory.
cargo build --locked -q -p keygate --bin keygate -p keygate-durability
harness() { cargo run --locked -q -p keygate-durability -- "$@"; }

if [[ "$mode" == "crash" || "$mode" == "both" ]]; then
  KG_DURA_CYCLES="${KG_DURA_CYCLES:-30}" harness crash
fi
if [[ "$mode" == "soak" || "$mode" == "both" ]]; then
  KG_SOAK_REQUESTS="${KG_SOAK_REQUESTS:-5000}" harness soak
fi
