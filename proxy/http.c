/* SPDX-License-Identifier: Apache-2.0
 * http: head arena, header classification and HTTP/1.1 head serialization. Pure functions
 * over struct rem_head; the codecs (h1_down, h1_up) feed it and decide what to do. */
#include <ctype.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/buffer.h>

#include "error.h"
#include "http.h"
#include "sha1.h"

void rem_head_init(struct rem_head *h, uint32_t max_bytes, uint32_t max_hdrs)
{
    memset(h, 0, sizeof(*h));
    h->max_bytes = max_bytes;
    h->max_hdrs = max_hdrs;
    rem_head_reset(h);
}

void rem_head_reset(struct rem_head *h)
{
    h->len = 0;
    h->n_hdrs = 0;
    memset(h->span_off, 0, sizeof(h->span_off));
    memset(h->span_len, 0, sizeof(h->span_len));
    h->in_value = false;
    h->status = 0;
    h->http_major = 1;
    h->http_minor = 1;
    h->content_length = -1;
    h->chunked = h->te_unsupported = h->te_not_final = h->cl_conflict = false;
    h->conn_close = h->conn_keepalive = false;
    h->expect_continue = h->expect_other = false;
    h->n_host = 0;
    h->host_idx = h->request_id_idx = -1;
    h->n_underscore = 0;
}

void rem_head_dispose(struct rem_head *h)
{
    free(h->buf);
    free(h->hdrs);
    h->buf = NULL;
    h->hdrs = NULL;
    h->cap = h->cap_hdrs = 0;
}

static int arena_append(struct rem_head *h, const char *p, size_t n)
{
    if (n == 0) /* an empty span (a trailer with an empty name): nothing to copy, and the arena
                   may not exist yet (memcpy from or to NULL is undefined even for 0 bytes) */
        return 0;
    if ((uint64_t)h->len + n > h->max_bytes)
        return -REM_E_HEADER_TOO_LARGE;
    if (h->len + n > h->cap) {
        uint32_t cap = h->cap ? h->cap : 1024;
        while (cap < h->len + n)
            cap *= 2;
        if (cap > h->max_bytes)
            cap = h->max_bytes;
        char *nb = realloc(h->buf, cap);
        if (!nb)
            return -REM_E_NOMEM;
        h->buf = nb;
        h->cap = cap;
    }
    memcpy(h->buf + h->len, p, n);
    h->len += (uint32_t)n;
    return 0;
}

int rem_head_add_span(struct rem_head *h, enum rem_span span, const char *p, size_t n)
{
    if (h->span_len[span] == 0)
        h->span_off[span] = h->len;
    else
        REM_BUG_ON(h->span_off[span] + h->span_len[span] != h->len);
    int rc = arena_append(h, p, n);
    if (rc == 0)
        h->span_len[span] += (uint32_t)n;
    return rc;
}

int rem_head_add_name(struct rem_head *h, const char *p, size_t n)
{
    struct rem_hdr *x;
    if (h->n_hdrs == 0 || h->in_value) {
        /* A new field starts. */
        if (h->n_hdrs >= h->max_hdrs)
            return -REM_E_TOO_MANY_HEADERS;
        if ((uint64_t)h->len + n > h->max_bytes)
            return -REM_E_HEADER_TOO_LARGE;
        if (h->n_hdrs == h->cap_hdrs) {
            uint32_t cap = h->cap_hdrs ? h->cap_hdrs * 2 : 16;
            struct rem_hdr *nh = realloc(h->hdrs, cap * sizeof(*nh));
            if (!nh)
                return -REM_E_NOMEM;
            h->hdrs = nh;
            h->cap_hdrs = cap;
        }
        x = &h->hdrs[h->n_hdrs++];
        memset(x, 0, sizeof(*x));
        x->name_off = h->len;
        h->in_value = false;
    }
    x = &h->hdrs[h->n_hdrs - 1];
    int rc = arena_append(h, p, n);
    if (rc == 0)
        x->name_len += (uint32_t)n;
    return rc;
}

