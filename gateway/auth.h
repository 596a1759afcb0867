/* gateway/auth.h - JWT verification (pure: no sockets, no loop, no clock of its own). Owns the
 * configured keys (HMAC secrets and RSA / EC public keys, loaded once from files) and checks
 * compact JWS tokens against them: strict base64url, alg bound to the key type (HS* only with
 * secrets, RS* only with RSA keys, ES256/ES384 only with P-256/P-384 keys), kid selection, then
 * the registered claims. The JSON halves are parsed by common/envelope.c. Never puts a token, a
 * part of one, or a secret into a message or a log line. */
#ifndef CHAT_GATEWAY_AUTH_H
#define CHAT_GATEWAY_AUTH_H

#include <stddef.h>
#include <stdint.h>

#include "str.h"

/* Tokens longer than this are refused before any decoding. */
#define GW_AUTH_MAX_TOKEN 8192
/* The clock skew tolerated for exp, nbf and iat unless configured otherwise. */
#define GW_AUTH_DEFAULT_LEEWAY_S 30
/* Key files larger than this are refused (a secret or a PEM public key is far smaller). */
#define GW_AUTH_MAX_KEY_FILE 65536
/* The smallest RSA modulus accepted, in bits (RFC 7518 section 3.3). */
#define GW_AUTH_MIN_RSA_BITS 2048

/* The rooms the `rooms` claim governs start with this; so must each of its patterns. */
#define GW_AUTH_PRIVATE_PREFIX "private:"

/* The reasons gw_auth_verify() gives (static strings; compare with strcmp). */
#define GW_AUTH_INVALID "invalid_token"
#define GW_AUTH_EXPIRED "expired"

typedef struct gw_auth gw_auth_t;

/* Borrowed by gw_auth_create() (which copies what it keeps). Empty strings count as NULL. */
typedef struct gw_auth_config {
    const char *secret;           /* inline HS secret, used as given; has no name (no kid
                                   * selects it) */
    const char *secret_files;     /* comma-separated files; each one's content, trimmed of
                                   * leading and trailing whitespace, is an HS secret */
    const char *public_key_files; /* comma-separated PEM "PUBLIC KEY" (SubjectPublicKeyInfo)
                                   * files: RSA of at least GW_AUTH_MIN_RSA_BITS, or EC on P-256
                                   * or P-384 */
    int allow_no_exp;             /* 1: tokens without `exp` are accepted (they never expire) */
    uint64_t leeway_s;            /* tolerated clock skew for exp / nbf / iat */
    const char *issuer;           /* NULL: `iss` not checked; else it must be present and equal */
    const char *audience;         /* NULL: `aud` not checked; else it must contain this value */
} gw_auth_config_t;

/* A key file's name is its file name without directory and last extension
 * ("/etc/chat/k2024.key" -> "k2024"); a token's `kid` selects the key of that name. Names must be
 * unique across both lists, non-empty and at most 255 bytes. In the lists, entries are trimmed of
 * spaces and empty entries are skipped (so a trailing comma is harmless); paths cannot hold
 * commas. */

/* Zeroes *cfg and sets leeway_s to GW_AUTH_DEFAULT_LEEWAY_S. */
void gw_auth_config_init(gw_auth_config_t *cfg);

/* Loads every key of cfg into a new *out. Returns 0, or on failure a negative code with a
 * one-line message in err (errcap bytes, may be 0; it names the file, never a secret's bytes)
 * and *out == NULL:
 *   UV_E* (e.g. UV_ENOENT, UV_EACCES)  a key file cannot be read;
 *   CHAT_ETOOLARGE                     a key file over GW_AUTH_MAX_KEY_FILE bytes;
 *   CHAT_EINVAL                        an empty secret (inline one excepted: empty means none)
 *                                      or secret file, a file that is not a PEM public key, an
 *                                      unsupported key type or curve, an RSA key that is too
 *                                      small, a file name giving an empty or too long key name,
 *                                      two keys with the same name.
 * No keys at all is not an error: gw_auth_enabled() then answers 0. */
