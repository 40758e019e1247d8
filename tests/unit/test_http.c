/* SPDX-License-Identifier: Apache-2.0
 * test_http: unit tests for http.h: the head arena and its limits, header classification
 * (hop-by-hop, framing, Expect, Host, request id), token lists, request ids and the byte-exact
 * HTTP/1.1 serialization of forwarded requests, responses and remora's own errors. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "error.h"
#include "http.h"
#include "sha1.h"

/* ---- helpers ------------------------------------------------------------------------------ */

struct kv {
    const char *name, *value;
};

/* Feeds a head the way a codec does: method and target (or reason) spans, then each header's
 * name and value; hdrs ends at a NULL name. Classifies it when done. */
static void build(struct rem_head *h, const char *method, const char *target, const struct kv *hdrs)
{
    rem_head_init(h, 64 * 1024, 100);
    if (method)
        assert_int_equal(rem_head_add_span(h, REM_SPAN_METHOD, method, strlen(method)), 0);
    if (target)
        assert_int_equal(rem_head_add_span(h, REM_SPAN_TARGET, target, strlen(target)), 0);
    for (size_t i = 0; hdrs && hdrs[i].name; i++) {
        assert_int_equal(rem_head_add_name(h, hdrs[i].name, strlen(hdrs[i].name)), 0);
        assert_int_equal(rem_head_add_value(h, hdrs[i].value, strlen(hdrs[i].value)), 0);
    }
    rem_head_classify(h);
}

static void build_response(struct rem_head *h, int status, const char *reason,
                           const struct kv *hdrs)
{
    rem_head_init(h, 64 * 1024, 100);
    h->status = status;
    if (reason)
        assert_int_equal(rem_head_add_span(h, REM_SPAN_REASON, reason, strlen(reason)), 0);
    for (size_t i = 0; hdrs && hdrs[i].name; i++) {
        assert_int_equal(rem_head_add_name(h, hdrs[i].name, strlen(hdrs[i].name)), 0);
        assert_int_equal(rem_head_add_value(h, hdrs[i].value, strlen(hdrs[i].value)), 0);
    }
    rem_head_classify(h);
}

/* Classifies a request made of the given headers only. */
static void classify(struct rem_head *h, const struct kv *hdrs)
{
    build(h, "GET", "/", hdrs);
}

static void assert_hdr(const struct rem_head *h, uint32_t i, const char *name, const char *value)
{
    const struct rem_hdr *x;

    assert_true(i < h->n_hdrs);
    x = &h->hdrs[i];
    assert_int_equal(x->name_len, strlen(name));
    assert_memory_equal(REM_HDR_NAME(h, x), name, x->name_len);
    assert_int_equal(x->val_len, strlen(value));
    if (x->val_len)
        assert_memory_equal(REM_HDR_VAL(h, x), value, x->val_len);
}

static void assert_span(const struct rem_head *h, enum rem_span s, const char *want)
{
    assert_int_equal(h->span_len[s], strlen(want));
    assert_memory_equal(rem_head_ptr(h, h->span_off[s]), want, strlen(want));
}

/* Drains out and compares it with want, byte for byte. */
static void assert_output(struct evbuffer *out, const char *want)
{
    size_t n = evbuffer_get_length(out);
    char *got = malloc(n + 1);

    assert_non_null(got);
    assert_int_equal(evbuffer_remove(out, got, n), (int)n);
    got[n] = '\0';
    assert_int_equal(strlen(got), n); /* no NUL sneaked into the head */
    assert_string_equal(got, want);
    free(got);
}

/* The forwarding parameters most request tests share. */
static struct rem_fwd_request fwd_req(void)
{
    struct rem_fwd_request f = {
        .client_addr = "10.0.0.9",
        .proto = "http",
        .request_id = "rid-1",
        .default_host = "app:8080",
        .chunked = false,
        .content_length = -1,
    };
    return f;
}

static void check_request(const struct kv *hdrs, const struct rem_fwd_request *fwd,
                          const char *want)
{
    struct rem_head h;
    struct evbuffer *out = evbuffer_new();

    assert_non_null(out);
    build(&h, "GET", "/p?q=1", hdrs);
    assert_int_equal(rem_http_write_request(out, &h, fwd), 0);
    assert_output(out, want);
    evbuffer_free(out);
    rem_head_dispose(&h);
}

/* ---- head arena --------------------------------------------------------------------------- */

static void test_head_init(void **state)
{
    struct rem_head h;

    (void)state;
    memset(&h, 0xa5, sizeof(h));
    rem_head_init(&h, 4096, 10);
    assert_int_equal(h.len, 0);
    assert_int_equal(h.n_hdrs, 0);
    assert_int_equal(h.max_bytes, 4096);
    assert_int_equal(h.max_hdrs, 10);
    assert_false(h.in_value);
    for (int s = 0; s < REM_SPAN__COUNT; s++)
        assert_int_equal(h.span_len[s], 0);
    assert_int_equal(h.content_length, -1);
    assert_int_equal(h.http_major, 1);
    assert_int_equal(h.http_minor, 1);
    assert_int_equal(h.host_idx, -1);
    assert_int_equal(h.request_id_idx, -1);
    assert_int_equal(h.n_host, 0);
    assert_false(h.chunked || h.te_unsupported || h.cl_conflict || h.conn_close ||
                 h.conn_keepalive || h.expect_continue || h.expect_other);
    rem_head_dispose(&h);
    rem_head_dispose(&h); /* dispose twice is harmless */
}

static void test_head_pieces_split_across_calls(void **state)
{
    struct rem_head h;

    (void)state;
    rem_head_init(&h, 4096, 10);
    assert_int_equal(rem_head_add_span(&h, REM_SPAN_METHOD, "PO", 2), 0);
    assert_int_equal(rem_head_add_span(&h, REM_SPAN_METHOD, "ST", 2), 0);
    assert_int_equal(rem_head_add_span(&h, REM_SPAN_TARGET, "/a", 2), 0);
    assert_int_equal(rem_head_add_span(&h, REM_SPAN_TARGET, "/b?c", 4), 0);
    assert_int_equal(rem_head_add_name(&h, "Cont", 4), 0);
    assert_int_equal(rem_head_add_name(&h, "ent-Ty", 6), 0);
    assert_int_equal(rem_head_add_name(&h, "pe", 2), 0);
    assert_int_equal(rem_head_add_value(&h, "text/", 5), 0);
    assert_int_equal(rem_head_add_value(&h, "pla", 3), 0);
    assert_int_equal(rem_head_add_value(&h, "in", 2), 0);
    assert_true(h.in_value);
    /* A name after a value starts the next field. */
    assert_int_equal(rem_head_add_name(&h, "X", 1), 0);
    assert_false(h.in_value);
    assert_int_equal(rem_head_add_name(&h, "-A", 2), 0);
    assert_int_equal(rem_head_add_value(&h, "1", 1), 0);

    assert_span(&h, REM_SPAN_METHOD, "POST");
    assert_span(&h, REM_SPAN_TARGET, "/a/b?c");
    assert_int_equal(h.span_len[REM_SPAN_REASON], 0);
    assert_int_equal(h.n_hdrs, 2);
    assert_hdr(&h, 0, "Content-Type", "text/plain");
    assert_hdr(&h, 1, "X-A", "1");
    assert_int_equal(h.len, strlen("POST/a/b?cContent-Typetext/plainX-A1"));
    assert_memory_equal(h.buf, "POST/a/b?cContent-Typetext/plainX-A1", h.len);
    rem_head_dispose(&h);
}

/* An empty value still arrives as a zero-length piece (llhttp does so) and ends the field. */
/* An empty first field name (a trailer ": v", found by fuzz_h1_up) into a head that holds
 * nothing yet: no byte is copied from or to the absent arena (UBSan: applying zero offset to a
 * null pointer). */
static void test_head_empty_name_first(void **state)
{
    (void)state;
    struct rem_head h;
    rem_head_init(&h, 64 * 1024, 100);
    assert_int_equal(rem_head_add_name(&h, "", 0), 0);
    assert_int_equal(rem_head_add_value(&h, "v", 1), 0);
    assert_int_equal(h.n_hdrs, 1);
    assert_int_equal(h.hdrs[0].name_len, 0);
    assert_int_equal(h.hdrs[0].val_len, 1);
    rem_head_dispose(&h);
}

static void test_head_empty_value(void **state)
{
    struct rem_head h;

    (void)state;
    rem_head_init(&h, 4096, 10);
    assert_int_equal(rem_head_add_name(&h, "X-Empty", 7), 0);
    assert_int_equal(rem_head_add_value(&h, "", 0), 0);
    assert_int_equal(rem_head_add_name(&h, "X-Next", 6), 0);
    assert_int_equal(rem_head_add_value(&h, "v", 1), 0);
    assert_int_equal(h.n_hdrs, 2);
    assert_hdr(&h, 0, "X-Empty", "");
    assert_hdr(&h, 1, "X-Next", "v");
    rem_head_dispose(&h);
}

/* Without a value in between, name pieces belong to one field. */
static void test_head_name_pieces_join(void **state)
{
    struct rem_head h;

    (void)state;
    rem_head_init(&h, 4096, 10);
    assert_int_equal(rem_head_add_name(&h, "A", 1), 0);
    assert_int_equal(rem_head_add_name(&h, "B", 1), 0);
    assert_int_equal(h.n_hdrs, 1);
    assert_int_equal(h.hdrs[0].name_len, 2);
    assert_memory_equal(REM_HDR_NAME(&h, &h.hdrs[0]), "AB", 2);
    rem_head_dispose(&h);
}

static void test_head_value_without_name(void **state)
{
    struct rem_head h;

    (void)state;
    rem_head_init(&h, 4096, 10);
    assert_int_equal(rem_head_add_value(&h, "v", 1), -REM_E_BAD_REQUEST);
    assert_int_equal(h.n_hdrs, 0);
    assert_int_equal(h.len, 0);
    rem_head_dispose(&h);
}

