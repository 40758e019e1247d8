# SPDX-License-Identifier: Apache-2.0
"""imageutil: what the container image tests share (conftest.py holds the fixtures): the
build-image.sh output (`Built`), a private podman (`Podman`: vfs storage, run root and tmpdir
under one temp dir, runc, cgroupfs), free ports below 32768, a running remora container
(`Container`) and the figures printed at the end of the run."""

import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
INTEGRATION = ROOT / "tests" / "integration"
sys.path.insert(0, str(INTEGRATION))

from helpers import http_get_body  # noqa: E402

BUILD_IMAGE = ROOT / "docker" / "build-image.sh"
PYTHON = "/usr/bin/python3"
MAX_BYTES = int(os.environ.get("REMORA_IMAGE_MAX_BYTES", "3000000"))
TAG = "remora:dev"
IMAGE_RE = re.compile(r"^image: (sha256:[0-9a-f]{64}) compressed ([0-9]+) bytes$")

# Figures the tests measured, printed at the end of the run (also without -s).
FIGURES = {}


def is_static(path):
    """True when path is an ELF file without a program interpreter (statically linked)."""
    try:
        out = subprocess.run(["readelf", "-lW", str(path)], capture_output=True, text=True,
                             timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and "Requesting program interpreter" not in out.stdout


def static_binary():
    env = os.environ.get("REMORA_STATIC_BIN")
    if env:
        if not (os.path.isfile(env) and os.access(env, os.X_OK)):
            pytest.skip("REMORA_STATIC_BIN=%s is not an executable file" % env)
        return Path(env)
    default = ROOT / "proxy" / "remora"
    if default.is_file() and is_static(default):
        return default
    pytest.skip("no static remora: build one (./configure --enable-static-binary && make, "
                "strip it) and set REMORA_STATIC_BIN=/path/to/it")


class Built:
    """The output of one docker/build-image.sh run."""

    def __init__(self, out, proc):
        self.out = out
        self.rc = proc.returncode
        self.stdout = proc.stdout
        self.stderr = proc.stderr
        m = IMAGE_RE.match(proc.stdout.strip().splitlines()[-1]) if proc.stdout.strip() else None
        self.digest = m.group(1) if m else None
        self.compressed = int(m.group(2)) if m else None
        self.layout = out / "oci"
        self.archive = out / "remora.tar"

    def blob(self, digest):
        algo, hexd = digest.split(":", 1)
        return self.layout / "blobs" / algo / hexd

    def manifest(self):
        return json.loads(self.blob(self.digest).read_text())

    def config(self):
        return json.loads(self.blob(self.manifest()["config"]["digest"]).read_text())

    def image_id(self):
        """The config digest's hex: the image ID podman and docker show after a load."""
        return self.manifest()["config"]["digest"].split(":", 1)[1]


# ---- podman ---------------------------------------------------------------------------------

class Podman:
    """podman with its own vfs storage, run root and tmpdir under one temp dir, the runc
    runtime and cgroupfs (no systemd needed); tracks the containers it starts."""

    def __init__(self):
        self.dir = Path(tempfile.mkdtemp(prefix="remora-podman."))
        self.base = ["podman", "--root", str(self.dir / "root"),
                     "--runroot", str(self.dir / "run"), "--tmpdir", str(self.dir / "tmp"),
                     "--storage-driver", "vfs", "--runtime", "runc",
                     "--cgroup-manager", "cgroupfs", "--events-backend", "file"]
        self.containers = []

    def __call__(self, *args, timeout=60, check=True):
        p = subprocess.run(self.base + [str(a) for a in args], capture_output=True, text=True,
                           timeout=timeout, stdin=subprocess.DEVNULL)
        if check and p.returncode != 0:
            raise AssertionError("podman %s: exit %d\n%s%s" % (
                " ".join(str(a) for a in args), p.returncode, p.stdout, p.stderr))
        return p

    def close(self):
        for cid in self.containers:
            self("rm", "--force", "--time", "0", cid, check=False)
        # Anything podman left mounted under our dir (a container's /dev/shm), then the dir.
        with open("/proc/self/mountinfo") as f:
            mounts = [line.split()[4] for line in f]
        for m in sorted((m for m in mounts if m.startswith(str(self.dir) + "/")), reverse=True):
            subprocess.run(["umount", "-l", m], capture_output=True)
        # conmon processes of our containers (their command line names our dir), by PID.
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                cmd = Path("/proc/%s/cmdline" % pid).read_bytes()
            except OSError:
                continue
            if cmd.split(b"\0")[0].endswith(b"conmon") and str(self.dir).encode() in cmd:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except OSError:
                    pass
        shutil.rmtree(self.dir, ignore_errors=True)


# ---- the app and remora containers ----------------------------------------------------------

def low_free_ports(n, lo=20000, hi=32767):
    """n distinct free TCP ports on 127.0.0.1 below the kernel's ephemeral range (so no
    outgoing connection holds them), chosen at random and checked by binding."""
    ports = []
    for port in random.sample(range(lo, hi), 200):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        ports.append(port)
        if len(ports) == n:
            return ports
    raise RuntimeError("no %d free ports in %d-%d" % (n, lo, hi))


class App:
    def __init__(self, proc, port):
        self.proc = proc
        self.port = port

    def stats(self):
        st, body = http_get_body(self.port, "/_stats")
        return json.loads(body) if st == 200 else {}


HARDENED = ["--network", "host", "--user", "65532:65532", "--read-only", "--cap-drop", "ALL",
            "--security-opt", "no-new-privileges", "--ulimit", "nofile=4096:4096",
            "--ulimit", "nproc=256:256", "--log-driver", "k8s-file"]


class Container:
    """One remora container: id, host PID, ports, and how long it took to become ready."""

    def __init__(self, pm, cid, port, admin_port, create_ms, ready_ms, start_ms):
        self.pm = pm
        self.id = cid
        self.port = port
        self.admin_port = admin_port
        self.create_ms = create_ms  # `podman create` (the vfs copy of the image included)
        self.ready_ms = ready_ms    # `podman start` started -> first 200 on /readyz
        self.start_ms = start_ms    # `podman start` started -> it returned
        self.pid = int(pm("inspect", "--format", "{{.State.Pid}}", cid).stdout.strip())

    def logs(self):
        p = self.pm("logs", self.id)
        return (p.stdout + p.stderr).splitlines()

    def log_msgs(self):
        out = []
        for line in self.logs():
            try:
                out.append(json.loads(line)["msg"])
            except (ValueError, KeyError, TypeError):
                out.append(line)
        return out

    def state(self):
        return self.pm("inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}",
                       self.id).stdout.split()


def readyz_status(port):
    """Status of GET /readyz on a fresh connection, None when nothing answers."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = b""
            while b"\r\n" not in data:
                d = s.recv(4096)
                if not d:
                    break
                data += d
        m = re.match(rb"HTTP/1\.[01] (\d{3})", data)
        return int(m.group(1)) if m else None
    except OSError:
        return None
