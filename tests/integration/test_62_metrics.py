# SPDX-License-Identifier: Apache-2.0
"""62: the admin /metrics endpoint: a scrape that promtool accepts without lint problems, both
exposition formats (Prometheus text 0.0.4 and OpenMetrics 1.0 when asked for), exact counter
and histogram deltas per route and status class, cumulative buckets with configurable bounds,
in-flight and connection gauges, downstream byte counters, upstream connect failures by
reason, build info and the process_* collector."""

import math
import os
import re
import socket
import struct
import subprocess
import threading
import time

import pytest

from conftest import BIN
from helpers import (OPENMETRICS_CTYPE, PROM_CTYPE, HttpConn, build_request,
                     default_config, free_port, http, metrics, scrape, wait_for)

PROMTOOL = "/usr/bin/promtool"
HISTOGRAMS = ("remora_request_duration_seconds", "remora_upstream_response_duration_seconds",
              "remora_upstream_connect_duration_seconds")
DEFAULT_LE = ["0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25",
              "0.5", "1", "2.5", "5", "10", "+Inf"]
ROUTES = ("alpha", "beta", "slow", "broken", "hints")
CODES = ("1xx", "2xx", "3xx", "4xx", "5xx", "none")
# What Prometheus 2.x sends when it scrapes.
PROMETHEUS_ACCEPT = ("application/openmetrics-text;version=1.0.0,application/openmetrics-text;"
                     "version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1")


def metrics_config(upstream, dead_port, metrics_opts=None, route_buckets=None, workers=1):
    """alpha: /echo..., beta: /status/..., slow: /delay..., broken: /broken... on an upstream
    "down" whose only endpoint refuses connections; anything else has no route (404)."""
    up = {"name": "app", "endpoints": [upstream.addr], "connect_timeout": "1s",
          "idle_timeout": "2s", "max_connections": 64}
    down = {"name": "down", "endpoints": ["127.0.0.1:%d" % dead_port], "connect_timeout": "1s",
            "idle_timeout": "2s", "max_connections": 64}
    routes = [
        {"name": "alpha", "match": {"path_prefix": "/echo"}, "upstream": "app", "timeout": "5s"},
        {"name": "beta", "match": {"path_prefix": "/status/"}, "upstream": "app",
         "timeout": "5s"},
        {"name": "slow", "match": {"path_prefix": "/delay"}, "upstream": "app", "timeout": "5s"},
        {"name": "broken", "match": {"path_prefix": "/broken"}, "upstream": "down",
         "timeout": "5s"},
        {"name": "hints", "match": {"path_prefix": "/early-hints"}, "upstream": "app",
         "timeout": "5s"},
    ]
    for name, buckets in (route_buckets or {}).items():
        next(r for r in routes if r["name"] == name)["buckets"] = buckets
    cfg = default_config(free_port(), free_port(), [], workers=workers, upstreams=[up, down],
                         routes=routes)
    if metrics_opts is not None:
        cfg["metrics"] = metrics_opts
    return cfg


@pytest.fixture
def mproxy(remora, upstream):
    """remora with the four routes above and the default buckets."""
    return remora(config=metrics_config(upstream, free_port()))


def req_counts(m, name="remora_requests_total"):
    """{(route, code): value} of a {route,code} counter or histogram _count."""
    return {(l.get("route"), l.get("code")): v for l, v in m.series(name)}


def delta(after, before):
    keys = set(after) | set(before)
    d = {k: after.get(k, 0) - before.get(k, 0) for k in keys}
    return {k: v for k, v in d.items() if v}


def wait_delta(admin_port, before, want, name="remora_requests_total", timeout=3.0):
    """Scrapes until the {route,code} deltas of name reach want (the scrape may run a moment
    before the worker that finished a request has counted it); returns the last scrape."""
    last = [None]

    def reached():
        last[0] = metrics(admin_port)
        d = delta(req_counts(last[0], name), before)
        return all(d.get(k, 0) >= v for k, v in want.items())

    wait_for(reached, timeout=timeout, interval=0.05)
    return last[0]


