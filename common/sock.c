/*
 * sock: non-blocking reads and writes over plain or TLS sockets. For TLS, OpenSSL's
 * WANT_READ/WANT_WRITE results become SOCK_AGAIN with want_read/want_write set.
 */
#include "pgtide/sock.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <sys/socket.h>
#include <unistd.h>

static ssize_t tls_result(struct sock *s, int rc)
{
    int e = SSL_get_error(s->ssl, rc);
    s->want_read = s->want_write = false;
    switch (e) {
    case SSL_ERROR_WANT_READ:
        s->want_read = true;
        return SOCK_AGAIN;
    case SSL_ERROR_WANT_WRITE:
        s->want_write = true;
        return SOCK_AGAIN;
    case SSL_ERROR_ZERO_RETURN:
        return SOCK_EOF;
    case SSL_ERROR_SYSCALL:
        if (errno == 0)
            return SOCK_EOF;
        return SOCK_ERROR;
    default:
        return SOCK_ERROR;
    }
}

ssize_t sock_read(struct sock *s, void *p, size_t len)
{
    if (s->ssl != NULL) {
        ERR_clear_error();
        errno = 0;
        int rc = SSL_read(s->ssl, p, len > INT32_MAX ? INT32_MAX : (int) len);
        if (rc > 0) {
            s->want_read = s->want_write = false;
            return rc;
        }
        return tls_result(s, rc);
    }
    for (;;) {
        ssize_t n = read(s->fd, p, len);
        if (n > 0)
            return n;
        if (n == 0)
            return SOCK_EOF;
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return SOCK_AGAIN;
        return SOCK_ERROR;
    }
}

ssize_t sock_write(struct sock *s, const void *p, size_t len)
{
    if (s->ssl != NULL) {
        ERR_clear_error();
        errno = 0;
        int rc = SSL_write(s->ssl, p, len > INT32_MAX ? INT32_MAX : (int) len);
        if (rc > 0) {
            s->want_read = s->want_write = false;
            return rc;
        }
        ssize_t r = tls_result(s, rc);
        return r == SOCK_EOF ? SOCK_ERROR : r;
    }
    for (;;) {
        ssize_t n = send(s->fd, p, len, MSG_NOSIGNAL);
        if (n >= 0)
            return n == 0 ? SOCK_AGAIN : n;
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return SOCK_AGAIN;
        return SOCK_ERROR;
    }
}

int sock_tls_start(struct sock *s, SSL_CTX *ctx)
{
    s->ssl = SSL_new(ctx);
    if (s->ssl == NULL)
        return -1;
    if (SSL_set_fd(s->ssl, s->fd) != 1) {
        SSL_free(s->ssl);
        s->ssl = NULL;
        return -1;
    }
    /* Partial writes are fine: the relay keeps unsent bytes in its buffer. */
    SSL_set_mode(s->ssl, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    return 0;
}

int sock_tls_handshake(struct sock *s, bool accept)
{
    ERR_clear_error();
    errno = 0;
    int rc = accept ? SSL_accept(s->ssl) : SSL_connect(s->ssl);
    if (rc == 1) {
        s->want_read = s->want_write = false;
        return 1;
    }
    ssize_t r = tls_result(s, rc);
    return r == SOCK_AGAIN ? SOCK_AGAIN : SOCK_ERROR;
}

void sock_close(struct sock *s)
{
    if (s->ssl != NULL) {
        /* best effort close_notify, so the peer sees an orderly TLS close; never waits */
        if (SSL_is_init_finished(s->ssl)) {
            ERR_clear_error();
            (void) SSL_shutdown(s->ssl);
        }
        SSL_free(s->ssl);
        s->ssl = NULL;
    }
    if (s->fd >= 0) {
        close(s->fd);
        s->fd = -1;
    }
}

int sock_setup(int fd, bool tcp)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
        return -1;
    if (fcntl(fd, F_SETFD, FD_CLOEXEC) < 0)
        return -1;
    if (tcp) {
        int on = 1;
        (void) setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on));
        (void) setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof(on));
    }
    return 0;
}
