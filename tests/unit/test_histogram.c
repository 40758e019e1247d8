/* SPDX-License-Identifier: Apache-2.0
 * test_histogram: unit tests for histogram.h: classic layouts built from configured bounds,
 * classic and fine (native-histogram schema 3) bucketing checked against a long-double log2
 * reference, recording and summing shards, quantile estimates within one fine bucket, float
 * formatting identical to Go's strconv.FormatFloat(v, 'g', -1, 64) (what Prometheus' Go client
 * writes in the text format), and a record path that never allocates. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <float.h>
#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rem_build.h"

#include "error.h"
#include "histogram.h"

#if defined(__SANITIZE_ADDRESS__)
#define TEST_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TEST_ASAN 1
#endif
#endif

#if defined(TEST_ASAN)
/* From compiler-rt's sanitizer/allocator_interface.h, which GCC does not install. */
int __sanitizer_install_malloc_and_free_hooks(void (*malloc_hook)(const volatile void *, size_t),
                                              void (*free_hook)(const volatile void *));
#elif defined(REM_HAVE_JEMALLOC)
#include <jemalloc/jemalloc.h>
#else
#include <malloc.h>
#endif

#if defined(__has_include)
#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#endif
#endif
#ifndef RUNNING_ON_VALGRIND
#define RUNNING_ON_VALGRIND 0
#endif

#define NS_PER_S 1000000000ull

static const double def_le[] = REM_DEF_BUCKETS;
#define DEF_N (sizeof(def_le) / sizeof(def_le[0]))

static void init_default(struct rem_hist_layout *l)
{
    assert_int_equal(rem_hist_layout_init(l, def_le, DEF_N), 0);
}

/* Schema 3 reference: the bucket (2^((k-1)/8), 2^(k/8)] has key k, so k = ceil(8 * log2(v)).
 * Long double keeps the nearest ns at least 1e-11 away from an irrational bound, far above
 * its rounding error; exact powers of two come out exact from log2l. */
static long ref_key(uint64_t ns)
{
    long double v = (long double)ns / 1e9L;
    return (long)ceill(8.0L * log2l(v));
}

/* The fine index the header promises for ns, from the reference key. */
static size_t ref_fine_index(uint64_t ns)
{
    long double v = (long double)ns / 1e9L;
    if (v <= ldexpl(1.0L, REM_HIST_MIN_EXP))
        return 0;
    if (v > ldexpl(1.0L, REM_HIST_MAX_EXP))
        return REM_HIST_FINE - 1;
    return (size_t)(ref_key(ns) - REM_HIST_SUB * REM_HIST_MIN_EXP);
}

/* ---- rem_hist_layout_init ----------------------------------------------------------------- */

static void test_layout_default_bounds(void **state)
{
    (void)state;
    static const uint64_t want_ns[] = {
        500000ull,   1000000ull,    2500000ull,    5000000ull,     10000000ull,
        25000000ull, 50000000ull,   100000000ull,  250000000ull,   500000000ull,
        NS_PER_S,    2500000000ull, 5000000000ull, 10000000000ull,
    };
    static const char *const want_str[] = {"0.0005", "0.001", "0.0025", "0.005", "0.01",
                                           "0.025",  "0.05",  "0.1",    "0.25",  "0.5",
                                           "1",      "2.5",   "5",      "10"};
    struct rem_hist_layout l;

    assert_int_equal(DEF_N, 14);
    init_default(&l);
    assert_int_equal(l.n, DEF_N);
    for (size_t i = 0; i < DEF_N; i++) {
        assert_int_equal(l.le_ns[i], want_ns[i]);
        assert_true(l.le[i] == def_le[i]);
        if (strcmp(l.le_str[i], want_str[i]) != 0)
            fail_msg("le[%zu] = %.17g: le_str \"%s\", want \"%s\"", i, def_le[i], l.le_str[i],
                     want_str[i]);
    }
}

static void test_layout_max_buckets(void **state)
{
    (void)state;
    double le[REM_MAX_BUCKETS + 1];
    struct rem_hist_layout l;

    for (size_t i = 0; i <= REM_MAX_BUCKETS; i++)
        le[i] = 0.001 * (double)(i + 1);
    assert_int_equal(rem_hist_layout_init(&l, le, REM_MAX_BUCKETS), 0);
    assert_int_equal(l.n, REM_MAX_BUCKETS);
    assert_int_equal(l.le_ns[REM_MAX_BUCKETS - 1], (uint64_t)REM_MAX_BUCKETS * 1000000ull);
    assert_int_equal(rem_hist_layout_init(&l, le, REM_MAX_BUCKETS + 1), -REM_E_CONFIG);
}

