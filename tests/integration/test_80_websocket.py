# SPDX-License-Identifier: Apache-2.0
"""80: WebSocket / HTTP/1.1 Upgrade tunnels (HTTP/1.1 downstream, HTTP/1.1 app). An Upgrade
whose protocol the route allows (routes[].upgrades, default [websocket]) goes to the app with
Upgrade and Connection intact on an upstream connection never reused; the app's 101 is relayed
and both connections become one opaque byte tunnel with bounded buffers and half-close; any
other answer is an ordinary response on a keep-alive connection. A protocol not allowed is
dropped (plain HTTP). The tunnel is logged when it closes (status 101, tunnel_bytes_up/down,
termination CT/ST/sT/PK), counted in remora_tunnels_active / remora_tunnels_total, closed after
routes[].tunnel_idle_timeout without a byte, left alone by a drain until drain.timeout.

Clients: python3-websockets (an independent RFC 6455 implementation) for messages, pings and
concurrency; wsutil.WsConn (raw socket, own framing) where bytes, half-close and timing are
asserted. Apps: ws_app.py (python3-websockets server), tcp_echo.py --upgrade (101 then raw echo
with half-close), upstream.py (plain HTTP)."""

import asyncio
import hashlib
import json
import os
import signal
import time

import pytest
import websockets

from helpers import (MIB, HttpConn, RawApp, RssSampler, build_request, metrics, pattern, pattern_sha256,
                     recv_head, wait_for)
from wsutil import (OP_BINARY, OP_CLOSE, OP_PONG, OP_TEXT, WsConn, parse_close)

BIG = 50 * MIB
# Measured: +0.2 MiB, +5.4 MiB under ASan (its quarantine); without backpressure: +50 MiB.
RSS_GROWTH_LIMIT_KIB = 12 * 1024


# ---- helpers ------------------------------------------------------------------------------

def route(name="default", upstream="app", match=None, **opts):
    """A route dict; opts are route keys (upgrades, tunnel_idle_timeout, connect, timeout)."""
    r = {"name": name, "match": {"path_prefix": "/"} if match is None else match,
         "upstream": upstream, "timeout": "15s"}
    r.update(opts)
    return r


def run(coro, timeout=10.0):
    """Runs an asyncio coroutine (a python3-websockets client) to completion, bounded."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


def ws_url(p, path="/"):
    return "ws://127.0.0.1:%d%s" % (p.port, path)


def ws_connect(p, path="/", **kw):
    """python3-websockets client to remora: no compression, no keepalive pings, no size
    limit, so what crosses the tunnel is only what the test sends."""
    opts = dict(compression=None, ping_interval=None, max_size=None, open_timeout=5,
                close_timeout=3)
    opts.update(kw)
    return websockets.connect(ws_url(p, path), **opts)


def tunnel_logs(p, n=1, timeout=3.0, status=101):
    """Access-log entries with that status (101: tunnels, logged when they close), waiting up
    to timeout for n of them."""
    def entries():
        return [e for e in p.access_logs() if e.get("status") == status]

    wait_for(lambda: len(entries()) >= n, timeout)
    return entries()


def app_conn(app, cid):
    return next(c for c in app.stats()["conns"] if c["id"] == cid)


def header_values(pairs, name):
    return [v for k, v in pairs if k.lower() == name.lower()]


def requests_101(m, route_name):
    """Opening requests of tunnels counted in remora_requests_total for route: the contract
    says code="101"; remora's code label is the status class, so "1xx" is taken too."""
    return (m.value("remora_requests_total", default=0, route=route_name, code="101")
            + m.value("remora_requests_total", default=0, route=route_name, code="1xx"))


def wait_exit(p, timeout):
    try:
        return p.proc.wait(timeout)
    except Exception:  # noqa: BLE001 - subprocess.TimeoutExpired
        pytest.fail("remora still running %.1f s after the signal; stderr:\n%s"
                    % (timeout, p.stderr()[-4000:]))


# ---- the apps and clients themselves (no remora) -------------------------------------------

