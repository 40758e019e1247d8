# SPDX-License-Identifier: Apache-2.0
"""10: HTTP/1.1 and HTTP/1.0 downstream semantics: keep-alive, pipelining, HEAD,
Expect: 100-continue, chunked in both directions, Connection: close, hop-by-hop headers and
the headers remora adds (X-Forwarded-*, X-Request-Id)."""

import hashlib
import re
import subprocess
import time

from helpers import (UUID4_RE, HttpConn, build_request, chunked_body, curl, http, pattern)


def app_headers(resp):
    """The request headers the upstream saw, as [(name, value)] (from /echo)."""
    return [(k, v) for k, v in resp.json()["headers"]]


def app_header_all(resp, name):
    return [v for k, v in app_headers(resp) if k.lower() == name.lower()]


# ---- connection management ----------------------------------------------------------------

def test_keep_alive_many_requests_one_connection(proxy):
    with HttpConn(proxy.port) as c:
        for i in range(20):
            c.request("GET", "/echo?i=%d" % i)
            r = c.read_response()
            assert r.status == 200 and r.complete
            assert r.json()["path"] == "/echo?i=%d" % i
            assert "close" not in (r.header("connection") or "").lower()
        assert not c.is_closed(wait=0.2)


def test_curl_reuses_connection(proxy):
    url = "http://127.0.0.1:%d/echo" % proxy.port
    p = curl("-v", "-o", "/dev/null", "-o", "/dev/null", url, url)
    assert p.returncode == 0, p.stderr
    assert re.search(rb"Re-?using existing connection", p.stderr), p.stderr


def test_pipelined_requests_answered_in_order(proxy):
    body = pattern(0, 3000)
    reqs = [
        build_request("GET", "/delay?ms=300&i=0"),
        build_request("POST", "/echo?i=1", body=body),
        build_request("GET", "/bytes?n=5"),
        build_request("GET", "/chunked?n=3000&chunk=100"),
        build_request("HEAD", "/bytes?n=77"),
        build_request("POST", "/echo?i=5", headers=[("Transfer-Encoding", "chunked")],
                      body=chunked_body(body, 500)),
        build_request("GET", "/echo?i=6"),
    ]
    with HttpConn(proxy.port) as c:
        c.send(b"".join(reqs))
        r = c.read_response()
        assert (r.status, r.body) == (200, b"ok")
        r = c.read_response()
        assert r.json()["path"] == "/echo?i=1"
        assert r.json()["body_sha256"] == hashlib.sha256(body).hexdigest()
        r = c.read_response()
        assert r.body == b"01234"
        r = c.read_response()
        assert r.complete and r.body == pattern(0, 3000)
        r = c.read_response(method="HEAD")
        assert r.header("content-length") == "77" and r.body == b""
        r = c.read_response()
        assert r.json()["path"] == "/echo?i=5" and r.json()["body_len"] == 3000
        r = c.read_response()
        assert r.json()["path"] == "/echo?i=6"


def test_connection_close_from_client(proxy):
    with HttpConn(proxy.port) as c:
        c.request("GET", "/echo", headers=[("Connection", "close")])
        r = c.read_response()
        assert r.status == 200
        assert "close" in (r.header("connection") or "").lower(), r.headers
        assert c.is_closed()


def test_no_request_processed_after_connection_close(proxy):
    """RFC 9112 9.6: after a request with Connection: close, later pipelined requests on
    that connection are not processed."""
    with HttpConn(proxy.port) as c:
        c.send(build_request("GET", "/echo?1", headers=[("Connection", "close")])
               + build_request("GET", "/echo?2"))
        r = c.read_response()
        assert r.json()["path"] == "/echo?1"
        assert c.read_all(deadline=2) == b"" and c.eof


def test_http10_client_closed_after_response(proxy):
    with HttpConn(proxy.port) as c:
        c.send(b"GET /echo HTTP/1.0\r\nHost: x\r\n\r\n")
        r = c.read_response()
        assert r.status == 200 and r.complete
        assert r.json()["path"] == "/echo"
        assert c.is_closed()


def test_http10_client_without_host(proxy):
    with HttpConn(proxy.port) as c:
        c.send(b"GET /echo HTTP/1.0\r\n\r\n")
        r = c.read_response()
        assert r.status == 200 and r.complete


def test_http10_keep_alive(proxy):
    with HttpConn(proxy.port) as c:
        for i in range(3):
            c.send(b"GET /echo?i=%d HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\n" % i)
            r = c.read_response()
            assert r.status == 200 and r.complete
            assert r.json()["path"] == "/echo?i=%d" % i
        assert not c.is_closed(wait=0.2)