int rem_head_add_value(struct rem_head *h, const char *p, size_t n)
{
    if (h->n_hdrs == 0)
        return -REM_E_BAD_REQUEST;
    struct rem_hdr *x = &h->hdrs[h->n_hdrs - 1];
    if (!h->in_value) {
        x->val_off = h->len;
        x->val_len = 0;
        h->in_value = true;
    }
    int rc = arena_append(h, p, n);
    if (rc == 0)
        x->val_len += (uint32_t)n;
    return rc;
}

bool rem_http_name_eq(const char *a, size_t alen, const char *lit)
{
    size_t n = strlen(lit);
    return alen == n && strncasecmp(a, lit, n) == 0;
}

static bool is_ows(char c)
{
    return c == ' ' || c == '\t';
}

/* Calls fn for each non-empty element of a comma-separated list, trimmed of OWS. */
#define REM_FOREACH_TOKEN(list, len, tok, tlen, body)                                              \
    do {                                                                                           \
        size_t i_ = 0;                                                                             \
        while (i_ < (len)) {                                                                       \
            while (i_ < (len) && (is_ows((list)[i_]) || (list)[i_] == ','))                        \
                i_++;                                                                              \
            size_t s_ = i_;                                                                        \
            while (i_ < (len) && (list)[i_] != ',')                                                \
                i_++;                                                                              \
            size_t e_ = i_;                                                                        \
            while (e_ > s_ && is_ows((list)[e_ - 1]))                                              \
                e_--;                                                                              \
            if (e_ > s_) {                                                                         \
                const char *tok = (list) + s_;                                                     \
                size_t tlen = e_ - s_;                                                             \
                body                                                                               \
            }                                                                                      \
        }                                                                                          \
    } while (0)

bool rem_head_names_ok(const struct rem_head *h)
{
    for (uint32_t i = 0; i < h->n_hdrs; i++)
        if (h->hdrs[i].name_len == 0)
            return false;
    return true;
}

bool rem_head_value(const struct rem_head *h, const char *name, const char **v, size_t *n)
{
    for (uint32_t i = 0; i < h->n_hdrs; i++) {
        const struct rem_hdr *x = &h->hdrs[i];
        if (rem_http_name_eq(REM_HDR_NAME(h, x), x->name_len, name)) {
            *v = REM_HDR_VAL(h, x);
            *n = x->val_len;
            return true;
        }
    }
    return false;
}

/* The name of a protocol token: up to "/", without surrounding whitespace. */
static size_t protocol_name(const char **p, size_t n)
{
    while (n && is_ows(**p)) {
        (*p)++;
        n--;
    }
    size_t k = 0;
    while (k < n && (*p)[k] != '/' && (*p)[k] != ',' && !is_ows((*p)[k]))
        k++;
    return k;
}

bool rem_http_upgrade_names(const char *list, size_t len, const char *p, size_t plen)
{
    size_t a = protocol_name(&list, len), b = protocol_name(&p, plen);
    return a && a == b && strncasecmp(list, p, a) == 0;
}

bool rem_http_list_has(const char *list, size_t len, const char *token)
{
    REM_FOREACH_TOKEN(list, len, t, tl, {
        if (rem_http_name_eq(t, tl, token))
            return true;
    });
    return false;
}

static bool parse_cl(const char *p, size_t n, int64_t *out)
{
    uint64_t v = 0;
    if (n == 0 || n > 18)
        return false;
    for (size_t i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9')
            return false;
        v = v * 10 + (uint64_t)(p[i] - '0');
    }
    *out = (int64_t)v;
    return true;
}

