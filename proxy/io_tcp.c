/* SPDX-License-Identifier: Apache-2.0
 * io_tcp: stream sockets under a transport. recv/send rather than readv/writev: no iovec
 * import and no file-position lock in the kernel (DESIGN.md, "Transport and syscalls"). */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>

#include "error.h"
#include "io_tcp.h"
#include "transport.h"

static ssize_t tcp_recv(struct rem_transport *t, void *buf, size_t n)
{
    return recv(t->fd, buf, n, 0);
}

/* send() for one chain (the common case: a head and a small body share a chain), sendmsg()
 * for several; MSG_NOSIGNAL makes EPIPE an error return. */
static ssize_t tcp_send(struct rem_transport *t, const struct iovec *iov, int iovcnt)
{
    if (iovcnt == 1)
        return send(t->fd, iov[0].iov_base, iov[0].iov_len, MSG_NOSIGNAL);
    struct msghdr m = {.msg_iov = (struct iovec *)iov, .msg_iovlen = (size_t)iovcnt};
    return sendmsg(t->fd, &m, MSG_NOSIGNAL);
}

static void tcp_shutdown(struct rem_transport *t)
{
    (void)shutdown(t->fd, SHUT_WR);
}

static void tcp_reset(struct rem_transport *t)
{
    struct linger lg = {1, 0};
    (void)setsockopt(t->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
}

static void tcp_close(struct rem_transport *t)
{
    if (t->fd >= 0)
        close(t->fd);
}

/* The connect's outcome, once the socket is writable. An error seen by connect(2) itself
 * (t->error) is reported the same way, from the loop: on a Unix socket that is where ENOENT,
 * ECONNREFUSED and EAGAIN (the listener's backlog is full) show up. */
static int unix_connected(struct rem_transport *t)
{
    int err = t->error;
    socklen_t len = sizeof(err);
    if (!err && getsockopt(t->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
        err = errno;
    if (err == EINPROGRESS)
        return REM_IO_WANT_WRITE;
    return err ? -err : 0;
}

int rem_io_tcp_connected(struct rem_transport *t)
{
    int rc = unix_connected(t);
    if (rc != 0)
        return rc;
    int one = 1;
    (void)setsockopt(t->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return 0;
}

static const struct rem_io_ops tcp_accepted_ops = {
    .name = "tcp",
    .recv = tcp_recv,
    .send = tcp_send,
    .shutdown = tcp_shutdown,
    .reset = tcp_reset,
    .close = tcp_close,
};

static const struct rem_io_ops tcp_connecting_ops = {
    .name = "tcp",
    .recv = tcp_recv,
    .send = tcp_send,
    .handshake = rem_io_tcp_connected,
    .shutdown = tcp_shutdown,
    .reset = tcp_reset,
    .close = tcp_close,
};

/* AF_UNIX has no Nagle and no TCP options: the same ops without TCP_NODELAY. SO_LINGER 0 is
 * accepted and harmless (a Unix socket has no RST; the peer sees ECONNRESET only if data was
 * left unread). */
static const struct rem_io_ops unix_connecting_ops = {
    .name = "unix",
    .recv = tcp_recv,
    .send = tcp_send,
    .handshake = unix_connected,
    .shutdown = tcp_shutdown,
    .reset = tcp_reset,
    .close = tcp_close,
};

static const struct rem_io_ops unix_accepted_ops = {
    .name = "unix",
    .recv = tcp_recv,
    .send = tcp_send,
    .shutdown = tcp_shutdown,
    .reset = tcp_reset,
    .close = tcp_close,
};

int rem_io_unix_accept(struct rem_transport *t, struct rem_loop *loop, int fd,
                       const struct rem_transport_cbs *cbs, void *arg, size_t read_high,
                       size_t write_high)
{
    return rem_transport_setup(t, loop, &unix_accepted_ops, fd, NULL, cbs, arg, read_high,
                               write_high, 0);
}

int rem_io_tcp_accept(struct rem_transport *t, struct rem_loop *loop, int fd,
                      const struct rem_transport_cbs *cbs, void *arg, size_t read_high,
                      size_t write_high)
{
    int one = 1;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return rem_transport_setup(t, loop, &tcp_accepted_ops, fd, NULL, cbs, arg, read_high,
                               write_high, 0);
}

int rem_io_connect_start(struct rem_transport *t, struct rem_loop *loop,
                         const struct rem_io_ops *io, void *ctx, const struct sockaddr *sa,
                         socklen_t salen, const struct rem_transport_cbs *cbs, void *arg,
                         size_t read_high, size_t write_high)
{
    int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        int err = errno;
        if (ctx && io->free) {
            struct rem_transport tmp = {.fd = -1, .io = io, .io_ctx = ctx, .closed = true};
            io->free(&tmp);
        }
        rem_transport_clear(t);
        rem_transport_set_error(t, err);
        return -REM_E_SYS;
    }
    int rc = rem_transport_setup(t, loop, io, fd, ctx, cbs, arg, read_high, write_high,
                                 REM_IO_WANT_WRITE);
    if (rc < 0)
        return rc;
    if (connect(fd, sa, salen) < 0 && errno != EINPROGRESS) {
        /* Reported from the loop like any other outcome (e.g. ECONNREFUSED on loopback, or
         * EAGAIN from a Unix listener with a full backlog, which a non-blocking connect to
         * AF_UNIX returns instead of waiting): the caller is never called back before this
         * returns. */
        rem_transport_set_error(t, errno);
        event_active(t->ev_write, EV_WRITE, 1);
    }
    return 0;
}

int rem_io_tcp_connect(struct rem_transport *t, struct rem_loop *loop, const struct sockaddr *sa,
                       socklen_t salen, const struct rem_transport_cbs *cbs, void *arg,
                       size_t read_high, size_t write_high)
{
    return rem_io_connect_start(
        t, loop, sa->sa_family == AF_UNIX ? &unix_connecting_ops : &tcp_connecting_ops, NULL, sa,
        salen, cbs, arg, read_high, write_high);
}
