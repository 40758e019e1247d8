# SPDX-License-Identifier: Apache-2.0
"""82: tunnels on HTTP/2 downstream (h2c prior knowledge): remora's SETTINGS carry
SETTINGS_ENABLE_CONNECT_PROTOCOL = 1 (listeners[].http2.enable_connect_protocol, default true);
an extended CONNECT stream (RFC 8441, :protocol websocket) to an HTTP/1.1 app becomes an
HTTP/1.1 Upgrade request (remora makes the Sec-WebSocket-Key) whose 101 is :status 200 on the
stream; DATA carry the WebSocket bytes both ways, END_STREAM is a half-close, RST_STREAM an
abort. Toward an h2c app that advertised the setting the stream stays an extended CONNECT.
Plain CONNECT (no :protocol) is refused with 405 connect_disabled by default.

Client: h2util.H2Client with wsutil.H2Tunnel (python3-h2, WebSocket frames made by wsutil).
Apps: ws_app.py (python3-websockets), tcp_echo.py --upgrade (101 then echo with half-close),
h2_upstream.py --connect-protocol (extended CONNECT echo with half-close)."""

import base64
import socket
import time
import urllib.request

import pytest

from h2util import ErrorCodes, H2Client, SettingCodes, remora_h2
import h2.config
import h2.connection
import h2.events
import h2.settings

from helpers import RawApp, metrics, pattern, wait_for
from wsutil import OP_BINARY, OP_CLOSE, OP_TEXT, H2Tunnel, close_payload, encode_frame, parse_close


# ---- helpers ------------------------------------------------------------------------------

def header_values(pairs, name):
    return [v for k, v in pairs if k.lower() == name.lower()]


def wait_settings(c, timeout=3.0):
    """Pumps until the peer's first SETTINGS arrived; returns {SettingCodes: value}."""
    c.wait(lambda: c.remote_settings, timeout)
    return c.remote_settings


def wait_app_conn_closed(app, cid, timeout=3.0):
    return wait_for(lambda: not next(x for x in app.stats()["conns"] if x["id"] == cid)["open"],
                    timeout)


def h2_tunnel_logs(p, n=1, timeout=3.0):
    """Access-log entries of tunnels (status 200 with tunnel_bytes_up: the contract does not
    say whether an extended CONNECT logs method CONNECT or the GET sent upstream), waiting
    for n of them."""
    def entries():
        return [e for e in p.access_logs() if e.get("status") == 200
                and "tunnel_bytes_up" in e]

    wait_for(lambda: len(entries()) >= n, timeout)
    return entries()


# ---- the app and client themselves (no remora) -----------------------------------------------

@pytest.mark.no_remora
def test_h2_connect_app_and_client_directly(h2_upstream_factory):
    """h2_upstream.py --connect-protocol with H2Tunnel, no remora: its SETTINGS carry
    ENABLE_CONNECT_PROTOCOL 1; an extended CONNECT gets 200, its bytes echoed, END_STREAM
    answered by "BYE <n>" and END_STREAM; a reset stream is recorded with its code; without
    the flag the setting is not sent."""
    app = h2_upstream_factory(connect_protocol=True)
    with H2Client(app.port) as c:
        st = wait_settings(c)
        assert st.get(SettingCodes.ENABLE_CONNECT_PROTOCOL) == 1, st
        t = H2Tunnel(c, path="/ws?x=1", ws=False, authority="app.test")
        assert t.wait_response().status == 200
        frame = encode_frame(OP_TEXT, b"hi there")
        t.send(frame)
        assert t.wait_bytes(len(frame)) == frame
        t.send(b"tail", end_stream=True)
        r = t.wait_done()
        assert r.ended and bytes(t.data) == frame + b"tail" + b"BYE %d\n" % (len(frame) + 4)
        t2 = H2Tunnel(c, ws=False)
        assert t2.wait_response().status == 200
        t2.send(b"x" * 100)
        t2.wait_bytes(100)
        t2.reset()
    tun = wait_for(lambda: (lambda ts: ts if len(ts) == 2 and all(x["done"] for x in ts)
                            else None)(app.stats()["tunnels"]), 3.0)
    assert tun, app.stats()["tunnels"]
    assert tun[0]["protocol"] == "websocket" and tun[0]["path"] == "/ws?x=1" \
        and tun[0]["authority"] == "app.test" and tun[0]["ended"], tun[0]
    assert ["sec-websocket-version", "13"] in tun[0]["headers"]
    assert tun[1]["reset"] == ErrorCodes.CANCEL and not tun[1]["ended"], tun[1]
    plain = h2_upstream_factory()
    with H2Client(plain.port) as c:
        st = wait_settings(c)
        assert st.get(SettingCodes.ENABLE_CONNECT_PROTOCOL, 0) == 0, st


