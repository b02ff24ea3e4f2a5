/*
 * loadgen: the long-poll load generator of the Artcast fan-out benchmark.
 *
 * Holds N keep-alive HTTP/1.1 long polls on one URL, re-polls on each
 * connection as soon as its answer is complete, and records for every answer
 * the latency from the datum's send time (the "t" member of the JSON value
 * the emitter sends, seconds since the epoch) to its arrival, and for every
 * datum (the "n" member) how many clients got it and when the last one did.
 *
 * One process, one thread, epoll, non-blocking sockets.  It is driven by the
 * runner (bench/fanout.py) through one-line commands on stdin, and answers
 * with one JSON object per line on stdout:
 *
 *   (on its own)   {"event":"ready",...}   all N polls connected and sent
 *   STATUS         {"event":"status",...}  counters so far
 *   MARK <first>   {"event":"mark",...}    start a phase: reset the counters;
 *                                          answers with n < first are strays
 *   REPORT <first> <last>
 *                  {"event":"report",...}  the phase's figures for datums
 *                                          first..last
 *   QUIT (or EOF)  exit
 *
 * With --since, a client that got an Artcast-Id header re-polls with
 * ?since=<that id>, so a server that keeps datums loses none.
 *
 * With --nchan, it speaks Nchan's long-poll protocol instead: a client sends
 * the Last-Modified and Etag of its last answer back as If-Modified-Since and
 * If-None-Match, so that Nchan answers with the next message in its buffer
 * (a 304 or 408 answer, a timeout, keeps them).  The body is the JSON the
 * emitter published, read for "t" and "n" as for Artcast.
 *
 * With --mode sse or --mode ws, each connection opens one stream instead and
 * reads it for the rest of the run (reconnecting only if it ends):
 *
 *   sse  GET with Accept: text/event-stream; the body (chunked or not) is
 *        read as Server-Sent Events: an event ends at a blank line, its
 *        first data: line is the answer (Artcast sends the envelope
 *        {"key","id","value"}, Nchan the published body: both carry "t" and
 *        "n"); comment lines (":") are heartbeats; a named event (gap,
 *        shutdown) is not a datum.
 *   ws   an RFC 6455 handshake (a fixed Sec-WebSocket-Key, the 101 and its
 *        Sec-WebSocket-Accept checked), then the server's unmasked frames:
 *        a text frame is an answer, a ping is answered with a (masked) pong,
 *        a close with a close, and the connection ends.
 *
 * Each event or text frame is one delivery, measured as a long-poll answer
 * is.  The bytes of a stream are decoded in place in the connection's fixed
 * buffer (no allocation per event); an event or frame longer than the buffer
 * is counted in bad_bodies and oversized and its connection dropped.
 *
 * Every loop is bounded: the process exits after --max-seconds whatever
 * happens.  Build: gcc -O2 -o bench/bin/loadgen bench/loadgen.c
 */

#define _GNU_SOURCE
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define IN_MAX 8192
#define OUT_MAX 1024
#define ID_MAX 200
#define MAX_DATUMS 20000000L
#define STDIN_TAG UINT32_MAX

enum { ST_IDLE = 0, ST_CONNECTING, ST_SENDING, ST_WAITING };
enum { MODE_LONGPOLL = 0, MODE_SSE, MODE_WS };

/* The RFC 6455 example key, and the Sec-WebSocket-Accept it must get. */
#define WS_KEY "dGhlIHNhbXBsZSBub25jZQ=="
#define WS_ACCEPT "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="

struct conn {
    int fd;
    int state;
    int outlen, outoff;
    int inlen;
    int mask;            /* events registered with epoll */
    int streaming;       /* stream modes: the 200 (SSE) or 101 (WS) was read */
    int chunked;         /* SSE: the body is chunked */
    int evlen;           /* stream modes: decoded bytes at the start of in[] */
    long chunkLeft;      /* SSE chunked: bytes left in this chunk, or
                            CHUNK_SIZE (a size line next), CHUNK_CRLF */
    char since[ID_MAX];  /* last Artcast-Id, "" if none */
    char lastMod[ID_MAX]; /* --nchan: last Last-Modified, "" if none */
    char etag[ID_MAX];    /* --nchan: last Etag, "" if none */
    char out[OUT_MAX];
    char in[IN_MAX];
};

/* configuration */
#define CHUNK_SIZE (-1L)
#define CHUNK_CRLF (-2L)

static const char *host = "127.0.0.1";
static int port = 8888;
static const char *path = "/artcasts/bench/fanout";
static long nclients = 100;
static int useSince = 0;
static int useNchan = 0;
static int mode = MODE_LONGPOLL;
static double connectRate = 3000.0;
static int connectInFlight = 32;
static double maxSeconds = 600.0;

/* state */
static struct conn *conns;
static int epfd;
static long *idleQueue; /* ring of connection indexes to (re)connect */
static long idleHead, idleCount;
static long nconnecting, nwaiting, nestablished, nstreams;
static int readySent;
static struct sockaddr_in addr;

