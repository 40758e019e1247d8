# SPDX-License-Identifier: Apache-2.0
"""75: live config reload. SIGHUP reloads the file remora was started with (-c); so does any
change in that file's directory (inotify, ~100 ms debounce: one change reloads once; bytes
equal to the active generation's do not reload). A reload that succeeds is logged `config
reloaded (<trigger>): generation <n>, hash <hex>`, one that fails `config reload (<trigger>)
failed; keeping generation <n>` plus the `remora --check` lines of the file, and counted in
remora_config_reloads_total{result}; remora_config_generation, remora_config_info{hash} and
GET /config follow the active generation.

After a reload every new request (also on a kept HTTP/1.1 or h2c connection) uses the new
routes, upstreams, route limits and timeouts; requests in flight finish under the old ones;
connection-level settings apply to new connections. An upstream whose name, endpoints and
protocol are unchanged keeps its pool; a changed or removed one's idle upconns close and busy
ones finish.
Listeners are added, removed (refused; open conns finish) and kept (same socket, never
refusing); the admin port moves. `workers` needs a restart (warned, the rest applies). Route
counters continue across reloads, removed routes leave /metrics, changed buckets restart the
route's histogram. While draining, reloads are ignored.

Each test starts its own remora on free loopback ports with its config in a directory of its
own (reloadutil.ConfDir), and routes mostly by Host (kept.test, new.test, ...) so that the test
app's paths (/echo, /delay) stay usable on every route."""

import math
import os
import subprocess
import time

import pytest

from helpers import HttpConn, free_port, http, http_get_body, metrics, wait_for
from reloadutil import (SETTLE, ConfDir, ConnectLoop, InFlight, config_doc, connect_refused,
                        derive, events, get, listen_inodes, log_tail, reload_config, route_cfg,
                        sighup, state, upstream_cfg, wait_state)

PROMTOOL = "/usr/bin/promtool"


# ---- helpers --------------------------------------------------------------------------------

def start(remora, tmp_path, cfg, layout="plain"):
    """remora (the conftest factory) started with -c on a ConfDir holding cfg."""
    cd = ConfDir(tmp_path, cfg, layout)
    p = remora(config=cfg, config_file=cd.path)
    return p, cd


def routed(r, name):
    """The response (helpers.Response or h2util.H2Response) is whole and came from the test
    app started with --name name."""
    whole = r.complete if hasattr(r, "complete") else r.ended
    return r.status == 200 and whole and r.header("x-upstream-name") == name


def no_route(r):
    return r.status == 404 and r.header("x-remora-error") == "no_route"


def h1_get(c, host, path="/echo"):
    c.request("GET", path, host=host)
    return c.read_response()


def two_apps(upstream_factory):
    return upstream_factory("a"), upstream_factory("b")


def with_routes(cfg, *routes):
    return derive(cfg, routes=list(routes))


def check_lines(run_remora, path):
    """What `remora --check -c path` prints for a bad file (one line per problem)."""
    res = run_remora("--check", "-c", str(path))
    assert res.returncode != 0, res
    lines = [l for l in res.stdout.decode().splitlines() if l.strip()]
    assert lines, res
    return lines


def assert_logged(p, n0, lines):
    """Each of lines is the message of a log line among those after the first n0 (in any
    order around the failure line)."""
    msgs = [str(e.get("msg", "")) for e in p.log_lines()[n0:]]
    for line in lines:
        assert line in msgs, "error line %r not logged; log:\n%s" % (line, log_tail(p))


# ---- at start -------------------------------------------------------------------------------

def test_reload_metrics_at_start(remora, upstream, tmp_path):
    """Before any reload: reloads_total success and failure both present at 0, generation 1,
    the last success timestamp set (to the start), remora_config_info carries the hash of GET
    /config, with the right metric types."""
    t0 = time.time()
    cfg = reload_config([upstream_cfg("app", upstream)], [route_cfg("kept", "app")])
    p, _ = start(remora, tmp_path, cfg)
    m = metrics(p.admin_port)
    assert m.value("remora_config_reloads_total", result="success") == 0, m.text
    assert m.value("remora_config_reloads_total", result="failure") == 0, m.text
    assert m.value("remora_config_generation") == 1
    ts = m.value("remora_config_last_reload_success_timestamp_seconds")
    assert ts is not None and math.floor(t0) - 1 <= ts <= time.time() + 1, (ts, t0)
    doc = config_doc(p.admin_port)
    assert m.series("remora_config_info") == [({"hash": doc["hash"]}, 1.0)]
    assert m.types.get("remora_config_reloads_total") == "counter", m.types
    assert m.types.get("remora_config_generation") == "gauge", m.types
    assert m.types.get("remora_config_last_reload_success_timestamp_seconds") == "gauge"
    assert events(p) == []


# ---- SIGHUP ---------------------------------------------------------------------------------

