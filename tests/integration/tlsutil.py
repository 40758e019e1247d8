# SPDX-License-Identifier: Apache-2.0
"""tlsutil: helpers of the TLS listener tests (test_84_tls.py, test_85_tls_rotation.py).

- certificates made with the openssl CLI: `make_pki` (a test CA, two ECDSA P-256 server
  certificates for localhost and 127.0.0.1 and a key of no certificate), `make_server_cert`
  (another one under the CA, with validity dates of its choice for expired and not-yet-valid
  ones, or an RSA key), `cert_info` (serial and notAfter of a PEM file, as python's ssl reads
  them);
- client certificates (mTLS, test_86_mtls.py): `make_ca` (another CA), `make_client_cert` (a
  clientAuth certificate with a SPIFFE URI SAN and a DNS SAN, dates of its choice), `spiffe`,
  `cert_sha256` (the hex SHA-256 of a certificate's DER, XFCC's Hash); `CaDir` (a CA bundle in
  a ConfigMap-style projected directory, swapped like a Secret);
- `SecretDir`: a TLS pair in a directory of its own laid out as the kubelet projects a
  Kubernetes Secret volume (`..data` swapped atomically), or as two plain files rewritten in
  place;
- config builders (`tls_block`, `tls_config`) and clients (`client_ctx`, `tls_connect`, `get_h1`,
  `read_h1`, `s_client`, `SClient`: an interactive s_client driven line by line,
  `client_hello` for a handshake left unfinished, `new_session` and `resumes` for session
  tickets);
- what remora counted: `handshakes` / `wait_handshakes` (remora_tls_handshakes_total).

Nothing here starts remora (the conftest fixtures do)."""

import hashlib
import os
import re
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path

from helpers import default_config, free_port, metrics, stop_process, wait_for
from reloadutil import kubelet_project, render


# ---- certificates ------------------------------------------------------------------------------

def openssl(*args, cwd):
    out = subprocess.run(["openssl"] + list(args), cwd=cwd, capture_output=True, timeout=30)
    assert out.returncode == 0, (args, out.stderr.decode())


SERVER_EXT = ("subjectAltName=DNS:localhost,IP:127.0.0.1\n"
              "basicConstraints=CA:FALSE\n"
              "keyUsage=digitalSignature\n"
              "extendedKeyUsage=serverAuth\n")

# `openssl ca` (the one CLI of OpenSSL 3.0 that sets both validity dates) with the least
# configuration it needs.
CA_CNF = """[ca]
default_ca = test
[test]
database = index.txt
serial = serial.txt
new_certs_dir = .
default_md = sha256
policy = any
unique_subject = no
x509_extensions = ext
[any]
commonName = supplied
[ext]
"""


def asn1_time(t):
    """Unix seconds t as an `openssl ca` date (UTCTime YYMMDDHHMMSSZ: years 1950-2049)."""
    return time.strftime("%y%m%d%H%M%SZ", time.gmtime(t))


def _sign(d, name, ca, ext, subj, days, not_before, not_after, rsa=False):
    """d/name.key (P-256, or RSA 2048 with rsa) and d/name.pem for subj with extensions ext,
    signed by ca; see make_server_cert for the dates (`openssl ca` keeps only the CN of subj
    then)."""
    if rsa:
        openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048",
                "-out", name + ".key", cwd=d)
    else:
        openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
                "-out", name + ".key", cwd=d)
    openssl("req", "-new", "-key", name + ".key", "-subj", subj, "-out", name + ".csr", cwd=d)
    if not_before is None:
        (d / "ext.cnf").write_text(ext)
        openssl("x509", "-req", "-in", name + ".csr", "-CA", ca + ".pem", "-CAkey", ca + ".key",
                "-CAcreateserial", "-days", str(days), "-extfile", "ext.cnf",
                "-out", name + ".pem", cwd=d)
        return
    (d / "ca.cnf").write_text(CA_CNF + ext)
    (d / "index.txt").write_text("")
    (d / "serial.txt").write_text(os.urandom(8).hex() + "\n")
    openssl("ca", "-batch", "-config", "ca.cnf", "-cert", ca + ".pem", "-keyfile", ca + ".key",
            "-notext", "-startdate", asn1_time(not_before),
            "-enddate", asn1_time(not_after), "-in", name + ".csr", "-out", name + ".pem", cwd=d)