/* phase counters */
static long firstN;
static long deliveries, strays, errors, reconnects, non200, idsSeen, gaps;
static long badBodies, oversized, heartbeats, pongs;
static uint32_t *lat;           /* per-answer latency in microseconds */
static long latLen, latCap;
static uint32_t *dCount;        /* per datum n - firstN: arrivals */
static double *dLast, *dFirst, *dSent; /* per datum: last/first arrival, t */
static long dCap;
static double markReal, markMono, lastArrival;
static struct rusage markUsage;

static double nowReal(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static double nowMono(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static double cpuSeconds(const struct rusage *ru) {
    return ru->ru_utime.tv_sec + ru->ru_utime.tv_usec / 1e6 +
           ru->ru_stime.tv_sec + ru->ru_stime.tv_usec / 1e6;
}

static void die(const char *what) {
    fprintf(stderr, "loadgen: %s: %s\n", what, strerror(errno));
    exit(2);
}

static void *xrealloc(void *p, size_t size) {
    void *q = realloc(p, size);
    if (q == NULL) {
        fprintf(stderr, "loadgen: out of memory\n");
        exit(2);
    }
    return q;
}

static void pushIdle(long i) {
    idleQueue[(idleHead + idleCount) % nclients] = i;
    idleCount++;
}

static long popIdle(void) {
    long i = idleQueue[idleHead];
    idleHead = (idleHead + 1) % nclients;
    idleCount--;
    return i;
}

static void setState(struct conn *c, int state) {
    if (c->state == ST_CONNECTING) nconnecting--;
    if (c->state == ST_WAITING) nwaiting--;
    if (c->state == ST_SENDING || c->state == ST_WAITING) nestablished--;
    c->state = state;
    if (state == ST_CONNECTING) nconnecting++;
    if (state == ST_WAITING) nwaiting++;
    if (state == ST_SENDING || state == ST_WAITING) nestablished++;
}

static void closeConn(long i, int isError) {
    struct conn *c = &conns[i];
    if (c->fd >= 0) {
        epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
    }
    c->fd = -1;
    c->inlen = 0;
    c->evlen = 0;
    if (c->streaming) nstreams--;
    c->streaming = 0;
    setState(c, ST_IDLE);
    if (isError) errors++;
    reconnects++;
    pushIdle(i);
}

static void buildRequest(struct conn *c) {
    int n;
    if (mode == MODE_SSE) {
        n = snprintf(c->out, OUT_MAX,
                     "GET %s HTTP/1.1\r\nHost: %s:%d\r\n"
                     "Accept: text/event-stream\r\nCache-Control: no-cache\r\n\r\n",
                     path, host, port);
    } else if (mode == MODE_WS) {
        n = snprintf(c->out, OUT_MAX,
                     "GET %s HTTP/1.1\r\nHost: %s:%d\r\n"
                     "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Key: " WS_KEY "\r\n"
                     "Sec-WebSocket-Version: 13\r\n\r\n",
                     path, host, port);
    } else if (useNchan && c->lastMod[0]) {
        n = snprintf(c->out, OUT_MAX,
                     "GET %s HTTP/1.1\r\nHost: %s:%d\r\n"
                     "If-Modified-Since: %s\r\nIf-None-Match: %s\r\n\r\n",
                     path, host, port, c->lastMod, c->etag);
    } else if (useSince && c->since[0]) {
        n = snprintf(c->out, OUT_MAX,
                     "GET %s%ssince=%s HTTP/1.1\r\nHost: %s:%d\r\n\r\n", path,
                     strchr(path, '?') ? "&" : "?", c->since, host, port);
    } else {
        n = snprintf(c->out, OUT_MAX, "GET %s HTTP/1.1\r\nHost: %s:%d\r\n\r\n",
                     path, host, port);
    }
    c->outlen = n < OUT_MAX ? n : OUT_MAX - 1;
    c->outoff = 0;
}

/* Watch connection i for `mask` (EPOLLIN or EPOLLOUT) if it is not already. */
static void watch(long i, int mask) {
    struct conn *c = &conns[i];
    struct epoll_event ev;
    if (c->mask == mask) return;
    c->mask = mask;
    ev.events = (uint32_t)mask;
    ev.data.u64 = (uint64_t)i;
    epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
}

/* Write what is left of the request; returns 0, or -1 on error. */
static int flushRequest(long i) {
    struct conn *c = &conns[i];
    while (c->outoff < c->outlen) {
        ssize_t w = write(c->fd, c->out + c->outoff, c->outlen - c->outoff);
        if (w < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                watch(i, EPOLLOUT);
                setState(c, ST_SENDING);
                return 0;
            }
            return -1;
        }
        c->outoff += (int)w;
    }
    watch(i, EPOLLIN);
    setState(c, ST_WAITING);
    return 0;
}

static void startConnect(long i) {
    struct conn *c = &conns[i];
    struct epoll_event ev;
    int one = 1;
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) die("socket (raise the file limit?)");
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    c->inlen = 0;
    c->evlen = 0;
    c->chunked = 0;
    c->chunkLeft = CHUNK_SIZE;
    c->mask = EPOLLOUT;
    ev.events = EPOLLOUT;
    ev.data.u64 = (uint64_t)i;
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, c->fd, &ev) < 0) die("epoll_ctl");
    if (connect(c->fd, (struct sockaddr *)&addr, sizeof(addr)) < 0 &&
        errno != EINPROGRESS) {
        closeConn(i, 1);
        return;
    }
    setState(c, ST_CONNECTING);
}

