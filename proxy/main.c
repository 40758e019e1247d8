/* SPDX-License-Identifier: Apache-2.0
 * main: command line, configuration loading, start and stop order, signals. The only file
 * that exits. Start order: config, log, workers (which bind their listeners), admin, ready.
 * Stop order: not ready, workers, admin, config. Live reload (SIGHUP, a change of the config
 * file or of a TLS listener's certificate, key or client CAs) builds the next generation here and
 * hands it to the workers. */
#include <errno.h>
#include <getopt.h>
#include <arpa/inet.h>
#include <netdb.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/event.h>
#include <openssl/ssl.h>

#include "rem_build.h"
#include "rem_commit.h"
#include "admin.h"
#include "admin_client.h"
#include "config.h"
#include "config_dump.h"
#include "crash.h"
#include "error.h"
#include "healthcheck.h"
#include "log.h"
#include "loop.h"
#include "metrics.h"
#include "server.h"
#include "tls.h"
#include "tls_tickets.h"
#include "tls_client.h"
#include "watch.h"
#include "worker.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: remora [-c FILE]          run the proxy\n"
            "       remora --check [-c FILE]  validate the configuration and exit\n"
            "       remora --admin-request METHOD PATH [-c FILE]\n"
            "                                 one request to the admin port (e.g. POST /drain);\n"
            "                                 prints the body, exit 0 on a 2xx\n"
            "       remora --version | --help\n"
            "\n"
            "The configuration is FILE, else $REMORA_CONFIG, else %s if it exists,\n"
            "else the embedded default (listen 0.0.0.0:8000, forward to 127.0.0.1:8080,\n"
            "admin on 0.0.0.0:9090). Environment: REMORA_WORKERS (auto or a number),\n"
            "REMORA_LOG (debug|info|warn|error).\n",
            REM_DEFAULT_CONFIG_PATH);
}

/* The config file: -c FILE, else $REMORA_CONFIG, else the default path if it exists; NULL:
 * the embedded default. */
static const char *config_path(const char *path)
{
    if (!path)
        path = getenv("REMORA_CONFIG");
    if (!path && access(REM_DEFAULT_CONFIG_PATH, F_OK) == 0)
        path = REM_DEFAULT_CONFIG_PATH;
    return path;
}

static char *read_file(const char *path, size_t *len);

/* Loads the configuration; *hash (may be NULL) gets the hash of the file bytes it loaded (0 for
 * the embedded default), which live reload compares with. */
static struct rem_config *load(const char *path, bool check, uint64_t *hash)
{
    struct rem_config_diag diag = {0};
    struct rem_config *cfg;
    path = config_path(path);
    if (hash)
        *hash = 0;
    if (path) {
        size_t len = 0;
        char *bytes = read_file(path, &len);
        if (bytes) {
            if (hash)
                *hash = rem_fnv1a(bytes, len);
            cfg = rem_config_load_bytes(bytes, len, path, &diag);
            free(bytes);
        } else {
            cfg = rem_config_load_file(path, &diag); /* says why it cannot be read */
        }
    } else {
        cfg = rem_config_default();
    }
    if (!cfg) {
        for (size_t i = 0; i < diag.n; i++)
            fprintf(check ? stdout : stderr, "%s\n", diag.msgs[i]);
        if (!check)
            fprintf(stderr, "remora: invalid configuration, not starting\n");
    }
    rem_config_diag_dispose(&diag);
    return cfg;
}

/* --check: builds (and drops) every TLS listener's and TLS upstream's context as a start would, so
 * a certificate or key that cannot be used is reported ("FILE: listener ...: tls.cert PATH: ...").
 * Returns 0, or -1 after printing every problem. */
static int check_tls(const struct rem_config *cfg)
{
    int rc = 0;
    for (size_t i = 0; i < cfg->n_listeners; i++) {
        char err[512];
        if (!cfg->listeners[i].tls)
            continue;
        SSL_CTX *ctx = rem_tls_server_ctx_new(&cfg->listeners[i], err, sizeof(err));
        if (!ctx) {
            printf("%s: %s\n", cfg->source, err);
            rc = -1;
        }
        SSL_CTX_free(ctx);
    }
    for (size_t i = 0; i < cfg->n_upstreams; i++) {
        char err[512];
        if (!cfg->upstreams[i].tls)
            continue;
        struct rem_tls_client *c = rem_tls_client_new(&cfg->upstreams[i], err, sizeof(err));
        if (!c) {
            printf("%s: %s\n", cfg->source, err);
            rc = -1;
        }
        rem_tls_client_unref(c);
    }
    return rc;
}

/* The first line of path as a byte count; 0 when absent, "max", or unreadable. */
static uint64_t read_limit(const char *path)
{
    uint64_t v = 0;
    FILE *f = fopen(path, "re");
    if (f) {
        char buf[32] = "";
        if (fgets(buf, sizeof(buf), f) && strncmp(buf, "max", 3) != 0)
            v = strtoull(buf, NULL, 10);
        fclose(f);
    }
    return v;
}

/* This process's memory limit, 0 when unlimited or unknown: cgroup v2 memory.max, else (a
 * cgroup v1 node) the memory controller's memory.limit_in_bytes, where "unlimited" reads as a
 * page-rounded huge number. */
