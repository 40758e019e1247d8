# SPDX-License-Identifier: Apache-2.0
"""89: real TLS clients against remora's TLS listener (issue 16's client battery), each asked
for what test_84_tls.py does not already check with it. Certificates are made in the test with
the openssl CLI (tlsutil.make_pki, plus an RSA server certificate under the same CA).

- curl: a POST of a few hundred KB (random bytes, sha256 at the app) and a download of a few
  hundred KB over --http1.1 and --http2 on TLS 1.2 and 1.3 (`%{http_version}`, the version
  and the suite checked);
- openssl s_client: ALPN h2,http/1.1 -> h2, http/1.1 -> http/1.1, none -> HTTP/1.1 answered;
  TLS 1.0 and 1.1 refused by remora (the client allowed to offer them: SECLEVEL 0) with a
  protocol_version alert it receives; clients offering only non-AEAD (CBC) or only RSA key
  exchange TLS 1.2 suites refused with a handshake_failure alert, while a listener configured
  with those `ciphers` accepts the same clients; renegotiation refused (remora answers the
  ClientHello with a no_renegotiation warning, never a ServerHello); TLS 1.3 KeyUpdate with and
  without update_requested (remora updates its own keys only when asked) and requests served
  after both, and five KeyUpdates during a 32 MiB download, all answered, the body complete;
- nghttp: h2 negotiated, 10 concurrent streams on one TLS connection;
- h2load: -n 2000 -c 10 -m 10 over h2 and --h1 over TLS, zero failures, one handshake per
  client;
- grpcio: a secure channel with the test CA for the four call kinds (remora -> grpc_app.py
  over h2c), the calls logged as h2 over TLS; a channel that does not trust the CA fails;
- sslscan (XML): the default profile (ECDSA and RSA certificates) accepts TLS 1.2 and 1.3 only,
  TLS 1.2 suites AEAD with ECDHE only, groups X25519 and P-256 only, no renegotiation and no
  compression as sslscan reports them (it can see neither here: it probes renegotiation over
  TLS 1.3 and has no zlib); configured `ciphers`/`ciphersuites` and `min_version: "1.3"` show
  as configured.

The rotation under load (a Secret `..data` swap during wrk over https) is test_85's."""

import hashlib
import json
import random
import re
import shutil
import subprocess
import time
import xml.etree.ElementTree as ET

import pytest

from helpers import curl, free_port, metrics, pattern_sha256
from tlsutil import (SClient, get_h1, handshakes, make_pki, make_server_cert, s_client,
                     tls_block, tls_config, tls_connect, wait_handshakes)

REQ = "GET /echo HTTP/1.1\nHost: localhost\n\n"  # s_client -crlf sends CRLF line ends
BODY_END = r'"trailers": \[\]\}'  # the end of upstream.py's /echo JSON
AEAD_ECDHE = re.compile(r"^ECDHE-(ECDSA|RSA)-(AES128-GCM-SHA256|AES256-GCM-SHA384|"
                        r"CHACHA20-POLY1305)$")


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """make_pki (ca, server, server2, other.key) plus rsa: an RSA 2048 server certificate under
    the same CA."""
    d = make_pki(tmp_path_factory.mktemp("pki"))
    make_server_cert(d, "rsa", rsa=True)
    return d


@pytest.fixture
def tls_proxy(remora, upstream, pki):
    """remora, one worker, with one TLS listener (ECDSA certificate, default profile)."""
    cfg, _ = tls_config(pki, [upstream.addr], plain=False)
    return remora(config=cfg)


def add_listener(cfg, name, tls):
    """Appends a TLS listener on a free port to cfg; returns its port."""
    used = {int(l["address"].rsplit(":", 1)[1]) for l in cfg["listeners"]}
    used.add(int(cfg["admin"]["address"].rsplit(":", 1)[1]))
    port = free_port()
    while port in used:
        port = free_port()
    cfg["listeners"].append({"name": name, "address": "127.0.0.1:%d" % port, "tls": tls})
    return port


# ---- curl --------------------------------------------------------------------------------------

@pytest.mark.parametrize("flag,version,tls", [("--http1.1", "1.1", "1.3"), ("--http2", "2", "1.3"),
                                              ("--http1.1", "1.1", "1.2"), ("--http2", "2", "1.2")])
