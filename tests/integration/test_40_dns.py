# SPDX-License-Identifier: Apache-2.0
"""40: upstream endpoint names resolved by remora itself (c-ares in the event loops, issue 7).

A dnsmasq on 127.0.0.1 (dnsutil.Dnsmasq, answering from a hosts file the test rewrites, TTL
--local-ttl) is remora's only resolver through `dns.resolvers`. Every A/AAAA answer becomes an
endpoint; the TTL (clamped by min_ttl/max_ttl) decides the next lookup; a changed answer moves
traffic without errors and lets connections to removed addresses drain; failures keep the last
good set (stale_ttl); before any answer requests wait queue_timeout, then 503
`x-remora-error: dns`, and /readyz is 503 naming the upstream. A lookup in progress never
blocks the event loop. Metrics: remora_dns_lookups_total{upstream,result},
remora_dns_lookup_duration_seconds{upstream}, remora_upstream_endpoints{upstream}.

Two test apps on 127.0.0.1 and 127.0.0.2 (same port) tell the answers apart by their
x-upstream-name."""

import threading
import time

import pytest

from dnsutil import (BoundUpstreamsFactory, DnsmasqFactory, LoadRun, SlowDnsFactory, query)
from helpers import HttpConn, default_config, free_port, http, http_get_body, metrics, wait_for

NAME = "app.test"
BAD_RESULTS = ("nxdomain", "servfail", "timeout", "empty", "error", "no_resolvers")


@pytest.fixture
def dnsmasq(tmp_path):
    """Factory: dnsmasq(records=[(addr, name), ...], ttl=1) -> a started dnsutil.Dnsmasq."""
    with DnsmasqFactory(tmp_path) as make:
        yield make


@pytest.fixture
def slow_dns():
    """Factory: slow_dns(records={name: [addr]}, delays={name: seconds}, ttl=1)."""
    with SlowDnsFactory() as make:
        yield make


@pytest.fixture
def bound_upstreams(tmp_path):
    """Factory: bound_upstreams([(host, name), ...]) -> upstream.py apps on one common port."""
    with BoundUpstreamsFactory(tmp_path) as make:
        yield make


def dns_remora(remora, resolver, endpoints=(), dns=None, ready=True, upstream_opts=None,
               upstreams=None, routes=None, workers=1):
    """remora with a `dns:` section using resolver (None: no dns section at all)."""
    port = free_port()
    admin = free_port()
    while admin == port:
        admin = free_port()
    cfg = default_config(port, admin, list(endpoints), workers=workers,
                         upstream_opts=upstream_opts, upstreams=upstreams, routes=routes)
    if resolver is not None or dns is not None:
        d = {"min_ttl": "1s", "max_ttl": "10s", "timeout": "500ms", "attempts": 1}
        if resolver is not None:
            d["resolvers"] = [resolver]
        d.update(dns or {})
        cfg["dns"] = d
    return remora(config=cfg, ready=ready)


def one_upstream(name, endpoints, **opts):
    """(upstreams, routes) for one upstream called name taking every request."""
    up = {"name": name, "endpoints": list(endpoints), "connect_timeout": "1s",
          "idle_timeout": "2s", "max_connections": 64}
    up.update(opts)
    return [up], [{"name": "default", "match": {"path_prefix": "/"}, "upstream": name,
                   "timeout": "5s"}]


def two_apps(bound_upstreams):
    """Apps "a" on 127.0.0.1:P and "b" on 127.0.0.2:P."""
    return bound_upstreams([("127.0.0.1", "a"), ("127.0.0.2", "b")])


def get(p, path="/echo", timeout=5.0):
    return http(p.port, "GET", path, timeout=timeout)


def names_of(p, n, path="/echo"):
    out = {}
    for _ in range(n):
        r = get(p, path)
        assert r.status == 200 and r.complete, r
        k = r.header("x-upstream-name")
        out[k] = out.get(k, 0) + 1
    return out


def readyz(p):
    return http_get_body(p.admin_port, "/readyz", timeout=1.0)


def healthz(p):
    return http_get_body(p.admin_port, "/healthz", timeout=1.0)[0]


