# SPDX-License-Identifier: Apache-2.0
"""30: the upstream connection pool: reuse with keep-alive, idle timeout, no reuse of a
connection the upstream closes, and the one retry of a request that failed on a reused
connection before any response byte."""

import threading
import time

from helpers import HttpConn, http, pattern, wait_for


def upconn(r):
    return r.header("x-upstream-conn"), int(r.header("x-upstream-req-on-conn"))


def test_sequential_requests_reuse_one_upconn(remora, upstream):
    p = remora(upstream, workers=1)
    seen = []
    with HttpConn(p.port) as c:
        for _ in range(5):
            c.request("GET", "/echo")
            seen.append(upconn(c.read_response()))
    assert len({cid for cid, _ in seen}) == 1, seen
    assert [n for _, n in seen] == [1, 2, 3, 4, 5], seen


def test_reuse_across_client_connections(remora, upstream):
    p = remora(upstream, workers=1)
    seen = [upconn(http(p.port, "GET", "/echo")) for _ in range(4)]
    assert len({cid for cid, _ in seen}) == 1, seen
    assert upstream.stats()["conns_total"] == 2  # the pooled one and this stats query


def test_reuse_after_bodies_of_every_framing(remora, upstream):
    p = remora(upstream, workers=1)
    with HttpConn(p.port) as c:
        seen = []
        for target in ("/bytes?n=70000", "/chunked?n=70000&chunk=4000", "/status/204",
                       "/echo"):
            c.request("GET", target)
            r = c.read_response()
            assert r.complete
            seen.append(upconn(r))
        c.request("POST", "/upload", body=pattern(0, 100000))
        seen.append(upconn(c.read_response()))
    assert len({cid for cid, _ in seen}) == 1, seen


def test_idle_upconn_closed_after_idle_timeout(remora, upstream):
    p = remora(upstream, workers=1, upstream_opts={"idle_timeout": "300ms"})
    first = upconn(http(p.port, "GET", "/echo"))
    time.sleep(0.6)
    # remora closed its idle upconn: only the stats query itself is open at the upstream
    assert wait_for(lambda: upstream.stats()["conns_open"] == 1, timeout=1.0), upstream.stats()
    second = upconn(http(p.port, "GET", "/echo"))
    assert second[0] != first[0] and second[1] == 1, (first, second)


def test_idle_upconn_kept_before_idle_timeout(remora, upstream):
    p = remora(upstream, workers=1, upstream_opts={"idle_timeout": "2s"})
    first = upconn(http(p.port, "GET", "/echo"))
    time.sleep(0.5)
    second = upconn(http(p.port, "GET", "/echo"))
    assert second == (first[0], 2), (first, second)


def test_upconn_not_reused_after_upstream_connection_close(remora, upstream):
    p = remora(upstream, workers=1)
    with HttpConn(p.port) as c:
        c.request("GET", "/echo?close=1")
        r1 = c.read_response()
        assert r1.status == 200
        c.request("GET", "/echo")
        r2 = c.read_response()
        assert r2.status == 200, r2
        assert upconn(r2)[0] != upconn(r1)[0]
        c.request("GET", "/http10")
        assert c.read_response().body == b"hello10"
        c.request("GET", "/echo")
        assert c.read_response().status == 200


def test_retry_idempotent_request_on_reused_upconn(remora, upstream):
    p = remora(upstream, workers=1)
    with HttpConn(p.port) as c:
        c.request("GET", "/echo")
        first = upconn(c.read_response())
        c.request("GET", "/echo?race", headers=[("x-test-close-if-reused", "1")])
        r = c.read_response()
        assert r.status == 200, (r, r.body)
        assert r.json()["path"] == "/echo?race"
        assert upconn(r)[0] != first[0] and upconn(r)[1] == 1
    assert len([e for e in p.access_logs(at_least=2) if e.get("status") == 200]) >= 2


def test_retry_bodyless_post_on_reused_upconn(remora, upstream):
    p = remora(upstream, workers=1)
    with HttpConn(p.port) as c:
        c.request("GET", "/echo")
        c.read_response()
        c.request("POST", "/echo?race", headers=[("x-test-close-if-reused", "1"),
                                                 ("Content-Length", "0")])
        r = c.read_response()
        assert r.status == 200, (r, r.body)
        assert r.json()["method"] == "POST"


def test_post_with_body_not_retried(remora, upstream):
    p = remora(upstream, workers=1)
    with HttpConn(p.port) as c:
        c.request("GET", "/echo")
        c.read_response()
        before = upstream.stats()["requests"]
        c.request("POST", "/echo?race", headers=[("x-test-close-if-reused", "1")],
                  body=b"x" * 1000)
        r = c.read_response()
        assert r.status == 502, (r, r.body)
        assert r.header("x-remora-error") == "upstream_reset"
    after = upstream.stats()["requests"]
    # the POST reached the app once; the second stats query is the other request counted
    assert after - before == 2, (before, after)


