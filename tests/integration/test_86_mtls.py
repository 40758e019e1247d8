# SPDX-License-Identifier: Apache-2.0
"""86: client certificates on TLS listeners (mTLS, issue 16). listeners[].tls.client_ca makes
remora ask every client for a certificate and verify it against those CAs only;
require_client_cert refuses a client without one. Certificates are made in the test with the
openssl CLI (tlsutil): a client CA, client certificates with a SPIFFE URI SAN and a DNS SAN, an
expired one, one from a CA remora does not trust. What is checked: curl with --cert works over
HTTP/1.1 and h2; valid, untrusted, expired and missing certificates with the certificate
required and optional (a refused handshake is result="failed" in
remora_tls_handshakes_total, with OpenSSL's verify reason in a log line); the
x-forwarded-client-cert the app receives (Envoy's format, toward an HTTP/1.1 app and an h2c
one); an incoming x-forwarded-client-cert removed everywhere (plaintext listener, TLS without a
certificate) and replaced with remora's own; routes[].match.client_san allowing and refusing
(403 client_not_allowed, plaintext too); the access log's client_san; a client_ca rotated by
a Secret-style `..data` swap (and a broken one refused, the old CAs kept); a bad client_ca
refused by --check and at start."""

import json
import socket
import ssl
import subprocess
import time

import pytest

from helpers import curl, metrics, wait_for
from reloadutil import ConfDir, config_doc, log_tail, render
from tlsutil import (CaDir, cert_info, cert_sha256, client_ctx, client_subject, get_h1, make_ca,
                     listener_check_error, make_client_cert, make_pki, spiffe, tls_block,
                     tls_config)

DAY = 86400
XFCC = "x-forwarded-client-cert"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """make_pki (the server CA "ca" and server certificates) plus: client-ca with web, db and
    expired (valid from 3 days ago to yesterday) under it; rogue-ca (never trusted) with rogue;
    client-ca2 (the rotation's new CA) with next."""
    d = make_pki(tmp_path_factory.mktemp("pki"))
    make_ca(d, "client-ca")
    make_ca(d, "rogue-ca")
    make_ca(d, "client-ca2")
    make_client_cert(d, "web")
    make_client_cert(d, "db")
    now = int(time.time())
    make_client_cert(d, "expired", not_before=now - 3 * DAY, not_after=now - DAY)
    make_client_cert(d, "rogue", ca="rogue-ca")
    make_client_cert(d, "next", ca="client-ca2")
    return d


def xfcc_of(pki, name):
    """The x-forwarded-client-cert remora sends for client certificate name."""
    return 'Hash=%s;Subject="%s";URI=%s;DNS=%s.default.svc' % (
        cert_sha256(pki / (name + ".pem")), client_subject(name), spiffe(name), name)


def mtls(remora, pki, endpoints, require=True, routes=None, client_ca=None, **kw):
    """remora with a TLS listener asking for client certificates under client-ca (.port) and a
    plaintext listener (.plain_port)."""
    tls = tls_block(pki, client_ca=str(client_ca or pki / "client-ca.pem"),
                    require_client_cert=require)
    cfg, plain_port = tls_config(pki, endpoints, tls=tls, routes=routes, **kw)
    r = remora(config=cfg)
    r.plain_port = plain_port
    return r


def headers_seen(body, name):
    """The values of header name the app received (upstream.py /echo, h2_upstream.py /json)."""
    return [v for k, v in json.loads(body)["headers"] if k.lower() == name]


def curl_tls(pki, port, path="/echo", cert=None, *flags):
    args = ["--cacert", str(pki / "ca.pem")]
    if cert:
        args += ["--cert", str(pki / (cert + ".pem")), "--key", str(pki / (cert + ".key"))]
    return curl(*args, *flags, "-w", "\n%{http_code}", "https://localhost:%d%s" % (port, path))


