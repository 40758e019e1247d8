# SPDX-License-Identifier: Apache-2.0
"""13: limits.headers_with_underscores (allow | drop | reject; default drop). A request field
whose name holds '_' (Transfer_Encoding, X_Forwarded_For) reads as Transfer-Encoding or
X-Forwarded-For to a CGI-style app (PHP-FPM, WSGI environ): for each mode, over HTTP/1.1 and
h2c clients, the app receives exactly what the mode says (the field absent for drop, nothing at
all and a 400 header_underscore for reject, the field as sent for allow), request trailers
follow the same rule, responses never do; the config dump shows the key and --check refuses a
bad value."""

import json

import pytest

from h2util import H2Client
from helpers import HttpConn, build_request, chunked_body, http, http_get_body, metrics, wait_for

BODY = b"hello"
SPOOF = [("Transfer_Encoding", "chunked"), ("X_Forwarded_For", "6.6.6.6")]
MODES = ["allow", "drop", "reject"]
DROPPED = 'remora_downstream_headers_dropped_total'


def forwarded_since(up, before):
    """Requests the app received since before (upstream.stats() counts its own asks too)."""
    return up.stats()["requests"] - before - 1


def names(doc):
    return [k.lower() for k, _ in doc["headers"]]


def send_h1(port, headers, body=BODY):
    """One POST with a Content-Length body and the given extra fields; returns the response
    and whether the connection closed after it."""
    with HttpConn(port) as c:
        c.send(build_request("POST", "/echo", headers=[("Host", "a")] + headers, body=body))
        r = c.read_response()
        return r, c.is_closed(wait=1.0)


def send_h2(port, headers, body=BODY):
    with H2Client(port) as c:
        r = c.get("/echo", method="POST", headers=headers + [("content-length", str(len(body)))],
                  body=body)
        return r, None


SEND = {"h1": send_h1, "h2c": send_h2}


@pytest.fixture(params=MODES)
def mode(request):
    return request.param


@pytest.fixture
def proxied(remora, upstream, mode):
    return remora(upstream, limits={"headers_with_underscores": mode})


@pytest.mark.parametrize("client", ["h1", "h2c"])
def test_request_fields_by_mode(proxied, upstream, mode, client):
    before = upstream.stats()["requests"]
    r, closed = SEND[client](proxied.port, SPOOF + [("X-Plain", "1")])
    m = metrics(proxied.admin_port)
    if mode == "reject":
        assert r.status == 400, r
        assert r.header("x-remora-error") == "header_underscore", r
        if client == "h1":
            assert closed, "connection left open after 400 header_underscore"
        assert forwarded_since(upstream, before) == 0, "the app received a rejected request"
        assert m.total("remora_requests_total", route="", code="4xx") == 1, m.series(
            "remora_requests_total")
        assert m.value(DROPPED, reason="underscore") == 0
        return
    assert r.status == 200, r
    doc = r.json()
    assert doc["body_len"] == len(BODY) and not doc["body_chunked"], doc
    got = names(doc)
    assert "x-plain" in got
    # remora's own X-Forwarded-For carries the client address only, never the spoofed one.
    assert [v for k, v in doc["headers"] if k.lower() == "x-forwarded-for"] == ["127.0.0.1"]
    if mode == "drop":
        assert "transfer_encoding" not in got and "x_forwarded_for" not in got, doc
        assert m.value(DROPPED, reason="underscore") == 2
    else:
        assert "transfer_encoding" in got and "x_forwarded_for" in got, doc
        assert [v for k, v in doc["headers"] if k.lower() == "x_forwarded_for"] == ["6.6.6.6"]
        assert m.value(DROPPED, reason="underscore") == 0
    assert forwarded_since(upstream, before) == 1


def test_default_is_drop(remora, upstream):
    """Left out, the setting is drop (nginx's default; conf/README.md says why)."""
    p = remora(upstream)
    for send in SEND.values():
        r, _ = send(p.port, SPOOF)
        assert r.status == 200, r
        got = names(r.json())
        assert "transfer_encoding" not in got and "x_forwarded_for" not in got, r.json()
    st, body = http_get_body(p.admin_port, "/config")
    assert st == 200 and json.loads(body)["limits"]["headers_with_underscores"] == "drop"


