# SPDX-License-Identifier: Apache-2.0
"""17: the slow-client battery (issue 17), HTTP/1.1 over raw sockets against one worker with
short timeouts: slowloris (a header byte a second; a header line every 0.7 s, which a per-read
timer would never catch), a connection that never sends, idle keep-alive, a request body
trickled at 1 byte/s or stalled mid-way, a slow reader of a big response and a client that never
reads a 100 MiB response. Each case asserts the exact outcome (408 `request_header_timeout`,
408 `client_timeout`, or a plain close), the access-log status, termination and error, that the
time taken is bounded by the configured timeout (generous slack: never a speed assertion), that
the one worker keeps serving another client meanwhile, and that remora's RSS stays bounded (the
100 MiB non-reader: remora stops reading from the app, which is seen blocked, then cut).

Replaying: CASES and run_case(port, case, pusher, pid) work against any remora started with
battery_kwargs(app_addr, pusher.addr) (one `Pusher` app for the 100 MiB case). Every case takes
a few seconds: all are marked `replay: False` except the quick ones (see each case). Related
single checks elsewhere: test_12 (header and idle timeouts at 500 ms, the route timeout as
silence, a slow body not cut by the route timeout), test_50 (slow readers and uploads bounding
RSS over 100 MiB)."""

import hashlib
import json
import os
import select
import socket
import time

import pytest

from h2util import H2Client, H2Timeout, SettingCodes
from helpers import (BLOCK, MIB, HttpConn, RawApp, RssSampler, http, http_get_body,
                     pattern_sha256, rss_kib)

HEADER_TIMEOUT_S = 2.0  # limits.request_header_timeout
IDLE_TIMEOUT_S = 1.0    # limits.client_idle_timeout: keep-alive idle time and a stalled write
BODY_TIMEOUT_S = 2.5    # limits.request_body_timeout: the whole request body
ROUTE_TIMEOUT_S = 1.5   # routes[].timeout: app silence while a response is due (a body stall)
EARLY_S = 0.2           # a timeout may fire this much before its nominal time (timer slack)
SLACK_S = 2.5           # ... and this much after it, on a loaded 2-core machine
PROBE_TIMEOUT_S = 2.0   # "promptly": another client's whole request/response within this
PUSH_BYTES = 100 * MIB
# remora's RSS may grow by less than this during a slow client; a sanitizer build (libc malloc,
# ASan's quarantine and shadow memory) is given more, still far below what is streamed
SANITIZED = bool(os.environ.get("REMORA_SANITIZED"))
RSS_GROWTH_KIB = (16 if SANITIZED else 4) * 1024


def battery_kwargs(app_addr, pusher_addr):
    """remora() options of the battery: one worker, short timeouts, /push -> the Pusher app,
    everything else -> upstream.py."""
    up = {"connect_timeout": "1s", "idle_timeout": "2s", "max_connections": 1024}
    return {
        "workers": 1,
        "limits": {"request_header_timeout": "%dms" % (HEADER_TIMEOUT_S * 1000),
                   "client_idle_timeout": "%dms" % (IDLE_TIMEOUT_S * 1000),
                   "request_body_timeout": "%dms" % (BODY_TIMEOUT_S * 1000),
                   "buffer_bytes": "64KiB"},
        "upstreams": [dict(up, name="app", endpoints=[app_addr]),
                      dict(up, name="pusher", endpoints=[pusher_addr])],
        "routes": [{"name": "push", "match": {"path_prefix": "/push"}, "upstream": "pusher",
                    "timeout": "%dms" % (ROUTE_TIMEOUT_S * 1000)},
                   {"name": "default", "match": {"path_prefix": "/"}, "upstream": "app",
                    "timeout": "%dms" % (ROUTE_TIMEOUT_S * 1000)}],
    }


