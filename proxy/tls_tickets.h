/* SPDX-License-Identifier: Apache-2.0
 * tls_tickets: the session ticket keys of every downstream TLS context, one ring for the
 * process: every worker and every context a reload builds encrypt and decrypt tickets with
 * it, so a session resumes whichever worker accepts the conn and across reloads. The current
 * key encrypts new tickets; the REM_TICKET_KEYS - 1 previous ones still decrypt (and the
 * ticket is renewed under the current key). The main thread makes the keys (OpenSSL's private
 * CSPRNG) and rotates them every REM_TICKET_ROTATE_MS; workers read the ring from OpenSSL's
 * ticket callback. The keys live in memory only (never a file; cleansed when dropped), so a
 * restart or a second replica starts with keys of its own. Knows nothing of listeners. */
#ifndef REM_TLS_TICKETS_H
#define REM_TLS_TICKETS_H

#include <stdint.h>

struct ssl_ctx_st;
struct evp_cipher_ctx_st;
struct evp_mac_ctx_st;

#define REM_TICKET_KEYS 3                    /* the current key and two previous ones */
#define REM_TICKET_ROTATE_MS (3600u * 1000u) /* a new current key every hour */
#define REM_TICKET_NAME_BYTES 16             /* OpenSSL's key_name (TLSEXT_KEYNAME_LENGTH) */

/* A ring of ticket keys; the process's is rem_tls_tickets(). */
struct rem_ticket_ring;

/* A ring with one fresh key. Returns NULL when the CSPRNG or memory fails. Any thread. */
struct rem_ticket_ring *rem_ticket_ring_new(void);
/* Cleanses and frees r. NULL-safe. */
void rem_ticket_ring_free(struct rem_ticket_ring *r);
/* A fresh current key; the previous keys shift back and the oldest beyond REM_TICKET_KEYS is
 * cleansed. Returns 0, or -REM_E_SYS (the CSPRNG failed, logged) with the ring unchanged.
 * Thread-safe against the workers' reads (a write lock held only to shift the slots). */
int rem_ticket_ring_rotate(struct rem_ticket_ring *r);
/* OpenSSL's ticket key callback (SSL_CTX_set_tlsext_ticket_key_evp_cb) on ring r, for any
 * worker: enc 1 names the current key in name, draws iv and sets up c (AES-256-CBC) and h
 * (HMAC-SHA256) to seal a new ticket: returns 1, or -1 (no ticket) on a failure. enc 0 finds
 * the key called name: returns 1 (the current key), 2 (an older one: decrypt, then renew the
 * ticket under the current key) or 0 (unknown or rotated out: a full handshake); -1 on a
 * failure. Reads the ring under its read lock and copies the key out. */
int rem_ticket_ring_crypt(struct rem_ticket_ring *r, unsigned char *name, unsigned char *iv,
                          struct evp_cipher_ctx_st *c, struct evp_mac_ctx_st *h, int enc);

/* The process's ring, made on first use (the main thread makes it before any worker runs:
 * the first TLS context installs it). Aborts when the CSPRNG cannot give the first key. */
struct rem_ticket_ring *rem_tls_tickets(void);
/* Makes ctx (a downstream server context being built, main thread) seal and open its tickets
 * with the process's ring, and sets the session lifetime to the longest a ticket's key can
 * still decrypt (REM_TICKET_KEYS x REM_TICKET_ROTATE_MS). */
void rem_tls_tickets_install(struct ssl_ctx_st *ctx);
/* Rotates the process's ring (the main thread's timer, every REM_TICKET_ROTATE_MS); a no-op
 * until a TLS context installed it. */
void rem_tls_tickets_rotate(void);

#endif
