/* SPDX-License-Identifier: Apache-2.0
 * listener: SO_REUSEPORT listening sockets, one per worker and configured listener; a Unix
 * socket (no SO_REUSEPORT for AF_UNIX) is bound once and each worker accepts on its own dup.
 * Accept errors such as EMFILE pause accepting for a moment instead of spinning on a readable
 * listening socket the process cannot drain. */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/listener.h>
#include <openssl/ssl.h>

#include "config.h"
#include "conn.h"
#include "error.h"
#include "h1_down.h"
#include "h2_down.h"
#include "listener.h"
#include "log.h"
#include "metrics.h"
#include "worker.h"

#define REM_LISTEN_BACKLOG 4096
#define REM_ACCEPT_PAUSE_MS 100
#define REM_REFUSED_LOG_MS 1000 /* at most one line a second about refused handshakes */

struct rem_listener {
    struct rem_worker *worker;          /* borrowed */
    const struct rem_cfg_listener *cfg; /* borrowed from the worker's current config (a
                                           stopped listener's from the config it last had) */
    SSL_CTX *tls;                       /* a reference: the context new conns get (a conn's
                                           TLS session holds its own), NULL: plaintext */
    struct evconnlistener *evl;         /* owned, closes the fd */
    struct event *resume_ev;            /* owned */
    uint32_t n_conns;                   /* open conns accepted here */
    uint32_t limit;                     /* this worker's share of max_connections */
    bool full;                          /* accepting paused at the limit */
    uint64_t refused_unlogged;          /* TLS conns refused at max_tls_handshakes since the
                                           last log line about it */
    uint64_t refused_log_ms;            /* rem_now_ms() of that line */
    char path[sizeof(((struct sockaddr_un *)0)->sun_path)]; /* unix:/path: the socket file to
                                           remove when the socket closes, "" otherwise */
    dev_t path_dev; /* ... if it is still the file bind made */
    ino_t path_ino;
};

/* The file of a unix:/path listener, or NULL (TCP, abstract). */
static const char *socket_path(const struct rem_cfg_listener *cfg)
{
    const struct sockaddr_un *sun = (const struct sockaddr_un *)&cfg->addr.ss;
    return cfg->addr.ss.ss_family == AF_UNIX && sun->sun_path[0] ? sun->sun_path : NULL;
}

/* Removes the socket file once l stops listening, unless something else replaced it since. The
 * workers share the socket (dups): the first to stop removes it, the others find it gone. */
static void unlink_socket(struct rem_listener *l)
{
    struct stat st;
    if (!l->path[0])
        return;
    if (lstat(l->path, &st) == 0 && S_ISSOCK(st.st_mode) && st.st_dev == l->path_dev &&
        st.st_ino == l->path_ino && unlink(l->path) < 0 && errno != ENOENT)
        rem_log_warn("listener: cannot remove %s: %s", l->path, strerror(errno));
    l->path[0] = '\0';
}

/* The codec of a cleartext conn: h2c prior knowledge shares the listener with HTTP/1.1 and is
 * told apart by the 24-byte preface (RFC 9113 3.3, 3.4); anything else is HTTP/1.1 for the
 * conn's life. */
static const struct rem_down_ops *choose_codec(struct rem_conn *c, bool *need_more)
{
    if (rem_h2_down_detect(rem_conn_input(c), need_more))
        return &rem_h2_down_ops;
    return *need_more ? NULL : &rem_h1_down_ops;
}

/* The codec of a TLS conn, once its handshake is done: h2 when ALPN agreed on it (RFC 9113
 * 3.2), HTTP/1.1 for "http/1.1" or no ALPN. Never the preface: over TLS h2 is negotiated. */
static const struct rem_down_ops *choose_by_alpn(struct rem_conn *c, bool *need_more)
{
    size_t n;
    const char *p = rem_conn_alpn(c, &n);
    *need_more = false;
    return p && n == 2 && memcmp(p, "h2", 2) == 0 ? &rem_h2_down_tls_ops : &rem_h1_down_ops;
}

static void on_conn_closed(void *arg);

static const struct rem_conn_owner conn_owner = {
    .choose = choose_codec,
    .closed = on_conn_closed,
};

