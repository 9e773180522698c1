"""Original-listener transmitter (``originallistener``): answers through the listener that took the message in.

``submit(out, inbound)`` calls ``inbound.reply.send(out)`` (which must not block: the REST listener
resolves its waiting request, the MQTT listener enqueues a publish). A message that did not come with a
reply channel (an input command, a replay, a listener type that cannot answer) is counted
``noReplyChannel`` and refused. NuvIoT's beta "queue until the device reconnects" is not implemented.
"""

from __future__ import annotations

from typing import Any

import structlog

from runtime.core.messages import InboundMessage, OutgoingMessage
from runtime.core.solution.model import Transmitter as TransmitterConfig
from runtime.services.metrics import Counters

log = structlog.get_logger(__name__)


class OriginalListenerTransmitter:
    type = "originallistener"

    def __init__(self, config: TransmitterConfig, *, counters: Counters | None = None) -> None:
        self.key = config.key
        self._shared = counters
        self.state = "stopped"
        self.counters = {"sent": 0, "failed": 0, "noReplyChannel": 0}

    def submit(self, out: OutgoingMessage, inbound: InboundMessage | None = None) -> bool:
        reply = inbound.reply if inbound is not None else None
        if reply is None:
            self.counters["noReplyChannel"] += 1
            self._count_failure()
            return False
        try:
            reply.send(out)
        except Exception as exc:  # noqa: BLE001 - a reply channel must not break the dispatcher
            self.counters["failed"] += 1
            self._count_failure()
            log.warning("transmit_failed", transmitter=self.key, type=self.type, error=repr(exc))
            return False
        self.counters["sent"] += 1
        if self._shared is not None:
            self._shared.transmitted[self.key] += 1
        return True

    def _count_failure(self) -> None:
        if self._shared is not None:
            self._shared.transmit_failed[self.key] += 1

    async def start(self) -> None:
        self.state = "running"

    async def stop(self, drain_timeout: float = 5.0) -> None:
        self.state = "stopped"

    def status(self) -> dict[str, Any]:
        return {"key": self.key, "type": self.type, "state": self.state, "queued": 0, **self.counters}
