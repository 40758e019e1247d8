/* SPDX-License-Identifier: Apache-2.0
 * http: pure HTTP semantics shared by every codec: the parsed message head (an arena of
 * bytes plus header offsets), header classification (hop-by-hop, framing, forwarding headers,
 * RFC 9110 7.6.1 / RFC 9112 6), request-id generation and head serialization for HTTP/1.1.
 * Does no I/O and owns nothing but the head's own arena. */
#ifndef REM_HTTP_H
#define REM_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct evbuffer;

/* What a header means to the proxy; set by rem_head_classify. */
enum rem_hdr_kind {
    REM_HDR_OTHER = 0,
    REM_HDR_HOP, /* hop-by-hop: Keep-Alive, TE, Trailer, Upgrade, Proxy-Connection,
                    or named by Connection */
    REM_HDR_CONNECTION,
    REM_HDR_CONTENT_LENGTH,
    REM_HDR_TRANSFER_ENCODING,
    REM_HDR_HOST,
    REM_HDR_EXPECT,
    REM_HDR_XFF,
    REM_HDR_XFP,
    REM_HDR_REQUEST_ID,
    REM_HDR_XFCC, /* x-forwarded-client-cert: never forwarded as received (remora sets its own) */
    REM_HDR_UNDERSCORE, /* a name with '_' under REM_UNDERSCORES_DROP: never forwarded */
};

/* What becomes of a request field whose name holds '_' (limits.headers_with_underscores, Envoy's
 * headers_with_underscores_action): a CGI-style app maps '_' and '-' to the same variable, so
 * Transfer_Encoding or X_Forwarded_For could pass for the fields remora guards. */
enum rem_underscores {
    REM_UNDERSCORES_ALLOW = 0, /* forwarded as is (responses, always) */
    REM_UNDERSCORES_DROP,      /* not forwarded, counted */
    REM_UNDERSCORES_REJECT,    /* the request is refused: 400 header_underscore */
};

/* Offsets into rem_head.buf, so the arena may grow (realloc) while a head is parsed. */
struct rem_hdr {
    uint32_t name_off, name_len;
    uint32_t val_off, val_len;
    uint8_t kind; /* enum rem_hdr_kind */
};

/* Spans of the arena that the codec fills while parsing. */
enum rem_span { REM_SPAN_METHOD = 0, REM_SPAN_TARGET, REM_SPAN_REASON, REM_SPAN__COUNT };

/* A parsed request or response head. Owns buf and hdrs. */
struct rem_head {
    char *buf;
    uint32_t len, cap, max_bytes;
    struct rem_hdr *hdrs;
    uint32_t n_hdrs, cap_hdrs, max_hdrs;
    uint32_t span_off[REM_SPAN__COUNT], span_len[REM_SPAN__COUNT];
    bool in_value;       /* parser state: last appended piece was a value */
    uint8_t underscores; /* enum rem_underscores; kept by rem_head_reset, like the limits */

    /* Filled by rem_head_classify. */
    int status; /* responses */
    uint8_t http_major, http_minor;
    int64_t content_length; /* -1: none */
    bool chunked;           /* Transfer-Encoding ends in chunked */
    bool te_unsupported;    /* a transfer coding other than chunked */
    bool te_not_final;      /* Transfer-Encoding without chunked as its one, final coding */
    bool cl_conflict;       /* several Content-Length values that differ, or CL + TE */
    bool conn_close, conn_keepalive;
    bool expect_continue;
    bool expect_other; /* Expect with anything but 100-continue */
    int n_host;
    int host_idx, request_id_idx; /* -1: absent */
    uint32_t n_underscore; /* fields named with '_' (pseudo-headers never are); 0 under ALLOW */
};

/* Sets up an empty head; limits turn into REM_E_HEADER_TOO_LARGE / REM_E_TOO_MANY_HEADERS. */
void rem_head_init(struct rem_head *h, uint32_t max_bytes, uint32_t max_hdrs);
/* Empties the head for the next message, keeping its memory. */
void rem_head_reset(struct rem_head *h);
/* New limits for the head (at most the current ones when lowering a received head's). */
static inline void rem_head_set_limits(struct rem_head *h, uint32_t max_bytes, uint32_t max_hdrs)
{
    h->max_bytes = max_bytes;
    h->max_hdrs = max_hdrs;
}
/* The policy for field names with '_' (a request head or its trailers; others stay ALLOW). */
static inline void rem_head_set_underscores(struct rem_head *h, enum rem_underscores u)
{
    h->underscores = (uint8_t)u;
}
/* The HTTP version the message came with (2.0 for HTTP/2). */
static inline void rem_head_set_version(struct rem_head *h, int major, int minor)
{
    h->http_major = major;
    h->http_minor = minor;
}
/* Field i is not forwarded (e.g. cookie crumbs replaced by their join). */
static inline void rem_head_drop(struct rem_head *h, uint32_t i)
{
    h->hdrs[i].kind = REM_HDR_HOP;
}
void rem_head_dispose(struct rem_head *h);

