/* SPDX-License-Identifier: Apache-2.0
 * test_metrics: unit tests for metrics.h: a layout built from a loaded config, two worker shards
 * written the way workers write them (REM_M_ADD, rem_hist_record), and the scrape's output
 * checked byte for byte in the Prometheus text format 0.0.4 and OpenMetrics 1.0, plus label
 * escaping, cumulative buckets, a line-level syntax check of every exposition, and Accept
 * negotiation. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "config.h"
#include "error.h"
#include "histogram.h"
#include "metrics.h"

#define MS 1000000ull
#define US 1000ull
#define NS_PER_S 1000000000ull

/* ---- fixtures ----------------------------------------------------------------------------- */

static struct rem_config *load(const char *yaml)
{
    struct rem_config_diag diag = {0};
    struct rem_config *cfg = rem_config_load_string(yaml, "test", &diag);

    for (size_t i = 0; i < diag.n; i++)
        print_error("%s\n", diag.msgs[i]);
    rem_config_diag_dispose(&diag);
    assert_non_null(cfg);
    return cfg;
}

static const char small_yaml[] = "upstreams:\n"
                                 "  - name: app\n"
                                 "    endpoints: [\"127.0.0.1:8080\"]\n"
                                 "routes:\n"
                                 "  - name: api\n"
                                 "    upstream: app\n"
                                 "metrics:\n"
                                 "  buckets: [0.005, 0.1, 1]\n";

/* A worker's metrics as the tests build them: the process-wide shard plus one object per route
 * and upstream of the layout, in arrays, and the view the scrape gets of them. */
struct tshard {
    struct rem_metrics_shard g;
    struct rem_route_metrics *routes;
    struct rem_route_hist *hists;
    struct rem_upstream_metrics *upstreams;
    const struct rem_route_metrics **vr;
    const struct rem_route_hist **vh;
    const struct rem_upstream_metrics **vu;
    struct rem_metrics_view view;
};

static struct tshard *tshard_new(const struct rem_metrics_layout *l)
{
    struct tshard *t = calloc(1, sizeof(*t));
    size_t nu = l->n_upstreams ? l->n_upstreams : 1;
    assert_non_null(t);
    t->routes = calloc(l->n_routes, sizeof(*t->routes));
    t->hists = calloc(l->n_routes, sizeof(*t->hists));
    t->upstreams = calloc(nu, sizeof(*t->upstreams));
    t->vr = calloc(l->n_routes, sizeof(*t->vr));
    t->vh = calloc(l->n_routes, sizeof(*t->vh));
    t->vu = calloc(nu, sizeof(*t->vu));
    assert_true(t->routes && t->hists && t->upstreams && t->vr && t->vh && t->vu);
    for (size_t i = 0; i < l->n_routes; i++) {
        t->vr[i] = &t->routes[i];
        t->vh[i] = &t->hists[i];
    }
    for (size_t i = 0; i < l->n_upstreams; i++)
        t->vu[i] = &t->upstreams[i];
    t->view = (struct rem_metrics_view){&t->g, t->vr, t->vh, t->vu, t->vu};
    return t;
}

static void tshard_free(struct tshard *t)
{
    if (!t)
        return;
    rem_metrics_layout_unref(t->g.tls_ml); /* rem_metrics_shard_free's part */
    free(t->routes);
    free(t->hists);
    free(t->upstreams);
    free(t->vr);
    free(t->vh);
    free(t->vu);
    free(t);
}

/* The views of the fixture's shards, for rem_metrics_render. */
static const struct rem_metrics_view *views(struct tshard *const *sh, size_t n)
{
    static struct rem_metrics_view v[2];
    for (size_t i = 0; i < n && i < 2; i++)
        v[i] = sh[i]->view;
    return v;
}

/* Everything a test allocates hangs off its fixture, so a failing assertion (a longjmp out of
 * the test) still frees it in teardown. */
struct fix {
    struct rem_config *cfg;
    struct rem_metrics_layout *l;
    struct tshard *sh[2];
    struct evbuffer *buf;
    char *out[4];
    size_t n_out;
};

static void fix_init(struct fix *f, const char *yaml)
{
    f->cfg = load(yaml);
    f->l = rem_metrics_layout_new(f->cfg);
    assert_non_null(f->l);
    f->sh[0] = tshard_new(f->l);
    f->sh[1] = tshard_new(f->l);
}

static int setup(void **state)
{
    *state = calloc(1, sizeof(struct fix));
    return *state ? 0 : -1;
}

static int teardown(void **state)
{
    struct fix *f = *state;

    tshard_free(f->sh[0]);
    tshard_free(f->sh[1]);
    rem_metrics_layout_free(f->l);
    rem_config_unref(f->cfg);
    if (f->buf)
        evbuffer_free(f->buf);
    for (size_t i = 0; i < f->n_out; i++)
        free(f->out[i]);
    free(f);
    return 0;
}

/* What a worker does when a stream ends. */
static void finish_request(struct tshard *s, const struct rem_metrics_layout *l, size_t route,
                           int status, uint64_t ns, uint64_t in_bytes, uint64_t out_bytes)
{
    enum rem_code_class c = rem_code_class_of(status);

    REM_M_ADD(s->routes[route].requests[c], 1);
    REM_M_ADD(s->routes[route].request_bytes, in_bytes);
    REM_M_ADD(s->routes[route].response_bytes, out_bytes);
    rem_hist_record(&s->hists[route].duration[c], &l->route_hist[route], ns);
}

/* The small case: route 0 "api", upstream 0 "app", buckets 0.005 0.1 1, two shards. */
static void record_small(struct fix *f)
{
    struct tshard *a = f->sh[0], *b = f->sh[1];

    /* shard a: one 200 in 3 ms; shard b: a 204 in 250 ms, a 503 after 2 s, one in flight. */
    REM_M_ADD(a->routes[0].in_flight, 1);
    finish_request(a, f->l, 0, 200, 3 * MS, 100, 2000);
    REM_M_ADD(a->routes[0].in_flight, -1);
    REM_M_ADD(b->routes[0].in_flight, 1);
    finish_request(b, f->l, 0, 204, 250 * MS, 50, 10);
    REM_M_ADD(b->routes[0].in_flight, 1);
    finish_request(b, f->l, 0, 503, 2 * NS_PER_S, 0, 0);
    REM_M_ADD(b->routes[0].in_flight, -1);

    rem_hist_record(&a->upstreams[0].response_duration, &f->l->upstream_hist, 2 * MS);
    rem_hist_record(&a->upstreams[0].connect_duration, &f->l->upstream_hist, 500 * US);
    REM_M_ADD(a->upstreams[0].active, 1);
    REM_M_ADD(b->upstreams[0].idle, 2);
    REM_M_ADD(b->upstreams[0].connect_failures[REM_CONNFAIL_REFUSED], 1);

    REM_M_ADD(a->g.downstream_connections, 1);
    REM_M_ADD(b->g.downstream_connections, 2);
    REM_M_ADD(a->upstreams[0].endpoints, 2);
    REM_M_ADD(b->upstreams[0].endpoints, 3);
    REM_M_ADD(a->g.downstream_connections_total, 5);
    REM_M_ADD(b->g.downstream_connections_total, 7);
}

static const int8_t healthy_one[] = {1};

static void small_proc(struct rem_metrics_process *p)
{
    memset(p, 0, sizeof(*p));
    p->version = "0.1.0";
    p->commit = "abc123";
    p->cpu_seconds = 1.25;
    p->resident_bytes = 123456789;
    p->virtual_bytes = 2e9;
    p->open_fds = 12;
    p->max_fds = 1024;
    p->start_time_seconds = 1700000000.5;
    p->upstream_healthy = healthy_one;
}

/* Drains f->buf into a NUL-terminated string owned by the fixture. */
static char *take(struct fix *f)
{
    size_t n = evbuffer_get_length(f->buf);
    char *s = malloc(n + 1);

    assert_non_null(s);
    assert_true(f->n_out < sizeof(f->out) / sizeof(f->out[0]));
    f->out[f->n_out++] = s;
    assert_int_equal(evbuffer_remove(f->buf, s, n), (int)n);
    s[n] = '\0';
    return s;
}

/* Renders a scrape; the text is owned by the fixture. */
static char *render(struct fix *f, size_t n_shards, const struct rem_metrics_process *p,
                    enum rem_expo_format fmt)
{
    if (!f->buf)
        f->buf = evbuffer_new();
    assert_non_null(f->buf);
    assert_int_equal(rem_metrics_render(f->buf, f->l, views(f->sh, n_shards), n_shards, p, fmt), 0);
    return take(f);
}

/* Byte comparison that points at the first differing line. */
static void assert_text_equal(const char *got, const char *want)
{
    if (strcmp(got, want) == 0)
        return;
    size_t i = 0, line = 1, bol = 0;
    while (got[i] && got[i] == want[i]) {
        if (got[i] == '\n') {
            line++;
            bol = i + 1;
        }
        i++;
    }
    const char *ge = strchr(got + bol, '\n'), *we = strchr(want + bol, '\n');
    int gl = ge ? (int)(ge - got - bol) : (int)strlen(got + bol);
    int wl = we ? (int)(we - want - bol) : (int)strlen(want + bol);
    fail_msg("exposition differs at line %zu:\n  got:  %.*s\n  want: %.*s", line, gl, got + bol, wl,
             want + bol);
}

/* The Prometheus text format 0.0.4 for the small case. HELP texts are remora's own; the
 * families are those of docs/metrics.md. */
