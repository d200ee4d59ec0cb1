# pgtest.sh: shell helpers for pgtide's end-to-end tests and benchmarks. Source it from bash.
# It finds free ports, starts a throw-away PostgreSQL 15 (run as the `postgres` user, listening on
# 127.0.0.1 and a private socket directory, TLS on with a self-signed certificate, SCRAM passwords,
# a role `app`/`secret` owning database `appdb`), starts pgtide (embedded default, or the static
# provider in front of that server with an auth_file copied from pg_authid), waits for readiness,
# and on EXIT stops everything it started, by pid only.
#
# Functions set global variables (documented per function) rather than printing, so that callers
# keep the pids needed for cleanup in this shell.

PGT_BINDIR=${PGT_BINDIR:-/usr/lib/postgresql/15/bin}
PGT_TOP=${PGT_TOP:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
PGT_RUN_USER=${PGT_RUN_USER:-postgres}
PGT_SUPERPASS=${PGT_SUPERPASS:-superpass}
PGT_PIDS=()
PGT_PGDATAS=()
PGT_TIDEDATAS=()
PGT_TMPDIRS=()

# pgt_log MSG...: progress message on stderr.
pgt_log() {
    echo "[pgtest $(date +%H:%M:%S)] $*" >&2
}

# pgt_die MSG...: message on stderr, exit 1 (the EXIT trap cleans up).
pgt_die() {
    pgt_log "FATAL: $*"
    exit 1
}

# pgt_as_pg CMD...: run CMD as the postgres user when we are root, else as ourselves.
pgt_as_pg() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u "$PGT_RUN_USER" -- "$@"
    else
        "$@"
    fi
}

# pgt_free_port: prints a TCP port on 127.0.0.1 that is free right now.
pgt_free_port() {
    /usr/bin/python3 - <<'EOF'
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()
EOF
}

# pgt_mktemp: sets PGT_TMP to a new 0755 directory under /tmp (removed on EXIT unless
# PGT_KEEP=1), readable by the postgres user.
pgt_mktemp() {
    PGT_TMP=$(mktemp -d /tmp/pgtide-test.XXXXXX) || pgt_die "mktemp failed"
    chmod 755 "$PGT_TMP"
    PGT_TMPDIRS+=("$PGT_TMP")
}

# pgt_kill_pid PID: SIGTERM, wait up to 10 s, then SIGKILL.
pgt_kill_pid() {
    local pid=$1 i
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null
    for i in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null
    sleep 0.2
}

# pgt_kill_postmaster PGDATA: stops the postmaster whose pid is in PGDATA/postmaster.pid.
pgt_kill_postmaster() {
    local pidfile="$1/postmaster.pid" pid
    [ -f "$pidfile" ] || return 0
    pid=$(head -1 "$pidfile" 2>/dev/null)
    case "$pid" in '' | *[!0-9]*) return 0 ;; esac
    # SIGQUIT = immediate shutdown; the cluster is thrown away anyway.
    kill -QUIT "$pid" 2>/dev/null || return 0
    local i
    for i in $(seq 1 50); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null
}

