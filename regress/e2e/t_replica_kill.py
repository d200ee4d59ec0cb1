"""t_replica_kill: kill -9 of a replica's postmaster under load (issue 6, fault test).

On pgtide's own embedded instance (session pooling, explicit read_port), SCALE REPLICAS 2 and
both in rotation, then:
- READERS threads, each with its own libpq connection on the reader endpoint, run SELECTs in
  a loop that report where they ran (current_setting('data_directory'): computes listen on unix
  sockets only, so inet_server_port() is NULL) and pg_backend_pid(); a writer thread (psycopg2)
  INSERTs on the primary endpoint in a loop; a "churn" thread opens one short reader session
  after another (connect, one query, close). The readers must be spread over both replicas.
- kill -9 of replica-0's postmaster (DATA/replicas/0/postmaster.pid, the pid SHOW COMPUTES
  shows). Checked:
  * every reader whose session was on replica-0 gets an error with a real SQLSTATE (class 08 or
    57, never a bare close) within a bounded time (no hang), and its connection is closed
    afterwards (pgtide's documented behaviour: the session is lost, reconnect): the next use
    fails at once;
  * the readers on replica-1 and the writer see no error at all and keep making progress;
  * new reader connections opened right after the kill all connect (a reader whose login to the
    dying replica fails is rerouted by pgtide); a session that raced the kill onto the dying
    replica (a pooled server it still had) gets the same 08/57 error as the others; once pgtide
    has reaped the postmaster, every new session succeeds and none runs on a backend of it;
  * replica-0 comes back (restart or rebuild, new postmaster pid) into rotation within a
    generous bound, and new reader sessions reach it again;
  * the failure is visible: SHOW COMPUTES starts + 1 and a new pid for replica-0, the log has
    "replica-0: running -> failed", and the ledger has a second replica-0 interval (pgtide usage).
- Unreachable replicas (the login path of the reroute, made deterministic): both replicas'
  private sockets renamed away while their postmasters run -> a new reader session (on a
  database with no pooled server yet) is still served, by the primary; SHOW COMPUTES shows both
  out of rotation ("unreachable", the log says a login failed); sockets back -> both return to rotation and new reader
  sessions land on replicas again.
No wall time is asserted beyond the generous timeouts of the waits.

Why libpq through ctypes for the readers: a FATAL that ends the connection reaches drivers built
on libpq only in the connection's error message (psycopg2 and psycopg 3 report "server closed the
connection unexpectedly" without a SQLSTATE, PostgreSQL's own FATALs included); with
PQsetErrorVerbosity(VERBOSE) that message carries the SQLSTATE of each ErrorResponse received.
"""
import csv
import ctypes
import ctypes.util
import io
import os
import re
import signal
import subprocess
import threading
import time

import psycopg2

from lib_replica import in_rotation, postmaster_of, replicas  # noqa: E402
from lib_serverless import PGTIDE_BIN, Tide, check, finish, free_port, log, wait_until

READERS = 6
LOST_CLASSES = ("08", "57")  # connection exception, operator intervention
SQL = b"SELECT current_setting('data_directory'), pg_backend_pid(), count(*) FROM kt"
PGRES_TUPLES_OK = 2
CONNECTION_OK = 0
PQERRORS_VERBOSE = 2


def _libpq():
    lib = ctypes.CDLL(ctypes.util.find_library("pq") or "libpq.so.5")
    vp, cp, i = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int
    sigs = {"PQconnectdb": (vp, [cp]), "PQstatus": (i, [vp]),
            "PQsetErrorVerbosity": (i, [vp, i]), "PQexec": (vp, [vp, cp]),
            "PQresultStatus": (i, [vp]), "PQgetvalue": (cp, [vp, i, i]),
            "PQerrorMessage": (cp, [vp]), "PQclear": (None, [vp]), "PQfinish": (None, [vp])}
    for name, (res, args) in sigs.items():
        f = getattr(lib, name)
        f.restype, f.argtypes = res, args
    return lib


LIB = _libpq()  # ctypes calls release the GIL: the threads run their queries in parallel


