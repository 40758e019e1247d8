# SPDX-License-Identifier: Apache-2.0
"""56: overload, CI-sized. 300 connections at once each POST 1 MiB to an app that reads every
body at 128 KiB/s (2 MiB/s over the 16 admitted requests). Within a deadline every client gets
a whole 200 carrying the right sha256, or a 503/504 with x-remora-error; nothing hangs, nothing
is cut short, no connection is reset before its status arrived. remora's peak RSS stays under a
bound computed from the config, and once the load is gone a burst of small requests is served
at once. (A slow reader of a 100 MiB response is test_50_backpressure.py's
test_slow_reading_client_bounds_rss.)"""

import errno
import json
import selectors
import socket
import threading
import os
import time

from helpers import (BLOCK, MIB, HttpConn, RssSampler, Truncated, build_request, metrics,
                     pattern, pattern_sha256, wait_for)

# CI size; REMORA_SOAK_CLIENTS=2000 runs the full-size soak (bench-style, minutes).
CLIENTS = int(os.environ.get("REMORA_SOAK_CLIENTS", "300"))
BODY = MIB
RATE = 128 * 1024           # bytes/s the app reads of each admitted body
MAX_REQUESTS = 16
MAX_PENDING = 64
QUEUE_TIMEOUT = "2s"
BUFFER_BYTES = 64 * 1024
MAX_HEADER_BYTES = 16 * 1024
BASE_RSS = 8 * MIB
DEADLINE = 30.0 * max(1, CLIENTS / 300)  # seconds for the whole load phase
REJECT_REASONS = ("queue_full", "queue_timeout")


class BufParser(HttpConn):
    """HttpConn's response parser over bytes already received (no socket)."""

    def __init__(self, data, eof):  # pylint: disable=super-init-not-called (no socket)
        self.buf = bytearray(data)
        self.eof = eof
        self.reset = False
        self.received = len(data)

    def _fill(self, n=0):
        return False


class Client:
    """One non-blocking connection: sends the head and a 1 MiB body while reading whatever
    remora answers, at any time; finishes on a complete response or on EOF/reset."""

    def __init__(self, idx, port):
        self.idx = idx
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # a small send buffer keeps what the kernel holds for 300 blocked senders small
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
        self.sock.setblocking(False)
        err = self.sock.connect_ex(("127.0.0.1", port))
        if err not in (0, errno.EINPROGRESS):
            raise OSError(err, "connect")
        self.head = memoryview(build_request("POST", "/slow-read?rate=%d&c=%d" % (RATE, idx),
                                             headers=[("Content-Length", str(BODY))]))
        self.sent = 0            # body bytes sent
        self.connected = False
        self.send_error = None
        self.inbuf = bytearray()
        self.eof = False
        self.reset = False
        self.response = None
        self.error = None        # why this client failed to parse (bad bytes)
        self.done = False
        self.t_done = None

    def wants_write(self):
        return not self.done and self.send_error is None and \
            (len(self.head) > 0 or self.sent < BODY)

    def on_write(self):
        if not self.connected:
            err = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                self.send_error = OSError(err, "connect")
                return
            self.connected = True
        try:
            if len(self.head):
                n = self.sock.send(self.head)
                self.head = self.head[n:]
                return
            off = self.sent % len(BLOCK)
            k = min(len(BLOCK) - off, BODY - self.sent)
            self.sent += self.sock.send(memoryview(BLOCK)[off:off + k])
        except (BlockingIOError, InterruptedError):
            pass
        except OSError as e:  # EPIPE / ECONNRESET: remora closed; its answer may be queued
            self.send_error = e

    def on_read(self, now):
        try:
            d = self.sock.recv(256 * 1024)
        except (BlockingIOError, InterruptedError):
            return
        except ConnectionResetError:
            self.reset = True
            d = b""
        if d:
            self.inbuf += d
        else:
            self.eof = True
        self.parse(now)

    def parse(self, now):
        p = BufParser(self.inbuf, self.eof and not self.reset)
        try:
            r = p.read_response("POST")
        except Truncated:
            r = None
        except ValueError as e:
            self.error = "unparseable response: %s %r" % (e, bytes(self.inbuf[:200]))
            r = None
            self.eof = True
        if r is not None and r.complete:
            self.response = r
        if self.response is not None or self.eof:
            self.done = True
            self.t_done = now

    def outcome(self, body_sha):
        """("ok", None), ("rejected", "<status> <x-remora-error>"), or ("fail", why)."""
        r = self.response
        if r is None:
            if self.error:
                return "fail", self.error
            if not self.done:
                return "fail", "no response by the deadline (sent %d body bytes)" % self.sent
            return "fail", "%s before a complete status (sent %d, got %r, send error %r)" % (
                "reset" if self.reset else "EOF", self.sent, bytes(self.inbuf[:200]),
                self.send_error)
        if r.status == 200:
            if self.sent != BODY:
                return "fail", "200 before the body was sent (%d of %d)" % (self.sent, BODY)
            try:
                doc = json.loads(r.body)
            except ValueError:
                return "fail", "200 with a body that is not the app's JSON: %r" % r.body[:200]
            if doc != {"body_len": BODY, "body_sha256": body_sha}:
                return "fail", "the app got a different body: %r" % doc
            return "ok", None
        reason = r.header("x-remora-error")
        if r.status in (503, 504) and reason:
            return "rejected", "%d %s" % (r.status, reason)
        return "fail", "unexpected response %r %r" % (r, r.body[:200])


