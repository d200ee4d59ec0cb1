"""t_cu_policy: persisted policy on the admin console (issue 5), on pgtide's own embedded instance.

1. SHOW POLICY lists every policy key with value, source (default|file|state) and default.
2. SET of good values answers SET and applies at once (SHOW CONFIG, SHOW POLICY source=state);
   bad values are refused with SQLSTATE 22023 and a message that names the key and the rule
   (units, multiple of 0.25, range, rule across keys); keys that are not policy get 42704.
3. A running compute is resized live by SET compute_units (autoscaling off): SHOW COMPUTES cu
   follows, the session stays on the same backend, and where the cgroup cpu controller is
   writable the postmaster's cpu.cfs_quota_us (or cpu.max) follows too.
4. The policy survives a restart and a SIGHUP reload; the state file overrides pgtide.conf.
5. RESET key brings back the configuration's value (file, else default) and survives a restart.
6. A corrupt DATA/state/policy is refused at start with a clear message.
"""
import os
import signal
import subprocess
import time

import psycopg2

from lib_serverless import PGTIDE_BIN, Tide, check, finish, free_port, log, wait_until


BASE = {"metrics_listen": ""}  # no fixed metrics port: tests run side by side


def policy(t):
    return {r["key"]: r for r in t.admin_rows("SHOW POLICY")}


def config_value(t, key):
    for r in t.admin_rows("SHOW CONFIG"):
        if r["key"] == key:
            return r["value"]
    return None


def refused(t, sql, sqlstate, *needles):
    r = t.admin(sql, verbose=True)
    err = r.stderr.strip()
    ok = r.returncode != 0 and f"ERROR:  {sqlstate}:" in err and all(n in err for n in needles)
    return check(ok, f"{sql!r} refused with {sqlstate} mentioning {needles} (got: {err!r})")


def quota_of(pid):
    """The CPU quota (vCPU) of pid's cgroup, or None when it has none."""
    try:
        lines = open(f"/proc/{pid}/cgroup").read().splitlines()
    except OSError:
        return None
    for line in lines:
        _, ctrls, path = line.split(":", 2)
        if "cpu" in ctrls.split(","):
            base = f"/sys/fs/cgroup/cpu{path}"
            try:
                q = int(open(base + "/cpu.cfs_quota_us").read())
                p = int(open(base + "/cpu.cfs_period_us").read())
            except OSError:
                return None
            return None if q < 0 else q / p
        if ctrls == "" and os.path.exists(f"/sys/fs/cgroup{path}/cpu.max"):
            q, p = open(f"/sys/fs/cgroup{path}/cpu.max").read().split()
            return None if q == "max" else int(q) / int(p)
    return None


