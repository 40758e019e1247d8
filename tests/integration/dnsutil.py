# SPDX-License-Identifier: Apache-2.0
"""dnsutil: DNS pieces for the integration tests of remora's resolver (test_40_dns.py).

- `query(port, name, qtype)`: a raw DNS query over UDP or TCP to 127.0.0.1:port (stdlib only,
  no dig), parsed into rcode and A/AAAA answers with their TTLs.
- `Dnsmasq`: /usr/sbin/dnsmasq (Debian dnsmasq-base) on 127.0.0.1 and a free UDP+TCP port,
  answering only from a hosts file the test rewrites (`set_records`, which SIGHUPs it and waits
  for the re-read), authoritative for `.test` (unknown names there get NXDOMAIN, a known name
  without the asked type NODATA), TTL `--local-ttl`. `stop()` / `start()` simulate an outage
  on the same port; `queries(name, qtype)` counts the queries it logged.
- `SlowDns`: a tiny UDP DNS server (a thread) whose answers for chosen names are held back for
  a delay; it records when each query arrived and when it was answered.
- `BoundUpstream` / `start_bound_upstream`: upstream.py on a chosen address (127.0.0.2, ::1)
  and port, with stats() asked on that address.
- `LoadRun`: a bounded load of keep-alive HTTP/1.1 clients (threads) recording every
  response's time, status, x-upstream-name and x-remora-error.
- `DnsmasqFactory`, `SlowDnsFactory`, `BoundUpstreamsFactory`: context managers behind the
  fixtures of test_40_dns.py (they stop what they started on exit).

Every process started here is stopped by its PID (SIGTERM, SIGKILL after 3 s)."""

import heapq
import json
import os
import random
import re
import signal
import socket
import struct
import subprocess
import threading
import time
from pathlib import Path

import pytest

from helpers import HttpConn, Truncated, read_ready_line, stop_process

HERE = Path(__file__).resolve().parent
DNSMASQ = "/usr/sbin/dnsmasq"
PYTHON = "/usr/bin/python3"
UPSTREAM_PY = HERE / "upstream.py"

QTYPES = {"A": 1, "AAAA": 28}
RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}


_stop_proc = stop_process


# ---- DNS wire format ------------------------------------------------------------------------

def encode_name(name):
    out = bytearray()
    for label in name.rstrip(".").split("."):
        b = label.encode("ascii")
        if not 0 < len(b) < 64:
            raise ValueError("bad label in %r" % name)
        out += bytes([len(b)]) + b
    return bytes(out + b"\0")


def build_query(name, qtype="A", qid=None):
    qid = random.randrange(65536) if qid is None else qid
    head = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)  # RD
    return head + encode_name(name) + struct.pack(">HH", QTYPES[qtype], 1)


def _read_name(msg, off):
    """(name, offset after it) at off, following compression pointers."""
    labels = []
    end = None
    hops = 0
    while True:
        n = msg[off]
        if n & 0xC0 == 0xC0:
            if end is None:
                end = off + 2
            off = ((n & 0x3F) << 8) | msg[off + 1]
            hops += 1
            if hops > 32:
                raise ValueError("compression loop")
            continue
        off += 1
        if n == 0:
            break
        labels.append(msg[off:off + n].decode("ascii", "replace"))
        off += n
    return ".".join(labels), (end if end is not None else off)


class DnsAnswer:
    def __init__(self, qid, flags, rcode, qname, qtype, answers):
        self.qid = qid
        self.flags = flags
        self.rcode = rcode          # "NOERROR", "NXDOMAIN", ...
        self.qname = qname
        self.qtype = qtype          # 1 or 28
        self.answers = answers      # [(type "A"/"AAAA", address, ttl)]

    @property
    def addrs(self):
        return sorted(a for _, a, _ in self.answers)

    @property
    def ttls(self):
        return sorted({t for _, _, t in self.answers})

    def __repr__(self):
        return "<DnsAnswer %s %s %r>" % (self.qname, self.rcode, self.answers)


