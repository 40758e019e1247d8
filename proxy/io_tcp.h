/* SPDX-License-Identifier: Apache-2.0
 * io_tcp: the TCP and Unix stream socket implementation of rem_io_ops: recv(2) and
 * send(2)/sendmsg(2) with MSG_NOSIGNAL, SHUT_WR, SO_LINGER 0 for resets. Owns nothing but
 * the fd it is given. */
#ifndef REM_IO_TCP_H
#define REM_IO_TCP_H

#include <stddef.h>
#include <sys/socket.h>

#include "transport.h"

/* Sets up t over an accepted, non-blocking fd (taken over: closed on failure and by close).
 * The transport is ready at once and reading starts. Returns 0 or -REM_E_NOMEM. */
int rem_io_tcp_accept(struct rem_transport *t, struct rem_loop *loop, int fd,
                      const struct rem_transport_cbs *cbs, void *arg, size_t read_high,
                      size_t write_high);

/* The same over an accepted AF_UNIX fd: no TCP options. */
int rem_io_unix_accept(struct rem_transport *t, struct rem_loop *loop, int fd,
                       const struct rem_transport_cbs *cbs, void *arg, size_t read_high,
                       size_t write_high);

/* Starts a non-blocking connect (any stream family: AF_INET, AF_INET6, AF_UNIX without the
 * TCP options); REM_TE_READY or REM_TE_ERROR follows, never before this
 * returns. Returns 0, or -REM_E_SYS / -REM_E_NOMEM when no socket could be set up (then t is
 * closed and rem_transport_error(t) holds errno). */
int rem_io_tcp_connect(struct rem_transport *t, struct rem_loop *loop, const struct sockaddr *sa,
                       socklen_t salen, const struct rem_transport_cbs *cbs, void *arg,
                       size_t read_high, size_t write_high);

/* For io implementations that run over a connected stream socket (io_tls.c): creates a
 * non-blocking socket of sa's family, sets t up over it with io and ctx (taken over: released
 * through io->free on failure) waiting for writability, and starts connect(2). io->handshake
 * runs once the socket is writable and must begin with rem_io_tcp_connected. Returns 0 or
 * -REM_E_SYS / -REM_E_NOMEM (t closed, rem_transport_error(t) holds errno for -REM_E_SYS). */
int rem_io_connect_start(struct rem_transport *t, struct rem_loop *loop,
                         const struct rem_io_ops *io, void *ctx, const struct sockaddr *sa,
                         socklen_t salen, const struct rem_transport_cbs *cbs, void *arg,
                         size_t read_high, size_t write_high);
/* The outcome of the connect rem_io_connect_start began, once the socket is writable: 0
 * connected (TCP_NODELAY set), REM_IO_WANT_WRITE still in progress, or a negative errno. */
int rem_io_tcp_connected(struct rem_transport *t);

#endif
