-- SPDX-License-Identifier: Apache-2.0
-- wrk reporter for bench/run: prints one machine-readable line at the end of a run with the
-- request count, wall time and error counters, and latency percentiles that wrk's own
-- --latency output lacks (p99.9). Latencies are in microseconds, as wrk records them.
-- Status errors are responses outside 2xx/3xx (wrk counts them in summary.errors.status).

done = function(summary, latency, requests)
    local e = summary.errors
    io.write(string.format(
        "BENCH requests=%d duration_us=%d bytes=%d connect=%d read=%d write=%d status=%d " ..
        "timeout=%d p50=%d p90=%d p99=%d p999=%d mean=%.1f max=%d\n",
        summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write,
        e.status, e.timeout, latency:percentile(50), latency:percentile(90),
        latency:percentile(99), latency:percentile(99.9), latency.mean, latency.max))
end
