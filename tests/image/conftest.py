# SPDX-License-Identifier: Apache-2.0
"""Fixtures for the container image tests: the image built by docker/build-image.sh from a
static remora, a private podman (vfs storage and runc, under a temp dir removed at the end),
the test app (tests/integration/upstream.py) on a free port below 32768, and remora containers
started with the flags a hardened pod uses. Every container is removed by its id and every
process stopped by its PID at teardown.

REMORA_STATIC_BIN: the static binary to put in the image (default: proxy/remora when it is
statically linked). REMORA_IMAGE_MAX_BYTES: the compressed size limit (default 3000000)."""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from imageutil import (BUILD_IMAGE, FIGURES, HARDENED, INTEGRATION, MAX_BYTES, PYTHON,  # noqa: E402
                       TAG, App, Built, Container, Podman, low_free_ports, readyz_status,
                       static_binary)
from helpers import read_ready_line, stop_process, to_yaml  # noqa: E402


def pytest_terminal_summary(terminalreporter):
    if FIGURES:
        terminalreporter.section("remora image figures")
        for k, v in FIGURES.items():
            terminalreporter.write_line("%s: %s" % (k, v))


@pytest.fixture(scope="session")
def built(tmp_path_factory):
    """Builds the image twice (--check-reproducible) from the static binary."""
    binary = static_binary()
    for tool in ("umoci", "skopeo", "readelf"):
        if not shutil.which(tool):
            pytest.skip("%s not found (apt-get install umoci skopeo binutils)" % tool)
    out = tmp_path_factory.mktemp("image")
    t0 = time.monotonic()
    proc = subprocess.run([str(BUILD_IMAGE), "--binary", str(binary), "--out", str(out),
                           "--tag", TAG, "--check-reproducible", "--max-bytes", str(MAX_BYTES)],
                          capture_output=True, text=True, timeout=300)
    b = Built(out, proc)
    FIGURES["build (twice, --check-reproducible)"] = "%.1f s, exit %d" % (
        time.monotonic() - t0, b.rc)
    if b.rc != 0 or not b.digest:
        pytest.fail("docker/build-image.sh failed (exit %d):\n%s\n%s" % (b.rc, b.stdout, b.stderr))
    return b


@pytest.fixture(scope="session")
def podman(built):
    """A private podman with the built image loaded from its docker-archive."""
    if os.geteuid() != 0:
        pytest.skip("needs root (vfs storage and runc as root; rootless podman needs subuids)")
    for tool in ("podman", "runc", "conmon"):
        if not shutil.which(tool):
            pytest.skip("%s not found (apt-get install podman runc conmon)" % tool)
    pm = Podman()
    try:
        pm("load", "--input", built.archive, timeout=120)
        yield pm
    finally:
        pm.close()


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    log = tmp_path_factory.mktemp("app") / "upstream.log"
    port, = low_free_ports(1)
    with open(log, "wb") as errf:
        proc = subprocess.Popen([PYTHON, str(INTEGRATION / "upstream.py"), "--host", "127.0.0.1",
                                 "--port", str(port)], stdout=subprocess.PIPE, stderr=errf,
                                stdin=subprocess.DEVNULL)
    try:
        line = read_ready_line(proc, 10)
        if not line.startswith(b"READY "):
            pytest.fail("upstream.py did not start: %r %s" % (line, log.read_text()))
        yield App(proc, port)
    finally:
        stop_process(proc)
        proc.stdout.close()


@pytest.fixture(scope="module")
def start_remora(podman, built, app, tmp_path_factory):
    """start_remora(extra_run_args=()) -> Container: remora from the image on host network,
    hardened, its config (127.0.0.1 ports, the app as upstream, 2 workers, drain delay 0)
    mounted read-only over /etc/remora/remora.yaml. `podman create`, then `podman start`; waits
    for /readyz 200, timing it from the moment `podman start` starts."""
    image_id = built.image_id()
    started = []

    def start(extra=()):
        port, admin_port = low_free_ports(2)
        cfg = {
            "workers": 2,
            "listeners": [{"name": "inbound", "address": "127.0.0.1:%d" % port}],
            "admin": {"address": "127.0.0.1:%d" % admin_port},
            "upstreams": [{"name": "app", "endpoints": ["127.0.0.1:%d" % app.port]}],
            "routes": [{"name": "default", "match": {"path_prefix": "/"}, "upstream": "app"}],
            "drain": {"delay": "0s", "timeout": "10s"},
            "log": {"level": "info", "format": "json", "access_log": False},
        }
        d = tmp_path_factory.mktemp("conf")
        os.chmod(d, 0o755)
        conf = d / "remora.yaml"
        conf.write_text(to_yaml(cfg) + "\n")
        os.chmod(conf, 0o644)
        t0 = time.monotonic()
        cid = podman("create", *HARDENED, "--volume", "%s:/etc/remora/remora.yaml:ro" % conf,
                     *extra, image_id).stdout.strip()
        podman.containers.append(cid)
        t1 = time.monotonic()
        proc = subprocess.Popen(podman.base + ["start", cid], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
        t_ready = t_start = None
        deadline = t1 + 30
        while time.monotonic() < deadline:
            if t_start is None and proc.poll() is not None:
                t_start = time.monotonic()
                if proc.returncode != 0:
                    break
            if t_ready is None and readyz_status(admin_port) == 200:
                t_ready = time.monotonic()
            if t_ready is not None and t_start is not None:
                break
            time.sleep(0.001)
        out, err = proc.communicate(timeout=30)
        if proc.returncode != 0 or t_ready is None:
            logs = podman("logs", cid, check=False).stderr
            pytest.fail("remora container did not become ready (podman start exit %s): %s\n%s"
                        % (proc.returncode, err, logs))
        c = Container(podman, cid, port, admin_port, create_ms=(t1 - t0) * 1000,
                      ready_ms=(t_ready - t1) * 1000, start_ms=(t_start - t1) * 1000)
        started.append(c)
        return c

    yield start
    for c in started:
        podman("rm", "--force", "--time", "0", c.id, check=False)
