#!/bin/bash
# resume.sh: pgtide's resume-latency benchmark (issue 3). On its own embedded pgtide (fresh data
# directory, killed by pid at the end) with a ~100 MB database (pgbench -i -s 7 through pgtide),
# measures 50 tries each of: (a) TCP connect -> first row on a suspended compute, (b) a parked
# client's next query after SUSPEND, (c) a query on a paused (frozen) compute versus (d) the same
# query on a running one, and (e) a bare `postgres` start-to-first-query on the same data
# (pg_ctl start -w then psql, 10 tries; and a direct fork polled every 2 ms). Prints p50/p95/p99.
# The work is in resume.py beside this script. Not a test: nothing is asserted.
#
# Usage: contrib/bench/resume.sh [-n TRIES, default 50] [-b BARE_TRIES, default 10]
#                                [-s SCALE, default 7]
# Environment: PGTIDE_BIN (default ./pgtide at the repo top), BENCH_SSLMODE (default disable).
# Must run as root (the computes run as the postgres user).
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
while getopts "n:b:s:h" o; do
    case "$o" in
    n) export BENCH_TRIES=$OPTARG ;;
    b) export BENCH_BARE_TRIES=$OPTARG ;;
    s) export BENCH_SCALE=$OPTARG ;;
    *)
        sed -n '2,13p' "$0"
        exit 2
        ;;
    esac
done
export PGTIDE_TOP=${PGTIDE_TOP:-$(cd "$HERE/../.." && pwd)}
exec /usr/bin/python3 "$HERE/resume.py"