def parse_message(msg):
    """A DNS message -> DnsAnswer (question and A/AAAA answers only)."""
    qid, flags, qd, an, _, _ = struct.unpack(">HHHHHH", msg[:12])
    off = 12
    qname, qtype = "", 0
    for _ in range(qd):
        qname, off = _read_name(msg, off)
        qtype = struct.unpack(">H", msg[off:off + 2])[0]
        off += 4
    answers = []
    for _ in range(an):
        _, off = _read_name(msg, off)
        rtype, _, ttl, rdlen = struct.unpack(">HHIH", msg[off:off + 10])
        off += 10
        rdata = msg[off:off + rdlen]
        off += rdlen
        if rtype == 1 and rdlen == 4:
            answers.append(("A", socket.inet_ntop(socket.AF_INET, rdata), ttl))
        elif rtype == 28 and rdlen == 16:
            answers.append(("AAAA", socket.inet_ntop(socket.AF_INET6, rdata), ttl))
    return DnsAnswer(qid, flags, RCODES.get(flags & 0xF, str(flags & 0xF)), qname, qtype,
                     answers)


def query(port, name, qtype="A", tcp=False, host="127.0.0.1", timeout=2.0):
    """One query to host:port; returns a DnsAnswer. Raises socket.timeout/OSError."""
    q = build_query(name, qtype)
    qid = struct.unpack(">H", q[:2])[0]
    if tcp:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.sendall(struct.pack(">H", len(q)) + q)
            buf = b""
            while len(buf) < 2 or len(buf) < 2 + struct.unpack(">H", buf[:2])[0]:
                d = s.recv(65536)
                if not d:
                    raise OSError("EOF from the DNS server over TCP")
                buf += d
            msg = buf[2:2 + struct.unpack(">H", buf[:2])[0]]
    else:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(timeout)
            s.connect((host, port))
            s.send(q)
            end = time.monotonic() + timeout
            while True:
                s.settimeout(max(0.01, end - time.monotonic()))
                msg = s.recv(65536)
                if msg[:2] == q[:2]:
                    break
    a = parse_message(msg)
    assert a.qid == qid
    return a


