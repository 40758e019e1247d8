# SPDX-License-Identifier: Apache-2.0
"""h2util: a raw HTTP/2 (h2c, prior knowledge) client over a blocking socket, built on Debian's
python3-h2 4.1, for remora's integration tests (h2 downstream, h2 upstream, flow control, and
the gRPC/abuse tests, which import it too). Nothing here starts a process.

    with H2Client(port) as c:
        r = c.get("/echo", headers=[("x-a", "1")])        # one request, waits for the end
        assert r.status == 200 and r.ended
        sid = c.request("POST", "/upload", body=b"...")   # several streams at once ...
        r = c.response(sid)                               # ... collected one by one

Every read has a deadline. What the client received is kept for frame-level assertions:
`events` (every h2 event, in order), `remote_settings` ({SettingCodes: value} from the peer's
SETTINGS frames), `window_updates` ([(stream_id, delta)]), `goaway` (the last GOAWAY, as an
h2 ConnectionTerminated event: error_code, last_stream_id, additional_data), `goaways` (all
of them) and `eof`. GOAWAY frames are taken out before h2 sees them (GoawaySplitter), so the
streams the peer still finishes after its GOAWAY are received normally.

Flow control: by default received DATA is acknowledged (WINDOW_UPDATE credit given back) as
soon as it is read. With auto_ack=False nothing is given back until the test calls
`ack(stream_id, n)` (or `ack_all`): a deliberately slow reader. Sending respects the peer's
windows and blocks (reading frames) until a WINDOW_UPDATE opens them.

Invalid HTTP/2 from the peer (e.g. a connection-specific header in a response) raises
H2PeerError: h2 validates what it receives.

Also: `remora_h2(remora, upstream, http2={...}, **kw)` starts remora (the conftest factory)
with listeners[0].http2 set.
"""

import hashlib
import socket
import time

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
from h2.errors import ErrorCodes
from h2.settings import SettingCodes
from hyperframe.frame import GoAwayFrame

from helpers import SocketOwner, default_config, free_port

__all__ = ["H2Client", "H2Response", "H2PeerError", "H2Timeout", "ErrorCodes", "SettingCodes",
           "remora_h2", "h2_config", "h2_get", "GoawaySplitter"]


class H2PeerError(Exception):
    """The peer sent something h2 rejects (a protocol error); the connection is unusable."""


class H2Timeout(Exception):
    pass


class H2Response:
    """What arrived on one stream. The one response type of the h2 clients: H2Client (here)
    and h2raw.RawConn both fill it."""

    def __init__(self, stream_id):
        self.stream_id = stream_id
        self.status = None          # int, from the final response's :status
        self.headers = []           # [(name, value)] of the final response, pseudo included
        self.interim = []           # header lists of 1xx responses
        self.body_len = 0
        self.sha = hashlib.sha256()  # of the whole body, even with a sink
        self.trailers = []          # [(name, value)]
        self.ended = False          # END_STREAM received
        self.headers_ended_stream = False  # the response head carried END_STREAM (RawConn)
        self.reset = None           # RST_STREAM error code received, or None
        self.goaway = None          # (last_sid, code) when the conn got a GOAWAY first (RawConn)
        self.closed = False         # the connection ended before the stream did
        self.t_end = None           # time.monotonic() at END_STREAM or RST_STREAM
        self.data_frames = 0
        self.unacked = 0            # flow-controlled bytes not yet acknowledged (auto_ack off)
        self.sink = None            # sink(bytes) takes the body instead of memory
        self._parts = []

    @property
    def done(self):
        return self.ended or self.reset is not None

    @property
    def body(self):
        """The body received so far (empty when a sink consumed it)."""
        if len(self._parts) > 1:
            self._parts[:] = [b"".join(self._parts)]
        return self._parts[0] if self._parts else b""

    def add_data(self, data):
        """Takes the payload of one DATA frame (padding removed)."""
        self.data_frames += 1
        self.body_len += len(data)
        self.sha.update(data)
        if self.sink is not None:
            self.sink(data)
        elif data:
            self._parts.append(data)

    def end(self, reset=None):
        """END_STREAM (reset None) or RST_STREAM with error code reset arrived."""
        if reset is None:
            self.ended = True
        else:
            self.reset = int(reset)
        self.t_end = time.monotonic()

    def header(self, name):
        name = name.lower()
        for k, v in self.headers:
            if k == name:
                return v
        return None

    def header_all(self, name):
        name = name.lower()
        return [v for k, v in self.headers if k == name]

    def trailer(self, name):
        name = name.lower()
        for k, v in self.trailers:
            if k == name:
                return v
        return None

    def meta(self, name):
        """A trailer, else a header (gRPC puts its status in either: trailers-only responses
        carry it in the head)."""
        v = self.trailer(name)
        return v if v is not None else self.header(name)

    def sha256(self):
        return self.sha.hexdigest()

    def json(self):
        import json
        return json.loads(self.body)

    def __repr__(self):
        reset = self.reset
        if reset is not None:
            try:
                reset = ErrorCodes(reset).name.lower()
            except ValueError:
                reset = "0x%x" % reset
        return "<H2Response stream=%d status=%s headers=%r body=%d ended=%s reset=%s " \
               "trailers=%r goaway=%s closed=%s>" % (
                   self.stream_id, self.status, self.headers, self.body_len, self.ended, reset,
                   self.trailers, self.goaway, self.closed)


class GoawaySplitter:
    """Cuts a received byte stream into whole frames and takes GOAWAY frames out of it.

    h2 4.1 moves a connection to CLOSED when it receives a GOAWAY and then rejects every later
    frame, even those of streams at or below the GOAWAY's last-stream-id that the peer is still
    allowed to finish (a graceful drain). So GOAWAY never reaches h2: split() returns, in
    order, bytes to feed to h2 and h2 ConnectionTerminated events made from the GOAWAYs."""

    def __init__(self):
        self.buf = bytearray()

    def split(self, data):
        self.buf += data
        out = []
        pos = 0
        start = 0
        n = len(self.buf)
        while n - pos >= 9:
            length = int.from_bytes(self.buf[pos:pos + 3], "big")
            end = pos + 9 + length
            if end > n:
                break
            if self.buf[pos + 3] == 0x7:  # GOAWAY
                if pos > start:
                    out.append(bytes(self.buf[start:pos]))
                body = self.buf[pos + 9:end]
                ev = h2.events.ConnectionTerminated()
                ev.last_stream_id = int.from_bytes(body[0:4], "big") & 0x7FFFFFFF
                ev.error_code = h2.errors._error_code_from_int(int.from_bytes(body[4:8], "big"))
                ev.additional_data = bytes(body[8:]) or None
                out.append(ev)
                start = end
            pos = end
        if pos > start:
            out.append(bytes(self.buf[start:pos]))
        del self.buf[:pos]
        return out


class _NoLimitSettings(h2.settings.Settings):
    """Peer settings whose MAX_CONCURRENT_STREAMS h2 does not enforce on our sends."""

    @property
    def max_concurrent_streams(self):
        return 2 ** 31 - 1