def main():
    t = Tide(dict(BASE, pause_after="0", suspend_after="0"), name="cu-policy")
    state_file = os.path.join(t.data, "state", "policy")

    # 1. SHOW POLICY
    pol = policy(t)
    want = ["pause_after", "suspend_after", "wake_timeout", "pool_mode", "pool_size",
            "min_replicas", "max_replicas", "compute_units", "replica_units", "min_cu", "max_cu",
            "max_replica_lag"]
    check(all(k in pol for k in want), f"SHOW POLICY lists {want}")
    check(pol["suspend_after"]["source"] == "file" and pol["suspend_after"]["value"] == "0",
          "suspend_after given with -c shows source=file")
    check(pol["max_cu"]["source"] == "default" and pol["max_cu"]["default"] == "1",
          "max_cu shows source=default, default 1")

    # 2. SET good and bad values
    for sql in ("SET suspend_after = '10min'", "SET max_cu = 2", "SET min_cu TO 0.25",
                "SET cpu_high = 0.9", "SET max_replicas = 2"):
        r = t.admin(sql)
        check(r.returncode == 0 and r.stdout.strip() == "SET", f"{sql} answers SET ({r.stderr})")
    check(config_value(t, "suspend_after") == "10min", "SET applies at once (SHOW CONFIG)")
    pol = policy(t)
    check(pol["suspend_after"]["value"] == "10min" and pol["suspend_after"]["source"] == "state",
          "SHOW POLICY: suspend_after = 10min from state")
    check(pol["min_cu"]["value"] == "0.25" and pol["max_cu"]["value"] == "2",
          "SHOW POLICY: min_cu 0.25, max_cu 2")
    refused(t, "SET suspend_after = '10 minutes'", "22023", "suspend_after", "duration")
    refused(t, "SET max_cu = 0.3", "22023", "max_cu", "multiple of 0.25")
    refused(t, "SET max_cu = 100", "22023", "out of range")
    refused(t, "SET min_cu = 4", "22023", "min_cu (4) must not exceed max_cu (2)")
    refused(t, "SET cpu_low = 0.95", "22023", "cpu_low (0.95) must be below cpu_high (0.9)")
    refused(t, "SET pool_mode = sometimes", "22023", "session, transaction, statement")
    refused(t, "SET listen_port = 7000", "42704", "listen_port")
    check(config_value(t, "max_cu") == "2", "a refused SET changes nothing")
    text = open(state_file).read()
    check("suspend_after = 10min\n" in text and "max_cu = 2\n" in text and "crc32c = 0x" in text,
          "DATA/state/policy holds the SETs and a checksum")

    # 3. live resize with autoscaling off
    check(t.admin("SET min_cu = 1").returncode == 0 and t.admin("SET max_cu = 1").returncode == 0,
          "autoscaling off (min_cu = max_cu = 1)")
    conn = psycopg2.connect(t.dsn())
    conn.autocommit = True
    cur = conn.cursor()
    cur.execute("SELECT pg_backend_pid()")
    backend = cur.fetchone()[0]
    check(wait_until(lambda: t.compute()["cu"] == "1.00", 10, 0.2), "running at 1 CU")
    row = t.compute()
    enforced = row.get("cpu_enforcement") in ("cgroup-v1", "cgroup-v2")
    log(f"cpu_enforcement={row.get('cpu_enforcement')} note={row.get('cpu_note')}")
    check(t.admin("SET compute_units = 0.5").returncode == 0, "SET compute_units = 0.5")
    check(wait_until(lambda: t.compute()["cu"] == "0.50", 10, 0.2),
          "SHOW COMPUTES cu follows SET compute_units live")
    cur.execute("SELECT pg_backend_pid()")
    check(cur.fetchone()[0] == backend, "the session kept its backend across the resize")
    if enforced:
        pm = t.postmaster_pid()
        check(quota_of(pm) == 0.5, f"the postmaster's cgroup quota is 0.5 vCPU ({quota_of(pm)})")
        check(t.compute()["cpu_quota"] == "0.50", "SHOW COMPUTES cpu_quota 0.50")
    else:
        log(f"SKIP quota check: cgroups not writable here ({row.get('cpu_note')})")
    conn.close()

    # 4. restart with a config file underneath; SIGHUP
    with open(os.path.join(t.data, "pgtide.conf"), "w") as f:
        f.write("pause_after = 20s\nsuspend_after = 1h\n")
    t.stop()
    t.start(BASE)
    pol = policy(t)
    check(pol["suspend_after"]["value"] == "10min" and pol["suspend_after"]["source"] == "state",
          "after a restart suspend_after is still 10min (state over pgtide.conf's 1h)")
    check(pol["pause_after"]["value"] == "20s" and pol["pause_after"]["source"] == "file",
          "pause_after 20s from pgtide.conf (source=file)")
    check(pol["compute_units"]["value"] == "0.5", "compute_units 0.5 survived the restart")
    os.kill(t.pid, signal.SIGHUP)
    check(wait_until(lambda: t.count_log("SIGHUP") >= 1, 10), "SIGHUP handled")
    time.sleep(0.5)
    check(policy(t)["suspend_after"]["value"] == "10min", "a reload keeps the persisted policy")

    # 5. RESET
    r = t.admin("RESET suspend_after")
    check(r.returncode == 0 and r.stdout.strip() == "RESET", f"RESET answers RESET ({r.stderr})")
    pol = policy(t)
    check(pol["suspend_after"]["value"] == "1h" and pol["suspend_after"]["source"] == "file",
          "RESET brings back pgtide.conf's 1h")
    check("suspend_after" not in open(state_file).read(), "RESET removed the key from the file")
    check(t.admin("RESET compute_units").returncode == 0, "RESET compute_units")
    t.stop()
    t.start(BASE)
    pol = policy(t)
    check(pol["suspend_after"]["value"] == "1h" and pol["compute_units"]["source"] == "default",
          "RESET survives a restart")
    refused(t, "RESET listen_port", "42704", "listen_port")

    # 6. corrupt state file
    t.stop()
    data = bytearray(open(state_file, "rb").read())
    at = data.index(b"max_cu = ") + len(b"max_cu = ")
    data[at] = ord("7") if data[at] != ord("7") else ord("6")
    open(state_file, "wb").write(bytes(data))
    r = subprocess.run([PGTIDE_BIN, "-D", t.data, "-c", f"listen_port={free_port()}",
                        "-c", f"unix_socket_dir={t.sock}", "-c", "metrics_listen="],
                       capture_output=True, text=True, timeout=60)
    check(r.returncode != 0, "pgtide refuses to start with a corrupt state file")
    text = r.stdout + r.stderr
    check("state/policy: checksum mismatch" in text and "will not start" in text,
          "the refusal names the file and says why")
    finish()


if __name__ == "__main__":
    main()
