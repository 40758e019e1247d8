# SPDX-License-Identifier: Apache-2.0
"""84: TLS termination on listeners (listeners[].tls). Certificates are made in the test with
the openssl CLI (tlsutil.make_pki: a CA and ECDSA P-256 server certificates for localhost and
127.0.0.1). Clients: curl over HTTP/1.1 and h2, python's ssl for byte-level checks, openssl
s_client, h2load.
What is checked: ALPN chooses the codec (h2, http/1.1, none -> HTTP/1.1; the server's order
wins; no h2c preface sniffing over TLS), TLS 1.2 and 1.3 accepted and TLS 1.1 refused with a
protocol_version alert, min_version 1.3, X-Forwarded-Proto https, a plaintext listener beside a
TLS one, h2load over TLS with no failure, 20 MiB bodies both ways over both protocols,
close_notify before the FIN, the handshake timeout (and no such timer once the handshake is
done), a reload that changes the certificate (new handshakes see it, an old connection goes
on), certificates or keys that cannot be used refused by --check and at start, and what is
observed: remora_tls_handshakes_total by result (ok, failed, timeout), the handshake duration
histogram, remora_tls_resumed_total for a resumed session, streams over TLS counted as
proto="h2" or "http1", and the access log's tls_version and alpn fields."""

import hashlib
import json
import os
import re
import socket
import ssl
import subprocess
import time

import pytest

from helpers import (HttpConn, build_request, curl, http, metrics,
                     pattern_sha256, scrape, wait_for)
from reloadutil import render, wait_state
from tlsutil import (client_ctx, get_h1, handshakes, listener_check_error, make_pki, s_client,
                     tls_block, tls_config, tls_connect, wait_handshakes)

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
EMPTY_SETTINGS = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


# ---- certificates and fixtures ----------------------------------------------------------------

