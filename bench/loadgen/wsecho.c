/* Closed-loop WebSocket echo load generator in C, for the workloads where the load
 * generator shares the cores with the servers (ws_echo_redis: several workers, unpinned).
 * The Node one (loadgen.js) spends more CPU per round trip than the servers it loads; this
 * one spends a few microseconds, so that the cores go to the servers being measured.
 *
 *   wsecho HOST PORT PATH CONNECTIONS WARMUP_S DURATION_S PAYLOAD_BYTES
 *
 * Each connection sends a masked text frame of PAYLOAD_BYTES and sends the next one when
 * the echo comes back. Prints one JSON object shaped like loadgen.js's echo result:
 * opened, failed, first_error, seconds, count, errors, wrong_reply and a latency histogram
 * keyed by microseconds rounded to 3 significant digits.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define INBUF 65536
#define MAX_FRAME 14 + 65536
/* Histogram buckets: 1-999 us exactly, then 900 three-digit mantissas per decade. */
#define DECADES 7
#define BUCKETS (1000 + DECADES * 900)

struct conn {
    int fd;
    int open;
    uint64_t sent_at;
    size_t in_len;
    unsigned char in[INBUF];
    size_t out_len, out_off;
    unsigned char out[MAX_FRAME];
};

static uint64_t histogram[BUCKETS];
static uint64_t count, errors, wrong;
static char first_error[256];
static char wrong_reply[256];
static uint32_t rng = 2463534242u;

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint32_t next_random(void) {
    rng ^= rng << 13;
    rng ^= rng >> 17;
    rng ^= rng << 5;
    return rng;
}

/* Text safe inside a JSON string: quotes, backslashes and control bytes become '?'. */
static void json_safe(char *text) {
    for (; *text; text++)
        if (*text == '"' || *text == '\\' || (unsigned char)*text < 0x20) *text = '?';
}

static void note_error(const char *what) {
    errors++;
    if (!first_error[0]) snprintf(first_error, sizeof first_error, "%s", what);
}

static size_t bucket(uint64_t us) {
    if (us < 1) return 1;
    if (us < 1000) return (size_t)us;
    uint64_t scale = 10; /* us in [10^k, 10^(k+1)): mantissa = round(us / 10^(k-2)) */
    int decade = 0;
    while (us / scale >= 1000) {
        scale *= 10;
        decade++;
    }
    uint64_t mantissa = (us + scale / 2) / scale;
    if (mantissa >= 1000) {
        mantissa = 100;
        decade++;
    }
    if (decade >= DECADES) return BUCKETS - 1;
    return 1000 + (size_t)decade * 900 + (size_t)(mantissa - 100);
}

static uint64_t bucket_value(size_t index) {
    if (index < 1000) return index;
    size_t decade = (index - 1000) / 900, mantissa = (index - 1000) % 900 + 100;
    uint64_t scale = 10;
    while (decade--) scale *= 10;
    return mantissa * scale;
}

/* A masked client text frame of `length` bytes of 'x' in c->out. */
static void frame(struct conn *c, size_t length) {
    unsigned char *p = c->out;
    *p++ = 0x81;
    if (length < 126) {
        *p++ = 0x80 | (unsigned char)length;
    } else {
        *p++ = 0x80 | 126;
        *p++ = (unsigned char)(length >> 8);
        *p++ = (unsigned char)length;
    }
    uint32_t key = next_random();
    unsigned char mask[4] = {key >> 24, key >> 16, key >> 8, key};
    memcpy(p, mask, 4);
    p += 4;
    for (size_t i = 0; i < length; i++) *p++ = 'x' ^ mask[i & 3];
    c->out_len = (size_t)(p - c->out);
    c->out_off = 0;
}

static int flush(struct conn *c) {
    while (c->out_off < c->out_len) {
        ssize_t n = write(c->fd, c->out + c->out_off, c->out_len - c->out_off);
        if (n < 0) {
            if (errno == EAGAIN) return 0;
            return -1;
        }
        c->out_off += (size_t)n;
    }
    return 0;
}

