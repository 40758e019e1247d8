# SPDX-License-Identifier: Apache-2.0
"""20: what only HTTP/2 downstream has (h2c with prior knowledge on the ordinary listener,
HTTP/1.1 test upstream): curl, nghttp and h2load as clients, the SETTINGS remora advertises,
flow control on request bodies, GOAWAY when remora closes an idle connection and the client's
own GOAWAY, Host instead of :authority, an HTTP/1.1 app's close-delimited and 1xx responses on
a stream, large responses against the client's windows, client RST_STREAM, many concurrent
streams on one connection, HTTP/1.1 `Upgrade: h2c` answered as HTTP/1.1, and the per-protocol
stream metrics. Header mapping, bodies, trailers, HEAD/204/304, remora's own errors and limits
and access-log lines on h2 streams run over the protocol matrix (test_23_matrix.py,
test_60_access_log.py)."""

import hashlib
import json
import re
import subprocess
import threading
import time

from h2util import ErrorCodes, H2Client, H2Timeout, h2_get, remora_h2
from helpers import MIB, HttpConn, curl, http, metrics, pattern, pattern_sha256, wait_for


def app_headers(r):
    """The request headers upstream.py saw (from its /echo JSON), as [(name, value)]."""
    return [(k, v) for k, v in r.json()["headers"]]


def app_header_all(r, name):
    return [v for k, v in app_headers(r) if k.lower() == name.lower()]


def req_counts(m, name="remora_requests_total"):
    return {(l.get("route"), l.get("code")): v for l, v in m.series(name)}


def delta(after, before):
    keys = set(after) | set(before)
    d = {k: after.get(k, 0) - before.get(k, 0) for k in keys}
    return {k: v for k, v in d.items() if v}


# ---- clients: curl, nghttp ------------------------------------------------------------------

def test_curl_prior_knowledge_get(proxy):
    p = curl("--http2-prior-knowledge", "-D", "-", "-w", "\n%{http_version}",
             "http://127.0.0.1:%d/echo?q=1" % proxy.port)
    assert p.returncode == 0, p.stderr
    out = p.stdout.decode()
    head, _, rest = out.partition("\r\n\r\n")
    assert head.startswith("HTTP/2 200"), out
    body, _, version = rest.rpartition("\n")
    assert version == "2", out
    doc = json.loads(body)
    assert doc["method"] == "GET" and doc["path"] == "/echo?q=1", doc
    assert doc["version"] == "HTTP/1.1", "the h1 upstream is spoken to in HTTP/1.1: %r" % doc


def test_curl_prior_knowledge_post(proxy, tmp_path):
    body = pattern(0, 300000)
    f = tmp_path / "body"
    f.write_bytes(body)
    p = curl("--http2-prior-knowledge", "--data-binary", "@%s" % f, "-w", "\n%{http_version}",
             "http://127.0.0.1:%d/upload" % proxy.port)
    assert p.returncode == 0, p.stderr
    text, _, version = p.stdout.decode().rpartition("\n")
    assert version == "2"
    assert json.loads(text) == {"body_len": 300000,
                                "body_sha256": hashlib.sha256(body).hexdigest()}


def nghttp(*args, timeout=20):
    return subprocess.run(["nghttp"] + list(args), capture_output=True, timeout=timeout)


def settings_frames(out):
    """[{name: value}] of every SETTINGS frame nghttp -v received (ACKs excluded)."""
    frames = []
    cur = None
    for line in out.splitlines():
        if "recv SETTINGS frame" in line:
            cur = {} if "flags=0x00" in line else None
            if cur is not None:
                frames.append(cur)
            continue
        m = re.match(r"^\s+\[(SETTINGS_[A-Z_]+)\(0x[0-9a-f]+\):(\d+)\]", line)
        if m and cur is not None:
            cur[m.group(1)] = int(m.group(2))
        elif not line.startswith(" "):
            cur = None
    return frames


def test_nghttp_settings_default(proxy):
    out = nghttp("-nv", "http://127.0.0.1:%d/echo" % proxy.port)
    text = out.stdout.decode()
    assert out.returncode == 0, (text, out.stderr)
    frames = settings_frames(text)
    assert frames, text
    first = frames[0]
    assert first.get("SETTINGS_MAX_CONCURRENT_STREAMS") == 100, text
    # 65535 is the protocol default: sending it is optional
    assert first.get("SETTINGS_INITIAL_WINDOW_SIZE", 65535) == 65535, text
    assert first.get("SETTINGS_ENABLE_PUSH", 0) == 0, text
    assert re.search(r"recv \(stream_id=\d+\) :status: 200", text), text


