/* SPDX-License-Identifier: Apache-2.0
 * loop: event_base, flush list, post list, reaper, spare buffers, clock. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/buffer.h>
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

static void on_post(evutil_socket_t fd, short what, void *arg)
{
    struct rem_loop *l = arg;
    struct rem_post *p;
    while ((p = TAILQ_FIRST(&l->postq)) != NULL) {
        TAILQ_REMOVE(&l->postq, p, link);
        p->link.tqe_prev = NULL;
        p->fn(p);
    }
}

int rem_loop_init(struct rem_loop *l)
{
    memset(l, 0, sizeof(*l));
    TAILQ_INIT(&l->flushq);
    TAILQ_INIT(&l->postq);
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
    l->post_ev = event_new(l->base, -1, 0, on_post, l);
    l->empty = evbuffer_new();
    if (!l->reap_ev || !l->flush_ev || !l->post_ev || !l->empty || evbuffer_freeze(l->empty, 0) < 0)
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
    if (l->post_ev)
        event_free(l->post_ev);
    if (l->empty)
        evbuffer_free(l->empty);
    while (l->n_spare)
        evbuffer_free(l->spare[--l->n_spare]);
    if (l->base)
        event_base_free(l->base);
    l->reap_ev = l->flush_ev = l->post_ev = NULL;
    l->empty = NULL;
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

void rem_loop_post(struct rem_loop *l, struct rem_post *p, void (*fn)(struct rem_post *))
{
    if (p->link.tqe_prev)
        return;
    if (TAILQ_EMPTY(&l->postq))
        event_active(l->post_ev, EV_TIMEOUT, 1);
    p->fn = fn;
    TAILQ_INSERT_TAIL(&l->postq, p, link);
}

void rem_loop_post_cancel(struct rem_loop *l, struct rem_post *p)
{
    if (!p->link.tqe_prev)
        return;
    TAILQ_REMOVE(&l->postq, p, link);
    p->link.tqe_prev = NULL;
}

struct evbuffer *rem_loop_buffer_get(struct rem_loop *l)
{
    if (l->n_spare)
        return l->spare[--l->n_spare];
    struct evbuffer *b = evbuffer_new();
    if (!b)
        rem_oom();
    return b;
}

void rem_loop_buffer_put(struct rem_loop *l, struct evbuffer *b)
{
    if (!b)
        return;
    if (l->n_spare == REM_LOOP_SPARE_BUFFERS) {
        evbuffer_free(b);
        return;
    }
    l->spare[l->n_spare++] = b;
}
