#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""upstream: the scriptable HTTP/1.1 test upstream (the "app") for remora's integration tests.

Standard library only (asyncio), plus helpers.py from this folder (the body pattern). Handles
keep-alive, pipelining (requests on a connection are answered strictly in order), chunked request
bodies, HEAD, HTTP/1.0 clients and many concurrent connections. Request bodies are always
streamed and hashed incrementally, never held whole.

    upstream.py --port N [--host 127.0.0.1]     prints "READY <port>" once listening

Behaviour is chosen by the request path (see README.md in this folder for the table). Every
response carries `x-upstream-conn` (a per-TCP-connection id) and `x-upstream-req-on-conn`
(1-based index of the request on that connection) so tests can observe pooling and reuse.
"""

import argparse
import asyncio
import hashlib
import json
import socket
import struct
import sys
import urllib.parse

# helpers.py (stdlib only) sits next to this script, and a script's directory is on sys.path
from helpers import BLOCK, add_tls_args, log_tls_conn, pattern, tls_server_context

READ_SIZE = 256 * 1024
HEAD_LIMIT = 1024 * 1024
NAME = ""

REASONS = {
    100: "Continue", 200: "OK", 201: "Created", 202: "Accepted", 204: "No Content",
    206: "Partial Content", 301: "Moved Permanently", 302: "Found", 304: "Not Modified",
    400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
    405: "Method Not Allowed", 408: "Request Timeout", 413: "Content Too Large",
    429: "Too Many Requests", 500: "Internal Server Error", 501: "Not Implemented",
    502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout",
}


class Stats:
    conns_open = 0
    conns_total = 0
    requests = 0
    ready_checks = 0
    in_flight = 0      # requests being handled now (control paths /_... not counted)
    max_in_flight = 0  # the peak of in_flight; /_stats?reset_peak=1 sets it to in_flight
    # connections that carried a request outside /_... (what remora opened; a test's own
    # /_stats and /_control asks are not counted): ever, and open now
    proxied_conns_total = 0
    proxied_conns_open = 0
    bodies_ended = 0  # request bodies read to their end (last byte or last chunk)


class Ready:
    """What GET /ready answers: set by GET /_control/ready?status=N[&delay_ms=M]."""
    status = 200
    delay_ms = 0


class BadRequest(Exception):
    pass


class Body:
    """Incremental reader of one request body (Content-Length or chunked)."""

    def __init__(self, reader, chunked, length):
        self.r = reader
        self.chunked = chunked
        self.remaining = length
        self.chunk_left = 0
        self.done = not chunked and length == 0
        self.trailers = []

    async def read(self, maxn=READ_SIZE):
        if self.done:
            return b""
        if not self.chunked:
            d = await self.r.read(min(maxn, self.remaining))
            if not d:
                raise ConnectionError("EOF inside request body")
            self.remaining -= len(d)
            if self.remaining == 0:
                self.done = True
                Stats.bodies_ended += 1
            return d
        while self.chunk_left == 0:
            line = await self.r.readuntil(b"\r\n")
            try:
                size = int(line[:-2].split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise BadRequest("bad chunk size line %r" % line)
            if size == 0:
                while True:
                    tl = await self.r.readuntil(b"\r\n")
                    if tl == b"\r\n":
                        break
                    name, _, value = tl[:-2].partition(b":")
                    self.trailers.append([name.decode("latin-1"),
                                          value.strip(b" \t").decode("latin-1")])
                self.done = True
                Stats.bodies_ended += 1
                return b""
            self.chunk_left = size
        d = await self.r.read(min(maxn, self.chunk_left))
        if not d:
            raise ConnectionError("EOF inside request chunk")
        self.chunk_left -= len(d)
        if self.chunk_left == 0:
            crlf = await self.r.readexactly(2)
            if crlf != b"\r\n":
                raise BadRequest("chunk data not followed by CRLF")
        return d

    async def consume(self):
        """Reads the rest of the body; returns (length, sha256 hex)."""
        h = hashlib.sha256()
        n = 0
        while True:
            d = await self.read()
            if not d:
                return n, h.hexdigest()
            h.update(d)
            n += len(d)


class Request:
    def __init__(self, method, target, version, headers):
        self.method = method
        self.target = target
        self.version = version
        self.headers = headers  # [[name, value], ...] as received
        u = urllib.parse.urlsplit(target)
        self.path = u.path
        qs = urllib.parse.parse_qs(u.query)
        self.query = {k: v[0] for k, v in qs.items()}
        # ?set=Name:Value (repeatable) adds that header to whatever response this gets.
        self.extra = [v.split(":", 1) for v in qs.get("set", []) if ":" in v]

    def get(self, name):
        name = name.lower()
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return None

    def get_all(self, name):
        name = name.lower()
        return [v for k, v in self.headers if k.lower() == name]

    def conn_tokens(self):
        toks = set()
        for v in self.get_all("connection"):
            toks.update(t.strip().lower() for t in v.split(","))
        return toks

    def qint(self, name, default):
        try:
            return int(self.query.get(name, default))
        except ValueError:
            return default


class Conn:
    next_id = 1

    def __init__(self, reader, writer):
        self.r = reader
        self.w = writer
        self.id = Conn.next_id
        Conn.next_id += 1
        self.nreq = 0
        self.idle_close_ms = None
        self.proxied = False  # counted in Stats.proxied_conns_*

    def ids(self):
        out = [["x-upstream-conn", str(self.id)], ["x-upstream-req-on-conn", str(self.nreq)]]
        if NAME:
            out.append(["x-upstream-name", NAME])
        return out

    async def read_request(self):
        try:
            head = await self.r.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as e:
            if e.partial.strip(b"\r\n"):
                raise BadRequest("EOF inside request head")
            return None
        except asyncio.LimitOverrunError:
            raise BadRequest("request head too large")
        head = head.lstrip(b"\r\n")  # RFC 9112 2.2: ignore empty lines before the request line
        lines = head[:-4].split(b"\r\n")
        parts = lines[0].decode("latin-1").split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            raise BadRequest("bad request line %r" % lines[0])
        headers = []
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep or not name or name != name.strip():
                raise BadRequest("bad header line %r" % line)
            headers.append([name.decode("latin-1"), value.strip(b" \t").decode("latin-1")])
        return Request(parts[0], parts[1], parts[2], headers)

    async def send_head(self, req, status, headers, keep, version=None, reason=None):
        version = version or ("HTTP/1.0" if req.version == "HTTP/1.0" else "HTTP/1.1")
        reason = reason or REASONS.get(status, "Status")
        out = ["%s %d %s\r\n" % (version, status, reason)]
        for k, v in headers + req.extra + self.ids():
            out.append("%s: %s\r\n" % (k, v))
        if not keep:
            out.append("Connection: close\r\n")
        elif version == "HTTP/1.0":
            out.append("Connection: keep-alive\r\n")
        out.append("\r\n")
        self.w.write("".join(out).encode("latin-1"))

    async def respond(self, req, status, body=b"", headers=None, keep=True, ctype="text/plain"):
        headers = list(headers or [])
        no_body = status in (204, 304) or 100 <= status < 200
        if not no_body:
            headers = [["Content-Type", ctype], ["Content-Length", str(len(body))]] + headers
        await self.send_head(req, status, headers, keep)
        if not no_body and req.method != "HEAD":
            self.w.write(body)
        await self.w.drain()

    async def send_pattern(self, n, start=0):
        off = start
        end = start + n
        while off < end:
            k = min(len(BLOCK), end - off)
            self.w.write(pattern(off, k))
            off += k
            await self.w.drain()

    async def hard_close(self, rst=False):
        if rst:
            sock = self.w.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.w.close()

    async def serve(self):
        Stats.conns_open += 1
        Stats.conns_total += 1
        try:
            while True:
                try:
                    if self.idle_close_ms is not None:
                        # ?idle_close_ms=N: like an app's keep-alive timeout, close the
                        # connection when no request arrives within N ms of the last one
                        try:
                            req = await asyncio.wait_for(self.read_request(),
                                                         self.idle_close_ms / 1000.0)
                        except asyncio.TimeoutError:
                            return
                    else:
                        req = await self.read_request()
                except BadRequest as e:
                    self.nreq += 1
                    await self.respond(Request("GET", "/", "HTTP/1.1", []), 400,
                                       ("bad request: %s\n" % e).encode(), keep=False)
                    return
                if req is None:
                    return
                self.nreq += 1
                Stats.requests += 1
                counted = not req.path.startswith("/_")
                if counted and not self.proxied:
                    self.proxied = True
                    Stats.proxied_conns_total += 1
                    Stats.proxied_conns_open += 1
                if counted:
                    Stats.in_flight += 1
                    Stats.max_in_flight = max(Stats.max_in_flight, Stats.in_flight)
                try:
                    keep = await self.handle(req)
                finally:
                    if counted:
                        Stats.in_flight -= 1
                if not keep:
                    return
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                BadRequest, OSError):
            return
        finally:
            Stats.conns_open -= 1
            if self.proxied:
                Stats.proxied_conns_open -= 1
            try:
                self.w.close()
            except Exception:
                pass

    async def handle(self, req):
        """Answers one request; returns True to keep reading requests on this connection."""
        te = req.get("transfer-encoding")
        cls = req.get_all("content-length")
        if te is not None:
            if te.strip().lower() != "chunked":
                await self.respond(req, 501, b"unsupported transfer-encoding\n", keep=False)
                return False
            body = Body(self.r, True, 0)
        elif cls:
            try:
                lens = {int(v) for v in cls}
            except ValueError:
                lens = set()
            if len(lens) != 1:
                await self.respond(req, 400, b"bad content-length\n", keep=False)
                return False
            body = Body(self.r, False, lens.pop())
        else:
            body = Body(self.r, False, 0)

        tokens = req.conn_tokens()
        if req.version == "HTTP/1.0":
            keep = "keep-alive" in tokens
        else:
            keep = "close" not in tokens

        if "idle_close_ms" in req.query:
            self.idle_close_ms = req.qint("idle_close_ms", 0)
        if req.query.get("close") == "1":
            keep = False  # ?close=1: answer with Connection: close and close
        if req.get("x-test-close-if-reused") == "1" and self.nreq > 1:
            await body.consume()
            await self.hard_close()
            return False

        p = req.path
        q = req.query
        if p == "/delay":
            await body.consume()
            await asyncio.sleep(req.qint("ms", 0) / 1000.0)
            await self.respond(req, 200, b"ok", keep=keep)
        elif p.startswith("/status/"):
            await body.consume()
            try:
                st = int(p[len("/status/"):])
            except ValueError:
                st = 400
            await self.respond(req, st, ("status %d\n" % st).encode(), keep=keep)
        elif p == "/bytes":
            await body.consume()
            n = req.qint("n", 0)
            await self.send_head(req, 200, [["Content-Type", "application/octet-stream"],
                                            ["Content-Length", str(n)]], keep)
            if req.method != "HEAD":
                await self.send_pattern(n)
            await self.w.drain()
        elif p == "/chunked":
            await body.consume()
            return await self.chunked(req, keep, req.qint("n", 0), max(1, req.qint("chunk", 4096)),
                                      q.get("trailer") == "1", terminate=True)
        elif p == "/close-mid":
            await body.consume()
            n = req.qint("n", 1000)
            send = req.qint("send", n // 2)
            await self.send_head(req, 200, [["Content-Type", "application/octet-stream"],
                                            ["Content-Length", str(n)]], True)
            await self.send_pattern(send)
            await self.w.drain()
            await self.hard_close()
            return False
        elif p == "/close-mid-chunked":
            await body.consume()
            send = req.qint("send", 1000)
            await self.chunked(req, True, send, max(1, req.qint("chunk", 4096)), False,
                               terminate=False)
            await self.hard_close()
            return False
        elif p == "/reset":
            await body.consume()
            await self.hard_close(rst=q.get("rst") == "1")
            return False
        elif p == "/http10":
            await body.consume()
            self.w.write(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n")
            for k, v in req.extra + self.ids():
                self.w.write(("%s: %s\r\n" % (k, v)).encode())
            self.w.write(b"\r\n")
            if req.method != "HEAD":
                self.w.write(b"hello10")
            await self.w.drain()
            await self.hard_close()
            return False
        elif p == "/malformed":
            # A response remora must refuse (502 bad_response); kind picks the defect.
            await body.consume()
            kind = q.get("kind", "garbage")
            raw = {
                "garbage": b"THIS IS NOT HTTP\r\n\r\n",
                "status": b"HTTP/1.1 2x0 OK\r\nContent-Length: 2\r\n\r\nok",
                "cl": b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\nok",
                "header": b"HTTP/1.1 200 OK\r\nbad header line\r\nContent-Length: 2\r\n\r\nok",
                "two_cl": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nokk",
                "cl_te": b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\nTransfer-Encoding: chunked\r\n"
                         b"\r\n5\r\nhello\r\n0\r\n\r\n",
                "te_gzip": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nhello",
                "bad_chunk": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n",
                # a chunk-size line that never ends (1 MiB of extension, then close)
                "chunk_ext": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"
                             b"5;x=" + b"a" * (1 << 20),
            }.get(kind, b"THIS IS NOT HTTP\r\n\r\n")
            self.w.write(raw)
            await self.w.drain()
            await self.hard_close()
            return False
        elif p == "/drip":
            # count chunks of size bytes, one every ms milliseconds (headers at once)
            await body.consume()
            count, size, ms = req.qint("count", 5), req.qint("size", 100), req.qint("ms", 100)
            await self.send_head(req, 200, [["Content-Type", "application/octet-stream"],
                                            ["Transfer-Encoding", "chunked"]], keep)
            await self.w.drain()
            if req.method == "HEAD":
                return keep
            for i in range(count):
                await asyncio.sleep(ms / 1000.0)
                self.w.write(b"%x\r\n" % size + pattern(i * size, size) + b"\r\n")
                await self.w.drain()
            self.w.write(b"0\r\n\r\n")
            await self.w.drain()
        elif p == "/early-hints":
            # a 103 (RFC 8297) and a 100 before the final response, which is an echo
            self.w.write(b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n")
            self.w.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            await self.w.drain()
            await self.echo(req, body, keep)
        elif p == "/upload":
            n, digest = await body.consume()
            await self.respond(req, 200, json.dumps({"body_len": n, "body_sha256": digest}).encode(),
                               keep=keep, ctype="application/json")
        elif p == "/slow-read":
            rate = max(1, req.qint("rate", 65536))
            step = max(1, rate // 20)
            h = hashlib.sha256()
            n = 0
            while True:
                d = await body.read(step)
                if not d:
                    break
                h.update(d)
                n += len(d)
                await asyncio.sleep(len(d) / rate)
            await self.respond(req, 200, json.dumps({"body_len": n, "body_sha256": h.hexdigest()})
                               .encode(), keep=keep, ctype="application/json")
        elif p == "/header":
            await body.consume()
            name = q.get("name", "x-big")
            size = req.qint("size", 100)
            await self.respond(req, 200, b"ok", headers=[[name, "a" * size]], keep=keep)
        elif p == "/ready":
            # a readiness endpoint for remora's health checks, controlled by /_control/ready
            await body.consume()
            Stats.ready_checks += 1
            status, delay_ms = Ready.status, Ready.delay_ms
            if delay_ms:
                await asyncio.sleep(delay_ms / 1000.0)
            await self.respond(req, status, ("ready %d\n" % status).encode(), keep=keep)
        elif p == "/_control/ready":
            await body.consume()
            Ready.status = req.qint("status", Ready.status)
            Ready.delay_ms = req.qint("delay_ms", 0)
            await self.respond(req, 200, json.dumps({
                "status": Ready.status, "delay_ms": Ready.delay_ms,
                "ready_checks": Stats.ready_checks}).encode(), keep=keep,
                ctype="application/json")
        elif p == "/_stats":
            await body.consume()
            doc = {"conns_open": Stats.conns_open, "conns_total": Stats.conns_total,
                   "requests": Stats.requests, "ready_checks": Stats.ready_checks,
                   "in_flight": Stats.in_flight, "max_in_flight": Stats.max_in_flight,
                   "proxied_conns_total": Stats.proxied_conns_total,
                   "proxied_conns_open": Stats.proxied_conns_open,
                   "bodies_ended": Stats.bodies_ended}
            if q.get("reset_peak") == "1":
                Stats.max_in_flight = Stats.in_flight
            await self.respond(req, 200, json.dumps(doc).encode(), keep=keep,
                               ctype="application/json")
        else:
            await self.echo(req, body, keep)
        return keep

    async def chunked(self, req, keep, n, chunk, trailer, terminate):
        hdrs = [["Content-Type", "application/octet-stream"]]
        if req.version == "HTTP/1.0":
            # HTTP/1.0 has no chunked coding: close-delimited instead.
            await self.send_head(req, 200, hdrs, False)
            if req.method != "HEAD":
                await self.send_pattern(n)
            await self.w.drain()
            await self.hard_close()
            return False
        hdrs.append(["Transfer-Encoding", "chunked"])
        if trailer:
            hdrs.append(["Trailer", "x-trailer"])
        await self.send_head(req, 200, hdrs, keep)
        if req.method == "HEAD":
            await self.w.drain()
            return keep
        off = 0
        while off < n:
            k = min(chunk, n - off)
            self.w.write(b"%x\r\n" % k)
            await self.send_pattern(k, off)
            self.w.write(b"\r\n")
            off += k
        if terminate:
            self.w.write(b"0\r\n")
            if trailer:
                self.w.write(b"x-trailer: yes\r\n")
            self.w.write(b"\r\n")
        await self.w.drain()
        return keep

    async def echo(self, req, body, keep):
        n, digest = await body.consume()
        doc = {
            "method": req.method,
            "path": req.target,
            "version": req.version,
            "headers": req.headers,
            "body_len": n,
            "body_sha256": digest,
            "body_chunked": body.chunked,
            "trailers": body.trailers,
        }
        await self.respond(req, 200, json.dumps(doc).encode(), keep=keep,
                           ctype="application/json")


async def on_client(reader, writer):
    log_tls_conn(writer)
    sock = writer.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
    await Conn(reader, writer).serve()


async def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True, help="port to listen on (0: ephemeral)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--name", default="", help="sent back in x-upstream-name on every response")
    ap.add_argument("--unix", default=None,
                    help="also serve on this Unix socket path (@name: abstract namespace); the "
                    "TCP port stays for a test's own /_stats and /_control asks")
    add_tls_args(ap)
    args = ap.parse_args()
    global NAME
    NAME = args.name
    server = await asyncio.start_server(on_client, args.host, args.port, limit=HEAD_LIMIT,
                                        backlog=1024, reuse_address=True)
    port = server.sockets[0].getsockname()[1]
    if args.unix:
        path = "\0" + args.unix[1:] if args.unix.startswith("@") else args.unix
        await asyncio.start_unix_server(on_client, path, backlog=1024, limit=HEAD_LIMIT)
    ready = "READY %d" % port
    tls_ctx = tls_server_context(args)
    if tls_ctx is not None:
        tls_server = await asyncio.start_server(on_client, args.host, 0, ssl=tls_ctx, limit=HEAD_LIMIT,
                                                backlog=1024, reuse_address=True)
        ready += " %d" % tls_server.sockets[0].getsockname()[1]
    print(ready, flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
