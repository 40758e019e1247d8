# SPDX-License-Identifier: Apache-2.0
"""65: a real Prometheus scrapes remora's admin /metrics every second while requests flow to
two routes whose app answers after 20 ms and 200 ms; histogram_quantile over the scraped
buckets puts each route's median in the right bucket, the scrape target is healthy (Prometheus
negotiates OpenMetrics), and every PromQL expression of the Grafana dashboard
(k8s/grafana/remora-dashboard.json) runs and returns data."""

import json
import os
import re
import subprocess
import threading
import time
import urllib.parse
import urllib.request

import pytest

from conftest import ROOT, _stop
from helpers import default_config, free_port, http, to_yaml, wait_for

PROMETHEUS = "/usr/bin/prometheus"
DASHBOARD = ROOT / "k8s" / "grafana" / "remora-dashboard.json"
LOAD_SECONDS = 8.0
WINDOW = "30s"
# Grafana's built-in and dashboard variables, as they expand for "All" over a recent range.
GRAFANA_VARS = {"__rate_interval": WINDOW, "__interval": "1s", "__range": "1m",
                "__interval_ms": "1000", "__range_s": "60", "route": ".*", "instance": ".*",
                "datasource": "prometheus"}


# ---- the dashboard (no remora needed) -----------------------------------------------------

def dashboard():
    return json.loads(DASHBOARD.read_text())


def all_panels(dash):
    out = []
    for p in dash.get("panels", []):
        out.append(p)
        out.extend(p.get("panels", []))  # panels inside a collapsed row
    return out


def dashboard_exprs(dash):
    """[(panel title, expr)] of every PromQL target in the dashboard."""
    return [(p.get("title"), t["expr"]) for p in all_panels(dash)
            for t in p.get("targets", []) if t.get("expr")]


def expand(expr):
    """Grafana's variable syntaxes $name, ${name}, ${name:fmt} and [[name]], expanded."""
    def sub(m):
        name = m.group(1) or m.group(2) or m.group(3)
        assert name in GRAFANA_VARS, "unknown variable %r in %r" % (name, expr)
        return GRAFANA_VARS[name]

    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\[\[(\w+)\]\]|\$(\w+)", sub, expr)


@pytest.mark.no_remora
def test_dashboard_structure():
    dash = dashboard()
    assert dash.get("schemaVersion", 0) >= 36, dash.get("schemaVersion")
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    ds = variables.get("datasource")
    assert ds and ds["type"] == "datasource" and ds["query"] == "prometheus", ds
    route = variables.get("route")
    assert route and route["type"] == "query", route
    q = route["query"]["query"] if isinstance(route["query"], dict) else route["query"]
    assert re.sub(r"\s", "", q) == "label_values(remora_requests_total,route)", q
    for v in variables.values():
        if v["type"] == "query":
            assert v["datasource"]["uid"] == "${datasource}", v
    exprs = dashboard_exprs(dash)
    assert exprs
    for p in all_panels(dash):
        if p.get("type") == "row":
            continue
        assert p.get("datasource", {}).get("uid") == "${datasource}", p.get("title")
        for t in p.get("targets", []):
            assert t.get("datasource", {}).get("uid", "${datasource}") == "${datasource}"
    joined = "\n".join(e for _, e in exprs)
    # The panels the dashboard promises: rate, error ratio, p50/p90/p99, in-flight per route.
    for needle in ("remora_requests_total", 'code="5xx"', "remora_requests_in_flight"):
        assert needle in joined, needle
    for q in ("0.5", "0.9", "0.99"):
        assert re.search(r"histogram_quantile\(%s,\s*sum by \(route, le\) \(rate\("
                         r"remora_request_duration_seconds_bucket" % re.escape(q), joined), q
    for _, e in exprs:
        if "remora_requests_total" in e or "remora_requests_in_flight" in e:
            assert 'route=~"$route"' in e, e
        expand(e)  # every variable is known
    ids = [p["id"] for p in all_panels(dash)]
    assert len(ids) == len(set(ids)), ids


