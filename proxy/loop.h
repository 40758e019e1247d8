/* SPDX-License-Identifier: Apache-2.0
 * loop: the bottom of a worker's stack: its event_base, the transport flush list (output
 * written once at the end of a loop iteration), the post list (work run from the loop, out of
 * the caller's stack: a conn's kick), the reaper (objects freed after their callback stacks
 * have returned), the spare evbuffers transports borrow while they hold bytes, and the
 * monotonic clock. Owns the base, its internal events and the spare buffers; knows nothing of
 * what runs on it (transports, conns, streams are above it). One loop per worker thread; never
 * touched by another thread. */
#ifndef REM_LOOP_H
#define REM_LOOP_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/queue.h>

struct event;
struct event_base;
struct evbuffer;

/* Deferred free: embedded in every object that may be closed from inside its own callback
 * stack (STYLE.md: mark closing, detach, and let the reaper free it). */
struct rem_reap {
    struct rem_reap *next;
    void (*fn)(struct rem_reap *r);
    bool queued;
};

/* Work deferred to the end of the loop iteration (a transport's optimistic write): embedded
 * in its owner, run once however often it was queued in the iteration. */
struct rem_flush {
    TAILQ_ENTRY(rem_flush) link;
    void (*fn)(struct rem_flush *f);
    bool queued;
};

TAILQ_HEAD(rem_flush_list, rem_flush);

/* Work run from the loop once the current callbacks have returned (nginx's posted events): a
 * conn's kick. Embedded in its owner instead of a libevent event per owner (128 B each, most of
 * them idle); run once however often it was posted before its turn. Queued while
 * link.tqe_prev is set. */
struct rem_post {
    TAILQ_ENTRY(rem_post) link;
    void (*fn)(struct rem_post *p);
};

TAILQ_HEAD(rem_post_list, rem_post);

/* Empty evbuffers kept for reuse: transports take one when bytes come and give it back once it
 * is empty again, so an idle conn holds none and a request costs no malloc for them. Bounded:
 * more than this many at once are freed (one loop iteration rarely empties that many). */
#define REM_LOOP_SPARE_BUFFERS 256

struct rem_loop {
    struct event_base *base;      /* owned */
    struct rem_flush_list flushq; /* run at the end of this iteration */
    struct event *flush_ev;       /* owned: runs flushq */
    struct event *reap_ev;        /* owned */
    struct rem_reap *reap_head;
    struct rem_post_list postq; /* run from post_ev */
    struct event *post_ev;      /* owned: runs postq */
    /* Owned, always empty and frozen at its end (adding to it fails): what a transport that
     * holds no input buffer shows its owner, who only reads and drains its input. */
    struct evbuffer *empty;
    unsigned n_spare;
    struct evbuffer *spare[REM_LOOP_SPARE_BUFFERS]; /* owned: empty, for rem_loop_buffer_get */
};

/* Creates the base (no locking: one thread per base) and the internal events. Returns 0 or
 * -REM_E_NOMEM; on failure l is disposable. */
int rem_loop_init(struct rem_loop *l);
/* Frees what is left on the reaper, the events and the base. NULL-safe, idempotent. */
void rem_loop_dispose(struct rem_loop *l);

/* Queues r to be freed by fn once the current callbacks have returned. Idempotent. */
void rem_loop_defer_free(struct rem_loop *l, struct rem_reap *r, void (*fn)(struct rem_reap *));
/* Runs the reaper now (teardown). */
void rem_loop_reap(struct rem_loop *l);

/* Queues f to run fn at the end of this iteration (no-op when queued); cancel takes it off. */
void rem_loop_flush_later(struct rem_loop *l, struct rem_flush *f, void (*fn)(struct rem_flush *));
void rem_loop_flush_cancel(struct rem_loop *l, struct rem_flush *f);

/* Queues p to run fn from the loop once the current callbacks have returned (no-op when
 * queued); cancel takes it off. fn may post p again: it runs again in the same pass. */
void rem_loop_post(struct rem_loop *l, struct rem_post *p, void (*fn)(struct rem_post *));
void rem_loop_post_cancel(struct rem_loop *l, struct rem_post *p);

/* An empty evbuffer for the caller to own: a spare one, or a new one. Aborts on OOM (a control
 * object of 160 B; the bytes it will hold are bounded by the transport's watermarks). */
struct evbuffer *rem_loop_buffer_get(struct rem_loop *l);
/* Takes back b, which must be empty (NULL-safe): kept as a spare, or freed when there are
 * enough. */
void rem_loop_buffer_put(struct rem_loop *l, struct evbuffer *b);

uint64_t rem_now_ms(void);
uint64_t rem_now_ns(void); /* CLOCK_MONOTONIC */

#endif
