/* broker/broker.c - picks the implementation from the URL and forwards calls to its table. */
#include "broker_impl.h"

#include <string.h>

#include "err.h"
#include "redis_url.h"

static int is_memory(const char *url)
{
    return url == NULL || url[0] == '\0' || strcmp(url, "memory://") == 0;
}

int broker_check_url(const char *url, const char **why)
{
    redis_url_t u;
    *why = NULL;
    return is_memory(url) ? 0 : redis_url_parse(url, &u, why);
}

int broker_open(uv_loop_t *loop, const broker_config_t *cfg, const broker_handlers_t *h,
                broker_t **out, const char **why)
{
    const broker_ops_t *ops = is_memory(cfg->url) ? &broker_memory_ops : &broker_redis_ops;
    *why = NULL;
    return ops->open(loop, cfg, h, out, why);
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
    int rc = b->ops->publish(b, topic, data, tag);
    if (rc == 0)
        b->stats.published++;
    else
        b->stats.publish_errors++;
    return rc;
}

void broker_get_stats(const broker_t *b, broker_stats_t *out)
{
    *out = b->stats;
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
