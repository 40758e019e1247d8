#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""fault_app: a scriptable misbehaving HTTP/1.1 app (the "upstream") for remora's fault tests,
bench/soak and manual runs. Standard library only (asyncio), plus helpers.py (the body pattern).

    fault_app.py --port N [--host 127.0.0.1] [--unix PATH] [--conn-script JSON]
        prints "READY <port> <control_port>" once listening

Every request is answered by a script: a list of steps run after its head was read (its body
is left unread unless a step reads it). The script comes from, in this order:
  - header `x-fault-script: <JSON list of steps>`;
  - header `x-fault: <name>` or a path `/fault/<name>[?params]`: a built-in scenario (BUILTINS);
    params come from the query string (`?n=100000&send=5000`) or `x-fault-<param>` headers;
  - otherwise "ok": the body is read and 200 "ok" answered (keep-alive).
A connection may also run a script from its first byte, before any request is read: the next
accepted connections take the scripts queued with `POST /_control/next` (control port), and with
`--conn-script` every other connection runs that one first. When a script ends without ending the
connection and the request body was read, the next request on the connection follows
(keep-alive); when the body was not read, the connection is closed (it cannot be resynced).

Steps (JSON objects, "op" plus arguments):
  read_head                     read up to the end of a request head (connection scripts)
  read_bytes n                  read n bytes (fewer at EOF)
  read_body                     read the rest of the current request's body (CL or chunked)
  send data [repeat]            raw bytes (a JSON string, code points 0-255); `hex` instead of data
  send_pattern n [off]          n bytes of helpers.pattern from offset off
  respond status [body] [headers] [close]   a well-formed response (Content-Length)
  sleep ms                      pause
  shutdown_write                half-close (FIN), keep reading
  close                         close (FIN)
  rst                           close with SO_LINGER 0 (RST)
  hang                          read and discard until the peer closes
  loop steps [count]            run steps count times (-1: until the peer goes away)

Control port (HTTP/1.1, one request per connection):
  GET  /_stats                  {"conns_total", "conns_open", "requests": [one record per request:
                                 conn, n (index on its connection), method, path, scenario,
                                 body_read, body_complete]}
  POST /_control/next           body {"script": [...]} or {"name": "<builtin>"}, "count": N:
                                 the next N accepted connections run it from their first byte
  POST /_control/close_idle     closes every connection waiting for a request; {"closed": N}
  POST /_control/clear          forgets the request records and queued scripts

