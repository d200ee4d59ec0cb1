/*
 * Unit tests of read-your-writes' pure rules: which CommandComplete tags count as writes on
 * each endpoint, the batching of LSN reads (a transaction held while a read runs waits for the
 * next one, never for the running one), and the replica qualification rule
 * (replpolicy_replayed).
 */
#include <check.h>
#include <stdint.h>
#include <stdlib.h>

#include "pgtide/replpolicy.h"
#include "pgtide/ryw.h"
#include "unit.h"

START_TEST(test_tags_primary_endpoint)
{
    /* anything that can write, a SELECT included (it may call a writing function) */
    static const char *const writes[] = {"INSERT 0 1",
                                         "UPDATE 3",
                                         "DELETE 0",
                                         "MERGE 2",
                                         "COPY 10",
                                         "CREATE TABLE",
                                         "DROP TABLE",
                                         "ALTER TABLE",
                                         "TRUNCATE TABLE",
                                         "CALL",
                                         "SELECT 1",
                                         "FETCH 5",
                                         "EXPLAIN",
                                         "DO",
                                         "COMMIT PREPARED",
                                         "PREPARE TRANSACTION",
                                         "NOTIFY",
                                         "CREATE INDEX",
                                         "SELECT 0",
                                         "VACUUM",
                                         ""};
    for (size_t i = 0; i < sizeof(writes) / sizeof(writes[0]); i++)
        ck_assert_msg(ryw_command_may_write(writes[i], false), "%s", writes[i]);
    ck_assert(ryw_command_may_write(NULL, false)); /* a FunctionCall */
    static const char *const reads[] = {
        "BEGIN",     "START TRANSACTION", "COMMIT",       "ROLLBACK",
        "SAVEPOINT", "RELEASE",           "SET",          "RESET",
        "SHOW",      "DISCARD ALL",       "DEALLOCATE",   "DEALLOCATE ALL",
        "PREPARE",   "DECLARE CURSOR",    "CLOSE CURSOR", "LISTEN",
        "UNLISTEN",  "SET CONSTRAINTS"};
    for (size_t i = 0; i < sizeof(reads) / sizeof(reads[0]); i++)
        ck_assert_msg(!ryw_command_may_write(reads[i], false), "%s", reads[i]);
    /* whole tags only: a longer tag that starts like a read is not one */
    ck_assert(ryw_command_may_write("COMMIT PREPARED", false));
    ck_assert(ryw_command_may_write("SETX", false));
    ck_assert(ryw_command_may_write("BEGIN 1", false));
}
END_TEST

START_TEST(test_tags_reader_endpoint)
{
    static const char *const reads[] = {"SELECT 1", "SELECT 0", "FETCH 10", "MOVE 2",
                                        "SHOW",     "BEGIN",    "COMMIT",   "SET"};
    for (size_t i = 0; i < sizeof(reads) / sizeof(reads[0]); i++)
        ck_assert_msg(!ryw_command_may_write(reads[i], true), "%s", reads[i]);
    static const char *const writes[] = {"INSERT 0 1", "UPDATE 1",    "DELETE 2",  "COPY 3",
                                         "CALL",       "EXPLAIN",     "SELECTX 1", "SELECTED",
                                         "MERGE 1",    "CREATE TABLE"};
    for (size_t i = 0; i < sizeof(writes) / sizeof(writes[0]); i++)
        ck_assert_msg(ryw_command_may_write(writes[i], true), "%s", writes[i]);
    ck_assert(ryw_command_may_write(NULL, true));
}
END_TEST

START_TEST(test_batching)
{
    struct ryw_seq q = {0};
    bool start;
    /* nothing runs: the first held transaction starts read 1 */
    uint64_t a = ryw_seq_need(&q, &start);
    ck_assert_uint_eq(a, 1);
    ck_assert(start);
    ryw_seq_start(&q);
    /* while read 1 runs, later transactions wait for read 2 (read 1 may predate their commit),
       and do not start it yet */
    uint64_t b = ryw_seq_need(&q, &start);
    uint64_t c = ryw_seq_need(&q, &start);
    ck_assert_uint_eq(b, 2);
    ck_assert_uint_eq(c, 2);
    ck_assert(!start);
    ryw_seq_end(&q);
    ck_assert_uint_eq(q.done, 1);
    ck_assert(a <= q.done); /* settled */
    ck_assert(b > q.done);  /* still waiting: the caller starts read 2 for b and c together */
    ck_assert(!q.inflight);
    uint64_t again = ryw_seq_need(&q, &start);
    ck_assert_uint_eq(again, 2);
    ck_assert(start);
    ryw_seq_start(&q);
    ryw_seq_end(&q);
    ck_assert(b <= q.done && c <= q.done);
    /* many transactions, two reads in all */
    ck_assert_uint_eq(q.started, 2);
}
END_TEST

START_TEST(test_replayed)
{
    /* no need: any replica in rotation, measured or not */
    ck_assert(replpolicy_replayed(0, false, 0));
    ck_assert(replpolicy_replayed(0, true, 5));
    /* a need: a measured replay at or past it */
    ck_assert(replpolicy_replayed(0x1000, true, 0x1000));
    ck_assert(replpolicy_replayed(0x1000, true, 0x2000));
    ck_assert(!replpolicy_replayed(0x1000, true, 0xfff));
    ck_assert(!replpolicy_replayed(0x1000, false, 0x2000)); /* not measured */
    /* unknown: the primary only */
    ck_assert(!replpolicy_replayed(RYW_LSN_UNKNOWN, true, UINT64_MAX));
    ck_assert(!replpolicy_replayed(UINT64_MAX, true, UINT64_MAX - 1));
}
END_TEST

int main(void)
{
    Suite *s = suite_create("ryw");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_tags_primary_endpoint);
    tcase_add_test(tc, test_tags_reader_endpoint);
    tcase_add_test(tc, test_batching);
    tcase_add_test(tc, test_replayed);
    suite_add_tcase(s, tc);
    return unit_run(s);
}
