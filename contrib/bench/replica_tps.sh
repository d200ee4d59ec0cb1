#!/bin/bash
# replica_tps.sh: read throughput on the reader endpoint with CPU quotas on, without replicas
# (reads served by the primary) and with 2 replicas (issue 6 benchmark: target >= 1.7x). On its
# own embedded pgtide (fresh data directory under a 0755 temp dir, free ports, killed by pid at
# the end) with compute_units = replica_units = min_cu = max_cu = 0.5 (0.5 CPU of cgroup cpu
# quota per compute, no vertical scaling), pool_mode = session and a pgbench database of scale S
# loaded through pgtide, it first shows the quota actually applied (SHOW COMPUTES
# cpu_enforcement/cpu_quota and each compute's cpu.cfs_quota_us / cpu.cfs_period_us, cgroup v1),
# then alternates RUNS rounds of: SCALE REPLICAS 0 (wait until none is left), pgbench -S on the
# reader endpoint; SCALE REPLICAS 2 (wait until both are in rotation), the same pgbench. Each
# measured run follows a WARM-second warm-up run (a replica that restarts has cold shared
# buffers). After each run it prints the TPS and the CPUs used during the run by each compute's
# cgroup (cpuacct.usage: the quota at work), by pgtide, by pgbench and by the whole host: on a
# small host pgtide and pgbench need CPU too, and when the host is saturated the computes are no
# longer the bottleneck. Ends with the median TPS of each setting and the ratio.
# Clients: with replicas in rotation the reader endpoint sends nothing to the primary, and in
# session pooling each pgbench client stays on the compute it got at connect (least loaded), so
# the default 8 clients are 4 per replica: enough queued work to keep each 0.5 CPU quota busy.
# With -R ROWS each transaction is instead one SELECT sum(abalance) over ROWS consecutive
# pgbench_accounts rows (a read whose cost is mostly the compute's, not the proxy's or the
# client's). Not a test: nothing is asserted.
#
# Usage: contrib/bench/replica_tps.sh [-s SCALE, default 5] [-c CLIENTS, default 8]
#                                     [-j THREADS, default 2] [-T SECONDS, default 15]
#                                     [-r RUNS, default 3] [-w WARM seconds, default 5]
#                                     [-u CU of each compute, default 0.5]
#                                     [-R ROWS per read, default 0 = pgbench's built-in -S]
# Environment: PGTIDE_BIN (default ./pgtide at the repo top; build with -O2 for figures),
#              PGBIN (PostgreSQL bindir). Must run as root (the computes run as postgres).
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
TOP=$(cd "$HERE/../.." && pwd)
PGTIDE_BIN=${PGTIDE_BIN:-$TOP/pgtide}
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
SCALE=5
CLIENTS=8
THREADS=2
DUR=15
RUNS=3
WARM=5
CU=0.5
ROWS=0
while getopts "s:c:j:T:r:w:u:R:h" o; do
    case "$o" in
    s) SCALE=$OPTARG ;;
    c) CLIENTS=$OPTARG ;;
    j) THREADS=$OPTARG ;;
    T) DUR=$OPTARG ;;
    r) RUNS=$OPTARG ;;
    w) WARM=$OPTARG ;;
    u) CU=$OPTARG ;;
    R) ROWS=$OPTARG ;;
    *)
        sed -n '2,29p' "$0"
        exit 2
        ;;
    esac
done

# shellcheck source=../../regress/lib/pgtest.sh
. "$HERE/../../regress/lib/pgtest.sh"
export PGT_OWN_SESSION=1 # pgtide in a session of its own, as in bench.sh (why: there)
export PGTIDE_BIN
RPORT=$(pgt_free_port)
# its own embedded pgtide (killed and removed at exit by pgtest.sh)
pgt_start_pgtide_embedded "read_port=$RPORT" pause_after=0 suspend_after=0 pool_mode=session \
    "compute_units=$CU" "replica_units=$CU" "min_cu=$CU" "max_cu=$CU"
DIR=$TIDE_DIR
PORT=$TIDE_PORT
PID=$TIDE_PID
export PGPASSWORD=$TIDE_PASSWORD PGSSLMODE=disable PGCONNECT_TIMEOUT=60
CONN="host=127.0.0.1 port=$PORT user=postgres"
READER="host=127.0.0.1 port=$RPORT user=postgres dbname=postgres"
admin() { "$PGBIN/psql" -X -At -F '|' "$CONN dbname=pgtide" -c "$1"; }

# "name|state|pid|cu|cpu_enforcement|cpu_quota|in_rotation" per compute, from the header's names
computes() {
    "$PGBIN/psql" -X -A -F '|' --pset=footer=off "$CONN dbname=pgtide" -c "SHOW COMPUTES" | awk -F'|' '
        NR == 1 { for (i = 1; i <= NF; i++) col[$i] = i; next }
        { print $col["name"] "|" $col["state"] "|" $col["pid"] "|" $col["cu"] "|" \
                $col["cpu_enforcement"] "|" $col["cpu_quota"] "|" $col["in_rotation"] }'
}
replicas_in_rotation() { computes | awk -F'|' '$1 ~ /^replica-/ && $7 == "yes"' | wc -l; }
replica_rows() { computes | awk -F'|' '$1 ~ /^replica-/' | wc -l; }
# the cgroup v1 cpu directory of a compute (pgtide names it pgtide-PID-NAME)
cgdir() { echo "/sys/fs/cgroup/cpu/pgtide-$PID-$1"; }
# CPU ns used by a compute's cgroup: cpuacct co-mounted with cpu, else its own hierarchy
cpu_ns() {
    cat "$(cgdir "$1")/cpuacct.usage" 2>/dev/null ||
        cat "/sys/fs/cgroup/cpuacct/pgtide-$PID-$1/cpuacct.usage" 2>/dev/null || echo 0
}

