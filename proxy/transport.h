/* SPDX-License-Identifier: Apache-2.0
 * transport: a byte stream with an input and an output evbuffer over a `struct rem_io_ops`
 * implementation (io_tcp.c: a socket; io_tls.c: TLS over a socket; io_mem.c: an in-memory end
 * for unit tests and fuzzing), built for the request path: reads go straight into reserved evbuffer
 * space, writes are attempted optimistically once per event-loop iteration (the loop's flush list),
 * and EPOLLOUT is registered only while a write is short, so a request/response costs one read
 * and one write per side and no epoll_ctl. Reading stops by itself while the input holds
 * read_high bytes and resumes when the owner calls rem_transport_rearm after consuming.
 * After the handshake (none for an accepted TCP transport, which is ready at once; a TCP
 * connect's completion; a TLS handshake), reported as REM_TE_READY, the owner sees only the two
 * buffers and the callbacks. The buffers are the loop's spares, held only while they hold
 * bytes (taken when a read or the owner's first write needs one, given back once empty after
 * the read callback and at the end of a flush): an idle keep-alive conn holds none, and
 * ev_write is created only the first time a write comes up short.
 * The owner (conn, upconn) owns the transport; callbacks may close it; memory is released by
 * rem_transport_free, which the owner calls from its reaper. */
#ifndef REM_TRANSPORT_H
#define REM_TRANSPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "loop.h"

struct event;
struct evbuffer;
struct rem_identity;
struct rem_transport;

enum {
    REM_TE_READY = 1 << 0, /* the handshake (a connect's completion, TLS) is done */
    REM_TE_EOF = 1 << 1,   /* the peer closed its sending side */
    REM_TE_ERROR = 1 << 2, /* read/write/connect/handshake failed; rem_transport_error */
};

struct rem_transport_cbs {
    /* New bytes are in the input. */
    void (*on_read)(struct rem_transport *t, void *arg);
    /* A write left the output at or below write_high / 2 (including empty). */
    void (*on_drained)(struct rem_transport *t, void *arg);
    /* REM_TE_* */
    void (*on_event)(struct rem_transport *t, int what, void *arg);
};

/* What an unfinished handshake waits for: the io's handshake answers it, and an io sets a
 * transport up with the first one (rem_transport_setup). */
enum {
    REM_IO_WANT_READ = 1,  /* readability (a TLS server waiting for the ClientHello) */
    REM_IO_WANT_WRITE = 2, /* writability (a TCP connect; TLS with a full send buffer) */
};

/* One implementation of the byte stream under a transport (HAProxy's xprt_ops). Every
 * function is called on the worker's thread; none may call the transport's callbacks. */
struct rem_io_ops {
    const char *name;
    /* Reads at most n bytes: > 0 read, 0 the peer closed, -1 with errno (EAGAIN: nothing
     * now). */
    ssize_t (*recv)(struct rem_transport *t, void *buf, size_t n);
    /* Writes from iov: >= 0 written, -1 with errno (EAGAIN: would block). */
    ssize_t (*send)(struct rem_transport *t, const struct iovec *iov, int iovcnt);
    /* Advances the handshake: 0 done, REM_IO_WANT_READ / REM_IO_WANT_WRITE again once the fd
     * is readable / writable, < 0 a negative errno. NULL: none (ready once connected). */
    int (*handshake)(struct rem_transport *t);
    /* Ends the sending side (TCP: SHUT_WR; TLS: close_notify). */
    void (*shutdown)(struct rem_transport *t);
    /* Whether bytes are buffered inside the io that readiness of the fd would not report
     * (TLS records, the in-memory inbox). NULL: never. */
    bool (*pending)(const struct rem_transport *t);
    /* The protocol agreed in the handshake (ALPN) or NULL; *len its length. NULL: none. */
    const char *(*alpn)(const struct rem_transport *t, size_t *len);
    /* What the handshake agreed on besides ALPN, once it is done: the protocol version
     * (static text: "TLSv1.3"), *resumed whether an earlier session was resumed (a ticket: no
     * full handshake). NULL: none (TCP, io_mem). */
    const char *(*session)(const struct rem_transport *t, bool *resumed);
    /* The identity of the certificate the peer presented and the handshake verified (TLS
     * with a client_ca): a new object the caller owns, or NULL (none, or out of memory). Once
     * the handshake is done. NULL: never one (TCP, io_mem). */
    struct rem_identity *(*peer_identity)(const struct rem_transport *t);
    /* Whether the handshake is still waiting for the peer's first flight (a TLS server that
     * has not received a whole ClientHello: no work done for the conn yet). NULL: never. */
    bool (*awaiting_hello)(const struct rem_transport *t);
    /* The close must look like an error to the peer (TCP: RST through SO_LINGER 0). */
    void (*reset)(struct rem_transport *t);
    /* Releases the handle (closes the fd) now; the io's memory stays until free. */
    void (*close)(struct rem_transport *t);
    /* Frees the io's state (t->io_ctx). NULL-safe on a closed transport. */
    void (*free)(struct rem_transport *t);
};

