"""t_abuse: hostile and broken clients against the target, while a well-behaved background client
keeps querying (every one of its queries must succeed).

Cases: garbage first bytes; lying length fields (short, long, below 4) before and after
authentication; a 1 GB length (expect ErrorResponse 08P01 or a clean close, never a hang); a
40 kB password message (more than a connection's input buffer: refused at once with 08P01, not
left spinning until authentication_timeout);
slowloris startup (bytes dribbled: expect closure after authentication_timeout, run with 2s);
2,000 connections that never authenticate (a normal client must still work, and they must all be
closed by the server); a client killed mid-COPY (nothing half-committed, others keep working); a
client killed mid-query. After each case the target must accept a fresh connection, and pgtide's
process (PGTIDE_PID, when set) must still be alive.

Raw-protocol cases log in over TLS with t_proxy_harness's raw_login (SCRAM-SHA-256 written on
the test side). Bounded: every wait has a timeout; at most ABUSE_CONNS (2000) sockets.
"""
import os
import resource
import signal
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time

import psycopg2

from t_proxy_harness import error_fields, msg, raw_connect, raw_login, read_msg, startup_packet

HOST = os.environ.get("PGTIDE_HOST", "127.0.0.1")
PORT = int(os.environ.get("PGTIDE_PORT", "6432"))
USER = os.environ.get("PGTIDE_USER", "app")
PASSWORD = os.environ.get("PGTIDE_PASSWORD", "secret")
DB = os.environ.get("PGTIDE_DB", "appdb")
PGTIDE_PID = int(os.environ.get("PGTIDE_PID") or 0)
AUTH_TIMEOUT = float(os.environ.get("ABUSE_AUTH_TIMEOUT", "2"))
# PostgreSQL itself refuses new clients while max_connections children wait for authentication;
# against it (target direct) stay below its limit to prove the script, against pgtide use 2000.
NCONNS = int(os.environ.get("ABUSE_CONNS") or
             (150 if os.environ.get("PGTIDE_TARGET") == "direct" else 2000))
DSN = (f"host={HOST} port={PORT} user={USER} dbname={DB} password={PASSWORD} "
       "sslmode=require connect_timeout=10")

failures = []


def log(msg):
    print(msg, flush=True)


def fail(what):
    failures.append(what)
    log(f"FAIL: {what}")


# ---------------------------------------------------------------- raw protocol helpers

def raw_socket(tls=True, timeout=15.0):
    return raw_connect(PORT, tls, timeout, HOST)


def expect_error_or_close(s, what, timeout=15.0, want_state="08P01"):
    """After a protocol violation: ErrorResponse with want_state, or the connection closed.
    A hang (nothing within timeout) or a different SQLSTATE is a failure. (PostgreSQL itself
    answers some violations with a non-fatal ERROR and keeps the session: also accepted.)"""
    s.settimeout(timeout)
    try:
        while True:
            typ, body = read_msg(s)
            if typ == b"E":
                f = error_fields(body)
                wanted = (want_state,) if isinstance(want_state, str) else want_state
                if f.get("C") not in wanted:
                    fail(f"{what}: SQLSTATE {f.get('C')} ({f.get('M')}), want {want_state}")
                    return
                log(f"ok: {what}: ErrorResponse {f.get('C')} ({f.get('M')})")
                break
            if typ in (b"N", b"S"):
                continue
            fail(f"{what}: unexpected message {typ!r}")
            return
    except (EOFError, ConnectionResetError, BrokenPipeError, ssl.SSLError):
        log(f"ok: {what}: connection closed")
        return
    except socket.timeout:
        fail(f"{what}: no answer and no close within {timeout}s (hang)")
        return


# ---------------------------------------------------------------- health checks

def sql(query, args=None):
    """Runs one statement on a fresh autocommit connection (closed afterwards); returns the rows
    (None for a command)."""
    conn = psycopg2.connect(DSN)
    try:
        conn.autocommit = True
        cur = conn.cursor()
        cur.execute(query, args)
        return cur.fetchall() if cur.description else None
    finally:
        conn.close()


