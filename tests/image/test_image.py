# SPDX-License-Identifier: Apache-2.0
"""The container image: docker/build-image.sh builds it reproducibly and small, its layer and
config are what docker/Dockerfile describes, and remora runs in it under podman (runc, vfs) the
way a hardened pod runs it: host network, user 65532, read-only root, no capabilities,
no-new-privileges, explicit ulimits, a config mounted read-only."""

import calendar
import errno
import gzip
import hashlib
import io
import json
import platform
import re
import shutil
import subprocess
import tarfile
import threading
import time

import pytest

from imageutil import FIGURES, HARDENED, MAX_BYTES, ROOT, TAG, readyz_status, static_binary
from helpers import http, wait_for

EXPECTED_FILES = {
    # path: (type, mode)
    ".": ("dir", 0o755),
    "etc": ("dir", 0o755),
    "etc/group": ("file", 0o644),
    "etc/nsswitch.conf": ("file", 0o644),
    "etc/passwd": ("file", 0o644),
    "etc/remora": ("dir", 0o755),
    "etc/remora/remora.yaml": ("file", 0o644),
    "remora": ("file", 0o755),
}


def layer_members(built):
    """[(TarInfo, bytes or None)] of the image's single layer, in archive order."""
    man = built.manifest()
    assert len(man["layers"]) == 1, man
    layer = man["layers"][0]
    assert layer["mediaType"] == "application/vnd.oci.image.layer.v1.tar+gzip"
    raw = gzip.decompress(built.blob(layer["digest"]).read_bytes())
    out = []
    with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as t:
        for m in t:
            out.append((m, t.extractfile(m).read() if m.isfile() else None))
    return out


# ---- the build ------------------------------------------------------------------------------

def test_build_reproducible_and_small(built):
    lines = built.stdout.splitlines()
    assert "reproducible: yes, two builds gave %s" % built.digest in lines, built.stdout
    # The compressed size the script states is the layer + config + manifest blobs.
    man = built.manifest()
    total = (sum(built.blob(l["digest"]).stat().st_size for l in man["layers"])
             + built.blob(man["config"]["digest"]).stat().st_size
             + built.blob(built.digest).stat().st_size)
    assert built.compressed == total
    assert hashlib.sha256(built.blob(built.digest).read_bytes()).hexdigest() == \
        built.digest.split(":")[1]
    FIGURES["image digest"] = built.digest
    FIGURES["compressed size"] = "%d bytes (layer + config + manifest; limit %d)" % (
        total, MAX_BYTES)
    assert total <= MAX_BYTES