/* Appends parser output. Pieces of one element may arrive in several calls; an empty value is
 * passed as a zero-length add_value. Return 0, -REM_E_HEADER_TOO_LARGE (arena over max_bytes),
 * -REM_E_TOO_MANY_HEADERS, -REM_E_NOMEM, or -REM_E_BAD_REQUEST (a value before any name). */
int rem_head_add_span(struct rem_head *h, enum rem_span span, const char *p, size_t n);
int rem_head_add_name(struct rem_head *h, const char *p, size_t n);
int rem_head_add_value(struct rem_head *h, const char *p, size_t n);

/* Pointers into the arena; valid until the next append. */
static inline const char *rem_head_ptr(const struct rem_head *h, uint32_t off)
{
    return h->buf + off;
}
#define REM_HDR_NAME(h, x) ((h)->buf + (x)->name_off)
#define REM_HDR_VAL(h, x) ((h)->buf + (x)->val_off)

/* Classifies every header and fills the summary fields above (framing, Connection tokens,
 * Host count, Expect, request id, names with '_' under the head's policy: REM_HDR_UNDERSCORE
 * under DROP, counted in n_underscore unless ALLOW; refusing is the caller's). Pure; call once
 * the head is complete; may be called again (n_underscore is recounted). */
void rem_head_classify(struct rem_head *h);

/* Whether every field of h has a name (RFC 9110 5.1: a token; llhttp 8 passes ": v" as an empty
 * one). Pure. */
bool rem_head_names_ok(const struct rem_head *h);

/* The value of the first field named name (case-insensitive): true with *v, *n set. */
bool rem_head_value(const struct rem_head *h, const char *name, const char **v, size_t *n);
/* Whether the first protocol of an Upgrade list (a 101's) has the name of protocol p (RFC
 * 9110 7.8: name ["/" version]; names compared without case, versions not compared). */
bool rem_http_upgrade_names(const char *list, size_t len, const char *p, size_t plen);
/* Case-insensitive search of a comma-separated token list (RFC 9110 5.6.1). */
bool rem_http_list_has(const char *list, size_t len, const char *token);
bool rem_http_name_eq(const char *a, size_t alen, const char *lit);

/* Splits an absolute-form request-target (RFC 9112 3.2.2, "scheme://authority[path][?q]")
 * into its authority and its origin-form rest (path and query; "" when both are absent).
 * Returns false for any other form, leaving the outputs untouched. */
bool rem_http_absolute_form(const char *t, size_t n, const char **auth, size_t *auth_len,
                            const char **rest, size_t *rest_len);

/* Whether a request-target is in authority-form (RFC 9112 3.2.3, CONNECT's): uri-host ":" port,
 * both non-empty and valid (rem_http_host_valid). Pure. */
bool rem_http_authority_form(const char *t, size_t n);

/* Whether a Host value is syntactically valid (RFC 9110 7.2: uri-host [ ":" port ]). Empty is
 * valid. */
bool rem_http_host_valid(const char *v, size_t n);

/* Whether two authorities (uri-host [ ":" port ], RFC 3986 3.2) name the same entity
 * (RFC 9113 8.3.1): hosts compared case-insensitively, ports numerically, a missing port
 * standing for default_port (443 for https, 80 for http; 0: none, then both must be missing or
 * equal). Pure; an invalid authority never equals anything (checked with rem_http_host_valid). */
bool rem_http_authority_eq(const char *a, size_t alen, const char *b, size_t blen,
                           unsigned default_port);

/* Whether a response to `method` with `status` carries a body (RFC 9110 6.4.1). */
bool rem_http_response_has_body(bool head_request, int status);

/* A Sec-WebSocket-Key (RFC 6455 4.1: 16 random bytes, base64; 24 chars + NUL) from a
 * per-worker xorshift state. */
void rem_http_websocket_key(char out[25], uint64_t *state);
/* The Sec-WebSocket-Accept answering key (RFC 6455 4.2.2: base64 of the SHA-1 of the key and
 * the protocol's GUID; 28 chars + NUL). Returns 0. */
int rem_http_websocket_accept(char out[29], const char *key, size_t key_len);
/* A UUID v4 string (36 chars + NUL) from a per-worker xorshift state. */
void rem_http_request_id(char out[37], uint64_t *state);

/* What rem_http_write_request adds to the forwarded head. */
struct rem_fwd_request {
    const char *client_addr; /* appended to X-Forwarded-For */
    const char *proto;       /* appended to X-Forwarded-Proto: "http" */
    const char *request_id;  /* added as X-Request-Id when the head has none */
    const char *xfcc; /* X-Forwarded-Client-Cert (the client's own never goes on); NULL: none */
    const char *default_host; /* Host for HTTP/1.0 requests that sent none */
    bool chunked;             /* body framing toward upstream */
    int64_t content_length;   /* -1: none */
    /* A tunnel request (RFC 9110 7.8): "Upgrade: <upgrade>" and "Connection: Upgrade" are
     * written (the client's own are hop-by-hop); NULL: none. */
    const char *upgrade;
    size_t upgrade_len;
    const char *method;        /* replaces the request's method (h2 extended CONNECT -> GET) */
    const char *websocket_key; /* Sec-WebSocket-Key to add (an h2 client sends none) */
};

