/* SPDX-License-Identifier: Apache-2.0
 * tls: server contexts. The profile (issue 16): TLS 1.2 and 1.3 only, AEAD suites with ECDHE
 * in 1.2, groups X25519 and P-256, the server's cipher order, no renegotiation, no stateful
 * session cache (every worker shares the context, and tickets resume without server state). */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "config.h"
#include "tls.h"

static pthread_once_t init_once = PTHREAD_ONCE_INIT;

/* OpenSSL without the system's openssl.cnf: remora's settings are the whole configuration (the
 * file could lower them, or name providers a static binary would have to dlopen). */
static void init(void)
{
    OPENSSL_init_ssl(OPENSSL_INIT_NO_LOAD_CONFIG, NULL);
}

void rem_tls_init(void)
{
    pthread_once(&init_once, init);
}

/* ALPN lists in wire format (RFC 7301 3.1), one per order the configuration can write; static,
 * so the select callback's argument outlives every context that points at one. */
static const unsigned char alpn_h2[] = "\x02h2";
static const unsigned char alpn_h1[] = "\x08http/1.1";
static const unsigned char alpn_h2_h1[] = "\x02h2\x08http/1.1";
static const unsigned char alpn_h1_h2[] = "\x08http/1.1\x02h2";

struct alpn_list {
    const unsigned char *p;
    unsigned int len;
};

static const struct alpn_list alpn_lists[] = {
    {alpn_h2, sizeof(alpn_h2) - 1},
    {alpn_h1, sizeof(alpn_h1) - 1},
    {alpn_h2_h1, sizeof(alpn_h2_h1) - 1},
    {alpn_h1_h2, sizeof(alpn_h1_h2) - 1},
};

static const struct alpn_list *alpn_of(const struct rem_cfg_tls *t)
{
    if (t->n_alpn == 1)
        return &alpn_lists[t->alpn[0] == REM_ALPN_H2 ? 0 : 1];
    return &alpn_lists[t->alpn[0] == REM_ALPN_H2 ? 2 : 3];
}

/* The first of the server's protocols the client offers (the server's preference). None in
 * common: no ALPN, and the conn is HTTP/1.1 (lenient where RFC 7301 3.2 allows an alert: a
 * client offering only other protocols still gets an answer it can refuse). */
