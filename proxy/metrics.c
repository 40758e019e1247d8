/* SPDX-License-Identifier: Apache-2.0
 * metrics: layout and shards, process metrics, and the exposition renderer. The renderer
 * writes into one growable buffer with hand-rolled integer formatting and pre-escaped label
 * text, so a scrape of many routes stays well under a millisecond of CPU. */
#include <dirent.h>
#include <stddef.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>

#include "config.h"
#include "error.h"
#include "log.h"
#include "metrics.h"

static const char *const code_label[REM_CODE__N] = {"none", "1xx", "2xx", "3xx", "4xx", "5xx"};
static const char *const connfail_label[REM_CONNFAIL__N] = {"refused", "timeout", "error", "tls"};
static const char *const reject_label[REM_REJECT__N] = {"queue_full", "queue_timeout"};
static const char *const tls_result_label[REM_TLS_RESULT__N] = {"ok", "failed", "timeout",
                                                                "refused"};

char *rem_metrics_escape_label(const char *v)
{
    size_t n = 0;
    for (const char *p = v; *p; p++)
        n += (*p == '\\' || *p == '"' || *p == '\n') ? 2 : 1;
    char *out = rem_xcalloc(1, n + 1), *o = out;
    for (const char *p = v; *p; p++) {
        if (*p == '\\' || *p == '"') {
            *o++ = '\\';
            *o++ = *p;
        } else if (*p == '\n') {
            *o++ = '\\';
            *o++ = 'n';
        } else {
            *o++ = *p;
        }
    }
    *o = '\0';
    return out;
}

struct rem_metrics_layout *rem_metrics_layout_new(const struct rem_config *cfg)
{
    struct rem_metrics_layout *l = rem_xcalloc(1, sizeof(*l));
    l->refs = 1;
    const struct rem_cfg_buckets *def = &cfg->metrics.buckets;
    l->n_routes = cfg->n_routes + 1;
    l->route_hist = rem_xcalloc(l->n_routes, sizeof(*l->route_hist));
    l->route_label = rem_xcalloc(l->n_routes, sizeof(*l->route_label));
    for (size_t i = 0; i < l->n_routes; i++) {
        const struct rem_cfg_route *r = i < cfg->n_routes ? &cfg->routes[i] : NULL;
        const struct rem_cfg_buckets *b = r && r->buckets.n ? &r->buckets : def;
        if (rem_hist_layout_init(&l->route_hist[i], b->le, b->n) < 0) {
            rem_log_error("metrics: bad buckets for route %s", r ? r->name : "\"\"");
            rem_metrics_layout_free(l);
            return NULL;
        }
        l->route_label[i] = rem_metrics_escape_label(r ? r->name : "");
    }
    if (rem_hist_layout_init(&l->upstream_hist, def->le, def->n) < 0) {
        rem_metrics_layout_free(l);
        return NULL;
    }
    l->n_upstreams = cfg->n_upstreams;
    l->upstream_label = rem_xcalloc(l->n_upstreams, sizeof(*l->upstream_label));
    for (size_t i = 0; i < l->n_upstreams; i++)
        l->upstream_label[i] = rem_metrics_escape_label(cfg->upstreams[i].name);
    for (size_t i = 0; i < cfg->n_listeners; i++)
        l->tls = l->tls || cfg->listeners[i].tls;
    for (size_t i = 0; i < cfg->n_upstreams; i++)
        l->up_tls = l->up_tls || cfg->upstreams[i].tls;
    return l;
}

void rem_metrics_layout_free(struct rem_metrics_layout *l)
{
    if (!l)
        return;
    for (size_t i = 0; l->route_label && i < l->n_routes; i++)
        free(l->route_label[i]);
    for (size_t i = 0; l->upstream_label && i < l->n_upstreams; i++)
        free(l->upstream_label[i]);
    free(l->route_label);
    free(l->upstream_label);
    free(l->route_hist);
    free(l);
}

const struct rem_route_metrics rem_metrics_zero_route;
const struct rem_route_hist rem_metrics_zero_route_hist;
const struct rem_upstream_metrics rem_metrics_zero_upstream;

struct rem_metrics_layout *rem_metrics_layout_ref(struct rem_metrics_layout *l)
{
    if (l)
        __atomic_add_fetch(&l->refs, 1, __ATOMIC_RELAXED);
    return l;
}

void rem_metrics_layout_unref(struct rem_metrics_layout *l)
{
    if (l && __atomic_sub_fetch(&l->refs, 1, __ATOMIC_ACQ_REL) == 0)
        rem_metrics_layout_free(l);
}

bool rem_hist_layout_same(const struct rem_hist_layout *a, const struct rem_hist_layout *b)
{
    if (a->n != b->n)
        return false;
    for (size_t i = 0; i < a->n; i++)
        if (a->le_ns[i] != b->le_ns[i] || strcmp(a->le_str[i], b->le_str[i]) != 0)
            return false;
    return true;
}

void rem_upstream_metrics_carry(struct rem_upstream_metrics *dst,
                                const struct rem_upstream_metrics *src)
{
    *dst = *src;
    memset(&dst->response_duration, 0, sizeof(dst->response_duration));
    memset(&dst->connect_duration, 0, sizeof(dst->connect_duration));
    memset(&dst->queue_wait, 0, sizeof(dst->queue_wait));
    memset(&dst->dns_duration, 0, sizeof(dst->dns_duration));
    memset(&dst->tls_handshake_duration, 0, sizeof(dst->tls_handshake_duration));
}

struct rem_metrics_shard *rem_metrics_shard_new(void)
{
    return rem_xcalloc(1, sizeof(struct rem_metrics_shard));
}

