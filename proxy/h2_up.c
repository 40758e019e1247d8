/* SPDX-License-Identifier: Apache-2.0
 * h2_up: HTTP/2 toward the app over nghttp2's client session. The same shape as h2_down,
 * mirrored: the request goes out through a deferred data provider fed by the stream, response
 * heads, bodies and trailers go to the stream, and window is given back only for the bytes the
 * downstream took. Streams the app never processed (REFUSED_STREAM, above a GOAWAY's
 * last-stream-id, never sent) are marked so the stream may retry them on a new upconn. */
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <nghttp2/nghttp2.h>

#include "cluster.h"
#include "config.h"
#include "conn.h"
#include "error.h"
#include "h2_proto.h"
#include "h2_up.h"
#include "http.h"
#include "log.h"
#include "metrics.h"
#include "stream.h"
#include "upool.h"
#include "worker.h"

/* Per-stream receive window toward the app; the connection window covers many of them. */
#define REM_H2_UP_CONN_WINDOW (16 * 1024 * 1024)

struct rem_h2_up {
    nghttp2_session *ng;   /* owned */
    struct rem_upconn *uc; /* borrowed: the owner */
    struct rem_stream_list streams;
    unsigned n_streams;
    int depth;
    bool goaway;       /* the app said GOAWAY, or we are closing: no new streams */
    bool ping_out;     /* a liveness PING awaits its ACK */
    bool got_settings; /* the app's SETTINGS arrived */
    uint64_t ping_sent_ms;
};

static struct rem_metrics_shard *shard(const struct rem_h2_up *u)
{
    return u->uc->worker->metrics;
}

unsigned rem_h2_up_n_streams(const struct rem_upconn *uc)
{
    return uc->h2 ? uc->h2->n_streams : 0;
}

bool rem_h2_up_has_room(const struct rem_upconn *uc)
{
    const struct rem_h2_up *u = uc->h2;
    if (!u || u->goaway || uc->state == REM_UPCONN_CLOSED || uc->ep->removed)
        return false;
    uint32_t max;
    if (u->got_settings)
        max = nghttp2_session_get_remote_settings(u->ng, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS);
    else /* what this endpoint said last time, else RFC 9113's recommended minimum */
        max = uc->ep->h2_max_streams ? uc->ep->h2_max_streams : 100;
    return u->n_streams < max;
}

void rem_h2_up_attach(struct rem_upconn *uc, struct rem_stream *s)
{
    struct rem_h2_up *u = uc->h2;
    TAILQ_INSERT_TAIL(&u->streams, s, u_link);
    u->n_streams++;
    s->upconn = uc;
    s->u_id = 0;
    s->u_eof = s->u_deferred = s->u_paused = s->u_in_resp_trailers = false;
    s->u_unconsumed = 0;
    s->u_last_ms = rem_now_ms();
    rem_upool_h2_streams_changed(uc, u->n_streams, u->goaway || uc->ep->removed);
}

static void detach(struct rem_h2_up *u, struct rem_stream *s)
{
    TAILQ_REMOVE(&u->streams, s, u_link);
    u->n_streams--;
    if (s->u_id > 0)
        nghttp2_session_set_stream_user_data(u->ng, s->u_id, NULL);
    s->upconn = NULL;
    if (s->u_out)
        evbuffer_drain(s->u_out, evbuffer_get_length(s->u_out));
    if (s->u_unconsumed) {
        nghttp2_session_consume_connection(u->ng, s->u_unconsumed);
        s->u_unconsumed = 0;
    }
    rem_upool_h2_streams_changed(u->uc, u->n_streams, u->goaway || u->uc->ep->removed);
}

static void send_now(struct rem_h2_up *u);

/* As in h2_down: never send inside the caller's stack; the upconn's kick event does. */
static void schedule_send(struct rem_h2_up *u)
{
    if (u->depth == 0) /* else the outermost recv/send sends on its way out */
        event_active(u->uc->kick, EV_TIMEOUT, 1);
}

/* ---- request side ------------------------------------------------------------------------ */

