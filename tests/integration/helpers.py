# SPDX-License-Identifier: Apache-2.0
"""helpers: byte-exact HTTP/1.x client pieces, config writing and measurement helpers for the
integration tests. Every network call has a timeout; nothing here starts a process (the
fixtures in conftest.py own processes; stop_process is how every owner stops one)."""

import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time

PATTERN = b"0123456789abcdef"
BLOCK = PATTERN * 4096  # 64 KiB, a whole number of patterns
BLOCK_X = BLOCK + PATTERN
UUID4_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
MIB = 1024 * 1024


def stop_process(proc, grace=3.0):
    """SIGTERM, then SIGKILL after grace seconds; by PID only. Returns the exit status."""
    if proc.poll() is None:
        try:
            os.kill(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            try:
                os.kill(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(5)
    return proc.returncode


def pattern(off, n):
    """n bytes of the body pattern every test app sends (upstream.py, h2_upstream.py and
    grpc_app.py import it from here), starting at stream offset off."""
    s = off % len(PATTERN)
    if n <= len(BLOCK):
        return BLOCK_X[s:s + n]
    out = bytearray()
    while len(out) < n:
        k = min(len(BLOCK), n - len(out))
        out += BLOCK_X[s:s + k]
    return bytes(out)


def pattern_sha256(n):
    """sha256 hex of the first n bytes of upstream.py's body pattern."""
    h = hashlib.sha256()
    full, rest = divmod(n, len(BLOCK))
    for _ in range(full):
        h.update(BLOCK)
    h.update(BLOCK[:rest])
    return h.hexdigest()


def free_port(host="127.0.0.1"):
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(fam, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


# ---- YAML writing (block style, every string quoted) ----------------------------------------

def _scalar(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    return json.dumps(str(v))


def to_yaml(obj, indent=0):
    pad = " " * indent
    out = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            if isinstance(v, dict):
                if not v:
                    out.append("%s%s: {}" % (pad, k))
                else:
                    out.append("%s%s:" % (pad, k))
                    out.append(to_yaml(v, indent + 2))
            elif isinstance(v, list) and any(isinstance(x, dict) for x in v):
                out.append("%s%s:" % (pad, k))
                out.append(to_yaml(v, indent + 2))
            elif isinstance(v, list):
                out.append("%s%s: [%s]" % (pad, k, ", ".join(_scalar(x) for x in v)))
            else:
                out.append("%s%s: %s" % (pad, k, _scalar(v)))
    elif isinstance(obj, list):
        for item in obj:
            sub = to_yaml(item, indent + 2).split("\n")
            sub[0] = pad + "- " + sub[0][indent + 2:]
            out.extend(sub)
    else:
        out.append(pad + _scalar(obj))
    return "\n".join(out)


# ---- remora config ---------------------------------------------------------------------

def default_config(port, admin_port, endpoints, workers=1, upstream_opts=None, routes=None,
                   limits=None, log=None, upstreams=None, drain=None):
    up = {"name": "app", "endpoints": list(endpoints), "connect_timeout": "1s",
          "idle_timeout": "2s", "max_connections": 1024}
    up.update(upstream_opts or {})
    lim = {"max_header_bytes": "64KiB", "max_headers": 100, "max_body_bytes": 0,
           "client_idle_timeout": "60s", "request_header_timeout": "10s",
           "buffer_bytes": "64KiB"}
    lim.update(limits or {})
    lg = {"level": "info", "format": "json", "access_log": True}
    lg.update(log or {})
    cfg = {
        "workers": workers,
        "listeners": [{"name": "inbound", "address": "127.0.0.1:%d" % port}],
        "admin": {"address": "127.0.0.1:%d" % admin_port},
        "upstreams": upstreams if upstreams is not None else [up],
        "routes": routes if routes is not None else [
            {"name": "default", "match": {"path_prefix": "/"}, "upstream": "app",
             "timeout": "15s"}],
        "limits": lim,
        "log": lg,
    }
    if drain is not None:
        cfg["drain"] = drain
    return cfg


# ---- HTTP/1.x over raw sockets --------------------------------------------------------------

def build_request(method="GET", target="/", headers=None, body=b"", version="HTTP/1.1",
                  host="127.0.0.1", content_length=True):
    """Request bytes. headers is a list of (name, value); Host is added first unless host is
    None or headers already carry one; Content-Length is added for a non-empty body unless
    content_length is False or headers already frame it."""
    hs = list(headers or [])
    names = {k.lower() for k, _ in hs}
    if host is not None and "host" not in names:
        hs.insert(0, ("Host", host))
    if body and content_length and not ({"content-length", "transfer-encoding"} & names):
        hs.append(("Content-Length", str(len(body))))
    head = "%s %s %s\r\n" % (method, target, version)
    head += "".join("%s: %s\r\n" % (k, v) for k, v in hs)
    return head.encode("latin-1") + b"\r\n" + body


def chunked_body(data, chunk=1000, trailers=None, ext=False):
    out = bytearray()
    for i in range(0, len(data), chunk):
        part = data[i:i + chunk]
        out += b"%x%s\r\n" % (len(part), b";ext=1" if ext else b"") + part + b"\r\n"
    out += b"0\r\n"
    for k, v in trailers or []:
        out += ("%s: %s\r\n" % (k, v)).encode()
    out += b"\r\n"
    return bytes(out)


class Response:
    def __init__(self):
        self.version = None
        self.status = None
        self.reason = None
        self.headers = []       # [(name, value)] in received order
        self.body = b""         # empty when a sink consumed it
        self.body_len = 0
        self.chunked = False
        self.trailers = []
        self.complete = False   # the body ended where its framing said it would
        self.eof_after = False  # the connection was closed right after (close-delimited)
        self.interim = []       # 1xx responses seen before this one

    def header(self, name):
        name = name.lower()
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return None

    def header_all(self, name):
        name = name.lower()
        return [v for k, v in self.headers if k.lower() == name]

    def has(self, name):
        return self.header(name) is not None

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return "<Response %s %s %r body=%d complete=%s>" % (
            self.status, self.reason, self.headers, self.body_len, self.complete)


class Truncated(Exception):
    pass


def read_ready_line(proc, timeout):
    """The first stdout line of a test app started with stdout=PIPE: b"READY <port>..." once it
    listens. Waits at most timeout seconds; returns what it read, possibly a partial line."""
    import selectors
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


class SocketOwner:
    """Context-manager plumbing for a test client that owns self.sock."""

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


class HttpConn(SocketOwner):
    """One client connection with a read buffer; every read has a deadline."""

    def __init__(self, port, host="127.0.0.1", timeout=5.0, rcvbuf=None):
        fam = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(fam, socket.SOCK_STREAM)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect((host, port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.timeout = timeout
        self.buf = bytearray()
        self.eof = False
        self.reset = False
        self.received = 0  # bytes read from the socket so far

    def send(self, data):
        self.sock.sendall(data)

    def request(self, *a, **kw):
        self.send(build_request(*a, **kw))

    def _fill(self, n=256 * 1024):
        """Reads more into the buffer; False at EOF or reset."""
        if self.eof:
            return False
        try:
            d = self.sock.recv(n)
        except ConnectionResetError:
            self.reset = True
            d = b""
        if not d:
            self.eof = True
            return False
        self.received += len(d)
        self.buf += d
        return True

    def _line(self, limit=1024 * 1024):
        while True:
            i = self.buf.find(b"\r\n")
            if i >= 0:
                line = bytes(self.buf[:i])
                del self.buf[:i + 2]
                return line
            if len(self.buf) > limit:
                raise ValueError("line too long")
            if not self._fill():
                raise Truncated("EOF while reading a line: %r" % bytes(self.buf[:200]))

    def _take(self, n, sink):
        """Moves n body bytes to sink; returns how many arrived before EOF."""
        got = 0
        while got < n:
            if not self.buf and not self._fill():
                return got
            k = min(n - got, len(self.buf))
            sink(bytes(self.buf[:k]))
            del self.buf[:k]
            got += k
        return got

    def read_head(self):
        r = Response()
        line = self._line()
        m = re.match(rb"^(HTTP/\d\.\d) (\d{3})(?: (.*))?$", line)
        if not m:
            raise ValueError("bad status line %r" % line)
        r.version = m.group(1).decode()
        r.status = int(m.group(2))
        r.reason = (m.group(3) or b"").decode("latin-1")
        while True:
            line = self._line()
            if not line:
                break
            k, _, v = line.partition(b":")
            r.headers.append((k.decode("latin-1"), v.strip(b" \t").decode("latin-1")))
        return r

    def read_response(self, method="GET", sink=None, skip_1xx=True):
        """Reads one response. The body goes to sink(bytes) if given, else into r.body.
        Returns the Response; r.complete tells whether the framing was satisfied."""
        interim = []
        while True:
            r = self.read_head()
            if skip_1xx and 100 <= r.status < 200 and r.status != 101:
                interim.append(r)
                continue
            break
        r.interim = interim
        parts = []
        count = [0]

        def collect(d):
            count[0] += len(d)
            if sink is not None:
                sink(d)
            else:
                parts.append(d)

        te = r.header("transfer-encoding")
        cl = r.header("content-length")
        if method == "HEAD" or r.status in (204, 304) or 100 <= r.status < 200:
            r.complete = True
        elif te is not None and "chunked" in te.lower():
            r.chunked = True
            try:
                while True:
                    size_line = self._line()
                    size = int(size_line.split(b";")[0].strip(), 16)
                    if size == 0:
                        while True:
                            tl = self._line()
                            if not tl:
                                break
                            k, _, v = tl.partition(b":")
                            r.trailers.append((k.decode(), v.strip().decode()))
                        r.complete = True
                        break
                    if self._take(size, collect) < size:
                        break
                    if self._line() != b"":
                        raise ValueError("chunk not followed by CRLF")
            except Truncated:
                pass
        elif cl is not None:
            n = int(cl)
            r.complete = self._take(n, collect) == n
        else:
            while self._take(1 << 30, collect):
                pass
            r.complete = self.eof and not self.reset
            r.eof_after = True
        r.body = b"".join(parts)
        r.body_len = count[0]
        return r

    def read_all(self, deadline=None):
        """Everything until EOF (bounded by deadline seconds)."""
        end = time.monotonic() + (deadline or self.timeout)
        old = self.sock.gettimeout()
        try:
            while True:
                left = end - time.monotonic()
                if left <= 0:
                    break
                self.sock.settimeout(left)
                if not self._fill():
                    break
        except socket.timeout:
            pass
        finally:
            self.sock.settimeout(old)
        return bytes(self.buf)

    def is_closed(self, wait=2.0):
        """True if the peer closes (EOF or reset) within wait seconds with no further bytes."""
        old = self.sock.gettimeout()
        self.sock.settimeout(wait)
        try:
            if self.buf:
                return False
            try:
                d = self.sock.recv(65536)
            except ConnectionResetError:
                return True
            except socket.timeout:
                return False
            if d:
                self.received += len(d)
                self.buf += d
                return False
            self.eof = True
            return True
        finally:
            self.sock.settimeout(old)


def expect_error(port, raw, status, reason, wait=3.0, within=None):
    """Sends raw on a fresh connection; the response must be status with x-remora-error
    reason and a short body (within seconds of the send, if given), and the connection must
    then close."""
    with HttpConn(port, timeout=wait + 2) as c:
        try:
            c.send(raw)
        except (BrokenPipeError, ConnectionResetError):
            pass
        t0 = time.monotonic()
        r = c.read_response()
        took = time.monotonic() - t0
        assert r.status == status, (r, r.body)
        assert r.header("x-remora-error") == reason, r.headers
        assert r.complete and len(r.body) < 1024, r.body
        assert c.is_closed(wait=wait), "connection left open after %d %s" % (status, reason)
    assert within is None or took < within, "answered after %.1f s" % took
    return r


def http(port, method="GET", target="/", headers=None, body=b"", timeout=5.0, **kw):
    """One request on a fresh connection; returns the Response (body in memory)."""
    with HttpConn(port, timeout=timeout) as c:
        c.request(method, target, headers=headers, body=body, **kw)
        return c.read_response(method=method)


def http_get_body(port, path, timeout=2.0):
    """(status, body) of a GET on a fresh connection, or (None, error) on any failure."""
    try:
        r = http(port, "GET", path, timeout=timeout)
        return r.status, r.body
    except (OSError, ValueError, Truncated) as e:
        return None, str(e)


def curl(*args, timeout=30):
    """Runs curl with the given arguments (no retries, no proxy env)."""
    cmd = ["curl", "-sS", "--noproxy", "*", "--max-time", str(timeout)] + list(args)
    return subprocess.run(cmd, capture_output=True, timeout=timeout + 5)


# ---- measurement --------------------------------------------------------------------------

def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class RssSampler:
    """Samples VmRSS of pid every interval seconds in a thread; .max_kib is the peak."""

    def __init__(self, pid, interval=0.005):
        self.pid = pid
        self.interval = interval
        self.max_kib = 0
        self.samples = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            try:
                self.max_kib = max(self.max_kib, rss_kib(self.pid))
                self.samples += 1
            except OSError:
                return
            self._stop.wait(self.interval)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *a):
        self._stop.set()
        self._t.join(2)


def parse_wrk(out):
    """wrk's summary as {"requests", "connect", "read", "write", "timeout", "non2xx"}: wrk prints
    the error lines only when one is non-zero, so an absent line counts 0."""
    m = re.search(r"(\d+) requests in ([\d.]+)(\w+),", out)
    res = {"requests": int(m.group(1)) if m else None, "connect": 0, "read": 0, "write": 0,
           "timeout": 0, "non2xx": 0}
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        res.update(zip(("connect", "read", "write", "timeout"), map(int, m.groups())))
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        res["non2xx"] = int(m.group(1))
    return res


def wait_for(pred, timeout=3.0, interval=0.02):
    end = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= end:
            return v
        time.sleep(interval)


# ---- Prometheus text exposition -------------------------------------------------------------

PROM_CTYPE = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS_CTYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"
_SAMPLE_RE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})?\s+(\S+)(?:\s+(\S+))?$")
_LABEL_RE = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*(,|$)')


def _unescape_label(v):
    return re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), v)


def _labels(text):
    out = {}
    body = text[1:-1]
    pos = 0
    while pos < len(body):
        m = _LABEL_RE.match(body, pos)
        if not m:
            raise ValueError("bad label set %r" % text)
        out[m.group(1)] = _unescape_label(m.group(2))
        pos = m.end()
    return out


class Metrics:
    """A parsed scrape: samples [(name, {labels}, value)], types {family: type} and helps."""

    def __init__(self, text):
        self.text = text
        self.samples = []
        self.types = {}
        self.helps = {}
        for line in text.splitlines():
            if not line.strip():
                continue
            if line.startswith("#"):
                parts = line.split(None, 3)
                if len(parts) >= 3 and parts[1] == "TYPE":
                    self.types[parts[2]] = parts[3].strip() if len(parts) > 3 else ""
                elif len(parts) >= 3 and parts[1] == "HELP":
                    self.helps[parts[2]] = parts[3] if len(parts) > 3 else ""
                continue
            m = _SAMPLE_RE.match(line)
            if not m:
                raise ValueError("bad sample line %r" % line)
            labels = _labels(m.group(2)) if m.group(2) else {}
            self.samples.append((m.group(1), labels, float(m.group(3))))

    def series(self, name, **labels):
        """[(labels, value)] of the samples named name whose labels include labels."""
        return [(l, v) for n, l, v in self.samples
                if n == name and all(l.get(k) == str(w) for k, w in labels.items())]

    def value(self, name, default=None, **labels):
        """The value of the one sample of name with exactly these labels (ignoring none)."""
        want = {k: str(v) for k, v in labels.items()}
        for n, l, v in self.samples:
            if n == name and l == want:
                return v
        return default

    def total(self, name, **labels):
        """Sum over the samples of name whose labels include labels (0 when none)."""
        return sum(v for _, v in self.series(name, **labels))

    def names(self):
        return {n for n, _, _ in self.samples}


def scrape(admin_port, accept=None, timeout=3.0):
    """GETs /metrics from the admin listener; returns (Response, Metrics)."""
    headers = [("Accept", accept)] if accept else None
    r = http(admin_port, "GET", "/metrics", headers=headers, timeout=timeout)
    assert r.status == 200, r
    return r, Metrics(r.body.decode("utf-8"))


def metrics(admin_port):
    return scrape(admin_port)[1]


def recv_head(sock):
    """Reads from sock until a message head is complete (CRLF CRLF): everything read so far,
    or None at EOF before that (for RawApp handlers)."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        d = sock.recv(65536)
        if not d:
            return None
        buf += d
    return buf


class RawApp:
    """A thread-per-connection TCP app on 127.0.0.1 for tests that need an upstream to
    misbehave exactly: handler(sock, app) runs for each accepted connection; app.events is a
    list handlers may append to. Use as a context manager (closes the listener)."""

    def __init__(self, handler):
        self.handler = handler
        self.events = []
        self.ls = socket.socket()
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(16)
        self.port = self.ls.getsockname()[1]
        self.addr = "127.0.0.1:%d" % self.port
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.ls.accept()
            except OSError:
                return
            threading.Thread(target=self._run, args=(c,), daemon=True).start()

    def _run(self, c):
        try:
            self.handler(c, self)
        except OSError as e:
            self.events.append("error %r" % e)
        finally:
            c.close()

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.ls.close()


def read_half_closed_slowly(port, request, skip_head=False, pause=1.0):
    """Sends request on a connection with a 16 KiB receive buffer, reads the head first when
    skip_head (a CONNECT's 200), half-closes, waits `pause` (remora's last bytes then sit in its
    socket buffer), and reads to EOF. Returns (bytes after the skipped head, OSError or None)."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
    s.settimeout(10)
    s.connect(("127.0.0.1", port))
    got = b""
    err = None
    try:
        s.sendall(request)
        if skip_head:
            while b"\r\n\r\n" not in got:
                d = s.recv(4096)
                if not d:
                    break
                got += d
            got = got.split(b"\r\n\r\n", 1)[-1]
        s.shutdown(socket.SHUT_WR)
        time.sleep(pause)
        while True:
            d = s.recv(65536)
            if not d:
                break
            got += d
    except OSError as e:
        err = e
    finally:
        s.close()
    return got, err


# ---- TLS for the test apps (upstream.py, h2_upstream.py) --------------------------------------

def add_tls_args(ap):
    """The test apps' TLS options: with --tls-cert and --tls-key an app also serves TLS on a
    second port (its READY line then reads "READY <port> <tls port>")."""
    ap.add_argument("--tls-cert", default=None, help="PEM certificate chain of the TLS port")
    ap.add_argument("--tls-key", default=None, help="PEM key of the TLS port")
    ap.add_argument("--tls-client-ca", default=None,
                    help="require a client certificate under this CA on the TLS port (mTLS)")
    ap.add_argument("--tls-alpn", default=None,
                    help="comma-separated ALPN protocols the TLS port selects from")


def tls_server_context(args):
    """The server context of args (add_tls_args), or None without --tls-cert. Each accepted TLS
    connection is logged on stderr by log_tls_conn: "TLS sni=... alpn=... resumed=0|1
    client=CN"; the server_name of every ClientHello as "SNI name"."""
    import ssl
    import sys
    if not args.tls_cert:
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(args.tls_cert, args.tls_key)
    if args.tls_client_ca:
        ctx.load_verify_locations(args.tls_client_ca)
        ctx.verify_mode = ssl.CERT_REQUIRED
    if args.tls_alpn:
        ctx.set_alpn_protocols(args.tls_alpn.split(","))

    def on_sni(sslobj, name, _ctx):
        sslobj.remora_sni = name
        print("SNI %s" % (name or "-"), file=sys.stderr, flush=True)

    ctx.sni_callback = on_sni
    return ctx


def log_tls_conn(writer):
    """One stderr line about writer's TLS connection (nothing for a plaintext one)."""
    import sys
    sslobj = writer.get_extra_info("ssl_object")
    if sslobj is None:
        return
    cert = sslobj.getpeercert() or {}
    cn = "-"
    for rdn in cert.get("subject", ()):
        for k, v in rdn:
            if k == "commonName":
                cn = v
    print("TLS sni=%s alpn=%s resumed=%d client=%s" % (
        getattr(sslobj, "remora_sni", None) or "-", sslobj.selected_alpn_protocol() or "-",
        1 if sslobj.session_reused else 0, cn), file=sys.stderr, flush=True)
