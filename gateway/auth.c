/* gateway/auth.c - JWT verification (see auth.h). Owns the key table (HMAC secrets, RSA and EC
 * EVP_PKEYs) built once by gw_auth_create(); gw_auth_verify() reads it and keeps no state.
 * OpenSSL's 1/0 results are translated here into 0 / negative CHAT_E* codes. The JSON halves go
 * through common/envelope.c (no cJSON here); no sockets, no loop. Never logs or reports a token,
 * any part of one, or a secret's bytes. */
#include "auth.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/objects.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <uv.h>

#include "alloc.h"
#include "base64.h"
#include "envelope.h"
#include "err.h"
#include "log.h"


/* What a key can verify; an alg names exactly one kind. */
typedef enum key_kind {
    KEY_HMAC = 1,
    KEY_RSA,
    KEY_EC_P256,
    KEY_EC_P384,
} key_kind_t;

typedef struct auth_key {
    key_kind_t kind;
    char *name;            /* NULL for the inline secret */
    unsigned char *secret; /* KEY_HMAC */
    size_t secret_len;
    EVP_PKEY *pkey; /* the others */
} auth_key_t;

struct gw_auth {
    auth_key_t *keys;
    size_t nkeys, cap;
    int allow_no_exp;
    uint64_t leeway_s;
    char *issuer;   /* NULL: not checked */
    char *audience; /* NULL: not checked */
};

typedef struct alg_spec {
    const char *name;
    key_kind_t kind;
    const EVP_MD *(*digest)(void);
    size_t ec_coord_len; /* ES*: bytes of r and of s in the raw signature */
} alg_spec_t;

static const alg_spec_t algs[] = {
    {"HS256", KEY_HMAC, EVP_sha256, 0},     {"HS384", KEY_HMAC, EVP_sha384, 0},
    {"HS512", KEY_HMAC, EVP_sha512, 0},     {"RS256", KEY_RSA, EVP_sha256, 0},
    {"RS384", KEY_RSA, EVP_sha384, 0},      {"RS512", KEY_RSA, EVP_sha512, 0},
    {"ES256", KEY_EC_P256, EVP_sha256, 32}, {"ES384", KEY_EC_P384, EVP_sha384, 48},
};

/* ---- configuration --------------------------------------------------------------------- */

