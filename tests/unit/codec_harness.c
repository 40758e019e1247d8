/* SPDX-License-Identifier: Apache-2.0
 * codec_harness: a worker, one downstream conn and its upconns over io_mem, and the two stub
 * codecs; see codec_harness.h. */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "cluster.h"
#include "codec_harness.h"
#include "config.h"
#include "conn.h"
#include "gen.h"
#include "h1_down.h"
#include "h2_down.h"
#include "http.h"
#include "io_mem.h"
#include "log.h"
#include "metrics.h"
#include "server.h"
#include "stream.h"
#include "upconn.h"
#include "upool.h"
#include "worker.h"

#define CH_OF(wp) ((struct ch *)((char *)(wp)-offsetof(struct ch, w)))

/* ---- buffers ----------------------------------------------------------------------------- */

static void print_escaped(const char *what, const char *label, const unsigned char *p, size_t n)
{
    fprintf(stderr, "%s: %s (%zu bytes): \"", what, label, n);
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '\r')
            fputs("\\r", stderr);
        else if (p[i] == '\n')
            fputs("\\n\"\n    \"", stderr);
        else if (p[i] < 0x20 || p[i] >= 0x7f)
            fprintf(stderr, "\\x%02x", p[i]);
        else
            fputc(p[i], stderr);
    }
    fputs("\"\n", stderr);
}

bool ch_buf_eq(struct evbuffer *b, const void *p, size_t n, const char *what)
{
    size_t have = evbuffer_get_length(b);
    const unsigned char *got = evbuffer_pullup(b, -1);
    if (have == n && (n == 0 || memcmp(got, p, n) == 0))
        return true;
    print_escaped(what, "expected", p, n);
    print_escaped(what, "got", got ? got : (const unsigned char *)"", have);
    return false;
}

bool ch_buf_eq_str(struct evbuffer *b, const char *s, const char *what)
{
    return ch_buf_eq(b, s, strlen(s), what);
}

void ch_buf_clear(struct evbuffer *b)
{
    evbuffer_drain(b, evbuffer_get_length(b));
}

/* "name: value\r\n" for every field of h. */
static void put_fields(struct evbuffer *out, const struct rem_head *h)
{
    for (uint32_t i = 0; i < h->n_hdrs; i++) {
        const struct rem_hdr *x = &h->hdrs[i];
        evbuffer_add(out, REM_HDR_NAME(h, x), x->name_len);
        evbuffer_add(out, ": ", 2);
        evbuffer_add(out, REM_HDR_VAL(h, x), x->val_len);
        evbuffer_add(out, "\r\n", 2);
    }
}

/* Adds a NULL-terminated list of name, value pairs to h. */
static int add_fields(struct rem_head *h, const char *const *fields)
{
    for (size_t i = 0; fields && fields[i]; i += 2) {
        if (!fields[i + 1] || rem_head_add_name(h, fields[i], strlen(fields[i])) < 0 ||
            rem_head_add_value(h, fields[i + 1], strlen(fields[i + 1])) < 0)
            return -1;
    }
    return 0;
}

static void copy_rid(char out[64], const struct rem_stream *s)
{
    size_t n = s->rid ? s->rid_len : 0;
    if (n > 63)
        n = 63;
    memcpy(out, s->rid ? s->rid : "", n);
    out[n] = '\0';
}

/* ---- downstream conn ----------------------------------------------------------------------- */

static const struct rem_down_ops *choose(struct rem_conn *c, bool *need_more)
{
    struct ch *h = CH_OF(c->worker);
    *need_more = false;
    if (h->force_down)
        return h->force_down;
    /* As listener.c: the HTTP/2 preface (h2c prior knowledge), else HTTP/1.1. */
    if (rem_h2_down_detect(rem_conn_input(c), need_more))
        return &rem_h2_down_ops;
    return *need_more ? NULL : &rem_h1_down_ops;
}

static void on_conn_closed(void *arg)
{
    struct ch *h = arg;
    struct rem_conn *c = h->conn;
    if (!c)
        return; /* rem_conn_open failed: there was never a conn */
    /* The transport is closed but still allocated: take its last bytes and how it ended. */
    rem_io_mem_take(&c->t, h->down_rx);
    h->conn_shut = rem_io_mem_shut(&c->t);
    h->conn_reset = rem_io_mem_was_reset(&c->t);
    h->conn_closed = true;
    h->conn = NULL;
}

