"""Envelopes and partitions (services/cluster.py): what an ingest publishes is what a worker processes."""

from __future__ import annotations

import pytest

from runtime.core.messages import InboundMessage, MessageKind
from runtime.services.cluster import (
    EnvelopeError,
    PartitionSequencer,
    Sequence,
    decode_command,
    decode_envelope,
    decode_outcome,
    decode_sequenced,
    encode_command,
    encode_envelope,
    encode_outcome,
    partition_of,
    partition_to_release,
)
from runtime.services.input_commands import InputCommandCall, InputCommandOutcome


def test_envelope_round_trip_keeps_every_byte_and_field() -> None:
    payload = bytes(range(256)) + "é€".encode()
    msg = InboundMessage(listener="mqttin", payload=payload, topic="devices/a/b", method="POST",
                         headers={"content-type": "application/json"}, query={"x": "1"}, from_address="10.0.0.1")
    back, device = decode_envelope(encode_envelope(msg, "dev-1"))
    assert device == "dev-1"
    assert (back.id, back.listener, back.payload, back.topic, back.method, back.received_at) == (
        msg.id, "mqttin", payload, "devices/a/b", "POST", msg.received_at)
    assert dict(back.headers) == {"content-type": "application/json"} and dict(back.query) == {"x": "1"}
    assert back.kind is MessageKind.REGULAR and back.ack is None


@pytest.mark.parametrize("body", [b"", b"not json", b"[]", b'{"v": 99}', b'{"v": 1, "listener": "x"}'])
def test_what_is_not_an_envelope_is_refused_with_a_reason(body: bytes) -> None:
    with pytest.raises(EnvelopeError):
        decode_envelope(body)


def test_partition_is_stable_and_spreads() -> None:
    assert partition_of("dev-42", 16) == partition_of("dev-42", 16)  # crc32: the same in every process
    assert partition_of("dev-42", 16) == 6  # a fixed value: a new Python (hash seed) must not move devices
    counts = [0] * 16
    for n in range(16_000):
        counts[partition_of(f"device-{n}", 16)] += 1
    assert min(counts) > 800 and max(counts) < 1200
    assert partition_of(None, 8) == partition_of("", 8)


def test_the_ingest_numbers_each_partition_and_the_worker_reads_the_number() -> None:
    sequencer = PartitionSequencer("ingest-a", 4)
    numbers = [sequencer.next(p) for p in (0, 1, 0, 0, 3)]
    assert [(s.source, s.n) for s in numbers] == [("ingest-a", 1), ("ingest-a", 1), ("ingest-a", 2),
                                                   ("ingest-a", 3), ("ingest-a", 1)]
    msg = InboundMessage(listener="mqttin", payload=b"{}", topic="t")
    _, _, seq = decode_sequenced(encode_envelope(msg, "d", 7, numbers[3]))
    assert seq == Sequence("ingest-a", 3)
    _, _, unnumbered = decode_sequenced(encode_envelope(msg, "d"))  # an older ingest: no number, no order
    assert unnumbered is None


def test_a_routed_input_command_and_its_outcome_round_trip() -> None:
    call = InputCommandCall("counter", "reading", "counterwf", "setmark", "dev0", None, {"value": "3"}, {"x": 1})
    back, expires = decode_command(encode_command(call, 123.5))
    assert (back, expires) == (call, 123.5)
    outcome = InputCommandOutcome(405, None, "method_not_allowed", "setmark takes GET", None, {"Allow": "GET"})
    assert decode_outcome(encode_outcome(outcome)) == outcome
    assert decode_outcome(b"nonsense").status == 500
    with pytest.raises(EnvelopeError):
        decode_command(b'{"v": 1}')


def test_a_worker_over_its_share_hands_one_partition_on() -> None:
    assert partition_to_release(list(range(8)), 1, 8) is None  # alone: everything is its share
    assert partition_to_release(list(range(8)), 2, 8) == 7
    assert partition_to_release([0, 1, 2, 3], 2, 8) is None
    assert partition_to_release([0, 1, 2, 5], 3, 8) == 5  # share ceil(8 / 3) = 3
    assert partition_to_release([0, 1, 2], 3, 8) is None
    assert partition_to_release([], 4, 8) is None
