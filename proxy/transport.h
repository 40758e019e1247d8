/* SPDX-License-Identifier: Apache-2.0
 * transport: a non-blocking stream socket with an input and an output evbuffer, built for the
 * request path: reads go straight into reserved evbuffer space (no FIONREAD per read), writes
 * are attempted optimistically once per event-loop iteration (the worker's flush list), and
 * EPOLLOUT is registered only while a write is short, so a request/response costs one read and
 * one write per side and no epoll_ctl. Reading stops by itself while the input holds read_high
 * bytes and resumes when the owner calls rem_transport_rearm after consuming.
 * The owner (conn, upconn; TLS later) owns the transport; the protocol on top only sees the two
 * buffers and the callbacks. Callbacks may close the transport; memory is released by
 * rem_transport_free, which the owner calls from its reaper. */
#ifndef REM_TRANSPORT_H
#define REM_TRANSPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/queue.h>
#include <sys/socket.h>

struct event;
struct evbuffer;
struct rem_worker;
struct rem_transport;

enum {
    REM_TE_CONNECTED = 1 << 0, /* an outgoing connect completed */
    REM_TE_EOF = 1 << 1,       /* the peer closed its sending side */
    REM_TE_ERROR = 1 << 2,     /* read/write/connect failed; t->error holds errno */
};

struct rem_transport_cbs {
    /* New bytes are in t->in. */
    void (*on_read)(struct rem_transport *t, void *arg);
    /* A write left the output at or below write_high / 2 (including empty). */
    void (*on_drained)(struct rem_transport *t, void *arg);
    /* REM_TE_* */
    void (*on_event)(struct rem_transport *t, int what, void *arg);
};

struct rem_transport {
    int fd;
    struct rem_worker *worker;        /* borrowed */
    struct event *ev_read, *ev_write; /* owned */
    struct evbuffer *in, *out;        /* owned */
    const struct rem_transport_cbs *cbs;
    void *arg;
    size_t read_high;  /* reading pauses while in holds this much; 0: none */
    size_t write_high; /* producers stop at this much output */
    int error;         /* errno of the last failure */
    bool connecting;
    bool reading;  /* ev_read is registered */
    bool writing;  /* ev_write is registered */
    bool read_off; /* the owner turned reading off */
    bool closed;
    bool dirty;             /* on the worker's flush list */
    bool shut_wr;           /* SHUT_WR requested once the output is empty */
    uint64_t last_write_ms; /* last time bytes went out */
    TAILQ_ENTRY(rem_transport) flush_link;
};

TAILQ_HEAD(rem_transport_list, rem_transport);

/* Sets up t over an accepted, non-blocking fd (taken over: closed on failure and by close).
 * Reading starts at once. Returns 0 or -REM_E_NOMEM. */
int rem_transport_init(struct rem_transport *t, struct rem_worker *w, int fd,
                       const struct rem_transport_cbs *cbs, void *arg, size_t read_high,
                       size_t write_high);

/* Starts a non-blocking connect; REM_TE_CONNECTED or REM_TE_ERROR follows, never before this
 * returns. Returns 0, or -REM_E_SYS / -REM_E_NOMEM when no socket could be set up (errno in
 * t->error). */
int rem_transport_connect(struct rem_transport *t, struct rem_worker *w, const struct sockaddr *sa,
                          socklen_t salen, const struct rem_transport_cbs *cbs, void *arg,
                          size_t read_high, size_t write_high);

/* The owner added output: it is written at the end of this loop iteration. */
void rem_transport_flush_later(struct rem_transport *t);
/* Writes what it can now. Returns bytes left in the output. */
size_t rem_transport_flush(struct rem_transport *t);

/* The owner consumed input: resume reading if it had paused at read_high. */
void rem_transport_rearm(struct rem_transport *t);
/* Turns reading off / back on (e.g. while idle with nothing expected, or lingering). */
void rem_transport_read(struct rem_transport *t, bool on);
/* Sends FIN once the output is empty (now if it already is). */
void rem_transport_shutdown_write(struct rem_transport *t);
/* Makes the close a reset (SO_LINGER 0): for responses that must not look complete. */
void rem_transport_set_reset(struct rem_transport *t);

/* Stops all I/O and closes the fd now (pending output is dropped). Safe inside callbacks;
 * idempotent. The memory stays until rem_transport_free. */
void rem_transport_close(struct rem_transport *t);
/* Frees events and buffers; t must be closed. NULL-safe. */
void rem_transport_free(struct rem_transport *t);

/* The per-worker flush list; run by the worker's flush event. */
void rem_transport_flush_all(struct rem_transport_list *list);

#endif
