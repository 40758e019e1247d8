/* SPDX-License-Identifier: Apache-2.0
 * tls_client: client contexts toward upstreams, and their connector. The profile is the
 * listeners' (tls.c): TLS 1.2 and 1.3 only, AEAD suites with ECDHE in 1.2, groups X25519 and
 * P-256, no renegotiation, no compression. Sessions are cached outside OpenSSL: one per
 * endpoint per worker (cluster.c keeps it), so no cache is shared, or locked, between workers. */
#include <arpa/inet.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "cluster.h"
#include "config.h"
#include "error.h"
#include "io_tls.h"
#include "tls.h"
#include "tls_client.h"

/* Where Debian's ca-certificates (and the container image) put the system bundle: a static
 * binary's compiled-in OPENSSLDIR need not exist where it runs. */
#define REM_SYSTEM_CA_BUNDLE "/etc/ssl/certs/ca-certificates.crt"

static uint64_t next_id; /* atomic */

/* Whether path can be opened for reading; err gets why not. */
static int readable(const struct rem_cfg_upstream *u, const char *key, const char *path, char *err,
                    size_t errlen)
{
    if (access(path, R_OK) == 0)
        return 0;
    snprintf(err, errlen, "upstream \"%s\": tls.%s %s: cannot read: %s", u->name, key, path,
             strerror(errno));
    return -1;
}

/* A new session from the app (a TLS 1.3 ticket arrives after the handshake, with the first
 * response bytes): the endpoint keeps it for the next connect. Returning 1 keeps the
 * reference OpenSSL gave. */
static int on_new_session(SSL *ssl, SSL_SESSION *sess)
{
    struct rem_endpoint *ep = SSL_get_app_data(ssl);
    uint64_t id = (uint64_t)(uintptr_t)SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl));
    if (!ep || !id || !SSL_SESSION_is_resumable(sess))
        return 0;
    rem_endpoint_set_tls_session(ep, sess, id);
    return 1;
}

/* Trust: the upstream's ca, or the system store. */
static int load_trust(SSL_CTX *ctx, const struct rem_cfg_upstream *u, char *err, size_t errlen)
{
    const char *ca = u->tls->ca;
    if (ca) {
        if (readable(u, "ca", ca, err, errlen) < 0)
            return -1;
        if (SSL_CTX_load_verify_locations(ctx, ca, NULL) != 1) {
            snprintf(err, errlen, "upstream \"%s\": tls.ca %s: no usable PEM certificate: %s",
                     u->name, ca, rem_tls_reason("no certificate found"));
            return -1;
        }
        return 0;
    }
    /* The default paths may not exist (a static binary's OPENSSLDIR), nor the bundle (the
     * container image has none). With neither a certificate loaded nor a hashed directory to
     * look them up in, no app could ever verify: that is a config error, said now, rather than
     * a 502 on every request. */
    (void)SSL_CTX_set_default_verify_paths(ctx);
    if (access(REM_SYSTEM_CA_BUNDLE, R_OK) == 0)
        (void)SSL_CTX_load_verify_locations(ctx, REM_SYSTEM_CA_BUNDLE, NULL);
    ERR_clear_error();
    const char *dir = getenv(X509_get_default_cert_dir_env());
    if (!dir || !*dir)
        dir = X509_get_default_cert_dir();
    if (sk_X509_OBJECT_num(X509_STORE_get0_objects(SSL_CTX_get_cert_store(ctx))) == 0 &&
        access(dir, R_OK | X_OK) != 0) {
        snprintf(err, errlen,
                 "upstream \"%s\": tls: no tls.ca and no system trust store (neither %s nor %s "
                 "exists): set tls.ca to the CA of the app's certificate (remora's image has no CA "
                 "bundle)",
                 u->name, REM_SYSTEM_CA_BUNDLE, dir);
        return -1;
    }
    return 0;
}