static uint64_t memory_limit(void)
{
    char v2[512] = "/sys/fs/cgroup/memory.max", v1[512] = "", line[400];
    FILE *f = fopen("/proc/self/cgroup", "re");
    if (f) {
        while (fgets(line, sizeof(line), f)) {
            line[strcspn(line, "\n")] = '\0';
            const char *c = strchr(line, ':'), *p = c ? strchr(c + 1, ':') : NULL;
            if (strncmp(line, "0::", 3) == 0)
                snprintf(v2, sizeof(v2), "/sys/fs/cgroup%s/memory.max", line + 3);
            else if (c && p && (size_t)(p - c - 1) >= 6 && strstr(c + 1, "memory") &&
                     strstr(c + 1, "memory") < p)
                snprintf(v1, sizeof(v1), "/sys/fs/cgroup/memory%s/memory.limit_in_bytes", p + 1);
        }
        fclose(f);
    }
    uint64_t v = read_limit(v2);
    if (!v && v1[0]) {
        v = read_limit(v1);
        if (!v) /* a container sees its own cgroup at the mount's root */
            v = read_limit("/sys/fs/cgroup/memory/memory.limit_in_bytes");
    }
    return v >= ((uint64_t)1 << 60) ? 0 : v;
}

/* Listener max_connections when not configured (docs/memory.md): each connection may pair
 * with an upstream connection (2 fds), and must fit the memory limit at its worst case
 * (4 buffers of buffer_bytes, request and response heads). */
static void derive_max_connections(struct rem_config *cfg, bool quiet)
{
    struct rlimit rl;
    uint64_t by_fd = 1024;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        if (rl.rlim_cur == RLIM_INFINITY)
            by_fd = 1u << 20;
        else if (rl.rlim_cur > 128)
            by_fd = (rl.rlim_cur - 64) / 2;
        else
            by_fd = rl.rlim_cur / 4; /* tiny limits: leave room for upconns and internal fds */
    }
    /* docs/memory.md: each of the 4 buffers may hold buffer_bytes plus one 16 KiB read */
    uint64_t per_conn =
        4 * (cfg->limits.buffer_bytes + 16384) + 2 * cfg->limits.max_header_bytes + 4096;
    uint64_t mem = memory_limit(), by_mem = UINT64_MAX;
    const uint64_t reserve = 16u << 20; /* binary, metrics, queues, allocator slack */
    if (mem)
        by_mem = mem > reserve ? (mem - reserve) / per_conn : 16;
    uint64_t n = by_fd < by_mem ? by_fd : by_mem;
    if (n < 16)
        n = 16;
    if (n > (1u << 24))
        n = 1u << 24;
    for (size_t i = 0; i < cfg->n_listeners; i++)
        if (cfg->listeners[i].max_connections == 0) {
            cfg->listeners[i].max_connections = (uint32_t)n;
            if (!quiet)
                rem_log_info("listener %s: max_connections %llu (RLIMIT_NOFILE bound %llu, memory "
                             "bound %s)",
                             cfg->listeners[i].name, (unsigned long long)n,
                             (unsigned long long)by_fd,
                             mem ? "from the cgroup memory limit" : "none");
        }
}

static unsigned worker_count(const struct rem_config *cfg)
{
    const char *env = getenv("REMORA_WORKERS");
    if (env && *env && strcmp(env, "auto") != 0) {
        char *end;
        unsigned long v = strtoul(env, &end, 10);
        if (*end == '\0' && v > 0 && v <= 1024)
            return (unsigned)v;
        rem_log_warn("REMORA_WORKERS=%s is not a number from 1 to 1024; ignored", env);
    } else if (env && strcmp(env, "auto") == 0) {
        return rem_workers_auto();
    }
    return cfg->workers ? cfg->workers : rem_workers_auto();
}

/* The drain (SIGTERM, SIGINT, POST /drain): every worker drains its conns and closes its
 * listeners after drain.delay; the main thread polls the workers' conn counts and exits (when
 * a signal asked for it) as soon as none is left, or cuts what is left at drain.timeout. */
#define REM_DRAIN_POLL_MS 20

struct drain {
    struct event_base *base;
    const struct rem_config *cfg;
    struct rem_worker *workers;
    unsigned n_workers;
    struct rem_admin *admin;
    struct event *poll_ev, *timeout_ev;
    bool active, exit_after, cut_posted, reported;
    bool failed; /* a reload failed on a worker: exit 1 whatever the drain cut */
    uint64_t start_ms, finished_before, cut_before;
    int exit_code;
};

static uint64_t shard_sum(const struct drain *d, size_t off)
{
    uint64_t n = 0;
    for (unsigned i = 0; i < d->n_workers; i++)
        n += __atomic_load_n((const uint64_t *)((const char *)d->workers[i].metrics + off),
                             __ATOMIC_RELAXED);
    return n;
}

static int64_t open_conns(const struct drain *d)
{
    int64_t n = 0;
    for (unsigned i = 0; i < d->n_workers; i++)
        n += rem_worker_conns(&d->workers[i]);
    return n;
}

/* Every worker closed its listeners (after drain.delay, on its own clock). */
static bool listeners_closed(const struct drain *d)
{
    for (unsigned i = 0; i < d->n_workers; i++)
        if (!rem_worker_listeners_closed(&d->workers[i]))
            return false;
    return true;
}

