#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""grpc_app: a gRPC test server (python3-grpcio, no generated code) for remora's h2c upstream
tests. Service test.Echo, every message raw bytes (identity (de)serializers); h2c (insecure)
only, bound to 127.0.0.1.

    grpc_app.py --port N [--workers W] [--max-streams S]
        prints "READY <port>" once serving (--port 0: ephemeral); S is the
        SETTINGS_MAX_CONCURRENT_STREAMS it advertises (default: none)

| method | kind | behaviour |
| --- | --- | --- |
| Unary | unary-unary | returns the request bytes unchanged |
| ServerStream | unary-stream | request JSON {"n": N, "size": S}: N messages, message i is stream_message(i, S) |
| ClientStream | stream-unary | JSON {"count", "bytes", "sha256"} of the concatenated requests |
| BidiStream | stream-stream | echoes each request message as it arrives |
| Sleep | unary-unary | request JSON {"ms": N}: waits N ms (stops early when the call is cancelled or its deadline passed), then JSON {"slept_ms", "cancelled", "time_remaining", "peer"} (peer: the client's address, one per TCP connection) |
| Abort | unary-unary | request JSON {"code": C, "message": M}: sets trailing metadata x-app-trailer: yes and aborts with status C (a number) and message M |
| Metadata | unary-unary | JSON [[name, value], ...] of the request metadata the app received, plus ["_peer", peer] |
| Stats | unary-unary | JSON {"calls": {method: n}, "in_flight", "max_in_flight", "cancelled"}; request b"reset" restarts max_in_flight from in_flight |

Stats counts calls of every method but Stats itself. The module also serves the tests as a
library: start(tmp_path) starts the server as a subprocess and returns an App (stop it with
app.stop()); stream_message() builds the ServerStream messages; json_call() and friends wrap
generic client calls."""

import argparse
import hashlib
import json
import signal
import subprocess
import sys
import threading
import time
from concurrent import futures
from pathlib import Path

import grpc

from helpers import pattern, read_ready_line, stop_process

SERVICE = "test.Echo"
HERE = Path(__file__).resolve().parent
PYTHON = "/usr/bin/python3"
MAX_MSG = 64 * 1024 * 1024


def method(name):
    """The full path of a test.Echo method, e.g. '/test.Echo/Unary'."""
    return "/%s/%s" % (SERVICE, name)


def stream_message(i, size):
    """The i-th ServerStream message of size bytes: b"<i>:" then the repeating pattern
    (truncated to size when size is smaller than the prefix)."""
    head = b"%d:" % i
    if size <= len(head):
        return head[:size]
    return head + pattern(0, size - len(head))


# ---- server -------------------------------------------------------------------------------

class State:
    def __init__(self):
        self.lock = threading.Lock()
        self.calls = {}
        self.in_flight = 0
        self.max_in_flight = 0
        self.cancelled = 0

    def enter(self, name):
        with self.lock:
            self.calls[name] = self.calls.get(name, 0) + 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def leave(self):
        with self.lock:
            self.in_flight -= 1


STATE = State()


def counted(name, fn, streaming_response=False):
    if streaming_response:
        def wrap_gen(req, ctx):
            STATE.enter(name)
            try:
                yield from fn(req, ctx)
            finally:
                STATE.leave()
        return wrap_gen

    def wrap(req, ctx):
        STATE.enter(name)
        try:
            return fn(req, ctx)
        finally:
            STATE.leave()
    return wrap


def unary(req, ctx):
    return req


def server_stream(req, ctx):
    a = json.loads(req)
    for i in range(int(a["n"])):
        yield stream_message(i, int(a.get("size", 16)))


def client_stream(req_iter, ctx):
    h = hashlib.sha256()
    count = 0
    total = 0
    for m in req_iter:
        h.update(m)
        count += 1
        total += len(m)
    return json.dumps({"count": count, "bytes": total, "sha256": h.hexdigest()}).encode()


def bidi_stream(req_iter, ctx):
    for m in req_iter:
        yield m


def sleep(req, ctx):
    ms = int(json.loads(req)["ms"])
    t0 = time.monotonic()
    remaining = ctx.time_remaining()
    done = threading.Event()
    ctx.add_callback(done.set)  # runs when the RPC terminates (cancel, deadline, ...)
    done.wait(ms / 1000.0)
    cancelled = not ctx.is_active()
    if cancelled:
        with STATE.lock:
            STATE.cancelled += 1
    return json.dumps({"slept_ms": int((time.monotonic() - t0) * 1000),
                       "cancelled": cancelled,
                       "time_remaining": remaining, "peer": ctx.peer()}).encode()


CODES = {c.value[0]: c for c in grpc.StatusCode}


def abort(req, ctx):
    a = json.loads(req)
    ctx.set_trailing_metadata((("x-app-trailer", "yes"),))
    ctx.abort(CODES[int(a["code"])], a.get("message", ""))


def metadata(req, ctx):
    md = [[k, v if isinstance(v, str) else v.decode("latin-1")]
          for k, v in ctx.invocation_metadata()]
    md.append(["_peer", ctx.peer()])
    return json.dumps(md).encode()


def stats(req, ctx):
    with STATE.lock:
        out = {"calls": dict(STATE.calls), "in_flight": STATE.in_flight,
               "max_in_flight": STATE.max_in_flight, "cancelled": STATE.cancelled}
        if req == b"reset":
            STATE.max_in_flight = STATE.in_flight
    return json.dumps(out).encode()


def handler():
    ident = {"request_deserializer": None, "response_serializer": None}
    h = {
        "Unary": grpc.unary_unary_rpc_method_handler(counted("Unary", unary), **ident),
        "ServerStream": grpc.unary_stream_rpc_method_handler(
            counted("ServerStream", server_stream, True), **ident),
        "ClientStream": grpc.stream_unary_rpc_method_handler(
            counted("ClientStream", client_stream), **ident),
        "BidiStream": grpc.stream_stream_rpc_method_handler(
            counted("BidiStream", bidi_stream, True), **ident),
        "Sleep": grpc.unary_unary_rpc_method_handler(counted("Sleep", sleep), **ident),
        "Abort": grpc.unary_unary_rpc_method_handler(counted("Abort", abort), **ident),
        "Metadata": grpc.unary_unary_rpc_method_handler(counted("Metadata", metadata), **ident),
        "Stats": grpc.unary_unary_rpc_method_handler(stats, **ident),
    }
    return grpc.method_handlers_generic_handler(SERVICE, h)


def serve(port, workers, max_streams=0):
    opts = [("grpc.max_receive_message_length", MAX_MSG),
            ("grpc.max_send_message_length", MAX_MSG),
            ("grpc.so_reuseport", 0)]
    if max_streams:
        opts.append(("grpc.max_concurrent_streams", max_streams))
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers), options=opts,
                         maximum_concurrent_rpcs=None)
    server.add_generic_rpc_handlers((handler(),))
    bound = server.add_insecure_port("127.0.0.1:%d" % port)
    if not bound:
        print("cannot bind 127.0.0.1:%d" % port, file=sys.stderr, flush=True)
        return 1
    server.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    signal.signal(signal.SIGINT, lambda *a: stop.set())
    sys.stdout.write("READY %d\n" % bound)
    sys.stdout.flush()
    while not stop.wait(0.5):
        pass
    server.stop(0.5).wait(2)
    return 0


# ---- library for the tests ------------------------------------------------------------------

class App:
    def __init__(self, proc, port, log_path):
        self.proc = proc
        self.port = port
        self.log_path = log_path
        self.addr = "127.0.0.1:%d" % port

    def stop(self, grace=3.0):
        """SIGTERM, then SIGKILL after grace seconds; by PID only."""
        p = self.proc
        stop_process(p, grace)
        if p.stdout:
            p.stdout.close()
        return p.returncode

    def channel(self):
        return channel(self.port)

    def stats(self, reset=False):
        with self.channel() as ch:
            return json_call(ch, "Stats", b"reset" if reset else b"", timeout=5)


def start(tmp_path, workers=64, max_streams=0):
    """Starts grpc_app.py --port 0 as a subprocess; returns an App once it printed READY.
    max_streams: the SETTINGS_MAX_CONCURRENT_STREAMS the app advertises (0: grpc's default,
    no limit)."""
    log_path = Path(tmp_path) / ("grpc-app-%d.log" % time.monotonic_ns())
    with open(log_path, "wb") as errf:
        proc = subprocess.Popen([PYTHON, str(HERE / "grpc_app.py"), "--port", "0",
                                 "--workers", str(workers), "--max-streams", str(max_streams)],
                                stdout=subprocess.PIPE, stderr=errf, stdin=subprocess.DEVNULL)
    line = read_ready_line(proc, 15)
    app = App(proc, 0, log_path)
    if not line.startswith(b"READY "):
        app.stop()
        raise RuntimeError("grpc_app.py did not start: %r %s" % (line, log_path.read_text()))
    app.port = int(line.split()[1])
    app.addr = "127.0.0.1:%d" % app.port
    return app


def channel(port, host="127.0.0.1"):
    """An insecure (h2c prior knowledge) channel; no retries, no proxy, big messages."""
    opts = [("grpc.max_receive_message_length", MAX_MSG),
            ("grpc.max_send_message_length", MAX_MSG),
            ("grpc.enable_retries", 0),
            ("grpc.enable_http_proxy", 0),
            ("grpc.use_local_subchannel_pool", 1)]
    return grpc.insecure_channel("%s:%d" % (host, port), options=opts)


def unary_unary(ch, name):
    return ch.unary_unary(method(name), request_serializer=None, response_deserializer=None)


def unary_stream(ch, name):
    return ch.unary_stream(method(name), request_serializer=None, response_deserializer=None)


def stream_unary(ch, name):
    return ch.stream_unary(method(name), request_serializer=None, response_deserializer=None)


def stream_stream(ch, name):
    return ch.stream_stream(method(name), request_serializer=None, response_deserializer=None)


def json_call(ch, name, req, timeout=10, **kw):
    """A unary call whose answer is JSON; req is bytes or a JSON-able object."""
    if not isinstance(req, bytes):
        req = json.dumps(req).encode()
    return json.loads(unary_unary(ch, name)(req, timeout=timeout, **kw))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--workers", type=int, default=64, help="handler threads")
    ap.add_argument("--max-streams", type=int, default=0,
                    help="SETTINGS_MAX_CONCURRENT_STREAMS to advertise (0: no limit)")
    a = ap.parse_args()
    return serve(a.port, a.workers, a.max_streams)


if __name__ == "__main__":
    sys.exit(main())
