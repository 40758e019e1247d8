# SPDX-License-Identifier: Apache-2.0
"""68: readiness from active health checks. With upstreams[].health_check, remora GETs the path
on each endpoint every interval; `fall` consecutive failures (non-2xx, refused, timeout) make
the upstream unhealthy and /readyz 503 with a one-line reason naming it, `rise` consecutive 2xx
make it healthy again. /readyz is 503 until the first successful check; without a health check
it is 200 whatever the app says. /healthz only reflects the event loops and stays 200."""

import time

import pytest

from helpers import free_port, http, http_get_body, metrics, wait_for

UPSTREAM = "orders-svc"  # a distinctive name the /readyz reason must mention
HC = {"path": "/ready", "interval": "200ms", "timeout": "1s", "rise": 2, "fall": 2}


def hc_config(endpoints, health_check=HC, extra_upstreams=()):
    up = {"name": UPSTREAM, "endpoints": list(endpoints), "connect_timeout": "1s",
          "idle_timeout": "2s", "max_connections": 64}
    if health_check is not None:
        up["health_check"] = dict(health_check)
    return dict(workers=1, upstreams=[up] + list(extra_upstreams),
                routes=[{"name": "default", "match": {"path_prefix": "/"},
                         "upstream": UPSTREAM, "timeout": "5s"}])


def readyz(p):
    return http_get_body(p.admin_port, "/readyz", timeout=1.0)


def healthz(p):
    return http_get_body(p.admin_port, "/healthz", timeout=1.0)[0]


def wait_readyz(p, status, timeout):
    """Polls /readyz until it answers status; asserts /healthz stays 200 meanwhile.
    Returns (seconds it took, body)."""
    t0 = time.monotonic()
    end = t0 + timeout
    last = None
    while True:
        last = readyz(p)
        if last[0] == status:
            return time.monotonic() - t0, last[1]
        assert healthz(p) == 200, "/healthz failed while waiting for /readyz %d" % status
        if time.monotonic() >= end:
            pytest.fail("/readyz never answered %d within %.1fs; last %r" % (status, timeout,
                                                                           last))
        time.sleep(0.02)


def wait_checks(upstream, n, timeout=3.0):
    """Waits until the app has answered n more /ready checks; returns the new total."""
    start = upstream.stats()["ready_checks"]
    got = wait_for(lambda: upstream.stats()["ready_checks"] >= start + n, timeout=timeout,
                   interval=0.01)
    assert got, "the app saw fewer than %d health checks in %.1fs" % (n, timeout)
    return upstream.stats()["ready_checks"]


def assert_reason(body):
    text = body.decode(errors="replace") if isinstance(body, bytes) else str(body)
    lines = [l for l in text.splitlines() if l.strip()]
    assert len(lines) == 1, "reason is not one line: %r" % text
    assert UPSTREAM in lines[0], "reason does not name upstream %s: %r" % (UPSTREAM, text)


@pytest.mark.no_remora
def test_upstream_ready_endpoint(upstream):
    """The test app's /ready answers what /_control/ready set (no remora involved)."""
    assert http(upstream.port, "GET", "/ready").status == 200
    assert upstream.set_ready(503)["status"] == 503
    r = http(upstream.port, "GET", "/ready")
    assert r.status == 503 and r.body == b"ready 503\n"
    upstream.set_ready(200, delay_ms=300)
    t0 = time.monotonic()
    assert http(upstream.port, "GET", "/ready").status == 200
    assert time.monotonic() - t0 >= 0.29
    upstream.set_ready(200)
    assert upstream.stats()["ready_checks"] == 3


def test_flips_on_fall_and_rise(remora, upstream):
    p = remora(upstream, **hc_config([upstream.addr]))
    assert readyz(p)[0] == 200
    assert metrics(p.admin_port).value("remora_upstream_healthy", upstream=UPSTREAM) == 1

    # One failed check is not enough with fall: 2 ...
    upstream.set_ready(503)
    wait_checks(upstream, 1)
    st, body = readyz(p)
    assert st == 200, "/readyz went 503 after one failed check (fall: 2): %r" % body
    # ... the second one is.
    took, body = wait_readyz(p, 503, timeout=3.0)
    assert took < 1.5, took
    assert_reason(body)
    assert healthz(p) == 200
    assert metrics(p.admin_port).value("remora_upstream_healthy", upstream=UPSTREAM) == 0

    # Stays unhealthy while the app says so.
    wait_checks(upstream, 3)
    assert readyz(p)[0] == 503

    # One 2xx is not enough with rise: 2 ...
    upstream.set_ready(200)
    wait_checks(upstream, 1)
    assert readyz(p)[0] == 503, "/readyz went 200 after one good check (rise: 2)"
    # ... the second one is.
    took, body = wait_readyz(p, 200, timeout=3.0)
    assert took < 1.5, took
    assert healthz(p) == 200
    assert metrics(p.admin_port).value("remora_upstream_healthy", upstream=UPSTREAM) == 1


