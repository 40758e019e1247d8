# SPDX-License-Identifier: Apache-2.0
"""70: worker count at start: `workers: auto` follows the CPU affinity mask (sched_getaffinity),
an integer or REMORA_WORKERS overrides it, and every worker serves (each has its own
SO_REUSEPORT socket)."""

import os
import time
import subprocess

import pytest

from conftest import BIN, _stop, wait_ready
from helpers import HttpConn, default_config, free_port, to_yaml


def worker_threads(pid):
    names = []
    for tid in os.listdir("/proc/%d/task" % pid):
        with open("/proc/%d/task/%s/comm" % (pid, tid)) as f:
            names.append(f.read().strip())
    return sorted(n for n in names if n.startswith("remora-w"))


def start(tmp_path, upstream, workers, env=None, prefix=()):
    port, admin = free_port(), free_port()
    cfg = tmp_path / ("w-%s.yaml" % workers)
    cfg.write_text(to_yaml(default_config(port, admin, [upstream.addr], workers=workers)) + "\n")
    log = tmp_path / ("w-%s.stderr" % workers)
    full_env = dict(os.environ)
    full_env.pop("REMORA_WORKERS", None)
    full_env.update(env or {})
    with open(log, "wb") as errf:
        proc = subprocess.Popen(list(prefix) + [str(BIN), "-c", str(cfg)], stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=errf, env=full_env)
    try:
        wait_ready(proc, admin, log)
    except BaseException:
        _stop(proc)
        raise
    return proc, port


@pytest.mark.skipif(not os.path.exists("/usr/bin/taskset"), reason="taskset (util-linux) missing")
def test_auto_follows_affinity_mask(tmp_path, upstream):
    proc, _ = start(tmp_path, upstream, "auto", prefix=("taskset", "-c", "0"))
    try:
        assert worker_threads(proc.pid) == ["remora-w0"]
    finally:
        _stop(proc)


def test_auto_uses_every_allowed_cpu(tmp_path, upstream):
    proc, _ = start(tmp_path, upstream, "auto")
    try:
        assert len(worker_threads(proc.pid)) == len(os.sched_getaffinity(0))
    finally:
        _stop(proc)


def test_env_overrides_config(tmp_path, upstream):
    proc, _ = start(tmp_path, upstream, 1, env={"REMORA_WORKERS": "3"})
    try:
        # Each worker names its own thread as it starts: on a loaded machine the names may
        # trail readiness by a moment, so wait (bounded) for the set to settle.
        deadline = time.monotonic() + 3
        while worker_threads(proc.pid) != ["remora-w0", "remora-w1", "remora-w2"] \
                and time.monotonic() < deadline:
            time.sleep(0.02)
        assert worker_threads(proc.pid) == ["remora-w0", "remora-w1", "remora-w2"]
    finally:
        _stop(proc)


def worker_cpu_ns(pid):
    """CPU time of each worker thread in ns (schedstat: finer than utime's 10 ms ticks)."""
    out = {}
    for tid in os.listdir("/proc/%d/task" % pid):
        with open("/proc/%d/task/%s/comm" % (pid, tid)) as f:
            name = f.read().strip()
        if name.startswith("remora-w"):
            with open("/proc/%d/task/%s/schedstat" % (pid, tid)) as f:
                out[name] = int(f.read().split()[0])
    return out


def test_every_worker_serves(tmp_path, upstream):
    """With SO_REUSEPORT the kernel spreads new connections over the workers' sockets: many
    fresh connections must all be answered, and more than one worker must have done real work
    for them (an idle worker only wakes for its 500 ms heartbeat: microseconds of CPU)."""
    proc, port = start(tmp_path, upstream, 4)
    try:
        before = worker_cpu_ns(proc.pid)
        for i in range(400):
            with HttpConn(port, timeout=5) as c:
                c.request("GET", "/echo?%d" % i)
                assert c.read_response().status == 200
        after = worker_cpu_ns(proc.pid)
        busy = [w for w in after if after[w] - before.get(w, 0) > 500_000]
        assert len(busy) >= 2, (before, after)
    finally:
        _stop(proc)
