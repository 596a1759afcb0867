/* tests/unit/test_auth.c - gateway/auth.c and the JWT parsers of common/envelope.c. The group
 * setup generates an RSA 2048, an EC P-256 and an EC P-384 key with OpenSSL, writes their public
 * PEMs and two HS secret files (with surrounding whitespace, to test trimming) into a temporary
 * directory and builds one gw_auth_t per configuration. Every token in the table is signed for
 * real here (HMAC, RSASSA-PKCS1-v1_5, ECDSA re-encoded as raw r||s), then optionally mangled.
 * Times are fixed (NOW) so results never depend on the clock. Tokens are passed from exact-size
 * heap copies (no NUL after them) so ASan catches any read past the end. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cmocka.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <uv.h>

#include "alloc.h"
#include "auth.h"
#include "envelope.h"
#include "err.h"
#include "str.h"

#define NOW INT64_C(1700000000)

#define K1_SECRET     "k1-secret-0123456789abcdef-0123456789abcdef"
#define K2_SECRET     "k2 secret: another value, 32+ bytes long"
#define INLINE_SECRET "inline-secret-for-tests-0123456789abcdef"

/* ---- fixture ----------------------------------------------------------------------------- */

typedef enum cfg_id {
    CFG_ALL,       /* k1.key, k2.key, rsa1.pem, ec1.pem, ec384.pem */
    CFG_K1,        /* k1.key only */
    CFG_K2,        /* k2.key only */
    CFG_RSA_ONLY,  /* rsa1.pem only */
    CFG_ISS_AUD,   /* k1.key; issuer and audience configured */
    CFG_NO_EXP,    /* k1.key; allow_no_exp */
    CFG_INLINE,    /* the inline secret only */
    CFG_INLINE_K1, /* the inline secret and k1.key */
    CFG_N
} cfg_id_t;

typedef enum signer_id {
    S_NONE,      /* empty signature */
    S_K1,        /* HMAC with k1's (trimmed) secret */
    S_K2,        /* HMAC with k2's secret */
    S_INLINE,    /* HMAC with the inline secret */
    S_WRONG_HS,  /* HMAC with a secret nobody configured */
    S_RSA_PEM,   /* HMAC keyed with the bytes of rsa1.pem: the alg confusion attack */
    S_RSA,       /* RSA private key of rsa1.pem */
    S_EC256,     /* EC private key of ec1.pem */
    S_EC384,     /* EC private key of ec384.pem */
    S_EC256_DER, /* EC private key of ec1.pem, signature left in DER (not JWS r||s) */
} signer_id_t;

typedef struct fixture {
    char dir[64];
    EVP_PKEY *rsa, *ec256, *ec384;
    char *rsa_pem; /* the public PEM file's bytes */
    size_t rsa_pem_len;
    gw_auth_t *auth[CFG_N];
} fixture_t;

static char *path_in(const fixture_t *fx, const char *name)
{
    size_t n = strlen(fx->dir) + 1 + strlen(name) + 1;
    char *p = chat_xmalloc(n);

    snprintf(p, n, "%s/%s", fx->dir, name);
    return p;
}

static void write_file(const fixture_t *fx, const char *name, const void *data, size_t n)
{
    char *p = path_in(fx, name);
    FILE *f = fopen(p, "wb");

    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
    free(p);
}

static void write_str(const fixture_t *fx, const char *name, const char *s)
{
    write_file(fx, name, s, strlen(s));
}

/* Writes pkey's public half as PEM (SubjectPublicKeyInfo). */
static void write_pubkey(const fixture_t *fx, const char *name, EVP_PKEY *pkey)
{
    char *p = path_in(fx, name);
    BIO *bio = BIO_new_file(p, "w");

    assert_non_null(bio);
    assert_int_equal(PEM_write_bio_PUBKEY(bio, pkey), 1);
    BIO_free(bio);
    free(p);
}

static char *read_whole(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf = chat_xmalloc(65536);

    assert_non_null(f);
    *len = fread(buf, 1, 65536, f);
    fclose(f);
    return buf;
}

static gw_auth_t *make_auth(const fixture_t *fx, cfg_id_t id)
{
    char *k1 = path_in(fx, "k1.key"), *k2 = path_in(fx, "k2.key");
    char *rsa = path_in(fx, "rsa1.pem"), *ec1 = path_in(fx, "ec1.pem");
    char *ec384 = path_in(fx, "ec384.pem");
    char secrets[512], pubs[1024], err[256];
    gw_auth_config_t cfg;
    gw_auth_t *a = NULL;

    gw_auth_config_init(&cfg);
    snprintf(secrets, sizeof(secrets), " %s , %s ,", k1, k2); /* spaces, trailing comma */
    snprintf(pubs, sizeof(pubs), "%s,%s,%s", rsa, ec1, ec384);
    switch (id) {
    case CFG_ALL:
        cfg.secret_files = secrets;
        cfg.public_key_files = pubs;
        break;
    case CFG_K1:
        cfg.secret_files = k1;
        break;
    case CFG_K2:
        cfg.secret_files = k2;
        break;
    case CFG_RSA_ONLY:
        cfg.public_key_files = rsa;
        break;
    case CFG_ISS_AUD:
        cfg.secret_files = k1;
        cfg.issuer = "https://issuer.example";
        cfg.audience = "chat";
        break;
    case CFG_NO_EXP:
        cfg.secret_files = k1;
        cfg.allow_no_exp = 1;
        break;
    case CFG_INLINE:
        cfg.secret = INLINE_SECRET;
        break;
    case CFG_INLINE_K1:
        cfg.secret = INLINE_SECRET;
        cfg.secret_files = k1;
        break;
    case CFG_N:
        break;
    }
    assert_int_equal(gw_auth_create(&a, &cfg, err, sizeof(err)), 0);
    assert_non_null(a);
    assert_int_equal(gw_auth_enabled(a), 1);
    free(k1);
    free(k2);
    free(rsa);
    free(ec1);
    free(ec384);
    return a;
}

static int group_setup(void **state)
{
    fixture_t *fx = chat_xcalloc(1, sizeof(*fx));
    char *p;

    snprintf(fx->dir, sizeof(fx->dir), "/tmp/test_auth.XXXXXX");
    if (mkdtemp(fx->dir) == NULL)
        return -1;
    fx->rsa = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
    fx->ec256 = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    fx->ec384 = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-384");
    if (fx->rsa == NULL || fx->ec256 == NULL || fx->ec384 == NULL)
        return -1;
    write_pubkey(fx, "rsa1.pem", fx->rsa);
    write_pubkey(fx, "ec1.pem", fx->ec256);
    write_pubkey(fx, "ec384.pem", fx->ec384);
    write_str(fx, "k1.key", K1_SECRET "\n");
    write_str(fx, "k2.key", "  \t" K2_SECRET " \r\n\n");
    p = path_in(fx, "rsa1.pem");
    fx->rsa_pem = read_whole(p, &fx->rsa_pem_len);
    free(p);
    for (int i = 0; i < CFG_N; i++)
        fx->auth[i] = make_auth(fx, (cfg_id_t)i);
    *state = fx;
    return 0;
}

static int group_teardown(void **state)
{
    fixture_t *fx = *state;
    char cmd[128];

    for (int i = 0; i < CFG_N; i++)
        gw_auth_free(fx->auth[i]);
    EVP_PKEY_free(fx->rsa);
    EVP_PKEY_free(fx->ec256);
    EVP_PKEY_free(fx->ec384);
    free(fx->rsa_pem);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", fx->dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", fx->dir);
    free(fx);
    return 0;
}

/* ---- token building ---------------------------------------------------------------------- */

static char *b64url(const void *data, size_t n)
{
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    const unsigned char *p = data;
    char *out = chat_xmalloc(n * 4 / 3 + 4);
    size_t o = 0, i = 0;

    for (; i + 2 < n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
        out[o++] = alphabet[v >> 18];
        out[o++] = alphabet[(v >> 12) & 63];
        out[o++] = alphabet[(v >> 6) & 63];
        out[o++] = alphabet[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)p[i] << 16;
        out[o++] = alphabet[v >> 18];
        out[o++] = alphabet[(v >> 12) & 63];
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8;
        out[o++] = alphabet[v >> 18];
        out[o++] = alphabet[(v >> 12) & 63];
        out[o++] = alphabet[(v >> 6) & 63];
    }
    out[o] = '\0';
    return out;
}

/* The digest an alg name implies ("...384" -> SHA-384); SHA-256 for anything else. */
static const EVP_MD *digest_for(const char *alg)
{
    size_t n = strlen(alg);

    if (n >= 3 && strcmp(alg + n - 3, "384") == 0)
        return EVP_sha384();
    if (n >= 3 && strcmp(alg + n - 3, "512") == 0)
        return EVP_sha512();
    return EVP_sha256();
}

static size_t sign_hmac(const void *key, size_t key_len, const EVP_MD *md, const char *in,
                        unsigned char *sig)
{
    unsigned int n = 0;

    assert_non_null(HMAC(md, key, (int)key_len, (const unsigned char *)in, strlen(in), sig, &n));
    return n;
}

static size_t sign_pkey(EVP_PKEY *pkey, const EVP_MD *md, const char *in, unsigned char *sig,
                        size_t cap)
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    size_t n = cap;

    assert_non_null(ctx);
    assert_int_equal(EVP_DigestSignInit(ctx, NULL, md, NULL, pkey), 1);
    assert_int_equal(EVP_DigestSign(ctx, sig, &n, (const unsigned char *)in, strlen(in)), 1);
    EVP_MD_CTX_free(ctx);
    return n;
}

/* ECDSA: OpenSSL signs DER; JWS wants r||s, each padded to the curve's byte size. */
static size_t sign_ecdsa(EVP_PKEY *pkey, const EVP_MD *md, const char *in, unsigned char *sig)
{
    unsigned char der[256];
    const unsigned char *q = der;
    size_t der_len = sign_pkey(pkey, md, in, der, sizeof(der));
    size_t coord = (size_t)(EVP_PKEY_get_bits(pkey) + 7) / 8;
    ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &q, (long)der_len);
    const BIGNUM *r, *s;

    assert_non_null(es);
    ECDSA_SIG_get0(es, &r, &s);
    assert_int_equal(BN_bn2binpad(r, sig, (int)coord), (int)coord);
    assert_int_equal(BN_bn2binpad(s, sig + coord, (int)coord), (int)coord);
    ECDSA_SIG_free(es);
    return 2 * coord;
}