def test_sighup_same_file_reloads(remora, upstream, tmp_path):
    """SIGHUP always reloads, even an unchanged file: success 1, generation 2, a `config
    reloaded (SIGHUP): generation 2, hash H` line with H the unchanged hash (the effective
    config is the same, so remora_config_info and GET /config keep it), the last success
    timestamp moves to the reload; traffic goes on."""
    cfg = reload_config([upstream_cfg("app", upstream)], [route_cfg("kept", "app")])
    p, _ = start(remora, tmp_path, cfg)
    s1 = state(p)
    h1 = config_doc(p.admin_port)["hash"]
    assert s1["hash"] == h1
    # the timestamp may have whole-second resolution: let a second pass so that the reload's
    # differs from the start's
    time.sleep(1.1)
    t_hup = time.time()
    sighup(p)
    s2 = wait_state(p, success=1, generation=2)
    assert s2["failure"] == 0 and s2["hash"] == h1, s2
    assert s2["ts"] > s1["ts"] and s2["ts"] >= math.floor(t_hup), (s1, s2, t_hup)
    assert events(p) == [("reloaded", "SIGHUP", 2, h1)], log_tail(p)
    assert config_doc(p.admin_port)["hash"] == h1
    assert get(p.port).status == 200
    assert p.alive()


def test_sighup_adds_route(remora, upstream_factory, tmp_path):
    """A route added by SIGHUP answers at once: on a fresh connection, on an HTTP/1.1
    keep-alive connection and on an h2c connection both opened before the reload; the kept
    route still answers on them. Only one reload is counted (the file watch then sees the
    bytes of the active generation)."""
    from h2util import H2Client

    a, b = two_apps(upstream_factory)
    cfg = reload_config([upstream_cfg("a", a), upstream_cfg("b", b)],
                        [route_cfg("kept", "a", host="kept.test")])
    p, cd = start(remora, tmp_path, cfg)
    h1 = HttpConn(p.port)
    h2c = H2Client(p.port)
    try:
        assert routed(h1_get(h1, "kept.test"), "a")
        assert routed(h2c.get("/echo", authority="kept.test"), "a")
        assert no_route(get(p.port, host="new.test"))

        cd.write_inplace(with_routes(cfg, route_cfg("kept", "a", host="kept.test"),
                                     route_cfg("new", "b", host="new.test")))
        sighup(p)
        wait_state(p, success=1, generation=2)

        r = h1_get(h1, "new.test")
        assert routed(r, "b"), r
        assert routed(h1_get(h1, "kept.test"), "a")
        r = h2c.get("/echo", authority="new.test")
        assert routed(r, "b"), r
        assert routed(h2c.get("/echo", authority="kept.test"), "a")
        assert h2c.goaway is None, "the reload sent the h2c connection a GOAWAY"
        assert routed(get(p.port, host="new.test"), "b")
    finally:
        h1.close()
        h2c.close()
    time.sleep(SETTLE)
    s = state(p)
    assert (s["success"], s["failure"], s["generation"]) == (1, 0, 2), s
    assert [e[:3] for e in events(p)] == [("reloaded", "SIGHUP", 2)], log_tail(p)


def test_sighup_removes_route(remora, upstream_factory, tmp_path):
    """Routes removed by SIGHUP: a host no other route matches answers 404 no_route (on a
    kept HTTP/1.1 and h2c connection and a fresh one); a path that a removed, more specific
    route had taken now goes to the route that also matches it."""
    from h2util import H2Client

    a, b = two_apps(upstream_factory)
    special = route_cfg("special", "b", host="api.test", prefix="/echo/special")
    api = route_cfg("api", "a", host="api.test")
    old = route_cfg("old", "a", host="old.test")
    cfg = reload_config([upstream_cfg("a", a), upstream_cfg("b", b)], [special, api, old])
    p, cd = start(remora, tmp_path, cfg)
    h1 = HttpConn(p.port)
    h2c = H2Client(p.port)
    try:
        assert routed(h1_get(h1, "old.test"), "a")
        assert routed(h2c.get("/echo", authority="old.test"), "a")
        assert routed(get(p.port, "/echo/special", host="api.test"), "b")

        cd.write_inplace(with_routes(cfg, api))
        sighup(p)
        wait_state(p, success=1, generation=2)

        r = h1_get(h1, "old.test")
        assert no_route(r), r
        r = h2c.get("/echo", authority="old.test")
        assert no_route(r), r
        assert no_route(get(p.port, host="old.test"))
        assert routed(get(p.port, "/echo/special", host="api.test"), "a")
        assert routed(h2c.get("/echo/special", authority="api.test"), "a")
    finally:
        h1.close()
        h2c.close()


