"""
Tests for L{artcast.wire}: the datagram formats.
"""

from __future__ import annotations

import ast
import hashlib
import hmac
import importlib
import inspect
import json
import pkgutil
from types import ModuleType
from urllib.parse import unquote

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

import artcast.client
import artcast.send
import artcast.source
import artcast.watch
import artcast.wire
from artcast.server.feeds.reception import (
    Reassembler,
    SourceTracker,
    walkLost,
)
from artcast.wire import (
    CONTROL_CHARACTERS,
    KEY_SAFE,
    MAX_DATAGRAM,
    MAX_DEPTH,
    MAX_PARTS,
    MAX_VALUE_DEPTH,
    REASONS,
    SIGNATURE_OVERHEAD,
    BadDatagram,
    BadKey,
    DataMessage,
    DatumId,
    Fragment,
    RegisterMessage,
    Stamp,
    encodeData,
    encodeJSON,
    encodeRegister,
    keyPath,
    loadJSON,
    parseData,
    parseKeyFile,
    parseRegister,
    quoteKey,
    signDocument,
    validateKey,
    validateSource,
    valueTooDeep,
)
from artcast.wire import _textTooDeep, _tooDeep

STAMP = Stamp(source="oslo-station", boot=1795312345123, seq=42, sent=1795312399.123)
KEY = b"correct horse battery staple"

jsonScalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
)
jsonValues = st.recursive(
    jsonScalars,
    lambda children: st.lists(children, max_size=5)
    | st.dictionaries(st.text(max_size=20), children, max_size=5),
    max_leaves=20,
)


def v2(**members: object) -> bytes:
    """
    A version 2 data document with the usual stamp, overridden by
    C{members} (a member set to C{...} is left out).
    """
    document: dict[str, object] = {
        "v": 2, "src": "oslo-station", "boot": 1795312345123, "seq": 42,
        "t": 1795312399.123, "key": "weather/oslo/temp", "value": 21.5,
    }
    document.update(members)
    return json.dumps({k: v for k, v in document.items() if v is not ...}).encode()


class ReasonMixin:
    """
    Assert the reason of a refused datagram.
    """

    def assertReason(self, reason, function, *args, **kwargs):
        """
        Call C{function} and check it raises L{BadDatagram} with C{reason}.
        """
        exc = self.assertRaises(BadDatagram, function, *args, **kwargs)
        self.assertEqual(exc.reason, reason, str(exc))
        self.assertIn(reason, REASONS)
        self.assertTrue(str(exc))
        return exc


class StampTests(SynchronousTestCase):
    """
    L{Stamp} and datum ids.
    """

    def test_datumId(self) -> None:
        """
        A stamp's datum id is C{<source>.<boot>.<seq>}.
        """
        self.assertEqual(STAMP.datumId(), "oslo-station.1795312345123.42")

    def test_parseDatumId(self) -> None:
        """
        L{DatumId.parse} splits an id back into source, boot and seq.
        """
        self.assertEqual(DatumId.parse(STAMP.datumId()), ("oslo-station", 1795312345123, 42))
        self.assertEqual(DatumId.parse("a_b-C.0.1"), ("a_b-C", 0, 1))

    def test_parseDatumIdRejects(self) -> None:
        """
        L{DatumId.parse} raises L{ValueError} for anything that is not an id.
        """
        for text in [
            "", "a.1", "a.1.2.3", ".1.2", "a b.1.2", "a.01.2", "a.1.02", "a.1.0",
            "a.-1.2", "a.+1.2", "a.1.2 ", "a.1.x", "a.1.9223372036854775808",
            "a." + "9" * 5000 + ".1", "é.1.2", "a" * 65 + ".1.2", "latest",
            "a.١.2",
        ]:
            self.assertRaises(ValueError, DatumId.parse, text)
        self.assertRaises(ValueError, DatumId.parse, None)

    def test_validateSource(self) -> None:
        """
        A source name is 1 to 64 characters of C{[A-Za-z0-9_-]}.
        """
        self.assertEqual(validateSource("a" * 64), "a" * 64)
        for bad in ["", "a" * 65, "a.b", "a b", "é", "a\n", 5]:
            self.assertRaises(ValueError, validateSource, bad)

    def test_parseKeyFile(self) -> None:
        """
        A key file's trailing whitespace is not part of the key; an empty
        one is refused.
        """
        self.assertEqual(parseKeyFile(b"secret \r\n"), b"secret")
        self.assertEqual(parseKeyFile(b" a\nb\n"), b" a\nb")
        self.assertRaises(ValueError, parseKeyFile, b"\n\n")


class ValidateKeyTests(SynchronousTestCase):
    """
    L{validateKey}: the key rules shared by datagrams and HTTP.
    """

    def test_valid(self) -> None:
        """
        Ordinary keys, including non-ASCII, spaces and dots, are returned.
        """
        for key in ["test/tick", "a", "x" * 256, "température/oslo", "a b/c.d",
                    "a/..../b", "a/.x", "*a", "a*/b"]:
            self.assertEqual(validateKey(key), key)

    def test_bad(self) -> None:
        """
        Each rule is enforced with a L{BadKey} that names the problem.
        """
        cases = {
            "": "empty",
            "x" * 257: "257",
            "a\x00b": "U+0000",
            "a\nb": "U+000A",
            "a\x7fb": "U+007F",
            "a\x85b": "U+0085",
            "a\x9fb": "U+009F",
            "a\ud800b": "U+D800",
            "/a": "empty level",
            "a/": "empty level",
            "a//b": "empty level",
            "a/./b": "'.'",
            "../a": "'..'",
            "a/*": "wildcard",
            "a/...": "wildcard",
        }
        for key, words in cases.items():
            exc = self.assertRaises(BadKey, validateKey, key)
            self.assertIsInstance(exc, ValueError)
            self.assertIn(words, str(exc))
        self.assertRaises(BadKey, validateKey, 42)

    def test_wildcards(self) -> None:
        """
        With C{allowWildcards}, C{*} may be any level and C{...} only the last.
        """
        for key in ["*", "test/*", "*/tick", "a/*/b", "...", "a/...", "*/..."]:
            self.assertEqual(validateKey(key, allowWildcards=True), key)
        for key in [".../a", "a/.../b", "a//*", "a/\x01"]:
            self.assertRaises(BadKey, validateKey, key, allowWildcards=True)


class VersionOneTests(ReasonMixin, SynchronousTestCase):
    """
    Version 1 datagrams: C{[key, value]} and C{[key, meta]}.
    """

    def test_data(self) -> None:
        """
        C{["test/tick", 42]} is a datum without a stamp.
        """
        self.assertEqual(parseData(b'["test/tick", 42]'),
                         DataMessage(key="test/tick", value=42, stamp=None))

    @settings(max_examples=200, deadline=None)
    @given(jsonValues)
    def test_roundTrip(self, value: object) -> None:
        """
        Any JSON value survives L{encodeData} without a stamp and L{parseData}.
        """
        [datagram] = encodeData("a/b", value)
        self.assertEqual(json.loads(datagram), ["a/b", value])
        self.assertEqual(parseData(datagram), DataMessage("a/b", value, None))

    def test_register(self) -> None:
        """
        C{[key, meta]} keeps every member of the metadata, license or not.
        """
        meta = {"description": "d", "provenance": "p",
                "license": {"uri": "https://example.com/l", "title": "L"}, "extra": [1]}
        datagram = json.dumps(["test/tick", meta]).encode()
        self.assertEqual(parseRegister(datagram), RegisterMessage("test/tick", meta, None))
        for meta in [{}, {"license": None}, {"description": None}, {"license": {}}]:
            self.assertEqual(parseRegister(encodeRegister("a", meta)).meta, meta)

    def test_shape(self) -> None:
        """
        Arrays of the wrong length, non-string keys and scalar documents are
        C{bad-shape}; a bad key string is C{bad-key}.
        """
        for datagram in [b"[]", b'["a"]', b'["a", 1, 2]', b"[1, 2]", b"[null, 2]",
                         b"42", b'"a"', b"null", b"true"]:
            self.assertReason("bad-shape", parseData, datagram)
            self.assertReason("bad-shape", parseRegister, datagram)
        self.assertReason("bad-key", parseData, b'["a//b", 1]')
        self.assertReason("bad-key", parseData, b'["test/*", 1]')
        self.assertReason("bad-key", parseRegister, b'["", {}]')

    def test_badMeta(self) -> None:
        """
        Metadata must be an object with string texts and a well-formed license.
        """
        for meta in ['1', '[]', 'null', '"x"', '{"description": 1}',
                     '{"provenance": []}', '{"license": "CC0"}',
                     '{"license": {"uri": 5}}', '{"license": {"title": false}}',
                     '{"license": {"uri": "a\\r\\nSet-Cookie: x"}}',
                     '{"license": {"title": "a\\u0085"}}']:
            self.assertReason("bad-shape", parseRegister, b'["a", ' + meta.encode() + b"]")
        self.assertRaises(ValueError, encodeRegister, "a", {"license": "CC0"})
        self.assertRaises(ValueError, encodeRegister, "a", [])


