# -*- test-case-name: tests.test_bench -*-
"""
The baseline for the fan-out benchmark: a minimal re-implementation of the
original Artcast design (2012, one Tornado file), brought to Tornado 6.

The design kept on purpose, because it is what the benchmark measures:

  - one UDP multicast socket on the data group and one on the register
    group, each read by the IOLoop (one C{recv} per readable event);
  - datagrams are JSON C{[key, value]} (register: C{[key, {description,
    provenance, license}]});
  - C{GET /artcasts/<key>} is an asynchronous handler that appends itself to
    a per-key list of waiting handlers and is finished when the next datum
    for that key arrives, each waiter writing its own C{json.dumps(value)};
    nothing is kept, so a datum that arrives while a client is re-polling is
    lost for that client;
  - content negotiation: JSON by default, C{text/plain}, C{text/html};
  - C{GET /artcasts} lists the keys as JSON, C{GET /} redirects there;
  - a combined-format access line per request through C{logging}, to
    C{--access-log} (stderr when not given).

Tornado 6 removed C{@tornado.web.asynchronous}; its replacement here is
C{get} returning a L{Future} that the datum resolves, which is what the old
decorator did underneath.

This is not part of Artcast: it exists only to be measured against.
Run: C{python bench/baselines/artcast_tornado.py --client-port 8888
--interface 127.0.0.1 --access-log /dev/null}.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import socket
import struct
import sys
from typing import Any

import tornado.escape
import tornado.httpserver
import tornado.ioloop
import tornado.web
from tornado.concurrent import Future

accessLog = logging.getLogger("artcast.access")

# key -> registered metadata; keys seen only in data get {}.
sources: dict[str, dict[str, Any]] = {}


class Handler(tornado.web.RequestHandler):
    """
    Content negotiation shared by all handlers, as the original did it.
    """

    def accept(self, *serverTypes: str) -> str:
        """
        Choose the first of C{serverTypes} that the C{Accept} header allows,
        honouring q-values; C{*/*} when there is no header.

        @raise tornado.web.HTTPError: 406 when none is acceptable.
        """
        header = self.request.headers.get("Accept", "*/*")
        clientTypes = []
        for element in header.split(","):
            parts = element.strip().split(";")
            quality = 1.0
            for param in parts[1:]:
                name, _, value = param.strip().partition("=")
                if name == "q":
                    try:
                        quality = float(value)
                    except ValueError:
                        quality = 0.0
            clientTypes.append((parts[0].strip(), quality))
        clientTypes.sort(key=lambda item: item[1], reverse=True)
        for clientType, quality in clientTypes:
            if quality <= 0:
                continue
            for serverType in serverTypes:
                if clientType in (serverType, "*/*"):
                    return serverType
                if clientType.endswith("/*") and (
                    clientType.split("/")[0] == serverType.split("/")[0]
                ):
                    return serverType
        raise tornado.web.HTTPError(406)


class ArtcastsHandler(Handler):
    """
    C{GET /artcasts}: the known keys with their registered metadata.
    """

    def get(self) -> None:
        accepted = self.accept("application/json", "text/html")
        results = [dict(meta, key=key) for key, meta in sorted(sources.items())]
        if accepted == "text/html":
            self.set_header("Content-Type", "text/html; charset=UTF-8")
            items = "".join(
                '<li><a href="/artcasts/%s">%s</a></li>'
                % (tornado.escape.url_escape(r["key"], plus=False),
                   tornado.escape.xhtml_escape(r["key"]))
                for r in results
            )
            self.write("<html><body><ul>%s</ul></body></html>" % (items,))
        else:
            self.set_header("Content-Type", "application/json")
            self.write(json.dumps(results))


class ArtcastHandler(Handler):
    """
    C{GET /artcasts/<key>}: held until the next datum for C{key}.
    """

    waiters: dict[str, list[ArtcastHandler]] = {}

    @classmethod
    def message(cls, key: str, value: Any) -> None:
        """
        A datum arrived: finish every handler waiting for C{key}.
        """
        for waiter in cls.waiters.pop(key, []):
            waiter.answer(value)

    def get(self, key: str) -> Future[None] | None:
        self.accepted = self.accept("application/json", "text/plain", "text/html")
        if self.accepted == "text/html":
            self.write(
                "<html><body><h1>%s</h1><pre id=value></pre></body></html>"
                % (tornado.escape.xhtml_escape(key),)
            )
            return None
        self.key = key
        self.done: Future[None] = Future()
        ArtcastHandler.waiters.setdefault(key, []).append(self)
        return self.done

    def answer(self, value: Any) -> None:
        """
        Write C{value} in the negotiated type and finish the request.
        """
        if self.accepted == "text/plain" and isinstance(value, str):
            self.write(value)
        else:
            self.write(json.dumps(value))
        self.set_header("Content-Type", self.accepted)
        self.set_header("Access-Control-Allow-Origin", "*")
        self.finish()
        if not self.done.done():
            self.done.set_result(None)

    def on_connection_close(self) -> None:
        waiting = ArtcastHandler.waiters.get(getattr(self, "key", None), [])
        if self in waiting:
            waiting.remove(self)
        done = getattr(self, "done", None)
        if done is not None and not done.done():
            done.set_result(None)


def combinedLog(handler: tornado.web.RequestHandler) -> None:
    """
    One NCSA combined line per request, as the original's log_function.
    """
    request = handler.request
    accessLog.info(
        '%s - - %s "%s %s %s" %d - "%s" "%s"',
        request.remote_ip,
        datetime.datetime.now(datetime.timezone.utc).strftime(
            "[%d/%b/%Y:%H:%M:%S +0000]"
        ),
        request.method,
        request.uri,
        request.version,
        handler.get_status(),
        request.headers.get("Referer", "-"),
        request.headers.get("User-Agent", "-"),
    )


def multicastSocket(group: str, port: int, interface: str) -> socket.socket:
    """
    A non-blocking UDP socket joined to C{group} on C{interface}.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((group, port))
    mreq = struct.pack("4s4s", socket.inet_aton(group), socket.inet_aton(interface))
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
    sock.setblocking(False)
    return sock


def onData(sock: socket.socket) -> None:
    try:
        key, value = json.loads(sock.recv(65536))
    except BlockingIOError:
        return
    except Exception:
        logging.getLogger("artcast.error").warning("bad datagram dropped")
        return
    sources.setdefault(key, {})
    ArtcastHandler.message(key, value)


def onRegister(sock: socket.socket) -> None:
    try:
        key, meta = json.loads(sock.recv(65536))
        sources.setdefault(key, {}).update(meta)
    except BlockingIOError:
        return
    except Exception:
        logging.getLogger("artcast.error").warning("bad registration dropped")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--client-port", type=int, default=8888)
    parser.add_argument("--client-address", default="127.0.0.1")
    parser.add_argument("--data-group", default="224.1.1.1")
    parser.add_argument("--data-port", type=int, default=5007)
    parser.add_argument("--register-group", default="224.1.1.1")
    parser.add_argument("--register-port", type=int, default=5008)
    parser.add_argument("--interface", default="0.0.0.0")
    parser.add_argument("--access-log", default=None, help="file (default: stderr)")
    options = parser.parse_args(argv)

    accessLog.propagate = False
    accessLog.setLevel(logging.INFO)
    if options.access_log:
        accessLog.addHandler(logging.FileHandler(options.access_log))
    else:
        accessLog.addHandler(logging.StreamHandler())
    logging.basicConfig(level=logging.WARNING)

    loop = tornado.ioloop.IOLoop.current()
    data = multicastSocket(options.data_group, options.data_port, options.interface)
    register = multicastSocket(
        options.register_group, options.register_port, options.interface
    )
    loop.add_handler(data, lambda fd, events: onData(data), loop.READ)
    loop.add_handler(register, lambda fd, events: onRegister(register), loop.READ)

    application = tornado.web.Application(
        [
            (r"/", tornado.web.RedirectHandler, {"url": "/artcasts", "permanent": False}),
            (r"/artcasts", ArtcastsHandler),
            (r"/artcasts/(.+)", ArtcastHandler),
        ],
        log_function=combinedLog,
    )
    server = tornado.httpserver.HTTPServer(application)
    server.listen(options.client_port, address=options.client_address)
    sys.stderr.write("artcast_tornado listening on %s:%d\n"
                     % (options.client_address, options.client_port))
    sys.stderr.flush()
    loop.start()


if __name__ == "__main__":
    main()
