/* SPDX-License-Identifier: Apache-2.0
 * h2_gen: HTTP/2 frames from frame descriptors; see h2_gen.h. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <event2/buffer.h>
#include <nghttp2/nghttp2.h>

#include "h2_gen.h"

/* Frames one input yields at most; a header block's fields at most. */
#define MAX_FRAMES 96
#define MAX_FIELDS 24

/* The input, consumed from the front; reads past the end give zeros. */
struct src {
    const uint8_t *p;
    size_t n;
};

static uint8_t u8(struct src *s)
{
    if (s->n == 0)
        return 0;
    s->n--;
    return *s->p++;
}

static uint16_t u16(struct src *s)
{
    uint16_t hi = u8(s);
    return (uint16_t)(hi << 8 | u8(s));
}

static uint32_t u32(struct src *s)
{
    uint32_t hi = u16(s);
    return hi << 16 | u16(s);
}

/* Up to want bytes of the input (fewer at its end); *n says how many. */
static const uint8_t *take(struct src *s, size_t want, size_t *n)
{
    const uint8_t *p = s->p;
    *n = want < s->n ? want : s->n;
    s->p += *n;
    s->n -= *n;
    return p;
}

void h2gen_frame(struct evbuffer *b, uint8_t type, uint8_t flags, uint32_t id, const void *payload,
                 size_t len)
{
    uint8_t hd[9] = {
        (uint8_t)(len >> 16), (uint8_t)(len >> 8), (uint8_t)len,       type,       flags,
        (uint8_t)(id >> 24),  (uint8_t)(id >> 16), (uint8_t)(id >> 8), (uint8_t)id};
    evbuffer_add(b, hd, sizeof(hd));
    if (len)
        evbuffer_add(b, payload, len);
}

/* Encodes nva into b (a header block fragment). Returns its length or -1. */
static ssize_t deflate_into(nghttp2_hd_deflater *d, uint8_t *buf, size_t cap, const nghttp2_nv *nva,
                            size_t n)
{
    ssize_t r = nghttp2_hd_deflate_hd(d, buf, cap, nva, n);
    return r < 0 ? -1 : r;
}

int h2gen_headers(struct evbuffer *b, uint32_t id, int end, const char *const *nv, size_t n)
{
    nghttp2_nv nva[MAX_FIELDS];
    uint8_t block[4096];
    nghttp2_hd_deflater *d = NULL;
    if (n > MAX_FIELDS || nghttp2_hd_deflate_new(&d, 4096) != 0)
        return -1;
    for (size_t i = 0; i < n; i++)
        nva[i] = (nghttp2_nv){(uint8_t *)nv[2 * i], (uint8_t *)nv[2 * i + 1], strlen(nv[2 * i]),
                              strlen(nv[2 * i + 1]), NGHTTP2_NV_FLAG_NONE};
    ssize_t len = deflate_into(d, block, sizeof(block), nva, n);
    nghttp2_hd_deflate_del(d);
    if (len < 0)
        return -1;
    h2gen_frame(b, NGHTTP2_HEADERS,
                (uint8_t)(NGHTTP2_FLAG_END_HEADERS | (end ? NGHTTP2_FLAG_END_STREAM : 0)), id,
                block, (size_t)len);
    return 0;
}

/* ---- the builder's state -------------------------------------------------------------------- */

struct gen {
    struct src in;
    enum h2gen_side side;
    struct evbuffer *b;
    nghttp2_hd_deflater *d; /* one per input: the peer's inflater follows its dynamic table */
    uint32_t last;          /* the last stream opened (0: none) */
    uint32_t n_opened;      /* H2GEN_SERVER: streams remora opened */
    bool connect;           /* a :method CONNECT was sent */
    /* Field storage for one header block. */
    nghttp2_nv nva[MAX_FIELDS];
    size_t n_nv;
    char strbuf[MAX_FIELDS * 2][64];
    size_t n_str;
};

/* A stream id for the next frame, relative to the last opened. */
static uint32_t pick_id(struct gen *g, bool opening)
{
    uint8_t k = u8(&g->in) % 10;
    uint32_t next = g->side == H2GEN_CLIENT
                        ? (g->last ? g->last + 2 : 1)
                        : (g->last + 2 <= 2 * g->n_opened - 1 ? g->last + 2 : g->last);
    switch (k) {
    case 0:
    case 1:
    case 2:
        if (opening || g->last == 0) {
            if (next == 0)
                next = 1;
            g->last = next;
        }
        return g->last;
    case 3:
    case 4:
        return g->last ? g->last : 1;
    case 5:
        return g->last > 2 ? g->last - 2 : 1; /* an older one (or going backwards) */
    case 6:
        return 0;
    case 7:
        return (g->last ? g->last : 1) + 1; /* even: server-initiated */
    case 8:
        return g->last + 4; /* idle, skipping one */
    default:
        return u32(&g->in) & 0x7fffffff;
    }
}