/* The client certificate and key (mTLS to the app). */
static int load_identity(SSL_CTX *ctx, const struct rem_cfg_upstream *u, char *err, size_t errlen)
{
    const struct rem_cfg_upstream_tls *t = u->tls;
    if (!t->cert)
        return 0;
    if (readable(u, "cert", t->cert, err, errlen) < 0)
        return -1;
    if (SSL_CTX_use_certificate_chain_file(ctx, t->cert) != 1) {
        snprintf(err, errlen, "upstream \"%s\": tls.cert %s: no usable PEM certificate chain: %s",
                 u->name, t->cert, rem_tls_reason("unknown error"));
        return -1;
    }
    if (readable(u, "key", t->key, err, errlen) < 0)
        return -1;
    if (SSL_CTX_use_PrivateKey_file(ctx, t->key, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(ctx) != 1) {
        snprintf(err, errlen,
                 "upstream \"%s\": tls.key %s: no usable PEM private key matching tls.cert %s: %s",
                 u->name, t->key, t->cert, rem_tls_reason("unknown error"));
        return -1;
    }
    return 0;
}

/* Folds the bytes of the file at path (or its errno, or nothing for NULL) into h. */
static uint64_t fold_file(uint64_t h, const char *path)
{
    /* memset, not an initializer: clang-tidy's analyzer reads the bytes of an array initialized
     * element by element as garbage when rem_fnv1a hashes them one by one. */
    uint64_t part[2];
    memset(part, 0, sizeof(part));
    part[0] = h;
    FILE *f = path ? fopen(path, "re") : NULL;
    if (path && !f)
        part[1] = (uint64_t)errno;
    char buf[8192];
    size_t n;
    while (f && (n = fread(buf, 1, sizeof(buf), f)) > 0) {
        part[1] = rem_fnv1a(buf, n) ^ (part[1] * 1099511628211ULL);
    }
    if (f)
        fclose(f);
    return rem_fnv1a(part, sizeof(part));
}

/* rem_tls_client.trust of upstream u's TLS settings. */
static uint64_t trust_of(const struct rem_cfg_upstream *u)
{
    const struct rem_cfg_upstream_tls *t = u->tls;
    uint64_t h = rem_fnv1a(&t->verify, sizeof(t->verify));
    h = rem_fnv1a(t->sni ? t->sni : "", t->sni ? strlen(t->sni) : 0) ^ (h * 31);
    h = fold_file(h, t->ca);
    h = fold_file(h, t->cert);
    return fold_file(h, t->key);
}

struct rem_tls_client *rem_tls_client_new(const struct rem_cfg_upstream *u, char *err,
                                          size_t errlen)
{
    /* ALPN offers in wire format (RFC 7301 3.1): what the upstream's codec speaks. */
    static const unsigned char alpn_h2[] = "\x02h2", alpn_h1[] = "\x08http/1.1";
    bool h2 = u->protocol == REM_PROTO_H2;
    rem_tls_init();
    ERR_clear_error();
    struct rem_tls_client *c = rem_xcalloc(1, sizeof(*c));
    c->refs = 1;
    c->id = __atomic_add_fetch(&next_id, 1, __ATOMIC_RELAXED);
    c->verify = u->tls->verify;
    c->sni = u->tls->sni ? rem_xstrdup(u->tls->sni) : NULL;
    c->alpn = h2 ? "h2" : NULL;
    c->trust = trust_of(u);
    SSL_CTX *ctx = c->ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx) {
        snprintf(err, errlen, "upstream \"%s\": tls: cannot create a context: %s", u->name,
                 rem_tls_reason("out of memory"));
        goto fail;
    }
    SSL_CTX_set_default_passwd_cb(ctx, rem_tls_no_passwd);
    if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1 ||
        SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION) != 1 ||
        SSL_CTX_set_cipher_list(ctx, REM_DEF_TLS_CIPHERS) != 1 ||
        SSL_CTX_set_ciphersuites(ctx, REM_DEF_TLS_CIPHERSUITES) != 1 ||
        SSL_CTX_set1_groups_list(ctx, REM_DEF_TLS_GROUPS) != 1 ||
        SSL_CTX_set_alpn_protos(ctx, h2 ? alpn_h2 : alpn_h1,
                                (unsigned)(h2 ? sizeof(alpn_h2) : sizeof(alpn_h1)) - 1) != 0) {
        snprintf(err, errlen, "upstream \"%s\": tls: the TLS profile is not supported: %s", u->name,
                 rem_tls_reason("unknown error"));
        goto fail;
    }
    if (c->verify && load_trust(ctx, u, err, errlen) < 0)
        goto fail;
    if (load_identity(ctx, u, err, errlen) < 0)
        goto fail;
    SSL_CTX_set_verify(ctx, c->verify ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, NULL);
    /* A FIN without close_notify is an end of input like over TCP (io_tls.c). */
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_IGNORE_UNEXPECTED_EOF |
                                 SSL_OP_NO_COMPRESSION);
    SSL_CTX_set_read_ahead(ctx, 1); /* as the server side (tls.c) */
    SSL_CTX_set_mode(ctx, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_ENABLE_PARTIAL_WRITE |
                              SSL_MODE_RELEASE_BUFFERS);
    /* Sessions go to on_new_session only: OpenSSL's own cache would be shared by workers. */
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(ctx, on_new_session);
    /* The id by value: upconns may outlive c (a reload replaced it), never ctx. */
    SSL_CTX_set_app_data(ctx, (void *)(uintptr_t)c->id);
    ERR_clear_error();
    return c;

fail:
    ERR_clear_error();
    rem_tls_client_unref(c);
    return NULL;
}

struct rem_tls_client *rem_tls_client_ref(struct rem_tls_client *c)
{
    if (c)
        __atomic_add_fetch(&c->refs, 1, __ATOMIC_RELAXED);
    return c;
}

void rem_tls_client_unref(struct rem_tls_client *c)
{
    if (!c || __atomic_sub_fetch(&c->refs, 1, __ATOMIC_ACQ_REL) > 0)
        return;
    SSL_CTX_free(c->ctx);
    free(c->sni);
    free(c);
}

void rem_tls_client_release(void *c)
{
    rem_tls_client_unref(c);
}

static bool is_ip(const char *host)
{
    unsigned char buf[sizeof(struct in6_addr)];
    return inet_pton(AF_INET, host, buf) == 1 || inet_pton(AF_INET6, host, buf) == 1;
}

struct rem_io_tls_peer rem_tls_client_peer(const struct rem_tls_client *c, const char *host,
                                           struct ssl_session_st *session, void *app_data)
{
    const char *name = c->sni ? c->sni : host;
    bool ip = name && !c->sni && is_ip(name);
    return (struct rem_io_tls_peer){
        .sni = ip ? NULL : name, /* RFC 6066 3: never an address */
        .host = c->verify && !ip ? name : NULL,
        .ip = c->verify && ip ? name : NULL,
        .alpn = c->alpn,
        .session = session,
        .app_data = app_data,
    };
}

int rem_tls_client_connect(struct rem_transport *t, struct rem_loop *loop, struct rem_endpoint *ep,
                           const struct rem_transport_cbs *cbs, void *arg, size_t read_high,
                           size_t write_high, void *connect_arg)
{
    struct rem_tls_client *c = connect_arg;
    struct rem_io_tls_peer peer =
        rem_tls_client_peer(c, ep->host, rem_endpoint_tls_session(ep, c->id), ep);
    return rem_io_tls_connect(t, loop, (const struct sockaddr *)&ep->addr.ss, ep->addr.len, c->ctx,
                              &peer, cbs, arg, read_high, write_high);
}