static int on_alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                          const unsigned char *in, unsigned int inlen, void *arg)
{
    const struct alpn_list *ours = arg;
    unsigned char *sel = NULL;
    if (SSL_select_next_proto(&sel, outlen, ours->p, ours->len, in, inlen) !=
        OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_NOACK;
    *out = sel;
    return SSL_TLSEXT_ERR_OK;
}

/* A key file must never prompt for a passphrase on a terminal: encrypted keys fail to load. */
static int on_passwd(char *buf, int size, int rwflag, void *arg)
{
    return 0;
}

/* OpenSSL's reason for the first error queued on this thread (the cause; the later ones say
 * which layer gave up: "PEM lib"), or a fallback. */
static const char *reason(const char *fallback)
{
    unsigned long e = ERR_peek_error();
    const char *r = e ? ERR_reason_error_string(e) : NULL;
    return r ? r : fallback;
}

/* Whether the first error queued says the private key is not the certificate's. */
static bool key_mismatch(void)
{
    unsigned long e = ERR_peek_error();
    return ERR_GET_LIB(e) == ERR_LIB_X509 && (ERR_GET_REASON(e) == X509_R_KEY_VALUES_MISMATCH ||
                                              ERR_GET_REASON(e) == X509_R_KEY_TYPE_MISMATCH);
}

/* t as Unix seconds; false when it cannot be read. */
static bool unix_time(const ASN1_TIME *t, int64_t *out)
{
    struct tm tm;
    if (!t || ASN1_TIME_to_tm(t, &tm) != 1)
        return false;
    *out = (int64_t)timegm(&tm);
    return true;
}

/* The date of t for a log line ("2026-12-02 10:00:00 UTC"). */
static void format_time(const ASN1_TIME *t, char *buf, size_t len)
{
    struct tm tm;
    if (!t || ASN1_TIME_to_tm(t, &tm) != 1 || !strftime(buf, len, "%Y-%m-%d %H:%M:%S UTC", &tm))
        snprintf(buf, len, "an unreadable date");
}

/* Whether the context's certificate is valid now (RFC 5280 4.1.2.5: notBefore <= now <=
 * notAfter); err gets why not. A client would refuse it: serving it is an outage too, and a
 * reload keeps the previous pair instead. */
static int in_validity(const struct rem_cfg_listener *l, SSL_CTX *ctx, char *err, size_t errlen)
{
    X509 *x = SSL_CTX_get0_certificate(ctx);
    const ASN1_TIME *nb = x ? X509_get0_notBefore(x) : NULL, *na = x ? X509_get0_notAfter(x) : NULL;
    char when[64];
    if (na && X509_cmp_current_time(na) < 0) {
        format_time(na, when, sizeof(when));
        snprintf(err, errlen, "listener \"%s\": tls.cert %s: the certificate expired on %s",
                 l->name, l->tls->cert, when);
        return -1;
    }
    if (nb && X509_cmp_current_time(nb) > 0) {
        format_time(nb, when, sizeof(when));
        snprintf(err, errlen,
                 "listener \"%s\": tls.cert %s: the certificate is not valid before %s", l->name,
                 l->tls->cert, when);
        return -1;
    }
    if (!na || !nb) {
        snprintf(err, errlen, "listener \"%s\": tls.cert %s: the certificate has no validity dates",
                 l->name, l->tls->cert);
        return -1;
    }
    return 0;
}

/* Whether path can be opened for reading; err gets why not. */
static int readable(const struct rem_cfg_listener *l, const char *key, const char *path, char *err,
                    size_t errlen)
{
    FILE *f = fopen(path, "re");
    if (f) {
        fclose(f);
        return 0;
    }
    snprintf(err, errlen, "listener \"%s\": tls.%s %s: cannot read: %s", l->name, key, path,
             strerror(errno));
    return -1;
}

SSL_CTX *rem_tls_server_ctx_new(const struct rem_cfg_listener *l, char *err, size_t errlen)
{
    const struct rem_cfg_tls *t = l->tls;
    pthread_once(&init_once, init);
    ERR_clear_error();
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) {
        snprintf(err, errlen, "listener \"%s\": tls: cannot create a context: %s", l->name,
                 reason("out of memory"));
        goto fail;
    }
    SSL_CTX_set_default_passwd_cb(ctx, on_passwd);
    if (readable(l, "cert", t->cert, err, errlen) < 0)
        goto fail;
    if (SSL_CTX_use_certificate_chain_file(ctx, t->cert) != 1) {
        snprintf(err, errlen, "listener \"%s\": tls.cert %s: no usable PEM certificate chain: %s",
                 l->name, t->cert, reason("unknown error"));
        goto fail;
    }
    if (in_validity(l, ctx, err, errlen) < 0)
        goto fail;
    if (readable(l, "key", t->key, err, errlen) < 0)
        goto fail;
    /* Loading the key compares it with the certificate already: a mismatch fails here. */
    if (SSL_CTX_use_PrivateKey_file(ctx, t->key, SSL_FILETYPE_PEM) != 1 && !key_mismatch()) {
        snprintf(err, errlen, "listener \"%s\": tls.key %s: no usable PEM private key: %s", l->name,
                 t->key, reason("unknown error"));
        goto fail;
    }
    if (key_mismatch() || SSL_CTX_check_private_key(ctx) != 1) {
        snprintf(err, errlen,
                 "listener \"%s\": tls.key %s does not match the certificate in tls.cert %s: %s",
                 l->name, t->key, t->cert, reason("key values mismatch"));
        goto fail;
    }
    int min = t->min_version == REM_TLS_1_3 ? TLS1_3_VERSION : TLS1_2_VERSION;
    if (SSL_CTX_set_min_proto_version(ctx, min) != 1 ||
        SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION) != 1) {
        snprintf(err, errlen, "listener \"%s\": tls.min_version: %s", l->name,
                 reason("not supported"));
        goto fail;
    }
    if (SSL_CTX_set_cipher_list(ctx, t->ciphers) != 1) {
        snprintf(err, errlen, "listener \"%s\": tls.ciphers \"%s\" selects no cipher: %s", l->name,
                 t->ciphers, reason("no cipher match"));
        goto fail;
    }
    if (SSL_CTX_set_ciphersuites(ctx, t->ciphersuites) != 1) {
        snprintf(err, errlen, "listener \"%s\": tls.ciphersuites \"%s\" selects no suite: %s",
                 l->name, t->ciphersuites, reason("no cipher match"));
        goto fail;
    }
    if (SSL_CTX_set1_groups_list(ctx, REM_DEF_TLS_GROUPS) != 1) {
        snprintf(err, errlen, "listener \"%s\": tls: groups %s: %s", l->name, REM_DEF_TLS_GROUPS,
                 reason("not supported"));
        goto fail;
    }
    /* Renegotiation is off both ways (a client's, and ours we never start); a FIN without
     * close_notify is an end of input like over TCP (io_tls.c). */
    uint64_t opts = SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE |
                    SSL_OP_IGNORE_UNEXPECTED_EOF | SSL_OP_NO_COMPRESSION;
    if (!t->session_tickets)
        opts |= SSL_OP_NO_TICKET;
    SSL_CTX_set_options(ctx, opts);
    /* No server-side session cache: it would be state shared (and locked) by every worker and
     * grow with clients; resumption is by ticket only (TLS 1.2 and 1.3). */
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    if (!t->session_tickets)
        SSL_CTX_set_num_tickets(ctx, 0);
    /* The transport retries a write from wherever its output now starts (io_tls.c), writes
     * record by record, and idle conns give their 34 KiB of record buffers back. */
    SSL_CTX_set_mode(ctx, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_ENABLE_PARTIAL_WRITE |
                              SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_alpn_select_cb(ctx, on_alpn_select, (void *)alpn_of(t));
    ERR_clear_error();
    return ctx;

fail:
    SSL_CTX_free(ctx);
    ERR_clear_error();
    return NULL;
}

int64_t rem_tls_cert_not_after(const SSL_CTX *ctx)
{
    X509 *x = ctx ? SSL_CTX_get0_certificate(ctx) : NULL;
    int64_t t = 0;
    return x && unix_time(X509_get0_notAfter(x), &t) ? t : 0;
}

int rem_tls_no_passwd(char *buf, int size, int rwflag, void *arg)
{
    return on_passwd(buf, size, rwflag, arg);
}

const char *rem_tls_reason(const char *fallback)
{
    return reason(fallback);
}
