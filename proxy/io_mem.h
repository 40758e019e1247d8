/* SPDX-License-Identifier: Apache-2.0
 * io_mem: an in-memory implementation of rem_io_ops, for unit tests and fuzzing of the codecs
 * over the real transport, conn and upconn code, without sockets. An end's peer is either the
 * test (which feeds bytes with rem_io_mem_feed and takes what was sent with rem_io_mem_take) or
 * another end (rem_io_mem_pair: what one sends, the other receives). A send window bounds what
 * may be in flight toward the peer, so backpressure (short writes, EPOLLOUT) is exercised too.
 * Owns its buffers; readiness is reported to the transport with rem_transport_io_wake, so the
 * transport's callbacks run from the loop, as with sockets. */
#ifndef REM_IO_MEM_H
#define REM_IO_MEM_H

#include <stdbool.h>
#include <stddef.h>

#include "transport.h"

struct evbuffer;

/* Sets up t as an in-memory end, ready at once. window: bytes the end may have sent and the
 * peer not yet taken (0: unbounded). Returns 0 or -REM_E_NOMEM. */
int rem_io_mem_init(struct rem_transport *t, struct rem_loop *loop,
                    const struct rem_transport_cbs *cbs, void *arg, size_t read_high,
                    size_t write_high, size_t window);
/* Sets up t as an in-memory end that is connecting, like an outgoing TCP connect: nothing is
 * read or written until REM_TE_READY, which the owner hears from the loop (never before this
 * returns); from then on t is an end as from rem_io_mem_init. For upconns in tests and fuzzing
 * (a rem_cluster_connect_fn). Returns 0 or -REM_E_NOMEM. */
int rem_io_mem_connect(struct rem_transport *t, struct rem_loop *loop,
                       const struct rem_transport_cbs *cbs, void *arg, size_t read_high,
                       size_t write_high, size_t window);
/* Connects two ends set up by rem_io_mem_init or rem_io_mem_connect: what a sends, b receives,
 * and back. */
void rem_io_mem_pair(struct rem_transport *a, struct rem_transport *b);

/* The test as the peer: bytes for t to receive. Returns 0 or -REM_E_NOMEM. */
int rem_io_mem_feed(struct rem_transport *t, const void *p, size_t n);
/* The test as the peer closes its sending side: t reads EOF once the fed bytes are taken. */
void rem_io_mem_feed_eof(struct rem_transport *t);
/* Moves everything t sent into dst (appends) and opens the window again. Returns the count. */
size_t rem_io_mem_take(struct rem_transport *t, struct evbuffer *dst);
/* Whether t ended its sending side (shutdown) / was closed. */
bool rem_io_mem_shut(const struct rem_transport *t);
bool rem_io_mem_closed(const struct rem_transport *t);
/* Whether t's close was asked to look like an error (reset). */
bool rem_io_mem_was_reset(const struct rem_transport *t);

#endif
