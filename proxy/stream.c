/* SPDX-License-Identifier: Apache-2.0
 * stream: routes a request, gets it an upconn (pooled or new), moves bodies between the two
 * sides with backpressure, decides the one retry, and ends with one access-log line. */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "cluster.h"
#include "config.h"
#include "conn.h"
#include "error.h"
#include "gen.h"
#include "identity.h"
#include "upconn.h"
#include "log.h"
#include "metrics.h"
#include "router.h"
#include "stream.h"
#include "admit.h"
#include "upool.h"
#include "worker.h"

#define REM_STREAM_FREELIST_MAX 256

static void on_route_admitted(struct rem_wait *w, int rc);
static void on_upstream_admitted(struct rem_wait *w, int rc);
static void on_dns_done(struct rem_wait *w, int rc);
static void on_pool_done(struct rem_wait *w, int rc);

static void drop_replay(struct rem_stream *s)
{
    if (s->replay) {
        evbuffer_free(s->replay);
        s->replay = NULL;
    }
    s->replay_ok = false;
}

/* RFC 9110 9.2.2 */
static bool idempotent(const struct rem_head *h)
{
    static const char *const m[] = {"GET", "HEAD", "PUT", "DELETE", "OPTIONS", "TRACE"};
    const char *p = rem_head_ptr(h, h->span_off[REM_SPAN_METHOD]);
    size_t n = h->span_len[REM_SPAN_METHOD];
    for (size_t i = 0; i < sizeof(m) / sizeof(m[0]); i++)
        if (strlen(m[i]) == n && memcmp(m[i], p, n) == 0)
            return true;
    return false;
}

/* The downstream codec of s. */
static inline const struct rem_down_ops *down(const struct rem_stream *s)
{
    return s->conn->down;
}

/* s is done with its upconn before the exchange completed, or leaves a wait: an HTTP/1.1
 * upconn cannot be reused (it is closed), an HTTP/2 one only loses this stream (RST_STREAM
 * CANCEL). After this, nothing calls s back about an upconn. */
static void up_abandon(struct rem_stream *s)
{
    struct rem_upconn *uc = s->upconn;
    rem_upool_cancel(&s->preq);
    if (s->cluster)
        rem_cluster_unwait_dns(s->cluster, &s->dns_w);
    if (!uc)
        return;
    s->upconn = NULL;
    uc->up->cancel(uc, s);
}

/* The endpoint s talks to: referenced, and counted for least_request. */
static void set_endpoint(struct rem_stream *s, struct rem_endpoint *ep)
{
    if (s->endpoint) {
        s->endpoint->n_streams--;
        rem_endpoint_unref(s->endpoint);
    }
    s->endpoint = ep;
    if (ep) {
        ep->n_streams++;
        rem_endpoint_ref(ep);
    }
}

struct rem_stream *rem_stream_new(struct rem_conn *c)
{
    struct rem_worker *w = c->worker;
    const struct rem_cfg_limits *lim = &c->cfg->limits;
    struct rem_stream *s = w->free_streams;
    if (s) {
        w->free_streams = s->next_free;
        w->n_free_streams--;
    } else {
        s = rem_xcalloc(1, sizeof(*s));
        rem_head_init(&s->req, 0, 0);
        rem_head_init(&s->resp, 0, 0);
        rem_head_init(&s->req_trl, 0, 0);
        rem_head_init(&s->resp_trl, 0, 0);
    }
    /* Keep the four head arenas; clear everything else. */
    struct rem_head heads[4] = {s->req, s->resp, s->req_trl, s->resp_trl};
    memset(s, 0, sizeof(*s));
    s->req = heads[0];
    s->resp = heads[1];
    s->req_trl = heads[2];
    s->resp_trl = heads[3];
    uint32_t maxb =
        (uint32_t)(lim->max_header_bytes > UINT32_MAX / 2 ? UINT32_MAX / 2 : lim->max_header_bytes);
    struct rem_head *hs[] = {&s->req, &s->resp, &s->req_trl, &s->resp_trl};
    for (size_t i = 0; i < 4; i++)
        rem_head_set_limits(hs[i], maxb, lim->max_headers);
    rem_head_reset(&s->req);
    rem_head_reset(&s->resp);
    rem_head_reset(&s->req_trl);
    rem_head_reset(&s->resp_trl);
    rem_head_set_underscores(&s->req, lim->headers_with_underscores);
    rem_head_set_underscores(&s->req_trl, lim->headers_with_underscores);
    s->worker = w;
    s->conn = c;
    rem_wait_init(&s->rt.w, on_route_admitted);
    rem_wait_init(&s->ut.w, on_upstream_admitted);
    rem_wait_init(&s->dns_w, on_dns_done);
    rem_wait_init(&s->preq.w, on_pool_done);
    REM_M_ADD(w->metrics->downstream_streams_total[c->down->proto], 1);
    s->gen = rem_gen_ref(w->gen); /* new streams use the newest routes, also on old conns */
    s->mroute = s->gen->cfg->n_routes;
    s->state = REM_STREAM_HEAD;
    s->start_ns = rem_now_ns();
    s->err = REM_E_OK;
    return s;
}