static enum rem_hdr_kind kind_of(const char *n, size_t len)
{
    switch (len) {
    case 2:
        return rem_http_name_eq(n, len, "te") ? REM_HDR_HOP : REM_HDR_OTHER;
    case 4:
        return rem_http_name_eq(n, len, "host") ? REM_HDR_HOST : REM_HDR_OTHER;
    case 6:
        return rem_http_name_eq(n, len, "expect") ? REM_HDR_EXPECT : REM_HDR_OTHER;
    case 7:
        if (rem_http_name_eq(n, len, "trailer") || rem_http_name_eq(n, len, "upgrade"))
            return REM_HDR_HOP;
        return REM_HDR_OTHER;
    case 10:
        if (rem_http_name_eq(n, len, "connection"))
            return REM_HDR_CONNECTION;
        if (rem_http_name_eq(n, len, "keep-alive"))
            return REM_HDR_HOP;
        return REM_HDR_OTHER;
    case 12:
        return rem_http_name_eq(n, len, "x-request-id") ? REM_HDR_REQUEST_ID : REM_HDR_OTHER;
    case 14:
        return rem_http_name_eq(n, len, "content-length") ? REM_HDR_CONTENT_LENGTH : REM_HDR_OTHER;
    case 15:
        return rem_http_name_eq(n, len, "x-forwarded-for") ? REM_HDR_XFF : REM_HDR_OTHER;
    case 16:
        return rem_http_name_eq(n, len, "proxy-connection") ? REM_HDR_HOP : REM_HDR_OTHER;
    case 23:
        return rem_http_name_eq(n, len, "x-forwarded-client-cert") ? REM_HDR_XFCC : REM_HDR_OTHER;
    case 17:
        if (rem_http_name_eq(n, len, "transfer-encoding"))
            return REM_HDR_TRANSFER_ENCODING;
        if (rem_http_name_eq(n, len, "x-forwarded-proto"))
            return REM_HDR_XFP;
        return REM_HDR_OTHER;
    default:
        return REM_HDR_OTHER;
    }
}

/* Whether a field name holds '_'. A pseudo-header (":path", RFC 9113 8.3) is never one: the
 * codecs keep them out of the field list, and a leading ':' is skipped here all the same. */
static bool underscore_name(const char *n, size_t len)
{
    return len && n[0] != ':' && memchr(n, '_', len) != NULL;
}

void rem_head_classify(struct rem_head *h)
{
    bool have_cl = false, have_te = false, last_chunked = false;
    h->n_underscore = 0;
    for (uint32_t i = 0; i < h->n_hdrs; i++) {
        struct rem_hdr *x = &h->hdrs[i];
        const char *v = REM_HDR_VAL(h, x);
        x->kind = (uint8_t)kind_of(REM_HDR_NAME(h, x), x->name_len);
        /* No name kind_of knows holds '_', so marking after it changes no framing decision. */
        if (h->underscores != REM_UNDERSCORES_ALLOW &&
            underscore_name(REM_HDR_NAME(h, x), x->name_len)) {
            h->n_underscore++;
            if (h->underscores == REM_UNDERSCORES_DROP)
                x->kind = REM_HDR_UNDERSCORE;
        }
        switch (x->kind) {
        case REM_HDR_CONTENT_LENGTH: {
            /* RFC 9112 6.3: a list of identical values may be folded; differing ones are an
             * unrecoverable framing error. */
            int64_t cl = -1;
            bool ok = true;
            REM_FOREACH_TOKEN(v, x->val_len, t, tl, {
                int64_t one;
                if (!parse_cl(t, tl, &one) || (cl >= 0 && one != cl))
                    ok = false;
                else
                    cl = one;
            });
            if (!ok || cl < 0 || (have_cl && cl != h->content_length))
                h->cl_conflict = true;
            h->content_length = cl;
            have_cl = true;
            break;
        }
        case REM_HDR_TRANSFER_ENCODING: {
            /* RFC 9112 6.1: only chunked is understood; it must be the final coding, applied
             * once. Several field lines form one list (RFC 9110 5.3). */
            have_te = true;
            REM_FOREACH_TOKEN(v, x->val_len, t, tl, {
                if (rem_http_name_eq(t, tl, "chunked")) {
                    if (last_chunked)
                        h->te_unsupported = h->te_not_final = true; /* chunked twice */
                    last_chunked = true;
                } else {
                    h->te_unsupported = true;
                    last_chunked = false;
                }
            });
            if (x->val_len == 0)
                h->te_unsupported = h->te_not_final = true;
            break;
        }
        case REM_HDR_CONNECTION:
            if (rem_http_list_has(v, x->val_len, "close"))
                h->conn_close = true;
            if (rem_http_list_has(v, x->val_len, "keep-alive"))
                h->conn_keepalive = true;
            break;
        case REM_HDR_HOST:
            h->n_host++;
            h->host_idx = (int)i;
            break;
        case REM_HDR_EXPECT:
            if (rem_http_name_eq(v, x->val_len, "100-continue"))
                h->expect_continue = true;
            else
                h->expect_other = true;
            break;
        case REM_HDR_REQUEST_ID:
            if (h->request_id_idx < 0)
                h->request_id_idx = (int)i;
            break;
        default:
            break;
        }
    }
    h->chunked = have_te && last_chunked && !h->te_unsupported;
    if (have_te && !last_chunked)
        h->te_not_final = true;
    if (have_cl && have_te)
        h->cl_conflict = true;
    if (have_te)
        h->content_length = -1;
    /* RFC 9110 7.6.1: headers named by Connection are hop-by-hop too. */
    for (uint32_t i = 0; i < h->n_hdrs; i++) {
        struct rem_hdr *c = &h->hdrs[i];
        if (c->kind != REM_HDR_CONNECTION)
            continue;
        REM_FOREACH_TOKEN(REM_HDR_VAL(h, c), c->val_len, t, tl, {
            for (uint32_t j = 0; j < h->n_hdrs; j++) {
                struct rem_hdr *x = &h->hdrs[j];
                if (x->kind == REM_HDR_OTHER && x->name_len == tl &&
                    strncasecmp(REM_HDR_NAME(h, x), t, tl) == 0)
                    x->kind = REM_HDR_HOP;
            }
        });
    }
}

