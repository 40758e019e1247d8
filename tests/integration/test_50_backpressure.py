# SPDX-License-Identifier: Apache-2.0
"""50: streaming and backpressure. 100 MiB bodies pass through in both directions with the
right length and sha256 while remora's RSS stays under 32 MiB, and a slow reader on either
side stops the fast side instead of growing remora's buffers; with the app reached over TCP and
over a Unix socket."""

import hashlib
import socket
import time

import pytest

from conftest import upstream_endpoints
from helpers import MIB, HttpConn, RssSampler, build_request, pattern, pattern_sha256

BIG = 100 * MIB
RSS_LIMIT_KIB = 32 * 1024
BLOCK = pattern(0, 65536)


@pytest.fixture(scope="module")
def big_sha():
    return pattern_sha256(BIG)


@pytest.fixture(params=["tcp", "unix"])
def streaming_proxy(request, remora, upstream_factory, sockdir):
    """One worker in front of a fresh upstream reached over TCP or over a Unix socket: every
    streaming test runs over both."""
    return remora(endpoints=upstream_endpoints(request.param, upstream_factory, sockdir),
                  workers=1, routes=[{"name": "default", "match": {"path_prefix": "/"},
                                      "upstream": "app", "timeout": "30s"}])


def check_rss(sampler, proxy):
    assert sampler.samples >= 3, "RSS sampler did not run"
    print("peak RSS %.1f MiB" % (sampler.max_kib / 1024))
    assert sampler.max_kib < RSS_LIMIT_KIB, (
        "remora peak RSS %.1f MiB >= 32 MiB" % (sampler.max_kib / 1024))
    assert proxy.alive()


def test_upload_100mib_chunked(streaming_proxy, big_sha):
    p = streaming_proxy
    with RssSampler(p.pid) as s, HttpConn(p.port, timeout=60) as c:
        c.send(build_request("POST", "/upload", headers=[("Transfer-Encoding", "chunked")]))
        for _ in range(BIG // len(BLOCK)):
            c.send(b"10000\r\n" + BLOCK + b"\r\n")
        c.send(b"0\r\n\r\n")
        r = c.read_response()
    assert r.status == 200, r
    assert r.json() == {"body_len": BIG, "body_sha256": big_sha}
    check_rss(s, p)


def test_upload_100mib_content_length(streaming_proxy, big_sha):
    p = streaming_proxy
    with RssSampler(p.pid) as s, HttpConn(p.port, timeout=60) as c:
        c.send(build_request("PUT", "/upload", headers=[("Content-Length", str(BIG))]))
        for _ in range(BIG // len(BLOCK)):
            c.send(BLOCK)
        r = c.read_response()
    assert r.status == 200, r
    assert r.json() == {"body_len": BIG, "body_sha256": big_sha}
    check_rss(s, p)


@pytest.mark.parametrize("target", ["/bytes?n=%d" % BIG, "/chunked?n=%d&chunk=65536" % BIG])
def test_download_100mib(streaming_proxy, big_sha, target):
    p = streaming_proxy
    h = hashlib.sha256()
    with RssSampler(p.pid) as s, HttpConn(p.port, timeout=60) as c:
        c.request("GET", target)
        r = c.read_response(sink=h.update)
    assert r.status == 200 and r.complete, r
    assert r.body_len == BIG
    assert h.hexdigest() == big_sha
    check_rss(s, p)


def test_download_100mib_with_curl(streaming_proxy):
    import subprocess
    p = streaming_proxy
    with RssSampler(p.pid) as s:
        out = subprocess.run(["curl", "-sS", "--noproxy", "*", "--max-time", "60", "-o",
                              "/dev/null", "-w", "%{http_code} %{size_download}",
                              "http://127.0.0.1:%d/chunked?n=%d&chunk=10000" % (p.port, BIG)],
                             capture_output=True, timeout=70)
    assert out.returncode == 0, out.stderr
    assert out.stdout.decode().split() == ["200", str(BIG)]
    check_rss(s, p)


def test_slow_reading_client_bounds_rss(streaming_proxy):
    p = streaming_proxy
    read = 0
    with RssSampler(p.pid) as s, HttpConn(p.port, timeout=10, rcvbuf=65536) as c:
        c.request("GET", "/bytes?n=%d" % BIG)
        r = c.read_head()
        assert r.status == 200
        first = bytearray(c.buf)
        c.buf.clear()
        end = time.monotonic() + 3.0
        while time.monotonic() < end:
            d = c.sock.recv(16384)
            if not d:
                break
            if len(first) < 100000:
                first += d
            read += len(d)
            time.sleep(0.01)
    assert bytes(first[:100000]) == pattern(0, 100000)[:len(first[:100000])]
    print("slow client read %.1f MiB in 3 s" % (read / MIB))
    assert read < BIG
    check_rss(s, p)


def test_slow_reading_upstream_stops_fast_client(streaming_proxy):
    """The upstream reads at 2 MB/s; the client tries to push 100 MiB in 3 s. Without
    backpressure remora would take it all into memory."""
    p = streaming_proxy
    sent = 0
    with RssSampler(p.pid) as s, HttpConn(p.port, timeout=10) as c:
        c.send(build_request("POST", "/slow-read?rate=2000000",
                             headers=[("Content-Length", str(BIG))]))
        c.sock.settimeout(0.2)
        end = time.monotonic() + 3.0
        view = memoryview(BLOCK)
        off = 0
        while time.monotonic() < end and sent < BIG:
            try:
                n = c.sock.send(view[off:])
            except socket.timeout:
                continue
            sent += n
            off = (off + n) % len(BLOCK)
    print("client pushed %.1f MiB in 3 s against a 2 MB/s upstream" % (sent / MIB))
    assert sent < 60 * MIB, "remora accepted %.1f MiB from the client" % (sent / MIB)
    check_rss(s, p)
