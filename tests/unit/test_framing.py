"""The TCP deframer: table tests per framing, the size cap, resync, expiry, and split-invariance (hypothesis)."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.adapters.listeners.framing import Deframer, FrameSpec, parse_sequence
from runtime.core.solution.model import Listener


def spec_for(**fields: Any) -> FrameSpec:
    return FrameSpec.from_listener(Listener(key="tcp", listener_type="rawtcp", listen_on_port=0, **fields))


def feed_all(spec: FrameSpec, *chunks: bytes) -> tuple[list[bytes], Deframer]:
    d = Deframer(spec)
    frames: list[bytes] = []
    for chunk in chunks:
        frames += d.feed(chunk)
    return frames, d


# ---------------------------------------------------------------------- configuration


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (None, None),
        ("", None),
        ("\\x02", b"\x02"),
        ("\\x03\\x04", b"\x03\x04"),
        ("END", b"END"),
        ("\\r\\n", b"\r\n"),
        ("a\\\\b", b"a\\b"),
        ("\\0", b"\x00"),
        ("\\q", b"\\q"),
        ("trailing\\", b"trailing\\"),
        ("é", "é".encode()),
    ],
)
def test_parse_sequence(text: str | None, expected: bytes | None) -> None:
    assert parse_sequence(text) == expected


@pytest.mark.parametrize("bad", ["\\x", "\\x4", "\\xzz"])
def test_parse_sequence_rejects_bad_hex(bad: str) -> None:
    with pytest.raises(ValueError, match="escape"):
        parse_sequence(bad)


def test_mode_is_chosen_by_precedence() -> None:
    assert spec_for().mode == "newline"
    assert spec_for(start_message_sequence="\\x02", end_message_sequence="\\x03").mode == "sequences"
    assert spec_for(delimited_with_soheot=True, start_message_sequence="<").mode == "soheot"
    s = spec_for(message_length_in_message=True, delimited_with_soheot=True, message_length_size=4,
                 message_length_byte_count_endiness="littleendian", message_length_location=1, max_message_size=10)
    assert (s.mode, s.length_size, s.big_endian, s.length_location, s.max_size) == ("length", 4, False, 1, 10)


@pytest.mark.parametrize("size", [0, 3, 8])
def test_bad_length_size_is_a_config_error(size: int) -> None:
    with pytest.raises(ValueError, match="1, 2 or 4"):
        spec_for(message_length_in_message=True, message_length_size=size)


# ---------------------------------------------------------------------- table tests

NEWLINE = FrameSpec()
SEQ = FrameSpec(mode="sequences", start=b"\x02", end=b"\x03")
SEQ_TEXT = FrameSpec(mode="sequences", start=b"<<", end=b">>")
END_ONLY = FrameSpec(mode="sequences", start=None, end=b"\r\n")
START_ONLY = FrameSpec(mode="sequences", start=b"$", end=None)
SOHEOT = FrameSpec(mode="soheot", start=b"\x01", end=b"\x04")


def length(size: int = 2, *, big: bool = True, loc: int = 0, cap: int = 1024, counts: bool = False) -> FrameSpec:
    return FrameSpec(mode="length", start=None, end=None, length_size=size, big_endian=big, length_location=loc,
                     max_size=cap, length_counts_header=counts)


@pytest.mark.parametrize(
    ("spec", "chunks", "expected"),
    [
        (NEWLINE, [b"a\nbb\r\nccc\n"], [b"a", b"bb", b"ccc"]),
        (NEWLINE, [b"a", b"b\r", b"\nc"], [b"ab"]),
        (NEWLINE, [b"\n\r\n\nx\n"], [b"x"]),  # blank lines are skipped
        (SEQ, [b"junk\x02one\x03\x02two\x03tail"], [b"one", b"two"]),
        (SEQ, [b"\x02a\x02b\x03"], [b"a\x02b"]),  # a start inside a frame is data
        (SEQ_TEXT, [b"x<", b"<hi>", b">y<<there>>"], [b"hi", b"there"]),
        (END_ONLY, [b"one\r", b"\ntwo\r\n"], [b"one", b"two"]),
        (START_ONLY, [b"junk$a,1$b,2", b"$c"], [b"a,1", b"b,2"]),
        (SOHEOT, [b"\x01{\"a\":1}\x04\x01", b"x\x04"], [b'{"a":1}', b"x"]),
        (length(1), [b"\x03abc\x01z"], [b"abc", b"z"]),
        (length(2), [b"\x00\x03abc\x00\x01z"], [b"abc", b"z"]),
        (length(2, big=False), [b"\x03\x00abc\x01\x00z"], [b"abc", b"z"]),
        (length(4), [b"\x00\x00\x00\x03abc"], [b"abc"]),
        (length(4, big=False), [b"\x03\x00\x00\x00abc"], [b"abc"]),
        (length(2, loc=1), [b"H\x00\x02hiG\x00\x01!"], [b"Hhi", b"G!"]),  # the header stays, the length goes
        (length(2, counts=True), [b"\x00\x05abc"], [b"abc"]),
        (length(1), [b"\x00\x02ab"], [b"ab"]),  # an empty frame is skipped
    ],
)
def test_frames(spec: FrameSpec, chunks: list[bytes], expected: list[bytes]) -> None:
    frames, _ = feed_all(spec, *chunks)
    assert frames == expected


def test_half_frame_waits_for_the_rest() -> None:
    d = Deframer(length(2))
    assert d.feed(b"\x00") == []
    assert not d.feed(b"\x05ab") and d.pending
    assert d.feed(b"cde\x00") == [b"abcde"]
    assert d.pending  # the next frame has begun


def test_garbage_is_not_held() -> None:
    frames, d = feed_all(SEQ, b"x" * 10_000, b"\x02ok\x03")
    assert frames == [b"ok"]
    assert d.stats.garbage_bytes == 10_000 and d.buffered == 0


# ---------------------------------------------------------------------- size cap


@pytest.mark.parametrize("spec", [FrameSpec(max_size=4), FrameSpec(mode="soheot", start=b"\x01", end=b"\x04",
                                                                   max_size=4)])
def test_oversized_delimited_frame_is_dropped_and_the_stream_resyncs(spec: FrameSpec) -> None:
    wrap = (lambda p: p + b"\n") if spec.mode == "newline" else (lambda p: b"\x01" + p + b"\x04")
    frames, d = feed_all(spec, wrap(b"ok"), wrap(b"x" * 3)[:-1] + b"yyyyyyyyyy", b"zzzz" * 100,
                         wrap(b"")[-1:] + wrap(b"fine"), wrap(b"12345"), wrap(b"1234"))
    assert frames == [b"ok", b"fine", b"1234"]
    assert d.stats.oversized == 2
    assert d.buffered <= 4


def test_oversized_frame_never_buffers_past_the_cap() -> None:
    d = Deframer(FrameSpec(max_size=100))
    for _ in range(1000):
        assert d.feed(b"a" * 1000) == []
        assert d.buffered <= 100
    assert d.feed(b"\nnext\n") == [b"next"]
    assert d.stats.oversized == 1


def test_length_over_the_cap_breaks_the_stream() -> None:
    d = Deframer(length(2, cap=10))
    assert d.feed(b"\x00\x02ok\x00\x0b") == [b"ok"]
    assert d.broken is not None and "maximum" in d.broken
    assert d.feed(b"\x00\x01a") == []
    assert d.stats.oversized == 1


def test_length_shorter_than_header_breaks() -> None:
    d = Deframer(length(2, counts=True))
    d.feed(b"\x00\x01")
    assert d.broken is not None


# ---------------------------------------------------------------------- expiry


def test_expire_drops_a_half_line_and_skips_its_rest() -> None:
    d = Deframer(NEWLINE)
    d.feed(b"half")
    assert d.pending and d.expire() is None
    assert d.feed(b" rest\nnext\n") == [b"next"]
    assert d.stats.truncated == 1


def test_expire_with_start_sequence_waits_for_the_next_start() -> None:
    d = Deframer(SEQ)
    d.feed(b"\x02half")
    assert d.expire() is None
    assert d.feed(b"rest\x03\x02ok\x03") == [b"ok"]


def test_expire_with_start_only_delivers_the_pending_frame() -> None:
    d = Deframer(START_ONLY)
    assert d.feed(b"$a$b") == [b"a"]
    assert d.expire() == b"b"
    assert not d.pending and d.expire() is None


def test_expire_with_length_breaks() -> None:
    d = Deframer(length(1))
    d.feed(b"\x05ab")
    d.expire()
    assert d.broken is not None and d.stats.truncated == 1


def test_nothing_pending_nothing_expires() -> None:
    d = Deframer(SEQ)
    d.feed(b"garbage")
    assert not d.pending and d.expire() is None and d.stats.truncated == 0


# ---------------------------------------------------------------------- encode


@pytest.mark.parametrize("spec", [NEWLINE, SEQ, SEQ_TEXT, END_ONLY, SOHEOT, length(1), length(2, big=False),
                                  length(4), length(2, loc=2), length(2, counts=True)])
def test_encode_round_trips(spec: FrameSpec) -> None:
    payloads = [b"hello", b"AB payload", b"xyz"]
    frames, _ = feed_all(spec, b"".join(spec.encode(p) for p in payloads))
    assert frames == payloads


def test_encode_refuses_what_cannot_be_framed() -> None:
    with pytest.raises(ValueError, match="too long"):
        length(1).encode(b"x" * 256)
    with pytest.raises(ValueError, match="shorter"):
        length(2, loc=3).encode(b"ab")


# ---------------------------------------------------------------------- property: any split gives the same frames

SPECS = [NEWLINE, SEQ, SEQ_TEXT, END_ONLY, START_ONLY, SOHEOT, length(1), length(2), length(2, big=False),
         length(4), length(4, big=False), length(2, loc=3)]


def _payload_for(spec: FrameSpec) -> st.SearchStrategy[bytes]:
    if spec.mode == "length":
        return st.binary(min_size=max(1, spec.length_location), max_size=200)
    forbidden = set((spec.end or b"") + (spec.start if spec.end is None else b"") + b"\r")
    alphabet = [b for b in range(256) if b not in forbidden]
    return st.lists(st.sampled_from(alphabet), min_size=1, max_size=200).map(bytes)


@st.composite
def stream_and_cuts(draw: st.DrawFn) -> tuple[FrameSpec, list[bytes], bytes, list[int]]:
    spec = draw(st.sampled_from(SPECS))
    payloads = draw(st.lists(_payload_for(spec), max_size=12))
    stream = b"".join(spec.encode(p) for p in payloads)
    if spec.mode == "sequences" and spec.start is not None:
        stream = b"noise" + stream  # garbage before the first start sequence
    if spec.end is None and spec.mode != "length":
        stream += spec.start or b""  # start only: the next start completes the last frame
    cuts = sorted(draw(st.lists(st.integers(0, len(stream)), max_size=20)))
    return spec, payloads, stream, cuts


@settings(max_examples=400, deadline=None)
@given(stream_and_cuts())
def test_any_split_yields_the_same_frames(case: tuple[FrameSpec, list[bytes], bytes, list[int]]) -> None:
    spec, payloads, stream, cuts = case
    bounds = [0, *cuts, len(stream)]
    chunks = [stream[a:b] for a, b in itertools.pairwise(bounds)]
    whole, _ = feed_all(spec, stream)
    split, d = feed_all(spec, *chunks)
    assert whole == payloads
    assert split == whole
    assert d.broken is None
