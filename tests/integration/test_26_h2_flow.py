# SPDX-License-Identifier: Apache-2.0
"""26: HTTP/2 flow control is remora's backpressure. 100 MiB responses to an h2 client that
reads slowly (small windows, WINDOW_UPDATEs only after a delay) and 100 MiB uploads from an h2
client to a slow h2c app and to a slow HTTP/1.1 app pass byte-exact while remora's peak RSS
stays flat; a reader that stops, or an app that reads slowly, stops the other side instead of
growing remora's buffers (RFC 9113 5.2: remora gives window back only when the bytes left)."""

import hashlib
import re
import time

import pytest

from h2util import ErrorCodes, H2Client, SettingCodes, remora_h2
from helpers import MIB, HttpConn, RssSampler, pattern, pattern_sha256

BIG = 100 * MIB
RSS_LIMIT_KIB = 32 * 1024
BLOCK = pattern(0, MIB)  # a whole number of patterns: BLOCK repeated is the pattern stream


@pytest.fixture(scope="module")
def big_sha():
    return pattern_sha256(BIG)


def route(timeout="60s"):
    return [{"name": "default", "match": {"path_prefix": "/"}, "upstream": "app",
             "timeout": timeout}]


# A reader that gives window back every few KiB sends thousands of WINDOW_UPDATEs a second;
# these fixtures lift the control-frame flood limit so that the tests below measure flow
# control and memory only. test_window_updates_are_not_a_flood checks the default limit.
NO_FLOOD_LIMIT = {"max_control_frames": 10000000}


@pytest.fixture
def h1_app_proxy(remora, upstream):
    """remora (h2c or HTTP/1.1 downstream) in front of the HTTP/1.1 app."""
    return remora_h2(remora, upstream, http2=NO_FLOOD_LIMIT, workers=1, routes=route())


@pytest.fixture
def h2_app_proxy(remora, h2_upstream):
    """remora in front of h2_upstream.py spoken to in h2c."""
    return remora_h2(remora, h2_upstream, http2=NO_FLOOD_LIMIT, workers=1, routes=route(),
                     upstream_opts={"protocol": "h2c"})


def check_rss(sampler, proxy):
    assert sampler.samples >= 3, "RSS sampler did not run"
    print("peak RSS %.1f MiB" % (sampler.max_kib / 1024))
    assert sampler.max_kib < RSS_LIMIT_KIB, (
        "remora peak RSS %.1f MiB >= 32 MiB" % (sampler.max_kib / 1024))
    assert proxy.alive()


def slow_download(port, path, delay=0.001, window=65535):
    """GETs path over h2 with a window-sized receive window (stream and connection) that is
    given back only delay seconds after data arrived; returns the H2Response (body hashed,
    not kept)."""
    with H2Client(port, timeout=30, auto_ack=False,
                  settings={SettingCodes.INITIAL_WINDOW_SIZE: window}) as c:
        sid = c.request("GET", path, sink=lambda d: None)
        r = c.streams[sid]
        end = time.monotonic() + 40
        progress = (0, time.monotonic())
        while not r.done and not c.eof and time.monotonic() < end:
            c.pump(0.5)
            if r.unacked:
                time.sleep(delay)
                c.ack(sid)
            if r.body_len != progress[0]:
                progress = (r.body_len, time.monotonic())
            elif time.monotonic() - progress[1] > 3:
                break  # nothing for 3 s with the windows open
        assert r.done, "download stalled at %d bytes (no END_STREAM / nothing for 3 s with " \
            "the windows open; goaway %r): %r" % (r.body_len, c.goaway, r)
        return r


# ---- slow h2 readers ------------------------------------------------------------------------

def test_slow_h2_reader_100mib_from_http1_app(h1_app_proxy, big_sha):
    p = h1_app_proxy
    with RssSampler(p.pid) as s:
        r = slow_download(p.port, "/bytes?n=%d" % BIG)
    assert r.status == 200 and r.ended, r
    assert r.body_len == BIG and r.sha256() == big_sha
    check_rss(s, p)


def test_slow_h2_reader_100mib_from_h2c_app(h2_app_proxy, h2_upstream, big_sha):
    p = h2_app_proxy
    with RssSampler(p.pid) as s:
        r = slow_download(p.port, "/bytes?n=%d" % BIG, window=32768)
    assert r.status == 200 and r.ended, r
    assert r.body_len == BIG and r.sha256() == big_sha
    check_rss(s, p)
    assert h2_upstream.stats()["protocol_errors"] == []


