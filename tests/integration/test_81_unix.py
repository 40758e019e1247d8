# SPDX-License-Identifier: Apache-2.0
"""81: Unix-domain sockets. Upstream endpoints `unix:/path` and `unix:@name` (abstract) for
http1 and h2c apps: keep-alive pooling, chunked bodies both ways (test_10_h1.py and
test_50_backpressure.py run their tests over a Unix socket too: 100 MiB each way in bounded
memory), Host / :authority "localhost" when the client sent none, connect_refused for a
missing or dead socket and connect_failed (not a hang) for a full backlog, health checks over
the socket flipping /readyz, the endpoint as written in the access log and /config, and
`--check` errors. Listeners on `unix:/path` (curl --unix-socket): no X-Forwarded-For entry
and an empty access-log `client`, `mode`, a stale socket file replaced, a regular file never
clobbered, the file removed at exit, and a reload adding and removing a Unix listener.

Socket paths live in conftest's `sockdir`: a short directory under /tmp, removed after each
test."""

import hashlib
import json
import os
import socket
import stat
import time

import pytest

from helpers import (chunked_body, curl, default_config, free_port, http, metrics, pattern,
                     stop_process, wait_for)
from reloadutil import ConfDir, sighup, wait_state


def unix_cfg(port, admin_port, endpoints, listeners=(), workers=1, upstream_opts=None,
             timeout="15s"):
    cfg = default_config(port, admin_port, endpoints, workers=workers,
                         upstream_opts=upstream_opts)
    cfg["listeners"] += list(listeners)
    cfg["routes"][0]["timeout"] = timeout
    return cfg


def start(remora, endpoints, listeners=(), ready=True, **kw):
    port, admin_port = free_port(), free_port()
    while admin_port == port:
        admin_port = free_port()
    return remora(config=unix_cfg(port, admin_port, endpoints, listeners, **kw), ready=ready)


class UnixConn:
    """A raw HTTP/1.1 client over a Unix socket: enough for the listener tests."""

    def __init__(self, path, timeout=5.0):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)

    def close(self):
        self.sock.close()


def get(port, target, headers=None, **kw):
    return http(port, "GET", target, headers=headers, **kw)


# ---- upstream endpoints: HTTP/1.1 -------------------------------------------------------------

def test_keepalive_pooling_over_unix(remora, upstream_factory, sockdir):
    """Twenty requests from separate client connections use one upstream connection, and the
    app sees Host localhost when the client sent none (HTTP/1.0)."""
    path = os.path.join(sockdir, "app.sock")
    up = upstream_factory(unix=path)
    p = start(remora, ["unix:" + path])
    conns = set()
    for _ in range(20):
        r = get(p.port, "/echo")
        assert r.status == 200, r
        conns.add(r.header("x-upstream-conn"))
    assert len(conns) == 1, conns
    st = up.stats()
    assert st["proxied_conns_total"] == 1, st
    r = http(p.port, "GET", "/echo", version="HTTP/1.0", host=None)
    assert r.status == 200, r
    hosts = [v for k, v in r.json()["headers"] if k.lower() == "host"]
    assert hosts == ["localhost"], r.json()["headers"]


def test_chunked_both_ways_over_unix(remora, upstream_factory, sockdir):
    path = os.path.join(sockdir, "app.sock")
    upstream_factory(unix=path)
    p = start(remora, ["unix:" + path])
    data = pattern(0, 300000)
    r = http(p.port, "POST", "/echo", headers=[("Transfer-Encoding", "chunked")],
             body=chunked_body(data, chunk=7000))
    assert r.status == 200, r
    doc = r.json()
    assert doc["body_chunked"] is True
    assert doc["body_len"] == len(data)
    assert doc["body_sha256"] == hashlib.sha256(data).hexdigest()
    r = get(p.port, "/chunked?n=300000&chunk=5000")
    assert r.status == 200 and r.complete, r
    assert r.chunked
    assert r.body == pattern(0, 300000)


def test_abstract_socket_endpoint(remora, upstream_factory, sockdir):
    name = "@remora-test-%d-%d" % (os.getpid(), time.monotonic_ns())
    up = upstream_factory(unix=name)
    p = start(remora, ["unix:" + name])
    for _ in range(3):
        r = get(p.port, "/echo")
        assert r.status == 200, r
    assert up.stats()["proxied_conns_total"] == 1
    entries = p.access_logs(at_least=3)
    assert entries and all(e["upstream"] == "unix:" + name for e in entries), entries


