# SPDX-License-Identifier: Apache-2.0
"""h2raw: a raw HTTP/2 client for the h2c tests, frame by frame over a plain socket with
python3-hpack for header blocks. It sends exactly the bytes a test builds (including what a
conforming library refuses to send: CONTINUATION floods, bad HPACK, window overflows, control
frame floods) and parses what remora sends back: frames, GOAWAY codes, RST_STREAM codes and
whole responses (headers, data, trailers) as h2util.H2Response, the one response type of the
h2 clients. Every read has a deadline; nothing here starts a process."""

import socket
import struct
import threading
import time

import hpack

from h2util import H2Response
from helpers import SocketOwner

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, \
    CONTINUATION = range(10)
FRAME_NAMES = ["DATA", "HEADERS", "PRIORITY", "RST_STREAM", "SETTINGS", "PUSH_PROMISE", "PING",
               "GOAWAY", "WINDOW_UPDATE", "CONTINUATION"]

END_STREAM = 0x1
ACK = 0x1
END_HEADERS = 0x4
PADDED = 0x8
PRIORITY_FLAG = 0x20

# SETTINGS identifiers
HEADER_TABLE_SIZE = 0x1
ENABLE_PUSH = 0x2
MAX_CONCURRENT_STREAMS = 0x3
INITIAL_WINDOW_SIZE = 0x4
MAX_FRAME_SIZE = 0x5
MAX_HEADER_LIST_SIZE = 0x6

ERROR_NAMES = ["no_error", "protocol_error", "internal_error", "flow_control_error",
               "settings_timeout", "stream_closed", "frame_size_error", "refused_stream",
               "cancel", "compression_error", "connect_error", "enhance_your_calm",
               "inadequate_security", "http_1_1_required"]
NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR, SETTINGS_TIMEOUT, STREAM_CLOSED, \
    FRAME_SIZE_ERROR, REFUSED_STREAM, CANCEL, COMPRESSION_ERROR, CONNECT_ERROR, \
    ENHANCE_YOUR_CALM, INADEQUATE_SECURITY, HTTP_1_1_REQUIRED = range(14)


def error_name(code):
    return ERROR_NAMES[code] if 0 <= code < len(ERROR_NAMES) else "0x%x" % code


# ---- frame building -----------------------------------------------------------------------

def frame(ftype, flags, sid, payload=b""):
    return struct.pack(">I", len(payload))[1:] + struct.pack(">BBI", ftype, flags,
                                                            sid & 0x7FFFFFFF) + payload


def settings_frame(pairs=(), ack=False):
    return frame(SETTINGS, ACK if ack else 0, 0,
                 b"".join(struct.pack(">HI", k, v) for k, v in pairs))


def ping_frame(data=b"\0" * 8, ack=False):
    return frame(PING, ACK if ack else 0, 0, data)


def rst_frame(sid, code):
    return frame(RST_STREAM, 0, sid, struct.pack(">I", code))


def window_update_frame(sid, increment):
    return frame(WINDOW_UPDATE, 0, sid, struct.pack(">I", increment & 0x7FFFFFFF))


def goaway_frame(last_sid, code, debug=b""):
    return frame(GOAWAY, 0, 0, struct.pack(">II", last_sid, code) + debug)


def data_frame(sid, data, end_stream=False):
    return frame(DATA, END_STREAM if end_stream else 0, sid, data)


def headers_frames(sid, block, end_stream=True, max_frame=16384):
    """HEADERS (+ CONTINUATION) frames carrying one header block."""
    first, rest = block[:max_frame], block[max_frame:]
    flags = (END_STREAM if end_stream else 0) | (0 if rest else END_HEADERS)
    out = [frame(HEADERS, flags, sid, first)]
    while rest:
        part, rest = rest[:max_frame], rest[max_frame:]
        out.append(frame(CONTINUATION, 0 if rest else END_HEADERS, sid, part))
    return b"".join(out)


def hpack_int(value, prefix_bits, flags=0):
    """An HPACK integer (RFC 7541 5.1) with an N-bit prefix; flags are the high bits of the
    first byte."""
    top = (1 << prefix_bits) - 1
    if value < top:
        return bytes([flags | value])
    out = bytearray([flags | top])
    value -= top
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def hpack_literal(name, value):
    """A literal header field without indexing, new name, no Huffman (RFC 7541 6.2.2)."""
    return (b"\x00" + hpack_int(len(name), 7) + name + hpack_int(len(value), 7) + value)


def grpc_message(payload, compressed=False):
    """One length-prefixed gRPC message."""
    return struct.pack(">BI", 1 if compressed else 0, len(payload)) + payload


