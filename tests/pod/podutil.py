# SPDX-License-Identifier: Apache-2.0
"""podutil: the pieces of the pod tests (tests/pod/README.md).

- `Podman`: podman and buildah on a storage of their own in a temp dir (vfs driver, runc,
  cgroupfs, a containers.conf with explicit ulimits, CNI config in the temp dir), every call
  bounded in time; `cleanup()` removes what it created by id and then the temp dir.
- images: `static_binary()` (REMORA_STATIC_BIN or proxy/remora, if statically linked),
  `remora_image()` (REMORA_IMAGE_DIR, else docker/build-image.sh if the repository has it, else
  buildah FROM scratch with /remora as uid 65532), `app_image()` (FROM scratch with only the
  merged-/usr symlinks: the host's /usr is mounted read-only into it and podapp.py runs under
  Debian's python3).
- `PodPlan`: the example manifest (`kubectl kustomize k8s/example`, else
  fallback-example.yaml) read and rewritten into one Pod that `podman kube play` accepts: images
  local, the native sidecar turned into a regular container (podman 4.3 runs an init container
  to completion before the app and does not know `restartPolicy: Always` on it), the ConfigMap
  volume a read-only hostPath on a kubelet-style projection (`..data` symlink,
  reloadutil.ConfDir), probes and preStop hooks taken out to be run by the test the way the
  kubelet runs them.
- `Pod`: one kube-played pod; starts its containers in the kubelet's order for a native
  sidecar (remora, its startup probe, then the app) or all together, stops them in either
  order, reports exit codes and logs.
- `NetNS`: the pod's network namespace (the infra container's), entered per thread with
  setns(2), so that test threads talk to 127.0.0.1 inside the pod; `Prober` (an HTTP probe
  loop like the kubelet's), `LoadLoop` (threads sending requests, every outcome counted),
  `InFlight` (one request on its own connection, in a thread)."""

import copy
import ctypes
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
INTEG = ROOT / "tests" / "integration"
sys.path.insert(0, str(INTEG))

from helpers import HttpConn, Truncated, wait_for  # noqa: E402

import yaml  # noqa: E402  (python3-yaml)

CLONE_NEWNET = 0x40000000
ULIMITS = ("nofile=4096:4096", "nproc=4096:4096")
REMORA_IMAGE = "localhost/remora:pod-test"
APP_IMAGE = "localhost/remora-pod-app:pod-test"
APP_UID = 65532
FALLBACK = HERE / "fallback-example.yaml"
EXAMPLE = ROOT / "k8s" / "example"
CMD_TIMEOUT = 120


class PodError(Exception):
    pass


# ---- podman on a storage of its own ------------------------------------------------------

