/* broker/broker.c - picks the implementation from the URL and forwards calls to its table; checks
 * the arguments both implementations share (history on, key and receipt lengths, the read limit)
 * and keeps the counters of broker_stats_t that do not depend on the implementation. */
#include "broker_impl.h"

#include <inttypes.h>
#include <stdio.h>
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
    if (cfg->history_size > BROKER_HISTORY_MAX) {
        *why = "history_size above BROKER_HISTORY_MAX";
        return CHAT_EINVAL;
    }
    return ops->open(loop, cfg, h, out, why);
}

void broker__init(broker_t *b, const broker_ops_t *ops, const broker_config_t *cfg,
                  const broker_handlers_t *h)
{
    const char *salt = cfg->node_id != NULL ? cfg->node_id : "";
    b->ops = ops;
    b->h = *h;
    b->history_size = cfg->history_size;
    b->history_ttl_ms = cfg->history_ttl_ms;
    b->dedupe_window_ms = cfg->dedupe_window_ms;
    chat_rng_seed(&b->rng, salt, strlen(salt));
}

void broker__new_epoch(broker_t *b, char *out)
{
    static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    for (size_t i = 0; i < BROKER_EPOCH_NEW_LEN; i++)
        out[i] = alphabet[chat_rng_below(&b->rng, sizeof(alphabet) - 1)];
}

void broker__message(chat_buf_t *out, const broker_append_t *m, uint64_t seq, chat_str_t epoch)
{
    char digits[24];
    int n = snprintf(digits, sizeof(digits), "%" PRIu64, seq);
    chat_buf_reserve(out,
                     m->parts[0].len + (size_t)n + m->parts[1].len + epoch.len + m->parts[2].len);
    chat_buf_append_str(out, m->parts[0]);
    chat_buf_append(out, digits, (size_t)n);
    chat_buf_append_str(out, m->parts[1]);
    chat_buf_append_str(out, epoch);
    chat_buf_append_str(out, m->parts[2]);
}

void broker__appended(broker_t *b, uint64_t tag, const broker_append_result_t *r)
{
    if (r->status != 0)
        b->stats.publish_errors++;
    else if (r->duplicate)
        b->stats.duplicates++;
    else {
        b->stats.appended++;
        b->stats.published++; /* an append is a publication too (chat_broker_published_total) */
    }
    if (tag != 0 && b->h.on_appended != NULL)
        b->h.on_appended(b->h.ctx, tag, r);
}

void broker__history_answered(broker_t *b, uint64_t tag, const broker_history_result_t *r)
{
    if (r->status == 0)
        b->stats.history_reads++;
    if (b->h.on_history != NULL)
        b->h.on_history(b->h.ctx, tag, r);
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

int broker_append(broker_t *b, chat_str_t topic, const broker_append_t *m, uint64_t tag)
{
    if (b->history_size == 0 || m->dedupe_key.len > BROKER_DEDUPE_KEY_MAX ||
        m->receipt.len > BROKER_RECEIPT_MAX)
        return CHAT_EINVAL;
    int rc = b->ops->append(b, topic, m, tag);
    if (rc != 0)
        b->stats.publish_errors++;
    return rc;
}

int broker_history(broker_t *b, chat_str_t topic, const broker_history_query_t *q, uint64_t tag)
{
    if (b->history_size == 0 || q->limit > b->history_size)
        return CHAT_EINVAL;
    return b->ops->history(b, topic, q, tag);
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
