/* SPDX-License-Identifier: Apache-2.0
 * main: command line, configuration loading, start and stop order, signals. The only file
 * that exits. Start order: config, log, workers (which bind their listeners), admin, ready.
 * Stop order: not ready, workers, admin, config. */
#include <errno.h>
#include <getopt.h>
#include <arpa/inet.h>
#include <netdb.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/event.h>

#include "rem_build.h"
#include "rem_commit.h"
#include "admin.h"
#include "config.h"
#include "error.h"
#include "healthcheck.h"
#include "log.h"
#include "metrics.h"
#include "server.h"
#include "worker.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: remora [-c FILE]          run the proxy\n"
            "       remora --check [-c FILE]  validate the configuration and exit\n"
            "       remora --version | --help\n"
            "\n"
            "The configuration is FILE, else $REMORA_CONFIG, else %s if it exists,\n"
            "else the embedded default (listen 0.0.0.0:8000, forward to 127.0.0.1:8080,\n"
            "admin on 0.0.0.0:9090). Environment: REMORA_WORKERS (auto or a number),\n"
            "REMORA_LOG (debug|info|warn|error).\n",
            REM_DEFAULT_CONFIG_PATH);
}

static struct rem_config *load(const char *path, bool check)
{
    struct rem_config_diag diag = {0};
    struct rem_config *cfg;
    if (!path)
        path = getenv("REMORA_CONFIG");
    if (!path && access(REM_DEFAULT_CONFIG_PATH, F_OK) == 0)
        path = REM_DEFAULT_CONFIG_PATH;
    cfg = path ? rem_config_load_file(path, &diag) : rem_config_default();
    if (!cfg) {
        for (size_t i = 0; i < diag.n; i++)
            fprintf(check ? stdout : stderr, "%s\n", diag.msgs[i]);
        if (!check)
            fprintf(stderr, "remora: invalid configuration, not starting\n");
    }
    rem_config_diag_dispose(&diag);
    return cfg;
}

/* cgroup v2 memory.max of this process, 0 when unlimited or unknown. */
static uint64_t memory_limit(void)
{
    char path[512] = "/sys/fs/cgroup/memory.max", line[400];
    FILE *f = fopen("/proc/self/cgroup", "re");
    if (f) {
        while (fgets(line, sizeof(line), f))
            if (strncmp(line, "0::", 3) == 0) {
                line[strcspn(line, "\n")] = '\0';
                snprintf(path, sizeof(path), "/sys/fs/cgroup%s/memory.max", line + 3);
            }
        fclose(f);
    }
    uint64_t v = 0;
    f = fopen(path, "re");
    if (f) {
        char buf[32] = "";
        if (fgets(buf, sizeof(buf), f) && strncmp(buf, "max", 3) != 0)
            v = strtoull(buf, NULL, 10);
        fclose(f);
    }
    return v;
}

/* Listener max_connections when not configured (docs/memory.md): each connection may pair
 * with an upstream connection (2 fds), and must fit the memory limit at its worst case
 * (4 buffers of buffer_bytes, request and response heads). */
static void derive_max_connections(struct rem_config *cfg)
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
    uint64_t per_conn = 4 * cfg->limits.buffer_bytes + 2 * cfg->limits.max_header_bytes + 4096;
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
            rem_log_info("listener %s: max_connections %llu (RLIMIT_NOFILE bound %llu, memory "
                         "bound %s)",
                         cfg->listeners[i].name, (unsigned long long)n, (unsigned long long)by_fd,
                         mem ? "from cgroup memory.max" : "none");
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

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    struct event_base *base = arg;
    rem_log_info("received signal %d, stopping", (int)sig);
    event_base_loopbreak(base);
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"check", no_argument, NULL, 'k'},
        {"version", no_argument, NULL, 'V'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *path = NULL;
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
    if (optind < argc) {
        fprintf(stderr, "remora: unexpected argument: %s\n", argv[optind]);
        usage(stderr);
        return 2;
    }

    struct rem_config *cfg = load(path, check);
    if (!cfg)
        return 1;
    if (check) {
        char line[256];
        rem_config_summary(cfg, line, sizeof(line));
        printf("%s\n", line);
        rem_config_unref(cfg);
        return 0;
    }
    rem_log_setup(cfg->log.level, cfg->log.format);
    signal(SIGPIPE, SIG_IGN);
    cfg->workers = worker_count(cfg); /* resolved before the generation is shared */
    derive_max_connections(cfg);

    int rc = 1;
    struct event_base *base = event_base_new();
    struct event *sigterm = NULL, *sigint = NULL;
    struct rem_admin *admin = NULL;
    struct rem_healthcheck *hc = NULL;
    struct rem_metrics_layout *ml = rem_metrics_layout_new(cfg);
    struct rem_worker *workers = rem_xcalloc(cfg->workers, sizeof(*workers));
    uint16_t *ports = rem_xcalloc(cfg->n_listeners, sizeof(*ports));
    unsigned n_init = 0;
    if (!base || !ml)
        goto out;
    for (unsigned i = 0; i < cfg->workers; i++) {
        n_init++;
        if (rem_server_worker_init(&workers[i], i, cfg, ml, ports) < 0)
            goto out;
    }
    hc = rem_healthcheck_new(base, cfg);
    if (!hc)
        goto out;
    admin = rem_admin_new(base, &cfg->admin, workers, cfg->workers, ml, hc);
    if (!admin)
        goto out;
    sigterm = evsignal_new(base, SIGTERM, on_signal, base);
    sigint = evsignal_new(base, SIGINT, on_signal, base);
    if (!sigterm || !sigint || evsignal_add(sigterm, NULL) < 0 || evsignal_add(sigint, NULL) < 0)
        goto out;
    for (unsigned i = 0; i < cfg->workers; i++)
        if (rem_worker_start(&workers[i]) < 0)
            goto out;
    rem_admin_set_ready(admin, true, NULL);
    for (size_t i = 0; i < cfg->n_listeners; i++)
        rem_log_info("listening on %s (port %u) as %s, %u workers", cfg->listeners[i].address,
                     ports[i], cfg->listeners[i].name, cfg->workers);
    rem_log_info("remora %s started: config %s, admin on %s", PACKAGE_VERSION, cfg->source,
                 cfg->admin.address);
    event_base_dispatch(base);
    rem_admin_set_ready(admin, false, "stopping");
    rc = 0;

out:
    for (unsigned i = 0; i < n_init; i++)
        rem_worker_stop(&workers[i]);
    for (unsigned i = 0; i < n_init; i++)
        rem_server_worker_dispose(&workers[i]);
    rem_admin_free(admin);
    rem_healthcheck_free(hc);
    rem_metrics_layout_free(ml);
    if (sigterm)
        event_free(sigterm);
    if (sigint)
        event_free(sigint);
    if (base)
        event_base_free(base);
    free(workers);
    free(ports);
    rem_config_unref(cfg);
    if (rc == 0)
        rem_log_info("stopped");
    return rc;
}
