/* SPDX-License-Identifier: Apache-2.0
 * test_h2_down: the HTTP/2 downstream codec over io_mem, against the stub upstream codec of
 * codec_harness, with nghttp2's client session as the client: its preface, SETTINGS, HEADERS
 * and DATA in, the request head, body and end the stub receives (exact: :authority as host,
 * lower-case fields), the stub's answer, and what the same client session reads back (:status,
 * fields in order with x-request-id, DATA bytes, END_STREAM), for GET, bodies with and without
 * content-length, remora's own 502 when the app hangs up, and its 400 for a malformed host or
 * :path. */
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

#include "codec_harness.h"

/* ---- an HTTP/2 client --------------------------------------------------------------------- */

struct client {
    struct ch_h2_rx rx; /* first: the session's user data; the response fields and DATA, the
                           request body */
    nghttp2_session *ng;
    bool end;            /* END_STREAM on the response */
    bool closed;         /* the stream closed */
    uint32_t close_code; /* ... with this error code */
    bool goaway;
};

static int on_frame_recv(nghttp2_session *ng, const nghttp2_frame *f, void *arg)
{
    struct client *cl = arg;
    if (f->hd.stream_id && (f->hd.flags & NGHTTP2_FLAG_END_STREAM) &&
        (f->hd.type == NGHTTP2_HEADERS || f->hd.type == NGHTTP2_DATA))
        cl->end = true;
    if (f->hd.type == NGHTTP2_GOAWAY)
        cl->goaway = true;
    return 0;
}

static int on_stream_close(nghttp2_session *ng, int32_t id, uint32_t code, void *arg)
{
    struct client *cl = arg;
    cl->closed = true;
    cl->close_code = code;
    return 0;
}

static int client_new(struct client *cl)
{
    nghttp2_session_callbacks *cbs;
    memset(cl, 0, sizeof(*cl));
    if (ch_h2_rx_init(&cl->rx) < 0 || nghttp2_session_callbacks_new(&cbs) != 0)
        return -1;
    nghttp2_session_callbacks_set_on_header_callback(cbs, ch_h2_on_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, ch_h2_on_data_chunk);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
    int rc = nghttp2_session_client_new(&cl->ng, cbs, cl);
    nghttp2_session_callbacks_del(cbs);
    if (rc != 0)
        return -1;
    return nghttp2_submit_settings(cl->ng, NGHTTP2_FLAG_NONE, NULL, 0) == 0 ? 0 : -1;
}

static void client_del(struct client *cl)
{
    nghttp2_session_del(cl->ng);
    ch_h2_rx_dispose(&cl->rx);
}

/* Moves bytes both ways until neither side has any: the client's frames to the conn, the loop
 * to quiescence, remora's frames to the client. */
static void exchange(struct ch *h, struct client *cl)
{
    for (int round = 0; round < 100; round++) {
        const uint8_t *p;
        size_t sent = 0;
        ssize_t n;
        while ((n = nghttp2_session_mem_send(cl->ng, &p)) > 0) {
            assert_int_equal(ch_feed(h, p, (size_t)n), 0);
            sent += (size_t)n;
        }
        assert_true(n == 0);
        assert_true(ch_run(h) >= 0);
        size_t got = evbuffer_get_length(h->down_rx);
        if (got) {
            n = nghttp2_session_mem_recv(cl->ng, evbuffer_pullup(h->down_rx, -1), got);
            assert_int_equal(n, (ssize_t)got);
            ch_buf_clear(h->down_rx);
        }
        if (sent == 0 && got == 0)
            return;
    }
    fail_msg("the client and remora kept talking");
}

/* Submits a request: fields is a NULL-terminated list of name, value pairs (pseudo ones first);
 * body NULL: none (END_STREAM on HEADERS). */