class VersionTwoTests(ReasonMixin, SynchronousTestCase):
    """
    Version 2 data and register datagrams.
    """

    def test_data(self) -> None:
        """
        A version 2 datagram gives the key, the value and the stamp.
        """
        self.assertEqual(
            parseData(b'{"v":2,"src":"oslo-station","boot":1795312345123,"seq":42,'
                      b'"t":1795312399.123,"key":"weather/oslo/temp","value":21.5}'),
            DataMessage("weather/oslo/temp", 21.5, STAMP),
        )

    def test_encodeBytes(self) -> None:
        """
        L{encodeData} writes the members in the documented order, compactly.
        """
        self.assertEqual(
            encodeData("weather/oslo/temp", 21.5, STAMP),
            [b'{"v":2,"src":"oslo-station","boot":1795312345123,"seq":42,'
             b'"t":1795312399.123,"key":"weather/oslo/temp","value":21.5}'],
        )

    @settings(max_examples=200, deadline=None)
    @given(jsonValues)
    def test_roundTrip(self, value: object) -> None:
        """
        Any JSON value survives L{encodeData} with a stamp and L{parseData}.
        """
        [datagram] = encodeData("a/b", value, STAMP)
        self.assertEqual(parseData(datagram), DataMessage("a/b", value, STAMP))

    def test_everyType(self) -> None:
        """
        Each JSON type, including null and non-ASCII text, round-trips.
        """
        for value in [None, True, False, 0, -1, 2**70, 1.5, -0.0, 1e300, "",
                      "é\n\"\\\U0001F600", [], {}, [1, "a", None], {"a": {"b": [1]}}]:
            [datagram] = encodeData("k", value, STAMP)
            self.assertEqual(parseData(datagram).value, value)

    def test_unknownMembers(self) -> None:
        """
        Unknown members are ignored, so later versions can add some.
        """
        message = parseData(v2(future={"x": 1}, unit="C"))
        self.assertEqual(message, DataMessage("weather/oslo/temp", 21.5, STAMP))

    def test_whitespace(self) -> None:
        """
        JSON whitespace around members and after the document is accepted.
        """
        self.assertEqual(parseData(b' { "v" : 2 , "src":"a","boot":0,"seq":1,"t":0,'
                                   b'"key":"k", "value" : null }\r\n'),
                         DataMessage("k", None, Stamp("a", 0, 1, 0.0)))

    def test_badStamp(self) -> None:
        """
        Missing or malformed stamp members are C{bad-shape}.
        """
        for members in [
            {"v": ...}, {"src": ...}, {"src": ""}, {"src": "a.b"}, {"src": "a" * 65},
            {"src": 5}, {"boot": ...}, {"boot": -1}, {"boot": 1.0}, {"boot": "1"},
            {"boot": True}, {"boot": 2**63}, {"seq": ...}, {"seq": 0}, {"seq": 2.5},
            {"seq": False}, {"t": ...}, {"t": "now"}, {"t": True}, {"t": None},
            {"t": 10**400}, {"value": ...}, {"key": ...}, {"key": 5},
        ]:
            self.assertReason("bad-shape", parseData, v2(**members))

    def test_limits(self) -> None:
        """
        C{boot} 0 and 2**63-1 and C{seq} 1 are accepted.
        """
        self.assertEqual(parseData(v2(boot=0, seq=1)).stamp, Stamp("oslo-station", 0, 1,
                                                                   1795312399.123))
        self.assertEqual(parseData(v2(boot=2**63 - 1)).stamp.boot, 2**63 - 1)
        self.assertEqual(parseData(v2(src="a" * 64)).stamp.source, "a" * 64)

    def test_version(self) -> None:
        """
        An object with a C{v} other than the integer 2 is C{bad-version}.
        """
        for version in [1, 3, "2", 2.0, True, None]:
            self.assertReason("bad-version", parseData, v2(v=version))
            self.assertReason("bad-version", parseRegister, v2(v=version))

    def test_badKey(self) -> None:
        """
        A version 2 key breaking the key rules is C{bad-key}.
        """
        for key in ["", "a//b", "sensors/...", "*", "a\x00"]:
            self.assertReason("bad-key", parseData, v2(key=key))

    def test_register(self) -> None:
        """
        A version 2 registration carries no C{seq}; its stamp's seq is 0.
        """
        meta = {"description": "d", "license": None, "x": 1}
        datagram = encodeRegister("a/b", meta, STAMP)
        self.assertNotIn(b'"seq"', datagram)
        self.assertEqual(
            datagram,
            b'{"v":2,"src":"oslo-station","boot":1795312345123,"t":1795312399.123,'
            b'"key":"a/b","meta":{"description":"d","license":null,"x":1}}',
        )
        message = parseRegister(datagram)
        self.assertEqual(message, RegisterMessage("a/b", meta, Stamp(
            "oslo-station", 1795312345123, 0, 1795312399.123)))

    def test_registerIgnoresSeq(self) -> None:
        """
        A C{seq} member on a registration, even a bad one, is ignored.
        """
        datagram = v2(value=..., meta={}, seq="whatever")
        self.assertEqual(parseRegister(datagram).stamp.seq, 0)

    def test_registerShape(self) -> None:
        """
        A registration needs an object C{meta}.
        """
        self.assertReason("bad-shape", parseRegister, v2())
        self.assertReason("bad-shape", parseRegister, v2(meta=[1]))
        self.assertReason("bad-shape", parseRegister, v2(meta={"description": 5}))
        self.assertReason("bad-key", parseRegister, v2(meta={}, key="a/"))

    def test_encodeRejects(self) -> None:
        """
        L{encodeData} refuses what a server would refuse, with L{ValueError}.
        """
        self.assertRaises(BadKey, encodeData, "a//b", 1, STAMP)
        self.assertRaises(BadKey, encodeData, "a/*", 1)
        self.assertRaises(ValueError, encodeData, "a", float("nan"), STAMP)
        self.assertRaises(ValueError, encodeData, "a", float("inf"))
        self.assertRaises(ValueError, encodeData, "a", "\ud800", STAMP)
        self.assertRaises(ValueError, encodeData, "a", object(), STAMP)
        self.assertRaises(ValueError, encodeData, "a", 1, Stamp("a.b", 0, 1, 0.0))
        self.assertRaises(ValueError, encodeData, "a", 1, Stamp("a", -1, 1, 0.0))
        self.assertRaises(ValueError, encodeData, "a", 1, Stamp("a", 0, 0, 0.0))
        self.assertRaises(ValueError, encodeData, "a", 1, Stamp("a", 0, 1, float("nan")))
        self.assertRaises(ValueError, encodeData, "a", 1, None, KEY)
        self.assertRaises(ValueError, encodeRegister, "a", {}, None, KEY)
        self.assertRaises(ValueError, encodeData, "a", "x" * MAX_DATAGRAM)

    def test_encodeDepth(self) -> None:
        """
        L{encodeData} refuses a value nested deeper than a server accepts and
        accepts the deepest one it does.
        """
        deepest: object = 1
        for _ in range(MAX_DEPTH - 1):
            deepest = [deepest]
        [datagram] = encodeData("a", deepest, STAMP)
        self.assertEqual(parseData(datagram).value, deepest)
        self.assertRaises(ValueError, encodeData, "a", [deepest], STAMP)
        self.assertRaises(ValueError, encodeData, "a", [deepest])


