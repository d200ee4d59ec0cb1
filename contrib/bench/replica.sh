#!/bin/bash
# replica.sh: time from a scale decision to a replica serving reads (issue 6). On its own
# embedded pgtide (fresh data directory under a 0755 temp dir, free ports, killed by pid at the
# end) with a pgbench database of scale S (7 ~ 100 MB, 70 ~ 1 GB, loaded through pgtide), it runs
# TRIES rounds of: SCALE REPLICAS 1, then poll SHOW COMPUTES every 20 ms until the replica is in
# rotation (built, started, lag measured under max_replica_lag), then SCALE REPLICAS 0, wait
# until it has left and remove DATA/replicas/0 (so every try is a fresh build). One last "warm"
# try keeps the stopped directory: the replica then only restarts and catches up. Prints each try (wall time seen by the client, and pgtide's own build time
# and "in rotation N ms after the scale decision" from its log) and min/median/max.
# With -B a base backup is taken first, so the replica is built from it instead of pg_basebackup.
# Not a test: nothing is asserted.
#
# Usage: contrib/bench/replica.sh [-s SCALE, default 7] [-n TRIES, default 5] [-B]
# Environment: PGTIDE_BIN (default ./pgtide at the repo top), PGBIN (PostgreSQL bindir).
# Must run as root (the computes run as the postgres user).
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
TOP=$(cd "$HERE/../.." && pwd)
PGTIDE_BIN=${PGTIDE_BIN:-$TOP/pgtide}
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
SCALE=7
TRIES=5
FROM_BACKUP=0
while getopts "s:n:Bh" o; do
    case "$o" in
    s) SCALE=$OPTARG ;;
    n) TRIES=$OPTARG ;;
    B) FROM_BACKUP=1 ;;
    *)
        sed -n '2,13p' "$0"
        exit 2
        ;;
    esac
done

# shellcheck source=../../regress/lib/pgtest.sh
. "$HERE/../../regress/lib/pgtest.sh"
export PGT_OWN_SESSION=1 # pgtide in a session of its own, as in bench.sh (why: there)
export PGTIDE_BIN
now_ms() { date +%s%3N; }
RPORT=$(pgt_free_port)
# its own embedded pgtide (killed and removed at exit by pgtest.sh)
pgt_start_pgtide_embedded "read_port=$RPORT" pause_after=0 suspend_after=0
DIR=$TIDE_DIR
PORT=$TIDE_PORT
export PGPASSWORD=$TIDE_PASSWORD PGSSLMODE=disable PGCONNECT_TIMEOUT=60
CONN="host=127.0.0.1 port=$PORT user=postgres"
admin() { "$PGBIN/psql" -X -At -F '|' "$CONN dbname=pgtide" -c "$1"; }

echo "loading pgbench scale $SCALE ..."
"$PGBIN/pgbench" -i -q -s "$SCALE" "$CONN dbname=postgres" >/dev/null 2>&1
SIZE=$("$PGBIN/psql" -X -At "$CONN dbname=postgres" -c "select pg_size_pretty(pg_database_size('postgres'))")
echo "database size: $SIZE"
if [ "$FROM_BACKUP" = 1 ]; then
    echo "taking a base backup (replicas are then built from it) ..."
    admin "BACKUP" >/dev/null
fi

# the in_rotation column of the replica row (index of the column from the header)
rotation() {
    admin "SHOW COMPUTES" | awk -F'|' '$1 == "replica" { print $19 }' | head -1
}

times=()
for i in $(seq 1 $((TRIES + 1))); do
    t0=$(now_ms)
    admin "SCALE REPLICAS 1" >/dev/null
    until [ "$(rotation)" = "yes" ]; do
        sleep 0.02
        if [ $(($(now_ms) - t0)) -gt 600000 ]; then
            echo "try $i: no replica in rotation after 600 s" >&2
            tail -20 "$DIR/pgtide.log" >&2
            exit 1
        fi
    done
    t1=$(now_ms)
    ms=$((t1 - t0))
    [ "$i" -le "$TRIES" ] && times+=("$ms")
    inside=$(grep -o 'in rotation [0-9]* ms after the scale decision (build [0-9]* ms)' "$DIR/pgtide.log" | tail -1)
    src=$(grep -o 'built from [a-z_ -]* in [0-9]* ms' "$DIR/pgtide.log" | tail -1)
    inside="$inside, $src"
    if [ "$i" -le "$TRIES" ]; then
        echo "try $i (fresh build): serving after $ms ms (pgtide: $inside)"
    else
        echo "warm restart of a kept directory: serving after $ms ms (pgtide: $inside)"
    fi
    admin "SCALE REPLICAS 0" >/dev/null
    until [ -z "$(admin "SHOW COMPUTES" | awk -F'|' '$1 == "replica"')" ]; do sleep 0.05; done
    [ "$i" -lt "$TRIES" ] && rm -rf "$DIR/data/replicas/0"
done
sorted=$(printf '%s\n' "${times[@]}" | sort -n)
n=${#times[@]}
min=$(echo "$sorted" | head -1)
max=$(echo "$sorted" | tail -1)
med=$(echo "$sorted" | sed -n "$(((n + 1) / 2))p")
echo "scale decision -> replica serving (fresh build), $SIZE database, $n tries: min $min ms, median $med ms, max $max ms"
