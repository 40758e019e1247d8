# SPDX-License-Identifier: Apache-2.0
"""88: a TLS handshake flood against limits.max_tls_handshakes (a cap on handshakes in progress
per worker). One worker, a cap of 20 and a 1 s tls_handshake_timeout; for 3 s (at most 500
connections) clients open TCP connections to the TLS listener and then send nothing or half a
ClientHello. What is checked: the cap holds (remora_tls_handshakes_in_progress never over 20);
at the cap, the stalled connection that has waited longest for its ClientHello is reset (counted
as refused) to make room; the last stuck ones end by the timeout and are counted so; every
connection is counted exactly once; new TLS clients arriving during the flood are served (their
ClientHello comes within a round trip, so the stall victims are the flood's); a keep-alive TLS
client established before the flood keeps getting 200s with bounded latency; remora's RSS
growth stays bounded; once the flood is over the gauge is back at 0 and a new handshake
succeeds. The figures are printed (run pytest with -s to see them). Also: 0 means no cap; when
every handshake in progress is past its ClientHello the new conn is the one reset; the count
stays exact across a reload (handshakes begun before it end under their generation's timeout,
and the new cap then admits exactly its number)."""

import os
import socket
import statistics
import threading
import time

import pytest

from helpers import RssSampler, metrics, wait_for
from reloadutil import render, sighup, wait_state
from tlsutil import client_ctx, client_hello, get_h1, make_pki, tls_config, tls_connect_ctx

CAP = 20
FLOOD_SECONDS = 3.0
FLOOD_MAX = 500
SANITIZED = bool(os.environ.get("REMORA_SANITIZED"))


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


def tls_counts(admin_port):
    m = metrics(admin_port)
    got = {res: m.value("remora_tls_handshakes_total", side="downstream", result=res)
           for res in ("ok", "failed", "timeout", "refused")}
    got["in_progress"] = m.value("remora_tls_handshakes_in_progress", side="downstream")
    return got


def reset_seen(s):
    """How a flood connection ended, seen from the client: "reset" (refused), "eof" (remora
    closed it: the handshake timed out) or "open"."""
    s.setblocking(False)
    try:
        return "eof" if s.recv(4096) == b"" else "open"
    except BlockingIOError:
        return "open"
    except (ConnectionResetError, BrokenPipeError):
        return "reset"


class Established(threading.Thread):
    """A keep-alive TLS client sending GETs back to back (20 ms apart) until stopped; the
    latency of each, and any failure."""

    def __init__(self, ctx, port):
        super().__init__(daemon=True)
        self.sock = tls_connect_ctx(ctx, port)
        assert get_h1(self.sock)[0] == 200
        self.lat, self.errors = [], []
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            t0 = time.monotonic()
            try:
                status = get_h1(self.sock)[0]
            except (OSError, AssertionError) as e:
                self.errors.append(repr(e))
                return
            self.lat.append(time.monotonic() - t0)
            if status != 200:
                self.errors.append(status)
            self.stop.wait(0.02)


class Newcomers(threading.Thread):
    """A new TLS client every 100 ms (full handshake, one GET): how many were served and how
    many refused (reset before the handshake)."""

    def __init__(self, ctx, port):
        super().__init__(daemon=True)
        self.ctx, self.port = ctx, port
        self.ok = self.refused = 0
        self.errors = []
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            try:
                with tls_connect_ctx(self.ctx, self.port) as s:
                    assert get_h1(s)[0] == 200
                self.ok += 1
            except (ConnectionResetError, BrokenPipeError):
                self.refused += 1
            except (OSError, AssertionError) as e:
                if "reset" in str(e).lower() or "EOF" in str(e):
                    self.refused += 1
                else:
                    self.errors.append(repr(e))
            self.stop.wait(0.1)