def test_retry_only_once(remora, upstream):
    p = remora(upstream, workers=1)
    with HttpConn(p.port) as c:
        c.request("GET", "/echo")
        c.read_response()
        before = upstream.stats()["requests"]
        c.request("GET", "/reset")
        r = c.read_response()
        assert r.status == 502 and r.header("x-remora-error") == "upstream_reset", r
    after = upstream.stats()["requests"]
    # one attempt on the reused upconn, one retry on a fresh one, plus the stats query
    assert after - before == 3, (before, after)


def test_no_retry_on_fresh_upconn(remora, upstream):
    p = remora(upstream, workers=1)
    before = upstream.stats()["requests"]
    r = http(p.port, "GET", "/reset")
    assert r.status == 502 and r.header("x-remora-error") == "upstream_reset"
    assert upstream.stats()["requests"] - before == 2  # /reset once, plus the stats query


def test_concurrent_requests_use_several_upconns_then_reuse(remora, upstream):
    p = remora(upstream, workers=1)
    results = []

    def one():
        try:
            results.append(upconn(http(p.port, "GET", "/delay?ms=300")))
        except Exception as e:  # noqa: BLE001 - reported below
            results.append(e)

    ts = [threading.Thread(target=one) for _ in range(8)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(10)
    assert all(isinstance(x, tuple) for x in results) and len(results) == 8, results
    ids = {cid for cid, _ in results}
    assert len(ids) == 8, results
    later = {upconn(http(p.port, "GET", "/echo"))[0] for _ in range(4)}
    assert later <= ids, (later, ids)
    assert upstream.stats()["conns_total"] == 9


def test_client_abort_mid_response_does_not_poison_pool(remora, upstream):
    p = remora(upstream, workers=1)
    with HttpConn(p.port) as c:
        c.request("GET", "/bytes?n=%d" % (50 * 1024 * 1024))
        r = c.read_head()
        assert r.status == 200
        c.sock.recv(65536)
    for i in range(3):
        r = http(p.port, "GET", "/echo?i=%d" % i)
        assert r.status == 200 and r.json()["path"] == "/echo?i=%d" % i
    # the aborted upconn is not left open forever
    assert wait_for(lambda: upstream.stats()["conns_open"] <= 2, timeout=3), upstream.stats()


def test_retry_idempotent_put_with_body(remora, upstream):
    """The retry rule is "idempotent OR no body sent": PUT is idempotent (RFC 9110 9.2.2),
    so a PUT that failed on a reused upconn before any response byte is retried, body and
    all, like nginx and Envoy do for small bodies."""
    p = remora(upstream, workers=1)
    body = pattern(0, 1000)
    with HttpConn(p.port) as c:
        c.request("GET", "/echo")
        c.read_response()
        c.request("PUT", "/echo?race", headers=[("x-test-close-if-reused", "1")], body=body)
        r = c.read_response()
        assert r.status == 200, (r, r.body)
        assert r.json()["body_len"] == 1000


def test_max_connections_bounds_upconns(remora, upstream):
    p = remora(upstream, workers=1, upstream_opts={"max_connections": 2})
    results = []

    def one():
        try:
            r = http(p.port, "GET", "/delay?ms=300")
            results.append((r.status, r.header("x-remora-error")))
        except Exception as e:  # noqa: BLE001 - reported below
            results.append(repr(e))

    ts = [threading.Thread(target=one) for _ in range(6)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(10)
    assert len(results) == 6, results
    assert results.count((200, None)) >= 2, results
    # every request is answered: served, or refused with the overflow error
    assert all(x in ((200, None), (503, "upstream_overflow")) for x in results), results
    assert upstream.stats()["conns_total"] <= 2 + 1, "more upconns than max_connections"


def test_upstream_closing_idle_upconn_is_not_an_error(remora, upstream):
    """The app closes idle keep-alive connections after 100 ms (its own keep-alive timeout,
    shorter than remora's idle_timeout); later requests still succeed."""
    p = remora(upstream, workers=1, upstream_opts={"idle_timeout": "10s"})
    with HttpConn(p.port) as c:
        for i in range(3):
            c.request("GET", "/echo?idle_close_ms=100&i=%d" % i)
            r = c.read_response()
            assert r.status == 200, (i, r, r.body)
            time.sleep(0.3)


def test_upstream_closing_right_after_response(remora, upstream):
    """The app closes the connection right after a keep-alive response (no Connection: close):
    the next request goes to a fresh upconn or is retried, never a 502."""
    p = remora(upstream, workers=1)
    with HttpConn(p.port) as c:
        for i in range(10):
            c.request("GET", "/echo?idle_close_ms=0&i=%d" % i)
            r = c.read_response()
            assert r.status == 200, (i, r, r.body)
