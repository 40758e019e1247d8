# SPDX-License-Identifier: Apache-2.0
"""87: TLS toward upstreams (upstreams[].tls, protocol h2). Certificates are made in the test
with the openssl CLI (tlsutil: a test CA with server certificates for localhost and 127.0.0.1,
a client certificate, a self-signed certificate). The apps are upstream.py and h2_upstream.py
serving TLS with python's ssl on a second port (conftest.tls_app_factory); each logs the SNI,
ALPN, resumption and client certificate of every TLS connection it accepts.
What is checked: HTTP/1.1 over TLS (ALPN http/1.1) and h2 over TLS (ALPN h2) with bodies both
ways; an app that does not select h2 refused with 502 upstream_tls; verification: a wrong host
name and an untrusted (self-signed) certificate refused with 502 upstream_tls and OpenSSL's
reason in the log, the self-signed one accepted once its CA is configured, and with verify:
false; an address endpoint is verified against its IP SAN and sends no SNI; sni is sent; a
client certificate to an app that requires one; session resumption across connections
(remora_tls_resumed_total{side="upstream"} and the app's view); health checks over TLS (healthy,
unhealthy by status and by a failing handshake); the remora_tls_* families with
side="upstream" and connect failures with reason="tls"; --check errors for bad files and keys."""

import hashlib
import json
import socket
import subprocess

import pytest

from helpers import free_port, http, metrics, pattern_sha256, wait_for
from reloadutil import render, sighup, wait_state
from tlsutil import cert_info, check_errors, make_client_cert, make_pki, make_self_signed

MIB = 1024 * 1024


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """The test CA and its server certificates (tlsutil.make_pki), a client certificate under
    it (client.pem, CN client) and a self-signed server certificate (self.pem)."""
    d = make_pki(tmp_path_factory.mktemp("uppki"))
    make_client_cert(d, "client", ca="ca")
    make_self_signed(d, "self")
    return d


def app_cert(pki, name="server"):
    return str(pki / (name + ".pem")), str(pki / (name + ".key"))


def start(remora, app, tls, protocol="http1", health=None, ready=True, workers=1, **opts):
    """remora before app's TLS port with upstreams[0].tls = tls."""
    up = {"protocol": protocol, "tls": tls}
    if health:
        up["health_check"] = health
    up.update(opts)
    return remora(endpoints=[app.tls_addr], upstream_opts=up, ready=ready, workers=workers)


def upstream_tls_lines(r):
    return [e["msg"] for e in r.log_lines() if "TLS handshake failed" in e.get("msg", "")]


def check_bodies(r):
    """A 1 MiB upload and a 2 MiB download through r, byte-exact."""
    body = bytes(range(256)) * 4096
    resp = http(r.port, "POST", "/upload", body=body, timeout=10)
    assert resp.status == 200, resp
    doc = json.loads(resp.body)
    assert doc["body_len"] == len(body)
    assert doc["body_sha256"] == hashlib.sha256(body).hexdigest()
    resp = http(r.port, "GET", "/bytes?n=%d" % (2 * MIB), timeout=10)
    assert resp.status == 200, resp
    assert len(resp.body) == 2 * MIB
    assert hashlib.sha256(resp.body).hexdigest() == pattern_sha256(2 * MIB)


# ---- the two protocols ---------------------------------------------------------------------

def test_http1_over_tls(remora, tls_app_factory, pki):
    app = tls_app_factory(*app_cert(pki), alpn=["http/1.1"])
    r = start(remora, app, {"ca": str(pki / "ca.pem"), "sni": "localhost"})
    check_bodies(r)
    conns = app.tls_conns()
    assert conns and all(c["alpn"] == "http/1.1" and c["sni"] == "localhost" for c in conns), conns
    m = metrics(r.admin_port)
    assert m.value("remora_tls_handshakes_total", side="upstream", result="ok") >= 1


def test_h2_over_tls(remora, tls_app_factory, pki):
    app = tls_app_factory(*app_cert(pki), h2=True, alpn=["h2"])
    # No tls block: protocol h2 implies TLS with the defaults, here with the test CA.
    r = start(remora, app, {"ca": str(pki / "ca.pem"), "sni": "localhost"}, protocol="h2")
    check_bodies(r)
    conns = app.tls_conns()
    assert conns and all(c["alpn"] == "h2" for c in conns), conns
    assert app.stats()["streams_total"] >= 2
    # The config dump shows the block.
    up = json.loads(http(r.admin_port, "GET", "/config").body)["upstreams"][0]
    assert up["protocol"] == "h2"
    assert up["tls"] == {"ca": str(pki / "ca.pem"), "sni": "localhost", "verify": True}


