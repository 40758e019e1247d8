#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""podapp: the app container of the pod tests: tests/integration/upstream.py (every path of its
table, see tests/integration/README.md) with the SIGTERM handling of a well-behaved app.

    podapp.py --port N [--host 127.0.0.1] [--name NAME] [--term-delay SECONDS]

On SIGTERM (or SIGINT) the app keeps serving for --term-delay seconds (the time the pod's
endpoint removal takes to reach every client, the way remora's own drain.delay works), then
closes its listener, waits until no request is being handled (at most 25 s) and exits 0;
stderr gets a `TERM received ...` line at the signal and a `TERM signal ...` line with the
counts at the exit. A second signal exits at once (1).

It runs as /app/podapp.py next to copies of upstream.py and helpers.py, under the host's
python3 (/usr mounted read-only into an image that holds only the merged-/usr symlinks)."""

import argparse
import asyncio
import signal
import sys
import time

import upstream
from upstream import Stats, on_client

DRAIN_CAP = 25.0


async def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--name", default="")
    ap.add_argument("--term-delay", type=float, default=0.0)
    args = ap.parse_args()
    upstream.NAME = args.name
    server = await asyncio.start_server(on_client, args.host, args.port,
                                        limit=upstream.HEAD_LIMIT, backlog=1024,
                                        reuse_address=True)
    print("READY %d" % server.sockets[0].getsockname()[1], flush=True)
    loop = asyncio.get_running_loop()
    term = asyncio.Event()
    got = []

    def on_signal(signo):
        got.append((signo, time.monotonic()))
        if len(got) > 1:
            sys.stderr.write("TERM second signal %d: exiting at once\n" % signo)
            sys.stderr.flush()
            loop.stop()
            return
        sys.stderr.write("TERM received signal %d: %d in flight\n" % (signo, Stats.in_flight))
        sys.stderr.flush()
        term.set()

    for s in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(s, on_signal, s)
    await term.wait()
    t0 = got[0][1]
    in_flight_at_signal = Stats.in_flight
    requests_at_signal = Stats.requests
    await asyncio.sleep(args.term_delay)
    server.close()
    end = time.monotonic() + DRAIN_CAP
    while Stats.in_flight and time.monotonic() < end:
        await asyncio.sleep(0.02)
    sys.stderr.write("TERM signal %d: in flight %d at the signal, %d requests after it, %d "
                     "left at exit, exit after %.2f s\n"
                     % (got[0][0], in_flight_at_signal, Stats.requests - requests_at_signal,
                        Stats.in_flight, time.monotonic() - t0))
    sys.stderr.flush()
    return 0 if not Stats.in_flight else 1


if __name__ == "__main__":
    try:
        rc = asyncio.run(main())
    except RuntimeError:  # loop.stop() by a second signal
        rc = 1
    sys.exit(rc)
