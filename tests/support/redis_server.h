/* tests/support/redis_server.h - a real redis-server for tests: started on a free loopback port
 * (no persistence), stopped, restarted on the same port, paused (SIGSTOP) and resumed by PID, and
 * asked through redis-cli (one command, or the ids of the connections of one CLIENT SETNAME).
 * A missing redis-server is a test failure, not a skip. */
#ifndef CHAT_TESTS_REDIS_SERVER_H
#define CHAT_TESTS_REDIS_SERVER_H

#include <sys/types.h>

typedef struct test_redis {
    pid_t pid;
    int port;
    char url[64]; /* redis://127.0.0.1:PORT */
} test_redis_t;

/* Starts redis-server (on r->port when it is not 0, else a free port) and waits until it answers
 * (bounded: 5 s). Returns 0 or -1. */
int test_redis_start(test_redis_t *r);
/* SIGTERM, then waits (bounded 5 s, then SIGKILL). */
void test_redis_stop(test_redis_t *r);
void test_redis_pause(test_redis_t *r);
void test_redis_resume(test_redis_t *r);
/* Runs one command through redis-cli and returns its first output line in out. Returns 0/-1. */
int test_redis_cli(const test_redis_t *r, const char *args, char *out, size_t cap);
/* The ids of the connections named name in CLIENT LIST (up to cap of them in ids). Returns how
 * many there are, or -1 when redis-cli failed. */
int test_redis_client_ids(const test_redis_t *r, const char *name, long *ids, int cap);

#endif