@pytest.mark.no_remora
def test_ws_app_and_clients_directly(ws_app):
    """ws_app.py with both clients, no remora: echo of text and binary, cmd:send, pings both
    ways, /deny 403, a plain GET answered with what the app saw, /_stats counting TCP
    connections but not its own."""

    async def main():
        async with websockets.connect("ws://127.0.0.1:%d/x" % ws_app.port, compression=None,
                                      ping_interval=None, max_size=None) as ws:
            await ws.send("héllo")
            assert await ws.recv() == "héllo"
            await ws.send(b"\x00\xff" * 1000)
            assert await ws.recv() == b"\x00\xff" * 1000
            await ws.send("cmd:send 3000000")
            got = await ws.recv()
            assert got == pattern(0, 3000000)
            pong = await ws.ping(b"p1")
            await asyncio.wait_for(pong, 3)
            await ws.send("cmd:ping")
            assert await ws.recv() == "pong-ok"

    run(main())
    with WsConn.open(ws_app.port, "/raw") as c:
        c.send_text("abc")
        assert c.recv_message() == (OP_TEXT, b"abc")
        c.ping(b"xyz")
        f = c.recv_frame()
        assert (f.opcode, f.payload, f.masked) == (OP_PONG, b"xyz", False)
        c.send_text("cmd:close")
        op, payload = c.recv_message()
        assert op == OP_CLOSE and parse_close(payload) == (1000, "app bye")
        c.send_close(1000)
        assert c.wait_eof(3.0)
    with WsConn.open(ws_app.port, "/deny", check=False) as c:
        assert c.response.status == 403 and c.response.body == b"denied\n", c.response
    with HttpConn(ws_app.port) as h:
        h.request("GET", "/plain", headers=[("X-A", "1")])
        r = h.read_response()
        assert r.status == 200 and r.json()["path"] == "/plain", r
        assert ["X-A", "1"] in r.json()["headers"]
    st = ws_app.stats()
    assert st["conns_total"] == 4 and st["conns_open"] == 0, st
    assert [c["upgrade"] for c in st["conns"]] == [True, True, False, False], st
    assert st["conns"][1]["close_code"] == 1000


@pytest.mark.no_remora
def test_ws_app_client_closes_first_directly(ws_app):
    """The client-first close the CT test uses (close frame, then FIN at once): the app takes
    the close frame (code recorded) and the client sees EOF."""
    with WsConn.open(ws_app.port, "/c") as c:
        c.send_text("x")
        assert c.recv_message() == (OP_TEXT, b"x")
        c.send_close_and_fin(1000, "client bye")
        assert c.wait_eof(3.0)
    assert wait_for(lambda: ws_app.stats()["conns"][0]["close_code"] == 1000, 3.0), \
        ws_app.stats()


@pytest.mark.no_remora
def test_tcp_echo_upgrade_directly(tcp_echo_factory):
    """tcp_echo.py --upgrade: a valid 101 (Sec-WebSocket-Accept), then echo; after the
    client's FIN the rest comes back with "BYE <n>" and EOF; a GET without Upgrade gets 200
    with the head it saw."""
    echo = tcp_echo_factory(upgrade=True)
    with WsConn.open(echo.port, "/t") as c:
        c.send_raw(b"a" * 1000)
        c.send_raw(b"b" * 500)
        c.shutdown_write()
        data, reset = c.read_until_eof(3.0)
    assert data == b"a" * 1000 + b"b" * 500 + b"BYE 1500\n" and not reset
    with HttpConn(echo.port) as h:
        h.request("GET", "/plain")
        r = h.read_response()
        assert r.status == 200 and r.json()[0] == "GET /plain HTTP/1.1"
    st = echo.stats()
    assert st["conns_total"] == 2 and st["conns"][0]["bytes_in"] == 1500 \
        and st["conns"][0]["eof"], st


# ---- messages --------------------------------------------------------------------------------

