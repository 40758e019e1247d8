# SPDX-License-Identifier: Apache-2.0
"""16: the HTTP/1.1 request smuggling and framing battery (issue 17, "Bad-input battery"), over
raw sockets, against one remora in front of a raw recording app (Recorder: it keeps the exact
bytes of every request it receives, parses them strictly and answers each with a 200).

Each case in CASES is sent on a fresh connection followed, in the same write, by a plain
`GET /battery-follow` (the request a desynchronised proxy would mis-frame), and asserts: the
exact status and `x-remora-error` (absent on the app's own answers); what the app received (no
request at all, or exactly the expected well-formed requests, or for a body refused mid-way the
forwarded head cut before its end, never a whole request); and that the connection closes after
a refusal and stays open and in sync after a well-formed request (the follow-up answered by the
app, and nothing else). Covered: CL.TE and TE.CL, TE.TE obfuscations, Content-Length lists,
signs and overflow, chunk-size overflow and extensions, bare LF and bare CR, NUL and controls,
obs-fold, absolute-form and authority-form targets (CONNECT), methods, HTTP/0.9 and HTTP/2.0
request lines, over-long lines, too many fields, Expect and Upgrade variants.

Decisions pinned here (proxy/DESIGN.md "Header rules"): an expectation other than 100-continue
goes on to the app, which may answer 417 itself (as HAProxy, Envoy and nginx do; only Apache
answers 417 itself); a WebSocket offer's Sec-WebSocket-Key and -Version are the app's to
check (RFC 6455 4.2.1), remora tunnels only after the app's 101; methods llhttp does not know
(lower case included) are 400. Several cases repeat a single assertion of test_12 or test_14
(marked "also test_NN") so that this module alone is the complete battery.

For replay against one long-lived remora (fd and RSS baseline after the whole battery):
`remora_options(recorder.addr)` is the configuration the cases assume, and
`run_case(port, recorder, case)` runs one of CASES."""

import os
import re
import subprocess
import threading
import time

import pytest

from conftest import BIN, CRASH_SIGNALS, wait_ready
from helpers import (HttpConn, RawApp, default_config, free_port, recv_head, stop_process,
                     to_yaml)

MAX_HEADER_BYTES = 8192
MAX_HEADERS = 50


def remora_options(app_addr):
    """The remora config the cases assume (keyword arguments of the remora fixture and of
    helpers.default_config): one app; CONNECT allowed toward it on its own route; 8 KiB heads
    and 50 fields, so that the over-long cases stay small."""
    return {
        "endpoints": [app_addr],
        "limits": {"max_header_bytes": "%dB" % MAX_HEADER_BYTES, "max_headers": MAX_HEADERS},
        "routes": [
            {"name": "tunnel", "match": {"methods": ["CONNECT"]}, "upstream": "app",
             "connect": True},
            {"name": "default", "match": {"path_prefix": "/"}, "upstream": "app",
             "timeout": "15s"},
        ],
    }


# ---- the recording app ----------------------------------------------------------------------

_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_REQUEST_LINE = re.compile(rb"(" + _TOKEN + rb") ([\x21-\x7e\x80-\xff]+) HTTP/1\.1")
_FIELD = re.compile(rb"(" + _TOKEN + rb"):[ \t]*(.*?)[ \t]*")
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")


class Malformed(Exception):
    pass