@pytest.mark.no_remora
def test_h2_tunnel_client_frames_directly(tcp_echo_factory):
    """The frames H2Tunnel sends, checked without HTTP/2: wsutil's encoder and decoder
    round-trip through tcp_echo (masked client frames come back masked and decode)."""
    from wsutil import WsConn
    echo = tcp_echo_factory(upgrade=True)
    with WsConn.open(echo.port, "/f") as c:
        c.send_text("héllo")
        c.send_binary(pattern(0, 70000))
        f1 = c.recv_frame()
        f2 = c.recv_frame()
    assert (f1.opcode, f1.payload, f1.masked) == (OP_TEXT, "héllo".encode(), True)
    assert (f2.opcode, f2.payload) == (OP_BINARY, pattern(0, 70000))


# ---- SETTINGS -------------------------------------------------------------------------------

def test_settings_enable_connect_protocol(remora, ws_app):
    """remora's SETTINGS on h2c carry ENABLE_CONNECT_PROTOCOL = 1 by default, and do not (or
    say 0) with listeners[0].http2.enable_connect_protocol: false."""
    p = remora(ws_app)
    with H2Client(p.port) as c:
        st = wait_settings(c)
        assert st.get(SettingCodes.ENABLE_CONNECT_PROTOCOL) == 1, st
    p2 = remora_h2(remora, ws_app, http2={"enable_connect_protocol": False})
    with H2Client(p2.port) as c:
        st = wait_settings(c)
        assert st.get(SettingCodes.ENABLE_CONNECT_PROTOCOL, 0) == 0, st


# ---- extended CONNECT to an HTTP/1.1 app ---------------------------------------------------

def test_extended_connect_to_h1_app_messages(remora, ws_app):
    """Extended CONNECT to ws_app.py: :status 200 (no 101 on HTTP/2); text and binary
    messages echoed, a 300000-byte message from the app arrives whole across many DATA
    frames; the app saw GET /ws?room=2 with Upgrade: websocket, Connection: upgrade, Host =
    :authority, Sec-WebSocket-Version 13 and a Sec-WebSocket-Key made by remora (16 bytes,
    base64)."""
    p = remora(ws_app)
    with H2Client(p.port) as c:
        wait_settings(c)
        t = H2Tunnel(c, path="/ws?room=2", authority="chat.test")
        r = t.wait_response()
        assert r.status == 200 and not r.done, r
        t.send_text("héllo")
        assert t.recv_message() == (OP_TEXT, "héllo".encode())
        t.send_binary(bytes(range(256)) * 10)
        assert t.recv_message() == (OP_BINARY, bytes(range(256)) * 10)
        t.send_text("cmd:send 300000")
        assert t.recv_message() == (OP_BINARY, pattern(0, 300000))
        t.send_text("cmd:hello")
        op, hello = t.recv_message()
        assert op == OP_TEXT
        cid = int(hello.split()[1])
        st = ws_app.stats()
        app = next(x for x in st["conns"] if x["id"] == cid)
        assert app["upgrade"] and app["path"] == "/ws?room=2", app
        hs = app["headers"]
        assert [v.lower() for v in header_values(hs, "upgrade")] == ["websocket"], hs
        assert "upgrade" in ",".join(header_values(hs, "connection")).lower(), hs
        assert header_values(hs, "host") == ["chat.test"], hs
        assert header_values(hs, "sec-websocket-version") == ["13"], hs
        keys = header_values(hs, "sec-websocket-key")
        assert len(keys) == 1 and len(base64.b64decode(keys[0], validate=True)) == 16, hs
        assert st["conns_total"] == 1, st
    assert wait_app_conn_closed(ws_app, cid)