/* Send the next request on connection i (which has no answer pending). */
static void repoll(long i) {
    setState(&conns[i], ST_SENDING);
    buildRequest(&conns[i]);
    if (flushRequest(i) < 0) closeConn(i, 1);
}

static void onConnected(long i) {
    struct conn *c = &conns[i];
    int err = 0;
    socklen_t len = sizeof(err);
    getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err != 0) {
        closeConn(i, 1);
        return;
    }
    repoll(i);
}

static int ensureDatum(long idx) {
    if (idx < 0 || idx >= MAX_DATUMS) return 0;
    if (idx >= dCap) {
        long cap = dCap ? dCap : 1024;
        while (cap <= idx) cap *= 2;
        if (cap > MAX_DATUMS) cap = MAX_DATUMS;
        dCount = xrealloc(dCount, cap * sizeof(*dCount));
        dLast = xrealloc(dLast, cap * sizeof(*dLast));
        dFirst = xrealloc(dFirst, cap * sizeof(*dFirst));
        dSent = xrealloc(dSent, cap * sizeof(*dSent));
        memset(dCount + dCap, 0, (cap - dCap) * sizeof(*dCount));
        dCap = cap;
    }
    return 1;
}

/* Find `"name":` in body and return a pointer just past it, or NULL. */
static const char *findMember(const char *body, const char *end,
                              const char *name) {
    size_t nl = strlen(name);
    const char *p = body;
    while (p + nl + 2 < end) {
        const char *q = memchr(p, '"', end - p);
        if (q == NULL || q + nl + 2 >= end) return NULL;
        if (memcmp(q + 1, name, nl) == 0 && q[nl + 1] == '"') {
            const char *r = q + nl + 2;
            while (r < end && (*r == ' ' || *r == '\t')) r++;
            if (r < end && *r == ':') {
                r++;
                while (r < end && (*r == ' ' || *r == '\t')) r++;
                return r;
            }
        }
        p = q + 1;
    }
    return NULL;
}

static void recordAnswer(const char *body, long blen) {
    char tmp[512];
    const char *end, *pt, *pn;
    double t, arrival;
    long n;
    if (blen >= (long)sizeof(tmp)) blen = sizeof(tmp) - 1;
    memcpy(tmp, body, blen);
    tmp[blen] = 0;
    end = tmp + blen;
    pt = findMember(tmp, end, "t");
    pn = findMember(tmp, end, "n");
    if (pt == NULL || pn == NULL) {
        badBodies++;
        return;
    }
    t = strtod(pt, NULL);
    n = strtol(pn, NULL, 10);
    arrival = nowReal();
    if (n < firstN) {
        strays++;
        return;
    }
    deliveries++;
    lastArrival = arrival;
    if (latLen == latCap) {
        latCap = latCap ? latCap * 2 : 65536;
        lat = xrealloc(lat, latCap * sizeof(*lat));
    }
    {
        double us = (arrival - t) * 1e6;
        if (us < 0) us = 0;
        if (us > 4e9) us = 4e9;
        lat[latLen++] = (uint32_t)us;
    }
    if (ensureDatum(n - firstN)) {
        long k = n - firstN;
        if (dCount[k] == 0) {
            dFirst[k] = arrival;
            dSent[k] = t;
        }
        dCount[k]++;
        dLast[k] = arrival;
    }
}

/*
 * Parse a complete response at the start of c->in, if there is one.
 * Returns 1 if one was consumed, 0 if more bytes are needed, -1 on error,
 * 2 if it was consumed and the server will close.
 */
