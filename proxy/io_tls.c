/* SPDX-License-Identifier: Apache-2.0
 * io_tls: an SSL object over a socket under a transport. OpenSSL's socket BIO does the
 * recv/send; a "want" from OpenSSL becomes EAGAIN (data path) or the readiness the handshake
 * waits for. The error queue is per thread: every call clears it first, so SSL_get_error
 * describes that call only. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "error.h"
#include "io_tls.h"
#include "log.h"
#include "tls.h"
#include "transport.h"

struct tls_io {
    SSL *ssl;   /* owned */
    bool fatal; /* a fatal error happened: no close_notify (SSL_shutdown must not run) */
    bool reset; /* the close must look like an error: no close_notify either */
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

static int tls_handshake(struct rem_transport *t)
{
    struct tls_io *x = tls_of(t);
    ERR_clear_error();
    errno = 0;
    int rc = SSL_do_handshake(x->ssl);
    if (rc == 1)
        return 0;
    int e = SSL_get_error(x->ssl, rc);
    if (e == SSL_ERROR_WANT_READ)
        return REM_IO_WANT_READ;
    if (e == SSL_ERROR_WANT_WRITE)
        return REM_IO_WANT_WRITE;
    if (e == SSL_ERROR_ZERO_RETURN) {
        x->fatal = true;
        return -ECONNRESET; /* the client closed before the handshake completed */
    }
    int err = failure_errno(x, e);
    /* A client certificate refused (mTLS) is worth an info line naming the client: OpenSSL's
     * verify reason says why. */
    long v = SSL_get_verify_result(x->ssl);
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

/* SSL_write_ex over the iovec, record by record (SSL_MODE_ENABLE_PARTIAL_WRITE: each call
 * returns once a record is out), until OpenSSL wants the socket. After a "want", OpenSSL
 * expects the same bytes again (SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER lets them move): the
 * transport retries from the first byte it was not told was written, and its output only
 * grows at the end, so they are. */
static ssize_t tls_send(struct rem_transport *t, const struct iovec *iov, int iovcnt)
{
    struct tls_io *x = tls_of(t);
    size_t total = 0;
    for (int i = 0; i < iovcnt; i++) {
        const char *p = iov[i].iov_base;
        size_t left = iov[i].iov_len;
        while (left > 0) {
            size_t w = 0;
            ERR_clear_error();
            errno = 0;
            if (SSL_write_ex(x->ssl, p, left, &w) != 1) {
                int err = failure_errno(x, SSL_get_error(x->ssl, 0));
                if (total > 0) /* an error shows again on the next call */
                    return (ssize_t)total;
                errno = err;
                return -1;
            }
            p += w;
            left -= w;
            total += w;
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

static bool tls_pending(const struct rem_transport *t)
{
    return SSL_pending(tls_of(t)->ssl) > 0;
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
    SSL_free(x->ssl); /* its socket BIO does not own the fd (SSL_set_fd: BIO_NOCLOSE) */
    free(x);
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
