/* SPDX-License-Identifier: Apache-2.0
 * conn: one downstream connection: its transport, its timer and kick, the pause mask and
 * the one state machine (set only through rem_conn_set_state). The protocol on it is a
 * downstream codec behind `struct rem_down_ops` (h1_down.c, h2_down.c), chosen once by the
 * accepting side (preface sniffing on cleartext; ALPN after a TLS handshake) and stored
 * here, never tested as a flag. Transport events are passed to the codec; the codec parses
 * requests into streams and writes their responses. Owns the transport, the timers, and the
 * codec's per-conn state (through the ops' init/free); knows nothing of streams. */
#ifndef REM_CONN_H
#define REM_CONN_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/queue.h>
#include <sys/socket.h>

#include "error.h"
#include "transport.h"

struct event;
struct ssl_ctx_st;
struct rem_cfg_listener;
struct rem_config;
struct rem_identity;
struct rem_stream;
struct rem_worker;
struct rem_conn;

enum rem_conn_state {
    REM_CONN_HANDSHAKE = 0, /* the transport's handshake (TLS): tls_handshake_timeout runs */
    REM_CONN_IDLE,          /* between requests: client_idle_timeout runs */
    REM_CONN_HEAD,          /* reading a request head: request_header_timeout runs */
    REM_CONN_ACTIVE,        /* a stream is in progress */
    REM_CONN_CLOSING,       /* flushing the last bytes, then freed */
    REM_CONN_CLOSED,        /* detached, waiting for the reaper */
};

/* Why request parsing is paused; it resumes only when the mask is zero (STYLE.md). */
enum {
    REM_PAUSE_UPSTREAM_WAIT = 1 << 0, /* the body waits until an upconn is ready */
    REM_PAUSE_UPSTREAM_FULL = 1 << 1, /* the upconn's output is over the watermark */
    REM_PAUSE_PIPELINE = 1 << 2,      /* the next request waits for this response */
};

/* A downstream codec (HAProxy's mux_ops, nghttpx's Upstream classes). The conn calls the
 * conn-level entries; the stream calls the stream-level ones. Unless said otherwise an entry
 * may close the conn (rem_conn_close), never free it. */
struct rem_down_ops {
    const char *name; /* "http1", "h2c", "h2" */
    unsigned proto;   /* index of remora_downstream_streams_total{proto} (REM_DOWN_PROTOS) */
    /* conn level */
    /* Sets up the codec's per-conn state; the conn keeps it in c->codec. NULL: out of
     * memory. */
    void *(*init)(struct rem_conn *c);
    /* Input arrived, or the pause mask cleared (the conn's kick). */
    void (*process)(struct rem_conn *c);
    /* The output drained below the watermark. */
    void (*on_drained)(struct rem_conn *c);
    /* The conn's kick event: work deferred out of a caller's stack. */
    void (*on_kick)(struct rem_conn *c);
    /* The conn timer fired in IDLE or HEAD. */
    void (*on_timer)(struct rem_conn *c);
    /* The client closed its sending side. Returns true when the conn stays (a complete
     * request is still being answered, or the codec closes it itself). Not called once the
     * conn lingers: that FIN closes it. */
    bool (*on_eof)(struct rem_conn *c);
    /* Graceful shutdown: stop taking requests, finish those in flight (HTTP/1.1: close when
     * idle, Connection: close on every answer; HTTP/2: GOAWAY 2^31-1, the final GOAWAY 1 s
     * later). Returns 0, or -REM_E_UNSUPPORTED from a codec that cannot. */
    int (*drain)(struct rem_conn *c);
    /* The conn is closing: every stream is aborted (logged, freed). */
    void (*abort_all)(struct rem_conn *c);
    /* Frees the per-conn state (from the conn's reaper). */
    void (*free)(struct rem_conn *c);
    /* stream level: the response; each returns 0 or -REM_E_NOMEM */
    int (*write_head)(struct rem_stream *s);
    int (*write_interim)(struct rem_stream *s);
    int (*write_body)(struct rem_stream *s, const char *p, size_t n);
    /* End of the response, with the trailers in s->resp_trl. */
    int (*write_end)(struct rem_stream *s);
    /* remora's own answer for e. */
    int (*write_error)(struct rem_stream *s, enum rem_err e);
    /* The response bytes held for s are over the watermark: the upstream must pause. */
    bool (*full)(struct rem_stream *s);
    /* The response cannot complete: it must not look complete to the client. */
    void (*cut)(struct rem_stream *s);
    /* The request body must wait (no upconn to take it yet). */
    void (*req_pause)(struct rem_stream *s);
    /* An upconn is ready for the request body (the first time: 100 Continue may go). */
    void (*req_ready)(struct rem_stream *s);
    /* The upconn took request body: more may flow. */
    void (*req_resume)(struct rem_stream *s);
    /* Whether the request body is held back because the upconn is full. */
    bool (*req_blocked)(const struct rem_stream *s);
    /* s becomes an opaque tunnel. Returns 0 or -REM_E_UNSUPPORTED (the tunnel issue). */
    int (*set_tunnel)(struct rem_stream *s);
    /* s finished (logged, counted): the codec frees it when it is done with it too. */
    void (*stream_done)(struct rem_stream *s);
};