static const struct rem_conn_owner conn_owner = {
    .choose = choose,
    .closed = on_conn_closed,
};

static int setup_down(struct rem_transport *t, struct rem_loop *loop,
                      const struct rem_transport_cbs *cbs, void *cb_arg, size_t read_high,
                      size_t write_high, void *arg)
{
    struct ch *h = arg;
    return rem_io_mem_init(t, loop, cbs, cb_arg, read_high, write_high, h->window);
}

int ch_open(struct ch *h)
{
    if (h->conn)
        return -REM_E_INTERNAL;
    h->conn_closed = h->conn_shut = h->conn_reset = false;
    return rem_conn_open(&h->w, &conn_owner, h, &h->cfg->listeners[0], CH_CLIENT_ADDR, setup_down,
                         h, &h->conn);
}

int ch_feed(struct ch *h, const void *p, size_t n)
{
    if (!h->conn)
        return -1;
    return rem_io_mem_feed(&h->conn->t, p, n) < 0 ? -1 : 0;
}

int ch_feed_str(struct ch *h, const char *s)
{
    return ch_feed(h, s, strlen(s));
}

void ch_feed_eof(struct ch *h)
{
    if (h->conn)
        rem_io_mem_feed_eof(&h->conn->t);
}

/* ---- upconns ------------------------------------------------------------------------------- */

static void far_on_read(struct rem_transport *t, void *arg)
{
    struct ch_upstream *u = arg;
    evbuffer_add_buffer(u->rx, rem_transport_input(t));
    rem_transport_rearm(t);
}

static void far_on_event(struct rem_transport *t, int what, void *arg)
{
    struct ch_upstream *u = arg;
    if (what & (REM_TE_EOF | REM_TE_ERROR))
        u->eof = true;
}

static const struct rem_transport_cbs far_cbs = {
    .on_read = far_on_read,
    .on_event = far_on_event,
};

static void far_free(struct ch_upstream *u)
{
    if (!u)
        return;
    rem_transport_free(&u->t);
    if (u->rx)
        evbuffer_free(u->rx);
    free(u);
}

/* The cluster's connector: the upconn's end connects (REM_TE_READY from the loop) to a far
 * end the harness keeps. */
static int connect_mem(struct rem_transport *t, struct rem_loop *loop, struct rem_endpoint *ep,
                       const struct rem_transport_cbs *cbs, void *arg, size_t read_high,
                       size_t write_high, void *connect_arg)
{
    struct ch *h = connect_arg;
    struct ch_upstream *u = NULL;
    if (h->n_ups == CH_MAX_UPSTREAMS)
        return -REM_E_CONNECT_FAILED;
    int rc = rem_io_mem_connect(t, loop, cbs, arg, read_high, write_high, h->window);
    if (rc < 0)
        return rc;
    u = calloc(1, sizeof(*u));
    if (!u)
        goto fail;
    rem_transport_clear(&u->t);
    u->rx = evbuffer_new();
    if (!u->rx || rem_io_mem_init(&u->t, loop, &far_cbs, u, 0, 0, h->window) < 0)
        goto fail;
    rem_io_mem_pair(t, &u->t);
    h->ups[h->n_ups++] = u;
    return 0;

fail:
    far_free(u);
    rem_transport_close(t);
    return -REM_E_NOMEM;
}

struct ch_upstream *ch_upstream(struct ch *h, size_t i)
{
    return i < h->n_ups ? h->ups[i] : NULL;
}

int ch_upstream_send(struct ch_upstream *u, const void *p, size_t n)
{
    if (rem_transport_is_closed(&u->t) || evbuffer_add(rem_transport_output(&u->t), p, n) < 0)
        return -1;
    rem_transport_flush_later(&u->t);
    return 0;
}

int ch_upstream_send_str(struct ch_upstream *u, const char *s)
{
    return ch_upstream_send(u, s, strlen(s));
}

void ch_upstream_close(struct ch_upstream *u)
{
    rem_transport_close(&u->t);
}