/* A C-string copy of a fuzzer-chosen string of up to 63 bytes (NUL-free not promised: HPACK
 * carries the bytes as they are). */
static const char *fz_str(struct gen *g, size_t *len)
{
    char *out = g->strbuf[g->n_str++ % (MAX_FIELDS * 2)];
    size_t n;
    const uint8_t *p = take(&g->in, u8(&g->in) % 64, &n);
    memcpy(out, p, n);
    out[n] = '\0';
    *len = n;
    return out;
}

static void add_nv(struct gen *g, const char *name, size_t nlen, const char *val, size_t vlen,
                   uint8_t flags)
{
    if (g->n_nv == MAX_FIELDS)
        return;
    if (nlen == 7 && memcmp(name, ":method", 7) == 0 && vlen == 7 && memcmp(val, "CONNECT", 7) == 0)
        g->connect = true;
    g->nva[g->n_nv++] = (nghttp2_nv){(uint8_t *)name, (uint8_t *)val, nlen, vlen, flags};
}

static void add_const(struct gen *g, const char *name, const char *val)
{
    add_nv(g, name, strlen(name), val, strlen(val), NGHTTP2_NV_FLAG_NONE);
}

static const char *const METHODS[] = {"GET",     "POST",  "HEAD",  "PUT",     "DELETE",
                                      "OPTIONS", "PATCH", "TRACE", "CONNECT", "get",
                                      "G T",     "",      "PRI"};
static const char *const PATHS[] = {"/",
                                    "/a?b=c",
                                    "*",
                                    "/x/../y",
                                    "http://h/p",
                                    "",
                                    "//x",
                                    "/%00",
                                    "a",
                                    "/\x7f",
                                    "/long/path/segment?q=1#f"};
static const char *const AUTHS[] = {"fuzz", "a.example:8080", "",          "[::1]:1", "h st",
                                    "x@y",  "FUZZ",           "host:99999"};
static const char *const SCHEMES[] = {"http", "https", "", "ftp"};
static const char *const STATUSES[] = {"200", "204", "304", "100",  "103", "101", "404",
                                       "500", "999", "abc", "2000", "",    "099", "200 "};
static const char *const NAMES[] = {"content-length",
                                    "te",
                                    "connection",
                                    "host",
                                    "cookie",
                                    "transfer-encoding",
                                    "content-type",
                                    "trailer",
                                    "expect",
                                    "upgrade",
                                    "keep-alive",
                                    "proxy-connection",
                                    "grpc-timeout",
                                    "x-request-id",
                                    "x-forwarded-for",
                                    "user-agent",
                                    "accept",
                                    "Content-Length",
                                    "x",
                                    "",
                                    ":protocol",
                                    ":foo",
                                    "set-cookie",
                                    "location",
                                    "grpc-status",
                                    "x-y z",
                                    "x\x01",
                                    "www-authenticate"};
static const char *const VALUES[] = {
    "0",       "1",     "10",         "-1",           "trailers",
    "chunked", "close", "keep-alive", "100-continue", "websocket",
    "a=b",     "",      " x",         "x\r\ny",       "18446744073709551616",
    "5, 5",    "1S",    "text/plain", "\x80\xff",     "gzip"};

#define PICK(tab) (tab)[u8(&g->in) % (sizeof(tab) / sizeof((tab)[0]))]

/* One field: mostly a known name and value, sometimes fuzzer bytes. */
static void add_field(struct gen *g)
{
    uint8_t k = u8(&g->in);
    size_t nl, vl;
    const char *name, *val;
    if (k & 1) {
        name = fz_str(g, &nl);
    } else {
        name = PICK(NAMES);
        nl = strlen(name);
    }
    if (k & 2) {
        val = fz_str(g, &vl);
    } else {
        val = PICK(VALUES);
        vl = strlen(val);
    }
    add_nv(g, name, nl, val, vl, (k & 0x30) == 0x30 ? NGHTTP2_NV_FLAG_NO_INDEX : 0);
}

/* A pseudo-header value: from the table, or (rarely) the fuzzer's. */
static const char *pseudo_val(struct gen *g, const char *const *tab, size_t n, size_t *len)
{
    uint8_t k = u8(&g->in);
    if (k >= 0xf0)
        return fz_str(g, len);
    const char *v = tab[k % n];
    *len = strlen(v);
    return v;
}