def histo_groups(m, family):
    """{frozenset(labels without le): {"buckets": [(le_str, v)], "count": v, "sum": v}}."""
    groups = {}
    for l, v in m.series(family + "_bucket"):
        key = frozenset((k, w) for k, w in l.items() if k != "le")
        groups.setdefault(key, {"buckets": [], "count": None, "sum": None})
        groups[key]["buckets"].append((l.get("le"), v))
    for suffix in ("count", "sum"):
        for l, v in m.series(family + "_" + suffix):
            key = frozenset(l.items())
            groups.setdefault(key, {"buckets": [], "count": None, "sum": None})
            groups[key][suffix] = v
    return groups


def le_value(s):
    return math.inf if s == "+Inf" else float(s)


def send_traffic(port):
    """Requests to every route and to no route; returns the expected {(route, code): n}."""
    plan = [("GET", "/echo/a", 200)] * 4 + [("HEAD", "/echo/h", 200)] \
        + [("GET", "/status/200", 200)] * 2 + [("GET", "/status/204", 204)] \
        + [("GET", "/status/304", 304)] + [("GET", "/status/404", 404)] * 2 \
        + [("GET", "/status/500", 500)] + [("GET", "/nomatch", 404)] * 2 \
        + [("GET", "/broken", 502)] + [("GET", "/early-hints", 200)]
    for method, path, want in plan:
        r = http(port, method, path)
        assert r.status == want, (path, r)
    return {("alpha", "2xx"): 5, ("beta", "2xx"): 3, ("beta", "3xx"): 1, ("beta", "4xx"): 2,
            ("beta", "5xx"): 1, ("", "4xx"): 2, ("broken", "5xx"): 1,
            ("hints", "2xx"): 1}  # the final status counts, not the 103 and 100 before it


# ---- format -------------------------------------------------------------------------------

def test_promtool_check_metrics(mproxy):
    if not os.access(PROMTOOL, os.X_OK):
        pytest.skip("%s is missing (Debian package prometheus)" % PROMTOOL)
    before = req_counts(metrics(mproxy.admin_port))
    want = send_traffic(mproxy.port)
    wait_delta(mproxy.admin_port, before, want)
    r, _ = scrape(mproxy.admin_port)
    p = subprocess.run([PROMTOOL, "check", "metrics"], input=r.body, capture_output=True,
                       timeout=20)
    out = (p.stdout + p.stderr).decode(errors="replace")
    assert p.returncode == 0 and not out.strip(), \
        "promtool check metrics (rc %d):\n%s\n---- scrape ----\n%s" % (
            p.returncode, out, r.body.decode(errors="replace")[:6000])


def test_text_format_content_type(mproxy):
    http(mproxy.port, "GET", "/echo")
    for accept in (None, "text/plain", "*/*", "text/plain;version=0.0.4"):
        r, m = scrape(mproxy.admin_port, accept=accept)
        assert r.header("content-type") == PROM_CTYPE, (accept, r.headers)
        assert "# EOF" not in r.body.decode(), accept
        assert m.types.get("remora_requests_total") == "counter", m.types
        assert m.types.get("remora_request_duration_seconds") == "histogram", m.types


def om_families(body):
    """[(family, type, [sample names])] in the order an OpenMetrics body declares them."""
    fams = []
    for line in body.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, typ = line.split(None, 3)
            fams.append((name, typ.strip(), []))
        elif line and not line.startswith("#"):
            assert fams, "sample before any # TYPE: %r" % line
            fams[-1][2].append(re.split(r"[{ ]", line, 1)[0])
    return fams


OM_SUFFIXES = {"counter": ("_total", "_created"), "gauge": ("",), "info": ("_info",),
               "histogram": ("_bucket", "_count", "_sum", "_created"), "unknown": ("",)}


