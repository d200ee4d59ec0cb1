#!/bin/bash
# bench.sh: pgbench through three paths to the same throw-away PostgreSQL 15 -- directly,
# through PgBouncer (session pooling, run as the postgres user from its own ini in a temp dir) and
# through pgtide (static provider in front of the same server) -- with the same pool size.
# Workloads: select-only `-S -c 16`, select-only with a new connection per transaction
# `-S -c 16 -C`, and TPC-B-like `-c 16`. Runs alternate between the targets; each figure is the
# median of 3 runs. Prints TPS, average and 99th-percentile latency (from pgbench's
# per-transaction log, every transaction of the run), and the ratios pgtide/direct and
# pgtide/pgbouncer. Not a test: nothing is asserted.
#
# Usage: contrib/bench/bench.sh [-T SECONDS per run, default 10] [-s SCALE, default 10]
#                               [-p POOL_SIZE, default 16] [-r RUNS, default 3]
#                               [-m session|transaction, default session]
# In transaction mode the rows are those of issue 4: -S (simple), -S -M prepared, -S -C (new
# connection per transaction, SCRAM), TPC-B-like, at 16 clients, and -S at 256 clients.
# WORKLOADS="..." (one pgbench option set per line) overrides the rows.
# Environment: PGTIDE_BIN (default ./pgtide at the repo top; without it the pgtide column is n/a),
#              BENCH_SSLMODE (client sslmode for all targets, default disable),
#              BENCH_WORKERS (pgtide's `workers`, default its own: 1 loop below 4 CPUs, else half),
#              BENCH_AB="key=value ..." (a second pgtide with these settings runs alternately
#              with the others, as an extra column: an A/B, e.g. "server_round_robin=on"),
#              BENCH_AB_WORKERS=N (the same as BENCH_AB="workers=N": the A/B of worker threads),
#              BENCH_NULLPROXY=1 (contrib/bench/nullproxy, a 1:1 byte relay that does no work
#              of its own, runs alternately too, plain only: the floor of a proxy hop's cost).
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../../regress/lib/pgtest.sh
. "$HERE/../../regress/lib/pgtest.sh"

DUR=10
SCALE=10
POOL=16
RUNS=3
MODE=session
while getopts "T:s:p:r:m:h" o; do
    case "$o" in
    T) DUR=$OPTARG ;;
    s) SCALE=$OPTARG ;;
    p) POOL=$OPTARG ;;
    r) RUNS=$OPTARG ;;
    m) MODE=$OPTARG ;;
    *)
        sed -n '2,14p' "$0"
        exit 2
        ;;
    esac
done
SSLMODE=${BENCH_SSLMODE:-disable}
# Every proxy runs in a session of its own, as PgBouncer (-d) and the postmaster do: with the
# kernel's autogroup scheduling (sched_autogroup_enabled) a process started from this script
# would share one scheduling group with pgbench and get half the weight PgBouncer gets. Before
# this, pgtide was preempted 0.43 times per -S transaction and 3.1 per TPC-B-like one, against
# PgBouncer's 0.25 and 1.7, and ran ~6% slower than the same binary started with setsid.
export PGT_OWN_SESSION=1
PGBENCH=$PGT_BINDIR/pgbench
CLIENTS=16

pgt_start_pg "max_connections = 400"
export PGPASSWORD=secret
pgt_log "pgbench -i -s $SCALE"
"$PGBENCH" -i -q -s "$SCALE" -h "$PG_SOCK" -p "$PG_PORT" -U app appdb >/dev/null 2>&1 ||
    pgt_die "pgbench -i failed"

# PgBouncer as the postgres user, from its own ini in a temp dir
pgt_mktemp
BNC_DIR=$PGT_TMP
BNC_PORT=$(pgt_free_port)
pgt_auth_file "$BNC_DIR/users.txt"
cat >"$BNC_DIR/pgbouncer.ini" <<EOF
[databases]
appdb = host=$PG_SOCK port=$PG_PORT dbname=appdb
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $BNC_PORT
unix_socket_dir = $BNC_DIR
auth_type = scram-sha-256
auth_file = $BNC_DIR/users.txt
pool_mode = $MODE
default_pool_size = $POOL
max_client_conn = 1000
logfile = $BNC_DIR/pgbouncer.log
pidfile = $BNC_DIR/pgbouncer.pid
EOF
if [ "$SSLMODE" != disable ]; then
    # clients asked for TLS: PgBouncer serves it with a self-signed certificate like the others
    pgt_make_cert "$BNC_DIR"
    printf 'client_tls_sslmode = allow\nclient_tls_key_file = %s\nclient_tls_cert_file = %s\n' \
        "$BNC_DIR/server.key" "$BNC_DIR/server.crt" >>"$BNC_DIR/pgbouncer.ini"