def test_size_limit_fails_the_build(built, tmp_path):
    p = subprocess.run([str(ROOT / "docker" / "build-image.sh"), "--binary", str(static_binary()),
                        "--out", str(tmp_path), "--max-bytes", str(built.compressed - 1)],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 1, p.stdout + p.stderr
    assert p.stdout.splitlines()[-1] == "image: %s compressed %d bytes" % (
        built.digest, built.compressed)
    assert "> limit" in p.stderr


def test_config(built):
    cfg = built.config()
    c = cfg["config"]
    assert c["User"] == "65532:65532"
    assert c["Entrypoint"] == ["/remora"]
    assert "Cmd" not in c
    assert set(c["ExposedPorts"]) == {"8000/tcp", "9090/tcp"}
    assert c.get("StopSignal") == "SIGTERM"
    labels = c["Labels"]
    ver = subprocess.run([str(static_binary()), "--version"], capture_output=True, text=True,
                         timeout=10).stdout.split()
    assert labels["org.opencontainers.image.version"] == ver[1]
    assert labels["org.opencontainers.image.revision"].startswith(ver[3].replace("-dirty", ""))
    assert labels["org.opencontainers.image.source"]
    machine = platform.machine()
    assert cfg["architecture"] == {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)
    assert cfg["os"] == "linux"
    assert [h["created"] for h in cfg["history"]] == [cfg["created"]]


def test_layer_contents(built):
    members = layer_members(built)
    names = [m.name for m, _ in members]
    assert names == sorted(names, key=lambda n: n.split("/")), "entries not in lexical order"
    assert set(names) == set(EXPECTED_FILES), names  # no shell, no package manager, nothing else
    mtimes = set()
    for m, data in members:
        kind, mode = EXPECTED_FILES[m.name]
        assert (m.isdir() if kind == "dir" else m.isfile()), m.name
        assert m.mode & 0o7777 == mode, (m.name, oct(m.mode))
        assert (m.uid, m.gid, m.uname, m.gname) == (0, 0, "", ""), m.name
        mtimes.add(m.mtime)
    created = built.config()["created"]
    assert mtimes == {calendar.timegm(time.strptime(created, "%Y-%m-%dT%H:%M:%SZ"))}, \
        (mtimes, created)
    files = {m.name: data for m, data in members if data is not None}
    assert files["remora"] == static_binary().read_bytes()
    assert files["etc/remora/remora.yaml"] == (ROOT / "conf" / "remora.yaml").read_bytes()
    passwd = files["etc/passwd"].decode().splitlines()
    assert "remora:x:65532:65532:remora:/nonexistent:/sbin/nologin" in passwd
    assert any(line.startswith("nobody:x:65534:65534:") for line in passwd)
    assert "remora:x:65532:" in files["etc/group"].decode().splitlines()


def test_ca_bundle_only_on_request(built, tmp_path):
    """No trust store by default (docker/README.md, "Trust store"); --ca-certs FILE puts FILE at
    /etc/ssl/certs/ca-certificates.crt (0644 in 0755 directories), where remora looks for a
    system store, and the build names it."""
    assert "CA bundle none" in built.stdout + built.stderr
    ca = tmp_path / "bundle.pem"
    ca.write_bytes(b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    out = tmp_path / "with-ca"
    p = subprocess.run([str(ROOT / "docker" / "build-image.sh"), "--binary", str(static_binary()),
                        "--out", str(out), "--ca-certs", str(ca)],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "CA bundle %s" % ca in p.stdout + p.stderr
    idx = json.loads((out / "oci" / "index.json").read_text())
    blobs = out / "oci" / "blobs" / "sha256"
    man = json.loads((blobs / idx["manifests"][0]["digest"].split(":")[1]).read_bytes())
    layer = blobs / man["layers"][0]["digest"].split(":")[1]
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(layer.read_bytes()))) as tar:
        modes = {m.name.lstrip("./"): m.mode & 0o7777 for m in tar.getmembers()}
        data = tar.extractfile("etc/ssl/certs/ca-certificates.crt").read()
    assert data == ca.read_bytes()
    assert (modes["etc/ssl"], modes["etc/ssl/certs"]) == (0o755, 0o755)
    assert modes["etc/ssl/certs/ca-certificates.crt"] == 0o644


def test_docker_archive(built):
    with tarfile.open(built.archive) as t:
        manifest = json.load(t.extractfile("manifest.json"))
    assert len(manifest) == 1
    assert manifest[0]["RepoTags"] == ["docker.io/library/" + TAG]
    assert manifest[0]["Config"].startswith(built.image_id())


# ---- running it -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def probe(tmp_path_factory):
    """A static helper binary mounted into the container: prints its uid and gid, then tries to
    create each path it is given and prints 0 or the errno. None without gcc -static."""
    if not shutil.which("gcc"):
        return None
    d = tmp_path_factory.mktemp("probe")
    src = d / "probe.c"
    src.write_text(r"""
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>
int main(int argc, char **argv) {
    printf("uid %d gid %d\n", (int)getuid(), (int)getgid());
    for (int i = 1; i < argc; i++) {
        int fd = open(argv[i], O_WRONLY | O_CREAT, 0644);
        if (fd >= 0) { printf("%s 0\n", argv[i]); close(fd); unlink(argv[i]); }
        else printf("%s %d\n", argv[i], errno);
    }
    return 0;
}
""")
    exe = d / "probe"
    p = subprocess.run(["gcc", "-static", "-O2", "-o", str(exe), str(src)], capture_output=True,
                       timeout=60)
    if p.returncode != 0:
        return None
    exe.chmod(0o755)
    d.chmod(0o755)
    return exe


@pytest.fixture(scope="module")
def running(start_remora, probe):
    """One remora container for the read-only checks (the probe mounted at /probe)."""
    extra = ["--volume", "%s:/probe:ro" % probe] if probe else []
    return start_remora(extra)


def test_loaded_image_is_the_built_one(podman, built):
    ids = podman("images", "--no-trunc", "--format", "{{.ID}}").stdout.split()
    assert "sha256:" + built.image_id() in ids, ids


def test_default_config_and_version(podman, built):
    p = podman("run", "--rm", *HARDENED, built.image_id(), "--check", check=False)
    # /etc/remora/remora.yaml from the image (conf/remora.yaml: 2 routes), not the embedded
    # default (1 route).
    assert p.returncode == 0, p.stdout + p.stderr
    assert (p.stdout + p.stderr).strip() == \
        "ok: 1 listener, 1 upstream (1 endpoint), 2 routes, workers auto"
    p = podman("run", "--rm", *HARDENED, built.image_id(), "--version")
    label = built.config()["config"]["Labels"]["org.opencontainers.image.version"]
    assert p.stdout.splitlines()[0] == "remora " + label


def test_tls_upstream_needs_a_ca_in_the_image(podman, built, tmp_path):
    """The image has no CA bundle: a TLS upstream without tls.ca could never verify, so the
    config is refused with that reason; with tls.ca (mounted like a Secret) it is accepted."""
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-keyout", str(tmp_path / "ca.key"),
                    "-out", str(tmp_path / "ca.pem"), "-days", "2", "-subj", "/CN=app-ca"],
                   check=True, capture_output=True, timeout=30)
    (tmp_path / "ca.key").unlink()
    base = ('listeners: [{name: inbound, address: "0.0.0.0:8000"}]\n'
            'upstreams: [{name: app, endpoints: ["127.0.0.1:8443"], tls: {%s}}]\n'
            'routes: [{name: all, match: {path_prefix: "/"}, upstream: app}]\n')
    for name, tls in (("no-ca.yaml", "sni: app.example"),
                      ("ca.yaml", "sni: app.example, ca: /tls/ca.pem")):
        (tmp_path / name).write_text(base % tls)
    for p in tmp_path.iterdir():
        p.chmod(0o644)
    tmp_path.chmod(0o755)
    run = ["run", "--rm", *HARDENED, "--volume", "%s:/tls:ro" % tmp_path, built.image_id()]
    p = podman(*run, "--check", "-c", "/tls/no-ca.yaml", check=False)
    assert p.returncode == 1, p.stdout + p.stderr
    assert "no tls.ca and no system trust store" in p.stdout + p.stderr, p.stdout + p.stderr
    p = podman(*run, "--check", "-c", "/tls/ca.yaml", check=False)
    assert p.returncode == 0, p.stdout + p.stderr


