/*
 * tls: builds OpenSSL contexts with pgtide's policy (TLS 1.2+, forward-secret AEAD suites,
 * no compression, no renegotiation, no session resumption), makes the self-signed fallback
 * certificate with durable writes, and answers the two questions authentication asks of a
 * finished handshake: the tls-server-end-point binding data and the verified client CN.
 * Everything here is synchronous and cheap except key generation, which runs once at startup.
 */
#include "pgtide/tls.h"

#include "pgtide/config.h"

#include <arpa/inet.h>
#include <stdbool.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

/* TLS 1.2 suites: ECDHE/DHE key exchange with AEAD ciphers only (TLS 1.3 suites are all
   acceptable and keep OpenSSL's defaults). */
#define TLS12_CIPHERS                                                                              \
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:"     \
    "ECDHE-RSA-CHACHA20-POLY1305:ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"       \
    "DHE-RSA-AES256-GCM-SHA384:DHE-RSA-CHACHA20-POLY1305:DHE-RSA-AES128-GCM-SHA256"

#define CERT_DAYS 3650

static void set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    if (err == NULL || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* Sets "what: <OpenSSL errors>" in err and clears the error queue. */
static void set_ssl_err(char *err, size_t errlen, const char *what)
{
    char buf[512];
    tls_error_string(buf, sizeof(buf));
    set_err(err, errlen, "%s: %s", what, buf);
}

const char *tls_error_string(char *buf, size_t len)
{
    if (len == 0)
        return buf;
    buf[0] = '\0';
    size_t used = 0;
    unsigned long e;
    while ((e = ERR_get_error()) != 0) {
        char one[256];
        ERR_error_string_n(e, one, sizeof(one));
        if (used < len) {
            int n = snprintf(buf + used, len - used, "%s%s", used ? "; " : "", one);
            if (n > 0)
                used += (size_t) n;
        }
    }
    if (used == 0)
        snprintf(buf, len, "no OpenSSL error");
    return buf;
}

/* Common policy for both directions. */
static int apply_policy(SSL_CTX *ctx)
{
    if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1)
        return -1;
    if (SSL_CTX_set_cipher_list(ctx, TLS12_CIPHERS) != 1)
        return -1;
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_TICKET);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    return 0;
}

/* Used when a CA is set but sslmode does not demand a valid client certificate: the
   handshake goes on and OpenSSL keeps the verification result for tls_peer_cn(). */
static int verify_record_only(int preverify_ok, X509_STORE_CTX *store)
{
    (void) preverify_ok;
    (void) store;
    return 1;
}

static int load_client_ca(SSL_CTX *ctx, const char *ca_file, int sslmode, char *err, size_t errlen)
{
    if (SSL_CTX_load_verify_locations(ctx, ca_file, NULL) != 1) {
        char what[300];
        snprintf(what, sizeof(what), "could not load CA file \"%s\"", ca_file);
        set_ssl_err(err, errlen, what);
        return -1;
    }
    STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(ca_file);
    if (names == NULL) {
        char what[300];
        snprintf(what, sizeof(what), "could not read CA names from \"%s\"", ca_file);
        set_ssl_err(err, errlen, what);
        return -1;
    }
    SSL_CTX_set_client_CA_list(ctx, names);
    if (sslmode == SSLMODE_VERIFY_CA || sslmode == SSLMODE_VERIFY_FULL)
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
    else
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, verify_record_only);
    return 0;
}

SSL_CTX *tls_server_ctx_new(const char *cert_file, const char *key_file, const char *ca_file,
                            int sslmode, char *err, size_t errlen)
{
    char what[300];
    ERR_clear_error();
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (ctx != NULL)
        SSL_CTX_set_read_ahead(ctx, 1); /* one read(2) per batch of records, not two per record */
    if (ctx == NULL) {
        set_ssl_err(err, errlen, "could not create TLS server context");
        return NULL;
    }
    if (apply_policy(ctx) != 0) {
        set_ssl_err(err, errlen, "could not apply TLS settings");
        goto fail;
    }
    SSL_CTX_set_options(ctx, SSL_OP_CIPHER_SERVER_PREFERENCE);
    SSL_CTX_set_num_tickets(ctx, 0);
    SSL_CTX_set_dh_auto(ctx, 1);
    static const unsigned char sid[] = "pgtide";
    SSL_CTX_set_session_id_context(ctx, sid, sizeof(sid) - 1);
    if (SSL_CTX_use_certificate_chain_file(ctx, cert_file) != 1) {
        snprintf(what, sizeof(what), "could not load certificate file \"%s\"", cert_file);
        set_ssl_err(err, errlen, what);
        goto fail;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key_file, SSL_FILETYPE_PEM) != 1) {
        if (ERR_GET_REASON(ERR_peek_last_error()) == X509_R_KEY_VALUES_MISMATCH)
            snprintf(what, sizeof(what), "private key \"%s\" does not match certificate \"%s\"",
                     key_file, cert_file);
        else
            snprintf(what, sizeof(what), "could not load private key file \"%s\"", key_file);
        set_ssl_err(err, errlen, what);
        goto fail;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        snprintf(what, sizeof(what), "private key \"%s\" does not match certificate \"%s\"",
                 key_file, cert_file);
        set_ssl_err(err, errlen, what);
        goto fail;
    }
    if (ca_file != NULL && ca_file[0] != '\0') {
        if (load_client_ca(ctx, ca_file, sslmode, err, errlen) != 0)
            goto fail;
    } else {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    }
    return ctx;
