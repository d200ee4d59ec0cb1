"""t_txn_common: helpers for the transaction/statement pooling e2e tests (t_txn_*.py), and, run as
a test, a check that a private pgtide in transaction mode serves a client and hands its few server
connections around.

Each t_txn_* test starts its OWN pgtide (Tide from t_proxy_harness) with pool_mode=transaction (or
statement) and pool_size=5, in front of the harness's PostgreSQL. Tests that compare pgtide with
PostgreSQL run the same protocol script over a raw socket to pgtide and over the server's unix
socket directly (trusted there), and compare the normalised answer sequences: every message except
ParameterStatus and notices, errors reduced to their SQLSTATE. Nothing asserts wall-clock time;
waits are bounded.
"""
import os
import socket
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from t_proxy_harness import (PG_PORT, PG_SOCK, TARGET, Tide, check, error_fields,  # noqa: E402,F401
                             finish, log, msg, raw_login, read_msg, wait_until)

import psycopg2  # noqa: E402


def txn_tide(mode="transaction", pool_size=5, name="txn", **extra):
    """A private pgtide in the given pool mode; extra: more -c settings."""
    settings = {"pool_mode": mode, "pool_size": str(pool_size), "log_level": "info"}
    settings.update({k: str(v) for k, v in extra.items()})
    return Tide(settings, name=name)


def direct_dsn(user="app", dbname="appdb", **kw):
    """libpq conninfo straight to the harness's PostgreSQL (unix socket, trusted)."""
    parts = {"host": PG_SOCK, "port": PG_PORT, "user": user, "dbname": dbname}
    parts.update(kw)
    return " ".join(f"{k}='{v}'" for k, v in parts.items())


def direct_connect(**kw):
    c = psycopg2.connect(direct_dsn(**kw))
    c.autocommit = True
    return c


def direct_exec(sql):
    """Runs sql as app on appdb, straight to PostgreSQL."""
    c = direct_connect()
    try:
        c.cursor().execute(sql)
    finally:
        c.close()


def tide_dsn(t, **kw):
    """libpq conninfo to pgtide t as app (no TLS: simpler for every driver)."""
    return t.dsn(sslmode="disable", **kw)


# ---------------------------------------------------------------- raw protocol

def _cstr(s):
    return s.encode() + b"\0"


def P(name, sql, oids=()):
    return msg(b"P", _cstr(name) + _cstr(sql) + struct.pack("!H", len(oids)) +
               b"".join(struct.pack("!I", o) for o in oids))


def B(stmt, params=(), portal="", result_binary=False):
    body = _cstr(portal) + _cstr(stmt) + struct.pack("!H", 0) + struct.pack("!H", len(params))
    for p in params:
        if p is None:
            body += struct.pack("!i", -1)
        else:
            v = str(p).encode()
            body += struct.pack("!I", len(v)) + v
    body += struct.pack("!HH", 1, 1) if result_binary else struct.pack("!H", 0)
    return msg(b"B", body)


def D(kind, name):
    return msg(b"D", kind.encode() + _cstr(name))


def E(portal="", maxrows=0):
    return msg(b"E", _cstr(portal) + struct.pack("!I", maxrows))


def C(kind, name):
    return msg(b"C", kind.encode() + _cstr(name))


def S():
    return msg(b"S", b"")


def H():
    return msg(b"H", b"")


def Q(sql):
    return msg(b"Q", _cstr(sql))


def describe_msg(typ, body):
    """A comparable summary of one backend message (None for ones to ignore)."""
    t = typ.decode()
    if t in ("S", "N", "K"):
        return None
    if t == "E":
        f = error_fields(body)
        return f"E:{f.get('C')}"
    if t == "Z":
        return f"Z:{body.decode()}"
    if t == "C":
        return f"C:{body.rstrip(bytes(1)).decode()}"
    if t == "D":
        n = struct.unpack("!H", body[:2])[0]
        off, vals = 2, []
        for _ in range(n):
            ln = struct.unpack("!i", body[off:off + 4])[0]
            off += 4
            if ln < 0:
                vals.append(None)
            else:
                vals.append(body[off:off + ln].decode(errors="replace"))
                off += ln
        return f"D:{vals}"
    if t == "T":
        n = struct.unpack("!H", body[:2])[0]
        off, cols = 2, []
        for _ in range(n):
            z = body.index(b"\0", off)
            name = body[off:z].decode()
            off = z + 1
            typoid = struct.unpack("!I", body[off + 6:off + 10])[0]
            off += 18
            cols.append(f"{name}/{typoid}")
        return f"T:{cols}"
    return t


