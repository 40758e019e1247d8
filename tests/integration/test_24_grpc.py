# SPDX-License-Identifier: Apache-2.0
"""24: gRPC through remora. A grpcio client speaks h2c (prior knowledge) to remora's listener,
remora forwards to grpc_app.py over an upstream with `protocol: h2c`. All four call kinds carry
their payloads byte for byte (a 1 MiB message, 1000 streamed messages), many calls share one
upstream connection, the app's grpc-status/grpc-message/trailers reach the client, a client
cancel reaches the app, and remora's own errors are gRPC errors (HTTP 200, trailers-only,
grpc-status + grpc-message = the label + x-remora-error): UNAVAILABLE for connect_refused,
queue_full and upstream_reset, DEADLINE_EXCEEDED for upstream_timeout (also when grpc-timeout
caps the route timeout), UNIMPLEMENTED for no_route. Deadlines show in the access log and
/metrics. One worker throughout, so counters and limits are not split."""

import concurrent.futures
import hashlib
import json
import os
import queue
import random
import signal
import time

import grpc
import pytest

import grpc_app
import h2raw
from helpers import MIB, metrics, wait_for

ECHO_SLEEP = "/test.Echo/Sleep"


@pytest.fixture
def app(tmp_path):
    a = grpc_app.start(tmp_path)
    yield a
    a.stop()


def grpc_proxy(remora, app_addr, upstream_opts=None, **kw):
    """remora, one worker, upstream "app" = app_addr over h2c."""
    opts = {"protocol": "h2c"}
    opts.update(upstream_opts or {})
    return remora(endpoints=[app_addr], workers=1, upstream_opts=opts, **kw)


@pytest.fixture
def gp(remora, app):
    return grpc_proxy(remora, app.addr)


@pytest.fixture
def ch(gp):
    c = grpc_app.channel(gp.port)
    yield c
    c.close()


def rng_bytes(n, seed):
    return random.Random(seed).randbytes(n)


def md(err):
    """Initial and trailing metadata of a failed call as one {name: value} dict."""
    out = {}
    for m in (err.initial_metadata() or ()), (err.trailing_metadata() or ()):
        for k, v in m:
            out[k] = v
    return out


def call_error(fn, *a, **kw):
    """Runs a call that must fail; returns (RpcError, seconds it took)."""
    t0 = time.monotonic()
    try:
        got = fn(*a, **kw)
    except grpc.RpcError as e:
        return e, time.monotonic() - t0
    raise AssertionError("the call succeeded: %r" % (got[:200] if isinstance(got, bytes) else got))


def access_line(p, path, timeout=3.0):
    """The one access-log entry for path (waits for it)."""
    end = time.monotonic() + timeout
    while True:
        got = [e for e in p.log_lines() if e.get("msg") == "access" and e.get("path") == path]
        if got or time.monotonic() >= end:
            assert len(got) <= 1, got
            return got[0] if got else None
        time.sleep(0.02)


def grpc_request(path, extra=()):
    return h2raw.request_headers(path, "POST", extra=[("content-type", "application/grpc"),
                                                      ("te", "trailers")] + list(extra))


def assert_remora_grpc_error(r, grpc_status, label):
    """r (an H2Response) is remora's own gRPC error: HTTP 200, application/grpc, trailers-only
    with grpc-status, grpc-message = label and x-remora-error = label."""
    assert r.reset is None and not r.closed, r
    assert r.status == 200, r
    assert (r.header("content-type") or "").startswith("application/grpc"), r
    assert r.headers_ended_stream and r.body == b"" and r.trailers == [], \
        "not a trailers-only response: %r" % r
    assert r.header("grpc-status") == str(grpc_status), r
    assert r.header("grpc-message") == label, r
    assert r.header("x-remora-error") == label, r


def req_total(m, route="default"):
    return m.total("remora_requests_total", route=route)


# ---- the four call kinds, byte for byte -------------------------------------------------------

@pytest.mark.parametrize("size", [0, 1, 100, 65535, 65536 + 17, MIB])
def test_unary_byte_exact(ch, size):
    req = rng_bytes(size, size)
    got = grpc_app.unary_unary(ch, "Unary")(req, timeout=20)
    assert len(got) == size
    assert got == req