static const struct rem_conn_owner tls_conn_owner = {
    .choose = choose_by_alpn,
    .closed = on_conn_closed,
};

/* limits.max_tls_handshakes: with that many handshakes in progress on the worker, room is made
 * for a TLS conn just accepted by resetting the conn that has waited longest without sending
 * its whole ClientHello (rem_conn_evict_handshake: nothing was spent on it, and a live client
 * sends its ClientHello within a round trip). Only when every handshake in progress is past
 * its ClientHello (real TLS work under way) is the new conn itself reset, before anything is
 * read or any SSL object exists. So a flood of clients that connect and stall holds at most
 * `cap` SSL objects and cannot shut new clients out: it would have to stall conns faster than
 * `cap` per client round trip. A reset, not a FIN: the client learns at once, and the kernel
 * keeps no TIME_WAIT. Either way counted as result "refused"; logged once a second at most
 * (per listener and worker) with the count since the last line. Returns whether fd was refused
 * (and closed). */
static bool refuse_handshake(struct rem_listener *l, int fd)
{
    struct rem_worker *w = l->worker;
    uint32_t cap = w->cfg->limits.max_tls_handshakes;
    if (!l->tls || cap == 0 || w->n_handshakes < cap)
        return false;
    bool evicted = rem_conn_evict_handshake(w);
    if (!evicted) {
        struct linger lg = {1, 0};
        (void)setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
        close(fd);
        rem_metrics_record_tls_handshake(w->metrics, REM_TLS_REFUSED, 0, false);
    }
    l->refused_unlogged++;
    uint64_t now = rem_now_ms();
    if (now - l->refused_log_ms >= REM_REFUSED_LOG_MS) {
        rem_log_warn("listener %s: worker %u reset %llu TLS connection(s) since the last such "
                     "line (stalled before their ClientHello, or new ones when none was): %u "
                     "handshakes in progress (limits.max_tls_handshakes)",
                     l->cfg->name, w->id, (unsigned long long)l->refused_unlogged, w->n_handshakes);
        l->refused_unlogged = 0;
        l->refused_log_ms = now;
    }
    return !evicted;
}

/* Takes an accepted fd: a conn over TCP, a Unix socket or TLS. */
static void accept_conn(struct rem_listener *l, int fd, const struct sockaddr *sa, socklen_t len)
{
    if (refuse_handshake(l, fd)) {
        on_conn_closed(l);
        return;
    }
    rem_conn_accept(l->worker, l->tls ? &tls_conn_owner : &conn_owner, l, l->cfg, fd, sa, len,
                    l->tls);
}

static void on_accept(struct evconnlistener *evl, evutil_socket_t fd, struct sockaddr *sa,
                      int salen, void *arg)
{
    struct rem_listener *l = arg;
    l->n_conns++;
    if (l->n_conns >= l->limit && !l->full) {
        /* At the limit: the kernel backlog holds new connections until some close. */
        l->full = true;
        evconnlistener_disable(evl);
    }
    accept_conn(l, fd, sa, (socklen_t)salen);
}

static void on_conn_closed(void *arg)
{
    struct rem_listener *l = arg;
    l->n_conns--;
    if (l->full && l->n_conns < l->limit) {
        l->full = false;
        if (l->evl)
            evconnlistener_enable(l->evl);
    }
}

static void on_resume(evutil_socket_t fd, short what, void *arg)
{
    struct rem_listener *l = arg;
    if (!l->full && l->evl)
        evconnlistener_enable(l->evl);
}

static void on_accept_error(struct evconnlistener *evl, void *arg)
{
    struct rem_listener *l = arg;
    int err = EVUTIL_SOCKET_ERROR();
    rem_log_warn("listener %s: accept failed: %s; pausing accepts for %d ms", l->cfg->name,
                 strerror(err), REM_ACCEPT_PAUSE_MS);
    evconnlistener_disable(evl);
    struct timeval tv = {0, REM_ACCEPT_PAUSE_MS * 1000};
    evtimer_add(l->resume_ev, &tv);
}

/* A socket file at path left by a process that is gone (SIGKILL, a crash) would fail bind with
 * EADDRINUSE: it is removed when nothing accepts on it (connect refused). Anything else at the
 * path is an error: remora never removes a file that is not a socket, nor a live socket.
 * Returns 0, or -1 with the reason logged. */