static void test_layout_empty(void **state)
{
    (void)state;
    struct rem_hist_layout l;

    /* No finite bound: only +Inf, every value in bucket 0. */
    assert_int_equal(rem_hist_layout_init(&l, def_le, 0), 0);
    assert_int_equal(l.n, 0);
    assert_int_equal(rem_hist_classic_index(&l, 0), 0);
    assert_int_equal(rem_hist_classic_index(&l, UINT64_MAX), 0);
}

static void test_layout_rejects(void **state)
{
    (void)state;
    static const struct {
        const char *what;
        double le[3];
    } bad[] = {
        {"unsorted", {0.1, 0.05, 1}},
        {"duplicate", {0.1, 0.1, 1}},
        {"zero", {0, 0.1, 1}},
        {"negative", {-0.1, 0.1, 1}},
        {"NaN first", {NAN, 0.1, 1}},
        {"NaN middle", {0.1, NAN, 1}},
        {"+Inf last", {0.1, 1, INFINITY}},
        {"-Inf", {-INFINITY, 0.1, 1}},
        {"unsorted tail", {0.1, 1, 0.5}},
    };
    struct rem_hist_layout l;

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (rem_hist_layout_init(&l, bad[i].le, 3) != -REM_E_CONFIG)
            fail_msg("%s bounds accepted", bad[i].what);
}

/* ---- rem_hist_classic_index --------------------------------------------------------------- */

static void test_classic_index_inclusive_bounds(void **state)
{
    (void)state;
    struct rem_hist_layout l;

    init_default(&l);
    assert_int_equal(rem_hist_classic_index(&l, 0), 0);
    assert_int_equal(rem_hist_classic_index(&l, 1), 0);
    for (size_t i = 0; i < l.n; i++) {
        assert_int_equal(rem_hist_classic_index(&l, l.le_ns[i]), i);
        assert_int_equal(rem_hist_classic_index(&l, l.le_ns[i] + 1), i + 1);
        assert_int_equal(rem_hist_classic_index(&l, l.le_ns[i] - 1), i);
    }
    assert_int_equal(rem_hist_classic_index(&l, 10000000001ull), l.n);
    assert_int_equal(rem_hist_classic_index(&l, UINT64_MAX), l.n);
}

static void test_classic_index_matches_linear_scan(void **state)
{
    (void)state;
    struct rem_hist_layout l;

    init_default(&l);
    for (uint64_t ns = 1; ns < 20 * NS_PER_S; ns = ns + ns / 7 + 1) {
        size_t want = 0;
        while (want < l.n && ns > l.le_ns[want])
            want++;
        assert_int_equal(rem_hist_classic_index(&l, ns), want);
    }
}

/* ---- fine buckets ------------------------------------------------------------------------- */

static void test_fine_constants(void **state)
{
    (void)state;
    /* (2^-20, 2^8]: 28 powers of two times 8, plus the underflow and the overflow bucket. */
    assert_int_equal(REM_HIST_FINE, 28 * 8 + 2);
    assert_int_equal(rem_hist_fine_key(1), -159);
    assert_int_equal(rem_hist_fine_key(REM_HIST_FINE - 2), 64);
    assert_true(rem_hist_fine_upper(0) == ldexp(1.0, -20));
    assert_true(rem_hist_fine_upper(REM_HIST_FINE - 2) == 256.0);
    assert_true(isinf(rem_hist_fine_upper(REM_HIST_FINE - 1)));
    assert_true(rem_hist_fine_upper(REM_HIST_FINE - 1) > 0);
    for (size_t i = 1; i < REM_HIST_FINE - 1; i++) {
        long double want = exp2l((long double)rem_hist_fine_key(i) / 8.0L);
        double got = rem_hist_fine_upper(i);
        assert_int_equal(rem_hist_fine_key(i), rem_hist_fine_key(i - 1) + 1);
        assert_true(fabsl((long double)got - want) <= want * 2 * DBL_EPSILON);
        assert_true(got > rem_hist_fine_upper(i - 1));
    }
}