def test_ready_and_proxied(running, app):
    c = running
    assert readyz_status(c.admin_port) == 200
    r = http(c.port, "GET", "/echo?from=image")
    assert r.status == 200 and r.complete
    assert r.has("x-upstream-conn")  # answered by the app, through remora
    seen = r.json()
    assert seen["path"] == "/echo?from=image"
    assert ["X-Forwarded-For", "127.0.0.1"] in seen["headers"]
    # the exec readiness probe a pod without a shell uses
    p = c.pm("exec", c.id, "/remora", "--admin-request", "GET", "/readyz", check=False)
    assert p.returncode == 0, p.stdout + p.stderr
    ready = [m for m in c.log_msgs() if m.startswith("ready in ")]
    assert len(ready) == 1, c.logs()
    FIGURES["exec to ready (podman start -> first /readyz 200)"] = (
        "%.0f ms (podman start returned after %.0f ms; podman create before it took %.0f ms)"
        % (c.ready_ms, c.start_ms, c.create_ms))
    FIGURES["container log"] = ready[0]


def test_runs_as_65532_without_privileges(running):
    st = {}
    with open("/proc/%d/status" % running.pid) as f:
        for line in f:
            k, _, v = line.partition(":")
            st[k] = v.split()
    assert st["Uid"] == ["65532"] * 4
    assert st["Gid"] == ["65532"] * 4
    assert set(st["Groups"]) <= {"65532"}  # runc adds the primary group; nothing else
    for cap in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(st[cap][0], 16) == 0, (cap, st[cap])
    assert st["NoNewPrivs"] == ["1"]
    limits = open("/proc/%d/limits" % running.pid).read()
    assert re.search(r"^Max open files\s+4096\s+4096\s", limits, re.M), limits
    assert re.search(r"^Max processes\s+256\s+256\s", limits, re.M), limits


