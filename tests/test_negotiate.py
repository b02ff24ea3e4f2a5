# -*- test-case-name: tests.test_negotiate -*-
"""
Tests for L{artcast.server.negotiate}.
"""

from __future__ import annotations

from typing import Sequence

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from artcast.server import negotiate as negotiateModule
from artcast.server.negotiate import (
    EVENT_STREAM,
    HTML,
    JSON,
    MAX_ELEMENTS,
    MAX_HEADER_LENGTH,
    TEXT,
    MediaRange,
    negotiate,
    parseAccept,
)

VALUE = (JSON, TEXT, HTML, EVENT_STREAM)
"""
What C{GET /artcasts/<key>} offers.
"""

LIST = (JSON, HTML)
"""
What C{GET /artcasts} offers.
"""

FUZZ = settings(max_examples=200, deadline=None)

CHROME = (
    "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,"
    "image/webp,image/apng,*/*;q=0.8,application/signed-exchange;v=b3;q=0.7"
)
FIREFOX_OLD = (
    "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,"
    "image/webp,*/*;q=0.8"
)
FIREFOX = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
SAFARI = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
JAVA = "text/html, image/gif, image/jpeg, *; q=.2, */*; q=.2"
IE8 = (
    "image/jpeg, application/x-ms-application, image/gif, "
    "application/xaml+xml, image/pjpeg, application/x-ms-xbap, */*"
)

REAL_WORLD: list[tuple[str, bytes | str | None, Sequence[str], str | None]] = [
    ("curl", b"*/*", VALUE, JSON),
    ("wget", b"*/*", VALUE, JSON),
    ("python-requests", b"*/*", VALUE, JSON),
    ("fetch() default", b"*/*", VALUE, JSON),
    ("XMLHttpRequest default", b"*/*", VALUE, JSON),
    ("Arduino HTTPClient: no Accept", None, VALUE, JSON),
    ("Go net/http, urllib: no Accept", None, VALUE, JSON),
    ("an empty Accept", b"", VALUE, JSON),
    ("EventSource", b"text/event-stream", VALUE, EVENT_STREAM),
    ("Chrome", CHROME.encode("ascii"), VALUE, HTML),
    ("Firefox before 128", FIREFOX_OLD.encode("ascii"), VALUE, HTML),
    ("Firefox", FIREFOX.encode("ascii"), VALUE, HTML),
    ("Safari", SAFARI.encode("ascii"), VALUE, HTML),
    ("Java HttpURLConnection", JAVA.encode("ascii"), VALUE, HTML),
    ("Internet Explorer 8", IE8.encode("ascii"), VALUE, JSON),
    ("httpie", b"application/json, */*;q=0.5", VALUE, JSON),
    ("axios", b"application/json, text/plain, */*", VALUE, JSON),
    ("jQuery getJSON", b"application/json, text/javascript, */*; q=0.01", VALUE, JSON),
    ("a shell user asking for text", b"text/plain", VALUE, TEXT),
    ("curl -H 'Accept: application/json'", b"application/json", VALUE, JSON),
    ("the same as str", "application/json", VALUE, JSON),
    ("an image-only client", b"image/png", VALUE, None),
    ("Chrome on the list", CHROME.encode("ascii"), LIST, HTML),
    ("curl on the list", b"*/*", LIST, JSON),
    ("no Accept on the list", None, LIST, JSON),
    ("EventSource on the list", b"text/event-stream", LIST, None),
    ("text on the list", b"text/plain", LIST, None),
]


class RealWorldTests(SynchronousTestCase):
    """
    The C{Accept} headers real clients send choose what their users expect.
    """

    def test_table(self) -> None:
        """
        Each real-world header in the table chooses its expected representation.
        """
        for name, header, offered, expected in REAL_WORLD:
            self.assertEqual(
                negotiate(header, offered), expected, f"{name}: {header!r}"
            )


