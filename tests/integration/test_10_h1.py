# SPDX-License-Identifier: Apache-2.0
"""10: what only HTTP/1.x downstream has: keep-alive, pipelining, Connection: close, HTTP/1.0
clients, HEAD of a chunked response, Expect: 100-continue, chunk extensions and trailers in a
request, close-delimited and chunked bodies converted for the client's version, 1xx responses,
absolute-form targets. Every test that takes `proxy` runs twice: the app reached over TCP
loopback, then over a Unix-domain socket (`endpoints: ["unix:/path"]`), since none of this may
depend on the upstream transport. What every protocol pair shares (forwarded headers, X-Request-Id,
hop-by-hop headers, bodies, HEAD/204/304, trailers, remora's own errors) runs over the
protocol matrix in test_23_matrix.py."""

import hashlib
import re
import subprocess
import time

import pytest

from conftest import upstream_endpoints
from helpers import HttpConn, build_request, chunked_body, curl, http, pattern


@pytest.fixture(params=["tcp", "unix"])
def proxy(request, remora, upstream_factory, sockdir):
    """remora with the default one-route config in front of a fresh upstream, reached over TCP
    or over a Unix socket."""
    return remora(endpoints=upstream_endpoints(request.param, upstream_factory, sockdir))


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


# ---- request target -----------------------------------------------------------------------

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