def lookups(p, upstream="app", result=None):
    m = metrics(p.admin_port)
    if result is None:
        return m.total("remora_dns_lookups_total", upstream=upstream)
    return m.total("remora_dns_lookups_total", upstream=upstream, result=result)


def failed_lookups(p, upstream="app"):
    m = metrics(p.admin_port)
    return sum(v for l, v in m.series("remora_dns_lookups_total", upstream=upstream)
               if l.get("result") != "success")


def endpoints_gauge(p, upstream="app"):
    return metrics(p.admin_port).value("remora_upstream_endpoints", upstream=upstream)


# ---- the helpers themselves (no remora) --------------------------------------------------------

@pytest.mark.no_remora
def test_dnsmasq_fixture(dnsmasq):
    d = dnsmasq([("127.0.0.1", NAME), ("127.0.0.2", NAME), ("::1", "v6only.test")], ttl=3)
    for tcp in (False, True):
        a = d.query(NAME, "A", tcp=tcp)
        assert a.rcode == "NOERROR" and a.addrs == ["127.0.0.1", "127.0.0.2"], a
        assert a.ttls == [3], a
    a = d.query(NAME, "AAAA")
    assert a.rcode == "NOERROR" and a.answers == [], a  # NODATA
    a = d.query("v6only.test", "AAAA")
    assert a.addrs == ["::1"], a
    assert d.query("v6only.test", "A").answers == []
    assert d.query("missing.test").rcode == "NXDOMAIN"
    assert d.queries(NAME, "A") == 2 and d.queries(NAME) == 3
    # rewritten hosts file + SIGHUP
    d.set_records([("127.0.0.2", NAME)])
    assert d.query(NAME).addrs == ["127.0.0.2"]
    d.set_records([])
    assert d.query(NAME).rcode == "NXDOMAIN"
    # outage and restart on the same port
    port = d.port
    d.stop()
    with pytest.raises(OSError):
        query(port, NAME, timeout=0.5)
    d.set_records([("127.0.0.3", NAME)])
    d.start()
    assert d.port == port and d.query(NAME).addrs == ["127.0.0.3"]


@pytest.mark.no_remora
def test_slow_dns_fixture(slow_dns):
    s = slow_dns({"slow.test": ["127.0.0.1", "::1"], "quick.test": ["127.0.0.2"]},
                 delays={"slow.test": 0.5})
    t0 = time.monotonic()
    a = query(s.port, "slow.test", "A")
    assert 0.45 <= time.monotonic() - t0 < 1.5 and a.addrs == ["127.0.0.1"], a
    assert query(s.port, "slow.test", "AAAA").addrs == ["::1"]
    t0 = time.monotonic()
    assert query(s.port, "quick.test").addrs == ["127.0.0.2"]
    assert query(s.port, "nope.test").rcode == "NXDOMAIN"
    assert time.monotonic() - t0 < 0.3
    q = s.queries("slow.test")
    assert len(q) == 2 and all(done - got >= 0.45 for _, _, got, done in q), q


# ---- resolution and balancing ----------------------------------------------------------------

def test_two_a_records_both_get_traffic(remora, dnsmasq, bound_upstreams):
    a, b = two_apps(bound_upstreams)
    d = dnsmasq([("127.0.0.1", NAME), ("127.0.0.2", NAME)], ttl=1)
    p = dns_remora(remora, d.resolver, ["%s:%d" % (NAME, a.port)])
    seen = names_of(p, 40)
    assert set(seen) == {"a", "b"}, seen
    # round robin (the default): an even split, give or take a re-resolution in between
    assert min(seen.values()) >= 15, seen
    assert a.app_requests() >= 15 and b.app_requests() >= 15
    # access log / metrics name every endpoint "ip:port"
    ups = {e["upstream"] for e in p.access_logs(at_least=40)}
    assert ups == {"127.0.0.1:%d" % a.port, "127.0.0.2:%d" % b.port}, ups

    assert d.queries(NAME, "A") >= 1
    m = metrics(p.admin_port)
    assert m.value("remora_upstream_endpoints", upstream="app") == 2, \
        m.series("remora_upstream_endpoints")
    assert m.types.get("remora_dns_lookups_total") == "counter", m.types
    assert m.total("remora_dns_lookups_total", upstream="app", result="success") > 0, \
        m.series("remora_dns_lookups_total")
    assert m.types.get("remora_dns_lookup_duration_seconds") == "histogram", m.types
    count = m.value("remora_dns_lookup_duration_seconds_count", upstream="app")
    assert count is not None and count > 0, m.series("remora_dns_lookup_duration_seconds_count")
    inf = m.series("remora_dns_lookup_duration_seconds_bucket", upstream="app", le="+Inf")
    assert len(inf) == 1 and inf[0][1] == count, inf
    assert all(l.get("result") in ("success",) + BAD_RESULTS
               for l, _ in m.series("remora_dns_lookups_total")), \
        m.series("remora_dns_lookups_total")