def grpc_messages(body):
    """The payloads of the length-prefixed gRPC messages in body (raises on a partial one)."""
    out = []
    i = 0
    while i < len(body):
        if len(body) - i < 5:
            raise ValueError("partial gRPC message prefix")
        flag, n = struct.unpack(">BI", body[i:i + 5])
        if len(body) - i - 5 < n:
            raise ValueError("partial gRPC message")
        out.append(body[i + 5:i + 5 + n])
        i += 5 + n
    return out


def request_headers(path="/", method="GET", authority="127.0.0.1", scheme="http", extra=()):
    return [(":method", method), (":scheme", scheme), (":path", path),
            (":authority", authority)] + list(extra)


# ---- frames received ----------------------------------------------------------------------

class Frame:
    def __init__(self, ftype, flags, sid, payload):
        self.type = ftype
        self.flags = flags
        self.sid = sid
        self.payload = payload

    @property
    def name(self):
        return FRAME_NAMES[self.type] if self.type < len(FRAME_NAMES) else "0x%x" % self.type

    def goaway(self):
        """(last_stream_id, error_code, debug) of a GOAWAY."""
        last, code = struct.unpack(">II", self.payload[:8])
        return last & 0x7FFFFFFF, code, self.payload[8:]

    def error_code(self):
        """The error code of a RST_STREAM or GOAWAY."""
        if self.type == RST_STREAM:
            return struct.unpack(">I", self.payload[:4])[0]
        return self.goaway()[1]

    def __repr__(self):
        extra = ""
        if self.type in (RST_STREAM, GOAWAY) and len(self.payload) >= 4:
            extra = " " + error_name(self.error_code())
        return "<%s flags=0x%x sid=%d len=%d%s>" % (self.name, self.flags, self.sid,
                                                    len(self.payload), extra)


