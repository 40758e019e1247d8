# SPDX-License-Identifier: Apache-2.0
"""A real pod, run here: remora and the app in two containers sharing one network namespace,
played by `podman kube play` from the example manifest (tests/pod/README.md says what is
rewritten and why), with the ConfigMap mounted read-only as a directory in the kubelet's
`..data` layout and the probes run the kubelet's way by the test.

- traffic on the sidecar port reaches the app, and the startup probe passes on its first
  period;
- ConfigMap updates (`..data` swaps: a route added, then removed) are picked up live while
  load runs: no failed request, the new route answers;
- SIGTERM in the native sidecar's order (the app first, remora once the app has exited) and
  in the regular sidecar's (every container at once, `podman pod stop`) with requests in
  flight: every one completes 200, both containers exit 0.

Why `kube play` with a rewritten manifest: Debian 12's podman 4.3 has no native sidecars (it
runs every init container to completion before the app, so remora there hangs the play and
the app never starts); remora is played as a regular container and the test starts and stops
the containers itself in the kubelet's order. Its ConfigMap volumes are plain copies written
once, so the config directory is a read-only hostPath in the kubelet's own `..data` layout.

Requests and probes come from threads of the test that entered the pod's netns (setns(2)):
the pod has no network but its loopback (`--network none`), as a pod's containers see it.
Counts are printed with -s."""

import re
import socket
import threading
import time

from helpers import metrics, to_yaml
from podutil import InFlight, LoadLoop, parse_time, remora_log_lines

import yaml

DELAY_MS = 1500          # an in-flight request: upstream.py /delay?ms=N
IN_FLIGHT = 8
LOAD_THREADS = 4


def connect_refused(port):
    """True if a TCP connect to 127.0.0.1:port (in the calling thread's netns) is refused."""
    s = socket.socket()
    s.settimeout(1.0)
    try:
        s.connect(("127.0.0.1", port))
        return False
    except ConnectionRefusedError:
        return True
    finally:
        s.close()


def scrape(h):
    return h.netns.run(metrics, h.plan.admin_port)


def base_config(h):
    return yaml.safe_load(h.plan.config_text)


def reload_state(m):
    return (m.value("remora_config_reloads_total", result="success"),
            m.value("remora_config_reloads_total", result="failure"),
            m.value("remora_config_generation"))


def wait_reload(h, want, timeout=10.0):
    """Waits until (success, failure, generation) is want; returns the last scrape."""
    end = time.monotonic() + timeout
    while True:
        m = scrape(h)
        if reload_state(m) == want or time.monotonic() > end:
            return m
        time.sleep(0.05)


def log_time(h, ctr, needle):
    """The wall time (epoch s) of the first log line of ctr holding needle, from podman's own
    timestamps (`podman logs -t`), or None."""
    p = h.env.pm("logs", "-t", ctr, check=False)
    for line in (p.stdout + p.stderr).decode(errors="replace").splitlines():
        if needle in line:
            return parse_time(line.split(" ", 1)[0])
    return None


def remora_ts(line):
    """The `ts` of a remora JSON log line (epoch s)."""
    return parse_time(line["ts"])


def check_in_flight(flights, want_ms):
    done = [f.join(30) for f in flights]
    bad = [(f.path, r) for f, r in zip(flights, done)
           if isinstance(r, Exception) or r is None or r.status != 200 or not r.complete
           or r.body != b"ok"]
    assert not bad, "in-flight requests lost or failed: %r" % bad
    took = [f.done_at - f.sent_at for f in flights]
    assert min(took) >= want_ms / 1000.0 * 0.9, took
    return took


