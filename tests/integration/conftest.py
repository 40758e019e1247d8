# SPDX-License-Identifier: Apache-2.0
"""Fixtures for remora's integration tests: the test upstream (upstream.py), a remora factory
that writes a config, starts the real binary on free loopback ports and waits for /readyz, and
teardown that stops every process it started by PID (SIGTERM, then SIGKILL after 3 s)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from helpers import (default_config, free_port, http_get_body, read_ready_line, rss_kib,  # noqa: E402
                     stop_process, to_yaml)

ROOT = HERE.parent.parent
BIN = Path(os.environ.get("REMORA_BIN", str(ROOT / "proxy" / "remora")))
PYTHON = "/usr/bin/python3"
UPSTREAM_PY = HERE / "upstream.py"
H2_UPSTREAM_PY = HERE / "h2_upstream.py"
CRASH_SIGNALS = {-signal.SIGSEGV, -signal.SIGABRT, -signal.SIGBUS, -signal.SIGFPE,
                 -signal.SIGILL}


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
    return (cls or Upstream)(proc, int(line.split()[1]), name, log_path)


@pytest.fixture
def upstream_factory(tmp_path):
    started = []

    def make(name=""):
        u = _start_upstream(tmp_path, name)
        started.append(u)
        return u

    yield make
    for u in started:
        _stop(u.proc)
        u.proc.stdout.close()


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
    """Factory: h2_upstream_factory(name="", max_streams=None, window=None) -> H2Upstream."""
    started = []

    def make(name="", max_streams=None, window=None):
        args = []
        if max_streams is not None:
            args += ["--max-streams", max_streams]
        if window is not None:
            args += ["--window", window]
        u = _start_upstream(tmp_path, name, script=H2_UPSTREAM_PY, args=args, cls=H2Upstream)
        started.append(u)
        return u

    yield make
    for u in started:
        _stop(u.proc)
        u.proc.stdout.close()


@pytest.fixture
def h2_upstream(h2_upstream_factory):
    """A fresh h2_upstream.py with the default SETTINGS (256 concurrent streams)."""
    return h2_upstream_factory()


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
    .admin_port are then read from its first listener and admin addresses)."""
    started = []

    def make(upstream=None, endpoints=None, config=None, ready=True, **kw):
        port = free_port()
        admin_port = free_port()
        while admin_port == port:
            admin_port = free_port()
        if config is not None:
            port = int(config["listeners"][0]["address"].rsplit(":", 1)[1])
            admin_port = int(config["admin"]["address"].rsplit(":", 1)[1])
        else:
            if endpoints is None:
                endpoints = [upstream.addr] if upstream is not None else ["127.0.0.1:1"]
            config = default_config(port, admin_port, endpoints, **kw)
        idx = len(started)
        cfg_path = tmp_path / ("remora-%d.yaml" % idx)
        cfg_path.write_text(to_yaml(config) + "\n")
        log_path = tmp_path / ("remora-%d.stderr" % idx)
        with open(log_path, "wb") as errf, open(tmp_path / ("remora-%d.stdout" % idx), "wb") as outf:
            proc = subprocess.Popen([str(BIN), "-c", str(cfg_path)], stdout=outf, stderr=errf,
                                    stdin=subprocess.DEVNULL)
        r = Remora(proc, port, admin_port, cfg_path, log_path, config)
        started.append(r)
        if ready:
            wait_ready(proc, admin_port, log_path)
        return r

    yield make

    problems = []
    for r in started:
        crashed_before = r.proc.poll()
        rc = _stop(r.proc)
        text = r.stderr()
        if crashed_before is not None and crashed_before in CRASH_SIGNALS:
            problems.append("remora pid %d died by signal %d during the test"
                            % (r.pid, -crashed_before))
        elif rc in CRASH_SIGNALS:
            problems.append("remora pid %d died by signal %d at shutdown" % (r.pid, -rc))
        if "ERROR: AddressSanitizer" in text or "runtime error:" in text:
            problems.append("sanitizer report in remora stderr")
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
        return subprocess.run([str(BIN)] + [str(a) for a in args], capture_output=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)

    return run
