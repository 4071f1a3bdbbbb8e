#!/usr/bin/env bash
# The soak with faults (issue 17): for each backend (peers, then Redis), three real
# Portcullis nodes on 127.0.0.1 behind a round-robin balancer, steady load from many
# simulated browsers, revocations of every scope at random times through every entry
# point (control API, bulk JSON/CSV, DELETE session, browser logout, CLI), random
# kill -9 and restart of nodes (and of Redis), partitions between nodes (cuttable TCP
# links), clock steps within clock_skew; then every process is killed at once and
# restarted, and a checker reads the whole history and reports against the goals.
#
#   benches/soak.sh [--minutes N] [--backend peers|redis|both] [--dev]
#                   [--browsers N] [--users N] [--max-skew-ms N] [--seed N] [--keep]
#
# --minutes: load phase per backend (default 10; fractions allowed). --dev: use the
# unoptimised build (for debugging the soak itself; figures are not comparable).
# Everything else goes to the driver (benches/soak.rs, where the options are described).
# Bounded: the driver gives each backend the load phase plus at most 5 minutes, and this
# script stops it past that plus a minute. Loopback only; the nodes, Redis and the
# balancer are processes and tasks of this run, on free ports below the ephemeral range,
# and nothing outlives it. Exit status 0 only when every goal is met. The history
# (history.json), the report, node logs and audit logs are kept in a work folder when a
# goal is missed (or with --keep).
set -euo pipefail
cd "$(dirname "$0")/.."

MINUTES=10
BACKENDS=2
REDIS=1
PROFILE=bench
ARGS=()
while [ $# -gt 0 ]; do
    case "$1" in
        --minutes) MINUTES="$2"; ARGS+=(--minutes "$2"); shift 2 ;;
        --backend)
            case "$2" in peers) BACKENDS=1; REDIS=0 ;; redis) BACKENDS=1 ;; esac
            ARGS+=(--backend "$2"); shift 2 ;;
        --dev) PROFILE=dev; shift ;;
        -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
        *) ARGS+=("$1"); shift ;;
    esac
done
if [ "$REDIS" = 1 ] && [ ! -x /usr/bin/redis-server ]; then
    echo "soak.sh: the Redis backend needs /usr/bin/redis-server (apt-get install redis-server)" >&2
    exit 2
fi

# Builds the driver (and the gateway binary it runs, in the same profile); prints its path.
build() {
    local flags=(--bench soak --message-format=json-render-diagnostics)
    if [ "$PROFILE" = bench ]; then
        cargo bench --no-run "${flags[@]}"
    else
        cargo build "${flags[@]}"
    fi | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "soak" and m.get("executable"):
        print(m["executable"])
'
}
echo "soak.sh: building the driver ($PROFILE profile)" >&2
DRIVER="$(build | tail -1)"
[ -x "$DRIVER" ] || { echo "soak.sh: no driver binary was built" >&2; exit 2; }

# A backstop only: the driver bounds itself. SIGINT first (the driver stops everything it
# started), SIGKILL 30 s later; the processes it started die with it (parent-death signal).
LIMIT=$(python3 -c "import math; print(math.ceil($BACKENDS * ($MINUTES * 60 + 300) + 60))")
echo "soak.sh: $DRIVER ${ARGS[*]} (at most ${LIMIT}s)" >&2
exec timeout --foreground -s INT --kill-after=30 "$LIMIT" "$DRIVER" "${ARGS[@]}"