class BadBytesTests(ReasonMixin, SynchronousTestCase):
    """
    Datagrams that are not UTF-8, not strict JSON or too large.
    """

    def test_notUtf8(self) -> None:
        """
        Invalid UTF-8, including an encoded surrogate and overlong forms, is
        C{not-utf8}.
        """
        for datagram in [b'["a", "\xff"]', b'["a", "\xed\xa0\x80"]',
                         b'["a", "\xc0\xaf"]', b"\x80", b'["a", "\xe2\x82"]',
                         b'\xff\xfe[\x00"\x00a\x00"\x00]\x00']:
            self.assertReason("not-utf8", parseData, datagram)
            self.assertReason("not-utf8", parseRegister, datagram)

    def test_notJson(self) -> None:
        """
        Text that is not strict JSON is C{not-json}.
        """
        for datagram in [b"", b" ", b"[", b'["a", 1', b'["a", 1] x', b"['a', 1]",
                         b'["a", NaN]', b'["a", Infinity]', b'["a", -Infinity]',
                         b'["a", 1e400]', b'["a", -1e999]', b'["a", 01]',
                         b'["a", "\\ud800"]', b'["a", "\\udc00x"]', b'["a\\udfff", 1]',
                         b'["a", {"\\ud800": 1}]', b'\xef\xbb\xbf["a", 1]',
                         b'["a", "\x01"]', b'["a", ' + b"9" * 5000 + b"]",
                         b'{"v":2,"t":NaN}', b"[\"a\", 1,]"]:
            self.assertReason("not-json", parseData, datagram)

    def test_surrogatePairEscape(self) -> None:
        """
        A properly paired surrogate escape is a character and is accepted.
        """
        self.assertEqual(parseData(b'["a", "\\ud83d\\ude00"]').value, "\U0001F600")
        self.assertEqual(parseData(b'["a", "\\\\ud800"]').value, "\\ud800")

    def test_tooDeep(self) -> None:
        """
        Nesting beyond L{MAX_DEPTH} (counting the envelope) is C{too-deep},
        however deep; L{MAX_DEPTH} itself is accepted.
        """
        def nested(depth: int) -> bytes:
            return b'["a", ' + b"[" * (depth - 1) + b"]" * (depth - 1) + b"]"
        self.assertEqual(parseData(nested(MAX_DEPTH)).key, "a")
        for depth in [MAX_DEPTH + 1, 500, 30000]:
            self.assertReason("too-deep", parseData, nested(depth))
        self.assertReason("too-deep", parseRegister,
                          b'["a", {"x":' + b"[" * 200 + b"]" * 200 + b"}]")
        self.assertReason("too-deep", parseData, b'["a", ' + b'{"a":' * 12000 + b"1")

    @given(
        st.recursive(
            st.one_of(st.integers(), st.text(alphabet='[]{}"\\ab'), st.none()),
            lambda children: st.lists(children, max_size=3)
            | st.dictionaries(st.text(alphabet='[]{}"\\ab', max_size=3), children, max_size=3),
            max_leaves=30,
        ),
        st.integers(min_value=1, max_value=8),
        st.booleans(),
    )
    def test_depthFromText(self, document: object, limit: int, spaced: bool) -> None:
        """
        The depth read from a document's text, brackets inside strings
        (escaped quotes too) left out, is the depth of the parsed document.
        """
        text = json.dumps(document, indent=1 if spaced else None, ensure_ascii=False)
        self.assertEqual(_textTooDeep(text, limit), _tooDeep(document, limit))

    def test_depthOfAFlatManyObjects(self) -> None:
        """
        A value of many empty objects side by side is one level below its
        array, not as deep as it has objects.
        """
        text = "[" + ",".join(["{}"] * 20000) + "]"
        self.assertFalse(_textTooDeep(text, 2))
        self.assertTrue(_textTooDeep(text, 1))

    def test_tooLarge(self) -> None:
        """
        A datagram over L{MAX_DATAGRAM} bytes is C{too-large}; one of exactly
        that size is parsed.
        """
        padding = MAX_DATAGRAM - len(b'["a", ""]')
        exact = b'["a", "' + b"x" * padding + b'"]'
        self.assertEqual(len(exact), MAX_DATAGRAM)
        self.assertEqual(parseData(exact).key, "a")
        self.assertReason("too-large", parseData, exact + b" ")
        self.assertReason("too-large", parseRegister, exact + b" ")

    def test_maxValueSize(self) -> None:
        """
        C{maxValueSize} bounds the value's compact JSON text, for whole
        datagrams and fragment chunks.
        """
        self.assertEqual(parseData(b'["a", "12345678"]', maxValueSize=10).value, "12345678")
        self.assertReason("too-large", parseData, b'["a", "123456789"]', maxValueSize=10)
        self.assertReason("too-large", parseData, b'["a", [1e15]]', maxValueSize=15)
        fragment = v2(value=..., part=0, parts=2, chunk="x" * 11)
        self.assertReason("too-large", parseData, fragment, maxValueSize=10)

    def test_notBytes(self) -> None:
        """
        Something other than bytes is C{bad-shape}, not a crash.
        """
        self.assertReason("bad-shape", parseData, "[\"a\", 1]")


