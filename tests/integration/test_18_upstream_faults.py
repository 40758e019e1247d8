# SPDX-License-Identifier: Apache-2.0
"""18: upstream faults (issue 17's battery), driven by the scriptable fault_app.py: an app that
refuses, resets (on accept, mid-head, mid-body), hangs (before the head, mid-body), sends a
malformed status line, both Content-Length and Transfer-Encoding, an oversized head, a 1xx
flood, 1xx then 200, a body where none may be (HEAD, 204, 304) or more than its Content-Length,
closes a keep-alive connection as it is reused, or answers before the request body arrived.

Each case, from an HTTP/1.1 and an h2c client: the documented status and x-remora-error (or, once
the head is out, a body never presented as complete: the h1 connection closes short of the
framing, the h2 stream is reset), the access log's status, error and termination code, how many
requests the app received (the keep-alive race retry included), and the pool's recovery (the
next request is answered, no upconn stays active, remora's upconns are the app's open ones).

The battery is data: CASES plus run_case(remora_port, app, case, client, ...), so it can be
replayed against one long-lived remora (remora_options(app) gives its upstreams and routes).
The same faults with fixed paths of upstream.py are covered elsewhere: test_12 (malformed
responses, chunk errors), test_23 (refused, reset before the response, timeout, cut body, per
protocol pair), test_30 (the retry rules in detail)."""

import collections
import itertools
import json
import os
import socket
import threading
import time

import pytest

from conftest import HERE, _app_factory, _stop_apps, Upstream
from h2util import H2Client
from helpers import HttpConn, free_port, http, metrics, wait_for

FAULT_APP_PY = HERE / "fault_app.py"
ROUTE_TIMEOUT = "1s"

# id: the case; fault: the built-in scenario; params: its x-fault-<name> headers; method, body;
# conn: the fault runs as a connection script (from the first byte of a fresh upconn);
# kind: "error" (remora's own answer: status, error), "cut" (the head is out, the body is cut:
# status is the app's), "ok" (the app's response goes through: status, body), "early" (the
# app answers before the request body arrived: the answer goes through, an h1 client's
# connection closes after it);
# term: the access log's termination code; requests: how many requests the app sees
# ("retry": 1, or 2 when the first went on a reused upconn: the keep-alive race retry);
# warm: send the request once first (so that the next one reuses an upconn);
# same_conn: the client's next request goes on the same connection (h1; h2 always does).
Case = collections.namedtuple(
    "Case", "id fault params method body conn kind status error term requests warm same_conn")


def case(id, fault, kind, status, error=None, term="--", params=None, method="GET", body=b"",
         conn=False, requests=1, warm=False, same_conn=False):
    return Case(id, fault, params or {}, method, body, conn, kind, status, error, term,
                requests, warm, same_conn)


CASES = [
    case("refuses", None, "error", 502, "connect_refused", "SC", requests=0),
    case("accept_then_reset", "accept_reset", "error", 502, "upstream_reset", "SH", conn=True,
         requests=0),
    case("reset_before_head", "reset", "error", 502, "upstream_reset", "SH", requests="retry"),
    case("reset_mid_head", "reset_mid_head", "error", 502, "upstream_reset", "SH"),
    case("reset_mid_body", "reset_mid_body", "cut", 200, "upstream_truncated", "SD"),
    case("hang_before_head", "hang_head", "error", 504, "upstream_timeout", "sH"),
    case("hang_mid_body", "hang_body", "cut", 200, "upstream_timeout", "sH"),
    case("hang_mid_chunked_body", "hang_body_chunked", "cut", 200, "upstream_timeout", "sH"),
    case("malformed_status_line", "bad_status", "error", 502, "bad_response", "SH"),
    case("status_below_100", "bad_status", "error", 502, "bad_response", "SH",
         params={"status": "099"}),
    case("cl_and_te", "cl_te", "error", 502, "bad_response", "SH"),
    case("oversized_head", "big_head", "error", 502, "bad_response", "SH"),
    case("flood_1xx", "flood_1xx", "error", 502, "bad_response", "SH", params={"ms": 0}),
    case("interim_then_200", "interim_then_200", "ok", 200, same_conn=True),
    case("body_on_head", "stray_body", "ok", 200, method="HEAD", same_conn=True),
    case("body_on_204", "stray_body", "ok", 204, params={"status": 204}, same_conn=True),
    case("body_on_304", "stray_body", "ok", 304, params={"status": 304}, same_conn=True),
    case("more_than_content_length", "over_cl", "ok", 200, same_conn=True),
    case("close_on_reuse_get", "close_on_reuse", "ok", 200, warm=True, requests=2,
         same_conn=True),
    case("close_on_reuse_rst_get", "close_on_reuse", "ok", 200, params={"rst": 1}, warm=True,
         requests=2, same_conn=True),
    case("close_on_reuse_post_body", "close_on_reuse", "error", 502, "upstream_reset", "SH",
         method="POST", body=b"p" * 1000, warm=True),
    case("early_response_close", "early_response", "early", 200, method="POST",
         body=b"u" * (1 << 20)),
    case("early_response_keep", "early_response", "early", 200, params={"close": 0},
         method="POST", body=b"u" * (1 << 20)),
]

