/* SPDX-License-Identifier: Apache-2.0
 * admin_client: one blocking request to the admin port (CLI only). */
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "admin_client.h"
#include "config.h"

int rem_admin_request(const struct rem_cfg_listener *admin, const char *method, const char *path,
                      unsigned timeout_ms, FILE *out)
{
    struct rem_sockaddr a = admin->addr;
    /* 0.0.0.0 / :: mean "every address": the admin port is reachable on loopback. */
    if (a.ss.ss_family == AF_INET6) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&a.ss;
        if (IN6_IS_ADDR_UNSPECIFIED(&s6->sin6_addr))
            s6->sin6_addr = in6addr_loopback;
    } else {
        struct sockaddr_in *s4 = (struct sockaddr_in *)&a.ss;
        if (s4->sin_addr.s_addr == htonl(INADDR_ANY))
            s4->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    }
    int fd = socket(a.ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        fprintf(stderr, "remora: socket: %s\n", strerror(errno));
        return -1;
    }
    struct timeval tv = {(time_t)(timeout_ms / 1000), (suseconds_t)((timeout_ms % 1000) * 1000)};
    (void)setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    (void)setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    char req[1024];
    int n = snprintf(req, sizeof(req),
                     "%s %s HTTP/1.1\r\nHost: remora\r\nContent-Length: 0\r\n"
                     "Connection: close\r\n\r\n",
                     method, path);
    if (n < 0 || (size_t)n >= sizeof(req)) {
        fprintf(stderr, "remora: request too long\n");
        close(fd);
        return -1;
    }
    if (connect(fd, (struct sockaddr *)&a.ss, a.len) < 0 || send(fd, req, (size_t)n, 0) != n) {
        fprintf(stderr, "remora: admin %s: %s\n", admin->address, strerror(errno));
        close(fd);
        return -1;
    }
    size_t cap = 65536, len = 0;
    char *buf = malloc(cap + 1);
    ssize_t r;
    while (buf && len < cap && (r = recv(fd, buf + len, cap - len, 0)) > 0)
        len += (size_t)r;
    close(fd);
    if (!buf)
        return -1;
    buf[len] = '\0';
    int status = -1;
    char *body = strstr(buf, "\r\n\r\n");
    if (sscanf(buf, "HTTP/1.%*d %d", &status) != 1 || !body) {
        fprintf(stderr, "remora: admin %s: no HTTP answer\n", admin->address);
        free(buf);
        return -1;
    }
    fputs(body + 4, out);
    free(buf);
    return status;
}
