# SPDX-License-Identifier: Apache-2.0
"""Fixed-rate "sidecar tax" cells of bench/run (`bench/run --sidecar`).

A sidecar runs at the request rate its app is offered, far below its maximum. These cells
offer a fixed rate straight at the upstream nginx (`direct`) and through each proxy, and
report what the proxy adds: latency over direct in the same round, CPU per request, sleeps
(voluntary context switches) per request and RSS. Shapes:

  h1-even   HTTP/1.1 GET /13B, evenly spaced: one h2load --h1 process per connection, each
            at <= 100 req/s (h2load's rps timer fires at most every 10 ms, so a faster client
            sends bunches), started so that their phases are 1/R apart.
  h1-burst  HTTP/1.1 GET /13B in bursts: hey -c 10 -q R/10 (ten requests at once every 10/R s).
  h2c-even  h2c GET /13B (upstream HTTP/1.1), evenly spaced as h1-even, h2load without --h1.

Every cell is measured over a window in which the load is steady (all clients started, none
stopped): proxy CPU (utime+stime of its process tree) and voluntary context switches (all
threads) are read at both ends, and the requests counted are those the client started inside
it. A cell whose achieved rate is off the asked one by more than 3% is flagged.

Owns no process of its own kind: the upstream, proxies, spawn/stop, pinning and the footprint
readers are bench/run's (passed in as `br`). Writes <out>/<date>-<commit>-sidecar.{md,csv},
-sidecar-rounds.csv and -sidecar.png.
"""

import argparse
import csv
import datetime
import glob
import math
import os
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

SHAPES = ["h1-even", "h1-burst", "h2c-even"]
RATES = [500, 2000, 5000]
QUICK_RATES = [500, 2000]
TARGETS = ["direct", "remora", "haproxy", "nghttpx", "nginx"]
HOLD = 0.03            # achieved rate within 3% of the asked one
MAX_CLIENT_RPS = 100   # h2load's rps timer: max(10 ms, 1/rps)
MIN_CLIENTS = 10
BURST = 10             # hey workers: requests per burst
RAMP_SETTLE = 0.3      # seconds after the last client started before the window opens
LOG = None


def vcsw(br, root):
    """voluntary_ctxt_switches summed over every thread of root's process tree."""
    total = 0
    for pid in br.tree_pids(root):
        for st in glob.glob("/proc/%d/task/*/status" % pid):
            try:
                with open(st) as f:
                    for line in f:
                        if line.startswith("voluntary_ctxt_switches:"):
                            total += int(line.split()[1])
            except OSError:
                pass
    return total


class Sampler:
    """Reads a proxy's CPU seconds, sleeps and its core's busy time at both ends of a window."""

    def __init__(self, br, pid, proxy_cpus):
        self.br, self.pid, self.cpus = br, pid, proxy_cpus

    def read(self):
        br = self.br
        return {"t": time.time(),
                "cpu": br.cpu_seconds(self.pid) if self.pid else None,
                "vcsw": vcsw(br, self.pid) if self.pid else None,
                "core": br.cpus_busy_seconds(self.cpus) if self.cpus else None}


def wait_until(t):
    while True:
        d = t - time.monotonic()
        if d <= 0:
            return
        time.sleep(min(d, 0.05))


def even_clients(rate):
    n = max(MIN_CLIENTS, math.ceil(rate / MAX_CLIENT_RPS))
    return n, rate / n


