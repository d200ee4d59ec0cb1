"""t_proxy_proto: limits, startup protocol and authentication rules, each on a private pgtide.

1. client_tls_sslmode=disable, max_client_conn=5: SSLRequest and GSSENCRequest are answered 'N'
   (and the startup then goes on); a 3.2 StartupMessage with a `_pq_.foo` option gets
   NegotiateProtocolVersion (newest minor 0, the option listed) and then authentication; protocol
   2.0 gets ErrorResponse 0A000; with five clients connected the sixth gets 53300, and once one
   leaves a new client gets in.
2. client_tls_sslmode=require: a plain startup gets 28000; TLS logs in.
3. hba_file rules: password over plain TCP refused (28000) and accepted over TLS (wrong password
   28P01); md5 with an md5 secret in auth_file; trust; reject; hostnossl reject + host scram for
   app; no matching rule; cert auth (a throw-away CA and client certificate made with openssl):
   CN matches the user -> in, no certificate or another user -> 28000.
"""
import hashlib
import os
import struct
import subprocess
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import psycopg2  # noqa: E402

from t_proxy_harness import (EMBEDDED, Tide, check, error_fields, finish, log,  # noqa: E402
                             make_role_direct, raw_connect, read_msg, recv_exact, startup_packet,
                             wait_until)


def first_reply(port, packet, tls=False):
    """Sends packet on a fresh socket; returns the first message (type, body) or ("closed", e)."""
    s = raw_connect(port, tls)
    try:
        s.sendall(packet)
        return read_msg(s)
    except (EOFError, OSError) as e:
        return "closed", str(e)
    finally:
        s.close()


def test_startup(t):
    port = t.port
    for name, code in (("SSLRequest", 80877103), ("GSSENCRequest", 80877104)):
        s = raw_connect(port)
        s.sendall(struct.pack("!II", 8, code))
        ans = recv_exact(s, 1)
        check(ans == b"N", f"{name} with client_tls_sslmode=disable answered {ans!r}")
        s.sendall(startup_packet("app", "appdb"))
        typ, body = read_msg(s)
        check(typ == b"R", f"after {name} 'N' the startup goes on: {typ!r}")
        s.close()
    # 3.2 with a _pq_ option
    s = raw_connect(port)
    s.sendall(startup_packet("app", "appdb", version=(3 << 16) | 2, extra={"_pq_.foo": "bar"}))
    typ, body = read_msg(s)
    ok = typ == b"v"
    if ok:
        minor, n = struct.unpack("!II", body[:8])
        opts = [o.decode() for o in body[8:].split(b"\0") if o]
        check(minor == 0 and n == 1 and opts == ["_pq_.foo"],
              f"NegotiateProtocolVersion: newest minor {minor}, {n} option(s) {opts}")
        typ2, body2 = read_msg(s)
        check(typ2 == b"R", f"authentication follows NegotiateProtocolVersion: {typ2!r}")
    else:
        check(False, f"3.2 + _pq_.foo answered NegotiateProtocolVersion: {typ!r} {body[:80]!r}")
    s.close()
    # 3.0 with a _pq_ option only
    typ, body = first_reply(port, startup_packet("app", "appdb", extra={"_pq_.x": "1"}))
    check(typ == b"v" and struct.unpack("!I", body[:4])[0] == 0 and b"_pq_.x" in body,
          f"3.0 + _pq_.x: NegotiateProtocolVersion too: {typ!r}")
    # plain 3.0: no NegotiateProtocolVersion
    typ, body = first_reply(port, startup_packet("app", "appdb"))
    check(typ == b"R", f"plain 3.0 startup goes straight to authentication: {typ!r}")
    # unsupported major versions: 2.0 (PostgreSQL answers "unsupported frontend protocol", 0A000)
    # and 4.0 (likewise); the packet carries 3.0-style key/value pairs so that only the version
    # is wrong
    for major in (2, 4):
        typ, body = first_reply(port, startup_packet("app", "appdb", version=major << 16))
        f = error_fields(body) if typ == b"E" else {}
        check(typ == b"E" and f.get("C") == "0A000",
              f"protocol {major}.0: ErrorResponse 0A000: {typ!r} {f}")


def test_max_conn(t):
    held = []
    for i in range(5):
        st, s = t.raw_login(tls=False)
        if not check(st == "ok", f"client {i + 1} of 5 logs in ({s if st != 'ok' else ''})"):
            break
        held.append(s)
    st, info = t.raw_login(tls=False)
    check(st == "error" and info.get("C") == "53300",
          f"6th client with max_client_conn=5: 53300 ({st} {info})")
    held.pop().close()

    def login_ok():
        st, s = t.raw_login(tls=False)
        if st == "ok":
            held.append(s)
            return True
        return False
    ok = wait_until(login_ok, 15, 0.2)
    check(ok, "after one client left, a new client gets in")
    for s in held:
        s.close()


def test_tls_required():
    t = Tide({"client_tls_sslmode": "require"}, name="tlsreq", reuse="proto")
    st, info = t.raw_login(tls=False)
    check(st == "error" and info.get("C") == "28000",
          f"plain startup with client_tls_sslmode=require: 28000 ({st} {info})")
    st, s = t.raw_login(tls=True)
    check(st == "ok", f"TLS startup logs in ({s if st != 'ok' else ''})")
    if st == "ok":
        s.close()
    t.stop()


def openssl(*args):
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


