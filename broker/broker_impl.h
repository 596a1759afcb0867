/* broker/broker_impl.h - private to broker/: the operations table each implementation exports and
 * the common header of every broker object. */
#ifndef CHAT_BROKER_BROKER_IMPL_H
#define CHAT_BROKER_BROKER_IMPL_H

#include "broker.h"

typedef struct broker_ops {
    const char *kind;
    int (*open)(uv_loop_t *loop, const broker_config_t *cfg, const broker_handlers_t *h,
                broker_t **out, const char **why);
    int (*subscribe)(broker_t *b, chat_str_t topic);
    int (*unsubscribe)(broker_t *b, chat_str_t topic);
    int (*publish)(broker_t *b, chat_str_t topic, chat_str_t data, uint64_t tag);
    int (*is_up)(const broker_t *b);
    void (*close)(broker_t *b);
} broker_ops_t;

/* Every implementation's struct starts with this. */
struct broker {
    const broker_ops_t *ops;
    broker_handlers_t h;
    broker_stats_t stats; /* implementations count reconnects, received and late failures */
};

extern const broker_ops_t broker_memory_ops;
extern const broker_ops_t broker_redis_ops;

#endif
