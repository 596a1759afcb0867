/* common/rng.h - a small non-cryptographic PRNG (xorshift64*) for jitter, sampling and hash
 * seeds. Each owner keeps its own state (no process-wide generator, no rand()): a Redis link,
 * a hash map, a server. chat_rng_seed() mixes the kernel's randomness (getrandom) with a salt
 * (a node id, a link name) and the time, so two processes never run the same sequence: after a
 * Redis outage, a fleet of nodes does not reconnect in the same millisecond. Not for secrets. */
#ifndef CHAT_COMMON_RNG_H
#define CHAT_COMMON_RNG_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

typedef struct chat_rng {
    uint64_t s; /* never 0 */
} chat_rng_t;

static inline uint64_t chat_rng_mix(uint64_t z) /* splitmix64's finaliser */
{
    z += 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* Seeds r from getrandom(2), the salt (may be NULL), the pid and the clock. */
static inline void chat_rng_seed(chat_rng_t *r, const void *salt, size_t n)
{
    uint64_t k = 0, h = 0xcbf29ce484222325ULL; /* FNV-1a of the salt */
    struct timespec ts;
    for (size_t i = 0; i < n; i++)
        h = (h ^ ((const unsigned char *)salt)[i]) * 0x100000001b3ULL;
    if (getrandom(&k, sizeof(k), GRND_NONBLOCK) != (ssize_t)sizeof(k))
        k = 0; /* no entropy yet (early boot): the rest still differs per process */
    clock_gettime(CLOCK_MONOTONIC, &ts);
    r->s = chat_rng_mix(k ^ chat_rng_mix(h ^ chat_rng_mix((uint64_t)getpid() << 32 ^
                                                           (uint64_t)ts.tv_nsec ^
                                                           (uint64_t)ts.tv_sec << 20)));
    if (r->s == 0)
        r->s = 0x9e3779b97f4a7c15ULL;
}

static inline uint64_t chat_rng_next(chat_rng_t *r)
{
    uint64_t x = r->s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    r->s = x;
    return x * 0x2545f4914f6cdd1dULL;
}

/* Uniform in [0, n) (n > 0; the modulo bias is below 2^-32 for n < 2^32). */
static inline uint64_t chat_rng_below(chat_rng_t *r, uint64_t n)
{
    return chat_rng_next(r) % n;
}

/* Uniform in [0, 1). */
static inline double chat_rng_unit(chat_rng_t *r)
{
    return (double)(chat_rng_next(r) >> 11) / 9007199254740992.0;
}

#endif
