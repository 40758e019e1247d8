/* SPDX-License-Identifier: Apache-2.0
 * listener: one worker's listening socket for one configured listener (SO_REUSEPORT, so the
 * kernel spreads connections over workers without a shared accept lock). Owns the socket and
 * its evconnlistener; hands accepted fds to conn with the codec choice (preface sniffing) and
 * is told when they close (accepting resumes below max_connections). */
#ifndef REM_LISTENER_H
#define REM_LISTENER_H

#include <stdint.h>

struct rem_worker;
struct rem_cfg_listener;
struct rem_listener;

/* Binds and listens on cfg->addr (port override: when *port is nonzero it replaces the
 * configured port; on return *port holds the bound port). Returns the listener (accepting
 * once the worker's loop runs) or NULL with the reason logged. */
struct rem_listener *rem_listener_new(struct rem_worker *w, const struct rem_cfg_listener *cfg,
                                      uint16_t *port);
/* Stops listening: connections already in the backlog are accepted, then the socket closes
 * (new ones are refused by the kernel). Conns already accepted go on. Idempotent. */
void rem_listener_stop(struct rem_listener *l);
/* Frees l; its conns must be gone. NULL-safe. */
void rem_listener_free(struct rem_listener *l);

#endif