class Pusher:
    """An app that answers every request with a 100 MiB body sent as fast as remora takes it,
    and records per connection how far it got: `sent` bytes, `blocked` (a send waited 200 ms
    for room), `end` ("closed": remora cut it; "done": all sent; "stuck": still blocked after
    30 s) and when (`t_end`, monotonic)."""

    def __init__(self):
        self.conns = []
        self.app = RawApp(self._serve)
        self.addr = self.app.addr

    def _serve(self, sock, app):
        st = {"sent": 0, "blocked": False, "end": None, "t_end": None}
        self.conns.append(st)
        sock.settimeout(5)
        head = b""
        while b"\r\n\r\n" not in head:
            d = sock.recv(65536)
            if not d:
                return
            head += d
        sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                     b"Content-Length: %d\r\n\r\n" % PUSH_BYTES)
        sock.settimeout(0.2)
        view = memoryview(BLOCK)
        give_up = time.monotonic() + 30
        try:
            while st["sent"] < PUSH_BYTES:
                try:
                    st["sent"] += sock.send(view[:min(len(view), PUSH_BYTES - st["sent"])])
                except socket.timeout:
                    st["blocked"] = True
                    if time.monotonic() > give_up:
                        st["end"] = "stuck"
                        return
                except OSError:
                    st["end"] = "closed"
                    return
            st["end"] = "done"
        finally:
            st["t_end"] = time.monotonic()

    def close(self):
        self.app.__exit__()


# Each case: id; kind (the driver below); what remora must answer (status and x-remora-error,
# or None for a plain close with nothing sent); the timeout that must end it (seconds, None:
# nothing may end it while the client keeps going); the access-log line it leaves (None: no
# stream, so no line); replay: whether it is quick enough to replay in a long-lived battery.
CASES = [
    {"id": "slowloris_byte_per_second", "kind": "slow_head", "chunk": "byte", "interval": 1.0,
     "expect": (408, "request_header_timeout"), "timeout": HEADER_TIMEOUT_S,
     "log": (408, "cR", "request_header_timeout"), "replay": False},
    {"id": "slowloris_line_every_700ms", "kind": "slow_head", "chunk": "line", "interval": 0.7,
     "expect": (408, "request_header_timeout"), "timeout": HEADER_TIMEOUT_S,
     "log": (408, "cR", "request_header_timeout"), "replay": False},
    {"id": "silent_after_connect", "kind": "silent", "expect": None, "timeout": IDLE_TIMEOUT_S,
     "log": None, "replay": True},
    {"id": "idle_keepalive", "kind": "idle_keepalive", "expect": None, "timeout": IDLE_TIMEOUT_S,
     "log": (200, "--", None), "replay": True},
    {"id": "slow_reader_keeps_reading", "kind": "slow_reader", "expect": (200, None),
     "timeout": None, "log": (200, "--", None), "replay": False},
]
# Over HTTP/1.1 and h2c alike: a body trickled at 1 byte/s (only request_body_timeout ends it)
# or stopped after 10 of 100 bytes (the route timeout sees the app waiting for it); a client
# that never reads a 100 MiB response (on h2c with every window open: only TCP holds it).
for _kind, _pfx in (("slow_body", ""), ("h2_slow_body", "h2c_")):
    for _name, _send, _interval, _timeout, _replay in (
            ("body_byte_per_second", 100, 1.0, BODY_TIMEOUT_S, False),
            ("body_stalls_mid_way", 10, 0.0, ROUTE_TIMEOUT_S, True)):
        CASES.append({"id": _pfx + _name, "kind": _kind, "declared": 100, "send": _send,
                      "interval": _interval, "expect": (408, "client_timeout"),
                      "timeout": _timeout, "log": (408, "cD", "client_timeout"),
                      "replay": _replay})
for _proto, _pfx in (("h1", ""), ("h2", "h2c_")):
    CASES.append({"id": _pfx + "never_reads_100mib", "kind": "non_reader", "proto": _proto,
                  "expect": (200, None), "timeout": IDLE_TIMEOUT_S,
                  "log": (200, "cD", "client_timeout"), "replay": False})


def probe(port):
    """The worker is not tied up: another client gets a whole 200 promptly."""
    r = http(port, "GET", "/echo?probe", timeout=PROBE_TIMEOUT_S)
    assert r.status == 200 and r.complete and r.json()["path"] == "/echo?probe", r


