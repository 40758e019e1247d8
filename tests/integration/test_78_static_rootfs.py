# SPDX-License-Identifier: Apache-2.0
"""77: the shipped static binary in an empty root filesystem. Each test builds a directory
holding only the binary (as /remora) and its config (/remora.yaml), plus /etc/hosts where a
test says so, and runs `/remora -c /remora.yaml` chrooted into it, in a private mount
namespace where that directory is bind-mounted read-only: no /etc/resolv.conf, /etc/ssl, /tmp,
/proc, /sys or /dev, nothing writable. The chroot shares the host's network namespace, so the
test apps on 127.0.0.1 (run outside) are reachable.

Checked: it starts, /readyz 200 once a health check of the app passed, proxies to the app,
serves /metrics, drains on SIGTERM with a request in flight and exits 0; an endpoint name with no dns.resolvers and no resolv.conf gives
/readyz 503 `upstream app: dns unresolved (no_resolvers)` and one error line naming the cause
at once (no hang, no crash), and a request then gets 503 `dns` after queue_timeout; /etc/hosts
alone resolves a name; dns.resolvers alone resolves one; and on a writable root nothing is
created or changed.

The binary: $REMORA_STATIC_BIN, else proxy/remora-static (what `make static` leaves). Without
one, without root, or where a mount namespace cannot be made, every test is skipped with the
reason."""

import hashlib
import json
import os
import platform
import shutil
import signal
import struct
import subprocess
import threading
import time
from pathlib import Path

import pytest

from conftest import CRASH_SIGNALS, ROOT
from dnsutil import SlowDnsFactory
from helpers import (HttpConn, default_config, free_port, http, http_get_body, stop_process,
                     to_yaml, wait_for)

STATIC_BIN = Path(os.environ.get("REMORA_STATIC_BIN") or ROOT / "proxy" / "remora-static")
ELF_MACHINES = {62: "x86_64", 183: "aarch64"}
NAME = "app.example.internal"

pytestmark = pytest.mark.no_remora  # needs the static binary, not proxy/remora


def elf_facts(path):
    """(machine, static) of an ELF64 little-endian file: static means no PT_INTERP and no
    PT_DYNAMIC program header. Raises ValueError for anything else."""
    with open(path, "rb") as f:
        head = f.read(64)
        if len(head) < 64 or head[:4] != b"\x7fELF" or head[4] != 2 or head[5] != 1:
            raise ValueError("%s is not a little-endian ELF64 file" % path)
        machine = struct.unpack_from("<H", head, 18)[0]
        phoff = struct.unpack_from("<Q", head, 32)[0]
        phentsize, phnum = struct.unpack_from("<HH", head, 54)
        f.seek(phoff)
        ph = f.read(phentsize * phnum)
    types = {struct.unpack_from("<I", ph, i * phentsize)[0] for i in range(phnum)}
    return ELF_MACHINES.get(machine, "machine %d" % machine), not types & {2, 3}


def _skip_reason():
    if not STATIC_BIN.is_file():
        return ("no static binary at %s: build it with `make static` (leaves "
                "proxy/remora-static) or set REMORA_STATIC_BIN" % STATIC_BIN)
    try:
        machine, static = elf_facts(STATIC_BIN)
    except (OSError, ValueError) as e:
        return "%s: %s" % (STATIC_BIN, e)
    if machine != platform.machine():
        return "%s is an %s binary; this machine is %s" % (STATIC_BIN, machine, platform.machine())
    if os.geteuid() != 0:
        return "needs root (chroot and a private mount namespace)"
    for tool in ("unshare", "chroot", "mount"):
        if not shutil.which(tool):
            return "%s not found (Debian util-linux / coreutils / mount)" % tool
    r = subprocess.run(["unshare", "--mount", "--propagation", "private", "--", "true"],
                       capture_output=True, timeout=10)
    if r.returncode != 0:
        return "cannot make a mount namespace here: %s" % r.stderr.decode(errors="replace").strip()
    return None


_REASON = _skip_reason()


@pytest.fixture(autouse=True)
def _needs_static_binary():
    if _REASON:
        pytest.skip(_REASON)