OK_BODIES = {"ok": b"ok", "interim_then_200": b"final", "over_cl": b"hello", "close_on_reuse": b"fresh",
             "stray_body": b"", "early_response": b"early"}


class FaultApp(Upstream):
    """fault_app.py: .port serves the faults, .control_port its /_stats and /_control."""

    @property
    def control_port(self):
        return int(self.ready_line.split()[2])

    def _control(self, method, path, doc=None):
        body = json.dumps(doc).encode() if doc is not None else b""
        r = http(self.control_port, method, path, body=body, timeout=3)
        assert r.status == 200, r
        return r.json()

    def stats(self):
        return self._control("GET", "/_stats")

    def requests(self, path):
        return [q for q in self.stats()["requests"] if q["path"] == path]

    def queue(self, name):
        return self._control("POST", "/_control/next", {"name": name})

    def close_idle(self):
        return self._control("POST", "/_control/close_idle", {})


@pytest.fixture
def fault_app_factory(tmp_path):
    """Factory: fault_app_factory(args=()) -> a started FaultApp (args: fault_app.py's)."""
    start, started = _app_factory(tmp_path, FAULT_APP_PY, FaultApp)
    yield lambda args=(): start("", args)
    _stop_apps(started)


def remora_options(app, dead_port):
    """The remora factory's upstreams and routes for the battery: /refuses/ goes to a port
    nothing listens on, everything else to the fault app, with a 1 s route timeout."""
    ups = [{"name": "app", "endpoints": [app.addr], "connect_timeout": "1s",
            "idle_timeout": "10s", "max_connections": 64},
           {"name": "dead", "endpoints": ["127.0.0.1:%d" % dead_port], "connect_timeout": "1s",
            "idle_timeout": "2s", "max_connections": 64}]
    routes = [{"name": "dead", "match": {"path_prefix": "/refuses/"}, "upstream": "dead",
               "timeout": ROUTE_TIMEOUT},
              {"name": "app", "match": {"path_prefix": "/"}, "upstream": "app",
               "timeout": ROUTE_TIMEOUT}]
    return {"upstreams": ups, "routes": routes, "workers": 1}


_runs = itertools.count(1)


def _upconns(admin_port):
    m = metrics(admin_port)
    return (m.value("remora_upstream_connections", 0, upstream="app", state="active"),
            m.total("remora_upstream_connections", upstream="app"))


def _no_idle_upconn(app, admin_port):
    """A connection script runs on a fresh upconn only: the app closes its idle connections
    and remora must have seen them go."""
    app.close_idle()
    if admin_port is None:
        time.sleep(0.2)
        return
    assert wait_for(lambda: _upconns(admin_port)[1] == 0, timeout=2), _upconns(admin_port)


class H1Client:
    def __init__(self, port):
        self.port = port
        self.c = HttpConn(port, timeout=6)

    def exchange(self, c, path, headers):
        """One request of case c: (status, header(name) function, body, complete)."""
        if c.kind == "early":
            # The head and the first 64 KiB of a 1 MiB body; the rest never comes (an app
            # that answers on the head: the client does not wait for it to read more)
            cl = [("Content-Length", str(len(c.body)))]
            self.c.request(c.method, path, headers=headers + cl, body=c.body[:65536],
                           content_length=False)
        else:
            self.c.request(c.method, path, headers=headers, body=c.body)
        r = self.c.read_response(method=c.method)
        self.last = r
        return r.status, r.header, r.body, r.complete

    def cut_signalled(self):
        return self.c.is_closed(wait=3.0)

    def closed(self):
        return self.c.is_closed(wait=1.0)

    def interim(self):
        return [i.status for i in self.last.interim]

    def fresh(self):
        self.c.close()
        self.c = HttpConn(self.port, timeout=6)

    def abort(self):
        _shutdown(self.c.sock)

    def close(self):
        self.c.close()