def test_unary_many_sequential_and_one_mib_both_ways(ch, app):
    u = grpc_app.unary_unary(ch, "Unary")
    for i in range(50):
        m = b"msg-%d-" % i + rng_bytes(i * 37, i)
        assert u(m, timeout=10) == m
    big = rng_bytes(MIB, 7)
    resp, call = u.with_call(big, timeout=20)
    assert hashlib.sha256(resp).hexdigest() == hashlib.sha256(big).hexdigest()
    assert call.code() == grpc.StatusCode.OK
    assert app.stats()["calls"]["Unary"] == 51


def test_server_stream_1000_messages(ch):
    call = grpc_app.unary_stream(ch, "ServerStream")
    got = list(call(json.dumps({"n": 1000, "size": 100}).encode(), timeout=20))
    assert len(got) == 1000
    assert got == [grpc_app.stream_message(i, 100) for i in range(1000)]


def test_server_stream_large_messages(ch):
    """12 x 256 KiB: more than any window, so remora's flow control moves it along."""
    call = grpc_app.unary_stream(ch, "ServerStream")
    got = list(call(json.dumps({"n": 12, "size": 256 * 1024}).encode(), timeout=20))
    assert [len(m) for m in got] == [256 * 1024] * 12
    assert got == [grpc_app.stream_message(i, 256 * 1024) for i in range(12)]


def test_client_stream_1000_messages(ch, app):
    msgs = [b"%d:" % i + rng_bytes(i % 300, i) for i in range(1000)]
    got = json.loads(grpc_app.stream_unary(ch, "ClientStream")(iter(msgs), timeout=20))
    assert got == {"count": 1000, "bytes": sum(map(len, msgs)),
                   "sha256": hashlib.sha256(b"".join(msgs)).hexdigest()}


def test_client_stream_large_messages(ch):
    msgs = [rng_bytes(256 * 1024, 100 + i) for i in range(8)] + [rng_bytes(MIB, 99)]
    got = json.loads(grpc_app.stream_unary(ch, "ClientStream")(iter(msgs), timeout=30))
    assert got == {"count": 9, "bytes": 8 * 256 * 1024 + MIB,
                   "sha256": hashlib.sha256(b"".join(msgs)).hexdigest()}


def test_bidi_stream_echo_1000(ch):
    msgs = [b"bidi-%d-" % i + rng_bytes(i % 500, i) for i in range(1000)]
    got = list(grpc_app.stream_stream(ch, "BidiStream")(iter(msgs), timeout=20))
    assert len(got) == 1000
    assert got == msgs


def test_bidi_stream_lockstep(ch):
    """Each message is sent only after the echo of the previous one came back: remora relays
    every message as it arrives, it does not wait for the end of the request stream."""
    q = queue.Queue()

    def requests():
        while True:
            m = q.get(timeout=10)
            if m is None:
                return
            yield m

    call = grpc_app.stream_stream(ch, "BidiStream")(requests(), timeout=20)
    try:
        for i in range(50):
            m = b"step-%d-" % i + rng_bytes(1000 + i, i)
            q.put(m)
            assert next(call) == m, "echo %d" % i
        q.put(None)
        assert list(call) == []
        assert call.code() == grpc.StatusCode.OK
    finally:
        q.put(None)
        call.cancel()


def test_request_metadata_reaches_app_and_request_id_comes_back(ch):
    resp, call = grpc_app.unary_unary(ch, "Metadata").with_call(
        b"", timeout=10, metadata=[("x-custom", "hello"), ("x-bin-bin", b"\x00\x01\xff")])
    got = json.loads(resp)
    names = [k for k, _ in got]
    seen = dict((k, v) for k, v in got)
    assert seen.get("x-custom") == "hello", got
    assert "x-bin-bin" in seen, got
    assert seen.get("x-forwarded-for") == "127.0.0.1", got
    assert "x-request-id" in names, got
    assert not {"connection", "keep-alive", "transfer-encoding", "upgrade", "host"} & set(names), \
        got
    back = dict(call.initial_metadata())
    assert back.get("x-request-id") == seen["x-request-id"], (back, seen)


# ---- multiplexing and cancellation ----------------------------------------------------------