def test_h2_implies_tls(remora, tls_app_factory, pki):
    """protocol: h2 without a tls block is TLS with the defaults: the system store, which does
    not trust the test CA (so the handshake is refused: TLS was spoken)."""
    app = tls_app_factory(*app_cert(pki), h2=True, alpn=["h2"])
    r = remora(endpoints=[app.tls_addr], upstream_opts={"protocol": "h2"})
    resp = http(r.port, "GET", "/echo")
    assert resp.status == 502 and resp.header("x-remora-error") == "upstream_tls", resp
    up = json.loads(http(r.admin_port, "GET", "/config").body)["upstreams"][0]
    assert up["tls"] == {"verify": True}


def test_h2_needs_alpn_h2(remora, tls_app_factory, pki):
    """An app that does not select h2 is not spoken HTTP/2 to: 502 upstream_tls."""
    app = tls_app_factory(*app_cert(pki), h2=True, alpn=["http/1.1"])
    r = start(remora, app, {"ca": str(pki / "ca.pem"), "sni": "localhost"}, protocol="h2")
    resp = http(r.port, "GET", "/echo")
    assert resp.status == 502 and resp.header("x-remora-error") == "upstream_tls", resp
    assert wait_for(lambda: any('did not select ALPN "h2"' in m for m in upstream_tls_lines(r)))


# ---- verification --------------------------------------------------------------------------

def test_wrong_hostname_refused(remora, tls_app_factory, pki):
    app = tls_app_factory(*app_cert(pki))
    r = start(remora, app, {"ca": str(pki / "ca.pem"), "sni": "wrong.example"})
    resp = http(r.port, "GET", "/echo")
    assert resp.status == 502 and resp.header("x-remora-error") == "upstream_tls", resp
    want = "upstream app: endpoint %s: TLS handshake failed: certificate verify failed: " \
           "hostname mismatch" % app.tls_addr
    assert wait_for(lambda: any(m.lower().startswith(want.lower()) for m in upstream_tls_lines(r))), \
        upstream_tls_lines(r)
    # The app saw the name remora was told to send.
    assert app.snis() == ["wrong.example"]
    m = metrics(r.admin_port)
    assert m.value("remora_tls_handshakes_total", side="upstream", result="failed") >= 1
    assert m.value("remora_upstream_connect_failures_total", upstream="app", reason="tls") >= 1
    entry = [e for e in r.access_logs(1) if e.get("status") == 502][0]
    assert entry["termination"] == "SC" and entry["error"] == "upstream_tls", entry


def test_address_endpoint_verifies_ip_san(remora, tls_app_factory, pki):
    """No sni and an address endpoint: the certificate's IP SAN is checked and no SNI is sent
    (RFC 6066 3: never an address)."""
    app = tls_app_factory(*app_cert(pki))
    r = start(remora, app, {"ca": str(pki / "ca.pem")})
    assert http(r.port, "GET", "/echo").status == 200
    assert app.tls_conns()[0]["sni"] == "-"


def test_name_endpoint_sends_and_verifies_its_name(remora, tls_app_factory, pki):
    """No sni and an endpoint name: the name is sent and verified (the health check too)."""
    app = tls_app_factory(*app_cert(pki))
    r = remora(endpoints=["localhost:%d" % app.tls_port], upstream_opts={
        "tls": {"ca": str(pki / "ca.pem")},
        "health_check": {"path": "/ready", "interval": "100ms", "timeout": "1s"}})
    assert http(r.port, "GET", "/echo").status == 200
    assert wait_for(lambda: len(app.snis()) >= 2)  # the request's and a health check's
    assert set(app.snis()) == {"localhost"}, app.snis()


def test_self_signed_refused_unless_trusted(remora, tls_app_factory, pki):
    app = tls_app_factory(*app_cert(pki, "self"))
    # The system store (no ca) does not trust it.
    r = start(remora, app, {"sni": "localhost"})
    resp = http(r.port, "GET", "/echo")
    assert resp.status == 502 and resp.header("x-remora-error") == "upstream_tls", resp
    assert wait_for(lambda: any("self-signed certificate" in m or "self signed certificate" in m
                                for m in upstream_tls_lines(r))), upstream_tls_lines(r)
    # Neither does the test CA.
    r2 = start(remora, app, {"ca": str(pki / "ca.pem"), "sni": "localhost"})
    resp = http(r2.port, "GET", "/echo")
    assert resp.status == 502 and resp.header("x-remora-error") == "upstream_tls", resp
    # Its own certificate as the CA: accepted.
    r3 = start(remora, app, {"ca": str(pki / "self.pem"), "sni": "localhost"})
    assert http(r3.port, "GET", "/echo").status == 200
    # verify: false accepts anything (and still sends the SNI).
    r4 = start(remora, app, {"verify": False, "sni": "localhost"})
    assert http(r4.port, "GET", "/echo").status == 200
    assert app.tls_conns()[-1]["sni"] == "localhost"


