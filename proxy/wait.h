/* SPDX-License-Identifier: Apache-2.0
 * wait: the handle through which an asynchronous service (admission, the first DNS answer of
 * a cluster, an upconn slot in a pool) answers whoever waits on it, without knowing who that
 * is. The waiter embeds one handle per pending thing and sets done; the service queues the
 * handle (link) and calls done once, from its own event (never inside the call that queued
 * it), unless the waiter cancelled first: after a cancel, done never runs. Header only. */
#ifndef REM_WAIT_H
#define REM_WAIT_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/queue.h>

struct rem_wait {
    TAILQ_ENTRY(rem_wait) link; /* in the service's FIFO while queued */
    /* rc: 0 granted / ready, or a negative -REM_E_* (the waiter fails with it). */
    void (*done)(struct rem_wait *w, int rc);
    uint64_t since_ms; /* when it was queued (rem_now_ms) */
    bool queued;
};

TAILQ_HEAD(rem_wait_list, rem_wait);

#define REM_WAIT_OWNER(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

#endif
