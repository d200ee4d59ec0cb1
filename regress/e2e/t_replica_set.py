"""t_replica_set: the replica set's control plane (issue 6), on pgtide's own embedded instance.

Checked through the admin console (SCALE REPLICAS, SHOW COMPUTES) and direct connections to the
replicas' private sockets in DATA/run (as user postgres):
1. SCALE REPLICAS 2 -> two replicas in recovery (pg_is_in_recovery()), in rotation, each with the
   rows the primary had; rows written on the primary afterwards appear on both.
2. Lag: pg_wal_replay_pause() on one replica, a write on the primary -> it leaves rotation
   (SHOW COMPUTES in_rotation = no with the reason) while the other stays; after
   pg_wal_replay_resume() it catches up and returns.
3. kill -9 of a replica's postmaster -> noticed, restarted, back in rotation with a new pid.
4. A replica whose data directory is unusable (pg_control gone) is rebuilt from storage.
5. SCALE REPLICAS 0 -> both drain and stop (no replica rows, no replica process left).
6. The ledger has replica intervals (pgtide usage --per role) beside the primary's.
7. Refusals: SCALE REPLICAS 17 -> 22023; SET replica_scale_wait is a policy key.
8. Metrics: replica count, in-rotation, lag and build-time gauges follow the lag scenario.
"""
import csv
import io
import os
import signal
import subprocess
import urllib.request

from lib_replica import direct, in_rotation, postmaster_of, replicas
from lib_serverless import PGTIDE_BIN, PSQL, Tide, check, finish, free_port, wait_until



def replica_processes(t):
    """pids of postgres processes whose cwd is under DATA/replicas (not this test)."""
    root = os.path.realpath(os.path.join(t.data, "replicas"))
    found = []
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == os.getpid():
            continue
        try:
            if open(f"/proc/{d}/comm").read().strip() != "postgres":
                continue
            if os.path.realpath(os.readlink(f"/proc/{d}/cwd")).startswith(root):
                found.append(int(d))
        except OSError:
            pass
    return found