static void test_fine_powers_of_two(void **state)
{
    (void)state;
    /* 2^e s is a whole number of ns for e >= -9 (10^9 = 2^9 * 5^9). */
    for (int e = -9; e <= REM_HIST_MAX_EXP; e++) {
        uint64_t ns = e >= 0 ? NS_PER_S << e : NS_PER_S >> -e;
        size_t i = rem_hist_fine_index(ns);
        int want_key = 8 * e;

        if (rem_hist_fine_key(i) != want_key)
            fail_msg("2^%d s (%llu ns): key %d, want %d", e, (unsigned long long)ns,
                     rem_hist_fine_key(i), want_key);
        assert_true(rem_hist_fine_upper(i) == ldexp(1.0, e));
        assert_int_equal(rem_hist_fine_key(rem_hist_fine_index(ns + 1)), want_key + 1);
        assert_int_equal(rem_hist_fine_key(rem_hist_fine_index(ns - 1)), want_key);
    }
    assert_int_equal(rem_hist_fine_key(rem_hist_fine_index(NS_PER_S)), 0);
    assert_int_equal(rem_hist_fine_key(rem_hist_fine_index(2 * NS_PER_S)), 8);
    assert_int_equal(rem_hist_fine_key(rem_hist_fine_index(NS_PER_S / 2)), -8);
}

static void test_fine_range_ends(void **state)
{
    (void)state;
    /* 2^-20 s = 953.67 ns; 2^8 s = 256 s. */
    assert_int_equal(rem_hist_fine_index(0), 0);
    assert_int_equal(rem_hist_fine_index(1), 0);
    assert_int_equal(rem_hist_fine_index(953), 0);
    assert_int_equal(rem_hist_fine_index(954), 1);
    assert_int_equal(rem_hist_fine_key(1), -159);
    assert_int_equal(rem_hist_fine_index(256 * NS_PER_S), REM_HIST_FINE - 2);
    assert_int_equal(rem_hist_fine_index(256 * NS_PER_S + 1), REM_HIST_FINE - 1);
    assert_int_equal(rem_hist_fine_index(300 * NS_PER_S), REM_HIST_FINE - 1);
    assert_int_equal(rem_hist_fine_index(UINT64_MAX), REM_HIST_FINE - 1);
}

/* Checks one value against the reference and the bucket's own bounds. */
static void check_fine(uint64_t ns)
{
    size_t i = rem_hist_fine_index(ns), want = ref_fine_index(ns);
    double v = (double)ns / 1e9;

    if (i != want)
        fail_msg("%llu ns: fine index %zu (key %d), want %zu (key %d)", (unsigned long long)ns, i,
                 rem_hist_fine_key(i), want, rem_hist_fine_key(want));
    assert_true(i < REM_HIST_FINE);
    if (!(v <= rem_hist_fine_upper(i)) || (i > 0 && !(rem_hist_fine_upper(i - 1) < v)))
        fail_msg("%llu ns = %.17g s outside bucket %zu: (%.17g, %.17g]", (unsigned long long)ns, v,
                 i, i > 0 ? rem_hist_fine_upper(i - 1) : 0.0, rem_hist_fine_upper(i));
}

static void test_fine_sweep_matches_schema3(void **state)
{
    (void)state;
    size_t prev = 0;
    uint64_t last = 0;

    for (double x = 1; x <= 300e9; x *= 1.0007) {
        uint64_t ns = (uint64_t)x;
        if (ns == last)
            continue;
        last = ns;
        check_fine(ns);
        size_t i = rem_hist_fine_index(ns);
        if (i < prev)
            fail_msg("index went down at %llu ns: %zu after %zu", (unsigned long long)ns, i, prev);
        prev = i;
    }
    assert_int_equal(prev, REM_HIST_FINE - 1);
}

static void test_fine_every_bound_neighbourhood(void **state)
{
    (void)state;
    /* The nearest whole ns on both sides of every bound 2^(k/8) s. */
    for (int k = 8 * REM_HIST_MIN_EXP; k <= 8 * REM_HIST_MAX_EXP; k++) {
        long double b = exp2l((long double)k / 8.0L) * 1e9L;
        uint64_t f = (uint64_t)floorl(b);
        for (uint64_t ns = f > 2 ? f - 2 : 0; ns <= f + 2; ns++)
            check_fine(ns);
    }
}

/* ---- record and sum ----------------------------------------------------------------------- */

static uint64_t sum_u64(const uint64_t *a, size_t n)
{
    uint64_t s = 0;
    for (size_t i = 0; i < n; i++)
        s += a[i];
    return s;
}