void ch_set_up_ops(struct ch *h, const struct rem_up_ops *ops)
{
    for (size_t i = 0; i < h->w.gen->cfg->n_upstreams; i++)
        rem_upool_bind(h->w.gen->clusters[i], ops);
}

/* ---- loop ---------------------------------------------------------------------------------- */

int ch_run(struct ch *h)
{
    struct event_base *base = h->w.loop.base;
    for (int pass = 0; pass < CH_MAX_PASSES; pass++) {
        if (h->conn)
            rem_io_mem_take(&h->conn->t, h->down_rx); /* may reopen its window: a wake */
        if (event_base_get_num_events(base, EVENT_BASE_COUNT_ACTIVE) == 0)
            return pass;
        if (event_base_loop(base, EVLOOP_NONBLOCK) < 0)
            return -1;
    }
    return -1;
}

/* ---- life ---------------------------------------------------------------------------------- */

static void msg_bufs_free(struct evbuffer **bufs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (bufs[i])
            evbuffer_free(bufs[i]);
        bufs[i] = NULL;
    }
}

int ch_init(struct ch *h, const char *yaml)
{
    struct rem_config_diag diag = {0};
    struct rem_server_plan *plan = NULL;
    memset(h, 0, sizeof(*h));
    h->cfg = rem_config_load_string(yaml, "<codec_harness>", &diag);
    if (!h->cfg) {
        for (size_t i = 0; i < diag.n; i++)
            fprintf(stderr, "codec_harness: %s\n", diag.msgs[i]);
        rem_config_diag_dispose(&diag);
        return -1;
    }
    rem_log_setup(h->cfg->log.level, h->cfg->log.format);
    h->down_rx = evbuffer_new();
    h->sup.head = evbuffer_new();
    h->sup.body = evbuffer_new();
    h->sup.trailers = evbuffer_new();
    h->sdown.head = evbuffer_new();
    h->sdown.body = evbuffer_new();
    h->sdown.trailers = evbuffer_new();
    h->sdown.req_out = evbuffer_new();
    h->ml = rem_metrics_layout_new(h->cfg);
    if (!h->down_rx || !h->sup.head || !h->sup.body || !h->sup.trailers || !h->sdown.head ||
        !h->sdown.body || !h->sdown.trailers || !h->sdown.req_out || !h->ml)
        goto fail;
    plan = rem_server_plan_new(h->cfg, h->ml, NULL, 1, 1);
    if (!plan)
        goto fail;
    h->worker_up = true; /* disposable from here on, even when init fails */
    if (rem_server_worker_init(&h->w, 0, plan) < 0)
        goto fail;
    rem_server_plan_unref(plan);
    h->w.rng = 0x9e3779b97f4a7c15u; /* reproducible request ids */
    for (size_t i = 0; i < h->w.gen->cfg->n_upstreams; i++)
        rem_cluster_set_connector(h->w.gen->clusters[i], connect_mem, h, NULL);
    ch_stub_up_clear(h);
    ch_stub_down_clear(h);
    return 0;

fail:
    rem_server_plan_unref(plan);
    ch_dispose(h);
    return -1;
}

void ch_dispose(struct ch *h)
{
    if (h->conn)
        rem_conn_close(h->conn);
    if (h->worker_up && h->w.loop.base) {
        (void)ch_run(h);
        /* The app goes away: upconns see the close and the reaper frees them. */
        for (size_t i = 0; i < h->n_ups; i++)
            far_free(h->ups[i]);
        h->n_ups = 0;
        (void)ch_run(h);
        rem_server_worker_dispose(&h->w);
        h->worker_up = false;
    }
    rem_metrics_layout_unref(h->ml);
    h->ml = NULL;
    rem_config_unref(h->cfg);
    h->cfg = NULL;
    struct evbuffer *bufs[] = {h->down_rx,    h->sup.head,   h->sup.body,       h->sup.trailers,
                               h->sdown.head, h->sdown.body, h->sdown.trailers, h->sdown.req_out};
    msg_bufs_free(bufs, sizeof(bufs) / sizeof(bufs[0]));
    h->down_rx = NULL;
    h->sup.head = h->sup.body = h->sup.trailers = NULL;
    h->sdown.head = h->sdown.body = h->sdown.trailers = h->sdown.req_out = NULL;
}