void rem_stream_freelist_dispose(struct rem_worker *w)
{
    while (w->free_streams) {
        struct rem_stream *s = w->free_streams;
        w->free_streams = s->next_free;
        rem_head_dispose(&s->req);
        rem_head_dispose(&s->resp);
        rem_head_dispose(&s->req_trl);
        rem_head_dispose(&s->resp_trl);
        free(s);
    }
    w->n_free_streams = 0;
}

void rem_stream_free(struct rem_stream *s)
{
    if (!s)
        return;
    REM_BUG_ON(s->upconn != NULL || s->up_ctx != NULL);
    REM_BUG_ON(s->preq.w.queued || s->dns_w.queued);
    set_endpoint(s, NULL);
    drop_replay(s);
    if (s->deadline) {
        event_free(s->deadline);
        s->deadline = NULL;
    }
    if (s->body_timer) {
        event_free(s->body_timer);
        s->body_timer = NULL;
    }
    struct rem_worker *w = s->worker;
    rem_gen_unref(s->gen); /* the last stream of an old generation frees it */
    s->gen = NULL;
    if (w->n_free_streams < REM_STREAM_FREELIST_MAX) {
        s->next_free = w->free_streams;
        w->free_streams = s;
        w->n_free_streams++;
        return;
    }
    rem_head_dispose(&s->req);
    rem_head_dispose(&s->resp);
    rem_head_dispose(&s->req_trl);
    rem_head_dispose(&s->resp_trl);
    free(s);
}

/* The gRPC status of a finished gRPC call: the app's (trailers, or a trailers-only head), or
 * the one remora answered with; -1 when none is known (the call broke). */
static int grpc_status_of(const struct rem_stream *s)
{
    const struct rem_head *hs[2] = {&s->resp_trl, &s->resp};
    if (s->err != REM_E_OK)
        return rem_err_status(s->err) ? rem_err_grpc_status(s->err) : -1;
    for (int k = 0; k < 2; k++)
        for (uint32_t i = 0; i < hs[k]->n_hdrs; i++) {
            const struct rem_hdr *x = &hs[k]->hdrs[i];
            if (!rem_http_name_eq(REM_HDR_NAME(hs[k], x), x->name_len, "grpc-status"))
                continue;
            int v = 0;
            const char *p = REM_HDR_VAL(hs[k], x);
            for (uint32_t j = 0; j < x->val_len && j < 3 && p[j] >= '0' && p[j] <= '9'; j++)
                v = v * 10 + (p[j] - '0');
            return v;
        }
    return -1;
}

/* The access log's termination code: a tunnel that ended cleanly, or by one side's abort,
 * says who ended it first (CT the client, ST the app); a client's bad input found in the body
 * or trailers (a bad chunk size, a refused trailer) says D, not the table's R; anything else
 * is its error's. */
static const char *termination(const struct rem_stream *s)
{
    if (!s->tunnel) {
        const char *t = rem_err_term(s->err);
        return s->err_in_body && t[0] == 'C' && t[1] == 'R' ? "CD" : t;
    }
    switch (s->err) {
    case REM_E_OK:
        return s->tunnel_closer == 'S' ? "ST" : "CT";
    case REM_E_CLIENT_ABORT:
        return "CT";
    case REM_E_UPSTREAM_RESET:
    case REM_E_UPSTREAM_TRUNCATED:
        return "ST";
    default:
        return rem_err_term(s->err);
    }
}

