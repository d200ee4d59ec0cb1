/* Check suite for storage/backup.c (manifest copy and verify, meta, retention), storage/wal.c
   (names, LSNs, push/fetch semantics, WAL trimming) and restore_parse_time. */
#define _GNU_SOURCE
#include <check.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "pgtide/backup.h"
#include "pgtide/restore.h"
#include "pgtide/wal.h"
#include "unit.h"

static char tmp[256];

static void setup(void)
{
    snprintf(tmp, sizeof(tmp), "/tmp/pgtide-test-backup.XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(tmp));
}

static void teardown(void)
{
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", tmp);
    ck_assert_int_eq(system(cmd), 0);
}

static void put(const char *rel, const char *text)
{
    char p[512];
    snprintf(p, sizeof(p), "%s/%s", tmp, rel);
    FILE *f = fopen(p, "w");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    fclose(f);
}

static void mk(const char *rel)
{
    char p[512];
    snprintf(p, sizeof(p), "%s/%s", tmp, rel);
    ck_assert_int_eq(mkdir(p, 0700), 0);
}

static bool exists(const char *rel)
{
    char p[512];
    snprintf(p, sizeof(p), "%s/%s", tmp, rel);
    return access(p, F_OK) == 0;
}

/* copy with a manifest, verify, then corrupt in three ways */
START_TEST(manifest_copy_verify)
{
    mk("src");
    mk("src/base");
    put("src/PG_VERSION", "15\n");
    put("src/base/1", "some table data");
    put("src/empty", "");
    char src[300], dst[300], man[300], err[512];
    snprintf(src, sizeof(src), "%s/src", tmp);
    snprintf(dst, sizeof(dst), "%s/dst", tmp);
    snprintf(man, sizeof(man), "%s/manifest", tmp);
    FILE *m = fopen(man, "w");
    ck_assert_int_eq(backup_copy_tree(src, dst, false, 0, 0, m, err, sizeof(err)), 0);
    fclose(m);
    ck_assert_int_eq(backup_verify_manifest(dst, man, err, sizeof(err)), 0);
    /* same size, different content */
    put("dst/base/1", "SOME table data");
    ck_assert_int_eq(backup_verify_manifest(dst, man, err, sizeof(err)), -1);
    ck_assert_ptr_nonnull(strstr(err, "checksum"));
    put("dst/base/1", "some table data");
    ck_assert_int_eq(backup_verify_manifest(dst, man, err, sizeof(err)), 0);
    /* truncated */
    put("dst/PG_VERSION", "1");
    ck_assert_int_eq(backup_verify_manifest(dst, man, err, sizeof(err)), -1);
    ck_assert_ptr_nonnull(strstr(err, "size"));
    put("dst/PG_VERSION", "15\n");
    /* an extra file */
    put("dst/base/2", "x");
    ck_assert_int_eq(backup_verify_manifest(dst, man, err, sizeof(err)), -1);
    unlink(strcat(strcpy(err, dst), "/base/2"));
    /* a missing file */
    put("dst/base/1", "");
    unlink(strcat(strcpy(err, dst), "/base/1"));
    ck_assert_int_eq(backup_verify_manifest(dst, man, err, sizeof(err)), -1);
    ck_assert_ptr_nonnull(strstr(err, "base/1"));
}
END_TEST

static struct backup_info info_at(const char *id, int64_t start, int64_t end)
{
    struct backup_info b;
    memset(&b, 0, sizeof(b));
    snprintf(b.id, sizeof(b.id), "%s", id);
    b.start_ms = start;
    b.end_ms = end;
    return b;
}

START_TEST(retention_choice)
{
    struct backup_info b[5];
    for (int i = 0; i < 5; i++) {
        char id[8];
        snprintf(id, sizeof(id), "b%d", i);
        b[i] = info_at(id, i * 1000, i * 1000 + 500);
    }
    bool del[5];
    /* keep 2: the three oldest go */
    ck_assert_uint_eq(backup_retention_choose(b, 5, 2, 0, 10000, del), 3);
    ck_assert(del[0] && del[1] && del[2] && !del[3] && !del[4]);
    /* no limits: nothing goes */
    ck_assert_uint_eq(backup_retention_choose(b, 5, 0, 0, 10000, del), 0);
    /* age: older than 2.2 s at t = 5000 -> ends at 500, 1500, 2500 are too old */
    ck_assert_uint_eq(backup_retention_choose(b, 5, 0, 2200, 5000, del), 3);
    ck_assert(del[0] && del[1] && del[2] && !del[3]);
    /* every backup too old: the newest stays anyway */
    ck_assert_uint_eq(backup_retention_choose(b, 5, 0, 1, 1000000, del), 4);
    ck_assert(!del[4]);
    /* the only backup is never removed, whatever the limits */
    ck_assert_uint_eq(backup_retention_choose(b, 1, 1, 1, 1000000, del), 0);
    ck_assert(!del[0]);
    /* count and age combine (either removes) */
    ck_assert_uint_eq(backup_retention_choose(b, 5, 4, 3200, 5000, del), 2);
    ck_assert(del[0] && del[1] && !del[2]);
}
END_TEST

static void write_meta(const char *id, int64_t start, const char *lsn)
{
    char rel[128], text[512];
    snprintf(rel, sizeof(rel), "backups/%s", id);
    mk(rel);
    snprintf(text, sizeof(text),
             "id=%s\nmethod=cold\nstart_ms=%lld\nend_ms=%lld\nlsn_start=%s\nlsn_end=%s\n"
             "timeline=1\nwal_segment_size=16777216\nsize=10\nverified=1\n",
             id, (long long) start, (long long) start + 10, lsn, lsn);
    snprintf(rel, sizeof(rel), "backups/%s/meta", id);
    put(rel, text);
}

START_TEST(list_cleanup_apply)
{
    mk("backups");
    mk("wal");
    write_meta("B1", 1000, "0/1000028");
    write_meta("B2", 2000, "0/3000028");
    write_meta("B3", 3000, "0/5000028");
    mk("backups/B4-partial"); /* no meta: a crash in the middle */
    put("backups/B4-partial/log", "x");
    static const char *const wal[] = {"000000010000000000000001",
                                      "000000010000000000000002",
                                      "000000010000000000000003.zst",
                                      "000000010000000000000004",
                                      "00000002.history",
                                      "000000010000000000000002.00000028.backup"};
    for (size_t i = 0; i < 6; i++) {
        char rel[128];
        snprintf(rel, sizeof(rel), "wal/%s", wal[i]);
        put(rel, "w");
    }
    struct backup_info *l = NULL;
    ck_assert_int_eq(backup_list(tmp, &l), 3);
    ck_assert_str_eq(l[0].id, "B1");
    ck_assert_str_eq(l[2].id, "B3");
    ck_assert(l[0].verified && l[0].method == BACKUP_COLD);
    free(l);
    ck_assert_int_eq(backup_cleanup_partial(tmp), 1);
    ck_assert(!exists("backups/B4-partial"));
    ck_assert(exists("backups/B1"));
    /* keep 2: B1 goes; the WAL before B2's start (segment 3) goes, .history stays */
    ck_assert_int_eq(backup_apply_retention(tmp, 2, 0, 5000), 1);
    ck_assert(!exists("backups/B1"));
    ck_assert(exists("backups/B2/meta"));
    ck_assert(!exists("wal/000000010000000000000001"));
    ck_assert(!exists("wal/000000010000000000000002"));
    ck_assert(!exists("wal/000000010000000000000002.00000028.backup"));
    ck_assert(exists("wal/000000010000000000000003.zst"));
    ck_assert(exists("wal/000000010000000000000004"));
    ck_assert(exists("wal/00000002.history"));
    /* keep 1 twice: only B3 is left, and it is never removed */
    ck_assert_int_eq(backup_apply_retention(tmp, 1, 1, 999999), 1);
    ck_assert_int_eq(backup_apply_retention(tmp, 1, 1, 999999), 0);
    ck_assert(exists("backups/B3/meta"));
}
END_TEST

START_TEST(meta_parse)
{
    struct backup_info b;
    ck_assert_int_eq(backup_parse_meta("id=X\nmethod=basebackup\nstart_ms=5\nend_ms=9\n"
                                       "lsn_start=0/2\nlsn_end=0/3\nsize=77\nverified=1\n",
                                       &b),
                     0);
    ck_assert_str_eq(b.id, "X");
    ck_assert(b.method == BACKUP_BASEBACKUP);
    ck_assert_int_eq(b.consistent_ms, 9); /* defaults to the end */
    ck_assert_int_eq(b.size, 77);
    /* a meta without its LSNs is not a backup */
    ck_assert_int_eq(backup_parse_meta("id=X\nmethod=cold\nstart_ms=5\nend_ms=9\n", &b), -1);
}
END_TEST

START_TEST(wal_names)
{
    ck_assert(wal_name_valid("000000010000000000000001"));
    ck_assert(wal_name_valid("000000010000000000000001.partial"));
    ck_assert(wal_name_valid("00000002.history"));
    ck_assert(wal_name_valid("000000010000000000000001.00000028.backup"));
    ck_assert(!wal_name_valid("00000001000000000000000"));
    ck_assert(!wal_name_valid("../00000001000000000000001"));
    ck_assert(!wal_name_valid("000000010000000000000001/x"));
    ck_assert(!wal_name_valid("0000000100000000000000g1"));
    uint64_t lsn, segno;
    uint32_t tli;
    ck_assert_int_eq(wal_parse_lsn("1/2000028", &lsn), 0);
    ck_assert_uint_eq(lsn, 0x102000028ULL);
    ck_assert_int_eq(wal_parse_lsn("12", &lsn), -1);
    ck_assert_int_eq(wal_name_segno("000000020000000100000003", 16 << 20, &segno, &tli), 0);
    ck_assert_uint_eq(segno, 256 + 3);
    ck_assert_uint_eq(tli, 2);
    ck_assert_int_eq(wal_name_segno("00000002.history", 16 << 20, &segno, NULL), -1);
}
END_TEST

static void push_fetch_case(int level)
{
    char wal[300], src[300], other[300], dst[300], err[512];
    mk("wal");
    snprintf(wal, sizeof(wal), "%s/wal", tmp);
    snprintf(src, sizeof(src), "%s/seg", tmp);
    snprintf(other, sizeof(other), "%s/other", tmp);
    snprintf(dst, sizeof(dst), "%s/fetched", tmp);
    char *data = malloc(1 << 20);
    for (int i = 0; i < 1 << 20; i++)
        data[i] = (char) (i % 251);
    FILE *f = fopen(src, "w");
    fwrite(data, 1, 1 << 20, f);
    fclose(f);
    data[777] ^= 1;
    f = fopen(other, "w");
    fwrite(data, 1, 1 << 20, f);
    fclose(f);
    const char *name = "000000010000000000000007";
    ck_assert_int_eq(wal_push(src, name, wal, level, err, sizeof(err)), 0);
    ck_assert(exists(level ? "wal/000000010000000000000007.zst" : "wal/000000010000000000000007"));
    /* twice: fine; a different file of the same name: refused, the archive unchanged */
    ck_assert_int_eq(wal_push(src, name, wal, level, err, sizeof(err)), 0);
    ck_assert_int_eq(wal_push(other, name, wal, level, err, sizeof(err)), -1);
    ck_assert_ptr_nonnull(strstr(err, "different"));
    ck_assert_int_eq(wal_fetch(name, dst, wal, err, sizeof(err)), 0);
    char *got = NULL;
    f = fopen(dst, "r");
    got = malloc(1 << 20);
    ck_assert_uint_eq(fread(got, 1, 1 << 20, f), 1 << 20);
    fclose(f);
    data[777] ^= 1;
    ck_assert(memcmp(got, data, 1 << 20) == 0);
    ck_assert_int_eq(wal_fetch("000000010000000000000008", dst, wal, err, sizeof(err)), 1);
    ck_assert_int_eq(wal_push(src, "../etc", wal, level, err, sizeof(err)), -1);
    free(got);
    free(data);
}

START_TEST(wal_push_fetch_plain)
{
    push_fetch_case(0);
}
END_TEST

START_TEST(wal_push_fetch_zstd)
{
    push_fetch_case(3);
}
END_TEST

START_TEST(wal_push_unwritable)
{
    char err[512], src[300];
    if (geteuid() == 0)
        return; /* root writes anywhere; the e2e test covers this as the compute user */
    mk("wal");
    chmod(strcat(strcpy(src, tmp), "/wal"), 0500);
    put("seg", "abc");
    snprintf(src, sizeof(src), "%s/seg", tmp);
    char wal[300];
    snprintf(wal, sizeof(wal), "%s/wal", tmp);
    ck_assert_int_eq(wal_push(src, "000000010000000000000001", wal, 0, err, sizeof(err)), -1);
    ck_assert_ptr_nonnull(strstr(err, "could not archive"));
    chmod(wal, 0700);
}
END_TEST

START_TEST(wal_trim)
{
    mk("wal");
    put("wal/000000010000000000000001", "x");
    put("wal/000000010000000100000001", "x"); /* log 1: far later */
    put("wal/000000020000000000000002.partial", "x");
    char wal[300];
    snprintf(wal, sizeof(wal), "%s/wal", tmp);
    ck_assert_int_eq(wal_remove_before(wal, 0x3000000, 16 << 20), 2);
    ck_assert(exists("wal/000000010000000100000001"));
}
END_TEST

START_TEST(parse_time)
{
    int64_t ms;
    ck_assert_int_eq(restore_parse_time("2026-11-29 12:00:00+00", &ms), 0);
    ck_assert_int_eq(ms, 1795953600000LL);
    ck_assert_int_eq(restore_parse_time("2026-11-29T12:00:00Z", &ms), 0);
    ck_assert_int_eq(ms, 1795953600000LL);
    ck_assert_int_eq(restore_parse_time("2026-11-29 12:00:00", &ms), 0); /* UTC */
    ck_assert_int_eq(ms, 1795953600000LL);
    ck_assert_int_eq(restore_parse_time("2026-11-29 13:30:00.250+01:30", &ms), 0);
    ck_assert_int_eq(ms, 1795953600250LL);
    ck_assert_int_eq(restore_parse_time("2026-11-29 07:00:00-0500", &ms), 0);
    ck_assert_int_eq(ms, 1795953600000LL);
    ck_assert_int_eq(restore_parse_time("2026-11-29 12:00 UTC", &ms), 0);
    ck_assert_int_eq(ms, 1795953600000LL);
    ck_assert_int_eq(restore_parse_time("yesterday", &ms), -1);
    ck_assert_int_eq(restore_parse_time("2026-13-01 00:00:00", &ms), -1);
    ck_assert_int_eq(restore_parse_time("2026-11-29 12:00:00 junk", &ms), -1);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("backup");
    TCase *tc = tcase_create("core");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, manifest_copy_verify);
    tcase_add_test(tc, retention_choice);
    tcase_add_test(tc, list_cleanup_apply);
    tcase_add_test(tc, meta_parse);
    tcase_add_test(tc, wal_names);
    tcase_add_test(tc, wal_push_fetch_plain);
    tcase_add_test(tc, wal_push_fetch_zstd);
    tcase_add_test(tc, wal_push_unwritable);
    tcase_add_test(tc, wal_trim);
    tcase_add_test(tc, parse_time);
    suite_add_tcase(s, tc);
    return unit_run(s);
}
