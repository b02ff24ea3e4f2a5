"""
Tests for the datagrams of repair in L{artcast.wire}: the C{"r"} mark,
batches, heartbeats, NCFs, gones and NACKs (C{docs/protocol.md}, "Repair").
"""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from artcast.wire import (
    MAX_BATCH,
    MAX_COUNTER,
    MAX_RANGES,
    BadDatagram,
    Batch,
    Confirm,
    DataMessage,
    Fragment,
    Gone,
    Heartbeat,
    Nack,
    Stamp,
    batchItem,
    batchOverhead,
    encodeBatch,
    encodeConfirm,
    encodeData,
    encodeGone,
    encodeHeartbeat,
    encodeNack,
    parseData,
    parseNack,
    toRanges,
)

BOOT = 1795312345123
STAMP = Stamp("oslo", BOOT, 40, 1795312399.125)
KEY = b"correct horse battery staple"


def document(**members: object) -> bytes:
    """
    A version 2 object of the stamp's members and C{members}.
    """
    base: dict[str, object] = {"v": 2, "src": "oslo", "boot": BOOT, "t": 1795312400.5}
    base.update(members)
    return json.dumps(base, separators=(",", ":")).encode()


class RepairableTests(SynchronousTestCase):
    """
    The C{"r"} member of data datagrams.
    """

    def test_written(self) -> None:
        """
        A repairable datum is written with C{"r":1} after C{t}, exactly as the
        protocol page shows, and read back as repairable.
        """
        [data] = encodeData("weather/oslo/temp", 21.5,
                            Stamp("oslo", BOOT, 42, 1795312399.123), repairable=True)
        self.assertEqual(
            data,
            b'{"v":2,"src":"oslo","boot":1795312345123,"seq":42,"t":1795312399.123,'
            b'"r":1,"key":"weather/oslo/temp","value":21.5}',
        )
        message = parseData(data)
        self.assertIsInstance(message, DataMessage)
        self.assertTrue(message.repairable)

    def test_notWritten(self) -> None:
        """
        Without C{repairable} the datagram has no C{"r"} and is not repairable.
        """
        [data] = encodeData("k", 1, STAMP)
        self.assertNotIn(b'"r"', data)
        self.assertFalse(parseData(data).repairable)

    def test_fragments(self) -> None:
        """
        Every fragment of a repairable datum carries the mark.
        """
        datagrams = encodeData("k", "x" * 3000, STAMP, maxDatagram=1000, repairable=True)
        self.assertGreater(len(datagrams), 1)
        for data in datagrams:
            fragment = parseData(data)
            self.assertIsInstance(fragment, Fragment)
            self.assertTrue(fragment.repairable)

    def test_bad(self) -> None:
        """
        An C{"r"} other than 0 or 1 is C{bad-shape}.
        """
        for flag in (2, "1", True, 1.0, None):
            data = document(seq=1, r=flag, key="k", value=1)
            with self.assertRaises(BadDatagram) as caught:
                parseData(data)
            self.assertEqual(caught.exception.reason, "bad-shape", flag)

    def test_signer(self) -> None:
        """
        A verified datagram tells which of the server's keys verified it; the
        key is neither compared nor shown.
        """
        [data] = encodeData("k", 1, STAMP, signingKey=KEY, repairable=True)
        message = parseData(data, [b"other", KEY], requireSignature=True)
        self.assertIs(message.signer, KEY)
        self.assertEqual(message, DataMessage("k", 1, STAMP, repairable=True))
        self.assertNotIn("horse", repr(message))
        self.assertIsNone(parseData(data).signer)


