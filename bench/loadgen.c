/*
 * loadgen: the benchmark's load generator and its sink/echo servers, in one epoll-based
 * process per invocation, so that neither side of the measurement is a Python program.
 *
 *   loadgen server
 *       TCP echo, sink and source servers plus a UDP echo server on 127.0.0.1, ports picked by
 *       the kernel; prints {"echo":P,"sink":P,"source":P,"udp":P}; serves until stdin closes.
 *         echo    sends back every byte it receives.
 *         sink    discards what it receives. Upload data is zeros in blocks of BLOCK bytes;
 *                 a block that starts with the byte 0x01 instead ends the upload, and the
 *                 sink answers with the number of bytes before it (8 bytes, little-endian).
 *                 The marker ends a timed upload without a half-close, which not every proxy
 *                 relays, and lets the sink look at one byte per block only.
 *         source  waits for one byte, then sends zeros until the peer closes.
 *
 * Received bulk data is never copied to this process: recv() with MSG_TRUNC discards TCP data
 * in the kernel, which leaves more of the machine to the proxy under test. (Sending with
 * sendfile() from a memfd was tried as well; on loopback it is slower than send().)
 * The exception is `bulk --copy`: the client receives into a buffer with plain recv(),
 * flags 0. That is for clients whose recv() is not the kernel's: under Dante's socksify
 * (LD_PRELOAD of libdsocks) with GSS-API protection, recv() returns data the library has
 * unwrapped, and its GSS-API path does not support MSG_TRUNC (a download fails after a few
 * MB). The GSS-API benchmark (bench/gssapi.py) runs every client, direct ones too, with
 * --copy, so that all its figures include the same copy.
 *
 *   loadgen bulk      --dest A --direction up|down --streams N --duration S [--copy]
 *   loadgen connrate  --dest A --clients C --duration S
 *   loadgen pingpong  --dest A --count N --duration S
 *   loadgen idle      --dest A --tunnels N --concurrency K --timeout S
 *   loadgen udp       --dest A --window W --size B --duration S
 *   loadgen associations --dest A --tunnels N --timeout S
 *       opens N UDP associations, each proven by one datagram echoed back, holds them idle
 *       until stdin closes, then prints how many the proxy kept.
 *       Common options: --proxy HOST:PORT (SOCKS5; without it the client connects straight to
 *       --dest), --user NAME --password WORD (RFC 1929 sub-negotiation), --proxy-protocol 2
 *       (each connection to the proxy begins with a PROXY protocol v2 header, sent with the
 *       greeting in one segment, as from a load balancer). Each prints one JSON
 *       line on stdout; idle and associations print a second line after stdin closes.
 *
 * SOCKS5 as spoken here: RFC 1928 greeting offering one method, RFC 1929 username/password
 * when asked, CONNECT or UDP ASSOCIATE with an IPv4 DST.ADDR; the reply is read as
 * 4 + address + 2 bytes, whatever ATYP the server chose. UDP datagrams carry the 10-byte IPv4
 * request header of RFC 1928 section 7.
 *
 * Every loop is bounded by a count and by a deadline.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum {
    SOCKS_VERSION = 5,
    METHOD_NO_AUTH = 0x00,
    METHOD_USERPASS = 0x02,
    USERPASS_VERSION = 1,
    USERPASS_SUCCESS = 0,
    COMMAND_CONNECT = 1,
    COMMAND_UDP_ASSOCIATE = 3,
    ATYP_IPV4 = 1,
    ATYP_DOMAIN_NAME = 3,
    ATYP_IPV6 = 4,
    REPLY_SUCCEEDED = 0,
};

/* Bytes per send/recv call on bulk paths. */
#define CHUNK (256 * 1024)
/* Upload block size: the sink reads the first byte of each block, discards the rest. */
#define BLOCK (256 * 1024)
/* The first byte of the block that ends an upload; every other byte is zero. */
#define UPLOAD_MARKER 0x01
/* Payload of one connrate echo. */
#define CONNRATE_ECHO 32
/* Round trips run before pingpong starts recording. */
#define PINGPONG_WARMUP 100
/* Upper bound on recorded latencies (connrate); later samples still count, unrecorded. */
#define MAX_SAMPLES (4 * 1024 * 1024)
/* Seconds a blocking socket waits before the run counts it as failed. */
#define IO_TIMEOUT 30
/* UDP: milliseconds without an echo after which the outstanding window counts as lost. */
#define UDP_LOSS_MS 20
/* epoll user data marking standard input. */
#define STDIN_TAG UINT32_MAX

static uint8_t zeros[CHUNK];
static uint8_t scratch[CHUNK];
static ssize_t send_zeros(int fd)
{
    return send(fd, zeros, CHUNK, MSG_NOSIGNAL);
}

/* Receive and discard up to `limit` bytes of TCP data without copying them. */
static ssize_t discard(int fd, size_t limit)
{
    return recv(fd, scratch, limit, MSG_TRUNC);
}

/* Receive up to `limit` bytes into `scratch` (bulk --copy): the recv() every program makes. */
static ssize_t receive_copy(int fd, size_t limit)
{
    return recv(fd, scratch, limit < CHUNK ? limit : CHUNK, 0);
}

struct options {
    int have_proxy;
    struct sockaddr_in proxy;
    struct sockaddr_in dest;
    const char *user;
    const char *password;
    int upload;
    int streams;
    double duration;
    long count;
    int clients;
    int tunnels;
    int concurrency;
    double timeout;
    int window;
    int size;
    /* bulk: receive with plain recv() into a buffer instead of recv(MSG_TRUNC) */
    int copy;
    /* 2: begin each connection to the proxy with a PROXY protocol v2 header, as a load
     * balancer does (HAProxy send-proxy-v2); 0: none */
    int proxy_protocol;
};

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void fail(const char *what)
{
    printf("{\"error\":\"%s: %s\"}\n", what, strerror(errno));
    exit(1);
}

static void usage(void)
{
    fprintf(stderr, "usage: loadgen server | bulk | connrate | pingpong | idle | udp | associations\n"
                    "       [options]\n"
                    "       (see the comment at the top of bench/loadgen.c)\n");
    exit(2);
}

