#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""accesslog_run: one run of accesslog-diff's fixed request mix against one remora binary.

    accesslog_run.py --bin REMORA --out FILE --workdir DIR [--root REPO]

Starts tests/integration/upstream.py (HTTP/1.1 app), tests/integration/h2_upstream.py (h2c
app) and the remora binary (workers: 1, access log on, JSON on stderr) on loopback ports,
runs the request mix of CASES one request at a time with curl (HTTP/1.1 and
--http2-prior-knowledge) and a raw socket (pipelining), and writes to FILE, per case, what the
client saw (status codes, curl exit code, connections opened) and the access-log lines that
case produced, reduced to the fields that must not change with a refactor:

    method path route status upstream (as its configured name) bytes_in bytes_out
    termination error grpc_status

Request ids, durations, timestamps, client addresses and ports are left out. After each case
the runner waits (at most CASE_LOG_WAIT s) for the access lines it expects, then SETTLE s more,
so a missing or extra line shows up in that case's record. Every wait has a timeout; the whole
run is bounded by RUN_TIMEOUT (SIGALRM); every process is stopped by its PID (SIGTERM, then
SIGKILL) in a finally block, also on SIGINT/SIGTERM. Standard library only. Exit status: 0 the
run completed (whatever the responses were), 2 setup failed (the FILE then says why).