def test_root_fs_read_only(running, probe):
    with open("/proc/%d/mountinfo" % running.pid) as f:
        root = [line.split() for line in f if line.split()[4] == "/"]
    assert root and "ro" in root[-1][5].split(","), root
    if probe is None:
        pytest.skip("no gcc -static for the write probe (mountinfo checked only)")
    p = running.pm("exec", running.id, "/probe", "/probe-write", "/etc/probe-write",
                   "/etc/remora/remora.yaml")
    out = p.stdout.splitlines()
    assert out[0] == "uid 65532 gid 65532"
    assert out[1:] == ["/probe-write %d" % errno.EROFS, "/etc/probe-write %d" % errno.EROFS,
                       "/etc/remora/remora.yaml %d" % errno.EACCES], out


def test_idle_rss(running):
    for _ in range(3):
        assert http(running.port, "GET", "/echo").status == 200
    time.sleep(0.5)
    with open("/proc/%d/status" % running.pid) as f:
        rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    FIGURES["idle RSS in the container"] = "%d KiB (VmRSS, 2 workers, after 3 requests)" % rss
    assert rss < 8 * 1024


def test_sigterm_drains_and_exits_0(start_remora, app):
    c = start_remora()
    result = {}

    def slow():
        try:
            result["r"] = http(c.port, "GET", "/delay?ms=1500", timeout=10)
        except Exception as e:  # noqa: BLE001 - reported by the assertion below
            result["e"] = e

    t = threading.Thread(target=slow)
    t.start()
    try:
        assert wait_for(lambda: app.stats().get("in_flight", 0) >= 1, timeout=5)
        t0 = time.monotonic()
        c.pm("kill", "--signal", "TERM", c.id)
        assert wait_for(lambda: readyz_status(c.admin_port) == 503, timeout=2)
        p = c.pm("wait", c.id, timeout=30)
        elapsed = time.monotonic() - t0
    finally:
        t.join(15)
    assert "r" in result, result
    assert result["r"].status == 200 and result["r"].body == b"ok"
    assert p.stdout.strip() == "0"
    assert c.state() == ["exited", "0"]
    msgs = c.log_msgs()
    assert any(m.startswith("drain finished") and "1 requests completed" in m and "0 cut" in m
               for m in msgs), msgs
    assert 1.0 < elapsed < 5.0, elapsed


def test_stop_exits_0_without_waiting_for_the_grace(start_remora):
    c = start_remora()
    t0 = time.monotonic()
    c.pm("stop", "--time", "10", c.id)
    elapsed = time.monotonic() - t0
    assert c.state() == ["exited", "0"]
    FIGURES["podman stop (idle) to exit"] = "%.0f ms" % (elapsed * 1000)
    assert elapsed < 3.0  # SIGTERM handled as PID 1, not SIGKILLed after the 10 s grace