def test_messages_both_ways(remora, ws_app):
    """Through remora (python3-websockets client): text and binary messages echoed, a 1 MiB
    message from the app, 300 small messages in a row in order; the app saw the Upgrade
    request with Upgrade: websocket and Connection: upgrade intact."""
    p = remora(ws_app)

    async def main():
        async with ws_connect(p, "/chat?room=1") as ws:
            await ws.send("héllo wörld")
            assert await ws.recv() == "héllo wörld"
            blob = bytes(range(256)) * 40
            await ws.send(blob)
            assert await ws.recv() == blob
            await ws.send("cmd:send 1048576")
            assert await ws.recv() == pattern(0, 1048576)
            for i in range(300):
                await ws.send("m%d" % i)
            for i in range(300):
                assert await ws.recv() == "m%d" % i
            await ws.send("cmd:hello")
            return await ws.recv()

    hello = run(main())
    cid = int(hello.split()[1])
    c = wait_for(lambda: (lambda x: x if not x["open"] else None)(app_conn(ws_app, cid)), 3.0)
    assert c, app_conn(ws_app, cid)
    assert c["upgrade"] and c["path"] == "/chat?room=1", c
    assert [v.lower() for v in header_values(c["headers"], "upgrade")] == ["websocket"], c
    conn_tokens = ",".join(header_values(c["headers"], "connection")).lower()
    assert "upgrade" in [t.strip() for t in conn_tokens.split(",")], c
    assert len(header_values(c["headers"], "sec-websocket-key")) == 1, c
    assert c["messages"] == 2 + 1 + 300 + 1 and c["close_code"] == 1000, c


def test_ping_pong_both_ways(remora, ws_app):
    """A client ping comes back as a pong with the same payload (unmasked: the app's); an app
    ping reaches the raw client, whose pong reaches the app ("pong-ok")."""
    p = remora(ws_app)
    with WsConn.open(p.port, "/ping") as c:
        c.ping(b"client-ping-1")
        f = c.recv_frame()
        assert (f.opcode, f.payload, f.masked) == (OP_PONG, b"client-ping-1", False), f
        c.send_text("cmd:ping")
        op, msg = c.recv_message()   # answers the app's ping on the way
        assert (op, msg) == (OP_TEXT, b"pong-ok")

    async def main():
        async with ws_connect(p, "/ping2") as ws:
            waiter = await ws.ping(b"lib-ping")
            await asyncio.wait_for(waiter, 3)
            await ws.send("cmd:ping")
            assert await ws.recv() == "pong-ok"

    run(main())
    assert wait_for(lambda: sorted(c["pongs"] for c in ws_app.stats()["conns"]) == [1, 1], 3.0)


def test_close_client_first_logged_ct(remora, ws_app):
    """The client sends a close frame and its FIN (one segment): the app gets the close frame
    (code 1000), the client sees EOF, and the tunnel's access-log line says status 101 and
    termination CT (the client closed first)."""
    p = remora(ws_app)
    with WsConn.open(p.port, "/ct") as c:
        c.send_text("x")
        assert c.recv_message() == (OP_TEXT, b"x")
        c.send_close_and_fin(1000, "client bye")
        assert c.wait_eof(3.0), "remora did not close the client side"
    assert wait_for(lambda: ws_app.stats()["conns"][0]["close_code"] == 1000, 3.0), \
        ws_app.stats()
    (e,) = tunnel_logs(p)
    assert e["termination"] == "CT", e
    assert e["method"] == "GET" and e["path"] == "/ct" and e["route"] == "default", e


def test_close_app_first_logged_st(remora, ws_app):
    """The app starts the close handshake: the client gets its close frame (1000 "app bye"),
    answers it, and sees EOF when the app closes; termination ST (the app closed first)."""
    p = remora(ws_app)
    with WsConn.open(p.port, "/st") as c:
        c.send_text("cmd:close")
        op, payload = c.recv_message()
        assert op == OP_CLOSE and parse_close(payload) == (1000, "app bye"), (op, payload)
        c.send_close(1000)
        assert c.wait_eof(3.0), "remora did not pass the app's close on"
    (e,) = tunnel_logs(p)
    assert e["termination"] == "ST", e
    assert wait_for(lambda: ws_app.stats()["conns_open"] == 0, 3.0)