def test_curl_post_and_download(tls_proxy, pki, tmp_path, flag, version, tls):
    """A POST of 400 KB of random bytes reaches the app whole (length and sha256), and 300 KB
    come back byte-exact, over the protocol and TLS version curl negotiated (both checked; over
    TLS 1.2 with an ECDHE AEAD suite, as h2 requires)."""
    body = random.Random(89).randbytes(400 * 1024 + 7)
    up = tmp_path / "up.bin"
    up.write_bytes(body)
    base = "https://localhost:%d" % tls_proxy.port
    ca = str(pki / "ca.pem")
    pin = ["--tlsv" + tls, "--tls-max", tls]
    out = curl("--cacert", ca, flag, *pin, "-v", "--data-binary", "@" + str(up),
               "-H", "content-type: application/octet-stream", "-w", "\n%{http_version}",
               base + "/upload")
    assert out.returncode == 0, out.stderr
    got, proto = out.stdout.rsplit(b"\n", 1)
    assert proto.decode() == version
    m = re.search(r"SSL connection using TLSv(1\.[23]) / (\S+)", out.stderr.decode())
    assert m and m.group(1) == tls, out.stderr
    if tls == "1.2":
        assert AEAD_ECDHE.match(m.group(2)), m.group(2)
    seen = json.loads(got)
    assert (seen["body_len"], seen["body_sha256"]) == (len(body), hashlib.sha256(body).hexdigest())
    n = 300 * 1024 + 3
    dl = tmp_path / "down.bin"
    out = curl("--cacert", ca, flag, *pin, "-o", str(dl), "-w", "%{http_version} %{http_code}",
               base + "/bytes?n=%d" % n)
    assert out.returncode == 0, out.stderr
    assert out.stdout.decode() == "%s 200" % version
    assert dl.stat().st_size == n
    assert hashlib.sha256(dl.read_bytes()).hexdigest() == pattern_sha256(n)


# ---- openssl s_client: ALPN and versions -------------------------------------------------------

def session(text):
    """(protocol, cipher) of the SSL-Session s_client printed (its "New, ..." line names the
    version that introduced the cipher, not the one negotiated)."""
    m = re.search(r"^\s+Protocol\s*: (\S+)\n\s+Cipher\s*: (\S+)$", text, re.M)
    return m.groups() if m else None


def s_client_request(port, pki, *args):
    """s_client sending one HTTP/1.1 request (Connection: close) and reading to the end."""
    req = b"GET /echo HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    out = subprocess.run(["openssl", "s_client", "-connect", "127.0.0.1:%d" % port,
                          "-servername", "localhost", "-CAfile", str(pki / "ca.pem"),
                          "-ign_eof"] + list(args), input=req, capture_output=True, timeout=10)
    return out.returncode, out.stdout.decode(errors="replace") + out.stderr.decode(
        errors="replace")


@pytest.mark.parametrize("offer,want", [("h2,http/1.1", "h2"), ("http/1.1", "http/1.1"),
                                        (None, None)])
def test_s_client_alpn(tls_proxy, pki, offer, want):
    """The protocol s_client is told; on http/1.1 and without ALPN an HTTP/1.1 request is
    answered (h2 would answer it with a GOAWAY)."""
    args = ["-alpn", offer] if offer else []
    if want == "h2":
        rc, text = s_client(tls_proxy.port, "-CAfile", str(pki / "ca.pem"), *args)
        assert "ALPN protocol: h2\n" in text, text
        assert "Verify return code: 0 (ok)" in text, text
        return
    rc, text = s_client_request(tls_proxy.port, pki, *args)
    assert ("ALPN protocol: http/1.1\n" if want else "No ALPN negotiated") in text, text
    assert "Verify return code: 0 (ok)" in text, text
    assert re.search(r"^HTTP/1\.1 200 OK\r$", text, re.M), text
    assert '"x-forwarded-proto", "https"' in text.lower(), text