def test_openmetrics_when_asked(mproxy):
    http(mproxy.port, "GET", "/echo")
    _, text_m = scrape(mproxy.admin_port)
    text_counters = {n for n, t in text_m.types.items() if t == "counter"}
    assert "remora_requests_total" in text_counters, text_m.types
    for fam in text_counters:
        assert fam.endswith("_total"), "text format counter %s without _total" % fam
    # Counter families are declared without _total, their samples keep it. A counter X_total
    # next to another family X (remora_downstream_connections{,_total}) cannot be family X
    # too (family names are unique): it may then be declared as X_total of type unknown.
    want_types = set()
    for n, t in text_m.types.items():
        if t != "counter":
            want_types.add((n, t))
        elif n[:-len("_total")] in text_m.types:
            want_types.add((n, "unknown"))
        else:
            want_types.add((n[:-len("_total")], t))
    for accept in ("application/openmetrics-text; version=1.0.0", PROMETHEUS_ACCEPT):
        r, m = scrape(mproxy.admin_port, accept=accept)
        body = r.body.decode()
        assert r.header("content-type") == OPENMETRICS_CTYPE, (accept, r.headers)
        assert body.endswith("# EOF\n"), body[-200:]
        assert body.count("# EOF") == 1
        fams = om_families(body)
        assert {(n, t) for n, t, _ in fams} == want_types, \
            "OpenMetrics families differ from the text format's: %r" % (
                {(n, t) for n, t, _ in fams} ^ want_types)
        for name, typ, samples in fams:
            ok = {name + s for s in OM_SUFFIXES.get(typ, ("",))}
            bad = sorted(set(samples) - ok)
            assert not bad, "family %s (%s) has samples %r" % (name, typ, bad)
        # The same series in both formats.
        assert m.total("remora_requests_total") == text_m.total("remora_requests_total")


def test_parsers_of_prometheus_client_accept_both_formats(mproxy):
    """The reference Python parsers (python3-prometheus-client) read both formats, the
    OpenMetrics one strictly (unique families, suffixes, # EOF), to the same samples."""
    try:
        from prometheus_client.openmetrics.parser import \
            text_string_to_metric_families as parse_om
        from prometheus_client.parser import text_string_to_metric_families as parse_text
    except ImportError:
        pytest.skip("python3-prometheus-client is not installed")
    before = req_counts(metrics(mproxy.admin_port))
    wait_delta(mproxy.admin_port, before, send_traffic(mproxy.port))
    r_text, _ = scrape(mproxy.admin_port)
    r_om, _ = scrape(mproxy.admin_port, accept="application/openmetrics-text; version=1.0.0")

    def samples(fams):
        out = {}
        for f in fams:
            for smp in f.samples:
                if smp.name.endswith("_created"):
                    continue
                # OpenMetrics writes integral bounds canonically (le="1.0"), text as "1"
                labels = {k: (le_value(v) if k == "le" else v) for k, v in smp.labels.items()}
                key = (smp.name, tuple(sorted(labels.items())))
                out[key] = smp.value
        return out

    text_fams = list(parse_text(r_text.body.decode()))
    try:
        om_fams = list(parse_om(r_om.body.decode()))
    except ValueError as e:
        pytest.fail("OpenMetrics parser refused the scrape: %s" % e)
    a, b = samples(text_fams), samples(om_fams)
    moving = ("process_", "remora_downstream_connections", "remora_upstream_connections",
              "remora_request_bytes_total", "remora_response_bytes_total")
    assert {k for k in a if not k[0].startswith(moving)} == \
        {k for k in b if not k[0].startswith(moving)}
    for k, v in a.items():
        if not k[0].startswith(moving) and "_duration_seconds_sum" not in k[0]:
            assert b.get(k) == v, (k, v, b.get(k))
    assert {f.name for f in om_fams} >= {"remora_requests", "remora_request_duration_seconds"}