/* ---- stub upstream codec ------------------------------------------------------------------ */

/* Per-upconn state. */
struct stub_up {
    struct ch *h;          /* borrowed */
    struct rem_upconn *uc; /* borrowed: the owner */
    struct rem_stream *s;  /* borrowed: the attached stream */
};

static struct stub_up *sup_of(const struct rem_upconn *uc)
{
    return uc->codec;
}

/* s no longer belongs to the stub's upconn. */
static void sup_forget(struct stub_up *st)
{
    if (st->s && st->h->sup.s == st->s) {
        st->h->sup.s = NULL;
        st->h->sup.uc = NULL;
    }
    st->s = NULL;
}

void ch_stub_up_clear(struct ch *h)
{
    ch_buf_clear(h->sup.head);
    ch_buf_clear(h->sup.body);
    ch_buf_clear(h->sup.trailers);
    h->sup.n_heads = h->sup.n_bodies = h->sup.n_ends = h->sup.n_cancels = 0;
    h->sup.has_body = h->sup.chunked = h->sup.head_request = false;
    h->sup.content_length = -1;
    h->sup.rid[0] = '\0';
}

static void *sup_init(struct rem_upconn *uc)
{
    struct stub_up *st = calloc(1, sizeof(*st));
    if (!st)
        return NULL;
    st->h = CH_OF(uc->worker);
    st->uc = uc;
    return st;
}

static void sup_free(struct rem_upconn *uc)
{
    free(uc->codec);
}

static void sup_ready(struct rem_upconn *uc)
{
    struct stub_up *st = sup_of(uc);
    rem_upconn_set_state(uc, REM_UPCONN_ACTIVE);
    if (st->s)
        rem_stream_on_upconn_ready(st->s, uc);
    else
        rem_upool_release(uc, true);
}

static void sup_process(struct rem_upconn *uc)
{
    struct evbuffer *in = rem_upconn_input(uc);
    evbuffer_drain(in, evbuffer_get_length(in)); /* the stub's app never speaks */
    rem_upconn_rearm(uc);
}

static void sup_on_drained(struct rem_upconn *uc)
{
    struct stub_up *st = sup_of(uc);
    if (st->s)
        rem_stream_on_upconn_writable(st->s);
}

static void sup_on_kick(struct rem_upconn *uc)
{
}

/* Closes uc and tells its stream e. */
static void sup_fail(struct rem_upconn *uc, enum rem_err e)
{
    struct stub_up *st = sup_of(uc);
    struct rem_stream *s = st->s;
    sup_forget(st);
    rem_upconn_close(uc);
    if (s)
        rem_stream_on_upconn_error(s, e, REM_RETRY_NEVER);
}

static void sup_on_timer(struct rem_upconn *uc)
{
    if (uc->state == REM_UPCONN_IDLE)
        rem_upconn_close(uc);
    else
        sup_fail(uc, REM_E_UPSTREAM_TIMEOUT);
}

static void sup_on_close(struct rem_upconn *uc, int what)
{
    sup_fail(uc, REM_E_UPSTREAM_RESET);
}

static void sup_detach_all(struct rem_upconn *uc)
{
    sup_forget(sup_of(uc));
}

static bool sup_has_room(const struct rem_upconn *uc)
{
    return uc->state == REM_UPCONN_IDLE && !sup_of(uc)->s;
}

static unsigned sup_n_streams(const struct rem_upconn *uc)
{
    return sup_of(uc)->s ? 1 : 0;
}

static void sup_attach(struct rem_upconn *uc, struct rem_stream *s)
{
    sup_of(uc)->s = s;
    if (uc->state == REM_UPCONN_IDLE)
        rem_upconn_set_state(uc, REM_UPCONN_ACTIVE);
}

static void sup_cancel(struct rem_upconn *uc, struct rem_stream *s)
{
    sup_of(uc)->h->sup.n_cancels++;
    rem_upconn_close(uc); /* as HTTP/1.1: the exchange cannot be finished */
}