void rem_metrics_shard_free(struct rem_metrics_shard *s)
{
    if (!s)
        return;
    rem_metrics_layout_unref(s->tls_ml);
    free(s);
}

void rem_metrics_shard_tls_layout(struct rem_metrics_shard *s, struct rem_metrics_layout *ml)
{
    if (s->tls_ml == ml)
        return;
    if (s->tls_ml && !rem_hist_layout_same(&s->tls_ml->upstream_hist, &ml->upstream_hist))
        memset(&s->tls_handshake_duration, 0, sizeof(s->tls_handshake_duration));
    rem_metrics_layout_ref(ml);
    rem_metrics_layout_unref(s->tls_ml);
    s->tls_ml = ml;
}

void rem_metrics_record_tls_handshake(struct rem_metrics_shard *s, enum rem_tls_result r,
                                      uint64_t ns, bool resumed)
{
    REM_M_ADD(s->tls_handshakes[r], 1);
    if (r != REM_TLS_OK)
        return;
    if (resumed)
        REM_M_ADD(s->tls_resumed, 1);
    if (s->tls_ml)
        rem_hist_record(&s->tls_handshake_duration, &s->tls_ml->upstream_hist, ns);
}

void rem_metrics_record_request(struct rem_route_metrics *m, struct rem_route_hist *h,
                                const struct rem_hist_layout *hl, bool counted_in_flight,
                                int status, uint64_t ns, uint64_t bytes_in, uint64_t bytes_out)
{
    enum rem_code_class cc = rem_code_class_of(status);
    if (counted_in_flight)
        REM_M_ADD(m->in_flight, -1);
    REM_M_ADD(m->requests[cc], 1);
    REM_M_ADD(m->request_bytes, bytes_in);
    REM_M_ADD(m->response_bytes, bytes_out);
    rem_hist_record(&h->duration[cc], hl, ns);
}

/* ---- process metrics ---------------------------------------------------------------------- */

void rem_metrics_process_read(struct rem_metrics_process *p)
{
    p->cpu_seconds = p->resident_bytes = p->virtual_bytes = NAN;
    p->open_fds = p->max_fds = p->start_time_seconds = NAN;
    struct rusage ru;
    long page = sysconf(_SC_PAGESIZE), ticks = sysconf(_SC_CLK_TCK);
    if (getrusage(RUSAGE_SELF, &ru) == 0)
        p->cpu_seconds = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
                         (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
    FILE *f = fopen("/proc/self/statm", "re");
    if (f) {
        unsigned long long vm, rss;
        if (fscanf(f, "%llu %llu", &vm, &rss) == 2) {
            p->virtual_bytes = (double)vm * (double)page;
            p->resident_bytes = (double)rss * (double)page;
        }
        fclose(f);
    }
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0)
        p->max_fds = rl.rlim_cur == RLIM_INFINITY ? INFINITY : (double)rl.rlim_cur;
    DIR *d = opendir("/proc/self/fd");
    if (d) {
        double n = 0;
        struct dirent *de;
        while ((de = readdir(d)) != NULL)
            if (de->d_name[0] != '.')
                n++;
        closedir(d);
        p->open_fds = n - 1; /* the directory stream itself */
    }
    /* Start time: field 22 of /proc/self/stat (ticks after boot) + btime of /proc/stat. */
    unsigned long long start_ticks = 0, btime = 0;
    f = fopen("/proc/self/stat", "re");
    if (f) {
        char buf[1024];
        size_t n = fread(buf, 1, sizeof(buf) - 1, f);
        buf[n] = '\0';
        char *rp = strrchr(buf, ')');
        if (rp) {
            /* after ") ": field 3 is the state; starttime is field 22 */
            char *tok = rp + 2;
            for (int field = 3; field < 22 && tok; field++) {
                tok = strchr(tok, ' ');
                if (tok)
                    tok++;
            }
            if (tok)
                start_ticks = strtoull(tok, NULL, 10);
        }
        fclose(f);
    }
    f = fopen("/proc/stat", "re");
    if (f) {
        char line[256];
        while (fgets(line, sizeof(line), f))
            if (sscanf(line, "btime %llu", &btime) == 1)
                break;
        fclose(f);
    }
    if (ticks > 0 && btime)
        p->start_time_seconds = (double)btime + (double)start_ticks / (double)ticks;
}

/* ---- content negotiation ------------------------------------------------------------------ */

/* q of the media range at p (up to ',' or end); 1 when absent. */
static double accept_q(const char *p, const char *end)
{
    const char *q = p;
    while ((q = strchr(q, ';')) != NULL && q < end) {
        q++;
        while (*q == ' ')
            q++;
        if (q[0] == 'q' && q[1] == '=')
            return strtod(q + 2, NULL);
    }
    return 1.0;
}

enum rem_expo_format rem_metrics_format_for(const char *accept)
{
    double om = -1, text = -1;
    const char *p = accept;
    while (p && *p) {
        while (*p == ' ' || *p == ',')
            p++;
        const char *end = strchr(p, ',');
        if (!end)
            end = p + strlen(p);
        size_t n = (size_t)(end - p);
        double q = accept_q(p, end);
        if (n >= 28 && strncasecmp(p, "application/openmetrics-text", 28) == 0)
            om = q > om ? q : om;
        else if ((n >= 10 && strncasecmp(p, "text/plain", 10) == 0) ||
                 (n >= 3 && strncmp(p, "*/*", 3) == 0))
            text = q > text ? q : text;
        p = end;
    }
    return om > 0 && om >= text ? REM_EXPO_OPENMETRICS : REM_EXPO_PROMETHEUS;
}