def target_alive(step):
    if PGTIDE_PID:
        try:
            os.kill(PGTIDE_PID, 0)
        except ProcessLookupError:
            fail(f"after {step}: pgtide (pid {PGTIDE_PID}) is gone")
            log("giving up")
            finish()
    try:
        if sql("SELECT 40 + 2") != [(42,)]:
            fail(f"after {step}: wrong answer")
    except Exception as e:
        fail(f"after {step}: a fresh client cannot work: {e}")


class Background(threading.Thread):
    """One well-behaved session running small checked queries until stopped."""

    def __init__(self):
        super().__init__(daemon=True)
        self.stop = threading.Event()
        self.count = 0
        self.errors = []

    def run(self):
        try:
            conn = psycopg2.connect(DSN)
            conn.autocommit = True
            cur = conn.cursor()
        except Exception as e:
            self.errors.append(f"connect: {e}")
            return
        while not self.stop.is_set():
            try:
                cur.execute("SELECT %s::int * 2, repeat('x', 1000)", (self.count,))
                r = cur.fetchone()
                if r[0] != self.count * 2 or len(r[1]) != 1000:
                    self.errors.append(f"wrong result {r[0]}")
                self.count += 1
            except Exception as e:
                self.errors.append(str(e))
                return
            time.sleep(0.02)
        conn.close()


# ---------------------------------------------------------------- cases

def case_garbage():
    for name, data in [("garbage: HTTP request", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
                       ("garbage: random bytes", os.urandom(64)),
                       ("garbage: zero length", b"\0\0\0\0" + os.urandom(16)),
                       ("garbage: bad protocol version", struct.pack("!II", 16, 0x00090000) +
                        b"user\0x\0\0\0")]:
        s = raw_socket(tls=False)
        s.sendall(data)
        # PostgreSQL answers an unknown major version with 0A000 (feature not supported)
        expect_error_or_close(s, name, timeout=AUTH_TIMEOUT + 10, want_state=("08P01", "0A000"))
        s.close()
    target_alive("garbage")


def case_lying_lengths_startup():
    # length claims more than is sent: the server waits, then authentication_timeout closes it
    s = raw_socket(tls=True)
    pkt = startup_packet(USER, DB)
    s.sendall(struct.pack("!I", len(pkt) + 50) + pkt[4:])
    t0 = time.time()
    expect_error_or_close(s, "startup length too long", timeout=AUTH_TIMEOUT + 10,
                          want_state="08P01")
    log(f"   (closed after {time.time() - t0:.1f}s)")
    s.close()
    # length claims less than the parameters that follow
    s = raw_socket(tls=True)
    s.sendall(struct.pack("!I", 12) + pkt[4:])
    expect_error_or_close(s, "startup length too short", timeout=AUTH_TIMEOUT + 10)
    s.close()
    # startup packet of 1 GB
    s = raw_socket(tls=True)
    s.sendall(struct.pack("!II", 1 << 30, 196608) + b"user\0app\0")
    expect_error_or_close(s, "startup length 1 GB", timeout=AUTH_TIMEOUT + 10)
    s.close()
    target_alive("lying startup lengths")


def case_lying_lengths_after_auth():
    cases = [("Query length below 4", msg(b"Q", b"")[:1] + struct.pack("!I", 2)),
             ("Query length 1 GB", b"Q" + struct.pack("!I", 1 << 30) + b"SELECT 1;\0"),
             ("Query length 4 GB - 1", b"Q" + struct.pack("!I", 0xFFFFFFFF) + b"SELECT"),
             ("Sync with a body", b"S" + struct.pack("!I", 9) + b"extra"),
             ("unknown message type", b"\x01" + struct.pack("!I", 8) + b"abcd")]
    for name, data in cases:
        st, s = raw_login(PORT, USER, PASSWORD, DB, tls=True, timeout=15.0, host=HOST)
        if st != "ok":
            fail(f"{name}: raw login failed: {st} {s}")
            continue
        s.sendall(data)
        expect_error_or_close(s, name, timeout=15)
        s.close()
    target_alive("lying lengths after authentication")


def case_oversized_password_message():
    s = raw_socket(tls=True)
    s.sendall(startup_packet(USER, DB))
    typ, body = read_msg(s)
    if typ != b"R" or struct.unpack("!I", body[:4])[0] != 10:
        fail(f"oversized password message: expected a SASL request, got {typ!r}")
        s.close()
        return
    junk = b"n,,n=,r=" + b"x" * 40000
    s.settimeout(AUTH_TIMEOUT + 10)
    try:
        # refused after its first 32 kB: the rest may meet a closed connection
        s.sendall(msg(b"p", b"SCRAM-SHA-256\0" + struct.pack("!I", len(junk)) + junk))
        typ, body = read_msg(s)
        f = error_fields(body) if typ == b"E" else {}
        if typ != b"E" or f.get("C") not in ("08P01", "28000", "28P01"):
            fail(f"oversized password message: {typ!r} {f}")
        elif "timeout" in f.get("M", ""):
            fail(f"oversized password message: only the authentication timeout ended it ({f})")
        else:
            log(f"ok: oversized password message: ErrorResponse {f.get('C')} ({f.get('M')})")
    except (EOFError, ConnectionResetError, BrokenPipeError, ssl.SSLError):
        log("ok: oversized password message: connection closed")
    except socket.timeout:
        fail("oversized password message: no answer (hang)")
    s.close()
    target_alive("oversized password message")


def case_slowloris():
    s = raw_socket(tls=True)
    pkt = startup_packet(USER, DB)
    t0 = time.time()
    closed = None
    for i in range(len(pkt)):
        try:
            s.sendall(pkt[i:i + 1])
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError, OSError):
            closed = time.time() - t0
            break
        s.settimeout(0.5)
        try:
            first = s.recv(1)
            if first == b"":
                closed = time.time() - t0
                break
            # an answer (the authentication-timeout ErrorResponse): it must end in a close
            closed = time.time() - t0
            s.settimeout(5.0)
            try:
                while s.recv(4096):
                    pass
            except socket.timeout:
                fail("slowloris: the server answered but did not close the connection")
            except (ConnectionResetError, ssl.SSLError, OSError):
                pass
            break
        except socket.timeout:
            pass
        except (ConnectionResetError, ssl.SSLError, OSError):
            closed = time.time() - t0
            break
        if time.time() - t0 > AUTH_TIMEOUT + 15:
            break
    s.close()
    if closed is None:
        fail(f"slowloris: not closed within {AUTH_TIMEOUT + 15}s")
    elif closed < AUTH_TIMEOUT - 0.5:
        fail(f"slowloris: closed after {closed:.1f}s, before authentication_timeout")
    else:
        log(f"ok: slowloris closed after {closed:.1f}s (authentication_timeout {AUTH_TIMEOUT}s)")
    target_alive("slowloris")


