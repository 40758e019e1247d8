# SPDX-License-Identifier: Apache-2.0
"""Running out of file descriptors (EMFILE) pauses accepting instead of spinning on a readable
listening socket, and remora serves again once descriptors free up. remora runs under
RLIMIT_NOFILE 64 with a listener max_connections far above it, so EMFILE is what stops it."""

import os
import shutil
import socket
import subprocess
import time

import pytest

from conftest import BIN, _stop, wait_ready
from helpers import HttpConn, default_config, free_port, to_yaml


def cpu_s(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.skipif(not shutil.which("prlimit"), reason="prlimit (util-linux) missing")
def test_emfile_pauses_accepting(tmp_path, upstream):
    port, admin = free_port(), free_port()
    cfg = default_config(port, admin, [upstream.addr], workers=1)
    cfg["listeners"][0]["max_connections"] = 10000
    path = tmp_path / "emfile.yaml"
    path.write_text(to_yaml(cfg) + "\n")
    log = tmp_path / "emfile.stderr"
    with open(log, "wb") as errf:
        proc = subprocess.Popen(["prlimit", "--nofile=64:64", str(BIN), "-c", str(path)],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=errf)
    socks = []
    try:
        wait_ready(proc, admin, log)
        for _ in range(120):  # more than remora has descriptors for
            s = socket.create_connection(("127.0.0.1", port), timeout=2)
            socks.append(s)
        time.sleep(0.3)
        c0 = cpu_s(proc.pid)
        time.sleep(2.0)
        busy = cpu_s(proc.pid) - c0
        assert busy < 0.5, "remora burned %.2f s of CPU in 2 s at EMFILE (spinning)" % busy
        assert b"accept failed" in log.read_bytes()
        for s in socks:
            s.close()
        socks = []
        deadline = time.monotonic() + 5
        while True:
            try:
                with HttpConn(port, timeout=2) as c:
                    c.request("GET", "/echo?after")
                    assert c.read_response().status == 200
                break
            except (OSError, AssertionError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        assert proc.poll() is None
    finally:
        for s in socks:
            s.close()
        _stop(proc)