static int parseResponse(struct conn *c) {
    char *hdrEnd, *line, *next;
    long hlen, clen = -1, total;
    int status, closeAfter = 0, haveId = 0;
    c->in[c->inlen < IN_MAX ? c->inlen : IN_MAX - 1] = 0;
    hdrEnd = memmem(c->in, c->inlen, "\r\n\r\n", 4);
    if (hdrEnd == NULL) return c->inlen >= IN_MAX - 1 ? -1 : 0;
    hlen = hdrEnd - c->in + 4;
    if (sscanf(c->in, "HTTP/%*d.%*d %d", &status) != 1) return -1;
    if (strncmp(c->in, "HTTP/1.0", 8) == 0) closeAfter = 1;
    line = strstr(c->in, "\r\n");
    while (line != NULL && line + 2 < hdrEnd) {
        char *name = line + 2, *colon, *value;
        next = strstr(name, "\r\n");
        if (next == NULL) break;
        colon = memchr(name, ':', next - name);
        if (colon != NULL) {
            size_t nlen = colon - name;
            value = colon + 1;
            while (value < next && (*value == ' ' || *value == '\t')) value++;
            if (nlen == 14 && strncasecmp(name, "content-length", 14) == 0) {
                clen = strtol(value, NULL, 10);
            } else if (nlen == 10 && strncasecmp(name, "connection", 10) == 0) {
                if (strncasecmp(value, "close", 5) == 0) closeAfter = 1;
                if (strncasecmp(value, "keep-alive", 10) == 0) closeAfter = 0;
            } else if (nlen == 10 && strncasecmp(name, "artcast-id", 10) == 0) {
                size_t vlen = next - value, k, o = 0;
                haveId = 1;
                /* keep only URL-safe characters, percent-encode the rest */
                for (k = 0; k < vlen && o + 4 < ID_MAX; k++) {
                    unsigned char ch = (unsigned char)value[k];
                    if (isalnum(ch) || ch == '-' || ch == '_' || ch == '.' ||
                        ch == '~') {
                        c->since[o++] = (char)ch;
                    } else if (ch != ' ' && ch != '\t') {
                        o += snprintf(c->since + o, ID_MAX - o, "%%%02X", ch);
                    }
                }
                c->since[o] = 0;
            } else if (useNchan && status == 200 &&
                       ((nlen == 13 && strncasecmp(name, "last-modified", 13) == 0) ||
                        (nlen == 4 && strncasecmp(name, "etag", 4) == 0))) {
                /* kept verbatim (printable characters only) to send back */
                char *into = nlen == 4 ? c->etag : c->lastMod;
                size_t vlen = next - value, k, o = 0;
                if (nlen == 4) haveId = 1;
                for (k = 0; k < vlen && o + 1 < ID_MAX; k++) {
                    unsigned char ch = (unsigned char)value[k];
                    if (ch >= 0x20 && ch < 0x7f) into[o++] = (char)ch;
                }
                into[o] = 0;
            } else if (nlen == 11 && strncasecmp(name, "artcast-gap", 11) == 0) {
                gaps++;
            } else if (nlen == 17 &&
                       strncasecmp(name, "transfer-encoding", 17) == 0) {
                return -1; /* chunked answers are not expected */
            }
        }
        line = next;
    }
    if (clen < 0) {
        if (status == 204 || status == 304) clen = 0;
        else return -1; /* body delimited by close: not supported */
    }
    total = hlen + clen;
    if (total > IN_MAX - 1) return -1;
    if (c->inlen < total) return 0;
    if (status == 200) {
        if (haveId) idsSeen++;
        recordAnswer(c->in + hlen, clen);
    } else {
        non200++;
    }
    memmove(c->in, c->in + total, c->inlen - total);
    c->inlen -= (int)total;
    return closeAfter ? 2 : 1;
}

/* Read what the connection has into its buffer: 1 when something came, 0 when
 * nothing was there yet, -1 when the connection ended (closed here). */
static int readMore(long i) {
    struct conn *c = &conns[i];
    ssize_t r = read(c->fd, c->in + c->inlen, IN_MAX - 1 - c->inlen);
    if (r < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
        closeConn(i, 1);
        return -1;
    }
    if (r == 0) {
        closeConn(i, 0);
        return -1;
    }
    c->inlen += (int)r;
    return 1;
}

static void onReadable(long i) {
    struct conn *c = &conns[i];
    int p;
    if (readMore(i) <= 0) return;
    p = parseResponse(c);
    if (p == 0) return;
    if (p < 0 || p == 2) {
        closeConn(i, p < 0);
        return;
    }
    repoll(i);
}

/* ---- streams (--mode sse, --mode ws) ---- */

/* Write what is queued in c->out (a stream's pongs and closes); 0 or -1. */
static int flushOut(long i) {
    struct conn *c = &conns[i];
    while (c->outoff < c->outlen) {
        ssize_t w = write(c->fd, c->out + c->outoff, c->outlen - c->outoff);
        if (w < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                watch(i, EPOLLIN | EPOLLOUT);
                return 0;
            }
            return -1;
        }
        c->outoff += (int)w;
    }
    c->outoff = c->outlen = 0;
    watch(i, EPOLLIN);
    return 0;
}

/*
 * Queue a masked control frame (a pong or a close, payload <= 125 bytes)
 * and write it; a frame that does not fit behind what is still queued is
 * left out (a later pong answers a later ping).  Returns 0 or -1.
 */
static int sendControl(long i, int opcode, const char *payload, long len) {
    static const unsigned char key[4] = {0x37, 0xfa, 0x21, 0x3d};
    struct conn *c = &conns[i];
    long k;
    if (len > 125) len = 0;
    if (c->outoff == c->outlen) c->outoff = c->outlen = 0;
    if (c->outlen + 6 + len > OUT_MAX) return 0;
    c->out[c->outlen++] = (char)(0x80 | opcode);
    c->out[c->outlen++] = (char)(0x80 | len);
    memcpy(c->out + c->outlen, key, 4);
    c->outlen += 4;
    for (k = 0; k < len; k++) c->out[c->outlen++] = (char)(payload[k] ^ key[k & 3]);
    if (opcode == 0xA) pongs++;
    return flushOut(i);
}

/*
 * The head of a stream's answer at the start of c->in: 200 for SSE, 101
 * with the right Sec-WebSocket-Accept for WS.  Returns 1 when read (and
 * removed from the buffer), 0 if more bytes are needed, -1 if refused.
 */