bool rem_http_absolute_form(const char *t, size_t n, const char **auth, size_t *auth_len,
                            const char **rest, size_t *rest_len)
{
    if (n == 0 || t[0] == '/' || t[0] == '*')
        return false;
    const char *end = t + n;
    const char *sep = memchr(t, ':', n);
    if (!sep || end - sep < 3 || sep[1] != '/' || sep[2] != '/' || sep == t)
        return false;
    /* RFC 3986 3.2: the authority ends at the first '/', '?' or '#'. */
    const char *a = sep + 3, *e = a;
    while (e < end && *e != '/' && *e != '?' && *e != '#')
        e++;
    *auth = a;
    *auth_len = (size_t)(e - a);
    *rest = e;
    *rest_len = (size_t)(end - e);
    return true;
}

bool rem_http_host_valid(const char *v, size_t n)
{
    size_t i = 0;
    if (n && v[0] == '[') {
        /* IP-literal: hex digits, ':' and '.' inside brackets. */
        for (i = 1; i < n && v[i] != ']'; i++)
            if (!(isxdigit((unsigned char)v[i]) || v[i] == ':' || v[i] == '.'))
                return false;
        if (i == n)
            return false;
        i++;
    } else {
        /* reg-name: unreserved / pct-encoded / sub-delims (RFC 3986 3.2.2). */
        for (; i < n && v[i] != ':'; i++) {
            unsigned char c = (unsigned char)v[i];
            if (!(isalnum(c) || strchr("-._~%!$&'()*+,;=", c)))
                return false;
        }
    }
    if (i < n) {
        if (v[i] != ':')
            return false;
        for (i++; i < n; i++)
            if (!isdigit((unsigned char)v[i]))
                return false;
    }
    return true;
}

bool rem_http_authority_form(const char *t, size_t n)
{
    if (n == 0 || !rem_http_host_valid(t, n))
        return false;
    const char *e = memchr(t, t[0] == '[' ? ']' : ':', n);
    if (!e)
        return false;
    size_t i = (size_t)(e - t) + (t[0] == '[');
    /* a host ("[]" is none), then ':' and at least one digit */
    return i > (t[0] == '[' ? 2u : 0u) && i + 1 < n && t[i] == ':';
}

/* Splits a valid authority into its host and its port (default_port when there is none;
 * UINT32_MAX when it is out of range). */
static void split_authority(const char *v, size_t n, unsigned default_port, size_t *host_len,
                            uint32_t *port)
{
    size_t i = 0;
    if (n && v[0] == '[') {
        while (i < n && v[i] != ']')
            i++;
        i++; /* past ']' (rem_http_host_valid checked it is there) */
    } else {
        while (i < n && v[i] != ':')
            i++;
    }
    *host_len = i;
    *port = default_port;
    if (i < n) {
        uint64_t p = 0;
        for (i++; i < n && p <= 65535; i++)
            p = p * 10 + (uint64_t)(v[i] - '0');
        if (i > *host_len + 1) /* an empty port is the default (RFC 3986 3.2.3) */
            *port = p <= 65535 ? (uint32_t)p : UINT32_MAX;
    }
}