__attribute__((format(printf, 3, 4))) static void set_err(char *err, size_t errcap, const char *fmt,
                                                          ...)
{
    va_list ap;

    if (err == NULL || errcap == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(err, errcap, fmt, ap);
    va_end(ap);
}

static int is_space(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

void gw_auth_config_init(gw_auth_config_t *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->leeway_s = GW_AUTH_DEFAULT_LEEWAY_S;
}

static int is_set(const char *s)
{
    return s != NULL && s[0] != '\0';
}

static void key_dispose(auth_key_t *k)
{
    free(k->name);
    if (k->secret != NULL) {
        OPENSSL_cleanse(k->secret, k->secret_len);
        free(k->secret);
    }
    EVP_PKEY_free(k->pkey);
    memset(k, 0, sizeof(*k));
}

/* Appends k (moved: the table owns its allocations from now on). Refuses a duplicate name. */
static int add_key(gw_auth_t *a, auth_key_t *k, const char *path, char *err, size_t errcap)
{
    for (size_t i = 0; k->name != NULL && i < a->nkeys; i++) {
        if (a->keys[i].name != NULL && strcmp(a->keys[i].name, k->name) == 0) {
            set_err(err, errcap, "JWT key file %s: another key file is also named '%s'", path,
                    k->name);
            key_dispose(k);
            return CHAT_EINVAL;
        }
    }
    if (a->nkeys == a->cap) {
        a->cap = a->cap ? a->cap * 2 : 4;
        a->keys = chat_xrealloc(a->keys, a->cap * sizeof(*a->keys));
    }
    a->keys[a->nkeys++] = *k;
    memset(k, 0, sizeof(*k));
    return 0;
}

/* The key name of a path: the file name without directory and last extension. */
static int key_name(const char *path, char **out, char *err, size_t errcap)
{
    const char *base = strrchr(path, '/');
    const char *dot;
    size_t len;

    base = base ? base + 1 : path;
    dot = strrchr(base, '.');
    len = dot ? (size_t)(dot - base) : strlen(base);
    if (len == 0 || len > CHAT_JWT_MAX_KID) {
        set_err(err, errcap, "JWT key file %s: its file name gives %s key name", path,
                len == 0 ? "an empty" : "a too long (over 255 bytes)");
        return CHAT_EINVAL;
    }
    *out = chat_xstrndup(base, len);
    return 0;
}

/* Reads the whole file into a new buffer (*data, *len; NUL-terminated for convenience). The
 * caller wipes and frees it. */
static int read_file(const char *path, const char *what, unsigned char **data, size_t *len,
                     char *err, size_t errcap)
{
    unsigned char *buf = chat_xmalloc(GW_AUTH_MAX_KEY_FILE + 1);
    FILE *f = fopen(path, "rb");
    size_t n = 0;
    int rc;

    if (f == NULL)
        goto fail_errno;
    n = fread(buf, 1, GW_AUTH_MAX_KEY_FILE + 1, f);
    if (ferror(f))
        goto fail_errno;
    fclose(f);
    f = NULL;
    if (n > GW_AUTH_MAX_KEY_FILE) {
        set_err(err, errcap, "%s %s: larger than %d bytes", what, path, GW_AUTH_MAX_KEY_FILE);
        rc = CHAT_ETOOLARGE;
        goto fail;
    }
    buf[n] = '\0';
    *data = buf;
    *len = n;
    return 0;
fail_errno:
    rc = uv_translate_sys_error(errno ? errno : EIO);
    set_err(err, errcap, "%s %s: cannot read: %s", what, path, strerror(-rc));
fail:
    if (f != NULL)
        fclose(f);
    OPENSSL_cleanse(buf, n);
    free(buf);
    return rc;
}

static int add_inline_secret(gw_auth_t *a, const char *secret)
{
    auth_key_t k = {.kind = KEY_HMAC};

    k.secret_len = strlen(secret);
    k.secret = (unsigned char *)chat_xstrndup(secret, k.secret_len);
    return add_key(a, &k, "(inline)", NULL, 0);
}

static int add_secret_file(gw_auth_t *a, const char *path, char *err, size_t errcap)
{
    auth_key_t k = {.kind = KEY_HMAC};
    unsigned char *data = NULL;
    size_t len = 0, start = 0, end;
    int rc;

    if ((rc = key_name(path, &k.name, err, errcap)) != 0 ||
        (rc = read_file(path, "JWT secret file", &data, &len, err, errcap)) != 0)
        goto fail;
    end = len;
    while (start < end && is_space(data[start]))
        start++;
    while (end > start && is_space(data[end - 1]))
        end--;
    if (start == end) {
        set_err(err, errcap, "JWT secret file %s: empty secret", path);
        rc = CHAT_EINVAL;
        goto fail;
    }
    k.secret_len = end - start;
    k.secret = chat_xmalloc(k.secret_len);
    memcpy(k.secret, data + start, k.secret_len);
    OPENSSL_cleanse(data, len);
    free(data);
    return add_key(a, &k, path, err, errcap);
fail:
    if (data != NULL) {
        OPENSSL_cleanse(data, len);
        free(data);
    }
    key_dispose(&k);
    return rc;
}

/* Decides which kind of key pkey is; CHAT_EINVAL with a message for anything unsupported. */
static int classify_pkey(EVP_PKEY *pkey, const char *path, key_kind_t *kind, char *err,
                         size_t errcap)
{
    char group[64];
    size_t glen = 0;
    int nid;

    if (EVP_PKEY_get_base_id(pkey) == EVP_PKEY_RSA) {
        int bits = EVP_PKEY_get_bits(pkey);
        if (bits < GW_AUTH_MIN_RSA_BITS) {
            set_err(err, errcap, "JWT public key file %s: RSA key of %d bits (at least %d)", path,
                    bits, GW_AUTH_MIN_RSA_BITS);
            return CHAT_EINVAL;
        }
        *kind = KEY_RSA;
        return 0;
    }
    if (EVP_PKEY_get_base_id(pkey) != EVP_PKEY_EC) {
        set_err(err, errcap,
                "JWT public key file %s: unsupported key type (RSA or EC P-256/P-384 only)", path);
        return CHAT_EINVAL;
    }
    if (EVP_PKEY_get_group_name(pkey, group, sizeof(group), &glen) != 1) {
        set_err(err, errcap, "JWT public key file %s: EC key without a named curve", path);
        return CHAT_EINVAL;
    }
    nid = OBJ_sn2nid(group);
    if (nid == NID_undef)
        nid = EC_curve_nist2nid(group);
    if (nid == NID_X9_62_prime256v1) {
        *kind = KEY_EC_P256;
    } else if (nid == NID_secp384r1) {
        *kind = KEY_EC_P384;
    } else {
        set_err(err, errcap, "JWT public key file %s: unsupported curve %s (P-256 or P-384)", path,
                group);
        return CHAT_EINVAL;
    }
    return 0;
}

static int add_public_key_file(gw_auth_t *a, const char *path, char *err, size_t errcap)
{
    auth_key_t k = {0};
    unsigned char *data = NULL;
    size_t len = 0;
    BIO *bio = NULL;
    int rc;

    if ((rc = key_name(path, &k.name, err, errcap)) != 0 ||
        (rc = read_file(path, "JWT public key file", &data, &len, err, errcap)) != 0)
        goto fail;
    bio = BIO_new_mem_buf(data, (int)len);
    if (bio == NULL)
        chat__oom(len);
    k.pkey = PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL);
    if (k.pkey == NULL) {
        set_err(err, errcap, "JWT public key file %s: %s", path,
                strstr((const char *)data, "PRIVATE KEY") != NULL
                    ? "holds a private key; configure its public key instead"
                    : "not a PEM public key (-----BEGIN PUBLIC KEY-----)");
        rc = CHAT_EINVAL;
        goto fail;
    }
    if ((rc = classify_pkey(k.pkey, path, &k.kind, err, errcap)) != 0)
        goto fail;
    ERR_clear_error(); /* decoders tried before the right one may have queued errors */
    BIO_free(bio);
    free(data);
    return add_key(a, &k, path, err, errcap);
fail:
    ERR_clear_error();
    BIO_free(bio);
    free(data);
    key_dispose(&k);
    return rc;
}

/* Calls add(a, path) for each non-empty, space-trimmed entry of the comma-separated list. */
static int for_each_path(gw_auth_t *a, const char *list,
                         int (*add)(gw_auth_t *, const char *, char *, size_t), char *err,
                         size_t errcap)
{
    const char *p = list;

    while (*p != '\0') {
        const char *comma = strchr(p, ',');
        const char *end = comma ? comma : p + strlen(p);
        const char *s = p;
        int rc = 0;

        while (s < end && is_space((unsigned char)*s))
            s++;
        while (end > s && is_space((unsigned char)end[-1]))
            end--;
        if (end > s) {
            char *path = chat_xstrndup(s, (size_t)(end - s));
            rc = add(a, path, err, errcap);
            free(path);
        }
        if (rc != 0)
            return rc;
        if (comma == NULL)
            break;
        p = comma + 1;
    }
    return 0;
}

int gw_auth_create(gw_auth_t **out, const gw_auth_config_t *cfg, char *err, size_t errcap)
{
    gw_auth_t *a = chat_xcalloc(1, sizeof(*a));
    int rc;

    *out = NULL;
    set_err(err, errcap, "%s", "");
    a->allow_no_exp = cfg->allow_no_exp != 0;
    a->leeway_s = cfg->leeway_s;
    if (is_set(cfg->issuer))
        a->issuer = chat_xstrndup(cfg->issuer, strlen(cfg->issuer));
    if (is_set(cfg->audience))
        a->audience = chat_xstrndup(cfg->audience, strlen(cfg->audience));
    if ((is_set(cfg->secret) && (rc = add_inline_secret(a, cfg->secret)) != 0) ||
        (is_set(cfg->secret_files) &&
         (rc = for_each_path(a, cfg->secret_files, add_secret_file, err, errcap)) != 0) ||
        (is_set(cfg->public_key_files) &&
         (rc = for_each_path(a, cfg->public_key_files, add_public_key_file, err, errcap)) != 0))
        goto fail;
    *out = a;
    return 0;
fail:
    gw_auth_free(a);
    return rc;
}

void gw_auth_free(gw_auth_t *a)
{
    if (a == NULL)
        return;
    for (size_t i = 0; i < a->nkeys; i++)
        key_dispose(&a->keys[i]);
    free(a->keys);
    free(a->issuer);
    free(a->audience);
    free(a);
}

int gw_auth_enabled(const gw_auth_t *a)
{
    return a != NULL && a->nkeys > 0;
}

/* ---- verification ---------------------------------------------------------------------- */

/* The value of a base64url character, or -1. */
static int b64url_value(unsigned char c)
{
    return chat_base64_value(c, 1);
}

/* Strict base64url (RFC 7515 section 2): no padding, no characters outside the alphabet, no
 * length of 1 mod 4, and the unused low bits of the last character must be zero (so each byte
 * string has exactly one encoding). Writes at most n * 3 / 4 bytes to out. */
static int b64url_decode(chat_str_t in, unsigned char *out, size_t *out_len)
{
    uint32_t acc = 0;
    unsigned bits = 0;
    size_t o = 0;

    if (in.len == 0 || in.len % 4 == 1)
        return CHAT_EMALFORMED;
    for (size_t i = 0; i < in.len; i++) {
        int v = b64url_value((unsigned char)in.p[i]);
        if (v < 0)
            return CHAT_EMALFORMED;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (unsigned char)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    if (acc != 0) /* leftover bits (2 or 4) must be zero */
        return CHAT_EMALFORMED;
    *out_len = o;
    return 0;
}

static const alg_spec_t *find_alg(const char *name)
{
    for (size_t i = 0; i < sizeof(algs) / sizeof(algs[0]); i++)
        if (strcmp(algs[i].name, name) == 0)
            return &algs[i];
    return NULL;
}

/* ---- signature checks: 1 verified, 0 not (OpenSSL's convention, kept inside this section) */

static int verify_hmac(const auth_key_t *k, const EVP_MD *md, chat_str_t input,
                       const unsigned char *sig, size_t sig_len)
{
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int mac_len = 0;
    int ok;

    if (HMAC(md, k->secret, (int)k->secret_len, (const unsigned char *)input.p, input.len, mac,
             &mac_len) == NULL)
        return 0;
    ok = mac_len == sig_len && CRYPTO_memcmp(mac, sig, sig_len) == 0;
    OPENSSL_cleanse(mac, sizeof(mac));
    return ok;
}

static int verify_digest(EVP_PKEY *pkey, const EVP_MD *md, int rsa, chat_str_t input,
                         const unsigned char *sig, size_t sig_len)
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    EVP_PKEY_CTX *pctx = NULL;
    int ok = 0;

    if (ctx == NULL)
        chat__oom(sizeof(void *));
    if (EVP_DigestVerifyInit(ctx, &pctx, md, NULL, pkey) != 1)
        goto done;
    if (rsa && EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PADDING) <= 0)
        goto done;
    ok = EVP_DigestVerify(ctx, sig, sig_len, (const unsigned char *)input.p, input.len) == 1;
done:
    EVP_MD_CTX_free(ctx);
    return ok;
}

