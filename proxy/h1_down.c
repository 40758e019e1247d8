/* SPDX-License-Identifier: Apache-2.0
 * h1_down: HTTP/1.1 from clients. llhttp parses straight out of the conn's input evbuffer;
 * parser callbacks only record (head bytes into the stream's arena, flags), and the decisions
 * that can start or end a stream are taken after llhttp_execute returns. Pausing uses
 * HPE_PAUSED to stop mid-buffer and the conn's pause mask to say why. */
#include <inttypes.h>
#include <llhttp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "config.h"
#include "conn.h"
#include "error.h"
#include "h1_down.h"
#include "http.h"
#include "log.h"
#include "stream.h"

/* Per-conn state (rem_conn.codec). */
struct rem_h1_down {
    struct rem_conn *c;        /* borrowed: the owner */
    struct rem_stream *stream; /* owned: the current stream, if any */
    llhttp_t parser;
    bool head_ready;       /* set by the parser, acted on after it returns */
    bool exec_pending;     /* parser paused at the end of the input: run it again */
    bool continue_sent;    /* 100 Continue went for the current request */
    bool draining;         /* every response from now on ends the conn */
    bool version_ok;       /* the request line's version is 1.0 or 1.1 */
    bool msg_done;         /* the parser ended a request, acted on after it returns */
    int parse_err;         /* -REM_E_* recorded inside a parser callback */
    const char *exec_end;  /* the end of the buffer being parsed */
    const char *text_from; /* protocol text of that buffer not checked yet */
    char text_prev;        /* the last protocol-text byte checked (0: none) */
    bool tunnel;           /* the current stream is an open tunnel: input is opaque bytes */
    bool eof_pending;      /* the client ended its side; forwarded once the input is */
    char version[4];       /* the request line's version ("1.1"), as far as it came */
    uint8_t version_len;
    struct rem_chunk_line chunk_line; /* the request body's chunk-size line being parsed */
};

static llhttp_settings_t down_settings;
static pthread_once_t down_settings_once = PTHREAD_ONCE_INIT;

#define H1(p) ((struct rem_h1_down *)(p)->data)

static struct rem_h1_down *h1_of(const struct rem_conn *c)
{
    return c->codec;
}

static int record(struct rem_h1_down *h, int rc)
{
    if (rc == 0)
        return 0;
    h->parse_err = rc;
    return -1;
}

static int on_message_begin(llhttp_t *p)
{
    struct rem_h1_down *h = H1(p);
    if (!h->stream)
        h->stream = rem_stream_new(h->c);
    if (h->draining)
        rem_stream_close_after(h->stream);
    h->continue_sent = false;
    h->version_len = 0;
    h->version_ok = false;
    rem_chunk_line_end(&h->chunk_line);
    rem_conn_set_state(h->c, REM_CONN_HEAD);
    return 0;
}

static int on_method(llhttp_t *p, const char *at, size_t n)
{
    struct rem_h1_down *h = H1(p);
    return record(h, rem_head_add_span(&h->stream->req, REM_SPAN_METHOD, at, n));
}

static int on_url(llhttp_t *p, const char *at, size_t n)
{
    struct rem_h1_down *h = H1(p);
    /* HTTP/0.9 (RFC 9112 2.3: no version): the line ends right after the target. llhttp
     * would take it as 0.9 only once more input came; it is refused at once instead. */
    if (at + n < h->exec_end && (at[n] == '\r' || at[n] == '\n'))
        return record(h, -REM_E_BAD_REQUEST);
    int rc = rem_head_add_span(&h->stream->req, REM_SPAN_TARGET, at, n);
    /* The target alone is over the head's bound (limits.max_header_bytes): RFC 9110 15.5.15. */
    return record(h, rc == -REM_E_HEADER_TOO_LARGE ? -REM_E_URI_TOO_LONG : rc);
}

static int on_version(llhttp_t *p, const char *at, size_t n)
{
    struct rem_h1_down *h = H1(p);
    for (size_t i = 0; i < n && h->version_len < sizeof(h->version); i++)
        h->version[h->version_len++] = at[i];
    return 0;
}

