# -*- test-case-name: tests.test_send -*-
"""
C{artcast-send KEY VALUE}: send one datum from a shell.

    artcast-send test/greeting 'hello'          # the string "hello"
    artcast-send sensors/door/open true         # the JSON value true
    artcast-send weather/oslo '{"temp": 21.5}'  # a JSON object
    artcast-send weather/oslo '"42"'            # the string "42"

VALUE is parsed as JSON when it is valid (strict) JSON, otherwise sent as a
string.  The datum goes out as a version 2 datagram (its id is printed) or,
with C{--v1}, as an original Artcast datagram C{[key, value]}.

A version 2 datum is repairable (C{"r":1}): C{artcast-send} stays for
C{--linger} seconds (1 by default) to answer servers that missed it and
ask for it again (NACKs), then exits.  C{--no-repair} sends a datagram
without C{"r"} and exits at once.
"""

from __future__ import annotations

import argparse
import math
import socket
import sys
import time
from typing import Any, Callable, Sequence, TextIO

from artcast.repair import LINGER
from artcast.source import DEFAULT_GROUPS, Source, multicastSocket, sendDatagrams
from artcast.wire import (
    BadKey,
    encodeData,
    loadJSON,
    parseKeyFile,
    validateKey,
    validateSource,
)

__all__ = [
    "DEFAULT_GROUP",
    "DEFAULT_PORT",
    "addNetworkOptions",
    "checkInterface",
    "checkNames",
    "main",
    "parseValue",
    "ipv4Argument",
    "portArgument",
    "readSigningKey",
    "routeInterface",
    "secondsArgument",
    "sentLines",
    "ttlArgument",
]

DEFAULT_GROUP, DEFAULT_PORT = DEFAULT_GROUPS[0]


def parseValue(text: str) -> object:
    """
    The value a command-line argument stands for: its JSON value when it is
    strict JSON as a server reads it (L{loadJSON}: no C{NaN}, no
    C{Infinity}, no number out of range, no member twice, no lone
    surrogate, not too deep), otherwise the text itself.
    """
    try:
        return loadJSON(text)
    except ValueError:
        return text


def ipv4Argument(text: str) -> str:
    try:
        socket.inet_aton(text)
    except OSError:
        raise argparse.ArgumentTypeError(f"not an IPv4 address: {text!r}") from None
    if text.count(".") != 3:
        raise argparse.ArgumentTypeError(f"not an IPv4 address: {text!r}")
    return text


def portArgument(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}")
    return int(text)


def ttlArgument(text: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= 255:
        raise argparse.ArgumentTypeError(f"a TTL is from 0 to 255, not {text!r}")
    return int(text)


def secondsArgument(name: str, low: float, high: float) -> Callable[[str], float]:
    """
    An argparse C{type} for an option in seconds from C{low} to C{high}
    (both included), for example C{secondsArgument("--linger", 0, 3600)}.

    @param name: the option, named in the error (C{"--linger is 0 to 3600
        seconds, not 'x'"}).
    @return: the function turning the option's text into seconds.
    """

    def parse(text: str) -> float:
        try:
            seconds = float(text)
        except ValueError:
            seconds = math.nan
        if not low <= seconds <= high:
            raise argparse.ArgumentTypeError(
                f"{name} is {low:g} to {high:g} seconds, not {text!r}"
            )
        return seconds

    return parse


def checkNames(options: argparse.Namespace) -> None:
    """
    Check the C{KEY} and C{--src} of C{artcast-send} or C{artcast-watch}.

    @raise ValueError: with the one line to print.
    """
    try:
        validateKey(options.key)
    except BadKey as e:
        raise ValueError(f"bad key: {e}") from None
    if options.src is not None:
        validateSource(options.src)


def checkInterface(interface: str | None, sock: Any = None) -> None:
    """
    Check that multicast can be sent from C{--interface} (an address of
    this host), before anything is sent.

    @param sock: a socket-like object to try it on, for tests; by default a
        new UDP socket.  It is closed.
    @raise ValueError: with the one line to print.
    """
    if interface is None:
        return
    try:
        multicastSocket(0, interface, sock).close()
    except OSError as e:
        reason = e.strerror or str(e)
        raise ValueError(
            f"cannot send from --interface {interface}: {reason}; "
            "is it an address of this host? (ip -4 addr)"
        ) from None


def readSigningKey(options: argparse.Namespace) -> bytes | None:
    """
    The key of C{--key-file}, or L{None} without one.

    @raise ValueError: with the one line to print.
    """
    if not options.key_file:
        return None
    try:
        with open(options.key_file, "rb") as keyFile:
            return parseKeyFile(keyFile.read())
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read the key file {options.key_file}: {e}") from None


def addNetworkOptions(parser: argparse.ArgumentParser) -> None:
    """
    Add the options that say where and how datagrams are sent (C{--group},
    C{--port}, C{--ttl}, C{--interface}, C{--key-file}, C{--src}): the same
    for C{artcast-send} and C{artcast-watch}.
    """
    parser.add_argument("--group", action="append", type=ipv4Argument, metavar="ADDRESS",
                        help=f"multicast group to send to (default {DEFAULT_GROUP}); "
                        "repeat to feed several groups")
    parser.add_argument("--port", type=portArgument, default=DEFAULT_PORT,
                        help=f"UDP port of the data group (default {DEFAULT_PORT})")
    parser.add_argument("--ttl", type=ttlArgument, default=1,
                        help="multicast TTL: 1 stays on the local network (default), "
                        "0 on this host")
    parser.add_argument("--interface", type=ipv4Argument, metavar="ADDRESS",
                        help="local address of the interface to send from")
    parser.add_argument("--key-file", metavar="PATH",
                        help="sign the datagrams with the key in this file")
    parser.add_argument("--src", help="the source name (default: host name and random "
                        "digits); keep it across restarts")


def routeInterface(group: str, port: int, probe: Any = None) -> str | None:
    """
    The local address the kernel sends from to C{group} when no
    C{--interface} is given (the default route's interface, usually): a UDP
    socket is connected to the group and asked its own address; no packet
    is sent.

    @param probe: the UDP socket to connect (a fake one, for tests); by
        default a new one.  It is closed.
    @return: the address, or L{None} when there is no route to the group.
    """
    if probe is None:
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect((group, port))
        return str(probe.getsockname()[0])
    except OSError:
        return None
    finally:
        probe.close()


def sentLines(
    groups: Sequence[tuple[str, int]],
    interface: str | None,
    ttl: int,
    route: Callable[[str, int], str | None] = routeInterface,
) -> list[str]:
    """
    What C{artcast-send} says on standard error once it sent: where the
    datagram went, from which interface, with which TTL; and, when no
    C{--interface} was given and the datagram left by another interface
    than loopback, how to reach a server on this host that listens on
    loopback only.

    @param route: finds the interface the kernel sends from
        (L{routeInterface}), for tests.
    """
    where = ", ".join(f"{group}:{port}" for group, port in groups)
    if interface is not None:
        via = f"{interface} (--interface)"
        local = interface
    else:
        local = route(*groups[0])
        via = (
            f"{local} (the default route's interface)" if local is not None
            else "the interface the kernel chooses (no route to the group found)"
        )
    lines = [f"artcast-send: sent to {where} via {via}, TTL {ttl}"]
    if interface is None and not (local or "").startswith("127."):
        lines.append(
            "artcast-send: a server started with --interface 127.0.0.1 hears this "
            "only with --interface 127.0.0.1 --ttl 0"
        )
    return lines


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="artcast-send",
        description="Send one datum to Artcast servers over multicast.",
        epilog="VALUE is parsed as JSON when it is valid JSON, else sent as a string.",
    )
    parser.add_argument("key", metavar="KEY", help="the artcast's key, e.g. test/greeting")
    parser.add_argument("value", metavar="VALUE", help="the value: JSON, or any text")
    addNetworkOptions(parser)
    parser.add_argument("--v1", action="store_true",
                        help="send an original Artcast datagram [key, value] (cannot be signed)")
    parser.add_argument("--linger", type=secondsArgument("--linger", 0, 3600), default=LINGER, metavar="SECONDS",
                        help="stay this long after sending to re-send the datum to servers "
                        f"that missed it and ask (NACK) (default {LINGER:g}; 0: exit at once)")
    parser.add_argument("--no-repair", action="store_true",
                        help="send a datagram that servers never ask for again "
                        "(no \"r\":1) and exit at once")
    return parser


