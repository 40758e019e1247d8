/* SPDX-License-Identifier: Apache-2.0
 * h1_down: HTTP/1.1 from clients. llhttp parses straight out of the conn's input evbuffer;
 * parser callbacks only record (head bytes into the stream's arena, flags), and the decisions
 * that can start or end a stream are taken after llhttp_execute returns. Pausing uses
 * HPE_PAUSED to stop mid-buffer and the conn's pause mask to say why. */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include <event2/buffer.h>

#include "config.h"
#include "conn.h"
#include "error.h"
#include "h1_down.h"
#include "h1_up.h"
#include "http.h"
#include "log.h"
#include "stream.h"

static llhttp_settings_t down_settings;
static pthread_once_t down_settings_once = PTHREAD_ONCE_INIT;

#define CONN(p) ((struct rem_conn *)(p)->data)

static int record(struct rem_conn *c, int rc)
{
    if (rc == 0)
        return 0;
    c->parse_err = rc;
    return -1;
}

static int on_message_begin(llhttp_t *p)
{
    struct rem_conn *c = CONN(p);
    if (!c->stream)
        c->stream = rem_stream_new(c);
    c->state = REM_CONN_HEAD;
    rem_conn_arm_timer(c);
    return 0;
}

static int on_method(llhttp_t *p, const char *at, size_t n)
{
    struct rem_conn *c = CONN(p);
    return record(c, rem_head_add_span(&c->stream->req, REM_SPAN_METHOD, at, n));
}

static int on_url(llhttp_t *p, const char *at, size_t n)
{
    struct rem_conn *c = CONN(p);
    return record(c, rem_head_add_span(&c->stream->req, REM_SPAN_TARGET, at, n));
}

static struct rem_head *current_head(struct rem_conn *c)
{
    struct rem_stream *s = c->stream;
    return s->state == REM_STREAM_HEAD ? &s->req : &s->req_trl;
}

static int on_header_field(llhttp_t *p, const char *at, size_t n)
{
    struct rem_conn *c = CONN(p);
    c->val_open = false;
    return record(c, rem_head_add_name(current_head(c), at, n));
}

static int on_header_value(llhttp_t *p, const char *at, size_t n)
{
    struct rem_conn *c = CONN(p);
    /* obs-fold (RFC 9112 5.2) reaches us as a second piece of the same value that does not
     * merely continue a piece cut at the end of the previous read: refuse it (smuggling). */
    if (c->val_open && !(c->val_at_end && at == c->exec_start))
        return record(c, -REM_E_BAD_FRAMING);
    c->val_open = true;
    c->val_at_end = at + n == c->exec_end;
    return record(c, rem_head_add_value(current_head(c), at, n));
}

static int on_headers_complete(llhttp_t *p)
{
    struct rem_conn *c = CONN(p);
    struct rem_stream *s = c->stream;
    struct rem_head *h = &s->req;
    const struct rem_cfg_limits *lim = &c->cfg->limits;

    c->val_open = false;
    if (s->state != REM_STREAM_HEAD)
        return 0; /* end of trailers */
    if (p->http_major != 1)
        return record(c, -REM_E_BAD_REQUEST); /* HTTP/0.9 and unknown versions */
    h->http_major = p->http_major;
    h->http_minor = p->http_minor;
    rem_head_classify(h);
    /* RFC 9112 6.1 and 6.3: framing we cannot be sure of is refused, never guessed. */
    if (h->te_unsupported)
        return record(c, -REM_E_UNSUPPORTED_TE);
    if (h->cl_conflict)
        return record(c, -REM_E_BAD_FRAMING);
    /* RFC 9112 3.2: exactly one Host in HTTP/1.1, at most one before. */
    if (h->n_host > 1 || (p->http_major == 1 && p->http_minor >= 1 && h->n_host == 0))
        return record(c, -REM_E_BAD_REQUEST);
    if (h->host_idx >= 0 &&
        !rem_http_host_valid(REM_HDR_VAL(h, &h->hdrs[h->host_idx]), h->hdrs[h->host_idx].val_len))
        return record(c, -REM_E_BAD_REQUEST);
    if (p->method == HTTP_CONNECT)
        return record(c, -REM_E_BAD_REQUEST); /* no tunnels through a sidecar */
    /* Upgrade (h2c, websocket) is dropped as hop-by-hop and the request served as HTTP/1.1:
     * llhttp must not switch protocols after it either (RFC 9113 removed h2c upgrade). */
    p->upgrade = 0;
    if (lim->max_body_bytes && h->content_length > (int64_t)lim->max_body_bytes)
        return record(c, -REM_E_BODY_TOO_LARGE);
    s->head_request = p->method == HTTP_HEAD;
    s->req_chunked = h->chunked;
    s->req_has_body = h->chunked || h->content_length > 0;
    c->head_ready = true;
    c->state = REM_CONN_ACTIVE;
    rem_conn_arm_timer(c);
    if (s->req_has_body) {
        /* The body stays in the socket until an upconn can take it. */
        c->pause |= REM_PAUSE_UPSTREAM_WAIT;
        return HPE_PAUSED;
    }
    return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t n)
{
    struct rem_conn *c = CONN(p);
    struct rem_stream *s = c->stream;
    uint64_t max = c->cfg->limits.max_body_bytes;
    if (max && (uint64_t)s->req_body_bytes + n > max)
        return record(c, -REM_E_BODY_TOO_LARGE);
    if (rem_stream_req_body(s, at, n)) {
        c->pause |= REM_PAUSE_UPSTREAM_FULL;
        return HPE_PAUSED;
    }
    return 0;
}