static void test_record_lands_in_both_views(void **state)
{
    (void)state;
    struct rem_hist_layout l;
    struct rem_hist h;
    struct rem_hist_sum s;
    static const uint64_t obs[] = {
        0, 1, 500000, 500001, NS_PER_S, 3 * NS_PER_S, 11 * NS_PER_S, 400 * NS_PER_S};
    uint64_t sum = 0;

    init_default(&l);
    memset(&h, 0, sizeof(h));
    for (size_t i = 0; i < sizeof(obs) / sizeof(obs[0]); i++) {
        rem_hist_record(&h, &l, obs[i]);
        sum += obs[i];
    }
    memset(&s, 0, sizeof(s));
    rem_hist_add(&s, &h, &l);

    assert_int_equal(s.count, 8);
    assert_int_equal(sum_u64(s.classic, l.n + 1), 8);
    assert_int_equal(sum_u64(s.fine, REM_HIST_FINE), 8);
    assert_int_equal(s.sum_ns, sum);
    /* classic: 0, 1, 500000 -> [0]; 500001 -> [1]; 1 s -> [10] ("1"); 3 s -> [12] ("5");
     * 11 s, 400 s -> [14] (+Inf). */
    assert_int_equal(s.classic[0], 3);
    assert_int_equal(s.classic[1], 1);
    assert_int_equal(s.classic[10], 1);
    assert_int_equal(s.classic[12], 1);
    assert_int_equal(s.classic[l.n], 2);
    /* fine: 0 and 1 ns underflow; 400 s overflows; 1 s is key 0. */
    assert_int_equal(s.fine[0], 2);
    assert_int_equal(s.fine[REM_HIST_FINE - 1], 1);
    assert_int_equal(s.fine[rem_hist_fine_index(NS_PER_S)], 1);
    assert_int_equal(rem_hist_fine_key(rem_hist_fine_index(NS_PER_S)), 0);
}

static void test_add_merges_shards(void **state)
{
    (void)state;
    enum { SHARDS = 4 };
    struct rem_hist_layout l;
    struct rem_hist *h = calloc(SHARDS, sizeof(*h));
    struct rem_hist_sum s, one;
    uint64_t want_count = 0, want_sum = 0;

    assert_non_null(h);
    init_default(&l);
    for (size_t k = 0; k < SHARDS; k++)
        for (uint64_t j = 1; j <= 100 * (k + 1); j++) {
            uint64_t ns = j * 1000003ull * (k + 1);
            rem_hist_record(&h[k], &l, ns);
            want_count++;
            want_sum += ns;
        }
    memset(&s, 0, sizeof(s));
    for (size_t k = 0; k < SHARDS; k++)
        rem_hist_add(&s, &h[k], &l);

    assert_int_equal(s.count, want_count);
    assert_int_equal(s.sum_ns, want_sum);
    assert_int_equal(sum_u64(s.classic, l.n + 1), want_count);
    assert_int_equal(sum_u64(s.fine, REM_HIST_FINE), want_count);
    /* Bucket by bucket, the merge is the sum of the shards taken one by one. */
    for (size_t i = 0; i <= l.n; i++) {
        uint64_t c = 0;
        for (size_t k = 0; k < SHARDS; k++) {
            memset(&one, 0, sizeof(one));
            rem_hist_add(&one, &h[k], &l);
            c += one.classic[i];
        }
        assert_int_equal(s.classic[i], c);
    }
    /* Adding into a non-empty sum accumulates. */
    rem_hist_add(&s, &h[0], &l);
    assert_int_equal(s.count, want_count + 100);
    free(h);
}

struct race {
    struct rem_hist h;
    struct rem_hist_layout l;
    uint64_t n;
    int done;
};

static void *race_writer(void *arg)
{
    struct race *r = arg;
    for (uint64_t i = 0; i < r->n; i++)
        rem_hist_record(&r->h, &r->l, (i % 5000) * 100000ull);
    __atomic_store_n(&r->done, 1, __ATOMIC_RELEASE);
    return NULL;
}

/* One writer, one reader: every sum the reader takes is self-consistent and grows; the final
 * one is exact. Best run under TSan; here it checks the contract's arithmetic. */
static void test_concurrent_reader(void **state)
{
    (void)state;
    struct race *r = calloc(1, sizeof(*r));
    pthread_t t;
    uint64_t prev = 0, want_sum = 0;
    struct rem_hist_sum s;

    assert_non_null(r);
    init_default(&r->l);
    r->n = 2000000;
    assert_int_equal(pthread_create(&t, NULL, race_writer, r), 0);
    while (!__atomic_load_n(&r->done, __ATOMIC_ACQUIRE)) {
        memset(&s, 0, sizeof(s));
        rem_hist_add(&s, &r->h, &r->l);
        assert_true(s.count >= prev);
        assert_true(s.count <= r->n);
        assert_int_equal(sum_u64(s.classic, r->l.n + 1), s.count);
        prev = s.count;
    }
    assert_int_equal(pthread_join(t, NULL), 0);
    memset(&s, 0, sizeof(s));
    rem_hist_add(&s, &r->h, &r->l);
    for (uint64_t i = 0; i < r->n; i++)
        want_sum += (i % 5000) * 100000ull;
    assert_int_equal(s.count, r->n);
    assert_int_equal(sum_u64(s.fine, REM_HIST_FINE), r->n);
    assert_int_equal(s.sum_ns, want_sum);
    free(r);
}

