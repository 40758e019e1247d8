# SPDX-License-Identifier: Apache-2.0
"""23: what a proxy must do whatever the protocols, once per cell of the protocol matrix
(fixture `matrix`: HTTP/1.1 or h2c downstream x HTTP/1.1 or h2c upstream): method, target and
authority reach the app; X-Forwarded-For/Proto and X-Request-Id are added or kept; end-to-end
headers pass in order and hop-by-hop ones do not; request and response bodies with and without
a length, large ones byte-exact; HEAD, 204 and 304 carry no body; trailers both ways; a
response cut mid-body never looks complete; and remora's own answers: 404 no_route,
502 connect_refused and upstream_reset, 504 upstream_timeout, 431 and 413. What only one
protocol has (HTTP/1.1 keep-alive and pipelining, Expect, chunk extensions; HTTP/2 SETTINGS,
flow control, GOAWAY, RST_STREAM) stays in test_10, test_12, test_20 and test_22."""

import hashlib
import time

import pytest

from helpers import MIB, UUID4_RE, free_port, pattern, pattern_sha256

H1_DOWN = ["h1-h1", "h1-h2c"]  # a request with connection-specific fields: HTTP/1.1 only
H1_UP = ["h1-h1", "h2c-h1"]    # a response with connection-specific fields: HTTP/1.1 only


# ---- method, target, authority ----------------------------------------------------------------

def test_method_and_target_forwarded(matrix):
    for method in ("GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"):
        target = matrix.echo_path + "/a%20b?q=1&r=%2F"
        r = matrix.request(method, target)
        seen = matrix.seen(r)
        assert (seen.method, seen.path) == (method, target), seen
        if matrix.up == "h1":
            assert seen.version == "HTTP/1.1", seen
        else:
            assert seen.scheme == "http", seen
        assert r.header("x-upstream-conn") is not None, "the app's own headers were lost"


def test_authority_reaches_the_app(matrix):
    """Host (HTTP/1.1) and :authority (h2) are one thing: the app gets it as its protocol
    spells it (RFC 9113 8.3.1), and never as a pseudo-header on HTTP/1.1 or a Host on h2."""
    r = matrix.request("GET", matrix.echo_path, authority="svc.example:8080")
    seen = matrix.seen(r)
    assert seen.authority == "svc.example:8080", seen
    assert not [k for k in seen.names() if k.startswith(":")], seen
    if matrix.up == "h1":
        assert seen.header_all("host") == ["svc.example:8080"], seen
    else:
        assert not seen.names() & {"host", "connection"}, seen


# ---- headers remora adds ----------------------------------------------------------------------

def test_x_forwarded_for_and_proto(matrix):
    seen = matrix.seen(matrix.request("GET", matrix.echo_path))
    assert seen.header_all("x-forwarded-for") == ["127.0.0.1"], seen
    assert seen.header_all("x-forwarded-proto") == ["http"], seen
    r = matrix.request("GET", matrix.echo_path, headers=[("X-Forwarded-For", "203.0.113.7"),
                                                         ("X-Forwarded-Proto", "https")])
    seen = matrix.seen(r)
    assert seen.header_all("x-forwarded-for") == ["203.0.113.7, 127.0.0.1"], seen
    assert seen.header_all("x-forwarded-proto") == ["https, http"], seen


def test_request_id_generated(matrix):
    """Each request gets its own UUIDv4 X-Request-Id toward the app and back to the client,
    also on a response that does not echo it."""
    ids = set()
    for _ in range(5):
        r = matrix.request("GET", matrix.echo_path)
        sent = matrix.seen(r).header_all("x-request-id")
        assert len(sent) == 1 and UUID4_RE.match(sent[0]), sent
        assert r.header_all("x-request-id") == sent, r
        ids.add(sent[0])
    assert len(ids) == 5
    assert matrix.conns_opened == 1
    r = matrix.request("GET", matrix.bytes_path(10))
    assert UUID4_RE.match(r.header("x-request-id") or ""), r


