# SPDX-License-Identifier: Apache-2.0
"""27: the HTTP/2 part of issue 17's bad-input battery that test_28_h2_abuse.py leaves out,
with hand-made frames (h2raw): an HPACK bomb (one large field referenced by index until the
decoded list is hundreds of MiB), zero-window stalls (a client that never gives window back
while remora holds its response), DATA and HEADERS on closed streams, frames over
SETTINGS_MAX_FRAME_SIZE and of impossible fixed sizes, SETTINGS with invalid values,
PUSH_PROMISE from a client, thousands of idle streams made by PRIORITY frames, HEADERS beyond
SETTINGS_MAX_CONCURRENT_STREAMS, and malformed :path values (RFC 9113 8.3.1).

Each case ends the way RFC 9113 prescribes (a GOAWAY with the error code and a close, a
RST_STREAM with its code, or remora's 400 for a malformed request), is counted in /metrics
(remora_http2_goaway_total, remora_http2_resets_total), never reaches the app when it must not,
and leaves other connections alone: a client on another connection gets 200 during and after
the case, a fresh one after it.

The battery is data: CASES (dicts with an id) and run_case(port, case, admin_port, upstream),
so the whole list can be replayed against one long-lived remora started with config() (the
limits the expectations assume) in front of the HTTP/1.1 test app."""

import socket
import struct
import time

import pytest

import h2raw
from h2raw import (CANCEL, COMPRESSION_ERROR, CONTINUATION, DATA, END_HEADERS, END_STREAM,
                   ENHANCE_YOUR_CALM, FLOW_CONTROL_ERROR, FRAME_SIZE_ERROR, HEADERS,
                   PING, PRIORITY, PROTOCOL_ERROR, PUSH_PROMISE, REFUSED_STREAM, RST_STREAM,
                   SETTINGS, STREAM_CLOSED, WINDOW_UPDATE, RawConn, error_name, frame,
                   hpack_int, hpack_literal, request_headers)
from helpers import HttpConn, default_config, free_port, metrics, rss_kib, wait_for

MAX_STREAMS = 100
MAX_HEADER_LIST = 16 * 1024
IDLE_TIMEOUT_S = 2          # limits.client_idle_timeout: the write-stall guard
RSS_SLACK_KIB = 8 * 1024    # how much remora may grow during one case
MIB = 1024 * 1024


def config(port, admin_port, endpoints):
    """The config the expectations below assume: one worker, http2 limits as in test_28 but
    with room for 5000 PRIORITY frames (the control-frame flood is test_28's), and a short
    client_idle_timeout so stalls are cut within the test."""
    cfg = default_config(port, admin_port, endpoints, workers=1,
                         limits={"client_idle_timeout": "%ds" % IDLE_TIMEOUT_S})
    cfg["listeners"][0]["http2"] = {
        "max_concurrent_streams": MAX_STREAMS, "initial_window": "64KiB",
        "max_header_list_size": "16KiB", "max_resets": 50, "reset_interval": "10s",
        "max_control_frames": 20000}
    return cfg


# ---- what a case sends ------------------------------------------------------------------------

def open_post(conn, path="/delay?ms=1500"):
    """HEADERS opening a POST whose body is still to come; returns its stream id."""
    sid = conn.new_sid()
    conn.streams[sid] = h2raw.H2Response(sid)
    conn.send(frame(HEADERS, END_HEADERS, sid, conn.encoder.encode(request_headers(path, "POST"))))
    return sid


def get_frame(conn, path="/echo", extra=()):
    sid = conn.new_sid()
    conn.streams[sid] = h2raw.H2Response(sid)
    return sid, frame(HEADERS, END_HEADERS | END_STREAM, sid,
                      conn.encoder.encode(request_headers(path, extra=extra)))


def raw(data):
    """A case that sends fixed bytes right after the preface."""
    return lambda conn: conn.send(data)


def on_open_stream(make):
    """A case that opens a POST (stream 1) and then sends make(sid)."""
    def send(conn):
        sid = open_post(conn)
        conn.send(make(sid))
    return send