class Raw:
    """A logged-in raw protocol connection, to pgtide (port) or to PostgreSQL directly."""

    def __init__(self, port=None, user="app", password="secret", db="appdb", extra=None,
                 timeout=30.0):
        self.errors = []
        if port is None:
            self.sock = socket.socket(socket.AF_UNIX)
            self.sock.settimeout(timeout)
            self.sock.connect(os.path.join(PG_SOCK, f".s.PGSQL.{PG_PORT}"))
            body = struct.pack("!I", 196608) + b"user\0" + user.encode() + b"\0database\0" + \
                db.encode() + b"\0"
            for k, v in (extra or {}).items():
                body += _cstr(k) + _cstr(v)
            body += b"\0"
            self.sock.sendall(struct.pack("!I", len(body) + 4) + body)
            while True:
                typ, b = read_msg(self.sock)
                if typ == b"K":
                    self.key = b
                if typ == b"E":
                    raise RuntimeError(f"direct login failed: {error_fields(b)}")
                if typ == b"Z":
                    break
        else:
            st, s = raw_login(port, user, password, db, extra=extra, timeout=timeout)
            if st != "ok":
                raise RuntimeError(f"login to pgtide failed: {s}")
            self.sock = s

    def send(self, *msgs):
        self.sock.sendall(b"".join(msgs))

    def read_until(self, n_ready=1):
        """Summaries of the answers up to the n_ready-th ReadyForQuery."""
        out = []
        while n_ready > 0:
            typ, body = read_msg(self.sock)
            if typ == b"E":
                self.errors.append(error_fields(body))
            d = describe_msg(typ, body)
            if d is not None:
                out.append(d)
            if typ == b"Z":
                n_ready -= 1
        return out

    def run(self, *msgs, n_ready=None):
        """Sends msgs and reads until as many ReadyForQuery as there are Sync/Query messages."""
        if n_ready is None:
            n_ready = sum(1 for m in msgs if m[:1] in (b"S", b"Q"))
        self.send(*msgs)
        return self.read_until(n_ready)

    def close(self):
        try:
            self.sock.sendall(msg(b"X", b""))
        except OSError:
            pass
        self.sock.close()


def compare_with_direct(t, name, script, setup=None):
    """Runs script(raw) -> list of summaries against PostgreSQL directly and through pgtide t;
    checks both sequences are identical. setup(): run before each side. Returns (direct, tide)."""
    if setup:
        setup()
    d = Raw()
    try:
        want = script(d)
    finally:
        d.close()
    if setup:
        setup()
    r = Raw(t.port)
    try:
        got = script(r)
    finally:
        r.close()
    if not check(got == want, f"{name}: same answers as PostgreSQL"):
        log(f"  direct: {want}")
        log(f"  pgtide: {got}")
        log("  pgtide log tail:\n" + t.log_tail(15))
    return want, got


def main():
    """Self-test: a transaction-mode pgtide serves 10 clients over 2 servers, with a raw
    protocol round trip identical to PostgreSQL's."""
    t = txn_tide(pool_size=2, name="txn_common")
    conns = [psycopg2.connect(tide_dsn(t)) for _ in range(10)]
    for i, c in enumerate(conns):
        c.autocommit = True
        cur = c.cursor()
        cur.execute("SELECT %s::int * 2", (i,))
        check(cur.fetchone()[0] == 2 * i, f"client {i} gets its own answer over 2 servers")
    for c in conns:
        c.close()
    compare_with_direct(t, "P/B/D/E/S round trip",
                        lambda r: r.run(P("s1", "SELECT $1::int + 1"), B("s1", [41]), D("P", ""),
                                        E(), S()))
    t.stop()
    finish()


if __name__ == "__main__":
    main()