def _shutdown(sock):
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


class H2cClient:
    def __init__(self, port):
        self.c = H2Client(port, timeout=6)

    def exchange(self, c, path, headers):
        hs = [(k.lower(), v) for k, v in headers]
        if c.kind == "early":
            sid = self.c.request(c.method, path, headers=hs + [("content-length",
                                                                 str(len(c.body)))],
                                 body=c.body[:65536], end_stream=False)
        else:
            if c.body:
                hs.append(("content-length", str(len(c.body))))
            sid = self.c.request(c.method, path, headers=hs, body=c.body or None)
        r = self.c.response(sid)
        self.last = r
        return r.status, r.header, r.body, r.ended

    def cut_signalled(self):
        # a reset stream, never END_STREAM; the connection itself goes on
        return self.last.reset is not None and not self.last.ended

    def closed(self):
        return False

    def interim(self):
        return [int(dict(h)[":status"]) for h in self.last.interim]

    def fresh(self):
        pass

    def abort(self):
        _shutdown(self.c.sock)

    def close(self):
        self.c.close()


CLIENTS = {"h1": H1Client, "h2c": H2cClient}


def run_case(remora_port, app, c, client="h1", access_logs=None, admin_port=None):
    """Runs case c once against the remora on remora_port in front of fault app `app`
    (configured with remora_options). access_logs: a function returning the access-log entries
    (to check the termination code); admin_port: remora's admin port (to check the upconn
    metrics). Raises AssertionError on any deviation."""
    run = next(_runs)
    prefix = "/refuses/" if c.id == "refuses" else "/f/"
    path = "%s%s?run=%d" % (prefix, c.id, run)
    headers = [("x-fault", c.fault)] if c.fault and not c.conn else []
    headers += [("x-fault-%s" % k, str(v)) for k, v in c.params.items()]
    if c.conn:
        _no_idle_upconn(app, admin_port)
        app.queue(c.fault)
    refused = 0
    if admin_port is not None and c.id == "refuses":
        refused = metrics(admin_port).value("remora_upstream_connect_failures_total", 0,
                                            upstream="dead", reason="refused")
    cl = CLIENTS[client](remora_port)
    # a response that never ends while bytes keep coming (a 1xx flood) defeats read timeouts
    watchdog = threading.Timer(10.0, cl.abort)
    watchdog.start()
    try:
        if c.warm:
            st, _, _, _ = cl.exchange(c._replace(method="GET", body=b""), path + "&warm=1",
                                      headers)
            assert st == 200, st
        t0 = time.monotonic()
        status, header, body, complete = cl.exchange(c, path, headers)
        took = time.monotonic() - t0
        what = "%s/%s: %s %r complete=%s" % (c.id, client, status, body[:80], complete)
        assert status == c.status, what
        if c.kind == "error":
            assert header("x-remora-error") == c.error, what
            assert complete and 0 < len(body) < 1024, what
        elif c.kind == "cut":
            assert header("x-remora-error") is None, what
            assert not complete, "a truncated body was presented as complete: " + what
            assert cl.cut_signalled(), "the cut was not signalled: " + what
        else:
            assert header("x-remora-error") is None, what
            assert complete and body == OK_BODIES[c.fault], what
            if c.kind == "early":
                # h1: the unread rest of the body leaves the connection out of sync
                assert client == "h2c" or cl.closed(), "connection kept after an early answer"
        if c.fault == "interim_then_200":
            assert cl.interim() == [103], what  # 100 is remora's own business
        # the exchange took what its fault takes (a 1 s route timeout at most), no more
        assert took < {"upstream_timeout": 1.8, "bad_response": 3.0}.get(c.error, 1.0), \
            (what, took)

        # what the app received
        seen = app.requests(path)
        want = c.requests
        if want == "retry":
            want = 2 if seen and seen[0]["n"] > 1 else 1
        assert len(seen) == want, (what, seen)
        if c.fault == "close_on_reuse":
            assert seen[0]["n"] > 1 and (want == 1 or seen[1]["n"] == 1), seen
        if c.kind == "early":
            assert not seen[0]["body_complete"], seen

        # the access log: status, error, termination code
        if access_logs is not None:
            def mine():
                return [e for e in access_logs() if e.get("path") == path]
            assert wait_for(mine, timeout=3), "no access log line for %s" % path
            e = mine()
            assert len(e) == 1, e
            e = e[0]
            assert e["status"] == c.status and e["termination"] == c.term, (what, e)
            assert e.get("error") == c.error, (what, e)

        # recovery: the client's next request (on the same connection where it must stay
        # usable: the stray bytes never reach it), then the pool's state
        if not (c.same_conn or client == "h2c"):
            cl.fresh()
        after = "/f/after?run=%d" % run
        st, _, b, done = cl.exchange(case("after", "ok", "ok", 200), after, [])
        assert (st, b, done) == (200, b"ok", True), (what, st, b)
        if admin_port is not None:
            if c.id == "refuses":
                assert metrics(admin_port).value("remora_upstream_connect_failures_total", 0,
                                                 upstream="dead", reason="refused") == refused + 1

            def settled():
                active, total = _upconns(admin_port)
                return active == 0 and total == app.stats()["conns_open"]
            assert wait_for(settled, timeout=3), (what, _upconns(admin_port), app.stats())
    finally:
        watchdog.cancel()
        cl.close()