fi
chown -R "$PGT_RUN_USER" "$BNC_DIR"
pgt_as_pg /usr/sbin/pgbouncer -d "$BNC_DIR/pgbouncer.ini" || pgt_die "pgbouncer did not start"
for _ in $(seq 1 50); do [ -s "$BNC_DIR/pgbouncer.pid" ] && break; sleep 0.1; done
BNC_PID=$(cat "$BNC_DIR/pgbouncer.pid" 2>/dev/null)
[ -n "$BNC_PID" ] || pgt_die "pgbouncer wrote no pid file"
PGT_PIDS+=("$BNC_PID")
pgt_wait_ready 127.0.0.1 "$BNC_PORT" app secret appdb "$BNC_PID" "$BNC_DIR/pgbouncer.log" 30 ||
    pgt_die "pgbouncer not ready"

targets=(direct pgbouncer)
declare -A PORTS=([direct]=$PG_PORT [pgbouncer]=$BNC_PORT)
if pgt_pgtide_bin >/dev/null; then
    pgt_start_pgtide_static "pool_size=$POOL" "pool_mode=$MODE" log_level=warning \
        ${BENCH_WORKERS:+"workers=$BENCH_WORKERS"}
    targets+=(pgtide)
    PORTS[pgtide]=$TIDE_PORT
    AB=${BENCH_AB:-${BENCH_AB_WORKERS:+workers=$BENCH_AB_WORKERS}}
    if [ -n "$AB" ]; then
        # shellcheck disable=SC2086 # one word per setting
        pgt_start_pgtide_static "pool_size=$POOL" "pool_mode=$MODE" log_level=warning $AB
        targets+=(tideab)
        PORTS[tideab]=$TIDE_PORT
    fi
else
    pgt_log "no pgtide binary: the pgtide column will be n/a"
fi

if [ -n "${BENCH_NULLPROXY:-}" ]; then
    if [ "$SSLMODE" != disable ]; then
        pgt_log "BENCH_NULLPROXY: the null proxy relays no TLS; no such column with sslmode=$SSLMODE"
    else
        [ -x "$HERE/nullproxy" ] || pgt_die "no $HERE/nullproxy (build it: make)"
        NULL_PORT=$(pgt_free_port)
        setsid "$HERE/nullproxy" "$NULL_PORT" "$PG_SOCK/.s.PGSQL.$PG_PORT" >"$BNC_DIR/nullproxy.log" 2>&1 &
        PGT_PIDS+=($!)
        pgt_wait_ready 127.0.0.1 "$NULL_PORT" app secret appdb "$!" "$BNC_DIR/nullproxy.log" 30 ||
            pgt_die "nullproxy not ready"
        targets+=(null)
        PORTS[null]=$NULL_PORT
    fi
fi

if [ -n "${WORKLOADS:-}" ]; then
    mapfile -t workloads <<<"$WORKLOADS"
elif [ "$MODE" = transaction ]; then
    workloads=("-S -c $CLIENTS" "-S -M prepared -c $CLIENTS" "-S -c $CLIENTS -C" "-c $CLIENTS"
        "-S -c 256")
else
    workloads=("-S -c $CLIENTS" "-S -c $CLIENTS -C" "-c $CLIENTS")
fi
declare -A TPS LAT P99
LOGDIR=$BNC_DIR/txlog
mkdir -p "$LOGDIR"

# p99_ms FILES...: the 99th percentile of the latency column (microseconds, 3rd field) of
# pgbench per-transaction logs, in milliseconds
p99_ms() {
    cat "$@" | awk '{ print $3 }' | sort -n |
        awk '{ v[NR] = $1 } END { if (NR == 0) print 0; else printf "%.3f\n", v[int(NR * 0.99 + 0.5)] / 1000 }'
}

