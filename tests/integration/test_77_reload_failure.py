# SPDX-License-Identifier: Apache-2.0
"""test_77_reload_failure: a reload that a worker cannot apply.

The main thread validates a file before any worker sees it, so what is left to fail on a
worker is a resource: here c-ares cannot start its channel (a shim preloaded into remora makes
ares_init_options fail, as it does when the fd limit is reached or resolv.conf cannot be
read) when a reload adds the first upstream with a DNS name. The worker keeps its generation
untouched; workers must not serve different configurations, so remora counts the reload as
failed, drains (requests in flight finish) and exits 1 for the orchestrator to restart it.
"""

import subprocess
import time

import pytest

from helpers import wait_for
from reloadutil import (ConfDir, InFlight, derive, get, log_tail, reload_config, route_cfg,
                        upstream_cfg)

SHIM = r"""
#include <ares.h>
int ares_init_options(ares_channel *channel, struct ares_options *options, int optmask)
{
    (void)channel; (void)options; (void)optmask;
    return ARES_ENOMEM;
}
"""


@pytest.fixture(scope="module")
def ares_fail_shim(tmp_path_factory):
    d = tmp_path_factory.mktemp("shim")
    src, so = d / "shim.c", d / "ares_fail.so"
    src.write_text(SHIM)
    r = subprocess.run(["cc", "-shared", "-fPIC", "-o", str(so), str(src)], capture_output=True,
                       timeout=60)
    if r.returncode != 0:
        pytest.skip("cannot build the preload shim: %s" % r.stderr.decode()[-300:])
    return so


def test_worker_failure_drains_and_exits_1(remora, upstream_factory, tmp_path, ares_fail_shim):
    """Two workers, numeric endpoints only (no DNS channel yet); a reload adds an upstream named
    "localhost": both workers fail to create their c-ares channel. Expected: a `could not apply
    generation 2` line per worker, reloads_total{failure} 1 and generation still 1, /readyz 503
    draining, a request in flight when the reload failed completes 200, and remora exits 1 on
    its own (no signal)."""
    a = upstream_factory("a")
    cfg = reload_config([upstream_cfg("a", a)], [route_cfg("kept", "a", prefix="/")], workers=2)
    cd = ConfDir(tmp_path, cfg, "plain")
    p = remora(config=cfg, config_file=cd.path,
               env={"LD_PRELOAD": str(ares_fail_shim),
                    "ASAN_OPTIONS": "detect_leaks=1:quarantine_size_mb=4:"
                                    "verify_asan_link_order=0"})
    assert get(p.port, "/echo").status == 200
    slow = InFlight(p.port, "/delay?ms=1500")
    time.sleep(0.2)
    named = upstream_cfg("n", ["localhost:%s" % a.addr.rsplit(":", 1)[1]])
    cd.write_inplace(derive(cfg, upstreams=[upstream_cfg("a", a), named],
                            routes=[route_cfg("named", "n", prefix="/named"),
                                    route_cfg("kept", "a", prefix="/")]))
    assert wait_for(lambda: p.proc.poll() is not None, timeout=10), log_tail(p)
    assert p.proc.returncode == 1, log_tail(p)
    r = slow.join()
    assert r.status == 200 and r.complete, r
    text = p.stderr()
    assert text.count("could not apply generation 2") == 2, log_tail(p)
    assert "keeps generation 1" in text, log_tail(p)
    assert "draining, then exiting 1" in text, log_tail(p)
    assert "config reloaded" not in text, log_tail(p)


def test_reload_added_unresolved_upstream_keeps_ready(remora, upstream_factory, tmp_path):
    """A reload that adds an upstream whose name does not resolve (a typo in a ConfigMap) does
    not take the pod out of its Service: /readyz stays 200 (at start, unresolved names do hold
    readiness back: test_40_dns), the kept route serves, and the new route answers 503 `dns`
    once its queue_timeout passes."""
    a = upstream_factory("a")
    cfg = reload_config([upstream_cfg("a", a)], [route_cfg("kept", "a", prefix="/")])
    cd = ConfDir(tmp_path, cfg, "plain")
    p = remora(config=cfg, config_file=cd.path)
    typo = upstream_cfg("typo", ["no-such-host.invalid:8080"], queue_timeout="300ms")
    cd.write_inplace(derive(cfg, upstreams=[upstream_cfg("a", a), typo],
                            routes=[route_cfg("typo", "typo", prefix="/typo"),
                                    route_cfg("kept", "a", prefix="/")]))
    assert wait_for(lambda: "config reloaded" in p.stderr(), timeout=5), log_tail(p)
    r = get(p.port, "/typo")
    assert r.status == 503 and r.header("x-remora-error") == "dns", (r.status, r.headers)
    for _ in range(5):
        assert get(p.admin_port, "/readyz").status == 200, log_tail(p)
        assert get(p.port, "/echo").status == 200
        time.sleep(0.1)