def test_request_id_from_client_kept(matrix):
    r = matrix.request("GET", matrix.echo_path, headers=[("X-Request-Id", "client-id-42")])
    assert matrix.seen(r).header_all("x-request-id") == ["client-id-42"]
    assert r.header_all("x-request-id") == ["client-id-42"], r


# ---- end-to-end and hop-by-hop headers --------------------------------------------------------

def test_end_to_end_headers_kept(matrix):
    """In order, duplicates kept; cookies as the app's protocol spells them: one field on
    HTTP/1.1 (h2 crumbs joined with "; ", RFC 9113 8.2.3), crumbs allowed on h2."""
    tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    hs = [("X-Dup", "1"), ("Accept", "*/*"), ("X-Dup", "2"), ("User-Agent", "matrix-test"),
          ("traceparent", tp), ("tracestate", "congo=t61rcWkgMzE")]
    if matrix.down == "h1":
        hs += [("Cookie", "a=1; b=2; c=3")]
    else:
        hs += [("cookie", "a=1"), ("x-mid", "m"), ("cookie", "b=2"), ("cookie", "c=3"),
               ("te", "trailers")]
    seen = matrix.seen(matrix.request("GET", matrix.echo_path, headers=hs))
    assert seen.header_all("x-dup") == ["1", "2"], seen
    assert seen.header_all("accept") == ["*/*"], seen
    assert seen.header_all("user-agent") == ["matrix-test"], seen
    assert seen.header_all("traceparent") == [tp], seen
    assert seen.header_all("tracestate") == ["congo=t61rcWkgMzE"], seen
    if matrix.up == "h1":
        assert seen.header_all("cookie") == ["a=1; b=2; c=3"], seen
    else:
        assert "; ".join(seen.header_all("cookie")) == "a=1; b=2; c=3", seen
    # TE: trailers may go on (HTTP/1.1 allows it, h2 allows only that), nothing else of TE
    assert seen.header_all("te") in ([], ["trailers"]), seen


@pytest.mark.parametrize("matrix", H1_DOWN, indirect=True)
def test_hop_by_hop_removed_toward_app(matrix):
    """RFC 9110 7.6.1: Connection and the fields it names, and the other hop-by-hop fields,
    stop at remora; an h2 app would reset the stream or the connection for any of them
    (RFC 9113 8.2.2), and the fixture checks it saw no protocol error."""
    r = matrix.request("GET", matrix.echo_path, headers=[
        ("Connection", "keep-alive, X-Hop-A"),
        ("Connection", "x-hop-b"),
        ("X-Hop-A", "1"),
        ("X-Hop-B", "1"),
        ("Keep-Alive", "timeout=5"),
        ("TE", "trailers"),
        ("Trailer", "x-t"),
        ("Upgrade", "foo/1"),
        ("Proxy-Connection", "keep-alive"),
        ("X-End-To-End", "kept"),
    ])
    seen = matrix.seen(r)
    for h in ("x-hop-a", "x-hop-b", "keep-alive", "trailer", "upgrade", "proxy-connection"):
        assert h not in seen.names(), (h, seen)
    for v in seen.header_all("connection"):
        assert "x-hop" not in v.lower(), seen
    assert seen.header_all("x-end-to-end") == ["kept"], seen
    if matrix.up == "h1":
        assert "te" not in seen.names(), seen
    else:
        assert seen.header_all("te") in ([], ["trailers"]), seen
        assert not seen.names() & {"connection", "transfer-encoding", "host"}, seen


@pytest.mark.parametrize("matrix", H1_UP, indirect=True)
def test_hop_by_hop_removed_toward_client(matrix):
    """The same toward the client; on h2 the client library (python3-h2) would reject any
    connection-specific field, and upper-case names."""
    sets = "&".join("set=" + s for s in [
        "Connection:x-resp-hop", "X-Resp-Hop:1", "Keep-Alive:timeout%3D9",
        "Proxy-Connection:keep-alive", "Upgrade:foo", "Trailer:x-t", "X-End:kept"])
    for path in ("/echo?" + sets, "/chunked?n=70000&chunk=4000&" + sets):
        r = matrix.request("GET", path)
        assert r.status == 200 and r.complete, r
        for h in ("x-resp-hop", "keep-alive", "proxy-connection", "upgrade", "trailer"):
            assert h not in r.names(), (h, r)
        for v in r.header_all("connection"):
            assert "x-resp-hop" not in v.lower(), r
        assert r.header_all("x-end") == ["kept"], r
        if matrix.down == "h2c":
            assert not r.names() & {"connection", "transfer-encoding"}, r
    assert r.body == pattern(0, 70000), r
    assert r.header("content-type") == "application/octet-stream", r


