# SPDX-License-Identifier: Apache-2.0
"""83: plain CONNECT (authority-form, RFC 9110 9.3.6) on HTTP/1.1 and HTTP/2. Refused by default
with 405 and x-remora-error connect_disabled, remora connecting nowhere; on a route with
connect: true (routes match CONNECT by host and method) remora answers 200 and tunnels the
bytes to the route's upstream endpoint, never to the authority the client names; half-close
is propagated both ways.

App: tcp_echo.py (raw echo; after the client's FIN it sends "BYE <n>" and closes). Clients:
raw sockets (wsutil.raw_tunnel) and h2util.H2Client with wsutil.H2Tunnel(protocol=None)."""

import socket
import time

import pytest

from h2util import H2Client
from helpers import RawApp, metrics, read_half_closed_slowly, wait_for
from wsutil import H2Tunnel, raw_tunnel


def echo_upstream(name, echo):
    return {"name": name, "endpoints": [echo.addr], "connect_timeout": "1s",
            "idle_timeout": "2s", "max_connections": 64}


def connect_logs(p, n=1, timeout=3.0):
    """Access-log entries of CONNECT requests, waiting up to timeout for n of them."""
    def entries():
        return [e for e in p.access_logs() if e.get("method") == "CONNECT"]

    wait_for(lambda: len(entries()) >= n, timeout)
    return entries()


def read_exact(c, n, timeout=3.0):
    """n bytes from an HttpConn's buffer and socket (fewer only at EOF)."""
    end = time.monotonic() + timeout
    while len(c.buf) < n and time.monotonic() < end:
        c.sock.settimeout(max(end - time.monotonic(), 0.01))
        try:
            if not c._fill():
                break
        except socket.timeout:
            break
    out = bytes(c.buf[:n])
    del c.buf[:n]
    return out


# ---- the echo server itself (no remora) ------------------------------------------------------

@pytest.mark.no_remora
def test_tcp_echo_directly(tcp_echo):
    """tcp_echo.py: bytes echoed as they come; after the client's FIN the rest, then
    "BYE <n>", then EOF; /_stats on the control port counts the connection and its FIN."""
    s = socket.create_connection(("127.0.0.1", tcp_echo.port), timeout=3)
    try:
        s.sendall(b"hello ")
        assert s.recv(100) == b"hello "
        s.sendall(b"world")
        s.shutdown(socket.SHUT_WR)
        got = b""
        while True:
            d = s.recv(65536)
            if not d:
                break
            got += d
    finally:
        s.close()
    assert got == b"world" + b"BYE 11\n"
    st = tcp_echo.stats()
    assert st["conns_total"] == 1 and st["conns"][0]["eof"] \
        and st["conns"][0]["bytes_in"] == 11, st


# ---- HTTP/1.1 ----------------------------------------------------------------------------------

def test_connect_refused_by_default(remora, tcp_echo):
    """CONNECT to the echo server's own address, on a catch-all route without connect: 405,
    x-remora-error connect_disabled, a complete response; the echo server sees no connection
    (remora connected nowhere); no tunnel counted."""
    p = remora(tcp_echo, routes=[{"name": "all", "match": {}, "upstream": "app"}])
    c, r = raw_tunnel(p.port, "127.0.0.1:%d" % tcp_echo.port)
    try:
        assert r.status == 405 and r.complete, r
        assert r.header("x-remora-error") == "connect_disabled", r
    finally:
        c.close()
    time.sleep(0.2)
    assert tcp_echo.stats()["conns_total"] == 0, tcp_echo.stats()
    (e,) = connect_logs(p)
    assert e["status"] == 405, e
    m = metrics(p.admin_port)
    assert m.total("remora_tunnels_total") == 0


def test_connect_allowed_echo_and_half_close(remora, tcp_echo):
    """On a route with connect: true and methods [CONNECT]: 200, then raw bytes both ways;
    the client's FIN reaches the echo server, whose "BYE <n>" trailer still reaches the
    client, then EOF. Logged (status 200, termination CT, tunnel_bytes_up/down) and counted
    in remora_tunnels_total{route="tunnel"}."""
    p = remora(tcp_echo, routes=[{"name": "tunnel", "match": {"methods": ["CONNECT"]},
                                  "upstream": "app", "connect": True}])
    c, r = raw_tunnel(p.port, "example.test:443")
    try:
        assert r.status == 200, r
        data = b"\x16\x03\x01 not really TLS " * 110
        c.send(data)
        assert read_exact(c, len(data)) == data
        assert metrics(p.admin_port).value("remora_tunnels_active") == 1
        c.send(b"last words")
        c.sock.shutdown(socket.SHUT_WR)
        rest = c.read_all(3.0)
        assert c.eof, "remora did not close after the app"
    finally:
        c.close()
    n = len(data) + len(b"last words")
    assert rest == b"last words" + b"BYE %d\n" % n, rest
    st = tcp_echo.stats()["conns"]
    assert len(st) == 1 and st[0]["eof"] and st[0]["bytes_in"] == n, st
    (e,) = connect_logs(p)
    assert e["status"] == 200 and e["termination"] == "CT", e
    assert e["tunnel_bytes_up"] == n and e["tunnel_bytes_down"] == n + len(b"BYE %d\n" % n), e
    m = metrics(p.admin_port)
    assert m.value("remora_tunnels_total", route="tunnel") == 1
    assert m.value("remora_tunnels_active") == 0