def uncompressed_headers_frame(sid, size):
    """One HEADERS frame of a valid request padded with a literal (no Huffman) to size bytes."""
    block = h2raw.hpack.Encoder().encode(request_headers("/echo?big=1"))
    pad = size - len(block) - 4 - 3
    return frame(HEADERS, END_HEADERS | END_STREAM, sid,
                 block + hpack_literal(b"x-p", b"p" * pad))


def settings_raw(payload, flags=0, sid=0):
    return lambda conn: conn.send(frame(SETTINGS, flags, sid, payload))


def data_after_end_stream(done):
    """GET on stream 1 (END_STREAM on its HEADERS), then DATA on it: while the response is
    pending (half-closed remote) or after it ended (closed)."""
    def send(conn):
        if done:
            assert conn.get("/echo?first=1").status == 200
            conn.streams[1] = h2raw.H2Response(1)  # what comes now: RST_STREAM or GOAWAY
        else:
            sid, f = get_frame(conn, "/delay?ms=1500")
            conn.send(f)
        conn.send(h2raw.data_frame(1, b"late"))
        conn.case_sid = 1
    return send


def data_after_client_reset(conn):
    sid = open_post(conn)
    conn.send(h2raw.rst_frame(sid, CANCEL) + h2raw.data_frame(sid, b"late"))


def headers_after_end_stream(conn):
    """A second trailer section on a stream the client already ended."""
    sid, f = get_frame(conn, "/delay?ms=1500")
    conn.send(f + frame(HEADERS, END_HEADERS | END_STREAM, sid,
                        conn.encoder.encode([("x-trailer", "again")])))


def data_after_remora_reset(conn):
    """remora resets stream 1 (an upper-case field name: malformed, RST_STREAM PROTOCOL_ERROR);
    the client's late DATA for it, 8 MiB of it (more than the connection window remora grants,
    100 x 64 KiB), is ignored (RFC 9113 5.1: frames after our RST_STREAM) and still given back
    as connection window: a 1 MiB upload then goes through on the same connection."""
    block = conn.encoder.encode(request_headers("/echo", "POST")) + hpack_literal(b"X-Upper", b"1")
    sid = conn.new_sid()
    conn.streams[sid] = h2raw.H2Response(sid)
    conn.send(frame(HEADERS, END_HEADERS, sid, block))
    r = conn.read_response(sid, timeout=5)
    assert r.reset == PROTOCOL_ERROR, r
    chunk = h2raw.data_frame(sid, b"z" * 16384) * 64
    for _ in range(8):
        assert conn.send(chunk, timeout=5), "remora stopped reading the ignored DATA"
    up = conn.request(request_headers("/echo?upload=1", "POST"), body=b"u" * MIB, timeout=10)
    r = conn.read_response(up, timeout=10)
    assert r.status == 200 and r.json()["body_len"] == MIB, r


def hpack_bomb(refs_frames, name=b"x-bomb", size=4000):
    """A literal field with incremental indexing (RFC 7541 6.2.1: it enters the dynamic table
    as entry 62), then refs_frames CONTINUATION frames of 16384 one-byte references to it: the
    encoded block is about 16 KiB x refs_frames, the decoded list about 4000 times that
    (7 frames: 114688 references, 450 MiB)."""
    def send(conn):
        sid = conn.new_sid()
        conn.streams[sid] = h2raw.H2Response(sid)
        block = h2raw.hpack.Encoder().encode(request_headers("/echo?bomb=1"))
        block += b"\x40" + hpack_int(len(name), 7) + name + hpack_int(size, 7) + b"b" * size
        out = frame(HEADERS, END_STREAM, sid, block)
        for i in range(refs_frames):
            last = i == refs_frames - 1
            out += frame(CONTINUATION, END_HEADERS if last else 0, sid, b"\xbe" * 16384)
        conn.send(out, timeout=5)
        # The decoder must still be in step: the next block references the same entry.
        conn.encoder = h2raw.hpack.Encoder()
    return send


def hpack_small_refs(conn):
    """A small field (x-a: 1) indexed once, then 16000 references: a list of 16000 fields
    (limits.max_headers is 100) in a 16 KiB block."""
    sid = conn.new_sid()
    conn.streams[sid] = h2raw.H2Response(sid)
    block = h2raw.hpack.Encoder().encode(request_headers("/echo?bomb=2"))
    block += b"\x40\x03x-a\x011" + b"\xbe" * 16000
    conn.send(frame(HEADERS, END_HEADERS | END_STREAM, sid, block))
    conn.encoder = h2raw.hpack.Encoder()


