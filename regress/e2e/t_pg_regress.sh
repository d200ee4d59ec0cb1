#!/bin/bash
# t_pg_regress.sh: the pg_regress suite in regress/sql/. Runs pg_regress twice: first DIRECTLY
# against the PostgreSQL test server, whose results become the expected files, then through the
# target, compared against them -- so a pass means "identical to direct", by construction.
# Both runs use TLS (PGSSLMODE=require) and role app on database appdb (--use-existing).
set -u
S=${PGTIDE_SCRATCH:-$(mktemp -d)}
PG_REGRESS=${PG_REGRESS:-$(pg_config --pkglibdir)/pgxs/src/test/regress/pg_regress}
SQLDIR=$PGTIDE_TOP/regress/sql
BINDIR=${PGTIDE_BINDIR:-/usr/lib/postgresql/15/bin}
tests=$(cd "$SQLDIR" && ls *.sql | sed 's/\.sql$//' | sort)
[ -n "$tests" ] || { echo "FAIL: no tests in $SQLDIR"; exit 1; }
export PGSSLMODE=require PGCONNECT_TIMEOUT=10 PGPASSWORD=$PGTIDE_PASSWORD

# drop what an interrupted earlier run may have left (quietly, so it cannot differ)
clean() {
    local port=$1 s
    for s in rt_types rt_joins rt_tx rt_copy rt_err rt_prep rt_cur rt_notice; do
        echo "SET client_min_messages = error; DROP SCHEMA IF EXISTS $s CASCADE;"
    done | "$BINDIR/psql" -X -q -v ON_ERROR_STOP=1 \
        "host=$PGTIDE_HOST port=$port user=$PGTIDE_USER dbname=$PGTIDE_DB" >/dev/null
}

# run 1: direct, produces the expected output
mkdir -p "$S/direct/sql" "$S/direct/expected" "$S/proxy/sql" "$S/proxy/expected"
cp "$SQLDIR"/*.sql "$S/direct/sql/"
cp "$SQLDIR"/*.sql "$S/proxy/sql/"
for t in $tests; do : >"$S/direct/expected/$t.out"; done
clean "$PG_PORT" || { echo "FAIL: cannot clean the direct database"; exit 1; }
"$PG_REGRESS" --use-existing --host="$PGTIDE_HOST" --port="$PG_PORT" --user="$PGTIDE_USER" \
    --dbname="$PGTIDE_DB" --bindir="$BINDIR" --inputdir="$S/direct" --outputdir="$S/direct" \
    $tests >"$S/direct.log" 2>&1
for t in $tests; do
    [ -s "$S/direct/results/$t.out" ] || { echo "FAIL: direct run produced no $t.out"; cat "$S/direct.log"; exit 1; }
    cp "$S/direct/results/$t.out" "$S/proxy/expected/$t.out"
done
echo "ok: direct run produced $(echo $tests | wc -w) expected files"

# run 2: through the target
clean "$PGTIDE_PORT" || { echo "FAIL: cannot clean the target database"; exit 1; }
if "$PG_REGRESS" --use-existing --host="$PGTIDE_HOST" --port="$PGTIDE_PORT" \
    --user="$PGTIDE_USER" --dbname="$PGTIDE_DB" --bindir="$BINDIR" --inputdir="$S/proxy" \
    --outputdir="$S/proxy" $tests >"$S/proxy.log" 2>&1; then
    cat "$S/proxy.log"
    echo "ok: output through the target is identical to direct"
else
    cat "$S/proxy.log"
    [ -f "$S/proxy/regression.diffs" ] && head -150 "$S/proxy/regression.diffs"
    echo "FAIL: pg_regress through the target differs from direct"
    exit 1
fi