def test_extended_connect_close_handshake(remora, ws_app):
    """Client-first close: the client's close frame is answered by the app's and the stream
    ends with END_STREAM (the app closed its connection). App-first (cmd:close): the client
    gets the app's close frame (1000 "app bye"), answers it, END_STREAM follows. Both are
    logged as tunnels (status 200) when they end, and nothing stays open."""
    p = remora(ws_app)
    with H2Client(p.port) as c:
        wait_settings(c)
        t = H2Tunnel(c, path="/one")
        assert t.wait_response().status == 200
        t.send_text("x")
        assert t.recv_message() == (OP_TEXT, b"x")
        t.send_frame(OP_CLOSE, close_payload(1000, "client bye"))
        op, payload = t.recv_message()
        assert op == OP_CLOSE and parse_close(payload)[0] == 1000, (op, payload)
        r = t.wait_done(3.0)
        assert r.ended and r.reset is None, r
        t.end()
        t2 = H2Tunnel(c, path="/two")
        assert t2.wait_response().status == 200
        t2.send_text("cmd:close")
        op, payload = t2.recv_message()
        assert op == OP_CLOSE and parse_close(payload) == (1000, "app bye"), (op, payload)
        t2.send_frame(OP_CLOSE, close_payload(1000))
        r2 = t2.wait_done(3.0)
        assert r2.ended and r2.reset is None, r2
        t2.end()
        assert not c.eof and c.goaway is None  # the connection itself goes on
    assert wait_for(lambda: ws_app.stats()["conns_open"] == 0, 3.0)
    codes = [x["close_code"] for x in ws_app.stats()["conns"]]
    assert codes == [1000, 1000], ws_app.stats()
    logs = h2_tunnel_logs(p, 2)
    assert len(logs) == 2, p.access_logs()
    for e in logs:
        assert e["tunnel_bytes_up"] > 0 and e["tunnel_bytes_down"] > 0, e
    assert wait_for(lambda: metrics(p.admin_port).value("remora_tunnels_active") == 0, 3.0)


def test_extended_connect_end_stream_half_close(remora, tcp_echo_factory):
    """END_STREAM from the client is a half-close: tcp_echo.py (behind a 101) sees EOF, and
    what it sends after that (the rest of the echo, "BYE <n>") still arrives on the stream,
    which then ends. The app got an Upgrade request with Sec-WebSocket-Key and -Version."""
    echo = tcp_echo_factory(upgrade=True)
    p = remora(echo)
    with H2Client(p.port) as c:
        wait_settings(c)
        t = H2Tunnel(c, path="/half", ws=False)
        assert t.wait_response().status == 200
        t.send(b"a" * 3000)
        assert t.wait_bytes(3000) == b"a" * 3000
        t.send(b"b" * 1000, end_stream=True)
        r = t.wait_done(3.0)
        assert r.ended and r.reset is None, r
        assert bytes(t.data) == b"a" * 3000 + b"b" * 1000 + b"BYE 4000\n"
    st = echo.stats()["conns"][0]
    assert st["eof"] and st["bytes_in"] == 4000, st
    line, hs = st["head"][0], st["head"][1:]
    assert line == "GET /half HTTP/1.1", st["head"]
    assert [v.lower() for v in header_values(hs, "upgrade")] == ["websocket"], hs
    assert header_values(hs, "sec-websocket-version") == ["13"], hs
    assert len(header_values(hs, "sec-websocket-key")) == 1, hs
    (e,) = h2_tunnel_logs(p)
    assert e["tunnel_bytes_up"] == 4000 and e["tunnel_bytes_down"] == 4000 + len("BYE 4000\n"), e


def test_extended_connect_rst_closes_app_conn(remora, ws_app):
    """RST_STREAM from the client aborts the tunnel: the app's connection is closed within
    2 s, remora_tunnels_active drops to 0, and the h2 connection still serves a request."""
    p = remora(ws_app)
    with H2Client(p.port) as c:
        wait_settings(c)
        t = H2Tunnel(c, path="/rst")
        assert t.wait_response().status == 200
        t.send_text("cmd:hello")
        cid = int(t.recv_message()[1].split()[1])
        assert metrics(p.admin_port).value("remora_tunnels_active") == 1
        t.reset()
        assert wait_app_conn_closed(ws_app, cid, 2.0), ws_app.stats()
        assert wait_for(lambda: metrics(p.admin_port).value("remora_tunnels_active") == 0, 2.0)
        r = c.get("/plain-after-rst", timeout=3.0)
        assert r.status == 200 and r.json()["path"] == "/plain-after-rst", r
    h2_tunnel_logs(p)


