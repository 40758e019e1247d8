/* SPDX-License-Identifier: Apache-2.0
 * tls: server contexts. The profile (issue 16): TLS 1.2 and 1.3 only, AEAD suites with ECDHE
 * in 1.2, groups X25519 and P-256, the server's cipher order, no renegotiation, no stateful
 * session cache (every worker shares the context, and tickets resume without server state);
 * ticket keys from the process's ring (tls_tickets.c). */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/err.h>
#include <openssl/ocsp.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "config.h"
#include "identity.h"
#include "tls.h"
#include "tls_tickets.h"

/* Intermediates a client chain may carry between its certificate and a client_ca root. */
#define CLIENT_VERIFY_DEPTH 4
/* A client_ca bundle larger than this is refused (a few hundred CAs fit). */
#define CLIENT_CA_MAX_BYTES (1u << 20)
/* An OCSP response larger than this is refused (one is a few KiB). */
#define OCSP_MAX_BYTES (64u << 10)
/* Clock skew allowed around an OCSP response's thisUpdate (OCSP_check_validity). */
#define OCSP_SKEW_S 300

static pthread_once_t init_once = PTHREAD_ONCE_INIT;

/* The stapled OCSP response of a context (tls.ocsp_response): its DER bytes and nextUpdate. */
struct staple {
    unsigned char *der; /* owned (OPENSSL_malloc) */
    int len;
    int64_t next_update; /* Unix seconds; 0: the response names none */
};

/* The ex_data slot of a context's staple, freed with the context. */
static int staple_idx = -1;

static void staple_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
    struct staple *s = ptr;
    if (s) {
        OPENSSL_free(s->der);
        free(s);
    }
}

/* OpenSSL without the system's openssl.cnf: remora's settings are the whole configuration (the
 * file could lower them, or name providers a static binary would have to dlopen). */
static void init(void)
{
    OPENSSL_init_ssl(OPENSSL_INIT_NO_LOAD_CONFIG, NULL);
    staple_idx = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, staple_free);
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

/* The bytes of path (malloc'd, *len of them), or NULL with errno (EFBIG: over max bytes). */
static char *slurp(const char *path, size_t max, size_t *len)
{
    FILE *f = fopen(path, "re");
    char *buf = f ? malloc(max + 1) : NULL;
    size_t n = buf ? fread(buf, 1, max + 1, f) : 0;
    int e = !f ? errno : !buf ? ENOMEM : ferror(f) ? EIO : n > max ? EFBIG : 0;
    if (f)
        fclose(f);
    if (e) {
        free(buf);
        errno = e;
        return NULL;
    }
    *len = n;
    return buf;
}

/* The CA certificates of the PEM bytes buf (len) into ctx's verify store and its list of CA
 * names for the CertificateRequest. Returns how many, or -1 (a damaged PEM block, no memory). */
static int add_client_cas(SSL_CTX *ctx, const char *buf, size_t len)
{
    BIO *in = BIO_new_mem_buf(buf, (int)len);
    X509_STORE *store = SSL_CTX_get_cert_store(ctx);
    X509 *x;
    int n = 0;
    if (!in)
        return -1;
    while ((x = PEM_read_bio_X509(in, NULL, on_passwd, NULL)) != NULL) {
        int ok = X509_STORE_add_cert(store, x) == 1 && SSL_CTX_add_client_CA(ctx, x) == 1;
        X509_free(x);
        if (!ok) {
            n = -1;
            break;
        }
        n++;
    }
    /* The loop ends at the end of the input (no further PEM start line) or at a bad block. */
    unsigned long e = ERR_peek_last_error();
    if (n >= 0 && ERR_GET_LIB(e) == ERR_LIB_PEM && ERR_GET_REASON(e) == PEM_R_NO_START_LINE)
        ERR_clear_error();
    else if (n >= 0 && e)
        n = -1;
    BIO_free(in);
    return n;
}