static void test_head_byte_limit(void **state)
{
    struct rem_head h;

    (void)state;
    rem_head_init(&h, 10, 100);
    assert_int_equal(rem_head_add_span(&h, REM_SPAN_METHOD, "GET", 3), 0);
    assert_int_equal(rem_head_add_span(&h, REM_SPAN_TARGET, "/abc", 4), 0);
    assert_int_equal(rem_head_add_name(&h, "Ab", 2), 0);
    assert_int_equal(h.len, 9);
    assert_int_equal(rem_head_add_value(&h, "xy", 2), -REM_E_HEADER_TOO_LARGE);
    assert_int_equal(h.len, 9);
    assert_int_equal(h.hdrs[0].val_len, 0);
    /* Exactly max_bytes is still fine. */
    assert_int_equal(rem_head_add_value(&h, "x", 1), 0);
    assert_int_equal(h.len, 10);
    assert_hdr(&h, 0, "Ab", "x");
    assert_int_equal(rem_head_add_value(&h, "y", 1), -REM_E_HEADER_TOO_LARGE);
    assert_int_equal(rem_head_add_name(&h, "B", 1), -REM_E_HEADER_TOO_LARGE);
    assert_int_equal(rem_head_add_span(&h, REM_SPAN_REASON, "R", 1), -REM_E_HEADER_TOO_LARGE);
    assert_int_equal(h.len, 10);
    assert_span(&h, REM_SPAN_METHOD, "GET");
    assert_span(&h, REM_SPAN_TARGET, "/abc");
    assert_int_equal(h.span_len[REM_SPAN_REASON], 0);
    rem_head_dispose(&h);
}

/* Growth is capped at max_bytes even when doubling would go past it. */
static void test_head_byte_limit_large(void **state)
{
    struct rem_head h;
    char chunk[100];

    (void)state;
    memset(chunk, 'v', sizeof(chunk));
    rem_head_init(&h, 1500, 100);
    assert_int_equal(rem_head_add_name(&h, "N", 1), 0);
    for (int i = 0; i < 14; i++)
        assert_int_equal(rem_head_add_value(&h, chunk, sizeof(chunk)), 0);
    assert_int_equal(rem_head_add_value(&h, chunk, 99), 0);
    assert_int_equal(h.len, 1500);
    assert_true(h.cap <= 1500);
    assert_int_equal(rem_head_add_value(&h, chunk, 1), -REM_E_HEADER_TOO_LARGE);
    assert_int_equal(h.hdrs[0].val_len, 1499);
    for (uint32_t i = 0; i < 1499; i++)
        assert_int_equal(REM_HDR_VAL(&h, &h.hdrs[0])[i], 'v');
    rem_head_dispose(&h);
}

static void test_head_count_limit(void **state)
{
    struct rem_head h;

    (void)state;
    rem_head_init(&h, 4096, 2);
    assert_int_equal(rem_head_add_name(&h, "A", 1), 0);
    assert_int_equal(rem_head_add_value(&h, "1", 1), 0);
    assert_int_equal(rem_head_add_name(&h, "B", 1), 0);
    /* Continuing the last field is not a new field. */
    assert_int_equal(rem_head_add_name(&h, "b", 1), 0);
    assert_int_equal(rem_head_add_value(&h, "2", 1), 0);
    assert_int_equal(rem_head_add_value(&h, "2", 1), 0);
    assert_int_equal(rem_head_add_name(&h, "C", 1), -REM_E_TOO_MANY_HEADERS);
    assert_int_equal(h.n_hdrs, 2);
    assert_hdr(&h, 0, "A", "1");
    assert_hdr(&h, 1, "Bb", "22");
    rem_head_dispose(&h);
}

/* Offsets survive the arena moving while it grows (header table too: more than 16 fields). */
static void test_head_growth_keeps_offsets(void **state)
{
    struct rem_head h;
    char name[32], value[64];

    (void)state;
    rem_head_init(&h, 64 * 1024, 100);
    assert_int_equal(rem_head_add_span(&h, REM_SPAN_METHOD, "GET", 3), 0);
    for (int i = 0; i < 100; i++) {
        int nn = snprintf(name, sizeof(name), "X-Header-%d", i);
        int vn = snprintf(value, sizeof(value), "value-%d-%040d", i, i);

        assert_int_equal(rem_head_add_name(&h, name, (size_t)nn), 0);
        assert_int_equal(rem_head_add_value(&h, value, (size_t)vn), 0);
    }
    assert_int_equal(rem_head_add_name(&h, "X", 1), -REM_E_TOO_MANY_HEADERS);
    assert_int_equal(h.n_hdrs, 100);
    assert_true(h.len > 4096);
    for (int i = 0; i < 100; i++) {
        snprintf(name, sizeof(name), "X-Header-%d", i);
        snprintf(value, sizeof(value), "value-%d-%040d", i, i);
        assert_hdr(&h, (uint32_t)i, name, value);
    }
    assert_span(&h, REM_SPAN_METHOD, "GET");
    rem_head_dispose(&h);
}

static void test_head_reset_keeps_memory(void **state)
{
    static const struct kv hdrs[] = {
        {"Host", "a"},           {"Content-Length", "5"},
        {"Connection", "close"}, {"Expect", "100-continue"},
        {"X-Request-Id", "r"},   {NULL, NULL},
    };
    struct rem_head h;

    (void)state;
    build(&h, "POST", "/x", hdrs);
    h.status = 200;
    h.http_minor = 0;
    assert_int_equal(h.content_length, 5);
    assert_true(h.conn_close);

    char *buf = h.buf;
    struct rem_hdr *tab = h.hdrs;
    uint32_t cap = h.cap, cap_hdrs = h.cap_hdrs;

    rem_head_reset(&h);
    assert_ptr_equal(h.buf, buf);
    assert_ptr_equal(h.hdrs, tab);
    assert_int_equal(h.cap, cap);
    assert_int_equal(h.cap_hdrs, cap_hdrs);
    assert_int_equal(h.len, 0);
    assert_int_equal(h.n_hdrs, 0);
    assert_false(h.in_value);
    assert_int_equal(h.span_len[REM_SPAN_METHOD], 0);
    assert_int_equal(h.span_len[REM_SPAN_TARGET], 0);
    assert_int_equal(h.status, 0);
    assert_int_equal(h.http_minor, 1);
    assert_int_equal(h.content_length, -1);
    assert_false(h.conn_close);
    assert_false(h.expect_continue);
    assert_int_equal(h.n_host, 0);
    assert_int_equal(h.host_idx, -1);
    assert_int_equal(h.request_id_idx, -1);
    assert_int_equal(h.max_bytes, 64 * 1024);
    assert_int_equal(h.max_hdrs, 100);

    /* The next message starts from scratch. */
    assert_int_equal(rem_head_add_span(&h, REM_SPAN_METHOD, "GET", 3), 0);
    assert_int_equal(rem_head_add_name(&h, "Y", 1), 0);
    assert_int_equal(rem_head_add_value(&h, "2", 1), 0);
    assert_int_equal(h.n_hdrs, 1);
    assert_span(&h, REM_SPAN_METHOD, "GET");
    assert_hdr(&h, 0, "Y", "2");
    rem_head_dispose(&h);
}

/* ---- classification ----------------------------------------------------------------------- */

/* RFC 9110 7.6.1: Connection and every field it names, plus the fixed hop-by-hop set. */
static void test_classify_kinds(void **state)
{
    static const struct kv hdrs[] = {
        {"Host", "a"},                        /* 0 */
        {"Connection", "keep-alive, X-Drop"}, /* 1 */
        {"Keep-Alive", "timeout=5"},          /* 2 */
        {"TE", "trailers"},                   /* 3 */
        {"Trailer", "X-T"},                   /* 4 */
        {"Transfer-Encoding", "chunked"},     /* 5 */
        {"Upgrade", "h2c"},                   /* 6 */
        {"Proxy-Connection", "keep-alive"},   /* 7 */
        {"X-Drop", "1"},                      /* 8 */
        {"X-Keep", "1"},                      /* 9 */
        {"Content-Length", "3"},              /* 10 */
        {"Expect", "100-continue"},           /* 11 */
        {"X-Forwarded-For", "1.1.1.1"},       /* 12 */
        {"X-Forwarded-Proto", "https"},       /* 13 */
        {"X-Request-Id", "abc"},              /* 14 */
        {"Connection", "x-also"},             /* 15 */
        {"x-ALSO", "2"},                      /* 16 */
        {"X-Drop-Not", "3"},                  /* 17 */
        {NULL, NULL},
    };
    static const enum rem_hdr_kind want[] = {
        REM_HDR_HOST,
        REM_HDR_CONNECTION,
        REM_HDR_HOP,
        REM_HDR_HOP,
        REM_HDR_HOP,
        REM_HDR_TRANSFER_ENCODING,
        REM_HDR_HOP,
        REM_HDR_HOP,
        REM_HDR_HOP,
        REM_HDR_OTHER,
        REM_HDR_CONTENT_LENGTH,
        REM_HDR_EXPECT,
        REM_HDR_XFF,
        REM_HDR_XFP,
        REM_HDR_REQUEST_ID,
        REM_HDR_CONNECTION,
        REM_HDR_HOP,
        REM_HDR_OTHER,
    };
    struct rem_head h;

    (void)state;
    classify(&h, hdrs);
    assert_int_equal(h.n_hdrs, sizeof(want) / sizeof(want[0]));
    for (uint32_t i = 0; i < h.n_hdrs; i++)
        if (h.hdrs[i].kind != want[i])
            fail_msg("header %u (%.*s): kind %d, want %d", i, (int)h.hdrs[i].name_len,
                     REM_HDR_NAME(&h, &h.hdrs[i]), h.hdrs[i].kind, want[i]);
    rem_head_dispose(&h);
}