# ---- big messages and backpressure ---------------------------------------------------------

def test_50mib_to_slow_reader_bounded_memory(remora, ws_app):
    """A 50 MiB message from the app to a client reading slowly (small receive buffer, a
    pause after each 1 MiB fragment, a 1.5 s stall at 2 MiB, while the app could push the
    other 48 MiB if nothing held it back): it arrives whole (sha256) while remora's RSS grows
    less than 40 MiB (the tunnel buffers at most buffer_bytes per direction)."""
    p = remora(ws_app, routes=[route(timeout="60s")])
    with WsConn.open(p.port, "/big", timeout=60, rcvbuf=65536) as c:
        base = p.rss_kib()
        h = hashlib.sha256()
        got = [0]

        def sink(d):
            h.update(d)
            before = got[0]
            got[0] += len(d)
            if before < 2 * MIB <= got[0]:
                time.sleep(1.5)
            else:
                time.sleep(0.02)

        t0 = time.monotonic()
        with RssSampler(p.pid, interval=0.01) as s:
            c.send_text("cmd:send %d" % BIG)
            op, _ = c.recv_message(timeout=60, sink=sink)
        elapsed = time.monotonic() - t0
        c.send_text("after")
        assert c.recv_message() == (OP_TEXT, b"after")
    assert op == OP_BINARY
    assert got[0] == BIG and h.hexdigest() == pattern_sha256(BIG)
    growth = s.max_kib - base
    print("50 MiB down in %.1f s, RSS base %.1f MiB peak %.1f MiB" % (
        elapsed, base / 1024, s.max_kib / 1024))
    assert s.samples >= 3
    assert growth < RSS_GROWTH_LIMIT_KIB, "remora RSS grew %.1f MiB" % (growth / 1024)
    assert elapsed < 60


def test_50mib_from_client_bounded_memory(remora, ws_app):
    """A 50 MiB message (one masked frame) from the client: the app gets it whole (length
    and sha256 it answers on /hash) while remora's RSS grows less than 40 MiB."""
    p = remora(ws_app, routes=[route(timeout="60s")])
    with WsConn.open(p.port, "/hash", timeout=60) as c:
        base = p.rss_kib()
        t0 = time.monotonic()
        with RssSampler(p.pid, interval=0.01) as s:
            sha = c.send_big(OP_BINARY, BIG, pattern)
            op, msg = c.recv_message(timeout=60)
        elapsed = time.monotonic() - t0
    assert op == OP_TEXT, (op, msg[:200])
    assert json.loads(msg) == {"len": BIG, "sha256": sha}
    assert sha == pattern_sha256(BIG)
    growth = s.max_kib - base
    print("50 MiB up in %.1f s, RSS base %.1f MiB peak %.1f MiB" % (
        elapsed, base / 1024, s.max_kib / 1024))
    assert growth < RSS_GROWTH_LIMIT_KIB, "remora RSS grew %.1f MiB" % (growth / 1024)
    assert elapsed < 60


