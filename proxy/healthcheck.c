/* SPDX-License-Identifier: Apache-2.0
 * healthcheck: periodic GET probes with libevent's evhttp client, rise/fall per endpoint. A
 * Unix-socket endpoint, and an endpoint of a TLS upstream, get a small probe of their own (one
 * connection per probe, the status line read): libevent 2.1's evhttp_connection only connects by
 * host and port, and redoes the connect itself even over a bufferevent it is given (an SSL
 * object cannot be connected twice). The TLS probe is a bufferevent_openssl over an SSL of the
 * upstream's client context (tls_client.c: the same trust, client certificate, SNI and name
 * checks as the upconns), offering ALPN http/1.1 whatever the upstream's protocol. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "config.h"
#include "error.h"
#include "healthcheck.h"
#include "io_tls.h"
#include "log.h"
#include "tls_client.h"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

struct hc_endpoint {
    struct rem_healthcheck *hc;         /* borrowed: the owner */
    size_t upstream;                    /* index in cfg->upstreams */
    const struct rem_cfg_endpoint *cfg; /* borrowed */
    char authority[300];
    struct evhttp_connection *conn; /* owned; NULL for a Unix socket */
    struct event *timer;            /* owned */
    struct evhttp_request *pending; /* owned by evhttp while in flight */
    struct rem_sockaddr unix_addr;  /* a Unix socket endpoint's address (len 0: TCP) */
    struct rem_tls_client *tls;     /* a reference: the upstream's TLS client, NULL: none */
    struct bufferevent *probe;      /* owned: the Unix socket or TLS probe in flight */
    struct event *probe_timeout;    /* owned: its timeout (Unix socket and TLS only) */
    bool probe_connected;
    bool checked; /* at least one result */
    bool healthy;
    uint32_t ok_streak, fail_streak;
    char last[96]; /* last failure, for /readyz */
};

struct rem_healthcheck {
    struct event_base *base; /* borrowed */
    struct rem_config *cfg;  /* a reference */
    struct hc_endpoint *eps; /* owned */
    size_t n_eps;
    int8_t *states;         /* owned, per upstream */
    struct evdns_base *dns; /* owned: resolves endpoint names without blocking (evdns) */
};

static void update_upstream(struct rem_healthcheck *h, size_t u)
{
    int8_t st = 0;
    for (size_t i = 0; i < h->n_eps; i++)
        if (h->eps[i].upstream == u && h->eps[i].healthy)
            st = 1;
    if (h->states[u] != st)
        rem_log_info("upstream %s is now %s", h->cfg->upstreams[u].name,
                     st ? "healthy" : "unhealthy");
    h->states[u] = st;
}

static void record(struct hc_endpoint *e, bool ok, const char *why)
{
    const struct rem_cfg_health_check *c = &e->hc->cfg->upstreams[e->upstream].health_check;
    if (ok) {
        e->ok_streak++;
        e->fail_streak = 0;
        if (!e->healthy && (!e->checked || e->ok_streak >= c->rise))
            e->healthy = true;
    } else {
        e->fail_streak++;
        e->ok_streak = 0;
        snprintf(e->last, sizeof(e->last), "%s", why);
        if (e->healthy && e->fail_streak >= c->fall)
            e->healthy = false;
    }
    e->checked = true;
    update_upstream(e->hc, e->upstream);
}

static void on_response(struct evhttp_request *req, void *arg)
{
    struct hc_endpoint *e = arg;
    char why[64];
    e->pending = NULL;
    int code = req ? evhttp_request_get_response_code(req) : 0;
    if (code >= 200 && code < 300) {
        record(e, true, NULL);
        return;
    }
    if (code)
        snprintf(why, sizeof(why), "HTTP %d", code);
    else
        snprintf(why, sizeof(why), "no response");
    record(e, false, why);
}

static void probe_end(struct hc_endpoint *e, bool ok, const char *why)
{
    bufferevent_free(e->probe);
    e->probe = NULL;
    event_del(e->probe_timeout);
    record(e, ok, why);
}

