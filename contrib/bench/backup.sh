#!/bin/bash
# Backup throughput and restore time (issue 7). Builds a database of SIZE_MB (default 1024) behind
# its own pgtide, then measures, on the same host and disk:
#   cp -a of the suspended cluster            (the floor for a file copy)
#   pgtide BACKUP while suspended (cold)      (copy + SHA-256 manifest + re-read verify)
#   pg_basebackup alone against the compute   (-X stream, plain format, no verify)
#   pgtide BACKUP while running (basebackup)  (pg_basebackup + pg_verifybackup)
#   pgtide restore (latest) of each backup
# and prints MB/s (database size / wall time). Run once as root from the build directory.
set -eu
SIZE_MB=${SIZE_MB:-1024}
BIN=$(readlink -f "${PGTIDE:-./pgtide}")
PGBIN=/usr/lib/postgresql/15/bin
TMP=$(mktemp -d /tmp/pgtide-bench-backup.XXXXXX); chmod 755 "$TMP"
PORT=$(/usr/bin/python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
D=$TMP/data
"$BIN" -D "$D" -c listen_port=$PORT -c unix_socket_dir=$TMP -c metrics_listen= -c suspend_after=0 \
    -c pause_after=0 >"$TMP/pgtide.log" 2>&1 &
PID=$!
trap 'kill -TERM $PID 2>/dev/null; wait $PID 2>/dev/null; rm -rf "$TMP"' EXIT
for i in $(seq 100); do [ -s "$D/initial-password" ] && break; sleep 0.1; done
export PGPASSWORD=$(cat "$D/initial-password")
sleep 1
PSQL="$PGBIN/psql -X -q -h 127.0.0.1 -p $PORT -U postgres"
$PSQL -d postgres -c "create table bulk as select g, repeat(md5(g::text), 6) pad from generate_series(1, $((SIZE_MB * 4800))) g; checkpoint"
MB=$($PSQL -d postgres -At -c "select pg_database_size('postgres') / 1048576")
now() { date +%s.%N; }
rate() { /usr/bin/python3 -c "import sys; t=float(sys.argv[2])-float(sys.argv[1]); print('%6.1f s  %7.1f MB/s' % (t, float(sys.argv[3])/t))" "$@"; }
echo "database: $MB MB"
# running: pg_basebackup alone, then pgtide's basebackup
mkdir "$TMP/pgbb"; chown postgres: "$TMP/pgbb"
t0=$(now); runuser -u postgres -- $PGBIN/pg_basebackup -D "$TMP/pgbb" -h "$D/run" -p 5432 -U postgres -X stream -c fast; t1=$(now)
echo "pg_basebackup alone:            $(rate $t0 $t1 $MB)"; rm -rf "$TMP/pgbb"
t0=$(now); $PSQL -d pgtide -c BACKUP; t1=$(now)
echo "pgtide BACKUP (basebackup):     $(rate $t0 $t1 $MB)"
# suspended: cp -a, then pgtide's cold backup
$PSQL -d pgtide -c SUSPEND
for i in $(seq 300); do [ -e "$D/primary/postmaster.pid" ] || break; sleep 0.1; done
sync; t0=$(now); cp -a "$D/primary" "$TMP/cpa"; sync; t1=$(now)
echo "cp -a + sync:                   $(rate $t0 $t1 $MB)"; rm -rf "$TMP/cpa"
t0=$(now); $PSQL -d pgtide -c BACKUP; t1=$(now)
echo "pgtide BACKUP (cold):           $(rate $t0 $t1 $MB)"
kill -TERM $PID; wait $PID 2>/dev/null || true
for id in $(ls "$D/backups"); do
  m=$(sed -n 's/^method=//p' "$D/backups/$id/meta")
  t0=$(now); "$BIN" restore -D "$D" --into "$TMP/r-$id" --backup "$id" >/dev/null; t1=$(now)
  echo "pgtide restore ($m):   $(rate $t0 $t1 $MB)"; rm -rf "$TMP/r-$id"
done