static const char small_text[] =
    "# HELP remora_request_duration_seconds Time from the first byte of the request head to the "
    "last byte of the response.\n"
    "# TYPE remora_request_duration_seconds histogram\n"
    "remora_request_duration_seconds_bucket{route=\"api\",code=\"2xx\",le=\"0.005\"} 1\n"
    "remora_request_duration_seconds_bucket{route=\"api\",code=\"2xx\",le=\"0.1\"} 1\n"
    "remora_request_duration_seconds_bucket{route=\"api\",code=\"2xx\",le=\"1\"} 2\n"
    "remora_request_duration_seconds_bucket{route=\"api\",code=\"2xx\",le=\"+Inf\"} 2\n"
    "remora_request_duration_seconds_sum{route=\"api\",code=\"2xx\"} 0.253\n"
    "remora_request_duration_seconds_count{route=\"api\",code=\"2xx\"} 2\n"
    "remora_request_duration_seconds_bucket{route=\"api\",code=\"5xx\",le=\"0.005\"} 0\n"
    "remora_request_duration_seconds_bucket{route=\"api\",code=\"5xx\",le=\"0.1\"} 0\n"
    "remora_request_duration_seconds_bucket{route=\"api\",code=\"5xx\",le=\"1\"} 0\n"
    "remora_request_duration_seconds_bucket{route=\"api\",code=\"5xx\",le=\"+Inf\"} 1\n"
    "remora_request_duration_seconds_sum{route=\"api\",code=\"5xx\"} 2\n"
    "remora_request_duration_seconds_count{route=\"api\",code=\"5xx\"} 1\n"
    "# HELP remora_requests_total Requests answered, by route and status class.\n"
    "# TYPE remora_requests_total counter\n"
    "remora_requests_total{route=\"api\",code=\"2xx\"} 2\n"
    "remora_requests_total{route=\"api\",code=\"5xx\"} 1\n"
    "# HELP remora_requests_rejected_total Requests refused by admission control, by route and "
    "reason.\n"
    "# TYPE remora_requests_rejected_total counter\n"
    "remora_requests_rejected_total{route=\"api\",reason=\"queue_full\"} 0\n"
    "remora_requests_rejected_total{route=\"api\",reason=\"queue_timeout\"} 0\n"
    "# HELP remora_requests_in_flight Requests routed and not yet answered.\n"
    "# TYPE remora_requests_in_flight gauge\n"
    "remora_requests_in_flight{route=\"api\"} 1\n"
    "# HELP remora_request_bytes_total Bytes received from downstream clients.\n"
    "# TYPE remora_request_bytes_total counter\n"
    "remora_request_bytes_total{route=\"api\"} 150\n"
    "# HELP remora_response_bytes_total Bytes sent to downstream clients.\n"
    "# TYPE remora_response_bytes_total counter\n"
    "remora_response_bytes_total{route=\"api\"} 2010\n"
    "# HELP remora_tunnels_total Tunnels opened (WebSocket and other Upgrades, CONNECT), by "
    "route.\n"
    "# TYPE remora_tunnels_total counter\n"
    "remora_tunnels_total{route=\"api\"} 0\n"
    "# HELP remora_upstream_response_duration_seconds Time from sending the request head upstream "
    "to the end of the upstream response.\n"
    "# TYPE remora_upstream_response_duration_seconds histogram\n"
    "remora_upstream_response_duration_seconds_bucket{upstream=\"app\",le=\"0.005\"} 1\n"
    "remora_upstream_response_duration_seconds_bucket{upstream=\"app\",le=\"0.1\"} 1\n"
    "remora_upstream_response_duration_seconds_bucket{upstream=\"app\",le=\"1\"} 1\n"
    "remora_upstream_response_duration_seconds_bucket{upstream=\"app\",le=\"+Inf\"} 1\n"
    "remora_upstream_response_duration_seconds_sum{upstream=\"app\"} 0.002\n"
    "remora_upstream_response_duration_seconds_count{upstream=\"app\"} 1\n"
    "# HELP remora_upstream_connect_duration_seconds Time to establish upstream connections.\n"
    "# TYPE remora_upstream_connect_duration_seconds histogram\n"
    "remora_upstream_connect_duration_seconds_bucket{upstream=\"app\",le=\"0.005\"} 1\n"
    "remora_upstream_connect_duration_seconds_bucket{upstream=\"app\",le=\"0.1\"} 1\n"
    "remora_upstream_connect_duration_seconds_bucket{upstream=\"app\",le=\"1\"} 1\n"
    "remora_upstream_connect_duration_seconds_bucket{upstream=\"app\",le=\"+Inf\"} 1\n"
    "remora_upstream_connect_duration_seconds_sum{upstream=\"app\"} 0.0005\n"
    "remora_upstream_connect_duration_seconds_count{upstream=\"app\"} 1\n"
    "# HELP remora_queue_wait_duration_seconds Time requests waited in the admission queue "
    "(admitted or timed out).\n"
    "# TYPE remora_queue_wait_duration_seconds histogram\n"
    "remora_queue_wait_duration_seconds_bucket{upstream=\"app\",le=\"0.005\"} 0\n"
    "remora_queue_wait_duration_seconds_bucket{upstream=\"app\",le=\"0.1\"} 0\n"
    "remora_queue_wait_duration_seconds_bucket{upstream=\"app\",le=\"1\"} 0\n"
    "remora_queue_wait_duration_seconds_bucket{upstream=\"app\",le=\"+Inf\"} 0\n"
    "remora_queue_wait_duration_seconds_sum{upstream=\"app\"} 0\n"
    "remora_queue_wait_duration_seconds_count{upstream=\"app\"} 0\n"
    "# HELP remora_upstream_connections Open upstream connections by state.\n"
    "# TYPE remora_upstream_connections gauge\n"
    "remora_upstream_connections{upstream=\"app\",state=\"active\"} 1\n"
    "remora_upstream_connections{upstream=\"app\",state=\"idle\"} 2\n"
    "# HELP remora_upstream_pending_requests Requests waiting in the admission queue.\n"
    "# TYPE remora_upstream_pending_requests gauge\n"
    "remora_upstream_pending_requests{upstream=\"app\"} 0\n"
    "# HELP remora_upstream_requests_in_flight Requests holding an admission slot.\n"
    "# TYPE remora_upstream_requests_in_flight gauge\n"
    "remora_upstream_requests_in_flight{upstream=\"app\"} 0\n"
    "# HELP remora_upstream_concurrency_limit Current admission limit (requests in flight).\n"
    "# TYPE remora_upstream_concurrency_limit gauge\n"
    "remora_upstream_concurrency_limit{upstream=\"app\"} 0\n"
    "# HELP remora_upstream_connect_failures_total Failed upstream connection attempts by "
    "reason.\n"
    "# TYPE remora_upstream_connect_failures_total counter\n"
    "remora_upstream_connect_failures_total{upstream=\"app\",reason=\"refused\"} 1\n"
    "remora_upstream_connect_failures_total{upstream=\"app\",reason=\"timeout\"} 0\n"
    "remora_upstream_connect_failures_total{upstream=\"app\",reason=\"error\"} 0\n"
    "remora_upstream_connect_failures_total{upstream=\"app\",reason=\"tls\"} 0\n"
    "# HELP remora_upstream_endpoints Endpoints (addresses) the upstream balances over.\n"
    "# TYPE remora_upstream_endpoints gauge\n"
    "remora_upstream_endpoints{upstream=\"app\"} 3\n"
    "# HELP remora_upstream_healthy 1 when the upstream's health check passes, else 0.\n"
    "# TYPE remora_upstream_healthy gauge\n"
    "remora_upstream_healthy{upstream=\"app\"} 1\n"
    "# HELP remora_downstream_connections Open downstream connections.\n"
    "# TYPE remora_downstream_connections gauge\n"
    "remora_downstream_connections 3\n"
    "# HELP remora_downstream_connections_total Downstream connections accepted.\n"
    "# TYPE remora_downstream_connections_total counter\n"
    "remora_downstream_connections_total 12\n"
    "# HELP remora_downstream_streams_active HTTP/2 streams open on downstream connections.\n"
    "# TYPE remora_downstream_streams_active gauge\n"
    "remora_downstream_streams_active 0\n"
    "# HELP remora_downstream_streams_total Downstream streams (requests) started, by protocol.\n"
    "# TYPE remora_downstream_streams_total counter\n"
    "remora_downstream_streams_total{proto=\"http1\"} 0\n"
    "remora_downstream_streams_total{proto=\"h2c\"} 0\n"
    "remora_downstream_streams_total{proto=\"h2\"} 0\n"
    "# HELP remora_http2_resets_total HTTP/2 RST_STREAM frames sent or received, by side and error "
    "code.\n"
    "# TYPE remora_http2_resets_total counter\n"
    "# HELP remora_http2_goaway_total HTTP/2 GOAWAY frames sent or received, by side and error "
    "code.\n"
    "# TYPE remora_http2_goaway_total counter\n"
    "remora_http2_goaway_total{side=\"downstream\",reason=\"no_error\"} 0\n"
    "remora_http2_goaway_total{side=\"upstream\",reason=\"no_error\"} 0\n"
    "# HELP remora_drain_cut_total Requests cut because they were still in flight at "
    "drain.timeout.\n"
    "# TYPE remora_drain_cut_total counter\n"
    "remora_drain_cut_total 0\n"
    "# HELP remora_tunnels_active Open tunnels (WebSocket and other Upgrades, CONNECT).\n"
    "# TYPE remora_tunnels_active gauge\n"
    "remora_tunnels_active 0\n"
    "# HELP remora_downstream_headers_dropped_total Request fields not forwarded to the app, by "
    "reason "
    "(limits.headers_with_underscores).\n"
    "# TYPE remora_downstream_headers_dropped_total counter\n"
    "remora_downstream_headers_dropped_total{reason=\"underscore\"} 0\n"
    "# HELP remora_draining 1 while a drain (SIGTERM, POST /drain) runs.\n"
    "# TYPE remora_draining gauge\n"
    "remora_draining 0\n"
    "# HELP remora_build_info remora's version and commit.\n"
    "# TYPE remora_build_info gauge\n"
    "remora_build_info{version=\"0.1.0\",commit=\"abc123\"} 1\n"
    "# HELP process_cpu_seconds_total Total user and system CPU time in seconds.\n"
    "# TYPE process_cpu_seconds_total counter\n"
    "process_cpu_seconds_total 1.25\n"
    "# HELP process_resident_memory_bytes Resident memory size in bytes.\n"
    "# TYPE process_resident_memory_bytes gauge\n"
    "process_resident_memory_bytes 1.23456789e+08\n"
    "# HELP process_virtual_memory_bytes Virtual memory size in bytes.\n"
    "# TYPE process_virtual_memory_bytes gauge\n"
    "process_virtual_memory_bytes 2e+09\n"
    "# HELP process_open_fds Number of open file descriptors.\n"
    "# TYPE process_open_fds gauge\n"
    "process_open_fds 12\n"
    "# HELP process_max_fds Maximum number of open file descriptors.\n"
    "# TYPE process_max_fds gauge\n"
    "process_max_fds 1024\n"
    "# HELP process_start_time_seconds Start time of the process since the Unix epoch in "
    "seconds.\n"
    "# TYPE process_start_time_seconds gauge\n"
    "process_start_time_seconds 1.7000000005e+09\n";