static void post_all(struct drain *d, unsigned what)
{
    for (unsigned i = 0; i < d->n_workers; i++)
        rem_worker_post(&d->workers[i], what);
}

/* Nothing left (or cut): one log line; the loop ends when a signal started the drain. */
static void drain_over(struct drain *d)
{
    uint64_t cut = shard_sum(d, offsetof(struct rem_metrics_shard, drain_cut)) - d->cut_before;
    uint64_t done =
        shard_sum(d, offsetof(struct rem_metrics_shard, streams_finished)) - d->finished_before;
    if (!d->reported)
        rem_log_info("drain finished in %.3f s: %llu requests completed during it, %llu cut",
                     (double)(rem_now_ms() - d->start_ms) / 1000.0,
                     (unsigned long long)(done - cut), (unsigned long long)cut);
    d->reported = true;
    d->exit_code = cut || d->failed ? 1 : 0;
    event_del(d->poll_ev);
    event_del(d->timeout_ev);
    if (d->exit_after)
        event_base_loopbreak(d->base);
}

static void on_drain_poll(evutil_socket_t fd, short what, void *arg)
{
    struct drain *d = arg;
    /* The listeners stay open for drain.delay even when no conn is left; each worker says
     * when it closed its own (a late one must not be stopped with its backlog unserved). */
    if (open_conns(d) == 0 && (d->cut_posted || listeners_closed(d)))
        drain_over(d);
}

static void on_drain_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct drain *d = arg;
    rem_log_warn("drain: %lld connections still open after %llu ms; cutting them",
                 (long long)open_conns(d), (unsigned long long)d->cfg->drain.timeout_ms);
    d->cut_posted = true;
    post_all(d, REM_MAIL_CUT);
}

static void drain_start(struct drain *d, bool exit_after)
{
    d->exit_after = d->exit_after || exit_after;
    if (d->active) {
        if (exit_after && d->reported)
            event_base_loopbreak(d->base); /* POST /drain finished earlier; now a signal */
        return;
    }
    d->active = true;
    d->start_ms = rem_now_ms();
    d->finished_before = shard_sum(d, offsetof(struct rem_metrics_shard, streams_finished));
    d->cut_before = shard_sum(d, offsetof(struct rem_metrics_shard, drain_cut));
    rem_admin_set_draining(d->admin);
    rem_log_info("drain started: listeners close in %llu ms, what is still in flight after %llu "
                 "ms is cut",
                 (unsigned long long)d->cfg->drain.delay_ms,
                 (unsigned long long)d->cfg->drain.timeout_ms);
    post_all(d, REM_MAIL_DRAIN);
    struct timeval poll = {0, REM_DRAIN_POLL_MS * 1000};
    uint64_t t = d->cfg->drain.timeout_ms;
    struct timeval tv = {(time_t)(t / 1000), (suseconds_t)((t % 1000) * 1000)};
    event_add(d->poll_ev, &poll);
    event_add(d->timeout_ev, &tv);
}

static void on_admin_drain(void *arg)
{
    drain_start(arg, false);
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    struct drain *d = arg;
    if (!d->active || !d->exit_after) {
        rem_log_info("received signal %d, draining", (int)sig);
        drain_start(d, true);
        return;
    }
    /* A second signal: cut what is left now, exit as soon as it is gone. */
    rem_log_info("received signal %d again, stopping now", (int)sig);
    if (!d->cut_posted) {
        d->cut_posted = true;
        post_all(d, REM_MAIL_CUT); /* the poll ends the loop once the conns are gone */
    }
}

/* ---- live reload ----------------------------------------------------------------------- */

#define REM_RELOAD_DEBOUNCE_MS 100
#define REM_RELOAD_RETRY_MS 10

/* What asked for a reload (a bit set: triggers that arrive while one is in progress add up). */
enum {
    REM_TRIGGER_SIGHUP = 1, /* always loads, whatever the bytes */
    REM_TRIGGER_FILE = 2,   /* the config file's directory: loads when its bytes changed */
    REM_TRIGGER_CERT = 4,   /* a TLS file's directory: loads when the config's bytes or those
                               of the certificates and keys it names changed */
};

struct reloader {
    struct event_base *base;
    const char *path;              /* NULL: the embedded default (nothing to reload) */
    struct rem_config *cfg;        /* a reference: the active generation */
    struct rem_metrics_layout *ml; /* a reference: its layout */
    struct rem_server_plan *plan;  /* a reference: its plan (sockets, ports) */
    struct rem_worker *workers;
    unsigned n_workers;
    struct rem_admin *admin;
    struct rem_healthcheck *hc; /* owned */
    struct drain *drain;
    uint64_t generation, reloads_ok, reloads_failed; /* for /metrics (rem_admin_set_reloads) */
    uint64_t cert_reloads_ok, cert_reloads_failed;   /* ... reloads a TLS file change asked for */
    double last_success;
    uint64_t file_hash; /* of the file bytes the last reload tried (or loaded at start) */
    bool file_invalid;  /* ... which did not load */
    uint64_t tls_hash;  /* of the TLS files the last config loaded names (tls_files_hash) */
    struct rem_watch *tls_watch; /* owned: the directories of those files; NULL: none */
    struct event *retry_ev;
    struct event *purge_ev;  /* a while after a reload: give freed generations back to the OS */
    unsigned retry_triggers; /* REM_TRIGGER_*: reloads waiting for the workers to finish one */
    /* Posted to the workers, waiting for every acknowledgement before it counts. */
    bool awaiting;
    bool awaiting_cert; /* ... a TLS file change asked for it (remora_tls_cert_reloads_total) */
    const char *awaiting_trigger;
    struct rem_healthcheck *awaiting_hc; /* owned: replaces hc once every worker swapped */
    struct event *ack_ev;
};