def test_traffic_and_startup_probe(make_pod):
    """Native sidecar start (remora, its startupProbe, then the app): the startup probe's
    first poll, one period after remora's start, passes, and remora logged `ready in` (its
    /readyz answering 200) within that period; requests on the traffic port reach the app
    (x-upstream-name, the app's echo of X-Forwarded-For), remora counts them all, readiness
    and liveness never fail; the ConfigMap directory is mounted read-only."""
    h = make_pod()
    h.start_native()
    sp = h.plan.probes["startupProbe"]
    first = h.startup.results[0]
    assert first[2], "first startup probe failed: %r" % (first,)
    # the kubelet's first probe may come any time within the first period: remora must be
    # ready before its end (its own log line, independent of when the test starts polling;
    # podman takes StartedAt once `runc start` returned, so it can be a few ms after it)
    assert h.ready_logged < sp.period, \
        "remora ready only %.3f s after its start" % h.ready_logged

    info = h.env.pm.inspect(h.pod.remora_ctr)
    mounts = {m["Destination"]: m for m in info["Mounts"]}
    cfg_dir = "/etc/remora"
    assert cfg_dir in mounts and mounts[cfg_dir]["RW"] is False, mounts.get(cfg_dir)

    r = h.netns.get(h.plan.port, "/echo?via=pod")
    assert r.status == 200 and r.header("x-upstream-name") == h.plan.app["name"], r
    seen = r.json()
    xff = [v for k, v in seen["headers"] if k.lower() == "x-forwarded-for"]
    assert xff == ["127.0.0.1"], seen["headers"]

    m0 = scrape(h).total("remora_requests_total")
    load = LoadLoop(h.netns, h.plan.port, ["/echo", "/bytes?n=4096"], threads=LOAD_THREADS)
    time.sleep(2.0)
    load.stop()
    assert load.ok > 100 and not load.bad and not load.lost and not load.refused, \
        load.summary()
    m1 = scrape(h)
    served = m1.total("remora_requests_total") - m0
    assert served == load.ok, "remora counted %d, the clients got %d" % (served, load.ok)
    assert m1.total("remora_requests_total", code="2xx") == m1.total("remora_requests_total")
    time.sleep(1.0)
    h.stop_probers()
    for p in (h.readiness, h.liveness):
        assert p.results and not p.failures(), (p.probe, p.failures())
    env = dict(e.split("=", 1) for e in info["Config"]["Env"])
    limits = [l["msg"] for l in remora_log_lines(h.pod.logs(h.pod.remora_ctr))
              if "max_connections" in str(l.get("msg"))]
    print("\n---- traffic ----\nload: %s\nremora counted %d; %s\nremora container: user %s, "
          "REMORA_WORKERS=%s, read-only rootfs %s; %s" % (
              load.summary(), served, h.probe_summary(), info["Config"]["User"],
              env.get("REMORA_WORKERS"), info["HostConfig"]["ReadonlyRootfs"],
              limits[0] if limits else "?"))


def test_configmap_swap_under_load(make_pod):
    """Two kubelet-style ConfigMap updates (a new timestamped directory, `..data` swapped,
    the old directory removed) under load on the read-only directory mount: the first adds
    route `added` (/added/...), the second removes it. Each is reloaded once (file change),
    the added route answers and is counted under its name, the removed one's traffic falls
    back to the default route; the load sees no failed request; readiness never fails."""
    h = make_pod()
    h.start_native()
    base = base_config(h)
    added = dict(base)
    added["routes"] = ([{"name": "added", "match": {"path_prefix": "/added/"},
                         "upstream": base["routes"][0]["upstream"]}] + list(base["routes"]))
    load = LoadLoop(h.netns, h.plan.port, ["/bytes?n=1024", "/echo", "/added/echo"],
                    threads=LOAD_THREADS)
    try:
        time.sleep(1.0)
        assert scrape(h).value("remora_requests_total", route="added", code="2xx") is None
        t0 = time.monotonic()
        h.conf.swap(to_yaml(added) + "\n")
        m = wait_reload(h, (1.0, 0.0, 2.0))
        took1 = time.monotonic() - t0
        assert reload_state(m) == (1.0, 0.0, 2.0), reload_state(m)
        ok_before = load.ok
        n = 20
        for _ in range(n):
            r = h.netns.get(h.plan.port, "/added/echo?probe=1")
            assert r.status == 200 and r.header("x-upstream-name") == h.plan.app["name"], r
        time.sleep(1.0)
        m = scrape(h)
        on_added = m.value("remora_requests_total", route="added", code="2xx")
        assert on_added is not None and on_added >= n, on_added
        assert load.ok > ok_before, "the load stalled after the reload"
        t0 = time.monotonic()
        h.conf.swap(to_yaml(base) + "\n")
        m = wait_reload(h, (2.0, 0.0, 3.0))
        took2 = time.monotonic() - t0
        assert reload_state(m) == (2.0, 0.0, 3.0), reload_state(m)
        time.sleep(1.0)
        m = scrape(h)
        assert m.value("remora_requests_total", route="added", code="2xx") is None, \
            "route added still in /metrics after its removal"
        r = h.netns.get(h.plan.port, "/added/echo?after=1")
        assert r.status == 200, r
    finally:
        load.stop()
    h.stop_probers()
    assert load.ok > 200 and not load.bad and not load.lost and not load.refused, \
        load.summary()
    assert not h.readiness.failures(), h.readiness.failures()
    assert not h.liveness.failures(), h.liveness.failures()
    lines = remora_log_lines(h.pod.logs(h.pod.remora_ctr))
    reloads = [l["msg"] for l in lines if "config reload" in str(l.get("msg"))]
    assert len(reloads) == 2 and all("(file change)" in s for s in reloads), reloads
    print("\n---- ConfigMap swaps under load ----\nload: %s\nreload 1 (route added) counted "
          "%.0f ms after the swap, %d probe requests on it; reload 2 (removed) %.0f ms; %s"
          % (load.summary(), took1 * 1000, n, took2 * 1000, h.probe_summary()))


