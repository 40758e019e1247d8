/* SPDX-License-Identifier: Apache-2.0
 * tls_tickets: the process's session ticket key ring. Tickets are sealed as OpenSSL's default
 * format does (RFC 5077 4's recommended construction): a 16-byte key name, AES-256-CBC with a
 * fresh IV, HMAC-SHA256 over the whole; only where the keys come from changes. A reader-writer
 * lock guards the slots: workers take it to read (one short copy per ticket sealed or opened,
 * never contended but by a rotation, once an hour), the main thread to shift the slots in a
 * rotation whose new key was drawn before the lock. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>

#include "error.h"
#include "log.h"
#include "tls_tickets.h"

struct ticket_key {
    unsigned char name[REM_TICKET_NAME_BYTES];
    unsigned char aes[32];  /* AES-256-CBC */
    unsigned char hmac[32]; /* HMAC-SHA256 */
};

struct rem_ticket_ring {
    pthread_rwlock_t lock;
    struct ticket_key keys[REM_TICKET_KEYS]; /* [0] the current key, then older ones */
    unsigned n;                              /* keys set, 1..REM_TICKET_KEYS */
};

/* A fresh key from OpenSSL's private DRBG (the one meant for secrets). */
static int make_key(struct ticket_key *k)
{
    if (RAND_priv_bytes((unsigned char *)k, sizeof(*k)) != 1) {
        ERR_clear_error();
        rem_log_error("tls: cannot draw a session ticket key: the CSPRNG failed");
        return -REM_E_SYS;
    }
    return 0;
}

struct rem_ticket_ring *rem_ticket_ring_new(void)
{
    struct rem_ticket_ring *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    if (pthread_rwlock_init(&r->lock, NULL) != 0) {
        free(r);
        return NULL;
    }
    if (make_key(&r->keys[0]) < 0) {
        rem_ticket_ring_free(r);
        return NULL;
    }
    r->n = 1;
    return r;
}

void rem_ticket_ring_free(struct rem_ticket_ring *r)
{
    if (!r)
        return;
    pthread_rwlock_destroy(&r->lock);
    OPENSSL_cleanse(r->keys, sizeof(r->keys));
    free(r);
}

int rem_ticket_ring_rotate(struct rem_ticket_ring *r)
{
    struct ticket_key k;
    if (make_key(&k) < 0)
        return -REM_E_SYS;
    pthread_rwlock_wrlock(&r->lock);
    memmove(&r->keys[1], &r->keys[0], (REM_TICKET_KEYS - 1) * sizeof(r->keys[0]));
    r->keys[0] = k;
    if (r->n < REM_TICKET_KEYS)
        r->n++;
    pthread_rwlock_unlock(&r->lock);
    OPENSSL_cleanse(&k, sizeof(k));
    return 0;
}

/* Copies the key called name into out (NULL: the current one). Returns its slot, or -1. */
static int find_key(struct rem_ticket_ring *r, const unsigned char *name, struct ticket_key *out)
{
    int slot = -1;
    pthread_rwlock_rdlock(&r->lock);
    for (unsigned i = 0; i < r->n; i++) {
        if (!name || CRYPTO_memcmp(r->keys[i].name, name, REM_TICKET_NAME_BYTES) == 0) {
            *out = r->keys[i];
            slot = (int)i;
            break;
        }
    }
    pthread_rwlock_unlock(&r->lock);
    return slot;
}

int rem_ticket_ring_crypt(struct rem_ticket_ring *r, unsigned char *name, unsigned char *iv,
                          EVP_CIPHER_CTX *c, EVP_MAC_CTX *h, int enc)
{
    struct ticket_key k;
    int slot = find_key(r, enc ? NULL : name, &k), rc = -1;
    if (slot < 0)
        return 0; /* not ours, or rotated out: a full handshake */
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0),
        OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, k.hmac, sizeof(k.hmac)),
        OSSL_PARAM_construct_end(),
    };
    if (enc) {
        int ivlen = EVP_CIPHER_get_iv_length(EVP_aes_256_cbc());
        memcpy(name, k.name, REM_TICKET_NAME_BYTES);
        if (ivlen <= 0 || RAND_bytes(iv, ivlen) != 1 ||
            EVP_EncryptInit_ex(c, EVP_aes_256_cbc(), NULL, k.aes, iv) != 1)
            goto out;
    } else if (EVP_DecryptInit_ex(c, EVP_aes_256_cbc(), NULL, k.aes, iv) != 1) {
        goto out;
    }
    if (EVP_MAC_CTX_set_params(h, params) != 1)
        goto out;
    /* An older key still opens the ticket; the session goes on under a new one (RFC 5077 4:
     * the server may renew a ticket it accepted). */
    rc = enc || slot == 0 ? 1 : 2;

out:
    OPENSSL_cleanse(&k, sizeof(k));
    if (rc < 0)
        ERR_clear_error();
    return rc;
}

static struct rem_ticket_ring *process_ring;
static pthread_once_t process_once = PTHREAD_ONCE_INIT;

static void make_process_ring(void)
{
    process_ring = rem_ticket_ring_new();
    REM_BUG_ON(!process_ring); /* a CSPRNG that cannot key the first ring: nothing is safe */
}

struct rem_ticket_ring *rem_tls_tickets(void)
{
    pthread_once(&process_once, make_process_ring);
    return process_ring;
}

static int on_ticket_key(SSL *ssl, unsigned char *name, unsigned char *iv, EVP_CIPHER_CTX *c,
                         EVP_MAC_CTX *h, int enc)
{
    return rem_ticket_ring_crypt(process_ring, name, iv, c, h, enc);
}

void rem_tls_tickets_install(SSL_CTX *ctx)
{
    rem_tls_tickets();
    SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, on_ticket_key);
    /* The session lifetime (the ticket_lifetime_hint, and the age OpenSSL accepts when a
     * ticket comes back) is the longest a key decrypts: between 2 and 3 rotations. */
    SSL_CTX_set_timeout(ctx, (long)REM_TICKET_KEYS * REM_TICKET_ROTATE_MS / 1000);
}

void rem_tls_tickets_rotate(void)
{
    /* No TLS context was ever built: nothing to rotate, and no reason to start OpenSSL's
     * random generator in a process that serves no TLS. */
    if (!__atomic_load_n(&process_ring, __ATOMIC_ACQUIRE))
        return;
    if (rem_ticket_ring_rotate(rem_tls_tickets()) == 0)
        rem_log_debug("tls: session ticket keys rotated");
}
