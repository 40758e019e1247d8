/* SPDX-License-Identifier: Apache-2.0
 * histogram: latency histograms recorded lock-free and allocation-free by one writer (a worker)
 * and summed by readers (the scrape). Each histogram keeps two views of the same data:
 * - classic buckets: the configured upper bounds (seconds, `le`), counted exactly, which is what
 *   /metrics exports today;
 * - fine buckets: Prometheus native-histogram schema 3 (8 buckets per power of two, growth
 *   factor 2^(1/8), about 9%), from 2^-20 s to 2^8 s, so later work can export native
 *   histograms from the same data and internal quantiles stay within one fine bucket.
 * Owns nothing: storage is embedded in the caller's structs. */
#ifndef REM_HISTOGRAM_H
#define REM_HISTOGRAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"

#define REM_HIST_SCHEMA 3
#define REM_HIST_SUB 8         /* fine buckets per power of two: 2^REM_HIST_SCHEMA */
#define REM_HIST_MIN_EXP (-20) /* fine range: (2^-20 s, 2^8 s] */
#define REM_HIST_MAX_EXP 8
/* Index 0: values <= 2^-20 s (including 0). Last index: values > 2^8 s. */
#define REM_HIST_FINE ((REM_HIST_MAX_EXP - REM_HIST_MIN_EXP) * REM_HIST_SUB + 2)

/* The classic bucket layout: built once from configured bounds, then read-only and shared. */
struct rem_hist_layout {
    size_t n;                         /* finite upper bounds; +Inf is implicit */
    uint64_t le_ns[REM_MAX_BUCKETS];  /* bound in ns: a value v counts in the first
                                         bucket with v <= le_ns */
    double le[REM_MAX_BUCKETS];       /* bound in seconds, as configured */
    char le_str[REM_MAX_BUCKETS][32]; /* as exported: "0.005", "1", "2.5", "1e-05" */
    char le_om[REM_MAX_BUCKETS][34];  /* OpenMetrics canonical: "0.005", "1.0", "1e-05" */
};

/* One writer's histogram. Counts are per bucket (not cumulative); written with relaxed atomic
 * stores by the owning thread only, read with relaxed atomic loads by anyone. */
struct rem_hist {
    uint64_t sum_ns;
    uint64_t classic[REM_MAX_BUCKETS + 1]; /* [layout.n]: above the last bound */
    uint64_t fine[REM_HIST_FINE];
};

/* A sum over shards, for exposition and tests. */
struct rem_hist_sum {
    uint64_t count; /* equals the sum of classic[] and of fine[] */
    uint64_t sum_ns;
    uint64_t classic[REM_MAX_BUCKETS + 1];
    uint64_t fine[REM_HIST_FINE];
};

/* Builds a layout from n bounds in seconds (strictly increasing, finite, > 0, n <=
 * REM_MAX_BUCKETS). Returns 0 or -REM_E_CONFIG. */
int rem_hist_layout_init(struct rem_hist_layout *l, const double *le, size_t n);

/* Index of the classic bucket for ns (layout->n for values above every bound). */
size_t rem_hist_classic_index(const struct rem_hist_layout *l, uint64_t ns);
/* Index of the fine bucket for ns: 0 for ns <= 2^-20 s, REM_HIST_FINE - 1 above 2^8 s. */
size_t rem_hist_fine_index(uint64_t ns);
/* Upper bound in seconds of fine bucket i (inclusive); +Inf for the last. */
double rem_hist_fine_upper(size_t i);
/* The native-histogram bucket key of fine bucket i (1..REM_HIST_FINE-2): the bucket
 * (2^((k-1)/8), 2^(k/8)] has key k. */
int rem_hist_fine_key(size_t i);

/* Records one observation. No allocation, no lock, no atomic read-modify-write. */
static inline void rem_hist_record(struct rem_hist *h, const struct rem_hist_layout *l, uint64_t ns)
{
    size_t c = rem_hist_classic_index(l, ns), f = rem_hist_fine_index(ns);
    __atomic_store_n(&h->classic[c], __atomic_load_n(&h->classic[c], __ATOMIC_RELAXED) + 1,
                     __ATOMIC_RELAXED);
    __atomic_store_n(&h->fine[f], __atomic_load_n(&h->fine[f], __ATOMIC_RELAXED) + 1,
                     __ATOMIC_RELAXED);
    __atomic_store_n(&h->sum_ns, __atomic_load_n(&h->sum_ns, __ATOMIC_RELAXED) + ns,
                     __ATOMIC_RELAXED);
}

/* Adds src (read with relaxed loads) into dst. dst->count is derived from the classic counts
 * read, so _count always equals the +Inf bucket. */
void rem_hist_add(struct rem_hist_sum *dst, const struct rem_hist *src,
                  const struct rem_hist_layout *l);

/* The q-quantile (0 <= q <= 1) estimated from the fine buckets (linear within the bucket), in
 * seconds; 0 when empty. Error is bounded by one fine bucket (~9%). */
double rem_hist_quantile(const struct rem_hist_sum *s, double q);

/* Formats a float the way Prometheus clients do for `le` and sample values (Go's
 * strconv.FormatFloat(v, 'g', -1, 64)): the shortest text that reads back to the same double,
 * exponent form when the exponent is < -4 or >= 6 ("0.005", "1", "10", "2.5", "1e-05",
 * "1e+06", "1.23456789e+08", "+Inf", "NaN").
 * Returns the length written (buf always NUL-terminated). */
size_t rem_fmt_double(char *buf, size_t len, double v);

#endif