def run_even(br, port, path, h1, rate, duration, load_cpus, sampler, tmp):
    """N h2load processes of one connection each at R/N req/s; process i starts at
    i * (1/r + 1/R) so that its rps phase is i/R (the starts never overlap: each is a whole
    client period apart). Returns the window's measurements."""
    n, per = even_clients(rate)
    period = 1.0 / per
    ramp = n * (period + 1.0 / rate)
    life = ramp + RAMP_SETTLE + duration + 0.5
    procs, logs = [], []
    t0 = time.monotonic() + 0.05
    try:
        for i in range(n):
            logf = os.path.join(tmp, "h2load-%d.log" % i)
            logs.append(logf)
            argv = ["h2load"] + (["--h1"] if h1 else []) + [
                "-t1", "-c1", "-m1", "--rps=%g" % per, "-D%dms" % (1000 * (life - i * period)),
                "--log-file=" + logf, "http://127.0.0.1:%d%s" % (port, path)]
            wait_until(t0 + i * (period + 1.0 / rate))
            procs.append(br.spawn(argv, load_cpus, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT))
        wait_until(time.monotonic() + RAMP_SETTLE)
        s0 = sampler.read()
        wait_until(time.monotonic() + duration)
        s1 = sampler.read()
        outs = []
        for p in procs:
            out, _ = p.communicate(timeout=life + 30)
            outs.append(out.decode(errors="replace"))
    finally:
        for p in procs:
            br.stop(p)
    lat, bad, errs = [], 0, 0
    for logf in logs:
        try:
            with open(logf) as f:
                for line in f:
                    cols = line.split("\t")
                    if len(cols) < 3:
                        continue
                    t = int(cols[0]) / 1e6
                    if s0["t"] <= t < s1["t"]:
                        if cols[1].startswith("2"):
                            lat.append(float(cols[2]))
                        else:
                            bad += 1
            os.unlink(logf)
        except OSError:
            pass
    for text in outs:
        r = re.search(r"requests: \d+ total, \d+ started, \d+ done, \d+ succeeded, "
                      r"(\d+) failed, (\d+) errored, (\d+) timeout", text)
        if not r:
            raise RuntimeError("h2load: " + text.strip()[-300:])
        errs += int(r.group(2)) + int(r.group(3))
    return window_result(lat, bad, errs, s0, s1, "%d clients x %g req/s" % (n, per))