def free_udp_tcp_port(host="127.0.0.1"):
    """A port free for both UDP and TCP on host (as far as we can tell right now)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind((host, 0))
            port = u.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                try:
                    t.bind((host, port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free UDP+TCP port")


# ---- dnsmasq --------------------------------------------------------------------------------

class Dnsmasq:
    """dnsmasq answering from a hosts file only. records: [(address, name), ...]."""

    def __init__(self, workdir, records=(), ttl=1, domain="test", log_queries=True):
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        tag = "%d" % time.monotonic_ns()
        self.hosts_path = self.dir / ("dnsmasq-%s.hosts" % tag)
        self.log_path = self.dir / ("dnsmasq-%s.log" % tag)
        self.out_path = self.dir / ("dnsmasq-%s.out" % tag)
        self.ttl = ttl
        self.domain = domain
        self.log_queries = log_queries
        self.port = None
        self.proc = None
        self.records = []
        self._write_hosts(records)

    @property
    def resolver(self):
        """The `dns.resolvers` entry for remora's config."""
        return "127.0.0.1:%d" % self.port

    def _write_hosts(self, records):
        self.records = [(a, n) for a, n in records]
        tmp = self.hosts_path.with_suffix(".tmp")
        tmp.write_text("".join("%s %s\n" % (a, n) for a, n in self.records))
        os.replace(tmp, self.hosts_path)

    def log(self):
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def _reads(self):
        """How many times dnsmasq has (re)read the hosts file."""
        return self.log().count("read %s - " % self.hosts_path)

    def start(self, timeout=5.0):
        """Starts dnsmasq (on the same port as before after a stop()) and waits until it
        answers over UDP and TCP."""
        assert self.proc is None or self.proc.poll() is not None, "dnsmasq is running"
        keep_port = self.port is not None
        for attempt in range(5):
            if not keep_port:
                self.port = free_udp_tcp_port()
            reads = self._reads()
            cmd = [DNSMASQ, "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv",
                   "--no-hosts", "--addn-hosts=%s" % self.hosts_path,
                   "--local-ttl=%d" % self.ttl, "--user=root", "--pid-file=",
                   "--listen-address=127.0.0.1", "--bind-interfaces",
                   "--port=%d" % self.port, "--local=/%s/" % self.domain,
                   "--log-facility=%s" % self.log_path]
            if self.log_queries:
                cmd.append("--log-queries")
            with open(self.out_path, "ab") as out:
                self.proc = subprocess.Popen(cmd, stdout=out, stderr=out,
                                             stdin=subprocess.DEVNULL)
            end = time.monotonic() + timeout
            while time.monotonic() < end and self.proc.poll() is None:
                if self._reads() > reads:
                    break
                time.sleep(0.02)
            if self.proc.poll() is None and self._reads() > reads:
                # listening as soon as the hosts file is read; prove both transports
                try:
                    query(self.port, "probe-ready." + self.domain, "A", timeout=1.0)
                    query(self.port, "probe-ready." + self.domain, "A", tcp=True, timeout=1.0)
                    return self
                except OSError:
                    pass
            _stop_proc(self.proc)
            if keep_port and attempt >= 2:
                break
        raise RuntimeError("dnsmasq did not start on 127.0.0.1:%s: %s\n%s" % (
            self.port, self.out_path.read_text(errors="replace"), self.log()[-3000:]))

    def stop(self):
        """Stops dnsmasq by PID (an outage: the port then refuses)."""
        if self.proc is not None:
            _stop_proc(self.proc)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def set_records(self, records, timeout=3.0):
        """Rewrites the hosts file and SIGHUPs dnsmasq; returns once it re-read the file."""
        self._write_hosts(records)
        if not self.alive():
            return
        reads = self._reads()
        os.kill(self.proc.pid, signal.SIGHUP)
        end = time.monotonic() + timeout
        while self._reads() <= reads:
            if time.monotonic() >= end:
                raise RuntimeError("dnsmasq did not re-read %s after SIGHUP" % self.hosts_path)
            time.sleep(0.01)

    def queries(self, name=None, qtype=None):
        """How many queries dnsmasq logged (for name / qtype when given); needs log_queries.
        The fixture's own readiness probes (probe-ready.*) are not counted."""
        n = 0
        for m in re.finditer(r"query\[(\w+)\] (\S+) from ", self.log()):
            if m.group(2).startswith("probe-ready."):
                continue
            if qtype is not None and m.group(1) != qtype:
                continue
            if name is not None and m.group(2).lower() != name.lower():
                continue
            n += 1
        return n

    def query(self, name, qtype="A", tcp=False):
        return query(self.port, name, qtype, tcp=tcp)


class DnsmasqFactory:
    """make(records=[(addr, name), ...], ttl=1) -> a started Dnsmasq; close() stops them all
    (backs test_40's `dnsmasq` fixture)."""

    def __init__(self, workdir):
        self.workdir = workdir
        self.started = []

    def __call__(self, records=(), ttl=1, log_queries=True):
        d = Dnsmasq(self.workdir, records, ttl=ttl, log_queries=log_queries)
        self.started.append(d)
        return d.start()

    def close(self):
        for d in self.started:
            d.stop()

    def __enter__(self):
        if not os.access(DNSMASQ, os.X_OK):
            pytest.skip("%s not installed (Debian package dnsmasq-base)" % DNSMASQ)
        return self

    def __exit__(self, *a):
        self.close()


# ---- a DNS server with held-back answers ------------------------------------------------------