def make_certs(d):
    """A CA, and client certificates for CN=certuser, signed by it. Returns paths."""
    ca_key, ca_crt = os.path.join(d, "ca.key"), os.path.join(d, "ca.crt")
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
            "/CN=tprox test CA", "-keyout", ca_key, "-out", ca_crt)
    key, csr, crt = (os.path.join(d, f"certuser.{x}") for x in ("key", "csr", "crt"))
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=certuser", "-keyout", key,
            "-out", csr)
    openssl("x509", "-req", "-in", csr, "-CA", ca_crt, "-CAkey", ca_key, "-CAcreateserial",
            "-days", "2", "-out", crt)
    os.chmod(key, 0o600)
    return ca_crt, crt, key


HBA = """# t_proxy_proto rules
host all postgres 127.0.0.1/32 scram-sha-256
host all pwuser 127.0.0.1/32 password
host all md5user 127.0.0.1/32 md5
host all trustuser 127.0.0.1/32 trust
host all rejuser 127.0.0.1/32 reject
hostssl all certuser,certuser2 127.0.0.1/32 cert
hostnossl all app 127.0.0.1/32 reject
host all app 127.0.0.1/32 scram-sha-256
"""

ROLES = [("pwuser", "pw-one"), ("md5user", None), ("trustuser", None), ("rejuser", None),
         ("certuser", None), ("certuser2", None)]


def test_hba(d):
    hba = os.path.join(d, "hba.conf")
    with open(hba, "w") as f:
        f.write(HBA)
    ca, crt, key = make_certs(d)
    md5 = "md5" + hashlib.md5(b"pw-two" + b"md5user").hexdigest()
    if not EMBEDDED:
        for name, pw in ROLES:
            make_role_direct(name, pw)
    t = Tide({"hba_file": hba, "client_tls_ca_file": ca}, name="hba",
             auth_extra=[f'"md5user" "{md5}"'], reuse="proto", unix_backend=True)
    if EMBEDDED:
        for name, pw in ROLES:
            t.make_role(name, pw)

    def login(user, password, tls):
        st, info = t.raw_login(user, password, "appdb", tls=tls)
        if st == "ok":
            info.close()
            return "ok", None
        return st, info.get("C") if isinstance(info, dict) else info

    cases = [
        ("pwuser", "pw-one", False, ("error", "28000"), "password method over plain TCP refused"),
        ("pwuser", "pw-one", True, ("ok", None), "password method over TLS accepted"),
        ("pwuser", "wrong", True, ("error", "28P01"), "password method, wrong password"),
        ("md5user", "pw-two", False, ("ok", None), "md5 method with an md5 auth_file secret"),
        ("md5user", "pw-two", True, ("ok", None), "md5 method over TLS"),
        ("md5user", "wrong", False, ("error", "28P01"), "md5 method, wrong password"),
        ("trustuser", "", False, ("ok", None), "trust rule"),
        ("rejuser", "", True, ("error", "28000"), "reject rule"),
        ("app", "secret", False, ("error", "28000"), "hostnossl reject for app"),
        ("app", "secret", True, ("ok", None), "host scram-sha-256 for app over TLS"),
        ("nobody", "x", True, ("error", "28000"), "no matching rule"),
        ("certuser", "", True, ("error", "28000"), "cert rule without a client certificate"),
    ]
    for user, pw, tls, want, what in cases:
        got = login(user, pw, tls)
        check(got == want, f"{what}: {user} tls={tls} -> {got} (want {want})")
    # md5 through libpq too
    try:
        c = t.connect(user="md5user", password="pw-two", sslmode="disable")
        cur = c.cursor()
        cur.execute("SELECT current_user")
        check(cur.fetchone()[0] == "md5user", "libpq md5 login runs queries as md5user")
        c.close()
    except psycopg2.Error as e:
        check(False, f"libpq md5 login: {e}")
    # cert auth
    try:
        c = t.connect(user="certuser", password=None, sslmode="require", sslcert=crt, sslkey=key)
        cur = c.cursor()
        cur.execute("SELECT current_user")
        check(cur.fetchone()[0] == "certuser", "cert auth: CN=certuser logs in as certuser")
        c.close()
    except psycopg2.Error as e:
        check(False, f"cert auth with CN=certuser: {e}")
    try:
        psycopg2.connect(t.dsn(user="certuser2", password=None, sslmode="require", sslcert=crt,
                               sslkey=key)).close()
        check(False, "cert auth: CN=certuser as user certuser2 is refused")
    except psycopg2.Error as e:
        check("certificate authentication failed" in str(e),
              f"cert auth: CN=certuser as user certuser2 refused: {str(e).strip()}")
    check(t.alive(), "pgtide alive after the hba cases")
    t.stop()


def main():
    t = Tide({"client_tls_sslmode": "disable", "max_client_conn": 5}, name="proto",
             reuse="proto")
    for fn in (test_startup, test_max_conn):
        log(f"--- {fn.__name__}")
        try:
            fn(t)
        except Exception as e:  # noqa: BLE001 - one broken case is a failure; go on
            check(False, f"{fn.__name__} raised {type(e).__name__}: {e}")
    check(t.alive(), "pgtide alive after the startup cases")
    t.stop()
    log("--- test_tls_required")
    try:
        test_tls_required()
    except Exception as e:  # noqa: BLE001
        check(False, f"test_tls_required raised {type(e).__name__}: {e}")
    log("--- test_hba")
    try:
        test_hba(t.dir)
    except Exception as e:  # noqa: BLE001
        check(False, f"test_hba raised {type(e).__name__}: {e}")
    finish()


if __name__ == "__main__":
    main()