int gw_auth_create(gw_auth_t **out, const gw_auth_config_t *cfg, char *err, size_t errcap);
/* Frees a and its keys (secrets are wiped first). NULL is a no-op. */
void gw_auth_free(gw_auth_t *a);
/* 1 when at least one key is configured, else 0 (also for NULL). */
int gw_auth_enabled(const gw_auth_t *a);

/* The identity a verified token carries. Every pointer is owned by the struct. */
typedef struct gw_identity {
    char *sub;     /* the user id: non-empty, at most 256 bytes, NUL-terminated */
    char *name;    /* display name (at most 256 bytes) or NULL when the token has none */
    char **rooms;  /* `rooms` claim: room names, or patterns "private:<prefix>*" */
    size_t nrooms; /* 0 when the claim is absent or empty */
    int64_t exp;   /* expiry, seconds since the epoch; 0 when has_exp == 0 */
    int has_exp;
} gw_identity_t;

/* Verifies a compact JWS (`b64url(header).b64url(payload).b64url(signature)`) at time now_s
 * (seconds since the epoch; the caller's clock). token is borrowed and not NUL-terminated.
 * On success returns 0, fills *id (the caller disposes it) and sets *reason to NULL.
 * On failure *id is zeroed (disposing it is allowed), *reason is GW_AUTH_EXPIRED for a token
 * whose exp + leeway has passed (its signature and every other check having passed) or
 * GW_AUTH_INVALID for anything else, and the return value is:
 *   CHAT_ETOOLARGE   longer than GW_AUTH_MAX_TOKEN;
 *   CHAT_EMALFORMED  not three non-empty base64url segments (no padding, no other characters,
 *                    no stray bits), a header that is not a JSON object or whose alg/kid are
 *                    missing or of the wrong type, a header with `crit`, a (verified) payload
 *                    that is not a JSON object;
 *   CHAT_EINVAL      an unknown alg (including "none"), no configured key of the alg's kind
 *                    (with a kid: no key of that name and kind), a signature that does not
 *                    verify, a claim of the wrong type or size, sub missing or empty, exp
 *                    missing (unless allow_no_exp), nbf or iat in the future beyond the leeway,
 *                    iss or aud not matching, a `rooms` entry breaking the pattern rule below,
 *                    or expired.
 * The `rooms` claim's pattern rule: an entry may hold '*' only as its last byte, and an entry
 * ending in '*' (a pattern) must start with "private:" ("private:team-*"; "private:*" is a
 * pattern too and grants every private room). So "*", "p*", "lobby*", "private:a*b" and
 * "private:a**" make the token invalid. Entries without '*' are exact names; those outside
 * "private:" are accepted and grant nothing (the claim governs only private rooms).
 * A kid selects only the key of that name (a kid that names no key of the alg's kind is
 * refused; the inline secret has no name, so a kid never selects it); without a kid every key
 * of the alg's kind is tried, once each. The signature is checked before the payload is
 * parsed. Does not log the token or any part of it (a DEBUG line gives a static detail). */
int gw_auth_verify(const gw_auth_t *a, chat_str_t token, int64_t now_s, gw_identity_t *id,
                   const char **reason);

/* Frees what *id owns and zeroes it. NULL is a no-op. */
void gw_identity_dispose(gw_identity_t *id);

/* 1 when `room` (a full name such as "private:eng-team") equals an entry of id->rooms without
 * '*', or starts with the part before the trailing '*' of a pattern ("private:eng-*" matches
 * "private:eng-" and "private:eng-x"; "private:*" matches every private room), else 0 (also for
 * id NULL). An entry that breaks the pattern rule of gw_auth_verify() (which refuses such
 * tokens) matches nothing. Only private rooms need the claim: checking that `room` starts with
 * "private:" is the caller's job. */
int gw_identity_may_join_private(const gw_identity_t *id, chat_str_t room);

#endif
