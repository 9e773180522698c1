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
import contextlib
import logging
import ssl
from typing import Any

import aiomqtt
import structlog

from runtime.adapters.listeners.mqtt import enter_client
from runtime.adapters.outbound.base import Item, QueuedTransmitter
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
        self._host = config.host_name
        self._port = config.connect_to_port or (8883 if config.secure_connection else 1883)
        self._tls = config.secure_connection
        self._username = None if config.anonymous else config.user_name
        self._password = None
        if not config.anonymous and config.password is not None:
            self._password = config.password.get_secret_value()
        self.client_id = f"{config.key}-{client_id_suffix}" if client_id_suffix else config.key
        self._timeout = timeout
        self._keepalive = keepalive
        self._max_inflight = max(1, max_inflight)
        self._connect_backoff = Backoff(base=connect_backoff_base, cap=connect_backoff_cap)

    def status(self) -> dict[str, Any]:
        return {**super().status(), "host": self._host, "port": self._port, "clientId": self.client_id}

    async def _run(self) -> None:
        self.state = "connecting"
        while True:
            try:
                await self._session()
            except* aiomqtt.MqttError as group:
                self.last_error = describe(group.exceptions[0])
            except* Exception as group:  # a bug: log it, keep the transmitter alive
                self.last_error = f"internal error: {describe(group.exceptions[0])}"
                log.error("transmitter_session_crashed", transmitter=self.key, exc_info=group.exceptions[0])
            self.state = "disconnected" if self.state == "connected" else self.state
            delay = self._connect_backoff.next_delay()
            log.warning(
                "transmitter_disconnected",
                transmitter=self.key,
                broker=f"{self._host}:{self._port}",
                error=self.last_error,
                retry_in=round(delay, 3),
            )
            await asyncio.sleep(delay)

    def _make_client(self) -> aiomqtt.Client:
        return aiomqtt.Client(
            self._host,
            self._port,
            username=self._username,
            password=self._password,
            identifier=self.client_id,
            clean_session=True,
            keepalive=self._keepalive,
            timeout=self._timeout,
            tls_context=ssl.create_default_context() if self._tls else None,
            logger=_MQTT_LOGGER,
        )

    async def _session(self) -> None:
        client = self._make_client()
        await enter_client(client, self._timeout, name=f"transmitter:{self.key}:connect")
        try:
            self.state = "connected"
            self._connect_backoff.reset()
            log.info("transmitter_connected", transmitter=self.key, broker=f"{self._host}:{self._port}",
                     client_id=self.client_id)
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._watch(client), name=f"transmitter:{self.key}:watch")
                for i in range(self._max_inflight):
                    tg.create_task(self._work(client), name=f"transmitter:{self.key}:{i}")
        finally:
            with contextlib.suppress(aiomqtt.MqttError):
                await client.__aexit__(None, None, None)

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