/* JWS carries r || s (RFC 7518 section 3.4); OpenSSL verifies DER, so re-encode. */
static int verify_ecdsa(const auth_key_t *k, const alg_spec_t *alg, const EVP_MD *md,
                        chat_str_t input, const unsigned char *sig, size_t sig_len)
{
    size_t n = alg->ec_coord_len;
    ECDSA_SIG *es = NULL;
    BIGNUM *r = NULL, *s = NULL;
    unsigned char *der = NULL;
    int der_len, ok = 0;

    if (sig_len != 2 * n)
        return 0;
    es = ECDSA_SIG_new();
    r = BN_bin2bn(sig, (int)n, NULL);
    s = BN_bin2bn(sig + n, (int)n, NULL);
    if (es == NULL || r == NULL || s == NULL)
        goto done;
    if (ECDSA_SIG_set0(es, r, s) != 1)
        goto done;
    r = s = NULL; /* owned by es now */
    der_len = i2d_ECDSA_SIG(es, &der);
    if (der_len <= 0)
        goto done;
    ok = verify_digest(k->pkey, md, 0, input, der, (size_t)der_len);
done:
    OPENSSL_free(der);
    BN_free(r);
    BN_free(s);
    ECDSA_SIG_free(es);
    return ok;
}

static int verify_with(const auth_key_t *k, const alg_spec_t *alg, chat_str_t input,
                       const unsigned char *sig, size_t sig_len)
{
    const EVP_MD *md = alg->digest();
    int ok = 0;

    switch (alg->kind) {
    case KEY_HMAC:
        ok = verify_hmac(k, md, input, sig, sig_len);
        break;
    case KEY_RSA:
        ok = sig_len == (size_t)EVP_PKEY_get_size(k->pkey) &&
             verify_digest(k->pkey, md, 1, input, sig, sig_len);
        break;
    case KEY_EC_P256:
    case KEY_EC_P384:
        ok = verify_ecdsa(k, alg, md, input, sig, sig_len);
        break;
    }
    ERR_clear_error(); /* a failed verification leaves entries; nobody else should see them */
    return ok;
}