def test_sighup_changes_route_upstream(remora, upstream_factory, tmp_path):
    """A route pointed at another upstream (and given a shorter timeout) by SIGHUP: requests in
    flight at the reload (one on its own HTTP/1.1 connection, one stream on an h2c connection)
    finish under the old route (the old upstream, the old 15 s timeout: 1.5 s responses arrive
    whole); new requests, also on connections opened before (that h2c connection included),
    go to the new upstream under the new 500 ms timeout (504 for a 1.5 s response)."""
    from h2util import H2Client

    a, b = two_apps(upstream_factory)
    cfg = reload_config([upstream_cfg("a", a), upstream_cfg("b", b)],
                        [route_cfg("moved", "a", host="moved.test")])
    p, cd = start(remora, tmp_path, cfg)
    h1 = HttpConn(p.port)
    h2c = H2Client(p.port)
    try:
        assert routed(h1_get(h1, "moved.test"), "a")
        assert routed(h2c.get("/echo", authority="moved.test"), "a")
        slow = InFlight(p.port, "/delay?ms=1500", host="moved.test")
        slow_sid = h2c.request("GET", "/delay?ms=1500", authority="moved.test")
        assert wait_for(lambda: a.stats()["in_flight"] == 2, 3.0), "the slow requests never " \
            "reached app a"

        cd.write_inplace(with_routes(cfg, route_cfg("moved", "b", host="moved.test",
                                                    timeout="500ms")))
        sighup(p)
        wait_state(p, success=1, generation=2)
        assert a.stats()["in_flight"] == 2, "a request in flight did not outlive the reload"

        assert routed(h1_get(h1, "moved.test"), "b")
        assert routed(h2c.get("/echo", authority="moved.test"), "b")
        assert routed(get(p.port, host="moved.test"), "b")
        r = get(p.port, "/delay?ms=1500", host="moved.test")
        assert r.status == 504 and r.header("x-remora-error") == "upstream_timeout", r

        r = slow.join()
        assert r.status == 200 and r.complete and r.body == b"ok", r
        assert r.header("x-upstream-name") == "a", r
        r = h2c.response(slow_sid, 5.0)
        assert routed(r, "a") and r.body == b"ok", r
    finally:
        h1.close()
        h2c.close()


# ---- rejected files -------------------------------------------------------------------------

BAD_FILES = {
    # a YAML syntax error
    "yaml": "routes: [\n  - name: new\n",
    # parses, but a route names an upstream that does not exist (and kept is gone)
    "unknown_upstream": None,
}


@pytest.mark.parametrize("bad", sorted(BAD_FILES))
def test_invalid_file_rejected(remora, upstream_factory, tmp_path, run_remora, bad):
    """An invalid file (a YAML syntax error; a file that parses but names a missing upstream,
    adds route "new" and drops "kept"), seen by the file watch: one failure counted, a
    `config reload (file change) failed; keeping generation 1` line and, in any order around
    it, the lines `remora --check` prints for the file; generation, hash, last success
    timestamp and GET /config unchanged; traffic
    unaffected (kept answers on a kept connection and a fresh one, "new" does not). SIGHUP on
    the same file fails again (SIGHUP always reloads); a fixed file is then loaded
    (generation 2)."""
    from h2util import H2Client

    a, b = two_apps(upstream_factory)
    kept = route_cfg("kept", "a", host="kept.test")
    new = route_cfg("new", "b", host="new.test")
    cfg = reload_config([upstream_cfg("a", a), upstream_cfg("b", b)], [kept])
    p, cd = start(remora, tmp_path, cfg)
    doc1 = config_doc(p.admin_port)
    s1 = state(p)
    h1 = HttpConn(p.port)
    try:
        assert routed(h1_get(h1, "kept.test"), "a")
        text = BAD_FILES[bad]
        if text is None:
            text = with_routes(cfg, new, route_cfg("bad", "nope", host="bad.test"))
        n0 = len(p.log_lines())
        cd.write_inplace(text)
        s2 = wait_state(p, failure=1)
        assert (s2["success"], s2["generation"], s2["hash"], s2["ts"]) == \
            (0, 1, s1["hash"], s1["ts"]), (s1, s2)
        assert events(p) == [("failed", "file change", 1, None)], log_tail(p)
        expected = check_lines(run_remora, cd.path)
        assert_logged(p, n0, expected)

        assert routed(h1_get(h1, "kept.test"), "a")
        assert routed(get(p.port, host="kept.test"), "a")
        assert no_route(get(p.port, host="new.test"))
        with H2Client(p.port) as h2c:
            assert routed(h2c.get("/echo", authority="kept.test"), "a")
        assert config_doc(p.admin_port) == doc1

        n0 = len(p.log_lines())
        sighup(p)
        s3 = wait_state(p, failure=2)
        assert (s3["success"], s3["generation"]) == (0, 1), s3
        assert events(p)[-1] == ("failed", "SIGHUP", 1, None), log_tail(p)
        assert_logged(p, n0, expected)
        assert routed(h1_get(h1, "kept.test"), "a")

        cd.write_inplace(with_routes(cfg, kept, new))
        s4 = wait_state(p, success=1, generation=2)
        assert s4["failure"] == 2, s4
        assert routed(get(p.port, host="new.test"), "b")
        assert routed(h1_get(h1, "kept.test"), "a")
    finally:
        h1.close()


# ---- the file watch -------------------------------------------------------------------------

WRITES = ["inplace", "inplace_slow", "tmp_rename", "vim"]