class SignatureTests(ReasonMixin, SynchronousTestCase):
    """
    HMAC-SHA256 signatures.
    """

    def test_format(self) -> None:
        """
        A signature replaces the final brace with C{,"sig":"<hex>"}} where hex
        is the HMAC-SHA256 of the unsigned document.
        """
        unsigned = b'{"v":2,"src":"a","boot":0,"seq":1,"t":0,"key":"k","value":1}'
        signed = signDocument(unsigned, KEY)
        digest = hmac.new(KEY, unsigned, hashlib.sha256).hexdigest()
        self.assertEqual(signed, unsigned[:-1] + b',"sig":"' + digest.encode() + b'"}')
        self.assertEqual(len(signed) - len(unsigned), SIGNATURE_OVERHEAD)
        self.assertEqual(json.loads(signed)["sig"], digest)
        self.assertRaises(ValueError, signDocument, unsigned + b"\n", KEY)

    def test_documentedExample(self) -> None:
        """
        The worked example in docs/protocol.md has these exact bytes.
        """
        stamp = Stamp("oslo-station", 1795312345123, 42, 1795312399.123)
        [signed] = encodeData("weather/oslo/temp", 21.5, stamp, b"secret")
        self.assertEqual(
            signed,
            b'{"v":2,"src":"oslo-station","boot":1795312345123,"seq":42,'
            b'"t":1795312399.123,"key":"weather/oslo/temp","value":21.5,'
            b'"sig":"ff8c7306bfdd271e93ecd95cd4ccd0515144a0af2603343659e755a43f967d25"}',
        )

    def test_documentedRegistration(self) -> None:
        """
        The registration example in docs/protocol.md has these exact bytes.
        """
        meta = {
            "description": "Air temperature in Oslo, degrees Celsius",
            "provenance": "Blindern weather station",
            "license": {"uri": "https://creativecommons.org/licenses/by/4.0/",
                        "title": "CC BY 4.0"},
        }
        stamp = Stamp("oslo-station", 1795312345123, 0, 1795312399.5)
        self.assertEqual(
            encodeRegister("weather/oslo/temp", meta, stamp),
            b'{"v":2,"src":"oslo-station","boot":1795312345123,"t":1795312399.5,'
            b'"key":"weather/oslo/temp","meta":{"description":"Air temperature in Oslo, '
            b'degrees Celsius","provenance":"Blindern weather station","license":{"uri":'
            b'"https://creativecommons.org/licenses/by/4.0/","title":"CC BY 4.0"}}}',
        )

    def test_verified(self) -> None:
        """
        A datagram signed with one of the keys is accepted, signature required
        or not, and its C{sig} is not part of the message.
        """
        [signed] = encodeData("k", {"sig": 1}, STAMP, KEY)
        for required in (False, True):
            message = parseData(signed, [b"other", KEY], required)
            self.assertEqual(message, DataMessage("k", {"sig": 1}, STAMP))
        register = encodeRegister("k", {}, STAMP, KEY)
        self.assertEqual(parseRegister(register, [KEY], True).meta, {})

    def test_forged(self) -> None:
        """
        A changed byte, a wrong key, or a malformed signature is C{bad-signature}.
        """
        [signed] = encodeData("k", 1, STAMP, KEY)
        self.assertReason("bad-signature", parseData, signed, [b"other"])
        tampered = signed.replace(b'"value":1', b'"value":2')
        self.assertReason("bad-signature", parseData, tampered, [KEY])
        upper = signed[:-66] + signed[-66:-2].upper() + b'"}'
        self.assertReason("bad-signature", parseData, upper, [KEY])
        notHex = signed[:-66] + b"g" * 64 + b'"}'
        self.assertReason("bad-signature", parseData, notHex, [KEY])
        self.assertReason("bad-signature", parseRegister,
                          encodeRegister("k", {}, STAMP, b"other"), [KEY], True)

    def test_sigNotLast(self) -> None:
        """
        With keys configured, a C{sig} member anywhere but at the end is
        C{bad-signature}, even when signatures are optional.
        """
        datagram = v2(sig="0" * 64, extra=1)
        self.assertReason("bad-signature", parseData, datagram, [KEY])
        self.assertReason("bad-signature", parseData, signDocument(b'{"sig":1}', KEY) + b" ",
                          [KEY])

    def test_unsigned(self) -> None:
        """
        Without a signature, a datagram is C{unsigned} when one is required
        (version 1 always is) and accepted otherwise.
        """
        self.assertReason("unsigned", parseData, v2(), [KEY], True)
        self.assertReason("unsigned", parseData, b'["a", 1]', [KEY], True)
        self.assertReason("unsigned", parseRegister, b'["a", {}]', [KEY], True)
        self.assertEqual(parseData(v2(), [KEY]).value, 21.5)
        self.assertEqual(parseData(b'["a", 1]', [KEY]).value, 1)

    def test_noKeys(self) -> None:
        """
        A server without keys accepts a signed datagram without checking it.
        """
        [signed] = encodeData("k", 1, STAMP, b"anything")
        self.assertEqual(parseData(signed).value, 1)
        self.assertEqual(parseData(v2(sig="nonsense")).value, 21.5)

    def test_signaturesCheckedBeforeJson(self) -> None:
        """
        A forged datagram is refused for its signature before its JSON is read.
        """
        forged = b"\xff not json" + b',"sig":"' + b"0" * 64 + b'"}'
        self.assertReason("bad-signature", parseData, forged, [KEY])