/* ---- no allocation on record -------------------------------------------------------------- */

#if defined(TEST_ASAN)
static volatile uint64_t n_mallocs;
static void on_malloc(const volatile void *p, size_t size)
{
    (void)p;
    (void)size;
    n_mallocs++;
}
static void on_free(const volatile void *p)
{
    (void)p;
}
/* Hooks take a new slot per call (it returns slot + 1, 0 when full): install once. */
static void install_hooks(void)
{
    static int slot;
    if (slot == 0)
        slot = __sanitizer_install_malloc_and_free_hooks(on_malloc, on_free);
    assert_true(slot > 0);
}
#endif

/* Valgrind replaces malloc wholesale, so neither jemalloc's counter nor mallinfo2 sees it. */
static void skip_under_valgrind(void)
{
    if (RUNNING_ON_VALGRIND) {
        print_message("skipped under valgrind: it replaces the allocator the check reads\n");
        skip();
    }
}

static void record_many(struct rem_hist *h, const struct rem_hist_layout *l)
{
    for (uint64_t ns = 0; ns < 1000 * NS_PER_S; ns = ns * 2 + 977)
        rem_hist_record(h, l, ns);
    rem_hist_record(h, l, UINT64_MAX / 2);
}

static void test_record_does_not_allocate(void **state)
{
    (void)state;
    struct rem_hist_layout l;
    struct rem_hist h;

    skip_under_valgrind();
    init_default(&l);
    memset(&h, 0, sizeof(h));
#if defined(TEST_ASAN)
    /* Counts every allocation, even one freed before returning. */
    install_hooks();
    n_mallocs = 0;
    record_many(&h, &l);
    uint64_t got = n_mallocs;
    assert_int_equal(got, 0);
#elif defined(REM_HAVE_JEMALLOC)
    /* jemalloc's per-thread cumulative byte counter (needs stats, on in Debian's build). */
    /* volatile: GCC knows malloc touches no existing memory and would reuse the first read. */
    volatile uint64_t *allocated;
    size_t sz = sizeof(allocated);
    if (mallctl("thread.allocatedp", (void *)&allocated, &sz, NULL, 0) != 0) {
        print_message("jemalloc built without stats: thread.allocatedp unavailable\n");
        skip();
    }
    uint64_t before = *allocated;
    record_many(&h, &l);
    assert_int_equal(*allocated - before, 0);
#else
    /* glibc without hooks: only net growth is visible, a malloc+free pair would pass. */
    struct mallinfo2 a = mallinfo2();
    record_many(&h, &l);
    struct mallinfo2 b = mallinfo2();
    assert_int_equal(b.uordblks, a.uordblks);
    assert_int_equal(b.hblkhd, a.hblkhd);
#endif
    struct rem_hist_sum s;
    memset(&s, 0, sizeof(s));
    rem_hist_add(&s, &h, &l);
    assert_true(s.count > 30);
}

/* The checker itself must see an allocation, or the test above proves nothing. */
static void test_allocation_counter_works(void **state)
{
    (void)state;
    void *volatile p;
    skip_under_valgrind();
#if defined(TEST_ASAN)
    install_hooks();
    n_mallocs = 0;
    p = malloc(64);
    uint64_t got = n_mallocs;
    free(p);
    assert_true(got >= 1);
#elif defined(REM_HAVE_JEMALLOC)
    /* volatile: GCC knows malloc touches no existing memory and would reuse the first read. */
    volatile uint64_t *allocated;
    size_t sz = sizeof(allocated);
    if (mallctl("thread.allocatedp", (void *)&allocated, &sz, NULL, 0) != 0) {
        print_message("jemalloc built without stats: thread.allocatedp unavailable\n");
        skip();
    }
    uint64_t before = *allocated;
    p = malloc(64);
    uint64_t after = *allocated;
    free(p);
    assert_true(after - before >= 64);
#else
    struct mallinfo2 a = mallinfo2();
    p = malloc(64);
    struct mallinfo2 b = mallinfo2();
    free(p);
    assert_true(b.uordblks > a.uordblks);
#endif
}

