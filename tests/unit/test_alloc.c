/* SPDX-License-Identifier: Apache-2.0
 * Recording a request's metrics allocates nothing: jemalloc's per-thread allocation counters
 * (thread.allocated / thread.deallocated) must not move across many recordings. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "rem_build.h"
#include "config.h"
#include "error.h"
#include "histogram.h"
#include "metrics.h"

#ifdef REM_HAVE_JEMALLOC
#include <jemalloc/jemalloc.h>

static uint64_t thread_counter(const char *name)
{
    uint64_t v = 0;
    size_t sz = sizeof(v);
    assert_int_equal(mallctl(name, &v, &sz, NULL, 0), 0);
    return v;
}

static struct rem_config *fifty_routes(void)
{
    char yaml[8192];
    size_t n = (size_t)snprintf(yaml, sizeof(yaml), "routes:\n");
    for (int i = 0; i < 50; i++)
        n += (size_t)snprintf(
            yaml + n, sizeof(yaml) - n,
            "  - { name: r%d, match: { path_prefix: \"/r%d/\" }, upstream: app }\n", i, i);
    struct rem_config_diag diag = {0};
    struct rem_config *cfg = rem_config_load_string(yaml, "t.yaml", &diag);
    assert_non_null(cfg);
    rem_config_diag_dispose(&diag);
    return cfg;
}
#endif /* REM_HAVE_JEMALLOC: only the jemalloc test needs the config */

static void test_record_request_allocates_nothing(void **state)
{
    (void)state;
#ifndef REM_HAVE_JEMALLOC
    skip(); /* sanitizer and --disable-jemalloc builds use libc malloc: no per-thread counters */
#else
    struct rem_config *cfg = fifty_routes();
    struct rem_metrics_layout *l = rem_metrics_layout_new(cfg);
    assert_non_null(l);
    /* What a worker's generation holds: one counter set and one histogram set per route. */
    struct rem_route_metrics *m = calloc(l->n_routes, sizeof(*m));
    struct rem_route_hist *h = calloc(l->n_routes, sizeof(*h));
    struct rem_upstream_metrics *u = calloc(1, sizeof(*u));
    assert_true(m && h && u);
    /* Warm up: first touches of the pages are not allocations, but make sure. */
    rem_metrics_record_request(&m[0], &h[0], &l->route_hist[0], false, 200, 1000, 1, 1);

    uint64_t a0 = thread_counter("thread.allocated");
    uint64_t d0 = thread_counter("thread.deallocated");
    static const int statuses[] = {200, 204, 301, 404, 503, 0, 101};
    for (uint64_t i = 0; i < 200000; i++) {
        size_t r = (size_t)(i % l->n_routes);
        int st = statuses[i % (sizeof(statuses) / sizeof(statuses[0]))];
        uint64_t ns = (i * 7919u) % 20000000000u; /* 0 .. 20 s, every bucket range */
        REM_M_ADD(m[r].in_flight, 1);
        rem_metrics_record_request(&m[r], &h[r], &l->route_hist[r], true, st, ns, 100 + i % 50,
                                   200 + i % 70);
        rem_hist_record(&u->response_duration, &l->upstream_hist, ns);
    }
    uint64_t a1 = thread_counter("thread.allocated");
    uint64_t d1 = thread_counter("thread.deallocated");
    assert_int_equal(a1 - a0, 0);
    assert_int_equal(d1 - d0, 0);

    /* And it did record: every route got its share, in-flight is back to zero. */
    uint64_t total = 0;
    for (size_t r = 0; r < l->n_routes; r++) {
        assert_int_equal(m[r].in_flight, 0);
        for (int c = 0; c < REM_CODE__N; c++)
            total += m[r].requests[c];
    }
    assert_int_equal(total, 200001);

    free(m);
    free(h);
    free(u);
    rem_metrics_layout_free(l);
    rem_config_unref(cfg);
#endif
}

#ifdef REM_HAVE_JEMALLOC
/* Bytes held in every thread's allocator cache (jemalloc's stats, refreshed). */
static uint64_t tcache_bytes(void)
{
    uint64_t epoch = 1;
    size_t esz = sizeof(epoch);
    assert_int_equal(mallctl("epoch", &epoch, &esz, &epoch, esz), 0);
    char name[64];
    snprintf(name, sizeof(name), "stats.arenas.%u.tcache_bytes", (unsigned)MALLCTL_ARENAS_ALL);
    size_t v = 0, sz = sizeof(v);
    assert_int_equal(mallctl(name, &v, &sz, NULL, 0), 0);
    return v;
}

/* Frees n blocks of size bytes, which land in this thread's cache. */
static void churn(int n, size_t size)
{
    void *p[64];
    for (int i = 0; i < n; i++) {
        p[i] = malloc(size);
        assert_non_null(p[i]);
        memset(p[i], 1, size);
    }
    for (int i = 0; i < n; i++)
        free(p[i]);
}
#endif

/* A thread that allocated nothing for REM_ALLOC_IDLE_TICKS ticks hands its cache back, once;
 * a busy one never does. */
static void test_idle_tick_flushes_the_cache_once(void **state)
{
    (void)state;
#ifndef REM_HAVE_JEMALLOC
    skip(); /* libc malloc: no thread cache to flush */
#else
    struct rem_alloc_idle st;
    rem_alloc_idle_init(&st);
    assert_non_null(st.allocated);
    uint64_t a0 = *st.allocated;
    void *probe = malloc(4096);
    assert_non_null(probe);
    bool jemalloc_serves = *st.allocated != a0;
    free(probe);
    if (!jemalloc_serves)
        skip(); /* valgrind replaces the executable's malloc: jemalloc sees no allocation */
    churn(20, 32768);
    assert_true(tcache_bytes() >= 10 * 32768);

    /* Busy: it allocates between every two ticks, and keeps its cache. */
    for (int i = 0; i < 5; i++) {
        assert_false(rem_alloc_idle_tick(&st));
        churn(20, 32768);
    }
    assert_true(tcache_bytes() >= 10 * 32768);

    /* Idle: the flush comes on the REM_ALLOC_IDLE_TICKS-th quiet tick, and only then. */
    assert_false(rem_alloc_idle_tick(&st)); /* sees the last churn */
    for (int i = 1; i < REM_ALLOC_IDLE_TICKS; i++)
        assert_false(rem_alloc_idle_tick(&st));
    assert_true(rem_alloc_idle_tick(&st));
    assert_int_equal(tcache_bytes(), 0);
    for (int i = 0; i < 5; i++)
        assert_false(rem_alloc_idle_tick(&st)); /* nothing new: no flush again */

    /* Busy again, then idle again: one more flush. */
    churn(20, 32768);
    assert_true(tcache_bytes() >= 10 * 32768);
    assert_false(rem_alloc_idle_tick(&st));
    for (int i = 1; i < REM_ALLOC_IDLE_TICKS; i++)
        assert_false(rem_alloc_idle_tick(&st));
    assert_true(rem_alloc_idle_tick(&st));
    assert_int_equal(tcache_bytes(), 0);
#endif
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_record_request_allocates_nothing),
        cmocka_unit_test(test_idle_tick_flushes_the_cache_once),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
