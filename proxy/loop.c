/* SPDX-License-Identifier: Apache-2.0
 * loop: event_base, flush list, reaper, clock. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>

#include "error.h"
#include "loop.h"

uint64_t rem_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t rem_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

void rem_loop_reap(struct rem_loop *l)
{
    /* Objects queued while reaping are taken on the next round. */
    while (l->reap_head) {
        struct rem_reap *r = l->reap_head;
        l->reap_head = r->next;
        r->queued = false;
        r->fn(r);
    }
}

static void on_reap(evutil_socket_t fd, short what, void *arg)
{
    rem_loop_reap(arg);
}

static void on_flush(evutil_socket_t fd, short what, void *arg)
{
    struct rem_loop *l = arg;
    struct rem_flush *f;
    while ((f = TAILQ_FIRST(&l->flushq)) != NULL) {
        TAILQ_REMOVE(&l->flushq, f, link);
        f->queued = false;
        f->fn(f);
    }
}

int rem_loop_init(struct rem_loop *l)
{
    memset(l, 0, sizeof(*l));
    TAILQ_INIT(&l->flushq);
    struct event_config *ec = event_config_new();
    if (!ec)
        return -REM_E_NOMEM;
    /* One thread per base: no locking inside libevent on the request path. */
    event_config_set_flag(ec, EVENT_BASE_FLAG_NOLOCK);
    l->base = event_base_new_with_config(ec);
    event_config_free(ec);
    if (!l->base)
        return -REM_E_NOMEM;
    l->reap_ev = event_new(l->base, -1, 0, on_reap, l);
    l->flush_ev = event_new(l->base, -1, 0, on_flush, l);
    if (!l->reap_ev || !l->flush_ev)
        return -REM_E_NOMEM;
    return 0;
}

void rem_loop_dispose(struct rem_loop *l)
{
    if (!l)
        return;
    rem_loop_reap(l);
    if (l->reap_ev)
        event_free(l->reap_ev);
    if (l->flush_ev)
        event_free(l->flush_ev);
    if (l->base)
        event_base_free(l->base);
    l->reap_ev = l->flush_ev = NULL;
    l->base = NULL;
}

void rem_loop_defer_free(struct rem_loop *l, struct rem_reap *r, void (*fn)(struct rem_reap *))
{
    if (r->queued)
        return;
    r->queued = true;
    r->fn = fn;
    r->next = l->reap_head;
    l->reap_head = r;
    event_active(l->reap_ev, EV_TIMEOUT, 1);
}

void rem_loop_flush_later(struct rem_loop *l, struct rem_flush *f, void (*fn)(struct rem_flush *))
{
    if (f->queued)
        return;
    if (TAILQ_EMPTY(&l->flushq))
        event_active(l->flush_ev, EV_TIMEOUT, 1);
    f->queued = true;
    f->fn = fn;
    TAILQ_INSERT_TAIL(&l->flushq, f, link);
}

void rem_loop_flush_cancel(struct rem_loop *l, struct rem_flush *f)
{
    if (!f->queued)
        return;
    TAILQ_REMOVE(&l->flushq, f, link);
    f->queued = false;
}
