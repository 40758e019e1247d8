/* SPDX-License-Identifier: Apache-2.0
 * fuzz_tls_down: a TLS client's bytes (ClientHello and whatever follows) into a downstream conn
 * on a TLS listener through the real entry point: rem_conn_accept with the context
 * rem_tls_server_ctx_new builds from the listener's config (a self-signed P-256 certificate
 * made at start), so io_tls runs the server handshake over a socketpair. The input goes in two
 * halves with the loop run between them, then the client closes; whatever the bytes, the conn
 * ends (an alert, a close) without a crash, a leak or a hang. The handshake cannot complete (the
 * client would need the server's key share), so this covers ClientHello parsing and every way
 * a handshake fails; OpenSSL itself is not instrumented, so guidance comes from remora's side
 * (tests/fuzz/corpus/fuzz_tls_down holds real ClientHellos). */
#include <stdbool.h>
#include <stddef.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <unistd.h>

#include <event2/event.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "codec_harness.h"
#include "fuzz_yaml.h"
#include "config.h"
#include "conn.h"
#include "h1_down.h"
#include "h2_down.h"
#include "tls.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct ch h;
static SSL_CTX *ctx;
static char dir[64], crt[96], key[96];
static bool closed;

static void cleanup(void)
{
    unlink(crt);
    unlink(key);
    rmdir(dir);
}

/* A self-signed P-256 certificate for CN=fuzz, valid from a day ago for a year, and its key,
 * as PEM files in a new temporary directory. */
static void make_cert(void)
{
    snprintf(dir, sizeof(dir), "/tmp/remora-fuzz-tls-XXXXXX");
    if (!mkdtemp(dir))
        abort();
    snprintf(crt, sizeof(crt), "%s/tls.crt", dir);
    snprintf(key, sizeof(key), "%s/tls.key", dir);
    atexit(cleanup);
    EVP_PKEY *pk = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    if (!pk || !x)
        abort();
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), -86400);
    X509_gmtime_adj(X509_getm_notAfter(x), 365L * 86400);
    X509_NAME *n = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)"fuzz", -1, -1, 0);
    X509_set_issuer_name(x, n);
    X509_set_pubkey(x, pk);
    if (!X509_sign(x, pk, EVP_sha256()))
        abort();
    FILE *f = fopen(crt, "w"), *g = fopen(key, "w");
    if (!f || !g || !PEM_write_X509(f, x) ||
        !PEM_write_PrivateKey(g, pk, NULL, NULL, 0, NULL, NULL))
        abort();
    fclose(f);
    fclose(g);
    X509_free(x);
    EVP_PKEY_free(pk);
}

static void setup(void)
{
    char yaml[2048], err[256];
    make_cert();
    signal(SIGPIPE, SIG_IGN); /* as main.c: a write to a closed peer is EPIPE */
    snprintf(yaml, sizeof(yaml),
             "workers: 1\n"
             "listeners:\n"
             "  - name: in\n"
             "    address: \"127.0.0.1:0\"\n"
             "    tls: { cert: \"%s\", key: \"%s\", alpn: [h2, http/1.1] }\n"
             "admin:\n"
             "  address: \"127.0.0.1:0\"\n" FZ_YAML_APP_ROUTE,
             crt, key);
    rem_tls_init();
    if (ch_init(&h, yaml) < 0)
        abort();
    ctx = rem_tls_server_ctx_new(&h.cfg->listeners[0], err, sizeof(err));
    if (!ctx) {
        fprintf(stderr, "fuzz_tls_down: %s\n", err);
        abort();
    }
}

static const struct rem_down_ops *choose(struct rem_conn *c, bool *need_more)
{
    *need_more = false;
    size_t n = 0;
    const char *alpn = rem_conn_alpn(c, &n);
    return alpn && n == 2 && memcmp(alpn, "h2", 2) == 0 ? &rem_h2_down_ops : &rem_h1_down_ops;
}

/* The loop over real fds: one poll (ch_run only runs what is already active), then until idle. */
static void run(void)
{
    (void)event_base_loop(h.w.loop.base, EVLOOP_NONBLOCK);
    (void)ch_run(&h);
}

static void on_closed(void *arg)
{
    closed = true;
}

static const struct rem_conn_owner owner = {.choose = choose, .closed = on_closed};

/* Reads and drops what remora sent; false once it closed. */
static bool drain(int fd)
{
    char buf[16384];
    ssize_t r;
    while ((r = read(fd, buf, sizeof(buf))) > 0)
        ;
    return r != 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!ctx)
        setup();
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0)
        abort();
    struct sockaddr_in sa = {.sin_family = AF_INET};
    inet_pton(AF_INET, CH_CLIENT_ADDR, &sa.sin_addr);
    closed = false;
    rem_conn_accept(&h.w, &owner, NULL, &h.cfg->listeners[0], sv[0], (struct sockaddr *)&sa,
                    sizeof(sa), ctx);
    size_t half = size / 2; /* a write may fail (EPIPE): remora closed early */
    if (half)
        (void)!write(sv[1], data, half);
    run();
    (void)drain(sv[1]);
    if (size - half)
        (void)!write(sv[1], data + half, size - half);
    run();
    (void)drain(sv[1]);
    close(sv[1]); /* the client goes: the conn sees EOF or a reset */
    for (int pass = 0; pass < 1000 && !closed; pass++) {
        run();
        if (!closed)
            usleep(100);
    }
    if (!closed) {
        fprintf(stderr, "fuzz_tls_down: the conn outlived its client\n");
        abort();
    }
    return 0;
}
