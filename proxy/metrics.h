/* SPDX-License-Identifier: Apache-2.0
 * metrics: the metric registry. A layout (per config generation, immutable) fixes the routes,
 * upstreams, bucket layouts and pre-escaped label text; each worker owns one shard of counters,
 * gauges and histograms that only it writes, allocated once so recording never allocates or
 * locks. The scrape sums the shards and renders Prometheus text 0.0.4 or OpenMetrics 1.0.
 * Metric names and labels are a public interface: see docs/metrics.md. */
#ifndef REM_METRICS_H
#define REM_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "histogram.h"

struct evbuffer;
struct rem_config;

/* Status classes for the `code` label. NONE: no status was sent (client gone first). */
enum rem_code_class {
    REM_CODE_NONE = 0,
    REM_CODE_1XX,
    REM_CODE_2XX,
    REM_CODE_3XX,
    REM_CODE_4XX,
    REM_CODE_5XX,
    REM_CODE__N
};

static inline enum rem_code_class rem_code_class_of(int status)
{
    return status >= 100 && status < 600 ? (enum rem_code_class)(status / 100) : REM_CODE_NONE;
}

/* `reason` label of remora_upstream_connect_failures_total. */
enum rem_connfail {
    REM_CONNFAIL_REFUSED = 0,
    REM_CONNFAIL_TIMEOUT,
    REM_CONNFAIL_ERROR,
    REM_CONNFAIL_TLS, /* the TLS handshake failed (upstream_tls) */
    REM_CONNFAIL__N
};

/* `result` label of remora_dns_lookups_total: enum rem_dns_result (dns.h). */
#define REM_DNS_RESULTS 7

/* `reason` label of remora_requests_rejected_total. */
enum rem_reject { REM_REJECT_QUEUE_FULL = 0, REM_REJECT_QUEUE_TIMEOUT, REM_REJECT__N };

/* One route's counters on one worker. Kept across reloads while the route (by name) exists, so
 * its series never reset; streams of every generation that has the route write it. */
struct rem_route_metrics {
    uint64_t requests[REM_CODE__N];
    uint64_t rejected[REM_REJECT__N];
    int64_t in_flight;
    uint64_t request_bytes, response_bytes;
    uint64_t tunnels; /* tunnels opened (101 / 2xx to CONNECT) */
};

/* One route's duration histograms on one worker, for one bucket layout: kept across reloads
 * while the route keeps its buckets, a new one (starting at zero) when they change. */
struct rem_route_hist {
    struct rem_hist duration[REM_CODE__N];
};

/* `result` label of remora_tls_handshakes_total: how a TLS handshake ended
 * (upstream: a failure is the app's certificate, a protocol error or the app closing; the timeout
 * is connect_timeout). */
enum rem_tls_result {
    REM_TLS_OK = 0,  /* done (REM_TE_READY) */
    REM_TLS_FAILED,  /* a protocol error, or the client closed or reset the connection */
    REM_TLS_TIMEOUT, /* limits.tls_handshake_timeout fired first */
    REM_TLS_REFUSED, /* limits.max_tls_handshakes were in progress: closed unread at accept
                        (downstream only) */
    REM_TLS_RESULT__N
};

struct rem_upstream_metrics {
    struct rem_hist response_duration;
    struct rem_hist connect_duration;
    struct rem_hist queue_wait;
    int64_t active, idle;
    int64_t pending;           /* admission queue depth */
    int64_t in_flight;         /* admission slots held */
    int64_t concurrency_limit; /* current admission limit (this worker's share) */
    uint64_t connect_failures[REM_CONNFAIL__N];
    int64_t endpoints; /* endpoints in the set (this worker's view; the scrape takes the max) */
    uint64_t dns_lookups[REM_DNS_RESULTS]; /* by enum rem_dns_result */
    struct rem_hist dns_duration;
    int64_t dns_state; /* 0 resolved (or no names); 1 + enum rem_dns_result of the failure while
                          a name never answered; 1 + REM_DNS_RESULTS before the first answer */
    /* TLS upstreams: handshakes by enum rem_tls_result, the ok ones that resumed a session, and
     * the time from the connect's start to the handshake's end of the ok ones. */
    uint64_t tls_handshakes[REM_TLS_RESULT__N];
    uint64_t tls_resumed;
    struct rem_hist tls_handshake_duration;
};

/* `proto` label of remora_downstream_streams_total: a downstream codec's `proto` index (conn.h):
 * 0 http1 (cleartext or TLS), 1 h2c (cleartext prior knowledge), 2 h2 (over TLS, by ALPN). */
#define REM_DOWN_PROTOS 3