fail:
    SSL_CTX_free(ctx);
    return NULL;
}

SSL_CTX *tls_client_ctx_new(const char *ca_file, int sslmode, char *err, size_t errlen)
{
    ERR_clear_error();
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (ctx != NULL)
        SSL_CTX_set_read_ahead(ctx, 1);
    if (ctx == NULL) {
        set_ssl_err(err, errlen, "could not create TLS client context");
        return NULL;
    }
    if (apply_policy(ctx) != 0) {
        set_ssl_err(err, errlen, "could not apply TLS settings");
        SSL_CTX_free(ctx);
        return NULL;
    }
    bool verify = sslmode == SSLMODE_VERIFY_CA || sslmode == SSLMODE_VERIFY_FULL;
    if (!verify) {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
        return ctx;
    }
    int ok = (ca_file != NULL && ca_file[0] != '\0')
                 ? SSL_CTX_load_verify_locations(ctx, ca_file, NULL)
                 : SSL_CTX_set_default_verify_paths(ctx);
    if (ok != 1) {
        char what[300];
        snprintf(what, sizeof(what), "could not load CA file \"%s\"",
                 ca_file != NULL && ca_file[0] != '\0' ? ca_file : "(system default)");
        set_ssl_err(err, errlen, what);
        SSL_CTX_free(ctx);
        return NULL;
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    return ctx;
}

int tls_client_set_host(SSL *ssl, const char *host, int sslmode)
{
    if (host == NULL || host[0] == '\0')
        return -1;
    unsigned char addr[16];
    bool is_ip = inet_pton(AF_INET, host, addr) == 1 || inet_pton(AF_INET6, host, addr) == 1;
    if (!is_ip && SSL_set_tlsext_host_name(ssl, host) != 1)
        return -1;
    if (sslmode != SSLMODE_VERIFY_FULL)
        return 0;
    X509_VERIFY_PARAM *param = SSL_get0_param(ssl);
    X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    int ok = is_ip ? X509_VERIFY_PARAM_set1_ip_asc(param, host) : SSL_set1_host(ssl, host);
    return ok == 1 ? 0 : -1;
}

/* ---- self-signed certificate ---- */

static int add_ext(X509 *x, X509V3_CTX *v3, int nid, const char *value)
{
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, v3, nid, value);
    if (ext == NULL)
        return -1;
    int ok = X509_add_ext(x, ext, -1);
    X509_EXTENSION_free(ext);
    return ok == 1 ? 0 : -1;
}

static int set_random_serial(X509 *x)
{
    unsigned char rnd[16];
    if (RAND_bytes(rnd, sizeof(rnd)) != 1)
        return -1;
    rnd[0] &= 0x7f; /* positive */
    rnd[0] |= 0x01; /* and no leading zero byte */
    BIGNUM *bn = BN_bin2bn(rnd, sizeof(rnd), NULL);
    if (bn == NULL)
        return -1;
    ASN1_INTEGER *serial = BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x));
    BN_free(bn);
    return serial != NULL ? 0 : -1;
}

/* Builds and signs the certificate for pkey; NULL on failure (errors on the OpenSSL queue). */
static X509 *build_cert(EVP_PKEY *pkey)
{
    X509 *x = X509_new();
    if (x == NULL)
        return NULL;
    X509_NAME *name = X509_get_subject_name(x);
    X509V3_CTX v3;
    bool ok = X509_set_version(x, X509_VERSION_3) == 1 && set_random_serial(x) == 0 &&
              X509_gmtime_adj(X509_getm_notBefore(x), -3600) != NULL &&
              X509_time_adj_ex(X509_getm_notAfter(x), CERT_DAYS, 0, NULL) != NULL &&
              X509_set_pubkey(x, pkey) == 1 &&
              X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *) "pgtide",
                                         -1, -1, 0) == 1 &&
              X509_set_issuer_name(x, name) == 1;
    if (ok) {
        X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
        ok = add_ext(x, &v3, NID_basic_constraints, "critical,CA:FALSE") == 0 &&
             add_ext(x, &v3, NID_subject_key_identifier, "hash") == 0 &&
             add_ext(x, &v3, NID_subject_alt_name, "DNS:localhost,IP:127.0.0.1,IP:::1") == 0 &&
             X509_sign(x, pkey, EVP_sha256()) > 0;
    }
    if (!ok) {
        X509_free(x);
        return NULL;
    }
    return x;
}

