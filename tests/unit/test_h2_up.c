/* SPDX-License-Identifier: Apache-2.0
 * test_h2_up: the HTTP/2 upstream codec (h2c) over io_mem, driven by the stub downstream codec
 * of codec_harness, with nghttp2's server session as the app: it must accept remora's client
 * preface and SETTINGS, and the request's HEADERS (pseudo-headers, forwarding fields in order)
 * and DATA are checked exactly; its SETTINGS, response HEADERS, DATA and trailers go back, and
 * what the stub downstream codec receives is checked exactly too. Also: one upconn serves
 * successive streams, and a RST_STREAM from the app becomes remora's own 502. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <nghttp2/nghttp2.h>

#include "cluster.h"
#include "codec_harness.h"
#include "gen.h"
#include "stream.h"
#include "upconn.h"

/* ---- an HTTP/2 app ------------------------------------------------------------------------ */

struct server {
    struct ch_h2_rx rx; /* first: the session's user data; the request fields and DATA, the
                           response body and trailers */
    nghttp2_session *ng;
    int32_t id; /* the latest request's stream */
    unsigned n_requests;
    bool end; /* END_STREAM on the request */
};

static int on_frame_recv(nghttp2_session *ng, const nghttp2_frame *f, void *arg)
{
    struct server *sv = arg;
    if (f->hd.type == NGHTTP2_HEADERS && f->headers.cat == NGHTTP2_HCAT_REQUEST) {
        sv->id = f->hd.stream_id;
        sv->n_requests++;
    }
    if (f->hd.stream_id == sv->id && (f->hd.flags & NGHTTP2_FLAG_END_STREAM) &&
        (f->hd.type == NGHTTP2_HEADERS || f->hd.type == NGHTTP2_DATA))
        sv->end = true;
    return 0;
}

static int server_new(struct server *sv)
{
    nghttp2_session_callbacks *cbs;
    memset(sv, 0, sizeof(*sv));
    if (ch_h2_rx_init(&sv->rx) < 0 || nghttp2_session_callbacks_new(&cbs) != 0)
        return -1;
    nghttp2_session_callbacks_set_on_header_callback(cbs, ch_h2_on_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, ch_h2_on_data_chunk);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
    int rc = nghttp2_session_server_new(&sv->ng, cbs, sv);
    nghttp2_session_callbacks_del(cbs);
    if (rc != 0)
        return -1;
    nghttp2_settings_entry iv[] = {{NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, 10}};
    return nghttp2_submit_settings(sv->ng, NGHTTP2_FLAG_NONE, iv, 1) == 0 ? 0 : -1;
}

static void server_del(struct server *sv)
{
    nghttp2_session_del(sv->ng);
    ch_h2_rx_dispose(&sv->rx);
}

/* Moves bytes both ways until neither side has any: the loop to quiescence, what the upconn
 * sent to the app (whose session must accept it), the app's frames to the upconn. */
static void exchange(struct ch *h, struct server *sv)
{
    for (int round = 0; round < 100; round++) {
        size_t sent = 0, got = 0;
        struct ch_upstream *u = ch_upstream(h, 0);
        if (u) {
            const uint8_t *p;
            ssize_t n;
            while ((n = nghttp2_session_mem_send(sv->ng, &p)) > 0) {
                assert_int_equal(ch_upstream_send(u, p, (size_t)n), 0);
                sent += (size_t)n;
            }
            assert_true(n == 0);
        }
        assert_true(ch_run(h) >= 0);
        u = ch_upstream(h, 0);
        if (u && (got = evbuffer_get_length(u->rx)) > 0) {
            ssize_t n = nghttp2_session_mem_recv(sv->ng, evbuffer_pullup(u->rx, -1), got);
            assert_int_equal(n, (ssize_t)got);
            ch_buf_clear(u->rx);
        }
        if (sent == 0 && got == 0)
            return;
    }
    fail_msg("the app and remora kept talking");
}

/* The app answers stream sv->id: fields a NULL-terminated list of name, value pairs (":status"
 * first), body (NULL: none, END_STREAM on HEADERS) and trailers after a body (NULL: none). */