static size_t sign_as(const fixture_t *fx, signer_id_t s, const char *alg, const char *in,
                      unsigned char *sig)
{
    const EVP_MD *md = digest_for(alg);

    switch (s) {
    case S_NONE:
        return 0;
    case S_K1:
        return sign_hmac(K1_SECRET, strlen(K1_SECRET), md, in, sig);
    case S_K2:
        return sign_hmac(K2_SECRET, strlen(K2_SECRET), md, in, sig);
    case S_INLINE:
        return sign_hmac(INLINE_SECRET, strlen(INLINE_SECRET), md, in, sig);
    case S_WRONG_HS:
        return sign_hmac("not-a-configured-secret", 23, md, in, sig);
    case S_RSA_PEM:
        return sign_hmac(fx->rsa_pem, fx->rsa_pem_len, md, in, sig);
    case S_RSA:
        return sign_pkey(fx->rsa, md, in, sig, 1024);
    case S_EC256:
        return sign_ecdsa(fx->ec256, md, in, sig);
    case S_EC384:
        return sign_ecdsa(fx->ec384, md, in, sig);
    case S_EC256_DER:
        return sign_pkey(fx->ec256, md, in, sig, 1024);
    }
    return 0;
}

/* Pulls the alg out of a header for choosing the signing digest (test headers only). */
static void header_alg(const char *header, char *alg, size_t cap)
{
    const char *p = strstr(header, "\"alg\":\"");

    alg[0] = '\0';
    if (p != NULL) {
        p += 7;
        size_t n = strcspn(p, "\"");
        if (n >= cap)
            n = cap - 1;
        memcpy(alg, p, n);
        alg[n] = '\0';
    }
}

/* b64url(header).b64url(payload).b64url(signature by s). */
static char *make_token(const fixture_t *fx, signer_id_t s, const char *header, const char *payload)
{
    char *h = b64url(header, strlen(header)), *p = b64url(payload, strlen(payload));
    size_t in_len = strlen(h) + 1 + strlen(p);
    char *in = chat_xmalloc(in_len + 1), alg[32], *sig_b64, *tok;
    unsigned char sig[1024];
    size_t sig_len;

    snprintf(in, in_len + 1, "%s.%s", h, p);
    header_alg(header, alg, sizeof(alg));
    sig_len = sign_as(fx, s, alg, in, sig);
    sig_b64 = b64url(sig, sig_len);
    tok = chat_xmalloc(in_len + 1 + strlen(sig_b64) + 1);
    sprintf(tok, "%s.%s", in, sig_b64);
    free(h);
    free(p);
    free(in);
    free(sig_b64);
    return tok;
}

/* Verifies the first n bytes of tok from an exact-size heap copy. */
static int verify_n(const gw_auth_t *a, const char *tok, size_t n, int64_t now, gw_identity_t *id,
                    const char **reason)
{
    char *copy = chat_xmalloc(n ? n : 1);
    int rc;

    memcpy(copy, tok, n);
    rc = gw_auth_verify(a, chat_str(copy, n), now, id, reason);
    free(copy);
    return rc;
}

static int verify(const gw_auth_t *a, const char *tok, int64_t now, gw_identity_t *id,
                  const char **reason)
{
    return verify_n(a, tok, strlen(tok), now, id, reason);
}

/* ---- mutations --------------------------------------------------------------------------- */

typedef enum mutation {
    M_NONE,
    M_FLIP_SIG,     /* change one signature byte */
    M_PAD_SIG,      /* append '=' to the signature */
    M_PAD_HEADER,   /* append "==" to the header segment */
    M_PLUS,         /* a '+' (base64, not base64url) in the payload segment */
    M_SLASH,        /* a '/' in the signature segment */
    M_STRAY_BITS,   /* the signature's last character carries non-zero unused bits */
    M_EXTRA_DOT,    /* a fourth, empty segment */
    M_FOUR_SEGS,    /* a fourth segment with content */
    M_DROP_SIG,     /* only "header.payload" */
    M_EMPTY_SIG,    /* "header.payload." */
    M_EMPTY_HEADER, /* ".payload.sig" */
    M_SPACE,        /* a space inside the payload segment */
    M_LEN_MOD4_1,   /* a payload segment whose length is 1 mod 4 */
    M_TRUNC_SIG,    /* the signature's first half only (re-encoded) */
    M_LONG_SIG,     /* the signature followed by a zero byte (re-encoded) */
} mutation_t;

static int b64_index(char c)
{
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    const char *p = strchr(alphabet, c);

    return p != NULL && c != '\0' ? (int)(p - alphabet) : -1;
}

static char b64_char(int v)
{
    return "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"[v & 63];
}

/* Decodes canonical base64url (test input only) into out; returns the byte count. */
static size_t b64url_dec(const char *in, size_t n, unsigned char *out)
{
    uint32_t acc = 0;
    unsigned bits = 0;
    size_t o = 0;

    for (size_t i = 0; i < n; i++) {
        int v = b64_index(in[i]);
        assert_true(v >= 0);
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (unsigned char)(acc >> bits);
        }
    }
    return o;
}

/* Replaces the signature segment of out (capacity cap) by its first `keep` bytes, followed by
 * `extra` zero bytes. */
static void resize_sig(char *out, size_t cap, size_t i2, int half, size_t extra)
{
    unsigned char sig[1100];
    size_t n = b64url_dec(out + i2 + 1, strlen(out + i2 + 1), sig);
    char *enc;

    if (half)
        n /= 2;
    memset(sig + n, 0, extra);
    enc = b64url(sig, n + extra);
    assert_true(i2 + 1 + strlen(enc) < cap);
    strcpy(out + i2 + 1, enc);
    free(enc);
}

/* Returns a new token: tok changed as m says (tok is freed). */
static char *mutate(char *tok, mutation_t m)
{
    size_t n = strlen(tok);
    char *out = chat_xmalloc(n + 16);
    char *d1 = strchr(tok, '.'), *d2 = d1 ? strchr(d1 + 1, '.') : NULL;
    size_t i1 = (size_t)(d1 - tok), i2 = (size_t)(d2 - tok);

    assert_non_null(d2);
    strcpy(out, tok);
    switch (m) {
    case M_NONE:
        break;
    case M_FLIP_SIG:
        out[i2 + 3] = out[i2 + 3] == 'A' ? 'B' : 'A';
        break;
    case M_PAD_SIG:
        strcat(out, "=");
        break;
    case M_PAD_HEADER:
        snprintf(out, n + 16, "%.*s==%s", (int)i1, tok, tok + i1);
        break;
    case M_PLUS:
        out[i1 + 2] = '+';
        break;
    case M_SLASH:
        out[i2 + 2] = '/';
        break;
    case M_STRAY_BITS: {
        /* a 32-byte HMAC is 43 characters: 258 bits, the lowest 2 of the last one unused */
        int v = b64_index(out[n - 1]);
        assert_true(v >= 0);
        assert_int_equal((n - i2 - 1) % 4, 3);
        out[n - 1] = b64_char(v | 1);
        break;
    }
    case M_EXTRA_DOT:
        strcat(out, ".");
        break;
    case M_FOUR_SEGS:
        strcat(out, ".AAAA");
        break;
    case M_DROP_SIG:
        out[i2] = '\0';
        break;
    case M_EMPTY_SIG:
        out[i2 + 1] = '\0';
        break;
    case M_EMPTY_HEADER:
        strcpy(out, tok + i1);
        break;
    case M_SPACE:
        out[i1 + 2] = ' ';
        break;
    case M_TRUNC_SIG:
        resize_sig(out, n + 16, i2, 1, 0);
        break;
    case M_LONG_SIG:
        resize_sig(out, n + 16, i2, 0, 1);
        break;
    case M_LEN_MOD4_1:
        /* drop payload characters until its length is 1 mod 4 */
        {
            size_t plen = i2 - i1 - 1, keep = plen;
            while (keep % 4 != 1)
                keep--;
            snprintf(out, n + 16, "%.*s%s", (int)(i1 + 1 + keep), tok, tok + i2);
        }
        break;
    }
    free(tok);
    return out;
}

/* ---- the table --------------------------------------------------------------------------- */

#define H(alg)          "{\"alg\":\"" alg "\",\"typ\":\"JWT\"}"
#define HK(alg, kid)    "{\"alg\":\"" alg "\",\"kid\":\"" kid "\"}"
#define EXP_OK          "1700003600"
#define P_OK            "{\"sub\":\"alice\",\"exp\":" EXP_OK "}"
#define P_WITH(members) "{\"sub\":\"alice\",\"exp\":" EXP_OK "," members "}"

typedef struct tcase {
    const char *name;
    cfg_id_t cfg;
    signer_id_t signer;
    const char *header;
    const char *payload;
    mutation_t mut;
    int want;                 /* 0 or the CHAT_E* code */
    const char *reason;       /* NULL: success (sub must be "alice" unless want_sub) */
    const char *swap_payload; /* non-NULL: sign `payload`, then send this one instead */
    int64_t now;              /* 0: NOW */
    const char *want_sub;
} tcase_t;

/* A row without swap_payload, now and want_sub. */
#define T(name, cfg, signer, header, payload, mut, want, reason)                                   \
    {                                                                                              \
        name, cfg, signer, header, payload, mut, want, reason, NULL, 0, NULL                       \
    }

#define INV GW_AUTH_INVALID
#define EXP GW_AUTH_EXPIRED

