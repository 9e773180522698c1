"""``--role`` / ``NUVIOT_ROLE`` (CONTRACT §10): ``all`` by default; ``ingest`` and ``worker`` need the queue and
database URLs and RabbitMQ, and say which setting is missing."""

from __future__ import annotations

import argparse

import pytest

from runtime.settings import SettingsError, add_run_arguments, load_settings

URLS = {"NUVIOT_QUEUE_URL": "amqp://u:p@mq:5672/", "NUVIOT_DATABASE_URL": "postgresql://u:p@db/nuviot"}


def test_all_is_the_default_and_needs_nothing() -> None:
    assert load_settings(None, {}).role == "all"


@pytest.mark.parametrize("role", ["ingest", "worker"])
def test_a_replica_role_needs_both_urls(role: str) -> None:
    with pytest.raises(SettingsError) as exc:
        load_settings(None, {"NUVIOT_ROLE": role.upper()})
    assert "NUVIOT_QUEUE_URL" in str(exc.value) and "NUVIOT_DATABASE_URL" in str(exc.value)
    parser = argparse.ArgumentParser()
    add_run_arguments(parser)
    settings = load_settings(parser.parse_args(["--role", role]), URLS)
    assert settings.role == role and settings.queue_partitions == 16
    assert "u:p" not in repr(settings)  # the URLs hold credentials: never shown


def test_a_replica_role_refuses_another_queue_type_and_bad_urls() -> None:
    with pytest.raises(SettingsError, match="needs rabbitmq"):
        load_settings(None, {**URLS, "NUVIOT_ROLE": "worker", "NUVIOT_QUEUE_TYPE": "inmemory"})
    with pytest.raises(SettingsError, match="NUVIOT_QUEUE_URL"):
        load_settings(None, {**URLS, "NUVIOT_ROLE": "worker", "NUVIOT_QUEUE_URL": "http://mq"})
    with pytest.raises(SettingsError, match="NUVIOT_ROLE"):
        load_settings(None, {**URLS, "NUVIOT_ROLE": "leader"})
