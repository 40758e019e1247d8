/* SPDX-License-Identifier: Apache-2.0
 * conn: one downstream transport connection. Owns the transport, the conn timer, the
 * protocol state (HTTP/1.1 today; h2 and TLS plug in beside it) and the current stream.
 * Transport events (read, write drained, EOF, error, timeouts) arrive here and are passed to
 * the protocol; the protocol (h1_down.c) parses requests and writes responses. */
#ifndef REM_CONN_H
#define REM_CONN_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/queue.h>
#include <sys/socket.h>

#include <llhttp.h>

#include "transport.h"
#include "worker.h"

struct event;
struct rem_cfg_listener;
struct rem_config;
struct rem_stream;
struct rem_listener;
struct rem_h2_down;

enum rem_conn_state {
    REM_CONN_IDLE = 0, /* between requests: client_idle_timeout runs */
    REM_CONN_HEAD,     /* reading a request head: request_header_timeout runs */
    REM_CONN_ACTIVE,   /* a stream is in progress */
    REM_CONN_CLOSING,  /* flushing the last bytes, then freed */
    REM_CONN_CLOSED,   /* detached, waiting for the reaper */
};

/* Why request parsing is paused; it resumes only when the mask is zero (STYLE.md). */
enum {
    REM_PAUSE_UPSTREAM_WAIT = 1 << 0, /* the body waits until an upconn is ready */
    REM_PAUSE_UPSTREAM_FULL = 1 << 1, /* the upconn's output is over the watermark */
    REM_PAUSE_PIPELINE = 1 << 2,      /* the next request waits for this response */
};

struct rem_conn {
    struct rem_worker *worker;           /* borrowed */
    const struct rem_cfg_listener *lcfg; /* borrowed from cfg */
    struct rem_listener *listener;       /* borrowed: told when the conn closes */
    struct rem_config *cfg;              /* a reference: the generation this conn started on */
    struct rem_transport t;              /* owned: the socket and its two buffers */
    struct event *timer;                 /* owned: idle / header timeout */
    struct event *kick;                  /* owned: resumes parsing outside callback stacks */
    char peer[48];                       /* client address (no port), for X-Forwarded-For */
    enum rem_conn_state state;
    unsigned pause;             /* REM_PAUSE_* */
    bool eof;                   /* the client closed its sending side */
    bool lingering;             /* output flushed, SHUT_WR sent, draining input */
    TAILQ_ENTRY(rem_conn) link; /* in worker->conns */
    bool head_ready;            /* set by the parser, acted on after it returns */
    bool exec_pending;          /* parser paused at the end of the input: run it once more */
    int parse_err;              /* -REM_E_* recorded inside a parser callback */
    llhttp_t parser;
    const char *exec_start, *exec_end; /* the buffer being parsed, for obs-fold detection */
    bool val_open;                     /* a header value is being received */
    bool val_at_end;                   /* ... and its last piece ended at exec_end */
    bool reset_on_close;               /* end with RST: a truncated response must not look
                                          complete to a close-delimited reader */
    struct rem_stream *stream;         /* owned: the current stream, if any (HTTP/1.1) */
    struct rem_h2_down *h2;            /* owned: the HTTP/2 session, once the preface came */
    bool proto_known;                  /* HTTP/1.1 or HTTP/2 decided */
    struct rem_reap reap;
};

/* Takes ownership of an accepted fd; on failure closes it. Never fails loudly: logs. */
void rem_conn_accept(struct rem_worker *w, struct rem_listener *l,
                     const struct rem_cfg_listener *lcfg, int fd, const struct sockaddr *sa,
                     socklen_t salen);

/* Closes the conn now (queued output is dropped). Safe from inside any callback: the
 * memory is freed by the reaper. Idempotent. */
void rem_conn_close(struct rem_conn *c);
/* Closes once everything queued has been written (or the write timeout fires). */
void rem_conn_close_after_write(struct rem_conn *c);

/* Clears pause reasons; when none is left, parsing resumes from the event loop (never from
 * inside the caller's stack). */
void rem_conn_resume(struct rem_conn *c, unsigned reasons);

/* The current stream ended (it has cleared c->stream). close: the conn cannot carry another
 * request. Otherwise the conn goes idle and parses what is pipelined. */
void rem_conn_stream_done(struct rem_conn *c, bool close);

/* Re-arms the conn timer for its state. */
void rem_conn_arm_timer(struct rem_conn *c);

struct evbuffer *rem_conn_output(struct rem_conn *c);
size_t rem_conn_output_len(struct rem_conn *c);
/* Watermark above which producers must stop writing to this conn. */
size_t rem_conn_high_watermark(const struct rem_conn *c);

#endif