def test_ca_file_change_reloads(remora, tls_app_factory, pki, tmp_path):
    """The ca file is watched: rewriting it with the app's CA makes new connections verify."""
    app = tls_app_factory(*app_cert(pki, "self"))
    ca = tmp_path / "ca" / "app-ca.pem"
    ca.parent.mkdir()
    ca.write_bytes((pki / "ca.pem").read_bytes())
    r = start(remora, app, {"ca": str(ca), "sni": "localhost"})
    resp = http(r.port, "GET", "/echo")
    assert resp.status == 502 and resp.header("x-remora-error") == "upstream_tls", resp
    ca.write_bytes((pki / "self.pem").read_bytes())
    assert wait_for(lambda: http(r.port, "GET", "/echo").status == 200, timeout=10)
    assert metrics(r.admin_port).value("remora_config_reloads_total", result="success") >= 1


def test_client_certificate(remora, tls_app_factory, pki):
    """An app that requires a client certificate (mTLS) serves remora once it presents one."""
    app = tls_app_factory(*app_cert(pki), client_ca=str(pki / "ca.pem"))
    r = start(remora, app, {"ca": str(pki / "ca.pem"), "sni": "localhost",
                            "cert": str(pki / "client.pem"), "key": str(pki / "client.key")})
    check_bodies(r)
    assert {c["client"] for c in app.tls_conns()} == {"client"}
    # Without one, the app refuses (in TLS 1.3 its alert follows the client's Finished: the
    # upconn fails as the request goes, whichever error that is).
    r2 = start(remora, app, {"ca": str(pki / "ca.pem"), "sni": "localhost"})
    resp = http(r2.port, "GET", "/echo")
    assert resp.status == 502, resp


def test_cert_expiry_gauge(remora, tls_app_factory, pki):
    """remora_tls_cert_expiry_timestamp_seconds names the upstream's client certificate
    (cert="upstream/NAME") and the CA it trusts (cert="upstream/NAME/ca"), with their notAfter;
    no TLS listener is needed for the family to render."""
    app = tls_app_factory(*app_cert(pki), client_ca=str(pki / "ca.pem"))
    r = start(remora, app, {"ca": str(pki / "ca.pem"), "sni": "localhost",
                            "cert": str(pki / "client.pem"), "key": str(pki / "client.key")})
    got = {l["cert"]: v for l, v in
           metrics(r.admin_port).series("remora_tls_cert_expiry_timestamp_seconds")}
    names = sorted(k for k in got if k.startswith("upstream/"))
    assert len(names) == 2 and names[1] == names[0] + "/ca", got
    assert got[names[0]] == cert_info(pki / "client.pem")[1]
    assert got[names[1]] == cert_info(pki / "ca.pem")[1]


# ---- sessions ------------------------------------------------------------------------------

@pytest.mark.parametrize("h2", [False, True], ids=["http1", "h2"])
def test_session_resumed_across_connections(remora, tls_app_factory, pki, h2):
    """Every connection after the first resumes the endpoint's last session (TLS 1.3 tickets
    arrive after the handshake): idle upconns close after 50ms, so each request below opens
    one."""
    app = tls_app_factory(*app_cert(pki), h2=h2, alpn=["h2"] if h2 else None)
    r = start(remora, app, {"ca": str(pki / "ca.pem"), "sni": "localhost"},
              protocol="h2" if h2 else "http1", idle_timeout="50ms")
    n = 5
    for i in range(n):
        assert http(r.port, "GET", "/echo").status == 200
        # The upconn closes (idle) before the next request.
        assert wait_for(lambda: len(app.tls_conns()) == i + 1 and
                        metrics(r.admin_port).value("remora_upstream_connections",
                                                    upstream="app", state="idle") in (0, None),
                        timeout=5), app.tls_conns()
    conns = app.tls_conns()
    assert len(conns) == n
    assert [c["resumed"] for c in conns] == ["0"] + ["1"] * (n - 1), conns
    m = metrics(r.admin_port)
    assert m.value("remora_tls_resumed_total", side="upstream") == n - 1
    assert m.value("remora_tls_handshakes_total", side="upstream", result="ok") == n
    assert m.value("remora_tls_handshake_duration_seconds_count", side="upstream") == n


