"""MQTT client transmitter (``mqttclient``), NuvIoT PipelineModules/Transmitters/MQTTClient.md.

- **Client id = the transmitter's key** (NuvIoT's rule). Two runtimes (or two instances of one solution)
  connected to one broker with the same transmitter would take each other's connection over in a loop;
  ``client_id_suffix`` (the factory passes the instance id when asked) makes it ``{key}-{suffix}``.
- Publishes ``out.payload`` to ``out.topic`` at QoS 1 (the message's path/query are ignored). A message
  without a topic is a counted failure, not retried.
- Clean session: the transmitter subscribes to nothing, and its own queue is what survives a reconnect.
- Supervised connection: a fresh ``aiomqtt.Client`` per attempt, full-jitter backoff (reset once
  connected), forever. While disconnected, messages wait in the bounded queue (``submit`` refuses once
  it is full). A publish interrupted by a lost connection, or not acknowledged within ``timeout``,
  counts as a failed attempt and is retried on the next connection, up to ``max_attempts`` in all;
  so delivery is at least once.
- Up to ``max_inflight`` publishes are awaited at once on a connection.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiomqtt
import structlog

from runtime.adapters.mqtt_client import broker_of, close_client, enter_client, make_client
from runtime.adapters.outbound.base import Item, QueuedTransmitter
from runtime.adapters.supervision import supervise
from runtime.core.backoff import Backoff
from runtime.core.errors import describe
from runtime.core.messages import OutgoingMessage
from runtime.core.solution.model import Transmitter as TransmitterConfig

log = structlog.get_logger(__name__)
_MQTT_LOGGER = logging.getLogger(__name__ + ".aiomqtt")
QOS = 1


class MqttTransmitter(QueuedTransmitter):
    type = "mqttclient"

    def __init__(
        self,
        config: TransmitterConfig,
        *,
        client_id_suffix: str | None = None,
        timeout: float = 10.0,
        keepalive: int = 30,
        max_inflight: int = 32,
        connect_backoff_base: float = 0.2,
        connect_backoff_cap: float = 30.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(config.key, **kwargs)
        if not config.host_name:
            raise ValueError(f"mqttclient transmitter {config.key}: hostName is required")
        self._broker = broker_of(config)
        self.client_id = f"{config.key}-{client_id_suffix}" if client_id_suffix else config.key
        self._timeout = timeout
        self._keepalive = keepalive
        self._max_inflight = max(1, max_inflight)
        self._connect_backoff = Backoff(base=connect_backoff_base, cap=connect_backoff_cap)

    def status(self) -> dict[str, Any]:
        return {**super().status(), "host": self._broker.host, "port": self._broker.port, "clientId": self.client_id}

    async def _run(self) -> None:
        self.state = "connecting"
        await supervise(self._session, role="transmitter", backoff=self._connect_backoff,
                        connection_errors=(aiomqtt.MqttError,), on_loss=self._on_loss,
                        transmitter=self.key, broker=f"{self._broker.host}:{self._broker.port}")

    def _on_loss(self, error: str) -> str:
        self.last_error = error
        if self.state == "connected":
            self.state = "disconnected"
        return "transmitter_disconnected"

    async def _session(self) -> None:
        client = make_client(self._broker, client_id=self.client_id, clean_session=True,
                             keepalive=self._keepalive, timeout=self._timeout, logger=_MQTT_LOGGER)
        await enter_client(client, self._timeout, name=f"transmitter:{self.key}:connect")
        try:
            self.state = "connected"
            self._connect_backoff.reset()
            log.info("transmitter_connected", transmitter=self.key,
                     broker=f"{self._broker.host}:{self._broker.port}", client_id=self.client_id)
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._watch(client), name=f"transmitter:{self.key}:watch")
                for i in range(self._max_inflight):
                    tg.create_task(self._work(client), name=f"transmitter:{self.key}:{i}")
        finally:
            await close_client(client, self._timeout)

    async def _watch(self, client: aiomqtt.Client) -> None:
        async for _ in client.messages:  # nothing is subscribed: this only ends when the connection does
            pass

    async def _work(self, client: aiomqtt.Client) -> None:
        while True:
            item = await self._next()
            await self._publish(client, item)

    async def _publish(self, client: aiomqtt.Client, item: Item) -> None:
        out: OutgoingMessage = item.out
        if not out.topic:
            item.attempts += 1
            self._failed(item, f"outgoing message {out.message_key} has no topic")
            return
        item.attempts += 1
        try:
            await client.publish(out.topic, out.payload, qos=QOS)
        except asyncio.CancelledError:
            item.attempts -= 1  # interrupted, not failed
            self._requeue(item)
            raise
        except aiomqtt.MqttError as exc:
            if self._retry_delay(item) is None:
                self._failed(item, describe(exc))
            else:
                self._requeue(item)  # next connection (the backoff of the reconnect spaces the attempts)
            raise
        except Exception as exc:  # noqa: BLE001 - e.g. an invalid topic: a failure of this message only
            self._failed(item, f"{type(exc).__name__}: {describe(exc)}")
            return
        self._sent(item)
