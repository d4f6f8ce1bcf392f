/* SPDX-License-Identifier: MIT */
/*
 * tls.h: TLS (OpenSSL 3) over memory BIOs, so the connection layer moves bytes with libuv and
 * every protocol handler above it sees plaintext.
 *
 *   socket --ciphertext--> hd_tls_feed --plaintext--> handler
 *   handler --plaintext--> hd_tls_encrypt --> wbio --hd_tls_take--> socket
 *
 * An SSL_CTX is built once per load of the certificate (start and SIGHUP) and shared read-only
 * by all workers, each holding a reference; a connection keeps the context it was accepted with,
 * so a certificate reload never disturbs established connections.
 */
#ifndef HERALD_TLS_H
#define HERALD_TLS_H

#include <openssl/ssl.h>

#include "herald/buf.h"
#include "herald/conf.h"

/*
 * Builds a server context from conf (tls_certificate, tls_certificate_key, tls_ciphers,
 * tls_min_version, http2): TLS 1.2+ only, ALPN "h2" (when http2 is on) and "http/1.1", no
 * renegotiation, server cipher order.
 * Returns 0 and one reference in *out, or HD_ETLS with a message naming the file and OpenSSL's
 * reason in err (unreadable file, bad PEM, key that does not match the certificate).
 */
int hd_tls_ctx_new(SSL_CTX **out, const hd_conf_t *conf, char *err, size_t errlen);
static inline SSL_CTX *hd_tls_ctx_ref(SSL_CTX *ctx)
{
    SSL_CTX_up_ref(ctx);
    return ctx;
}
static inline void hd_tls_ctx_unref(SSL_CTX *ctx)
{
    SSL_CTX_free(ctx);
}

typedef struct hd_tls_s {
    SSL *ssl;
    BIO *wbio; /* owned by ssl; read from it what must go to the socket */
    BIO *rbio; /* owned by ssl; feed it what came from the socket */
    unsigned is_established : 1;
    unsigned is_closed : 1; /* close_notify received */
} hd_tls_t;

/* Called with each chunk of decrypted data; return non-zero to stop feeding (connection gone). */
typedef int (*hd_tls_plain_cb)(void *arg, const char *data, size_t len);

/* Sets up a server-side session on ctx (which it references). Returns 0 or HD_ETLS. */
int hd_tls_init(hd_tls_t *t, SSL_CTX *ctx);
void hd_tls_dispose(hd_tls_t *t);

/*
 * Feeds ciphertext read from the socket, drives the handshake and calls cb for every plaintext
 * chunk (decrypted into scratch). Afterwards the caller must send what hd_tls_take returns (the
 * handshake, alerts, session tickets). Returns 0, 1 when the peer sent close_notify, or HD_ETLS
 * when the session failed (bad handshake, protocol error); reason in *why when not NULL.
 */
int hd_tls_feed(hd_tls_t *t, const char *data, size_t len, char *scratch, size_t scratch_len,
                hd_tls_plain_cb cb, void *arg, const char **why);

/* Encrypts plaintext into the session's output. Returns 0 or HD_ETLS. */
int hd_tls_encrypt(hd_tls_t *t, const void *data, size_t len);

/* Queues a close_notify alert. */
void hd_tls_shutdown(hd_tls_t *t);

/* Returns the ciphertext waiting to be sent as a new buffer (one reference), or NULL if none. */
hd_buf_t *hd_tls_take(hd_tls_t *t);

#endif
