/* SPDX-License-Identifier: Apache-2.0
 * admit: per-worker admission with a bounded FIFO and one lazy timer. */
#include <stddef.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "error.h"
#include "log.h"
#include "admit.h"
#include "metrics.h"
#include "loop.h"
#include "wait.h"
#include "worker.h"

#define M_ADD(a, field, n)                                                                         \
    do {                                                                                           \
        if ((a)->metrics)                                                                          \
            REM_M_ADD((a)->metrics->field, (n));                                                   \
    } while (0)

static void arm(struct rem_admit *a)
{
    struct rem_wait *head = TAILQ_FIRST(&a->waiters);
    if (!head || a->queue_timeout_ms == 0) {
        event_del(a->timer);
        return;
    }
    uint64_t waited = rem_now_ms() - head->since_ms;
    uint64_t left = waited >= a->queue_timeout_ms ? 0 : a->queue_timeout_ms - waited;
    struct timeval tv = {(time_t)(left / 1000), (suseconds_t)((left % 1000) * 1000)};
    event_add(a->timer, &tv);
}

#define TICKET(wp) REM_WAIT_OWNER(wp, struct rem_admit_ticket, w)

static void unlink_waiter(struct rem_admit *a, struct rem_admit_ticket *t)
{
    rem_wait_dequeue(&a->waiters, &t->w);
    a->n_pending--;
    M_ADD(a, pending, -1);
    if (a->metrics)
        rem_hist_record(&a->metrics->queue_wait, a->hl, (rem_now_ms() - t->w.since_ms) * 1000000u);
}

static void take_slot(struct rem_admit *a, struct rem_admit_ticket *t)
{
    a->in_flight++;
    t->held = true;
    M_ADD(a, in_flight, 1);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    struct rem_admit *a = arg;
    uint64_t now = rem_now_ms();
    struct rem_wait *w;
    while ((w = TAILQ_FIRST(&a->waiters)) != NULL && now - w->since_ms >= a->queue_timeout_ms) {
        unlink_waiter(a, TICKET(w));
        w->done(w, -REM_E_QUEUE_TIMEOUT);
    }
    arm(a);
}

static void on_kick(evutil_socket_t fd, short what, void *arg)
{
    struct rem_admit *a = arg;
    struct rem_wait *w;
    while (a->in_flight < a->limit && (w = TAILQ_FIRST(&a->waiters)) != NULL) {
        unlink_waiter(a, TICKET(w));
        take_slot(a, TICKET(w));
        w->done(w, 0); /* may end the waiter at once, giving the slot back */
    }
    arm(a);
}

static void set_limit(struct rem_admit *a, uint32_t limit)
{
    if (limit == a->limit)
        return;
    M_ADD(a, concurrency_limit, (int64_t)limit - (int64_t)a->limit);
    bool grew = limit > a->limit;
    a->limit = limit;
    if (grew && !TAILQ_EMPTY(&a->waiters))
        event_active(a->kick, EV_TIMEOUT, 1);
}

/* Gradient limiter in the spirit of Netflix concurrency-limits' Gradient and Envoy's adaptive
 * concurrency: gradient = min_rtt * 1.1 / sample_rtt, clamped to [0.5, 1]; the new limit is
 * limit * gradient + sqrt(limit) (room to probe upwards), smoothed 50/50 so one noisy window
 * cannot collapse it (at most a 25% cut per window). min_rtt drifts up 0.2% per window so a lasting
 * change of the app's baseline is accepted within tens of seconds rather than throttled forever. */
static void on_adapt(evutil_socket_t fd, short what, void *arg)
{
    struct rem_admit *a = arg;
    if (a->win_n < 3)
        return; /* too few samples to judge: keep collecting */
    double sample = (double)a->win_sum_ns / a->win_n / 1e6;
    a->win_sum_ns = 0;
    a->win_n = 0;
    if (a->min_rtt_ms <= 0 || sample < a->min_rtt_ms)
        a->min_rtt_ms = sample;
    else
        a->min_rtt_ms *= 1.002;
    double g = a->min_rtt_ms * 1.1 / sample;
    if (g > 1)
        g = 1;
    if (g < 0.5)
        g = 0.5;
    double target = a->adapt_limit * g + sqrt(a->adapt_limit);
    a->adapt_limit = 0.5 * a->adapt_limit + 0.5 * target;
    if (a->adapt_limit > a->max_limit)
        a->adapt_limit = a->max_limit;
    if (a->adapt_limit < 1)
        a->adapt_limit = 1;
    set_limit(a, (uint32_t)(a->adapt_limit + 0.5));
}

