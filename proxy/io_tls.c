/* SPDX-License-Identifier: Apache-2.0
 * io_tls: an SSL object over a socket under a transport. OpenSSL's socket BIO does the
 * recv/send; a "want" from OpenSSL becomes EAGAIN (data path) or the readiness the handshake
 * waits for. The error queue is per thread: every call clears it first, so SSL_get_error
 * describes that call only. */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509_vfy.h>

#include "error.h"
#include "io_tcp.h"
#include "io_tls.h"
#include "log.h"
#include "tls.h"
#include "transport.h"

/* Why a client handshake failed (rem_io_tls_failure). */
enum tls_why {
    WHY_NONE = 0,
    WHY_VERIFY, /* the app's certificate: detail is the X509_V_ERR_* code */
    WHY_SSL,    /* a protocol error: detail is OpenSSL's packed error code */
    WHY_CLOSED, /* the app closed the connection (detail: errno, 0 for a plain FIN) */
    WHY_ALPN,   /* the app did not select the protocol required */
};

struct tls_io {
    SSL *ssl;   /* owned */
    bool fatal; /* a fatal error happened: no close_notify (SSL_shutdown must not run) */
    bool reset; /* the close must look like an error: no close_notify either */
    /* Client side only (rem_io_tls_connect). */
    bool tcp_up;      /* the TCP connect completed: the TLS handshake runs */
    const char *alpn; /* the protocol the app must select (static), NULL: any */
    enum tls_why why;
    unsigned long detail;
};

static struct tls_io *tls_of(const struct rem_transport *t)
{
    return t->io_ctx;
}

/* The reason of the last OpenSSL error on this thread, for a debug line. */
static const char *ssl_reason(char *buf, size_t len)
{
    unsigned long e = ERR_peek_last_error();
    if (!e)
        return "no reason given";
    ERR_error_string_n(e, buf, len);
    return buf;
}

/* An SSL call failed with SSL_get_error's e: the errno it stands for (EAGAIN for a "want"). */
static int failure_errno(struct tls_io *x, int e)
{
    switch (e) {
    case SSL_ERROR_WANT_READ:
    case SSL_ERROR_WANT_WRITE:
        return EAGAIN;
    case SSL_ERROR_SYSCALL:
        x->fatal = true;
        return errno ? errno : ECONNRESET;
    default: /* SSL_ERROR_SSL: a protocol error or a bad record */
        x->fatal = true;
        return EPROTO;
    }
}

/* The client's address for a log line ("?" when it cannot be told). */
static const char *peer_of(int fd, char *buf, size_t len)
{
    struct sockaddr_storage ss;
    ss.ss_family = AF_UNSPEC; /* clang-tidy: getpeername's fill is not modelled */
    socklen_t sl = sizeof(ss);
    const void *a = NULL;
    if (getpeername(fd, (struct sockaddr *)&ss, &sl) == 0)
        a = ss.ss_family == AF_INET6  ? (const void *)&((struct sockaddr_in6 *)&ss)->sin6_addr
            : ss.ss_family == AF_INET ? (const void *)&((struct sockaddr_in *)&ss)->sin_addr
                                      : NULL;
    if (!a || !inet_ntop(ss.ss_family, a, buf, (socklen_t)len))
        snprintf(buf, len, "?");
    return buf;
}

/* The verification failure of ssl's handshake, X509_V_OK when there is none or nothing was to
 * be verified: without SSL_VERIFY_PEER (verify: false, a listener without client_ca) OpenSSL
 * still records a chain check no trust store could pass, which is no cause of anything. */
static long verify_failure(const SSL *ssl)
{
    return (SSL_get_verify_mode(ssl) & SSL_VERIFY_PEER) ? SSL_get_verify_result(ssl) : X509_V_OK;
}

/* One SSL_do_handshake step: 0 done, REM_IO_WANT_READ / _WRITE to wait for, or -1 with *e set
 * to SSL_get_error's code (the error queue and errno kept for the caller). */
static int handshake_step(struct tls_io *x, int *e)
{
    ERR_clear_error();
    errno = 0;
    int rc = SSL_do_handshake(x->ssl);
    if (rc == 1)
        return 0;
    *e = SSL_get_error(x->ssl, rc);
    if (*e == SSL_ERROR_WANT_READ)
        return REM_IO_WANT_READ;
    if (*e == SSL_ERROR_WANT_WRITE)
        return REM_IO_WANT_WRITE;
    return -1;
}

