#!/bin/bash
# idle.sh: memory per idle client. Opens N (default 10000) idle client connections to pgtide
# (transaction pooling, static provider in front of a throw-away PostgreSQL 15) and to PgBouncer
# (transaction pooling, same server), plain TCP with trust authentication so that only the
# pooler's own bookkeeping is measured, and prints each one's RSS growth per client.
# Usage: contrib/bench/idle.sh [N]
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../../regress/lib/pgtest.sh
. "$HERE/../../regress/lib/pgtest.sh"
export PGT_OWN_SESSION=1 # pgtide in a session of its own, as in bench.sh (why: there)
N=${1:-10000}
ulimit -n "$(ulimit -Hn)" || true
[ "$(ulimit -n)" -gt $((N + 512)) ] || pgt_die "the fd limit $(ulimit -n) is too low for $N clients"
rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }

pgt_start_pg "max_connections = 100"
pgt_mktemp
DIR=$PGT_TMP
# the idle clients come over TCP with trust; one SCRAM login over the unix socket first lets
# pgtide log in to the server (with the ClientKey it proves) and learn the pool's parameters
printf 'host all all 127.0.0.1/32 trust\nlocal all all scram-sha-256\n' >"$DIR/hba"
chmod 644 "$DIR/hba"
pgt_start_pgtide_static pool_mode=transaction pool_size=5 "hba_file=$DIR/hba" \
    client_tls_sslmode=disable "max_client_conn=$((N + 100))" log_level=warning

PGPASSWORD=secret "$PGT_BINDIR/psql" -X -q -h "$TIDE_SOCK" -p "$TIDE_PORT" -U app -d appdb \
    -c "select 1" >/dev/null || pgt_die "warm-up login through pgtide failed"
BNC_PORT=$(pgt_free_port)
cat >"$DIR/pgbouncer.ini" <<INI
[databases]
appdb = host=$PG_SOCK port=$PG_PORT dbname=appdb user=app password=secret
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $BNC_PORT
unix_socket_dir =
auth_type = trust
auth_file = $DIR/users.txt
pool_mode = transaction
default_pool_size = 5
max_client_conn = $((N + 100))
logfile = $DIR/pgbouncer.log
pidfile = $DIR/pgbouncer.pid
INI
echo '"app" ""' >"$DIR/users.txt"
chown -R "$PGT_RUN_USER" "$DIR"
# pgbouncer needs the fd limit too: run it through a shell that raises it
runuser -u "$PGT_RUN_USER" -- bash -c "ulimit -n \$(ulimit -Hn) && exec /usr/sbin/pgbouncer -d $DIR/pgbouncer.ini" ||
    pgt_die "pgbouncer did not start"
for _ in $(seq 1 50); do [ -s "$DIR/pgbouncer.pid" ] && break; sleep 0.1; done
BNC_PID=$(cat "$DIR/pgbouncer.pid")
PGT_PIDS+=("$BNC_PID")
sleep 0.5

measure() { # measure NAME PID PORT
    local before after fifo out
    before=$(rss_kb "$2")
    fifo=$DIR/hold.$1
    mkfifo "$fifo"
    /usr/bin/python3 "$HERE/idle.py" 127.0.0.1 "$3" app appdb "$N" <"$fifo" >"$DIR/$1.out" 2>&1 &
    local py=$!
    exec 9>"$fifo"
    for _ in $(seq 1 600); do grep -q '^ready' "$DIR/$1.out" 2>/dev/null && break; sleep 0.2; done
    sleep 1
    after=$(rss_kb "$2")
    out=$(cat "$DIR/$1.out")
    exec 9>&-
    wait "$py"
    awk -v n="$1" -v b="$before" -v a="$after" -v o="$out" -v N="$N" 'BEGIN {
        printf "%-9s RSS %7.1f MB -> %7.1f MB with %s idle clients: %6.0f bytes per client\n",
               n, b / 1024, a / 1024, o, (a - b) * 1024 / N }'
}
measure pgtide "$TIDE_PID" "$TIDE_PORT"
measure pgbouncer "$BNC_PID" "$BNC_PORT"
