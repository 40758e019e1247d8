/* SPDX-License-Identifier: Apache-2.0
 * dns: asynchronous name resolution with c-ares inside a worker's event loop (sock-state
 * callback, ares_process_fd and one timer per channel, as c-ares 1.18 wants; never
 * getaddrinfo, never blocking). One channel per worker. A watched name is kept resolved: it is
 * looked up again when its TTL (clamped by dns.min_ttl/max_ttl) runs out, retried with backoff
 * on failure, and its last good address set is kept for dns.stale_ttl after failures begin.
 * Owns the channel, its socket events and timer, and every watched name; the owner of a watch
 * (a cluster) gets the address set through a callback whenever it changes. */
#ifndef REM_DNS_H
#define REM_DNS_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"

struct rem_loop;
struct rem_dns;
struct rem_dns_name;

/* `result` label of remora_dns_lookups_total. */
enum rem_dns_result {
    REM_DNS_SUCCESS = 0,
    REM_DNS_NXDOMAIN,
    REM_DNS_SERVFAIL,
    REM_DNS_TIMEOUT,
    REM_DNS_EMPTY, /* the name exists but has no address of the wanted family */
    REM_DNS_ERROR,
    REM_DNS_NO_RESOLVERS, /* no dns.resolvers and no /etc/resolv.conf: only /etc/hosts answers */
    REM_DNS__N
};

/* Label text of a result ("success", "nxdomain", ...). */
const char *rem_dns_result_label(enum rem_dns_result r);

struct rem_dns_cbs {
    /* The address set of the name changed (every address with the watched port). n == 0: the
     * name has no usable set any more (stale_ttl ran out). addrs is valid during the call. */
    void (*on_update)(void *arg, const struct rem_sockaddr *addrs, size_t n);
    /* One lookup finished (for metrics and readiness), in ns. */
    void (*on_lookup)(void *arg, enum rem_dns_result r, uint64_t ns);
};

/* The worker's channel with cfg's servers (or /etc/resolv.conf), timeout and attempts. NULL
 * with a log line when c-ares cannot be set up. Without dns.resolvers and a readable
 * /etc/resolv.conf (an empty root filesystem) the channel has no servers instead of c-ares's
 * default 127.0.0.1: names resolve from /etc/hosts only, every other lookup ends at once with
 * REM_DNS_NO_RESOLVERS, and the first such channel logs why (once per process). */
struct rem_dns *rem_dns_new(struct rem_loop *loop, const struct rem_cfg_dns *cfg);
/* Destroys the channel; every watch must be gone. NULL-safe. */
void rem_dns_free(struct rem_dns *d);

/* Keeps host resolved for port, calling cbs from the event loop (never before this returns).
 * The first lookup starts at once. Aborts on OOM (control object). */
struct rem_dns_name *rem_dns_watch(struct rem_dns *d, const char *host, uint16_t port,
                                   const struct rem_dns_cbs *cbs, void *arg);
/* Stops watching; no callback runs after this. NULL-safe. */
void rem_dns_unwatch(struct rem_dns_name *n);

#endif
