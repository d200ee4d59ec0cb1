#!/bin/bash
# cores.sh: is pgtide's single event loop the limit of the data plane on this machine? It puts
# K independent pgtide processes (static provider, transaction pooling, pool P/K each) in front
# of one throw-away PostgreSQL 15 and compares, in alternating runs, pgbench -S with C clients
# through one pgtide (pool P) against K pgbenches of C/K clients each through the K pgtides at
# the same time (the upper bound of what K worker threads could give: no shared state at all),
# and a direct connection. While the single pgtide runs it also reports how much of one core its
# thread used: well under 100% means a second thread has nothing to take over. Median of R runs.
# Not a test: nothing is asserted.
#
# Usage: contrib/bench/cores.sh [-k K, default 2] [-c C, default 16] [-p P, default 16]
#                               [-T SECONDS, default 8] [-r RUNS, default 3]
# Environment: PGTIDE_BIN (default ./pgtide at the repo top).
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../../regress/lib/pgtest.sh
. "$HERE/../../regress/lib/pgtest.sh"
export PGT_OWN_SESSION=1 # pgtide in a session of its own, as in bench.sh (why: there)

K=2
C=16
P=16
DUR=8
RUNS=3
while getopts "k:c:p:T:r:h" o; do
    case "$o" in
    k) K=$OPTARG ;;
    c) C=$OPTARG ;;
    p) P=$OPTARG ;;
    T) DUR=$OPTARG ;;
    r) RUNS=$OPTARG ;;
    *)
        sed -n '2,13p' "$0"
        exit 2
        ;;
    esac
done
pgt_pgtide_bin >/dev/null || pgt_die "no pgtide binary (set PGTIDE_BIN)"
PGBENCH=$PGT_BINDIR/pgbench
export PGPASSWORD=secret

pgt_start_pg "max_connections = 400"
"$PGBENCH" -i -q -s 10 -h "$PG_SOCK" -p "$PG_PORT" -U app appdb >/dev/null 2>&1 ||
    pgt_die "pgbench -i failed"

pgt_mktemp
OUT=$PGT_TMP
pgt_start_pgtide_static "pool_size=$P" pool_mode=transaction log_level=warning
ONE_PORT=$TIDE_PORT
ONE_PID=$TIDE_PID
MANY_PORTS=()
for _ in $(seq 1 "$K"); do
    pgt_start_pgtide_static "pool_size=$((P / K))" pool_mode=transaction log_level=warning
    MANY_PORTS+=("$TIDE_PORT")
done

# tps PORT CLIENTS THREADS: one pgbench -S run, prints its TPS
tps() {
    "$PGBENCH" -n -j "$3" -T "$DUR" -S -c "$2" \
        "host=127.0.0.1 port=$1 user=app dbname=appdb sslmode=disable" 2>&1 |
        awk '/^tps = / { printf "%.1f\n", $3 }'
}
ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

one_all="" many_all="" direct_all="" cpu_all=""
hz=$(getconf CLK_TCK)
for r in $(seq 1 "$RUNS"); do
    t0=$(ticks "$ONE_PID")
    one=$(tps "$ONE_PORT" "$C" 2)
    t1=$(ticks "$ONE_PID")
    cpu=$(awk -v a="$t0" -v b="$t1" -v hz="$hz" -v d="$DUR" 'BEGIN { printf "%.0f", (b - a) * 100 / hz / d }')
    pids=()
    for port in "${MANY_PORTS[@]}"; do
        tps "$port" $((C / K)) 1 >"$OUT/many.$port" &
        pids+=($!)
    done
    for pid in "${pids[@]}"; do wait "$pid"; done
    many=$(cat "$OUT"/many.* | awk '{ s += $1 } END { printf "%.1f", s }')
    direct=$(tps "$PG_PORT" "$C" 2)
    pgt_log "run $r: one pgtide $one tps (its thread at ${cpu}% of a core), $K pgtides $many tps, direct $direct tps"
    one_all+="$one " many_all+="$many " direct_all+="$direct " cpu_all+="$cpu "
done

# shellcheck disable=SC2086
{
    echo
    echo "pgbench -S -c $C, ${DUR}s per run, median of $RUNS, pool $P in total, transaction pooling"
    echo "direct:                 $(median $direct_all) tps"
    echo "one pgtide:             $(median $one_all) tps (its thread at $(median $cpu_all)% of one core)"
    echo "$K pgtides side by side: $(median $many_all) tps"
}
