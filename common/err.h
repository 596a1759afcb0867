/* common/err.h - error codes. Functions return 0 on success and a negative code on failure.
 * libuv's UV_E* codes pass through unchanged; our own codes are CHAT_E* (all <= -1000, so they
 * never collide with UV_E*). chat_strerror() names both. */
#ifndef CHAT_COMMON_ERR_H
#define CHAT_COMMON_ERR_H

enum chat_err {
    CHAT_ENOMEM = -1000,        /* allocation refused (peer-sized data) */
    CHAT_EINVAL = -1001,        /* invalid argument or value */
    CHAT_EBADJSON = -1002,      /* not a JSON object */
    CHAT_EBADREQ = -1003,       /* missing or wrongly typed field, value out of range */
    CHAT_EUNKNOWN_TYPE = -1004, /* envelope `type` we do not know */
    CHAT_ENOTJOINED = -1005,    /* room operation for a room the connection is not in */
    CHAT_ELIMIT = -1006,        /* a configured limit was reached */
    CHAT_EBROKER = -1007,       /* the broker cannot take the message now */
    CHAT_ETOOLARGE = -1008,     /* input larger than its limit */
    CHAT_EMALFORMED = -1009,    /* input that does not follow its grammar */
    CHAT_ECLOSED = -1010,       /* the object is closing or closed */
    CHAT_EFORBIDDEN = -1011,    /* the identity may not do this */
};

/* Returns a static string naming `err` (CHAT_E* or UV_E*). */
const char *chat_strerror(int err);

#endif