def stalled_reader(port, path, seconds=3.0):
    """Reads the first window of path's response, then gives no window back for seconds.
    Returns (H2Client still open, H2Response)."""
    c = H2Client(port, timeout=10, auto_ack=False, rcvbuf=65536,
                 settings={SettingCodes.INITIAL_WINDOW_SIZE: 65535})
    sid = c.request("GET", path, sink=lambda d: None)
    r = c.streams[sid]
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        c.pump(max(0.001, min(0.2, end - time.monotonic())))
    return c, r


def test_stalled_h2_reader_h2c_app_held_back(h2_app_proxy, h2_upstream):
    """The client takes one 64 KiB window and stops: the h2c app may send only about what
    remora can hold (its windows toward the app and buffer_bytes), never the whole body."""
    p = h2_app_proxy
    with RssSampler(p.pid) as s:
        c, r = stalled_reader(p.port, "/bytes?n=%d" % BIG)
        try:
            assert r.status == 200
            assert r.body_len <= 65535, "remora sent beyond the client's window: %d" % \
                r.body_len
            sent = h2_upstream.stats()["data_sent"]
            print("app sent %.2f MiB to a stalled client" % (sent / MIB))
            assert sent < 2 * MIB, "remora took %.1f MiB from the app for a client that " \
                "read 64 KiB" % (sent / MIB)
            # the client resumes: the rest arrives intact
            while not r.done and not c.eof:
                c.ack(r.stream_id)
                c.pump(1.0)
            assert r.ended and r.body_len == BIG and r.sha256() == pattern_sha256(BIG)
        finally:
            c.close()
    check_rss(s, p)


def test_stalled_h2_reader_http1_app_bounds_rss(h1_app_proxy):
    p = h1_app_proxy
    with RssSampler(p.pid) as s:
        c, r = stalled_reader(p.port, "/bytes?n=%d" % BIG)
        try:
            assert r.status == 200 and r.body_len <= 65535, r
            c.reset(r.stream_id, ErrorCodes.CANCEL)
            # give the connection window back (the reset stream's bytes still count on it)
            c.auto_ack = True
            c.ack(r.stream_id)
            # the connection still serves
            r2 = c.get("/echo?after")
            assert r2.status == 200 and r2.json()["path"] == "/echo?after"
        finally:
            c.close()
    check_rss(s, p)


def test_stalled_http1_reader_h2c_app_held_back(h2_app_proxy, h2_upstream):
    """An HTTP/1.1 client that stops reading: remora stops giving the h2c app window."""
    p = h2_app_proxy
    with RssSampler(p.pid) as s, HttpConn(p.port, timeout=10, rcvbuf=65536) as c:
        c.request("GET", "/bytes?n=%d" % BIG)
        assert c.read_head().status == 200
        time.sleep(3.0)
        sent = h2_upstream.stats()["data_sent"]
        print("app sent %.2f MiB to a stalled HTTP/1.1 client" % (sent / MIB))
        # socket buffers on both sides of remora are part of this, hence the wider bound
        assert sent < 16 * MIB, "remora took %.1f MiB from the app" % (sent / MIB)
    check_rss(s, p)


# ---- uploads to slow apps -------------------------------------------------------------------

def upload(port, path, total=BIG, timeout=60):
    """POSTs total bytes of the pattern over h2 (no content-length); returns the response."""
    with H2Client(port, timeout=timeout) as c:
        sid = c.request("POST", path, end_stream=False)
        sent = 0
        while sent < total:
            k = min(len(BLOCK), total - sent)
            n = c.send_data(sid, BLOCK[:k], end_stream=sent + k == total, timeout=timeout)
            assert n == k, "upload cut at %d: %r" % (sent + n, c.streams.get(sid))
            sent += k
        return c.response(sid, timeout)


def test_upload_100mib_to_slow_h2c_app(h2_app_proxy, h2_upstream, big_sha):
    p = h2_app_proxy
    with RssSampler(p.pid) as s:
        r = upload(p.port, "/upload?slow=1&rate=40000000")
    assert r.status == 200, r
    assert r.json() == {"body_len": BIG, "body_sha256": big_sha}
    check_rss(s, p)
    assert h2_upstream.stats()["protocol_errors"] == []


def test_upload_100mib_to_slow_http1_app(h1_app_proxy, big_sha):
    p = h1_app_proxy
    with RssSampler(p.pid) as s:
        r = upload(p.port, "/slow-read?rate=40000000")
    assert r.status == 200, r
    assert r.json() == {"body_len": BIG, "body_sha256": big_sha}
    check_rss(s, p)


