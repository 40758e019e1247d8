# SPDX-License-Identifier: Apache-2.0
"""73: the upstream side of a drain: pooled upconns do not idle on, and an HTTP/2 app is told
with a GOAWAY (NO_ERROR) before remora closes its connection, both for an idle upconn and for
one whose last stream ends during the drain."""
import signal
import subprocess
import threading
import time

from helpers import HttpConn


def _curl(port, path, out):
    r = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                        "http://127.0.0.1:%d%s" % (port, path)], capture_output=True, timeout=20)
    out.append(r.stdout.decode())


def _wait_exit(proc, timeout=10):
    return proc.wait(timeout)


def test_idle_h2_upconn_gets_goaway_at_drain(remora, h2_upstream):
    p = remora(h2_upstream, upstream_opts={"protocol": "h2c", "idle_timeout": "30s"})
    with HttpConn(p.port) as c:
        c.request("GET", "/")
        assert c.read_response().status == 200
    assert h2_upstream.stats()["conns_open"] == 1
    before = h2_upstream.stats()["goaways_received"]
    p.proc.send_signal(signal.SIGTERM)
    assert _wait_exit(p.proc) == 0
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and h2_upstream.stats()["conns_open"]:
        time.sleep(0.02)
    st = h2_upstream.stats()
    assert st["goaways_received"] == before + 1, st
    assert st["conns_open"] == 0


def test_busy_h2_upconn_finishes_then_gets_goaway(remora, h2_upstream):
    p = remora(h2_upstream, upstream_opts={"protocol": "h2c", "idle_timeout": "30s"},
               drain={"timeout": "10s"})
    out = []
    t = threading.Thread(target=_curl, args=(p.port, "/delay?ms=1000", out))
    t.start()
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and h2_upstream.stats()["streams_active"] == 0:
        time.sleep(0.01)
    p.proc.send_signal(signal.SIGTERM)
    t.join(15)
    assert out == ["200"], out  # the stream in flight finished
    assert _wait_exit(p.proc) == 0
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and h2_upstream.stats()["conns_open"]:
        time.sleep(0.02)
    st = h2_upstream.stats()
    assert st["goaways_received"] >= 1 and st["conns_open"] == 0, st