static void test_classify_case_insensitive(void **state)
{
    static const struct kv hdrs[] = {
        {"HOST", "a"},
        {"cOnNeCtIoN", "CLOSE, x-foo"},
        {"KEEP-ALIVE", "1"},
        {"te", "trailers"},
        {"TRAILER", "x"},
        {"upgrade", "websocket"},
        {"PROXY-connection", "x"},
        {"X-FOO", "1"},
        {"content-LENGTH", "7"},
        {"EXPECT", "100-Continue"},
        {"x-forwarded-FOR", "1.1.1.1"},
        {"X-FORWARDED-PROTO", "http"},
        {"x-request-ID", "r"},
        {NULL, NULL},
    };
    static const enum rem_hdr_kind want[] = {
        REM_HDR_HOST,       REM_HDR_CONNECTION, REM_HDR_HOP,
        REM_HDR_HOP,        REM_HDR_HOP,        REM_HDR_HOP,
        REM_HDR_HOP,        REM_HDR_HOP,        REM_HDR_CONTENT_LENGTH,
        REM_HDR_EXPECT,     REM_HDR_XFF,        REM_HDR_XFP,
        REM_HDR_REQUEST_ID,
    };
    struct rem_head h;

    (void)state;
    classify(&h, hdrs);
    for (uint32_t i = 0; i < h.n_hdrs; i++)
        if (h.hdrs[i].kind != want[i])
            fail_msg("header %u: kind %d, want %d", i, h.hdrs[i].kind, want[i]);
    assert_true(h.conn_close);
    assert_int_equal(h.content_length, 7);
    assert_true(h.expect_continue);
    assert_false(h.expect_other);
    assert_int_equal(h.n_host, 1);
    assert_int_equal(h.host_idx, 0);
    assert_int_equal(h.request_id_idx, 12);
    rem_head_dispose(&h);
}

/* Names that merely start like a known one are ordinary fields. */
/* ---- limits.headers_with_underscores ------------------------------------------------------ */

static const struct kv underscore_hdrs[] = {
    {"Host", "example.com"},
    {"Transfer_Encoding", "chunked"},
    {"X_Forwarded_For", "6.6.6.6"},
    {"Content_Length", "5"},
    {"X-Normal", "1"},
    {NULL, NULL},
};

/* Builds a request head of hdrs under policy u and classifies it. */
static void build_underscores(struct rem_head *h, enum rem_underscores u, const struct kv *hdrs)
{
    rem_head_init(h, 64 * 1024, 100);
    rem_head_set_underscores(h, u);
    assert_int_equal(rem_head_add_span(h, REM_SPAN_METHOD, "POST", 4), 0);
    assert_int_equal(rem_head_add_span(h, REM_SPAN_TARGET, "/", 1), 0);
    for (size_t i = 0; hdrs[i].name; i++) {
        assert_int_equal(rem_head_add_name(h, hdrs[i].name, strlen(hdrs[i].name)), 0);
        assert_int_equal(rem_head_add_value(h, hdrs[i].value, strlen(hdrs[i].value)), 0);
    }
    rem_head_classify(h);
}

/* Writes the head of underscore_hdrs under u: the expected request carries `kept` (the fields
 * with '_' that go on) between Host and X-Normal. */
static void write_request_underscores(enum rem_underscores u, const char *kept)
{
    struct rem_head h;
    struct rem_fwd_request fwd = fwd_req();
    struct evbuffer *out = evbuffer_new();
    char want[512];

    assert_non_null(out);
    build_underscores(&h, u, underscore_hdrs);
    /* Names with '_' are never framing or forwarding fields, whatever the policy. */
    assert_false(h.chunked || h.te_unsupported || h.cl_conflict);
    assert_int_equal(h.content_length, -1);
    assert_int_equal(rem_http_write_request(out, &h, &fwd), 0);
    snprintf(want, sizeof(want),
             "POST / HTTP/1.1\r\nHost: example.com\r\n%sX-Normal: 1\r\n"
             "X-Forwarded-For: 10.0.0.9\r\nX-Forwarded-Proto: http\r\nX-Request-Id: rid-1\r\n\r\n",
             kept);
    assert_output(out, want);
    evbuffer_free(out);
    rem_head_dispose(&h);
}

/* allow: forwarded as is, nothing counted (the behaviour before the setting). */
static void test_underscores_allow(void **state)
{
    (void)state;
    write_request_underscores(REM_UNDERSCORES_ALLOW, "Transfer_Encoding: chunked\r\n"
                                                     "X_Forwarded_For: 6.6.6.6\r\n"
                                                     "Content_Length: 5\r\n");
    struct rem_head h;
    build_underscores(&h, REM_UNDERSCORES_ALLOW, underscore_hdrs);
    assert_int_equal(h.n_underscore, 0);
    for (uint32_t i = 0; i < h.n_hdrs; i++)
        assert_int_not_equal(h.hdrs[i].kind, REM_HDR_UNDERSCORE);
    rem_head_dispose(&h);
}

/* drop: REM_HDR_UNDERSCORE, counted, not written; the count survives a second classification
 * (h2 classifies again after joining cookies) and the policy survives a reset. */
static void test_underscores_drop(void **state)
{
    (void)state;
    write_request_underscores(REM_UNDERSCORES_DROP, "");
    struct rem_head h;
    build_underscores(&h, REM_UNDERSCORES_DROP, underscore_hdrs);
    assert_int_equal(h.n_underscore, 3);
    assert_int_equal(h.hdrs[0].kind, REM_HDR_HOST);
    assert_int_equal(h.hdrs[1].kind, REM_HDR_UNDERSCORE);
    assert_int_equal(h.hdrs[2].kind, REM_HDR_UNDERSCORE);
    assert_int_equal(h.hdrs[3].kind, REM_HDR_UNDERSCORE);
    assert_int_equal(h.hdrs[4].kind, REM_HDR_OTHER);
    rem_head_classify(&h);
    assert_int_equal(h.n_underscore, 3);
    rem_head_reset(&h);
    assert_int_equal(h.n_underscore, 0);
    assert_int_equal(h.underscores, REM_UNDERSCORES_DROP);
    rem_head_dispose(&h);
}

/* reject: counted, kinds untouched (the stream refuses the request with header_underscore). */
static void test_underscores_reject(void **state)
{
    struct rem_head h;

    (void)state;
    build_underscores(&h, REM_UNDERSCORES_REJECT, underscore_hdrs);
    assert_int_equal(h.n_underscore, 3);
    assert_int_equal(h.hdrs[1].kind, REM_HDR_OTHER);
    rem_head_dispose(&h);
    static const struct kv clean[] = {{"X-A_", ""}, {NULL, NULL}};
    build_underscores(&h, REM_UNDERSCORES_REJECT, clean);
    assert_int_equal(h.n_underscore, 1); /* anywhere in the name, even last */
    rem_head_dispose(&h);
    static const struct kv none[] = {{"X-A-B", "a_b"}, {":x_y", "1"}, {NULL, NULL}};
    build_underscores(&h, REM_UNDERSCORES_REJECT, none);
    assert_int_equal(h.n_underscore, 0); /* values and pseudo-header names are not looked at */
    rem_head_dispose(&h);
    assert_int_equal(rem_err_status(REM_E_HEADER_UNDERSCORE), 400);
    assert_string_equal(rem_err_label(REM_E_HEADER_UNDERSCORE), "header_underscore");
}

/* Request trailers follow the head's policy; responses (ALLOW, never set) are untouched. */
static void test_underscores_trailers_and_responses(void **state)
{
    static const struct kv trl[] = {{"grpc_status", "0"}, {"X-Sum", "abc"}, {NULL, NULL}};
    struct rem_head h;
    struct evbuffer *out = evbuffer_new();

    (void)state;
    assert_non_null(out);
    build_underscores(&h, REM_UNDERSCORES_DROP, trl);
    assert_int_equal(rem_http_write_last_chunk(out, &h), 0);
    assert_output(out, "0\r\nX-Sum: abc\r\n\r\n");
    rem_head_dispose(&h);
    build_underscores(&h, REM_UNDERSCORES_ALLOW, trl);
    assert_int_equal(rem_http_write_last_chunk(out, &h), 0);
    assert_output(out, "0\r\ngrpc_status: 0\r\nX-Sum: abc\r\n\r\n");
    rem_head_dispose(&h);

    static const struct kv resp[] = {{"X_App", "1"}, {NULL, NULL}};
    build_response(&h, 200, "OK", resp);
    assert_int_equal(h.n_underscore, 0);
    struct rem_fwd_response fr = {.content_length = 0};
    assert_int_equal(rem_http_write_response(out, &h, &fr), 0);
    assert_output(out, "HTTP/1.1 200 OK\r\nX_App: 1\r\nContent-Length: 0\r\n\r\n");
    evbuffer_free(out);
    rem_head_dispose(&h);
}

static void test_classify_near_names(void **state)
{
    static const struct kv hdrs[] = {
        {"Hosts", "a"},
        {"Content-Length2", "1"},
        {"Connectio", "close"},
        {"TEE", "x"},
        {"X-Request-Ids", "r"},
        {"Expected", "100-continue"},
        {"Transfer-Encodings", "gzip"},
        {NULL, NULL},
    };
    struct rem_head h;

    (void)state;
    classify(&h, hdrs);
    for (uint32_t i = 0; i < h.n_hdrs; i++)
        assert_int_equal(h.hdrs[i].kind, REM_HDR_OTHER);
    assert_int_equal(h.n_host, 0);
    assert_int_equal(h.host_idx, -1);
    assert_int_equal(h.content_length, -1);
    assert_false(h.conn_close);
    assert_false(h.expect_continue || h.expect_other);
    assert_int_equal(h.request_id_idx, -1);
    assert_false(h.te_unsupported || h.chunked);
    rem_head_dispose(&h);
}

struct cl_case {
    const char *values[3]; /* one Content-Length field per value */
    int64_t content_length;
    bool conflict;
};