@pytest.mark.parametrize("flag", ["-tls1", "-tls1_1"])
def test_old_versions_refused_by_remora(tls_proxy, pki, flag):
    """A client allowed to offer TLS 1.0 or 1.1 (SECLEVEL 0 lifts its own floor) receives
    remora's fatal protocol_version alert; the same client settings with -tls1_2 get through,
    so the refusal is remora's. Both handshakes counted."""
    rc, text = s_client(tls_proxy.port, flag, "-cipher", "DEFAULT@SECLEVEL=0", "-msg")
    assert rc != 0, text
    assert re.search(r"^<<< .*Alert.*fatal protocol_version", text, re.M), text
    assert not re.search(r"^<<< .*ServerHello", text, re.M), text
    rc, text = s_client_request(tls_proxy.port, pki, "-tls1_2", "-cipher", "DEFAULT@SECLEVEL=0")
    assert re.search(r"^HTTP/1\.1 200 OK\r$", text, re.M), text
    wait_handshakes(tls_proxy, {"ok": 1, "failed": 1, "timeout": 0})


# ---- weak suites -------------------------------------------------------------------------------

WEAK = "ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES128-SHA256:ECDHE-RSA-AES128-SHA:AES128-GCM-SHA256"


@pytest.fixture
def suite_proxy(remora, upstream, pki):
    """remora with four TLS listeners: ECDSA and RSA certificates with the default profile
    (.ports["ecdsa"], ["rsa"]) and the same two with `ciphers` that also allow CBC suites and
    RSA key exchange (["ecdsa-weak"], ["rsa-weak"])."""
    cfg, _ = tls_config(pki, [upstream.addr], plain=False)
    cfg["listeners"][0]["name"] = "ecdsa"
    ports = {"ecdsa": int(cfg["listeners"][0]["address"].rsplit(":", 1)[1])}
    ports["rsa"] = add_listener(cfg, "rsa", tls_block(pki, "rsa"))
    ports["ecdsa-weak"] = add_listener(cfg, "ecdsa-weak", tls_block(pki, ciphers=WEAK))
    ports["rsa-weak"] = add_listener(cfg, "rsa-weak", tls_block(pki, "rsa", ciphers=WEAK))
    r = remora(config=cfg)
    r.ports = ports
    return r


@pytest.mark.parametrize("cert,suite", [
    ("ecdsa", "ECDHE-ECDSA-AES128-SHA"),     # CBC, SHA-1 MAC
    ("ecdsa", "ECDHE-ECDSA-AES128-SHA256"),  # CBC, SHA-256 MAC
    ("rsa", "ECDHE-RSA-AES128-SHA"),         # CBC
    ("rsa", "AES128-GCM-SHA256"),            # RSA key exchange (AEAD, no forward secrecy)
])
def test_weak_suite_only_client_refused(suite_proxy, pki, cert, suite):
    """A TLS 1.2 client offering only a non-AEAD suite or only RSA key exchange gets remora's
    handshake_failure alert with the default profile; the listener whose `ciphers` allow that
    suite, with the same certificate, accepts the same client: the default profile refuses it,
    not the client or the certificate. One handshake counted failed, one ok."""
    args = ["-tls1_2", "-cipher", suite + "@SECLEVEL=0", "-msg"]
    rc, text = s_client(suite_proxy.ports[cert], *args)
    assert rc != 0, text
    assert re.search(r"^<<< .*Alert.*fatal handshake_failure", text, re.M), text
    assert not re.search(r"^<<< .*ServerHello", text, re.M), text
    rc, text = s_client_request(suite_proxy.ports[cert + "-weak"], pki, *args)
    assert session(text) == ("TLSv1.2", suite), text
    assert re.search(r"^HTTP/1\.1 200 OK\r$", text, re.M), text
    wait_handshakes(suite_proxy, {"ok": 1, "failed": 1, "timeout": 0})


def test_default_suites_with_an_rsa_certificate(suite_proxy, pki):
    """The default profile serves an RSA certificate with ECDHE-RSA AEAD suites."""
    rc, text = s_client_request(suite_proxy.ports["rsa"], pki, "-tls1_2")
    version, cipher = session(text)
    assert version == "TLSv1.2", text
    assert re.match(r"ECDHE-RSA-AES(128|256)-GCM-SHA(256|384)$", cipher), text
    assert re.search(r"^HTTP/1\.1 200 OK\r$", text, re.M), text


# ---- renegotiation and KeyUpdate --------------------------------------------------------------

SERVER_HELLO = r"^<<< .*Handshake.*ServerHello$"