@pytest.mark.parametrize("how", WRITES)
def test_file_change_reloads_once(remora, upstream_factory, tmp_path, how):
    """Without a signal, one change of the file reloads it exactly once (`config reloaded
    (file change): generation 2`), however it is written: in place (`cat > file`), in place in
    three pieces 20 ms apart (within the debounce: never read half-written), into a temp file
    renamed over it, or vim's way (the file renamed to a backup, a new one written, the backup
    removed). The new route answers; nothing more is counted afterwards."""
    a, b = two_apps(upstream_factory)
    kept = route_cfg("kept", "a", host="kept.test")
    cfg = reload_config([upstream_cfg("a", a), upstream_cfg("b", b)], [kept])
    p, cd = start(remora, tmp_path, cfg)
    new_cfg = with_routes(cfg, kept, route_cfg("new", "b", host="new.test"))
    t0 = time.monotonic()
    if how == "inplace":
        cd.write_inplace(new_cfg)
    elif how == "inplace_slow":
        cd.write_inplace(new_cfg, pieces=3, gap=0.02)
    elif how == "tmp_rename":
        cd.write_rename(new_cfg)
    else:
        cd.write_vim(new_cfg)
    wait_state(p, success=1, generation=2)
    took = time.monotonic() - t0
    assert routed(get(p.port, host="new.test"), "b")
    time.sleep(SETTLE)
    s = state(p)
    assert (s["success"], s["failure"], s["generation"]) == (1, 0, 2), (s, log_tail(p))
    assert [e[:3] for e in events(p)] == [("reloaded", "file change", 2)], log_tail(p)
    print("\n%s: reloaded %.0f ms after the write" % (how, took * 1000))


def test_identical_bytes_not_counted(remora, upstream, tmp_path):
    """Writes that leave the file's bytes as the active generation's reload nothing: the same
    text in place, the same text through a temp file + rename, vim's save of the same text,
    and another file in the directory changing. Then a real change is counted once (the
    watch was alive all along)."""
    kept = route_cfg("kept", "app", host="kept.test")
    cfg = reload_config([upstream_cfg("app", upstream)], [kept])
    p, cd = start(remora, tmp_path, cfg)
    same = cd.text
    cd.write_inplace(same)
    cd.write_rename(same)
    cd.write_vim(same)
    (cd.dir / "notes.txt").write_text("not the config\n")
    time.sleep(SETTLE)
    s = state(p)
    assert (s["success"], s["failure"], s["generation"]) == (0, 0, 1), (s, log_tail(p))
    assert events(p) == []

    cd.write_inplace(with_routes(cfg, kept, route_cfg("new", "app", host="new.test")))
    wait_state(p, success=1, generation=2)
    time.sleep(SETTLE)
    s = state(p)
    assert (s["success"], s["failure"]) == (1, 0), s
    assert get(p.port, host="new.test").status == 200


def test_configmap_symlink_swap(remora, upstream_factory, tmp_path):
    """A ConfigMap volume as the kubelet lays it out (remora.yaml -> ..data/remora.yaml,
    ..data -> ..<timestamp>) and updates it (new timestamped dir, ..data_tmp renamed over
    ..data, old dir removed): each swap with new content reloads once (file change), the new
    routes answer and removed ones 404; a swap to a copy of the same bytes reloads nothing;
    the watch keeps working after ..data was replaced."""
    a, b = two_apps(upstream_factory)
    kept = route_cfg("kept", "a", host="kept.test")
    cfg = reload_config([upstream_cfg("a", a), upstream_cfg("b", b)], [kept])
    p, cd = start(remora, tmp_path, cfg, layout="configmap")
    assert os.path.islink(cd.path) and os.path.islink(cd.dir / "..data")
    assert routed(get(p.port, host="kept.test"), "a")

    cfg2 = with_routes(cfg, kept, route_cfg("new", "b", host="new.test"))
    cd.swap(cfg2)
    wait_state(p, success=1, generation=2)
    assert routed(get(p.port, host="new.test"), "b")
    time.sleep(SETTLE)
    assert state(p)["success"] == 1, log_tail(p)

    cd.swap(cfg2)  # a new projection of the same bytes
    time.sleep(SETTLE)
    s = state(p)
    assert (s["success"], s["failure"], s["generation"]) == (1, 0, 2), (s, log_tail(p))

    cd.swap(with_routes(cfg, kept, route_cfg("newer", "b", host="newer.test")))
    wait_state(p, success=2, generation=3)
    assert routed(get(p.port, host="newer.test"), "b")
    assert no_route(get(p.port, host="new.test"))
    assert routed(get(p.port, host="kept.test"), "a")
    time.sleep(SETTLE)
    s = state(p)
    assert (s["success"], s["failure"]) == (2, 0), s
    assert [e[:3] for e in events(p)] == [("reloaded", "file change", 2),
                                          ("reloaded", "file change", 3)], log_tail(p)


# ---- listeners and admin --------------------------------------------------------------------