def test_two_workers_share_the_answers(remora, dnsmasq, bound_upstreams):
    """Two workers: both answers get traffic and the endpoint gauge counts each endpoint once
    (2, not 2 per worker)."""
    a, b = two_apps(bound_upstreams)
    d = dnsmasq([("127.0.0.1", NAME), ("127.0.0.2", NAME)], ttl=1)
    p = dns_remora(remora, d.resolver, ["%s:%d" % (NAME, a.port)], workers=2)
    seen = names_of(p, 40)
    assert set(seen) == {"a", "b"}, seen
    assert endpoints_gauge(p) == 2, metrics(p.admin_port).series("remora_upstream_endpoints")


def test_least_request_uses_every_answer(remora, dnsmasq, bound_upstreams):
    a, b = two_apps(bound_upstreams)
    d = dnsmasq([("127.0.0.1", NAME), ("127.0.0.2", NAME)], ttl=1)
    p = dns_remora(remora, d.resolver, ["%s:%d" % (NAME, a.port)],
                   upstream_opts={"lb": "least_request"})
    load = LoadRun(p.port, "/delay?ms=20", conns=8, seconds=1.5).run()
    assert not load.errors and not load.bad(), load.summary()
    seen = load.names()
    assert set(seen) == {"a", "b"} and min(seen.values()) >= len(load.results) // 5, seen
    assert endpoints_gauge(p) == 2


def test_names_and_numbers_mix(remora, dnsmasq, bound_upstreams):
    a, b = two_apps(bound_upstreams)
    d = dnsmasq([("127.0.0.1", NAME)], ttl=1)
    p = dns_remora(remora, d.resolver, ["%s:%d" % (NAME, a.port), b.addr])
    seen = names_of(p, 20)
    assert set(seen) == {"a", "b"} and min(seen.values()) >= 6, seen
    assert endpoints_gauge(p) == 2  # the resolved one and the static one


def test_localhost_is_a_name(remora, upstream):
    """No dns section: c-ares reads /etc/resolv.conf and /etc/hosts; "localhost" is a name."""
    p = dns_remora(remora, None, ["localhost:%d" % upstream.port])
    assert get(p).status == 200
    assert lookups(p, result="success") > 0
    assert endpoints_gauge(p) >= 1


# ---- TTL --------------------------------------------------------------------------------------