def case_many_unauthenticated():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < NCONNS + 200:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, NCONNS + 500), hard))
    socks = []
    t0 = time.time()
    try:
        for i in range(NCONNS):
            s = socket.socket()
            s.settimeout(10)
            s.connect((HOST, PORT))
            if i % 2:
                s.sendall(struct.pack("!I", 60))  # half a startup packet
            socks.append(s)
    except OSError as e:
        fail(f"{NCONNS} connections: opening #{len(socks)} failed: {e}")
    log(f"   opened {len(socks)} idle connections in {time.time() - t0:.1f}s")
    try:
        if sql("SELECT 'still serving'") != [("still serving",)]:
            fail("many connections: wrong answer")
        else:
            log(f"ok: a normal client works beside {len(socks)} unauthenticated connections")
    except Exception as e:
        fail(f"many connections: a normal client failed: {e}")
    # the server must drop them all (authentication_timeout), none may stay open forever
    deadline = time.time() + AUTH_TIMEOUT + 20
    open_left = list(socks)
    while open_left and time.time() < deadline:
        still = []
        for s in open_left:
            s.settimeout(0)
            try:
                if s.recv(4096) == b"":
                    s.close()
                    continue
                still.append(s)  # got data (an error message): wait for the close
            except BlockingIOError:
                still.append(s)
            except OSError:
                s.close()
        open_left = still
        if open_left:
            time.sleep(0.5)
    if open_left:
        fail(f"many connections: {len(open_left)} still open {AUTH_TIMEOUT + 20}s later")
    else:
        log(f"ok: all {len(socks)} unauthenticated connections were closed by the server")
    for s in open_left:
        s.close()
    target_alive("many unauthenticated connections")