static void access_log(struct rem_stream *s)
{
    struct rem_logline l;
    const struct rem_head *h = &s->req;
    rem_logline_begin(&l, REM_LOG_INFO, "access");
    rem_logline_str(&l, "method", rem_head_ptr(h, h->span_off[REM_SPAN_METHOD]),
                    h->span_len[REM_SPAN_METHOD]);
    rem_logline_strmax(&l, "path", rem_head_ptr(h, h->span_off[REM_SPAN_TARGET]),
                       h->span_len[REM_SPAN_TARGET], REM_LOG_URI_MAX);
    rem_logline_str(&l, "route", s->route ? s->route->name : "", -1);
    rem_logline_int(&l, "status", s->status_sent);
    rem_logline_str(&l, "upstream", s->endpoint ? s->endpoint->name : NULL, -1);
    rem_logline_int(&l, "bytes_in", (int64_t)s->bytes_in);
    rem_logline_int(&l, "bytes_out", (int64_t)s->bytes_out);
    rem_logline_double(&l, "duration_s", (double)(rem_now_ns() - s->start_ns) / 1e9);
    rem_logline_str(&l, "termination", termination(s), -1);
    rem_logline_str(&l, "client_san", rem_identity_first_san(rem_conn_identity(s->conn)), -1);
    if (s->tunnel) {
        rem_logline_int(&l, "tunnel_bytes_up", (int64_t)s->tunnel_up);
        rem_logline_int(&l, "tunnel_bytes_down", (int64_t)s->tunnel_down);
    }
    if (s->grpc) {
        int gs = grpc_status_of(s);
        if (gs >= 0)
            rem_logline_int(&l, "grpc_status", gs);
    }
    if (s->err != REM_E_OK)
        rem_logline_str(&l, "error", rem_err_label(s->err), -1);
    rem_logline_str(&l, "request_id", s->rid, s->rid ? (long)s->rid_len : 0);
    rem_logline_str(&l, "client", s->conn->peer, -1);
    if (rem_conn_tls_version(s->conn)) {
        size_t alpn_len;
        const char *alpn = rem_conn_alpn(s->conn, &alpn_len);
        rem_logline_str(&l, "tls_version", rem_conn_tls_version(s->conn), -1);
        if (alpn)
            rem_logline_str(&l, "alpn", alpn, (long)alpn_len);
    }
    rem_logline_end(&l);
}

/* Ends the stream: one log line, counters, then the conn decides what follows. */
static void finish(struct rem_stream *s)
{
    if (s->state == REM_STREAM_DONE)
        return;
    s->state = REM_STREAM_DONE;
    up_abandon(s); /* never left half-used */
    if (s->deadline)
        event_del(s->deadline);
    if (s->body_timer)
        event_del(s->body_timer);
    /* Route indices index the stream's generation (DESIGN.md, "Generations and indices"). */
    struct rem_gen *g = s->gen;
    if (s->tunnel) {
        /* The opening request was counted when the tunnel opened; the client's bytes since
         * (as the wire counts them, like every request's) go on. */
        struct rem_route_metrics *m = &g->routes[s->mroute]->m;
        REM_M_ADD(m->request_bytes, s->bytes_in - s->open_in);
        REM_M_ADD(m->response_bytes, s->bytes_out - s->open_out);
        REM_M_ADD(s->worker->metrics->tunnels_active, -1);
    } else {
        rem_metrics_record_request(&g->routes[s->mroute]->m, &g->hists[s->mroute]->h,
                                   &g->ml->route_hist[s->mroute], s->in_flight, s->status_sent,
                                   rem_now_ns() - s->start_ns, s->bytes_in, s->bytes_out);
    }
    s->in_flight = false;
    REM_M_ADD(s->worker->metrics->streams_finished, 1);
    if (s->err == REM_E_DRAIN_TIMEOUT)
        REM_M_ADD(s->worker->metrics->drain_cut, 1);
    if (s->gen->cfg->log.access_log)
        access_log(s);
    rem_admit_leave(&s->rt);
    rem_admit_leave(&s->ut);
    down(s)->stream_done(s); /* frees s once the codec is done with it too */
}

/* A tunnel ends when both sides have ended theirs; an exchange when its response is out and
 * its request read (or not to be read: the conn closes). */
static void maybe_finish(struct rem_stream *s)
{
    if (s->resp_done && (s->req_done || (s->down_close && !s->tunnel)))
        finish(s);
}

/* Enters one admission level. Returns true when s may go on now; otherwise s was queued (its
 * body, if any, stays unread) or refused. */
static bool admit(struct rem_stream *s, struct rem_admit *a, struct rem_admit_ticket *t)
{
    int rc = rem_admit_enter(a, t);
    if (rc < 0) {
        rem_stream_fail(s, rem_err_from_rc(rc));
        return false;
    }
    if (rc == 1) {
        s->state = REM_STREAM_QUEUED;
        return false;
    }
    return true;
}

static void connect_upstream(struct rem_stream *s, bool use_pool)
{
    struct rem_endpoint *ep = rem_cluster_pick(s->cluster);
    if (!ep) {
        if (rem_cluster_wait_dns(s->cluster, &s->dns_w)) {
            s->state = REM_STREAM_CONNECT; /* until the first answer or queue_timeout */
            return;
        }
        rem_stream_fail(s, s->cluster->n_sources ? REM_E_DNS : REM_E_NO_ENDPOINT);
        return;
    }
    set_endpoint(s, ep);
    s->state = REM_STREAM_CONNECT;
    s->preq.s = s;
    s->preq.ep = ep;
    int rc = rem_upool_acquire(&s->preq, use_pool);
    if (rc < 0) {
        rem_stream_fail(s, rem_err_from_rc(rc));
        return;
    }
    if (rc == 0)
        rem_stream_on_upconn_ready(s, s->preq.uc);
    else if (rc == 1)
        s->upconn = s->preq.uc; /* connecting: on_upconn_ready or on_upconn_error follows */
    /* 2: waiting for a slot; on_pool_done follows */
}