/* RFC 9110 6.2: "D.D" with a major version other than 1 (2.0, 3.0, ...) is one remora does
 * not speak over HTTP/1: 505 (15.6.6). llhttp 8 also refuses 1.2 to 1.9 (there is no lenient
 * flag for it before llhttp 9), which RFC 9110 2.5 would have processed as 1.1: they get the
 * 505 too, the nearest honest answer. Anything else is not a version at all: 400. */
static enum rem_err version_error(const struct rem_h1_down *h)
{
    const char *v = h->version;
    if (h->version_len == 3 && v[0] >= '1' && v[0] <= '9' && v[1] == '.' && v[2] >= '0' &&
        v[2] <= '9')
        return REM_E_HTTP_VERSION;
    return REM_E_BAD_REQUEST;
}

static int on_version_complete(llhttp_t *p)
{
    struct rem_h1_down *h = H1(p);
    if (p->http_major == 1) {
        /* What llhttp refuses after a 1.0 or 1.1 is the line, not the version. */
        h->version_ok = p->http_minor <= 1;
        return 0;
    }
    return record(h, -(int)version_error(h)); /* 2.0 (505), 0.9 (400) */
}

static struct rem_head *current_head(struct rem_h1_down *h)
{
    struct rem_stream *s = h->stream;
    return s->state == REM_STREAM_HEAD ? &s->req : &s->req_trl;
}

static int on_header_field(llhttp_t *p, const char *at, size_t n)
{
    struct rem_h1_down *h = H1(p);
    return record(h, rem_head_add_name(current_head(h), at, n));
}

static int on_header_value(llhttp_t *p, const char *at, size_t n)
{
    struct rem_h1_down *h = H1(p);
    return record(h, rem_head_add_value(current_head(h), at, n));
}

/* RFC 9112 2.2 and 5.2, where llhttp 8 is lenient: in the request line, the header section,
 * chunk-size lines and trailers (everything but body bytes) a line ends with CRLF only, a CR
 * stands nowhere else (llhttp takes CR and any byte as the end of an empty field line), and no
 * line begins with whitespace (obs-fold, which llhttp unfolds when the first line's value is
 * empty). A front end reading such bytes otherwise would frame the message differently. Checks
 * [p, end), continuing the previous call's line; 0 or -REM_E_BAD_REQUEST / -REM_E_BAD_FRAMING
 * (obs-fold). */
static int text_check(struct rem_h1_down *h, const char *p, const char *end)
{
    char prev = h->text_prev;
    for (; p < end; p++) {
        char ch = *p;
        if ((prev == '\r') != (ch == '\n'))
            return -REM_E_BAD_REQUEST;
        if (prev == '\n' && (ch == ' ' || ch == '\t'))
            return -REM_E_BAD_FRAMING;
        prev = ch;
    }
    h->text_prev = prev;
    return 0;
}

/* RFC 9110 9.3.6, RFC 9112 3.2.3: CONNECT names uri-host ":" port, and has no content. */
static enum rem_err connect_error(const struct rem_head *h)
{
    if (!rem_http_authority_form(rem_head_ptr(h, h->span_off[REM_SPAN_TARGET]),
                                 h->span_len[REM_SPAN_TARGET]))
        return REM_E_BAD_REQUEST;
    if (h->chunked || h->content_length > 0)
        return REM_E_BAD_FRAMING;
    return REM_E_OK;
}

/* RFC 9112 3.2.2, RFC 9110 4.2.1 and 4.2.4: an absolute-form target's authority becomes the
 * Host remora forwards and routes on: it must be a valid, non-empty uri-host [":" port],
 * without userinfo. Other forms are checked elsewhere. */
static bool absolute_form_ok(const struct rem_head *h)
{
    const char *auth, *rest;
    size_t auth_len, rest_len;
    if (!rem_http_absolute_form(rem_head_ptr(h, h->span_off[REM_SPAN_TARGET]),
                                h->span_len[REM_SPAN_TARGET], &auth, &auth_len, &rest, &rest_len))
        return true;
    return auth_len && auth[0] != ':' && rem_http_host_valid(auth, auth_len);
}

