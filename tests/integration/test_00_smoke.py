# SPDX-License-Identifier: Apache-2.0
"""00: the binary starts, its CLI answers, the config checker points at the right line, the
admin endpoints answer and one request goes through."""

import re
import subprocess

import pytest

from conftest import ROOT
from helpers import default_config, free_port, http, to_yaml


def configure_version():
    text = (ROOT / "configure.ac").read_text()
    m = re.search(r"AC_INIT\(\[remora\],\s*\[([^\]]+)\]", text)
    return m.group(1) if m else None


def write_config(tmp_path, text, name="remora.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def valid_yaml():
    return to_yaml(default_config(free_port(), free_port(), ["127.0.0.1:%d" % free_port()])) + "\n"


def line_of(text, needle):
    """(1-based line, 1-based column of needle, 1-based column of the value after ': ')."""
    for i, line in enumerate(text.splitlines(), 1):
        j = line.find(needle)
        if j >= 0:
            k = line.find(": ", j)
            return i, j + 1, (k + 3 if k >= 0 else None)
    raise AssertionError("%r not in config" % needle)


def diag_lines(path, output):
    """The FILE:LINE:COL: message lines for path in output, as (line, col, message)."""
    pat = re.compile(r"^%s:(\d+):(\d+): (.+)$" % re.escape(str(path)))
    out = []
    for line in output.splitlines():
        m = pat.match(line.strip())
        if m:
            out.append((int(m.group(1)), int(m.group(2)), m.group(3)))
    return out


def test_version(run_remora):
    p = run_remora("--version")
    assert p.returncode == 0, p.stderr
    out = p.stdout.decode().strip()
    assert re.match(r"^remora \S+$", out.splitlines()[0]), out
    want = configure_version()
    assert want is None or out.splitlines()[0] == "remora %s" % want, out


def test_help(run_remora):
    p = run_remora("--help")
    assert p.returncode == 0, p.stderr
    out = p.stdout.decode()
    assert re.search(r"usage", out, re.I), out
    assert "-c" in out and "--check" in out, out


def test_check_valid_config(run_remora, tmp_path):
    cfg = write_config(tmp_path, valid_yaml())
    p = run_remora("--check", "-c", cfg)
    assert p.returncode == 0, (p.stdout, p.stderr)
    lines = [l for l in p.stdout.decode().splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("ok:"), p.stdout


BAD_CONFIGS = {
    # name: (transform of the valid text, the text of the line that must be reported)
    "unknown_top_level_key": (lambda t: t + "bogus_key: 1\n", "bogus_key"),
    "unknown_nested_key": (lambda t: t.replace('    idle_timeout: "2s"\n',
                                               '    idle_timeout: "2s"\n    colour: "red"\n'),
                           "colour"),
    "bad_duration": (lambda t: t.replace('connect_timeout: "1s"', 'connect_timeout: "banana"'),
                     "connect_timeout"),
    "bad_size": (lambda t: t.replace('max_header_bytes: "64KiB"', 'max_header_bytes: "lots"'),
                 "max_header_bytes"),
    "route_to_unknown_upstream": (lambda t: t.replace('upstream: "app"', 'upstream: "nope"'),
                                  'upstream: "nope"'),
    "bad_listen_address": (lambda t: re.sub(r'address: "127\.0\.0\.1:\d+"',
                                            'address: "not-an-address"', t, count=1),
                           '"not-an-address"'),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_check_invalid_config_points_at_line(run_remora, tmp_path, case):
    transform, needle = BAD_CONFIGS[case]
    text = transform(valid_yaml())
    assert needle in text
    cfg = write_config(tmp_path, text)
    line, key_col, val_col = line_of(text, needle)
    p = run_remora("--check", "-c", cfg)
    out = p.stdout.decode() + p.stderr.decode()
    assert p.returncode == 1, out
    diags = diag_lines(cfg, out)
    assert diags, "no FILE:LINE:COL: message line in:\n" + out
    hit = [d for d in diags if d[0] == line]
    assert hit, "expected a message for line %d, got %r" % (line, diags)
    # The column names the offending key or its value (1-based, as compilers print it).
    indent = len(text.splitlines()[line - 1]) - len(text.splitlines()[line - 1].lstrip(" -"))
    cols = {key_col, val_col, indent + 1}
    assert any(d[1] in cols for d in hit), "column %r not in %r" % (hit, cols)
    assert all(d[2].strip() for d in diags)


def test_check_reports_every_error(run_remora, tmp_path):
    text = valid_yaml().replace('connect_timeout: "1s"', 'connect_timeout: "banana"')
    text += "bogus_key: 1\n"
    cfg = write_config(tmp_path, text)
    p = run_remora("--check", "-c", cfg)
    out = p.stdout.decode() + p.stderr.decode()
    assert p.returncode == 1, out
    lines = {d[0] for d in diag_lines(cfg, out)}
    assert line_of(text, "connect_timeout")[0] in lines, out
    assert line_of(text, "bogus_key")[0] in lines, out


def test_check_yaml_syntax_error(run_remora, tmp_path):
    text = valid_yaml() + "routes: [unclosed\n"
    cfg = write_config(tmp_path, text)
    p = run_remora("--check", "-c", cfg)
    out = p.stdout.decode() + p.stderr.decode()
    assert p.returncode == 1, out
    assert diag_lines(cfg, out), out


def test_check_missing_file(run_remora, tmp_path):
    p = run_remora("--check", "-c", tmp_path / "absent.yaml")
    assert p.returncode == 1
    assert str(tmp_path / "absent.yaml") in (p.stdout + p.stderr).decode()


def test_start_with_unknown_key_fails_with_same_messages(run_remora, tmp_path):
    text = valid_yaml() + "bogus_key: 1\n"
    cfg = write_config(tmp_path, text)
    check = run_remora("--check", "-c", cfg)
    start = run_remora("-c", cfg)
    assert start.returncode != 0
    want = diag_lines(cfg, check.stdout.decode() + check.stderr.decode())
    got = diag_lines(cfg, start.stderr.decode())
    assert want and got == want, (want, start.stderr)


def test_unknown_option_fails(run_remora):
    p = run_remora("--no-such-option")
    assert p.returncode != 0


def test_admin_health_and_ready(proxy):
    for path in ("/healthz", "/readyz"):
        r = http(proxy.admin_port, "GET", path)
        assert r.status == 200, r
        assert r.body.strip() == b"ok", r.body


def test_admin_metrics(proxy):
    http(proxy.port, "GET", "/echo")
    r = http(proxy.admin_port, "GET", "/metrics")
    assert r.status == 200
    text = r.body.decode()
    assert re.search(r"^remora_\w+", text, re.M), text[:2000]
    assert (r.header("content-type") or "").startswith("text/plain"), r.headers


def test_get_through_proxy(proxy, upstream):
    p = subprocess.run(["curl", "-sS", "--noproxy", "*", "--max-time", "5", "-i",
                        "http://127.0.0.1:%d/echo?x=1" % proxy.port],
                       capture_output=True, timeout=10)
    assert p.returncode == 0, p.stderr
    head, _, body = p.stdout.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    assert b'"path": "/echo?x=1"' in body, body
    assert b"x-upstream-conn" in head.lower()


def test_workers_setting_starts_more_threads(remora, upstream):
    """workers: N runs N event loops; which worker serves a conn is not visible from
    outside, but a two-worker remora runs more threads than a one-worker one, and serves
    many concurrent clients."""
    import threading
    one = remora(upstream, workers=1)
    two = remora(upstream, workers=2)
    assert two.threads() > one.threads(), (one.threads(), two.threads())
    results = []

    def get():
        try:
            results.append(http(two.port, "GET", "/delay?ms=100").status)
        except Exception as e:  # noqa: BLE001 - reported below
            results.append(repr(e))

    ts = [threading.Thread(target=get) for _ in range(32)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(10)
    assert results == [200] * 32, results


def test_ipv6_loopback_listener(remora, upstream):
    try:
        port = free_port("::1")
    except OSError:
        pytest.skip("no IPv6 loopback (::1) on this machine")
    cfg = default_config(port, free_port(), [upstream.addr])
    cfg["listeners"][0]["address"] = "[::1]:%d" % port
    p = remora(config=cfg)
    from helpers import HttpConn
    with HttpConn(port, host="::1") as c:
        c.request("GET", "/echo", host="[::1]")
        r = c.read_response()
    assert r.status == 200
    xff = [v for k, v in r.json()["headers"] if k.lower() == "x-forwarded-for"]
    assert xff == ["::1"], xff
    assert p.alive()