#define PSEUDO(name, tab)                                                                          \
    do {                                                                                           \
        size_t vl_;                                                                                \
        const char *v_ = pseudo_val(g, tab, sizeof(tab) / sizeof((tab)[0]), &vl_);                 \
        add_nv(g, name, strlen(name), v_, vl_, 0);                                                 \
    } while (0)

/* The fields of a header block: a request or response head (pseudo-headers first, usually
 * valid), or trailers. */
static void build_fields(struct gen *g, bool trailers)
{
    uint8_t shape = u8(&g->in);
    g->n_nv = 0;
    if (!trailers) {
        if (g->side == H2GEN_CLIENT) {
            /* Usually the four, in order; the shape byte's bits drop one, duplicate one or put
             * a regular field first. */
            if (shape == 0xfb || shape == 0xfa) {
                /* CONNECT: extended (RFC 8441, websocket) or plain (authority only) */
                add_const(g, ":method", "CONNECT");
                if (shape == 0xfb) {
                    add_const(g, ":protocol", "websocket");
                    add_const(g, ":scheme", "http");
                    add_const(g, ":path", "/ws");
                }
                PSEUDO(":authority", AUTHS);
                goto fields;
            }
            if ((shape & 0x07) == 0x07)
                add_field(g);
            if ((shape & 0x18) != 0x18)
                PSEUDO(":method", METHODS);
            if ((shape & 0x60) != 0x60)
                PSEUDO(":scheme", SCHEMES);
            PSEUDO(":authority", AUTHS);
            if (shape != 0xfe)
                PSEUDO(":path", PATHS);
            if (shape == 0xfd)
                PSEUDO(":method", METHODS);
            if (shape == 0xfc)
                add_const(g, ":protocol", "websocket");
        } else {
            if ((shape & 0x07) == 0x07)
                add_field(g);
            if ((shape & 0x18) != 0x18)
                PSEUDO(":status", STATUSES);
            if (shape == 0xfd)
                PSEUDO(":status", STATUSES);
            if (shape == 0xfc)
                add_const(g, ":path", "/");
        }
    }
fields:;
    unsigned n = u8(&g->in) % 6;
    if (shape >= 0xc0 && shape < 0xf0)
        n += 12;
    for (unsigned i = 0; i < n; i++)
        add_field(g);
}

/* Appends a header block for stream id: HEADERS (or PUSH_PROMISE) then, when the block is
 * split, CONTINUATION frames. */
static void emit_headers(struct gen *g, uint32_t id, uint8_t flags, bool trailers, bool push)
{
    uint8_t block[16384];
    build_fields(g, trailers);
    ssize_t len = deflate_into(g->d, block, sizeof(block), g->nva, g->n_nv);
    if (len < 0)
        return;
    uint8_t split = u8(&g->in);
    size_t first = (size_t)len;
    if ((split & 0x0f) == 0x0f && len > 1)
        first = 1 + (size_t)(split >> 4) % (size_t)len; /* CONTINUATION for the rest */
    struct evbuffer *b = g->b;
    uint8_t pre[5];
    size_t npre = 0;
    uint8_t fl = flags;
    if (push) {
        uint32_t promised = g->last + 1;
        pre[0] = (uint8_t)(promised >> 24);
        pre[1] = (uint8_t)(promised >> 16);
        pre[2] = (uint8_t)(promised >> 8);
        pre[3] = (uint8_t)promised;
        npre = 4;
        fl &= (uint8_t)~NGHTTP2_FLAG_END_STREAM;
    } else if (flags & NGHTTP2_FLAG_PRIORITY) {
        uint32_t dep = (split & 0x10) ? id : 0; /* sometimes on itself */
        pre[0] = (uint8_t)(dep >> 24);
        pre[1] = (uint8_t)(dep >> 16);
        pre[2] = (uint8_t)(dep >> 8);
        pre[3] = (uint8_t)dep;
        pre[4] = 15;
        npre = 5;
    }
    if (first == (size_t)len)
        fl |= NGHTTP2_FLAG_END_HEADERS;
    else
        fl &= (uint8_t)~NGHTTP2_FLAG_END_HEADERS;
    size_t plen = npre + first;
    uint8_t hd[9] = {(uint8_t)(plen >> 16),
                     (uint8_t)(plen >> 8),
                     (uint8_t)plen,
                     push ? NGHTTP2_PUSH_PROMISE : NGHTTP2_HEADERS,
                     fl,
                     (uint8_t)(id >> 24),
                     (uint8_t)(id >> 16),
                     (uint8_t)(id >> 8),
                     (uint8_t)id};
    evbuffer_add(b, hd, 9);
    evbuffer_add(b, pre, npre);
    evbuffer_add(b, block, first);
    size_t off = first;
    while (off < (size_t)len) {
        size_t chunk = 1 + u8(&g->in) % 64;
        if (chunk > (size_t)len - off)
            chunk = (size_t)len - off;
        bool last = off + chunk == (size_t)len;
        h2gen_frame(b, NGHTTP2_CONTINUATION, last ? NGHTTP2_FLAG_END_HEADERS : 0, id, block + off,
                    chunk);
        off += chunk;
    }
}

