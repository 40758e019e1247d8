# SPDX-License-Identifier: Apache-2.0
"""28: HTTP/2 abuse on the downstream side, with hand-made frames (h2raw): rapid reset
(CVE-2023-44487), CONTINUATION floods (CVE-2024-27316 and friends), header lists over
max_header_list_size, SETTINGS/PING/PRIORITY/empty-frame floods, flow-control window overflow,
HPACK abuse, stream ids going backwards or reused, and a host differing from :authority. Each
attack ends the way the contract says (GOAWAY with the right error code and a close, or a
refused stream), within a bounded time and with bounded memory, and is counted in /metrics;
under the limits the same frames are served normally. During every attack a well-behaved
bystander (HTTP/1.1 and h2c, each on fresh connections) keeps getting 200 from the same single
worker, and afterwards curl --http2-prior-knowledge gets 200 and remora is alive.
Upstream: the HTTP/1.1 test app."""

import json
import threading
import time

import hpack
import pytest

import h2raw
from h2raw import (CANCEL, COMPRESSION_ERROR, CONTINUATION, DATA, END_HEADERS, END_STREAM,
                   ENHANCE_YOUR_CALM, FLOW_CONTROL_ERROR, GOAWAY, HEADERS, PING,
                   PROTOCOL_ERROR, RST_STREAM, SETTINGS, RawConn, error_name, frame,
                   hpack_int, hpack_literal, request_headers)
from helpers import HttpConn, RssSampler, curl, default_config, free_port, metrics, wait_for

MAX_RESETS = 50
MAX_CONTROL = 100
MAX_HEADER_LIST = 16 * 1024
RSS_SLACK_KIB = 6 * 1024  # how much a worker may grow during an attack


def h2_config(port, admin_port, upstream, **http2):
    cfg = default_config(port, admin_port, [upstream.addr], workers=1)
    h = {"max_concurrent_streams": 100, "initial_window": "64KiB",
         "max_header_list_size": "16KiB", "max_resets": MAX_RESETS, "reset_interval": "10s",
         "max_control_frames": MAX_CONTROL}
    h.update(http2)
    cfg["listeners"][0]["http2"] = h
    return cfg


@pytest.fixture
def make_proxy(remora, upstream):
    def make(**http2):
        port = free_port()
        admin = free_port()
        while admin == port:
            admin = free_port()
        return remora(config=h2_config(port, admin, upstream, **http2))
    return make


@pytest.fixture
def p(make_proxy):
    return make_proxy()


class Bystander:
    """A well-behaved client in a thread: alternately one HTTP/1.1 GET and one h2c GET, each on
    a fresh connection, every 20 ms. Every answer must be a 200."""

    def __init__(self, port):
        self.port = port
        self.results = []   # (proto, status or repr(exception))
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _one_h1(self):
        with HttpConn(self.port, timeout=5) as c:
            c.request("GET", "/echo?bystander=h1")
            r = c.read_response()
            return r.status if r.complete else "incomplete %r" % r

    def _one_h2(self):
        with RawConn(self.port, timeout=5) as c:
            r = c.get("/echo?bystander=h2", timeout=5)
            return r.status if r.ended else "not ended %r" % r

    def _run(self):
        while not self._stop.is_set():
            for proto, fn in (("h1", self._one_h1), ("h2", self._one_h2)):
                try:
                    self.results.append((proto, fn()))
                except Exception as e:  # noqa: BLE001 - reported by check()
                    self.results.append((proto, repr(e)))
            self._stop.wait(0.02)

    def __enter__(self):
        self._t.start()
        assert wait_for(lambda: len(self.results) >= 2, timeout=5), self.results
        return self

    def __exit__(self, *a):
        self._stop.set()
        self._t.join(15)

    def check(self, during_at_least=2):
        assert not self._t.is_alive(), "the bystander hangs"
        bad = [r for r in self.results if r[1] != 200]
        assert not bad, "the bystander got %d failures of %d: %r" % (
            len(bad), len(self.results), bad[:5])
        assert len(self.results) >= during_at_least, self.results


def after_attack(p):
    """remora still serves h2 (curl prior knowledge) and HTTP/1.1, and lives."""
    assert p.alive(), "remora died: %s" % p.stderr()[-3000:]
    r = curl("--http2-prior-knowledge", "-o", "/dev/null", "-w", "%{http_code} %{http_version}",
             "http://127.0.0.1:%d/echo?after=1" % p.port, timeout=10)
    assert r.stdout.decode() == "200 2", (r.stdout, r.stderr)
    r = curl("-o", "/dev/null", "-w", "%{http_code} %{http_version}",
             "http://127.0.0.1:%d/echo?after=1" % p.port, timeout=10)
    assert r.stdout.decode() == "200 1.1", (r.stdout, r.stderr)
    assert p.alive()


def goaways(p):
    return metrics(p.admin_port).total("remora_http2_goaway_total", side="downstream")