/* OpenMetrics 1.0 for the same data: counter families lose _total (the samples keep it), `le`
 * values take the canonical form (Go's %g plus ".0" when there is no '.' or exponent: spec
 * section "Considerations: Canonical Numbers", as client_golang writes them), and `# EOF` ends
 * the exposition. remora_downstream_connections_total cannot be a counter family here (its
 * family name would clash with the gauge), so it is `unknown` under its full name. */
static const char small_om[] =
    "# HELP remora_request_duration_seconds Time from the first byte of the request head to the "
    "last byte of the response.\n"
    "# TYPE remora_request_duration_seconds histogram\n"
    "remora_request_duration_seconds_bucket{route=\"api\",code=\"2xx\",le=\"0.005\"} 1\n"
    "remora_request_duration_seconds_bucket{route=\"api\",code=\"2xx\",le=\"0.1\"} 1\n"
    "remora_request_duration_seconds_bucket{route=\"api\",code=\"2xx\",le=\"1.0\"} 2\n"
    "remora_request_duration_seconds_bucket{route=\"api\",code=\"2xx\",le=\"+Inf\"} 2\n"
    "remora_request_duration_seconds_sum{route=\"api\",code=\"2xx\"} 0.253\n"
    "remora_request_duration_seconds_count{route=\"api\",code=\"2xx\"} 2\n"
    "remora_request_duration_seconds_bucket{route=\"api\",code=\"5xx\",le=\"0.005\"} 0\n"
    "remora_request_duration_seconds_bucket{route=\"api\",code=\"5xx\",le=\"0.1\"} 0\n"
    "remora_request_duration_seconds_bucket{route=\"api\",code=\"5xx\",le=\"1.0\"} 0\n"
    "remora_request_duration_seconds_bucket{route=\"api\",code=\"5xx\",le=\"+Inf\"} 1\n"
    "remora_request_duration_seconds_sum{route=\"api\",code=\"5xx\"} 2\n"
    "remora_request_duration_seconds_count{route=\"api\",code=\"5xx\"} 1\n"
    "# HELP remora_requests Requests answered, by route and status class.\n"
    "# TYPE remora_requests counter\n"
    "remora_requests_total{route=\"api\",code=\"2xx\"} 2\n"
    "remora_requests_total{route=\"api\",code=\"5xx\"} 1\n"
    "# HELP remora_requests_rejected Requests refused by admission control, by route and reason.\n"
    "# TYPE remora_requests_rejected counter\n"
    "remora_requests_rejected_total{route=\"api\",reason=\"queue_full\"} 0\n"
    "remora_requests_rejected_total{route=\"api\",reason=\"queue_timeout\"} 0\n"
    "# HELP remora_requests_in_flight Requests routed and not yet answered.\n"
    "# TYPE remora_requests_in_flight gauge\n"
    "remora_requests_in_flight{route=\"api\"} 1\n"
    "# HELP remora_request_bytes Bytes received from downstream clients.\n"
    "# TYPE remora_request_bytes counter\n"
    "remora_request_bytes_total{route=\"api\"} 150\n"
    "# HELP remora_response_bytes Bytes sent to downstream clients.\n"
    "# TYPE remora_response_bytes counter\n"
    "remora_response_bytes_total{route=\"api\"} 2010\n"
    "# HELP remora_tunnels Tunnels opened (WebSocket and other Upgrades, CONNECT), by route.\n"
    "# TYPE remora_tunnels counter\n"
    "remora_tunnels_total{route=\"api\"} 0\n"
    "# HELP remora_upstream_response_duration_seconds Time from sending the request head upstream "
    "to the end of the upstream response.\n"
    "# TYPE remora_upstream_response_duration_seconds histogram\n"
    "remora_upstream_response_duration_seconds_bucket{upstream=\"app\",le=\"0.005\"} 1\n"
    "remora_upstream_response_duration_seconds_bucket{upstream=\"app\",le=\"0.1\"} 1\n"
    "remora_upstream_response_duration_seconds_bucket{upstream=\"app\",le=\"1.0\"} 1\n"
    "remora_upstream_response_duration_seconds_bucket{upstream=\"app\",le=\"+Inf\"} 1\n"
    "remora_upstream_response_duration_seconds_sum{upstream=\"app\"} 0.002\n"
    "remora_upstream_response_duration_seconds_count{upstream=\"app\"} 1\n"
    "# HELP remora_upstream_connect_duration_seconds Time to establish upstream connections.\n"
    "# TYPE remora_upstream_connect_duration_seconds histogram\n"
    "remora_upstream_connect_duration_seconds_bucket{upstream=\"app\",le=\"0.005\"} 1\n"
    "remora_upstream_connect_duration_seconds_bucket{upstream=\"app\",le=\"0.1\"} 1\n"
    "remora_upstream_connect_duration_seconds_bucket{upstream=\"app\",le=\"1.0\"} 1\n"
    "remora_upstream_connect_duration_seconds_bucket{upstream=\"app\",le=\"+Inf\"} 1\n"
    "remora_upstream_connect_duration_seconds_sum{upstream=\"app\"} 0.0005\n"
    "remora_upstream_connect_duration_seconds_count{upstream=\"app\"} 1\n"
    "# HELP remora_queue_wait_duration_seconds Time requests waited in the admission queue "
    "(admitted or timed out).\n"
    "# TYPE remora_queue_wait_duration_seconds histogram\n"
    "remora_queue_wait_duration_seconds_bucket{upstream=\"app\",le=\"0.005\"} 0\n"
    "remora_queue_wait_duration_seconds_bucket{upstream=\"app\",le=\"0.1\"} 0\n"
    "remora_queue_wait_duration_seconds_bucket{upstream=\"app\",le=\"1.0\"} 0\n"
    "remora_queue_wait_duration_seconds_bucket{upstream=\"app\",le=\"+Inf\"} 0\n"
    "remora_queue_wait_duration_seconds_sum{upstream=\"app\"} 0\n"
    "remora_queue_wait_duration_seconds_count{upstream=\"app\"} 0\n"
    "# HELP remora_upstream_connections Open upstream connections by state.\n"
    "# TYPE remora_upstream_connections gauge\n"
    "remora_upstream_connections{upstream=\"app\",state=\"active\"} 1\n"
    "remora_upstream_connections{upstream=\"app\",state=\"idle\"} 2\n"
    "# HELP remora_upstream_pending_requests Requests waiting in the admission queue.\n"
    "# TYPE remora_upstream_pending_requests gauge\n"
    "remora_upstream_pending_requests{upstream=\"app\"} 0\n"
    "# HELP remora_upstream_requests_in_flight Requests holding an admission slot.\n"
    "# TYPE remora_upstream_requests_in_flight gauge\n"
    "remora_upstream_requests_in_flight{upstream=\"app\"} 0\n"
    "# HELP remora_upstream_concurrency_limit Current admission limit (requests in flight).\n"
    "# TYPE remora_upstream_concurrency_limit gauge\n"
    "remora_upstream_concurrency_limit{upstream=\"app\"} 0\n"
    "# HELP remora_upstream_connect_failures Failed upstream connection attempts by reason.\n"
    "# TYPE remora_upstream_connect_failures counter\n"
    "remora_upstream_connect_failures_total{upstream=\"app\",reason=\"refused\"} 1\n"
    "remora_upstream_connect_failures_total{upstream=\"app\",reason=\"timeout\"} 0\n"
    "remora_upstream_connect_failures_total{upstream=\"app\",reason=\"error\"} 0\n"
    "remora_upstream_connect_failures_total{upstream=\"app\",reason=\"tls\"} 0\n"
    "# HELP remora_upstream_endpoints Endpoints (addresses) the upstream balances over.\n"
    "# TYPE remora_upstream_endpoints gauge\n"
    "remora_upstream_endpoints{upstream=\"app\"} 3\n"
    "# HELP remora_upstream_healthy 1 when the upstream's health check passes, else 0.\n"
    "# TYPE remora_upstream_healthy gauge\n"
    "remora_upstream_healthy{upstream=\"app\"} 1\n"
    "# HELP remora_downstream_connections Open downstream connections.\n"
    "# TYPE remora_downstream_connections gauge\n"
    "remora_downstream_connections 3\n"
    "# HELP remora_downstream_connections_total Downstream connections accepted.\n"
    "# TYPE remora_downstream_connections_total unknown\n"
    "remora_downstream_connections_total 12\n"
    "# HELP remora_downstream_streams_active HTTP/2 streams open on downstream connections.\n"
    "# TYPE remora_downstream_streams_active gauge\n"
    "remora_downstream_streams_active 0\n"
    "# HELP remora_downstream_streams Downstream streams (requests) started, by protocol.\n"
    "# TYPE remora_downstream_streams counter\n"
    "remora_downstream_streams_total{proto=\"http1\"} 0\n"
    "remora_downstream_streams_total{proto=\"h2c\"} 0\n"
    "remora_downstream_streams_total{proto=\"h2\"} 0\n"
    "# HELP remora_http2_resets HTTP/2 RST_STREAM frames sent or received, by side and error "
    "code.\n"
    "# TYPE remora_http2_resets counter\n"
    "# HELP remora_http2_goaway HTTP/2 GOAWAY frames sent or received, by side and error code.\n"
    "# TYPE remora_http2_goaway counter\n"
    "remora_http2_goaway_total{side=\"downstream\",reason=\"no_error\"} 0\n"
    "remora_http2_goaway_total{side=\"upstream\",reason=\"no_error\"} 0\n"
    "# HELP remora_drain_cut Requests cut because they were still in flight at "
    "drain.timeout.\n"
    "# TYPE remora_drain_cut counter\n"
    "remora_drain_cut_total 0\n"
    "# HELP remora_tunnels_active Open tunnels (WebSocket and other Upgrades, CONNECT).\n"
    "# TYPE remora_tunnels_active gauge\n"
    "remora_tunnels_active 0\n"
    "# HELP remora_downstream_headers_dropped Request fields not forwarded to the app, by reason "
    "(limits.headers_with_underscores).\n"
    "# TYPE remora_downstream_headers_dropped counter\n"
    "remora_downstream_headers_dropped_total{reason=\"underscore\"} 0\n"
    "# HELP remora_draining 1 while a drain (SIGTERM, POST /drain) runs.\n"
    "# TYPE remora_draining gauge\n"
    "remora_draining 0\n"
    "# HELP remora_build_info remora's version and commit.\n"
    "# TYPE remora_build_info gauge\n"
    "remora_build_info{version=\"0.1.0\",commit=\"abc123\"} 1\n"
    "# HELP process_cpu_seconds Total user and system CPU time in seconds.\n"
    "# TYPE process_cpu_seconds counter\n"
    "process_cpu_seconds_total 1.25\n"
    "# HELP process_resident_memory_bytes Resident memory size in bytes.\n"
    "# TYPE process_resident_memory_bytes gauge\n"
    "process_resident_memory_bytes 1.23456789e+08\n"
    "# HELP process_virtual_memory_bytes Virtual memory size in bytes.\n"
    "# TYPE process_virtual_memory_bytes gauge\n"
    "process_virtual_memory_bytes 2e+09\n"
    "# HELP process_open_fds Number of open file descriptors.\n"
    "# TYPE process_open_fds gauge\n"
    "process_open_fds 12\n"
    "# HELP process_max_fds Maximum number of open file descriptors.\n"
    "# TYPE process_max_fds gauge\n"
    "process_max_fds 1024\n"
    "# HELP process_start_time_seconds Start time of the process since the Unix epoch in "
    "seconds.\n"
    "# TYPE process_start_time_seconds gauge\n"
    "process_start_time_seconds 1.7000000005e+09\n"
    "# EOF\n";