static int parse_address(const char *text, struct sockaddr_in *out)
{
    char host[64];
    const char *colon = strrchr(text, ':');
    if (colon == NULL || (size_t)(colon - text) >= sizeof host)
        return -1;
    memcpy(host, text, (size_t)(colon - text));
    host[colon - text] = '\0';
    memset(out, 0, sizeof *out);
    out->sin_family = AF_INET;
    out->sin_port = htons((uint16_t)atoi(colon + 1));
    return inet_pton(AF_INET, host, &out->sin_addr) == 1 ? 0 : -1;
}

static int compare_doubles(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The p-th percentile (0..1) of n sorted samples, nearest rank below. */
static double percentile(const double *sorted, size_t n, double p)
{
    if (n == 0)
        return 0.0;
    return sorted[(size_t)((double)(n - 1) * p)];
}

static void set_nonblocking(int fd)
{
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
}

static void set_nodelay(int fd)
{
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

static void set_io_timeout(int fd)
{
    struct timeval tv = {.tv_sec = IO_TIMEOUT};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

static int read_exact(int fd, void *buffer, size_t n)
{
    uint8_t *p = buffer;
    while (n > 0) {
        ssize_t got = recv(fd, p, n, 0);
        if (got <= 0) {
            if (got < 0 && errno == EINTR)
                continue;
            if (got == 0)
                errno = ECONNRESET;
            return -1;
        }
        p += got;
        n -= (size_t)got;
    }
    return 0;
}

static int write_all(int fd, const void *buffer, size_t n)
{
    const uint8_t *p = buffer;
    while (n > 0) {
        ssize_t sent = send(fd, p, n, MSG_NOSIGNAL);
        if (sent < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += sent;
        n -= (size_t)sent;
    }
    return 0;
}

/* ------------------------------------------------------------------ SOCKS5 messages */

static size_t build_greeting(uint8_t *out, const struct options *o)
{
    out[0] = SOCKS_VERSION;
    out[1] = 1; /* NMETHODS */
    out[2] = o->user ? METHOD_USERPASS : METHOD_NO_AUTH;
    return 3;
}

/* The PROXY protocol v2 header of a connection (HAProxy's doc/proxy-protocol.txt): the
 * 12-byte signature, version 2 and command PROXY, TCP over IPv4, the 12-byte address block
 * (source address, destination address, source port, destination port), no TLV. The source
 * is our end, the destination the proxy's, as a balancer on this host would send. */
#define PROXY_V2_LENGTH 28
static size_t build_proxy_header(int fd, uint8_t *out)
{
    static const uint8_t signature[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                          0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};
    struct sockaddr_in source, destination;
    socklen_t length = sizeof source;
    if (getsockname(fd, (struct sockaddr *)&source, &length) < 0)
        return 0;
    length = sizeof destination;
    if (getpeername(fd, (struct sockaddr *)&destination, &length) < 0)
        return 0;
    memcpy(out, signature, sizeof signature);
    out[12] = 0x21; /* version 2, PROXY */
    out[13] = 0x11; /* AF_INET, STREAM */
    out[14] = 0;
    out[15] = 12;
    memcpy(out + 16, &source.sin_addr, 4);
    memcpy(out + 20, &destination.sin_addr, 4);
    memcpy(out + 24, &source.sin_port, 2);
    memcpy(out + 26, &destination.sin_port, 2);
    return PROXY_V2_LENGTH;
}

/* The first bytes to the proxy: the PROXY header when asked for, then the greeting. */
static size_t build_opening(int fd, uint8_t *out, const struct options *o)
{
    size_t header = 0;
    if (o->proxy_protocol) {
        header = build_proxy_header(fd, out);
        if (header == 0)
            return 0;
    }
    return header + build_greeting(out + header, o);
}

/* RFC 1929: VER ULEN UNAME PLEN PASSWD */
static size_t build_userpass(uint8_t *out, const struct options *o)
{
    size_t ulen = strlen(o->user), plen = strlen(o->password);
    out[0] = USERPASS_VERSION;
    out[1] = (uint8_t)ulen;
    memcpy(out + 2, o->user, ulen);
    out[2 + ulen] = (uint8_t)plen;
    memcpy(out + 3 + ulen, o->password, plen);
    return 3 + ulen + plen;
}

/* RFC 1928 section 4: VER CMD RSV ATYP DST.ADDR DST.PORT, IPv4 only. */
static size_t build_request(uint8_t *out, int command, const struct sockaddr_in *address)
{
    out[0] = SOCKS_VERSION;
    out[1] = (uint8_t)command;
    out[2] = 0;
    out[3] = ATYP_IPV4;
    memcpy(out + 4, &address->sin_addr, 4);
    memcpy(out + 8, &address->sin_port, 2);
    return 10;
}

/* Length of a whole reply from its first 5 bytes (the fifth is a domain name's length). */
static int reply_length(const uint8_t *head)
{
    switch (head[3]) {
    case ATYP_IPV4:
        return 4 + 4 + 2;
    case ATYP_IPV6:
        return 4 + 16 + 2;
    case ATYP_DOMAIN_NAME:
        return 4 + 1 + head[4] + 2;
    default:
        return -1;
    }
}

static int check_method(const uint8_t *reply, const struct options *o)
{
    return reply[0] == SOCKS_VERSION && reply[1] == (o->user ? METHOD_USERPASS : METHOD_NO_AUTH);
}

/* A blocking SOCKS5 request through the proxy (or, without one, a plain connection to
 * `address` when the command is CONNECT). The reply's BND address goes to `bound`.
 * Returns the connected socket or -1 with a reason in `why`. */
static int socks_open(const struct options *o, int command, const struct sockaddr_in *address,
                      struct sockaddr_in *bound, const char **why)
{
    uint8_t message[600];
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) {
        *why = "socket";
        return -1;
    }
    set_io_timeout(fd);
    const struct sockaddr_in *first_hop = o->have_proxy ? &o->proxy : address;
    if (connect(fd, (const struct sockaddr *)first_hop, sizeof *first_hop) < 0) {
        *why = "connect";
        goto fail;
    }
    if (!o->have_proxy)
        return fd;
    *why = "greeting";
    size_t opening = build_opening(fd, message, o);
    if (opening == 0 || write_all(fd, message, opening) < 0 || read_exact(fd, message, 2) < 0)
        goto fail;
    *why = "method refused";
    if (!check_method(message, o))
        goto fail;
    if (o->user) {
        *why = "login";
        if (write_all(fd, message, build_userpass(message, o)) < 0 ||
            read_exact(fd, message, 2) < 0 || message[1] != USERPASS_SUCCESS)
            goto fail;
    }
    *why = "request";
    if (write_all(fd, message, build_request(message, command, address)) < 0 ||
        read_exact(fd, message, 5) < 0)
        goto fail;
    *why = "request refused";
    int length = reply_length(message);
    if (message[0] != SOCKS_VERSION || message[1] != REPLY_SUCCEEDED || length < 0)
        goto fail;
    *why = "reply";
    if (read_exact(fd, message + 5, (size_t)length - 5) < 0)
        goto fail;
    if (bound != NULL) {
        memset(bound, 0, sizeof *bound);
        bound->sin_family = AF_INET;
        if (message[3] == ATYP_IPV4) {
            memcpy(&bound->sin_addr, message + 4, 4);
            memcpy(&bound->sin_port, message + 8, 2);
        } else {
            *why = "relay address is not IPv4";
            goto fail;
        }
    }
    return fd;
fail:
    close(fd);
    return -1;
}


/* ------------------------------------------------------------------ non-blocking flows */

/* One client connection driven by epoll: connect, SOCKS5 handshake, one echo. */
enum phase { PHASE_CONNECT, PHASE_METHOD, PHASE_LOGIN, PHASE_REPLY, PHASE_ECHO, PHASE_HELD };
#define PHASES 6
static const char *const phase_names[PHASES] = {"connect", "method", "login",
                                                "reply",   "echo",   "held"};

struct flow {
    int fd;
    uint32_t tag;
    enum phase phase;
    int error; /* why it failed: an errno value, 0 for a close by the peer, -REP for a refusal */
    size_t have, need, echo_length;
    double started;
    uint8_t buffer[300];
};

static uint8_t echo_pattern[CONNRATE_ECHO];

static void watch(int epfd, int fd, uint32_t tag, uint32_t events, int operation)
{
    struct epoll_event event = {.events = events, .data.u32 = tag};
    epoll_ctl(epfd, operation, fd, &event);
}

static int flow_start(struct flow *f, const struct options *o, int epfd)
{
    f->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (f->fd < 0)
        return -1;
    f->started = now();
    f->phase = PHASE_CONNECT;
    const struct sockaddr_in *first_hop = o->have_proxy ? &o->proxy : &o->dest;
    if (connect(f->fd, (const struct sockaddr *)first_hop, sizeof *first_hop) < 0 &&
        errno != EINPROGRESS) {
        close(f->fd);
        f->fd = -1;
        return -1;
    }
    watch(epfd, f->fd, f->tag, EPOLLOUT, EPOLL_CTL_ADD);
    return 0;
}

static void flow_close(struct flow *f)
{
    if (f->fd >= 0)
        close(f->fd); /* which also takes it out of the epoll set */
    f->fd = -1;
}

/* Failures by the phase they happened in, with the first reason seen in each. */
static long failures[PHASES];
static int first_error[PHASES];

static void count_failure(const struct flow *f)
{
    if (failures[f->phase]++ == 0)
        first_error[f->phase] = f->error;
}

static void print_failures(void)
{
    printf("\"failures\":{");
    for (int p = 0, first = 1; p < PHASES; ++p) {
        if (failures[p] == 0)
            continue;
        char reason[80];
        if (first_error[p] < 0)
            snprintf(reason, sizeof reason, "reply X'%02X'", -first_error[p]);
        else
            snprintf(reason, sizeof reason, "%s",
                     first_error[p] ? strerror(first_error[p]) : "closed by peer");
        printf("%s\"%s\":{\"count\":%ld,\"first\":\"%s\"}", first ? "" : ",", phase_names[p],
               failures[p], reason);
        first = 0;
    }
    printf("}");
}

static int flow_fail(struct flow *f, int error)
{
    f->error = error;
    return -1;
}

/* Send a short message (it fits an empty socket buffer), then wait for `need` bytes. */
static int flow_send(struct flow *f, int epfd, const void *message, size_t length,
                     enum phase next, size_t need)
{
    ssize_t sent = send(f->fd, message, length, MSG_NOSIGNAL);
    if (sent != (ssize_t)length)
        return flow_fail(f, sent < 0 ? errno : EMSGSIZE);
    if (f->phase == PHASE_CONNECT)
        watch(epfd, f->fd, f->tag, EPOLLIN, EPOLL_CTL_MOD);
    f->phase = next;
    f->have = 0;
    f->need = need;
    return 0;
}

static int flow_send_echo(struct flow *f, int epfd)
{
    return flow_send(f, epfd, echo_pattern, f->echo_length, PHASE_ECHO, f->echo_length);
}

/* Advance a flow on an epoll event: 1 once its echo came back, 0 while in progress, -1 when
 * it failed. */
static int flow_step(struct flow *f, const struct options *o, int epfd)
{
    uint8_t message[600];
    if (f->phase == PHASE_CONNECT) {
        int error = 0;
        socklen_t length = sizeof error;
        if (getsockopt(f->fd, SOL_SOCKET, SO_ERROR, &error, &length) < 0)
            return flow_fail(f, errno);
        if (error != 0)
            return flow_fail(f, error);
        if (!o->have_proxy)
            return flow_send_echo(f, epfd);
        size_t opening = build_opening(f->fd, message, o);
        if (opening == 0)
            return flow_fail(f, errno);
        return flow_send(f, epfd, message, opening, PHASE_METHOD, 2);
    }
    ssize_t got = recv(f->fd, f->buffer + f->have, f->need - f->have, 0);
    if (got == 0)
        return flow_fail(f, 0);
    if (got < 0)
        return errno == EAGAIN || errno == EINTR ? 0 : flow_fail(f, errno);
    f->have += (size_t)got;
    if (f->have < f->need)
        return 0;
    switch (f->phase) {
    case PHASE_METHOD:
        if (!check_method(f->buffer, o))
            return flow_fail(f, EPROTO);
        if (o->user)
            return flow_send(f, epfd, message, build_userpass(message, o), PHASE_LOGIN, 2);
        return flow_send(f, epfd, message, build_request(message, COMMAND_CONNECT, &o->dest),
                         PHASE_REPLY, 5);
    case PHASE_LOGIN:
        if (f->buffer[0] != USERPASS_VERSION || f->buffer[1] != USERPASS_SUCCESS)
            return flow_fail(f, EACCES);
        return flow_send(f, epfd, message, build_request(message, COMMAND_CONNECT, &o->dest),
                         PHASE_REPLY, 5);
    case PHASE_REPLY:
        if (f->need == 5) {
            int length = reply_length(f->buffer);
            if (f->buffer[0] != SOCKS_VERSION || length < 0)
                return flow_fail(f, EPROTO);
            if (f->buffer[1] != REPLY_SUCCEEDED)
                return flow_fail(f, -(int)f->buffer[1]);
            f->need = (size_t)length;
            return 0; /* level-triggered epoll reports the rest of the reply */
        }
        return flow_send_echo(f, epfd);
    case PHASE_ECHO:
        return memcmp(f->buffer, echo_pattern, f->echo_length) == 0 ? 1 : flow_fail(f, EPROTO);
    default:
        return flow_fail(f, EPROTO);
    }
}

/* ------------------------------------------------------------------ client modes */

static int run_connrate(const struct options *o)
{
    int epfd = epoll_create1(0);
    struct flow *flows = calloc((size_t)o->clients, sizeof *flows);
    double *samples = malloc(MAX_SAMPLES * sizeof *samples);
    if (epfd < 0 || flows == NULL || samples == NULL)
        fail("setup");
    size_t recorded = 0;
    long completed = 0, errors = 0;
    double start = now(), deadline = start + o->duration;
    for (int i = 0; i < o->clients; ++i) {
        flows[i].tag = (uint32_t)i;
        flows[i].echo_length = CONNRATE_ECHO;
        flows[i].fd = -1;
    }
    struct epoll_event events[256];
    double t;
    while ((t = now()) < deadline) {
        int parked = 0;
        for (int i = 0; i < o->clients; ++i) {
            if (flows[i].fd < 0 && flow_start(&flows[i], o, epfd) < 0) {
                ++errors;
                ++parked;
            }
        }
        int wait_ms = parked ? 1 : (int)((deadline - t) * 1000.0) + 1;
        int n = epoll_wait(epfd, events, 256, wait_ms);
        for (int k = 0; k < n; ++k) {
            struct flow *f = &flows[events[k].data.u32];
            int result = flow_step(f, o, epfd);
            if (result == 0)
                continue;
            double finished = now();
            flow_close(f);
            if (finished > deadline)
                continue; /* finished after the window: not counted either way */
            if (result < 0) {
                ++errors;
                count_failure(f);
                continue;
            }
            ++completed;
            if (recorded < MAX_SAMPLES)
                samples[recorded++] = (finished - f->started) * 1e3;
        }
    }
    for (int i = 0; i < o->clients; ++i)
        flow_close(&flows[i]);
    qsort(samples, recorded, sizeof *samples, compare_doubles);
    printf("{\"mode\":\"connrate\",\"clients\":%d,\"seconds\":%.6f,\"completed\":%ld,"
           "\"errors\":%ld,\"rate\":%.3f,\"p50_ms\":%.6f,\"p99_ms\":%.6f,",
           o->clients, o->duration, completed, errors, (double)completed / o->duration,
           percentile(samples, recorded, 0.50), percentile(samples, recorded, 0.99));
    print_failures();
    printf("}\n");
    return 0;
}

/* Whether a held tunnel is still open, draining anything that arrived. */
static int still_open(int fd)
{
    ssize_t got = recv(fd, scratch, sizeof scratch, 0);
    return got > 0 || (got < 0 && (errno == EAGAIN || errno == EINTR));
}

static int run_idle(const struct options *o)
{
    int epfd = epoll_create1(0);
    struct flow *flows = calloc((size_t)o->tunnels, sizeof *flows);
    if (epfd < 0 || flows == NULL)
        fail("setup");
    long next = 0, held = 0, failed = 0, active = 0, dropped = 0;
    double start = now(), deadline = start + o->timeout;
    struct epoll_event events[512];
    for (int i = 0; i < o->tunnels; ++i) {
        flows[i].tag = (uint32_t)i;
        flows[i].echo_length = 1;
        flows[i].fd = -1;
    }
    while (held + failed < o->tunnels && now() < deadline) {
        while (active < o->concurrency && next < o->tunnels) {
            if (flow_start(&flows[next++], o, epfd) < 0)
                ++failed;
            else
                ++active;
        }
        int n = epoll_wait(epfd, events, 512, 100);
        for (int k = 0; k < n; ++k) {
            struct flow *f = &flows[events[k].data.u32];
            if (f->phase == PHASE_HELD) {
                if (!still_open(f->fd)) {
                    ++dropped;
                    flow_close(f);
                }
                continue;
            }
            int result = flow_step(f, o, epfd);
            if (result == 0)
                continue;
            --active;
            if (result > 0) {
                f->phase = PHASE_HELD;
                ++held;
                watch(epfd, f->fd, f->tag, EPOLLIN | EPOLLRDHUP, EPOLL_CTL_MOD);
            } else {
                ++failed;
                count_failure(f);
                flow_close(f);
            }
        }
    }
    double seconds = now() - start;
    long pending = 0;
    for (int i = 0; i < o->tunnels; ++i) {
        if (flows[i].fd >= 0 && flows[i].phase != PHASE_HELD) {
            ++pending;
            flow_close(&flows[i]);
        }
    }
    printf("{\"mode\":\"idle\",\"tunnels\":%d,\"held\":%ld,\"failed\":%ld,\"pending\":%ld,"
           "\"seconds\":%.6f,",
           o->tunnels, held - dropped, failed, pending, seconds);
    print_failures();
    printf("}\n");
    fflush(stdout);

    /* Hold until standard input closes, noticing tunnels the proxy drops meanwhile. */
    watch(epfd, STDIN_FILENO, STDIN_TAG, EPOLLIN, EPOLL_CTL_ADD);
    double hold_deadline = now() + o->timeout + 3600.0;
    int holding = 1;
    while (holding && now() < hold_deadline) {
        int n = epoll_wait(epfd, events, 512, 1000);
        for (int k = 0; k < n; ++k) {
            if (events[k].data.u32 == STDIN_TAG) {
                if (read(STDIN_FILENO, scratch, sizeof scratch) <= 0)
                    holding = 0;
                continue;
            }
            struct flow *f = &flows[events[k].data.u32];
            if (f->fd >= 0 && !still_open(f->fd)) {
                ++dropped;
                flow_close(f);
            }
        }
    }
    printf("{\"still_open\":%ld}\n", held - dropped);
    for (int i = 0; i < o->tunnels; ++i)
        flow_close(&flows[i]);
    return 0;
}

static int run_bulk(const struct options *o)
{
    int *fds = calloc((size_t)o->streams, sizeof *fds);
    uint64_t *sent = calloc((size_t)o->streams, sizeof *sent);
    struct epoll_event events[64];
    int epfd = epoll_create1(0);
    if (fds == NULL || sent == NULL || epfd < 0)
        fail("setup");
    for (int i = 0; i < o->streams; ++i) {
        const char *why = "";
        fds[i] = socks_open(o, COMMAND_CONNECT, &o->dest, NULL, &why);
        if (fds[i] < 0)
            fail(why);
    }
    uint64_t total = 0;
    long errors = 0;
    double start, elapsed;
    if (o->upload) {
        for (int i = 0; i < o->streams; ++i) {
            set_nonblocking(fds[i]);
            watch(epfd, fds[i], (uint32_t)i, EPOLLOUT, EPOLL_CTL_ADD);
        }
        start = now();
        double deadline = start + o->duration, t;
        while ((t = now()) < deadline) {
            int n = epoll_wait(epfd, events, 64, (int)((deadline - t) * 1000.0) + 1);
            for (int k = 0; k < n; ++k) {
                int i = (int)events[k].data.u32;
                ssize_t w = send_zeros(fds[i]);
                if (w > 0)
                    sent[i] += (uint64_t)w;
                else if (w < 0 && errno != EAGAIN && errno != EINTR)
                    fail("upload");
            }
        }
        /* Zeros up to a block boundary, the end marker, then each sink's count: the clock
         * stops once all data arrived. */
        for (int i = 0; i < o->streams; ++i) {
            uint8_t marker = UPLOAD_MARKER;
            size_t padding = (BLOCK - sent[i] % BLOCK) % BLOCK;
            fcntl(fds[i], F_SETFL, fcntl(fds[i], F_GETFL) & ~O_NONBLOCK);
            if (write_all(fds[i], zeros, padding) < 0 || write_all(fds[i], &marker, 1) < 0)
                fail("upload marker");
            sent[i] += padding;
        }
        for (int i = 0; i < o->streams; ++i) {
            uint8_t reply[8];
            if (read_exact(fds[i], reply, sizeof reply) < 0)
                fail("sink count");
            uint64_t count = 0;
            for (int b = 7; b >= 0; --b)
                count = count << 8 | reply[b];
            total += count;
            if (count != sent[i])
                ++errors;
        }
        elapsed = now() - start;
    } else {
        for (int i = 0; i < o->streams; ++i) {
            uint8_t go = 'G';
            if (write_all(fds[i], &go, 1) < 0)
                fail("download start");
            set_nonblocking(fds[i]);
            watch(epfd, fds[i], (uint32_t)i, EPOLLIN, EPOLL_CTL_ADD);
        }
        start = now();
        double deadline = start + o->duration, t;
        while ((t = now()) < deadline) {
            int n = epoll_wait(epfd, events, 64, (int)((deadline - t) * 1000.0) + 1);
            for (int k = 0; k < n; ++k) {
                int i = (int)events[k].data.u32;
                ssize_t got = o->copy ? receive_copy(fds[i], CHUNK) : discard(fds[i], 4 * CHUNK);
                if (got > 0) {
                    total += (uint64_t)got;
                } else if (got == 0 || (errno != EAGAIN && errno != EINTR)) {
                    ++errors;
                    epoll_ctl(epfd, EPOLL_CTL_DEL, fds[i], NULL);
                }
            }
        }
        elapsed = now() - start;
    }
    for (int i = 0; i < o->streams; ++i)
        close(fds[i]);
    printf("{\"mode\":\"bulk\",\"direction\":\"%s\",\"streams\":%d,\"bytes\":%llu,"
           "\"seconds\":%.6f,\"gbps\":%.6f,\"errors\":%ld}\n",
           o->upload ? "up" : "down", o->streams, (unsigned long long)total, elapsed,
           (double)total / elapsed / 1e9, errors);
    return 0;
}

static int run_pingpong(const struct options *o)
{
    const char *why = "";
    int fd = socks_open(o, COMMAND_CONNECT, &o->dest, NULL, &why);
    if (fd < 0)
        fail(why);
    set_nodelay(fd);
    double *samples = malloc((size_t)o->count * sizeof *samples);
    if (samples == NULL)
        fail("setup");
    size_t recorded = 0;
    double deadline = now() + o->duration, sum = 0.0;
    uint8_t byte = 'p';
    for (long i = 0; i < PINGPONG_WARMUP + o->count && now() < deadline; ++i) {
        double sent_at = now();
        if (write_all(fd, &byte, 1) < 0 || read_exact(fd, &byte, 1) < 0)
            fail("ping-pong");
        if (i >= PINGPONG_WARMUP) {
            samples[recorded] = (now() - sent_at) * 1e6;
            sum += samples[recorded++];
        }
    }
    close(fd);
    qsort(samples, recorded, sizeof *samples, compare_doubles);
    printf("{\"mode\":\"pingpong\",\"count\":%zu,\"p50_us\":%.3f,\"p99_us\":%.3f,"
           "\"mean_us\":%.3f,\"min_us\":%.3f}\n",
           recorded, percentile(samples, recorded, 0.50), percentile(samples, recorded, 0.99),
           recorded ? sum / (double)recorded : 0.0, recorded ? samples[0] : 0.0);
    return 0;
}

/* A UDP socket on 127.0.0.1 connected to where its datagrams go (the proxy's relay, or the
 * destination without a proxy), the RFC 1928 header for the destination in `packet`; returns
 * the control connection (-1 without a proxy), or fails with `why` (-2). */
static int udp_open(const struct options *o, int *udp_out, uint8_t *packet, size_t *header,
                    const char **why)
{
    int udp = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in local = {.sin_family = AF_INET};
    socklen_t length = sizeof local;
    inet_pton(AF_INET, "127.0.0.1", &local.sin_addr);
    *why = "udp socket";
    if (udp < 0 || bind(udp, (struct sockaddr *)&local, sizeof local) < 0 ||
        getsockname(udp, (struct sockaddr *)&local, &length) < 0) {
        if (udp >= 0)
            close(udp);
        return -2;
    }
    int control = -1;
    struct sockaddr_in peer = o->dest;
    *header = 0;
    if (o->have_proxy) {
        /* RFC 1928 section 6: DST.ADDR/DST.PORT of UDP ASSOCIATE name where datagrams
         * will come from. */
        control = socks_open(o, COMMAND_UDP_ASSOCIATE, &local, &peer, why);
        if (control < 0) {
            close(udp);
            return -2;
        }
        if (peer.sin_addr.s_addr == htonl(INADDR_ANY))
            peer.sin_addr = o->proxy.sin_addr;
        /* RFC 1928 section 7: RSV(2) FRAG ATYP DST.ADDR DST.PORT DATA */
        packet[0] = packet[1] = packet[2] = 0;
        packet[3] = ATYP_IPV4;
        memcpy(packet + 4, &o->dest.sin_addr, 4);
        memcpy(packet + 8, &o->dest.sin_port, 2);
        *header = 10;
    }
    *why = "udp connect";
    if (connect(udp, (struct sockaddr *)&peer, sizeof peer) < 0) {
        if (control >= 0)
            close(control);
        close(udp);
        return -2;
    }
    *udp_out = udp;
    return control;
}

/* Open `tunnels` UDP associations, each proven by one datagram echoed back, and hold them
 * idle until standard input closes: the load the `udp` mode then meets beside them. */
static int run_associations(const struct options *o)
{
    int *fds = calloc((size_t)o->tunnels * 2, sizeof *fds);
    uint8_t packet[CHUNK];
    long held = 0, failed = 0;
    double start = now();
    if (fds == NULL)
        fail("setup");
    for (int i = 0; i < o->tunnels && now() < start + o->timeout; ++i) {
        const char *why = "";
        size_t header = 0;
        int udp = -1, control = udp_open(o, &udp, packet, &header, &why);
        if (control == -2) {
            ++failed;
            continue;
        }
        memset(packet + header, 'a', 8);
        struct pollfd ready = {.fd = udp, .events = POLLIN};
        if (send(udp, packet, header + 8, 0) != (ssize_t)(header + 8) ||
            poll(&ready, 1, 2000) != 1 || recv(udp, scratch, sizeof scratch, 0) != (ssize_t)(header + 8)) {
            ++failed;
            close(udp);
            if (control >= 0)
                close(control);
            continue;
        }
        fds[2 * held] = udp;
        fds[2 * held + 1] = control;
        ++held;
    }
    printf("{\"mode\":\"associations\",\"tunnels\":%d,\"held\":%ld,\"failed\":%ld,"
           "\"seconds\":%.6f}\n",
           o->tunnels, held, failed, now() - start);
    fflush(stdout);
    /* Hold until standard input closes (bounded as the idle mode is). */
    struct pollfd input = {.fd = STDIN_FILENO, .events = POLLIN};
    double hold_deadline = now() + o->timeout + 3600.0;
    while (now() < hold_deadline) {
        if (poll(&input, 1, 1000) == 1 && read(STDIN_FILENO, scratch, sizeof scratch) <= 0)
            break;
    }
    long still_open = 0;
    for (long i = 0; i < held; ++i) {
        struct pollfd control = {.fd = fds[2 * i + 1], .events = POLLIN};
        if (fds[2 * i + 1] < 0 || poll(&control, 1, 0) == 0)
            ++still_open; /* no EOF from the proxy: the association was kept */
        close(fds[2 * i]);
        if (fds[2 * i + 1] >= 0)
            close(fds[2 * i + 1]);
    }
    printf("{\"still_open\":%ld}\n", still_open);
    free(fds);
    return 0;
}

static int run_udp(const struct options *o)
{
    uint8_t packet[CHUNK];
    size_t header = 0;
    const char *why = "";
    int udp = -1, control = udp_open(o, &udp, packet, &header, &why);
    if (control == -2)
        fail(why);
    memset(packet + header, 'u', (size_t)o->size);
    size_t datagram = header + (size_t)o->size;
    set_nonblocking(udp);
    int epfd = epoll_create1(0);
    watch(epfd, udp, 0, EPOLLIN, EPOLL_CTL_ADD);
    long sent = 0, received = 0, lost = 0, outstanding = 0, errors = 0;
    uint64_t sequence = 0;
    struct epoll_event event;
    double deadline = now() + o->duration;
    while (now() < deadline) {
        while (outstanding < o->window) {
            memcpy(packet + header, &sequence, sizeof sequence);
            if (send(udp, packet, datagram, 0) < 0) {
                if (errno != EAGAIN && errno != ENOBUFS)
                    ++errors;
                break;
            }
            ++sequence;
            ++sent;
            ++outstanding;
        }
        if (epoll_wait(epfd, &event, 1, UDP_LOSS_MS) == 0) {
            lost += outstanding;
            outstanding = 0;
            continue;
        }
        for (;;) {
            ssize_t got = recv(udp, scratch, sizeof scratch, 0);
            if (got < 0) {
                if (errno != EAGAIN && errno != EINTR)
                    ++errors;
                break;
            }
            if ((size_t)got == datagram && (header == 0 || scratch[3] == ATYP_IPV4)) {
                ++received;
                if (outstanding > 0)
                    --outstanding;
            }
        }
    }
    if (control >= 0)
        close(control);
    close(udp);
    printf("{\"mode\":\"udp\",\"window\":%d,\"size\":%d,\"seconds\":%.6f,\"sent\":%ld,"
           "\"received\":%ld,\"lost\":%ld,\"errors\":%ld,\"rate\":%.3f}\n",
           o->window, o->size, o->duration, sent, received, lost, errors,
           (double)received / o->duration);
    return 0;
}

/* ------------------------------------------------------------------ servers */

enum kind {
    KIND_NONE,
    KIND_LISTEN_ECHO,
    KIND_LISTEN_SINK,
    KIND_LISTEN_SOURCE,
    KIND_UDP_ECHO,
    KIND_STDIN,
    KIND_ECHO,
    KIND_SINK,
    KIND_SOURCE,
};

struct connection {
    enum kind kind;
    int sending;              /* source: the go byte arrived */
    uint64_t count;           /* sink: bytes since the last marker */
    uint32_t block_left;      /* sink: bytes to the next block boundary */
    uint8_t *pending;         /* echo: bytes not yet sent back */
    size_t pending_offset, pending_length;
};

static struct connection *table;
static size_t table_size;

static int listen_on(int type, uint16_t *port)
{
    struct sockaddr_in address = {.sin_family = AF_INET};
    socklen_t length = sizeof address;
    int one = 1;
    int fd = socket(AF_INET, type | SOCK_NONBLOCK, 0);
    inet_pton(AF_INET, "127.0.0.1", &address.sin_addr);
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
        bind(fd, (struct sockaddr *)&address, sizeof address) < 0 ||
        (type == SOCK_STREAM && listen(fd, 4096) < 0) ||
        getsockname(fd, (struct sockaddr *)&address, &length) < 0)
        fail("listen");
    *port = ntohs(address.sin_port);
    return fd;
}

static void drop(int fd)
{
    free(table[fd].pending);
    memset(&table[fd], 0, sizeof table[fd]);
    close(fd);
}

static void serve_echo(int epfd, int fd, uint32_t events)
{
    struct connection *c = &table[fd];
    if (c->pending != NULL) {
        if (!(events & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
            return;
        ssize_t w = send(fd, c->pending + c->pending_offset,
                         c->pending_length - c->pending_offset, MSG_NOSIGNAL);
        if (w < 0 && errno != EAGAIN && errno != EINTR) {
            drop(fd);
            return;
        }
        c->pending_offset += w > 0 ? (size_t)w : 0;
        if (c->pending_offset == c->pending_length) {
            free(c->pending);
            c->pending = NULL;
            struct epoll_event event = {.events = EPOLLIN, .data.fd = fd};
            epoll_ctl(epfd, EPOLL_CTL_MOD, fd, &event);
        }
        return;
    }
    ssize_t got = recv(fd, scratch, CHUNK, 0);
    if (got == 0 || (got < 0 && errno != EAGAIN && errno != EINTR)) {
        drop(fd);
        return;
    }
    if (got < 0)
        return;
    ssize_t w = send(fd, scratch, (size_t)got, MSG_NOSIGNAL);
    if (w < 0) {
        if (errno != EAGAIN && errno != EINTR) {
            drop(fd);
            return;
        }
        w = 0;
    }
    if (w < got) { /* keep the rest; read again only once it is sent */
        c->pending_length = (size_t)(got - w);
        c->pending_offset = 0;
        c->pending = malloc(c->pending_length);
        if (c->pending == NULL) {
            drop(fd);
            return;
        }
        memcpy(c->pending, scratch + w, c->pending_length);
        struct epoll_event event = {.events = EPOLLOUT, .data.fd = fd};
        epoll_ctl(epfd, EPOLL_CTL_MOD, fd, &event);
    }
}

static void serve_sink(int fd)
{
    struct connection *c = &table[fd];
    for (int round = 0; round < 4; ++round) { /* a few calls per event, then the others */
        uint8_t first = 0;
        ssize_t got = c->block_left > 0 ? discard(fd, c->block_left) : recv(fd, &first, 1, 0);
        if (got == 0 || (got < 0 && errno != EAGAIN && errno != EINTR)) {
            drop(fd);
            return;
        }
        if (got < 0)
            return;
        if (c->block_left > 0) {
            c->block_left -= (uint32_t)got;
            c->count += (uint64_t)got;
            continue;
        }
        if (first != UPLOAD_MARKER) {
            c->block_left = BLOCK - 1;
            c->count += 1;
            continue;
        }
        uint8_t reply[8];
        for (int b = 0; b < 8; ++b)
            reply[b] = (uint8_t)(c->count >> (8 * b));
        c->count = 0;
        if (send(fd, reply, sizeof reply, MSG_NOSIGNAL) != (ssize_t)sizeof reply) {
            drop(fd);
            return;
        }
    }
}

static void serve_source(int epfd, int fd, uint32_t events)
{
    struct connection *c = &table[fd];
    if (events & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
        ssize_t got = recv(fd, scratch, CHUNK, 0);
        if (got == 0 || (got < 0 && errno != EAGAIN && errno != EINTR)) {
            drop(fd);
            return;
        }
        if (got > 0 && !c->sending) {
            c->sending = 1;
            struct epoll_event event = {.events = EPOLLIN | EPOLLOUT, .data.fd = fd};
            epoll_ctl(epfd, EPOLL_CTL_MOD, fd, &event);
        }
    }
    if ((events & EPOLLOUT) && c->sending) {
        ssize_t w = send_zeros(fd);
        if (w < 0 && errno != EAGAIN && errno != EINTR)
            drop(fd);
    }
}

static void accept_all(int epfd, int listener, enum kind kind)
{
    for (;;) {
        int fd = accept4(listener, NULL, NULL, SOCK_NONBLOCK);
        if (fd < 0)
            return;
        if ((size_t)fd >= table_size) {
            close(fd);
            continue;
        }
        set_nodelay(fd);
        memset(&table[fd], 0, sizeof table[fd]);
        table[fd].kind = kind;
        struct epoll_event event = {.events = EPOLLIN, .data.fd = fd};
        epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &event);
    }
}

static void echo_datagrams(int fd)
{
    for (;;) {
        struct sockaddr_in from;
        socklen_t length = sizeof from;
        ssize_t got = recvfrom(fd, scratch, sizeof scratch, 0, (struct sockaddr *)&from, &length);
        if (got < 0)
            return;
        sendto(fd, scratch, (size_t)got, 0, (struct sockaddr *)&from, length);
    }
}

static int run_server(void)
{
    struct rlimit limit;
    getrlimit(RLIMIT_NOFILE, &limit);
    table_size = limit.rlim_cur > (1 << 20) ? (1 << 20) : limit.rlim_cur;
    table = calloc(table_size, sizeof *table);
    int epfd = epoll_create1(0);
    if (table == NULL || epfd < 0)
        fail("setup");
    uint16_t ports[4];
    const enum kind kinds[4] = {KIND_LISTEN_ECHO, KIND_LISTEN_SINK, KIND_LISTEN_SOURCE,
                                KIND_UDP_ECHO};
    for (int i = 0; i < 4; ++i) {
        int fd = listen_on(kinds[i] == KIND_UDP_ECHO ? SOCK_DGRAM : SOCK_STREAM, &ports[i]);
        table[fd].kind = kinds[i];
        struct epoll_event event = {.events = EPOLLIN, .data.fd = fd};
        epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &event);
    }
    table[STDIN_FILENO].kind = KIND_STDIN;
    struct epoll_event stdin_event = {.events = EPOLLIN, .data.fd = STDIN_FILENO};
    epoll_ctl(epfd, EPOLL_CTL_ADD, STDIN_FILENO, &stdin_event);
    printf("{\"echo\":%u,\"sink\":%u,\"source\":%u,\"udp\":%u}\n", ports[0], ports[1], ports[2],
           ports[3]);
    fflush(stdout);

    struct epoll_event events[512];
    for (;;) {
        int n = epoll_wait(epfd, events, 512, -1);
        for (int k = 0; k < n; ++k) {
            int fd = events[k].data.fd;
            switch (table[fd].kind) {
            case KIND_LISTEN_ECHO:
                accept_all(epfd, fd, KIND_ECHO);
                break;
            case KIND_LISTEN_SINK:
                accept_all(epfd, fd, KIND_SINK);
                break;
            case KIND_LISTEN_SOURCE:
                accept_all(epfd, fd, KIND_SOURCE);
                break;
            case KIND_UDP_ECHO:
                echo_datagrams(fd);
                break;
            case KIND_STDIN:
                if (read(STDIN_FILENO, scratch, sizeof scratch) <= 0)
                    return 0;
                break;
            case KIND_ECHO:
                serve_echo(epfd, fd, events[k].events);
                break;
            case KIND_SINK:
                serve_sink(fd);
                break;
            case KIND_SOURCE:
                serve_source(epfd, fd, events[k].events);
                break;
            case KIND_NONE:
                break;
            }
        }
    }
}

/* ------------------------------------------------------------------ command line */

int main(int argc, char **argv)
{
    static const struct option long_options[] = {
        {"proxy", required_argument, NULL, 'x'},
        {"dest", required_argument, NULL, 'd'},
        {"user", required_argument, NULL, 'u'},
        {"password", required_argument, NULL, 'p'},
        {"direction", required_argument, NULL, 'r'},
        {"streams", required_argument, NULL, 's'},
        {"duration", required_argument, NULL, 't'},
        {"count", required_argument, NULL, 'n'},
        {"clients", required_argument, NULL, 'c'},
        {"tunnels", required_argument, NULL, 'N'},
        {"concurrency", required_argument, NULL, 'k'},
        {"timeout", required_argument, NULL, 'T'},
        {"window", required_argument, NULL, 'w'},
        {"size", required_argument, NULL, 'b'},
        {"copy", no_argument, NULL, 'C'},
        {"proxy-protocol", required_argument, NULL, 'P'},
        {NULL, 0, NULL, 0},
    };
    struct options o = {
        .streams = 1,
        .duration = 2.0,
        .count = 10000,
        .clients = 64,
        .tunnels = 1000,
        .concurrency = 64,
        .timeout = 60.0,
        .window = 32,
        .size = 64,
        .upload = -1,
    };
    if (argc < 2)
        usage();
    const char *mode = argv[1];
    int have_dest = 0;
    optind = 2;
    int option;
    while ((option = getopt_long(argc, argv, "", long_options, NULL)) != -1) {
        switch (option) {
        case 'x':
            if (parse_address(optarg, &o.proxy) < 0)
                usage();
            o.have_proxy = 1;
            break;
        case 'd':
            if (parse_address(optarg, &o.dest) < 0)
                usage();
            have_dest = 1;
            break;
        case 'u':
            o.user = optarg;
            break;
        case 'p':
            o.password = optarg;
            break;
        case 'r':
            o.upload = strcmp(optarg, "up") == 0 ? 1 : strcmp(optarg, "down") == 0 ? 0 : -1;
            break;
        case 's':
            o.streams = atoi(optarg);
            break;
        case 't':
            o.duration = atof(optarg);
            break;
        case 'n':
            o.count = atol(optarg);
            break;
        case 'c':
            o.clients = atoi(optarg);
            break;
        case 'N':
            o.tunnels = atoi(optarg);
            break;
        case 'k':
            o.concurrency = atoi(optarg);
            break;
        case 'T':
            o.timeout = atof(optarg);
            break;
        case 'w':
            o.window = atoi(optarg);
            break;
        case 'b':
            o.size = atoi(optarg);
            break;
        case 'C':
            o.copy = 1;
            break;
        case 'P':
            o.proxy_protocol = atoi(optarg);
            if (o.proxy_protocol != 2)
                usage();
            break;
        default:
            usage();
        }
    }
    signal(SIGPIPE, SIG_IGN);
    for (size_t i = 0; i < sizeof echo_pattern; ++i)
        echo_pattern[i] = (uint8_t)('a' + i % 26);
    struct rlimit limit;
    if (getrlimit(RLIMIT_NOFILE, &limit) == 0) {
        limit.rlim_cur = limit.rlim_max;
        setrlimit(RLIMIT_NOFILE, &limit);
    }
    if (strcmp(mode, "server") == 0)
        return run_server();
    if (!have_dest || o.duration <= 0 || o.streams < 1 || o.clients < 1 || o.tunnels < 1 ||
        o.concurrency < 1 || o.window < 1 || o.size < 8 || o.size > CHUNK - 64 || o.count < 1 ||
        (o.user != NULL) != (o.password != NULL) ||
        (o.user != NULL && (strlen(o.user) > 255 || strlen(o.password) > 255)))
        usage();
    if (strcmp(mode, "bulk") == 0 && o.upload >= 0)
        return run_bulk(&o);
    if (strcmp(mode, "connrate") == 0)
        return run_connrate(&o);
    if (strcmp(mode, "pingpong") == 0)
        return run_pingpong(&o);
    if (strcmp(mode, "idle") == 0)
        return run_idle(&o);
    if (strcmp(mode, "udp") == 0)
        return run_udp(&o);
    if (strcmp(mode, "associations") == 0)
        return run_associations(&o);
    usage();
}