class _Reader:
    """Bytes of one app connection: lines must end in CRLF, no CR elsewhere."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = bytearray()
        self.consumed = bytearray()

    def _fill(self):
        d = self.sock.recv(65536)
        if not d:
            raise EOFError
        self.buf += d

    def line(self):
        while True:
            i = self.buf.find(b"\n")
            if i >= 0:
                ln = bytes(self.buf[:i + 1])
                del self.buf[:i + 1]
                self.consumed += ln
                if not ln.endswith(b"\r\n") or b"\r" in ln[:-2]:
                    raise Malformed("bad line ending %r" % ln[:80])
                return ln[:-2]
            if len(self.buf) > (1 << 20):
                raise Malformed("line over 1 MiB")
            self._fill()

    def take(self, n):
        while len(self.buf) < n:
            self._fill()
        d = bytes(self.buf[:n])
        del self.buf[:n]
        self.consumed += d
        return d

    def fields(self):
        out = []
        while True:
            ln = self.line()
            if not ln:
                return out
            m = _FIELD.fullmatch(ln)
            if not m or _BAD_VALUE.search(m.group(2)):
                raise Malformed("bad field line %r" % ln[:80])
            out.append((m.group(1).decode("latin-1"), m.group(2).decode("latin-1")))


def parse_request(rd):
    """One request, strictly (RFC 9112): a dict of method, target, headers [(name, value)],
    body, chunked, trailers. Raises Malformed, or EOFError before its end."""
    ln = rd.line()
    m = _REQUEST_LINE.fullmatch(ln)
    if not m:
        raise Malformed("bad request line %r" % ln[:80])
    hs = rd.fields()
    low = [(k.lower(), v) for k, v in hs]
    te = [v for k, v in low if k == "transfer-encoding"]
    cl = [v for k, v in low if k == "content-length"]
    if len([v for k, v in low if k == "host"]) != 1:
        raise Malformed("not exactly one Host")
    if te and cl:
        raise Malformed("Transfer-Encoding and Content-Length")
    body, trailers = b"", []
    if te:
        if te != ["chunked"]:
            raise Malformed("Transfer-Encoding %r" % te)
        while True:
            size = rd.line()
            if not re.fullmatch(rb"[0-9a-fA-F]{1,16}", size):
                raise Malformed("chunk-size line %r" % size[:80])
            n = int(size, 16)
            if n == 0:
                trailers = rd.fields()
                break
            body += rd.take(n)
            if rd.take(2) != b"\r\n":
                raise Malformed("no CRLF after chunk data")
    elif cl:
        if len(cl) != 1 or not re.fullmatch(r"[0-9]{1,18}", cl[0]):
            raise Malformed("Content-Length %r" % cl)
        body = rd.take(int(cl[0]))
    return {"method": m.group(1).decode(), "target": m.group(2).decode("latin-1"),
            "headers": hs, "body": body, "chunked": bool(te), "trailers": trailers}


class Recorder:
    """The app: a helpers.RawApp (thread per connection, 127.0.0.1) recording, in .requests (in
    arrival order), every request strictly parsed with its raw bytes, or {"malformed": why},
    or {"partial": True} for a request its connection ended inside. Answers each request with
    `200`, `x-rec: <index>` and the body `recorded`. Use as a context manager."""

    def __init__(self):
        self.requests = []
        self.lock = threading.Lock()
        self.raw = RawApp(lambda c, _app: self._serve(c))
        self.port = self.raw.port
        self.addr = self.raw.addr

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.raw.__exit__(*a)

    def _add(self, entry):
        with self.lock:
            self.requests.append(entry)
            return len(self.requests)

    def _serve(self, c):
        c.settimeout(60)
        rd = _Reader(c)
        try:
            while True:
                start = len(rd.consumed)
                try:
                    req = parse_request(rd)
                except EOFError:
                    if rd.buf or len(rd.consumed) > start:
                        self._add({"partial": True, "raw": bytes(rd.consumed[start:] + rd.buf)})
                    return
                except Malformed as e:
                    self._add({"malformed": str(e), "raw": bytes(rd.consumed[start:] + rd.buf)})
                    return
                req["raw"] = bytes(rd.consumed[start:])
                idx = self._add(req)
                body = b"" if req["method"] == "HEAD" else b"recorded"
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\nx-rec: %d\r\n\r\n" % idx
                          + body)
        except OSError as e:
            self._add({"malformed": "app connection error %r" % e, "raw": b""})

    def since(self, n):
        with self.lock:
            return list(self.requests[n:])


# ---- cases ----------------------------------------------------------------------------------

FOLLOW = b"GET /battery-follow HTTP/1.1\r\nHost: a\r\n\r\n"
POST = b"POST /b HTTP/1.1\r\nHost: a\r\n"
CHUNKED = b"Transfer-Encoding: chunked\r\n\r\n"
ABC = b"3\r\nabc\r\n0\r\n\r\n"
WS = (b"Connection: Upgrade\r\nUpgrade: websocket\r\n"
      b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n")
FWD_ADDED = {"x-forwarded-for", "x-forwarded-proto", "x-request-id"}


def app(method="GET", target="/", body=b"", host="a", has=(), lacks=(), trailers=None):
    """What the app must receive of a forwarded request: method, target, body, Host; has:
    (name, value) fields present as such; lacks: names absent; trailers: the exact trailer
    fields (None: not checked)."""
    return {"method": method, "target": target, "body": body, "host": host, "has": list(has),
            "lacks": list(lacks), "trailers": trailers}


def bad(cid, raw, status, error, partial=False, note=""):
    """Refused: status with x-remora-error error, the conn closed, the app got no request (with
    partial, for a body refused mid-way: nothing, or the forwarded head cut before its end,
    depending on whether the upconn had taken the head already)."""
    return {"id": cid, "raw": raw, "status": status, "error": error, "close": True,
            "apps": [], "partial": partial, "note": note}


def ok(cid, raw, *apps, note="", pipeline=True, cont=None, tunnel=None, close=False):
    """Forwarded: the app's 200, the app got exactly apps (then the follow-up), the conn stays
    open (close: it closes after the answer, HTTP/1.0). pipeline: the follow-up goes in the same
    write (else after the answer); cont: body bytes sent after a 100 Continue; tunnel: bytes
    sent after a CONNECT's 200, answered by the app through the tunnel."""
    return {"id": cid, "raw": raw, "status": 200, "error": None, "close": close,
            "apps": list(apps), "partial": False, "note": note, "pipeline": pipeline,
            "cont": cont, "tunnel": tunnel}


def _fields(n, fmt=b"X-%d: v\r\n"):
    return b"".join(fmt % i if b"%d" in fmt else fmt for i in range(n))