def request(pki, port, cert=None, path="/echo", extra=""):
    """One GET over a new TLS conn presenting cert (None: no certificate): (status, headers,
    body), or the exception the refused handshake raised (TLS 1.3: at the first read)."""
    try:
        raw = socket.create_connection(("127.0.0.1", port), timeout=5)
        with client_ctx(pki, cert=cert).wrap_socket(raw, server_hostname="localhost") as s:
            return get_h1(s, path, extra)
    except (ssl.SSLError, OSError, AssertionError) as e:
        return e


def handshakes(r):
    m = metrics(r.admin_port)
    return {res: m.value("remora_tls_handshakes_total", side="downstream", result=res)
            for res in ("ok", "failed")}


def msgs(r):
    return [str(e.get("msg", "")) for e in r.log_lines()]


# ---- curl and the app's view -------------------------------------------------------------------

@pytest.mark.parametrize("flag", ["--http1.1", "--http2"])
def test_curl_with_client_cert(remora, upstream, pki, flag):
    """curl --cert/--key through a listener requiring a client certificate: the app gets
    exactly one x-forwarded-client-cert, remora's (Envoy's format: the certificate's SHA-256,
    its RFC 2253 Subject, its URI and DNS SANs); without --cert curl fails."""
    r = mtls(remora, pki, [upstream.addr])
    out = curl_tls(pki, r.port, "/echo", "web", flag)
    assert out.returncode == 0, out.stderr
    body, code = out.stdout.rsplit(b"\n", 1)
    assert code == b"200"
    assert headers_seen(body, XFCC) == [xfcc_of(pki, "web")]
    assert headers_seen(body, "x-forwarded-proto") == ["https"]
    out = curl_tls(pki, r.port, "/echo", None, flag)
    assert out.returncode != 0, out.stdout


@pytest.mark.parametrize("flag", ["--http1.1", "--http2"])
def test_xfcc_toward_h2c_app(remora, h2_upstream, pki, flag):
    """Toward an h2c app the header is the same, from an HTTP/1.1 and an h2 client, and a
    client's own x-forwarded-client-cert never reaches it."""
    r = mtls(remora, pki, [h2_upstream.addr], upstream_opts={"protocol": "h2c"})
    out = curl_tls(pki, r.port, "/json", "db", flag, "-H", XFCC + ": By=spoofed;Hash=00")
    assert out.returncode == 0, out.stderr
    body, code = out.stdout.rsplit(b"\n", 1)
    assert code == b"200", body
    assert headers_seen(body, XFCC) == [xfcc_of(pki, "db")]


# ---- verification --------------------------------------------------------------------------------

@pytest.mark.parametrize("require", [True, False], ids=["required", "optional"])
def test_verification(remora, upstream, pki, require):
    """A certificate under client_ca is served (its identity in XFCC); one from another CA and
    an expired one fail the handshake (result="failed", OpenSSL's reason logged); no
    certificate fails when required and is served anonymous (no XFCC) when optional."""
    r = mtls(remora, pki, [upstream.addr], require=require)
    got = request(pki, r.port, "web")
    assert not isinstance(got, Exception), got
    assert got[0] == 200 and headers_seen(got[2], XFCC) == [xfcc_of(pki, "web")]
    for cert, reason in (("rogue", "unable to get local issuer certificate"),
                         ("expired", "certificate has expired")):
        got = request(pki, r.port, cert)
        assert isinstance(got, Exception), got
        want = "tls: handshake failed: client certificate: %s (client 127.0.0.1)" % reason
        assert wait_for(lambda: want in msgs(r)), log_tail(r)
    got = request(pki, r.port, None)
    if require:
        assert isinstance(got, Exception), got
        want = ("tls: handshake failed: no client certificate (tls.require_client_cert; "
                "client 127.0.0.1)")
        assert wait_for(lambda: want in msgs(r)), log_tail(r)
        want = {"ok": 1, "failed": 3}
    else:
        assert not isinstance(got, Exception), got
        assert got[0] == 200 and headers_seen(got[2], XFCC) == []
        want = {"ok": 2, "failed": 2}
    assert wait_for(lambda: handshakes(r) == want), handshakes(r)