def resets(p, reason=None):
    kw = {"side": "downstream"}
    if reason:
        kw["reason"] = reason
    return metrics(p.admin_port).total("remora_http2_resets_total", **kw)


def expect_goaway(col, code, timeout=5.0):
    """The collector saw a GOAWAY with code (None: any) and then the close, within timeout."""
    ga = col.wait(col.goaway, timeout)
    assert ga is not None, "no GOAWAY within %.0fs; got %r (closed=%s)" % (
        timeout, col.frames[-10:], col.closed.is_set())
    last, got, debug = ga.goaway()
    if code is not None:
        assert got == code, "GOAWAY %s (debug %r), want %s" % (error_name(got), debug,
                                                              error_name(code))
    assert col.wait_closed(timeout), "remora kept the connection open after its GOAWAY"
    return ga


def send_flood(conn, chunks, budget_s=10.0, send_timeout=1.0):
    """Sends chunks (an iterable of bytes) until they run out, a send fails (remora closed,
    reset or stopped reading for send_timeout) or budget_s passed. Returns bytes sent."""
    end = time.monotonic() + budget_s
    sent = 0
    for c in chunks:
        if time.monotonic() >= end or not conn.send(c, timeout=send_timeout):
            break
        sent += len(c)
    return sent


# ---- rapid reset -----------------------------------------------------------------------------

def open_and_reset(conn, n, path="/delay?ms=200"):
    out = bytearray()
    for _ in range(n):
        sid = conn.new_sid()
        block = conn.encoder.encode(request_headers(path))
        out += frame(HEADERS, END_HEADERS | END_STREAM, sid, block)
        out += h2raw.rst_frame(sid, CANCEL)
    return bytes(out)


def test_rapid_reset_goaway_enhance_your_calm(p):
    g0, r0 = goaways(p), resets(p, "cancel")
    with Bystander(p.port) as by, RssSampler(p.pid) as rss:
        base = p.rss_kib()
        conn = RawConn(p.port)
        col = h2raw.Collector(conn)
        t0 = time.monotonic()
        conn.send(open_and_reset(conn, 500))
        ga = expect_goaway(col, ENHANCE_YOUR_CALM)
        took = time.monotonic() - t0
        col.stop()
        conn.close()
        time.sleep(0.1)  # the bystander goes on after the attack
    by.check()
    assert took < 5, took
    last = ga.goaway()[0]
    assert last <= 2 * 500, last
    assert rss.max_kib - base < RSS_SLACK_KIB, (base, rss.max_kib)
    assert wait_for(lambda: goaways(p) - g0 >= 1, timeout=2), "GOAWAY not counted"
    counted = resets(p, "cancel") - r0
    assert MAX_RESETS < counted <= 500, "remora_http2_resets_total{reason=cancel} delta %r" \
        % counted
    after_attack(p)


def test_resets_under_the_limit_are_fine(p):
    """40 open+reset streams (max_resets 50): no GOAWAY, the conn serves the next request."""
    g0 = goaways(p)
    with RawConn(p.port) as conn:
        conn.send(open_and_reset(conn, 40))
        r = conn.get("/echo?after-resets=1", timeout=5)
        assert r.status == 200 and r.ended, r
        assert not conn.goaways, conn.goaways
        frames, closed = conn.drain(0.3)
        assert not closed and not [f for f in frames if f.type == GOAWAY], frames
    assert goaways(p) == g0


def test_resets_counted_per_interval(make_proxy):
    """max_resets 50 per 1 s: 40 resets, then 40 more 1.5 s later, is never more than 50 in
    one interval; the conn lives."""
    p = make_proxy(reset_interval="1s")
    with RawConn(p.port) as conn:
        conn.send(open_and_reset(conn, 40, "/echo"))
        assert conn.get("/echo?a=1", timeout=5).status == 200
        time.sleep(1.5)  # the interval itself is what is tested
        conn.send(open_and_reset(conn, 40, "/echo"))
        r = conn.get("/echo?b=1", timeout=5)
        assert r.status == 200 and r.ended, r
        assert not conn.goaways, conn.goaways


# ---- CONTINUATION floods -----------------------------------------------------------------------

def continuation_flood(sid, first_block, payloads):
    """HEADERS without END_HEADERS, then CONTINUATION frames without END_HEADERS."""
    yield frame(HEADERS, END_STREAM, sid, first_block)
    for pl in payloads:
        yield frame(CONTINUATION, 0, sid, pl)


