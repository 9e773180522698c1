"""Builds the transmitter for a solution's ``Transmitter`` entry (the types this runtime runs)."""

from __future__ import annotations

from typing import Any

from runtime.adapters.outbound.base import Transmitter
from runtime.adapters.outbound.mqtt import MqttTransmitter
from runtime.adapters.outbound.original import OriginalListenerTransmitter
from runtime.adapters.outbound.rest import RestTransmitter
from runtime.core.solution.enums import TransmitterType
from runtime.core.solution.model import Transmitter as TransmitterConfig
from runtime.services.metrics import Counters

SUPPORTED = frozenset({TransmitterType.MQTT_CLIENT, TransmitterType.REST, TransmitterType.ORIGINAL_LISTENER})


def build_transmitter(
    config: TransmitterConfig,
    *,
    instance_id: str,
    counters: Counters | None = None,
    suffix_mqtt_client_id: bool = False,
    **options: Any,
) -> Transmitter:
    """``suffix_mqtt_client_id``: MQTT client id ``{key}-{instance_id}`` instead of NuvIoT's bare key.

    ``options`` go to the transmitter's constructor (queue size, attempts, timeouts...).
    """
    kind = config.transmitter_type
    if kind is TransmitterType.MQTT_CLIENT:
        suffix = instance_id if suffix_mqtt_client_id else None
        return MqttTransmitter(config, client_id_suffix=suffix, counters=counters, **options)
    if kind is TransmitterType.REST:
        return RestTransmitter(config, counters=counters, **options)
    if kind is TransmitterType.ORIGINAL_LISTENER:
        return OriginalListenerTransmitter(config, counters=counters)
    raise ValueError(f"transmitter type {kind.value} is not supported by this runtime")