class SlowDns:
    """UDP DNS server on 127.0.0.1 in a thread. records: {name: [address, ...]} (IPv4 or IPv6);
    delays: {name: seconds} to hold answers for that name back. Unknown names: NXDOMAIN at
    once. self.log: [(name, qtype "A"/"AAAA", t_received, t_answered)] (time.monotonic())."""

    def __init__(self, records, delays=None, ttl=1):
        self.records = {k.lower(): list(v) for k, v in records.items()}
        self.delays = {k.lower(): v for k, v in (delays or {}).items()}
        self.ttl = ttl
        self.log = []
        self._lock = threading.Lock()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    @property
    def resolver(self):
        return "127.0.0.1:%d" % self.port

    def start(self):
        self._t.start()
        return self

    def stop(self):
        self._stop.set()
        self._t.join(3)
        self.sock.close()

    def _answer(self, msg):
        qid, flags = struct.unpack(">HH", msg[:4])
        name, off = _read_name(msg, 12)
        qtype, qclass = struct.unpack(">HH", msg[off:off + 4])
        question = msg[12:off + 4]
        name = name.lower()
        tname = {1: "A", 28: "AAAA"}.get(qtype, str(qtype))
        rrs = []
        if name in self.records:
            rcode = 0
            for addr in self.records[name]:
                fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
                want = 28 if fam == socket.AF_INET6 else 1
                if qtype == want:
                    rd = socket.inet_pton(fam, addr)
                    rrs.append(struct.pack(">HHHIH", 0xC00C, qtype, 1, self.ttl, len(rd)) + rd)
        else:
            rcode = 3
        rflags = 0x8000 | 0x0400 | (flags & 0x0100) | 0x0080 | rcode  # QR AA RD RA
        resp = struct.pack(">HHHHHH", qid, rflags, 1, len(rrs), 0, 0) + question + b"".join(rrs)
        return name, tname, resp

    def _run(self):
        pending = []  # heap of (due, seq, resp, addr, log index)
        seq = 0
        while not self._stop.is_set():
            now = time.monotonic()
            while pending and pending[0][0] <= now:
                _, _, resp, addr, idx = heapq.heappop(pending)
                try:
                    self.sock.sendto(resp, addr)
                except OSError:
                    pass
                with self._lock:
                    n, t, r, _ = self.log[idx]
                    self.log[idx] = (n, t, r, time.monotonic())
            wait = 0.05 if not pending else max(0.0, min(0.05, pending[0][0] - now))
            self.sock.settimeout(wait if wait > 0 else 0.001)
            try:
                msg, addr = self.sock.recvfrom(4096)
            except (socket.timeout, BlockingIOError):
                continue
            except OSError:
                return
            t = time.monotonic()
            try:
                name, tname, resp = self._answer(msg)
            except (ValueError, IndexError, struct.error):
                continue
            with self._lock:
                self.log.append((name, tname, t, None))
                idx = len(self.log) - 1
            heapq.heappush(pending, (t + self.delays.get(name, 0.0), seq, resp, addr, idx))
            seq += 1

    def queries(self, name=None):
        with self._lock:
            return [e for e in self.log if name is None or e[0] == name.lower()]


class SlowDnsFactory:
    """make(records={name: [addr]}, delays={name: s}, ttl=1) -> a started SlowDns."""

    def __init__(self):
        self.started = []

    def __call__(self, records, delays=None, ttl=1):
        s = SlowDns(records, delays, ttl).start()
        self.started.append(s)
        return s

    def __enter__(self):
        return self

    def __exit__(self, *a):
        for s in self.started:
            s.stop()


# ---- upstream.py on a chosen address ----------------------------------------------------------

class BoundUpstream:
    def __init__(self, proc, host, port, name, log_path):
        self.proc = proc
        self.host = host
        self.port = port
        self.name = name
        self.log_path = log_path
        self.stats_queries = 0

    @property
    def addr(self):
        return ("[%s]:%d" if ":" in self.host else "%s:%d") % (self.host, self.port)

    def get(self, path, timeout=2.0):
        with HttpConn(self.port, host=self.host, timeout=timeout) as c:
            c.request("GET", path)
            return c.read_response()

    def stats(self):
        """The app's /_stats (asked on its own address; that query counts as a request)."""
        self.stats_queries += 1
        r = self.get("/_stats")
        assert r.status == 200, r
        return json.loads(r.body)

    def app_requests(self):
        """Requests the app has seen, not counting this helper's own /_stats queries."""
        return self.stats()["requests"] - self.stats_queries


def start_bound_upstream(workdir, host, port, name, timeout=10.0):
    """upstream.py --host host --port port --name name; returns a BoundUpstream, or None when
    it did not come up (e.g. the port is taken on that address)."""
    log_path = Path(workdir) / ("upstream-%s-%d.log" % (name, time.monotonic_ns()))
    with open(log_path, "wb") as errf:
        proc = subprocess.Popen([PYTHON, str(UPSTREAM_PY), "--host", host, "--port", str(port),
                                 "--name", name], stdout=subprocess.PIPE, stderr=errf,
                                stdin=subprocess.DEVNULL)
    line = read_ready_line(proc, timeout)
    if not line.startswith(b"READY "):
        _stop_proc(proc)
        proc.stdout.close()
        return None
    return BoundUpstream(proc, host, int(line.split()[1]), name, log_path)


