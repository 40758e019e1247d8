# SPDX-License-Identifier: Apache-2.0
"""60: observability: one JSON access-log line per request (per h2 stream, over the protocol
matrix) on stderr with the documented keys, none when log.access_log is false; and /metrics
counts what happened."""

import json
import re
import time

import pytest

from h2raw import RawConn, request_headers
from helpers import UUID4_RE, HttpConn, build_request, free_port, http

KEYS = ("method", "path", "route", "status", "upstream", "bytes_in", "bytes_out",
        "duration_s", "termination", "request_id")


def test_access_log_line_per_request(matrix):
    """One line per request (per stream on h2: the three go at once, pipelined on HTTP/1.1),
    with every key, whatever the protocols."""
    rs = matrix.batch([dict(path=matrix.echo_path + "/a"),
                       dict(method="POST", path="/upload", body=b"z" * 5000),
                       dict(path=matrix.bytes_path(20000))])
    assert [r.status for r in rs] == [200] * 3, rs
    logs = matrix.proxy.access_logs(at_least=3)
    assert len(logs) == 3, logs
    for e in logs:
        for k in KEYS:
            assert k in e, (k, e)
        assert e["msg"] == "access"
        assert e["route"] == "default"
        assert e["upstream"] == matrix.app.addr
        assert e["termination"] == "--"
        assert e["status"] == 200
        assert isinstance(e["bytes_in"], int) and isinstance(e["bytes_out"], int)
        assert isinstance(e["duration_s"], (int, float)) and 0 <= e["duration_s"] < 5
    by_path = {e["path"]: e for e in logs}
    assert sorted(by_path) == sorted([matrix.echo_path + "/a", "/upload",
                                      matrix.bytes_path(20000)]), logs
    assert [by_path[p]["method"] for p in (matrix.echo_path + "/a", "/upload")] == \
        ["GET", "POST"]
    assert by_path["/upload"]["bytes_in"] >= 5000
    if matrix.down == "h1":
        # Not on h2 yet: there the line is written before the response's DATA frames are
        # flushed, so bytes_out falls short (152 bytes in h2c-h1, 16531 in h2c-h2c for this
        # 20000-byte body); a remora bug, reported with issue 12.
        assert by_path[matrix.bytes_path(20000)]["bytes_out"] >= 20000
    assert sorted(e["request_id"] for e in logs) == sorted(r.header("x-request-id") for r in rs)
    if matrix.down == "h1":  # pipelined: answered, and logged, in order
        assert [e["path"] for e in logs] == [matrix.echo_path + "/a", "/upload",
                                             matrix.bytes_path(20000)], logs
        assert [e["request_id"] for e in logs] == [r.header("x-request-id") for r in rs]
    assert all(UUID4_RE.match(e["request_id"]) for e in logs)


def test_access_log_byte_counts_are_downstream_bytes(remora, upstream):
    """bytes_in is what the client sent for the request and bytes_out what the client
    received for it (head and body), whoever produced the response."""
    p = remora(upstream)
    cases = [build_request("GET", "/bytes?n=20000"),
             build_request("POST", "/upload", body=b"q" * 3000),
             build_request("GET", "/nothing", host=None, version="HTTP/1.0"),
             build_request("GET", "/header?name=x-large&size=70000")]  # 502 bad_response
    received = []
    for raw in cases:
        with HttpConn(p.port) as c:
            c.send(raw)
            c.read_response()
            received.append(c.received - len(c.buf))
    logs = p.access_logs(at_least=len(cases))
    assert len(logs) == len(cases), logs
    got = [(e["status"], e["bytes_in"], e["bytes_out"]) for e in logs]
    want = [(s, len(raw), n) for s, raw, n in zip((200, 200, 200, 502), cases, received)]
    assert got == want, "(status, bytes_in, bytes_out) logged %r, on the wire %r" % (got, want)


def test_access_log_client_request_id(remora, upstream):
    p = remora(upstream)
    http(p.port, "GET", "/echo", headers=[("X-Request-Id", "my-id-1")])
    logs = p.access_logs(at_least=1)
    assert logs and logs[0]["request_id"] == "my-id-1"


def test_access_log_duration(remora, upstream):
    p = remora(upstream)
    http(p.port, "GET", "/delay?ms=300")
    e = p.access_logs(at_least=1)[0]
    assert 0.29 <= e["duration_s"] < 2.0, e


def test_access_log_upstream_status_is_normal_completion(remora, upstream):
    p = remora(upstream)
    assert http(p.port, "GET", "/status/500").status == 500
    e = p.access_logs(at_least=1)[0]
    assert e["status"] == 500 and e["termination"] == "--", e


