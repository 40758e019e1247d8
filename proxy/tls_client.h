/* SPDX-License-Identifier: Apache-2.0
 * tls_client: TLS toward an upstream (upstreams[].tls). A `struct rem_tls_client` is the client
 * SSL_CTX of one TLS upstream (trust, client certificate, versions and suites, the ALPN offer
 * its protocol needs) with the names to send and verify, built from the files on the main
 * thread for each server plan (start, reload, a TLS file change) and only read after: every
 * worker's cluster of that upstream takes a reference and connects through
 * rem_tls_client_connect. It also keeps, per endpoint and per worker, the last session the app
 * gave (the endpoint holds it; cluster.c), offered on the next connect. Knows nothing of
 * upconns or codecs; the handshake itself is io_tls.c's. */
#ifndef REM_TLS_CLIENT_H
#define REM_TLS_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "io_tls.h"

struct ssl_ctx_st;
struct ssl_session_st;
struct rem_cfg_upstream;
struct rem_endpoint;
struct rem_loop;
struct rem_transport;
struct rem_transport_cbs;

struct rem_tls_client {
    int refs;               /* atomic: the plan's and each cluster's */
    uint64_t id;            /* distinct for every client built: an endpoint's session from an
                               older one (other trust) is never offered to this one */
    struct ssl_ctx_st *ctx; /* owned */
    char *sni;              /* owned: upstreams[].tls.sni, NULL: each endpoint's host */
    bool verify;            /* chain and name checked (the context's verify mode too) */
    const char *alpn;       /* static: the protocol the app must select ("h2"), NULL: any */
    uint64_t trust;         /* a hash of what verification and remora's identity rest on (verify,
                               sni, the bytes of ca, cert and key): a reload that changes it
                               closes the idle upconns made under the old (rem_cluster_retrust) */
};

/* Builds the client of TLS upstream u (u->tls not NULL), reading its ca, cert and key files
 * (blocking: the main thread, at start, reload or --check). Returns it with one reference, or
 * NULL with err holding one line that names the upstream, the key ("tls.ca", "tls.cert",
 * "tls.key") and file at fault and OpenSSL's reason: a file that cannot be read, a ca file with
 * no PEM certificate, a certificate or key that cannot be used, a key that does not match the
 * certificate. */
struct rem_tls_client *rem_tls_client_new(const struct rem_cfg_upstream *u, char *err,
                                          size_t errlen);
/* References (thread-safe); unref frees the client and drops its context reference (connects
 * in progress hold their own). NULL-safe. */
struct rem_tls_client *rem_tls_client_ref(struct rem_tls_client *c);
void rem_tls_client_unref(struct rem_tls_client *c);
/* rem_tls_client_unref for an opaque argument (rem_cluster_set_connector's release). */
void rem_tls_client_release(void *c);

/* What a connection to host (an endpoint's configured host: a name or a numeric address)
 * sends and verifies under c: SNI (sni, else host when it is a name), the name to verify (sni or
 * host) or, for an address without sni, the address (its iPAddress SAN); nothing verified with
 * verify off; c's alpn; session offered (NULL: none) and app_data as given. The strings are
 * borrowed from c and host. */
struct rem_io_tls_peer rem_tls_client_peer(const struct rem_tls_client *c, const char *host,
                                           struct ssl_session_st *session, void *app_data);

/* A rem_cluster_connect_fn (connect_arg: a struct rem_tls_client): connects t to ep over TLS
 * with SNI (sni, else ep's host when it is a name), verification (sni or ep's host name; an
 * address endpoint without sni: its iPAddress SAN) and ep's last session of this client
 * offered. Worker thread. Returns 0, -REM_E_SYS or -REM_E_NOMEM as rem_io_tls_connect. */
int rem_tls_client_connect(struct rem_transport *t, struct rem_loop *loop, struct rem_endpoint *ep,
                           const struct rem_transport_cbs *cbs, void *arg, size_t read_high,
                           size_t write_high, void *connect_arg);

#endif