struct rem_transport {
    int fd;                      /* -1 when the io has none (io_mem) */
    const struct rem_io_ops *io; /* borrowed (static tables) */
    void *io_ctx;                /* owned by io */
    struct rem_loop *loop;       /* borrowed */
    struct event *ev_read;       /* owned */
    struct event *ev_write;      /* owned, NULL until a write first comes up short */
    struct evbuffer *in, *out;   /* owned while non-NULL (the loop's spares otherwise) */
    const struct rem_transport_cbs *cbs;
    void *arg;
    size_t read_high;  /* reading pauses while in holds this much; 0: none */
    size_t write_high; /* producers stop at this much output */
    int error;         /* errno of the last failure */
    bool connecting;   /* connect or handshake in progress: reading and writing say which
                          readiness it waits for */
    bool reading;      /* ev_read is registered */
    bool writing;      /* ev_write is registered */
    bool read_off;     /* the owner turned reading off */
    bool closed;
    bool shut_wr;           /* the sending side ends once the output is empty */
    uint64_t last_write_ms; /* last time bytes went out */
    uint64_t last_took_ms;  /* last time the peer was seen taking bytes (see last_progress) */
    int unsent_seen;        /* the fd's send queue at the last look or short write, or -1 */
    struct rem_flush flush; /* on the loop's flush list */
};

/* A transport that is not set up yet: closed, no fd; rem_transport_free is a no-op on it. */
void rem_transport_clear(struct rem_transport *t);

/* For io implementations: sets up t over io (with its handle fd, or -1 and ctx). handshake 0:
 * ready, reading starts now. REM_IO_WANT_WRITE / REM_IO_WANT_READ: a handshake is due (a
 * connect, a TLS accept); io->handshake runs once the fd is writable / readable, and again as
 * it asks, until it is done (REM_TE_READY, then reading starts) or fails (REM_TE_ERROR).
 * Takes over fd and ctx: on failure they are released through io->close/free. Returns 0 or
 * -REM_E_NOMEM. */
int rem_transport_setup(struct rem_transport *t, struct rem_loop *loop, const struct rem_io_ops *io,
                        int fd, void *ctx, const struct rem_transport_cbs *cbs, void *arg,
                        size_t read_high, size_t write_high, int handshake);
/* For io implementations: records err (an errno) as the transport's error. */
void rem_transport_set_error(struct rem_transport *t, int err);
/* For io implementations without an fd: the io has become readable (EV_READ) and/or
 * writable (EV_WRITE); the transport reacts from the loop, never inside this call. */
void rem_transport_io_wake(struct rem_transport *t, short what);

/* The owner added output: it is written at the end of this loop iteration. */
void rem_transport_flush_later(struct rem_transport *t);
/* Writes what it can now. Returns bytes left in the output. */
size_t rem_transport_flush(struct rem_transport *t);