/* Serializes an HTTP/1.1 request head (request line, end-to-end headers, the forwarding
 * headers, framing) and appends it to out. Returns 0 or -REM_E_NOMEM. */
int rem_http_write_request(struct evbuffer *out, const struct rem_head *req,
                           const struct rem_fwd_request *fwd);

struct rem_fwd_response {
    const char *request_id; /* added as X-Request-Id when the head has none */
    size_t request_id_len;
    bool chunked;           /* Transfer-Encoding: chunked toward downstream */
    int64_t content_length; /* -1: none written */
    bool conn_close;        /* Connection: close */
    bool conn_keepalive;    /* Connection: keep-alive (HTTP/1.0 clients) */
    /* A 101 switching to this protocol: "Upgrade" and "Connection: Upgrade" are written, no
     * framing; NULL: none. */
    const char *upgrade;
    size_t upgrade_len;
    int status;                   /* replaces resp's status when not 0 (an h2 app's 200 -> 101) */
    const char *websocket_accept; /* Sec-WebSocket-Accept to add (an h2 app sends none) */
};

/* Serializes an HTTP/1.1 status line and end-to-end headers of resp. */
int rem_http_write_response(struct evbuffer *out, const struct rem_head *resp,
                            const struct rem_fwd_response *fwd);

/* The Allow of remora's 405 (connect_disabled: every method but CONNECT; RFC 9110 15.5.6). */
#define REM_HTTP_ALLOW_BUT_CONNECT "GET, HEAD, POST, PUT, DELETE, OPTIONS, TRACE, PATCH"
/* Serializes remora's own error response: status, x-remora-error, a short text body. */
int rem_http_write_error(struct evbuffer *out, int status, const char *reason,
                         const char *request_id, size_t request_id_len, bool conn_close,
                         bool head_request, bool retry_after);

const char *rem_http_reason(int status);

/* Appends a chunk-size line ("1f4\r\n", RFC 9112 7.1) for n bytes. 0 or -REM_E_NOMEM. */
int rem_http_chunk_header(struct evbuffer *out, size_t n);
/* Appends the last chunk, the end-to-end fields of trl (classified here) and the final CRLF
 * (RFC 9112 7.1.2), for either direction. Returns 0 or -REM_E_NOMEM. */
int rem_http_write_last_chunk(struct evbuffer *out, struct rem_head *trl);

/* The bound on one chunk-size line received in either direction: size, extensions and CRLF
 * (RFC 9112 7.1). HAProxy's is the same; extensions carry nothing remora uses. */
#define REM_CHUNK_LINE_MAX 4096
/* Counts a chunked body's chunk-size line while llhttp parses it. The codec pauses its parser
 * where a line begins (end of the head, end of a chunk) and where it ends (on_chunk_header),
 * so that every byte one llhttp_execute consumes while the line is open belongs to it. */
struct rem_chunk_line {
    bool open;      /* a line is being parsed */
    bool last;      /* the last chunk's line was parsed: trailers follow, bounded as a head */
    uint32_t bytes; /* of it so far */
};
/* A line begins: at the end of a chunked head. */
static inline void rem_chunk_line_begin(struct rem_chunk_line *l)
{
    l->open = true;
    l->last = false;
    l->bytes = 0;
}
/* No line is open (the message ended, or a new one begins). */
static inline void rem_chunk_line_end(struct rem_chunk_line *l)
{
    l->open = l->last = false;
}
/* on_chunk_header: the line ended; last for the zero-size chunk. The codec pauses its parser
 * here. */
static inline void rem_chunk_line_parsed(struct rem_chunk_line *l, bool last)
{
    l->open = false;
    l->last = last;
}
/* on_chunk_complete: whether a next line begins (then the codec pauses its parser), false
 * after the last chunk. */
static inline bool rem_chunk_line_next(struct rem_chunk_line *l)
{
    if (l->last)
        return false;
    rem_chunk_line_begin(l);
    return true;
}
/* How many of the n bytes at hand the parser may take: while a line is open, at most one
 * past the bound, so an endless line is refused after REM_CHUNK_LINE_MAX + 1 bytes. */
static inline size_t rem_chunk_line_window(const struct rem_chunk_line *l, size_t n)
{
    size_t room = REM_CHUNK_LINE_MAX + 1 - (size_t)l->bytes;
    return l->open && n > room ? room : n;
}
/* Counts used bytes consumed by one execute that began with the line open (was_open).
 * Returns false when the line is over REM_CHUNK_LINE_MAX. */
static inline bool rem_chunk_line_count(struct rem_chunk_line *l, bool was_open, size_t used)
{
    if (!was_open)
        return true;
    l->bytes += (uint32_t)used;
    return l->bytes <= REM_CHUNK_LINE_MAX;
}

#endif