def priority_idle_streams(n):
    """n PRIORITY frames, each making a new idle stream depend on the one before (a chain n
    deep, RFC 9113 5.3.1 allows them on idle streams), then a request on a stream above them."""
    def send(conn):
        out = bytearray()
        for i in range(n):
            sid = 1001 + 2 * i
            dep = sid - 2 if i else 0
            out += frame(PRIORITY, 0, sid, struct.pack(">IB", dep, 255))
        conn.send(bytes(out), timeout=5)
        conn.next_sid = 1001 + 2 * n
    return send


def over_max_concurrent(ack_settings):
    """MAX_STREAMS requests held open by the app, then one more. Before the client acknowledged
    remora's SETTINGS the limit is not in force yet (RFC 9113 6.5.3), so nghttp2 refuses the
    stream (REFUSED_STREAM); after it, the HEADERS is a protocol violation (5.1.2), which
    nghttp2 answers with a connection error, which 5.4.1 allows for any stream error."""
    def send(conn):
        if ack_settings:
            assert conn.get("/echo?ack=1").status == 200  # answers SETTINGS on the way
        out = bytearray()
        for _ in range(MAX_STREAMS + 1):
            sid, f = get_frame(conn, "/delay?ms=1500")
            out += f
        conn.send(bytes(out))
        conn.case_sid = sid
    return send


def path_request(path, method="GET", scheme="http"):
    def send(conn):
        sid = conn.new_sid()
        conn.streams[sid] = h2raw.H2Response(sid)
        hs = [(":method", method), (":scheme", scheme), (":path", path),
              (":authority", "127.0.0.1")]
        conn.send(frame(HEADERS, END_HEADERS | END_STREAM, sid, conn.encoder.encode(hs)))
        conn.case_sid = sid
    return send


def zero_window(stream_window, pings=False, path="/bytes?n=%d" % (64 * MIB)):
    """A GET whose response the client never takes: SETTINGS_INITIAL_WINDOW_SIZE
    stream_window and no WINDOW_UPDATE at all (0: not a byte of DATA may go; larger: the
    connection window, 65535, runs out instead). pings: the client keeps sending PINGs (it is
    alive, it just does not read)."""
    def send(conn):
        sid, f = get_frame(conn, path)
        conn.send(f)
        conn.case_sid = sid
        conn.case_pings = pings
    send.settings = [(h2raw.INITIAL_WINDOW_SIZE, stream_window)]
    return send


def follow(conn, path, timeout=15, window_step=None):
    """A GET of path read to its end, the client on another connection served every 0.5 s
    meanwhile. window_step: the client opens that much stream and connection window every
    0.5 s and no more (a slow reader); None: all it reads, at once."""
    sid, f = get_frame(conn, path)
    conn.send(f)
    st = conn.streams[sid]
    end = time.monotonic() + timeout
    tick = time.monotonic()
    while not (st.ended or st.reset is not None or conn.goaways or conn.eof):
        now = time.monotonic()
        assert now < end, "%s not answered within %ds: %r" % (path, timeout, st)
        if now >= tick:
            if window_step:
                conn.send(h2raw.window_update_frame(sid, window_step) +
                          h2raw.window_update_frame(0, window_step))
            conn.other.get("follow")
            tick = now + 0.5
        try:
            f = conn.read_frame(0.1)
        except socket.timeout:
            continue
        if f is None:
            break
        if f.type == DATA and window_step:
            st.add_data(f.payload)
            if f.flags & END_STREAM:
                st.end()
            continue
        conn._handle(f)
    conn.case_sid = sid
    return st


def slow_reader(conn):
    """SETTINGS_INITIAL_WINDOW_SIZE 0 and 8 KiB of window every 0.5 s: a 64 KiB response
    takes 4 s, twice client_idle_timeout, but DATA keeps flowing, so the stall guard leaves it
    alone."""
    st = follow(conn, "/bytes?n=65536", window_step=8192)
    assert st.ended and len(st.body) == 65536, st