CASES = [
    # -- CL.TE / TE.CL: both framings in one request are refused whatever their order
    bad("cl_te", POST + b"Content-Length: 3\r\n" + CHUNKED + ABC, 400, "bad_framing",
        note="also test_12 cl_and_te"),
    bad("te_cl", POST + b"Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n" + ABC,
        400, "bad_framing"),
    bad("cl_te_smuggle", POST + b"Content-Length: 6\r\n" + CHUNKED
        + b"0\r\n\r\nGPOST / HTTP/1.1\r\nHost: a\r\n\r\n", 400, "bad_framing"),
    bad("te_cl_smuggle", POST + b"Content-Length: 4\r\n" + CHUNKED
        + b"2c\r\nGPOST /smuggled HTTP/1.1\r\nHost: a\r\nX: \r\n0\r\n\r\n", 400, "bad_framing"),
    bad("cl0_te", b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n" + CHUNKED + b"0\r\n\r\n",
        400, "bad_framing", note="also test_12 cl_and_te_zero"),
    ok("te_underscore_cl", POST + b"Transfer_Encoding: chunked\r\nContent-Length: 3\r\n\r\nabc",
       app("POST", "/b", b"abc", has=[("Content-Length", "3")], lacks=["transfer_encoding"]),
       note="headers_with_underscores: drop (test_13)"),
    # -- TE.TE: obfuscated Transfer-Encoding is never read as chunked by one side only
    bad("te_xchunked", POST + b"Transfer-Encoding: xchunked\r\n\r\n" + ABC, 400, "bad_framing"),
    bad("te_space_before_colon", POST + b"Transfer-Encoding : chunked\r\n\r\n" + ABC,
        400, "bad_request"),
    bad("te_tab_before_colon", POST + b"Transfer-Encoding\t: chunked\r\n\r\n" + ABC,
        400, "bad_request"),
    bad("te_duplicate_lines", POST + b"Transfer-Encoding: chunked\r\n" + CHUNKED + ABC,
        400, "bad_framing"),
    bad("te_chunked_twice", POST + b"Transfer-Encoding: chunked, chunked\r\n\r\n" + ABC,
        400, "bad_framing"),
    bad("te_chunked_identity", POST + b"Transfer-Encoding: chunked, identity\r\n\r\n" + ABC,
        400, "bad_framing", note="also test_14"),
    bad("te_chunked_then_identity_line", POST + b"Transfer-Encoding: chunked\r\n"
        b"Transfer-Encoding: identity\r\n\r\n" + ABC, 400, "bad_framing", note="also test_14"),
    bad("te_chunked_then_x_line", POST + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: x"
        b"\r\n\r\n" + ABC, 400, "bad_framing"),
    bad("te_empty_then_chunked", POST + b"Transfer-Encoding:\r\n" + CHUNKED + ABC,
        400, "bad_framing"),
    bad("te_chunked_then_empty", POST + b"Transfer-Encoding: chunked\r\nTransfer-Encoding:"
        b"\r\n\r\n" + ABC, 400, "bad_framing"),
    bad("te_identity_chunked", POST + b"Transfer-Encoding: identity, chunked\r\n\r\n" + ABC,
        501, "unsupported_transfer_encoding"),
    bad("te_gzip_chunked", POST + b"Transfer-Encoding: gzip, chunked\r\n\r\n" + ABC,
        501, "unsupported_transfer_encoding", note="also test_12, test_14"),
    bad("te_gzip", POST + b"Transfer-Encoding: gzip\r\n\r\n", 400, "bad_framing",
        note="also test_12, test_14"),
    bad("te_vertical_tab", POST + b"Transfer-Encoding:\x0bchunked\r\n\r\n" + ABC,
        400, "bad_request"),
    bad("te_form_feed", POST + b"Transfer-Encoding:\x0cchunked\r\n\r\n" + ABC,
        400, "bad_request"),
    bad("te_trailing_vertical_tab", POST + b"Transfer-Encoding: chunked\x0b\r\n\r\n" + ABC,
        400, "bad_request"),
    bad("te_nul", POST + b"Transfer-Encoding: \x00chunked\r\n\r\n" + ABC, 400, "bad_request"),
    bad("te_quoted", POST + b"Transfer-Encoding: \"chunked\"\r\n\r\n" + ABC, 400, "bad_framing"),
    bad("te_parameter", POST + b"Transfer-Encoding: chunked;q=1\r\n\r\n" + ABC,
        400, "bad_framing"),
    bad("te_trailing_comma", POST + b"Transfer-Encoding: chunked,\r\n\r\n" + ABC,
        400, "bad_framing", note="llhttp 8 refuses it; RFC 9110 5.6.1 would allow it"),
    bad("te_trailing_tab", POST + b"Transfer-Encoding: chunked\t\r\n\r\n" + ABC,
        400, "bad_framing", note="llhttp 8 refuses HTAB as trailing OWS here: safe"),
    ok("te_leading_comma", POST + b"Transfer-Encoding: , chunked\r\n\r\n" + ABC,
       app("POST", "/b", b"abc", has=[("Transfer-Encoding", "chunked")])),
    ok("te_upper_value", POST + b"Transfer-Encoding: CHUNKED\r\n\r\n" + ABC,
       app("POST", "/b", b"abc", has=[("Transfer-Encoding", "chunked")])),
    ok("te_upper_name", POST + b"TRANSFER-ENCODING: Chunked\r\n\r\n" + ABC,
       app("POST", "/b", b"abc", has=[("Transfer-Encoding", "chunked")])),
    ok("te_lower_name", POST + b"transfer-encoding: chunked \r\n\r\n" + ABC,
       app("POST", "/b", b"abc", has=[("Transfer-Encoding", "chunked")])),
    bad("te_obs_fold", POST + b"Transfer-Encoding: x\r\n chunked\r\n\r\n" + ABC,
        400, "bad_framing"),
    bad("te_obs_fold_empty_first_line", POST + b"Transfer-Encoding:\r\n chunked\r\n\r\n" + ABC,
        400, "bad_framing", note="fixed: llhttp 8 unfolded it into chunked"),
    bad("te_leading_whitespace_line", b"POST /b HTTP/1.1\r\n Transfer-Encoding: chunked\r\n"
        b"Host: a\r\n\r\n" + ABC, 400, "bad_framing"),
    bad("te_after_bare_cr", POST + b"X-A:\rXTransfer-Encoding: chunked\r\n\r\n" + ABC,
        400, "bad_request"),
    # TE (and CL) in the trailer section: never framing; TE refused, CL and Host dropped
    bad("te_in_trailers", POST + CHUNKED + b"3\r\nabc\r\n0\r\nTransfer-Encoding: chunked\r\n\r\n",
        400, "bad_framing", partial=True),
    ok("cl_in_trailers", POST + CHUNKED + b"3\r\nabc\r\n0\r\nContent-Length: 9\r\nX-T: 1\r\n\r\n",
       app("POST", "/b", b"abc", trailers=[("X-T", "1")])),
    ok("host_in_trailers", POST + CHUNKED + b"3\r\nabc\r\n0\r\nHost: b\r\n\r\n",
       app("POST", "/b", b"abc", trailers=[])),
    # -- Content-Length lists, signs, overflow
    bad("cl_two_lines_differ", POST + b"Content-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        400, "bad_framing", note="also test_12 two_content_lengths"),
    bad("cl_two_lines_equal", POST + b"Content-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
        400, "bad_framing", note="RFC 9112 6.3 allows refusing"),
    bad("cl_list_equal", POST + b"Content-Length: 3, 3\r\n\r\nabc", 400, "bad_framing"),
    bad("cl_list_differ", POST + b"Content-Length: 3, 4\r\n\r\nabcd", 400, "bad_framing"),
    bad("cl_plus", POST + b"Content-Length: +3\r\n\r\nabc", 400, "bad_framing",
        note="also test_12 content_length_plus"),
    bad("cl_minus", POST + b"Content-Length: -3\r\n\r\nabc", 400, "bad_framing"),
    bad("cl_2_63", POST + b"Content-Length: 9223372036854775808\r\n\r\nabc",
        400, "bad_framing"),
    bad("cl_2_64", POST + b"Content-Length: 18446744073709551616\r\n\r\nabc",
        400, "bad_framing"),
    bad("cl_2_64_minus_1", POST + b"Content-Length: 18446744073709551615\r\n\r\nabc",
        400, "bad_framing"),
    bad("cl_21_digits", POST + b"Content-Length: 000000000000000000003\r\n\r\nabc",
        400, "bad_framing"),
    ok("cl_18_digits", POST + b"Content-Length: 000000000000000003\r\n\r\nabc",
       app("POST", "/b", b"abc", has=[("Content-Length", "3")])),
    bad("cl_empty", POST + b"Content-Length: \r\n\r\nabc", 400, "bad_framing"),
    bad("cl_inner_space", POST + b"Content-Length: 1 2\r\n\r\nabc", 400, "bad_framing"),
    bad("cl_hex", POST + b"Content-Length: 0x3\r\n\r\nabc", 400, "bad_framing"),
    bad("cl_letters", POST + b"Content-Length: abc\r\n\r\nabc", 400, "bad_framing",
        note="also test_12 test_bad_content_length_value"),
    ok("cl_ows", POST + b"Content-Length: \t3 \r\n\r\nabc",
       app("POST", "/b", b"abc", has=[("Content-Length", "3")])),
    bad("cl_obs_fold_empty_first_line", POST + b"Content-Length:\r\n 3\r\n\r\nabc",
        400, "bad_framing", note="fixed: llhttp 8 unfolded it into 3"),
    # -- chunk sizes and extensions
    bad("chunk_size_over_2_64", POST + CHUNKED + b"10000000000000000\r\nabc\r\n0\r\n\r\n",
        400, "bad_framing", partial=True),
    bad("chunk_size_19_hex", POST + CHUNKED + b"fffffffffffffffffff\r\nabc\r\n0\r\n\r\n",
        400, "bad_framing", partial=True, note="also test_12 chunk_size_overflow"),
    ok("chunk_size_leading_zeros", POST + CHUNKED + b"00000000000000000000003\r\nabc\r\n"
       b"0\r\n\r\n", app("POST", "/b", b"abc")),
    bad("chunk_size_minus", POST + CHUNKED + b"-3\r\nabc\r\n0\r\n\r\n", 400, "bad_framing",
        partial=True),
    bad("chunk_size_plus", POST + CHUNKED + b"+3\r\nabc\r\n0\r\n\r\n", 400, "bad_framing",
        partial=True),
    bad("chunk_size_0x", POST + CHUNKED + b"0x3\r\nabc\r\n0\r\n\r\n", 400, "bad_framing",
        partial=True, note="also test_12 bad_chunk_size"),
    bad("chunk_size_space", POST + CHUNKED + b"3 \r\nabc\r\n0\r\n\r\n", 400, "bad_framing",
        partial=True),
    bad("chunk_ext_space", POST + CHUNKED + b"3 ;x=1\r\nabc\r\n0\r\n\r\n", 400, "bad_framing",
        partial=True),
    ok("chunk_ext_quoted", POST + CHUNKED + b"3;x=\"a b\"\r\nabc\r\n0\r\n\r\n",
       app("POST", "/b", b"abc")),
    bad("chunk_ext_control", POST + CHUNKED + b"3;x=\x01\r\nabc\r\n0\r\n\r\n",
        400, "bad_request", partial=True),
    bad("chunk_ext_5k", POST + CHUNKED + b"3;x=" + b"a" * 5120 + b"\r\nabc\r\n0\r\n\r\n",
        400, "chunk_line_too_long", partial=True, note="also test_14 (and an endless one)"),
    bad("chunk_ext_5k_second", POST + CHUNKED + b"3\r\nabc\r\n3;x=" + b"a" * 5120
        + b"\r\nabc\r\n0\r\n\r\n", 400, "chunk_line_too_long", partial=True),
    bad("chunk_data_longer", POST + CHUNKED + b"3\r\nabcd\r\n0\r\n\r\n", 400, "bad_request",
        partial=True),
    bad("chunk_data_no_crlf", POST + CHUNKED + b"3\r\nabc0\r\n\r\n", 400, "bad_request",
        partial=True),
    # -- bare LF and bare CR (RFC 9112 2.2): a line ends with CRLF, a CR stands nowhere else
    bad("bare_lf_everywhere", b"GET / HTTP/1.1\nHost: a\n\n", 400, "bad_request",
        note="also test_12 bare_lf"),
    bad("bare_lf_request_line", b"GET / HTTP/1.1\nHost: a\r\n\r\n", 400, "bad_request",
        note="fixed: llhttp 8 took it"),
    bad("bare_lf_field_line", b"GET / HTTP/1.1\r\nHost: a\nX: y\r\n\r\n", 400, "bad_request"),
    bad("bare_lf_end_of_head", b"GET / HTTP/1.1\r\nHost: a\r\n\n", 400, "bad_request",
        note="fixed: llhttp 8 took it"),
    bad("bare_lf_chunk_size", POST + CHUNKED + b"3\nabc\r\n0\r\n\r\n", 400, "bad_framing",
        partial=True),
    bad("bare_lf_chunk_data", POST + CHUNKED + b"3\r\nabc\n0\r\n\r\n", 400, "bad_request",
        partial=True),
    bad("bare_lf_last_chunk", POST + CHUNKED + b"3\r\nabc\r\n0\n\n", 400, "bad_framing",
        partial=True),
    bad("bare_lf_trailer", POST + CHUNKED + b"3\r\nabc\r\n0\r\nX: 1\n\r\n", 400, "bad_request",
        partial=True),
    bad("bare_lf_end_of_trailers", POST + CHUNKED + b"3\r\nabc\r\n0\r\n\n", 400, "bad_request",
        partial=True, note="fixed: llhttp 8 took it"),
    bad("bare_cr_in_value", b"GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n", 400, "bad_request"),
    bad("bare_cr_ends_field", b"GET / HTTP/1.1\r\nHost: a\rX: b\r\n\r\n", 400, "bad_request"),
    bad("bare_cr_empty_value", b"GET / HTTP/1.1\r\nHost: a\r\nX-A:\rXY: z\r\n\r\n",
        400, "bad_request"),
    bad("bare_cr_in_target", b"GET /\r HTTP/1.1\r\nHost: a\r\n\r\n", 400, "bad_request"),
    bad("bare_cr_after_version", b"GET / HTTP/1.1\rHost: a\r\n\r\n", 400, "bad_request",
        note="fixed: was 505"),
    bad("bare_cr_end_of_head", b"GET / HTTP/1.1\r\nHost: a\r\n\r", 400, "bad_request"),
    bad("bare_cr_chunk_size", POST + CHUNKED + b"3\rabc\r\n0\r\n\r\n", 400, "bad_request",
        partial=True),
    # -- NUL and other controls in names, values, targets and methods
    bad("nul_in_name", b"GET / HTTP/1.1\r\nHost: a\r\nX\x00A: 1\r\n\r\n", 400, "bad_request"),
    bad("control_in_name", b"GET / HTTP/1.1\r\nHost: a\r\nX\x01A: 1\r\n\r\n", 400, "bad_request"),
    bad("del_in_name", b"GET / HTTP/1.1\r\nHost: a\r\nX\x7fA: 1\r\n\r\n", 400, "bad_request"),
    bad("octet_in_name", b"GET / HTTP/1.1\r\nHost: a\r\nX\xe9A: 1\r\n\r\n", 400, "bad_request"),
    bad("separator_in_name", b"GET / HTTP/1.1\r\nHost: a\r\nX(A): 1\r\n\r\n",
        400, "bad_request"),
    bad("empty_name", b"GET / HTTP/1.1\r\nHost: a\r\n: 1\r\n\r\n", 400, "bad_request",
        note="fixed: forwarded as ': 1' (the app saw a malformed field)"),
    bad("empty_name_in_trailers", POST + CHUNKED + b"3\r\nabc\r\n0\r\n: 1\r\n\r\n",
        400, "bad_request", partial=True, note="fixed: as empty_name"),
    bad("nul_in_value", b"GET / HTTP/1.1\r\nHost: a\r\nX-A: a\x00b\r\n\r\n", 400, "bad_request",
        note="also test_12"),
    bad("control_in_value", b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x01b\r\n\r\n",
        400, "bad_request"),
    bad("escape_in_value", b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x1bb\r\n\r\n",
        400, "bad_request"),
    bad("del_in_value", b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x7fb\r\n\r\n", 400, "bad_request"),
    ok("tab_in_value", b"GET / HTTP/1.1\r\nHost: a\r\nX: a\tb\r\n\r\n",
       app(has=[("X", "a\tb")])),
    ok("obs_text_in_value", b"GET / HTTP/1.1\r\nHost: a\r\nX: caf\xc3\xa9\xff\r\n\r\n",
       app(has=[("X", "caf\xc3\xa9\xff")])),
    bad("nul_in_host", b"GET / HTTP/1.1\r\nHost: a\x00b\r\n\r\n", 400, "bad_request"),
    bad("nul_in_target", b"GET /a\x00b HTTP/1.1\r\nHost: a\r\n\r\n", 400, "bad_request"),
    bad("control_in_target", b"GET /a\x01b HTTP/1.1\r\nHost: a\r\n\r\n", 400, "bad_request"),
    bad("del_in_target", b"GET /a\x7fb HTTP/1.1\r\nHost: a\r\n\r\n", 400, "bad_request"),
    bad("tab_in_target", b"GET /a\tb HTTP/1.1\r\nHost: a\r\n\r\n", 400, "bad_request"),
    bad("octet_in_target", b"GET /a\xffb HTTP/1.1\r\nHost: a\r\n\r\n", 400, "bad_request"),
    bad("space_in_target", b"GET /a b HTTP/1.1\r\nHost: a\r\n\r\n", 400, "bad_request"),
    bad("nul_in_method", b"G\x00ET / HTTP/1.1\r\nHost: a\r\n\r\n", 400, "bad_request"),
    # -- obs-fold (RFC 9112 5.2: refused, never unfolded)
    bad("obs_fold_space", b"GET / HTTP/1.1\r\nHost: a\r\nX-A: one\r\n two\r\n\r\n",
        400, "bad_framing", note="also test_12"),
    bad("obs_fold_tab", b"GET / HTTP/1.1\r\nHost: a\r\nX-A: one\r\n\ttwo\r\n\r\n",
        400, "bad_framing", note="also test_12"),
    bad("obs_fold_empty_first_line", b"GET / HTTP/1.1\r\nHost: a\r\nX-A:\r\n two\r\n\r\n",
        400, "bad_framing", note="fixed: llhttp 8 unfolded it"),
    bad("obs_fold_blank_first_line", b"GET / HTTP/1.1\r\nHost: a\r\nX-A: \r\n\ttwo\r\n\r\n",
        400, "bad_framing", note="fixed: as above"),
    bad("obs_fold_host", b"GET / HTTP/1.1\r\nHost:\r\n a\r\n\r\n", 400, "bad_framing",
        note="fixed: as above"),
    bad("obs_fold_in_trailers", POST + CHUNKED + b"3\r\nabc\r\n0\r\nX-T: 1\r\n 2\r\n\r\n",
        400, "bad_framing", partial=True),
    # -- request targets: absolute-form (RFC 9112 3.2.2), authority-form (CONNECT only)
    ok("absolute_form", b"GET http://example.com/p?q HTTP/1.1\r\nHost: other\r\n\r\n",
       app("GET", "/p?q", host="example.com"), note="also test_10"),
    ok("absolute_form_https_port", b"GET https://example.com:8443/p HTTP/1.1\r\nHost: a\r\n\r\n",
       app("GET", "/p", host="example.com:8443")),
    ok("absolute_form_no_path", b"GET http://example.com HTTP/1.1\r\nHost: a\r\n\r\n",
       app("GET", "/", host="example.com")),
    ok("absolute_form_query_only", b"GET http://example.com?x=1 HTTP/1.1\r\nHost: a\r\n\r\n",
       app("GET", "/?x=1", host="example.com")),
    ok("absolute_form_ipv6", b"GET http://[::1]:80/p HTTP/1.1\r\nHost: a\r\n\r\n",
       app("GET", "/p", host="[::1]:80")),
    bad("absolute_form_userinfo", b"GET http://user:pw@example.com/p HTTP/1.1\r\n"
        b"Host: example.com\r\n\r\n", 400, "bad_request",
        note="fixed: forwarded with Host: user:pw@example.com (RFC 9110 4.2.4)"),
    bad("absolute_form_empty_host", b"GET http:///p HTTP/1.1\r\nHost: a\r\n\r\n",
        400, "bad_request", note="fixed: forwarded with an empty Host (RFC 9110 4.2.1)"),
    bad("absolute_form_port_only", b"GET http://:80/p HTTP/1.1\r\nHost: a\r\n\r\n",
        400, "bad_request"),
    bad("absolute_form_bad_host", b"GET http://ex\"ample/p HTTP/1.1\r\nHost: a\r\n\r\n",
        400, "bad_request"),
    ok("absolute_form_http10_without_host", b"GET http://example.com/p HTTP/1.0\r\n\r\n",
       app("GET", "/p", host="example.com"), close=True),
    bad("absolute_form_without_host", b"GET http://example.com/p HTTP/1.1\r\n\r\n",
        400, "bad_request"),
    bad("absolute_form_two_hosts", b"GET http://example.com/p HTTP/1.1\r\nHost: a\r\n"
        b"Host: b\r\n\r\n", 400, "bad_request"),
    bad("authority_form_on_get", b"GET example.com:80 HTTP/1.1\r\nHost: a\r\n\r\n",
        400, "bad_request"),
    bad("asterisk_on_get", b"GET * HTTP/1.1\r\nHost: a\r\n\r\n", 400, "bad_request",
        note="also test_14"),
    ok("connect_authority_form", b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443"
       b"\r\n\r\n", app("GET", "/inner", host="x"),
       tunnel=b"GET /inner HTTP/1.1\r\nHost: x\r\n\r\n", pipeline=False,
       note="the tunnel goes to the route's app (test_83); the app sees only the inner request"),
    bad("connect_origin_form", b"CONNECT / HTTP/1.1\r\nHost: a\r\n\r\n", 400, "bad_request",
        note="fixed: was tunnelled"),
    bad("connect_absolute_form", b"CONNECT http://example.com/ HTTP/1.1\r\nHost: a\r\n\r\n",
        400, "bad_request", note="fixed: was tunnelled"),
    bad("connect_without_port", b"CONNECT example.com HTTP/1.1\r\nHost: a\r\n\r\n",
        400, "bad_request", note="fixed: was tunnelled"),
    bad("connect_empty_port", b"CONNECT example.com: HTTP/1.1\r\nHost: a\r\n\r\n",
        400, "bad_request"),
    bad("connect_userinfo", b"CONNECT u@example.com:443 HTTP/1.1\r\nHost: a\r\n\r\n",
        400, "bad_request"),
    bad("connect_asterisk", b"CONNECT * HTTP/1.1\r\nHost: a\r\n\r\n", 400, "bad_request"),
    bad("connect_content_length", b"CONNECT example.com:443 HTTP/1.1\r\nHost: a\r\n"
        b"Content-Length: 3\r\n\r\nabc", 400, "bad_framing",
        note="fixed: the body went into the tunnel"),
    bad("connect_chunked", b"CONNECT example.com:443 HTTP/1.1\r\nHost: a\r\n" + CHUNKED
        + b"0\r\n\r\n", 400, "bad_framing", note="fixed: the body went into the tunnel"),
    # -- methods
    bad("method_lower_case", b"get / HTTP/1.1\r\nHost: a\r\n\r\n", 400, "bad_request"),
    bad("method_unknown", b"FOO / HTTP/1.1\r\nHost: a\r\n\r\n", 400, "bad_request",
        note="llhttp 8 knows a fixed list"),
    bad("method_bad_token", b"GE(T / HTTP/1.1\r\nHost: a\r\n\r\n", 400, "bad_request"),
    bad("method_brackets", b"<GET> / HTTP/1.1\r\nHost: a\r\n\r\n", 400, "bad_request"),
    bad("method_long", b"A" * 100 + b" / HTTP/1.1\r\nHost: a\r\n\r\n", 400, "bad_request"),
    bad("method_empty", b" / HTTP/1.1\r\nHost: a\r\n\r\n", 400, "bad_request"),
    bad("method_tab_separator", b"GET\t/ HTTP/1.1\r\nHost: a\r\n\r\n", 400, "bad_request"),
    bad("method_pri_on_http11", b"PRI * HTTP/1.1\r\nHost: a\r\n\r\n", 400, "bad_request",
        note="fixed: was 505"),
    ok("method_purge", b"PURGE /p HTTP/1.1\r\nHost: a\r\n\r\n", app("PURGE", "/p")),
    ok("two_spaces_after_method", b"GET  /p HTTP/1.1\r\nHost: a\r\n\r\n", app("GET", "/p"),
       note="RFC 9112 3 lets a recipient split on whitespace; forwarded with one SP"),
    ok("leading_empty_lines", b"\r\n\r\nGET /p HTTP/1.1\r\nHost: a\r\n\r\n", app("GET", "/p"),
       note="RFC 9112 2.2"),
    bad("leading_space", b" GET / HTTP/1.1\r\nHost: a\r\n\r\n", 400, "bad_request"),
    # -- versions: HTTP/0.9, HTTP/2.0 and others in an HTTP/1 request line
    bad("http_0_9", b"GET /\r\n", 400, "bad_request", note="also test_14"),
    bad("http_0_9_explicit", b"GET / HTTP/0.9\r\n", 400, "bad_request", note="also test_14"),
    bad("http_2_0", b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505, "http_version_not_supported",
        note="also test_12, test_14"),
    bad("http_3_0", b"GET / HTTP/3.0\r\nHost: a\r\n\r\n", 505, "http_version_not_supported"),
    bad("http_1_2", b"GET / HTTP/1.2\r\nHost: a\r\n\r\n", 505, "http_version_not_supported"),
    bad("http_2", b"GET / HTTP/2\r\nHost: a\r\n\r\n", 400, "bad_request"),
    bad("http_1_10", b"GET / HTTP/1.10\r\nHost: a\r\n\r\n", 400, "bad_request",
        note="fixed: was 505"),
    bad("version_trailing_space", b"GET / HTTP/1.1 \r\nHost: a\r\n\r\n", 400, "bad_request",
        note="fixed: was 505"),
    bad("version_lower_case", b"GET / http/1.1\r\nHost: a\r\n\r\n", 400, "bad_request"),
    bad("version_letters", b"GET / HTTP/x.y\r\nHost: a\r\n\r\n", 400, "bad_request"),
    bad("http11_without_host", b"GET / HTTP/1.1\r\nX: 1\r\n\r\n", 400, "bad_request",
        note="also test_12"),
    # -- over-long request lines and targets, too many fields (8 KiB head, 50 fields)
    bad("target_over_limit", b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: a\r\n\r\n",
        414, "uri_too_long", note="also test_14"),
    bad("target_100k", b"GET /" + b"a" * 100000 + b" HTTP/1.1\r\nHost: a\r\n\r\n",
        414, "uri_too_long"),
    ok("target_under_limit", b"GET /" + b"a" * 7000 + b" HTTP/1.1\r\nHost: a\r\n\r\n",
       app("GET", "/" + "a" * 7000)),
    bad("method_over_limit", b"G" * 9000 + b" / HTTP/1.1\r\nHost: a\r\n\r\n",
        400, "bad_request"),
    bad("field_value_over_limit", b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"b" * 9000
        + b"\r\n\r\n", 431, "header_too_large"),
    bad("field_name_over_limit", b"GET / HTTP/1.1\r\nHost: a\r\n" + b"X" * 9000 + b": 1\r\n\r\n",
        431, "header_too_large"),
    ok("fields_at_limit", b"GET / HTTP/1.1\r\nHost: a\r\n" + _fields(MAX_HEADERS - 1) + b"\r\n",
       app(has=[("X-48", "v")])),
    bad("fields_over_limit", b"GET / HTTP/1.1\r\nHost: a\r\n" + _fields(MAX_HEADERS) + b"\r\n",
        431, "too_many_headers", note="also test_12 (boundary)"),
    bad("fields_10000", b"GET / HTTP/1.1\r\nHost: a\r\n" + _fields(10000, b"X: v\r\n") + b"\r\n",
        431, "too_many_headers"),
    bad("empty_fields_over_limit", b"GET / HTTP/1.1\r\nHost: a\r\n" + _fields(60, b"X:\r\n")
        + b"\r\n", 431, "too_many_headers"),
    bad("trailers_over_limit", POST + CHUNKED + b"3\r\nabc\r\n0\r\n" + _fields(60, b"T-%d: v\r\n")
        + b"\r\n", 431, "too_many_headers", partial=True),
    bad("trailer_over_limit", POST + CHUNKED + b"3\r\nabc\r\n0\r\nT: " + b"v" * 9000
        + b"\r\n\r\n", 431, "header_too_large", partial=True),
    # -- Expect (RFC 9110 10.1.1)
    ok("expect_100_continue", POST + b"Expect: 100-continue\r\nContent-Length: 3\r\n\r\n",
       app("POST", "/b", b"abc", lacks=["expect"]), cont=b"abc", pipeline=False,
       note="also test_10"),
    ok("expect_100_continue_case", POST + b"Expect: 100-Continue\r\nContent-Length: 3\r\n\r\n",
       app("POST", "/b", b"abc", lacks=["expect"]), cont=b"abc", pipeline=False),
    ok("expect_100_continue_body_sent", POST + b"Expect: 100-continue\r\nContent-Length: 3"
       b"\r\n\r\nabc", app("POST", "/b", b"abc", lacks=["expect"]),
       note="a client that does not wait gets no 100 (the body is there already)"),
    ok("expect_100_continue_no_body", b"GET / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue"
       b"\r\n\r\n", app(lacks=["expect"])),
    ok("expect_unknown", POST + b"Expect: foo\r\nContent-Length: 3\r\n\r\nabc",
       app("POST", "/b", b"abc", has=[("Expect", "foo")]),
       note="forwarded, as HAProxy, Envoy and nginx do: the app may answer 417"),
    ok("expect_list", POST + b"Expect: 100-continue, foo\r\nContent-Length: 3\r\n\r\nabc",
       app("POST", "/b", b"abc", has=[("Expect", "100-continue, foo")])),
    ok("expect_empty", POST + b"Expect:\r\nContent-Length: 3\r\n\r\nabc",
       app("POST", "/b", b"abc", has=[("Expect", "")])),
    ok("expect_http10", b"POST /b HTTP/1.0\r\nHost: a\r\nExpect: 100-continue\r\n"
       b"Content-Length: 3\r\n\r\nabc", app("POST", "/b", b"abc", lacks=["expect"]), close=True,
       note="RFC 9110 10.1.1: ignored (also test_10)"),
    # -- Upgrade (RFC 9110 7.8; tunnels in test_80): what reaches the app, the conn in sync
    ok("upgrade_websocket", b"GET /ws HTTP/1.1\r\nHost: a\r\n" + WS + b"\r\n",
       app("GET", "/ws", has=[("Upgrade", "websocket"), ("Connection", "Upgrade")]),
       note="the app answers 200: no tunnel, the conn goes on"),
    ok("upgrade_websocket_bad_version", b"GET /ws HTTP/1.1\r\nHost: a\r\n"
       + WS.replace(b"Version: 13", b"Version: 99") + b"\r\n",
       app("GET", "/ws", has=[("Sec-WebSocket-Version", "99"), ("Upgrade", "websocket")]),
       note="the handshake is the app's to check (RFC 6455 4.2.1)"),
    ok("upgrade_websocket_bad_key", b"GET /ws HTTP/1.1\r\nHost: a\r\n"
       + WS.replace(b"dGhlIHNhbXBsZSBub25jZQ==", b"x") + b"\r\n",
       app("GET", "/ws", has=[("Sec-WebSocket-Key", "x"), ("Upgrade", "websocket")])),
    ok("upgrade_websocket_no_key", b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\n"
       b"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\r\n",
       app("GET", "/ws", lacks=["sec-websocket-key"], has=[("Upgrade", "websocket")])),
    ok("upgrade_h2c", b"GET /h2c HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\n"
       b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
       app("GET", "/h2c", lacks=["upgrade", "connection", "http2-settings"]),
       note="answered as HTTP/1.1; the offer is hop-by-hop"),
    ok("upgrade_post_with_body", b"POST /ws HTTP/1.1\r\nHost: a\r\n" + WS
       + b"Content-Length: 3\r\n\r\nabc",
       app("POST", "/ws", b"abc", lacks=["upgrade", "connection"])),
    ok("upgrade_post_chunked", b"POST /ws HTTP/1.1\r\nHost: a\r\n" + WS + CHUNKED + ABC,
       app("POST", "/ws", b"abc", lacks=["upgrade", "connection"])),
    ok("upgrade_without_connection_token", b"GET /ws HTTP/1.1\r\nHost: a\r\n"
       + WS.replace(b"Connection: Upgrade", b"Connection: keep-alive") + b"\r\n",
       app("GET", "/ws", lacks=["upgrade", "connection"])),
    ok("upgrade_without_connection", b"GET /ws HTTP/1.1\r\nHost: a\r\n"
       + WS.replace(b"Connection: Upgrade\r\n", b"") + b"\r\n",
       app("GET", "/ws", lacks=["upgrade", "connection"])),
    ok("upgrade_empty", b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade:\r\n\r\n",
       app("GET", "/ws", lacks=["upgrade", "connection"])),
    ok("upgrade_not_allowed", b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\n"
       b"Upgrade: TLS/1.2\r\n\r\n", app("GET", "/ws", lacks=["upgrade", "connection"]),
       note="also test_80 (foo)"),
    ok("upgrade_http10", b"GET /ws HTTP/1.0\r\nHost: a\r\n" + WS + b"\r\n",
       app("GET", "/ws", lacks=["upgrade", "connection"]), close=True,
       note="fixed: RFC 9110 7.8, a server MUST ignore Upgrade in HTTP/1.0; it went on"),
]


# ---- running a case -------------------------------------------------------------------------

def _check_app(seen, want):
    assert "method" in seen, seen
    assert seen["method"] == want["method"] and seen["target"] == want["target"], seen
    assert seen["body"] == want["body"], seen
    hosts = [v for k, v in seen["headers"] if k.lower() == "host"]
    assert hosts == [want["host"]], seen["headers"]
    names = {k.lower() for k, _ in seen["headers"]}
    for k, v in want["has"]:
        assert (k.lower(), v) in [(n.lower(), w) for n, w in seen["headers"]], (k, v, seen)
    for k in want["lacks"]:
        assert k not in names, (k, seen["headers"])
    if want["trailers"] is not None:
        assert seen["trailers"] == want["trailers"], seen


def _app_entries(recorder, before, want, settle):
    """What the app recorded since before: once it holds want entries (at most 3 s), and
    settle seconds later, so that anything more than expected arrives too."""
    end = time.monotonic() + 3.0
    while len(recorder.since(before)) < want and time.monotonic() < end:
        time.sleep(0.02)
    time.sleep(settle)
    return recorder.since(before)


def run_case(port, recorder, case):
    """Runs one case of CASES against remora on port in front of recorder (configured with
    remora_options(recorder.addr)), asserting everything the case says."""
    before = len(recorder.requests)
    pipeline = case.get("pipeline", True)
    raw = case["raw"] + (FOLLOW if pipeline else b"")
    with HttpConn(port, timeout=5) as c:
        try:
            c.send(raw)
        except (BrokenPipeError, ConnectionResetError):
            pass
        if case.get("cont") is not None:
            interim = c.read_head()
            assert interim.status == 100, interim
            c.send(case["cont"])
        if case.get("tunnel") is not None:
            r = c.read_head()  # a CONNECT's 200 has no framing: the tunnel follows
        else:
            r = c.read_response(skip_1xx=False)
            assert r.complete, r
        assert r.status == case["status"], (r, r.body)
        assert r.header("x-remora-error") == case["error"], r.headers
        if case["error"] is None and case.get("tunnel") is None:
            assert r.header("x-rec") is not None and r.body == b"recorded", (r, r.body)
        if case.get("tunnel") is not None:
            c.send(case["tunnel"])
            inner = c.read_response()
            assert inner.status == 200 and inner.header("x-rec") is not None, inner
        elif case["close"]:
            assert c.is_closed(wait=3.0), "connection left open after %d" % r.status
        else:
            if not pipeline:
                c.send(FOLLOW)
            f = c.read_response()
            assert f.status == 200 and f.header("x-rec") is not None, (f, f.body)
    want = len(case["apps"]) + (0 if case["close"] or case.get("tunnel") is not None else 1)
    got = _app_entries(recorder, before, want,
                       0.3 if case["partial"] else 0.15 if case["close"] else 0.05)
    if case["partial"]:
        # the head may have gone on before its body was refused: at most that head, cut
        assert len(got) <= 1 and all(g.get("partial") for g in got), got
        assert all(g["raw"].startswith(case["raw"].split(b"\r\n", 1)[0]) for g in got), got
        return
    bad_ones = [g for g in got if "method" not in g]
    assert not bad_ones, "the app received a malformed or cut request: %r" % bad_ones
    assert len(got) == want, [(g["method"], g["target"]) for g in got]
    for seen, w in zip(got, case["apps"]):
        _check_app(seen, w)
    if want > len(case["apps"]):
        assert got[-1]["target"] == "/battery-follow", got[-1]


# ---- the battery against one remora ---------------------------------------------------------

@pytest.fixture(scope="module")
def battery(tmp_path_factory):
    """One remora (remora_options) in front of one Recorder for the whole module; at teardown
    it must not have crashed nor logged a sanitizer report."""
    d = tmp_path_factory.mktemp("battery")
    with Recorder() as rec:
        port, admin = free_port(), free_port()
        while admin == port:
            admin = free_port()
        opts = remora_options(rec.addr)
        cfg = default_config(port, admin, opts["endpoints"], limits=opts["limits"],
                             routes=opts["routes"])
        (d / "remora.yaml").write_text(to_yaml(cfg) + "\n")
        log_path = d / "remora.stderr"
        with open(log_path, "wb") as errf:
            proc = subprocess.Popen([str(BIN), "-c", str(d / "remora.yaml")], stdout=errf,
                                    stderr=errf, stdin=subprocess.DEVNULL)
        try:
            wait_ready(proc, admin, log_path)
            yield port, rec, proc, log_path
        finally:
            crashed = proc.poll()
            rc = stop_process(proc)
            text = log_path.read_text(errors="replace")
            assert crashed not in CRASH_SIGNALS and rc not in CRASH_SIGNALS, text[-5000:]
            assert not any(m in text for m in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer",
                                               "runtime error:")), \
                text[-5000:]


def test_case_ids_unique():
    ids = [c["id"] for c in CASES]
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_smuggling(battery, case):
    port, rec, proc, _ = battery
    run_case(port, rec, case)
    assert proc.poll() is None, "remora exited"


def test_still_serving_after_battery(battery):
    """Runs last (file order): remora still answers, through the same app, after every case."""
    port, rec, proc, _ = battery
    before = len(rec.requests)
    with HttpConn(port) as c:
        c.send(FOLLOW)
        assert c.read_response().status == 200
    assert len(rec.since(before)) == 1
    assert proc.poll() is None
    assert os.path.exists("/proc/%d" % proc.pid)


# ---- the response-side twin of empty_name (h1_up) -------------------------------------------

APP_ANSWERS = {
    "head": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n: x\r\n\r\nok",
    "trailer": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n: x\r\n\r\n",
}


def _answering(answer):
    def handler(c, app):
        if recv_head(c) is not None:
            c.sendall(answer)
            time.sleep(0.3)
    return handler


@pytest.mark.parametrize("where", sorted(APP_ANSWERS))
def test_app_field_without_name_is_bad_response(remora, where):
    """An app's field line without a name (llhttp 8 passes ": x") never reaches the client as
    such: in the head, 502 bad_response; in the trailers (the head went down already), the
    body is cut, never completed, and the conn closes."""
    with RawApp(_answering(APP_ANSWERS[where])) as a:
        p = remora(endpoints=[a.addr])
        with HttpConn(p.port, timeout=5) as c:
            c.send(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n")
            r = c.read_response()
            if where == "head":
                assert r.status == 502 and r.header("x-remora-error") == "bad_response", r
            else:
                assert r.status == 200 and not r.complete and r.trailers == [], r
                assert c.is_closed(wait=3.0)
            assert "" not in [k for k, _ in r.headers], r.headers
