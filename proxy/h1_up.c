/* SPDX-License-Identifier: Apache-2.0
 * h1_up: HTTP/1.1 toward the upstream. Request heads are serialized by http.c; bodies are
 * framed here (chunked re-encoding when the client sent chunked). Responses are parsed with
 * llhttp, paused (HPE_PAUSED) when the downstream output is full, and handed to the stream. */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include <event2/buffer.h>

#include "cluster.h"
#include "conn.h"
#include "error.h"
#include "h1_up.h"
#include "http.h"
#include "log.h"
#include "stream.h"
#include "upool.h"

static llhttp_settings_t up_settings;
static pthread_once_t up_settings_once = PTHREAD_ONCE_INIT;

#define UC(p) ((struct rem_upconn *)(p)->data)

static int map_rc(struct rem_upconn *uc, int rc)
{
    if (rc == 0)
        return 0;
    uc->resp_err = rem_err_from_rc(rc) == REM_E_NOMEM ? REM_E_NOMEM : REM_E_BAD_RESPONSE;
    return -1;
}

static int on_message_begin(llhttp_t *p)
{
    struct rem_upconn *uc = UC(p);
    struct rem_stream *s = uc->stream;
    rem_head_reset(&s->resp);
    rem_head_reset(&s->resp_trl);
    s->in_resp_trailers = false;
    uc->resp_complete = false;
    uc->resp_interim = false;
    return 0;
}

static int on_status(llhttp_t *p, const char *at, size_t n)
{
    struct rem_upconn *uc = UC(p);
    return map_rc(uc, rem_head_add_span(&uc->stream->resp, REM_SPAN_REASON, at, n));
}

static int on_header_field(llhttp_t *p, const char *at, size_t n)
{
    struct rem_upconn *uc = UC(p);
    struct rem_stream *s = uc->stream;
    return map_rc(uc, rem_head_add_name(s->in_resp_trailers ? &s->resp_trl : &s->resp, at, n));
}

static int on_header_value(llhttp_t *p, const char *at, size_t n)
{
    struct rem_upconn *uc = UC(p);
    struct rem_stream *s = uc->stream;
    return map_rc(uc, rem_head_add_value(s->in_resp_trailers ? &s->resp_trl : &s->resp, at, n));
}

static int on_headers_complete(llhttp_t *p)
{
    struct rem_upconn *uc = UC(p);
    struct rem_stream *s = uc->stream;
    s->resp.status = p->status_code;
    s->resp.http_major = p->http_major;
    s->resp.http_minor = p->http_minor;
    rem_head_classify(&s->resp);
    if (p->status_code == 101) {
        /* remora never forwards Upgrade, so a switch is a protocol violation. */
        uc->resp_err = REM_E_BAD_RESPONSE;
        return -1;
    }
    if (p->status_code < 200) {
        /* RFC 9110 15.2: 1xx the client did not cause go on (103 Early Hints), except to
         * HTTP/1.0 clients; 100 is remora's own business (it answers Expect itself). */
        uc->resp_interim = true;
        if (p->status_code != 100 && rem_stream_on_resp_interim(s) < 0) {
            uc->resp_err = REM_E_NOMEM;
            return -1;
        }
        return 0;
    }
    if (s->resp.cl_conflict || s->resp.te_unsupported) {
        uc->resp_err = REM_E_BAD_RESPONSE;
        return -1;
    }
    s->in_resp_trailers = true;
    int rc = rem_stream_on_resp_head(s);
    if (rc < 0 || uc->stream != s) {
        uc->resp_err = rem_err_from_rc(rc);
        return -1;
    }
    /* 1: no body follows (the answer to HEAD), RFC 9110 9.3.2. */
    return s->head_request ? 1 : 0;
}

static int on_body(llhttp_t *p, const char *at, size_t n)
{
    struct rem_upconn *uc = UC(p);
    if (rem_stream_on_resp_body(uc->stream, at, n)) {
        uc->paused = true;
        return HPE_PAUSED;
    }
    return uc->stream ? 0 : -1;
}

static int on_message_complete(llhttp_t *p)
{
    struct rem_upconn *uc = UC(p);
    if (uc->resp_interim) {
        uc->resp_interim = false;
        return 0;
    }
    uc->resp_complete = true;
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
    up_settings.on_message_complete = on_message_complete;
}

void rem_h1_up_init(struct rem_upconn *uc)
{
    pthread_once(&up_settings_once, settings_init);
    llhttp_init(&uc->parser, HTTP_RESPONSE, &up_settings);
    uc->parser.data = uc;
}

void rem_h1_up_reset(struct rem_upconn *uc)
{
    llhttp_init(&uc->parser, HTTP_RESPONSE, &up_settings);
    uc->parser.data = uc;
    uc->resp_complete = uc->resp_interim = uc->exec_pending = false;
    uc->resp_err = REM_E_OK;
    uc->paused = false;
}