def test_sigterm_native_sidecar_order(make_pod):
    """The kubelet's stop of a pod with a native sidecar, with requests in flight throughout:
    the app's preStop hook (the example's `sleep`: load still arrives meanwhile, as the
    endpoint removal spreads), SIGTERM to the app (podman stop: SIGKILL only after
    terminationGracePeriodSeconds) with requests in flight; the app finishes them and exits 0;
    only then remora's preStop (if any) and SIGTERM; remora drains (nothing left in flight),
    logs 0 cut and exits 0. Every request completes 200."""
    h = make_pod(term_delay=0.0)
    h.start_native()
    load = LoadLoop(h.netns, h.plan.port, ["/echo", "/bytes?n=4096"], threads=2)
    time.sleep(1.0)
    # the pod is deleted: requests in flight, then the app's preStop while load goes on
    early = [InFlight(h.netns, h.plan.port, "/delay?ms=%d" % DELAY_MS)
             for _ in range(IN_FLIGHT)]
    t_del = time.monotonic()
    hook = {}
    pre = threading.Thread(target=lambda: hook.update(app=h.pod.prestop("app")), daemon=True)
    pre.start()
    pre.join(h.plan.grace)
    # the endpoint is gone everywhere by the end of the hook: new requests stop; the last
    # ones are in flight when SIGTERM comes
    late = [InFlight(h.netns, h.plan.port, "/delay?ms=%d" % DELAY_MS)
            for _ in range(IN_FLIGHT)]
    load.stop()
    time.sleep(0.3)
    h.stop_probers()
    t0 = time.monotonic()
    h.pod.stop(h.pod.app_ctr)
    app_stop = time.monotonic() - t0
    took = check_in_flight(early + late, DELAY_MS)
    assert load.ok > 0 and not load.bad and not load.lost and not load.refused, \
        load.summary()
    assert h.pod.exit_code(h.pod.app_ctr) == 0, h.pod.logs(h.pod.app_ctr)
    assert h.pod.state(h.pod.remora_ctr)["Status"] == "running"
    app_finished = parse_time(h.pod.state(h.pod.app_ctr)["FinishedAt"])
    t0 = time.monotonic()
    hook["remora"] = h.pod.prestop("remora")
    h.pod.stop(h.pod.remora_ctr)
    remora_stop = time.monotonic() - t0
    assert h.pod.exit_code(h.pod.remora_ctr) == 0, h.pod.logs(h.pod.remora_ctr)
    lines = remora_log_lines(h.pod.logs(h.pod.remora_ctr))
    started = [l for l in lines if str(l.get("msg", "")).startswith("drain started")]
    finished = [l for l in lines if str(l.get("msg", "")).startswith("drain finished")]
    assert started and finished, [l.get("msg") for l in lines[-10:]]
    assert remora_ts(started[0]) >= app_finished - 0.01, \
        "remora's drain began before the app had exited"
    assert re.search(r", 0 cut", finished[0]["msg"]), finished[0]["msg"]
    term_line = [l for l in h.pod.logs(h.pod.app_ctr).splitlines() if "TERM signal" in l]
    print("\n---- SIGTERM, native sidecar order ----\nload until the end of the app's "
          "preStop: %s\nhooks: %r\n%d in flight at the deletion and %d at the app's SIGTERM "
          "(/delay?ms=%d), all 200 in %.2f-%.2f s; app stopped in %.2f s after SIGTERM (%s); "
          "remora stopped %.2f s after the app, %.2f s after the deletion (exit 0): %s" % (
              load.summary(), hook, len(early), len(late), DELAY_MS, min(took), max(took),
              app_stop, term_line[-1].strip() if term_line else "?", remora_stop,
              time.monotonic() - t_del, finished[0]["msg"]))


