/* SPDX-License-Identifier: Apache-2.0
 * h1_up: HTTP/1.1 toward the upstream. Request heads are serialized by http.c; bodies are
 * framed here (chunked re-encoding when the client sent chunked). Responses are parsed with
 * llhttp, paused (HPE_PAUSED) when the downstream output is full, and handed to the stream. */
#include <inttypes.h>
#include <llhttp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "cluster.h"
#include "config.h"
#include "conn.h"
#include "identity.h"
#include "error.h"
#include "h1_up.h"
#include "http.h"
#include "log.h"
#include "loop.h"
#include "stream.h"
#include "upconn.h"
#include "upool.h"
#include "worker.h"

/* How long a finished tunnel's last client bytes may take to reach an app when the route has
 * no tunnel_idle_timeout. */
#define REM_TUNNEL_FLUSH_MS 30000

/* Per-upconn state (rem_upconn.codec). */
struct rem_h1_up {
    struct rem_upconn *uc;     /* borrowed: the owner */
    struct rem_stream *stream; /* borrowed: the attached stream */
    llhttp_t parser;
    bool paused;           /* downstream full: response parsing paused */
    bool resp_complete;    /* parser: the response ended */
    bool resp_interim;     /* parser: the current head is 1xx */
    bool in_trailers;      /* parser: past the final head (chunked trailers follow) */
    bool exec_pending;     /* parser paused at the end of the input: run it once more */
    bool switching;        /* parser: a 101 to the stream's Upgrade; the tunnel opens after */
    bool tunnel;           /* an open tunnel: input is opaque bytes, never parsed again */
    bool eof_pending;      /* the app closed while its bytes still wait (downstream full):
                              acted on once they are parsed (or, in a tunnel, passed on) */
    bool closing;          /* tunnel over: closes once the last client bytes are written */
    enum rem_err resp_err; /* parser: why a callback failed */
    struct rem_chunk_line chunk_line; /* the response body's chunk-size line being parsed */
};

static llhttp_settings_t up_settings;
static pthread_once_t up_settings_once = PTHREAD_ONCE_INIT;

#define H1(p) ((struct rem_h1_up *)(p)->data)

static struct rem_h1_up *h1_of(const struct rem_upconn *uc)
{
    return uc->codec;
}

static int map_rc(struct rem_h1_up *h, int rc)
{
    if (rc == 0)
        return 0;
    h->resp_err = rem_err_from_rc(rc) == REM_E_NOMEM ? REM_E_NOMEM : REM_E_BAD_RESPONSE;
    return -1;
}

static int on_message_begin(llhttp_t *p)
{
    struct rem_h1_up *h = H1(p);
    struct rem_stream *s = h->stream;
    rem_head_reset(&s->resp);
    rem_head_reset(&s->resp_trl);
    h->in_trailers = false;
    h->resp_complete = false;
    h->resp_interim = false;
    rem_chunk_line_end(&h->chunk_line);
    return 0;
}

static int on_status(llhttp_t *p, const char *at, size_t n)
{
    struct rem_h1_up *h = H1(p);
    return map_rc(h, rem_head_add_span(&h->stream->resp, REM_SPAN_REASON, at, n));
}

static int on_header_field(llhttp_t *p, const char *at, size_t n)
{
    struct rem_h1_up *h = H1(p);
    struct rem_stream *s = h->stream;
    return map_rc(h, rem_head_add_name(h->in_trailers ? &s->resp_trl : &s->resp, at, n));
}

static int on_header_value(llhttp_t *p, const char *at, size_t n)
{
    struct rem_h1_up *h = H1(p);
    struct rem_stream *s = h->stream;
    return map_rc(h, rem_head_add_value(h->in_trailers ? &s->resp_trl : &s->resp, at, n));
}