def snapshot(root):
    """Every path under root with its type, mode, size, mtime and content hash."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            p = os.path.join(dirpath, n)
            st = os.lstat(p)
            digest = None
            if os.path.isfile(p) and not os.path.islink(p):
                with open(p, "rb") as f:
                    digest = hashlib.sha256(f.read()).hexdigest()
            out[os.path.relpath(p, root)] = (st.st_mode, st.st_size, st.st_mtime_ns, digest)
    return out


class Chrooted:
    """One remora in its own root directory. proc.pid is remora itself: unshare and sh exec
    into chroot, which execs /remora."""

    def __init__(self, proc, root, port, admin_port, log_path):
        self.proc = proc
        self.root = root
        self.port = port
        self.admin_port = admin_port
        self.log_path = log_path

    def stderr(self):
        return self.log_path.read_text(errors="replace")

    def log_lines(self):
        out = []
        for line in self.stderr().splitlines():
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if isinstance(obj, dict):
                out.append(obj)
        return out

    def readyz(self):
        return http_get_body(self.admin_port, "/readyz", timeout=1.0)


@pytest.fixture
def chrooted(tmp_path):
    """Factory: chrooted(endpoints, files={relpath: text}, read_only=True, dns=None (the dns
    section), **default_config options) -> a started Chrooted (not waited for: tests poll
    what they expect)."""
    started = []

    def make(endpoints, files=None, read_only=True, dns=None, **kw):
        port, admin_port = free_port(), free_port()
        while admin_port == port:
            admin_port = free_port()
        cfg = default_config(port, admin_port, endpoints, **kw)
        cfg["workers"] = "auto"  # the CPU count without /proc and /sys
        if dns is not None:
            cfg["dns"] = dns
        root = tmp_path / ("root-%d" % len(started))
        root.mkdir()
        shutil.copy2(STATIC_BIN, root / "remora")
        os.chmod(root / "remora", 0o755)
        (root / "remora.yaml").write_text(to_yaml(cfg) + "\n")
        for rel, text in (files or {}).items():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_text(text)
        ro = 'mount --bind -o ro "$1" "$1" && ' if read_only else ""
        cmd = ["unshare", "--mount", "--propagation", "private", "--", "/bin/sh", "-c",
               ro + 'exec chroot "$1" /remora -c /remora.yaml', "sh", str(root)]
        log_path = tmp_path / ("remora-%d.stderr" % len(started))
        with open(log_path, "wb") as errf:
            proc = subprocess.Popen(cmd, stdout=errf, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL)
        c = Chrooted(proc, root, port, admin_port, log_path)
        started.append(c)
        return c

    yield make

    problems = []
    for c in started:
        before = c.proc.poll()
        rc = stop_process(c.proc)
        if before in CRASH_SIGNALS or rc in CRASH_SIGNALS:
            problems.append("remora pid %d died by signal %d" % (c.proc.pid, -(before or rc)))
            print("---- remora stderr (%s) ----\n%s" % (c.log_path, c.stderr()[-20000:]))
    if problems:
        pytest.fail("; ".join(problems))


def root_mount_options(pid):
    """Mount options of what process pid sees as / (the last mount on /: the topmost)."""
    opts = None
    with open("/proc/%d/mountinfo" % pid) as f:
        for line in f:
            fields = line.split()
            if fields[4] == "/":
                opts = fields[5].split(",")
    return opts


def wait_readyz(c, want, timeout=5.0):
    """Polls /readyz until it answers status want; returns (status, body)."""
    last = [None]

    def ok():
        if c.proc.poll() is not None:
            pytest.fail("remora exited with %s; output:\n%s" % (c.proc.returncode, c.stderr()))
        last[0] = c.readyz()
        return last[0][0] == want

    assert wait_for(ok, timeout=timeout), "readyz %r, wanted %d; output:\n%s" % (
        last[0], want, c.stderr())
    return last[0]


def test_binary_is_static():
    machine, static = elf_facts(STATIC_BIN)
    assert static, "%s has a program interpreter or a dynamic segment" % STATIC_BIN


def test_serves_proxies_and_drains_on_a_read_only_empty_root(chrooted, upstream):
    # The health check connects through evhttp, i.e. libevent's getaddrinfo on the numeric
    # address: one of the allow-listed glibc static-link functions, working without NSS.
    c = chrooted([upstream.addr], upstream_opts={"health_check": {
        "path": "/ready", "interval": "200ms", "timeout": "1s", "rise": 1, "fall": 1}})
    before = snapshot(c.root)
    wait_readyz(c, 200)
    assert upstream.stats()["ready_checks"] >= 1
    assert "ro" in root_mount_options(c.proc.pid), "the root is not mounted read-only"
    assert os.readlink("/proc/%d/root" % c.proc.pid) == str(c.root)
    r = http(c.port, "GET", "/echo", headers=[("Host", "app")])
    assert r.status == 200, r
    assert r.json()["path"] == "/echo", r.body
    assert r.header("x-upstream-conn"), r
    st, body = http_get_body(c.admin_port, "/metrics", timeout=2.0)
    assert st == 200 and b"remora_requests_total" in body, (st, body[:300])
    # no /proc: what only /proc knows is left out, not reported as 0
    assert b"\nprocess_cpu_seconds_total " in body and b"process_resident_memory_bytes" not in body

    # SIGTERM with a slow response in flight: it completes, /readyz says draining, exit 0.
    got = {}

    def slow():
        with HttpConn(c.port, timeout=10) as conn:
            conn.send(b"GET /delay?ms=1200 HTTP/1.1\r\nHost: app\r\n\r\n")
            got["r"] = conn.read_response()

    t = threading.Thread(target=slow)
    t.start()
    assert wait_for(lambda: upstream.stats()["in_flight"] == 1, timeout=3.0)
    os.kill(c.proc.pid, signal.SIGTERM)
    assert wait_for(lambda: c.readyz() == (503, b"draining\n"), timeout=2.0), c.readyz()
    t.join(10)
    assert got["r"].status == 200 and got["r"].body == b"ok", got
    assert c.proc.wait(10) == 0, c.stderr()

    lines = c.log_lines()
    assert any(e.get("msg", "").startswith("drain finished") for e in lines), c.stderr()
    bad = [e for e in lines if e.get("level") in ("error", "warn")]
    assert not bad, "warnings or errors in an empty root:\n%s" % c.stderr()
    assert snapshot(c.root) == before


def test_name_without_resolvers_is_a_clear_readiness_reason(chrooted, upstream):
    c = chrooted(["%s:%d" % (NAME, upstream.port)], upstream_opts={"queue_timeout": "300ms"})
    # The first lookup ends at once (no server to wait for); "no answer yet" is only the
    # moment before it.
    t0 = time.monotonic()
    assert wait_for(lambda: c.readyz() == (503, b"upstream app: dns unresolved (no_resolvers)\n"),
                    timeout=3.0), (c.readyz(), c.stderr())
    assert time.monotonic() - t0 < 3.0
    assert http_get_body(c.admin_port, "/healthz")[0] == 200

    errors = [e["msg"] for e in c.log_lines() if e.get("level") == "error"]
    assert len(errors) == 1, c.stderr()
    assert ("no resolvers" in errors[0] and "dns.resolvers is not set" in errors[0]
            and "/etc/resolv.conf" in errors[0] and "No such file" in errors[0]), errors

    t1 = time.monotonic()
    r = http(c.port, "GET", "/echo", timeout=5)
    assert r.status == 503 and r.header("x-remora-error") == "dns", r
    assert time.monotonic() - t1 < 2.0

    st, body = http_get_body(c.admin_port, "/metrics", timeout=2.0)
    assert b'remora_dns_lookups_total{upstream="app",result="no_resolvers"}' in body
    os.kill(c.proc.pid, signal.SIGTERM)
    assert c.proc.wait(10) == 0, c.stderr()


def test_hosts_file_alone_resolves_a_name(chrooted, upstream):
    c = chrooted(["%s:%d" % (NAME, upstream.port)],
                 files={"etc/hosts": "127.0.0.1 %s\n" % NAME})
    wait_readyz(c, 200)
    r = http(c.port, "GET", "/echo")
    assert r.status == 200, r
    assert any("no resolvers" in e.get("msg", "") for e in c.log_lines()), c.stderr()


def test_dns_resolvers_alone_resolve_a_name(chrooted, upstream):
    with SlowDnsFactory() as make_dns:
        dns = make_dns({NAME: ["127.0.0.1"]})
        c = chrooted(["%s:%d" % (NAME, upstream.port)], dns={"resolvers": [dns.resolver]})
        wait_readyz(c, 200)
        assert http(c.port, "GET", "/echo").status == 200
        assert dns.queries(NAME), "the name was not asked of dns.resolvers"
        assert not any("no resolvers" in e.get("msg", "") for e in c.log_lines()), c.stderr()
        os.kill(c.proc.pid, signal.SIGTERM)
        assert c.proc.wait(10) == 0, c.stderr()


def test_writable_root_is_left_untouched(chrooted, upstream):
    c = chrooted([upstream.addr], read_only=False)
    before = snapshot(c.root)
    wait_readyz(c, 200)
    for _ in range(3):
        assert http(c.port, "GET", "/echo").status == 200
    os.kill(c.proc.pid, signal.SIGHUP)  # a reload reads the config again; it writes nothing
    time.sleep(0.3)
    assert http(c.port, "GET", "/echo").status == 200
    os.kill(c.proc.pid, signal.SIGTERM)
    assert c.proc.wait(10) == 0, c.stderr()
    assert snapshot(c.root) == before, "remora changed its root filesystem"