static int on_headers_complete(llhttp_t *p)
{
    struct rem_h1_down *hd = H1(p);
    struct rem_conn *c = hd->c;
    struct rem_stream *s = hd->stream;
    struct rem_head *h = &s->req;
    const struct rem_cfg_limits *lim = &c->cfg->limits;

    if (s->state != REM_STREAM_HEAD)
        return 0; /* end of trailers */
    if (!rem_head_names_ok(h))
        return record(hd, -REM_E_BAD_REQUEST);
    if (p->http_major != 1)
        return record(hd, -(int)version_error(hd)); /* on_version_complete saw it first */
    rem_head_set_version(h, p->http_major, p->http_minor);
    rem_head_classify(h);
    /* RFC 9112 6.1 and 6.3: framing we cannot be sure of is refused, never guessed: 400 when
     * chunked is not the one, final coding (6.3), 501 for a coding before it (6.1). */
    if (h->te_not_final)
        return record(hd, -REM_E_BAD_FRAMING);
    if (h->te_unsupported)
        return record(hd, -REM_E_UNSUPPORTED_TE);
    if (h->cl_conflict)
        return record(hd, -REM_E_BAD_FRAMING);
    /* llhttp frames the body it parses, rem_head_classify the one remora forwards: where they
     * read the fields differently ("chunked\t", "chunked,") the request is refused before
     * anything goes on. */
    bool ll_cl = (p->flags & F_CONTENT_LENGTH) != 0;
    if (h->chunked != ((p->flags & F_CHUNKED) != 0) ||
        (!h->chunked && ll_cl != (h->content_length >= 0)) ||
        (ll_cl && (uint64_t)h->content_length != p->content_length))
        return record(hd, -REM_E_BAD_FRAMING);
    /* RFC 9112 3.2: exactly one Host in HTTP/1.1, at most one before. */
    if (h->n_host > 1 || (p->http_major == 1 && p->http_minor >= 1 && h->n_host == 0))
        return record(hd, -REM_E_BAD_REQUEST);
    /* RFC 9112 3.2.4: the asterisk form is for OPTIONS only. */
    if (p->method != HTTP_OPTIONS && h->span_len[REM_SPAN_TARGET] == 1 &&
        *rem_head_ptr(h, h->span_off[REM_SPAN_TARGET]) == '*')
        return record(hd, -REM_E_BAD_REQUEST);
    if (h->host_idx >= 0 &&
        !rem_http_host_valid(REM_HDR_VAL(h, &h->hdrs[h->host_idx]), h->hdrs[h->host_idx].val_len))
        return record(hd, -REM_E_BAD_REQUEST);
    if (!absolute_form_ok(h))
        return record(hd, -REM_E_BAD_REQUEST);
    if (p->method == HTTP_CONNECT && connect_error(h) != REM_E_OK)
        return record(hd, -(int)connect_error(h));
    if (lim->max_body_bytes && h->content_length > (int64_t)lim->max_body_bytes)
        return record(hd, -REM_E_BODY_TOO_LARGE);
    bool body = h->chunked || h->content_length > 0;
    /* An Upgrade offer (RFC 9110 7.8) without a body goes to the stream, which tunnels it if
     * the route allows the protocol; otherwise it is dropped as hop-by-hop. CONNECT goes to
     * the stream too (refused unless its route allows it). Either way llhttp stays in HTTP:
     * the bytes after the head wait, paused, until a tunnel opens or the answer is out. An
     * HTTP/1.0 request's Upgrade is ignored (RFC 9110 7.8). */
    const char *up;
    size_t up_len;
    if (p->upgrade && p->method != HTTP_CONNECT && !body && p->http_minor >= 1 &&
        rem_head_value(h, "upgrade", &up, &up_len))
        rem_stream_set_upgrade(s, up, up_len);
    p->upgrade = 0;
    rem_stream_set_request(s, p->method == HTTP_HEAD, body, h->chunked);
    hd->head_ready = true;
    rem_conn_set_state(c, REM_CONN_ACTIVE);
    if (p->flags & F_CHUNKED) /* llhttp's own view: its chunk callbacks follow */
        rem_chunk_line_begin(&hd->chunk_line);
    if (body) {
        /* The body stays in the socket until an upconn can take it. */
        rem_conn_pause(c, REM_PAUSE_UPSTREAM_WAIT);
        return HPE_PAUSED;
    }
    return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t n)
{
    struct rem_h1_down *h = H1(p);
    struct rem_stream *s = h->stream;
    uint64_t max = h->c->cfg->limits.max_body_bytes;
    /* The protocol text before these body bytes (a chunk-size line) is checked before they go
     * on; body bytes are opaque. */
    int rc = text_check(h, h->text_from, at);
    if (rc < 0)
        return record(h, rc);
    h->text_from = at + n;
    h->text_prev = 0;
    if (max && (uint64_t)s->req_body_bytes + n > max)
        return record(h, -REM_E_BODY_TOO_LARGE);
    if (rem_stream_req_body(s, at, n)) {
        rem_conn_pause(h->c, REM_PAUSE_UPSTREAM_FULL);
        return HPE_PAUSED;
    }
    return 0;
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

static int on_message_complete(llhttp_t *p)
{
    struct rem_h1_down *h = H1(p);
    rem_chunk_line_end(&h->chunk_line);
    /* Pipelined requests wait in the input buffer until this response is done. The request
     * ends once parse() has checked its last line (text_check). */
    rem_conn_pause(h->c, REM_PAUSE_PIPELINE);
    h->msg_done = true;
    return HPE_PAUSED;
}

static void settings_init(void)
{
    llhttp_settings_init(&down_settings);
    down_settings.on_message_begin = on_message_begin;
    down_settings.on_method = on_method;
    down_settings.on_url = on_url;
    down_settings.on_version = on_version;
    down_settings.on_version_complete = on_version_complete;
    down_settings.on_header_field = on_header_field;
    down_settings.on_header_value = on_header_value;
    down_settings.on_headers_complete = on_headers_complete;
    down_settings.on_body = on_body;
    down_settings.on_chunk_header = on_chunk_header;
    down_settings.on_chunk_complete = on_chunk_complete;
    down_settings.on_message_complete = on_message_complete;
}

static void *h1_init(struct rem_conn *c)
{
    pthread_once(&down_settings_once, settings_init);
    struct rem_h1_down *h = calloc(1, sizeof(*h));
    if (!h)
        return NULL;
    h->c = c;
    llhttp_init(&h->parser, HTTP_REQUEST, &down_settings);
    h->parser.data = h;
    return h;
}

static void h1_free(struct rem_conn *c)
{
    free(c->codec);
}

static enum rem_err map_llhttp_error(llhttp_errno_t err)
{
    switch (err) {
    case HPE_UNEXPECTED_CONTENT_LENGTH:
    case HPE_INVALID_CONTENT_LENGTH:
    case HPE_INVALID_CHUNK_SIZE:
        return REM_E_BAD_FRAMING;
    case HPE_INVALID_TRANSFER_ENCODING: /* a coding after chunked (RFC 9112 6.3) */
        return REM_E_BAD_FRAMING;
    default:
        return REM_E_BAD_REQUEST;
    }
}

static enum rem_err parse_error(struct rem_h1_down *h, llhttp_errno_t err)
{
    if (h->parse_err)
        return rem_err_from_rc(h->parse_err);
    if (err == HPE_INVALID_VERSION)
        return h->version_ok ? REM_E_BAD_REQUEST : version_error(h);
    return map_llhttp_error(err);
}

static void bad_input(struct rem_h1_down *h, enum rem_err e)
{
    if (!h->stream)
        h->stream = rem_stream_new(h->c);
    rem_log_debug("conn %s: bad request: %s", h->c->peer, rem_err_label(e));
    rem_stream_fail(h->stream, e);
}

static void parse(struct rem_h1_down *h)
{
    struct rem_conn *c = h->c;
    struct evbuffer *in = rem_conn_input(c);
    while (c->state < REM_CONN_CLOSING && !c->pause) {
        size_t n = evbuffer_get_contiguous_space(in);
        /* A pause on the last body byte leaves the message's end unparsed: an empty execute
         * completes it. */
        if (n == 0 && !h->exec_pending)
            break;
        h->exec_pending = false;
        n = rem_chunk_line_window(&h->chunk_line, n);
        bool line_open = h->chunk_line.open;
        const char *p = n ? (const char *)evbuffer_pullup(in, (ev_ssize_t)n) : "";
        h->exec_end = p + n;
        h->text_from = p;
        llhttp_errno_t err = llhttp_execute(&h->parser, p, n);
        size_t used = err == HPE_OK ? n : (size_t)(llhttp_get_error_pos(&h->parser) - p);
        if (c->state >= REM_CONN_CLOSED)
            return;
        int text_rc = h->parse_err ? 0 : text_check(h, h->text_from, p + used);
        evbuffer_drain(in, used);
        if (h->stream)
            rem_stream_count_in(h->stream, used);
        if (!rem_chunk_line_count(&h->chunk_line, line_open, used)) {
            bad_input(h, REM_E_CHUNK_LINE_TOO_LONG);
            return;
        }
        if (text_rc < 0) {
            bad_input(h, rem_err_from_rc(text_rc));
            return;
        }
        if (h->msg_done) {
            h->msg_done = false;
            h->text_prev = 0;
            if (!rem_head_names_ok(&h->stream->req_trl)) {
                bad_input(h, REM_E_BAD_REQUEST);
                return;
            }
            rem_stream_req_end(h->stream); /* no body: only marks it; rem_stream_start follows */
            if (c->state >= REM_CONN_CLOSED)
                return;
        }
        if (err == HPE_OK)
            continue;
        if (err == HPE_PAUSED) {
            llhttp_resume(&h->parser);
            h->exec_pending = used == n && (c->pause & REM_PAUSE_UPSTREAM_FULL);
            if (h->head_ready) {
                h->head_ready = false;
                rem_stream_start(h->stream);
            }
            continue;
        }
        bad_input(h, parse_error(h, err));
        return;
    }
}

/* Tunnel: the client's bytes go to the stream as they come, paused while the upconn is
 * full; its FIN follows the last of them. */
static void tunnel_forward(struct rem_h1_down *h)
{
    struct rem_conn *c = h->c;
    struct evbuffer *in = rem_conn_input(c);
    while (c->state < REM_CONN_CLOSING && !c->pause && h->stream) {
        size_t n = evbuffer_get_contiguous_space(in);
        if (n == 0)
            break;
        struct rem_stream *s = h->stream;
        const char *p = (const char *)evbuffer_pullup(in, (ev_ssize_t)n);
        rem_stream_count_in(s, n);
        bool full = rem_stream_req_body(s, p, n);
        if (c->state >= REM_CONN_CLOSED)
            return;
        evbuffer_drain(in, n);
        if (full && h->stream)
            rem_conn_pause(c, REM_PAUSE_UPSTREAM_FULL);
    }
    if (h->eof_pending && h->stream && evbuffer_get_length(in) == 0) {
        h->eof_pending = false;
        rem_stream_req_end(h->stream);
    }
}

static void h1_process(struct rem_conn *c)
{
    struct rem_h1_down *h = h1_of(c);
    if (h->tunnel)
        tunnel_forward(h);
    else
        parse(h);
    /* Whatever was consumed makes room: reading resumes below the watermark. */
    rem_conn_rearm(c);
}

static void h1_on_kick(struct rem_conn *c)
{
    if (c->state < REM_CONN_CLOSING)
        h1_process(c);
}

static void h1_on_drained(struct rem_conn *c)
{
    struct rem_h1_down *h = h1_of(c);
    if (h->stream)
        rem_stream_on_down_writable(h->stream);
}

static void h1_on_timer(struct rem_conn *c)
{
    if (c->state == REM_CONN_HEAD)
        bad_input(h1_of(c), REM_E_REQUEST_HEADER_TIMEOUT);
    else
        rem_conn_close(c); /* keep-alive idle time over */
}

static bool h1_on_eof(struct rem_conn *c)
{
    /* A complete request whose client half-closes is still answered, then the conn closes. */
    struct rem_h1_down *h = h1_of(c);
    if (h->tunnel && h->stream) {
        /* Half-close: the FIN goes on to the app once the input before it has. */
        h->eof_pending = true;
        tunnel_forward(h);
        return true;
    }
    return c->state == REM_CONN_ACTIVE && h->stream && rem_stream_on_client_eof(h->stream);
}

/* Graceful shutdown: an idle keep-alive conn closes now; a request in flight is answered with
 * Connection: close, and so is any request that begins from now on (RFC 9112 9.6). */
static int h1_drain(struct rem_conn *c)
{
    struct rem_h1_down *h = h1_of(c);
    h->draining = true;
    if (h->stream) {
        rem_stream_close_after(h->stream);
        return 0;
    }
    if (c->state == REM_CONN_IDLE && evbuffer_get_length(rem_conn_input(c)) == 0)
        rem_conn_close_after_write(c);
    return 0;
}

static void h1_abort_all(struct rem_conn *c)
{
    /* A request cut short by the client: nothing to answer it to. */
    struct rem_h1_down *h = h1_of(c);
    if (h->stream)
        rem_stream_abort(h->stream, c->abort_err);
}

static void h1_stream_done(struct rem_stream *s)
{
    struct rem_conn *c = s->conn;
    struct rem_h1_down *h = h1_of(c);
    bool close = s->down_close;
    h->stream = NULL;
    h->tunnel = false; /* its conn closes after it */
    rem_stream_free(s);
    rem_conn_stream_done(c, close);
}

/* Every downstream write goes through here so that bytes_out counts what the client gets. */
static int counted(struct rem_conn *c, struct rem_stream *s, size_t before, int rc)
{
    if (s)
        rem_stream_count_out(s, rem_conn_output_len(c) - before);
    rem_conn_flush_later(c);
    return rc;
}

static int h1_write_head(struct rem_stream *s)
{
    struct rem_conn *c = s->conn;
    const struct rem_head *q = &s->req;
    if (h1_of(c)->tunnel) {
        /* A 101 keeps the app's Upgrade (and Connection: Upgrade). An h2c app accepts an
         * extended CONNECT with a 2xx: the client gets the 101 and the Sec-WebSocket-Accept
         * of its key (RFC 6455 4.2.2). A CONNECT's 200 has no framing (RFC 9110 9.3.6). */
        bool from_h2 = s->tunnel_req == REM_TUNNEL_UPGRADE && s->resp.status != 101;
        char accept[29];
        const char *key, *up = NULL;
        size_t key_len, up_len = 0;
        if (from_h2 && (!rem_head_value(q, "sec-websocket-key", &key, &key_len) ||
                        rem_http_websocket_accept(accept, key, key_len) < 0))
            return -REM_E_NOMEM;
        if (s->tunnel_req == REM_TUNNEL_UPGRADE &&
            (from_h2 || !rem_head_value(&s->resp, "upgrade", &up, &up_len))) {
            up = s->upgrade;
            up_len = s->upgrade_len;
        }
        struct rem_fwd_response fwd = {
            .request_id = s->rid,
            .request_id_len = s->rid_len,
            .content_length = -1,
            .upgrade = up,
            .upgrade_len = up_len,
            .status = from_h2 ? 101 : 0,
            .websocket_accept = from_h2 ? accept : NULL,
        };
        struct evbuffer *out = rem_conn_output(c);
        size_t before = evbuffer_get_length(out);
        return counted(c, s, before, rem_http_write_response(out, &s->resp, &fwd));
    }
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

static int h1_write_interim(struct rem_stream *s)
{
    struct rem_conn *c = s->conn;
    struct rem_fwd_response fwd = {.content_length = -1};
    struct evbuffer *out = rem_conn_output(c);
    size_t before = evbuffer_get_length(out);
    return counted(c, s, before, rem_http_write_response(out, &s->resp, &fwd));
}

static int h1_write_body(struct rem_stream *s, const char *p, size_t n)
{
    struct rem_conn *c = s->conn;
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

static int h1_write_end(struct rem_stream *s)
{
    struct rem_conn *c = s->conn;
    if (h1_of(c)->tunnel) {
        rem_conn_shutdown_write(c); /* the app ended its side of the tunnel */
        return 0;
    }
    if (!s->down_chunked)
        return 0;
    struct evbuffer *out = rem_conn_output(c);
    size_t before = evbuffer_get_length(out);
    return counted(c, s, before, rem_http_write_last_chunk(out, &s->resp_trl));
}

static int h1_write_error(struct rem_stream *s, enum rem_err e)
{
    struct rem_conn *c = s->conn;
    struct evbuffer *out = rem_conn_output(c);
    size_t before = evbuffer_get_length(out);
    return counted(c, s, before,
                   rem_http_write_error(out, rem_err_status(e), rem_err_label(e), s->rid,
                                        s->rid_len, s->down_close, s->head_request,
                                        e == REM_E_QUEUE_FULL || e == REM_E_QUEUE_TIMEOUT));
}

static bool h1_full(struct rem_stream *s)
{
    return rem_conn_output_len(s->conn) >= rem_conn_high_watermark(s->conn);
}

static void h1_cut(struct rem_stream *s)
{
    rem_conn_reset_on_close(s->conn);
}

static void h1_req_pause(struct rem_stream *s)
{
    rem_conn_pause(s->conn, REM_PAUSE_UPSTREAM_WAIT);
}

static void h1_req_ready(struct rem_stream *s)
{
    static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
    struct rem_conn *c = s->conn;
    struct rem_h1_down *h = h1_of(c);
    if (h->tunnel) {
        /* What the client sent after its request head is the tunnel's first bytes. */
        rem_conn_resume(c, REM_PAUSE_PIPELINE | REM_PAUSE_UPSTREAM_WAIT);
        return;
    }
    if (s->req.expect_continue && !h->continue_sent && rem_conn_output_len(c) == 0 &&
        evbuffer_get_length(rem_conn_input(c)) == 0) {
        /* RFC 9110 10.1.1: only when the client is still waiting for it. */
        struct evbuffer *out = rem_conn_output(c);
        size_t before = evbuffer_get_length(out);
        (void)counted(c, s, before,
                      evbuffer_add(out, cont, sizeof(cont) - 1) < 0 ? -REM_E_NOMEM : 0);
        h->continue_sent = true;
    }
    rem_conn_resume(c, REM_PAUSE_UPSTREAM_WAIT);
}

static void h1_req_resume(struct rem_stream *s)
{
    if (s->conn->pause & REM_PAUSE_UPSTREAM_FULL)
        rem_conn_resume(s->conn, REM_PAUSE_UPSTREAM_FULL);
}

static bool h1_req_blocked(const struct rem_stream *s)
{
    return (s->conn->pause & REM_PAUSE_UPSTREAM_FULL) != 0;
}

static int h1_set_tunnel(struct rem_stream *s)
{
    struct rem_conn *c = s->conn;
    struct rem_h1_down *h = h1_of(c);
    /* An HTTP/1.1 client tunnels after a 101 to its Upgrade or a 200 to its CONNECT. An h2c
     * app's 2xx to the extended CONNECT its WebSocket handshake became is answered with the
     * 101 that handshake expects; other protocols have no such mapping. */
    const char *key;
    size_t key_len;
    if (s->tunnel_req == REM_TUNNEL_UPGRADE && s->resp.status != 101 &&
        (!rem_http_name_eq(s->upgrade, s->upgrade_len, "websocket") ||
         !rem_head_value(&s->req, "sec-websocket-key", &key, &key_len)))
        return -REM_E_UNSUPPORTED;
    h->tunnel = true;
    h->eof_pending = c->eof; /* the client may have ended its side already */
    return 0;
}

const struct rem_down_ops rem_h1_down_ops = {
    .name = "http1",
    .proto = 0,
    .init = h1_init,
    .process = h1_process,
    .on_drained = h1_on_drained,
    .on_kick = h1_on_kick,
    .on_timer = h1_on_timer,
    .on_eof = h1_on_eof,
    .drain = h1_drain,
    .abort_all = h1_abort_all,
    .free = h1_free,
    .write_head = h1_write_head,
    .write_interim = h1_write_interim,
    .write_body = h1_write_body,
    .write_end = h1_write_end,
    .write_error = h1_write_error,
    .full = h1_full,
    .cut = h1_cut,
    .req_pause = h1_req_pause,
    .req_ready = h1_req_ready,
    .req_resume = h1_req_resume,
    .req_blocked = h1_req_blocked,
    .set_tunnel = h1_set_tunnel,
    .stream_done = h1_stream_done,
};
