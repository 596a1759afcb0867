/* broker/broker.c - picks the implementation from the URL and forwards calls to its table. */
#include "broker_impl.h"

#include <string.h>

#include "err.h"

int broker_open(uv_loop_t *loop, const char *url, const broker_handlers_t *h, broker_t **out)
{
    if (url == NULL || url[0] == '\0' || strcmp(url, "memory://") == 0)
        return broker_memory_ops.open(loop, url, h, out);
    return CHAT_EINVAL;
}

int broker_subscribe(broker_t *b, chat_str_t topic)
{
    return b->ops->subscribe(b, topic);
}

int broker_unsubscribe(broker_t *b, chat_str_t topic)
{
    return b->ops->unsubscribe(b, topic);
}

int broker_publish(broker_t *b, chat_str_t topic, chat_str_t data, uint64_t tag)
{
    return b->ops->publish(b, topic, data, tag);
}

int broker_is_up(const broker_t *b)
{
    return b->ops->is_up(b);
}

const char *broker_kind(const broker_t *b)
{
    return b->ops->kind;
}

void broker_close(broker_t *b)
{
    b->ops->close(b);
}
