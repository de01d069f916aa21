#!/usr/bin/env bash
# Stateless keygate nodes on PostgreSQL, for real (issue 14; no containers):
#
#   - a PostgreSQL server: Debian's package, run as a non-root user from a temp dir,
#     started here and stopped on exit (tests/lib/postgres.sh) — or the one the caller
#     already runs, when KG_TEST_PG_URL is set (tests/run.sh does);
#   - KG_DURA_NODES (3) real `keygate serve` processes on loopback ports, each with its
#     own data dir and the same KEYGATE_STORE_URL (a fresh database), KEYGATE_MASTER_KEYS
#     and KEYGATE_PUBLIC_URL, in front of an in-process mock OpenAI;
#   - a smoke of hand-off across the processes (sign-up started on one node and finished
#     on another, a grant used on all, revoked on one and refused by all, sign-out);
#   - crash cycles: writers spread over the nodes, ONE node killed with SIGKILL at a
#     random moment (every 5th cycle a graceful stop), every acknowledged write checked
#     through the surviving nodes, the node restarted and serving the next cycle.
#
#   bash tests/cluster/run.sh
#   KG_DURA_CYCLES=100 KG_DURA_SEED=42 bash tests/cluster/run.sh   # longer, replayable
#
# Knobs: KG_DURA_CYCLES (10), KG_DURA_WORKERS (6), KG_DURA_NODES (3), KG_DURA_SEED.
# The harness is tests/durability's (its cluster mode: tests/durability/src/crash/
# cluster.rs), run as an ignored test so nothing is compiled again after the suite.
set -euo pipefail
cd "$(dirname "$0")/../.."

if [[ -z "${KG_TEST_PG_URL:-}" ]]; then
  # shellcheck source=tests/lib/postgres.sh
  source tests/lib/postgres.sh
  kg_pg_start
  trap kg_pg_stop EXIT
fi

export KG_DURA_MODE=cluster
export KG_DURA_CYCLES="${KG_DURA_CYCLES:-10}"
cargo test --workspace --locked -q --no-run --test cli --bin keygate-durability
cargo test --workspace --locked -q --bin keygate-durability -- --ignored --nocapture run_sh::harness
