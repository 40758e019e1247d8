/* SPDX-License-Identifier: Apache-2.0
 * loop: the bottom of a worker's stack: its event_base, the transport flush list (output
 * written once at the end of a loop iteration), the reaper (objects freed after their callback
 * stacks have returned) and the monotonic clock. Owns the base and its two internal events;
 * knows nothing of what runs on it (transports, conns, streams are above it). One loop per
 * worker thread; never touched by another thread. */
#ifndef REM_LOOP_H
#define REM_LOOP_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/queue.h>

struct event;
struct event_base;

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

struct rem_loop {
    struct event_base *base;      /* owned */
    struct rem_flush_list flushq; /* run at the end of this iteration */
    struct event *flush_ev;       /* owned: runs flushq */
    struct event *reap_ev;        /* owned */
    struct rem_reap *reap_head;
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

uint64_t rem_now_ms(void);
uint64_t rem_now_ns(void); /* CLOCK_MONOTONIC */

#endif