static int on_message_complete(llhttp_t *p)
{
    struct rem_conn *c = CONN(p);
    struct rem_stream *s = c->stream;
    /* Pipelined requests wait in the input buffer until this response is done. */
    c->pause |= REM_PAUSE_PIPELINE;
    if (s->state != REM_STREAM_HEAD)
        rem_stream_req_end(s);
    else
        s->req_done = true; /* no body: rem_stream_start follows */
    return HPE_PAUSED;
}

static void settings_init(void)
{
    llhttp_settings_init(&down_settings);
    down_settings.on_message_begin = on_message_begin;
    down_settings.on_method = on_method;
    down_settings.on_url = on_url;
    down_settings.on_header_field = on_header_field;
    down_settings.on_header_value = on_header_value;
    down_settings.on_headers_complete = on_headers_complete;
    down_settings.on_body = on_body;
    down_settings.on_message_complete = on_message_complete;
}

void rem_h1_down_init(struct rem_conn *c)
{
    pthread_once(&down_settings_once, settings_init);
    llhttp_init(&c->parser, HTTP_REQUEST, &down_settings);
    c->parser.data = c;
}

static enum rem_err map_llhttp_error(llhttp_errno_t err)
{
    switch (err) {
    case HPE_UNEXPECTED_CONTENT_LENGTH:
    case HPE_INVALID_CONTENT_LENGTH:
    case HPE_INVALID_CHUNK_SIZE:
        return REM_E_BAD_FRAMING;
    case HPE_INVALID_TRANSFER_ENCODING:
        return REM_E_UNSUPPORTED_TE;
    default:
        return REM_E_BAD_REQUEST;
    }
}

static void bad_input(struct rem_conn *c, enum rem_err e)
{
    struct rem_stream *s = c->stream;
    if (!s)
        s = c->stream = rem_stream_new(c);
    rem_log_debug("conn %s: bad request: %s", c->peer, rem_err_label(e));
    rem_stream_fail(s, e);
}

static void process(struct rem_conn *c);

void rem_h1_down_process(struct rem_conn *c)
{
    process(c);
    /* Whatever was consumed makes room: reading resumes below the watermark. */
    if (c->state < REM_CONN_CLOSED)
        rem_transport_rearm(&c->t);
}

static void process(struct rem_conn *c)
{
    struct evbuffer *in = c->t.in;
    while (c->state < REM_CONN_CLOSING && !c->pause) {
        size_t n = evbuffer_get_contiguous_space(in);
        /* A pause on the last body byte leaves the message's end unparsed: an empty execute
         * completes it. */
        if (n == 0 && !c->exec_pending)
            break;
        c->exec_pending = false;
        const char *p = n ? (const char *)evbuffer_pullup(in, (ev_ssize_t)n) : "";
        c->exec_start = p;
        c->exec_end = p + n;
        llhttp_errno_t err = llhttp_execute(&c->parser, p, n);
        size_t used = err == HPE_OK ? n : (size_t)(llhttp_get_error_pos(&c->parser) - p);
        if (c->state >= REM_CONN_CLOSED)
            return;
        evbuffer_drain(in, used);
        if (c->stream)
            c->stream->bytes_in += used;
        if (err == HPE_OK)
            continue;
        if (err == HPE_PAUSED) {
            llhttp_resume(&c->parser);
            c->exec_pending = used == n && (c->pause & REM_PAUSE_UPSTREAM_FULL);
            if (c->head_ready) {
                c->head_ready = false;
                rem_stream_start(c->stream);
            }
            continue;
        }
        enum rem_err e = c->parse_err ? rem_err_from_rc(c->parse_err) : map_llhttp_error(err);
        bad_input(c, e);
        return;
    }
}

