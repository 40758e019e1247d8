# SPDX-License-Identifier: Apache-2.0
"""The admin listener's own bounds: many concurrent or stuck scrapers hold bounded memory, a
fresh scraper is still answered (the least recently active connection is evicted past 64), a
scraper that never reads does not delay traffic, and only GET/HEAD on the three paths exist."""

import os
import signal
import socket
import threading
import time

from helpers import HttpConn, free_port, http_get_body


def admin_get(port, path, headers=b"", timeout=3):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(b"GET " + path + b" HTTP/1.1\r\nHost: a\r\nConnection: close\r\n" + headers + b"\r\n")
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        return data
    finally:
        s.close()


def test_paths_and_methods(proxy):
    assert admin_get(proxy.admin_port, b"/nope").startswith(b"HTTP/1.1 404")
    assert admin_get(proxy.admin_port, b"/metrics?x=1").startswith(b"HTTP/1.1 200")
    assert admin_get(proxy.admin_port, b"/healthz?verbose").startswith(b"HTTP/1.1 200")
    s = socket.create_connection(("127.0.0.1", proxy.admin_port), timeout=3)
    s.sendall(b"POST /metrics HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
    assert s.recv(100).startswith(b"HTTP/1.1 405")
    s.close()
    s = socket.create_connection(("127.0.0.1", proxy.admin_port), timeout=3)
    s.sendall(b"HEAD /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    head = s.recv(65536)
    assert head.startswith(b"HTTP/1.1 200") and head.endswith(b"\r\n\r\n"), head
    s.close()


def test_keepalive_scrapes(proxy):
    s = socket.create_connection(("127.0.0.1", proxy.admin_port), timeout=3)
    for _ in range(3):
        s.sendall(b"GET /readyz HTTP/1.1\r\nHost: a\r\n\r\n")
        got = b""
        while not got.endswith(b"ok\n"):
            got += s.recv(4096)
        assert got.startswith(b"HTTP/1.1 200")
    s.close()


def test_oversized_request_refused(proxy):
    data = admin_get(proxy.admin_port, b"/metrics", headers=b"X-Big: " + b"a" * 20000 + b"\r\n")
    assert data.startswith(b"HTTP/1.1 431") or data == b"", data[:80]
    assert admin_get(proxy.admin_port, b"/healthz").startswith(b"HTTP/1.1 200")


def open_fds(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def test_many_stuck_scrapers_bounded(proxy):
    """300 connections that never finish a request: remora keeps at most 64 admin connections
    (it closes the least recently active), memory stays bounded and a new scraper is answered
    at once."""
    rss0 = proxy.rss_kib()
    fds0 = open_fds(proxy.pid)
    stuck = []
    try:
        for i in range(300):
            s = socket.create_connection(("127.0.0.1", proxy.admin_port), timeout=3)
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: a\r\nX-Partial: " + b"x" * 2000)
            stuck.append(s)
        t0 = time.monotonic()
        st, body = http_get_body(proxy.admin_port, "/metrics", timeout=3)
        assert st == 200 and b"remora_build_info" in body
        assert time.monotonic() - t0 < 1.0
        assert proxy.rss_kib() - rss0 < 4096, (rss0, proxy.rss_kib())
        assert open_fds(proxy.pid) - fds0 <= 64 + 1, (fds0, open_fds(proxy.pid))
    finally:
        for s in stuck:
            s.close()


def test_scrapers_that_never_read_do_not_delay_traffic(proxy):
    """50 scrapers ask for /metrics with a tiny receive buffer and never read; requests on the
    traffic port keep their normal latency."""
    stuck = []
    try:
        for _ in range(50):
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
            s.connect(("127.0.0.1", proxy.admin_port))
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n")
            stuck.append(s)
        worst = 0.0
        with HttpConn(proxy.port) as c:
            for i in range(50):
                t0 = time.monotonic()
                c.request("GET", "/echo?%d" % i)
                assert c.read_response().status == 200
                worst = max(worst, time.monotonic() - t0)
        assert worst < 0.5, worst
    finally:
        for s in stuck:
            s.close()


def test_concurrent_scrapers_all_answered(proxy):
    results = []

    def scrape():
        st, body = http_get_body(proxy.admin_port, "/metrics", timeout=5)
        results.append((st, b"remora_requests_in_flight" in body))

    threads = [threading.Thread(target=scrape) for _ in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(results) == 40 and all(r == (200, True) for r in results), results


def _body(resp):
    return resp.split(b"\r\n\r\n", 1)[1]


def test_config_dump_shows_effective_values(remora, upstream):
    import json
    r = remora(upstream, limits={"max_headers": 77}, upstream_opts={"connect_timeout": "250ms"})
    raw = admin_get(r.admin_port, b"/config")
    assert raw.startswith(b"HTTP/1.1 200") and b"application/json" in raw.split(b"\r\n\r\n")[0]
    doc = json.loads(_body(raw))
    assert doc["limits"]["max_headers"] == 77
    assert doc["limits"]["client_idle_timeout"] == "60s"  # a default, made explicit
    up = doc["upstreams"][0]
    assert up["connect_timeout"] == "250ms" and up["queue_timeout"] == "250ms"
    assert up["endpoints"] == [upstream.addr]
    assert doc["drain"] == {"delay": "0s", "timeout": "20s"}
    assert doc["listeners"][0]["address"] == "127.0.0.1:%d" % r.port
    assert len(doc["hash"]) == 16 and doc["loaded_at"].endswith("Z")
    metrics = _body(admin_get(r.admin_port, b"/metrics")).decode()
    assert 'remora_config_info{hash="%s"} 1' % doc["hash"] in metrics


def test_config_hash_follows_the_settings(remora, upstream):
    import json

    def hash_of(r):
        return json.loads(_body(admin_get(r.admin_port, b"/config")))["hash"]

    r1 = remora(upstream, limits={"max_headers": 50})
    h1 = hash_of(r1)
    assert hash_of(r1) == h1
    r1.proc.send_signal(signal.SIGTERM)
    assert r1.proc.wait(10) == 0
    # the same settings from another file (same ports, now free): the same hash
    assert hash_of(remora(config=r1.config)) == h1
    changed = dict(r1.config, limits=dict(r1.config.get("limits", {}), max_headers=51))
    changed["listeners"] = [dict(changed["listeners"][0], address="127.0.0.1:%d" % free_port())]
    changed["admin"] = {"address": "127.0.0.1:%d" % free_port()}
    assert hash_of(remora(config=changed)) != h1


def test_drain_endpoint_methods(proxy):
    s = socket.create_connection(("127.0.0.1", proxy.admin_port), timeout=3)
    s.sendall(b"GET /drain HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    assert s.recv(100).startswith(b"HTTP/1.1 405")
    s.close()
    assert admin_get(proxy.admin_port, b"/readyz").startswith(b"HTTP/1.1 200")
    s = socket.create_connection(("127.0.0.1", proxy.admin_port), timeout=3)
    s.sendall(b"POST /drain HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
    assert s.recv(100).startswith(b"HTTP/1.1 202")
    s.close()
    ready = admin_get(proxy.admin_port, b"/readyz")
    assert ready.startswith(b"HTTP/1.1 503") and _body(ready) == b"draining\n"
    assert "remora_draining 1" in _body(admin_get(proxy.admin_port, b"/metrics")).decode()
    time.sleep(0.3)
    assert proxy.proc.poll() is None, "POST /drain must not stop remora"


def test_admin_request_cli(proxy, run_remora):
    cfg = str(proxy.cfg_path)
    r = run_remora("--admin-request", "GET", "/readyz", "-c", cfg)
    assert r.returncode == 0 and r.stdout == b"ok\n", r
    r = run_remora("--admin-request", "POST", "/drain", "-c", cfg)
    assert r.returncode == 0 and r.stdout == b"draining\n", r
    r = run_remora("--admin-request", "GET", "/readyz", "-c", cfg)
    assert r.returncode == 1 and r.stdout == b"draining\n", r  # 503 is not a success
    r = run_remora("--admin-request", "GET", "-c", cfg)
    assert r.returncode == 2  # usage
