/*
 * Preloaded into pod processes (LD_PRELOAD): outgoing IPv4 connections to a
 * loopback address leave from the pod's own address instead of 127.0.0.1.
 *
 * Pods share the host's network; each has its own loopback address (POD_IP)
 * to listen on, but the kernel picks 127.0.0.1 as the source of every
 * connection to 127.x.y.z. Services, the mesh and NetworkChaos tell callers
 * apart by source address, so an unbound socket is bound to
 * $PITWALL_POD_SOURCE_IP (port 0: any free one) just before connect().
 * Sockets the program bound itself, other families and other destinations
 * are left alone; a failed bind is ignored (the connection then leaves as
 * before). Static binaries (no dynamic libc) are not affected.
 *
 * Built as an optional extension module only to be compiled by pip; it is
 * never imported and uses no Python API.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dlfcn.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

typedef int (*connect_fn)(int, const struct sockaddr *, socklen_t);

static connect_fn real_connect;
static in_addr_t source_ip;
static int have_source;

__attribute__((constructor)) static void podsource_init(void) {
    real_connect = (connect_fn)dlsym(RTLD_NEXT, "connect");
    const char *ip = getenv("PITWALL_POD_SOURCE_IP");
    struct in_addr a;
    if (ip != NULL && inet_pton(AF_INET, ip, &a) == 1 && (ntohl(a.s_addr) >> 24) == 127) {
        source_ip = a.s_addr;
        have_source = 1;
    }
}

static int unbound_ipv4(int fd) {
    struct sockaddr_in cur;
    socklen_t len = sizeof cur;
    memset(&cur, 0, sizeof cur);
    if (getsockname(fd, (struct sockaddr *)&cur, &len) != 0 || cur.sin_family != AF_INET) {
        return 0;
    }
    return cur.sin_addr.s_addr == htonl(INADDR_ANY) && cur.sin_port == 0;
}

int connect(int fd, const struct sockaddr *addr, socklen_t addrlen) {
    if (real_connect == NULL) {
        podsource_init();
        if (real_connect == NULL) {
            errno = ENOSYS;
            return -1;
        }
    }
    if (have_source && addr != NULL && addr->sa_family == AF_INET && addrlen >= sizeof(struct sockaddr_in)) {
        const struct sockaddr_in *to = (const struct sockaddr_in *)addr;
        if ((ntohl(to->sin_addr.s_addr) >> 24) == 127 && unbound_ipv4(fd)) {
            struct sockaddr_in from;
            int saved = errno;
            memset(&from, 0, sizeof from);
            from.sin_family = AF_INET;
            from.sin_addr.s_addr = source_ip;
            (void)bind(fd, (const struct sockaddr *)&from, sizeof from);
            errno = saved;
        }
    }
    return real_connect(fd, addr, addrlen);
}