static void emit_data(struct gen *g, uint32_t id, uint8_t flags)
{
    static uint8_t fill[20000];
    uint8_t k = u8(&g->in);
    size_t len;
    const uint8_t *p;
    if (k >= 0xf0) {
        len = 1000 + (size_t)u16(&g->in) % (sizeof(fill) - 1000); /* large: flow control */
        memset(fill, 'd', len);
        p = fill;
    } else {
        p = take(&g->in, k % 64, &len);
    }
    uint8_t fl = flags & NGHTTP2_FLAG_END_STREAM;
    if ((k & 0x0c) == 0x0c) { /* padded */
        uint8_t pad = u8(&g->in) % 32;
        static uint8_t padded[sizeof(fill) + 256];
        padded[0] = pad;
        memcpy(padded + 1, p, len);
        memset(padded + 1 + len, 0, pad);
        h2gen_frame(g->b, NGHTTP2_DATA, fl | NGHTTP2_FLAG_PADDED, id, padded, 1 + len + pad);
        return;
    }
    h2gen_frame(g->b, NGHTTP2_DATA, fl, id, p, len);
}

static void put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static uint32_t error_code(struct gen *g)
{
    static const uint32_t codes[] = {0, 1, 2, 3, 5, 7, 8, 0xb, 0xd, 0xff};
    uint8_t k = u8(&g->in);
    return k < 0xf0 ? codes[k % 10] : u32(&g->in);
}

static void emit_settings(struct gen *g, uint8_t flags)
{
    static const uint32_t vals[] = {0,           1,           100,      4096,
                                    16384,       65535,       65536,    0x7fffffff,
                                    0x80000000u, 0xffffffffu, 16777215, 16777216};
    uint8_t p[6 * 8];
    if (flags & 1) { /* ACK, usually empty */
        uint8_t k = u8(&g->in);
        h2gen_frame(g->b, NGHTTP2_SETTINGS, NGHTTP2_FLAG_ACK, 0, p, k >= 0xf0 ? 6 : 0);
        return;
    }
    unsigned n = u8(&g->in) % 9;
    for (unsigned i = 0; i < n; i++) {
        uint8_t id = u8(&g->in);
        uint16_t sid = id < 0xf0 ? (uint16_t)(1 + id % 8) : (uint16_t)u16(&g->in);
        uint8_t vk = u8(&g->in);
        uint32_t v = vk < 0xf0 ? vals[vk % 12] : u32(&g->in);
        p[6 * i] = (uint8_t)(sid >> 8);
        p[6 * i + 1] = (uint8_t)sid;
        put32(p + 6 * i + 2, v);
    }
    h2gen_frame(g->b, NGHTTP2_SETTINGS, 0, (flags & 2) ? 1 : 0, p, 6 * n);
}