static int sup_write_head(struct rem_upconn *uc, struct rem_stream *s)
{
    struct ch *h = sup_of(uc)->h;
    const struct rem_head *q = &s->req;
    evbuffer_add_printf(
        h->sup.head, "%.*s %.*s HTTP/%d.%d\r\n", (int)q->span_len[REM_SPAN_METHOD],
        rem_head_ptr(q, q->span_off[REM_SPAN_METHOD]), (int)q->span_len[REM_SPAN_TARGET],
        rem_head_ptr(q, q->span_off[REM_SPAN_TARGET]), q->http_major, q->http_minor);
    put_fields(h->sup.head, q);
    evbuffer_add(h->sup.head, "\r\n", 2);
    h->sup.n_heads++;
    h->sup.has_body = s->req_has_body;
    h->sup.chunked = s->req_chunked;
    h->sup.head_request = s->head_request;
    h->sup.content_length = q->content_length;
    copy_rid(h->sup.rid, s);
    h->sup.s = s;
    h->sup.uc = uc;
    return 0;
}

static int sup_write_body(struct rem_upconn *uc, struct rem_stream *s, const char *p, size_t n)
{
    struct ch *h = sup_of(uc)->h;
    h->sup.n_bodies++;
    return evbuffer_add(h->sup.body, p, n) < 0 ? -REM_E_NOMEM : 0;
}

static int sup_write_end(struct rem_upconn *uc, struct rem_stream *s)
{
    struct ch *h = sup_of(uc)->h;
    put_fields(h->sup.trailers, &s->req_trl);
    h->sup.n_ends++;
    return 0;
}

static bool sup_full(struct rem_upconn *uc, struct rem_stream *s)
{
    return false;
}

static void sup_resume(struct rem_upconn *uc, struct rem_stream *s)
{
}

static int sup_set_tunnel(struct rem_upconn *uc, struct rem_stream *s)
{
    return -REM_E_UNSUPPORTED;
}

const struct rem_up_ops ch_stub_up_ops = {
    .name = "stub",
    .multiplexed = false,
    .init = sup_init,
    .free = sup_free,
    .ready = sup_ready,
    .process = sup_process,
    .on_drained = sup_on_drained,
    .on_kick = sup_on_kick,
    .on_timer = sup_on_timer,
    .on_close = sup_on_close,
    .fail_all = sup_fail,
    .detach_all = sup_detach_all,
    .has_room = sup_has_room,
    .n_streams = sup_n_streams,
    .attach = sup_attach,
    .cancel = sup_cancel,
    .write_head = sup_write_head,
    .write_body = sup_write_body,
    .write_end = sup_write_end,
    .full = sup_full,
    .resume = sup_resume,
    .set_tunnel = sup_set_tunnel,
};

int ch_stub_answer_head(struct ch *h, int status, const char *reason, const char *const *fields)
{
    struct rem_stream *s = h->sup.s;
    if (!s)
        return -1;
    struct rem_head *r = &s->resp;
    rem_head_reset(r);
    if (reason && rem_head_add_span(r, REM_SPAN_REASON, reason, strlen(reason)) < 0)
        return -1;
    if (add_fields(r, fields) < 0)
        return -1;
    rem_head_set_version(r, 1, 1);
    rem_head_classify(r);
    r->status = status;
    rem_stream_mark_resp_started(s);
    return rem_stream_on_resp_head(s);
}

int ch_stub_answer_body(struct ch *h, const void *p, size_t n)
{
    struct rem_stream *s = h->sup.s;
    if (!s)
        return -1;
    return rem_stream_on_resp_body(s, p, n) ? 1 : 0;
}

int ch_stub_answer_end(struct ch *h)
{
    struct rem_stream *s = h->sup.s;
    struct rem_upconn *uc = h->sup.uc;
    if (!s)
        return -1;
    /* As h1_up: uc goes back to the pool before the stream hears of the end. */
    sup_forget(sup_of(uc));
    rem_upool_release(uc, s->req_sent);
    rem_stream_on_resp_end(s);
    return 0;
}

/* ---- stub downstream codec ---------------------------------------------------------------- */

/* The conn's codec state is the harness itself. */
static struct ch *sdown_of(const struct rem_conn *c)
{
    return c->codec;
}