def test_ttl_expiry_moves_traffic_without_errors(remora, dnsmasq, bound_upstreams):
    """TTL 1 s, min_ttl 1 s: the answer changes from A to B under keep-alive load (requests of
    30 ms, so some are in flight at the change, and one of 3.5 s on A across the change): no
    errors, B gets the traffic within about a TTL and a lookup, A gets no new requests after
    that, the long request completes on A and A's connections drain."""
    a, b = two_apps(bound_upstreams)
    d = dnsmasq([("127.0.0.1", NAME)], ttl=1)
    p = dns_remora(remora, d.resolver, ["%s:%d" % (NAME, a.port)],
                   dns={"min_ttl": "1s", "max_ttl": "10s"})
    assert names_of(p, 4) == {"a": 4}
    long_req = {}

    def long_request():  # in flight on A across the change and A's removal
        try:
            long_req["r"] = http(p.port, "GET", "/delay?ms=3500", timeout=10.0)
        except OSError as e:
            long_req["err"] = repr(e)

    th = threading.Thread(target=long_request, daemon=True)
    load = LoadRun(p.port, "/delay?ms=30", conns=8, seconds=5.5).start()
    th.start()
    time.sleep(1.5)
    d.set_records([("127.0.0.2", NAME)])
    t_change = time.monotonic()
    load.join()
    th.join(10)
    r = long_req.get("r")
    assert r is not None and r.status == 200 and r.complete, long_req
    assert r.header("x-upstream-name") == "a", r
    assert not load.errors and not load.bad(), load.summary()
    before = load.names(until=t_change - 0.1)
    assert set(before) == {"a"}, before
    late = load.names(since=t_change + 2.5)
    assert set(late) == {"b"} and late["b"] >= 50, \
        "traffic still reaching the removed address 2.5 s after the change: %r" % late
    first_b = min(t1 for t1, _, _, n, _ in load.results if n == "b")
    assert first_b - t_change < 2.5, "B got its first request %.2fs after the change" % (
        first_b - t_change)
    # A: nothing after the load except this stats query, and its connections drain
    a_req = a.app_requests()
    assert get(p).header("x-upstream-name") == "b"
    assert a.app_requests() == a_req
    assert wait_for(lambda: a.stats()["conns_open"] == 1, timeout=5.0), \
        "connections to the removed address stay open: %r" % a.stats()
    assert endpoints_gauge(p) == 1


def test_ttl_clamped_by_min_and_max(remora, dnsmasq, upstream):
    """TTL 1 s with min_ttl 2 s: about one A query per 2 s; TTL 3600 s with max_ttl 1 s: about
    one per second."""
    d_min = dnsmasq([("127.0.0.1", NAME)], ttl=1)
    d_max = dnsmasq([("127.0.0.1", NAME)], ttl=3600)
    ep = ["%s:%d" % (NAME, upstream.port)]
    p_min = dns_remora(remora, d_min.resolver, ep, dns={"min_ttl": "2s", "max_ttl": "10s"})
    p_max = dns_remora(remora, d_max.resolver, ep, dns={"min_ttl": "500ms", "max_ttl": "1s"})
    n_min, n_max = d_min.queries(NAME, "A"), d_max.queries(NAME, "A")
    time.sleep(6.0)
    got_min = d_min.queries(NAME, "A") - n_min
    got_max = d_max.queries(NAME, "A") - n_max
    assert 2 <= got_min <= 4, "%d A queries in 6 s with TTL 1 s and min_ttl 2 s" % got_min
    assert 4 <= got_max <= 8, "%d A queries in 6 s with TTL 3600 s and max_ttl 1 s" % got_max
    assert get(p_min).status == 200 and get(p_max).status == 200


# ---- failures -----------------------------------------------------------------------------------

def test_dns_outage_keeps_last_good_set(remora, dnsmasq, bound_upstreams):
    """dnsmasq stopped: both endpoints keep serving for several TTLs, the failed lookups are
    counted, /readyz stays 200; when dnsmasq is back (with a new answer) remora follows it
    within the retry backoff (capped by max_ttl 2 s)."""
    a, b = two_apps(bound_upstreams)
    d = dnsmasq([("127.0.0.1", NAME), ("127.0.0.2", NAME)], ttl=1)
    p = dns_remora(remora, d.resolver, ["%s:%d" % (NAME, a.port)],
                   dns={"min_ttl": "1s", "max_ttl": "2s", "timeout": "300ms", "attempts": 1})
    assert set(names_of(p, 6)) == {"a", "b"}
    failed0 = failed_lookups(p)
    d.stop()
    load = LoadRun(p.port, "/echo", conns=4, seconds=4.5).start()
    load.join()
    assert not load.errors and not load.bad(), load.summary()
    late = load.names(since=load.t0 + 3.0)
    assert set(late) == {"a", "b"}, "the last good set is not served during the outage: %r" \
        % late
    assert failed_lookups(p) > failed0, metrics(p.admin_port).series("remora_dns_lookups_total")
    assert endpoints_gauge(p) == 2
    st, body = readyz(p)
    assert st == 200, "/readyz %r while serving the last good set" % ((st, body),)
    assert healthz(p) == 200

    ok0 = lookups(p, result="success")
    d.set_records([("127.0.0.2", NAME)])
    d.start()
    assert wait_for(lambda: lookups(p, result="success") > ok0, timeout=5.0), \
        "no successful lookup within 5 s of dnsmasq's return"
    assert wait_for(lambda: endpoints_gauge(p) == 1, timeout=2.0)
    assert names_of(p, 6) == {"b": 6}


