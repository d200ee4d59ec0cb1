/*
 * metrics: the Prometheus endpoint (DESIGN.md §6, issue 5). A small HTTP/1.1 server on the
 * proxy's libev loop, listening on metrics_listen (HOST:PORT, [V6]:PORT), answers GET (and HEAD)
 * /metrics with the text exposition format 0.0.4 and anything else with 404 (405 for other
 * methods, 431 for a request head over 8 kB). Every connection is non-blocking with a 10 s
 * deadline and is closed after its answer; at most 64 are served at once. Families: clients and
 * servers by state, parked clients, query/transaction/byte/connection totals (from
 * proxy->stats), a histogram of client wait times, and per compute its state, size, starts, a
 * start-duration histogram, suspends, pauses, failures and CU-seconds (from scaler/account).
 */
#pragma once

#include <ev.h>
#include <stddef.h>
#include <stdint.h>

struct proxy;
struct account;
struct metrics;

/* Upper bounds (seconds) of the client wait-time histogram; +Inf is implied. */
#define METRICS_WAIT_BUCKETS 13
#define METRICS_WAIT_BOUNDS                                                                        \
    {                                                                                              \
        0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 60                         \
    }

/* Opens the listener on listen (not empty) and starts serving on loop. proxy and account (may
   be NULL) must outlive the endpoint. Returns NULL with a message in err (bad address, bind
   failure). */
struct metrics *metrics_new(struct ev_loop *loop, struct proxy *proxy, struct account *account,
                            const char *listen, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* Closes the listener and every connection. NULL is ignored. */
void metrics_free(struct metrics *m);

/* Port actually bound (useful with port 0 in tests). */
int metrics_port(const struct metrics *m);

/* One client stopped waiting (for a compute or a server) after wait_us microseconds. Called by
   the client state machine; m may be NULL (metrics off). */
void metrics_observe_wait(struct metrics *m, uint64_t wait_us);

/* Renders the whole exposition into a malloc'd NUL-terminated buffer (caller frees; *len gets
   its length). NULL when out of memory. What GET /metrics answers. */
char *metrics_render(struct metrics *m, size_t *len) __attribute__((warn_unused_result));