def test_listeners_added_removed_kept(remora, upstream, tmp_path):
    """Two workers; listeners main (kept), gone (removed) and extra (added) by SIGHUP: a
    connect-and-request loop on main running across the reload is never refused or failed,
    main keeps its very sockets (same LISTEN inodes), a keep-alive connection held open on main
    still works, a request in flight on gone finishes (200, whole) while gone refuses new
    connections, and extra accepts and serves. A third generation adds gone back on its old
    port: it serves again."""
    p_main, p_gone, p_extra = free_port(), free_port(), free_port()
    kept = route_cfg("kept", "app")
    cfg = reload_config([upstream_cfg("app", upstream)], [kept], workers=2,
                        listeners=[("main", p_main), ("gone", p_gone)])
    p, cd = start(remora, tmp_path, cfg)
    assert connect_refused(p_extra)
    held = HttpConn(p_main)
    loop = None
    try:
        held.request("GET", "/echo")
        assert held.read_response().status == 200
        assert get(p_gone).status == 200
        slow = InFlight(p_gone, "/delay?ms=1500")
        assert wait_for(lambda: upstream.stats()["in_flight"] == 1, 3.0)
        inodes = listen_inodes(p_main)
        assert inodes, "no LISTEN socket found for main in /proc/net/tcp"

        loop = ConnectLoop(p_main)
        assert loop.wait_ok(5), loop.failures[:5]
        cd.write_inplace(derive(cfg, listeners=[
            {"name": "main", "address": "127.0.0.1:%d" % p_main},
            {"name": "extra", "address": "127.0.0.1:%d" % p_extra}]))
        sighup(p)
        wait_state(p, success=1, generation=2)
        n = loop.ok
        assert loop.wait_ok(n + 20), loop.failures[:5]
        loop.stop()
        assert loop.failures == [], "main failed during the reload: %r" % loop.failures[:5]

        assert wait_for(lambda: connect_refused(p_gone), 2.0, 0.02), "gone still accepts"
        assert get(p_extra).status == 200
        held.request("GET", "/echo")
        r = held.read_response()
        assert r.status == 200 and r.complete, r
        assert listen_inodes(p_main) == inodes, "main's listening sockets were replaced"
        r = slow.join()
        assert r.status == 200 and r.complete and r.body == b"ok", r

        # gone again, on its old port: an added listener like any other
        cd.write_inplace(derive(cfg, listeners=[
            {"name": "main", "address": "127.0.0.1:%d" % p_main},
            {"name": "extra", "address": "127.0.0.1:%d" % p_extra},
            {"name": "gone", "address": "127.0.0.1:%d" % p_gone}]))
        sighup(p)
        wait_state(p, success=2, generation=3)
        assert get(p_gone).status == 200
        assert get(p_extra).status == 200
        assert listen_inodes(p_main) == inodes
        print("\nconnect loop on main: %d requests, none failed" % loop.ok)
    finally:
        if loop is not None:
            loop.stop()
        held.close()


def test_admin_address_moves(remora, upstream, tmp_path):
    """A new admin address (SIGHUP): the new port serves /readyz and /metrics (generation 2),
    the old one refuses connections; traffic goes on."""
    cfg = reload_config([upstream_cfg("app", upstream)], [route_cfg("kept", "app")])
    p, cd = start(remora, tmp_path, cfg)
    old = p.admin_port
    new = free_port()
    cd.write_inplace(derive(cfg, admin={"address": "127.0.0.1:%d" % new}))
    sighup(p)
    s = wait_state(p, admin_port=new, success=1, generation=2)
    p.admin_port = new
    assert s["failure"] == 0
    assert http_get_body(new, "/readyz") == (200, b"ok\n")
    assert config_doc(new)["admin"]["address"] == "127.0.0.1:%d" % new
    assert wait_for(lambda: connect_refused(old), 2.0, 0.02), "the old admin port still accepts"
    assert get(p.port).status == 200


def test_workers_change_needs_restart(remora, upstream, tmp_path):
    """workers 1 -> 2 with a new route in the same file: a warn line containing `needs a
    restart` names `workers`; the rest applies (success counted, the new route answers); the
    thread count does not change."""
    kept = route_cfg("kept", "app", host="kept.test")
    cfg = reload_config([upstream_cfg("app", upstream)], [kept], workers=1)
    p, cd = start(remora, tmp_path, cfg)
    threads = p.threads()
    cd.write_inplace(derive(cfg, workers=2,
                            routes=[kept, route_cfg("new", "app", host="new.test")]))
    sighup(p)
    s = wait_state(p, success=1, generation=2)
    assert s["failure"] == 0
    assert get(p.port, host="new.test").status == 200
    warn = [e for e in p.log_lines() if "needs a restart" in str(e.get("msg", ""))]
    assert len(warn) == 1, log_tail(p)
    assert "workers" in warn[0]["msg"] and warn[0].get("level") == "warn", warn
    assert p.threads() == threads, "the thread count changed on a live reload"


# ---- GET /config and the hash ---------------------------------------------------------------

def test_config_endpoint_and_hash_follow(remora, upstream, tmp_path):
    """After a reload (file change) that sets limits.max_headers 77, a route timeout of 7s and
    adds a route: GET /config shows the new values, its hash differs from the old one and is
    the one of remora_config_info (the old series gone) and of the log line."""
    kept = route_cfg("kept", "app", host="kept.test")
    cfg = reload_config([upstream_cfg("app", upstream)], [kept])
    p, cd = start(remora, tmp_path, cfg)
    doc1 = config_doc(p.admin_port)
    cd.write_rename(derive(cfg, limits=dict(cfg["limits"], max_headers=77), routes=[
        route_cfg("kept", "app", host="kept.test", timeout="7s"),
        route_cfg("new", "app", host="new.test")]))
    s = wait_state(p, success=1, generation=2)
    doc2 = config_doc(p.admin_port)
    assert doc2["limits"]["max_headers"] == 77
    assert [r["name"] for r in doc2["routes"]] == ["kept", "new"]
    assert doc2["routes"][0]["timeout"] == "7s"
    assert doc2["hash"] != doc1["hash"]
    assert doc2["loaded_at"] >= doc1["loaded_at"]
    m = metrics(p.admin_port)
    assert m.series("remora_config_info") == [({"hash": doc2["hash"]}, 1.0)], m.text
    assert s["hash"] == doc2["hash"]
    assert events(p) == [("reloaded", "file change", 2, doc2["hash"])]