def drive(port, n, deadline):
    """Runs n clients to completion or until deadline (seconds); returns them."""
    sel = selectors.DefaultSelector()
    clients = []
    for i in range(n):
        c = Client(i, port)
        clients.append(c)
        sel.register(c.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, c)
    open_ = n
    end = time.monotonic() + deadline
    try:
        while open_ and time.monotonic() < end:
            for key, ev in sel.select(timeout=0.1):
                c = key.data
                now = time.monotonic()
                if ev & selectors.EVENT_READ:
                    c.on_read(now)
                if ev & selectors.EVENT_WRITE and not c.done:
                    c.on_write()
                if c.done:
                    sel.unregister(c.sock)
                    c.sock.close()
                    open_ -= 1
                    continue
                want = selectors.EVENT_READ | (selectors.EVENT_WRITE if c.wants_write() else 0)
                if want != key.events:
                    sel.modify(c.sock, want, c)
    finally:
        for c in clients:
            if not c.done:
                try:
                    sel.unregister(c.sock)
                except (KeyError, ValueError):
                    pass
                c.sock.close()
        sel.close()
    return clients


def burst(port, conns=10, per_conn=20, timeout=5.0):
    """conns keep-alive connections each GET /bytes?n=64 per_conn times; returns the
    [(status, complete, body ok)] and the seconds it took."""
    out = []
    lock = threading.Lock()
    want = pattern(0, 64)

    def one(i):
        got = []
        try:
            with HttpConn(port, timeout=timeout) as c:
                for j in range(per_conn):
                    c.request("GET", "/bytes?n=64&b=%d.%d" % (i, j))
                    r = c.read_response()
                    got.append((r.status, r.complete, r.body == want))
        except Exception as e:  # noqa: BLE001 - reported by the test
            got.append(repr(e))
        with lock:
            out.extend(got)

    t0 = time.monotonic()
    ts = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(conns)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(timeout + 1)
    return out, time.monotonic() - t0