#define REM_RELOAD_MAX_BYTES (8u << 20)

/* The whole file (malloc'd, *len bytes), or NULL with errno set (EFBIG: over 8 MiB). */
static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rbe");
    if (!f)
        return NULL;
    size_t cap = 65536, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (got == 0)
            break;
        if (n == cap) {
            char *nb = cap >= REM_RELOAD_MAX_BYTES ? NULL : realloc(buf, cap * 2);
            if (!nb) {
                free(buf);
                buf = NULL;
                errno = cap >= REM_RELOAD_MAX_BYTES ? EFBIG : ENOMEM;
                break;
            }
            buf = nb;
            cap *= 2;
        }
    }
    if (buf && ferror(f)) {
        free(buf);
        buf = NULL;
        errno = EIO;
    }
    fclose(f);
    *len = n;
    return buf;
}

static bool dns_same(const struct rem_cfg_dns *a, const struct rem_cfg_dns *b)
{
    if (a->n_resolvers != b->n_resolvers || a->min_ttl_ms != b->min_ttl_ms ||
        a->max_ttl_ms != b->max_ttl_ms || a->timeout_ms != b->timeout_ms ||
        a->attempts != b->attempts || a->family != b->family || a->stale_ttl_ms != b->stale_ttl_ms)
        return false;
    for (size_t i = 0; i < a->n_resolvers; i++)
        if (a->resolvers[i].len != b->resolvers[i].len ||
            memcmp(&a->resolvers[i].ss, &b->resolvers[i].ss, a->resolvers[i].len) != 0)
            return false;
    return true;
}

static void publish_reloads(const struct reloader *r)
{
    const struct rem_admin_reloads st = {r->generation,      r->reloads_ok,
                                         r->reloads_failed,  r->last_success,
                                         r->cert_reloads_ok, r->cert_reloads_failed};
    rem_admin_set_reloads(r->admin, &st);
}

/* The admin's remora_tls_cert_expiry_timestamp_seconds{cert} in p, the plan the workers serve:
 * each TLS listener's certificate ("listener/NAME") and the earliest of its client CAs
 * ("listener/NAME/client_ca"), each TLS upstream's client certificate ("upstream/NAME") and the
 * earliest of its configured CAs ("upstream/NAME/ca"; the system store is not one's to alert
 * on). */
static void publish_tls_expiry(struct rem_admin *admin, const struct rem_server_plan *p)
{
    const struct rem_config *cfg = p->cfg;
    size_t cap = 2 * (cfg->n_listeners + cfg->n_upstreams) + 1, n = 0;
    char **names = rem_xcalloc(cap, sizeof(*names));
    double *not_after = rem_xcalloc(cap, sizeof(*not_after));
    char buf[512];
#define ADD(when, fmt, name)                                                                       \
    do {                                                                                           \
        int64_t t_ = (when);                                                                       \
        if (t_) {                                                                                  \
            snprintf(buf, sizeof(buf), fmt, name);                                                 \
            if (!(names[n] = strdup(buf)))                                                         \
                abort();                                                                           \
            not_after[n++] = (double)t_;                                                           \
        }                                                                                          \
    } while (0)
    for (size_t i = 0; i < cfg->n_listeners; i++)
        if (p->tls[i]) {
            const char *ln = cfg->listeners[i].name;
            ADD(rem_tls_cert_not_after(p->tls[i]), "listener/%s", ln);
            if (cfg->listeners[i].tls->client_ca)
                ADD(rem_tls_store_not_after(p->tls[i]), "listener/%s/client_ca", ln);
        }
    for (size_t i = 0; i < cfg->n_upstreams; i++)
        if (p->uptls && p->uptls[i]) {
            const struct rem_cfg_upstream_tls *t = cfg->upstreams[i].tls;
            const char *un = cfg->upstreams[i].name;
            if (t && t->cert)
                ADD(rem_tls_cert_not_after(p->uptls[i]->ctx), "upstream/%s", un);
            if (t && t->ca)
                ADD(rem_tls_store_not_after(p->uptls[i]->ctx), "upstream/%s/ca", un);
        }
#undef ADD
    rem_admin_set_tls_expiry(admin, (const char *const *)names, not_after, n);
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    free(not_after);
}

/* The TLS files cfg names, in order: each TLS listener's cert, key, client_ca and ocsp_response,
 * each TLS upstream's ca, cert and key (those written). Returns an array to free, *n set. */
