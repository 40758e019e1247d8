# SPDX-License-Identifier: Apache-2.0
"""22: what only HTTP/2 toward the upstream has (upstreams[].protocol: h2c, h2_upstream.py as
the app): the app and client themselves (no remora), the upstream stream cancelled when the
route times out or the client goes, multiplexing onto few upstream connections, the app's
SETTINGS_MAX_CONCURRENT_STREAMS and max_connections, GOAWAY (retry of the streams it did not
process, graceful drain), RST_STREAM (502 upstream_reset, REFUSED_STREAM retried once), idle
upstream connections closed after idle_timeout. Bodies, header mapping, trailers and remora's
own errors with an h2c app run over the protocol matrix (test_23_matrix.py)."""

import threading
import time

import pytest

from h2util import H2Client, h2_get
from helpers import MIB, HttpConn, http, metrics, pattern, pattern_sha256, wait_for


def h2c_opts(**kw):
    opts = {"protocol": "h2c"}
    opts.update(kw)
    return opts


@pytest.fixture
def h2p(remora, h2_upstream):
    """remora (one worker) in front of a fresh h2_upstream.py spoken to in h2c."""
    return remora(h2_upstream, upstream_opts=h2c_opts())


def conn_of(r):
    return r.header("x-upstream-conn")


def assert_clean(app):
    """The app saw no HTTP/2 protocol violation and no stream beyond its advertised limit
    once remora knew it."""
    st = app.stats()
    assert st["protocol_errors"] == [], st["protocol_errors"]
    assert st["refused_over_limit_acked"] == 0, st
    assert st["refused_after_goaway"] == 0, st
    return st


def parallel(n, fn):
    """Runs fn(i) in n threads; returns the results (exceptions as values), in order."""
    out = [None] * n

    def run(i):
        try:
            out[i] = fn(i)
        except Exception as e:  # noqa: BLE001 - returned to the caller
            out[i] = e

    ts = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(30)
    return out


# ---- the test app and client themselves -----------------------------------------------------

@pytest.mark.no_remora
def test_app_basics(h2_upstream):
    with H2Client(h2_upstream.port) as c:
        r = c.get("/echo?q=1", method="POST", body=b"hello", authority="a.example",
                  headers=[("x-foo", "1"), ("cookie", "a=1"), ("cookie", "b=2")])
        assert r.status == 200 and r.body == b"hello", r
        assert r.header("x-echo-x-foo") == "1"
        assert r.header("x-seen-authority") == "a.example"
        assert r.header("x-seen-path") == "/echo?q=1"
        assert r.header("x-seen-headers") == ":method,:scheme,:authority,:path,x-foo,cookie,cookie"
        assert r.header("x-upstream-conn") == "1" and r.header("x-upstream-stream") == "1"
        r = c.get("/bytes?n=200000")
        assert r.body_len == 200000 and r.sha256() == pattern_sha256(200000)
        r = c.get("/trailers")
        assert r.body == b"hello trailers\n"
        assert r.trailers == [("grpc-status", "0"), ("grpc-message", "ok"), ("x-trailer", "yes")]
        assert c.get("/status?code=418").status == 418
        r = c.get("/json", method="POST", body=b"x" * 10, trailers=[("x-t", "1")])
        assert r.json()["trailers"] == [["x-t", "1"]] and r.json()["body_len"] == 10
        assert c.get("/rst?code=2").reset == 2
        assert c.get("/rst?code=7&once=app-basics").reset == 7
        assert c.get("/rst?code=7&once=app-basics").body == b"ok rst\n"
        body = pattern(0, 3 * MIB)
        r = c.get("/upload", method="PUT", body=body, timeout=20)
        assert r.json() == {"body_len": 3 * MIB, "body_sha256": pattern_sha256(3 * MIB)}
    st = h2_upstream.stats()
    assert st["conns_total"] == 1 and st["resets_sent"] == 2 and st["protocol_errors"] == []


