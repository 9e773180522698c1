"""Values that move through the data plane. Plain slotted dataclasses: they are made per message, so cheap.

- ``InboundMessage``: what a listener hands to the data plane (one per device message).
- ``OutgoingMessage``: what the output translator builds and a transmitter sends.
- ``MessageRecord``: the per-message record (CONTRACT §4 /messages); a ``Failed`` one is a dead letter.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

_ids = random.Random(os.urandom(32))  # our own generator: a global random.seed() elsewhere cannot repeat ids
_bits = _ids.getrandbits
os.register_at_fork(after_in_child=lambda: _ids.seed(os.urandom(32)))


def new_id() -> str:
    """A 32-hex id, like NuvIoT's NormalizedId32: 128 random bits.

    Not ``os.urandom`` per id: it is a syscall that releases the GIL, so on the message path (one id per
    message) the loop thread lost the GIL to the storage thread at every message. Ids name records; they
    are not secrets.
    """
    return _bits(128).to_bytes(16, "big").hex()


class PemStatus(StrEnum):
    """NuvIoT PEM StatusTypes."""

    CREATED = "Created"
    PENDING_EXECUTION = "PendingExecution"
    COMPLETED = "Completed"
    COMPLETED_WITH_WARNINGS = "CompletedWithWarnings"
    FAILED = "Failed"


class MessageKind(StrEnum):
    """NuvIoT PEM MessageTypes."""

    REGULAR = "Regular"
    INPUT_COMMAND = "InputCommand"
    DEADLETTER = "Deadletter"


class ReplyChannel(Protocol):
    """How an original-listener transmitter answers: on the REST connection, back on MQTT, on the TCP socket.

    ``send`` must not block: it hands the message over (resolves a future, enqueues a publish) and returns.
    """

    def send(self, out: OutgoingMessage) -> None: ...


@dataclass(slots=True)
class InboundMessage:
    listener: str  # listener key (or "inputcommand", "replay")
    payload: bytes
    topic: str | None = None
    path: str | None = None
    method: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)  # header names lower-cased
    query: Mapping[str, str] = field(default_factory=dict)
    from_address: str | None = None
    reply: ReplyChannel | None = None
    ack: Callable[[], None] | None = None  # called once the message's record is committed (QoS1 PUBACK)
    done: Callable[[MessageRecord], None] | None = None  # called with the final record (REST answers with it)
    id: str = field(default_factory=new_id)
    received_at: float = field(default_factory=time.time)
    kind: MessageKind = MessageKind.REGULAR


@dataclass(slots=True)
class OutgoingMessage:
    """NuvIoT OutgoingMessage, after token replacement (``~deviceid~``, ``~messageid~``)."""

    message_key: str
    message_id: str
    device_id: str
    payload: bytes = b""
    content_type: str = "application/json"
    topic: str | None = None
    method: str = "GET"
    path_and_query: str | None = None
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(slots=True)
class MessageRecord:
    id: str
    received_at: float
    listener: str
    status: PemStatus
    device_id: str | None = None
    message_id: str | None = None
    stage: str | None = None  # failing stage for Failed records
    error: str | None = None  # "CODE: detail"
    processing_ms: float = 0.0
    kind: MessageKind = MessageKind.REGULAR
    payload: bytes | None = None  # kept for dead letters (replay)
    topic: str | None = None
    path: str | None = None
    headers: Mapping[str, str] | None = None
    detail: dict[str, object] | None = None  # extra JSON (warnings, script logs, outgoing messages)


if tuple(MessageRecord.__dataclass_fields__)[:10] != (  # Dispatcher._finish passes these by position
    "id", "received_at", "listener", "status", "device_id", "message_id", "stage", "error", "processing_ms", "kind",
):  # pragma: no cover - a guard for whoever reorders MessageRecord
    raise ImportError("runtime.core.messages.MessageRecord changed: update Dispatcher._finish")