CHILD_COPY = r"""
import sys, time, psycopg2
conn = psycopg2.connect(sys.argv[1])
cur = conn.cursor()
class Slow:
    n = 0
    def read(self, size=-1):
        self.n += 1
        if self.n == 50:
            print("COPYING", flush=True)
        if self.n > 50:
            time.sleep(0.2)
        return "%d\tpayload\n" % self.n
cur.copy_expert("COPY abuse_copy FROM STDIN", Slow(), size=64)
"""

CHILD_QUERY = r"""
import sys, psycopg2
conn = psycopg2.connect(sys.argv[1])
cur = conn.cursor()
print("QUERYING", flush=True)
cur.execute("SELECT pg_sleep(5) /* abuse_killed_query */")
"""


def run_child_and_kill(code, ready_word):
    p = subprocess.Popen([sys.executable, "-c", code, DSN], stdout=subprocess.PIPE, text=True)
    line = ""
    t0 = time.time()
    while ready_word not in line and time.time() - t0 < 20:
        line = p.stdout.readline()
        if not line and p.poll() is not None:
            break
    if ready_word not in line:
        p.kill()
        p.wait()
        return False
    time.sleep(1)
    p.send_signal(signal.SIGKILL)
    p.wait()
    return True


def wait_no_active(marker, secs):
    for _ in range(int(secs * 5)):
        rows = sql("SELECT count(*) FROM pg_stat_activity WHERE state = 'active' "
                   "AND query LIKE %s AND pid <> pg_backend_pid()", (f"%{marker}%",))
        if rows[0][0] == 0:
            return True
        time.sleep(0.2)
    return False


def case_killed_mid_copy():
    sql("SET client_min_messages = warning; DROP TABLE IF EXISTS abuse_copy; "
        "CREATE TABLE abuse_copy (id int, t text)")
    if not run_child_and_kill(CHILD_COPY, "COPYING"):
        fail("killed mid-COPY: the child never started its COPY")
        return
    if not wait_no_active("COPY abuse_copy", 30):
        fail("killed mid-COPY: the server still runs the COPY 30s after the client died")
    n = sql("SELECT count(*) FROM abuse_copy")[0][0]
    if n != 0:
        fail(f"killed mid-COPY: {n} rows half-committed")
    else:
        log("ok: killed mid-COPY: nothing committed")
    sql("INSERT INTO abuse_copy VALUES (1, 'after')")
    if sql("SELECT count(*) FROM abuse_copy")[0][0] != 1:
        fail("killed mid-COPY: the table does not take new rows")
    sql("DROP TABLE abuse_copy")
    target_alive("killed mid-COPY")


def case_killed_mid_query():
    if not run_child_and_kill(CHILD_QUERY, "QUERYING"):
        fail("killed mid-query: the child never started its query")
        return
    # pg_sleep(5) ends by itself; the backend must not stay busy for this client afterwards
    if not wait_no_active("abuse_killed_query", 30):
        fail("killed mid-query: the query is still active 30s later")
    else:
        log("ok: killed mid-query: server side finished")
    target_alive("killed mid-query")


def finish():
    bg.stop.set()
    bg.join(10)
    if bg.errors:
        fail(f"background client: {bg.errors[:3]}")
    elif bg.count < 10:
        fail(f"background client ran only {bg.count} queries")
    else:
        log(f"ok: background client ran {bg.count} queries, all succeeded")
    print(f"{'FAILED' if failures else 'all ok'}: {len(failures)} failure(s)")
    sys.exit(1 if failures else 0)


bg = Background()
bg.start()
time.sleep(0.5)
for case in [case_garbage, case_lying_lengths_startup, case_lying_lengths_after_auth,
             case_oversized_password_message, case_slowloris, case_many_unauthenticated,
             case_killed_mid_copy, case_killed_mid_query]:
    log(f"-- {case.__name__}")
    try:
        case()
    except Exception as e:
        fail(f"{case.__name__}: {type(e).__name__}: {e}")
finish()