class BatchTests(SynchronousTestCase):
    """
    Batch datagrams: several datums of one source in one datagram.
    """

    def test_roundTrip(self) -> None:
        """
        A batch's items come back as datums of consecutive sequence numbers,
        with the batch's time and mark.
        """
        items = [batchItem("weather/oslo/temp", 21.5), batchItem("weather/oslo/wind", 3)]
        data = encodeBatch(items, STAMP)
        self.assertEqual(
            data,
            b'{"v":2,"src":"oslo","boot":1795312345123,"seq":40,"t":1795312399.125,"r":1,'
            b'"batch":[["weather/oslo/temp",21.5],["weather/oslo/wind",3]]}',
        )
        batch = parseData(data)
        self.assertIsInstance(batch, Batch)
        self.assertEqual(
            batch.messages(),
            [
                DataMessage("weather/oslo/temp", 21.5, STAMP, True),
                DataMessage("weather/oslo/wind", 3,
                            Stamp("oslo", BOOT, 41, STAMP.sent), True),
            ],
        )

    def test_overhead(self) -> None:
        """
        L{batchOverhead} predicts a batch's size exactly, signed or not.
        """
        items = [batchItem("a", 1), batchItem("b/c", "text"), batchItem("d", [1, {"e": None}])]
        for key in (None, KEY):
            data = encodeBatch(items, STAMP, key)
            self.assertEqual(
                len(data),
                batchOverhead(STAMP, key is not None) + sum(map(len, items)) + len(items) - 1,
            )

    def test_signed(self) -> None:
        """
        A signed batch is checked like any datagram and tells its signer.
        """
        data = encodeBatch([batchItem("a", 1)], STAMP, KEY)
        self.assertIs(parseData(data, [KEY], True).signer, KEY)
        with self.assertRaises(BadDatagram) as caught:
            parseData(data, [b"other"], True)
        self.assertEqual(caught.exception.reason, "bad-signature")

    def test_badItems(self) -> None:
        """
        A batch with no items, too many, an item that is not C{[key, value]}
        or a bad key is dropped whole.
        """
        cases = [
            ([], "bad-shape"),
            ([["k", 1]] * (MAX_BATCH + 1), "bad-shape"),
            ([["k", 1, 2]], "bad-shape"),
            (["k"], "bad-shape"),
            ([[1, 1]], "bad-shape"),
            ([["a//b", 1]], "bad-key"),
            ("[]", "bad-shape"),
        ]
        for items, reason in cases:
            with self.assertRaises(BadDatagram) as caught:
                parseData(document(seq=1, batch=items))
            self.assertEqual(caught.exception.reason, reason, items)

    def test_lastSeq(self) -> None:
        """
        A batch whose last datum's sequence number would pass 2**63-1 is
        refused, when read and when written.
        """
        with self.assertRaises(BadDatagram):
            parseData(document(seq=MAX_COUNTER, batch=[["a", 1], ["b", 2]]))
        with self.assertRaises(ValueError):
            encodeBatch([batchItem("a", 1)] * 2, Stamp("oslo", BOOT, MAX_COUNTER, 0.0))

    def test_valueSize(self) -> None:
        """
        C{maxValueSize} bounds each value of a batch.
        """
        data = encodeBatch([batchItem("a", 1), batchItem("b", "x" * 200)], STAMP)
        with self.assertRaises(BadDatagram) as caught:
            parseData(data, maxValueSize=100)
        self.assertEqual(caught.exception.reason, "too-large")
        self.assertIsInstance(parseData(data, maxValueSize=1000), Batch)

    def test_badItemWritten(self) -> None:
        """
        L{batchItem} refuses what a server would refuse.
        """
        for key, value in [("a//b", 1), ("k", float("nan")), ("k", object())]:
            self.assertRaises(ValueError, batchItem, key, value)
        self.assertRaises(ValueError, encodeBatch, [], STAMP)


