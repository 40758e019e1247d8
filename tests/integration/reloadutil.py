# SPDX-License-Identifier: Apache-2.0
"""reloadutil: helpers of the live config reload tests (test_75_reload.py,
test_76_reload_load.py).

- `ConfDir`: remora's config file in a directory of its own (remora watches the directory, so
  nothing else is written there), rewritten the ways people and orchestrators do it: in place
  (`cat > file`, also slowly in pieces), an editor's temp file + rename, vim's backup dance, and
  the kubelet's ConfigMap update (a new timestamped directory, a `..data_tmp` symlink to it,
  rename(`..data_tmp`, `..data`), the old directory removed).
- config builders (`upstream_cfg`, `route_cfg`, `reload_config`) on free loopback ports.
- the reload observables: `state()` (reload counters, generation, config_info hash and the last
  success timestamp from /metrics), `wait_state()`, `events()` (the `config reloaded` / `config
  reload ... failed` log lines), `config_doc()` (admin GET /config).
- `sighup()`, `connect_refused()`, `listen_inodes()` (the kernel's LISTEN sockets on a port,
  from /proc/net/tcp), `InFlight` (one request in a thread), `ConnectLoop` (new connections,
  one request each, in a thread, recording every failure), `get()`.

Nothing here starts a process: the conftest `remora` factory starts remora with
`config_file=ConfDir.path` and stops it by PID."""

import copy
import json
import os
import re
import shutil
import signal
import socket
import threading
import time

from helpers import (HttpConn, Truncated, default_config, free_port, http, metrics, to_yaml,
                     wait_for)

# Long enough for remora to have acted on a file-watch trigger (~100 ms debounce) that it
# should ignore: a "nothing happened" check can only wait. Used only where the test then
# asserts that nothing was counted.
SETTLE = 0.6

RELOADED_RE = re.compile(r"config reloaded \((SIGHUP|file change)\): generation (\d+), "
                         r"hash ([0-9a-f]+)")
FAILED_RE = re.compile(r"config reload \((SIGHUP|file change)\) failed; keeping generation "
                       r"(\d+)")


# ---- config ---------------------------------------------------------------------------------

def render(cfg):
    """The YAML text of a config dict (str passes through)."""
    return cfg if isinstance(cfg, str) else to_yaml(cfg) + "\n"


def upstream_cfg(name, target, **opts):
    """An upstreams[] entry named name for a test app (its .addr) or a list of endpoints.
    idle_timeout is 10 s so that no pooled upconn times out during a test."""
    endpoints = [target.addr] if hasattr(target, "addr") else list(target)
    d = {"name": name, "endpoints": endpoints, "connect_timeout": "1s", "idle_timeout": "10s",
         "max_connections": 256}
    d.update(opts)
    return d


def route_cfg(name, upstream, host=None, prefix=None, **opts):
    """A routes[] entry: match on host and/or path_prefix (neither: every request)."""
    match = {}
    if host:
        match["host"] = host
    if prefix:
        match["path_prefix"] = prefix
    d = {"name": name, "match": match, "upstream": upstream, "timeout": "15s"}
    d.update(opts)
    return d


def reload_config(upstreams, routes, workers=1, listeners=None, **kw):
    """helpers.default_config on free ports with these upstreams and routes; listeners
    [(name, port)] replaces the one default listener. Returns a new dict."""
    port = free_port()
    admin_port = free_port()
    while admin_port == port:
        admin_port = free_port()
    cfg = default_config(port, admin_port, [], workers=workers, upstreams=list(upstreams),
                         routes=list(routes), **kw)
    if listeners is not None:
        cfg["listeners"] = [{"name": n, "address": "127.0.0.1:%d" % p} for n, p in listeners]
    return cfg


def derive(cfg, **changes):
    """A deep copy of cfg with top-level keys replaced."""
    out = copy.deepcopy(cfg)
    out.update(copy.deepcopy(changes))
    return out


# ---- the config directory -------------------------------------------------------------------

