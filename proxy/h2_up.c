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
#include "identity.h"
#include "error.h"
#include "h2_proto.h"
#include "h2_up.h"
#include "http.h"
#include "log.h"
#include "loop.h"
#include "metrics.h"
#include "stream.h"
#include "upconn.h"
#include "upool.h"
#include "worker.h"

/* Per-stream receive window toward the app; the connection window covers many of them. */
#define REM_H2_UP_CONN_WINDOW (16 * 1024 * 1024)
#define REM_H2_UP_FREELIST_MAX 32

/* Per-stream state (rem_stream.up_ctx while attached). It outlives the attachment while
 * nghttp2 still knows the stream (its data provider may be called until the stream closes):
 * then `s` is NULL, it sits in `zombies`, and on_stream_close (or the session's end) frees it. */
struct rem_h2_up_stream {
    struct rem_stream *s;               /* borrowed while attached; NULL once let go */
    TAILQ_ENTRY(rem_h2_up_stream) link; /* in streams (attached), zombies, or free */
    int32_t id;                         /* stream id on the session, 0 before submit */
    struct evbuffer *out;               /* owned: request body waiting for the data provider */
    size_t unconsumed;                  /* response body bytes not yet given back as window */
    bool eof;                           /* the request's end is queued in out */
    bool deferred;                      /* the data provider is deferred */
    bool paused;                        /* downstream full: window withheld */
    bool in_resp_trailers;              /* past the final response head */
    bool closed;                        /* nghttp2 closed the stream */
    bool tunnel;                        /* an open tunnel: DATA both ways, END_STREAM = FIN */
    bool flush_out;                     /* let go after a clean tunnel end: out still goes */
    uint64_t last_ms;                   /* last activity, for the response timeout */
};

TAILQ_HEAD(rem_h2_up_stream_list, rem_h2_up_stream);

struct rem_h2_up {
    nghttp2_session *ng;                  /* owned */
    struct rem_upconn *uc;                /* borrowed: the owner */
    struct rem_h2_up_stream_list streams; /* attached (owned state, borrowed streams) */
    struct rem_h2_up_stream_list zombies; /* let go, still known to nghttp2 (owned) */
    struct rem_h2_up_stream_list free;    /* owned freelist */
    unsigned n_streams, n_free;
    unsigned n_flushing; /* let-go tunnel streams still sending the client's last bytes and
                            END_STREAM: they keep the upconn busy (never retired under them) */
    int depth;
    struct rem_flush send; /* on the loop's flush list: a deferred send (schedule_send) */
    int32_t last_id;       /* stream_of's one-entry cache: last_id's state is last_us */
    struct rem_h2_up_stream *last_us;
    bool goaway;       /* the app said GOAWAY, or we are closing: no new streams */
    bool ping_out;     /* a liveness PING awaits its ACK */
    bool got_settings; /* the app's SETTINGS arrived */
    uint64_t ping_sent_ms;
};

static inline struct rem_h2_up_stream *US(const struct rem_stream *s)
{
    return s->up_ctx;
}

static struct rem_h2_up *h2_of(const struct rem_upconn *uc)
{
    return uc->codec;
}

static struct rem_metrics_shard *shard(const struct rem_h2_up *u)
{
    return u->uc->worker->metrics;
}

static uint64_t idle_ms(const struct rem_upconn *uc)
{
    uint64_t idle = uc->ep->cluster->cfg->idle_timeout_ms;
    return idle && idle < REM_H2_PING_TIMEOUT_MS ? idle : REM_H2_PING_TIMEOUT_MS;
}

static unsigned h2_n_streams(const struct rem_upconn *uc)
{
    return h2_of(uc)->n_streams + h2_of(uc)->n_flushing;
}