/* RFC 9112 6.3: identical values (as a list or repeated fields) fold; anything else is fatal. */
static void test_classify_content_length(void **state)
{
    static const struct cl_case cases[] = {
        {{"5"}, 5, false},
        {{"0"}, 0, false},
        {{"007"}, 7, false},
        {{"5, 5"}, 5, false},
        {{"5,5"}, 5, false},
        {{"5 ,\t5 , 5"}, 5, false},
        {{"5", "5"}, 5, false},
        {{"5, 5", "5"}, 5, false},
        {{"123456789012345678"}, 123456789012345678, false},
        {{"5, 6"}, 0, true},
        {{"5", "6"}, 0, true},
        {{"5", "5, 6"}, 0, true},
        {{"abc"}, 0, true},
        {{"5a"}, 0, true},
        {{"-1"}, 0, true},
        {{"+5"}, 0, true},
        {{"0x10"}, 0, true},
        {{""}, 0, true},
        {{"1 2"}, 0, true},
        {{"1234567890123456789"}, 0, true}, /* beyond what remora accepts */
    };
    struct kv hdrs[4];
    struct rem_head h;

    (void)state;
    for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
        size_t n = 0;

        for (; n < 3 && cases[c].values[n]; n++)
            hdrs[n] = (struct kv){"Content-Length", cases[c].values[n]};
        hdrs[n] = (struct kv){NULL, NULL};
        classify(&h, hdrs);
        if (h.cl_conflict != cases[c].conflict)
            fail_msg("case %zu (%s): cl_conflict %d", c, cases[c].values[0], h.cl_conflict);
        if (!cases[c].conflict && h.content_length != cases[c].content_length)
            fail_msg("case %zu (%s): content_length %lld", c, cases[c].values[0],
                     (long long)h.content_length);
        assert_false(h.chunked);
        assert_false(h.te_unsupported);
        rem_head_dispose(&h);
    }
}

struct te_case {
    const char *values[3];
    bool chunked, unsupported, not_final;
};

/* RFC 9112 6.1: chunked is the only coding remora understands, and it must come last, once
 * (not_final: 400 on a request, 6.3; only a coding before it: 501). */
static void test_classify_transfer_encoding(void **state)
{
    static const struct te_case cases[] = {
        {{"chunked"}, true, false, false},
        {{"Chunked"}, true, false, false},
        {{"CHUNKED"}, true, false, false},
        {{" chunked "}, true, false, false},
        {{"gzip, chunked"}, false, true, false},
        {{"chunked, gzip"}, false, true, true},
        {{"chunked, identity"}, false, true, true},
        {{"identity"}, false, true, true},
        {{"gzip"}, false, true, true},
        {{""}, false, true, true},
        {{"chunked, chunked"}, false, true, true},
        {{"chunkedx"}, false, true, true},
        {{"gzip", "chunked"}, false, true, false},
        {{"chunked", "gzip"}, false, true, true},
        {{"chunked", ""}, false, true, true},
    };
    struct kv hdrs[4];
    struct rem_head h;

    (void)state;
    for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
        size_t n = 0;

        for (; n < 3 && cases[c].values[n]; n++)
            hdrs[n] = (struct kv){"Transfer-Encoding", cases[c].values[n]};
        hdrs[n] = (struct kv){NULL, NULL};
        classify(&h, hdrs);
        if (h.chunked != cases[c].chunked || h.te_unsupported != cases[c].unsupported ||
            h.te_not_final != cases[c].not_final)
            fail_msg("case %zu (%s): chunked %d te_unsupported %d te_not_final %d", c,
                     cases[c].values[0], h.chunked, h.te_unsupported, h.te_not_final);
        assert_int_equal(h.content_length, -1);
        assert_false(h.cl_conflict);
        rem_head_dispose(&h);
    }
}

/* RFC 9110 5.3: two field lines mean the same as one line listing both values, so chunked on
 * two Transfer-Encoding lines is chunked applied twice, as "chunked, chunked" is. */
static void test_classify_chunked_twice_across_fields(void **state)
{
    static const struct kv one[] = {{"Transfer-Encoding", "chunked, chunked"}, {NULL, NULL}};
    static const struct kv two[] = {
        {"Transfer-Encoding", "chunked"},
        {"Transfer-Encoding", "chunked"},
        {NULL, NULL},
    };
    struct rem_head h;

    (void)state;
    classify(&h, one);
    assert_true(h.te_unsupported);
    assert_false(h.chunked);
    rem_head_dispose(&h);
    classify(&h, two);
    assert_true(h.te_unsupported);
    assert_false(h.chunked);
    rem_head_dispose(&h);
}

/* RFC 9112 6.3: Transfer-Encoding overrides Content-Length, and the pair is refused. */
static void test_classify_cl_and_te(void **state)
{
    static const struct kv cl_te[] = {
        {"Content-Length", "10"},
        {"Transfer-Encoding", "chunked"},
        {NULL, NULL},
    };
    static const struct kv te_cl[] = {
        {"transfer-encoding", "chunked"},
        {"content-length", "10"},
        {NULL, NULL},
    };
    struct rem_head h;

    (void)state;
    classify(&h, cl_te);
    assert_true(h.cl_conflict);
    assert_true(h.chunked);
    assert_int_equal(h.content_length, -1);
    rem_head_dispose(&h);
    classify(&h, te_cl);
    assert_true(h.cl_conflict);
    assert_true(h.chunked);
    assert_int_equal(h.content_length, -1);
    rem_head_dispose(&h);
}

static void test_classify_expect(void **state)
{
    static const struct kv cont[] = {{"Expect", "100-continue"}, {NULL, NULL}};
    static const struct kv cont_case[] = {{"expect", "100-CONTINUE"}, {NULL, NULL}};
    static const struct kv other[] = {{"Expect", "something"}, {NULL, NULL}};
    static const struct kv none[] = {{"X-A", "b"}, {NULL, NULL}};
    struct rem_head h;

    (void)state;
    classify(&h, cont);
    assert_true(h.expect_continue);
    assert_false(h.expect_other);
    rem_head_dispose(&h);
    classify(&h, cont_case);
    assert_true(h.expect_continue);
    assert_false(h.expect_other);
    rem_head_dispose(&h);
    classify(&h, other);
    assert_false(h.expect_continue);
    assert_true(h.expect_other);
    rem_head_dispose(&h);
    classify(&h, none);
    assert_false(h.expect_continue);
    assert_false(h.expect_other);
    rem_head_dispose(&h);
}

static void test_classify_host_and_request_id(void **state)
{
    static const struct kv none[] = {{"X-A", "b"}, {NULL, NULL}};
    static const struct kv one[] = {
        {"X-A", "b"},
        {"Host", "example.com"},
        {"x-request-id", "first"},
        {"X-Request-Id", "second"},
        {NULL, NULL},
    };
    static const struct kv two[] = {{"Host", "a"}, {"X-B", "c"}, {"host", "b"}, {NULL, NULL}};
    struct rem_head h;

    (void)state;
    classify(&h, none);
    assert_int_equal(h.n_host, 0);
    assert_int_equal(h.host_idx, -1);
    assert_int_equal(h.request_id_idx, -1);
    rem_head_dispose(&h);

    classify(&h, one);
    assert_int_equal(h.n_host, 1);
    assert_int_equal(h.host_idx, 1);
    assert_int_equal(h.request_id_idx, 2); /* the first one */
    rem_head_dispose(&h);

    classify(&h, two);
    assert_int_equal(h.n_host, 2);
    assert_true(h.host_idx == 0 || h.host_idx == 2);
    rem_head_dispose(&h);
}

static void test_classify_connection_flags(void **state)
{
    static const struct {
        const char *value;
        bool close, keepalive;
    } cases[] = {
        {"close", true, false},           {"Close", true, false},
        {"keep-alive", false, true},      {"Keep-Alive", false, true},
        {"x-foo, CLOSE", true, false},    {"close, keep-alive", true, true},
        {"upgrade", false, false},        {"closed", false, false},
        {"keep-alive-ish", false, false}, {"", false, false},
    };
    struct kv hdrs[2] = {{NULL, NULL}, {NULL, NULL}};
    struct rem_head h;

    (void)state;
    for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
        hdrs[0] = (struct kv){"Connection", cases[c].value};
        classify(&h, hdrs);
        if (h.conn_close != cases[c].close || h.conn_keepalive != cases[c].keepalive)
            fail_msg("Connection: %s -> close %d keep-alive %d", cases[c].value, h.conn_close,
                     h.conn_keepalive);
        rem_head_dispose(&h);
    }

    /* Flags gather over several Connection fields. */
    static const struct kv two[] = {
        {"Connection", "keep-alive"},
        {"Connection", "close"},
        {NULL, NULL},
    };
    classify(&h, two);
    assert_true(h.conn_close);
    assert_true(h.conn_keepalive);
    rem_head_dispose(&h);
}

/* ---- token lists, bodies, names ----------------------------------------------------------- */

static bool has(const char *list, const char *token)
{
    return rem_http_list_has(list, strlen(list), token);
}

static void test_list_has(void **state)
{
    (void)state;
    assert_true(has("close", "close"));
    assert_true(has("Close", "close"));
    assert_true(has("close", "CLOSE"));
    assert_true(has("a, b ,c", "a"));
    assert_true(has("a, b ,c", "b"));
    assert_true(has("a, b ,c", "c"));
    assert_true(has(" \ta\t ", "a"));
    assert_true(has(",,a,,", "a"));
    assert_true(has("keep-alive, Upgrade", "upgrade"));
    assert_false(has("", "a"));
    assert_false(has(",, ,", "a"));
    assert_false(has("ab", "a"));
    assert_false(has("a", "ab"));
    assert_false(has("xclose, closex", "close"));
    assert_false(has("keep-alive", "keep"));
    /* The length is explicit. */
    assert_true(rem_http_list_has("close, x", 5, "close"));
    assert_false(rem_http_list_has("close, x", 8 - 3, "x"));
    assert_false(rem_http_list_has("clos", 3, "clos"));
}

static void test_name_eq(void **state)
{
    (void)state;
    assert_true(rem_http_name_eq("Host", 4, "host"));
    assert_true(rem_http_name_eq("HOSTx", 4, "host"));
    assert_false(rem_http_name_eq("Hos", 3, "host"));
    assert_false(rem_http_name_eq("Hosts", 5, "host"));
}

static void test_response_has_body(void **state)
{
    (void)state;
    assert_true(rem_http_response_has_body(false, 200));
    assert_true(rem_http_response_has_body(false, 201));
    assert_true(rem_http_response_has_body(false, 301));
    assert_true(rem_http_response_has_body(false, 404));
    assert_true(rem_http_response_has_body(false, 500));
    assert_false(rem_http_response_has_body(false, 100));
    assert_false(rem_http_response_has_body(false, 101));
    assert_false(rem_http_response_has_body(false, 103));
    assert_false(rem_http_response_has_body(false, 199));
    assert_false(rem_http_response_has_body(false, 204));
    assert_false(rem_http_response_has_body(false, 304));
    assert_false(rem_http_response_has_body(true, 200));
    assert_false(rem_http_response_has_body(true, 404));
    assert_false(rem_http_response_has_body(true, 500));
}