# ---- bodies -----------------------------------------------------------------------------------

def test_request_body_with_content_length(matrix):
    data = pattern(3, MIB + 7)
    r = matrix.request("PUT", matrix.echo_path, body=data, timeout=10)
    seen = matrix.seen(r)
    assert seen.method == "PUT"
    assert seen.body_len == len(data) and seen.body_sha256 == hashlib.sha256(data).hexdigest()
    if matrix.up == "h1":
        assert seen.header_all("content-length") == [str(len(data))], seen
        assert seen.chunked is False, seen


def test_request_body_without_content_length(matrix):
    """A body of unknown length (h1: chunked, h2: no content-length) reaches an HTTP/1.1 app
    framed once: chunked, never with a Content-Length next to it."""
    data = pattern(0, 200000)
    r = matrix.request("POST", matrix.echo_path, body=data, content_length=False, chunk=4099)
    seen = matrix.seen(r)
    assert seen.body_len == len(data) and seen.body_sha256 == hashlib.sha256(data).hexdigest()
    if matrix.up == "h1":
        te = seen.header_all("transfer-encoding")
        assert seen.header_all("content-length") == [], seen
        assert seen.chunked is True and te, seen
    assert matrix.seen(matrix.request("GET", matrix.echo_path + "?next")).path == \
        matrix.echo_path + "?next"


def test_response_body_with_and_without_content_length(matrix):
    """A response's content-length is kept; one without goes chunked to an HTTP/1.1 client
    and ends with END_STREAM on h2; the connection stays in sync after both."""
    r = matrix.request("GET", matrix.bytes_path(100000))
    assert r.status == 200 and r.complete and r.body == pattern(0, 100000), r
    assert r.header("content-length") == "100000" and not r.chunked, r
    r = matrix.request("GET", matrix.unsized_path(100000))
    assert r.status == 200 and r.complete and r.body == pattern(0, 100000), r
    assert r.header("content-length") is None, r
    if matrix.down == "h1":
        assert r.chunked, r
    else:
        assert r.header("transfer-encoding") is None, r
    assert matrix.request("GET", matrix.echo_path).status == 200
    assert matrix.conns_opened == 1


def test_large_bodies_byte_exact(matrix):
    r = matrix.request("POST", "/upload", body=pattern(0, 4 * MIB), content_length=False,
                       chunk=65536, timeout=20)
    assert r.status == 200, r
    assert r.json() == {"body_len": 4 * MIB, "body_sha256": pattern_sha256(4 * MIB)}
    r = matrix.request("GET", matrix.bytes_path(5 * MIB), timeout=20)
    assert r.status == 200 and r.complete, r
    assert hashlib.sha256(r.body).hexdigest() == pattern_sha256(5 * MIB)


def test_head_and_bodyless_statuses(matrix):
    """HEAD keeps the content-length and sends no body, and reaches the app as HEAD; 204 and
    304 carry no body, a 503 does. All at once on one connection (pipelined on h1), so a
    stray body byte would break the next response."""
    rs = matrix.batch([dict(method="HEAD", path=matrix.bytes_path(77)),
                       dict(method="HEAD", path=matrix.echo_path),
                       dict(path=matrix.status_path(204)),
                       dict(path=matrix.status_path(304)),
                       dict(path=matrix.status_path(503)),
                       dict(path=matrix.echo_path + "?after")])
    head, head_echo, s204, s304, s503, after = rs
    assert head.status == 200 and head.header("content-length") == "77", head
    assert head.body == b"" and head.complete, head
    # the app computed the length of the JSON it would send, and sent none: it saw HEAD
    assert head_echo.status == 200 and int(head_echo.header("content-length")) > 0, head_echo
    assert head_echo.body == b"" and head_echo.complete, head_echo
    for r, st in ((s204, 204), (s304, 304)):
        assert r.status == st and r.body == b"" and r.complete, r
    assert s503.status == 503 and s503.body == b"status 503\n" and s503.complete, s503
    seen = matrix.seen(after)
    assert (seen.method, seen.path) == ("GET", matrix.echo_path + "?after")
    assert matrix.conns_opened == 1