def test_bundle_and_ca_names(remora, upstream, tmp_path, pki):
    """A client_ca bundle of two CAs: clients of both are served, and the CertificateRequest
    names both (openssl s_client prints the list); the server's own CA is not trusted for
    clients."""
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes((pki / "client-ca.pem").read_bytes() + (pki / "client-ca2.pem").read_bytes())
    r = mtls(remora, pki, [upstream.addr], require=False, client_ca=bundle)
    for cert in ("web", "next"):
        got = request(pki, r.port, cert)
        assert not isinstance(got, Exception), (cert, got)
        assert headers_seen(got[2], XFCC) == [xfcc_of(pki, cert)]
    out = subprocess.run(["openssl", "s_client", "-connect", "127.0.0.1:%d" % r.port,
                          "-servername", "localhost", "-CAfile", str(pki / "ca.pem")],
                         stdin=subprocess.DEVNULL, capture_output=True, timeout=10)
    text = out.stdout.decode(errors="replace")
    assert "Acceptable client certificate CA names\nCN = client-ca\nCN = client-ca2\n" in text, text


def test_client_ca_expiry_gauge(remora, upstream, tmp_path, pki):
    """remora_tls_cert_expiry_timestamp_seconds{cert="listener/NAME/client_ca"} is the notAfter
    of the client CA that expires first (the one an alert must name), beside the listener's own
    certificate's."""
    make_ca(tmp_path, "short-ca", days=1)
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes((pki / "client-ca.pem").read_bytes()
                       + (tmp_path / "short-ca.pem").read_bytes())
    r = mtls(remora, pki, [upstream.addr], require=False, client_ca=bundle)
    got = {l["cert"]: v for l, v in
           metrics(r.admin_port).series("remora_tls_cert_expiry_timestamp_seconds")}
    short, long_ = cert_info(tmp_path / "short-ca.pem")[1], cert_info(pki / "client-ca.pem")[1]
    assert long_ - short > 12 * 3600
    listener = [k for k in got if not k.endswith("/client_ca")]
    assert len(listener) == 1 and listener[0].startswith("listener/"), got
    assert got[listener[0]] == cert_info(pki / "server.pem")[1]
    assert got[listener[0] + "/client_ca"] == short, got


# ---- x-forwarded-client-cert: sanitize, then set -----------------------------------------------

def test_spoofed_xfcc_removed(remora, upstream, pki):
    """Incoming x-forwarded-client-cert headers never reach the app: not on the plaintext
    listener (HTTP/1.1 and h2c), not over TLS without a certificate (HTTP/1.1 and h2), and over
    TLS with a certificate only remora's one arrives."""
    r = mtls(remora, pki, [upstream.addr], require=False)
    spoof = ["-H", XFCC + ": Hash=00;URI=spiffe://cluster.local/ns/default/sa/admin",
             "-H", "X-Forwarded-Client-Cert: second"]
    for flag in ("--http1.1", "--http2-prior-knowledge"):
        out = curl(flag, *spoof, "http://127.0.0.1:%d/echo" % r.plain_port)
        assert out.returncode == 0, out.stderr
        assert headers_seen(out.stdout, XFCC) == [], out.stdout
    for flag in ("--http1.1", "--http2"):
        out = curl_tls(pki, r.port, "/echo", None, flag, *spoof)
        body, code = out.stdout.rsplit(b"\n", 1)
        assert code == b"200", out.stderr
        assert headers_seen(body, XFCC) == []
        out = curl_tls(pki, r.port, "/echo", "web", flag, *spoof)
        body, code = out.stdout.rsplit(b"\n", 1)
        assert code == b"200", out.stderr
        assert headers_seen(body, XFCC) == [xfcc_of(pki, "web")]


# ---- routes[].match.client_san -------------------------------------------------------------------