# ---- health checks -------------------------------------------------------------------------

def readyz(r):
    """(status, body) of /readyz; (None, why) while the admin does not answer yet."""
    try:
        resp = http(r.admin_port, "GET", "/readyz")
    except OSError as e:
        return None, str(e)
    return resp.status, resp.body.decode(errors="replace")


def test_health_check_over_tls(remora, tls_app_factory, pki):
    app = tls_app_factory(*app_cert(pki), alpn=["http/1.1"])
    health = {"path": "/ready", "interval": "100ms", "timeout": "1s", "fall": 1, "rise": 1}
    r = start(remora, app, {"ca": str(pki / "ca.pem"), "sni": "localhost"}, health=health)
    assert readyz(r)[0] == 200
    before = app.stats()["ready_checks"]
    assert wait_for(lambda: app.stats()["ready_checks"] >= before + 2, timeout=5)
    assert all(c["alpn"] == "http/1.1" for c in app.tls_conns())
    app.set_ready(503)
    assert wait_for(lambda: readyz(r)[0] == 503, timeout=5), readyz(r)
    assert "HTTP 503" in readyz(r)[1]
    app.set_ready(200)
    assert wait_for(lambda: readyz(r)[0] == 200, timeout=5), readyz(r)


def test_health_check_tls_failure(remora, tls_app_factory, pki):
    """A check whose handshake fails (the name does not match) keeps the upstream unhealthy and
    says why."""
    app = tls_app_factory(*app_cert(pki))
    health = {"path": "/ready", "interval": "100ms", "timeout": "1s"}
    r = start(remora, app, {"ca": str(pki / "ca.pem"), "sni": "wrong.example"}, health=health,
              ready=False)
    assert wait_for(lambda: "TLS handshake failed" in readyz(r)[1], timeout=5), readyz(r)
    st, body = readyz(r)
    assert st == 503 and "certificate verify failed" in body, body


def test_health_check_h2_upstream(remora, tls_app_factory, pki):
    """An h2 upstream's check speaks HTTP/1.1 over TLS with ALPN http/1.1: the app answers it
    (h2_upstream.py serves /_stats over HTTP/1.1)."""
    app = tls_app_factory(*app_cert(pki), h2=True, alpn=["h2", "http/1.1"])
    health = {"path": "/_stats", "interval": "100ms", "timeout": "1s"}
    r = start(remora, app, {"ca": str(pki / "ca.pem"), "sni": "localhost"}, protocol="h2",
              health=health)
    assert readyz(r)[0] == 200
    assert http(r.port, "GET", "/echo").status == 200
    alpns = {c["alpn"] for c in app.tls_conns()}
    assert alpns == {"h2", "http/1.1"}, app.tls_conns()


# ---- metrics and configuration -------------------------------------------------------------

def test_tls_families_render_with_tls_upstream_only(remora, tls_app_factory, upstream, pki):
    app = tls_app_factory(*app_cert(pki))
    r = start(remora, app, {"ca": str(pki / "ca.pem"), "sni": "localhost"})
    assert http(r.port, "GET", "/echo").status == 200
    m = metrics(r.admin_port)
    for fam in ("remora_tls_handshakes_total", "remora_tls_resumed_total"):
        assert m.types.get(fam) == "counter", fam
    assert m.types.get("remora_tls_handshake_duration_seconds") == "histogram"
    assert m.value("remora_tls_handshakes_total", side="upstream", result="ok") == 1
    assert m.value("remora_tls_handshakes_total", side="downstream", result="ok") == 0
    # Without any TLS, none of them.
    plain = remora(upstream)
    assert not [n for n in metrics(plain.admin_port).names() if n.startswith("remora_tls_")]