static int parseStreamHead(struct conn *c) {
    char *hdrEnd, *line, *next;
    long hlen;
    int status, accepted = 0;
    hdrEnd = memmem(c->in, c->inlen, "\r\n\r\n", 4);
    if (hdrEnd == NULL) return c->inlen >= IN_MAX - 1 ? -1 : 0;
    hlen = hdrEnd - c->in + 4;
    *hdrEnd = 0; /* the head becomes a string; it is removed below */
    if (sscanf(c->in, "HTTP/%*d.%*d %d", &status) != 1) return -1;
    if (status != (mode == MODE_WS ? 101 : 200)) {
        non200++;
        return -1;
    }
    line = strstr(c->in, "\r\n");
    while (line != NULL) {
        char *name = line + 2, *colon, *value;
        size_t nlen;
        next = strstr(name, "\r\n");
        colon = strchr(name, ':');
        if (colon != NULL && (next == NULL || colon < next)) {
            nlen = colon - name;
            value = colon + 1;
            while (*value == ' ' || *value == '\t') value++;
            if (nlen == 17 && strncasecmp(name, "transfer-encoding", 17) == 0 &&
                strncasecmp(value, "chunked", 7) == 0) {
                c->chunked = 1;
            } else if (nlen == 20 &&
                       strncasecmp(name, "sec-websocket-accept", 20) == 0 &&
                       strncmp(value, WS_ACCEPT, strlen(WS_ACCEPT)) == 0) {
                accepted = 1;
            }
        }
        line = next;
    }
    if (mode == MODE_WS && !accepted) return -1;
    memmove(c->in, c->in + hlen, c->inlen - hlen);
    c->inlen -= (int)hlen;
    c->evlen = mode == MODE_SSE && !c->chunked ? c->inlen : 0;
    c->chunkLeft = CHUNK_SIZE;
    c->streaming = 1;
    nstreams++;
    return 1;
}

/*
 * Decode the chunked framing of an SSE body in place: the raw bytes from
 * c->evlen on are moved down after the decoded ones.  Returns 0, -1 on a
 * framing error, 2 at the last chunk.
 */
static int decodeChunks(struct conn *c) {
    int raw = c->evlen, ret = 0;
    if (!c->chunked) {
        c->evlen = c->inlen;
        return 0;
    }
    while (raw < c->inlen) {
        if (c->chunkLeft > 0) {
            long k = c->inlen - raw;
            if (k > c->chunkLeft) k = c->chunkLeft;
            if (c->evlen != raw) memmove(c->in + c->evlen, c->in + raw, k);
            c->evlen += (int)k;
            raw += (int)k;
            c->chunkLeft -= k;
            if (c->chunkLeft == 0) c->chunkLeft = CHUNK_CRLF;
        } else if (c->chunkLeft == CHUNK_CRLF) {
            if (c->inlen - raw < 2) break;
            if (c->in[raw] != '\r' || c->in[raw + 1] != '\n') return -1;
            raw += 2;
            c->chunkLeft = CHUNK_SIZE;
        } else {
            char *nl = memchr(c->in + raw, '\n', c->inlen - raw), *endp;
            long size;
            if (nl == NULL) {
                if (c->inlen - raw > 64) return -1;
                break;
            }
            size = strtol(c->in + raw, &endp, 16);
            if (endp == c->in + raw || size < 0 || size > 0x7fffffffL) return -1;
            raw = (int)(nl - c->in) + 1;
            if (size == 0) {
                ret = 2;
                break;
            }
            c->chunkLeft = size;
        }
    }
    if (raw > c->evlen) {
        memmove(c->in + c->evlen, c->in + raw, c->inlen - raw);
        c->inlen -= raw - c->evlen;
    }
    return ret;
}

/* Dispatch the complete SSE events in c->in[0..evlen) and remove them. */
static void sseEvents(struct conn *c) {
    int pos = 0, start = 0, dataOff = -1, dataLen = 0, named = 0, comments = 0;
    while (pos < c->evlen) {
        char *nl = memchr(c->in + pos, '\n', c->evlen - pos);
        int end, len;
        if (nl == NULL) break;
        end = (int)(nl - c->in);
        len = end - pos;
        if (len > 0 && c->in[pos + len - 1] == '\r') len--;
        if (len == 0) {
            /* a blank line: the event is complete */
            if (dataOff >= 0 && !named) recordAnswer(c->in + dataOff, dataLen);
            heartbeats += comments;
            dataOff = -1;
            dataLen = named = comments = 0;
            start = end + 1;
        } else if (c->in[pos] == ':') {
            comments++;
        } else if (len >= 5 && memcmp(c->in + pos, "data:", 5) == 0) {
            if (dataOff < 0) {
                dataOff = pos + 5;
                if (dataOff < pos + len && c->in[dataOff] == ' ') dataOff++;
                dataLen = pos + len - dataOff;
            }
        } else if (len >= 6 && memcmp(c->in + pos, "event:", 6) == 0) {
            int v = pos + 6, vlen;
            if (v < pos + len && c->in[v] == ' ') v++;
            vlen = pos + len - v;
            if (!(vlen == 7 && memcmp(c->in + v, "message", 7) == 0)) named = 1;
            if (vlen == 3 && memcmp(c->in + v, "gap", 3) == 0) gaps++;
        }
        pos = end + 1;
    }
    if (start > 0) {
        memmove(c->in, c->in + start, c->inlen - start);
        c->inlen -= start;
        c->evlen -= start;
    }
}

