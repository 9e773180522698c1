"""The Cluster edition's logic, without I/O (docs/cluster.md): envelopes, partitions, the ingest's
dispatcher, and the runtime whose control verbs apply to every replica.

- An **envelope** is what an ingest replica publishes for each device message: the listener, topic/path,
  method, headers, query, payload, received time, message id, the planned device id, and its ``Sequence`` in
  the partition (the ingest process's id and number: the worker's order, ``adapters/queue/ordering.py``). A
  worker turns it back into an ``InboundMessage`` and runs the ordinary dispatcher on it.
- A device's **partition** is ``crc32(device id) mod N``: every message of a device goes to the same
  partition queue, which one worker consumes at a time (single active consumer), so per-device order holds.
- ``IngestDispatcher`` replaces the pipeline on an ingest replica: it plans the device id (the planner runs
  on ingest) and hands the envelope to a ``Publisher``; the message's ``ack`` (QoS1 PUBACK) and ``done``
  (the REST answer) run once the queue confirmed it.
- ``ClusterRuntime`` is the supervisor whose ``control`` also tells the other replicas (``ControlBus``);
  a verb that comes from another replica runs here only (``apply_remote``).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
import structlog

from runtime.core.errors import CommandRefusedError, StageError
from runtime.core.lifecycle import InstanceState, Verb
from runtime.core.messages import InboundMessage, MessageKind, MessageRecord, PemStatus
from runtime.core.parsing.view import MessageView
from runtime.core.pipeline.planner import plan
from runtime.core.solution.model import Planner
from runtime.core.system_messages import SYSTEM_PREFIXES
from runtime.services.input_commands import InputCommandCall, InputCommandOutcome
from runtime.services.metrics import Counters
from runtime.services.supervisor import Runtime

log = structlog.get_logger(__name__)

ROLES = ("all", "ingest", "worker")
ENVELOPE_VERSION = 1


def partition_of(device_id: str | None, partitions: int) -> int:
    """The partition of a device: stable across processes and machines (crc32, not Python's hash)."""
    return zlib.crc32((device_id or "").encode("utf-8")) % partitions


def partition_to_release(held: list[int], workers: int, partitions: int) -> int | None:
    """Rebalancing: a worker that holds more than its share (``ceil(partitions / workers)``, the live workers)
    hands one partition on (the highest), else None."""
    if workers <= 1 or not held:
        return None
    share = -(-partitions // workers)
    return max(held) if len(held) > share else None


def partition_queue(instance_id: str, partition: int) -> str:
    return f"nuviot.{instance_id}.p{partition:03d}"


@dataclass(frozen=True, slots=True)
class Sequence:
    """Where an envelope stands in its ingest's numbering of its partition: ``n`` = 1, 2, ... per (source,
    partition); ``source`` is new in every ingest process (docs/cluster.md, "Order")."""

    source: str
    n: int


class PartitionSequencer:
    """An ingest process's numbering, one counter per partition. It lives as long as the process (a reload
    keeps it); a new process has a new ``source`` and starts again at 1."""

    def __init__(self, source: str, partitions: int) -> None:
        self.source = source
        self._last = [0] * partitions

    def next(self, partition: int) -> Sequence:
        self._last[partition] += 1
        return Sequence(self.source, self._last[partition])


def encode_envelope(msg: InboundMessage, device_id: str | None, n: int = 0, seq: Sequence | None = None) -> bytes:
    """The envelope of one device message (JSON; the payload as latin-1 text keeps every byte). ``n`` is the
    ingest's running number (diagnostics); ``seq`` its number in the partition (the worker's order)."""
    return orjson.dumps({
        "v": ENVELOPE_VERSION,
        "n": n,
        "src": seq.source if seq is not None else None,
        "pn": seq.n if seq is not None else 0,
        "id": msg.id,
        "listener": msg.listener,
        "topic": msg.topic,
        "path": msg.path,
        "method": msg.method,
        "headers": dict(msg.headers),
        "query": dict(msg.query),
        "from": msg.from_address,
        "receivedAt": msg.received_at,
        "deviceId": device_id,
        "kind": str(msg.kind),
        "payload": msg.payload.decode("latin-1"),
    })


class EnvelopeError(ValueError):
    """A queue message that is not an envelope of this runtime (it is rejected, never processed)."""


def decode_envelope(body: bytes) -> tuple[InboundMessage, str | None]:
    """The message an envelope carries, and the device id the ingest planned (None when it found none)."""
    msg, device_id, _ = decode_sequenced(body)
    return msg, device_id


def decode_sequenced(body: bytes) -> tuple[InboundMessage, str | None, Sequence | None]:
    """``decode_envelope`` and the envelope's ``Sequence`` (None for an envelope without one)."""
    try:
        doc = orjson.loads(body)
        if not isinstance(doc, dict) or doc.get("v") != ENVELOPE_VERSION:
            raise EnvelopeError(f"not a version-{ENVELOPE_VERSION} envelope")
        msg = InboundMessage(
            listener=str(doc["listener"]),
            payload=str(doc["payload"]).encode("latin-1"),
            topic=doc.get("topic"),
            path=doc.get("path"),
            method=doc.get("method"),
            headers={str(k): str(v) for k, v in (doc.get("headers") or {}).items()},
            query={str(k): str(v) for k, v in (doc.get("query") or {}).items()},
            from_address=doc.get("from"),
            id=str(doc["id"]),
            received_at=float(doc["receivedAt"]),
            kind=MessageKind(doc.get("kind") or MessageKind.REGULAR),
        )
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, UnicodeEncodeError) as exc:
        if isinstance(exc, EnvelopeError):
            raise
        raise EnvelopeError(f"bad envelope: {exc!r}"[:300]) from None
    device_id = doc.get("deviceId")
    source, n = doc.get("src"), doc.get("pn")
    seq = Sequence(source, n) if isinstance(source, str) and isinstance(n, int) and n > 0 else None
    return msg, device_id if isinstance(device_id, str) else None, seq


def encode_command(call: InputCommandCall, expires_at: float) -> bytes:
    """An input command routed to the worker that owns its device (docs/cluster.md, "Input commands")."""
    return orjson.dumps({"v": ENVELOPE_VERSION, "deviceConfiguration": call.device_configuration,
                         "route": call.route, "workflow": call.workflow, "command": call.command,
                         "deviceId": call.device_id, "method": call.method, "query": dict(call.query),
                         "body": call.body, "expiresAt": expires_at})


def decode_command(body: bytes) -> tuple[InputCommandCall, float]:
    """The routed command and when its caller stops waiting. Raises ``EnvelopeError``."""
    try:
        doc = orjson.loads(body)
        call = InputCommandCall(str(doc["deviceConfiguration"]), str(doc["route"]), str(doc["workflow"]),
                                str(doc["command"]), str(doc["deviceId"]), doc.get("method"),
                                {str(k): str(v) for k, v in (doc.get("query") or {}).items()}, doc.get("body"))
        return call, float(doc["expiresAt"])
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise EnvelopeError(f"bad input command: {exc!r}"[:300]) from None


def encode_outcome(outcome: InputCommandOutcome) -> bytes:
    return orjson.dumps({"status": outcome.status, "messageId": outcome.message_id, "code": outcome.code,
                         "message": outcome.message, "stage": outcome.stage, "headers": dict(outcome.headers)})


def decode_outcome(body: bytes) -> InputCommandOutcome:
    try:
        doc = orjson.loads(body)
        return InputCommandOutcome(int(doc["status"]), doc.get("messageId"), doc.get("code"), doc.get("message"),
                                   doc.get("stage"), {str(k): str(v) for k, v in (doc.get("headers") or {}).items()})
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        return InputCommandOutcome(500, code="internal_error", message=f"bad answer from the worker: {exc!r}"[:300])


class Publisher(Protocol):
    """Where an ingest replica hands its envelopes (adapters/queue/rabbitmq.py)."""

    def publish(self, partition: int, body: bytes, on_confirm: Callable[[], None]) -> None:
        """Queue ``body`` for ``partition`` (never blocks); ``on_confirm`` runs once the queue confirmed it.
        Unconfirmed envelopes are published again, in order, after a reconnect: at least once."""
        ...

    async def writable(self) -> None:
        """Return once the unconfirmed envelopes are below the publisher's high-water mark."""
        ...


class IngestDispatcher:
    """The data plane's dispatcher on an ingest replica: plan the device id, publish, ack on confirm."""

    def __init__(self, planner: Planner, publisher: Publisher, partitions: int, counters: Counters,
                 sequencer: PartitionSequencer | None = None) -> None:
        self._planner = planner
        self._publisher = publisher
        self._partitions = partitions
        self._sequencer = sequencer
        self._counters = counters
        self.published = 0
        self.confirmed = 0

    def device_id(self, msg: InboundMessage) -> str | None:
        if (msg.topic or msg.path or "").startswith(SYSTEM_PREFIXES):
            return None  # system messages: the worker's handler finds the device itself
        view = MessageView(msg.payload, topic=msg.topic, path=msg.path, method=msg.method, headers=msg.headers,
                           query=msg.query, received_at=msg.received_at)
        try:
            return plan(self._planner, view)[0]
        except StageError:
            return None  # the worker plans again and records the dead letter with its reason
        except Exception as exc:  # noqa: BLE001 - a planner bug must not stop the listener's messages
            log.error("ingest_plan_crashed", message=msg.id, error=repr(exc))
            return None

    def process(self, batch: list[InboundMessage]) -> None:
        for msg in batch:
            device_id = self.device_id(msg)
            self.published += 1
            partition = partition_of(device_id, self._partitions)
            seq = self._sequencer.next(partition) if self._sequencer is not None else None
            body = encode_envelope(msg, device_id, self.published, seq)
            self._publisher.publish(partition, body, self._confirmer(msg))

    def _confirmer(self, msg: InboundMessage) -> Callable[[], None]:
        def confirmed() -> None:
            self.confirmed += 1
            self._counters.processed += 1
            if msg.ack is not None:
                msg.ack()
            if msg.done is not None:  # the REST device's answer: accepted, the worker processes it
                msg.done(MessageRecord(msg.id, msg.received_at, msg.listener, PemStatus.PENDING_EXECUTION))

        return confirmed

    async def flush(self) -> None:
        return None

    async def ready(self) -> None:
        await self._publisher.writable()


class ControlBus(Protocol):
    """How a replica tells the others to run a verb (adapters/storage/pg_cluster.py)."""

    async def broadcast(self, verb: Verb) -> None: ...


class ClusterRuntime(Runtime):
    """A ``Runtime`` whose operator verbs apply to every replica of the instance."""

    bus: ControlBus | None = None

    async def control(self, verb: Verb) -> InstanceState:
        state = await super().control(verb)
        if self.bus is not None:
            try:
                await self.bus.broadcast(verb)
            except Exception as exc:  # noqa: BLE001 - this replica did it; the others are told on the next try
                log.warning("cluster_broadcast_failed", verb=verb.value, error=repr(exc))
        return state

    async def apply_remote(self, verb: Verb, origin: str) -> None:
        """A verb another replica ran: run it here too (refused here = already there, e.g. paused twice)."""
        try:
            await Runtime.control(self, verb)
            log.info("cluster_verb_applied", verb=verb.value, origin=origin)
        except CommandRefusedError as exc:
            log.info("cluster_verb_not_applicable", verb=verb.value, origin=origin, state=self.state.value,
                     reason=str(exc))


def member_view(row: dict[str, Any], now: float, stale_after: float) -> dict[str, Any] | None:
    """One member of ``/status``'s ``members`` (None once it has not been seen for ``stale_after`` s)."""
    seen = float(row.get("seenAt") or 0.0)
    if now - seen > stale_after:
        return None
    return {**row, "ageSeconds": round(now - seen, 1)}
