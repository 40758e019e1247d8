/* SPDX-License-Identifier: Apache-2.0
 * dns: c-ares driven by the worker's event_base. c-ares tells us which sockets it wants
 * watched (sock-state callback); their readiness and one channel timer (ares_timeout) drive
 * ares_process_fd. Each watched name runs one lookup at a time, then sleeps until its TTL, its
 * backoff, or its stale deadline. Lookups always start from a timer, so no callback ever runs
 * inside the caller's stack (c-ares answers /etc/hosts hits synchronously). */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <ares.h>
#include <event2/event.h>

#include "dns.h"
#include "error.h"
#include "log.h"
#include "loop.h"

#define REM_DNS_BACKOFF_MIN_MS 1000
#define REM_DNS_BACKOFF_MAX_MS 30000
#define REM_DNS_MAX_ADDRS 64
#define REM_DNS_RESOLV_CONF "/etc/resolv.conf" /* where c-ares 1.18 reads it on Linux */

struct dns_sock {
    ares_socket_t fd;
    struct event *ev; /* owned */
};

struct rem_dns {
    struct rem_loop *loop;  /* borrowed */
    struct rem_cfg_dns cfg; /* a copy of the first generation's (resolvers not kept): the dns
                               section needs a restart to change */
    ares_channel ch;
    struct event *timer; /* owned: ares_timeout */
    struct dns_sock *socks;
    size_t n_socks, cap_socks;
    bool no_resolvers; /* no servers at all: a failed lookup is REM_DNS_NO_RESOLVERS */
};

struct rem_dns_name {
    struct rem_dns *d;
    char *host;
    uint16_t port;
    const struct rem_dns_cbs *cbs;
    void *arg;
    struct event *timer; /* owned: next lookup */
    bool in_flight;      /* a lookup runs: the callback frees a dead name */
    bool dead;           /* unwatched while in flight */
    uint64_t started_ns;
    struct rem_sockaddr *addrs; /* owned: the set in effect (last good), sorted */
    size_t n_addrs;
    bool have_set;
    uint64_t failing_since_ms; /* 0: the last lookup succeeded */
    uint64_t backoff_ms;
};

static const char *const result_labels[REM_DNS__N] = {
    "success", "nxdomain", "servfail", "timeout", "empty", "error", "no_resolvers"};

const char *rem_dns_result_label(enum rem_dns_result r)
{
    return r < REM_DNS__N ? result_labels[r] : "error";
}

static void arm_ms(struct event *ev, uint64_t ms)
{
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)((ms % 1000) * 1000)};
    event_add(ev, &tv);
}

/* ---- channel driving -------------------------------------------------------------------- */

static void rearm_channel(struct rem_dns *d)
{
    struct timeval tv, *t = ares_timeout(d->ch, NULL, &tv);
    if (t)
        event_add(d->timer, t);
    else
        event_del(d->timer);
}

