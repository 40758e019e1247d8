#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""ws_app: the WebSocket test app for remora's tunnel tests (test_80_websocket.py,
test_82_h2_tunnel.py), an asyncio server on Debian's python3-websockets 10.4.

    ws_app.py --port N [--host 127.0.0.1]

prints "READY <port>" once listening. No keepalive pings of its own (ping_interval None), no
message size limit (max_size None), so the bytes on the wire are only the test's.

A WebSocket handshake (GET with Upgrade: websocket) on any path opens a session:

  /deny[?status=N]   refused before the handshake: status N (default 403), body "denied\\n",
                     header x-app: denied (websockets answers it with Connection: close)
  /hash              every message is answered with a text message, JSON {"len","sha256"}
  anything else      echo: every text or binary message comes back as it came (same type),
                     except the text commands below

Text commands (echo sessions):
  cmd:send N         a binary message of N bytes of the 0123456789abcdef pattern, sent in
                     fragments of at most 1 MiB
  cmd:close [CODE]   the app starts the close handshake (code default 1000, reason "app bye")
  cmd:ping           the app sends a ping "app-ping" and, once the pong arrived, the text
                     message "pong-ok" (or "pong-timeout" after 3 s)
  cmd:hello          a text message "hello <conn id>"

A request without Upgrade: websocket (any path but /_stats) is answered 200 with JSON
{"conn","path","headers":[[n,v],...]}: what the app saw. websockets closes every connection
after such an answer (one request per connection).

GET /_stats answers JSON {"conns_total","conns_open","conns":[...]} over every connection but
the /_stats ones themselves: per connection {"id","open","path","upgrade" (a WebSocket session
was opened), "headers" (request headers [[n,v],...]), "messages" (count received),
"bytes" (message payload bytes received), "close_code" (of the close frame the peer sent,
or null), "close_reason", "pongs"}. A connection whose request never arrived counts too
(path null): the app counts TCP connections, not requests.
"""

import argparse
import asyncio
import hashlib
import http
import json
import sys
import urllib.parse

import websockets
import websockets.legacy.server
from websockets.exceptions import ConnectionClosed

from helpers import pattern

FRAGMENT = 1024 * 1024


class Stats:
    next_id = 1
    conns = {}      # id -> dict (control connections are removed once known)

    @classmethod
    def doc(cls):
        cs = [dict(c) for _, c in sorted(cls.conns.items())]
        return {"conns_total": len(cs), "conns_open": sum(1 for c in cs if c["open"]),
                "conns": cs}


class Proto(websockets.legacy.server.WebSocketServerProtocol):
    """Counts TCP connections and records what each one carried."""

    def connection_made(self, transport):
        self.conn_id = Stats.next_id
        Stats.next_id += 1
        self.rec = {"id": self.conn_id, "open": True, "path": None, "upgrade": False,
                    "headers": [], "messages": 0, "bytes": 0, "close_code": None,
                    "close_reason": None, "pongs": 0}
        Stats.conns[self.conn_id] = self.rec
        super().connection_made(transport)

    def connection_lost(self, exc):
        super().connection_lost(exc)
        rcvd = getattr(self, "close_rcvd", None)  # the peer's close frame, if one came
        if rcvd is not None:
            self.rec["close_code"] = rcvd.code
            self.rec["close_reason"] = rcvd.reason
        self.rec["open"] = False

    async def process_request(self, path, request_headers):
        u = urllib.parse.urlsplit(path)
        if u.path == "/_stats":
            Stats.conns.pop(self.conn_id, None)
            return (http.HTTPStatus.OK, [("Content-Type", "application/json")],
                    json.dumps(Stats.doc()).encode())
        self.rec["path"] = path
        self.rec["headers"] = [[k, v] for k, v in request_headers.raw_items()]
        upgrade = request_headers.get("Upgrade", "")
        if upgrade.lower() != "websocket":
            body = json.dumps({"conn": self.conn_id, "path": path,
                               "headers": self.rec["headers"]}).encode()
            return http.HTTPStatus.OK, [("Content-Type", "application/json")], body
        if u.path == "/deny":
            q = urllib.parse.parse_qs(u.query)
            status = int(q.get("status", ["403"])[0])
            return http.HTTPStatus(status), [("x-app", "denied")], b"denied\n"
        self.rec["upgrade"] = True
        return None


def fragments(n):
    off = 0
    while off < n:
        k = min(FRAGMENT, n - off)
        yield pattern(off, k)
        off += k


async def handler(ws):
    rec = ws.rec
    hash_mode = urllib.parse.urlsplit(ws.path).path == "/hash"
    try:
        async for msg in ws:
            rec["messages"] += 1
            rec["bytes"] += len(msg)
            if hash_mode:
                data = msg.encode() if isinstance(msg, str) else msg
                await ws.send(json.dumps({"len": len(data),
                                          "sha256": hashlib.sha256(data).hexdigest()}))
                continue
            if isinstance(msg, str) and msg.startswith("cmd:"):
                parts = msg.split()
                cmd = parts[0]
                if cmd == "cmd:send":
                    n = int(parts[1])
                    if n <= FRAGMENT:
                        await ws.send(pattern(0, n))
                    else:
                        await ws.send(fragments(n))
                elif cmd == "cmd:close":
                    code = int(parts[1]) if len(parts) > 1 else 1000
                    await ws.close(code, "app bye")
                    return
                elif cmd == "cmd:ping":
                    waiter = await ws.ping(b"app-ping")
                    try:
                        await asyncio.wait_for(waiter, 3.0)
                        rec["pongs"] += 1
                        await ws.send("pong-ok")
                    except asyncio.TimeoutError:
                        await ws.send("pong-timeout")
                elif cmd == "cmd:hello":
                    await ws.send("hello %d" % ws.conn_id)
                else:
                    await ws.send("unknown command")
                continue
            await ws.send(msg)
    except ConnectionClosed:
        pass


async def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True, help="port to listen on (0: ephemeral)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--name", default="", help="accepted for the fixtures; unused")
    args = ap.parse_args()
    server = await websockets.serve(handler, args.host, args.port, create_protocol=Proto,
                                    ping_interval=None, max_size=None, max_queue=4,
                                    close_timeout=2, backlog=1024, compression=None)
    port = server.sockets[0].getsockname()[1]
    print("READY %d" % port, flush=True)
    await asyncio.Future()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