/* A queued acquire got its upconn (ready or connecting), or failed. */
static void on_pool_done(struct rem_wait *w, int rc)
{
    struct rem_stream *s = REM_WAIT_OWNER(w, struct rem_stream, preq.w);
    if (rc < 0)
        rem_stream_fail(s, rem_err_from_rc(rc));
    else if (s->preq.connecting)
        s->upconn = s->preq.uc;
    else
        rem_stream_on_upconn_ready(s, s->preq.uc);
}

/* The cluster's first DNS answer came (rc 0), or queue_timeout passed (-REM_E_DNS). */
static void on_dns_done(struct rem_wait *w, int rc)
{
    struct rem_stream *s = REM_WAIT_OWNER(w, struct rem_stream, dns_w);
    if (rc < 0)
        rem_stream_fail(s, rem_err_from_rc(rc));
    else
        connect_upstream(s, !s->tunnel_req);
}

/* A queued admission ticket was granted its slot (rc 0) or dropped (queue timeout,
 * shutdown). */
static void admitted(struct rem_stream *s, int rc)
{
    if (rc < 0) {
        rem_stream_fail(s, rem_err_from_rc(rc));
        return;
    }
    if (!s->ut.held && !admit(s, &s->cluster->admit, &s->ut))
        return; /* the route let it through; now it waits for the upstream */
    connect_upstream(s, !s->tunnel_req);
}

static void on_route_admitted(struct rem_wait *w, int rc)
{
    admitted(REM_WAIT_OWNER(w, struct rem_stream, rt.w), rc);
}

static void on_upstream_admitted(struct rem_wait *w, int rc)
{
    admitted(REM_WAIT_OWNER(w, struct rem_stream, ut.w), rc);
}

static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
    struct rem_stream *s = arg;
    rem_log_debug("stream: grpc-timeout expired");
    rem_stream_fail(s, REM_E_UPSTREAM_TIMEOUT);
}

/* gRPC over HTTP/2: "grpc-timeout: 1-8 digits + H M S m u n" is the call's deadline. */
static void arm_grpc_deadline(struct rem_stream *s)
{
    const struct rem_head *h = &s->req;
    for (uint32_t i = 0; i < h->n_hdrs; i++) {
        const struct rem_hdr *x = &h->hdrs[i];
        if (!rem_http_name_eq(REM_HDR_NAME(h, x), x->name_len, "grpc-timeout"))
            continue;
        const char *v = REM_HDR_VAL(h, x);
        size_t n = x->val_len;
        if (n < 2 || n > 9)
            return;
        uint64_t q = 0;
        for (size_t k = 0; k + 1 < n; k++) {
            if (v[k] < '0' || v[k] > '9')
                return;
            q = q * 10 + (uint64_t)(v[k] - '0');
        }
        uint64_t us;
        switch (v[n - 1]) {
        case 'H':
            us = q * 3600 * 1000000;
            break;
        case 'M':
            us = q * 60 * 1000000;
            break;
        case 'S':
            us = q * 1000000;
            break;
        case 'm':
            us = q * 1000;
            break;
        case 'u':
            us = q;
            break;
        case 'n':
            us = q / 1000;
            break;
        default:
            return;
        }
        if (!s->deadline)
            s->deadline = evtimer_new(s->worker->loop.base, on_deadline, s);
        if (!s->deadline)
            return;
        struct timeval tv = {(time_t)(us / 1000000), (suseconds_t)(us % 1000000)};
        event_add(s->deadline, &tv);
        return;
    }
}

static void on_body_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct rem_stream *s = arg;
    rem_log_debug("stream: request body not received within request_body_timeout");
    rem_stream_fail(s, REM_E_CLIENT_TIMEOUT);
}

/* limits.request_body_timeout bounds the whole body, not the gap between two reads: a client
 * trickling a byte now and then (slow POST) would otherwise hold an upstream connection, and
 * the app's worker behind it, for as long as it likes. It starts when the body can first flow
 * to the app (queueing and connecting are not the client's time) and runs once, across a
 * retry. */
static void arm_body_timer(struct rem_stream *s)
{
    uint64_t ms = s->conn->cfg->limits.request_body_timeout_ms;
    if (!ms || s->body_timer)
        return;
    s->body_timer = evtimer_new(s->worker->loop.base, on_body_timeout, s);
    if (!s->body_timer)
        return; /* control-path OOM: the body simply has no deadline */
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)((ms % 1000) * 1000)};
    event_add(s->body_timer, &tv);
}

