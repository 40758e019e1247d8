/* SPDX-License-Identifier: Apache-2.0
 * upool: the per-endpoint pool of upconns on one worker: lends an upconn with room (busy
 * first for a multiplexed codec, then idle ones, most recently used first), opens a new one
 * within the worker's share of max_connections (closing an idle upconn of another endpoint to
 * make room), idles released ones (idle_timeout) and makes acquires wait, in FIFO order, when
 * every upconn is full at max_connections. Answers through the request's wait handle. Owns no
 * upconn memory itself (upconn.c frees them); borrows the requests it queues. */
#ifndef REM_UPOOL_H
#define REM_UPOOL_H

#include <stdbool.h>

#include "wait.h"

struct rem_cluster;
struct rem_endpoint;
struct rem_stream;
struct rem_upconn;
struct rem_up_ops;

/* One acquire: embedded in its owner (a stream), which sets w.done. */
struct rem_pool_req {
    struct rem_wait w;       /* done(w, 0): the upconn is ready (uc) or connecting (uc, and
                                the codec tells the stream once connected); done(w, <0): the
                                acquire failed */
    struct rem_stream *s;    /* borrowed: what the codec attaches */
    struct rem_endpoint *ep; /* borrowed */
    struct rem_upconn *uc;   /* out */
    bool reused;             /* out: uc came from the pool (a keep-alive race is possible) */
    bool connecting;         /* out: uc is still connecting */
};

/* The cluster's upconns use ops; the pool closes them when endpoints leave. */
void rem_upool_bind(struct rem_cluster *cl, const struct rem_up_ops *ops);

/* Gets r->s an upconn of r->ep: one with room (when use_pool) or a new one. Returns 0 (r->uc
 * is ready now, r->s attached), 1 (r->uc is connecting, r->s attached; the codec reports when
 * it is connected), 2 (multiplexed codecs only: every upconn full at max_connections, r
 * waits, and r->w.done follows from the loop, never before this returns) or
 * -REM_E_UPSTREAM_OVERFLOW (HTTP/1.1 at max_connections) / -REM_E_CONNECT_FAILED /
 * -REM_E_NOMEM. */
int rem_upool_acquire(struct rem_pool_req *r, bool use_pool);
/* r leaves the wait; its done never runs. Idempotent. */
void rem_upool_cancel(struct rem_pool_req *r);

/* remora is draining: idle upconns of cl close now, busy ones once their streams are done
 * (never back to idle). */
void rem_upool_drain(struct rem_cluster *cl);

/* The stream on uc (HTTP/1.1) is done with it. When reusable, uc goes idle in its pool (its
 * codec's state reset by the codec); else it is closed. */
void rem_upool_release(struct rem_upconn *uc, bool reusable);

/* For multiplexed codecs: the number of streams on uc changed; it moves between busy and idle
 * (arming idle_ms), or closes when it is draining after a GOAWAY and carries none; waiters get
 * the room. */
void rem_upool_streams_changed(struct rem_upconn *uc, unsigned n_streams, bool draining,
                               uint64_t idle_ms);

#endif