def check_took(case, took):
    lo, hi = case["timeout"] - EARLY_S, case["timeout"] + SLACK_S
    assert lo <= took <= hi, "%s ended after %.2f s, expected %.1f-%.1f s" % (
        case["id"], took, lo, hi)


def readable(sock, wait):
    return bool(select.select([sock], [], [], max(0.0, wait))[0])


def send_ignoring_close(c, data):
    try:
        c.send(data)
        return True
    except (BrokenPipeError, ConnectionResetError):
        return False


def expect_answer(c, case, t0):
    """The 4xx the case expects, then the close; returns the time it took from t0."""
    status, reason = case["expect"]
    r = c.read_response()
    took = time.monotonic() - t0
    assert r.status == status and r.header("x-remora-error") == reason, (r, r.body)
    assert r.complete and len(r.body) < 1024, r.body
    assert c.is_closed(wait=3.0), "connection left open after %d %s" % (status, reason)
    return took


def trickle(c, pieces, interval, port, bound):
    """Sends pieces `interval` apart until remora answers (or closes); probes the worker after
    the first piece. Returns when something is readable, after the last piece, or after bound
    seconds (the case then fails on its answer or its time)."""
    end = time.monotonic() + bound
    for i, piece in enumerate(pieces):
        if not send_ignoring_close(c, piece):
            return
        if i == 0:
            probe(port)
        if readable(c.sock, interval) or time.monotonic() > end:
            return


def run_slow_head(port, case):
    head = b"GET /echo?slowloris HTTP/1.1\r\nHost: a\r\nX-Slow: " + b"v" * 64 + b"\r\n"
    if case["chunk"] == "byte":
        pieces = [head[i:i + 1] for i in range(len(head))]
    else:
        pieces = [head] + [b"X-Line-%d: v\r\n" % i for i in range(30)]
    with HttpConn(port, timeout=HEADER_TIMEOUT_S + SLACK_S + 2) as c:
        t0 = time.monotonic()
        trickle(c, pieces, case["interval"], port, case["timeout"] + SLACK_S + 1)
        check_took(case, expect_answer(c, case, t0))


def run_silent(port, case):
    with HttpConn(port) as c:
        t0 = time.monotonic()
        probe(port)
        assert c.is_closed(wait=case["timeout"] + SLACK_S + 1), "silent conn never closed"
        check_took(case, time.monotonic() - t0)
        assert c.received == 0, "remora sent %d bytes to a silent conn" % c.received


def run_idle_keepalive(port, case):
    with HttpConn(port) as c:
        c.request("GET", "/echo?idle")
        r = c.read_response()
        assert r.status == 200 and r.complete, r
        t0 = time.monotonic()
        probe(port)
        assert c.is_closed(wait=case["timeout"] + SLACK_S + 1), "idle keep-alive never closed"
        check_took(case, time.monotonic() - t0)


def run_slow_body(port, case):
    head = (b"POST /upload?slow-body HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n"
            % case["declared"])
    body = b"x" * case["send"]
    with HttpConn(port, timeout=case["timeout"] + SLACK_S + 2) as c:
        if case["interval"]:
            pieces = [head + body[:1]] + [body[i:i + 1] for i in range(1, len(body))]
        else:
            pieces = [head + body]
        t0 = time.monotonic()
        trickle(c, pieces, case["interval"], port, case["timeout"] + SLACK_S + 1)
        check_took(case, expect_answer(c, case, t0))