/* Whether s's route tunnels a protocol the client offered; if so s->upgrade becomes that one
 * protocol alone, the only one offered to the app (and the only one its 101 may name). */
static bool pick_upgrade(struct rem_stream *s)
{
    size_t off, n;
    if (!rem_route_allows_upgrade(s->route, s->upgrade, s->upgrade_len, &off, &n))
        return false;
    memmove(s->upgrade, s->upgrade + off, n);
    s->upgrade[n] = '\0';
    s->upgrade_len = (uint8_t)n;
    return true;
}

/* Applies limits.headers_with_underscores to a classified request head or its trailers (both
 * codecs, one place): under REJECT the stream fails (400 header_underscore, counted with the
 * other refused requests); under DROP the classification already keeps them from the app and
 * they are counted here. Returns false when s failed. */
static bool underscores_ok(struct rem_stream *s, const struct rem_head *h)
{
    if (h->n_underscore == 0)
        return true;
    if (h->underscores == REM_UNDERSCORES_REJECT) {
        rem_stream_fail(s, REM_E_HEADER_UNDERSCORE);
        return false;
    }
    REM_M_ADD(s->worker->metrics->headers_dropped_underscore, h->n_underscore);
    rem_log_debug("conn %s: %" PRIu32 " field(s) named with '_' dropped", s->conn->peer,
                  h->n_underscore);
    return true;
}

void rem_stream_start(struct rem_stream *s)
{
    struct rem_head *h = &s->req;
    const char *host = NULL;
    size_t host_len = 0;
    if (h->host_idx >= 0) {
        host = REM_HDR_VAL(h, &h->hdrs[h->host_idx]);
        host_len = h->hdrs[h->host_idx].val_len;
    }
    if (h->request_id_idx >= 0) {
        const struct rem_hdr *x = &h->hdrs[h->request_id_idx];
        s->rid = REM_HDR_VAL(h, x);
        s->rid_len = x->val_len;
    } else {
        rem_http_request_id(s->request_id, &s->worker->rng);
        s->rid = s->request_id;
        s->rid_len = 36;
    }
    if (!underscores_ok(s, h))
        return;
    struct rem_gen *g = s->gen;
    s->mroute = g->cfg->n_routes; /* unmatched until a route matches */
    if (s->grpc)
        arm_grpc_deadline(s);
    s->route = rem_router_match(
        g->cfg, rem_head_ptr(h, h->span_off[REM_SPAN_METHOD]), h->span_len[REM_SPAN_METHOD], host,
        host_len, rem_head_ptr(h, h->span_off[REM_SPAN_TARGET]), h->span_len[REM_SPAN_TARGET]);
    /* match.client_san is a permission on the route picked, not a match: a client it refuses
     * gets 403, never the next route (a catch-all after it would open what it closes). */
    if (s->route && s->route->n_client_san &&
        !rem_identity_allowed(rem_conn_identity(s->conn), s->route->client_san,
                              s->route->n_client_san)) {
        s->mroute = (size_t)(s->route - g->cfg->routes);
        rem_stream_fail(s, REM_E_CLIENT_NOT_ALLOWED);
        return;
    }
    bool connect = rem_http_name_eq(rem_head_ptr(h, h->span_off[REM_SPAN_METHOD]),
                                    h->span_len[REM_SPAN_METHOD], "CONNECT");
    if (connect) {
        /* Plain CONNECT only where a route allows it, and only to that route's upstream (never
         * to the authority the client names: remora is not an open proxy); an h2 extended
         * CONNECT where the route tunnels its :protocol. */
        bool ok = s->route && (s->upgrade_len ? pick_upgrade(s) : s->route->connect);
        if (!ok) {
            if (s->route)
                s->mroute = (size_t)(s->route - g->cfg->routes);
            rem_stream_fail(s, REM_E_CONNECT_DISABLED);
            return;
        }
        s->tunnel_req = s->upgrade_len ? REM_TUNNEL_UPGRADE : REM_TUNNEL_CONNECT;
    } else if (s->route && s->upgrade_len && pick_upgrade(s)) {
        s->tunnel_req = REM_TUNNEL_UPGRADE; /* otherwise the Upgrade is dropped (hop-by-hop) */
    }
    if (!s->route) {
        rem_stream_fail(s, REM_E_NO_ROUTE);
        return;
    }
    s->mroute = (size_t)(s->route - g->cfg->routes);
    s->in_flight = true;
    /* Indices and arrays from the same generation (DESIGN.md, "Generations and indices"). */
    REM_M_ADD(g->routes[s->mroute]->m.in_flight, 1);
    s->cluster = g->clusters[s->route->upstream_idx];
    /* Bodies are kept for the one retry when it is safe: idempotent methods (the keep-alive
     * race), and any method toward HTTP/2, where an unprocessed stream (REFUSED_STREAM, above a
     * GOAWAY) is always safe to send again (RFC 9113 8.7). */
    s->replay_ok = s->req_has_body && !s->tunnel_req &&
                   (idempotent(h) || s->cluster->cfg->protocol != REM_PROTO_HTTP1);
    if (s->tunnel_req) {
        /* Tunnel bytes are not a body: they flow, unframed, once the tunnel opens. */
        s->req_has_body = false;
        s->req_chunked = false;
    }
    struct rem_admit *ra = g->route_admits[s->mroute];
    if (ra) {
        if (!admit(s, ra, &s->rt))
            return;
    }
    if (admit(s, &s->cluster->admit, &s->ut))
        connect_upstream(s, !s->tunnel_req);
}

