/* SPDX-License-Identifier: Apache-2.0
 * fuzz_h1_up: an app's bytes into the HTTP/1.1 upstream codec through the real code path: a
 * client's GET goes through a downstream conn (tests/unit/codec_harness), the upconn's far end
 * answers with the input (status line, headers, framing, body, anything), then closes. Whatever
 * it sends, the client gets a response or a clean error, never a crash, a leak or a hang. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "codec_harness.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct ch h;
    memset(&h, 0, sizeof(h));
    if (ch_start(&h, CH_YAML("http1"), NULL, NULL) != 0)
        abort();
    (void)ch_feed_str(&h, "GET /a?b=c HTTP/1.1\r\nHost: fuzz\r\n\r\n"
                          "HEAD /h HTTP/1.1\r\nHost: fuzz\r\n\r\n");
    (void)ch_run(&h);
    struct ch_upstream *u = ch_upstream(&h, 0);
    if (u) {
        size_t half = size / 2;
        (void)ch_upstream_send(u, data, half);
        (void)ch_run(&h);
        (void)ch_upstream_send(u, data + half, size - half);
        (void)ch_run(&h);
        ch_upstream_close(u);
    }
    (void)ch_run(&h);
    ch_feed_eof(&h);
    (void)ch_run(&h);
    ch_dispose(&h);
    return 0;
}
