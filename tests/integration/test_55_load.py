# SPDX-License-Identifier: Apache-2.0
"""55: a short bounded load: wrk -t2 -c64 -d10s through remora to the upstream must show no
socket errors and no non-2xx responses; remora keeps serving afterwards."""

import re
import shutil
import subprocess

import pytest

from helpers import http


def parse_wrk(out):
    res = {"requests": None, "rps": None, "socket_errors": 0, "non2xx": 0}
    m = re.search(r"(\d+) requests in ([\d.]+)(\w+),", out)
    if m:
        res["requests"] = int(m.group(1))
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if m:
        res["rps"] = float(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        res["socket_errors"] = sum(int(x) for x in m.groups())
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        res["non2xx"] = int(m.group(1))
    return res


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk not installed (apt-get install wrk)")
@pytest.mark.parametrize("path", ["/bytes?n=64", "/echo"])
def test_wrk_10s(remora, upstream, path):
    p = remora(upstream, workers=2)
    out = subprocess.run(["wrk", "-t2", "-c64", "-d10s", "--timeout", "5s",
                          "http://127.0.0.1:%d%s" % (p.port, path)],
                         capture_output=True, timeout=40)
    text = out.stdout.decode()
    print("\n---- wrk %s ----\n%s" % (path, text))
    assert out.returncode == 0, out.stderr
    res = parse_wrk(text)
    assert res["requests"], text
    assert res["socket_errors"] == 0, text
    assert res["non2xx"] == 0, text
    # a floor far below what remora and the upstream do here: catches stalls (e.g. Nagle
    # or timer-paced writes), not a benchmark
    assert res["rps"] >= 1000, text
    assert p.alive()
    r = http(p.port, "GET", "/echo?after-load")
    assert r.status == 200