static void test_reason(void **state)
{
    (void)state;
    assert_string_equal(rem_http_reason(200), "OK");
    assert_string_equal(rem_http_reason(404), "Not Found");
    assert_string_equal(rem_http_reason(413), "Content Too Large");
    assert_string_equal(rem_http_reason(431), "Request Header Fields Too Large");
    assert_string_equal(rem_http_reason(501), "Not Implemented");
    assert_string_equal(rem_http_reason(502), "Bad Gateway");
    assert_string_equal(rem_http_reason(504), "Gateway Timeout");
    assert_string_equal(rem_http_reason(299), "Unknown");
    /* Every status remora sends itself has a real reason. */
    for (int e = 0; e < REM_E__COUNT; e++) {
        int st = rem_err_status((enum rem_err)e);

        if (st != 0 && strcmp(rem_http_reason(st), "Unknown") == 0)
            fail_msg("no reason phrase for %d (%s)", st, rem_err_label((enum rem_err)e));
    }
}

/* ---- request ids -------------------------------------------------------------------------- */

static void assert_uuid_v4(const char *id)
{
    assert_int_equal(strlen(id), 36);
    for (int i = 0; i < 36; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            assert_int_equal(id[i], '-');
            continue;
        }
        if (!((id[i] >= '0' && id[i] <= '9') || (id[i] >= 'a' && id[i] <= 'f')))
            fail_msg("%s: bad character at %d", id, i);
    }
    assert_int_equal(id[14], '4');
    assert_non_null(strchr("89ab", id[19]));
}

static void test_request_id_format(void **state)
{
    static const char variants[] = "89ab";
    uint64_t rng = 0x9e3779b97f4a7c15u;
    char a[37], b[37];
    bool variant_seen[4] = {false};

    (void)state;
    rem_http_request_id(a, &rng);
    assert_uuid_v4(a);
    rem_http_request_id(b, &rng);
    assert_uuid_v4(b);
    assert_string_not_equal(a, b);
    for (int i = 0; i < 2000; i++) {
        uint64_t before = rng;

        memcpy(a, b, sizeof(a));
        rem_http_request_id(b, &rng);
        assert_uuid_v4(b);
        assert_string_not_equal(a, b);
        assert_true(rng != before);
        variant_seen[strchr(variants, b[19]) - variants] = true;
    }
    /* The variant nibble keeps two random bits. */
    for (int i = 0; i < 4; i++)
        assert_true(variant_seen[i]);
}

/* Ids depend only on the caller's state: each worker owns its own. */
static void test_request_id_state(void **state)
{
    uint64_t s1 = 12345, s2 = 12345, s3 = 54321;
    char a[37], b[37], c[37];

    (void)state;
    rem_http_request_id(a, &s1);
    rem_http_request_id(b, &s2);
    rem_http_request_id(c, &s3);
    assert_string_equal(a, b);
    assert_string_not_equal(a, c);
    assert_true(s1 == s2);
    assert_true(s1 != 12345);
}

/* ---- request serialization ---------------------------------------------------------------- */

static void test_write_request_basic(void **state)
{
    static const struct kv hdrs[] = {
        {"Host", "example.com"},
        {"User-Agent", "curl/8.0"},
        {"Accept", "*/*"},
        {NULL, NULL},
    };
    struct rem_fwd_request fwd = fwd_req();

    (void)state;
    check_request(hdrs, &fwd,
                  "GET /p?q=1 HTTP/1.1\r\n"
                  "Host: example.com\r\n"
                  "User-Agent: curl/8.0\r\n"
                  "Accept: */*\r\n"
                  "X-Forwarded-For: 10.0.0.9\r\n"
                  "X-Forwarded-Proto: http\r\n"
                  "X-Request-Id: rid-1\r\n"
                  "\r\n");
}

/* RFC 9110 7.6.1: hop-by-hop fields stop here; end-to-end ones keep their order and case. */
static void test_write_request_drops_hop_by_hop(void **state)
{
    static const struct kv hdrs[] = {
        {"Host", "example.com"},
        {"Connection", "keep-alive, X-Conn-Named"},
        {"X-First", "1"},
        {"Keep-Alive", "timeout=5"},
        {"TE", "trailers"},
        {"Trailer", "X-Checksum"},
        {"Upgrade", "h2c"},
        {"Proxy-Connection", "keep-alive"},
        {"X-Conn-Named", "gone"},
        {"Content-Length", "4"},
        {"cookie", "A=1; b=2"},
        {"X-Empty", ""},
        {"X-Last", "Mixed Case Value"},
        {"x-first", "again"},
        {NULL, NULL},
    };
    struct rem_fwd_request fwd = fwd_req();

    (void)state;
    fwd.content_length = 4;
    check_request(hdrs, &fwd,
                  "GET /p?q=1 HTTP/1.1\r\n"
                  "Host: example.com\r\n"
                  "X-First: 1\r\n"
                  "cookie: A=1; b=2\r\n"
                  "X-Empty: \r\n"
                  "X-Last: Mixed Case Value\r\n"
                  "x-first: again\r\n"
                  "X-Forwarded-For: 10.0.0.9\r\n"
                  "X-Forwarded-Proto: http\r\n"
                  "X-Request-Id: rid-1\r\n"
                  "Content-Length: 4\r\n"
                  "\r\n");
}

/* Incoming framing is never copied: the caller's framing toward upstream replaces it. */
static void test_write_request_framing(void **state)
{
    static const struct kv te[] = {
        {"Host", "h"},
        {"Transfer-Encoding", "chunked"},
        {NULL, NULL},
    };
    static const struct kv cl[] = {{"Host", "h"}, {"Content-Length", "12"}, {NULL, NULL}};
    struct rem_fwd_request fwd = fwd_req();

    (void)state;
    fwd.request_id = NULL;
    fwd.chunked = true;
    check_request(te, &fwd,
                  "GET /p?q=1 HTTP/1.1\r\n"
                  "Host: h\r\n"
                  "X-Forwarded-For: 10.0.0.9\r\n"
                  "X-Forwarded-Proto: http\r\n"
                  "Transfer-Encoding: chunked\r\n"
                  "\r\n");

    /* chunked wins over a length. */
    fwd.content_length = 12;
    check_request(cl, &fwd,
                  "GET /p?q=1 HTTP/1.1\r\n"
                  "Host: h\r\n"
                  "X-Forwarded-For: 10.0.0.9\r\n"
                  "X-Forwarded-Proto: http\r\n"
                  "Transfer-Encoding: chunked\r\n"
                  "\r\n");

    fwd.chunked = false;
    check_request(cl, &fwd,
                  "GET /p?q=1 HTTP/1.1\r\n"
                  "Host: h\r\n"
                  "X-Forwarded-For: 10.0.0.9\r\n"
                  "X-Forwarded-Proto: http\r\n"
                  "Content-Length: 12\r\n"
                  "\r\n");

    fwd.content_length = 0;
    check_request(cl, &fwd,
                  "GET /p?q=1 HTTP/1.1\r\n"
                  "Host: h\r\n"
                  "X-Forwarded-For: 10.0.0.9\r\n"
                  "X-Forwarded-Proto: http\r\n"
                  "Content-Length: 0\r\n"
                  "\r\n");

    fwd.content_length = 9007199254740993;
    check_request(te, &fwd,
                  "GET /p?q=1 HTTP/1.1\r\n"
                  "Host: h\r\n"
                  "X-Forwarded-For: 10.0.0.9\r\n"
                  "X-Forwarded-Proto: http\r\n"
                  "Content-Length: 9007199254740993\r\n"
                  "\r\n");

    fwd.content_length = -1;
    check_request(cl, &fwd,
                  "GET /p?q=1 HTTP/1.1\r\n"
                  "Host: h\r\n"
                  "X-Forwarded-For: 10.0.0.9\r\n"
                  "X-Forwarded-Proto: http\r\n"
                  "\r\n");
}

/* X-Forwarded-For and -Proto gather every incoming value, then remora's own. */
static void test_write_request_forwarding_headers(void **state)
{
    static const struct kv two[] = {
        {"X-Forwarded-For", "a"},       {"Host", "h"},    {"x-forwarded-for", "b"},
        {"X-Forwarded-Proto", "https"}, {"X-After", "z"}, {NULL, NULL},
    };
    static const struct kv list[] = {
        {"Host", "h"},
        {"X-Forwarded-For", "192.0.2.1, 198.51.100.2"},
        {"X-Forwarded-For", ""},
        {NULL, NULL},
    };
    struct rem_fwd_request fwd = fwd_req();

    (void)state;
    fwd.request_id = NULL;
    check_request(two, &fwd,
                  "GET /p?q=1 HTTP/1.1\r\n"
                  "Host: h\r\n"
                  "X-After: z\r\n"
                  "X-Forwarded-For: a, b, 10.0.0.9\r\n"
                  "X-Forwarded-Proto: https, http\r\n"
                  "\r\n");
    fwd.client_addr = "2001:db8::1";
    check_request(list, &fwd,
                  "GET /p?q=1 HTTP/1.1\r\n"
                  "Host: h\r\n"
                  "X-Forwarded-For: 192.0.2.1, 198.51.100.2, 2001:db8::1\r\n"
                  "X-Forwarded-Proto: http\r\n"
                  "\r\n");
}

/* An incoming X-Request-Id is forwarded where it was and never duplicated. */
static void test_write_request_request_id(void **state)
{
    static const struct kv with[] = {
        {"Host", "h"},
        {"X-Request-ID", "client-id"},
        {"X-B", "b"},
        {NULL, NULL},
    };
    struct rem_fwd_request fwd = fwd_req();
    const char *want = "GET /p?q=1 HTTP/1.1\r\n"
                       "Host: h\r\n"
                       "X-Request-ID: client-id\r\n"
                       "X-B: b\r\n"
                       "X-Forwarded-For: 10.0.0.9\r\n"
                       "X-Forwarded-Proto: http\r\n"
                       "\r\n";

    (void)state;
    check_request(with, &fwd, want);
    fwd.request_id = NULL;
    check_request(with, &fwd, want);
}

