/* SPDX-License-Identifier: Apache-2.0
 * upool: upstream connections (upconns) and their per-worker, per-endpoint pool. Owns every
 * upconn: connecting, idle (keep-alive, closed after idle_timeout or when the app closes it),
 * active (lent to one stream). The HTTP/1.1 codec on an upconn lives in h1_up.c. */
#ifndef REM_UPOOL_H
#define REM_UPOOL_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/queue.h>

#include <llhttp.h>

#include "error.h"
#include "transport.h"
#include "worker.h"

struct event;
struct rem_endpoint;
struct rem_stream;
struct rem_h2_up;

enum rem_upconn_state {
    REM_UPCONN_CONNECTING = 0,
    REM_UPCONN_ACTIVE,
    REM_UPCONN_IDLE,
    REM_UPCONN_CLOSED,
};

struct rem_upconn {
    TAILQ_ENTRY(rem_upconn) link; /* in endpoint->idle while IDLE */
    struct rem_worker *worker;    /* borrowed */
    struct rem_endpoint *ep;      /* borrowed: endpoints outlive their upconns */
    struct rem_transport t;       /* owned */
    struct event *timer;          /* owned: connect / response / idle timeout */
    struct event *kick;           /* owned: resumes parsing outside callback stacks */
    enum rem_upconn_state state;
    struct rem_stream *stream; /* borrowed: the attached stream (HTTP/1.1) */
    struct rem_h2_up *h2;      /* owned: the HTTP/2 session and its streams (protocol h2c) */
    llhttp_t parser;
    unsigned n_requests;   /* requests started on this upconn */
    bool paused;           /* downstream full: response parsing paused */
    bool resp_complete;    /* parser: the response ended */
    bool resp_interim;     /* parser: the current head is 1xx */
    bool exec_pending;     /* parser paused at the end of the input: run it once more */
    enum rem_err resp_err; /* parser: why a callback failed */
    uint64_t timeout_ms;   /* response timeout of the current stream */
    uint64_t connect_start_ns;
    uint64_t last_activity_ms; /* last response byte, for the lazy timeout */
    struct rem_reap reap;
};

/* Lends an idle upconn of ep to s, or returns NULL. The upconn is ACTIVE on return. */
struct rem_upconn *rem_upool_take(struct rem_endpoint *ep, struct rem_stream *s);

/* Gets s an upconn of ep, by the upstream's protocol: HTTP/1.1 takes an idle one (when
 * use_pool) or connects a new one; HTTP/2 joins an upconn with a free stream slot (when use_pool)
 * or connects a new one. Returns 0 (*out is ready now: the caller calls
 * rem_stream_on_upconn_ready), 1 (*out is connecting; s is told later, never before this
 * returns), or the errors of rem_upool_connect. Sets s->on_reused. */
int rem_upool_acquire(struct rem_endpoint *ep, struct rem_stream *s, bool use_pool,
                      struct rem_upconn **out);

/* s leaves its cluster's HTTP/2 slot wait (it is finishing). */
void rem_upool_h2_unwait(struct rem_stream *s);

/* For h2_up: the number of streams on uc changed; it moves between busy and idle (arming the
 * idle timeout), or closes when it is draining after a GOAWAY and carries none. */
void rem_upool_h2_streams_changed(struct rem_upconn *uc, unsigned n_streams, bool draining);
/* (Re)arms uc's timer for ms (0: none). */
void rem_upconn_arm_timer(struct rem_upconn *uc, uint64_t ms);

/* Starts connecting a new upconn for s. Returns 0 (s is told through
 * rem_stream_on_upconn_ready / _error, never before this returns) or -REM_E_UPSTREAM_OVERFLOW
 * (max_connections reached), -REM_E_CONNECT_REFUSED / -REM_E_CONNECT_FAILED (immediate failure),
 * -REM_E_NOMEM. */
int rem_upool_connect(struct rem_endpoint *ep, struct rem_stream *s, struct rem_upconn **out);

/* The stream is done with uc. When reusable, uc goes idle in its pool; else it is closed. */
void rem_upool_release(struct rem_upconn *uc, bool reusable);

/* Closes uc now; the attached stream, if any, is detached first and is NOT called back.
 * Idempotent; the memory goes to the reaper. */
void rem_upconn_close(struct rem_upconn *uc);

/* Pause/resume response reading (downstream backpressure). */
void rem_upconn_pause(struct rem_upconn *uc);
void rem_upconn_resume(struct rem_upconn *uc);

/* (Re)arms the response timeout: called when the request head is sent and on every read. */
void rem_upconn_arm_response_timer(struct rem_upconn *uc);

struct evbuffer *rem_upconn_output(struct rem_upconn *uc);

#endif