/* The owner consumed input: resume reading if it had paused at read_high. */
void rem_transport_rearm(struct rem_transport *t);
/* Turns reading off / back on (e.g. while idle with nothing expected, or lingering). */
void rem_transport_read(struct rem_transport *t, bool on);
/* Reading no longer pauses at a watermark (a lingering close drains whatever comes). */
void rem_transport_unlimit_read(struct rem_transport *t);
/* Sends FIN (io->shutdown) once the output is empty (now if it already is). */
void rem_transport_shutdown_write(struct rem_transport *t);
/* Makes the close a reset: for responses that must not look complete. */
void rem_transport_set_reset(struct rem_transport *t);
/* Whether input is waiting that the owner has not seen: bytes in the input buffer, inside the
 * io (io->pending), or already in the kernel's receive queue but not read yet (a peek; a
 * pending FIN is not input). For deciding that a conn is idle right now. */
bool rem_transport_input_waiting(const struct rem_transport *t);

/* Stops all I/O and closes the handle now (pending output is dropped). Safe inside callbacks;
 * idempotent. The memory stays until rem_transport_free. */
void rem_transport_close(struct rem_transport *t);
/* Frees events, buffers and the io's state; t must be closed. NULL-safe. */
void rem_transport_free(struct rem_transport *t);

/* Accessors for owners (they never write the fields). */
/* The input, to read and drain (never to add to): while t holds no input buffer, the loop's
 * shared empty one, frozen so that adding to it fails. Valid until the current callback
 * returns. */
static inline struct evbuffer *rem_transport_input(struct rem_transport *t)
{
    return t->in ? t->in : t->loop->empty;
}
/* Takes a spare buffer from the loop as t's output (t holds none). Aborts on OOM. */
struct evbuffer *rem_transport_take_output(struct rem_transport *t);
/* The output, to append to (taken from the loop's spares when t holds none). Valid until the
 * current callback returns: a flush gives an emptied buffer back. For its length use
 * rem_transport_output_len, which takes nothing. */
static inline struct evbuffer *rem_transport_output(struct rem_transport *t)
{
    return t->out ? t->out : rem_transport_take_output(t);
}
/* Bytes waiting in the output (0 while t holds no output buffer). */
size_t rem_transport_output_len(const struct rem_transport *t);
static inline bool rem_transport_is_closed(const struct rem_transport *t)
{
    return t->closed;
}
/* Whether the handshake is still running (REM_TE_READY not reported yet). */
static inline bool rem_transport_handshaking(const struct rem_transport *t)
{
    return t->connecting;
}
static inline int rem_transport_error(const struct rem_transport *t)
{
    return t->error;
}
static inline size_t rem_transport_write_high(const struct rem_transport *t)
{
    return t->write_high;
}
static inline uint64_t rem_transport_last_write_ms(const struct rem_transport *t)
{
    return t->last_write_ms;
}
/* The last time t's peer made progress reading what we send: a write, or the kernel's send
 * queue of the fd (SIOCOUTQ) found shorter than at the previous call. For write-stall timers:
 * once a write comes up short the fd is not reported writable again until about a third of its
 * send buffer (megabytes on a fast path) is free, so a peer reading slowly but steadily sees no
 * write from us for a long while. Looks at the fd on each call (cheap: one ioctl); without an
 * fd (io_mem) it is the last write. */
uint64_t rem_transport_last_progress_ms(struct rem_transport *t);
/* The protocol the handshake agreed on (ALPN), or NULL. */
const char *rem_transport_alpn(const struct rem_transport *t, size_t *len);
/* The version the handshake agreed on (io->session: "TLSv1.3", static) with *resumed, or NULL
 * (*resumed false) when the io has none or t is closed. */
const char *rem_transport_session(const struct rem_transport *t, bool *resumed);
/* The verified peer certificate's identity (io->peer_identity): a new object the caller owns
 * (rem_identity_free), or NULL when the io has none, there is none, or t is closed. */
struct rem_identity *rem_transport_peer_identity(const struct rem_transport *t);
/* io->awaiting_hello: the peer has not sent its whole first handshake flight yet (false when
 * the io has no such notion or t is closed). */
bool rem_transport_awaiting_hello(const struct rem_transport *t);

#endif
