# SPDX-License-Identifier: Apache-2.0
"""29: PING-based liveness of idle HTTP/2 upstream connections. remora sends a PING on an idle
h2c upconn about every second; an app that acknowledges keeps its connection until
idle_timeout, one that does not (a dead peer behind a silent network) is dropped about a
second later, long before idle_timeout, so no request is ever sent into it.

The app here is a minimal hand-made h2c server (h2raw frames + hpack) because python3-h2
acknowledges every PING by itself."""

import socket
import struct
import threading
import time

import hpack

from h2raw import (ACK, DATA, END_HEADERS, END_STREAM, HEADERS, PING, PREFACE, SETTINGS,
                   frame, settings_frame)
from helpers import HttpConn, wait_for


class PingApp:
    """Accepts h2c connections, answers every request with 200 "ok", counts PINGs, and
    acknowledges them only when ack is True. Records when each connection closed."""

    def __init__(self, ack):
        self.ack = ack
        self.pings = 0
        self.closed_at = []
        self.accepted = 0
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.stop = False
        self.t = threading.Thread(target=self.accept_loop, daemon=True)
        self.t.start()

    def accept_loop(self):
        while not self.stop:
            try:
                c, _ = self.sock.accept()
            except OSError:
                continue
            self.accepted += 1
            threading.Thread(target=self.serve, args=(c,), daemon=True).start()

    @staticmethod
    def read_exact(c, n):
        buf = b""
        while len(buf) < n:
            chunk = c.recv(n - len(buf))
            if not chunk:
                raise EOFError
            buf += chunk
        return buf

    def serve(self, c):
        enc = hpack.Encoder()
        c.settimeout(30)
        try:
            assert self.read_exact(c, len(PREFACE)) == PREFACE
            c.sendall(settings_frame())
            while not self.stop:
                head = self.read_exact(c, 9)
                length = int.from_bytes(head[:3], "big")
                ftype, flags = head[3], head[4]
                sid = struct.unpack(">I", head[5:9])[0] & 0x7fffffff
                payload = self.read_exact(c, length) if length else b""
                if ftype == SETTINGS and not flags & ACK:
                    c.sendall(settings_frame(ack=True))
                elif ftype == PING and not flags & ACK:
                    self.pings += 1
                    if self.ack:
                        c.sendall(frame(PING, ACK, 0, payload))
                elif ftype == HEADERS and flags & END_STREAM:
                    block = enc.encode([(":status", "200"), ("content-length", "2")])
                    c.sendall(frame(HEADERS, END_HEADERS, sid, block) +
                              frame(DATA, END_STREAM, sid, b"ok"))
        except (EOFError, OSError, socket.timeout):
            pass
        finally:
            self.closed_at.append(time.monotonic())
            c.close()

    def close(self):
        self.stop = True
        self.sock.close()


def start(remora, app, idle_timeout):
    return remora(endpoints=["127.0.0.1:%d" % app.port],
                  upstream_opts={"protocol": "h2c", "idle_timeout": idle_timeout})


def one_request(p):
    with HttpConn(p.port) as c:
        c.request("GET", "/ping-test")
        r = c.read_response()
        assert r.status == 200 and r.body == b"ok", r


def test_unanswered_ping_drops_idle_upconn(remora):
    app = PingApp(ack=False)
    try:
        p = start(remora, app, "30s")
        one_request(p)
        t0 = time.monotonic()
        assert wait_for(lambda: app.closed_at, timeout=5), \
            "remora kept an idle h2c connection whose PINGs go unanswered (%d PINGs)" % app.pings
        took = app.closed_at[0] - t0
        assert app.pings >= 1, app.pings
        assert took < 4.0, "closed after %.1f s, idle_timeout is 30 s" % took
        # The next request goes over a fresh connection and succeeds.
        one_request(p)
        assert app.accepted == 2, app.accepted
    finally:
        app.close()


def test_answered_pings_keep_idle_upconn(remora):
    app = PingApp(ack=True)
    try:
        p = start(remora, app, "30s")
        one_request(p)
        assert wait_for(lambda: app.pings >= 2, timeout=5), "no liveness PINGs: %d" % app.pings
        assert not app.closed_at, "an acknowledging app lost its idle connection"
        one_request(p)
        assert app.accepted == 1, "the idle connection was not reused: %d" % app.accepted
    finally:
        app.close()


def test_idle_timeout_still_closes(remora):
    app = PingApp(ack=True)
    try:
        p = start(remora, app, "1500ms")
        one_request(p)
        t0 = time.monotonic()
        assert wait_for(lambda: app.closed_at, timeout=5), "idle_timeout did not close it"
        assert app.closed_at[0] - t0 < 3.0
    finally:
        app.close()