def make_server_cert(d, name, ca="ca", days=2, not_before=None, not_after=None, rsa=False):
    """d/name.key (P-256, or RSA 2048 with rsa) and d/name.pem signed by ca, for localhost and
    127.0.0.1, valid from now for days; not_before / not_after (Unix seconds, both or neither)
    set the dates instead (a past not_after: an expired certificate; a future not_before: one
    not valid yet)."""
    _sign(d, name, ca, SERVER_EXT, "/CN=localhost", days, not_before, not_after, rsa)


def make_ca(d, name, cn=None, days=2):
    """A self-signed CA in d: name.pem, name.key, valid from now for days."""
    openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
            "-out", name + ".key", cwd=d)
    openssl("req", "-x509", "-new", "-key", name + ".key", "-subj", "/CN=" + (cn or name),
            "-days", str(days), "-out", name + ".pem", cwd=d)


def spiffe(name):
    """The SPIFFE ID of service account name in namespace default."""
    return "spiffe://cluster.local/ns/default/sa/%s" % name


def client_subject(name):
    """The Subject make_client_cert gives name, as RFC 2253 prints it (XFCC's Subject)."""
    return "CN=%s,O=remora tests" % name


def make_client_cert(d, name, ca="client-ca", days=2, not_before=None, not_after=None):
    """A client certificate (extendedKeyUsage clientAuth) d/name.pem, d/name.key signed by ca,
    Subject /O=remora tests/CN=name (only CN=name with dates), SANs URI spiffe(name) and DNS
    name.default.svc. Dates as make_server_cert."""
    ext = ("subjectAltName=URI:%s,DNS:%s.default.svc\n"
           "basicConstraints=CA:FALSE\n"
           "keyUsage=digitalSignature\n"
           "extendedKeyUsage=clientAuth\n" % (spiffe(name), name))
    _sign(d, name, ca, ext, "/O=remora tests/CN=" + name, days, not_before, not_after)


def cert_sha256(path):
    """The hex SHA-256 of the DER of the PEM certificate at path (XFCC's Hash)."""
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(Path(path).read_text())).hexdigest()


def make_self_signed(d, name):
    """d/name.key and d/name.pem: a self-signed server certificate for localhost and
    127.0.0.1 (its own CA: trusted only when name.pem itself is)."""
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", name + ".key", "-subj", "/CN=localhost", "-days", "2",
            "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-out", name + ".pem", cwd=d)


def make_pki(d):
    """In directory d: a test CA (ca.pem, ca.key), two server certificates under it (server,
    server2: name.pem, name.key) and a key of no certificate (other.key). Returns d."""
    openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
            "-out", "ca.key", cwd=d)
    openssl("req", "-x509", "-new", "-key", "ca.key", "-subj", "/CN=remora test CA",
            "-days", "2", "-out", "ca.pem", cwd=d)
    make_server_cert(d, "server")
    make_server_cert(d, "server2")
    openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
            "-out", "other.key", cwd=d)
    return d


def cert_info(path):
    """(serialNumber hex string, notAfter Unix seconds) of the PEM certificate at path, read the
    way ssl's getpeercert() reports a peer's."""
    info = ssl._ssl._test_decode_cert(str(path))  # noqa: SLF001 - the stdlib's own decoder
    return info["serialNumber"], int(ssl.cert_time_to_seconds(info["notAfter"]))


# ---- a Secret volume ---------------------------------------------------------------------------

class SecretDir:
    """A certificate and key in a directory of their own, DIR = root/name, as a listener's
    `cert` (.cert = DIR/tls.crt) and `key` (.key = DIR/tls.key) name them.

    layout "secret": the kubelet's projection of a kubernetes.io/tls Secret volume:
    DIR/..2026_12_02_10_00_00.000000001/{tls.crt,tls.key}, DIR/..data -> that directory,
    DIR/tls.crt -> ..data/tls.crt, DIR/tls.key -> ..data/tls.key; `swap` makes a new
    timestamped directory, points ..data at it with a rename of a `..data_tmp` symlink and
    removes the old one, as its AtomicWriter does. layout "plain": two regular files, which
    `write_inplace` rewrites (O_TRUNC, same inodes)."""

    CRT, KEY = "tls.crt", "tls.key"

    def __init__(self, root, cert, key, layout="secret", name="tls"):
        self.dir = root / name
        self.dir.mkdir()
        self.cert = self.dir / self.CRT
        self.key = self.dir / self.KEY
        self.layout = layout
        self.seq = 0
        self.ts_dir = None
        if layout == "secret":
            self._project(cert, key)
            for f in (self.CRT, self.KEY):
                os.symlink("..data/" + f, self.dir / f)
        else:
            self.write_inplace(cert, key)

    def _project(self, cert, key):
        self.seq, self.ts_dir = kubelet_project(
            self.dir, self.seq, self.ts_dir,
            {self.CRT: cert.read_bytes(), self.KEY: key.read_bytes()})

    def swap(self, cert, key):
        """The kubelet's update of the Secret to the PEM files cert and key (paths)."""
        assert self.layout == "secret"
        self._project(cert, key)

    def write_inplace(self, cert, key):
        """Rewrites both files in place (`cat new > file`), certificate first."""
        assert self.layout == "plain"
        for src, dst in ((cert, self.cert), (key, self.key)):
            with open(dst, "wb", buffering=0) as f:
                f.write(src.read_bytes())