const char *rem_metrics_content_type(enum rem_expo_format f)
{
    return f == REM_EXPO_OPENMETRICS ? "application/openmetrics-text; version=1.0.0; charset=utf-8"
                                     : "text/plain; version=0.0.4; charset=utf-8";
}

/* ---- renderer ----------------------------------------------------------------------------- */

struct rbuf {
    char *p;
    size_t len, cap;
    bool oom;
    bool om; /* OpenMetrics */
};

static void rb_reserve(struct rbuf *b, size_t n)
{
    if (b->len + n <= b->cap || b->oom)
        return;
    size_t cap = b->cap ? b->cap : 16384;
    while (cap < b->len + n)
        cap *= 2;
    char *np = realloc(b->p, cap);
    if (!np) {
        b->oom = true;
        return;
    }
    b->p = np;
    b->cap = cap;
}

static void rb_put(struct rbuf *b, const char *s, size_t n)
{
    rb_reserve(b, n);
    if (b->oom)
        return;
    memcpy(b->p + b->len, s, n);
    b->len += n;
}

static void rb_str(struct rbuf *b, const char *s)
{
    rb_put(b, s, strlen(s));
}

static void rb_u64(struct rbuf *b, uint64_t v)
{
    char tmp[24];
    size_t i = sizeof(tmp);
    do {
        tmp[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    rb_put(b, tmp + i, sizeof(tmp) - i);
}

static void rb_i64(struct rbuf *b, int64_t v)
{
    if (v < 0) {
        rb_put(b, "-", 1);
        rb_u64(b, (uint64_t)(-(v + 1)) + 1);
    } else {
        rb_u64(b, (uint64_t)v);
    }
}

static void rb_double(struct rbuf *b, double v)
{
    char tmp[40];
    size_t n = rem_fmt_double(tmp, sizeof(tmp), v);
    rb_put(b, tmp, n);
}

/* Nanoseconds as seconds, exactly: integer part, then up to 9 decimals without trailing 0s. */
static void rb_ns_as_seconds(struct rbuf *b, uint64_t ns)
{
    rb_u64(b, ns / 1000000000u);
    uint64_t frac = ns % 1000000000u;
    if (!frac)
        return;
    char tmp[10];
    tmp[0] = '.';
    for (int i = 9; i >= 1; i--) {
        tmp[i] = (char)('0' + frac % 10);
        frac /= 10;
    }
    size_t n = 10;
    while (tmp[n - 1] == '0')
        n--;
    rb_put(b, tmp, n);
}

/* "# HELP name text\n# TYPE name type\n"; OpenMetrics counters drop _total from the family.
 * remora_downstream_connections_total would then clash with the remora_downstream_connections
 * gauge, so in OpenMetrics it is declared `unknown` under its full name (same samples). */
static void rb_family(struct rbuf *b, const char *name, const char *type, const char *help)
{
    size_t n = strlen(name);
    if (b->om && strcmp(name, "remora_downstream_connections_total") == 0)
        type = "unknown";
    else if (b->om && strcmp(type, "counter") == 0 && n > 6 && strcmp(name + n - 6, "_total") == 0)
        n -= 6;
    rb_str(b, "# HELP ");
    rb_put(b, name, n);
    rb_put(b, " ", 1);
    rb_str(b, help);
    rb_str(b, "\n# TYPE ");
    rb_put(b, name, n);
    rb_put(b, " ", 1);
    rb_str(b, type);
    rb_put(b, "\n", 1);
}
/* A counter family of two series by result, "success" and "failure" (configuration and
 * certificate reloads). */
static void rb_success_failure(struct rbuf *b, const char *name, const char *help, uint64_t ok,
                               uint64_t failed)
{
    rb_family(b, name, "counter", help);
    rb_str(b, name);
    rb_str(b, "{result=\"success\"} ");
    rb_u64(b, ok);
    rb_put(b, "\n", 1);
    rb_str(b, name);
    rb_str(b, "{result=\"failure\"} ");
    rb_u64(b, failed);
    rb_put(b, "\n", 1);
}

/* name{labels} (labels: already escaped and joined, may be empty) */
static void rb_series(struct rbuf *b, const char *name, const char *suffix, const char *labels)
{
    rb_str(b, name);
    if (suffix)
        rb_str(b, suffix);
    if (labels && *labels) {
        rb_put(b, "{", 1);
        rb_str(b, labels);
        rb_put(b, "}", 1);
    }
    rb_put(b, " ", 1);
}

/* Renders one histogram series: cumulative buckets, +Inf, _sum, _count. labels may be "". */
static void rb_hist(struct rbuf *b, const char *name, const char *labels,
                    const struct rem_hist_layout *l, const struct rem_hist_sum *h)
{
    uint64_t cum = 0;
    for (size_t i = 0; i <= l->n; i++) {
        cum += h->classic[i];
        rb_str(b, name);
        rb_str(b, "_bucket{");
        if (*labels) {
            rb_str(b, labels);
            rb_put(b, ",", 1);
        }
        rb_str(b, "le=\"");
        rb_str(b, i < l->n ? (b->om ? l->le_om[i] : l->le_str[i]) : "+Inf");
        rb_str(b, "\"} ");
        rb_u64(b, cum);
        rb_put(b, "\n", 1);
    }
    rb_series(b, name, "_sum", labels);
    rb_ns_as_seconds(b, h->sum_ns);
    rb_put(b, "\n", 1);
    rb_series(b, name, "_count", labels);
    rb_u64(b, h->count);
    rb_put(b, "\n", 1);
}

#define LOAD(x) __atomic_load_n(&(x), __ATOMIC_RELAXED)

/* Builds `k1="v1"[,k2="v2"]` (values already escaped) in a reusable scratch buffer; any
 * length. Returns the NUL-terminated text. */
static const char *labels2(struct rbuf *lb, const char *k1, const char *v1, const char *k2,
                           const char *v2)
{
    lb->len = 0;
    rb_str(lb, k1);
    rb_put(lb, "=\"", 2);
    rb_str(lb, v1);
    rb_put(lb, "\"", 1);
    if (k2) {
        rb_put(lb, ",", 1);
        rb_str(lb, k2);
        rb_put(lb, "=\"", 2);
        rb_str(lb, v2);
        rb_put(lb, "\"", 1);
    }
    rb_put(lb, "", 1);
    return lb->oom ? "" : lb->p;
}

static void render_routes(struct rbuf *b, const struct rem_metrics_layout *l,
                          const struct rem_metrics_view *vw, size_t n_shards)
{
    struct rbuf lb = {0};
    const char *labels;
    struct rem_hist_sum *h = malloc(sizeof(*h));
    if (!h) {
        b->oom = true;
        return;
    }
    static const char dur[] = "remora_request_duration_seconds";
    rb_family(b, dur, "histogram",
              "Time from the first byte of the request head to the last byte of the response.");
    for (size_t r = 0; r < l->n_routes; r++) {
        for (int c = 0; c < REM_CODE__N; c++) {
            memset(h, 0, sizeof(*h));
            for (size_t s = 0; s < n_shards; s++)
                rem_hist_add(h, &vw[s].route_hists[r]->duration[c], &l->route_hist[r]);
            if (h->count == 0)
                continue;
            labels = labels2(&lb, "route", l->route_label[r], "code", code_label[c]);
            rb_hist(b, dur, labels, &l->route_hist[r], h);
        }
    }
    free(h);

    static const char req[] = "remora_requests_total";
    rb_family(b, req, "counter", "Requests answered, by route and status class.");
    for (size_t r = 0; r < l->n_routes; r++) {
        for (int c = 0; c < REM_CODE__N; c++) {
            uint64_t v = 0;
            for (size_t s = 0; s < n_shards; s++)
                v += LOAD(vw[s].routes[r]->requests[c]);
            if (!v)
                continue;
            labels = labels2(&lb, "route", l->route_label[r], "code", code_label[c]);
            rb_series(b, req, NULL, labels);
            rb_u64(b, v);
            rb_put(b, "\n", 1);
        }
    }

    static const char rej[] = "remora_requests_rejected_total";
    rb_family(b, rej, "counter", "Requests refused by admission control, by route and reason.");
    for (size_t r = 0; r < l->n_routes; r++) {
        for (int k = 0; k < REM_REJECT__N; k++) {
            uint64_t v = 0;
            for (size_t s = 0; s < n_shards; s++)
                v += LOAD(vw[s].routes[r]->rejected[k]);
            if (!v && r + 1 == l->n_routes)
                continue; /* the unmatched route is never admitted or refused */
            labels = labels2(&lb, "route", l->route_label[r], "reason", reject_label[k]);
            rb_series(b, rej, NULL, labels);
            rb_u64(b, v);
            rb_put(b, "\n", 1);
        }
    }

    static const struct {
        const char *name, *type, *help;
        size_t off;
    } per_route[] = {
        {"remora_requests_in_flight", "gauge", "Requests routed and not yet answered.",
         offsetof(struct rem_route_metrics, in_flight)},
        {"remora_request_bytes_total", "counter", "Bytes received from downstream clients.",
         offsetof(struct rem_route_metrics, request_bytes)},
        {"remora_response_bytes_total", "counter", "Bytes sent to downstream clients.",
         offsetof(struct rem_route_metrics, response_bytes)},
        {"remora_tunnels_total", "counter",
         "Tunnels opened (WebSocket and other Upgrades, CONNECT), by route.",
         offsetof(struct rem_route_metrics, tunnels)},
    };
    for (size_t k = 0; k < sizeof(per_route) / sizeof(per_route[0]); k++) {
        rb_family(b, per_route[k].name, per_route[k].type, per_route[k].help);
        for (size_t r = 0; r < l->n_routes; r++) {
            int64_t v = 0;
            bool seen = r + 1 < l->n_routes; /* configured routes always appear */
            for (size_t s = 0; s < n_shards; s++) {
                int64_t x =
                    LOAD(*(const int64_t *)((const char *)vw[s].routes[r] + per_route[k].off));
                v += x;
                for (int c = 0; c < REM_CODE__N && !seen; c++)
                    seen = LOAD(vw[s].routes[r]->requests[c]) > 0;
            }
            if (!seen && v == 0)
                continue;
            labels = labels2(&lb, "route", l->route_label[r], NULL, NULL);
            rb_series(b, per_route[k].name, NULL, labels);
            rb_i64(b, v);
            rb_put(b, "\n", 1);
        }
    }
    b->oom |= lb.oom;
    free(lb.p);
}

static void render_upstreams(struct rbuf *b, const struct rem_metrics_layout *l,
                             const struct rem_metrics_view *vw, size_t n_shards,
                             const struct rem_metrics_process *proc)
{
    struct rbuf lb = {0};
    const char *labels;
    struct rem_hist_sum *h = malloc(sizeof(*h));
    if (!h) {
        b->oom = true;
        return;
    }
    static const struct {
        const char *name, *help;
        size_t off;
    } hists[] = {
        {"remora_upstream_response_duration_seconds",
         "Time from sending the request head upstream to the end of the upstream response.",
         offsetof(struct rem_upstream_metrics, response_duration)},
        {"remora_upstream_connect_duration_seconds", "Time to establish upstream connections.",
         offsetof(struct rem_upstream_metrics, connect_duration)},
        {"remora_queue_wait_duration_seconds",
         "Time requests waited in the admission queue (admitted or timed out).",
         offsetof(struct rem_upstream_metrics, queue_wait)},
    };
    for (size_t k = 0; k < sizeof(hists) / sizeof(hists[0]); k++) {
        rb_family(b, hists[k].name, "histogram", hists[k].help);
        for (size_t u = 0; u < l->n_upstreams; u++) {
            memset(h, 0, sizeof(*h));
            for (size_t s = 0; s < n_shards; s++)
                rem_hist_add(
                    h, (const struct rem_hist *)((const char *)vw[s].up_hists[u] + hists[k].off),
                    &l->upstream_hist);
            labels = labels2(&lb, "upstream", l->upstream_label[u], NULL, NULL);
            rb_hist(b, hists[k].name, labels, &l->upstream_hist, h);
        }
    }

    static const char conns[] = "remora_upstream_connections";
    rb_family(b, conns, "gauge", "Open upstream connections by state.");
    for (size_t u = 0; u < l->n_upstreams; u++) {
        int64_t active = 0, idle = 0;
        for (size_t s = 0; s < n_shards; s++) {
            active += LOAD(vw[s].upstreams[u]->active);
            idle += LOAD(vw[s].upstreams[u]->idle);
        }
        labels = labels2(&lb, "upstream", l->upstream_label[u], "state", "active");
        rb_series(b, conns, NULL, labels);
        rb_i64(b, active);
        rb_put(b, "\n", 1);
        labels = labels2(&lb, "upstream", l->upstream_label[u], "state", "idle");
        rb_series(b, conns, NULL, labels);
        rb_i64(b, idle);
        rb_put(b, "\n", 1);
    }

    static const struct {
        const char *name, *help;
        size_t off;
    } gauges[] = {
        {"remora_upstream_pending_requests", "Requests waiting in the admission queue.",
         offsetof(struct rem_upstream_metrics, pending)},
        {"remora_upstream_requests_in_flight", "Requests holding an admission slot.",
         offsetof(struct rem_upstream_metrics, in_flight)},
        {"remora_upstream_concurrency_limit", "Current admission limit (requests in flight).",
         offsetof(struct rem_upstream_metrics, concurrency_limit)},
    };
    for (size_t k = 0; k < sizeof(gauges) / sizeof(gauges[0]); k++) {
        rb_family(b, gauges[k].name, "gauge", gauges[k].help);
        for (size_t u = 0; u < l->n_upstreams; u++) {
            int64_t v = 0;
            for (size_t s = 0; s < n_shards; s++)
                v += LOAD(*(const int64_t *)((const char *)vw[s].upstreams[u] + gauges[k].off));
            labels = labels2(&lb, "upstream", l->upstream_label[u], NULL, NULL);
            rb_series(b, gauges[k].name, NULL, labels);
            rb_i64(b, v);
            rb_put(b, "\n", 1);
        }
    }

    static const char fails[] = "remora_upstream_connect_failures_total";
    rb_family(b, fails, "counter", "Failed upstream connection attempts by reason.");
    for (size_t u = 0; u < l->n_upstreams; u++) {
        for (int r = 0; r < REM_CONNFAIL__N; r++) {
            uint64_t v = 0;
            for (size_t s = 0; s < n_shards; s++)
                v += LOAD(vw[s].upstreams[u]->connect_failures[r]);
            labels = labels2(&lb, "upstream", l->upstream_label[u], "reason", connfail_label[r]);
            rb_series(b, fails, NULL, labels);
            rb_u64(b, v);
            rb_put(b, "\n", 1);
        }
    }

    static const char *const dns_result[REM_DNS_RESULTS] = {
        "success", "nxdomain", "servfail", "timeout", "empty", "error", "no_resolvers"};
    static const char eps[] = "remora_upstream_endpoints";
    rb_family(b, eps, "gauge", "Endpoints (addresses) the upstream balances over.");
    for (size_t u = 0; u < l->n_upstreams; u++) {
        int64_t v = 0; /* every worker resolves the same names: the max is the set's size */
        for (size_t s = 0; s < n_shards; s++) {
            int64_t x = LOAD(vw[s].upstreams[u]->endpoints);
            v = x > v ? x : v;
        }
        labels = labels2(&lb, "upstream", l->upstream_label[u], NULL, NULL);
        rb_series(b, eps, NULL, labels);
        rb_i64(b, v);
        rb_put(b, "\n", 1);
    }
    /* DNS series only for upstreams that resolve names (have looked one up). The per-result
     * sums are read once, so the counter and the histogram agree on which upstreams appear. */
    static const char lookups[] = "remora_dns_lookups_total";
    static const char dns_dur[] = "remora_dns_lookup_duration_seconds";
    uint64_t(*dv)[REM_DNS_RESULTS] = calloc(l->n_upstreams ? l->n_upstreams : 1, sizeof(*dv));
    bool *has = calloc(l->n_upstreams ? l->n_upstreams : 1, sizeof(*has));
    bool fam = false;
    if (!dv || !has)
        b->oom = true;
    for (size_t u = 0; dv && has && u < l->n_upstreams; u++) {
        for (size_t s = 0; s < n_shards; s++)
            for (int r = 0; r < REM_DNS_RESULTS; r++)
                dv[u][r] += LOAD(vw[s].upstreams[u]->dns_lookups[r]);
        for (int r = 0; r < REM_DNS_RESULTS; r++)
            has[u] = has[u] || dv[u][r] > 0;
        fam = fam || has[u];
    }
    if (fam) {
        rb_family(b, lookups, "counter", "DNS lookups of upstream endpoint names by result.");
        for (size_t u = 0; u < l->n_upstreams; u++)
            for (int r = 0; has[u] && r < REM_DNS_RESULTS; r++) {
                labels = labels2(&lb, "upstream", l->upstream_label[u], "result", dns_result[r]);
                rb_series(b, lookups, NULL, labels);
                rb_u64(b, dv[u][r]);
                rb_put(b, "\n", 1);
            }
        rb_family(b, dns_dur, "histogram", "Duration of DNS lookups of upstream endpoint names.");
        for (size_t u = 0; u < l->n_upstreams; u++) {
            if (!has[u])
                continue;
            memset(h, 0, sizeof(*h));
            for (size_t s = 0; s < n_shards; s++)
                rem_hist_add(h, &vw[s].up_hists[u]->dns_duration, &l->upstream_hist);
            labels = labels2(&lb, "upstream", l->upstream_label[u], NULL, NULL);
            rb_hist(b, dns_dur, labels, &l->upstream_hist, h);
        }
    }
    free(dv);
    free(has);

    bool any_hc = false;
    for (size_t u = 0; proc && proc->upstream_healthy && u < l->n_upstreams; u++)
        any_hc |= proc->upstream_healthy[u] >= 0;
    if (any_hc) {
        static const char healthy[] = "remora_upstream_healthy";
        rb_family(b, healthy, "gauge", "1 when the upstream's health check passes, else 0.");
        for (size_t u = 0; u < l->n_upstreams; u++) {
            if (proc->upstream_healthy[u] < 0)
                continue;
            labels = labels2(&lb, "upstream", l->upstream_label[u], NULL, NULL);
            rb_series(b, healthy, NULL, labels);
            rb_u64(b, (uint64_t)proc->upstream_healthy[u]);
            rb_put(b, "\n", 1);
        }
    }
    free(h);
    b->oom |= lb.oom;
    free(lb.p);
}

static const char *const h2_reasons[REM_H2_REASONS + 1] = {
    "no_error",
    "protocol_error",
    "internal_error",
    "flow_control_error",
    "settings_timeout",
    "stream_closed",
    "frame_size_error",
    "refused_stream",
    "cancel",
    "compression_error",
    "connect_error",
    "enhance_your_calm",
    "inadequate_security",
    "http_1_1_required",
    "other",
};
static const char *const h2_sides[2] = {"downstream", "upstream"};

/* One counter family of HTTP/2 frames by side and error code: a series once non-zero, and with
 * keep_no_error the no_error series of each side always (present from the start). */
static void render_h2_by_reason(struct rbuf *b, const char *name, const char *help,
                                const uint64_t n[2][REM_H2_REASONS + 1], bool keep_no_error)
{
    rb_family(b, name, "counter", help);
    for (int k = 0; k < 2; k++)
        for (int r = 0; r <= REM_H2_REASONS; r++) {
            if (!n[k][r] && !(keep_no_error && r == 0))
                continue;
            rb_str(b, name);
            rb_str(b, "{side=\"");
            rb_str(b, h2_sides[k]);
            rb_str(b, "\",reason=\"");
            rb_str(b, h2_reasons[r]);
            rb_str(b, "\"} ");
            rb_u64(b, n[k][r]);
            rb_put(b, "\n", 1);
        }
}

/* Streams by protocol and HTTP/2 frame counters. Reset series appear once non-zero. */
static void render_http2(struct rbuf *b, const struct rem_metrics_view *vw, size_t n_shards)
{
    static const char *const protos[REM_DOWN_PROTOS] = {"http1", "h2c", "h2"};
    int64_t active = 0;
    uint64_t total[REM_DOWN_PROTOS] = {0}, goaway[2][REM_H2_REASONS + 1] = {{0}};
    uint64_t resets[2][REM_H2_REASONS + 1] = {{0}};
    for (size_t s = 0; s < n_shards; s++) {
        active += LOAD(vw[s].shard->downstream_streams_active);
        for (int k = 0; k < REM_DOWN_PROTOS; k++)
            total[k] += LOAD(vw[s].shard->downstream_streams_total[k]);
        for (int k = 0; k < 2; k++) {
            for (int r = 0; r <= REM_H2_REASONS; r++) {
                goaway[k][r] += LOAD(vw[s].shard->h2_goaway[k][r]);
                resets[k][r] += LOAD(vw[s].shard->h2_resets[k][r]);
            }
        }
    }
    rb_family(b, "remora_downstream_streams_active", "gauge",
              "HTTP/2 streams open on downstream connections.");
    rb_str(b, "remora_downstream_streams_active ");
    rb_i64(b, active);
    rb_put(b, "\n", 1);
    rb_family(b, "remora_downstream_streams_total", "counter",
              "Downstream streams (requests) started, by protocol.");
    for (int k = 0; k < REM_DOWN_PROTOS; k++) {
        rb_str(b, "remora_downstream_streams_total{proto=\"");
        rb_str(b, protos[k]);
        rb_str(b, "\"} ");
        rb_u64(b, total[k]);
        rb_put(b, "\n", 1);
    }
    render_h2_by_reason(b, "remora_http2_resets_total",
                        "HTTP/2 RST_STREAM frames sent or received, by side and error code.",
                        resets, false);
    render_h2_by_reason(b, "remora_http2_goaway_total",
                        "HTTP/2 GOAWAY frames sent or received, by side and error code.", goaway,
                        true);
}

/* TLS handshakes by side, when a listener terminates TLS or an upstream is reached over TLS
 * (both sides are rendered then, one at zero). A downstream shard's histogram counts only
 * where its buckets are the layout's (a worker that has not recorded since a reload changed
 * metrics.buckets shows none yet); the scrape reads tls_ml under the worker's gen_lock. The
 * upstream side sums the upstreams' counters and histograms (up_hists: the layout's buckets). */
static void render_tls(struct rbuf *b, const struct rem_metrics_layout *l,
                       const struct rem_metrics_view *vw, size_t n_shards)
{
    if (!l->tls && !l->up_tls)
        return;
    static const char *const sides[2] = {"downstream", "upstream"};
    static const char *const side[2] = {"side=\"downstream\"", "side=\"upstream\""};
    struct rbuf lb = {0};
    uint64_t results[2][REM_TLS_RESULT__N] = {{0}}, resumed[2] = {0};
    int64_t in_progress = 0;
    struct rem_hist_sum *h = calloc(2, sizeof(*h));
    if (!h) {
        b->oom = true;
        return;
    }
    for (size_t s = 0; s < n_shards; s++) {
        const struct rem_metrics_shard *m = vw[s].shard;
        for (int r = 0; r < REM_TLS_RESULT__N; r++)
            results[0][r] += LOAD(m->tls_handshakes[r]);
        resumed[0] += LOAD(m->tls_resumed);
        in_progress += LOAD(m->tls_handshakes_in_progress);
        if (m->tls_ml && rem_hist_layout_same(&m->tls_ml->upstream_hist, &l->upstream_hist))
            rem_hist_add(&h[0], &m->tls_handshake_duration, &l->upstream_hist);
        for (size_t u = 0; u < l->n_upstreams; u++) {
            const struct rem_upstream_metrics *um = vw[s].upstreams[u];
            for (int r = 0; r < REM_TLS_RESULT__N; r++)
                results[1][r] += LOAD(um->tls_handshakes[r]);
            resumed[1] += LOAD(um->tls_resumed);
            rem_hist_add(&h[1], &vw[s].up_hists[u]->tls_handshake_duration, &l->upstream_hist);
        }
    }
    static const char hs[] = "remora_tls_handshakes_total";
    rb_family(b, hs, "counter", "TLS handshakes by side and result.");
    for (int k = 0; k < 2; k++)
        for (int r = 0; r < REM_TLS_RESULT__N; r++) {
            if (k == 1 && r == REM_TLS_REFUSED) /* the cap is on client handshakes only */
                continue;
            rb_series(b, hs, NULL, labels2(&lb, "side", sides[k], "result", tls_result_label[r]));
            rb_u64(b, results[k][r]);
            rb_put(b, "\n", 1);
        }
    free(lb.p);
    static const char dur[] = "remora_tls_handshake_duration_seconds";
    rb_family(b, dur, "histogram",
              "Time from accepting (downstream) or starting (upstream) a connection to its "
              "completed TLS handshake, by side.");
    for (int k = 0; k < 2; k++)
        rb_hist(b, dur, side[k], &l->upstream_hist, &h[k]);
    static const char res[] = "remora_tls_resumed_total";
    rb_family(b, res, "counter", "TLS handshakes that resumed a session, by side.");
    for (int k = 0; k < 2; k++) {
        rb_series(b, res, NULL, side[k]);
        rb_u64(b, resumed[k]);
        rb_put(b, "\n", 1);
    }
    static const char prog[] = "remora_tls_handshakes_in_progress";
    rb_family(b, prog, "gauge", "TLS handshakes under way, by side.");
    rb_series(b, prog, NULL, side[0]);
    rb_i64(b, in_progress);
    rb_put(b, "\n", 1);
    free(h);
}

/* One family with one series and no labels. */
static void rb_unlabelled(struct rbuf *b, const char *name, const char *type, const char *help,
                          int64_t v)
{
    rb_family(b, name, type, help);
    rb_str(b, name);
    rb_put(b, " ", 1);
    rb_i64(b, v);
    rb_put(b, "\n", 1);
}

/* Certificate rotation: reloads a TLS file change asked for, and each listener's expiry. */
static void render_tls_certs(struct rbuf *b, const struct rem_metrics_process *p)
{
    if (!p->n_tls)
        return; /* like every remora_tls_* family: only with a TLS listener */
    rb_success_failure(b, "remora_tls_cert_reloads_total",
                       "Reloads a change of a TLS listener's certificate or key files asked for, "
                       "by result.",
                       p->tls_cert_reloads_ok, p->tls_cert_reloads_failed);
    rb_family(b, "remora_tls_cert_expiry_timestamp_seconds", "gauge",
              "When a certificate remora serves, presents or trusts expires (its notAfter), Unix "
              "seconds, by cert (listener/NAME, listener/NAME/client_ca, upstream/NAME, "
              "upstream/NAME/ca).");
    for (size_t i = 0; i < p->n_tls; i++) {
        char *name = rem_metrics_escape_label(p->tls_listeners[i]);
        rb_str(b, "remora_tls_cert_expiry_timestamp_seconds{cert=\"");
        rb_str(b, name);
        rb_str(b, "\"} ");
        rb_double(b, p->tls_not_after[i]);
        rb_put(b, "\n", 1);
        free(name);
    }
}

static void render_process(struct rbuf *b, const struct rem_metrics_layout *l,
                           const struct rem_metrics_view *vw, size_t n_shards,
                           const struct rem_metrics_process *p)
{
    int64_t open = 0;
    uint64_t total = 0;
    for (size_t s = 0; s < n_shards; s++) {
        open += LOAD(vw[s].shard->downstream_connections);
        total += LOAD(vw[s].shard->downstream_connections_total);
    }
    rb_unlabelled(b, "remora_downstream_connections", "gauge", "Open downstream connections.",
                  open);
    rb_unlabelled(b, "remora_downstream_connections_total", "counter",
                  "Downstream connections accepted.", (int64_t)total);
    render_http2(b, vw, n_shards);
    render_tls(b, l, vw, n_shards);
    uint64_t cut = 0, underscore = 0;
    int64_t tunnels = 0;
    for (size_t s = 0; s < n_shards; s++) {
        cut += LOAD(vw[s].shard->drain_cut);
        tunnels += LOAD(vw[s].shard->tunnels_active);
        underscore += LOAD(vw[s].shard->headers_dropped_underscore);
    }
    rb_unlabelled(b, "remora_drain_cut_total", "counter",
                  "Requests cut because they were still in flight at drain.timeout.", (int64_t)cut);
    rb_unlabelled(b, "remora_tunnels_active", "gauge",
                  "Open tunnels (WebSocket and other Upgrades, CONNECT).", tunnels);
    rb_family(
        b, "remora_downstream_headers_dropped_total", "counter",
        "Request fields not forwarded to the app, by reason (limits.headers_with_underscores).");
    rb_series(b, "remora_downstream_headers_dropped_total", NULL, "reason=\"underscore\"");
    rb_u64(b, underscore);
    rb_str(b, "\n");
    if (!p)
        return;
    if (p->config_hash) {
        rb_family(b, "remora_config_info", "gauge",
                  "The active configuration generation (hash of GET /config's settings).");
        rb_str(b, "remora_config_info{hash=\"");
        rb_str(b, p->config_hash); /* hex digits: nothing to escape */
        rb_str(b, "\"} 1\n");
    }
    if (p->config_generation) {
        rb_family(b, "remora_config_generation", "gauge",
                  "The active configuration generation: 1 at start, +1 per successful reload.");
        rb_str(b, "remora_config_generation ");
        rb_u64(b, p->config_generation);
        rb_put(b, "\n", 1);
        rb_success_failure(b, "remora_config_reloads_total",
                           "Configuration reloads (SIGHUP, file change) by result.", p->reloads_ok,
                           p->reloads_failed);
        rb_family(b, "remora_config_last_reload_success_timestamp_seconds", "gauge",
                  "When the active configuration was loaded (start or reload), Unix seconds.");
        rb_str(b, "remora_config_last_reload_success_timestamp_seconds ");
        rb_double(b, p->last_reload_success);
        rb_put(b, "\n", 1);
        render_tls_certs(b, p);
    }
    rb_family(b, "remora_draining", "gauge", "1 while a drain (SIGTERM, POST /drain) runs.");
    rb_str(b, p->draining ? "remora_draining 1\n" : "remora_draining 0\n");
    char *ver = rem_metrics_escape_label(p->version ? p->version : "");
    char *commit = rem_metrics_escape_label(p->commit ? p->commit : "");
    rb_family(b, "remora_build_info", "gauge", "remora's version and commit.");
    rb_str(b, "remora_build_info{version=\"");
    rb_str(b, ver);
    rb_str(b, "\",commit=\"");
    rb_str(b, commit);
    rb_str(b, "\"} 1\n");
    free(ver);
    free(commit);
    static const struct {
        const char *name, *type, *help;
        size_t off;
    } pm[] = {
        {"process_cpu_seconds_total", "counter", "Total user and system CPU time in seconds.",
         offsetof(struct rem_metrics_process, cpu_seconds)},
        {"process_resident_memory_bytes", "gauge", "Resident memory size in bytes.",
         offsetof(struct rem_metrics_process, resident_bytes)},
        {"process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.",
         offsetof(struct rem_metrics_process, virtual_bytes)},
        {"process_open_fds", "gauge", "Number of open file descriptors.",
         offsetof(struct rem_metrics_process, open_fds)},
        {"process_max_fds", "gauge", "Maximum number of open file descriptors.",
         offsetof(struct rem_metrics_process, max_fds)},
        {"process_start_time_seconds", "gauge",
         "Start time of the process since the Unix epoch in seconds.",
         offsetof(struct rem_metrics_process, start_time_seconds)},
    };
    for (size_t k = 0; k < sizeof(pm) / sizeof(pm[0]); k++) {
        double v = *(const double *)((const char *)p + pm[k].off);
        if (isnan(v))
            continue; /* not readable here (no /proc): no series rather than a false 0 */
        rb_family(b, pm[k].name, pm[k].type, pm[k].help);
        rb_str(b, pm[k].name);
        rb_put(b, " ", 1);
        rb_double(b, v);
        rb_put(b, "\n", 1);
    }
}

int rem_metrics_render(struct evbuffer *out, const struct rem_metrics_layout *l,
                       const struct rem_metrics_view *vw, size_t n_shards,
                       const struct rem_metrics_process *proc, enum rem_expo_format fmt)
{
    struct rbuf b = {.om = fmt == REM_EXPO_OPENMETRICS};
    render_routes(&b, l, vw, n_shards);
    render_upstreams(&b, l, vw, n_shards, proc);
    render_process(&b, l, vw, n_shards, proc);
    if (b.om)
        rb_str(&b, "# EOF\n");
    int rc = 0;
    if (b.oom || evbuffer_add(out, b.p, b.len) < 0)
        rc = -REM_E_NOMEM;
    free(b.p);
    return rc;
}
