# SPDX-License-Identifier: Apache-2.0
"""85: certificate rotation on TLS listeners. remora watches the directories of every TLS
listener's `cert` and `key` (as it watches the config file's) and rebuilds the listener's TLS
context when their bytes change: a Kubernetes Secret volume's `..data` swap (tlsutil.SecretDir)
and files rewritten in place. Certificates are made in the test with the openssl CLI
(tlsutil). What is checked: a swap under load (wrk over https keeps its keep-alive
connections, a loop of new connections sees no error and, once the reload is acknowledged, only
the new certificate's serial; an old connection goes on), an in-place rewrite (and a rewrite
with the same bytes reloads nothing), a broken pair (key mismatch), an expired and a
not-yet-valid certificate refused with one log line naming the file while the old certificate
stays (failure counted; --check refuses them too), remora_tls_cert_expiry_timestamp_seconds
equal to each listener's notAfter, and the watch following a reload that moves the files."""

import shutil
import signal
import subprocess
import threading
import time

import pytest

from helpers import free_port, metrics, parse_wrk, wait_for
from reloadutil import SETTLE, ConfDir, derive, log_tail, render, wait_state
from tlsutil import (SecretDir, cert_info, get_h1, make_pki, make_server_cert, tls_block,
                     tls_config, tls_connect)

DAY = 86400


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """make_pki (ca, server, server2, other.key) plus, under the same CA: long (valid 30 days),
    expired (valid from 3 days ago to yesterday), future (valid from tomorrow)."""
    d = make_pki(tmp_path_factory.mktemp("pki"))
    make_server_cert(d, "long", days=30)
    now = int(time.time())
    make_server_cert(d, "expired", not_before=now - 3 * DAY, not_after=now - DAY)
    make_server_cert(d, "future", not_before=now + DAY, not_after=now + 3 * DAY)
    return d


def pem(pki, name):
    return pki / (name + ".pem")


def key(pki, name):
    return pki / (name + ".key")


def serial(pki, name):
    return cert_info(pem(pki, name))[0]


def not_after(pki, name):
    return cert_info(pem(pki, name))[1]


def peer_serial(s):
    return s.getpeercert()["serialNumber"]


def served_serial(pki, port):
    """The serial of the certificate a new handshake gets (verified against the test CA)."""
    with tls_connect(pki, port) as s:
        assert get_h1(s)[0] == 200
        return peer_serial(s)


def start(remora, upstream, tmp_path, pki, layout="secret", workers=2, extra_listeners=()):
    """remora whose TLS listener "tls" serves a SecretDir (root/tls) holding server; its config
    in a ConfDir of its own. Returns (remora, SecretDir, ConfDir, config)."""
    sd = SecretDir(tmp_path, pem(pki, "server"), key(pki, "server"), layout=layout)
    cfg, _ = tls_config(pki, [upstream.addr], tls={"cert": str(sd.cert), "key": str(sd.key)},
                        plain=False, workers=workers)
    cfg["listeners"] += list(extra_listeners)
    cd = ConfDir(tmp_path, cfg)
    p = remora(config=cfg, config_file=cd.path)
    return p, sd, cd, cfg


def cert_reloads(p):
    m = metrics(p.admin_port)
    return (m.value("remora_tls_cert_reloads_total", result="success"),
            m.value("remora_tls_cert_reloads_total", result="failure"))


def wait_cert_reloads(p, success, failure, timeout=5.0):
    """Waits for remora_tls_cert_reloads_total to reach (success, failure) exactly."""
    last = [None]

    def ok():
        last[0] = cert_reloads(p)
        return last[0] == (success, failure)

    assert wait_for(ok, timeout), "cert reloads %r, want %r; log:\n%s" % (
        last[0], (success, failure), log_tail(p))


def expiry(p):
    """{listener: remora_tls_cert_expiry_timestamp_seconds} of the listeners' own certificates
    (cert="listener/NAME")."""
    return {l["cert"].split("/", 1)[1]: v for l, v in
            metrics(p.admin_port).series("remora_tls_cert_expiry_timestamp_seconds")}


def msgs(p):
    return [str(e.get("msg", "")) for e in p.log_lines()]


class TlsConnectLoop:
    """New TLS connections, one at a time, each with one GET and then closed, in a thread, until
    stop() (or max_seconds). .conns lists (monotonic time of the connect, serial seen);
    .failures everything that went wrong."""

    def __init__(self, pki, port, max_seconds=20.0):
        self.pki, self.port, self.max_seconds = pki, port, max_seconds
        self.conns = []
        self.failures = []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        end = time.monotonic() + self.max_seconds
        while not self._stop.is_set() and time.monotonic() < end:
            t0 = time.monotonic()
            try:
                with tls_connect(self.pki, self.port, timeout=3.0) as s:
                    status, _, _ = get_h1(s, extra="Connection: close\r\n")
                    if status != 200:
                        self.failures.append("status %d" % status)
                    else:
                        self.conns.append((t0, peer_serial(s)))
            except (OSError, AssertionError, ValueError) as e:
                self.failures.append(repr(e))

    def count_after(self, t):
        return sum(1 for t0, _ in self.conns if t0 > t)

    def stop(self):
        self._stop.set()
        self._t.join(10)
        assert not self._t.is_alive(), "connect loop did not stop"