# ---- a real Prometheus --------------------------------------------------------------------

class Prometheus:
    def __init__(self, proc, port, log_path):
        self.proc = proc
        self.port = port
        self.log_path = log_path

    def api(self, path, **params):
        url = "http://127.0.0.1:%d/api/v1/%s?%s" % (self.port, path,
                                                     urllib.parse.urlencode(params, doseq=True))
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(url, timeout=10) as r:
            doc = json.loads(r.read())
        assert doc.get("status") == "success", doc
        return doc["data"]

    def query(self, expr):
        return self.api("query", query=expr)["result"]


@pytest.fixture
def prometheus(tmp_path):
    """factory(admin_port) -> a started Prometheus scraping 127.0.0.1:admin_port every 1 s."""
    if not os.access(PROMETHEUS, os.X_OK):
        pytest.skip("%s is missing (Debian package prometheus)" % PROMETHEUS)
    started = []

    def make(admin_port):
        port = free_port()
        cfg = tmp_path / "prometheus.yml"
        cfg.write_text(to_yaml({
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s",
                       "evaluation_interval": "1s"},
            "scrape_configs": [{"job_name": "remora", "metrics_path": "/metrics",
                                "static_configs": [
                                    {"targets": ["127.0.0.1:%d" % admin_port]}]}],
        }) + "\n")
        log_path = tmp_path / "prometheus.log"
        with open(log_path, "wb") as logf:
            proc = subprocess.Popen(
                [PROMETHEUS, "--config.file=%s" % cfg,
                 "--storage.tsdb.path=%s" % (tmp_path / "tsdb"),
                 "--web.listen-address=127.0.0.1:%d" % port, "--log.level=warn"],
                stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        prom = Prometheus(proc, port, log_path)
        started.append(prom)

        def ready():
            if proc.poll() is not None:
                return True
            try:
                return http(port, "GET", "/-/ready", timeout=1).status == 200
            except (OSError, ValueError):
                return False

        ok = wait_for(ready, timeout=15, interval=0.1)
        if proc.poll() is not None or not ok:
            pytest.fail("prometheus did not start:\n%s" % log_path.read_text(errors="replace"))
        return prom

    yield make
    for prom in started:
        _stop(prom.proc)


def prom_remora_config(upstream):
    dead = free_port()
    app = {"name": "app", "endpoints": [upstream.addr], "connect_timeout": "1s",
           "idle_timeout": "2s", "max_connections": 64,
           "health_check": {"path": "/ready", "interval": "1s", "timeout": "1s", "rise": 2,
                            "fall": 3}}
    down = {"name": "down", "endpoints": ["127.0.0.1:%d" % dead], "connect_timeout": "1s",
            "idle_timeout": "2s", "max_connections": 64}
    routes = [
        {"name": "fast", "match": {"host": "fast.test"}, "upstream": "app", "timeout": "5s"},
        {"name": "slow", "match": {"host": "slow.test"}, "upstream": "app", "timeout": "5s"},
        {"name": "broken", "match": {"path_prefix": "/broken"}, "upstream": "down",
         "timeout": "5s"},
    ]
    return default_config(free_port(), free_port(), [], workers=2, upstreams=[app, down],
                          routes=routes)


def run_load(port, seconds, results):
    """Sequential requests for `seconds`: fast (20 ms), slow (200 ms), and every fifth round a
    request to the broken route (502)."""
    end = time.monotonic() + seconds
    i = 0
    while time.monotonic() < end:
        for host, path, want in (("fast.test", "/delay?ms=20", 200),
                                 ("slow.test", "/delay?ms=200", 200)) + (
                                     (("x.test", "/broken", 502),) if i % 5 == 0 else ()):
            try:
                st = http(port, "GET", path, host=host, timeout=5).status
            except Exception as e:  # noqa: BLE001 - counted as a wrong status
                st = repr(e)
            results.append((host, st == want, st))
        i += 1


def by_label(result, label):
    return {s["metric"].get(label): float(s["value"][1]) for s in result}


def test_prometheus_scrape_quantiles_and_dashboard(remora, upstream, prometheus):
    p = remora(config=prom_remora_config(upstream))
    t0 = time.monotonic()
    prom = prometheus(p.admin_port)
    # Prometheus applies discovered targets in batches every 5 s: wait for the first scrape.
    first = wait_for(lambda: [t for t in prom.api("targets")["activeTargets"]
                              if t["health"] != "unknown"], timeout=15, interval=0.2)
    assert first and first[0]["health"] == "up", first
    results = []
    t = threading.Thread(target=run_load, args=(p.port, LOAD_SECONDS, results))
    t.start()
    t.join(LOAD_SECONDS + 15)
    assert not t.is_alive(), "load thread did not finish"
    bad = [r for r in results if not r[1]]
    assert results and not bad, bad[:5]
    # Let Prometheus take two more scrapes after the last request.
    time.sleep(2.2)

    targets = prom.api("targets")["activeTargets"]
    assert len(targets) == 1, targets
    assert targets[0]["health"] == "up" and not targets[0]["lastError"], targets[0]
    up = prom.query('up{job="remora"}')
    assert [float(s["value"][1]) for s in up] == [1.0], up

    counts = by_label(prom.query('sum by (route) (increase(remora_requests_total[1m]))'),
                      "route")
    assert counts.get("fast", 0) > 10 and counts.get("slow", 0) > 10, counts

    p50 = by_label(prom.query(
        "histogram_quantile(0.5, sum by (route, le) "
        "(rate(remora_request_duration_seconds_bucket[%s])))" % WINDOW), "route")
    print("requests %r, p50 %r" % (counts, p50))
    assert 0.01 < p50.get("fast", -1) <= 0.025, "p50 of the 20 ms route: %r" % p50
    assert 0.1 < p50.get("slow", -1) <= 0.25, "p50 of the 200 ms route: %r" % p50

    up_p50 = by_label(prom.query(
        "histogram_quantile(0.5, sum by (upstream, le) "
        "(rate(remora_upstream_response_duration_seconds_bucket[%s])))" % WINDOW), "upstream")
    # half the app's responses take 20 ms and half 200 ms: the median is on the border
    assert 0.01 < up_p50.get("app", -1) <= 0.25, up_p50

    healthy = by_label(prom.query("remora_upstream_healthy"), "upstream")
    assert healthy == {"app": 1.0}, healthy

    # Every expression of the dashboard runs and has data.
    failures = []
    for title, expr in dashboard_exprs(dashboard()):
        q = expand(expr)
        try:
            res = prom.query(q)
        except Exception as e:  # noqa: BLE001 - collected and reported together
            failures.append((title, q, repr(e)))
            continue
        if not res:
            failures.append((title, q, "empty result"))
    assert not failures, "dashboard queries failing:\n" + "\n".join(
        "%s: %s -> %s" % f for f in failures)

    # The error-ratio panel: only the broken route answers 5xx.
    err_expr = next(e for title, e in dashboard_exprs(dashboard()) if 'code="5xx"' in e)
    ratio = by_label(prom.query(expand(err_expr)), "route")
    assert ratio.get("broken") == 1.0 and ratio.get("fast") == 0.0 \
        and ratio.get("slow") == 0.0, ratio

    # The $route and $instance variables' label_values queries.
    routes = prom.api("label/route/values", **{"match[]": "remora_requests_total"})
    assert {"fast", "slow", "broken"} <= set(routes), routes
    inst = prom.api("label/instance/values", **{"match[]": "remora_build_info"})
    assert inst == ["127.0.0.1:%d" % p.admin_port], inst
    assert time.monotonic() - t0 < 30, "took %.1fs" % (time.monotonic() - t0)