static ssize_t on_read_body(nghttp2_session *ng, int32_t id, uint8_t *buf, size_t length,
                            uint32_t *flags, nghttp2_data_source *src, void *arg)
{
    struct rem_h2_up *u = arg;
    struct rem_stream *s = src->ptr;
    if (s->upconn != u->uc)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* detached: reset it */
    size_t have = s->u_out ? evbuffer_get_length(s->u_out) : 0;
    size_t n = have < length ? have : length;
    if (n > 0) {
        evbuffer_remove(s->u_out, buf, n);
        size_t wm = s->conn->cfg->limits.buffer_bytes;
        if (have >= wm && have - n < wm)
            rem_stream_on_upconn_writable(s);
    }
    if (have - n > 0 || (n > 0 && !s->u_eof))
        return (ssize_t)n;
    if (!s->u_eof) {
        s->u_deferred = true;
        return NGHTTP2_ERR_DEFERRED;
    }
    *flags |= NGHTTP2_DATA_FLAG_EOF;
    size_t nv;
    nghttp2_nv *nva = rem_h2_trailer_nva(&s->req_trl, &nv);
    if (nv > 0 && nghttp2_submit_trailer(ng, id, nva, nv) == 0)
        *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
    free(nva);
    return (ssize_t)n;
}

int rem_h2_up_write_head(struct rem_upconn *uc, struct rem_stream *s)
{
    struct rem_h2_up *u = uc->h2;
    struct rem_h2_request r;
    int64_t cl = s->req_has_body && !s->req_chunked ? s->req.content_length : -1;
    int rc =
        rem_h2_request_build(&r, &s->req, s->conn->peer,
                             s->req.request_id_idx < 0 ? s->request_id : NULL, uc->ep->name, cl);
    if (rc < 0)
        return rc;
    nghttp2_data_provider prd = {.source.ptr = s, .read_callback = on_read_body};
    int32_t id = nghttp2_submit_request(u->ng, NULL, r.nva, r.n, s->req_has_body ? &prd : NULL, s);
    rem_h2_request_dispose(&r);
    if (id < 0)
        return -REM_E_NOMEM;
    s->u_id = id;
    s->u_last_ms = rem_now_ms();
    uc->n_requests++;
    if (uc->timeout_ms && !evtimer_pending(uc->timer, NULL))
        rem_upconn_arm_timer(uc, uc->timeout_ms);
    schedule_send(u);
    return 0;
}

static void resume_body(struct rem_h2_up *u, struct rem_stream *s)
{
    if (s->u_deferred && s->u_id > 0) {
        s->u_deferred = false;
        nghttp2_session_resume_data(u->ng, s->u_id);
    }
    schedule_send(u);
}

int rem_h2_up_write_body(struct rem_upconn *uc, struct rem_stream *s, const char *p, size_t n)
{
    if (n == 0)
        return 0;
    if (!s->u_out)
        s->u_out = evbuffer_new();
    if (!s->u_out || evbuffer_add(s->u_out, p, n) < 0)
        return -REM_E_NOMEM;
    resume_body(uc->h2, s);
    return 0;
}

int rem_h2_up_write_end(struct rem_upconn *uc, struct rem_stream *s)
{
    if (!s->req_has_body)
        return 0; /* END_STREAM went with the HEADERS */
    s->u_eof = true;
    resume_body(uc->h2, s);
    return 0;
}

void rem_h2_up_cancel(struct rem_upconn *uc, struct rem_stream *s)
{
    struct rem_h2_up *u = uc->h2;
    int32_t id = s->u_id;
    detach(u, s);
    if (id > 0 && uc->state != REM_UPCONN_CLOSED) {
        nghttp2_submit_rst_stream(u->ng, NGHTTP2_FLAG_NONE, id, NGHTTP2_CANCEL);
        schedule_send(u);
    }
}