class CaDir:
    """A CA bundle file as a listener's client_ca names it (.path = root/name/ca.crt), projected
    the way the kubelet projects a ConfigMap or Secret volume (`..data` swapped by `swap`)."""

    NAME = "ca.crt"

    def __init__(self, root, pem_bytes, name="client-ca"):
        self.dir = root / name
        self.dir.mkdir()
        self.path = self.dir / self.NAME
        self.seq, self.ts_dir = 0, None
        self.swap(pem_bytes)
        os.symlink("..data/" + self.NAME, self.path)

    def swap(self, pem_bytes):
        self.seq, self.ts_dir = kubelet_project(self.dir, self.seq, self.ts_dir,
                                                {self.NAME: pem_bytes})


# ---- configuration -----------------------------------------------------------------------------

def tls_block(pki, name="server", **kw):
    t = {"cert": str(pki / (name + ".pem")), "key": str(pki / (name + ".key"))}
    t.update(kw)
    return t


def tls_config(pki, endpoints, tls=None, limits=None, plain=True, **kw):
    """listeners[0]: TLS (the port the remora factory reads), listeners[1]: plaintext; kw go to
    default_config (workers, ...). Returns (config, the plaintext port)."""
    port, plain_port, admin_port = free_port(), free_port(), free_port()
    while len({port, plain_port, admin_port}) < 3:
        plain_port, admin_port = free_port(), free_port()
    cfg = default_config(port, admin_port, endpoints, limits=limits, **kw)
    cfg["listeners"] = [{"name": "tls", "address": "127.0.0.1:%d" % port,
                         "tls": tls if tls is not None else tls_block(pki)}]
    if plain:
        cfg["listeners"].append({"name": "plain", "address": "127.0.0.1:%d" % plain_port})
    return cfg, plain_port


def check_errors(run_remora, path):
    """remora --check -c path, which must fail: the lines it prints about path, in order."""
    out = run_remora("--check", "-c", path)
    text = out.stdout.decode()
    assert out.returncode == 1, text
    return [ln for ln in text.splitlines() if ln.startswith(str(path))]


def listener_check_error(run_remora, pki, endpoints, path, tls):
    """remora --check of a config (written to path) whose TLS listener has tls, which must fail:
    its first line about path, without the "path: " before it."""
    cfg, _ = tls_config(pki, endpoints, tls=tls)
    path.write_text(render(cfg))
    lines = check_errors(run_remora, path)
    assert lines, "no error about %s" % path
    return lines[0][len(str(path)) + 2:]


# ---- clients -----------------------------------------------------------------------------------

def client_ctx(pki, alpn=None, min_version=None, max_version=None, cert=None):
    """A client context trusting the test CA; cert: the name of a client certificate in pki
    (cert.pem, cert.key) it presents when asked."""
    ctx = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    if cert:
        ctx.load_cert_chain(str(pki / (cert + ".pem")), str(pki / (cert + ".key")))
    # Python sets it by default with OpenSSL 3: a FIN without close_notify must show.
    ctx.options &= ~ssl.OP_IGNORE_UNEXPECTED_EOF
    if alpn:
        ctx.set_alpn_protocols(alpn)
    if min_version:
        ctx.minimum_version = min_version
    if max_version:
        ctx.maximum_version = max_version
    return ctx


def tls_connect(pki, port, timeout=5.0, suppress_ragged_eofs=True, **kw):
    raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    return client_ctx(pki, **kw).wrap_socket(raw, server_hostname="localhost",
                                             suppress_ragged_eofs=suppress_ragged_eofs)