def test_nxdomain_after_answers_keeps_last_good_set(remora, dnsmasq, bound_upstreams):
    a, b = two_apps(bound_upstreams)
    d = dnsmasq([("127.0.0.1", NAME), ("127.0.0.2", NAME)], ttl=1)
    p = dns_remora(remora, d.resolver, ["%s:%d" % (NAME, a.port)],
                   dns={"min_ttl": "1s", "max_ttl": "2s"})
    assert set(names_of(p, 6)) == {"a", "b"}
    nx0 = lookups(p, result="nxdomain")
    d.set_records([])
    load = LoadRun(p.port, "/echo", conns=4, seconds=3.0).run()
    assert not load.errors and not load.bad(), load.summary()
    assert set(load.names(since=load.t0 + 2.0)) == {"a", "b"}, load.names()
    assert lookups(p, result="nxdomain") > nx0, \
        metrics(p.admin_port).series("remora_dns_lookups_total")
    assert endpoints_gauge(p) == 2
    assert readyz(p)[0] == 200


def test_stale_set_dropped_after_stale_ttl(remora, dnsmasq, upstream):
    """stale_ttl 2 s: once the last good answer is older than that and lookups still fail, the
    upstream has no endpoint: 503 `x-remora-error: dns` and /readyz 503 naming it."""
    d = dnsmasq([("127.0.0.1", NAME)], ttl=1)
    ups, routes = one_upstream("stale-app", ["%s:%d" % (NAME, upstream.port)],
                               queue_timeout="300ms")
    p = dns_remora(remora, d.resolver, upstreams=ups, routes=routes,
                   dns={"min_ttl": "1s", "max_ttl": "1s", "stale_ttl": "2s",
                        "timeout": "300ms"})
    assert get(p).status == 200
    d.stop()
    t_stop = time.monotonic()
    assert get(p).status == 200  # stale, still served
    assert wait_for(lambda: endpoints_gauge(p, "stale-app") == 0, timeout=6.0), \
        "the stale set is still in use 6 s into an outage with stale_ttl 2s"
    # the last good answer is at most max_ttl (1 s) older than the stop
    assert time.monotonic() - t_stop >= 0.9, "the stale set was dropped before stale_ttl"
    r = get(p)
    assert r.status == 503 and r.header("x-remora-error") == "dns", r
    st, body = readyz(p)
    text = body.decode(errors="replace") if isinstance(body, bytes) else str(body)
    assert st == 503, "/readyz %d %r while the upstream has no address left" % (st, text)
    assert any("stale-app" in line for line in text.splitlines()), text
    assert healthz(p) == 200


def test_nxdomain_at_start(remora, dnsmasq, upstream):
    """The name does not exist when remora starts: it starts anyway (/healthz 200), /readyz
    503 names the upstream, requests wait queue_timeout (300 ms) then get 503 `x-remora-error:
    dns`; once the name appears (hosts file + SIGHUP) requests succeed and /readyz is 200."""
    d = dnsmasq([], ttl=1)
    ups, routes = one_upstream("orders-dns", ["late.test:%d" % upstream.port],
                               queue_timeout="300ms")
    p = dns_remora(remora, d.resolver, dns={"min_ttl": "1s", "max_ttl": "2s"},
                   upstreams=ups, routes=routes, ready=False)
    assert wait_for(lambda: healthz(p) == 200, timeout=5.0), "/healthz never 200"
    assert p.alive()
    st, body = readyz(p)
    text = body.decode(errors="replace") if isinstance(body, bytes) else str(body)
    assert st == 503, (st, text)
    assert any("orders-dns" in line for line in text.splitlines()), text
    for _ in range(2):
        t0 = time.monotonic()
        r = get(p)
        took = time.monotonic() - t0
        assert r.status == 503 and r.header("x-remora-error") == "dns", r
        assert 0.25 <= took < 1.0, "503 dns after %.3fs with queue_timeout 300ms" % took
    assert lookups(p, "orders-dns", "nxdomain") > 0, \
        metrics(p.admin_port).series("remora_dns_lookups_total")
    assert endpoints_gauge(p, "orders-dns") == 0
    assert upstream.stats()["requests"] == 1  # this query itself: the app saw nothing

    d.set_records([("127.0.0.1", "late.test")])
    t0 = time.monotonic()
    assert wait_for(lambda: readyz(p)[0] == 200, timeout=5.0), \
        "/readyz still %r 5 s after the name appeared" % (readyz(p),)
    took = time.monotonic() - t0
    r = get(p)
    assert r.status == 200 and r.complete, r
    assert took < 4.0, took
    assert healthz(p) == 200
    assert endpoints_gauge(p, "orders-dns") == 1


