/* SPDX-License-Identifier: Apache-2.0
 * upconn: one upstream connection: its transport, its timer and kick, its state (set
 * only through rem_upconn_set_state, which also keeps the endpoint's idle/busy lists and the
 * connection gauges) and its upstream codec behind `struct rem_up_ops` (h1_up.c, h2_up.c),
 * chosen by the upstream's configured protocol. Transport events are passed to the codec.
 * Owns the transport, the events and the codec's per-upconn state; the pool (upool.c) decides
 * when upconns are made, lent, idled and closed. Knows nothing of streams but as opaque
 * pointers handed to the codec. */
#ifndef REM_UPCONN_H
#define REM_UPCONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/queue.h>

#include "error.h"
#include "loop.h"
#include "transport.h"

struct event;
struct evbuffer;
struct rem_endpoint;
struct rem_stream;
struct rem_worker;
struct rem_upconn;

enum rem_upconn_state {
    REM_UPCONN_CONNECTING = 0,
    REM_UPCONN_ACTIVE, /* carrying at least one stream */
    REM_UPCONN_IDLE,   /* connected, no stream */
    REM_UPCONN_CLOSED,
};

/* How a failed upconn's stream may be retried (rem_stream_on_upconn_error). */
enum rem_retry_hint {
    REM_RETRY_MAYBE = 0, /* the keep-alive race rules apply (a reused upconn, nothing back) */
    REM_RETRY_SAFE,      /* the app never processed it (REFUSED_STREAM, above GOAWAY, unsent) */
    REM_RETRY_NEVER,     /* the app processed it (and reset it) */
};

/* An upstream codec (HAProxy's mux_ops, h2o's httpclient `super`). The upconn and the pool
 * call the upconn-level entries, the stream the stream-level ones. Entries may close the
 * upconn (rem_upconn_close), never free it. */
struct rem_up_ops {
    const char *name; /* "http1", "h2c" */
    /* Carries several streams at once: the pool fills it before opening another. */
    bool multiplexed;
    /* upconn level */
    /* The codec's per-upconn state (created before connecting); NULL: out of memory. */
    void *(*init)(struct rem_upconn *uc);
    /* Frees it (from the upconn's reaper). */
    void (*free)(struct rem_upconn *uc);
    /* The connect (and handshake) completed: attached streams may go. */
    void (*ready)(struct rem_upconn *uc);
    /* Input arrived. */
    void (*process)(struct rem_upconn *uc);
    /* The output drained below its watermark. */
    void (*on_drained)(struct rem_upconn *uc);
    /* The upconn's kick event: work deferred out of a caller's stack. */
    void (*on_kick)(struct rem_upconn *uc);
    /* The upconn timer fired while ACTIVE (response timeouts) or IDLE (idle/liveness). */
    void (*on_timer)(struct rem_upconn *uc);
    /* The app closed (REM_TE_EOF) or the transport failed (REM_TE_ERROR) on a connected
     * upconn. */
    void (*on_close)(struct rem_upconn *uc, int what);
    /* Closes uc and tells every attached stream e. */
    void (*fail_all)(struct rem_upconn *uc, enum rem_err e);
    /* uc is retired with no stream on it (remora drains): HTTP/2 tells the app with a GOAWAY
     * (NO_ERROR). Returns true when it went out now and the caller closes uc; false when it
     * could only be queued (inside the codec's own callbacks): the codec then closes uc once
     * it is sent. NULL: nothing to say (HTTP/1.1). */
    bool (*goaway)(struct rem_upconn *uc);
    /* uc is closing: attached streams are let go without being called back on a failure. */
    void (*detach_all)(struct rem_upconn *uc);
    /* Whether uc can take one more stream now. */
    bool (*has_room)(const struct rem_upconn *uc);
    /* Streams on uc (attached, not yet let go). */
    unsigned (*n_streams)(const struct rem_upconn *uc);
    /* stream level */
    /* s joins uc; it is told rem_stream_on_upconn_ready once uc is connected. */
    void (*attach)(struct rem_upconn *uc, struct rem_stream *s);
    /* s gives up its exchange before it completed: HTTP/1.1 closes uc, HTTP/2 resets s. */
    void (*cancel)(struct rem_upconn *uc, struct rem_stream *s);
    /* The request; each returns 0 or -REM_E_NOMEM. */
    int (*write_head)(struct rem_upconn *uc, struct rem_stream *s);
    int (*write_body)(struct rem_upconn *uc, struct rem_stream *s, const char *p, size_t n);
    int (*write_end)(struct rem_upconn *uc, struct rem_stream *s);
    /* The request bytes held for s are over the watermark: the downstream must pause. */
    bool (*full)(struct rem_upconn *uc, struct rem_stream *s);
    /* The downstream took response bytes: reading (or window) may resume. */
    void (*resume)(struct rem_upconn *uc, struct rem_stream *s);
    /* s becomes an opaque tunnel. Returns 0 or -REM_E_UNSUPPORTED (the tunnel issue). */
    int (*set_tunnel)(struct rem_upconn *uc, struct rem_stream *s);
};