int h2gen_build(const uint8_t *data, size_t size, enum h2gen_side side, unsigned n_opened,
                struct h2gen_out *out)
{
    struct gen g;
    memset(out, 0, sizeof(*out));
    memset(&g, 0, sizeof(g));
    g.in = (struct src){data, size};
    g.side = side;
    g.n_opened = n_opened ? n_opened : 1;
    g.last = side == H2GEN_SERVER ? 1 : 0;
    out->knobs = u8(&g.in);
    out->buf = g.b = evbuffer_new();
    if (!g.b || nghttp2_hd_deflate_new(&g.d, 4096) != 0)
        return -1;
    for (unsigned f = 0; f < MAX_FRAMES && g.in.n > 0; f++) {
        uint8_t op = u8(&g.in);
        uint8_t flags = op >> 4; /* 4 bits of flag choices */
        switch (op & 0x0f) {
        case 0:
        case 1:
        case 2: { /* HEADERS: a request or response head */
            uint32_t id = pick_id(&g, true);
            uint8_t fl = (flags & 1) ? NGHTTP2_FLAG_END_STREAM : 0;
            if ((flags & 0x6) == 0x6)
                fl |= NGHTTP2_FLAG_PRIORITY;
            emit_headers(&g, id, fl, false, false);
            break;
        }
        case 3: /* trailers (END_STREAM, or not when flags say so) */
            emit_headers(&g, pick_id(&g, false), (flags & 8) ? 0 : NGHTTP2_FLAG_END_STREAM, true,
                         false);
            break;
        case 4:
        case 5:
            emit_data(&g, pick_id(&g, false), (flags & 1) ? NGHTTP2_FLAG_END_STREAM : 0);
            break;
        case 6: {
            uint8_t p[4];
            uint32_t id = pick_id(&g, false);
            put32(p, error_code(&g));
            h2gen_frame(g.b, NGHTTP2_RST_STREAM, 0, id, p, (flags & 8) ? 3 : 4);
            break;
        }
        case 7: {
            static const uint32_t incs[] = {1, 1024, 65535, 0, 0x7fffffff, 1 << 20};
            uint8_t p[4];
            uint32_t id = (flags & 1) ? 0 : pick_id(&g, false);
            uint8_t k = u8(&g.in);
            put32(p, k < 0xf0 ? incs[k % 6] : u32(&g.in));
            h2gen_frame(g.b, NGHTTP2_WINDOW_UPDATE, 0, id, p, 4);
            break;
        }
        case 8:
            emit_settings(&g, flags);
            break;
        case 9: {
            size_t n;
            uint8_t p[9] = {0};
            const uint8_t *q = take(&g.in, 8, &n);
            memcpy(p, q, n);
            h2gen_frame(g.b, NGHTTP2_PING, (flags & 1) ? NGHTTP2_FLAG_ACK : 0, (flags & 8) ? 1 : 0,
                        p, (flags & 4) ? 9 : 8);
            break;
        }
        case 10: {
            uint8_t p[8 + 64];
            size_t n;
            uint32_t last = (flags & 1) ? g.last : u32(&g.in) & 0x7fffffff;
            put32(p, last);
            put32(p + 4, error_code(&g));
            const uint8_t *q = take(&g.in, u8(&g.in) % 64, &n);
            memcpy(p + 8, q, n);
            h2gen_frame(g.b, NGHTTP2_GOAWAY, 0, 0, p, 8 + n);
            break;
        }
        case 11: {
            uint8_t p[5];
            uint32_t id = pick_id(&g, false);
            uint32_t dep = (flags & 1) ? id : (flags & 2) ? g.last + 2 : 0;
            put32(p, dep | ((flags & 4) ? 0x80000000u : 0));
            p[4] = u8(&g.in);
            h2gen_frame(g.b, NGHTTP2_PRIORITY, 0, id, p, 5);
            break;
        }
        case 12:
            if (flags & 1) { /* PUSH_PROMISE */
                emit_headers(&g, pick_id(&g, false), 0, false, true);
            } else { /* an orphan CONTINUATION */
                uint8_t p[8];
                size_t n;
                const uint8_t *q = take(&g.in, flags & 7, &n);
                memcpy(p, q, n);
                h2gen_frame(g.b, NGHTTP2_CONTINUATION, (flags & 8) ? NGHTTP2_FLAG_END_HEADERS : 0,
                            pick_id(&g, false), p, n);
            }
            break;
        case 13: { /* raw bytes, verbatim */
            size_t n;
            const uint8_t *q = take(&g.in, u8(&g.in), &n);
            evbuffer_add(g.b, q, n);
            break;
        }
        case 14: { /* any type and flags, any length field, a short payload */
            uint8_t type = u8(&g.in), fl = u8(&g.in);
            uint32_t id = pick_id(&g, false);
            size_t n;
            const uint8_t *q = take(&g.in, u8(&g.in) % 32, &n);
            h2gen_frame(g.b, type, fl, id, q, n);
            break;
        }
        default: /* a segment boundary: the driver runs the loop here */
            if (out->n_segs < H2GEN_MAX_SEGMENTS - 1)
                out->seg_end[out->n_segs++] = evbuffer_get_length(g.b);
            break;
        }
    }
    out->seg_end[out->n_segs++] = evbuffer_get_length(g.b);
    out->connect = g.connect;
    nghttp2_hd_deflate_del(g.d);
    return 0;
}

void h2gen_dispose(struct h2gen_out *out)
{
    if (out->buf)
        evbuffer_free(out->buf);
    out->buf = NULL;
}
