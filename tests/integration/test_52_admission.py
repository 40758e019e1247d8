# SPDX-License-Identifier: Apache-2.0
"""52: admission control. Per upstream at most max_requests are in flight, up to max_pending
more wait in a FIFO queue, and the rest are refused at once with 503 queue_full; a request that
waited longer than queue_timeout gets 503 queue_timeout; both carry Retry-After: 1 and the app
never sees them. A client that goes away while queued leaves the queue at once. Per-route limits
apply on top of the upstream's, and a listener's max_connections leaves extra connections in the
kernel backlog until a slot frees. Every test runs one worker: limits are split over workers."""

import socket
import struct
import threading
import time

import pytest

from helpers import (HttpConn, build_request, default_config, free_port, http, metrics,
                     pattern, wait_for)

PENDING = "remora_upstream_pending_requests"
IN_FLIGHT = "remora_upstream_requests_in_flight"
LIMIT = "remora_upstream_concurrency_limit"
REJECTED = "remora_requests_rejected_total"
QUEUE_WAIT = "remora_queue_wait_duration_seconds"


def admission_proxy(remora, upstream, max_requests, max_pending=None, queue_timeout=None,
                    **extra):
    """remora, one worker, upstream "app" with these admission limits (None: the default)."""
    opts = {"max_requests": max_requests}
    if max_pending is not None:
        opts["max_pending"] = max_pending
    if queue_timeout is not None:
        opts["queue_timeout"] = queue_timeout
    opts.update(extra)
    return remora(upstream, workers=1, upstream_opts=opts)


def gauge(p, name, upstream="app"):
    """The one sample of an {upstream} gauge; None when remora does not export it."""
    return metrics(p.admin_port).value(name, upstream=upstream)


def rejected(m, reason, route="default"):
    return m.value(REJECTED, default=0, route=route, reason=reason)


def requests_total(m, code, route="default"):
    return m.value("remora_requests_total", default=0, route=route, code=code)


def wait_gauges(p, in_flight, pending, timeout=2.0):
    """Waits until remora reports exactly in_flight and pending for "app"; returns the last
    (in_flight, pending) seen."""
    last = [None]

    def reached():
        m = metrics(p.admin_port)
        last[0] = (m.value(IN_FLIGHT, upstream="app"), m.value(PENDING, upstream="app"))
        return last[0] == (in_flight, pending)

    wait_for(reached, timeout=timeout, interval=0.02)
    return last[0]


def wait_upstream_in_flight(upstream, n, timeout=3.0):
    got = wait_for(lambda: upstream.stats()["in_flight"] == n, timeout=timeout)
    assert got, "the upstream never had %d requests in flight: %r" % (n, upstream.stats())


class Volley:
    """One GET per target, each on its own connection, connected first and then sent together
    (released by a barrier). join() returns, per target, (Response, seconds from the first send
    to this response) or raises if a client failed."""

    def __init__(self, port, targets, timeout=15.0):
        self.results = [None] * len(targets)
        self.sent = [None] * len(targets)
        self._barrier = threading.Barrier(len(targets) + 1)
        self._threads = [threading.Thread(target=self._one, args=(port, i, t, timeout),
                                          daemon=True) for i, t in enumerate(targets)]
        for t in self._threads:
            t.start()
        self._barrier.wait(10)

    def _one(self, port, i, target, timeout):
        c = None
        try:
            c = HttpConn(port, timeout=timeout)
        except OSError as e:
            self.results[i] = e
        try:
            self._barrier.wait(10)
            if c is None:
                return
            self.sent[i] = time.monotonic()
            c.request("GET", target)
            r = c.read_response()
            self.results[i] = (r, time.monotonic())
        except Exception as e:  # noqa: BLE001 - reported by the test
            self.results[i] = e
        finally:
            if c is not None:
                c.close()

    def join(self, timeout=20.0):
        end = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, end - time.monotonic()))
        assert not any(t.is_alive() for t in self._threads), "clients still waiting after %.0fs" \
            % timeout
        errors = [x for x in self.results if not isinstance(x, tuple)]
        assert not errors, "clients failed: %r" % errors
        t0 = min(self.sent)
        return [(r, t - t0) for r, t in self.results]