def kubelet_project(root, seq, old_ts, files):
    """A ConfigMap or Secret update the way the kubelet's AtomicWriter does it: the files
    ({name: bytes}) in a new timestamped directory under root, ..data_tmp symlinked to it and
    renamed over ..data, then the previous timestamped directory (old_ts) removed. Returns
    (seq + 1, the new directory's name)."""
    seq += 1
    ts = "..2026_12_02_10_00_%02d.%09d" % ((seq - 1) % 60, seq)
    d = root / ts
    d.mkdir()
    for name, data in files.items():
        with open(d / name, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    tmp = root / "..data_tmp"
    os.symlink(ts, tmp)
    os.rename(tmp, root / "..data")
    if old_ts is not None:
        shutil.rmtree(root / old_ts)
    return seq, ts


class ConfDir:
    """remora's config file in a directory of its own, DIR = root/"conf".

    layout "plain": DIR/remora.yaml is a regular file. layout "configmap": the kubelet's
    projection of a ConfigMap volume: DIR/..2026_12_02_10_00_00.000000001/remora.yaml,
    DIR/..data -> ..2026_12_02_10_00_00.000000001, DIR/remora.yaml -> ..data/remora.yaml.
    .path is what remora gets with -c (the same path whatever the layout). .text is the last
    text written (valid or not)."""

    NAME = "remora.yaml"

    def __init__(self, root, cfg, layout="plain"):
        self.dir = root / "conf"
        self.dir.mkdir()
        self.path = self.dir / self.NAME
        self.layout = None
        self.seq = 0
        self.ts_dir = None
        self.text = render(cfg)
        if layout == "plain":
            self.path.write_text(self.text)
            self.layout = "plain"
        else:
            self._project(self.text)
            self._link_file()

    # -- plain files --

    def write_inplace(self, cfg, pieces=1, gap=0.0):
        """Rewrites the file in place, as `cat > file` does: open with O_TRUNC, write, close;
        the inode stays. pieces > 1 writes the text in that many parts, gap seconds apart (a
        slow writer). In the configmap layout this writes the projected file in the
        timestamped directory, which is not in DIR."""
        self.text = render(cfg)
        data = self.text.encode()
        with open(self.path, "wb", buffering=0) as f:
            step = -(-len(data) // pieces)
            for i in range(0, len(data), step):
                if i and gap:
                    time.sleep(gap)
                f.write(data[i:i + step])

    def write_rename(self, cfg, tmp_name=".remora.yaml.tmp"):
        """An editor's (or an atomic writer's) save: the whole text into a new file in DIR,
        fsync, rename over remora.yaml. Replaces the symlink of the configmap layout (the
        layout is plain afterwards)."""
        self.text = render(cfg)
        tmp = self.dir / tmp_name
        with open(tmp, "w") as f:
            f.write(self.text)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, self.path)
        self.layout = "plain"

    def write_vim(self, cfg):
        """vim's save with its default backupcopy=auto on Linux: probe that DIR is writable
        with a file "4913" (created, removed), rename remora.yaml to remora.yaml~, write a new
        remora.yaml, fsync, remove the backup. remora.yaml is missing for a moment."""
        assert self.layout == "plain"
        self.text = render(cfg)
        probe = self.dir / "4913"
        probe.touch()
        probe.unlink()
        backup = self.dir / (self.NAME + "~")
        os.rename(self.path, backup)
        with open(self.path, "w") as f:
            f.write(self.text)
            f.flush()
            os.fsync(f.fileno())
        backup.unlink()

    # -- the kubelet's ConfigMap projection --

    def _project(self, text):
        """A new timestamped directory holding the file, then ..data pointed at it the way
        the kubelet's AtomicWriter does (symlink ..data_tmp, rename it over ..data), then the
        previous timestamped directory removed."""
        self.seq, self.ts_dir = kubelet_project(self.dir, self.seq, self.ts_dir,
                                                {self.NAME: text.encode()})

    def _link_file(self):
        """remora.yaml -> ..data/remora.yaml (the kubelet creates it once; here it may replace
        a plain file, atomically through a rename)."""
        tmp = self.dir / (self.NAME + ".lnk")
        os.symlink("..data/" + self.NAME, tmp)
        os.rename(tmp, self.path)
        self.layout = "configmap"

    def swap(self, cfg):
        """The kubelet's update of a ConfigMap volume (configmap layout only)."""
        assert self.layout == "configmap", "swap() needs the configmap layout"
        self.text = render(cfg)
        self._project(self.text)

    def to_configmap(self, cfg):
        """From the plain layout to the configmap one holding cfg: a projection, then
        remora.yaml replaced by the symlink (two renames in DIR)."""
        self.text = render(cfg)
        self._project(self.text)
        self._link_file()

    def to_plain(self, cfg):
        """From the configmap layout to a plain file holding cfg (a rename over the symlink)."""
        self.write_rename(cfg)


# ---- observables ----------------------------------------------------------------------------

def state_at(admin_port):
    """The reload state on that admin port from one scrape: {"success", "failure",
    "generation", "hash" (of remora_config_info; None unless exactly one series), "ts" (last
    success timestamp)}; None when the admin port does not answer."""
    try:
        m = metrics(admin_port)
    except (OSError, ValueError, Truncated, AssertionError):
        return None
    infos = m.series("remora_config_info")
    return {
        "success": m.value("remora_config_reloads_total", result="success"),
        "failure": m.value("remora_config_reloads_total", result="failure"),
        "generation": m.value("remora_config_generation"),
        "hash": infos[0][0].get("hash") if len(infos) == 1 else None,
        "ts": m.value("remora_config_last_reload_success_timestamp_seconds"),
    }


def state(p):
    return state_at(p.admin_port)


def wait_state(p, timeout=3.0, admin_port=None, **want):
    """Waits until every key of want has that value in state(); returns the state. Fails
    with the last state and the tail of remora's log otherwise."""
    port = admin_port or p.admin_port
    last = [None]

    def ok():
        if p.proc.poll() is not None:
            raise AssertionError("remora exited (status %s) while a reload state %r was awaited;"
                                 " log:\n%s" % (p.proc.returncode, want, log_tail(p)))
        last[0] = state_at(port)
        return last[0] is not None and all(last[0].get(k) == v for k, v in want.items())

    if not wait_for(ok, timeout, 0.02):
        raise AssertionError("reload state never reached %r within %.1f s; last %r; log:\n%s"
                             % (want, timeout, last[0], log_tail(p)))
    return last[0]


def log_tail(p, n=40):
    lines = [l for l in p.stderr().splitlines() if '"msg":"access"' not in l]
    return "\n".join(lines[-n:])


def events(p):
    """The reload log lines in order: ("reloaded", trigger, generation, hash) and ("failed",
    trigger, kept generation, None); trigger is "SIGHUP" or "file change"."""
    out = []
    for e in p.log_lines():
        msg = str(e.get("msg", ""))
        m = RELOADED_RE.search(msg)
        if m:
            out.append(("reloaded", m.group(1), int(m.group(2)), m.group(3)))
            continue
        m = FAILED_RE.search(msg)
        if m:
            out.append(("failed", m.group(1), int(m.group(2)), None))
    return out


def config_doc(admin_port):
    r = http(admin_port, "GET", "/config")
    assert r.status == 200, r
    return json.loads(r.body)


def sighup(p):
    os.kill(p.pid, signal.SIGHUP)


# ---- sockets --------------------------------------------------------------------------------

def get(port, path="/echo", host="127.0.0.1", timeout=5.0):
    """One GET on a fresh connection; the Response."""
    return http(port, "GET", path, host=host, timeout=timeout)


def connect_refused(port):
    """True if a TCP connect to 127.0.0.1:port is refused; False if it is accepted."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(1.0)
    try:
        s.connect(("127.0.0.1", port))
        return False
    except ConnectionRefusedError:
        return True
    finally:
        s.close()


def listen_inodes(port):
    """Sorted inodes of the IPv4 TCP sockets in LISTEN on 127.0.0.1:port (/proc/net/tcp):
    the same list before and after means the same sockets."""
    want = "0100007F:%04X" % port
    out = []
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            cols = line.split()
            if cols[1] == want and cols[3] == "0A":
                out.append(int(cols[9]))
    return sorted(out)


class InFlight:
    """One GET on its own connection in a thread (sent at once); .result is the Response or
    the exception."""

    def __init__(self, port, path, host="127.0.0.1", timeout=20.0):
        self.result = None
        self.c = HttpConn(port, timeout=timeout)
        self.c.request("GET", path, host=host)
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        try:
            self.result = self.c.read_response()
        except Exception as e:  # noqa: BLE001 - reported by join()
            self.result = e
        finally:
            self.c.close()

    def join(self, timeout=20.0):
        self._t.join(timeout)
        assert not self._t.is_alive(), "request still running after %.0f s" % timeout
        assert not isinstance(self.result, Exception), repr(self.result)
        return self.result


class ConnectLoop:
    """New connections to port, one at a time, each with one GET path (Host host) and then
    closed, in a thread, until stop() (or at most max_conns / max_seconds). .ok counts 200s;
    .failures lists everything else (refused connects, resets, other statuses)."""

    def __init__(self, port, path="/echo", host="127.0.0.1", max_conns=20000, max_seconds=20.0):
        self.port, self.path, self.host = port, path, host
        self.max_conns, self.max_seconds = max_conns, max_seconds
        self.ok = 0
        self.failures = []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        end = time.monotonic() + self.max_seconds
        n = 0
        while not self._stop.is_set() and n < self.max_conns and time.monotonic() < end:
            n += 1
            try:
                r = http(self.port, "GET", self.path, host=self.host, timeout=3.0)
                if r.status == 200 and r.complete:
                    self.ok += 1
                else:
                    self.failures.append("status %s complete %s" % (r.status, r.complete))
            except (OSError, ValueError, Truncated) as e:
                self.failures.append(repr(e))

    def wait_ok(self, n, timeout=5.0):
        """Waits until at least n requests succeeded in total."""
        return wait_for(lambda: self.ok >= n or not self._t.is_alive(), timeout) and self.ok >= n

    def stop(self):
        self._stop.set()
        self._t.join(10)
        assert not self._t.is_alive(), "connect loop did not stop"
