/* SPDX-License-Identifier: Apache-2.0
 * io_tls: TLS over a stream socket as a rem_io_ops implementation (OpenSSL 3, an SSL object on
 * the non-blocking fd): the server handshake, SSL_read_ex/SSL_write_ex, close_notify then
 * SHUT_WR, the ALPN, version and resumption the handshake agreed on. Owns the fd it is given and
 * the SSL object; the SSL_CTX is shared (tls.c builds it; each SSL object holds its own reference),
 * so a conn keeps the context it was accepted with across reloads. */
#ifndef REM_IO_TLS_H
#define REM_IO_TLS_H

#include <stddef.h>

#include "transport.h"

struct ssl_ctx_st;

/* Sets up t over an accepted, non-blocking TCP fd (taken over: closed on failure and by close)
 * as the server end of a TLS connection under ctx (referenced while t lives). The handshake
 * runs from the loop as the client's bytes arrive; REM_TE_READY (the ALPN is known then) or
 * REM_TE_ERROR follows, never before this returns. Returns 0 or -REM_E_NOMEM. */
int rem_io_tls_accept(struct rem_transport *t, struct rem_loop *loop, int fd,
                      struct ssl_ctx_st *ctx, const struct rem_transport_cbs *cbs, void *arg,
                      size_t read_high, size_t write_high);

#endif
