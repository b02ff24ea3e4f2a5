/*
 * artcast_follow.c: follow one Artcast key with long polls, on plain POSIX
 * sockets, and print each value on its own line (and "gap" before a value
 * that comes after missed datums).
 *
 * Build:  cc -O2 -o artcast_follow artcast_follow.c
 * Run:    ./artcast_follow [-0] [-t SECONDS] [-b SECONDS] HOST PORT KEY [COUNT]
 *
 *   -0          HTTP/1.0, a new connection per request (default: HTTP/1.1
 *               keep-alive, one connection reused)
 *   -t SECONDS  the long poll's timeout= (default 30): 204 after that, ask again
 *   -b SECONDS  the longest back-off after a failure (default 30)
 *   COUNT       stop after that many values (default: never)
 *
 * The response head is read through one 512-byte buffer (a header line
 * longer than that is skipped: none that matters is); a value is read by its
 * Content-Length, up to MAX_VALUE bytes (a longer one is skipped, and said
 * on stderr).  A 4xx is printed on stderr and stops the client (exit 2): it
 * will not get better.  A 503 with Retry-After is obeyed (at most
 * MAX_RETRY_AFTER seconds); connection errors and other 5xx back off
 * exponentially with full jitter, up to -b seconds, and try again forever.
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <netdb.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#ifndef MAX_VALUE
#define MAX_VALUE 4096          /* the largest value read, in bytes */
#endif
#define HEAD_BUFFER 512         /* the buffer the response head is read through */
#define MAX_ID 128              /* Artcast ids are far shorter */
#define MAX_KEY 256
#define MAX_RETRY_AFTER 300     /* seconds: a larger Retry-After is cut to this */

static const char *host, *port;
static char path[3 * MAX_KEY + 16];   /* /artcasts/<key, percent-encoded> */
static int http10 = 0;
static long pollTimeout = 30;
static double maxDelay = 30;

static int sock = -1;
static char buf[HEAD_BUFFER];         /* bytes received and not used yet */
static size_t have = 0, consumed = 0;
static char value[MAX_VALUE + 1];
static char lastId[MAX_ID] = "";      /* empty: from now */

static void sleepFor(double seconds) {
    struct timespec t;
    t.tv_sec = (time_t)seconds;
    t.tv_nsec = (long)((seconds - (double)t.tv_sec) * 1e9);
    while (nanosleep(&t, &t) == -1 && errno == EINTR) {
    }
}

static void disconnect(void) {
    if (sock >= 0) close(sock);
    sock = -1;
    have = consumed = 0;
}

static int connectToServer(void) {
    struct addrinfo hints, *found, *a;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    if (getaddrinfo(host, port, &hints, &found) != 0) return -1;
    for (a = found; a != NULL; a = a->ai_next) {
        sock = socket(a->ai_family, a->ai_socktype, a->ai_protocol);
        if (sock < 0) continue;
        /* A poll is answered within timeout=; past that the link is dead. */
        struct timeval limit = {pollTimeout + 15, 0};
        setsockopt(sock, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit);
        if (connect(sock, a->ai_addr, a->ai_addrlen) == 0) break;
        close(sock);
        sock = -1;
    }
    freeaddrinfo(found);
    return sock < 0 ? -1 : 0;
}

static int sendAll(const char *data, size_t length) {
    while (length > 0) {
        ssize_t n = send(sock, data, length, 0);
        if (n <= 0) return -1;
        data += n;
        length -= (size_t)n;
    }
    return 0;
}

/* Receive more into buf. */
static int fill(void) {
    ssize_t n = recv(sock, buf + have, sizeof buf - have, 0);
    if (n <= 0) return -1;
    have += (size_t)n;
    return 0;
}

/* Drop the line returned last from buf. */
static void dropConsumed(void) {
    memmove(buf, buf + consumed, have - consumed);
    have -= consumed;
    consumed = 0;
}

/* The next line of the head, in place in buf, without CR LF; NULL on error. */
static char *readLine(void) {
    int skipping = 0;
    dropConsumed();
    for (;;) {
        char *end = memchr(buf, '\n', have);
        if (end != NULL) {
            size_t length = (size_t)(end - buf);
            consumed = length + 1;
            if (!skipping) {
                if (length > 0 && buf[length - 1] == '\r') length--;
                buf[length] = '\0';
                return buf;
            }
            skipping = 0;            /* the end of a line too long to keep */
            dropConsumed();
            continue;
        }
        if (have == sizeof buf) {
            skipping = 1;
            have = 0;
        }
        if (fill() < 0) return NULL;
    }
}

/* Read a body of length bytes into value (NUL-terminated); 1 if it was too
   long (then read and thrown away), 0 if read, -1 on error. */
static int readBody(long length) {
    long done = 0;
    dropConsumed();
    while (done < length) {
        char *into = done < MAX_VALUE ? value + done : buf;
        size_t room = done < MAX_VALUE ? (size_t)(MAX_VALUE - done) : sizeof buf;
        if ((long)room > length - done) room = (size_t)(length - done);
        if (have > 0) {               /* bytes that came with the head */
            if (room > have) room = have;
            if (into != buf) memcpy(into, buf, room);
            consumed = room;
            dropConsumed();
        } else {
            ssize_t n = recv(sock, into, room, 0);
            if (n <= 0) return -1;
            room = (size_t)n;
        }
        done += (long)room;
    }
    value[length < MAX_VALUE ? length : MAX_VALUE] = '\0';
    return length > MAX_VALUE ? 1 : 0;
}

