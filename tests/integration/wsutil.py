# SPDX-License-Identifier: Apache-2.0
"""wsutil: WebSocket (RFC 6455) and tunnel client pieces for remora's tunnel tests
(test_80_websocket.py, test_82_h2_tunnel.py, test_83_connect.py). Nothing here starts a
process; every read has a deadline.

- Frames: `encode_frame` (client frames masked by default), `frame_header` (to stream one big
  frame's payload in pieces, see `WsConn.send_big`), `Decoder` (masked or not, fragments and
  control frames), `close_payload` / `parse_close`.
- `WsConn`: an HTTP/1.1 WebSocket client over a raw socket (helpers.HttpConn underneath, so
  the handshake response is parsed byte for byte and non-101 answers are ordinary
  `helpers.Response`s): `WsConn.open(port, path)` sends the Upgrade request and reads the
  head; then `send_text`, `send_binary`, `ping`, `send_close`, `shutdown_write`, `recv_frame`,
  `recv_message`, `read_until_eof`. `bytes_sent` / `conn.received` count the socket bytes.
- `H2Tunnel`: one extended CONNECT (RFC 8441) or plain CONNECT stream on an h2util.H2Client:
  send bytes or WebSocket frames, END_STREAM, RST_STREAM, and read what comes back as bytes
  or through a `Decoder`.
- `raw_tunnel`: a plain socket that sent `CONNECT authority HTTP/1.1` and read the answer.
"""

import base64
import hashlib
import os
import socket
import struct
import sys
import time

from helpers import HttpConn, SocketOwner, build_request

OP_CONT, OP_TEXT, OP_BINARY = 0x0, 0x1, 0x2
OP_CLOSE, OP_PING, OP_PONG = 0x8, 0x9, 0xA
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class WsError(Exception):
    pass


# ---- frames ----------------------------------------------------------------------------------

def apply_mask(data, key):
    """data XOR the repeated 4-byte key (fast enough for 50 MiB in 64 KiB pieces)."""
    n = len(data)
    if not n:
        return b""
    rep = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(data, sys.byteorder) ^ int.from_bytes(rep, sys.byteorder)) \
        .to_bytes(n, sys.byteorder)


def frame_header(opcode, length, fin=True, mask_key=None, rsv=0):
    """The header of one frame carrying length payload bytes (mask_key: 4 bytes or None)."""
    b0 = (0x80 if fin else 0) | (rsv << 4) | opcode
    m = 0x80 if mask_key is not None else 0
    if length < 126:
        h = struct.pack("!BB", b0, m | length)
    elif length < 65536:
        h = struct.pack("!BBH", b0, m | 126, length)
    else:
        h = struct.pack("!BBQ", b0, m | 127, length)
    return h + (mask_key or b"")


def encode_frame(opcode, payload=b"", fin=True, mask=True, key=None):
    """One frame; masked with a random key (or key) unless mask is False (server frames)."""
    if isinstance(payload, str):
        payload = payload.encode()
    if not mask:
        return frame_header(opcode, len(payload), fin) + payload
    key = key if key is not None else os.urandom(4)
    return frame_header(opcode, len(payload), fin, key) + apply_mask(payload, key)


def close_payload(code=1000, reason=""):
    return struct.pack("!H", code) + reason.encode()


def parse_close(payload):
    """(code, reason) of a close frame's payload; (None, "") when it is empty."""
    if len(payload) < 2:
        return None, ""
    return struct.unpack("!H", payload[:2])[0], payload[2:].decode(errors="replace")


class Frame:
    __slots__ = ("fin", "opcode", "payload", "masked", "rsv")

    def __init__(self, fin, opcode, payload, masked, rsv):
        self.fin = fin
        self.opcode = opcode
        self.payload = payload
        self.masked = masked
        self.rsv = rsv

    def __repr__(self):
        return "<Frame op=%d fin=%s len=%d masked=%s %r>" % (
            self.opcode, self.fin, len(self.payload), self.masked, self.payload[:40])