/* ---- a line-level checker for both text formats ------------------------------------------- */

static bool name_char(char c, bool first)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':' ||
           (!first && c >= '0' && c <= '9');
}

/* Checks one sample line: name{label="escaped",...} value. Returns NULL or what is wrong. */
static const char *bad_sample(const char *p, const char *end)
{
    if (p == end || !name_char(*p, true))
        return "bad metric name";
    while (p < end && name_char(*p, false))
        p++;
    if (p < end && *p == '{') {
        p++;
        while (p < end && *p != '}') {
            if (!name_char(*p, true) || *p == ':')
                return "bad label name";
            while (p < end && name_char(*p, false) && *p != ':')
                p++;
            if (p + 1 >= end || p[0] != '=' || p[1] != '"')
                return "label without =\"";
            p += 2;
            while (p < end && *p != '"') {
                if (*p == '\\') {
                    if (p + 1 >= end || (p[1] != '\\' && p[1] != '"' && p[1] != 'n'))
                        return "bad escape in label value";
                    p++;
                }
                p++;
            }
            if (p >= end)
                return "unterminated label value";
            p++;
            if (p < end && *p == ',')
                p++;
            else if (p < end && *p != '}')
                return "junk after label value";
        }
        if (p >= end)
            return "unterminated label set";
        p++;
    }
    if (p >= end || *p != ' ')
        return "no space before the value";
    p++;
    char num[64];
    size_t n = (size_t)(end - p);
    if (n == 0 || n >= sizeof(num))
        return "bad value length";
    memcpy(num, p, n);
    num[n] = '\0';
    if (strcmp(num, "+Inf") == 0 || strcmp(num, "-Inf") == 0 || strcmp(num, "NaN") == 0)
        return NULL;
    char *e;
    (void)strtod(num, &e);
    if (*e != '\0' || strchr(num, ' ') != NULL)
        return "value is not a number";
    return NULL;
}

static void check_syntax(const char *text, bool om)
{
    const char *p = text;
    size_t line = 0;
    bool eof = false;

    assert_true(*text != '\0');
    assert_true(text[strlen(text) - 1] == '\n');
    while (*p) {
        const char *end = strchr(p, '\n');
        assert_non_null(end);
        line++;
        if (eof)
            fail_msg("line %zu after # EOF", line);
        if (end == p)
            fail_msg("line %zu is empty", line);
        if (memchr(p, '\r', (size_t)(end - p)))
            fail_msg("line %zu has a CR", line);
        if (*p == '#') {
            if (om && end - p == 5 && memcmp(p, "# EOF", 5) == 0)
                eof = true;
            else if (strncmp(p, "# HELP ", 7) != 0 && strncmp(p, "# TYPE ", 7) != 0)
                fail_msg("line %zu: comment that is neither HELP nor TYPE: %.*s", line,
                         (int)(end - p), p);
        } else {
            const char *why = bad_sample(p, end);
            if (why)
                fail_msg("line %zu: %s: %.*s", line, why, (int)(end - p), p);
        }
        p = end + 1;
    }
    assert_true(eof == om);
}

/* ---- (a) Prometheus text, byte for byte ---------------------------------------------------- */

static void test_render_text_exact(void **state)
{
    struct fix *f = *state;
    struct rem_metrics_process p;

    fix_init(f, small_yaml);
    record_small(f);
    small_proc(&p);
    char *got = render(f, 2, &p, REM_EXPO_PROMETHEUS);
    assert_text_equal(got, small_text);
    check_syntax(got, false);
}

static void test_render_leaves_out_unread_process_values(void **state)
{
    struct fix *f = *state;
    struct rem_metrics_process p;

    /* No /proc (an empty root filesystem): those series are absent, not a false 0. */
    fix_init(f, small_yaml);
    record_small(f);
    small_proc(&p);
    p.resident_bytes = p.virtual_bytes = p.open_fds = p.start_time_seconds = NAN;
    char *got = render(f, 2, &p, REM_EXPO_PROMETHEUS);
    assert_null(strstr(got, "process_resident_memory_bytes"));
    assert_null(strstr(got, "process_virtual_memory_bytes"));
    assert_null(strstr(got, "process_open_fds"));
    assert_null(strstr(got, "process_start_time_seconds"));
    assert_non_null(strstr(got, "\nprocess_cpu_seconds_total 1.25\n"));
    assert_non_null(strstr(got, "\nprocess_max_fds 1024\n"));
    check_syntax(got, false);
}

static void test_render_is_repeatable(void **state)
{
    struct fix *f = *state;
    struct rem_metrics_process p;

    /* A scrape reads, never resets: two scrapes of unchanged shards are identical. */
    fix_init(f, small_yaml);
    record_small(f);
    small_proc(&p);
    char *a = render(f, 2, &p, REM_EXPO_PROMETHEUS);
    char *b = render(f, 2, &p, REM_EXPO_PROMETHEUS);
    assert_string_equal(a, b);
}

static void test_render_appends(void **state)
{
    struct fix *f = *state;

    fix_init(f, small_yaml);
    f->buf = evbuffer_new();
    assert_non_null(f->buf);
    assert_int_equal(evbuffer_add(f->buf, "HEAD", 4), 0);
    assert_int_equal(
        rem_metrics_render(f->buf, f->l, views(f->sh, 2), 2, NULL, REM_EXPO_PROMETHEUS), 0);
    char *s = take(f);
    assert_memory_equal(s, "HEAD# HELP ", 11);
    check_syntax(s + 4, false);
}

static void test_render_empty_shards(void **state)
{
    struct fix *f = *state;

    /* No traffic: no {route,code} series; per-route gauges and counters of configured routes
     * still appear with 0; the unmatched route ("") stays out; upstream series appear. */
    fix_init(f, small_yaml);
    char *got = render(f, 2, NULL, REM_EXPO_PROMETHEUS);
    check_syntax(got, false);
    assert_null(strstr(got, "remora_request_duration_seconds_bucket"));
    assert_null(strstr(got, "remora_requests_total{"));
    assert_non_null(strstr(got, "\nremora_requests_in_flight{route=\"api\"} 0\n"));
    assert_non_null(strstr(got, "\nremora_request_bytes_total{route=\"api\"} 0\n"));
    assert_non_null(strstr(got, "\nremora_response_bytes_total{route=\"api\"} 0\n"));
    assert_null(strstr(got, "route=\"\""));
    assert_non_null(
        strstr(got, "\nremora_upstream_connect_duration_seconds_count{upstream=\"app\"} 0\n"));
    assert_non_null(strstr(got, "\nremora_downstream_connections 0\n"));
    /* No process values given: no process_* and no build info. */
    assert_null(strstr(got, "process_"));
    assert_null(strstr(got, "remora_build_info"));
    /* No health check configured anywhere: no remora_upstream_healthy family at all. */
    assert_null(strstr(got, "remora_upstream_healthy"));

    /* Zero shards is a valid (empty) sum. */
    got = render(f, 0, NULL, REM_EXPO_PROMETHEUS);
    check_syntax(got, false);
}

static void test_render_unmatched_route(void **state)
{
    struct fix *f = *state;

    /* Requests no route matched count under the extra last route, labelled route="". */
    fix_init(f, small_yaml);
    assert_int_equal(f->l->n_routes, 2);
    assert_string_equal(f->l->route_label[1], "");
    finish_request(f->sh[1], f->l, 1, 404, 1 * MS, 10, 20);
    char *got = render(f, 2, NULL, REM_EXPO_PROMETHEUS);
    check_syntax(got, false);
    assert_non_null(strstr(got, "\nremora_requests_total{route=\"\",code=\"4xx\"} 1\n"));
    assert_non_null(strstr(
        got, "\nremora_request_duration_seconds_bucket{route=\"\",code=\"4xx\",le=\"0.005\"} 1\n"));
    assert_non_null(strstr(got, "\nremora_requests_in_flight{route=\"\"} 0\n"));
    assert_non_null(strstr(got, "\nremora_request_bytes_total{route=\"\"} 10\n"));
    assert_non_null(strstr(got, "\nremora_response_bytes_total{route=\"\"} 20\n"));
}

static void test_render_code_classes(void **state)
{
    struct fix *f = *state;
    static const struct {
        int status;
        const char *code;
    } cases[] = {{0, "none"},  {99, "none"}, {100, "1xx"},  {101, "1xx"},
                 {200, "2xx"}, {302, "3xx"}, {404, "4xx"},  {499, "4xx"},
                 {503, "5xx"}, {599, "5xx"}, {600, "none"}, {-1, "none"}};
    char want[128];

    fix_init(f, small_yaml);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        finish_request(f->sh[i % 2], f->l, 0, cases[i].status, 1 * MS, 0, 0);
    char *got = render(f, 2, NULL, REM_EXPO_PROMETHEUS);
    check_syntax(got, false);
    static const char *const all[] = {"none", "1xx", "2xx", "3xx", "4xx", "5xx"};
    static const int count[] = {4, 2, 1, 1, 2, 2};
    for (size_t c = 0; c < 6; c++) {
        snprintf(want, sizeof(want), "\nremora_requests_total{route=\"api\",code=\"%s\"} %d\n",
                 all[c], count[c]);
        if (!strstr(got, want))
            fail_msg("missing %s", want + 1);
    }
}

