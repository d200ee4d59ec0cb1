/*
 * fuzz_scram: libFuzzer target for the authentication parsers. The input is split at its first
 * NUL byte: the first part is fed as a client-first-message and the rest as a client-final-message
 * to a scram_server holding a fixed verifier (low iteration count to keep runs fast), with the
 * first byte also choosing the mechanism and TLS; the first part is also fed to a scram_client as
 * a server-first-message, and the whole input (as text) to hba_parse and userlist_parse.
 * Build: clang -g -O1 -fsanitize=fuzzer,address,undefined -Iinclude regress/fuzz/fuzz_scram.c
 *        common/{scram,secret,hba,userlist}.c -lssl -lcrypto
 */
#include "pgtide/hba.h"
#include "pgtide/scram.h"
#include "pgtide/secret.h"
#include "pgtide/userlist.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const uint8_t fuzz_cb[32] = {7, 7, 7, 7};

static void fuzz_server(const uint8_t *data, size_t size, const uint8_t *zero)
{
    static const uint8_t salt[16] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
    struct scram_keys keys;
    struct scram_server s;
    char out[1024];
    size_t outlen, len1 = zero ? (size_t) (zero - data) : size;
    bool plus = size > 0 && (data[0] & 1), tls = plus || (size > 0 && (data[0] & 2));
    bool unknown = size > 0 && (data[0] & 4);

    memset(&keys, 0, sizeof(keys));
    keys.iterations = 2;
    keys.salt_len = sizeof(salt);
    memcpy(keys.salt, salt, sizeof(salt));
    if (secret_scram_derive("pw", salt, sizeof(salt), 2, NULL, keys.stored_key, keys.server_key))
        abort();
    scram_server_init(&s, "fuzz", salt, sizeof(salt));
    scram_server_set_nonce(&s, "SERVERNONCE");
    enum scram_result r = scram_server_first(
        &s, plus ? SCRAM_MECH_PLUS : SCRAM_MECH, unknown ? NULL : &keys, tls ? fuzz_cb : NULL,
        tls ? sizeof(fuzz_cb) : 0, data, len1, out, sizeof(out), &outlen);
    if (r == SCRAM_CONTINUE && zero != NULL) {
        if (outlen >= sizeof(out))
            abort();
        r = scram_server_final(&s, zero + 1, size - len1 - 1, out, sizeof(out), &outlen);
        uint8_t ck[32];
        if (r == SCRAM_OK && !scram_server_client_key(&s, ck))
            abort();
    }
    scram_server_clear(&s);
}

/* True when the input asks for 10000+ iterations: valid, but too slow to fuzz usefully. */
static bool slow_iterations(const uint8_t *data, size_t size)
{
    for (size_t i = 0; i + 1 < size; i++) {
        size_t d = 0;
        if (data[i] != 'i' || data[i + 1] != '=')
            continue;
        while (i + 2 + d < size && data[i + 2 + d] >= '0' && data[i + 2 + d] <= '9')
            d++;
        if (d > 4)
            return true;
    }
    return false;
}

static void fuzz_client(const uint8_t *data, size_t size, const uint8_t *zero)
{
    struct scram_client c;
    char out[1024];
    size_t outlen, len1 = zero ? (size_t) (zero - data) : size;

    if (slow_iterations(data, len1))
        return;
    if (scram_client_init_password(&c, "pw") != 0)
        return;
    scram_client_set_nonce(&c, "r");
    if (scram_client_first(&c, out, sizeof(out), &outlen) == 0 &&
        scram_client_final(&c, data, len1, out, sizeof(out), &outlen) == 0 && zero != NULL)
        (void) !scram_client_verify(&c, zero + 1, size - len1 - 1);
    scram_client_clear(&c);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *zero = memchr(data, 0, size);
    char err[256];

    fuzz_server(data, size, zero);
    fuzz_client(data, size, zero);

    char *text = malloc(size + 1);
    if (text == NULL)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    hba_free(hba_parse(text, "fuzz", err, sizeof(err)));
    userlist_free(userlist_parse(text, "fuzz", err, sizeof(err)));
    free(text);
    return 0;
}