/* Host comes from default_host only when the request has none (HTTP/1.0). */
static void test_write_request_default_host(void **state)
{
    static const struct kv without[] = {{"Accept", "*/*"}, {NULL, NULL}};
    static const struct kv with[] = {{"Accept", "*/*"}, {"host", "Client.Example"}, {NULL, NULL}};
    struct rem_fwd_request fwd = fwd_req();

    (void)state;
    check_request(without, &fwd,
                  "GET /p?q=1 HTTP/1.1\r\n"
                  "Accept: */*\r\n"
                  "Host: app:8080\r\n"
                  "X-Forwarded-For: 10.0.0.9\r\n"
                  "X-Forwarded-Proto: http\r\n"
                  "X-Request-Id: rid-1\r\n"
                  "\r\n");
    check_request(with, &fwd,
                  "GET /p?q=1 HTTP/1.1\r\n"
                  "Accept: */*\r\n"
                  "host: Client.Example\r\n"
                  "X-Forwarded-For: 10.0.0.9\r\n"
                  "X-Forwarded-Proto: http\r\n"
                  "X-Request-Id: rid-1\r\n"
                  "\r\n");
    fwd.default_host = NULL;
    check_request(without, &fwd,
                  "GET /p?q=1 HTTP/1.1\r\n"
                  "Accept: */*\r\n"
                  "X-Forwarded-For: 10.0.0.9\r\n"
                  "X-Forwarded-Proto: http\r\n"
                  "X-Request-Id: rid-1\r\n"
                  "\r\n");
}

/* RFC 9110 10.1.1: remora answers 100-continue itself; other expectations go on. */
static void test_write_request_expect(void **state)
{
    static const struct kv cont[] = {
        {"Host", "h"},
        {"Expect", "100-continue"},
        {"X-A", "1"},
        {NULL, NULL},
    };
    static const struct kv other[] = {
        {"Host", "h"},
        {"Expect", "x-custom"},
        {"X-A", "1"},
        {NULL, NULL},
    };
    struct rem_fwd_request fwd = fwd_req();

    (void)state;
    fwd.request_id = NULL;
    check_request(cont, &fwd,
                  "GET /p?q=1 HTTP/1.1\r\n"
                  "Host: h\r\n"
                  "X-A: 1\r\n"
                  "X-Forwarded-For: 10.0.0.9\r\n"
                  "X-Forwarded-Proto: http\r\n"
                  "\r\n");
    check_request(other, &fwd,
                  "GET /p?q=1 HTTP/1.1\r\n"
                  "Host: h\r\n"
                  "Expect: x-custom\r\n"
                  "X-A: 1\r\n"
                  "X-Forwarded-For: 10.0.0.9\r\n"
                  "X-Forwarded-Proto: http\r\n"
                  "\r\n");
}

/* Only the 100-continue line is remora's to consume; another Expect line still goes on. */
static void test_write_request_expect_mixed(void **state)
{
    static const struct kv mixed[] = {
        {"Host", "h"},
        {"Expect", "x-custom"},
        {"Expect", "100-continue"},
        {NULL, NULL},
    };
    struct rem_fwd_request fwd = fwd_req();

    (void)state;
    fwd.request_id = NULL;
    check_request(mixed, &fwd,
                  "GET /p?q=1 HTTP/1.1\r\n"
                  "Host: h\r\n"
                  "Expect: x-custom\r\n"
                  "X-Forwarded-For: 10.0.0.9\r\n"
                  "X-Forwarded-Proto: http\r\n"
                  "\r\n");
}

/* The request line always says HTTP/1.1 and keeps method and target bytes as received. */
static void test_write_request_line(void **state)
{
    static const struct kv hdrs[] = {{"Host", "h"}, {NULL, NULL}};
    struct rem_fwd_request fwd = fwd_req();
    struct evbuffer *out = evbuffer_new();
    struct rem_head h;

    (void)state;
    fwd.request_id = NULL;
    build(&h, "OPTIONS", "*", hdrs);
    h.http_minor = 0;
    assert_int_equal(rem_http_write_request(out, &h, &fwd), 0);
    assert_output(out, "OPTIONS * HTTP/1.1\r\n"
                       "Host: h\r\n"
                       "X-Forwarded-For: 10.0.0.9\r\n"
                       "X-Forwarded-Proto: http\r\n"
                       "\r\n");
    rem_head_dispose(&h);

    /* absolute-form goes on in origin-form with Host from its authority (RFC 9112 3.2.2). */
    build(&h, "PATCH", "http://h/a%20b?x=%2F", hdrs);
    assert_int_equal(rem_http_write_request(out, &h, &fwd), 0);
    assert_output(out, "PATCH /a%20b?x=%2F HTTP/1.1\r\n"
                       "Host: h\r\n"
                       "X-Forwarded-For: 10.0.0.9\r\n"
                       "X-Forwarded-Proto: http\r\n"
                       "\r\n");
    rem_head_dispose(&h);
    evbuffer_free(out);
}

/* The head is appended to whatever out holds, e.g. a previous pipelined request. */
static void test_write_request_appends(void **state)
{
    static const struct kv hdrs[] = {{"Host", "h"}, {NULL, NULL}};
    struct rem_fwd_request fwd = fwd_req();
    struct evbuffer *out = evbuffer_new();
    struct rem_head h;

    (void)state;
    fwd.request_id = NULL;
    build(&h, "GET", "/", hdrs);
    assert_int_equal(evbuffer_add(out, "body", 4), 0);
    assert_int_equal(rem_http_write_request(out, &h, &fwd), 0);
    assert_output(out, "body"
                       "GET / HTTP/1.1\r\n"
                       "Host: h\r\n"
                       "X-Forwarded-For: 10.0.0.9\r\n"
                       "X-Forwarded-Proto: http\r\n"
                       "\r\n");
    rem_head_dispose(&h);
    evbuffer_free(out);
}

/* A head at its limits still serializes completely (the reservation covers the worst case). */
static void test_write_request_large_head(void **state)
{
    struct rem_fwd_request fwd = fwd_req();
    struct evbuffer *out = evbuffer_new();
    struct rem_head h;
    char name[16];
    size_t want_len = strlen("GET / HTTP/1.1\r\n") + strlen("X-Forwarded-For: \r\n") +
                      strlen("X-Forwarded-Proto: http\r\n") + strlen("X-Request-Id: rid-1\r\n") +
                      strlen("Content-Length: 0\r\n") + 2;

    (void)state;
    rem_head_init(&h, 64 * 1024, 100);
    assert_int_equal(rem_head_add_span(&h, REM_SPAN_METHOD, "GET", 3), 0);
    assert_int_equal(rem_head_add_span(&h, REM_SPAN_TARGET, "/", 1), 0);
    for (int i = 0; i < 100; i++) {
        /* Every other field is an X-Forwarded-For: each costs ", " when joined. */
        const char *n = i % 2 ? "X-Forwarded-For" : name;
        size_t nl = i % 2 ? 15 : (size_t)snprintf(name, sizeof(name), "X-%d", i);

        assert_int_equal(rem_head_add_name(&h, n, nl), 0);
        assert_int_equal(rem_head_add_value(&h, "", 0), 0);
        if (i % 2)
            assert_int_equal(rem_head_add_value(&h, "1", 1), 0);
        want_len += i % 2 ? 3 : nl + 4;
    }
    want_len += strlen("10.0.0.9"); /* each "1" brought its ", " */
    rem_head_classify(&h);
    fwd.default_host = "a-rather-long-default-host-name.namespace.svc.cluster.local:65535";
    want_len += strlen("Host: \r\n") + strlen(fwd.default_host);
    fwd.content_length = 0;
    assert_int_equal(rem_http_write_request(out, &h, &fwd), 0);
    assert_int_equal(evbuffer_get_length(out), want_len);
    rem_head_dispose(&h);
    evbuffer_free(out);
}

/* ---- response serialization --------------------------------------------------------------- */

static struct rem_fwd_response fwd_resp(void)
{
    struct rem_fwd_response f = {
        .request_id = "rid-1",
        .request_id_len = 5,
        .chunked = false,
        .content_length = -1,
        .conn_close = false,
        .conn_keepalive = false,
    };
    return f;
}

static void check_response(int status, const char *reason, const struct kv *hdrs,
                           const struct rem_fwd_response *fwd, const char *want)
{
    struct rem_head h;
    struct evbuffer *out = evbuffer_new();

    assert_non_null(out);
    build_response(&h, status, reason, hdrs);
    assert_int_equal(rem_http_write_response(out, &h, fwd), 0);
    assert_output(out, want);
    evbuffer_free(out);
    rem_head_dispose(&h);
}

static void test_write_response_status_line(void **state)
{
    static const struct kv none[] = {{NULL, NULL}};
    struct rem_fwd_response fwd = fwd_resp();

    (void)state;
    fwd.request_id = NULL;
    check_response(200, "Fine Thanks", none, &fwd, "HTTP/1.1 200 Fine Thanks\r\n\r\n");
    check_response(200, NULL, none, &fwd, "HTTP/1.1 200 OK\r\n\r\n");
    check_response(404, NULL, none, &fwd, "HTTP/1.1 404 Not Found\r\n\r\n");
    check_response(503, NULL, none, &fwd, "HTTP/1.1 503 Service Unavailable\r\n\r\n");
    check_response(299, NULL, none, &fwd, "HTTP/1.1 299 Unknown\r\n\r\n");
    check_response(204, "No Content", none, &fwd, "HTTP/1.1 204 No Content\r\n\r\n");
}

