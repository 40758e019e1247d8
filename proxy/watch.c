/* SPDX-License-Identifier: Apache-2.0
 * watch: inotify on a file's directory with a debounce (watch.h). */
#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <unistd.h>

#include <event2/event.h>

#include "error.h"
#include "log.h"
#include "watch.h"

struct rem_watch {
    int fd;                 /* owned: the inotify instance */
    struct event *read_ev;  /* owned */
    struct event *quiet_ev; /* owned: the debounce timer */
    struct timeval debounce;
    char *dir, *name; /* owned: the watched directory and the file's name in it */
    void (*changed)(void *arg);
    void *arg;
};

static void on_quiet(evutil_socket_t fd, short what, void *arg)
{
    struct rem_watch *w = arg;
    w->changed(w->arg);
}

static void on_read(evutil_socket_t fd, short what, void *arg)
{
    struct rem_watch *w = arg;
    char buf[8192] __attribute__((aligned(__alignof__(struct inotify_event))));
    bool relevant = false;
    for (;;) {
        ssize_t n = read(w->fd, buf, sizeof(buf));
        if (n <= 0)
            break; /* EAGAIN: all read */
        for (char *p = buf; p < buf + n;) {
            const struct inotify_event *ev = (const struct inotify_event *)p;
            if (ev->mask & IN_Q_OVERFLOW)
                relevant = true; /* events were lost: assume the worst */
            else if (ev->len && (strcmp(ev->name, w->name) == 0 || strncmp(ev->name, "..", 2) == 0))
                relevant = true;
            p += sizeof(*ev) + ev->len;
        }
    }
    if (relevant)
        event_add(w->quiet_ev, &w->debounce); /* re-arms: fires after the last event */
}

struct rem_watch *rem_watch_new(struct event_base *base, const char *path, uint64_t debounce_ms,
                                void (*changed)(void *arg), void *arg)
{
    struct rem_watch *w = rem_xcalloc(1, sizeof(*w));
    w->fd = -1;
    w->changed = changed;
    w->arg = arg;
    w->debounce.tv_sec = (time_t)(debounce_ms / 1000);
    w->debounce.tv_usec = (suseconds_t)((debounce_ms % 1000) * 1000);
    const char *slash = strrchr(path, '/');
    w->dir = slash ? strndup(path, slash == path ? 1 : (size_t)(slash - path)) : strdup(".");
    w->name = strdup(slash ? slash + 1 : path);
    if (!w->dir || !w->name)
        abort();
    w->fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (w->fd < 0 || inotify_add_watch(w->fd, w->dir,
                                       IN_CLOSE_WRITE | IN_MODIFY | IN_MOVED_TO | IN_MOVED_FROM |
                                           IN_CREATE | IN_DELETE | IN_ATTRIB) < 0) {
        rem_log_warn("config: cannot watch %s for changes (%s); reload with SIGHUP", w->dir,
                     strerror(errno));
        rem_watch_free(w);
        return NULL;
    }
    w->read_ev = event_new(base, w->fd, EV_READ | EV_PERSIST, on_read, w);
    w->quiet_ev = evtimer_new(base, on_quiet, w);
    if (!w->read_ev || !w->quiet_ev || event_add(w->read_ev, NULL) < 0) {
        rem_log_warn("config: cannot watch %s for changes (out of memory)", w->dir);
        rem_watch_free(w);
        return NULL;
    }
    return w;
}

void rem_watch_free(struct rem_watch *w)
{
    if (!w)
        return;
    if (w->read_ev)
        event_free(w->read_ev);
    if (w->quiet_ev)
        event_free(w->quiet_ev);
    if (w->fd >= 0)
        close(w->fd);
    free(w->dir);
    free(w->name);
    free(w);
}