class Background:
    """One GET on its own connection in a thread; .result is (Response, seconds) or the
    exception."""

    def __init__(self, port, target, timeout=15.0):
        self.result = None
        self._t = threading.Thread(target=self._run, args=(port, target, timeout), daemon=True)
        self._t.start()

    def _run(self, port, target, timeout):
        t0 = time.monotonic()
        try:
            r = http(port, "GET", target, timeout=timeout)
            self.result = (r, time.monotonic() - t0)
        except Exception as e:  # noqa: BLE001 - reported by the test
            self.result = e

    def join(self, timeout=15.0):
        self._t.join(timeout)
        assert not self._t.is_alive(), "request still running after %.0fs" % timeout
        assert isinstance(self.result, tuple), self.result
        return self.result


def assert_rejected(r, reason):
    """A refusal by admission: 503, x-remora-error reason, Retry-After: 1, framed body."""
    assert r.status == 503, (r, r.body)
    assert r.header("x-remora-error") == reason, r.headers
    assert r.header("retry-after") == "1", r.headers
    assert r.complete, r
    assert not r.has("x-upstream-conn"), "a refused request reached the app: %r" % r.headers


def keeps_alive(r):
    return "close" not in (r.header("connection") or "").lower()


# ---- queue_full and the queue ----------------------------------------------------------