class ParseAcceptTests(SynchronousTestCase):
    """
    Tests for L{parseAccept}.
    """

    def test_noHeader(self) -> None:
        """
        No header parses to no ranges.
        """
        self.assertEqual(parseAccept(None), [])

    def test_ranges(self) -> None:
        """
        Each element becomes a L{MediaRange} with its q (1 when absent) and
        its specificity, in the header's order.
        """
        self.assertEqual(
            parseAccept("text/html, text/*;q=0.5, */*;q=0.1"),
            [
                MediaRange("text", "html", 1.0),
                MediaRange("text", "*", 0.5),
                MediaRange("*", "*", 0.1),
            ],
        )
        self.assertEqual(
            [r.specificity for r in parseAccept("a/b, a/*, */*")], [2, 1, 0]
        )

    def test_bytesAndStr(self) -> None:
        """
        A header as L{bytes} parses the same as the same header as L{str}.
        """
        self.assertEqual(parseAccept(CHROME.encode("ascii")), parseAccept(CHROME))

    def test_nonAsciiBytes(self) -> None:
        """
        Bytes that are not UTF-8 are read without error, and the element
        holding them is skipped.
        """
        self.assertEqual(
            parseAccept(b"text/\xff\xfe, text/plain"), [MediaRange("text", "plain")]
        )

    def test_caseInsensitive(self) -> None:
        """
        Type, subtype and the C{q} parameter name are case-insensitive.
        """
        self.assertEqual(
            parseAccept("Text/HTML;Q=0.5"), [MediaRange("text", "html", 0.5)]
        )

    def test_whitespace(self) -> None:
        """
        Spaces and tabs around elements and parameters are allowed.
        """
        self.assertEqual(
            parseAccept(" text/html ;\tq=0.5 ,\t*/* "),
            [MediaRange("text", "html", 0.5), MediaRange("*", "*")],
        )

    def test_otherParameters(self) -> None:
        """
        Parameters other than C{q}, well-formed or not, are ignored.
        """
        self.assertEqual(
            parseAccept("text/html;level=1;charset=utf-8;q=0.7;ext=2, text/plain;x"),
            [MediaRange("text", "html", 0.7), MediaRange("text", "plain", 1.0)],
        )

    def test_quotedParameters(self) -> None:
        """
        Commas, semicolons and a C{q=} inside a quoted parameter value do not
        split the element or set its quality.
        """
        self.assertEqual(
            parseAccept('text/html;x="a, b; q=0";q=0.4, application/json'),
            [MediaRange("text", "html", 0.4), MediaRange("application", "json")],
        )

    def test_unterminatedQuote(self) -> None:
        """
        An unterminated quoted string swallows the rest of the header; what
        came before it still counts.
        """
        self.assertEqual(
            parseAccept('text/plain, text/html;x="a, application/json'),
            [MediaRange("text", "plain"), MediaRange("text", "html")],
        )

    def test_qValues(self) -> None:
        """
        Every q-value RFC 9110 allows is read, as are C{.2} (sent by Java)
        and longer decimals.
        """
        for text, quality in [
            ("0", 0.0),
            ("0.", 0.0),
            ("0.5", 0.5),
            ("0.125", 0.125),
            ("1", 1.0),
            ("1.000", 1.0),
            (".2", 0.2),
            ("0.0001", 0.0001),
        ]:
            self.assertEqual(
                parseAccept(f"text/html;q={text}"),
                [MediaRange("text", "html", quality)],
                text,
            )

    def test_badQValues(self) -> None:
        """
        An element with a q that is not a number in [0, 1] is skipped; the
        other elements still count.
        """
        for text in ["abc", "2", "1.5", "1.001", "-1", "", "0x1", "1e0", "nan",
                     "inf", "0.5.5", '"0.5"', "+1", "1 0"]:
            self.assertEqual(
                parseAccept(f"text/html;q={text}, text/plain"),
                [MediaRange("text", "plain")],
                text,
            )

    def test_firstQWins(self) -> None:
        """
        Of two q parameters, the first one counts.
        """
        self.assertEqual(
            parseAccept("text/html;q=0.3;q=0.9"), [MediaRange("text", "html", 0.3)]
        )

    def test_badRanges(self) -> None:
        """
        Elements that are not C{type/subtype} are skipped.
        """
        for junk in ["json", "*", "text/", "/html", "*/html", "text/html/x",
                     "text html", "te(x)t/html", "text/ht ml", ";q=1", "=", "\x00"]:
            self.assertEqual(
                parseAccept(f"{junk}, text/plain"), [MediaRange("text", "plain")], junk
            )

    def test_emptyElements(self) -> None:
        """
        Empty elements and stray separators are skipped.
        """
        self.assertEqual(
            parseAccept(",, ,text/plain,,;, ,"), [MediaRange("text", "plain")]
        )

    def test_elementLimit(self) -> None:
        """
        At most L{MAX_ELEMENTS} non-empty elements are read; empty ones do not
        count towards the limit.
        """
        header = ", ".join(["x/y"] * MAX_ELEMENTS + ["text/plain"])
        self.assertEqual(len(parseAccept(header)), MAX_ELEMENTS)
        self.assertNotIn(MediaRange("text", "plain"), parseAccept(header))
        padded = ",,," + ",".join(["x/y"] * (MAX_ELEMENTS - 1) + ["text/plain"])
        self.assertIn(MediaRange("text", "plain"), parseAccept(padded))

    def test_lengthLimit(self) -> None:
        """
        Only the first L{MAX_HEADER_LENGTH} characters are read, and an
        element cut at the limit is dropped rather than read short.
        """
        head = "a/b;x=" + "y" * (MAX_HEADER_LENGTH - len("a/b;x=, text/plain")) + ", "
        fits = head + "text/plain"
        self.assertEqual(len(fits), MAX_HEADER_LENGTH)
        self.assertIn(MediaRange("text", "plain"), parseAccept(fits))
        # Cut at the limit, "text/plainish" would read as "text/plain".
        cut = head + "text/plainish"
        self.assertEqual(parseAccept(cut), [MediaRange("a", "b")])
        self.assertEqual(parseAccept(cut.encode("ascii")), [MediaRange("a", "b")])

    def test_freshList(self) -> None:
        """
        Changing the returned list does not change what a later parse of the
        same header returns.
        """
        parseAccept("text/plain").append(MediaRange("image", "png"))
        self.assertEqual(parseAccept("text/plain"), [MediaRange("text", "plain")])

    def test_matches(self) -> None:
        """
        L{MediaRange.matches} covers exactly the types the range names.
        """
        self.assertTrue(MediaRange("*", "*").matches("text", "html"))
        self.assertTrue(MediaRange("text", "*").matches("text", "html"))
        self.assertFalse(MediaRange("text", "*").matches("application", "json"))
        self.assertTrue(MediaRange("text", "html").matches("text", "html"))
        self.assertFalse(MediaRange("text", "html").matches("text", "plain"))