static int clear_stale(const struct rem_cfg_listener *cfg, const char *path)
{
    struct stat st;
    if (lstat(path, &st) < 0) {
        if (errno == ENOENT)
            return 0;
        rem_log_error("listener %s: cannot listen on %s: %s", cfg->name, cfg->address,
                      strerror(errno));
        return -1;
    }
    if (!S_ISSOCK(st.st_mode)) {
        rem_log_error("listener %s: cannot listen on %s: %s exists and is not a socket (not "
                      "replaced)",
                      cfg->name, cfg->address, path);
        return -1;
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        rem_log_error("listener %s: cannot listen on %s: %s", cfg->name, cfg->address,
                      strerror(errno));
        return -1;
    }
    int rc = connect(fd, (const struct sockaddr *)&cfg->addr.ss, cfg->addr.len);
    int err = rc < 0 ? errno : 0;
    close(fd);
    if (err != ECONNREFUSED) {
        /* Accepted (or EAGAIN: a full backlog) means a live listener. */
        rem_log_error("listener %s: cannot listen on %s: %s", cfg->name, cfg->address,
                      err ? strerror(err) : "another process is listening on it");
        return -1;
    }
    if (unlink(path) < 0 && errno != ENOENT) {
        rem_log_error("listener %s: cannot remove the stale socket %s: %s", cfg->name, path,
                      strerror(errno));
        return -1;
    }
    rem_log_info("listener %s: removed the stale socket %s", cfg->name, path);
    return 0;
}

/* bind(2) creates the file with 0777 & ~umask; chmod before listen(2), so no connect can
 * succeed under the looser mode. */
static int bind_unix(const struct rem_cfg_listener *cfg)
{
    const char *path = socket_path(cfg);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    bool bound = false;
    if (fd < 0)
        goto fail;
    if (path && clear_stale(cfg, path) < 0) {
        close(fd);
        return -1;
    }
    if (bind(fd, (const struct sockaddr *)&cfg->addr.ss, cfg->addr.len) < 0)
        goto fail;
    bound = true;
    if (path && chmod(path, (mode_t)cfg->mode) < 0)
        goto fail;
    if (listen(fd, REM_LISTEN_BACKLOG) < 0)
        goto fail;
    return fd;

fail:
    rem_log_error("listener %s: cannot listen on %s: %s", cfg->name, cfg->address, strerror(errno));
    if (bound && path)
        (void)unlink(path);
    if (fd >= 0)
        close(fd);
    return -1;
}

int rem_listener_bind(const struct rem_cfg_listener *cfg, uint16_t *port)
{
    struct rem_sockaddr a = cfg->addr;
    int fd = -1, one = 1;
    if (a.ss.ss_family == AF_UNIX) {
        *port = 0;
        return bind_unix(cfg);
    }
    if (*port) {
        if (a.ss.ss_family == AF_INET6)
            ((struct sockaddr_in6 *)&a.ss)->sin6_port = htons(*port);
        else
            ((struct sockaddr_in *)&a.ss)->sin_port = htons(*port);
    }
    fd = socket(a.ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        goto fail;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0)
        goto fail;
    if (a.ss.ss_family == AF_INET6)
        (void)setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    if (bind(fd, (struct sockaddr *)&a.ss, a.len) < 0)
        goto fail;
    if (listen(fd, REM_LISTEN_BACKLOG) < 0)
        goto fail;
    struct rem_sockaddr bound = {.len = sizeof(bound.ss)};
    if (getsockname(fd, (struct sockaddr *)&bound.ss, &bound.len) < 0)
        goto fail;
    *port = ntohs(bound.ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound.ss)->sin6_port
                                                 : ((struct sockaddr_in *)&bound.ss)->sin_port);
    return fd;

fail:
    rem_log_error("listener %s: cannot listen on %s: %s", cfg->name, cfg->address, strerror(errno));
    if (fd >= 0)
        close(fd);
    return -1;
}

int rem_listener_dup(const struct rem_cfg_listener *cfg, int fd)
{
    int d = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (d < 0)
        rem_log_error("listener %s: cannot share %s: %s", cfg->name, cfg->address, strerror(errno));
    return d;
}