static void test_render_route_buckets(void **state)
{
    struct fix *f = *state;

    /* A route's own buckets replace metrics.buckets for its series only. */
    fix_init(f, "upstreams:\n"
                "  - name: app\n"
                "    endpoints: [\"127.0.0.1:8080\"]\n"
                "routes:\n"
                "  - name: fast\n"
                "    upstream: app\n"
                "    buckets: [0.001, 0.002]\n"
                "  - name: slow\n"
                "    upstream: app\n"
                "metrics:\n"
                "  buckets: [0.5, 10]\n");
    finish_request(f->sh[0], f->l, 0, 200, 1500 * US, 0, 0);
    finish_request(f->sh[0], f->l, 1, 200, 1500 * US, 0, 0);
    char *got = render(f, 2, NULL, REM_EXPO_PROMETHEUS);
    check_syntax(got, false);
    assert_non_null(strstr(
        got, "\nremora_request_duration_seconds_bucket{route=\"fast\",code=\"2xx\",le=\"0.001\"} "
             "0\nremora_request_duration_seconds_bucket{route=\"fast\",code=\"2xx\",le=\"0.002\"} "
             "1\nremora_request_duration_seconds_bucket{route=\"fast\",code=\"2xx\",le=\"+Inf\"} "
             "1\n"));
    assert_non_null(strstr(
        got, "\nremora_request_duration_seconds_bucket{route=\"slow\",code=\"2xx\",le=\"0.5\"} "
             "1\nremora_request_duration_seconds_bucket{route=\"slow\",code=\"2xx\",le=\"10\"} "
             "1\nremora_request_duration_seconds_bucket{route=\"slow\",code=\"2xx\",le=\"+Inf\"} "
             "1\n"));
    assert_non_null(strstr(got, "remora_upstream_response_duration_seconds_bucket{upstream="
                                "\"app\",le=\"10\"} 0\n"));
}

static void test_render_health_states(void **state)
{
    struct fix *f = *state;
    struct rem_metrics_process p;
    static const int8_t health[] = {-1, 0, 1};

    /* Upstreams without a health check (-1) get no remora_upstream_healthy series. */
    fix_init(f, "upstreams:\n"
                "  - name: a\n"
                "    endpoints: [\"127.0.0.1:8080\"]\n"
                "  - name: b\n"
                "    endpoints: [\"127.0.0.1:8081\"]\n"
                "  - name: c\n"
                "    endpoints: [\"127.0.0.1:8082\"]\n");
    small_proc(&p);
    p.upstream_healthy = health;
    char *got = render(f, 2, &p, REM_EXPO_PROMETHEUS);
    check_syntax(got, false);
    assert_null(strstr(got, "remora_upstream_healthy{upstream=\"a\"}"));
    assert_non_null(strstr(got, "\nremora_upstream_healthy{upstream=\"b\"} 0\n"));
    assert_non_null(strstr(got, "\nremora_upstream_healthy{upstream=\"c\"} 1\n"));
}

/* ---- (b) OpenMetrics ------------------------------------------------------------------------ */

static void test_render_openmetrics_counters_and_eof(void **state)
{
    struct fix *f = *state;
    struct rem_metrics_process p;

    fix_init(f, small_yaml);
    record_small(f);
    small_proc(&p);
    char *got = render(f, 2, &p, REM_EXPO_OPENMETRICS);
    check_syntax(got, true);
    /* Counter families are named without _total; their samples keep it. */
    assert_non_null(strstr(got, "\n# TYPE remora_requests counter\n"));
    assert_non_null(strstr(got, "\nremora_requests_total{route=\"api\",code=\"2xx\"} 2\n"));
    assert_null(strstr(got, "# TYPE remora_requests_total"));
    assert_non_null(strstr(got, "\n# TYPE remora_request_bytes counter\n"));
    assert_non_null(strstr(got, "\n# TYPE remora_response_bytes counter\n"));
    assert_non_null(strstr(got, "\n# TYPE remora_upstream_connect_failures counter\n"));
    assert_non_null(strstr(got, "\n# TYPE process_cpu_seconds counter\n"));
    assert_non_null(strstr(got, "\nprocess_cpu_seconds_total 1.25\n"));
    /* The gauge keeps its family; the accepted-connections counter must not claim the same. */
    assert_non_null(strstr(got, "\n# TYPE remora_downstream_connections gauge\n"));
    assert_null(strstr(got, "# TYPE remora_downstream_connections counter"));
    /* Exactly one # EOF, last. */
    size_t n = strlen(got);
    assert_true(n > 6);
    assert_string_equal(got + n - 6, "# EOF\n");
    assert_true(strstr(got, "# EOF") == got + n - 6);

    /* The Prometheus text format has no EOF marker and keeps _total family names. */
    got = render(f, 2, &p, REM_EXPO_PROMETHEUS);
    assert_null(strstr(got, "# EOF"));
    assert_non_null(strstr(got, "\n# TYPE remora_requests_total counter\n"));
}

/* HTTP/2 series sum the shards; reset series appear once non-zero, by side and reason. */
static void test_render_http2(void **state)
{
    struct fix *f = *state;
    fix_init(f, small_yaml);
    REM_M_ADD(f->sh[0]->g.downstream_streams_active, 3);
    REM_M_ADD(f->sh[1]->g.downstream_streams_active, 1);
    REM_M_ADD(f->sh[0]->g.downstream_streams_total[1], 10);
    REM_M_ADD(f->sh[1]->g.downstream_streams_total[1], 5);
    REM_M_ADD(f->sh[1]->g.downstream_streams_total[0], 2);
    REM_M_ADD(f->sh[0]->g.downstream_streams_total[2], 7);
    REM_M_ADD(f->sh[0]->g.h2_resets[0][8], 4); /* cancel */
    REM_M_ADD(f->sh[1]->g.h2_resets[0][8], 1);
    REM_M_ADD(f->sh[1]->g.h2_resets[1][7], 2);              /* refused_stream */
    REM_M_ADD(f->sh[0]->g.h2_resets[1][REM_H2_REASONS], 6); /* unknown codes */
    REM_M_ADD(f->sh[0]->g.h2_goaway[0][0], 1);
    REM_M_ADD(f->sh[1]->g.h2_goaway[1][0], 2);
    REM_M_ADD(f->sh[0]->g.h2_goaway[1][11], 1); /* ENHANCE_YOUR_CALM */
    char *got = render(f, 2, NULL, REM_EXPO_PROMETHEUS);
    static const char *const want[] = {
        "\nremora_downstream_streams_active 4\n",
        "\nremora_downstream_streams_total{proto=\"http1\"} 2\n",
        "\nremora_downstream_streams_total{proto=\"h2c\"} 15\n",
        "\nremora_downstream_streams_total{proto=\"h2\"} 7\n",
        "\nremora_http2_resets_total{side=\"downstream\",reason=\"cancel\"} 5\n",
        "\nremora_http2_resets_total{side=\"upstream\",reason=\"refused_stream\"} 2\n",
        "\nremora_http2_resets_total{side=\"upstream\",reason=\"other\"} 6\n",
        "\nremora_http2_goaway_total{side=\"downstream\",reason=\"no_error\"} 1\n",
        "\nremora_http2_goaway_total{side=\"upstream\",reason=\"no_error\"} 2\n",
        "\nremora_http2_goaway_total{side=\"upstream\",reason=\"enhance_your_calm\"} 1\n",
    };
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++)
        if (!strstr(got, want[i]))
            fail_msg("missing %s", want[i] + 1);
    assert_null(strstr(got, "remora_http2_resets_total{side=\"downstream\",reason=\"no_error\""));
    assert_null(strstr(got, "remora_http2_goaway_total{side=\"downstream\",reason=\"cancel\""));
}

/* A TLS listener: the remora_tls_* families appear. */
static const char tls_yaml[] = "listeners:\n"
                               "  - name: in\n"
                               "    address: \"127.0.0.1:8443\"\n"
                               "    tls: {cert: a.pem, key: a.key}\n"
                               "upstreams:\n"
                               "  - name: app\n"
                               "    endpoints: [\"127.0.0.1:8080\"]\n"
                               "routes:\n"
                               "  - name: api\n"
                               "    upstream: app\n"
                               "metrics:\n"
                               "  buckets: [0.005, 0.1, 1]\n";

/* A layout of yaml whose only reference goes to shard s's TLS histogram. */
static void tls_layout_from(struct tshard *s, const char *yaml)
{
    struct rem_config *cfg = load(yaml);
    struct rem_metrics_layout *l = rem_metrics_layout_new(cfg);
    rem_config_unref(cfg);
    assert_non_null(l);
    rem_metrics_shard_tls_layout(&s->g, l);
    rem_metrics_layout_unref(l);
}

/* Handshakes by result, the duration histogram (metrics.buckets), resumptions and handshakes in
 * progress, summed over shards, between the HTTP/2 families and remora_drain_cut_total, in both
 * formats. */
