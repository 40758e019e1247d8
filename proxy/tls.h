/* SPDX-License-Identifier: Apache-2.0
 * tls: the OpenSSL 3 server context (SSL_CTX) of a TLS listener, built from listeners[].tls on
 * the main thread: certificate chain and key, versions, cipher lists, key-exchange groups,
 * server preference, renegotiation off, session tickets, ALPN selection, client certificate
 * verification (client_ca), and the identity of a verified client certificate. The plan owns
 * one context per TLS listener; each worker's listener takes a reference, and each TLS session
 * another (SSL_new), so a reload's new context serves new conns while old conns keep theirs.
 * A built context is only read (SSL_new from any worker is thread-safe). Knows nothing of
 * sockets or conns (io_tls.c). */
#ifndef REM_TLS_H
#define REM_TLS_H

#include <stddef.h>
#include <stdint.h>

struct ssl_ctx_st;
struct ssl_st;
struct rem_cfg_listener;
struct rem_identity;

/* Initialises OpenSSL once, without the system's openssl.cnf (thread-safe, idempotent): call
 * before building any context. */
void rem_tls_init(void);

/* Builds the server context of listener l (l->tls not NULL), reading its files (blocking: the
 * main thread, at start, reload or --check). Returns the context with one reference (release it
 * with SSL_CTX_free), or NULL with err holding one line that names the listener, the key
 * ("tls.cert", "tls.key", ...), the file or value at fault and OpenSSL's reason: a file that
 * cannot be read, a file with no PEM certificate or key, a certificate that has expired or is
 * not valid yet (its notAfter is past or its notBefore in the future), a key that does not
 * match the certificate, a cipher list that selects nothing, a tls.client_ca that cannot be
 * read or holds no PEM CA certificate. With client_ca the context asks every client for a
 * certificate and verifies it against those CAs only (the handshake fails on a bad one, and on
 * none when require_client_cert). */
struct ssl_ctx_st *rem_tls_server_ctx_new(const struct rem_cfg_listener *l, char *err,
                                          size_t errlen);
/* For every context that loads a key (tls_client.c too): the passphrase callback that gives
 * none, so an encrypted key fails to load instead of prompting on a terminal. */
int rem_tls_no_passwd(char *buf, int size, int rwflag, void *arg);
/* OpenSSL's reason for the first error queued on this thread (the cause; later ones say which
 * layer gave up), or fallback. */
const char *rem_tls_reason(const char *fallback);

/* The notAfter of ctx's certificate (the chain's first) in Unix seconds, 0 when ctx is NULL or
 * the date cannot be read (remora_tls_cert_expiry_timestamp_seconds). */
int64_t rem_tls_cert_not_after(const struct ssl_ctx_st *ctx);
/* The earliest notAfter among the CA certificates ctx trusts (its X509_STORE: a listener's
 * client_ca, an upstream's ca) in Unix seconds, 0 when there is none or no date can be read.
 * The soonest CA to expire is the one an alert must name. */
int64_t rem_tls_store_not_after(const struct ssl_ctx_st *ctx);

/* The identity of the client certificate ssl's handshake verified: a new object the caller
 * owns (rem_identity_free), or NULL when the client sent none, it was not verified, or memory
 * ran out. On the thread that owns ssl, after its handshake. */
struct rem_identity *rem_tls_peer_identity(const struct ssl_st *ssl);

#endif
