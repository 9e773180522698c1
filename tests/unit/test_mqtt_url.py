"""Broker URLs for NUVIOT_CONTROL_MQTT: parsing, defaults, errors, and the password never shown."""

from __future__ import annotations

import pytest

from runtime.adapters.mqtt_url import MqttUrl, parse_mqtt_url, redact_url


@pytest.mark.parametrize(
    ("url", "host", "port", "username", "password", "tls"),
    [
        ("mqtt://broker:1884", "broker", 1884, None, None, False),
        ("mqtt://broker", "broker", 1883, None, None, False),
        ("mqtts://broker", "broker", 8883, None, None, True),
        ("mqtts://broker:9999/", "broker", 9999, None, None, True),
        ("MQTT://Broker.Example:1", "broker.example", 1, None, None, False),
        ("mqtt://user:pw@10.0.0.1:1883", "10.0.0.1", 1883, "user", "pw", False),
        ("mqtt://user@h", "h", 1883, "user", None, False),
        ("mqtt://u%40x:p%3A%2Fw@h:2", "h", 2, "u@x", "p:/w", False),
        ("mqtt://u:p@ss@h:3", "h", 3, "u", "p@ss", False),
        ("mqtt://[::1]:1883", "::1", 1883, None, None, False),
        ("  mqtt://h:5  ", "h", 5, None, None, False),
    ],
)
def test_parses(
    url: str, host: str, port: int, username: str | None, password: str | None, tls: bool
) -> None:
    parsed = parse_mqtt_url(url)
    assert (parsed.host, parsed.port, parsed.username, parsed.tls) == (host, port, username, tls)
    assert (parsed.password.get_secret_value() if parsed.password else None) == password


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("", "empty"),
        ("broker:1883", "expected mqtt://"),
        ("http://u:topsecret@h", "scheme must be mqtt or mqtts"),
        ("mqtt://u:topsecret@h:port", "port must be a number"),
        ("mqtt://u:topsecret@h:70000", "port must be a number"),
        ("mqtt://h:0", "port must be a number"),
        ("mqtt://u:topsecret@", "host is missing"),
        ("mqtt://:topsecret@h", "password needs a user name"),
        ("mqtt://h/some/path", "path is not allowed"),
        ("mqtt://h?x=1", "query or fragment"),
        ("mqtt://u:top/secret@h", "percent-encode"),
    ],
)
def test_rejects_with_a_clear_message_that_hides_the_password(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        parse_mqtt_url(url)
    assert "secret" not in str(info.value)


def test_repr_and_str_never_show_the_password() -> None:
    parsed = parse_mqtt_url("mqtts://admin:topsecret@h:8884")
    assert repr(parsed) == "MqttUrl(host='h', port=8884, username='admin', password=***, tls=True)"
    assert str(parsed) == "mqtts://admin:***@h:8884"
    assert "topsecret" not in f"{parsed!r} {parsed} {[parsed]}"
    assert str(MqttUrl("::1", 1)) == "mqtt://[::1]:1"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("mqtt://u:pw@h:1", "mqtt://u:***@h:1"),
        ("mqtt://u:p@w@h", "mqtt://u:***@h"),
        ("mqtt://h:1", "mqtt://h:1"),
        ("mqtt://u@h", "mqtt://u@h"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown
