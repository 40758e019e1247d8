#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""h2_upstream: the scriptable h2c (HTTP/2 over cleartext, prior knowledge) test app for remora's
integration tests.

asyncio + Debian's python3-h2 4.1. Serves many connections, each with many concurrent streams,
with real flow control: response DATA is only sent within the peer's stream and connection
windows, and received DATA is acknowledged (WINDOW_UPDATE) only when the handler consumed it,
so a handler that reads slowly holds the sender back. Request bodies are streamed and hashed,
never held whole (except /echo, which sends the body back).

    h2_upstream.py --port N [--host 127.0.0.1] [--max-streams N] [--window N] [--name NAME]
                   [--connect-protocol]

prints "READY <port>" once listening. --max-streams sets SETTINGS_MAX_CONCURRENT_STREAMS (and is
enforced: an extra stream is refused with RST_STREAM REFUSED_STREAM and counted, rather than
killing the connection like h2 itself would). --window sets SETTINGS_INITIAL_WINDOW_SIZE.
--connect-protocol advertises SETTINGS_ENABLE_CONNECT_PROTOCOL = 1 and serves extended CONNECT
(RFC 8441) streams, see CONNECT below.

Every response carries `x-upstream-conn` (per-connection id, 1-based) and `x-upstream-stream`
(the stream id). Behaviour by path (query modifiers in brackets):

  /echo              200, the request body back; headers: every request `x-*` header as
                     `x-echo-<name>` (x-foo: 1 -> x-echo-x-foo: 1), `x-seen-authority`,
                     `x-seen-method`, `x-seen-path`, `x-seen-scheme`, `x-seen-headers`
                     (comma-separated names of all request header fields in order,
                     pseudo-headers included), `x-seen-trailers` (names of request
                     trailers), `x-body-len`, `x-body-sha256`
  /json              200 JSON {"method","path","authority","scheme","headers":[[n,v],..],
                     "trailers":[[n,v],..],"body_len","body_sha256"}
  /bytes?n=N         200, content-length N, N bytes of the 0123456789abcdef pattern
  /status?code=N     status N, body "status N\n" (none for 204/304)
  /trailers          200, body [?n=N pattern bytes, default "hello trailers\n"], then trailers
                     grpc-status: [?grpc_status=0], grpc-message: [?grpc_message=ok], x-trailer: yes
  /goaway            GOAWAY NO_ERROR with last-stream-id [?last=N | self | below (default:
                     this stream id - 2)], then [?then=close (default): close the connection
                     at once | drain: finish the streams <= last-stream-id, then close |
                     respond: like drain, this stream (last >= it) is answered too]
  /rst?code=N        RST_STREAM with error code N (default 2 INTERNAL_ERROR) [?after=headers:
                     after sending response headers | data: after headers and 1000 bytes]
  /slow?ms=M&n=N     200, N bytes sent [?chunk=C, default 1024] bytes every M ms
  /sleep?ms=N        200 "ok" after N ms
  /upload            200 JSON {"body_len","body_sha256"}; [?slow=1: reads at [?rate=B bytes/s,
                     default 2000000], i.e. acknowledges (WINDOW_UPDATE) only at that rate]
  /_stats, /stats    JSON counters (see Stats); [?reset_peak=1]; also over HTTP/1.1 (a plain
                     GET on the same port answers only these paths, anything else is 505)
  anything else      like /json

CONNECT streams: with --connect-protocol, an extended CONNECT (:method CONNECT with :protocol,
any :path) is a tunnel: :status 200 at once, then every DATA byte is echoed back as it comes
(acknowledged only once echoed, so a client that does not read holds the sender back); at the
peer's END_STREAM the app sends "BYE <n>\n" (n: bytes received) and ends the stream too. Each
is recorded in `tunnels` of /_stats: conn, stream, protocol, method, path, authority, scheme,
headers (regular ones), bytes_in, ended (END_STREAM received), reset (RST_STREAM code received,
else null), done. A CONNECT without :protocol is answered 405 (when h2 lets it through: it
insists on :scheme and :path); an extended CONNECT without --connect-protocol 400.