def test_200_concurrent_tunnels(remora, ws_app):
    """200 WebSocket connections open at once (python3-websockets), each with its own text and
    binary message echoed back to it and to no other; remora_tunnels_active says 200 while
    they are open and 0 after; all within 20 s."""
    p = remora(ws_app)
    n = 200
    seen_active = []

    async def one(i, opened, go):
        async with ws_connect(p, "/c%d" % i, open_timeout=15) as ws:
            opened.append(i)
            await go.wait()
            tag = "conn-%d-%s" % (i, os.urandom(6).hex())
            await ws.send(tag)
            blob = tag.encode() * (i + 1)
            await ws.send(blob)
            a = await ws.recv()
            b = await ws.recv()
            return i, a == tag and b == blob

    async def main():
        opened = []
        go = asyncio.Event()
        tasks = [asyncio.ensure_future(one(i, opened, go)) for i in range(n)]
        end = time.monotonic() + 15
        while len(opened) < n and time.monotonic() < end:
            if any(t.done() for t in tasks):
                break
            await asyncio.sleep(0.05)
        loop = asyncio.get_running_loop()
        m = await loop.run_in_executor(None, metrics, p.admin_port)
        seen_active.append(m.value("remora_tunnels_active"))
        go.set()
        return await asyncio.gather(*tasks)

    t0 = time.monotonic()
    results = run(main(), timeout=30)
    elapsed = time.monotonic() - t0
    assert sorted(i for i, _ in results) == list(range(n))
    assert all(ok for _, ok in results), [i for i, ok in results if not ok]
    assert seen_active == [n], seen_active
    assert elapsed < 20, elapsed
    assert wait_for(lambda: metrics(p.admin_port).value("remora_tunnels_active") == 0, 3.0)
    assert len(tunnel_logs(p, n, timeout=5.0)) == n


# ---- non-101 answers and Upgrade not allowed -----------------------------------------------

def test_refused_upgrade_is_a_normal_response(remora, ws_app):
    """The app answers the Upgrade with 403: the client gets an ordinary, complete 403 and its
    connection stays HTTP/1.1 keep-alive: a GET on it is served (the app saw it without
    Upgrade); no tunnel is counted."""
    p = remora(ws_app)
    c = WsConn.open(p.port, "/deny", check=False)
    try:
        r = c.response
        assert r.status == 403 and r.complete and r.body == b"denied\n", r
        assert r.header("x-app") == "denied", r
        assert "close" not in (r.header("connection") or "").lower(), r
        c.http.request("GET", "/after-deny")
        r2 = c.http.read_response()
        assert r2.status == 200 and r2.complete, r2
        seen = r2.json()
        assert seen["path"] == "/after-deny"
        assert header_values(seen["headers"], "upgrade") == [], seen
        c.http.request("GET", "/again")
        assert c.http.read_response().status == 200
    finally:
        c.close()
    m = metrics(p.admin_port)
    assert m.total("remora_tunnels_total") == 0
    assert m.value("remora_tunnels_active") == 0


@pytest.mark.parametrize("protocol,upgrades", [("websocket", []), ("foo", None)],
                         ids=["websocket-upgrades-empty", "foo-not-allowed"])