def test_renegotiation_refused(tls_proxy, pki):
    """TLS 1.2: a client that renegotiates (s_client's "R") gets a no_renegotiation warning
    instead of a ServerHello (OpenSSL's client then gives up with handshake_failure); remora
    did not renegotiate (one ServerHello in all, one handshake counted), and it serves a new
    connection."""
    with SClient(tls_proxy.port, pki / "ca.pem", "-tls1_2") as c:
        assert c.wait(SClient.HANDSHAKE_DONE), c.out
        assert c.send(REQ)
        assert c.wait(r"^HTTP/1\.1 200 OK\r?$"), c.out
        assert c.wait(BODY_END), c.out  # the whole body: the conn is idle
        assert c.send("R\n")
        assert c.wait(r"^<<< .*Alert.*warning no_renegotiation"), c.out
        rc = c.exited()
        text = c.out
    assert "RENEGOTIATING" in text, text
    after = text.split("RENEGOTIATING", 1)[1]
    assert re.search(r"^>>> .*ClientHello$", after, re.M), text
    assert not re.search(SERVER_HELLO, after, re.M), text
    assert len(re.findall(SERVER_HELLO, text, re.M)) == 1, text
    assert rc not in (None, 0), text
    with tls_connect(pki, tls_proxy.port) as s:
        assert get_h1(s)[0] == 200
    wait_handshakes(tls_proxy, {"ok": 2, "failed": 0, "timeout": 0})


KEY_UPDATE_IN = r"^<<< TLS 1\.3, Handshake \[length 0005\], KeyUpdate$"
KEY_UPDATE_OUT = r"^>>> TLS 1\.3, Handshake \[length 0005\], KeyUpdate$"


def test_tls13_key_update(tls_proxy, pki):
    """TLS 1.3: after a KeyUpdate with update_requested ("K") remora sends its own KeyUpdate
    before its next application data (RFC 8446 4.6.3) and the request is answered under the
    new keys; after one without ("k") it sends none and answers again. One connection, one
    handshake throughout."""
    with SClient(tls_proxy.port, pki / "ca.pem", "-tls1_3") as c:
        assert c.wait(SClient.HANDSHAKE_DONE), c.out
        assert c.send("K\n")
        assert c.wait(KEY_UPDATE_OUT) == 1, c.out
        assert c.send(REQ)
        assert c.wait(BODY_END) == 1, c.out
        assert c.send("k\n")
        assert c.wait(KEY_UPDATE_OUT, count=2) == 2, c.out
        assert c.send(REQ)
        assert c.wait(BODY_END, count=2) == 2, c.out
        text = c.out
        assert c.proc.poll() is None, text
    first, second = text.split("KEYUPDATE", 2)[1:]
    # "K": remora's KeyUpdate, then the response.
    assert re.search(KEY_UPDATE_IN + r"(?s:.*)^HTTP/1\.1 200 OK\r?$", first, re.M), text
    # "k": no KeyUpdate of remora's in front of the second response.
    assert re.search(r"^HTTP/1\.1 200 OK\r?$", second, re.M), text
    assert not re.search(KEY_UPDATE_IN, second, re.M), text
    reqs = re.findall(r"^x-upstream-req-on-conn: (\d+)\r?$", text, re.M)
    assert reqs == ["1", "2"], text
    wait_handshakes(tls_proxy, {"ok": 1, "failed": 0, "timeout": 0})


def test_tls13_key_updates_during_a_download(tls_proxy, pki):
    """TLS 1.3: KeyUpdates with update_requested while remora writes a 32 MiB response (a
    slow reader: s_client prints every record, so remora's writes often wait for the socket):
    remora answers every one with its own KeyUpdate, the response completes (the access log:
    all bytes, termination "--"), and the connection serves another request."""
    n = 32 * 1024 * 1024
    with SClient(tls_proxy.port, pki / "ca.pem", "-tls1_3") as c:
        assert c.wait(SClient.HANDSHAKE_DONE), c.out
        assert c.send("GET /bytes?n=%d HTTP/1.1\nHost: localhost\n\n" % n)
        assert c.wait(r"^HTTP/1\.1 200 OK\r?$"), c.out[-2000:]
        for i in range(1, 6):
            assert c.send("K\n")
            assert c.wait(KEY_UPDATE_OUT, count=i, timeout=10) == i, c.out[-2000:]
        entries = tls_proxy.access_logs(at_least=1, timeout=30)
        assert [(e["path"], e["status"], e["termination"]) for e in entries] == [
            ("/bytes?n=%d" % n, 200, "--")], entries
        assert entries[0]["bytes_out"] > n, entries
        assert c.send(REQ)
        assert c.wait(BODY_END, timeout=10), c.out[-2000:]
        text = c.out
        assert c.proc.poll() is None, text[-2000:]
    assert len(re.findall(KEY_UPDATE_IN, text, re.M)) == 5, text[-2000:]
    # All of them while the body was still coming: body bytes follow remora's last KeyUpdate.
    last = [m.end() for m in re.finditer(KEY_UPDATE_IN, text, re.M)][-1]
    assert "0123456789abcdef" in text[last:].split("HTTP/1.1 200 OK")[0], text[last:last + 2000]
    wait_handshakes(tls_proxy, {"ok": 1, "failed": 0, "timeout": 0})


