/*
 * nullproxy: the cheapest proxy hop there can be, for the benchmark only. Each TCP client gets
 * its own connection to the server (a unix socket path or host:port) and bytes are copied both
 * ways as they come: no protocol parsing, no pooling, no authentication of its own (the server
 * authenticates the client through it), one epoll loop, one read and one send per chunk.
 *
 * contrib/bench/bench.sh runs it as an extra column (BENCH_NULLPROXY=1): whatever pgtide or
 * PgBouncer reach on a row, no user-space proxy on the same host can beat this figure by much,
 * since the hop's cost is the kernel's (two more socket transfers and wake-ups per round trip).
 *
 * usage: nullproxy LISTEN_PORT /path/to/.s.PGSQL.NNNN | HOST:PORT
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define CHUNK 65536

struct pair;

/* One side of a relayed connection: bytes read here wait in buf until the other side took them. */
struct end {
    struct pair *pair;
    int fd;
    char buf[CHUNK];
    size_t len, off;
};

struct pair {
    struct end e[2]; /* 0: the client, 1: the server */
};

static int epfd;
static struct end gone; /* stands for an end closed earlier in the same batch of events */

static int watch(struct end *x, int op, uint32_t events)
{
    struct epoll_event ev = {.events = events, .data.ptr = x};
    return epoll_ctl(epfd, op, x->fd, &ev);
}

static void pair_close(struct pair *p)
{
    for (int i = 0; i < 2; i++)
        close(p->e[i].fd); /* closing drops the epoll registrations */
    free(p);
}

/* Sends what `from` holds to its peer. -1: the pair is gone. Waits for EPOLLOUT on a full peer,
   and stops reading `from` meanwhile. */
static int flush(struct end *from)
{
    struct end *to = &from->pair->e[from == &from->pair->e[0] ? 1 : 0];
    while (from->off < from->len) {
        ssize_t n = send(to->fd, from->buf + from->off, from->len - from->off, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (watch(from, EPOLL_CTL_MOD, 0) < 0 ||
                watch(to, EPOLL_CTL_MOD, EPOLLIN | EPOLLOUT) < 0)
                return -1;
            return 0;
        }
        if (n <= 0)
            return -1;
        from->off += (size_t) n;
    }
    from->len = from->off = 0;
    return 0;
}

/* x is readable (or its peer writable again, when x's peer had a backlog). -1: pair gone. */
static int on_event(struct end *x, uint32_t events)
{
    struct pair *p = x->pair;
    struct end *peer = &p->e[x == &p->e[0] ? 1 : 0];
    if (events & EPOLLERR)
        return -1;
    if (events & EPOLLOUT) { /* x was full: the backlog is the peer's */
        if (flush(peer) < 0)
            return -1;
        if (peer->len == 0 &&
            (watch(x, EPOLL_CTL_MOD, EPOLLIN) < 0 || watch(peer, EPOLL_CTL_MOD, EPOLLIN) < 0))
            return -1;
    }
    if ((events & (EPOLLIN | EPOLLHUP | EPOLLERR)) && x->len == 0) {
        ssize_t n = recv(x->fd, x->buf, CHUNK, 0);
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            return 0;
        if (n <= 0)
            return -1;
        x->len = (size_t) n;
        x->off = 0;
        return flush(x);
    }
    return 0;
}

static int connect_server(const char *target)
{
    int fd;
    const char *colon = strrchr(target, ':');
    if (target[0] == '/') {
        struct sockaddr_un un = {.sun_family = AF_UNIX};
        if (strlen(target) >= sizeof(un.sun_path))
            return -1;
        strcpy(un.sun_path, target);
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd >= 0 && connect(fd, (struct sockaddr *) &un, sizeof(un)) < 0) {
            close(fd);
            return -1;
        }
    } else if (colon != NULL) {
        struct sockaddr_in in = {.sin_family = AF_INET,
                                 .sin_port = htons((uint16_t) atoi(colon + 1))};
        char host[64];
        snprintf(host, sizeof(host), "%.*s", (int) (colon - target), target);
        if (inet_pton(AF_INET, host, &in.sin_addr) != 1)
            return -1;
        fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        int one = 1;
        if (fd >= 0 && (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) < 0 ||
                        connect(fd, (struct sockaddr *) &in, sizeof(in)) < 0)) {
            close(fd);
            return -1;
        }
    } else
        return -1;
    return fd;
}

static void on_accept(int lfd, const char *target)
{
    int cfd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (cfd < 0)
        return;
    int one = 1;
    setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    int sfd = connect_server(target); /* blocking connect: a local server answers at once */
    struct pair *p = sfd >= 0 ? calloc(1, sizeof(*p)) : NULL;
    if (p == NULL) {
        if (sfd >= 0)
            close(sfd);
        close(cfd);
        return;
    }
    if (fcntl(sfd, F_SETFL, O_NONBLOCK) < 0) {
        close(sfd);
        close(cfd);
        free(p);
        return;
    }
    p->e[0] = (struct end){.pair = p, .fd = cfd};
    p->e[1] = (struct end){.pair = p, .fd = sfd};
    if (watch(&p->e[0], EPOLL_CTL_ADD, EPOLLIN) < 0 || watch(&p->e[1], EPOLL_CTL_ADD, EPOLLIN) < 0)
        pair_close(p);
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s LISTEN_PORT /path/.s.PGSQL.N|HOST:PORT\n", argv[0]);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    struct sockaddr_in in = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t) atoi(argv[1])),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (lfd < 0 || setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
        bind(lfd, (struct sockaddr *) &in, sizeof(in)) < 0 || listen(lfd, 1024) < 0) {
        perror("nullproxy: listen");
        return 1;
    }
    epfd = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event lev = {.events = EPOLLIN, .data.ptr = NULL};
    if (epfd < 0 || epoll_ctl(epfd, EPOLL_CTL_ADD, lfd, &lev) < 0) {
        perror("nullproxy: epoll");
        return 1;
    }
    struct epoll_event evs[256];
    for (;;) {
        int n = epoll_wait(epfd, evs, 256, -1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            perror("nullproxy: epoll_wait");
            return 1;
        }
        for (int i = 0; i < n; i++) {
            struct end *x = evs[i].data.ptr;
            if (x == NULL)
                on_accept(lfd, argv[2]);
            else if (x != &gone && on_event(x, evs[i].events) < 0) {
                /* the pair's other end may have an event later in this batch */
                struct pair *p = x->pair;
                for (int j = i + 1; j < n; j++) {
                    struct end *y = evs[j].data.ptr;
                    if (y != NULL && y != &gone && y->pair == p)
                        evs[j].data.ptr = &gone;
                }
                pair_close(p);
            }
        }
    }
}
