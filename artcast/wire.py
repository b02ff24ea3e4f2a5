# -*- test-case-name: tests.test_wire -*-
"""
The Artcast datagram formats: parsing, validation, signing and fragments.

Two formats arrive on the multicast groups (C{docs/protocol.md} describes
them byte by byte):

  - B{version 1}, the original Artcast: a JSON array C{[key, value]} on the
    data group and C{[key, meta]} on the register group;
  - B{version 2}: one JSON object per datagram carrying the source's
    identity (C{src}), its boot (C{boot}), a sequence number (C{seq}) and the
    send time (C{t}), optionally split into fragments and optionally signed
    with HMAC-SHA256.

What a receiving server keeps between datagrams (fragments being put back
together, each source's place in its sequence) is in
L{artcast.server.feeds.reception}.

Everything here is pure: no sockets, no reactor, no global clock.  Every
function that reads untrusted bytes raises only L{BadDatagram}, whose
C{reason} is a short stable label for statistics (see L{REASONS}).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import re
from itertools import accumulate
from typing import Any, Iterable, NamedTuple, Sequence
from urllib.parse import quote

import attr

__all__ = [
    "MAX_DATAGRAM",
    "MAX_KEY_LENGTH",
    "MAX_DEPTH",
    "MAX_PARTS",
    "MAX_SOURCE_LENGTH",
    "MAX_VALUE_SIZE",
    "MAX_META_VALUES",
    "MAX_VALUE_DEPTH",
    "MAX_COUNTER",
    "MAX_RANGES",
    "MAX_BATCH",
    "SIGNATURE_OVERHEAD",
    "REASONS",
    "KEY_SAFE",
    "CONTROL_CHARACTERS",
    "BadDatagram",
    "BadKey",
    "DatumId",
    "Stamp",
    "DataMessage",
    "RegisterMessage",
    "Fragment",
    "Batch",
    "Heartbeat",
    "Confirm",
    "Gone",
    "Nack",
    "parseData",
    "parseNack",
    "parseRegister",
    "validateKey",
    "validateSource",
    "quoteKey",
    "keyPath",
    "loadJSON",
    "valueTooDeep",
    "encodeJSON",
    "encodeData",
    "encodeRegister",
    "batchItem",
    "batchOverhead",
    "encodeBatch",
    "encodeHeartbeat",
    "encodeConfirm",
    "encodeGone",
    "encodeNack",
    "toRanges",
    "signDocument",
    "parseKeyFile",
]

MAX_DATAGRAM = 65507
"""The largest UDP payload over IPv4 (65,535 - 20 - 8), in bytes."""

MAX_KEY_LENGTH = 256
"""The longest key, in characters."""

MAX_SOURCE_LENGTH = 64
"""The longest source name (C{src}), in characters."""

MAX_DEPTH = 100
"""The deepest nesting of arrays and objects accepted in a datagram."""

MAX_VALUE_DEPTH = MAX_DEPTH - 1
"""The deepest nesting of a datum's value: a version 2 datagram's object is
one more level around it."""

MAX_PARTS = 64
"""The most fragments one value may be split into."""

MAX_VALUE_SIZE = 4 * 1024 * 1024
"""The default bound on a re-assembled value's JSON text, in bytes."""

MAX_META_VALUES = 1000
"""The most JSON values (every member, element and scalar, at any depth) a
registration's metadata may hold."""

MAX_COUNTER = 2**63 - 1
"""The largest C{boot} or C{seq} (fits a signed 64-bit integer)."""

MAX_RANGES = 64
"""The most C{[first, last]} ranges of sequence numbers in a NACK, an NCF or
a gone."""

MAX_BATCH = 1024
"""The most datums in one batch datagram."""

REASONS = (
    "too-large",
    "not-utf8",
    "not-json",
    "too-deep",
    "bad-shape",
    "bad-version",
    "bad-key",
    "unsigned",
    "bad-signature",
    "bad-fragment",
    "duplicate-member",
)
"""Every L{BadDatagram.reason}, for pre-creating statistics labels."""

_SIG_PREFIX = b',"sig":"'
_SIG_SUFFIX_LENGTH = len(_SIG_PREFIX) + 64 + 2  # ,"sig":"<64 hex>"}  = 74
SIGNATURE_OVERHEAD = _SIG_SUFFIX_LENGTH - 1
"""How many bytes signing adds to a document (its final C{"}"} is replaced)."""

_SOURCE_RE = re.compile(r"[A-Za-z0-9_-]{1,%d}" % (MAX_SOURCE_LENGTH,))
_COUNTER_RE = re.compile(r"0|[1-9][0-9]{0,18}")
_HEX_RE = re.compile(rb"[0-9a-f]{64}")
_SURROGATE_ESCAPE_RE = re.compile(r"\\u[dD][89a-fA-F]")
_CONTROLS = "\x00-\x1f\x7f-\x9f"
CONTROL_CHARACTERS = re.compile(f"[{_CONTROLS}]")
"""Matches a control character (C0, DEL or C1): a license's text and a
request's path hold none (a key holds none either, nor a lone surrogate)."""

KEY_SAFE = "/!$&'()*+,;=:@-._~"
"""The characters besides ASCII letters and digits left as they are when a
key is put in a URL or a header (L{quoteKey}); every other one is
percent-encoded as UTF-8."""

_BAD_KEY_CHAR_RE = re.compile(f"[{_CONTROLS}\ud800-\udfff]")
_WILDCARDS = frozenset(["*", "..."])


