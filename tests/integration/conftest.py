# SPDX-License-Identifier: Apache-2.0
"""Fixtures for remora's integration tests: the test apps (upstream.py, h2_upstream.py), a remora
factory that writes a config, starts the real binary on free loopback ports and waits for
/readyz, teardown that stops every process it started by PID (SIGTERM, then SIGKILL after 3 s),
and `matrix`, one test run per cell of the protocol matrix (h1/h2c downstream x h1/h2c
upstream)."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from helpers import (HttpConn, build_request, chunked_body, default_config, free_port,  # noqa: E402
                     http_get_body, read_ready_line, rss_kib, stop_process, to_yaml)

ROOT = HERE.parent.parent
BIN = Path(os.environ.get("REMORA_BIN", str(ROOT / "proxy" / "remora")))
PYTHON = "/usr/bin/python3"
UPSTREAM_PY = HERE / "upstream.py"
H2_UPSTREAM_PY = HERE / "h2_upstream.py"
WS_APP_PY = HERE / "ws_app.py"
TCP_ECHO_PY = HERE / "tcp_echo.py"
CRASH_SIGNALS = {-signal.SIGSEGV, -signal.SIGABRT, -signal.SIGBUS, -signal.SIGFPE,
                 -signal.SIGILL}


# ---- sanitizer reports ----------------------------------------------------------------------
#
# Under an ASan+UBSan build (REMORA_SANITIZED=1, quickstart.sh sets it), a sanitizer report from
# any remora process fails the test that was running (or, for a process of a module-scoped
# fixture, the module's last test at teardown), wherever the process was started:
#  - ASan and LeakSanitizer reports go to files (log_path, added to ASAN_OPTIONS here), one per
#    pid, so a report from a process whose stderr nobody reads (DEVNULL, a CLI run) is seen;
#  - UBSan reports (GCC's runtime writes them to stderr whatever log_path says) and the ASan
#    reports of tests that set their own ASAN_OPTIONS are found by scanning every file under
#    the test's tmp_path (the remora fixture writes remora-N.stderr there) and, at the end of a
#    module, every file under the session's base temp directory not seen before.
SANITIZED = os.environ.get("REMORA_SANITIZED") == "1"
SAN_REPORT = re.compile(
    rb"^(==\d+==ERROR: (AddressSanitizer|LeakSanitizer)|\S+:\d+:\d+: runtime error: )", re.M)
SAN_DIR = None
if SANITIZED:
    SAN_DIR = Path(tempfile.mkdtemp(prefix="remora-san."))
    os.environ["ASAN_OPTIONS"] = ":".join(
        x for x in (os.environ.get("ASAN_OPTIONS"), "log_path=%s/asan" % SAN_DIR) if x)
_san_seen = {}  # path -> size already scanned
_san_logs_seen = set()


def _san_scan(root):
    """Sanitizer reports in files under root not scanned at their current size:
    [(path, excerpt)]."""
    found = []
    for dirpath, _, files in os.walk(root):
        for name in files:
            path = os.path.join(dirpath, name)
            try:
                size = os.path.getsize(path)
                if not os.path.isfile(path) or _san_seen.get(path) == size:
                    continue
                _san_seen[path] = size
                with open(path, "rb") as f:
                    f.seek(max(0, size - (1 << 20)))  # a report ends the process's output
                    tail = f.read()
            except OSError:
                continue
            m = SAN_REPORT.search(tail)
            if m:
                found.append((path, tail[m.start():m.start() + 6000].decode("utf-8", "replace")))
    return found


def _san_new_logs():
    found = []
    for path in sorted(SAN_DIR.iterdir()) if SAN_DIR else ():
        if path.name not in _san_logs_seen:
            _san_logs_seen.add(path.name)
            found.append((str(path), path.read_text(errors="replace")[:6000]))
    return found


def _san_fail(found):
    if found:
        pytest.fail("sanitizer report(s) from remora:\n" + "\n".join(
            "---- %s ----\n%s" % (p, text) for p, text in found), pytrace=False)


def pytest_sessionfinish(session, exitstatus):
    if SAN_DIR is not None and not any(SAN_DIR.iterdir()):
        SAN_DIR.rmdir()  # kept when it holds reports (their paths are in the failures)


@pytest.fixture(autouse=True, scope="module")
def _sanitizer_reports_module(tmp_path_factory):
    yield
    if SANITIZED:
        _san_fail(_san_new_logs() + _san_scan(tmp_path_factory.getbasetemp()))


@pytest.fixture(autouse=True)
def _sanitizer_reports(request):
    yield
    if SANITIZED:
        tmp = request.node.funcargs.get("tmp_path")
        _san_fail(_san_new_logs() + (_san_scan(tmp) if tmp is not None else []))


def pytest_configure(config):
    config.addinivalue_line("markers", "no_remora: runs without the remora binary")


def pytest_collection_modifyitems(config, items):
    if BIN.is_file() and os.access(BIN, os.X_OK):
        return
    skip = pytest.mark.skip(
        reason="%s is not built (cd %s && autoreconf -fi && ./configure && make)" % (BIN, ROOT))
    for item in items:
        if "no_remora" not in item.keywords:
            item.add_marker(skip)


_stop = stop_process  # the name the tests import


# ---- upstream -----------------------------------------------------------------------------

class Upstream:
    def __init__(self, proc, port, name, log_path):
        self.proc = proc
        self.port = port
        self.name = name
        self.log_path = log_path
        self.addr = "127.0.0.1:%d" % port

    def stats(self, reset_peak=False):
        """Counters of the upstream itself, asked directly (this opens one connection).
        reset_peak: after answering, max_in_flight starts again from the current in_flight."""
        st, body = http_get_body(self.port, "/_stats?reset_peak=1" if reset_peak else "/_stats")
        assert st == 200, "upstream /_stats failed: %r" % body
        return json.loads(body)

    def set_ready(self, status, delay_ms=0):
        """What GET /ready answers from now on (status, after delay_ms); asked directly."""
        st, body = http_get_body(self.port, "/_control/ready?status=%d&delay_ms=%d"
                                 % (status, delay_ms))
        assert st == 200, "upstream /_control/ready failed: %r" % body
        return json.loads(body)


def _start_upstream(tmp_path, name="", script=UPSTREAM_PY, args=(), cls=None):
    log_path = tmp_path / ("upstream-%s-%d.log" % (name or "app", time.monotonic_ns()))
    errf = open(log_path, "wb")
    cmd = [PYTHON, str(script), "--port", "0"] + [str(a) for a in args]
    if name:
        cmd += ["--name", name]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=errf, stdin=subprocess.DEVNULL)
    errf.close()
    line = read_ready_line(proc, 10)
    if not line.startswith(b"READY "):
        _stop(proc)
        pytest.fail("%s did not start: %r %s" % (script.name, line, log_path.read_text()))
    u = (cls or Upstream)(proc, int(line.split()[1]), name, log_path)
    u.ready_line = line.decode().strip()
    return u


def _app_factory(tmp_path, script, cls=Upstream):
    """(start(name, args) -> a started app of script, the list of those started)."""
    started = []

    def make(name="", args=()):
        u = _start_upstream(tmp_path, name, script=script, args=args, cls=cls)
        started.append(u)
        return u

    return make, started


def _stop_apps(started):
    for u in started:
        _stop(u.proc)
        u.proc.stdout.close()


@pytest.fixture
def sockdir():
    """A short directory under /tmp for Unix socket paths (sun_path holds 108 bytes; pytest's
    tmp_path can be longer), removed after the test."""
    d = tempfile.mkdtemp(prefix="rmu-", dir="/tmp")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def upstream_endpoints(transport, upstream_factory, sockdir):
    """Starts an upstream.py and returns remora endpoints reaching it over transport: "tcp"
    (loopback) or "unix" (a socket in sockdir)."""
    if transport == "tcp":
        return [upstream_factory().addr]
    path = os.path.join(sockdir, "app.sock")
    upstream_factory(unix=path)
    return ["unix:" + path]


@pytest.fixture
def upstream_factory(tmp_path):
    """Factory: upstream_factory(name="", unix=None) -> Upstream (unix: also serve on that
    Unix socket path, @name: abstract)."""
    start, started = _app_factory(tmp_path, UPSTREAM_PY)
    yield lambda name="", unix=None: start(name, ["--unix", unix] if unix else ())
    _stop_apps(started)


@pytest.fixture
def upstream(upstream_factory):
    return upstream_factory()


class H2Upstream(Upstream):
    """h2_upstream.py (h2c prior knowledge). stats() asks its /_stats over HTTP/1.1, which is
    all the app serves on HTTP/1.1; its HTTP/1.1 connections are not counted in its stats."""

    def stderr(self):
        return self.log_path.read_text(errors="replace")


@pytest.fixture
def h2_upstream_factory(tmp_path):
    """Factory: h2_upstream_factory(name="", max_streams=None, window=None, unix=None,
    connect_protocol=False) -> H2Upstream (unix: also serve on that Unix socket path, @name:
    abstract; connect_protocol: the app advertises SETTINGS_ENABLE_CONNECT_PROTOCOL and serves
    extended CONNECT (RFC 8441) streams)."""
    start, started = _app_factory(tmp_path, H2_UPSTREAM_PY, H2Upstream)

    def make(name="", max_streams=None, window=None, unix=None, connect_protocol=False):
        args = ["--unix", unix] if unix else []
        if max_streams is not None:
            args += ["--max-streams", max_streams]
        if window is not None:
            args += ["--window", window]
        if connect_protocol:
            args += ["--connect-protocol"]
        return start(name, args)

    yield make
    _stop_apps(started)


@pytest.fixture
def h2_upstream(h2_upstream_factory):
    """A fresh h2_upstream.py with the default SETTINGS (256 concurrent streams)."""
    return h2_upstream_factory()


class TlsApp(H2Upstream):
    """upstream.py or h2_upstream.py started with --tls-cert: .port (.addr) stays plaintext for
    the fixtures' /_stats and /_control asks, .tls_port (.tls_addr) serves the same app over TLS.
    tls_conns() lists what the app logged of each TLS connection it accepted."""

    @property
    def tls_port(self):
        return int(self.ready_line.split()[2])

    @property
    def tls_addr(self):
        return "127.0.0.1:%d" % self.tls_port

    def snis(self):
        """The server_name of every TLS ClientHello the app got ("-": none), even of handshakes
        that failed, in order."""
        return [ln.split()[1] for ln in self.stderr().splitlines() if ln.startswith("SNI ")]

    def tls_conns(self):
        """[{"sni", "alpn", "resumed", "client"}] in accept order ("-": none)."""
        out = []
        for line in self.stderr().splitlines():
            if line.startswith("TLS "):
                out.append(dict(kv.split("=", 1) for kv in line.split()[1:]))
        return out


@pytest.fixture
def tls_app_factory(tmp_path):
    """Factory: tls_app_factory(cert, key, h2=False, client_ca=None, alpn=None, name="") ->
    TlsApp: upstream.py (h2: h2_upstream.py) also serving TLS with that certificate and key,
    requiring a client certificate under client_ca when given, selecting ALPN from alpn (a
    list) when given."""
    start1, started1 = _app_factory(tmp_path, UPSTREAM_PY, TlsApp)
    start2, started2 = _app_factory(tmp_path, H2_UPSTREAM_PY, TlsApp)

    def make(cert, key, h2=False, client_ca=None, alpn=None, name=""):
        args = ["--tls-cert", cert, "--tls-key", key]
        if client_ca:
            args += ["--tls-client-ca", client_ca]
        if alpn:
            args += ["--tls-alpn", ",".join(alpn)]
        return (start2 if h2 else start1)(name, args)

    yield make
    _stop_apps(started1 + started2)


class TcpEcho(Upstream):
    """tcp_echo.py: raw TCP echo with half-close (--upgrade: after a 101 to an HTTP/1.1
    Upgrade request). stats() asks its control port (the second number of its READY line)."""

    @property
    def control_port(self):
        return int(self.ready_line.split()[2])

    def stats(self, reset_peak=False):
        st, body = http_get_body(self.control_port, "/_stats")
        assert st == 200, "tcp_echo /_stats failed: %r" % body
        return json.loads(body)




@pytest.fixture
def ws_app_factory(tmp_path):
    """Factory: ws_app_factory(name="") -> a started ws_app.py (the WebSocket app on
    python3-websockets, see its docstring); stats() asks its GET /_stats."""
    make, started = _app_factory(tmp_path, WS_APP_PY)
    yield make
    _stop_apps(started)


@pytest.fixture
def ws_app(ws_app_factory):
    return ws_app_factory()


@pytest.fixture
def tcp_echo_factory(tmp_path):
    """Factory: tcp_echo_factory(name="", upgrade=False) -> a started tcp_echo.py (TcpEcho)."""
    make, started = _app_factory(tmp_path, TCP_ECHO_PY, cls=TcpEcho)

    def make_echo(name="", upgrade=False):
        return make(name, ["--upgrade"] if upgrade else [])

    yield make_echo
    _stop_apps(started)


@pytest.fixture
def tcp_echo(tcp_echo_factory):
    return tcp_echo_factory()


# ---- remora -------------------------------------------------------------------------------

class Remora:
    def __init__(self, proc, port, admin_port, cfg_path, log_path, config):
        self.proc = proc
        self.port = port
        self.admin_port = admin_port
        self.cfg_path = cfg_path
        self.log_path = log_path
        self.config = config

    @property
    def pid(self):
        return self.proc.pid

    def stderr(self):
        return self.log_path.read_text(errors="replace")

    def log_lines(self):
        """Every stderr line that parses as a JSON object, in order."""
        out = []
        for line in self.stderr().splitlines():
            line = line.strip()
            if not line.startswith("{"):
                continue
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if isinstance(obj, dict):
                out.append(obj)
        return out

    def access_logs(self, at_least=0, timeout=3.0):
        """Access-log entries; waits up to timeout for at least at_least of them."""
        end = time.monotonic() + timeout
        while True:
            got = [e for e in self.log_lines() if e.get("msg") == "access"]
            if len(got) >= at_least or time.monotonic() >= end:
                return got
            time.sleep(0.02)

    def rss_kib(self):
        return rss_kib(self.proc.pid)

    def threads(self):
        with open("/proc/%d/status" % self.proc.pid) as f:
            for line in f:
                if line.startswith("Threads:"):
                    return int(line.split()[1])
        return 0

    def alive(self):
        return self.proc.poll() is None


def wait_ready(proc, admin_port, log_path, timeout=5.0):
    end = time.monotonic() + timeout
    last = None
    while time.monotonic() < end:
        if proc.poll() is not None:
            pytest.fail("remora exited with %s before it was ready; stderr:\n%s"
                        % (proc.returncode, log_path.read_text(errors="replace")))
        st, body = http_get_body(admin_port, "/readyz", timeout=0.5)
        if st == 200:
            return
        last = (st, body)
        time.sleep(0.05)
    pytest.fail("remora not ready within %.0fs (last /readyz: %r); stderr:\n%s"
                % (timeout, last, log_path.read_text(errors="replace")))


@pytest.fixture
def remora(tmp_path, request):
    """Factory: remora(upstream_or_endpoints, **config options) -> a started Remora.

    Options: workers, upstream_opts (merged into the single upstream "app"), routes, limits,
    log, upstreams (replaces the upstream list), config (a full dict used as is; .port and
    .admin_port are then read from its first listener and admin addresses), config_file (a
    path the caller has written config to, passed as is to -c, for tests that rewrite the file
    while remora runs; config is then required and only read for the ports)."""
    started = []

    def make(upstream=None, endpoints=None, config=None, ready=True, config_file=None, env=None,
             **kw):
        if config is None:
            port = free_port()
            admin_port = free_port()
            while admin_port == port:
                admin_port = free_port()
            if endpoints is None:
                endpoints = [upstream.addr] if upstream is not None else ["127.0.0.1:1"]
            config = default_config(port, admin_port, endpoints, **kw)
        r = launch_remora(tmp_path, config, len(started), ready=ready, config_file=config_file,
                          env=env)
        started.append(r)
        return r

    yield make
    stop_remoras(started)


def launch_remora(directory, config, idx=0, ready=True, config_file=None, env=None):
    """Starts remora on config (a dict; its ports are read from its first listener and admin
    addresses), written to directory/remora-<idx>.yaml unless config_file (a path the caller
    wrote) is given; stderr goes to directory/remora-<idx>.stderr. Returns a Remora, ready
    unless ready=False. The caller stops it with stop_remoras."""
    port = int(config["listeners"][0]["address"].rsplit(":", 1)[1])
    admin_port = int(config["admin"]["address"].rsplit(":", 1)[1])
    if config_file is None:
        cfg_path = directory / ("remora-%d.yaml" % idx)
        cfg_path.write_text(to_yaml(config) + "\n")
    else:
        cfg_path = config_file
    log_path = directory / ("remora-%d.stderr" % idx)
    with open(log_path, "wb") as errf, open(directory / ("remora-%d.stdout" % idx), "wb") as outf:
        proc = subprocess.Popen([str(BIN), "-c", str(cfg_path)], stdout=outf, stderr=errf,
                                stdin=subprocess.DEVNULL,
                                env=dict(os.environ, **env) if env else None)
    r = Remora(proc, port, admin_port, cfg_path, log_path, config)
    if ready:
        try:
            wait_ready(proc, admin_port, log_path)
        except BaseException:
            _stop(proc)
            raise
    return r


def stop_remoras(started):
    """Stops every Remora of started by its pid; fails the test if one died by a signal or
    logged a sanitizer report."""
    problems = []
    for r in started:
        crashed_before = r.proc.poll()
        # A sanitizer build gets longer after SIGTERM: LeakSanitizer runs at exit, and a SIGKILL
        # would skip it.
        rc = _stop(r.proc, grace=10.0 if SANITIZED else 3.0)
        text = r.stderr()
        if crashed_before is not None and crashed_before in CRASH_SIGNALS:
            problems.append("remora pid %d died by signal %d during the test"
                            % (r.pid, -crashed_before))
        elif rc in CRASH_SIGNALS:
            problems.append("remora pid %d died by signal %d at shutdown" % (r.pid, -rc))
        if SAN_REPORT.search(text.encode()):
            problems.append("sanitizer report in remora stderr")
            _san_seen[str(r.log_path)] = r.log_path.stat().st_size  # reported here, once
        if problems:
            print("---- remora stderr (%s) ----\n%s" % (r.log_path, text[-20000:]))
    if problems:
        pytest.fail("; ".join(problems))


@pytest.fixture
def proxy(remora, upstream):
    """A remora with the default one-route config in front of a fresh upstream."""
    return remora(upstream)


@pytest.fixture
def run_remora():
    """Runs the binary to completion with arguments (for CLI tests); bounded in time."""

    def run(*args, timeout=10):
        res = subprocess.run([str(BIN)] + [str(a) for a in args], capture_output=True,
                             timeout=timeout, stdin=subprocess.DEVNULL)
        if SAN_REPORT.search(res.stderr):
            pytest.fail("sanitizer report from remora %s:\n%s"
                        % (" ".join(map(str, args)), res.stderr.decode(errors="replace")[-6000:]))
        return res

    return run


# ---- the protocol matrix ------------------------------------------------------------------
#
# STYLE.md: behaviour is parametrised over the protocol matrix. Fixture `matrix` runs a test
# once per cell "<downstream>-<upstream>": the client speaks HTTP/1.1 ("h1", helpers.HttpConn)
# or h2c with prior knowledge ("h2c", h2util.H2Client) to remora, and remora speaks HTTP/1.1 to
# upstream.py or h2c to h2_upstream.py. A test that only makes sense for some cells narrows it:
#     @pytest.mark.parametrize("matrix", ["h1-h1", "h1-h2c"], indirect=True)

MATRIX = ("h1-h1", "h1-h2c", "h2c-h1", "h2c-h2c")


class MatrixResponse:
    """A response as a matrix client received it, whatever the protocol: status; headers
    [(lower-case name, value)] without pseudo-headers; body; trailers (same shape); complete
    (h1: the body ended where its framing said; h2: END_STREAM arrived); reset (h2:
    the RST_STREAM error code, else None); chunked (h1: Transfer-Encoding chunked; h2: False);
    interim (statuses of 1xx responses); raw (the helpers.Response or h2util.H2Response)."""

    def __init__(self, status, headers, body, trailers, complete, reset, chunked, interim, raw):
        self.status = status
        self.headers = headers
        self.body = body
        self.trailers = trailers
        self.complete = complete
        self.reset = reset
        self.chunked = chunked
        self.interim = interim
        self.raw = raw

    @classmethod
    def from_h1(cls, r):
        low = [(k.lower(), v) for k, v in r.headers]
        return cls(r.status, low, r.body, [(k.lower(), v) for k, v in r.trailers], r.complete,
                   None, r.chunked, [i.status for i in r.interim], r)

    @classmethod
    def from_h2(cls, r):
        hs = [(k, v) for k, v in r.headers if not k.startswith(":")]
        interim = [int(dict(h)[":status"]) for h in r.interim]
        return cls(r.status, hs, r.body, list(r.trailers), r.ended, r.reset,
                   False, interim, r)

    def header(self, name):
        name = name.lower()
        return next((v for k, v in self.headers if k == name), None)

    def header_all(self, name):
        name = name.lower()
        return [v for k, v in self.headers if k == name]

    def names(self):
        return {k for k, _ in self.headers}

    def trailer(self, name):
        name = name.lower()
        return next((v for k, v in self.trailers if k == name), None)

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return "<MatrixResponse %s headers=%r body=%d complete=%s reset=%s trailers=%r>" % (
            self.status, self.headers, len(self.body), self.complete, self.reset, self.trailers)


class AppSeen:
    """What the app saw of one request, from the JSON it answers on Matrix.echo_path
    (upstream.py /echo, h2_upstream.py /json): method, path, headers [(lower-case name,
    value)] (no pseudo-headers), trailers (same shape), body_len, body_sha256, authority (h1
    app: its one Host header; h2c app: :authority), scheme (h2c app only), chunked (h1 app: the
    body came chunked; h2c app: None) and version ("HTTP/1.1" / "HTTP/2")."""

    def __init__(self, doc, up):
        self.doc = doc
        self.method = doc["method"]
        self.path = doc["path"]
        self.headers = [(k.lower(), v) for k, v in doc["headers"]
                        if up == "h1" or not k.startswith(":")]
        self.trailers = [(k.lower(), v) for k, v in doc["trailers"]]
        self.body_len = doc["body_len"]
        self.body_sha256 = doc["body_sha256"]
        if up == "h1":
            hosts = self.header_all("host")
            self.authority = hosts[0] if len(hosts) == 1 else None
            self.scheme = None
            self.chunked = doc["body_chunked"]
            self.version = doc["version"]
        else:
            self.authority = doc["authority"]
            self.scheme = doc["scheme"]
            self.chunked = None
            self.version = "HTTP/2"

    def header_all(self, name):
        name = name.lower()
        return [v for k, v in self.headers if k == name]

    def names(self):
        return {k for k, _ in self.headers}

    def __repr__(self):
        return "<AppSeen %s %s %s headers=%r trailers=%r body_len=%s>" % (
            self.method, self.path, self.version, self.headers, self.trailers, self.body_len)


class Matrix:
    """One cell of the protocol matrix: down ("h1"/"h2c") and up ("h1"/"h2c"), id "down-up".

    app: the test app of the upstream protocol, started on first use. proxy: remora in front
    of it with the default config, started on first use; start(**kw) (re)starts it with the
    `remora` factory's options (limits, routes, endpoints, ...; the upstream protocol is set).
    request() and batch() keep one downstream connection open across calls and open a new one
    when there is none, or the last response ended it (h1: Connection: close, EOF, an
    incomplete body, or a response of remora's own: x-remora-error); conns_opened counts them.
    The paths the two apps spell differently are properties and methods (echo_path,
    status_path(), ...)."""

    def __init__(self, cell, remora_factory, upstream_factory, h2_upstream_factory):
        self.id = cell
        self.down, self.up = cell.split("-")
        self._remora = remora_factory
        self._app_factory = h2_upstream_factory if self.up == "h2c" else upstream_factory
        self._app = None
        self._proxy = None
        self.conn = None
        self._reusable = False
        self.conns_opened = 0

    def __repr__(self):
        return "<Matrix %s>" % self.id

    @property
    def app(self):
        if self._app is None:
            self._app = self._app_factory()
        return self._app

    @property
    def proxy(self):
        if self._proxy is None:
            self.start()
        return self._proxy

    def start(self, endpoints=None, upstream_opts=None, **kw):
        """Starts remora (the conftest factory) in front of the app, or of endpoints, with
        these options; upstreams[0].protocol follows the cell. Returns the Remora."""
        opts = dict(upstream_opts or {})
        if self.up == "h2c":
            opts["protocol"] = "h2c"
        self.close()
        if endpoints is None:
            self._proxy = self._remora(self.app, upstream_opts=opts, **kw)
        else:
            self._proxy = self._remora(endpoints=endpoints, upstream_opts=opts, **kw)
        return self._proxy

    # -- the app's paths --

    @property
    def echo_path(self):
        """Answers JSON of what the app saw (AppSeen); any suffix or query may follow."""
        return "/echo" if self.up == "h1" else "/json"

    def status_path(self, code):
        """That status; body "status N\\n" (none for 204/304)."""
        return "/status/%d" % code if self.up == "h1" else "/status?code=%d" % code

    def sleep_path(self, ms):
        """200 "ok" after ms milliseconds."""
        return "/delay?ms=%d" % ms if self.up == "h1" else "/sleep?ms=%d" % ms

    @staticmethod
    def bytes_path(n):
        """n pattern bytes with content-length (both apps)."""
        return "/bytes?n=%d" % n

    def unsized_path(self, n, trailers=False):
        """n pattern bytes without content-length: chunked from upstream.py (trailer
        x-trailer: yes if asked), DATA frames then trailers from h2_upstream.py (always:
        grpc-status: 0, grpc-message: ok, x-trailer: yes)."""
        if self.up == "h1":
            return "/chunked?n=%d&chunk=1000%s" % (n, "&trailer=1" if trailers else "")
        return "/trailers?n=%d" % n

    # -- requests --

    def _open(self):
        self.close()
        port = self.proxy.port
        if self.down == "h1":
            self.conn = HttpConn(port)
        else:
            from h2util import H2Client  # python3-h2: only the h2 cells need it
            self.conn = H2Client(port)
        self.conns_opened += 1
        self._reusable = True

    def close(self):
        if self.conn is not None:
            self.conn.close()
        self.conn = None
        self._reusable = False

    def request(self, method="GET", path="/", headers=(), body=b"", authority="127.0.0.1",
                content_length=True, trailers=None, chunk=4096, timeout=5.0):
        """One request; returns a MatrixResponse. headers: [(name, value)] (lower-cased on h2).
        authority: Host (h1) or :authority (h2); None sends neither. A body goes with a
        content-length unless content_length is False: then chunked (in chunk-byte chunks) on
        h1, without a length on h2. trailers: request trailers; the body then goes without a
        length (chunked on h1)."""
        return self.batch([dict(method=method, path=path, headers=headers, body=body,
                                authority=authority, content_length=content_length,
                                trailers=trailers, chunk=chunk)], timeout)[0]

    def batch(self, reqs, timeout=5.0):
        """Several requests at once on one connection, pipelined on h1 (answered in order) and
        as concurrent streams on h2; reqs are dicts of request()'s keyword arguments. Returns
        the MatrixResponses in the order of reqs."""
        if self.conn is None or not self._reusable:
            self._open()
        if self.down == "h1":
            return self._h1_batch(reqs, timeout)
        return self._h2_batch(reqs, timeout)

    def _h1_batch(self, reqs, timeout):
        c = self.conn
        c.sock.settimeout(timeout)
        raw = b""
        for q in reqs:
            hs = list(q.get("headers") or ())
            body = q.get("body") or b""
            trailers = q.get("trailers")
            chunked = bool(trailers) or (not q.get("content_length", True) and body)
            if chunked:
                hs.append(("Transfer-Encoding", "chunked"))
                body = chunked_body(body, q.get("chunk", 4096), trailers)
            raw += build_request(q.get("method", "GET"), q.get("path", "/"), headers=hs,
                                 body=body, host=q.get("authority", "127.0.0.1"))
        c.send(raw)
        out = []
        for q in reqs:
            r = c.read_response(method=q.get("method", "GET"))
            out.append(MatrixResponse.from_h1(r))
            if (not r.complete or c.eof or r.eof_after or r.has("x-remora-error")
                    or "close" in (r.header("connection") or "").lower()):
                self._reusable = False
        return out

    def _h2_batch(self, reqs, timeout):
        c = self.conn
        sids = []
        for q in reqs:
            hs = [(k.lower(), v) for k, v in (q.get("headers") or ())]
            body = q.get("body") or b""
            with_length = q.get("content_length", True) and not q.get("trailers")
            if body and with_length and "content-length" not in dict(hs):
                hs.append(("content-length", str(len(body))))
            sids.append(c.request(q.get("method", "GET"), q.get("path", "/"), headers=hs,
                                  body=body or None, authority=q.get("authority", "127.0.0.1"),
                                  trailers=q.get("trailers")))
        rs = c.responses(sids, timeout)
        if c.eof or c.goaway is not None:
            self._reusable = False
        return [MatrixResponse.from_h2(r) for r in rs]

    def conn_closed(self, wait=2.0):
        """True if remora closes the current downstream connection within wait seconds."""
        if self.conn is None:
            return True
        if self.down == "h1":
            return self.conn.eof or self.conn.is_closed(wait)
        return self.conn.wait_closed(wait)

    def seen(self, r):
        """The AppSeen of a response from echo_path."""
        assert r.status == 200, r
        return AppSeen(r.json(), self.up)


@pytest.fixture(params=MATRIX)
def matrix(request, remora, upstream_factory, h2_upstream_factory):
    """A Matrix for one cell "<downstream>-<upstream>" of MATRIX (see above). At teardown an
    h2c app must have seen no HTTP/2 protocol error and no stream beyond its limits."""
    m = Matrix(request.param, remora, upstream_factory, h2_upstream_factory)
    yield m
    m.close()
    if m.up == "h2c" and m._app is not None:
        st = m._app.stats()
        bad = {k: st[k] for k in ("protocol_errors", "refused_over_limit_acked",
                                  "refused_after_goaway") if st[k]}
        if bad:
            pytest.fail("h2_upstream.py saw %r" % bad)