# bench_one TARGET WORKLOAD: prints "tps latency_ms p99_ms" of one pgbench run
bench_one() {
    local out p99
    rm -f "$LOGDIR"/tx*
    # shellcheck disable=SC2086
    out=$(cd "$LOGDIR" && "$PGBENCH" -n -j 2 -T "$DUR" --log --log-prefix=tx $2 \
        "host=127.0.0.1 port=${PORTS[$1]} user=app dbname=appdb sslmode=$SSLMODE" 2>&1) || {
        pgt_log "pgbench failed on $1 ($2): $(echo "$out" | tail -3)"
        echo "0 0 0"
        return
    }
    p99=$(p99_ms "$LOGDIR"/tx*)
    echo "$out" | awk -v p="$p99" '/^tps = / { t = $3 } /^latency average = / { l = $4 }
        END { printf "%.1f %.3f %s\n", t, l, p }'
}

median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

for w in "${workloads[@]}"; do
    for t in "${targets[@]}"; do TPS[$t/$w]=""; LAT[$t/$w]=""; P99[$t/$w]=""; done
    for r in $(seq 1 "$RUNS"); do
        for t in "${targets[@]}"; do
            read -r tps lat p99 < <(bench_one "$t" "$w")
            pgt_log "run $r: $t pgbench $w: tps $tps, latency ${lat} ms, p99 ${p99} ms"
            TPS[$t/$w]+="$tps "
            LAT[$t/$w]+="$lat "
            P99[$t/$w]+="$p99 "
        done
    done
done

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0 && a != "n/a") printf "%.2f", a / b; else print "n/a" }'; }

echo
echo "pgbench, ${DUR}s per run, median of $RUNS, scale $SCALE, pool size $POOL, $MODE pooling, sslmode=$SSLMODE"
FMT='%-22s | %10s %10s %10s | %8s %8s %8s | %8s %8s %8s | %8s %8s\n'
# shellcheck disable=SC2059
printf "$FMT" workload "direct" "pgbouncer" "pgtide" "lat dir" "lat bnc" "lat tide" \
    "p99 dir" "p99 bnc" "p99 tide" "tide/dir" "tide/bnc"
# shellcheck disable=SC2059
printf "$FMT" "" tps tps tps ms ms ms ms ms ms tps tps
for w in "${workloads[@]}"; do
    declare -A mt=() ml=() mp=()
    for t in direct pgbouncer pgtide tideab null; do
        if [ -n "${TPS[$t/$w]:-}" ]; then
            # shellcheck disable=SC2086
            mt[$t]=$(median ${TPS[$t/$w]})
            # shellcheck disable=SC2086
            ml[$t]=$(median ${LAT[$t/$w]})
            # shellcheck disable=SC2086
            mp[$t]=$(median ${P99[$t/$w]})
        else
            mt[$t]=n/a
            ml[$t]=n/a
            mp[$t]=n/a
        fi
    done
    # shellcheck disable=SC2059
    printf "$FMT" "$w" "${mt[direct]}" "${mt[pgbouncer]}" "${mt[pgtide]}" "${ml[direct]}" \
        "${ml[pgbouncer]}" "${ml[pgtide]}" "${mp[direct]}" "${mp[pgbouncer]}" "${mp[pgtide]}" \
        "$(ratio "${mt[pgtide]}" "${mt[direct]}")" "$(ratio "${mt[pgtide]}" "${mt[pgbouncer]}")"
    [ -n "${PORTS[tideab]:-}" ] &&
        printf '%-22s   %s: %s tps, p99 %s ms (pgtide/this %s, this/pgbouncer %s)\n' "" \
            "$AB" "${mt[tideab]}" "${mp[tideab]}" \
            "$(ratio "${mt[pgtide]}" "${mt[tideab]}")" "$(ratio "${mt[tideab]}" "${mt[pgbouncer]}")"
    [ -n "${PORTS[null]:-}" ] &&
        printf '%-22s   null proxy: %s tps, p99 %s ms (null/direct %s, null/pgbouncer %s, pgtide/null %s)\n' \
            "" "${mt[null]}" "${mp[null]}" "$(ratio "${mt[null]}" "${mt[direct]}")" \
            "$(ratio "${mt[null]}" "${mt[pgbouncer]}")" "$(ratio "${mt[pgtide]}" "${mt[null]}")"
done
