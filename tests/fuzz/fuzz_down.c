/* SPDX-License-Identifier: Apache-2.0
 * fuzz_h1_down, fuzz_h2_frames, fuzz_h2_down: client bytes into a downstream conn through the
 * real code path (tests/unit/codec_harness: a worker, a conn over an in-memory transport, the
 * real stream and the real upstream codec, upconns over in-memory ends where this driver plays
 * the app; h2o's fuzz/driver.cc is the model). fuzz_h1_down lets the conn choose its codec as
 * the listener does (HTTP/1.1, or HTTP/2 after the preface). fuzz_h2_frames (FUZZ_H2) forces
 * HTTP/2 and sends the client preface first, so the input is raw frames. fuzz_h2_down
 * (FUZZ_H2 and FUZZ_H2_GEN) does the same with structure-aware input: the bytes are frame
 * descriptors that tests/fuzz/h2_gen.c turns into valid frames with HPACK-encoded header
 * blocks (its first byte picks the app's answer and when it comes, and whether the in-memory
 * transports have small windows; the route allows CONNECT tunnels). The app answers every
 * request it receives; the client then closes. Each input gets a new worker: nothing carries
 * over between inputs, so a finding replays alone. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#ifdef FUZZ_H2_GEN
#include <ctype.h>

#include <llhttp.h>
#endif

#include "codec_harness.h"
#include "h2_down.h"
#ifdef FUZZ_H2_GEN
#include "h2_gen.h"
#endif

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* What the app answers each request with (keep-alive, so pipelined requests go on). */
static const char RESPONSE[] = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
/* The other answers of the structured target (knobs & 3). */
static const char RESP_204[] = "HTTP/1.1 204 No Content\r\n\r\n";
static const char RESP_100[] = "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n"
                               "Transfer-Encoding: chunked\r\nTrailer: x\r\n\r\n"
                               "3\r\nabc\r\n0\r\nx: y\r\n\r\n";
#ifdef FUZZ_H2_GEN
/* What the app answers a tunnel with (knobs & 16): the upgrade, then bytes. */
static const char RESP_101[] = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                               "Connection: Upgrade\r\n\r\n\x81\x02hi";
#endif
#define BIG_BODY 70000 /* past the initial stream window (65535): flow control */

/* Serves every upconn that has sent something (got[i], or bytes waiting when got is NULL) and
 * has not been answered yet. */
static void answer_apps(struct ch *h, bool *answered, unsigned kind, const bool *got)
{
    static char big[BIG_BODY + 64];
    for (size_t i = 0; i < h->n_ups && i < CH_MAX_UPSTREAMS; i++) {
        struct ch_upstream *u = ch_upstream(h, i);
        if (!u || answered[i] || (got ? !got[i] : evbuffer_get_length(u->rx) == 0))
            continue;
        answered[i] = true;
        evbuffer_drain(u->rx, evbuffer_get_length(u->rx));
#ifdef FUZZ_H2_GEN
        if (kind & 16) {
            (void)ch_upstream_send(u, RESP_101, sizeof(RESP_101) - 1);
            continue;
        }
#endif
        switch (kind & 3) {
        case 1: {
            int n = snprintf(big, sizeof(big), "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n",
                             BIG_BODY);
            memset(big + n, 'b', BIG_BODY);
            (void)ch_upstream_send(u, big, (size_t)n + BIG_BODY);
            break;
        }
        case 2:
            (void)ch_upstream_send(u, RESP_204, sizeof(RESP_204) - 1);
            break;
        case 3:
            (void)ch_upstream_send(u, RESP_100, sizeof(RESP_100) - 1);
            break;
        default:
            (void)ch_upstream_send(u, RESPONSE, sizeof(RESPONSE) - 1);
        }
    }
}

#ifdef FUZZ_H2_GEN
/* CH_YAML("http1") with CONNECT tunnels allowed on the route (extended CONNECT for websocket
 * is on by default), so the tunnel paths are reachable. */
static const char YAML_TUNNEL[] = "workers: 1\n"
                                  "listeners:\n"
                                  "  - name: in\n"
                                  "    address: \"127.0.0.1:0\"\n"
                                  "    max_connections: 64\n"
                                  "admin:\n"
                                  "  address: \"127.0.0.1:0\"\n"
                                  "upstreams:\n"
                                  "  - name: app\n"
                                  "    endpoints: [\"" CH_ENDPOINT "\"]\n"
                                  "    protocol: http1\n"
                                  "routes:\n"
                                  "  - name: all\n"
                                  "    upstream: app\n"
                                  "    connect: true\n"
                                  "log: { level: warn, access_log: false }\n";

/* The app's view of one upconn: what it received must be well-formed HTTP/1.1 (llhttp, strict):
 * whatever the client sent, remora never hands the app a request it would parse otherwise. */
struct app {
    llhttp_t p;
    bool on, upgraded;
};
static llhttp_settings_t app_settings;