# ---- nghttp and h2load -------------------------------------------------------------------------

def test_nghttp_concurrent_streams(tls_proxy, upstream):
    """nghttp -v -m 10 over TLS: h2 negotiated by ALPN, ten requests as concurrent streams on
    one connection (the app has all ten in flight at once), every one 200."""
    upstream.stats(reset_peak=True)
    out = subprocess.run(["nghttp", "-v", "-n", "-m", "10", "-t", "20",
                          "https://127.0.0.1:%d/delay?ms=400" % tls_proxy.port],
                         capture_output=True, timeout=30)
    text = out.stdout.decode(errors="replace")
    assert out.returncode == 0, (text, out.stderr)
    assert "The negotiated protocol: h2" in text, text
    assert len(re.findall(r"send HEADERS frame <length=\d+, flags=0x\w+, stream_id=\d+>", text)) \
        == 10, text
    assert len(set(re.findall(r"recv \(stream_id=(\d+)\) :status: 200$", text, re.M))) == 10, \
        text
    assert upstream.stats()["max_in_flight"] == 10
    wait_handshakes(tls_proxy, {"ok": 1, "failed": 0, "timeout": 0})
    m = metrics(tls_proxy.admin_port)
    assert m.value("remora_downstream_streams_total", proto="h2") == 10


H2LOAD_RE = (r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
             r"(\d+) failed, (\d+) errored, (\d+) timeout")


@pytest.mark.parametrize("args,alpn", [(["-m", "10"], "h2"), (["--h1"], "http/1.1")])
def test_h2load_over_tls(tls_proxy, args, alpn):
    """h2load -n 2000 -c 10 over TLS (h2 with 10 streams per connection, and --h1 with
    keep-alive): all 2000 succeed with 2xx, no failure, error or timeout, over the protocol
    asked; one handshake per client."""
    out = subprocess.run(["h2load", "-n", "2000", "-c", "10", "-T", "20", "-N", "20"] + args +
                         ["https://127.0.0.1:%d/bytes?n=100" % tls_proxy.port],
                         capture_output=True, timeout=60)
    text = out.stdout.decode(errors="replace")
    assert out.returncode == 0, (text, out.stderr)
    m = re.search(H2LOAD_RE, text)
    assert m, text
    assert tuple(map(int, m.groups())) == (2000, 2000, 2000, 2000, 0, 0, 0), text
    m = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text)
    assert m and tuple(map(int, m.groups())) == (2000, 0, 0, 0), text
    assert "Application protocol: %s" % alpn in text, text
    assert "TLS Protocol: TLSv1.3" in text, text
    wait_handshakes(tls_proxy, {"ok": 10, "failed": 0, "timeout": 0})
    proto = "h2" if alpn == "h2" else "http1"
    assert metrics(tls_proxy.admin_port).value("remora_downstream_streams_total",
                                               proto=proto) == 2000


# ---- grpcio ------------------------------------------------------------------------------------

@pytest.fixture
def grpc_tls(remora, pki, tmp_path):
    """grpc_app.py behind remora's TLS listener (upstream over h2c); yields the Remora."""
    grpc_app = pytest.importorskip("grpc_app", reason="python3-grpcio is not installed")
    app = grpc_app.start(tmp_path)
    try:
        cfg, _ = tls_config(pki, [app.addr], plain=False, upstream_opts={"protocol": "h2c"})
        yield remora(config=cfg)
    finally:
        app.stop()