def test_many_tunnels_on_one_h2_connection(remora, ws_app):
    """20 extended CONNECT streams at once on one h2 connection, each to its own app
    connection, each with its own messages echoed to it alone."""
    p = remora(ws_app)
    n = 20
    with H2Client(p.port, timeout=10) as c:
        wait_settings(c)
        ts = [H2Tunnel(c, path="/m%d" % i) for i in range(n)]
        for t in ts:
            assert t.wait_response().status == 200
        for i, t in enumerate(ts):
            t.send_text("stream-%d" % i)
        for i, t in enumerate(ts):
            assert t.recv_message() == (OP_TEXT, b"stream-%d" % i)
        assert metrics(p.admin_port).value("remora_tunnels_active") == n
        for t in ts:
            t.reset()
    assert wait_for(lambda: ws_app.stats()["conns_open"] == 0, 3.0)
    assert ws_app.stats()["conns_total"] == n
    assert sorted(x["path"] for x in ws_app.stats()["conns"]) == sorted("/m%d" % i
                                                                       for i in range(n))


# ---- extended CONNECT to an h2c app ----------------------------------------------------------

def h2c_app_proxy(remora, h2_upstream_factory):
    app = h2_upstream_factory(connect_protocol=True)
    return app, remora(app, upstream_opts={"protocol": "h2c"})


def test_extended_connect_to_h2c_app(remora, h2_upstream_factory):
    """Toward an h2c app that advertised ENABLE_CONNECT_PROTOCOL the stream goes as an extended
    CONNECT (:method CONNECT, :protocol websocket, :path): 200, WebSocket frames echoed byte
    for byte, END_STREAM both ways with the app's "BYE <n>" in between."""
    app, p = h2c_app_proxy(remora, h2_upstream_factory)
    with H2Client(p.port) as c:
        wait_settings(c)
        t = H2Tunnel(c, path="/ws?h2=1", authority="up.test")
        assert t.wait_response().status == 200
        frames = encode_frame(OP_TEXT, b"hello h2") + encode_frame(OP_BINARY, pattern(0, 50000))
        t.send(frames)
        assert t.recv_message() == (OP_TEXT, b"hello h2")
        assert t.recv_message() == (OP_BINARY, pattern(0, 50000))
        t.send(b"", end_stream=True)
        r = t.wait_done(3.0)
        assert r.ended and r.reset is None, r
        assert bytes(t.data) == frames + b"BYE %d\n" % len(frames)
    (tun,) = app.stats()["tunnels"]
    assert (tun["method"], tun["protocol"], tun["path"]) == ("CONNECT", "websocket", "/ws?h2=1"), \
        tun
    assert tun["ended"] and tun["bytes_in"] == len(frames) and tun["reset"] is None, tun
    assert not app.stats()["protocol_errors"]


def test_extended_connect_to_h2c_app_rst(remora, h2_upstream_factory):
    """RST_STREAM from the client reaches the h2c app's stream as a RST_STREAM."""
    app, p = h2c_app_proxy(remora, h2_upstream_factory)
    with H2Client(p.port) as c:
        wait_settings(c)
        t = H2Tunnel(c, path="/ws", ws=False)
        assert t.wait_response().status == 200
        t.send(b"ping")
        assert t.wait_bytes(4) == b"ping"
        t.reset()
        tun = wait_for(lambda: (lambda ts: ts[0] if ts and ts[0]["done"] else None)(
            app.stats()["tunnels"]), 3.0)
    assert tun, app.stats()["tunnels"]
    assert tun["reset"] is not None and not tun["ended"], tun
    assert wait_for(lambda: metrics(p.admin_port).value("remora_tunnels_active") == 0, 2.0)


# ---- plain CONNECT on HTTP/2 ---------------------------------------------------------------

