/* SPDX-License-Identifier: Apache-2.0
 * fuzz_h1_down, fuzz_h2_down: client bytes into a downstream conn through the real code path
 * (tests/unit/codec_harness: a worker, a conn over an in-memory transport, the real stream and
 * the real upstream codec, upconns over in-memory ends where this driver plays the app; h2o's
 * fuzz/driver.cc is the model). fuzz_h1_down lets the conn choose its codec as the listener
 * does (HTTP/1.1, or HTTP/2 after the preface); fuzz_h2_down (FUZZ_H2) forces HTTP/2 and sends
 * the client preface first, so the input is frames. The app answers every request it receives
 * with a small 200; the client then closes. Each input gets a new worker: nothing carries over
 * between inputs, so a finding replays alone. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "codec_harness.h"
#include "h2_down.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* What the app answers each request with (keep-alive, so pipelined requests go on). */
static const char RESPONSE[] = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

/* Serves every upconn that has sent something and has not been answered yet. */
static void answer_apps(struct ch *h, bool *answered)
{
    for (size_t i = 0; i < h->n_ups && i < CH_MAX_UPSTREAMS; i++) {
        struct ch_upstream *u = ch_upstream(h, i);
        if (!u || answered[i] || evbuffer_get_length(u->rx) == 0)
            continue;
        answered[i] = true;
        evbuffer_drain(u->rx, evbuffer_get_length(u->rx));
        (void)ch_upstream_send(u, RESPONSE, sizeof(RESPONSE) - 1);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    struct ch h;
    memset(&h, 0, sizeof(h));
#ifdef FUZZ_H2
    const struct rem_down_ops *down = &rem_h2_down_ops;
#else
    const struct rem_down_ops *down = NULL;
#endif
    if (ch_start(&h, CH_YAML("http1"), NULL, down) != 0)
        abort(); /* the fixture itself: not the input's fault */
#ifdef FUZZ_H2
    (void)ch_feed(&h, preface, sizeof(preface) - 1);
#else
    (void)preface;
#endif
    bool answered[CH_MAX_UPSTREAMS] = {false};
    /* The input in two halves with the loop run between them, so a request split across reads
     * is exercised as well as a whole one. */
    size_t half = size / 2;
    (void)ch_feed(&h, data, half);
    (void)ch_run(&h);
    answer_apps(&h, answered);
    (void)ch_feed(&h, data + half, size - half);
    for (int pass = 0; pass < 4; pass++) {
        (void)ch_run(&h);
        answer_apps(&h, answered);
    }
    ch_feed_eof(&h);
    (void)ch_run(&h);
    ch_dispose(&h);
    return 0;
}