static void respond(struct server *sv, const char *const *fields, const char *body,
                    const char *const *trailers)
{
    nghttp2_nv nva[16];
    size_t n = 0;
    for (size_t i = 0; fields[i]; i += 2, n++)
        nva[n] = (nghttp2_nv){(uint8_t *)fields[i], (uint8_t *)fields[i + 1], strlen(fields[i]),
                              strlen(fields[i + 1]), NGHTTP2_NV_FLAG_NONE};
    nghttp2_data_provider prd = {.read_callback = ch_h2_read_body};
    sv->rx.body = body;
    sv->rx.body_len = body ? strlen(body) : 0;
    sv->rx.body_off = 0;
    sv->rx.trailers = trailers;
    assert_int_equal(nghttp2_submit_response(sv->ng, sv->id, nva, n, body ? &prd : NULL), 0);
}

/* ---- fixture ------------------------------------------------------------------------------ */

struct fixture {
    struct ch h;
    struct server sv;
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    if (!f || ch_start(&f->h, CH_YAML("h2c"), NULL, &ch_stub_down_ops) < 0) {
        free(f);
        return -1;
    }
    if (server_new(&f->sv) < 0) {
        server_del(&f->sv);
        ch_dispose(&f->h);
        free(f);
        return -1;
    }
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    server_del(&f->sv);
    ch_dispose(&f->h);
    free(f);
    return 0;
}

/* The request id of the stub's stream in progress. */
static const char *rid_of(struct ch *h, char out[64])
{
    struct rem_stream *s = h->sdown.s;
    assert_non_null(s);
    assert_non_null(s->rid);
    assert_int_equal(s->rid_len, 36);
    snprintf(out, 64, "%.*s", (int)s->rid_len, s->rid);
    return out;
}

/* The app got one more request: fields and DATA exact, ended; consumed. */
static void assert_app_got(struct server *sv, const char *fields, const char *data)
{
    assert_true(ch_buf_eq_str(sv->rx.fields, fields, "app fields"));
    assert_true(ch_buf_eq_str(sv->rx.data, data, "app data"));
    assert_true(sv->end);
    ch_buf_clear(sv->rx.fields);
    ch_buf_clear(sv->rx.data);
    sv->end = false;
}

/* The stub downstream got one complete response: head, body exact; the stream ended well. */
static void assert_response(struct ch *h, const char *head, const char *body)
{
    assert_int_equal(h->sdown.n_heads, 1);
    assert_true(ch_buf_eq_str(h->sdown.head, head, "stub head"));
    assert_true(ch_buf_eq_str(h->sdown.body, body, "stub body"));
    assert_int_equal(h->sdown.n_ends, 1);
    assert_int_equal(h->sdown.n_errors, 0);
    assert_int_equal(h->sdown.n_cuts, 0);
    assert_int_equal(h->sdown.n_done, 1);
    assert_int_equal(h->sdown.done_err, REM_E_OK);
    assert_null(h->sdown.s);
}

static const char *const host_a[] = {"Host", "a", NULL};

/* ---- tests -------------------------------------------------------------------------------- */

/* GET: the app's session accepts the preface and sees the pseudo-headers from the request line
 * and Host, then the forwarding fields; END_STREAM on HEADERS. Its answer reaches the stub with
 * the length known; the upconn stays, idle. */
static void test_get(void **state)
{
    static const char *const resp[] = {
        ":status", "200", "content-type", "text/plain", "content-length", "5", NULL};
    struct fixture *f = *state;
    struct ch *h = &f->h;
    char rid[64], want[512];

    assert_int_equal(ch_stub_request(h, "GET", "/x?y=1", host_a, false, false), 0);
    exchange(h, &f->sv);
    assert_int_equal(h->n_ups, 1);
    assert_int_equal(f->sv.n_requests, 1);
    snprintf(want, sizeof(want),
             ":method: GET\r\n"
             ":scheme: http\r\n"
             ":authority: a\r\n"
             ":path: /x?y=1\r\n"
             "x-forwarded-for: " CH_CLIENT_ADDR "\r\n"
             "x-forwarded-proto: http\r\n"
             "x-request-id: %s\r\n",
             rid_of(h, rid));
    assert_app_got(&f->sv, want, "");
    assert_int_equal(h->sdown.n_heads, 0);

    respond(&f->sv, resp, "hello", NULL);
    exchange(h, &f->sv);
    assert_response(h, "HTTP/2.0 200\r\ncontent-type: text/plain\r\ncontent-length: 5\r\n\r\n",
                    "hello");
    assert_int_equal(h->sdown.status, 200);
    assert_int_equal(h->sdown.down_cl, 5);
    assert_false(h->sdown.down_chunked);
    assert_string_equal(h->sdown.rid, rid);
    assert_false(ch_upstream(h, 0)->eof);
    assert_false(TAILQ_EMPTY(&h->w.gen->clusters[0]->endpoints[0]->idle));
}