static int open_one(const struct sockaddr_in *addr, const char *host, const char *port,
                    const char *path) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    if (connect(fd, (const struct sockaddr *)addr, sizeof *addr) < 0) {
        close(fd);
        return -1;
    }
    char request[1024];
    int length = snprintf(request, sizeof request,
                          "GET %s HTTP/1.1\r\nHost: %s:%s\r\nUpgrade: websocket\r\n"
                          "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                          "Sec-WebSocket-Version: 13\r\n\r\n",
                          path, host, port);
    if (write(fd, request, (size_t)length) != length) {
        close(fd);
        return -1;
    }
    char head[4096];
    size_t got = 0;
    while (got < sizeof head - 1) {
        ssize_t n = read(fd, head + got, 1); /* byte by byte: no frame bytes swallowed */
        if (n <= 0) break;
        got += (size_t)n;
        if (got >= 4 && memcmp(head + got - 4, "\r\n\r\n", 4) == 0) break;
    }
    head[got] = 0;
    if (strncmp(head, "HTTP/1.1 101", 12) != 0) {
        char *end = strstr(head, "\r\n");
        if (end) *end = 0;
        if (!first_error[0])
            snprintf(first_error, sizeof first_error, "handshake: %.200s", got ? head : "no answer");
        close(fd);
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

/* Take the complete frames out of c->in; returns -1 when the connection must go. */
static int frames(struct conn *c, size_t payload, int measuring, uint64_t now) {
    size_t at = 0;
    while (c->in_len - at >= 2) {
        unsigned char *p = c->in + at;
        size_t head = 2, length = p[1] & 0x7f;
        if (length == 126) {
            if (c->in_len - at < 4) break;
            length = ((size_t)p[2] << 8) | p[3];
            head = 4;
        } else if (length == 127) {
            note_error("a frame longer than 64 KiB");
            return -1;
        }
        if (c->in_len - at < head + length) break;
        int opcode = p[0] & 0x0f;
        if (opcode == 8) {
            note_error("the server closed a socket");
            return -1;
        }
        if (opcode == 1 || opcode == 2) {
            if (length != payload) {
                wrong++;
                errors++;
                if (!wrong_reply[0])
                    snprintf(wrong_reply, sizeof wrong_reply, "expected %zu bytes, got %zu",
                             payload, length);
            }
            if (measuring) {
                count++;
                histogram[bucket((now - c->sent_at) / 1000)]++;
            }
            frame(c, payload);
            c->sent_at = now;
            if (flush(c) < 0) return -1;
        }
        at += head + length;
    }
    memmove(c->in, c->in + at, c->in_len - at);
    c->in_len -= at;
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 8) {
        fprintf(stderr, "usage: %s HOST PORT PATH CONNECTIONS WARMUP_S DURATION_S PAYLOAD\n",
                argv[0]);
        return 2;
    }
    const char *host = argv[1], *port = argv[2], *path = argv[3];
    int connections = atoi(argv[4]);
    double warmup = atof(argv[5]), duration = atof(argv[6]);
    size_t payload = (size_t)atoi(argv[7]);
    if (connections < 1 || payload > 65535 || duration <= 0) {
        fprintf(stderr, "wsecho: bad arguments\n");
        return 2;
    }
    struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM}, *found;
    if (getaddrinfo(host, port, &hints, &found) != 0) {
        fprintf(stderr, "wsecho: cannot resolve %s\n", host);
        return 2;
    }
    struct sockaddr_in addr = *(struct sockaddr_in *)found->ai_addr;
    freeaddrinfo(found);

    struct conn *conns = calloc((size_t)connections, sizeof *conns);
    int epoll = epoll_create1(0);
    int opened = 0, failed = 0;
    for (int i = 0; i < connections; i++) {
        int fd = open_one(&addr, host, port, path);
        if (fd < 0) {
            failed++;
            continue;
        }
        conns[opened].fd = fd;
        conns[opened].open = 1;
        struct epoll_event event = {.events = EPOLLIN, .data.ptr = &conns[opened]};
        epoll_ctl(epoll, EPOLL_CTL_ADD, fd, &event);
        opened++;
    }
    if (opened == 0 && !first_error[0]) snprintf(first_error, sizeof first_error, "no socket opened");

    uint64_t start = now_ns();
    uint64_t measure_at = start + (uint64_t)(warmup * 1e9);
    uint64_t stop_at = measure_at + (uint64_t)(duration * 1e9);
    for (int i = 0; i < opened; i++) {
        frame(&conns[i], payload);
        conns[i].sent_at = start;
        if (flush(&conns[i]) < 0) note_error("a send failed");
    }
    struct epoll_event events[256];
    uint64_t now = start;
    while (opened && now < stop_at) {
        int ready = epoll_wait(epoll, events, 256, 10);
        now = now_ns();
        int measuring = now >= measure_at;
        for (int e = 0; e < ready; e++) {
            struct conn *c = events[e].data.ptr;
            if (!c->open) continue;
            if (events[e].events & EPOLLOUT && flush(c) == 0 && c->out_off == c->out_len) {
                struct epoll_event event = {.events = EPOLLIN, .data.ptr = c};
                epoll_ctl(epoll, EPOLL_CTL_MOD, c->fd, &event);
            }
            ssize_t n = read(c->fd, c->in + c->in_len, INBUF - c->in_len);
            if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
                note_error("a socket was closed by the server");
                c->open = 0;
                close(c->fd);
                continue;
            }
            if (n < 0) continue;
            c->in_len += (size_t)n;
            if (frames(c, payload, measuring, now) < 0) {
                c->open = 0;
                close(c->fd);
                continue;
            }
            if (c->out_off < c->out_len) {
                struct epoll_event event = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
                epoll_ctl(epoll, EPOLL_CTL_MOD, c->fd, &event);
            }
        }
    }
    double seconds = (double)(now - (measure_at < now ? measure_at : now)) / 1e9;

    json_safe(first_error);
    printf("{\"opened\": %d, \"failed\": %d, \"retries\": 0, \"first_error\": ", opened, failed);
    if (first_error[0]) printf("\"%s\"", first_error);
    else printf("null");
    printf(", \"seconds\": %.6f, \"count\": %llu, \"errors\": %llu, \"wrong_reply\": ", seconds,
           (unsigned long long)count, (unsigned long long)errors);
    if (wrong_reply[0]) printf("\"%s\"", wrong_reply);
    else printf("null");
    printf(", \"statuses\": {}, \"hist\": {");
    int comma = 0;
    for (size_t i = 0; i < BUCKETS; i++) {
        if (!histogram[i]) continue;
        printf("%s\"%llu\": %llu", comma ? ", " : "", (unsigned long long)bucket_value(i),
               (unsigned long long)histogram[i]);
        comma = 1;
    }
    printf("}}\n");
    return 0;
}
