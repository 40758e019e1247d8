/* SPDX-License-Identifier: Apache-2.0
 * test_loop: rem_loop_run over socketpairs: the flush list runs after one more look for ready
 * events (a socket that became readable while a callback ran is read before the flush), a
 * flush queued before the loop starts still runs, a loopbreak ends the run, and a run with
 * nothing registered returns. Never sleeps: every wait is on bytes already written. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>

#include "loop.h"

struct fixture {
    struct rem_loop loop;
    int a[2], b[2];
    struct event *ev_a, *ev_b;
    struct rem_flush flush;
    char log[16]; /* 'a', 'b' read, 'f' flush, in order */
    size_t n_log;
};

static void note(struct fixture *f, char c)
{
    if (f->n_log + 1 < sizeof(f->log))
        f->log[f->n_log++] = c;
}

static void drain(int fd)
{
    char buf[16];
    while (recv(fd, buf, sizeof(buf), MSG_DONTWAIT) > 0)
        ;
}

/* a's reader queues the flush and makes b readable: b's bytes arrive after the poll that
 * reported a, as the next request of a burst does. */
static void on_a(evutil_socket_t fd, short what, void *arg)
{
    struct fixture *f = arg;
    drain(fd);
    note(f, 'a');
    rem_loop_flush_later(&f->loop, &f->flush, f->flush.fn);
    assert_int_equal(send(f->b[0], "x", 1, 0), 1);
}

static void on_b(evutil_socket_t fd, short what, void *arg)
{
    struct fixture *f = arg;
    drain(fd);
    note(f, 'b');
}

static void on_flush(struct rem_flush *fl)
{
    struct fixture *f = (struct fixture *)((char *)fl - offsetof(struct fixture, flush));
    note(f, 'f');
    event_base_loopbreak(f->loop.base);
}

static int setup(void **state)
{
    static struct fixture f;
    memset(&f, 0, sizeof(f));
    assert_int_equal(rem_loop_init(&f.loop), 0);
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, f.a), 0);
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, f.b), 0);
    f.ev_a = event_new(f.loop.base, f.a[1], EV_READ | EV_PERSIST, on_a, &f);
    f.ev_b = event_new(f.loop.base, f.b[1], EV_READ | EV_PERSIST, on_b, &f);
    assert_non_null(f.ev_a);
    assert_non_null(f.ev_b);
    assert_int_equal(event_add(f.ev_a, NULL), 0);
    assert_int_equal(event_add(f.ev_b, NULL), 0);
    f.flush.fn = on_flush;
    *state = &f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    event_free(f->ev_a);
    event_free(f->ev_b);
    rem_loop_dispose(&f->loop);
    for (int i = 0; i < 2; i++) {
        close(f->a[i]);
        close(f->b[i]);
    }
    return 0;
}

/* What became ready while a's callback ran is read before the flush writes. */
static void test_look_before_flush(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(send(f->a[0], "x", 1, 0), 1);
    assert_int_equal(rem_loop_run(&f->loop), 0);
    assert_string_equal(f->log, "abf");
}

/* A flush queued before the loop runs (while a worker is being built) is not lost. */
static void test_flush_queued_before_run(void **state)
{
    struct fixture *f = *state;
    rem_loop_flush_later(&f->loop, &f->flush, on_flush);
    assert_int_equal(rem_loop_run(&f->loop), 0);
    assert_string_equal(f->log, "f");
}

/* With nothing registered, the run returns, as event_base_dispatch does. */
static void test_nothing_registered(void **state)
{
    struct fixture *f = *state;
    event_del(f->ev_a);
    event_del(f->ev_b);
    assert_int_equal(rem_loop_run(&f->loop), 0);
    assert_string_equal(f->log, "");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_look_before_flush, setup, teardown),
        cmocka_unit_test_setup_teardown(test_flush_queued_before_run, setup, teardown),
        cmocka_unit_test_setup_teardown(test_nothing_registered, setup, teardown),
    };
    alarm(60); /* a hard stop if anything ever blocks */
    return cmocka_run_group_tests(tests, NULL, NULL);
}