def test_mixed_unix_and_tcp_endpoints(remora, upstream_factory, sockdir):
    path = os.path.join(sockdir, "a.sock")
    upstream_factory(name="u", unix=path)
    t = upstream_factory(name="t")
    p = start(remora, ["unix:" + path, t.addr])
    names = {get(p.port, "/echo").header("x-upstream-name") for _ in range(6)}
    assert names == {"u", "t"}, names


# ---- upstream endpoints: h2c -------------------------------------------------------------------

def test_h2c_upstream_over_unix(remora, h2_upstream_factory, sockdir):
    path = os.path.join(sockdir, "h2.sock")
    up = h2_upstream_factory(unix=path)
    p = start(remora, ["unix:" + path], upstream_opts={"protocol": "h2c"})
    conns = set()
    for _ in range(5):
        r = get(p.port, "/echo")
        assert r.status == 200, r
        conns.add(r.header("x-upstream-conn"))
    assert len(conns) == 1, conns
    # No Host from the client (HTTP/1.0): :authority is localhost, not the socket path.
    r = http(p.port, "GET", "/echo", version="HTTP/1.0", host=None)
    assert r.status == 200, r
    assert r.header("x-seen-authority") == "localhost", r
    out = curl("--http2-prior-knowledge", "-o", "/dev/null", "-w", "%{http_code}",
               "http://127.0.0.1:%d/echo" % p.port)
    assert out.stdout == b"200", out
    assert up.proc.poll() is None


# ---- connect errors ----------------------------------------------------------------------------

def connfail(p, reason):
    return metrics(p.admin_port).value("remora_upstream_connect_failures_total",
                                       upstream="app", reason=reason)


def test_missing_socket_file_is_connect_refused(remora, sockdir):
    p = start(remora, ["unix:" + os.path.join(sockdir, "missing.sock")])
    t0 = time.monotonic()
    r = get(p.port, "/")
    assert r.status == 502, r
    assert r.header("x-remora-error") == "connect_refused"
    assert time.monotonic() - t0 < 0.5
    assert connfail(p, "refused") == 1


