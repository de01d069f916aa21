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
#
# The harness runs as an ignored test of the keygate-durability binary, built like the
# suite's own `cargo test --workspace` (same features: nothing is compiled again after
# it); `--test cli` makes cargo build the keygate binary it starts.
set -euo pipefail
cd "$(dirname "$0")/../.."

export KG_DURA_MODE="${1:-both}"
export KG_DURA_CYCLES="${KG_DURA_CYCLES:-30}"
export KG_SOAK_REQUESTS="${KG_SOAK_REQUESTS:-5000}"
cargo test --workspace --locked -q --no-run --test cli --bin keygate-durability
cargo test --workspace --locked -q --bin keygate-durability -- --ignored --nocapture run_sh::harness