void rem_stream_on_upconn_ready(struct rem_stream *s, struct rem_upconn *uc)
{
    s->upconn = uc;
    s->state = REM_STREAM_ACTIVE;
    s->up_start_ns = rem_now_ns();
    if (s->tunnel_req == REM_TUNNEL_CONNECT) {
        /* Connected: that is the whole answer to a plain CONNECT (RFC 9110 9.3.6). */
        rem_head_reset(&s->resp);
        s->resp.status = 200;
        rem_head_set_version(&s->resp, 1, 1);
        s->req_sent = true;
        (void)rem_stream_on_upgrade(s); /* fails s itself when it cannot */
        return;
    }
    if (uc->up->write_head(uc, s) < 0) {
        rem_stream_fail(s, REM_E_NOMEM);
        return;
    }
    rem_upconn_start_response_timer(uc, s->route->timeout_ms);
    if (s->retried && s->replay && evbuffer_get_length(s->replay) > 0) {
        size_t n = evbuffer_get_length(s->replay);
        const char *p = (const char *)evbuffer_pullup(s->replay, (ev_ssize_t)n);
        if (!p || uc->up->write_body(uc, s, p, n) < 0) {
            rem_stream_fail(s, REM_E_NOMEM);
            return;
        }
    }
    if (s->req_done) {
        if (uc->up->write_end(uc, s) < 0) {
            rem_stream_fail(s, REM_E_NOMEM);
            return;
        }
        s->req_sent = true;
    } else if (s->req_has_body) {
        arm_body_timer(s);
        down(s)->req_ready(s);
    }
}

bool rem_stream_req_body(struct rem_stream *s, const char *p, size_t n)
{
    s->req_body_bytes += (int64_t)n;
    if (!s->upconn || s->state != REM_STREAM_ACTIVE)
        return false; /* the stream failed; the conn closes after the error */
    if (s->upconn->up->write_body(s->upconn, s, p, n) < 0) {
        rem_stream_fail(s, REM_E_NOMEM);
        return false;
    }
    if (s->tunnel) {
        s->tunnel_up += n;
        rem_upconn_touch(s->upconn); /* either direction keeps a tunnel alive */
    }
    if (s->replay_ok && !s->resp_started) {
        /* Keep what went out, bounded, so the one retry can send it again. */
        if (!s->replay)
            s->replay = evbuffer_new();
        if (!s->replay || evbuffer_get_length(s->replay) + n > s->conn->cfg->limits.buffer_bytes ||
            evbuffer_add(s->replay, p, n) < 0)
            drop_replay(s);
    }
    return s->upconn->up->full(s->upconn, s);
}

void rem_stream_req_end(struct rem_stream *s)
{
    if (s->tunnel && !s->req_done && !s->tunnel_closer)
        s->tunnel_closer = 'C';
    s->req_done = true;
    if (s->body_timer)
        event_del(s->body_timer);
    if (s->state == REM_STREAM_HEAD)
        return; /* no body: rem_stream_start follows */
    if (s->req_trl.n_hdrs) {
        /* Trailers are checked before they go (the upstream codec classifies them again). */
        rem_head_classify(&s->req_trl);
        if (!underscores_ok(s, &s->req_trl))
            return;
    }
    if (s->upconn && s->state == REM_STREAM_ACTIVE && !s->req_sent) {
        if (s->upconn->up->write_end(s->upconn, s) < 0) {
            rem_stream_fail(s, REM_E_NOMEM);
            return;
        }
        s->req_sent = true;
    }
    maybe_finish(s);
}

void rem_stream_on_upconn_writable(struct rem_stream *s)
{
    if (s->upconn)
        rem_upconn_touch(s->upconn);
    if (s->tunnel_req && !s->tunnel)
        return; /* the client's bytes wait for the app to accept the tunnel */
    down(s)->req_resume(s);
}

