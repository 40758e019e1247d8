# SPDX-License-Identifier: Apache-2.0
"""Crash safety: a fault signal gives one JSON log line with the signal and a backtrace, then
the process dies by that same signal (exit status and core dump of the fault)."""
import json
import os
import signal
import subprocess
import time

import pytest

from conftest import BIN
from helpers import free_port, stop_process


def _sanitized():
    with open(BIN, "rb") as f:
        return b"__asan_init" in f.read()


def _start(bin_path, tmp_path):
    cfg = tmp_path / "remora.yaml"
    cfg.write_text(
        "workers: 2\n"
        "listeners:\n  - name: main\n    address: \"127.0.0.1:%d\"\n"
        "admin:\n  address: \"127.0.0.1:%d\"\n"
        "upstreams:\n  - name: app\n    endpoints: [\"127.0.0.1:1\"]\n"
        % (free_port(), free_port()))
    err = tmp_path / "stderr.log"
    proc = subprocess.Popen([bin_path, "-c", str(cfg)], stdout=subprocess.DEVNULL,
                            stderr=open(err, "wb"))
    return proc, err


@pytest.mark.parametrize("sig", [signal.SIGSEGV, signal.SIGBUS, signal.SIGFPE, signal.SIGILL,
                                 signal.SIGABRT])
def test_fault_logs_backtrace_and_dies_by_the_signal(tmp_path, sig):
    if _sanitized():
        pytest.skip("sanitizer builds keep the sanitizer's own fault report (crash.c)")
    proc, err = _start(str(BIN), tmp_path)
    try:
        deadline = time.monotonic() + 5
        while b"started" not in err.read_bytes() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert b"started" in err.read_bytes(), err.read_bytes()[-500:]
        os.kill(proc.pid, sig)
        rc = proc.wait(10)
    finally:
        if proc.poll() is None:
            stop_process(proc)
    assert rc == -sig, "expected death by %s, got %r" % (sig.name, rc)
    lines = [json.loads(l) for l in err.read_text().splitlines() if '"msg":"crash"' in l]
    assert len(lines) == 1, err.read_text()[-2000:]
    c = lines[0]
    assert c["level"] == "error" and c["signal"] == sig.name and c["signo"] == int(sig)
    assert c["ts_unix"] > 1_600_000_000
    assert len(c["backtrace"]) >= 2 and all(f.startswith("0x") for f in c["backtrace"])