class H2Client(SocketOwner):
    """One HTTP/2 client connection (h2c with prior knowledge) on a blocking socket.

    settings: extra local SETTINGS {SettingCodes.X: value} sent with the preface (e.g.
    INITIAL_WINDOW_SIZE for a small receive window). conn_window: if given, the connection
    receive window is raised to that many bytes at start. auto_ack: see the module doc.
    rcvbuf: SO_RCVBUF before connect (to bound what the kernel buffers for a slow reader).
    ignore_max_streams: open streams beyond the peer's SETTINGS_MAX_CONCURRENT_STREAMS (h2
    refuses to by default) to test how the peer enforces it. connect=False: no preface is
    sent (send_raw your own bytes).
    """

    def __init__(self, port, host="127.0.0.1", timeout=5.0, settings=None, conn_window=None,
                 auto_ack=True, rcvbuf=None, connect=True, ignore_max_streams=False):
        self.port = port
        self.host = host
        self.timeout = timeout
        self.auto_ack = auto_ack
        fam = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(fam, socket.SOCK_STREAM)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect((host, port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        cfg = h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        self.conn = h2.connection.H2Connection(config=cfg)
        if ignore_max_streams:
            self.conn.remote_settings = _NoLimitSettings(client=False)
        self.events = []
        self.remote_settings = {}
        self.settings_acked = 0
        self.window_updates = []
        self.goaway = None
        self.goaways = []
        self.eof = False
        self.reset_by_peer = False
        self.streams = {}           # stream id -> H2Response
        self.received = 0           # bytes read from the socket
        self.pings = []
        self.splitter = GoawaySplitter()
        if connect:
            # Values in the preface's SETTINGS must be current ones (h2 sends the acked
            # values of local_settings), hence a fresh Settings object.
            init = {SettingCodes.ENABLE_PUSH: 0, SettingCodes.MAX_CONCURRENT_STREAMS: 100,
                    SettingCodes.MAX_HEADER_LIST_SIZE: 1024 * 1024}
            init.update(dict(settings or {}))
            self.conn.local_settings = h2.settings.Settings(client=True, initial_values=init)
            self.conn.decoder.max_header_list_size = init[SettingCodes.MAX_HEADER_LIST_SIZE]
            if SettingCodes.MAX_FRAME_SIZE in init:
                self.conn.max_inbound_frame_size = init[SettingCodes.MAX_FRAME_SIZE]
            self.conn.initiate_connection()
            if conn_window and conn_window > 65535:
                self.conn.increment_flow_control_window(conn_window - 65535)
            self.flush()

    # ---- plumbing -------------------------------------------------------------------------

    def flush(self):
        d = self.conn.data_to_send()
        if d:
            self.sock.sendall(d)

    def send_raw(self, data):
        """Writes bytes as they are (for hand-made frames); h2's state does not see them."""
        self.flush()
        self.sock.sendall(data)

    def pump(self, timeout=None):
        """Reads once (waiting up to timeout, default the client's timeout) and processes what
        arrived. Returns the new events; [] on timeout or EOF (then self.eof is set)."""
        if self.eof:
            return []
        self.sock.settimeout(self.timeout if timeout is None else max(timeout, 0.001))
        try:
            d = self.sock.recv(1024 * 1024)
        except socket.timeout:
            return []
        except ConnectionResetError:
            self.reset_by_peer = True
            d = b""
        finally:
            self.sock.settimeout(self.timeout)
        if not d:
            self.eof = True
            return []
        self.received += len(d)
        return self.feed(d)

    def feed(self, data):
        evs = []
        for part in self.splitter.split(data):
            if isinstance(part, h2.events.ConnectionTerminated):
                evs.append(part)
                self._on_event(part)
                continue
            try:
                got = self.conn.receive_data(part)
            except h2.exceptions.ProtocolError as e:
                try:
                    self.flush()
                except OSError:
                    pass
                raise H2PeerError("peer sent invalid HTTP/2: %r" % e) from e
            for ev in got:
                self._on_event(ev)
            evs.extend(got)
        try:
            self.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass
        return evs

    def _stream(self, sid):
        r = self.streams.get(sid)
        if r is None:
            r = self.streams[sid] = H2Response(sid)
        return r

    def _on_event(self, ev):
        self.events.append(ev)
        if isinstance(ev, h2.events.ResponseReceived):
            r = self._stream(ev.stream_id)
            r.headers = list(ev.headers)
            r.status = int(dict(ev.headers)[":status"])
        elif isinstance(ev, h2.events.InformationalResponseReceived):
            self._stream(ev.stream_id).interim.append(list(ev.headers))
        elif isinstance(ev, h2.events.DataReceived):
            r = self._stream(ev.stream_id)
            r.add_data(ev.data)
            if self.auto_ack:
                self._ack(ev.stream_id, ev.flow_controlled_length)
            else:
                r.unacked += ev.flow_controlled_length
        elif isinstance(ev, h2.events.TrailersReceived):
            self._stream(ev.stream_id).trailers = list(ev.headers)
        elif isinstance(ev, h2.events.StreamEnded):
            self._stream(ev.stream_id).end()
        elif isinstance(ev, h2.events.StreamReset):
            self._stream(ev.stream_id).end(reset=ev.error_code)
        elif isinstance(ev, h2.events.RemoteSettingsChanged):
            for code, ch in ev.changed_settings.items():
                self.remote_settings[code] = ch.new_value
        elif isinstance(ev, h2.events.SettingsAcknowledged):
            self.settings_acked += 1
        elif isinstance(ev, h2.events.WindowUpdated):
            self.window_updates.append((ev.stream_id, ev.delta))
        elif isinstance(ev, h2.events.ConnectionTerminated):
            self.goaway = ev
            self.goaways.append(ev)
        elif isinstance(ev, h2.events.PingAckReceived):
            self.pings.append(ev.ping_data)

    def _ack(self, sid, n):
        if n <= 0:
            return
        try:
            self.conn.acknowledge_received_data(n, sid)
        except (h2.exceptions.ProtocolError, KeyError):
            pass

    def ack(self, sid, n=None):
        """Gives back n (default: all pending) flow-controlled bytes of stream sid."""
        r = self._stream(sid)
        n = r.unacked if n is None else min(n, r.unacked)
        r.unacked -= n
        self._ack(sid, n)
        self.flush()
        return n

    def ack_all(self):
        for sid in list(self.streams):
            self.ack(sid)

    def wait(self, pred, timeout=None):
        """Pumps until pred() is true; returns its value. Raises H2Timeout at the deadline and
        returns pred() (maybe false) at EOF."""
        end = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            v = pred()
            if v:
                return v
            if self.eof:
                return v
            left = end - time.monotonic()
            if left <= 0:
                raise H2Timeout("timed out waiting (%s)" % getattr(pred, "__name__", pred))
            self.pump(left)

    def wait_closed(self, timeout=None):
        """True if the peer closes the connection within timeout (reading everything)."""
        try:
            self.wait(lambda: self.eof, timeout)
        except H2Timeout:
            return False
        return True

    # ---- requests -------------------------------------------------------------------------

    def request(self, method="GET", path="/", headers=None, body=None, authority="127.0.0.1",
                scheme="http", end_stream=None, trailers=None, sink=None):
        """Opens a stream; returns its id. body (bytes) is sent within the windows; the stream
        ends after the body (or the trailers) unless end_stream=False (send more with
        send_data/send_trailers). sink(bytes) receives the response body instead of memory."""
        sid = self.conn.get_next_available_stream_id()
        hs = [(":method", method), (":scheme", scheme), (":authority", authority),
              (":path", path)] + [(k.lower(), v) for k, v in (headers or [])]
        if authority is None:
            hs = [h for h in hs if h[0] != ":authority"]
        r = self._stream(sid)
        r.sink = sink
        if end_stream is None:
            end_stream = True
        no_body = not body and not trailers
        self.conn.send_headers(sid, hs, end_stream=end_stream and no_body)
        self.flush()
        if body:
            self.send_data(sid, body, end_stream=end_stream and not trailers)
        if trailers:
            self.send_trailers(sid, trailers, end_stream=end_stream)
        return sid

    def send_data(self, sid, data, end_stream=False, timeout=None):
        """Sends data on sid within the peer's windows, pumping frames while they are closed.
        Returns the bytes sent (less than len(data) if the stream was reset meanwhile)."""
        view = memoryview(data)
        sent = 0
        end = time.monotonic() + (self.timeout if timeout is None else timeout)
        while view:
            r = self.streams.get(sid)
            if r is not None and r.reset is not None:
                return sent
            try:
                avail = min(self.conn.local_flow_control_window(sid),
                            self.conn.max_outbound_frame_size)
            except h2.exceptions.StreamClosedError:
                return sent
            if avail <= 0:
                if self.eof:
                    return sent
                if time.monotonic() >= end:
                    raise H2Timeout("flow-control window closed for %.1fs on stream %d"
                                    % (self.timeout if timeout is None else timeout, sid))
                self.pump(min(0.5, max(end - time.monotonic(), 0.001)))
                continue
            part = view[:avail]
            view = view[len(part):]
            self.conn.send_data(sid, part.tobytes(), end_stream=end_stream and not view)
            self.flush()
            sent += len(part)
            end = time.monotonic() + (self.timeout if timeout is None else timeout)
            # take in what arrived meanwhile (WINDOW_UPDATEs, an early response) cheaply
            self._poll_nowait()
        if end_stream and not data:
            self.conn.end_stream(sid)
            self.flush()
        return sent

    def _poll_nowait(self):
        self.sock.setblocking(False)
        try:
            d = self.sock.recv(1024 * 1024)
        except (BlockingIOError, InterruptedError):
            return
        except ConnectionResetError:
            self.reset_by_peer = True
            self.eof = True
            return
        finally:
            self.sock.setblocking(True)
            self.sock.settimeout(self.timeout)
        if not d:
            self.eof = True
            return
        self.received += len(d)
        self.feed(d)

    def send_trailers(self, sid, trailers, end_stream=True):
        self.conn.send_headers(sid, [(k.lower(), v) for k, v in trailers], end_stream=end_stream)
        self.flush()

    def end_stream(self, sid):
        self.conn.end_stream(sid)
        self.flush()

    def reset(self, sid, code=ErrorCodes.CANCEL):
        self.conn.reset_stream(sid, code)
        self.flush()

    def ping(self, data=b"12345678"):
        self.conn.ping(data)
        self.flush()

    def send_goaway(self, code=ErrorCodes.NO_ERROR, last_stream_id=0, data=b""):
        """Writes a GOAWAY by hand: h2's own would move this client to CLOSED and make it
        reject what the peer still sends (e.g. the answers to streams already open)."""
        f = GoAwayFrame(0)
        f.last_stream_id = last_stream_id
        f.error_code = int(code)
        f.additional_data = data
        self.send_raw(f.serialize())

    def response(self, sid, timeout=None):
        """Waits until stream sid ended or was reset (or the connection closed); returns its
        H2Response. Raises H2Timeout at the deadline."""
        r = self._stream(sid)

        def done():
            return r.done

        self.wait(done, timeout)
        if not r.done and self.eof:
            r.closed = True
        return r

    def get(self, path, method="GET", timeout=None, **kw):
        """One request, waits for its end; returns the H2Response."""
        return self.response(self.request(method, path, **kw), timeout)

    def responses(self, sids, timeout=None):
        """Waits for all streams in sids; returns their H2Responses in that order."""
        rs = [self._stream(s) for s in sids]

        def all_done():
            return all(r.done for r in rs)

        self.wait(all_done, timeout)
        for r in rs:
            if not r.done and self.eof:
                r.closed = True
        return rs


def h2_get(port, path, timeout=5.0, **kw):
    """One request on a fresh connection; returns the H2Response."""
    with H2Client(port, timeout=timeout) as c:
        return c.get(path, timeout=timeout, **kw)


# ---- remora with HTTP/2 listener settings -----------------------------------------------------

def h2_config(port, admin_port, endpoints, http2=None, **kw):
    """helpers.default_config with listeners[0].http2 = http2 (when given)."""
    cfg = default_config(port, admin_port, endpoints, **kw)
    if http2 is not None:
        cfg["listeners"][0]["http2"] = dict(http2)
    return cfg


def remora_h2(remora, upstream=None, endpoints=None, http2=None, **kw):
    """Starts remora through the conftest `remora` factory with listeners[0].http2 set; the
    other keyword options are default_config's (workers, upstream_opts, routes, limits, ...)."""
    port = free_port()
    admin_port = free_port()
    while admin_port == port:
        admin_port = free_port()
    if endpoints is None:
        endpoints = [upstream.addr] if upstream is not None else ["127.0.0.1:1"]
    return remora(config=h2_config(port, admin_port, endpoints, http2=http2, **kw))