void ch_stub_down_clear(struct ch *h)
{
    ch_buf_clear(h->sdown.head);
    ch_buf_clear(h->sdown.body);
    ch_buf_clear(h->sdown.trailers);
    h->sdown.n_heads = h->sdown.n_interims = h->sdown.n_bodies = h->sdown.n_ends = 0;
    h->sdown.n_errors = h->sdown.n_cuts = h->sdown.n_done = 0;
    h->sdown.status = 0;
    h->sdown.down_cl = -1;
    h->sdown.down_chunked = h->sdown.down_close = false;
    h->sdown.error = h->sdown.done_err = REM_E_OK;
    h->sdown.rid[0] = '\0';
}

static void *sdown_init(struct rem_conn *c)
{
    return CH_OF(c->worker);
}

static void sdown_free(struct rem_conn *c)
{
}

/* Gives the stream what the test queued, while its upconn takes it. */
static void push_body(struct ch *h)
{
    struct rem_stream *s = h->sdown.s;
    struct evbuffer *q = h->sdown.req_out;
    if (!s || !h->sdown.ready || h->sdown.blocked || s->state != REM_STREAM_ACTIVE || s->req_done)
        return;
    while (evbuffer_get_length(q) > 0) {
        size_t n = evbuffer_get_contiguous_space(q);
        const char *p = (const char *)evbuffer_pullup(q, (ev_ssize_t)n);
        bool full = rem_stream_req_body(s, p, n);
        if (h->sdown.s != s || s->state != REM_STREAM_ACTIVE)
            return;
        evbuffer_drain(q, n);
        if (full) {
            h->sdown.blocked = true; /* until req_resume */
            return;
        }
    }
    if (h->sdown.req_end)
        rem_stream_req_end(s); /* may finish (and free) s */
}

static void sdown_process(struct rem_conn *c)
{
    struct evbuffer *in = rem_conn_input(c);
    evbuffer_drain(in, evbuffer_get_length(in)); /* requests come from the test */
    rem_conn_rearm(c);
}

static void sdown_on_drained(struct rem_conn *c)
{
    struct ch *h = sdown_of(c);
    if (h->sdown.s && !h->sdown.full) /* a slow client (full) drains only when the test says */
        rem_stream_on_down_writable(h->sdown.s);
}

static void sdown_on_kick(struct rem_conn *c)
{
    push_body(sdown_of(c));
}

static void sdown_on_timer(struct rem_conn *c)
{
    rem_conn_close(c);
}

static bool sdown_on_eof(struct rem_conn *c)
{
    return false;
}

static int sdown_drain(struct rem_conn *c)
{
    return -REM_E_UNSUPPORTED;
}

static void sdown_abort_all(struct rem_conn *c)
{
    struct ch *h = sdown_of(c);
    if (h->sdown.s)
        rem_stream_abort(h->sdown.s, REM_E_CLIENT_ABORT); /* stream_done frees it */
}

static int sdown_write_head(struct rem_stream *s)
{
    struct ch *h = sdown_of(s->conn);
    if (h->sdown.fail_head)
        return -REM_E_NOMEM;
    const struct rem_head *r = &s->resp;
    evbuffer_add_printf(h->sdown.head, "HTTP/%d.%d %d%s%.*s\r\n", r->http_major, r->http_minor,
                        r->status, r->span_len[REM_SPAN_REASON] ? " " : "",
                        (int)r->span_len[REM_SPAN_REASON],
                        rem_head_ptr(r, r->span_off[REM_SPAN_REASON]));
    put_fields(h->sdown.head, r);
    evbuffer_add(h->sdown.head, "\r\n", 2);
    h->sdown.n_heads++;
    h->sdown.status = r->status;
    h->sdown.down_cl = s->down_cl;
    h->sdown.down_chunked = s->down_chunked;
    h->sdown.down_close = s->down_close;
    return 0;
}

static int sdown_write_interim(struct rem_stream *s)
{
    sdown_of(s->conn)->sdown.n_interims++;
    return 0;
}

