/* SPDX-License-Identifier: Apache-2.0
 * crash: what remora does when it faults (SIGSEGV, SIGBUS, SIGABRT, SIGFPE, SIGILL): one JSON
 * line on stderr with the signal, the thread and a backtrace (return addresses), written with
 * async-signal-safe calls only, then the same signal again with its default action, so the exit
 * status and a core dump are those of the fault. Owns an alternate signal stack (a stack
 * overflow can still be reported). */
#ifndef REM_CRASH_H
#define REM_CRASH_H

/* Installs the handlers for the calling process (all threads). Call once, early in main. */
void rem_crash_install(void);
/* Gives the calling thread an alternate signal stack (each worker thread calls it), and
 * takes it back before the thread ends. */
void rem_crash_thread_init(void);
void rem_crash_thread_done(void);

#endif
