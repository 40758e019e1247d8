/* SPDX-License-Identifier: Apache-2.0
 * h2_down: HTTP/2 from clients over nghttp2's server session. nghttp2 callbacks only record
 * and hand over: request heads go into the stream's arena, body bytes to the stream (or to
 * d_pending while no upconn is ready), responses come out of d_out through a data provider that
 * defers when it is empty. Window is given back (nghttp2_session_consume) only for bytes the
 * upconn took, so a slow upstream holds the client to its window. Re-entry is avoided with a
 * depth counter: a send asked for while the session is inside recv or send is left to the
 * outermost call, which always sends on its way out. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <nghttp2/nghttp2.h>

#include "config.h"
#include "conn.h"
#include "error.h"
#include "h2_down.h"
#include "h2_proto.h"
#include "http.h"
#include "log.h"
#include "metrics.h"
#include "stream.h"
#include "worker.h"

static const char preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
#define PREFACE_LEN (sizeof(preface) - 1)

struct rem_h2_down {
    nghttp2_session *ng; /* owned */
    struct rem_conn *c;  /* borrowed: the owner */
    struct rem_stream_list streams;
    unsigned n_streams;
    int depth; /* > 0 while inside nghttp2 */
    bool dead; /* the conn closed: callbacks do nothing */
    uint64_t win_start_ms;
    uint32_t resets, ctrl; /* in the current reset_interval */
};

bool rem_h2_down_detect(struct evbuffer *in, bool *need_more)
{
    char buf[PREFACE_LEN];
    size_t n = evbuffer_get_length(in);
    if (n > PREFACE_LEN)
        n = PREFACE_LEN;
    *need_more = false;
    if (evbuffer_copyout(in, buf, n) != (ev_ssize_t)n || memcmp(buf, preface, n) != 0)
        return false;
    if (n < PREFACE_LEN) {
        *need_more = true;
        return false;
    }
    return true;
}

unsigned rem_h2_down_n_streams(const struct rem_conn *c)
{
    return c->h2 ? c->h2->n_streams : 0;
}

static struct rem_metrics_shard *shard(const struct rem_h2_down *d)
{
    return d->c->worker->metrics;
}

static void send_now(struct rem_h2_down *d);

/* Sends are never made inside the caller's stack: a stream write may be followed by more
 * state changes on the same stream (resp_done, finish), and a synchronous send could close and
 * free the stream under them. Inside nghttp2 the outermost recv/send sends; otherwise the
 * conn's kick event does, once the current callbacks have returned. */
static void schedule_send(struct rem_h2_down *d)
{
    if (d->depth == 0)
        event_active(d->c->kick, EV_TIMEOUT, 1);
}

/* Abuse accounting over listeners[].http2.reset_interval. */
static bool over_limit(struct rem_h2_down *d, bool reset)
{
    const struct rem_cfg_http2 *h = &d->c->lcfg->http2;
    uint64_t now = rem_now_ms();
    if (now - d->win_start_ms >= h->reset_interval_ms) {
        d->win_start_ms = now;
        d->resets = d->ctrl = 0;
    }
    if (reset)
        return ++d->resets > h->max_resets;
    return ++d->ctrl > h->max_control_frames;
}

static void calm_down(struct rem_h2_down *d, const char *why)
{
    rem_log_warn("conn %s: http2 %s: GOAWAY ENHANCE_YOUR_CALM", d->c->peer, why);
    nghttp2_session_terminate_session(d->ng, NGHTTP2_ENHANCE_YOUR_CALM);
}

/* Frees s when both sides are done with it. */
static void stream_release(struct rem_h2_down *d, struct rem_stream *s)
{
    struct rem_conn *c = d->c;
    TAILQ_REMOVE(&d->streams, s, d_link);
    d->n_streams--;
    REM_M_ADD(shard(d)->downstream_streams_active, -1);
    rem_stream_free(s);
    if (d->n_streams == 0 && c->state == REM_CONN_ACTIVE) {
        c->state = REM_CONN_IDLE;
        rem_conn_arm_timer(c);
    }
}

