"""
artcast_follow.py: follow one Artcast key with long polls and print each
value on its own line (and "gap" before a value that comes after missed
datums).  Only socket, json, time (and sys, random): it runs unchanged on
MicroPython (with network set up first) and on CPython:

    python3 artcast_follow.py [-0] [-t SECONDS] [-b SECONDS] HOST PORT KEY [COUNT]

    -0          HTTP/1.0, a new connection per request (default: HTTP/1.1
                keep-alive, one connection reused)
    -t SECONDS  the long poll's timeout= (default 30): 204 after that, ask again
    -b SECONDS  the longest back-off after a failure (default 30)
    COUNT       stop after that many values (default: never)

A 4xx is printed on stderr and stops the client (exit 2): it will not get
better.  A 503 with Retry-After is obeyed (at most MAX_RETRY_AFTER seconds);
connection errors and other 5xx back off exponentially with full jitter, up
to -b seconds, and try again forever.  On a board, call
follow(host, port, key, onValue) from main.py.
"""

import json
import random
import socket
import sys
import time

MAX_VALUE = 4096  # the largest value read, in bytes
MAX_LINE = 512  # a longer header line is skipped: none that matters is
MAX_RETRY_AFTER = 300  # seconds: a larger Retry-After is cut to this
UNRESERVED = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~/*"


class Failed(Exception):
    """A connection error or a bad answer: back off and reconnect."""


class Stop(Exception):
    """A 4xx: asking again will not help."""


def say(text, stream=None):
    stream = stream or sys.stdout
    stream.write(text + "\n")
    if hasattr(stream, "flush"):
        stream.flush()


def quote(key):
    out = ""
    for byte in key.encode("utf-8"):
        out += chr(byte) if chr(byte) in UNRESERVED else "%%%02X" % byte
    return out


class Connection:
    """One HTTP connection, read through a small buffer."""

    def __init__(self, host, port, timeout):
        address = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)[0][-1]
        self.sock = socket.socket()
        # A poll is answered within timeout=; past that the link is dead.
        self.sock.settimeout(timeout + 15)
        self.pending = b""
        try:
            self.sock.connect(address)
        except OSError:
            self.close()
            raise

    def close(self):
        self.sock.close()

    def send(self, data):
        while data:
            sent = self.sock.send(data)
            if not sent:
                raise Failed("send")
            data = data[sent:]

    def more(self):
        data = self.sock.recv(MAX_LINE)
        if not data:
            raise Failed("closed")
        self.pending += data

    def readLine(self):
        """The next head line, without CR LF; a line longer than MAX_LINE is skipped."""
        skipping = False
        while True:
            end = self.pending.find(b"\n")
            if end >= 0:
                line, self.pending = self.pending[:end], self.pending[end + 1:]
                if not skipping:
                    return line.rstrip(b"\r").decode("utf-8", "replace")
                skipping = False
                continue
            if len(self.pending) >= MAX_LINE:
                skipping, self.pending = True, b""
            self.more()

    def readBody(self, length):
        """Exactly length bytes; None if more than MAX_VALUE (read and thrown away)."""
        kept = b""
        left = length
        while left > 0:
            if not self.pending:
                self.more()
            piece, self.pending = self.pending[:left], self.pending[left:]
            left -= len(piece)
            if len(kept) < MAX_VALUE:
                kept += piece
        return kept if length <= MAX_VALUE else None


class Follower:
    def __init__(self, host, port, key, http10=False, timeout=30, maxDelay=30.0):
        self.host, self.port = host, port
        self.path = "/artcasts/" + quote(key)
        self.http10, self.timeout, self.maxDelay = http10, timeout, maxDelay
        self.connection = None
        self.lastId = ""  # empty: from now

    def disconnect(self):
        if self.connection is not None:
            self.connection.close()
            self.connection = None

    def pollOnce(self, onValue):
        """One long poll: True if a value came, False to ask again."""
        if self.connection is None:
            self.connection = Connection(self.host, self.port, self.timeout)
        c = self.connection
        query = "?timeout=%d" % self.timeout
        if self.lastId:
            query += "&since=" + self.lastId  # ids need no encoding
        c.send(("GET %s%s HTTP/1.%s\r\nHost: %s:%s\r\nAccept: application/json\r\n\r\n" % (
            self.path, query, "0" if self.http10 else "1", self.host, self.port)).encode())
        status = c.readLine()  # HTTP/1.1 200 OK
        if not status.startswith("HTTP/1.") or len(status) < 12:
            raise Failed("not HTTP: %r" % status[:40])
        code = int(status[9:12])
        headers = {}
        line = c.readLine()
        while line:
            name, colon, value = line.partition(":")
            if colon:
                headers[name.strip().lower()] = value.strip()
            line = c.readLine()
        if code in (204, 304):
            length = 0
        elif "content-length" in headers:
            length = int(headers["content-length"])
        else:
            raise Failed("no Content-Length")  # answers always have one
        body = c.readBody(length)
        if self.http10 or headers.get("connection", "").lower() == "close":
            self.disconnect()
        ident = headers.get("artcast-id", "")
        if code == 200:
            if not ident:
                raise Failed("no Artcast-Id")
            self.lastId = ident
            if body is None:
                say("a value of %d bytes skipped (more than %d)" % (length, MAX_VALUE), sys.stderr)
                return False
            if headers.get("artcast-gap") == "1":
                say("gap")
            onValue(json.loads(body))
            return True
        if code == 204:  # nothing new: ask again
            if not self.lastId:
                self.lastId = ident
            return False
        text = (body or b"").decode("utf-8", "replace").strip()
        if 400 <= code < 500:
            raise Stop("error %d: %s" % (code, text))
        self.disconnect()
        retryAfter = headers.get("retry-after", "")
        if code == 503 and retryAfter.isdigit():
            say("server answered 503: %s" % text, sys.stderr)
            time.sleep(min(int(retryAfter), MAX_RETRY_AFTER))  # the server says when
            return False
        raise Failed("server answered %d: %s" % (code, text))

    def run(self, onValue, count=-1):
        """Follow until count values came (never, if count < 0)."""
        received = failures = 0
        while count < 0 or received < count:
            try:
                if self.pollOnce(onValue):
                    received += 1
                failures = 0
            except (OSError, ValueError, Failed):
                # ValueError: an answer that does not parse.
                self.disconnect()  # start clean on the next attempt
                bound = min(self.maxDelay, 0.25 * 2 ** min(failures, 10))
                failures += 1
                time.sleep(bound * random.getrandbits(16) / 65536)  # back-off, full jitter
        self.disconnect()


def follow(host, port, key, onValue, count=-1, **options):
    Follower(host, port, key, **options).run(onValue, count)


def printValue(value):
    say(json.dumps(value))  # the value, parsed: use it here


def main(argv):
    options = {}
    args = list(argv[1:])
    while args and args[0].startswith("-") and len(args[0]) > 1:
        flag = args.pop(0)
        if flag == "-0":
            options["http10"] = True
        elif flag == "-t" and args:
            options["timeout"] = int(args.pop(0))
        elif flag == "-b" and args:
            options["maxDelay"] = float(args.pop(0))
        else:
            args = []
    if not 3 <= len(args) <= 4:
        say("usage: artcast_follow.py [-0] [-t SECONDS] [-b SECONDS] HOST PORT KEY [COUNT]", sys.stderr)
        return 64
    count = int(args[3]) if len(args) == 4 else -1
    try:
        follow(args[0], int(args[1]), args[2], printValue, count, **options)
    except Stop as stop:
        say(str(stop), sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
