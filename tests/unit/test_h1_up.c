/* SPDX-License-Identifier: Apache-2.0
 * test_h1_up: the HTTP/1.1 upstream codec over io_mem, driven by the stub downstream codec of
 * codec_harness: a request built by the test, the bytes h1_up writes to the app (exact: request
 * line, Host, X-Forwarded-For/-Proto, X-Request-Id, hop-by-hop fields gone, body framing), raw
 * response bytes from the test, and what the stub downstream codec receives (status, fields,
 * body, trailers, end; exact), with keep-alive reuse and the app's Connection: close. */
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

#include "cluster.h"
#include "codec_harness.h"
#include "gen.h"
#include "stream.h"
#include "upconn.h"

/* ---- helpers ------------------------------------------------------------------------------ */

static int setup(void **state)
{
    struct ch *h = calloc(1, sizeof(*h));
    if (!h || ch_start(h, CH_YAML("http1"), NULL, &ch_stub_down_ops) < 0) {
        free(h);
        return -1;
    }
    *state = h;
    return 0;
}

static int teardown(void **state)
{
    struct ch *h = *state;
    ch_dispose(h);
    free(h);
    return 0;
}

static void run(struct ch *h)
{
    assert_true(ch_run(h) >= 0);
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

/* What the app received on the i-th upconn is exactly want; consumed. */
static void assert_app_got(struct ch *h, size_t i, const char *want)
{
    struct ch_upstream *u = ch_upstream(h, i);
    assert_non_null(u);
    assert_true(ch_buf_eq_str(u->rx, want, "app"));
    ch_buf_clear(u->rx);
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

static size_t idle_upconns(struct ch *h)
{
    struct rem_upconn *uc;
    size_t n = 0;
    TAILQ_FOREACH(uc, &h->w.gen->clusters[0]->endpoints[0]->idle, link)
    n++;
    return n;
}

static const char *const host_a[] = {"Host", "a", NULL};

/* ---- tests -------------------------------------------------------------------------------- */

/* GET: the request line and forwarding fields the app gets; a Content-Length response reaches
 * the stub whole, with the stream's framing decision; the upconn is pooled. */
static void test_get(void **state)
{
    struct ch *h = *state;
    char rid[64], want[512];

    assert_int_equal(ch_stub_request(h, "GET", "/x", host_a, false, false), 0);
    run(h);
    assert_int_equal(h->n_ups, 1);
    snprintf(want, sizeof(want),
             "GET /x HTTP/1.1\r\n"
             "Host: a\r\n"
             "X-Forwarded-For: " CH_CLIENT_ADDR "\r\n"
             "X-Forwarded-Proto: http\r\n"
             "X-Request-Id: %s\r\n"
             "\r\n",
             rid_of(h, rid));
    assert_app_got(h, 0, want);
    assert_int_equal(h->sdown.n_heads, 0);

    assert_int_equal(ch_upstream_send_str(ch_upstream(h, 0), "HTTP/1.1 200 OK\r\n"
                                                             "Content-Type: text/plain\r\n"
                                                             "Content-Length: 5\r\n"
                                                             "\r\n"
                                                             "hello"),
                     0);
    run(h);
    assert_response(h,
                    "HTTP/1.1 200 OK\r\n"
                    "Content-Type: text/plain\r\n"
                    "Content-Length: 5\r\n"
                    "\r\n",
                    "hello");
    assert_int_equal(h->sdown.status, 200);
    assert_int_equal(h->sdown.down_cl, 5);
    assert_false(h->sdown.down_chunked);
    assert_false(h->sdown.down_close);
    assert_string_equal(h->sdown.rid, rid);
    assert_int_equal(idle_upconns(h), 1);
    assert_false(ch_upstream(h, 0)->eof);
}

/* Forwarding: hop-by-hop fields (Connection and what it names, Keep-Alive) stay behind, the
 * client's X-Forwarded-For is extended, its X-Request-Id kept. */
static void test_forwarding_fields(void **state)
{
    static const char *const req[] = {"Host",
                                      "a",
                                      "Connection",
                                      "keep-alive, x-hop",
                                      "X-Hop",
                                      "1",
                                      "Keep-Alive",
                                      "timeout=5",
                                      "User-Agent",
                                      "t/1",
                                      "X-Forwarded-For",
                                      "10.0.0.1",
                                      "X-Request-Id",
                                      "abc",
                                      NULL};
    struct ch *h = *state;

    assert_int_equal(ch_stub_request(h, "GET", "/f?a=1", req, false, false), 0);
    run(h);
    assert_app_got(h, 0,
                   "GET /f?a=1 HTTP/1.1\r\n"
                   "Host: a\r\n"
                   "User-Agent: t/1\r\n"
                   "X-Request-Id: abc\r\n"
                   "X-Forwarded-For: 10.0.0.1, " CH_CLIENT_ADDR "\r\n"
                   "X-Forwarded-Proto: http\r\n"
                   "\r\n");
    assert_int_equal(ch_upstream_send_str(ch_upstream(h, 0), "HTTP/1.1 204 No Content\r\n\r\n"), 0);
    run(h);
    assert_response(h, "HTTP/1.1 204 No Content\r\n\r\n", "");
    assert_string_equal(h->sdown.rid, "abc");
}

/* A Content-Length body goes after the head as it is; the response is chunked, with a trailer,
 * and reaches the stub de-chunked. */
static void test_post_content_length_chunked_response(void **state)
{
    static const char *const req[] = {"Host", "a", "Content-Length", "11", NULL};
    struct ch *h = *state;
    char rid[64], want[512];

    assert_int_equal(ch_stub_request(h, "POST", "/u", req, true, false), 0);
    assert_int_equal(ch_stub_request_body(h, "hello world", 11, true), 0);
    run(h);
    snprintf(want, sizeof(want),
             "POST /u HTTP/1.1\r\n"
             "Host: a\r\n"
             "X-Forwarded-For: " CH_CLIENT_ADDR "\r\n"
             "X-Forwarded-Proto: http\r\n"
             "X-Request-Id: %s\r\n"
             "Content-Length: 11\r\n"
             "\r\n"
             "hello world",
             rid_of(h, rid));
    assert_app_got(h, 0, want);

    assert_int_equal(ch_upstream_send_str(ch_upstream(h, 0), "HTTP/1.1 201 Created\r\n"
                                                             "Transfer-Encoding: chunked\r\n"
                                                             "\r\n"
                                                             "5\r\nhello\r\n"
                                                             "6\r\n world\r\n"
                                                             "0\r\n"
                                                             "X-Sum: 42\r\n"
                                                             "\r\n"),
                     0);
    run(h);
    assert_response(h, "HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n", "hello world");
    assert_true(ch_buf_eq_str(h->sdown.trailers, "X-Sum: 42\r\n", "stub trailers"));
    assert_int_equal(h->sdown.down_cl, -1);
    assert_true(h->sdown.down_chunked);
    assert_int_equal(idle_upconns(h), 1);
}

/* A body of unknown length is re-chunked toward the app, one chunk per piece the stream took,
 * and ends with the last chunk. */
static void test_post_chunked(void **state)
{
    static const char *const req[] = {"Host", "a", "Transfer-Encoding", "chunked", NULL};
    struct ch *h = *state;
    char rid[64], want[512];

    assert_int_equal(ch_stub_request(h, "POST", "/c", req, true, true), 0);
    assert_int_equal(ch_stub_request_body(h, "hello", 5, false), 0);
    run(h);
    snprintf(want, sizeof(want),
             "POST /c HTTP/1.1\r\n"
             "Host: a\r\n"
             "X-Forwarded-For: " CH_CLIENT_ADDR "\r\n"
             "X-Forwarded-Proto: http\r\n"
             "X-Request-Id: %s\r\n"
             "Transfer-Encoding: chunked\r\n"
             "\r\n"
             "5\r\nhello\r\n",
             rid_of(h, rid));
    assert_app_got(h, 0, want);
    assert_int_equal(ch_stub_request_body(h, " world!", 7, true), 0);
    run(h);
    assert_app_got(h, 0, "7\r\n world!\r\n0\r\n\r\n");

    assert_int_equal(
        ch_upstream_send_str(ch_upstream(h, 0), "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
        0);
    run(h);
    assert_response(h, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n", "ok");
}

/* Two exchanges on one upconn (keep-alive): Content-Length, then chunked. */
static void test_keep_alive(void **state)
{
    static const char *const resp[] = {
        "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\none",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\ntwo\r\n0\r\n\r\n",
    };
    static const char *const head[] = {
        "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
    };
    static const char *const body[] = {"one", "two"};
    struct ch *h = *state;
    char rid[64], want[512];

    for (int i = 0; i < 2; i++) {
        ch_stub_down_clear(h);
        assert_int_equal(ch_stub_request(h, "GET", i ? "/2" : "/1", host_a, false, false), 0);
        run(h);
        snprintf(want, sizeof(want),
                 "GET /%d HTTP/1.1\r\n"
                 "Host: a\r\n"
                 "X-Forwarded-For: " CH_CLIENT_ADDR "\r\n"
                 "X-Forwarded-Proto: http\r\n"
                 "X-Request-Id: %s\r\n"
                 "\r\n",
                 i + 1, rid_of(h, rid));
        assert_app_got(h, 0, want);
        assert_int_equal(ch_upstream_send_str(ch_upstream(h, 0), resp[i]), 0);
        run(h);
        assert_response(h, head[i], body[i]);
    }
    assert_int_equal(h->n_ups, 1);
    assert_int_equal(idle_upconns(h), 1);
}

/* The app says Connection: close: the response still completes, the upconn is not pooled. */
static void test_app_connection_close(void **state)
{
    struct ch *h = *state;

    assert_int_equal(ch_stub_request(h, "GET", "/", host_a, false, false), 0);
    run(h);
    assert_int_equal(ch_upstream_send_str(ch_upstream(h, 0), "HTTP/1.1 200 OK\r\n"
                                                             "Connection: close\r\n"
                                                             "Content-Length: 3\r\n"
                                                             "\r\n"
                                                             "bye"),
                     0);
    run(h);
    assert_response(h, "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 3\r\n\r\n", "bye");
    assert_int_equal(idle_upconns(h), 0);
    assert_true(ch_upstream(h, 0)->eof);
}

/* The app sends a Content-Length response and closes at once while the client is slow (the
 * upconn paused with the body's tail unparsed): the EOF waits for the tail, and the response
 * completes instead of being cut as upstream_truncated. */
static void test_eof_while_paused_completes_the_body(void **state)
{
    struct ch *h = *state;

    assert_int_equal(ch_stub_request(h, "GET", "/x", host_a, false, false), 0);
    run(h);
    h->sdown.full = true; /* the first body bytes fill the client's side */
    assert_int_equal(ch_upstream_send_str(ch_upstream(h, 0), "HTTP/1.1 200 OK\r\n"
                                                             "Content-Length: 10\r\n"
                                                             "\r\n"
                                                             "01234"),
                     0);
    run(h);
    assert_int_equal(ch_upstream_send_str(ch_upstream(h, 0), "56789"), 0);
    run(h); /* the tail arrives while the upconn is paused */
    ch_upstream_close(ch_upstream(h, 0));
    run(h); /* and then the EOF */
    assert_int_equal(h->sdown.n_cuts, 0);
    assert_int_equal(h->sdown.n_done, 0);
    ch_stub_down_drained(h);
    run(h);
    assert_true(ch_buf_eq_str(h->sdown.body, "0123456789", "body"));
    assert_int_equal(h->sdown.n_ends, 1);
    assert_int_equal(h->sdown.n_cuts, 0);
    assert_int_equal(h->sdown.done_err, REM_E_OK);
}

/* A 304 and a 204 that carry Content-Length and a body anyway (the bytes after the head are a
 * whole response of their own): the stub gets the head alone and no body byte, and the upconn,
 * with bytes nobody asked for, is closed rather than pooled. */
static void test_bodyless_status_with_body(void **state)
{
    static const int status[] = {304, 204};
    struct ch *h = *state;
    char resp[256];

    for (int i = 0; i < 2; i++) {
        ch_stub_down_clear(h);
        assert_int_equal(ch_stub_request(h, "GET", "/", host_a, false, false), 0);
        run(h);
        snprintf(resp, sizeof(resp),
                 "HTTP/1.1 %d X\r\nContent-Length: 5\r\n\r\nhello"
                 "HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nsmuggled",
                 status[i]);
        assert_int_equal(ch_upstream_send_str(ch_upstream(h, (size_t)i), resp), 0);
        run(h);
        assert_int_equal(h->sdown.status, status[i]);
        assert_int_equal(evbuffer_get_length(h->sdown.body), 0);
        assert_int_equal(h->sdown.n_ends, 1);
        assert_int_equal(h->sdown.done_err, REM_E_OK);
        assert_int_equal(idle_upconns(h), 0);
    }
}

/* A status code below 100 (llhttp takes any three digits) is no status class: 502
 * bad_response, nothing forwarded (it used to go on as an interim response). */
static void test_status_below_100(void **state)
{
    struct ch *h = *state;

    assert_int_equal(ch_stub_request(h, "GET", "/", host_a, false, false), 0);
    run(h);
    assert_int_equal(
        ch_upstream_send_str(ch_upstream(h, 0), "HTTP/1.1 099 Odd\r\nContent-Length: 2\r\n\r\nok"),
        0);
    run(h);
    assert_int_equal(h->sdown.n_interims, 0);
    assert_int_equal(h->sdown.n_heads, 0);
    assert_int_equal(h->sdown.error, REM_E_BAD_RESPONSE);
    assert_int_equal(idle_upconns(h), 0);
}

/* Interim responses share the response head limit with the final one: an endless run of
 * 100s and 103s ends in a 502 bad_response once they overflow it (64 KiB here), with the
 * 103s forwarded until then. */
static void test_interim_flood(void **state)
{
    static const char flood[] = "HTTP/1.1 100 Continue\r\n\r\n"
                                "HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n";
    struct ch *h = *state;

    assert_int_equal(ch_stub_request(h, "GET", "/", host_a, false, false), 0);
    run(h);
    for (int i = 0; i < 2000 && h->sdown.n_done == 0; i++) {
        assert_int_equal(ch_upstream_send_str(ch_upstream(h, 0), flood), 0);
        run(h);
    }
    assert_int_equal(h->sdown.n_done, 1);
    assert_int_equal(h->sdown.error, REM_E_BAD_RESPONSE);
    assert_int_equal(h->sdown.n_heads, 0);
    assert_true(h->sdown.n_interims > 100 && h->sdown.n_interims < 1000);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_eof_while_paused_completes_the_body, setup, teardown),
        cmocka_unit_test_setup_teardown(test_get, setup, teardown),
        cmocka_unit_test_setup_teardown(test_forwarding_fields, setup, teardown),
        cmocka_unit_test_setup_teardown(test_post_content_length_chunked_response, setup, teardown),
        cmocka_unit_test_setup_teardown(test_post_chunked, setup, teardown),
        cmocka_unit_test_setup_teardown(test_keep_alive, setup, teardown),
        cmocka_unit_test_setup_teardown(test_app_connection_close, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bodyless_status_with_body, setup, teardown),
        cmocka_unit_test_setup_teardown(test_interim_flood, setup, teardown),
        cmocka_unit_test_setup_teardown(test_status_below_100, setup, teardown),
    };
    alarm(60); /* a hard stop if anything ever blocks */
    return cmocka_run_group_tests(tests, NULL, NULL);
}