class ControlTests(SynchronousTestCase):
    """
    Heartbeats, NCFs and gones: what a source says about its sequence.
    """

    def test_heartbeat(self) -> None:
        """
        A heartbeat is written as documented and read back with its C{last}.
        """
        data = encodeHeartbeat(Stamp("oslo", BOOT, 0, 1795312400.5), 42)
        self.assertEqual(
            data, b'{"v":2,"src":"oslo","boot":1795312345123,"t":1795312400.5,"last":42}')
        self.assertEqual(parseData(data),
                         Heartbeat(Stamp("oslo", BOOT, 0, 1795312400.5), 42))
        self.assertEqual(parseData(encodeHeartbeat(STAMP, 0)).last, 0)

    def test_confirmAndGone(self) -> None:
        """
        NCFs and gones carry their ranges, as documented.
        """
        stamp = Stamp("oslo", BOOT, 0, 1795312400.51)
        ncf = encodeConfirm(stamp, [(40, 41), (44, 44)])
        self.assertEqual(
            ncf, b'{"v":2,"src":"oslo","boot":1795312345123,"t":1795312400.51,'
                 b'"ncf":[[40,41],[44,44]]}')
        self.assertEqual(parseData(ncf), Confirm(stamp, ((40, 41), (44, 44))))
        gone = encodeGone(stamp, [(1, 39)])
        self.assertEqual(
            gone, b'{"v":2,"src":"oslo","boot":1795312345123,"t":1795312400.51,'
                  b'"gone":[[1,39]]}')
        self.assertEqual(parseData(gone), Gone(stamp, ((1, 39),)))

    def test_signed(self) -> None:
        """
        A server with keys drops an unsigned heartbeat, NCF or gone.
        """
        for data in (encodeHeartbeat(STAMP, 1), encodeConfirm(STAMP, [(1, 1)]),
                     encodeGone(STAMP, [(1, 1)])):
            with self.assertRaises(BadDatagram) as caught:
                parseData(data, [KEY], True)
            self.assertEqual(caught.exception.reason, "unsigned")
        self.assertIs(parseData(encodeGone(STAMP, [(1, 1)], KEY), [KEY], True).signer, KEY)

    def test_badRanges(self) -> None:
        """
        Ranges that are empty, too many, reversed, overlapping, unordered,
        zero or not integers are C{bad-shape}, and cannot be written.
        """
        bad = [
            [],
            [[n, n] for n in range(1, MAX_RANGES + 2)],
            [[5, 4]],
            [[1, 5], [5, 6]],
            [[7, 8], [1, 2]],
            [[0, 1]],
            [[1, MAX_COUNTER + 1]],
            [[1.0, 2]],
            [[1, 2, 3]],
            [1],
            "1-2",
        ]
        for ranges in bad:
            for name in ("ncf", "gone"):
                with self.assertRaises(BadDatagram) as caught:
                    parseData(document(**{name: ranges}))
                self.assertEqual(caught.exception.reason, "bad-shape", (name, ranges))
            if isinstance(ranges, list) and all(isinstance(r, list) and len(r) == 2
                                                for r in ranges):
                self.assertRaises(ValueError, encodeGone, STAMP, ranges)

    def test_badLast(self) -> None:
        """
        A heartbeat's C{last} is an integer from 0 to 2**63-1.
        """
        for last in (-1, 1.5, "3", None, MAX_COUNTER + 1):
            with self.assertRaises(BadDatagram):
                parseData(document(last=last))

    def test_noKeyNoKind(self) -> None:
        """
        An object without a key that is none of these is still a data
        datagram without a key: C{bad-shape}, as before.
        """
        with self.assertRaises(BadDatagram) as caught:
            parseData(document(seq=1, value=1))
        self.assertEqual(caught.exception.reason, "bad-shape")
        self.assertIn("key", str(caught.exception))

    def test_keyWins(self) -> None:
        """
        A data datagram with a member named like a control one (unknown
        members are ignored) is still a datum.
        """
        message = parseData(document(seq=3, key="k", value=1, last=9, gone=[[1, 1]]))
        self.assertIsInstance(message, DataMessage)