/* A Content-Length body: content-length goes last in the HEADERS, the body in DATA with
 * END_STREAM. A response of unknown length with trailers reaches the stub with them. */
static void test_post_content_length_trailers(void **state)
{
    static const char *const req[] = {"Host", "a", "Content-Type", "text/plain", "Content-Length",
                                      "11",   NULL};
    static const char *const resp[] = {":status", "201", "x-app", "1", NULL};
    static const char *const trl[] = {"x-sum", "42", NULL};
    struct fixture *f = *state;
    struct ch *h = &f->h;
    char rid[64], want[512];

    assert_int_equal(ch_stub_request(h, "POST", "/u", req, true, false), 0);
    assert_int_equal(ch_stub_request_body(h, "hello world", 11, true), 0);
    exchange(h, &f->sv);
    snprintf(want, sizeof(want),
             ":method: POST\r\n"
             ":scheme: http\r\n"
             ":authority: a\r\n"
             ":path: /u\r\n"
             "content-type: text/plain\r\n"
             "x-forwarded-for: " CH_CLIENT_ADDR "\r\n"
             "x-forwarded-proto: http\r\n"
             "x-request-id: %s\r\n"
             "content-length: 11\r\n",
             rid_of(h, rid));
    assert_app_got(&f->sv, want, "hello world");

    respond(&f->sv, resp, "created", trl);
    exchange(h, &f->sv);
    assert_response(h, "HTTP/2.0 201\r\nx-app: 1\r\n\r\n", "created");
    assert_true(ch_buf_eq_str(h->sdown.trailers, "x-sum: 42\r\n", "stub trailers"));
    assert_int_equal(h->sdown.down_cl, -1);
    assert_true(h->sdown.down_chunked);
}

/* A body of unknown length: no content-length, each piece as DATA, END_STREAM after the
 * last. */
static void test_post_chunked(void **state)
{
    static const char *const req[] = {"Host", "a", "Transfer-Encoding", "chunked", NULL};
    static const char *const resp[] = {":status", "200", "content-length", "2", NULL};
    struct fixture *f = *state;
    struct ch *h = &f->h;
    char rid[64], want[512];

    assert_int_equal(ch_stub_request(h, "POST", "/c", req, true, true), 0);
    assert_int_equal(ch_stub_request_body(h, "hello", 5, false), 0);
    exchange(h, &f->sv);
    assert_true(ch_buf_eq_str(f->sv.rx.data, "hello", "app data so far"));
    assert_false(f->sv.end);
    assert_int_equal(ch_stub_request_body(h, " world!", 7, true), 0);
    exchange(h, &f->sv);
    snprintf(want, sizeof(want),
             ":method: POST\r\n"
             ":scheme: http\r\n"
             ":authority: a\r\n"
             ":path: /c\r\n"
             "x-forwarded-for: " CH_CLIENT_ADDR "\r\n"
             "x-forwarded-proto: http\r\n"
             "x-request-id: %s\r\n",
             rid_of(h, rid));
    assert_app_got(&f->sv, want, "hello world!");

    respond(&f->sv, resp, "ok", NULL);
    exchange(h, &f->sv);
    assert_response(h, "HTTP/2.0 200\r\ncontent-length: 2\r\n\r\n", "ok");
}

/* Successive streams share the one upconn (stream ids 1, 3). */
static void test_reuse(void **state)
{
    static const char *const resp[] = {":status", "200", NULL};
    struct fixture *f = *state;
    struct ch *h = &f->h;
    char rid[64], want[512];

    for (int i = 0; i < 2; i++) {
        ch_stub_down_clear(h);
        assert_int_equal(ch_stub_request(h, "GET", "/r", host_a, false, false), 0);
        exchange(h, &f->sv);
        assert_int_equal(f->sv.id, 1 + 2 * i);
        snprintf(want, sizeof(want),
                 ":method: GET\r\n"
                 ":scheme: http\r\n"
                 ":authority: a\r\n"
                 ":path: /r\r\n"
                 "x-forwarded-for: " CH_CLIENT_ADDR "\r\n"
                 "x-forwarded-proto: http\r\n"
                 "x-request-id: %s\r\n",
                 rid_of(h, rid));
        assert_app_got(&f->sv, want, "");
        respond(&f->sv, resp, i ? "two" : "one", NULL);
        exchange(h, &f->sv);
        assert_response(h, "HTTP/2.0 200\r\n\r\n", i ? "two" : "one");
    }
    assert_int_equal(h->n_ups, 1);
    assert_int_equal(f->sv.n_requests, 2);
}

