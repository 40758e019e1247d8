# SPDX-License-Identifier: Apache-2.0
"""90: one test per fixed bug that no level above pins down."""
import h2raw
from h2util import H2Response


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