# ---- metrics continuity ---------------------------------------------------------------------

def route_samples(m, route):
    return [(n, l, v) for n, l, v in m.samples if l.get("route") == route]


def kept_hist(m):
    """{le: value} of kept's 2xx duration buckets, and its _count."""
    b = {l["le"]: v for l, v in m.series("remora_request_duration_seconds_bucket",
                                          route="kept", code="2xx")}
    return b, m.value("remora_request_duration_seconds_count", route="kept", code="2xx")


def requests_of(p, route):
    return metrics(p.admin_port).value("remora_requests_total", route=route, code="2xx")


def test_route_metrics_across_reloads(remora, upstream, tmp_path):
    """Reload 1 removes route old, adds new, keeps kept as is: kept's requests_total and
    histogram continue (3, then 5), every series of old leaves /metrics, new has its series at
    once. Reload 2 changes kept's buckets: requests_total continues (6 after one more request)
    while the histogram restarts with exactly the new le set (its _count 1). promtool accepts
    the scrape, when installed."""
    kept = route_cfg("kept", "app", host="kept.test")
    old = route_cfg("old", "app", host="old.test")
    cfg = reload_config([upstream_cfg("app", upstream)], [kept, old])
    p, cd = start(remora, tmp_path, cfg)
    for _ in range(3):
        assert get(p.port, host="kept.test").status == 200
        assert get(p.port, host="old.test").status == 200
    assert wait_for(lambda: requests_of(p, "kept") == 3 and requests_of(p, "old") == 3, 3.0)

    new = route_cfg("new", "app", host="new.test")
    cd.write_inplace(with_routes(cfg, kept, new))
    sighup(p)
    wait_state(p, success=1, generation=2)
    m = metrics(p.admin_port)
    assert route_samples(m, "old") == [], route_samples(m, "old")
    assert m.value("remora_requests_in_flight", route="new") == 0, m.text
    assert m.value("remora_request_bytes_total", route="new") == 0, m.text
    assert m.value("remora_requests_total", route="kept", code="2xx") == 3
    buckets, count = kept_hist(m)
    assert count == 3 and buckets["+Inf"] == 3, (buckets, count)
    default_le = set(buckets)
    for _ in range(2):
        assert get(p.port, host="kept.test").status == 200
    assert wait_for(lambda: requests_of(p, "kept") == 5, 3.0)
    assert kept_hist(metrics(p.admin_port))[1] == 5

    cd.write_inplace(with_routes(cfg, route_cfg("kept", "app", host="kept.test",
                                                buckets=[0.001, 0.5]), new))
    sighup(p)
    wait_state(p, success=2, generation=3)
    m = metrics(p.admin_port)
    assert m.value("remora_requests_total", route="kept", code="2xx") == 5
    les = {l["le"] for l, _ in m.series("remora_request_duration_seconds_bucket", route="kept")}
    assert les <= {"0.001", "0.5", "+Inf"}, les
    assert get(p.port, host="kept.test").status == 200
    assert wait_for(lambda: requests_of(p, "kept") == 6, 3.0)
    m = metrics(p.admin_port)
    buckets, count = kept_hist(m)
    assert set(buckets) == {"0.001", "0.5", "+Inf"}, buckets
    assert count == 1 and buckets["+Inf"] == 1, (buckets, count)
    assert default_le != set(buckets)
    assert route_samples(m, "old") == []
    if os.access(PROMTOOL, os.X_OK):
        res = subprocess.run([PROMTOOL, "check", "metrics"], input=m.text.encode(),
                             capture_output=True, timeout=30)
        assert res.returncode == 0, (res.stdout + res.stderr).decode()


# ---- upstream pools -------------------------------------------------------------------------

def test_pool_kept_when_upstream_unchanged(remora, upstream, tmp_path):
    """Reloads that change routes, route limits and the upstream's max_requests, max_pending,
    queue_timeout, connect_timeout and idle_timeout (name, endpoints and protocol unchanged)
    keep the upstream's pool: every request, on a kept downstream connection and on fresh
    ones, rides the same upstream connection (x-upstream-conn), and the app never sees a
    second connection from remora."""
    kept = route_cfg("kept", "app")
    cfg = reload_config([upstream_cfg("app", upstream)], [kept], workers=1)
    p, cd = start(remora, tmp_path, cfg)
    c = HttpConn(p.port)
    try:
        c.request("GET", "/echo")
        r = c.read_response()
        assert r.status == 200
        conn_id = r.header("x-upstream-conn")
        steps = [
            with_routes(cfg, route_cfg("other", "app", host="other.test"), kept),
            derive(cfg, upstreams=[upstream_cfg("app", upstream, max_requests=100,
                                                max_pending=10, queue_timeout="2s")]),
            derive(cfg, upstreams=[upstream_cfg("app", upstream, max_requests=50,
                                                connect_timeout="2s", idle_timeout="20s")],
                   routes=[route_cfg("kept", "app", timeout="5s", max_requests=40)]),
        ]
        for i, step in enumerate(steps, start=2):
            cd.write_inplace(step)
            sighup(p)
            wait_state(p, success=i - 1, generation=i)
            c.request("GET", "/echo")
            r = c.read_response()
            assert r.status == 200 and r.header("x-upstream-conn") == conn_id, \
                "reload %d: a new upstream connection (%r, was %r)" % (
                    i - 1, r.header("x-upstream-conn"), conn_id)
            r = get(p.port)
            assert r.status == 200 and r.header("x-upstream-conn") == conn_id, r
        st = upstream.stats()
        assert st["proxied_conns_total"] == 1, st
        m = metrics(p.admin_port)
        assert m.total("remora_upstream_connections", upstream="app") == 1, m.text
    finally:
        c.close()