def test_openmetrics_family_names_unique(mproxy):
    """OpenMetrics 1.0: MetricFamily names MUST be unique within a MetricSet. A gauge X next
    to a counter X_total breaks that: both are declared as family X."""
    r, m = scrape(mproxy.admin_port, accept="application/openmetrics-text; version=1.0.0")
    fams = [line.split()[2] for line in r.body.decode().splitlines()
            if line.startswith("# TYPE ")]
    dups = sorted({f for f in fams if fams.count(f) > 1})
    assert not dups, "family names declared more than once in OpenMetrics: %r" % dups


def test_admin_paths(mproxy):
    for path in ("/healthz", "/readyz", "/metrics"):
        assert http(mproxy.admin_port, "GET", path).status == 200, path
    for path in ("/", "/metric", "/metrics/x", "/nope", "/healthz/x"):
        assert http(mproxy.admin_port, "GET", path).status == 404, path


# ---- counters and histograms --------------------------------------------------------------

def test_requests_counted_per_route_and_code(mproxy):
    m0 = metrics(mproxy.admin_port)
    before = req_counts(m0)
    before_hist = req_counts(m0, "remora_request_duration_seconds_count")
    want = send_traffic(mproxy.port)
    wait_delta(mproxy.admin_port, before, want)
    time.sleep(0.2)  # nothing more may arrive
    m = metrics(mproxy.admin_port)
    got = delta(req_counts(m), before)
    assert got == want, "remora_requests_total deltas %r, sent %r" % (got, want)
    got_hist = delta(req_counts(m, "remora_request_duration_seconds_count"), before_hist)
    assert got_hist == want, "request duration _count deltas %r, sent %r" % (got_hist, want)
    for (route, code), _ in want.items():
        assert route in ROUTES + ("",) and code in CODES
    # Every label set has exactly the labels route and code.
    for l, _ in m.series("remora_requests_total"):
        assert set(l) == {"route", "code"}, l
        assert l["code"] in CODES, l


def test_request_duration_measures_the_request(mproxy):
    fam = "remora_request_duration_seconds"
    up = "remora_upstream_response_duration_seconds"
    m0 = metrics(mproxy.admin_port)
    r = http(mproxy.port, "GET", "/delay?ms=300")
    assert r.status == 200
    m = wait_delta(mproxy.admin_port, req_counts(m0), {("slow", "2xx"): 1})
    lab = {"route": "slow", "code": "2xx"}

    def d(name, **extra):
        return m.value(name, 0, **lab, **extra) - m0.value(name, 0, **lab, **extra)

    assert d(fam + "_count") == 1
    assert 0.29 <= d(fam + "_sum") < 2.0, d(fam + "_sum")
    assert d(fam + "_bucket", le="0.25") == 0
    assert d(fam + "_bucket", le="0.5") == 1
    assert d(fam + "_bucket", le="+Inf") == 1
    up_sum = m.total(up + "_sum", upstream="app") - m0.total(up + "_sum", upstream="app")
    up_cnt = m.total(up + "_count", upstream="app") - m0.total(up + "_count", upstream="app")
    assert up_cnt == 1 and 0.29 <= up_sum < 2.0, (up_cnt, up_sum)
    cn_cnt = m.total("remora_upstream_connect_duration_seconds_count", upstream="app")
    assert cn_cnt >= 1, "no upstream connect observed for app"


def single_duration(p, before, route, send):
    """Runs send(), waits for one more {route, 2xx} request; returns its duration_sum delta."""
    send()
    m = wait_delta(p.admin_port, req_counts(before), {(route, "2xx"): 1})
    lab = {"route": route, "code": "2xx"}
    fam = "remora_request_duration_seconds"
    assert m.value(fam + "_count", 0, **lab) - before.value(fam + "_count", 0, **lab) == 1
    return m.value(fam + "_sum", 0, **lab) - before.value(fam + "_sum", 0, **lab)