# ---- address families -------------------------------------------------------------------------

@pytest.mark.parametrize("family", ["auto", "v6"])
def test_aaaa_only_name_over_ipv6(remora, dnsmasq, bound_upstreams, family):
    (v6,) = bound_upstreams([("::1", "v6")])
    d = dnsmasq([("::1", "v6only.test")], ttl=1)
    p = dns_remora(remora, d.resolver, ["v6only.test:%d" % v6.port], dns={"family": family})
    r = get(p)
    assert r.status == 200 and r.header("x-upstream-name") == "v6", r
    assert v6.app_requests() == 1
    assert {e["upstream"] for e in p.access_logs(at_least=1)} == {"[::1]:%d" % v6.port}
    assert endpoints_gauge(p) == 1
    assert d.queries("v6only.test", "AAAA") >= 1
    if family == "v6":
        assert d.queries("v6only.test", "A") == 0, "family v6 asked for A records"


def test_aaaa_only_name_with_family_v4(remora, dnsmasq, bound_upstreams):
    (v6,) = bound_upstreams([("::1", "v6")])
    d = dnsmasq([("::1", "v6only.test")], ttl=1)
    p = dns_remora(remora, d.resolver, ["v6only.test:%d" % v6.port], dns={"family": "v4"},
                   upstream_opts={"queue_timeout": "300ms"}, ready=False)
    assert wait_for(lambda: healthz(p) == 200, timeout=5.0)
    r = get(p)
    assert r.status == 503 and r.header("x-remora-error") == "dns", r
    assert readyz(p)[0] == 503
    assert lookups(p, result="empty") > 0, metrics(p.admin_port).series(
        "remora_dns_lookups_total")
    assert d.queries("v6only.test", "AAAA") == 0, "family v4 asked for AAAA records"
    assert v6.app_requests() == 0


@pytest.mark.parametrize("family,want", [("auto", {"v4", "v6"}), ("v4", {"v4"}),
                                         ("v6", {"v6"})])
def test_dual_stack_name_by_family(remora, dnsmasq, bound_upstreams, family, want):
    v4, v6 = bound_upstreams([("127.0.0.1", "v4"), ("::1", "v6")])
    d = dnsmasq([("127.0.0.1", "dual.test"), ("::1", "dual.test")], ttl=1)
    p = dns_remora(remora, d.resolver, ["dual.test:%d" % v4.port], dns={"family": family})
    seen = names_of(p, 12)
    assert set(seen) == want, (family, seen)
    assert endpoints_gauge(p) == len(want)


# ---- resolv.conf semantics ----------------------------------------------------------------------

def test_search_domain_from_localdomain(remora, dnsmasq, upstream, monkeypatch):
    """c-ares takes the search list from LOCALDOMAIN (as from resolv.conf's `search`): the
    single-label endpoint "app" resolves as app.svc.test; dns.resolvers only replaces the
    servers."""
    monkeypatch.setenv("LOCALDOMAIN", "svc.test")
    d = dnsmasq([("127.0.0.1", "app.svc.test")], ttl=1)
    p = dns_remora(remora, d.resolver, ["app:%d" % upstream.port])
    r = get(p)
    assert r.status == 200 and r.complete, r
    assert d.queries("app.svc.test") >= 1, d.log()[-2000:]
    assert lookups(p, result="success") > 0


# ---- never blocking -----------------------------------------------------------------------------