/* What the accepting side (listener.c) gives a conn. */
struct rem_conn_owner {
    /* Picks the codec: on a conn with a handshake (TLS) once it is done (from ALPN,
     * rem_conn_alpn), otherwise from the first bytes in the input. NULL with *need_more: not
     * decided yet; NULL without: the conn cannot be served. */
    const struct rem_down_ops *(*choose)(struct rem_conn *c, bool *need_more);
    /* The conn closed (accepting may resume). */
    void (*closed)(void *arg);
};

/* What only a conn with a handshake (TLS) needs; kept apart so that a plaintext conn stays in a
 * smaller allocation class (docs/memory.md). Owned by its conn. */
struct rem_conn_hs {
    TAILQ_ENTRY(rem_conn) link; /* in worker->handshakes while in_handshake */
    uint64_t accept_ns;         /* rem_now_ns() at accept: the handshake duration's start */
    const char *tls_version;    /* static (OpenSSL's): the version the handshake agreed on
                                   ("TLSv1.3"), NULL until it is done */
    /* Owned: the verified client certificate's identity (mTLS), set once the handshake is
     * done; NULL: none (no certificate, no client_ca). */
    struct rem_identity *identity;
};

/* Kept within 384 B (jemalloc's class; tests/unit/test_h1_down.c checks it): an idle HTTP/1.1
 * conn is this, its codec state, its timer and read event (docs/memory.md). */
struct rem_conn {
    struct rem_worker *worker;           /* borrowed */
    const struct rem_cfg_listener *lcfg; /* borrowed from cfg */
    const struct rem_conn_owner *owner;  /* borrowed */
    void *owner_arg;                     /* borrowed */
    struct rem_config *cfg;              /* a reference: the generation this conn started on */
    struct rem_transport t;              /* owned: the byte stream and its two buffers */
    struct event *timer;                 /* owned: idle / header timeout */
    struct rem_post kick;                /* on the loop's post list: resumes parsing outside
                                            callback stacks */
    const struct rem_down_ops *down;     /* the codec, once chosen */
    void *codec;                         /* owned through down: the codec's per-conn state */
    char peer[48];                       /* client address (no port), for X-Forwarded-For */
    enum rem_conn_state state;
    unsigned pause;             /* REM_PAUSE_* */
    bool eof;                   /* the client closed its sending side */
    bool lingering;             /* output flushed, SHUT_WR sent, draining input */
    bool reset_on_close;        /* end with RST: a truncated response must not look complete
                                   to a close-delimited reader */
    bool draining;              /* drain asked for (applied once the codec is chosen) */
    bool tls;                   /* the client came over TLS (X-Forwarded-Proto: https) */
    bool in_handshake;          /* counted in worker->n_handshakes (set_state uncounts it) */
    enum rem_err abort_err;     /* what a close does to streams in flight (client_abort) */
    TAILQ_ENTRY(rem_conn) link; /* in worker->conns */
    struct rem_reap reap;
    struct rem_conn_hs *hs; /* owned: a conn with a handshake (TLS) only; NULL otherwise */
};

/* Sets up a conn's transport over the handle the accepting side holds (setup_arg): an accepted
 * fd (io_tcp, io_tls), an in-memory end in tests (io_mem). Takes the handle over, releasing it
 * on failure; returns 0 or a negative -REM_E_*. A transport with a handshake starts the conn
 * in HANDSHAKE; its codec is chosen when REM_TE_READY comes. */
typedef int (*rem_conn_setup_fn)(struct rem_transport *t, struct rem_loop *loop,
                                 const struct rem_transport_cbs *cbs, void *cb_arg,
                                 size_t read_high, size_t write_high, void *setup_arg);

/* Opens a conn for peer (the client's address, for X-Forwarded-For and logs) over the
 * transport that setup builds. Returns 0 (*out, when given, is the conn: IDLE and reading, or
 * HANDSHAKE),
 * -REM_E_NOMEM before setup ran (the handle is still the caller's), or -REM_E_SYS (setup or
 * the conn's events failed: the handle was released and the owner told). */
int rem_conn_open(struct rem_worker *w, const struct rem_conn_owner *owner, void *owner_arg,
                  const struct rem_cfg_listener *lcfg, const char *peer, rem_conn_setup_fn setup,
                  void *setup_arg, struct rem_conn **out);

