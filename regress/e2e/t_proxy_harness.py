"""t_proxy_harness: helpers for the proxy-core e2e tests (t_proxy_*.py), and, run as a test, a
check that a private pgtide can be started and stopped for the current target.

The tests that need special settings start their OWN pgtide with Tide(settings): in the static
targets in front of the harness's PostgreSQL over its unix socket (PG_SOCK, where the server trusts
local logins, so every proxy-side auth method can be exercised), with an auth_file made from
pg_authid plus any extra lines; in the embedded target on a private data directory (its own
compute; role app and database appdb are created through it, as a user of a fresh installation
would). Extra roles are made with make_role(). A Tide is stopped by pid (SIGTERM, then SIGKILL),
and in embedded mode whatever is left of its compute is stopped too; every Tide still running at
exit is stopped. Compute processes are found through /proc (comm "postgres", cwd DATA/primary),
never by pattern-matching command lines. Waits are bounded; nothing asserts wall-clock time.
"""
import base64
import hashlib
import hmac
import os
import socket
import ssl
import struct
import subprocess

import psycopg2

from lib_check import (BINDIR, PGTIDE_BIN, PSQL, TOP, TideProcess, check, failures,  # noqa: F401
                       finish, free_port, log, scratch_dir, wait_until)

TARGET = os.environ.get("PGTIDE_TARGET", "static")
EMBEDDED = TARGET == "embedded"
PG_SOCK = os.environ.get("PG_SOCK", "")
PG_PORT = os.environ.get("PG_PORT", "")
PG_SUPERPASS = os.environ.get("PG_SUPERPASS", "superpass")


