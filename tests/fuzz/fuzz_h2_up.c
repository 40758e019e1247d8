/* SPDX-License-Identifier: Apache-2.0
 * fuzz_h2_up: an app's HTTP/2 frames into the HTTP/2 upstream codec (h2c) through the real code
 * path, as fuzz_h1_up does for HTTP/1.1: a client's three requests (GET, a POST with a body,
 * HEAD) go through a real HTTP/2 downstream conn (tests/unit/codec_harness) and reach the app
 * multiplexed on one upconn as streams 1, 3 and 5; the app answers with frames built from the
 * input by tests/fuzz/h2_gen.c (structure-aware: frame descriptors, HPACK-encoded response
 * heads and trailers, DATA, RST_STREAM, WINDOW_UPDATE, SETTINGS, PING, GOAWAY, PUSH_PROMISE,
 * CONTINUATION, raw bytes), then closes. The client is an nghttp2 session: whatever remora
 * sends it must pass a client's checks (frames, response heads, content-length against DATA,
 * fields), or the target aborts. The input's first byte: bit 0 off sends the server's
 * SETTINGS first (the usual preface), bit 1 acknowledges remora's, bit 2 leaves the connection
 * open at the end, bit 3 has the client open its windows as it reads (else a large answer
 * stalls on the client's window: backpressure), bit 4 has the client cancel stream 3
 * after the first segment. Whatever the app sends, each client stream gets a response or a
 * clean error, never a crash, a leak or a hang. */
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <nghttp2/nghttp2.h>

#include "codec_harness.h"
#include "h2_down.h"
#include "h2_gen.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The client: an nghttp2 session, so what remora sends it is checked as a client would (a
 * malformed frame or response, a content-length the DATA does not match, an invalid field:
 * abort). */
static void fail(const char *what, int code)
{
    fprintf(stderr, "fuzz_h2_up: the client got %s: %s\n", what, nghttp2_strerror(code));
    abort();
}

static int on_invalid_frame(nghttp2_session *ng, const nghttp2_frame *f, int code, void *arg)
{
    fail("an invalid frame", code);
    return 0;
}

static int on_invalid_header(nghttp2_session *ng, const nghttp2_frame *f, const uint8_t *name,
                             size_t nlen, const uint8_t *value, size_t vlen, uint8_t flags,
                             void *arg)
{
    fail("an invalid field", NGHTTP2_ERR_HTTP_HEADER);
    return 0;
}

static ssize_t read_hello(nghttp2_session *ng, int32_t id, uint8_t *buf, size_t length,
                          uint32_t *flags, nghttp2_data_source *src, void *arg)
{
    memcpy(buf, "hello", 5); /* length is at least 16384 */
    *flags |= NGHTTP2_DATA_FLAG_EOF;
    return 5;
}

/* A client session with the three requests submitted; auto: it opens its windows as it reads
 * (else a large answer stalls on them: backpressure). */