/* ---- claims ---------------------------------------------------------------------------- */

/* a + b, saturating at INT64_MAX (b is a leeway, a a date or now). */
static int64_t add_sat(int64_t a, uint64_t b)
{
    int64_t bb = b > (uint64_t)INT64_MAX ? INT64_MAX : (int64_t)b;

    return a > INT64_MAX - bb ? INT64_MAX : a + bb;
}

/* The rules of the rooms claim (auth.h): a '*' only as the last byte of an entry, and such a
 * pattern only under "private:". Returns 0 or CHAT_EINVAL (with *detail). */
static int check_rooms(const chat_jwt_claims_t *c, const char **detail)
{
    for (size_t i = 0; i < c->nrooms; i++) {
        const char *e = c->rooms[i], *star = strchr(e, '*');
        if (star == NULL)
            continue;
        if (star[1] != '\0') {
            *detail = "claim 'rooms': '*' allowed only as the last byte of an entry";
            return CHAT_EINVAL;
        }
        if (strncmp(e, GW_AUTH_PRIVATE_PREFIX, sizeof(GW_AUTH_PRIVATE_PREFIX) - 1) != 0) {
            *detail = "claim 'rooms': a pattern (ending in '*') must start with 'private:'";
            return CHAT_EINVAL;
        }
    }
    return 0;
}