bool rem_http_authority_eq(const char *a, size_t alen, const char *b, size_t blen,
                           unsigned default_port)
{
    size_t ah, bh;
    uint32_t ap, bp;
    if (!rem_http_host_valid(a, alen) || !rem_http_host_valid(b, blen))
        return false;
    split_authority(a, alen, default_port, &ah, &ap);
    split_authority(b, blen, default_port, &bh, &bp);
    return ah == bh && ap == bp && ap != UINT32_MAX && strncasecmp(a, b, ah) == 0;
}

bool rem_http_response_has_body(bool head_request, int status)
{
    if (head_request)
        return false;
    if (status < 200 || status == 204 || status == 304)
        return false;
    return true;
}

/* 16 bytes from the xorshift state. */
static void random16(uint8_t b[16], uint64_t *state)
{
    for (int k = 0; k < 2; k++) {
        uint64_t x = *state;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *state = x;
        memcpy(b + 8 * (size_t)k, &x, 8);
    }
}

/* Base64 (RFC 4648 4) of n bytes into out (4 * ceil(n / 3) characters + NUL). */
static void base64(char *out, const uint8_t *b, size_t n)
{
    static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char *o = out;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)b[i] << 16;
        if (i + 1 < n)
            v |= (uint32_t)b[i + 1] << 8;
        if (i + 2 < n)
            v |= b[i + 2];
        *o++ = b64[v >> 18 & 63];
        *o++ = b64[v >> 12 & 63];
        *o++ = i + 1 < n ? b64[v >> 6 & 63] : '=';
        *o++ = i + 2 < n ? b64[v & 63] : '=';
    }
    *o = '\0';
}

void rem_http_websocket_key(char out[25], uint64_t *state)
{
    uint8_t b[16];
    random16(b, state);
    base64(out, b, sizeof(b));
}

int rem_http_websocket_accept(char out[29], const char *key, size_t key_len)
{
    static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    struct rem_sha1 c;
    uint8_t md[20];
    rem_sha1_init(&c);
    rem_sha1_update(&c, key, key_len);
    rem_sha1_update(&c, guid, sizeof(guid) - 1);
    rem_sha1_final(&c, md);
    base64(out, md, sizeof(md));
    return 0;
}

void rem_http_request_id(char out[37], uint64_t *state)
{
    static const char hex[] = "0123456789abcdef";
    uint8_t b[16];
    random16(b, state);
    b[6] = (uint8_t)((b[6] & 0x0f) | 0x40); /* version 4 */
    b[8] = (uint8_t)((b[8] & 0x3f) | 0x80); /* variant 10 */
    char *o = out;
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            *o++ = '-';
        *o++ = hex[b[i] >> 4];
        *o++ = hex[b[i] & 15];
    }
    *o = '\0';
}

/* ---- serialization ------------------------------------------------------------------------ */