class FragmentTests(ReasonMixin, SynchronousTestCase):
    """
    Values split across datagrams, and their re-assembly.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.reassembler = Reassembler(self.clock)

    def fragments(self, value: object, maxDatagram: int = 400, **kwargs) -> list[bytes]:
        """
        Encode C{value} small enough to need several fragments.
        """
        datagrams = encodeData("big/value", value, STAMP, maxDatagram=maxDatagram, **kwargs)
        self.assertGreater(len(datagrams), 1)
        return datagrams

    def test_split(self) -> None:
        """
        A value too large for one datagram becomes fragments that each fit and
        carry the stamp, key, part, parts and a chunk of the JSON text.
        """
        value = {"text": 'quote " backslash \\ é \U0001F600 ' * 40, "n": list(range(100))}
        datagrams = self.fragments(value)
        parsed = [parseData(d) for d in datagrams]
        for index, (datagram, fragment) in enumerate(zip(datagrams, parsed)):
            self.assertLessEqual(len(datagram), 400)
            self.assertIsInstance(fragment, Fragment)
            self.assertEqual((fragment.key, fragment.stamp, fragment.part, fragment.parts),
                             ("big/value", STAMP, index, len(datagrams)))
            self.assertNotIn(b'"value"', datagram)
        self.assertEqual(json.loads("".join(f.chunk for f in parsed)), value)

    def test_documentedExample(self) -> None:
        """
        The three fragments in docs/protocol.md put back together give the value.
        """
        head = (b'{"v":2,"src":"cam-1","boot":1795312000000,"seq":7,"t":1795312400.25,'
                b'"key":"air/pm25",')
        datagrams = [
            head + b'"part":0,"parts":3,"chunk":"{\\"pm25\\":[12,14,13,"}',
            head + b'"part":1,"parts":3,"chunk":"15,11,16],\\"unit\\":"}',
            head + b'"part":2,"parts":3,"chunk":"\\"ug/m3\\"}"}',
        ]
        results = [self.reassembler.feed(parseData(d)) for d in reversed(datagrams)]
        self.assertEqual(results[-1], DataMessage(
            "air/pm25", {"pm25": [12, 14, 13, 15, 11, 16], "unit": "ug/m3"},
            Stamp("cam-1", 1795312000000, 7, 1795312400.25)))

    def test_exactFit(self) -> None:
        """
        A value whose datagram is exactly C{maxDatagram} bytes is not split.
        """
        [whole] = encodeData("k", "x" * 100, STAMP)
        self.assertEqual(encodeData("k", "x" * 100, STAMP, maxDatagram=len(whole)), [whole])
        self.assertEqual(len(encodeData("k", "x" * 100, STAMP, maxDatagram=len(whole) - 1)), 2)

    @settings(max_examples=100, deadline=None)
    @given(jsonValues, st.randoms(use_true_random=False), st.booleans())
    def test_anyOrder(self, value, random, signed) -> None:
        """
        Fragments re-assemble into the value whatever order they arrive in,
        and only the last one completes it.
        """
        signingKey = KEY if signed else None
        datagrams = encodeData("k", ["pad" * 60, value], STAMP, signingKey, maxDatagram=250)
        self.assertGreater(len(datagrams), 1)
        random.shuffle(datagrams)
        keys = [KEY] if signed else []
        results = [self.reassembler.feed(parseData(d, keys, signed)) for d in datagrams]
        self.assertEqual(results[:-1], [None] * (len(datagrams) - 1))
        self.assertEqual(results[-1], DataMessage("k", ["pad" * 60, value], STAMP))
        self.assertEqual(self.reassembler.pending, 0)

    def test_eachSigned(self) -> None:
        """
        Every fragment carries its own signature and fits with it.
        """
        datagrams = self.fragments("é" * 1000, signingKey=KEY)
        for datagram in datagrams:
            self.assertLessEqual(len(datagram), 400)
            self.assertIsInstance(parseData(datagram, [KEY], True), Fragment)
        self.assertReason("bad-signature", parseData, datagrams[1], [b"other"])

    def test_maxParts(self) -> None:
        """
        A value needing more than L{MAX_PARTS} fragments cannot be encoded;
        one needing exactly that many can.
        """
        first = parseData(encodeData("k", [0] * 1000, STAMP, maxDatagram=200)[0])
        budget = len(first.chunk)
        most = [0] * ((budget * MAX_PARTS - 1) // 2)
        self.assertEqual(len(encodeData("k", most, STAMP, maxDatagram=200)), MAX_PARTS)
        self.assertRaises(ValueError, encodeData, "k", most + [0], STAMP, maxDatagram=200)
        self.assertRaises(ValueError, encodeData, "k", "x" * 1000, STAMP, maxDatagram=50)

    def test_duplicate(self) -> None:
        """
        A repeated fragment is ignored.
        """
        first, second = self.fragments("y" * 300, maxDatagram=300)
        self.assertIsNone(self.reassembler.feed(parseData(first)))
        self.assertIsNone(self.reassembler.feed(parseData(first)))
        self.assertEqual(self.reassembler.feed(parseData(second)).value, "y" * 300)

    def test_singlePart(self) -> None:
        """
        A datum sent as one fragment of one part is complete at once.
        """
        fragment = Fragment("k", STAMP, 0, 1, "[1,2]")
        self.assertEqual(self.reassembler.feed(fragment), DataMessage("k", [1, 2], STAMP))

    def test_badFragmentFields(self) -> None:
        """
        Out-of-range C{part} or C{parts}, a non-string chunk, or C{value} next
        to C{chunk} are C{bad-fragment}.
        """
        for members in [
            {"part": 0, "parts": 0, "chunk": ""}, {"part": 0, "parts": MAX_PARTS + 1, "chunk": ""},
            {"part": 2, "parts": 2, "chunk": ""}, {"part": -1, "parts": 2, "chunk": ""},
            {"part": 0, "parts": 2, "chunk": 5}, {"part": 0, "parts": 2},
            {"part": "0", "parts": 2, "chunk": ""}, {"part": 0, "parts": 2.0, "chunk": ""},
            {"part": True, "parts": 2, "chunk": ""}, {"chunk": ""},
        ]:
            self.assertReason("bad-fragment", parseData, v2(value=..., **members))
        self.assertReason("bad-fragment", parseData, v2(part=0, parts=2, chunk="x"))

    def test_inconsistent(self) -> None:
        """
        Fragments of one datum that disagree on key, parts or a chunk are
        C{bad-fragment} and the datum is dropped.
        """
        base = Fragment("k", STAMP, 0, 3, "[1,")
        for other in [Fragment("other", STAMP, 1, 3, "2"), Fragment("k", STAMP, 1, 2, "2"),
                      Fragment("k", STAMP, 0, 3, "[2,")]:
            self.assertIsNone(self.reassembler.feed(base))
            self.assertReason("bad-fragment", self.reassembler.feed, other)
            self.assertEqual(self.reassembler.pending, 0)

    def test_notJsonWhenJoined(self) -> None:
        """
        Chunks that do not join into strict JSON are C{bad-fragment}.
        """
        for text in ["[1,", "NaN", "\"\\ud800\""]:
            self.reassembler.feed(Fragment("k", STAMP, 0, 2, text[:1]))
            self.assertReason("bad-fragment", self.reassembler.feed,
                              Fragment("k", STAMP, 1, 2, text[1:]))
        self.reassembler.feed(Fragment("k", STAMP, 0, 2, "[" * 60))
        self.assertReason("too-deep", self.reassembler.feed,
                          Fragment("k", STAMP, 1, 2, "[" * 60 + "]" * 120))

    def test_distinctDatums(self) -> None:
        """
        Fragments of datums with different ids are kept apart.
        """
        other = Stamp("oslo-station", STAMP.boot, 43, 0.0)
        self.assertIsNone(self.reassembler.feed(Fragment("k", STAMP, 0, 2, "[1")))
        self.assertIsNone(self.reassembler.feed(Fragment("k", other, 0, 2, "[2")))
        self.assertEqual(self.reassembler.feed(Fragment("k", other, 1, 2, "]")).value, [2])
        self.assertEqual(self.reassembler.feed(Fragment("k", STAMP, 1, 2, "]")).value, [1])

    def test_tooLarge(self) -> None:
        """
        A value growing past C{maxValueSize} bytes is C{too-large} and dropped.
        """
        reassembler = Reassembler(self.clock, maxValueSize=10)
        reassembler.feed(Fragment("k", STAMP, 0, 3, '"éééé'))
        self.assertReason("too-large", reassembler.feed, Fragment("k", STAMP, 1, 3, "xx"))
        self.assertEqual(reassembler.pending, 0)

    def test_expiry(self) -> None:
        """
        A datum incomplete after C{timeout} seconds is dropped and counted.
        """
        reassembler = Reassembler(self.clock, timeout=5.0)
        reassembler.feed(Fragment("k", STAMP, 0, 2, "[1"))
        self.clock.advance(4.9)
        self.assertEqual(reassembler.feed(Fragment("k", STAMP, 1, 2, ",2]")).value, [1, 2])
        reassembler.feed(Fragment("k", STAMP, 0, 2, "[1"))
        self.clock.advance(5.0)
        self.assertIsNone(reassembler.feed(Fragment("k", STAMP, 1, 2, ",2]")))
        self.assertEqual(reassembler.expired, 1)
        self.assertEqual(reassembler.evicted, 0)

    def test_eviction(self) -> None:
        """
        Beyond C{maxPending} datums in progress, the oldest is dropped and counted.
        """
        reassembler = Reassembler(self.clock, maxPending=2)
        stamps = [Stamp("s", 1, seq, 0.0) for seq in (1, 2, 3)]
        for stamp in stamps:
            reassembler.feed(Fragment("k", stamp, 0, 2, "[1"))
        self.assertEqual((reassembler.pending, reassembler.evicted), (2, 1))
        self.assertIsNone(reassembler.feed(Fragment("k", stamps[0], 1, 2, "]")))
        self.assertEqual(reassembler.feed(Fragment("k", stamps[2], 1, 2, "]")).value, [1])


class SourceTrackerTests(SynchronousTestCase):
    """
    L{SourceTracker}'s verdicts on stamps.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.tracker = SourceTracker(self.clock)

    def check(self, boot: int, seq: int, source: str = "s", sent: float = 0.0) -> tuple[str, int]:
        """
        Check a stamp; return the verdict and C{missed}.
        """
        verdict = self.tracker.check(Stamp(source, boot, seq, sent))
        return verdict, self.tracker.missed

    def test_sequence(self) -> None:
        """
        With a freshness window (signed sources), the tracker tells new, ok,
        gap, filled (a datum of a hole, once), replayed and restart apart and
        counts what was missed.
        """
        self.tracker = SourceTracker(self.clock, window=30.0)
        self.assertEqual(self.check(10, 5), ("new", 0))
        self.assertEqual(self.check(10, 6), ("ok", 0))
        self.assertEqual(self.check(10, 9), ("gap", 2))
        self.assertEqual(self.check(10, 9), ("replayed", 0))
        self.assertEqual(self.check(10, 7), ("filled", 0))
        self.assertEqual(self.check(10, 7), ("replayed", 0))
        self.assertEqual(self.check(10, 10), ("ok", 0))
        self.assertEqual(self.check(9, 100), ("replayed", 0))
        self.assertEqual(self.check(11, 1), ("restart", 0))
        self.assertEqual(self.check(10, 11), ("replayed", 0))
        self.assertEqual(self.check(12, 4), ("restart", 3))
        self.assertEqual(self.check(12, 5), ("ok", 0))

    def test_sequenceWithoutWindow(self) -> None:
        """
        Without a window (no signatures), a datagram overtaken by a later one
        fills its hole (C{filled}, once); far below the mark only copies of
        the mark and of recent stamps are replays, others are delivered as
        C{late}, and one of another boot is a C{reset} that moves the mark,
        so that a forged mark silences nothing.
        """
        self.assertEqual(self.check(10, 5), ("new", 0))
        self.assertEqual(self.check(10, 6), ("ok", 0))
        self.assertEqual(self.check(10, 9), ("gap", 2))
        self.assertEqual(self.check(10, 9), ("replayed", 0))
        self.assertEqual(self.check(10, 7), ("filled", 0))
        self.assertEqual(self.check(10, 7), ("replayed", 0))
        self.assertEqual(self.check(10, 6), ("replayed", 0))
        self.assertEqual(self.check(10, 10), ("ok", 0))
        self.assertEqual(self.check(2**63 - 1, 2**63 - 1), ("restart", 2**63 - 2))
        self.assertEqual(self.check(10, 11), ("reset", 0))
        self.assertEqual(self.check(10, 12), ("ok", 0))
        self.assertEqual(self.check(10, 2**63 - 1), ("gap", 2**63 - 14))
        self.assertEqual(self.check(10, 13), ("late", 0))
        self.assertEqual(self.check(10, 14), ("late", 0))
        self.assertEqual(self.check(10, 13), ("replayed", 0))
        self.assertEqual(self.check(11, 1), ("restart", 0))

    def test_sourcesApart(self) -> None:
        """
        Each source has its own counter.
        """
        self.assertEqual(self.check(1, 1, "a"), ("new", 0))
        self.assertEqual(self.check(1, 1, "b"), ("new", 0))
        self.assertEqual(self.check(1, 2, "a"), ("ok", 0))

    def test_stale(self) -> None:
        """
        With a window, a stamp whose time is too far from now either way is
        stale and does not move the counter.
        """
        tracker = SourceTracker(self.clock, window=10.0)
        self.clock.advance(1000)
        self.assertEqual(tracker.check(Stamp("s", 1, 1, 1010.0)), "new")
        self.assertEqual(tracker.check(Stamp("s", 1, 2, 1010.5)), "stale")
        self.assertEqual(tracker.check(Stamp("s", 1, 2, 989.0)), "stale")
        self.assertEqual(tracker.check(Stamp("s", 1, 2, 990.0)), "ok")
        self.assertEqual(self.check(1, 1, sent=-1e9), ("new", 0))

    def test_bounded(self) -> None:
        """
        Beyond C{maxSources}, the source heard from least recently is forgotten.
        """
        tracker = SourceTracker(self.clock, maxSources=2)
        tracker.check(Stamp("a", 1, 1, 0.0))
        tracker.check(Stamp("b", 1, 1, 0.0))
        tracker.check(Stamp("a", 1, 2, 0.0))
        self.assertEqual(tracker.check(Stamp("c", 1, 1, 0.0)), "new")
        self.assertEqual(tracker.forgotten, 1)
        self.assertEqual(tracker.check(Stamp("a", 1, 3, 0.0)), "ok")
        self.assertEqual(tracker.check(Stamp("b", 1, 1, 0.0)), "new")


