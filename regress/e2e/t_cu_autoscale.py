"""t_cu_autoscale: live vertical autoscaling of the primary under CPU load (issue 5).

With min_cu = 0.25, max_cu = 2, scale_window = 3s, scale_cooldown = 5s, a CPU-burning load
(parallel `SELECT count(*) FROM generate_series(...)` through pgtide) makes the primary grow:
SHOW COMPUTES cu rises and the postmaster's cgroup quota (cpu.cfs_quota_us, or cpu.max) follows.
When the load stops it shrinks back to 0.25 CU, step by step. An idle session opened before the
load keeps its backend throughout (no restart, no dropped connection), and the log records each
resize with its reason. Skipped, with a message, where the cgroup cpu controller is not
writable (SHOW COMPUTES cpu_enforcement = none).
"""
import os
import sys
import threading
import time

import psycopg2

from lib_serverless import Tide, check, finish, log, wait_until

SETTINGS = {"metrics_listen": "", "pause_after": "0", "suspend_after": "0",
            "compute_units": "0.25", "min_cu": "0.25", "max_cu": "2",
            "scale_window": "3s", "scale_cooldown": "5s"}


def quota_of(pid):
    """CPU quota (vCPU) of pid's cgroup, None when unlimited or unknown."""
    try:
        lines = open(f"/proc/{pid}/cgroup").read().splitlines()
    except OSError:
        return None
    for line in lines:
        _, ctrls, path = line.split(":", 2)
        if "cpu" in ctrls.split(","):
            base = f"/sys/fs/cgroup/cpu{path}"
            q = int(open(base + "/cpu.cfs_quota_us").read())
            p = int(open(base + "/cpu.cfs_period_us").read())
            return None if q < 0 else q / p
        if ctrls == "" and os.path.exists(f"/sys/fs/cgroup{path}/cpu.max"):
            q, p = open(f"/sys/fs/cgroup{path}/cpu.max").read().split()
            return None if q == "max" else int(q) / int(p)
    return None


def ledger_resizes(data):
    """Sizes (CU) of the RESIZE records in DATA/state/ledger-* (framing per ledger.h: magic, then
    u32 body length, u32 CRC32C, body kind u8, role u8, flags u8, name length u8, cu_milli u32,
    wall_ms u64, name; little-endian). The CRC is not checked here (ledger tests do that)."""
    sizes = []
    state = os.path.join(data, "state")
    for name in sorted(os.listdir(state)):
        if not name.startswith("ledger-"):
            continue
        buf = open(os.path.join(state, name), "rb").read()[8:]
        while len(buf) >= 8:
            blen = int.from_bytes(buf[0:4], "little")
            body = buf[8:8 + blen]
            if len(body) < 16:
                break
            if body[0] == 2:  # LEDGER_RESIZE
                sizes.append(int.from_bytes(body[4:8], "little") / 1000)
            buf = buf[8 + blen:]
    return sizes


def cu(t):
    return float(t.compute()["cu"])


def main():
    t = Tide(SETTINGS, name="cu-autoscale")
    keep = psycopg2.connect(t.dsn())
    keep.autocommit = True
    kc = keep.cursor()
    kc.execute("SELECT pg_backend_pid()")
    backend = kc.fetchone()[0]
    row = t.compute()
    if row.get("cpu_enforcement") not in ("cgroup-v1", "cgroup-v2"):
        log(f"SKIP: the cgroup cpu controller is not writable here: {row.get('cpu_note')}")
        keep.close()
        finish()
    pm = t.postmaster_pid()
    check(cu(t) == 0.25 and quota_of(pm) == 0.25, f"starts at 0.25 CU, quota {quota_of(pm)}")
    procs = set(t.compute_pids())
    check(all(quota_of(p) == 0.25 for p in procs),
          f"every process of the compute ({len(procs)}) is in the quota group")

    stop = threading.Event()
    errors = []

    def burn():
        try:
            c = psycopg2.connect(t.dsn())
            c.autocommit = True
            k = c.cursor()
            while not stop.is_set():
                k.execute("SELECT count(*) FROM generate_series(1, 3e6)")
            c.close()
        except Exception as e:  # reported below
            errors.append(str(e))

    ncpu = os.cpu_count() or 2
    workers = [threading.Thread(target=burn) for _ in range(max(2, ncpu))]
    for w in workers:
        w.start()
    seen = {0.25}
    quotas = set()

    def grown():
        c = cu(t)
        seen.add(c)
        q = quota_of(pm)
        quotas.add(q)
        return c >= 1.0 and q == c
    up = wait_until(grown, 90, 0.5)
    check(up, f"under load the primary grows to >= 1 CU with the quota following (sizes {sorted(seen)}, quotas {sorted(x for x in quotas if x)})")
    wait_until(lambda: (seen.add(cu(t)) or cu(t) == 2.0), 30, 0.5)
    top = max(seen)
    log(f"largest size under load: {top} CU")
    stop.set()
    for w in workers:
        w.join(120)
    check(not errors, f"no query of the load failed ({errors[:1]})")

    down = wait_until(lambda: cu(t) == 0.25 and quota_of(pm) == 0.25, 120, 0.5)
    check(down, f"after the load the primary shrinks back to 0.25 CU (now {cu(t)}, quota {quota_of(pm)})")
    kc.execute("SELECT pg_backend_pid()")
    check(kc.fetchone()[0] == backend, "the idle session kept its backend: no restart, no drop")
    check(t.compute()["starts"] == "1", "the compute was started once (resized, not restarted)")
    text = t.log_text()
    check("autoscale: compute primary 0.25 -> " in text and "> cpu_high" in text,
          "the log has the scale-up with its reason")
    check("below cpu_low" in text and "-> 0.25 CU" in text, "the log has the scale-down")
    resizes = ledger_resizes(t.data)
    check(resizes and resizes[0] > 0.25 and resizes[-1] == 0.25 and max(resizes) == top,
          f"the ledger has the resizes, up and back down ({resizes})")
    keep.close()
    finish()


if __name__ == "__main__":
    sys.exit(main())
