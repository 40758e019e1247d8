# SPDX-License-Identifier: Apache-2.0
"""tlsutil: helpers of the TLS listener tests (test_84_tls.py, test_85_tls_rotation.py).

- certificates made with the openssl CLI: `make_pki` (a test CA, two ECDSA P-256 server
  certificates for localhost and 127.0.0.1 and a key of no certificate), `make_server_cert`
  (another one under the CA, with validity dates of its choice for expired and not-yet-valid
  ones), `cert_info` (serial and notAfter of a PEM file, as python's ssl reads them);
- `SecretDir`: a TLS pair in a directory of its own laid out as the kubelet projects a
  Kubernetes Secret volume (`..data` swapped atomically), or as two plain files rewritten in
  place;
- config builders (`tls_block`, `tls_config`) and clients (`client_ctx`, `tls_connect`, `get_h1`,
  `read_h1`, `s_client`).

Nothing here starts remora (the conftest fixtures do)."""

import os
import socket
import ssl
import subprocess
import time

from helpers import default_config, free_port
from reloadutil import kubelet_project


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
x509_extensions = server
[any]
commonName = supplied
[server]
""" + SERVER_EXT


def asn1_time(t):
    """Unix seconds t as an `openssl ca` date (UTCTime YYMMDDHHMMSSZ: years 1950-2049)."""
    return time.strftime("%y%m%d%H%M%SZ", time.gmtime(t))


def make_server_cert(d, name, ca="ca", days=2, not_before=None, not_after=None):
    """d/name.key (P-256) and d/name.pem signed by ca, for localhost and 127.0.0.1, valid from
    now for days; not_before / not_after (Unix seconds, both or neither) set the dates instead
    (a past not_after: an expired certificate; a future not_before: one not valid yet)."""
    openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
            "-out", name + ".key", cwd=d)
    openssl("req", "-new", "-key", name + ".key", "-subj", "/CN=localhost",
            "-out", name + ".csr", cwd=d)
    if not_before is None:
        (d / "ext.cnf").write_text(SERVER_EXT)
        openssl("x509", "-req", "-in", name + ".csr", "-CA", ca + ".pem", "-CAkey", ca + ".key",
                "-CAcreateserial", "-days", str(days), "-extfile", "ext.cnf",
                "-out", name + ".pem", cwd=d)
        return
    (d / "ca.cnf").write_text(CA_CNF)
    (d / "index.txt").write_text("")
    (d / "serial.txt").write_text(os.urandom(8).hex() + "\n")
    openssl("ca", "-batch", "-config", "ca.cnf", "-cert", ca + ".pem", "-keyfile", ca + ".key",
            "-notext", "-startdate", asn1_time(not_before),
            "-enddate", asn1_time(not_after), "-in", name + ".csr", "-out", name + ".pem", cwd=d)


CLIENT_EXT = ("basicConstraints=CA:FALSE\n"
              "keyUsage=digitalSignature\n"
              "extendedKeyUsage=clientAuth\n")


def make_client_cert(d, name, ca="ca", cn="remora-client"):
    """d/name.key (P-256) and d/name.pem: a client certificate (clientAuth) for CN cn, signed by
    ca."""
    openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
            "-out", name + ".key", cwd=d)
    openssl("req", "-new", "-key", name + ".key", "-subj", "/CN=" + cn, "-out", name + ".csr",
            cwd=d)
    (d / "client-ext.cnf").write_text(CLIENT_EXT)
    openssl("x509", "-req", "-in", name + ".csr", "-CA", ca + ".pem", "-CAkey", ca + ".key",
            "-CAcreateserial", "-days", "2", "-extfile", "client-ext.cnf",
            "-out", name + ".pem", cwd=d)


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


# ---- clients -----------------------------------------------------------------------------------

def client_ctx(pki, alpn=None, min_version=None, max_version=None):
    ctx = ssl.create_default_context(cafile=str(pki / "ca.pem"))
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
