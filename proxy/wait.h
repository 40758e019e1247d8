/* SPDX-License-Identifier: Apache-2.0
 * wait: the handle through which an asynchronous service (admission, the first DNS answer of
 * a cluster, an upconn slot in a pool) answers whoever waits on it, without knowing who that
 * is. The waiter embeds one handle per pending thing and sets done; the service queues the
 * handle (link) and calls done once, from its own event (never inside the call that queued
 * it), unless the waiter cancelled first: after a cancel, done never runs. Header only. */
#ifndef REM_WAIT_H
#define REM_WAIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/queue.h>

struct rem_wait {
    TAILQ_ENTRY(rem_wait) link; /* in the service's FIFO while queued */
    /* rc: 0 granted / ready, or a negative -REM_E_* (the waiter fails with it). */
    void (*done)(struct rem_wait *w, int rc);
    uint64_t since_ms; /* when it was queued (rem_now_ms) */
    bool queued;
};

TAILQ_HEAD(rem_wait_list, rem_wait);

#define REM_WAIT_OWNER(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

/* The waiter: w answers to done. */
static inline void rem_wait_init(struct rem_wait *w, void (*done)(struct rem_wait *, int))
{
    w->done = done;
    w->queued = false;
}

/* The service: w joins the tail (or, put back, the head) of q at now_ms. */
static inline void rem_wait_enqueue(struct rem_wait_list *q, struct rem_wait *w, uint64_t now_ms)
{
    w->queued = true;
    w->since_ms = now_ms;
    TAILQ_INSERT_TAIL(q, w, link);
}
static inline void rem_wait_requeue_head(struct rem_wait_list *q, struct rem_wait *w)
{
    w->queued = true;
    TAILQ_INSERT_HEAD(q, w, link);
}
/* w leaves q (no-op when it is not queued). */
static inline void rem_wait_dequeue(struct rem_wait_list *q, struct rem_wait *w)
{
    if (!w->queued)
        return;
    TAILQ_REMOVE(q, w, link);
    w->queued = false;
}

#endif
