/* SPDX-License-Identifier: Apache-2.0
 * worker: the per-thread context (loop, metrics shard, config reference, mailbox, heartbeat),
 * the thread itself, and the CPU count for `workers: auto`. What runs on a worker is built by
 * server.c. */

#include <errno.h>
#include <inttypes.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <unistd.h>
#include <time.h>

#include <event2/event.h>
#include <event2/thread.h>

#include "config.h"
#include "crash.h"
#include "error.h"
#include "log.h"
#include "loop.h"
#include "metrics.h"
#include "worker.h"

#define REM_TICK_MS 500

/* cgroup v2 cpu.max: "max 100000" or "200000 100000" (quota period). 0: no limit. */
static unsigned cgroup_cpu_limit(void)
{
    char path[512] = "/sys/fs/cgroup/cpu.max";
    FILE *f = fopen("/proc/self/cgroup", "re");
    if (f) {
        char line[400];
        while (fgets(line, sizeof(line), f)) {
            if (strncmp(line, "0::", 3) == 0) {
                line[strcspn(line, "\n")] = '\0';
                if (strcmp(line + 3, "/") != 0)
                    snprintf(path, sizeof(path), "/sys/fs/cgroup%s/cpu.max", line + 3);
            }
        }
        fclose(f);
    }
    unsigned limit = 0;
    f = fopen(path, "re");
    if (!f)
        f = fopen("/sys/fs/cgroup/cpu.max", "re");
    if (f) {
        char quota[32] = "";
        unsigned long long period = 0;
        if (fscanf(f, "%31s %llu", quota, &period) == 2 && strcmp(quota, "max") != 0 &&
            period > 0) {
            char *end;
            unsigned long long q = strtoull(quota, &end, 10);
            if (*end == '\0' && q > 0)
                limit = (unsigned)((q + period - 1) / period);
        }
        fclose(f);
    }
    return limit;
}

unsigned rem_workers_auto(void)
{
    cpu_set_t set;
    unsigned n = 1;
    if (sched_getaffinity(0, sizeof(set), &set) == 0) {
        int c = CPU_COUNT(&set);
        if (c > 0)
            n = (unsigned)c;
    }
    unsigned lim = cgroup_cpu_limit();
    if (lim > 0 && lim < n)
        n = lim;
    return n ? n : 1;
}

/* The worker's mailbox: other threads write the eventfd after setting a request flag. */
static void on_mail(evutil_socket_t fd, short what, void *arg)
{
    struct rem_worker *w = arg;
    uint64_t v;
    while (read(fd, &v, sizeof(v)) == (ssize_t)sizeof(v))
        ;
    if (__atomic_load_n(&w->stop_requested, __ATOMIC_ACQUIRE)) {
        event_base_loopbreak(w->loop.base);
        return;
    }
    unsigned m = __atomic_exchange_n(&w->mail, 0, __ATOMIC_ACQ_REL);
    if (m && w->on_mail)
        w->on_mail(w, m);
}

void rem_worker_post(struct rem_worker *w, unsigned what)
{
    uint64_t one = 1;
    __atomic_fetch_or(&w->mail, what, __ATOMIC_RELEASE);
    if (write(w->mail_fd, &one, sizeof(one)) < 0)
        rem_log_error("worker %u: cannot post: %s", w->id, strerror(errno));
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    struct rem_worker *w = arg;
    __atomic_store_n(&w->heartbeat_ms, rem_now_ms(), __ATOMIC_RELAXED);
    rem_alloc_idle_tick(&w->alloc_idle);
}

int rem_worker_init(struct rem_worker *w, unsigned id)
{
    memset(w, 0, sizeof(*w));
    w->id = id;
    w->mail_fd = -1;
    w->metrics = rem_metrics_shard_new();
    pthread_mutex_init(&w->gen_lock, NULL);
    w->gen_lock_init = true;
    TAILQ_INIT(&w->conns);
    TAILQ_INIT(&w->handshakes);
    if (getrandom(&w->rng, sizeof(w->rng), 0) != (ssize_t)sizeof(w->rng) || w->rng == 0)
        w->rng = (uint64_t)time(NULL) * 2654435761u + id + 1;
    if (rem_loop_init(&w->loop) < 0) {
        rem_log_error("worker %u: cannot create its event loop", id);
        return -REM_E_SYS;
    }
    w->mail_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (w->mail_fd < 0) {
        rem_log_error("worker %u: eventfd: %s", id, strerror(errno));
        return -REM_E_SYS;
    }
    w->stop_ev = event_new(w->loop.base, w->mail_fd, EV_READ | EV_PERSIST, on_mail, w);
    w->tick_ev = event_new(w->loop.base, -1, EV_PERSIST, on_tick, w);
    if (!w->stop_ev || !w->tick_ev) {
        rem_log_error("worker %u: out of memory", id);
        return -REM_E_SYS;
    }
    struct timeval tv = {0, REM_TICK_MS * 1000};
    event_add(w->tick_ev, &tv);
    event_add(w->stop_ev, NULL);
    w->heartbeat_ms = rem_now_ms();
    return 0;
}

static void *worker_main(void *arg)
{
    struct rem_worker *w = arg;
    char name[16];
    snprintf(name, sizeof(name), "remora-w%u", w->id);
    pthread_setname_np(pthread_self(), name);
    rem_crash_thread_init();
    rem_alloc_idle_init(&w->alloc_idle);
    event_base_dispatch(w->loop.base);
    rem_crash_thread_done();
    return NULL;
}

int rem_worker_start(struct rem_worker *w)
{
    int rc = pthread_create(&w->thread, NULL, worker_main, w);
    if (rc != 0) {
        rem_log_error("worker %u: pthread_create: %s", w->id, strerror(rc));
        return -REM_E_SYS;
    }
    w->started = true;
    return 0;
}

void rem_worker_stop(struct rem_worker *w)
{
    if (!w->started)
        return;
    /* The base has no locks, so other threads never touch it: they post through the eventfd. */
    uint64_t one = 1;
    __atomic_store_n(&w->stop_requested, true, __ATOMIC_RELEASE);
    if (write(w->mail_fd, &one, sizeof(one)) < 0)
        rem_log_error("worker %u: cannot wake: %s", w->id, strerror(errno));
    pthread_join(w->thread, NULL);
    w->started = false;
}

void rem_worker_dispose(struct rem_worker *w)
{
    if (!w)
        return;
    REM_BUG_ON(!TAILQ_EMPTY(&w->conns));
    rem_loop_reap(&w->loop);
    if (w->stop_ev)
        event_free(w->stop_ev);
    if (w->tick_ev)
        event_free(w->tick_ev);
    rem_loop_dispose(&w->loop);
    if (w->mail_fd >= 0)
        close(w->mail_fd);
    rem_metrics_shard_free(w->metrics);
    if (w->gen_lock_init)
        pthread_mutex_destroy(&w->gen_lock);
    memset(w, 0, sizeof(*w));
}
