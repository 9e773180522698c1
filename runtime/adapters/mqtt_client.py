"""The one place aiomqtt clients are built, entered and closed (MQTT listener, MQTT transmitter, MQTT command
channel).

- ``broker_of(config)``: the broker of a NuvIoT listener or transmitter (``HostName``, ``ConnectToPort``,
  ``SecureConnection``, credentials unless ``Anonymous``) as an ``MqttUrl``, the form the command channel's
  ``NUVIOT_CONTROL_MQTT`` already parses to, so every client is built from the same value.
- ``make_client``: a fresh ``aiomqtt.Client`` per connection attempt (aiomqtt 2.5 leaves ``_connected``
  resolved after an unexpected disconnect, so re-entering an old client returns before the broker's
  CONNACK); TLS with the system CA store; aiomqtt's log routed to ``logger``.
- ``enter_client``: ``await client.__aenter__()`` that is safe to cancel (aiomqtt connects in a worker
  thread that cancellation cannot stop); ``close_client``: a bounded, quiet ``__aexit__``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl

import aiomqtt
from pydantic import SecretStr

from runtime.adapters.mqtt_url import MqttUrl
from runtime.core.solution.model import Listener, Transmitter


def broker_of(config: Listener | Transmitter) -> MqttUrl:
    """The broker a ``mqttclient`` listener or transmitter connects to (default port 1883, 8883 with TLS)."""
    if not config.host_name:
        raise ValueError(f"mqttclient {config.key}: hostName is required")
    tls = bool(config.secure_connection)
    username = None if config.anonymous else config.user_name
    password: SecretStr | None = None
    if not config.anonymous and config.password is not None:
        password = config.password
    return MqttUrl(config.host_name, config.connect_to_port or (8883 if tls else 1883), username, password, tls)


def make_client(
    url: MqttUrl,
    *,
    client_id: str,
    clean_session: bool,
    keepalive: int,
    timeout: float,
    logger: logging.Logger,
    will: aiomqtt.Will | None = None,
    max_queued_incoming_messages: int | None = None,
) -> aiomqtt.Client:
    return aiomqtt.Client(
        url.host,
        url.port,
        username=url.username,
        password=url.password.get_secret_value() if url.password is not None else None,
        identifier=client_id,
        will=will,
        clean_session=clean_session,
        keepalive=keepalive,
        timeout=timeout,
        tls_context=ssl.create_default_context() if url.tls else None,
        max_queued_incoming_messages=max_queued_incoming_messages,
        logger=logger,
    )


async def enter_client(client: aiomqtt.Client, cancel_grace: float, *, name: str) -> None:
    """``await client.__aenter__()``, safe to cancel.

    On cancellation the attempt is let end (bounded by ``cancel_grace`` seconds) and what it opened is
    closed, so no socket reader or paho task is left behind.
    """
    entering = asyncio.get_running_loop().create_task(client.__aenter__(), name=name)
    try:
        await asyncio.shield(entering)
    except asyncio.CancelledError:
        try:
            async with asyncio.timeout(cancel_grace):
                await entering
        except (aiomqtt.MqttError, TimeoutError):
            pass
        else:
            await close_client(client, cancel_grace)
        raise


async def close_client(client: aiomqtt.Client, within: float) -> None:
    """Disconnect cleanly (DISCONNECT, so a persistent session stays and no will is sent), at most ``within``
    seconds: a hung broker cannot hold a stop or a reconnect."""
    with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
        async with asyncio.timeout(within):
            await client.__aexit__(None, None, None)