def test_upgrade_not_allowed_is_plain_http(remora, upstream, protocol, upgrades):
    """Upgrade: websocket on a route with upgrades: [], or Upgrade: foo on a default route, is
    served as plain HTTP: upstream.py sees neither the Upgrade header nor an upgrade token in
    Connection, the client gets its 200 (not a 101), and the connection serves another
    request."""
    opts = {} if upgrades is None else {"upgrades": upgrades}
    p = remora(upstream, routes=[route(**opts)])
    with HttpConn(p.port) as c:
        c.send(build_request("GET", "/echo/up", headers=[
            ("Upgrade", protocol), ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="), ("Sec-WebSocket-Version", "13")]))
        r = c.read_response()
        assert r.status == 200 and r.complete, r
        seen = r.json()
        assert header_values(seen["headers"], "upgrade") == [], seen
        conn = ",".join(header_values(seen["headers"], "connection")).lower()
        assert "upgrade" not in conn, seen
        c.request("GET", "/echo/next")
        r2 = c.read_response()
        assert r2.status == 200 and r2.json()["path"] == "/echo/next", r2
        assert r2.header("x-upstream-conn") == r.header("x-upstream-conn")  # pooled as usual
    assert metrics(p.admin_port).total("remora_tunnels_total") == 0


def test_tunnel_upconn_never_reused(remora, ws_app):
    """The app counts TCP connections: a GET sent while a tunnel is open, and one after it
    closed, each come on a connection of their own (3 in all), and the tunnel's connection
    carries nothing but the tunnel (its echo still works after the first GET)."""
    p = remora(ws_app)
    with WsConn.open(p.port, "/tun") as c:
        c.send_text("cmd:hello")
        op, msg = c.recv_message()
        tun_id = int(msg.split()[1])
        r = HttpConn(p.port)
        r.request("GET", "/during")
        g1 = r.read_response()
        r.close()
        assert g1.status == 200 and g1.json()["conn"] != tun_id, g1
        c.send_text("still here")
        assert c.recv_message() == (OP_TEXT, b"still here")
        c.send_text("cmd:close")
        assert c.recv_message()[0] == OP_CLOSE
        c.send_close()
        assert c.wait_eof(3.0)
    tunnel_logs(p)
    r = HttpConn(p.port)
    r.request("GET", "/after")
    g2 = r.read_response()
    r.close()
    assert g2.status == 200 and g2.json()["conn"] not in (tun_id, g1.json()["conn"]), g2
    st = ws_app.stats()
    assert st["conns_total"] == 3, st
    tun = app_conn(ws_app, tun_id)
    assert tun["path"] == "/tun" and tun["messages"] == 3, tun


# ---- half-close, idle timeout ----------------------------------------------------------------

def test_half_close_propagated(remora, tcp_echo_factory):
    """Raw client: Upgrade, 101, bytes echoed; then the client's FIN (shutdown SHUT_WR): the
    app sees EOF (remora shut the upstream side for writing) and its reply after that, the
    rest of the echo and "BYE <n>", still reaches the client, then EOF."""
    echo = tcp_echo_factory(upgrade=True)
    p = remora(echo)
    with WsConn.open(p.port, "/half") as c:
        c.send_raw(b"A" * 20000)
        assert c.read_exact(20000, 3.0) == b"A" * 20000
        c.send_raw(b"B" * 7000)
        c.shutdown_write()
        rest, reset = c.read_until_eof(5.0)
    assert rest == b"B" * 7000 + b"BYE 27000\n", rest[-100:]
    assert not reset
    st = echo.stats()["conns"][0]
    assert st["eof"] and st["bytes_in"] == 27000, st
    (e,) = tunnel_logs(p)
    assert e["termination"] == "CT", e


def test_tunnel_idle_timeout(remora, ws_app):
    """tunnel_idle_timeout 500ms: a tunnel with a byte every 200 ms stays open for 1.5 s;
    once idle it is closed (client EOF, the app's connection closed) about 0.5 s after the
    last byte, logged with termination sT and error tunnel_idle_timeout."""
    p = remora(ws_app, routes=[route(tunnel_idle_timeout="500ms")])
    with WsConn.open(p.port, "/idle") as c:
        t_end = time.monotonic() + 1.5
        i = 0
        while time.monotonic() < t_end:
            if i:
                time.sleep(0.2)
            c.send_text("k%d" % i)
            assert c.recv_message(timeout=2.0) == (OP_TEXT, b"k%d" % i), "closed while busy"
            i += 1
        t_last = time.monotonic()  # the last byte (the echo) just went through
        assert c.wait_eof(3.0), "idle tunnel not closed"
        idle = time.monotonic() - t_last
    assert 0.4 <= idle < 1.5, idle
    assert wait_for(lambda: ws_app.stats()["conns_open"] == 0, 2.0), ws_app.stats()
    (e,) = tunnel_logs(p)
    assert e["termination"] == "sT" and e["error"] == "tunnel_idle_timeout", e
    assert e["duration_s"] >= 1.5, e


# ---- metrics and the access log --------------------------------------------------------------

def test_tunnel_metrics(remora, ws_app):
    """remora_tunnels_active is 1 while a tunnel is open and 0 after; remora_tunnels_total
    {route} counts each tunnel once (2 after two); remora_requests_total counts each opening
    request once, under code 101 (or its class 1xx)."""
    p = remora(ws_app, routes=[route(name="ws")])
    m = metrics(p.admin_port)
    assert m.value("remora_tunnels_active") == 0
    assert m.value("remora_tunnels_total", default=0, route="ws") == 0
    for k in (1, 2):
        with WsConn.open(p.port, "/m") as c:
            c.send_text("a")
            assert c.recv_message() == (OP_TEXT, b"a")
            m = metrics(p.admin_port)
            assert m.value("remora_tunnels_active") == 1, m.series("remora_tunnels_active")
            c.send_close_and_fin()
            assert c.wait_eof(3.0)
        assert wait_for(lambda: metrics(p.admin_port).value("remora_tunnels_active") == 0, 3.0)
        tunnel_logs(p, k)
        m = metrics(p.admin_port)
        assert m.value("remora_tunnels_total", route="ws") == k, m.series("remora_tunnels_total")
        assert requests_101(m, "ws") == k, m.series("remora_requests_total")
    assert m.total("remora_requests_total", route="ws") == 2, m.series("remora_requests_total")


def test_access_log_tunnel_bytes(remora, tcp_echo_factory):
    """The tunnel's one access-log line, written when it closes: status 101, tunnel_bytes_up
    = payload the client sent after the head, tunnel_bytes_down = payload the app sent after
    its 101, bytes_in/bytes_out = every byte of the client connection (heads included),
    duration_s = the tunnel's whole life (held open 0.6 s)."""
    echo = tcp_echo_factory(upgrade=True)
    p = remora(echo)
    t0 = time.monotonic()
    with WsConn.open(p.port, "/bytes") as c:
        up = 0
        for k in (100, 5000, 64000):
            c.send_raw(b"z" * k)
            up += k
        time.sleep(0.6)
        c.shutdown_write()
        rest, _ = c.read_until_eof(5.0)
        received = c.http.received
    life = time.monotonic() - t0
    trailer = b"BYE %d\n" % up
    assert rest == b"z" * up + trailer
    head_out = received - len(rest)  # the 101 head as remora sent it
    (e,) = tunnel_logs(p)
    assert e["tunnel_bytes_up"] == up, e
    assert e["tunnel_bytes_down"] == up + len(trailer), e
    assert e["bytes_in"] == c.head_bytes + up, (e, c.head_bytes)
    assert e["bytes_out"] == received, (e, received, head_out)
    assert 0.6 <= e["duration_s"] <= life + 0.1, (e, life)
    assert e["status"] == 101 and e["termination"] == "CT", e
    assert e["upstream"] == echo.addr, e


# ---- drain -----------------------------------------------------------------------------------

def drain_remora(remora, app, timeout):
    return remora(app, drain={"timeout": timeout})


def test_drain_tunnel_works_until_cut(remora, ws_app):
    """SIGTERM with a tunnel open (drain.timeout 2s): the tunnel is not cut at drain start
    (messages echoed at ~0.3 s and ~1.3 s), it is cut at ~2 s (client EOF), logged with
    termination PK, and remora exits 1 (something was cut)."""
    p = drain_remora(remora, ws_app, "2s")
    with WsConn.open(p.port, "/drain", timeout=6) as c:
        c.send_text("before")
        assert c.recv_message() == (OP_TEXT, b"before")
        t0 = time.monotonic()
        os.kill(p.pid, signal.SIGTERM)
        for at, msg in ((0.3, "during-1"), (1.3, "during-2")):
            time.sleep(max(0, t0 + at - time.monotonic()))
            c.send_text(msg)
            assert c.recv_message(timeout=1.0) == (OP_TEXT, msg.encode()), msg
        assert c.wait_eof(3.0), "tunnel not cut at drain.timeout"
        cut_at = time.monotonic() - t0
    assert 1.8 <= cut_at < 3.0, cut_at
    assert wait_exit(p, 3.0) == 1, p.stderr()[-3000:]
    (e,) = tunnel_logs(p, timeout=1.0)
    assert e["termination"] == "PK", e


def test_drain_cut_counted(remora, ws_app):
    """Admin POST /drain (remora stays up to be scraped), drain.timeout 1s, one tunnel open:
    it is cut at ~1 s, remora_drain_cut_total says 1 and remora_tunnels_active 0."""
    p = drain_remora(remora, ws_app, "1s")
    with WsConn.open(p.port, "/drain2", timeout=5) as c:
        assert metrics(p.admin_port).value("remora_drain_cut_total") == 0
        t0 = time.monotonic()
        r = HttpConn(p.admin_port)
        r.request("POST", "/drain")
        assert r.read_response().status == 202
        r.close()
        assert c.wait_eof(3.0)
        assert 0.8 <= time.monotonic() - t0 < 2.0
    m = wait_for(lambda: (lambda m: m if m.value("remora_drain_cut_total") == 1 else None)(
        metrics(p.admin_port)), 3.0)
    assert m, metrics(p.admin_port).value("remora_drain_cut_total")
    assert m.value("remora_tunnels_active") == 0
    (e,) = tunnel_logs(p)
    assert e["termination"] == "PK", e


def test_drain_tunnel_closed_before_timeout_exits_0(remora, ws_app):
    """SIGTERM with a tunnel open (drain.timeout 6s): the tunnel keeps working; once the
    client closes it (~0.5 s later) remora exits 0 at once, well before drain.timeout, and
    the tunnel is logged CT, not PK."""
    p = drain_remora(remora, ws_app, "6s")
    with WsConn.open(p.port, "/drain3") as c:
        t0 = time.monotonic()
        os.kill(p.pid, signal.SIGTERM)
        time.sleep(0.5)
        c.send_text("during")
        assert c.recv_message(timeout=1.0) == (OP_TEXT, b"during")
        c.send_close_and_fin(1000)
        assert c.wait_eof(3.0)
    assert wait_exit(p, 3.0) == 0, p.stderr()[-3000:]
    assert time.monotonic() - t0 < 3.0
    (e,) = tunnel_logs(p, timeout=1.0)
    assert e["termination"] == "CT", e


def _switching_app(answer):
    """An app that records the request head it got and answers it with `answer` (then holds
    the connection a moment)."""
    def handler(c, app):
        buf = recv_head(c)
        if buf is None:
            return
        app.events.append(buf.split(b"\r\n\r\n")[0].decode())
        c.sendall(answer)
        time.sleep(0.5)
    return handler


def test_upgrade_offer_narrowed_to_the_allowed_protocol(remora):
    """A client offering `Upgrade: h2c, websocket` on a route that tunnels websocket: the app
    is offered websocket alone (the whole list went on, and an app that picked h2c got its
    switch relayed: review of 947bc69)."""
    ok = (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
          b"Connection: Upgrade\r\n\r\n")
    with RawApp(_switching_app(ok)) as app:
        p = remora(endpoints=[app.addr])
        with HttpConn(p.port) as c:
            c.send(build_request("GET", "/chat", headers=[
                ("Upgrade", "h2c, websocket"), ("Connection", "Upgrade"),
                ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
                ("Sec-WebSocket-Version", "13")]))
            r = c.read_response()
        assert r.status == 101, r
        assert r.header("upgrade") == "websocket", r.headers
        (head,) = app.events
    lines = head.lower().split("\r\n")
    assert [x for x in lines if x.startswith("upgrade:")] == ["upgrade: websocket"], head
    assert "connection: upgrade" in lines, head


def test_switch_to_a_protocol_not_offered_is_a_bad_response(remora):
    """An app that answers a websocket offer with a 101 to another protocol: 502 bad_response,
    nothing of the app's goes to the client."""
    other = (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n"
             b"Connection: Upgrade\r\n\r\nPRI * HTTP/2.0")
    with RawApp(_switching_app(other)) as app:
        p = remora(endpoints=[app.addr])
        with HttpConn(p.port) as c:
            c.send(build_request("GET", "/chat", headers=[
                ("Upgrade", "websocket"), ("Connection", "Upgrade"),
                ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
                ("Sec-WebSocket-Version", "13")]))
            r = c.read_response()
    assert r.status == 502 and r.header("x-remora-error") == "bad_response", r
    assert b"PRI" not in r.body
