/* SPDX-License-Identifier: MIT */
/* tls.c: OpenSSL server contexts and memory-BIO sessions; see tls.h. */
#include "herald/tls.h"
#include "herald/common.h"

#include <openssl/err.h>
#include <string.h>

static void err_reason(char *err, size_t errlen, const char *what, const char *path)
{
    unsigned long e = ERR_get_error();
    char reason[256] = "unknown error";
    if (e)
        ERR_error_string_n(e, reason, sizeof(reason));
    ERR_clear_error();
    snprintf(err, errlen, "%s %s: %s", what, path, reason);
}

static int on_alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                          const unsigned char *in, unsigned int inlen, void *arg)
{
    (void)ssl;
    /* h2 first when http2 is on (the server's order decides), then http/1.1. */
    static const unsigned char both[] = "\x02h2\x08http/1.1";
    const unsigned char *ours = arg ? both : both + 3;
    unsigned ours_len = arg ? sizeof(both) - 1 : sizeof(both) - 4;
    if (SSL_select_next_proto((unsigned char **)out, outlen, ours, ours_len, in, inlen) ==
        OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_OK;
    return SSL_TLSEXT_ERR_NOACK;
}

int hd_tls_ctx_new(SSL_CTX **out, const hd_conf_t *conf, char *err, size_t errlen)
{
    *out = NULL;
    if (!conf->tls_certificate || !conf->tls_certificate_key) {
        snprintf(err, errlen, "tls_certificate and tls_certificate_key are required for tls");
        return HD_ETLS;
    }
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) {
        err_reason(err, errlen, "cannot create TLS context for", conf->tls_certificate);
        return HD_ETLS;
    }
    SSL_CTX_set_min_proto_version(ctx,
                                  conf->tls_min_version == 13 ? TLS1_3_VERSION : TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE |
                                 SSL_OP_NO_COMPRESSION);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    if (conf->tls_ciphers && SSL_CTX_set_cipher_list(ctx, conf->tls_ciphers) != 1) {
        err_reason(err, errlen, "tls_ciphers", conf->tls_ciphers);
        goto fail;
    }
    if (SSL_CTX_use_certificate_chain_file(ctx, conf->tls_certificate) != 1) {
        err_reason(err, errlen, "cannot load tls_certificate", conf->tls_certificate);
        goto fail;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, conf->tls_certificate_key, SSL_FILETYPE_PEM) != 1) {
        err_reason(err, errlen, "cannot load tls_certificate_key", conf->tls_certificate_key);
        goto fail;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        err_reason(err, errlen, "tls_certificate_key does not match the certificate",
                   conf->tls_certificate_key);
        goto fail;
    }
    SSL_CTX_set_alpn_select_cb(ctx, on_alpn_select, conf->http2 ? (void *)1 : NULL);
    *out = ctx;
    return 0;
fail:
    SSL_CTX_free(ctx);
    return HD_ETLS;
}

int hd_tls_init(hd_tls_t *t, SSL_CTX *ctx)
{
    memset(t, 0, sizeof(*t));
    t->ssl = SSL_new(ctx);
    if (!t->ssl)
        return HD_ETLS;
    t->rbio = BIO_new(BIO_s_mem());
    t->wbio = BIO_new(BIO_s_mem());
    if (!t->rbio || !t->wbio) {
        BIO_free(t->rbio);
        BIO_free(t->wbio);
        SSL_free(t->ssl);
        t->ssl = NULL;
        return HD_ETLS;
    }
    BIO_set_mem_eof_return(t->rbio, -1);
    SSL_set_bio(t->ssl, t->rbio, t->wbio);
    SSL_set_accept_state(t->ssl);
    return 0;
}

void hd_tls_dispose(hd_tls_t *t)
{
    if (t->ssl)
        SSL_free(t->ssl);
    t->ssl = NULL;
}

int hd_tls_feed(hd_tls_t *t, const char *data, size_t len, char *scratch, size_t scratch_len,
                hd_tls_plain_cb cb, void *arg, const char **why)
{
    while (len > 0) {
        int w = BIO_write(t->rbio, data, (int)len);
        if (w <= 0)
            return HD_ETLS;
        data += w;
        len -= (size_t)w;
    }
    if (!t->is_established) {
        int r = SSL_do_handshake(t->ssl);
        if (r != 1) {
            int e = SSL_get_error(t->ssl, r);
            if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
                return 0;
            if (why) {
                unsigned long code = ERR_peek_error();
                *why = code ? ERR_reason_error_string(code) : "handshake failed";
            }
            ERR_clear_error();
            return HD_ETLS;
        }
        t->is_established = 1;
    }
    for (;;) {
        int n = SSL_read(t->ssl, scratch, (int)scratch_len);
        if (n > 0) {
            if (cb(arg, scratch, (size_t)n))
                return 0;
            continue;
        }
        int e = SSL_get_error(t->ssl, n);
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
            return 0;
        if (e == SSL_ERROR_ZERO_RETURN) {
            t->is_closed = 1;
            return 1;
        }
        if (why) {
            unsigned long code = ERR_peek_error();
            *why = code ? ERR_reason_error_string(code) : "TLS read failed";
        }
        ERR_clear_error();
        return HD_ETLS;
    }
}

int hd_tls_encrypt(hd_tls_t *t, const void *data, size_t len)
{
    const char *p = data;
    while (len > 0) {
        int n = SSL_write(t->ssl, p, (int)(len > (1u << 30) ? (1u << 30) : len));
        if (n <= 0) {
            ERR_clear_error();
            return HD_ETLS;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

void hd_tls_shutdown(hd_tls_t *t)
{
    if (t->is_established) {
        SSL_shutdown(t->ssl);
        ERR_clear_error();
    }
}

hd_buf_t *hd_tls_take(hd_tls_t *t)
{
    size_t pending = BIO_ctrl_pending(t->wbio);
    if (pending == 0)
        return NULL;
    hd_buf_t *b = hd_buf_new(pending);
    int n = BIO_read(t->wbio, b->data, (int)pending);
    b->len = n > 0 ? (size_t)n : 0;
    return b;
}
