/* SPDX-License-Identifier: Apache-2.0
 * h2_down: HTTP/2 from clients over nghttp2's server session. nghttp2 callbacks only record
 * and hand over: request heads go into the stream's arena, body bytes to the stream (or to
 * d_pending while no upconn is ready), responses come out of d_out through a data provider that
 * defers when it is empty. Window is given back (nghttp2_session_consume) only for bytes the
 * upconn took, so a slow upstream holds the client to its window. Re-entry is avoided with a
 * depth counter: a send asked for while the session is inside recv or send is left to the
 * outermost call, which always sends on its way out. A response that waits on windows the
 * client never opens is reset after client_idle_timeout (the stall guard). */
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

/* Per-stream state (rem_stream.down_ctx), from the conn's freelist. */
struct rem_h2_down_stream {
    struct rem_stream *s;                 /* borrowed: the stream (owned by this codec's conn) */
    TAILQ_ENTRY(rem_h2_down_stream) link; /* in the conn's stream list */
    struct rem_h2_down_stream *next_free;
    int32_t id;               /* stream id on the session */
    struct evbuffer *out;     /* owned: response body waiting for the data provider */
    struct evbuffer *pending; /* owned: request body received before an upconn was ready */
    size_t unconsumed;        /* request body bytes not yet given back as window */
    uint32_t head_err;        /* enum rem_err recorded while the request head arrived */
    uint64_t wait_ms;         /* since when response bytes wait for the client (stall guard) */
    bool wait;                /* request body waits for an upconn (into pending) */
    bool full;                /* the upconn's output is full: window withheld */
    bool end_seen;            /* END_STREAM from the client, maybe still in pending */
    bool eof;                 /* the response's end is queued in out */
    bool deferred;            /* the data provider is deferred */
    bool closed;              /* nghttp2 closed the stream */
    bool finished;            /* the proxy side finished (logged, counted) */
    bool submitted;           /* a response (or error) was submitted */
    bool tunnel;              /* an open tunnel (extended CONNECT, CONNECT): DATA both ways */
    bool stalled;             /* reset by the stall guard */
    bool authority;           /* :authority came (it is the head's host) */
    uint16_t default_port;    /* of :scheme: 443 (https), 80 (http), 0 (none or another) */
};

TAILQ_HEAD(rem_h2_down_stream_list, rem_h2_down_stream);

#define REM_H2_DOWN_FREELIST_MAX 32
/* Streams remora reset lately: a client may still send their trailers (RFC 9113 5.1). */
#define REM_H2_DOWN_RESET_RING 32

struct rem_h2_down {
    nghttp2_session *ng; /* owned */
    struct rem_conn *c;  /* borrowed: the owner */
    struct rem_h2_down_stream_list streams;
    struct rem_h2_down_stream *free_ds; /* owned: freelist */
    unsigned n_free_ds;
    unsigned n_streams;
    int depth;             /* > 0 while inside nghttp2 */
    struct rem_flush send; /* on the loop's flush list: a deferred send (schedule_send) */
    int32_t last_id;       /* stream_of's one-entry cache: last_id's stream is last_s */
    struct rem_stream *last_s;
    bool dead;              /* the conn closed: callbacks do nothing */
    struct event *drain_ev; /* owned: the final GOAWAY, 1 s after the shutdown notice */
    struct event *stall_ev; /* owned: the stall guard (lazy, client_idle_timeout) */
    uint64_t win_start_ms;
    uint32_t resets, ctrl; /* in the current reset_interval */
    int32_t max_client_id; /* the highest stream id the client opened (RFC 9113 5.1.1) */
    int32_t reset_ids[REM_H2_DOWN_RESET_RING]; /* ring: ids remora sent RST_STREAM for */
    unsigned reset_next;
};

static inline struct rem_h2_down_stream *DS(const struct rem_stream *s)
{
    return s->down_ctx;
}

static struct rem_h2_down *h2_of(const struct rem_conn *c)
{
    return c->codec;
}

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

/* The stream of id (its nghttp2 user data), or NULL. The frames of one stream come together
 * (a header block's fields, then the frame itself), so one entry saves most of nghttp2's hash
 * lookups; it is dropped when the stream's user data changes or the stream is released. */
static struct rem_stream *stream_of(struct rem_h2_down *d, int32_t id)
{
    if (id != d->last_id || id == 0) {
        d->last_s = nghttp2_session_get_stream_user_data(d->ng, id);
        d->last_id = id;
    }
    return d->last_s;
}

static struct rem_metrics_shard *shard(const struct rem_h2_down *d)
{
    return d->c->worker->metrics;
}

static void send_now(struct rem_h2_down *d);

static void on_send_later(struct rem_flush *f)
{
    struct rem_h2_down *d = (struct rem_h2_down *)((char *)f - offsetof(struct rem_h2_down, send));
    if (d->c->state < REM_CONN_CLOSING) /* a closing conn sends what its output holds, no more */
        send_now(d);
}

/* Sends are never made inside the caller's stack: a stream write may be followed by more
 * state changes on the same stream (resp_done, finish), and a synchronous send could close and
 * free the stream under them. Inside nghttp2 the outermost recv/send sends; otherwise the
 * loop's flush list does, once the current callbacks have returned: one send per conn however
 * many of its streams wrote in the iteration, with no event of its own, just before the
 * transports it feeds are written (their flushes queue behind it on the same list). */