@pytest.mark.no_remora
def test_app_respects_client_window(h2_upstream):
    with H2Client(h2_upstream.port, auto_ack=False) as c:
        sid = c.request("GET", "/bytes?n=%d" % MIB)
        r = c.streams[sid]
        c.wait(lambda: r.body_len >= 65535)
        c.pump(0.3)
        assert r.body_len == 65535, "sent beyond the 65535-byte stream window"
        c.ack(sid)
        c.wait(lambda: r.body_len > 65535)
        # the connection window (65535) is now the limit until it is acknowledged too
        while not r.ended:
            c.ack(sid)
            c.pump(0.05)
        assert r.sha256() == pattern_sha256(MIB)


@pytest.mark.no_remora
def test_app_slow_upload_holds_the_sender(h2_upstream):
    with H2Client(h2_upstream.port) as c:
        sid = c.request("POST", "/upload?slow=1&rate=200000", end_stream=False)
        t0 = time.monotonic()
        sent = 0
        while time.monotonic() - t0 < 1.0:
            avail = min(c.conn.local_flow_control_window(sid), 16384)
            if avail > 0:
                c.conn.send_data(sid, pattern(sent, avail))
                c.flush()
                sent += avail
            else:
                c.pump(0.02)
        # window (65535) + ~1 s at 200 kB/s; far below what the socket would take
        assert sent < 65535 + 400000, sent


@pytest.mark.no_remora
def test_app_max_streams_goaway_and_stats(h2_upstream_factory):
    app = h2_upstream_factory(max_streams=2)
    with H2Client(app.port, ignore_max_streams=True) as c:
        c.get("/echo")
        sids = [c.request("GET", "/sleep?ms=300") for _ in range(3)]
        rs = c.responses(sids)
        assert [(r.status, r.reset) for r in rs] == [(200, None), (200, None), (None, 7)]
    st = app.stats()
    assert st["refused_over_limit"] == 1 and st["refused_over_limit_acked"] == 1, st
    assert st["max_active_on_conn"] == 2, st
    with H2Client(app.port) as c:
        s1 = c.request("GET", "/sleep?ms=400")
        s2 = c.request("GET", "/goaway?then=drain")
        assert c.response(s1).status == 200
        assert c.goaway.last_stream_id == s1 and c.goaway.error_code == 0, c.goaway
        assert not c.streams[s2].done
        assert c.wait_closed(2)
    with H2Client(app.port) as c:
        s1 = c.request("GET", "/sleep?ms=400")
        s2 = c.request("GET", "/goaway?last=self")
        assert c.wait_closed(2) and c.goaway.last_stream_id == s2
        assert not c.streams[s1].done
    assert http(app.port, "GET", "/echo").status == 505  # HTTP/1.1 only serves /_stats


# ---- cancelling the upstream stream ---------------------------------------------------------

def test_upstream_timeout_cancels_the_upstream_stream(remora, h2_upstream):
    p = remora(h2_upstream, upstream_opts=h2c_opts(), routes=[
        {"name": "default", "match": {"path_prefix": "/"}, "upstream": "app",
         "timeout": "300ms"}])
    r = http(p.port, "GET", "/sleep?ms=3000")
    assert r.status == 504 and r.header("x-remora-error") == "upstream_timeout", r
    # the app is told: the stream is reset (or, at least, its connection closed)
    assert wait_for(lambda: (sum(h2_upstream.stats()["resets_received"].values()) >= 1 or
                             h2_upstream.stats()["conns_open"] == 0), timeout=2), \
        h2_upstream.stats()
    assert http(p.port, "GET", "/sleep?ms=10").status == 200
    assert_clean(h2_upstream)


def test_client_gone_cancels_the_upstream_stream(h2p, h2_upstream):
    with HttpConn(h2p.port) as c:
        c.request("GET", "/bytes?n=%d" % (50 * MIB))
        assert c.read_head().status == 200
        c.sock.recv(65536)
    assert wait_for(lambda: (h2_upstream.stats()["resets_received"].get("8", 0) >= 1 or
                             h2_upstream.stats()["conns_open"] == 0), timeout=3), \
        h2_upstream.stats()
    assert http(h2p.port, "GET", "/echo").status == 200
    assert_clean(h2_upstream)