def test_overload_answers_everyone_within_bounds(remora, upstream):
    p = remora(upstream, workers=1,
               upstream_opts={"max_requests": MAX_REQUESTS, "max_pending": MAX_PENDING,
                              "queue_timeout": QUEUE_TIMEOUT},
               routes=[{"name": "default", "match": {"path_prefix": "/"}, "upstream": "app",
                        "timeout": "30s"}],
               limits={"buffer_bytes": "%dKiB" % (BUFFER_BYTES // 1024),
                       "max_header_bytes": "%dKiB" % (MAX_HEADER_BYTES // 1024)})
    body_sha = pattern_sha256(BODY)
    idle_kib = p.rss_kib()
    upstream.stats(reset_peak=True)
    m0 = metrics(p.admin_port)

    t0 = time.monotonic()
    with RssSampler(p.pid, interval=0.05) as rss:
        clients = drive(p.port, CLIENTS, DEADLINE)
    took = time.monotonic() - t0
    assert p.alive(), "remora died under load"

    outcomes = [c.outcome(body_sha) for c in clients]
    ok = sum(1 for kind, _ in outcomes if kind == "ok")
    rejected = {}
    for kind, what in outcomes:
        if kind == "rejected":
            rejected[what] = rejected.get(what, 0) + 1
    fails = [(c.idx, what) for c, (kind, what) in zip(clients, outcomes) if kind == "fail"]
    bound = BASE_RSS + CLIENTS * (4 * BUFFER_BYTES + 2 * MAX_HEADER_BYTES)
    print("%d clients in %.1fs: %d ok, rejected %r; remora RSS idle %.1f MiB, peak %.1f MiB, "
          "bound %.1f MiB (%d samples)" % (CLIENTS, took, ok, rejected, idle_kib / 1024,
                                           rss.max_kib / 1024, bound / MIB, rss.samples))
    assert not fails, "%d clients failed, e.g. %r" % (len(fails), fails[:10])
    assert ok >= MAX_REQUESTS, "only %d of %d requests served" % (ok, CLIENTS)
    unknown = [k for k in rejected
               if not (k.startswith("504 ") or k in ("503 queue_full", "503 queue_timeout"))]
    assert not unknown, rejected
    assert rss.samples >= 10, "RSS sampler did not run"
    assert rss.max_kib * 1024 < bound, "peak RSS %.1f MiB over the bound %.1f MiB" % (
        rss.max_kib / 1024, bound / MIB)
    st = upstream.stats()
    assert 1 <= st["max_in_flight"] <= MAX_REQUESTS, st

    # drained: nothing queued or in flight; the counters match what the clients saw
    def idle():
        m = metrics(p.admin_port)
        return m if (m.value("remora_upstream_pending_requests", upstream="app"),
                     m.value("remora_upstream_requests_in_flight", upstream="app")) == (0, 0) \
            else None
    m = wait_for(idle, timeout=5.0, interval=0.1)
    assert m, metrics(p.admin_port).series("remora_upstream_pending_requests")
    for reason in REJECT_REASONS:
        seen = rejected.get("503 " + reason, 0)
        got = m.value("remora_requests_rejected_total", default=0, route="default",
                      reason=reason) - m0.value("remora_requests_rejected_total", default=0,
                                                route="default", reason=reason)
        assert got == seen, (reason, got, seen)
    d2xx = m.value("remora_requests_total", default=0, route="default", code="2xx") - \
        m0.value("remora_requests_total", default=0, route="default", code="2xx")
    d5xx = m.value("remora_requests_total", default=0, route="default", code="5xx") - \
        m0.value("remora_requests_total", default=0, route="default", code="5xx")
    assert (d2xx, d5xx) == (ok, sum(rejected.values())), (d2xx, d5xx, ok, rejected)

    # throughput recovers: 200 small requests over 10 keep-alive connections within 2 s
    results, secs = burst(p.port)
    print("burst of %d small GETs after the load: %.3fs" % (len(results), secs))
    bad = [x for x in results if x != (200, True, True)]
    assert len(results) == 200 and not bad, bad[:5]
    assert secs < 2.0, "200 small GETs took %.2fs after the load" % secs