void rem_listener_unbind(const struct rem_cfg_listener *cfg)
{
    struct stat st;
    const char *path = socket_path(cfg);
    if (path && lstat(path, &st) == 0 && S_ISSOCK(st.st_mode))
        (void)unlink(path);
}

/* l's conns from now on get tls (a reference is taken; NULL: plaintext). */
static void set_tls(struct rem_listener *l, SSL_CTX *tls)
{
    if (tls)
        SSL_CTX_up_ref(tls);
    SSL_CTX_free(l->tls);
    l->tls = tls;
}

struct rem_listener *rem_listener_new(struct rem_worker *w, const struct rem_cfg_listener *cfg,
                                      int fd, unsigned n_workers, SSL_CTX *tls)
{
    struct rem_listener *l = rem_xcalloc(1, sizeof(*l));
    l->worker = w;
    l->cfg = cfg;
    set_tls(l, tls);
    l->limit = rem_worker_share(cfg->max_connections, n_workers);
    const char *path = socket_path(cfg);
    struct stat st;
    if (path && lstat(path, &st) == 0) {
        snprintf(l->path, sizeof(l->path), "%s", path);
        l->path_dev = st.st_dev;
        l->path_ino = st.st_ino;
    }
    /* Backlog 0: the socket already listens (REM_LISTEN_BACKLOG); -1 would listen() again with
     * libevent's 128. */
    l->evl = evconnlistener_new(w->loop.base, on_accept, l, LEV_OPT_CLOSE_ON_FREE, 0, fd);
    if (!l->evl)
        goto fail;
    fd = -1; /* owned by evl */
    evconnlistener_set_error_cb(l->evl, on_accept_error);
    l->resume_ev = evtimer_new(w->loop.base, on_resume, l);
    if (!l->resume_ev)
        goto fail;
    return l;

fail:
    rem_log_error("listener %s: out of memory", cfg->name);
    if (fd >= 0)
        close(fd);
    rem_listener_free(l);
    return NULL;
}

void rem_listener_update(struct rem_listener *l, const struct rem_cfg_listener *cfg,
                         unsigned n_workers, SSL_CTX *tls)
{
    l->cfg = cfg;
    set_tls(l, tls);
    l->limit = rem_worker_share(cfg->max_connections, n_workers);
    if (l->full && l->n_conns < l->limit) {
        l->full = false;
        if (l->evl)
            evconnlistener_enable(l->evl);
    } else if (!l->full && l->evl && l->n_conns >= l->limit) {
        l->full = true;
        evconnlistener_disable(l->evl);
    }
}

uint32_t rem_listener_conns(const struct rem_listener *l)
{
    return l->n_conns;
}

void rem_listener_stop(struct rem_listener *l)
{
    if (!l->evl)
        return;
    /* What the kernel already completed is in this socket's backlog: a close would reset it,
     * so it is accepted (and served, drained) first; then the socket closes and the kernel
     * refuses new connections (RST to a SYN), never accepting one to reset it. */
    evutil_socket_t fd = evconnlistener_get_fd(l->evl);
    evconnlistener_disable(l->evl);
    event_del(l->resume_ev);
    for (;;) {
        struct sockaddr_storage ss;
        socklen_t len = sizeof(ss);
        int cfd = accept4(fd, (struct sockaddr *)&ss, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (cfd < 0 && (errno == EINTR || errno == ECONNABORTED))
            continue; /* one aborted connection: the rest of the backlog is still there */
        if (cfd < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                rem_log_warn("listener %s: accepting the backlog before closing: %s; the rest "
                             "is reset",
                             l->cfg->name, strerror(errno));
            break;
        }
        l->n_conns++;
        accept_conn(l, cfd, (struct sockaddr *)&ss, len);
    }
    evconnlistener_free(l->evl); /* closes the socket */
    l->evl = NULL;
    unlink_socket(l);
    rem_log_info("listener %s: closed", l->cfg->name);
}

void rem_listener_free(struct rem_listener *l)
{
    if (!l)
        return;
    if (l->evl) {
        evconnlistener_free(l->evl);
        unlink_socket(l);
    }
    if (l->resume_ev)
        event_free(l->resume_ev);
    SSL_CTX_free(l->tls);
    free(l);
}
