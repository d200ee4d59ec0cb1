/*
 * buf: a free list of fixed-size relay buffers. The list is per thread (each worker's loop has
 * its own; a buffer taken on one thread may be given back on another); it caps how many idle
 * buffers it keeps, and buf_trim frees those that no one took since its last call, so memory
 * returns to the allocator after a burst.
 */
#include "pgtide/buf.h"

#include <stdlib.h>
#include <string.h>

#define BUF_POOL_MAX 256

static __thread struct buf *free_list;
static __thread size_t free_count;
static __thread size_t free_low; /* fewest pooled since the last buf_trim: these were not needed */
static size_t allocated;         /* every thread's (atomic) */

struct buf *buf_get(void)
{
    struct buf *b = free_list;
    if (b != NULL) {
        free_list = b->next_free;
        free_count--;
        if (free_count < free_low)
            free_low = free_count;
    } else {
        b = malloc(sizeof(*b));
        if (b == NULL)
            return NULL;
        __atomic_add_fetch(&allocated, 1, __ATOMIC_RELAXED);
    }
    b->next_free = NULL;
    b->rpos = b->wpos = 0;
    return b;
}

void buf_put(struct buf *b)
{
    if (b == NULL)
        return;
    if (free_count >= BUF_POOL_MAX) {
        free(b);
        __atomic_sub_fetch(&allocated, 1, __ATOMIC_RELAXED);
        return;
    }
    b->next_free = free_list;
    free_list = b;
    free_count++;
}

void buf_compact(struct buf *b)
{
    if (b->rpos == 0)
        return;
    uint32_t n = b->wpos - b->rpos;
    if (n > 0)
        memmove(b->data, b->data + b->rpos, n);
    b->rpos = 0;
    b->wpos = n;
}

int buf_append(struct buf *b, const void *p, size_t len)
{
    if (len > buf_space(b)) {
        buf_compact(b);
        if (len > buf_space(b))
            return -1;
    }
    memcpy(b->data + b->wpos, p, len);
    b->wpos += (uint32_t) len;
    return 0;
}

size_t buf_allocated(void)
{
    return __atomic_load_n(&allocated, __ATOMIC_RELAXED);
}

size_t buf_pooled(void)
{
    return free_count;
}

void buf_trim(void)
{
    for (; free_low > 0 && free_list != NULL; free_low--) {
        struct buf *b = free_list;
        free_list = b->next_free;
        free_count--;
        __atomic_sub_fetch(&allocated, 1, __ATOMIC_RELAXED);
        free(b);
    }
    free_low = free_count;
}

void buf_free_pooled(void)
{
    free_low = free_count;
    buf_trim();
}
