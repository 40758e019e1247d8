# SPDX-License-Identifier: Apache-2.0
"""upstreams[].adaptive: the gradient limiter lowers the admission limit when the app's latency
rises above its measured minimum, and raises it again when latency recovers; the current limit
is exported as remora_upstream_concurrency_limit. Without `adaptive` the limit never moves."""

import threading
import time

from helpers import HttpConn, metrics

CLIENTS = 16


def limit(proxy):
    return metrics(proxy.admin_port).value("remora_upstream_concurrency_limit", upstream="app")


def drive(proxy, delay_ms, stop):
    """CLIENTS threads sending sequential requests to /delay?ms=<delay_ms[0]> until stop."""
    def client():
        while not stop.is_set():
            try:
                with HttpConn(proxy.port, timeout=10) as c:
                    while not stop.is_set():
                        c.request("GET", "/delay?ms=%d" % delay_ms[0])
                        r = c.read_response()
                        if r.header("connection") == "close":
                            break
            except OSError:
                time.sleep(0.01)
    threads = [threading.Thread(target=client, daemon=True) for _ in range(CLIENTS)]
    for t in threads:
        t.start()
    return threads


def run_phases(proxy, phases):
    """phases: [(delay_ms, seconds)]; returns the limits seen (sampled every 0.25 s) per phase."""
    delay = [phases[0][0]]
    stop = threading.Event()
    threads = drive(proxy, delay, stop)
    seen = []
    try:
        for d, secs in phases:
            delay[0] = d
            vals = []
            end = time.monotonic() + secs
            while time.monotonic() < end:
                time.sleep(0.25)
                vals.append(limit(proxy))
            seen.append(vals)
    finally:
        stop.set()
        for t in threads:
            t.join(15)
    return seen


def test_adaptive_limit_falls_and_recovers(remora, upstream):
    proxy = remora(upstream, workers=1,
                   upstream_opts={"adaptive": True, "max_requests": 32, "max_pending": 1024,
                                  "queue_timeout": "10s"})
    assert limit(proxy) == 32
    fast, slow, fast2 = run_phases(proxy, [(10, 1.5), (300, 3.0), (10, 4.0)])
    low = min(slow)
    assert min(fast) >= 28, fast          # at its ceiling while latency is at its minimum
    assert low <= 16, slow                # latency x30: the limit comes well down
    assert max(fast2) >= low + 3, (slow, fast2)  # and climbs back once latency recovers
    assert max(fast + slow + fast2) <= 32


def test_static_limit_does_not_move(remora, upstream):
    proxy = remora(upstream, workers=1, upstream_opts={"max_requests": 32})
    fast, slow = run_phases(proxy, [(10, 0.75), (300, 1.5)])
    assert set(fast + slow) == {32.0}, (fast, slow)