def read_h1(s):
    """One HTTP/1.1 response with a Content-Length from s: (status, headers dict, body)."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        assert chunk, "connection closed in the response head: %r" % buf
        buf += chunk
    head, body = buf.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:])}
    n = int(headers["content-length"])
    while len(body) < n:
        chunk = s.recv(65536)
        assert chunk, "connection closed in the body"
        body += chunk
    return status, headers, body


def get_h1(s, path="/echo", extra=""):
    s.sendall(("GET %s HTTP/1.1\r\nHost: localhost\r\n%s\r\n" % (path, extra)).encode())
    return read_h1(s)


def s_client(port, *args, timeout=10):
    """openssl s_client against 127.0.0.1:port with stdin closed; (returncode, output)."""
    out = subprocess.run(["openssl", "s_client", "-connect", "127.0.0.1:%d" % port,
                          "-servername", "localhost"] + list(args),
                         stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
    return out.returncode, out.stdout.decode(errors="replace") + out.stderr.decode(
        errors="replace")


class SClient:
    """An interactive `openssl s_client -msg -crlf` against 127.0.0.1:port (SNI localhost,
    verified against ca), driven line by line: its stdin stays open, so its command letters
    work (a line "R": renegotiate, "k" / "K": a TLS 1.3 KeyUpdate without / with
    update_requested) and other lines go to the server with CRLF endings. A thread collects
    stdout and stderr into .out; wait() polls it. Stopped by PID (close()), also as a context
    manager."""

    HANDSHAKE_DONE = "Verify return code: "

    def __init__(self, port, ca, *args):
        self.proc = subprocess.Popen(
            ["openssl", "s_client", "-connect", "127.0.0.1:%d" % port, "-servername",
             "localhost", "-CAfile", str(ca), "-msg", "-crlf"] + list(args),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self._buf = bytearray()
        self._lock = threading.Lock()
        self._t = threading.Thread(target=self._read, daemon=True)
        self._t.start()

    def _read(self):
        while True:
            chunk = self.proc.stdout.read1(65536)
            if not chunk:
                return
            with self._lock:
                self._buf += chunk

    @property
    def out(self):
        with self._lock:
            return self._buf.decode(errors="replace")

    def wait(self, pattern, count=1, timeout=5.0):
        """Waits until the regular expression pattern matched count times in the output, or
        s_client ended; returns the number of matches."""
        rx = re.compile(pattern, re.M)
        wait_for(lambda: len(rx.findall(self.out)) >= count or self.proc.poll() is not None,
                 timeout)
        if self.proc.poll() is not None:
            self._t.join(5)  # the rest of its output
        return len(rx.findall(self.out))

    def send(self, text):
        """One write to s_client's stdin (one line, or a request: s_client reads a write at a
        time and looks only at its first letter for a command). False if s_client is gone."""
        try:
            self.proc.stdin.write(text.encode())
            self.proc.stdin.flush()
            return True
        except (BrokenPipeError, ValueError):
            return False

    def exited(self, timeout=5.0):
        """s_client's exit status once it ended within timeout, else None."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def close(self):
        try:
            self.proc.stdin.close()
        except BrokenPipeError:
            pass
        stop_process(self.proc, 3)
        self._t.join(5)
        self.proc.stdout.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ---- what remora counted -----------------------------------------------------------------------

def handshakes(r):
    """remora_tls_handshakes_total{side="downstream"} by result, from a scrape."""
    m = metrics(r.admin_port)
    return {res: m.value("remora_tls_handshakes_total", side="downstream", result=res)
            for res in ("ok", "failed", "timeout")}


def wait_handshakes(r, want, timeout=5.0):
    got = wait_for(lambda: (lambda h: h if h == want else None)(handshakes(r)), timeout=timeout)
    assert got == want, handshakes(r)
def client_hello(pki):
    """The bytes of a ClientHello as python's ssl sends it (for clients that stop halfway)."""
    inb, outb = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = client_ctx(pki).wrap_bio(inb, outb, server_hostname="localhost")
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outb.read()


def tls_connect_ctx(ctx, port, session=None):
    """A connection to 127.0.0.1:port under the client context ctx (offering session)."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=5.0)
    return ctx.wrap_socket(raw, server_hostname="localhost", session=session)


def new_session(ctx, port):
    """A full handshake and one request on port under the client context ctx (client_ctx:
    python resumes a session only under the context that made it); the session to resume,
    its ticket included (a TLS 1.3 ticket comes after the handshake, and reading the response
    takes it in)."""
    with tls_connect_ctx(ctx, port) as s:
        assert not s.session_reused
        assert get_h1(s)[0] == 200
        sess = s.session
    assert sess is not None and sess.has_ticket, "no session ticket from remora"
    return sess


def resumes(ctx, port, session):
    """Whether a new connection offering session resumes it; it must be served either way."""
    with tls_connect_ctx(ctx, port, session) as s:
        assert get_h1(s)[0] == 200
        return s.session_reused