/* HTTP/2 error codes counted by name in remora_http2_resets_total (0x0..0xd); the slot after
 * them counts any other code. */
#define REM_H2_REASONS 14

/* One worker's process-wide metrics (for the worker's life, whatever the generation). Written
 * only by that worker, read by the scrape. Per-route and per-upstream metrics live with the
 * worker's generation objects (gen.c, cluster.c) and reach the scrape through a view. */
struct rem_metrics_shard {
    int64_t downstream_connections;
    uint64_t downstream_connections_total;
    int64_t downstream_streams_active;         /* HTTP/2 streams held on downstream conns */
    uint64_t h2_resets[2][REM_H2_REASONS + 1]; /* [side: 0 downstream, 1 upstream][code] */
    uint64_t h2_goaway[2][REM_H2_REASONS + 1]; /* [side][code] */
    uint64_t streams_finished;                 /* streams ended, whatever the outcome */
    uint64_t drain_cut;                        /* streams cut at drain.timeout */
    int64_t tunnels_active;                    /* open tunnels (WebSocket, CONNECT) */
    uint64_t headers_dropped_underscore;       /* request fields named with '_' not forwarded */
    /* Streams started, by proto: 0 http1, 1 h2c, 2 h2. */
    uint64_t downstream_streams_total[REM_DOWN_PROTOS];
    /* Downstream TLS handshakes by enum rem_tls_result, and the ok ones that resumed a
     * session. */
    uint64_t tls_handshakes[REM_TLS_RESULT__N];
    uint64_t tls_resumed;
    int64_t tls_handshakes_in_progress; /* downstream conns in HANDSHAKE (conn.c) */
    /* Accept to handshake done of the ok ones, counted with tls_ml's upstream_hist
     * (metrics.buckets). */
    struct rem_hist tls_handshake_duration;
    /* A reference, NULL before the first ok handshake; set only by
     * rem_metrics_shard_tls_layout (see there). */
    struct rem_metrics_layout *tls_ml;
};

/* Per-generation layout: bucket layouts and escaped label values. Immutable once built;
 * shared by the main thread and every worker's generation (atomic reference count). */
struct rem_metrics_layout {
    int refs;        /* atomic */
    size_t n_routes; /* configured routes + 1 */
    struct rem_hist_layout
        *route_hist;    /* owned, n_routes; the unmatched one uses metrics.buckets */
    char **route_label; /* owned, escaped; "" for the unmatched */
    size_t n_upstreams;
    struct rem_hist_layout upstream_hist; /* metrics.buckets, for upstream histograms */
    char **upstream_label;                /* owned, escaped */
    bool tls;    /* a listener terminates TLS: the remora_tls_* families are rendered */
    bool up_tls; /* an upstream is reached over TLS: they are too, with side="upstream" */
};

/* One worker's metrics lined up with a layout, for one scrape: entry i of each array is the
 * object of the layout's route (or upstream) i on that worker. Every entry is set: where the
 * worker has no such object (it has not swapped to the layout's generation yet, or has
 * already swapped past it) it points at a zeroed object, and the hist arrays do too where the
 * worker's histogram has other buckets than the layout. */
struct rem_metrics_view {
    const struct rem_metrics_shard *shard;
    const struct rem_route_metrics **routes;       /* [layout n_routes] */
    const struct rem_route_hist **route_hists;     /* [layout n_routes] */
    const struct rem_upstream_metrics **upstreams; /* [layout n_upstreams] */
    const struct rem_upstream_metrics **up_hists;  /* [layout n_upstreams]: for histograms */
};

/* Zeroed objects for the views' missing entries. */
extern const struct rem_route_metrics rem_metrics_zero_route;
extern const struct rem_route_hist rem_metrics_zero_route_hist;
extern const struct rem_upstream_metrics rem_metrics_zero_upstream;

/* Builds the layout of cfg. Returns NULL with a log line on bad buckets (the config loader
 * validates them, so that is a bug); aborts on OOM (control object). */
struct rem_metrics_layout *rem_metrics_layout_new(const struct rem_config *cfg);
/* Frees l whatever its references (tests; everything else unrefs). NULL-safe. */
void rem_metrics_layout_free(struct rem_metrics_layout *l);
/* References on a layout (thread-safe); unref frees at zero. NULL-safe. */
struct rem_metrics_layout *rem_metrics_layout_ref(struct rem_metrics_layout *l);
void rem_metrics_layout_unref(struct rem_metrics_layout *l);
/* Both layouts have the same bucket bounds. */
bool rem_hist_layout_same(const struct rem_hist_layout *a, const struct rem_hist_layout *b);

/* dst takes src's counters and gauges, with its histograms zeroed (new buckets after a
 * reload). The writer's thread only. */