class NegotiateTests(SynchronousTestCase):
    """
    Tests for L{negotiate}: q-values, specificity and the server's order.
    """

    def test_highestQualityWins(self) -> None:
        """
        The offered type with the highest q wins, whatever the order of the
        header.
        """
        self.assertEqual(negotiate("application/json;q=0.5, text/plain", VALUE), TEXT)
        self.assertEqual(negotiate("text/plain, application/json;q=0.5", VALUE), TEXT)
        self.assertEqual(
            negotiate("text/html;q=0.2, text/event-stream;q=0.3", VALUE), EVENT_STREAM
        )

    def test_specificOverridesWildcard(self) -> None:
        """
        A more specific range sets the quality of its type over a less
        specific one: C{text/*;q=0, text/plain} accepts text/plain only.
        """
        header = "text/*;q=0, text/plain"
        self.assertEqual(negotiate(header, VALUE), TEXT)
        self.assertIsNone(negotiate(header, (HTML, EVENT_STREAM)))
        self.assertIsNone(negotiate(header, (JSON,)))

    def test_specificQZero(self) -> None:
        """
        C{q=0} on a type excludes it even when a wildcard accepts everything.
        """
        self.assertEqual(negotiate("*/*, application/json;q=0", VALUE), TEXT)
        self.assertIsNone(negotiate("*/*, application/json;q=0", (JSON,)))
        self.assertEqual(negotiate("text/*, text/plain;q=0", VALUE), HTML)

    def test_wildcardQZero(self) -> None:
        """
        C{*/*;q=0} leaves only the types named with q > 0.
        """
        self.assertEqual(negotiate("*/*;q=0, text/html;q=0.1", VALUE), HTML)
        self.assertIsNone(negotiate("*/*;q=0", VALUE))

    def test_tinyQAcceptable(self) -> None:
        """
        The smallest q-value still means acceptable.
        """
        self.assertEqual(negotiate("text/html;q=0.001", VALUE), HTML)

    def test_typeWildcard(self) -> None:
        """
        C{text/*} chooses the text type the server prefers.
        """
        self.assertEqual(negotiate("text/*", VALUE), TEXT)
        self.assertEqual(negotiate("text/*", LIST), HTML)

    def test_explicitBeatsWildcardAtEqualQuality(self) -> None:
        """
        At equal q, a type the client names beats one reached by a wildcard.
        """
        self.assertEqual(negotiate("text/html, */*", VALUE), HTML)
        self.assertEqual(negotiate("*/*, text/event-stream", VALUE), EVENT_STREAM)
        self.assertEqual(negotiate("text/*, text/event-stream", VALUE), EVENT_STREAM)

    def test_serverOrderBreaksTies(self) -> None:
        """
        At equal q and specificity, the server's order decides, not the
        client's.
        """
        self.assertEqual(negotiate("text/html, application/json", VALUE), JSON)
        self.assertEqual(negotiate("text/event-stream, text/plain", VALUE), TEXT)
        self.assertEqual(negotiate("text/html, text/plain", (HTML, TEXT)), HTML)

    def test_duplicateRanges(self) -> None:
        """
        Of several ranges naming the same type, the highest q counts.
        """
        self.assertEqual(
            negotiate("text/html;level=1;q=0.2, text/html;q=0.9, application/json;q=0.5",
                      VALUE),
            HTML,
        )

    def test_parametersIgnored(self) -> None:
        """
        Media type parameters do not stop a range from matching.
        """
        self.assertEqual(negotiate("application/json; charset=utf-8", VALUE), JSON)
        self.assertEqual(negotiate("text/plain;format=flowed", VALUE), TEXT)

    def test_caseInsensitive(self) -> None:
        """
        Types match whatever their case on either side, and the offered
        spelling is returned.
        """
        self.assertEqual(negotiate("TEXT/HTML", VALUE), HTML)
        self.assertEqual(negotiate("text/html", ("Text/Html",)), "Text/Html")

    def test_unparseableHeaderMeansAnything(self) -> None:
        """
        A header in which no range can be read counts as no header: the
        server's favourite is chosen.
        """
        for header in ["junk", "json", "text/html;q=abc", ",,,", "*; q=.2"]:
            self.assertEqual(negotiate(header, VALUE), JSON, header)

    def test_nothingOffered(self) -> None:
        """
        With nothing offered there is nothing to choose.
        """
        self.assertIsNone(negotiate(None, ()))
        self.assertIsNone(negotiate("*/*", []))

    def test_notString(self) -> None:
        """
        A header value of an unexpected type counts as no header.
        """
        self.assertEqual(negotiate(42, VALUE), JSON)  # type: ignore[arg-type]

    def test_bytearray(self) -> None:
        """
        A L{bytearray} header is read like L{bytes}.
        """
        header = bytearray(b"text/plain")
        self.assertEqual(negotiate(header, VALUE), TEXT)  # type: ignore[arg-type]

    def test_cached(self) -> None:
        """
        Repeated identical header values are parsed once, and a long header
        is cached under its first L{MAX_HEADER_LENGTH} + 1 characters only.
        """
        cached = negotiateModule._parseCached
        self.assertIsNotNone(cached.cache_info().maxsize)
        header = "text/html;q=0.3, text/plain;q=0.2, x/cached-test"
        negotiate(header, VALUE)
        before = cached.cache_info()
        self.assertEqual(negotiate(header, VALUE), HTML)
        after = cached.cache_info()
        self.assertEqual(after.hits, before.hits + 1)
        self.assertEqual(after.misses, before.misses)

        long = "x/cached-long, " * (MAX_HEADER_LENGTH // 10)
        negotiate(long + "a", VALUE)
        before = cached.cache_info()
        negotiate(long + "b" * 1000, VALUE)
        self.assertEqual(cached.cache_info().misses, before.misses)


def mediaTypes() -> st.SearchStrategy[str]:
    """
    Well-formed media ranges from a small set, in random case.
    """
    full = st.sampled_from(
        ["text/plain", "text/html", "text/event-stream", "application/json",
         "application/xml", "image/png", "text/*", "application/*", "*/*"]
    )
    return st.tuples(full, st.booleans()).map(
        lambda pair: pair[0].upper() if pair[1] else pair[0]
    )


QVALUES = st.sampled_from([None, "0", "0.001", "0.1", "0.5", "0.8", "0.9", "1", "1.0"])


@st.composite
def elements(draw: st.DrawFn) -> tuple[str, str | None]:
    """
    A well-formed media range and its q text (L{None} for no q).
    """
    return draw(mediaTypes()), draw(QVALUES)


def render(parts: list[tuple[str, str | None]]) -> str:
    """
    Write elements as an C{Accept} header.
    """
    return ", ".join(
        mediaRange if q is None else f"{mediaRange};q={q}" for mediaRange, q in parts
    )


def referenceNegotiate(
    parts: list[tuple[str, str | None]], offered: Sequence[str]
) -> str | None:
    """
    RFC 9110 section 12.5.1 as plainly as it can be written, for well-formed
    elements.
    """
    if not offered:
        return None
    if not parts:
        return offered[0]
    ranges = []
    for mediaRange, q in parts:
        main, sub = mediaRange.lower().split("/")
        specificity = 0 if main == "*" else 1 if sub == "*" else 2
        ranges.append((main, sub, specificity, 1.0 if q is None else float(q)))
    scored = []
    for index, mediaType in enumerate(offered):
        main, sub = mediaType.lower().split("/")
        covering = [
            (rangeSpecificity, quality)
            for rmain, rsub, rangeSpecificity, quality in ranges
            if rmain == "*" or (rmain == main and rsub in ("*", sub))
        ]
        if covering:
            best, bestQuality = max(covering)
            if bestQuality > 0:
                scored.append((bestQuality, best, -index, mediaType))
    return max(scored)[3] if scored else None


class FuzzTests(SynchronousTestCase):
    """
    Property tests for L{parseAccept} and L{negotiate}.
    """

    @FUZZ
    @given(st.one_of(st.text(), st.binary(), st.text(alphabet=",;=/*\"\\ qtexhml0.1")))
    def test_neverRaises(self, header: str | bytes) -> None:
        """
        Any text or bytes at all parses without error, and negotiation
        answers L{None} or one of the offered types.
        """
        for mediaRange in parseAccept(header):
            self.assertTrue(0.0 <= mediaRange.q <= 1.0)
            self.assertIn(mediaRange.specificity, (0, 1, 2))
        for offered in (VALUE, LIST, (HTML,)):
            self.assertIn(negotiate(header, offered), (None, *offered))

    @FUZZ
    @given(
        st.sampled_from(VALUE),
        st.sampled_from(["", ";q=1", ";q=0.5", ";q=0.001", ";level=1;q=0.3"]),
        st.booleans(),
    )
    def test_aloneIsChosen(self, mediaType: str, parameters: str, upper: bool) -> None:
        """
        An offered type listed alone with q > 0 is chosen.
        """
        header = mediaType + parameters
        if upper:
            header = header.upper()
        self.assertEqual(negotiate(header, VALUE), mediaType)
        self.assertEqual(negotiate(header.encode("ascii"), VALUE), mediaType)

    @FUZZ
    @given(st.lists(elements(), max_size=8), st.randoms(use_true_random=False))
    def test_orderIndependent(
        self, parts: list[tuple[str, str | None]], random: object
    ) -> None:
        """
        The order of the elements in the header does not change the choice.
        """
        shuffled = list(parts)
        random.shuffle(shuffled)  # type: ignore[attr-defined]
        self.assertEqual(
            negotiate(render(parts), VALUE), negotiate(render(shuffled), VALUE)
        )

    @FUZZ
    @given(
        st.lists(elements(), max_size=8),
        st.sampled_from([VALUE, LIST, (HTML, JSON), (EVENT_STREAM,)]),
    )
    def test_agreesWithReference(
        self, parts: list[tuple[str, str | None]], offered: Sequence[str]
    ) -> None:
        """
        For well-formed headers, L{negotiate} chooses what a plain reading of
        RFC 9110 (plus the tie-breaks documented in the module) chooses.
        """
        self.assertEqual(
            negotiate(render(parts), offered), referenceNegotiate(parts, offered)
        )

    @FUZZ
    @given(st.lists(elements(), min_size=1, max_size=8))
    def test_wildcardZeroChangesNothing(
        self, parts: list[tuple[str, str | None]]
    ) -> None:
        """
        Adding C{*/*;q=0} never changes an acceptable choice.
        """
        before = negotiate(render(parts), VALUE)
        if before is not None:
            self.assertEqual(negotiate(render(parts) + ", */*;q=0", VALUE), before)