def secure_channel(port, roots):
    """A secure grpc channel to 127.0.0.1:port trusting roots (PEM bytes; None: the system
    store) and checking the name localhost (the certificate's DNS SAN)."""
    import grpc
    import grpc_app
    creds = grpc.ssl_channel_credentials(root_certificates=roots)
    opts = [("grpc.ssl_target_name_override", "localhost"),
            ("grpc.default_authority", "localhost"),
            ("grpc.max_receive_message_length", grpc_app.MAX_MSG),
            ("grpc.max_send_message_length", grpc_app.MAX_MSG),
            ("grpc.enable_retries", 0),
            ("grpc.enable_http_proxy", 0),
            ("grpc.use_local_subchannel_pool", 1)]
    return grpc.secure_channel("127.0.0.1:%d" % port, creds, options=opts)


def test_grpc_over_tls_four_call_kinds(grpc_tls, pki):
    """Unary (200 KB), server streaming (100 messages), client streaming (100 messages) and
    bidi (100 messages) calls byte for byte over a secure channel with the test CA; remora
    logs each as h2 over TLS 1.3."""
    import grpc_app
    rng = random.Random(24)
    with secure_channel(grpc_tls.port, (pki / "ca.pem").read_bytes()) as ch:
        req = rng.randbytes(200 * 1024)
        assert grpc_app.unary_unary(ch, "Unary")(req, timeout=20) == req
        got = list(grpc_app.unary_stream(ch, "ServerStream")(
            json.dumps({"n": 100, "size": 1000}).encode(), timeout=20))
        assert got == [grpc_app.stream_message(i, 1000) for i in range(100)]
        msgs = [rng.randbytes(rng.randrange(1, 5000)) for _ in range(100)]
        got = json.loads(grpc_app.stream_unary(ch, "ClientStream")(iter(msgs), timeout=20))
        assert got == {"count": 100, "bytes": sum(map(len, msgs)),
                       "sha256": hashlib.sha256(b"".join(msgs)).hexdigest()}
        got = list(grpc_app.stream_stream(ch, "BidiStream")(iter(msgs), timeout=20))
        assert got == msgs
    logs = {e["path"]: e for e in grpc_tls.access_logs(at_least=4)}
    for name in ("Unary", "ServerStream", "ClientStream", "BidiStream"):
        e = logs[grpc_app.method(name)]
        assert (e["status"], e["tls_version"], e["alpn"]) == (200, "TLSv1.3", "h2"), e
    assert handshakes(grpc_tls)["ok"] == 1


def test_grpc_untrusted_server_fails(grpc_tls):
    """A secure channel trusting only the system store does not accept the test certificate:
    the call fails UNAVAILABLE and reaches no app."""
    import grpc
    import grpc_app
    with secure_channel(grpc_tls.port, None) as ch:
        with pytest.raises(grpc.RpcError) as e:
            grpc_app.unary_unary(ch, "Unary")(b"x", timeout=5)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE, e.value
    assert not [e for e in grpc_tls.log_lines() if e.get("msg") == "access"]


# ---- sslscan -----------------------------------------------------------------------------------

SSLSCAN = shutil.which("sslscan")
needs_sslscan = pytest.mark.skipif(SSLSCAN is None,
                                   reason="sslscan is not installed (Debian package sslscan)")


def sslscan(port):
    """sslscan --xml=- of 127.0.0.1:port (SNI localhost) as {"protocols": {"1.2", ...} enabled,
    "ciphers": {"TLSv1.2": {name}, ...} accepted, "groups": {name}, "renegotiation": attrs,
    "compression": attrs or None, "heartbleed": [vulnerable attrs], "xml": the text}."""
    t0 = time.monotonic()
    out = subprocess.run([SSLSCAN, "--xml=-", "--no-colour", "--sni-name=localhost",
                          "127.0.0.1:%d" % port], capture_output=True, timeout=120)
    text = out.stdout.decode(errors="replace")
    assert out.returncode == 0, (text, out.stderr)
    print("sslscan took %.1f s" % (time.monotonic() - t0))
    start = text.index("<?xml")
    test = ET.fromstring(text[start:]).find("ssltest")
    assert test is not None, text
    res = {"protocols": set(), "ciphers": {}, "groups": set(), "xml": text,
           "renegotiation": None, "compression": None,
           "heartbleed": [h.get("vulnerable") for h in test.iter("heartbleed")]}
    for p in test.iter("protocol"):
        if p.get("enabled") == "1":
            res["protocols"].add("%s%s" % ("SSLv" if p.get("type") == "ssl" else "",
                                           p.get("version")))
    for c in test.iter("cipher"):
        if c.get("status") in ("accepted", "preferred"):
            res["ciphers"].setdefault(c.get("sslversion"), set()).add(c.get("cipher"))
    for g in test.iter("group"):
        res["groups"].add(g.get("name").split()[0])
    r = test.find("renegotiation")
    res["renegotiation"] = dict(r.attrib) if r is not None else None
    c = test.find("compression")
    res["compression"] = dict(c.attrib) if c is not None else None
    return res



