"""lib_check: what every end-to-end harness shares (t_proxy_harness for the proxy and pooling
tests, lib_serverless for the embedded-compute ones): where the binaries are, the check/finish
bookkeeping of a test, bounded polling, scratch directories, and the process side of a private
pgtide (stop by pid, find and end its compute's processes, read its log), with every pgtide a
test started stopped at exit.

Compute processes are found through /proc, never by pattern-matching command lines: a process
belongs to a compute when its command name is "postgres" and its working directory is
DATA/primary (the postmaster enters its data directory and every child inherits that). This
cannot match the test's own process. All waits are bounded; nothing asserts wall-clock time.
"""
import atexit
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

TOP = os.environ.get("PGTIDE_TOP") or os.path.abspath(
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
BINDIR = os.environ.get("PGTIDE_BINDIR") or "/usr/lib/postgresql/15/bin"
PGTIDE_BIN = os.environ.get("PGTIDE_BIN") or os.path.join(TOP, "pgtide")
PSQL = os.path.join(BINDIR, "psql")

failures = []


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def check(cond, what):
    """Records a failure (and logs it) when cond is false; returns bool(cond)."""
    if cond:
        log(f"ok: {what}")
    else:
        failures.append(what)
        log(f"FAIL: {what}")
    return bool(cond)


def finish():
    """Exits 0 when every check passed, else 1 with the list of failures."""
    if failures:
        log(f"{len(failures)} check(s) failed:")
        for f in failures:
            log(f"  - {f}")
        sys.exit(1)
    log("all checks passed")
    sys.exit(0)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_until(pred, timeout=30.0, step=0.05):
    """Polls pred() until it returns a true value (returned) or timeout seconds pass (None)."""
    end = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= end:
            return None
        time.sleep(step)


def scratch_dir(name):
    """A fresh 0755 directory under the runner's scratch (PGTIDE_SCRATCH) or the temp dir."""
    base = os.environ.get("PGTIDE_SCRATCH") or tempfile.gettempdir()
    d = tempfile.mkdtemp(prefix=f"{name}.", dir=base)
    os.chmod(d, 0o755)
    return d


def compute_pids(data):
    """Pids of every process of the compute whose data directory is DATA/primary."""
    want = os.path.realpath(os.path.join(data, "primary"))
    me = os.getpid()
    pids = []
    for ent in os.listdir("/proc"):
        if not ent.isdigit() or int(ent) == me:
            continue
        try:
            with open(f"/proc/{ent}/comm") as f:
                if f.read().strip() != "postgres":
                    continue
            if os.readlink(f"/proc/{ent}/cwd") != want:
                continue
        except OSError:
            continue
        pids.append(int(ent))
    return sorted(pids)


def thaw_cgroup(pid):
    """Thaws pid's cgroup v1 freezer group, if any (a paused compute cannot take signals)."""
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            lines = f.read().splitlines()
    except OSError:
        return
    for line in lines:
        _, ctrls, path = line.split(":", 2)
        if "freezer" in ctrls.split(","):
            try:
                with open(f"/sys/fs/cgroup/freezer{path}/freezer.state", "w") as f:
                    f.write("THAWED")
            except OSError:
                pass


_tides = []


class TideProcess:
    """The process side of a private pgtide. A subclass sets dir, data, logpath and proc
    (a Popen, None when stopped), sets has_compute when pgtide runs its own compute, and calls
    track() once."""

    has_compute = True

    def track(self):
        _tides.append(self)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def wait_exit(self, timeout):
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self):
        """Stops pgtide by pid (SIGTERM, then SIGKILL), then anything left of its compute."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            if self.wait_exit(30) is None:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None
        self.kill_compute_leftovers()

    def compute_pids(self):
        return compute_pids(self.data) if self.has_compute else []

    def kill_compute_leftovers(self):
        pids = self.compute_pids()
        for pid in pids:
            thaw_cgroup(pid)
            for sig in (signal.SIGCONT, signal.SIGQUIT):
                try:
                    os.kill(pid, sig)
                except OSError:
                    pass
        if pids and not wait_until(lambda: not self.compute_pids(), 10):
            for pid in self.compute_pids():
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass

    def log_text(self):
        try:
            with open(self.logpath, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def count_log(self, needle):
        return self.log_text().count(needle)

    def log_tail(self, n=30):
        return "\n".join(self.log_text().splitlines()[-n:])


def _cleanup():
    """At exit: stops every pgtide still running; outside the runner (no PGTIDE_SCRATCH, which
    the runner removes itself) and without PGT_KEEP=1, removes their directories too."""
    for t in _tides:
        try:
            t.stop()
        except Exception as e:  # noqa: BLE001 - cleanup must go on for the other instances
            print(f"cleanup of {t.dir}: {e}", file=sys.stderr)
        if os.environ.get("PGT_KEEP") != "1" and not os.environ.get("PGTIDE_SCRATCH"):
            shutil.rmtree(t.dir, ignore_errors=True)


atexit.register(_cleanup)
