# SPDX-License-Identifier: Apache-2.0
"""01: the test upstream itself (no remora involved), so that a failure elsewhere is remora's
and not the harness's."""

import hashlib
import threading
import time

import pytest

from helpers import (HttpConn, build_request, chunked_body, http, pattern, pattern_sha256,
                     wait_for)

pytestmark = pytest.mark.no_remora


def test_echo_reports_request_and_conn_ids(upstream):
    with HttpConn(upstream.port) as c:
        c.request("POST", "/echo?a=1", headers=[("X-A", "1"), ("x-a", "2")], body=b"hello")
        r = c.read_response()
        doc = r.json()
        assert r.status == 200
        assert doc["method"] == "POST" and doc["path"] == "/echo?a=1"
        assert doc["version"] == "HTTP/1.1"
        assert ["X-A", "1"] in doc["headers"] and ["x-a", "2"] in doc["headers"]
        assert doc["body_len"] == 5
        assert doc["body_sha256"] == hashlib.sha256(b"hello").hexdigest()
        assert doc["body_chunked"] is False
        conn = r.header("x-upstream-conn")
        assert r.header("x-upstream-req-on-conn") == "1"
        c.request("GET", "/whatever")
        r2 = c.read_response()
        assert r2.header("x-upstream-conn") == conn
        assert r2.header("x-upstream-req-on-conn") == "2"


def test_pipelining_and_chunked_request_body(upstream):
    data = pattern(0, 5000)
    with HttpConn(upstream.port) as c:
        c.send(build_request("GET", "/delay?ms=100")
               + build_request("POST", "/echo", headers=[("Transfer-Encoding", "chunked")],
                               body=chunked_body(data, 777, trailers=[("x-t", "1")]))
               + build_request("HEAD", "/bytes?n=100")
               + build_request("GET", "/status/204"))
        r1 = c.read_response()
        assert (r1.status, r1.body) == (200, b"ok")
        doc = c.read_response().json()
        assert doc["body_len"] == 5000 and doc["body_chunked"] is True
        assert doc["body_sha256"] == hashlib.sha256(data).hexdigest()
        assert doc["trailers"] == [["x-t", "1"]]
        r3 = c.read_response(method="HEAD")
        assert r3.header("content-length") == "100" and r3.body == b""
        assert c.read_response().status == 204


def test_bodies_and_failures(upstream):
    with HttpConn(upstream.port) as c:
        c.request("GET", "/bytes?n=100000")
        r = c.read_response()
        assert r.body == pattern(0, 100000)
        c.request("GET", "/chunked?n=100000&chunk=999&trailer=1")
        r = c.read_response()
        assert r.chunked and r.complete and r.body == pattern(0, 100000)
        assert r.trailers == [("x-trailer", "yes")]
        c.request("GET", "/close-mid?n=1000&send=300")
        r = c.read_response()
        assert not r.complete and r.body_len == 300
    with HttpConn(upstream.port) as c:
        c.request("GET", "/close-mid-chunked?send=3000")
        r = c.read_response()
        assert r.chunked and not r.complete and r.body_len == 3000
    with HttpConn(upstream.port) as c:
        c.request("GET", "/http10")
        r = c.read_response()
        assert r.version == "HTTP/1.0" and r.body == b"hello10" and r.complete
    with HttpConn(upstream.port) as c:
        c.request("GET", "/reset")
        assert c.read_all() == b""
    with HttpConn(upstream.port) as c:
        c.request("GET", "/echo", headers=[("x-test-close-if-reused", "1")])
        assert c.read_response().status == 200
        c.request("GET", "/echo", headers=[("x-test-close-if-reused", "1")])
        assert c.read_all() == b""


def test_upload_streams_large_chunked_body(upstream):
    n = 8 * 1024 * 1024
    with HttpConn(upstream.port, timeout=20) as c:
        c.send(build_request("PUT", "/upload", headers=[("Transfer-Encoding", "chunked")]))
        block = pattern(0, 65536)
        for _ in range(n // 65536):
            c.send(b"10000\r\n" + block + b"\r\n")
        c.send(b"0\r\n\r\n")
        doc = c.read_response().json()
    assert doc == {"body_len": n, "body_sha256": pattern_sha256(n)}


def test_http10_request_semantics(upstream):
    with HttpConn(upstream.port) as c:
        c.send(b"GET /echo HTTP/1.0\r\n\r\n")
        r = c.read_response()
        assert r.version == "HTTP/1.0" and r.status == 200
        assert c.is_closed()
    with HttpConn(upstream.port) as c:
        c.send(b"GET /chunked?n=1000 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        r = c.read_response()
        assert not r.chunked and r.body == pattern(0, 1000) and r.eof_after


def test_stats_count_requests_in_flight_and_their_peak(upstream):
    ts = [threading.Thread(target=http, args=(upstream.port, "GET", "/delay?ms=400"))
          for _ in range(3)]
    for t in ts:
        t.start()
    time.sleep(0.2)
    mid = upstream.stats()
    for t in ts:
        t.join(5)
    after = upstream.stats(reset_peak=True)
    assert (mid["in_flight"], mid["max_in_flight"]) == (3, 3), mid  # /_stats is not counted
    assert (after["in_flight"], after["max_in_flight"]) == (0, 3), after
    assert upstream.stats()["max_in_flight"] == 0


def test_stats_count_proxied_connections(upstream):
    """proxied_conns_total / proxied_conns_open count the connections that carried a request
    outside /_... (what remora opens); the /_stats asks themselves are not counted."""
    st = upstream.stats()
    assert (st["proxied_conns_total"], st["proxied_conns_open"]) == (0, 0), st
    with HttpConn(upstream.port) as c:
        for _ in range(3):
            c.request("GET", "/echo")
            assert c.read_response().status == 200
        st = upstream.stats()
        assert (st["proxied_conns_total"], st["proxied_conns_open"]) == (1, 1), st
    assert wait_for(lambda: upstream.stats()["proxied_conns_open"] == 0, 2.0), upstream.stats()
    assert http(upstream.port, "GET", "/delay?ms=1").status == 200
    assert wait_for(lambda: upstream.stats()["proxied_conns_open"] == 0, 2.0)
    assert upstream.stats()["proxied_conns_total"] == 2
