/* common/err.c - names for CHAT_E* codes; UV_E* codes are named by libuv. */
#include "err.h"

#include <uv.h>

const char *chat_strerror(int err)
{
    switch (err) {
    case 0:
        return "success";
    case CHAT_ENOMEM:
        return "out of memory";
    case CHAT_EINVAL:
        return "invalid argument";
    case CHAT_EBADJSON:
        return "not a JSON object";
    case CHAT_EBADREQ:
        return "bad request";
    case CHAT_EUNKNOWN_TYPE:
        return "unknown message type";
    case CHAT_ENOTJOINED:
        return "not joined";
    case CHAT_ELIMIT:
        return "limit reached";
    case CHAT_EBROKER:
        return "broker unavailable";
    case CHAT_ETOOLARGE:
        return "too large";
    case CHAT_EMALFORMED:
        return "malformed input";
    case CHAT_ECLOSED:
        return "closed";
    case CHAT_EFORBIDDEN:
        return "forbidden";
    default:
        return err < 0 && err > -1000 ? uv_strerror(err) : "unknown error";
    }
}