/* ---- rem_hist_quantile -------------------------------------------------------------------- */

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Records n values uniform in [lo_ns, hi_ns] (fixed LCG) and checks p50/p90/p99 against the
 * nearest-rank quantile of the values themselves. */
static void check_uniform_quantiles(uint64_t lo_ns, uint64_t hi_ns, size_t n, size_t shards)
{
    struct rem_hist_layout l;
    struct rem_hist *h = calloc(shards, sizeof(*h));
    uint64_t *v = calloc(n, sizeof(*v));
    struct rem_hist_sum s;
    uint64_t x = 88172645463325252ull;
    static const double qs[] = {0.5, 0.9, 0.99};
    const double tol = exp2(1.0 / 8) - 1;

    assert_non_null(h);
    assert_non_null(v);
    init_default(&l);
    for (size_t i = 0; i < n; i++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        v[i] = lo_ns + (x >> 11) % (hi_ns - lo_ns + 1);
        rem_hist_record(&h[i % shards], &l, v[i]);
    }
    memset(&s, 0, sizeof(s));
    for (size_t k = 0; k < shards; k++)
        rem_hist_add(&s, &h[k], &l);
    qsort(v, n, sizeof(*v), cmp_u64);
    for (size_t j = 0; j < sizeof(qs) / sizeof(qs[0]); j++) {
        size_t rank = (size_t)ceil(qs[j] * (double)n);
        double truth = (double)v[rank - 1] / 1e9;
        double est = rem_hist_quantile(&s, qs[j]);
        if (!(fabs(est - truth) <= tol * truth))
            fail_msg("uniform [%llu, %llu] ns, n=%zu: p%g = %.9g s, true %.9g s (rel err %.4f > "
                     "%.4f)",
                     (unsigned long long)lo_ns, (unsigned long long)hi_ns, n, qs[j] * 100, est,
                     truth, fabs(est - truth) / truth, tol);
    }
    free(v);
    free(h);
}

static void test_quantile_uniform(void **state)
{
    (void)state;
    check_uniform_quantiles(1000000, 1000000000, 100000, 1); /* 1 ms .. 1 s */
    check_uniform_quantiles(1000, 100000, 10000, 3);         /* 1 us .. 100 us */
    check_uniform_quantiles(10000000, 20000000, 1000, 2);    /* 10 .. 20 ms */
    check_uniform_quantiles(2 * NS_PER_S, 200 * NS_PER_S, 5000, 4);
}

static void test_quantile_evenly_spaced(void **state)
{
    (void)state;
    struct rem_hist_layout l;
    struct rem_hist h;
    struct rem_hist_sum s;
    const double tol = exp2(1.0 / 8) - 1;

    /* 1 ms, 2 ms, ..., 1000 ms: p50 = 500 ms, p90 = 900 ms, p99 = 990 ms. */
    init_default(&l);
    memset(&h, 0, sizeof(h));
    for (uint64_t i = 1; i <= 1000; i++)
        rem_hist_record(&h, &l, i * 1000000ull);
    memset(&s, 0, sizeof(s));
    rem_hist_add(&s, &h, &l);
    assert_true(fabs(rem_hist_quantile(&s, 0.5) - 0.5) <= tol * 0.5);
    assert_true(fabs(rem_hist_quantile(&s, 0.9) - 0.9) <= tol * 0.9);
    assert_true(fabs(rem_hist_quantile(&s, 0.99) - 0.99) <= tol * 0.99);
    /* Estimates never go down as q grows. */
    double prev = 0;
    for (double q = 0; q <= 1.0; q += 0.01) {
        double e = rem_hist_quantile(&s, q);
        assert_true(e >= prev);
        prev = e;
    }
}

static void test_quantile_single_value(void **state)
{
    (void)state;
    struct rem_hist_layout l;
    struct rem_hist h;
    struct rem_hist_sum s;
    const double tol = exp2(1.0 / 8) - 1;

    init_default(&l);
    memset(&h, 0, sizeof(h));
    for (int i = 0; i < 10; i++)
        rem_hist_record(&h, &l, 42000000); /* 42 ms */
    memset(&s, 0, sizeof(s));
    rem_hist_add(&s, &h, &l);
    for (double q = 0.01; q <= 1.0; q += 0.07) {
        double e = rem_hist_quantile(&s, q);
        assert_true(fabs(e - 0.042) <= tol * 0.042);
    }
}