static int on_headers_complete(llhttp_t *p)
{
    struct rem_h1_up *h = H1(p);
    struct rem_stream *s = h->stream;
    if (!rem_head_names_ok(&s->resp)) {
        h->resp_err = REM_E_BAD_RESPONSE; /* never passed on as ": v" */
        return -1;
    }
    s->resp.status = p->status_code;
    rem_head_set_version(&s->resp, p->http_major, p->http_minor);
    rem_head_classify(&s->resp);
    if (p->status_code == 101) {
        /* Only an Upgrade remora forwarded may be accepted (RFC 9110 15.2.2); the switch
         * happens once llhttp has returned (parse). */
        const char *up;
        size_t up_len;
        if (s->tunnel_req != REM_TUNNEL_UPGRADE ||
            !rem_head_value(&s->resp, "upgrade", &up, &up_len) ||
            !rem_http_upgrade_names(up, up_len, s->upgrade, s->upgrade_len)) {
            h->resp_err = REM_E_BAD_RESPONSE; /* a switch to what remora did not offer */
            return -1;
        }
        h->switching = true;
        return HPE_PAUSED;
    }
    if (p->status_code < 100) {
        /* RFC 9110 15: no status class below 1xx; llhttp takes any three digits. */
        h->resp_err = REM_E_BAD_RESPONSE;
        return -1;
    }
    if (p->status_code < 200) {
        /* RFC 9110 15.2: 1xx the client did not cause go on (103 Early Hints), except to
         * HTTP/1.0 clients; 100 is remora's own business (it answers Expect itself). */
        h->resp_interim = true;
        int rc = rem_stream_on_resp_interim(s);
        if (rc < 0) {
            h->resp_err = rem_err_from_rc(rc);
            return -1;
        }
        return 0;
    }
    if (s->resp.cl_conflict || s->resp.te_unsupported) {
        h->resp_err = REM_E_BAD_RESPONSE;
        return -1;
    }
    h->in_trailers = true;
    int rc = rem_stream_on_resp_head(s);
    if (rc < 0 || h->stream != s) {
        h->resp_err = rem_err_from_rc(rc);
        return -1;
    }
    /* 1: no body follows (the answer to HEAD, a 204, a 304: RFC 9110 6.4.1), whatever its
     * framing fields say: llhttp would read a 304's Content-Length as a body, which would then
     * reach the client after a head that has none. */
    if (!rem_http_response_has_body(s->head_request, p->status_code))
        return 1;
    if (!(p->flags & F_CHUNKED)) /* llhttp's own view: its chunk callbacks follow */
        return 0;
    /* Paused where the first chunk-size line begins, so that parse() counts it from here. */
    rem_chunk_line_begin(&h->chunk_line);
    return HPE_PAUSED;
}

/* A chunk-size line ends, or (after a chunk) the next begins: paused there, so that parse()
 * counts each line (rem_chunk_line). */
static int on_chunk_header(llhttp_t *p)
{
    rem_chunk_line_parsed(&H1(p)->chunk_line, p->content_length == 0);
    return HPE_PAUSED;
}

static int on_chunk_complete(llhttp_t *p)
{
    return rem_chunk_line_next(&H1(p)->chunk_line) ? HPE_PAUSED : 0;
}

static int on_body(llhttp_t *p, const char *at, size_t n)
{
    struct rem_h1_up *h = H1(p);
    if (rem_stream_on_resp_body(h->stream, at, n)) {
        h->paused = true;
        return HPE_PAUSED;
    }
    return h->stream ? 0 : -1;
}

static int on_message_complete(llhttp_t *p)
{
    struct rem_h1_up *h = H1(p);
    if (h->resp_interim) {
        h->resp_interim = false;
        return 0;
    }
    h->resp_complete = true;
    rem_chunk_line_end(&h->chunk_line);
    return HPE_PAUSED;
}

static void settings_init(void)
{
    llhttp_settings_init(&up_settings);
    up_settings.on_message_begin = on_message_begin;
    up_settings.on_status = on_status;
    up_settings.on_header_field = on_header_field;
    up_settings.on_header_value = on_header_value;
    up_settings.on_headers_complete = on_headers_complete;
    up_settings.on_body = on_body;
    up_settings.on_chunk_header = on_chunk_header;
    up_settings.on_chunk_complete = on_chunk_complete;
    up_settings.on_message_complete = on_message_complete;
}