/* Client certificates (mTLS): asked for in every handshake, verified by OpenSSL against the CAs
 * of client_ca only (the context's store holds nothing else: the system's roots must not vouch
 * for clients), chain and validity dates included; their names go in the CertificateRequest so
 * a client holding several certificates picks the right one. The file is read once, so the
 * trusted CAs, the names sent and the session id context all come from the same bytes (a
 * rotation may replace it at any time). err gets why client_ca cannot be used. */
static int client_verify(const struct rem_cfg_listener *l, SSL_CTX *ctx, char *err, size_t errlen)
{
    const struct rem_cfg_tls *t = l->tls;
    size_t len = 0;
    char *pem = slurp(t->client_ca, CLIENT_CA_MAX_BYTES, &len);
    if (!pem) {
        snprintf(err, errlen, "listener \"%s\": tls.client_ca %s: cannot read: %s", l->name,
                 t->client_ca, errno == EFBIG ? "larger than 1 MiB" : strerror(errno));
        return -1;
    }
    int n = add_client_cas(ctx, pem, len);
    /* A resumed session keeps the identity it was verified with, without a new verification.
     * OpenSSL resumes only sessions of the same session id context (and refuses to resume a
     * verified one without any): the SHA-256 of the CA bytes and the requirement, so a session
     * verified under other CAs (before a rotation) makes a full handshake. */
    unsigned char sid[32];
    EVP_MD_CTX *md = n > 0 ? EVP_MD_CTX_new() : NULL;
    bool sid_ok = md && EVP_DigestInit_ex(md, EVP_sha256(), NULL) == 1 &&
                  EVP_DigestUpdate(md, pem, len) == 1 &&
                  EVP_DigestUpdate(md, t->require_client_cert ? "\1" : "\0", 1) == 1 &&
                  EVP_DigestFinal_ex(md, sid, NULL) == 1 &&
                  SSL_CTX_set_session_id_context(ctx, sid, sizeof(sid)) == 1;
    EVP_MD_CTX_free(md);
    free(pem);
    if (n <= 0) {
        snprintf(err, errlen, "listener \"%s\": tls.client_ca %s: no usable PEM CA certificate: %s",
                 l->name, t->client_ca, reason("no certificate found"));
        return -1;
    }
    if (!sid_ok) {
        snprintf(err, errlen, "listener \"%s\": tls.client_ca %s: %s", l->name, t->client_ca,
                 reason("cannot set the session id context"));
        return -1;
    }
    SSL_CTX_set_verify(
        ctx, SSL_VERIFY_PEER | (t->require_client_cert ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT : 0),
        NULL);
    SSL_CTX_set_verify_depth(ctx, CLIENT_VERIFY_DEPTH);
    return 0;
}

/* A client asked for the certificate's status (status_request): the staple, a copy OpenSSL
 * frees with the SSL, unless it is past its nextUpdate (a stale staple would make a client that
 * checks it refuse the connection; none makes it ask the CA itself, or go without). */
static int on_status(SSL *ssl, void *arg)
{
    const struct staple *s = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), staple_idx);
    if (!s || (s->next_update && (int64_t)time(NULL) > s->next_update))
        return SSL_TLSEXT_ERR_NOACK;
    unsigned char *copy = OPENSSL_memdup(s->der, (size_t)s->len);
    if (!copy || SSL_set_tlsext_status_ocsp_resp(ssl, copy, s->len) != 1) {
        OPENSSL_free(copy);
        return SSL_TLSEXT_ERR_NOACK;
    }
    return SSL_TLSEXT_ERR_OK;
}

/* Why the OCSP response r cannot be stapled for leaf, or NULL (a successful basic response
 * whose entry for leaf's serial says "good", within thisUpdate..nextUpdate); *next_update gets
 * the entry's nextUpdate. */