def test_continuation_flood_with_header_bytes(p):
    """One header block that never ends: HEADERS then up to 32 MiB of CONTINUATION frames full
    of literal headers, 1 MiB at a time. remora answers with a GOAWAY within the first few MiB
    (whatever it reads after that, while it lingers on the close, it discards) and closes,
    without buffering the block."""
    g0 = goaways(p)
    chunk = b"".join(hpack_literal(b"x-flood-%d" % i, b"v" * 4000) for i in range(4))
    payload = (chunk * (16384 // len(chunk) + 1))[:16384]
    mib = frame(CONTINUATION, 0, 1, payload) * 64
    with Bystander(p.port) as by, RssSampler(p.pid) as rss:
        base = p.rss_kib()
        conn = RawConn(p.port)
        col = h2raw.Collector(conn)
        t0 = time.monotonic()
        conn.send(frame(HEADERS, END_STREAM, 1, conn.encoder.encode(request_headers("/echo"))))
        sent = 0
        at_goaway = None
        for _ in range(32):
            if not conn.send(mib, timeout=2):
                break
            sent += len(mib)
            if col.wait(col.goaway, 0.05):
                at_goaway = sent
                break
        expect_goaway(col, None, timeout=5)
        took = time.monotonic() - t0
        col.stop()
        conn.close()
        time.sleep(0.1)
    by.check()
    assert took < 10, took
    assert at_goaway is not None and at_goaway <= 4 * 1024 * 1024, \
        "no GOAWAY while sending %d bytes of one header block (GOAWAY after %r)" % (sent,
                                                                                  at_goaway)
    assert rss.max_kib - base < RSS_SLACK_KIB, (base, rss.max_kib)
    assert wait_for(lambda: goaways(p) - g0 >= 1, timeout=2), "GOAWAY not counted"
    after_attack(p)


def test_continuation_flood_empty_frames(p):
    """HEADERS without END_HEADERS, then 200000 empty CONTINUATION frames: cut off with a
    GOAWAY, not read forever."""
    with Bystander(p.port) as by, RssSampler(p.pid) as rss:
        base = p.rss_kib()
        conn = RawConn(p.port)
        col = h2raw.Collector(conn)
        t0 = time.monotonic()
        first = conn.encoder.encode(request_headers("/echo"))
        empty = frame(CONTINUATION, 0, 1, b"")
        batches = [frame(HEADERS, END_STREAM, 1, first)] + [empty * 2000] * 100
        sent = send_flood(conn, batches, budget_s=10)
        expect_goaway(col, None, timeout=5)
        took = time.monotonic() - t0
        col.stop()
        conn.close()
        time.sleep(0.1)
    by.check()
    assert took < 10, (took, sent)
    assert rss.max_kib - base < RSS_SLACK_KIB, (base, rss.max_kib)
    after_attack(p)


def test_continuation_on_another_stream_is_protocol_error(p):
    """A header block interrupted by a frame of another stream is a connection error."""
    with RawConn(p.port) as conn:
        col = h2raw.Collector(conn)
        first = conn.encoder.encode(request_headers("/echo"))
        conn.send(frame(HEADERS, END_STREAM, 1, first) + frame(CONTINUATION, END_HEADERS, 3, b""))
        expect_goaway(col, PROTOCOL_ERROR)
        col.stop()
    after_attack(p)


# ---- header list size --------------------------------------------------------------------------

def refused_or_goaway(conn, sid, timeout=5.0):
    """How remora refused stream sid: ("431", r), ("rst", r) or ("goaway", r)."""
    r = conn.read_response(sid, timeout=timeout)
    if r.status == 431:
        return "431", r
    if r.reset is not None:
        return "rst", r
    if r.goaway is not None or conn.goaways:
        return "goaway", r
    raise AssertionError("an oversized header list was not refused: %r" % r)


def test_header_list_size_advertised_and_enforced(p):
    with RawConn(p.port) as conn:
        # Under the limit: served.
        r = conn.get("/echo", extra=[("x-under", "u" * (MAX_HEADER_LIST - 2000))], timeout=5)
        assert r.status == 200 and r.ended, r
        assert conn.server_settings.get(h2raw.MAX_HEADER_LIST_SIZE) == MAX_HEADER_LIST, \
            conn.server_settings
        # Over it (in HEADERS + CONTINUATION): refused, never forwarded.
        sid = conn.request(request_headers("/echo?over=1",
                                           extra=[("x-over", "o" * (MAX_HEADER_LIST + 4000))]))
        how, r = refused_or_goaway(conn, sid)
        if how == "431":
            assert r.header("x-remora-error") in ("header_too_large", "too_many_headers"), r
        if how != "goaway":
            # The HPACK state is intact: the same conn goes on serving.
            r = conn.get("/echo?next=1", timeout=5)
            assert r.status == 200 and r.ended, r
    after_attack(p)


def test_huge_header_list_bounded(p):
    """A 4 MiB header list of many 4 KB headers in one (complete) block: refused, bounded RSS."""
    with Bystander(p.port) as by, RssSampler(p.pid) as rss:
        base = p.rss_kib()
        with RawConn(p.port) as conn:
            col = h2raw.Collector(conn)
            block = conn.encoder.encode(request_headers("/echo?huge=1")) + b"".join(
                hpack_literal(b"x-h%d" % i, b"h" * 4000) for i in range(1000))
            sent = send_flood(conn, [h2raw.headers_frames(1, block)], budget_s=10)
            col.wait(lambda: col.goaway() or col.of_type(RST_STREAM, 1) or
                     col.of_type(HEADERS, 1) or col.closed.is_set(), 5)
            got = (col.goaway(), col.of_type(RST_STREAM, 1), col.of_type(HEADERS, 1))
            col.stop()
        time.sleep(0.1)
    by.check()
    assert any(got), "no refusal of a 4 MiB header list (sent %d): %r" % (sent, col.frames)
    if got[2]:
        # A response head (the first on this conn, so a fresh decoder reads it): a 431.
        head = dict(hpack.Decoder().decode(got[2][0].payload))
        assert head.get(":status") == "431", head
    assert rss.max_kib - base < RSS_SLACK_KIB, (base, rss.max_kib)
    fwd = [e for e in p.access_logs() if "huge" in (e.get("path") or "")
           and (e.get("upstream") is not None or e.get("status") == 200)]
    assert not fwd, "a 4 MiB header list was forwarded: %r" % fwd
    after_attack(p)


# ---- control frame floods ----------------------------------------------------------------------

def flood_frames(kind, conn):
    if kind == "settings":
        return h2raw.settings_frame([(h2raw.ENABLE_PUSH, 0)]), b""
    if kind == "ping":
        return h2raw.ping_frame(b"floodflo"), b""
    if kind == "priority":
        # PRIORITY on idle streams (allowed by RFC 9113, a classic flood).
        return None, b""
    if kind == "empty_data":
        sid = conn.new_sid()
        block = conn.encoder.encode(request_headers("/upload", "POST"))
        return frame(DATA, 0, sid, b""), frame(HEADERS, END_HEADERS, sid, block)
    raise ValueError(kind)


def flood_batches(kind, conn, total, batch=1000):
    one, prelude = flood_frames(kind, conn)
    if prelude:
        yield prelude
    sid = 1001
    for _ in range(total // batch):
        if kind == "priority":
            out = bytearray()
            for _ in range(batch):
                out += frame(h2raw.PRIORITY, 0, sid, b"\x00\x00\x00\x00\x10")
                sid += 2
            yield bytes(out)
        else:
            yield one * batch


@pytest.mark.parametrize("kind", ["settings", "ping", "priority", "empty_data"])
def test_control_frame_flood(p, kind):
    """200000 frames (max_control_frames 100 per 10 s) sent as fast as remora takes them,
    never reading its answers: GOAWAY ENHANCE_YOUR_CALM and a close, bounded RSS."""
    g0 = goaways(p)
    with Bystander(p.port) as by, RssSampler(p.pid) as rss:
        base = p.rss_kib()
        conn = RawConn(p.port, rcvbuf=16384)
        t0 = time.monotonic()
        sent = send_flood(conn, flood_batches(kind, conn, 200000), budget_s=8)
        ga, closed = conn.wait_goaway(timeout=5)
        took = time.monotonic() - t0
        conn.close()
        time.sleep(0.1)
    by.check()
    assert ga is not None, "no GOAWAY after a %s flood (sent %d bytes, closed=%s, last %r)" % (
        kind, sent, closed, conn.frames[-5:])
    assert ga.goaway()[1] == ENHANCE_YOUR_CALM, ga
    assert closed, "the conn stayed open after the GOAWAY"
    assert took < 12, took
    assert rss.max_kib - base < RSS_SLACK_KIB, (base, rss.max_kib)
    assert wait_for(lambda: goaways(p) - g0 >= 1, timeout=2), "GOAWAY not counted"
    after_attack(p)


def test_pings_under_the_limit_are_answered(p):
    """50 PINGs (limit 100): 50 PING ACKs with the same payloads, no GOAWAY."""
    with RawConn(p.port) as conn:
        conn.send(b"".join(h2raw.ping_frame(b"ping%04d" % i) for i in range(50)))
        acks = []
        end = time.monotonic() + 5
        while len(acks) < 50 and time.monotonic() < end:
            f = conn.read_frame(max(0.0, end - time.monotonic()))
            assert f is not None, "closed after %d acks" % len(acks)
            assert f.type != GOAWAY, f
            if f.type == SETTINGS and not f.flags & h2raw.ACK:
                conn.send(h2raw.settings_frame(ack=True))
            if f.type == PING:
                assert f.flags & h2raw.ACK, f
                acks.append(f.payload)
        assert acks == [b"ping%04d" % i for i in range(50)]
        r = conn.get("/echo", timeout=5)
        assert r.status == 200 and r.ended, r


# ---- flow-control windows ----------------------------------------------------------------------

def goaway_on_fresh_conn(p, data, code):
    """Sends data on a new conn (after the preface) and expects GOAWAY code and a close."""
    with RawConn(p.port) as conn:
        col = h2raw.Collector(conn)
        conn.send(data)
        ga = expect_goaway(col, code)
        col.stop()
    return ga


def test_connection_window_overflow(p):
    g0 = goaways(p)
    goaway_on_fresh_conn(p, h2raw.window_update_frame(0, 2 ** 31 - 1), FLOW_CONTROL_ERROR)
    goaway_on_fresh_conn(p, h2raw.window_update_frame(0, 2 ** 30) +
                         h2raw.window_update_frame(0, 2 ** 30), FLOW_CONTROL_ERROR)
    assert wait_for(lambda: goaways(p) - g0 >= 2, timeout=2)
    after_attack(p)


def test_connection_window_update_zero_is_protocol_error(p):
    goaway_on_fresh_conn(p, h2raw.window_update_frame(0, 0), PROTOCOL_ERROR)
    after_attack(p)


def test_initial_window_size_over_max_is_flow_control_error(p):
    goaway_on_fresh_conn(p, h2raw.settings_frame([(h2raw.INITIAL_WINDOW_SIZE, 2 ** 31)]),
                         FLOW_CONTROL_ERROR)
    after_attack(p)


def test_stream_window_overflow(p):
    """WINDOW_UPDATE 2^31-1 on an open stream: RST_STREAM FLOW_CONTROL_ERROR on that stream
    (or a GOAWAY FLOW_CONTROL_ERROR); after a stream-level reset the conn goes on."""
    r0 = resets(p, "flow_control_error")
    with RawConn(p.port) as conn:
        sid = conn.request(request_headers("/delay?ms=2000"))
        conn.send(h2raw.window_update_frame(sid, 2 ** 31 - 1))
        r = conn.read_response(sid, timeout=5)
        if r.reset is not None:
            assert r.reset == FLOW_CONTROL_ERROR, r
            r2 = conn.get("/echo", timeout=5)
            assert r2.status == 200 and r2.ended, r2
            assert wait_for(lambda: resets(p, "flow_control_error") - r0 >= 1, timeout=2)
        else:
            assert conn.goaways and conn.goaways[0].goaway()[1] == FLOW_CONTROL_ERROR, \
                (r, conn.frames)
    after_attack(p)


def test_stream_window_update_zero_is_protocol_error(p):
    with RawConn(p.port) as conn:
        sid = conn.request(request_headers("/delay?ms=2000"))
        conn.send(h2raw.window_update_frame(sid, 0))
        r = conn.read_response(sid, timeout=5)
        if r.reset is not None:
            assert r.reset == PROTOCOL_ERROR, r
        else:
            assert conn.goaways and conn.goaways[0].goaway()[1] == PROTOCOL_ERROR, \
                (r, conn.frames)
    after_attack(p)


def test_initial_window_change_overflowing_open_stream(p):
    """A stream window raised to exactly 2^31-1 is fine; a SETTINGS_INITIAL_WINDOW_SIZE raise
    that then pushes it over is a FLOW_CONTROL_ERROR: RFC 9113 6.9.2 asks for a connection
    error (GOAWAY); nghttp2, which remora uses, resets the overflowing stream instead, which
    keeps the window from overflowing just as well, so either is accepted."""
    with RawConn(p.port) as conn:
        col = h2raw.Collector(conn)
        sid = conn.request(request_headers("/delay?ms=3000"))
        conn.send(h2raw.window_update_frame(sid, 2 ** 31 - 1 - 65535))
        time.sleep(0.2)  # nothing must happen: the window is at its maximum, not over it
        assert col.goaway() is None and not col.of_type(RST_STREAM), col.frames
        conn.send(h2raw.settings_frame([(h2raw.INITIAL_WINDOW_SIZE, 65536)]))
        got = col.wait(lambda: col.goaway() or col.of_type(RST_STREAM, sid), 5)
        assert got, "no FLOW_CONTROL_ERROR: %r" % col.frames
        if col.goaway() is not None:
            assert col.goaway().goaway()[1] == FLOW_CONTROL_ERROR, col.frames
        else:
            assert col.of_type(RST_STREAM, sid)[0].error_code() == FLOW_CONTROL_ERROR, \
                col.frames
        col.stop()
    after_attack(p)


def test_window_updates_are_not_a_control_frame_flood(p):
    """A client that gives back every DATA frame at once (one conn and one stream
    WINDOW_UPDATE per frame, as grpc-core does) is not flooding: 4 MiB in 16 KiB frames is
    ~500 WINDOW_UPDATEs, far over max_control_frames (100), and must be served whole."""
    with RawConn(p.port) as conn:
        r = conn.get("/bytes?n=%d" % (4 * 1024 * 1024), timeout=10)
        assert not conn.goaways, "GOAWAY %r after %d bytes" % (conn.goaways, len(r.body))
        assert r.status == 200 and r.ended and len(r.body) == 4 * 1024 * 1024, r
        wus = sum(1 for f in conn.frames if f.type == DATA)
        assert wus > MAX_CONTROL, "only %d DATA frames: the test proves nothing" % wus
        r = conn.get("/echo", timeout=5)
        assert r.status == 200, r


# ---- HPACK abuse -------------------------------------------------------------------------------

def valid_block():
    return hpack.Encoder().encode(request_headers("/echo?hpack=1"))


HPACK_CASES = {
    # Indexed field 200: past the static table and the few entries valid_block() added.
    "index_past_table": lambda: valid_block() + hpack_int(200, 7, 0x80),
    # Indexed field 2^28.
    "huge_index": lambda: valid_block() + hpack_int(1 << 28, 7, 0x80),
    # An integer that never ends within 64 bits.
    "integer_overflow": lambda: valid_block() + b"\xff" + b"\xff" * 12 + b"\x0f",
    # Literal with an indexed name past the table.
    "literal_name_index_past_table": lambda: valid_block() + hpack_int(5000, 4) + b"\x01a",
    # Dynamic table size update above SETTINGS_HEADER_TABLE_SIZE (4096 by default).
    "table_size_over_settings": lambda: hpack_int(1 << 20, 5, 0x20) + valid_block(),
    # A size update after a header field (only allowed at the start of a block).
    "table_size_update_not_first": lambda: valid_block() + hpack_int(0, 5, 0x20),
    # A huge size update (2^32 + 10).
    "table_size_huge": lambda: hpack_int((1 << 32) + 10, 5, 0x20) + valid_block(),
    # Huffman string whose padding is not the EOS prefix (zeros).
    "huffman_bad_padding": lambda: valid_block() + b"\x00\x03x-a" + b"\x81\x00",
    # Huffman string with more than 7 bits of padding.
    "huffman_long_padding": lambda: valid_block() + b"\x00\x03x-a" + b"\x82\xff\xff",
    # Huffman string containing the EOS symbol (30 ones).
    "huffman_eos": lambda: valid_block() + b"\x00\x03x-a" + b"\x84\xff\xff\xff\xff",
    # String length past the end of the block.
    "string_past_block": lambda: valid_block() + b"\x00\x05x-abc\x7f\x10abc",
}


@pytest.mark.parametrize("case", sorted(HPACK_CASES))
def test_hpack_abuse_compression_error(p, case):
    g0 = goaways(p)
    block = HPACK_CASES[case]()
    with Bystander(p.port) as by:
        goaway_on_fresh_conn(p, frame(HEADERS, END_HEADERS | END_STREAM, 1, block),
                             COMPRESSION_ERROR)
    by.check(during_at_least=2)
    assert wait_for(lambda: goaways(p) - g0 >= 1, timeout=2)
    fwd = [e for e in p.access_logs() if "hpack" in (e.get("path") or "")
           and (e.get("upstream") is not None or e.get("status") == 200)]
    assert not fwd, "a request with a broken header block was forwarded: %r" % fwd
    after_attack(p)


def test_hpack_legal_table_size_games(p):
    """Legal: several size updates at the start of a block (0, then 4096), a zero-sized table
    then regrown, many indexed entries evicted: all served."""
    with RawConn(p.port) as conn:
        for i in range(20):
            hs = request_headers("/echo?games=%d" % i,
                                 extra=[("x-game-%d" % (i % 5), "v" * (300 * (i % 7)))])
            if i % 4 == 0:
                # Empty remora's copy of our table, then allow it to grow again; a fresh
                # encoder (empty table) stays in sync with it.
                conn.encoder = hpack.Encoder()
                block = hpack_int(0, 5, 0x20) + hpack_int(4096, 5, 0x20) + \
                    conn.encoder.encode(hs)
            else:
                block = conn.encoder.encode(hs)
            sid = conn.new_sid()
            conn.streams[sid] = h2raw.H2Response(sid)
            conn.send(frame(HEADERS, END_HEADERS | END_STREAM, sid, block))
            r = conn.read_response(sid, timeout=5)
            assert r.status == 200 and r.ended, (i, r)
            seen = dict((k.lower(), v) for k, v in json.loads(r.body)["headers"])
            assert seen.get("x-game-%d" % (i % 5)) == "v" * (300 * (i % 7)), (i, seen)
        assert not conn.goaways


def test_remora_encoder_respects_header_table_size_zero(p):
    """The client allows remora no dynamic table (SETTINGS_HEADER_TABLE_SIZE 0): every
    response block decodes with a zero-sized table."""
    with RawConn(p.port, settings=[(h2raw.HEADER_TABLE_SIZE, 0)]) as conn:
        conn.decoder.header_table_size = 0
        conn.decoder.max_allowed_table_size = 0
        for i in range(5):
            r = conn.get("/echo?set=X-Same:%s&i=%d" % ("s" * 50, i), timeout=5)
            assert r.status == 200 and r.ended, r
            assert r.header("x-same") == "s" * 50, r
        assert not conn.goaways


# ---- stream identifiers (RFC 9113 5.1.1) -------------------------------------------------------

def upstream_requests(upstream, since=None):
    """The upstream's request count (since: how many came after that count), not counting
    the /_stats asks themselves."""
    n = upstream.stats()["requests"]
    return n if since is None else n - since - 1


def expect_protocol_goaway(conn, last_sid):
    """conn gets GOAWAY PROTOCOL_ERROR with last-stream-id last_sid, then the close."""
    ga, closed = conn.wait_goaway(timeout=5, answer=True)
    assert ga is not None, "no GOAWAY: %r" % conn.frames[-10:]
    last, code, debug = ga.goaway()
    assert code == PROTOCOL_ERROR, "GOAWAY %s (debug %r)" % (error_name(code), debug)
    assert last == last_sid, (last, last_sid)
    assert closed, "remora kept the connection open after its GOAWAY"


@pytest.mark.parametrize("together", [False, True], ids=["after", "same_read"])
def test_stream_id_going_backwards_is_protocol_error(p, upstream, together):
    """HEADERS opening stream 3 after stream 5: GOAWAY PROTOCOL_ERROR (last-stream-id 5) and
    a close; the upstream never sees the request on 3; another conn is unaffected."""
    g0 = goaways(p)
    with RawConn(p.port) as other, RawConn(p.port) as conn:
        assert other.get("/echo?other=1").status == 200
        n0 = upstream_requests(upstream)
        five = conn.encoder.encode(request_headers("/echo?sid=5"))
        three = conn.encoder.encode(request_headers("/echo?sid=3"))
        if together:
            conn.send(frame(HEADERS, END_HEADERS | END_STREAM, 5, five) +
                      frame(HEADERS, END_HEADERS | END_STREAM, 3, three))
        else:
            conn.send(frame(HEADERS, END_HEADERS | END_STREAM, 5, five))
            assert conn.read_response(5).status == 200
            conn.send(frame(HEADERS, END_HEADERS | END_STREAM, 3, three))
        expect_protocol_goaway(conn, 5)
        assert 3 not in conn.streams or conn.streams[3].status is None
        time.sleep(0.3)
        assert upstream_requests(upstream, n0) in ((0, 1) if together else (1,))  # never 3
        r = other.get("/echo?other=2")
        assert r.status == 200 and not other.goaways, r
    assert wait_for(lambda: goaways(p) - g0 >= 1, timeout=2)
    after_attack(p)


def test_stream_id_reused_after_close_is_protocol_error(p, upstream):
    """A HEADERS opening stream 1 again, after it closed and after 120 more streams (so
    nghttp2 no longer remembers it): GOAWAY PROTOCOL_ERROR, last-stream-id the highest."""
    with RawConn(p.port) as conn:
        assert conn.get("/echo?first=1").status == 200
        last = 1
        for _ in range(2):
            sids = [conn.request(request_headers("/echo")) for _ in range(60)]
            for sid in sids:
                assert conn.read_response(sid).status == 200
            last = sids[-1]
        n0 = upstream_requests(upstream)
        conn.request(request_headers("/echo?again=1"), sid=1)
        expect_protocol_goaway(conn, last)
        time.sleep(0.3)
        assert upstream_requests(upstream, n0) == 0
    after_attack(p)


def test_stream_id_reused_right_after_close_is_protocol_error(p, upstream):
    with RawConn(p.port) as conn:
        assert conn.get("/echo?first=1").status == 200
        n0 = upstream_requests(upstream)
        conn.request(request_headers("/echo?again=1"), sid=1)
        expect_protocol_goaway(conn, 1)
        time.sleep(0.3)
        assert upstream_requests(upstream, n0) == 0
    after_attack(p)


def test_trailers_on_a_lower_open_stream_are_fine(p):
    """Stream 1 stays open (body pending) while stream 3 is served; then its DATA and
    trailers (a HEADERS on the lower id 1) complete it: no GOAWAY."""
    with RawConn(p.port) as conn:
        sid = conn.request(request_headers("/echo", method="POST"), end_stream=False)
        assert conn.get("/echo?sid=3").status == 200
        conn.send(h2raw.data_frame(sid, b"abc"))
        conn.send(frame(HEADERS, END_HEADERS | END_STREAM, sid,
                        conn.encoder.encode([("x-trailer", "t1")])))
        r = conn.read_response(sid)
        assert r.status == 200, r
        doc = r.json()
        assert doc["body_len"] == 3, doc
        assert ["x-trailer", "t1"] in [list(t) for t in doc["trailers"]], doc
        assert conn.get("/echo?sid=5").status == 200
        assert not conn.goaways, conn.goaways


def test_late_trailers_after_remora_reset_are_ignored(p):
    """remora resets stream 1 (a malformed header, nghttp2's RST_STREAM) before the client
    ended it; the trailers the client sends on it later, after opening stream 3, are ignored
    (RFC 9113 5.1 closed), not a connection error."""
    with RawConn(p.port) as conn:
        block = conn.encoder.encode(request_headers("/echo", method="POST")) + \
            hpack_literal(b"X-Upper", b"1")
        conn.send(frame(HEADERS, END_HEADERS, conn.new_sid(), block))
        r = conn.read_response(1)
        assert r.reset == PROTOCOL_ERROR, r
        assert conn.get("/echo?sid=3").status == 200
        conn.send(frame(HEADERS, END_HEADERS | END_STREAM, 1,
                        conn.encoder.encode([("x-trailer", "late")])))
        r = conn.get("/echo?sid=5")
        assert r.status == 200, r
        assert not conn.goaways, conn.goaways


def test_priority_for_lower_ids_is_fine(p):
    """PRIORITY frames may name any stream, lower ids included (RFC 9113 5.1.1 is about
    opening streams)."""
    with RawConn(p.port) as conn:
        assert conn.get("/echo?sid=1").status == 200
        assert conn.get("/echo?sid=3").status == 200
        conn.send(frame(h2raw.PRIORITY, 0, 1, b"\0\0\0\0\x10") +
                  frame(h2raw.PRIORITY, 0, 2, b"\0\0\0\0\x10"))
        assert conn.get("/echo?sid=5").status == 200
        assert not conn.goaways, conn.goaways


# ---- host and :authority (RFC 9113 8.3.1) --------------------------------------------------------

def authority_request(conn, authority=None, host=None, scheme="http"):
    hs = [(":method", "GET"), (":scheme", scheme), (":path", "/echo")]
    if authority is not None:
        hs.append((":authority", authority))
    if host is not None:
        hs.append(("host", host))
    return conn.read_response(conn.request(hs))


@pytest.mark.parametrize("authority,host", [
    ("a.example", "b.example"),
    ("a.example", "a.example:8080"),
    ("a.example:8080", "a.example:8081"),
    ("a.example:443", "a.example"),        # :scheme http: the default port is 80
    ("a.example", "a.example.evil"),
    ("[::1]:8080", "[::2]:8080"),
])
def test_host_differing_from_authority_is_400(p, upstream, authority, host):
    """A malformed request (RFC 9113 8.1.1): 400 bad_request, as remora answers its other
    malformed h2 requests; the upstream sees nothing and the conn goes on."""
    with RawConn(p.port) as conn:
        n0 = upstream_requests(upstream)
        r = authority_request(conn, authority, host)
        assert r.status == 400, r
        assert r.header("x-remora-error") == "bad_request", r
        assert upstream_requests(upstream, n0) == 0
        assert conn.get("/echo?after=1").status == 200
        assert not conn.goaways


@pytest.mark.parametrize("authority,host,scheme", [
    ("a.example", "a.example", "http"),
    ("A.Example", "a.EXAMPLE", "http"),
    ("a.example:80", "a.example", "http"),
    ("a.example", "a.example:80", "http"),
    ("a.example", "a.example:443", "https"),
    ("a.example:8080", "A.example:8080", "http"),
    ("[::1]:80", "[::1]", "http"),
])
def test_host_matching_authority_is_served(p, authority, host, scheme):
    """The same entity (case, default port): 200, and the upstream gets one Host, the
    :authority."""
    with RawConn(p.port) as conn:
        r = authority_request(conn, authority, host, scheme)
        assert r.status == 200, r
        hosts = [v for k, v in r.json()["headers"] if k.lower() == "host"]
        assert hosts == [authority], hosts


def test_host_without_authority_is_used(p):
    with RawConn(p.port) as conn:
        r = authority_request(conn, None, "only-host.example")
        assert r.status == 200, r
        hosts = [v for k, v in r.json()["headers"] if k.lower() == "host"]
        assert hosts == ["only-host.example"], hosts


# ---- bookkeeping -------------------------------------------------------------------------------

def test_streams_gauge_and_counter(p):
    m0 = metrics(p.admin_port)
    with RawConn(p.port) as conn:
        sids = [conn.request(request_headers("/delay?ms=700")) for _ in range(3)]
        assert wait_for(lambda: metrics(p.admin_port).total(
            "remora_downstream_streams_active") == 3, timeout=3), \
            metrics(p.admin_port).series("remora_downstream_streams_active")
        for sid in sids:
            assert conn.read_response(sid, timeout=5).status == 200
    assert wait_for(lambda: metrics(p.admin_port).total(
        "remora_downstream_streams_active") == 0, timeout=3)
    m = metrics(p.admin_port)
    assert m.total("remora_downstream_streams_total", proto="h2c") - \
        m0.total("remora_downstream_streams_total", proto="h2c") == 3