void rem_h1_down_timeout(struct rem_conn *c)
{
    bad_input(c, REM_E_REQUEST_HEADER_TIMEOUT);
}

void rem_h1_down_eof(struct rem_conn *c)
{
    /* A request cut short by the client: nothing to answer it to. */
    if (c->stream)
        rem_stream_abort(c->stream, REM_E_CLIENT_ABORT);
}

/* Every downstream write goes through here so that bytes_out counts what the client gets. */
static int counted(struct rem_conn *c, struct rem_stream *s, size_t before, int rc)
{
    if (s)
        s->bytes_out += evbuffer_get_length(rem_conn_output(c)) - before;
    rem_transport_flush_later(&c->t);
    return rc;
}

int rem_h1_down_write_head(struct rem_conn *c, struct rem_stream *s)
{
    const struct rem_head *q = &s->req;
    struct rem_fwd_response fwd = {
        .request_id = s->rid,
        .request_id_len = s->rid_len,
        .chunked = s->down_chunked,
        .content_length = s->down_cl,
        .conn_close = s->down_close,
        .conn_keepalive = !s->down_close && q->http_major == 1 && q->http_minor == 0,
    };
    struct evbuffer *out = rem_conn_output(c);
    size_t before = evbuffer_get_length(out);
    return counted(c, s, before, rem_http_write_response(out, &s->resp, &fwd));
}

int rem_h1_down_write_interim(struct rem_conn *c, struct rem_stream *s)
{
    struct rem_fwd_response fwd = {.content_length = -1};
    struct evbuffer *out = rem_conn_output(c);
    size_t before = evbuffer_get_length(out);
    return counted(c, s, before, rem_http_write_response(out, &s->resp, &fwd));
}

int rem_h1_down_write_body(struct rem_conn *c, struct rem_stream *s, const char *p, size_t n)
{
    struct evbuffer *out = rem_conn_output(c);
    size_t before = evbuffer_get_length(out);
    int rc = 0;
    if (n == 0 || s->head_request)
        return 0;
    if (s->down_chunked && rem_http_chunk_header(out, n) < 0)
        rc = -REM_E_NOMEM;
    else if (evbuffer_add(out, p, n) < 0)
        rc = -REM_E_NOMEM;
    else if (s->down_chunked && evbuffer_add(out, "\r\n", 2) < 0)
        rc = -REM_E_NOMEM;
    return counted(c, s, before, rc);
}

int rem_h1_down_write_end(struct rem_conn *c, struct rem_stream *s)
{
    if (!s->down_chunked)
        return 0;
    struct evbuffer *out = rem_conn_output(c);
    size_t before = evbuffer_get_length(out);
    return counted(c, s, before, rem_h1_write_last_chunk(out, &s->resp_trl));
}

int rem_h1_down_write_error(struct rem_conn *c, struct rem_stream *s, enum rem_err e)
{
    struct evbuffer *out = rem_conn_output(c);
    size_t before = evbuffer_get_length(out);
    return counted(c, s, before,
                   rem_http_write_error(out, rem_err_status(e), rem_err_label(e), s ? s->rid : NULL,
                                        s ? s->rid_len : 0, s ? s->down_close : true,
                                        s && s->head_request,
                                        e == REM_E_QUEUE_FULL || e == REM_E_QUEUE_TIMEOUT));
}

int rem_h1_down_write_continue(struct rem_conn *c)
{
    static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
    struct evbuffer *out = rem_conn_output(c);
    size_t before = evbuffer_get_length(out);
    return counted(c, c->stream, before,
                   evbuffer_add(out, cont, sizeof(cont) - 1) < 0 ? -REM_E_NOMEM : 0);
}
