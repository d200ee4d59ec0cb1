#!/bin/bash
# run-all.sh: every test of pgtide, from a clean checkout on Debian 12 (run as root, or with sudo
# available for apt-get). Installs what is missing, builds with --enable-debug --enable-asan,
# then runs: the Check unit suites, the formatting check, each libFuzzer target for a bounded
# time, and the end-to-end suites (driver matrix, pg_regress, abuse, serverless) against pgtide
# in front of a static PostgreSQL 15 and against pgtide's own embedded compute. Prints one line
# per stage and closes with "N passed, N failed"; exits non-zero when anything failed.
#
# Environment: FUZZ_SECONDS (per fuzz target, default 30), SKIP_DEPS=1 (skip apt/npm).
set -u
TOP=$(cd "$(dirname "$0")/.." && pwd)
cd "$TOP" || exit 1
FUZZ_SECONDS=${FUZZ_SECONDS:-30}
LOGS=$(mktemp -d "${TMPDIR:-/tmp}/pgtide-run-all.XXXXXX")
chmod 755 "$LOGS"
pass=0
fail=0
failed=()

stage() { # stage NAME CMD...: runs CMD with its output in $LOGS/NAME.log
    local name=$1 start rc
    shift
    start=$(date +%s)
    "$@" >"$LOGS/$name.log" 2>&1
    rc=$?
    if [ $rc = 0 ]; then
        pass=$((pass + 1))
        echo "ok   $name ($(($(date +%s) - start))s)"
    else
        fail=$((fail + 1))
        failed+=("$name")
        echo "FAIL $name ($(($(date +%s) - start))s, exit $rc); last lines of $LOGS/$name.log:"
        tail -40 "$LOGS/$name.log" | sed 's/^/    | /'
    fi
    return $rc
}

build() {
    autoreconf -fi && ./configure --enable-debug --enable-asan && make -j"$(nproc)" && make -j"$(nproc)" check TESTS=
}

unit() {
    make -j"$(nproc)" check
    local rc=$?
    grep -h -E '^[0-9]+%: Checks: ' regress/unit/*.log 2>/dev/null
    return $rc
}

format() {
    local bad=0 f
    for f in $(git ls-files '*.c' '*.h'); do
        clang-format --dry-run -Werror "$f" || bad=1
    done
    return $bad
}

fuzz() {
    local dir=$LOGS/fuzz t
    mkdir -p "$dir"
    clang -g -O1 -fsanitize=fuzzer,address,undefined -Iinclude common/pkt.c regress/fuzz/fuzz_pkt.c \
        -o "$dir/fuzz_pkt" || return 1
    clang -g -O1 -fsanitize=fuzzer,address,undefined -Iinclude regress/fuzz/fuzz_scram.c \
        common/scram.c common/secret.c common/hba.c common/userlist.c -lssl -lcrypto \
        -o "$dir/fuzz_scram" || return 1
    clang -g -O1 -fsanitize=fuzzer,address,undefined -Iinclude regress/fuzz/fuzz_sqlscan.c \
        common/sqlscan.c -o "$dir/fuzz_sqlscan" || return 1
    for t in pkt scram sqlscan; do
        mkdir -p "$dir/corpus_$t"
        [ -d "regress/fuzz/corpus_$t" ] && cp -r "regress/fuzz/corpus_$t/." "$dir/corpus_$t/"
        "$dir/fuzz_$t" -max_total_time="$FUZZ_SECONDS" -print_final_stats=1 "$dir/corpus_$t" || return 1
    done
}

if [ "${SKIP_DEPS:-0}" != 1 ]; then
    stage deps regress/setup-deps.sh || { echo "0 passed, 1 failed"; exit 1; }
fi
stage build build || { echo "$pass passed, $((fail)) failed"; exit 1; }
stage unit unit
stage format format
stage fuzz fuzz
for target in static-tcp embedded; do
    if stage "e2e-$target" env PGTIDE_BIN="$TOP/pgtide" regress/e2e/run --target=$target; then
        grep -E '^(ok|FAIL) ' "$LOGS/e2e-$target.log" | sed 's/^/    /'
    fi
done
echo "logs: $LOGS"
[ $fail -gt 0 ] && echo "failed: ${failed[*]}"
echo "$pass passed, $fail failed"
[ $fail = 0 ]