def test_checks_every_interval(remora, upstream):
    p = remora(upstream, **hc_config([upstream.addr]))
    n0 = upstream.stats()["ready_checks"]
    time.sleep(1.0)
    n = upstream.stats()["ready_checks"] - n0
    assert 3 <= n <= 8, "%d checks in 1 s with interval 200ms" % n
    assert p.alive()


def test_refused_endpoint_is_unhealthy(remora, upstream_factory):
    app = upstream_factory()
    p = remora(app, **hc_config([app.addr]))
    assert readyz(p)[0] == 200
    app.proc.terminate()  # by PID: the app goes away, connects are refused
    app.proc.wait(5)
    took, body = wait_readyz(p, 503, timeout=3.0)
    assert_reason(body)
    assert healthz(p) == 200
    assert metrics(p.admin_port).value("remora_upstream_healthy", upstream=UPSTREAM) == 0


def test_refused_from_the_start(remora):
    dead = free_port()
    p = remora(endpoints=None, ready=False, **hc_config(["127.0.0.1:%d" % dead]))
    assert wait_for(lambda: healthz(p) == 200, timeout=5), "/healthz never answered 200"
    for _ in range(3):
        st, body = readyz(p)
        assert st == 503, (st, body)
        assert_reason(body)
        time.sleep(0.3)
    assert healthz(p) == 200


def test_timeout_counts_as_failure(remora, upstream):
    hc = dict(HC, timeout="150ms")
    p = remora(upstream, **hc_config([upstream.addr], health_check=hc))
    upstream.set_ready(200, delay_ms=600)
    took, body = wait_readyz(p, 503, timeout=4.0)
    assert_reason(body)
    upstream.set_ready(200)
    wait_readyz(p, 200, timeout=4.0)


def test_unhealthy_before_first_success(remora, upstream):
    upstream.set_ready(503)
    p = remora(upstream, ready=False, **hc_config([upstream.addr]))
    assert wait_for(lambda: healthz(p) == 200, timeout=5), "/healthz never answered 200"
    st, body = readyz(p)
    assert st == 503, (st, body)
    assert_reason(body)
    wait_checks(upstream, 3)
    st, body = readyz(p)
    assert st == 503, (st, body)
    assert_reason(body)
    assert metrics(p.admin_port).value("remora_upstream_healthy", upstream=UPSTREAM) == 0
    upstream.set_ready(200)
    wait_readyz(p, 200, timeout=3.0)
    assert metrics(p.admin_port).value("remora_upstream_healthy", upstream=UPSTREAM) == 1


def test_no_health_check_ready_regardless(remora, upstream):
    upstream.set_ready(503)
    p = remora(upstream, **hc_config([upstream.addr], health_check=None))
    for _ in range(4):
        assert readyz(p)[0] == 200
        time.sleep(0.2)
    assert upstream.stats()["ready_checks"] == 0, "remora checked an upstream without a " \
        "health_check"
    assert metrics(p.admin_port).series("remora_upstream_healthy", upstream=UPSTREAM) == []


def test_only_checked_upstreams_report_health(remora, upstream_factory):
    a = upstream_factory("a")
    b = upstream_factory("b")
    other = {"name": "plain", "endpoints": [b.addr], "connect_timeout": "1s",
             "idle_timeout": "2s", "max_connections": 64}
    p = remora(a, **hc_config([a.addr], extra_upstreams=[other]))
    m = metrics(p.admin_port)
    assert m.value("remora_upstream_healthy", upstream=UPSTREAM) == 1, \
        m.series("remora_upstream_healthy")
    assert m.series("remora_upstream_healthy", upstream="plain") == []
    assert m.types.get("remora_upstream_healthy") == "gauge"
    # Traffic still flows while the check runs.
    assert http(p.port, "GET", "/echo").status == 200