int rem_admit_adaptive(struct rem_admit *a)
{
    a->adaptive = true;
    a->max_limit = a->limit;
    a->adapt_limit = a->limit;
    a->win_sum_ns = 0;
    a->win_n = 0;
    struct timeval tv = {0, REM_ADAPT_WINDOW_MS * 1000};
    event_add(a->adapt_ev, &tv);
    return 0;
}

void rem_admit_set_metrics(struct rem_admit *a, struct rem_upstream_metrics *m,
                           const struct rem_hist_layout *hl)
{
    a->metrics = m;
    a->hl = hl;
}

void rem_admit_configure(struct rem_admit *a, uint32_t limit, uint32_t max_pending,
                         uint64_t queue_timeout_ms, bool adaptive)
{
    limit = limit ? limit : 1;
    a->max_pending = max_pending; /* a smaller queue drops nobody: it queues nobody new */
    if (queue_timeout_ms != a->queue_timeout_ms) {
        a->queue_timeout_ms = queue_timeout_ms;
        arm(a); /* the oldest waiter's deadline moved */
    }
    if (adaptive && a->adaptive) {
        a->max_limit = limit;
        if (a->adapt_limit > limit)
            a->adapt_limit = limit;
        set_limit(a, (uint32_t)(a->adapt_limit + 0.5));
        return;
    }
    if (a->adaptive) {
        a->adaptive = false;
        event_del(a->adapt_ev);
    }
    set_limit(a, limit);
    if (adaptive)
        (void)rem_admit_adaptive(a); /* cannot fail: the event exists since init */
}

void rem_admit_sample(struct rem_admit *a, uint64_t ns)
{
    if (!a->adaptive)
        return;
    a->win_sum_ns += ns;
    a->win_n++;
}

int rem_admit_init(struct rem_admit *a, struct rem_worker *w, struct rem_upstream_metrics *m,
                   const struct rem_hist_layout *hl, uint32_t limit, uint32_t max_pending,
                   uint64_t queue_timeout_ms)
{
    memset(a, 0, sizeof(*a));
    a->worker = w;
    a->metrics = m;
    a->hl = hl;
    a->limit = limit ? limit : 1;
    a->max_pending = max_pending;
    a->queue_timeout_ms = queue_timeout_ms;
    TAILQ_INIT(&a->waiters);
    a->timer = evtimer_new(w->loop.base, on_timer, a);
    a->kick = event_new(w->loop.base, -1, 0, on_kick, a);
    /* Made now, added only while adaptive: a reload can turn the limiter on without failing. */
    a->adapt_ev = event_new(w->loop.base, -1, EV_PERSIST, on_adapt, a);
    if (!a->timer || !a->kick || !a->adapt_ev)
        return -REM_E_NOMEM;
    M_ADD(a, concurrency_limit, (int64_t)a->limit);
    return 0;
}

void rem_admit_dispose(struct rem_admit *a)
{
    struct rem_wait *w;
    while (a->timer && (w = TAILQ_FIRST(&a->waiters)) != NULL) {
        unlink_waiter(a, TICKET(w));
        w->done(w, -REM_E_SHUTDOWN);
    }
    if (a->timer)
        event_free(a->timer);
    if (a->kick)
        event_free(a->kick);
    if (a->adapt_ev)
        event_free(a->adapt_ev);
    a->timer = a->kick = a->adapt_ev = NULL;
}

int rem_admit_enter(struct rem_admit *a, struct rem_admit_ticket *t)
{
    t->admit = a;
    if (a->in_flight < a->limit && a->n_pending == 0) {
        take_slot(a, t);
        return 0;
    }
    if (a->n_pending >= a->max_pending)
        return -REM_E_QUEUE_FULL;
    rem_wait_enqueue(&a->waiters, &t->w, rem_now_ms());
    a->n_pending++;
    M_ADD(a, pending, 1);
    if (a->n_pending == 1)
        arm(a);
    return 1;
}

void rem_admit_leave(struct rem_admit_ticket *t)
{
    struct rem_admit *a = t->admit;
    if (!a)
        return;
    if (t->w.queued) {
        bool was_head = TAILQ_FIRST(&a->waiters) == &t->w;
        unlink_waiter(a, t);
        if (was_head)
            arm(a);
    }
    if (t->held) {
        t->held = false;
        a->in_flight--;
        M_ADD(a, in_flight, -1);
        if (!TAILQ_EMPTY(&a->waiters))
            event_active(a->kick, EV_TIMEOUT, 1);
    }
    t->admit = NULL;
}