slow_reader.settings = [(h2raw.INITIAL_WINDOW_SIZE, 0)]


def long_pauses(path):
    """A response whose head or body pauses longer than client_idle_timeout while the client
    reads everything: nothing waits on the client, nothing is cut."""
    def send(conn):
        st = follow(conn, path)
        assert st.ended and st.reset is None, st
    return send


# ---- the cases -------------------------------------------------------------------------------
# expect: the outcomes allowed, any of ("goaway", code), ("rst", code), ("status", n),
# ("served",) (the conn goes on and serves the next request). forwarded: how many requests of
# the case the app may see (None: not checked). stall: the outcome comes from the
# write-stall guard, after IDLE_TIMEOUT_S.

GOAWAY_FRAME_SIZE = (("goaway", FRAME_SIZE_ERROR),)
GOAWAY_PROTOCOL = (("goaway", PROTOCOL_ERROR),)
STREAM_CLOSED_ANY = (("rst", STREAM_CLOSED), ("goaway", STREAM_CLOSED))
MALFORMED = (("status", 400), ("rst", PROTOCOL_ERROR))

CASES = [
    # Frames over SETTINGS_MAX_FRAME_SIZE (16384, remora's default; RFC 9113 4.2): a field
    # block or a frame on stream 0 is a connection error; nghttp2 makes every one one.
    dict(id="data_over_max_frame_size", send=on_open_stream(
        lambda sid: h2raw.data_frame(sid, b"x" * 16385)),
        expect=GOAWAY_FRAME_SIZE + (("rst", FRAME_SIZE_ERROR),), forwarded=None),
    dict(id="headers_over_max_frame_size", send=raw(uncompressed_headers_frame(1, 16385)),
         expect=GOAWAY_FRAME_SIZE, forwarded=0),
    dict(id="continuation_over_max_frame_size", send=lambda conn: conn.send(
        frame(HEADERS, END_STREAM, 1, conn.encoder.encode(request_headers("/echo"))) +
        frame(CONTINUATION, END_HEADERS, 1, b"\x90" * 16385)),
        expect=GOAWAY_FRAME_SIZE, forwarded=0),
    dict(id="ping_over_max_frame_size", send=raw(frame(PING, 0, 0, b"p" * 16385)),
         expect=GOAWAY_FRAME_SIZE),
    # A DATA frame header announcing 2^24-1 bytes: refused from its header, nothing buffered.
    dict(id="frame_header_of_16_mib", send=raw(b"\xff\xff\xff" + bytes([DATA, 0]) +
                                              struct.pack(">I", 1) + b"d" * 1024),
         expect=GOAWAY_FRAME_SIZE, forwarded=0),
    # Fixed-size frames of another size (6.3, 6.4, 6.7, 6.9).
    dict(id="ping_length_7", send=raw(frame(PING, 0, 0, b"p" * 7)), expect=GOAWAY_FRAME_SIZE),
    dict(id="window_update_length_3", send=raw(frame(WINDOW_UPDATE, 0, 0, b"\0\0\1")),
         expect=GOAWAY_FRAME_SIZE),
    dict(id="rst_stream_length_3", send=on_open_stream(
        lambda sid: frame(RST_STREAM, 0, sid, b"\0\0\0")), expect=GOAWAY_FRAME_SIZE),
    dict(id="priority_length_4", send=raw(frame(PRIORITY, 0, 1, b"\0\0\0\0")),
         expect=GOAWAY_FRAME_SIZE + (("rst", FRAME_SIZE_ERROR),)),

    # SETTINGS with invalid values (6.5.2) or shape (6.5).
    dict(id="settings_enable_push_2", send=raw(h2raw.settings_frame([(h2raw.ENABLE_PUSH, 2)])),
         expect=GOAWAY_PROTOCOL),
    dict(id="settings_initial_window_2p32_minus_1", send=raw(h2raw.settings_frame(
        [(h2raw.INITIAL_WINDOW_SIZE, 2 ** 32 - 1)])), expect=(("goaway", FLOW_CONTROL_ERROR),)),
    dict(id="settings_max_frame_size_16383", send=raw(h2raw.settings_frame(
        [(h2raw.MAX_FRAME_SIZE, 16383)])), expect=GOAWAY_PROTOCOL),
    dict(id="settings_max_frame_size_0", send=raw(h2raw.settings_frame(
        [(h2raw.MAX_FRAME_SIZE, 0)])), expect=GOAWAY_PROTOCOL),
    dict(id="settings_max_frame_size_2p24", send=raw(h2raw.settings_frame(
        [(h2raw.MAX_FRAME_SIZE, 2 ** 24)])), expect=GOAWAY_PROTOCOL),
    dict(id="settings_length_7", send=settings_raw(b"\0\x03\0\0\0\x10\0"),
         expect=GOAWAY_FRAME_SIZE),
    dict(id="settings_length_5", send=settings_raw(b"\0\x03\0\0\0"), expect=GOAWAY_FRAME_SIZE),
    dict(id="settings_ack_with_payload", send=settings_raw(b"\0\x03\0\0\0\x10", h2raw.ACK),
         expect=GOAWAY_FRAME_SIZE),
    dict(id="settings_on_a_stream", send=settings_raw(b"", sid=1), expect=GOAWAY_PROTOCOL),
    # Under the limits: served.
    dict(id="settings_unknown_id_ignored", send=raw(h2raw.settings_frame([(0x4242, 7)])),
         expect=(("served",),)),
    dict(id="settings_extremes_valid", send=raw(h2raw.settings_frame(
        [(h2raw.MAX_FRAME_SIZE, 2 ** 24 - 1), (h2raw.INITIAL_WINDOW_SIZE, 2 ** 31 - 1),
         (h2raw.ENABLE_PUSH, 0), (h2raw.HEADER_TABLE_SIZE, 2 ** 32 - 1)])),
        expect=(("served",),)),

    # PUSH_PROMISE from a client (8.4, 6.6).
    dict(id="push_promise_on_open_stream", send=on_open_stream(
        lambda sid: frame(PUSH_PROMISE, END_HEADERS, sid, struct.pack(">I", 2) +
                          h2raw.hpack.Encoder().encode(request_headers("/pushed")))),
        expect=GOAWAY_PROTOCOL),
    dict(id="push_promise_on_stream_0",
         send=raw(frame(PUSH_PROMISE, END_HEADERS, 0, struct.pack(">I", 2))),
         expect=GOAWAY_PROTOCOL, forwarded=0),

    # Frames on closed streams (5.1, 6.1).
    dict(id="data_after_end_stream_half_closed", send=data_after_end_stream(False),
         expect=STREAM_CLOSED_ANY),
    dict(id="data_after_end_stream_closed", send=data_after_end_stream(True),
         expect=STREAM_CLOSED_ANY),
    dict(id="data_after_client_rst_stream", send=data_after_client_reset,
         expect=STREAM_CLOSED_ANY),
    dict(id="headers_after_end_stream", send=headers_after_end_stream,
         expect=STREAM_CLOSED_ANY),
    dict(id="data_on_idle_stream", send=raw(h2raw.data_frame(5, b"idle")),
         expect=GOAWAY_PROTOCOL, forwarded=0),
    dict(id="data_after_remora_rst_stream_ignored", send=data_after_remora_reset,
         expect=(("served",),)),

    # HPACK bombs (RFC 7541 7.3, RFC 9113 10.5.1): the decoded list is bounded by
    # max_header_list_size (16 KiB here) and max_headers: 431, and the HPACK state stays in
    # step, so the connection goes on.
    dict(id="hpack_bomb_indexed_4k_field", send=hpack_bomb(7),
         expect=(("status", 431), ("rst", PROTOCOL_ERROR), ("goaway", COMPRESSION_ERROR)),
         forwarded=0, rss=True, within_s=3),
    dict(id="hpack_bomb_small_field_16000_times", send=hpack_small_refs,
         expect=(("status", 431), ("rst", PROTOCOL_ERROR)), forwarded=0),

    # Idle streams (5.1, 5.3): thousands of PRIORITY frames on idle streams (under this
    # config's max_control_frames, so nghttp2's own bound on idle streams is what is tested).
    dict(id="priority_5000_idle_streams", send=priority_idle_streams(5000),
         expect=(("served",), ("goaway", ENHANCE_YOUR_CALM)), rss=True, within_s=3),
    # HEADERS beyond SETTINGS_MAX_CONCURRENT_STREAMS (5.1.2).
    # (reuse False: the conn's streams are all in use afterwards, none is tried on it.)
    dict(id="headers_over_max_concurrent_before_ack", send=over_max_concurrent(False),
         expect=(("rst", REFUSED_STREAM), ("goaway", PROTOCOL_ERROR)), reuse=False),
    dict(id="headers_over_max_concurrent_after_ack", send=over_max_concurrent(True),
         expect=(("goaway", PROTOCOL_ERROR), ("rst", REFUSED_STREAM),
                 ("rst", PROTOCOL_ERROR)), reuse=False),

    # Malformed :path (8.3.1): 400 from remora or nghttp2's RST_STREAM PROTOCOL_ERROR (8.1.1),
    # whatever the :scheme (nghttp2 checks :path only for http and https), never forwarded.
    dict(id="path_asterisk_get", send=path_request("*"), expect=MALFORMED, forwarded=0),
    dict(id="path_asterisk_get_other_scheme", send=path_request("*", scheme="foo"),
         expect=MALFORMED, forwarded=0),
    dict(id="path_empty", send=path_request(""), expect=MALFORMED, forwarded=0),
    dict(id="path_empty_other_scheme", send=path_request("", scheme="foo"), expect=MALFORMED,
         forwarded=0),
    dict(id="path_without_slash", send=path_request("echo"), expect=MALFORMED, forwarded=0),
    dict(id="path_without_slash_other_scheme", send=path_request("echo", scheme="foo"),
         expect=MALFORMED, forwarded=0),
    dict(id="path_absolute_form", send=path_request("http://127.0.0.1/echo"), expect=MALFORMED,
         forwarded=0),
    dict(id="path_absolute_form_other_scheme",
         send=path_request("http://127.0.0.1/echo", scheme="foo"), expect=MALFORMED,
         forwarded=0),
    dict(id="path_asterisk_options_served", send=path_request("*", method="OPTIONS"),
         expect=(("status", 200),), forwarded=1),

    # Zero-window stalls: the response waits on windows the client never opens. The
    # write-stall guard (limits.client_idle_timeout) resets the stream (RST_STREAM CANCEL,
    # access log client_timeout) and lets the app go; nothing is buffered past buffer_bytes.
    dict(id="zero_stream_window", send=zero_window(0), expect=(("rst", CANCEL),), stall=True,
         rss=True),
    dict(id="zero_stream_window_small_response", send=zero_window(0, path="/echo?small=1"),
         expect=(("rst", CANCEL),), stall=True),
    dict(id="zero_connection_window", send=zero_window(1 << 20), expect=(("rst", CANCEL),),
         stall=True, rss=True),
    dict(id="zero_stream_window_client_pings", send=zero_window(0, pings=True),
         expect=(("rst", CANCEL),), stall=True),
    # Not stalls: a slow but steady reader, a late head, a body with long pauses.
    dict(id="slow_reader_served", send=slow_reader, expect=(("status", 200),), reuse=False),
    dict(id="late_head_served", send=long_pauses("/delay?ms=%d" % (IDLE_TIMEOUT_S * 1000 + 500)),
         expect=(("status", 200),)),
    dict(id="body_pauses_served", send=long_pauses(
        "/drip?count=2&size=100&ms=%d" % (IDLE_TIMEOUT_S * 1000 + 500)),
        expect=(("status", 200),)),
]