static bool tchar(unsigned char c)
{
    return isalnum(c) || (c && strchr("!#$%&'*+-.^_`|~", c));
}

/* llhttp knows the registered methods only, but any token is a method (RFC 9110 9.1): whether
 * the request line llhttp refused (its error position inside the n bytes at base) is otherwise
 * well-formed: token SP target SP "HTTP/1.1" CRLF, the target without spaces or controls. */
static bool token_method(const llhttp_t *p, const char *base, size_t n)
{
    const char *at = llhttp_get_error_pos(p), *start = at, *end = base + n;
    if (!at || at < base || at > end)
        return false;
    while (start > base && start[-1] != '\n')
        start--;
    const char *q = start;
    while (q < end && tchar((unsigned char)*q))
        q++;
    if (q == start || q == end || *q++ != ' ')
        return false;
    const char *t = q;
    while (q < end && (unsigned char)*q > 0x20 && *q != 0x7f)
        q++;
    return q > t && (size_t)(end - q) >= 11 && memcmp(q, " HTTP/1.1\r\n", 11) == 0;
}

/* Feeds what each upconn sent to its parser (then drops it); a parse error aborts, unless the
 * client opened a tunnel (CONNECT carries raw bytes). got[i]: upconn i sent something. */
static void check_apps(struct ch *h, struct app *apps, bool *got, bool tunnel)
{
    for (size_t i = 0; i < h->n_ups && i < CH_MAX_UPSTREAMS; i++) {
        struct ch_upstream *u = ch_upstream(h, i);
        struct app *a = &apps[i];
        size_t n = u ? evbuffer_get_length(u->rx) : 0;
        if (n == 0)
            continue;
        if (!a->on) {
            llhttp_init(&a->p, HTTP_REQUEST, &app_settings);
            a->on = true;
        }
        got[i] = true;
        const char *p = (const char *)evbuffer_pullup(u->rx, -1);
        llhttp_errno_t e = a->upgraded ? HPE_OK : llhttp_execute(&a->p, p, n);
        if (e == HPE_PAUSED_UPGRADE || (e == HPE_INVALID_METHOD && token_method(&a->p, p, n)))
            a->upgraded = true; /* the rest is the tunnel's, or past what llhttp knows */
        else if (e != HPE_OK && !tunnel) {
            fprintf(stderr, "fuzz_h2_down: the app got a malformed request: %s (%s)\n",
                    llhttp_errno_name(e), llhttp_get_error_reason(&a->p));
            abort();
        }
        evbuffer_drain(u->rx, n);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    struct ch h;
    struct h2gen_out g;
    struct app apps[CH_MAX_UPSTREAMS];
    bool got[CH_MAX_UPSTREAMS] = {false};
    memset(apps, 0, sizeof(apps));
    llhttp_settings_init(&app_settings);
    if (h2gen_build(data, size, H2GEN_CLIENT, 0, &g) < 0)
        abort();
    /* As ch_start, with io_mem windows of 1024 bytes when knobs & 32 (backpressure both ways). */
    if (ch_init(&h, YAML_TUNNEL) != 0)
        abort(); /* the fixture itself: not the input's fault */
    h.window = (g.knobs & 32) ? 1024 : 0;
    h.force_down = &rem_h2_down_ops;
    if (ch_open(&h) != 0)
        abort();
    (void)ch_feed(&h, preface, sizeof(preface) - 1);
    bool answered[CH_MAX_UPSTREAMS] = {false};
    const uint8_t *frames = evbuffer_pullup(g.buf, -1); /* NULL when empty */
    size_t off = 0;
    for (size_t i = 0; i < g.n_segs; i++) {
        if (g.seg_end[i] > off)
            (void)ch_feed(&h, frames + off, g.seg_end[i] - off);
        off = g.seg_end[i];
        (void)ch_run(&h);
        check_apps(&h, apps, got, g.connect);
        if (!(g.knobs & 4))
            answer_apps(&h, answered, g.knobs, got);
        ch_buf_clear(h.down_rx);
    }
    for (int pass = 0; pass < 3; pass++) {
        check_apps(&h, apps, got, g.connect);
        answer_apps(&h, answered, g.knobs, got);
        (void)ch_run(&h);
        ch_buf_clear(h.down_rx);
    }
    if (g.knobs & 8)
        ch_feed_eof(&h);
    (void)ch_run(&h);
    check_apps(&h, apps, got, g.connect);
    ch_dispose(&h);
    h2gen_dispose(&g);
    return 0;
}
#else
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
    answer_apps(&h, answered, 0, NULL);
    (void)ch_feed(&h, data + half, size - half);
    for (int pass = 0; pass < 4; pass++) {
        (void)ch_run(&h);
        answer_apps(&h, answered, 0, NULL);
    }
    ch_feed_eof(&h);
    (void)ch_run(&h);
    ch_dispose(&h);
    return 0;
}
#endif