def test_nghttp_settings_configured_and_window_updates(remora, upstream):
    """initial_window 256KiB is advertised; a 1 MiB upload (four times the window, sixteen
    times the connection window) only completes because remora sends WINDOW_UPDATEs as the
    upstream takes the bytes."""
    p = remora_h2(remora, upstream, http2={"max_concurrent_streams": 100,
                                           "initial_window": "256KiB"})
    body = pattern(0, MIB)
    path = p.cfg_path.parent / "up.bin"
    path.write_bytes(body)
    out = nghttp("-v", "-d", str(path), "http://127.0.0.1:%d/upload" % p.port)
    text = out.stdout.decode(errors="replace")
    assert out.returncode == 0, (text[-3000:], out.stderr)
    first = settings_frames(text)[0]
    assert first.get("SETTINGS_MAX_CONCURRENT_STREAMS") == 100, text[:3000]
    assert first.get("SETTINGS_INITIAL_WINDOW_SIZE") == 256 * 1024, text[:3000]
    sid = re.search(r"send HEADERS frame <[^>]*stream_id=(\d+)>", text).group(1)
    assert re.search(r"recv WINDOW_UPDATE frame <[^>]*stream_id=%s>" % sid, text), \
        "no stream WINDOW_UPDATE from remora: " + text[-3000:]
    assert re.search(r"recv WINDOW_UPDATE frame <[^>]*stream_id=0>", text), \
        "no connection WINDOW_UPDATE from remora: " + text[-3000:]
    assert '"body_len": %d' % MIB in text and hashlib.sha256(body).hexdigest() in text, \
        text[-2000:]


def test_goaway_when_remora_closes_idle_connection(remora, upstream):
    p = remora(upstream, limits={"client_idle_timeout": "500ms"})
    g0 = metrics(p.admin_port).value("remora_http2_goaway_total", 0, side="downstream",
                                     reason="no_error")
    with H2Client(p.port) as c:
        r = c.get("/echo")
        assert r.status == 200 and r.ended
        t0 = time.monotonic()
        assert c.wait_closed(timeout=4), "remora kept the idle h2 connection open"
        took = time.monotonic() - t0
        assert c.goaway is not None, "connection closed without a GOAWAY"
        assert c.goaway.error_code == ErrorCodes.NO_ERROR, c.goaway
        assert c.goaway.last_stream_id == 1, c.goaway
        assert 0.2 < took < 3, took
    assert wait_for(lambda: metrics(p.admin_port).value(
        "remora_http2_goaway_total", 0, side="downstream", reason="no_error") - g0 == 1,
        timeout=2), \
        metrics(p.admin_port).series("remora_http2_goaway_total")


def test_client_goaway_then_remora_finishes_open_stream(proxy):
    """The client's own GOAWAY (no server-initiated streams) does not cut its open streams."""
    with H2Client(proxy.port) as c:
        sid = c.request("GET", "/delay?ms=300")
        c.send_goaway()
        r = c.response(sid)
        assert r.status == 200 and r.body == b"ok", r


# ---- request and response mapping -----------------------------------------------------------

def test_host_header_without_authority(proxy):
    """RFC 9113 8.3.1: a request may carry Host instead of :authority."""
    r = h2_get(proxy.port, "/echo", authority=None, headers=[("host", "h.example")])
    assert r.status == 200, r
    assert app_header_all(r, "host") == ["h.example"], r.json()["headers"]


def test_close_delimited_and_1xx_responses_of_an_h1_app(proxy):
    """What only an HTTP/1.1 app sends: a close-delimited body (HTTP/1.0) ends the h2 stream
    with END_STREAM, and 1xx responses before the final one leave it intact."""
    with H2Client(proxy.port) as c:
        r = c.get("/http10")
        assert r.status == 200 and r.ended and r.body == b"hello10", r
        r = c.get("/early-hints")
        assert r.status == 200 and r.ended, r