static int tls_handshake(struct rem_transport *t)
{
    struct tls_io *x = tls_of(t);
    int e = 0;
    int rc = handshake_step(x, &e);
    if (rc >= 0)
        return rc;
    if (e == SSL_ERROR_ZERO_RETURN) {
        x->fatal = true;
        return -ECONNRESET; /* the client closed before the handshake completed */
    }
    int err = failure_errno(x, e);
    /* A client certificate refused (mTLS) is worth an info line naming the client: OpenSSL's
     * verify reason says why. */
    long v = verify_failure(x->ssl);
    char peer[INET6_ADDRSTRLEN];
    if (v != X509_V_OK) {
        rem_log_info("tls: handshake failed: client certificate: %s (client %s)",
                     X509_verify_cert_error_string(v), peer_of(t->fd, peer, sizeof(peer)));
        return -err;
    }
    if (ERR_GET_REASON(ERR_peek_error()) == SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE) {
        rem_log_info("tls: handshake failed: no client certificate (tls.require_client_cert; "
                     "client %s)",
                     peer_of(t->fd, peer, sizeof(peer)));
        return -err;
    }
    char buf[256];
    rem_log_debug("tls: handshake failed: %s",
                  e == SSL_ERROR_SSL ? ssl_reason(buf, sizeof(buf)) : strerror(err));
    return -err;
}

static ssize_t tls_recv(struct rem_transport *t, void *buf, size_t n)
{
    struct tls_io *x = tls_of(t);
    size_t got = 0;
    ERR_clear_error();
    errno = 0;
    if (SSL_read_ex(x->ssl, buf, n, &got) == 1)
        return (ssize_t)got;
    int e = SSL_get_error(x->ssl, 0);
    /* close_notify, or (SSL_OP_IGNORE_UNEXPECTED_EOF) a FIN without one: HTTP's own framing
     * tells a truncated request from a complete one, as over TCP. */
    if (e == SSL_ERROR_ZERO_RETURN)
        return 0;
    errno = failure_errno(x, e);
    return -1;
}

/* The largest TLS record's plaintext (RFC 8446 5.1): what one SSL_write_ex sends at most. */
#define TLS_RECORD 16384

/* Where small chains are gathered into one record; per worker thread, used only inside one
 * tls_send call. */
static _Thread_local unsigned char gather_buf[TLS_RECORD];

/* Copies up to TLS_RECORD bytes of iov from chain i, offset off, into gather_buf: how many. */
static size_t gather(const struct iovec *iov, int iovcnt, int i, size_t off)
{
    size_t n = 0;
    for (; i < iovcnt && n < TLS_RECORD; i++, off = 0) {
        size_t c = iov[i].iov_len - off;
        if (c > TLS_RECORD - n)
            c = TLS_RECORD - n;
        memcpy(gather_buf + n, (const char *)iov[i].iov_base + off, c);
        n += c;
    }
    return n;
}

/* SSL_write_ex over the iovec, record by record (SSL_MODE_ENABLE_PARTIAL_WRITE: each call
 * returns once a record is out), until OpenSSL wants the socket. Chains shorter than a record
 * followed by more are gathered into one record first (a response's head, its body chunks and
 * the next response's head: one record and one write(2) instead of one each); a long chain is
 * written in place. After a "want", OpenSSL expects the same bytes again, at least as many
 * (SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER lets them move): the transport retries from the first
 * byte it was not told was written, its output only grows at the end, and gathering from the
 * same start takes at least as many bytes as before, so they are. */
static ssize_t tls_send(struct rem_transport *t, const struct iovec *iov, int iovcnt)
{
    struct tls_io *x = tls_of(t);
    size_t total = 0, off = 0;
    int i = 0;
    while (i < iovcnt) {
        size_t left = iov[i].iov_len - off;
        if (left == 0) {
            i++;
            off = 0;
            continue;
        }
        const char *p = (const char *)iov[i].iov_base + off;
        size_t len = left;
        if (left < TLS_RECORD && i + 1 < iovcnt) {
            len = gather(iov, iovcnt, i, off);
            p = (const char *)gather_buf;
        }
        for (size_t done = 0; done < len;) {
            size_t w = 0;
            ERR_clear_error();
            errno = 0;
            if (SSL_write_ex(x->ssl, p + done, len - done, &w) != 1) {
                int err = failure_errno(x, SSL_get_error(x->ssl, 0));
                if (total + done > 0) /* an error shows again on the next call */
                    return (ssize_t)(total + done);
                errno = err;
                return -1;
            }
            done += w;
        }
        total += len;
        /* Past the len bytes just written. */
        for (size_t adv = len; adv > 0;) {
            size_t c = iov[i].iov_len - off;
            if (c > adv) {
                off += adv;
                break;
            }
            adv -= c;
            i++;
            off = 0;
        }
    }
    return (ssize_t)total;
}

