/* SPDX-License-Identifier: Apache-2.0
 * io_tls: TLS over a stream socket as a rem_io_ops implementation (OpenSSL 3, an SSL object on
 * the non-blocking fd): the server handshake, SSL_read_ex/SSL_write_ex, close_notify then
 * SHUT_WR, the ALPN, version and resumption the handshake agreed on. Owns the fd it is given and
 * the SSL object; the SSL_CTX is shared (tls.c builds it; each SSL object holds its own reference),
 * so a conn keeps the context it was accepted with across reloads. */
#ifndef REM_IO_TLS_H
#define REM_IO_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

#include "transport.h"

struct ssl_ctx_st;
struct ssl_session_st;
struct ssl_st;

/* What a client connection checks and offers (rem_io_tls_connect); every pointer is borrowed
 * for the call only, but alpn, which must be static. */
struct rem_io_tls_peer {
    const char *sni;                /* server_name sent (RFC 6066 3), NULL: none */
    const char *host;               /* DNS name the certificate must match, NULL: none */
    const char *ip;                 /* address its iPAddress SAN must match, NULL: none */
    const char *alpn;               /* protocol the app must select ("h2"), NULL: any or none */
    struct ssl_session_st *session; /* offered for resumption, NULL: none */
    void *app_data;                 /* SSL_get_app_data for the context's callbacks */
};

/* Sets up t over an accepted, non-blocking TCP fd (taken over: closed on failure and by close)
 * as the server end of a TLS connection under ctx (referenced while t lives). The handshake
 * runs from the loop as the client's bytes arrive; REM_TE_READY (the ALPN is known then) or
 * REM_TE_ERROR follows, never before this returns. Returns 0 or -REM_E_NOMEM. */
int rem_io_tls_accept(struct rem_transport *t, struct rem_loop *loop, int fd,
                      struct ssl_ctx_st *ctx, const struct rem_transport_cbs *cbs, void *arg,
                      size_t read_high, size_t write_high);

/* Sets up t as the client end of a TLS connection under ctx (referenced while t lives; its
 * verify mode and ALPN offer apply) toward sa: a TCP connect, then the TLS handshake, both from
 * the loop. REM_TE_READY follows once the handshake is done and the app selected peer->alpn (when
 * set); REM_TE_ERROR otherwise, with rem_transport_error EPROTO for a failure after the TCP
 * connect (verification, a protocol error, the app closing, ALPN: rem_io_tls_failure says which)
 * and the connect's errno before it. Never called back before this returns. Returns 0, or
 * -REM_E_SYS / -REM_E_NOMEM (t closed; rem_transport_error holds errno for -REM_E_SYS). */
int rem_io_tls_connect(struct rem_transport *t, struct rem_loop *loop, const struct sockaddr *sa,
                       socklen_t salen, struct ssl_ctx_st *ctx, const struct rem_io_tls_peer *peer,
                       const struct rem_transport_cbs *cbs, void *arg, size_t read_high,
                       size_t write_high);
/* A client SSL object under ctx set up with peer's sni, names to verify, session and app_data
 * (peer->alpn is the caller's to check), in connect state, without a socket: for a client that
 * is not a transport (the health checks' bufferevent_openssl). NULL: out of memory. The caller
 * frees it (SSL_free). */
struct ssl_st *rem_io_tls_client_ssl(struct ssl_ctx_st *ctx, const struct rem_io_tls_peer *peer);
/* Whether t is a client TLS transport whose TCP connect completed and whose handshake has not
 * ended yet (a connect timeout then is a TLS handshake timeout). */
bool rem_io_tls_handshaking(const struct rem_transport *t);
/* Why t's client handshake failed, written to buf (one line: "certificate verify failed:
 * Hostname mismatch", OpenSSL's error string, ...); NULL when t is not a client TLS transport
 * or its handshake did not fail. */
const char *rem_io_tls_failure(const struct rem_transport *t, char *buf, size_t len);

#endif