# ---- running one case ------------------------------------------------------------------------

def goaways(admin_port, code=None):
    labels = {"reason": error_name(code)} if code is not None else {}
    return metrics(admin_port).total("remora_http2_goaway_total", side="downstream", **labels)


def resets(admin_port, code):
    return metrics(admin_port).total("remora_http2_resets_total", side="downstream",
                                     reason=error_name(code))


def app_requests(upstream):
    """Requests the app has seen (its own /_stats asks not counted)."""
    return upstream.stats()["requests"] if upstream is not None else None


def h1_get(port, path):
    with HttpConn(port, timeout=5) as c:
        c.request("GET", path)
        r = c.read_response()
        return r.status


class Other:
    """A well-behaved h2c client on its own connection: get() must always be a 200."""

    def __init__(self, port):
        self.conn = RawConn(port, timeout=10)
        self.gets = 0

    def get(self, what):
        self.gets += 1
        r = self.conn.get("/echo?other=%s" % what, timeout=5)
        assert r.status == 200 and r.ended and not self.conn.goaways, (what, r)


def outcome(conn, sid, deadline, other, pings=False):
    """Reads conn until the case's outcome shows: ("goaway", code), ("rst", code) on sid,
    ("status", n) of sid's response, or ("served",) when nothing happened within 0.5 s and a
    GET on the same conn is answered 200. Answers SETTINGS and PING, but never opens a window
    the case keeps shut (pings: sends a PING every 0.3 s while waiting). other gets a 200 every
    0.5 s meanwhile."""
    next_ping = time.monotonic()
    next_other = time.monotonic() + 0.5
    quiet_until = time.monotonic() + 0.5
    while True:
        now = time.monotonic()
        if pings and now >= next_ping:
            conn.send(h2raw.ping_frame(b"stallpng"))
            next_ping = now + 0.3
        if now >= next_other:
            other.get("while-waiting")
            next_other = now + 0.5
        if conn.goaways:
            return ("goaway", conn.goaways[0].goaway()[1])
        st = conn.streams.get(sid) if sid else None
        if st is not None and st.reset is not None:
            return ("rst", st.reset)
        if st is not None and st.status is not None and st.status >= 400:
            return ("status", st.status)
        if st is not None and st.ended and st.status is not None:
            return ("status", st.status)
        if sid is None and now >= quiet_until:
            r = conn.get("/echo?after-case=1", timeout=5)
            if conn.goaways:
                return ("goaway", conn.goaways[0].goaway()[1])
            return ("served",) if r.status == 200 and r.ended else ("broken", r)
        if now >= deadline:
            return ("nothing", conn.frames[-8:])
        try:
            f = conn.read_frame(min(0.1, max(0.0, deadline - now)))
        except socket.timeout:
            continue
        if f is None:
            return ("closed without GOAWAY", conn.frames[-8:])
        if f.type == h2raw.DATA and getattr(conn, "case_keep_shut", False):
            st = conn.streams.setdefault(f.sid, h2raw.H2Response(f.sid))
            st.add_data(f.payload)  # no WINDOW_UPDATE: the window stays shut
            if f.flags & END_STREAM:
                st.end()
            continue
        conn._handle(f)