def test_concurrent_calls_share_one_upstream_connection(gp, app, ch):
    """20 concurrent 300 ms calls run at the same time on one upstream h2 connection (the app
    advertises no stream limit)."""
    m0 = metrics(gp.admin_port)
    sleep = grpc_app.unary_unary(ch, "Sleep")
    app.stats(reset=True)
    t0 = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(20) as ex:
        futs = [ex.submit(sleep, json.dumps({"ms": 300}).encode(), timeout=10)
                for _ in range(20)]
        results = [json.loads(f.result(15)) for f in futs]
    elapsed = time.monotonic() - t0
    assert elapsed < 2.5, "20 concurrent 300 ms calls took %.2fs: not multiplexed" % elapsed
    assert all(not r["cancelled"] for r in results), results
    peers = {r["peer"] for r in results}
    assert len(peers) == 1, "remora opened %d upstream connections: %r" % (len(peers), peers)
    assert app.stats()["max_in_flight"] >= 10
    m = metrics(gp.admin_port)
    got = m.total("remora_downstream_streams_total", proto="h2c") - \
        m0.total("remora_downstream_streams_total", proto="h2c")
    assert got == 20, "remora_downstream_streams_total{proto=h2c} delta %r" % got
    assert req_total(m) - req_total(m0) == 20


@pytest.fixture
def app4(tmp_path):
    """The app advertising SETTINGS_MAX_CONCURRENT_STREAMS 4."""
    a = grpc_app.start(tmp_path, max_streams=4)
    yield a
    a.stop()


def sleep_volley(ch, n, ms):
    """n concurrent Sleep(ms) calls on ch; returns (their JSON answers, seconds)."""
    sleep = grpc_app.unary_unary(ch, "Sleep")
    t0 = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(n) as ex:
        futs = [ex.submit(sleep, json.dumps({"ms": ms}).encode(), timeout=10)
                for _ in range(n)]
        results = [json.loads(f.result(15)) for f in futs]
    return results, time.monotonic() - t0


def test_more_upconns_only_at_app_stream_limit(remora, app4):
    """The app allows 4 streams per connection: 12 concurrent calls need exactly 3 upstream
    connections and run in one wave."""
    p = grpc_proxy(remora, app4.addr)
    with grpc_app.channel(p.port) as ch:
        assert grpc_app.unary_unary(ch, "Unary")(b"warm", timeout=5) == b"warm"
        app4.stats(reset=True)
        results, took = sleep_volley(ch, 12, 400)
    assert all(not r["cancelled"] for r in results), results
    peers = {r["peer"] for r in results}
    assert len(peers) == 3, "12 calls, 4 streams per conn: %d upstream conns %r" % (
        len(peers), peers)
    assert took < 1.0, "12 calls took %.2fs: not in one wave" % took
    assert app4.stats()["max_in_flight"] == 12


def test_streams_queue_beyond_max_connections(remora, app4):
    """max_connections 1 and 4 streams per conn: 8 concurrent calls run 4 at a time on one
    upstream connection (the rest wait in remora), all succeed."""
    p = grpc_proxy(remora, app4.addr, upstream_opts={"max_connections": 1})
    with grpc_app.channel(p.port) as ch:
        assert grpc_app.unary_unary(ch, "Unary")(b"warm", timeout=5) == b"warm"
        app4.stats(reset=True)
        results, took = sleep_volley(ch, 8, 400)
    assert all(not r["cancelled"] for r in results), results
    assert len({r["peer"] for r in results}) == 1, results
    assert app4.stats()["max_in_flight"] == 4, app4.stats()
    assert 0.75 <= took < 2.0, took


def test_client_cancel_reaches_app(gp, app, ch):
    m0 = metrics(gp.admin_port)
    fut = grpc_app.unary_unary(ch, "Sleep").future(json.dumps({"ms": 8000}).encode(),
                                                     timeout=20)
    assert wait_for(lambda: app.stats()["in_flight"] == 1, timeout=3), app.stats()
    t0 = time.monotonic()
    fut.cancel()
    st = wait_for(lambda: (lambda s: s if s["cancelled"] == 1 and s["in_flight"] == 0 else None)(
        app.stats()), timeout=3)
    assert st, "the app's call was not cancelled within 3 s: %r" % app.stats()
    assert time.monotonic() - t0 < 3
    m = wait_for(lambda: (lambda m: m if m.total("remora_http2_resets_total", side="upstream")
                          > m0.total("remora_http2_resets_total", side="upstream")
                          else None)(metrics(gp.admin_port)), timeout=2)
    assert m, "no RST_STREAM counted on the upstream side"
    assert m.total("remora_http2_resets_total", side="downstream") > \
        m0.total("remora_http2_resets_total", side="downstream")
    assert gp.alive()