class BoundUpstreamsFactory:
    """make([(host, name), ...]) -> [BoundUpstream], all on one port (tries a few ports until
    every host can bind it); stops them all by PID on exit."""

    def __init__(self, workdir):
        self.workdir = workdir
        self.started = []

    def __call__(self, specs):
        fam = socket.AF_INET6 if ":" in specs[0][0] else socket.AF_INET
        for _ in range(8):
            with socket.socket(fam, socket.SOCK_STREAM) as s:
                s.bind((specs[0][0], 0))
                port = s.getsockname()[1]
            got = []
            for host, name in specs:
                u = start_bound_upstream(self.workdir, host, port, name)
                if u is None:
                    break
                got.append(u)
            self.started.extend(got)
            if len(got) == len(specs):
                return got
            for u in got:
                _stop_proc(u.proc)
        pytest.fail("could not start upstreams %r on one common port" % (specs,))

    def __enter__(self):
        return self

    def __exit__(self, *a):
        for u in self.started:
            _stop_proc(u.proc)
            u.proc.stdout.close()


# ---- bounded keep-alive load ----------------------------------------------------------------

class LoadRun:
    """conns threads, each one keep-alive connection to 127.0.0.1:port sending GET target in a
    loop for `seconds` (and at most max_requests each). A connection that fails is counted and
    replaced. self.results: [(t_start, t_done, status, x-upstream-name, x-remora-error)];
    self.errors: [(t, repr(exception))]."""

    def __init__(self, port, target="/echo", conns=8, seconds=4.0, max_requests=20000,
                 timeout=5.0):
        self.port = port
        self.target = target
        self.conns = conns
        self.seconds = seconds
        self.max_requests = max_requests
        self.timeout = timeout
        self.results = []
        self.errors = []
        self._lock = threading.Lock()
        self._threads = []
        self.t0 = None

    def _worker(self, end):
        conn = None
        n = 0
        try:
            while time.monotonic() < end and n < self.max_requests:
                try:
                    if conn is None:
                        conn = HttpConn(self.port, timeout=self.timeout)
                    t1 = time.monotonic()
                    conn.request("GET", self.target)
                    r = conn.read_response()
                    t2 = time.monotonic()
                    n += 1
                    rec = (t1, t2, r.status, r.header("x-upstream-name"),
                           r.header("x-remora-error"))
                    with self._lock:
                        self.results.append(rec)
                    if not r.complete:
                        raise Truncated("incomplete body %r" % r)
                    conn_hdr = (r.header("connection") or "").lower()
                    if "close" in conn_hdr:
                        conn.close()
                        conn = None
                except (OSError, ValueError, Truncated) as e:
                    with self._lock:
                        self.errors.append((time.monotonic(), repr(e)))
                    if conn is not None:
                        conn.close()
                    conn = None
        finally:
            if conn is not None:
                conn.close()

    def start(self):
        self.t0 = time.monotonic()
        end = self.t0 + self.seconds
        for _ in range(self.conns):
            t = threading.Thread(target=self._worker, args=(end,), daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def join(self):
        for t in self._threads:
            t.join(self.seconds + self.timeout + 5)
        assert not any(t.is_alive() for t in self._threads), "load threads did not finish"
        return self

    def run(self):
        return self.start().join()

    def bad(self):
        """Responses that are not 2xx."""
        return [r for r in self.results if not 200 <= r[2] < 300]

    def summary(self):
        """A short text for assertion messages: counts by status/name and the first errors."""
        by = {}
        for t1, _, st, name, err in self.results:
            k = "%s %s%s" % (st, name, (" x-remora-error=" + err) if err else "")
            by[k] = by.get(k, 0) + 1
        return "%d responses %r, %d errors %r" % (len(self.results), by, len(self.errors),
                                                   [e for _, e in self.errors[:3]])

    def names(self, since=None, until=None):
        """{x-upstream-name: count} of the responses started in [since, until)."""
        out = {}
        for t1, _, _, name, _ in self.results:
            if since is not None and t1 < since:
                continue
            if until is not None and t1 >= until:
                continue
            out[name] = out.get(name, 0) + 1
        return out
