# SPDX-License-Identifier: Apache-2.0
"""60: observability: one JSON access-log line per request (per h2 stream, over the protocol
matrix) on stderr with the documented keys, none when log.access_log is false; and /metrics
counts what happened."""

import re
import time

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