def test_request_duration_starts_at_first_byte_of_head(mproxy):
    """The clock starts with the first byte of the request head, not when the head is
    complete, and not when the previous request on the connection ended."""
    raw = build_request("GET", "/echo/split")
    with HttpConn(mproxy.port) as c:
        def split_head():
            c.send(raw[:10])
            time.sleep(0.4)
            c.send(raw[10:])
            assert c.read_response().status == 200

        took = single_duration(mproxy, metrics(mproxy.admin_port), "alpha", split_head)
        assert 0.39 <= took < 2.0, "head sent over 400 ms, duration %.3fs" % took

        time.sleep(0.5)  # idle on a keep-alive connection

        def next_request():
            c.send(build_request("GET", "/echo/next"))
            assert c.read_response().status == 200

        took = single_duration(mproxy, metrics(mproxy.admin_port), "alpha", next_request)
        assert took < 0.25, "the idle time before the request was counted: %.3fs" % took


def test_counts_summed_across_workers(remora, upstream):
    """Each worker counts in its own shard; a scrape adds them up exactly."""
    p = remora(config=metrics_config(upstream, free_port(), workers=2))
    before = req_counts(metrics(p.admin_port))
    n_threads, per_thread = 8, 10
    errors = []

    def client():
        for _ in range(per_thread):
            try:
                assert http(p.port, "GET", "/echo/w").status == 200
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(repr(e))

    ts = [threading.Thread(target=client) for _ in range(n_threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(20)
    assert not errors, errors[:3]
    n = n_threads * per_thread
    wait_delta(p.admin_port, before, {("alpha", "2xx"): n})
    time.sleep(0.2)
    m = metrics(p.admin_port)
    assert delta(req_counts(m), before) == {("alpha", "2xx"): n}
    assert m.value("remora_request_duration_seconds_count", route="alpha", code="2xx") == n
    assert m.value("remora_request_duration_seconds_bucket", route="alpha", code="2xx",
                   le="+Inf") == n
    assert m.value("remora_downstream_connections_total") == n
    assert m.value("remora_requests_in_flight", route="alpha") == 0


def check_histograms(m, expect_le=None):
    """Buckets cumulative and sorted by le, +Inf last, _count == +Inf bucket, _sum >= 0.
    expect_le: {family: {frozenset(label items) or None: [le strings]}} (None: any)."""
    seen = 0
    for fam in HISTOGRAMS:
        assert m.types.get(fam) == "histogram", (fam, m.types.get(fam))
        for key, g in histo_groups(m, fam).items():
            seen += 1
            les = [le for le, _ in g["buckets"]]
            assert les and les[-1] == "+Inf", (fam, key, les)
            vals = [le_value(le) for le in les]
            assert vals == sorted(vals) and len(set(vals)) == len(vals), (fam, key, les)
            counts = [v for _, v in g["buckets"]]
            assert all(a <= b for a, b in zip(counts, counts[1:])), \
                "%s%s buckets not cumulative: %r" % (fam, dict(key), g["buckets"])
            assert g["count"] is not None and g["count"] == counts[-1], (fam, key, g)
            assert g["sum"] is not None and g["sum"] >= 0, (fam, key, g)
            if expect_le is not None:
                want = expect_le.get(fam, {})
                want = want.get(key, want.get(None))
                if want is not None:
                    assert les == want, "%s%s le values %r, configured %r" % (
                        fam, dict(key), les, want)
    return seen


def test_histograms_cumulative_with_default_buckets(mproxy):
    before = req_counts(metrics(mproxy.admin_port))
    want = send_traffic(mproxy.port)
    http(mproxy.port, "GET", "/delay?ms=30")
    want[("slow", "2xx")] = 1
    m = wait_delta(mproxy.admin_port, before, want)
    n = check_histograms(m, {fam: {None: DEFAULT_LE} for fam in HISTOGRAMS})
    assert n >= len(want) + 1, n  # every {route,code} seen plus the upstream histograms
    keys = {frozenset(l.items()) for l, _ in m.series("remora_request_duration_seconds_count")}
    for route, code in want:
        assert frozenset({("route", route), ("code", code)}) in keys, (route, code, keys)
    ups = {l.get("upstream") for l, _ in
           m.series("remora_upstream_response_duration_seconds_count")}
    assert "app" in ups, ups


def test_custom_global_and_route_buckets(remora, upstream):
    glob = [0.0025, 0.1, 1, 2.5]
    beta = [0.05, 0.75, 3]
    p = remora(config=metrics_config(upstream, free_port(), metrics_opts={"buckets": glob},
                                     route_buckets={"beta": beta}))
    before = req_counts(metrics(p.admin_port))
    assert http(p.port, "GET", "/echo").status == 200
    assert http(p.port, "GET", "/status/201").status == 201
    m = wait_delta(p.admin_port, before, {("alpha", "2xx"): 1, ("beta", "2xx"): 1})
    glob_le = ["0.0025", "0.1", "1", "2.5", "+Inf"]
    beta_le = ["0.05", "0.75", "3", "+Inf"]
    check_histograms(m, {
        "remora_request_duration_seconds": {
            frozenset({("route", "alpha"), ("code", "2xx")}): glob_le,
            frozenset({("route", "beta"), ("code", "2xx")}): beta_le},
        "remora_upstream_response_duration_seconds": {None: glob_le},
        "remora_upstream_connect_duration_seconds": {None: glob_le},
    })
    les = {l["le"] for l, _ in m.series("remora_request_duration_seconds_bucket", route="beta")}
    assert les == set(beta_le), les


@pytest.mark.parametrize("bad", [[0.1, 0.05], [0.1, 0.1], [-1, 1], [0, 1], ["x"]])
def test_invalid_buckets_rejected(run_remora, upstream, tmp_path, bad):
    """Bucket bounds must be positive and strictly increasing: --check says where."""
    from helpers import to_yaml
    cfg = metrics_config(upstream, free_port(), metrics_opts={"buckets": bad})
    path = tmp_path / "bad-buckets.yaml"
    path.write_text(to_yaml(cfg) + "\n")
    p = run_remora("--check", "-c", path)
    out = (p.stdout + p.stderr).decode()
    assert p.returncode == 1, out
    line = next(i for i, l in enumerate(path.read_text().splitlines(), 1) if "buckets" in l)
    assert re.search(r"^%s:%d:\d+: " % (re.escape(str(path)), line), out, re.M), out


# ---- gauges and byte counters -------------------------------------------------------------

def test_configured_routes_have_series_before_traffic(mproxy):
    m = metrics(mproxy.admin_port)
    for route in ROUTES:
        for fam in ("remora_requests_in_flight", "remora_request_bytes_total",
                    "remora_response_bytes_total"):
            assert m.value(fam, route=route) == 0, (fam, route, m.series(fam))
    assert m.types.get("remora_requests_in_flight") == "gauge"
    assert m.types.get("remora_request_bytes_total") == "counter"
    assert m.types.get("remora_response_bytes_total") == "counter"


def test_in_flight_and_upstream_connections(mproxy):
    box = {}

    def slow():
        try:
            box["status"] = http(mproxy.port, "GET", "/delay?ms=1500", timeout=5).status
        except Exception as e:  # noqa: BLE001 - reported below
            box["status"] = repr(e)

    t = threading.Thread(target=slow)
    t.start()
    try:
        up = wait_for(lambda: metrics(mproxy.admin_port).value(
            "remora_requests_in_flight", route="slow") == 1, timeout=1.2)
        m = metrics(mproxy.admin_port)
        assert up, "in_flight{route=slow} never reached 1: %r" % \
            m.series("remora_requests_in_flight")
        for route in ROUTES:
            if route != "slow":
                assert m.value("remora_requests_in_flight", route=route) == 0, route
        assert m.value("remora_upstream_connections", upstream="app", state="active") == 1, \
            m.series("remora_upstream_connections")
        assert m.value("remora_downstream_connections") == 1
    finally:
        t.join(5)
    assert box.get("status") == 200, box
    assert wait_for(lambda: metrics(mproxy.admin_port).value(
        "remora_requests_in_flight", route="slow") == 0, timeout=2)
    m = metrics(mproxy.admin_port)
    assert m.value("remora_upstream_connections", upstream="app", state="active") == 0
    assert m.value("remora_upstream_connections", upstream="app", state="idle") == 1, \
        m.series("remora_upstream_connections")
    assert m.types.get("remora_upstream_connections") == "gauge"


def test_downstream_connection_gauge_and_total(mproxy):
    m0 = metrics(mproxy.admin_port)
    assert m0.value("remora_downstream_connections") == 0
    conns = [HttpConn(mproxy.port) for _ in range(3)]
    try:
        for c in conns:
            c.request("GET", "/echo")
            assert c.read_response().status == 200
        m = metrics(mproxy.admin_port)
        assert m.value("remora_downstream_connections") == 3
        assert m.value("remora_downstream_connections_total") - \
            m0.value("remora_downstream_connections_total") == 3
    finally:
        for c in conns:
            c.close()
    assert wait_for(lambda: metrics(mproxy.admin_port).value(
        "remora_downstream_connections") == 0, timeout=2)
    assert m0.types.get("remora_downstream_connections") == "gauge"
    assert m0.types.get("remora_downstream_connections_total") == "counter"


def test_byte_counters_match_the_wire(mproxy):
    cases = [("alpha", build_request("GET", "/echo/x")),
             ("alpha", build_request("POST", "/echo", body=b"b" * 5000)),
             ("alpha", build_request("PUT", "/echo", headers=[("Transfer-Encoding", "chunked")],
                                     body=b"7d0\r\n" + b"c" * 2000 + b"\r\n0\r\n\r\n")),
             ("beta", build_request("GET", "/status/404")),
             ("slow", build_request("GET", "/delay?ms=1", version="HTTP/1.0", host=None))]
    m0 = metrics(mproxy.admin_port)
    sent = {}
    received = {}
    for route, raw in cases:
        with HttpConn(mproxy.port) as c:
            c.send(raw)
            r = c.read_response()
            assert r.complete and r.status in (200, 404), r
            sent[route] = sent.get(route, 0) + len(raw)
            received[route] = received.get(route, 0) + c.received - len(c.buf)
    want = {"alpha": 3, "beta": 1, "slow": 1}

    def counts(m):
        return {rt: m.total("remora_requests_total", route=rt) for rt in want}

    c0 = counts(m0)
    wait_for(lambda: all(v - c0[k] >= want[k] for k, v in
                         counts(metrics(mproxy.admin_port)).items()), timeout=3)
    m = metrics(mproxy.admin_port)
    for route in want:
        got_in = m.value("remora_request_bytes_total", route=route) - \
            m0.value("remora_request_bytes_total", route=route)
        got_out = m.value("remora_response_bytes_total", route=route) - \
            m0.value("remora_response_bytes_total", route=route)
        assert (got_in, got_out) == (sent[route], received[route]), \
            "route %s: counted (in %d, out %d), on the wire (in %d, out %d)" % (
                route, got_in, got_out, sent[route], received[route])


# ---- failures -----------------------------------------------------------------------------

def test_connect_failures_refused(mproxy):
    m0 = metrics(mproxy.admin_port)
    for _ in range(3):
        r = http(mproxy.port, "GET", "/broken/x")
        assert r.status == 502 and r.header("x-remora-error") == "connect_refused", r
    m = wait_delta(mproxy.admin_port, req_counts(m0), {("broken", "5xx"): 3})
    name = "remora_upstream_connect_failures_total"
    got = m.value(name, 0, upstream="down", reason="refused") - \
        m0.value(name, 0, upstream="down", reason="refused")
    assert got == 3, m.series(name)
    for l, v in m.series(name):
        assert set(l) == {"upstream", "reason"} and l["reason"] in (
            "refused", "timeout", "error", "tls"), l
    assert m.total(name, upstream="app") == 0
    assert m.types.get(name) == "counter"


def test_client_abort_counted_as_code_none(mproxy):
    """A request whose client went away before any status was sent is counted with
    code="none"."""
    m0 = metrics(mproxy.admin_port)
    s = socket.create_connection(("127.0.0.1", mproxy.port), timeout=5)
    s.sendall(build_request("GET", "/delay?ms=800"))
    time.sleep(0.2)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()  # RST
    m = wait_delta(mproxy.admin_port, req_counts(m0), {("slow", "none"): 1}, timeout=3)
    got = delta(req_counts(m), req_counts(m0))
    assert got == {("slow", "none"): 1}, got
    assert m.value("remora_requests_in_flight", route="slow") == 0


# ---- build info and process collector -----------------------------------------------------

def test_build_info(mproxy):
    out = subprocess.run([str(BIN), "--version"], capture_output=True, timeout=10).stdout
    lines = out.decode().splitlines()
    version = lines[0].split()[1]
    m = metrics(mproxy.admin_port)
    info = m.series("remora_build_info")
    assert len(info) == 1, info
    labels, value = info[0]
    assert value == 1 and set(labels) == {"version", "commit"}, info
    assert labels["version"] == version, (labels, lines)
    commit = [l.split()[1] for l in lines[1:] if l.startswith("commit ")]
    assert labels["commit"] and (not commit or labels["commit"] == commit[0]), (labels, lines)
    assert m.types.get("remora_build_info") == "gauge"


def test_process_metrics(mproxy):
    m = metrics(mproxy.admin_port)
    want = {"process_cpu_seconds_total": "counter", "process_resident_memory_bytes": "gauge",
            "process_virtual_memory_bytes": "gauge", "process_open_fds": "gauge",
            "process_max_fds": "gauge", "process_start_time_seconds": "gauge"}
    for name, typ in want.items():
        assert m.types.get(name) == typ, (name, m.types.get(name))
        assert len(m.series(name)) == 1, (name, m.series(name))
    v = {name: m.value(name) for name in want}
    assert 0 <= v["process_cpu_seconds_total"] < 600, v
    rss = mproxy.rss_kib() * 1024
    assert 0.5 * rss <= v["process_resident_memory_bytes"] <= 2 * rss + (4 << 20), (v, rss)
    assert v["process_virtual_memory_bytes"] >= v["process_resident_memory_bytes"], v
    nfds = len(os.listdir("/proc/%d/fd" % mproxy.pid))
    assert abs(v["process_open_fds"] - nfds) <= 3, (v, nfds)
    with open("/proc/%d/limits" % mproxy.pid) as f:
        soft = next(l.split()[3] for l in f if l.startswith("Max open files"))
    assert v["process_max_fds"] == float(soft), (v, soft)
    now = time.time()
    assert now - 60 < v["process_start_time_seconds"] <= now + 1, (v, now)
    # Unix seconds: boot time plus the process's start in clock ticks since boot.
    with open("/proc/stat") as f:
        btime = next(int(l.split()[1]) for l in f if l.startswith("btime "))
    with open("/proc/%d/stat" % mproxy.pid) as f:
        ticks = int(f.read().rsplit(")", 1)[1].split()[19])
    start = btime + ticks / os.sysconf("SC_CLK_TCK")
    assert abs(v["process_start_time_seconds"] - start) < 2, (v, start)