def run_case(port, case, admin_port=None, upstream=None, pid=None):
    """Runs one case on a fresh connection to remora at port and checks it: the outcome is one
    of case["expect"], a GOAWAY is followed by the close, a stream-level outcome leaves the
    connection serving; it is counted (admin_port); the app saw at most case["forwarded"]
    requests of it (upstream); RSS stayed bounded (pid, cases with rss); a client on another
    connection got 200 during and after. Returns the outcome."""
    m0 = None
    if admin_port is not None:
        m = metrics(admin_port)
        m0 = (m.total("remora_http2_goaway_total", side="downstream"), m)
    base = rss_kib(pid) if pid and case.get("rss") else None
    other = Other(port)
    with other.conn:
        other.get("before")
        n0 = app_requests(upstream)
        gets0 = other.gets
        send = case["send"]
        conn = RawConn(port, timeout=10, settings=getattr(send, "settings", ()))
        try:
            conn.case_sid = None
            conn.case_pings = False
            conn.case_keep_shut = bool(case.get("stall"))
            conn.other = other
            t0 = time.monotonic()
            send(conn)
            # The other connection is served while this one is under attack.
            other.get("during")
            sid = conn.case_sid
            if sid is None and case["expect"][0][0] in ("rst", "status"):
                sid = max(conn.streams)
            wait = IDLE_TIMEOUT_S + 3 if case.get("stall") else case.get("within_s", 5)
            got = outcome(conn, sid, t0 + wait, other, conn.case_pings)
            took = time.monotonic() - t0
            seen = None
            if n0 is not None and case.get("forwarded") is not None:
                time.sleep(0.2)  # a request wrongly forwarded would reach the app by now
                # minus the other conn's GETs, the /_stats ask, the GET of "served"
                seen = app_requests(upstream) - n0 - (other.gets - gets0) - 1 - \
                    (1 if got == ("served",) else 0)
            assert got in case["expect"], "%s: got %r (%s), want one of %r; last frames %r" % (
                case["id"], got, error_name(got[1]) if len(got) > 1 and
                isinstance(got[1], int) else "", case["expect"], conn.frames[-6:])
            if case.get("stall"):
                assert took >= IDLE_TIMEOUT_S - 0.5, "cut after %.1fs, before the timeout" % took
            if "within_s" in case:
                assert took < case["within_s"], "took %.1fs" % took
            if got[0] == "goaway":
                _, closed = conn.wait_goaway(timeout=5)
                assert closed, "remora kept the connection open after its GOAWAY"
            elif got[0] in ("rst", "status") and not case.get("stall") and \
                    case.get("reuse", True):
                r = conn.get("/echo?same-conn-after=1", timeout=5)
                assert r.status == 200 and r.ended and not conn.goaways, (r, conn.goaways)
        finally:
            conn.close()
        if base is not None:
            grown = rss_kib(pid) - base
            assert grown < RSS_SLACK_KIB, "remora grew by %d KiB" % grown
        other.get("after")
    assert h1_get(port, "/echo?fresh-h1=1") == 200
    with RawConn(port) as fresh:
        assert fresh.get("/echo?fresh-h2=1").status == 200
    if admin_port is not None:
        if got[0] == "goaway":
            g0 = m0[1].total("remora_http2_goaway_total", side="downstream",
                             reason=error_name(got[1]))
            assert wait_for(lambda: goaways(admin_port, got[1]) - g0 >= 1, timeout=2), \
                "GOAWAY %s not counted" % error_name(got[1])
        elif got[0] == "rst":
            r0 = m0[1].total("remora_http2_resets_total", side="downstream",
                             reason=error_name(got[1]))
            assert wait_for(lambda: resets(admin_port, got[1]) - r0 >= 1, timeout=2), \
                "RST_STREAM %s not counted" % error_name(got[1])
    if seen is not None:
        assert seen <= case["forwarded"], "the app saw %d requests of the case" % seen
        if case["forwarded"] and got[0] == "status" and got[1] < 400:
            assert seen == case["forwarded"], seen
    return got