class BadDatagram(ValueError):
    """
    A datagram that is not a valid Artcast message.

    @ivar reason: a short stable label naming what is wrong, one of
        L{REASONS}; meant for statistics.  C{str(exc)} is a sentence for logs.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class BadKey(ValueError):
    """
    A key that breaks the key rules of L{validateKey}.
    """


class DatumId(NamedTuple):
    """
    A datum's id, C{"<source>.<boot>.<seq>"}, as its parts.

    Ids are ordered only within one source: by C{boot}, then C{seq}
    (L{covers}).  An id of another source is neither earlier nor later.
    """

    source: str
    boot: int
    seq: int

    @classmethod
    def parse(cls, text: str) -> DatumId:
        """
        Read a datum id C{"<source>.<boot>.<seq>"}.

        C{boot} and C{seq} are decimal without sign or leading zeros and below
        2**63; C{seq} is at least 1.

        @raise ValueError: if C{text} is not a datum id.
        """
        if not isinstance(text, str):
            raise ValueError(f"a datum id must be a string, not {type(text).__name__}")
        pieces = text.split(".")
        if len(pieces) != 3:
            raise ValueError(f"{text[:100]!r} is not a datum id <source>.<boot>.<seq>")
        source, bootText, seqText = pieces
        validateSource(source)
        if _COUNTER_RE.fullmatch(bootText) is None or _COUNTER_RE.fullmatch(seqText) is None:
            raise ValueError(f"{text!r} is not a datum id: boot and seq must be decimal")
        boot, seq = int(bootText), int(seqText)
        if boot > MAX_COUNTER or not 1 <= seq <= MAX_COUNTER:
            raise ValueError(f"{text!r} is not a datum id: boot or seq out of range")
        return cls(source, boot, seq)

    def __str__(self) -> str:
        """
        @return: the id as text, C{"<source>.<boot>.<seq>"}.
        """
        return f"{self.source}.{self.boot}.{self.seq}"

    def covers(self, source: str, boot: int, seq: int) -> bool:
        """
        Is the datum C{(source, boot, seq)} this one or an earlier one of the
        same source?  The one ordering of ids: within a source, by C{boot}
        then C{seq}.
        """
        return source == self.source and (boot, seq) <= (self.boot, self.seq)

    def isNext(self, source: str, boot: int, seq: int) -> bool:
        """
        Is the datum C{(source, boot, seq)} the one right after this one: of
        the same source and boot, its C{seq} one more?
        """
        return source == self.source and boot == self.boot and seq == self.seq + 1


@attr.s(frozen=True, slots=True, auto_attribs=True)
class Stamp:
    """
    What a version 2 datagram says about where and when it was sent.

    @ivar source: the source's name (C{src}).
    @ivar boot: grows each time the source restarts (its start time in ms).
    @ivar seq: the datum's sequence number within C{(source, boot)}, from 1;
        always 0 on a L{RegisterMessage}, because registrations do not use
        the counter.
    @ivar sent: the send time the source claims, in Unix seconds (C{t}).
    """

    source: str
    boot: int
    seq: int
    sent: float

    @property
    def id(self) -> DatumId:
        """
        The datum's id.
        """
        return DatumId(self.source, self.boot, self.seq)

    def datumId(self) -> str:
        """
        @return: the datum id C{"<source>.<boot>.<seq>"}.
        """
        return str(self.id)

    def isStale(self, now: float, window: float) -> bool:
        """
        Is the send time further than C{window} seconds from C{now}, either
        way?  (The freshness window: C{--source-max-skew}.)
        """
        return abs(self.sent - now) > window


@attr.s(frozen=True, slots=True, auto_attribs=True)
class DataMessage:
    """
    A datum: a key and its value.

    @ivar stamp: L{None} for a version 1 datagram.
    @ivar repairable: the datagram said C{"r":1}: its source keeps what it
        sent and answers NACKs (C{docs/protocol.md}, "Repair").
    @ivar signer: the signing key that verified the datagram, L{None} when it
        was not signed or not checked (not compared, not shown).
    """

    key: str
    value: object
    stamp: Stamp | None
    repairable: bool = False
    signer: bytes | None = attr.ib(default=None, eq=False, repr=False)


@attr.s(frozen=True, slots=True, auto_attribs=True)
class RegisterMessage:
    """
    Metadata about an artcast (C{description}, C{provenance}, C{license}
    and any other members, all kept).

    @ivar stamp: L{None} for a version 1 datagram; its C{seq} is 0.
    """

    key: str
    meta: dict[str, Any]
    stamp: Stamp | None


@attr.s(frozen=True, slots=True, auto_attribs=True)
class Fragment:
    """
    One piece of a value too large for one datagram: C{chunk} is part
    C{part} (from 0) of C{parts} pieces of the value's JSON text.
    """

    key: str
    stamp: Stamp
    part: int
    parts: int
    chunk: str
    repairable: bool = False
    signer: bytes | None = attr.ib(default=None, eq=False, repr=False)


Ranges = tuple[tuple[int, int], ...]
"""Sequence numbers as C{(first, last)} pairs, both included, ascending and
not overlapping."""


@attr.s(frozen=True, slots=True, auto_attribs=True)
class Batch:
    """
    Several datums of one source in one datagram (a source's adaptive
    holdback): item C{i} is the datum C{(key, value)} of sequence number
    C{stamp.seq + i}, sent at C{stamp.sent}.
    """

    stamp: Stamp
    items: tuple[tuple[str, object], ...]
    repairable: bool = False
    signer: bytes | None = attr.ib(default=None, eq=False, repr=False)

    def messages(self) -> list[DataMessage]:
        """
        The batch's datums, one L{DataMessage} each, in sequence order.
        """
        stamp = self.stamp
        return [
            DataMessage(key, value, Stamp(stamp.source, stamp.boot, stamp.seq + index,
                                          stamp.sent), self.repairable, self.signer)
            for index, (key, value) in enumerate(self.items)
        ]


@attr.s(frozen=True, slots=True, auto_attribs=True)
class Heartbeat:
    """
    An idle source's heartbeat: C{last} is the last sequence number it sent
    (0 before its first datum), so that a server finds a lost last datum.
    C{stamp.seq} is 0.
    """

    stamp: Stamp
    last: int
    signer: bytes | None = attr.ib(default=None, eq=False, repr=False)


@attr.s(frozen=True, slots=True, auto_attribs=True)
class Confirm:
    """
    A source's NCF ("NACK confirm"): it is re-sending these sequence numbers
    now, so a server that also misses them waits for the repairs instead of
    asking.  C{stamp.seq} is 0.
    """

    stamp: Stamp
    ranges: Ranges
    signer: bytes | None = attr.ib(default=None, eq=False, repr=False)


@attr.s(frozen=True, slots=True, auto_attribs=True)
class Gone:
    """
    A source's answer that it no longer holds these sequence numbers: a
    server stops asking and declares them unrecoverable.  C{stamp.seq} is 0.
    """

    stamp: Stamp
    ranges: Ranges
    signer: bytes | None = attr.ib(default=None, eq=False, repr=False)


@attr.s(frozen=True, slots=True, auto_attribs=True)
class Nack:
    """
    A server's request that source C{source}, in its run C{boot}, send again
    the datums of C{ranges}.

    @ivar sent: the server's clock when it asked (informative).
    """

    source: str
    boot: int
    sent: float
    ranges: Ranges


# --- keys, sources and ids ---------------------------------------------------


def validateKey(key: str, allowWildcards: bool = False) -> str:
    """
    Check a key against Artcast's key rules.

    A key is 1 to 256 characters, with no control characters (C0, DEL, C1)
    and no lone surrogates; its levels are separated by C{/} and none is
    empty (so no leading or trailing C{/} and no C{//}), C{.} or C{..}.
    The levels C{*} (exactly one level) and C{...} (one or more levels, last
    only) are wildcards, allowed only when C{allowWildcards} is true: a
    published key never contains them.

    @param key: the key to check.
    @param allowWildcards: whether C{key} is a pattern (from a request).
    @return: C{key}, unchanged.
    @raise BadKey: with a message saying which rule C{key} breaks.
    """
    if not isinstance(key, str):
        raise BadKey(f"a key must be a string, not {type(key).__name__}")
    if not key:
        raise BadKey("a key must not be empty")
    if len(key) > MAX_KEY_LENGTH:
        raise BadKey(
            f"a key must be at most {MAX_KEY_LENGTH} characters, "
            f"this one has {len(key)}"
        )
    bad = _BAD_KEY_CHAR_RE.search(key)
    if bad is not None:
        raise BadKey(
            f"a key must not contain the character U+{ord(bad.group()):04X} "
            f"(at position {bad.start()})"
        )
    levels = key.split("/")
    last = len(levels) - 1
    for index, level in enumerate(levels):
        if not level:
            raise BadKey(
                f"key {key!r} has an empty level "
                "(a leading or trailing '/', or '//')"
            )
        if level in (".", ".."):
            raise BadKey(f"key {key!r} has a {level!r} level")
        if level in _WILDCARDS:
            if not allowWildcards:
                raise BadKey(
                    f"key {key!r} has the wildcard level {level!r}, "
                    "which a published key must not contain"
                )
            if level == "..." and index != last:
                raise BadKey(f"key {key!r} has '...' before its last level")
    return key


def validateSource(source: str) -> str:
    """
    Check a source name: 1 to 64 characters of C{[A-Za-z0-9_-]}.

    @return: C{source}, unchanged.
    @raise ValueError: if it is not a valid source name.
    """
    if not isinstance(source, str) or _SOURCE_RE.fullmatch(source) is None:
        raise ValueError(
            f"a source name must be 1 to {MAX_SOURCE_LENGTH} characters "
            f"of A-Z a-z 0-9 _ -, not {source!r}"
        )
    return source


def quoteKey(key: str) -> str:
    """
    A key (or pattern) as it is written in a URL or a header: ASCII, every
    character but L{KEY_SAFE} and the unreserved ones percent-encoded as
    UTF-8.
    """
    return quote(key, safe=KEY_SAFE)


def keyPath(key: str) -> str:
    """
    The path of a key (or pattern) on a server: C{/artcasts/<quoted key>}.
    """
    return "/artcasts/" + quoteKey(key)


def parseKeyFile(contents: bytes) -> bytes:
    """
    Turn the contents of a signing key file into the HMAC key.

    The key is the file's bytes without trailing whitespace (so a file
    written by C{echo} works); the server and C{artcast-send --key-file}
    both read key files this way.

    @raise ValueError: if nothing is left.
    """
    key = contents.rstrip(b" \t\r\n")
    if not key:
        raise ValueError("the signing key file is empty")
    return key


# --- strict JSON ---------------------------------------------------------------


def _rejectConstant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finiteFloat(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise ValueError(f"{text[:40]} is out of range")
    return number


class _DuplicateMember(ValueError):
    """
    An object names one member twice (C{docs/protocol.md} forbids it).

    @ivar name: the member's name.
    """

    def __init__(self, name: str) -> None:
        super().__init__(f"the member {name[:40]!r} appears twice in an object")
        self.name = name


def _uniqueObject(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """
    Build a JSON object, refusing a member name given twice: a lenient
    parser would keep the last one, so two readers of one datagram (a
    signature checker, a relay, a server) could see different values.
    """
    document = dict(pairs)
    if len(document) != len(pairs):
        seen: set[str] = set()
        for name, _ in pairs:
            if name in seen:
                raise _DuplicateMember(name)
            seen.add(name)
    return document


class _DuplicateMemberDatagram(BadDatagram):
    """
    A L{BadDatagram} C{"duplicate-member"} that names the member.
    """

    def __init__(self, member: str, message: str) -> None:
        super().__init__("duplicate-member", message)
        self.member = member


_DECODER = json.JSONDecoder(
    parse_constant=_rejectConstant, parse_float=_finiteFloat, object_pairs_hook=_uniqueObject
)


def _tooDeep(document: object, limit: int) -> bool:
    """
    Whether C{document} nests arrays and objects more than C{limit} deep.
    """
    stack: list[tuple[object, int]] = [(document, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        if isinstance(node, dict):
            stack.extend((child, depth + 1) for child in node.values()
                         if isinstance(child, (dict, list)))
        elif isinstance(node, list):
            stack.extend((child, depth + 1) for child in node
                         if isinstance(child, (dict, list)))
    return False


#: A JSON string literal, and a run of anything but brackets.
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_NOT_BRACKETS = re.compile(r"[^\[\]{}]+")
_BRACKET_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}


def _textTooDeep(text: str, limit: int) -> bool:
    """
    Whether the JSON text C{text} (valid JSON: it parsed) nests arrays and
    objects more than C{limit} deep, read from its brackets outside strings.

    The same answer as L{_tooDeep} of the parsed document, at a cost that
    follows the text's bytes in C loops (regular expressions, C{accumulate})
    rather than a Python step per array and object: a 65 KB datagram of
    C{[{},{},...]} is 21,000 objects.
    """
    brackets = _NOT_BRACKETS.sub("", _JSON_STRING.sub("", text))
    if len(brackets) <= limit:
        return False
    return max(accumulate(map(_BRACKET_STEP.__getitem__, brackets))) > limit


def loadJSON(text: str, reason: str = "not-json") -> Any:
    """
    Parse strict JSON, the only JSON Artcast reads from a source (a
    datagram, a published body, a value given to C{artcast-send}): no NaN or
    Infinity, no numbers that overflow, no lone surrogates, no member name
    twice in one object, at most L{MAX_DEPTH} levels of nesting.

    @param reason: the L{BadDatagram.reason} for text that is not JSON.
    @raise BadDatagram: if C{text} is not such a document; C{"duplicate-member"}
        when an object names a member twice.
    """
    try:
        document = _DECODER.decode(text)
    except RecursionError:
        raise BadDatagram("too-deep", "JSON nested too deeply") from None
    except _DuplicateMember as e:
        raise _DuplicateMemberDatagram(e.name, f"not strict JSON: {e}") from None
    except ValueError as e:  # JSONDecodeError and our hooks' errors
        raise BadDatagram(reason, f"not JSON: {e}") from None
    if text.count("[") + text.count("{") > MAX_DEPTH and _textTooDeep(text, MAX_DEPTH):
        raise BadDatagram("too-deep", f"JSON nested more than {MAX_DEPTH} levels deep")
    if _SURROGATE_ESCAPE_RE.search(text) is not None:
        try:
            encodeJSON(document, strict=True)
        except UnicodeEncodeError:
            raise BadDatagram(reason, "JSON string holds a lone surrogate") from None
    return document


def valueTooDeep(text: str) -> bool:
    """
    Whether the JSON text of a value (valid JSON: it parsed) nests arrays
    and objects more than L{MAX_VALUE_DEPTH} deep, too deep to be sent in a
    datagram's object.
    """
    return text.count("[") + text.count("{") > MAX_VALUE_DEPTH and _textTooDeep(
        text, MAX_VALUE_DEPTH
    )


_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
_STRICT_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)

#: Strict compact JSON text as a C{str}, for building a document around it.
_jsonText = _STRICT_ENCODER.encode


def encodeJSON(value: object, strict: bool = False) -> bytes:
    """
    Encode a value as the compact UTF-8 JSON text Artcast sends and holds:
    no spaces, characters beyond ASCII as themselves.

    @param strict: refuse NaN and Infinity, as a datagram must; otherwise
        they are written as Python's L{json} writes them (C{NaN},
        C{Infinity}), as the server has always held a value given to it so.
    @raise ValueError: for NaN or Infinity when C{strict};
        L{UnicodeEncodeError} (a L{ValueError}) for a string with a lone
        surrogate.
    @raise TypeError: for a type JSON does not have.
    """
    return (_STRICT_ENCODER if strict else _ENCODER).encode(value).encode("utf-8")


# --- signatures ---------------------------------------------------------------


def signDocument(document: bytes, signingKey: bytes) -> bytes:
    """
    Sign a JSON object: replace its final C{"}"} with
    C{,"sig":"<HMAC-SHA256 of document, 64 lowercase hex digits>"}}.

    @param document: an unsigned JSON object with at least one member,
        ending with C{"}"} (no trailing whitespace).
    """
    if not document.endswith(b"}"):
        raise ValueError("only a document that ends with '}' can be signed")
    digest = hmac.new(signingKey, document, hashlib.sha256).hexdigest()
    return document[:-1] + _SIG_PREFIX + digest.encode("ascii") + b'"}'


def _checkSignature(
    data: bytes, signingKeys: Sequence[bytes], requireSignature: bool
) -> tuple[bytes, bytes | None]:
    """
    Find and verify a signature at the end of C{data}.

    @return: the bytes to parse (the unsigned document when the signature
        was verified) and the key that verified it (L{None} for none).
    @raise BadDatagram: C{"bad-signature"} if a signature is present but
        matches no key; C{"unsigned"} if none is present but one is required.
    """
    hasSuffix = (
        len(data) > _SIG_SUFFIX_LENGTH
        and data.endswith(b'"}')
        and data[-_SIG_SUFFIX_LENGTH:-_SIG_SUFFIX_LENGTH + len(_SIG_PREFIX)] == _SIG_PREFIX
    )
    if not hasSuffix:
        if requireSignature:
            raise BadDatagram("unsigned", "datagram is not signed and a signature is required")
        return data, None
    if not signingKeys:
        return data, None
    signature = data[-66:-2]
    if _HEX_RE.fullmatch(signature) is None:
        raise BadDatagram("bad-signature", "signature is not 64 lowercase hex digits")
    unsigned = data[:-_SIG_SUFFIX_LENGTH] + b"}"
    for signingKey in signingKeys:
        expected = hmac.new(signingKey, unsigned, hashlib.sha256).hexdigest()
        if hmac.compare_digest(expected.encode("ascii"), signature):
            return unsigned, signingKey
    raise BadDatagram("bad-signature", "signature matches no signing key")


# --- parsing --------------------------------------------------------------------


def _document(
    data: bytes, signingKeys: Sequence[bytes], requireSignature: bool
) -> tuple[Any, bytes | None]:
    """
    The steps every datagram goes through: size, signature, UTF-8, JSON.

    @return: the parsed document and the key that verified its signature
        (L{None} for none).
    """
    if not isinstance(data, bytes):
        raise BadDatagram("bad-shape", f"a datagram is bytes, not {type(data).__name__}")
    if len(data) > MAX_DATAGRAM:
        raise BadDatagram("too-large", f"datagram of {len(data)} bytes exceeds {MAX_DATAGRAM}")
    data, signer = _checkSignature(data, signingKeys, requireSignature)
    verified = signer is not None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BadDatagram("not-utf8", f"not UTF-8: {e}") from None
    try:
        document = loadJSON(text)
    except BadDatagram as e:
        if signingKeys and not verified and isinstance(e, _DuplicateMemberDatagram) \
                and e.member == "sig":
            # A second "sig": a signature problem first.
            raise BadDatagram("bad-signature",
                              'the "sig" member must be the last bytes of the datagram') from None
        raise
    if signingKeys and not verified and isinstance(document, dict) and "sig" in document:
        raise BadDatagram("bad-signature",
                          'the "sig" member must be the last bytes of the datagram')
    return document, signer


def _shape(message: str) -> BadDatagram:
    return BadDatagram("bad-shape", message)


def _checkedKey(key: object) -> str:
    if not isinstance(key, str):
        raise _shape(f"the key must be a string, not {_jsonType(key)}")
    try:
        return validateKey(key)
    except BadKey as e:
        raise BadDatagram("bad-key", str(e)) from None


def _jsonType(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _isInteger(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _counter(document: dict[str, Any], name: str, minimum: int) -> int:
    value = document.get(name)
    if not _isInteger(value) or not minimum <= value <= MAX_COUNTER:
        raise _shape(f'"{name}" must be an integer from {minimum} to 2**63-1')
    return value


def _version(document: dict[str, Any], what: str) -> None:
    """
    Check that an object says C{"v": 2}.
    """
    if "v" not in document:
        raise _shape(f'{what} needs "v": 2')
    version = document["v"]
    if not _isInteger(version) or version != 2:
        raise BadDatagram("bad-version", f"unsupported version {version!r:.40}")


def _stamp(document: dict[str, Any], withSeq: bool) -> Stamp:
    """
    Read and check C{v}, C{src}, C{boot}, C{seq} and C{t}.
    """
    _version(document, "an object datagram")
    source = document.get("src")
    if not isinstance(source, str) or _SOURCE_RE.fullmatch(source) is None:
        raise _shape(f'"src" must be 1 to {MAX_SOURCE_LENGTH} characters of A-Z a-z 0-9 _ -')
    boot = _counter(document, "boot", 0)
    seq = _counter(document, "seq", 1) if withSeq else 0
    sent = document.get("t")
    try:
        if isinstance(sent, bool) or not math.isfinite(sent):
            raise TypeError()
    except (TypeError, OverflowError):
        raise _shape('"t" must be a number (Unix seconds)') from None
    return Stamp(source=source, boot=boot, seq=seq, sent=float(sent))


def _tooLargeValue(value: object, maxValueSize: int) -> BadDatagram:
    return BadDatagram("too-large", f"value of {len(encodeJSON(value, strict=True))} bytes "
                       f"exceeds {maxValueSize}")


def _repairable(document: dict[str, Any]) -> bool:
    """
    Read the optional C{r} member: C{1} when the source answers NACKs.
    """
    flag = document.get("r", 0)
    if not _isInteger(flag) or flag not in (0, 1):
        raise _shape('"r" must be 0 or 1')
    return flag == 1


def _ranges(document: dict[str, Any], name: str) -> Ranges:
    """
    Read a member holding 1 to L{MAX_RANGES} ranges C{[first, last]} of
    sequence numbers, ascending and not overlapping.
    """
    ranges = document.get(name)
    if not isinstance(ranges, list) or not 1 <= len(ranges) <= MAX_RANGES:
        raise _shape(f'"{name}" must be an array of 1 to {MAX_RANGES} ranges [first, last]')
    result = []
    previous = 0
    for pair in ranges:
        if (
            not isinstance(pair, list)
            or len(pair) != 2
            or not all(_isInteger(n) for n in pair)
            or not previous < pair[0] <= pair[1] <= MAX_COUNTER
        ):
            raise _shape(f'"{name}" must hold ascending, non-overlapping ranges '
                         f"[first, last] of sequence numbers from 1 to 2**63-1")
        result.append((pair[0], pair[1]))
        previous = pair[1]
    return tuple(result)


def _fragment(document: dict[str, Any], key: str, stamp: Stamp,
              maxValueSize: int | None, signer: bytes | None) -> Fragment:
    if "value" in document:
        raise BadDatagram("bad-fragment", 'a fragment must not have "value"')
    part, parts, chunk = document.get("part"), document.get("parts"), document.get("chunk")
    if not _isInteger(parts) or not 1 <= parts <= MAX_PARTS:
        raise BadDatagram("bad-fragment", f'"parts" must be an integer from 1 to {MAX_PARTS}')
    if not _isInteger(part) or not 0 <= part < parts:
        raise BadDatagram("bad-fragment", '"part" must be an integer from 0 to "parts" - 1')
    if not isinstance(chunk, str):
        raise BadDatagram("bad-fragment", '"chunk" must be a string')
    if maxValueSize is not None and len(chunk) > maxValueSize:
        raise BadDatagram("too-large", f"fragment chunk exceeds {maxValueSize} bytes")
    return Fragment(key=key, stamp=stamp, part=part, parts=parts, chunk=chunk,
                    repairable=_repairable(document), signer=signer)


def _batch(document: dict[str, Any], size: int, maxValueSize: int | None,
           signer: bytes | None) -> Batch:
    """
    Read a batch: C{seq} is its first datum's, C{batch} 1 to L{MAX_BATCH}
    items C{[key, value]}.
    """
    stamp = _stamp(document, withSeq=True)
    items = document["batch"]
    if not isinstance(items, list) or not 1 <= len(items) <= MAX_BATCH:
        raise _shape(f'"batch" must be an array of 1 to {MAX_BATCH} items [key, value]')
    if stamp.seq + len(items) - 1 > MAX_COUNTER:
        raise _shape('a batch\'s last "seq" would pass 2**63-1')
    checked = []
    for item in items:
        if not isinstance(item, list) or len(item) != 2:
            raise _shape("a batch item is [key, value]")
        key, value = item
        checked.append((_checkedKey(key), value))
    if maxValueSize is not None and size * 5 > maxValueSize:
        for _, value in checked:
            if len(encodeJSON(value, strict=True)) > maxValueSize:
                raise _tooLargeValue(value, maxValueSize)
    return Batch(stamp=stamp, items=tuple(checked), repairable=_repairable(document),
                 signer=signer)


def _control(document: dict[str, Any], signer: bytes | None) -> Heartbeat | Confirm | Gone:
    """
    Read a source's heartbeat, NCF or gone (a datagram without C{key}).
    """
    if "last" in document:
        stamp = _stamp(document, withSeq=False)
        return Heartbeat(stamp=stamp, last=_counter(document, "last", 0), signer=signer)
    if "ncf" in document:
        stamp = _stamp(document, withSeq=False)
        return Confirm(stamp=stamp, ranges=_ranges(document, "ncf"), signer=signer)
    if "gone" in document:
        stamp = _stamp(document, withSeq=False)
        return Gone(stamp=stamp, ranges=_ranges(document, "gone"), signer=signer)
    _stamp(document, withSeq=True)
    raise _shape(f"the key must be a string, not {_jsonType(document.get('key'))}")


def parseData(
    data: bytes,
    signingKeys: Sequence[bytes] = (),
    requireSignature: bool = False,
    maxValueSize: int | None = None,
) -> DataMessage | Fragment | Batch | Heartbeat | Confirm | Gone:
    """
    Parse a datagram from the data group.

    @param data: the datagram's bytes.
    @param signingKeys: HMAC keys; a signed datagram must match one of them.
        Without keys a signature is not checked.
    @param requireSignature: drop datagrams that carry no signature
        (including every version 1 datagram).
    @param maxValueSize: drop values whose compact JSON text is larger than
        this many bytes (for a fragment: whose chunk is; for a batch: any
        of its values).
    @return: a L{DataMessage}; a L{Fragment} to feed to a
        L{artcast.server.feeds.reception.Reassembler}; a L{Batch} of
        datums; or a source's L{Heartbeat}, L{Confirm} (NCF) or L{Gone}.
    @raise BadDatagram: if C{data} is not a valid data datagram.
    """
    document, signer = _document(data, signingKeys, requireSignature)
    if isinstance(document, list):
        if len(document) != 2:
            raise _shape(f"a version 1 datagram is [key, value], not {len(document)} elements")
        key, value = document
        message = DataMessage(key=_checkedKey(key), value=value, stamp=None)
    elif isinstance(document, dict):
        if "key" not in document:
            if "batch" in document:
                return _batch(document, len(data), maxValueSize, signer)
            return _control(document, signer)
        stamp = _stamp(document, withSeq=True)
        key = _checkedKey(document["key"])
        if "chunk" in document or "part" in document or "parts" in document:
            return _fragment(document, key, stamp, maxValueSize, signer)
        if "value" not in document:
            raise _shape('a data datagram needs "value"')
        message = DataMessage(key=key, value=document["value"], stamp=stamp,
                              repairable=_repairable(document), signer=signer)
    else:
        raise _shape(f"a datagram is a JSON array or object, not {_jsonType(document)}")
    # Re-encoding can make a value at most ~4.5 times longer (1e15 becomes
    # 1000000000000000.0), so only a datagram this large can exceed the bound.
    if (maxValueSize is not None and len(data) * 5 > maxValueSize
            and len(encodeJSON(message.value, strict=True)) > maxValueSize):
        raise _tooLargeValue(message.value, maxValueSize)
    return message


def parseNack(data: bytes, signingKey: bytes | None = None) -> Nack:
    """
    Parse a NACK, as a source reads one from its socket.

    @param signingKey: the source's own key: when given, the NACK must be
        signed with it.
    @raise BadDatagram: if C{data} is not a valid NACK (C{"unsigned"} or
        C{"bad-signature"} when it is not signed with C{signingKey}).
    """
    keys = () if signingKey is None else (signingKey,)
    document, _ = _document(data, keys, signingKey is not None)
    if not isinstance(document, dict):
        raise _shape(f"a NACK is a JSON object, not {_jsonType(document)}")
    _version(document, "a NACK")
    source = document.get("nack")
    if not isinstance(source, str) or _SOURCE_RE.fullmatch(source) is None:
        raise _shape(f'"nack" must name a source: 1 to {MAX_SOURCE_LENGTH} characters '
                     "of A-Z a-z 0-9 _ -")
    boot = _counter(document, "boot", 0)
    sent = document.get("t")
    if not isinstance(sent, (int, float)) or isinstance(sent, bool) or not math.isfinite(sent):
        raise _shape('"t" must be a number (Unix seconds)')
    return Nack(source=source, boot=boot, sent=float(sent), ranges=_ranges(document, "seqs"))


def _checkedMeta(meta: object) -> dict[str, Any]:
    """
    Check registration metadata: an object whose C{description} and
    C{provenance} are strings (or null) and whose C{license} is null or an
    object whose C{uri} and C{title} are strings without control characters.
    Other members are kept as they are.
    """
    if not isinstance(meta, dict):
        raise _shape(f"registration metadata must be an object, not {_jsonType(meta)}")
    for name in ("description", "provenance"):
        if meta.get(name) is not None and not isinstance(meta[name], str):
            raise _shape(f'"{name}" must be a string')
    license = meta.get("license")
    if license is not None:
        if not isinstance(license, dict):
            raise _shape('"license" must be null or an object {"uri", "title"}')
        for name in ("uri", "title"):
            text = license.get(name)
            if text is None:
                continue
            if not isinstance(text, str):
                raise _shape(f'the license "{name}" must be a string')
            if CONTROL_CHARACTERS.search(text) is not None:
                raise _shape(f'the license "{name}" must not contain control characters')
    return meta


def _tooManyValues(document: object, limit: int) -> bool:
    """
    Whether C{document} holds more than C{limit} JSON values, counting
    itself, every member and element and everything inside them.
    """
    count = 0
    stack = [document]
    while stack:
        node = stack.pop()
        count += 1
        if count > limit:
            return True
        if isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return False


def _boundedMeta(meta: dict[str, Any], size: int, maxValueSize: int | None) -> dict[str, Any]:
    """
    Refuse metadata too large to hold: more than C{maxValueSize} bytes of
    compact JSON (like a datum's value) or more than L{MAX_META_VALUES}
    values (a few bytes of C{[{},{},...]} cost far more held than sent).

    @param size: the size of the datagram that carried C{meta}.
    @raise BadDatagram: C{"too-large"}.
    """
    # As in parseData: re-encoding makes a text at most ~4.5 times longer.
    if (maxValueSize is not None and size * 5 > maxValueSize
            and len(encodeJSON(meta, strict=True)) > maxValueSize):
        raise BadDatagram("too-large", f"registration metadata of "
                          f"{len(encodeJSON(meta, strict=True))} bytes exceeds {maxValueSize}")
    if size > MAX_META_VALUES and _tooManyValues(meta, MAX_META_VALUES):
        raise BadDatagram("too-large", f"registration metadata holds more than "
                          f"{MAX_META_VALUES} JSON values")
    return meta


def parseRegister(
    data: bytes,
    signingKeys: Sequence[bytes] = (),
    requireSignature: bool = False,
    maxValueSize: int | None = None,
) -> RegisterMessage:
    """
    Parse a datagram from the register group.

    A version 2 registration carries no C{seq} (one is ignored if present):
    the returned stamp's C{seq} is 0 and it must not be given to a
    L{SourceTracker}.

    @param signingKeys: as for L{parseData}.
    @param requireSignature: as for L{parseData}.
    @param maxValueSize: drop metadata whose compact JSON text is larger
        than this many bytes.  Metadata holding more than
        L{MAX_META_VALUES} JSON values is dropped whatever this is.
    @raise BadDatagram: if C{data} is not a valid registration.
    """
    document, _ = _document(data, signingKeys, requireSignature)
    if isinstance(document, list):
        if len(document) != 2:
            raise _shape(f"a version 1 registration is [key, meta], not {len(document)} elements")
        key, meta = document
        key = _checkedKey(key)
        meta = _boundedMeta(_checkedMeta(meta), len(data), maxValueSize)
        return RegisterMessage(key=key, meta=meta, stamp=None)
    if isinstance(document, dict):
        stamp = _stamp(document, withSeq=False)
        key = _checkedKey(document.get("key"))
        if "meta" not in document:
            raise _shape('a registration needs "meta"')
        meta = _boundedMeta(_checkedMeta(document["meta"]), len(data), maxValueSize)
        return RegisterMessage(key=key, meta=meta, stamp=stamp)
    raise _shape(f"a registration is a JSON array or object, not {_jsonType(document)}")


# --- encoding ----------------------------------------------------------------------


def _envelope(stamp: Stamp, key: str | None, withSeq: bool, repairable: bool = False) -> str:
    """
    The start of a version 2 document, up to and including the key member
    (when there is one) and its trailing comma, in the documented member
    order: C{v}, C{src}, C{boot}, C{seq}, C{t}, C{r}, C{key}.
    """
    validateSource(stamp.source)
    if not (_isInteger(stamp.boot) and 0 <= stamp.boot <= MAX_COUNTER):
        raise ValueError(f"boot must be an integer from 0 to 2**63-1, not {stamp.boot!r}")
    if withSeq and not (_isInteger(stamp.seq) and 1 <= stamp.seq <= MAX_COUNTER):
        raise ValueError(f"seq must be an integer from 1 to 2**63-1, not {stamp.seq!r}")
    seq = f'"seq":{stamp.seq},' if withSeq else ""
    flag = '"r":1,' if repairable else ""
    keyMember = "" if key is None else f'"key":{_jsonText(key)},'
    return (
        f'{{"v":2,"src":"{stamp.source}","boot":{stamp.boot},{seq}'
        f'"t":{_jsonText(float(stamp.sent))},{flag}{keyMember}'
    )


def _valueText(value: object) -> str:
    """
    The compact JSON text of a value a server would accept.

    @raise ValueError: if C{value} is not JSON (NaN, a lone surrogate, a type
        JSON does not have) or nests more than L{MAX_VALUE_DEPTH} levels.
    """
    try:
        text = _jsonText(value)
        text.encode("utf-8")
    except (TypeError, RecursionError) as e:
        raise ValueError(f"value is not JSON: {e}") from None
    except UnicodeEncodeError:
        raise ValueError("value is not JSON: a string holds a lone surrogate") from None
    if valueTooDeep(text):
        raise ValueError(f"value nests more than {MAX_VALUE_DEPTH} levels deep")
    return text


def _finish(document: str, signingKey: bytes | None) -> bytes:
    data = document.encode("utf-8")
    return data if signingKey is None else signDocument(data, signingKey)


def _chunks(text: str, budget: int) -> list[str]:
    """
    Split C{text} into pieces whose JSON string encodings (without the
    quotes) are at most C{budget} bytes each.
    """
    pieces = []
    position = 0
    while position < len(text):
        length = min(budget, len(text) - position)
        while True:
            size = len(encodeJSON(text[position:position + length], strict=True)) - 2
            if size <= budget:
                break
            length = max(1, min(length - 1, length * budget // size))
        pieces.append(text[position:position + length])
        position += length
    return pieces


def encodeData(
    key: str,
    value: object,
    stamp: Stamp | None = None,
    signingKey: bytes | None = None,
    maxDatagram: int = MAX_DATAGRAM,
    repairable: bool = False,
) -> list[bytes]:
    """
    Encode a datum as datagrams.

    Without a stamp this is one version 1 datagram C{[key, value]}.  With a
    stamp it is one version 2 datagram, or, when that would be larger than
    C{maxDatagram}, up to L{MAX_PARTS} fragments that each fit.

    @param signingKey: sign every datagram (version 2 only).
    @param repairable: mark the datagrams C{"r":1}: the source keeps them
        and answers NACKs (version 2 only).
    @return: the datagrams to send, in order.
    @raise ValueError: (L{BadKey} among them) for a bad key, a value that is
        not JSON (NaN, a lone surrogate, an unknown type), a signature
        asked of version 1, or a value too large.
    """
    validateKey(key)
    valueText = _valueText(value)
    if stamp is None:
        if signingKey is not None:
            raise ValueError("version 1 datagrams cannot be signed; pass a stamp")
        data = encodeJSON([key, value], strict=True)
        if len(data) > maxDatagram:
            raise ValueError(f"version 1 datagram of {len(data)} bytes exceeds {maxDatagram}")
        return [data]
    overhead = 0 if signingKey is None else SIGNATURE_OVERHEAD
    head = _envelope(stamp, key, withSeq=True, repairable=repairable)
    whole = _finish(f'{head}"value":{valueText}}}', signingKey)
    if len(whole) <= maxDatagram:
        return [whole]
    # Fragment: each datagram is head + "part":P,"parts":N,"chunk":"..."}.
    worst = f'"part":{MAX_PARTS},"parts":{MAX_PARTS},"chunk":""}}'
    budget = maxDatagram - len(head.encode("utf-8")) - len(worst) - overhead
    if budget < 16:
        raise ValueError(f"maxDatagram {maxDatagram} is too small for a fragment")
    if len(valueText.encode("utf-8")) > budget * MAX_PARTS:
        raise ValueError(f"value too large: more than {MAX_PARTS} fragments")
    pieces = _chunks(valueText, budget)
    if len(pieces) > MAX_PARTS:
        raise ValueError(f"value too large: {len(pieces)} fragments, at most {MAX_PARTS}")
    return [
        _finish(f'{head}"part":{index},"parts":{len(pieces)},"chunk":{_jsonText(piece)}}}',
                signingKey)
        for index, piece in enumerate(pieces)
    ]


def encodeRegister(
    key: str,
    meta: dict[str, Any],
    stamp: Stamp | None = None,
    signingKey: bytes | None = None,
) -> bytes:
    """
    Encode a registration: version 1 C{[key, meta]} without a stamp,
    version 2 (no C{seq}) with one.

    @raise ValueError: (L{BadKey} among them) for a bad key or metadata that
        L{parseRegister} would refuse (more than L{MAX_META_VALUES} values
        among them), a signature asked of version 1, or a
        datagram larger than L{MAX_DATAGRAM}.
    """
    validateKey(key)
    try:
        _checkedMeta(meta)
    except BadDatagram as e:
        raise ValueError(f"bad registration metadata: {e}") from None
    if _tooManyValues(meta, MAX_META_VALUES):
        raise ValueError(f"registration metadata holds more than {MAX_META_VALUES} JSON values")
    metaText = _valueText(meta)
    if stamp is None:
        if signingKey is not None:
            raise ValueError("version 1 datagrams cannot be signed; pass a stamp")
        data = encodeJSON([key, meta], strict=True)
    else:
        data = _finish(f'{_envelope(stamp, key, withSeq=False)}"meta":{metaText}}}', signingKey)
    if len(data) > MAX_DATAGRAM:
        raise ValueError(f"registration of {len(data)} bytes exceeds {MAX_DATAGRAM}")
    return data


def batchItem(key: str, value: object) -> bytes:
    """
    One datum as a batch item: the compact JSON text C{["key",value]}.

    @raise ValueError: (L{BadKey} among them) for a bad key or a value that
        is not JSON or nests too deeply.
    """
    validateKey(key)
    return f"[{_jsonText(key)},{_valueText(value)}]".encode("utf-8")


def _batchHead(stamp: Stamp, repairable: bool) -> str:
    return _envelope(stamp, None, withSeq=True, repairable=repairable) + '"batch":['


def batchOverhead(stamp: Stamp, signed: bool, repairable: bool = True) -> int:
    """
    The bytes of a batch datagram besides its items and the commas between
    them: C{len(encodeBatch(items, stamp, key))} is this plus the items'
    lengths plus C{len(items) - 1}.
    """
    size = len(_batchHead(stamp, repairable).encode("utf-8")) + 2
    return size + (SIGNATURE_OVERHEAD if signed else 0)


def encodeBatch(
    items: Sequence[bytes],
    stamp: Stamp,
    signingKey: bytes | None = None,
    repairable: bool = True,
) -> bytes:
    """
    Encode several datums as one batch datagram: C{items} (from
    L{batchItem}) are the datums of sequence numbers C{stamp.seq},
    C{stamp.seq + 1}, ...

    @raise ValueError: for no items or more than L{MAX_BATCH}, or a last
        sequence number past 2**63-1.
    """
    if not 1 <= len(items) <= MAX_BATCH:
        raise ValueError(f"a batch holds 1 to {MAX_BATCH} items, not {len(items)}")
    if _isInteger(stamp.seq) and stamp.seq + len(items) - 1 > MAX_COUNTER:
        raise ValueError("a batch's last seq would pass 2**63-1")
    head = _batchHead(stamp, repairable).encode("utf-8")
    data = head + b",".join(items) + b"]}"
    return data if signingKey is None else signDocument(data, signingKey)


def _rangesText(ranges: Iterable[tuple[int, int]]) -> str:
    """
    Check ranges as a reader would, and write them as JSON.
    """
    pairs = [(first, last) for first, last in ranges]
    if not 1 <= len(pairs) <= MAX_RANGES:
        raise ValueError(f"1 to {MAX_RANGES} ranges, not {len(pairs)}")
    previous = 0
    for first, last in pairs:
        if not (_isInteger(first) and _isInteger(last) and previous < first <= last <= MAX_COUNTER):
            raise ValueError("ranges must be ascending, non-overlapping [first, last] "
                             "of sequence numbers from 1 to 2**63-1")
        previous = last
    return "[" + ",".join(f"[{first},{last}]" for first, last in pairs) + "]"


def encodeHeartbeat(stamp: Stamp, last: int, signingKey: bytes | None = None) -> bytes:
    """
    Encode a heartbeat: the source's last sequence number sent (0 before its
    first datum).  C{stamp.seq} is not written.
    """
    if not (_isInteger(last) and 0 <= last <= MAX_COUNTER):
        raise ValueError(f"last must be an integer from 0 to 2**63-1, not {last!r}")
    return _finish(f'{_envelope(stamp, None, withSeq=False)}"last":{last}}}', signingKey)


def encodeConfirm(
    stamp: Stamp, ranges: Iterable[tuple[int, int]], signingKey: bytes | None = None
) -> bytes:
    """
    Encode an NCF: the source is re-sending the datums of C{ranges} now.
    """
    return _finish(f'{_envelope(stamp, None, withSeq=False)}"ncf":{_rangesText(ranges)}}}',
                   signingKey)


def encodeGone(
    stamp: Stamp, ranges: Iterable[tuple[int, int]], signingKey: bytes | None = None
) -> bytes:
    """
    Encode a gone: the source no longer holds the datums of C{ranges}.
    """
    return _finish(f'{_envelope(stamp, None, withSeq=False)}"gone":{_rangesText(ranges)}}}',
                   signingKey)


def encodeNack(
    source: str,
    boot: int,
    ranges: Iterable[tuple[int, int]],
    sent: float,
    signingKey: bytes | None = None,
) -> bytes:
    """
    Encode a NACK: ask source C{source}, in its run C{boot}, for the datums
    of C{ranges} again.
    """
    validateSource(source)
    if not (_isInteger(boot) and 0 <= boot <= MAX_COUNTER):
        raise ValueError(f"boot must be an integer from 0 to 2**63-1, not {boot!r}")
    return _finish(
        f'{{"v":2,"nack":"{source}","boot":{boot},"t":{_jsonText(float(sent))},'
        f'"seqs":{_rangesText(ranges)}}}',
        signingKey,
    )


def toRanges(seqs: Iterable[int]) -> list[tuple[int, int]]:
    """
    Sequence numbers as sorted C{(first, last)} ranges, neighbours merged:
    C{[5, 1, 2, 3, 9]} gives C{[(1, 3), (5, 5), (9, 9)]}.
    """
    ranges: list[tuple[int, int]] = []
    for seq in sorted(set(seqs)):
        if ranges and ranges[-1][1] == seq - 1:
            ranges[-1] = (ranges[-1][0], seq)
        else:
            ranges.append((seq, seq))
    return ranges