/* close_notify (RFC 8446 6.1), then FIN. When the alert cannot be written now (the socket is
 * full, which an empty output makes unlikely) no FIN follows: a FIN behind half an alert
 * record would look like an attack to the client; the close after the linger ends it. */
static void tls_shutdown(struct rem_transport *t)
{
    struct tls_io *x = tls_of(t);
    if (!x->fatal && !x->reset && SSL_is_init_finished(x->ssl)) {
        ERR_clear_error();
        int rc = SSL_shutdown(x->ssl);
        if (rc < 0) {
            int e = SSL_get_error(x->ssl, rc);
            if (e == SSL_ERROR_WANT_WRITE)
                return;
            x->fatal = true;
        }
    }
    (void)shutdown(t->fd, SHUT_WR);
}

/* With read-ahead, OpenSSL holds whole records it read past the one returned (SSL_pending
 * counts only a record already decrypted): SSL_has_pending says either. A partial record makes
 * it true too; the read it causes gets EAGAIN once and then the fd's readiness rules. */
static bool tls_pending(const struct rem_transport *t)
{
    return SSL_has_pending(tls_of(t)->ssl) == 1;
}

static const char *tls_alpn(const struct rem_transport *t, size_t *len)
{
    const unsigned char *p = NULL;
    unsigned int n = 0;
    SSL_get0_alpn_selected(tls_of(t)->ssl, &p, &n);
    *len = n;
    return n ? (const char *)p : NULL;
}

static const char *tls_session(const struct rem_transport *t, bool *resumed)
{
    const SSL *ssl = tls_of(t)->ssl;
    *resumed = SSL_session_reused(ssl) == 1;
    return SSL_get_version(ssl);
}

static struct rem_identity *tls_peer_identity(const struct rem_transport *t)
{
    return rem_tls_peer_identity(tls_of(t)->ssl);
}