static bool h2_has_room(const struct rem_upconn *uc)
{
    const struct rem_h2_up *u = h2_of(uc);
    if (u->goaway || uc->state == REM_UPCONN_CLOSED || uc->ep->removed)
        return false;
    uint32_t max;
    if (u->got_settings)
        max = nghttp2_session_get_remote_settings(u->ng, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS);
    else /* what this endpoint said last time, else RFC 9113's recommended minimum */
        max = uc->ep->h2_max_streams ? uc->ep->h2_max_streams : 100;
    return u->n_streams + u->n_flushing < max;
}

static void us_dispose(struct rem_h2_up_stream *us)
{
    if (us->out)
        evbuffer_free(us->out);
    free(us);
}

/* us is done with: back to the freelist (keeping its buffer). */
static void us_release(struct rem_h2_up *u, struct rem_h2_up_stream *us)
{
    if (u->last_us == us)
        u->last_id = 0;
    if (u->n_free >= REM_H2_UP_FREELIST_MAX) {
        us_dispose(us);
        return;
    }
    if (us->out)
        evbuffer_drain(us->out, evbuffer_get_length(us->out));
    TAILQ_INSERT_HEAD(&u->free, us, link);
    u->n_free++;
}

static void h2_attach(struct rem_upconn *uc, struct rem_stream *s)
{
    struct rem_h2_up *u = h2_of(uc);
    struct rem_h2_up_stream *us = TAILQ_FIRST(&u->free);
    struct evbuffer *out = NULL;
    if (us) {
        TAILQ_REMOVE(&u->free, us, link);
        u->n_free--;
        out = us->out;
    } else {
        us = rem_xcalloc(1, sizeof(*us)); /* control object: aborts on OOM */
    }
    memset(us, 0, sizeof(*us));
    us->out = out;
    us->s = s;
    us->last_ms = rem_now_ms();
    rem_stream_set_up_ctx(s, us);
    TAILQ_INSERT_TAIL(&u->streams, us, link);
    u->n_streams++;
    rem_upool_streams_changed(uc, h2_n_streams(uc), u->goaway || uc->ep->removed, idle_ms(uc));
}

/* us's stream leaves uc: its state stays while nghttp2 may still ask for it. */
static void let_go(struct rem_h2_up *u, struct rem_h2_up_stream *us)
{
    TAILQ_REMOVE(&u->streams, us, link);
    u->n_streams--;
    /* The stream no longer has this upconn: nothing it does later reaches it (a cancel from
     * rem_stream_fail would find no per-stream state). */
    rem_stream_set_up_ctx(us->s, NULL);
    rem_stream_upconn_gone(us->s);
    us->s = NULL;
    if (us->out)
        evbuffer_drain(us->out, evbuffer_get_length(us->out));
    if (us->unconsumed) {
        nghttp2_session_consume_connection(u->ng, us->unconsumed);
        us->unconsumed = 0;
    }
    if (us->id > 0 && !us->closed)
        TAILQ_INSERT_TAIL(&u->zombies, us, link);
    else
        us_release(u, us);
}

static void detach(struct rem_h2_up *u, struct rem_h2_up_stream *us)
{
    let_go(u, us);
    rem_upool_streams_changed(u->uc, h2_n_streams(u->uc), u->goaway || u->uc->ep->removed,
                              idle_ms(u->uc));
}

static void send_now(struct rem_h2_up *u);

static void on_send_later(struct rem_flush *f)
{
    send_now((struct rem_h2_up *)((char *)f - offsetof(struct rem_h2_up, send)));
}

/* As in h2_down: never send inside the caller's stack; the loop's flush list does. */
static void schedule_send(struct rem_h2_up *u)
{
    if (u->depth == 0) /* else the outermost recv/send sends on its way out */
        rem_loop_flush_later(&u->uc->worker->loop, &u->send, on_send_later);
}

/* ---- request side ------------------------------------------------------------------------ */

/* The data provider: says how many bytes of out the next DATA frame carries; on_send_data
 * moves them (NGHTTP2_DATA_FLAG_NO_COPY), in the same mem_send. */
