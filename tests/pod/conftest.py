# SPDX-License-Identifier: Apache-2.0
"""Fixtures of the pod tests (tests/pod/README.md): `podenv` (session: the tools checked,
podman's storage in a temp dir of its own, the remora and app images built once, the example
manifest read; everything removed at the end of the session) and `make_pod` (a pod per call,
removed by id at the end of the test, its containers' logs kept in tmp_path and printed when
the test failed)."""

import importlib.util
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from podutil import (INTEG, LoadLoop, Pod, PodError, PodPlan, Podman, Prober,  # noqa: E402
                     app_dir, app_image, example_docs, probe_once, remora_image,
                     parse_time, remora_log_lines, static_binary, wait_listening)

sys.path.insert(0, str(INTEG))
from reloadutil import ConfDir  # noqa: E402

CATATONIT = "/usr/libexec/podman/catatonit"
# kubelet-style readiness and liveness probes run at most this far apart here (the
# manifest's periods are 5 s and more; a test lasts a few seconds)
PROBE_PERIOD_CAP = 1.0


def _missing():
    """The reason the pod tests cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root (podman with a temp storage root, setns(2) into the pod's netns)"
    for tool, pkg in (("podman", "podman"), ("buildah", "buildah"), ("runc", "runc"),
                      ("conmon", "conmon"), ("tar", "tar")):
        if shutil.which(tool) is None:
            return "%s not installed (apt-get install %s)" % (tool, pkg)
    if not os.path.exists(CATATONIT):
        return ("%s missing: podman builds its pod infra (pause) image from it "
                "(apt-get install catatonit)" % CATATONIT)
    if importlib.util.find_spec("yaml") is None:
        return "python3-yaml not installed (apt-get install python3-yaml)"
    return None


class PodEnv:
    def __init__(self, pm, plan, binary, how_remora, how_app, workdir):
        self.pm, self.plan, self.binary = pm, plan, binary
        self.how_remora, self.how_app = how_remora, how_app
        self.workdir = workdir
        self.seq = 0


@pytest.fixture(scope="session")
def podenv():
    reason = _missing()
    if reason:
        pytest.skip(reason)
    binary, reason = static_binary()
    if reason:
        pytest.skip(reason)
    try:
        docs, source = example_docs()
        plan = PodPlan(docs, source)
    except PodError as e:
        pytest.skip("the example manifest: %s" % e)
    base = Path(tempfile.mkdtemp(prefix="remora-pod-", dir="/var/tmp"))
    pm = Podman(base / "podman")
    workdir = base / "work"
    workdir.mkdir()
    t0 = time.monotonic()
    try:
        how_remora = remora_image(pm, binary, workdir)
        how_app = app_image(pm, workdir)
        env = PodEnv(pm, plan, binary, how_remora, how_app, workdir)
        print("\n---- pod environment (%.1f s to build) ----\n%s\nremora image: %s\napp image: %s"
              % (time.monotonic() - t0, plan.describe(), how_remora, how_app))
        yield env
    finally:
        problems = pm.cleanup()
        shutil.rmtree(base, ignore_errors=True)
        if problems or base.exists():
            print("pod cleanup problems: %r (left: %s)" % (problems, base.exists()))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


class PodHandle:
    """What make_pod returns: the Pod, its ConfDir, plan, probers and the kubelet-like
    start sequences."""

    def __init__(self, env, pod, conf):
        self.env, self.pod, self.conf, self.plan = env, pod, conf, env.plan
        self.netns = None
        self.startup = None          # the kubelet-style startup prober
        self.ready_after = None      # seconds from remora's StartedAt to the test's first
        #                              /readyz 200 (an upper bound: polling starts late)
        self.ready_logged = None     # seconds from remora's StartedAt to its own "ready in"
        #                              log line (/readyz answering 200)
        self.started_at = None       # remora's StartedAt (time.monotonic())
        self.readiness = None
        self.liveness = None

    def _fast_ready(self, started_at, timeout=10.0):
        """Polls the startup probe's endpoint every 10 ms; seconds from started_at to the first
        200..399."""
        probe = self.plan.probes["startupProbe"]

        def go():
            end = time.monotonic() + timeout
            while time.monotonic() < end:
                _, ok = probe_once(probe)
                if ok:
                    return time.monotonic() - started_at
                time.sleep(0.01)
            return None
        return self.netns.run(go, timeout=timeout + 5)

    def _after_start(self, started_at):
        self.started_at = started_at
        self.netns = self.pod.netns
        sp = self.plan.probes["startupProbe"]
        # the kubelet's first probe falls within the first period after the start: probed
        # at its end, the latest, it must pass (failureThreshold is not needed)
        self.startup = Prober(self.netns, sp, started_at + sp.initial_delay + sp.period)
        self.pod.probers.append(self.startup)
        self.ready_after = self._fast_ready(started_at)
        assert self.ready_after is not None, "remora's /readyz never answered; log:\n%s" % \
            self.pod.logs(self.pod.remora_ctr)
        ready = [l for l in remora_log_lines(self.pod.logs(self.pod.remora_ctr))
                 if str(l.get("msg", "")).startswith("ready in ")]
        assert ready, "no `ready in` line in remora's log"
        self.ready_logged = (parse_time(ready[0]["ts"])
                             - self.pod.started_wall[self.pod.remora_ctr])
        end = time.monotonic() + sp.period * sp.failure_threshold + 2
        while not self.startup.results and time.monotonic() < end:
            time.sleep(0.02)
        assert self.startup.results, "the startup probe never ran"
        self.startup.stop()

    def _probers(self):
        now = time.monotonic()
        for kind in ("readinessProbe", "livenessProbe"):
            p = self.plan.probes.get(kind)
            if p is None:
                continue
            pr = Prober(self.netns, p, now, period=min(p.period, PROBE_PERIOD_CAP))
            self.pod.probers.append(pr)
            setattr(self, kind[:-5], pr)

    def start_native(self):
        """The kubelet's order for a native sidecar: remora, its startup probe passing, then
        the app; then readiness and liveness probes."""
        started = self.pod.start(self.pod.remora_ctr)
        self._after_start(started)
        assert self.startup.results[0][2], "first startup probe failed: %r" % \
            (self.startup.results[:3],)
        self.pod.start(self.pod.app_ctr)
        assert wait_listening(self.netns, self.plan.app_port), \
            "the app never listened; log:\n%s" % self.pod.logs(self.pod.app_ctr)
        self._probers()

    def start_together(self):
        """A regular sidecar's start: every container at once (podman pod start)."""
        started = self.pod.start_all()
        self._after_start(started)
        assert self.startup.results[0][2], "first startup probe failed: %r" % \
            (self.startup.results[:3],)
        assert wait_listening(self.netns, self.plan.app_port), \
            "the app never listened; log:\n%s" % self.pod.logs(self.pod.app_ctr)
        self._probers()

    def stop_probers(self):
        for p in (self.readiness, self.liveness):
            if p is not None:
                p.stop()

    def probe_summary(self):
        s = ["startup: first probe %s at +%.2f s (remora logged ready %.0f ms after its "
             "StartedAt, the test saw /readyz 200 at +%.0f ms)" % (
                 self.startup.results[0][1], self.startup.results[0][0] - self.started_at,
                 self.ready_logged * 1000, self.ready_after * 1000)]
        for name in ("readiness", "liveness"):
            p = getattr(self, name)
            if p is not None:
                ok, bad = p.counts()
                s.append("%s: %d ok, %d failed %r" % (name, ok, bad, p.failures()[:5]))
        return "; ".join(s)