# ---- pytest ----------------------------------------------------------------------------------

@pytest.fixture
def p(remora, upstream):
    port, admin = free_port(), free_port()
    while admin == port:
        admin = free_port()
    return remora(config=config(port, admin, [upstream.addr]))


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_case(p, upstream, case):
    run_case(p.port, case, p.admin_port, upstream, p.pid)
    assert p.alive(), p.stderr()[-3000:]


def test_zero_window_stall_logged_and_app_released(p, upstream):
    """The stalled stream ends in the access log as client_timeout (cD), having sent the
    client nothing of its 64 MiB body."""
    run_case(p.port, CASES[[c["id"] for c in CASES].index("zero_stream_window")], p.admin_port,
             upstream, p.pid)
    logs = p.access_logs(at_least=1)
    stalled = [e for e in logs if (e.get("path") or "").startswith("/bytes")]
    assert stalled and stalled[0].get("error") == "client_timeout", stalled or logs[-3:]
    assert stalled[0].get("termination") == "cD", stalled
    assert stalled[0]["bytes_out"] < MIB, stalled


def test_whole_battery_one_remora(p, upstream):
    """Every case in turn on the same remora (as the lead's fd/RSS baseline run does): it
    keeps serving and its open fds come back to where they were."""
    import os
    fds0 = len(os.listdir("/proc/%d/fd" % p.pid))
    for case in CASES:
        run_case(p.port, case, p.admin_port, upstream)
    assert wait_for(lambda: len(os.listdir("/proc/%d/fd" % p.pid)) <= fds0 + 2, timeout=5), \
        (fds0, os.listdir("/proc/%d/fd" % p.pid))