@pytest.fixture
def battery(remora, fault_app_factory):
    app = fault_app_factory()
    p = remora(**remora_options(app, free_port()))
    return p, app


@pytest.mark.parametrize("client", sorted(CLIENTS))
@pytest.mark.parametrize("c", CASES, ids=[c.id for c in CASES])
def test_upstream_fault(battery, c, client):
    p, app = battery
    run_case(p.port, app, c, client, access_logs=p.access_logs, admin_port=p.admin_port)


def _fds(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def test_whole_battery_on_one_remora(battery):
    """Every case, both clients, one after the other on one remora (as a long-lived sidecar
    meets them): it still serves, and its open file descriptors are back to where they were
    (the app's idle connections closed first, so remora holds no upconn either time)."""
    p, app = battery
    run_case(p.port, app, case("warmup", "ok", "ok", 200), "h1")
    _no_idle_upconn(app, p.admin_port)
    base = _fds(p.pid)
    for client in sorted(CLIENTS):
        for c in CASES:
            run_case(p.port, app, c, client, access_logs=p.access_logs, admin_port=p.admin_port)
    _no_idle_upconn(app, p.admin_port)
    assert wait_for(lambda: _fds(p.pid) <= base, timeout=3), (base, _fds(p.pid))
    assert http(p.port, "GET", "/f/last").status == 200


def test_fault_app_standalone(fault_app_factory, sockdir):
    """The app as bench/soak use it: a script from a header, a built-in from the path, a
    queued connection script, the control port's request records, the Unix socket."""
    path = os.path.join(sockdir, "fault.sock")
    app = fault_app_factory(["--unix", path])
    script = [{"op": "read_body"}, {"op": "send", "data": "HTTP/1.1 201 Made\r\n"
                                    "Content-Length: 3\r\n\r\nabc"}]
    r = http(app.port, "POST", "/s", headers=[("x-fault-script", json.dumps(script))],
             body=b"12345")
    assert (r.status, r.body) == (201, b"abc")
    with HttpConn(app.port) as h:
        h.request("GET", "/fault/interim_then_200")
        r = h.read_response()
        assert (r.status, r.body, [i.status for i in r.interim]) == (200, b"final", [100, 103])
    app.queue("accept_reset")
    with HttpConn(app.port) as h:
        try:
            h.request("GET", "/never-read")
        except OSError:
            pass
        assert h.is_closed(wait=2)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as u:
        u.settimeout(3)
        u.connect(path)
        u.sendall(b"GET /fault/close HTTP/1.1\r\nHost: x\r\n\r\n")
        assert u.recv(100) == b""  # the `close` built-in: nothing, then EOF
    seen = app.stats()["requests"]
    assert [(q["path"], q["body_read"]) for q in seen] == [
        ("/s", 5), ("/fault/interim_then_200", 0), ("/fault/close", 0)]