static const char **tls_files(const struct rem_config *cfg, size_t *n)
{
    const char **paths =
        rem_xcalloc(4 * cfg->n_listeners + 3 * cfg->n_upstreams + 1, sizeof(*paths));
    *n = 0;
    for (size_t i = 0; i < cfg->n_listeners; i++)
        if (cfg->listeners[i].tls) {
            paths[(*n)++] = cfg->listeners[i].tls->cert;
            paths[(*n)++] = cfg->listeners[i].tls->key;
            if (cfg->listeners[i].tls->client_ca)
                paths[(*n)++] = cfg->listeners[i].tls->client_ca;
            if (cfg->listeners[i].tls->ocsp_response)
                paths[(*n)++] = cfg->listeners[i].tls->ocsp_response;
        }
    for (size_t i = 0; i < cfg->n_upstreams; i++) {
        const struct rem_cfg_upstream_tls *t = cfg->upstreams[i].tls;
        const char *f[3] = {t ? t->ca : NULL, t ? t->cert : NULL, t ? t->key : NULL};
        for (int k = 0; k < 3; k++)
            if (f[k])
                paths[(*n)++] = f[k];
    }
    return paths;
}

/* A hash of the bytes of cfg's TLS files (tls_files), in order (0: none); a file that cannot be
 * read counts as its errno, so it becoming readable changes it. */
static uint64_t tls_files_hash(const struct rem_config *cfg)
{
    uint64_t h[2] = {0, 0};
    size_t n;
    const char **paths = tls_files(cfg, &n);
    for (size_t i = 0; i < n; i++) {
        size_t len = 0;
        char *bytes = read_file(paths[i], &len);
        h[1] = bytes ? rem_fnv1a(bytes, len) : (uint64_t)errno;
        free(bytes);
        h[0] = rem_fnv1a(h, sizeof(h));
    }
    free(paths);
    return h[0];
}

static void on_tls_changed(void *arg);

/* Watches the directories of cfg's TLS files (a Secret volume swaps its `..data` symlink there),
 * keeping the watch while they are the same files. */
static void watch_tls_files(struct reloader *r, const struct rem_config *cfg)
{
    size_t n;
    const char **paths = tls_files(cfg, &n);
    if (!r->tls_watch || !rem_watch_same(r->tls_watch, paths, n)) {
        rem_watch_free(r->tls_watch);
        r->tls_watch =
            n ? rem_watch_new(r->base, paths, n, REM_RELOAD_DEBOUNCE_MS, "tls", on_tls_changed, r)
              : NULL;
    }
    free(paths);
}

static void reload_failed(struct reloader *r, const char *trigger, bool cert)
{
    r->reloads_failed++;
    if (cert)
        r->cert_reloads_failed++;
    publish_reloads(r);
    rem_log_error("config reload (%s) failed; keeping generation %llu", trigger,
                  (unsigned long long)r->generation);
}

static bool workers_caught_up(const struct reloader *r)
{
    for (unsigned i = 0; i < r->n_workers; i++)
        if (rem_server_worker_gen_id(&r->workers[i]) != r->plan->id)
            return false;
    return true;
}

/* Every worker acknowledged the generation posted last: it counts as loaded (admin, health
 * checks, counters) when all of them swapped. A worker that could not build it kept the old
 * one; workers must not serve different configurations, so remora drains and exits 1 for the
 * orchestrator to restart it on the new file (nothing in flight is lost). */
static void reload_acked(struct reloader *r)
{
    r->awaiting = false;
    const char *trigger = r->awaiting_trigger;
    unsigned failed = 0;
    for (unsigned i = 0; i < r->n_workers; i++)
        if (rem_server_worker_failed_id(&r->workers[i]) == r->plan->id) {
            failed++;
            rem_log_error("config reload (%s): worker %u could not apply generation %llu (see "
                          "above)",
                          trigger, i, (unsigned long long)r->plan->id);
        }
    if (failed) {
        rem_healthcheck_free(r->awaiting_hc);
        r->awaiting_hc = NULL;
        reload_failed(r, trigger, r->awaiting_cert);
        rem_log_error("workers run different configurations: draining, then exiting 1 so the "
                      "container restarts on the new file");
        r->drain->failed = true;
        drain_start(r->drain, true);
        return;
    }
    rem_healthcheck_free(r->hc);
    r->hc = r->awaiting_hc;
    r->awaiting_hc = NULL;
    rem_admin_set_config(r->admin, r->cfg, r->ml, r->hc);
    publish_tls_expiry(r->admin, r->plan);
    rem_log_setup(r->cfg->log.level, r->cfg->log.format);
    r->generation = r->plan->id;
    r->reloads_ok++;
    if (r->awaiting_cert)
        r->cert_reloads_ok++;
    r->last_success = (double)r->cfg->loaded_at;
    publish_reloads(r);
    r->drain->cfg = r->cfg;
    struct timeval purge = {1, 0};
    event_add(r->purge_ev, &purge);
    char line[256];
    rem_config_summary(r->cfg, line, sizeof(line));
    rem_log_info("config reloaded (%s): generation %llu, hash %016llx, %s", trigger,
                 (unsigned long long)r->plan->id, (unsigned long long)rem_config_hash(r->cfg),
                 line);
}