def run_h2_slow_body(port, case):
    """The HTTP/2 form of run_slow_body: the stream gets the 408, the connection stays usable
    (another request on it is answered)."""
    body = b"x" * case["send"]
    with H2Client(port, timeout=case["timeout"] + SLACK_S + 2) as c:
        first = body[:1] if case["interval"] else body
        t0 = time.monotonic()
        sid = c.request("POST", "/upload?h2-slow-body", body=first, end_stream=False,
                        headers=[("content-length", str(case["declared"]))])
        r = c.streams[sid]
        probe(port)
        rest = body[len(first):]
        end = t0 + case["timeout"] + SLACK_S + 1
        while True:
            left = end - time.monotonic()
            try:
                c.wait(lambda: r.done, timeout=min(case["interval"], left) if rest else left)
                break
            except H2Timeout:
                if not rest or time.monotonic() >= end:
                    pytest.fail("%s: no answer within %.1f s" % (case["id"],
                                                                 time.monotonic() - t0))
                c.send_data(sid, rest[:1])
                rest = rest[1:]
        took = r.t_end - t0
        status, reason = case["expect"]
        assert r.status == status and r.header("x-remora-error") == reason, r
        check_took(case, took)
        again = c.request("GET", "/echo?h2-after")
        c.wait(lambda: c.streams[again].done)
        assert c.streams[again].status == 200, c.streams[again]


def run_slow_reader(port, case):
    """Reads a 64 MiB response 128 KiB every 0.5 s for 3 s (far slower than remora and the app
    could go, and longer than every timeout), then the rest at full speed: it must get all of
    it, byte-exact. remora's socket is not reported writable again until a third of its send
    buffer (megabytes) is free, so a write-stall timer that only looked at remora's own writes
    would cut this reader; RSS stays bounded meanwhile."""
    n = 64 * MIB
    pid = case.get("pid")
    base = rss_kib(pid) if pid else 0
    with RssSampler(pid) if pid else _NoSampler() as s, \
            HttpConn(port, timeout=5, rcvbuf=65536) as c:
        c.request("GET", "/bytes?n=%d" % n)
        r = c.read_head()
        assert r.status == 200 and r.header("content-length") == str(n), r
        got = bytearray(c.buf)
        c.buf.clear()
        end = time.monotonic() + 3.0
        probed = False
        while time.monotonic() < end:
            time.sleep(0.5)
            want = len(got) + 128 * 1024
            while len(got) < want:
                d = c.sock.recv(want - len(got))
                assert d, "remora closed a reader that keeps reading after %d bytes" % len(got)
                got += d
            if not probed:
                probe(port)
                probed = True
        slow = len(got)
        assert slow < n // 2, "the reader was not slow: %d bytes in 3 s" % slow
        h = hashlib.sha256(got)
        while slow < n:
            d = c.sock.recv(min(1 << 20, n - slow))
            assert d, "remora cut a reader that kept reading, after %d of %d bytes" % (slow, n)
            h.update(d)
            slow += len(d)
        assert h.hexdigest() == pattern_sha256(n), "slow reader got other bytes"
    check_rss(base, s)


class _NoSampler:
    max_kib = 0

    def __enter__(self):
        return self

    def __exit__(self, *a):
        pass


def check_rss(base_kib, sampler):
    if base_kib and sampler.max_kib:
        grew = sampler.max_kib - base_kib
        assert grew < RSS_GROWTH_KIB, "remora's RSS grew by %d KiB" % grew


def non_reader_client(port, proto):
    """A client with a 64 KiB receive buffer; on h2c it opens every window as wide as HTTP/2
    allows, so that only TCP holds remora back."""
    if proto == "h1":
        return HttpConn(port, timeout=5, rcvbuf=65536)
    big = 2 ** 31 - 1
    return H2Client(port, timeout=5, rcvbuf=65536, conn_window=big,
                    settings={SettingCodes.INITIAL_WINDOW_SIZE: big})


def drain_to_close(c, proto):
    """Reads what the kernel still holds for the client, up to the close; returns
    (closed, bytes read)."""
    if proto == "h1":
        data = c.read_all(deadline=5)
        return c.eof or c.reset, len(data)
    closed = c.wait_closed(timeout=5)
    return closed, c.received