/* check_claims()'s answer for a token that passed every check but exp. */
enum { CLAIMS_EXPIRED = 1 };

/* Applies the policy to parsed claims. Returns 0, CHAT_EINVAL or CLAIMS_EXPIRED (with *detail). */
static int check_claims(const gw_auth_t *a, const chat_jwt_claims_t *c, int64_t now_s,
                        const char **detail)
{
    if (c->sub == NULL || c->sub[0] == '\0') {
        *detail = "claim 'sub' missing or empty";
        return CHAT_EINVAL;
    }
    if (!c->has_exp && !a->allow_no_exp) {
        *detail = "claim 'exp' missing";
        return CHAT_EINVAL;
    }
    if (c->has_nbf && add_sat(now_s, a->leeway_s) < c->nbf) {
        *detail = "not valid yet (nbf)";
        return CHAT_EINVAL;
    }
    if (c->has_iat && c->iat > add_sat(now_s, a->leeway_s)) {
        *detail = "issued in the future (iat)";
        return CHAT_EINVAL;
    }
    if (a->issuer != NULL && (c->iss == NULL || strcmp(c->iss, a->issuer) != 0)) {
        *detail = "issuer (iss) does not match";
        return CHAT_EINVAL;
    }
    if (a->audience != NULL) {
        size_t i = 0;
        while (i < c->naud && strcmp(c->aud[i], a->audience) != 0)
            i++;
        if (i == c->naud) {
            *detail = "audience (aud) does not match";
            return CHAT_EINVAL;
        }
    }
    if (check_rooms(c, detail) != 0)
        return CHAT_EINVAL;
    if (c->has_exp && now_s > add_sat(c->exp, a->leeway_s)) {
        *detail = "expired (exp)";
        return CLAIMS_EXPIRED;
    }
    return 0;
}

/* Splits token into three segments at its only two dots. */
static int split_token(chat_str_t token, chat_str_t seg[3])
{
    const char *p = token.p, *end = token.p + token.len;
    int i = 0;

    seg[0].p = p;
    for (; p < end; p++) {
        if (*p != '.')
            continue;
        if (i == 2)
            return CHAT_EMALFORMED;
        seg[i].len = (size_t)(p - seg[i].p);
        seg[++i].p = p + 1;
    }
    if (i != 2)
        return CHAT_EMALFORMED;
    seg[2].len = (size_t)(end - seg[2].p);
    return 0;
}

/* Sets *reason, logs the static detail (never token bytes) and returns the CHAT_E* code. */
static int refuse(int rc, const char *detail, const char **reason)
{
    *reason = rc == CLAIMS_EXPIRED ? GW_AUTH_EXPIRED : GW_AUTH_INVALID;
    CHAT_LOG(CHAT_LOG_DEBUG, "token refused", CHAT_KV_C("reason", detail ? detail : "?"));
    return rc == CLAIMS_EXPIRED ? CHAT_EINVAL : rc;
}