show_quota() {
    echo "computes (name|state|pid|cu|cpu_enforcement|cpu_quota|in_rotation):"
    computes | sed 's/^/  /'
    computes | while IFS='|' read -r name _ pid _ _ _ _; do
        d=$(cgdir "$name")
        if [ -r "$d/cpu.cfs_quota_us" ]; then
            inside=no
            grep -qx "$pid" "$d/cgroup.procs" 2>/dev/null && inside=yes
            echo "  $name: $d cpu.cfs_quota_us=$(cat "$d/cpu.cfs_quota_us")" \
                "cpu.cfs_period_us=$(cat "$d/cpu.cfs_period_us") postmaster $pid inside: $inside"
        else
            echo "  $name: no cgroup v1 cpu directory at $d (quota not enforced?)"
        fi
    done
}

# SCALE REPLICAS n, then waits (up to 5 min) until none is left (0) or n are in rotation
scale_to() {
    admin "SCALE REPLICAS $1" >/dev/null
    local n=0
    while true; do
        if [ "$1" = 0 ]; then
            [ "$(replica_rows)" = 0 ] && return 0
        else
            [ "$(replicas_in_rotation)" = "$1" ] && return 0
        fi
        sleep 0.2
        n=$((n + 1))
        if [ $n -gt 1500 ]; then
            echo "SCALE REPLICAS $1 not done after 5 min" >&2
            tail -20 "$DIR/pgtide.log" >&2
            exit 1
        fi
    done
}

# clock ticks of CPU used by pgtide itself, and by the whole host (busy = all but idle+iowait)
pgtide_ticks() { awk '{ print $14 + $15 }' "/proc/$PID/stat"; }
host_busy_ticks() { awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat; }

# one pgbench run on the reader endpoint; prints "TPS" then the CPUs (cores busy on average)
# used by each compute's cgroup, by pgtide, by pgbench and by the whole host during the run
run_pgbench() {
    local secs=$1 names before=() after=() i=0 out tps p0 p1 h0 h1 hz
    hz=$(getconf CLK_TCK)
    names=$(computes | cut -d'|' -f1)
    for n in $names; do before+=("$(cpu_ns "$n")"); done
    p0=$(pgtide_ticks)
    h0=$(host_busy_ticks)
    out=$({
        TIMEFORMAT='pgbench-cpu %U %S'
        time "$PGBIN/pgbench" -n "${WORKLOAD[@]}" -c "$CLIENTS" -j "$THREADS" -T "$secs" "$READER"
    } 2>&1) || {
        echo "pgbench failed: $out" >&2
        exit 1
    }
    p1=$(pgtide_ticks)
    h1=$(host_busy_ticks)
    for n in $names; do after+=("$(cpu_ns "$n")"); done
    tps=$(echo "$out" | sed -n 's/^tps = \([0-9.]*\) .*/\1/p' | head -1)
    printf '%.0f  CPUs:' "$tps"
    for n in $names; do
        awk -v n="$n" -v a="${after[$i]}" -v b="${before[$i]}" -v s="$secs" \
            'BEGIN { printf " %s %.2f", n, (a - b) / 1e9 / s }'
        i=$((i + 1))
    done
    awk -v p="$((p1 - p0))" -v h="$((h1 - h0))" -v hz="$hz" -v s="$secs" \
        -v b="$(echo "$out" | awk '$1 == "pgbench-cpu" { print $2 + $3 }')" \
        'BEGIN { printf ", pgtide %.2f, pgbench %.2f, host %.2f\n", p / hz / s, b / s, h / hz / s }'
}

echo "loading pgbench scale $SCALE ..."
"$PGBIN/pgbench" -i -q -s "$SCALE" "$CONN dbname=postgres" >/dev/null 2>&1
SIZE=$("$PGBIN/psql" -X -At "$CONN dbname=postgres" -c "select pg_size_pretty(pg_database_size('postgres'))")
WORKLOAD=(-S)
if [ "$ROWS" -gt 0 ]; then
    cat >"$DIR/range.sql" <<EOF
\\set aid random(1, 100000 * $SCALE - $ROWS)
SELECT sum(abalance) FROM pgbench_accounts WHERE aid BETWEEN :aid AND :aid + $ROWS - 1;
EOF
    WORKLOAD=(-f "$DIR/range.sql")
fi
echo "database size: $SIZE; pgbench -n ${WORKLOAD[*]} -c $CLIENTS -j $THREADS -T $DUR on the reader endpoint," \
    "each compute at $CU CU, $(nproc) CPUs"
scale_to 2
show_quota

zero=()
two=()
for r in $(seq 1 "$RUNS"); do
    scale_to 0
    run_pgbench "$WARM" >/dev/null
    line=$(run_pgbench "$DUR")
    zero+=("${line%% *}")
    echo "round $r, 0 replicas: tps $line"
    scale_to 2
    run_pgbench "$WARM" >/dev/null
    line=$(run_pgbench "$DUR")
    two+=("${line%% *}")
    echo "round $r, 2 replicas: tps $line"
done
median() { printf '%s\n' "$@" | sort -g | sed -n "$((($# + 1) / 2))p"; }
m0=$(median "${zero[@]}")
m2=$(median "${two[@]}")
echo "median of $RUNS: 0 replicas $m0 tps, 2 replicas $m2 tps, ratio" \
    "$(awk -v a="$m2" -v b="$m0" 'BEGIN { printf "%.2f", a / b }')x"