static void *h1_init(struct rem_upconn *uc)
{
    pthread_once(&up_settings_once, settings_init);
    struct rem_h1_up *h = calloc(1, sizeof(*h));
    if (!h)
        return NULL;
    h->uc = uc;
    llhttp_init(&h->parser, HTTP_RESPONSE, &up_settings);
    h->parser.data = h;
    return h;
}

static void h1_free(struct rem_upconn *uc)
{
    free(uc->codec);
}

/* A fresh parser for the next exchange on uc. */
static void reset(struct rem_h1_up *h)
{
    llhttp_init(&h->parser, HTTP_RESPONSE, &up_settings);
    h->parser.data = h;
    h->resp_complete = h->resp_interim = h->exec_pending = h->in_trailers = false;
    h->switching = h->tunnel = h->eof_pending = h->closing = false;
    h->resp_err = REM_E_OK;
    h->paused = false;
}

static void h1_attach(struct rem_upconn *uc, struct rem_stream *s)
{
    struct rem_h1_up *h = h1_of(uc);
    h->stream = s;
    if (uc->state == REM_UPCONN_IDLE) {
        rem_upconn_set_state(uc, REM_UPCONN_ACTIVE);
        reset(h);
    }
}

static void h1_detach_all(struct rem_upconn *uc)
{
    h1_of(uc)->stream = NULL;
}

static bool h1_has_room(const struct rem_upconn *uc)
{
    return uc->state == REM_UPCONN_IDLE && !h1_of(uc)->stream;
}

static unsigned h1_n_streams(const struct rem_upconn *uc)
{
    return h1_of(uc)->stream ? 1 : 0;
}

static int h1_write_head(struct rem_upconn *uc, struct rem_stream *s)
{
    char key[25];
    /* A tunnel offer goes on intact (its own Upgrade and Connection are hop-by-hop). An h2
     * extended CONNECT (RFC 8441) becomes the HTTP/1.1 Upgrade it stands for: a GET, with the
     * Sec-WebSocket-Key an h2 client does not send (RFC 6455 4.1). */
    bool tunnel = s->tunnel_req == REM_TUNNEL_UPGRADE;
    bool from_h2 = tunnel && s->req.http_major == 2;
    const char *v;
    size_t n;
    bool need_key = from_h2 && !rem_head_value(&s->req, "sec-websocket-key", &v, &n);
    if (need_key)
        rem_http_websocket_key(key, &s->worker->rng);
    struct rem_fwd_request fwd = {
        .client_addr = s->conn->peer,
        .proto = s->conn->tls ? "https" : "http",
        .request_id = s->req.request_id_idx < 0 ? s->request_id : NULL,
        .xfcc = rem_conn_identity(s->conn) ? rem_conn_identity(s->conn)->xfcc : NULL,
        .default_host = uc->ep->authority,
        .chunked = s->req_chunked,
        .content_length = s->req_chunked || tunnel ? -1 : s->req.content_length,
        .upgrade = tunnel ? s->upgrade : NULL,
        .upgrade_len = tunnel ? s->upgrade_len : 0,
        .method = from_h2 ? "GET" : NULL,
        .websocket_key = need_key ? key : NULL,
    };
    rem_upconn_flush_later(uc);
    return rem_http_write_request(rem_upconn_output(uc), &s->req, &fwd);
}

static int h1_write_body(struct rem_upconn *uc, struct rem_stream *s, const char *p, size_t n)
{
    struct evbuffer *out = rem_upconn_output(uc);
    if (n == 0)
        return 0;
    rem_upconn_flush_later(uc);
    if (s->req_chunked && rem_http_chunk_header(out, n) < 0)
        return -REM_E_NOMEM;
    if (evbuffer_add(out, p, n) < 0)
        return -REM_E_NOMEM;
    if (s->req_chunked && evbuffer_add(out, "\r\n", 2) < 0)
        return -REM_E_NOMEM;
    return 0;
}

static int h1_write_end(struct rem_upconn *uc, struct rem_stream *s)
{
    if (h1_of(uc)->tunnel) {
        rem_upconn_shutdown_write(uc); /* the client ended its side of the tunnel */
        return 0;
    }
    if (!s->req_chunked)
        return 0;
    rem_upconn_flush_later(uc);
    return rem_http_write_last_chunk(rem_upconn_output(uc), &s->req_trl);
}