/* Gives back as window what the upconn took: everything received that is not pending. */
static void give_window(struct rem_h2_down *d, struct rem_stream *s, bool all)
{
    size_t keep = all || !s->d_pending ? 0 : evbuffer_get_length(s->d_pending);
    if (s->d_unconsumed > keep) {
        size_t n = s->d_unconsumed - keep;
        s->d_unconsumed = keep;
        if (!s->d_closed)
            nghttp2_session_consume(d->ng, s->d_id, n);
        else
            nghttp2_session_consume_connection(d->ng, n);
    }
}

/* ---- request side ------------------------------------------------------------------------ */

static int on_begin_headers(nghttp2_session *ng, const nghttp2_frame *f, void *arg)
{
    struct rem_h2_down *d = arg;
    struct rem_conn *c = d->c;
    if (d->dead || f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    struct rem_stream *s = rem_stream_new(c);
    s->d_id = f->hd.stream_id;
    /* The advertised SETTINGS_MAX_HEADER_LIST_SIZE is enforced too when it is the lower. */
    uint32_t hl = c->lcfg->http2.max_header_list_bytes;
    if (hl && hl < s->req.max_bytes)
        s->req.max_bytes = s->req_trl.max_bytes = hl;
    TAILQ_INSERT_TAIL(&d->streams, s, d_link);
    d->n_streams++;
    REM_M_ADD(shard(d)->downstream_streams_active, 1);
    nghttp2_session_set_stream_user_data(ng, s->d_id, s);
    if (c->state == REM_CONN_IDLE) {
        c->state = REM_CONN_ACTIVE;
        rem_conn_arm_timer(c);
    }
    return 0;
}

static bool has_header(const struct rem_head *h, const char *name)
{
    for (uint32_t i = 0; i < h->n_hdrs; i++)
        if (rem_http_name_eq(REM_HDR_NAME(h, &h->hdrs[i]), h->hdrs[i].name_len, name))
            return true;
    return false;
}

static int add_header(struct rem_head *h, const char *name, size_t nlen, const char *val,
                      size_t vlen)
{
    int rc = rem_head_add_name(h, name, nlen);
    return rc < 0 ? rc : rem_head_add_value(h, val, vlen);
}

static int on_header(nghttp2_session *ng, const nghttp2_frame *f, const uint8_t *name, size_t nlen,
                     const uint8_t *value, size_t vlen, uint8_t flags, void *arg)
{
    struct rem_h2_down *d = arg;
    struct rem_stream *s = nghttp2_session_get_stream_user_data(ng, f->hd.stream_id);
    bool trailers = f->hd.type == NGHTTP2_HEADERS && f->headers.cat != NGHTTP2_HCAT_REQUEST;
    if (d->dead || !s || s->d_head_err || f->hd.type != NGHTTP2_HEADERS ||
        (!trailers && s->state != REM_STREAM_HEAD) || s->state == REM_STREAM_DONE)
        return 0;
    const char *n = (const char *)name, *v = (const char *)value;
    struct rem_head *h = trailers ? &s->req_trl : &s->req;
    int rc = 0;
    if (nlen > 0 && n[0] == ':') {
        if (h == &s->req_trl)
            return 0;
        if (rem_http_name_eq(n, nlen, ":method"))
            rc = rem_head_add_span(h, REM_SPAN_METHOD, v, vlen);
        else if (rem_http_name_eq(n, nlen, ":path"))
            rc = rem_head_add_span(h, REM_SPAN_TARGET, v, vlen);
        else if (rem_http_name_eq(n, nlen, ":authority"))
            rc = add_header(h, "host", 4, v, vlen); /* RFC 9113 8.3.1 */
    } else if (rem_http_name_eq(n, nlen, "host") && has_header(h, "host")) {
        /* :authority came first and wins (RFC 9113 8.3.1). */
    } else {
        rc = add_header(h, n, nlen, v, vlen);
    }
    if (rc < 0)
        s->d_head_err = (uint32_t)rem_err_from_rc(rc);
    return 0;
}

/* RFC 9113 8.2.3: cookie crumbs are joined with "; " for HTTP/1.1 (and it is fine on h2). */
static int join_cookies(struct rem_head *h)
{
    uint32_t n = 0;
    size_t len = 0;
    for (uint32_t i = 0; i < h->n_hdrs; i++)
        if (rem_http_name_eq(REM_HDR_NAME(h, &h->hdrs[i]), h->hdrs[i].name_len, "cookie")) {
            n++;
            len += h->hdrs[i].val_len + 2;
        }
    if (n < 2)
        return 0;
    char *buf = malloc(len);
    if (!buf)
        return -REM_E_NOMEM;
    size_t o = 0;
    uint32_t last = h->n_hdrs;
    for (uint32_t i = 0; i < last; i++) {
        const struct rem_hdr *x = &h->hdrs[i];
        if (!rem_http_name_eq(REM_HDR_NAME(h, x), x->name_len, "cookie"))
            continue;
        if (o) {
            memcpy(buf + o, "; ", 2);
            o += 2;
        }
        memcpy(buf + o, REM_HDR_VAL(h, x), x->val_len);
        o += x->val_len;
    }
    int rc = add_header(h, "cookie", 6, buf, o);
    free(buf);
    if (rc < 0)
        return rc;
    rem_head_classify(h);
    for (uint32_t i = 0; i < last; i++)
        if (rem_http_name_eq(REM_HDR_NAME(h, &h->hdrs[i]), h->hdrs[i].name_len, "cookie"))
            h->hdrs[i].kind = REM_HDR_HOP; /* the crumbs: not forwarded */
    return 0;
}

static bool value_starts(const struct rem_head *h, const char *name, const char *prefix)
{
    size_t pl = strlen(prefix);
    for (uint32_t i = 0; i < h->n_hdrs; i++) {
        const struct rem_hdr *x = &h->hdrs[i];
        if (rem_http_name_eq(REM_HDR_NAME(h, x), x->name_len, name) && x->val_len >= pl &&
            strncasecmp(REM_HDR_VAL(h, x), prefix, pl) == 0)
            return true;
    }
    return false;
}

/* The request head is complete: validate, then start the stream. */
static void head_done(struct rem_h2_down *d, struct rem_stream *s, bool end_stream)
{
    struct rem_head *h = &s->req;
    const struct rem_cfg_limits *lim = &d->c->cfg->limits;
    h->http_major = 2;
    h->http_minor = 0;
    s->grpc = value_starts(h, "content-type", "application/grpc");
    if (s->d_head_err) {
        rem_stream_fail(s, (enum rem_err)s->d_head_err);
        return;
    }
    rem_head_classify(h);
    int rc = join_cookies(h);
    if (rc < 0) {
        rem_stream_fail(s, rem_err_from_rc(rc));
        return;
    }
    const char *m = rem_head_ptr(h, h->span_off[REM_SPAN_METHOD]);
    size_t ml = h->span_len[REM_SPAN_METHOD];
    if (h->cl_conflict) {
        rem_stream_fail(s, REM_E_BAD_FRAMING);
        return;
    }
    if (rem_http_name_eq(m, ml, "CONNECT") || h->span_len[REM_SPAN_TARGET] == 0) {
        rem_stream_fail(s, REM_E_BAD_REQUEST); /* no tunnels through a sidecar */
        return;
    }
    if (h->host_idx >= 0 &&
        !rem_http_host_valid(REM_HDR_VAL(h, &h->hdrs[h->host_idx]), h->hdrs[h->host_idx].val_len)) {
        rem_stream_fail(s, REM_E_BAD_REQUEST);
        return;
    }
    if (lim->max_body_bytes && h->content_length > (int64_t)lim->max_body_bytes) {
        rem_stream_fail(s, REM_E_BODY_TOO_LARGE);
        return;
    }
    s->head_request = rem_http_name_eq(m, ml, "HEAD");
    s->req_has_body = !end_stream;
    s->req_chunked = s->req_has_body && h->content_length < 0;
    if (end_stream) {
        s->req_done = true;
        s->d_end_seen = true;
    } else {
        s->d_wait = true; /* body goes to d_pending until an upconn is ready */
    }
    rem_stream_start(s);
}

/* END_STREAM from the client: the request ends once d_pending went to the upconn. */
static void req_end(struct rem_stream *s)
{
    s->d_end_seen = true;
    if (s->state == REM_STREAM_DONE || s->req_done)
        return;
    if (s->d_wait || (s->d_pending && evbuffer_get_length(s->d_pending) > 0))
        return;
    rem_stream_req_end(s);
}

static int on_frame_recv(nghttp2_session *ng, const nghttp2_frame *f, void *arg)
{
    struct rem_h2_down *d = arg;
    if (d->dead)
        return 0;
    struct rem_stream *s =
        f->hd.stream_id ? nghttp2_session_get_stream_user_data(ng, f->hd.stream_id) : NULL;
    bool end = (f->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
    switch (f->hd.type) {
    case NGHTTP2_HEADERS:
        if (!s)
            break;
        s->bytes_in += f->hd.length + 9;
        if (f->headers.cat == NGHTTP2_HCAT_REQUEST) {
            if (s->state == REM_STREAM_HEAD)
                head_done(d, s, end);
        } else if (end) {
            if (s->state != REM_STREAM_DONE)
                rem_head_classify(&s->req_trl);
            req_end(s);
        }
        break;
    case NGHTTP2_DATA:
        if (f->hd.length == 0 && !end && over_limit(d, false))
            calm_down(d, "empty DATA flood");
        if (s && end)
            req_end(s);
        break;
    case NGHTTP2_RST_STREAM:
        rem_h2_count_reset(shard(d), REM_H2_SIDE_DOWN, f->rst_stream.error_code);
        if (over_limit(d, true))
            calm_down(d, "rapid reset");
        break;
    case NGHTTP2_GOAWAY:
        REM_M_ADD(shard(d)->h2_goaway[REM_H2_SIDE_DOWN], 1);
        break;
    case NGHTTP2_SETTINGS:
    case NGHTTP2_PING:
        if (!(f->hd.flags & NGHTTP2_FLAG_ACK) && over_limit(d, false))
            calm_down(d, f->hd.type == NGHTTP2_PING ? "PING flood" : "SETTINGS flood");
        break;
    case NGHTTP2_PRIORITY:
        /* WINDOW_UPDATE is not counted: a client may send one per DATA frame it reads. */
        if (over_limit(d, false))
            calm_down(d, "control frame flood");
        break;
    default:
        break;
    }
    return 0;
}

static int on_data_chunk(nghttp2_session *ng, uint8_t flags, int32_t id, const uint8_t *data,
                         size_t len, void *arg)
{
    struct rem_h2_down *d = arg;
    struct rem_stream *s = nghttp2_session_get_stream_user_data(ng, id);
    if (d->dead)
        return 0;
    if (!s || s->state == REM_STREAM_DONE || s->req_done) {
        nghttp2_session_consume(ng, id, len); /* nobody wants it: keep the window open */
        return 0;
    }
    s->bytes_in += len;
    uint64_t max = d->c->cfg->limits.max_body_bytes;
    size_t pending = s->d_pending ? evbuffer_get_length(s->d_pending) : 0;
    if (max && (uint64_t)s->req_body_bytes + pending + len > max) {
        nghttp2_session_consume(ng, id, len);
        rem_stream_fail(s, REM_E_BODY_TOO_LARGE);
        return 0;
    }
    s->d_unconsumed += len;
    if (s->d_wait || pending > 0 || s->state != REM_STREAM_ACTIVE) {
        if (!s->d_pending)
            s->d_pending = evbuffer_new();
        if (!s->d_pending || evbuffer_add(s->d_pending, data, len) < 0)
            rem_stream_fail(s, REM_E_NOMEM);
        return 0;
    }
    if (rem_stream_req_body(s, (const char *)data, len))
        s->d_full = true;
    else if (s->state != REM_STREAM_DONE)
        give_window(d, s, false);
    return 0;
}

void rem_h2_down_req_resume(struct rem_stream *s)
{
    struct rem_h2_down *d = s->conn->h2;
    if (!d || d->dead || s->state != REM_STREAM_ACTIVE || !s->upconn)
        return;
    s->d_wait = false;
    s->d_full = false;
    while (s->d_pending && evbuffer_get_length(s->d_pending) > 0 && !s->d_full) {
        size_t n = evbuffer_get_contiguous_space(s->d_pending);
        const char *p = (const char *)evbuffer_pullup(s->d_pending, (ev_ssize_t)n);
        bool full = rem_stream_req_body(s, p, n);
        if (s->state != REM_STREAM_ACTIVE)
            return;
        evbuffer_drain(s->d_pending, n);
        s->d_full = full;
    }
    if (s->d_full)
        return;
    give_window(d, s, false);
    schedule_send(d);
    if (s->d_end_seen && !s->req_done)
        rem_stream_req_end(s);
}

/* ---- response side ----------------------------------------------------------------------- */

static ssize_t on_read_body(nghttp2_session *ng, int32_t id, uint8_t *buf, size_t length,
                            uint32_t *flags, nghttp2_data_source *src, void *arg)
{
    struct rem_h2_down *d = arg;
    struct rem_stream *s = src->ptr;
    size_t have = s->d_out ? evbuffer_get_length(s->d_out) : 0;
    size_t n = have < length ? have : length;
    if (n > 0) {
        evbuffer_remove(s->d_out, buf, n);
        s->bytes_out += n;
        size_t wm = d->c->cfg->limits.buffer_bytes;
        if (have >= wm / 2 && have - n < wm / 2 && s->upconn && !s->d_finished)
            rem_stream_on_down_writable(s);
    }
    if (have - n > 0)
        return (ssize_t)n;
    if (!s->d_eof) {
        if (n > 0)
            return (ssize_t)n;
        s->d_deferred = true;
        return NGHTTP2_ERR_DEFERRED;
    }
    *flags |= NGHTTP2_DATA_FLAG_EOF;
    size_t nv;
    nghttp2_nv *nva = rem_h2_trailer_nva(&s->resp_trl, &nv);
    if (nv > 0 && nghttp2_submit_trailer(ng, id, nva, nv) == 0)
        *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
    free(nva);
    return (ssize_t)n;
}

static void resume_body(struct rem_h2_down *d, struct rem_stream *s)
{
    if (s->d_deferred && !s->d_closed) {
        s->d_deferred = false;
        nghttp2_session_resume_data(d->ng, s->d_id);
    }
    schedule_send(d);
}

static struct rem_h2_down *live(struct rem_stream *s)
{
    struct rem_h2_down *d = s->conn->h2;
    return d && !d->dead && !s->d_closed ? d : NULL;
}

/* Submits s->resp as a HEADERS frame: the final head (with x-request-id, then the body through
 * the data provider, or END_STREAM when there is none) or an interim 1xx. */
static int submit_head(struct rem_stream *s, bool final)
{
    struct rem_h2_down *d = live(s);
    if (!d)
        return 0;
    nghttp2_nv *nva = malloc(sizeof(*nva) * (s->resp.n_hdrs + 4));
    char status[4];
    if (!nva)
        return -REM_E_NOMEM;
    size_t n = rem_h2_response_nva(&s->resp, status, final ? s->rid : NULL, s->rid_len, nva);
    for (size_t i = 0; i < n; i++)
        s->bytes_out += nva[i].namelen + nva[i].valuelen;
    int rv;
    bool body = final && rem_http_response_has_body(s->head_request, s->resp.status) &&
                !s->resp_headers_only;
    if (final) {
        nghttp2_data_provider prd = {.source.ptr = s, .read_callback = on_read_body};
        rv = nghttp2_submit_response(d->ng, s->d_id, nva, n, body ? &prd : NULL);
    } else {
        rv = nghttp2_submit_headers(d->ng, NGHTTP2_FLAG_NONE, s->d_id, NULL, nva, n, NULL);
    }
    free(nva);
    if (rv < 0)
        return -REM_E_NOMEM;
    if (final) {
        s->d_submitted = true;
        s->d_eof = !body;
    }
    schedule_send(d);
    return 0;
}

int rem_h2_down_write_head(struct rem_stream *s)
{
    return submit_head(s, true);
}

int rem_h2_down_write_interim(struct rem_stream *s)
{
    return submit_head(s, false);
}

int rem_h2_down_write_body(struct rem_stream *s, const char *p, size_t n)
{
    struct rem_h2_down *d = live(s);
    if (!d || n == 0 || s->head_request)
        return 0;
    if (!s->d_out)
        s->d_out = evbuffer_new();
    if (!s->d_out || evbuffer_add(s->d_out, p, n) < 0)
        return -REM_E_NOMEM;
    resume_body(d, s);
    return 0;
}

int rem_h2_down_write_end(struct rem_stream *s)
{
    struct rem_h2_down *d = live(s);
    if (!d)
        return 0;
    s->d_eof = true;
    resume_body(d, s);
    return 0;
}

int rem_h2_down_write_error(struct rem_stream *s, enum rem_err e)
{
    struct rem_h2_down *d = live(s);
    if (!d)
        return 0;
    int status = rem_err_status(e);
    const char *label = rem_err_label(e);
    char st[4], gs[4], body[160];
    nghttp2_nv nva[8];
    size_t n = 0;
    bool with_body = false;
    snprintf(st, sizeof(st), "%d", s->grpc ? 200 : status);
    nva[n++] = REM_H2_NV(":status", st, strlen(st));
    if (s->grpc) {
        snprintf(gs, sizeof(gs), "%d", rem_h2_grpc_status(e));
        nva[n++] = REM_H2_NV("content-type", "application/grpc", 16);
        nva[n++] = REM_H2_NV("grpc-status", gs, strlen(gs));
        nva[n++] = REM_H2_NV("grpc-message", label, strlen(label));
    } else {
        int blen = snprintf(body, sizeof(body), "remora: %d %s (%s)\n", status,
                            rem_http_reason(status), label);
        if (blen < 0 || (size_t)blen >= sizeof(body))
            blen = (int)sizeof(body) - 1;
        nva[n++] = REM_H2_NV("content-type", "text/plain", 10);
        if (!s->head_request) {
            if (!s->d_out)
                s->d_out = evbuffer_new();
            if (!s->d_out || evbuffer_add(s->d_out, body, (size_t)blen) < 0)
                return -REM_E_NOMEM;
            with_body = true;
        }
        if (e == REM_E_QUEUE_FULL || e == REM_E_QUEUE_TIMEOUT)
            nva[n++] = REM_H2_NV("retry-after", "1", 1);
    }
    nva[n++] = REM_H2_NV("x-remora-error", label, strlen(label));
    if (s->rid)
        nva[n++] = REM_H2_NV("x-request-id", s->rid, s->rid_len);
    s->d_eof = true;
    nghttp2_data_provider prd = {.source.ptr = s, .read_callback = on_read_body};
    if (nghttp2_submit_response(d->ng, s->d_id, nva, n, with_body ? &prd : NULL) != 0)
        return -REM_E_NOMEM;
    s->d_submitted = true;
    schedule_send(d);
    return 0;
}

bool rem_h2_down_full(struct rem_stream *s)
{
    return s->d_out && evbuffer_get_length(s->d_out) >= s->conn->cfg->limits.buffer_bytes;
}

void rem_h2_down_stream_done(struct rem_stream *s)
{
    struct rem_h2_down *d = s->conn->h2;
    s->d_finished = true;
    if (s->d_closed || !d || d->dead) {
        if (d)
            stream_release(d, s);
        return;
    }
    /* Whatever the client still sends for it is not wanted: keep the window open. */
    if (s->d_pending)
        evbuffer_drain(s->d_pending, evbuffer_get_length(s->d_pending));
    give_window(d, s, true);
    if (!s->d_submitted || !s->d_eof) {
        /* The response cannot be completed: the stream is reset, never cut short silently. */
        uint32_t code = s->err == REM_E_CLIENT_ABORT ? NGHTTP2_CANCEL : NGHTTP2_INTERNAL_ERROR;
        nghttp2_submit_rst_stream(d->ng, NGHTTP2_FLAG_NONE, s->d_id, code);
    }
    schedule_send(d);
}

static int on_stream_close(nghttp2_session *ng, int32_t id, uint32_t code, void *arg)
{
    struct rem_h2_down *d = arg;
    struct rem_stream *s = nghttp2_session_get_stream_user_data(ng, id);
    if (d->dead || !s)
        return 0;
    s->d_closed = true;
    if (!s->d_finished) {
        rem_stream_abort(s, REM_E_CLIENT_ABORT); /* calls stream_done, which releases s */
        return 0;
    }
    stream_release(d, s);
    return 0;
}

static int on_frame_send(nghttp2_session *ng, const nghttp2_frame *f, void *arg)
{
    struct rem_h2_down *d = arg;
    rem_h2_count_frame(shard(d), REM_H2_SIDE_DOWN, f);
    return 0;
}

static int on_invalid_frame(nghttp2_session *ng, const nghttp2_frame *f, int err, void *arg)
{
    struct rem_h2_down *d = arg;
    rem_log_debug("conn %s: http2 invalid frame type %u: %s", d->c->peer, f->hd.type,
                  nghttp2_strerror(err));
    return 0;
}

/* ---- session ----------------------------------------------------------------------------- */

static nghttp2_session_callbacks *server_cbs;
static nghttp2_option *server_opt;
static pthread_once_t server_once = PTHREAD_ONCE_INIT;

static void server_init(void)
{
    if (nghttp2_session_callbacks_new(&server_cbs) != 0 || nghttp2_option_new(&server_opt) != 0)
        abort();
    nghttp2_session_callbacks_set_on_begin_headers_callback(server_cbs, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(server_cbs, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(server_cbs, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(server_cbs, on_data_chunk);
    nghttp2_session_callbacks_set_on_stream_close_callback(server_cbs, on_stream_close);
    nghttp2_session_callbacks_set_on_frame_send_callback(server_cbs, on_frame_send);
    nghttp2_session_callbacks_set_on_invalid_frame_recv_callback(server_cbs, on_invalid_frame);
    nghttp2_option_set_no_auto_window_update(server_opt, 1);
    /* The 1.52 defaults for SETTINGS/PING acks (1000 queued), settings entries (32),
     * CONTINUATION frames (8, CVE-2024-28182) and HPACK stay; see DESIGN.md. */
}

int rem_h2_down_init(struct rem_conn *c)
{
    pthread_once(&server_once, server_init);
    const struct rem_cfg_http2 *hc = &c->lcfg->http2;
    struct rem_h2_down *d = calloc(1, sizeof(*d));
    if (!d)
        return -REM_E_NOMEM;
    d->c = c;
    TAILQ_INIT(&d->streams);
    d->win_start_ms = rem_now_ms();
    if (nghttp2_session_server_new2(&d->ng, server_cbs, d, server_opt) != 0) {
        free(d);
        return -REM_E_NOMEM;
    }
    uint32_t hlist = hc->max_header_list_bytes ? hc->max_header_list_bytes
                                               : (uint32_t)c->cfg->limits.max_header_bytes;
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, hc->max_concurrent_streams},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, hc->initial_window_bytes},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, hlist},
    };
    if (nghttp2_submit_settings(d->ng, NGHTTP2_FLAG_NONE, iv, sizeof(iv) / sizeof(iv[0])) != 0) {
        nghttp2_session_del(d->ng);
        free(d);
        return -REM_E_NOMEM;
    }
    /* The connection window covers every stream's window, so one stalled stream (holding its
     * window while its upstream is slow) never blocks the others. */
    uint64_t cw = (uint64_t)hc->max_concurrent_streams * hc->initial_window_bytes;
    if (cw > NGHTTP2_MAX_WINDOW_SIZE)
        cw = NGHTTP2_MAX_WINDOW_SIZE;
    if (cw > NGHTTP2_INITIAL_CONNECTION_WINDOW_SIZE)
        nghttp2_session_set_local_window_size(d->ng, NGHTTP2_FLAG_NONE, 0, (int32_t)cw);
    c->h2 = d;
    c->proto_known = true;
    return 0;
}

static void session_over(struct rem_h2_down *d)
{
    struct rem_conn *c = d->c;
    if (c->state < REM_CONN_CLOSING && !nghttp2_session_want_read(d->ng) &&
        !nghttp2_session_want_write(d->ng))
        rem_conn_close_after_write(c);
}

static void send_now(struct rem_h2_down *d)
{
    struct rem_conn *c = d->c;
    if (d->dead || c->state >= REM_CONN_CLOSED)
        return;
    d->depth++;
    int rc = rem_h2_pump(d->ng, c->t.out, rem_conn_high_watermark(c));
    d->depth--;
    if (rc < 0) {
        rem_log_debug("conn %s: http2 send: %s", c->peer,
                      rc == -REM_E_NOMEM ? "out of memory" : nghttp2_strerror(rc));
        rem_conn_close(c);
        return;
    }
    if (d->dead || c->state >= REM_CONN_CLOSED)
        return;
    rem_transport_flush_later(&c->t);
    session_over(d);
}

void rem_h2_down_process(struct rem_conn *c)
{
    struct rem_h2_down *d = c->h2;
    struct evbuffer *in = c->t.in;
    d->depth++;
    while (!d->dead && evbuffer_get_length(in) > 0) {
        size_t n = evbuffer_get_contiguous_space(in);
        const uint8_t *p = evbuffer_pullup(in, (ev_ssize_t)n);
        ssize_t rv = nghttp2_session_mem_recv(d->ng, p, n);
        if (d->dead || c->state >= REM_CONN_CLOSED) {
            d->depth--;
            return;
        }
        if (rv < 0) {
            rem_log_debug("conn %s: http2: %s", c->peer, nghttp2_strerror((int)rv));
            evbuffer_drain(in, evbuffer_get_length(in));
            /* Make sure a GOAWAY goes (nghttp2 queues one for most errors, not all; a second
             * terminate is a no-op), send it, then close. */
            uint32_t code = rv == NGHTTP2_ERR_HEADER_COMP ? NGHTTP2_COMPRESSION_ERROR
                            : rv == NGHTTP2_ERR_FLOODED || rv == NGHTTP2_ERR_TOO_MANY_CONTINUATIONS
                                ? NGHTTP2_ENHANCE_YOUR_CALM
                                : NGHTTP2_PROTOCOL_ERROR;
            nghttp2_session_terminate_session(d->ng, code);
            d->depth--;
            send_now(d);
            if (c->state < REM_CONN_CLOSING)
                rem_conn_close_after_write(c);
            return;
        }
        evbuffer_drain(in, (size_t)rv);
    }
    d->depth--;
    send_now(d);
    if (c->state < REM_CONN_CLOSED)
        rem_transport_rearm(&c->t);
}

void rem_h2_down_on_drained(struct rem_conn *c)
{
    if (c->h2 && !c->h2->dead && c->h2->depth == 0)
        send_now(c->h2);
}

void rem_h2_down_idle(struct rem_conn *c)
{
    struct rem_h2_down *d = c->h2;
    nghttp2_session_terminate_session(d->ng, NGHTTP2_NO_ERROR);
    send_now(d);
    if (c->state < REM_CONN_CLOSING)
        rem_conn_close_after_write(c);
}

void rem_h2_down_abort_all(struct rem_conn *c)
{
    struct rem_h2_down *d = c->h2;
    if (!d || d->dead)
        return;
    d->dead = true;
    struct rem_stream *s;
    while ((s = TAILQ_FIRST(&d->streams)) != NULL) {
        nghttp2_session_set_stream_user_data(d->ng, s->d_id, NULL);
        s->d_closed = true;
        if (!s->d_finished)
            rem_stream_abort(s, REM_E_CLIENT_ABORT); /* releases s */
        else
            stream_release(d, s);
    }
}

void rem_h2_down_free(struct rem_conn *c)
{
    struct rem_h2_down *d = c->h2;
    if (!d)
        return;
    nghttp2_session_del(d->ng);
    free(d);
    c->h2 = NULL;
}
