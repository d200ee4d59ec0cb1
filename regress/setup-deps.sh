#!/bin/bash
# setup-deps.sh: installs everything pgtide's build and test suites need on Debian 12, then the
# node driver's locked packages. Idempotent: apt is skipped when every package is present, npm ci
# when node_modules matches. Package scripts may start the Debian postgresql/pgbouncer services;
# they are stopped and disabled so that nothing listens on 5432 or 6432 afterwards.
set -eu
TOP=$(cd "$(dirname "$0")/.." && pwd)
PKGS="build-essential autoconf automake libtool pkg-config libev-dev libssl-dev libpq-dev
libinih-dev libzstd-dev libjemalloc-dev check libsubunit-dev postgresql-15
postgresql-server-dev-15 postgresql-client-15 pgbouncer python3-psycopg2 python3-psycopg
python3-asyncpg python3-prometheus-client prometheus libpostgresql-jdbc-java default-jdk-headless nodejs npm
clang libclang-rt-14-dev clang-format"

# a package whose command is already there from another source (e.g. nodejs with its own npm,
# another JDK) counts as present: installing the Debian one would conflict
provided() {
    case "$1" in
    npm) command -v npm >/dev/null ;;
    nodejs) command -v node >/dev/null ;;
    default-jdk-headless) command -v javac >/dev/null ;;
    *) return 1 ;;
    esac
}
missing=()
for p in $PKGS; do
    provided "$p" && continue
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup-deps: installing ${missing[*]}"
    SUDO=
    [ "$(id -u)" = 0 ] || SUDO=sudo
    # keep package scripts from starting services (policy-rc.d 101 = action forbidden)
    created_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
        $SUDO chmod 755 /usr/sbin/policy-rc.d
        created_policy=1
    fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
    [ $created_policy = 1 ] && $SUDO rm -f /usr/sbin/policy-rc.d
else
    echo "setup-deps: all Debian packages present"
fi

# make sure the distribution's services are not running (they would hold 5432/6432)
stop_pidfile() {
    local f=$1 pid
    [ -f "$f" ] || return 0
    pid=$(head -1 "$f")
    case "$pid" in '' | *[!0-9]*) return 0 ;; esac
    kill -TERM "$pid" 2>/dev/null || true
}
if command -v pg_lsclusters >/dev/null 2>&1; then
    pg_lsclusters -h 2>/dev/null | while read -r ver name port status rest; do
        case "$status" in online*) pg_ctlcluster "$ver" "$name" stop || true ;; esac
    done
fi
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    systemctl disable --now pgbouncer postgresql >/dev/null 2>&1 || true
fi
for f in /var/run/postgresql/pgbouncer.pid /run/postgresql/pgbouncer.pid; do stop_pidfile "$f"; done

# node-postgres for the driver matrix
D=$TOP/regress/drivers/node
if [ -f "$D/package-lock.json" ]; then
    if [ ! -d "$D/node_modules/pg" ] || [ "$D/package-lock.json" -nt "$D/node_modules/.package-lock.json" ]; then
        (cd "$D" && npm ci --no-audit --no-fund --loglevel=error)
    fi
fi
echo "setup-deps: done"