def test_http10_keep_alive_response_says_so(proxy):
    """An HTTP/1.0 client keeps the connection only if the response says keep-alive."""
    with HttpConn(proxy.port) as c:
        c.send(b"GET /bytes?n=10 HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\n")
        r = c.read_response()
        assert "keep-alive" in (r.header("connection") or "").lower(), r.headers


# ---- HEAD, Expect, bodies -----------------------------------------------------------------

def test_head_keeps_content_length_and_sends_no_body(proxy):
    with HttpConn(proxy.port) as c:
        c.send(build_request("HEAD", "/bytes?n=1000") + build_request("GET", "/echo?after=head"))
        r = c.read_response(method="HEAD")
        assert r.status == 200 and r.header("content-length") == "1000"
        r2 = c.read_response()
        assert r2.json()["path"] == "/echo?after=head", "HEAD response carried body bytes"
        assert r2.json()["method"] == "GET"


def test_head_forwarded_as_head(proxy):
    with HttpConn(proxy.port) as c:
        c.send(build_request("HEAD", "/echo") + build_request("GET", "/echo?x"))
        r = c.read_response(method="HEAD")
        assert r.status == 200 and int(r.header("content-length")) > 0
        assert c.read_response().json()["path"] == "/echo?x"


def test_head_on_chunked_upstream(proxy):
    with HttpConn(proxy.port) as c:
        c.send(build_request("HEAD", "/chunked?n=5000") + build_request("GET", "/echo?after"))
        r = c.read_response(method="HEAD")
        assert r.status == 200
        assert c.read_response().json()["path"] == "/echo?after"


def test_expect_100_continue(proxy):
    with HttpConn(proxy.port) as c:
        c.send(build_request("POST", "/echo", headers=[("Expect", "100-continue"),
                                                        ("Content-Length", "11")]))
        interim = c.read_head()
        assert interim.status == 100, interim
        assert interim.version == "HTTP/1.1"
        c.send(b"hello world")
        r = c.read_response()
        assert r.status == 200
        doc = r.json()
        assert doc["body_len"] == 11
        assert doc["body_sha256"] == hashlib.sha256(b"hello world").hexdigest()
        assert not app_header_all(r, "expect"), doc["headers"]


def test_expect_100_continue_with_curl(proxy):
    data = pattern(0, 2 * 1024 * 1024)
    t0 = time.monotonic()
    p = subprocess.run(["curl", "-sS", "--noproxy", "*", "--max-time", "10", "-H",
                        "Expect: 100-continue", "--expect100-timeout", "5", "--data-binary",
                        "@-", "http://127.0.0.1:%d/upload" % proxy.port],
                       input=data, capture_output=True, timeout=15)
    assert p.returncode == 0, p.stderr
    assert b'"body_len": %d' % len(data) in p.stdout
    assert time.monotonic() - t0 < 4, "curl waited for its expect timeout: no 100 Continue"


def test_expect_100_continue_not_sent_before_an_error(remora, upstream):
    """100 Continue means remora is ready for the body: a request that cannot be forwarded
    (no route, upstream refused) gets its final status without a 100 first."""
    from helpers import free_port
    dead = free_port()
    p = remora(upstreams=[
        {"name": "dead", "endpoints": ["127.0.0.1:%d" % dead], "connect_timeout": "1s",
         "idle_timeout": "2s", "max_connections": 64}],
        routes=[{"name": "dead", "match": {"path_prefix": "/dead/"}, "upstream": "dead",
                 "timeout": "5s"}])
    for target, status in (("/dead/x", 502), ("/nowhere", 404)):
        with HttpConn(p.port) as c:
            c.send(build_request("POST", target, headers=[("Expect", "100-continue"),
                                                          ("Content-Length", "5")]))
            r = c.read_response(skip_1xx=False)
            assert r.status == status, (target, r)


def test_expect_100_continue_ignored_for_http10(proxy):
    """RFC 9110 10.1.1: an HTTP/1.0 request's 100-continue expectation is ignored; no 1xx
    may be sent to an HTTP/1.0 client."""
    with HttpConn(proxy.port) as c:
        c.send(b"POST /echo HTTP/1.0\r\nHost: x\r\nExpect: 100-continue\r\n"
               b"Content-Length: 5\r\n\r\nhello")
        r = c.read_response(skip_1xx=False)
        assert r.status == 200, r
        assert r.json()["body_len"] == 5


def test_content_length_request_body(proxy):
    data = pattern(3, 1024 * 1024 + 7)
    with HttpConn(proxy.port, timeout=10) as c:
        c.request("PUT", "/echo", body=data)
        doc = c.read_response().json()
    assert doc["method"] == "PUT"
    assert doc["body_len"] == len(data)
    assert doc["body_sha256"] == hashlib.sha256(data).hexdigest()