/* The app resets the stream before answering: remora answers 502 upstream_reset itself (the
 * app processed it: no retry, so no second upconn). */
static void test_app_reset_502(void **state)
{
    struct fixture *f = *state;
    struct ch *h = &f->h;

    assert_int_equal(ch_stub_request(h, "GET", "/", host_a, false, false), 0);
    exchange(h, &f->sv);
    assert_int_equal(f->sv.n_requests, 1);
    assert_int_equal(
        nghttp2_submit_rst_stream(f->sv.ng, NGHTTP2_FLAG_NONE, f->sv.id, NGHTTP2_INTERNAL_ERROR),
        0);
    exchange(h, &f->sv);
    assert_int_equal(h->sdown.n_heads, 0);
    assert_int_equal(h->sdown.n_errors, 1);
    assert_int_equal(h->sdown.error, REM_E_UPSTREAM_RESET);
    assert_int_equal(h->sdown.n_done, 1);
    assert_int_equal(h->sdown.done_err, REM_E_UPSTREAM_RESET);
    assert_int_equal(h->n_ups, 1);
    assert_int_equal(f->sv.n_requests, 1);
}

/* A downstream that cannot take the response head (out of memory) while the head arrives
 * from an h2c app: the stream fails once (500 nomem downstream, RST_STREAM CANCEL upstream)
 * and the upconn lives on. It used to cancel the h2 stream twice and crash on the freed
 * per-stream state. */
static void test_resp_head_write_failure(void **state)
{
    struct fixture *f = *state;
    struct ch *h = &f->h;

    assert_int_equal(ch_stub_request(h, "GET", "/x", host_a, false, false), 0);
    exchange(h, &f->sv);
    assert_int_equal(f->sv.n_requests, 1);
    h->sdown.fail_head = true;
    static const char *const st[] = {":status", "200", NULL};
    respond(&f->sv, st, "hello", NULL);
    exchange(h, &f->sv);
    assert_int_equal(h->sdown.n_heads, 0);
    assert_int_equal(h->sdown.n_done, 1);
    assert_int_equal(h->sdown.done_err, REM_E_NOMEM);
    assert_int_equal(h->n_ups, 1);
}

/* An h2c app that sends 1xx heads without end (100 and 103 in turn): they share the response
 * head limit with the final head, so the stream ends in a 502 bad_response once they overflow
 * it (64 KiB), the 103s forwarded until then; the app's stream is cancelled, the upconn kept. */
static void test_interim_flood(void **state)
{
    struct fixture *f = *state;
    struct ch *h = &f->h;
    static const char *const hints[] = {":status", "103", "link", "</a.css>; rel=preload"};

    assert_int_equal(ch_stub_request(h, "GET", "/", host_a, false, false), 0);
    exchange(h, &f->sv);
    for (int i = 0; i < 4000 && h->sdown.n_done == 0; i++) {
        nghttp2_nv nva[2];
        size_t n = i % 2 ? 2 : 1;
        nva[0] = (nghttp2_nv){(uint8_t *)":status", (uint8_t *)(i % 2 ? "103" : "100"), 7, 3,
                              NGHTTP2_NV_FLAG_NONE};
        nva[1] = (nghttp2_nv){(uint8_t *)hints[2], (uint8_t *)hints[3], strlen(hints[2]),
                              strlen(hints[3]), NGHTTP2_NV_FLAG_NONE};
        assert_int_equal(
            nghttp2_submit_headers(f->sv.ng, NGHTTP2_FLAG_NONE, f->sv.id, NULL, nva, n, NULL), 0);
        exchange(h, &f->sv);
    }
    assert_int_equal(h->sdown.n_done, 1);
    assert_int_equal(h->sdown.error, REM_E_BAD_RESPONSE);
    assert_int_equal(h->sdown.n_heads, 0);
    assert_true(h->sdown.n_interims > 100 && h->sdown.n_interims < 2000);
    assert_int_equal(h->n_ups, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_get, setup, teardown),
        cmocka_unit_test_setup_teardown(test_post_content_length_trailers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_post_chunked, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reuse, setup, teardown),
        cmocka_unit_test_setup_teardown(test_app_reset_502, setup, teardown),
        cmocka_unit_test_setup_teardown(test_resp_head_write_failure, setup, teardown),
        cmocka_unit_test_setup_teardown(test_interim_flood, setup, teardown),
    };
    alarm(60); /* a hard stop if anything ever blocks */
    return cmocka_run_group_tests(tests, NULL, NULL);
}