class Decoder:
    """Cuts a byte stream into frames (masked ones are unmasked). feed(bytes) -> [Frame]."""

    def __init__(self):
        self.buf = bytearray()
        self.total = 0

    def feed(self, data):
        self.buf += data
        self.total += len(data)
        out = []
        while True:
            f = self._one()
            if f is None:
                return out
            out.append(f)

    def _one(self):
        b = self.buf
        if len(b) < 2:
            return None
        fin = bool(b[0] & 0x80)
        rsv = (b[0] >> 4) & 0x7
        op = b[0] & 0x0F
        masked = bool(b[1] & 0x80)
        n = b[1] & 0x7F
        pos = 2
        if n == 126:
            if len(b) < 4:
                return None
            n = struct.unpack_from("!H", b, 2)[0]
            pos = 4
        elif n == 127:
            if len(b) < 10:
                return None
            n = struct.unpack_from("!Q", b, 2)[0]
            pos = 10
        key = None
        if masked:
            if len(b) < pos + 4:
                return None
            key = bytes(b[pos:pos + 4])
            pos += 4
        if len(b) < pos + n:
            return None
        payload = bytes(b[pos:pos + n])
        del b[:pos + n]
        if masked:
            payload = apply_mask(payload, key)
        return Frame(fin, op, payload, masked, rsv)


def make_key():
    return base64.b64encode(os.urandom(16)).decode()


def accept_for(key):
    return base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()


def upgrade_request(path="/", host="127.0.0.1", key=None, headers=(), protocol="websocket"):
    """The bytes of an HTTP/1.1 WebSocket Upgrade request (key: Sec-WebSocket-Key)."""
    hs = [("Upgrade", protocol), ("Connection", "Upgrade")]
    if key is not None:
        hs += [("Sec-WebSocket-Key", key), ("Sec-WebSocket-Version", "13")]
    return build_request("GET", path, headers=hs + list(headers), host=host)


# ---- HTTP/1.1 WebSocket client ---------------------------------------------------------------

class MessageReader:
    """recv_message over a class's recv_frame(timeout) and send_frame(opcode, payload), with
    _timeout() its default timeout, and a list self.pongs: shared by the HTTP/1.1 and the
    HTTP/2 tunnel clients."""

    def recv_message(self, timeout=None, sink=None):
        """The next data message as (opcode, payload) (fragments joined; with sink, pieces go
        to sink(bytes) and payload is b""), or (OP_CLOSE, payload) for a close frame, or
        (None, b"") at EOF. Pings are answered with pongs, pongs kept in self.pongs."""
        end = time.monotonic() + (self._timeout() if timeout is None else timeout)
        op = None
        parts = []
        while True:
            f = self.recv_frame(max(end - time.monotonic(), 0.001))
            if f is None:
                return None, b""
            if f.opcode == OP_PING:
                self.send_frame(OP_PONG, f.payload)
                continue
            if f.opcode == OP_PONG:
                self.pongs.append(f.payload)
                continue
            if f.opcode == OP_CLOSE:
                return OP_CLOSE, f.payload
            if f.opcode != OP_CONT:
                if op is not None:
                    raise WsError("new message inside a fragmented one: %r" % f)
                op = f.opcode
            elif op is None:
                raise WsError("continuation without a message: %r" % f)
            if sink is not None:
                sink(f.payload)
            else:
                parts.append(f.payload)
            if f.fin:
                return op, b"".join(parts)


