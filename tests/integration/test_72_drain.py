# SPDX-License-Identifier: Apache-2.0
"""72: graceful drain (SIGTERM, SIGINT, admin POST /drain). /readyz answers 503 "draining" and
remora_draining is 1 at once; the listeners keep accepting for drain.delay, then close (new
connections refused); HTTP/1.1 idle keep-alive conns close at once and every response from then
on carries Connection: close; HTTP/2 conns get GOAWAY 2^31-1, then the real last stream id about
a second later; what is in flight (slow responses, 100 MiB downloads, gRPC streams, requests
waiting in the admission queue) completes, and remora exits 0 once no conn is left, with one
summary line. At drain.timeout what is left is cut (termination PK, error drain_timeout,
remora_drain_cut_total) and the exit code is 1; a second signal cuts at once."""

import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time

import pytest

from helpers import (MIB, HttpConn, Truncated, build_request, default_config, free_port, http,
                     http_get_body, metrics, parse_wrk, pattern_sha256, wait_for)

SUMMARY_RE = re.compile(r"^drain finished in ([0-9.]+) s: (\d+) requests completed during it, "
                        r"(\d+) cut$")


# ---- helpers ------------------------------------------------------------------------------

def drain_config(endpoints, delay=None, timeout=None, **kw):
    """helpers.default_config on two free ports, plus a drain section (None: the default)."""
    port = free_port()
    admin_port = free_port()
    while admin_port == port:
        admin_port = free_port()
    cfg = default_config(port, admin_port, endpoints, **kw)
    drain = {}
    if delay is not None:
        drain["delay"] = delay
    if timeout is not None:
        drain["timeout"] = timeout
    if drain:
        cfg["drain"] = drain
    return cfg


def drain_proxy(remora, upstream, delay=None, timeout=None, **kw):
    """remora (the conftest factory) in front of upstream with drain.delay/drain.timeout."""
    return remora(config=drain_config([upstream.addr], delay=delay, timeout=timeout, **kw))


def send_signal(p, sig=signal.SIGTERM):
    """Signals remora by its PID; returns the monotonic time it was sent."""
    t = time.monotonic()
    os.kill(p.pid, sig)
    return t


def wait_exit(p, timeout):
    """remora's exit code, waiting at most timeout seconds (fails the test after that)."""
    try:
        return p.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        pytest.fail("remora still running %.1f s after the signal; stderr:\n%s"
                    % (timeout, p.stderr()[-4000:]))


def wait_draining(p, timeout=2.0):
    """Waits until /readyz answers 503 "draining" (the drain has started); fails otherwise."""
    got = wait_for(lambda: http_get_body(p.admin_port, "/readyz") == (503, b"draining\n"),
                   timeout=timeout)
    assert got, "readyz never said draining: %r" % (http_get_body(p.admin_port, "/readyz"),)


def summary(p):
    """(seconds, completed, cut) of the one "drain finished" log line."""
    found = [e["msg"] for e in p.log_lines() if str(e.get("msg", "")).startswith("drain finished")]
    assert len(found) == 1, "want one drain summary line, got %r" % found
    m = SUMMARY_RE.match(found[0])
    assert m, found[0]
    return float(m.group(1)), int(m.group(2)), int(m.group(3))