@pytest.mark.parametrize("change", ["endpoints", "removed"])
def test_changed_or_removed_upstream_drops_its_pool(remora, upstream_factory, tmp_path,
                                                    change):
    """upstream app's endpoint moved from A to B (same name), or app removed and route kept
    pointed at a new upstream on B: new requests, also on a kept downstream connection, go to
    B; A's idle upconn closes at once, its busy one (a 1.5 s response) finishes the response
    whole and then closes."""
    a, b = two_apps(upstream_factory)
    cfg = reload_config([upstream_cfg("app", a)], [route_cfg("kept", "app")], workers=1)
    p, cd = start(remora, tmp_path, cfg)
    c = HttpConn(p.port)
    try:
        slow = InFlight(p.port, "/delay?ms=1500")
        assert wait_for(lambda: a.stats()["in_flight"] == 1, 3.0)
        assert routed(h1_get(c, "127.0.0.1"), "a")  # a second upconn, then idle in the pool
        st = a.stats()
        assert st["proxied_conns_open"] == 2, st

        if change == "endpoints":
            cd.write_inplace(derive(cfg, upstreams=[upstream_cfg("app", b)]))
        else:
            cd.write_inplace(derive(cfg, upstreams=[upstream_cfg("other", b)],
                                    routes=[route_cfg("kept", "other")]))
        sighup(p)
        wait_state(p, success=1, generation=2)
        assert routed(h1_get(c, "127.0.0.1"), "b")
        assert routed(get(p.port), "b")
        assert wait_for(lambda: a.stats()["proxied_conns_open"] == 1, 2.0), \
            "A's idle upconn survived the reload: %r" % a.stats()
        assert a.stats()["in_flight"] == 1
        r = slow.join()
        assert routed(r, "a") and r.body == b"ok", r
        assert wait_for(lambda: a.stats()["proxied_conns_open"] == 0, 2.0), \
            "A's busy upconn was kept after its response: %r" % a.stats()
        assert routed(get(p.port), "b")
        assert a.stats()["proxied_conns_total"] == 2
    finally:
        c.close()


def test_kept_upstream_keeps_its_health_state(remora, upstream, tmp_path):
    """An upstream with a health check, kept by two reloads (a route added; its max_requests
    changed): its state carries over, so /readyz, polled every 10 ms across the reloads, never
    leaves 200 (a check started afresh would hold /readyz at 503 until its first probe, which
    the app answers only after 300 ms)."""
    import threading

    upstream.set_ready(200, delay_ms=300)
    hc = {"path": "/ready", "interval": "1s", "timeout": "1s"}
    kept = route_cfg("kept", "app")
    cfg = reload_config([upstream_cfg("app", upstream, health_check=hc)], [kept])
    p, cd = start(remora, tmp_path, cfg)
    seen = []
    stop = threading.Event()

    def poll():
        end = time.monotonic() + 10.0
        while not stop.is_set() and time.monotonic() < end:
            seen.append(http_get_body(p.admin_port, "/readyz", timeout=1.0)[0])
            stop.wait(0.01)

    t = threading.Thread(target=poll, daemon=True)
    t.start()
    try:
        cd.write_inplace(with_routes(cfg, kept, route_cfg("new", "app", host="new.test")))
        sighup(p)
        wait_state(p, success=1, generation=2)
        time.sleep(0.5)  # longer than the app's answer to a fresh probe
        cd.write_inplace(derive(cfg, upstreams=[upstream_cfg("app", upstream, health_check=hc,
                                                             max_requests=100)]))
        sighup(p)
        wait_state(p, success=2, generation=3)
        time.sleep(0.5)
    finally:
        stop.set()
        t.join(5)
    assert len(seen) >= 30, seen
    assert set(seen) == {200}, "/readyz left 200 across the reloads: %r" % sorted(set(seen))


# ---- limits ---------------------------------------------------------------------------------

def concurrent(port, n, path, host="127.0.0.1"):
    reqs = [InFlight(port, path, host=host) for _ in range(n)]
    return [r.join() for r in reqs]