static void on_reload_ack(evutil_socket_t fd, short what, void *arg)
{
    struct reloader *r = arg;
    if (!r->awaiting)
        return;
    if (workers_caught_up(r)) {
        reload_acked(r);
        return;
    }
    struct timeval tv = {0, REM_RELOAD_RETRY_MS * 1000};
    event_add(r->ack_ev, &tv);
}

/* Reloads for the triggers in `triggers` (REM_TRIGGER_*). A file trigger does nothing when the
 * config file holds the bytes the last reload tried (loaded or rejected), a TLS file trigger
 * when, in addition, the certificates and keys that config names hold the bytes it read: a
 * watch reports any write in a directory, and a needless new TLS context would end every
 * client's session tickets. SIGHUP always reloads. */
static void reload(struct reloader *r, unsigned triggers)
{
    bool forced = triggers & REM_TRIGGER_SIGHUP;
    const char *trigger = forced                        ? "SIGHUP"
                          : triggers & REM_TRIGGER_FILE ? "file change"
                                                        : "certificate change";
    if (!r->path) {
        rem_log_warn("config reload (%s): remora runs the embedded default; nothing to reload",
                     trigger);
        return;
    }
    if (r->drain->active) {
        rem_log_info("config reload (%s) ignored: draining", trigger);
        return;
    }
    if (r->awaiting || !workers_caught_up(r)) {
        /* The workers still swap to the last generation; plans are built against it. */
        r->retry_triggers |= triggers;
        struct timeval tv = {0, REM_RELOAD_RETRY_MS * 1000};
        event_add(r->retry_ev, &tv);
        return;
    }
    size_t len = 0;
    char *bytes = read_file(r->path, &len);
    if (!bytes) {
        rem_log_error("%s: cannot read: %s", r->path, strerror(errno));
        reload_failed(r, trigger, false);
        return;
    }
    uint64_t h = rem_fnv1a(bytes, len);
    bool same = !forced && h == r->file_hash;
    if (same && (!(triggers & REM_TRIGGER_CERT) || r->file_invalid)) {
        /* A TLS file change under a config that does not load waits for one that does. */
        rem_log_debug("config file %s unchanged; not reloaded", r->path);
        free(bytes);
        return;
    }
    if (!same && !forced)
        trigger = "file change";
    r->file_hash = h;
    struct rem_config_diag diag = {0};
    struct rem_config *cfg = rem_config_load_bytes(bytes, len, r->path, &diag);
    free(bytes);
    for (size_t i = 0; i < diag.n; i++)
        rem_log_error("%s", diag.msgs[i]);
    rem_config_diag_dispose(&diag);
    r->file_invalid = !cfg;
    if (!cfg) {
        reload_failed(r, trigger, false);
        return;
    }
    /* The watch first: a TLS file written from now on triggers again, even one written while
     * the hash below or the plan reads it. */
    watch_tls_files(r, cfg);
    uint64_t th = tls_files_hash(cfg);
    if (same && th == r->tls_hash) {
        rem_log_debug("certificates and keys unchanged; not reloaded");
        rem_config_unref(cfg);
        return;
    }
    /* Counted in remora_tls_cert_reloads_total: a TLS file change asked for it and brought new
     * bytes (not a config edit another watch saw first). */
    bool cert = (triggers & REM_TRIGGER_CERT) && th != r->tls_hash;
    r->tls_hash = th;
    unsigned nw = worker_count(cfg);
    if (nw != r->n_workers)
        rem_log_warn("config: workers changed from %u to %u; needs a restart (ignored)",
                     r->n_workers, nw);
    cfg->workers = r->n_workers;
    if (!dns_same(&cfg->dns, &r->cfg->dns))
        rem_log_warn("config: dns changed; needs a restart (ignored; the running resolver "
                     "settings stay)");
    derive_max_connections(cfg, true);
    /* Everything that can fail on this thread comes first: nothing changes until it all did. */
    struct rem_metrics_layout *ml = rem_metrics_layout_new(cfg);
    struct rem_server_plan *plan =
        ml ? rem_server_plan_new(cfg, ml, r->plan, r->n_workers, r->plan->id + 1) : NULL;
    struct rem_healthcheck *hc =
        plan ? rem_healthcheck_new(r->base, cfg, plan->uptls, r->hc) : NULL;
    bool admin_moved =
        cfg->admin.addr.len != r->cfg->admin.addr.len ||
        memcmp(&cfg->admin.addr.ss, &r->cfg->admin.addr.ss, cfg->admin.addr.len) != 0;
    if (!hc || (admin_moved && rem_admin_rebind(r->admin, &cfg->admin) < 0)) {
        rem_server_plan_unref(plan);
        rem_healthcheck_free(hc);
        rem_metrics_layout_unref(ml);
        rem_config_unref(cfg);
        reload_failed(r, trigger, cert);
        return;
    }
    if (admin_moved)
        rem_log_info("admin moved to %s", cfg->admin.address);
    for (unsigned i = 0; i < r->n_workers; i++)
        rem_server_worker_reload(&r->workers[i], plan);
    /* The next plan is built against this one (its listener indices and sockets), whatever
     * the workers answer; what the admin shows changes once they all swapped. */
    rem_server_plan_unref(r->plan);
    rem_metrics_layout_unref(r->ml);
    rem_config_unref(r->cfg);
    r->plan = plan;
    r->ml = ml;
    r->cfg = cfg;
    r->awaiting = true;
    r->awaiting_cert = cert;
    r->awaiting_trigger = trigger;
    r->awaiting_hc = hc;
    struct timeval tv = {0, 1000};
    event_add(r->ack_ev, &tv);
}

