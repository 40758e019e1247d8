/* SPDX-License-Identifier: Apache-2.0
 * listener: one worker's listening socket for one configured listener (SO_REUSEPORT, so the
 * kernel spreads connections over workers without a shared accept lock). Owns the socket and
 * its evconnlistener and a reference on its TLS context; hands accepted fds to conn with the
 * codec choice (preface sniffing on cleartext, ALPN on TLS) and is told when they close
 * (accepting resumes below max_connections). */
#ifndef REM_LISTENER_H
#define REM_LISTENER_H

#include <stdint.h>

struct ssl_ctx_st;
struct rem_worker;
struct rem_cfg_listener;
struct rem_listener;

/* Binds and listens on cfg->addr with SO_REUSEPORT (any thread: the main thread binds every
 * worker's socket, so a listener configured with port 0 gets one port for all). When *port is
 * nonzero it replaces the configured port; on return *port holds the bound port. Returns the
 * socket, or -1 with the reason logged. */
int rem_listener_bind(const struct rem_cfg_listener *cfg, uint16_t *port);
/* (Unix sockets, which have no SO_REUSEPORT: "unix:/path" removes a stale socket file first,
 * when nothing listens on it, and refuses any other file; the file gets cfg->mode; *port is
 * 0.) */
/* Another worker's descriptor of a bound Unix socket fd (F_DUPFD_CLOEXEC): the workers share
 * one socket and its backlog. Returns it, or -1 with the reason logged. */
int rem_listener_dup(const struct rem_cfg_listener *cfg, int fd);
/* Removes the socket file of a "unix:/path" listener that was bound but never served (a plan
 * that failed), if it is a socket. Nothing for other addresses. */
void rem_listener_unbind(const struct rem_cfg_listener *cfg);
/* The worker's listener on fd (from rem_listener_bind; owned from now on, closed on failure),
 * with this worker's share of cfg->max_connections over n_workers; tls: the server context
 * of a TLS listener (tls.c; referenced), NULL: plaintext. cfg must live as long as the
 * worker's current config. Returns the listener (accepting once the worker's loop runs) or
 * NULL with the reason logged. */
struct rem_listener *rem_listener_new(struct rem_worker *w, const struct rem_cfg_listener *cfg,
                                      int fd, unsigned n_workers, struct ssl_ctx_st *tls);
/* A reload kept the listener's address: new conns get cfg (the new generation's entry), tls
 * (the new plan's context, or NULL) and the new share of max_connections; conns already
 * accepted keep the context they were accepted with. The socket stays open throughout. */
void rem_listener_update(struct rem_listener *l, const struct rem_cfg_listener *cfg,
                         unsigned n_workers, struct ssl_ctx_st *tls);
/* Conns accepted on l that are still open. */
uint32_t rem_listener_conns(const struct rem_listener *l);
/* Stops listening: connections already in the backlog are accepted, then the socket closes
 * (new ones are refused by the kernel) and a unix:/path socket file is removed (if bind made
 * it; free does the same for a listener never stopped). Conns already accepted go on.
 * Idempotent. */
void rem_listener_stop(struct rem_listener *l);
/* Frees l; its conns must be gone. NULL-safe. */
void rem_listener_free(struct rem_listener *l);

#endif