static const tcase_t cases[] = {
    /* every supported algorithm, signed for real */
    T("HS256 ok", CFG_ALL, S_K1, H("HS256"), P_OK, M_NONE, 0, NULL),
    T("HS384 ok", CFG_ALL, S_K1, H("HS384"), P_OK, M_NONE, 0, NULL),
    T("HS512 ok", CFG_ALL, S_K1, H("HS512"), P_OK, M_NONE, 0, NULL),
    T("RS256 ok", CFG_ALL, S_RSA, H("RS256"), P_OK, M_NONE, 0, NULL),
    T("RS384 ok", CFG_ALL, S_RSA, H("RS384"), P_OK, M_NONE, 0, NULL),
    T("RS512 ok", CFG_ALL, S_RSA, H("RS512"), P_OK, M_NONE, 0, NULL),
    T("ES256 ok", CFG_ALL, S_EC256, H("ES256"), P_OK, M_NONE, 0, NULL),
    T("ES384 ok", CFG_ALL, S_EC384, H("ES384"), P_OK, M_NONE, 0, NULL),
    T("RS256 kid ok", CFG_ALL, S_RSA, HK("RS256", "rsa1"), P_OK, M_NONE, 0, NULL),
    T("ES256 kid ok", CFG_ALL, S_EC256, HK("ES256", "ec1"), P_OK, M_NONE, 0, NULL),
    T("ES384 kid ok", CFG_ALL, S_EC384, HK("ES384", "ec384"), P_OK, M_NONE, 0, NULL),
    T("RS only config", CFG_RSA_ONLY, S_RSA, H("RS256"), P_OK, M_NONE, 0, NULL),
    T("trimmed secret file k2", CFG_K2, S_K2, H("HS256"), P_OK, M_NONE, 0, NULL),
    T("inline secret", CFG_INLINE, S_INLINE, H("HS256"), P_OK, M_NONE, 0, NULL),

    /* algorithm and key confusion */
    T("alg none, empty signature", CFG_ALL, S_NONE, H("none"), P_OK, M_NONE, CHAT_EMALFORMED, INV),
    T("alg none with a signature", CFG_ALL, S_K1, H("none"), P_OK, M_NONE, CHAT_EINVAL, INV),
    T("alg None with a signature", CFG_ALL, S_K1, H("None"), P_OK, M_NONE, CHAT_EINVAL, INV),
    T("alg none, no-exp config", CFG_NO_EXP, S_K1, H("none"), "{\"sub\":\"admin\"}", M_NONE,
      CHAT_EINVAL, INV),
    T("alg unknown", CFG_ALL, S_K1, H("HS999"), P_OK, M_NONE, CHAT_EINVAL, INV),
    T("alg lower case", CFG_ALL, S_K1, H("hs256"), P_OK, M_NONE, CHAT_EINVAL, INV),
    T("alg PS256 unsupported", CFG_ALL, S_RSA, H("PS256"), P_OK, M_NONE, CHAT_EINVAL, INV),
    T("HS keyed with RSA public PEM", CFG_RSA_ONLY, S_RSA_PEM, H("HS256"), P_OK, M_NONE,
      CHAT_EINVAL, INV),
    T("HS keyed with RSA PEM, kid rsa1", CFG_ALL, S_RSA_PEM, HK("HS256", "rsa1"), P_OK, M_NONE,
      CHAT_EINVAL, INV),
    T("HS keyed with RSA PEM, no kid", CFG_ALL, S_RSA_PEM, H("HS256"), P_OK, M_NONE, CHAT_EINVAL,
      INV),
    T("RS token naming an EC key", CFG_ALL, S_RSA, HK("RS256", "ec1"), P_OK, M_NONE, CHAT_EINVAL,
      INV),
    T("RS with only HS keys", CFG_K1, S_RSA, H("RS256"), P_OK, M_NONE, CHAT_EINVAL, INV),
    T("ES256 signed with P-384", CFG_ALL, S_EC384, H("ES256"), P_OK, M_NONE, CHAT_EINVAL, INV),
    T("ES256 naming the P-384 key", CFG_ALL, S_EC384, HK("ES256", "ec384"), P_OK, M_NONE,
      CHAT_EINVAL, INV),
    T("ES384 signed with P-256", CFG_ALL, S_EC256, H("ES384"), P_OK, M_NONE, CHAT_EINVAL, INV),
    T("ES256 with a DER signature", CFG_ALL, S_EC256_DER, H("ES256"), P_OK, M_NONE, CHAT_EINVAL,
      INV),
    T("ES256 signed by RSA", CFG_ALL, S_RSA, H("ES256"), P_OK, M_NONE, CHAT_EINVAL, INV),
    T("RS256 signed by EC", CFG_ALL, S_EC256, H("RS256"), P_OK, M_NONE, CHAT_EINVAL, INV),

    /* signatures and encoding */
    T("wrong HS secret", CFG_ALL, S_WRONG_HS, H("HS256"), P_OK, M_NONE, CHAT_EINVAL, INV),
    T("flipped HS signature", CFG_ALL, S_K1, H("HS256"), P_OK, M_FLIP_SIG, CHAT_EINVAL, INV),
    T("flipped RS signature", CFG_ALL, S_RSA, H("RS256"), P_OK, M_FLIP_SIG, CHAT_EINVAL, INV),
    T("flipped ES signature", CFG_ALL, S_EC256, H("ES256"), P_OK, M_FLIP_SIG, CHAT_EINVAL, INV),
    {"tampered payload HS", CFG_ALL, S_K1, H("HS256"), P_OK, M_NONE, CHAT_EINVAL, INV,
     "{\"sub\":\"mallory\",\"exp\":" EXP_OK "}", 0, NULL},
    {"tampered payload RS", CFG_ALL, S_RSA, H("RS256"), P_OK, M_NONE, CHAT_EINVAL, INV,
     "{\"sub\":\"mallory\",\"exp\":" EXP_OK "}", 0, NULL},
    {"tampered payload ES", CFG_ALL, S_EC384, H("ES384"), P_OK, M_NONE, CHAT_EINVAL, INV,
     "{\"sub\":\"mallory\",\"exp\":" EXP_OK "}", 0, NULL},
    T("truncated HS signature", CFG_ALL, S_K1, H("HS256"), P_OK, M_TRUNC_SIG, CHAT_EINVAL, INV),
    T("extended HS signature", CFG_ALL, S_K1, H("HS256"), P_OK, M_LONG_SIG, CHAT_EINVAL, INV),
    T("truncated RS signature", CFG_ALL, S_RSA, H("RS256"), P_OK, M_TRUNC_SIG, CHAT_EINVAL, INV),
    T("extended RS signature", CFG_ALL, S_RSA, H("RS256"), P_OK, M_LONG_SIG, CHAT_EINVAL, INV),
    T("truncated ES signature", CFG_ALL, S_EC256, H("ES256"), P_OK, M_TRUNC_SIG, CHAT_EINVAL, INV),
    T("extended ES signature", CFG_ALL, S_EC384, H("ES384"), P_OK, M_LONG_SIG, CHAT_EINVAL, INV),
    T("empty signature", CFG_ALL, S_K1, H("HS256"), P_OK, M_EMPTY_SIG, CHAT_EMALFORMED, INV),
    T("padding on signature", CFG_ALL, S_K1, H("HS256"), P_OK, M_PAD_SIG, CHAT_EMALFORMED, INV),
    T("padding on header", CFG_ALL, S_K1, H("HS256"), P_OK, M_PAD_HEADER, CHAT_EMALFORMED, INV),
    T("'+' in payload", CFG_ALL, S_K1, H("HS256"), P_OK, M_PLUS, CHAT_EMALFORMED, INV),
    T("'/' in signature", CFG_ALL, S_K1, H("HS256"), P_OK, M_SLASH, CHAT_EMALFORMED, INV),
    T("space in payload", CFG_ALL, S_K1, H("HS256"), P_OK, M_SPACE, CHAT_EMALFORMED, INV),
    T("stray bits in signature", CFG_ALL, S_K1, H("HS256"), P_OK, M_STRAY_BITS, CHAT_EMALFORMED,
      INV),
    T("segment length 1 mod 4", CFG_ALL, S_K1, H("HS256"), P_OK, M_LEN_MOD4_1, CHAT_EMALFORMED,
      INV),
    T("four segments (trailing dot)", CFG_ALL, S_K1, H("HS256"), P_OK, M_EXTRA_DOT, CHAT_EMALFORMED,
      INV),
    T("four segments", CFG_ALL, S_K1, H("HS256"), P_OK, M_FOUR_SEGS, CHAT_EMALFORMED, INV),
    T("two segments", CFG_ALL, S_K1, H("HS256"), P_OK, M_DROP_SIG, CHAT_EMALFORMED, INV),
    T("empty header segment", CFG_ALL, S_K1, H("HS256"), P_OK, M_EMPTY_HEADER, CHAT_EMALFORMED,
      INV),

    /* the header */
    T("header bad JSON", CFG_ALL, S_K1, "{\"alg\":\"HS256\"", P_OK, M_NONE, CHAT_EMALFORMED, INV),
    T("header is an array", CFG_ALL, S_K1, "[\"HS256\"]", P_OK, M_NONE, CHAT_EMALFORMED, INV),
    T("header is a string", CFG_ALL, S_K1, "\"HS256\"", P_OK, M_NONE, CHAT_EMALFORMED, INV),
    T("header without alg", CFG_ALL, S_K1, "{\"typ\":\"JWT\"}", P_OK, M_NONE, CHAT_EMALFORMED, INV),
    T("header alg not a string", CFG_ALL, S_K1, "{\"alg\":256}", P_OK, M_NONE, CHAT_EMALFORMED,
      INV),
    T("header kid not a string", CFG_ALL, S_K1, "{\"alg\":\"HS256\",\"kid\":1}", P_OK, M_NONE,
      CHAT_EMALFORMED, INV),
    T("header with crit", CFG_ALL, S_K1, "{\"alg\":\"HS256\",\"crit\":[\"exp\"],\"exp\":1}", P_OK,
      M_NONE, CHAT_EMALFORMED, INV),
    T("header duplicate alg", CFG_ALL, S_K1, "{\"alg\":\"HS256\",\"alg\":\"none\"}", P_OK, M_NONE,
      CHAT_EMALFORMED, INV),
    T("header trailing garbage", CFG_ALL, S_K1, "{\"alg\":\"HS256\"} x", P_OK, M_NONE,
      CHAT_EMALFORMED, INV),

    /* kid selection: k1 and k2 are both HS keys */
    T("kid k2 with k2's secret", CFG_ALL, S_K2, HK("HS256", "k2"), P_OK, M_NONE, 0, NULL),
    T("kid k1 with k1's secret", CFG_ALL, S_K1, HK("HS256", "k1"), P_OK, M_NONE, 0, NULL),
    T("kid k2 with k1's secret", CFG_ALL, S_K1, HK("HS256", "k2"), P_OK, M_NONE, CHAT_EINVAL, INV),
    T("kid k1 with k2's secret", CFG_ALL, S_K2, HK("HS256", "k1"), P_OK, M_NONE, CHAT_EINVAL, INV),
    T("kid naming nothing", CFG_ALL, S_K1, HK("HS256", "k3"), P_OK, M_NONE, CHAT_EINVAL, INV),
    T("kid empty", CFG_ALL, S_K1, HK("HS256", ""), P_OK, M_NONE, CHAT_EINVAL, INV),
    T("kid with extension", CFG_ALL, S_K1, HK("HS256", "k1.key"), P_OK, M_NONE, CHAT_EINVAL, INV),
    T("no kid tries k1", CFG_ALL, S_K1, H("HS256"), P_OK, M_NONE, 0, NULL),
    T("no kid tries k2", CFG_ALL, S_K2, H("HS256"), P_OK, M_NONE, 0, NULL),
    T("k2 token, only k1 configured", CFG_K1, S_K2, H("HS256"), P_OK, M_NONE, CHAT_EINVAL, INV),
    T("inline secret never selected by kid", CFG_INLINE_K1, S_INLINE, HK("HS256", "k1"), P_OK,
      M_NONE, CHAT_EINVAL, INV),
    T("inline secret without kid", CFG_INLINE_K1, S_INLINE, H("HS256"), P_OK, M_NONE, 0, NULL),
    T("k1 next to the inline secret", CFG_INLINE_K1, S_K1, HK("HS256", "k1"), P_OK, M_NONE, 0,
      NULL),

    /* the payload as JSON */
    T("payload bad JSON", CFG_ALL, S_K1, H("HS256"), "{\"sub\":\"alice\"", M_NONE, CHAT_EMALFORMED,
      INV),
    T("payload is an array", CFG_ALL, S_K1, H("HS256"), "[1]", M_NONE, CHAT_EMALFORMED, INV),
    T("payload invalid UTF-8", CFG_ALL, S_K1, H("HS256"),
      "{\"sub\":\"al\xff"
      "ice\",\"exp\":" EXP_OK "}",
      M_NONE, CHAT_EMALFORMED, INV),
    T("payload \\u0000 in sub", CFG_ALL, S_K1, H("HS256"),
      "{\"sub\":\"admin\\u0000x\",\"exp\":" EXP_OK "}", M_NONE, CHAT_EINVAL, INV),
    T("payload duplicate sub", CFG_ALL, S_K1, H("HS256"),
      "{\"sub\":\"alice\",\"sub\":\"admin\",\"exp\":" EXP_OK "}", M_NONE, CHAT_EINVAL, INV),

    /* sub */
    T("sub missing", CFG_ALL, S_K1, H("HS256"), "{\"exp\":" EXP_OK "}", M_NONE, CHAT_EINVAL, INV),
    T("sub empty", CFG_ALL, S_K1, H("HS256"), "{\"sub\":\"\",\"exp\":" EXP_OK "}", M_NONE,
      CHAT_EINVAL, INV),
    T("sub a number", CFG_ALL, S_K1, H("HS256"), "{\"sub\":42,\"exp\":" EXP_OK "}", M_NONE,
      CHAT_EINVAL, INV),
    T("sub null", CFG_ALL, S_K1, H("HS256"), "{\"sub\":null,\"exp\":" EXP_OK "}", M_NONE,
      CHAT_EINVAL, INV),
    {"sub with escapes", CFG_ALL, S_K1, H("HS256"), "{\"sub\":\"b\\u00f6b\",\"exp\":" EXP_OK "}",
     M_NONE, 0, NULL, NULL, 0,
     "b\xc3\xb6"
     "b"},

    /* exp (leeway 30) */
    T("exp missing", CFG_ALL, S_K1, H("HS256"), "{\"sub\":\"alice\"}", M_NONE, CHAT_EINVAL, INV),
    T("exp missing, allowed", CFG_NO_EXP, S_K1, H("HS256"), "{\"sub\":\"alice\"}", M_NONE, 0, NULL),
    T("exp a string", CFG_ALL, S_K1, H("HS256"), "{\"sub\":\"alice\",\"exp\":\"1700003600\"}",
      M_NONE, CHAT_EINVAL, INV),
    T("exp a string, no-exp allowed", CFG_NO_EXP, S_K1, H("HS256"),
      "{\"sub\":\"alice\",\"exp\":\"1700003600\"}", M_NONE, CHAT_EINVAL, INV),
    T("exp huge", CFG_ALL, S_K1, H("HS256"), "{\"sub\":\"alice\",\"exp\":1e300}", M_NONE,
      CHAT_EINVAL, INV),
    T("exp past", CFG_ALL, S_K1, H("HS256"), "{\"sub\":\"alice\",\"exp\":1699990000}", M_NONE,
      CHAT_EINVAL, EXP),
    T("exp past, no-exp allowed", CFG_NO_EXP, S_K1, H("HS256"),
      "{\"sub\":\"alice\",\"exp\":1699990000}", M_NONE, CHAT_EINVAL, EXP),
    T("exp past by 31 s", CFG_ALL, S_K1, H("HS256"), "{\"sub\":\"alice\",\"exp\":1699999969}",
      M_NONE, CHAT_EINVAL, EXP),
    T("exp past by 30 s (leeway)", CFG_ALL, S_K1, H("HS256"),
      "{\"sub\":\"alice\",\"exp\":1699999970}", M_NONE, 0, NULL),
    T("exp past by 10 s (leeway)", CFG_ALL, S_K1, H("HS256"),
      "{\"sub\":\"alice\",\"exp\":1699999990}", M_NONE, 0, NULL),
    T("exp fractional", CFG_ALL, S_K1, H("HS256"), "{\"sub\":\"alice\",\"exp\":1699999969.5}",
      M_NONE, CHAT_EINVAL, EXP),
    T("exp fractional, ok", CFG_ALL, S_K1, H("HS256"), "{\"sub\":\"alice\",\"exp\":1699999970.5}",
      M_NONE, 0, NULL),
    T("expired but bad signature", CFG_ALL, S_WRONG_HS, H("HS256"),
      "{\"sub\":\"alice\",\"exp\":1699990000}", M_NONE, CHAT_EINVAL, INV),
    T("expired and wrong issuer", CFG_ISS_AUD, S_K1, H("HS256"),
      "{\"sub\":\"alice\",\"exp\":1699990000,\"iss\":\"evil\",\"aud\":\"chat\"}", M_NONE,
      CHAT_EINVAL, INV),
    {"valid at an earlier now", CFG_ALL, S_K1, H("HS256"), "{\"sub\":\"alice\",\"exp\":1699990000}",
     M_NONE, 0, NULL, NULL, 1699990000, NULL},

    /* nbf and iat */
    T("nbf 31 s ahead", CFG_ALL, S_K1, H("HS256"), P_WITH("\"nbf\":1700000031"), M_NONE,
      CHAT_EINVAL, INV),
    T("nbf 30 s ahead (leeway)", CFG_ALL, S_K1, H("HS256"), P_WITH("\"nbf\":1700000030"), M_NONE, 0,
      NULL),
    T("nbf past", CFG_ALL, S_K1, H("HS256"), P_WITH("\"nbf\":1699990000"), M_NONE, 0, NULL),
    T("nbf fractional just beyond", CFG_ALL, S_K1, H("HS256"), P_WITH("\"nbf\":1700000030.25"),
      M_NONE, CHAT_EINVAL, INV),
    T("nbf a string", CFG_ALL, S_K1, H("HS256"), P_WITH("\"nbf\":\"0\""), M_NONE, CHAT_EINVAL, INV),
    T("iat 31 s ahead", CFG_ALL, S_K1, H("HS256"), P_WITH("\"iat\":1700000031"), M_NONE,
      CHAT_EINVAL, INV),
    T("iat 30 s ahead (leeway)", CFG_ALL, S_K1, H("HS256"), P_WITH("\"iat\":1700000030"), M_NONE, 0,
      NULL),
    T("iat past", CFG_ALL, S_K1, H("HS256"), P_WITH("\"iat\":1699999000"), M_NONE, 0, NULL),
    T("iat a bool", CFG_ALL, S_K1, H("HS256"), P_WITH("\"iat\":true"), M_NONE, CHAT_EINVAL, INV),

    /* iss and aud (CFG_ISS_AUD: issuer https://issuer.example, audience chat) */
    T("iss and aud match", CFG_ISS_AUD, S_K1, H("HS256"),
      P_WITH("\"iss\":\"https://issuer.example\",\"aud\":\"chat\""), M_NONE, 0, NULL),
    T("iss mismatch", CFG_ISS_AUD, S_K1, H("HS256"),
      P_WITH("\"iss\":\"https://evil.example\",\"aud\":\"chat\""), M_NONE, CHAT_EINVAL, INV),
    T("iss prefix only", CFG_ISS_AUD, S_K1, H("HS256"),
      P_WITH("\"iss\":\"https://issuer.example/\",\"aud\":\"chat\""), M_NONE, CHAT_EINVAL, INV),
    T("iss missing", CFG_ISS_AUD, S_K1, H("HS256"), P_WITH("\"aud\":\"chat\""), M_NONE, CHAT_EINVAL,
      INV),
    T("iss not a string", CFG_ISS_AUD, S_K1, H("HS256"), P_WITH("\"iss\":1,\"aud\":\"chat\""),
      M_NONE, CHAT_EINVAL, INV),
    T("aud mismatch", CFG_ISS_AUD, S_K1, H("HS256"),
      P_WITH("\"iss\":\"https://issuer.example\",\"aud\":\"other\""), M_NONE, CHAT_EINVAL, INV),
    T("aud missing", CFG_ISS_AUD, S_K1, H("HS256"), P_WITH("\"iss\":\"https://issuer.example\""),
      M_NONE, CHAT_EINVAL, INV),
    T("aud array containing it", CFG_ISS_AUD, S_K1, H("HS256"),
      P_WITH("\"iss\":\"https://issuer.example\",\"aud\":[\"other\",\"chat\"]"), M_NONE, 0, NULL),
    T("aud array without it", CFG_ISS_AUD, S_K1, H("HS256"),
      P_WITH("\"iss\":\"https://issuer.example\",\"aud\":[\"other\",\"chat2\"]"), M_NONE,
      CHAT_EINVAL, INV),
    T("aud empty array", CFG_ISS_AUD, S_K1, H("HS256"),
      P_WITH("\"iss\":\"https://issuer.example\",\"aud\":[]"), M_NONE, CHAT_EINVAL, INV),
    T("aud array with a number", CFG_ISS_AUD, S_K1, H("HS256"),
      P_WITH("\"iss\":\"https://issuer.example\",\"aud\":[\"chat\",1]"), M_NONE, CHAT_EINVAL, INV),
    T("aud an object", CFG_ISS_AUD, S_K1, H("HS256"),
      P_WITH("\"iss\":\"https://issuer.example\",\"aud\":{\"chat\":1}"), M_NONE, CHAT_EINVAL, INV),
    T("iss and aud ignored when not configured", CFG_ALL, S_K1, H("HS256"),
      P_WITH("\"iss\":\"anyone\",\"aud\":[\"x\",\"y\"]"), M_NONE, 0, NULL),
    T("aud type checked when not configured", CFG_ALL, S_K1, H("HS256"), P_WITH("\"aud\":7"),
      M_NONE, CHAT_EINVAL, INV),

    /* name and rooms types (contents: see test_identity_claims) */
    T("name not a string", CFG_ALL, S_K1, H("HS256"), P_WITH("\"name\":[\"A\"]"), M_NONE,
      CHAT_EINVAL, INV),
    T("rooms not an array", CFG_ALL, S_K1, H("HS256"), P_WITH("\"rooms\":\"private:a\""), M_NONE,
      CHAT_EINVAL, INV),
    T("rooms with a number", CFG_ALL, S_K1, H("HS256"), P_WITH("\"rooms\":[\"private:a\",1]"),
      M_NONE, CHAT_EINVAL, INV),
    T("rooms with an empty entry", CFG_ALL, S_K1, H("HS256"), P_WITH("\"rooms\":[\"\"]"), M_NONE,
      CHAT_EINVAL, INV),

    /* the rooms pattern rule: '*' only last, and a pattern only under "private:" */
    T("rooms [*]", CFG_ALL, S_K1, H("HS256"), P_WITH("\"rooms\":[\"*\"]"), M_NONE, CHAT_EINVAL,
      INV),
    T("rooms [p*]", CFG_ALL, S_K1, H("HS256"), P_WITH("\"rooms\":[\"p*\"]"), M_NONE, CHAT_EINVAL,
      INV),
    T("rooms [lobby*]", CFG_ALL, S_K1, H("HS256"), P_WITH("\"rooms\":[\"lobby*\"]"), M_NONE,
      CHAT_EINVAL, INV),
    T("rooms [private*] (no colon)", CFG_ALL, S_K1, H("HS256"), P_WITH("\"rooms\":[\"private*\"]"),
      M_NONE, CHAT_EINVAL, INV),
    T("rooms [Private:a*] (case)", CFG_ALL, S_K1, H("HS256"), P_WITH("\"rooms\":[\"Private:a*\"]"),
      M_NONE, CHAT_EINVAL, INV),
    T("rooms [dm:alice*]", CFG_ALL, S_K1, H("HS256"), P_WITH("\"rooms\":[\"dm:alice*\"]"), M_NONE,
      CHAT_EINVAL, INV),
    T("rooms '*' in the middle", CFG_ALL, S_K1, H("HS256"), P_WITH("\"rooms\":[\"private:a*b\"]"),
      M_NONE, CHAT_EINVAL, INV),
    T("rooms '*' twice at the end", CFG_ALL, S_K1, H("HS256"),
      P_WITH("\"rooms\":[\"private:a**\"]"), M_NONE, CHAT_EINVAL, INV),
    T("rooms '*' first", CFG_ALL, S_K1, H("HS256"), P_WITH("\"rooms\":[\"*private:a\"]"), M_NONE,
      CHAT_EINVAL, INV),
    T("rooms '*' in the middle outside private:", CFG_ALL, S_K1, H("HS256"),
      P_WITH("\"rooms\":[\"lobby*x\"]"), M_NONE, CHAT_EINVAL, INV),
    T("rooms one bad entry among good ones", CFG_ALL, S_K1, H("HS256"),
      P_WITH("\"rooms\":[\"private:ops\",\"private:eng-*\",\"*\"]"), M_NONE, CHAT_EINVAL, INV),
    T("rooms bad pattern, RS256", CFG_ALL, S_RSA, H("RS256"), P_WITH("\"rooms\":[\"p*\"]"), M_NONE,
      CHAT_EINVAL, INV),
    T("rooms bad pattern and expired: invalid", CFG_ALL, S_K1, H("HS256"),
      "{\"sub\":\"alice\",\"exp\":1699990000,\"rooms\":[\"*\"]}", M_NONE, CHAT_EINVAL, INV),
    T("rooms [private:*]", CFG_ALL, S_K1, H("HS256"), P_WITH("\"rooms\":[\"private:*\"]"), M_NONE,
      0, NULL),
    T("rooms [private:team-*]", CFG_ALL, S_K1, H("HS256"), P_WITH("\"rooms\":[\"private:team-*\"]"),
      M_NONE, 0, NULL),
    T("rooms exact names outside private: accepted", CFG_ALL, S_K1, H("HS256"),
      P_WITH("\"rooms\":[\"lobby\",\"dm:a:b\",\"private:ops\"]"), M_NONE, 0, NULL),
    T("unknown claims ignored", CFG_ALL, S_K1, H("HS256"),
      P_WITH("\"scope\":\"a b\",\"extra\":{\"nested\":[1,2,{\"x\":null}]}"), M_NONE, 0, NULL),
};

