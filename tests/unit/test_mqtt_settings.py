"""The MQTT listener settings: keep-alive (flag > env > 30 s) and the fast-path switch (env)."""

from __future__ import annotations

import argparse

import pytest

from runtime.settings import SettingsError, add_run_arguments, load_settings


def test_defaults_are_a_30s_keepalive_and_the_fast_path() -> None:
    s = load_settings(None, {})
    assert (s.mqtt_keepalive, s.mqtt_fastpath) == (30, True)


def test_environment_and_flag() -> None:
    s = load_settings(None, {"NUVIOT_MQTT_KEEPALIVE": "4", "NUVIOT_MQTT_FASTPATH": "0"})
    assert (s.mqtt_keepalive, s.mqtt_fastpath) == (4, False)
    parser = argparse.ArgumentParser()
    add_run_arguments(parser)
    s = load_settings(parser.parse_args(["--mqtt-keepalive", "10"]), {"NUVIOT_MQTT_KEEPALIVE": "4"})
    assert s.mqtt_keepalive == 10  # the flag wins


@pytest.mark.parametrize("bad", ["1", "0", "abc"])
def test_a_bad_keepalive_names_the_flag_and_the_variable(bad: str) -> None:
    with pytest.raises(SettingsError, match="--mqtt-keepalive / NUVIOT_MQTT_KEEPALIVE"):
        load_settings(None, {"NUVIOT_MQTT_KEEPALIVE": bad})