def test_chunked_request_body(proxy):
    data = pattern(0, 200000)
    with HttpConn(proxy.port, timeout=10) as c:
        c.request("POST", "/echo", headers=[("Transfer-Encoding", "chunked")],
                  body=chunked_body(data, 4099, trailers=[("X-Sum", "1")], ext=True))
        r = c.read_response()
        doc = r.json()
        assert doc["body_len"] == len(data)
        assert doc["body_sha256"] == hashlib.sha256(data).hexdigest()
        # and the connection is still in sync
        c.request("GET", "/echo?next")
        assert c.read_response().json()["path"] == "/echo?next"


def test_chunked_response_to_http11_client(proxy):
    with HttpConn(proxy.port) as c:
        c.request("GET", "/chunked?n=100000&chunk=1000")
        r = c.read_response()
        assert r.chunked and r.complete and r.header("content-length") is None
        assert r.body == pattern(0, 100000)
        c.request("GET", "/echo?next")
        assert c.read_response().json()["path"] == "/echo?next"


def test_content_length_response_kept(proxy):
    with HttpConn(proxy.port) as c:
        c.request("GET", "/bytes?n=100000")
        r = c.read_response()
        assert r.header("content-length") == "100000" and not r.chunked
        assert r.body == pattern(0, 100000)


def test_close_delimited_upstream_to_http11_client_is_chunked(proxy):
    with HttpConn(proxy.port) as c:
        c.request("GET", "/http10")
        r = c.read_response()
        assert r.status == 200
        assert r.chunked, r.headers
        assert r.complete and r.body == b"hello10"
        c.request("GET", "/echo?next")
        assert c.read_response().json()["path"] == "/echo?next"


def test_chunked_upstream_to_http10_client_is_close_delimited(proxy):
    with HttpConn(proxy.port) as c:
        c.send(b"GET /chunked?n=50000&chunk=999 HTTP/1.0\r\nHost: x\r\n\r\n")
        r = c.read_response()
        assert r.status == 200
        assert not r.chunked and r.header("transfer-encoding") is None, r.headers
        assert r.body == pattern(0, 50000) and r.eof_after and r.complete


def test_chunked_upstream_to_http10_keep_alive_client(proxy):
    with HttpConn(proxy.port) as c:
        c.send(b"GET /chunked?n=5000 HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\n")
        r = c.read_response()
        assert r.header("transfer-encoding") is None, r.headers
        assert r.body == pattern(0, 5000) and r.complete


def test_upstream_interim_responses_keep_framing(proxy):
    """An upstream 103 and 100 before the final response. RFC 9110 15.2: the 103 goes on to an
    HTTP/1.1 client with its end-to-end headers; the 100 does not (remora answers Expect
    itself); the final response is intact and the connection stays in sync."""
    with HttpConn(proxy.port) as c:
        c.request("GET", "/early-hints")
        r = c.read_response()
        assert r.status == 200 and r.json()["path"] == "/early-hints"
        assert [i.status for i in r.interim] == [103], r.interim
        assert r.interim[0].header("link") == "</style.css>; rel=preload"
        c.request("GET", "/echo?next")
        assert c.read_response().json()["path"] == "/echo?next"


def test_upstream_interim_responses_not_sent_to_http10(proxy):
    """RFC 9110 15.2: no 1xx to an HTTP/1.0 client."""
    with HttpConn(proxy.port) as c:
        c.send(b"GET /early-hints HTTP/1.0\r\nHost: x\r\n\r\n")
        r = c.read_response()
        assert r.status == 200 and r.interim == [], r.interim


def test_no_body_statuses(proxy):
    with HttpConn(proxy.port) as c:
        c.send(build_request("GET", "/status/204") + build_request("GET", "/status/304")
               + build_request("GET", "/status/503") + build_request("GET", "/echo?z"))
        assert c.read_response().status == 204
        assert c.read_response().status == 304
        r = c.read_response()
        assert r.status == 503 and r.body == b"status 503\n"
        assert c.read_response().json()["path"] == "/echo?z"


# ---- headers -----------------------------------------------------------------------------

