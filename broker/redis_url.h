/* broker/redis_url.h - parses the Redis address forms the gateway accepts (pure):
 *   redis://[[user]:password@]host[:port][/db]     (host: name, IPv4 or [IPv6]; port 6379)
 *   unix:///path/to/redis.sock[?db=N]
 *   host:port                                      (same as redis://host:port)
 * rediss:// (TLS) is refused with a message saying to use a TLS proxy. */
#ifndef CHAT_BROKER_REDIS_URL_H
#define CHAT_BROKER_REDIS_URL_H

#define REDIS_URL_HOST_MAX 256
#define REDIS_URL_PATH_MAX 108 /* sun_path */
#define REDIS_URL_CRED_MAX 256

typedef struct redis_url {
    int is_unix;
    char host[REDIS_URL_HOST_MAX]; /* without brackets */
    int port;
    char path[REDIS_URL_PATH_MAX]; /* unix socket */
    char user[REDIS_URL_CRED_MAX]; /* empty: none (AUTH password only) */
    char password[REDIS_URL_CRED_MAX];
    int has_password;
    int db;        /* 0 when not given */
    int db_given;  /* a /db or ?db= was present: SELECT it */
} redis_url_t;

/* Returns 0 and fills *out, or CHAT_EINVAL with a static human-readable reason in *why. */
int redis_url_parse(const char *url, redis_url_t *out, const char **why);

#endif