# ---- the app's errors pass through ---------------------------------------------------------

@pytest.mark.parametrize("code,message", [
    (grpc.StatusCode.INVALID_ARGUMENT, "bad argument"),
    (grpc.StatusCode.NOT_FOUND, "no such thing"),
    (grpc.StatusCode.FAILED_PRECONDITION, "n\u00e4h: 100% wrong"),
    (grpc.StatusCode.UNAUTHENTICATED, "who are you"),
    (grpc.StatusCode.RESOURCE_EXHAUSTED, "slow down"),
])
def test_app_status_message_and_trailers_pass_through(ch, code, message):
    req = json.dumps({"code": code.value[0], "message": message}).encode()
    e, _ = call_error(grpc_app.unary_unary(ch, "Abort"), req, timeout=10)
    assert e.code() == code
    assert e.details() == message
    meta = md(e)
    assert meta.get("x-app-trailer") == "yes", meta
    assert "x-remora-error" not in meta, meta


def test_app_error_on_raw_h2_keeps_trailers(gp):
    """The app's headers, body-less response and trailers arrive as the app framed them."""
    with h2raw.RawConn(gp.port) as c:
        body = h2raw.grpc_message(json.dumps({"code": 5, "message": "gone"}).encode())
        r = c.read_response(c.request(grpc_request("/test.Echo/Abort"), body), timeout=10)
        assert r.status == 200, r
        assert r.meta("grpc-status") == "5", r
        assert r.meta("grpc-message") == "gone", r
        assert r.meta("x-app-trailer") == "yes", r
        sid = c.request(grpc_request("/test.Echo/Unary"), h2raw.grpc_message(b"abc"))
        r = c.read_response(sid, timeout=10)
        assert r.status == 200 and r.ended, r
        assert h2raw.grpc_messages(r.body) == [b"abc"], r
        assert r.trailers and r.trailer("grpc-status") == "0", r


# ---- deadlines -----------------------------------------------------------------------------

def test_client_deadline_shorter_than_app_sleep(gp, app, ch):
    """Deadline 500 ms, the app sleeps 3 s: DEADLINE_EXCEEDED on time, the app's call is
    ended, remora logs the call with grpc_status 4 and counts it. grpc-timeout goes on to the
    app too, so either remora's deadline (termination sH), the client's cancel (CD) or the
    app's own DEADLINE_EXCEEDED (a normal end, "--") ends it first: all are right."""
    m0 = metrics(gp.admin_port)
    e, took = call_error(grpc_app.unary_unary(ch, "Sleep"),
                         json.dumps({"ms": 3000}).encode(), timeout=0.5)
    assert e.code() == grpc.StatusCode.DEADLINE_EXCEEDED, (e.code(), e.details())
    assert 0.45 <= took < 1.5, took
    assert wait_for(lambda: app.stats()["cancelled"] == 1, timeout=3), \
        "the app's call still runs: %r" % app.stats()
    line = access_line(gp, ECHO_SLEEP)
    assert line is not None, "no access-log line for the call: %r" % gp.log_lines()[-5:]
    assert line["method"] == "POST" and line["route"] == "default", line
    assert line["termination"] in ("sH", "CD", "CH", "CR", "--"), line
    if line["termination"] != "CD":  # a client that left first got no status from remora
        assert line.get("grpc_status") == 4, line
    assert 0.4 <= line["duration_s"] < 1.5, line
    m = wait_for(lambda: (lambda m: m if req_total(m) - req_total(m0) == 1 else None)(
        metrics(gp.admin_port)), timeout=3)
    assert m, "remora_requests_total did not count the call"


def test_route_timeout_gives_deadline_exceeded(remora, app):
    """Route timeout 300 ms, client deadline 10 s: remora's own DEADLINE_EXCEEDED
    (upstream_timeout) at 300 ms, and remora resets the app's stream."""
    p = grpc_proxy(remora, app.addr, routes=[
        {"name": "default", "match": {"path_prefix": "/"}, "upstream": "app",
         "timeout": "300ms"}])
    with grpc_app.channel(p.port) as ch:
        e, took = call_error(grpc_app.unary_unary(ch, "Sleep"),
                             json.dumps({"ms": 3000}).encode(), timeout=10)
    assert e.code() == grpc.StatusCode.DEADLINE_EXCEEDED, (e.code(), e.details())
    assert e.details() == "upstream_timeout"
    assert md(e).get("x-remora-error") == "upstream_timeout", md(e)
    assert 0.25 <= took < 1.0, took
    assert wait_for(lambda: app.stats()["cancelled"] == 1, timeout=3), \
        "remora did not reset the app's stream: %r" % app.stats()
    line = access_line(p, ECHO_SLEEP)
    assert line is not None and line["termination"] == "sH", line