# ---- a Secret update under load ---------------------------------------------------------------

@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk not installed (apt-get install wrk)")
def test_secret_swap_under_load(remora, upstream, tmp_path, pki):
    """Two workers; wrk -t2 -c8 over https (keep-alive connections opened before the swap and
    used across it) and a loop of new TLS connections run while the Secret's ..data swaps from
    server to server2. Zero errors in both; every connection the loop opened after the reload
    counted saw server2's serial, the ones before the swap server's; a connection opened before
    the swap still gets answers; one success counted, no failure, and the log says why."""
    p, sd, cd, cfg = start(remora, upstream, tmp_path, pki)
    old = tls_connect(pki, p.port)
    assert get_h1(old)[0] == 200
    assert peer_serial(old) == serial(pki, "server")
    assert cert_reloads(p) == (0, 0)
    wrk = subprocess.Popen(["wrk", "-t2", "-c8", "-d30s", "--timeout", "5s",
                            "https://127.0.0.1:%d/bytes?n=1024" % p.port],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    loop = TlsConnectLoop(pki, p.port)
    try:
        assert wait_for(lambda: wrk.poll() is not None or
                        metrics(p.admin_port).total("remora_requests_total") > 2000, 10.0), \
            "wrk did not get going"
        assert wait_for(lambda: len(loop.conns) >= 10, 10.0), loop.failures
        t_swap = time.monotonic()
        sd.swap(pem(pki, "server2"), key(pki, "server2"))
        wait_cert_reloads(p, 1, 0)
        t_acked = time.monotonic()
        assert wait_for(lambda: loop.count_after(t_acked) >= 10, 10.0), loop.failures
        time.sleep(1.0)  # wrk goes on over its old connections after the swap
        assert get_h1(old)[0] == 200
        assert peer_serial(old) == serial(pki, "server")
    finally:
        loop.stop()
        if wrk.poll() is None:
            wrk.send_signal(signal.SIGINT)
        out, err = wrk.communicate(timeout=15)
    old.close()
    text = out.decode()
    print("wrk -t2 -c8 over https across a Secret swap:\n" + text)
    assert wrk.returncode == 0, err.decode()
    w = parse_wrk(text)
    assert w["requests"] and w["requests"] > 1000, text
    assert (w["connect"], w["read"], w["write"], w["timeout"], w["non2xx"]) == (0, 0, 0, 0, 0), \
        text
    assert loop.failures == [], loop.failures[:5]
    before = [s for t0, s in loop.conns if t0 < t_swap]
    after = [s for t0, s in loop.conns if t0 > t_acked]
    assert before and set(before) == {serial(pki, "server")}
    assert after and set(after) == {serial(pki, "server2")}
    assert served_serial(pki, p.port) == serial(pki, "server2")
    assert any(m.startswith("config reloaded (certificate change): generation 2")
               for m in msgs(p)), log_tail(p)
    st = wait_state(p, success=1, failure=0, generation=2)
    assert st["success"] == 1


def test_inplace_rewrite(remora, upstream, tmp_path, pki):
    """Plain files rewritten in place (same inodes, certificate then key): new handshakes get
    the new certificate, an old connection goes on. Rewriting the same bytes again (a write
    event with no change) reloads nothing: no new context, whose new ticket keys would cost
    every client a full handshake."""
    p, sd, cd, cfg = start(remora, upstream, tmp_path, pki, layout="plain", workers=1)
    old = tls_connect(pki, p.port)
    assert get_h1(old)[0] == 200
    sd.write_inplace(pem(pki, "server2"), key(pki, "server2"))
    wait_cert_reloads(p, 1, 0)
    assert served_serial(pki, p.port) == serial(pki, "server2")
    assert get_h1(old)[0] == 200
    old.close()
    wait_state(p, generation=2)
    sd.write_inplace(pem(pki, "server2"), key(pki, "server2"))
    time.sleep(SETTLE)
    assert cert_reloads(p) == (1, 0)
    assert wait_state(p, generation=2)["success"] == 1


# ---- refused pairs ----------------------------------------------------------------------------

def test_key_mismatch_refused(remora, upstream, tmp_path, pki):
    """A Secret update to server2's certificate with a key of no certificate: one log line
    naming both files and the reason, failure counted, server's certificate still served (and
    its expiry still shown); the next good update is taken."""
    p, sd, cd, cfg = start(remora, upstream, tmp_path, pki)
    old = tls_connect(pki, p.port)
    assert get_h1(old)[0] == 200
    sd.swap(pem(pki, "server2"), key(pki, "other"))
    wait_cert_reloads(p, 0, 1)
    want = ('listener "tls": tls.key %s does not match the certificate in tls.cert %s'
            % (sd.key, sd.cert))
    assert sum(m.startswith(want) for m in msgs(p)) == 1, log_tail(p)
    assert served_serial(pki, p.port) == serial(pki, "server")
    assert get_h1(old)[0] == 200
    assert expiry(p) == {"tls": not_after(pki, "server")}
    wait_state(p, success=0, failure=1, generation=1)
    sd.swap(pem(pki, "server2"), key(pki, "server2"))
    wait_cert_reloads(p, 1, 1)
    assert served_serial(pki, p.port) == serial(pki, "server2")
    assert get_h1(old)[0] == 200
    old.close()


@pytest.mark.parametrize("name,reason", [("expired", "the certificate expired on "),
                                         ("future", "the certificate is not valid before ")])
def test_expired_or_not_yet_valid_refused(remora, run_remora, upstream, tmp_path, pki, name,
                                          reason):
    """A Secret update to a certificate whose notAfter is past (or notBefore ahead), with its
    own key: refused with one line naming the file and the date, failure counted, the old
    certificate still served. --check and a start refuse the same file."""
    p, sd, cd, cfg = start(remora, upstream, tmp_path, pki)
    sd.swap(pem(pki, name), key(pki, name))
    wait_cert_reloads(p, 0, 1)
    want = 'listener "tls": tls.cert %s: %s' % (sd.cert, reason)
    lines = [m for m in msgs(p) if m.startswith(want)]
    assert len(lines) == 1, log_tail(p)
    assert lines[0].endswith(" UTC"), lines[0]
    assert served_serial(pki, p.port) == serial(pki, "server")
    assert expiry(p) == {"tls": not_after(pki, "server")}
    bad = tmp_path / "bad.yaml"
    bad.write_text(render(derive(cfg, listeners=[dict(cfg["listeners"][0],
                                                      tls=tls_block(pki, name))])))
    out = run_remora("--check", "-c", bad)
    assert out.returncode == 1, out.stdout
    assert out.stdout.decode().startswith(
        '%s: listener "tls": tls.cert %s: %s' % (bad, pem(pki, name), reason)), out.stdout
    assert run_remora("-c", bad).returncode == 1


# ---- the expiry gauge ---------------------------------------------------------------------------

def test_cert_expiry_gauge(remora, upstream, tmp_path, pki):
    """remora_tls_cert_expiry_timestamp_seconds{cert="listener/NAME"} is the notAfter of each TLS listener's
    certificate (none for a plaintext listener), and follows a rotation."""
    extra = [{"name": "long", "address": "127.0.0.1:%d" % free_port(),
              "tls": tls_block(pki, "long")},
             {"name": "plain", "address": "127.0.0.1:%d" % free_port()}]
    p, sd, cd, cfg = start(remora, upstream, tmp_path, pki, workers=1, extra_listeners=extra)
    assert not_after(pki, "long") - not_after(pki, "server") > 20 * DAY
    assert expiry(p) == {"tls": not_after(pki, "server"), "long": not_after(pki, "long")}
    m = metrics(p.admin_port)
    assert m.types["remora_tls_cert_expiry_timestamp_seconds"] == "gauge"
    assert m.types["remora_tls_cert_reloads_total"] == "counter"
    sd.swap(pem(pki, "long"), key(pki, "long"))
    wait_cert_reloads(p, 1, 0)
    assert expiry(p) == {"tls": not_after(pki, "long"), "long": not_after(pki, "long")}


# ---- the watch follows the config ---------------------------------------------------------------

def test_watch_follows_reload(remora, upstream, tmp_path, pki):
    """A config reload that points the listener at another Secret directory: that directory is
    watched from then on, and the old one no longer."""
    p, first, cd, cfg = start(remora, upstream, tmp_path, pki, workers=1)
    second = SecretDir(tmp_path, pem(pki, "server2"), key(pki, "server2"), name="tls2")
    cd.write_inplace(derive(cfg, listeners=[dict(cfg["listeners"][0], tls={
        "cert": str(second.cert), "key": str(second.key)})]))
    wait_state(p, success=1, generation=2)
    assert served_serial(pki, p.port) == serial(pki, "server2")
    assert cert_reloads(p) == (0, 0)  # a config change, not a certificate change
    first.swap(pem(pki, "long"), key(pki, "long"))
    time.sleep(SETTLE)
    assert cert_reloads(p) == (0, 0)
    assert served_serial(pki, p.port) == serial(pki, "server2")
    second.swap(pem(pki, "server"), key(pki, "server"))
    wait_cert_reloads(p, 1, 0)
    assert served_serial(pki, p.port) == serial(pki, "server")
    wait_state(p, success=2, generation=3)