def test_connect_authority_ignored(remora, tcp_echo_factory):
    """The tunnel goes to the route's upstream endpoint whatever authority the client names:
    CONNECT to echo B's port, and to a name that does not resolve, both reach echo A (the
    route's upstream); B never sees a connection."""
    a = tcp_echo_factory("a")
    b = tcp_echo_factory("b")
    p = remora(a, routes=[{"name": "tunnel", "match": {"methods": ["CONNECT"]},
                           "upstream": "app", "connect": True}])
    for i, authority in enumerate(("127.0.0.1:%d" % b.port, "nowhere.invalid:8443")):
        c, r = raw_tunnel(p.port, authority)
        try:
            assert r.status == 200, (authority, r)
            c.send(b"to-%d" % i)
            assert read_exact(c, 4) == b"to-%d" % i
            c.sock.shutdown(socket.SHUT_WR)
            assert c.read_all(3.0) == b"BYE 4\n"
        finally:
            c.close()
    assert a.stats()["conns_total"] == 2, a.stats()
    assert b.stats()["conns_total"] == 0, b.stats()


def test_connect_on_route_without_connect(remora, tcp_echo_factory):
    """Two CONNECT routes: tunnel.test with connect: true (echo A), any other host without it
    (echo B). CONNECT other.test:443 is refused (405 connect_disabled, B sees nothing) although
    another route allows CONNECT; CONNECT tunnel.test:443 is tunnelled to A."""
    a = tcp_echo_factory("a")
    b = tcp_echo_factory("b")
    ups = [echo_upstream("a", a), echo_upstream("b", b)]
    routes = [
        {"name": "tunnel", "match": {"host": "tunnel.test", "methods": ["CONNECT"]},
         "upstream": "a", "connect": True},
        {"name": "plain", "match": {"methods": ["CONNECT"]}, "upstream": "b"},
    ]
    p = remora(upstreams=ups, routes=routes)
    c, r = raw_tunnel(p.port, "other.test:443")
    c.close()
    assert r.status == 405 and r.header("x-remora-error") == "connect_disabled", r
    c, r = raw_tunnel(p.port, "tunnel.test:443")
    try:
        assert r.status == 200, r
        c.send(b"abc")
        assert read_exact(c, 3) == b"abc"
    finally:
        c.close()
    assert wait_for(lambda: a.stats()["conns_total"] == 1, 2.0), a.stats()
    time.sleep(0.2)
    assert b.stats()["conns_total"] == 0, b.stats()
    routes_seen = sorted((e["route"], e["status"]) for e in connect_logs(p, 2))
    assert routes_seen == [("plain", 405), ("tunnel", 200)], p.access_logs()


# ---- HTTP/2 ------------------------------------------------------------------------------------

def test_h2_connect_allowed_echo_and_half_close(remora, tcp_echo):
    """h2 plain CONNECT (:method CONNECT, :authority only) on a connect: true route: :status
    200, DATA echoed by the route's echo server, END_STREAM is its FIN: "BYE <n>" then
    END_STREAM on the stream."""
    p = remora(tcp_echo, routes=[{"name": "tunnel", "match": {"methods": ["CONNECT"]},
                                  "upstream": "app", "connect": True}])
    with H2Client(p.port) as c:
        t = H2Tunnel(c, protocol=None, authority="example.test:443", ws=False)
        assert t.wait_response().status == 200
        t.send(b"x" * 5000)
        assert t.wait_bytes(5000) == b"x" * 5000
        t.send(b"y", end_stream=True)
        r = t.wait_done(3.0)
        assert r.ended and r.reset is None, r
        assert bytes(t.data) == b"x" * 5000 + b"y" + b"BYE 5001\n"
    st = tcp_echo.stats()["conns"]
    assert len(st) == 1 and st[0]["eof"] and st[0]["bytes_in"] == 5001, st
    (e,) = connect_logs(p)
    assert e["status"] == 200 and e["tunnel_bytes_up"] == 5001, e


def test_connect_tail_reaches_a_slow_half_closed_client(remora):
    """The app answers the client's FIN with 8 MiB and closes; a client with a small receive
    buffer that half-closed and reads late gets every byte and a clean EOF (the conn used to
    be reset once its user-space output was empty, dropping what the kernel still held:
    review of 947bc69)."""
    n = 8 * 1024 * 1024

    def handler(c, app):
        while c.recv(65536):
            pass  # the tunnel's bytes, until the client's FIN comes through
        c.sendall(b"y" * n)

    with RawApp(handler) as app:
        p = remora(endpoints=[app.addr], routes=[
            {"name": "tunnel", "match": {"methods": ["CONNECT"]}, "upstream": "app",
             "connect": True}])
        got, err = read_half_closed_slowly(
            p.port, b"CONNECT x.test:443 HTTP/1.1\r\nHost: x.test:443\r\n\r\n", skip_head=True)
    assert err is None, err
    assert got == b"y" * n, len(got)