def test_hop_by_hop_removed_toward_app(proxy):
    r = http(proxy.port, "GET", "/echo", headers=[
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
    assert r.status == 200
    names = {k.lower() for k, _ in app_headers(r)}
    for h in ("x-hop-a", "x-hop-b", "keep-alive", "te", "trailer", "upgrade",
              "proxy-connection"):
        assert h not in names, (h, app_headers(r))
    for v in app_header_all(r, "connection"):
        assert "x-hop" not in v.lower(), app_headers(r)
    assert app_header_all(r, "x-end-to-end") == ["kept"]


def test_transfer_encoding_not_forwarded_as_is(proxy):
    """The app sees a body framed once: never the client's Transfer-Encoding together with a
    Content-Length, and never a chunked header on a body remora re-framed."""
    r = http(proxy.port, "POST", "/echo", headers=[("Transfer-Encoding", "chunked")],
             body=chunked_body(b"abcdef", 2))
    doc = r.json()
    te = app_header_all(r, "transfer-encoding")
    cl = app_header_all(r, "content-length")
    assert doc["body_len"] == 6
    assert not (te and cl), doc["headers"]
    assert doc["body_chunked"] == bool(te), doc


def test_hop_by_hop_removed_toward_client(proxy):
    sets = ["Connection:x-resp-hop", "X-Resp-Hop:1", "Keep-Alive:timeout=9",
            "Proxy-Connection:keep-alive", "Upgrade:foo", "Trailer:x-t", "X-End:kept"]
    target = "/echo?" + "&".join("set=" + s for s in sets)
    r = http(proxy.port, "GET", target)
    assert r.status == 200
    names = {k.lower() for k, _ in r.headers}
    for h in ("x-resp-hop", "keep-alive", "proxy-connection", "upgrade", "trailer"):
        assert h not in names, (h, r.headers)
    for v in r.header_all("connection"):
        assert "x-resp-hop" not in v.lower()
    assert r.header_all("x-end") == ["kept"]


def test_host_preserved(proxy):
    r = http(proxy.port, "GET", "/echo", headers=[("Host", "api.example.com:8443")])
    assert app_header_all(r, "host") == ["api.example.com:8443"]


def test_x_forwarded_for_and_proto_set(proxy):
    r = http(proxy.port, "GET", "/echo")
    assert app_header_all(r, "x-forwarded-for") == ["127.0.0.1"]
    assert app_header_all(r, "x-forwarded-proto") == ["http"]


def test_x_forwarded_for_and_proto_appended(proxy):
    r = http(proxy.port, "GET", "/echo", headers=[("X-Forwarded-For", "203.0.113.7"),
                                                  ("X-Forwarded-Proto", "https")])
    assert app_header_all(r, "x-forwarded-for") == ["203.0.113.7, 127.0.0.1"]
    assert app_header_all(r, "x-forwarded-proto") == ["https, http"]


def test_request_id_generated(proxy):
    ids = set()
    with HttpConn(proxy.port) as c:
        for _ in range(5):
            c.request("GET", "/echo")
            r = c.read_response()
            sent = app_header_all(r, "x-request-id")
            assert len(sent) == 1 and UUID4_RE.match(sent[0]), sent
            assert r.header_all("x-request-id") == sent, r.headers
            ids.add(sent[0])
    assert len(ids) == 5


def test_request_id_from_client_kept(proxy):
    r = http(proxy.port, "GET", "/echo", headers=[("X-Request-Id", "client-id-42")])
    assert app_header_all(r, "x-request-id") == ["client-id-42"]
    assert r.header_all("x-request-id") == ["client-id-42"]


def test_request_id_on_non_echo_response(proxy):
    r = http(proxy.port, "GET", "/bytes?n=10")
    assert UUID4_RE.match(r.header("x-request-id") or ""), r.headers


def test_traceparent_untouched(proxy):
    tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    r = http(proxy.port, "GET", "/echo", headers=[("traceparent", tp),
                                                  ("tracestate", "congo=t61rcWkgMzE")])
    assert app_header_all(r, "traceparent") == [tp]
    assert app_header_all(r, "tracestate") == ["congo=t61rcWkgMzE"]


def test_end_to_end_headers_order_and_duplicates_kept(proxy):
    r = http(proxy.port, "GET", "/echo", headers=[("X-Dup", "1"), ("Accept", "*/*"),
                                                  ("X-Dup", "2"), ("Cookie", "a=b")])
    assert app_header_all(r, "x-dup") == ["1", "2"]
    assert app_header_all(r, "cookie") == ["a=b"]


def test_absolute_form_target_forwarded_as_origin_form(proxy):
    """RFC 9112 3.2.1: a request to an origin server carries only path and query; remora
    must accept absolute-form (3.2.2) and forward origin-form."""
    r = http(proxy.port, "GET", "http://example.com/echo?abs", headers=[("Host", "example.com")])
    assert r.status == 200
    assert r.json()["path"] == "/echo?abs", r.json()


def test_absolute_form_host_taken_from_target(proxy):
    """RFC 9112 3.2.2: with an absolute-form target the received Host is ignored and a new
    one is generated from the target's authority."""
    r = http(proxy.port, "GET", "http://example.com/echo", headers=[("Host", "other.test")])
    assert r.status == 200
    assert app_header_all(r, "host") == ["example.com"], r.json()["headers"]


def test_method_and_target_forwarded(proxy):
    for m in ("GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"):
        r = http(proxy.port, m, "/echo/a%20b?q=1&r=%2F")
        doc = r.json()
        assert doc["method"] == m
        assert doc["path"] == "/echo/a%20b?q=1&r=%2F"
        assert doc["version"] == "HTTP/1.1"