Every response a built-in writes with `respond` carries x-fault-conn and x-fault-req-on-conn.
upstream.py stays the well-behaved app (with a few fixed faults); this one is the general
fault engine, by design independent of it: its responses are raw bytes, not an HTTP library's.
"""

import argparse
import asyncio
import json
import socket
import struct
import sys
import urllib.parse

from helpers import pattern

HEAD_LIMIT = 1024 * 1024
READ_SIZE = 256 * 1024


def _head(status, reason, headers):
    out = "HTTP/1.1 %d %s\r\n" % (status, reason)
    out += "".join("%s: %s\r\n" % (k, v) for k, v in headers)
    return out + "\r\n"


def _respond(status=200, body="ok", headers=(), close=False):
    return {"op": "respond", "status": status, "body": body, "headers": list(headers),
            "close": close}


def _p(params, name, default):
    try:
        return int(params.get(name, default))
    except ValueError:
        return default


# Built-in scenarios: name -> f(conn, params) -> steps. params: the query string and
# x-fault-<param> headers. Each one is one fault of issue 17's battery.
BUILTINS = {
    "ok": lambda c, p: [{"op": "read_body"}, _respond()],
    # no response at all: the connection ends right after the request (RST or FIN)
    "reset": lambda c, p: [{"op": "read_body"}, {"op": "rst"}],
    "close": lambda c, p: [{"op": "read_body"}, {"op": "close"}],
    # a connection script: RST without reading anything (remora has written its request)
    "accept_reset": lambda c, p: [{"op": "sleep", "ms": _p(p, "ms", 50)}, {"op": "rst"}],
    # part of a status line / head, then RST
    "reset_mid_head": lambda c, p: [
        {"op": "read_body"}, {"op": "send", "data": "HTTP/1.1 200 OK\r\nContent-Type: te"},
        {"op": "sleep", "ms": _p(p, "ms", 100)}, {"op": "rst"}],
    # a head announcing n bytes, send of them, then RST
    "reset_mid_body": lambda c, p: [
        {"op": "read_body"},
        {"op": "send", "data": _head(200, "OK", [("Content-Length", _p(p, "n", 100000))])},
        {"op": "send_pattern", "n": _p(p, "send", 5000)},
        {"op": "sleep", "ms": _p(p, "ms", 100)}, {"op": "rst"}],
    "hang_head": lambda c, p: [{"op": "read_body"}, {"op": "hang"}],
    "hang_body": lambda c, p: [
        {"op": "read_body"},
        {"op": "send", "data": _head(200, "OK", [("Content-Length", _p(p, "n", 100000))])},
        {"op": "send_pattern", "n": _p(p, "send", 5000)}, {"op": "hang"}],
    # same, chunked: the terminal chunk never comes
    "hang_body_chunked": lambda c, p: [
        {"op": "read_body"},
        {"op": "send", "data": _head(200, "OK", [("Transfer-Encoding", "chunked")]) +
         "5\r\nhello\r\n"}, {"op": "hang"}],
    # the status code is not three digits (status=: its three characters, e.g. 099)
    "bad_status": lambda c, p: [
        {"op": "read_body"},
        {"op": "send", "data": "HTTP/1.1 %s OK\r\nContent-Length: 2\r\n\r\nok"
         % p.get("status", "2OO")}, {"op": "hang"}],
    "cl_te": lambda c, p: [
        {"op": "read_body"},
        {"op": "send", "data": "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n"
         "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"}, {"op": "hang"}],
    # one header field of n bytes (default 80 KiB: over remora's 64 KiB default)
    "big_head": lambda c, p: [
        {"op": "read_body"},
        {"op": "send", "data": _head(200, "OK", [("x-big", "a" * _p(p, "n", 80 * 1024)),
                                                  ("Content-Length", 2)]) + "ok"},
        {"op": "hang"}],
    # interim responses without end (100 and 103 in turn, one every ms), never a final one
    "flood_1xx": lambda c, p: [
        {"op": "read_body"},
        {"op": "loop", "count": _p(p, "count", -1), "steps": [
            {"op": "send", "data": "HTTP/1.1 100 Continue\r\n\r\n"
             "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"},
            {"op": "sleep", "ms": _p(p, "ms", 5)}]},
        _respond()],
    "interim_then_200": lambda c, p: [
        {"op": "read_body"},
        {"op": "send", "data": "HTTP/1.1 100 Continue\r\n\r\n"
         "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"},
        _respond(body="final")],
    # a body where none may be (HEAD, 204, 304): the stray bytes are a whole response of
    # their own, which must never reach the next request
    "stray_body": lambda c, p: [
        {"op": "read_body"},
        {"op": "send", "data": _head(_p(p, "status", 200), "X", [("Content-Length", 5)]) +
         "hello" + _head(200, "OK", [("Content-Length", 8)]) + "smuggled"},
        {"op": "hang"}],
    # more body than Content-Length: the same stray response follows the 5 bytes
    "over_cl": lambda c, p: [
        {"op": "read_body"},
        {"op": "send", "data": _head(200, "OK", [("Content-Length", 5)]) + "hello" +
         _head(200, "OK", [("Content-Length", 8)]) + "smuggled"},
        {"op": "hang"}],
    # the keep-alive race: a reused connection closes as the next request arrives (the
    # request is read, never answered; rst=1: unread, with a RST); a fresh one answers
    "close_on_reuse": lambda c, p: (
        ([{"op": "rst"}] if _p(p, "rst", 0) else [{"op": "read_body"}, {"op": "close"}])
        if c.nreq > 1 else [{"op": "read_body"}, _respond(body="fresh")]),
    # the answer before the request body (never read): close=1 closes after it, else the
    # app reads (discards) the body and keeps the connection
    "early_response": lambda c, p: (
        [_respond(status=_p(p, "status", 200), body="early", close=True),
         {"op": "sleep", "ms": _p(p, "ms", 200)}, {"op": "close"}]
        if _p(p, "close", 1) else
        [_respond(status=_p(p, "status", 200), body="early"), {"op": "read_body"}]),
}


class Stats:
    conns_total = 0
    conns_open = 0
    requests = []
    queued = []          # connection scripts for the next accepted connections
    conn_script = None   # --conn-script: what the others run
    conns = set()        # live FaultConn


class PeerGone(Exception):
    pass


class Request:
    def __init__(self, method, target, headers):
        self.method = method
        self.target = target
        self.headers = headers
        u = urllib.parse.urlsplit(target)
        self.path = u.path
        self.params = {k: v[0] for k, v in urllib.parse.parse_qs(u.query).items()}
        for k, v in headers:
            if k.lower().startswith("x-fault-") and k.lower() != "x-fault-script":
                self.params.setdefault(k.lower()[len("x-fault-"):], v)
        te = self.get("transfer-encoding")
        self.chunked = te is not None and "chunked" in te.lower()
        cl = self.get("content-length")
        self.left = int(cl) if cl and not self.chunked else 0
        self.body_done = not self.chunked and self.left == 0
        self.body_read = 0
        self.rec = {}

    def get(self, name):
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return None


class FaultConn:
    next_id = 1

    def __init__(self, reader, writer):
        self.r = reader
        self.w = writer
        self.id = FaultConn.next_id
        FaultConn.next_id += 1
        self.nreq = 0
        self.idle = False
        self.ended = False
        self.req = None

    # ---- reading ------------------------------------------------------------------------

    async def read_head(self):
        try:
            head = await self.r.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return None
        lines = head[:-4].decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        headers = []
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers.append((k, v.strip(" \t")))
        return Request(parts[0], parts[1] if len(parts) > 1 else "", headers)

    async def read_body(self):
        q = self.req
        if q is None:
            return
        while not q.body_done:
            if not q.chunked:
                d = await self.r.read(min(READ_SIZE, q.left))
                if not d:
                    raise PeerGone()
                q.left -= len(d)
                q.body_read += len(d)
                q.body_done = q.left == 0
                q.rec["body_read"] = q.body_read
                continue
            line = await self.r.readuntil(b"\r\n")
            size = int(line[:-2].split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while await self.r.readuntil(b"\r\n") != b"\r\n":
                    pass
                q.body_done = True
                break
            await self.r.readexactly(size + 2)
            q.body_read += size
            q.rec["body_read"] = q.body_read
        q.rec["body_read"] = q.body_read
        q.rec["body_complete"] = True

    # ---- the script -----------------------------------------------------------------------

    async def send(self, data):
        if self.ended:
            raise PeerGone()
        self.w.write(data)
        await self.w.drain()

    def hard_close(self, rst):
        if self.ended:
            return
        self.ended = True
        if rst:
            sock = self.w.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.w.close()

    async def run(self, steps):
        for st in steps:
            if self.ended:
                return
            await self.step(st)

    async def step(self, st):
        op = st.get("op")
        if op == "read_head":
            try:
                await self.r.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                raise PeerGone()
        elif op == "read_bytes":
            n = int(st.get("n", 0))
            try:
                await self.r.readexactly(n)
            except asyncio.IncompleteReadError:
                raise PeerGone()
        elif op == "read_body":
            await self.read_body()
        elif op == "send":
            data = bytes.fromhex(st["hex"]) if "hex" in st else st.get("data", "").encode("latin-1")
            await self.send(data * int(st.get("repeat", 1)))
        elif op == "send_pattern":
            n, off = int(st.get("n", 0)), int(st.get("off", 0))
            end = off + n
            while off < end:
                k = min(64 * 1024, end - off)
                await self.send(pattern(off, k))
                off += k
        elif op == "respond":
            body = str(st.get("body", "")).encode("latin-1")
            status = int(st.get("status", 200))
            hs = [(k, v) for k, v in st.get("headers", [])]
            if status not in (204, 304) and not 100 <= status < 200:
                hs.append(("Content-Length", len(body)))
            else:
                body = b""
            if self.req is not None and self.req.method == "HEAD":
                body = b""
            hs += [("x-fault-conn", self.id), ("x-fault-req-on-conn", self.nreq)]
            if st.get("close"):
                hs.append(("Connection", "close"))
            await self.send(_head(status, "OK" if status < 300 else "Status", hs).encode("latin-1") + body)
        elif op == "sleep":
            await asyncio.sleep(int(st.get("ms", 0)) / 1000.0)
        elif op == "shutdown_write":
            if self.w.can_write_eof():
                self.w.write_eof()
        elif op == "close":
            self.hard_close(False)
        elif op == "rst":
            self.hard_close(True)
        elif op == "hang":
            while await self.r.read(READ_SIZE):
                pass
            raise PeerGone()
        elif op == "loop":
            count = int(st.get("count", 1))
            i = 0
            while count < 0 or i < count:
                await self.run(st.get("steps", []))
                i += 1
        else:
            raise ValueError("unknown step %r" % st)

    def script_of(self, req):
        raw = req.get("x-fault-script")
        if raw is not None:
            return "script", json.loads(raw)
        name = req.get("x-fault")
        if name is None and req.path.startswith("/fault/"):
            name = req.path[len("/fault/"):]
        name = name or "ok"
        if name not in BUILTINS:
            return name, [{"op": "read_body"},
                          _respond(404, "no such fault %r\n" % name)]
        return name, BUILTINS[name](self, req.params)

    async def serve(self):
        Stats.conns_total += 1
        Stats.conns_open += 1
        Stats.conns.add(self)
        try:
            if Stats.queued:
                await self.run(Stats.queued.pop(0))
            elif Stats.conn_script:
                await self.run(Stats.conn_script)
            while not self.ended:
                self.idle = True
                self.req = None
                req = await self.read_head()
                self.idle = False
                if req is None or self.ended:
                    return
                self.req = req
                self.nreq += 1
                name, steps = self.script_of(req)
                req.rec = {"conn": self.id, "n": self.nreq, "method": req.method,
                           "path": req.target, "scenario": name, "body_read": 0,
                           "body_complete": req.body_done}
                Stats.requests.append(req.rec)
                await self.run(steps)
                if not req.body_done:
                    return  # the rest of the body would be read as a head
        except (PeerGone, ConnectionError, OSError, asyncio.IncompleteReadError,
                asyncio.LimitOverrunError, ValueError):
            return
        finally:
            Stats.conns_open -= 1
            Stats.conns.discard(self)
            self.hard_close(False)


async def on_client(reader, writer):
    sock = writer.get_extra_info("socket")
    if sock is not None and sock.family != socket.AF_UNIX:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    await FaultConn(reader, writer).serve()


async def on_control(reader, writer):
    """The control port: one request, one JSON answer, then close."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        method, target = lines[0].split(" ")[:2]
        n = 0
        for line in lines[1:]:
            k, _, v = line.partition(":")
            if k.strip().lower() == "content-length":
                n = int(v)
        body = json.loads(await reader.readexactly(n)) if n else {}
        path = urllib.parse.urlsplit(target).path
        status, doc = 200, {}
        if path == "/_stats":
            doc = {"conns_total": Stats.conns_total, "conns_open": Stats.conns_open,
                   "requests": Stats.requests}
        elif path == "/_control/next" and method == "POST":
            script = body.get("script")
            if script is None:
                script = BUILTINS[body["name"]](None, body.get("params", {}))
            Stats.queued.extend([script] * int(body.get("count", 1)))
            doc = {"queued": len(Stats.queued)}
        elif path == "/_control/close_idle" and method == "POST":
            idle = [c for c in Stats.conns if c.idle]
            for c in idle:
                c.hard_close(False)
            doc = {"closed": len(idle)}
        elif path == "/_control/clear" and method == "POST":
            Stats.requests = []
            Stats.queued = []
        else:
            status, doc = 404, {"error": "no such control path"}
        out = json.dumps(doc).encode()
        writer.write(b"HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                     b"Connection: close\r\n\r\n" % (status, len(out)) + out)
        await writer.drain()
    except (ConnectionError, OSError, asyncio.IncompleteReadError, ValueError, KeyError):
        pass
    finally:
        writer.close()


async def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True, help="port to listen on (0: ephemeral)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--control-port", type=int, default=0)
    ap.add_argument("--unix", default=None, help="also serve on this Unix socket path "
                    "(@name: abstract namespace)")
    ap.add_argument("--conn-script", default=None,
                    help="a JSON list of steps every accepted connection runs first")
    ap.add_argument("--name", default="", help="ignored (the test fixtures pass it)")
    args = ap.parse_args()
    if args.conn_script:
        Stats.conn_script = json.loads(args.conn_script)
    server = await asyncio.start_server(on_client, args.host, args.port, limit=HEAD_LIMIT,
                                        backlog=1024, reuse_address=True)
    control = await asyncio.start_server(on_control, args.host, args.control_port,
                                         reuse_address=True)
    if args.unix:
        path = "\0" + args.unix[1:] if args.unix.startswith("@") else args.unix
        await asyncio.start_unix_server(on_client, path, backlog=1024, limit=HEAD_LIMIT)
    print("READY %d %d" % (server.sockets[0].getsockname()[1],
                           control.sockets[0].getsockname()[1]), flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