def test_config_errors(run_remora, pki, tmp_path):
    (tmp_path / "junk.pem").write_text("not a certificate\n")
    base = {"listeners": [{"name": "in", "address": "127.0.0.1:1"}],
            "upstreams": [{"name": "app", "endpoints": ["127.0.0.1:2"]}],
            "routes": [{"name": "r", "match": {"path_prefix": "/"}, "upstream": "app"}]}
    cases = [
        ({"ca": str(tmp_path / "missing.pem")},
         'upstream "app": tls.ca %s: cannot read: No such file or directory'
         % (tmp_path / "missing.pem")),
        ({"ca": str(tmp_path / "junk.pem")},
         'upstream "app": tls.ca %s: no usable PEM certificate' % (tmp_path / "junk.pem")),
        ({"cert": str(pki / "client.pem"), "key": str(pki / "other.key")},
         'upstream "app": tls.key %s: no usable PEM private key matching tls.cert %s'
         % (pki / "other.key", pki / "client.pem")),
        ({"cert": str(tmp_path / "junk.pem"), "key": str(pki / "client.key")},
         'upstream "app": tls.cert %s: no usable PEM certificate chain' % (tmp_path / "junk.pem")),
    ]
    for i, (tls, want) in enumerate(cases):
        cfg = json.loads(json.dumps(base))
        cfg["upstreams"][0]["tls"] = tls
        path = tmp_path / ("bad%d.yaml" % i)
        path.write_text(render(cfg))
        lines = check_errors(run_remora, path)
        assert lines and lines[0].startswith("%s: %s" % (path, want)), lines
    # Schema errors point at the line.
    path = tmp_path / "schema.yaml"
    path.write_text('listeners: [{name: in, address: "127.0.0.1:1"}]\n'
                    'upstreams:\n'
                    '  - name: a\n'
                    '    endpoints: ["127.0.0.1:2"]\n'
                    '    protocol: h2c\n'
                    '    tls: {verify: true}\n'
                    '  - name: b\n'
                    '    endpoints: ["127.0.0.1:3"]\n'
                    '    tls: {key: k.pem, verify: maybe}\n'
                    'routes: [{name: r, match: {path_prefix: /}, upstream: a}]\n')
    assert check_errors(run_remora, path) == [
        '%s:6:10: "tls" with protocol h2c: h2c is cleartext HTTP/2; write protocol h2 for '
        'HTTP/2 over TLS' % path,
        '%s:9:10: tls.cert and tls.key go together (the client certificate and its key)' % path,
        '%s:9:31: expected a boolean (true or false) for "verify", got "maybe"' % path,
    ]
    # The dump shows the block, with the defaults h2 implies.
    path = tmp_path / "ok.yaml"
    cfg = json.loads(json.dumps(base))
    cfg["upstreams"][0].update({"protocol": "h2", "tls": {"sni": "app.internal"}})
    path.write_text(render(cfg))
    out = run_remora("--check", "-c", path)
    assert out.returncode == 0, out.stdout


def test_verify_false_failure_names_the_real_cause(remora, pki):
    """With verify: false nothing is verified, so a handshake that fails for another reason
    (here a TLS 1.2 app that demands a client certificate remora does not have) is logged with
    that reason, never as "certificate verify failed" about the chain nobody asked to check."""
    port = free_port()
    app = subprocess.Popen(["openssl", "s_server", "-accept", "127.0.0.1:%d" % port, "-tls1_2",
                            "-Verify", "1", "-cert", str(pki / "self.pem"),
                            "-key", str(pki / "self.key"), "-quiet", "-naccept", "5"],
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    try:
        assert wait_for(lambda: port_open(port), timeout=10)

        class App:
            tls_addr = "127.0.0.1:%d" % port

        r = start(remora, App, {"verify": False, "sni": "localhost"})
        resp = http(r.port, "GET", "/echo")
        assert resp.status == 502 and resp.header("x-remora-error") == "upstream_tls", resp
        assert wait_for(lambda: upstream_tls_lines(r), timeout=5)
        lines = upstream_tls_lines(r)
        assert not any("certificate verify failed" in m for m in lines), lines
    finally:
        app.kill()
        app.wait(10)


def port_open(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def test_trust_change_closes_idle_upconns(remora, tls_app_factory, pki, tmp_path):
    """A reload that changes what an upstream's connections are trusted with (here the app's CA
    is removed from the ca file, as for a compromised CA) closes the idle upconns made under the
    old trust: the next request connects again and is refused, instead of reusing a connection
    the new settings would never make. A reload that changes nothing of it keeps them."""
    app = tls_app_factory(*app_cert(pki, "self"))
    ca = tmp_path / "ca" / "app-ca.pem"
    ca.parent.mkdir()
    ca.write_bytes((pki / "self.pem").read_bytes() + (pki / "ca.pem").read_bytes())
    r = start(remora, app, {"ca": str(ca), "sni": "localhost"}, idle_timeout="60s")
    assert http(r.port, "GET", "/echo").status == 200
    assert len(app.tls_conns()) == 1
    sighup(r)
    wait_state(r, success=1)
    assert http(r.port, "GET", "/echo").status == 200
    assert len(app.tls_conns()) == 1, "a reload with the same trust kept the idle upconn"
    ca.write_bytes((pki / "ca.pem").read_bytes())
    wait_state(r, success=2)
    resp = http(r.port, "GET", "/echo")
    assert resp.status == 502 and resp.header("x-remora-error") == "upstream_tls", resp