/*
 * Handle the complete WebSocket frames at the start of c->in.  Returns 0,
 * -1 on a protocol error or an oversized frame, 2 after a close frame.
 */
static int wsFrames(long i) {
    struct conn *c = &conns[i];
    int pos = 0, ret = 0;
    while (ret == 0 && c->inlen - pos >= 2) {
        unsigned char *p = (unsigned char *)c->in + pos;
        long avail = c->inlen - pos, hl = 2, k;
        uint64_t len = p[1] & 0x7f;
        int opcode = p[0] & 0x0f, fin = (p[0] & 0x80) != 0;
        const char *payload;
        if (p[1] & 0x80) return -1; /* a server's frames are not masked */
        if (len == 126) {
            if (avail < 4) break;
            len = ((uint64_t)p[2] << 8) | p[3];
            hl = 4;
        } else if (len == 127) {
            if (avail < 10) break;
            for (len = 0, k = 0; k < 8; k++) len = (len << 8) | p[2 + k];
            hl = 10;
        }
        if (len > (uint64_t)(IN_MAX - 1 - hl)) {
            badBodies++;
            oversized++;
            return -1;
        }
        if ((uint64_t)avail < hl + len) break;
        payload = c->in + pos + hl;
        switch (opcode) {
        case 0x1: /* text */
            if (!fin) { /* fragmented messages are not expected */
                badBodies++;
                return -1;
            }
            recordAnswer(payload, (long)len);
            break;
        case 0x9: /* ping */
            heartbeats++;
            if (sendControl(i, 0xA, payload, (long)len) < 0) return -1;
            break;
        case 0xA: /* pong */
            break;
        case 0x8: /* close: answer it, then end */
            sendControl(i, 0x8, payload, len >= 2 ? 2 : 0);
            ret = 2;
            break;
        default: /* binary or continuation */
            badBodies++;
            return -1;
        }
        pos += (int)(hl + len);
    }
    if (pos > 0) {
        memmove(c->in, c->in + pos, c->inlen - pos);
        c->inlen -= pos;
    }
    return ret;
}

static void onStreamReadable(long i) {
    struct conn *c = &conns[i];
    int p = 0;
    if (c->inlen >= IN_MAX - 1) { /* an event longer than the buffer */
        badBodies++;
        oversized++;
        closeConn(i, 1);
        return;
    }
    if (readMore(i) <= 0) return;
    if (!c->streaming) {
        p = parseStreamHead(c);
        if (p <= 0) {
            if (p < 0) closeConn(i, 1);
            return;
        }
    }
    if (mode == MODE_SSE) {
        p = decodeChunks(c);
        if (p >= 0) sseEvents(c);
    } else {
        p = wsFrames(i);
    }
    if (p != 0) {
        closeConn(i, p < 0);
        return;
    }
    if (c->inlen >= IN_MAX - 1) {
        badBodies++;
        oversized++;
        closeConn(i, 1);
    }
}

static void resetPhase(long first) {
    firstN = first;
    deliveries = strays = errors = reconnects = non200 = idsSeen = gaps = 0;
    badBodies = oversized = heartbeats = pongs = 0;
    latLen = 0;
    if (dCap) memset(dCount, 0, dCap * sizeof(*dCount));
    markReal = nowReal();
    markMono = nowMono();
    lastArrival = 0;
    getrusage(RUSAGE_SELF, &markUsage);
}