class RawConn(SocketOwner):
    """One HTTP/2 (h2c, prior knowledge) client connection.

    preface: send the connection preface and a SETTINGS frame with settings at once.
    Frames remora sends are parsed by read_frame(); read_response() also answers SETTINGS and
    PING, replenishes flow-control windows and decodes header blocks."""

    def __init__(self, port, host="127.0.0.1", timeout=5.0, settings=(), preface=True,
                 rcvbuf=None, sndbuf=None):
        self.sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET,
                                  socket.SOCK_STREAM)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        if sndbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
        self.sock.settimeout(timeout)
        self.sock.connect((host, port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.timeout = timeout
        self.buf = bytearray()
        self.eof = False
        self.reset = False        # the peer reset the TCP connection
        self.send_failed = False  # a send hit a reset/broken pipe/timeout
        self.encoder = hpack.Encoder()
        self.decoder = hpack.Decoder()
        self.decoder.max_header_list_size = 1 << 24
        self.frames = []          # every frame read, in order
        self.goaways = []         # GOAWAY frames read
        self.server_settings = {}
        self.streams = {}
        self.conn_send_window = 65535
        self.send_window = {}     # stream id -> what remora lets us send on it
        self.next_sid = 1
        self._block = None        # (sid, flags, bytearray) of a header block being read
        if preface:
            self.send(PREFACE + settings_frame(settings))

    # -- sending --

    def send(self, data, timeout=None):
        """sendall with a deadline; False (and send_failed) when the peer reset or closed the
        connection or stopped reading for longer than timeout."""
        old = self.sock.gettimeout()
        if timeout is not None:
            self.sock.settimeout(timeout)
        try:
            self.sock.sendall(data)
            return True
        except (BrokenPipeError, ConnectionResetError, socket.timeout, OSError):
            self.send_failed = True
            return False
        finally:
            if timeout is not None:
                self.sock.settimeout(old)

    def new_sid(self):
        sid = self.next_sid
        self.next_sid += 2
        return sid

    def request(self, headers, body=b"", end_stream=None, sid=None, timeout=None):
        """Sends a request (HEADERS [+ DATA within the flow-control windows remora grants,
        reading frames while it waits for WINDOW_UPDATEs]); returns its stream id. end_stream
        None: the stream ends with the body (or with the headers when there is none)."""
        sid = sid or self.new_sid()
        block = self.encoder.encode(headers)
        if end_stream is None:
            end_stream = True
        self.streams[sid] = H2Response(sid)
        self.send_window[sid] = self.server_settings.get(INITIAL_WINDOW_SIZE, 65535)
        if body:
            self.send(headers_frames(sid, block, end_stream=False))
            self.send_data(sid, body, end_stream, timeout)
        else:
            self.send(headers_frames(sid, block, end_stream=end_stream))
        return sid

    def send_data(self, sid, body, end_stream=True, timeout=None):
        """DATA frames of at most 16 KiB within the conn and stream send windows; waits for
        WINDOW_UPDATEs (raises socket.timeout after timeout)."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        off = 0
        while True:
            room = min(self.conn_send_window, self.send_window.get(sid, 0), 16384,
                       len(body) - off)
            if room > 0 or off == len(body):
                last = off + room >= len(body)
                if not self.send(data_frame(sid, body[off:off + room],
                                            end_stream=end_stream and last)):
                    return False
                self.conn_send_window -= room
                self.send_window[sid] -= room
                off += room
                if last:
                    return True
                continue
            st = self.streams.get(sid)
            if st is not None and (st.reset is not None or st.ended):
                return False
            f = self.read_frame(max(0.0, deadline - time.monotonic()))
            if f is None:
                return False
            self._handle(f)

    def get(self, path, extra=(), timeout=None):
        """One GET on this connection; returns the H2Response."""
        sid = self.request(request_headers(path, extra=extra))
        return self.read_response(sid, timeout)

    # -- receiving --

    def _fill(self, deadline):
        if self.eof:
            return False
        left = deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout("h2raw: deadline")
        self.sock.settimeout(left)
        try:
            d = self.sock.recv(256 * 1024)
        except ConnectionResetError:
            self.reset = True
            d = b""
        finally:
            self.sock.settimeout(self.timeout)
        if not d:
            self.eof = True
            return False
        self.buf += d
        return True

    def read_frame(self, timeout=None):
        """The next frame, or None at EOF/reset; raises socket.timeout after timeout."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while len(self.buf) < 9:
            if not self._fill(deadline):
                return None
        n = int.from_bytes(self.buf[:3], "big")
        while len(self.buf) < 9 + n:
            if not self._fill(deadline):
                return None
        ftype, flags, sid = struct.unpack(">BBI", self.buf[3:9])
        f = Frame(ftype, flags, sid & 0x7FFFFFFF, bytes(self.buf[9:9 + n]))
        del self.buf[:9 + n]
        self.frames.append(f)
        if ftype == GOAWAY:
            self.goaways.append(f)
        return f

    def drain(self, timeout=2.0):
        """Reads frames until EOF or timeout, without answering anything; returns
        (frames, closed)."""
        end = time.monotonic() + timeout
        got = []
        while True:
            try:
                f = self.read_frame(max(0.0, end - time.monotonic()))
            except socket.timeout:
                return got, False
            if f is None:
                return got, True
            got.append(f)

    def wait_goaway(self, timeout=5.0, answer=False):
        """Reads until a GOAWAY arrives and then until EOF (or until timeout). Returns
        (goaway Frame or None, closed: EOF seen within timeout). answer: also handle
        SETTINGS/PING/DATA like read_response does."""
        end = time.monotonic() + timeout
        ga = self.goaways[0] if self.goaways else None
        while True:
            try:
                f = self.read_frame(max(0.0, end - time.monotonic()))
            except socket.timeout:
                return ga, False
            if f is None:
                return ga, True
            if answer:
                self._handle(f)
            if f.type == GOAWAY and ga is None:
                ga = f

    def _handle(self, f):
        """Default handling of one frame: answers SETTINGS and PING, replenishes windows,
        decodes header blocks into the stream they belong to."""
        if f.type == SETTINGS and not f.flags & ACK:
            for i in range(0, len(f.payload) - 5, 6):
                k, v = struct.unpack(">HI", f.payload[i:i + 6])
                if k == INITIAL_WINDOW_SIZE:
                    old = self.server_settings.get(INITIAL_WINDOW_SIZE, 65535)
                    for s in self.send_window:
                        self.send_window[s] += v - old
                self.server_settings[k] = v
            self.send(settings_frame(ack=True))
        elif f.type == WINDOW_UPDATE and len(f.payload) == 4:
            inc = struct.unpack(">I", f.payload)[0] & 0x7FFFFFFF
            if f.sid == 0:
                self.conn_send_window += inc
            elif f.sid in self.send_window:
                self.send_window[f.sid] += inc
        elif f.type == PING and not f.flags & ACK:
            self.send(ping_frame(f.payload, ack=True))
        elif f.type in (HEADERS, PUSH_PROMISE):
            payload = f.payload
            if f.flags & PADDED:
                pad = payload[0]
                payload = payload[1:len(payload) - pad]
            if f.type == HEADERS and f.flags & PRIORITY_FLAG:
                payload = payload[5:]
            if f.type == PUSH_PROMISE:
                payload = payload[4:]
            self._block = (f.sid, f.flags, bytearray(payload))
            if f.flags & END_HEADERS:
                self._end_block()
        elif f.type == CONTINUATION:
            if self._block is None or self._block[0] != f.sid:
                raise AssertionError("CONTINUATION from remora outside a header block: %r" % f)
            self._block[2].extend(f.payload)
            if f.flags & END_HEADERS:
                self._end_block()
        elif f.type == DATA:
            st = self.streams.setdefault(f.sid, H2Response(f.sid))
            payload = f.payload
            if f.flags & PADDED:
                payload = payload[1:len(payload) - payload[0]]
            st.add_data(payload)
            if f.payload:
                self.send(window_update_frame(0, len(f.payload)))
                if not f.flags & END_STREAM:
                    self.send(window_update_frame(f.sid, len(f.payload)))
            if f.flags & END_STREAM:
                st.end()
        elif f.type == RST_STREAM:
            st = self.streams.setdefault(f.sid, H2Response(f.sid))
            st.end(reset=f.error_code())

    def _end_block(self):
        sid, flags, block = self._block
        self._block = None
        hs = [(k.decode("latin-1") if isinstance(k, bytes) else k,
               v.decode("latin-1") if isinstance(v, bytes) else v)
              for k, v in self.decoder.decode(bytes(block), raw=True)]
        st = self.streams.setdefault(sid, H2Response(sid))
        status = next((v for k, v in hs if k == ":status"), None)
        if st.status is None and status is not None and status.startswith("1"):
            st.interim.append(hs)
        elif st.status is None:
            st.status = int(status) if status is not None else None
            st.headers = hs
            st.headers_ended_stream = bool(flags & END_STREAM)
        else:
            st.trailers = hs
        if flags & END_STREAM:
            st.end()

    def read_response(self, sid, timeout=None):
        """Reads (answering SETTINGS/PING, replenishing windows) until stream sid ended, was
        reset, the conn got a GOAWAY that leaves sid unprocessed, or closed; returns its
        H2Response. Raises socket.timeout after timeout."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        st = self.streams.setdefault(sid, H2Response(sid))
        while not (st.ended or st.reset is not None):
            f = self.read_frame(max(0.0, deadline - time.monotonic()))
            if f is None:
                st.closed = True
                break
            self._handle(f)
            if f.type == GOAWAY:
                last, code, _ = f.goaway()
                st.goaway = (last, code)
                if sid > last:
                    break
        return st


class Collector:
    """Reads every frame remora sends on a RawConn in a thread (on a dup of its socket), so a
    GOAWAY is seen even while the test is blocked sending a flood. Use it instead of the
    conn's own read methods, from right after the conn was made."""

    def __init__(self, conn):
        self.sock = conn.sock.dup()
        self.sock.settimeout(0.1)
        self.frames = []
        self.bytes = 0
        self.reset = False
        self.closed = threading.Event()
        self._stop = threading.Event()
        self._buf = bytearray()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        try:
            while not self._stop.is_set():
                try:
                    d = self.sock.recv(256 * 1024)
                except socket.timeout:
                    continue
                except ConnectionResetError:
                    self.reset = True
                    d = b""
                except OSError:
                    d = b""
                if not d:
                    break
                self.bytes += len(d)
                self._buf += d
                while len(self._buf) >= 9:
                    n = int.from_bytes(self._buf[:3], "big")
                    if len(self._buf) < 9 + n:
                        break
                    ftype, flags, sid = struct.unpack(">BBI", self._buf[3:9])
                    self.frames.append(Frame(ftype, flags, sid & 0x7FFFFFFF,
                                             bytes(self._buf[9:9 + n])))
                    del self._buf[:9 + n]
        finally:
            self.closed.set()

    def goaway(self):
        """The first GOAWAY frame received, or None."""
        return next((f for f in list(self.frames) if f.type == GOAWAY), None)

    def of_type(self, ftype, sid=None):
        return [f for f in list(self.frames) if f.type == ftype and (sid is None or f.sid == sid)]

    def wait(self, pred, timeout):
        """Polls pred() until true or timeout; returns its last value."""
        end = time.monotonic() + timeout
        while True:
            v = pred()
            if v or time.monotonic() >= end:
                return v
            time.sleep(0.01)

    def wait_closed(self, timeout):
        return self.closed.wait(timeout)

    def stop(self):
        self._stop.set()
        self._t.join(2)
        try:
            self.sock.close()
        except OSError:
            pass