/* Decimal digits of v at the end of buf[24]; returns the start. No printf on the hot path. */
static char *fmt_u64(char buf[24], uint64_t v)
{
    char *p = buf + 24;
    do {
        *--p = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    return p;
}

int rem_http_chunk_header(struct evbuffer *out, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    char buf[20], *p = buf + sizeof(buf);
    *--p = '\n';
    *--p = '\r';
    do {
        *--p = hex[n & 15];
        n >>= 4;
    } while (n);
    return evbuffer_add(out, p, (size_t)(buf + sizeof(buf) - p)) < 0 ? -REM_E_NOMEM : 0;
}

struct wbuf {
    char *p;
    size_t len, cap;
};

static void w_put(struct wbuf *w, const char *s, size_t n)
{
    REM_BUG_ON(w->len + n > w->cap);
    memcpy(w->p + w->len, s, n);
    w->len += n;
}

static void w_str(struct wbuf *w, const char *s)
{
    w_put(w, s, strlen(s));
}

static void w_hdr(struct wbuf *w, const struct rem_head *h, const struct rem_hdr *x)
{
    w_put(w, REM_HDR_NAME(h, x), x->name_len);
    w_put(w, ": ", 2);
    w_put(w, REM_HDR_VAL(h, x), x->val_len);
    w_put(w, "\r\n", 2);
}

/* "name: value" (value of n bytes) and CRLF. */
static void w_field(struct wbuf *w, const char *name, const char *v, size_t n)
{
    w_str(w, name);
    w_put(w, ": ", 2);
    w_put(w, v, n);
    w_put(w, "\r\n", 2);
}

/* The two fields of a protocol switch (RFC 9110 7.8). */
static void w_upgrade(struct wbuf *w, const char *proto, size_t n)
{
    w_field(w, "Upgrade", proto, n);
    w_str(w, "Connection: Upgrade\r\n");
}

/* Joins every value of headers of `kind` and appends extra: "a, b, extra". */
/* The values of every `kind` field joined with ", ", then extra, as one `name` field. An empty
 * extra (a client on a Unix socket has no address) appends nothing, and with no such field in
 * the request no field is written. */
static void w_joined(struct wbuf *w, const struct rem_head *h, enum rem_hdr_kind kind,
                     const char *name, const char *extra)
{
    bool any = false;
    for (uint32_t i = 0; i < h->n_hdrs; i++) {
        const struct rem_hdr *x = &h->hdrs[i];
        if (x->kind != kind || x->val_len == 0)
            continue;
        if (any)
            w_put(w, ", ", 2);
        else
            w_str(w, name), w_put(w, ": ", 2);
        w_put(w, REM_HDR_VAL(h, x), x->val_len);
        any = true;
    }
    if (*extra) {
        if (any)
            w_put(w, ", ", 2);
        else
            w_str(w, name), w_put(w, ": ", 2);
        w_str(w, extra);
        any = true;
    }
    if (any)
        w_put(w, "\r\n", 2);
}

static int w_begin(struct evbuffer *out, struct wbuf *w, struct evbuffer_iovec *iov, size_t need)
{
    if (evbuffer_reserve_space(out, (ev_ssize_t)need, iov, 1) < 1)
        return -REM_E_NOMEM;
    w->p = iov->iov_base;
    w->len = 0;
    w->cap = need;
    return 0;
}

static int w_commit(struct evbuffer *out, struct wbuf *w, struct evbuffer_iovec *iov)
{
    iov->iov_len = w->len;
    return evbuffer_commit_space(out, iov, 1) == 0 ? 0 : -REM_E_NOMEM;
}

int rem_http_write_request(struct evbuffer *out, const struct rem_head *req,
                           const struct rem_fwd_request *fwd)
{
    struct wbuf w;
    struct evbuffer_iovec iov;
    size_t need = req->len + 8 * (size_t)req->n_hdrs + 256 + strlen(fwd->client_addr) +
                  strlen(fwd->proto) + (fwd->default_host ? strlen(fwd->default_host) : 0) +
                  (fwd->xfcc ? strlen(fwd->xfcc) + 32 : 0);
    need += fwd->upgrade_len + 64 + (fwd->websocket_key ? strlen(fwd->websocket_key) + 24 : 0);
    int rc = w_begin(out, &w, &iov, need);
    if (rc < 0)
        return rc;

    const char *target = rem_head_ptr(req, req->span_off[REM_SPAN_TARGET]);
    size_t target_len = req->span_len[REM_SPAN_TARGET];
    const char *auth = NULL, *rest;
    size_t auth_len = 0, rest_len;
    /* RFC 9112 3.2.2: absolute-form goes on in origin-form, with Host from its authority. */
    bool absolute = rem_http_absolute_form(target, target_len, &auth, &auth_len, &rest, &rest_len);
    if (fwd->method)
        w_str(&w, fwd->method);
    else
        w_put(&w, rem_head_ptr(req, req->span_off[REM_SPAN_METHOD]),
              req->span_len[REM_SPAN_METHOD]);
    w_put(&w, " ", 1);
    if (absolute) {
        if (rest_len == 0 || rest[0] != '/')
            w_put(&w, "/", 1);
        w_put(&w, rest, rest_len);
    } else {
        w_put(&w, target, target_len);
    }
    w_str(&w, " HTTP/1.1\r\n");
    if (absolute) {
        w_str(&w, "Host: ");
        w_put(&w, auth, auth_len);
        w_put(&w, "\r\n", 2);
    }
    for (uint32_t i = 0; i < req->n_hdrs; i++) {
        const struct rem_hdr *x = &req->hdrs[i];
        switch (x->kind) {
        case REM_HDR_HOST:
            if (!absolute)
                w_hdr(&w, req, x);
            break;
        case REM_HDR_OTHER:
        case REM_HDR_REQUEST_ID:
            w_hdr(&w, req, x);
            break;
        case REM_HDR_EXPECT:
            /* remora answers 100-continue itself (RFC 9110 10.1.1); other expectations go on. */
            if (!rem_http_name_eq(REM_HDR_VAL(req, x), x->val_len, "100-continue"))
                w_hdr(&w, req, x);
            break;
        default:
            break;
        }
    }
    if (req->n_host == 0 && !absolute && fwd->default_host) {
        w_str(&w, "Host: ");
        w_str(&w, fwd->default_host);
        w_str(&w, "\r\n");
    }
    w_joined(&w, req, REM_HDR_XFF, "X-Forwarded-For", fwd->client_addr);
    w_joined(&w, req, REM_HDR_XFP, "X-Forwarded-Proto", fwd->proto);
    if (req->request_id_idx < 0 && fwd->request_id)
        w_field(&w, "X-Request-Id", fwd->request_id, strlen(fwd->request_id));
    if (fwd->xfcc)
        w_field(&w, "X-Forwarded-Client-Cert", fwd->xfcc, strlen(fwd->xfcc));
    if (fwd->upgrade)
        w_upgrade(&w, fwd->upgrade, fwd->upgrade_len);
    if (fwd->websocket_key)
        w_field(&w, "Sec-WebSocket-Key", fwd->websocket_key, strlen(fwd->websocket_key));
    if (fwd->chunked) {
        w_str(&w, "Transfer-Encoding: chunked\r\n");
    } else if (fwd->content_length >= 0) {
        char b[24], *d = fmt_u64(b, (uint64_t)fwd->content_length);
        w_str(&w, "Content-Length: ");
        w_put(&w, d, (size_t)(b + sizeof(b) - d));
        w_put(&w, "\r\n", 2);
    }
    w_put(&w, "\r\n", 2);
    return w_commit(out, &w, &iov);
}

int rem_http_write_response(struct evbuffer *out, const struct rem_head *resp,
                            const struct rem_fwd_response *fwd)
{
    struct wbuf w;
    struct evbuffer_iovec iov;
    size_t need =
        resp->len + 8 * (size_t)resp->n_hdrs + 256 + fwd->request_id_len + fwd->upgrade_len + 64;
    int rc = w_begin(out, &w, &iov, need);
    if (rc < 0)
        return rc;

    char line[16] = "HTTP/1.1 000 ";
    int status = fwd->status ? fwd->status : resp->status;
    int st = status > 0 && status < 1000 ? status : 0;
    line[9] = (char)('0' + st / 100);
    line[10] = (char)('0' + st / 10 % 10);
    line[11] = (char)('0' + st % 10);
    w_put(&w, line, 13);
    if (resp->span_len[REM_SPAN_REASON] && !fwd->status)
        w_put(&w, rem_head_ptr(resp, resp->span_off[REM_SPAN_REASON]),
              resp->span_len[REM_SPAN_REASON]);
    else
        w_str(&w, rem_http_reason(status));
    w_put(&w, "\r\n", 2);
    for (uint32_t i = 0; i < resp->n_hdrs; i++) {
        const struct rem_hdr *x = &resp->hdrs[i];
        switch (x->kind) {
        case REM_HDR_HOP:
        case REM_HDR_CONNECTION:
        case REM_HDR_CONTENT_LENGTH:
        case REM_HDR_TRANSFER_ENCODING:
            break;
        default:
            w_hdr(&w, resp, x);
            break;
        }
    }
    if (resp->request_id_idx < 0 && fwd->request_id)
        w_field(&w, "X-Request-Id", fwd->request_id, fwd->request_id_len);
    if (fwd->websocket_accept)
        w_field(&w, "Sec-WebSocket-Accept", fwd->websocket_accept, strlen(fwd->websocket_accept));
    if (fwd->upgrade) {
        w_upgrade(&w, fwd->upgrade, fwd->upgrade_len);
    } else if (fwd->chunked) {
        w_str(&w, "Transfer-Encoding: chunked\r\n");
    } else if (fwd->content_length >= 0) {
        char b[24], *d = fmt_u64(b, (uint64_t)fwd->content_length);
        w_str(&w, "Content-Length: ");
        w_put(&w, d, (size_t)(b + sizeof(b) - d));
        w_put(&w, "\r\n", 2);
    }
    if (fwd->upgrade)
        ; /* the connection is the tunnel now */
    else if (fwd->conn_close)
        w_str(&w, "Connection: close\r\n");
    else if (fwd->conn_keepalive)
        w_str(&w, "Connection: keep-alive\r\n");
    w_put(&w, "\r\n", 2);
    return w_commit(out, &w, &iov);
}

int rem_http_write_error(struct evbuffer *out, int status, const char *reason,
                         const char *request_id, size_t request_id_len, bool conn_close,
                         bool head_request, bool retry_after)
{
    char body[160];
    int blen = snprintf(body, sizeof(body), "remora: %d %s (%s)\n", status, rem_http_reason(status),
                        reason);
    if (blen < 0 || (size_t)blen >= sizeof(body))
        blen = (int)sizeof(body) - 1;
    int rc = evbuffer_add_printf(out,
                                 "HTTP/1.1 %03d %s\r\n"
                                 "Content-Type: text/plain\r\n"
                                 "Content-Length: %d\r\n"
                                 "x-remora-error: %s\r\n"
                                 "%s%.*s%s"
                                 "%s%s%s"
                                 "\r\n",
                                 status, rem_http_reason(status), blen, reason,
                                 request_id ? "X-Request-Id: " : "", (int)request_id_len,
                                 request_id ? request_id : "", request_id ? "\r\n" : "",
                                 retry_after ? "Retry-After: 1\r\n" : "",
                                 status == 405 ? "Allow: " REM_HTTP_ALLOW_BUT_CONNECT "\r\n" : "",
                                 conn_close ? "Connection: close\r\n" : "");
    if (rc < 0)
        return -REM_E_NOMEM;
    if (!head_request && evbuffer_add(out, body, (size_t)blen) < 0)
        return -REM_E_NOMEM;
    return 0;
}

const char *rem_http_reason(int status)
{
    switch (status) {
    case 100:
        return "Continue";
    case 101:
        return "Switching Protocols";
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 202:
        return "Accepted";
    case 204:
        return "No Content";
    case 206:
        return "Partial Content";
    case 301:
        return "Moved Permanently";
    case 302:
        return "Found";
    case 304:
        return "Not Modified";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 413:
        return "Content Too Large";
    case 414:
        return "URI Too Long";
    case 417:
        return "Expectation Failed";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    case 505:
        return "HTTP Version Not Supported";
    default:
        return "Unknown";
    }
}

/* Writes "0\r\n", the end-to-end trailer fields and the final CRLF (RFC 9112 7.1.2). */
int rem_http_write_last_chunk(struct evbuffer *out, struct rem_head *trl)
{
    if (evbuffer_add(out, "0\r\n", 3) < 0)
        return -REM_E_NOMEM;
    rem_head_classify(trl);
    for (uint32_t i = 0; i < trl->n_hdrs; i++) {
        const struct rem_hdr *x = &trl->hdrs[i];
        if (x->kind != REM_HDR_OTHER)
            continue;
        if (evbuffer_add(out, REM_HDR_NAME(trl, x), x->name_len) < 0 ||
            evbuffer_add(out, ": ", 2) < 0 ||
            evbuffer_add(out, REM_HDR_VAL(trl, x), x->val_len) < 0 ||
            evbuffer_add(out, "\r\n", 2) < 0)
            return -REM_E_NOMEM;
    }
    return evbuffer_add(out, "\r\n", 2) < 0 ? -REM_E_NOMEM : 0;
}