ROUTES = [
    {"name": "web-only", "match": {"path_prefix": "/web", "client_san": spiffe("web")},
     "upstream": "app"},
    {"name": "db-dns", "match": {"path_prefix": "/db", "client_san": ["other.default.svc",
                                                                      "db.default.svc"]},
     "upstream": "app"},
    {"name": "ns-default", "match": {"path_prefix": "/ns",
                                     "client_san": "spiffe://cluster.local/ns/default/*"},
     "upstream": "app"},
    {"name": "open", "match": {"path_prefix": "/"}, "upstream": "app"},
]


def test_client_san_routes(remora, upstream, pki):
    """A route with client_san serves a conn whose certificate has one of the SANs (URI or
    DNS, exact; a trailing * a prefix) and answers 403 client_not_allowed to any other: another
    certificate, none, a plaintext conn; never falling through to the next route. The access
    log says client_san (the first URI SAN) and the route."""
    r = mtls(remora, pki, [upstream.addr], require=False, routes=ROUTES)
    cases = [("web", "/web/x", 200), ("db", "/web/x", 403), (None, "/web/x", 403),
             ("db", "/db/x", 200), ("web", "/db/x", 403),
             ("web", "/ns/x", 200), ("db", "/ns/x", 200), (None, "/ns/x", 403),
             (None, "/open", 200), ("web", "/open", 200)]
    for cert, path, want in cases:
        got = request(pki, r.port, cert, path)
        assert not isinstance(got, Exception), (cert, path, got)
        status, headers, _ = got
        assert status == want, (cert, path, got)
        if want == 403:
            assert headers.get("x-remora-error") == "client_not_allowed", (cert, path, headers)
    for flag in ("--http1.1", "--http2-prior-knowledge"):
        out = curl(flag, "-i", "http://127.0.0.1:%d/web/x" % r.plain_port)
        assert out.stdout.split(b"\r\n", 1)[0].split()[1] == b"403", out.stdout
        assert b"x-remora-error: client_not_allowed" in out.stdout.lower(), out.stdout
    logs = r.access_logs(at_least=len(cases) + 2)
    by = [(e["path"], e["status"], e["route"], e["client_san"], e["termination"])
          for e in logs]
    assert ("/web/x", 200, "web-only", spiffe("web"), "--") in by, by
    assert ("/web/x", 403, "web-only", spiffe("db"), "PR") in by, by
    assert ("/web/x", 403, "web-only", None, "PR") in by, by
    assert ("/open", 200, "open", None, "--") in by, by


# ---- rotation ------------------------------------------------------------------------------------

def test_client_ca_rotation(remora, upstream, tmp_path, pki):
    """client_ca in a Secret-style directory: a `..data` swap to a new CA bundle is picked up
    (remora_tls_cert_reloads_total success), a client of the new CA is accepted and one of the
    old refused, also when it offers a session ticket from before the swap (a resumption would
    skip the verification); a swap to a file with no certificate is refused (failure counted,
    one line naming the file) and the CAs in use stay."""
    ca = CaDir(tmp_path, (pki / "client-ca.pem").read_bytes())
    cfg, _ = tls_config(pki, [upstream.addr], plain=False,
                        tls=tls_block(pki, client_ca=str(ca.path), require_client_cert=True))
    cd = ConfDir(tmp_path, cfg)
    r = remora(config=cfg, config_file=cd.path)
    web = client_ctx(pki, cert="web")
    raw = socket.create_connection(("127.0.0.1", r.port), timeout=5)
    with web.wrap_socket(raw, server_hostname="localhost") as s:
        assert get_h1(s)[0] == 200
        ticket = s.session
    assert isinstance(request(pki, r.port, "next"), Exception)
    ca.swap((pki / "client-ca2.pem").read_bytes())
    assert wait_for(lambda: reloads(r) == (1, 0), timeout=5), (reloads(r), log_tail(r))
    got = request(pki, r.port, "next")
    assert not isinstance(got, Exception), got
    assert got[0] == 200 and headers_seen(got[2], XFCC) == [xfcc_of(pki, "next")]
    assert isinstance(request(pki, r.port, "web"), Exception)
    try:
        raw = socket.create_connection(("127.0.0.1", r.port), timeout=5)
        with web.wrap_socket(raw, server_hostname="localhost", session=ticket) as s:
            resumed = (s.session_reused, get_h1(s)[0])
    except (ssl.SSLError, OSError, AssertionError) as e:
        resumed = e
    assert isinstance(resumed, Exception), resumed
    ca.swap(b"not a certificate\n")
    assert wait_for(lambda: reloads(r) == (1, 1), timeout=5), (reloads(r), log_tail(r))
    want = 'listener "tls": tls.client_ca %s: no usable PEM CA certificate' % ca.path
    assert len([m for m in msgs(r) if m.startswith(want)]) == 1, log_tail(r)
    assert request(pki, r.port, "next")[0] == 200