@pytest.fixture
def make_pod(podenv, tmp_path, request):
    """make_pod(config=None, term_delay=0.0) -> PodHandle: a pod played (not started) with
    the ConfigMap holding config (a dict or YAML text; default the example's own text) in the
    kubelet's layout, and the app draining term_delay seconds after SIGTERM."""
    made = []

    def make(config=None, term_delay=0.0):
        podenv.seq += 1
        root = tmp_path / ("pod%d" % podenv.seq)
        root.mkdir()
        conf = ConfDir(root, config if config is not None else podenv.plan.config_text,
                       layout="configmap")
        adir = app_dir(root)
        pod = Pod(podenv.pm, podenv.plan, root, conf.dir, adir, term_delay, seq=podenv.seq)
        made.append(pod)
        pod.play()
        return PodHandle(podenv, pod, conf)

    yield make
    for load in list(LoadLoop.live):
        load.stop()
    failed = getattr(request.node, "rep_call", None) is None or request.node.rep_call.failed
    for pod in made:
        pod.close()
        for ctr in (pod.remora_ctr, pod.app_ctr) if pod.id else ():
            text = pod.logs(ctr)
            (tmp_path / ("%s.log" % ctr)).write_text(text)
            if failed:
                lines = [l for l in text.splitlines() if '"msg":"access"' not in l]
                print("---- %s (last lines, access lines left out) ----\n%s"
                      % (ctr, "\n".join(lines[-40:])))
        if pod.id is None:
            continue
        p = podenv.pm("pod", "rm", "-f", "-t", "0", pod.id, check=False, timeout=60)
        if p.returncode == 0 and pod.id in podenv.pm.pods:
            podenv.pm.pods.remove(pod.id)