def test_large_response_byte_exact(proxy):
    """Content-Length and chunked bodies several times the client's 64 KiB windows arrive
    whole and end with END_STREAM (repeated: the end of the body races the windows)."""
    for i in range(8):
        with H2Client(proxy.port, timeout=5) as c:
            sid = c.request("GET", "/bytes?n=%d" % (8 * MIB))
            try:
                r = c.response(sid, timeout=5)
            except H2Timeout:
                r = c.streams[sid]
            assert r.status == 200 and r.body_len == 8 * MIB, (i, r)
            assert r.ended, "run %d: all %d bytes arrived but no END_STREAM within 5 s " \
                "(client windows open): %r" % (i, r.body_len, r)
            assert r.sha256() == pattern_sha256(8 * MIB)
            r = c.get("/chunked?n=%d&chunk=65536" % (3 * MIB), timeout=5)
            assert r.ended and r.sha256() == pattern_sha256(3 * MIB)


def test_client_reset_mid_response_keeps_connection(proxy, upstream):
    m0 = metrics(proxy.admin_port)
    with H2Client(proxy.port) as c:
        sid = c.request("GET", "/bytes?n=%d" % (50 * MIB))
        c.wait(lambda: c.streams[sid].status is not None)
        c.reset(sid, ErrorCodes.CANCEL)
        for i in range(3):
            assert c.get("/echo?i=%d" % i).json()["path"] == "/echo?i=%d" % i
    # the upconn of the cancelled response is not kept half-read in the pool
    assert wait_for(lambda: upstream.stats()["conns_open"] <= 2, timeout=3), upstream.stats()
    assert wait_for(lambda: metrics(proxy.admin_port).value(
        "remora_http2_resets_total", 0, side="downstream", reason="cancel") -
        m0.value("remora_http2_resets_total", 0, side="downstream", reason="cancel") == 1,
        timeout=2), metrics(proxy.admin_port).series("remora_http2_resets_total")


# ---- concurrency ----------------------------------------------------------------------------

def test_many_concurrent_streams_on_one_connection(proxy):
    with H2Client(proxy.port, timeout=10) as c:
        t0 = time.monotonic()
        sids = [c.request("GET", "/delay?ms=400&i=%d" % i) for i in range(100)]
        rs = c.responses(sids, timeout=10)
        took = time.monotonic() - t0
    assert [r.status for r in rs] == [200] * 100, [r for r in rs if r.status != 200][:3]
    assert all(r.body == b"ok" and r.ended for r in rs)
    # served side by side, not one after another (100 x 0.4 s)
    assert took < 4, took


def test_concurrent_streams_keep_their_own_bodies(proxy):
    bodies = [pattern(i * 7, 1000 + i * 997) for i in range(40)]
    with H2Client(proxy.port, timeout=10) as c:
        sids = [c.request("POST", "/echo?i=%d" % i, body=b,
                          headers=[("content-length", str(len(b)))])
                for i, b in enumerate(bodies)]
        rs = c.responses(sids, timeout=10)
    for i, (r, b) in enumerate(zip(rs, bodies)):
        doc = r.json()
        assert doc["path"] == "/echo?i=%d" % i
        assert doc["body_len"] == len(b) and doc["body_sha256"] == hashlib.sha256(b).hexdigest()


def test_h2_and_http1_clients_side_by_side(proxy):
    errors = []

    def h1():
        try:
            with HttpConn(proxy.port) as c:
                for i in range(50):
                    c.request("GET", "/echo?h1=%d" % i)
                    assert c.read_response().json()["path"] == "/echo?h1=%d" % i
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(repr(e))

    t = threading.Thread(target=h1)
    t.start()
    with H2Client(proxy.port) as c:
        for i in range(50):
            assert c.get("/echo?h2=%d" % i).json()["path"] == "/echo?h2=%d" % i
    t.join(10)
    assert not errors, errors


def test_h2load(proxy):
    out = subprocess.run(["h2load", "-c", "16", "-m", "10", "-n", "20000",
                          "http://127.0.0.1:%d/bytes?n=100" % proxy.port],
                         capture_output=True, timeout=60)
    text = out.stdout.decode()
    print(text[-1200:])
    assert out.returncode == 0, (text, out.stderr)
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                  r"(\d+) failed, (\d+) errored, (\d+) timeout", text)
    assert m, text
    total, started, done, ok, failed, errored, timeout = map(int, m.groups())
    assert (done, ok, failed, errored, timeout) == (20000, 20000, 0, 0, 0), text
    assert re.search(r"status codes: 20000 2xx", text), text
    assert re.search(r"Application protocol: h2c", text), text
    assert proxy.alive()


# ---- HTTP/1.1 Upgrade: h2c is ignored -------------------------------------------------------