class Session:
    """One libpq connection. connected / error = (SQLSTATE or None, libpq's message)."""

    def __init__(self, dsn):
        self.error = None
        self.conn = LIB.PQconnectdb(dsn.encode())
        self.connected = LIB.PQstatus(self.conn) == CONNECTION_OK
        if not self.connected:
            self._note_error()
        LIB.PQsetErrorVerbosity(self.conn, PQERRORS_VERBOSE)  # "FATAL:  08006: ..."

    def _note_error(self):
        msg = (LIB.PQerrorMessage(self.conn) or b"").decode(errors="replace").strip()
        m = re.search(r"(?:FATAL|ERROR):\s+([0-9A-Z]{5}):", msg)
        self.error = (m.group(1) if m else None, msg.replace("\n", " | "))

    def query(self, sql=SQL):
        """(column 0, column 1 as int) of the first row, or None (error in self.error)."""
        res = LIB.PQexec(self.conn, sql)
        try:
            if res and LIB.PQresultStatus(res) == PGRES_TUPLES_OK:
                return LIB.PQgetvalue(res, 0, 0).decode(), int(LIB.PQgetvalue(res, 0, 1))
            self._note_error()
            return None
        finally:
            if res:
                LIB.PQclear(res)

    def bad(self):
        return LIB.PQstatus(self.conn) != CONNECTION_OK

    def close(self):
        if self.conn:
            LIB.PQfinish(self.conn)
            self.conn = None


def lost_ok(error):
    """An error that tells a lost session: an ErrorResponse of class 08 or 57."""
    return error is not None and error[0] is not None and error[0][:2] in LOST_CLASSES


class Reader(threading.Thread):
    """One reader session on the reader endpoint, querying until stopped or failed."""

    def __init__(self, dsn, n):
        super().__init__(daemon=True, name=f"reader-{n}")
        self.stop = threading.Event()
        self.ddir = None  # where the session runs
        self.backend = None
        self.ok = 0
        self.error = None  # (first SQLSTATE in the error, libpq's error message)
        self.after = None  # what the next use of the connection did after the error
        self.done = False
        self.s = Session(dsn)
        if not self.s.connected:
            raise RuntimeError(f"reader {n}: {self.s.error}")

    def run(self):
        try:
            while not self.stop.is_set():
                got = self.s.query()
                if got is None:
                    self.error = self.s.error
                    break
                if self.ddir is None:
                    self.ddir, self.backend = got
                elif got != (self.ddir, self.backend):
                    self.error = (None, f"session moved to {got}")
                    break
                self.ok += 1
            if self.error is not None:
                again = self.s.query(b"SELECT 1, 1")
                self.after = "usable" if again is not None else \
                    f"fails at once (connection {'bad' if self.s.bad() else 'ok'}: " \
                    f"{self.s.error[1][:40]})"
        finally:
            self.done = True


class Writer(threading.Thread):
    def __init__(self, dsn):
        super().__init__(daemon=True, name="writer")
        self.stop = threading.Event()
        self.ok = 0
        self.error = None
        self.conn = psycopg2.connect(dsn)
        self.conn.autocommit = True

    def run(self):
        cur = self.conn.cursor()
        try:
            while not self.stop.is_set():
                cur.execute("INSERT INTO kw(v) VALUES (now()::text)")
                self.ok += 1
                time.sleep(0.005)
        except psycopg2.Error as e:
            self.error = (e.pgcode, str(e).strip())