@pytest.mark.parametrize("grpc_timeout,secs", [("300m", 0.3), ("300000u", 0.3),
                                               ("99999999n", 0.1), ("1S", 1.0)])
def test_grpc_timeout_caps_route_timeout(remora, upstream, grpc_timeout, secs):
    """Route timeout 15 s; the request's grpc-timeout (in several units, at most 8 digits as
    the gRPC spec allows) caps it. The app is the HTTP/1.1 test upstream (which knows nothing
    of grpc-timeout) delaying 5 s, so the DEADLINE_EXCEEDED can only be remora's."""
    p = remora(upstream, workers=1)
    with h2raw.RawConn(p.port) as c:
        t0 = time.monotonic()
        sid = c.request(grpc_request("/delay?ms=5000", [("grpc-timeout", grpc_timeout)]),
                        h2raw.grpc_message(b"x"))
        r = c.read_response(sid, timeout=5)
        took = time.monotonic() - t0
    assert_remora_grpc_error(r, 4, "upstream_timeout")
    assert secs - 0.05 <= took < secs + 0.7, took
    line = access_line(p, "/delay?ms=5000") or access_line(p, "/delay")
    assert line is not None and line["termination"] == "sH", line


def test_grpc_timeout_longer_than_route_timeout(remora, upstream):
    """grpc-timeout only lowers the route timeout: 10 s against a 300 ms route gives 300 ms."""
    p = remora(upstream, workers=1, routes=[
        {"name": "default", "match": {"path_prefix": "/"}, "upstream": "app",
         "timeout": "300ms"}])
    with h2raw.RawConn(p.port) as c:
        t0 = time.monotonic()
        sid = c.request(grpc_request("/delay?ms=5000", [("grpc-timeout", "10S")]),
                        h2raw.grpc_message(b"x"))
        r = c.read_response(sid, timeout=5)
        took = time.monotonic() - t0
    assert_remora_grpc_error(r, 4, "upstream_timeout")
    assert 0.25 <= took < 1.0, took


def test_grpc_client_deadline_through_remora_bounded(gp, app, ch):
    """Route 15 s, grpcio deadline 300 ms: the client gives up at 300 ms, and remora ends the
    stream on its side as quickly (its access line is written within ~1 s, not after 15 s)."""
    e, took = call_error(grpc_app.unary_unary(ch, "Sleep"),
                         json.dumps({"ms": 5000}).encode(), timeout=0.3)
    assert e.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert took < 1.0, took
    line = access_line(gp, ECHO_SLEEP, timeout=1.5)
    assert line is not None, "remora still holds the stream"
    assert line["duration_s"] < 1.0, line


# ---- remora's own errors as gRPC errors --------------------------------------------------------

def test_upstream_down_unavailable(remora):
    p = grpc_proxy(remora, "127.0.0.1:1")
    with grpc_app.channel(p.port) as ch:
        e, took = call_error(grpc_app.unary_unary(ch, "Unary"), b"hi", timeout=5)
    assert e.code() == grpc.StatusCode.UNAVAILABLE, (e.code(), e.details())
    assert e.details() == "connect_refused"
    assert md(e).get("x-remora-error") == "connect_refused", md(e)
    assert took < 3
    with h2raw.RawConn(p.port) as c:
        r = c.read_response(c.request(grpc_request("/test.Echo/Unary"),
                                      h2raw.grpc_message(b"hi")), timeout=5)
    assert_remora_grpc_error(r, 14, "connect_refused")
    logs = [x for x in p.access_logs(at_least=2) if x.get("path") == "/test.Echo/Unary"]
    assert len(logs) == 2 and all(x["termination"] == "SC" for x in logs), logs