/* The old generations are freed (by the workers, as their last streams end) into jemalloc's
 * arenas, which keep the pages dirty until later allocation activity decays them: an idle
 * sidecar would keep them for good. A purge a second after a reload returns them (each worker
 * flushes its own cache when it frees a generation). */
static void on_purge(evutil_socket_t fd, short what, void *arg)
{
    rem_alloc_release(true);
}

#define REM_DECAY_MS 5000

/* Every REM_DECAY_MS: pages freed by a past burst go back to the kernel on time, and the main
 * thread's own cache goes back to the arenas once it is idle (error.h). */
static void on_decay(evutil_socket_t fd, short what, void *arg)
{
    rem_alloc_idle_tick(arg);
    rem_alloc_decay();
}

/* Every REM_TICKET_ROTATE_MS: a new session ticket key (tls_tickets.h). */
static void on_ticket_rotate(evutil_socket_t fd, short what, void *arg)
{
    rem_tls_tickets_rotate();
}

static void on_reload_retry(evutil_socket_t fd, short what, void *arg)
{
    struct reloader *r = arg;
    unsigned triggers = r->retry_triggers;
    r->retry_triggers = 0;
    reload(r, triggers);
}

static void on_sighup(evutil_socket_t sig, short what, void *arg)
{
    reload(arg, REM_TRIGGER_SIGHUP);
}

static void on_file_changed(void *arg)
{
    reload(arg, REM_TRIGGER_FILE);
}