int rem_h1_up_write_head(struct rem_upconn *uc, struct rem_stream *s)
{
    struct rem_fwd_request fwd = {
        .client_addr = s->conn->peer,
        .proto = "http",
        .request_id = s->req.request_id_idx < 0 ? s->request_id : NULL,
        .default_host = uc->ep->name,
        .chunked = s->req_chunked,
        .content_length = s->req_chunked ? -1 : s->req.content_length,
    };
    uc->n_requests++;
    rem_transport_flush_later(&uc->t);
    return rem_http_write_request(rem_upconn_output(uc), &s->req, &fwd);
}

int rem_h1_up_write_body(struct rem_upconn *uc, struct rem_stream *s, const char *p, size_t n)
{
    struct evbuffer *out = rem_upconn_output(uc);
    if (n == 0)
        return 0;
    rem_transport_flush_later(&uc->t);
    if (s->req_chunked && rem_http_chunk_header(out, n) < 0)
        return -REM_E_NOMEM;
    if (evbuffer_add(out, p, n) < 0)
        return -REM_E_NOMEM;
    if (s->req_chunked && evbuffer_add(out, "\r\n", 2) < 0)
        return -REM_E_NOMEM;
    return 0;
}

int rem_h1_up_write_end(struct rem_upconn *uc, struct rem_stream *s)
{
    if (!s->req_chunked)
        return 0;
    rem_transport_flush_later(&uc->t);
    return rem_http_write_last_chunk(rem_upconn_output(uc), &s->req_trl);
}

static void complete(struct rem_upconn *uc)
{
    struct rem_stream *s = uc->stream;
    bool reusable = llhttp_should_keep_alive(&uc->parser) && s->req_sent;
    rem_upool_release(uc, reusable);
    rem_stream_on_resp_end(s);
}

static void fail(struct rem_upconn *uc, enum rem_err e)
{
    struct rem_stream *s = uc->stream;
    rem_upconn_close(uc);
    if (s)
        rem_stream_on_upconn_error(s, e);
}

static void process(struct rem_upconn *uc);

void rem_h1_up_process(struct rem_upconn *uc)
{
    process(uc);
    /* Whatever was consumed makes room: reading resumes below the watermark. */
    if (uc->state != REM_UPCONN_CLOSED)
        rem_transport_rearm(&uc->t);
}

static void process(struct rem_upconn *uc)
{
    struct evbuffer *in = rem_transport_input(&uc->t);
    while (uc->state == REM_UPCONN_ACTIVE && uc->stream && !uc->paused) {
        size_t n = evbuffer_get_contiguous_space(in);
        /* A pause on the last body byte leaves the message's end unparsed: an empty execute
         * completes it (llhttp needs no input for that). */
        if (n == 0 && !uc->exec_pending)
            break;
        uc->exec_pending = false;
        const char *p = n ? (const char *)evbuffer_pullup(in, (ev_ssize_t)n) : "";
        struct rem_stream *s = uc->stream;
        s->resp_started = true;
        llhttp_errno_t err = llhttp_execute(&uc->parser, p, n);
        size_t used = err == HPE_OK ? n : (size_t)(llhttp_get_error_pos(&uc->parser) - p);
        if (uc->state == REM_UPCONN_CLOSED)
            return; /* the stream went away inside a callback and closed us */
        evbuffer_drain(in, used);
        if (err == HPE_OK)
            continue;
        if (err == HPE_PAUSED) {
            llhttp_resume(&uc->parser);
            if (uc->resp_complete) {
                complete(uc);
                return;
            }
            uc->exec_pending = used == n; /* paused at the end of what we had */
            continue;                     /* paused for backpressure: the loop condition stops */
        }
        rem_log_debug("upconn %s: bad response: %s", uc->ep->name,
                      llhttp_get_error_reason(&uc->parser));
        fail(uc, uc->resp_err != REM_E_OK ? uc->resp_err : REM_E_BAD_RESPONSE);
        return;
    }
}

void rem_h1_up_on_eof(struct rem_upconn *uc)
{
    struct rem_stream *s = uc->stream;
    if (!s) {
        rem_upconn_close(uc);
        return;
    }
    if (s->resp_started) {
        /* A close-delimited body (RFC 9112 6.3 rule 8) ends with the connection. */
        llhttp_errno_t err = llhttp_finish(&uc->parser);
        if (err == HPE_PAUSED && uc->resp_complete) {
            llhttp_resume(&uc->parser);
            rem_upool_release(uc, false);
            rem_stream_on_resp_end(s);
            return;
        }
        fail(uc, s->resp_head_sent ? REM_E_UPSTREAM_TRUNCATED : REM_E_UPSTREAM_RESET);
        return;
    }
    fail(uc, REM_E_UPSTREAM_RESET);
}
