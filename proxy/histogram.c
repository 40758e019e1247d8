/* SPDX-License-Identifier: Apache-2.0
 * histogram: classic and native-schema bucketing, summing and float formatting. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "histogram.h"

/* 2^(j/8 - 1), j = 0..8: the fine bucket bounds within one power of two, for frexp's
 * mantissa in [0.5, 1). */
static const double sub_bounds[REM_HIST_SUB + 1] = {
    0.5,
    0.54525386633262884, /* 2^(-7/8) */
    0.59460355750136051, /* 2^(-6/8) */
    0.64841977732550482, /* 2^(-5/8) */
    0.70710678118654757, /* 2^(-4/8) */
    0.77110541270397037, /* 2^(-3/8) */
    0.84089641525371450, /* 2^(-2/8) */
    0.91700404320467122, /* 2^(-1/8) */
    1.0,
};

/* Go's strconv.FormatFloat(v, 'g', -1, 64), which Prometheus clients use: the shortest digits
 * that read back to v, in %e form when the exponent is < -4 or >= 6, else in %f form. */
size_t rem_fmt_double(char *buf, size_t len, double v)
{
    int n;
    if (isnan(v)) {
        n = snprintf(buf, len, "NaN");
    } else if (isinf(v)) {
        n = snprintf(buf, len, v > 0 ? "+Inf" : "-Inf");
    } else if (v == 0) {
        n = snprintf(buf, len, "0"); /* -0 too, as client_golang writes it */
    } else {
        char e[40];
        int digits = 17, exp = 0;
        for (int d = 1; d <= 17; d++) {
            snprintf(e, sizeof(e), "%.*e", d - 1, v);
            if (strtod(e, NULL) == v) {
                digits = d;
                break;
            }
        }
        snprintf(e, sizeof(e), "%.*e", digits - 1, v);
        const char *ep = strchr(e, 'e');
        exp = ep ? (int)strtol(ep + 1, NULL, 10) : 0;
        if (exp < -4 || exp >= 6) {
            n = snprintf(buf, len, "%s", e);
        } else {
            int decimals = digits - 1 - exp;
            n = snprintf(buf, len, "%.*f", decimals > 0 ? decimals : 0, v);
        }
    }
    if (n < 0)
        n = 0;
    if ((size_t)n >= len)
        n = len ? (int)len - 1 : 0;
    return (size_t)n;
}

int rem_hist_layout_init(struct rem_hist_layout *l, const double *le, size_t n)
{
    memset(l, 0, sizeof(*l));
    if (n > REM_MAX_BUCKETS)
        return -REM_E_CONFIG;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(le[i]) || le[i] <= 0 || (i > 0 && le[i] <= le[i - 1]) || le[i] > 1e9)
            return -REM_E_CONFIG;
        l->le[i] = le[i];
        l->le_ns[i] = (uint64_t)llround(le[i] * 1e9);
        size_t n_str = rem_fmt_double(l->le_str[i], sizeof(l->le_str[i]), le[i]);
        /* OpenMetrics 1.0 canonical numbers: Go's %g, with ".0" when it has no '.' or 'e'. */
        memcpy(l->le_om[i], l->le_str[i], n_str + 1);
        if (!strpbrk(l->le_om[i], ".e"))
            memcpy(l->le_om[i] + n_str, ".0", 3);
    }
    l->n = n;
    return 0;
}

size_t rem_hist_classic_index(const struct rem_hist_layout *l, uint64_t ns)
{
    size_t lo = 0, hi = l->n; /* first bucket with ns <= le_ns, in [lo, hi] */
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (ns <= l->le_ns[mid])
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

size_t rem_hist_fine_index(uint64_t ns)
{
    double v = (double)ns * 1e-9;
    int e;
    if (v <= ldexp(1.0, REM_HIST_MIN_EXP))
        return 0;
    if (v > ldexp(1.0, REM_HIST_MAX_EXP))
        return REM_HIST_FINE - 1;
    double m = frexp(v, &e); /* v = m * 2^e, m in [0.5, 1) */
    int j = 0;
    while (j < REM_HIST_SUB && m > sub_bounds[j])
        j++;
    /* key k: 2^((k-1)/8) < v <= 2^(k/8) */
    int k = REM_HIST_SUB * (e - 1) + j;
    return (size_t)(k - REM_HIST_SUB * REM_HIST_MIN_EXP);
}

int rem_hist_fine_key(size_t i)
{
    return (int)i + REM_HIST_SUB * REM_HIST_MIN_EXP;
}

double rem_hist_fine_upper(size_t i)
{
    if (i >= REM_HIST_FINE - 1)
        return INFINITY;
    return exp2((double)rem_hist_fine_key(i) / REM_HIST_SUB);
}

void rem_hist_add(struct rem_hist_sum *dst, const struct rem_hist *src,
                  const struct rem_hist_layout *l)
{
    for (size_t i = 0; i <= l->n; i++) {
        uint64_t c = __atomic_load_n(&src->classic[i], __ATOMIC_RELAXED);
        dst->classic[i] += c;
        dst->count += c;
    }
    for (size_t i = 0; i < REM_HIST_FINE; i++)
        dst->fine[i] += __atomic_load_n(&src->fine[i], __ATOMIC_RELAXED);
    dst->sum_ns += __atomic_load_n(&src->sum_ns, __ATOMIC_RELAXED);
}

double rem_hist_quantile(const struct rem_hist_sum *s, double q)
{
    uint64_t total = 0;
    for (size_t i = 0; i < REM_HIST_FINE; i++)
        total += s->fine[i];
    if (total == 0 || q < 0 || q > 1)
        return 0;
    double rank = q * (double)total, seen = 0;
    for (size_t i = 0; i < REM_HIST_FINE; i++) {
        if (s->fine[i] == 0)
            continue;
        if (seen + (double)s->fine[i] >= rank) {
            double lo = i == 0 ? 0 : rem_hist_fine_upper(i - 1);
            double hi = rem_hist_fine_upper(i);
            if (isinf(hi))
                return lo; /* like Prometheus: the highest finite bound */
            return lo + (hi - lo) * ((rank - seen) / (double)s->fine[i]);
        }
        seen += (double)s->fine[i];
    }
    return rem_hist_fine_upper(REM_HIST_FINE - 2);
}