# ---- multiplexing and connection limits -----------------------------------------------------

def test_concurrent_requests_share_one_upstream_connection(h2p, h2_upstream):
    assert http(h2p.port, "GET", "/echo").status == 200  # the upconn exists and knows SETTINGS
    rs = parallel(40, lambda i: http(h2p.port, "GET", "/sleep?ms=500&i=%d" % i, timeout=10))
    assert all(not isinstance(r, Exception) and r.status == 200 for r in rs), rs
    conns = {conn_of(r) for r in rs}
    assert len(conns) == 1, "40 concurrent requests spread over upconns %r" % conns
    with H2Client(h2p.port, timeout=10) as c:
        hs = c.responses([c.request("GET", "/sleep?ms=300&h2=%d" % i) for i in range(50)])
    assert [r.status for r in hs] == [200] * 50
    assert {conn_of(r) for r in hs} == conns
    st = assert_clean(h2_upstream)
    assert st["conns_total"] == 1, st
    assert st["max_active_on_conn"] >= 30, "requests were not multiplexed: %r" % st


def test_app_max_concurrent_streams_opens_more_connections(remora, h2_upstream_factory):
    app = h2_upstream_factory(max_streams=2)
    p = remora(app, upstream_opts=h2c_opts())
    assert http(p.port, "GET", "/echo").status == 200
    rs = parallel(10, lambda i: http(p.port, "GET", "/sleep?ms=500&i=%d" % i, timeout=10))
    assert all(not isinstance(r, Exception) and r.status == 200 for r in rs), rs
    conns = {conn_of(r) for r in rs}
    assert len(conns) >= 5, "10 concurrent requests at 2 streams per upconn used %r" % conns
    st = assert_clean(app)
    assert st["max_active_on_conn"] <= 2, st
    print("refused before SETTINGS were known: %d" % st["refused_over_limit"])


def test_requests_queue_when_connections_are_full(remora, h2_upstream_factory):
    app = h2_upstream_factory(max_streams=2)
    p = remora(app, upstream_opts=h2c_opts(max_connections=2))
    assert http(p.port, "GET", "/echo").status == 200
    t0 = time.monotonic()
    rs = parallel(8, lambda i: http(p.port, "GET", "/sleep?ms=400&i=%d" % i, timeout=10))
    took = time.monotonic() - t0
    assert all(not isinstance(r, Exception) for r in rs), rs
    assert [r.status for r in rs] == [200] * 8, [(r.status, r.header("x-remora-error"))
                                                 for r in rs]
    st = assert_clean(app)
    assert len({conn_of(r) for r in rs}) <= 2
    assert st["conns_total"] <= 2, st
    assert st["max_active"] <= 4, st
    assert took >= 0.75, "8 requests on 2 x 2 streams finished in one wave (%.2fs)" % took


def test_sequential_requests_reuse_the_upconn(h2p, h2_upstream):
    conns = [conn_of(http(h2p.port, "GET", "/echo?i=%d" % i)) for i in range(5)]
    assert len(set(conns)) == 1, conns
    assert h2_upstream.stats()["conns_total"] == 1


# ---- GOAWAY ---------------------------------------------------------------------------------

def test_goaway_unprocessed_stream_retried_on_new_connection(h2p, h2_upstream):
    first = conn_of(http(h2p.port, "GET", "/echo"))
    r = http(h2p.port, "GET", "/goaway?once=g1")
    assert r.status == 200 and r.body == b"ok goaway\n", (r, r.body)
    assert conn_of(r) != first
    r2 = http(h2p.port, "GET", "/echo")
    assert conn_of(r2) == conn_of(r), "a connection that sent GOAWAY was used again"
    st = assert_clean(h2_upstream)
    assert st["goaways_sent"] == 1
    c1 = [c for c in st["conns"] if str(c["id"]) == first][0]
    assert not c1["open"], c1