static void on_channel_timer(evutil_socket_t fd, short what, void *arg)
{
    struct rem_dns *d = arg;
    ares_process_fd(d->ch, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
    rearm_channel(d);
}

static void on_sock(evutil_socket_t fd, short what, void *arg)
{
    struct rem_dns *d = arg;
    ares_process_fd(d->ch, (what & EV_READ) ? fd : ARES_SOCKET_BAD,
                    (what & EV_WRITE) ? fd : ARES_SOCKET_BAD);
    rearm_channel(d);
}

static void on_sock_state(void *data, ares_socket_t fd, int readable, int writable)
{
    struct rem_dns *d = data;
    size_t i;
    for (i = 0; i < d->n_socks && d->socks[i].fd != fd; i++)
        ;
    if (i < d->n_socks) {
        event_free(d->socks[i].ev);
        d->socks[i] = d->socks[--d->n_socks];
    }
    if (!readable && !writable)
        return;
    if (d->n_socks == d->cap_socks) {
        size_t cap = d->cap_socks ? d->cap_socks * 2 : 4;
        struct dns_sock *n = realloc(d->socks, cap * sizeof(*n));
        if (!n)
            abort(); /* control object */
        d->socks = n;
        d->cap_socks = cap;
    }
    short what = EV_PERSIST | (readable ? EV_READ : 0) | (writable ? EV_WRITE : 0);
    struct event *ev = event_new(d->loop->base, fd, what, on_sock, d);
    if (!ev)
        abort();
    event_add(ev, NULL);
    d->socks[d->n_socks++] = (struct dns_sock){fd, ev};
}

static pthread_once_t ares_once = PTHREAD_ONCE_INIT;
static int ares_init_rc;
static bool no_resolvers_logged;

/* 0 when resolv.conf can be opened, else the errno. Without the file c-ares 1.18 sends every
 * query to 127.0.0.1:53, where an empty root filesystem has nothing listening: each lookup
 * would then fail as a timeout that names neither the cause nor the fix. */
static int resolv_conf_errno(void)
{
    int fd = open(REM_DNS_RESOLV_CONF, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return errno;
    close(fd);
    return 0;
}

static void library_init(void)
{
    ares_init_rc = ares_library_init(ARES_LIB_INIT_ALL);
}

struct rem_dns *rem_dns_new(struct rem_loop *loop, const struct rem_cfg_dns *cfg)
{
    pthread_once(&ares_once, library_init);
    if (ares_init_rc != ARES_SUCCESS) {
        rem_log_error("dns: c-ares: %s", ares_strerror(ares_init_rc));
        return NULL;
    }
    struct rem_dns *d = rem_xcalloc(1, sizeof(*d));
    d->loop = loop;
    d->cfg = (struct rem_cfg_dns){
        .min_ttl_ms = cfg->min_ttl_ms,
        .max_ttl_ms = cfg->max_ttl_ms,
        .timeout_ms = cfg->timeout_ms,
        .attempts = cfg->attempts,
        .family = cfg->family,
        .stale_ttl_ms = cfg->stale_ttl_ms,
    }; /* the resolvers are given to c-ares below, not kept */
    int conf_err = cfg->n_resolvers > 0 ? 0 : resolv_conf_errno();
    struct ares_options o = {0};
    o.sock_state_cb = on_sock_state;
    o.sock_state_cb_data = d;
    o.timeout = (int)(cfg->timeout_ms ? cfg->timeout_ms : REM_DEF_DNS_TIMEOUT_MS);
    o.tries = (int)(cfg->attempts ? cfg->attempts : REM_DEF_DNS_ATTEMPTS);
    int rc =
        ares_init_options(&d->ch, &o, ARES_OPT_SOCK_STATE_CB | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES);
    if (rc != ARES_SUCCESS) {
        rem_log_error("dns: c-ares channel: %s", ares_strerror(rc));
        free(d);
        return NULL;
    }
    if (cfg->n_resolvers > 0) {
        /* "a:port,[v6]:port" as ares_set_servers_ports_csv reads it. */
        char csv[8 * 64] = "", one[64];
        for (size_t i = 0; i < cfg->n_resolvers; i++) {
            if (rem_sockaddr_str(&cfg->resolvers[i], one, sizeof(one)) < 0)
                continue;
            if (i)
                strncat(csv, ",", sizeof(csv) - strlen(csv) - 1);
            strncat(csv, one, sizeof(csv) - strlen(csv) - 1);
        }
        rc = ares_set_servers_ports_csv(d->ch, csv);
        if (rc != ARES_SUCCESS) {
            rem_log_error("dns: resolvers %s: %s", csv, ares_strerror(rc));
            ares_destroy(d->ch);
            free(d);
            return NULL;
        }
    } else if (conf_err) {
        rc = ares_set_servers(d->ch, NULL);
        if (rc != ARES_SUCCESS) {
            rem_log_error("dns: clearing c-ares's default server: %s", ares_strerror(rc));
            ares_destroy(d->ch);
            free(d);
            return NULL;
        }
        d->no_resolvers = true;
        if (!__atomic_exchange_n(&no_resolvers_logged, true, __ATOMIC_RELAXED))
            rem_log_error("dns: no resolvers: dns.resolvers is not set and %s cannot be read "
                          "(%s); endpoint names resolve from /etc/hosts only, every other "
                          "lookup fails as no_resolvers",
                          REM_DNS_RESOLV_CONF, strerror(conf_err));
    }
    d->timer = evtimer_new(loop->base, on_channel_timer, d);
    if (!d->timer)
        abort();
    return d;
}

void rem_dns_free(struct rem_dns *d)
{
    if (!d)
        return;
    ares_destroy(d->ch); /* pending callbacks run with ARES_EDESTRUCTION; their names are dead */
    for (size_t i = 0; i < d->n_socks; i++)
        event_free(d->socks[i].ev);
    free(d->socks);
    event_free(d->timer);
    free(d);
}

/* ---- watched names ---------------------------------------------------------------------- */

static void name_free(struct rem_dns_name *n)
{
    event_free(n->timer);
    free(n->addrs);
    free(n->host);
    free(n);
}

static int cmp_addr(const void *a, const void *b)
{
    const struct rem_sockaddr *x = a, *y = b;
    if (x->len != y->len)
        return x->len < y->len ? -1 : 1;
    return memcmp(&x->ss, &y->ss, x->len);
}

static enum rem_dns_result map_status(int status)
{
    switch (status) {
    case ARES_SUCCESS:
        return REM_DNS_SUCCESS;
    case ARES_ENOTFOUND:
        return REM_DNS_NXDOMAIN;
    case ARES_ESERVFAIL:
    case ARES_EREFUSED:
        return REM_DNS_SERVFAIL;
    case ARES_ETIMEOUT:
    case ARES_ECONNREFUSED:
        return REM_DNS_TIMEOUT;
    case ARES_ENODATA:
        return REM_DNS_EMPTY;
    default:
        return REM_DNS_ERROR;
    }
}

/* The addresses of res the configured family wants, with port, sorted; the smallest TTL. */
static size_t collect(const struct rem_dns_name *n, const struct ares_addrinfo *res,
                      struct rem_sockaddr *out, int *ttl)
{
    size_t k = 0;
    *ttl = -1;
    for (const struct ares_addrinfo_node *x = res ? res->nodes : NULL; x && k < REM_DNS_MAX_ADDRS;
         x = x->ai_next) {
        if (x->ai_family != AF_INET && x->ai_family != AF_INET6)
            continue;
        struct rem_sockaddr a;
        memset(&a, 0, sizeof(a));
        memcpy(&a.ss, x->ai_addr, x->ai_addrlen);
        a.len = x->ai_addrlen;
        if (x->ai_family == AF_INET)
            ((struct sockaddr_in *)&a.ss)->sin_port = htons(n->port);
        else
            ((struct sockaddr_in6 *)&a.ss)->sin6_port = htons(n->port);
        bool dup = false;
        for (size_t i = 0; i < k && !dup; i++)
            dup = cmp_addr(&out[i], &a) == 0;
        if (dup)
            continue;
        out[k++] = a;
        if (*ttl < 0 || x->ai_ttl < *ttl)
            *ttl = x->ai_ttl;
    }
    qsort(out, k, sizeof(*out), cmp_addr);
    return k;
}

static void set_addrs(struct rem_dns_name *n, const struct rem_sockaddr *a, size_t k)
{
    bool same =
        n->have_set && k == n->n_addrs && (k == 0 || memcmp(a, n->addrs, k * sizeof(*a)) == 0);
    if (same)
        return;
    struct rem_sockaddr *copy = NULL;
    if (k) {
        copy = malloc(k * sizeof(*copy));
        if (!copy)
            abort();
        memcpy(copy, a, k * sizeof(*copy));
    }
    free(n->addrs);
    n->addrs = copy;
    n->n_addrs = k;
    n->have_set = k > 0;
    n->cbs->on_update(n->arg, n->addrs, n->n_addrs);
}

static void on_answer(void *arg, int status, int timeouts, struct ares_addrinfo *res)
{
    struct rem_dns_name *n = arg;
    n->in_flight = false;
    if (n->dead || status == ARES_EDESTRUCTION || status == ARES_ECANCELLED) {
        if (res)
            ares_freeaddrinfo(res);
        if (n->dead)
            name_free(n);
        return;
    }
    const struct rem_cfg_dns *cfg = &n->d->cfg;
    struct rem_sockaddr addrs[REM_DNS_MAX_ADDRS];
    int ttl = -1;
    size_t k = status == ARES_SUCCESS ? collect(n, res, addrs, &ttl) : 0;
    if (res)
        ares_freeaddrinfo(res);
    enum rem_dns_result r = map_status(status);
    if (r == REM_DNS_SUCCESS && k == 0)
        r = REM_DNS_EMPTY;
    if (r != REM_DNS_SUCCESS && n->d->no_resolvers)
        r = REM_DNS_NO_RESOLVERS; /* not in /etc/hosts, and there is no server to ask */
    n->cbs->on_lookup(n->arg, r, rem_now_ns() - n->started_ns);
    uint64_t now = rem_now_ms(), next;
    if (r == REM_DNS_SUCCESS) {
        n->failing_since_ms = 0;
        n->backoff_ms = 0;
        uint64_t t = ttl > 0 ? (uint64_t)ttl * 1000 : 0;
        if (t < cfg->min_ttl_ms)
            t = cfg->min_ttl_ms;
        if (t > cfg->max_ttl_ms)
            t = cfg->max_ttl_ms;
        next = t ? t : REM_DNS_BACKOFF_MIN_MS;
        set_addrs(n, addrs, k);
    } else {
        /* Keep the last good set for stale_ttl; retry with doubling backoff meanwhile. */
        if (!n->failing_since_ms)
            n->failing_since_ms = now;
        uint64_t cap =
            cfg->max_ttl_ms < REM_DNS_BACKOFF_MAX_MS ? cfg->max_ttl_ms : REM_DNS_BACKOFF_MAX_MS;
        if (cap < REM_DNS_BACKOFF_MIN_MS)
            cap = REM_DNS_BACKOFF_MIN_MS;
        n->backoff_ms = n->backoff_ms ? n->backoff_ms * 2 : REM_DNS_BACKOFF_MIN_MS;
        if (n->backoff_ms > cap)
            n->backoff_ms = cap;
        next = n->backoff_ms;
        rem_log_warn("dns: %s: %s%s", n->host, rem_dns_result_label(r),
                     n->have_set ? ", serving the last good addresses" : "");
        if (n->have_set && now - n->failing_since_ms >= cfg->stale_ttl_ms) {
            rem_log_warn("dns: %s: stale for %llu ms, dropping its addresses", n->host,
                         (unsigned long long)(now - n->failing_since_ms));
            set_addrs(n, NULL, 0);
        }
    }
    arm_ms(n->timer, next);
}

static void on_name_timer(evutil_socket_t fd, short what, void *arg)
{
    struct rem_dns_name *n = arg;
    struct rem_dns *d = n->d;
    if (n->in_flight)
        return;
    struct ares_addrinfo_hints h = {.ai_socktype = SOCK_STREAM};
    switch (d->cfg.family) {
    case REM_DNS_V4:
        h.ai_family = AF_INET;
        break;
    case REM_DNS_V6:
        h.ai_family = AF_INET6;
        break;
    default:
        h.ai_family = AF_UNSPEC;
        break;
    }
    n->in_flight = true;
    n->started_ns = rem_now_ns();
    ares_getaddrinfo(d->ch, n->host, NULL, &h, on_answer, n);
    rearm_channel(d);
}

struct rem_dns_name *rem_dns_watch(struct rem_dns *d, const char *host, uint16_t port,
                                   const struct rem_dns_cbs *cbs, void *arg)
{
    struct rem_dns_name *n = rem_xcalloc(1, sizeof(*n));
    n->d = d;
    n->host = rem_xstrdup(host);
    n->port = port;
    n->cbs = cbs;
    n->arg = arg;
    n->timer = evtimer_new(d->loop->base, on_name_timer, n);
    if (!n->timer)
        abort();
    arm_ms(n->timer, 0);
    return n;
}

void rem_dns_unwatch(struct rem_dns_name *n)
{
    if (!n)
        return;
    if (n->in_flight) {
        n->dead = true; /* on_answer frees it (at the latest when the channel is destroyed) */
        event_del(n->timer);
        return;
    }
    name_free(n);
}