void rem_upstream_metrics_carry(struct rem_upstream_metrics *dst,
                                const struct rem_upstream_metrics *src);

/* A zeroed shard. Aborts on OOM. */
struct rem_metrics_shard *rem_metrics_shard_new(void);
/* Frees s and drops its tls_ml reference. NULL-safe. */
void rem_metrics_shard_free(struct rem_metrics_shard *s);

/* Makes ml (the writer's current generation's layout) the one whose metrics.buckets s's TLS
 * handshake histogram counts with; when the buckets differ from the previous layout's, the
 * histogram restarts from zero (as upstream histograms do after a reload). The scrape reads
 * tls_ml and the histogram under the worker's gen_lock, so the writer calls this holding it;
 * it needs to only when s->tls_ml != ml, which a plain read on the writer's thread tells. */
void rem_metrics_shard_tls_layout(struct rem_metrics_shard *s, struct rem_metrics_layout *ml);

/* Records how one downstream TLS handshake ended. For REM_TLS_OK also its duration ns (into
 * the histogram, whose layout rem_metrics_shard_tls_layout set: none set, none recorded) and
 * whether it resumed a session. Worker-only; allocation-free and lock-free. */
void rem_metrics_record_tls_handshake(struct rem_metrics_shard *s, enum rem_tls_result r,
                                      uint64_t ns, bool resumed);

/* Writer-side helpers: relaxed atomic load+store, no read-modify-write instruction. */
#define REM_M_ADD(field, n)                                                                        \
    __atomic_store_n(&(field), __atomic_load_n(&(field), __ATOMIC_RELAXED) + (n), __ATOMIC_RELAXED)

/* Records one finished request into a route's counters m and histograms h (bucket layout
 * hl): status class counter, bytes, duration histogram, and the in-flight gauge when
 * counted_in_flight. Worker-only; allocation-free and lock-free (tested in
 * tests/unit/test_alloc.c). */
void rem_metrics_record_request(struct rem_route_metrics *m, struct rem_route_hist *h,
                                const struct rem_hist_layout *hl, bool counted_in_flight,
                                int status, uint64_t ns, uint64_t bytes_in, uint64_t bytes_out);

/* Escapes a label value for the text formats (backslash, double quote, newline). Returns a
 * malloc'd string (aborts on OOM). */
char *rem_metrics_escape_label(const char *v);

/* Process-wide values the scrape adds. A process_* value that is NaN is left out of the
 * scrape (rem_metrics_process_read could not read it: no /proc in an empty root). */
struct rem_metrics_process {
    const char *version, *commit;
    double cpu_seconds;
    double resident_bytes, virtual_bytes;
    double open_fds, max_fds;
    double start_time_seconds;
    const int8_t *upstream_healthy; /* per upstream: -1 no health check, 0, 1; may be NULL */
    bool draining;                  /* a drain is in progress (remora_draining) */
    const char *config_hash;        /* the active generation's (remora_config_info); may be NULL */
    uint64_t config_generation;     /* 1 at start, +1 per successful reload (0: not shown) */
    uint64_t reloads_ok, reloads_failed;
    double last_reload_success; /* Unix time of the last successful load (start included) */
    /* Shown with config_generation: reloads a TLS file change asked for, and the notAfter
     * (Unix seconds) of each certificate remora serves, presents or trusts, tls_listeners[i]
     * naming it (label cert: listener/NAME, listener/NAME/client_ca, upstream/NAME[/ca]). */
    uint64_t tls_cert_reloads_ok, tls_cert_reloads_failed;
    const char *const *tls_listeners;
    const double *tls_not_after;
    size_t n_tls;
};

/* Fills the process_* values from /proc, getrusage and getrlimit; each one that cannot be
 * read is NaN. */
void rem_metrics_process_read(struct rem_metrics_process *p);

enum rem_expo_format {
    REM_EXPO_PROMETHEUS = 0, /* text/plain; version=0.0.4 */
    REM_EXPO_OPENMETRICS,    /* application/openmetrics-text; version=1.0.0 */
};

/* Picks the format from an Accept header (NULL: Prometheus text). */
enum rem_expo_format rem_metrics_format_for(const char *accept);
const char *rem_metrics_content_type(enum rem_expo_format f);

/* Renders the sum of the views (one per worker) in the given format and appends it to out.
 * {route,code} series appear once they have an observation; per-route gauges and byte counters
 * always appear. Returns 0 or -REM_E_NOMEM. */
int rem_metrics_render(struct evbuffer *out, const struct rem_metrics_layout *l,
                       const struct rem_metrics_view *views, size_t n_views,
                       const struct rem_metrics_process *proc, enum rem_expo_format fmt);

#endif
