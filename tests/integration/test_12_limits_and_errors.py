# SPDX-License-Identifier: Apache-2.0
"""12: HTTP/1.1 hostile input, limits and upstream failures: bad requests (400/501 with
x-remora-error, a short body, the connection closed, other clients still served), how
max_headers counts (Host included), request header and idle timeouts (408, slowloris), upstream
connect timeout, the route timeout as silence, malformed HTTP/1.1 responses and broken chunked
bodies, a truncated body to an HTTP/1.0 client, remora's own 5xx honouring the client's close.
The limits and failures every protocol pair shares (431, 413, no_route, connect_refused,
upstream_reset, upstream_timeout, a body cut mid-way) run over the protocol matrix in
test_23_matrix.py."""

import socket
import time

import pytest

from helpers import HttpConn, build_request, expect_error, free_port, http, pattern


def still_serving(port):
    r = http(port, "GET", "/echo?still")
    assert r.status == 200 and r.json()["path"] == "/echo?still"


@pytest.fixture
def limited(remora, upstream):
    return remora(upstream, limits={"max_header_bytes": "4KiB", "max_headers": 20,
                                    "max_body_bytes": "1KiB"})


BAD_REQUESTS = {
    "garbage_request_line": (b"GARBAGE\r\n\r\n", 400, "bad_request"),
    "request_line_no_version": (b"GET /\r\nHost: a\r\n\r\n", 400, "bad_request"),
    "header_without_colon": (b"GET / HTTP/1.1\r\nHost: a\r\nNoColonHere\r\n\r\n",
                             400, "bad_request"),
    "space_before_colon": (b"GET / HTTP/1.1\r\nHost: a\r\nX-A : 1\r\n\r\n", 400, "bad_request"),
    "nul_in_header_value": (b"GET / HTTP/1.1\r\nHost: a\r\nX-A: a\x00b\r\n\r\n",
                            400, "bad_request"),
    "http11_without_host": (b"GET / HTTP/1.1\r\nX-A: 1\r\n\r\n", 400, "bad_request"),
    "two_hosts": (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, "bad_request"),
    "host_invalid_value": (b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400, "bad_request"),
    "bare_lf": (b"GET / HTTP/1.1\nHost: a\n\n", 400, "bad_request"),
    "http_2_0_request_line": (b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505,
                              "http_version_not_supported"),
    "cl_and_te": (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
                  400, "bad_framing"),
    "two_content_lengths": (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n"
                            b"Content-Length: 6\r\n\r\nhello!", 400, "bad_framing"),
    "cl_and_te_zero": (b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n"
                       b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400, "bad_framing"),
    "bad_chunk_size": (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                       b"0x3\r\nabc\r\n0\r\n\r\n", 400, "bad_framing"),
    "chunk_size_overflow": (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
                            b"\r\nfffffffffffffffffff\r\nabc\r\n0\r\n\r\n", 400, "bad_framing"),
    "content_length_plus": (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\nabc",
                            400, "bad_framing"),
    "obs_fold": (b"GET / HTTP/1.1\r\nHost: a\r\nX-A: one\r\n two\r\n\r\n", 400, "bad_framing"),
    "obs_fold_tab": (b"GET / HTTP/1.1\r\nHost: a\r\nX-A: one\r\n\ttwo\r\n\r\n",
                     400, "bad_framing"),
    "te_gzip": (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n",
                400, "bad_framing"),  # chunked not final in a request: RFC 9112 6.3
    "te_gzip_chunked": (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n"
                        b"\r\n0\r\n\r\n", 501, "unsupported_transfer_encoding"),
}


@pytest.mark.parametrize("case", sorted(BAD_REQUESTS))
def test_bad_request(proxy, case):
    raw, status, reason = BAD_REQUESTS[case]
    expect_error(proxy.port, raw, status, reason)
    still_serving(proxy.port)


def test_bad_request_after_good_one_on_same_connection(proxy):
    with HttpConn(proxy.port) as c:
        c.request("GET", "/echo")
        assert c.read_response().status == 200
        c.send(b"BROKEN LINE\r\n\r\n")
        r = c.read_response()
        assert r.status == 400 and r.header("x-remora-error") == "bad_request"
        assert c.is_closed()


