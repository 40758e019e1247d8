#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""tcp_echo: a raw TCP echo server with half-close for remora's tunnel tests (the upstream end
of plain CONNECT tunnels in test_83_connect.py, and of HTTP/1.1 Upgrade tunnels whose byte
counts and half-close the tests check, with --upgrade). Stdlib asyncio.

    tcp_echo.py --port N [--host 127.0.0.1] [--upgrade]

prints "READY <port> <control port>" once listening on both.

Every byte a connection receives is sent back as it comes (reading stops while the peer does
not read: no unbounded buffer). When the peer half-closes (FIN), the server sends the trailer
"BYE <n>\\n" (n: payload bytes received on that connection) and closes.

--upgrade: a connection first carries an HTTP/1.1 request head. With an Upgrade header it is
answered "101 Switching Protocols" (Upgrade: the same protocol, Connection: Upgrade, and
Sec-WebSocket-Accept when the request has a Sec-WebSocket-Key), then echoed as above (bytes
after the head count as payload); without one, 200 with the JSON of the head and close.

The control port answers GET /_stats (HTTP/1.1, one request per connection) with JSON
{"conns_total","conns_open","conns":[{"id","open","head" (request line and headers
[[n,v],...], --upgrade only), "bytes_in" (payload received), "bytes_out" (payload echoed,
trailer not counted), "eof" (the peer's FIN arrived), "reset" (the connection ended by an
error, e.g. a reset)}]}; control connections are not counted.
"""

import argparse
import asyncio
import base64
import hashlib
import json
import socket
import sys

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
UPGRADE = False


class Stats:
    conns = []

    @classmethod
    def doc(cls):
        return {"conns_total": len(cls.conns),
                "conns_open": sum(1 for c in cls.conns if c["open"]),
                "conns": [dict(c) for c in cls.conns]}


async def read_head(reader, rec):
    """Reads an HTTP/1.1 request head; returns (request line, [(n, v)], rest) or None."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        if len(buf) > 65536:
            return None
        d = await reader.read(65536)
        if not d:
            rec["eof"] = True
            return None
        buf += d
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    hs = []
    for line in lines[1:]:
        k, _, v = line.partition(":")
        hs.append((k.strip(), v.strip()))
    return lines[0], hs, rest


async def on_echo(reader, writer):
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    rec = {"id": len(Stats.conns) + 1, "open": True, "head": None, "bytes_in": 0,
           "bytes_out": 0, "eof": False, "reset": False}
    Stats.conns.append(rec)
    try:
        data = b""
        if UPGRADE:
            got = await read_head(reader, rec)
            if got is None:
                return
            line, hs, data = got
            rec["head"] = [line] + [[k, v] for k, v in hs]
            h = {k.lower(): v for k, v in hs}
            if "upgrade" not in h:
                body = json.dumps(rec["head"]).encode()
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body)
                             + body)
                await writer.drain()
                return
            resp = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: %s\r\nConnection: Upgrade\r\n" \
                % h["upgrade"]
            if "sec-websocket-key" in h:
                acc = base64.b64encode(hashlib.sha1(h["sec-websocket-key"].encode() + GUID)
                                       .digest()).decode()
                resp += "Sec-WebSocket-Accept: %s\r\n" % acc
            writer.write((resp + "\r\n").encode("latin-1"))
            await writer.drain()
        while True:
            if not data:
                data = await reader.read(65536)
                if not data:
                    rec["eof"] = True
                    break
            rec["bytes_in"] += len(data)
            writer.write(data)
            rec["bytes_out"] += len(data)
            data = b""
            await writer.drain()
        writer.write(b"BYE %d\n" % rec["bytes_in"])
        await writer.drain()
    except (ConnectionError, OSError):
        rec["reset"] = True
    finally:
        rec["open"] = False
        writer.close()


async def on_control(reader, writer):
    try:
        buf = b""
        while b"\r\n\r\n" not in buf and len(buf) < 65536:
            d = await reader.read(65536)
            if not d:
                return
            buf += d
        parts = buf.split(b"\r\n", 1)[0].split(b" ")
        if len(parts) == 3 and parts[1].split(b"?")[0] == b"/_stats":
            body = json.dumps(Stats.doc()).encode()
            status = b"200 OK"
        else:
            body = b"GET /_stats only\n"
            status = b"404 Not Found"
        writer.write(b"HTTP/1.1 %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                     b"Connection: close\r\n\r\n" % (status, len(body)) + body)
        await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


async def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True, help="port to listen on (0: ephemeral)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--upgrade", action="store_true",
                    help="expect an HTTP/1.1 Upgrade request first, answer 101, then echo")
    ap.add_argument("--name", default="", help="accepted for the fixtures; unused")
    args = ap.parse_args()
    global UPGRADE
    UPGRADE = args.upgrade
    echo = await asyncio.start_server(on_echo, args.host, args.port, backlog=1024,
                                      reuse_address=True)
    control = await asyncio.start_server(on_control, args.host, 0, reuse_address=True)
    print("READY %d %d" % (echo.sockets[0].getsockname()[1],
                           control.sockets[0].getsockname()[1]), flush=True)
    async with echo, control:
        await asyncio.gather(echo.serve_forever(), control.serve_forever())


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