def reloads(r):
    m = metrics(r.admin_port)
    return (m.value("remora_tls_cert_reloads_total", result="success"),
            m.value("remora_tls_cert_reloads_total", result="failure"))


# ---- configuration errors ------------------------------------------------------------------------

def test_bad_client_ca_refused(run_remora, upstream, tmp_path, pki):
    """--check and a start refuse a client_ca that cannot be read or holds no certificate, with
    one line naming the listener, the key and the file; require_client_cert without client_ca
    is a config error. The config dump shows both keys."""
    junk = tmp_path / "junk.pem"
    junk.write_text("junk\n")
    damaged = tmp_path / "damaged.pem"
    damaged.write_bytes((pki / "client-ca.pem").read_bytes()
                        + b"-----BEGIN CERTIFICATE-----\nbm90IGRlcg==\n-----END CERTIFICATE-----\n")
    cases = [(tmp_path / "missing.pem", "cannot read: No such file or directory"),
             (junk, "no usable PEM CA certificate"),
             (pki / "web.key", "no usable PEM CA certificate"),
             (damaged, "no usable PEM CA certificate")]
    for i, (path, why) in enumerate(cases):
        f = tmp_path / ("bad%d.yaml" % i)
        got = listener_check_error(run_remora, pki, [upstream.addr], f,
                                   tls_block(pki, client_ca=str(path)))
        assert got.startswith('listener "tls": tls.client_ca %s: %s' % (path, why)), got
        assert run_remora("-c", f).returncode == 1
    cfg, _ = tls_config(pki, [upstream.addr], tls=tls_block(pki, require_client_cert=True))
    f = tmp_path / "noca.yaml"
    f.write_text(render(cfg))
    out = run_remora("--check", "-c", f)
    assert out.returncode == 1
    assert '"require_client_cert" needs "client_ca"' in out.stdout.decode(), out.stdout


def test_config_dump(remora, upstream, pki):
    """GET /config shows client_ca, require_client_cert and match.client_san (a list)."""
    r = mtls(remora, pki, [upstream.addr], require=True, routes=ROUTES)
    doc = config_doc(r.admin_port)
    tls = doc["listeners"][0]["tls"]
    assert tls["client_ca"] == str(pki / "client-ca.pem")
    assert tls["require_client_cert"] is True
    routes = doc["routes"]
    assert routes[1]["match"]["client_san"] == ["other.default.svc", "db.default.svc"]
    assert routes[0]["match"]["client_san"] == [spiffe("web")]


# ---- resumption ----------------------------------------------------------------------------------

@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_resumed_session_keeps_identity(remora, upstream, pki, version):
    """A conn resumed with a session ticket is served with the identity verified when the
    session started: the same x-forwarded-client-cert, without a new certificate exchange."""
    r = mtls(remora, pki, [upstream.addr], require=True)
    ctx = client_ctx(pki, cert="web", min_version=version, max_version=version)
    sess = None
    for i in range(2):
        raw = socket.create_connection(("127.0.0.1", r.port), timeout=5)
        with ctx.wrap_socket(raw, server_hostname="localhost", session=sess) as s:
            status, _, body = get_h1(s)  # TLS 1.3: the ticket comes with the first read
            assert status == 200
            assert headers_seen(body, XFCC) == [xfcc_of(pki, "web")]
            assert s.session_reused == (i == 1)
            sess = s.session