Ports: listener, admin and the refused endpoint are probed at random in 20000-32767 (5 digits,
below the kernel's ephemeral range, so every Host header has the same length and bytes_in does
not move between runs); the apps take ephemeral ports (also 5 digits).
"""

import argparse
import json
import os
import random
import selectors
import signal
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
from helpers import stop_process  # noqa: E402  (the suite's one process stopper)

PYTHON = "/usr/bin/python3"
RUN_TIMEOUT = 300
CASE_LOG_WAIT = 5.0
SETTLE = 0.15
CURL_MAX_TIME = "10"

FIELDS = ("method", "path", "route", "status", "upstream", "bytes_in", "bytes_out",
          "termination", "error", "grpc_status")

PATTERN = b"0123456789abcdef"

# Cases whose bytes_out depends on timing at 403b0c2, seen across repeated runs of one binary:
# a chunked response is re-chunked per read from the app (chunk-size lines vary); toward an
# HTTP/2 client the line is logged when the stream ends on the proxy side, while DATA and
# trailers may still wait in nghttp2 (98183 or 98409 for /bytes?n=100000; 115 or 130 with
# trailers). For these, bytes_out is recorded as 0 or >0 only.
APPROX_BYTES_OUT = {
    "h1-get-chunked-trailer", "h1-close-mid-chunked", "h1-h2c-trailers",
    "h2-get-bytes", "h2-get-chunked-trailer", "h2-close-mid-body", "h2-close-mid-chunked",
    "h2-h2c-trailers", "h2-grpc-trailers",
}


class SetupError(Exception):
    pass


class Timeout(Exception):
    pass


# ---- processes ----------------------------------------------------------------------------

def stop(proc, grace=3.0):
    """helpers.stop_process (by PID: SIGTERM, SIGKILL after grace s), None-safe."""
    return None if proc is None else stop_process(proc, grace)


def read_ready(proc, timeout):
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    line = b""
    end = time.monotonic() + timeout
    while not line.endswith(b"\n") and time.monotonic() < end:
        if sel.select(timeout=0.2):
            ch = os.read(proc.stdout.fileno(), 1)
            if not ch:
                break
            line += ch
    sel.close()
    return line


def start_app(script, workdir, name, procs):
    errf = open(os.path.join(workdir, name + ".stderr"), "wb")
    proc = subprocess.Popen([PYTHON, script, "--port", "0"], stdout=subprocess.PIPE,
                            stderr=errf, stdin=subprocess.DEVNULL,
                            cwd=os.path.dirname(script))
    errf.close()
    procs.append(proc)
    line = read_ready(proc, 10)
    if not line.startswith(b"READY "):
        raise SetupError("%s did not print READY within 10 s: %r" % (name, line))
    return int(line.split()[1])


def port_free(p):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", p))
        except OSError:
            return False
    return True


def probe_ports(n, avoid=()):
    rng = random.Random()  # ports need not be reproducible, only their width
    out = []
    for _ in range(2000):
        p = rng.randrange(20000, 32768)
        if p in out or p in avoid or not port_free(p):
            continue
        out.append(p)
        if len(out) == n:
            return out
    raise SetupError("no free port found in 20000-32767")


def http_status(port, path, timeout=0.5):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.settimeout(timeout)
            s.sendall(b"GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % path.encode())
            data = b""
            while b"\r\n" not in data:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
            parts = data.split(b" ", 2)
            return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None
    except OSError:
        return None


# ---- the access log ------------------------------------------------------------------------

class AccessLog:
    def __init__(self, path, names):
        self.path = path
        self.names = names  # "127.0.0.1:port" -> upstream name
        self.seen = 0

    def lines(self):
        out = []
        try:
            with open(self.path, "rb") as f:
                data = f.read()
        except OSError:
            return out
        for raw in data.split(b"\n"):
            raw = raw.strip()
            if not raw.startswith(b"{"):
                continue
            try:
                e = json.loads(raw)
            except ValueError:
                continue  # a line being written
            if isinstance(e, dict) and e.get("msg") == "access":
                out.append(e)
        return out

    def take(self, expect):
        """The access lines logged since the last take: waits for `expect` of them (at most
        CASE_LOG_WAIT s), then SETTLE s more for any extra."""
        end = time.monotonic() + CASE_LOG_WAIT
        while len(self.lines()) - self.seen < expect and time.monotonic() < end:
            time.sleep(0.02)
        time.sleep(SETTLE)
        all_lines = self.lines()
        new = all_lines[self.seen:]
        self.seen = len(all_lines)
        return new

    def fmt(self, e, approx_out=False):
        parts = []
        for k in FIELDS:
            if k not in e:
                continue
            v = e[k]
            if k == "upstream" and isinstance(v, str):
                v = self.names.get(v, v)
            if k == "bytes_out" and approx_out and isinstance(v, int):
                parts.append("bytes_out%s" % ("=0" if v == 0 else ">0(timing-dependent)"))
                continue
            parts.append("%s=%s" % (k, json.dumps(v)))
        return " ".join(parts)


# ---- clients -------------------------------------------------------------------------------

class Ctx:
    def __init__(self, port, workdir):
        self.port = port
        self.base = "http://127.0.0.1:%d" % port
        self.workdir = workdir

    def file(self, name, n):
        path = os.path.join(self.workdir, name)
        if not os.path.exists(path):
            with open(path, "wb") as f:
                f.write((PATTERN * (n // len(PATTERN) + 1))[:n])
        return path


def curl(ctx, args, urls, stdin_path=None):
    """Runs curl once (several URLs reuse one connection); returns the client-side record."""
    cmd = ["curl", "-s", "--max-time", CURL_MAX_TIME, "--connect-timeout", "3",
           "-w", "%{http_code}/%{num_connects} "] + list(args)
    for u in urls:
        cmd += ["-o", "/dev/null", ctx.base + u]
    stdin = open(stdin_path, "rb") if stdin_path else subprocess.DEVNULL
    try:
        r = subprocess.run(cmd, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=float(CURL_MAX_TIME) + 5)
        if r.returncode != 0:
            # The status of a response cut short is a race in curl (000 or the real one).
            return "curl_exit=%d" % r.returncode
        return "status/connects=%s curl_exit=0" % r.stdout.decode().strip()
    except subprocess.TimeoutExpired:
        return "curl timed out"
    finally:
        if stdin_path:
            stdin.close()


def h2load_seq(ctx, urls):
    """HTTP/2 keep-alive: the URLs one after the other on one connection (h2load -c1 -m1).
    curl 7.88.1 cannot reuse a prior-knowledge connection (the second URL fails with exit 16
    and is never sent), so curl cannot do this case."""
    cmd = ["h2load", "-n", str(len(urls)), "-c", "1", "-m", "1", "-t", "1"]
    cmd += [ctx.base + u for u in urls]
    try:
        r = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=float(CURL_MAX_TIME) + 5)
    except subprocess.TimeoutExpired:
        return "h2load timed out"
    keep = [ln.strip() for ln in r.stdout.decode(errors="replace").splitlines()
            if ln.startswith(("requests:", "status codes:"))]
    return "h2load %s exit=%d" % ("; ".join(keep), r.returncode)


def read_response(sock, buf, head_only=False):
    """Reads one HTTP/1.1 response off sock (buf: bytearray of bytes already read). Returns
    the status, or None on EOF/timeout."""
    def fill():
        d = sock.recv(65536)
        if not d:
            raise EOFError
        buf.extend(d)

    try:
        while b"\r\n\r\n" not in buf:
            fill()
        i = buf.index(b"\r\n\r\n")
        head = bytes(buf[:i]).decode("latin-1").split("\r\n")
        del buf[:i + 4]
        status = int(head[0].split()[1])
        hdrs = {}
        for h in head[1:]:
            k, _, v = h.partition(":")
            hdrs[k.strip().lower()] = v.strip()
        if head_only or status in (204, 304) or 100 <= status < 200:
            return status
        if "content-length" in hdrs:
            n = int(hdrs["content-length"])
            while len(buf) < n:
                fill()
            del buf[:n]
        elif "chunked" in hdrs.get("transfer-encoding", ""):
            while True:
                while b"\r\n" not in buf:
                    fill()
                j = buf.index(b"\r\n")
                size = int(bytes(buf[:j]).split(b";")[0], 16)
                del buf[:j + 2]
                if size == 0:
                    while b"\r\n\r\n" not in buf and not buf.startswith(b"\r\n"):
                        fill()
                    if buf.startswith(b"\r\n"):
                        del buf[:2]
                    else:
                        del buf[:buf.index(b"\r\n\r\n") + 4]
                    break
                while len(buf) < size + 2:
                    fill()
                del buf[:size + 2]
        return status
    except (EOFError, OSError, ValueError, IndexError):
        return None


def pipelined(ctx, paths):
    """Sends every request in one write on one connection, reads the responses in order."""
    reqs = b"".join(b"GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUser-Agent: accesslog-diff\r\n\r\n"
                    % (p.encode(), ctx.port) for p in paths)
    statuses = []
    try:
        with socket.create_connection(("127.0.0.1", ctx.port), timeout=5) as s:
            s.settimeout(5)
            s.sendall(reqs)
            buf = bytearray()
            for _ in paths:
                statuses.append(read_response(s, buf))
    except OSError as e:
        statuses.append("error %s" % type(e).__name__)
    return "pipelined statuses=%s" % statuses


# ---- the request mix -----------------------------------------------------------------------

H2 = ["--http2-prior-knowledge"]
NO_EXPECT = ["-H", "Expect:"]
GRPC = ["-H", "content-type: application/grpc", "-H", "te: trailers"]


def cases(ctx):
    """(name, expected access lines, action) in the order they run. Append new cases at the
    end: inserting one shifts nothing but its own record, but keep the list stable so two
    binaries are always compared on the same mix."""
    body60k = ctx.file("body-60000", 60000)
    body50k = ctx.file("body-50000", 50000)
    body100k = ctx.file("body-100000", 100000)
    big_hdr = ["-H", "x-big: " + "h" * 10000]
    c = []
    for proto, pa in (("h1", []), ("h2", H2)):
        c += [
            (proto + "-get-echo", 1, lambda pa=pa: curl(ctx, pa, ["/echo"])),
            (proto + "-head", 1, lambda pa=pa: curl(ctx, pa + ["-I"], ["/bytes?n=1000"])),
            (proto + "-get-bytes", 1, lambda pa=pa: curl(ctx, pa, ["/bytes?n=100000"])),
            (proto + "-get-chunked-trailer", 1,
             lambda pa=pa: curl(ctx, pa, ["/chunked?n=50000&chunk=1000&trailer=1"])),
            (proto + "-post-upload", 1, lambda pa=pa: curl(
                ctx, pa + NO_EXPECT + ["--data-binary", "@" + body60k], ["/upload"])),
            # HTTP/1.1: Transfer-Encoding chunked; h2: DATA without content-length.
            (proto + "-put-unknown-length", 1, lambda pa=pa: curl(
                ctx, pa + NO_EXPECT + ["-T", "-"], ["/upload"], stdin_path=body50k)),
            (proto + "-put-expect-100", 1, lambda pa=pa: curl(
                ctx, pa + ["-H", "Expect: 100-continue", "-T", body50k], ["/upload"])),
            (proto + "-status-503", 1, lambda pa=pa: curl(ctx, pa, ["/status/503"])),
            (proto + "-no-route", 1, lambda pa=pa: curl(ctx, pa + ["-X", "DELETE"], ["/echo"])),
            (proto + "-413-body", 1, lambda pa=pa: curl(
                ctx, pa + NO_EXPECT + ["--data-binary", "@" + body100k], ["/upload"])),
            (proto + "-413-expect", 1, lambda pa=pa: curl(
                ctx, pa + ["-H", "Expect: 100-continue", "--data-binary", "@" + body100k],
                ["/upload"])),
            (proto + "-431-header", 1, lambda pa=pa: curl(ctx, pa + big_hdr, ["/echo"])),
            (proto + "-upstream-refused", 1,
             lambda pa=pa: curl(ctx, pa + ["-H", "Host: dead.test"], ["/echo"])),
            (proto + "-upstream-timeout", 1,
             lambda pa=pa: curl(ctx, pa + ["-H", "Host: slow.test"], ["/delay?ms=1500"])),
            (proto + "-close-mid-body", 1,
             lambda pa=pa: curl(ctx, pa, ["/close-mid?n=100000&send=5000"])),
            (proto + "-close-mid-chunked", 1,
             lambda pa=pa: curl(ctx, pa, ["/close-mid-chunked?send=5000"])),
            (proto + "-upstream-reset", 1, lambda pa=pa: curl(ctx, pa, ["/reset"])),
            (proto + "-malformed", 1, lambda pa=pa: curl(ctx, pa, ["/malformed?kind=garbage"])),
            (proto + "-early-hints", 1, lambda pa=pa: curl(ctx, pa, ["/early-hints"])),
            (proto + "-h2c-get", 1,
             lambda pa=pa: curl(ctx, pa + ["-H", "Host: h2.test"], ["/echo"])),
            (proto + "-h2c-post", 1, lambda pa=pa: curl(
                ctx, pa + NO_EXPECT + ["-H", "Host: h2.test", "--data-binary", "@" + body60k],
                ["/upload"])),
            (proto + "-h2c-status-404", 1,
             lambda pa=pa: curl(ctx, pa + ["-H", "Host: h2.test"], ["/status?code=404"])),
            (proto + "-h2c-rst", 1,
             lambda pa=pa: curl(ctx, pa + ["-H", "Host: h2.test"], ["/rst?code=2"])),
            (proto + "-h2c-trailers", 1, lambda pa=pa: curl(
                ctx, pa + ["-H", "Host: h2.test", "-H", "te: trailers"], ["/trailers"])),
        ]
    ka = ["/echo", "/bytes?n=10", "/status/404", "/delay?ms=10"]
    c += [
        ("h1-keepalive-4", 4, lambda: curl(ctx, [], ka)),
        ("h2-keepalive-4", 4, lambda: h2load_seq(ctx, ka)),
        ("h1-http10", 1, lambda: curl(ctx, ["--http1.0"], ["/echo"])),
        ("h1-connection-close", 1, lambda: curl(ctx, ["-H", "Connection: close"], ["/echo"])),
        ("h1-pipelined-pair", 2, lambda: pipelined(ctx, ["/echo?p=1", "/bytes?n=2000"])),
        ("h2-grpc-trailers", 1, lambda: curl(
            ctx, H2 + GRPC + ["-H", "Host: h2.test", "--data-binary", ""],
            ["/trailers?grpc_status=5&grpc_message=nope"])),
        ("h2-grpc-refused", 1, lambda: curl(
            ctx, H2 + GRPC + ["-H", "Host: dead.test", "--data-binary", ""], ["/svc/Method"])),
        ("h2-grpc-timeout", 1, lambda: curl(
            ctx, H2 + GRPC + ["-H", "Host: slow.test", "--data-binary", ""], ["/delay?ms=1500"])),
    ]
    return c


def config(port, admin, up, h2up, dead):
    return "\n".join([
        "workers: 1",
        'listeners: [{ name: inbound, address: "127.0.0.1:%d" }]' % port,
        'admin: { address: "127.0.0.1:%d" }' % admin,
        "upstreams:",
        '  - { name: app, endpoints: ["127.0.0.1:%d"], connect_timeout: 1s, idle_timeout: 60s }'
        % up,
        '  - { name: h2app, endpoints: ["127.0.0.1:%d"], protocol: h2c, connect_timeout: 1s,'
        " idle_timeout: 60s }" % h2up,
        '  - { name: dead, endpoints: ["127.0.0.1:%d"], connect_timeout: 1s }' % dead,
        "routes:",
        '  - { name: slow, match: { host: "slow.test" }, upstream: app, timeout: 300ms }',
        '  - { name: dead, match: { host: "dead.test" }, upstream: dead, timeout: 5s }',
        '  - { name: h2c, match: { host: "h2.test" }, upstream: h2app, timeout: 5s }',
        '  - { name: default, match: { path_prefix: "/", methods: [GET, HEAD, POST, PUT] },'
        " upstream: app, timeout: 5s }",
        "limits: { max_header_bytes: 8KiB, max_body_bytes: 64KiB, client_idle_timeout: 60s,"
        " request_header_timeout: 10s }",
        "log: { level: info, format: json, access_log: true }",
        "",
    ])


def run(args, out):
    procs = []
    remora = None
    root = args.root
    try:
        up = start_app(os.path.join(root, "tests/integration/upstream.py"), args.workdir,
                       "upstream", procs)
        h2up = start_app(os.path.join(root, "tests/integration/h2_upstream.py"), args.workdir,
                         "h2_upstream", procs)
        port, admin, dead = probe_ports(3, avoid=(up, h2up))
        cfg_path = os.path.join(args.workdir, "remora.yaml")
        with open(cfg_path, "w") as f:
            f.write(config(port, admin, up, h2up, dead))
        log_path = os.path.join(args.workdir, "remora.stderr")
        with open(log_path, "wb") as errf, \
                open(os.path.join(args.workdir, "remora.stdout"), "wb") as outf:
            remora = subprocess.Popen([args.bin, "-c", cfg_path], stdout=outf, stderr=errf,
                                      stdin=subprocess.DEVNULL)
        procs.append(remora)
        end = time.monotonic() + 10
        while http_status(admin, "/readyz") != 200:
            if remora.poll() is not None:
                raise SetupError("remora exited with %s before it was ready" % remora.returncode)
            if time.monotonic() > end:
                raise SetupError("remora not ready on admin /readyz within 10 s")
            time.sleep(0.05)
        log = AccessLog(log_path, {"127.0.0.1:%d" % up: "app", "127.0.0.1:%d" % h2up: "h2app",
                                   "127.0.0.1:%d" % dead: "dead"})
        log.take(0)
        ctx = Ctx(port, args.workdir)
        mix = cases(ctx)
        unknown = APPROX_BYTES_OUT - {m[0] for m in mix}
        if unknown:
            raise SetupError("APPROX_BYTES_OUT names no case: %s" % sorted(unknown))
        for i, (name, expect, action) in enumerate(mix, 1):
            client = action()
            got = log.take(expect)
            out.write("%02d %s: client %s\n" % (i, name, client))
            if len(got) != expect:
                out.write("   access lines: %d (expected %d)\n" % (len(got), expect))
            for e in got:
                out.write("   " + log.fmt(e, name in APPROX_BYTES_OUT) + "\n")
            out.flush()
            if remora.poll() is not None:
                out.write("remora exited with %s during case %s\n" % (remora.returncode, name))
                break
        rc = stop(remora)
        out.write("remora stopped: exit status %s\n" % rc)
        return 0
    except SetupError as e:
        out.write("SETUP FAILED: %s\n" % e)
        return 2
    finally:
        for p in reversed(procs):
            stop(p)
            if p.stdout:
                p.stdout.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--root", default=os.path.abspath(os.path.join(os.path.dirname(__file__),
                                                                   "..", "..")))
    args = ap.parse_args()
    args.bin = os.path.abspath(args.bin)
    os.makedirs(args.workdir, exist_ok=True)

    def on_signal(signum, frame):
        raise SystemExit(128 + signum)

    def on_alarm(signum, frame):
        raise Timeout("run took longer than %d s" % RUN_TIMEOUT)

    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(s, on_signal)
    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(RUN_TIMEOUT)
    with open(args.out, "w") as out:
        try:
            return run(args, out)
        except Timeout as e:
            out.write("TIMEOUT: %s\n" % e)
            return 2


if __name__ == "__main__":
    sys.exit(main())
