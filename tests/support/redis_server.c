/* tests/support/redis_server.c - see redis_server.h. */
#include "redis_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int free_port(void)
{
    struct sockaddr_in a;
    socklen_t len = sizeof(a);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) != 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    close(fd);
    return ntohs(a.sin_port);
}

static int answers(int port)
{
    struct sockaddr_in a;
    char buf[16];
    int fd = socket(AF_INET, SOCK_STREAM, 0), ok = 0;
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_port = htons((unsigned short)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
        write(fd, "PING\r\n", 6) == 6 && read(fd, buf, sizeof(buf)) > 0)
        ok = strncmp(buf, "+PONG", 5) == 0;
    if (fd >= 0)
        close(fd);
    return ok;
}

int test_redis_start(test_redis_t *r)
{
    char port[16];
    if (r->port == 0)
        r->port = free_port();
    if (r->port <= 0)
        return -1;
    snprintf(port, sizeof(port), "%d", r->port);
    snprintf(r->url, sizeof(r->url), "redis://127.0.0.1:%d", r->port);
    r->pid = fork();
    if (r->pid < 0)
        return -1;
    if (r->pid == 0) {
        freopen("/dev/null", "w", stdout);
        execlp("redis-server", "redis-server", "--port", port, "--bind", "127.0.0.1", "--save",
               "", "--appendonly", "no", "--daemonize", "no", (char *)NULL);
        perror("redis-server");
        _exit(127);
    }
    for (int i = 0; i < 500; i++) { /* 5 s */
        if (answers(r->port))
            return 0;
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    test_redis_stop(r);
    return -1;
}

void test_redis_stop(test_redis_t *r)
{
    if (r->pid <= 0)
        return;
    kill(r->pid, SIGCONT);
    kill(r->pid, SIGTERM);
    for (int i = 0; i < 500; i++) {
        if (waitpid(r->pid, NULL, WNOHANG) == r->pid) {
            r->pid = 0;
            return;
        }
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    kill(r->pid, SIGKILL);
    waitpid(r->pid, NULL, 0);
    r->pid = 0;
}

void test_redis_pause(test_redis_t *r)
{
    kill(r->pid, SIGSTOP);
}

void test_redis_resume(test_redis_t *r)
{
    kill(r->pid, SIGCONT);
}

int test_redis_cli(const test_redis_t *r, const char *args, char *out, size_t cap)
{
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "redis-cli -p %d %s 2>&1", r->port, args);
    FILE *p = popen(cmd, "r");
    if (p == NULL)
        return -1;
    out[0] = '\0';
    if (fgets(out, (int)cap, p) != NULL)
        out[strcspn(out, "\n")] = '\0';
    while (fgetc(p) != EOF) {
    }
    return pclose(p) == 0 ? 0 : -1;
}

int test_redis_client_ids(const test_redis_t *r, const char *name, long *ids, int cap)
{
    char cmd[128], line[1024], want[256];
    int n = 0;
    snprintf(cmd, sizeof(cmd), "redis-cli -p %d CLIENT LIST 2>&1", r->port);
    snprintf(want, sizeof(want), " name=%s ", name);
    FILE *p = popen(cmd, "r");
    if (p == NULL)
        return -1;
    /* One connection per line: "id=5 addr=127.0.0.1:41234 ... name=chat-gateway:a:sub age=..." */
    for (int i = 0; i < 10000 && fgets(line, sizeof(line), p) != NULL; i++) {
        if (strncmp(line, "id=", 3) != 0 || strstr(line, want) == NULL)
            continue;
        if (n < cap)
            ids[n] = strtol(line + 3, NULL, 10);
        n++;
    }
    while (fgetc(p) != EOF) {
    }
    return pclose(p) == 0 ? n : -1;
}
