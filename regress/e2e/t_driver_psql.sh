#!/bin/bash
# t_driver_psql.sh: psql through the target with SCRAM over TLS (sslmode=require): runs
# regress/drivers/psql/driver.sql (DDL, DML, variables, prepared statements, rollback, \copy in
# and out, syntax error 42601 then recovery), then checks a 100,000-row result, LISTEN/NOTIFY
# between two sessions, cancel of pg_sleep (57014) via SIGINT, and a wrong password refused.
set -u
PSQL=${PGTIDE_BINDIR:-/usr/lib/postgresql/15/bin}/psql
S=${PGTIDE_SCRATCH:-$(mktemp -d)}
DRV=$PGTIDE_TOP/regress/drivers/psql
CONN="host=$PGTIDE_HOST port=$PGTIDE_PORT user=$PGTIDE_USER dbname=$PGTIDE_DB sslmode=require"
export PGPASSWORD=$PGTIDE_PASSWORD PGCONNECT_TIMEOUT=10
fail() {
    echo "FAIL: $*"
    exit 1
}
q() { "$PSQL" -X -At -v ON_ERROR_STOP=1 "$CONN" "$@"; }

# the connection really is TLS + SCRAM (what the server sees from the proxy may differ; check
# what the client negotiated)
out=$("$PSQL" -X "$CONN" -c '\conninfo') || fail "connect: $out"
echo "$out" | grep -q 'SSL connection' || fail "not TLS: $out"

# driver script
seq 1 20000 | awk '{ printf "%d,\"row %d, with \"\"quotes\"\"\"\n", $1, $1 }' >"$S/copy_in.csv"
cd "$S" && "$PSQL" -X -At "$CONN" \
    -f "$DRV/driver.sql" >"$S/driver.out" 2>&1 || {
    cat "$S/driver.out"
    fail "driver.sql failed"
}
grep -q DRIVER_PSQL_DONE "$S/driver.out" || fail "driver.sql did not finish"
grep -q 'ERROR:  42601' "$S/driver.out" || fail "no 42601 in output"
grep -q '^recovered$' "$S/driver.out" || fail "no recovery after the syntax error"
cmp -s "$S/copy_in.csv" "$S/copy_out.csv" || fail "\\copy out differs from \\copy in"
echo "ok: driver.sql"

# 100,000-row result, every row checked by awk
q -c 'SELECT g, md5(g::text) FROM generate_series(1, 100000) g' >"$S/big.out" ||
    fail "100k select"
awk -F'|' 'BEGIN { n = 0 } { n++; if ($1 != n) { print "bad row " NR; exit 1 } }
    END { if (n != 100000) { print "rows: " n; exit 1 } }' "$S/big.out" || fail "100k rows"
exp=$(q -c "SELECT md5(string_agg(g || '|' || md5(g::text), E'\n' ORDER BY g) || E'\n')
            FROM generate_series(1, 100000) g") || fail "md5 query"
got=$(md5sum <"$S/big.out" | cut -d' ' -f1)
[ "$exp" = "$got" ] || fail "100k rows checksum $got != $exp"
echo "ok: 100k rows"

# LISTEN in one session, NOTIFY from another while it waits, delivery seen by the first
cat >"$S/listen.sql" <<SQL
LISTEN drv_psql_chan;
SELECT pg_sleep(0.5);
\\! PGPASSWORD=$PGTIDE_PASSWORD $PSQL -X -q "$CONN" -c "NOTIFY drv_psql_chan, 'hello psql'"
SELECT pg_sleep(0.5);
SELECT 1;
SQL
out=$("$PSQL" -X -At "$CONN" -f "$S/listen.sql" 2>&1) || fail "listen script: $out"
echo "$out" | grep -q 'Asynchronous notification "drv_psql_chan" with payload "hello psql"' ||
    fail "notification not received: $out"
echo "ok: notify"

# cancel: SIGINT to psql makes it send a CancelRequest
"$PSQL" -X -At "$CONN" -v VERBOSITY=verbose -c '\set VERBOSITY verbose' \
    -c 'SELECT pg_sleep(60)' >"$S/cancel.out" 2>&1 &
pid=$!
sleep 2
kill -INT $pid
start=$(date +%s)
wait $pid
el=$(($(date +%s) - start))
grep -q '57014' "$S/cancel.out" || grep -q 'canceling statement due to user request' "$S/cancel.out" ||
    fail "cancel: $(cat "$S/cancel.out")"
[ $el -lt 20 ] || fail "cancel took ${el}s"
echo "ok: cancel"

# wrong password: refused, no session
out=$(PGPASSWORD=wrong-password "$PSQL" -X -At "$CONN" -c 'SELECT 1' 2>&1) &&
    fail "wrong password accepted"
echo "$out" | grep -q 'password authentication failed' || fail "wrong password: $out"
echo "ok: wrong password"

# the session is still usable by others afterwards
[ "$(q -c 'SELECT 42')" = 42 ] || fail "after tests"
echo "all ok"