def test_route_limits_follow_reload(remora, upstream, tmp_path):
    """One worker; a route limit added by reload (max_requests 1, max_pending 0) applies to
    the next requests (of two concurrent, one 503 queue_full), and removed by the next reload
    no longer does (both 200)."""
    kept = route_cfg("kept", "app")
    cfg = reload_config([upstream_cfg("app", upstream)], [kept], workers=1)
    p, cd = start(remora, tmp_path, cfg)
    rs = concurrent(p.port, 2, "/delay?ms=500")
    assert [r.status for r in rs] == [200, 200]

    cd.write_inplace(with_routes(cfg, route_cfg("kept", "app", max_requests=1, max_pending=0)))
    sighup(p)
    wait_state(p, success=1, generation=2)
    rs = concurrent(p.port, 2, "/delay?ms=500")
    assert sorted(r.status for r in rs) == [200, 503], rs
    assert [r.header("x-remora-error") for r in rs if r.status == 503] == ["queue_full"]

    cd.write_inplace(cfg)
    sighup(p)
    wait_state(p, success=2, generation=3)
    rs = concurrent(p.port, 2, "/delay?ms=500")
    assert [r.status for r in rs] == [200, 200], rs


def test_connection_settings_apply_to_new_connections(remora, upstream, tmp_path):
    """limits.max_headers 100 -> 20, limits.client_idle_timeout 60s -> 1s and
    listeners[0].http2.max_concurrent_streams 100 -> 50 by reload: a connection opened before
    keeps the old values (30 extra headers still served after more than 1 s idle; its SETTINGS
    unchanged, no new SETTINGS frame), a new one gets the new (431; closed after 1 s idle;
    SETTINGS MAX_CONCURRENT_STREAMS 50)."""
    from h2.settings import SettingCodes

    from h2util import H2Client

    cfg = reload_config([upstream_cfg("app", upstream)], [route_cfg("kept", "app")])
    p, cd = start(remora, tmp_path, cfg)
    extra = [("X-H%d" % i, "v") for i in range(30)]
    old_h1 = HttpConn(p.port)
    old_h2 = H2Client(p.port)
    new_h2 = None
    try:
        old_h1.request("GET", "/echo", headers=extra)
        assert old_h1.read_response().status == 200
        assert old_h2.get("/echo").status == 200
        assert old_h2.remote_settings.get(SettingCodes.MAX_CONCURRENT_STREAMS) == 100
        settings_frames = sum(1 for e in old_h2.events
                              if type(e).__name__ == "RemoteSettingsChanged")

        lst = dict(cfg["listeners"][0], http2={"max_concurrent_streams": 50})
        cd.write_inplace(derive(cfg, listeners=[lst],
                                limits=dict(cfg["limits"], max_headers=20,
                                            client_idle_timeout="1s")))
        sighup(p)
        wait_state(p, success=1, generation=2)

        r = http(p.port, "GET", "/echo", headers=extra)
        assert r.status == 431, r
        with HttpConn(p.port) as idle:
            idle.request("GET", "/echo")
            assert idle.read_response().status == 200
            t0 = time.monotonic()
            assert idle.is_closed(3.0), "a new connection outlived client_idle_timeout 1s"
            assert time.monotonic() - t0 >= 0.8
        old_h1.request("GET", "/echo", headers=extra)
        r = old_h1.read_response()
        assert r.status == 200, r
        new_h2 = H2Client(p.port)
        assert new_h2.get("/echo").status == 200
        assert new_h2.remote_settings.get(SettingCodes.MAX_CONCURRENT_STREAMS) == 50
        assert old_h2.get("/echo").status == 200
        assert old_h2.remote_settings.get(SettingCodes.MAX_CONCURRENT_STREAMS) == 100
        assert settings_frames == sum(1 for e in old_h2.events
                                      if type(e).__name__ == "RemoteSettingsChanged")
    finally:
        old_h1.close()
        old_h2.close()
        if new_h2 is not None:
            new_h2.close()


# ---- drain ----------------------------------------------------------------------------------

def test_reload_ignored_while_draining(remora, upstream, tmp_path):
    """After POST /drain, a changed file and a SIGHUP reload nothing (generation 1, nothing
    counted, /config unchanged), each logged (a line about the reload naming its trigger);
    remora keeps running."""
    cfg = reload_config([upstream_cfg("app", upstream)], [route_cfg("kept", "app")],
                        drain={"delay": "0s", "timeout": "10s"})
    p, cd = start(remora, tmp_path, cfg)
    doc1 = config_doc(p.admin_port)
    assert http(p.admin_port, "POST", "/drain").status == 202
    assert wait_for(lambda: http_get_body(p.admin_port, "/readyz") == (503, b"draining\n"), 2.0)
    n_before = len(p.log_lines())
    cd.write_inplace(derive(cfg, limits=dict(cfg["limits"], max_headers=77)))
    sighup(p)

    def ignored_lines():
        return [str(e.get("msg", "")) for e in p.log_lines()[n_before:]
                if "reload" in str(e.get("msg", "")).lower()]

    def both_logged():
        lines = ignored_lines()
        return any("SIGHUP" in l for l in lines) and any("file change" in l for l in lines)

    assert wait_for(both_logged, 2.0), log_tail(p)
    time.sleep(SETTLE)
    s = state(p)
    assert (s["success"], s["failure"], s["generation"]) == (0, 0, 1), (s, log_tail(p))
    assert events(p) == []
    assert config_doc(p.admin_port) == doc1
    assert p.alive()
    print("\nwhile draining: %r" % ignored_lines())