static void tls_reset(struct rem_transport *t)
{
    struct linger lg = {1, 0};
    tls_of(t)->reset = true;
    (void)setsockopt(t->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
}

static void tls_close(struct rem_transport *t)
{
    if (t->fd >= 0)
        close(t->fd);
}

static void tls_free(struct rem_transport *t)
{
    struct tls_io *x = tls_of(t);
    if (!x)
        return;
    /* A client's session stays resumable when the connection merely closes (an idle upconn
     * sends no close_notify): SSL_free would otherwise mark it not resumable (RFC 2246's rule,
     * gone since RFC 5246), and it is the one the endpoint keeps (tls_client.c). A fatal error
     * still spoils it. */
    if (x->tcp_up && !x->fatal && SSL_is_init_finished(x->ssl))
        SSL_set_shutdown(x->ssl, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
    SSL_free(x->ssl); /* its socket BIO does not own the fd (SSL_set_fd: BIO_NOCLOSE) */
    free(x);
}

/* The client handshake: the TCP connect's completion, then TLS. Every failure after the TCP
 * connect is -EPROTO (the upconn's upstream_tls), its cause kept for rem_io_tls_failure; a TCP
 * failure stays its errno (a connect failure). */
static int tls_connect_handshake(struct rem_transport *t)
{
    struct tls_io *x = tls_of(t);
    if (!x->tcp_up) {
        int rc = rem_io_tcp_connected(t);
        if (rc != 0)
            return rc;
        x->tcp_up = true;
        if (SSL_set_fd(x->ssl, t->fd) != 1) {
            x->fatal = true;
            ERR_clear_error();
            return -ENOMEM;
        }
    }
    int e = 0;
    int rc = handshake_step(x, &e);
    if (rc == 0) {
        const unsigned char *p = NULL;
        unsigned int n = 0;
        SSL_get0_alpn_selected(x->ssl, &p, &n);
        if (x->alpn && (n != strlen(x->alpn) || memcmp(p, x->alpn, n) != 0)) {
            x->why = WHY_ALPN;
            x->fatal = true; /* no close_notify: the app is not spoken to any further */
            return -EPROTO;
        }
        return 0;
    }
    if (rc > 0)
        return rc;
    x->fatal = true;
    long v = verify_failure(x->ssl);
    unsigned long ssl_err = ERR_peek_last_error();
    if (v != X509_V_OK) {
        x->why = WHY_VERIFY;
        x->detail = (unsigned long)v;
    } else if (e == SSL_ERROR_SSL && ssl_err) {
        x->why = WHY_SSL;
        x->detail = ssl_err;
    } else {
        x->why = WHY_CLOSED;
        x->detail = (unsigned long)errno;
    }
    ERR_clear_error();
    return -EPROTO;
}

static const struct rem_io_ops tls_client_ops = {
    .name = "tls",
    .recv = tls_recv,
    .send = tls_send,
    .handshake = tls_connect_handshake,
    .shutdown = tls_shutdown,
    .pending = tls_pending,
    .alpn = tls_alpn,
    .session = tls_session,
    .reset = tls_reset,
    .close = tls_close,
    .free = tls_free,
};

/* OpenSSL's server state machine stays in TLS_ST_BEFORE until a whole ClientHello is in. */
static bool tls_awaiting_hello(const struct rem_transport *t)
{
    return SSL_get_state(tls_of(t)->ssl) == TLS_ST_BEFORE;
}

static const struct rem_io_ops tls_ops = {
    .name = "tls",
    .recv = tls_recv,
    .send = tls_send,
    .handshake = tls_handshake,
    .shutdown = tls_shutdown,
    .pending = tls_pending,
    .alpn = tls_alpn,
    .session = tls_session,
    .peer_identity = tls_peer_identity,
    .awaiting_hello = tls_awaiting_hello,
    .reset = tls_reset,
    .close = tls_close,
    .free = tls_free,
};

int rem_io_tls_accept(struct rem_transport *t, struct rem_loop *loop, int fd, SSL_CTX *ctx,
                      const struct rem_transport_cbs *cbs, void *arg, size_t read_high,
                      size_t write_high)
{
    int one = 1;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    struct tls_io *x = calloc(1, sizeof(*x));
    if (x)
        x->ssl = SSL_new(ctx);
    if (!x || !x->ssl || SSL_set_fd(x->ssl, fd) != 1) {
        if (x)
            SSL_free(x->ssl);
        free(x);
        close(fd);
        ERR_clear_error();
        return -REM_E_NOMEM;
    }
    SSL_set_accept_state(x->ssl);
    /* The ClientHello comes first: the handshake waits for input. */
    return rem_transport_setup(t, loop, &tls_ops, fd, x, cbs, arg, read_high, write_high,
                               REM_IO_WANT_READ);
}

SSL *rem_io_tls_client_ssl(SSL_CTX *ctx, const struct rem_io_tls_peer *peer)
{
    SSL *ssl = SSL_new(ctx);
    bool ok = ssl != NULL;
    if (ok && peer->sni)
        ok = SSL_set_tlsext_host_name(ssl, peer->sni) == 1;
    if (ok && peer->host)
        ok = SSL_set1_host(ssl, peer->host) == 1;
    if (ok && peer->ip)
        ok = X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), peer->ip) == 1;
    if (ok && peer->session)
        ok = SSL_set_session(ssl, peer->session) == 1;
    if (!ok) {
        SSL_free(ssl);
        ERR_clear_error();
        return NULL;
    }
    SSL_set_app_data(ssl, peer->app_data);
    SSL_set_connect_state(ssl);
    return ssl;
}

int rem_io_tls_connect(struct rem_transport *t, struct rem_loop *loop, const struct sockaddr *sa,
                       socklen_t salen, SSL_CTX *ctx, const struct rem_io_tls_peer *peer,
                       const struct rem_transport_cbs *cbs, void *arg, size_t read_high,
                       size_t write_high)
{
    struct tls_io *x = calloc(1, sizeof(*x));
    if (x)
        x->ssl = rem_io_tls_client_ssl(ctx, peer);
    if (!x || !x->ssl) {
        free(x);
        rem_transport_clear(t);
        return -REM_E_NOMEM;
    }
    x->alpn = peer->alpn;
    return rem_io_connect_start(t, loop, &tls_client_ops, x, sa, salen, cbs, arg, read_high,
                                write_high);
}

bool rem_io_tls_handshaking(const struct rem_transport *t)
{
    return t->io == &tls_client_ops && !t->closed && tls_of(t)->tcp_up;
}

const char *rem_io_tls_failure(const struct rem_transport *t, char *buf, size_t len)
{
    const struct tls_io *x = t->io == &tls_client_ops ? tls_of(t) : NULL;
    switch (x ? x->why : WHY_NONE) {
    case WHY_VERIFY:
        snprintf(buf, len, "certificate verify failed: %s",
                 X509_verify_cert_error_string((long)x->detail));
        break;
    case WHY_SSL:
        ERR_error_string_n(x->detail, buf, len);
        break;
    case WHY_CLOSED:
        snprintf(buf, len, "the app closed the connection during the handshake%s%s",
                 x->detail ? ": " : "", x->detail ? strerror((int)x->detail) : "");
        break;
    case WHY_ALPN:
        snprintf(buf, len, "the app did not select ALPN \"%s\"", x->alpn);
        break;
    default:
        return NULL;
    }
    return buf;
}