static void test_quantile_empty_and_overflow(void **state)
{
    (void)state;
    struct rem_hist_layout l;
    struct rem_hist h;
    struct rem_hist_sum s;

    memset(&s, 0, sizeof(s));
    assert_true(rem_hist_quantile(&s, 0.5) == 0);
    assert_true(rem_hist_quantile(&s, 0.99) == 0);
    assert_true(rem_hist_quantile(&s, 0) == 0);
    assert_true(rem_hist_quantile(&s, 1) == 0);

    /* Only values above 2^8 s: the highest finite bound, like Prometheus. */
    init_default(&l);
    memset(&h, 0, sizeof(h));
    rem_hist_record(&h, &l, 1000 * NS_PER_S);
    rem_hist_add(&s, &h, &l);
    assert_true(rem_hist_quantile(&s, 0.5) == 256.0);
    assert_true(rem_hist_quantile(&s, 1) == 256.0);
}

/* ---- rem_fmt_double ----------------------------------------------------------------------- */

struct fmt_case {
    double v;
    const char *want;
};

/* Checks every case and reports all mismatches before failing. */
static void check_fmt_table(const struct fmt_case *c, size_t n)
{
    char buf[64];
    size_t len;
    int bad = 0;

    for (size_t i = 0; i < n; i++) {
        memset(buf, 'x', sizeof(buf));
        len = rem_fmt_double(buf, sizeof(buf), c[i].v);
        if (strcmp(buf, c[i].want) != 0 || len != strlen(c[i].want)) {
            print_error("rem_fmt_double(%.17g) = \"%s\" (len %zu), want \"%s\"\n", c[i].v, buf, len,
                        c[i].want);
            bad++;
        }
    }
    if (bad)
        fail_msg("%d of %zu values formatted unlike Go's FormatFloat(v, 'g', -1, 64)", bad, n);
}

static void test_fmt_double_prometheus_values(void **state)
{
    (void)state;
    static const struct fmt_case c[] = {
        {0.005, "0.005"},   {1, "1"},
        {2.5, "2.5"},       {1e-05, "1e-05"},
        {1e6, "1e+06"},     {0.1, "0.1"},
        {INFINITY, "+Inf"}, {-INFINITY, "-Inf"},
        {NAN, "NaN"},       {0.1 + 0.2, "0.30000000000000004"},
        {0, "0"},           {0.0005, "0.0005"},
        {0.0001, "0.0001"}, {0.00012345, "0.00012345"},
        {-1.5, "-1.5"},     {1.0 / 3, "0.3333333333333333"},
    };
    check_fmt_table(c, sizeof(c) / sizeof(c[0]));
}

/* Go's 'g' with the shortest precision switches to %e on the exponent alone: below -4 or at
 * least 6 (strconv/ftoa.go: "if precision was the shortest possible, use precision 6 for this
 * decision"), never on the digit count. C's %.{P}g compares the exponent against P instead, so
 * a round number like 10 comes out "1e+01" there. client_golang's text output spells `le` this
 * way and Prometheus 2 stores it verbatim, so le="10" selectors written against other exporters
 * would miss le="1e+01". */
static void test_fmt_double_go_exponent_rule(void **state)
{
    (void)state;
    static const struct fmt_case c[] = {
        {10, "10"},
        {100, "100"},
        {250, "250"},
        {30, "30"},
        {100000, "100000"},
        {999999, "999999"},
        {12345.678, "12345.678"},
        {1234567, "1.234567e+06"},
        {123456789, "1.23456789e+08"},
        {1e21, "1e+21"},
        {1e100, "1e+100"},
        {5e-324, "5e-324"},
        {DBL_MAX, "1.7976931348623157e+308"},
    };
    check_fmt_table(c, sizeof(c) / sizeof(c[0]));
}

/* Reference for finite v: the shortest %e digits that read back, laid out by Go's rule. */
static void ref_go_g(char *out, size_t len, double v)
{
    char e[40], digits[20];
    int prec, exp, nd = 0;

    if (v == 0) {
        snprintf(out, len, "0");
        return;
    }
    for (prec = 0; prec < 17; prec++) {
        snprintf(e, sizeof(e), "%.*e", prec, v);
        if (strtod(e, NULL) == v)
            break;
    }
    const char *p = e + (e[0] == '-');
    for (; *p != 'e'; p++)
        if (*p != '.')
            digits[nd++] = *p;
    exp = (int)strtol(p + 1, NULL, 10);
    while (nd > 1 && digits[nd - 1] == '0')
        nd--;
    digits[nd] = '\0';
    const char *sign = v < 0 ? "-" : "";
    if (exp < -4 || exp >= 6)
        snprintf(out, len, "%s%c%s%.*se%c%02d", sign, digits[0], nd > 1 ? "." : "", nd - 1,
                 digits + 1, exp < 0 ? '-' : '+', exp < 0 ? -exp : exp);
    else if (exp < 0)
        snprintf(out, len, "%s0.%.*s%s", sign, -exp - 1, "0000", digits);
    else if (exp + 1 >= nd)
        snprintf(out, len, "%s%s%.*s", sign, digits, exp + 1 - nd, "000000");
    else
        snprintf(out, len, "%s%.*s.%s", sign, exp + 1, digits, digits + exp + 1);
}