@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A test CA and two server certificates under it (server, server2), plus a key of no
    certificate (other.key): tlsutil.make_pki."""
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def tls_proxy(remora, upstream, pki):
    """remora with a TLS listener (.port) and a plaintext one (.plain_port) before upstream."""
    cfg, plain_port = tls_config(pki, [upstream.addr])
    r = remora(config=cfg)
    r.plain_port = plain_port
    return r


def seen_header(body, name):
    return [v for k, v in json.loads(body)["headers"] if k.lower() == name]


# ---- curl over both protocols ------------------------------------------------------------------

@pytest.mark.parametrize("proto,flag,version", [("http1.1", "--http1.1", "1.1"),
                                                ("h2", "--http2", "2")])
def test_curl_over_tls(tls_proxy, pki, proto, flag, version):
    out = curl("--cacert", str(pki / "ca.pem"), flag, "-w", "\n%{http_version}",
               "https://localhost:%d/echo" % tls_proxy.port)
    assert out.returncode == 0, out.stderr
    body, got = out.stdout.rsplit(b"\n", 1)
    assert got.decode() == version
    seen = json.loads(body)
    assert seen["path"] == "/echo"
    assert seen_header(body, "x-forwarded-proto") == ["https"]
    assert seen_header(body, "x-forwarded-for") == ["127.0.0.1"]


def test_plaintext_listener_beside_tls(tls_proxy, pki):
    """The plaintext listener keeps HTTP/1.1 and h2c prior knowledge (preface sniffing) and
    says X-Forwarded-Proto http; the TLS one in the same process serves TLS."""
    base = "http://127.0.0.1:%d/echo" % tls_proxy.plain_port
    for flags, version in ((["--http1.1"], "1.1"), (["--http2-prior-knowledge"], "2")):
        out = curl(*flags, "-w", "\n%{http_version}", base)
        assert out.returncode == 0, out.stderr
        body, got = out.stdout.rsplit(b"\n", 1)
        assert got.decode() == version
        assert seen_header(body, "x-forwarded-proto") == ["http"]
    out = curl("--cacert", str(pki / "ca.pem"), "https://localhost:%d/echo" % tls_proxy.port)
    assert out.returncode == 0, out.stderr
    # Plaintext to the TLS port is no ClientHello: the handshake fails and the conn closes
    # (a reset: the request's bytes were left unread), never an HTTP answer.
    with socket.create_connection(("127.0.0.1", tls_proxy.port), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        try:
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
        except ConnectionResetError:
            pass
        assert not data.startswith(b"HTTP/"), data


# ---- ALPN --------------------------------------------------------------------------------------

@pytest.mark.parametrize("offer,want", [(["h2", "http/1.1"], "h2"), (["h2"], "h2"),
                                        (["http/1.1"], "http/1.1"), (None, None)])
def test_alpn_chooses_the_codec(tls_proxy, pki, offer, want):
    with tls_connect(pki, tls_proxy.port, alpn=offer) as s:
        assert s.selected_alpn_protocol() == want
        if want == "h2":
            # The h2 codec speaks first: its SETTINGS frame.
            s.sendall(H2_PREFACE + EMPTY_SETTINGS)
            hdr = b""
            while len(hdr) < 9:
                chunk = s.recv(9 - len(hdr))
                assert chunk, "closed before a frame"
                hdr += chunk
            assert hdr[3] == 0x4 and hdr[4] == 0, hdr  # SETTINGS, not an ACK
        else:
            status, headers, body = get_h1(s)
            assert status == 200
            assert seen_header(body, "x-forwarded-proto") == ["https"]
            # Keep-alive: a second request on the same TLS connection.
            status, _, _ = get_h1(s, "/bytes?n=10")
            assert status == 200


@pytest.mark.parametrize("offer", [None, ["http/1.1"]])
def test_no_h2c_preface_sniffing_over_tls(tls_proxy, pki, offer):
    """Over TLS h2 is only ever negotiated: an h2 preface on an HTTP/1.1 conn is an HTTP/1.1
    request line of version 2.0, answered 505 (RFC 9110 15.6.6), never an h2 session."""
    with tls_connect(pki, tls_proxy.port, alpn=offer) as s:
        s.sendall(H2_PREFACE + EMPTY_SETTINGS)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        assert data.startswith(b"HTTP/1.1 505 "), data
        assert b"x-remora-error: http_version_not_supported" in data.lower(), data


def test_alpn_server_preference_and_s_client(remora, upstream, pki):
    """openssl s_client's ALPN choice: h2 or http/1.1 as offered; with listeners[].tls.alpn
    [http/1.1, h2] a client offering both gets http/1.1 (the server's order), and with
    [http/1.1] an h2-only client gets no ALPN (HTTP/1.1)."""
    cfg, _ = tls_config(pki, [upstream.addr], plain=False)
    r = remora(config=cfg)
    for offer, want in (("h2", "h2"), ("http/1.1", "http/1.1"), ("http/1.1,h2", "h2")):
        rc, text = s_client(r.port, "-CAfile", str(pki / "ca.pem"), "-alpn", offer)
        assert "ALPN protocol: %s\n" % want in text, text
        assert "Verify return code: 0 (ok)" in text, text
    cfg, _ = tls_config(pki, [upstream.addr], plain=False,
                        tls=tls_block(pki, alpn=["http/1.1", "h2"]))
    r = remora(config=cfg)
    rc, text = s_client(r.port, "-alpn", "h2,http/1.1")
    assert "ALPN protocol: http/1.1\n" in text, text
    cfg, _ = tls_config(pki, [upstream.addr], plain=False, tls=tls_block(pki, alpn=["http/1.1"]))
    r = remora(config=cfg)
    rc, text = s_client(r.port, "-alpn", "h2")
    assert "No ALPN negotiated" in text, text
    out = curl("--cacert", str(pki / "ca.pem"), "--http2", "-w", "%{http_version}", "-o",
               "/dev/null", "https://localhost:%d/echo" % r.port)
    assert out.stdout.decode() == "1.1", out


# ---- versions ----------------------------------------------------------------------------------

@pytest.mark.parametrize("version,name", [(ssl.TLSVersion.TLSv1_2, "TLSv1.2"),
                                          (ssl.TLSVersion.TLSv1_3, "TLSv1.3")])
def test_tls12_and_tls13_accepted(tls_proxy, pki, version, name):
    with tls_connect(pki, tls_proxy.port, min_version=version, max_version=version) as s:
        assert s.version() == name
        if version == ssl.TLSVersion.TLSv1_2:
            # The default 1.2 suites: AEAD with ECDHE only.
            assert re.match(r"ECDHE-ECDSA-(AES\d+-GCM|CHACHA20-POLY1305)", s.cipher()[0]), s.cipher()
        status, _, _ = get_h1(s)
        assert status == 200
    flag = "-tls1_2" if version == ssl.TLSVersion.TLSv1_2 else "-tls1_3"
    rc, text = s_client(tls_proxy.port, flag, "-CAfile", str(pki / "ca.pem"))
    assert re.search(r"New, %s, Cipher is " % re.escape(name), text), text


def test_tls11_refused(tls_proxy):
    """A TLS 1.1 client (allowed to offer it: SECLEVEL 0 lifts the client's own floor) gets
    remora's protocol_version alert."""
    rc, text = s_client(tls_proxy.port, "-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0")
    assert rc != 0, text
    assert "alert protocol version" in text, text


def test_min_version_13(remora, upstream, pki):
    cfg, _ = tls_config(pki, [upstream.addr], plain=False, tls=tls_block(pki, min_version="1.3"))
    r = remora(config=cfg)
    with pytest.raises(ssl.SSLError, match="(?i)protocol.version"):
        tls_connect(pki, r.port, max_version=ssl.TLSVersion.TLSv1_2)
    with tls_connect(pki, r.port) as s:
        assert s.version() == "TLSv1.3"


# ---- load and bodies ---------------------------------------------------------------------------

def test_h2load_over_tls(tls_proxy):
    out = subprocess.run(["h2load", "-n", "2000", "-c", "10",
                          "https://127.0.0.1:%d/bytes?n=100" % tls_proxy.port],
                         capture_output=True, timeout=60)
    text = out.stdout.decode()
    assert out.returncode == 0, (text, out.stderr)
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                  r"(\d+) failed, (\d+) errored, (\d+) timeout", text)
    assert m, text
    assert tuple(map(int, m.groups()))[2:] == (2000, 2000, 0, 0, 0), text
    assert "Application protocol: h2" in text, text
    assert re.search(r"TLS Protocol: TLSv1\.3", text), text


@pytest.mark.parametrize("flag", ["--http1.1", "--http2"])
def test_large_bodies_both_ways(tls_proxy, pki, tmp_path, flag):
    n = 20 * 1024 * 1024
    f = tmp_path / "up.bin"
    block = hashlib.sha256(b"remora").digest() * 2048
    with open(f, "wb") as w:
        for _ in range(n // len(block)):
            w.write(block)
    want = hashlib.sha256(f.read_bytes()).hexdigest()
    ca = str(pki / "ca.pem")
    url = "https://localhost:%d" % tls_proxy.port
    out = curl("--cacert", ca, flag, "-T", str(f), url + "/upload", timeout=60)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert (got["body_len"], got["body_sha256"]) == (n, want)
    dl = tmp_path / "down.bin"
    out = curl("--cacert", ca, flag, "-o", str(dl), url + "/bytes?n=%d" % n, timeout=60)
    assert out.returncode == 0, out.stderr
    assert dl.stat().st_size == n
    assert hashlib.sha256(dl.read_bytes()).hexdigest() == pattern_sha256(n)


# ---- the end of a connection ------------------------------------------------------------------

@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_close_notify_before_fin(tls_proxy, pki, version):
    """After `Connection: close` remora sends close_notify, then FIN: a client that does not
    tolerate a bare FIN (suppress_ragged_eofs off) reads a clean end."""
    with tls_connect(pki, tls_proxy.port, suppress_ragged_eofs=False, min_version=version,
                     max_version=version) as s:
        status, headers, _ = get_h1(s, extra="Connection: close\r\n")
        assert status == 200 and headers.get("connection") == "close"
        # b"" only on close_notify; a FIN without it raises SSLEOFError.
        assert s.recv(4096) == b""


def test_handshake_timeout(remora, upstream, pki):
    cfg, _ = tls_config(pki, [upstream.addr], plain=False,
                        limits={"tls_handshake_timeout": "1s", "client_idle_timeout": "10s"})
    r = remora(config=cfg)
    # A client that connects and sends nothing is closed after tls_handshake_timeout.
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", r.port), timeout=10) as s:
        assert s.recv(1) == b""
    took = time.monotonic() - t0
    assert 0.8 <= took <= 3.0, took
    # One that stops halfway (a ClientHello cut short) too.
    hello = bytearray()
    inb, outb = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = client_ctx(pki).wrap_bio(inb, outb, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    hello += outb.read()
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", r.port), timeout=10) as s:
        s.sendall(bytes(hello[:len(hello) // 2]))
        assert s.recv(1) == b""
    assert 0.8 <= time.monotonic() - t0 <= 3.0
    # Once the handshake is done the timer is client_idle_timeout's: an idle TLS conn lives on.
    with tls_connect(pki, r.port) as s:
        time.sleep(1.6)
        status, _, _ = get_h1(s)
        assert status == 200


# ---- reload and bad configurations ------------------------------------------------------------

def der(pki, name):
    return ssl.PEM_cert_to_DER_cert((pki / (name + ".pem")).read_text())


def test_reload_changes_the_certificate(remora, upstream, pki, tmp_path):
    cfg, _ = tls_config(pki, [upstream.addr], plain=False)
    path = tmp_path / "remora.yaml"
    path.write_text(render(cfg))
    r = remora(config=cfg, config_file=path)
    old = tls_connect(pki, r.port)
    assert old.getpeercert(binary_form=True) == der(pki, "server")
    assert get_h1(old)[0] == 200
    cfg["listeners"][0]["tls"] = tls_block(pki, "server2")
    path.write_text(render(cfg))
    wait_state(r, success=1)
    with tls_connect(pki, r.port) as s:
        assert s.getpeercert(binary_form=True) == der(pki, "server2")
        assert get_h1(s)[0] == 200
    # The connection from before the reload keeps its session and is still served.
    assert get_h1(old)[0] == 200
    old.close()
    # A reload naming a key that does not match is refused; the running context stays.
    cfg["listeners"][0]["tls"] = tls_block(pki, "server2", key=str(pki / "other.key"))
    path.write_text(render(cfg))
    wait_state(r, failure=1)
    with tls_connect(pki, r.port) as s:
        assert s.getpeercert(binary_form=True) == der(pki, "server2")
    assert any("does not match the certificate" in e.get("msg", "") for e in r.log_lines())


def test_bad_cert_or_key_refused(run_remora, upstream, pki, tmp_path):
    (tmp_path / "junk.pem").write_text("not a certificate\n")
    cases = [
        (tls_block(pki, key=str(pki / "other.key")),
         'listener "tls": tls.key %s does not match the certificate in tls.cert %s'
         % (pki / "other.key", pki / "server.pem")),
        (tls_block(pki, cert=str(tmp_path / "missing.pem")),
         'listener "tls": tls.cert %s: cannot read: No such file or directory'
         % (tmp_path / "missing.pem")),
        (tls_block(pki, cert=str(tmp_path / "junk.pem")),
         'listener "tls": tls.cert %s: no usable PEM certificate chain' % (tmp_path / "junk.pem")),
        (tls_block(pki, key=str(tmp_path / "missing.key")),
         'listener "tls": tls.key %s: cannot read: No such file or directory'
         % (tmp_path / "missing.key")),
        (tls_block(pki, ciphers="NOT-A-CIPHER"),
         'listener "tls": tls.ciphers "NOT-A-CIPHER" selects no cipher'),
    ]
    for i, (tls, want) in enumerate(cases):
        cfg, _ = tls_config(pki, [upstream.addr], tls=tls)
        path = tmp_path / ("bad%d.yaml" % i)
        path.write_text(render(cfg))
        out = run_remora("--check", "-c", path)
        text = out.stdout.decode()
        assert out.returncode == 1, text
        assert text.startswith("%s: %s" % (path, want)), text
        # Starting with it fails the same way, before anything listens.
        start = run_remora("-c", path)
        assert start.returncode == 1
        msgs = [json.loads(ln).get("msg", "") for ln in start.stderr.decode().splitlines()
                if ln.startswith("{")]
        assert any(m.startswith(want) for m in msgs), start.stderr
    # Schema errors point at the line.
    path = tmp_path / "schema.yaml"
    path.write_text('listeners:\n'
                    '  - name: a\n'
                    '    address: "127.0.0.1:1"\n'
                    '    tls: {cert: a.pem, min_version: "1.1", alpn: [h3]}\n'
                    '  - name: u\n'
                    '    address: "unix:/tmp/remora-x.sock"\n'
                    '    tls: {cert: a.pem, key: a.key}\n')
    out = run_remora("--check", "-c", path)
    lines = [ln for ln in out.stdout.decode().splitlines() if ln.startswith(str(path))]
    assert out.returncode == 1
    assert lines == [
        '%s:4:10: missing key "key" in tls' % path,
        '%s:4:37: bad value "1.1" for "min_version" (expected "1.2" or "1.3")' % path,
        '%s:4:51: bad value "h3" for "alpn" (expected h2 or http/1.1)' % path,
        '%s:7:10: "tls" needs a TCP address (not a unix: socket)' % path,
    ], lines


# ---- observability -----------------------------------------------------------------------------

def test_tls_families_only_with_a_tls_listener(proxy, tls_proxy):
    """A plaintext-only remora has no remora_tls_* family; one with a TLS listener shows them
    at zero from the start, with the downstream side label."""
    assert not [n for n in metrics(proxy.admin_port).names() if n.startswith("remora_tls_")]
    m = metrics(tls_proxy.admin_port)
    assert handshakes(tls_proxy) == {"ok": 0, "failed": 0, "timeout": 0}
    assert m.value("remora_tls_handshake_duration_seconds_count", side="downstream") == 0
    assert m.value("remora_tls_resumed_total", side="downstream") == 0
    assert m.types["remora_tls_handshake_duration_seconds"] == "histogram"


def test_tls_families_pass_promtool_and_openmetrics(tls_proxy, pki):
    """With TLS traffic counted, promtool accepts the text scrape without lint problems and
    the strict OpenMetrics parser of python3-prometheus-client reads the TLS families."""
    out = curl("--cacert", str(pki / "ca.pem"), "https://localhost:%d/echo" % tls_proxy.port)
    assert out.returncode == 0, out.stderr
    wait_handshakes(tls_proxy, {"ok": 1, "failed": 0, "timeout": 0})
    promtool = "/usr/bin/promtool"
    if not os.access(promtool, os.X_OK):
        pytest.skip("%s is missing (Debian package prometheus)" % promtool)
    r, _ = scrape(tls_proxy.admin_port)
    p = subprocess.run([promtool, "check", "metrics"], input=r.body, capture_output=True,
                       timeout=20)
    text = (p.stdout + p.stderr).decode(errors="replace")
    assert p.returncode == 0 and not text.strip(), text
    try:
        from prometheus_client.openmetrics.parser import text_string_to_metric_families
    except ImportError:
        pytest.skip("python3-prometheus-client is not installed")
    r, _ = scrape(tls_proxy.admin_port, accept="application/openmetrics-text; version=1.0.0")
    fams = {f.name: f for f in text_string_to_metric_families(r.body.decode())}
    assert fams["remora_tls_handshakes"].type == "counter"
    assert fams["remora_tls_resumed"].type == "counter"
    assert fams["remora_tls_handshake_duration_seconds"].type == "histogram"
    ok = [s for s in fams["remora_tls_handshakes"].samples
          if s.labels == {"side": "downstream", "result": "ok"}]
    assert [s.value for s in ok] == [1], fams["remora_tls_handshakes"].samples


def test_handshake_results_counted(remora, upstream, pki):
    """ok (curl), failed (garbage bytes; a TLS 1.1-only client; a client that closes halfway
    through its ClientHello), timeout (a silent client): each counted once, where the
    handshake ends; plaintext conns count nothing. The duration histogram holds the ok ones
    only, from accept to handshake done."""
    cfg, plain_port = tls_config(pki, [upstream.addr],
                                 limits={"tls_handshake_timeout": "1s"})
    r = remora(config=cfg)
    out = curl("--cacert", str(pki / "ca.pem"), "https://localhost:%d/echo" % r.port)
    assert out.returncode == 0, out.stderr
    wait_handshakes(r, {"ok": 1, "failed": 0, "timeout": 0})
    m = metrics(r.admin_port)
    assert m.value("remora_tls_handshake_duration_seconds_count", side="downstream") == 1
    total = m.value("remora_tls_handshake_duration_seconds_sum", side="downstream")
    assert 0 < total < 1, total
    assert m.value("remora_tls_handshake_duration_seconds_bucket", side="downstream",
                   le="1") == 1
    assert m.value("remora_tls_resumed_total", side="downstream") == 0

    # Plain HTTP on the TLS port is no ClientHello: failed.
    with socket.create_connection(("127.0.0.1", r.port), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            while s.recv(4096):
                pass
        except ConnectionResetError:
            pass
    wait_handshakes(r, {"ok": 1, "failed": 1, "timeout": 0})
    # A client offering only TLS 1.1 gets a protocol_version alert: failed.
    rc, text = s_client(r.port, "-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0")
    assert "alert protocol version" in text, text
    wait_handshakes(r, {"ok": 1, "failed": 2, "timeout": 0})
    # A client that closes halfway through its ClientHello: failed, not a timeout.
    inb, outb = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = client_ctx(pki).wrap_bio(inb, outb, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    hello = outb.read()
    with socket.create_connection(("127.0.0.1", r.port), timeout=5) as s:
        s.sendall(hello[:len(hello) // 2])
        time.sleep(0.1)
    wait_handshakes(r, {"ok": 1, "failed": 3, "timeout": 0})
    # A client that says nothing: timeout once tls_handshake_timeout (1 s) fires.
    with socket.create_connection(("127.0.0.1", r.port), timeout=10) as s:
        assert s.recv(1) == b""
    wait_handshakes(r, {"ok": 1, "failed": 3, "timeout": 1})
    # Conns on the plaintext listener have no handshake.
    assert http(plain_port, "GET", "/echo").status == 200
    time.sleep(0.1)
    assert handshakes(r) == {"ok": 1, "failed": 3, "timeout": 1}
    m = metrics(r.admin_port)
    assert m.value("remora_tls_handshake_duration_seconds_count", side="downstream") == 1


@pytest.mark.parametrize("flag", ["-tls1_2", "-tls1_3"])
def test_resumption_counted(tls_proxy, pki, tmp_path, flag):
    """A client that saves its session (a ticket) and comes back with it resumes: counted in
    remora_tls_resumed_total, and both handshakes as ok."""
    sess = tmp_path / "sess.pem"
    req = b"GET /echo HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"

    def connect(*args):
        # -ign_eof with a request: s_client reads until remora closes, so a TLS 1.3 ticket
        # (sent after the handshake) is in the session it saves.
        out = subprocess.run(["openssl", "s_client", "-connect", "127.0.0.1:%d" % tls_proxy.port,
                              "-servername", "localhost", "-CAfile", str(pki / "ca.pem"),
                              "-ign_eof", flag] + list(args),
                             input=req, capture_output=True, timeout=10)
        return out.stdout.decode(errors="replace") + out.stderr.decode(errors="replace")

    text = connect("-sess_out", str(sess))
    assert re.search(r"^New, TLSv1\.[23]", text, re.M), text
    assert "HTTP/1.1 200" in text, text
    text = connect("-sess_in", str(sess))
    assert re.search(r"^Reused, TLSv1\.[23]", text, re.M), text
    assert "HTTP/1.1 200" in text, text
    wait_handshakes(tls_proxy, {"ok": 2, "failed": 0, "timeout": 0})
    m = metrics(tls_proxy.admin_port)
    assert m.value("remora_tls_resumed_total", side="downstream") == 1
    assert m.value("remora_tls_handshake_duration_seconds_count", side="downstream") == 2


def stream_counts(r):
    m = metrics(r.admin_port)
    return {p: m.value("remora_downstream_streams_total", proto=p) for p in ("http1", "h2c", "h2")}


def test_streams_by_proto_over_tls(tls_proxy, pki):
    """h2 negotiated by ALPN counts as proto="h2", HTTP/1.1 over TLS as "http1", and h2c
    (prior knowledge on the plaintext listener) stays "h2c"."""
    ca = str(pki / "ca.pem")
    tls_url = "https://localhost:%d/echo" % tls_proxy.port
    plain_url = "http://127.0.0.1:%d/echo" % tls_proxy.plain_port
    assert stream_counts(tls_proxy) == {"http1": 0, "h2c": 0, "h2": 0}
    for args in (["--cacert", ca, "--http2", tls_url, tls_url],
                 ["--cacert", ca, "--http1.1", tls_url],
                 ["--http2-prior-knowledge", plain_url]):
        out = curl(*args)
        assert out.returncode == 0, out.stderr
    want = {"http1": 1, "h2c": 1, "h2": 2}
    got = wait_for(lambda: (lambda c: c if c == want else None)(stream_counts(tls_proxy)))
    assert got == want, stream_counts(tls_proxy)


def test_access_log_tls_fields(tls_proxy, pki):
    """Requests over TLS log tls_version and alpn right after client: "h2" and "http/1.1" as
    negotiated, no alpn when the client offered none; plaintext requests have neither."""
    ca = str(pki / "ca.pem")
    for path, args in (("/echo/h1", ["--http1.1", "--tlsv1.3"]), ("/echo/h2", ["--http2"])):
        out = curl("--cacert", ca, *args, "https://localhost:%d%s" % (tls_proxy.port, path))
        assert out.returncode == 0, out.stderr
    with tls_connect(pki, tls_proxy.port, max_version=ssl.TLSVersion.TLSv1_2) as s:
        assert s.selected_alpn_protocol() is None
        assert get_h1(s, "/echo/none")[0] == 200
    with HttpConn(tls_proxy.plain_port) as c:
        c.send(build_request("GET", "/echo/plain"))
        assert c.read_response().status == 200
    logs = {e["path"]: e for e in tls_proxy.access_logs(at_least=4)}
    assert sorted(logs) == ["/echo/h1", "/echo/h2", "/echo/none", "/echo/plain"], logs
    for path, version, alpn in (("/echo/h1", "TLSv1.3", "http/1.1"),
                                ("/echo/h2", "TLSv1.3", "h2"),
                                ("/echo/none", "TLSv1.2", None)):
        e = logs[path]
        keys = list(e)
        assert e["tls_version"] == version, e
        assert e.get("alpn") == alpn, e
        tail = ["client", "tls_version"] + (["alpn"] if alpn else [])
        assert keys[-len(tail):] == tail, keys
    plain = logs["/echo/plain"]
    assert "tls_version" not in plain and "alpn" not in plain, plain
    assert list(plain)[-1] == "client", plain


# ---- OCSP stapling (tls.ocsp_response) ----------------------------------------------------------

def ocsp_response(pki, d, name, status="V", cert="server"):
    """d/name.der: an OCSP response signed by the test CA (its own responder) about pki's cert,
    from `openssl ocsp` run as a responder over an index whose entry says status ("V" good, "R"
    revoked); valid from now for a day."""
    serial = subprocess.run(["openssl", "x509", "-serial", "-noout", "-in",
                             str(pki / (cert + ".pem"))],
                            capture_output=True, text=True, check=True).stdout.strip().split("=")[1]
    exp = time.strftime("%y%m%d%H%M%SZ", time.gmtime(time.time() + 86400))
    rev = time.strftime("%y%m%d%H%M%SZ", time.gmtime(time.time() - 60)) if status == "R" else ""
    (d / (name + ".idx")).write_text("%s\t%s\t%s\t%s\tunknown\t/CN=localhost\n"
                                     % (status, exp, rev, serial))
    req = d / (name + ".req")
    subprocess.run(["openssl", "ocsp", "-issuer", str(pki / "ca.pem"), "-cert",
                    str(pki / (cert + ".pem")), "-no_nonce", "-reqout", str(req)],
                   capture_output=True, check=True, timeout=30)
    subprocess.run(["openssl", "ocsp", "-index", str(d / (name + ".idx")), "-rsigner",
                    str(pki / "ca.pem"), "-rkey", str(pki / "ca.key"), "-CA", str(pki / "ca.pem"),
                    "-reqin", str(req), "-respout", str(d / (name + ".der")), "-ndays", "1"],
                   capture_output=True, check=True, timeout=30)
    return d / (name + ".der")


def test_ocsp_stapled(remora, upstream, pki, tmp_path):
    """With tls.ocsp_response, a client asking for the certificate's status (s_client -status)
    gets the file's response stapled (its Produced At and serial are the file's)."""
    der = ocsp_response(pki, tmp_path, "good")
    text = subprocess.run(["openssl", "ocsp", "-respin", str(der), "-resp_text", "-noverify"],
                          capture_output=True, text=True, timeout=30).stdout
    produced = re.search(r"Produced At: (.+)", text).group(1)
    serial = re.search(r"Serial Number: (\w+)", text).group(1)
    cfg, _ = tls_config(pki, [upstream.addr], tls=tls_block(pki, ocsp_response=str(der)))
    r = remora(config=cfg)
    _, out = s_client(r.port, "-status", "-CAfile", str(pki / "ca.pem"))
    assert "OCSP Response Status: successful" in out, out
    assert "Cert Status: good" in out, out
    assert "Produced At: %s" % produced in out and "Serial Number: %s" % serial in out, out


def test_bad_ocsp_response_refused(run_remora, upstream, pki, tmp_path):
    """A response that is not DER, is about another certificate, or says "revoked" is refused by
    --check with the reason; none of them is ever stapled."""
    (tmp_path / "junk.der").write_bytes(b"not an OCSP response")
    cases = [
        (tmp_path / "junk.der", "not a DER OCSP response"),
        (ocsp_response(pki, tmp_path, "other", cert="server2"),
         "the response has no entry for tls.cert's certificate"),
        (ocsp_response(pki, tmp_path, "revoked", status="R"),
         "the response says the certificate is revoked"),
        (tmp_path / "missing.der", "cannot read: No such file or directory"),
    ]
    for i, (der, want) in enumerate(cases):
        got = listener_check_error(run_remora, pki, [upstream.addr], tmp_path / ("ocsp%d.yaml" % i),
                                   tls_block(pki, ocsp_response=str(der)))
        assert got.startswith('listener "tls": tls.ocsp_response %s: %s' % (der, want)), got


# ---- the write path under a slow reader ---------------------------------------------------------

def read_chunked_h1(s, buf):
    """One chunked HTTP/1.1 response from s after the bytes buf already read: (status, body,
    the bytes read past it)."""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        assert chunk, "closed in a head"
        buf += chunk
    head, rest = buf.split(b"\r\n\r\n", 1)
    status = int(head.split(b" ", 2)[1])
    body = b""
    while True:
        while b"\r\n" not in rest:
            chunk = s.recv(65536)
            assert chunk, "closed in a chunk size"
            rest += chunk
        line, rest = rest.split(b"\r\n", 1)
        size = int(line.split(b";")[0], 16)
        while len(rest) < size + 2:
            chunk = s.recv(65536)
            assert chunk, "closed in a chunk"
            rest += chunk
        body, rest = body + rest[:size], rest[size + 2:]
        if size == 0:
            return status, body, rest


def test_pipelined_responses_to_a_slow_reader(tls_proxy, pki):
    """Many pipelined responses of mixed shapes (tiny, a few KiB, larger than a record, chunked
    in 100-byte chunks: many small pieces that go out gathered into records) to a client whose
    receive buffer is tiny and which reads slowly, so remora's TLS writes stop and resume in the
    middle of gathered records over and over: every body arrives complete, in order."""
    shapes = [("/bytes?n=%d", 1), ("/bytes?n=%d", 3000), ("/chunked?n=%d&chunk=100", 300000),
              ("/bytes?n=%d", 20000), ("/bytes?n=%d", 500000), ("/chunked?n=%d&chunk=100", 300)]
    reqs = [shapes[i % len(shapes)] for i in range(36)]
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.settimeout(20)
    raw.connect(("127.0.0.1", tls_proxy.port))
    s = client_ctx(pki, alpn=["http/1.1"]).wrap_socket(raw, server_hostname="localhost")
    s.sendall(b"".join(("GET %s HTTP/1.1\r\nHost: localhost\r\n\r\n" % (path % n)).encode()
                       for path, n in reqs))
    time.sleep(1.0)  # remora fills the socket, then its own output, and blocks
    buf = b""
    for i, (path, n) in enumerate(reqs):
        if path.startswith("/chunked"):
            status, body, buf = read_chunked_h1(s, buf)
        else:
            while b"\r\n\r\n" not in buf:
                buf += s.recv(4096)
            head, buf = buf.split(b"\r\n\r\n", 1)
            status = int(head.split(b" ", 2)[1])
            while len(buf) < n:
                buf += s.recv(4096)
                if len(buf) % 7 == 0:
                    time.sleep(0.001)
            body, buf = buf[:n], buf[n:]
        assert status == 200, (i, path)
        assert len(body) == n and hashlib.sha256(body).hexdigest() == pattern_sha256(n), (i, path)
    s.close()
