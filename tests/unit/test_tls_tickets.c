/* SPDX-License-Identifier: Apache-2.0
 * Unit tests of tls_tickets: the ticket key ring through the callback OpenSSL calls. A ticket
 * sealed under the current key opens under it (1), under an older one after rotations (2: to
 * renew), and not at all once REM_TICKET_KEYS rotations pushed its key out (0); a name the
 * ring never made opens nothing; two rings never share keys. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>

#include "tls_tickets.h"

/* A ticket as OpenSSL seals one with the callback's choices: name, IV, AES-256-CBC of the
 * state, HMAC-SHA256 of it all. */
struct ticket {
    unsigned char name[REM_TICKET_NAME_BYTES];
    unsigned char iv[EVP_MAX_IV_LENGTH];
    unsigned char ct[64];
    int ct_len;
    unsigned char mac[EVP_MAX_MD_SIZE];
    size_t mac_len;
};

static const unsigned char state_bytes[] = "a session state worth resuming";

static EVP_MAC_CTX *new_hmac(void)
{
    EVP_MAC *mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    assert_non_null(mac);
    EVP_MAC_CTX *h = EVP_MAC_CTX_new(mac);
    EVP_MAC_free(mac);
    assert_non_null(h);
    return h;
}

static void seal(struct rem_ticket_ring *r, struct ticket *t)
{
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    EVP_MAC_CTX *h = new_hmac();
    int n = 0, fin = 0;
    assert_int_equal(rem_ticket_ring_crypt(r, t->name, t->iv, c, h, 1), 1);
    assert_int_equal(EVP_EncryptUpdate(c, t->ct, &n, state_bytes, sizeof(state_bytes)), 1);
    assert_int_equal(EVP_EncryptFinal_ex(c, t->ct + n, &fin), 1);
    t->ct_len = n + fin;
    assert_int_equal(EVP_MAC_init(h, NULL, 0, NULL), 1);
    assert_int_equal(EVP_MAC_update(h, t->name, sizeof(t->name)), 1);
    assert_int_equal(EVP_MAC_update(h, t->ct, (size_t)t->ct_len), 1);
    assert_int_equal(EVP_MAC_final(h, t->mac, &t->mac_len, sizeof(t->mac)), 1);
    EVP_CIPHER_CTX_free(c);
    EVP_MAC_CTX_free(h);
}

/* What the callback answers for t; when it opens it, the MAC and the state must check. */
static int open_ticket(struct rem_ticket_ring *r, struct ticket *t)
{
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    EVP_MAC_CTX *h = new_hmac();
    unsigned char name[REM_TICKET_NAME_BYTES], out[64], mac[EVP_MAX_MD_SIZE];
    size_t mac_len = 0;
    int n = 0, fin = 0;
    memcpy(name, t->name, sizeof(name));
    int rc = rem_ticket_ring_crypt(r, name, t->iv, c, h, 0);
    if (rc > 0) {
        assert_int_equal(EVP_MAC_init(h, NULL, 0, NULL), 1);
        assert_int_equal(EVP_MAC_update(h, t->name, sizeof(t->name)), 1);
        assert_int_equal(EVP_MAC_update(h, t->ct, (size_t)t->ct_len), 1);
        assert_int_equal(EVP_MAC_final(h, mac, &mac_len, sizeof(mac)), 1);
        assert_int_equal(mac_len, t->mac_len);
        assert_memory_equal(mac, t->mac, mac_len);
        assert_int_equal(EVP_DecryptUpdate(c, out, &n, t->ct, t->ct_len), 1);
        assert_int_equal(EVP_DecryptFinal_ex(c, out + n, &fin), 1);
        assert_int_equal(n + fin, sizeof(state_bytes));
        assert_memory_equal(out, state_bytes, sizeof(state_bytes));
    }
    EVP_CIPHER_CTX_free(c);
    EVP_MAC_CTX_free(h);
    return rc;
}

static void test_rotation(void **state)
{
    struct rem_ticket_ring *r = rem_ticket_ring_new();
    assert_non_null(r);
    struct ticket t0, t1;
    seal(r, &t0);
    assert_int_equal(open_ticket(r, &t0), 1);
    /* Each ticket gets an IV of its own under the same key name. */
    seal(r, &t1);
    assert_memory_equal(t0.name, t1.name, sizeof(t0.name));
    assert_memory_not_equal(t0.iv, t1.iv, 16);
    /* One rotation: a new current key; the old ticket opens and is to be renewed. */
    assert_int_equal(rem_ticket_ring_rotate(r), 0);
    seal(r, &t1);
    assert_memory_not_equal(t0.name, t1.name, sizeof(t0.name));
    assert_int_equal(open_ticket(r, &t1), 1);
    assert_int_equal(open_ticket(r, &t0), 2);
    /* Its key stays for REM_TICKET_KEYS - 1 rotations, then is gone: a full handshake. */
    for (int i = 2; i < REM_TICKET_KEYS; i++) {
        assert_int_equal(rem_ticket_ring_rotate(r), 0);
        assert_int_equal(open_ticket(r, &t0), 2);
    }
    assert_int_equal(rem_ticket_ring_rotate(r), 0);
    assert_int_equal(open_ticket(r, &t0), 0);
    assert_int_equal(open_ticket(r, &t1), REM_TICKET_KEYS > 2 ? 2 : 0);
    rem_ticket_ring_free(r);
}

static void test_foreign_tickets(void **state)
{
    struct rem_ticket_ring *a = rem_ticket_ring_new(), *b = rem_ticket_ring_new();
    assert_non_null(a);
    assert_non_null(b);
    struct ticket t;
    seal(a, &t);
    assert_int_equal(open_ticket(b, &t), 0);
    memset(t.name, 0, sizeof(t.name));
    assert_int_equal(open_ticket(a, &t), 0);
    rem_ticket_ring_free(a);
    rem_ticket_ring_free(b);
    rem_ticket_ring_free(NULL);
}

/* The process's ring is one ring, whoever asks. */
static void test_process_ring(void **state)
{
    struct rem_ticket_ring *p = rem_tls_tickets();
    assert_non_null(p);
    assert_ptr_equal(rem_tls_tickets(), p);
    struct ticket t;
    seal(p, &t);
    rem_tls_tickets_rotate();
    assert_int_equal(open_ticket(p, &t), 2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rotation),
        cmocka_unit_test(test_foreign_tickets),
        cmocka_unit_test(test_process_ring),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