def test_access_log_errors_have_termination_code(remora, upstream):
    dead = free_port()
    p = remora(upstreams=[
        {"name": "app", "endpoints": [upstream.addr], "connect_timeout": "1s",
         "idle_timeout": "2s", "max_connections": 64},
        {"name": "dead", "endpoints": ["127.0.0.1:%d" % dead], "connect_timeout": "1s",
         "idle_timeout": "2s", "max_connections": 64}],
        routes=[{"name": "dead", "match": {"path_prefix": "/dead/"}, "upstream": "dead",
                 "timeout": "5s"},
                {"name": "app", "match": {"path_prefix": "/app/"}, "upstream": "app",
                 "timeout": "5s"}])
    assert http(p.port, "GET", "/dead/x").status == 502
    assert http(p.port, "GET", "/nowhere").status == 404
    logs = p.access_logs(at_least=2)
    assert len(logs) == 2, logs
    by_status = {e["status"]: e for e in logs}
    assert set(by_status) == {502, 404}, logs
    for e in logs:
        assert re.match(r"^[A-Za-z-]{2}$", e["termination"]) and e["termination"] != "--", e
    assert by_status[502]["route"] == "dead"
    assert by_status[502]["upstream"] == "127.0.0.1:%d" % dead


@pytest.mark.parametrize("raw,status,error,term", [
    # a bad head: phase R
    (b"GET /app/x HTTP/1.1\r\nHost: a\r\nBad Name: v\r\n\r\n", 400, "bad_request", "CR"),
    # the head was good, the body's chunk size is not: phase D (issue 17)
    (b"POST /app/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400,
     "bad_framing", "CD"),
    # a refused trailer (headers_with_underscores: reject) comes after the body: phase D
    (b"POST /app/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"1\r\nx\r\n0\r\nX_Bad: v\r\n\r\n", 400, "header_underscore", "CD"),
], ids=["bad_head", "bad_chunk_size", "bad_trailer"])
def test_access_log_termination_phase_of_bad_input(remora, upstream, raw, status, error, term):
    """A client's bad input logs the phase where it was found: R in the request head, D in the
    body or trailers (the table's R is for the head; a chunk-size error is a data error)."""
    p = remora(upstream, limits={"headers_with_underscores": "reject"},
               routes=[{"name": "app", "match": {"path_prefix": "/app/"}, "upstream": "app",
                        "timeout": "5s"}])
    with HttpConn(p.port) as c:
        c.send(raw)
        r = c.read_response()
    assert r.status == status and r.header("x-remora-error") == error, (r, r.body)
    logs = p.access_logs(at_least=1)
    assert len(logs) == 1, logs
    assert (logs[0]["status"], logs[0]["error"], logs[0]["termination"]) == \
        (status, error, term), logs[0]


def test_no_access_log_when_disabled(remora, upstream):
    p = remora(upstream, log={"access_log": False})
    for _ in range(3):
        assert http(p.port, "GET", "/echo").status == 200
    time.sleep(0.3)
    assert [e for e in p.log_lines() if e.get("msg") == "access"] == []


def test_stderr_is_json_lines(remora, upstream):
    p = remora(upstream)
    http(p.port, "GET", "/echo")
    p.access_logs(at_least=1)
    lines = [l for l in p.stderr().splitlines() if l.strip()]
    assert lines
    assert len(p.log_lines()) == len(lines), "non-JSON line on stderr with format: json"


def test_metrics_count_requests(remora, upstream):
    p = remora(upstream)
    for _ in range(3):
        http(p.port, "GET", "/echo")
    text = http(p.admin_port, "GET", "/metrics").body.decode()
    counters = [l for l in text.splitlines()
                if l.startswith("remora_") and "_total" in l.split()[0]]
    assert counters, text[:3000]
    assert any(float(l.split()[-1]) >= 3 for l in counters), text[:3000]


# ---- hostile and over-long values: every line whole, valid JSON, fixed fields present --------

FIXED = ("method", "path", "route", "status", "upstream", "bytes_in", "bytes_out", "duration_s",
         "termination", "request_id", "client")
MARK_RE = re.compile(r"\.\.\.\[truncated from (\d+) bytes\]$")
URI_MAX = 4096    # proxy/log.h REM_LOG_URI_MAX: path (target with query), escaped, marker in
FIELD_MAX = 1024  # REM_LOG_FIELD_MAX: every other string, request_id among them
BIG_LIMITS = {"max_header_bytes": "512KiB"}


def strict_log_entries(p, at_least, timeout=5.0):
    """Every stderr line, each required to be UTF-8 and one JSON object (no reading with
    errors="replace", no skipping); returns the access entries once there are at_least."""
    end = time.monotonic() + timeout
    while True:
        raw = p.log_path.read_bytes()
        lines = [l for l in raw.split(b"\n")[:-1] if l.strip()]  # a last partial line waits
        entries = []
        for l in lines:
            text = l.decode("utf-8")  # raises on invalid UTF-8
            obj = json.loads(text)
            assert isinstance(obj, dict), text[:200]
            assert "dropped_fields" not in obj, text[:300]
            entries.append(obj)
        got = [e for e in entries if e.get("msg") == "access"]
        if len(got) >= at_least or time.monotonic() >= end:
            return got
        time.sleep(0.05)


def assert_fixed(e, status, addr):
    for k in FIXED:
        assert k in e, (k, {k2: str(v)[:80] for k2, v in e.items()})
    assert e["status"] == status and e["route"] == "default" and e["upstream"] == addr, e
    assert e["termination"] == "--" and e["client"].startswith("127.0.0.1"), e


def assert_value(logged, sent, cap):
    """logged is sent when it fits the cap, else a prefix of it with the marker giving the
    original length in bytes."""
    m = MARK_RE.search(logged)
    if len(sent.encode()) <= cap and "\\" not in sent and '"' not in sent:
        assert logged == sent and not m, (logged[:100], len(logged))
        return
    assert m, logged[-100:]
    assert int(m.group(1)) == len(sent.encode()), (m.group(0), len(sent))
    assert sent.startswith(logged[:m.start()]), logged[:100]
    assert len(logged.encode()) <= cap  # escaped in JSON this is what was written
    assert m.start() > cap // 2  # cut near the cap, not far before


@pytest.mark.parametrize("qlen", [3000, 100000])
def test_access_log_long_values_h1(remora, upstream, qlen):
    """A 3,000- and a 100,000-character query string with a long User-Agent, Referer and
    X-Request-Id on HTTP/1.1: the line is whole and valid, the fixed fields are all there,
    the path is logged whole up to 4 KiB and cut inside the string with the marker and its
    original length beyond it (issue 17: the line used to be cut at 2 KiB)."""
    p = remora(upstream, limits=BIG_LIMITS)
    target = "/echo/long?q=" + "".join(chr(ord("a") + i % 26) for i in range(qlen))
    rid = "r" * 3000
    with HttpConn(p.port) as c:
        c.send(build_request("GET", target, headers=[("User-Agent", "U" * 20000),
                                                     ("Referer", "http://x/" + "R" * 20000),
                                                     ("X-Request-Id", rid)]))
        assert c.read_response().status == 200
    (e,) = strict_log_entries(p, at_least=1)
    assert_fixed(e, 200, upstream.addr)
    assert e["method"] == "GET"
    assert_value(e["path"], target, URI_MAX)
    assert_value(e["request_id"], rid, FIELD_MAX)


@pytest.mark.parametrize("qlen", [3000, 60000])
def test_access_log_long_values_h2(remora, upstream, qlen):
    """The same on HTTP/2 (h2c), the :path in HEADERS + CONTINUATION: 60,000 bytes, since
    nghttp2's HPACK decoder refuses a field over 64 KiB (COMPRESSION_ERROR) before remora."""
    p = remora(upstream, limits=BIG_LIMITS)
    target = "/echo/long?q=" + "".join(chr(ord("a") + i % 26) for i in range(qlen))
    rid = "r" * 3000
    with RawConn(p.port) as c:
        sid = c.request(request_headers(target, extra=[("user-agent", "U" * 20000),
                                                       ("x-request-id", rid)]))
        assert c.read_response(sid).status == 200
    (e,) = strict_log_entries(p, at_least=1)
    assert_fixed(e, 200, upstream.addr)
    assert_value(e["path"], target, URI_MAX)
    assert_value(e["request_id"], rid, FIELD_MAX)


# Bytes JSON must escape or cannot carry as they are: quote, backslash, tab, invalid UTF-8 (a
# lone continuation byte, a truncated sequence, an overlong form, a surrogate), next to valid
# multi-byte characters that must pass unchanged. What reaches the log: llhttp refuses bytes
# >= 0x80 in an HTTP/1.1 target, and other controls than tab are refused in values on both
# protocols (400, RST_STREAM): tests/unit/test_log.c covers those.
HOSTILE = b'"q\\b\tc\x80e\xc3f\xc0\xafg\xed\xa0\x80h\xc3\xa9i\xf0\x9f\x90\x9fj'
HOSTILE_LOGGED = '"q\\b\tc\ufffde\ufffdf\ufffd\ufffdg\ufffd\ufffd\ufffdh\u00e9i\U0001f41fj'


def assert_cut(logged, sent_logged, orig_len, cap):
    """A value over its cap: a prefix of what it would read whole (so the cut fell between
    characters, never inside an escape or a UTF-8 sequence), then the marker with the original
    length; escaped as written it fits the cap."""
    m = MARK_RE.search(logged)
    assert m and int(m.group(1)) == orig_len, logged[-80:]
    assert sent_logged.startswith(logged[:m.start()]), logged[:80]
    escaped = json.dumps(logged, ensure_ascii=False)[1:-1]
    assert cap // 2 < len(escaped.encode()) <= cap, len(escaped.encode())


def test_access_log_escapes_hostile_bytes_h1(remora, upstream):
    """Over a raw HTTP/1.1 socket: a target with quotes and backslashes (short, and so long
    that escaped it is over the cap) and an X-Request-Id with HOSTILE: each line is valid UTF-8
    JSON, invalid bytes become U+FFFD, everything else is logged as sent."""
    p = remora(upstream)
    short = b'/echo/esc?x="q\\b'
    long_ = b"/echo/esc?x=" + b'"\\' * 3000
    for target in (short, long_):
        with HttpConn(p.port) as c:
            c.send(b"GET " + target + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Request-Id: " +
                   HOSTILE + b"\r\n\r\n")
            assert c.read_response().status == 200
    logs = strict_log_entries(p, at_least=2)
    assert len(logs) == 2, logs
    for e in logs:
        assert_fixed(e, 200, upstream.addr)
        assert e["request_id"] == HOSTILE_LOGGED, e["request_id"]
    assert logs[0]["path"] == short.decode()
    assert_cut(logs[1]["path"], long_.decode(), len(long_), URI_MAX)


def test_access_log_escapes_hostile_bytes_h2(remora, upstream):
    """The same on HTTP/2, where the :path may carry invalid UTF-8 too; values over the cap
    are cut at a character boundary."""
    p = remora(upstream)
    notab = HOSTILE.replace(b"\t", b"")
    notab_logged = HOSTILE_LOGGED.replace("\t", "")
    short = b"/echo/h2esc?x=" + notab
    long_ = b"/echo/h2long?x=" + notab * 300
    long_rid = HOSTILE * 200
    with RawConn(p.port) as c:
        s1 = c.request(request_headers(short, extra=[(b"x-request-id", HOSTILE)]))
        assert c.read_response(s1).status == 200
        s2 = c.request(request_headers(long_, extra=[(b"x-request-id", long_rid)]))
        assert c.read_response(s2).status == 200
    logs = strict_log_entries(p, at_least=2)
    assert len(logs) == 2, logs
    for e in logs:
        assert_fixed(e, 200, upstream.addr)
    e1, e2 = sorted(logs, key=lambda e: len(e["path"]))
    assert e1["path"] == "/echo/h2esc?x=" + notab_logged, e1["path"]
    assert e1["request_id"] == HOSTILE_LOGGED, e1["request_id"]
    assert_cut(e2["path"], "/echo/h2long?x=" + notab_logged * 300, len(long_), URI_MAX)
    assert_cut(e2["request_id"], HOSTILE_LOGGED * 200, len(long_rid), FIELD_MAX)


def test_text_format_lines_are_whole(remora, upstream):
    """log.format text: one line per request however long or hostile its values, with the
    fixed fields, and no raw control byte (a newline in a value would split the line)."""
    p = remora(upstream, log={"format": "text"}, limits=BIG_LIMITS)
    target = "/echo/t?q=" + "z" * 100000
    with HttpConn(p.port) as c:
        c.send(build_request("GET", target, headers=[("X-Request-Id", "a\tb\"c")]))
        assert c.read_response().status == 200
    end = time.monotonic() + 3
    while time.monotonic() < end:
        lines = [l for l in p.log_path.read_bytes().split(b"\n") if b" access" in l]
        if lines:
            break
        time.sleep(0.05)
    assert len(lines) == 1, lines
    line = lines[0].decode("utf-8")
    assert not re.search(r"[\x00-\x1f\x7f]", line), line[-300:]
    for k in ("route", "status", "upstream", "termination", "request_id", "client"):
        assert (" %s=" % k) in line, (k, line[-600:])
    assert " status=200" in line and ' request_id="a\\tb\\"c"' in line, line[-600:]
    assert "...[truncated from %d bytes]" % len(target) in line
    assert len(line) < 16384