def test_dead_socket_is_connect_refused(remora, sockdir):
    """A socket file nobody listens on (the app died): ECONNREFUSED."""
    path = os.path.join(sockdir, "dead.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    s.close()
    p = start(remora, ["unix:" + path])
    r = get(p.port, "/")
    assert r.status == 502 and r.header("x-remora-error") == "connect_refused", r


def test_full_backlog_is_connect_failed_not_a_hang(remora, sockdir):
    """A non-blocking connect to a Unix listener whose backlog is full fails with EAGAIN at
    once: 502 connect_failed well before connect_timeout, never a hang."""
    path = os.path.join(sockdir, "full.sock")
    lsn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    lsn.bind(path)
    lsn.listen(0)
    fillers = []
    try:
        for _ in range(64):
            c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            c.setblocking(False)
            fillers.append(c)
            try:
                c.connect(path)
            except BlockingIOError:
                break
        else:
            pytest.fail("the backlog never filled")
        p = start(remora, ["unix:" + path], upstream_opts={"connect_timeout": "5s"})
        t0 = time.monotonic()
        r = get(p.port, "/", timeout=10)
        took = time.monotonic() - t0
        assert r.status == 502 and r.header("x-remora-error") == "connect_failed", r
        assert took < 1.0, took
        assert connfail(p, "error") == 1
    finally:
        for c in fillers:
            c.close()
        lsn.close()


# ---- health checks, access log, /config ------------------------------------------------------

def readyz(p):
    try:
        return http(p.admin_port, "GET", "/readyz", timeout=2)
    except OSError:  # not listening yet
        return None


def readyz_is(p, status, text=b""):
    r = readyz(p)
    return r is not None and r.status == status and text in r.body


def test_health_check_over_unix_flips_readyz(remora, upstream_factory, sockdir):
    path = os.path.join(sockdir, "app.sock")
    up = upstream_factory(unix=path)
    p = start(remora, ["unix:" + path], upstream_opts={
        "health_check": {"path": "/ready", "interval": "100ms", "timeout": "500ms", "rise": 1,
                         "fall": 1}})
    assert wait_for(lambda: readyz_is(p, 200), 3.0)
    before = up.stats()["ready_checks"]
    up.set_ready(503)
    assert wait_for(lambda: readyz_is(p, 503, b"HTTP 503"), 3.0), readyz(p)
    up.set_ready(200)
    assert wait_for(lambda: readyz_is(p, 200), 3.0)
    assert up.stats()["ready_checks"] > before


def test_health_check_missing_socket_is_unready(remora, sockdir, tmp_path):
    path = os.path.join(sockdir, "none.sock")
    p = start(remora, ["unix:" + path], ready=False, upstream_opts={
        "health_check": {"path": "/ready", "interval": "100ms", "timeout": "500ms"}})
    assert wait_for(lambda: readyz_is(p, 503, b"connect failed"), 3.0), readyz(p)


def test_endpoint_label_in_access_log_config_and_metrics(remora, upstream_factory, sockdir):
    path = os.path.join(sockdir, "app.sock")
    upstream_factory(unix=path)
    p = start(remora, ["unix:" + path])
    assert get(p.port, "/echo").status == 200
    entries = p.access_logs(at_least=1)
    assert entries[-1]["upstream"] == "unix:" + path, entries[-1]
    doc = json.loads(http(p.admin_port, "GET", "/config").body)
    assert doc["upstreams"][0]["endpoints"] == ["unix:" + path], doc["upstreams"]
    m = metrics(p.admin_port)
    assert m.value("remora_upstream_endpoints", upstream="app") == 1
    assert m.total("remora_upstream_connections", upstream="app") == 1


# ---- --check ---------------------------------------------------------------------------------

def test_check_rejects_bad_unix_addresses(run_remora, tmp_path):
    long_path = "/" + "a" * 107
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(
        'listeners:\n'
        '  - {name: a, address: "unix:run/r.sock"}\n'
        '  - {name: b, address: "unix:%s"}\n'
        'upstreams:\n'
        '  - name: app\n'
        '    endpoints: ["unix:app.sock", "unix:@", "unix:%s"]\n' % (long_path, long_path))
    out = run_remora("--check", "-c", cfg)
    assert out.returncode != 0
    lines = out.stdout.decode().splitlines() + out.stderr.decode().splitlines()
    lines = [ln for ln in lines if ln.startswith(str(cfg))]
    assert len(lines) == 5, lines
    assert lines[0] == ("%s:2:24: bad address \"unix:run/r.sock\" (a Unix socket path must be "
                        "absolute: unix:/path, or unix:@name)" % cfg), lines
    assert lines[1].startswith("%s:3:24: bad address \"unix:/aaaa" % cfg), lines
    assert lines[1].endswith("(a Unix socket path is at most 107 bytes)"), lines
    assert lines[2] == ("%s:6:17: bad endpoint \"unix:app.sock\" (a Unix socket path must be "
                        "absolute: unix:/path, or unix:@name)" % cfg), lines
    assert lines[3] == ("%s:6:34: bad endpoint \"unix:@\" (an abstract socket needs a name "
                        "after \"unix:@\")" % cfg), lines
    assert lines[4].startswith("%s:6:44: bad endpoint \"unix:/aaaa" % cfg), lines
    assert lines[4].endswith("(a Unix socket path is at most 107 bytes)"), lines
    ok = tmp_path / "ok.yaml"
    ok.write_text('listeners: [{name: a, address: "unix:/%s", mode: "0600"}]\n'
                  'upstreams: [{name: app, endpoints: ["unix:/%s", "unix:@app"]}]\n'
                  % ("b" * 106, "c" * 106))
    out = run_remora("--check", "-c", ok)
    assert out.returncode == 0, out
    assert out.stdout.decode().startswith("ok: 1 listener, 1 upstream (2 endpoints)"), out


# ---- listeners ---------------------------------------------------------------------------------

def curl_unix(path, target="/echo", *args):
    out = curl("--unix-socket", path, *args, "http://x" + target)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_unix_listener_serves_without_xff(remora, upstream, sockdir):
    lpath = os.path.join(sockdir, "r.sock")
    p = start(remora, [upstream.addr], listeners=[
        {"name": "local", "address": "unix:" + lpath, "mode": "0660"}], workers=2)
    st = os.stat(lpath)
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o660
    for _ in range(10):  # two workers share the one socket: every request served
        doc = json.loads(curl_unix(lpath))
        names = [k.lower() for k, _ in doc["headers"]]
        assert "x-forwarded-for" not in names, doc["headers"]
        assert ("X-Forwarded-Proto", "http") in [tuple(h) for h in doc["headers"]]
    doc = json.loads(curl_unix(lpath, "/echo", "-H", "X-Forwarded-For: 10.1.2.3"))
    assert [v for k, v in doc["headers"] if k.lower() == "x-forwarded-for"] == ["10.1.2.3"]
    # h2c prior knowledge on the same socket
    out = json.loads(curl_unix(lpath, "/echo", "--http2-prior-knowledge"))
    assert "x-forwarded-for" not in [k.lower() for k, _ in out["headers"]], out["headers"]
    entries = p.access_logs(at_least=12)
    assert entries and all(e["client"] == "" for e in entries), entries[:2]
    # TCP clients still get theirs.
    doc = get(p.port, "/echo").json()
    assert [v for k, v in doc["headers"] if k == "X-Forwarded-For"] == ["127.0.0.1"]


def test_unix_listener_default_mode_and_abstract(remora, upstream, sockdir):
    lpath = os.path.join(sockdir, "r.sock")
    name = "remora-l-%d-%d" % (os.getpid(), time.monotonic_ns())
    start(remora, [upstream.addr], listeners=[
        {"name": "file", "address": "unix:" + lpath},
        {"name": "abs", "address": "unix:@" + name}])
    assert stat.S_IMODE(os.stat(lpath).st_mode) == 0o666
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    s.connect("\0" + name)
    s.sendall(b"GET /echo HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    data = b""
    while True:
        d = s.recv(65536)
        if not d:
            break
        data += d
    s.close()
    assert data.startswith(b"HTTP/1.1 200 "), data[:200]


def test_stale_socket_replaced_and_removed_at_exit(remora, upstream, sockdir):
    lpath = os.path.join(sockdir, "r.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(lpath)  # left behind, as by a remora killed with SIGKILL
    s.close()
    p = start(remora, [upstream.addr], listeners=[{"name": "l", "address": "unix:" + lpath}])
    assert json.loads(curl_unix(lpath))["path"] == "/echo"
    assert "removed the stale socket" in p.stderr()
    assert stop_process(p.proc) == 0
    assert not os.path.exists(lpath)


def test_live_socket_and_regular_file_never_clobbered(remora, upstream, sockdir, tmp_path):
    lpath = os.path.join(sockdir, "r.sock")
    with open(lpath, "w") as f:
        f.write("precious")
    port, admin_port = free_port(), free_port()
    cfg = unix_cfg(port, admin_port, [upstream.addr],
                   [{"name": "l", "address": "unix:" + lpath}])
    p = remora(config=cfg, ready=False)
    assert p.proc.wait(timeout=10) != 0
    assert "exists and is not a socket" in p.stderr(), p.stderr()
    with open(lpath) as f:
        assert f.read() == "precious"
    # Another process listening there: refused too, its socket left alone.
    os.unlink(lpath)
    live = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    live.bind(lpath)
    live.listen(8)
    try:
        ino = os.stat(lpath).st_ino
        p = remora(config=unix_cfg(free_port(), free_port(), [upstream.addr],
                                   [{"name": "l", "address": "unix:" + lpath}]), ready=False)
        assert p.proc.wait(timeout=10) != 0
        assert "another process is listening on it" in p.stderr(), p.stderr()
        assert os.stat(lpath).st_ino == ino
    finally:
        live.close()


def test_reload_adds_and_removes_unix_listener(remora, upstream, sockdir, tmp_path):
    lpath = os.path.join(sockdir, "r.sock")
    port, admin_port = free_port(), free_port()
    cfg = unix_cfg(port, admin_port, [upstream.addr], workers=2)
    cd = ConfDir(tmp_path, cfg)
    p = remora(config=cfg, config_file=cd.path)
    assert not os.path.exists(lpath)
    with_unix = json.loads(json.dumps(cfg))
    with_unix["listeners"].append({"name": "local", "address": "unix:" + lpath,
                                   "mode": "0600"})
    cd.write_inplace(with_unix)
    sighup(p)
    wait_state(p, success=1, generation=2)
    assert stat.S_IMODE(os.stat(lpath).st_mode) == 0o600
    assert json.loads(curl_unix(lpath))["path"] == "/echo"
    # A reload that keeps it keeps its socket (same file).
    ino = os.stat(lpath).st_ino
    with_unix["limits"]["max_headers"] = 99
    cd.write_inplace(with_unix)
    sighup(p)
    wait_state(p, success=2, generation=3)
    assert os.stat(lpath).st_ino == ino
    assert json.loads(curl_unix(lpath))["path"] == "/echo"
    cd.write_inplace(cfg)
    sighup(p)
    wait_state(p, success=3, generation=4)
    assert wait_for(lambda: not os.path.exists(lpath), 3.0)
    assert get(p.port, "/echo").status == 200