static int sdown_write_body(struct rem_stream *s, const char *p, size_t n)
{
    struct ch *h = sdown_of(s->conn);
    h->sdown.n_bodies++;
    return evbuffer_add(h->sdown.body, p, n) < 0 ? -REM_E_NOMEM : 0;
}

static int sdown_write_end(struct rem_stream *s)
{
    struct ch *h = sdown_of(s->conn);
    put_fields(h->sdown.trailers, &s->resp_trl);
    h->sdown.n_ends++;
    return 0;
}

static int sdown_write_error(struct rem_stream *s, enum rem_err e)
{
    struct ch *h = sdown_of(s->conn);
    h->sdown.n_errors++;
    h->sdown.error = e;
    return 0;
}

static bool sdown_full(struct rem_stream *s)
{
    return sdown_of(s->conn)->sdown.full;
}

void ch_stub_down_drained(struct ch *h)
{
    h->sdown.full = false;
    if (h->sdown.s)
        rem_stream_on_down_writable(h->sdown.s);
}

static void sdown_cut(struct rem_stream *s)
{
    sdown_of(s->conn)->sdown.n_cuts++;
}

static void sdown_req_pause(struct rem_stream *s)
{
    sdown_of(s->conn)->sdown.ready = false;
}

static void sdown_req_ready(struct rem_stream *s)
{
    sdown_of(s->conn)->sdown.ready = true;
    rem_conn_kick(s->conn); /* out of the caller's stack, as the real codecs */
}

static void sdown_req_resume(struct rem_stream *s)
{
    struct ch *h = sdown_of(s->conn);
    if (!h->sdown.blocked)
        return;
    h->sdown.blocked = false;
    rem_conn_kick(s->conn);
}

static bool sdown_req_blocked(const struct rem_stream *s)
{
    return sdown_of(s->conn)->sdown.blocked;
}

static int sdown_set_tunnel(struct rem_stream *s)
{
    return -REM_E_UNSUPPORTED;
}

static void sdown_stream_done(struct rem_stream *s)
{
    struct rem_conn *c = s->conn;
    struct ch *h = sdown_of(c);
    bool close = s->down_close;
    h->sdown.n_done++;
    h->sdown.done_err = s->err;
    copy_rid(h->sdown.rid, s);
    h->sdown.s = NULL;
    h->sdown.ready = h->sdown.blocked = h->sdown.req_end = false;
    ch_buf_clear(h->sdown.req_out);
    rem_stream_free(s);
    rem_conn_stream_done(c, close);
}

const struct rem_down_ops ch_stub_down_ops = {
    .name = "stub",
    .proto = 0, /* counted as http1 */
    .init = sdown_init,
    .process = sdown_process,
    .on_drained = sdown_on_drained,
    .on_kick = sdown_on_kick,
    .on_timer = sdown_on_timer,
    .on_eof = sdown_on_eof,
    .drain = sdown_drain,
    .abort_all = sdown_abort_all,
    .free = sdown_free,
    .write_head = sdown_write_head,
    .write_interim = sdown_write_interim,
    .write_body = sdown_write_body,
    .write_end = sdown_write_end,
    .write_error = sdown_write_error,
    .full = sdown_full,
    .cut = sdown_cut,
    .req_pause = sdown_req_pause,
    .req_ready = sdown_req_ready,
    .req_resume = sdown_req_resume,
    .req_blocked = sdown_req_blocked,
    .set_tunnel = sdown_set_tunnel,
    .stream_done = sdown_stream_done,
};