def run_non_reader(port, case, pusher):
    """GET /push: the app streams 100 MiB; the client reads nothing. remora must stop reading
    from the app (backpressure: the app is seen blocked, far from 100 MiB) and, once the client
    has taken nothing for client_idle_timeout, close both sides."""
    before = len(pusher.conns)
    pid = case.get("pid")
    base = rss_kib(pid) if pid else 0
    with RssSampler(pid) if pid else _NoSampler() as s, \
            non_reader_client(port, case["proto"]) as c:
        c.request("GET", "/push")
        t0 = time.monotonic()
        while len(pusher.conns) == before and time.monotonic() - t0 < 3:
            time.sleep(0.02)
        assert len(pusher.conns) > before, "the app never got the request"
        st = pusher.conns[before]
        probe(port)
        end = t0 + case["timeout"] + SLACK_S + 5
        while st["end"] is None and time.monotonic() < end:
            time.sleep(0.05)
        assert st["end"] == "closed", "the app's connection: %r" % st
        assert st["blocked"], "the app was never held back: %r" % st
        assert st["sent"] < PUSH_BYTES // 4, "remora took %.1f MiB from the app" % (
            st["sent"] / MIB)
        # The stall starts once the buffers are full, a moment after t0.
        check_took(case, st["t_end"] - t0)
        # What the kernel still holds for the client, then the close: never all 100 MiB.
        closed, got = drain_to_close(c, case["proto"])
        assert closed, "client connection still open"
        assert got < PUSH_BYTES // 4, got
    if pid:
        grew = s.max_kib - base
        print("non-reader: app sent %.1f MiB, RSS grew %d KiB" % (st["sent"] / MIB, grew))
        assert grew < RSS_GROWTH_KIB, "remora's RSS grew by %d KiB" % grew


def run_case(remora_port, case, pusher=None, pid=None, app=None):
    """Runs one case against a remora started with battery_kwargs (pid: remora's, for the RSS
    checks; pusher: the Pusher app behind /push, for the non-readers; app: upstream.py's
    Upstream, to check that a cut body never reached its end at the app)."""
    case = dict(case, pid=pid)
    kind = case["kind"]
    ended = app.stats()["bodies_ended"] if app is not None else None
    if kind == "slow_head":
        run_slow_head(remora_port, case)
    elif kind == "silent":
        run_silent(remora_port, case)
    elif kind == "idle_keepalive":
        run_idle_keepalive(remora_port, case)
    elif kind == "slow_body":
        run_slow_body(remora_port, case)
    elif kind == "slow_reader":
        run_slow_reader(remora_port, case)
    elif kind == "non_reader":
        run_non_reader(remora_port, case, pusher)
    elif kind == "h2_slow_body":
        run_h2_slow_body(remora_port, case)
    else:
        raise ValueError(kind)
    probe(remora_port)
    if ended is not None and kind in ("slow_body", "h2_slow_body"):
        assert app.stats()["bodies_ended"] == ended, "the app saw a cut body end"


@pytest.fixture
def battery(remora, upstream):
    pusher = Pusher()
    p = remora(**battery_kwargs(upstream.addr, pusher.addr))
    yield p, pusher
    pusher.close()


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_slow_client(battery, upstream, case):
    p, pusher = battery
    http(p.port, "GET", "/echo?warm-up")  # the pool, the arenas: a stable RSS baseline
    before = len(p.access_logs(at_least=1))
    run_case(p.port, case, pusher, pid=p.pid, app=upstream)
    assert p.alive()
    want = before + 2 + (1 if case["log"] else 0)  # the two probes, the case
    logs = p.access_logs(at_least=want, timeout=3.0)
    mine = [e for e in logs[before:]
            if not any(w in e.get("path", "") for w in ("probe", "warm-up", "h2-after"))]
    if case["log"] is None:
        assert mine == [], mine
        return
    status, term, err = case["log"]
    assert len(mine) == 1, mine
    e = mine[0]
    assert (e["status"], e["termination"], e.get("error")) == (status, term, err), e
    if case["kind"] == "slow_head":
        assert e["upstream"] is None and e["route"] == "", "the app got a slowloris head"


def test_request_body_timeout_in_config_dump(battery):
    """The key added for the trickled body shows in GET /config with its effective value."""
    p, _ = battery
    st, body = http_get_body(p.admin_port, "/config")
    assert st == 200, body
    assert json.loads(body)["limits"]["request_body_timeout"] == "2500ms", body