# ---- trailers ---------------------------------------------------------------------------------

def test_response_trailers_reach_a_client_that_asked(matrix):
    """After a short and a long body; an HTTP/1.1 client asks with TE: trailers (and
    Connection: TE) and gets them in the chunked body, an h2 client in a HEADERS frame."""
    asks = [("TE", "trailers")] + ([("Connection", "TE")] if matrix.down == "h1" else [])
    for n in (3000, 300000):
        path = matrix.unsized_path(n, trailers=True)
        if matrix.up == "h2c" and n > 3000:
            path += "&grpc_status=14&grpc_message=unavailable"
        r = matrix.request("GET", path, headers=asks)
        assert r.status == 200 and r.complete, r
        assert hashlib.sha256(r.body).hexdigest() == pattern_sha256(n), r
        if matrix.up == "h1":
            assert r.trailers == [("x-trailer", "yes")], r
        else:
            want = ("0", "ok") if n == 3000 else ("14", "unavailable")
            assert (r.trailer("grpc-status"), r.trailer("grpc-message")) == want, r
            assert r.trailer("x-trailer") == "yes", r
        if matrix.down == "h1":
            assert r.chunked, r
        else:
            assert r.header("transfer-encoding") is None, r
    assert matrix.request("GET", matrix.echo_path).status == 200
    assert matrix.conns_opened == 1


def test_request_trailers_reach_the_app(matrix):
    """An HTTP/1.1 app gets them as chunked trailers."""
    r = matrix.request("POST", matrix.echo_path, body=b"x" * 5000, headers=[("TE", "trailers")],
                       trailers=[("x-req-trailer", "yes")])
    seen = matrix.seen(r)
    assert seen.body_len == 5000, seen
    assert seen.trailers == [("x-req-trailer", "yes")], seen
    if matrix.up == "h1":
        assert seen.chunked is True, seen


# ---- responses the app breaks -----------------------------------------------------------------

def test_response_cut_mid_body_is_not_complete(matrix):
    """The app stops mid-body (h1 app: closes inside a Content-Length or chunked body; h2c app:
    RST_STREAM after 1000 bytes). The client must not see an ending: on HTTP/1.1 remora closes
    the connection without completing the framing, on h2 it resets the stream and the
    connection keeps serving. The bytes that did arrive are the right ones."""
    if matrix.up == "h1":
        cuts = ["/close-mid?n=200000&send=100000", "/close-mid-chunked?send=100000"]
    else:
        cuts = ["/rst?code=2&after=data"]
    for path in cuts:
        r = matrix.request("GET", path)
        assert r.status == 200, r
        assert not r.complete, "a truncated body looked complete: %r" % r
        assert r.body == pattern(0, len(r.body)), r
        if path.startswith("/close-mid?"):
            assert len(r.body) < 200000
        if matrix.down == "h1":
            assert matrix.conn_closed(), "HTTP/1.1 connection left open after a cut body"
        else:
            assert r.reset is not None, r
            assert matrix.request("GET", matrix.echo_path).status == 200
    assert matrix.request("GET", matrix.echo_path + "?still").status == 200
    if matrix.down == "h2c":
        assert matrix.conns_opened == 1


# ---- remora's own answers ---------------------------------------------------------------------

def assert_own_error(r, status, reason):
    """A complete response of remora's own: status, x-remora-error reason, a short body."""
    assert r.status == status and r.header("x-remora-error") == reason, r
    assert r.complete and 0 < len(r.body) < 1024, r