static void test_write_response_headers(void **state)
{
    static const struct kv hdrs[] = {
        {"Content-Type", "text/html"},
        {"Connection", "keep-alive, X-Hop"},
        {"Set-Cookie", "a=1"},
        {"Keep-Alive", "timeout=5"},
        {"Content-Length", "10"},
        {"Transfer-Encoding", "chunked"},
        {"Upgrade", "h2c"},
        {"Trailer", "X-Sum"},
        {"Proxy-Connection", "close"},
        {"X-Hop", "1"},
        {"set-cookie", "b=2"},
        {"Server", "app"},
        {NULL, NULL},
    };
    struct rem_fwd_response fwd = fwd_resp();

    (void)state;
    fwd.content_length = 10;
    check_response(200, "OK", hdrs, &fwd,
                   "HTTP/1.1 200 OK\r\n"
                   "Content-Type: text/html\r\n"
                   "Set-Cookie: a=1\r\n"
                   "set-cookie: b=2\r\n"
                   "Server: app\r\n"
                   "X-Request-Id: rid-1\r\n"
                   "Content-Length: 10\r\n"
                   "\r\n");
}

static void test_write_response_request_id(void **state)
{
    static const struct kv with[] = {
        {"X-A", "1"},
        {"x-request-id", "from-app"},
        {"X-B", "2"},
        {NULL, NULL},
    };
    static const struct kv without[] = {{"X-A", "1"}, {NULL, NULL}};
    struct rem_fwd_response fwd = fwd_resp();

    (void)state;
    check_response(200, "OK", with, &fwd,
                   "HTTP/1.1 200 OK\r\n"
                   "X-A: 1\r\n"
                   "x-request-id: from-app\r\n"
                   "X-B: 2\r\n"
                   "\r\n");
    /* The id is a slice: request_id_len bytes, no NUL needed. */
    fwd.request_id = "0123456789abcdef-trailing";
    fwd.request_id_len = 16;
    check_response(200, "OK", without, &fwd,
                   "HTTP/1.1 200 OK\r\n"
                   "X-A: 1\r\n"
                   "X-Request-Id: 0123456789abcdef\r\n"
                   "\r\n");
    fwd.request_id = NULL;
    fwd.request_id_len = 0;
    check_response(200, "OK", without, &fwd,
                   "HTTP/1.1 200 OK\r\n"
                   "X-A: 1\r\n"
                   "\r\n");
}

static void test_write_response_framing_and_connection(void **state)
{
    static const struct kv hdrs[] = {
        {"Content-Length", "3"},
        {"Connection", "close"},
        {NULL, NULL},
    };
    struct rem_fwd_response fwd = fwd_resp();

    (void)state;
    fwd.request_id = NULL;
    fwd.chunked = true;
    check_response(200, "OK", hdrs, &fwd,
                   "HTTP/1.1 200 OK\r\n"
                   "Transfer-Encoding: chunked\r\n"
                   "\r\n");
    fwd.content_length = 3; /* chunked wins */
    check_response(200, "OK", hdrs, &fwd,
                   "HTTP/1.1 200 OK\r\n"
                   "Transfer-Encoding: chunked\r\n"
                   "\r\n");
    fwd.chunked = false;
    fwd.conn_close = true;
    check_response(200, "OK", hdrs, &fwd,
                   "HTTP/1.1 200 OK\r\n"
                   "Content-Length: 3\r\n"
                   "Connection: close\r\n"
                   "\r\n");
    fwd.conn_keepalive = true; /* close wins */
    check_response(200, "OK", hdrs, &fwd,
                   "HTTP/1.1 200 OK\r\n"
                   "Content-Length: 3\r\n"
                   "Connection: close\r\n"
                   "\r\n");
    fwd.conn_close = false;
    fwd.content_length = -1;
    check_response(304, "Not Modified", hdrs, &fwd,
                   "HTTP/1.1 304 Not Modified\r\n"
                   "Connection: keep-alive\r\n"
                   "\r\n");
    fwd.conn_keepalive = false;
    fwd.content_length = 0;
    check_response(200, "OK", hdrs, &fwd,
                   "HTTP/1.1 200 OK\r\n"
                   "Content-Length: 0\r\n"
                   "\r\n");
}

/* ---- remora's own errors ------------------------------------------------------------------ */

static void test_write_error_exact(void **state)
{
    struct evbuffer *out = evbuffer_new();

    (void)state;
    assert_int_equal(rem_http_write_error(out, 404, "no_route", "rid-1xyz", 5, true, false, false),
                     0);
    assert_output(out, "HTTP/1.1 404 Not Found\r\n"
                       "Content-Type: text/plain\r\n"
                       "Content-Length: 33\r\n"
                       "x-remora-error: no_route\r\n"
                       "X-Request-Id: rid-1\r\n"
                       "Connection: close\r\n"
                       "\r\n"
                       "remora: 404 Not Found (no_route)\n");

    assert_int_equal(
        rem_http_write_error(out, 502, "connect_refused", NULL, 0, false, false, false), 0);
    assert_output(out, "HTTP/1.1 502 Bad Gateway\r\n"
                       "Content-Type: text/plain\r\n"
                       "Content-Length: 42\r\n"
                       "x-remora-error: connect_refused\r\n"
                       "\r\n"
                       "remora: 502 Bad Gateway (connect_refused)\n");
    evbuffer_free(out);
}

/* RFC 9110 9.3.2: a HEAD response carries the same Content-Length but no body. */
static void test_write_error_head(void **state)
{
    struct evbuffer *out = evbuffer_new();

    (void)state;
    assert_int_equal(rem_http_write_error(out, 404, "no_route", "r", 1, false, true, false), 0);
    assert_output(out, "HTTP/1.1 404 Not Found\r\n"
                       "Content-Type: text/plain\r\n"
                       "Content-Length: 33\r\n"
                       "x-remora-error: no_route\r\n"
                       "X-Request-Id: r\r\n"
                       "\r\n");
    evbuffer_free(out);
}

/* For every error that has a status, the head is well formed and Content-Length is the body. */
static void test_write_error_every_row(void **state)
{
    struct evbuffer *out = evbuffer_new();

    (void)state;
    for (int e = 0; e < REM_E__COUNT; e++) {
        int st = rem_err_status((enum rem_err)e);
        const char *label = rem_err_label((enum rem_err)e);
        char want_head[512], *got, *end;
        size_t n;
        long cl;

        if (st == 0)
            continue;
        assert_int_equal(rem_http_write_error(out, st, label, NULL, 0, true, false, false), 0);
        n = evbuffer_get_length(out);
        got = malloc(n + 1);
        assert_non_null(got);
        assert_int_equal(evbuffer_remove(out, got, n), (int)n);
        got[n] = '\0';
        snprintf(want_head, sizeof(want_head),
                 "HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: ", st,
                 rem_http_reason(st));
        assert_memory_equal(got, want_head, strlen(want_head));
        cl = strtol(got + strlen(want_head), &end, 10);
        end = strstr(got, "\r\n\r\n");
        assert_non_null(end);
        assert_int_equal(cl, (long)(n - (size_t)(end + 4 - got)));
        snprintf(want_head, sizeof(want_head), "\r\nx-remora-error: %s\r\n", label);
        assert_non_null(strstr(got, want_head));
        snprintf(want_head, sizeof(want_head), "remora: %d %s (%s)\n", st, rem_http_reason(st),
                 label);
        assert_string_equal(end + 4, want_head);
        free(got);
    }
    evbuffer_free(out);
}

/* ---- tunnels ------------------------------------------------------------------------------ */

static void test_websocket_accept_rfc6455_example(void **state)
{
    char out[29];
    static const char key[] = "dGhlIHNhbXBsZSBub25jZQ==";

    (void)state;
    /* RFC 6455 section 1.3's worked example. */
    assert_int_equal(rem_http_websocket_accept(out, key, sizeof(key) - 1), 0);
    assert_string_equal(out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
}

static void test_sha1_vectors(void **state)
{
    /* FIPS 180-2 appendix A and the empty message. */
    static const struct {
        const char *in, *hex;
        size_t repeat;
    } v[] = {
        {"abc", "a9993e364706816aba3e25717850c26c9cd0d89d", 1},
        {"", "da39a3ee5e6b4b0d3255bfef95601890afd80709", 1},
        {"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
         "84983e441c3bd26ebaae4aa1f95129e5e54670f1", 1},
        {"a", "34aa973cd4c4daa4f61eeb2bdbad27316534016f", 1000000},
    };
    (void)state;
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        struct rem_sha1 c;
        uint8_t md[20];
        char hex[41];
        rem_sha1_init(&c);
        for (size_t k = 0; k < v[i].repeat; k++)
            rem_sha1_update(&c, v[i].in, strlen(v[i].in));
        rem_sha1_final(&c, md);
        for (int j = 0; j < 20; j++)
            snprintf(hex + 2 * j, 3, "%02x", md[j]);
        assert_string_equal(hex, v[i].hex);
    }
    /* Any split of the input gives the same digest (block boundaries inside updates). */
    static const char msg[] = "The quick brown fox jumps over the lazy dog, and then again.";
    uint8_t whole[20], split[20];
    struct rem_sha1 c;
    rem_sha1_init(&c);
    rem_sha1_update(&c, msg, sizeof(msg) - 1);
    rem_sha1_final(&c, whole);
    for (size_t cut = 0; cut < sizeof(msg); cut++) {
        rem_sha1_init(&c);
        rem_sha1_update(&c, msg, cut);
        rem_sha1_update(&c, msg + cut, sizeof(msg) - 1 - cut);
        rem_sha1_final(&c, split);
        assert_memory_equal(whole, split, 20);
    }
}

