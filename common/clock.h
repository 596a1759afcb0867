/* common/clock.h - wall-clock time for envelopes (`ts`, ms since the epoch). Monotonic time for
 * timers comes from uv_now(). */
#ifndef CHAT_COMMON_CLOCK_H
#define CHAT_COMMON_CLOCK_H

#include <stdint.h>
#include <time.h>

static inline int64_t chat_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

#endif