def main(
    argv: Sequence[str] | None = None,
    *,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    sock: Any = None,
    now: Callable[[], float] = time.time,
    sleep: Callable[[float], object] = time.sleep,
    route: Callable[[str, int], str | None] = routeInterface,
) -> int:
    """
    Run C{artcast-send}: the datum's id on standard output, and where it
    went on standard error (L{sentLines}).

    @param argv: the arguments, without the program name; by default C{sys.argv[1:]}.
    @param sock: a socket-like object to send with, for tests.
    @param now: the clock, for tests.
    @param sleep: how to wait (the linger), for tests.
    @param route: finds the interface the kernel sends from
        (L{routeInterface}), for tests.
    @return: the exit status: 0 when sent, 1 when the network refused,
        2 for bad arguments (argparse's own errors exit with 2 too).
    """
    out = stdout if stdout is not None else sys.stdout
    err = stderr if stderr is not None else sys.stderr
    options = _parser().parse_args(argv)

    def fail(message: str, status: int = 2) -> int:
        print(f"artcast-send: {message}", file=err)
        return status

    try:
        checkNames(options)
    except ValueError as e:
        return fail(str(e))
    if options.v1 and options.key_file:
        return fail("--v1 datagrams cannot be signed; leave out --key-file or --v1")
    if options.v1 and options.src:
        return fail("--v1 datagrams carry no source name; leave out --src or --v1")
    try:
        signingKey = readSigningKey(options)
    except ValueError as e:
        return fail(str(e))
    try:
        checkInterface(options.interface, sock)
    except ValueError as e:
        return fail(str(e), 1)
    value = parseValue(options.value)
    groups = [(group, options.port) for group in (options.group or [DEFAULT_GROUP])]

    def sent() -> None:
        for line in sentLines(groups, options.interface, options.ttl, route):
            print(line, file=err, flush=True)

    try:
        if options.v1:
            try:
                datagrams = encodeData(options.key, value)
            except ValueError as e:
                return fail(str(e))
            sendSocket = multicastSocket(options.ttl, options.interface, sock)
            try:
                sendDatagrams(sendSocket, datagrams, groups)
            finally:
                sendSocket.close()
            sent()
        else:
            with Source(options.src, groups, (), options.ttl, options.interface,
                        signingKey, sock=sock, now=now, sleep=sleep,
                        repair=not options.no_repair, linger=options.linger,
                        holdback=0) as source:
                try:
                    datumId = source.send(options.key, value)
                except ValueError as e:
                    return fail(str(e))
                print(datumId, file=out, flush=True)
                sent()
    except OSError as e:
        where = ", ".join(f"{group}:{port}" for group, port in groups)
        return fail(f"cannot send to {where}: {e}", 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