static void test_websocket_key_shape(void **state)
{
    uint64_t rng = 0x9e3779b97f4a7c15ull;
    char a[25], b[25];

    (void)state;
    rem_http_websocket_key(a, &rng);
    rem_http_websocket_key(b, &rng);
    /* 16 bytes in base64: 22 characters of the alphabet, then "==" (RFC 6455 4.1). */
    assert_int_equal(strlen(a), 24);
    assert_string_equal(a + 22, "==");
    for (int i = 0; i < 22; i++)
        assert_non_null(
            strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/", a[i]));
    assert_string_not_equal(a, b);
}

static void test_write_request_upgrade(void **state)
{
    static const struct kv hdrs[] = {
        {"Host", "a"},
        {"Connection", "keep-alive, Upgrade"},
        {"Upgrade", "websocket"},
        {"Sec-WebSocket-Version", "13"},
        {NULL, NULL},
    };
    struct rem_fwd_request fwd = fwd_req();

    (void)state;
    /* The client's own Upgrade and Connection are hop-by-hop; the offer is written once. */
    fwd.upgrade = "websocket";
    fwd.upgrade_len = 9;
    check_request(hdrs, &fwd,
                  "GET /p?q=1 HTTP/1.1\r\n"
                  "Host: a\r\n"
                  "Sec-WebSocket-Version: 13\r\n"
                  "X-Forwarded-For: 10.0.0.9\r\n"
                  "X-Forwarded-Proto: http\r\n"
                  "X-Request-Id: rid-1\r\n"
                  "Upgrade: websocket\r\n"
                  "Connection: Upgrade\r\n"
                  "\r\n");
    /* An h2 extended CONNECT: GET, and the key the h2 client did not send. */
    fwd.method = "GET";
    fwd.websocket_key = "AAAAAAAAAAAAAAAAAAAAAA==";
    struct rem_head h;
    struct evbuffer *out = evbuffer_new();
    assert_non_null(out);
    build(&h, "CONNECT", "/chat", hdrs + 3);
    assert_int_equal(rem_http_write_request(out, &h, &fwd), 0);
    assert_output(out, "GET /chat HTTP/1.1\r\n"
                       "Sec-WebSocket-Version: 13\r\n"
                       "Host: app:8080\r\n"
                       "X-Forwarded-For: 10.0.0.9\r\n"
                       "X-Forwarded-Proto: http\r\n"
                       "X-Request-Id: rid-1\r\n"
                       "Upgrade: websocket\r\n"
                       "Connection: Upgrade\r\n"
                       "Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA==\r\n"
                       "\r\n");
    evbuffer_free(out);
    rem_head_dispose(&h);
}

static void test_write_response_switching(void **state)
{
    static const struct kv hdrs[] = {
        {"Upgrade", "websocket"},
        {"Connection", "Upgrade"},
        {"Sec-WebSocket-Accept", "x"},
        {NULL, NULL},
    };
    static const struct kv h2app[] = {{"sec-websocket-protocol", "chat"}, {NULL, NULL}};
    struct rem_fwd_response fwd = fwd_resp();

    (void)state;
    fwd.upgrade = "websocket";
    fwd.upgrade_len = 9;
    /* No framing and no Connection: close on a 101: the connection is the tunnel now. */
    fwd.conn_close = true;
    check_response(101, "Switching Protocols", hdrs, &fwd,
                   "HTTP/1.1 101 Switching Protocols\r\n"
                   "Sec-WebSocket-Accept: x\r\n"
                   "X-Request-Id: rid-1\r\n"
                   "Upgrade: websocket\r\n"
                   "Connection: Upgrade\r\n"
                   "\r\n");
    /* An h2c app's 200 becomes the 101 an HTTP/1.1 client expects. */
    fwd.status = 101;
    fwd.websocket_accept = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";
    check_response(200, NULL, h2app, &fwd,
                   "HTTP/1.1 101 Switching Protocols\r\n"
                   "sec-websocket-protocol: chat\r\n"
                   "X-Request-Id: rid-1\r\n"
                   "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
                   "Upgrade: websocket\r\n"
                   "Connection: Upgrade\r\n"
                   "\r\n");
}

static void test_write_error_405_allow(void **state)
{
    struct evbuffer *out = evbuffer_new();

    (void)state;
    assert_non_null(out);
    assert_int_equal(
        rem_http_write_error(out, 405, "connect_disabled", NULL, 0, true, false, false), 0);
    size_t n = evbuffer_get_length(out);
    char *got = (char *)evbuffer_pullup(out, (ev_ssize_t)n);
    assert_non_null(strstr(got, "HTTP/1.1 405 Method Not Allowed\r\n"));
    assert_non_null(
        strstr(got, "\r\nAllow: GET, HEAD, POST, PUT, DELETE, OPTIONS, TRACE, PATCH\r\n"));
    assert_non_null(strstr(got, "\r\nx-remora-error: connect_disabled\r\n"));
    evbuffer_free(out);
}

static void test_head_value(void **state)
{
    static const struct kv hdrs[] = {
        {"X-A", "1"}, {"upgrade", "websocket"}, {"UPGRADE", "b"}, {NULL, NULL}};
    struct rem_head h;
    const char *v;
    size_t n;

    (void)state;
    classify(&h, hdrs);
    assert_true(rem_head_value(&h, "Upgrade", &v, &n));
    assert_int_equal(n, 9);
    assert_memory_equal(v, "websocket", 9); /* the first one */
    assert_false(rem_head_value(&h, "x-b", &v, &n));
    rem_head_dispose(&h);
}

/* RFC 9113 8.3.1: host and :authority name the same entity. */
static void test_authority_eq(void **state)
{
    (void)state;
#define EQ(a, b, dp) rem_http_authority_eq(a, strlen(a), b, strlen(b), dp)
    assert_true(EQ("example.com", "example.com", 443));
    assert_true(EQ("Example.COM", "example.com", 443));
    assert_true(EQ("example.com:443", "example.com", 443));
    assert_true(EQ("example.com", "example.com:0443", 443));
    assert_true(EQ("example.com:", "example.com", 80));
    assert_true(EQ("example.com:8080", "EXAMPLE.com:8080", 0));
    assert_true(EQ("[::1]:80", "[::1]", 80));
    assert_true(EQ("", "", 80));
    assert_false(EQ("example.com:80", "example.com", 443));
    assert_false(EQ("example.com:443", "example.com", 0));
    assert_false(EQ("example.com", "example.org", 443));
    assert_false(EQ("example.com", "example.co", 443));
    assert_false(EQ("example.com:8080", "example.com:8081", 0));
    assert_false(EQ("example.com:99999", "example.com:99999", 0));
    assert_false(EQ("exa mple.com", "exa mple.com", 0));
    assert_false(EQ("[::1]", "::1", 0));
    assert_false(EQ("a", "", 80));
#undef EQ
}

/* RFC 9112 3.2.3: CONNECT's target is uri-host ":" port, both present. */
static void test_authority_form(void **state)
{
    (void)state;
#define AF(t) rem_http_authority_form(t, strlen(t))
    assert_true(AF("example.com:443"));
    assert_true(AF("a:1"));
    assert_true(AF("[::1]:8080"));
    assert_true(AF("10.0.0.1:80"));
    assert_false(AF(""));
    assert_false(AF("example.com"));
    assert_false(AF("example.com:"));
    assert_false(AF(":443"));
    assert_false(AF("[]:443"));
    assert_false(AF("[::1]"));
    assert_false(AF("[::1]:"));
    assert_false(AF("/"));
    assert_false(AF("*"));
    assert_false(AF("u@example.com:443"));
    assert_false(AF("http://example.com/"));
    assert_false(AF("example.com:44x"));
#undef AF
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_head_init),
        cmocka_unit_test(test_head_pieces_split_across_calls),
        cmocka_unit_test(test_head_empty_value),
        cmocka_unit_test(test_head_empty_name_first),
        cmocka_unit_test(test_head_name_pieces_join),
        cmocka_unit_test(test_head_value_without_name),
        cmocka_unit_test(test_head_byte_limit),
        cmocka_unit_test(test_head_byte_limit_large),
        cmocka_unit_test(test_head_count_limit),
        cmocka_unit_test(test_head_growth_keeps_offsets),
        cmocka_unit_test(test_head_reset_keeps_memory),
        cmocka_unit_test(test_classify_kinds),
        cmocka_unit_test(test_classify_case_insensitive),
        cmocka_unit_test(test_classify_near_names),
        cmocka_unit_test(test_underscores_allow),
        cmocka_unit_test(test_underscores_drop),
        cmocka_unit_test(test_underscores_reject),
        cmocka_unit_test(test_underscores_trailers_and_responses),
        cmocka_unit_test(test_classify_content_length),
        cmocka_unit_test(test_classify_transfer_encoding),
        cmocka_unit_test(test_classify_chunked_twice_across_fields),
        cmocka_unit_test(test_classify_cl_and_te),
        cmocka_unit_test(test_classify_expect),
        cmocka_unit_test(test_classify_host_and_request_id),
        cmocka_unit_test(test_classify_connection_flags),
        cmocka_unit_test(test_list_has),
        cmocka_unit_test(test_name_eq),
        cmocka_unit_test(test_response_has_body),
        cmocka_unit_test(test_reason),
        cmocka_unit_test(test_request_id_format),
        cmocka_unit_test(test_request_id_state),
        cmocka_unit_test(test_write_request_basic),
        cmocka_unit_test(test_write_request_drops_hop_by_hop),
        cmocka_unit_test(test_write_request_framing),
        cmocka_unit_test(test_write_request_forwarding_headers),
        cmocka_unit_test(test_write_request_request_id),
        cmocka_unit_test(test_write_request_default_host),
        cmocka_unit_test(test_write_request_expect),
        cmocka_unit_test(test_write_request_expect_mixed),
        cmocka_unit_test(test_write_request_line),
        cmocka_unit_test(test_write_request_appends),
        cmocka_unit_test(test_write_request_large_head),
        cmocka_unit_test(test_write_response_status_line),
        cmocka_unit_test(test_write_response_headers),
        cmocka_unit_test(test_write_response_request_id),
        cmocka_unit_test(test_write_response_framing_and_connection),
        cmocka_unit_test(test_write_error_exact),
        cmocka_unit_test(test_websocket_accept_rfc6455_example),
        cmocka_unit_test(test_sha1_vectors),
        cmocka_unit_test(test_websocket_key_shape),
        cmocka_unit_test(test_write_request_upgrade),
        cmocka_unit_test(test_write_response_switching),
        cmocka_unit_test(test_write_error_405_allow),
        cmocka_unit_test(test_head_value),
        cmocka_unit_test(test_write_error_head),
        cmocka_unit_test(test_write_error_every_row),
        cmocka_unit_test(test_authority_eq),
        cmocka_unit_test(test_authority_form),
    };

    return cmocka_run_group_tests_name("http", tests, NULL, NULL);
}
