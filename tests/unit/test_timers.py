"""Issue 12, done-when 6: when a NuvIoT workflow ``Timer`` fires (``core/timers.py``), pure.

Field names from LagoVista/DeviceAdmin ``src/LagoVista.IoT.DeviceAdmin.Models/Timer.cs`` (``Days``, ``Hours``,
``Minutes``, ``Seconds``, ``HourOfDay``, ``MinuteOfDay``, ``Sunday`` .. ``Saturday``, ``DailyStartTime``,
``DailyEndTime``); a timer's ``OutgoingConnections`` (``NodeBase``) run when it fires, here on the "Example - Motion"
workflow (``tests/fixtures/nuviot-deployment-instance.json``, LagoVista/StarterKit ``OrgInitializer``).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from runtime.core.devices import Device
from runtime.core.pipeline.workflow import WorkflowEngine
from runtime.core.solution.loader import load_solution_report
from runtime.core.solution.model import Timer
from runtime.core.timers import next_fire
from runtime.timezones import iana_name, zone_named

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "nuviot-deployment-instance.json"


def at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def timer(**fields: Any) -> Timer:
    """A Timer from NuvIoT's property names (the native form's camelCase aliases)."""
    return Timer.model_validate({"key": "t", "name": "T", **{k[0].lower() + k[1:]: v for k, v in fields.items()}})


@pytest.mark.parametrize(("fields", "after", "expected"), [
    ({"Hours": 1}, "2026-11-30T10:15:00", "2026-11-30T11:15:00"),
    ({"Days": 1, "Minutes": 30}, "2026-11-30T10:00:00", "2026-12-01T10:30:00"),
    ({"Seconds": 10}, "2026-11-30T10:00:00", "2026-11-30T10:00:10"),
    # daily at HourOfDay:MinuteOfDay: later today, else tomorrow
    ({"HourOfDay": 6, "MinuteOfDay": 30}, "2026-11-30T05:00:00", "2026-11-30T06:30:00"),
    ({"HourOfDay": 6, "MinuteOfDay": 30}, "2026-11-30T06:30:00", "2026-12-01T06:30:00"),
    # weekdays: 2026-11-30 is a Monday; only Saturdays
    ({"HourOfDay": 8, "Saturday": True}, "2026-11-30T09:00:00", "2026-12-05T08:00:00"),
    # an interval only inside the daily window: 17:30 + 1 h is past 18:00, so the next window's start
    ({"Hours": 1, "DailyStartTime": "08:00", "DailyEndTime": "18:00"}, "2026-11-30T17:30:00", "2026-12-01T08:00:00"),
    ({"Hours": 1, "DailyStartTime": "08:00", "DailyEndTime": "18:00"}, "2026-11-30T09:00:00", "2026-11-30T10:00:00"),
])
def test_next_firing(fields: dict[str, Any], after: str, expected: str) -> None:
    assert next_fire(timer(**fields), at(after)) == at(expected)


def test_a_timer_with_a_window_that_is_not_a_time_never_fires() -> None:
    assert next_fire(timer(Hours=1, DailyStartTime="eight"), at("2026-11-30T09:00:00")) is None


def test_a_firing_runs_the_timers_connections_with_the_firing_time() -> None:
    doc = json.loads(FIXTURE.read_bytes())
    wf = doc["Result"]["Solution"]["Value"]["DeviceConfigurations"][0]["Value"]["Routes"][0]["PipelineModules"][2]
    wf["Module"]["Value"]["Timers"] = [{"Key": "hourly", "Name": "Hourly", "NodeType": "timer", "Hours": 1,
                                        "OutgoingConnections": [{"NodeKey": "motionstatus", "NodeName": "Motion",
                                                                 "NodeType": "attribute"}]}]
    document = load_solution_report(json.dumps(doc).encode(), source="t", env={}).document
    engine = WorkflowEngine.for_solution(document, document.workflow_by_key["examplemotion"], None)
    result = engine.run_timer("hourly", Device("dev001", "examplemotion"), now=at("2026-11-30T10:00:00"))
    assert result.attributes["motionstatus"] == "2026-11-30T10:00:00.000Z"


# The instance's TimeZone (LagoVista/Deployments ``DeploymentInstance.TimeZone``, an EntityHeader whose ``Id`` is a
# Windows time zone id, ``Services/TimeZoneService.cs``): times of day, daily windows and weekdays are wall-clock
# times there. 2026-11-30 is a Monday; New York is UTC-5 in winter, UTC-4 in summer (DST from 2026-03-08).
@pytest.mark.parametrize(("zone", "fields", "after", "expected"), [
    ("Eastern Standard Time", {"HourOfDay": 6, "MinuteOfDay": 30}, "2026-11-30T05:00:00", "2026-11-30T11:30:00"),
    ("Eastern Standard Time", {"HourOfDay": 6, "MinuteOfDay": 30}, "2026-11-30T11:30:00", "2026-12-01T11:30:00"),
    ("Eastern Standard Time", {"HourOfDay": 6}, "2026-03-07T12:00:00", "2026-03-08T10:00:00"),  # across the DST change
    # Saturday 23:00 in Tokyo is Saturday 14:00 UTC
    ("Tokyo Standard Time", {"HourOfDay": 23, "Saturday": True}, "2026-11-30T00:00:00", "2026-12-05T14:00:00"),
    ("Europe/Berlin", {"Hours": 1, "DailyStartTime": "08:00", "DailyEndTime": "18:00"}, "2026-11-30T16:30:00",
     "2026-12-01T07:00:00"),
    ("UTC", {"HourOfDay": 6}, "2026-11-30T05:00:00", "2026-11-30T06:00:00"),
])
def test_times_of_day_are_read_in_the_instances_time_zone(zone: str, fields: dict[str, Any], after: str,
                                                          expected: str) -> None:
    tz = zone_named(zone)
    assert tz is not None
    assert next_fire(timer(**fields), at(after), tz) == at(expected)


def test_time_zone_names() -> None:
    assert iana_name("UTC") == "UTC" and iana_name(None) == "UTC"  # NuvIoT's default {Id: "UTC"}
    assert iana_name("Eastern Standard Time") == "America/New_York"  # a Windows id, as NuvIoT stores it
    assert iana_name("W. Europe Standard Time") == "Europe/Berlin"
    assert iana_name("Kamchatka Standard Time") == "Asia/Kamchatka"  # in NuvIoT's list, retired by Windows
    assert iana_name("Asia/Tokyo") == "Asia/Tokyo"
    assert iana_name("Atlantis Standard Time") is None and iana_name("../etc/passwd") is None