static const char *staple_problem(OCSP_RESPONSE *r, X509 *leaf, int64_t *next_update)
{
    if (OCSP_response_status(r) != OCSP_RESPONSE_STATUS_SUCCESSFUL)
        return "the response is not \"successful\"";
    OCSP_BASICRESP *b = OCSP_response_get1_basic(r);
    if (!b)
        return "the response has no basic response";
    const char *why = "the response has no entry for tls.cert's certificate (its serial number)";
    const ASN1_INTEGER *serial = X509_get0_serialNumber(leaf);
    for (int i = 0; i < OCSP_resp_count(b); i++) {
        OCSP_SINGLERESP *sr = OCSP_resp_get0(b, i);
        ASN1_INTEGER *sn = NULL;
        int reason;
        ASN1_GENERALIZEDTIME *rev, *thisupd, *nextupd;
        if (OCSP_id_get0_info(NULL, NULL, NULL, &sn, (OCSP_CERTID *)OCSP_SINGLERESP_get0_id(sr)) !=
                1 ||
            !sn || ASN1_INTEGER_cmp(sn, serial) != 0)
            continue;
        int st = OCSP_single_get0_status(sr, &reason, &rev, &thisupd, &nextupd);
        struct tm tm;
        if (st == V_OCSP_CERTSTATUS_REVOKED)
            why = "the response says the certificate is revoked";
        else if (st != V_OCSP_CERTSTATUS_GOOD)
            why = "the response does not say the certificate is good";
        else if (OCSP_check_validity(thisupd, nextupd, OCSP_SKEW_S, -1) != 1)
            why = "the response is not valid now (thisUpdate in the future or nextUpdate past)";
        else {
            why = NULL;
            *next_update = nextupd && ASN1_TIME_to_tm(nextupd, &tm) == 1 ? (int64_t)timegm(&tm) : 0;
        }
        break;
    }
    OCSP_BASICRESP_free(b);
    return why;
}

/* tls.ocsp_response: a DER OCSP response about tls.cert's certificate, stapled to the
 * clients that ask. It is checked (about this certificate, "good", valid now) and read once per
 * context: a renewed response is a file change, which rebuilds the context like a new pair. */