static void run_case(const fixture_t *fx, const tcase_t *c)
{
    char *tok = make_token(fx, c->signer, c->header, c->payload);
    gw_identity_t id;
    const char *reason = "unset";
    int rc;

    if (c->swap_payload != NULL) {
        /* keep header and signature, replace the payload segment */
        char *d1 = strchr(tok, '.'), *d2 = strchr(d1 + 1, '.');
        char *p = b64url(c->swap_payload, strlen(c->swap_payload));
        char *t2 = chat_xmalloc(strlen(tok) + strlen(p) + 1);
        sprintf(t2, "%.*s.%s%s", (int)(d1 - tok), tok, p, d2);
        free(p);
        free(tok);
        tok = t2;
    }
    tok = mutate(tok, c->mut);
    rc = verify(fx->auth[c->cfg], tok, c->now ? c->now : NOW, &id, &reason);
    if (rc != c->want || (c->reason == NULL) != (reason == NULL) ||
        (c->reason != NULL && strcmp(c->reason, reason) != 0))
        fail_msg("case '%s': rc %d (%s) reason %s; want %d (%s) reason %s", c->name, rc,
                 chat_strerror(rc), reason ? reason : "NULL", c->want, chat_strerror(c->want),
                 c->reason ? c->reason : "NULL");
    if (rc == 0) {
        assert_non_null(id.sub);
        if (strcmp(id.sub, c->want_sub ? c->want_sub : "alice") != 0)
            fail_msg("case '%s': sub '%s'", c->name, id.sub);
    } else {
        assert_null(id.sub);
        assert_null(id.name);
        assert_null(id.rooms);
        assert_int_equal(id.nrooms, 0);
    }
    gw_identity_dispose(&id);
    free(tok);
}