void rem_stream_on_upconn_error(struct rem_stream *s, enum rem_err e, enum rem_retry_hint hint)
{
    s->upconn = NULL;
    if (s->state == REM_STREAM_DONE)
        return;
    /* The keep-alive race: the app closed a pooled connection as the request went out. Safe
     * to send again when no response byte came back and either no body byte was consumed or
     * the request is idempotent and its body so far is in the replay buffer (the head is still
     * in the arena); once, on a fresh connection. */
    bool unprocessed = hint == REM_RETRY_SAFE;
    bool reused = s->preq.reused && hint != REM_RETRY_NEVER;
    if (e == REM_E_UPSTREAM_RESET && (reused || unprocessed) && !s->resp_started && !s->retried &&
        !s->tunnel &&
        (s->req_body_bytes == 0 || (s->replay_ok && (unprocessed || idempotent(&s->req))))) {
        s->retried = true;
        s->req_sent = false;
        if (s->req_has_body && !s->req_done)
            down(s)->req_pause(s);
        rem_log_debug("stream: retrying on a fresh connection after %s", rem_err_label(e));
        connect_upstream(s, false);
        return;
    }
    if (e == REM_E_UPSTREAM_TIMEOUT && !s->tunnel && !s->req_done && !down(s)->req_blocked(s))
        e = REM_E_CLIENT_TIMEOUT; /* the upstream waits for a body the client stopped sending */
    rem_stream_fail(s, e);
}

int rem_stream_on_resp_head(struct rem_stream *s)
{
    const struct rem_head *r = &s->resp;
    const struct rem_head *q = &s->req;
    bool http10 = q->http_major == 1 && q->http_minor == 0;
    s->down_cl = -1;
    s->down_chunked = false;
    if (!rem_http_response_has_body(s->head_request, r->status)) {
        /* HEAD and 304 keep the representation's length (RFC 9110 8.6). */
        if (!r->chunked && (s->head_request || r->status == 304))
            s->down_cl = r->content_length;
    } else if (!r->chunked && r->content_length >= 0) {
        s->down_cl = r->content_length;
    } else if (!http10) {
        s->down_chunked = true;
    } else {
        s->down_close = true; /* close-delimited toward an HTTP/1.0 client */
    }
    if (q->conn_close || (http10 && !q->conn_keepalive) || !s->req_done || s->conn->eof)
        s->down_close = true;
    s->status_sent = r->status;
    drop_replay(s);
    int rc = down(s)->write_head(s);
    if (rc < 0)
        return rc;
    s->resp_head_sent = true;
    return 0;
}

int rem_stream_on_upgrade(struct rem_stream *s)
{
    struct rem_upconn *uc = s->upconn;
    REM_BUG_ON(!s->tunnel_req || !uc || s->tunnel);
    /* HTTP/2 has no 101 (RFC 9113 8.6): an h2 client's tunnel opens with a 200 (RFC 8441 5),
     * an HTTP/1.1 client's Upgrade with a 101 whatever the app's protocol said. */
    if (s->req.http_major >= 2)
        s->status_sent = s->resp.status == 101 ? 200 : s->resp.status;
    else
        s->status_sent = s->tunnel_req == REM_TUNNEL_UPGRADE ? 101 : s->resp.status;
    drop_replay(s);
    /* The downstream codec switches first: its head then answers as a tunnel (a 101 with the
     * app's Upgrade on HTTP/1.1, :status 200 on h2). */
    int rc = down(s)->set_tunnel(s);
    if (rc == 0)
        rc = down(s)->write_head(s);
    if (rc == 0)
        rc = uc->up->set_tunnel(uc, s);
    if (rc < 0) {
        s->status_sent = 0;
        rem_stream_fail(s, rc == -REM_E_UNSUPPORTED ? REM_E_BAD_RESPONSE : rem_err_from_rc(rc));
        return rc;
    }
    s->resp_head_sent = true;
    s->resp_started = true;
    s->tunnel = true;
    s->down_close = true; /* the conn (HTTP/1.1) ends with its tunnel */
    /* From here req_done / resp_done mean each side's FIN. */
    s->req_done = false;
    s->req_sent = false;
    s->resp_done = false;
    /* The opening exchange counts now, with the time to the switch; the tunnel's life is in
     * the access log and remora_tunnels_active, never in the latency histograms. */
    struct rem_gen *g = s->gen;
    rem_metrics_record_request(&g->routes[s->mroute]->m, &g->hists[s->mroute]->h,
                               &g->ml->route_hist[s->mroute], s->in_flight, s->status_sent,
                               rem_now_ns() - s->start_ns, s->bytes_in, s->bytes_out);
    s->in_flight = false;
    s->open_in = s->bytes_in;
    s->open_out = s->bytes_out;
    REM_M_ADD(g->routes[s->mroute]->m.tunnels, 1);
    REM_M_ADD(s->worker->metrics->tunnels_active, 1);
    rem_upconn_start_response_timer(uc, s->route->tunnel_idle_timeout_ms);
    down(s)->req_ready(s); /* client bytes may flow now */
    return 0;
}