Modifiers on any path: ?once=KEY applies the fault of /goaway or /rst only the first time KEY
is seen by this process (later requests with that key get 200 "ok ..."): the retry tests use
it so the retried request succeeds. ?set=Name:Value (repeatable) adds that response header.
"""

import argparse
import asyncio
import hashlib
import json
import socket
import sys
import urllib.parse

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
from h2.settings import SettingCodes
from hyperframe.frame import GoAwayFrame

from h2util import GoawaySplitter
from helpers import BLOCK, add_tls_args, log_tls_conn, pattern, tls_server_context

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
NAME = ""
MAX_STREAMS = 256
WINDOW = None
CONNECT_PROTOCOL = False
CONN_WINDOW_EXTRA = 1024 * 1024 - 65535  # the connection window is 1 MiB
VERBOSE = False


def log(msg):
    if VERBOSE:
        print(msg, file=sys.stderr, flush=True)


class Stats:
    conns_open = 0
    conns_total = 0
    streams_total = 0          # streams handled (refused and /_stats not counted)
    streams_active = 0         # handled streams open now, over all connections
    max_active_on_conn = 0     # peak of handled streams open at once on one connection
    max_active = 0             # peak of streams_active
    refused_over_limit = 0     # streams refused because --max-streams were already open
    refused_over_limit_acked = 0  # ... of those, after the peer had ACKed our SETTINGS: the
                                  # peer knew the limit (before that, a race the RFC allows)
    refused_after_goaway = 0   # new streams above our GOAWAY's last-stream-id
    resets_sent = 0
    resets_received = {}       # error code -> count (RST_STREAM from the peer)
    goaways_sent = 0
    goaways_received = 0
    data_sent = 0              # response body bytes handed to h2 (all connections)
    protocol_errors = []       # h2 exceptions raised by what the peer sent (first 20)
    conns = {}                 # id -> per-connection dict
    tunnels = []               # extended CONNECT streams (see CONNECT in the docstring)
    once_keys = set()

    @classmethod
    def doc(cls):
        return {
            "conns_open": cls.conns_open, "conns_total": cls.conns_total,
            "streams_total": cls.streams_total, "streams_active": cls.streams_active,
            "max_active_on_conn": cls.max_active_on_conn, "max_active": cls.max_active,
            "refused_over_limit": cls.refused_over_limit,
            "refused_over_limit_acked": cls.refused_over_limit_acked,
            "refused_after_goaway": cls.refused_after_goaway,
            "resets_sent": cls.resets_sent,
            "resets_received": {str(k): v for k, v in cls.resets_received.items()},
            "goaways_sent": cls.goaways_sent, "goaways_received": cls.goaways_received,
            "data_sent": cls.data_sent,
            "protocol_errors": cls.protocol_errors,
            "max_streams": MAX_STREAMS,
            "conns": [dict(c) for _, c in sorted(cls.conns.items())],
            "tunnels": [dict(t) for t in cls.tunnels],
        }

    @classmethod
    def reset_peak(cls):
        cls.max_active = cls.streams_active
        cls.max_active_on_conn = max([c["active"] for c in cls.conns.values() if c["open"]],
                                     default=0)
        for c in cls.conns.values():
            c["max_active"] = c["active"]


class _LenientSettings(h2.settings.Settings):
    """Advertises SETTINGS_MAX_CONCURRENT_STREAMS as configured, but h2 itself does not enforce
    it (h2 would tear the whole connection down): H2Conn refuses extra streams itself."""

    @property
    def max_concurrent_streams(self):
        return 2 ** 31 - 1


class Abort(Exception):
    """The stream (or the connection) is gone: stop handling it quietly."""


class Stream:
    def __init__(self, conn, sid, headers):
        self.conn = conn
        self.sid = sid
        self.headers = headers                  # [(name, value)] str, pseudo-headers first
        self.pseudo = {k: v for k, v in headers if k.startswith(":")}
        self.trailers = []
        self.chunks = asyncio.Queue()           # (bytes, flow_controlled_length) | None at end
        self.ended = False                      # END_STREAM received
        self.window = asyncio.Event()
        self.reset_code = None                  # RST_STREAM received (or connection gone)
        self.active = True                      # counted in the active streams
        self.task = None
        target = self.pseudo.get(":path", "/")
        u = urllib.parse.urlsplit(target)
        self.path = u.path
        qs = urllib.parse.parse_qs(u.query)
        self.query = {k: v[0] for k, v in qs.items()}
        self.extra = [tuple(v.split(":", 1)) for v in qs.get("set", []) if ":" in v]

    def qint(self, name, default):
        try:
            return int(self.query.get(name, default))
        except ValueError:
            return default

    async def read(self, ack=True):
        """The next body chunk (b"" at the end). With ack, the chunk is acknowledged (its
        WINDOW_UPDATE credit given back) at once; else the caller calls self.ack(n) later."""
        if self.reset_code is not None and self.chunks.empty():
            raise Abort()
        item = await self.chunks.get()
        if item is None:
            self.chunks.put_nowait(None)
            if self.reset_code is not None:
                raise Abort()
            return b"", 0
        data, fcl = item
        if ack:
            self.ack(fcl)
        return data, fcl

    def ack(self, n):
        if n:
            self.conn.ack(self.sid, n)

    async def consume(self):
        """Reads (and acknowledges) the rest of the body; returns (length, sha256 hex)."""
        h = hashlib.sha256()
        n = 0
        while True:
            d, _ = await self.read()
            if not d:
                return n, h.hexdigest()
            h.update(d)
            n += len(d)


class H2Conn:
    next_id = 1

    def __init__(self, reader, writer, initial):
        self.r = reader
        self.w = writer
        self.initial = initial
        self.id = H2Conn.next_id
        H2Conn.next_id += 1
        cfg = h2.config.H2Configuration(client_side=False, header_encoding="utf-8",
                                        normalize_inbound_headers=False)
        self.h2 = h2.connection.H2Connection(config=cfg)
        init = {SettingCodes.MAX_CONCURRENT_STREAMS: MAX_STREAMS,
                SettingCodes.MAX_HEADER_LIST_SIZE: 1024 * 1024}
        if WINDOW is not None:
            init[SettingCodes.INITIAL_WINDOW_SIZE] = WINDOW
        if CONNECT_PROTOCOL:
            init[SettingCodes.ENABLE_CONNECT_PROTOCOL] = 1
        self.h2.local_settings = _LenientSettings(client=False, initial_values=init)
        self.h2.decoder.max_header_list_size = 1024 * 1024
        self.streams = {}
        self.closed = False
        self.goaway_last = None    # last-stream-id of the GOAWAY we sent
        self.st = {"id": self.id, "open": True, "streams": 0, "active": 0, "max_active": 0,
                   "close": None, "goaway_received": False, "goaway_sent": False,
                   "peer_settings": {}, "settings_acked": False, "data_sent": 0}
        Stats.conns[self.id] = self.st

    # ---- output ---------------------------------------------------------------------------

    def flush(self):
        if self.closed:
            return
        d = self.h2.data_to_send()
        if d:
            self.w.write(d)

    async def drain(self):
        if self.closed:
            raise Abort()
        try:
            await self.w.drain()
        except (ConnectionError, OSError):
            self.close("error")
            raise Abort()

    def ack(self, sid, n):
        if self.closed:
            return
        try:
            self.h2.acknowledge_received_data(n, sid)
        except (h2.exceptions.ProtocolError, KeyError):
            pass
        self.flush()

    def finish(self, s):
        """s no longer counts as an open stream (END_STREAM sent after the request ended, a
        reset either way, or the connection is gone). Called synchronously before the frame that
        ends it is written, so the peer can never see a free slot we have not freed yet."""
        if s.active:
            s.active = False
            self.st["active"] -= 1
            Stats.streams_active -= 1

    def ids(self, s):
        out = [("x-upstream-conn", str(self.id)), ("x-upstream-stream", str(s.sid))]
        if NAME:
            out.append(("x-upstream-name", NAME))
        return out

    def check(self, s):
        if self.closed or s.reset_code is not None:
            raise Abort()
        if self.goaway_last is not None and s.sid > self.goaway_last:
            raise Abort()

    async def send_headers(self, s, status, headers=(), end_stream=False):
        self.check(s)
        hs = [(":status", str(status))] + list(headers) + s.extra + self.ids(s)
        if end_stream:
            self.finish(s)
        try:
            self.h2.send_headers(s.sid, hs, end_stream=end_stream)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            raise Abort()
        self.flush()
        await self.drain()

    async def send_trailers(self, s, trailers):
        self.check(s)
        self.finish(s)
        try:
            self.h2.send_headers(s.sid, list(trailers), end_stream=True)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            raise Abort()
        self.flush()
        await self.drain()

    async def send_data(self, s, data, end_stream=False):
        """Sends data within the flow-control windows, waiting for WINDOW_UPDATEs."""
        view = memoryview(data)
        while True:
            self.check(s)
            if not view:
                if end_stream:
                    self.finish(s)
                    try:
                        self.h2.send_data(s.sid, b"", end_stream=True)
                    except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
                        raise Abort()
                    self.flush()
                    await self.drain()
                return
            try:
                avail = min(self.h2.local_flow_control_window(s.sid),
                            self.h2.max_outbound_frame_size)
            except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError, KeyError):
                raise Abort()
            if avail <= 0:
                s.window.clear()
                await s.window.wait()
                continue
            part = view[:avail]
            view = view[len(part):]
            last = end_stream and not view
            if last:
                self.finish(s)
            try:
                self.h2.send_data(s.sid, part.tobytes(), end_stream=last)
            except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
                raise Abort()
            self.st["data_sent"] += len(part)
            Stats.data_sent += len(part)
            self.flush()
            await self.drain()
            if last:
                return

    async def send_pattern(self, s, n, end_stream=True):
        off = 0
        while off < n:
            k = min(len(BLOCK), n - off)
            await self.send_data(s, pattern(off, k), end_stream=end_stream and off + k == n)
            off += k
        if n == 0 and end_stream:
            await self.send_data(s, b"", end_stream=True)

    async def respond(self, s, status, body=b"", headers=(), ctype="text/plain"):
        hs = list(headers)
        no_body = status in (204, 304)
        if not no_body:
            hs = [("content-type", ctype), ("content-length", str(len(body)))] + hs
        head_only = s.pseudo.get(":method") == "HEAD"
        if no_body or head_only or not body:
            await self.send_headers(s, status, hs, end_stream=True)
            return
        await self.send_headers(s, status, hs)
        await self.send_data(s, body, end_stream=True)

    def reset(self, s, code):
        if self.closed:
            return
        self.finish(s)
        try:
            self.h2.reset_stream(s.sid, code)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            return
        Stats.resets_sent += 1
        self.flush()

    def send_goaway(self, last):
        """A GOAWAY written by hand: h2 moves to CLOSED when it sends one itself, which would
        forbid finishing the streams at or below last-stream-id (a graceful drain)."""
        self.flush()
        f = GoAwayFrame(0)
        f.last_stream_id = last
        f.error_code = 0
        self.w.write(f.serialize())
        self.goaway_last = last
        self.st["goaway_sent"] = True
        Stats.goaways_sent += 1
        for sid, s in list(self.streams.items()):
            if sid > last:
                # never processed, as the GOAWAY says: the peer may retry it elsewhere
                self.finish(s)
                s.window.set()
                if s.task is not None and s.task is not asyncio.current_task():
                    s.task.cancel()

    def close(self, why):
        if self.closed:
            return
        self.closed = True
        self.st["open"] = False
        if self.st["close"] is None:
            self.st["close"] = why
        Stats.conns_open -= 1
        for s in self.streams.values():
            self.finish(s)
            if s.reset_code is None:
                s.reset_code = -1
            s.window.set()
            s.chunks.put_nowait(None)
        try:
            self.w.close()
        except Exception:  # noqa: BLE001 - closing anyway
            pass
        log("conn %d closed: %s" % (self.id, why))

    def maybe_close_drained(self):
        if self.goaway_last is None or self.closed:
            return
        if not any(s.active for sid, s in self.streams.items() if sid <= self.goaway_last):
            asyncio.get_running_loop().call_later(0.05, self.close, "self")

    # ---- input ----------------------------------------------------------------------------

    async def serve(self):
        Stats.conns_open += 1
        Stats.conns_total += 1
        log("conn %d open" % self.id)
        self.h2.initiate_connection()
        if CONN_WINDOW_EXTRA > 0:
            self.h2.increment_flow_control_window(CONN_WINDOW_EXTRA)
        self.flush()
        splitter = GoawaySplitter()
        data = b""
        try:
            self.feed([self.initial])  # the preface
            while not self.closed:
                if data:
                    if not self.feed(splitter.split(data)):
                        return
                if self.closed:
                    return
                try:
                    data = await self.r.read(256 * 1024)
                except (ConnectionError, OSError):
                    data = b""
                if not data:
                    self.close("eof_after_goaway" if self.st["goaway_received"] else "eof")
                    return
        finally:
            self.close("self")

    def feed(self, parts):
        """Processes bytes (through h2) and GOAWAY events in order; False if the peer broke
        the protocol (the connection is then closed)."""
        for part in parts:
            if isinstance(part, h2.events.ConnectionTerminated):
                self.on_event(part)
                continue
            try:
                events = self.h2.receive_data(part)
            except h2.exceptions.ProtocolError as e:
                if len(Stats.protocol_errors) < 20:
                    Stats.protocol_errors.append("conn %d: %r" % (self.id, e))
                print("h2_upstream conn %d: protocol error from peer: %r" % (self.id, e),
                      file=sys.stderr, flush=True)
                self.flush()  # h2's GOAWAY
                self.close("protocol_error")
                return False
            for ev in events:
                self.on_event(ev)
        self.flush()
        return True

    def on_event(self, ev):
        if isinstance(ev, h2.events.RequestReceived):
            self.on_request(ev)
        elif isinstance(ev, h2.events.DataReceived):
            s = self.streams.get(ev.stream_id)
            if s is None or not s.active:
                # nobody will read it: give the credit back at once
                self.ack(ev.stream_id, ev.flow_controlled_length)
            else:
                s.chunks.put_nowait((ev.data, ev.flow_controlled_length))
        elif isinstance(ev, h2.events.TrailersReceived):
            s = self.streams.get(ev.stream_id)
            if s is not None:
                s.trailers = list(ev.headers)
        elif isinstance(ev, h2.events.StreamEnded):
            s = self.streams.get(ev.stream_id)
            if s is not None:
                s.ended = True
                s.chunks.put_nowait(None)
        elif isinstance(ev, h2.events.StreamReset):
            Stats.resets_received[ev.error_code] = Stats.resets_received.get(ev.error_code, 0) + 1
            s = self.streams.get(ev.stream_id)
            if s is not None:
                s.reset_code = int(ev.error_code)
                self.finish(s)
                s.window.set()
                s.chunks.put_nowait(None)
                self.maybe_close_drained()
        elif isinstance(ev, h2.events.WindowUpdated):
            if ev.stream_id == 0:
                for s in self.streams.values():
                    s.window.set()
            else:
                s = self.streams.get(ev.stream_id)
                if s is not None:
                    s.window.set()
        elif isinstance(ev, h2.events.RemoteSettingsChanged):
            for code, ch in ev.changed_settings.items():
                self.st["peer_settings"][str(int(code))] = ch.new_value
            for s in self.streams.values():
                s.window.set()
        elif isinstance(ev, h2.events.SettingsAcknowledged):
            self.st["settings_acked"] = True
        elif isinstance(ev, h2.events.ConnectionTerminated):
            self.st["goaway_received"] = True
            self.st["goaway_code"] = int(ev.error_code)
            Stats.goaways_received += 1
            log("conn %d: GOAWAY received %r" % (self.id, ev))

    def on_request(self, ev):
        s = Stream(self, ev.stream_id, list(ev.headers))
        control = s.path in ("/_stats", "/stats")
        if self.goaway_last is not None and s.sid > self.goaway_last:
            s.active = False
            Stats.refused_after_goaway += 1
            self.h2.reset_stream(s.sid, h2.errors.ErrorCodes.REFUSED_STREAM)
            return
        if not control and self.st["active"] >= MAX_STREAMS:
            s.active = False
            Stats.refused_over_limit += 1
            if self.st["settings_acked"]:
                Stats.refused_over_limit_acked += 1
            print("h2_upstream conn %d: stream %d over the %d concurrent streams advertised: "
                  "refused" % (self.id, s.sid, MAX_STREAMS), file=sys.stderr, flush=True)
            self.h2.reset_stream(s.sid, h2.errors.ErrorCodes.REFUSED_STREAM)
            return
        self.streams[s.sid] = s
        if control:
            s.active = False
        else:
            self.st["active"] += 1
            self.st["streams"] += 1
            self.st["max_active"] = max(self.st["max_active"], self.st["active"])
            Stats.streams_total += 1
            Stats.streams_active += 1
            Stats.max_active = max(Stats.max_active, Stats.streams_active)
            Stats.max_active_on_conn = max(Stats.max_active_on_conn, self.st["active"])
        s.task = asyncio.get_running_loop().create_task(self.run(s))

    async def run(self, s):
        try:
            await self.handle(s)
        except (Abort, asyncio.CancelledError):
            pass
        except Exception as e:  # noqa: BLE001 - a bug in this app: say so, reset the stream
            print("h2_upstream conn %d stream %d: handler error %r" % (self.id, s.sid, e),
                  file=sys.stderr, flush=True)
            self.reset(s, h2.errors.ErrorCodes.INTERNAL_ERROR)
        finally:
            if s.active:
                # the handler ended without ending the stream (abandoned after our GOAWAY)
                self.finish(s)
            self.streams.pop(s.sid, None)
            self.maybe_close_drained()

    # ---- behaviours -----------------------------------------------------------------------

    def once_done(self, s):
        """True when ?once=KEY was seen before (the fault is not applied again)."""
        key = s.query.get("once")
        if key is None:
            return False
        if key in Stats.once_keys:
            return True
        Stats.once_keys.add(key)
        return False

    async def tunnel(self, s):
        """An extended CONNECT stream: 200, echo, "BYE <n>\n" and END_STREAM at the peer's."""
        t = {"conn": self.id, "stream": s.sid, "protocol": s.pseudo.get(":protocol"),
             "method": s.pseudo.get(":method"), "path": s.pseudo.get(":path"),
             "authority": s.pseudo.get(":authority"), "scheme": s.pseudo.get(":scheme"),
             "headers": [[k, v] for k, v in s.headers if not k.startswith(":")],
             "bytes_in": 0, "ended": False, "reset": None, "done": False}
        Stats.tunnels.append(t)
        try:
            await self.send_headers(s, 200)
            while True:
                d, fcl = await s.read(ack=False)
                if not d:
                    break
                t["bytes_in"] += len(d)
                await self.send_data(s, d)
                s.ack(fcl)
            t["ended"] = True
            await self.send_data(s, b"BYE %d\n" % t["bytes_in"], end_stream=True)
        finally:
            t["reset"] = s.reset_code if s.reset_code not in (None, -1) else None
            t["done"] = True

    async def handle(self, s):
        p = s.path
        q = s.query
        method = s.pseudo.get(":method", "")
        if method == "CONNECT":
            if ":protocol" not in s.pseudo:
                await self.respond(s, 405, b"plain CONNECT not served\n")
            elif not CONNECT_PROTOCOL:
                await self.respond(s, 400, b"extended CONNECT not enabled\n")
            else:
                await self.tunnel(s)
        elif p == "/echo":
            parts = []
            h = hashlib.sha256()
            n = 0
            while True:
                d, _ = await s.read()
                if not d:
                    break
                parts.append(d)
                h.update(d)
                n += len(d)
            body = b"".join(parts)
            hs = [("x-echo-" + k, v) for k, v in s.headers if k.startswith("x-")]
            hs += [("x-seen-authority", s.pseudo.get(":authority", "")),
                   ("x-seen-method", method),
                   ("x-seen-path", s.pseudo.get(":path", "")),
                   ("x-seen-scheme", s.pseudo.get(":scheme", "")),
                   ("x-seen-headers", ",".join(k for k, _ in s.headers)),
                   ("x-seen-trailers", ",".join(k for k, _ in s.trailers)),
                   ("x-body-len", str(n)), ("x-body-sha256", h.hexdigest())]
            await self.respond(s, 200, body, hs, ctype="application/octet-stream")
        elif p == "/bytes":
            await s.consume()
            n = s.qint("n", 0)
            hs = [("content-type", "application/octet-stream"), ("content-length", str(n))]
            if method == "HEAD" or n == 0:
                await self.send_headers(s, 200, hs, end_stream=True)
                return
            await self.send_headers(s, 200, hs)
            await self.send_pattern(s, n)
        elif p == "/status":
            await s.consume()
            code = s.qint("code", 200)
            await self.respond(s, code, ("status %d\n" % code).encode())
        elif p == "/trailers":
            await s.consume()
            await self.send_headers(s, 200, [("content-type", q.get("ctype", "text/plain"))])
            if "n" in q:
                await self.send_pattern(s, s.qint("n", 0), end_stream=False)
            else:
                await self.send_data(s, b"hello trailers\n")
            await self.send_trailers(s, [("grpc-status", q.get("grpc_status", "0")),
                                         ("grpc-message", q.get("grpc_message", "ok")),
                                         ("x-trailer", "yes")])
        elif p == "/goaway":
            await s.consume()
            if self.once_done(s):
                await self.respond(s, 200, b"ok goaway\n")
                return
            last = q.get("last", "below")
            if last == "self":
                last = s.sid
            elif last == "below":
                last = max(0, s.sid - 2)
            else:
                last = int(last)
            then = q.get("then", "close")
            self.send_goaway(last)
            if then == "close":
                await self.drain()
                self.close("self")
                return
            if then == "respond" and s.sid <= last:
                await self.respond(s, 200, b"ok goaway respond\n")
            # drain: the streams at or below last finish, then the connection closes
            self.maybe_close_drained()
        elif p == "/rst":
            await s.consume()
            if self.once_done(s):
                await self.respond(s, 200, b"ok rst\n")
                return
            code = s.qint("code", 2)
            after = q.get("after", "")
            if after in ("headers", "data"):
                await self.send_headers(s, 200, [("content-type", "application/octet-stream")])
                if after == "data":
                    await self.send_data(s, pattern(0, 1000))
                await asyncio.sleep(0.05)
            self.reset(s, code)
        elif p == "/slow":
            await s.consume()
            n = s.qint("n", 10000)
            ms = s.qint("ms", 10)
            chunk = max(1, s.qint("chunk", 1024))
            await self.send_headers(s, 200, [("content-type", "application/octet-stream"),
                                             ("content-length", str(n))],
                                    end_stream=n == 0)
            off = 0
            while off < n:
                await asyncio.sleep(ms / 1000.0)
                k = min(chunk, n - off)
                await self.send_data(s, pattern(off, k), end_stream=off + k == n)
                off += k
        elif p == "/sleep":
            await s.consume()
            await asyncio.sleep(s.qint("ms", 0) / 1000.0)
            await self.respond(s, 200, b"ok")
        elif p == "/upload":
            slow = q.get("slow") == "1"
            rate = max(1, s.qint("rate", 2000000))
            h = hashlib.sha256()
            n = 0
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            while True:
                d, fcl = await s.read(ack=not slow)
                if not d:
                    break
                h.update(d)
                n += len(d)
                if slow:
                    # no faster than rate on average: sleep when ahead of it by over 2 ms,
                    # then give the credit back (the peer may send more only then)
                    ahead = t0 + n / rate - loop.time()
                    if ahead > 0.002:
                        await asyncio.sleep(ahead)
                    s.ack(fcl)
            await self.respond(s, 200, json.dumps({"body_len": n, "body_sha256": h.hexdigest()})
                               .encode(), ctype="application/json")
        elif p in ("/_stats", "/stats"):
            await s.consume()
            doc = Stats.doc()
            if q.get("reset_peak") == "1":
                Stats.reset_peak()
            await self.respond(s, 200, json.dumps(doc).encode(), ctype="application/json")
        else:
            n, digest = await s.consume()
            doc = {"method": method, "path": s.pseudo.get(":path", ""),
                   "authority": s.pseudo.get(":authority"), "scheme": s.pseudo.get(":scheme"),
                   "headers": [[k, v] for k, v in s.headers],
                   "trailers": [[k, v] for k, v in s.trailers],
                   "body_len": n, "body_sha256": digest}
            await self.respond(s, 200, json.dumps(doc).encode(), ctype="application/json")


