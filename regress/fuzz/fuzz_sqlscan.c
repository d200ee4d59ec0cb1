/*
 * fuzz_sqlscan: libFuzzer target for the custom-setting scanner that parking relies on. The
 * input is given as query text of exactly its size (no NUL: ASan catches any read past it);
 * every name reported must be NUL-terminated at the length given, shorter than 64 bytes and
 * lower case.
 * Build: clang -g -O1 -fsanitize=fuzzer,address,undefined -Iinclude regress/fuzz/fuzz_sqlscan.c
 *        common/sqlscan.c
 */
#include "pgtide/sqlscan.h"

#include <ctype.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_name(void *arg, const char *name, size_t len)
{
    (void) arg;
    if (len == 0 || len > 63 || strlen(name) != len)
        abort();
    for (size_t i = 0; i < len; i++)
        if (isupper((unsigned char) name[i]))
            abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *copy = malloc(size > 0 ? size : 1);
    if (copy == NULL)
        return 0;
    memcpy(copy, data, size);
    int r = sqlscan_custom(copy, size, check_name, NULL);
    free(copy);
    if (r & ~(SQLSCAN_OPAQUE | SQLSCAN_RESET_ALL))
        abort();
    return 0;
}