UPGRADE = [("Connection", "Upgrade, HTTP2-Settings"), ("Upgrade", "h2c"),
           ("HTTP2-Settings", "AAMAAABkAARAAAAAAAIAAAAA")]


def test_http1_upgrade_h2c_answered_as_http1(proxy):
    with HttpConn(proxy.port) as c:
        c.request("GET", "/echo?up=1", headers=UPGRADE)
        r = c.read_response()
        assert r.version == "HTTP/1.1" and r.status == 200, r
        assert r.header("upgrade") is None, r.headers
        doc = r.json()
        assert doc["path"] == "/echo?up=1"
        seen = [k.lower() for k, _ in doc["headers"]]
        assert "upgrade" not in seen and "http2-settings" not in seen, doc["headers"]
    body = pattern(0, 5000)
    with HttpConn(proxy.port) as c:
        c.request("POST", "/echo?up=2", headers=UPGRADE, body=body)
        r = c.read_response()
        assert r.version == "HTTP/1.1" and r.status == 200, r
        assert r.json()["body_len"] == 5000


def test_http1_upgrade_h2c_connection_stays_http1(proxy):
    """After an ignored Upgrade: h2c the connection is still an HTTP/1.1 keep-alive
    connection: the next requests on it are parsed and served."""
    with HttpConn(proxy.port) as c:
        c.request("GET", "/echo?up=1", headers=UPGRADE)
        r = c.read_response()
        assert r.status == 200, r
        c.request("GET", "/echo?up=2")
        r = c.read_response()
        assert r.status == 200 and r.json()["path"] == "/echo?up=2", (r, r.body)
        c.request("POST", "/echo?up=3", headers=UPGRADE, body=b"x" * 100)
        r = c.read_response()
        assert r.status == 200 and r.json()["body_len"] == 100, (r, r.body)


# ---- metrics --------------------------------------------------------------------------------

def test_metrics_count_h2_streams(remora, upstream):
    p = remora(upstream, routes=[
        {"name": "api", "match": {"path_prefix": "/api"}, "upstream": "app", "timeout": "5s"}])
    m0 = metrics(p.admin_port)
    before = req_counts(m0)
    before_h = req_counts(m0, "remora_request_duration_seconds_count")
    h2c0 = m0.value("remora_downstream_streams_total", 0, proto="h2c")
    h10 = m0.value("remora_downstream_streams_total", 0, proto="http1")
    with H2Client(p.port) as c:
        sids = [c.request("GET", "/api/x?i=%d" % i) for i in range(7)]
        sids += [c.request("GET", "/nope?i=%d" % i) for i in range(2)]
        rs = c.responses(sids)
    assert [r.status for r in rs] == [200] * 7 + [404] * 2
    for i in range(3):
        assert http(p.port, "GET", "/api/h1?i=%d" % i).status == 200
    want = {("api", "2xx"): 10, ("", "4xx"): 2}

    def reached():
        return delta(req_counts(metrics(p.admin_port)), before) == want

    wait_for(reached, timeout=3)
    time.sleep(0.2)
    m = metrics(p.admin_port)
    assert delta(req_counts(m), before) == want
    assert delta(req_counts(m, "remora_request_duration_seconds_count"), before_h) == want
    assert m.types.get("remora_downstream_streams_total") == "counter", m.types
    assert m.value("remora_downstream_streams_total", 0, proto="h2c") - h2c0 == 9, \
        m.series("remora_downstream_streams_total")
    assert m.value("remora_downstream_streams_total", 0, proto="http1") - h10 == 3, \
        m.series("remora_downstream_streams_total")


def test_streams_active_gauge(proxy):
    m0 = metrics(proxy.admin_port)
    assert m0.types.get("remora_downstream_streams_active") == "gauge", m0.types
    assert m0.value("remora_downstream_streams_active") == 0
    with H2Client(proxy.port) as c:
        sids = [c.request("GET", "/delay?ms=1500&i=%d" % i) for i in range(5)]
        assert wait_for(lambda: metrics(proxy.admin_port).value(
            "remora_downstream_streams_active") == 5, timeout=1.2), \
            metrics(proxy.admin_port).series("remora_downstream_streams_active")
        assert metrics(proxy.admin_port).value("remora_downstream_connections") == 1
        rs = c.responses(sids)
        assert [r.status for r in rs] == [200] * 5
        assert wait_for(lambda: metrics(proxy.admin_port).value(
            "remora_downstream_streams_active") == 0, timeout=2)