static void on_tls_changed(void *arg)
{
    reload(arg, REM_TRIGGER_CERT);
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"check", no_argument, NULL, 'k'},
        {"admin-request", required_argument, NULL, 'a'},
        {"version", no_argument, NULL, 'V'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    uint64_t t0_ns = rem_now_ns(); /* for the `ready` line: main's entry, not exec */
    const char *path = NULL, *admin_method = NULL;
    bool check = false;
    int opt;
    while ((opt = getopt_long(argc, argv, "c:hV", opts, NULL)) != -1) {
        switch (opt) {
        case 'c':
            path = optarg;
            break;
        case 'k':
            check = true;
            break;
        case 'a':
            admin_method = optarg;
            break;
        case 'V':
            printf("remora %s\ncommit %s\n", PACKAGE_VERSION, REM_COMMIT);
            return 0;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (admin_method) {
        /* remora --admin-request METHOD PATH: the image needs no curl for a preStop hook. */
        if (optind != argc - 1) {
            usage(stderr);
            return 2;
        }
        struct rem_config *acfg = load(path, false, NULL);
        if (!acfg)
            return 1;
        int st = rem_admin_request(&acfg->admin, admin_method, argv[optind], 5000, stdout);
        rem_config_unref(acfg);
        return st >= 200 && st < 300 ? 0 : 1;
    }
    if (optind < argc) {
        fprintf(stderr, "remora: unexpected argument: %s\n", argv[optind]);
        usage(stderr);
        return 2;
    }

    uint64_t loaded_hash = 0;
    struct rem_config *cfg = load(path, check, &loaded_hash);
    if (!cfg)
        return 1;
    if (check) {
        char line[256];
        if (check_tls(cfg) < 0) {
            rem_config_unref(cfg);
            return 1;
        }
        rem_config_summary(cfg, line, sizeof(line));
        printf("%s\n", line);
        rem_config_unref(cfg);
        return 0;
    }
    rem_log_setup(cfg->log.level, cfg->log.format);
    signal(SIGPIPE, SIG_IGN);
    rem_crash_install();
    cfg->workers = worker_count(cfg); /* resolved before the generation is shared */
    derive_max_connections(cfg, false);

    int rc = 1;
    struct event_base *base = event_base_new();
    struct event *sigterm = NULL, *sigint = NULL, *sighup = NULL, *ticket_ev = NULL;
    struct event *decay_ev = NULL;
    struct rem_alloc_idle main_alloc;
    rem_alloc_idle_init(&main_alloc);
    struct drain dr = {0};
    struct reloader rl = {0};
    struct rem_admin *admin = NULL;
    struct rem_watch *watch = NULL;
    struct rem_metrics_layout *ml = rem_metrics_layout_new(cfg);
    struct rem_server_plan *plan = NULL;
    struct rem_worker *workers = rem_xcalloc(cfg->workers, sizeof(*workers));
    unsigned n_init = 0;
    if (!base || !ml)
        goto out;
    /* Watching starts before anything is built: a change from now on is seen (the bytes
     * loaded above are what the first file change is compared with). */
    if (config_path(path)) {
        const char *cpath = config_path(path);
        watch =
            rem_watch_new(base, &cpath, 1, REM_RELOAD_DEBOUNCE_MS, "config", on_file_changed, &rl);
    }
    rl.base = base;
    watch_tls_files(&rl, cfg);
    rl.tls_hash = tls_files_hash(cfg);
    plan = rem_server_plan_new(cfg, ml, NULL, cfg->workers, 1);
    if (!plan)
        goto out;
    for (unsigned i = 0; i < cfg->workers; i++) {
        n_init++;
        if (rem_server_worker_init(&workers[i], i, plan) < 0)
            goto out;
    }
    rl.hc = rem_healthcheck_new(base, cfg, plan->uptls, NULL);
    if (!rl.hc)
        goto out;
    admin = rem_admin_new(base, &cfg->admin, workers, cfg->workers, cfg, ml, rl.hc);
    if (!admin)
        goto out;
    publish_tls_expiry(admin, plan);
    dr.base = base;
    dr.cfg = cfg;
    dr.workers = workers;
    dr.n_workers = cfg->workers;
    dr.admin = admin;
    dr.poll_ev = event_new(base, -1, EV_PERSIST, on_drain_poll, &dr);
    dr.timeout_ev = evtimer_new(base, on_drain_timeout, &dr);
    rem_admin_set_drain(admin, on_admin_drain, &dr);
    rl.path = config_path(path);
    rl.cfg = rem_config_ref(cfg);
    rl.ml = rem_metrics_layout_ref(ml);
    __atomic_add_fetch(&plan->refs, 1, __ATOMIC_RELAXED);
    rl.plan = plan;
    rl.workers = workers;
    rl.n_workers = cfg->workers;
    rl.admin = admin;
    rl.drain = &dr;
    rl.generation = 1;
    rl.last_success = (double)cfg->loaded_at;
    publish_reloads(&rl);
    rl.file_hash = loaded_hash;
    rl.retry_ev = evtimer_new(base, on_reload_retry, &rl);
    rl.ack_ev = evtimer_new(base, on_reload_ack, &rl);
    rl.purge_ev = evtimer_new(base, on_purge, &rl);
    sigterm = evsignal_new(base, SIGTERM, on_signal, &dr);
    sigint = evsignal_new(base, SIGINT, on_signal, &dr);
    sighup = evsignal_new(base, SIGHUP, on_sighup, &rl);
    ticket_ev = event_new(base, -1, EV_PERSIST, on_ticket_rotate, NULL);
    struct timeval ticket_tv = {REM_TICKET_ROTATE_MS / 1000, (REM_TICKET_ROTATE_MS % 1000) * 1000};
    decay_ev = event_new(base, -1, EV_PERSIST, on_decay, &main_alloc);
    struct timeval decay_tv = {REM_DECAY_MS / 1000, 0};
    if (!sigterm || !sigint || !sighup || !ticket_ev || !decay_ev || !rl.retry_ev || !rl.purge_ev ||
        !rl.ack_ev || !dr.poll_ev || !dr.timeout_ev || evsignal_add(sigterm, NULL) < 0 ||
        evsignal_add(sigint, NULL) < 0 || evsignal_add(sighup, NULL) < 0 ||
        event_add(ticket_ev, &ticket_tv) < 0 || event_add(decay_ev, &decay_tv) < 0)
        goto out;
    for (unsigned i = 0; i < cfg->workers; i++)
        if (rem_worker_start(&workers[i]) < 0)
            goto out;
    rem_admin_set_ready(admin, true, NULL);
    rem_log_info("ready in %.3f ms (from main to /readyz answering 200)",
                 (double)(rem_now_ns() - t0_ns) / 1e6);
    for (size_t i = 0; i < cfg->n_listeners; i++)
        rem_log_info("listening on %s (port %u) as %s, %u workers", cfg->listeners[i].address,
                     plan->ports[i], cfg->listeners[i].name, cfg->workers);
    rem_log_info("remora %s started: config %s, admin on %s", PACKAGE_VERSION, cfg->source,
                 cfg->admin.address);
    event_base_dispatch(base);
    rem_admin_set_ready(admin, false, "stopping");
    rc = dr.exit_code;

out:
    rem_watch_free(watch);
    rem_watch_free(rl.tls_watch);
    for (unsigned i = 0; i < n_init; i++)
        rem_worker_stop(&workers[i]);
    for (unsigned i = 0; i < n_init; i++)
        rem_server_worker_dispose(&workers[i]);
    rem_admin_free(admin);
    rem_healthcheck_free(rl.hc);
    rem_server_plan_unref(rl.plan);
    rem_metrics_layout_unref(rl.ml);
    rem_config_unref(rl.cfg);
    rem_server_plan_unref(plan);
    rem_metrics_layout_unref(ml);
    if (rl.retry_ev)
        event_free(rl.retry_ev);
    if (rl.purge_ev)
        event_free(rl.purge_ev);
    if (rl.ack_ev)
        event_free(rl.ack_ev);
    rem_healthcheck_free(rl.awaiting_hc);
    if (dr.poll_ev)
        event_free(dr.poll_ev);
    if (dr.timeout_ev)
        event_free(dr.timeout_ev);
    if (sigterm)
        event_free(sigterm);
    if (sigint)
        event_free(sigint);
    if (sighup)
        event_free(sighup);
    if (ticket_ev)
        event_free(ticket_ev);
    if (decay_ev)
        event_free(decay_ev);
    if (base)
        event_base_free(base);
    free(workers);
    rem_config_unref(cfg);
    rem_crash_thread_done();
    if (rc == 0)
        rem_log_info("stopped");
    return rc;
}