/* The status line decides (RFC 9112 4): "HTTP/1.x NNN"; the rest of the response is not read. */
static void on_probe_read(struct bufferevent *bev, void *arg)
{
    struct hc_endpoint *e = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    size_t n;
    char *line = evbuffer_readln(in, &n, EVBUFFER_EOL_CRLF);
    char why[64];
    if (!line) {
        if (evbuffer_get_length(in) > 1024)
            probe_end(e, false, "bad response");
        return;
    }
    int code = 0;
    if (n >= 12 && strncmp(line, "HTTP/1.", 7) == 0 && line[8] == ' ' && line[9] >= '1' &&
        line[9] <= '5' && line[10] >= '0' && line[10] <= '9' && line[11] >= '0' && line[11] <= '9')
        code = (line[9] - '0') * 100 + (line[10] - '0') * 10 + (line[11] - '0');
    free(line);
    if (code >= 200 && code < 300) {
        probe_end(e, true, NULL);
        return;
    }
    if (code)
        snprintf(why, sizeof(why), "HTTP %d", code);
    else
        snprintf(why, sizeof(why), "bad response");
    probe_end(e, false, why);
}

/* Why a TLS probe's handshake failed: the app's certificate, or OpenSSL's reason. */
static void tls_why(struct hc_endpoint *e, char *why, size_t len)
{
    SSL *ssl = bufferevent_openssl_get_ssl(e->probe);
    /* verify: false records a failed chain check too: no cause then (io_tls.c's rule). */
    long v = ssl && (SSL_get_verify_mode(ssl) & SSL_VERIFY_PEER) ? SSL_get_verify_result(ssl)
                                                                 : X509_V_OK;
    unsigned long err = bufferevent_get_openssl_error(e->probe);
    char r[160] = "the app closed the connection";
    if (v != X509_V_OK)
        snprintf(r, sizeof(r), "certificate verify failed: %s", X509_verify_cert_error_string(v));
    else if (err)
        ERR_error_string_n(err, r, sizeof(r));
    snprintf(why, len, "TLS handshake failed: %s", r);
}

static void on_probe_event(struct bufferevent *bev, short what, void *arg)
{
    struct hc_endpoint *e = arg;
    char why[256];
    if (what & BEV_EVENT_CONNECTED) { /* over TLS: once the handshake is done */
        e->probe_connected = true;
        return;
    }
    if (e->probe_connected) {
        probe_end(e, false, "no response");
        return;
    }
    /* A missing socket file or nothing listening: refused, as for a closed port. */
    SSL *ssl = e->tls ? bufferevent_openssl_get_ssl(bev) : NULL;
    if (ssl && bufferevent_getfd(bev) >= 0 && (what & BEV_EVENT_ERROR) &&
        (bufferevent_get_openssl_error(bev) ||
         ((SSL_get_verify_mode(ssl) & SSL_VERIFY_PEER) && SSL_get_verify_result(ssl) != X509_V_OK)))
        tls_why(e, why, sizeof(why));
    else
        snprintf(why, sizeof(why), "connect failed");
    probe_end(e, false, why);
}

static void on_probe_timeout(evutil_socket_t fd, short what, void *arg)
{
    probe_end(arg, false, "no response");
}

/* A bufferevent for one probe of e: over TLS (a fresh SSL object: the handshake may resume
 * nothing, every probe verifies) or plain. NULL: out of memory. */
static struct bufferevent *probe_new(struct hc_endpoint *e)
{
    if (!e->tls)
        return bufferevent_socket_new(e->hc->base, -1, BEV_OPT_CLOSE_ON_FREE);
    static const unsigned char alpn_h1[] = "\x08http/1.1";
    struct rem_io_tls_peer peer = rem_tls_client_peer(e->tls, e->cfg->host, NULL, NULL);
    SSL *ssl = rem_io_tls_client_ssl(e->tls->ctx, &peer);
    if (!ssl || SSL_set_alpn_protos(ssl, alpn_h1, sizeof(alpn_h1) - 1) != 0) {
        SSL_free(ssl);
        return NULL;
    }
    struct bufferevent *b = bufferevent_openssl_socket_new(
        e->hc->base, -1, ssl, BUFFEREVENT_SSL_CONNECTING, BEV_OPT_CLOSE_ON_FREE);
    if (!b) {
        SSL_free(ssl);
        return NULL;
    }
    /* The probe reads a status line; how the app then closes does not matter. */
    bufferevent_openssl_set_allow_dirty_shutdown(b, 1);
    return b;
}

