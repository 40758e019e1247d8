/* SPDX-License-Identifier: Apache-2.0
 * test_h1_down: the HTTP/1.1 downstream codec over io_mem, against the stub upstream codec of
 * codec_harness: client bytes in, the request head, body and end the stub receives (exact), the
 * stub's answer, and the response bytes the client receives (exact: status line, fields,
 * x-request-id, framing, body), for GET, Content-Length and chunked bodies, keep-alive reuse,
 * Connection: close and a request remora refuses itself. */
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
#include "http.h"
#include "io_mem.h"
#include "upconn.h"

/* ---- helpers ------------------------------------------------------------------------------ */

static int setup(void **state)
{
    struct ch *h = calloc(1, sizeof(*h));
    if (!h || ch_start(h, CH_YAML("http1"), &ch_stub_up_ops, NULL) < 0) {
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

/* Runs the loop to quiescence; fails the test when it does not settle. */
static void run(struct ch *h)
{
    assert_true(ch_run(h) >= 0);
}

/* A generated request id: a version 4 UUID in lower-case hex. */
static void assert_uuid4(const char *id)
{
    assert_int_equal(strlen(id), 36);
    for (int i = 0; i < 36; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23)
            assert_int_equal(id[i], '-');
        else
            assert_non_null(strchr("0123456789abcdef", id[i]));
    }
    assert_int_equal(id[14], '4');
}

/* The request reached the stub once: head exact, complete. */
static void assert_request(struct ch *h, const char *head, const char *body)
{
    assert_int_equal(h->sup.n_heads, 1);
    assert_true(ch_buf_eq_str(h->sup.head, head, "stub head"));
    assert_true(ch_buf_eq_str(h->sup.body, body, "stub body"));
    assert_int_equal(h->sup.n_ends, 1);
    assert_non_null(h->sup.s);
}

static size_t idle_upconns(struct ch *h)
{
    struct rem_upconn *uc;
    size_t n = 0;
    TAILQ_FOREACH(uc, &h->w.gen->clusters[0]->endpoints[0]->idle, link)
    n++;
    return n;
}

static const char *const text_5[] = {"Content-Type", "text/plain", "Content-Length", "5", NULL};

/* ---- tests -------------------------------------------------------------------------------- */

/* GET without a body: the stub gets the head as parsed (no body, end at once); a 200 with
 * Content-Length goes out with x-request-id added, and the upconn goes back to the pool. */
static void test_get(void **state)
{
    struct ch *h = *state;
    char want[512];

    assert_int_equal(ch_feed_str(h, "GET /x HTTP/1.1\r\nHost: a\r\n\r\n"), 0);
    run(h);
    assert_request(h, "GET /x HTTP/1.1\r\nHost: a\r\n\r\n", "");
    assert_false(h->sup.has_body);
    assert_false(h->sup.head_request);
    assert_int_equal(h->sup.content_length, -1);
    assert_uuid4(h->sup.rid);
    assert_int_equal(evbuffer_get_length(h->down_rx), 0); /* nothing before the answer */

    assert_int_equal(ch_stub_answer_head(h, 200, "OK", text_5), 0);
    assert_int_equal(ch_stub_answer_body(h, "hello", 5), 0);
    assert_int_equal(ch_stub_answer_end(h), 0);
    run(h);
    snprintf(want, sizeof(want),
             "HTTP/1.1 200 OK\r\n"
             "Content-Type: text/plain\r\n"
             "X-Request-Id: %s\r\n"
             "Content-Length: 5\r\n"
             "\r\n"
             "hello",
             h->sup.rid);
    assert_true(ch_buf_eq_str(h->down_rx, want, "client"));
    assert_non_null(h->conn); /* keep-alive */
    assert_false(h->conn_shut);
    assert_null(h->sup.s);
    assert_int_equal(idle_upconns(h), 1);
}

/* A Content-Length body reaches the stub byte for byte; a response without a length goes out
 * chunked, one chunk per body write. */
static void test_post_content_length(void **state)
{
    static const char *const app[] = {"X-App", "1", NULL};
    struct ch *h = *state;
    char want[512];

    assert_int_equal(ch_feed_str(h, "POST /u?q=1 HTTP/1.1\r\n"
                                    "Host: a\r\n"
                                    "Content-Type: text/plain\r\n"
                                    "Content-Length: 11\r\n"
                                    "\r\n"
                                    "hello world"),
                     0);
    run(h);
    assert_request(h,
                   "POST /u?q=1 HTTP/1.1\r\n"
                   "Host: a\r\n"
                   "Content-Type: text/plain\r\n"
                   "Content-Length: 11\r\n"
                   "\r\n",
                   "hello world");
    assert_true(h->sup.has_body);
    assert_false(h->sup.chunked);
    assert_int_equal(h->sup.content_length, 11);

    assert_int_equal(ch_stub_answer_head(h, 201, "Created", app), 0);
    assert_int_equal(ch_stub_answer_body(h, "o", 1), 0);
    assert_int_equal(ch_stub_answer_body(h, "k!", 2), 0);
    assert_int_equal(ch_stub_answer_end(h), 0);
    run(h);
    snprintf(want, sizeof(want),
             "HTTP/1.1 201 Created\r\n"
             "X-App: 1\r\n"
             "X-Request-Id: %s\r\n"
             "Transfer-Encoding: chunked\r\n"
             "\r\n"
             "1\r\no\r\n"
             "2\r\nk!\r\n"
             "0\r\n\r\n",
             h->sup.rid);
    assert_true(ch_buf_eq_str(h->down_rx, want, "client"));
    assert_non_null(h->conn);
}

/* A chunked body reaches the stub de-chunked, its trailer fields with the end. */
static void test_post_chunked(void **state)
{
    struct ch *h = *state;
    char want[512];

    assert_int_equal(ch_feed_str(h, "POST /c HTTP/1.1\r\n"
                                    "Host: a\r\n"
                                    "Transfer-Encoding: chunked\r\n"
                                    "\r\n"
                                    "5\r\nhello\r\n"
                                    "6\r\n world\r\n"
                                    "0\r\n"
                                    "X-Sum: 42\r\n"
                                    "\r\n"),
                     0);
    run(h);
    assert_request(h,
                   "POST /c HTTP/1.1\r\n"
                   "Host: a\r\n"
                   "Transfer-Encoding: chunked\r\n"
                   "\r\n",
                   "hello world");
    assert_true(h->sup.has_body);
    assert_true(h->sup.chunked);
    assert_true(ch_buf_eq_str(h->sup.trailers, "X-Sum: 42\r\n", "stub trailers"));

    assert_int_equal(ch_stub_answer_head(h, 200, "OK", text_5), 0);
    assert_int_equal(ch_stub_answer_body(h, "done\n", 5), 0);
    assert_int_equal(ch_stub_answer_end(h), 0);
    run(h);
    snprintf(want, sizeof(want),
             "HTTP/1.1 200 OK\r\n"
             "Content-Type: text/plain\r\n"
             "X-Request-Id: %s\r\n"
             "Content-Length: 5\r\n"
             "\r\n"
             "done\n",
             h->sup.rid);
    assert_true(ch_buf_eq_str(h->down_rx, want, "client"));
}

/* The client's X-Request-Id is the one in effect: passed on, not added to the response. A
 * second request on the conn reuses the idle upconn. */
static void test_keep_alive_and_client_request_id(void **state)
{
    static const char *const rid[] = {"X-Request-Id", "abc", "Content-Length", "0", NULL};
    struct ch *h = *state;

    for (int i = 0; i < 2; i++) {
        ch_stub_up_clear(h);
        ch_buf_clear(h->down_rx);
        assert_int_equal(ch_feed_str(h, "GET /r HTTP/1.1\r\nHost: a\r\nX-Request-Id: abc\r\n\r\n"),
                         0);
        run(h);
        assert_request(h, "GET /r HTTP/1.1\r\nHost: a\r\nX-Request-Id: abc\r\n\r\n", "");
        assert_string_equal(h->sup.rid, "abc");
        assert_int_equal(ch_stub_answer_head(h, 204, "No Content", rid), 0);
        assert_int_equal(ch_stub_answer_end(h), 0);
        run(h);
        /* 204 has no body (RFC 9110 6.4.1): no Content-Length is written either. */
        assert_true(ch_buf_eq_str(h->down_rx,
                                  "HTTP/1.1 204 No Content\r\n"
                                  "X-Request-Id: abc\r\n"
                                  "\r\n",
                                  "client"));
    }
    assert_int_equal(h->n_ups, 1);
    assert_int_equal(idle_upconns(h), 1);
}

/* An idle keep-alive conn (and the idle upconn) hold no evbuffer, no write event and no kick
 * event of their own: the buffers go back to the loop once empty, ev_write comes with the first
 * short write (docs/memory.md, "idle keep-alive conn"). The next request takes buffers again. A
 * plaintext conn stays within jemalloc's 384 B class (its TLS part is a side struct). */
static void test_idle_conn_holds_no_buffers(void **state)
{
    struct ch *h = *state;
    assert_true(sizeof(struct rem_conn) <= 384);
    for (int i = 0; i < 2; i++) {
        ch_stub_up_clear(h);
        ch_buf_clear(h->down_rx);
        assert_int_equal(ch_feed_str(h, "GET /r HTTP/1.1\r\nHost: a\r\n\r\n"), 0);
        run(h);
        assert_int_equal(h->sup.n_heads, 1);
        assert_int_equal(ch_stub_answer_head(h, 200, "OK", text_5), 0);
        assert_int_equal(ch_stub_answer_body(h, "hello", 5), 0);
        assert_int_equal(ch_stub_answer_end(h), 0);
        run(h);
        assert_int_equal(h->conn->state, REM_CONN_IDLE);
        assert_null(h->conn->t.in);
        assert_null(h->conn->t.out);
        assert_null(h->conn->t.ev_write);
        assert_null(h->conn->hs);
        assert_false(h->conn->kick.link.tqe_prev != NULL);
        assert_int_equal(evbuffer_get_length(rem_conn_input(h->conn)), 0);
        assert_int_equal(rem_conn_output_len(h->conn), 0);
    }
    assert_int_equal(idle_upconns(h), 1);
    struct rem_upconn *uc = TAILQ_FIRST(&h->w.gen->clusters[0]->endpoints[0]->idle);
    assert_null(uc->t.in);
    assert_null(uc->t.out);
}

/* Connection: close: the response says so and the conn half-closes after it (lingering until
 * the client closes too). */
static void test_connection_close(void **state)
{
    struct ch *h = *state;
    char want[512];

    assert_int_equal(ch_feed_str(h, "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"), 0);
    run(h);
    assert_request(h, "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", "");
    assert_int_equal(ch_stub_answer_head(h, 200, "OK", text_5), 0);
    assert_int_equal(ch_stub_answer_body(h, "bye!\n", 5), 0);
    assert_int_equal(ch_stub_answer_end(h), 0);
    run(h);
    snprintf(want, sizeof(want),
             "HTTP/1.1 200 OK\r\n"
             "Content-Type: text/plain\r\n"
             "X-Request-Id: %s\r\n"
             "Content-Length: 5\r\n"
             "Connection: close\r\n"
             "\r\n"
             "bye!\n",
             h->sup.rid);
    assert_true(ch_buf_eq_str(h->down_rx, want, "client"));
    assert_non_null(h->conn);
    assert_true(rem_io_mem_shut(&h->conn->t));
    ch_feed_eof(h);
    run(h);
    assert_null(h->conn);
    assert_true(h->conn_closed);
    assert_false(h->conn_reset);
}

/* No Host in HTTP/1.1 (RFC 9112 3.2): remora answers 400 itself and closes; the stub never
 * sees the request. Refused while parsing, the request never got an id: none is sent. */
static void test_missing_host_is_400(void **state)
{
    static const char body[] = "remora: 400 Bad Request (bad_request)\n";
    struct ch *h = *state;
    char want[512];

    assert_int_equal(ch_feed_str(h, "GET /x HTTP/1.1\r\n\r\n"), 0);
    run(h);
    assert_int_equal(h->sup.n_heads, 0);
    assert_int_equal(h->n_ups, 0);
    snprintf(want, sizeof(want),
             "HTTP/1.1 400 Bad Request\r\n"
             "Content-Type: text/plain\r\n"
             "Content-Length: %zu\r\n"
             "x-remora-error: bad_request\r\n"
             "Connection: close\r\n"
             "\r\n"
             "%s",
             strlen(body), body);
    assert_true(ch_buf_eq_str(h->down_rx, want, "client"));
    assert_true(h->conn_closed || rem_io_mem_shut(&h->conn->t));
}

/* Feeds s in pieces of step bytes, running the loop after each. */
static void feed_in_steps(struct ch *h, const char *s, size_t n, size_t step)
{
    for (size_t off = 0; off < n; off += step) {
        assert_int_equal(ch_feed(h, s + off, n - off < step ? n - off : step), 0);
        run(h);
    }
}

/* The answer on the client side is status with x-remora-error reason. */
static void assert_error(struct ch *h, const char *status_line, const char *reason)
{
    char hdr[128];
    size_t n = evbuffer_get_length(h->down_rx);
    char *got = (char *)evbuffer_pullup(h->down_rx, (ev_ssize_t)n);
    assert_true(n > strlen(status_line) && memcmp(got, status_line, strlen(status_line)) == 0);
    snprintf(hdr, sizeof(hdr), "\r\nx-remora-error: %s\r\n", reason);
    assert_non_null(memmem(got, n, hdr, strlen(hdr)));
}

/* A chunked request into req: first (a chunk before, may be ""), then a chunk of "abc" whose
 * size line is line_len bytes long (CRLF included), then the last chunk. Returns its length. */
static size_t chunked_request(char *req, size_t cap, const char *first, size_t line_len)
{
    int n = snprintf(req, cap,
                     "POST /c HTTP/1.1\r\nHost: a\r\n"
                     "Transfer-Encoding: chunked\r\n\r\n%s3;x=",
                     first);
    assert_true(n > 0 && (size_t)n + line_len + 16 < cap);
    memset(req + n, 'a', line_len - 6);
    n += (int)line_len - 6;
    n += snprintf(req + n, cap - (size_t)n, "\r\nabc\r\n0\r\n\r\n");
    return (size_t)n;
}

/* A chunk-size line of exactly REM_CHUNK_LINE_MAX bytes, fed one byte at a time (every span
 * cut at a read's end): the body passes. */
static void test_chunk_line_at_bound_bytewise(void **state)
{
    struct ch *h = *state;
    char req[8192];
    feed_in_steps(h, req, chunked_request(req, sizeof(req), "", REM_CHUNK_LINE_MAX), 1);
    assert_int_equal(h->sup.n_heads, 1);
    assert_true(ch_buf_eq_str(h->sup.body, "abc", "stub body"));
    assert_int_equal(h->sup.n_ends, 1);
}

/* One byte more, after a first chunk went on: 400 chunk_line_too_long, the request to the
 * stub never ended. */
static void test_chunk_line_over_bound(void **state)
{
    struct ch *h = *state;
    char req[8192];
    size_t n = chunked_request(req, sizeof(req), "2\r\nhi\r\n", REM_CHUNK_LINE_MAX + 1);
    feed_in_steps(h, req, n, 1000);
    assert_true(ch_buf_eq_str(h->sup.body, "hi", "stub body"));
    assert_int_equal(h->sup.n_ends, 0);
    assert_error(h, "HTTP/1.1 400 Bad Request\r\n", "chunk_line_too_long");
    assert_true(h->conn_closed || rem_io_mem_shut(&h->conn->t));
}

/* HTTP/0.9 fed one byte at a time: 400 once the line ends, no wait for more input. */
static void test_http09_bytewise(void **state)
{
    struct ch *h = *state;
    static const char req[] = "GET /x\r\n";
    feed_in_steps(h, req, sizeof(req) - 1, 1);
    assert_int_equal(h->n_ups, 0);
    assert_error(h, "HTTP/1.1 400 Bad Request\r\n", "bad_request");
}

/* RFC 9110 6.2: a major version other than 1, split across reads: 505. */
static void test_http2_version_split_is_505(void **state)
{
    struct ch *h = *state;
    static const char req[] = "GET / HTTP/2.0\r\nHost: a\r\n\r\n";
    feed_in_steps(h, req, sizeof(req) - 1, 3);
    assert_int_equal(h->n_ups, 0);
    assert_error(h, "HTTP/1.1 505 HTTP Version Not Supported\r\n", "http_version_not_supported");
}

/* RFC 9112 2.2 and 5.2 where llhttp 8 is lenient (h1_down's text_check), fed whole and one
 * byte at a time (a CR at the end of one read, its LF or not at the start of the next): each is
 * refused before anything reaches the stub; a valid chunked request with a trailer, bytewise,
 * passes. */
static void test_line_endings_and_folds(void **state)
{
    static const struct {
        const char *req, *status, *reason;
    } bad[] = {
        {"GET / HTTP/1.1\nHost: a\r\n\r\n", "HTTP/1.1 400 ", "bad_request"},
        {"GET / HTTP/1.1\r\nHost: a\r\n\n", "HTTP/1.1 400 ", "bad_request"},
        {"GET / HTTP/1.1\r\nHost: a\r\nX-A:\rXY: z\r\n\r\n", "HTTP/1.1 400 ", "bad_request"},
        {"GET / HTTP/1.1\r\nHost: a\r\nX-A:\r\n two\r\n\r\n", "HTTP/1.1 400 ", "bad_framing"},
        {"GET / HTTP/1.1\r\nHost: a\r\nX-A: one\r\n\ttwo\r\n\r\n", "HTTP/1.1 400 ", "bad_framing"},
        {"GET / HTTP/1.1\r\nHost: a\r\n: 1\r\n\r\n", "HTTP/1.1 400 ", "bad_request"},
        {"GET / HTTP/1.1 \r\nHost: a\r\n\r\n", "HTTP/1.1 400 ", "bad_request"},
        {"CONNECT / HTTP/1.1\r\nHost: a\r\n\r\n", "HTTP/1.1 400 ", "bad_request"},
    };
    static const char good[] = "POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                               "3\r\nabc\r\n0\r\nX-T: 1\r\n\r\n";
    for (size_t step = 1; step <= 4096; step *= 4096) {
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
            struct ch h;
            assert_int_equal(ch_start(&h, CH_YAML("http1"), &ch_stub_up_ops, NULL), 0);
            feed_in_steps(&h, bad[i].req, strlen(bad[i].req), step);
            assert_int_equal(h.sup.n_heads, 0);
            assert_error(&h, bad[i].status, bad[i].reason);
            ch_dispose(&h);
        }
        struct ch h;
        assert_int_equal(ch_start(&h, CH_YAML("http1"), &ch_stub_up_ops, NULL), 0);
        feed_in_steps(&h, good, sizeof(good) - 1, step);
        assert_int_equal(h.sup.n_heads, 1);
        assert_true(ch_buf_eq_str(h.sup.body, "abc", "stub body"));
        assert_int_equal(h.sup.n_ends, 1);
        ch_dispose(&h);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_get, setup, teardown),
        cmocka_unit_test_setup_teardown(test_post_content_length, setup, teardown),
        cmocka_unit_test_setup_teardown(test_post_chunked, setup, teardown),
        cmocka_unit_test_setup_teardown(test_keep_alive_and_client_request_id, setup, teardown),
        cmocka_unit_test_setup_teardown(test_idle_conn_holds_no_buffers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_connection_close, setup, teardown),
        cmocka_unit_test_setup_teardown(test_missing_host_is_400, setup, teardown),
        cmocka_unit_test_setup_teardown(test_chunk_line_at_bound_bytewise, setup, teardown),
        cmocka_unit_test_setup_teardown(test_chunk_line_over_bound, setup, teardown),
        cmocka_unit_test_setup_teardown(test_http09_bytewise, setup, teardown),
        cmocka_unit_test_setup_teardown(test_http2_version_split_is_505, setup, teardown),
        cmocka_unit_test(test_line_endings_and_folds),
    };
    alarm(60); /* a hard stop if anything ever blocks */
    return cmocka_run_group_tests(tests, NULL, NULL);
}