async def serve_h1(reader, writer, initial):
    """HTTP/1.1 on the same port answers only GET /_stats (for the test fixtures)."""
    buf = initial
    try:
        while b"\r\n\r\n" not in buf and len(buf) < 65536:
            d = await reader.read(65536)
            if not d:
                return
            buf += d
        line = buf.split(b"\r\n", 1)[0].decode("latin-1").split(" ")
        target = line[1] if len(line) == 3 else "/"
        u = urllib.parse.urlsplit(target)
        if u.path in ("/_stats", "/stats"):
            body = json.dumps(Stats.doc()).encode()
            if "reset_peak=1" in u.query:
                Stats.reset_peak()
            status = "200 OK"
        else:
            body = b"h2c only (prior knowledge); HTTP/1.1 serves /_stats only\n"
            status = "505 HTTP Version Not Supported"
        writer.write(("HTTP/1.1 %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                      "Connection: close\r\n\r\n" % (status, len(body))).encode() + body)
        await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


async def on_client(reader, writer):
    log_tls_conn(writer)
    sock = writer.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
    initial = b""
    try:
        while len(initial) < len(PREFACE) and PREFACE.startswith(initial):
            d = await reader.read(len(PREFACE) - len(initial))
            if not d:
                writer.close()
                return
            initial += d
    except (ConnectionError, OSError):
        writer.close()
        return
    if initial == PREFACE:
        await H2Conn(reader, writer, initial).serve()
    else:
        await serve_h1(reader, writer, initial)


async def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True, help="port to listen on (0: ephemeral)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--name", default="", help="sent back in x-upstream-name on every response")
    ap.add_argument("--unix", default=None,
                    help="also serve on this Unix socket path (@name: abstract namespace); the "
                    "TCP port stays for a test's own /_stats and /_control asks")
    ap.add_argument("--max-streams", type=int, default=256,
                    help="SETTINGS_MAX_CONCURRENT_STREAMS (enforced by refusing extra streams)")
    ap.add_argument("--window", type=int, default=None, help="SETTINGS_INITIAL_WINDOW_SIZE")
    ap.add_argument("--verbose", action="store_true", help="connection events on stderr")
    ap.add_argument("--connect-protocol", action="store_true",
                    help="advertise SETTINGS_ENABLE_CONNECT_PROTOCOL, serve extended CONNECT")
    add_tls_args(ap)
    args = ap.parse_args()
    global NAME, MAX_STREAMS, WINDOW, VERBOSE, CONNECT_PROTOCOL
    CONNECT_PROTOCOL = args.connect_protocol
    NAME = args.name
    MAX_STREAMS = args.max_streams
    WINDOW = args.window
    VERBOSE = args.verbose
    server = await asyncio.start_server(on_client, args.host, args.port, backlog=1024,
                                        reuse_address=True)
    port = server.sockets[0].getsockname()[1]
    if args.unix:
        path = "\0" + args.unix[1:] if args.unix.startswith("@") else args.unix
        await asyncio.start_unix_server(on_client, path, backlog=1024)
    ready = "READY %d" % port
    tls_ctx = tls_server_context(args)
    if tls_ctx is not None:
        tls_server = await asyncio.start_server(on_client, args.host, 0, ssl=tls_ctx,
                                                backlog=1024, reuse_address=True)
        ready += " %d" % tls_server.sockets[0].getsockname()[1]
    print(ready, flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