def test_queue_full_unavailable(remora, app):
    """max_requests 1, max_pending 0: while one call runs at the app, a second one is shed at
    once with UNAVAILABLE queue_full and never reaches the app."""
    p = grpc_proxy(remora, app.addr, upstream_opts={"max_requests": 1, "max_pending": 0})
    with grpc_app.channel(p.port) as ch1, grpc_app.channel(p.port) as ch2:
        fut = grpc_app.unary_unary(ch1, "Sleep").future(json.dumps({"ms": 1500}).encode(),
                                                          timeout=10)
        assert wait_for(lambda: app.stats()["in_flight"] == 1, timeout=3), app.stats()
        for c in (ch1, ch2):
            e, took = call_error(grpc_app.unary_unary(c, "Unary"), b"shed me", timeout=5)
            assert e.code() == grpc.StatusCode.UNAVAILABLE, (e.code(), e.details())
            assert e.details() == "queue_full"
            assert md(e).get("x-remora-error") == "queue_full", md(e)
            assert took < 0.5, took
        first = json.loads(fut.result(10))
        assert not first["cancelled"]
        # The slot is back: the next call goes through.
        assert grpc_app.unary_unary(ch2, "Unary")(b"now", timeout=5) == b"now"
    calls = app.stats()["calls"]
    assert calls.get("Unary") == 1 and calls.get("Sleep") == 1, calls
    m = metrics(p.admin_port)
    assert m.value("remora_requests_rejected_total", default=0, route="default",
                   reason="queue_full") == 2


def test_no_route_unimplemented(remora, app):
    p = grpc_proxy(remora, app.addr, routes=[
        {"name": "other", "match": {"path_prefix": "/other"}, "upstream": "app",
         "timeout": "5s"}])
    with grpc_app.channel(p.port) as ch:
        e, _ = call_error(grpc_app.unary_unary(ch, "Unary"), b"hi", timeout=5)
    assert e.code() == grpc.StatusCode.UNIMPLEMENTED, (e.code(), e.details())
    assert e.details() == "no_route"
    assert md(e).get("x-remora-error") == "no_route", md(e)
    with h2raw.RawConn(p.port) as c:
        r = c.read_response(c.request(grpc_request("/test.Echo/Unary"),
                                      h2raw.grpc_message(b"hi")), timeout=5)
        assert_remora_grpc_error(r, 12, "no_route")
        # The connection goes on serving after remora's own error.
        r = c.read_response(c.request(grpc_request("/test.Echo/Stream"),
                                      h2raw.grpc_message(b"")), timeout=5)
        assert_remora_grpc_error(r, 12, "no_route")
    assert app.stats()["calls"] == {}


def test_app_dies_mid_call_unavailable(remora, app):
    """The app is killed while a call runs: UNAVAILABLE upstream_reset, and the next call (the
    app is gone) UNAVAILABLE connect_refused; remora lives on."""
    p = grpc_proxy(remora, app.addr)
    with grpc_app.channel(p.port) as ch:
        fut = grpc_app.unary_unary(ch, "Sleep").future(json.dumps({"ms": 8000}).encode(),
                                                         timeout=15)
        assert wait_for(lambda: app.stats()["in_flight"] == 1, timeout=3), app.stats()
        os.kill(app.proc.pid, signal.SIGKILL)
        app.proc.wait(5)
        t0 = time.monotonic()
        with pytest.raises(grpc.RpcError) as ei:
            fut.result(10)
        e = ei.value
        assert time.monotonic() - t0 < 3
        assert e.code() == grpc.StatusCode.UNAVAILABLE, (e.code(), e.details())
        assert e.details() == "upstream_reset"
        assert md(e).get("x-remora-error") == "upstream_reset", md(e)
        e, _ = call_error(grpc_app.unary_unary(ch, "Unary"), b"hi", timeout=5)
        assert e.code() == grpc.StatusCode.UNAVAILABLE
        assert md(e).get("x-remora-error") == "connect_refused", md(e)
    assert p.alive()


@pytest.mark.no_remora
def test_grpc_app_directly_sanity(app):
    """The app itself (no remora): what the tests above rely on."""
    with app.channel() as ch:
        assert grpc_app.unary_unary(ch, "Unary")(b"x", timeout=5) == b"x"
        e, took = call_error(grpc_app.unary_unary(ch, "Sleep"),
                             json.dumps({"ms": 3000}).encode(), timeout=0.3)
        assert e.code() == grpc.StatusCode.DEADLINE_EXCEEDED and took < 1
    assert wait_for(lambda: app.stats()["cancelled"] == 1, timeout=3)