def metrics(port):
    """The Prometheus endpoint's samples as {name{labels}: value}."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            k, _, v = line.rpartition(" ")
            out[k] = float(v)
    return out


def main():
    mport = free_port()
    t = Tide({"pause_after": "0", "suspend_after": "0", "read_port": str(free_port()),
              "metrics_listen": f"127.0.0.1:{mport}"}, name="replica-set")
    r = t.psql("CREATE TABLE r(id int PRIMARY KEY, v text); "
               "INSERT INTO r SELECT g, 'x' || g FROM generate_series(1, 1000) g")
    check(r.returncode == 0, f"table created on the primary ({r.stderr.strip()})")

    # 7. refusals first (cheap)
    r = t.admin("SCALE REPLICAS 17", verbose=True)
    check(r.returncode != 0 and "22023" in r.stderr, f"SCALE REPLICAS 17 refused with 22023")
    r = t.admin("SET replica_scale_wait = '2s'")
    check(r.returncode == 0, f"SET replica_scale_wait accepted ({r.stderr.strip()})")

    # 1. two replicas
    r = t.admin("SCALE REPLICAS 2")
    check(r.returncode == 0 and r.stdout.strip() == "SCALE", f"SCALE REPLICAS 2 answered SCALE")
    ok = wait_until(lambda: in_rotation(t, "replica-0", "replica-1"), 60, 0.2)
    check(ok, "two replicas in rotation")
    rows = replicas(t)
    check(len(rows) == 2, f"SHOW COMPUTES lists two replica rows ({sorted(rows)})")
    ports = {n: int(x["port"]) for n, x in rows.items()}
    check(ports == {"replica-0": 5433, "replica-1": 5434}, f"replica ports 5433+N ({ports})")
    check(all(x["build_ms"] not in ("", None) and int(x["build_ms"]) > 0 for x in rows.values()),
          "build_ms reported for both")
    for name, port in ports.items():
        check(direct(t, port, "SELECT pg_is_in_recovery()") == "t", f"{name} is in recovery")
        check(direct(t, port, "SELECT count(*) FROM r") == "1000", f"{name} has the 1000 rows")
    t.psql("INSERT INTO r SELECT g, 'y' FROM generate_series(1001, 1500) g")
    for name, port in ports.items():
        ok = wait_until(lambda: direct(t, port, "SELECT count(*) FROM r") == "1500", 30, 0.2)
        check(ok, f"rows written on the primary appear on {name}")
    r = subprocess.run([PSQL, "-X", "-At", f"host={os.path.join(t.data, 'run')} port=5433 "
                        "user=postgres dbname=postgres", "-c", "INSERT INTO r VALUES (0, 'no')"],
                       capture_output=True, text=True)
    check(r.returncode != 0 and "read-only" in r.stderr, "a replica refuses writes")

    # 2. lag: pause replay on replica-1
    check(direct(t, 5434, "SELECT pg_wal_replay_pause()") is not None, "replay paused on replica-1")
    t.psql("INSERT INTO r SELECT g, 'z' FROM generate_series(1501, 3000) g")
    ok = wait_until(lambda: not in_rotation(t, "replica-1"), 30, 0.2)
    r1 = replicas(t).get("replica-1") or {}
    check(ok, f"replica-1 left rotation ({r1.get('rotation_note')}, lag {r1.get('lag_bytes')} B)")
    check(r1.get("rotation_note") in ("replay paused", "lagging"), "the reason is shown")
    check(int(r1.get("lag_bytes") or 0) > 0, "its lag in bytes is above 0")
    check(in_rotation(t, "replica-0"), "replica-0 stays in rotation")
    m = metrics(mport)
    check(m.get('pgtide_replicas') == 2.0
          and m.get('pgtide_replica_in_rotation{compute="replica-0"}') == 1.0
          and m.get('pgtide_replica_in_rotation{compute="replica-1"}') == 0.0
          and m.get('pgtide_replica_lag_bytes{compute="replica-1"}', 0) > 0
          and 'pgtide_replica_build_seconds{compute="replica-0"}' in m,
          "metrics: 2 replicas, replica-1 out of rotation with its lag, build times "
          f"({ {k: v for k, v in m.items() if 'replica' in k} })")
    check(direct(t, 5434, "SELECT pg_wal_replay_resume()") is not None, "replay resumed")
    ok = wait_until(lambda: in_rotation(t, "replica-1"), 30, 0.2)
    check(ok, "replica-1 is back in rotation after resume")
    check(direct(t, 5434, "SELECT count(*) FROM r") == "3000", "replica-1 caught up")

    # 3. kill -9 of replica-0
    old = postmaster_of(t, 0)
    check(old is not None, f"replica-0 postmaster pid {old}")
    if old:
        os.kill(old, signal.SIGKILL)
    ok = wait_until(lambda: postmaster_of(t, 0) not in (None, old) and in_rotation(t, "replica-0"),
                    60, 0.2)
    check(ok, f"replica-0 restarted after kill -9 (pid {old} -> {postmaster_of(t, 0)})")
    check(t.count_log("replica-0: running -> failed") >= 1, "the crash is in the log")

    # 4. unusable data directory -> rebuild
    old = postmaster_of(t, 1)
    ctl = os.path.join(t.data, "replicas", "1", "global", "pg_control")
    os.rename(ctl, ctl + ".gone")
    if old:
        os.kill(old, signal.SIGKILL)
    ok = wait_until(lambda: in_rotation(t, "replica-1") and
                    os.path.exists(os.path.join(t.data, "replicas", "1", "global", "pg_control")),
                    90, 0.2)
    check(ok, "replica-1 rebuilt and back in rotation")
    check(t.count_log("rebuilding") >= 1, "the rebuild is logged")
    check(not os.path.exists(os.path.join(t.data, "replicas", ".1.build")),
          "no half-made build directory is left")
    check(direct(t, 5434, "SELECT count(*) FROM r") == "3000", "the rebuilt replica has every row")

    # 5. scale in
    r = t.admin("SCALE REPLICAS 0")
    check(r.returncode == 0, "SCALE REPLICAS 0 accepted")
    ok = wait_until(lambda: not replicas(t) and not replica_processes(t), 60, 0.2)
    check(ok, f"replicas drained and stopped (rows {len(replicas(t))}, "
              f"processes {replica_processes(t)})")
    check(t.count_log("replica-0: draining") >= 1, "the drain is logged")

    # 6. ledger
    u = subprocess.run([PGTIDE_BIN, "usage", "-D", t.data, "--per", "role", "--format", "csv"],
                       capture_output=True, text=True)
    roles = {row.get("role"): row for row in csv.DictReader(io.StringIO(u.stdout))}
    check(u.returncode == 0 and "replica" in roles, f"pgtide usage --per role has replica rows "
          f"({sorted(roles)})")
    if "replica" in roles:
        check(float(roles["replica"]["running_seconds"]) > 0, "replica running seconds > 0")
        check(int(roles["replica"]["intervals"]) >= 3,
              f"replica intervals: 2 starts + restarts ({roles['replica']['intervals']})")
    t.stop()
    finish()


if __name__ == "__main__":
    main()