def test_h2_plain_connect_refused_by_default(remora, tcp_echo):
    """:method CONNECT without :protocol, on a catch-all route without connect: true: 405 with
    x-remora-error connect_disabled, the stream ended, and remora connected nowhere (the echo
    server, which is the route's upstream and the named authority, saw no connection)."""
    p = remora(tcp_echo, routes=[{"name": "all", "match": {}, "upstream": "app"}])
    with H2Client(p.port) as c:
        wait_settings(c)
        t = H2Tunnel(c, protocol=None, authority="127.0.0.1:%d" % tcp_echo.port, ws=False)
        r = t.wait_done(3.0)
        assert r.status == 405, r
        assert r.header("x-remora-error") == "connect_disabled", r
        assert r.ended, r
        c.ping(b"stillon!")  # the connection goes on
        c.wait(lambda: c.pings, 3.0)
        assert c.pings == [b"stillon!"] and not c.eof
    time.sleep(0.2)
    assert tcp_echo.stats()["conns_total"] == 0, tcp_echo.stats()


def _h2_app(on_request):
    """A threaded h2c app that advertises ENABLE_CONNECT_PROTOCOL, answers each request with
    on_request(conn, event) and records in app.events what remora sends on its streams."""
    def handler(c, app):
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        conn.local_settings = h2.settings.Settings(client=False, initial_values={
            h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL: 1})
        conn.initiate_connection()
        c.sendall(conn.data_to_send())
        while True:
            d = c.recv(65536)
            if not d:
                app.events.append("closed")
                return
            for ev in conn.receive_data(d):
                if isinstance(ev, h2.events.RequestReceived):
                    on_request(conn, ev)
                elif isinstance(ev, h2.events.DataReceived):
                    app.events.append(("data", ev.data))
                    conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                elif isinstance(ev, h2.events.StreamEnded):
                    app.events.append("end_stream")
                elif isinstance(ev, h2.events.StreamReset):
                    app.events.append(("rst", int(ev.error_code)))
                elif isinstance(ev, h2.events.ConnectionTerminated):
                    app.events.append(("goaway", int(ev.error_code)))
            c.sendall(conn.data_to_send())
    return handler


WS_OFFER = (b"GET /chat HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")


def test_h2c_app_refusing_the_tunnel_gets_its_stream_ended(remora):
    """An h2c app that answers the extended CONNECT with 403 + END_STREAM: the client gets the
    403, and remora ends its side of the stream (RST_STREAM NO_ERROR) instead of leaving it
    open on the app's connection for good (review of 947bc69)."""
    def refuse(conn, ev):
        conn.send_headers(ev.stream_id, [(":status", "403")], end_stream=True)

    with RawApp(_h2_app(refuse)) as app:
        p = remora(endpoints=[app.addr], upstream_opts={"protocol": "h2c"})
        s = socket.create_connection(("127.0.0.1", p.port), timeout=3)
        s.sendall(WS_OFFER)
        assert s.recv(65536).startswith(b"HTTP/1.1 403"), "no 403"
        assert wait_for(lambda: ("rst", 0) in app.events or "end_stream" in app.events, 2.0), \
            app.events
        s.close()


def test_h2c_tunnel_end_during_drain_reaches_the_app(remora):
    """h1 WebSocket to an h2c app that ends its side first; during a drain the client sends
    its last bytes and FIN: the app gets them and END_STREAM before the upconn's GOAWAY (the
    draining pool retired the upconn as the stream was let go, and its last frames were
    dropped with the close: review of 947bc69)."""
    def accept_then_end(conn, ev):
        conn.send_headers(ev.stream_id, [(":status", "200")])
        conn.send_data(ev.stream_id, b"hi", end_stream=True)

    with RawApp(_h2_app(accept_then_end)) as app:
        p = remora(endpoints=[app.addr], upstream_opts={"protocol": "h2c"})
        s = socket.create_connection(("127.0.0.1", p.port), timeout=3)
        s.sendall(WS_OFFER)
        got = b""
        while True:
            d = s.recv(65536)
            if not d:
                break
            got += d
        assert got.startswith(b"HTTP/1.1 101") and got.endswith(b"hi"), got
        urllib.request.urlopen(urllib.request.Request(
            "http://127.0.0.1:%d/drain" % p.admin_port, method="POST"), timeout=2).read()
        time.sleep(0.2)
        s.sendall(b"last words")
        s.shutdown(socket.SHUT_WR)
        assert wait_for(lambda: "closed" in app.events, 3.0), app.events
        s.close()
    ev = [e for e in app.events if e != ("data", b"")]
    assert ev[:2] == [("data", b"last words"), "end_stream"], app.events
