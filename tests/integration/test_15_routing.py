# SPDX-License-Identifier: Apache-2.0
"""15: the router: host (exact and *.suffix), path (exact) and path_prefix, methods, first
match wins, and 404 no_route when nothing matches (the no_route response itself, and the
connection it leaves, are test_23_matrix.py's test_no_route)."""

import pytest

from helpers import http


def two_upstreams(upstream_factory):
    a = upstream_factory("a")
    b = upstream_factory("b")
    ups = []
    for u in (a, b):
        ups.append({"name": u.name, "endpoints": [u.addr], "connect_timeout": "1s",
                    "idle_timeout": "2s", "max_connections": 64})
    return a, b, ups


@pytest.fixture
def routed(remora, upstream_factory):
    a, b, ups = two_upstreams(upstream_factory)
    routes = [
        {"name": "api", "match": {"host": "api.example.com", "path_prefix": "/api/",
                                  "methods": ["GET", "POST"]}, "upstream": "a", "timeout": "5s"},
        {"name": "wild", "match": {"host": "*.example.com"}, "upstream": "b", "timeout": "5s"},
        {"name": "exact", "match": {"path": "/exact"}, "upstream": "a", "timeout": "5s"},
        {"name": "prefix", "match": {"path_prefix": "/pre/"}, "upstream": "b", "timeout": "5s"},
    ]
    return remora(upstreams=ups, routes=routes)


def who(port, method, target, host):
    r = http(port, method, target, headers=[("Host", host)])
    return r.status, r.header("x-upstream-name"), r.header("x-remora-error")


CASES = [
    # method, target, host, expected (status, upstream name or error)
    ("GET", "/api/users", "api.example.com", (200, "a")),
    ("POST", "/api/users", "api.example.com", (200, "a")),
    ("GET", "/api/users?x=1", "api.example.com", (200, "a")),
    ("GET", "/api/users", "API.Example.COM", (200, "a")),
    ("DELETE", "/api/users", "api.example.com", (200, "b")),   # method mismatch -> wild
    ("GET", "/apix", "api.example.com", (200, "b")),          # prefix mismatch -> wild
    ("GET", "/anything", "foo.example.com", (200, "b")),
    ("GET", "/exact", "example.com", (200, "a")),              # bare suffix is not *.suffix
    ("GET", "/exact?q=1", "other.test", (200, "a")),           # query is not part of path
    ("GET", "/exact/more", "other.test", (404, "no_route")),
    ("GET", "/exactly", "other.test", (404, "no_route")),
    ("GET", "/pre/x", "other.test", (200, "b")),
    ("GET", "/pre", "other.test", (404, "no_route")),
    ("GET", "/", "other.test", (404, "no_route")),
    ("GET", "/anything", "example.org", (404, "no_route")),
]


@pytest.mark.parametrize("method,target,host,want", CASES,
                         ids=["%s %s %s" % c[:3] for c in CASES])
def test_route_selection(routed, method, target, host, want):
    status, name, err = who(routed.port, method, target, host)
    if want[0] == 200:
        assert (status, name) == want, (status, name, err)
    else:
        assert (status, err) == want, (status, name, err)


def test_first_match_wins(remora, upstream_factory):
    a, b, ups = two_upstreams(upstream_factory)
    routes = [
        {"name": "first", "match": {"path_prefix": "/x/"}, "upstream": "a", "timeout": "5s"},
        {"name": "second", "match": {"path_prefix": "/x/y/"}, "upstream": "b", "timeout": "5s"},
        {"name": "rest", "match": {"path_prefix": "/"}, "upstream": "b", "timeout": "5s"},
    ]
    p = remora(upstreams=ups, routes=routes)
    assert who(p.port, "GET", "/x/y/z", "h")[:2] == (200, "a")
    assert who(p.port, "GET", "/other", "h")[:2] == (200, "b")
    logs = p.access_logs(at_least=2)
    assert [e.get("route") for e in logs[:2]] == ["first", "rest"], logs