def ppid(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
        return int(data[data.rindex(")") + 2:].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def one_read(dsn):
    """A fresh reader session: dict with t0 (monotonic start), stage ("ok", "connect" or
    "query": where it failed), error, ddir, pid and the backend's parent pid."""
    r = {"t0": time.monotonic(), "stage": "connect"}
    s = Session(dsn)
    try:
        if not s.connected:
            r["error"] = s.error
            return r
        got = s.query()
        if got is None:
            r["stage"], r["error"] = "query", s.error
            return r
        r.update(stage="ok", ddir=got[0], pid=got[1], ppid=ppid(got[1]))
        return r
    finally:
        s.close()


def short(r, dirs):
    """A one-line view of one_read's result."""
    if r is None:
        return "none"
    if r["stage"] != "ok":
        return f"{r['stage']} failed: {r['error']}"
    name = next((f"replica-{i}" for i, d in dirs.items() if d == r["ddir"]), r["ddir"])
    return f"{name} pid {r['pid']} (parent {r['ppid']})"


class Churn(threading.Thread):
    """Opens one short reader session after another (connect, query, close) until stopped."""

    def __init__(self, dsn):
        super().__init__(daemon=True, name="churn")
        self.dsn = dsn
        self.stop = threading.Event()
        self.results = []

    def ok(self):
        return sum(1 for r in self.results if r["stage"] == "ok")

    def run(self):
        while not self.stop.is_set():
            self.results.append(one_read(self.dsn))


def fresh_reads(dsn, n):
    out = [None] * n

    def one(i):
        out[i] = one_read(dsn)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(90)
    return out


def check_killed_sessions(on0):
    """The readers that were on the killed replica: an 08/57 error each, no hang."""
    ok = wait_until(lambda: all(rd.done for rd in on0), 60, 0.05)
    hung = [rd.name for rd in on0 if not rd.done]
    check(ok, f"every session on replica-0 ended within the bound (still blocked: {hung})")
    for rd in on0:
        log(f"{rd.name}: {rd.ok} queries, then {rd.error}; next use: {rd.after}")
        check(lost_ok(rd.error), f"{rd.name} (on replica-0) got an error with a real SQLSTATE "
              f"({rd.error[0] if rd.error else None})")
        check(rd.after is not None and rd.after != "usable",
              f"{rd.name}: the lost session is closed, its next use fails at once ({rd.after})")


def check_fresh_after_kill(t, reader_dsn, dirs, old):
    """New reader sessions right after the kill, then once pgtide has reaped the postmaster.
    Returns the monotonic time at which pgtide was seen to know."""
    fresh = fresh_reads(reader_dsn, 4)
    log(f"fresh reader sessions right after the kill: {[short(f, dirs) for f in fresh]}")
    check(all(f is not None and f["stage"] != "connect" for f in fresh),
          "new reader connections right after the kill all connect")
    check(all(f["stage"] == "ok" or lost_ok(f["error"]) for f in fresh if f is not None),
          "each query succeeds, or (raced onto the dying replica) fails with an 08/57 error")
    noticed = wait_until(lambda: replicas(t).get("replica-0", {}).get("pid") != str(old), 60, 0.02)
    t_noticed = time.monotonic()
    check(noticed, f"SHOW COMPUTES no longer shows the dead postmaster "
                   f"({replicas(t).get('replica-0')})")
    fresh = fresh_reads(reader_dsn, 4)
    log(f"fresh reader sessions once pgtide knows: {[short(f, dirs) for f in fresh]}")
    check(all(f is not None and f["stage"] == "ok" for f in fresh), "they all succeed")
    check(all(f is None or f["stage"] != "ok" or f["ppid"] != old for f in fresh),
          "none of them runs on a backend of the dead postmaster")
    return t_noticed


def check_recorded(t, starts_before, old):
    row = replicas(t).get("replica-0", {})
    check(int(row.get("starts") or 0) >= starts_before + 1 and row.get("pid") != str(old),
          f"SHOW COMPUTES: replica-0 starts {starts_before} -> {row.get('starts')}, pid {old} -> "
          f"{row.get('pid')}")
    check(t.count_log("replica-0: running -> failed") >= 1, "the crash is in the log")
    u = subprocess.run([PGTIDE_BIN, "usage", "-D", t.data, "--per", "compute", "--format", "csv"],
                       capture_output=True, text=True)
    n0 = sum(int(x.get("intervals") or 0) for x in csv.DictReader(io.StringIO(u.stdout))
             if x.get("compute") == "replica-0")
    check(u.returncode == 0 and n0 >= 2,
          f"the ledger closed replica-0's interval at the crash and opened another "
          f"({n0} intervals; {u.stderr.strip()})")


def check_unreachable(t, reader_dsn):
    """Both replicas' sockets gone while they run: readers are rerouted to the primary."""
    run = os.path.join(t.data, "run")
    socks = [os.path.join(run, f".s.PGSQL.{r['port']}") for r in replicas(t).values()]
    dsn = reader_dsn.replace("dbname=postgres", "dbname=kroute")
    for p in socks:
        os.rename(p, p + ".away")
    try:
        s = Session(dsn)
        got = s.query(b"SELECT pg_is_in_recovery()::text, pg_backend_pid()") if s.connected \
            else None
        s.close()
        check(got is not None and got[0] == "false",
              f"sockets gone: a new reader session is served by the primary ({got}, {s.error})")
        notes = {n: (r["in_rotation"], r["rotation_note"]) for n, r in replicas(t).items()}
        # "unreachable" until their lag probes fail too (then the lag is unknown)
        check(all(v[0] == "no" for v in notes.values()),
              f"SHOW COMPUTES: both replicas out of rotation ({notes})")
        check(all(t.count_log(f"{n}: a login failed; out of rotation") >= 1 for n in notes),
              "the log says why: a login failed")
    finally:
        for p in socks:
            os.rename(p + ".away", p)
    ok = wait_until(lambda: all(in_rotation(t, n) for n in ("replica-0", "replica-1")), 60, 0.2)
    check(ok, "sockets back: both replicas return to rotation")
    s = Session(dsn)
    got = s.query(b"SELECT pg_is_in_recovery()::text, pg_backend_pid()") if s.connected else None
    s.close()
    check(got is not None and got[0] == "true", f"new reader sessions land on a replica ({got})")


def main():
    rport = free_port()
    t = Tide({"suspend_after": "0", "pause_after": "0", "read_port": str(rport),
              "pool_mode": "session"}, name="replica-kill")
    reader_dsn = t.dsn(connect_timeout=30).replace(f"port={t.port}", f"port={rport}")
    r = t.psql("CREATE TABLE kt(id int PRIMARY KEY); "
               "INSERT INTO kt SELECT generate_series(1, 2000); "
               "CREATE TABLE kw(id serial PRIMARY KEY, v text)")
    check(r.returncode == 0, f"tables created on the primary ({r.stderr.strip()})")
    r = t.psql("CREATE DATABASE kroute")
    check(r.returncode == 0, f"database kroute created ({r.stderr.strip()})")

    # a session on the primary keeps it running while the replicas build
    writer = Writer(t.dsn())
    t.admin("SCALE REPLICAS 2")
    ok = wait_until(lambda: in_rotation(t, "replica-0") and in_rotation(t, "replica-1"), 120, 0.2)
    check(ok, "two replicas in rotation")
    if not ok:
        log(t.log_tail())
        finish()
    dirs = {i: os.path.realpath(os.path.join(t.data, "replicas", str(i))) for i in (0, 1)}
    dirs["primary"] = os.path.realpath(os.path.join(t.data, "primary"))

    readers = [Reader(reader_dsn, n) for n in range(READERS)]
    churn = Churn(reader_dsn)
    for th in readers + [writer, churn]:
        th.start()
    ok = wait_until(lambda: all(rd.ok >= 5 for rd in readers) and writer.ok >= 5 and
                    churn.ok() >= 3, 60, 0.05)
    check(ok, "every reader, the writer and the churn thread are running queries")
    on0 = [rd for rd in readers if rd.ddir == dirs[0]]
    on1 = [rd for rd in readers if rd.ddir == dirs[1]]
    check(len(on0) >= 1 and len(on1) >= 1 and len(on0) + len(on1) == READERS,
          f"readers are spread over both replicas ({len(on0)} on replica-0, {len(on1)} on "
          f"replica-1)")

    old = postmaster_of(t, 0)
    shown = replicas(t).get("replica-0", {})
    check(old is not None and str(old) == shown.get("pid"),
          f"replica-0 postmaster pid {old} (SHOW COMPUTES says {shown.get('pid')})")
    starts_before = int(shown.get("starts") or 0)
    before1 = {rd.name: rd.ok for rd in on1}
    writer_before, churn_before = writer.ok, churn.ok()
    log(f"kill -9 {old}")
    os.kill(old, signal.SIGKILL)

    t_noticed = check_fresh_after_kill(t, reader_dsn, dirs, old)
    check_killed_sessions(on0)

    # replica-0 comes back (restart or rebuild) into rotation
    ok = wait_until(lambda: postmaster_of(t, 0) not in (None, old) and in_rotation(t, "replica-0"),
                    120, 0.2)
    check(ok, f"replica-0 back in rotation with a new postmaster ({old} -> {postmaster_of(t, 0)})")
    # the survivors and the writer keep going for a while after that
    ok = wait_until(lambda: all(rd.ok >= before1[rd.name] + 20 for rd in on1) and
                    writer.ok >= writer_before + 20 and churn.ok() >= churn_before + 5, 60, 0.05)
    check(ok, "the readers on replica-1, the writer and the churn thread kept making progress")
    back = fresh_reads(reader_dsn, 4)
    log(f"reader sessions once replica-0 is back: {[short(b, dirs) for b in back]}")
    check(all(b is not None and b["stage"] == "ok" for b in back), "they succeed")
    check(any(b is not None and b.get("ddir") == dirs[0] for b in back),
          "new reader sessions reach the restarted replica-0 again")

    for th in on1 + [writer, churn]:
        th.stop.set()
    for th in on1 + [writer, churn]:
        th.join(30)
    for rd in on1:
        check(rd.error is None and rd.done,
              f"{rd.name} (on replica-1) saw no error ({rd.ok} queries, {rd.error})")
    check(writer.error is None, f"the writer on the primary saw no error ({writer.ok} inserts, "
          f"{writer.error})")
    failed = [r for r in churn.results if r["stage"] != "ok"]
    log(f"churn: {churn.ok()} sessions, {len(failed)} failed: {[short(r, dirs) for r in failed]}")
    check(not [r for r in failed if r["stage"] == "connect"],
          "churn: every new reader connection across the kill connected")
    check(all(lost_ok(r["error"]) and r["t0"] < t_noticed for r in failed),
          "churn: only sessions opened before pgtide had reaped the postmaster were lost, each "
          "with an 08/57 error")

    check_recorded(t, starts_before, old)
    check_unreachable(t, reader_dsn)
    for rd in readers:
        if rd.done:
            rd.s.close()
    writer.conn.close()
    t.stop()
    finish()


if __name__ == "__main__":
    main()
