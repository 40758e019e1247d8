/* SPDX-License-Identifier: Apache-2.0
 * admit: admission control on one worker: at most `limit` requests hold a slot, the rest wait in
 * a bounded FIFO (max_pending) for at most queue_timeout, and anything beyond is refused at once
 * (503 queue_full) without touching the app. One admit exists per upstream (and per route that
 * sets its own limits) on each worker, with an equal share of the configured limits, so nothing
 * is shared between threads on the request path. A stream holds one ticket per admit it passes
 * (route, then upstream) and hears back through the ticket's wait handle. Owns its timer and
 * kick events; borrows the tickets it queues. Knows nothing of streams. */
#ifndef REM_ADMIT_H
#define REM_ADMIT_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/queue.h>

#include "wait.h"

struct event;
struct rem_worker;
struct rem_upstream_metrics;
struct rem_admit;
struct rem_hist_layout;

/* A place at one admit: queued, holding a slot, or neither. Embedded in its owner (a stream),
 * which sets w.done: 0 when a queued ticket is granted its slot, -REM_E_QUEUE_TIMEOUT or
 * -REM_E_SHUTDOWN when it is dropped from the queue. */
struct rem_admit_ticket {
    struct rem_wait w;       /* w.link: in admit->waiters while queued; w.since_ms: queued at */
    struct rem_admit *admit; /* borrowed; NULL when unused */
    bool held;
};

struct rem_admit {
    struct rem_worker *worker;            /* borrowed */
    struct rem_upstream_metrics *metrics; /* borrowed, may be NULL (route-level admits) */
    const struct rem_hist_layout *hl;     /* borrowed: buckets of metrics->queue_wait */
    uint32_t limit;                       /* current concurrency limit (this worker's share) */
    uint32_t max_pending;                 /* this worker's share; 0: no queue */
    uint64_t queue_timeout_ms;
    uint32_t in_flight; /* slots held */
    uint32_t n_pending;
    struct rem_wait_list waiters; /* FIFO; one timeout for all, so deadlines are ordered */
    struct event *timer;          /* owned: the oldest waiter's deadline */
    struct event *kick;           /* owned: hands freed slots to waiters off-stack */
    /* Adaptive limit (gradient limiter), when enabled; limit then moves in [1, max_limit]. */
    struct event *adapt_ev; /* owned: every REM_ADAPT_WINDOW_MS while adaptive */
    bool adaptive;
    uint32_t max_limit;
    double adapt_limit;
    double min_rtt_ms; /* lowest window average seen (drifts up slowly) */
    uint64_t win_sum_ns;
    uint32_t win_n;
};

#define REM_ADAPT_WINDOW_MS 100

/* Sets up a with this worker's shares; m (may be NULL) receives its gauges and queue waits,
 * recorded with the buckets hl. Returns 0 or -REM_E_NOMEM. */
int rem_admit_init(struct rem_admit *a, struct rem_worker *w, struct rem_upstream_metrics *m,
                   const struct rem_hist_layout *hl, uint32_t limit, uint32_t max_pending,
                   uint64_t queue_timeout_ms);
/* Where a's metrics go from now on (a reload moved them; the gauges were carried over). */
void rem_admit_set_metrics(struct rem_admit *a, struct rem_upstream_metrics *m,
                           const struct rem_hist_layout *hl);
/* New shares and settings from a reload, keeping the slots held and the queue: a larger limit
 * grants waiters at once (from the kick event), a smaller one admits nobody new until the
 * slots in use fall below it; a smaller max_pending queues nobody new until the queue is
 * below it. adaptive turns the gradient limiter on or off (on: limit becomes its ceiling).
 * Cannot fail (a reload applies it only once everything that can fail is built). */
void rem_admit_configure(struct rem_admit *a, uint32_t limit, uint32_t max_pending,
                         uint64_t queue_timeout_ms, bool adaptive);
/* Turns on the gradient limiter: the limit starts at the configured share and is lowered when
 * upstream latency rises above its measured minimum, raised again when it recovers. Returns 0
 * (the event it runs on is made by rem_admit_init). */
int rem_admit_adaptive(struct rem_admit *a);
/* One upstream response latency sample (adaptive admits only; a no-op otherwise). */
void rem_admit_sample(struct rem_admit *a, uint64_t ns);

/* Answers every waiter -REM_E_SHUTDOWN and frees the events. */
void rem_admit_dispose(struct rem_admit *a);

/* Asks a for a slot through ticket t (t->w.done set). Returns 0 (granted now: t->held), 1
 * (queued: t->w.done follows from the loop, never before this returns), or
 * -REM_E_QUEUE_FULL. */
int rem_admit_enter(struct rem_admit *a, struct rem_admit_ticket *t);
/* Gives back t's slot or leaves the queue. Idempotent; NULL-admit safe. */
void rem_admit_leave(struct rem_admit_ticket *t);

#endif