@needs_sslscan
def test_sslscan_default_profile(remora, upstream, pki):
    """The default profile, with an ECDSA and with an RSA certificate: TLS 1.2 and 1.3 only;
    every TLS 1.2 suite AEAD (GCM or ChaCha20-Poly1305) with ECDHE, the three of the
    certificate's kind; the three TLS 1.3 suites; key exchange groups X25519 and P-256 only; no
    renegotiation and no compression as sslscan reports them; not vulnerable to heartbleed."""
    cfg, _ = tls_config(pki, [upstream.addr], plain=False)
    rsa_port = add_listener(cfg, "rsa", tls_block(pki, "rsa"))
    r = remora(config=cfg)
    for port, kind in ((r.port, "ECDSA"), (rsa_port, "RSA")):
        scan = sslscan(port)
        assert scan["protocols"] == {"1.2", "1.3"}, scan["xml"]
        tls12 = scan["ciphers"].get("TLSv1.2", set())
        assert tls12 and all(AEAD_ECDHE.match(c) for c in tls12), scan["xml"]
        assert tls12 == {"ECDHE-%s-%s" % (kind, s) for s in
                         ("AES128-GCM-SHA256", "AES256-GCM-SHA384", "CHACHA20-POLY1305")}, \
            scan["xml"]
        assert set(scan["ciphers"]) == {"TLSv1.2", "TLSv1.3"}, scan["xml"]
        assert scan["ciphers"]["TLSv1.3"] == {"TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384",
                                              "TLS_CHACHA20_POLY1305_SHA256"}, scan["xml"]
        assert scan["groups"] == {"x25519", "secp256r1"}, scan["xml"]
        # sslscan 2.0.7 probes renegotiation over the highest version, TLS 1.3, where there
        # is none: it would not see a TLS 1.2 renegotiation allowed. test_renegotiation_refused
        # is the check that can fail; this is sslscan's view.
        assert scan["renegotiation"] is not None, scan["xml"]
        assert scan["renegotiation"]["supported"] == "0", scan["xml"]
        # sslscan on an OpenSSL without zlib cannot test compression and leaves the element
        # out; when it can, it must find none.
        assert scan["compression"] is None or scan["compression"]["supported"] == "0", \
            scan["xml"]
        assert scan["heartbleed"] and set(scan["heartbleed"]) == {"0"}, scan["xml"]


@needs_sslscan
def test_sslscan_configured_profile(remora, upstream, pki):
    """`ciphers` and `ciphersuites` set: sslscan finds exactly those suites (a CBC one included,
    as configured); `min_version: "1.3"`: TLS 1.3 only, no TLS 1.2 suite."""
    ciphers = "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-AES128-SHA256"
    tls = tls_block(pki, ciphers=ciphers, ciphersuites="TLS_CHACHA20_POLY1305_SHA256")
    cfg, _ = tls_config(pki, [upstream.addr], plain=False, tls=tls)
    only13 = add_listener(cfg, "tls13", tls_block(pki, min_version="1.3"))
    r = remora(config=cfg)
    scan = sslscan(r.port)
    assert scan["protocols"] == {"1.2", "1.3"}, scan["xml"]
    assert scan["ciphers"] == {"TLSv1.2": set(ciphers.split(":")),
                               "TLSv1.3": {"TLS_CHACHA20_POLY1305_SHA256"}}, scan["xml"]
    scan = sslscan(only13)
    assert scan["protocols"] == {"1.3"}, scan["xml"]
    assert set(scan["ciphers"]) == {"TLSv1.3"}, scan["xml"]
    assert scan["groups"] == {"x25519", "secp256r1"}, scan["xml"]
