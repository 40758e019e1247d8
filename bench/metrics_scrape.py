#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Measures the CPU cost of one /metrics scrape with many routes.

Starts the test upstream and remora (2 workers) with N routes (default 50) on free loopback
ports, sends traffic so every route has 2xx, 4xx and 5xx series, then scrapes /metrics S times
(default 500) over one keep-alive connection and reports remora's CPU time (utime+stime from
/proc/PID/stat, which includes the idle workers' heartbeats) divided by S, plus the body size.
Bounded: fixed request and scrape counts, every process stopped by PID.

usage: bench/metrics_scrape.py [--routes N] [--scrapes S] [--bin proxy/remora]
"""
import argparse
import http.client
import os
import signal
import socket
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--routes", type=int, default=50)
    ap.add_argument("--scrapes", type=int, default=500)
    ap.add_argument("--bin", default=os.path.join(ROOT, "proxy", "remora"))
    a = ap.parse_args()

    up = subprocess.Popen(["/usr/bin/python3", os.path.join(ROOT, "tests/integration/upstream.py"),
                           "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    uport = int(up.stdout.readline().split()[1])
    port, admin = free_port(), free_port()
    routes = "".join('  - { name: r%d, match: { path_prefix: "/r%d/" }, upstream: app }\n' % (i, i)
                     for i in range(a.routes))
    cfg = ("workers: 2\nlisteners: [{ name: in, address: \"127.0.0.1:%d\" }]\n"
           "admin: { address: \"127.0.0.1:%d\" }\n"
           "upstreams: [{ name: app, endpoints: [\"127.0.0.1:%d\"] }]\nroutes:\n%s"
           % (port, admin, uport, routes))
    path = "/tmp/remora-scrape-bench-%d.yaml" % os.getpid()
    with open(path, "w") as f:
        f.write(cfg)
    rem = subprocess.Popen([a.bin, "-c", path], stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                c = http.client.HTTPConnection("127.0.0.1", admin, timeout=1)
                c.request("GET", "/readyz")
                if c.getresponse().status == 200:
                    break
            except OSError:
                time.sleep(0.05)
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        for i in range(a.routes):
            for p in ("/r%d/echo" % i, "/r%d/status/404" % i, "/r%d/status/503" % i):
                c.request("GET", p)
                c.getresponse().read()
        m = http.client.HTTPConnection("127.0.0.1", admin, timeout=5)
        m.request("GET", "/metrics")
        body = m.getresponse().read()
        time.sleep(0.2)
        t0, c0 = time.monotonic(), cpu_seconds(rem.pid)
        for _ in range(a.scrapes):
            m.request("GET", "/metrics")
            m.getresponse().read()
        t1, c1 = time.monotonic(), cpu_seconds(rem.pid)
        per = (c1 - c0) / a.scrapes
        print("routes=%d series_lines=%d body_bytes=%d scrapes=%d cpu_per_scrape_ms=%.3f "
              "wall_per_scrape_ms=%.3f" % (a.routes, body.count(b"\n"), len(body), a.scrapes,
                                           per * 1000, (t1 - t0) / a.scrapes * 1000))
    finally:
        for p in (rem, up):
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=3)
            except subprocess.TimeoutExpired:
                p.kill()
        os.unlink(path)


if __name__ == "__main__":
    sys.exit(main())
