# SPDX-License-Identifier: Apache-2.0
"""14: HTTP/1.1 bad input answered with the precise status (issue 17), over raw sockets: each
case asserts the status, x-remora-error, that the app saw no request (or, for a body cut by
remora, never its end) and that the connection closes. Chunk-size lines are bounded at 4 KiB
both ways (a 5 KiB extension and an endless one from a client; the app's endless one is in
test_12's test_upstream_bad_chunk_mid_body);
`chunked, identity` is 400; HTTP/2.0 and other major versions 505; a target over
limits.max_header_bytes 414; HTTP/0.9 400 at once; `*` only for OPTIONS."""

import socket
import time

import pytest

from helpers import HttpConn, expect_error, http


@pytest.fixture
def limited(remora, upstream):
    return remora(upstream, limits={"max_header_bytes": "4KiB"})


def app_untouched(upstream, before, head_may_pass=False):
    """The app saw no proxied request since before (its stats), or with head_may_pass (a
    body remora refused mid-way: the head went on first) never that request's end."""
    time.sleep(0.1)
    after = upstream.stats()
    if not head_may_pass:
        assert after["proxied_conns_total"] == before["proxied_conns_total"], (before, after)
    assert after["bodies_ended"] == before["bodies_ended"], (before, after)


CASES = {
    "te_chunked_identity": (b"POST / HTTP/1.1\r\nHost: a\r\n"
                            b"Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
                            400, "bad_framing"),
    "te_chunked_then_identity_lines": (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked"
                                       b"\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n",
                                       400, "bad_framing"),
    "te_gzip_alone": (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n",
                      400, "bad_framing"),
    "te_gzip_chunked": (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
                        b"0\r\n\r\n", 501, "unsupported_transfer_encoding"),
    "http_2_0": (b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505, "http_version_not_supported"),
    "http_3_0": (b"GET / HTTP/3.0\r\nHost: a\r\n\r\n", 505, "http_version_not_supported"),
    "http_1_2": (b"GET / HTTP/1.2\r\nHost: a\r\n\r\n", 505, "http_version_not_supported"),
    "http_10_0": (b"GET / HTTP/10.0\r\nHost: a\r\n\r\n", 400, "bad_request"),
    "http_0_9_explicit": (b"GET / HTTP/0.9\r\n", 400, "bad_request"),
    "http_0_9": (b"GET /\r\n", 400, "bad_request"),
    "asterisk_get": (b"GET * HTTP/1.1\r\nHost: a\r\n\r\n", 400, "bad_request"),
    "asterisk_post": (b"POST * HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
                      400, "bad_request"),
    "chunk_ext_5k": (b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"3;x=" + b"a" * 5120 + b"\r\nabc\r\n0\r\n\r\n", 400, "chunk_line_too_long"),
    "chunk_size_zeros_5k": (b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                            + b"0" * 5120 + b"3\r\nabc\r\n0\r\n\r\n", 400, "chunk_line_too_long"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input(proxy, upstream, case):
    raw, status, reason = CASES[case]
    before = upstream.stats()
    expect_error(proxy.port, raw, status, reason, within=1.5)
    app_untouched(upstream, before, head_may_pass=reason == "chunk_line_too_long")
    assert http(proxy.port, "GET", "/echo?still").status == 200


def test_target_over_limit_is_414(limited, upstream):
    before = upstream.stats()
    expect_error(limited.port, b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\nHost: a\r\n\r\n",
           414, "uri_too_long")
    # a long target that fits, with headers pushing the head over: still 431
    expect_error(limited.port, b"GET /" + b"a" * 2000 + b" HTTP/1.1\r\nHost: a\r\nX-A: "
           + b"b" * 3000 + b"\r\n\r\n", 431, "header_too_large")
    app_untouched(upstream, before)


def test_options_asterisk_forwarded(proxy, upstream):
    with HttpConn(proxy.port) as c:
        c.send(b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n")
        r = c.read_response()
        assert r.status == 200, (r, r.body)
        assert r.json()["method"] == "OPTIONS" and r.json()["path"] == "*", r.json()


def test_chunk_line_at_the_bound_passes(proxy):
    """A chunk-size line of exactly 4096 bytes (CRLF included) is accepted."""
    line = b"3;x=" + b"a" * (4096 - 6) + b"\r\n"
    assert len(line) == 4096
    with HttpConn(proxy.port) as c:
        c.send(b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
               + line + b"abc\r\n0\r\n\r\n")
        r = c.read_response()
        assert r.status == 200 and r.json()["body_len"] == 3, (r, r.body)


def endless(port, prefix, total=1 << 20, piece=16384):
    """Sends prefix then an endless chunk extension, up to total bytes; returns how many were
    sent before remora answered (or refused more) and the response."""
    c = HttpConn(port, timeout=5)
    sent = 0
    try:
        c.send(prefix)
        c.sock.settimeout(0.05)
        while sent < total:
            try:
                c.sock.sendall(b"a" * piece)
            except (BrokenPipeError, ConnectionResetError, socket.timeout):
                break
            sent += piece
            try:
                if c.sock.recv(1, socket.MSG_PEEK):
                    break
            except socket.timeout:
                pass
            except ConnectionResetError:
                break
        c.sock.settimeout(5)
        r = c.read_response()
        closed = c.is_closed(wait=3.0)
    finally:
        c.close()
    return sent, r, closed


@pytest.mark.parametrize("first_chunk", [False, True])
def test_endless_chunk_extension(proxy, upstream, first_chunk):
    """Refused long before the MiB; after a first chunk went to the app, the app's request
    is cut, never ended."""
    before = upstream.stats()
    sent, r, closed = endless(proxy.port, b"POST /echo HTTP/1.1\r\nHost: a\r\n"
                              b"Transfer-Encoding: chunked\r\n\r\n"
                              + (b"5\r\nhello\r\n" if first_chunk else b"") + b"3;x=")
    assert r.status == 400 and r.header("x-remora-error") == "chunk_line_too_long", r
    assert closed
    assert sent < (1 << 20), "remora read the whole MiB"
    app_untouched(upstream, before, head_may_pass=True)
    assert http(proxy.port, "GET", "/echo?still").status == 200
