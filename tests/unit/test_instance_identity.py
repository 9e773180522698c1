"""The instance id is resolved once (issue 16 item 4): fixed at the first load, the same in every place that
shows or uses it, with its source."""

from __future__ import annotations

from typing import Any

from runtime.instance import InstanceIdentity
from tests.unit.solution.test_instance_document import fixture, load, settings_for


def doc_with_key(key: str) -> Any:
    tree = fixture()
    tree["Result"]["Key"] = key
    return load(tree).document


async def test_the_first_load_fixes_the_id_and_status_shows_that_one_with_its_source() -> None:
    settings = settings_for([], {})
    identity = InstanceIdentity(settings)
    assert not identity.settled.is_set()
    first, reloaded = doc_with_key("plant1"), doc_with_key("plant2")
    identity.pin(first)
    identity.pin(reloaded)  # a reload with another instance key moves nothing
    assert identity.settled.is_set()
    assert identity.entry == ("plant1", "document")
    status = settings.instance_status(reloaded, identity.entry)
    assert status["instanceId"] == {"value": "plant1", "source": "document"}


async def test_a_failed_first_load_fixes_local_and_the_environment_wins_over_the_document() -> None:
    identity = InstanceIdentity(settings_for([], {}))
    identity.pin(None)
    identity.pin(doc_with_key("plant1"))
    assert identity.entry == ("local", "default")
    from_env = InstanceIdentity(settings_for([], {"NUVIOT_INSTANCE_ID": "edge-7"}))
    assert from_env.settled.is_set()
    from_env.pin(doc_with_key("plant1"))
    assert from_env.entry == ("edge-7", "environment")