static int cmpU32(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static int cmpDouble(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* The index of the nearest-rank percentile p of n sorted values. */
static long rankOf(long n, double p) {
    long k = (long)ceil(p * n) - 1;
    if (k < 0) k = 0;
    if (k >= n) k = n - 1;
    return k;
}

static double pctU32(const uint32_t *v, long n, double p) {
    return n == 0 ? -1.0 : (double)v[rankOf(n, p)];
}

static double pctDouble(const double *v, long n, double p) {
    return n == 0 ? -1.0 : (double)v[rankOf(n, p)];
}

static void printNumber(const char *name, double v, const char *sep) {
    if (v < 0 || isnan(v)) printf("\"%s\":null%s", name, sep);
    else printf("\"%s\":%.6g%s", name, v, sep);
}

static const char *modeName(void) {
    return mode == MODE_SSE ? "sse" : mode == MODE_WS ? "ws" : "longpoll";
}

static void report(long first, long last) {
    struct rusage now;
    double cpu, wall, window, sum = 0;
    long sent = last - first + 1, k, seen = 0, complete = 0, pairs = 0;
    double *comp = NULL, *compAny = NULL, firstSend = 0;
    long ncomp = 0, nany = 0;
    getrusage(RUSAGE_SELF, &now);
    cpu = cpuSeconds(&now) - cpuSeconds(&markUsage);
    wall = nowMono() - markMono;
    if (sent < 0) sent = 0;
    if (sent > 0) {
        comp = xrealloc(NULL, sent * sizeof(double));
        compAny = xrealloc(NULL, sent * sizeof(double));
    }
    for (k = 0; k < sent; k++) {
        long idx = first + k - firstN;
        if (idx < 0 || idx >= dCap || dCount[idx] == 0) continue;
        seen++;
        pairs += dCount[idx];
        if (firstSend == 0 || dSent[idx] < firstSend) firstSend = dSent[idx];
        compAny[nany++] = (dLast[idx] - dSent[idx]) * 1e3;
        if (dCount[idx] >= (uint32_t)nclients) {
            complete++;
            comp[ncomp++] = (dLast[idx] - dSent[idx]) * 1e3;
        }
    }
    /* the delivery window: first datum sent to last answer received */
    window = (lastArrival > 0 && firstSend > 0) ? lastArrival - firstSend : 0;
    qsort(lat, latLen, sizeof(*lat), cmpU32);
    if (ncomp) qsort(comp, ncomp, sizeof(double), cmpDouble);
    if (nany) qsort(compAny, nany, sizeof(double), cmpDouble);
    for (k = 0; k < latLen; k++) sum += lat[k];

    printf("{\"event\":\"report\",\"first\":%ld,\"last\":%ld,\"clients\":%ld,"
           "\"established\":%ld,\"waiting\":%ld,\"mode\":\"%s\",\"streams\":%ld,"
           "\"oversized\":%ld,\"heartbeats\":%ld,\"pongs\":%ld,",
           first, last, nclients, nestablished, nwaiting, modeName(), nstreams,
           oversized, heartbeats, pongs);
    printf("\"deliveries\":%ld,\"strays\":%ld,\"errors\":%ld,\"reconnects\":%ld,"
           "\"non200\":%ld,\"bad_bodies\":%ld,\"ids_seen\":%ld,\"gaps\":%ld,",
           deliveries, strays, errors, reconnects, non200, badBodies, idsSeen,
           gaps);
    printNumber("wall_s", wall, ",");
    printNumber("window_s", window, ",");
    printNumber("deliveries_per_s", window > 0 ? deliveries / window : -1, ",");
    printf("\"latency_ms\":{");
    printNumber("p50", pctU32(lat, latLen, 0.50) / 1e3, ",");
    printNumber("p90", pctU32(lat, latLen, 0.90) / 1e3, ",");
    printNumber("p99", pctU32(lat, latLen, 0.99) / 1e3, ",");
    printNumber("max", latLen ? lat[latLen - 1] / 1e3 : -1, ",");
    printNumber("mean", latLen ? sum / latLen / 1e3 : -1, "},");
    printf("\"datums\":{\"sent\":%ld,\"seen\":%ld,\"complete\":%ld,"
           "\"pairs\":%ld,",
           sent, seen, complete, pairs);
    printNumber("fraction_delivered",
                sent > 0 ? (double)pairs / ((double)sent * nclients) : -1, ",");
    printNumber("fraction_complete", sent > 0 ? (double)complete / sent : -1,
                "},");
    printf("\"completion_ms\":{");
    printNumber("p50", pctDouble(comp, ncomp, 0.50), ",");
    printNumber("p99", pctDouble(comp, ncomp, 0.99), ",");
    printNumber("max", ncomp ? comp[ncomp - 1] : -1, "},");
    printf("\"completion_any_ms\":{");
    printNumber("p50", pctDouble(compAny, nany, 0.50), ",");
    printNumber("p99", pctDouble(compAny, nany, 0.99), ",");
    printNumber("max", nany ? compAny[nany - 1] : -1, "},");
    printNumber("loadgen_cpu_s", cpu, ",");
    printNumber("loadgen_cpu_frac", wall > 0 ? cpu / wall : -1, "}\n");
    fflush(stdout);
    free(comp);
    free(compAny);
}

static void status(void) {
    printf("{\"event\":\"status\",\"clients\":%ld,\"established\":%ld,"
           "\"waiting\":%ld,\"connecting\":%ld,\"deliveries\":%ld,"
           "\"errors\":%ld,\"reconnects\":%ld,\"streams\":%ld,\"bad_bodies\":%ld,"
           "\"oversized\":%ld,\"heartbeats\":%ld,\"pongs\":%ld,\"strays\":%ld}\n",
           nclients, nestablished, nwaiting, nconnecting, deliveries, errors,
           reconnects, nstreams, badBodies, oversized, heartbeats, pongs, strays);
    fflush(stdout);
}

/* Handle complete command lines from stdin; returns 0 to quit. */
static int onStdin(void) {
    static char buf[4096];
    static size_t len;
    ssize_t r = read(0, buf + len, sizeof(buf) - 1 - len);
    char *nl;
    if (r <= 0) return 0;
    len += (size_t)r;
    buf[len] = 0;
    while ((nl = memchr(buf, '\n', len)) != NULL) {
        long a = 0, b = 0;
        *nl = 0;
        if (strncmp(buf, "QUIT", 4) == 0) return 0;
        if (strncmp(buf, "STATUS", 6) == 0) status();
        else if (sscanf(buf, "MARK %ld", &a) == 1) {
            resetPhase(a);
            printf("{\"event\":\"mark\",\"first\":%ld}\n", a);
            fflush(stdout);
        } else if (sscanf(buf, "REPORT %ld %ld", &a, &b) == 2) {
            report(a, b);
        } else {
            fprintf(stderr, "loadgen: unknown command: %s\n", buf);
        }
        len -= (size_t)(nl + 1 - buf);
        memmove(buf, nl + 1, len);
    }
    if (len >= sizeof(buf) - 1) len = 0;
    return 1;
}

static void usage(void) {
    fprintf(stderr,
            "usage: loadgen --port P --clients N [--host 127.0.0.1]\n"
            "               [--path /artcasts/bench/fanout] [--since | --nchan]\n"
            "               [--mode longpoll|sse|ws]\n"
            "               [--connect-rate 3000] [--connect-in-flight 32]\n"
            "               [--max-seconds 600]\n");
    exit(2);
}

int main(int argc, char **argv) {
    struct rlimit rl;
    struct epoll_event ev, *events;
    double tokens = 0, lastTick, start;
    int i, maxEvents = 1024;

    for (i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--since") == 0) { useSince = 1; continue; }
        if (strcmp(a, "--nchan") == 0) { useNchan = 1; continue; }
        if (v == NULL) usage();
        if (strcmp(a, "--host") == 0) host = v;
        else if (strcmp(a, "--port") == 0) port = atoi(v);
        else if (strcmp(a, "--path") == 0) path = v;
        else if (strcmp(a, "--mode") == 0) {
            if (strcmp(v, "longpoll") == 0) mode = MODE_LONGPOLL;
            else if (strcmp(v, "sse") == 0) mode = MODE_SSE;
            else if (strcmp(v, "ws") == 0) mode = MODE_WS;
            else usage();
        }
        else if (strcmp(a, "--clients") == 0) nclients = atol(v);
        else if (strcmp(a, "--connect-rate") == 0) connectRate = atof(v);
        else if (strcmp(a, "--connect-in-flight") == 0) connectInFlight = atoi(v);
        else if (strcmp(a, "--max-seconds") == 0) maxSeconds = atof(v);
        else usage();
        i++;
    }
    if (nclients < 1 || port < 1 || port > 65535) usage();

    /* Raise the soft file limit to the hard one; say so if too low. */
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        if ((long)rl.rlim_cur < nclients + 16) {
            fprintf(stderr, "loadgen: file limit %ld too low for %ld clients\n",
                    (long)rl.rlim_cur, nclients);
            return 2;
        }
    }

    memset(&addr, 0, sizeof(addr));
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, host, &addr.sin_addr) != 1) {
        fprintf(stderr, "loadgen: --host must be an IPv4 address\n");
        return 2;
    }

    conns = calloc((size_t)nclients, sizeof(*conns));
    idleQueue = calloc((size_t)nclients, sizeof(*idleQueue));
    events = calloc((size_t)maxEvents, sizeof(*events));
    if (conns == NULL || idleQueue == NULL || events == NULL) die("calloc");
    epfd = epoll_create1(EPOLL_CLOEXEC);
    if (epfd < 0) die("epoll_create1");
    fcntl(0, F_SETFL, fcntl(0, F_GETFL) | O_NONBLOCK);
    ev.events = EPOLLIN;
    ev.data.u64 = STDIN_TAG;
    epoll_ctl(epfd, EPOLL_CTL_ADD, 0, &ev);

    for (long k = 0; k < nclients; k++) {
        conns[k].fd = -1;
        pushIdle(k);
    }
    resetPhase(0);
    start = lastTick = nowMono();

    for (;;) {
        double now = nowMono();
        int n, timeout;
        if (now - start > maxSeconds) {
            fprintf(stderr, "loadgen: --max-seconds reached, exiting\n");
            break;
        }
        /* Pace new connections: a token bucket and a cap on handshakes. */
        tokens += (now - lastTick) * connectRate;
        if (tokens > connectInFlight) tokens = connectInFlight;
        lastTick = now;
        while (idleCount > 0 && tokens >= 1 && nconnecting < connectInFlight) {
            startConnect(popIdle());
            tokens -= 1;
        }
        if (!readySent &&
            (mode == MODE_LONGPOLL ? nwaiting : nstreams) == nclients) {
            readySent = 1;
            printf("{\"event\":\"ready\",\"clients\":%ld,\"seconds\":%.3f,"
                   "\"errors\":%ld}\n",
                   nclients, nowMono() - start, errors);
            fflush(stdout);
        }
        timeout = idleCount > 0 ? 2 : 100;
        n = epoll_wait(epfd, events, maxEvents, timeout);
        if (n < 0) {
            if (errno == EINTR) continue;
            die("epoll_wait");
        }
        for (i = 0; i < n; i++) {
            uint64_t tag = events[i].data.u64;
            struct conn *c;
            if (tag == STDIN_TAG) {
                if (!onStdin()) goto done;
                continue;
            }
            c = &conns[tag];
            if (c->fd < 0) continue;
            if (c->state == ST_CONNECTING) {
                onConnected((long)tag);
            } else if (c->state == ST_SENDING) {
                if (events[i].events & (EPOLLERR | EPOLLHUP)) closeConn((long)tag, 1);
                else if (flushRequest((long)tag) < 0) closeConn((long)tag, 1);
            } else if (c->state == ST_WAITING && mode != MODE_LONGPOLL) {
                if ((events[i].events & EPOLLOUT) && flushOut((long)tag) < 0) {
                    closeConn((long)tag, 1);
                    continue;
                }
                if (events[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))
                    onStreamReadable((long)tag);
            } else if (c->state == ST_WAITING) {
                onReadable((long)tag);
            }
        }
    }
done:
    return 0;
}
