# SPDX-License-Identifier: Apache-2.0
"""90: one test per fixed bug that no level above pins down."""
import time

import h2raw
from h2util import H2Response
from helpers import RawApp, read_half_closed_slowly, recv_head

BIG_TAIL = 8 * 1024 * 1024


def _h2_post(port, path, body, frame=5000):
    c = h2raw.RawConn(port)
    try:
        sid = c.new_sid()
        c.streams[sid] = H2Response(sid)
        out = h2raw.headers_frames(sid, c.encoder.encode(h2raw.request_headers(path, method="POST")),
                                   end_stream=False)
        off = 0
        while off < len(body):
            k = min(frame, len(body) - off)
            out += h2raw.data_frame(sid, body[off:off + k], end_stream=off + k == len(body))
            off += k
        c.send(out)  # all of it before the upconn is even connected
        return c.read_response(sid, timeout=10)
    finally:
        c.close()


def _hdr(resp, name):
    for k, v in resp.headers:
        k = k.decode() if isinstance(k, bytes) else k
        if k.lower() == name:
            return v.decode() if isinstance(v, bytes) else v
    return None


def test_h2c_upload_end_not_sent_before_its_last_bytes(remora, h2_upstream):
    """h2c -> h2c with buffer_bytes below one DATA frame: the data provider gave the stream
    room mid-call, the held-back body and its end were queued at once, and END_STREAM went out
    with bytes still queued, so the app got 8144 of 10500 bytes and answered 200 (403b0c2)."""
    p = remora(h2_upstream, upstream_opts={"protocol": "h2c"}, limits={"buffer_bytes": "4KiB"})
    for n in (10500, 11000, 12000):
        body = b"".join(bytes([65 + i]) * 5000 for i in range(2)) + b"z" * (n - 10000)
        r = _h2_post(p.port, "/echo", body)
        assert r.status == 200
        assert _hdr(r, "x-body-len") == str(n), r


def _respond_big(close):
    """An app that answers the first request head with BIG_TAIL bytes (Content-Length), then
    closes at once (close) or holds the connection a while."""
    def handler(c, app):
        if recv_head(c) is None:
            return
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % BIG_TAIL + b"x" * BIG_TAIL)
        if not close:
            time.sleep(5)
    return handler


def test_half_closed_client_gets_the_whole_response(remora):
    """A client that half-closes after its request and reads slowly got a reset instead of the
    last megabytes: the close after the response reset (SO_LINGER 0) a conn whose client had
    sent its FIN, dropping what the kernel still held for it (review of 947bc69)."""
    with RawApp(_respond_big(close=False)) as app:
        p = remora(endpoints=[app.addr])
        got, err = read_half_closed_slowly(p.port, b"GET /big HTTP/1.1\r\nHost: a\r\n\r\n")
    assert err is None, err
    head, _, body = got.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and len(body) == BIG_TAIL, (head, len(body))



def test_h2_pri_method_and_non_absolute_path_refused(remora, upstream):
    """h2c requests whose HTTP/1.1 request line no app would parse reached the app (found by
    fuzz_h2_down): `:method PRI` as "PRI /x HTTP/1.1", and under a :scheme nghttp2 does not
    check (not http/https) a :path that is no absolute path ("\\xff", or "*" on a GET). Each
    gets 400 bad_request, the app receives nothing, the conn goes on."""
    p = remora(upstream)
    before = upstream.stats()["requests"]
    cases = [("PRI", "http", "/x"), ("TRACE", "ftp", "\xff"), ("GET", "ftp", "*"),
             ("GET", "ftp", "ab")]
    c = h2raw.RawConn(p.port)
    try:
        for method, scheme, path in cases:
            sid = c.new_sid()
            c.streams[sid] = H2Response(sid)
            block = c.encoder.encode(h2raw.request_headers(path, method=method, scheme=scheme))
            c.send(h2raw.headers_frames(sid, block))
            r = c.read_response(sid, timeout=5)
            assert r.status == 400, (method, scheme, path, r)
            assert _hdr(r, "x-remora-error") == "bad_request", r
        ok = c.get("/ok")  # the conn goes on
        assert ok.status == 200, ok
    finally:
        c.close()
    assert upstream.stats()["requests"] == before + 2  # /ok, and this /_stats itself
