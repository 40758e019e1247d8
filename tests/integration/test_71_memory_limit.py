# SPDX-License-Identifier: Apache-2.0
"""test_71_memory_limit: the listener's max_connections default follows the container's memory
limit, on cgroup v2 (memory.max) and on cgroup v1 nodes (memory.limit_in_bytes), so a sidecar
with `resources.limits.memory` never accepts more connections than fit in it (docs/memory.md);
and an idle keep-alive connection costs under 1 KiB of RSS.

The test makes a memory cgroup of its own under the hierarchy this machine has, starts remora
in it (a shell that moves itself in, then execs remora), and reads the startup line. It needs
root and a writable cgroup filesystem; it skips, saying which, otherwise."""

import os
import re
import resource
import subprocess
import time

import pytest

from helpers import HttpConn, free_port, rss_kib, stop_process, to_yaml, default_config, wait_for
from conftest import BIN, SANITIZED

LIMIT = 200 * 1024 * 1024


def cgroup_dir():
    """(a new memory cgroup directory, the file that sets its limit, its version)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to create a cgroup")
    if os.path.exists("/sys/fs/cgroup/cgroup.controllers"):
        base = "/sys/fs/cgroup"
        with open("/proc/self/cgroup") as f:
            rel = [l.strip()[3:] for l in f if l.startswith("0::")]
        if rel:
            base = "/sys/fs/cgroup" + rel[0]
        parent = os.path.dirname(base.rstrip("/")) if base != "/sys/fs/cgroup" else base
        d = os.path.join(parent, "remora-test-%d" % os.getpid())
        limit_file, version = "memory.max", 2
    elif os.path.isdir("/sys/fs/cgroup/memory"):
        d = "/sys/fs/cgroup/memory/remora-test-%d" % os.getpid()
        limit_file, version = "memory.limit_in_bytes", 1
    else:
        pytest.skip("no cgroup memory controller mounted")
    try:
        os.mkdir(d)
        with open(os.path.join(d, limit_file), "w") as f:
            f.write(str(LIMIT))
    except OSError as e:
        if os.path.isdir(d):
            os.rmdir(d)
        pytest.skip("cannot make a memory cgroup here: %s" % e)
    return d, version


def test_max_connections_follows_memory_limit(tmp_path, upstream):
    d, version = cgroup_dir()
    port, admin = free_port(), free_port()
    cfg = tmp_path / "remora.yaml"
    cfg.write_text(to_yaml(default_config(port, admin, [upstream.addr])) + "\n")
    log = tmp_path / "stderr"
    with open(log, "wb") as err:
        proc = subprocess.Popen(
            ["/bin/sh", "-c", 'echo $$ > "$1/cgroup.procs" && exec "$2" -c "$3"', "sh", d,
             str(BIN), str(cfg)], stdout=subprocess.DEVNULL, stderr=err)
    try:
        assert wait_for(lambda: "max_connections" in log.read_text(), timeout=5), log.read_text()
        text = log.read_text()
        m = re.search(r"max_connections (\d+) \(RLIMIT_NOFILE bound (\d+), memory bound ([^)]*)\)",
                      text)
        assert m, text
        n, by_fd, how = int(m.group(1)), int(m.group(2)), m.group(3)
        assert how == "from the cgroup memory limit", (version, text)
        # per conn (docs/memory.md): 4 buffers of 64 KiB plus one 16 KiB read each, 2 heads
        # of 64 KiB, 4 KiB; 16 MiB reserved.
        want = (LIMIT - 16 * 1024 * 1024) // (4 * (65536 + 16384) + 2 * 65536 + 4096)
        assert n == min(want, by_fd), (n, want, by_fd)
        print("\ncgroup v%d, memory limit %d MiB: max_connections %d" % (version, LIMIT >> 20, n))
    finally:
        stop_process(proc)
        for _ in range(50):
            try:
                os.rmdir(d)
                break
            except OSError:
                time.sleep(0.05)


IDLE_CONNS = 1000


def test_idle_keepalive_conn_under_1kib(remora, upstream):
    """1000 keep-alive conns, one request each, left idle: (RSS - RSS before) / 1000 stays under
    1 KiB, issue 18's target (848 B measured with bench/idle_conns: the conn, h1_down's state,
    a timer and a read event; 1511 B before the transport gave its buffers back when idle and
    the kick and write events went). RSS moves in pages and slabs, so the bound is the target,
    176 KiB over the measured figure, not the figure itself."""
    if SANITIZED:
        pytest.skip("ASan's shadow memory and redzones inflate every allocation: RSS per conn "
                    "says nothing about remora's own")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # remora derives max_connections as (RLIMIT_NOFILE - 64) / 2: room for all of them
    need = 2 * IDLE_CONNS + 256
    if soft < need and (hard == resource.RLIM_INFINITY or hard >= need):
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))  # remora inherits it
    elif soft < need:
        pytest.skip("RLIMIT_NOFILE hard limit %d is below the %d descriptors needed" % (hard, need))
    r = remora(upstream, workers=1)
    warm = HttpConn(r.port)
    warm.request("GET", "/")
    assert warm.read_response().status == 200
    time.sleep(0.2)
    before = rss_kib(r.pid)
    conns = []
    try:
        for _ in range(IDLE_CONNS):
            c = HttpConn(r.port)
            conns.append(c)
            c.request("GET", "/")
            assert c.read_response().status == 200
        time.sleep(0.5)
        after = rss_kib(r.pid)
        per_conn = (after - before) * 1024 / IDLE_CONNS
        print("\nRSS %d KiB -> %d KiB with %d idle conns: %.0f B each"
              % (before, after, IDLE_CONNS, per_conn))
        assert per_conn < 1024, per_conn
        assert r.alive()
    finally:
        for c in conns:
            c.close()
        warm.close()