static void test_render_tls(void **state)
{
    struct fix *f = *state;
    fix_init(f, tls_yaml);
    assert_true(f->l->tls);
    struct rem_metrics_shard *a = &f->sh[0]->g, *b = &f->sh[1]->g;
    rem_metrics_shard_tls_layout(a, f->l);
    rem_metrics_shard_tls_layout(b, f->l);
    rem_metrics_record_tls_handshake(a, REM_TLS_OK, 2 * MS, false);
    rem_metrics_record_tls_handshake(a, REM_TLS_OK, 30 * MS, true);
    rem_metrics_record_tls_handshake(a, REM_TLS_FAILED, 1 * MS, false);
    rem_metrics_record_tls_handshake(b, REM_TLS_OK, 500 * MS, false);
    rem_metrics_record_tls_handshake(b, REM_TLS_TIMEOUT, 10 * NS_PER_S, false);
    rem_metrics_record_tls_handshake(b, REM_TLS_TIMEOUT, 10 * NS_PER_S, false);
    rem_metrics_record_tls_handshake(b, REM_TLS_REFUSED, 0, false);
    REM_M_ADD(a->tls_handshakes_in_progress, 3);
    REM_M_ADD(b->tls_handshakes_in_progress, 2);
    static const char text[] =
        "remora_http2_goaway_total{side=\"upstream\",reason=\"no_error\"} 0\n"
        "# HELP remora_tls_handshakes_total TLS handshakes by side and result.\n"
        "# TYPE remora_tls_handshakes_total counter\n"
        "remora_tls_handshakes_total{side=\"downstream\",result=\"ok\"} 3\n"
        "remora_tls_handshakes_total{side=\"downstream\",result=\"failed\"} 1\n"
        "remora_tls_handshakes_total{side=\"downstream\",result=\"timeout\"} 2\n"
        "remora_tls_handshakes_total{side=\"downstream\",result=\"refused\"} 1\n"
        "remora_tls_handshakes_total{side=\"upstream\",result=\"ok\"} 0\n"
        "remora_tls_handshakes_total{side=\"upstream\",result=\"failed\"} 0\n"
        "remora_tls_handshakes_total{side=\"upstream\",result=\"timeout\"} 0\n"
        "# HELP remora_tls_handshake_duration_seconds Time from accepting (downstream) or "
        "starting (upstream) a connection to its completed TLS handshake, by side.\n"
        "# TYPE remora_tls_handshake_duration_seconds histogram\n"
        "remora_tls_handshake_duration_seconds_bucket{side=\"downstream\",le=\"0.005\"} 1\n"
        "remora_tls_handshake_duration_seconds_bucket{side=\"downstream\",le=\"0.1\"} 2\n"
        "remora_tls_handshake_duration_seconds_bucket{side=\"downstream\",le=\"1\"} 3\n"
        "remora_tls_handshake_duration_seconds_bucket{side=\"downstream\",le=\"+Inf\"} 3\n"
        "remora_tls_handshake_duration_seconds_sum{side=\"downstream\"} 0.532\n"
        "remora_tls_handshake_duration_seconds_count{side=\"downstream\"} 3\n"
        "remora_tls_handshake_duration_seconds_bucket{side=\"upstream\",le=\"0.005\"} 0\n"
        "remora_tls_handshake_duration_seconds_bucket{side=\"upstream\",le=\"0.1\"} 0\n"
        "remora_tls_handshake_duration_seconds_bucket{side=\"upstream\",le=\"1\"} 0\n"
        "remora_tls_handshake_duration_seconds_bucket{side=\"upstream\",le=\"+Inf\"} 0\n"
        "remora_tls_handshake_duration_seconds_sum{side=\"upstream\"} 0\n"
        "remora_tls_handshake_duration_seconds_count{side=\"upstream\"} 0\n"
        "# HELP remora_tls_resumed_total TLS handshakes that resumed a session, by side.\n"
        "# TYPE remora_tls_resumed_total counter\n"
        "remora_tls_resumed_total{side=\"downstream\"} 1\n"
        "remora_tls_resumed_total{side=\"upstream\"} 0\n"
        "# HELP remora_tls_handshakes_in_progress TLS handshakes under way, by side.\n"
        "# TYPE remora_tls_handshakes_in_progress gauge\n"
        "remora_tls_handshakes_in_progress{side=\"downstream\"} 5\n"
        "# HELP remora_drain_cut_total ";
    char *got = render(f, 2, NULL, REM_EXPO_PROMETHEUS);
    check_syntax(got, false);
    if (!strstr(got, text))
        fail_msg("no TLS block in:\n%s", got);
    static const char om[] =
        "remora_http2_goaway_total{side=\"upstream\",reason=\"no_error\"} 0\n"
        "# HELP remora_tls_handshakes TLS handshakes by side and result.\n"
        "# TYPE remora_tls_handshakes counter\n"
        "remora_tls_handshakes_total{side=\"downstream\",result=\"ok\"} 3\n"
        "remora_tls_handshakes_total{side=\"downstream\",result=\"failed\"} 1\n"
        "remora_tls_handshakes_total{side=\"downstream\",result=\"timeout\"} 2\n"
        "remora_tls_handshakes_total{side=\"downstream\",result=\"refused\"} 1\n"
        "remora_tls_handshakes_total{side=\"upstream\",result=\"ok\"} 0\n"
        "remora_tls_handshakes_total{side=\"upstream\",result=\"failed\"} 0\n"
        "remora_tls_handshakes_total{side=\"upstream\",result=\"timeout\"} 0\n"
        "# HELP remora_tls_handshake_duration_seconds Time from accepting (downstream) or "
        "starting (upstream) a connection to its completed TLS handshake, by side.\n"
        "# TYPE remora_tls_handshake_duration_seconds histogram\n"
        "remora_tls_handshake_duration_seconds_bucket{side=\"downstream\",le=\"0.005\"} 1\n"
        "remora_tls_handshake_duration_seconds_bucket{side=\"downstream\",le=\"0.1\"} 2\n"
        "remora_tls_handshake_duration_seconds_bucket{side=\"downstream\",le=\"1.0\"} 3\n"
        "remora_tls_handshake_duration_seconds_bucket{side=\"downstream\",le=\"+Inf\"} 3\n"
        "remora_tls_handshake_duration_seconds_sum{side=\"downstream\"} 0.532\n"
        "remora_tls_handshake_duration_seconds_count{side=\"downstream\"} 3\n"
        "remora_tls_handshake_duration_seconds_bucket{side=\"upstream\",le=\"0.005\"} 0\n"
        "remora_tls_handshake_duration_seconds_bucket{side=\"upstream\",le=\"0.1\"} 0\n"
        "remora_tls_handshake_duration_seconds_bucket{side=\"upstream\",le=\"1.0\"} 0\n"
        "remora_tls_handshake_duration_seconds_bucket{side=\"upstream\",le=\"+Inf\"} 0\n"
        "remora_tls_handshake_duration_seconds_sum{side=\"upstream\"} 0\n"
        "remora_tls_handshake_duration_seconds_count{side=\"upstream\"} 0\n"
        "# HELP remora_tls_resumed TLS handshakes that resumed a session, by side.\n"
        "# TYPE remora_tls_resumed counter\n"
        "remora_tls_resumed_total{side=\"downstream\"} 1\n"
        "remora_tls_resumed_total{side=\"upstream\"} 0\n"
        "# HELP remora_tls_handshakes_in_progress TLS handshakes under way, by side.\n"
        "# TYPE remora_tls_handshakes_in_progress gauge\n"
        "remora_tls_handshakes_in_progress{side=\"downstream\"} 5\n"
        "# HELP remora_drain_cut ";
    got = render(f, 2, NULL, REM_EXPO_OPENMETRICS);
    check_syntax(got, true);
    if (!strstr(got, om))
        fail_msg("no TLS block in:\n%s", got);
}

/* No TLS listener, no remora_tls_* family; a handshake histogram counts with the buckets of
 * the layout its shard last switched to: other buckets restart it from zero, and a shard whose
 * buckets are not the scrape's adds nothing to it (the counters always add). */
static void test_render_tls_buckets(void **state)
{
    struct fix *f = *state;
    fix_init(f, small_yaml);
    assert_false(f->l->tls);
    assert_null(strstr(render(f, 2, NULL, REM_EXPO_PROMETHEUS), "remora_tls_"));
    rem_metrics_layout_free(f->l);
    f->l = NULL;
    rem_config_unref(f->cfg);
    f->cfg = load(tls_yaml);
    f->l = rem_metrics_layout_new(f->cfg);
    assert_non_null(f->l);
    struct rem_metrics_shard *a = &f->sh[0]->g, *b = &f->sh[1]->g;

    /* No layout yet: counted, not timed. */
    rem_metrics_record_tls_handshake(a, REM_TLS_OK, 2 * MS, false);
    assert_int_equal(a->tls_handshakes[REM_TLS_OK], 1);
    rem_metrics_shard_tls_layout(a, f->l);
    rem_metrics_shard_tls_layout(b, f->l);
    rem_metrics_record_tls_handshake(a, REM_TLS_OK, 2 * MS, false);
    rem_metrics_record_tls_handshake(b, REM_TLS_OK, 2 * MS, false);
    /* A reload's layout with the same buckets: a keeps its counts. */
    tls_layout_from(f->sh[0], tls_yaml);
    assert_ptr_not_equal(a->tls_ml, f->l);
    /* Other buckets: b restarts, and the scrape (f->l's buckets) leaves b out. */
    tls_layout_from(f->sh[1], "metrics:\n  buckets: [0.01, 1]\n");
    rem_metrics_record_tls_handshake(b, REM_TLS_OK, 20 * MS, false);
    char *got = render(f, 2, NULL, REM_EXPO_PROMETHEUS);
    check_syntax(got, false);
    static const char *const want[] = {
        "\nremora_tls_handshakes_total{side=\"downstream\",result=\"ok\"} 4\n",
        "\nremora_tls_handshake_duration_seconds_bucket{side=\"downstream\",le=\"0.005\"} 1\n",
        "\nremora_tls_handshake_duration_seconds_count{side=\"downstream\"} 1\n",
    };
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++)
        if (!strstr(got, want[i]))
            fail_msg("missing %s in:\n%s", want[i] + 1, got);
    /* Back to the scrape's buckets: b restarts again (its 20 ms were on the other ones). */
    rem_metrics_shard_tls_layout(b, f->l);
    rem_metrics_record_tls_handshake(b, REM_TLS_OK, 200 * MS, false);
    got = render(f, 2, NULL, REM_EXPO_PROMETHEUS);
    if (!strstr(got, "\nremora_tls_handshake_duration_seconds_count{side=\"downstream\"} 2\n") ||
        !strstr(got, "\nremora_tls_handshake_duration_seconds_sum{side=\"downstream\"} 0.202\n"))
        fail_msg("b not restarted:\n%s", got);
}

/* DNS series appear for upstreams that looked a name up, summed over shards; the endpoints
 * gauge is the largest worker view. */
