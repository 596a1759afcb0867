/* broker/redis_url.c - Redis URL forms (see redis_url.h). Percent-escapes in user and password
 * are decoded (%40 for '@'); nothing else is. */
#include "redis_url.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"

static int fail(const char **why, const char *msg)
{
    *why = msg;
    return CHAT_EINVAL;
}

static int parse_int(const char *s, size_t n, int max, int *out)
{
    long v = 0;
    if (n == 0 || n > 9)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (!isdigit((unsigned char)s[i]))
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    if (v > max)
        return -1;
    *out = (int)v;
    return 0;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = (char)tolower((unsigned char)c);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* Copies n bytes of s into out (cap bytes), decoding %XX. */
static int copy_decoded(char *out, size_t cap, const char *s, size_t n)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == '%') {
            if (i + 2 >= n)
                return -1;
            int h = hexval(s[i + 1]), l = hexval(s[i + 2]);
            if (h < 0 || l < 0)
                return -1;
            c = (char)(h * 16 + l);
            i += 2;
        }
        if (o + 1 >= cap || c == '\0')
            return -1;
        out[o++] = c;
    }
    out[o] = '\0';
    return 0;
}

static int parse_unix(const char *rest, redis_url_t *out, const char **why)
{
    const char *q = strchr(rest, '?');
    size_t plen = q ? (size_t)(q - rest) : strlen(rest);
    if (plen == 0 || rest[0] != '/')
        return fail(why, "unix:// needs an absolute socket path (unix:///run/redis.sock)");
    if (plen >= sizeof(out->path))
        return fail(why, "the unix socket path is too long");
    memcpy(out->path, rest, plen);
    out->path[plen] = '\0';
    if (q != NULL) {
        if (strncmp(q + 1, "db=", 3) != 0 ||
            parse_int(q + 4, strlen(q + 4), 1000000, &out->db) != 0)
            return fail(why, "the only unix:// parameter is ?db=N with a number");
        out->db_given = 1;
    }
    out->is_unix = 1;
    return 0;
}

static int parse_userinfo(const char *s, size_t n, redis_url_t *out, const char **why)
{
    const char *colon = memchr(s, ':', n);
    if (colon == NULL) { /* "redis://secret@host": a password alone, as redis-cli reads it */
        if (copy_decoded(out->password, sizeof(out->password), s, n) != 0)
            return fail(why, "invalid password in the Redis URL");
        out->has_password = 1;
        return 0;
    }
    size_t ul = (size_t)(colon - s);
    if (copy_decoded(out->user, sizeof(out->user), s, ul) != 0 ||
        copy_decoded(out->password, sizeof(out->password), colon + 1, n - ul - 1) != 0)
        return fail(why, "invalid user or password in the Redis URL");
    out->has_password = 1;
    return 0;
}

static int parse_hostport(const char *s, size_t n, redis_url_t *out, const char **why)
{
    const char *port = NULL;
    size_t hl;
    if (n > 0 && s[0] == '[') {
        const char *close = memchr(s, ']', n);
        if (close == NULL)
            return fail(why, "unclosed [ in the Redis host");
        hl = (size_t)(close - s - 1);
        if (hl == 0 || hl >= sizeof(out->host))
            return fail(why, "invalid IPv6 host in the Redis URL");
        memcpy(out->host, s + 1, hl);
        out->host[hl] = '\0';
        if ((size_t)(close - s) + 1 < n) {
            if (close[1] != ':')
                return fail(why, "unexpected text after ] in the Redis host");
            port = close + 2;
        }
    } else {
        const char *colon = memchr(s, ':', n);
        hl = colon ? (size_t)(colon - s) : n;
        if (hl == 0 || hl >= sizeof(out->host))
            return fail(why, "the Redis URL needs a host");
        memcpy(out->host, s, hl);
        out->host[hl] = '\0';
        for (size_t i = 0; i < hl; i++)
            if (!isalnum((unsigned char)s[i]) && s[i] != '.' && s[i] != '-' && s[i] != '_')
                return fail(why, "invalid character in the Redis host");
        if (colon)
            port = colon + 1;
    }
    out->port = 6379;
    if (port != NULL && (parse_int(port, (size_t)(s + n - port), 65535, &out->port) != 0 ||
                         out->port == 0))
        return fail(why, "the Redis port must be a number from 1 to 65535");
    return 0;
}

int redis_url_parse(const char *url, redis_url_t *out, const char **why)
{
    memset(out, 0, sizeof(*out));
    *why = NULL;
    if (url == NULL || url[0] == '\0')
        return fail(why, "empty Redis URL");
    if (strncmp(url, "rediss://", 9) == 0)
        return fail(why, "rediss:// (TLS) is not supported: run a TLS proxy such as stunnel or "
                         "haproxy next to the gateway and point redis:// at it");
    if (strncmp(url, "unix://", 7) == 0)
        return parse_unix(url + 7, out, why);
    const char *rest = url;
    if (strncmp(url, "redis://", 8) == 0)
        rest = url + 8;
    else if (strstr(url, "://") != NULL)
        return fail(why, "unsupported URL scheme (use redis://, unix:// or host:port)");
    else if (strchr(url, ':') == NULL || strchr(url, '/') != NULL || strchr(url, '@') != NULL)
        return fail(why, "expected redis://[[user]:password@]host[:port][/db], "
                         "unix:///path[?db=N] or host:port");
    const char *slash = strchr(rest, '/');
    size_t auth_len = slash ? (size_t)(slash - rest) : strlen(rest);
    const char *at = NULL;
    for (size_t i = 0; i < auth_len; i++)
        if (rest[i] == '@')
            at = rest + i; /* the last '@' ends the user info */
    if (at != NULL) {
        if (parse_userinfo(rest, (size_t)(at - rest), out, why) != 0)
            return CHAT_EINVAL;
        auth_len -= (size_t)(at - rest) + 1;
        rest = at + 1;
    }
    if (parse_hostport(rest, auth_len, out, why) != 0)
        return CHAT_EINVAL;
    if (slash != NULL && slash[1] != '\0') {
        if (parse_int(slash + 1, strlen(slash + 1), 1000000, &out->db) != 0)
            return fail(why, "the Redis database (/db) must be a number");
        out->db_given = 1;
    }
    return 0;
}