/* fsyncs the directory holding path. */
static int fsync_parent(const char *path)
{
    char dir[4096];
    const char *slash = strrchr(path, '/');
    if (slash == NULL)
        snprintf(dir, sizeof(dir), ".");
    else if (slash == path)
        snprintf(dir, sizeof(dir), "/");
    else
        snprintf(dir, sizeof(dir), "%.*s", (int) (slash - path), path);
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}

enum pem_kind { PEM_KEY, PEM_CERT };

/* Writes a PEM object to path via temp file + fsync + rename + directory fsync. */
static int write_pem_atomic(const char *path, enum pem_kind kind, void *obj, mode_t mode, char *err,
                            size_t errlen)
{
    char tmp[4096];
    if (snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path, (long) getpid()) >= (int) sizeof(tmp)) {
        set_err(err, errlen, "path too long: %s", path);
        return -1;
    }
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, mode);
    if (fd < 0) {
        set_err(err, errlen, "could not create \"%s\": %s", tmp, strerror(errno));
        return -1;
    }
    FILE *fp = fdopen(fd, "w");
    if (fp == NULL) {
        set_err(err, errlen, "could not open \"%s\": %s", tmp, strerror(errno));
        close(fd);
        unlink(tmp);
        return -1;
    }
    int ok = kind == PEM_KEY ? PEM_write_PrivateKey(fp, obj, NULL, NULL, 0, NULL, NULL)
                             : PEM_write_X509(fp, obj);
    if (ok != 1) {
        set_ssl_err(err, errlen, "could not encode PEM");
        fclose(fp);
        unlink(tmp);
        return -1;
    }
    if (fflush(fp) != 0 || fsync(fd) != 0) {
        set_err(err, errlen, "could not write \"%s\": %s", tmp, strerror(errno));
        fclose(fp);
        unlink(tmp);
        return -1;
    }
    if (fclose(fp) != 0 || rename(tmp, path) != 0) {
        set_err(err, errlen, "could not install \"%s\": %s", path, strerror(errno));
        unlink(tmp);
        return -1;
    }
    if (fsync_parent(path) != 0) {
        set_err(err, errlen, "could not fsync directory of \"%s\": %s", path, strerror(errno));
        return -1;
    }
    return 0;
}

int tls_make_self_signed(const char *cert_file, const char *key_file, char *err, size_t errlen)
{
    bool have_cert = access(cert_file, F_OK) == 0;
    bool have_key = access(key_file, F_OK) == 0;
    if (have_cert && have_key)
        return 0;
    if (have_cert || have_key) {
        set_err(err, errlen, "\"%s\" exists but \"%s\" does not; refusing to overwrite",
                have_cert ? cert_file : key_file, have_cert ? key_file : cert_file);
        return -1;
    }
    ERR_clear_error();
    EVP_PKEY *pkey = EVP_EC_gen("P-256");
    if (pkey == NULL) {
        set_ssl_err(err, errlen, "could not generate a P-256 key");
        return -1;
    }
    X509 *x = build_cert(pkey);
    if (x == NULL) {
        set_ssl_err(err, errlen, "could not build the self-signed certificate");
        EVP_PKEY_free(pkey);
        return -1;
    }
    int rc = write_pem_atomic(key_file, PEM_KEY, pkey, 0600, err, errlen);
    if (rc == 0)
        rc = write_pem_atomic(cert_file, PEM_CERT, x, 0644, err, errlen);
    X509_free(x);
    EVP_PKEY_free(pkey);
    return rc;
}

/* ---- questions about a finished handshake ---- */

int tls_server_end_point(SSL *ssl, uint8_t out[64])
{
    X509 *cert = SSL_get_certificate(ssl);
    if (cert == NULL)
        return -1;
    int mdnid = NID_undef, pknid = NID_undef;
    if (X509_get_signature_info(cert, &mdnid, &pknid, NULL, NULL) != 1)
        return -1;
    if (mdnid == NID_md5 || mdnid == NID_sha1)
        mdnid = NID_sha256;
    const EVP_MD *md = EVP_get_digestbynid(mdnid);
    if (md == NULL || EVP_MD_get_size(md) > 64)
        return -1;
    unsigned int len = 0;
    if (X509_digest(cert, md, out, &len) != 1)
        return -1;
    return (int) len;
}

int tls_peer_cn(SSL *ssl, char *out, size_t outlen)
{
    X509 *peer = SSL_get0_peer_certificate(ssl);
    if (peer == NULL || SSL_get_verify_result(ssl) != X509_V_OK)
        return -1;
    X509_NAME *name = X509_get_subject_name(peer);
    int idx = X509_NAME_get_index_by_NID(name, NID_commonName, -1);
    if (idx < 0)
        return -1;
    ASN1_STRING *data = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, idx));
    unsigned char *utf8 = NULL;
    int len = ASN1_STRING_to_UTF8(&utf8, data);
    if (len < 0)
        return -1;
    int rc = -1;
    if (memchr(utf8, '\0', (size_t) len) == NULL && (size_t) len < outlen) {
        memcpy(out, utf8, (size_t) len);
        out[len] = '\0';
        rc = 0;
    }
    OPENSSL_free(utf8);
    return rc;
}