static ssize_t on_read_body(nghttp2_session *ng, int32_t id, uint8_t *buf, size_t length,
                            uint32_t *flags, nghttp2_data_source *src, void *arg)
{
    struct rem_h2_up_stream *us = src->ptr;
    struct rem_stream *s = us->s;
    if (!s && !us->flush_out)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* let go: reset it */
    size_t have = us->out ? evbuffer_get_length(us->out) : 0;
    size_t n = have < length ? have : length;
    if (n > 0)
        *flags |= NGHTTP2_DATA_FLAG_NO_COPY;
    if (!s) {
        /* A tunnel both sides ended: the client's last bytes, then END_STREAM. */
        if (have == n)
            *flags |= NGHTTP2_DATA_FLAG_EOF;
        return (ssize_t)n;
    }
    /* END_STREAM only with the last queued byte. While the request has not ended (eof), the
     * stream may append more to out once on_send_data took these bytes. */
    if (have - n > 0 || (n > 0 && !us->eof))
        return (ssize_t)n;
    if (!us->eof) {
        us->deferred = true;
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

/* Writes the DATA frame on_read_body sized, moved from out to the upconn's output; below the
 * buffer size, the stream may add more body. A full output pauses the session (as h2_down). */
static int on_send_data(nghttp2_session *ng, nghttp2_frame *f, const uint8_t *framehd,
                        size_t length, nghttp2_data_source *src, void *arg)
{
    struct rem_h2_up *u = arg;
    struct rem_h2_up_stream *us = src->ptr;
    struct rem_stream *s = us->s;
    struct evbuffer *out = rem_upconn_output(u->uc);
    size_t have = evbuffer_get_length(us->out);
    if (rem_h2_data_out(out, f, framehd, us->out, length) < 0)
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    if (s) {
        size_t wm = s->conn->cfg->limits.buffer_bytes;
        if (have >= wm && have - length < wm)
            rem_stream_on_upconn_writable(s);
    }
    return evbuffer_get_length(out) >= rem_transport_write_high(&u->uc->t) ? NGHTTP2_ERR_PAUSE : 0;
}

static int h2_write_head(struct rem_upconn *uc, struct rem_stream *s)
{
    struct rem_h2_up *u = h2_of(uc);
    struct rem_h2_up_stream *us = US(s);
    struct rem_h2_request r;
    int64_t cl = s->req_has_body && !s->req_chunked ? s->req.content_length : -1;
    /* A tunnel offer (an HTTP/1.1 Upgrade, or an h2 client's extended CONNECT) goes as an
     * extended CONNECT (RFC 8441), its stream open for the tunnel's bytes. */
    bool tunnel = s->tunnel_req == REM_TUNNEL_UPGRADE;
    int rc =
        rem_h2_request_build(&r, &s->req, s->conn->peer, s->conn->tls ? "https" : "http",
                             s->req.request_id_idx < 0 ? s->request_id : NULL, uc->ep->authority,
                             cl, tunnel ? s->upgrade : NULL, tunnel ? s->upgrade_len : 0,
                             rem_conn_identity(s->conn) ? rem_conn_identity(s->conn)->xfcc : NULL);
    if (rc < 0)
        return rc;
    nghttp2_data_provider prd = {.source.ptr = us, .read_callback = on_read_body};
    int32_t id = nghttp2_submit_request(u->ng, NULL, r.nva, r.n,
                                        s->req_has_body || tunnel ? &prd : NULL, us);
    rem_h2_request_dispose(&r);
    if (id < 0)
        return -REM_E_NOMEM;
    us->id = id;
    us->last_ms = rem_now_ms();
    if (uc->timeout_ms && !evtimer_pending(uc->timer, NULL))
        rem_upconn_arm_timer(uc, uc->timeout_ms);
    schedule_send(u);
    return 0;
}

static void resume_body(struct rem_h2_up *u, struct rem_h2_up_stream *us)
{
    if (us->deferred && us->id > 0) {
        us->deferred = false;
        nghttp2_session_resume_data(u->ng, us->id);
    }
    schedule_send(u);
}

static int h2_write_body(struct rem_upconn *uc, struct rem_stream *s, const char *p, size_t n)
{
    struct rem_h2_up_stream *us = US(s);
    if (n == 0)
        return 0;
    if (!us->out)
        us->out = evbuffer_new();
    if (!us->out || evbuffer_add(us->out, p, n) < 0)
        return -REM_E_NOMEM;
    if (us->tunnel)
        us->last_ms = rem_now_ms(); /* either direction keeps a tunnel alive */
    resume_body(h2_of(uc), us);
    return 0;
}

static int h2_write_end(struct rem_upconn *uc, struct rem_stream *s)
{
    if (!s->req_has_body && !US(s)->tunnel)
        return 0; /* END_STREAM went with the HEADERS (or a tunnel offer waits for its 2xx) */
    US(s)->eof = true;
    resume_body(h2_of(uc), US(s));
    return 0;
}

static bool h2_full(struct rem_upconn *uc, struct rem_stream *s)
{
    struct rem_h2_up_stream *us = US(s);
    size_t n = us && us->out ? evbuffer_get_length(us->out) : 0;
    return n >= s->conn->cfg->limits.buffer_bytes;
}

static void h2_cancel(struct rem_upconn *uc, struct rem_stream *s)
{
    struct rem_h2_up *u = h2_of(uc);
    if (!US(s))
        return; /* already let go */
    struct rem_h2_up_stream *us = US(s);
    int32_t id = us->id;
    if (us->tunnel && s->req_done && s->resp_done && s->err == REM_E_OK && !us->closed &&
        uc->state != REM_UPCONN_CLOSED) {
        /* Both sides ended the tunnel: what the client sent last still goes, then
         * END_STREAM (us->out survives the let-go). */
        struct evbuffer *keep = us->out;
        us->out = NULL;
        u->n_flushing++; /* counted before the let-go: a draining pool must not retire uc */
        us->flush_out = true;
        detach(u, us);
        us->out = keep;
        resume_body(u, us);
        return;
    }
    detach(u, us);
    if (id > 0 && uc->state != REM_UPCONN_CLOSED) {
        nghttp2_submit_rst_stream(u->ng, NGHTTP2_FLAG_NONE, id, NGHTTP2_CANCEL);
        schedule_send(u);
    }
}

static void h2_resume(struct rem_upconn *uc, struct rem_stream *s)
{
    struct rem_h2_up *u = h2_of(uc);
    struct rem_h2_up_stream *us = US(s);
    us->paused = false;
    us->last_ms = rem_now_ms();
    if (us->unconsumed && us->id > 0) {
        nghttp2_session_consume(u->ng, us->id, us->unconsumed);
        us->unconsumed = 0;
        schedule_send(u);
    }
}

static bool h2_goaway(struct rem_upconn *uc)
{
    struct rem_h2_up *u = h2_of(uc);
    if (uc->state == REM_UPCONN_CLOSED || uc->state == REM_UPCONN_CONNECTING)
        return true;
    u->goaway = true; /* no new stream: has_room is false from now on */
    if (nghttp2_session_terminate_session(u->ng, NGHTTP2_NO_ERROR) != 0)
        return true;
    if (u->depth)
        return false; /* the outermost send writes it, then finds the session over and closes */
    if (rem_h2_pump(u->ng, rem_upconn_output(uc), rem_transport_write_high(&uc->t)) == 0)
        rem_upconn_flush_now(uc);
    return true;
}

static int h2_set_tunnel(struct rem_upconn *uc, struct rem_stream *s)
{
    US(s)->tunnel = true; /* the stream's DATA carries the tunnel; END_STREAM is the FIN */
    return 0;
}

/* ---- response side ----------------------------------------------------------------------- */

/* The attached stream state of id, or NULL (unknown, or let go). One entry saves most of
 * nghttp2's hash lookups (a response's header fields and frames come together); us_release
 * drops it. */
static struct rem_h2_up_stream *stream_of(struct rem_h2_up *u, int32_t id)
{
    if (id != u->last_id || id == 0) {
        u->last_us = nghttp2_session_get_stream_user_data(u->ng, id);
        u->last_id = id;
    }
    struct rem_h2_up_stream *us = u->last_us;
    return us && us->s ? us : NULL;
}

static int on_header(nghttp2_session *ng, const nghttp2_frame *f, const uint8_t *name, size_t nlen,
                     const uint8_t *value, size_t vlen, uint8_t flags, void *arg)
{
    struct rem_h2_up *u = arg;
    struct rem_h2_up_stream *us = stream_of(u, f->hd.stream_id);
    if (!us || f->hd.type != NGHTTP2_HEADERS)
        return 0;
    struct rem_stream *s = us->s;
    const char *n = (const char *)name, *v = (const char *)value;
    struct rem_head *h = us->in_resp_trailers ? &s->resp_trl : &s->resp;
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

/* The response ended: the stream leaves uc first (uc may serve others at once). A tunnel's
 * app ended its side only: the client's may still flow on the stream. */
static void resp_end(struct rem_h2_up *u, struct rem_h2_up_stream *us)
{
    struct rem_stream *s = us->s;
    if (us->tunnel) {
        rem_stream_on_resp_end(s);
        return;
    }
    int32_t id = us->id;
    /* A tunnel offer the app refused still has its request side open (no END_STREAM). */
    bool req_open = (s->req_has_body || s->tunnel_req) &&
                    (!us->eof || (us->out && evbuffer_get_length(us->out)));
    detach(u, us);
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
    struct rem_h2_up_stream *us = f->hd.stream_id ? stream_of(u, f->hd.stream_id) : NULL;
    struct rem_stream *s = us ? us->s : NULL;
    bool end = (f->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
    switch (f->hd.type) {
    case NGHTTP2_HEADERS:
        if (!s)
            break;
        us->last_ms = rem_now_ms();
        if (!us->in_resp_trailers) {
            struct rem_head *r = &s->resp;
            if (r->status >= 100 && r->status < 200) {
                /* Interim: 103 goes on (RFC 9110 15.2), 100 is remora's own business. */
                int rc = r->status != 101 ? rem_stream_on_resp_interim(s) : 0;
                if (rc < 0) {
                    h2_cancel(u->uc, s);
                    rem_stream_fail(s, rem_err_from_rc(rc));
                    break;
                }
                rem_head_reset(r);
                break;
            }
            rem_head_set_version(r, 2, 0);
            int status = r->status;
            rem_head_classify(r);
            r->status = status;
            if (status < 200 || status > 999 || r->cl_conflict) {
                h2_cancel(u->uc, s);
                rem_stream_on_upconn_error(s, REM_E_BAD_RESPONSE, REM_RETRY_MAYBE);
                break;
            }
            rem_stream_mark_resp_started(s);
            us->in_resp_trailers = true;
            if (s->tunnel_req == REM_TUNNEL_UPGRADE && status >= 200 && status < 300 && !end) {
                /* RFC 8441 5: a 2xx accepts the extended CONNECT; DATA is the tunnel now. */
                if (rem_stream_on_upgrade(s) < 0 && us->s == s)
                    h2_cancel(u->uc, s);
                break;
            }
            rem_stream_set_resp_headers_only(s, end);
            if (rem_stream_on_resp_head(s) < 0) {
                if (us->s == s)
                    h2_cancel(u->uc, s);
                rem_stream_fail(s, REM_E_NOMEM);
                break;
            }
            if (us->s != s)
                break; /* the stream went away (us is kept while nghttp2 knows the id) */
        }
        if (end)
            resp_end(u, us);
        break;
    case NGHTTP2_DATA:
        if (s && end)
            resp_end(u, us);
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
            rem_endpoint_set_h2_max_streams(
                u->uc->ep,
                nghttp2_session_get_remote_settings(ng, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS));
        }
        break;
    case NGHTTP2_GOAWAY:
        rem_h2_count_goaway(shard(u), REM_H2_SIDE_UP, f->goaway.error_code);
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
    struct rem_h2_up_stream *us = stream_of(u, id);
    if (!us || !us->in_resp_trailers) {
        nghttp2_session_consume(ng, id, len);
        return 0;
    }
    struct rem_stream *s = us->s;
    us->last_ms = rem_now_ms();
    bool full = rem_stream_on_resp_body(s, (const char *)data, len);
    if (us->s != s) {
        nghttp2_session_consume_connection(ng, len); /* the stream failed meanwhile */
        return 0;
    }
    if (full) {
        us->unconsumed += len;
        us->paused = true;
    } else {
        nghttp2_session_consume(ng, id, len);
    }
    return 0;
}

static int on_stream_close(nghttp2_session *ng, int32_t id, uint32_t code, void *arg)
{
    struct rem_h2_up *u = arg;
    struct rem_h2_up_stream *us = nghttp2_session_get_stream_user_data(ng, id);
    if (!us)
        return 0;
    us->closed = true;
    if (!us->s) {
        bool flushed = us->flush_out;
        TAILQ_REMOVE(&u->zombies, us, link); /* let go earlier: nghttp2 is done with it too */
        us_release(u, us);
        if (flushed) {
            /* A tunnel's last bytes and END_STREAM are out: uc may idle or retire now. */
            u->n_flushing--;
            rem_upool_streams_changed(u->uc, h2_n_streams(u->uc), u->goaway || u->uc->ep->removed,
                                      idle_ms(u->uc));
        }
        return 0;
    }
    struct rem_stream *s = us->s;
    detach(u, us);
    /* Incomplete: REFUSED_STREAM (also what nghttp2 gives streams above a GOAWAY's
     * last-stream-id) means the app never processed it; anything else it did process (and
     * reset), so there is no keep-alive race to retry. */
    enum rem_retry_hint hint =
        code == NGHTTP2_REFUSED_STREAM && !s->resp_started ? REM_RETRY_SAFE : REM_RETRY_NEVER;
    rem_stream_on_upconn_error(
        s, s->resp_head_sent ? REM_E_UPSTREAM_TRUNCATED : REM_E_UPSTREAM_RESET, hint);
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
    nghttp2_session_callbacks_set_send_data_callback(client_cbs, on_send_data);
    nghttp2_option_set_no_auto_window_update(client_opt, 1);
    /* Until the app's SETTINGS arrive, assume RFC 9113's recommended minimum of 100. */
    nghttp2_option_set_peer_max_concurrent_streams(client_opt, 100);
}

static void *h2_init(struct rem_upconn *uc)
{
    pthread_once(&client_once, client_init);
    struct rem_h2_up *u = calloc(1, sizeof(*u));
    if (!u)
        return NULL;
    u->uc = uc;
    TAILQ_INIT(&u->streams);
    TAILQ_INIT(&u->zombies);
    TAILQ_INIT(&u->free);
    if (nghttp2_session_client_new2(&u->ng, client_cbs, u, client_opt) != 0) {
        free(u);
        return NULL;
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
        return NULL;
    }
    return u;
}

static void h2_free(struct rem_upconn *uc)
{
    struct rem_h2_up *u = h2_of(uc);
    struct rem_h2_up_stream *us;
    rem_loop_flush_cancel(&uc->worker->loop, &u->send);
    nghttp2_session_del(u->ng);
    REM_BUG_ON(!TAILQ_EMPTY(&u->streams));
    while ((us = TAILQ_FIRST(&u->zombies)) != NULL) {
        TAILQ_REMOVE(&u->zombies, us, link);
        us_dispose(us);
    }
    while ((us = TAILQ_FIRST(&u->free)) != NULL) {
        TAILQ_REMOVE(&u->free, us, link);
        us_dispose(us);
    }
    free(u);
}

static void h2_fail_all(struct rem_upconn *uc, enum rem_err e);

static void send_now(struct rem_h2_up *u)
{
    struct rem_upconn *uc = u->uc;
    if (uc->state == REM_UPCONN_CLOSED || uc->state == REM_UPCONN_CONNECTING)
        return; /* the preface and requests go once connected */
    u->depth++;
    int rc = rem_h2_pump(u->ng, rem_upconn_output(uc), rem_transport_write_high(&uc->t));
    u->depth--;
    if (rc < 0) {
        h2_fail_all(uc, REM_E_UPSTREAM_RESET);
        return;
    }
    if (uc->state == REM_UPCONN_CLOSED)
        return;
    rem_upconn_flush_later(uc);
    if (!nghttp2_session_want_read(u->ng) && !nghttp2_session_want_write(u->ng)) {
        /* The session is over (our GOAWAY went into the output): its last frames (a tunnel's
         * END_STREAM, the GOAWAY) are written before the close, not dropped with it. */
        rem_upconn_flush_now(uc);
        h2_fail_all(uc, REM_E_UPSTREAM_RESET);
    }
}

/* The connect completed: SETTINGS go out and every waiting stream is made ready. */
static void h2_ready(struct rem_upconn *uc)
{
    struct rem_h2_up *u = h2_of(uc);
    bool any = u->n_streams > 0;
    rem_upconn_set_state(uc, any ? REM_UPCONN_ACTIVE : REM_UPCONN_IDLE);
    if (!any) {
        rem_upconn_touch(uc);
        rem_upconn_arm_timer(uc, REM_H2_PING_TIMEOUT_MS);
    }
    u->depth++;
    for (;;) {
        struct rem_h2_up_stream *us, *ready = NULL;
        TAILQ_FOREACH(us, &u->streams, link)
        if (us->s->state == REM_STREAM_CONNECT) {
            ready = us;
            break;
        }
        if (!ready || uc->state == REM_UPCONN_CLOSED)
            break;
        rem_stream_on_upconn_ready(ready->s, uc);
    }
    u->depth--;
    send_now(u);
}

static void h2_process(struct rem_upconn *uc)
{
    struct rem_h2_up *u = h2_of(uc);
    struct evbuffer *in = rem_upconn_input(uc);
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
            h2_fail_all(uc, REM_E_BAD_RESPONSE);
            return;
        }
        evbuffer_drain(in, (size_t)rv);
    }
    u->depth--;
    if (uc->state == REM_UPCONN_CLOSED)
        return;
    send_now(u);
    rem_upconn_rearm(uc);
}

static void h2_on_drained(struct rem_upconn *uc)
{
    struct rem_h2_up *u = h2_of(uc);
    if (u->depth == 0)
        send_now(u);
}

/* Response timeouts of the streams (the upconn's timer while ACTIVE). */
static void response_timeouts(struct rem_upconn *uc)
{
    struct rem_h2_up *u = h2_of(uc);
    uint64_t now = rem_now_ms(), next = 0;
    struct rem_h2_up_stream *us, *expired;
    do {
        expired = NULL;
        TAILQ_FOREACH(us, &u->streams, link)
        {
            struct rem_stream *s = us->s;
            uint64_t t = !s->route   ? 0
                         : s->tunnel ? s->route->tunnel_idle_timeout_ms
                                     : s->route->timeout_ms;
            if (!t || s->state != REM_STREAM_ACTIVE)
                continue;
            if (us->paused)
                us->last_ms = now; /* the downstream is the slow side */
            if (now - us->last_ms >= t) {
                expired = us;
                break;
            }
            uint64_t left = t - (now - us->last_ms);
            if (!next || left < next)
                next = left;
        }
        if (expired) {
            struct rem_stream *s = expired->s;
            bool tunnel = expired->tunnel;
            h2_cancel(uc, s);
            rem_stream_on_upconn_error(
                s, tunnel ? REM_E_TUNNEL_IDLE_TIMEOUT : REM_E_UPSTREAM_TIMEOUT, REM_RETRY_MAYBE);
        }
    } while (expired && uc->state != REM_UPCONN_CLOSED);
    if (uc->state == REM_UPCONN_ACTIVE && next)
        rem_upconn_arm_timer(uc, next);
}

/* Liveness on idle upconns: a PING every REM_H2_PING_TIMEOUT_MS; an upconn whose PING is not
 * acknowledged within that time, or that stayed idle for idle_timeout, is closed. */
static void idle_tick(struct rem_upconn *uc)
{
    struct rem_h2_up *u = h2_of(uc);
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

static void h2_on_timer(struct rem_upconn *uc)
{
    if (uc->state == REM_UPCONN_IDLE)
        idle_tick(uc);
    else
        response_timeouts(uc);
}

static void h2_on_close(struct rem_upconn *uc, int what)
{
    h2_process(uc); /* a GOAWAY may precede the close */
    if (uc->state != REM_UPCONN_CLOSED)
        h2_fail_all(uc, REM_E_UPSTREAM_RESET);
}

static void h2_detach_all(struct rem_upconn *uc)
{
    struct rem_h2_up *u = h2_of(uc);
    struct rem_h2_up_stream *us, *next;
    u->goaway = true;
    /* The next pointer is taken first (let_go touches only us): clang-tidy does not follow
     * TAILQ_REMOVE's write of the head through tqe_prev, and would see us as still first. */
    for (us = TAILQ_FIRST(&u->streams); us; us = next) {
        next = TAILQ_NEXT(us, link);
        struct rem_stream *s = us->s;
        let_go(u, us);
        rem_stream_upconn_gone(s);
    }
}

/* Closes uc and tells every attached stream e (those never sent may be retried). */
static void h2_fail_all(struct rem_upconn *uc, enum rem_err e)
{
    struct rem_h2_up *u = h2_of(uc);
    struct rem_h2_up_stream_list gone = TAILQ_HEAD_INITIALIZER(gone);
    struct rem_h2_up_stream *us;
    u->goaway = true;
    /* Close first, then tell the streams: a stream told while uc is open could retry on it. */
    while ((us = TAILQ_FIRST(&u->streams)) != NULL) {
        TAILQ_REMOVE(&u->streams, us, link);
        TAILQ_INSERT_TAIL(&gone, us, link);
    }
    rem_upconn_close(uc);
    while ((us = TAILQ_FIRST(&gone)) != NULL) {
        struct rem_stream *s = us->s;
        bool unsent = us->id == 0;
        TAILQ_REMOVE(&gone, us, link);
        TAILQ_INSERT_HEAD(&u->streams, us, link);
        let_go(u, us);
        rem_stream_on_upconn_error(
            s, e, unsent && e == REM_E_UPSTREAM_RESET ? REM_RETRY_SAFE : REM_RETRY_MAYBE);
    }
}

const struct rem_up_ops rem_h2_up_ops = {
    .name = "h2c",
    .multiplexed = true,
    .init = h2_init,
    .free = h2_free,
    .ready = h2_ready,
    .process = h2_process,
    .on_drained = h2_on_drained,
    .on_kick = h2_on_drained, /* a deferred send (schedule_send) */
    .on_timer = h2_on_timer,
    .on_close = h2_on_close,
    .fail_all = h2_fail_all,
    .goaway = h2_goaway,
    .detach_all = h2_detach_all,
    .has_room = h2_has_room,
    .n_streams = h2_n_streams,
    .attach = h2_attach,
    .cancel = h2_cancel,
    .write_head = h2_write_head,
    .write_body = h2_write_body,
    .write_end = h2_write_end,
    .full = h2_full,
    .resume = h2_resume,
    .set_tunnel = h2_set_tunnel,
};