/* The response ended: uc goes back to the pool (or closes) before the stream hears of it, so
 * the next request can have it at once. */
static void complete(struct rem_h1_up *h, bool reusable)
{
    struct rem_upconn *uc = h->uc;
    struct rem_stream *s = h->stream;
    h->stream = NULL;
    h->paused = false;
    /* An upconn that carried an Upgrade offer is never reused, whatever the answer. */
    rem_upool_release(uc, reusable && s->req_sent && !s->tunnel_req);
    rem_stream_on_resp_end(s);
}

static void fail(struct rem_upconn *uc, enum rem_err e)
{
    struct rem_stream *s = h1_of(uc)->stream;
    rem_upconn_close(uc);
    if (s)
        rem_stream_on_upconn_error(s, e, REM_RETRY_MAYBE);
}

/* Tunnel: the app's bytes go to the stream as they come, paused while the downstream is
 * full; its FIN follows the last of them. */
static void tunnel_forward(struct rem_h1_up *h)
{
    struct rem_upconn *uc = h->uc;
    struct evbuffer *in = rem_upconn_input(uc);
    while (uc->state == REM_UPCONN_ACTIVE && h->stream && !h->paused) {
        size_t n = evbuffer_get_contiguous_space(in);
        if (n == 0)
            break;
        const char *p = (const char *)evbuffer_pullup(in, (ev_ssize_t)n);
        bool full = rem_stream_on_resp_body(h->stream, p, n);
        if (uc->state == REM_UPCONN_CLOSED)
            return; /* the stream failed and let go of us */
        evbuffer_drain(in, n);
        if (full)
            h->paused = true;
    }
    if (h->eof_pending && h->stream && !h->paused && evbuffer_get_length(in) == 0) {
        h->eof_pending = false;
        rem_stream_on_resp_end(h->stream);
    }
}

static void parse(struct rem_h1_up *h)
{
    struct rem_upconn *uc = h->uc;
    struct evbuffer *in = rem_upconn_input(uc);
    if (h->tunnel) {
        tunnel_forward(h);
        return;
    }
    while (uc->state == REM_UPCONN_ACTIVE && h->stream && !h->paused) {
        size_t n = evbuffer_get_contiguous_space(in);
        /* A pause on the last body byte leaves the message's end unparsed: an empty execute
         * completes it (llhttp needs no input for that). */
        if (n == 0 && !h->exec_pending)
            break;
        h->exec_pending = false;
        n = rem_chunk_line_window(&h->chunk_line, n);
        bool line_open = h->chunk_line.open;
        const char *p = n ? (const char *)evbuffer_pullup(in, (ev_ssize_t)n) : "";
        rem_stream_mark_resp_started(h->stream);
        llhttp_errno_t err = llhttp_execute(&h->parser, p, n);
        size_t used = err == HPE_OK ? n : (size_t)(llhttp_get_error_pos(&h->parser) - p);
        if (uc->state == REM_UPCONN_CLOSED)
            return; /* the stream went away inside a callback and closed us */
        evbuffer_drain(in, used);
        if (!rem_chunk_line_count(&h->chunk_line, line_open, used)) {
            rem_log_debug("upconn %s: chunk-size line over %d bytes", uc->ep->name,
                          REM_CHUNK_LINE_MAX);
            fail(uc, REM_E_BAD_RESPONSE);
            return;
        }
        if (err == HPE_OK)
            continue;
        if (err == HPE_PAUSED) {
            llhttp_resume(&h->parser);
            if (h->switching) {
                /* The app switched: the head goes down, both sides become a tunnel, and
                 * whatever followed the head is its first bytes. */
                h->switching = false;
                if (rem_stream_on_upgrade(h->stream) < 0 || uc->state != REM_UPCONN_ACTIVE)
                    return;
                tunnel_forward(h);
                return;
            }
            if (h->resp_complete) {
                if (!rem_head_names_ok(&h->stream->resp_trl)) {
                    fail(uc, REM_E_BAD_RESPONSE); /* a trailer without a name */
                    return;
                }
                complete(h, llhttp_should_keep_alive(&h->parser));
                return;
            }
            h->exec_pending = used == n; /* paused at the end of what we had */
            continue;                    /* paused for backpressure: the loop condition stops */
        }
        rem_log_debug("upconn %s: bad response: %s", uc->ep->name,
                      llhttp_get_error_reason(&h->parser));
        fail(uc, h->resp_err != REM_E_OK ? h->resp_err : REM_E_BAD_RESPONSE);
        return;
    }
}

