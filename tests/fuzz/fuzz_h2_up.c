/* SPDX-License-Identifier: Apache-2.0
 * fuzz_h2_up: an app's HTTP/2 frames into the HTTP/2 upstream codec (h2c) through the real code
 * path, as fuzz_h1_up does for HTTP/1.1: a client's three requests (GET, a POST with a body,
 * HEAD) go through a real HTTP/2 downstream conn (tests/unit/codec_harness) and reach the app
 * multiplexed on one upconn as streams 1, 3 and 5; the app answers with frames built from the
 * input by tests/fuzz/h2_gen.c (structure-aware: frame descriptors, HPACK-encoded response
 * heads and trailers, DATA, RST_STREAM, WINDOW_UPDATE, SETTINGS, PING, GOAWAY, PUSH_PROMISE,
 * CONTINUATION, raw bytes), then closes. The input's first byte: bit 0 off sends the server's
 * SETTINGS first (the usual preface), bit 1 acknowledges remora's, bit 2 leaves the connection
 * open at the end, bit 3 has the client open its windows after every segment (else a large
 * answer stalls on the client's window: backpressure), bit 4 has the client cancel stream 3
 * after the first segment. Whatever the app sends, each client stream gets a response or a
 * clean error, never a crash, a leak or a hang. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <nghttp2/nghttp2.h>

#include "codec_harness.h"
#include "h2_down.h"
#include "h2_gen.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The client's bytes, built once: the preface, SETTINGS and the three requests. */
static struct evbuffer *client;

static void build_client(void)
{
    static const char preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    static const char *const get[] = {":method",    "GET",  ":scheme", "http",
                                      ":authority", "fuzz", ":path",   "/a?b=c"};
    static const char *const post[] = {":method",        "POST", ":scheme", "http",
                                       ":authority",     "fuzz", ":path",   "/p",
                                       "content-length", "5"};
    static const char *const head[] = {":method",    "HEAD", ":scheme", "http",
                                       ":authority", "fuzz", ":path",   "/h"};
    client = evbuffer_new();
    if (!client)
        abort();
    evbuffer_add(client, preface, sizeof(preface) - 1);
    h2gen_frame(client, NGHTTP2_SETTINGS, 0, 0, NULL, 0);
    if (h2gen_headers(client, 1, 1, get, 4) < 0 || h2gen_headers(client, 3, 0, post, 5) < 0)
        abort();
    h2gen_frame(client, NGHTTP2_DATA, NGHTTP2_FLAG_END_STREAM, 3, "hello", 5);
    if (h2gen_headers(client, 5, 1, head, 4) < 0)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct ch h;
    struct h2gen_out g;
    if (!client)
        build_client();
    if (h2gen_build(data, size, H2GEN_SERVER, 3, &g) < 0)
        abort();
    memset(&h, 0, sizeof(h));
    if (ch_start(&h, CH_YAML("h2c"), NULL, &rem_h2_down_ops) != 0)
        abort(); /* the fixture itself: not the input's fault */
    (void)ch_feed(&h, evbuffer_pullup(client, -1), evbuffer_get_length(client));
    (void)ch_run(&h);
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
            (void)ch_run(&h);
            ch_buf_clear(u->rx);
            ch_buf_clear(h.down_rx);
            if (g.knobs & 8) { /* the client reads: its windows open wide */
                static const uint8_t inc[4] = {0x40, 0, 0, 0};
                struct evbuffer *w = evbuffer_new();
                for (uint32_t id = 0; w && id <= 5; id += id ? 2 : 1)
                    h2gen_frame(w, NGHTTP2_WINDOW_UPDATE, 0, id, inc, 4);
                if (w)
                    (void)ch_feed(&h, evbuffer_pullup(w, -1), evbuffer_get_length(w));
                evbuffer_free(w);
            }
            if (i == 0 && (g.knobs & 16)) {
                static const uint8_t cancel[4] = {0, 0, 0, NGHTTP2_CANCEL};
                struct evbuffer *w = evbuffer_new();
                if (w) {
                    h2gen_frame(w, NGHTTP2_RST_STREAM, 0, 3, cancel, 4);
                    (void)ch_feed(&h, evbuffer_pullup(w, -1), evbuffer_get_length(w));
                    evbuffer_free(w);
                }
            }
            (void)ch_run(&h);
        }
        if (!(g.knobs & 4))
            ch_upstream_close(u);
    }
    (void)ch_run(&h);
    ch_feed_eof(&h);
    (void)ch_run(&h);
    ch_dispose(&h);
    h2gen_dispose(&g);
    return 0;
}