static void probe(struct hc_endpoint *e, const struct rem_cfg_health_check *c)
{
    if (e->probe)
        return; /* the previous probe is still out; its timeout will answer */
    struct timeval to = {(time_t)(c->timeout_ms / 1000),
                         (suseconds_t)(c->timeout_ms % 1000) * 1000};
    e->probe = probe_new(e);
    if (!e->probe) {
        record(e, false, "cannot send");
        return;
    }
    bufferevent_setcb(e->probe, on_probe_read, NULL, on_probe_event, e);
    event_add(e->probe_timeout, &to);
    /* A refused or missing socket is reported through on_probe_event, from the loop, or here
     * at once (then the bufferevent is gone). A TLS endpoint's name resolves through evdns
     * (a numeric one needs no lookup). */
    e->probe_connected = false;
    int rc = e->unix_addr.len
                 ? bufferevent_socket_connect(e->probe, (struct sockaddr *)&e->unix_addr.ss,
                                              (int)e->unix_addr.len)
                 : bufferevent_socket_connect_hostname(e->probe, e->hc->dns, AF_UNSPEC,
                                                       e->cfg->host, e->cfg->port);
    if (rc < 0) {
        if (e->probe) /* else on_probe_event already answered */
            probe_end(e, false, "connect failed");
        return;
    }
    if (!e->probe)
        return;
    evbuffer_add_printf(bufferevent_get_output(e->probe),
                        "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: remora-healthcheck\r\n"
                        "Connection: close\r\n\r\n",
                        c->path, e->tls ? e->authority : "localhost");
    bufferevent_enable(e->probe, EV_READ | EV_WRITE);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    struct hc_endpoint *e = arg;
    const struct rem_cfg_health_check *c = &e->hc->cfg->upstreams[e->upstream].health_check;
    struct timeval iv = {(time_t)(c->interval_ms / 1000),
                         (suseconds_t)(c->interval_ms % 1000) * 1000};
    event_add(e->timer, &iv);
    if (e->unix_addr.len || e->tls) {
        probe(e, c);
        return;
    }
    if (e->pending)
        return; /* the previous probe is still out; its timeout will answer */
    struct evhttp_request *req = evhttp_request_new(on_response, e);
    if (!req)
        return;
    evhttp_add_header(evhttp_request_get_output_headers(req), "Host", e->authority);
    evhttp_add_header(evhttp_request_get_output_headers(req), "User-Agent", "remora-healthcheck");
    if (evhttp_make_request(e->conn, req, EVHTTP_REQ_GET, c->path) < 0) {
        /* evhttp frees req on failure */
        record(e, false, "cannot send");
        return;
    }
    e->pending = req;
}

/* The endpoint of prev that checks the same thing as e (same upstream name, endpoint and
 * health check settings), or NULL. */
static const struct hc_endpoint *same_in(const struct rem_healthcheck *prev,
                                         const struct hc_endpoint *e)
{
    const struct rem_cfg_upstream *u = &e->hc->cfg->upstreams[e->upstream];
    const struct rem_cfg_health_check *c = &u->health_check;
    for (size_t i = 0; prev && i < prev->n_eps; i++) {
        const struct hc_endpoint *o = &prev->eps[i];
        const struct rem_cfg_upstream *ou = &prev->cfg->upstreams[o->upstream];
        const struct rem_cfg_health_check *oc = &ou->health_check;
        if (strcmp(ou->name, u->name) == 0 && strcmp(o->authority, e->authority) == 0 &&
            strcmp(oc->path, c->path) == 0 && oc->interval_ms == c->interval_ms &&
            oc->timeout_ms == c->timeout_ms && oc->rise == c->rise && oc->fall == c->fall)
            return o;
    }
    return NULL;
}