static int headerIs(const char *line, const char *name, const char **rest) {
    size_t n = strlen(name);
    if (strncasecmp(line, name, n) != 0 || line[n] != ':') return 0;
    for (*rest = line + n + 1; **rest == ' ' || **rest == '\t'; (*rest)++) {
    }
    return 1;
}

enum { OK, AGAIN, FAILED };

/* One long poll.  OK: a value came; AGAIN: ask again (204, or a value
   skipped); FAILED: back off and reconnect.  *retryAfter is set from a 503. */
static int pollOnce(long *retryAfter) {
    char request[sizeof path + MAX_ID + 256 + 128];
    const char *rest;
    long length = -1, code;
    int gap = 0, closeAfter = http10, answer;
    char id[MAX_ID] = "";

    *retryAfter = -1;
    if (sock < 0 && connectToServer() < 0) return FAILED;
    int n = snprintf(request, sizeof request,
                     "GET %s?timeout=%ld%s%s HTTP/1.%c\r\nHost: %s:%s\r\n"
                     "Accept: application/json\r\n\r\n",
                     path, pollTimeout, lastId[0] ? "&since=" : "", lastId,
                     http10 ? '0' : '1', host, port);
    if (n < 0 || (size_t)n >= sizeof request) return FAILED;
    if (sendAll(request, (size_t)n) < 0) return FAILED;

    char *line = readLine();                     /* HTTP/1.1 200 OK */
    if (line == NULL || strncmp(line, "HTTP/1.", 7) != 0 || strlen(line) < 12) return FAILED;
    code = strtol(line + 9, NULL, 10);
    if (code == 204 || code == 304) length = 0;
    while ((line = readLine()) != NULL && line[0] != '\0') {
        if (headerIs(line, "Content-Length", &rest)) length = strtol(rest, NULL, 10);
        else if (headerIs(line, "Artcast-Id", &rest)) {
            if (strlen(rest) >= MAX_ID) return FAILED;
            strcpy(id, rest);
        } else if (headerIs(line, "Artcast-Gap", &rest)) gap = strcmp(rest, "1") == 0;
        else if (headerIs(line, "Retry-After", &rest)) *retryAfter = strtol(rest, NULL, 10);
        else if (headerIs(line, "Connection", &rest)) closeAfter |= strcasecmp(rest, "close") == 0;
    }
    if (line == NULL || length < 0) return FAILED;   /* answers always have a length */
    int tooLong = readBody(length);
    if (tooLong < 0) return FAILED;
    if (closeAfter) disconnect();

    if (code == 200) {
        if (tooLong) {
            fprintf(stderr, "a value of %ld bytes skipped (more than %d)\n", length, MAX_VALUE);
            answer = AGAIN;
        } else {
            if (gap) printf("gap\n");
            printf("%s\n", value);               /* the JSON value: use it here */
            fflush(stdout);
            answer = OK;
        }
        if (id[0] == '\0') return FAILED;
        strcpy(lastId, id);
        return answer;
    }
    if (code == 204) {                           /* nothing new: ask again */
        if (lastId[0] == '\0') strcpy(lastId, id);
        return AGAIN;
    }
    if (code >= 400 && code < 500) {             /* it will not get better */
        fprintf(stderr, "error %ld: %s\n", code, value);
        exit(2);
    }
    fprintf(stderr, "server answered %ld: %s\n", code, value);
    disconnect();
    return FAILED;
}

static void usage(void) {
    fprintf(stderr, "usage: artcast_follow [-0] [-t SECONDS] [-b SECONDS] HOST PORT KEY [COUNT]\n");
    exit(64);
}

int main(int argc, char **argv) {
    static const char unreserved[] = "-._~/*";
    long count = -1, received = 0, retryAfter;
    unsigned failures = 0;
    int option;
    char *p;

    while ((option = getopt(argc, argv, "0t:b:")) != -1) {
        if (option == '0') http10 = 1;
        else if (option == 't') pollTimeout = strtol(optarg, NULL, 10);
        else if (option == 'b') maxDelay = strtod(optarg, NULL);
        else usage();
    }
    if (argc - optind < 3 || argc - optind > 4 || pollTimeout < 0 || maxDelay <= 0) usage();
    host = argv[optind];
    port = argv[optind + 1];
    if (strlen(argv[optind + 2]) > MAX_KEY) usage();
    if (argc - optind == 4) count = strtol(argv[optind + 3], NULL, 10);
    p = path + sprintf(path, "/artcasts/");
    for (const unsigned char *k = (const unsigned char *)argv[optind + 2]; *k; k++) {
        if ((*k >= 'A' && *k <= 'Z') || (*k >= 'a' && *k <= 'z') || (*k >= '0' && *k <= '9') ||
            strchr(unreserved, *k) != NULL)
            *p++ = (char)*k;
        else
            p += sprintf(p, "%%%02X", *k);
    }
    signal(SIGPIPE, SIG_IGN);                    /* a closed connection is an error, not death */
    srand((unsigned)time(NULL) ^ (unsigned)getpid());

    while (count < 0 || received < count) {
        int result = pollOnce(&retryAfter);
        if (result == OK) received++;
        if (result != FAILED) {
            failures = 0;
            continue;
        }
        disconnect();                            /* start clean on the next attempt */
        if (retryAfter >= 0) {                   /* 503 + Retry-After: the server says when */
            sleepFor(retryAfter < MAX_RETRY_AFTER ? retryAfter : MAX_RETRY_AFTER);
            continue;
        }
        double bound = 0.25 * (double)(1u << (failures < 10 ? failures : 10));
        if (bound > maxDelay) bound = maxDelay;
        failures++;
        sleepFor(bound * rand() / RAND_MAX);     /* exponential back-off, full jitter */
    }
    disconnect();
    return 0;
}