int ch_stub_request(struct ch *h, const char *method, const char *target, const char *const *fields,
                    bool body, bool chunked)
{
    if (!h->conn || h->force_down != &ch_stub_down_ops || h->sdown.s)
        return -1;
    if (!h->conn->down) {
        /* The conn picks its codec when the client's first bytes arrive: one byte, which the
         * stub then ignores. */
        if (ch_feed(h, "", 1) < 0 || ch_run(h) < 0 || !h->conn || !h->conn->down)
            return -1;
    }
    struct rem_conn *c = h->conn;
    struct rem_stream *s = rem_stream_new(c);
    h->sdown.s = s;
    h->sdown.ready = h->sdown.blocked = h->sdown.req_end = false;
    ch_buf_clear(h->sdown.req_out);
    struct rem_head *q = &s->req;
    if (rem_head_add_span(q, REM_SPAN_METHOD, method, strlen(method)) < 0 ||
        rem_head_add_span(q, REM_SPAN_TARGET, target, strlen(target)) < 0 ||
        add_fields(q, fields) < 0) {
        h->sdown.s = NULL;
        rem_stream_free(s);
        return -1;
    }
    rem_head_set_version(q, 1, 1);
    rem_head_classify(q);
    rem_stream_set_request(s, strcmp(method, "HEAD") == 0, body, chunked);
    rem_conn_set_state(c, REM_CONN_ACTIVE);
    if (!body)
        rem_stream_req_end(s); /* only marks it: rem_stream_start sends it whole */
    rem_stream_start(s);       /* may answer (and free s) at once */
    return 0;
}

int ch_stub_request_body(struct ch *h, const void *p, size_t n, bool end)
{
    if (!h->conn || !h->sdown.s || h->sdown.req_end || evbuffer_add(h->sdown.req_out, p, n) < 0)
        return -1;
    h->sdown.req_end = end;
    rem_conn_kick(h->conn);
    return 0;
}

int ch_start(struct ch *h, const char *yaml, const struct rem_up_ops *up,
             const struct rem_down_ops *down)
{
    if (ch_init(h, yaml) < 0)
        return -1;
    if (up)
        ch_set_up_ops(h, up);
    h->force_down = down;
    if (ch_open(h) < 0) {
        ch_dispose(h);
        return -1;
    }
    return 0;
}

/* ---- nghttp2 test peer -------------------------------------------------------------------- */

int ch_h2_rx_init(struct ch_h2_rx *rx)
{
    memset(rx, 0, sizeof(*rx));
    rx->fields = evbuffer_new();
    rx->data = evbuffer_new();
    return rx->fields && rx->data ? 0 : -1;
}

void ch_h2_rx_dispose(struct ch_h2_rx *rx)
{
    if (rx->fields)
        evbuffer_free(rx->fields);
    if (rx->data)
        evbuffer_free(rx->data);
    rx->fields = rx->data = NULL;
}

int ch_h2_on_header(nghttp2_session *ng, const nghttp2_frame *f, const uint8_t *name, size_t nlen,
                    const uint8_t *value, size_t vlen, uint8_t flags, void *arg)
{
    struct ch_h2_rx *rx = arg;
    evbuffer_add(rx->fields, name, nlen);
    evbuffer_add(rx->fields, ": ", 2);
    evbuffer_add(rx->fields, value, vlen);
    evbuffer_add(rx->fields, "\r\n", 2);
    return 0;
}

int ch_h2_on_data_chunk(nghttp2_session *ng, uint8_t flags, int32_t id, const uint8_t *data,
                        size_t len, void *arg)
{
    struct ch_h2_rx *rx = arg;
    evbuffer_add(rx->data, data, len);
    return 0;
}

ssize_t ch_h2_read_body(nghttp2_session *ng, int32_t id, uint8_t *buf, size_t length,
                        uint32_t *flags, nghttp2_data_source *src, void *arg)
{
    struct ch_h2_rx *rx = arg;
    size_t n = rx->body_len - rx->body_off;
    if (n > length)
        n = length;
    memcpy(buf, rx->body + rx->body_off, n);
    rx->body_off += n;
    if (rx->body_off < rx->body_len)
        return (ssize_t)n;
    *flags |= NGHTTP2_DATA_FLAG_EOF;
    if (rx->trailers) {
        /* Submitted at the end of the body, or the HEADERS would overtake the DATA. */
        nghttp2_nv tva[4];
        size_t nt = 0;
        for (size_t i = 0; rx->trailers[i] && nt < 4; i += 2, nt++)
            tva[nt] = (nghttp2_nv){(uint8_t *)rx->trailers[i], (uint8_t *)rx->trailers[i + 1],
                                   strlen(rx->trailers[i]), strlen(rx->trailers[i + 1]),
                                   NGHTTP2_NV_FLAG_NONE};
        if (nghttp2_submit_trailer(ng, id, tva, nt) == 0)
            *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
    }
    return (ssize_t)n;
}
