"""The fast path's import-time check: untested versions or changed internals fall back to plain aiomqtt, said once."""

from __future__ import annotations

from typing import Any

import pytest
import structlog

from runtime.adapters.listeners import mqtt_fastpath
from runtime.adapters.listeners.mqtt import MqttClientListener
from runtime.core.solution.model import Listener


def config() -> Listener:
    return Listener(key="mq", listener_type="mqttclient", host_name="127.0.0.1", connect_to_port=1883,
                    mqtt_subscriptions=[{"topic": "a/#", "qos": "qos1"}])


def test_the_installed_versions_are_the_tested_ones_and_the_fast_path_is_on() -> None:
    assert mqtt_fastpath.MANUAL_ACK_PROBLEM is None
    assert mqtt_fastpath.FASTPATH_PROBLEM is None, mqtt_fastpath.FASTPATH_PROBLEM


@pytest.mark.parametrize(
    ("dist", "fake", "expected"),
    [("paho-mqtt", "2.3.0", "paho-mqtt 2.3.0 is not a tested version"),
     ("aiomqtt", "2.6.0", "aiomqtt 2.6.0 is not a tested version")],
)
def test_an_untested_version_is_named(monkeypatch: pytest.MonkeyPatch, dist: str, fake: str, expected: str) -> None:
    real = mqtt_fastpath.version
    monkeypatch.setattr(mqtt_fastpath, "version", lambda name: fake if name == dist else real(name))
    assert (mqtt_fastpath._fastpath_problem() or "").startswith(expected)


@pytest.mark.parametrize("internal", ["_handle_on_message", "_create_socket", "loop_read"])
def test_a_missing_paho_internal_is_named(monkeypatch: pytest.MonkeyPatch, internal: str) -> None:
    monkeypatch.delattr(mqtt_fastpath.paho_client.Client, internal)
    assert internal in (mqtt_fastpath._fastpath_problem() or "")


def test_a_changed_paho_attribute_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    init = mqtt_fastpath.paho_client.Client.__init__

    def without_in_packet(self: Any, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        self._in_packet = None

    monkeypatch.setattr(mqtt_fastpath.paho_client.Client, "__init__", without_in_packet)
    assert "_in_packet" in (mqtt_fastpath._fastpath_problem() or "")


async def test_the_listener_falls_back_and_says_why_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mqtt_fastpath, "FASTPATH_PROBLEM", "paho-mqtt 9.9 is not a tested version")
    monkeypatch.setattr(mqtt_fastpath, "_logged", False)
    with structlog.testing.capture_logs() as logs:
        first = MqttClientListener(config(), instance_id="t")
        second = MqttClientListener(config(), instance_id="t")
    assert first.status()["fastPath"] is False and second.status()["fastPath"] is False
    said = [e for e in logs if e["event"] == "mqtt_fastpath_unavailable"]
    assert len(said) == 1 and said[0]["reason"] == "paho-mqtt 9.9 is not a tested version"


async def test_without_manual_acks_the_listener_refuses_to_start(monkeypatch: pytest.MonkeyPatch) -> None:
    """Acking before the record is committed would break at-least-once: a clear configuration error instead."""
    monkeypatch.setattr("runtime.adapters.listeners.mqtt.MANUAL_ACK_PROBLEM", "aiomqtt.Client has no _client")
    with pytest.raises(ValueError, match=r"aiomqtt\.Client has no _client"):
        MqttClientListener(config(), instance_id="t")


def test_a_check_that_cannot_run_is_a_problem_not_an_import_error() -> None:
    def broken() -> str | None:
        raise LookupError("no metadata for paho-mqtt")

    assert mqtt_fastpath._checked(broken) == "could not check the MQTT libraries: LookupError: no metadata for paho-mqtt"