def test_config_dump_shows_mode(proxied, mode):
    st, body = http_get_body(proxied.admin_port, "/config")
    assert st == 200, body
    assert json.loads(body)["limits"]["headers_with_underscores"] == mode


@pytest.mark.parametrize("value", ["Drop", "off", "true", "[drop]"])
def test_check_refuses_bad_value(run_remora, tmp_path, value):
    cfg = tmp_path / "r.yaml"
    cfg.write_text("limits:\n  headers_with_underscores: %s\n" % value)
    p = run_remora("--check", "-c", cfg)
    out = p.stdout.decode() + p.stderr.decode()
    assert p.returncode == 1, out
    assert "%s:2:29:" % cfg in out and "headers_with_underscores" in out, out


def h1_trailers(port, trailers):
    with HttpConn(port) as c:
        c.send(build_request("POST", "/echo", headers=[("Host", "a"),
                                                       ("Transfer-Encoding", "chunked")],
                             body=chunked_body(BODY, trailers=trailers)))
        return c.read_response()


def h2_trailers(port, trailers):
    with H2Client(port) as c:
        return c.get("/echo", method="POST", body=BODY, trailers=trailers)


@pytest.mark.parametrize("client", ["h1", "h2c"])
def test_request_trailers_by_mode(proxied, upstream, mode, client):
    trl = [("X_Forwarded_For", "6.6.6.6"), ("X-Sum", "abc")]
    before = upstream.stats()["requests"]
    r = (h1_trailers if client == "h1" else h2_trailers)(proxied.port, trl)
    if mode == "reject":
        # The head went to the app before the trailers came: the request is cut there, the
        # client gets remora's 400 (the app's answer never reaches it).
        assert r.status == 400 and r.header("x-remora-error") == "header_underscore", r
        return
    assert r.status == 200, r
    got = {k.lower(): v for k, v in r.json()["trailers"]}
    assert got.get("x-sum") == "abc", r.json()
    if mode == "drop":
        assert "x_forwarded_for" not in got, got
        assert wait_for(lambda: metrics(proxied.admin_port).value(
            DROPPED, reason="underscore") == 1)
    else:
        assert got.get("x_forwarded_for") == "6.6.6.6", got
    assert forwarded_since(upstream, before) == 1


@pytest.mark.parametrize("client", ["h1", "h2c"])
def test_responses_untouched(remora, upstream, client):
    """The app's own fields with '_' reach the client under every mode (reject here)."""
    p = remora(upstream, limits={"headers_with_underscores": "reject"})
    if client == "h1":
        r = http(p.port, "GET", "/echo?set=X_App:1")
    else:
        with H2Client(p.port) as c:
            r = c.get("/echo?set=X_App:1")
    assert r.status == 200 and r.header("x_app") == "1", r


@pytest.mark.parametrize("client", ["h1", "h2c"])
def test_h2c_upstream_by_mode(remora, h2_upstream, mode, client):
    """Toward an h2c app (the HTTP/2 request writer, not the HTTP/1.1 one) the rule is the
    same, in the head and in the trailers."""
    p = remora(h2_upstream, upstream_opts={"protocol": "h2c"},
               limits={"headers_with_underscores": mode})
    trl = [("X_Trl", "1"), ("X-Sum", "abc")]
    if client == "h1":
        with HttpConn(p.port) as c:
            c.send(build_request("POST", "/json", headers=[("Host", "a"),
                                                           ("Transfer-Encoding", "chunked")]
                                 + SPOOF, body=chunked_body(BODY, trailers=trl)))
            r = c.read_response()
    else:
        with H2Client(p.port) as c:
            r = c.get("/json", method="POST", headers=SPOOF, body=BODY, trailers=trl)
    if mode == "reject":
        assert r.status == 400 and r.header("x-remora-error") == "header_underscore", r
        return
    assert r.status == 200, r
    doc = r.json()
    assert doc["body_len"] == len(BODY), doc
    got = [k for k, _ in doc["headers"]]
    trailers = [k for k, _ in doc["trailers"]]
    assert "x-sum" in trailers, doc
    if mode == "drop":
        assert "transfer_encoding" not in got and "x_forwarded_for" not in got, doc
        assert "x_trl" not in trailers, doc
    else:
        assert "transfer_encoding" in got and "x_forwarded_for" in got, doc
        assert "x_trl" in trailers, doc