static void test_fmt_double_matches_go_reference(void **state)
{
    (void)state;
    char got[64], want[64];
    uint64_t x = 0x2545F4914F6CDD1Dull;
    int bad = 0, total = 0;

    /* Round values i * 10^e, the kind configured as bucket bounds, then random bit patterns. */
    for (int ex = -12; ex <= 12 && bad < 20; ex++)
        for (int i = 1; i <= 999 && bad < 20; i++) {
            double v = (double)i * pow(10, ex);
            rem_fmt_double(got, sizeof(got), v);
            ref_go_g(want, sizeof(want), v);
            total++;
            if (strcmp(got, want) != 0) {
                print_error("rem_fmt_double(%.17g) = \"%s\", Go gives \"%s\"\n", v, got, want);
                bad++;
            }
        }
    for (int i = 0; i < 20000 && bad < 20; i++) {
        double v;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        memcpy(&v, &x, sizeof(v));
        if (!isfinite(v))
            continue;
        rem_fmt_double(got, sizeof(got), v);
        ref_go_g(want, sizeof(want), v);
        total++;
        if (strcmp(got, want) != 0) {
            print_error("rem_fmt_double(%.17g) = \"%s\", Go gives \"%s\"\n", v, got, want);
            bad++;
        }
    }
    if (bad)
        fail_msg("%d mismatches (stopped at 20) in %d values", bad, total);
}

static void test_fmt_double_round_trips(void **state)
{
    (void)state;
    char buf[64];
    uint64_t x = 0x9E3779B97F4A7C15ull;

    for (int i = 0; i < 20000; i++) {
        double v;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        memcpy(&v, &x, sizeof(v));
        if (!isfinite(v))
            continue;
        size_t n = rem_fmt_double(buf, sizeof(buf), v);
        assert_int_equal(n, strlen(buf));
        if (strtod(buf, NULL) != v)
            fail_msg("%.17g formatted as \"%s\" does not read back", v, buf);
    }
}

static void test_fmt_double_small_buffer(void **state)
{
    (void)state;
    char buf[4];
    size_t n;

    memset(buf, 'x', sizeof(buf));
    n = rem_fmt_double(buf, sizeof(buf), 0.1 + 0.2);
    assert_true(memchr(buf, '\0', sizeof(buf)) != NULL);
    assert_int_equal(n, strlen(buf));
    memset(buf, 'x', sizeof(buf));
    n = rem_fmt_double(buf, sizeof(buf), NAN);
    assert_string_equal(buf, "NaN");
    assert_int_equal(n, 3);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_layout_default_bounds),
        cmocka_unit_test(test_layout_max_buckets),
        cmocka_unit_test(test_layout_empty),
        cmocka_unit_test(test_layout_rejects),
        cmocka_unit_test(test_classic_index_inclusive_bounds),
        cmocka_unit_test(test_classic_index_matches_linear_scan),
        cmocka_unit_test(test_fine_constants),
        cmocka_unit_test(test_fine_powers_of_two),
        cmocka_unit_test(test_fine_range_ends),
        cmocka_unit_test(test_fine_sweep_matches_schema3),
        cmocka_unit_test(test_fine_every_bound_neighbourhood),
        cmocka_unit_test(test_record_lands_in_both_views),
        cmocka_unit_test(test_add_merges_shards),
        cmocka_unit_test(test_concurrent_reader),
        cmocka_unit_test(test_allocation_counter_works),
        cmocka_unit_test(test_record_does_not_allocate),
        cmocka_unit_test(test_quantile_uniform),
        cmocka_unit_test(test_quantile_evenly_spaced),
        cmocka_unit_test(test_quantile_single_value),
        cmocka_unit_test(test_quantile_empty_and_overflow),
        cmocka_unit_test(test_fmt_double_prometheus_values),
        cmocka_unit_test(test_fmt_double_go_exponent_rule),
        cmocka_unit_test(test_fmt_double_matches_go_reference),
        cmocka_unit_test(test_fmt_double_round_trips),
        cmocka_unit_test(test_fmt_double_small_buffer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