def direct_psql(sql, db="postgres"):
    """psql as superuser postgres on the harness's PostgreSQL (static targets), over its socket."""
    r = subprocess.run([PSQL, "-X", "-At", "-v", "ON_ERROR_STOP=1", "-h", PG_SOCK, "-p", PG_PORT,
                        "-U", "postgres", "-d", db, "-c", sql],
                       capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise RuntimeError(f"psql {sql!r}: {r.stderr}")
    return r.stdout


# ---------------------------------------------------------------- raw protocol

def recv_exact(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise EOFError(f"closed after {len(buf)} of {n} bytes")
        buf += chunk
    return buf


def read_msg(s):
    """(type byte, body) of one backend message."""
    hdr = recv_exact(s, 5)
    length = struct.unpack("!I", hdr[1:])[0]
    if length < 4 or length > 1 << 24:
        raise RuntimeError(f"bad message length {length}")
    return hdr[:1], recv_exact(s, length - 4)


def error_fields(body):
    out = {}
    for part in body.split(b"\0"):
        if part:
            out[part[:1].decode()] = part[1:].decode(errors="replace")
    return out


def startup_packet(user, db, version=196608, extra=None):
    body = struct.pack("!I", version) + b"user\0" + user.encode() + b"\0database\0" + \
        db.encode() + b"\0"
    for k, v in (extra or {}).items():
        body += k.encode() + b"\0" + v.encode() + b"\0"
    body += b"\0"
    return struct.pack("!I", len(body) + 4) + body


def tls_wrap(s):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx.wrap_socket(s)


def msg(typ, body):
    return typ + struct.pack("!I", len(body) + 4) + body


def raw_connect(port, tls=False, timeout=30.0, host="127.0.0.1"):
    """A TCP socket to pgtide; with tls, SSLRequest first (raises unless answered 'S')."""
    s = socket.create_connection((host, port), timeout=timeout)
    if not tls:
        return s
    s.sendall(struct.pack("!II", 8, 80877103))
    ans = recv_exact(s, 1)
    if ans != b"S":
        s.close()
        raise RuntimeError(f"SSLRequest answered {ans!r}")
    return tls_wrap(s)


def _scram(s, password, body):
    mechs = [m.decode() for m in body[4:].split(b"\0") if m]
    if "SCRAM-SHA-256" not in mechs:
        raise RuntimeError(f"no SCRAM-SHA-256 among {mechs}")
    nonce = base64.b64encode(os.urandom(18)).decode()
    first_bare = f"n=,r={nonce}"
    first = ("n,," + first_bare).encode()
    s.sendall(msg(b"p", b"SCRAM-SHA-256\0" + struct.pack("!I", len(first)) + first))
    typ, body = read_msg(s)
    if typ != b"R" or struct.unpack("!I", body[:4])[0] != 11:
        return typ, body
    server_first = body[4:].decode()
    attrs = dict(kv.split("=", 1) for kv in server_first.split(","))
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(attrs["s"]),
                                 int(attrs["i"]))
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored = hashlib.sha256(client_key).digest()
    final_wo = f"c=biws,r={attrs['r']}"
    auth_msg = f"{first_bare},{server_first},{final_wo}".encode()
    sig = hmac.new(stored, auth_msg, hashlib.sha256).digest()
    proof = bytes(a ^ b for a, b in zip(client_key, sig))
    s.sendall(msg(b"p", (final_wo + ",p=" + base64.b64encode(proof).decode()).encode()))
    return read_msg(s)


def raw_login(port, user, password, db, tls=False, version=196608, extra=None, timeout=30.0,
              host="127.0.0.1"):
    """Logs in over a raw socket (SCRAM-SHA-256 without channel binding, md5 or cleartext, as the
    server asks). Returns ("ok", sock) at the first ReadyForQuery, or ("error", fields of the
    ErrorResponse) (socket closed), or ("closed", text) when the connection ends without one."""
    s = raw_connect(port, tls, timeout, host)
    try:
        s.sendall(startup_packet(user, db, version, extra))
        while True:
            typ, body = read_msg(s)
            if typ == b"E":
                s.close()
                return "error", error_fields(body)
            if typ == b"Z":
                return "ok", s
            if typ != b"R":
                continue
            code = struct.unpack("!I", body[:4])[0]
            if code == 10:
                typ, body = _scram(s, password, body)
                if typ == b"E":
                    s.close()
                    return "error", error_fields(body)
            elif code == 5:
                inner = hashlib.md5((password + user).encode()).hexdigest()
                outer = hashlib.md5(inner.encode() + body[4:8]).hexdigest()
                s.sendall(msg(b"p", b"md5" + outer.encode() + b"\0"))
            elif code == 3:
                s.sendall(msg(b"p", password.encode() + b"\0"))
    except (EOFError, OSError) as e:
        s.close()
        return "closed", str(e)


def raw_query(s, sql):
    """Simple query on a logged-in raw socket: (list of (type, body) up to ReadyForQuery)."""
    s.sendall(msg(b"Q", sql.encode() + b"\0"))
    out = []
    while True:
        typ, body = read_msg(s)
        out.append((typ, body))
        if typ == b"Z":
            return out


# ---------------------------------------------------------------- private pgtide

_tides = []
_embedded_data = {}
_knows = {}


def binary_knows(key):
    """True when the pgtide binary mentions the configuration key (newer keys, e.g.
    metrics_listen, whose default port would collide between concurrently running pgtides)."""
    if key not in _knows:
        try:
            with open(PGTIDE_BIN, "rb") as f:
                _knows[key] = key.encode() in f.read()
        except OSError:
            _knows[key] = False
    return _knows[key]


def role_sql(name, password=None):
    pw = f" PASSWORD '{password}'" if password else ""
    return (f"DO $$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{name}') THEN "
            f"CREATE ROLE {name} LOGIN{pw}; END IF; END$$")


def make_role_direct(name, password=None):
    """Static targets: creates a login role on the harness's PostgreSQL (idempotent). Do it
    before Tide() so that the role's verifier lands in the Tide's auth_file."""
    direct_psql(role_sql(name, password))


class Endpoint:
    """Where tests connect: a pgtide on 127.0.0.1:port whose superuser postgres (an admin user)
    has password superpass."""

    def __init__(self, port, superpass):
        self.port = int(port)
        self.superpass = superpass

    def dsn(self, user="app", password="secret", dbname="appdb", **kw):
        parts = {"host": "127.0.0.1", "port": self.port, "user": user, "dbname": dbname,
                 "sslmode": "prefer", "connect_timeout": 30}
        if password is not None:
            parts["password"] = password
        parts.update(kw)
        return " ".join(f"{k}='{v}'" for k, v in parts.items())

    def connect(self, user="app", password="secret", dbname="appdb", **kw):
        return psycopg2.connect(self.dsn(user, password, dbname, **kw))

    def admin_conn(self):
        c = self.connect(user="postgres", password=self.superpass, dbname="pgtide")
        c.autocommit = True
        return c

    def admin(self, sql):
        """Runs an admin command; returns (column names, rows) or raises psycopg2.Error."""
        c = self.admin_conn()
        try:
            cur = c.cursor()
            cur.execute(sql)
            if cur.description is None:
                return [], []
            return [d[0] for d in cur.description], cur.fetchall()
        finally:
            c.close()

    def admin_rows(self, sql):
        cols, rows = self.admin(sql)
        return [dict(zip(cols, r)) for r in rows]

    def raw_login(self, user="app", password="secret", dbname="appdb", **kw):
        return raw_login(self.port, user, password, dbname, **kw)


def shared():
    """The target pgtide that regress/e2e/run started (PGTIDE_PORT)."""
    return Endpoint(os.environ["PGTIDE_PORT"], os.environ.get("PGTIDE_SUPERUSER_PASSWORD", ""))


class Tide(Endpoint, TideProcess):
    """One private pgtide. settings: dict of -c key=value (values as str). unix_backend: in the
    static-tcp target, still reach the server over its unix socket (trusted there: needed for
    users that log in to pgtide without SCRAM). conf: text written to
    DATA/pgtide.conf before the start (embedded: after the first initialisation). auth_extra:
    lines appended to the auth_file (static: the file from pg_authid; embedded: an auth_file is
    only written when lines are given). reuse: in embedded mode, a key naming a data directory
    that earlier Tides with the same key initialised (saves an initdb)."""

    def __init__(self, settings=None, name="tide", conf=None, auth_extra=None, reuse=None,
                 unix_backend=False):
        self.dir = scratch_dir(name)
        self.sock = os.path.join(self.dir, "sock")
        os.makedirs(self.sock)
        self.logpath = os.path.join(self.dir, "pgtide.log")
        self.proc = None
        if EMBEDDED and reuse and reuse in _embedded_data:
            self.data = _embedded_data[reuse]
        else:
            self.data = os.path.join(self.dir, "data")
        if EMBEDDED and reuse:
            _embedded_data.setdefault(reuse, self.data)
        self.settings = {k: str(v) for k, v in (settings or {}).items()}
        if binary_knows("metrics_listen"):
            self.settings.setdefault("metrics_listen", "")
        if os.environ.get("PGT_WORKERS") and binary_knows("workers"):
            self.settings.setdefault("workers", os.environ["PGT_WORKERS"])  # regress/e2e/run
        self.auth_file = None
        if not EMBEDDED:
            os.makedirs(self.data, exist_ok=True)
            self.auth_file = os.path.join(self.dir, "users.txt")
            rows = direct_psql("SELECT '\"' || rolname || '\" \"' || rolpassword || '\"' "
                               "FROM pg_authid WHERE rolpassword IS NOT NULL ORDER BY 1")
            with open(self.auth_file, "w") as f:
                f.write(rows + "".join(ln + "\n" for ln in (auth_extra or [])))
            backend = {"static_host": PG_SOCK}
            if TARGET == "static-tcp" and not unix_backend:
                # like the target: TCP with TLS required toward the server, SCRAM logins made
                # from the clients' own proofs
                backend = {"static_host": "127.0.0.1", "server_tls_sslmode": "require"}
            self.settings = {"compute_provider": "static", "static_port": PG_PORT,
                             "auth_file": self.auth_file, **backend, **self.settings}
            self.superpass = PG_SUPERPASS
        elif auth_extra:
            self.auth_file = os.path.join(self.dir, "users.txt")
            with open(self.auth_file, "w") as f:
                f.write("".join(ln + "\n" for ln in auth_extra))
            self.settings.setdefault("auth_file", self.auth_file)
        self.conf = conf
        self.has_compute = EMBEDDED
        self.track()
        self.start()

    def args(self, port=None):
        a = [PGTIDE_BIN, "-D", self.data, "-c", f"listen_port={port or self.port}",
             "-c", f"unix_socket_dir={self.sock}"]
        for k, v in self.settings.items():
            a += ["-c", f"{k}={v}"]
        return a

    def start(self):
        self.port = free_port()
        fresh = EMBEDDED and not os.path.exists(os.path.join(self.data, "initial-password"))
        if self.conf is not None and not fresh:
            self.write_conf(self.conf)
        logf = open(self.logpath, "a")
        self.proc = subprocess.Popen(self.args(), stdout=logf, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        logf.close()
        self.pid = self.proc.pid
        if EMBEDDED:
            pwfile = os.path.join(self.data, "initial-password")
            ok = wait_until(lambda: (os.path.exists(pwfile) and os.path.getsize(pwfile) > 0)
                            or self.proc.poll() is not None, 180, 0.1)
            if not ok or self.proc.poll() is not None:
                raise RuntimeError(f"pgtide did not start; log:\n{self.log_tail()}")
            with open(pwfile) as f:
                self.superpass = f.readline().strip()
        if not wait_until(self.ready, 120, 0.2):
            raise RuntimeError(f"pgtide {self.pid} not ready on {self.port}:\n{self.log_tail()}")
        if fresh:
            self.setup_embedded()
            if self.conf is not None:
                self.write_conf(self.conf)
                self.admin("RELOAD")
        log(f"pgtide pid {self.pid} port {self.port} data {self.data} ({TARGET})")

    def setup_embedded(self):
        c = self.connect(user="postgres", password=self.superpass, dbname="postgres")
        c.autocommit = True
        cur = c.cursor()
        cur.execute("CREATE ROLE app LOGIN CREATEDB PASSWORD 'secret'")
        cur.execute("CREATE DATABASE appdb OWNER app")
        c.close()
        if not wait_until(lambda: self.try_login("app", "secret", "appdb"), 60, 0.2):
            raise RuntimeError(f"role app not usable through pgtide:\n{self.log_tail()}")

    def write_conf(self, text):
        with open(os.path.join(self.data, "pgtide.conf"), "w") as f:
            f.write(text)

    def try_login(self, user, password, db, **kw):
        if self.proc is None or self.proc.poll() is not None:
            raise RuntimeError(f"pgtide exited:\n{self.log_tail()}")
        try:
            self.connect(user=user, password=password, dbname=db, connect_timeout=5,
                         **kw).close()
            return True
        except psycopg2.Error:
            return False

    def ready(self):
        if EMBEDDED and not os.path.exists(os.path.join(self.data, "initial-password")):
            return False
        user, pw, db = ("postgres", self.superpass, "postgres")
        return self.try_login(user, pw, db)

    def make_role(self, name, password=None):
        """Creates a login role on the backend (idempotent); see make_role()."""
        sql = role_sql(name, password)
        if EMBEDDED:
            c = self.connect(user="postgres", password=self.superpass, dbname="postgres")
            c.autocommit = True
            c.cursor().execute(sql)
            c.close()
        else:
            direct_psql(sql)


def main():
    """Self-test: a private pgtide for this target accepts app, lists it, and stops cleanly."""
    t = Tide({"log_level": "info"}, name="harness")
    c = t.connect()
    cur = c.cursor()
    cur.execute("SELECT current_user, current_database()")
    check(cur.fetchone() == ("app", "appdb"), "private pgtide serves app/appdb")
    rows = t.admin_rows("SHOW CLIENTS")
    check(any(r["user"] == "app" and r["database"] == "appdb" for r in rows),
          "SHOW CLIENTS of the private pgtide lists the app client")
    c.close()
    t.stop()
    check(not t.compute_pids(), "no compute process left after stop")
    try:
        socket.create_connection(("127.0.0.1", t.port), timeout=2).close()
        check(False, "port closed after stop")
    except OSError:
        check(True, "port closed after stop")
    finish()


if __name__ == "__main__":
    main()