static void h1_process(struct rem_upconn *uc)
{
    if (uc->state == REM_UPCONN_ACTIVE) {
        rem_upconn_touch(uc);
        parse(h1_of(uc));
        /* Whatever was consumed makes room: reading resumes below the watermark. */
        rem_upconn_rearm(uc);
        return;
    }
    /* RFC 9112 9.3.1: nothing may arrive on an idle connection; it cannot be reused. */
    rem_log_debug("upconn %s: unexpected bytes while idle, closing", uc->ep->name);
    rem_upconn_close(uc);
}

static void eof_after_parse(struct rem_h1_up *h);

static void h1_on_kick(struct rem_upconn *uc)
{
    struct rem_h1_up *h = h1_of(uc);
    if (uc->state == REM_UPCONN_ACTIVE && !h->paused) {
        parse(h);
        if (h->eof_pending && !h->tunnel && !h->paused)
            eof_after_parse(h);
        else if (uc->state == REM_UPCONN_ACTIVE)
            rem_upconn_rearm(uc);
    }
}

static void h1_on_drained(struct rem_upconn *uc)
{
    struct rem_h1_up *h = h1_of(uc);
    if (h->closing) {
        if (rem_upconn_output_len(uc) == 0)
            rem_upconn_close(uc); /* the tunnel's last bytes are out */
        return;
    }
    if (uc->state == REM_UPCONN_ACTIVE && h->stream)
        rem_stream_on_upconn_writable(h->stream);
}

static void h1_ready(struct rem_upconn *uc)
{
    struct rem_h1_up *h = h1_of(uc);
    rem_upconn_set_state(uc, REM_UPCONN_ACTIVE);
    if (h->stream)
        rem_stream_on_upconn_ready(h->stream, uc);
    else
        rem_upool_release(uc, true);
}

static void h1_on_timer(struct rem_upconn *uc)
{
    struct rem_h1_up *h = h1_of(uc);
    if (uc->state == REM_UPCONN_IDLE) {
        rem_log_debug("upconn %s: idle for %llu ms, closing", uc->ep->name,
                      (unsigned long long)uc->ep->cluster->cfg->idle_timeout_ms);
        rem_upconn_close(uc);
        return;
    }
    if (h->closing) {
        rem_upconn_close(uc); /* the app stopped reading the tunnel's last bytes */
        return;
    }
    uint64_t idle = rem_now_ms() - uc->last_activity_ms;
    if (h->paused) {
        /* The downstream is the slow side; its write timeout governs. */
        rem_upconn_touch(uc);
        idle = 0;
    }
    if (uc->timeout_ms && idle < uc->timeout_ms) {
        rem_upconn_arm_timer(uc, uc->timeout_ms - idle);
        return;
    }
    if (uc->timeout_ms)
        fail(uc, h->tunnel ? REM_E_TUNNEL_IDLE_TIMEOUT : REM_E_UPSTREAM_TIMEOUT);
}

/* The app closed: completes a close-delimited response or reports the failure. */
static void on_eof(struct rem_h1_up *h)
{
    struct rem_upconn *uc = h->uc;
    struct rem_stream *s = h->stream;
    if (!s) {
        rem_upconn_close(uc);
        return;
    }
    if (s->resp_started) {
        /* A close-delimited body (RFC 9112 6.3 rule 8) ends with the connection. */
        llhttp_errno_t err = llhttp_finish(&h->parser);
        if (err == HPE_PAUSED && h->resp_complete) {
            llhttp_resume(&h->parser);
            complete(h, false);
            return;
        }
        fail(uc, s->resp_head_sent ? REM_E_UPSTREAM_TRUNCATED : REM_E_UPSTREAM_RESET);
        return;
    }
    fail(uc, REM_E_UPSTREAM_RESET);
}