def test_goaway_drain_finishes_streams_at_or_below_last(h2p, h2_upstream):
    assert http(h2p.port, "GET", "/echo").status == 200
    box = {}

    def slow():
        box["r"] = http(h2p.port, "GET", "/sleep?ms=800", timeout=10)

    t = threading.Thread(target=slow)
    t.start()
    assert wait_for(lambda: h2_upstream.stats()["streams_active"] == 1, timeout=2)
    r = http(h2p.port, "GET", "/goaway?once=g2&then=drain")
    t.join(10)
    assert r.status == 200 and r.body == b"ok goaway\n", (r, r.body)
    assert box["r"].status == 200 and box["r"].body == b"ok", box
    assert conn_of(box["r"]) != conn_of(r)
    st = assert_clean(h2_upstream)
    assert st["goaways_sent"] == 1


def test_goaway_then_respond(h2p, h2_upstream):
    first = conn_of(http(h2p.port, "GET", "/echo"))
    r = http(h2p.port, "GET", "/goaway?last=self&then=respond")
    assert r.status == 200 and r.body == b"ok goaway respond\n" and conn_of(r) == first, r
    r = http(h2p.port, "GET", "/echo")
    assert r.status == 200 and conn_of(r) != first
    assert_clean(h2_upstream)


def test_goaway_covering_a_stream_then_close_is_upstream_reset(h2p, h2_upstream):
    """The app accepted the stream (last-stream-id includes it) and closed without an answer:
    a 502 upstream_reset, and later requests work on a new connection."""
    r = http(h2p.port, "GET", "/goaway?last=self")
    assert r.status == 502 and r.header("x-remora-error") == "upstream_reset", (r, r.body)
    assert http(h2p.port, "GET", "/echo").status == 200
    assert_clean(h2_upstream)


def test_goaway_counted_in_metrics(h2p):
    m0 = metrics(h2p.admin_port)
    assert http(h2p.port, "GET", "/goaway?once=g3").status == 200
    assert wait_for(lambda: metrics(h2p.admin_port).total(
        "remora_http2_goaway_total", side="upstream") -
        m0.total("remora_http2_goaway_total", side="upstream") >= 1, timeout=2), \
        metrics(h2p.admin_port).series("remora_http2_goaway_total")


# ---- RST_STREAM -----------------------------------------------------------------------------

def test_rst_stream_is_upstream_reset(h2p, h2_upstream):
    """RST_STREAM INTERNAL_ERROR is the app's answer to a stream it did process: a 502
    upstream_reset, not retried (only REFUSED_STREAM is), on a fresh or a reused upconn."""
    m0 = metrics(h2p.admin_port)
    with HttpConn(h2p.port) as c:
        s0 = h2_upstream.stats()["streams_total"]
        c.request("GET", "/rst?code=2")  # on a fresh upconn
        r = c.read_response()
        assert r.status == 502 and r.header("x-remora-error") == "upstream_reset", (r, r.body)
        c.request("GET", "/echo")
        assert c.read_response().status == 200
        s1 = h2_upstream.stats()["streams_total"]
        assert s1 - s0 == 2, "the app saw %d streams for two requests" % (s1 - s0)
        c.request("GET", "/rst?code=2")  # on the reused upconn
        r = c.read_response()
        assert r.status == 502 and r.header("x-remora-error") == "upstream_reset", (r, r.body)
        s2 = h2_upstream.stats()["streams_total"]
        assert s2 - s1 == 1, "GET answered RST_STREAM INTERNAL_ERROR was sent to the app " \
            "%d times (retried)" % (s2 - s1)
    r = h2_get(h2p.port, "/rst?code=2")
    assert r.status == 502 and r.header("x-remora-error") == "upstream_reset", r
    s3 = h2_upstream.stats()["streams_total"]
    assert s3 - s2 == 1, "h2 client: RST_STREAM INTERNAL_ERROR retried (%d streams)" % (s3 - s2)
    assert wait_for(lambda: metrics(h2p.admin_port).value(
        "remora_http2_resets_total", 0, side="upstream", reason="internal_error") -
        m0.value("remora_http2_resets_total", 0, side="upstream", reason="internal_error") == 3,
        timeout=2), metrics(h2p.admin_port).series("remora_http2_resets_total")
    assert_clean(h2_upstream)