struct rem_healthcheck *rem_healthcheck_new(struct event_base *base, struct rem_config *cfg,
                                            struct rem_tls_client *const *tls,
                                            const struct rem_healthcheck *prev)
{
    struct rem_healthcheck *h = rem_xcalloc(1, sizeof(*h));
    h->base = base;
    h->cfg = rem_config_ref(cfg);
    h->states = rem_xcalloc(cfg->n_upstreams ? cfg->n_upstreams : 1, sizeof(*h->states));
    size_t n = 0;
    for (size_t u = 0; u < cfg->n_upstreams; u++) {
        h->states[u] = cfg->upstreams[u].health_check.path ? 0 : -1;
        if (cfg->upstreams[u].health_check.path)
            n += cfg->upstreams[u].n_endpoints;
    }
    h->eps = rem_xcalloc(n ? n : 1, sizeof(*h->eps));
    bool names = false;
    for (size_t u = 0; u < cfg->n_upstreams; u++)
        for (size_t i = 0; cfg->upstreams[u].health_check.path && i < cfg->upstreams[u].n_endpoints;
             i++)
            names = names || cfg->upstreams[u].endpoints[i].is_name;
    if (names) {
        /* evhttp would otherwise resolve names with a blocking getaddrinfo on this loop. The
         * servers follow dns.resolvers, else resolv.conf (evdns also reads /etc/hosts). */
        h->dns = evdns_base_new(base, cfg->dns.n_resolvers ? 0 : EVDNS_BASE_INITIALIZE_NAMESERVERS);
        for (size_t i = 0; h->dns && i < cfg->dns.n_resolvers; i++) {
            char a[64];
            if (rem_sockaddr_str(&cfg->dns.resolvers[i], a, sizeof(a)) == 0)
                evdns_base_nameserver_ip_add(h->dns, a);
        }
        if (h->dns && cfg->dns.n_resolvers)
            evdns_base_load_hosts(h->dns, NULL);
        if (!h->dns)
            rem_log_warn("healthcheck: no async resolver; names resolve synchronously");
    }
    for (size_t u = 0; u < cfg->n_upstreams; u++) {
        const struct rem_cfg_upstream *up = &cfg->upstreams[u];
        if (!up->health_check.path)
            continue;
        for (size_t i = 0; i < up->n_endpoints; i++) {
            struct hc_endpoint *e = &h->eps[h->n_eps];
            e->hc = h;
            e->upstream = u;
            e->cfg = &up->endpoints[i];
            if (rem_cfg_endpoint_str(e->cfg, e->authority, sizeof(e->authority)) != 0)
                e->authority[0] = '\0';
            snprintf(e->last, sizeof(e->last), "waiting for the first health check");
            if (e->cfg->is_unix) {
                if (rem_parse_unix(e->cfg->host, &e->unix_addr, NULL) == 0)
                    e->probe_timeout = evtimer_new(base, on_probe_timeout, e);
            } else if (tls && tls[u]) {
                e->tls = rem_tls_client_ref(tls[u]);
                e->probe_timeout = evtimer_new(base, on_probe_timeout, e);
            } else {
                e->conn = evhttp_connection_base_new(base, h->dns, e->cfg->host, e->cfg->port);
            }
            e->timer = evtimer_new(base, on_timer, e);
            if ((!e->conn && !e->probe_timeout) || !e->timer) {
                rem_log_error("healthcheck: cannot set up %s", e->authority);
                h->n_eps++;
                rem_healthcheck_free(h);
                return NULL;
            }
            const struct hc_endpoint *o = same_in(prev, e);
            if (o) { /* a reload kept this check: its state carries over, no readiness flap */
                e->checked = o->checked;
                e->healthy = o->healthy;
                e->ok_streak = o->ok_streak;
                e->fail_streak = o->fail_streak;
                memcpy(e->last, o->last, sizeof(e->last));
                if (e->healthy)
                    h->states[u] = 1;
            }
            struct timeval to = {(time_t)(up->health_check.timeout_ms / 1000),
                                 (suseconds_t)(up->health_check.timeout_ms % 1000) * 1000};
            if (e->conn) {
                evhttp_connection_set_timeout_tv(e->conn, &to);
                evhttp_connection_set_retries(e->conn, 0);
            }
            struct timeval now = {0, 0};
            event_add(e->timer, &now);
            h->n_eps++;
        }
    }
    return h;
}

void rem_healthcheck_free(struct rem_healthcheck *h)
{
    if (!h)
        return;
    for (size_t i = 0; i < h->n_eps; i++) {
        if (h->eps[i].pending)
            evhttp_cancel_request(h->eps[i].pending);
        if (h->eps[i].conn)
            evhttp_connection_free(h->eps[i].conn);
        if (h->eps[i].timer)
            event_free(h->eps[i].timer);
        if (h->eps[i].probe)
            bufferevent_free(h->eps[i].probe);
        if (h->eps[i].probe_timeout)
            event_free(h->eps[i].probe_timeout);
        rem_tls_client_unref(h->eps[i].tls);
    }
    free(h->eps);
    free(h->states);
    rem_config_unref(h->cfg);
    if (h->dns)
        evdns_base_free(h->dns, 0);
    free(h);
}

const int8_t *rem_healthcheck_states(const struct rem_healthcheck *h)
{
    return h ? h->states : NULL;
}

bool rem_healthcheck_ready(const struct rem_healthcheck *h, char *reason, size_t len)
{
    if (!h)
        return true;
    for (size_t u = 0; u < h->cfg->n_upstreams; u++) {
        if (h->states[u] != 0)
            continue;
        const char *why = "unhealthy";
        for (size_t i = 0; i < h->n_eps; i++)
            if (h->eps[i].upstream == u)
                why = h->eps[i].last;
        snprintf(reason, len, "upstream %s: health check failing (%s)", h->cfg->upstreams[u].name,
                 why);
        return false;
    }
    return true;
}
