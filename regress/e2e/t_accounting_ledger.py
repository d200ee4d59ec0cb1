#!/usr/bin/python3
"""t_accounting_ledger: per-second usage accounting against real process lifetimes, and the
Prometheus endpoint checked by real tooling.

Runs the primary (2 CU) for three measured intervals (suspend_after=2s): the postmaster's start
comes from /proc/PID/stat (starttime + boot time), its exit is when its /proc entry goes. Then
`pgtide usage --format json` over a window around each interval (while pgtide runs) must show
2 x lifetime CU-seconds within 1 s x CU, and one interval each. The ledger's whole-period total
must equal the sum. SHOW USAGE and the CSV/table formats are checked for the same numbers.

Metrics: GET /metrics passes `promtool check metrics` (when installed) and parses with
prometheus_client's parser; queries/transactions/bytes/wait totals equal SHOW STATS, starts equal
SHOW COMPUTES, 404 for other paths, 431 for an oversized request, 40 scrapers at once all served.
"""
import concurrent.futures
import csv
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lib_serverless import PGTIDE_BIN, Tide, check, finish, free_port, log, wait_until  # noqa

import psycopg2  # noqa: E402

CU = 2.0
HZ = os.sysconf("SC_CLK_TCK")


def proc_start_wall(pid):
    """Wall-clock start of pid (resolution 1/HZ): its starttime in /proc/PID/stat is in ticks
    since boot; /proc/uptime gives the time since boot now (btime is whole seconds only)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        now = time.time()
    except OSError:
        return None
    fields = data[data.rindex(")") + 2:].split()
    return now - (uptime - int(fields[19]) / HZ)


def run_interval(tide, busy_seconds):
    """Wakes the compute with a session busy for busy_seconds, then waits for the suspend.
    Returns (start, exit) wall-clock times of the postmaster."""
    conn = psycopg2.connect(tide.dsn())
    pm = wait_until(tide.postmaster_pid, 30)
    start = proc_start_wall(pm)
    cur = conn.cursor()
    end = time.time() + busy_seconds
    while time.time() < end:
        cur.execute("select 1")
        time.sleep(0.1)
    conn.close()
    wait_until(lambda: not os.path.exists(f"/proc/{pm}"), 60, 0.01)
    gone = time.time()
    log(f"postmaster {pm}: {start:.2f} .. {gone:.2f} = {gone - start:.2f} s")
    return start, gone


def usage(tide, *args):
    r = subprocess.run([PGTIDE_BIN, "usage", "-D", tide.data] + list(args),
                       capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise RuntimeError(f"pgtide usage {args}: {r.stderr}")
    return r.stdout


def check_intervals(tide, spans):
    for i, (start, gone) in enumerate(spans):
        since, until = int(start) - 1, int(gone) + 2
        doc = json.loads(usage(tide, "--format", "json", "--since", str(since), "--until",
                               str(until)))
        tot = doc["total"]
        life = gone - start
        check(tot["intervals"] == 1, f"interval {i}: one interval in its window ({tot['intervals']})")
        # the ledger opens the interval just before the fork and closes it once the exit is
        # seen, then rounds up: between the lifetime and one second more
        extra = tot["cu_seconds"] / CU - life
        check(-0.1 <= extra <= 1.1,
              f"interval {i}: ledger {tot['cu_seconds']:.3f} CU-s vs lifetime {life:.2f} s x {CU} "
              f"CU = {CU * life:.2f} (within 1 s: {extra:+.2f} s)")
        check(float(tot["running_seconds"]).is_integer(), f"interval {i}: whole seconds billed")
    doc = json.loads(usage(tide, "--format", "json"))
    lifetimes = sum(g - s for s, g in spans)
    check(doc["total"]["intervals"] == len(spans), f"{len(spans)} intervals in the ledger")
    check(abs(doc["total"]["cu_seconds"] - CU * lifetimes) <= CU * len(spans),
          f"total {doc['total']['cu_seconds']:.3f} CU-s vs {CU * lifetimes:.2f}")
    check(doc["total"]["billed_cu_seconds"] == doc["total"]["cu_seconds"],
          "no paused time billed (pause_after=0)")
    rows = list(csv.DictReader(io.StringIO(usage(tide, "--format", "csv", "--by", "hour"))))
    check(rows and all(r["compute"] == "primary" and r["role"] == "primary" for r in rows),
          "CSV by hour: rows of the primary")
    check(abs(sum(float(r["cu_seconds"]) for r in rows) - doc["total"]["cu_seconds"]) < 0.01,
          "CSV by hour sums to the total")
    table = usage(tide, "--format", "table", "--by", "day")
    check("billed_cu_s" in table and "primary" in table, "table format prints")
    shown = {r["compute"]: r for r in tide.admin_rows("SHOW USAGE")}
    check(set(shown) == {"primary", "total"}
          and abs(float(shown["primary"]["cu_seconds"]) - doc["total"]["cu_seconds"]) < 0.01
          and shown["primary"]["intervals"] == "3", f"SHOW USAGE agrees: {shown}")
    by_hour = tide.admin_rows("SHOW USAGE HOUR")
    check(by_hour and "period_start" in by_hour[0], "SHOW USAGE HOUR has periods")
    check_usage_pipelined(tide)


def check_usage_pipelined(tide):
    """SHOW USAGE is answered later (the ledger is read off the event loop): queries sent behind
    it in the same write must still be answered after it, in order."""
    from t_proxy_harness import msg, raw_login, read_msg
    st, s = raw_login(tide.port, "postgres", tide.password, "pgtide")
    check(st == "ok", f"admin login over a raw socket ({st})")
    if st != "ok":
        return
    try:
        s.sendall(b"".join(msg(b"Q", q.encode() + b"\0")
                           for q in ("SHOW USAGE", "SHOW VERSION", "SHOW USAGE DAY")))
        seen = []
        while seen.count("Z") < 3:
            typ, body = read_msg(s)
            if typ == b"T":
                seen.append("T:" + body[2:body.index(b"\0", 2)].decode())
            elif typ in (b"C", b"Z", b"E"):
                seen.append(typ.decode())
        order = [x for x in seen if x.startswith("T:")]
        check(order == ["T:period_start", "T:version", "T:period_start"] and "E" not in seen,
              f"pipelined SHOW USAGE / SHOW VERSION / SHOW USAGE DAY answered in order ({seen})")
    finally:
        s.close()


def get(url, data=None, timeout=10):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def raw_request(port, payload):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        s.sendall(payload)
    except OSError:
        pass
    data = b""
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    except OSError:
        pass
    s.close()
    return data


def check_metrics(tide, mport):
    from prometheus_client.parser import text_string_to_metric_families
    url = f"http://127.0.0.1:{mport}/metrics"
    # SHOW STATS before and after the scrape bracket the scraped totals (the admin console's
    # own session adds bytes between them)
    before = [r for r in tide.admin_rows("SHOW STATS") if r["database"] == "*"][0]
    comp = tide.compute()
    status, body = get(url)
    stats = [r for r in tide.admin_rows("SHOW STATS") if r["database"] == "*"][0]
    check(status == 200, "GET /metrics answers 200")
    promtool = shutil.which("promtool")
    if promtool:
        r = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True,
                           text=True, timeout=30)
        check(r.returncode == 0, f"promtool check metrics: {(r.stdout + r.stderr).strip() or 'clean'}")
    else:
        log("SKIP: promtool not installed (Debian package prometheus)")
    fams = {f.name: f for f in text_string_to_metric_families(body)}
    check(len(fams) >= 20, f"{len(fams)} metric families parsed")

    def value(fam, suffix="", **labels):
        """A sample of family fam (counters: suffix _total is implied)."""
        if fams[fam].type == "counter" and not suffix:
            suffix = "_total"
        for s in fams[fam].samples:
            if s.name == fam + suffix and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
        raise KeyError(f"{fam}{suffix} {labels}")

    check(value("pgtide_queries") == int(stats["total_query_count"])
          == int(before["total_query_count"]),
          f"pgtide_queries_total = SHOW STATS total_query_count ({stats['total_query_count']})")
    check(value("pgtide_transactions") == int(stats["total_xact_count"]),
          "pgtide_transactions_total = total_xact_count")
    check(int(before["total_received"]) <= value("pgtide_received_bytes") <= int(stats["total_received"]),
          f"pgtide_received_bytes_total within SHOW STATS total_received before/after ({before['total_received']}..{stats['total_received']})")
    check(int(before["total_sent"]) <= value("pgtide_sent_bytes") <= int(stats["total_sent"]),
          f"pgtide_sent_bytes_total within SHOW STATS total_sent before/after ({before['total_sent']}..{stats['total_sent']})")
    check(value("pgtide_auth_failures") == int(stats["auth_failures"]), "auth failures agree")
    check(abs(value("pgtide_client_wait_seconds", "_sum") - int(stats["total_wait_time"]) / 1e6)
          < 1e-3, "wait histogram sum = total_wait_time")
    check(value("pgtide_client_wait_seconds", "_count") >= 3, "wait histogram counted the waits")
    check(value("pgtide_compute_starts", compute="primary") == int(comp["starts"]),
          f"pgtide_compute_starts_total = SHOW COMPUTES starts ({comp['starts']})")
    check(value("pgtide_compute_start_duration_seconds", "_count", compute="primary")
          == int(comp["starts"]), "start-duration histogram counts every start")
    check(value("pgtide_compute_suspends", compute="primary") >= 3, "suspends counted")
    check(value("pgtide_compute_state", compute="primary", state=comp["state"]) == 1,
          f"compute state gauge says {comp['state']}")
    check(value("pgtide_compute_units", compute="primary") == CU, "compute units gauge")
    check(value("pgtide_compute_cu_seconds", compute="primary") > 0, "CU-seconds counter")
    check(value("pgtide_clients", state="admin") >= 0, "clients by state")

    status, _ = get(f"http://127.0.0.1:{mport}/other")
    check(status == 404, f"GET /other answers 404 ({status})")
    big = b"GET /metrics HTTP/1.1\r\nX-Pad: " + b"a" * 20000 + b"\r\n\r\n"
    check(raw_request(mport, big).startswith(b"HTTP/1.1 431"), "an oversized request gets 431")
    check(raw_request(mport, b"POST /metrics HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 405"),
          "POST gets 405")
    with concurrent.futures.ThreadPoolExecutor(40) as ex:
        results = list(ex.map(lambda _: get(url)[0], range(40)))
    check(results.count(200) == 40, f"40 concurrent scrapes all answered ({results.count(200)})")
    slow = socket.create_connection(("127.0.0.1", mport))  # a silent client does not block others
    slow.sendall(b"GET /met")
    check(get(url)[0] == 200, "a half-sent request does not block other scrapers")
    slow.close()


def main():
    mport = free_port()
    tide = Tide({"suspend_after": "2s", "pause_after": "0", "compute_units": str(CU),
                 "ledger_heartbeat": "1s", "metrics_listen": f"127.0.0.1:{mport}"},
                name="acct")
    spans = []
    for busy in (1.0, 3.0, 0.2):
        spans.append(run_interval(tide, busy))
        time.sleep(2.5)  # whole seconds apart, so each window holds one interval
    check_intervals(tide, spans)
    check_metrics(tide, mport)
    finish()


if __name__ == "__main__":
    main()