void rem_h2_up_resume(struct rem_upconn *uc, struct rem_stream *s)
{
    struct rem_h2_up *u = uc->h2;
    s->u_paused = false;
    s->u_last_ms = rem_now_ms();
    if (s->u_unconsumed && s->u_id > 0) {
        nghttp2_session_consume(u->ng, s->u_id, s->u_unconsumed);
        s->u_unconsumed = 0;
        schedule_send(u);
    }
}

/* ---- response side ----------------------------------------------------------------------- */

static struct rem_stream *stream_of(struct rem_h2_up *u, int32_t id)
{
    struct rem_stream *s = nghttp2_session_get_stream_user_data(u->ng, id);
    return s && s->upconn == u->uc ? s : NULL;
}

static int on_header(nghttp2_session *ng, const nghttp2_frame *f, const uint8_t *name, size_t nlen,
                     const uint8_t *value, size_t vlen, uint8_t flags, void *arg)
{
    struct rem_h2_up *u = arg;
    struct rem_stream *s = stream_of(u, f->hd.stream_id);
    if (!s || f->hd.type != NGHTTP2_HEADERS)
        return 0;
    const char *n = (const char *)name, *v = (const char *)value;
    struct rem_head *h = s->u_in_resp_trailers ? &s->resp_trl : &s->resp;
    int rc = 0;
    if (nlen > 0 && n[0] == ':') {
        if (rem_http_name_eq(n, nlen, ":status") && vlen == 3) {
            h->status = (v[0] - '0') * 100 + (v[1] - '0') * 10 + (v[2] - '0');
        }
        return 0;
    }
    rc = rem_head_add_name(h, n, nlen);
    if (rc == 0)
        rc = rem_head_add_value(h, v, vlen);
    if (rc < 0)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* RST_STREAM: a 502 for the client */
    return 0;
}

/* The response ended: the stream leaves uc first (uc may serve others at once). */
static void resp_end(struct rem_h2_up *u, struct rem_stream *s)
{
    int32_t id = s->u_id;
    bool req_open = s->req_has_body && (!s->u_eof || (s->u_out && evbuffer_get_length(s->u_out)));
    detach(u, s);
    if (req_open) {
        /* Answered before the whole request went: stop sending it (RFC 9113 8.1). */
        nghttp2_submit_rst_stream(u->ng, NGHTTP2_FLAG_NONE, id, NGHTTP2_NO_ERROR);
        schedule_send(u);
    }
    rem_stream_on_resp_end(s);
}