def run_burst(br, port, path, rate, duration, load_cpus, sampler, tmp):
    """hey -c 10 -q R/10: each worker's ticker releases one request every 10/R s, all ten
    together. The window is taken on hey's own clock (the csv offset column)."""
    lead = 0.5
    life = lead + duration + 0.5
    argv = ["hey", "-c", str(BURST), "-q", "%g" % (rate / BURST), "-z", "%gs" % life,
            "-cpus", "1", "-o", "csv", "http://127.0.0.1:%d%s" % (port, path)]
    outf = os.path.join(tmp, "hey.csv")
    with open(outf, "wb") as out:
        t_spawn = time.monotonic()
        p = br.spawn(argv, load_cpus, stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_until(t_spawn + lead)
            s0 = sampler.read()
            wait_until(t_spawn + lead + duration)
            s1 = sampler.read()
            p.wait(timeout=life + 30)
        finally:
            br.stop(p)
    lat, bad = [], 0
    lo, hi = lead, lead + (s1["t"] - s0["t"])
    with open(outf) as f:
        rows = f.read().splitlines()
    os.unlink(outf)
    if not rows or not rows[0].startswith("response-time"):
        raise RuntimeError("hey: " + " | ".join(rows[-3:]))
    for line in rows[1:]:
        cols = line.split(",")
        if len(cols) < 8:
            continue
        off = float(cols[7])
        if lo <= off < hi:
            if cols[6].startswith("2"):
                lat.append(float(cols[0]) * 1e6)
            else:
                bad += 1
    return window_result(lat, bad, 0, s0, s1, "hey -c %d -q %g" % (BURST, rate / BURST))


def window_result(lat, bad, errs, s0, s1, how):
    br = BR
    lat.sort()
    wall = s1["t"] - s0["t"]
    n = len(lat)
    res = {"requests": n, "window_s": wall, "rps": n / wall if wall > 0 else None,
           "p50_us": br.percentile(lat, 50), "p90_us": br.percentile(lat, 90),
           "p99_us": br.percentile(lat, 99), "max_us": lat[-1] if lat else None,
           "non2xx": bad, "errors": errs, "client": how}
    if s0["cpu"] is not None and n:
        cpu = s1["cpu"] - s0["cpu"]
        res["cpu_us_per_req"] = cpu * 1e6 / n
        res["vcsw_per_req"] = (s1["vcsw"] - s0["vcsw"]) / n
        if s0["core"] is not None:
            res["other_cpu"] = max(0.0, s1["core"] - s0["core"] - cpu) / wall
    return res


BR = None


def run_cell(br, shape, rate, target, port, path, duration, load_cpus, proxy_cpus, pid, tmp):
    sampler = Sampler(br, pid, proxy_cpus)
    if shape == "h1-burst":
        return run_burst(br, port, path, rate, duration, load_cpus, sampler, tmp)
    return run_even(br, port, path, shape == "h1-even", rate, duration, load_cpus, sampler,
                    tmp)


def held(row, rate):
    return row.get("rps") is not None and abs(row["rps"] - rate) <= HOLD * rate


def calibrate(br, shapes, rates, up, load_cpus, tmp, seconds):
    """Rates per shape that the direct path holds on this machine: each asked rate is tried
    for a few seconds straight at the upstream; one that is not held within 3% is scaled to
    90% of what was achieved (rounded down to 100) and tried again, once."""
    out, notes = {}, []
    for shape in shapes:
        port, path = direct_endpoint(up, shape)
        got = []
        for r in rates:
            rate = r
            for _ in range(2):
                m = run_cell(br, shape, rate, "direct", port, path, seconds, load_cpus, None,
                             None, tmp)
                if held(m, rate) and not m["non2xx"] and not m["errors"]:
                    break
                new = int(0.9 * (m["rps"] or 0) / 100) * 100
                notes.append("%s: direct path held %.0f of %d req/s; scaled to %d" % (
                    shape, m["rps"] or 0, rate, new))
                br.log("sidecar: " + notes[-1])
                if new < 100:
                    break
                rate = new
            if rate not in got:
                got.append(rate)
        out[shape] = got
    return out, notes


def direct_endpoint(up, shape):
    if shape == "h2c-even":
        return up.h2_port, "/nosendfile/13B"   # see bench/run's upstream: no 40 ms stall
    return up.h1_port, "/13B"


def main(br, argv):
    global BR
    BR = br
    ap = argparse.ArgumentParser(prog="bench/run --sidecar",
                                 description="fixed-rate sidecar cells (bench/README.md)")
    ap.add_argument("--sidecar", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--quick", action="store_true",
                    help="1 round, 2 s windows, rates %s: about 2 minutes" %
                    ",".join(map(str, QUICK_RATES)))
    ap.add_argument("--rounds", type=int, help="interleaved rounds (default 3, quick 1)")
    ap.add_argument("--duration", type=float,
                    help="seconds of steady load measured per cell (default 5, quick 2)")
    ap.add_argument("--rates", help="req/s, comma-separated (default %s)" %
                    ",".join(map(str, RATES)))
    ap.add_argument("--shapes", default=",".join(SHAPES),
                    help="which arrival shapes (default all: %s)" % ",".join(SHAPES))
    ap.add_argument("--proxies", default="remora,haproxy,nghttpx,nginx")
    ap.add_argument("--no-calibrate", action="store_true",
                    help="use the rates as given, without first checking the direct path")
    ap.add_argument("--proxy-cpus", default="0")
    ap.add_argument("--load-cpus", default="1")
    ap.add_argument("--remora", default=os.path.join(br.ROOT, "proxy", "remora"))
    ap.add_argument("--out", default=os.path.join(br.BENCH, "results"))
    ap.add_argument("--no-plots", action="store_true")
    ap.add_argument("--keep-tmp", action="store_true")
    a = ap.parse_args(argv)
    rounds = a.rounds or (1 if a.quick else 3)
    duration = a.duration or (2.0 if a.quick else 5.0)
    rates = [int(x) for x in a.rates.split(",")] if a.rates else (
        QUICK_RATES if a.quick else RATES)
    shapes = [s for s in a.shapes.split(",") if s]
    if set(shapes) - set(SHAPES):
        ap.error("unknown shape; known: %s" % ", ".join(SHAPES))
    names = [n for n in a.proxies.split(",") if n]
    if set(names) - set(TARGETS[1:]):
        ap.error("unknown proxy: %s" % ", ".join(sorted(set(names) - set(TARGETS[1:]))))
    need = ["nginx", "h2load", "wrk"] + (["hey"] if "h1-burst" in shapes else []) + [
        n for n in names if n in ("haproxy", "nghttpx")]
    missing = [t for t in need if shutil.which(t) is None]
    if missing:
        print("bench/run --sidecar: missing %s; install with: apt-get install %s" % (
            ", ".join(missing), " ".join(sorted({br.PACKAGES[t] for t in missing}))), file=sys.stderr)
        return 2
    if "remora" in names and not os.access(a.remora, os.X_OK):
        print("bench/run --sidecar: %s is not an executable; build remora first (make)"
              % a.remora, file=sys.stderr)
        return 2
    proxy_cpus, load_cpus = br.parse_cpus(a.proxy_cpus), br.parse_cpus(a.load_cpus)
    online = os.sched_getaffinity(0)
    if len(online) < 2:
        br.log("warning: 1 CPU: not pinning")
        proxy_cpus = load_cpus = None
        layout = "not pinned (1 CPU)"
    elif not (proxy_cpus <= online and load_cpus <= online) or proxy_cpus & load_cpus:
        ap.error("--proxy-cpus and --load-cpus must be disjoint subsets of %s" % sorted(online))
    else:
        os.sched_setaffinity(0, load_cpus)
        layout = ("proxy on CPU %s; upstream nginx, load generators and the harness on CPU %s"
                  % (",".join(map(str, sorted(proxy_cpus))),
                     ",".join(map(str, sorted(load_cpus)))))

    def on_signal(signum, frame):
        raise br.Abort("signal %d" % signum)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    tmp = tempfile.mkdtemp(prefix="remora-sidecar-")
    started = datetime.datetime.now()
    try:
        run(br, a, names, shapes, rates, rounds, duration, proxy_cpus, load_cpus, layout, tmp,
            started)
    except KeyboardInterrupt:
        br.log("interrupted")
        return 130
    except br.Abort as e:
        br.log("aborted by %s" % e)
        return 143
    finally:
        br.stop_all()
        if a.keep_tmp:
            br.log("kept %s" % tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


def run(br, a, names, shapes, rates, rounds, duration, proxy_cpus, load_cpus, layout, tmp,
        started):
    commit = br.git("rev-parse", "--short", "HEAD") or "nocommit"
    if br.git("status", "--porcelain", "--untracked-files=no", "proxy"):
        commit += "-dirty"
    load_before = br.loadavg()
    up = br.Upstream(tmp, load_cpus)
    up.start()
    makers = {
        "remora": lambda: br.Remora(tmp, up, a.remora),
        "haproxy": lambda: br.HAProxy(tmp, up),
        "nghttpx": lambda: br.Nghttpx(tmp, up),
        "nginx": lambda: br.Nginx(tmp, up, 512),
    }
    proxies = [makers[n]() for n in names]
    info = {}
    for p in proxies:
        try:
            p.start(proxy_cpus)
            br.run_wrk(p.port, "/13B", 64, 1, load_cpus)    # fill the pools, warm allocators
            info[p.name] = {"version": p.version(), "error": None}
        except (RuntimeError, OSError, subprocess.TimeoutExpired) as e:
            info[p.name] = {"version": p.version(), "error": "failed to start: %s" % e}
            br.log("%s: %s" % (p.name, info[p.name]["error"]))
            p.stop()
    br.log("sidecar: %s; %d round(s), %.0f s windows" % (layout, rounds, duration))
    if a.no_calibrate:
        plan, notes = {s: list(rates) for s in shapes}, []
    else:
        plan, notes = calibrate(br, shapes, rates, up, load_cpus, tmp,
                                min(duration, 2.0))
    rows = []
    targets = ["direct"] + [p for p in proxies]
    for rnd in range(1, rounds + 1):
        for shape in shapes:
            for rate in plan[shape]:
                for t in targets:
                    rows.append(one_cell(br, rnd, shape, rate, t, up, duration, load_cpus,
                                         proxy_cpus, info, tmp))
    for p in proxies:
        p.stop()
    br.stop(up.proc)
    meta = {"commit": commit, "date": started.isoformat(" ", "seconds"), "layout": layout,
            "rounds": rounds, "duration": duration, "load_before": load_before,
            "load_after": br.loadavg(), "versions": br.tool_versions(),
            "argv": " ".join(["bench/run"] + sys.argv[1:]), "notes": notes,
            "hey": br.run_text(["dpkg-query", "-W", "-f", "${Version}", "hey"]),
            "remora": info.get("remora", {}).get("version", "")}
    write(br, a, started, meta, names, shapes, plan, rows, proxies)


def one_cell(br, rnd, shape, rate, t, up, duration, load_cpus, proxy_cpus, info, tmp):
    name = t if isinstance(t, str) else t.name
    row = {"round": rnd, "shape": shape, "rate": rate, "target": name, "status": "ok"}
    if name == "direct":
        port, path = direct_endpoint(up, shape)
        pid = None
    else:
        if info[name]["error"]:
            row["status"] = info[name]["error"]
            return row
        if not t.alive():
            err = br.restart(t, proxy_cpus, load_cpus)
            if err:
                row["status"] = "failed: proxy exited and did not restart: %s" % err[:200]
                return row
        port = t.h2_port if shape == "h2c-even" else t.port
        path, pid = "/13B", t.proc.pid
    try:
        m = run_cell(br, shape, rate, name, port, path, duration, load_cpus, proxy_cpus, pid,
                     tmp)
    except (RuntimeError, OSError, subprocess.TimeoutExpired, ValueError) as e:
        row["status"] = "failed: %s" % str(e)[:200]
        return row
    row.update(m)
    if pid:
        row["rss_kib"] = br.status_kib(pid, "VmRSS")
        if not t.alive():
            row["status"] = "failed: proxy exited during the run (%s)" % br.exit_text(t)
    if m["non2xx"] or m["errors"]:
        row["status"] = "failed: %d non-2xx, %d errors" % (m["non2xx"], m["errors"])
    row["held"] = held(row, rate)
    br.log("round %d %-8s %5d %-8s %6.0f req/s%s p50 %.2f p99 %.2f ms%s%s" % (
        rnd, shape, rate, name, row.get("rps") or 0, "" if row["held"] else " (NOT HELD)",
        (row.get("p50_us") or 0) / 1e3, (row.get("p99_us") or 0) / 1e3,
        "  cpu %.0f us/req, %.2f sleeps/req" % (row["cpu_us_per_req"], row["vcsw_per_req"])
        if "cpu_us_per_req" in row else "",
        "" if row["status"] == "ok" else "  ** " + row["status"]))
    return row


# ---------------------------------------------------------------------------------------------
# Summaries and output.

METRICS = ["rps", "p50_us", "p90_us", "p99_us", "max_us", "add_p50_us", "add_p99_us",
           "cpu_us_per_req", "vcsw_per_req", "rss_kib", "other_cpu"]


def add_deltas(rows):
    """added p50/p99: the proxy's figure minus direct's in the same round, shape and rate."""
    direct = {(r["round"], r["shape"], r["rate"]): r for r in rows
              if r["target"] == "direct" and r["status"] == "ok"}
    for r in rows:
        d = direct.get((r["round"], r["shape"], r["rate"]))
        if r["target"] != "direct" and d and r["status"] == "ok":
            r["add_p50_us"] = r["p50_us"] - d["p50_us"]
            r["add_p99_us"] = r["p99_us"] - d["p99_us"]


def summarise(br, rows, shapes, plan, targets):
    out = {}
    for s in shapes:
        for rate in plan[s]:
            for t in targets:
                rs = [r for r in rows if (r["shape"], r["rate"], r["target"]) == (s, rate, t)]
                bad = [r["status"] for r in rs if r["status"] != "ok"]
                c = {"status": bad[0] if bad else "ok",
                     "not_held": sum(1 for r in rs if r["status"] == "ok" and not r["held"]),
                     "rounds": len(rs), "client": rs[0].get("client", "") if rs else ""}
                for k in METRICS:
                    c[k] = br.med_min_max([r.get(k) for r in rs if r["status"] == "ok"])
                out[(s, rate, t)] = c
    return out


def med(c, k):
    return c[k][0] if c and c.get(k) else None


def write(br, a, started, meta, names, shapes, plan, rows, proxies):
    add_deltas(rows)
    targets = ["direct"] + names
    summ = summarise(br, rows, shapes, plan, targets)
    os.makedirs(a.out, exist_ok=True)
    stem = os.path.join(a.out, "%s-%s-sidecar" % (started.strftime("%Y%m%d-%H%M%S"),
                                                  meta["commit"]))
    keys = ["round", "shape", "rate", "target", "status", "held", "requests", "window_s",
            "rps", "p50_us", "p90_us", "p99_us", "max_us", "add_p50_us", "add_p99_us",
            "cpu_us_per_req", "vcsw_per_req", "rss_kib", "other_cpu", "non2xx", "errors",
            "client"]
    with open(stem + "-rounds.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["commit"] + keys)
        for r in rows:
            w.writerow([meta["commit"]] + [r.get(k, "") for k in keys])
    with open(stem + ".csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["commit", "shape", "rate", "target", "status", "rounds_not_held"] +
                   ["%s_%s" % (k, x) for k in METRICS for x in ("median", "min", "max")])
        for s in shapes:
            for rate in plan[s]:
                for t in targets:
                    c = summ[(s, rate, t)]
                    line = [meta["commit"], s, rate, t, c["status"], c["not_held"]]
                    for k in METRICS:
                        line += list(c[k]) if c[k] else ["", "", ""]
                    w.writerow(line)
    png = None
    if not a.no_plots and shutil.which("gnuplot"):
        png = plot(br, stem, shapes, plan, names, summ)
    md = markdown(br, meta, shapes, plan, targets, names, summ, png, proxies, rows)
    with open(stem + ".md", "w") as f:
        f.write(md)
    print(md)
    br.log("results: %s.{md,csv} %s-rounds.csv%s" % (stem, stem, " " + png if png else ""))


def fmt(c, k, scale=1.0, digits=None):
    t = c.get(k) if c else None
    if not t:
        return "-"
    m, lo, hi = (x * scale for x in t)
    f = (lambda v: ("%." + str(digits) + "f") % v) if digits is not None else BR.fmt_num
    return f(m) if lo == hi else "%s [%s..%s]" % (f(m), f(lo), f(hi))


def best_peer(summ, s, rate, peers, k):
    """The peer with the lowest median of k among cells that ran: (name, value)."""
    vals = [(med(summ[(s, rate, p)], k), p) for p in peers
            if summ[(s, rate, p)]["status"] == "ok" and med(summ[(s, rate, p)], k) is not None]
    if not vals:
        return None, None
    v, p = min(vals)
    return p, v


def ratio(a, b):
    if a is None or b is None or b == 0:
        return "-"
    return "%.2fx" % (a / b)


SHAPE_TEXT = {
    "h1-even": "HTTP/1.1 GET /13B, evenly spaced (h2load --h1, one connection per client)",
    "h1-burst": "HTTP/1.1 GET /13B, bursts of %d (hey -c %d -q R/%d)" % (BURST, BURST, BURST),
    "h2c-even": "h2c GET /13B, upstream HTTP/1.1, evenly spaced (h2load, one connection "
                "per client)",
}


def paired(rows, s, rate, peers, k):
    """Median over rounds of remora's k / the lowest peer's k in the same round: a noisy
    stretch of the machine hits the cells of one round alike."""
    out = []
    for rnd in sorted({r["round"] for r in rows}):
        cell = {r["target"]: r.get(k) for r in rows if (r["round"], r["shape"], r["rate"]) ==
                (rnd, s, rate) and r["status"] == "ok" and r.get(k) is not None}
        best = [cell[p] for p in peers if p in cell]
        if cell.get("remora") is not None and best and min(best) > 0:
            out.append(cell["remora"] / min(best))
    return "%.2fx" % statistics.median(out) if out else "-"


def markdown(br, meta, shapes, plan, targets, names, summ, png, proxies, rows):
    v = meta["versions"]
    L = ["# remora sidecar regime (fixed rate), %s, commit %s\n" % (meta["date"],
                                                                    meta["commit"])]
    L.append("- Command: `%s`; %d interleaved round(s), %.0f s measured per cell; %s." % (
        meta["argv"], meta["rounds"], meta["duration"], meta["layout"]))
    L.append("- Load average before/after: %s / %s." % (meta["load_before"], meta["load_after"]))
    L.append("- Versions: %s." % "; ".join(x for x in [
        meta["remora"], v["haproxy"], v["nginx"], v["nghttpx"], v["h2load"],
        "hey " + meta["hey"], "kernel " + v["kernel"], v["cpu"]] if x))
    for s in shapes:
        asked = ", ".join(map(str, plan[s]))
        L.append("- %s rates: %s req/s." % (s, asked))
    for n in meta["notes"]:
        L.append("- **Scaled down**: %s." % n)
    not_held = [(s, r, t, summ[(s, r, t)]["not_held"]) for s in shapes for r in plan[s]
                for t in targets if summ[(s, r, t)]["not_held"]]
    L.append("- Cells whose client did not hold the asked rate within %d%% (rounds): %s." % (
        HOLD * 100, ", ".join("%s %d %s (%d)" % x for x in not_held) or "none"))
    L.append("")
    L.append("Median [min..max] over rounds. achieved = requests the client started in the "
             "measured window / its length; latency in ms from the client's own per-request "
             "times; added = the cell's p50 (p99) minus direct's in the same round and shape "
             "(median of the per-round differences); CPU = proxy utime+stime (all threads and "
             "processes) per request, us; sleeps = voluntary context switches of all its "
             "threads per request; RSS at the end of the cell. 'held': achieved within 3% of "
             "the asked rate in every round.\n")
    peers = [n for n in names if n != "remora"]
    if "remora" in names and peers:
        L.append("## remora against the best peer\n")
        L.append("Best peer = the peer with the lowest median of that column. CPU and sleeps: "
                 "remora / best (below 1: remora costs less). Added latency: remora's and the "
                 "best peer's, ms. achieved: remora's / the highest peer's. paired: the median "
                 "over rounds of remora / the lowest peer of the same round.\n")
        L.append("| shape | rate | CPU us/req remora / best | ratio (paired) | sleeps/req remora "
                 "/ best | ratio (paired) | added p50 remora / best | added p99 remora / best | "
                 "achieved remora / best |")
        L.append("|---|---|---|---|---|---|---|---|---|")
        for s in shapes:
            for rate in plan[s]:
                rc = summ[(s, rate, "remora")]
                cells = [s, str(rate)]
                for k, scale in (("cpu_us_per_req", 1), ("vcsw_per_req", 1)):
                    p, bv = best_peer(summ, s, rate, peers, k)
                    rv = med(rc, k) if rc["status"] == "ok" else None
                    cells += ["%s / %s (%s)" % (fmt_v(rv), fmt_v(bv), p or "-"),
                              "%s (%s)" % (ratio(rv, bv), paired(rows, s, rate, peers, k))]
                for k in ("add_p50_us", "add_p99_us"):
                    p, bv = best_peer(summ, s, rate, peers, k)
                    rv = med(rc, k) if rc["status"] == "ok" else None
                    cells.append("%s / %s (%s)" % (fmt_v(rv, 1e-3), fmt_v(bv, 1e-3), p or "-"))
                ach = [(med(summ[(s, rate, p)], "rps"), p) for p in peers
                       if med(summ[(s, rate, p)], "rps") is not None]
                bv, bp = max(ach) if ach else (None, None)
                cells.append("%s / %s (%s)" % (fmt_v(med(rc, "rps")), fmt_v(bv), bp or "-"))
                L.append("| " + " | ".join(cells) + " |")
        L.append("")
    for s in shapes:
        L.append("## %s: %s\n" % (s, SHAPE_TEXT[s]))
        for rate in plan[s]:
            client = summ[(s, rate, "direct")]["client"]
            L.append("### %d req/s asked%s\n" % (rate, " (%s)" % client if client else ""))
            L.append("| target | achieved | held | p50 | p90 | p99 | max | added p50 | "
                     "added p99 | CPU us/req | sleeps/req | RSS MiB | other CPU | status |")
            L.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
            for t in targets:
                c = summ[(s, rate, t)]
                if c["rps"] is None:
                    L.append("| %s |%s %s |" % (t, "  |" * 12, c["status"]))
                    continue
                held_txt = "yes" if not c["not_held"] else "**no** (%d of %d)" % (
                    c["not_held"], c["rounds"])
                L.append("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s "
                         "| %s |" % (
                             t, fmt(c, "rps", digits=0), held_txt, fmt(c, "p50_us", 1e-3, 3),
                             fmt(c, "p90_us", 1e-3, 3), fmt(c, "p99_us", 1e-3, 3),
                             fmt(c, "max_us", 1e-3, 2), fmt(c, "add_p50_us", 1e-3, 3),
                             fmt(c, "add_p99_us", 1e-3, 3), fmt(c, "cpu_us_per_req", 1, 0),
                             fmt(c, "vcsw_per_req", 1, 2), fmt(c, "rss_kib", 1 / 1024.0, 1),
                             fmt(c, "other_cpu", 1, 2), c["status"]))
            L.append("")
    if png:
        L.append("Plot: [%s](%s)\n" % (os.path.basename(png), os.path.basename(png)))
    L.append("## Proxy commands\n")
    for p in proxies:
        L.append("- %s: `%s`" % (p.name, shlex.join(p.argv or [])))
    L.append("")
    L.append("Configurations: as bench/run's (printed at the end of every bench/run results "
             "file).")
    return "\n".join(L) + "\n"


def fmt_v(v, scale=1.0):
    if v is None:
        return "-"
    return BR.fmt_num(v * scale)


def plot(br, stem, shapes, plan, names, summ):
    """One row per shape: added p50, added p99 (ms) and CPU us/request against the rate."""
    png = stem + ".png"
    panels, dats = [], []
    for i, s in enumerate(shapes):
        dat = "%s-%d.dat" % (stem, i)
        dats.append(dat)
        with open(dat, "w") as f:
            for rate in plan[s]:
                vals = []
                for n in names:
                    c = summ[(s, rate, n)]
                    for k, sc in (("add_p50_us", 1e-3), ("add_p99_us", 1e-3),
                                  ("cpu_us_per_req", 1)):
                        x = med(c, k) if c["status"] == "ok" else None
                        vals.append("NaN" if x is None else "%.4f" % (x * sc))
                f.write("%d %s\n" % (rate, " ".join(vals)))
        for j, (title, ylabel) in enumerate((("added p50", "ms"), ("added p99", "ms"),
                                             ("CPU per request", "us"))):
            plots = ", ".join("'%s' using 1:%d with linespoints title '%s'" % (
                dat, 2 + 3 * k + j, n) for k, n in enumerate(names))
            panels.append("set title '%s: %s'\nset ylabel '%s'\nplot %s" % (
                s, title, ylabel, plots))
    script = """\
set terminal pngcairo size 1500,{h} noenhanced
set output '{out}'
set multiplot layout {rows},3 title 'Fixed rate: added latency over direct and proxy CPU per request (medians)'
set xlabel 'req/s asked'
set grid
set key top left
{panels}
unset multiplot
""".format(h=330 * len(shapes), out=png, rows=len(shapes), panels="\n".join(panels))
    ok = br.gnuplot(script)
    for d in dats:
        os.unlink(d)
    return png if ok else None