int rem_stream_on_resp_interim(struct rem_stream *s)
{
    const struct rem_head *q = &s->req;
    /* Interim heads share the response head limit with the final one (as Go's client does):
     * a flood of 1xx ends in a 502 instead of going on (and to the client) forever. Each
     * counts at least a status line's worth. */
    uint32_t used = s->resp.len + REM_INTERIM_MIN_BYTES;
    if (used >= s->resp.max_bytes)
        return -REM_E_BAD_RESPONSE;
    rem_head_set_limits(&s->resp, s->resp.max_bytes - used, s->resp.max_hdrs);
    if (s->resp.status == 100 || (q->http_major == 1 && q->http_minor == 0))
        return 0;
    return down(s)->write_interim(s);
}

bool rem_stream_on_resp_body(struct rem_stream *s, const char *p, size_t n)
{
    s->resp_body_bytes += (int64_t)n;
    if (s->tunnel)
        s->tunnel_down += n;
    if (down(s)->write_body(s, p, n) < 0) {
        rem_stream_fail(s, REM_E_NOMEM);
        return false;
    }
    return down(s)->full(s);
}

void rem_stream_on_resp_end(struct rem_stream *s)
{
    if (s->tunnel) {
        /* The app ended its side; the client's may still flow to it on the same upconn. */
        if (!s->tunnel_closer)
            s->tunnel_closer = 'S';
        if (down(s)->write_end(s) < 0) {
            rem_stream_fail(s, REM_E_NOMEM);
            return;
        }
        s->resp_done = true;
        maybe_finish(s);
        return;
    }
    s->upconn = NULL;
    uint64_t up_ns = rem_now_ns() - s->up_start_ns;
    rem_hist_record(&s->cluster->metrics->response_duration, s->cluster->hl, up_ns);
    rem_admit_sample(&s->cluster->admit, up_ns);
    if (down(s)->write_end(s) < 0) {
        rem_stream_fail(s, REM_E_NOMEM);
        return;
    }
    s->resp_done = true;
    if (!s->req_done)
        s->down_close = true; /* answered early: the rest of the body is not read */
    maybe_finish(s);
}

void rem_stream_on_down_writable(struct rem_stream *s)
{
    struct rem_upconn *uc = s->upconn;
    if (uc)
        uc->up->resume(uc, s);
}

void rem_stream_fail(struct rem_stream *s, enum rem_err e)
{
    struct rem_conn *c = s->conn;
    if (s->state == REM_STREAM_DONE)
        return;
    s->err = e;
    s->err_in_body = s->state != REM_STREAM_HEAD;
    if (e == REM_E_QUEUE_FULL || e == REM_E_QUEUE_TIMEOUT)
        REM_M_ADD(
            s->gen->routes[s->mroute]->m.rejected[e == REM_E_QUEUE_FULL ? REM_REJECT_QUEUE_FULL
                                                                        : REM_REJECT_QUEUE_TIMEOUT],
            1);
    up_abandon(s);
    if (s->resp_head_sent) {
        /* Mid-body: closing is the only honest signal (RFC 9112 8); never finish the body, and
         * reset rather than FIN where the client cannot tell a short body from the end. */
        s->down_close = true;
        down(s)->cut(s);
    } else {
        int status = rem_err_status(e);
        const struct rem_head *q = &s->req;
        bool http10 = q->http_major == 1 && q->http_minor == 0;
        /* Bad input and unread bodies leave the conn out of sync; and a client that asked for
         * close (RFC 9112 9.3, 9.6) gets it on remora's own answers too. */
        if (status == 0 || status < 500 || !s->req_done || c->eof || q->conn_close ||
            (http10 && !q->conn_keepalive))
            s->down_close = true;
        if (status) {
            s->status_sent = status;
            down(s)->write_error(s, e);
        }
        s->resp_head_sent = true;
    }
    s->resp_done = true;
    finish(s);
}

void rem_stream_limit_head_bytes(struct rem_stream *s, uint32_t n)
{
    if (!n || n >= s->req.max_bytes)
        return;
    rem_head_set_limits(&s->req, n, s->req.max_hdrs);
    rem_head_set_limits(&s->req_trl, n, s->req_trl.max_hdrs);
}

bool rem_stream_on_client_eof(struct rem_stream *s)
{
    if (!s->req_done || s->state == REM_STREAM_QUEUED)
        return false;
    s->down_close = true;
    return true;
}

void rem_stream_abort(struct rem_stream *s, enum rem_err e)
{
    if (s->state == REM_STREAM_DONE)
        return;
    if (s->err == REM_E_OK)
        s->err = e;
    s->down_close = true;
    s->resp_done = true;
    finish(s);
}