static void test_render_dns(void **state)
{
    struct fix *f = *state;
    fix_init(f, small_yaml);
    char *none = render(f, 2, NULL, REM_EXPO_PROMETHEUS);
    assert_null(strstr(none, "remora_dns_lookups_total"));
    assert_null(strstr(none, "remora_dns_lookup_duration_seconds"));
    REM_M_ADD(f->sh[0]->upstreams[0].dns_lookups[0], 4); /* success */
    REM_M_ADD(f->sh[1]->upstreams[0].dns_lookups[0], 1);
    REM_M_ADD(f->sh[1]->upstreams[0].dns_lookups[1], 2); /* nxdomain */
    rem_hist_record(&f->sh[0]->upstreams[0].dns_duration, &f->l->upstream_hist, 2 * MS);
    rem_hist_record(&f->sh[1]->upstreams[0].dns_duration, &f->l->upstream_hist, 3 * MS);
    REM_M_ADD(f->sh[0]->upstreams[0].endpoints, 2);
    REM_M_ADD(f->sh[1]->upstreams[0].endpoints, 2);
    char *got = render(f, 2, NULL, REM_EXPO_PROMETHEUS);
    static const char *const want[] = {
        "\nremora_dns_lookups_total{upstream=\"app\",result=\"success\"} 5\n",
        "\nremora_dns_lookups_total{upstream=\"app\",result=\"nxdomain\"} 2\n",
        "\nremora_dns_lookups_total{upstream=\"app\",result=\"timeout\"} 0\n",
        "\nremora_dns_lookup_duration_seconds_count{upstream=\"app\"} 2\n",
        "\nremora_upstream_endpoints{upstream=\"app\"} 2\n",
    };
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++)
        if (!strstr(got, want[i]))
            fail_msg("missing %s", want[i] + 1);
}

static void test_openmetrics_no_family_clash(void **state)
{
    struct fix *f = *state;
    struct rem_metrics_process p;
    char names[64][96];
    size_t n = 0;

    /* OpenMetrics 1.0, "Suffixes": family names MUST be unique, and a counter family `foo`
     * owns the sample names foo_total and foo_created. */
    fix_init(f, small_yaml);
    record_small(f);
    small_proc(&p);
    char *got = render(f, 2, &p, REM_EXPO_OPENMETRICS);
    for (const char *t = got; (t = strstr(t, "# TYPE ")) != NULL; t++) {
        const char *s = t + 7, *e = strchr(s, ' ');
        assert_non_null(e);
        assert_true(n < 64 && (size_t)(e - s) < sizeof(names[0]));
        memcpy(names[n], s, (size_t)(e - s));
        names[n][e - s] = '\0';
        for (size_t i = 0; i < n; i++)
            if (strcmp(names[i], names[n]) == 0)
                fail_msg("family %s declared twice", names[n]);
        n++;
    }
    assert_int_equal(n, 34);
}

static void test_render_openmetrics_exact(void **state)
{
    struct fix *f = *state;
    struct rem_metrics_process p;

    fix_init(f, small_yaml);
    record_small(f);
    small_proc(&p);
    char *got = render(f, 2, &p, REM_EXPO_OPENMETRICS);
    assert_text_equal(got, small_om);
}

static void test_content_types(void **state)
{
    (void)state;
    /* Prometheus text format 0.0.4 and OpenMetrics 1.0.0 "Overall Structure". */
    assert_string_equal(rem_metrics_content_type(REM_EXPO_PROMETHEUS),
                        "text/plain; version=0.0.4; charset=utf-8");
    assert_string_equal(rem_metrics_content_type(REM_EXPO_OPENMETRICS),
                        "application/openmetrics-text; version=1.0.0; charset=utf-8");
}

/* ---- (c) label escaping --------------------------------------------------------------------- */