class Podman:
    """podman/buildah with --root, --runroot and --tmpdir under base, the vfs driver, runc,
    cgroupfs and the file events backend; CONTAINERS_CONF points at base/containers.conf
    (default_ulimits: this machine refuses runc's default RLIMIT_NOFILE, and the pod's infra
    container takes no --ulimit)."""

    def __init__(self, base):
        self.base = Path(base)
        self.root = self.base / "root"
        self.runroot = self.base / "run"
        self.tmp = self.base / "tmp"
        for d in (self.root, self.runroot, self.tmp, self.base / "cni"):
            d.mkdir(parents=True, exist_ok=True)
        self.conf = self.base / "containers.conf"
        self.conf.write_text(
            "[containers]\n"
            "default_ulimits = [%s]\n"
            "log_driver = \"k8s-file\"\n"
            "[engine]\n"
            "runtime = \"runc\"\n"
            "cgroup_manager = \"cgroupfs\"\n"
            "events_logger = \"file\"\n"
            "[network]\n"
            "network_config_dir = \"%s\"\n"
            % (", ".join('"%s"' % u for u in ULIMITS), self.base / "cni"))
        self.env = dict(os.environ, CONTAINERS_CONF=str(self.conf), BUILDAH_ISOLATION="chroot",
                        TMPDIR=str(self.tmp))
        self.pods = []      # pod ids to remove at cleanup
        self.log = []       # (argv, seconds, rc) of every call

    def storage_args(self):
        return ["--root", str(self.root), "--runroot", str(self.runroot),
                "--storage-driver", "vfs"]

    def _run(self, argv, timeout, check):
        t0 = time.monotonic()
        try:
            p = subprocess.run(argv, capture_output=True, timeout=timeout, env=self.env,
                               stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as e:
            raise PodError("timed out after %ss: %s" % (timeout, " ".join(argv))) from e
        self.log.append((argv, time.monotonic() - t0, p.returncode))
        if check and p.returncode != 0:
            raise PodError("%s: exit %d\n%s%s" % (" ".join(argv), p.returncode,
                                                  p.stdout.decode(errors="replace")[-4000:],
                                                  p.stderr.decode(errors="replace")[-4000:]))
        return p

    def __call__(self, *args, timeout=CMD_TIMEOUT, check=True):
        argv = (["podman"] + self.storage_args() +
                ["--runtime", "runc", "--cgroup-manager", "cgroupfs", "--events-backend",
                 "file", "--tmpdir", str(self.tmp)] + [str(a) for a in args])
        return self._run(argv, timeout, check)

    def out(self, *args, **kw):
        return self(*args, **kw).stdout.decode().strip()

    def buildah(self, *args, timeout=CMD_TIMEOUT, check=True):
        argv = ["buildah"] + self.storage_args() + [str(a) for a in args]
        return self._run(argv, timeout, check)

    def inspect(self, ref):
        return json.loads(self.out("inspect", "--type", "container", ref))[0]

    def cleanup(self):
        """Removes the pods it made (by id, containers with them), then everything else in
        its own storage, unmounts what podman left mounted under base and removes base.
        Returns a list of problems (empty when all went)."""
        problems = []
        for pid in self.pods:
            p = self("pod", "rm", "-f", "-t", "0", pid, check=False, timeout=60)
            if p.returncode != 0 and b"no such pod" not in p.stderr:
                problems.append("pod rm %s: %s" % (pid, p.stderr.decode(errors="replace")))
        left = self.out("ps", "-a", "-q", "--no-trunc", check=False)
        for cid in left.split():
            self("rm", "-f", "-t", "0", cid, check=False, timeout=60)
        self.buildah("rm", "--all", check=False)
        self("rmi", "-a", "-f", check=False, timeout=60)
        for mnt in reversed(mounts_under(self.base)):
            r = subprocess.run(["umount", mnt], capture_output=True)
            if r.returncode != 0:
                subprocess.run(["umount", "-l", mnt], capture_output=True)
                problems.append("had to lazily unmount %s" % mnt)
        shutil.rmtree(self.base, ignore_errors=True)
        if self.base.exists():
            problems.append("could not remove %s" % self.base)
        return problems


def mounts_under(base):
    base = str(base).rstrip("/") + "/"
    out = []
    with open("/proc/self/mounts") as f:
        for line in f:
            mp = line.split()[1].replace("\\040", " ")
            if (mp + "/").startswith(base):
                out.append(mp)
    return out


# ---- binaries and images ------------------------------------------------------------------

def elf_is_static(path):
    """True for an ELF executable without a PT_INTERP program header (no dynamic loader)."""
    with open(path, "rb") as f:
        h = f.read(64)
        if len(h) < 64 or h[:4] != b"\x7fELF" or h[4] != 2:
            return False
        end = "<" if h[5] == 1 else ">"
        import struct
        phoff = struct.unpack(end + "Q", h[32:40])[0]
        phentsize, phnum = struct.unpack(end + "HH", h[54:58])
        for i in range(phnum):
            f.seek(phoff + i * phentsize)
            if struct.unpack(end + "I", f.read(4))[0] == 3:  # PT_INTERP
                return False
    return True


def static_binary():
    """(path, None) of the static remora binary, or (None, reason)."""
    env = os.environ.get("REMORA_STATIC_BIN")
    path = Path(env) if env else ROOT / "proxy" / "remora"
    if not path.is_file():
        return None, ("%s not found; build a static binary (autoreconf -fi && ./configure "
                      "--enable-static-binary && make proxy/remora) or set REMORA_STATIC_BIN"
                      % path)
    if not elf_is_static(path):
        return None, ("%s is not statically linked (./configure --enable-static-binary), "
                      "or set REMORA_STATIC_BIN" % path)
    return path, None


def load_archive(pm, tar, tag):
    """podman load of a docker-archive; the loaded image is tagged tag."""
    out = pm.out("load", "-q", "-i", tar)
    m = re.search(r"Loaded image(?:\(s\))?: *(\S+)", out)
    if not m:
        raise PodError("podman load %s: no image in %r" % (tar, out))
    pm("tag", m.group(1).split(",")[0], tag)
    return m.group(1)


def remora_image(pm, binary, workdir):
    """Puts the remora image into pm's storage as REMORA_IMAGE; returns how it was made."""
    image_dir = os.environ.get("REMORA_IMAGE_DIR")
    script = ROOT / "docker" / "build-image.sh"
    if image_dir:
        src = load_archive(pm, Path(image_dir) / "remora.tar", REMORA_IMAGE)
        return "REMORA_IMAGE_DIR=%s (remora.tar, %s)" % (image_dir, src)
    if script.is_file():
        out = Path(workdir) / "image"
        stripped = Path(workdir) / "remora-stripped"
        subprocess.run(["strip", "-o", str(stripped), str(binary)], check=True, timeout=60)
        p = subprocess.run([str(script), "--binary", str(stripped), "--out", str(out),
                            "--tag", "remora:pod-test"], capture_output=True, timeout=300,
                           stdin=subprocess.DEVNULL)
        if p.returncode != 0:
            raise PodError("docker/build-image.sh failed: %s%s" % (
                p.stdout.decode(errors="replace")[-3000:],
                p.stderr.decode(errors="replace")[-3000:]))
        src = load_archive(pm, out / "remora.tar", REMORA_IMAGE)
        return "docker/build-image.sh --binary %s, stripped (%s)" % (binary, src)
    ctx = Path(workdir) / "remora-ctx"
    ctx.mkdir()
    shutil.copy2(binary, ctx / "remora")
    c = pm.buildah("from", "scratch").stdout.decode().strip()
    pm.buildah("copy", "--chown", "%d:%d" % (APP_UID, APP_UID), c, str(ctx / "remora"), "/remora")
    pm.buildah("config", "--entrypoint", '["/remora"]', "--user", "%d:%d" % (APP_UID, APP_UID),
               c)
    pm.buildah("commit", "-q", "--rm", c, REMORA_IMAGE)
    return "buildah FROM scratch + %s as /remora (uid %d)" % (binary, APP_UID)


def app_image(pm, workdir):
    """APP_IMAGE: FROM scratch, only bin, lib, lib64, sbin -> usr/... symlinks and empty
    /usr, /app, /tmp; uid 65532; the pod mounts the host's /usr read-only over it."""
    root = Path(workdir) / "app-root"
    for d in ("usr", "app", "tmp", "etc", "proc", "sys", "dev"):
        (root / d).mkdir(parents=True)
    for name, target in (("bin", "usr/bin"), ("lib", "usr/lib"), ("lib64", "usr/lib64"),
                         ("sbin", "usr/sbin")):
        os.symlink(target, root / name)
    tar = Path(workdir) / "app-root.tar"
    subprocess.run(["tar", "-C", str(root), "-cf", str(tar), "."], check=True, timeout=60)
    c = pm.buildah("from", "scratch").stdout.decode().strip()
    pm.buildah("add", c, str(tar), "/")
    pm.buildah("config", "--user", "%d:%d" % (APP_UID, APP_UID), "--workingdir", "/app", c)
    pm.buildah("commit", "-q", "--rm", c, APP_IMAGE)
    return "buildah FROM scratch (merged-/usr symlinks; host /usr mounted read-only)"


def app_dir(workdir):
    """The directory mounted at /app: podapp.py, upstream.py and helpers.py."""
    d = Path(workdir) / "app"
    d.mkdir()
    for src in (HERE / "podapp.py", INTEG / "upstream.py", INTEG / "helpers.py"):
        shutil.copy2(src, d / src.name)
    return d


# ---- the manifest -------------------------------------------------------------------------

def example_docs():
    """(docs, source): the example manifest rendered, as a list of dicts, and where it came
    from. Raises PodError with the reason when it cannot be rendered."""
    manifest = os.environ.get("REMORA_POD_MANIFEST")
    if manifest:
        text, source = Path(manifest).read_text(), "REMORA_POD_MANIFEST=%s" % manifest
    elif (EXAMPLE / "kustomization.yaml").is_file():
        if shutil.which("kubectl") is None:
            raise PodError("k8s/example needs `kubectl kustomize` (kubectl not installed)")
        p = subprocess.run(["kubectl", "kustomize", str(EXAMPLE)], capture_output=True,
                           timeout=60, stdin=subprocess.DEVNULL)
        if p.returncode != 0:
            raise PodError("kubectl kustomize k8s/example: %s" % p.stderr.decode()[-2000:])
        text, source = p.stdout.decode(), "kubectl kustomize k8s/example"
    else:
        text, source = FALLBACK.read_text(), "tests/pod/%s (no k8s/example)" % FALLBACK.name
    return [d for d in yaml.safe_load_all(text) if d], source


_VAR_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_env(text, env):
    """remora's ${VAR} / ${VAR:-default} with env (a dict) as the environment."""
    def sub(m):
        v = env.get(m.group(1))
        if v:
            return v
        if m.group(2) is not None:
            return m.group(2)
        raise PodError("config references ${%s}, unset in the remora container" % m.group(1))
    return _VAR_RE.sub(sub, text)


def port_of(address):
    return int(str(address).rsplit(":", 1)[1])


class Probe:
    """One httpGet probe of the manifest: path, port (a number), period, timeout, failure
    threshold, initial delay."""

    def __init__(self, kind, spec, ports):
        g = spec.get("httpGet")
        if not g:
            raise PodError("%s: only httpGet probes are run here: %r" % (kind, spec))
        port = g["port"]
        self.kind = kind
        self.port = ports[port] if isinstance(port, str) else int(port)
        self.path = g.get("path", "/")
        self.period = float(spec.get("periodSeconds", 10))
        self.timeout = float(spec.get("timeoutSeconds", 1))
        self.failure_threshold = int(spec.get("failureThreshold", 3))
        self.initial_delay = float(spec.get("initialDelaySeconds", 0))

    def __repr__(self):
        return "%s GET :%d%s every %gs (timeout %gs, failureThreshold %d)" % (
            self.kind, self.port, self.path, self.period, self.timeout, self.failure_threshold)


class PodPlan:
    """The example manifest read: the workload's pod template, the remora container (native
    sidecar or not), its probes, ConfigMap volume and config, the app container and port."""

    def __init__(self, docs, source):
        self.source = source
        self.notes = []
        work = None
        for d in docs:
            kind = d.get("kind")
            spec = d.get("spec") or {}
            tmpl = spec if kind == "Pod" else (spec.get("template") or {}).get("spec")
            if tmpl and self._find_remora(tmpl):
                work = d
                break
        if work is None:
            raise PodError("no workload with a remora container in %s" % source)
        self.kind = work["kind"]
        self.name = work["metadata"]["name"]
        pod = work if self.kind == "Pod" else work["spec"]["template"]
        self.labels = dict((pod.get("metadata") or {}).get("labels") or {})
        self.spec = copy.deepcopy(pod["spec"])
        where, idx = self._find_remora(self.spec)
        self.remora = copy.deepcopy(self.spec[where][idx])
        self.native = where == "initContainers" and self.remora.get("restartPolicy") == "Always"
        apps = [c for c in self.spec.get("containers", []) if c is not self.spec[where][idx]
                and c.get("name") != self.remora["name"]]
        if not apps:
            raise PodError("no app container beside remora in %s" % source)
        self.app = copy.deepcopy(apps[0])
        if len(apps) > 1:
            self.notes.append("only the first app container (%s) kept" % self.app["name"])
        self.grace = int(self.spec.get("terminationGracePeriodSeconds", 30))
        ports = {p["name"]: p["containerPort"] for p in self.remora.get("ports", []) if "name" in p}
        self.probes = {k: Probe(k, self.remora[k], ports)
                       for k in ("startupProbe", "readinessProbe", "livenessProbe")
                       if k in self.remora}
        self.prestop = {c["name"]: (c.get("lifecycle") or {}).get("preStop")
                        for c in (self.remora, self.app)}
        # the ConfigMap volume mounted as a directory (not subPath) where remora reads its
        # config
        cfg_path = "/etc/remora/remora.yaml"
        args = list(self.remora.get("command") or []) + list(self.remora.get("args") or [])
        if "-c" in args:
            cfg_path = args[args.index("-c") + 1]
        cfg_dir, self.cfg_name = cfg_path.rsplit("/", 1)
        mount = next((m for m in self.remora.get("volumeMounts", [])
                      if m["mountPath"].rstrip("/") == cfg_dir), None)
        if mount is None:
            raise PodError("remora's config directory %s is not a volume mount" % cfg_dir)
        if mount.get("subPath"):
            raise PodError("the config is a subPath mount, which the kubelet never updates")
        self.cfg_volume = mount["name"]
        vol = next(v for v in self.spec.get("volumes", []) if v["name"] == self.cfg_volume)
        cm_name = (vol.get("configMap") or {}).get("name")
        if cm_name is None:
            raise PodError("volume %s is not a configMap: %r" % (self.cfg_volume, vol))
        cm = next((d for d in docs if d.get("kind") == "ConfigMap"
                   and d["metadata"]["name"] == cm_name), None)
        if cm is None:
            raise PodError("ConfigMap %s not in %s" % (cm_name, source))
        key = self.cfg_name
        for item in (vol["configMap"].get("items") or []):
            if item["path"] == self.cfg_name:
                key = item["key"]
        self.config_text = cm["data"][key]
        env = {e["name"]: str(e["value"]) for e in self.remora.get("env", []) if "value" in e}
        self.remora_env = env
        self.config = yaml.safe_load(expand_env(self.config_text, env))
        self.port = port_of(self.config["listeners"][0]["address"])
        self.admin_port = port_of(self.config["admin"]["address"])
        self.app_port = None
        for up in self.config.get("upstreams", []):
            for ep in up.get("endpoints", []):
                host = str(ep).rsplit(":", 1)[0]
                if host in ("127.0.0.1", "localhost", "[::1]") and self.app_port is None:
                    self.app_port = port_of(ep)
        if self.app_port is None:
            raise PodError("no upstream endpoint on the pod's loopback in the config")
        self.drain = dict(self.config.get("drain") or {})

    @staticmethod
    def _find_remora(spec):
        for where in ("initContainers", "containers"):
            for i, c in enumerate(spec.get(where) or []):
                image = str(c.get("image", "")).rsplit("/", 1)[-1]
                if c.get("name") == "remora" or image.split(":")[0].split("@")[0] == "remora":
                    return where, i
        return None

    def describe(self):
        return ("%s %s from %s: remora as a %s sidecar; probes: %s; app %s on port %d; "
                "traffic %d, admin %d; drain %r; terminationGracePeriodSeconds %d%s" % (
                    self.kind, self.name, self.source, "native" if self.native else "regular",
                    "; ".join(repr(p) for p in self.probes.values()) or "none",
                    self.app["name"], self.app_port, self.port, self.admin_port, self.drain,
                    self.grace, "".join("; " + n for n in self.notes)))

    def kube_yaml(self, name, conf_dir, app_dir_path, term_delay):
        """The Pod for `podman kube play`: remora first among the containers (no
        restartPolicy, no probes, no lifecycle: the test runs those), its ConfigMap volume a
        read-only hostPath on conf_dir; the app replaced by podapp.py (same name, resources,
        ports) under the host's python3 with /usr and /app mounted read-only."""
        spec = copy.deepcopy(self.spec)
        spec.pop("initContainers", None)
        remora = copy.deepcopy(self.remora)
        # ports: podman 4.3's kube play publishes every containerPort on the host, which
        # --network none refuses; nothing here needs them (probes' named ports are resolved)
        for k in ("restartPolicy", "startupProbe", "readinessProbe", "livenessProbe",
                  "lifecycle", "ports"):
            remora.pop(k, None)
        remora["image"] = REMORA_IMAGE
        remora["imagePullPolicy"] = "IfNotPresent"
        for m in remora.get("volumeMounts", []):
            if m["name"] == self.cfg_volume:
                m["readOnly"] = True   # the kubelet mounts every ConfigMap volume read-only
        app = {"name": self.app["name"], "image": APP_IMAGE, "imagePullPolicy": "IfNotPresent",
               "command": ["/usr/bin/python3", "/app/podapp.py"],
               "args": ["--port", str(self.app_port), "--name", self.app["name"],
                        "--term-delay", "%g" % term_delay],
               "env": [{"name": "PYTHONDONTWRITEBYTECODE", "value": "1"}],
               "securityContext": {"runAsUser": APP_UID, "runAsGroup": APP_UID,
                                   "readOnlyRootFilesystem": True,
                                   "allowPrivilegeEscalation": False,
                                   "capabilities": {"drop": ["ALL"]}},
               "volumeMounts": [{"name": "host-usr", "mountPath": "/usr", "readOnly": True},
                                {"name": "podapp", "mountPath": "/app", "readOnly": True}]}
        if "resources" in self.app:
            app["resources"] = copy.deepcopy(self.app["resources"])
        spec["containers"] = [remora, app]
        vols = []
        for v in spec.get("volumes", []):
            if v["name"] == self.cfg_volume:
                vols.append({"name": v["name"],
                             "hostPath": {"path": str(conf_dir), "type": "Directory"}})
            elif any(m["name"] == v["name"] for m in remora.get("volumeMounts", [])):
                vols.append(v)
        vols.append({"name": "host-usr", "hostPath": {"path": "/usr", "type": "Directory"}})
        vols.append({"name": "podapp", "hostPath": {"path": str(app_dir_path),
                                                    "type": "Directory"}})
        spec["volumes"] = vols
        pod = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": name, "labels": self.labels}, "spec": spec}
        return yaml.safe_dump(pod, sort_keys=False)


# ---- the pod's network namespace ------------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)


class NetNS:
    """The network namespace of a process (the pod's infra container), held open by an fd so
    it outlives that process. enter() moves the calling thread into it (setns(2) acts per
    thread); run(fn) calls fn in a new thread inside it; conn() opens an HttpConn there."""

    def __init__(self, pid):
        self.fd = os.open("/proc/%d/ns/net" % pid, os.O_RDONLY)

    def enter(self):
        if _libc.setns(self.fd, CLONE_NEWNET) != 0:
            e = ctypes.get_errno()
            raise OSError(e, "setns: %s" % os.strerror(e))

    def run(self, fn, *a, timeout=30.0, **kw):
        box = {}

        def body():
            try:
                self.enter()
                box["v"] = fn(*a, **kw)
            except BaseException as e:  # noqa: BLE001 - re-raised in the caller
                box["e"] = e

        t = threading.Thread(target=body, daemon=True)
        t.start()
        t.join(timeout)
        if t.is_alive():
            raise PodError("%r still running in the netns after %.0f s" % (fn, timeout))
        if "e" in box:
            raise box["e"]
        return box["v"]

    def conn(self, port, timeout=5.0):
        """An HttpConn to 127.0.0.1:port inside the namespace (reads time out after timeout)."""
        return self.run(lambda: HttpConn(port, timeout=timeout))

    def get(self, port, path, timeout=5.0, headers=None):
        """One GET on a fresh connection inside the pod: the helpers.Response."""
        def go():
            with HttpConn(port, timeout=timeout) as c:
                c.request("GET", path, headers=headers)
                return c.read_response()
        return self.run(go, timeout=timeout + 5)

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def probe_once(probe):
    """One httpGet of probe from the calling thread's netns, as the kubelet does it: (status
    or error string, success: 200..399 within the probe's timeout)."""
    try:
        with HttpConn(probe.port, timeout=probe.timeout) as c:
            c.request("GET", probe.path, headers=[("User-Agent", "kube-probe/1.32")])
            r = c.read_response()
        return r.status, 200 <= r.status < 400
    except (OSError, ValueError, Truncated) as e:
        return repr(e), False


class Prober:
    """An HTTP probe loop in the pod's netns, as the kubelet runs one: GET port path every
    period (first one at first_at, a time.monotonic() value), success 200..399 within the
    probe's timeout. .results: [(monotonic time, status or error string, ok)]."""

    def __init__(self, netns, probe, first_at, period=None):
        self.netns, self.probe = netns, probe
        self.period = period or probe.period
        self.first_at = first_at
        self.results = []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def once(self):
        return probe_once(self.probe)

    def _run(self):
        self.netns.enter()
        at = self.first_at
        while not self._stop.is_set():
            wait = at - time.monotonic()
            if wait > 0 and self._stop.wait(wait):
                return
            t = time.monotonic()
            status, ok = self.once()
            self.results.append((t, status, ok))
            at += self.period

    def stop(self):
        self._stop.set()
        self._t.join(10)

    def counts(self):
        ok = sum(1 for r in self.results if r[2])
        return ok, len(self.results) - ok

    def failures(self):
        return [(round(t - self.first_at, 3), s) for t, s, ok in self.results if not ok]


class LoadLoop:
    """threads threads inside the pod's netns, each sending GET path to port one request at a
    time (keep-alive, a new connection when remora closed one; close=True: one request per
    connection) until stop() or max_seconds. Every request sent is counted by outcome:
    ok (200, complete body), bad (other statuses / incomplete), lost (sent, no whole response:
    reset, EOF, timeout), refused (connect refused: nothing sent)."""

    live = set()   # every LoadLoop not stopped yet (the fixtures stop them at teardown)

    def __init__(self, netns, port, paths, threads=4, close=False, max_seconds=60.0,
                 timeout=10.0):
        LoadLoop.live.add(self)
        self.netns, self.port = netns, port
        self.paths = list(paths) if isinstance(paths, (list, tuple)) else [paths]
        self.close, self.timeout, self.max_seconds = close, timeout, max_seconds
        self.ok = 0
        self.bad = []
        self.lost = []
        self.refused = 0
        self.by_path = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ts = [threading.Thread(target=self._run, args=(i,), daemon=True)
                    for i in range(threads)]
        for t in self._ts:
            t.start()

    def _count(self, what, item=None, path=None):
        with self._lock:
            if what == "ok":
                self.ok += 1
                self.by_path[path] = self.by_path.get(path, 0) + 1
            elif what == "refused":
                self.refused += 1
            else:
                getattr(self, what).append(item)

    def _run(self, idx):
        self.netns.enter()
        end = time.monotonic() + self.max_seconds
        conn = None
        n = 0
        while not self._stop.is_set() and time.monotonic() < end:
            path = self.paths[(idx + n) % len(self.paths)]
            n += 1
            if conn is None:
                try:
                    conn = HttpConn(self.port, timeout=self.timeout)
                except ConnectionRefusedError:
                    self._count("refused")
                    time.sleep(0.05)
                    continue
                except OSError as e:
                    self._count("lost", "connect: %r" % e)
                    continue
            try:
                hs = [("Connection", "close")] if self.close else None
                conn.request("GET", path, headers=hs)
                r = conn.read_response()
            except (OSError, ValueError, Truncated) as e:
                self._count("lost", "%s: %r" % (path, e))
                conn.close()
                conn = None
                continue
            if r.status == 200 and r.complete:
                self._count("ok", path=path)
            else:
                self._count("bad", "%s: %s complete=%s" % (path, r.status, r.complete))
            if (self.close or conn.eof or r.eof_after or not r.complete
                    or "close" in (r.header("connection") or "").lower()):
                conn.close()
                conn = None
        if conn is not None:
            conn.close()

    def stop(self):
        self._stop.set()
        LoadLoop.live.discard(self)
        for t in self._ts:
            t.join(self.timeout + 5)
        assert not any(t.is_alive() for t in self._ts), "load threads did not stop"

    def summary(self):
        return ("%d ok, %d non-200/incomplete, %d lost, %d refused connects; by path %r"
                % (self.ok, len(self.bad), len(self.lost), self.refused, self.by_path))


class InFlight:
    """One GET on its own connection inside the pod's netns, sent at once, answered in a
    thread; .result is the helpers.Response or the exception, .sent_at / .done_at monotonic."""

    def __init__(self, netns, port, path, timeout=30.0):
        self.path = path
        self.result = None
        self.c = netns.conn(port, timeout=timeout)
        self.c.request("GET", path)
        self.sent_at = time.monotonic()
        self.done_at = None
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        try:
            self.result = self.c.read_response()
        except Exception as e:  # noqa: BLE001 - reported by join()
            self.result = e
        finally:
            self.done_at = time.monotonic()
            self.c.close()

    def join(self, timeout=30.0):
        self._t.join(timeout)
        return self.result


def wait_listening(netns, port, timeout=10.0):
    """Waits until a TCP connect to 127.0.0.1:port inside the pod succeeds."""
    def probe():
        def go():
            s = socket.socket()
            s.settimeout(0.5)
            try:
                s.connect(("127.0.0.1", port))
                return True
            except OSError:
                return False
            finally:
                s.close()
        return netns.run(go)
    return wait_for(probe, timeout, 0.05)


# ---- one pod ------------------------------------------------------------------------------

def parse_time(s):
    """podman's '2026-12-02 17:20:39.416404649 +0000 UTC' or RFC 3339 -> epoch seconds."""
    m = re.match(r"(\d{4}-\d\d-\d\d)[ T](\d\d:\d\d:\d\d)(?:\.(\d+))?", s)
    if not m:
        raise PodError("unparsable time %r" % s)
    base = datetime.strptime(m.group(1) + " " + m.group(2), "%Y-%m-%d %H:%M:%S")
    frac = float("0." + m.group(3)) if m.group(3) else 0.0
    from calendar import timegm
    return timegm(base.timetuple()) + frac


class Pod:
    """One pod played from plan with `podman kube play --network none --start=false` (the
    infra container's netns is the pod's, loopback only; the test reaches it with setns)."""

    def __init__(self, pm, plan, workdir, conf_dir, app_dir_path, term_delay, seq=0):
        self.pm, self.plan = pm, plan
        self.name = "remora-pod-%d-%d" % (os.getpid(), seq)
        self.yaml_path = Path(workdir) / ("%s.yaml" % self.name)
        self.yaml_path.write_text(plan.kube_yaml(self.name, conf_dir, app_dir_path, term_delay))
        self.remora_ctr = "%s-%s" % (self.name, plan.remora["name"])
        self.app_ctr = "%s-%s" % (self.name, plan.app["name"])
        self.netns = None
        self.id = None
        self.started_wall = {}
        self.probers = []

    def play(self):
        p = self.pm("kube", "play", "--network", "none", "--start=false", self.yaml_path,
                    check=False)
        q = self.pm("pod", "inspect", self.name, "--format", "{{.ID}}", check=False)
        if q.returncode == 0:
            self.id = q.stdout.decode().strip()
            self.pm.pods.append(self.id)
        if p.returncode != 0:
            raise PodError("podman kube play %s: exit %d\n%s" % (
                self.yaml_path, p.returncode, p.stderr.decode(errors="replace")[-3000:]))
        return p.stdout.decode()

    def _open_netns(self):
        if self.netns is None:
            infra = self.pm.out("pod", "inspect", self.id, "--format", "{{.InfraContainerID}}")
            pid = int(self.pm.out("inspect", "--format", "{{.State.Pid}}", infra))
            self.netns = NetNS(pid)

    def start(self, ctr):
        """podman start of one container (the infra one comes up first with it); returns the
        container's StartedAt as a time.monotonic() value."""
        self.pm("start", ctr)
        started = parse_time(self.pm.inspect(ctr)["State"]["StartedAt"])
        self.started_wall[ctr] = started
        self._open_netns()
        return time.monotonic() - (time.time() - started)

    def start_all(self):
        """podman pod start: every container at once (a regular sidecar's start); returns
        remora's StartedAt as a time.monotonic() value."""
        self.pm("pod", "start", self.id)
        self._open_netns()
        now_m, now_w = time.monotonic(), time.time()
        for c in (self.remora_ctr, self.app_ctr):
            self.started_wall[c] = parse_time(self.pm.inspect(c)["State"]["StartedAt"])
        return now_m - (now_w - self.started_wall[self.remora_ctr])

    def state(self, ctr):
        return self.pm.inspect(ctr)["State"]

    def logs(self, ctr):
        p = self.pm("logs", ctr, check=False)
        return (p.stdout + p.stderr).decode(errors="replace")

    def stop(self, *ctrs, timeout=None):
        """podman stop -t grace: SIGTERM, SIGKILL after the grace period."""
        t = self.plan.grace if timeout is None else timeout
        self.pm("stop", "-t", t, *ctrs, timeout=t + 60)

    def stop_pod(self, timeout=None):
        """podman pod stop -t grace: every container gets SIGTERM at once."""
        t = self.plan.grace if timeout is None else timeout
        self.pm("pod", "stop", "-t", t, self.id, timeout=t + 60)

    def prestop(self, which):
        """Runs the manifest's preStop hook of "remora" or "app" the kubelet's way, before that
        container's SIGTERM: `sleep` waits (the action, Kubernetes >= 1.30), `exec` runs in the
        container (podman exec; remora's only: the app is replaced), `httpGet` asks inside the
        pod. Returns what it did (None: no hook)."""
        c = self.plan.remora if which == "remora" else self.plan.app
        hook = self.plan.prestop.get(c["name"])
        if not hook:
            return None
        if "sleep" in hook:
            secs = float(hook["sleep"]["seconds"])
            time.sleep(secs)
            return "preStop sleep %gs" % secs
        if "exec" in hook and which == "remora":
            ctr = self.remora_ctr
            p = self.pm("exec", ctr, *hook["exec"]["command"], check=False, timeout=60)
            return "preStop exec %r: exit %d %s" % (hook["exec"]["command"], p.returncode,
                                                    p.stdout.decode(errors="replace").strip())
        if "httpGet" in hook:
            g = hook["httpGet"]
            port = g["port"]
            if isinstance(port, str):
                port = {q["name"]: q["containerPort"] for q in c.get("ports", [])}[port]
            r = self.netns.get(int(port), g.get("path", "/"))
            return "preStop GET :%s%s: %s" % (port, g.get("path", "/"), r.status)
        return "preStop %r not run (the app is replaced)" % (hook,)

    def exit_code(self, ctr):
        st = self.state(ctr)
        return st["ExitCode"] if st["Status"] in ("exited", "stopped") else None

    def close(self):
        for p in self.probers:
            p.stop()
        if self.netns is not None:
            self.netns.close()


def remora_log_lines(text):
    out = []
    for line in text.splitlines():
        i = line.find("{")
        if i < 0:
            continue
        try:
            obj = json.loads(line[i:])
        except ValueError:
            continue
        if isinstance(obj, dict):
            out.append(obj)
    return out