# pgt_cleanup: the EXIT trap. Kills pgtide processes, any compute they left behind, the
# throw-away servers, and removes temp dirs (kept when PGT_KEEP=1).
pgt_cleanup() {
    local p d c
    for p in "${PGT_PIDS[@]}"; do pgt_kill_pid "$p"; done
    for d in "${PGT_TIDEDATAS[@]}"; do
        for c in "$d"/primary "$d"/replicas/*; do
            [ -d "$c" ] && pgt_kill_postmaster "$c"
        done
    done
    for d in "${PGT_PGDATAS[@]}"; do pgt_kill_postmaster "$d"; done
    if [ "${PGT_KEEP:-0}" != 1 ]; then
        for d in "${PGT_TMPDIRS[@]}"; do rm -rf "$d"; done
    else
        for d in "${PGT_TMPDIRS[@]}"; do pgt_log "kept $d"; done
    fi
}
trap pgt_cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# pgt_make_cert DIR: writes DIR/server.crt and DIR/server.key (self-signed, CN=localhost).
pgt_make_cert() {
    openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj /CN=localhost \
        -keyout "$1/server.key" -out "$1/server.crt" >/dev/null 2>&1 ||
        pgt_die "openssl could not make a certificate"
    chmod 600 "$1/server.key"
}

# pgt_start_pg [extra postgresql.conf lines...]
# Starts a throw-away PostgreSQL. Sets PG_DIR (its parent dir), PG_DATA, PG_PORT, PG_SOCK (socket
# directory), PG_HOST=127.0.0.1, PG_SUPERPASS (password of superuser postgres).
# Creates role app (password secret, LOGIN, CREATEDB) and database appdb owned by app.
pgt_start_pg() {
    pgt_mktemp
    PG_DIR=$PGT_TMP
    PG_DATA=$PG_DIR/data
    PG_SOCK=$PG_DIR/sock
    PG_HOST=127.0.0.1
    PG_PORT=$(pgt_free_port)
    PG_SUPERPASS=$PGT_SUPERPASS
    mkdir -p "$PG_SOCK"
    echo "$PG_SUPERPASS" >"$PG_DIR/pwfile"
    chown -R "$PGT_RUN_USER" "$PG_DIR" 2>/dev/null
    pgt_as_pg "$PGT_BINDIR/initdb" -D "$PG_DATA" -U postgres --pwfile="$PG_DIR/pwfile" \
        --auth-local=trust --auth-host=scram-sha-256 --no-locale -E UTF8 \
        >"$PG_DIR/initdb.log" 2>&1 || {
        cat "$PG_DIR/initdb.log" >&2
        pgt_die "initdb failed"
    }
    pgt_make_cert "$PG_DATA"
    chown "$PGT_RUN_USER" "$PG_DATA/server.key" "$PG_DATA/server.crt" 2>/dev/null
    {
        echo "listen_addresses = '127.0.0.1'"
        echo "port = $PG_PORT"
        echo "unix_socket_directories = '$PG_SOCK'"
        echo "ssl = on"
        echo "password_encryption = 'scram-sha-256'"
        echo "max_connections = ${PGT_PG_MAX_CONNECTIONS:-200}"
        echo "fsync = off"
        echo "synchronous_commit = off"
        echo "full_page_writes = off"
        echo "shared_buffers = 128MB"
        echo "logging_collector = off"
        local line
        for line in "$@"; do echo "$line"; done
    } >>"$PG_DATA/postgresql.conf"
    {
        echo "local all all trust"
        echo "host all all 127.0.0.1/32 scram-sha-256"
    } >"$PG_DATA/pg_hba.conf"
    pgt_as_pg "$PGT_BINDIR/pg_ctl" -D "$PG_DATA" -l "$PG_DIR/server.log" -w -t 60 start \
        >/dev/null || {
        cat "$PG_DIR/server.log" >&2
        pgt_die "postgres did not start"
    }
    PGT_PGDATAS+=("$PG_DATA")
    pgt_psql_sock postgres -q -c "CREATE ROLE app LOGIN CREATEDB PASSWORD 'secret'" \
        -c "CREATE DATABASE appdb OWNER app" >/dev/null || pgt_die "could not create app/appdb"
    pgt_log "postgres up: 127.0.0.1:$PG_PORT socket $PG_SOCK data $PG_DATA"
}

# pgt_psql_sock DB ARGS...: psql as superuser over the direct server's unix socket.
pgt_psql_sock() {
    local db=$1
    shift
    "$PGT_BINDIR/psql" -X -v ON_ERROR_STOP=1 -h "$PG_SOCK" -p "$PG_PORT" -U postgres -d "$db" "$@"
}

# pgt_auth_file FILE: writes a PgBouncer-style userlist with every role's verifier from pg_authid.
pgt_auth_file() {
    pgt_psql_sock postgres -Atc \
        "SELECT '\"' || rolname || '\" \"' || rolpassword || '\"' FROM pg_authid
         WHERE rolpassword IS NOT NULL ORDER BY rolname" >"$1" || pgt_die "could not read pg_authid"
    chmod 600 "$1"
}

# pgt_pgtide_bin: prints the pgtide binary path (PGTIDE_BIN or the repo top), fails if missing.
pgt_pgtide_bin() {
    local b=${PGTIDE_BIN:-$PGT_TOP/pgtide}
    [ -x "$b" ] || return 1
    echo "$b"
}

# pgt_wait_ready HOST PORT USER PASSWORD DB PID LOG [SECONDS]: waits until `SELECT 1` works with
# sslmode=prefer, or fails when PID exits or SECONDS (default 60) pass.
pgt_wait_ready() {
    local host=$1 port=$2 user=$3 pass=$4 db=$5 pid=$6 log=$7 secs=${8:-60} i
    for i in $(seq 1 $((secs * 4))); do
        if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
            tail -30 "$log" >&2
            pgt_log "process $pid exited while waiting for readiness"
            return 1
        fi
        if PGPASSWORD=$pass PGCONNECT_TIMEOUT=5 "$PGT_BINDIR/psql" -X -At \
            "host=$host port=$port user=$user dbname=$db sslmode=prefer" \
            -c 'SELECT 1' >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.25
    done
    tail -30 "$log" >&2
    pgt_log "not ready after ${secs}s: $host:$port"
    return 1
}

# pgt_spawn_tide BIN ARGS...: starts pgtide in the background, output to $TIDE_LOG; sets
# TIDE_PID. PGT_OWN_SESSION=1 (the benchmarks): in a session of its own, as PgBouncer (-d) and
# the postmaster are, so that the scheduler's autogroups do not lump it with the clients.
pgt_spawn_tide() {
    if [ "${PGT_OWN_SESSION:-}" = 1 ]; then
        setsid "$@" >"$TIDE_LOG" 2>&1 &
    else
        "$@" >"$TIDE_LOG" 2>&1 &
    fi
    TIDE_PID=$!
}

# pgt_start_pgtide_static [extra -c key=value...]: pgtide with the static provider in front of
# the server from pgt_start_pg. Sets TIDE_DIR, TIDE_DATA, TIDE_PORT, TIDE_SOCK, TIDE_PID,
# TIDE_LOG, TIDE_AUTH_FILE.
pgt_start_pgtide_static() {
    local bin
    bin=$(pgt_pgtide_bin) || pgt_die "no pgtide binary (build it: make)"
    pgt_mktemp
    TIDE_DIR=$PGT_TMP
    TIDE_DATA=$TIDE_DIR/data
    TIDE_SOCK=$TIDE_DIR/sock
    TIDE_LOG=$TIDE_DIR/pgtide.log
    TIDE_AUTH_FILE=$TIDE_DIR/users.txt
    TIDE_PORT=$(pgt_free_port)
    mkdir -p "$TIDE_DATA" "$TIDE_SOCK"
    pgt_auth_file "$TIDE_AUTH_FILE"
    local args=(-D "$TIDE_DATA" -c metrics_listen= -c "listen_port=$TIDE_PORT" -c "unix_socket_dir=$TIDE_SOCK"
        -c compute_provider=static -c "static_host=$PG_SOCK" -c "static_port=$PG_PORT"
        -c "auth_file=$TIDE_AUTH_FILE" ${PGT_WORKERS:+-c "workers=$PGT_WORKERS"})
    local kv
    for kv in "$@"; do args+=(-c "$kv"); done
    pgt_spawn_tide "$bin" "${args[@]}"
    PGT_PIDS+=("$TIDE_PID")
    PGT_TIDEDATAS+=("$TIDE_DATA")
    pgt_wait_ready 127.0.0.1 "$TIDE_PORT" app secret appdb "$TIDE_PID" "$TIDE_LOG" 60 ||
        pgt_die "pgtide (static) did not become ready; log: $TIDE_LOG"
    pgt_log "pgtide static up: 127.0.0.1:$TIDE_PORT -> $PG_SOCK:$PG_PORT (pid $TIDE_PID)"
}

# pgt_start_pgtide_embedded [extra -c key=value...]: pgtide on an empty data directory (it runs
# initdb and its own compute). Sets TIDE_DIR, TIDE_DATA, TIDE_PORT, TIDE_SOCK, TIDE_PID, TIDE_LOG,
# TIDE_PASSWORD (from DATA/initial-password). Creates role app/secret and database appdb through
# pgtide as superuser postgres, like a user of a fresh installation would.
pgt_start_pgtide_embedded() {
    local bin i
    bin=$(pgt_pgtide_bin) || pgt_die "no pgtide binary (build it: make)"
    pgt_mktemp
    TIDE_DIR=$PGT_TMP
    TIDE_DATA=$TIDE_DIR/data
    TIDE_SOCK=$TIDE_DIR/sock
    TIDE_LOG=$TIDE_DIR/pgtide.log
    TIDE_PORT=$(pgt_free_port)
    mkdir -p "$TIDE_SOCK"
    local args=(-D "$TIDE_DATA" -c metrics_listen= -c "listen_port=$TIDE_PORT" -c "unix_socket_dir=$TIDE_SOCK"
        ${PGT_WORKERS:+-c "workers=$PGT_WORKERS"})
    local kv
    for kv in "$@"; do args+=(-c "$kv"); done
    PGT_TIDEDATAS+=("$TIDE_DATA")
    pgt_spawn_tide "$bin" "${args[@]}"
    PGT_PIDS+=("$TIDE_PID")
    for i in $(seq 1 480); do
        [ -s "$TIDE_DATA/initial-password" ] && break
        kill -0 "$TIDE_PID" 2>/dev/null || break
        sleep 0.25
    done
    [ -s "$TIDE_DATA/initial-password" ] || {
        tail -30 "$TIDE_LOG" >&2
        pgt_die "pgtide wrote no $TIDE_DATA/initial-password"
    }
    TIDE_PASSWORD=$(head -1 "$TIDE_DATA/initial-password")
    pgt_wait_ready 127.0.0.1 "$TIDE_PORT" postgres "$TIDE_PASSWORD" postgres "$TIDE_PID" \
        "$TIDE_LOG" 120 || pgt_die "pgtide (embedded) did not become ready; log: $TIDE_LOG"
    PGPASSWORD=$TIDE_PASSWORD "$PGT_BINDIR/psql" -X -q -v ON_ERROR_STOP=1 \
        "host=127.0.0.1 port=$TIDE_PORT user=postgres dbname=postgres sslmode=require" \
        -c "CREATE ROLE app LOGIN CREATEDB PASSWORD 'secret'" -c "CREATE DATABASE appdb OWNER app" ||
        pgt_die "could not create app/appdb through pgtide"
    pgt_wait_ready 127.0.0.1 "$TIDE_PORT" app secret appdb "$TIDE_PID" "$TIDE_LOG" 60 ||
        pgt_die "pgtide (embedded) does not accept the new role app"
    pgt_log "pgtide embedded up: 127.0.0.1:$TIDE_PORT data $TIDE_DATA (pid $TIDE_PID)"
}

# pgt_export_target MODE: exports the PGTIDE_* variables every e2e test reads, for MODE
# direct | static | embedded (the servers must already be running).
pgt_export_target() {
    export PGTIDE_TARGET=$1
    export PGTIDE_HOST=127.0.0.1 PGTIDE_USER=app PGTIDE_PASSWORD=secret PGTIDE_DB=appdb
    export PGTIDE_SSLMODE=require
    export PGTIDE_TOP=$PGT_TOP PGTIDE_BINDIR=$PGT_BINDIR
    export PG_HOST PG_PORT PG_SOCK PG_DATA PG_SUPERPASS
    case "$1" in
    direct)
        export PGTIDE_PORT=$PG_PORT PGTIDE_SUPERUSER_PASSWORD=$PG_SUPERPASS
        export PGTIDE_DATA= PGTIDE_PID= PGTIDE_LOG=
        ;;
    static | static-tcp)
        export PGTIDE_PORT=$TIDE_PORT PGTIDE_SUPERUSER_PASSWORD=$PG_SUPERPASS
        export PGTIDE_DATA=$TIDE_DATA PGTIDE_PID=$TIDE_PID PGTIDE_LOG=$TIDE_LOG
        export PGTIDE_SOCK=$TIDE_SOCK
        ;;
    embedded)
        export PGTIDE_PORT=$TIDE_PORT PGTIDE_SUPERUSER_PASSWORD=$TIDE_PASSWORD
        export PGTIDE_DATA=$TIDE_DATA PGTIDE_PID=$TIDE_PID PGTIDE_LOG=$TIDE_LOG
        export PGTIDE_SOCK=$TIDE_SOCK
        ;;
    *) pgt_die "unknown target $1" ;;
    esac
}

# pgt_target_conninfo [sslmode]: prints a libpq conninfo for the exported target as app.
pgt_target_conninfo() {
    echo "host=$PGTIDE_HOST port=$PGTIDE_PORT user=$PGTIDE_USER dbname=$PGTIDE_DB sslmode=${1:-$PGTIDE_SSLMODE}"
}