static int on_frame_recv(nghttp2_session *ng, const nghttp2_frame *f, void *arg)
{
    struct rem_h2_up *u = arg;
    struct rem_stream *s = f->hd.stream_id ? stream_of(u, f->hd.stream_id) : NULL;
    bool end = (f->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
    switch (f->hd.type) {
    case NGHTTP2_HEADERS:
        if (!s)
            break;
        s->u_last_ms = rem_now_ms();
        if (!s->u_in_resp_trailers) {
            struct rem_head *r = &s->resp;
            if (r->status >= 100 && r->status < 200) {
                /* Interim: 103 goes on (RFC 9110 15.2), 100 is remora's own business. */
                if (r->status != 100 && r->status != 101 && rem_stream_on_resp_interim(s) < 0) {
                    rem_h2_up_cancel(u->uc, s);
                    rem_stream_fail(s, REM_E_NOMEM);
                    break;
                }
                rem_head_reset(r);
                break;
            }
            r->http_major = 2;
            r->http_minor = 0;
            int status = r->status;
            rem_head_classify(r);
            r->status = status;
            if (status < 200 || status > 999 || r->cl_conflict) {
                rem_h2_up_cancel(u->uc, s);
                rem_stream_on_upconn_error(s, REM_E_BAD_RESPONSE);
                break;
            }
            s->resp_started = true;
            s->u_in_resp_trailers = true;
            s->resp_headers_only = end;
            if (rem_stream_on_resp_head(s) < 0) {
                rem_h2_up_cancel(u->uc, s);
                rem_stream_fail(s, REM_E_NOMEM);
                break;
            }
            if (s->upconn != u->uc)
                break; /* the stream went away */
        }
        if (end)
            resp_end(u, s);
        break;
    case NGHTTP2_DATA:
        if (s && end)
            resp_end(u, s);
        break;
    case NGHTTP2_RST_STREAM:
        rem_h2_count_reset(shard(u), REM_H2_SIDE_UP, f->rst_stream.error_code);
        break;
    case NGHTTP2_PING:
        if (f->hd.flags & NGHTTP2_FLAG_ACK)
            u->ping_out = false;
        break;
    case NGHTTP2_SETTINGS:
        if (!(f->hd.flags & NGHTTP2_FLAG_ACK)) {
            u->got_settings = true;
            u->uc->ep->h2_max_streams =
                nghttp2_session_get_remote_settings(ng, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS);
        }
        break;
    case NGHTTP2_GOAWAY:
        REM_M_ADD(shard(u)->h2_goaway[REM_H2_SIDE_UP], 1);
        u->goaway = true; /* streams above last_stream_id close with REFUSED_STREAM */
        rem_log_debug("upconn %s: GOAWAY last_stream_id %d error %u", u->uc->ep->name,
                      f->goaway.last_stream_id, f->goaway.error_code);
        break;
    default:
        break;
    }
    return 0;
}

static int on_data_chunk(nghttp2_session *ng, uint8_t flags, int32_t id, const uint8_t *data,
                         size_t len, void *arg)
{
    struct rem_h2_up *u = arg;
    struct rem_stream *s = stream_of(u, id);
    if (!s || !s->u_in_resp_trailers) {
        nghttp2_session_consume(ng, id, len);
        return 0;
    }
    s->u_last_ms = rem_now_ms();
    bool full = rem_stream_on_resp_body(s, (const char *)data, len);
    if (s->upconn != u->uc) {
        nghttp2_session_consume_connection(ng, len); /* the stream failed meanwhile */
        return 0;
    }
    if (full) {
        s->u_unconsumed += len;
        s->u_paused = true;
    } else {
        nghttp2_session_consume(ng, id, len);
    }
    return 0;
}

static int on_stream_close(nghttp2_session *ng, int32_t id, uint32_t code, void *arg)
{
    struct rem_h2_up *u = arg;
    struct rem_stream *s = stream_of(u, id);
    if (!s)
        return 0;
    detach(u, s);
    /* Incomplete: REFUSED_STREAM (also what nghttp2 gives streams above a GOAWAY's
     * last-stream-id) means the app never processed it. */
    if (code == NGHTTP2_REFUSED_STREAM && !s->resp_started)
        s->up_unprocessed = true;
    else
        s->on_reused = false; /* the app processed (and reset) it: no keep-alive race to retry */
    rem_stream_on_upconn_error(s,
                               s->resp_head_sent ? REM_E_UPSTREAM_TRUNCATED : REM_E_UPSTREAM_RESET);
    return 0;
}

static int on_frame_send(nghttp2_session *ng, const nghttp2_frame *f, void *arg)
{
    struct rem_h2_up *u = arg;
    rem_h2_count_frame(shard(u), REM_H2_SIDE_UP, f);
    return 0;
}

/* ---- session ----------------------------------------------------------------------------- */

static nghttp2_session_callbacks *client_cbs;
static nghttp2_option *client_opt;
static pthread_once_t client_once = PTHREAD_ONCE_INIT;

static void client_init(void)
{
    if (nghttp2_session_callbacks_new(&client_cbs) != 0 || nghttp2_option_new(&client_opt) != 0)
        abort();
    nghttp2_session_callbacks_set_on_header_callback(client_cbs, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(client_cbs, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(client_cbs, on_data_chunk);
    nghttp2_session_callbacks_set_on_stream_close_callback(client_cbs, on_stream_close);
    nghttp2_session_callbacks_set_on_frame_send_callback(client_cbs, on_frame_send);
    nghttp2_option_set_no_auto_window_update(client_opt, 1);
    /* Until the app's SETTINGS arrive, assume RFC 9113's recommended minimum of 100. */
    nghttp2_option_set_peer_max_concurrent_streams(client_opt, 100);
}

int rem_h2_up_init(struct rem_upconn *uc)
{
    pthread_once(&client_once, client_init);
    struct rem_h2_up *u = calloc(1, sizeof(*u));
    if (!u)
        return -REM_E_NOMEM;
    u->uc = uc;
    TAILQ_INIT(&u->streams);
    if (nghttp2_session_client_new2(&u->ng, client_cbs, u, client_opt) != 0) {
        free(u);
        return -REM_E_NOMEM;
    }
    uint64_t win = uc->worker->cfg->limits.buffer_bytes;
    if (win < NGHTTP2_INITIAL_WINDOW_SIZE)
        win = NGHTTP2_INITIAL_WINDOW_SIZE;
    if (win > NGHTTP2_MAX_WINDOW_SIZE)
        win = NGHTTP2_MAX_WINDOW_SIZE;
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, (uint32_t)win},
    };
    if (nghttp2_submit_settings(u->ng, NGHTTP2_FLAG_NONE, iv, 2) != 0 ||
        nghttp2_session_set_local_window_size(u->ng, NGHTTP2_FLAG_NONE, 0, REM_H2_UP_CONN_WINDOW) !=
            0) {
        nghttp2_session_del(u->ng);
        free(u);
        return -REM_E_NOMEM;
    }
    uc->h2 = u;
    return 0;
}

void rem_h2_up_free(struct rem_upconn *uc)
{
    struct rem_h2_up *u = uc->h2;
    if (!u)
        return;
    nghttp2_session_del(u->ng);
    free(u);
    uc->h2 = NULL;
}

static void send_now(struct rem_h2_up *u)
{
    struct rem_upconn *uc = u->uc;
    if (uc->state == REM_UPCONN_CLOSED || uc->state == REM_UPCONN_CONNECTING)
        return; /* the preface and requests go once connected */
    u->depth++;
    int rc = rem_h2_pump(u->ng, uc->t.out, uc->t.write_high);
    u->depth--;
    if (rc < 0) {
        rem_h2_up_fail_all(uc, REM_E_UPSTREAM_RESET);
        return;
    }
    if (uc->state == REM_UPCONN_CLOSED)
        return;
    rem_transport_flush_later(&uc->t);
    if (!nghttp2_session_want_read(u->ng) && !nghttp2_session_want_write(u->ng))
        rem_h2_up_fail_all(uc, REM_E_UPSTREAM_RESET);
}

void rem_h2_up_connected(struct rem_upconn *uc)
{
    struct rem_h2_up *u = uc->h2;
    u->depth++;
    for (;;) {
        struct rem_stream *s, *ready = NULL;
        TAILQ_FOREACH(s, &u->streams, u_link)
        if (s->state == REM_STREAM_CONNECT) {
            ready = s;
            break;
        }
        if (!ready || uc->state == REM_UPCONN_CLOSED)
            break;
        ready->on_reused = false;
        rem_stream_on_upconn_ready(ready, uc);
    }
    u->depth--;
    send_now(u);
}

void rem_h2_up_process(struct rem_upconn *uc)
{
    struct rem_h2_up *u = uc->h2;
    struct evbuffer *in = uc->t.in;
    u->depth++;
    while (uc->state != REM_UPCONN_CLOSED && evbuffer_get_length(in) > 0) {
        size_t n = evbuffer_get_contiguous_space(in);
        const uint8_t *p = evbuffer_pullup(in, (ev_ssize_t)n);
        ssize_t rv = nghttp2_session_mem_recv(u->ng, p, n);
        if (uc->state == REM_UPCONN_CLOSED)
            break;
        if (rv < 0) {
            rem_log_debug("upconn %s: http2: %s", uc->ep->name, nghttp2_strerror((int)rv));
            u->depth--;
            rem_h2_up_fail_all(uc, REM_E_BAD_RESPONSE);
            return;
        }
        evbuffer_drain(in, (size_t)rv);
    }
    u->depth--;
    if (uc->state == REM_UPCONN_CLOSED)
        return;
    send_now(u);
    if (uc->state != REM_UPCONN_CLOSED)
        rem_transport_rearm(&uc->t);
}

void rem_h2_up_on_drained(struct rem_upconn *uc)
{
    if (uc->h2 && uc->h2->depth == 0)
        send_now(uc->h2);
}

void rem_h2_up_on_timer(struct rem_upconn *uc)
{
    struct rem_h2_up *u = uc->h2;
    uint64_t now = rem_now_ms(), next = 0;
    struct rem_stream *s, *expired;
    do {
        expired = NULL;
        TAILQ_FOREACH(s, &u->streams, u_link)
        {
            uint64_t t = s->route ? s->route->timeout_ms : 0;
            if (!t || s->state != REM_STREAM_ACTIVE)
                continue;
            if (s->u_paused)
                s->u_last_ms = now; /* the downstream is the slow side */
            if (now - s->u_last_ms >= t) {
                expired = s;
                break;
            }
            uint64_t left = t - (now - s->u_last_ms);
            if (!next || left < next)
                next = left;
        }
        if (expired) {
            rem_h2_up_cancel(uc, expired);
            rem_stream_on_upconn_error(expired, REM_E_UPSTREAM_TIMEOUT);
        }
    } while (expired && uc->state != REM_UPCONN_CLOSED);
    if (uc->state == REM_UPCONN_ACTIVE && next)
        rem_upconn_arm_timer(uc, next);
}

void rem_h2_up_detach_all(struct rem_upconn *uc)
{
    struct rem_h2_up *u = uc->h2;
    struct rem_stream *s;
    if (!u)
        return;
    u->goaway = true;
    while ((s = TAILQ_FIRST(&u->streams)) != NULL) {
        TAILQ_REMOVE(&u->streams, s, u_link);
        u->n_streams--;
        s->upconn = NULL;
    }
}

void rem_h2_up_fail_all(struct rem_upconn *uc, enum rem_err e)
{
    struct rem_h2_up *u = uc->h2;
    struct rem_stream_list gone = TAILQ_HEAD_INITIALIZER(gone);
    struct rem_stream *s;
    u->goaway = true;
    while ((s = TAILQ_FIRST(&u->streams)) != NULL) {
        TAILQ_REMOVE(&u->streams, s, u_link);
        u->n_streams--;
        TAILQ_INSERT_TAIL(&gone, s, u_link);
    }
    rem_upconn_close(uc);
    while ((s = TAILQ_FIRST(&gone)) != NULL) {
        TAILQ_REMOVE(&gone, s, u_link);
        s->upconn = NULL;
        if (s->u_id == 0 && e == REM_E_UPSTREAM_RESET)
            s->up_unprocessed = true; /* never sent */
        rem_stream_on_upconn_error(s, e);
    }
}

void rem_h2_up_idle_tick(struct rem_upconn *uc)
{
    struct rem_h2_up *u = uc->h2;
    uint64_t now = rem_now_ms(), limit = uc->ep->cluster->cfg->idle_timeout_ms;
    uint64_t idle = now - uc->last_activity_ms;
    if (u->ping_out && now - u->ping_sent_ms >= REM_H2_PING_TIMEOUT_MS) {
        rem_log_info("upconn %s: no PING ACK within %d ms, closing", uc->ep->name,
                     REM_H2_PING_TIMEOUT_MS);
        rem_upconn_close(uc);
        return;
    }
    if (limit && idle >= limit) {
        rem_upconn_close(uc);
        return;
    }
    if (!u->ping_out && nghttp2_submit_ping(u->ng, NGHTTP2_FLAG_NONE, NULL) == 0) {
        u->ping_out = true;
        u->ping_sent_ms = now;
        schedule_send(u);
    }
    uint64_t next = REM_H2_PING_TIMEOUT_MS;
    if (limit && limit - idle < next)
        next = limit - idle;
    rem_upconn_arm_timer(uc, next);
}