int gw_auth_verify(const gw_auth_t *a, chat_str_t token, int64_t now_s, gw_identity_t *id,
                   const char **reason)
{
    /* decoded header, payload and signature together are shorter than the token */
    unsigned char bytes[GW_AUTH_MAX_TOKEN];
    unsigned char *hdr_b = bytes, *pay_b, *sig_b;
    size_t hdr_n, pay_n, sig_n;
    chat_str_t seg[3];
    chat_jwt_header_t hdr;
    chat_jwt_claims_t claims;
    const alg_spec_t *alg;
    const char *detail = NULL;
    int rc, verified = 0;

    memset(id, 0, sizeof(*id));
    *reason = NULL;
    if (token.len > GW_AUTH_MAX_TOKEN)
        return refuse(CHAT_ETOOLARGE, "longer than 8192 bytes", reason);
    if (token.p == NULL || split_token(token, seg) != 0)
        return refuse(CHAT_EMALFORMED, "not three dot-separated segments", reason);
    if (b64url_decode(seg[0], hdr_b, &hdr_n) != 0)
        return refuse(CHAT_EMALFORMED, "header is not base64url", reason);
    pay_b = hdr_b + hdr_n;
    if (b64url_decode(seg[1], pay_b, &pay_n) != 0)
        return refuse(CHAT_EMALFORMED, "payload is not base64url", reason);
    sig_b = pay_b + pay_n;
    if (b64url_decode(seg[2], sig_b, &sig_n) != 0)
        return refuse(CHAT_EMALFORMED, "signature is not base64url", reason);
    if (chat_env_parse_jwt_header((const char *)hdr_b, hdr_n, &hdr) != 0)
        return refuse(CHAT_EMALFORMED, hdr.error, reason);
    if (hdr.has_crit)
        return refuse(CHAT_EMALFORMED, "header has 'crit' (no extension is supported)", reason);
    if ((alg = find_alg(hdr.alg)) == NULL)
        return refuse(CHAT_EINVAL, "unsupported alg", reason);

    for (size_t i = 0; a != NULL && i < a->nkeys && !verified; i++) {
        const auth_key_t *k = &a->keys[i];
        if (k->kind != alg->kind)
            continue;
        if (hdr.has_kid && (k->name == NULL || strcmp(k->name, hdr.kid) != 0))
            continue;
        /* the signing input is the first two segments as sent */
        verified =
            verify_with(k, alg, chat_str(token.p, seg[0].len + 1 + seg[1].len), sig_b, sig_n);
        detail = "signature does not verify";
    }
    if (!verified)
        return refuse(CHAT_EINVAL, detail ? detail : "no key for this alg and kid", reason);

    if ((rc = chat_env_parse_jwt_claims((const char *)pay_b, pay_n, &claims)) != 0)
        return refuse(rc == CHAT_EBADJSON ? CHAT_EMALFORMED : CHAT_EINVAL, claims.error, reason);
    if ((rc = check_claims(a, &claims, now_s, &detail)) != 0) {
        chat_env_jwt_claims_dispose(&claims);
        return refuse(rc, detail, reason);
    }
    id->sub = claims.sub;
    id->name = claims.name;
    id->rooms = claims.rooms;
    id->nrooms = claims.nrooms;
    id->exp = claims.has_exp ? claims.exp : 0;
    id->has_exp = claims.has_exp;
    claims.sub = claims.name = NULL; /* moved into *id */
    claims.rooms = NULL;
    claims.nrooms = 0;
    chat_env_jwt_claims_dispose(&claims);
    return 0;
}

void gw_identity_dispose(gw_identity_t *id)
{
    if (id == NULL)
        return;
    free(id->sub);
    free(id->name);
    for (size_t i = 0; i < id->nrooms; i++)
        free(id->rooms[i]);
    free(id->rooms);
    memset(id, 0, sizeof(*id));
}

int gw_identity_may_join_private(const gw_identity_t *id, chat_str_t room)
{
    const size_t plen = sizeof(GW_AUTH_PRIVATE_PREFIX) - 1;

    if (id == NULL || room.p == NULL)
        return 0;
    for (size_t i = 0; i < id->nrooms; i++) {
        chat_str_t e = chat_cstr(id->rooms[i]);
        const char *star = e.len > 0 ? memchr(e.p, '*', e.len) : NULL;
        if (star == NULL) {
            if (chat_str_eq(room, e))
                return 1;
            continue;
        }
        /* a pattern: only "private:<prefix>*" (gw_auth_verify() refuses any other '*') */
        if (star != e.p + e.len - 1 || e.len - 1 < plen ||
            memcmp(e.p, GW_AUTH_PRIVATE_PREFIX, plen) != 0)
            continue;
        if (room.len >= e.len - 1 && memcmp(room.p, e.p, e.len - 1) == 0)
            return 1;
    }
    return 0;
}