def test_refused_stream_retried_once(h2p, h2_upstream):
    m0 = metrics(h2p.admin_port)
    s0 = h2_upstream.stats()["streams_total"]
    r = http(h2p.port, "GET", "/rst?code=7&once=r1")
    assert r.status == 200 and r.body == b"ok rst\n", (r, r.body)
    assert h2_upstream.stats()["streams_total"] - s0 == 2
    s1 = h2_upstream.stats()["streams_total"]
    r = http(h2p.port, "GET", "/rst?code=7")
    assert r.status == 502 and r.header("x-remora-error") == "upstream_reset", (r, r.body)
    assert h2_upstream.stats()["streams_total"] - s1 == 2, "not retried exactly once"
    r = h2_get(h2p.port, "/rst?code=7&once=r2")
    assert r.status == 200 and r.body == b"ok rst\n", r
    assert wait_for(lambda: metrics(h2p.admin_port).value(
        "remora_http2_resets_total", 0, side="upstream", reason="refused_stream") -
        m0.value("remora_http2_resets_total", 0, side="upstream", reason="refused_stream") == 4,
        timeout=2), metrics(h2p.admin_port).series("remora_http2_resets_total")
    assert_clean(h2_upstream)


def test_refused_stream_with_body_retried_once(h2p, h2_upstream):
    """REFUSED_STREAM means the app processed nothing (RFC 9113 8.7), so even a POST whose
    (small) body was sent is safe to retry."""
    body = pattern(0, 100)
    r = h2_get(h2p.port, "/rst?code=7&once=r3", method="POST", body=body,
               headers=[("content-length", "100")])
    assert r.status == 200 and r.body == b"ok rst\n", r
    r = http(h2p.port, "POST", "/rst?code=7&once=r4", body=body)
    assert r.status == 200 and r.body == b"ok rst\n", (r, r.body)
    assert_clean(h2_upstream)


# ---- idle upstream connections --------------------------------------------------------------

def test_idle_upconn_closed_after_idle_timeout(remora, h2_upstream):
    p = remora(h2_upstream, upstream_opts=h2c_opts(idle_timeout="300ms"))
    first = conn_of(http(p.port, "GET", "/echo"))
    t0 = time.monotonic()

    def closed():
        for c in h2_upstream.stats()["conns"]:
            if str(c["id"]) == first and not c["open"]:
                return c
        return None

    c = wait_for(closed, timeout=2.0)
    assert c, "the idle upconn was not closed: %r" % h2_upstream.stats()["conns"]
    assert time.monotonic() - t0 >= 0.2
    assert c["close"] in ("eof", "eof_after_goaway"), c
    r = http(p.port, "GET", "/echo")
    assert r.status == 200 and conn_of(r) != first
    assert_clean(h2_upstream)


def test_idle_upconn_kept_before_idle_timeout(remora, h2_upstream):
    p = remora(h2_upstream, upstream_opts=h2c_opts(idle_timeout="2s"))
    first = conn_of(http(p.port, "GET", "/echo"))
    time.sleep(0.5)
    assert conn_of(http(p.port, "GET", "/echo")) == first


def test_upstream_closing_connection_is_not_an_error(h2p, h2_upstream):
    """The app sends GOAWAY and closes on its own between requests (like an app restart or
    its idle timeout): later requests go to a new connection, never a 502."""
    with HttpConn(h2p.port) as c:
        for i in range(3):
            c.request("GET", "/goaway?last=self&then=respond&i=%d" % i)
            r = c.read_response()
            assert r.status == 200, (i, r, r.body)
            time.sleep(0.2)  # the app has closed the connection meanwhile
            c.request("GET", "/echo?i=%d" % i)
            r = c.read_response()
            assert r.status == 200, (i, r, r.body)
    assert_clean(h2_upstream)
