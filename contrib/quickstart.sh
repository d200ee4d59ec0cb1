#!/bin/bash
# quickstart.sh: on a fresh Debian 12 (as root), installs what pgtide needs, builds it, and starts
# it on its embedded default -- a data directory ./data (initialised on the first run) with a local
# PostgreSQL 15 compute started on demand. Prints how to connect. Arguments are passed to pgtide
# (e.g. -c suspend_after=60s); DATA=path overrides the data directory.
set -eu
TOP=$(cd "$(dirname "$0")/.." && pwd)
cd "$TOP"
PKGS="build-essential autoconf automake libtool pkg-config libev-dev libssl-dev libpq-dev
libinih-dev libjemalloc-dev postgresql-15 postgresql-client-15"
missing=()
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    SUDO=
    [ "$(id -u)" = 0 ] || SUDO=sudo
    # keep package scripts from starting Debian's own PostgreSQL service
    created=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
        $SUDO chmod 755 /usr/sbin/policy-rc.d
        created=1
    fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
    [ $created = 1 ] && $SUDO rm -f /usr/sbin/policy-rc.d
fi
if [ ! -x ./pgtide ] || [ -n "$(find main.c common proxy scaler storage include -newer ./pgtide -print -quit)" ]; then
    [ -f configure ] || autoreconf -fi
    [ -f Makefile ] || ./configure
    make -j"$(nproc)" pgtide
fi
# the compute runs as the postgres user when we are root: it must be able to reach DATA, which a
# checkout under /root does not allow; /var/lib/pgtide is used then
if [ -z "${DATA:-}" ]; then
    DATA=$TOP/data
    if [ "$(id -u)" = 0 ] && ! runuser -u postgres -- test -x "$TOP" 2>/dev/null; then
        DATA=/var/lib/pgtide/data
        mkdir -p /var/lib/pgtide
        chmod 755 /var/lib/pgtide
    fi
fi
echo "quickstart: data directory $DATA"
exec ./pgtide -D "$DATA" "$@"