def test_slow_lookup_never_blocks_other_upstreams(remora, slow_dns, upstream):
    """The resolver holds every answer for slow.test 2 s (TTL 1 s, so remora keeps asking).
    On one worker, requests to a numeric upstream keep their latency (p99 < 50 ms) while those
    lookups are in progress; a request to the slow upstream waits for the answer and succeeds."""
    s = slow_dns({"slow.test": ["127.0.0.1"]}, delays={"slow.test": 2.0}, ttl=1)
    ups = [{"name": "slow", "endpoints": ["slow.test:%d" % upstream.port],
            "connect_timeout": "1s", "idle_timeout": "2s", "max_connections": 64,
            "queue_timeout": "5s"},
           {"name": "fast", "endpoints": [upstream.addr], "connect_timeout": "1s",
            "idle_timeout": "2s", "max_connections": 64}]
    routes = [{"name": "slow", "match": {"path_prefix": "/slow"}, "upstream": "slow",
               "timeout": "10s"},
              {"name": "fast", "match": {"path_prefix": "/"}, "upstream": "fast",
               "timeout": "5s"}]
    p = dns_remora(remora, s.resolver, dns={"timeout": "4s", "attempts": 1, "min_ttl": "1s"},
                   upstreams=ups, routes=routes, ready=False, workers=1)
    assert wait_for(lambda: healthz(p) == 200, timeout=3.0)

    slow_result = {}

    def slow_request():
        t0 = time.monotonic()
        try:
            r = http(p.port, "GET", "/slow/echo", timeout=8.0)
            slow_result["r"] = r
        except OSError as e:
            slow_result["err"] = repr(e)
        slow_result["took"] = time.monotonic() - t0

    th = threading.Thread(target=slow_request, daemon=True)
    th.start()
    samples = []  # (t_start, latency)
    end = time.monotonic() + 4.5
    with HttpConn(p.port, timeout=5.0) as c:
        while time.monotonic() < end and len(samples) < 20000:
            t1 = time.monotonic()
            try:
                c.request("GET", "/echo")
                r = c.read_response()
            except OSError as e:
                pytest.fail("a request to the numeric upstream failed after %.2fs while "
                            "slow.test was being resolved (event loop blocked?): %r"
                            % (time.monotonic() - t1, e))
            samples.append((t1, time.monotonic() - t1))
            assert r.status == 200 and r.complete, r
            time.sleep(0.002)
    th.join(10)

    pend = [(got, done if done is not None else float("inf"))
            for _, _, got, done in s.queries("slow.test")]
    assert pend, "remora never asked for slow.test"
    during = sorted(lat for t, lat in samples if any(g <= t < dn for g, dn in pend))
    assert len(during) >= 100, "only %d requests overlapped a pending lookup" % len(during)
    p99 = during[int(len(during) * 0.99) - 1]
    assert p99 < 0.050, "p99 %.1f ms while a lookup was pending (max %.1f ms, n=%d)" % (
        p99 * 1000, during[-1] * 1000, len(during))

    assert "r" in slow_result, slow_result
    assert slow_result["r"].status == 200, slow_result
    assert 1.5 <= slow_result["took"] < 5.0, slow_result
    assert endpoints_gauge(p, "fast") == 1


# ---- health checks of named endpoints --------------------------------------------------------

def test_health_check_of_a_name_resolves_through_dns_resolvers(remora, dnsmasq, upstream):
    """A health-checked upstream given by name: the main thread resolves it asynchronously
    through dns.resolvers (evdns), never through the system resolver (which does not know the
    name), and /readyz turns 200 once the app answers the check."""
    d = dnsmasq([("127.0.0.1", NAME)], ttl=1)
    p = dns_remora(remora, d.resolver, ["%s:%d" % (NAME, upstream.port)], ready=False,
                   upstream_opts={"health_check": {"path": "/echo", "interval": "200ms",
                                                   "timeout": "1s", "rise": 1, "fall": 1}})
    assert wait_for(lambda: http_get_body(p.admin_port, "/readyz", timeout=1.0)[0] == 200,
                    timeout=5), http_get_body(p.admin_port, "/readyz", timeout=1.0)
