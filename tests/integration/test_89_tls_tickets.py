# SPDX-License-Identifier: Apache-2.0
"""89: TLS session tickets under the process's key ring (proxy/tls_tickets.c). A session a
client got before a reload (SIGHUP, or a config change that builds new TLS contexts) resumes
after it, over TLS 1.2 and 1.3; with two workers a session resumes whichever worker accepts the
connection; `session_tickets: false` gives no ticket and no resumption. The rotation of the keys
(an hour apart, REM_TICKET_KEYS of them) is unit-tested in tests/unit/test_tls_tickets.c."""

import ssl

import pytest

from helpers import metrics
from reloadutil import render, sighup, wait_state
from tlsutil import client_ctx, make_pki, new_session, resumes, tls_block, tls_config

VERSIONS = [pytest.param(ssl.TLSVersion.TLSv1_2, id="tls1.2"),
            pytest.param(ssl.TLSVersion.TLSv1_3, id="tls1.3")]


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


def resumed_total(r):
    return metrics(r.admin_port).value("remora_tls_resumed_total", side="downstream")


@pytest.mark.parametrize("version", VERSIONS)
def test_session_resumes_across_reloads(remora, upstream, pki, tmp_path, version):
    """Each reload builds a new TLS context; the tickets it issued before still open: after a
    SIGHUP (same bytes) and after a config change (another certificate and limits)."""
    cfg, _ = tls_config(pki, [upstream.addr], plain=False)
    path = tmp_path / "remora.yaml"
    path.write_text(render(cfg))
    r = remora(config=cfg, config_file=path)
    ctx = client_ctx(pki, min_version=version, max_version=version)
    sess = new_session(ctx, r.port)
    assert resumes(ctx, r.port, sess)
    sighup(r)
    wait_state(r, success=1)
    assert resumes(ctx, r.port, sess), "a SIGHUP reload lost the ticket keys"
    cfg["listeners"][0]["tls"] = tls_block(pki, "server2")
    cfg["limits"]["max_tls_handshakes"] = 100
    path.write_text(render(cfg))
    wait_state(r, success=2)
    assert resumes(ctx, r.port, sess), "a config change lost the ticket keys"
    # A session from the new context resumes too, and every resumption was counted.
    assert resumes(ctx, r.port, new_session(ctx, r.port))
    assert resumed_total(r) == 4


@pytest.mark.parametrize("version", VERSIONS)
def test_session_resumes_on_any_worker(remora, upstream, pki, version):
    """Two workers share the listener (SO_REUSEPORT spreads conns by their source port): 24
    new connections offering one session all resume (each lands on either worker with odds
    1/2: both take some but with odds 2^-23)."""
    cfg, _ = tls_config(pki, [upstream.addr], plain=False, workers=2)
    r = remora(config=cfg)
    ctx = client_ctx(pki, min_version=version, max_version=version)
    sess = new_session(ctx, r.port)
    got = [resumes(ctx, r.port, sess) for _ in range(24)]
    assert all(got), got
    assert resumed_total(r) == 24


@pytest.mark.parametrize("version", VERSIONS)
def test_no_tickets_no_resumption(remora, upstream, pki, version):
    cfg, _ = tls_config(pki, [upstream.addr], plain=False,
                        tls=tls_block(pki, session_tickets=False))
    r = remora(config=cfg)
    ctx = client_ctx(pki, min_version=version, max_version=version)
    with pytest.raises(AssertionError, match="no session ticket"):
        new_session(ctx, r.port)
    assert resumed_total(r) == 0
