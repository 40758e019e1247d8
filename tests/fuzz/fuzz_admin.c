/* SPDX-License-Identifier: Apache-2.0
 * fuzz_admin: client bytes into the admin port through its real entry point: rem_admin_new
 * listens on 127.0.0.1 (a free port picked at start; the client resets its end, so no TIME_WAIT
 * piles up), accepts, parses with llhttp and answers /healthz, /readyz, /config, /metrics (every
 * format its Accept picks, the counters of a real worker built by tests/unit/codec_harness), /drain
 * and the errors (400, 404, 405, 431). Per input: one connection, the input, a half-close, and the
 * loop runs until the admin closes. The input's first byte sets readiness and whether /drain is
 * offered. Whatever the bytes, the admin answers or closes, never crashes, leaks or hangs. */
#include <errno.h>
#include <poll.h>
#include <stddef.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <unistd.h>

#include <event2/event.h>

#include "admin.h"
#include "codec_harness.h"
#include "fuzz_yaml.h"
#include "config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Built once and kept (the admin is long-lived in remora too). */
static struct ch h;
static struct event_base *base;
static struct rem_admin *admin;
static struct sockaddr_in sin;
static unsigned n_drains;

static void on_drain(void *arg)
{
    n_drains++;
}

static void setup(void)
{
    char yaml[2048];
    signal(SIGPIPE, SIG_IGN); /* as main.c: a write to a closed peer is EPIPE */
    socklen_t len = sizeof(sin);
    int probe = socket(AF_INET, SOCK_STREAM, 0);
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (probe < 0 || bind(probe, (struct sockaddr *)&sin, sizeof(sin)) < 0 ||
        getsockname(probe, (struct sockaddr *)&sin, &len) < 0)
        abort();
    close(probe); /* a free port: the admin binds it next (SO_REUSEADDR) */
    snprintf(yaml, sizeof(yaml),
             "workers: 1\n"
             "listeners:\n"
             "  - name: in\n"
             "    address: \"127.0.0.1:0\"\n"
             "admin:\n"
             "  address: \"127.0.0.1:%u\"\n" FZ_YAML_APP_ROUTE,
             (unsigned)ntohs(sin.sin_port));
    if (ch_init(&h, yaml) < 0 || !(base = event_base_new()))
        abort();
    admin = rem_admin_new(base, &h.cfg->admin, &h.w, 1, h.cfg, h.ml, NULL);
    if (!admin)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!admin)
        setup();
    if (size == 0)
        return 0;
    rem_admin_set_ready(admin, data[0] & 1, "fuzz");
    rem_admin_set_drain(admin, (data[0] & 2) ? on_drain : NULL, NULL);
    data++;
    size--;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    struct linger lg = {1, 0}; /* close resets: no TIME_WAIT */
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)) < 0 ||
        (connect(fd, (struct sockaddr *)&sin, sizeof(sin)) < 0 && errno != EINPROGRESS))
        abort();
    size_t off = 0;
    bool shut = false, eof = false;
    char buf[65536];
    for (int pass = 0; pass < 20000 && !eof; pass++) {
        bool progress = false;
        if (off < size) {
            ssize_t w = write(fd, data + off, size - off);
            if (w > 0) {
                off += (size_t)w;
                progress = true;
            } else if (w < 0 && errno != EAGAIN) {
                off = size; /* the admin closed on us */
            }
        }
        if (off == size && !shut) {
            (void)shutdown(fd, SHUT_WR);
            shut = true;
        }
        event_base_loop(base, EVLOOP_NONBLOCK);
        ssize_t r;
        while ((r = read(fd, buf, sizeof(buf))) > 0)
            progress = true;
        if (r == 0 || (r < 0 && errno != EAGAIN))
            eof = true;
        if (!progress && !eof) {
            struct pollfd p = {.fd = fd, .events = POLLIN};
            (void)poll(&p, 1, 1);
        }
    }
    close(fd);
    if (!eof) {
        fprintf(stderr, "fuzz_admin: the admin neither answered nor closed\n");
        abort();
    }
    return 0;
}
