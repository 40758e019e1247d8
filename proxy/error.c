/* SPDX-License-Identifier: Apache-2.0
 * error: look-ups into the REM_ERRORS table, invariant aborts and control-path allocation. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rem_build.h"
#include "error.h"
#ifdef REM_HAVE_JEMALLOC
#include <jemalloc/jemalloc.h>
#endif

static const struct {
    int status;
    const char *term;
    const char *label;
} rem_err_table[REM_E__COUNT] = {
#define REM_X_ROW(name, status, term, label) [REM_E_##name] = {status, term, label},
    REM_ERRORS(REM_X_ROW)
#undef REM_X_ROW
};

int rem_err_status(enum rem_err e)
{
    REM_BUG_ON((unsigned)e >= REM_E__COUNT);
    return rem_err_table[e].status;
}

const char *rem_err_term(enum rem_err e)
{
    REM_BUG_ON((unsigned)e >= REM_E__COUNT);
    return rem_err_table[e].term;
}

const char *rem_err_label(enum rem_err e)
{
    REM_BUG_ON((unsigned)e >= REM_E__COUNT);
    return rem_err_table[e].label;
}

void rem_bug(const char *file, int line, const char *cond)
{
    fprintf(stderr, "{\"level\":\"fatal\",\"msg\":\"BUG at %s:%d: %s\"}\n", file, line, cond);
    abort();
}

void rem_oom(void)
{
    fputs("{\"level\":\"fatal\",\"msg\":\"out of memory\"}\n", stderr);
    abort();
}

void *rem_xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p)
        rem_oom();
    return p;
}

char *rem_xstrdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = rem_xcalloc(1, n);
    memcpy(p, s, n);
    return p;
}

int rem_err_grpc_status(enum rem_err e)
{
    switch (e) {
    case REM_E_UPSTREAM_TIMEOUT:
    case REM_E_CONNECT_TIMEOUT:
        return 4; /* DEADLINE_EXCEEDED */
    case REM_E_QUEUE_FULL:
    case REM_E_QUEUE_TIMEOUT:
    case REM_E_CONNECT_REFUSED:
    case REM_E_CONNECT_FAILED:
    case REM_E_UPSTREAM_TLS:
    case REM_E_NO_ENDPOINT:
    case REM_E_DNS:
    case REM_E_UPSTREAM_OVERFLOW:
    case REM_E_UPSTREAM_RESET:
    case REM_E_SHUTDOWN:
        return 14; /* UNAVAILABLE */
    case REM_E_NO_ROUTE:
        return 12; /* UNIMPLEMENTED */
    case REM_E_HEADER_TOO_LARGE:
    case REM_E_TOO_MANY_HEADERS:
    case REM_E_BODY_TOO_LARGE:
        return 8; /* RESOURCE_EXHAUSTED */
    case REM_E_CLIENT_NOT_ALLOWED:
        return 7; /* PERMISSION_DENIED */
    default:
        return 13; /* INTERNAL */
    }
}

void rem_alloc_release(bool all_arenas)
{
#ifdef REM_HAVE_JEMALLOC
    (void)mallctl("thread.tcache.flush", NULL, NULL, NULL, 0);
    if (all_arenas) {
        char cmd[32];
        snprintf(cmd, sizeof(cmd), "arena.%u.purge", (unsigned)MALLCTL_ARENAS_ALL);
        (void)mallctl(cmd, NULL, NULL, NULL, 0);
    }
#else
    (void)all_arenas;
#endif
}

void rem_alloc_idle_init(struct rem_alloc_idle *st)
{
    memset(st, 0, sizeof(*st));
#ifdef REM_HAVE_JEMALLOC
    uint64_t *p = NULL;
    size_t sz = sizeof(p);
    if (mallctl("thread.allocatedp", &p, &sz, NULL, 0) == 0 && p)
        st->allocated = p;
    if (st->allocated)
        st->last = *st->allocated;
#endif
}

bool rem_alloc_idle_tick(struct rem_alloc_idle *st)
{
    if (!st->allocated)
        return false;
    uint64_t now = *st->allocated;
    if (now != st->last) {
        st->last = now;
        st->quiet_ticks = 0;
        return false;
    }
    /* Counts up to REM_ALLOC_IDLE_TICKS and stays there: flushed once, nothing new since. */
    if (st->quiet_ticks == REM_ALLOC_IDLE_TICKS || ++st->quiet_ticks < REM_ALLOC_IDLE_TICKS)
        return false;
    rem_alloc_release(false);
    return true;
}

void rem_alloc_decay(void)
{
#ifdef REM_HAVE_JEMALLOC
    char cmd[32];
    snprintf(cmd, sizeof(cmd), "arena.%u.decay", (unsigned)MALLCTL_ARENAS_ALL);
    (void)mallctl(cmd, NULL, NULL, NULL, 0);
#endif
}
