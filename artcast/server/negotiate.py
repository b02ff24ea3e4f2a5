# -*- test-case-name: tests.test_negotiate -*-
"""
Content negotiation: parse an C{Accept} header and choose a representation.

C{GET /artcasts/<key>} offers L{JSON}, L{TEXT}, L{HTML} and L{EVENT_STREAM};
C{GET /artcasts} offers L{JSON} and L{HTML}.  The caller passes what it offers,
in its own order of preference, to L{negotiate}, and answers C{406} when
L{negotiate} returns L{None}.

The rules (RFC 9110 section 12.5.1, made concrete):

  - No C{Accept} header, an empty one, or one in which not a single media
    range can be parsed: anything is acceptable, so the first offered type
    (the server's favourite, JSON) is chosen.
  - Each offered type gets the quality of the most specific media range that
    matches it (C{type/subtype} over C{type/*} over C{*/*}); where several
    ranges of that specificity match (C{text/html;level=1;q=0.5, text/html}),
    the highest of their q-values counts.  A type no range matches has
    quality 0.  Quality 0 means "not acceptable".
  - The acceptable type with the highest quality wins.  At equal quality, a
    type the client named explicitly beats one it only reached through a
    wildcard (C{text/html, */*} chooses HTML); after that, the server's order
    of preference decides (C{*/*} alone chooses JSON).
  - Media type parameters other than C{q} are ignored for matching; type and
    subtype compare case-insensitively.

Parsing never raises.  A malformed element (a bad media range such as C{json}
or C{*/html}, or a bad q-value such as C{q=abc}, C{q=2} or C{q=-1}) is skipped
on its own; the rest of the header still counts.  Only the first
L{MAX_HEADER_LENGTH} characters and the first L{MAX_ELEMENTS} elements are
read, so a hostile header costs bounded time.

An HTTP request that carries several C{Accept} field lines is to be passed
as their values joined with C{", "} (RFC 9110 section 5.3).
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Sequence, Union

from attrs import field, frozen

__all__ = [
    "JSON",
    "TEXT",
    "HTML",
    "EVENT_STREAM",
    "MAX_HEADER_LENGTH",
    "MAX_ELEMENTS",
    "MediaRange",
    "parseAccept",
    "negotiate",
]

JSON = "application/json"
TEXT = "text/plain"
HTML = "text/html"
EVENT_STREAM = "text/event-stream"

MAX_HEADER_LENGTH = 4096
"""
How many characters of an C{Accept} header are read; an element cut by this
limit is dropped whole.
"""

MAX_ELEMENTS = 64
"""
How many non-empty comma-separated elements of an C{Accept} header are read.
"""

_CACHE_SIZE = 256

Header = Union[bytes, str, None]

# RFC 9110 section 5.6.2: token = 1*tchar.
_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_MEDIA_RANGE = re.compile(rf"({_TOKEN})/({_TOKEN})")

# RFC 9110 section 12.4.2 allows "0", "0.5", "0.125", "1", "1.000".  We also
# take what real clients send outside the grammar (Java's "q=.2", more than
# three decimals); the value must still lie in [0, 1].
_QVALUE = re.compile(r"[0-9]{1,3}(?:\.[0-9]{0,6})?|\.[0-9]{1,6}")

# Splits a header into pieces, keeping quoted strings (which may hold "," and
# ";") whole: a quoted string (its closing quote optional, so an unterminated
# one runs to the end), a run of ordinary characters, or a separator.  Every
# alternative consumes at least one character and together they cover every
# character, so the pieces tile the header.
_PIECE = re.compile(r'"(?:[^"\\]|\\.)*"?|[^",;]+|[,;]')

_OWS = " \t"


@frozen
class MediaRange:
    """
    One element of an C{Accept} header.

    @ivar type: The type, lower-cased; C{"*"} for C{*/*}.
    @ivar subtype: The subtype, lower-cased; C{"*"} for C{type/*} and C{*/*}.
    @ivar q: The quality, from 0 (not acceptable) to 1 (the default).
    @ivar specificity: 2 for C{type/subtype}, 1 for C{type/*}, 0 for C{*/*}.
    """

    type: str
    subtype: str
    q: float = 1.0
    specificity: int = field(init=False)

    @specificity.default
    def _specificityDefault(self) -> int:
        if self.type == "*":
            return 0
        if self.subtype == "*":
            return 1
        return 2

    def matches(self, mediaType: str, mediaSubtype: str) -> bool:
        """
        Does this range cover a media type?

        @param mediaType: A lower-cased type, such as C{"text"}.
        @param mediaSubtype: A lower-cased subtype, such as C{"html"}.
        @return: L{True} if the range is C{*/*}, C{<mediaType>/*} or exactly
            C{<mediaType>/<mediaSubtype>}.
        """
        if self.type == "*":
            return True
        if self.type != mediaType:
            return False
        return self.subtype == "*" or self.subtype == mediaSubtype


def _asText(header: object) -> str | None:
    """
    Turn a header value as Twisted may hand it over into text.

    @param header: L{bytes} (decoded as ISO-8859-1, which never fails),
        L{str}, or anything else (treated as no header).
    @return: At most L{MAX_HEADER_LENGTH} + 1 characters, so that a parse can
        tell whether the header was cut; L{None} for no header.
    """
    if isinstance(header, (bytes, bytearray, memoryview)):
        return bytes(header[: MAX_HEADER_LENGTH + 1]).decode("latin-1")
    if isinstance(header, str):
        return header[: MAX_HEADER_LENGTH + 1]
    return None


def _splitElements(text: str) -> list[list[str]]:
    """
    Split a header into elements, and each element into its
    C{;}-separated parts, leaving C{,} and C{;} inside quoted strings alone.

    @param text: At most L{MAX_HEADER_LENGTH} + 1 characters of a header.
    @return: Up to L{MAX_ELEMENTS} non-empty elements, each a list of parts
        (the media range first, then the parameters), not yet stripped.
    """
    truncated = len(text) > MAX_HEADER_LENGTH
    if truncated:
        text = text[:MAX_HEADER_LENGTH]
    if '"' not in text:
        elements = [element.split(";") for element in text.split(",")]
    else:
        elements = [[]]
        current: list[str] = []
        for match in _PIECE.finditer(text):
            piece = match.group()
            if piece == ",":
                elements[-1].append("".join(current))
                elements.append([])
                current = []
            elif piece == ";":
                elements[-1].append("".join(current))
                current = []
            else:
                current.append(piece)
        elements[-1].append("".join(current))
    if truncated:
        # The last element was cut short and might read as something else.
        elements.pop()
    nonEmpty = [
        element
        for element in elements
        if len(element) > 1 or element[0].strip(_OWS)
    ]
    return nonEmpty[:MAX_ELEMENTS]


def _parseQuality(value: str) -> float | None:
    """
    Parse a q-value.

    @param value: The text after C{q=}.
    @return: The quality in [0, 1], or L{None} if C{value} is not one.
    """
    value = value.strip(_OWS)
    if _QVALUE.fullmatch(value) is None:
        return None
    quality = float(value)
    if quality > 1.0:
        return None
    return quality


def _parseElement(parts: list[str]) -> MediaRange | None:
    """
    Parse one element of an C{Accept} header.

    @param parts: The element's C{;}-separated parts.
    @return: The media range, or L{None} if the element is malformed.
    """
    match = _MEDIA_RANGE.fullmatch(parts[0].strip(_OWS))
    if match is None:
        return None
    mediaType, mediaSubtype = match.group(1).lower(), match.group(2).lower()
    if mediaType == "*" and mediaSubtype != "*":
        return None
    quality = 1.0
    for parameter in parts[1:]:
        name, equals, value = parameter.partition("=")
        if equals and name.strip(_OWS).lower() == "q":
            parsed = _parseQuality(value)
            if parsed is None:
                return None
            quality = parsed
            break
    return MediaRange(mediaType, mediaSubtype, quality)


@lru_cache(maxsize=_CACHE_SIZE)
def _parseCached(text: str) -> tuple[MediaRange, ...]:
    """
    Parse an C{Accept} header, remembering the answers for recent values.

    @param text: At most L{MAX_HEADER_LENGTH} + 1 characters of a header, so
        that the cache holds bounded keys.
    @return: The well-formed media ranges, in the header's order.
    """
    ranges = []
    for parts in _splitElements(text):
        mediaRange = _parseElement(parts)
        if mediaRange is not None:
            ranges.append(mediaRange)
    return tuple(ranges)


def parseAccept(header: Header) -> list[MediaRange]:
    """
    Parse an C{Accept} header.

    @param header: The header's value as L{bytes} or L{str}, or L{None} when
        the request has none.
    @return: The well-formed media ranges, in the header's order; malformed
        elements are left out.  Empty for no header.
    """
    text = _asText(header)
    if text is None:
        return []
    return list(_parseCached(text))


@lru_cache(maxsize=64)
def _splitOffered(offered: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """
    Lower-case and split the offered media types.

    @param offered: Media types such as C{"application/json"}.
    @return: One C{(type, subtype)} pair for each.
    """
    pairs = []
    for mediaType in offered:
        main, _, sub = mediaType.lower().partition("/")
        pairs.append((main, sub))
    return tuple(pairs)


def _quality(
    ranges: tuple[MediaRange, ...], mediaType: str, mediaSubtype: str
) -> tuple[float, int]:
    """
    How much does a client want a media type?

    @param ranges: The client's media ranges.
    @param mediaType: A lower-cased type.
    @param mediaSubtype: A lower-cased subtype.
    @return: C{(quality, specificity)}: the highest q among the most specific
        ranges that match, and their specificity; C{(0.0, -1)} if none does.
    """
    best = (0.0, -1)
    for mediaRange in ranges:
        if not mediaRange.matches(mediaType, mediaSubtype):
            continue
        if mediaRange.specificity > best[1] or (
            mediaRange.specificity == best[1] and mediaRange.q > best[0]
        ):
            best = (mediaRange.q, mediaRange.specificity)
    return best


def negotiate(header: Header, offered: Sequence[str]) -> str | None:
    """
    Choose the representation to send.

    @param header: The request's C{Accept} value (L{bytes} or L{str}), or
        L{None} when it has none.
    @param offered: The media types the resource can send, most preferred
        first, such as C{(JSON, TEXT, HTML, EVENT_STREAM)}.
    @return: The chosen member of C{offered}, or L{None} when the client
        accepts none of them (answer C{406}).
    """
    if not offered:
        return None
    text = _asText(header)
    if text is None:
        return offered[0]
    # The headers of most requests: curl, fetch, EventSource, JSON clients.
    if text == "*/*":
        return offered[0]
    if text in offered:
        return text
    ranges = _parseCached(text)
    if not ranges:
        return offered[0]
    best: str | None = None
    bestKey = (0.0, -1)
    for mediaType, (main, sub) in zip(offered, _splitOffered(tuple(offered))):
        quality, specificity = _quality(ranges, main, sub)
        if quality > 0.0 and (quality, specificity) > bestKey:
            best, bestKey = mediaType, (quality, specificity)
    return best