static void test_escape_label(void **state)
{
    (void)state;
    static const struct {
        const char *in, *want;
    } cases[] = {
        {"a\"b\\c\nd", "a\\\"b\\\\c\\nd"},
        {"", ""},
        {"plain-name_1.2", "plain-name_1.2"},
        {"\\", "\\\\"},
        {"\"\"", "\\\"\\\""},
        {"\n\n", "\\n\\n"},
        {"tab\there", "tab\there"}, /* only \, " and newline are escaped */
        {"caf\xc3\xa9", "caf\xc3\xa9"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *got = rem_metrics_escape_label(cases[i].in);
        bool ok = strcmp(got, cases[i].want) == 0;
        if (!ok)
            print_error("escape(\"%s\") = \"%s\", want \"%s\"\n", cases[i].in, got, cases[i].want);
        free(got);
        assert_true(ok);
    }
}

static void test_render_escapes_names(void **state)
{
    struct fix *f = *state;
    struct rem_metrics_process p;

    /* The loader only accepts a safe alphabet, but the layout must not rely on it: patch the
     * names of a loaded config before building the layout. */
    f->cfg = load(small_yaml);
    free(f->cfg->routes[0].name);
    f->cfg->routes[0].name = strdup("r\"1\\x\ny");
    free(f->cfg->upstreams[0].name);
    f->cfg->upstreams[0].name = strdup("u\"p");
    assert_non_null(f->cfg->routes[0].name);
    assert_non_null(f->cfg->upstreams[0].name);
    f->l = rem_metrics_layout_new(f->cfg);
    assert_non_null(f->l);
    f->sh[0] = tshard_new(f->l);
    f->sh[1] = tshard_new(f->l);
    finish_request(f->sh[0], f->l, 0, 200, 1 * MS, 0, 0);
    small_proc(&p);
    p.version = "v\"1";
    p.commit = "c\\2";
    for (int om = 0; om <= 1; om++) {
        char *got = render(f, 2, &p, om ? REM_EXPO_OPENMETRICS : REM_EXPO_PROMETHEUS);
        check_syntax(got, om);
        assert_non_null(strstr(got, "\nremora_requests_total{route=\"r\\\"1\\\\x\\ny\",code="
                                    "\"2xx\"} 1\n"));
        assert_non_null(strstr(got, "\nremora_upstream_connections{upstream=\"u\\\"p\",state="
                                    "\"idle\"} 0\n"));
        assert_non_null(
            strstr(got, "\nremora_build_info{version=\"v\\\"1\",commit=\"c\\\\2\"} 1\n"));
    }
}

static void test_render_long_names(void **state)
{
    struct fix *f = *state;
    char yaml[4096], name[1001], want[1100];

    /* The loader puts no length limit on names; every series must still carry the whole
     * label value and stay well-formed. */
    memset(name, 'r', sizeof(name) - 1);
    name[sizeof(name) - 1] = '\0';
    snprintf(yaml, sizeof(yaml),
             "upstreams:\n"
             "  - name: %s\n"
             "    endpoints: [\"127.0.0.1:8080\"]\n"
             "routes:\n"
             "  - name: %s\n"
             "    upstream: %s\n",
             name, name, name);
    fix_init(f, yaml);
    finish_request(f->sh[0], f->l, 0, 200, 1 * MS, 0, 0);
    char *got = render(f, 2, NULL, REM_EXPO_PROMETHEUS);
    check_syntax(got, false);
    snprintf(want, sizeof(want), "\nremora_requests_total{route=\"%s\",code=\"2xx\"} 1\n", name);
    assert_non_null(strstr(got, want));
    snprintf(want, sizeof(want),
             "\nremora_upstream_connections{upstream=\"%s\",state=\"idle\"} 0\n", name);
    assert_non_null(strstr(got, want));
}

/* ---- (d) cumulative buckets ----------------------------------------------------------------- */

/* The value of the sample line that starts with prefix (prefix ends with "} " or " "). */
static double sample(const char *text, const char *prefix)
{
    char key[512];
    snprintf(key, sizeof(key), "\n%s", prefix);
    const char *p = strstr(text, key);
    if (!p)
        fail_msg("no sample %s", prefix);
    return strtod(p + strlen(key), NULL);
}

static void test_render_buckets_cumulative(void **state)
{
    struct fix *f = *state;
    struct rem_hist_layout *hl;
    uint64_t want[REM_MAX_BUCKETS + 1] = {0}, sum = 0, x = 0x853c49e6748fea9bull;
    const size_t n_obs = 5000;
    char key[256];

    fix_init(f, "upstreams:\n"
                "  - name: app\n"
                "    endpoints: [\"127.0.0.1:8080\"]\n"
                "routes:\n"
                "  - name: api\n"
                "    upstream: app\n");
    hl = &f->l->route_hist[0];
    assert_int_equal(hl->n, 14); /* the default buckets */
    for (size_t i = 0; i < n_obs; i++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        uint64_t ns = (x >> 33) % (12 * NS_PER_S); /* 0 .. 12 s: some above the last bound */
        if (i % 97 == 0)
            ns = hl->le_ns[(i / 97) % hl->n]; /* exactly on a bound: counted in it */
        finish_request(f->sh[i % 2], f->l, 0, 200, ns, 0, 0);
        want[rem_hist_classic_index(hl, ns)]++;
        sum += ns;
    }
    char *got = render(f, 2, NULL, REM_EXPO_PROMETHEUS);
    check_syntax(got, false);
    double prev = 0, cum = 0;
    for (size_t i = 0; i <= hl->n; i++) {
        snprintf(key, sizeof(key),
                 "remora_request_duration_seconds_bucket{route=\"api\",code=\"2xx\",le=\"%s\"} ",
                 i < hl->n ? hl->le_str[i] : "+Inf");
        double v = sample(got, key);
        cum += (double)want[i];
        assert_true(v >= prev);
        if (v != cum)
            fail_msg("bucket le=%s: %.0f, want %.0f", i < hl->n ? hl->le_str[i] : "+Inf", v, cum);
        prev = v;
    }
    double count =
        sample(got, "remora_request_duration_seconds_count{route=\"api\",code=\"2xx\"} ");
    assert_true(count == prev);
    assert_true(count == (double)n_obs);
    double s = sample(got, "remora_request_duration_seconds_sum{route=\"api\",code=\"2xx\"} ");
    assert_true(fabs(s - (double)sum / 1e9) <= 1e-9 * (double)sum / 1e9);
    assert_true(sample(got, "remora_requests_total{route=\"api\",code=\"2xx\"} ") == (double)n_obs);
}

static void test_render_sum_exact_ns(void **state)
{
    struct fix *f = *state;

    /* _sum is nanoseconds rendered as exact seconds. */
    fix_init(f, small_yaml);
    finish_request(f->sh[0], f->l, 0, 200, 1, 0, 0);
    finish_request(f->sh[1], f->l, 0, 200, 12 * NS_PER_S, 0, 0);
    finish_request(f->sh[1], f->l, 0, 500, 100000000000000ull + 7, 0, 0);
    char *got = render(f, 2, NULL, REM_EXPO_PROMETHEUS);
    check_syntax(got, false);
    assert_non_null(strstr(got, "\nremora_request_duration_seconds_sum{route=\"api\",code=\"2xx\"} "
                                "12.000000001\n"));
    assert_non_null(strstr(got, "\nremora_request_duration_seconds_sum{route=\"api\",code=\"5xx\"} "
                                "100000.000000007\n"));
}

/* ---- (e) Accept negotiation ----------------------------------------------------------------- */

static void test_format_for(void **state)
{
    (void)state;
    static const struct {
        const char *accept;
        enum rem_expo_format want;
    } cases[] = {
        {NULL, REM_EXPO_PROMETHEUS},
        {"", REM_EXPO_PROMETHEUS},
        {"application/openmetrics-text; version=1.0.0", REM_EXPO_OPENMETRICS},
        {"application/openmetrics-text", REM_EXPO_OPENMETRICS},
        {"text/plain", REM_EXPO_PROMETHEUS},
        {"text/plain; version=0.0.4", REM_EXPO_PROMETHEUS},
        {"*/*", REM_EXPO_PROMETHEUS},
        {"application/json", REM_EXPO_PROMETHEUS},
        {"application/openmetrics-text;q=0.5,text/plain;q=1", REM_EXPO_PROMETHEUS},
        {"text/plain;q=0.5,application/openmetrics-text;q=0.9", REM_EXPO_OPENMETRICS},
        {"text/plain;q=0.5, application/openmetrics-text", REM_EXPO_OPENMETRICS},
        {"application/openmetrics-text;q=0.5,*/*;q=0.1", REM_EXPO_OPENMETRICS},
        {"*/*;q=0.9,application/openmetrics-text;q=0.8", REM_EXPO_PROMETHEUS},
        {"application/openmetrics-text;q=0", REM_EXPO_PROMETHEUS},
        {"APPLICATION/OpenMetrics-Text; version=1.0.0", REM_EXPO_OPENMETRICS},
        /* What Prometheus 2.x sends by default. */
        {"application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
         "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
         REM_EXPO_OPENMETRICS},
        /* Prometheus with scrape_protocols: [PrometheusText0.0.4, OpenMetricsText1.0.0]. */
        {"text/plain;version=0.0.4;q=0.5,application/openmetrics-text;version=1.0.0;q=0.4,*/*;"
         "q=0.1",
         REM_EXPO_PROMETHEUS},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        enum rem_expo_format got = rem_metrics_format_for(cases[i].accept);
        if (got != cases[i].want)
            fail_msg("Accept \"%s\": %s, want %s", cases[i].accept ? cases[i].accept : "(null)",
                     got == REM_EXPO_OPENMETRICS ? "OpenMetrics" : "Prometheus text",
                     cases[i].want == REM_EXPO_OPENMETRICS ? "OpenMetrics" : "Prometheus text");
    }
}

/* ---- layout and shards ---------------------------------------------------------------------- */

static void test_layout_shape(void **state)
{
    struct fix *f = *state;

    fix_init(f, small_yaml);
    assert_int_equal(f->l->n_routes, f->cfg->n_routes + 1);
    assert_int_equal(f->l->n_upstreams, f->cfg->n_upstreams);
    assert_string_equal(f->l->route_label[0], "api");
    assert_string_equal(f->l->upstream_label[0], "app");
    assert_int_equal(f->l->upstream_hist.n, 3);
    assert_int_equal(f->l->route_hist[0].n, 3);
    assert_int_equal(f->l->route_hist[1].n, 3);
    assert_string_equal(f->l->route_hist[0].le_str[2], "1");
    /* Shards start zeroed. */
    for (size_t r = 0; r < f->l->n_routes; r++)
        for (int c = 0; c < REM_CODE__N; c++)
            assert_int_equal(f->sh[0]->routes[r].requests[c], 0);

    rem_metrics_layout_free(NULL);
    tshard_free(NULL);
}

/* remora_config_*: shown when a generation is set, with both reload results always present. */
static void test_config_reload_series(void **state)
{
    struct fix *f = *state;
    struct rem_metrics_process p;

    fix_init(f, small_yaml);
    small_proc(&p);
    char *none = render(f, 2, &p, REM_EXPO_PROMETHEUS);
    assert_null(strstr(none, "remora_config_generation"));
    p.config_generation = 3;
    p.reloads_ok = 2;
    p.reloads_failed = 1;
    p.last_reload_success = 1700000001.5;
    for (int om = 0; om <= 1; om++) {
        char *got = render(f, 2, &p, om ? REM_EXPO_OPENMETRICS : REM_EXPO_PROMETHEUS);
        check_syntax(got, om);
        assert_non_null(strstr(got, "\nremora_config_generation 3\n"));
        assert_non_null(strstr(got, "\nremora_config_reloads_total{result=\"success\"} 2\n"));
        assert_non_null(strstr(got, "\nremora_config_reloads_total{result=\"failure\"} 1\n"));
        assert_non_null(strstr(
            got, "\nremora_config_last_reload_success_timestamp_seconds 1.7000000015e+09\n"));
    }
}

/* remora_tls_cert_*: with the reload series; both results always, one expiry per TLS listener. */
static void test_tls_cert_series(void **state)
{
    struct fix *f = *state;
    struct rem_metrics_process p;
    static const char *const names[] = {"tls", "a\"b"};
    static const double not_after[] = {1800000000, 1700000123};

    fix_init(f, small_yaml);
    small_proc(&p);
    p.config_generation = 1;
    /* No TLS listener: no remora_tls_* family at all (like the handshake families). */
    char *plain = render(f, 2, &p, REM_EXPO_PROMETHEUS);
    assert_null(strstr(plain, "remora_tls_cert_reloads_total"));
    assert_null(strstr(plain, "remora_tls_cert_expiry_timestamp_seconds"));
    p.tls_cert_reloads_ok = 4;
    p.tls_cert_reloads_failed = 2;
    p.tls_listeners = names;
    p.tls_not_after = not_after;
    p.n_tls = 2;
    for (int om = 0; om <= 1; om++) {
        char *got = render(f, 2, &p, om ? REM_EXPO_OPENMETRICS : REM_EXPO_PROMETHEUS);
        check_syntax(got, om);
        assert_non_null(strstr(got, om ? "# TYPE remora_tls_cert_reloads counter\n"
                                       : "# TYPE remora_tls_cert_reloads_total counter\n"));
        assert_non_null(strstr(got, "\nremora_tls_cert_reloads_total{result=\"success\"} 4\n"));
        assert_non_null(strstr(got, "\nremora_tls_cert_reloads_total{result=\"failure\"} 2\n"));
        assert_non_null(strstr(got, "# TYPE remora_tls_cert_expiry_timestamp_seconds gauge\n"));
        assert_non_null(
            strstr(got, "\nremora_tls_cert_expiry_timestamp_seconds{cert=\"tls\"} 1.8e+09\n"));
        assert_non_null(strstr(
            got, "\nremora_tls_cert_expiry_timestamp_seconds{cert=\"a\\\"b\"} 1.700000123e+09\n"));
    }
}

static void test_code_class_of(void **state)
{
    (void)state;
    assert_int_equal(rem_code_class_of(0), REM_CODE_NONE);
    assert_int_equal(rem_code_class_of(99), REM_CODE_NONE);
    assert_int_equal(rem_code_class_of(100), REM_CODE_1XX);
    assert_int_equal(rem_code_class_of(199), REM_CODE_1XX);
    assert_int_equal(rem_code_class_of(200), REM_CODE_2XX);
    assert_int_equal(rem_code_class_of(304), REM_CODE_3XX);
    assert_int_equal(rem_code_class_of(451), REM_CODE_4XX);
    assert_int_equal(rem_code_class_of(599), REM_CODE_5XX);
    assert_int_equal(rem_code_class_of(600), REM_CODE_NONE);
    assert_int_equal(rem_code_class_of(-200), REM_CODE_NONE);
}

static void test_process_read(void **state)
{
    (void)state;
    struct rem_metrics_process p;

    memset(&p, 0, sizeof(p));
    rem_metrics_process_read(&p);
    assert_true(p.resident_bytes > 0);
    assert_true(p.virtual_bytes >= p.resident_bytes);
    assert_true(p.open_fds >= 3); /* stdin, stdout, stderr */
    assert_true(p.max_fds >= p.open_fds);
    assert_true(p.cpu_seconds >= 0);
    /* Started within the last day, not in the future. */
    double now = (double)time(NULL);
    assert_true(p.start_time_seconds > now - 86400 && p.start_time_seconds <= now + 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_layout_shape, setup, teardown),
        cmocka_unit_test_setup_teardown(test_config_reload_series, setup, teardown),
        cmocka_unit_test_setup_teardown(test_code_class_of, setup, teardown),
        cmocka_unit_test_setup_teardown(test_render_text_exact, setup, teardown),
        cmocka_unit_test_setup_teardown(test_render_leaves_out_unread_process_values, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_render_is_repeatable, setup, teardown),
        cmocka_unit_test_setup_teardown(test_render_appends, setup, teardown),
        cmocka_unit_test_setup_teardown(test_render_empty_shards, setup, teardown),
        cmocka_unit_test_setup_teardown(test_render_unmatched_route, setup, teardown),
        cmocka_unit_test_setup_teardown(test_render_code_classes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_render_route_buckets, setup, teardown),
        cmocka_unit_test_setup_teardown(test_render_health_states, setup, teardown),
        cmocka_unit_test_setup_teardown(test_render_openmetrics_counters_and_eof, setup, teardown),
        cmocka_unit_test_setup_teardown(test_openmetrics_no_family_clash, setup, teardown),
        cmocka_unit_test_setup_teardown(test_render_openmetrics_exact, setup, teardown),
        cmocka_unit_test_setup_teardown(test_content_types, setup, teardown),
        cmocka_unit_test_setup_teardown(test_escape_label, setup, teardown),
        cmocka_unit_test_setup_teardown(test_render_escapes_names, setup, teardown),
        cmocka_unit_test_setup_teardown(test_render_long_names, setup, teardown),
        cmocka_unit_test_setup_teardown(test_render_buckets_cumulative, setup, teardown),
        cmocka_unit_test_setup_teardown(test_render_sum_exact_ns, setup, teardown),
        cmocka_unit_test_setup_teardown(test_format_for, setup, teardown),
        cmocka_unit_test_setup_teardown(test_process_read, setup, teardown),
        cmocka_unit_test_setup_teardown(test_render_http2, setup, teardown),
        cmocka_unit_test_setup_teardown(test_render_dns, setup, teardown),
        cmocka_unit_test_setup_teardown(test_render_tls, setup, teardown),
        cmocka_unit_test_setup_teardown(test_render_tls_buckets, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tls_cert_series, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