/* The app's EOF once everything before it was parsed: the end of a close-delimited body, a
 * truncation, or (the response completed and uc went idle) a connection that cannot be
 * reused. */
static void eof_after_parse(struct rem_h1_up *h)
{
    struct rem_upconn *uc = h->uc;
    h->eof_pending = false;
    if (uc->state == REM_UPCONN_ACTIVE)
        on_eof(h);
    else if (uc->state == REM_UPCONN_IDLE)
        rem_upconn_close(uc);
}

static void h1_on_close(struct rem_upconn *uc, int what)
{
    if (uc->state == REM_UPCONN_IDLE) {
        rem_upconn_close(uc);
        return;
    }
    struct rem_h1_up *h = h1_of(uc);
    if (h->closing) {
        rem_upconn_close(uc);
        return;
    }
    if ((what & REM_TE_EOF) && h->tunnel) {
        /* Half-close: the FIN goes on to the client once the input before it has. */
        h->eof_pending = true;
        tunnel_forward(h);
        return;
    }
    if (what & REM_TE_EOF) {
        /* Parse what is left first: a close-delimited body ends here. What the downstream
         * cannot take yet is parsed when it drains, and the EOF acted on after it. */
        parse(h);
        if (uc->state == REM_UPCONN_ACTIVE && h->paused &&
            evbuffer_get_length(rem_upconn_input(uc)) > 0) {
            h->eof_pending = true;
            return;
        }
        eof_after_parse(h);
    } else {
        /* A reset: after the head, the body is what it cuts (as an EOF there). */
        struct rem_stream *s = h->stream;
        fail(uc, s && s->resp_head_sent ? REM_E_UPSTREAM_TRUNCATED : REM_E_UPSTREAM_RESET);
    }
}

static void h1_fail_all(struct rem_upconn *uc, enum rem_err e)
{
    fail(uc, e);
}

static void h1_cancel(struct rem_upconn *uc, struct rem_stream *s)
{
    struct rem_h1_up *h = h1_of(uc);
    if (h->tunnel && s->req_done && s->resp_done && s->err == REM_E_OK &&
        rem_upconn_output_len(uc) > 0) {
        /* Both sides ended the tunnel cleanly: the client's last bytes (and the FIN already
         * asked for) still go out before the close. */
        h->stream = NULL;
        h->closing = true;
        if (!uc->timeout_ms) /* tunnel_idle_timeout 0: still a bound on the last write */
            rem_upconn_arm_timer(uc, REM_TUNNEL_FLUSH_MS);
        return;
    }
    rem_upconn_close(uc); /* the exchange cannot be finished: the connection is lost */
}

static bool h1_full(struct rem_upconn *uc, struct rem_stream *s)
{
    return rem_upconn_output_len(uc) >= s->conn->cfg->limits.buffer_bytes;
}

static void h1_resume(struct rem_upconn *uc, struct rem_stream *s)
{
    struct rem_h1_up *h = h1_of(uc);
    if (!h->paused)
        return;
    h->paused = false;
    rem_upconn_kick(uc);
}

static int h1_set_tunnel(struct rem_upconn *uc, struct rem_stream *s)
{
    h1_of(uc)->tunnel = true; /* llhttp is not called again on this upconn */
    return 0;
}

const struct rem_up_ops rem_h1_up_ops = {
    .name = "http1",
    .multiplexed = false,
    .init = h1_init,
    .free = h1_free,
    .ready = h1_ready,
    .process = h1_process,
    .on_drained = h1_on_drained,
    .on_kick = h1_on_kick,
    .on_timer = h1_on_timer,
    .on_close = h1_on_close,
    .fail_all = h1_fail_all,
    .detach_all = h1_detach_all,
    .has_room = h1_has_room,
    .n_streams = h1_n_streams,
    .attach = h1_attach,
    .cancel = h1_cancel,
    .write_head = h1_write_head,
    .write_body = h1_write_body,
    .write_end = h1_write_end,
    .full = h1_full,
    .resume = h1_resume,
    .set_tunnel = h1_set_tunnel,
};