static void schedule_send(struct rem_h2_down *d)
{
    if (d->depth == 0 && !d->dead)
        rem_loop_flush_later(&d->c->worker->loop, &d->send, on_send_later);
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

/* Remembers a stream remora reset (or refused): the client may still send its trailers. */
static void note_reset(struct rem_h2_down *d, int32_t id)
{
    d->reset_ids[d->reset_next] = id;
    d->reset_next = (d->reset_next + 1) % REM_H2_DOWN_RESET_RING;
}

static void calm_down(struct rem_h2_down *d, const char *why)
{
    rem_log_warn("conn %s: http2 %s: GOAWAY ENHANCE_YOUR_CALM", d->c->peer, why);
    nghttp2_session_terminate_session(d->ng, NGHTTP2_ENHANCE_YOUR_CALM);
}

static void ds_dispose(struct rem_h2_down_stream *ds)
{
    if (ds->out)
        evbuffer_free(ds->out);
    if (ds->pending)
        evbuffer_free(ds->pending);
    free(ds);
}

/* Per-stream state for a new stream: from the freelist, keeping its buffers. */
static struct rem_h2_down_stream *ds_new(struct rem_h2_down *d, struct rem_stream *s)
{
    struct rem_h2_down_stream *ds = d->free_ds;
    struct evbuffer *out = NULL, *pending = NULL;
    if (ds) {
        d->free_ds = ds->next_free;
        d->n_free_ds--;
        out = ds->out;
        pending = ds->pending;
    } else {
        ds = rem_xcalloc(1, sizeof(*ds)); /* control object: aborts on OOM */
    }
    memset(ds, 0, sizeof(*ds));
    ds->out = out;
    ds->pending = pending;
    ds->s = s;
    return ds;
}

/* Frees s when both sides are done with it. */
static void stream_release(struct rem_h2_down *d, struct rem_stream *s)
{
    struct rem_conn *c = d->c;
    struct rem_h2_down_stream *ds = DS(s);
    TAILQ_REMOVE(&d->streams, ds, link);
    d->n_streams--;
    if (d->last_s == s)
        d->last_id = 0;
    REM_M_ADD(shard(d)->downstream_streams_active, -1);
    rem_stream_free(s);
    if (ds->out)
        evbuffer_drain(ds->out, evbuffer_get_length(ds->out));
    if (ds->pending)
        evbuffer_drain(ds->pending, evbuffer_get_length(ds->pending));
    if (d->n_free_ds < REM_H2_DOWN_FREELIST_MAX) {
        ds->next_free = d->free_ds;
        d->free_ds = ds;
        d->n_free_ds++;
    } else {
        ds_dispose(ds);
    }
    if (d->n_streams == 0 && c->state == REM_CONN_ACTIVE)
        rem_conn_set_state(c, REM_CONN_IDLE);
}

/* Gives back as window what the upconn took: everything received that is not pending. */
static void give_window(struct rem_h2_down *d, struct rem_stream *s, bool all)
{
    size_t keep = all || !DS(s)->pending ? 0 : evbuffer_get_length(DS(s)->pending);
    if (DS(s)->unconsumed > keep) {
        size_t n = DS(s)->unconsumed - keep;
        DS(s)->unconsumed = keep;
        if (!DS(s)->closed)
            nghttp2_session_consume(d->ng, DS(s)->id, n);
        else
            nghttp2_session_consume_connection(d->ng, n);
    }
}

/* ---- request side ------------------------------------------------------------------------ */

static bool reset_by_us(const struct rem_h2_down *d, int32_t id)
{
    for (unsigned i = 0; i < REM_H2_DOWN_RESET_RING; i++)
        if (d->reset_ids[i] == id)
            return true;
    return false;
}

/* RFC 9113 5.1.1: a client opens streams in increasing order; a HEADERS frame on a lower (or
 * equal) id that is no open stream is a connection error PROTOCOL_ERROR. nghttp2 1.52 only
 * checks the streams it still remembers and ignores the others (nghttp2_session.c,
 * nghttp2_session_on_request_headers_received), so the check is here, before the header block
 * is processed. Legitimate frames on lower ids stay: trailers on an open stream, and any
 * HEADERS on a stream remora reset lately (the client may have sent it before the RST_STREAM
 * reached it: ignored, RFC 9113 5.1 "closed"). */
static int on_begin_frame(nghttp2_session *ng, const nghttp2_frame_hd *hd, void *arg)
{
    struct rem_h2_down *d = arg;
    int32_t id = hd->stream_id;
    /* RFC 9113 4.2: a frame over SETTINGS_MAX_FRAME_SIZE is a FRAME_SIZE_ERROR, a connection
     * error for a field block. nghttp2 1.52 checks every frame's length but a CONTINUATION's,
     * whose payload it would feed to the HPACK decoder whatever its size (up to 16 MiB). */
    if (!d->dead && hd->type == NGHTTP2_CONTINUATION &&
        hd->length > nghttp2_session_get_local_settings(ng, NGHTTP2_SETTINGS_MAX_FRAME_SIZE)) {
        nghttp2_session_terminate_session(ng, NGHTTP2_FRAME_SIZE_ERROR);
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    if (d->dead || hd->type != NGHTTP2_HEADERS || id <= 0 || !(id & 1))
        return 0; /* even ids and 0: nghttp2 ends the conn itself */
    if (id > d->max_client_id) {
        d->max_client_id = id;
        return 0;
    }
    nghttp2_stream *st = nghttp2_session_find_stream(ng, id);
    nghttp2_stream_proto_state ps = st ? nghttp2_stream_get_state(st) : NGHTTP2_STREAM_STATE_IDLE;
    if (ps == NGHTTP2_STREAM_STATE_OPEN || ps == NGHTTP2_STREAM_STATE_HALF_CLOSED_LOCAL ||
        ps == NGHTTP2_STREAM_STATE_HALF_CLOSED_REMOTE || reset_by_us(d, id))
        return 0; /* trailers, or what nghttp2 answers itself (STREAM_CLOSED) */
    rem_log_warn("conn %s: http2 HEADERS on stream %d after stream %d: GOAWAY PROTOCOL_ERROR",
                 d->c->peer, (int)id, (int)d->max_client_id);
    nghttp2_session_terminate_session(ng, NGHTTP2_PROTOCOL_ERROR);
    return NGHTTP2_ERR_CALLBACK_FAILURE; /* nothing more of this conn's input is processed */
}

static int on_begin_headers(nghttp2_session *ng, const nghttp2_frame *f, void *arg)
{
    struct rem_h2_down *d = arg;
    struct rem_conn *c = d->c;
    if (d->dead || f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    struct rem_stream *s = rem_stream_new(c);
    struct rem_h2_down_stream *ds = ds_new(d, s);
    rem_stream_set_down_ctx(s, ds);
    ds->id = f->hd.stream_id;
    /* The advertised SETTINGS_MAX_HEADER_LIST_SIZE is enforced too when it is the lower. */
    rem_stream_limit_head_bytes(s, c->lcfg->http2.max_header_list_bytes);
    TAILQ_INSERT_TAIL(&d->streams, ds, link);
    d->n_streams++;
    REM_M_ADD(shard(d)->downstream_streams_active, 1);
    nghttp2_session_set_stream_user_data(ng, ds->id, s);
    d->last_id = ds->id;
    d->last_s = s;
    if (c->state == REM_CONN_IDLE)
        rem_conn_set_state(c, REM_CONN_ACTIVE);
    return 0;
}

/* Whether the head's host (from :authority) names the same entity as v. */
static bool authority_is(const struct rem_head *h, const char *v, size_t vlen,
                         unsigned default_port)
{
    for (uint32_t i = 0; i < h->n_hdrs; i++) {
        const struct rem_hdr *x = &h->hdrs[i];
        if (rem_http_name_eq(REM_HDR_NAME(h, x), x->name_len, "host"))
            return rem_http_authority_eq(REM_HDR_VAL(h, x), x->val_len, v, vlen, default_port);
    }
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
    struct rem_stream *s = stream_of(d, f->hd.stream_id);
    bool trailers = f->hd.type == NGHTTP2_HEADERS && f->headers.cat != NGHTTP2_HCAT_REQUEST;
    if (d->dead || !s || DS(s)->head_err || f->hd.type != NGHTTP2_HEADERS ||
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
        else if (rem_http_name_eq(n, nlen, ":authority")) {
            rc = add_header(h, "host", 4, v, vlen); /* RFC 9113 8.3.1 */
            DS(s)->authority = true;
        } else if (rem_http_name_eq(n, nlen, ":scheme"))
            DS(s)->default_port = rem_http_name_eq(v, vlen, "https")  ? 443
                                  : rem_http_name_eq(v, vlen, "http") ? 80
                                                                      : 0;
        else if (rem_http_name_eq(n, nlen, ":protocol"))
            rem_stream_set_upgrade(s, v, vlen); /* RFC 8441 4: extended CONNECT */
    } else if (!trailers && rem_http_name_eq(n, nlen, "host") && DS(s)->authority) {
        /* RFC 9113 8.3.1: :authority (first, pseudo-headers lead) is the host; a Host naming
         * another entity makes the request malformed, one naming the same is dropped. */
        if (!authority_is(h, v, vlen, DS(s)->default_port))
            rc = -REM_E_BAD_REQUEST;
    } else {
        rc = add_header(h, n, nlen, v, vlen);
    }
    if (rc < 0)
        DS(s)->head_err = (uint32_t)rem_err_from_rc(rc);
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
            rem_head_drop(h, i); /* the crumbs: not forwarded */
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
    rem_head_set_version(h, 2, 0);
    rem_stream_set_grpc(s, value_starts(h, "content-type", "application/grpc"));
    if (DS(s)->head_err) {
        rem_stream_fail(s, (enum rem_err)DS(s)->head_err);
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
    /* CONNECT (RFC 9113 8.5: :authority only) and extended CONNECT (RFC 8441 4: with
     * :protocol and :path; nghttp2 checked the pseudo-headers) go to the stream, which tunnels
     * them where the route allows; any other request needs a :path. */
    bool connect = rem_http_name_eq(m, ml, "CONNECT");
    const char *t = rem_head_ptr(h, h->span_off[REM_SPAN_TARGET]);
    size_t tl = h->span_len[REM_SPAN_TARGET];
    /* RFC 9113 8.3.1: :path is an absolute path (and query), or '*' for OPTIONS (as h1_down
     * requires of the request-target); nghttp2 checks it only for the http and https schemes,
     * and an absolute URI in it is malformed whatever the scheme. */
    if (!connect && (tl == 0 || (t[0] != '/' && !(tl == 1 && t[0] == '*' &&
                                                  rem_http_name_eq(m, ml, "OPTIONS"))))) {
        rem_stream_fail(s, REM_E_BAD_REQUEST);
        return;
    }
    /* PRI only spells the HTTP/2 connection preface (RFC 9113 3.4; RFC 7540 11.6 reserves it):
     * it is no method, and an HTTP/1.1 app refuses "PRI /x HTTP/1.1" (llhttp: invalid version),
     * as h1_down does. */
    if (ml == 3 && memcmp(m, "PRI", 3) == 0) {
        rem_stream_fail(s, REM_E_BAD_REQUEST);
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
    rem_stream_set_request(s, rem_http_name_eq(m, ml, "HEAD"), !end_stream,
                           !end_stream && h->content_length < 0);
    if (end_stream) {
        rem_stream_req_end(s); /* marks it: no body */
        DS(s)->end_seen = true;
    } else {
        DS(s)->wait = true; /* body goes to pending until an upconn is ready */
    }
    rem_stream_start(s);
}

/* END_STREAM from the client: the request ends once d_pending went to the upconn. */
static void req_end(struct rem_stream *s)
{
    DS(s)->end_seen = true;
    if (s->state == REM_STREAM_DONE || s->req_done)
        return;
    if (DS(s)->wait || (DS(s)->pending && evbuffer_get_length(DS(s)->pending) > 0))
        return;
    rem_stream_req_end(s);
}

static int on_frame_recv(nghttp2_session *ng, const nghttp2_frame *f, void *arg)
{
    struct rem_h2_down *d = arg;
    if (d->dead)
        return 0;
    struct rem_stream *s = f->hd.stream_id ? stream_of(d, f->hd.stream_id) : NULL;
    bool end = (f->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
    switch (f->hd.type) {
    case NGHTTP2_HEADERS:
        if (!s)
            break;
        rem_stream_count_in(s, f->hd.length + 9);
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
        rem_h2_count_goaway(shard(d), REM_H2_SIDE_DOWN, f->goaway.error_code);
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
    if (d->dead)
        return 0;
    struct rem_stream *s = stream_of(d, id);
    if (!s || s->state == REM_STREAM_DONE || s->req_done) {
        nghttp2_session_consume(ng, id, len); /* nobody wants it: keep the window open */
        return 0;
    }
    rem_stream_count_in(s, len);
    uint64_t max = s->tunnel_req ? 0 : d->c->cfg->limits.max_body_bytes; /* tunnels: no body */
    size_t pending = DS(s)->pending ? evbuffer_get_length(DS(s)->pending) : 0;
    if (max && (uint64_t)s->req_body_bytes + pending + len > max) {
        nghttp2_session_consume(ng, id, len);
        rem_stream_fail(s, REM_E_BODY_TOO_LARGE);
        return 0;
    }
    DS(s)->unconsumed += len;
    if (DS(s)->wait || pending > 0 || s->state != REM_STREAM_ACTIVE) {
        if (!DS(s)->pending)
            DS(s)->pending = evbuffer_new();
        if (!DS(s)->pending || evbuffer_add(DS(s)->pending, data, len) < 0)
            rem_stream_fail(s, REM_E_NOMEM);
        return 0;
    }
    if (rem_stream_req_body(s, (const char *)data, len))
        DS(s)->full = true;
    else if (s->state != REM_STREAM_DONE)
        give_window(d, s, false);
    return 0;
}

static void h2_req_resume(struct rem_stream *s)
{
    struct rem_h2_down *d = h2_of(s->conn);
    if (!d || d->dead || s->state != REM_STREAM_ACTIVE || !s->upconn)
        return;
    DS(s)->wait = false;
    DS(s)->full = false;
    while (DS(s)->pending && evbuffer_get_length(DS(s)->pending) > 0 && !DS(s)->full) {
        size_t n = evbuffer_get_contiguous_space(DS(s)->pending);
        const char *p = (const char *)evbuffer_pullup(DS(s)->pending, (ev_ssize_t)n);
        bool full = rem_stream_req_body(s, p, n);
        if (s->state != REM_STREAM_ACTIVE)
            return;
        evbuffer_drain(DS(s)->pending, n);
        DS(s)->full = full;
    }
    if (DS(s)->full)
        return;
    give_window(d, s, false);
    schedule_send(d);
    if (DS(s)->end_seen && !s->req_done)
        rem_stream_req_end(s);
}

/* ---- response side ----------------------------------------------------------------------- */

/* The data provider: says how many bytes of out the next DATA frame carries; on_send_data
 * moves them (NGHTTP2_DATA_FLAG_NO_COPY: nghttp2 neither copies them nor frames them into its
 * own buffer). Nothing else runs between the two: nghttp2 calls them in one mem_send. */
static ssize_t on_read_body(nghttp2_session *ng, int32_t id, uint8_t *buf, size_t length,
                            uint32_t *flags, nghttp2_data_source *src, void *arg)
{
    struct rem_stream *s = src->ptr;
    size_t have = DS(s)->out ? evbuffer_get_length(DS(s)->out) : 0;
    size_t n = have < length ? have : length;
    if (n > 0)
        *flags |= NGHTTP2_DATA_FLAG_NO_COPY;
    if (have - n > 0)
        return (ssize_t)n;
    if (!DS(s)->eof) {
        if (n > 0)
            return (ssize_t)n;
        DS(s)->deferred = true;
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

/* Writes the DATA frame on_read_body sized: header and bytes, moved from out to the conn's
 * output; below half the buffer, the upconn may send more. A full conn output pauses the
 * session (mem_send returns 0, as rem_h2_pump does for frames it copies), or every stream's
 * DATA would go into it in one call. */
static int on_send_data(nghttp2_session *ng, nghttp2_frame *f, const uint8_t *framehd,
                        size_t length, nghttp2_data_source *src, void *arg)
{
    struct rem_h2_down *d = arg;
    struct rem_stream *s = src->ptr;
    struct evbuffer *out = rem_conn_output(d->c);
    size_t have = evbuffer_get_length(DS(s)->out);
    if (rem_h2_data_out(out, f, framehd, DS(s)->out, length) < 0)
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    rem_stream_count_out(s, length);
    size_t wm = d->c->cfg->limits.buffer_bytes;
    if (have >= wm / 2 && have - length < wm / 2 && s->upconn && !DS(s)->finished)
        rem_stream_on_down_writable(s);
    return evbuffer_get_length(out) >= rem_conn_high_watermark(d->c) ? NGHTTP2_ERR_PAUSE : 0;
}

/* ---- stall guard ------------------------------------------------------------------------ */

/* Whether response bytes (or its end) of ds wait on the client's flow-control windows, which
 * it may keep shut while it answers PINGs. Bytes held back by a full conn output (a slow TCP
 * reader) are the conn's write-stall guard's. */
static bool waiting(struct rem_h2_down *d, const struct rem_h2_down_stream *ds)
{
    if (!ds->submitted || ds->closed || ds->stalled ||
        !(ds->eof || (ds->out && evbuffer_get_length(ds->out) > 0)))
        return false;
    if (nghttp2_session_get_remote_window_size(d->ng) > 0 &&
        nghttp2_session_get_stream_remote_window_size(d->ng, ds->id) > 0)
        return false;
    nghttp2_stream *st = nghttp2_session_find_stream(d->ng, ds->id);
    nghttp2_stream_proto_state ps = st ? nghttp2_stream_get_state(st) : NGHTTP2_STREAM_STATE_CLOSED;
    return ps == NGHTTP2_STREAM_STATE_OPEN || ps == NGHTTP2_STREAM_STATE_HALF_CLOSED_REMOTE;
}

static void arm_stall(struct rem_h2_down *d)
{
    uint64_t ms = d->c->cfg->limits.client_idle_timeout_ms;
    if (ms && !evtimer_pending(d->stall_ev, NULL)) {
        struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)((ms % 1000) * 1000)};
        event_add(d->stall_ev, &tv);
    }
}

/* Response bytes of ds start to wait (a final head, bytes into an empty out, the end). */
static void start_wait(struct rem_h2_down *d, struct rem_h2_down_stream *ds)
{
    ds->wait_ms = rem_now_ms();
    arm_stall(d);
}

/* The stall guard: a stream whose response has sent no DATA for client_idle_timeout while
 * bytes wait on a shut window is reset (RST_STREAM CANCEL; the access log says client_timeout),
 * which lets the app go, as the conn's write-stall guard drops an HTTP/1.1 client that stops
 * reading. */
static void on_stall_check(evutil_socket_t fd, short what, void *arg)
{
    struct rem_h2_down *d = arg;
    uint64_t limit = d->c->cfg->limits.client_idle_timeout_ms, now = rem_now_ms(), next = 0;
    if (d->dead || d->c->state >= REM_CONN_CLOSING || !limit)
        return;
    struct rem_h2_down_stream *ds = TAILQ_FIRST(&d->streams), *nx;
    for (; ds; ds = nx) {
        nx = TAILQ_NEXT(ds, link); /* ds is not freed here: it is not closed yet */
        if (!waiting(d, ds))
            continue;
        if (now - ds->wait_ms < limit) {
            uint64_t left = limit - (now - ds->wait_ms);
            next = next && next < left ? next : left;
            continue;
        }
        rem_log_debug("conn %s: http2 stream %d: no window for %llu ms: RST_STREAM CANCEL",
                      d->c->peer, (int)ds->id, (unsigned long long)(now - ds->wait_ms));
        ds->stalled = true;
        if (!ds->finished)
            rem_stream_abort(ds->s, REM_E_CLIENT_TIMEOUT); /* h2_stream_done resets it */
        else
            nghttp2_submit_rst_stream(d->ng, NGHTTP2_FLAG_NONE, ds->id, NGHTTP2_CANCEL);
    }
    if (next) {
        struct timeval tv = {(time_t)(next / 1000), (suseconds_t)((next % 1000) * 1000)};
        event_add(d->stall_ev, &tv);
    }
    schedule_send(d);
}

static void resume_body(struct rem_h2_down *d, struct rem_stream *s)
{
    if (DS(s)->deferred && !DS(s)->closed) {
        DS(s)->deferred = false;
        nghttp2_session_resume_data(d->ng, DS(s)->id);
    }
    schedule_send(d);
}

static struct rem_h2_down *live(struct rem_stream *s)
{
    struct rem_h2_down *d = h2_of(s->conn);
    return d && !d->dead && !DS(s)->closed ? d : NULL;
}

/* Submits s->resp as a HEADERS frame: the final head (with x-request-id, then the body through
 * the data provider, or END_STREAM when there is none) or an interim 1xx. */
static int submit_head(struct rem_stream *s, bool final)
{
    struct rem_h2_down *d = live(s);
    if (!d)
        return 0;
    nghttp2_nv small[REM_H2_SMALL_NV];
    nghttp2_nv *nva =
        s->resp.n_hdrs + 4 <= REM_H2_SMALL_NV ? small : malloc(sizeof(*nva) * (s->resp.n_hdrs + 4));
    char status[4];
    if (!nva)
        return -REM_E_NOMEM;
    size_t n = rem_h2_response_nva(&s->resp, status, final ? s->rid : NULL, s->rid_len, nva);
    bool tunnel = final && DS(s)->tunnel;
    if (tunnel) {
        /* RFC 8441 5: the tunnel is accepted with a 2xx, and HTTP/2 has no 101 (RFC 9113
         * 8.6); an HTTP/1.1 app's handshake key answer means nothing here. */
        if (s->resp.status == 101)
            memcpy(status, "200", 4);
        size_t k = 0;
        for (size_t i = 0; i < n; i++)
            if (!rem_http_name_eq((const char *)nva[i].name, nva[i].namelen,
                                  "sec-websocket-accept"))
                nva[k++] = nva[i];
        n = k;
    }
    for (size_t i = 0; i < n; i++)
        rem_stream_count_out(s, nva[i].namelen + nva[i].valuelen);
    int rv;
    bool body = tunnel || (final && rem_http_response_has_body(s->head_request, s->resp.status) &&
                           !s->resp_headers_only);
    if (final) {
        nghttp2_data_provider prd = {.source.ptr = s, .read_callback = on_read_body};
        rv = nghttp2_submit_response(d->ng, DS(s)->id, nva, n, body ? &prd : NULL);
    } else {
        rv = nghttp2_submit_headers(d->ng, NGHTTP2_FLAG_NONE, DS(s)->id, NULL, nva, n, NULL);
    }
    if (nva != small)
        free(nva);
    if (rv < 0)
        return -REM_E_NOMEM;
    if (final) {
        DS(s)->submitted = true;
        DS(s)->eof = !body;
        start_wait(d, DS(s));
    }
    schedule_send(d);
    return 0;
}

static int h2_write_head(struct rem_stream *s)
{
    return submit_head(s, true);
}

static int h2_write_interim(struct rem_stream *s)
{
    return submit_head(s, false);
}

static int h2_write_body(struct rem_stream *s, const char *p, size_t n)
{
    struct rem_h2_down *d = live(s);
    if (!d || n == 0 || s->head_request)
        return 0;
    if (!DS(s)->out)
        DS(s)->out = evbuffer_new();
    if (DS(s)->out && evbuffer_get_length(DS(s)->out) == 0)
        start_wait(d, DS(s));
    if (!DS(s)->out || evbuffer_add(DS(s)->out, p, n) < 0)
        return -REM_E_NOMEM;
    resume_body(d, s);
    return 0;
}

static int h2_write_end(struct rem_stream *s)
{
    struct rem_h2_down *d = live(s);
    if (!d)
        return 0;
    if (!DS(s)->out || evbuffer_get_length(DS(s)->out) == 0)
        start_wait(d, DS(s)); /* the END_STREAM waits */
    DS(s)->eof = true;
    resume_body(d, s);
    return 0;
}

static int h2_write_error(struct rem_stream *s, enum rem_err e)
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
        snprintf(gs, sizeof(gs), "%d", rem_err_grpc_status(e));
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
            if (!DS(s)->out)
                DS(s)->out = evbuffer_new();
            if (!DS(s)->out || evbuffer_add(DS(s)->out, body, (size_t)blen) < 0)
                return -REM_E_NOMEM;
            with_body = true;
        }
        if (e == REM_E_QUEUE_FULL || e == REM_E_QUEUE_TIMEOUT)
            nva[n++] = REM_H2_NV("retry-after", "1", 1);
        if (status == 405)
            nva[n++] = REM_H2_NV("allow", REM_HTTP_ALLOW_BUT_CONNECT,
                                 sizeof(REM_HTTP_ALLOW_BUT_CONNECT) - 1);
    }
    nva[n++] = REM_H2_NV("x-remora-error", label, strlen(label));
    if (s->rid)
        nva[n++] = REM_H2_NV("x-request-id", s->rid, s->rid_len);
    DS(s)->eof = true;
    nghttp2_data_provider prd = {.source.ptr = s, .read_callback = on_read_body};
    if (nghttp2_submit_response(d->ng, DS(s)->id, nva, n, with_body ? &prd : NULL) != 0)
        return -REM_E_NOMEM;
    DS(s)->submitted = true;
    start_wait(d, DS(s));
    schedule_send(d);
    return 0;
}

static bool h2_full(struct rem_stream *s)
{
    return DS(s)->out && evbuffer_get_length(DS(s)->out) >= s->conn->cfg->limits.buffer_bytes;
}

static void h2_stream_done(struct rem_stream *s)
{
    struct rem_h2_down *d = h2_of(s->conn);
    DS(s)->finished = true;
    if (DS(s)->closed || !d || d->dead) {
        if (d)
            stream_release(d, s);
        return;
    }
    /* Whatever the client still sends for it is not wanted: keep the window open. */
    if (DS(s)->pending)
        evbuffer_drain(DS(s)->pending, evbuffer_get_length(DS(s)->pending));
    give_window(d, s, true);
    if (!DS(s)->submitted || !DS(s)->eof || DS(s)->stalled ||
        (DS(s)->tunnel && s->err != REM_E_OK)) {
        /* The response cannot be completed, the client stalled it, or a tunnel failed after
         * the app's FIN went: the stream is reset, never cut short silently. */
        uint32_t code = s->err == REM_E_CLIENT_ABORT || DS(s)->stalled ? NGHTTP2_CANCEL
                                                                       : NGHTTP2_INTERNAL_ERROR;
        nghttp2_submit_rst_stream(d->ng, NGHTTP2_FLAG_NONE, DS(s)->id, code);
    }
    schedule_send(d);
}

static int on_stream_close(nghttp2_session *ng, int32_t id, uint32_t code, void *arg)
{
    struct rem_h2_down *d = arg;
    struct rem_stream *s = d->dead ? NULL : stream_of(d, id);
    if (!s)
        return 0;
    DS(s)->closed = true;
    if (!DS(s)->finished) {
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
    if (f->hd.type == NGHTTP2_RST_STREAM)
        note_reset(d, f->hd.stream_id);
    if (f->hd.type == NGHTTP2_DATA && !d->dead) {
        struct rem_stream *s = stream_of(d, f->hd.stream_id);
        if (s)
            start_wait(d, DS(s)); /* progress: the stall guard starts over */
    }
    return 0;
}

static int on_invalid_frame(nghttp2_session *ng, const nghttp2_frame *f, int err, void *arg)
{
    struct rem_h2_down *d = arg;
    rem_log_debug("conn %s: http2 invalid frame type %u: %s", d->c->peer, f->hd.type,
                  nghttp2_strerror(err));
    /* A refused or malformed request: its RST_STREAM is only queued, and the client's next
     * frames for it (its trailers) may be in this very read. */
    if (f->hd.type == NGHTTP2_HEADERS && f->hd.stream_id > 0)
        note_reset(d, f->hd.stream_id);
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
    nghttp2_session_callbacks_set_on_begin_frame_callback(server_cbs, on_begin_frame);
    nghttp2_session_callbacks_set_on_begin_headers_callback(server_cbs, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(server_cbs, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(server_cbs, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(server_cbs, on_data_chunk);
    nghttp2_session_callbacks_set_on_stream_close_callback(server_cbs, on_stream_close);
    nghttp2_session_callbacks_set_on_frame_send_callback(server_cbs, on_frame_send);
    nghttp2_session_callbacks_set_on_invalid_frame_recv_callback(server_cbs, on_invalid_frame);
    nghttp2_session_callbacks_set_send_data_callback(server_cbs, on_send_data);
    nghttp2_option_set_no_auto_window_update(server_opt, 1);
    /* The 1.52 defaults for SETTINGS/PING acks (1000 queued), settings entries (32),
     * CONTINUATION frames (8, CVE-2024-28182) and HPACK stay; see DESIGN.md. */
}

static void *h2_init(struct rem_conn *c)
{
    pthread_once(&server_once, server_init);
    const struct rem_cfg_http2 *hc = &c->lcfg->http2;
    struct rem_h2_down *d = calloc(1, sizeof(*d));
    if (!d)
        return NULL;
    d->c = c;
    TAILQ_INIT(&d->streams);
    d->win_start_ms = rem_now_ms();
    d->stall_ev = evtimer_new(c->worker->loop.base, on_stall_check, d);
    if (!d->stall_ev || nghttp2_session_server_new2(&d->ng, server_cbs, d, server_opt) != 0) {
        if (d->stall_ev)
            event_free(d->stall_ev);
        free(d);
        return NULL;
    }
    uint32_t hlist = hc->max_header_list_bytes ? hc->max_header_list_bytes
                                               : (uint32_t)c->cfg->limits.max_header_bytes;
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, hc->max_concurrent_streams},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, hc->initial_window_bytes},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, hlist},
        {NGHTTP2_SETTINGS_ENABLE_CONNECT_PROTOCOL, 1}, /* RFC 8441 3 */
    };
    size_t n_iv = sizeof(iv) / sizeof(iv[0]) - (hc->enable_connect_protocol ? 0 : 1);
    if (nghttp2_submit_settings(d->ng, NGHTTP2_FLAG_NONE, iv, n_iv) != 0) {
        nghttp2_session_del(d->ng);
        event_free(d->stall_ev);
        free(d);
        return NULL;
    }
    /* The connection window covers every stream's window, so one stalled stream (holding its
     * window while its upstream is slow) never blocks the others. */
    uint64_t cw = (uint64_t)hc->max_concurrent_streams * hc->initial_window_bytes;
    if (cw > NGHTTP2_MAX_WINDOW_SIZE)
        cw = NGHTTP2_MAX_WINDOW_SIZE;
    if (cw > NGHTTP2_INITIAL_CONNECTION_WINDOW_SIZE)
        nghttp2_session_set_local_window_size(d->ng, NGHTTP2_FLAG_NONE, 0, (int32_t)cw);
    return d;
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
    int rc = rem_h2_pump(d->ng, rem_conn_output(c), rem_conn_high_watermark(c));
    d->depth--;
    if (rc < 0) {
        rem_log_debug("conn %s: http2 send: %s", c->peer,
                      rc == -REM_E_NOMEM ? "out of memory" : nghttp2_strerror(rc));
        rem_conn_close(c);
        return;
    }
    if (d->dead || c->state >= REM_CONN_CLOSED)
        return;
    rem_conn_flush_later(c);
    session_over(d);
}

static void h2_process(struct rem_conn *c)
{
    struct rem_h2_down *d = h2_of(c);
    struct evbuffer *in = rem_conn_input(c);
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
    rem_conn_rearm(c);
}

static void h2_on_drained(struct rem_conn *c)
{
    struct rem_h2_down *d = h2_of(c);
    if (!d->dead && d->depth == 0)
        send_now(d);
}

/* No stream for client_idle_timeout: GOAWAY(NO_ERROR) first, so the client learns nothing
 * was lost, then close. */
static void h2_on_timer(struct rem_conn *c)
{
    struct rem_h2_down *d = h2_of(c);
    nghttp2_session_terminate_session(d->ng, NGHTTP2_NO_ERROR);
    send_now(d);
    if (c->state < REM_CONN_CLOSING)
        rem_conn_close_after_write(c);
}

static void h2_abort_all(struct rem_conn *c)
{
    struct rem_h2_down *d = h2_of(c);
    if (!d || d->dead)
        return;
    d->dead = true;
    rem_loop_flush_cancel(&c->worker->loop, &d->send);
    struct rem_h2_down_stream *ds;
    while ((ds = TAILQ_FIRST(&d->streams)) != NULL) {
        struct rem_stream *s = ds->s;
        nghttp2_session_set_stream_user_data(d->ng, DS(s)->id, NULL);
        d->last_id = 0;
        DS(s)->closed = true;
        if (!DS(s)->finished)
            rem_stream_abort(s, c->abort_err); /* releases s */
        else
            stream_release(d, s);
    }
}

static void h2_free(struct rem_conn *c)
{
    struct rem_h2_down *d = h2_of(c);
    struct rem_h2_down_stream *ds;
    rem_loop_flush_cancel(&c->worker->loop, &d->send);
    if (d->drain_ev)
        event_free(d->drain_ev);
    event_free(d->stall_ev);
    nghttp2_session_del(d->ng);
    while ((ds = d->free_ds) != NULL) {
        d->free_ds = ds->next_free;
        ds_dispose(ds);
    }
    free(d);
}

static bool h2_on_eof(struct rem_conn *c)
{
    /* The client is done; GOAWAY or not, so are we, unless streams are in flight (then the
     * conn closes and they are aborted). */
    if (h2_of(c)->n_streams > 0)
        return false;
    rem_conn_close_after_write(c);
    return true;
}

#define REM_H2_DRAIN_NOTICE_MS 1000

/* The second step of the drain: GOAWAY with the last stream id processed; streams below it
 * finish, and the conn closes once none is left (session_over). */
static void on_final_goaway(evutil_socket_t fd, short what, void *arg)
{
    struct rem_h2_down *d = arg;
    if (d->dead || d->c->state >= REM_CONN_CLOSING)
        return;
    nghttp2_submit_goaway(d->ng, NGHTTP2_FLAG_NONE, nghttp2_session_get_last_proc_stream_id(d->ng),
                          NGHTTP2_NO_ERROR, NULL, 0);
    send_now(d);
}

/* Graceful shutdown in two steps (RFC 9113 6.8, as nghttpx does): a GOAWAY with
 * last-stream-id 2^31-1 at once, so the client stops opening streams without losing those in
 * flight, and the final GOAWAY about a second later. */
static int h2_drain(struct rem_conn *c)
{
    struct rem_h2_down *d = h2_of(c);
    if (d->dead || d->drain_ev)
        return 0;
    d->drain_ev = evtimer_new(c->worker->loop.base, on_final_goaway, d);
    if (!d->drain_ev || nghttp2_submit_shutdown_notice(d->ng) != 0) {
        on_final_goaway(-1, 0, d); /* no notice: straight to the final GOAWAY */
        return 0;
    }
    struct timeval tv = {REM_H2_DRAIN_NOTICE_MS / 1000, (REM_H2_DRAIN_NOTICE_MS % 1000) * 1000};
    event_add(d->drain_ev, &tv);
    schedule_send(d);
    return 0;
}

static void h2_cut(struct rem_stream *s)
{
    /* Nothing here: the stream is reset when it is done (h2_stream_done), not the conn. */
}

static void h2_req_pause(struct rem_stream *s)
{
    DS(s)->wait = true;
}

static bool h2_req_blocked(const struct rem_stream *s)
{
    return DS(s)->full;
}

static int h2_set_tunnel(struct rem_stream *s)
{
    /* The stream's DATA carries the tunnel both ways; END_STREAM is each side's FIN. */
    DS(s)->tunnel = true;
    return 0;
}

/* The same codec under two names: h2c on cleartext (prior knowledge) and h2 over TLS (ALPN),
 * so remora_downstream_streams_total tells them apart without a flag. */
// clang-format off
#define H2_DOWN_OPS                                                                                \
    .init = h2_init,                                                                               \
    .process = h2_process,                                                                         \
    .on_drained = h2_on_drained,                                                                   \
    .on_kick = h2_on_drained, /* a deferred send (schedule_send) */                                \
    .on_timer = h2_on_timer,                                                                       \
    .on_eof = h2_on_eof,                                                                           \
    .drain = h2_drain,                                                                             \
    .abort_all = h2_abort_all,                                                                     \
    .free = h2_free,                                                                               \
    .write_head = h2_write_head,                                                                   \
    .write_interim = h2_write_interim,                                                             \
    .write_body = h2_write_body,                                                                   \
    .write_end = h2_write_end,                                                                     \
    .write_error = h2_write_error,                                                                 \
    .full = h2_full,                                                                               \
    .cut = h2_cut,                                                                                 \
    .req_pause = h2_req_pause,                                                                     \
    .req_ready = h2_req_resume,                                                                    \
    .req_resume = h2_req_resume,                                                                   \
    .req_blocked = h2_req_blocked,                                                                 \
    .set_tunnel = h2_set_tunnel,                                                                   \
    .stream_done = h2_stream_done
// clang-format on

const struct rem_down_ops rem_h2_down_ops = {.name = "h2c", .proto = 1, H2_DOWN_OPS};

const struct rem_down_ops rem_h2_down_tls_ops = {.name = "h2", .proto = 2, H2_DOWN_OPS};
