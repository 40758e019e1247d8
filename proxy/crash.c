/* SPDX-License-Identifier: Apache-2.0
 * crash: fault handlers that log one JSON line with a backtrace and die by the same signal. */
#include <execinfo.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "crash.h"

#define REM_CRASH_FRAMES 48
#define REM_CRASH_STACK (64 * 1024)

static const int fault_signals[] = {SIGSEGV, SIGBUS, SIGABRT, SIGFPE, SIGILL};

/* A fixed buffer filled with async-signal-safe appends only (no stdio, no malloc). */
struct sbuf {
    char b[4096];
    size_t n;
};

static void put(struct sbuf *s, const char *p)
{
    while (*p && s->n < sizeof(s->b) - 2)
        s->b[s->n++] = *p++;
}

static void put_u(struct sbuf *s, uint64_t v, unsigned base)
{
    char tmp[24];
    size_t i = 0;
    do {
        tmp[i++] = "0123456789abcdef"[v % base];
        v /= base;
    } while (v && i < sizeof(tmp));
    while (i && s->n < sizeof(s->b) - 2)
        s->b[s->n++] = tmp[--i];
}

static const char *sig_name(int sig)
{
    switch (sig) {
    case SIGSEGV:
        return "SIGSEGV";
    case SIGBUS:
        return "SIGBUS";
    case SIGABRT:
        return "SIGABRT";
    case SIGFPE:
        return "SIGFPE";
    case SIGILL:
        return "SIGILL";
    default:
        return "signal";
    }
}

static void on_fault(int sig, siginfo_t *si, void *uctx)
{
    struct sbuf s = {.n = 0};
    void *frames[REM_CRASH_FRAMES];
    int n = backtrace(frames, REM_CRASH_FRAMES); /* safe once libgcc is loaded (install) */
    struct timespec ts = {0, 0};
    (void)clock_gettime(CLOCK_REALTIME, &ts); /* async-signal-safe, unlike gmtime */
    put(&s, "{\"ts_unix\":");
    put_u(&s, (uint64_t)ts.tv_sec, 10);
    put(&s, ",\"level\":\"error\",\"msg\":\"crash\",\"signal\":\"");
    put(&s, sig_name(sig));
    put(&s, "\",\"signo\":");
    put_u(&s, (uint64_t)sig, 10);
    put(&s, ",\"addr\":\"0x");
    put_u(&s, (uint64_t)(uintptr_t)(si ? si->si_addr : NULL), 16);
    put(&s, "\",\"tid\":");
    put_u(&s, (uint64_t)syscall(SYS_gettid), 10);
    put(&s, ",\"backtrace\":[");
    for (int i = 0; i < n; i++) {
        put(&s, i ? ",\"0x" : "\"0x");
        put_u(&s, (uint64_t)(uintptr_t)frames[i], 16);
        put(&s, "\"");
    }
    put(&s, "]}\n");
    s.b[s.n] = '\0';
    ssize_t off = 0;
    while ((size_t)off < s.n) {
        ssize_t w = write(STDERR_FILENO, s.b + off, s.n - (size_t)off);
        if (w <= 0)
            break;
        off += w;
    }
    /* SA_RESETHAND restored the default action: the same signal ends the process the way the
     * fault would have (status, core dump). */
    (void)uctx;
    raise(sig);
}

/* Sanitizer builds keep their own fault reports (ASan installs its SIGSEGV handler). */
#if defined(__SANITIZE_ADDRESS__)
#define REM_CRASH_HANDLERS 0
#else
#define REM_CRASH_HANDLERS 1
#endif

static _Thread_local void *alt_stack;

void rem_crash_thread_init(void)
{
    if (!REM_CRASH_HANDLERS || alt_stack)
        return;
    stack_t ss = {.ss_size = REM_CRASH_STACK};
    ss.ss_sp = malloc(REM_CRASH_STACK);
    if (ss.ss_sp && sigaltstack(&ss, NULL) == 0)
        alt_stack = ss.ss_sp;
    else
        free(ss.ss_sp);
}

void rem_crash_thread_done(void)
{
    if (!alt_stack)
        return;
    stack_t ss = {.ss_flags = SS_DISABLE};
    if (sigaltstack(&ss, NULL) == 0) {
        free(alt_stack);
        alt_stack = NULL;
    }
}

void rem_crash_install(void)
{
    if (!REM_CRASH_HANDLERS)
        return;
    void *warm[2];
    (void)backtrace(warm, 2); /* loads libgcc now: backtrace() may not allocate in the handler */
    rem_crash_thread_init();
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_sigaction = on_fault;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESETHAND | SA_NODEFER;
    sigemptyset(&sa.sa_mask);
    for (size_t i = 0; i < sizeof(fault_signals) / sizeof(fault_signals[0]); i++)
        (void)sigaction(fault_signals[i], &sa, NULL);
}