def pushback(port, path, seconds=3.0):
    """Pushes the pattern as fast as remora's windows allow for seconds; returns the bytes
    sent, then resets the stream."""
    with H2Client(port, timeout=10) as c:
        sid = c.request("POST", path, end_stream=False)
        sent = 0
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            r = c.streams[sid]
            assert r.reset is None and not r.ended, r
            avail = min(c.conn.local_flow_control_window(sid), 16384)
            if avail > 0:
                c.conn.send_data(sid, pattern(sent, avail))
                c.flush()
                sent += avail
            else:
                c.pump(0.02)
        c.reset(sid, ErrorCodes.CANCEL)
        return sent


def test_slow_h2c_app_stops_fast_h2_client(h2_app_proxy, h2_upstream):
    """The app reads 2 MB/s; in 3 s the client can only push what the app took plus the
    windows and buffers in between."""
    p = h2_app_proxy
    with RssSampler(p.pid) as s:
        sent = pushback(p.port, "/upload?slow=1&rate=2000000")
    print("client pushed %.1f MiB in 3 s against a 2 MB/s h2c app" % (sent / MIB))
    assert sent < 12 * MIB, "remora accepted %.1f MiB from the client" % (sent / MIB)
    check_rss(s, p)
    assert h2_upstream.stats()["protocol_errors"] == []


def test_slow_http1_app_stops_fast_h2_client(h1_app_proxy):
    p = h1_app_proxy
    with RssSampler(p.pid) as s:
        sent = pushback(p.port, "/slow-read?rate=2000000")
    print("client pushed %.1f MiB in 3 s against a 2 MB/s HTTP/1.1 app" % (sent / MIB))
    # the app's and remora's socket buffers are in between, as in test_50
    assert sent < 24 * MIB, "remora accepted %.1f MiB from the client" % (sent / MIB)
    check_rss(s, p)


def test_upload_hash_exact_small_windows(h2_app_proxy):
    """Many streams at once on one connection, each body exact, with the app's default
    64 KiB windows: remora splits and interleaves DATA without mixing streams."""
    bodies = [pattern(i * 13, 300000 + i * 4099) for i in range(12)]
    with H2Client(h2_app_proxy.port, timeout=30) as c:
        sids = [c.request("POST", "/upload?i=%d" % i, end_stream=False)
                for i in range(len(bodies))]
        offs = [0] * len(bodies)
        while any(o < len(b) for o, b in zip(offs, bodies)):
            for i, sid in enumerate(sids):
                b = bodies[i]
                if offs[i] >= len(b):
                    continue
                avail = min(c.conn.local_flow_control_window(sid), 16384, len(b) - offs[i])
                if avail <= 0:
                    continue
                c.conn.send_data(sid, b[offs[i]:offs[i] + avail],
                                 end_stream=offs[i] + avail == len(b))
                offs[i] += avail
            c.flush()
            c.pump(0.005)
        rs = c.responses(sids, timeout=30)
    for r, b in zip(rs, bodies):
        assert r.json() == {"body_len": len(b), "body_sha256": hashlib.sha256(b).hexdigest()}


def test_window_updates_are_not_a_flood(remora, upstream):
    """nghttp with its default 64 KiB windows downloads 100 MiB: it gives window back with a
    WINDOW_UPDATE every 32 KiB or so (thousands a second). Flow control is not a control-frame
    flood (the default max_control_frames counts SETTINGS/PING/PRIORITY/empty frames).
    (A chunked response: the END_STREAM of Content-Length ones is the download tests' case.)"""
    import subprocess
    p = remora(upstream, workers=1, routes=route("20s"))
    target = "/chunked?n=%d&chunk=65536" % BIG
    out = subprocess.run(["nghttp", "-n", "-s", "http://127.0.0.1:%d%s" % (p.port, target)],
                         capture_output=True, timeout=60)
    text = out.stdout.decode(errors="replace")
    assert out.returncode == 0 and "processed=0" not in text, (text[-800:], out.stderr[-500:])
    assert re.search(r"\s200\s+100M\s+/chunked", text), text[-800:]
    assert "flood" not in p.stderr(), [l for l in p.stderr().splitlines() if "flood" in l]
    # the same with h2util's client (WINDOW_UPDATE per ~32 KiB per stream and connection);
    # END_STREAM is the business of the download tests above
    with H2Client(p.port, timeout=30) as c:
        sid = c.request("GET", target, sink=lambda d: None)
        r = c.streams[sid]
        c.wait(lambda: r.body_len >= BIG or r.reset is not None or c.goaway is not None,
               timeout=30)
        assert c.goaway is None, c.goaway
        assert r.body_len == BIG and r.sha256() == pattern_sha256(BIG), r
    assert "flood" not in p.stderr()