/* Takes ownership of an accepted TCP or Unix fd; on failure closes it and tells the owner.
 * tls: the server context of a TLS listener (the conn's TLS session takes a reference), NULL:
 * plaintext. Never fails loudly: logs. */
void rem_conn_accept(struct rem_worker *w, const struct rem_conn_owner *owner, void *owner_arg,
                     const struct rem_cfg_listener *lcfg, int fd, const struct sockaddr *sa,
                     socklen_t salen, struct ssl_ctx_st *tls);

/* Closes the conn now (queued output is dropped). Safe from inside any callback: the
 * memory is freed by the reaper. Idempotent. */
void rem_conn_close(struct rem_conn *c);
/* Closes now and cuts the streams in flight with e (e.g. REM_E_DRAIN_TIMEOUT) instead of
 * client_abort. */
void rem_conn_abort(struct rem_conn *c, enum rem_err e);
/* Graceful shutdown of c: the codec's drain (HTTP/1.1: close when idle, Connection: close on
 * what is answered; HTTP/2: GOAWAY twice). A conn that has sent nothing yet (nothing read,
 * nothing waiting in its socket) is idle and closes now; one accepted while draining gets its
 * codec's drain once its first request has been read. */
void rem_conn_drain(struct rem_conn *c);
/* Closes c (after write) when its codec is not chosen yet and nothing waits to be read: a
 * client that connected and has sent nothing (drain). */
void rem_conn_close_if_silent(struct rem_conn *c);
/* Ends the sending side (FIN) once the output is written; the conn keeps reading (a tunnel
 * whose app ended its side). */
void rem_conn_shutdown_write(struct rem_conn *c);
/* Closes once everything queued has been written (or the write timeout fires). */
void rem_conn_close_after_write(struct rem_conn *c);

/* The codec moves the conn to st (IDLE, HEAD, ACTIVE) and the timer follows. */
void rem_conn_set_state(struct rem_conn *c, enum rem_conn_state st);

/* Adds pause reasons. */
void rem_conn_pause(struct rem_conn *c, unsigned reasons);
/* Clears pause reasons; when none is left, parsing resumes from the event loop (never from
 * inside the caller's stack). */
void rem_conn_resume(struct rem_conn *c, unsigned reasons);
/* Schedules the codec's on_kick from the event loop. */
void rem_conn_kick(struct rem_conn *c);
/* The close will be a reset (a truncated close-delimited response). */
void rem_conn_reset_on_close(struct rem_conn *c);
/* limits.max_tls_handshakes is reached on w and a TLS conn was just accepted: resets the conn of
 * w that has waited longest without sending its whole ClientHello (nothing spent on it yet, and
 * a client that is not stalling sends it within a round trip), counted as a refused handshake,
 * so a trickle of stalled conns cannot shut new clients out. Returns false when every handshake
 * in progress is past its ClientHello (the new conn is then the one refused). Worker thread. */
bool rem_conn_evict_handshake(struct rem_worker *w);

/* The current request ended. close: the conn cannot carry another request. Otherwise the
 * conn goes idle and parses what is pipelined. */
void rem_conn_stream_done(struct rem_conn *c, bool close);

/* Re-arms the conn timer for its state. */
void rem_conn_arm_timer(struct rem_conn *c);

static inline struct evbuffer *rem_conn_input(struct rem_conn *c)
{
    return rem_transport_input(&c->t);
}
static inline struct evbuffer *rem_conn_output(struct rem_conn *c)
{
    return rem_transport_output(&c->t);
}
/* Bytes waiting in the output (takes no buffer, unlike rem_conn_output). */
size_t rem_conn_output_len(const struct rem_conn *c);
/* Watermark above which producers must stop writing to this conn. */
size_t rem_conn_high_watermark(const struct rem_conn *c);
/* The output is queued for writing at the end of this loop iteration. */
void rem_conn_flush_later(struct rem_conn *c);
/* Reading resumes below the watermark once the codec consumed input. */
void rem_conn_rearm(struct rem_conn *c);
/* The verified client certificate's identity (mTLS), or NULL (none, plaintext). */
static inline const struct rem_identity *rem_conn_identity(const struct rem_conn *c)
{
    return c->hs ? c->hs->identity : NULL;
}
/* The TLS version the handshake agreed on (static text), or NULL (plaintext, not done). */
static inline const char *rem_conn_tls_version(const struct rem_conn *c)
{
    return c->hs ? c->hs->tls_version : NULL;
}
/* The protocol the TLS handshake agreed on (ALPN, not NUL-terminated: *len bytes), or NULL. */
static inline const char *rem_conn_alpn(const struct rem_conn *c, size_t *len)
{
    return rem_transport_alpn(&c->t, len);
}

#endif