def test_wave_max_requests_then_queue_then_queue_full(remora, upstream):
    """20 clients at once against max_requests 4, max_pending 8: 4 go to the app, 8 wait, 8 are
    refused at once; the 12 are served in three waves of at most 4."""
    delay = 0.5
    p = admission_proxy(remora, upstream, 4, 8, "10s")
    m0 = metrics(p.admin_port)
    before = upstream.stats(reset_peak=True)["requests"]
    v = Volley(p.port, ["/delay?ms=%d&i=%d" % (delay * 1000, i) for i in range(20)])
    # while the first wave is at the app: 4 in flight, 8 queued
    mid = wait_gauges(p, 4, 8, timeout=delay * 0.8)
    results = v.join()
    assert mid == (4, 8), "in_flight/pending during the first wave: %r" % (mid,)

    ok = sorted(t for r, t in results if r.status == 200)
    refused = [(r, t) for r, t in results if r.status != 200]
    assert len(ok) == 12 and len(refused) == 8, [(r.status, r.header("x-remora-error"), t)
                                                   for r, t in results]
    for r, t in refused:
        assert_rejected(r, "queue_full")
    late = max(t for _, t in refused)
    assert late < min(ok) and late < delay * 0.8, (
        "queue_full came after %.3fs; first 200 at %.3fs" % (late, min(ok)))
    # at most 4 at the app, each for >= delay: the k-th success cannot come before wave k//4
    for i, t in enumerate(ok):
        assert t >= (i // 4 + 1) * delay - 0.05, "success %d at %.3fs: %r" % (i, t, ok)
    assert ok[-1] < 3 * delay + 2.0, ok
    st = upstream.stats()
    assert st["max_in_flight"] == 4, st
    assert st["requests"] - before == 12 + 1, st  # the 12 admitted, plus this stats query

    m = metrics(p.admin_port)
    assert rejected(m, "queue_full") - rejected(m0, "queue_full") == 8, m.series(REJECTED)
    assert rejected(m, "queue_timeout") == rejected(m0, "queue_timeout")
    assert requests_total(m, "2xx") - requests_total(m0, "2xx") == 12
    assert requests_total(m, "5xx") - requests_total(m0, "5xx") == 8
    assert m.value(PENDING, upstream="app") == 0, m.series(PENDING)
    assert m.value(IN_FLIGHT, upstream="app") == 0, m.series(IN_FLIGHT)
    assert m.value(LIMIT, upstream="app") == 4, m.series(LIMIT)
    for fam, typ in ((PENDING, "gauge"), (IN_FLIGHT, "gauge"), (LIMIT, "gauge"),
                     (QUEUE_WAIT, "histogram")):
        assert m.types.get(fam) == typ, (fam, m.types.get(fam))
    assert m.types.get(REJECTED) == "counter", m.types.get(REJECTED)
    # the 8 that waited: 4 for about one delay, 4 for about two
    n = m.value(QUEUE_WAIT + "_count", upstream="app") - \
        m0.value(QUEUE_WAIT + "_count", default=0, upstream="app")
    s = m.value(QUEUE_WAIT + "_sum", upstream="app") - \
        m0.value(QUEUE_WAIT + "_sum", default=0, upstream="app")
    assert n >= 8, n
    assert s >= 4 * (delay - 0.1) + 4 * (2 * delay - 0.1), s


def test_queue_is_fifo(remora, upstream):
    p = admission_proxy(remora, upstream, 1, 8, "10s")
    holder = Background(p.port, "/delay?ms=1500")
    wait_upstream_in_flight(upstream, 1)
    order = []
    lock = threading.Lock()
    threads = []

    def one(i):
        r = http(p.port, "GET", "/delay?ms=50&i=%d" % i, timeout=10)
        with lock:
            order.append((i, r.status))

    for i in range(4):
        t = threading.Thread(target=one, args=(i,), daemon=True)
        t.start()
        threads.append(t)
        got = wait_gauges(p, 1, i + 1)
        assert got == (1, i + 1), "after queueing %d: in_flight/pending %r" % (i + 1, got)
    for t in threads:
        t.join(10)
    assert holder.join()[0].status == 200
    assert order == [(0, 200), (1, 200), (2, 200), (3, 200)], order


def test_max_pending_zero_refuses_beyond_max_requests(remora, upstream):
    p = admission_proxy(remora, upstream, 2, 0, "10s")
    holders = [Background(p.port, "/delay?ms=1500&h=%d" % i) for i in range(2)]
    wait_upstream_in_flight(upstream, 2)
    before = upstream.stats()["requests"]
    t0 = time.monotonic()
    r = http(p.port, "GET", "/echo?third")
    took = time.monotonic() - t0
    assert_rejected(r, "queue_full")
    assert took < 0.5, "queue_full took %.3fs with max_pending 0" % took
    assert upstream.stats()["requests"] - before == 1  # only that stats query
    for h in holders:
        assert h.join()[0].status == 200
    assert http(p.port, "GET", "/echo?after").status == 200
    m = metrics(p.admin_port)
    assert rejected(m, "queue_full") == 1, m.series(REJECTED)
    assert m.value(LIMIT, upstream="app") == 2, m.series(LIMIT)
    # the access log names who ended it (R: resource limit, Q: in the queue); DESIGN.md
    logs = [e for e in p.access_logs(at_least=4) if e.get("path") == "/echo?third"]
    assert len(logs) == 1 and (logs[0]["status"], logs[0]["termination"]) == (503, "RQ"), logs


def test_queue_full_keeps_connection_after_get(remora, upstream):
    """A refused GET was read whole: the connection stays open and serves the next request
    once a slot is free."""
    p = admission_proxy(remora, upstream, 1, 0)
    holder = Background(p.port, "/delay?ms=800")
    wait_upstream_in_flight(upstream, 1)
    with HttpConn(p.port, timeout=5) as c:
        c.request("GET", "/echo?first")
        r = c.read_response()
        assert_rejected(r, "queue_full")
        assert keeps_alive(r), r.headers
        assert holder.join()[0].status == 200
        c.request("GET", "/echo?second")
        r2 = c.read_response()
        assert r2.status == 200 and r2.json()["path"] == "/echo?second", r2
        assert r2.header("x-upstream-conn") is not None


def test_queue_full_closes_connection_with_unread_body(remora, upstream):
    """A refused POST whose body has not arrived cannot be skipped: remora answers and closes."""
    p = admission_proxy(remora, upstream, 1, 0)
    holder = Background(p.port, "/delay?ms=800")
    wait_upstream_in_flight(upstream, 1)
    before = upstream.stats()["requests"]
    with HttpConn(p.port, timeout=5) as c:
        c.send(build_request("POST", "/upload", headers=[("Content-Length", str(4 << 20))]))
        c.send(pattern(0, 65536))
        r = c.read_response()
        assert_rejected(r, "queue_full")
        assert (r.header("connection") or "").lower() == "close", r.headers
        assert c.is_closed(wait=2.0), "connection left open after a 503 with an unread body"
    assert holder.join()[0].status == 200
    assert upstream.stats()["requests"] - before == 1  # only that stats query


@pytest.mark.parametrize("raw", [
    b"GET /echo HTTP/1.0\r\nHost: x\r\n\r\n",
    b"GET /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
], ids=["http10", "connection_close"])
def test_refusal_honours_connection_close(remora, upstream, raw):
    """A client that asked for no keep-alive (HTTP/1.0 without keep-alive, or Connection:
    close) gets its 503 with Connection: close and then EOF (RFC 9112 9.3, 9.6)."""
    p = admission_proxy(remora, upstream, 1, 0)
    holder = Background(p.port, "/delay?ms=1000")
    wait_upstream_in_flight(upstream, 1)
    with HttpConn(p.port, timeout=5) as c:
        c.send(raw)
        r = c.read_response()
        assert_rejected(r, "queue_full")
        assert (r.header("connection") or "").lower() == "close", r.headers
        assert c.is_closed(wait=0.5), "connection left open after a 503 to %r" % raw
    assert holder.join()[0].status == 200


def test_per_route_limits(remora, upstream):
    """Route "slow" allows one request and no queue; the upstream and other routes have room."""
    routes = [
        {"name": "slow", "match": {"path_prefix": "/delay"}, "upstream": "app", "timeout": "15s",
         "max_requests": 1, "max_pending": 0},
        {"name": "default", "match": {"path_prefix": "/"}, "upstream": "app", "timeout": "15s"},
    ]
    p = remora(upstream, workers=1, routes=routes,
               upstream_opts={"max_requests": 64, "max_pending": 64})
    holder = Background(p.port, "/delay?ms=1000")
    wait_upstream_in_flight(upstream, 1)
    r = http(p.port, "GET", "/delay?ms=10")
    assert_rejected(r, "queue_full")
    other = http(p.port, "GET", "/echo")
    assert other.status == 200, other
    assert holder.join()[0].status == 200
    assert http(p.port, "GET", "/delay?ms=10").status == 200
    m = metrics(p.admin_port)
    assert rejected(m, "queue_full", route="slow") == 1, m.series(REJECTED)
    assert rejected(m, "queue_full", route="default") == 0, m.series(REJECTED)
    assert m.value(LIMIT, upstream="app") == 64, m.series(LIMIT)


@pytest.mark.parametrize("close", [False, True])
def test_upstream_max_connections_caps_concurrency(remora, upstream, close):
    """HTTP/1: a request in flight holds an upconn, so max_connections 2 under max_requests 8
    means 2 at the app and the rest queued, never 503 upstream_overflow; also when the app
    closes every upconn after its response (close=True)."""
    p = admission_proxy(remora, upstream, 8, 8, "10s", max_connections=2)
    upstream.stats(reset_peak=True)
    target = "/delay?ms=300" + ("&close=1" if close else "")
    results = Volley(p.port, [target + "&i=%d" % i for i in range(6)]).join()
    got = [(r.status, r.header("x-remora-error")) for r, _ in results]
    assert got == [(200, None)] * 6, got
    ok = sorted(t for _, t in results)
    for i, t in enumerate(ok):
        assert t >= (i // 2 + 1) * 0.3 - 0.05, ok
    assert upstream.stats()["max_in_flight"] == 2
    m = metrics(p.admin_port)
    assert m.value(LIMIT, upstream="app") == 2, m.series(LIMIT)
    assert (m.value(IN_FLIGHT, upstream="app"), m.value(PENDING, upstream="app")) == (0, 0)


def test_slot_comes_back_however_the_request_ends(remora, upstream):
    """max_requests 1 and no queue, so a slot that leaked shows as 503 queue_full on the next
    request: after app errors, an upstream timeout, a refused connect, and clients that reset
    before, during or after the app answered."""
    dead = free_port()
    adm = {"connect_timeout": "1s", "idle_timeout": "2s", "max_connections": 16,
           "max_requests": 1, "max_pending": 0}
    p = remora(workers=1, upstreams=[
        dict(adm, name="app", endpoints=[upstream.addr]),
        dict(adm, name="dead", endpoints=["127.0.0.1:%d" % dead])],
        routes=[{"name": "dead", "match": {"path_prefix": "/dead/"}, "upstream": "dead",
                 "timeout": "5s"},
                {"name": "default", "match": {"path_prefix": "/"}, "upstream": "app",
                 "timeout": "500ms"}])

    def reset_after(raw, wait):
        c = HttpConn(p.port, timeout=5)
        c.send(raw)
        wait(c)
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        c.close()

    def sleep(c):
        time.sleep(0.2)

    def head_and_some(c):
        assert c.read_head().status == 200
        c.sock.recv(1000)

    def get(target, status, error):
        def run():
            r = http(p.port, "GET", target)
            assert (r.status, r.header("x-remora-error")) == (status, error), (target, r)
        return run

    cases = [
        ("504 upstream_timeout", get("/delay?ms=1500", 504, "upstream_timeout")),
        ("502 upstream_reset", get("/reset?rst=1", 502, "upstream_reset")),
        ("502 bad_response", get("/malformed?kind=garbage", 502, "bad_response")),
        ("500 from the app", get("/status/500", 500, None)),
        ("502 connect_refused", get("/dead/x", 502, "connect_refused")),
        ("200 cut short", lambda: http(p.port, "GET", "/close-mid?n=100000&send=10")),
        ("reset while at the app",
         lambda: reset_after(build_request("GET", "/delay?ms=1000"), sleep)),
        ("reset mid response",
         lambda: reset_after(build_request("GET", "/bytes?n=%d" % (50 << 20)), head_and_some)),
        ("reset mid request body",
         lambda: reset_after(build_request("POST", "/upload",
                                           headers=[("Content-Length", "1000000")])
                             + pattern(0, 1000), sleep)),
    ]
    for what, run in cases:
        run()
        for name in ("app", "dead"):
            got = wait_for(lambda: gauge(p, IN_FLIGHT, name) == 0, timeout=1.0)
            assert got, "%s: in_flight{upstream=%s} still %r" % (what, name,
                                                                  gauge(p, IN_FLIGHT, name))
        r = http(p.port, "GET", "/echo?after=" + what.replace(" ", "_"))
        assert r.status == 200, (what, r, r.headers)
    m = metrics(p.admin_port)
    assert m.total(REJECTED) == 0, m.series(REJECTED)


# ---- queue_timeout ---------------------------------------------------------------------------

def test_queue_timeout(remora, upstream):
    """One request holds the only slot for 1.5 s; three queued ones give up after 300 ms."""
    p = admission_proxy(remora, upstream, 1, 5, "300ms")
    holder = Background(p.port, "/delay?ms=1500")
    wait_upstream_in_flight(upstream, 1)
    before = upstream.stats()["requests"]
    results = Volley(p.port, ["/echo?q=%d" % i for i in range(3)]).join()
    for r, t in results:
        assert_rejected(r, "queue_timeout")
        assert keeps_alive(r), r.headers
        assert 0.25 <= t <= 1.2, "queue_timeout 300ms answered after %.3fs" % t
    first, took = holder.join()
    assert first.status == 200 and first.body == b"ok", first
    assert took >= 1.5
    assert upstream.stats()["requests"] - before == 1  # only that stats query
    m = metrics(p.admin_port)
    assert rejected(m, "queue_timeout") == 3, m.series(REJECTED)
    assert rejected(m, "queue_full") == 0, m.series(REJECTED)
    assert requests_total(m, "5xx") == 3 and requests_total(m, "2xx") == 1
    assert m.value(QUEUE_WAIT + "_count", default=0, upstream="app") >= 3, \
        m.series(QUEUE_WAIT + "_count")
    assert m.value(QUEUE_WAIT + "_sum", default=0, upstream="app") >= 3 * 0.25, \
        m.series(QUEUE_WAIT + "_sum")
    assert (m.value(IN_FLIGHT, upstream="app"), m.value(PENDING, upstream="app")) == (0, 0)
    logs = [e for e in p.access_logs(at_least=4) if (e.get("path") or "").startswith("/echo?q=")]
    assert sorted((e["status"], e["termination"]) for e in logs) == [(503, "sQ")] * 3, logs


def test_queue_timeout_defaults_to_connect_timeout(remora, upstream):
    p = admission_proxy(remora, upstream, 1, 5, None, connect_timeout="400ms")
    holder = Background(p.port, "/delay?ms=1500")
    wait_upstream_in_flight(upstream, 1)
    t0 = time.monotonic()
    r = http(p.port, "GET", "/echo")
    took = time.monotonic() - t0
    assert_rejected(r, "queue_timeout")
    assert 0.35 <= took <= 1.2, "queue_timeout (connect_timeout 400ms) after %.3fs" % took
    assert holder.join()[0].status == 200


# ---- clients leaving the queue ----------------------------------------------------------

@pytest.mark.parametrize("how", ["close", "reset"])
def test_client_disconnect_leaves_queue(remora, upstream, how):
    """Five queued clients go away, with a plain close (FIN, as a client timing out does) or
    with a reset; either way they leave the queue at once and never reach the app."""
    p = admission_proxy(remora, upstream, 1, None, "10s")
    holder = Background(p.port, "/delay?ms=3000")
    wait_upstream_in_flight(upstream, 1)
    before = upstream.stats()["requests"]
    conns = []
    for i in range(5):
        c = HttpConn(p.port, timeout=5)
        c.request("GET", "/echo?queued=%d" % i)
        conns.append(c)
    got = wait_gauges(p, 1, 5)
    assert got == (1, 5), "in_flight/pending with 5 queued: %r" % (got,)
    for c in conns:
        if how == "reset":
            c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        c.close()
    t0 = time.monotonic()
    got = wait_gauges(p, 1, 0, timeout=1.0)
    assert got == (1, 0), "pending %r 1 s after the queued clients left" % (got,)
    print("queue emptied %.3fs after the clients closed" % (time.monotonic() - t0))
    first, _ = holder.join()
    assert first.status == 200 and first.body == b"ok", first
    t0 = time.monotonic()
    r = http(p.port, "GET", "/echo?after")
    assert r.status == 200 and time.monotonic() - t0 < 1.0, r
    # the app saw the request after, this stats query and none of the five
    assert upstream.stats()["requests"] - before == 2
    assert gauge(p, PENDING) == 0 and gauge(p, IN_FLIGHT) == 0


# ---- listener max_connections ------------------------------------------------------------

def test_listener_max_connections_leaves_extra_in_backlog(remora, upstream):
    cfg = default_config(free_port(), free_port(), [upstream.addr], workers=1)
    cfg["listeners"][0]["max_connections"] = 4
    p = remora(config=cfg)
    conns = [HttpConn(p.port, timeout=5) for _ in range(4)]
    try:
        for i, c in enumerate(conns):
            c.request("GET", "/echo?c=%d" % i)
            assert c.read_response().status == 200
        # TCP completes in the kernel backlog, but remora neither answers nor closes
        with HttpConn(p.port, timeout=5) as fifth:
            fifth.request("GET", "/echo?fifth")
            fifth.sock.settimeout(0.5)
            try:
                d = fifth.sock.recv(65536)
                assert False, "5th connection answered while 4 were open: %r" % d[:200]
            except socket.timeout:
                pass
            # the admin listener is not limited by the data listener
            assert metrics(p.admin_port) is not None
            conns[0].close()
            t0 = time.monotonic()
            fifth.sock.settimeout(2.0)
            r = fifth.read_response()
            took = time.monotonic() - t0
            assert r.status == 200 and r.json()["path"] == "/echo?fifth", r
            assert took < 2.0, took
            print("5th connection served %.3fs after a slot freed" % took)
        for i, c in enumerate(conns[1:]):
            c.request("GET", "/echo?again=%d" % i)
            assert c.read_response().status == 200
    finally:
        for c in conns:
            c.close()


def test_listener_max_connections_serves_everyone_in_turn(remora, upstream):
    """12 clients at once through a listener capped at 4 connections: every one is served,
    never more than 4 at a time (each request holds its connection for 200 ms)."""
    cfg = default_config(free_port(), free_port(), [upstream.addr], workers=1)
    cfg["listeners"][0]["max_connections"] = 4
    p = remora(config=cfg)
    upstream.stats(reset_peak=True)
    results = Volley(p.port, ["/delay?ms=200&i=%d" % i for i in range(12)]).join()
    assert [r.status for r, _ in results] == [200] * 12, results
    done = sorted(t for _, t in results)
    assert done[-1] >= 3 * 0.2 - 0.05, done
    assert upstream.stats()["max_in_flight"] <= 4