class SourceTrackerHoleTests(SynchronousTestCase):
    """
    L{SourceTracker}'s holes: the sequence numbers missing below the mark,
    filled once, bounded, declared unrecoverable.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.tracker = SourceTracker(self.clock, maxHoles=10)

    def check(self, seq: int, boot: int = 1, sent: float = 0.0) -> str:
        """
        Check a stamp of source C{s}; return the verdict.
        """
        return self.tracker.check(Stamp("s", boot, seq, sent))

    def holes(self) -> list[tuple[int, int]]:
        """
        The holes of source C{s} as ranges.
        """
        return [(hole.first, hole.last) for hole in self.tracker.holes("s")]

    def test_fillSplits(self) -> None:
        """
        A datum in the middle of a hole splits it; each datum fills once;
        the engine's attributes of a split hole carry over.
        """
        self.check(1)
        self.clock.advance(2)
        self.assertEqual(self.check(8), "gap")
        [hole] = self.tracker.holes("s")
        self.assertEqual((hole.first, hole.last, hole.found), (2, 7, 2.0))
        hole.rounds = 3
        self.assertTrue(self.tracker.holding)
        self.assertEqual(self.check(4), "filled")
        self.assertIs(self.tracker.filled, hole)
        self.assertEqual(self.holes(), [(2, 3), (5, 7)])
        self.assertEqual([h.rounds for h in self.tracker.holes("s")], [3, 3])
        for seq in (2, 3, 7, 5, 6):
            self.assertEqual(self.check(seq), "filled")
        self.assertEqual(self.holes(), [])
        for seq in (2, 4, 7):
            self.assertEqual(self.check(seq), "replayed")
        self.assertEqual(self.check(9), "ok")
        self.assertFalse(self.tracker.holding)

    def test_repairAlreadyHadIsReplayed(self) -> None:
        """
        A repair re-sent for another server, of a datum this one has (far
        beyond the L{RECENT} copies), is replayed in both modes.
        """
        for tracker in (SourceTracker(self.clock, maxHoles=100),
                        SourceTracker(self.clock, maxHoles=100, window=30.0)):
            for seq in range(1, 51):
                tracker.check(Stamp("s", 1, seq, 0.0))
            self.assertEqual(tracker.check(Stamp("s", 1, 3, 0.0)), "replayed")

    def test_peekLetsHolesThrough(self) -> None:
        """
        L{SourceTracker.peek} refuses a fragment of a datum received, not
        one of a hole.
        """
        self.check(1)
        self.check(4)
        self.assertIsNone(self.tracker.peek(Stamp("s", 1, 2, 0.0)))
        self.assertEqual(self.tracker.peek(Stamp("s", 1, 1, 0.0)), "replayed")

    def test_gapTooLarge(self) -> None:
        """
        A gap larger than the bound makes no hole: it and every hole are
        declared unrecoverable at once, and nothing is held back.
        """
        self.check(1)
        self.check(4)
        self.assertEqual(self.check(100), "gap")
        self.assertEqual((self.tracker.missed, self.tracker.declared), (95, 97))
        self.assertEqual(self.holes(), [])
        self.assertEqual(self.tracker.settle("s"), 97)
        self.assertEqual(self.check(101), "ok")
        self.assertFalse(self.tracker.holding)
        self.assertEqual(self.tracker.lost, 97)
        self.assertEqual(self.check(2**63 - 1), "gap")
        self.assertEqual(self.tracker.created, None)

    def test_boundDeclaresOldest(self) -> None:
        """
        Holes span at most C{maxHoles}: a new gap declares the oldest
        sequence numbers, which count as lost in order.
        """
        self.check(1)
        self.check(8)   # holes 2-7
        self.check(14)  # holes 9-13: 11 missing, one over
        self.assertEqual(self.tracker.declared, 1)
        self.assertEqual(self.holes(), [(3, 7), (9, 13)])
        self.assertEqual(self.tracker.lostBefore("s", 8), 1)

    def test_lostCountedInOrder(self) -> None:
        """
        A range declared above a hole counts only for the datums above it.
        """
        self.check(1)
        self.check(3)   # hole 2
        self.check(5)   # hole 4
        self.assertEqual(self.tracker.declareRanges("s", 1, [(4, 4)]), 1)
        self.assertEqual(self.holes(), [(2, 2)])
        self.assertEqual(self.check(2), "filled")
        self.assertEqual(self.tracker.lostBefore("s", 3), 0)
        self.assertEqual(self.tracker.lostBefore("s", 5), 1)
        self.assertEqual(self.tracker.settle("s"), 1)
        self.check(6)
        self.assertEqual(self.tracker.lost, 1)

    def test_declareRangesSplits(self) -> None:
        """
        A gone range in the middle of a hole declares only its part.
        """
        self.check(1)
        self.check(10)
        self.assertEqual(self.tracker.declareRanges("s", 1, [(3, 4), (6, 6), (20, 30)]), 3)
        self.assertEqual(self.holes(), [(2, 2), (5, 5), (7, 9)])
        self.assertEqual(self.tracker.declareRanges("s", 2, [(2, 9)]), 0)

    def test_heartbeat(self) -> None:
        """
        A heartbeat above the mark makes a hole of the tail; one below holes
        above every datum received removes them (never sent).
        """
        self.check(1)
        hole = self.tracker.heartbeat(Stamp("s", 1, 0, 0.0), 4)
        self.assertEqual((hole.first, hole.last), (2, 4))
        self.assertEqual(self.check(3), "filled")
        self.assertEqual(self.check(5), "ok")
        self.tracker.heartbeat(Stamp("s", 1, 0, 0.0), 9)
        self.assertEqual(self.holes(), [(2, 2), (4, 4), (6, 9)])
        self.tracker.heartbeat(Stamp("s", 1, 0, 0.0), 7)
        self.assertEqual(self.holes(), [(2, 2), (4, 4), (6, 7)])
        self.tracker.heartbeat(Stamp("s", 1, 0, 0.0), 2)
        self.assertEqual(self.holes(), [(2, 2), (4, 4)])
        self.assertEqual(self.check(6), "ok")
        self.assertIsNone(self.tracker.heartbeat(Stamp("s", 0, 0, 0.0), 9))
        self.assertEqual(self.holes(), [(2, 2), (4, 4)])

    def test_heartbeatPlacesNewSource(self) -> None:
        """
        A heartbeat of a source not known yet says where it is: with
        C{last} 0 its first datum, lost, is a hole; with a later C{last},
        nothing before it is asked for.
        """
        self.assertIsNone(self.tracker.heartbeat(Stamp("s", 1, 0, 0.0), 0))
        self.assertEqual(self.check(2), "gap")
        self.assertEqual(self.holes(), [(1, 1)])
        self.assertIsNone(self.tracker.heartbeat(Stamp("t", 1, 0, 0.0), 50))
        self.assertEqual(self.tracker.check(Stamp("t", 1, 51, 0.0)), "ok")
        self.assertEqual(self.tracker.check(Stamp("t", 1, 50, 0.0)), "replayed")

    def test_heartbeatOfNewBoot(self) -> None:
        """
        A heartbeat of a newer boot is a restart: the old boot's holes are
        declared (C{ended}), the new boot's C{1..last} are holes.
        """
        self.check(1)
        self.check(3)
        hole = self.tracker.heartbeat(Stamp("s", 2, 0, 0.0), 2)
        self.assertEqual((hole.first, hole.last), (1, 2))
        self.assertEqual(self.tracker.declared, 1)
        self.assertEqual(self.tracker.ended, [0, [(2, 2)]])
        self.assertEqual(self.check(1, boot=2), "filled")
        self.assertIsNone(self.tracker.heartbeat(Stamp("s", 1, 0, 0.0), 9))

    def test_restartEndsBoot(self) -> None:
        """
        A new boot declares the old boot's holes and says what it lost, in
        order; its own first sequence numbers missing are holes.
        """
        self.check(1)
        self.check(3)
        self.check(5)
        self.tracker.declareRanges("s", 1, [(4, 4)])
        self.assertEqual(self.check(3, boot=2), "restart")
        self.assertEqual(self.tracker.declared, 1)
        ended = self.tracker.ended
        self.assertEqual([walkLost(ended, seq) for seq in (3, 5)], [1, 2])
        self.assertEqual(self.holes(), [(1, 2)])
        self.assertEqual(self.tracker.lost, 0)

    def test_forgettingSaysLost(self) -> None:
        """
        A source forgotten is announced with what its boot lost.
        """
        forgotten = []
        tracker = SourceTracker(self.clock, maxSources=1, maxHoles=10,
                                forgetting=lambda *args: forgotten.append(args))
        tracker.check(Stamp("a", 1, 1, 0.0))
        tracker.check(Stamp("a", 1, 4, 0.0))
        tracker.check(Stamp("b", 1, 1, 0.0))
        self.assertEqual(forgotten, [("a", 2)])


def _envelopes() -> st.SearchStrategy[dict[str, object]]:
    """
    Objects that look like version 2 datagrams, with any member possibly
    missing or of any JSON type.
    """
    members = {
        "v": st.just(2) | jsonScalars, "src": st.just("a") | jsonScalars,
        "boot": st.integers(min_value=-1) | jsonScalars, "seq": st.integers() | jsonScalars,
        "t": st.floats() | jsonScalars, "key": st.sampled_from(["k", "a/b", "a//b"]) | jsonScalars,
        "value": jsonValues, "meta": jsonValues, "part": st.integers(-1, 70) | jsonScalars,
        "parts": st.integers(-1, 70) | jsonScalars, "chunk": jsonValues,
        "sig": st.text(max_size=70),
    }
    return st.fixed_dictionaries({}, optional=members)


class FuzzTests(SynchronousTestCase):
    """
    Only L{BadDatagram} escapes the parsers, whatever arrives.
    """

    def survive(self, datagram: bytes) -> None:
        """
        Parse C{datagram} every way a server does; only L{BadDatagram} may
        escape, and fragments go through a L{Reassembler}.
        """
        reassembler = Reassembler(Clock())
        for keys, required in [((), False), ((KEY,), False), ((KEY,), True)]:
            try:
                message = parseData(datagram, keys, required, maxValueSize=1000)
                if isinstance(message, Fragment):
                    reassembler.feed(message)
            except BadDatagram as e:
                self.assertIn(e.reason, REASONS)
            try:
                parseRegister(datagram, keys, required)
            except BadDatagram as e:
                self.assertIn(e.reason, REASONS)

    @settings(max_examples=200, deadline=None)
    @given(st.binary(max_size=300))
    def test_bytes(self, datagram: bytes) -> None:
        """
        Arbitrary bytes never raise anything but L{BadDatagram}.
        """
        self.survive(datagram)

    @settings(max_examples=200, deadline=None)
    @given(jsonValues)
    def test_json(self, document: object) -> None:
        """
        Arbitrary JSON documents never raise anything but L{BadDatagram}.
        """
        self.survive(json.dumps(document).encode())

    @settings(max_examples=200, deadline=None)
    @given(_envelopes(), st.booleans())
    def test_envelopes(self, document: dict[str, object], sign: bool) -> None:
        """
        Near-valid version 2 objects, signed or not, never raise anything but
        L{BadDatagram}.
        """
        data = json.dumps(document).encode()
        self.survive(signDocument(data, KEY) if sign and len(document) else data)


sources = st.text(
    alphabet="abcXYZ019_-", min_size=1, max_size=artcast.wire.MAX_SOURCE_LENGTH
)
counters = st.integers(min_value=0, max_value=2**63 - 1)
datumIds = st.builds(DatumId, sources, counters, st.integers(min_value=1, max_value=2**63 - 1))


class DatumIdTests(SynchronousTestCase):
    """
    L{DatumId}: a datum's id as a value that knows its order.
    """

    @settings(max_examples=200, deadline=None)
    @given(datumIds)
    def test_roundTrip(self, ident: DatumId) -> None:
        """
        An id written with C{str} is read back by L{DatumId.parse} as the same id.
        """
        self.assertEqual(DatumId.parse(str(ident)), ident)
        self.assertEqual(str(ident), f"{ident.source}.{ident.boot}.{ident.seq}")

    def test_isATuple(self) -> None:
        """
        A L{DatumId} is the tuple C{(source, boot, seq)}, equal and hashed as one.
        """
        ident = DatumId("src", 7, 3)
        self.assertEqual(ident, ("src", 7, 3))
        self.assertEqual(hash(ident), hash(("src", 7, 3)))
        self.assertIsInstance(DatumId.parse("src.7.3"), DatumId)

    @settings(max_examples=300, deadline=None)
    @given(datumIds, st.sampled_from(["src", "other"]), counters, counters)
    def test_covers(self, ident: DatumId, source: str, boot: int, seq: int) -> None:
        """
        L{DatumId.covers} holds exactly for the same source and a C{(boot, seq)}
        not after the id's, boot first.
        """
        ident = ident._replace(source="src")
        expected = source == "src" and (
            boot < ident.boot or (boot == ident.boot and seq <= ident.seq)
        )
        self.assertEqual(ident.covers(source, boot, seq), expected)

    def test_coversEdges(self) -> None:
        """
        An id covers itself and the datums before it in its source, never a later
        one or one of another source.
        """
        ident = DatumId("src", 10, 5)
        self.assertTrue(ident.covers("src", 10, 5))
        self.assertTrue(ident.covers("src", 10, 4))
        self.assertTrue(ident.covers("src", 9, 99))
        self.assertFalse(ident.covers("src", 10, 6))
        self.assertFalse(ident.covers("src", 11, 1))
        self.assertFalse(ident.covers("other", 1, 1))

    def test_stampId(self) -> None:
        """
        A L{Stamp}'s C{id} is its L{DatumId}, and C{datumId()} is that id's text.
        """
        self.assertEqual(STAMP.id, DatumId("oslo-station", 1795312345123, 42))
        self.assertEqual(STAMP.datumId(), str(STAMP.id))

    def test_isStale(self) -> None:
        """
        L{Stamp.isStale} is true when the send time is more than the window away
        from now, ahead or behind, and false at the window's edge.
        """
        stamp = Stamp("src", 1, 1, 1000.0)
        self.assertFalse(stamp.isStale(1000.0, 30.0))
        self.assertFalse(stamp.isStale(1030.0, 30.0))
        self.assertFalse(stamp.isStale(970.0, 30.0))
        self.assertTrue(stamp.isStale(1030.5, 30.0))
        self.assertTrue(stamp.isStale(969.5, 30.0))


class KeyURLTests(SynchronousTestCase):
    """
    L{quoteKey} and L{keyPath}: the key's URL form.
    """

    def test_quoteKey(self) -> None:
        """
        L{KEY_SAFE} characters and C{/} stay; others, UTF-8 included, are
        percent-encoded.
        """
        self.assertEqual(quoteKey("a/b é"), "a/b%20%C3%A9")
        self.assertEqual(quoteKey(KEY_SAFE), KEY_SAFE)
        self.assertEqual(quoteKey("?#%"), "%3F%23%25")
        self.assertEqual(quoteKey("a/*/..."), "a/*/...")

    def test_keyPath(self) -> None:
        """
        L{keyPath} is the key's path under C{/artcasts/}.
        """
        self.assertEqual(keyPath("a b/ø?#"), "/artcasts/a%20b/%C3%B8%3F%23")

    @settings(max_examples=200, deadline=None)
    @given(st.text(min_size=1, max_size=40))
    def test_quoteKeyRoundTrip(self, key: str) -> None:
        """
        A quoted key is ASCII and unquotes to the key again.
        """
        quoted = quoteKey(key.encode("utf-8", "replace").decode("utf-8"))
        quoted.encode("ascii")
        self.assertEqual(unquote(quoted), key.encode("utf-8", "replace").decode("utf-8"))


class ControlCharacterTests(SynchronousTestCase):
    """
    L{CONTROL_CHARACTERS}.
    """

    def test_exactly(self) -> None:
        """
        It matches C0, DEL and C1, and no other character of the first 256.
        """
        for code in range(256):
            expected = code < 0x20 or 0x7F <= code <= 0x9F
            self.assertEqual(
                CONTROL_CHARACTERS.search(chr(code)) is not None, expected, hex(code)
            )


class LoadJSONTests(ReasonMixin, SynchronousTestCase):
    """
    L{loadJSON}: strict JSON.
    """

    @settings(max_examples=200, deadline=None)
    @given(jsonValues)
    def test_json(self, value: object) -> None:
        """
        Any JSON document without a repeated member reads as the value it holds.
        """
        self.assertEqual(loadJSON(json.dumps(value)), value)

    def test_refuses(self) -> None:
        """
        NaN, Infinity, overflowing numbers, lone surrogates and text that is not
        JSON are C{"not-json"}, or the reason asked for.
        """
        for text in ["NaN", "[Infinity]", "-Infinity", "1e400", '"\\ud800"', "{", "", "'a'"]:
            self.assertReason("not-json", loadJSON, text)
            self.assertReason("bad-fragment", loadJSON, text, "bad-fragment")

    def test_duplicate(self) -> None:
        """
        A member named twice is C{"duplicate-member"}.
        """
        self.assertReason("duplicate-member", loadJSON, '{"a": 1, "a": 2}')

    def test_depth(self) -> None:
        """
        L{MAX_DEPTH} levels are read, one more is C{"too-deep"}.
        """
        text = "[" * MAX_DEPTH + "]" * MAX_DEPTH
        self.assertEqual(loadJSON(text), json.loads(text))
        self.assertReason("too-deep", loadJSON, "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1))

    def test_send(self) -> None:
        """
        C{artcast-send}'s values are read by L{loadJSON}: what it refuses is sent
        as text.
        """
        self.assertEqual(artcast.send.parseValue('{"a": [1, 2.5]}'), {"a": [1, 2.5]})
        for text in ['{"a": 1, "a": 2}', '"\\ud800"', "[" * 101 + "]" * 101, "NaN"]:
            self.assertEqual(artcast.send.parseValue(text), text)


class ValueTooDeepTests(SynchronousTestCase):
    """
    L{valueTooDeep}.
    """

    def test_edge(self) -> None:
        """
        L{MAX_VALUE_DEPTH} levels are not too deep, one more is.
        """
        self.assertEqual(MAX_VALUE_DEPTH, MAX_DEPTH - 1)
        depth = MAX_VALUE_DEPTH
        self.assertFalse(valueTooDeep("[" * depth + "]" * depth))
        self.assertTrue(valueTooDeep("[" * (depth + 1) + "]" * (depth + 1)))
        self.assertFalse(valueTooDeep('"' + "[" * 200 + '"'))

    @settings(max_examples=200, deadline=None)
    @given(
        st.integers(min_value=40, max_value=110),
        st.sampled_from([("[", "", "]"), ('{"a":', "0", "}"), ("[1,", '"[{"', "]"),
                         ('[{"b":', "1", "}]")]),
    )
    def test_sameAsValue(self, depth: int, shape: tuple[str, str, str]) -> None:
        """
        It gives the answer of the parsed value's depth.
        """
        opener, middle, closer = shape
        text = opener * depth + middle + closer * depth
        value = json.loads(text)
        self.assertEqual(valueTooDeep(text), _tooDeep(value, MAX_VALUE_DEPTH))


class EncodeJSONTests(SynchronousTestCase):
    """
    L{encodeJSON}: the one compact encoder.
    """

    @settings(max_examples=300, deadline=None)
    @given(jsonValues)
    def test_compact(self, value: object) -> None:
        """
        The bytes are those of the two encoders it replaces: the store's lenient
        one and the wire's strict one, for every JSON value.
        """
        expected = json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()
        self.assertEqual(encodeJSON(value), expected)
        self.assertEqual(encodeJSON(value, strict=True), expected)

    def test_nonFinite(self) -> None:
        """
        NaN and Infinity are written as Python writes them, or refused when
        C{strict}.
        """
        self.assertEqual(encodeJSON([float("inf"), float("nan")]), b"[Infinity,NaN]")
        self.assertRaises(ValueError, encodeJSON, float("nan"), strict=True)
        self.assertRaises(ValueError, encodeJSON, [float("-inf")], strict=True)

    def test_unicode(self) -> None:
        """
        Characters beyond ASCII are written as UTF-8, and a lone surrogate is a
        L{ValueError}.
        """
        self.assertEqual(encodeJSON({"k": "ø"}), '{"k":"ø"}'.encode("utf-8"))
        self.assertRaises(ValueError, encodeJSON, "\ud800")


class PublicNamesTests(SynchronousTestCase):
    """
    C{__all__} of the public library.
    """

    def test_all(self) -> None:
        """
        Each public module's C{__all__} names exactly the public functions,
        classes and constants it defines itself.
        """
        for module in [artcast.wire, artcast.source, artcast.send, artcast.client,
                       artcast.watch]:
            self.assertPublicNames(module)

    def test_allServer(self) -> None:
        """
        So does each module of the server, the datum's path among them.
        """
        import artcast.server

        found = pkgutil.walk_packages(artcast.server.__path__, "artcast.server.")
        names = sorted(info.name for info in found if not info.ispkg)
        self.assertIn("artcast.server.store", names)
        for name in names:
            self.assertPublicNames(importlib.import_module(name))

    def assertPublicNames(self, module: ModuleType) -> None:
        """
        Assert that C{module.__all__} names exactly the public functions,
        classes and constants C{module} defines itself.
        """
        tree = ast.parse(inspect.getsource(module))
        defined = set()
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                defined.add(node.name)
            elif isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for target in targets:
                    for name in ast.walk(target):
                        if isinstance(name, ast.Name) and name.id.isupper():
                            defined.add(name.id)
        public = {name for name in defined if not name.startswith("_")}
        self.assertEqual(sorted(module.__all__), sorted(public), module.__name__)