static void test_table(void **state)
{
    const fixture_t *fx = *state;
    size_t n = sizeof(cases) / sizeof(cases[0]);

    for (size_t i = 0; i < n; i++)
        run_case(fx, &cases[i]);
    printf("# %zu token cases\n", n);
}

/* ---- individual tests -------------------------------------------------------------------- */

static void test_raw_tokens(void **state)
{
    const fixture_t *fx = *state;
    static const struct {
        const char *tok;
        int want;
    } raw[] = {
        {"", CHAT_EMALFORMED},
        {".", CHAT_EMALFORMED},
        {"..", CHAT_EMALFORMED},
        {"...", CHAT_EMALFORMED},
        {"abc", CHAT_EMALFORMED},
        {"a.b", CHAT_EMALFORMED},
        {"eyJhbGciOiJIUzI1NiJ9..AAAA", CHAT_EMALFORMED},
        {"eyJhbGciOiJIUzI1NiJ9.e30.", CHAT_EMALFORMED},
        /* {"alg":"none"} . {"sub":"alice","exp":1700003600} . (empty) */
        {"eyJhbGciOiJub25lIn0.eyJzdWIiOiJhbGljZSIsImV4cCI6MTcwMDAwMzYwMH0.", CHAT_EMALFORMED},
        {"eyJhbGciOiJub25lIn0.eyJzdWIiOiJhbGljZSIsImV4cCI6MTcwMDAwMzYwMH0.AAAA", CHAT_EINVAL},
        {"Bearer eyJhbGciOiJIUzI1NiJ9.e30.AAAA", CHAT_EMALFORMED},
    };
    gw_identity_t id;
    const char *reason;

    for (size_t i = 0; i < sizeof(raw) / sizeof(raw[0]); i++) {
        int rc = verify(fx->auth[CFG_ALL], raw[i].tok, NOW, &id, &reason);
        if (rc != raw[i].want)
            fail_msg("raw token %zu: rc %d want %d", i, rc, raw[i].want);
        assert_string_equal(reason, GW_AUTH_INVALID);
        gw_identity_dispose(&id);
    }
    /* NULL pointer with length 0, a NULL auth, an auth with no keys */
    assert_int_equal(gw_auth_verify(fx->auth[CFG_ALL], CHAT_STR_NULL, NOW, &id, &reason),
                     CHAT_EMALFORMED);
    {
        char *tok = make_token(fx, S_K1, H("HS256"), P_OK);
        gw_auth_config_t cfg;
        gw_auth_t *empty = NULL;

        assert_int_equal(verify(NULL, tok, NOW, &id, &reason), CHAT_EINVAL);
        gw_auth_config_init(&cfg);
        assert_int_equal(gw_auth_create(&empty, &cfg, NULL, 0), 0);
        assert_int_equal(gw_auth_enabled(empty), 0);
        assert_int_equal(verify(empty, tok, NOW, &id, &reason), CHAT_EINVAL);
        assert_string_equal(reason, GW_AUTH_INVALID);
        gw_auth_free(empty);
        free(tok);
    }
}