def test_bad_content_length_value(proxy):
    with HttpConn(proxy.port) as c:
        c.send(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: abc\r\n\r\n")
        r = c.read_response()
        assert r.status == 400 and r.header("x-remora-error") in ("bad_request", "bad_framing")
        assert c.is_closed()


def test_other_clients_served_during_bad_input(proxy):
    with HttpConn(proxy.port) as good:
        good.request("GET", "/echo?1")
        assert good.read_response().status == 200
        for raw, _, _ in BAD_REQUESTS.values():
            # statuses are test_bad_request's business; here only the bystander matters
            with HttpConn(proxy.port) as bad:
                bad.send(raw)
                bad.read_all(deadline=2)
        good.request("GET", "/echo?2")
        assert good.read_response().json()["path"] == "/echo?2"


def test_header_count_limit_boundary(limited):
    """max_headers: 20 allows 20 header lines (Host included); the 21st is too many."""
    ok = build_request("GET", "/echo", headers=[("X-H%d" % i, "v") for i in range(19)])
    with HttpConn(limited.port) as c:
        c.send(ok)
        assert c.read_response().status == 200
    bad = build_request("GET", "/echo", headers=[("X-H%d" % i, "v") for i in range(20)])
    expect_error(limited.port, bad, 431, "too_many_headers")


def test_request_header_timeout(remora, upstream):
    p = remora(upstream, limits={"request_header_timeout": "500ms"})
    t0 = time.monotonic()
    with HttpConn(p.port, timeout=5) as c:
        c.send(b"GET /echo HTTP/1.1\r\nHost: a\r\n")
        r = c.read_response()
        took = time.monotonic() - t0
        assert r.status == 408 and r.header("x-remora-error") == "request_header_timeout", r
        assert c.is_closed()
    assert 0.4 <= took < 2.5, took
    still_serving(p.port)


def test_request_header_timeout_counts_whole_head(remora, upstream):
    """A client trickling header bytes does not reset the head timer (slowloris)."""
    p = remora(upstream, limits={"request_header_timeout": "500ms"})
    t0 = time.monotonic()
    with HttpConn(p.port, timeout=5) as c:
        c.send(b"GET /echo HTTP/1.1\r\nHost: a\r\n")
        got = None
        for i in range(30):
            try:
                c.send(b"X-%d: v\r\n" % i)
            except OSError:
                break
            c.sock.settimeout(0.1)
            try:
                d = c.sock.recv(65536)
            except socket.timeout:
                continue
            got = d
            break
        took = time.monotonic() - t0
        assert got is not None and got.startswith(b"HTTP/1.1 408"), got
    assert took < 2.0, took


def test_client_idle_timeout(remora, upstream):
    p = remora(upstream, limits={"client_idle_timeout": "500ms"})
    with HttpConn(p.port) as c:
        c.request("GET", "/echo")
        assert c.read_response().status == 200
        t0 = time.monotonic()
        assert c.is_closed(wait=3.0)
        took = time.monotonic() - t0
    assert 0.3 <= took < 2.5, took


# ---- upstream failures -------------------------------------------------------------------

@pytest.fixture
def full_backlog():
    """A listening socket that never accepts, its accept queue already full, so further
    connects hang in SYN_SENT."""
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(0)
    fillers = []
    for _ in range(4):
        s = socket.socket()
        s.setblocking(False)
        try:
            s.connect(lsock.getsockname())
        except BlockingIOError:
            pass
        fillers.append(s)
    time.sleep(0.1)
    probe = socket.socket()
    probe.settimeout(0.3)
    try:
        probe.connect(lsock.getsockname())
        hangs = False
    except socket.timeout:
        hangs = True
    finally:
        probe.close()
    if not hangs:
        pytest.skip("this kernel accepted a connect on a full backlog: cannot simulate")
    yield lsock.getsockname()[1]
    for s in fillers:
        s.close()
    lsock.close()


def test_connect_timeout(remora, full_backlog):
    p = remora(endpoints=["127.0.0.1:%d" % full_backlog],
               upstream_opts={"connect_timeout": "200ms"})
    t0 = time.monotonic()
    r = http(p.port, "GET", "/echo", timeout=5)
    took = time.monotonic() - t0
    assert r.status == 504 and r.header("x-remora-error") == "connect_timeout", r
    assert 0.15 <= took < 1.5, took


def test_upstream_timeout_is_silence_not_total_time(remora, upstream):
    """timeout bounds silence while a response is due: a body that keeps arriving (8 chunks,
    100 ms apart, 0.8 s in all) outlives a 300 ms route timeout."""
    p = remora(upstream, routes=[{"name": "default", "match": {"path_prefix": "/"},
                                  "upstream": "app", "timeout": "300ms"}])
    with HttpConn(p.port) as c:
        c.request("GET", "/drip?count=8&size=100&ms=100")
        r = c.read_response()
    assert r.status == 200 and r.complete and r.body == pattern(0, 800), (r, r.body)


def test_slow_client_body_is_not_upstream_silence(remora, upstream):
    """The route timeout runs while a response is due: a client sending its body slowly
    (1 s in all) is not cut off by a 300 ms route timeout."""
    p = remora(upstream, routes=[{"name": "default", "match": {"path_prefix": "/"},
                                  "upstream": "app", "timeout": "300ms"}])
    with HttpConn(p.port) as c:
        c.send(b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n")
        for _ in range(10):
            time.sleep(0.1)
            c.send(b"x")
        r = c.read_response()
    assert r.status == 200 and r.json()["body_len"] == 10, (r, r.body)


@pytest.mark.parametrize("kind", ["garbage", "status", "cl", "header", "two_cl", "cl_te",
                                  "te_gzip"])
def test_malformed_upstream_response(proxy, kind):
    r = http(proxy.port, "GET", "/malformed?kind=%s" % kind)
    assert r.status == 502 and r.header("x-remora-error") == "bad_response", (kind, r, r.body)
    still_serving(proxy.port)


@pytest.mark.parametrize("kind", ["bad_chunk", "chunk_ext"])
def test_upstream_bad_chunk_mid_body(proxy, kind):
    """A broken chunk-size line, or one that never ends (chunk_ext: 1 MiB of extension after
    a first chunk, over the 4 KiB bound): 502, or (head already out) a body never presented
    as complete; logged as bad_response."""
    with HttpConn(proxy.port, timeout=5) as c:
        c.request("GET", "/malformed?kind=%s" % kind)
        r = c.read_response()
        assert r.status in (200, 502), r
        if r.status == 200:
            assert not r.complete, "a broken chunked body got its terminal chunk: %r" % r
            assert r.body in (b"", b"hello"), r.body
        else:
            assert r.header("x-remora-error") == "bad_response"
        assert c.is_closed(wait=3.0)
    mine = [x for x in proxy.access_logs(at_least=1) if "/malformed" in x.get("path", "")]
    assert mine and mine[-1].get("error") == "bad_response", mine
    still_serving(proxy.port)


def test_upstream_silent_mid_body_beyond_timeout(remora, upstream):
    """The response head came, then the upstream goes silent longer than the route timeout:
    the downstream connection closes without completing the body."""
    p = remora(upstream, routes=[{"name": "default", "match": {"path_prefix": "/"},
                                  "upstream": "app", "timeout": "300ms"}])
    t0 = time.monotonic()
    with HttpConn(p.port, timeout=5) as c:
        c.request("GET", "/drip?count=3&size=5&ms=1000")
        r = c.read_response()
        assert r.status == 200 and not r.complete, r
    assert time.monotonic() - t0 < 1.5
    still_serving(p.port)


def test_upstream_breaks_mid_body_http10_client(proxy):
    """To an HTTP/1.0 client a chunked response goes close-delimited, where EOF would look
    like a normal end: remora must not let a truncated body look complete there either. It
    can only signal it by resetting the connection instead of a clean close."""
    with HttpConn(proxy.port, timeout=5) as c:
        c.send(b"GET /close-mid-chunked?send=100000 HTTP/1.0\r\nHost: x\r\n\r\n")
        r = c.read_response()
        assert r.status == 200
        assert not r.complete, "truncated close-delimited body ended with a clean FIN"


def test_large_response_header_passes(proxy):
    r = http(proxy.port, "GET", "/header?name=x-large&size=16000")
    assert r.status == 200 and len(r.header("x-large")) == 16000


@pytest.mark.parametrize("raw", [
    b"GET /echo HTTP/1.0\r\nHost: x\r\n\r\n",
    b"GET /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
], ids=["http10", "connection_close"])
def test_own_5xx_honours_client_close(remora, raw):
    """RFC 9112 9.3/9.6: remora's own 502 closes the connection when the client asked for it
    (Connection: close, or HTTP/1.0 without keep-alive), as its proxied responses do."""
    proxy = remora(endpoints=["127.0.0.1:%d" % free_port()])
    with HttpConn(proxy.port, timeout=5) as c:
        c.send(raw)
        r = c.read_response()
        assert r.status == 502 and r.header("x-remora-error") == "connect_refused"
        assert (r.header("connection") or "").lower() == "close", r.headers
        assert c.is_closed(wait=2.0)
