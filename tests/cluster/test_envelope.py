"""Envelopes and partitions (services/cluster.py): what an ingest publishes is what a worker processes."""

from __future__ import annotations

import pytest

from runtime.core.messages import InboundMessage, MessageKind
from runtime.services.cluster import EnvelopeError, decode_envelope, encode_envelope, partition_of


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