static int load_staple(const struct rem_cfg_listener *l, SSL_CTX *ctx, char *err, size_t errlen)
{
    const struct rem_cfg_tls *t = l->tls;
    size_t len = 0;
    char *der = slurp(t->ocsp_response, OCSP_MAX_BYTES, &len);
    if (!der) {
        snprintf(err, errlen, "listener \"%s\": tls.ocsp_response %s: cannot read: %s", l->name,
                 t->ocsp_response, errno == EFBIG ? "larger than 64 KiB" : strerror(errno));
        return -1;
    }
    const unsigned char *p = (const unsigned char *)der;
    OCSP_RESPONSE *r = d2i_OCSP_RESPONSE(NULL, &p, (long)len);
    int64_t next_update = 0;
    const char *why = !r ? "not a DER OCSP response"
                         : staple_problem(r, SSL_CTX_get0_certificate(ctx), &next_update);
    OCSP_RESPONSE_free(r);
    struct staple *s = why ? NULL : calloc(1, sizeof(*s));
    if (s && (s->der = OPENSSL_memdup(der, len)) != NULL) {
        s->len = (int)len;
        s->next_update = next_update;
    }
    free(der);
    if (why || !s || !s->der || SSL_CTX_set_ex_data(ctx, staple_idx, s) != 1) {
        snprintf(err, errlen, "listener \"%s\": tls.ocsp_response %s: %s", l->name,
                 t->ocsp_response, why ? why : "out of memory");
        if (s)
            OPENSSL_free(s->der);
        free(s);
        return -1;
    }
    SSL_CTX_set_tlsext_status_cb(ctx, on_status);
    return 0;
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
    else
        rem_tls_tickets_install(ctx); /* the process's keys: every worker, across reloads */
    /* The transport retries a write from wherever its output now starts (io_tls.c), writes
     * record by record, and idle conns give their 34 KiB of record buffers back. Read-ahead: one
     * read(2) takes a record's header and body, and whatever follows (tls_pending sees it). */
    SSL_CTX_set_read_ahead(ctx, 1);
    SSL_CTX_set_mode(ctx, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_ENABLE_PARTIAL_WRITE |
                              SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_alpn_select_cb(ctx, on_alpn_select, (void *)alpn_of(t));
    if (t->client_ca && client_verify(l, ctx, err, errlen) < 0)
        goto fail;
    if (t->ocsp_response && load_staple(l, ctx, err, errlen) < 0)
        goto fail;
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

/* Whether a SAN can stand in a header and a log line as it is: printable ASCII only. */
static bool printable(const unsigned char *p, int len)
{
    for (int i = 0; i < len; i++)
        if (p[i] < 0x20 || p[i] > 0x7e)
            return false;
    return len > 0;
}

/* The URI and DNS SANs of x into id (others and unprintable ones are left out). */
static int add_sans(struct rem_identity *id, X509 *x)
{
    GENERAL_NAMES *gens = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    int rc = 0;
    for (int i = 0; gens && rc == 0 && i < sk_GENERAL_NAME_num(gens); i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
        const ASN1_IA5STRING *v = g->type == GEN_URI   ? g->d.uniformResourceIdentifier
                                  : g->type == GEN_DNS ? g->d.dNSName
                                                       : NULL;
        if (v && printable(ASN1_STRING_get0_data(v), ASN1_STRING_length(v)))
            rc =
                rem_identity_add_san(id, g->type == GEN_URI, (const char *)ASN1_STRING_get0_data(v),
                                     (size_t)ASN1_STRING_length(v));
    }
    GENERAL_NAMES_free(gens);
    return rc;
}

/* x's identity: its digest, its Subject in RFC 2253 form (most significant RDN last, special
 * characters escaped, control and non-ASCII bytes escaped too: it goes into a header), its
 * SANs. */
static struct rem_identity *identity_of(X509 *x)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    struct rem_identity *id = NULL;
    char *p;
    BIO *b = BIO_new(BIO_s_mem());
    if (!b || X509_digest(x, EVP_sha256(), md, &n) != 1 || n != 32 ||
        X509_NAME_print_ex(b, X509_get_subject_name(x), 0, XN_FLAG_RFC2253) < 0)
        goto out;
    long len = BIO_get_mem_data(b, &p);
    id = len >= 0 ? rem_identity_new(md, p, (size_t)len) : NULL;
    if (id && (add_sans(id, x) < 0 || rem_identity_finish(id) < 0)) {
        rem_identity_free(id);
        id = NULL;
    }
out:
    BIO_free(b);
    return id;
}

struct rem_identity *rem_tls_peer_identity(const SSL *ssl)
{
    X509 *x = SSL_get0_peer_certificate(ssl);
    if (!x || SSL_get_verify_result(ssl) != X509_V_OK)
        return NULL;
    struct rem_identity *id = identity_of(x);
    ERR_clear_error();
    return id;
}

int64_t rem_tls_store_not_after(const SSL_CTX *ctx)
{
    X509_STORE *st = ctx ? SSL_CTX_get_cert_store(ctx) : NULL;
    STACK_OF(X509_OBJECT) *objs = st ? X509_STORE_get0_objects(st) : NULL;
    int64_t min = 0;
    for (int i = 0; objs && i < sk_X509_OBJECT_num(objs); i++) {
        X509 *x = X509_OBJECT_get0_X509(sk_X509_OBJECT_value(objs, i));
        int64_t t;
        if (x && unix_time(X509_get0_notAfter(x), &t) && (min == 0 || t < min))
            min = t;
    }
    return min;
}

int rem_tls_no_passwd(char *buf, int size, int rwflag, void *arg)
{
    return on_passwd(buf, size, rwflag, arg);
}

const char *rem_tls_reason(const char *fallback)
{
    return reason(fallback);
}