/* A payload padded with a "pad" claim of pad_len bytes. */
static char *padded_token(const fixture_t *fx, size_t pad_len)
{
    char *payload = chat_xmalloc(pad_len + 128), *tok;

    snprintf(payload, pad_len + 128, "{\"sub\":\"alice\",\"exp\":" EXP_OK ",\"pad\":\"%*s\"}",
             (int)pad_len, "");
    tok = make_token(fx, S_K1, H("HS256"), payload);
    free(payload);
    return tok;
}

static void test_size_limit(void **state)
{
    const fixture_t *fx = *state;
    gw_identity_t id;
    const char *reason;
    size_t pad = 5000;
    char *tok;

    /* grow the pad until the token is exactly at or just past the limit */
    for (;;) {
        tok = padded_token(fx, pad);
        if (strlen(tok) > GW_AUTH_MAX_TOKEN)
            break;
        assert_int_equal(verify(fx->auth[CFG_ALL], tok, NOW, &id, &reason), 0);
        assert_null(reason);
        gw_identity_dispose(&id);
        free(tok);
        pad++;
    }
    assert_true(strlen(tok) <= GW_AUTH_MAX_TOKEN + 4);
    assert_int_equal(verify(fx->auth[CFG_ALL], tok, NOW, &id, &reason), CHAT_ETOOLARGE);
    assert_string_equal(reason, GW_AUTH_INVALID);
    free(tok);
    tok = padded_token(fx, 20000);
    assert_int_equal(verify(fx->auth[CFG_ALL], tok, NOW, &id, &reason), CHAT_ETOOLARGE);
    free(tok);
}

static void test_identity_claims(void **state)
{
    const fixture_t *fx = *state;
    const char *payload = "{\"sub\":\"u-42\",\"exp\":1700003600,\"name\":\"Alice \\\"A\\\" Smith\","
                          "\"rooms\":[\"private:eng-*\",\"private:ops\",\"private:x*\"]}";
    char *tok = make_token(fx, S_EC256, H("ES256"), payload);
    gw_identity_t id;
    const char *reason = "unset";

    assert_int_equal(verify(fx->auth[CFG_ALL], tok, NOW, &id, &reason), 0);
    free(tok); /* the identity owns copies */
    assert_null(reason);
    assert_string_equal(id.sub, "u-42");
    assert_string_equal(id.name, "Alice \"A\" Smith");
    assert_int_equal(id.has_exp, 1);
    assert_int_equal(id.exp, 1700003600);
    assert_int_equal(id.nrooms, 3);
    assert_string_equal(id.rooms[0], "private:eng-*");
    assert_string_equal(id.rooms[1], "private:ops");

    assert_int_equal(gw_identity_may_join_private(&id, CHAT_LIT("private:eng-team")), 1);
    assert_int_equal(gw_identity_may_join_private(&id, CHAT_LIT("private:eng-")), 1);
    assert_int_equal(gw_identity_may_join_private(&id, CHAT_LIT("private:eng-x")), 1);
    assert_int_equal(gw_identity_may_join_private(&id, CHAT_LIT("private:eng")), 0);
    assert_int_equal(gw_identity_may_join_private(&id, CHAT_LIT("private:engineering")), 0);
    assert_int_equal(gw_identity_may_join_private(&id, CHAT_LIT("private:ops")), 1);
    assert_int_equal(gw_identity_may_join_private(&id, CHAT_LIT("private:ops2")), 0);
    assert_int_equal(gw_identity_may_join_private(&id, CHAT_LIT("private:op")), 0);
    assert_int_equal(gw_identity_may_join_private(&id, CHAT_LIT("private:x")), 1);
    assert_int_equal(gw_identity_may_join_private(&id, CHAT_LIT("private:xyz")), 1);
    assert_int_equal(gw_identity_may_join_private(&id, CHAT_LIT("private:")), 0);
    assert_int_equal(gw_identity_may_join_private(&id, CHAT_LIT("Private:ops")), 0);
    assert_int_equal(gw_identity_may_join_private(&id, CHAT_LIT("")), 0);
    assert_int_equal(gw_identity_may_join_private(&id, CHAT_STR_NULL), 0);
    assert_int_equal(gw_identity_may_join_private(NULL, CHAT_LIT("private:ops")), 0);
    /* not NUL-terminated input: only len bytes count */
    assert_int_equal(gw_identity_may_join_private(&id, chat_str("private:opsXYZ", 11)), 1);
    gw_identity_dispose(&id);
    assert_null(id.sub);
    gw_identity_dispose(&id); /* twice is harmless */
    gw_identity_dispose(NULL);

    /* no name, no rooms, no exp allowed */
    tok = make_token(fx, S_K1, H("HS256"), "{\"sub\":\"bob\"}");
    assert_int_equal(verify(fx->auth[CFG_NO_EXP], tok, NOW, &id, &reason), 0);
    assert_string_equal(id.sub, "bob");
    assert_null(id.name);
    assert_int_equal(id.nrooms, 0);
    assert_int_equal(id.has_exp, 0);
    assert_int_equal(id.exp, 0);
    assert_int_equal(gw_identity_may_join_private(&id, CHAT_LIT("private:ops")), 0);
    gw_identity_dispose(&id);
    free(tok);

    /* "private:*": every private room; "*" alone is no longer accepted (test_rooms_patterns);
     * empty rooms array: none */
    tok = make_token(fx, S_K1, H("HS256"), P_WITH("\"rooms\":[\"private:*\"]"));
    assert_int_equal(verify(fx->auth[CFG_ALL], tok, NOW, &id, &reason), 0);
    assert_int_equal(gw_identity_may_join_private(&id, CHAT_LIT("private:anything")), 1);
    assert_int_equal(gw_identity_may_join_private(&id, CHAT_LIT("private:a")), 1);
    gw_identity_dispose(&id);
    free(tok);
    tok = make_token(fx, S_K1, H("HS256"), P_WITH("\"rooms\":[]"));
    assert_int_equal(verify(fx->auth[CFG_ALL], tok, NOW, &id, &reason), 0);
    assert_int_equal(id.nrooms, 0);
    assert_int_equal(gw_identity_may_join_private(&id, CHAT_LIT("private:a")), 0);
    gw_identity_dispose(&id);
    free(tok);
}

/* The rooms pattern rule on verified tokens (handshake and refresh both use gw_auth_verify):
 * the refusals answer invalid_token and leave no identity; a valid pattern grants its prefix
 * only; a hand-built identity holding entries the rule refuses matches nothing. */
static void test_rooms_patterns(void **state)
{
    const fixture_t *fx = *state;
    static const char *const bad[] = {"*",           "p*",         "lobby*", "priv*", "private*",
                                      "private:a*b", "private:**", "*x",     "a*b"};
    gw_identity_t id;
    const char *reason;
    char payload[256], *tok;

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(payload, sizeof(payload),
                 "{\"sub\":\"alice\",\"exp\":" EXP_OK ",\"rooms\":[\"private:ops\",\"%s\"]}",
                 bad[i]);
        tok = make_token(fx, S_EC256, H("ES256"), payload);
        reason = "unset";
        if (verify(fx->auth[CFG_ALL], tok, NOW, &id, &reason) != CHAT_EINVAL)
            fail_msg("rooms entry '%s' accepted", bad[i]);
        assert_string_equal(reason, GW_AUTH_INVALID);
        assert_null(id.sub);
        assert_null(id.rooms);
        gw_identity_dispose(&id);
        free(tok);
    }

    tok = make_token(fx, S_K1, H("HS256"),
                     P_WITH("\"rooms\":[\"private:team-*\",\"lobby\",\"private:ops\"]"));
    assert_int_equal(verify(fx->auth[CFG_ALL], tok, NOW, &id, &reason), 0);
    free(tok);
    assert_int_equal(id.nrooms, 3);
    assert_int_equal(gw_identity_may_join_private(&id, CHAT_LIT("private:team-a")), 1);
    assert_int_equal(gw_identity_may_join_private(&id, CHAT_LIT("private:team-")), 1);
    assert_int_equal(gw_identity_may_join_private(&id, CHAT_LIT("private:ops")), 1);
    assert_int_equal(gw_identity_may_join_private(&id, CHAT_LIT("private:other")), 0);
    assert_int_equal(gw_identity_may_join_private(&id, CHAT_LIT("private:team")), 0);
    assert_int_equal(gw_identity_may_join_private(&id, CHAT_LIT("private:lobby")), 0);
    gw_identity_dispose(&id);

    /* an identity not made by gw_auth_verify(): the refused entries grant nothing */
    {
        char *rooms[] = {"*", "p*", "private*", "private:a*b", "lobby*", "private:x", ""};
        gw_identity_t hand = {.sub = "alice", .rooms = rooms, .nrooms = 7};

        assert_int_equal(gw_identity_may_join_private(&hand, CHAT_LIT("private:any")), 0);
        assert_int_equal(gw_identity_may_join_private(&hand, CHAT_LIT("private:a")), 0);
        assert_int_equal(gw_identity_may_join_private(&hand, CHAT_LIT("private:a*b")), 0);
        assert_int_equal(gw_identity_may_join_private(&hand, CHAT_LIT("private:x")), 1);
        assert_int_equal(gw_identity_may_join_private(&hand, CHAT_LIT("private:xy")), 0);
    }
}

/* A payload with a string claim of n bytes ("x" repeated), or n rooms. */
static void expect_sized(const fixture_t *fx, const char *fmt_key, size_t n, int want)
{
    size_t cap = n * 16 + 256;
    char *payload = chat_xmalloc(cap), *tok;
    size_t o;
    gw_identity_t id;
    const char *reason;

    if (strcmp(fmt_key, "rooms") == 0) {
        o = (size_t)snprintf(payload, cap, "{\"sub\":\"a\",\"exp\":" EXP_OK ",\"rooms\":[");
        for (size_t i = 0; i < n; i++)
            o += (size_t)snprintf(payload + o, cap - o, "%s\"private:r%zu\"", i ? "," : "", i);
        snprintf(payload + o, cap - o, "]}");
    } else if (strcmp(fmt_key, "room") == 0) {
        snprintf(payload, cap, "{\"sub\":\"a\",\"exp\":" EXP_OK ",\"rooms\":[\"%0*d\"]}", (int)n,
                 0);
    } else {
        o = (size_t)snprintf(payload, cap, "{\"%s\":\"", fmt_key);
        memset(payload + o, 'x', n);
        o += n;
        snprintf(payload + o, cap - o, "\",%s\"exp\":" EXP_OK "}",
                 strcmp(fmt_key, "sub") == 0 ? "" : "\"sub\":\"a\",");
    }
    tok = make_token(fx, S_K1, H("HS256"), payload);
    if (verify(fx->auth[CFG_ALL], tok, NOW, &id, &reason) != want)
        fail_msg("%s of %zu: want %d", fmt_key, n, want);
    if (want == 0 && strcmp(fmt_key, "rooms") == 0)
        assert_int_equal(id.nrooms, n);
    if (want == 0 && strcmp(fmt_key, "name") == 0)
        assert_int_equal(strlen(id.name), n);
    gw_identity_dispose(&id);
    free(tok);
    free(payload);
}