class NackTests(SynchronousTestCase):
    """
    NACKs, as a source reads them.
    """

    def test_roundTrip(self) -> None:
        """
        A NACK is written as documented and read back.
        """
        data = encodeNack("oslo", BOOT, [(40, 41), (44, 44)], 1795312400.5)
        self.assertEqual(
            data, b'{"v":2,"nack":"oslo","boot":1795312345123,"t":1795312400.5,'
                  b'"seqs":[[40,41],[44,44]]}')
        self.assertEqual(parseNack(data), Nack("oslo", BOOT, 1795312400.5, ((40, 41), (44, 44))))

    def test_signedSource(self) -> None:
        """
        A source with a key takes only NACKs signed with that key.
        """
        signed = encodeNack("oslo", BOOT, [(1, 1)], 0.0, KEY)
        self.assertEqual(parseNack(signed, KEY).ranges, ((1, 1),))
        for data, reason in [
            (encodeNack("oslo", BOOT, [(1, 1)], 0.0), "unsigned"),
            (encodeNack("oslo", BOOT, [(1, 1)], 0.0, b"other"), "bad-signature"),
        ]:
            with self.assertRaises(BadDatagram) as caught:
                parseNack(data, KEY)
            self.assertEqual(caught.exception.reason, reason)

    def test_unsignedSource(self) -> None:
        """
        A source without a key takes signed and unsigned NACKs.
        """
        self.assertEqual(parseNack(encodeNack("oslo", BOOT, [(2, 3)], 0.0, KEY)).ranges,
                         ((2, 3),))

    def test_bad(self) -> None:
        """
        What is not a NACK is refused with a reason.
        """
        cases = [
            (b"[1]", "bad-shape"),
            (b"not json", "not-json"),
            (b'{"v":3,"nack":"oslo","boot":1,"t":0,"seqs":[[1,1]]}', "bad-version"),
            (b'{"nack":"oslo","boot":1,"t":0,"seqs":[[1,1]]}', "bad-shape"),
            (b'{"v":2,"nack":"os lo","boot":1,"t":0,"seqs":[[1,1]]}', "bad-shape"),
            (b'{"v":2,"nack":"oslo","boot":-1,"t":0,"seqs":[[1,1]]}', "bad-shape"),
            (b'{"v":2,"nack":"oslo","boot":1,"t":"now","seqs":[[1,1]]}', "bad-shape"),
            (b'{"v":2,"nack":"oslo","boot":1,"t":0,"seqs":[]}', "bad-shape"),
        ]
        for data, reason in cases:
            with self.assertRaises(BadDatagram) as caught:
                parseNack(data)
            self.assertEqual(caught.exception.reason, reason, data)

    def test_notOnTheDataGroup(self) -> None:
        """
        A NACK sent to the data group is not a datum: C{bad-shape}.
        """
        with self.assertRaises(BadDatagram) as caught:
            parseData(encodeNack("oslo", BOOT, [(1, 1)], 0.0))
        self.assertEqual(caught.exception.reason, "bad-shape")


class RangesTests(SynchronousTestCase):
    """
    L{toRanges}.
    """

    def test_example(self) -> None:
        """
        Neighbours merge, order and repeats do not matter.
        """
        self.assertEqual(toRanges([5, 1, 2, 3, 9, 2]), [(1, 3), (5, 5), (9, 9)])
        self.assertEqual(toRanges([]), [])

    @given(st.sets(st.integers(min_value=1, max_value=500), min_size=1, max_size=64))
    def test_roundTrip(self, seqs: set[int]) -> None:
        """
        The ranges hold exactly the numbers given, and at most 64 of them
        survive writing and reading a gone.
        """
        ranges = toRanges(seqs)
        self.assertEqual({n for first, last in ranges for n in range(first, last + 1)}, seqs)
        self.assertEqual(list(parseData(encodeGone(STAMP, ranges)).ranges), ranges)


class DocumentedTests(SynchronousTestCase):
    """
    The examples of C{docs/protocol.md}'s "Repair" section.
    """

    def test_examplesParse(self) -> None:
        """
        Every complete datagram the section shows is read as what it says it is.
        """
        import os

        path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                            "docs", "protocol.md")
        with open(path, encoding="utf-8") as f:
            text = f.read()
        section = text[text.index("\n## Repair\n"):text.index("\n## Keys\n")]
        kinds: dict[str, int] = {}
        for line in section.splitlines():
            line = line.strip().strip("`")
            if line.startswith(("source -> group", "{")):
                line = line[line.find("{"):]
                line = line[:line.rfind("}") + 1]
            if not line.startswith('{"v":2') or "..." in line:
                continue
            data = line.encode()
            if b'"nack"' in data:
                message: object = parseNack(data)
            else:
                message = parseData(data)
            kinds[type(message).__name__] = kinds.get(type(message).__name__, 0) + 1
        self.assertEqual(
            sorted(kinds),
            ["Batch", "Confirm", "DataMessage", "Gone", "Heartbeat", "Nack"],
        )
