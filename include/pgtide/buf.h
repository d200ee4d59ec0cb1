/*
 * buf: fixed-size I/O buffers for the relay, taken from a free list and given back when a
 * connection goes idle, so that idle clients hold no buffer and the hot path never allocates.
 * A buffer is a byte array with a read position (first unconsumed byte) and a write position
 * (end of valid data).
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

#define BUF_SIZE (32 * 1024)

struct buf {
    struct buf *next_free; /* free-list link while pooled */
    uint32_t rpos, wpos;   /* valid bytes are data[rpos..wpos) */
    uint8_t data[BUF_SIZE];
};

/* Takes a buffer from the process-wide free list (or mallocs one). NULL when out of memory. */
struct buf *buf_get(void);

/* Gives a buffer back (NULL is ignored). Keeps at most a bounded number pooled. */
void buf_put(struct buf *b);

/* Bytes of valid data. */
static inline uint32_t buf_len(const struct buf *b)
{
    return b->wpos - b->rpos;
}

/* Free space at the end. */
static inline uint32_t buf_space(const struct buf *b)
{
    return BUF_SIZE - b->wpos;
}

/* Moves valid data to the start, maximising buf_space(). */
void buf_compact(struct buf *b);

/* Appends len bytes; returns 0, or -1 when they do not fit (nothing written). */
int buf_append(struct buf *b, const void *p, size_t len);

/* Number of buffers currently allocated (in use + pooled), for SHOW MEM-like stats. */
size_t buf_allocated(void);

/* Number of buffers pooled (allocated, not in use). */
size_t buf_pooled(void);

/* Frees the pooled buffers that stayed unused since the previous call (the fewest pooled at
   any time in between), so that a burst's buffers do not stay after it. Called periodically. */
void buf_trim(void);

/* Frees every buffer this thread keeps pooled (a worker thread that ends). */
void buf_free_pooled(void);