static void test_claim_limits(void **state)
{
    const fixture_t *fx = *state;

    expect_sized(fx, "sub", 256, 0);
    expect_sized(fx, "sub", 257, CHAT_EINVAL);
    expect_sized(fx, "name", 256, 0);
    expect_sized(fx, "name", 257, CHAT_EINVAL);
    expect_sized(fx, "rooms", 256, 0);
    expect_sized(fx, "rooms", 257, CHAT_EINVAL);
    expect_sized(fx, "room", 256, 0);
    expect_sized(fx, "room", 257, CHAT_EINVAL);
}

/* The refusal path must not leave OpenSSL errors behind for the next user of the thread. */
static void test_no_openssl_error_left(void **state)
{
    const fixture_t *fx = *state;
    char *tok = make_token(fx, S_EC256, H("ES256"), P_OK);
    gw_identity_t id;
    const char *reason;

    tok = mutate(tok, M_FLIP_SIG);
    ERR_clear_error();
    assert_int_equal(verify(fx->auth[CFG_ALL], tok, NOW, &id, &reason), CHAT_EINVAL);
    assert_int_equal(ERR_peek_error(), 0);
    free(tok);
    tok = make_token(fx, S_RSA, H("RS256"), P_OK);
    tok = mutate(tok, M_FLIP_SIG);
    assert_int_equal(verify(fx->auth[CFG_ALL], tok, NOW, &id, &reason), CHAT_EINVAL);
    assert_int_equal(ERR_peek_error(), 0);
    free(tok);
}

/* ---- gw_auth_create ---------------------------------------------------------------------- */

static int create_with(const char *secret, const char *secret_files, const char *pub_files,
                       char *err, size_t errcap)
{
    gw_auth_config_t cfg;
    gw_auth_t *a = (gw_auth_t *)1;
    int rc;

    gw_auth_config_init(&cfg);
    cfg.secret = secret;
    cfg.secret_files = secret_files;
    cfg.public_key_files = pub_files;
    rc = gw_auth_create(&a, &cfg, err, errcap);
    if (rc != 0)
        assert_null(a);
    gw_auth_free(a);
    return rc;
}

static void expect_create_error(const char *secret_files, const char *pub_files, int want,
                                const char *needle)
{
    char err[512];
    int rc = create_with(NULL, secret_files, pub_files, err, sizeof(err));

    if (rc != want)
        fail_msg("create(%s | %s): rc %d (%s), want %d; err: %s", secret_files ? secret_files : "-",
                 pub_files ? pub_files : "-", rc, chat_strerror(rc), want, err);
    if (strstr(err, needle) == NULL)
        fail_msg("err '%s' lacks '%s'", err, needle);
    /* never the secrets' content */
    assert_null(strstr(err, K1_SECRET));
    assert_null(strstr(err, K2_SECRET));
    assert_null(strstr(err, "hunter2"));
}

static void test_create_errors(void **state)
{
    const fixture_t *fx = *state;
    char *missing = path_in(fx, "missing.key"), *empty = path_in(fx, "empty.key");
    char *notpem = path_in(fx, "notpem.pem"), *priv = path_in(fx, "private.pem");
    char *k256k1 = path_in(fx, "k256k1.pem"), *small = path_in(fx, "rsa1024.pem");
    char *ed = path_in(fx, "ed.pem"), *k1 = path_in(fx, "k1.key");
    char *dupdir = path_in(fx, "dup"), *dupk1 = path_in(fx, "dup/k1.pem");
    char *rsa = path_in(fx, "rsa1.pem"), *noname = path_in(fx, ".key");
    char *secret_pem = path_in(fx, "secret.pem"), *dir_as_file = path_in(fx, "dup");
    char *big = path_in(fx, "big.key");
    char list[1024], err[256];
    EVP_PKEY *pk;
    BIO *bio;

    write_str(fx, "empty.key", " \n\t\r\n");
    write_str(fx, "notpem.pem", "hunter2\n");
    write_str(fx, "secret.pem", "hunter2 is not a key\n");
    write_str(fx, ".key", "hunter2\n");
    bio = BIO_new_file(priv, "w");
    assert_int_equal(PEM_write_bio_PrivateKey(bio, fx->ec256, NULL, NULL, 0, NULL, NULL), 1);
    BIO_free(bio);
    pk = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "secp256k1");
    assert_non_null(pk);
    write_pubkey(fx, "k256k1.pem", pk);
    EVP_PKEY_free(pk);
    pk = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)1024);
    assert_non_null(pk);
    write_pubkey(fx, "rsa1024.pem", pk);
    EVP_PKEY_free(pk);
    pk = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    assert_non_null(pk);
    write_pubkey(fx, "ed.pem", pk);
    EVP_PKEY_free(pk);
    assert_int_equal(mkdir(dupdir, 0700), 0);
    write_pubkey(fx, "dup/k1.pem", fx->rsa);
    {
        char *junk = chat_xmalloc(GW_AUTH_MAX_KEY_FILE + 10);
        memset(junk, 'a', GW_AUTH_MAX_KEY_FILE + 10);
        write_file(fx, "big.key", junk, GW_AUTH_MAX_KEY_FILE + 10);
        free(junk);
    }

    expect_create_error(missing, NULL, UV_ENOENT, missing);
    expect_create_error(NULL, missing, UV_ENOENT, "missing.key");
    expect_create_error(empty, NULL, CHAT_EINVAL, "empty secret");
    expect_create_error(NULL, notpem, CHAT_EINVAL, "not a PEM public key");
    expect_create_error(NULL, secret_pem, CHAT_EINVAL, "secret.pem");
    expect_create_error(NULL, priv, CHAT_EINVAL, "private key");
    expect_create_error(NULL, k256k1, CHAT_EINVAL, "unsupported curve");
    expect_create_error(NULL, small, CHAT_EINVAL, "1024 bits");
    expect_create_error(NULL, ed, CHAT_EINVAL, "unsupported key type");
    expect_create_error(k1, dupk1, CHAT_EINVAL, "'k1'");
    snprintf(list, sizeof(list), "%s,%s", k1, k1);
    expect_create_error(list, NULL, CHAT_EINVAL, "'k1'");
    expect_create_error(noname, NULL, CHAT_EINVAL, "empty key name");
    expect_create_error(dir_as_file, NULL, UV_EISDIR, "cannot read");
    expect_create_error(big, NULL, CHAT_ETOOLARGE, "larger than");
    /* an error in the second entry after a good first one: nothing leaks (ASan) */
    snprintf(list, sizeof(list), "%s, %s", rsa, notpem);
    expect_create_error(NULL, list, CHAT_EINVAL, "notpem.pem");
    snprintf(list, sizeof(list), "%s,%s", k1, empty);
    expect_create_error(list, rsa, CHAT_EINVAL, "empty.key");
    /* errcap 0 and NULL err are allowed */
    assert_int_equal(create_with(NULL, missing, NULL, NULL, 0), UV_ENOENT);
    assert_int_equal(create_with(NULL, missing, NULL, err, 1), UV_ENOENT);
    assert_string_equal(err, "");

    /* successes: empty strings mean "none", lists tolerate spaces and empty entries */
    assert_int_equal(create_with("", "", "", err, sizeof(err)), 0);
    snprintf(list, sizeof(list), " , %s ,, ", k1);
    assert_int_equal(create_with(NULL, list, " ,", err, sizeof(err)), 0);
    snprintf(list, sizeof(list), "%s", rsa);
    assert_int_equal(create_with("inline", NULL, list, err, sizeof(err)), 0);

    free(missing);
    free(empty);
    free(notpem);
    free(priv);
    free(k256k1);
    free(small);
    free(ed);
    free(k1);
    free(dupdir);
    free(dupk1);
    free(rsa);
    free(noname);
    free(secret_pem);
    free(dir_as_file);
    free(big);
}

static void test_create_defaults(void **state)
{
    gw_auth_config_t cfg;

    (void)state;
    memset(&cfg, 0xff, sizeof(cfg));
    gw_auth_config_init(&cfg);
    assert_int_equal(cfg.leeway_s, GW_AUTH_DEFAULT_LEEWAY_S);
    assert_int_equal(cfg.leeway_s, 30);
    assert_null(cfg.secret);
    assert_null(cfg.issuer);
    assert_int_equal(cfg.allow_no_exp, 0);
    assert_int_equal(gw_auth_enabled(NULL), 0);
    gw_auth_free(NULL);
}

