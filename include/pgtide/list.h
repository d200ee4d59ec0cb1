/*
 * list: intrusive circular doubly-linked lists. A node is embedded in the object it links; the
 * object is recovered with container_of. Removing a node leaves it self-linked, so "is it in a
 * list" is a constant-time question and removal is idempotent.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#define container_of(ptr, type, member) ((type *) ((char *) (ptr) -offsetof(type, member)))

struct list_node {
    struct list_node *prev, *next;
};

static inline void list_init(struct list_node *n)
{
    n->prev = n->next = n;
}

static inline bool list_empty(const struct list_node *head)
{
    return head->next == head;
}

/* Same test as list_empty, read as "this node is linked into no list". */
static inline bool list_unlinked(const struct list_node *n)
{
    return n->next == n;
}

static inline void list_del(struct list_node *n)
{
    n->prev->next = n->next;
    n->next->prev = n->prev;
    n->prev = n->next = n;
}

static inline void list_add_tail(struct list_node *head, struct list_node *n)
{
    n->prev = head->prev;
    n->next = head;
    head->prev->next = n;
    head->prev = n;
}

static inline void list_add_head(struct list_node *head, struct list_node *n)
{
    list_add_tail(head->next, n);
}

static inline struct list_node *list_first(const struct list_node *head)
{
    return list_empty(head) ? NULL : head->next;
}

static inline struct list_node *list_last(const struct list_node *head)
{
    return list_empty(head) ? NULL : head->prev;
}

static inline size_t list_count(const struct list_node *head)
{
    size_t n = 0;
    for (const struct list_node *it = head->next; it != head; it = it->next)
        n++;
    return n;
}

/* Iterates allowing removal of the current node. */
#define list_for_each_safe(it, tmp, head)                                                          \
    for ((it) = (head)->next, (tmp) = (it)->next; (it) != (head); (it) = (tmp), (tmp) = (it)->next)