def connect_refused(port):
    """True if a TCP connect to port is refused (ECONNREFUSED); False if it is accepted."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(1.0)
    try:
        s.connect(("127.0.0.1", port))
        return False
    except ConnectionRefusedError:
        return True
    finally:
        s.close()


def idle_upconns(p):
    return metrics(p.admin_port).value("remora_upstream_connections", upstream="app",
                                       state="idle")


class Download:
    """GET target on its own conn in a thread: reads the head and first bytes at once (so the
    response is in flight), then, once go() is called, the rest into a sha256. .result is
    (Response, sha256 hex, eof after the body) or the exception."""

    def __init__(self, port, target, first=MIB, timeout=30.0):
        self.result = None
        self.first = first
        self.head = threading.Event()
        self._go = threading.Event()
        self.c = HttpConn(port, timeout=timeout)
        self.c.request("GET", target)
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        h = hashlib.sha256()
        try:
            r = self.c.read_head()
            # first bytes read now, the rest after go(): remora holds the response mid-body
            want = self.first
            while want > 0:
                if not self.c.buf and not self.c._fill():
                    break
                k = min(want, len(self.c.buf))
                h.update(bytes(self.c.buf[:k]))
                del self.c.buf[:k]
                want -= k
            self.head.set()
            self._go.wait(20)
            n = int(r.header("content-length")) - self.first
            got = self.c._take(n, h.update)
            r.complete = got == n
            r.body_len = self.first + got
            self.result = (r, h.hexdigest(), self.c.is_closed(2.0))
        except Exception as e:  # noqa: BLE001 - reported by the test
            self.result = e
            self.head.set()
        finally:
            self.c.close()

    def go(self):
        self._go.set()

    def join(self, timeout=30.0):
        self._t.join(timeout)
        assert not self._t.is_alive(), "download still running after %.0f s" % timeout
        assert isinstance(self.result, tuple), self.result
        return self.result


class Background:
    """One request on its own conn in a thread; .result is (Response, eof after it) or the
    exception."""

    def __init__(self, port, target, timeout=20.0):
        self.result = None
        self.c = HttpConn(port, timeout=timeout)
        self.c.request("GET", target)
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        try:
            r = self.c.read_response()
            self.result = (r, self.c.is_closed(2.0))
        except Exception as e:  # noqa: BLE001 - reported by the test
            self.result = e
        finally:
            self.c.close()

    def join(self, timeout=20.0):
        self._t.join(timeout)
        assert not self._t.is_alive(), "request still running after %.0f s" % timeout
        assert isinstance(self.result, tuple), self.result
        return self.result

    def join_cut(self, timeout=5.0):
        """The conn ended without any response (what a cut request gets)."""
        self._t.join(timeout)
        assert not self._t.is_alive(), "request still running after %.0f s" % timeout
        assert isinstance(self.result, Truncated), "not cut: %r" % (self.result,)


def conn_close(r):
    return "close" in (r.header("connection") or "").lower()


# ---- HTTP/1.1 ----------------------------------------------------------------------------

def test_h1_sigterm_in_flight_completes(remora, upstream):
    """SIGTERM with a 3 s response and a 100 MiB download in flight: both complete intact (the
    slow one with Connection: close), an idle keep-alive conn is closed at once, a request
    finished after the drain began on an open keep-alive conn and a request on a conn opened
    during drain.delay get Connection: close, idle upconns close, connections after
    drain.delay are refused, and remora exits 0 well before drain.timeout with a summary line
    counting the 4 requests."""
    size = 100 * MIB
    p = drain_proxy(remora, upstream, delay="1s", timeout="20s", workers=2)
    port = p.port

    idle = HttpConn(port)  # served once, then idle
    idle.request("GET", "/echo?idle")
    r = idle.read_response()
    assert r.status == 200 and r.complete and not conn_close(r), r
    late = HttpConn(port)  # served once, then the head of a second request half sent
    late.request("GET", "/echo?late-1")
    r = late.read_response()
    assert r.status == 200 and r.complete and not conn_close(r), r
    assert wait_for(lambda: idle_upconns(p) >= 1, 2.0), "no idle upconn before the drain"
    second = build_request("GET", "/echo?late-2")
    late.send(second[:20])

    slow = Background(port, "/delay?ms=3000")
    dl = Download(port, "/bytes?n=%d" % size)
    assert dl.head.wait(5) and not isinstance(dl.result, Exception), dl.result
    assert wait_for(lambda: upstream.stats()["in_flight"] == 2, 3.0), upstream.stats()
    time.sleep(0.1)  # the half head has long been read by remora

    t0 = send_signal(p)
    # the idle keep-alive conn: EOF at once, no bytes
    assert idle.is_closed(1.0), "remora did not close the idle keep-alive conn within 1 s"
    t_idle = time.monotonic() - t0
    idle.close()
    wait_draining(p)
    assert metrics(p.admin_port).value("remora_draining") == 1
    assert wait_for(lambda: idle_upconns(p) == 0, 1.0), "idle upconns survived the drain"

    # the rest of the half-sent head: answered, with Connection: close, then EOF
    late.send(second[20:])
    r = late.read_response()
    assert r.status == 200 and r.complete and conn_close(r), r
    assert late.is_closed(1.0), "conn not closed after its Connection: close response"
    late.close()

    # a conn opened during drain.delay: served, with Connection: close
    with HttpConn(port) as c:
        c.request("GET", "/echo?new")
        r = c.read_response()
        assert r.status == 200 and r.complete and conn_close(r), r
        assert c.is_closed(1.0)
    assert time.monotonic() - t0 < 1.0, "the checks above ran past drain.delay"
    time.sleep(0.1)
    assert idle_upconns(p) == 0, "an upconn released during the drain went idle"

    # after drain.delay the listeners are closed: refused, not accepted and reset
    assert wait_for(lambda: connect_refused(port), 2.0, 0.05), "listener still open"
    t_refused = time.monotonic() - t0
    assert t_refused >= 0.9, "listener closed %.2f s after SIGTERM, before drain.delay" \
        % t_refused
    assert p.alive(), "remora exited with responses in flight"
    assert http_get_body(p.admin_port, "/readyz") == (503, b"draining\n")

    dl.go()
    r, sha, eof = dl.join()
    assert r.status == 200 and r.complete and r.body_len == size, r
    assert sha == pattern_sha256(size), "the 100 MiB body is corrupt"
    assert eof, "conn not closed after the download"
    r, eof = slow.join()
    assert r.status == 200 and r.complete and r.body == b"ok" and conn_close(r), r
    assert eof

    rc = wait_exit(p, 5.0)
    elapsed = time.monotonic() - t0
    assert rc == 0, p.stderr()[-3000:]
    secs, done, cut = summary(p)
    print("\ndrain: idle conn closed after %.3f s, listener refused after %.2f s, exit after "
          "%.2f s; remora: %.3f s, %d completed, %d cut" % (t_idle, t_refused, elapsed, secs,
                                                          done, cut))
    assert (done, cut) == (4, 0)
    assert 2.0 <= secs <= elapsed + 0.05, (secs, elapsed)
    assert elapsed < 10.0  # drain.timeout is 20 s: nothing waited for it


def test_h1_silent_conn_closed_at_once(remora, upstream):
    """A conn accepted before the drain that never sent a byte is as idle as a conn gets: it is
    closed at once (it used to hold the drain until drain.timeout), while a conn whose request
    was sent just before SIGTERM is answered; remora exits 0 at once."""
    p = drain_proxy(remora, upstream, timeout="10s")
    silent = HttpConn(p.port)
    assert wait_for(lambda: metrics(p.admin_port).value("remora_downstream_connections") == 1,
                    2.0), "remora never accepted the silent conn"
    busy = HttpConn(p.port)
    # Still in flight when the drain starts (an instant /echo can be answered before the
    # worker hears of the drain on a loaded machine, and then rightly keeps the conn open).
    busy.request("GET", "/delay?ms=300")
    t0 = send_signal(p)
    assert silent.is_closed(1.0), "the silent conn was not closed at the drain"
    silent.close()
    r = busy.read_response()
    assert r.status == 200 and r.complete and conn_close(r), r
    assert busy.is_closed(1.0)
    busy.close()
    rc = wait_exit(p, 3.0)
    elapsed = time.monotonic() - t0
    assert rc == 0, p.stderr()[-3000:]
    assert elapsed < 1.0, "remora waited %.2f s for a conn that never sent anything" % elapsed
    assert summary(p)[1:] == (1, 0)


def test_sigint_drains_like_sigterm(remora, upstream):
    """SIGINT starts the same drain: the request in flight is answered (Connection: close) and
    remora exits 0 once it is done."""
    p = drain_proxy(remora, upstream, timeout="10s")
    slow = Background(p.port, "/delay?ms=1000")
    assert wait_for(lambda: upstream.stats()["in_flight"] == 1, 3.0)
    t0 = send_signal(p, signal.SIGINT)
    wait_draining(p)
    r, eof = slow.join()
    assert r.status == 200 and r.complete and r.body == b"ok" and conn_close(r) and eof, r
    assert wait_exit(p, 3.0) == 0, p.stderr()[-3000:]
    assert time.monotonic() - t0 < 2.0
    assert summary(p)[1:] == (1, 0)
    assert any("received signal %d, draining" % signal.SIGINT == e.get("msg")
               for e in p.log_lines())


# ---- admin: /readyz, remora_draining, POST /drain ----------------------------------------------

def test_admin_post_drain_keeps_running(remora, upstream):
    """GET /drain is 405 and changes nothing; POST /drain answers 202 and drains like SIGTERM
    (readyz 503 "draining", remora_draining 1, the request in flight answered with Connection:
    close, the listener closed after drain.delay) but remora keeps running; POST /drain again is
    202; a later SIGTERM exits at once with 0."""
    p = drain_proxy(remora, upstream, delay="300ms", timeout="10s")
    r = http(p.admin_port, "GET", "/drain")
    assert r.status == 405, r
    assert http_get_body(p.admin_port, "/readyz") == (200, b"ok\n")
    assert metrics(p.admin_port).value("remora_draining") == 0
    assert http(p.port, "GET", "/echo").status == 200

    slow = Background(p.port, "/delay?ms=1000")
    assert wait_for(lambda: upstream.stats()["in_flight"] == 1, 3.0)
    r = http(p.admin_port, "POST", "/drain")
    assert r.status == 202 and r.body == b"draining\n", r
    t0 = time.monotonic()
    assert http_get_body(p.admin_port, "/readyz") == (503, b"draining\n")
    assert metrics(p.admin_port).value("remora_draining") == 1
    r, eof = slow.join()
    assert r.status == 200 and r.complete and conn_close(r) and eof, r
    assert wait_for(lambda: connect_refused(p.port), 2.0, 0.05)
    assert time.monotonic() - t0 >= 0.25

    assert wait_for(lambda: any(str(e.get("msg", "")).startswith("drain finished")
                                for e in p.log_lines()), 3.0)
    assert summary(p)[1:] == (1, 0)
    time.sleep(0.5)
    assert p.alive(), "POST /drain made remora exit"
    assert http_get_body(p.admin_port, "/readyz") == (503, b"draining\n")
    assert http(p.admin_port, "POST", "/drain").status == 202
    assert http(p.admin_port, "GET", "/drain").status == 405

    t1 = send_signal(p)
    assert wait_exit(p, 2.0) == 0, p.stderr()[-3000:]
    assert time.monotonic() - t1 < 0.5
    assert summary(p)[1:] == (1, 0)  # still the one line of the one drain


# ---- HTTP/2 downstream --------------------------------------------------------------------

def wait_goaways(c, n, timeout, times):
    """Pumps c until it has received n GOAWAYs (or EOF, or timeout); times gets the monotonic
    arrival time of each new one."""
    end = time.monotonic() + timeout
    while len(c.goaways) < n and not c.eof:
        left = end - time.monotonic()
        if left <= 0:
            break
        c.pump(left)
        while len(times) < len(c.goaways):
            times.append(time.monotonic())


def test_h2_two_goaways_stream_in_flight_completes(remora, upstream):
    """h2c: at SIGTERM a GOAWAY with last_stream_id 2^31-1 (NO_ERROR) comes at once; a stream
    the client opens before it could see it is still served; about a second later the final
    GOAWAY names the last stream remora took; the stream in flight (/delay) completes with 200,
    then remora closes the conn and, the client closing too, exits 0 at once."""
    from h2util import H2Client, ErrorCodes

    p = drain_proxy(remora, upstream, timeout="10s")
    c = H2Client(p.port, timeout=8.0)
    r = c.get("/echo?first")
    assert r.status == 200 and r.ended, r
    slow = c.request("GET", "/delay?ms=2500")  # stream 3
    assert wait_for(lambda: upstream.stats()["in_flight"] == 1, 3.0)
    times = []
    t0 = send_signal(p)
    wait_goaways(c, 1, 2.0, times)
    assert len(c.goaways) == 1, "no GOAWAY after SIGTERM: %r" % c.goaways
    g = c.goaways[0]
    assert g.last_stream_id == 2 ** 31 - 1 and g.error_code == ErrorCodes.NO_ERROR, g
    assert times[0] - t0 < 0.5, "the shutdown notice took %.2f s" % (times[0] - t0)

    late = c.request("GET", "/echo?after-notice")  # stream 5, sent before the final GOAWAY
    assert late == 5
    r = c.response(late, timeout=3.0)
    assert r.status == 200 and r.ended and r.reset is None, r

    wait_goaways(c, 2, 3.0, times)
    assert len(c.goaways) == 2, "no final GOAWAY: %r" % c.goaways
    g = c.goaways[1]
    assert g.last_stream_id == 5 and g.error_code == ErrorCodes.NO_ERROR, g
    gap = times[1] - times[0]
    assert 0.8 <= gap <= 1.6, "GOAWAYs %.2f s apart" % gap

    r = c.response(slow, timeout=5.0)
    t_done = time.monotonic() - t0
    assert r.status == 200 and r.ended and r.reset is None and r.body == b"ok", r
    assert c.wait_closed(2.0), "remora kept the h2 conn open after its last stream"
    c.close()
    rc = wait_exit(p, 3.0)
    elapsed = time.monotonic() - t0
    assert rc == 0, p.stderr()[-3000:]
    print("\nh2 drain: notice after %.3f s, final GOAWAY %.3f s later, last stream done after "
          "%.3f s, exit after %.3f s" % (times[0] - t0, gap, t_done, elapsed))
    assert summary(p)[1:] == (2, 0)
    # the client closed as soon as remora did: nothing is left to wait for
    assert elapsed - t_done < 0.5, "exit %.2f s after the last stream" % (elapsed - t_done)


def test_h2_idle_conn_gone_when_client_closes(remora, upstream):
    """POST /drain with an idle h2c conn: the two GOAWAYs (2^31-1, then 1, the one stream it
    served), remora closes the conn, and once the client closes too the conn is gone at once:
    remora_downstream_connections 0 within 0.5 s (a lingering h2 conn used to ignore the
    client's FIN and stay 2 s, holding a drain's exit as long)."""
    from h2util import H2Client

    p = drain_proxy(remora, upstream, timeout="10s")
    c = H2Client(p.port)
    r = c.get("/echo")
    assert r.status == 200 and r.ended, r
    assert http(p.admin_port, "POST", "/drain").status == 202
    times = []
    wait_goaways(c, 2, 3.0, times)
    assert [g.last_stream_id for g in c.goaways] == [2 ** 31 - 1, 1], c.goaways
    assert c.wait_closed(1.0), "remora kept the idle h2 conn open after its final GOAWAY"
    c.close()
    gone = wait_for(lambda: metrics(p.admin_port).value("remora_downstream_connections") == 0,
                    0.5, 0.02)
    assert gone, "the conn outlived the client's FIN"
    assert p.alive()


# ---- gRPC -----------------------------------------------------------------------------------

def test_grpc_server_stream_in_flight_completes(remora, tmp_path):
    """A gRPC server-streaming call (grpcio client, h2c to remora, h2c to grpc_app.py) that is
    mid-way (50 MiB, held back by flow control while the client does not read) when SIGTERM
    arrives completes byte for byte with status OK; remora exits 0."""
    grpc = pytest.importorskip("grpc", reason="python3-grpcio is not installed")
    import grpc_app

    app = grpc_app.start(tmp_path)
    ch = None
    try:
        p = remora(config=drain_config([app.addr], timeout="20s",
                                       upstream_opts={"protocol": "h2c"}))
        ch = grpc_app.channel(p.port)
        n, size = 200, 256 * 1024
        call = grpc_app.unary_stream(ch, "ServerStream")(
            json.dumps({"n": n, "size": size}).encode(), timeout=30)
        got = [next(call)]
        t0 = send_signal(p)
        wait_draining(p)
        assert app.stats()["in_flight"] == 1, "the call was not in flight during the drain"
        got += list(call)
        assert call.code() == grpc.StatusCode.OK, call.details()
        assert len(got) == n
        assert got == [grpc_app.stream_message(i, size) for i in range(n)]
        ch.close()
        ch = None
        rc = wait_exit(p, 5.0)
        assert rc == 0, p.stderr()[-3000:]
        print("\ngrpc drain: exit %.2f s after SIGTERM" % (time.monotonic() - t0))
        assert summary(p)[1:] == (1, 0)
        line = [e for e in p.access_logs(1) if e.get("path") == "/test.Echo/ServerStream"]
        assert len(line) == 1 and line[0]["termination"] == "--" \
            and line[0].get("grpc_status") == 0, line
    finally:
        if ch is not None:
            ch.close()
        app.stop()


# ---- admission queue ------------------------------------------------------------------------

def test_queued_requests_all_served(remora, upstream):
    """One worker, max_requests 2, max_pending 8: 10 requests (2 at the app, 8 queued) when
    SIGTERM arrives are all answered 200 (with Connection: close), the app never has more than
    2 at once, none is refused or dropped, and remora exits 0 once the queue is empty."""
    p = drain_proxy(remora, upstream, timeout="20s", workers=1,
                    upstream_opts={"max_requests": 2, "max_pending": 8,
                                  "queue_timeout": "10s"})
    upstream.stats(reset_peak=True)
    clients = [Background(p.port, "/delay?ms=500&i=%d" % i) for i in range(10)]

    def queued():
        m = metrics(p.admin_port)
        return (m.value("remora_upstream_requests_in_flight", upstream="app"),
                m.value("remora_upstream_pending_requests", upstream="app")) == (2, 8)

    assert wait_for(queued, 3.0), "the queue never held 8"
    t0 = send_signal(p)
    results = [b.join() for b in clients]
    for r, eof in results:
        assert r.status == 200 and r.complete and r.body == b"ok" and conn_close(r) and eof, r
    rc = wait_exit(p, 3.0)
    elapsed = time.monotonic() - t0
    assert rc == 0, p.stderr()[-3000:]
    st = upstream.stats()
    assert st["max_in_flight"] <= 2, st
    delays = [e for e in p.access_logs(10) if e["path"].startswith("/delay")]
    assert sorted((e["status"], e["termination"]) for e in delays) == [(200, "--")] * 10
    print("\nqueue drain: 10 requests (8 queued) served, exit %.2f s after SIGTERM" % elapsed)
    assert summary(p)[1:] == (10, 0)


# ---- drain.timeout and the second signal --------------------------------------------------------

def test_drain_timeout_cuts(remora, upstream):
    """drain.timeout 1s: a response not started (/delay?ms=5000) and one mid-body (/drip) are
    cut at ~1 s: the clients see no complete response, the access log says termination PK and
    error drain_timeout, the summary counts 2 cut, and remora exits 1."""
    p = drain_proxy(remora, upstream, timeout="1s")
    slow = Background(p.port, "/delay?ms=5000")
    drip = HttpConn(p.port, timeout=10.0)
    drip.request("GET", "/drip?count=50&size=100&ms=100")
    head = drip.read_head()
    assert head.status == 200 and head.header("transfer-encoding") == "chunked", head
    assert wait_for(lambda: upstream.stats()["in_flight"] == 2, 3.0)
    t0 = send_signal(p)
    rc = wait_exit(p, 4.0)
    elapsed = time.monotonic() - t0
    assert rc == 1, p.stderr()[-3000:]
    assert 0.9 <= elapsed < 2.0, elapsed
    # the /drip body: chunks, then EOF without the last chunk
    rest = drip.read_all(2.0)
    assert not rest.endswith(b"0\r\n\r\n"), "the cut chunked body looks complete"
    drip.close()
    slow.join_cut()
    cut = [e for e in p.access_logs(2) if e["path"].startswith(("/delay", "/drip"))]
    assert len(cut) == 2, cut
    for e in cut:
        assert e["termination"] == "PK" and e["error"] == "drain_timeout", e
    assert summary(p)[1:] == (0, 2)
    assert any("still open after 1000 ms" in str(e.get("msg")) for e in p.log_lines())


def test_drain_timeout_counted_in_metrics(remora, upstream):
    """POST /drain (remora stays up to be scraped) with drain.timeout 1s and /delay?ms=5000 in
    flight: the request is cut at ~1 s and remora_drain_cut_total says 1; a SIGTERM then exits
    with 1, the drain having cut something."""
    p = drain_proxy(remora, upstream, timeout="1s")
    assert metrics(p.admin_port).value("remora_drain_cut_total") == 0
    slow = Background(p.port, "/delay?ms=5000")
    assert wait_for(lambda: upstream.stats()["in_flight"] == 1, 3.0)
    assert http(p.admin_port, "POST", "/drain").status == 202
    t0 = time.monotonic()
    assert wait_for(lambda: metrics(p.admin_port).value("remora_drain_cut_total") == 1, 3.0), \
        metrics(p.admin_port).value("remora_drain_cut_total")
    assert 0.9 <= time.monotonic() - t0 < 2.0
    slow.join_cut()
    (e,) = [e for e in p.access_logs(1) if e["path"].startswith("/delay")]
    assert e["termination"] == "PK" and e["error"] == "drain_timeout", e
    assert p.alive()
    send_signal(p)
    assert wait_exit(p, 2.0) == 1, p.stderr()[-3000:]
    assert summary(p)[1:] == (0, 1)


def test_second_sigterm_cuts_at_once(remora, upstream):
    """A second SIGTERM while a 10 s request is in flight (drain.timeout 20s) cuts it (PK,
    drain_timeout) and remora exits 1 within about a second."""
    p = drain_proxy(remora, upstream, timeout="20s")
    slow = Background(p.port, "/delay?ms=10000")
    assert wait_for(lambda: upstream.stats()["in_flight"] == 1, 3.0)
    send_signal(p)
    wait_draining(p)
    time.sleep(0.3)
    assert p.alive()
    t1 = send_signal(p)
    rc = wait_exit(p, 3.0)
    elapsed = time.monotonic() - t1
    assert rc == 1, p.stderr()[-3000:]
    assert elapsed < 1.0, "exit %.2f s after the second SIGTERM" % elapsed
    slow.join_cut()
    (e,) = [e for e in p.access_logs(1) if e["path"].startswith("/delay")]
    assert e["termination"] == "PK" and e["error"] == "drain_timeout", e
    assert summary(p)[1:] == (0, 1)


# ---- under load -----------------------------------------------------------------------------



@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk not installed (apt-get install wrk)")
def test_wrk_sigterm_under_load(remora, upstream):
    """wrk -t2 -c64 -d4s, SIGTERM after 1 s, drain.delay 1s: no non-2xx, no cut or truncated
    response, remora exits 0 about drain.delay after the signal.

    How the errors are counted. wrk's "read" errors mix two things: a response cut short (EOF
    or a reset before its framing ended) and a request written on a keep-alive conn that remora
    had just closed as idle when the drain began (EOF before any byte of a response; RFC 9112
    9.3.1: a client retries that itself, wrk does not). remora's own log tells them apart:
    every request remora began is in its access log, so (1) all lines are 200 with termination
    "--" (nothing cut), (2) their number equals wrk's completed requests (everything remora
    answered arrived whole: wrk counts a response only once its framing completed), and so
    (3) each read error is a request remora never read: at most one per conn open at the
    SIGTERM (64), since conns opened during the drain are closed only after a response with
    Connection: close, which wrk follows by reconnecting, not as an error. Refused connects
    after the listeners close land in "connect" or, when the refusal shows up only after
    connect() returned, in "write" (wrk writes first): both are expected and only shown."""
    p = drain_proxy(remora, upstream, delay="1s", timeout="10s", workers=2)
    wrk = subprocess.Popen(["wrk", "-t2", "-c64", "-d4s", "--timeout", "5s",
                            "http://127.0.0.1:%d/bytes?n=1024" % p.port],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        time.sleep(1.0)
        assert wrk.poll() is None, wrk.communicate()
        t0 = send_signal(p)
        rc = wait_exit(p, 8.0)
        elapsed = time.monotonic() - t0
        out, err = wrk.communicate(timeout=15)
    finally:
        if wrk.poll() is None:
            wrk.kill()
            wrk.wait(5)
    text = out.decode()
    res = parse_wrk(text)
    secs, done, cut = summary(p)
    print("\n---- wrk during the drain ----\n%s\ndrain: exit %.3f s after SIGTERM (remora: %.3f s, "
          "%d completed during it, %d cut); wrk read errors (requests on conns closed idle): %d"
          % (text, elapsed, secs, done, cut, res["read"]))
    assert wrk.returncode == 0, err.decode()
    assert rc == 0, p.stderr()[-3000:]
    assert res["requests"] and res["requests"] > 1000, text
    assert res["non2xx"] == 0 and res["timeout"] == 0, text
    acc = p.access_logs()
    bad = [e for e in acc if (e["status"], e["termination"]) != (200, "--")]
    assert not bad, bad[:5]
    assert len(acc) == res["requests"], "remora answered %d, wrk completed %d" \
        % (len(acc), res["requests"])
    assert res["read"] <= 64, text
    assert res["connect"] + res["write"] > 0, "no refused connect after the listeners closed"
    assert cut == 0 and done > 64
    assert 0.95 <= elapsed < 2.5, elapsed  # drain.delay, then the last responses


@pytest.mark.skipif(shutil.which("h2load") is None,
                    reason="h2load not installed (apt-get install nghttp2-client)")
def test_h2load_sigterm_under_load(remora, upstream):
    """h2load -c16 -m10 -D 4 (h2c), SIGTERM after 1 s, drain.delay 1s: no non-2xx, no stream
    cut or timed out, every response h2load counts is in remora's access log as 200 "--" and
    the other way round, and remora exits 0 right after drain.delay (h2load closes each conn
    once its streams are done, so nothing is left when the listeners close).

    How the failures are counted. h2load keeps -m streams open per conn and submits a new one
    as each ends. A request it had queued but not yet written when the GOAWAY notice arrived is
    withdrawn by its nghttp2 session (a client that received any GOAWAY sends no new HEADERS:
    NGHTTP2_ERR_START_STREAM_NOT_ALLOWED, the stream closed as REFUSED_STREAM) and h2load
    counts it "failed" and "errored"; it never reached remora (RFC 9113 8.7: safe to retry;
    h2load does not retry, and then prints "Process Request Failure" for that client). So:
    every failure is such an error, not a status (failed == errored, 4xx = 5xx = 0), none timed
    out, at most -m per conn (16 x 10), and remora's access log holds exactly the succeeded
    ones, all 200 with termination "--" (a stream remora cut or reset would be logged with its
    termination code and be missing from h2load's successes)."""
    p = drain_proxy(remora, upstream, delay="1s", timeout="10s", workers=2)
    h2 = subprocess.Popen(["h2load", "-c16", "-m10", "-D", "4",
                           "http://127.0.0.1:%d/bytes?n=1024" % p.port],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        time.sleep(1.0)
        assert h2.poll() is None, h2.communicate()
        t0 = send_signal(p)
        rc = wait_exit(p, 8.0)
        elapsed = time.monotonic() - t0
        out, err = h2.communicate(timeout=15)
    finally:
        if h2.poll() is None:
            h2.kill()
            h2.wait(5)
    text = out.decode()
    secs, done, cut = summary(p)
    tail = text[text.find("finished in"):]
    print("\n---- h2load during the drain ----\n%s\ndrain: exit %.3f s after SIGTERM (remora: "
          "%.3f s, %d completed during it, %d cut)" % (tail, elapsed, secs, done, cut))
    assert h2.returncode == 0, err.decode()
    assert rc == 0, p.stderr()[-3000:]
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                  r"(\d+) failed, (\d+) errored, (\d+) timeout", text)
    assert m, text
    total, started, finished, ok, failed, errored, timeouts = map(int, m.groups())
    assert started == finished == ok + failed and ok > 1000, tail
    assert failed == errored <= 16 * 10 and timeouts == 0, tail
    m = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text)
    assert m and int(m.group(1)) == ok and m.groups()[1:] == ("0", "0", "0"), tail
    acc = p.access_logs()
    bad = [e for e in acc if (e["status"], e["termination"]) != (200, "--")]
    assert not bad, bad[:5]
    assert len(acc) == ok, "remora answered %d, h2load got %d" % (len(acc), ok)
    assert cut == 0 and done > 0
    assert 0.95 <= elapsed < 1.6, elapsed