static void request(struct client *cl, const char *const *fields, const char *body)
{
    nghttp2_nv nva[16];
    size_t n = 0;
    for (size_t i = 0; fields[i]; i += 2, n++) {
        assert_true(n < 16);
        nva[n] = (nghttp2_nv){(uint8_t *)fields[i], (uint8_t *)fields[i + 1], strlen(fields[i]),
                              strlen(fields[i + 1]), NGHTTP2_NV_FLAG_NONE};
    }
    nghttp2_data_provider prd = {.read_callback = ch_h2_read_body};
    cl->rx.body = body;
    cl->rx.body_len = body ? strlen(body) : 0;
    cl->rx.body_off = 0;
    assert_int_equal(nghttp2_submit_request(cl->ng, NULL, nva, n, body ? &prd : NULL, NULL), 1);
}

/* ---- fixture ------------------------------------------------------------------------------ */

struct fixture {
    struct ch h;
    struct client cl;
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    if (!f || ch_start(&f->h, CH_YAML("http1"), &ch_stub_up_ops, NULL) < 0) {
        free(f);
        return -1;
    }
    if (client_new(&f->cl) < 0) {
        client_del(&f->cl);
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
    client_del(&f->cl);
    ch_dispose(&f->h);
    free(f);
    return 0;
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

/* The client got the whole response: fields exact, DATA exact, the stream ended cleanly. */
static void assert_response(struct client *cl, const char *fields, const char *data)
{
    assert_true(ch_buf_eq_str(cl->rx.fields, fields, "client fields"));
    assert_true(ch_buf_eq_str(cl->rx.data, data, "client data"));
    assert_true(cl->end);
    assert_true(cl->closed);
    assert_int_equal(cl->close_code, NGHTTP2_NO_ERROR);
    assert_false(cl->goaway);
}

/* The request req (a GET without body) is answered 400 bad_request by remora itself: nothing
 * reaches the stub, the conn goes on. */
static void assert_bad_request(struct fixture *f, const char *const *req)
{
    request(&f->cl, req, NULL);
    exchange(&f->h, &f->cl);
    assert_int_equal(f->h.sup.n_heads, 0);
    assert_response(&f->cl,
                    ":status: 400\r\ncontent-type: text/plain\r\n"
                    "x-remora-error: bad_request\r\n",
                    "remora: 400 Bad Request (bad_request)\n");
    assert_non_null(f->h.conn);
}

static const char *const text_5[] = {"Content-Type", "text/plain", "Content-Length", "5", NULL};

/* ---- tests -------------------------------------------------------------------------------- */

/* The preface picks h2_down; a GET reaches the stub with :authority as host and no body; the
 * answer comes back as HEADERS (:status, fields lower-cased, x-request-id) and DATA. */
static void test_get(void **state)
{
    static const char *const req[] = {":method", "GET", ":scheme", "http", ":authority", "a",
                                      ":path",   "/x",  "x-test",  "1",    NULL};
    struct fixture *f = *state;
    struct ch *h = &f->h;
    char want[512];

    request(&f->cl, req, NULL);
    exchange(h, &f->cl);
    assert_request(h, "GET /x HTTP/2.0\r\nhost: a\r\nx-test: 1\r\n\r\n", "");
    assert_false(h->sup.has_body);
    assert_false(f->cl.closed); /* nothing before the answer */

    assert_int_equal(ch_stub_answer_head(h, 200, "OK", text_5), 0);
    assert_int_equal(ch_stub_answer_body(h, "hel", 3), 0);
    assert_int_equal(ch_stub_answer_body(h, "lo", 2), 0);
    assert_int_equal(ch_stub_answer_end(h), 0);
    exchange(h, &f->cl);
    snprintf(want, sizeof(want),
             ":status: 200\r\n"
             "content-type: text/plain\r\n"
             "content-length: 5\r\n"
             "x-request-id: %s\r\n",
             h->sup.rid);
    assert_response(&f->cl, want, "hello");
    assert_int_equal(strlen(h->sup.rid), 36);
    assert_non_null(h->conn);
}

/* A body with content-length: every byte reaches the stub, the length is known. A response
 * without a length has none on HTTP/2 either: DATA frames, END_STREAM at the end. */
static void test_post_content_length(void **state)
{
    static const char *const req[] = {
        ":method", "POST",         ":scheme",    "http",           ":authority", "a", ":path",
        "/u",      "content-type", "text/plain", "content-length", "11",         NULL};
    static const char *const app[] = {"X-App", "1", NULL};
    struct fixture *f = *state;
    struct ch *h = &f->h;
    char want[512];

    request(&f->cl, req, "hello world");
    exchange(h, &f->cl);
    assert_request(h,
                   "POST /u HTTP/2.0\r\n"
                   "host: a\r\n"
                   "content-type: text/plain\r\n"
                   "content-length: 11\r\n"
                   "\r\n",
                   "hello world");
    assert_true(h->sup.has_body);
    assert_false(h->sup.chunked);
    assert_int_equal(h->sup.content_length, 11);

    assert_int_equal(ch_stub_answer_head(h, 201, "Created", app), 0);
    assert_int_equal(ch_stub_answer_body(h, "ok", 2), 0);
    assert_int_equal(ch_stub_answer_end(h), 0);
    exchange(h, &f->cl);
    snprintf(want, sizeof(want),
             ":status: 201\r\n"
             "x-app: 1\r\n"
             "x-request-id: %s\r\n",
             h->sup.rid);
    assert_response(&f->cl, want, "ok");
}

/* A body without content-length is of unknown length (chunked toward an HTTP/1.1 app). */
static void test_post_unknown_length(void **state)
{
    static const char *const req[] = {":method", "PUT",   ":scheme", "http", ":authority",
                                      "a:8080",  ":path", "/p",      NULL};
    struct fixture *f = *state;
    struct ch *h = &f->h;
    char want[512];

    request(&f->cl, req, "0123456789");
    exchange(h, &f->cl);
    assert_request(h, "PUT /p HTTP/2.0\r\nhost: a:8080\r\n\r\n", "0123456789");
    assert_true(h->sup.has_body);
    assert_true(h->sup.chunked);
    assert_int_equal(h->sup.content_length, -1);

    assert_int_equal(ch_stub_answer_head(h, 200, "OK", text_5), 0);
    assert_int_equal(ch_stub_answer_body(h, "fine\n", 5), 0);
    assert_int_equal(ch_stub_answer_end(h), 0);
    exchange(h, &f->cl);
    snprintf(want, sizeof(want),
             ":status: 200\r\n"
             "content-type: text/plain\r\n"
             "content-length: 5\r\n"
             "x-request-id: %s\r\n",
             h->sup.rid);
    assert_response(&f->cl, want, "fine\n");
}

/* The app hangs up before answering: remora answers 502 upstream_reset itself, and the conn
 * stays usable. */
static void test_app_hangs_up_502(void **state)
{
    static const char *const req[] = {":method", "GET",   ":scheme", "http", ":authority",
                                      "a",       ":path", "/",       NULL};
    static const char body[] = "remora: 502 Bad Gateway (upstream_reset)\n";
    struct fixture *f = *state;
    struct ch *h = &f->h;
    char want[512];

    request(&f->cl, req, NULL);
    exchange(h, &f->cl);
    assert_request(h, "GET / HTTP/2.0\r\nhost: a\r\n\r\n", "");
    char rid[64];
    snprintf(rid, sizeof(rid), "%s", h->sup.rid);
    ch_upstream_close(ch_upstream(h, 0));
    exchange(h, &f->cl);
    snprintf(want, sizeof(want),
             ":status: 502\r\n"
             "content-type: text/plain\r\n"
             "x-remora-error: upstream_reset\r\n"
             "x-request-id: %s\r\n",
             rid);
    assert_response(&f->cl, want, body);
    assert_null(h->sup.s);
    assert_non_null(h->conn);
}

/* RFC 9113 8.3.1: a host naming another entity than :authority is malformed: 400
 * bad_request, nothing reaches the stub, the conn goes on. */
static void test_host_differs_from_authority_400(void **state)
{
    static const char *const req[] = {":method", "GET", ":scheme", "http", ":authority", "a",
                                      ":path",   "/",   "host",    "b",    NULL};
    assert_bad_request(*state, req);
}

/* The same entity (case, default port of :scheme): the stub gets one host, the :authority. */
static void test_host_same_as_authority_dropped(void **state)
{
    static const char *const req[] = {":method", "GET", ":scheme", "https", ":authority", "A:443",
                                      ":path",   "/",   "host",    "a",     NULL};
    struct fixture *f = *state;
    struct ch *h = &f->h;

    request(&f->cl, req, NULL);
    exchange(h, &f->cl);
    assert_request(h, "GET / HTTP/2.0\r\nhost: A:443\r\n\r\n", "");
}

/* RFC 9113 8.3.1: :path is an absolute path, or '*' for OPTIONS, whatever the :scheme (nghttp2
 * checks it only for http and https): anything else is 400 bad_request, never forwarded. */
static void path_400(void **state, const char *path)
{
    const char *const req[] = {":method", "GET",   ":scheme", "foo", ":authority",
                               "a",       ":path", path,      NULL};
    assert_bad_request(*state, req);
}

static void test_path_asterisk_get_400(void **state)
{
    path_400(state, "*");
}

static void test_path_relative_400(void **state)
{
    path_400(state, "echo");
}

static void test_path_absolute_uri_400(void **state)
{
    path_400(state, "http://a/echo");
}

/* A non-ASCII :path (found by fuzz_h2_down: "\xff" reached the app as "TRACE \xff HTTP/1.1"). */
static void test_path_not_absolute_400(void **state)
{
    path_400(state, "\xff");
}

/* :method PRI (found by fuzz_h2_down): it only spells the connection preface, and an HTTP/1.1
 * app refuses "PRI /x HTTP/1.1". */
static void test_pri_method_400(void **state)
{
    static const char *const req[] = {":method", "PRI",   ":scheme", "http", ":authority",
                                      "a",       ":path", "/x",      NULL};
    assert_bad_request(*state, req);
}

static void test_path_asterisk_options_forwarded(void **state)
{
    static const char *const req[] = {":method", "OPTIONS", ":scheme", "foo", ":authority",
                                      "a",       ":path",   "*",       NULL};
    struct fixture *f = *state;
    struct ch *h = &f->h;

    request(&f->cl, req, NULL);
    exchange(h, &f->cl);
    assert_request(h, "OPTIONS * HTTP/2.0\r\nhost: a\r\n\r\n", "");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_get, setup, teardown),
        cmocka_unit_test_setup_teardown(test_post_content_length, setup, teardown),
        cmocka_unit_test_setup_teardown(test_post_unknown_length, setup, teardown),
        cmocka_unit_test_setup_teardown(test_app_hangs_up_502, setup, teardown),
        cmocka_unit_test_setup_teardown(test_host_differs_from_authority_400, setup, teardown),
        cmocka_unit_test_setup_teardown(test_host_same_as_authority_dropped, setup, teardown),
        cmocka_unit_test_setup_teardown(test_path_asterisk_get_400, setup, teardown),
        cmocka_unit_test_setup_teardown(test_path_relative_400, setup, teardown),
        cmocka_unit_test_setup_teardown(test_path_absolute_uri_400, setup, teardown),
        cmocka_unit_test_setup_teardown(test_path_asterisk_options_forwarded, setup, teardown),
        cmocka_unit_test_setup_teardown(test_path_not_absolute_400, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pri_method_400, setup, teardown),
    };
    alarm(60); /* a hard stop if anything ever blocks */
    return cmocka_run_group_tests(tests, NULL, NULL);
}