def assert_request_refused(matrix, r, status, reason):
    """Remora refused the request itself (bad input): on HTTP/1.1 it closes the connection
    (the rest of the request may be unread), on h2 only the stream ends and the connection
    keeps serving."""
    assert_own_error(r, status, reason)
    if matrix.down == "h1":
        assert matrix.conn_closed(), "connection left open after %d %s" % (status, reason)
    else:
        n = matrix.conns_opened
        assert matrix.request("GET", matrix.echo_path).status == 200
        assert matrix.conns_opened == n, "h2 connection lost after %d %s" % (status, reason)


def test_no_route(matrix):
    matrix.start(routes=[{"name": "api", "match": {"path_prefix": "/api/"}, "upstream": "app",
                          "timeout": "5s"}])
    r = matrix.request("GET", "/nothing-here")
    assert_own_error(r, 404, "no_route")
    if matrix.down == "h1":
        assert matrix.conn_closed(), "bad input (no_route) must close the connection"
    r = matrix.request("GET", "/api/x")
    assert r.status == 200 and matrix.seen(r).path == "/api/x", r
    if matrix.down == "h2c":
        assert matrix.conns_opened == 1


def test_connect_refused(matrix):
    matrix.start(endpoints=["127.0.0.1:%d" % free_port()])
    for _ in range(2):
        assert_own_error(matrix.request("GET", "/echo"), 502, "connect_refused")


def test_upstream_reset_before_response(matrix):
    """The app drops the request without a response: h1 app closes (FIN or RST); h2c app
    resets the stream (RST_STREAM INTERNAL_ERROR), or accepts it (GOAWAY covering it) and
    closes the connection. Not retried: 502 upstream_reset."""
    if matrix.up == "h1":
        paths = ["/reset", "/reset?rst=1"]
    else:
        paths = ["/rst?code=2", "/goaway?last=self"]
    for path in paths:
        assert_own_error(matrix.request("GET", path), 502, "upstream_reset")
        assert matrix.request("GET", matrix.echo_path + "?still").status == 200


def test_upstream_timeout(matrix):
    matrix.start(routes=[{"name": "default", "match": {"path_prefix": "/"}, "upstream": "app",
                          "timeout": "300ms"}])
    t0 = time.monotonic()
    r = matrix.request("GET", matrix.sleep_path(3000))
    took = time.monotonic() - t0
    assert_own_error(r, 504, "upstream_timeout")
    assert 0.25 <= took < 1.5, took
    assert matrix.request("GET", matrix.sleep_path(50)).status == 200


LIMITS = {"max_header_bytes": "4KiB", "max_headers": 20, "max_body_bytes": "1KiB"}


def test_header_limits(matrix):
    """max_header_bytes and max_headers: 431 over them, served under them."""
    matrix.start(limits=LIMITS)
    r = matrix.request("GET", matrix.echo_path, headers=[("X-Big", "a" * 6000)])
    assert_request_refused(matrix, r, 431, "header_too_large")
    assert matrix.request("GET", matrix.echo_path, headers=[("X-Big", "a" * 3000)]).status == 200
    r = matrix.request("GET", matrix.echo_path, headers=[("X-H%d" % i, "v") for i in range(40)])
    assert_request_refused(matrix, r, 431, "too_many_headers")
    r = matrix.request("GET", matrix.echo_path, headers=[("X-H%d" % i, "v") for i in range(10)])
    assert r.status == 200, r


def test_body_limit(matrix):
    """max_body_bytes 1 KiB: 413 for a declared length over it and for a body without a length
    (h1: chunked in several chunks) that grows over it, even by one byte; 1 KiB passes."""
    matrix.start(limits=LIMITS)
    for size, with_length, chunk in ((2048, True, 0), (3000, False, 500), (1025, True, 0),
                                      (1025, False, 100)):
        r = matrix.request("POST", matrix.echo_path, body=b"x" * size,
                           content_length=with_length, chunk=chunk or 4096)
        assert_request_refused(matrix, r, 413, "body_too_large")
    for with_length in (True, False):
        r = matrix.request("POST", matrix.echo_path, body=b"y" * 1024,
                           content_length=with_length, chunk=100)
        assert matrix.seen(r).body_len == 1024, r