struct rem_upconn {
    TAILQ_ENTRY(rem_upconn) link;          /* in endpoint->idle or ->busy (by state) */
    struct rem_worker *worker;             /* borrowed */
    struct rem_endpoint *ep;               /* a reference */
    const struct rem_up_ops *up;           /* borrowed: the codec */
    void *codec;                           /* owned through up: the codec's per-upconn state */
    void (*closed)(struct rem_upconn *uc); /* the pool's: uc closed (a slot freed) */
    struct rem_transport t;                /* owned */
    struct event *timer;                   /* owned: connect / response / idle timeout */
    struct rem_post kick; /* on the loop's post list: resumes work outside callback stacks */
    enum rem_upconn_state state;
    uint64_t timeout_ms; /* response timeout of the current stream */
    uint64_t connect_start_ns;
    uint64_t last_activity_ms; /* last response byte, for the lazy timeout */
    struct rem_reap reap;
};

/* A new upconn of ep with ep's cluster codec, not connected (state CLOSED, not counted).
 * closed is called when it closes. NULL: out of memory. */
struct rem_upconn *rem_upconn_new(struct rem_endpoint *ep, void (*closed)(struct rem_upconn *));
/* Starts connecting (CONNECTING, connect_timeout armed); REM_TE_READY goes to the codec's
 * ready, failures to fail_all, never before this returns. Returns 0 or -REM_E_CONNECT_FAILED
 * (no socket; uc is closed). */
int rem_upconn_connect(struct rem_upconn *uc);

/* Closes uc now; attached streams are let go (detach_all) and NOT called back. Idempotent;
 * the memory goes to the reaper. */
void rem_upconn_close(struct rem_upconn *uc);

/* Moves uc to st, keeping the endpoint's lists and the connection gauges. */
void rem_upconn_set_state(struct rem_upconn *uc, enum rem_upconn_state st);

/* (Re)arms uc's timer for ms (0: none). */
void rem_upconn_arm_timer(struct rem_upconn *uc, uint64_t ms);
/* The stream's response timeout is ms; (re)armed now and, lazily, on every read. */
void rem_upconn_start_response_timer(struct rem_upconn *uc, uint64_t ms);
/* (Re)arms the response timeout: called when a request head is sent and on every read. */
void rem_upconn_arm_response_timer(struct rem_upconn *uc);
/* Activity now (the lazy timeout counts from here). */
void rem_upconn_touch(struct rem_upconn *uc);
/* Schedules the codec's on_kick from the event loop. */
void rem_upconn_kick(struct rem_upconn *uc);
/* Takes back a kick that has not run yet (an upconn going back to the pool). */
void rem_upconn_kick_cancel(struct rem_upconn *uc);

static inline struct evbuffer *rem_upconn_input(struct rem_upconn *uc)
{
    return rem_transport_input(&uc->t);
}
static inline struct evbuffer *rem_upconn_output(struct rem_upconn *uc)
{
    return rem_transport_output(&uc->t);
}
/* Bytes waiting in the output (takes no buffer, unlike rem_upconn_output). */
static inline size_t rem_upconn_output_len(const struct rem_upconn *uc)
{
    return rem_transport_output_len(&uc->t);
}
/* The output is queued for writing at the end of this loop iteration. */
void rem_upconn_flush_later(struct rem_upconn *uc);
/* Ends the sending side (FIN) once the output is written; reading goes on (a tunnel whose
 * client ended its side). */
void rem_upconn_shutdown_write(struct rem_upconn *uc);
/* Writes what the output holds now (before a close that would drop it). */
void rem_upconn_flush_now(struct rem_upconn *uc);
/* Reading resumes below the watermark once the codec consumed input. */
void rem_upconn_rearm(struct rem_upconn *uc);

#endif