static nghttp2_session *client_new(bool auto_window)
{
    static const nghttp2_nv get[] = {{(uint8_t *)":method", (uint8_t *)"GET", 7, 3, 0},
                                     {(uint8_t *)":scheme", (uint8_t *)"http", 7, 4, 0},
                                     {(uint8_t *)":authority", (uint8_t *)"fuzz", 10, 4, 0},
                                     {(uint8_t *)":path", (uint8_t *)"/a?b=c", 5, 6, 0}};
    static const nghttp2_nv post[] = {{(uint8_t *)":method", (uint8_t *)"POST", 7, 4, 0},
                                      {(uint8_t *)":scheme", (uint8_t *)"http", 7, 4, 0},
                                      {(uint8_t *)":authority", (uint8_t *)"fuzz", 10, 4, 0},
                                      {(uint8_t *)":path", (uint8_t *)"/p", 5, 2, 0},
                                      {(uint8_t *)"content-length", (uint8_t *)"5", 14, 1, 0}};
    static const nghttp2_nv head[] = {{(uint8_t *)":method", (uint8_t *)"HEAD", 7, 4, 0},
                                      {(uint8_t *)":scheme", (uint8_t *)"http", 7, 4, 0},
                                      {(uint8_t *)":authority", (uint8_t *)"fuzz", 10, 4, 0},
                                      {(uint8_t *)":path", (uint8_t *)"/h", 5, 2, 0}};
    nghttp2_session_callbacks *cbs;
    nghttp2_option *opt;
    nghttp2_session *ng = NULL;
    if (nghttp2_session_callbacks_new(&cbs) != 0 || nghttp2_option_new(&opt) != 0)
        abort();
    nghttp2_session_callbacks_set_on_invalid_frame_recv_callback(cbs, on_invalid_frame);
    nghttp2_session_callbacks_set_on_invalid_header_callback(cbs, on_invalid_header);
    nghttp2_option_set_no_auto_window_update(opt, !auto_window);
    nghttp2_data_provider prd = {.read_callback = read_hello};
    if (nghttp2_session_client_new2(&ng, cbs, NULL, opt) != 0 ||
        nghttp2_submit_settings(ng, NGHTTP2_FLAG_NONE, NULL, 0) != 0 ||
        nghttp2_submit_request(ng, NULL, get, 4, NULL, NULL) != 1 ||
        nghttp2_submit_request(ng, NULL, post, 5, &prd, NULL) != 3 ||
        nghttp2_submit_request(ng, NULL, head, 4, NULL, NULL) != 5)
        abort();
    nghttp2_option_del(opt);
    nghttp2_session_callbacks_del(cbs);
    return ng;
}

/* What the client has to send goes to remora; what remora sent goes to the client. */
static void client_pump(struct ch *h, nghttp2_session *ng)
{
    const uint8_t *p;
    ssize_t n;
    while ((n = nghttp2_session_mem_send(ng, &p)) > 0)
        (void)ch_feed(h, p, (size_t)n);
    (void)ch_run(h);
    size_t len = evbuffer_get_length(h->down_rx);
    if (len) {
        n = nghttp2_session_mem_recv(ng, evbuffer_pullup(h->down_rx, -1), len);
        if (n < 0)
            fail("a connection error", (int)n);
        ch_buf_clear(h->down_rx);
    }
    while ((n = nghttp2_session_mem_send(ng, &p)) > 0)
        (void)ch_feed(h, p, (size_t)n);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct ch h;
    struct h2gen_out g;
    if (h2gen_build(data, size, H2GEN_SERVER, 3, &g) < 0)
        abort();
    nghttp2_session *cl = client_new(g.knobs & 8);
    memset(&h, 0, sizeof(h));
    if (ch_start(&h, CH_YAML("h2c"), NULL, &rem_h2_down_ops) != 0)
        abort(); /* the fixture itself: not the input's fault */
    client_pump(&h, cl);
    struct ch_upstream *u = ch_upstream(&h, 0);
    if (u) {
        if (!(g.knobs & 1)) {
            uint8_t hd[9] = {0, 0, 0, NGHTTP2_SETTINGS, 0, 0, 0, 0, 0};
            (void)ch_upstream_send(u, hd, sizeof(hd));
        }
        if (g.knobs & 2) {
            uint8_t hd[9] = {0, 0, 0, NGHTTP2_SETTINGS, NGHTTP2_FLAG_ACK, 0, 0, 0, 0};
            (void)ch_upstream_send(u, hd, sizeof(hd));
        }
        const uint8_t *frames = evbuffer_pullup(g.buf, -1); /* NULL when empty */
        size_t off = 0;
        for (size_t i = 0; i < g.n_segs; i++) {
            if (g.seg_end[i] > off)
                (void)ch_upstream_send(u, frames + off, g.seg_end[i] - off);
            off = g.seg_end[i];
            client_pump(&h, cl);
            ch_buf_clear(u->rx);
            if (i == 0 && (g.knobs & 16))
                (void)nghttp2_submit_rst_stream(cl, NGHTTP2_FLAG_NONE, 3, NGHTTP2_CANCEL);
            client_pump(&h, cl);
        }
        if (!(g.knobs & 4))
            ch_upstream_close(u);
    }
    client_pump(&h, cl);
    ch_feed_eof(&h);
    client_pump(&h, cl);
    ch_dispose(&h);
    nghttp2_session_del(cl);
    h2gen_dispose(&g);
    return 0;
}