class WsConn(SocketOwner, MessageReader):
    """A WebSocket client on one raw TCP connection. open() does the handshake; .response is
    the helpers.Response of the answer (101 or anything else: then the connection is a plain
    HTTP/1.1 one and .http its HttpConn). Frames it sends are masked."""

    def __init__(self, port, timeout=5.0, rcvbuf=None):
        self.http = HttpConn(port, timeout=timeout, rcvbuf=rcvbuf)
        self.sock = self.http.sock
        self.timeout = timeout
        self.dec = Decoder()
        self.frames = []            # decoded, not yet returned
        self.pongs = []             # payloads of pongs received by recv_message
        self.bytes_sent = 0         # every byte written to the socket, head included
        self.response = None
        self.key = None
        self.head_bytes = 0         # length of the Upgrade request written

    @classmethod
    def open(cls, port, path="/", headers=(), host="127.0.0.1", timeout=5.0, rcvbuf=None,
             check=True):
        """Connects, sends the Upgrade request, reads the answer's head (and its body when it
        is not a 101). check: assert a valid 101 (Sec-WebSocket-Accept matches)."""
        c = cls(port, timeout=timeout, rcvbuf=rcvbuf)
        c.key = make_key()
        req = upgrade_request(path, host=host, key=c.key, headers=headers)
        c.head_bytes = len(req)
        c.send_raw(req)
        c.response = c.http.read_response()
        if check:
            assert c.response.status == 101, c.response
            acc = c.response.header("sec-websocket-accept")
            assert acc == accept_for(c.key), (acc, c.response)
        return c

    def _timeout(self):
        return self.timeout

    @property
    def upgraded(self):
        return self.response is not None and self.response.status == 101

    def send_raw(self, data):
        self.sock.sendall(data)
        self.bytes_sent += len(data)

    def send_frame(self, opcode, payload=b"", fin=True):
        self.send_raw(encode_frame(opcode, payload, fin))

    def send_text(self, s):
        self.send_frame(OP_TEXT, s.encode())

    def send_binary(self, b):
        self.send_frame(OP_BINARY, b)

    def ping(self, payload=b"ping"):
        self.send_frame(OP_PING, payload)

    def send_close(self, code=1000, reason=""):
        """Sends a close frame (the socket stays open: see shutdown_write and SocketOwner)."""
        self.send_frame(OP_CLOSE, close_payload(code, reason))

    def shutdown_write(self):
        self.sock.shutdown(socket.SHUT_WR)

    def send_close_and_fin(self, code=1000, reason=""):
        """A close frame and the FIN in one TCP segment (TCP_CORK, then shutdown(SHUT_WR)):
        the client unmistakably closes first, before the app can answer the close frame."""
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
        self.send_close(code, reason)
        self.shutdown_write()

    def send_big(self, opcode, n, chunk_fn, piece=65536):
        """One frame of n payload bytes, chunk_fn(offset, k) giving them, masked and written
        piece by piece (piece a multiple of 4, so the mask lines up). Returns the sha256."""
        key = os.urandom(4)
        self.send_raw(frame_header(opcode, n, True, key))
        h = hashlib.sha256()
        off = 0
        while off < n:
            k = min(piece, n - off)
            d = chunk_fn(off, k)
            h.update(d)
            self.send_raw(apply_mask(d, key))
            off += k
        return h.hexdigest()

    # -- reading --

    def _fill(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout("no frame within the deadline")
        self.sock.settimeout(left)
        try:
            got = self.http._fill()
        finally:
            self.sock.settimeout(self.timeout)
        return got

    def _drain_buf(self):
        if self.http.buf:
            self.frames.extend(self.dec.feed(bytes(self.http.buf)))
            self.http.buf.clear()

    def recv_frame(self, timeout=None):
        """The next frame, or None at EOF. Raises socket.timeout at the deadline."""
        end = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            self._drain_buf()
            if self.frames:
                return self.frames.pop(0)
            if not self._fill(end):
                self._drain_buf()
                return self.frames.pop(0) if self.frames else None

    def read_exact(self, n, timeout=None):
        """Exactly n raw bytes (fewer only at EOF); socket.timeout at the deadline."""
        end = time.monotonic() + (self.timeout if timeout is None else timeout)
        while len(self.http.buf) < n and self._fill(end):
            pass
        out = bytes(self.http.buf[:n])
        del self.http.buf[:n]
        return out

    def read_until_eof(self, timeout=None):
        """Raw bytes until the peer closes (bounded by timeout; socket.timeout if it does not
        close), frames already decoded discarded. Returns (bytes, reset)."""
        end = time.monotonic() + (self.timeout if timeout is None else timeout)
        got = bytearray(self.http.buf)
        self.http.buf.clear()
        while self._fill(end):
            got += self.http.buf
            self.http.buf.clear()
        return bytes(got), self.http.reset

    def wait_eof(self, timeout=None):
        """Reads frames until EOF (True) or the deadline (False); the frames are kept in
        .frames_seen."""
        end = time.monotonic() + (self.timeout if timeout is None else timeout)
        self.frames_seen = []
        try:
            while True:
                f = self.recv_frame(max(end - time.monotonic(), 0.001))
                if f is None:
                    return True
                self.frames_seen.append(f)
        except socket.timeout:
            return False


# ---- one tunnel stream on an HTTP/2 connection -----------------------------------------------

class H2Tunnel(MessageReader):
    """An extended CONNECT (protocol given) or plain CONNECT (protocol None) stream on an
    h2util.H2Client. The response's DATA go through a sink: .data (bytes so far) and
    .decoder frames (when ws=True). Send with send()/send_frame(); end() sends END_STREAM,
    reset() RST_STREAM."""

    def __init__(self, client, path="/ws", protocol="websocket", authority="127.0.0.1",
                 headers=(("sec-websocket-version", "13"),), ws=True, scheme="http"):
        self.c = client
        self.data = bytearray()
        self.dec = Decoder() if ws else None
        self.frames = []
        self.pongs = []
        if protocol is None:
            hs = [(":method", "CONNECT"), (":authority", authority)]
            # h2 4.1 insists on :scheme and :path in every request it sends
            client.conn.config.validate_outbound_headers = False
        else:
            hs = [(":method", "CONNECT"), (":protocol", protocol), (":scheme", scheme),
                  (":path", path), (":authority", authority)]
        hs += [(k.lower(), v) for k, v in headers]
        self.sid = client.conn.get_next_available_stream_id()
        self.r = client._stream(self.sid)
        self.r.sink = self._sink
        client.conn.send_headers(self.sid, hs, end_stream=False)
        client.flush()

    def _timeout(self):
        return self.c.timeout

    def _sink(self, data):
        self.data += data
        if self.dec is not None:
            self.frames.extend(self.dec.feed(data))

    def wait_response(self, timeout=None):
        """Waits for the response head (or the stream's end); returns the H2Response."""
        self.c.wait(lambda: self.r.status is not None or self.r.done, timeout)
        return self.r

    @property
    def status(self):
        return self.r.status

    def send(self, data, end_stream=False):
        return self.c.send_data(self.sid, data, end_stream=end_stream)

    def send_frame(self, opcode, payload=b"", fin=True):
        return self.send(encode_frame(opcode, payload, fin))

    def send_text(self, s):
        return self.send_frame(OP_TEXT, s.encode())

    def send_binary(self, b):
        return self.send_frame(OP_BINARY, b)

    def end(self):
        self.c.end_stream(self.sid)

    def reset(self, code=None):
        from h2util import ErrorCodes
        self.c.reset(self.sid, ErrorCodes.CANCEL if code is None else code)

    def recv_frame(self, timeout=None):
        """The next WebSocket frame from the stream, or None once the stream ended (or was
        reset, or the connection closed) with no frame left. H2Timeout at the deadline."""
        self.c.wait(lambda: self.frames or self.r.done or self.c.eof, timeout)
        if self.frames:
            return self.frames.pop(0)
        return None

    def wait_bytes(self, n, timeout=None):
        """Waits until at least n bytes arrived (or the stream is done); returns .data."""
        self.c.wait(lambda: len(self.data) >= n or self.r.done or self.c.eof, timeout)
        return bytes(self.data)

    def wait_done(self, timeout=None):
        """Waits for END_STREAM or RST_STREAM (or EOF); returns the H2Response."""
        self.c.wait(lambda: self.r.done or self.c.eof, timeout)
        return self.r


# ---- HTTP/1.1 plain CONNECT ------------------------------------------------------------------

def raw_tunnel(port, authority, headers=(), host=None, timeout=5.0):
    """Sends CONNECT authority HTTP/1.1 on a new HttpConn; returns (conn, Response). A 2xx
    is a tunnel: only its head is read (the bytes after it are the tunnel's). Anything else
    is an ordinary response, read whole with its body (framing checked as usual)."""
    c = HttpConn(port, timeout=timeout)
    hs = [("Host", host or authority)] + list(headers)
    c.send(("CONNECT %s HTTP/1.1\r\n" % authority).encode("latin-1")
           + "".join("%s: %s\r\n" % (k, v) for k, v in hs).encode("latin-1") + b"\r\n")
    while len(c.buf) < 12 and c._fill():
        pass
    if c.buf[9:10] == b"2":
        return c, c.read_head()
    return c, c.read_response(method="CONNECT")