/* Leeway 0 and a huge leeway (saturating, no overflow). */
static void test_leeway_config(void **state)
{
    const fixture_t *fx = *state;
    char *k1 = path_in(fx, "k1.key");
    gw_auth_config_t cfg;
    gw_auth_t *strict = NULL, *lax = NULL;
    gw_identity_t id;
    const char *reason;
    char *tok;

    gw_auth_config_init(&cfg);
    cfg.secret_files = k1;
    cfg.leeway_s = 0;
    assert_int_equal(gw_auth_create(&strict, &cfg, NULL, 0), 0);
    cfg.leeway_s = UINT64_MAX;
    assert_int_equal(gw_auth_create(&lax, &cfg, NULL, 0), 0);

    tok = make_token(fx, S_K1, H("HS256"), "{\"sub\":\"a\",\"exp\":1700000000}");
    assert_int_equal(verify(strict, tok, NOW, &id, &reason), 0);
    gw_identity_dispose(&id);
    assert_int_equal(verify(strict, tok, NOW + 1, &id, &reason), CHAT_EINVAL);
    assert_string_equal(reason, GW_AUTH_EXPIRED);
    assert_int_equal(verify(lax, tok, INT64_MAX, &id, &reason), 0);
    gw_identity_dispose(&id);
    free(tok);

    tok = make_token(fx, S_K1, H("HS256"),
                     "{\"sub\":\"a\",\"exp\":1800000000,\"nbf\":1700000001,\"iat\":1700000001}");
    assert_int_equal(verify(strict, tok, NOW, &id, &reason), CHAT_EINVAL);
    assert_string_equal(reason, GW_AUTH_INVALID);
    assert_int_equal(verify(strict, tok, NOW + 1, &id, &reason), 0);
    gw_identity_dispose(&id);
    assert_int_equal(verify(lax, tok, 0, &id, &reason), 0);
    gw_identity_dispose(&id);
    free(tok);

    tok = make_token(fx, S_K1, H("HS256"), "{\"sub\":\"a\",\"exp\":-9007199254740992}");
    assert_int_equal(verify(lax, tok, NOW, &id, &reason), 0);
    gw_identity_dispose(&id);
    assert_int_equal(verify(strict, tok, NOW, &id, &reason), CHAT_EINVAL);
    assert_string_equal(reason, GW_AUTH_EXPIRED);
    free(tok);

    gw_auth_free(strict);
    gw_auth_free(lax);
    free(k1);
}

/* ---- the envelope parsers directly ------------------------------------------------------- */

static int header_n(const char *s, chat_jwt_header_t *h)
{
    size_t n = strlen(s);
    char *copy = chat_xmalloc(n ? n : 1);
    int rc;

    memcpy(copy, s, n);
    rc = chat_env_parse_jwt_header(copy, n, h);
    free(copy);
    return rc;
}

static int claims_n(const char *s, chat_jwt_claims_t *c)
{
    size_t n = strlen(s);
    char *copy = chat_xmalloc(n ? n : 1);
    int rc;

    memcpy(copy, s, n);
    rc = chat_env_parse_jwt_claims(copy, n, c);
    free(copy);
    return rc;
}

static void test_env_jwt_header(void **state)
{
    chat_jwt_header_t h;
    char big[400];

    (void)state;
    assert_int_equal(header_n("{\"alg\":\"RS256\",\"kid\":\"k-1\",\"typ\":\"JWT\"}", &h), 0);
    assert_string_equal(h.alg, "RS256");
    assert_string_equal(h.kid, "k-1");
    assert_int_equal(h.has_kid, 1);
    assert_int_equal(h.has_crit, 0);
    assert_int_equal(header_n(" {\"alg\":\"HS256\"}\n", &h), 0);
    assert_int_equal(h.has_kid, 0);
    assert_string_equal(h.kid, "");
    assert_int_equal(header_n("{\"alg\":\"HS256\",\"kid\":\"\"}", &h), 0);
    assert_int_equal(h.has_kid, 1);
    assert_int_equal(header_n("{\"alg\":\"HS256\",\"crit\":[]}", &h), 0);
    assert_int_equal(h.has_crit, 1);

    assert_int_equal(header_n("", &h), CHAT_EBADJSON);
    assert_non_null(h.error);
    assert_int_equal(chat_env_parse_jwt_header(NULL, 0, &h), CHAT_EBADJSON);
    assert_int_equal(header_n("null", &h), CHAT_EBADJSON);
    assert_int_equal(header_n("{\"alg\":\"HS256\"}{}", &h), CHAT_EBADJSON);
    assert_int_equal(header_n("{\"alg\":\"\"}", &h), CHAT_EBADREQ);
    assert_int_equal(header_n("{\"alg\":\"ABCDEFGHIJKLMNOP\"}", &h), CHAT_EBADREQ);
    assert_int_equal(header_n("{\"alg\":\"ABCDEFGHIJKLMNO\"}", &h), 0);
    assert_int_equal(header_n("{\"alg\":null}", &h), CHAT_EBADREQ);
    assert_int_equal(header_n("{\"ALG\":\"HS256\"}", &h), CHAT_EBADREQ);
    assert_int_equal(header_n("{\"alg\":\"HS256\",\"alg\":\"HS256\"}", &h), CHAT_EBADREQ);
    assert_int_equal(header_n("{\"alg\":\"HS\\u0000256\"}", &h), CHAT_EBADREQ);
    assert_int_equal(header_n("{\"alg\":\"HS256\",\"x\":\"\xc0\xaf\"}", &h), CHAT_EBADJSON);
    assert_int_equal(header_n("{\"alg\":\"HS256\",\"x\":\"\xed\xa0\x80\"}", &h), CHAT_EBADJSON);
    assert_int_equal(header_n("{\"alg\":\"HS256\",\"x\":\"\xf4\x90\x80\x80\"}", &h), CHAT_EBADJSON);
    assert_int_equal(header_n("{\"alg\":\"HS256\",\"x\":\"\xe2\x82\"}", &h), CHAT_EBADJSON);
    assert_int_equal(header_n("{\"alg\":\"HS256\",\"x\":\"\xe2\x82\xac \xf0\x9f\x98\x80\"}", &h),
                     0);
    /* an escaped backslash before u0000 is not a NUL escape */
    assert_int_equal(header_n("{\"alg\":\"HS256\",\"x\":\"\\\\u0000\"}", &h), 0);
    snprintf(big, sizeof(big), "{\"alg\":\"HS256\",\"kid\":\"%0255d\"}", 0);
    assert_int_equal(header_n(big, &h), 0);
    assert_int_equal(strlen(h.kid), 255);
    snprintf(big, sizeof(big), "{\"alg\":\"HS256\",\"kid\":\"%0256d\"}", 0);
    assert_int_equal(header_n(big, &h), CHAT_EBADREQ);
    /* nesting beyond CHAT_ENV_MAX_DEPTH */
    assert_int_equal(header_n("{\"alg\":\"HS256\",\"x\":[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]}", &h),
                     CHAT_EBADREQ);
}

static void test_env_jwt_claims(void **state)
{
    chat_jwt_claims_t c;

    (void)state;
    assert_int_equal(claims_n("{\"sub\":\"s\",\"name\":\"N\",\"iss\":\"i\",\"aud\":\"a\","
                              "\"rooms\":[\"r1\",\"r2*\"],\"exp\":10.5,\"nbf\":9.5,\"iat\":-1.5}",
                              &c),
                     0);
    assert_string_equal(c.sub, "s");
    assert_string_equal(c.name, "N");
    assert_string_equal(c.iss, "i");
    assert_int_equal(c.has_aud, 1);
    assert_int_equal(c.naud, 1);
    assert_string_equal(c.aud[0], "a");
    assert_int_equal(c.has_rooms, 1);
    assert_int_equal(c.nrooms, 2);
    assert_string_equal(c.rooms[1], "r2*");
    assert_int_equal(c.exp, 10); /* floor */
    assert_int_equal(c.nbf, 10); /* ceil */
    assert_int_equal(c.iat, -1); /* ceil */
    assert_true(c.has_exp && c.has_nbf && c.has_iat);
    chat_env_jwt_claims_dispose(&c);
    assert_null(c.sub);
    chat_env_jwt_claims_dispose(&c);
    chat_env_jwt_claims_dispose(NULL);

    assert_int_equal(claims_n("{}", &c), 0);
    assert_null(c.sub);
    assert_int_equal(c.has_exp + c.has_nbf + c.has_iat + c.has_aud + c.has_rooms, 0);
    chat_env_jwt_claims_dispose(&c);
    assert_int_equal(claims_n("{\"exp\":-10.5,\"aud\":[]}", &c), 0);
    assert_int_equal(c.exp, -11);
    assert_int_equal(c.has_aud, 1);
    assert_int_equal(c.naud, 0);
    chat_env_jwt_claims_dispose(&c);
    assert_int_equal(claims_n("{\"exp\":9007199254740992}", &c), 0);
    chat_env_jwt_claims_dispose(&c);
    assert_int_equal(claims_n("{\"exp\":9007199254740994}", &c), CHAT_EBADREQ);
    assert_non_null(c.error);
    assert_int_equal(claims_n("{\"exp\":-1e16}", &c), CHAT_EBADREQ);

    /* failures free what was copied before them (ASan would see leaks) */
    assert_int_equal(claims_n("{\"sub\":\"s\",\"name\":\"n\",\"aud\":[\"a\"],\"rooms\":[\"r\"],"
                              "\"exp\":\"x\"}",
                              &c),
                     CHAT_EBADREQ);
    assert_null(c.sub);
    assert_null(c.rooms);
    assert_non_null(c.error);
    chat_env_jwt_claims_dispose(&c);
    assert_int_equal(claims_n("{\"sub\":\"s\",\"rooms\":[\"a\",{}]}", &c), CHAT_EBADREQ);
    assert_int_equal(claims_n("{\"sub\":\"s\",\"aud\":[\"a\",null]}", &c), CHAT_EBADREQ);
    assert_int_equal(claims_n("{\"sub\":\"s\",\"aud\":null}", &c), CHAT_EBADREQ);
    assert_int_equal(claims_n("{\"sub\":\"s\",\"name\":\"a\\u0000\"}", &c), CHAT_EBADREQ);
    assert_int_equal(claims_n("{\"sub\":\"s\",\"sub\":\"t\"}", &c), CHAT_EBADREQ);
    assert_int_equal(claims_n("[]", &c), CHAT_EBADJSON);
    assert_int_equal(claims_n("{\"sub\":\"\xff\"}", &c), CHAT_EBADJSON);
    assert_int_equal(claims_n("{\"sub\":\"\\ud800\"}", &c), CHAT_EBADJSON);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table),          cmocka_unit_test(test_raw_tokens),
        cmocka_unit_test(test_size_limit),     cmocka_unit_test(test_identity_claims),
        cmocka_unit_test(test_claim_limits),   cmocka_unit_test(test_no_openssl_error_left),
        cmocka_unit_test(test_create_errors),  cmocka_unit_test(test_create_defaults),
        cmocka_unit_test(test_leeway_config),  cmocka_unit_test(test_env_jwt_header),
        cmocka_unit_test(test_env_jwt_claims), cmocka_unit_test(test_rooms_patterns),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
