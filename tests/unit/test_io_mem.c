/* SPDX-License-Identifier: Apache-2.0
 * test_io_mem: the in-memory io under a real transport and loop: an end from rem_io_mem_init
 * is ready at once and reads what the test feeds; an end from rem_io_mem_connect reports
 * REM_TE_READY exactly once, from the loop and never before the call returns, holds its output
 * until then, and reads bytes that arrived while it was connecting; paired ends carry bytes and
 * EOF both ways. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "io_mem.h"
#include "loop.h"
#include "transport.h"

#define MAX_PASSES 1000

/* What one transport's owner heard, in order. */
struct owner {
    struct evbuffer *in; /* bytes read */
    char log[64];        /* 'R' ready, 'r' read, 'E' eof, 'X' error, in order */
    size_t n_log;
};

static void note(struct owner *o, char c)
{
    if (o->n_log + 1 < sizeof(o->log))
        o->log[o->n_log++] = c;
}

static void on_read(struct rem_transport *t, void *arg)
{
    struct owner *o = arg;
    evbuffer_add_buffer(o->in, rem_transport_input(t));
    rem_transport_rearm(t);
    note(o, 'r');
}

static void on_event(struct rem_transport *t, int what, void *arg)
{
    struct owner *o = arg;
    if (what & REM_TE_READY)
        note(o, 'R');
    if (what & REM_TE_EOF)
        note(o, 'E');
    if (what & REM_TE_ERROR)
        note(o, 'X');
}

static const struct rem_transport_cbs cbs = {.on_read = on_read, .on_event = on_event};

struct fixture {
    struct rem_loop loop;
    struct rem_transport a, b;
    struct owner oa, ob;
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    if (!f || rem_loop_init(&f->loop) < 0)
        return -1;
    rem_transport_clear(&f->a);
    rem_transport_clear(&f->b);
    f->oa.in = evbuffer_new();
    f->ob.in = evbuffer_new();
    *state = f;
    return f->oa.in && f->ob.in ? 0 : -1;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    rem_transport_free(&f->a);
    rem_transport_free(&f->b);
    rem_loop_dispose(&f->loop);
    evbuffer_free(f->oa.in);
    evbuffer_free(f->ob.in);
    free(f);
    return 0;
}

/* Runs the loop until no event is active. */
static void run(struct fixture *f)
{
    for (int i = 0; i < MAX_PASSES; i++) {
        if (event_base_get_num_events(f->loop.base, EVENT_BASE_COUNT_ACTIVE) == 0)
            return;
        assert_int_not_equal(event_base_loop(f->loop.base, EVLOOP_NONBLOCK), -1);
    }
    fail_msg("the loop did not settle");
}

static void assert_log(const struct owner *o, const char *want)
{
    assert_int_equal(o->n_log, strlen(want));
    assert_memory_equal(o->log, want, o->n_log);
}

static void assert_bytes(struct evbuffer *b, const char *want)
{
    assert_int_equal(evbuffer_get_length(b), strlen(want));
    assert_memory_equal(evbuffer_pullup(b, -1), want, strlen(want));
}

/* ---- tests -------------------------------------------------------------------------------- */

/* A ready end reads what the test feeds, then EOF; what it sends, the test takes. */
static void test_init_feed_take(void **state)
{
    struct fixture *f = *state;
    struct evbuffer *got = evbuffer_new();

    assert_int_equal(rem_io_mem_init(&f->a, &f->loop, &cbs, &f->oa, 0, 0, 0), 0);
    assert_int_equal(rem_io_mem_feed(&f->a, "ping", 4), 0);
    assert_log(&f->oa, ""); /* read from the loop, not inside feed */
    run(f);
    assert_bytes(f->oa.in, "ping");
    evbuffer_add(rem_transport_output(&f->a), "pong", 4);
    rem_transport_flush_later(&f->a);
    run(f);
    assert_int_equal(rem_io_mem_take(&f->a, got), 4);
    assert_bytes(got, "pong");
    rem_io_mem_feed_eof(&f->a);
    run(f);
    assert_log(&f->oa, "rE");
    evbuffer_free(got);
}

/* A connecting end: READY once, from the loop; output waits for it. */
static void test_connect_ready_from_loop(void **state)
{
    struct fixture *f = *state;

    assert_int_equal(rem_io_mem_init(&f->b, &f->loop, &cbs, &f->ob, 0, 0, 0), 0);
    assert_int_equal(rem_io_mem_connect(&f->a, &f->loop, &cbs, &f->oa, 0, 0, 0), 0);
    rem_io_mem_pair(&f->a, &f->b);
    assert_log(&f->oa, "");
    evbuffer_add(rem_transport_output(&f->a), "hello", 5);
    assert_int_equal(rem_transport_flush(&f->a), 5); /* nothing leaves before READY */
    run(f);
    assert_log(&f->oa, "R");
    assert_bytes(f->ob.in, "hello"); /* sent once connected */
    assert_log(&f->ob, "r");
    /* And back, then EOF from the far end. */
    evbuffer_add(rem_transport_output(&f->b), "world", 5);
    rem_transport_flush_later(&f->b);
    rem_transport_shutdown_write(&f->b);
    run(f);
    assert_bytes(f->oa.in, "world");
    assert_log(&f->oa, "RrE");
}

/* Bytes that reach a connecting end complete the connect first, then are read. */
static void test_connect_then_early_bytes(void **state)
{
    struct fixture *f = *state;

    assert_int_equal(rem_io_mem_connect(&f->a, &f->loop, &cbs, &f->oa, 0, 0, 0), 0);
    assert_int_equal(rem_io_mem_feed(&f->a, "early", 5), 0);
    assert_log(&f->oa, "");
    run(f);
    assert_log(&f->oa, "Rr");
    assert_bytes(f->oa.in, "early");
}

/* Closed before the loop ran: READY never comes. */
static void test_connect_closed_before_ready(void **state)
{
    struct fixture *f = *state;

    assert_int_equal(rem_io_mem_connect(&f->a, &f->loop, &cbs, &f->oa, 0, 0, 0), 0);
    rem_transport_close(&f->a);
    run(f);
    assert_log(&f->oa, "");
    assert_true(rem_io_mem_closed(&f->a));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_init_feed_take, setup, teardown),
        cmocka_unit_test_setup_teardown(test_connect_ready_from_loop, setup, teardown),
        cmocka_unit_test_setup_teardown(test_connect_then_early_bytes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_connect_closed_before_ready, setup, teardown),
    };
    alarm(60); /* a hard stop if anything ever blocks */
    return cmocka_run_group_tests(tests, NULL, NULL);
}