def test_sigterm_regular_sidecar_order(podenv, make_pod):
    """A regular sidecar's stop (both containers in `containers`; remora's drain.delay 5s as
    README.md and k8s/README.md say for this case; the app, without its preStop, serving 6 s
    after SIGTERM): `podman pod stop` sends SIGTERM to every container at once while requests
    are in flight; /readyz turns 503 `draining` at once; requests on new connections during
    the delay are served; every in-flight request completes 200; remora's drain cuts nothing;
    remora and the app exit 0 and got their SIGTERMs within a second of each other."""
    delay = 5.0
    cfg = yaml.safe_load(podenv.plan.config_text)
    cfg["drain"] = dict(cfg.get("drain") or {}, delay="%gs" % delay)
    h = make_pod(config=to_yaml(cfg) + "\n", term_delay=delay + 1.0)
    h.start_together()
    load = LoadLoop(h.netns, h.plan.port, ["/echo", "/bytes?n=4096"], threads=LOAD_THREADS)
    time.sleep(1.0)
    flights = [InFlight(h.netns, h.plan.port, "/delay?ms=%d" % DELAY_MS)
               for _ in range(IN_FLIGHT)]
    # one request outlasting the delay keeps remora draining after its listener closed
    long_ms = int((delay + 2.0) * 1000)
    longest = InFlight(h.netns, h.plan.port, "/delay?ms=%d" % long_ms)
    time.sleep(0.2)
    load.stop()
    assert load.ok > 0 and not load.bad and not load.lost, load.summary()
    h.stop_probers()
    stopper = threading.Thread(target=h.pod.stop_pod, daemon=True)
    t_sig = time.monotonic()
    stopper.start()

    def readyz():
        return h.netns.get(h.plan.admin_port, "/readyz", timeout=2.0)
    # /readyz 503 draining marks the drain's start; then new connections, within the delay
    end = time.monotonic() + 5.0
    r = None
    while time.monotonic() < end:
        r = readyz()
        if r.status == 503:
            break
        time.sleep(0.02)
    t_draining = time.monotonic()
    assert r is not None and r.status == 503 and b"draining" in r.body, r
    late = [InFlight(h.netns, h.plan.port, "/delay?ms=500") for _ in range(IN_FLIGHT)]
    # and near the end of the delay
    time.sleep(max(0.0, t_draining + delay - 1.0 - time.monotonic()))
    late += [InFlight(h.netns, h.plan.port, "/delay?ms=500") for _ in range(IN_FLIGHT)]
    # after the delay the port refuses while the longest request still runs
    time.sleep(max(0.0, t_draining + delay + 0.5 - time.monotonic()))
    refused = h.netns.run(connect_refused, h.plan.port)
    still = longest.done_at is None
    stopper.join(h.plan.grace + 60)
    assert not stopper.is_alive(), "podman pod stop did not return"
    t_stopped = time.monotonic()
    took = check_in_flight(flights, DELAY_MS)
    took_late = check_in_flight(late, 500)
    took_long = check_in_flight([longest], long_ms)
    assert still and refused, "port %s refused %s s after the drain began (longest request " \
        "still running: %s)" % (h.plan.port, delay + 0.5, still)
    assert h.pod.exit_code(h.pod.remora_ctr) == 0, h.pod.logs(h.pod.remora_ctr)
    assert h.pod.exit_code(h.pod.app_ctr) == 0, h.pod.logs(h.pod.app_ctr)
    lines = remora_log_lines(h.pod.logs(h.pod.remora_ctr))
    started = [l for l in lines if str(l.get("msg", "")).startswith("drain started")]
    finished = [l for l in lines if str(l.get("msg", "")).startswith("drain finished")]
    assert started and finished, [l.get("msg") for l in lines[-10:]]
    assert re.search(r", 0 cut", finished[0]["msg"]), finished[0]["msg"]
    app_term = log_time(h, h.pod.app_ctr, "TERM received")
    assert app_term is not None, h.pod.logs(h.pod.app_ctr)
    gap = abs(app_term - remora_ts(started[0]))
    assert gap < 1.0, "SIGTERM reached the app and remora %.3f s apart" % gap
    term_line = [l for l in h.pod.logs(h.pod.app_ctr).splitlines() if "TERM signal" in l]
    print("\n---- SIGTERM, regular sidecar order (pod stop) ----\nload before: %s\n%d in "
          "flight (/delay?ms=%d) all 200 (%.2f-%.2f s); /readyz 503 draining %.0f ms after "
          "the stop began; %d more on new connections during the delay all 200 (%.2f-%.2f "
          "s); port refused %.1f s into the drain while a %d ms request ran on (200 after "
          "%.2f s); SIGTERM to app and remora %.0f ms apart; pod stopped in %.2f s; remora "
          "exit 0: %s; app exit 0: %s" % (
              load.summary(), IN_FLIGHT, DELAY_MS, min(took), max(took),
              (t_draining - t_sig) * 1000, len(late), min(took_late), max(took_late),
              delay + 0.5, long_ms, took_long[0],
              gap * 1000, t_stopped - t_sig, finished[0]["msg"],
              term_line[-1].strip() if term_line else "?"))