def test_handshake_flood(remora, upstream, pki):
    cfg, _ = tls_config(pki, [upstream.addr], plain=False,
                        limits={"max_tls_handshakes": CAP, "tls_handshake_timeout": "1s"})
    r = remora(config=cfg)
    ctx = client_ctx(pki, alpn=["http/1.1"])
    hello = client_hello(pki)
    est = Established(ctx, r.port)
    rss_before = r.rss_kib()
    new = Newcomers(ctx, r.port)
    flood, peak_gauge = [], [0]
    stop_gauge = threading.Event()

    def watch_gauge():
        while not stop_gauge.is_set():
            peak_gauge[0] = max(peak_gauge[0], tls_counts(r.admin_port)["in_progress"])
            stop_gauge.wait(0.05)

    gauge = threading.Thread(target=watch_gauge, daemon=True)
    with RssSampler(r.pid) as rss:
        est.start()
        new.start()
        gauge.start()
        t0 = time.monotonic()
        while time.monotonic() - t0 < FLOOD_SECONDS and len(flood) < FLOOD_MAX:
            for _ in range(10):
                try:
                    s = socket.create_connection(("127.0.0.1", r.port), timeout=5)
                    if len(flood) % 2:
                        s.sendall(hello[:len(hello) // 2])
                except ConnectionResetError:
                    s = None  # refused before connect() even returned (loopback is fast)
                except BrokenPipeError:
                    pass  # refused before the half ClientHello went: reset_seen tells
                flood.append(s)
            time.sleep(FLOOD_SECONDS * 10 / FLOOD_MAX)
        flood_took = time.monotonic() - t0
        est.stop.set()
        new.stop.set()
        est.join(10)
        new.join(10)
        # Every stuck handshake ends by the timeout: the gauge falls back to 0.
        assert wait_for(lambda: tls_counts(r.admin_port)["in_progress"] == 0, timeout=5.0), \
            tls_counts(r.admin_port)
        stop_gauge.set()
        gauge.join(5)
    ends = [reset_seen(s) if s else "reset" for s in flood]
    for s in flood:
        if s:
            s.close()
    rss_after = r.rss_kib()
    # After the flood a new handshake succeeds at once.
    with tls_connect_ctx(ctx, r.port) as s:
        assert get_h1(s)[0] == 200
    got = wait_for(lambda: (lambda c: c if c["ok"] == 2 + new.ok else None)(
        tls_counts(r.admin_port)), timeout=5.0)
    assert got, tls_counts(r.admin_port)
    lat = sorted(est.lat)
    figures = {
        "flood conns opened": len(flood), "flood seconds": round(flood_took, 2),
        "refused": got["refused"], "timeout": got["timeout"], "failed": got["failed"],
        "ok": got["ok"], "flood resets seen by clients": ends.count("reset"),
        "flood closes seen by clients (timeout)": ends.count("eof"),
        "peak in_progress gauge": peak_gauge[0],
        "newcomers served / refused": "%d / %d" % (new.ok, new.refused),
        "established requests": len(lat),
        "established latency ms p50 / p99 / max": "%.1f / %.1f / %.1f" % (
            statistics.median(lat) * 1e3, lat[int(len(lat) * 0.99) - 1] * 1e3, lat[-1] * 1e3),
        "RSS KiB before / peak / after": "%d / %d / %d" % (rss_before, rss.max_kib, rss_after),
    }
    print("\nhandshake flood figures:\n" + "\n".join("  %s: %s" % kv for kv in figures.items()))

    # The established client was served throughout, quickly.
    assert not est.errors, est.errors
    assert len(lat) >= FLOOD_SECONDS / 0.05, len(lat)
    assert statistics.median(lat) < (0.2 if SANITIZED else 0.05), figures
    assert lat[-1] < 1.0, figures
    assert not new.errors, new.errors
    # New clients were not shut out: the flood's stalled conns made room for them.
    assert new.ok >= 10 and new.ok >= 0.9 * (new.ok + new.refused), figures
    # The cap held, and over it connections were refused; the stuck ones timed out.
    assert peak_gauge[0] <= CAP, figures
    assert got["refused"] > 0 and got["timeout"] > 0, figures
    # Each connection counted once: every flood one and every refused newcomer is refused or
    # timed out (none failed: the clients kept them open past the timeout); the resets the
    # flood's clients saw are its refusals.
    assert got["failed"] == 0, figures
    assert got["refused"] + got["timeout"] == len(flood) + new.refused, figures
    assert ends.count("reset") + new.refused == got["refused"], figures
    assert ends.count("eof") == got["timeout"], figures
    # Memory: at most CAP handshakes hold TLS state at once, whatever the flood's size.
    assert rss.max_kib - rss_before < (64 if SANITIZED else 16) * 1024, figures
    # The refusals are logged once a second at most (each line with its count), not per conn.
    lines = [e for e in r.log_lines() if "limits.max_tls_handshakes" in e.get("msg", "")]
    assert 1 <= len(lines) <= FLOOD_SECONDS + 2, [e["msg"] for e in lines]


def test_zero_is_no_cap(remora, upstream, pki):
    """max_tls_handshakes: 0 refuses nothing: 40 stuck handshakes are all in progress."""
    cfg, _ = tls_config(pki, [upstream.addr], plain=False,
                        limits={"max_tls_handshakes": 0, "tls_handshake_timeout": "10s"})
    r = remora(config=cfg)
    socks = [socket.create_connection(("127.0.0.1", r.port), timeout=5) for _ in range(40)]
    try:
        assert wait_for(lambda: tls_counts(r.admin_port)["in_progress"] == 40, timeout=5.0), \
            tls_counts(r.admin_port)
        assert tls_counts(r.admin_port)["refused"] == 0
    finally:
        for s in socks:
            s.close()
    # Closed by the client during the handshake: failed, and the gauge back at 0.
    assert wait_for(lambda: tls_counts(r.admin_port)["in_progress"] == 0, timeout=5.0)
    assert tls_counts(r.admin_port)["failed"] == 40


def test_count_exact_across_reload(remora, upstream, pki, tmp_path):
    """Handshakes begun before a reload stay counted under the new generation (the cap is the
    new one's), end by the old generation's timeout, and leave the count at 0: afterwards the
    cap admits exactly CAP stuck handshakes again and refuses the next."""
    cfg, _ = tls_config(pki, [upstream.addr], plain=False,
                        limits={"max_tls_handshakes": 10, "tls_handshake_timeout": "1s"})
    path = tmp_path / "remora.yaml"
    path.write_text(render(cfg))
    r = remora(config=cfg, config_file=path)
    old = [socket.create_connection(("127.0.0.1", r.port), timeout=5) for _ in range(8)]
    assert wait_for(lambda: tls_counts(r.admin_port)["in_progress"] == 8, timeout=5.0)
    cfg["limits"].update({"max_tls_handshakes": CAP, "tls_handshake_timeout": "30s"})
    path.write_text(render(cfg))
    sighup(r)
    wait_state(r, success=1)
    assert tls_counts(r.admin_port)["in_progress"] == 8
    # The old conns time out under their generation's 1 s, and are uncounted.
    assert wait_for(lambda: tls_counts(r.admin_port)["timeout"] == 8, timeout=5.0)
    assert tls_counts(r.admin_port)["in_progress"] == 0
    for s in old:
        s.close()
    held = [socket.create_connection(("127.0.0.1", r.port), timeout=5) for _ in range(CAP)]
    try:
        assert wait_for(lambda: tls_counts(r.admin_port)["in_progress"] == CAP, timeout=5.0)
        # One more: the oldest stalled one (no ClientHello yet) is reset to make room.
        extra = socket.create_connection(("127.0.0.1", r.port), timeout=5)
        held.append(extra)
        assert reset_seen_blocking(held[0]) == "reset"
        assert wait_for(lambda: tls_counts(r.admin_port)["refused"] == 1, timeout=5.0)
        assert tls_counts(r.admin_port)["in_progress"] == CAP
        assert reset_seen(extra) == "open"
    finally:
        for s in held:
            s.close()
    assert wait_for(lambda: tls_counts(r.admin_port)["in_progress"] == 0, timeout=5.0)


def reset_seen_blocking(s, timeout=5.0):
    """reset_seen once remora has had time to act: waits for the connection to end."""
    s.settimeout(timeout)
    try:
        data = s.recv(4096)
        return "eof" if data == b"" else "open"
    except (ConnectionResetError, BrokenPipeError):
        return "reset"
    except socket.timeout:
        return "open"
    finally:
        s.close()


def test_new_conn_refused_when_every_handshake_is_past_its_hello(remora, upstream, pki):
    """At the cap with every handshake past its ClientHello (remora has answered each; they stall
    before their Finished), nothing is evicted: the new conn is reset at accept."""
    cfg, _ = tls_config(pki, [upstream.addr], plain=False,
                        limits={"max_tls_handshakes": 5, "tls_handshake_timeout": "10s"})
    r = remora(config=cfg)
    hello = client_hello(pki)
    held = []
    try:
        for _ in range(5):
            s = socket.create_connection(("127.0.0.1", r.port), timeout=5)
            s.sendall(hello)
            assert s.recv(1), "no ServerHello"  # remora did the work: past the ClientHello
            held.append(s)
        assert wait_for(lambda: tls_counts(r.admin_port)["in_progress"] == 5, timeout=5.0)
        try:
            seen = reset_seen_blocking(socket.create_connection(("127.0.0.1", r.port), timeout=5))
        except ConnectionResetError:
            seen = "reset"  # before connect() returned
        assert seen == "reset"
        assert tls_counts(r.admin_port)["refused"] == 1
        assert all(reset_seen(s) == "open" for s in held)
    finally:
        for s in held:
            s.close()
