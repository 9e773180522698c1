"""Issue 12, done-when 6: device health as NuvIoT models it, with the real daemon.

Built from NuvIoT's public artefacts: the "Example - Motion" app inside a DeploymentInstance
(``tests/fixtures/nuviot-deployment-instance.json``, LagoVista/StarterKit ``Managers/OrgInitializer.cs``), with
LagoVista/Deployments' device-health names on its device configuration (``DeviceConfiguration.WatchdogEnabledDefault``,
``WatchdogSeconds``, ``ErrorCodes`` of ``DeviceErrorCode.cs``) and LagoVista/DeviceAdmin's state-machine names
(``State.IsAlarmState``/``ErrorCode``, ``Connection`` into a ``StateMachine``), and the ``err/{code}/raise``
system message of NuvIoT's firmware (softwarelogistics/nuviot; reference/nuviot-spec.md §4.5).
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from tests.e2e.conftest import http as call
from tests.support.daemon import Daemon

pytestmark = pytest.mark.e2e

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "nuviot-deployment-instance.json"


def eh(ident: str, text: str) -> dict[str, str]:
    return {"Id": ident, "Text": text}


def health_document() -> dict[str, Any]:
    doc = json.loads(FIXTURE.read_bytes())
    cfg = doc["Result"]["Solution"]["Value"]["DeviceConfigurations"][0]["Value"]
    cfg["WatchdogEnabledDefault"] = True
    cfg["WatchdogSeconds"] = 2
    cfg["ErrorCodes"] = [{"Id": "E" * 32, "Key": "motionalarm", "Name": "Motion Alarm"}]
    wf = cfg["Routes"][0]["PipelineModules"][2]["Module"]["Value"]
    wf["Inputs"][0]["OutgoingConnections"].append(
        {"NodeKey": "motionsm", "NodeName": "Motion", "NodeType": "statemachine"})  # the value is the event
    wf["StateMachines"] = [{
        "Key": "motionsm", "Name": "Motion", "NodeType": "statemachine", "InitialState": eh("idle", "Idle"),
        "Events": [{"Key": "on", "Name": "On"}, {"Key": "off", "Name": "Off"}],
        "States": [
            {"Key": "idle", "Name": "Idle", "Transitions": [{"Event": eh("on", "On"), "NewState": eh("active", "Active")}]},
            {"Key": "active", "Name": "Active", "IsAlarmState": True, "ErrorCode": eh("motionalarm", "Motion Alarm"),
             "Transitions": [{"Event": eh("off", "Off"), "NewState": eh("idle", "Idle")}]},
        ],
        "IncomingConnections": [],
    }]
    return doc


def until(fetch: Callable[[], Any], pred: Callable[[Any], bool], within: float = 15.0) -> Any:
    deadline = time.monotonic() + within
    last = None
    while time.monotonic() < deadline:
        last = fetch()
        if pred(last):
            return last
        time.sleep(0.05)
    raise AssertionError(f"never matched; last: {last}")


def metrics(d: Daemon) -> str:
    with urllib.request.urlopen(d.base + "/metrics", timeout=5) as resp:
        return str(resp.read().decode())


def test_alarm_states_watchdogs_and_err_messages_raise_and_clear_the_devices_errors(tmp_path: Path) -> None:
    source = tmp_path / "instance.json"
    source.write_text(json.dumps(health_document()))
    args = ("--solution", str(source), "--listener-port", "exampleport80=0", "--input-command-port", "0")
    with Daemon(tmp_path / "data", *args) as d:
        status = d.wait_state("Running")
        assert d.request("PUT", "/devices/dev001", {"deviceConfiguration": "examplemotion"})[0] == 201
        rest = f"http://127.0.0.1:{status['listeners'][0]['port']}"

        def device() -> dict[str, Any]:
            return d.request("GET", "/devices/dev001")[1]  # type: ignore[no-any-return]

        # the alarm state raises its error code as the machine enters it
        assert call("POST", f"{rest}/api/motion/dev001", {"motion": "on"})[0] in (200, 202)
        found = until(device, lambda dv: "motionalarm" in dv["errors"])
        assert found["errors"]["motionalarm"]["source"] == "alarmstate"
        assert found["stateMachines"]["motionsm"] == "active"
        assert any(line.get("event") == "device_error_raised" and line.get("code") == "motionalarm"
                   and line.get("device_id") == "dev001" for line in d.json_lines())
        # no message for WatchdogSeconds: the device watchdog raises "watchdog"
        found = until(device, lambda dv: "watchdog" in dv["errors"])
        assert found["errors"]["watchdog"]["source"] == "devicewatchdog"
        # the next message clears the watchdog, and leaving the alarm state clears its code
        assert call("POST", f"{rest}/api/motion/dev001", {"motion": "off"})[0] in (200, 202)
        found = until(device, lambda dv: dv["stateMachines"]["motionsm"] == "idle")
        assert "motionalarm" not in found["errors"] and "watchdog" not in found["errors"]
        # the firmware's err system message raises a code too (ListenerModule), shown with the others
        assert call("POST", f"{rest}/nuviot/srvr/dvcsrvc/dev001/err/E42/raise", b"overheated",
                    {"Content-Type": "text/plain"})[0] in (200, 202)
        found = until(device, lambda dv: "E42" in dv["errors"])
        assert found["errors"]["E42"]["details"] == "overheated"
        text = metrics(d)
        for source_ in ("alarmstate", "devicewatchdog", "systemmessage"):
            assert f'nuviot_device_errors_raised_total{{source="{source_}"}}' in text, text
        assert 'nuviot_device_errors_cleared_total{source="alarmstate"} 1.0' in text
        assert any(line.startswith("nuviot_device_errors_active ") for line in text.splitlines())
        # each error raised or cleared is an /events row, newest first, beside the state transitions
        events = until(lambda: d.request("GET", "/events?limit=50")[1],
                       lambda rows: any(r.get("code") == "E42" for r in rows))
        errors = [(r["deviceId"], r["code"], r["action"], r["source"]) for r in events if r["kind"] == "deviceError"]
        assert errors[0] == ("dev001", "E42", "raised", "systemmessage")
        assert set(errors) == {("dev001", "motionalarm", "raised", "alarmstate"),
                               ("dev001", "watchdog", "raised", "devicewatchdog"),
                               ("dev001", "watchdog", "cleared", "devicewatchdog"),
                               ("dev001", "motionalarm", "cleared", "alarmstate"),
                               ("dev001", "E42", "raised", "systemmessage")}, errors
        assert errors.index(("dev001", "motionalarm", "cleared", "alarmstate")) < errors.index(
            ("dev001", "motionalarm", "raised", "alarmstate"))
        assert next(r for r in events if r.get("code") == "E42")["reason"] == "overheated"
        assert {"kind": "state", "to": "Running"}.items() <= next(r for r in events if r["kind"] == "state").items()
        # narrowed to one kind and one device; an unknown kind is a 400 with a stable code
        only = d.request("GET", "/events?limit=50&kind=deviceError&deviceId=dev001")[1]
        assert [(r["code"], r["action"]) for r in only] == [(c, a) for _, c, a, _ in errors]
        assert {r["kind"] for r in d.request("GET", "/events?limit=50&kind=state")[1]} == {"state"}
        assert d.request("GET", "/events?deviceId=nobody")[1] == []
        status, body = d.request("GET", "/events?kind=alarm")
        assert status == 400 and body["error"]["code"] == "bad_kind", body

    # after a restart: the stored errors are still there and the watchdog keeps its schedule (the device has
    # been silent for longer than WatchdogSeconds, so it times out again without a new message)
    with Daemon(tmp_path / "data", *args) as d:
        d.wait_state("Running")
        found = until(lambda: d.request("GET", "/devices/dev001")[1], lambda dv: "watchdog" in dv["errors"])
        assert "E42" in found["errors"]
        events = until(lambda: d.request("GET", "/events?limit=50")[1],
                       lambda rows: [r.get("action") for r in rows if r.get("code") == "watchdog"][:1] == ["raised"])
        assert [r.get("action") for r in events if r.get("code") == "watchdog"] == ["raised", "cleared", "raised"]


def test_a_workflow_timer_fires_on_schedule_and_keeps_its_schedule_after_a_restart(tmp_path: Path) -> None:
    """A NuvIoT ``Timer`` (LagoVista/DeviceAdmin ``Timer.cs``: ``Seconds``; a node whose ``OutgoingConnections``
    run when it fires) mapped to an attribute of the "Example - Motion" workflow."""
    doc = json.loads(FIXTURE.read_bytes())
    cfg = doc["Result"]["Solution"]["Value"]["DeviceConfigurations"][0]["Value"]
    wf = cfg["Routes"][0]["PipelineModules"][2]["Module"]["Value"]
    wf["Attributes"].append({"Key": "lasttick", "Name": "Last Tick", "AttributeType": eh("string", "String"),
                             "IncomingConnections": [], "OutgoingConnections": []})
    wf["Timers"] = [{"Key": "everysecond", "Name": "Every Second", "NodeType": "timer", "Seconds": 1,
                     "OutgoingConnections": [{"NodeKey": "lasttick", "NodeName": "Last Tick",
                                              "NodeType": "attribute"}]},
                    # daily at 06:30 in the instance's TimeZone (the fixture's {Id: "Eastern Standard Time"})
                    {"Key": "morning", "Name": "Morning", "NodeType": "timer", "HourOfDay": 6, "MinuteOfDay": 30,
                     "OutgoingConnections": []}]
    source = tmp_path / "instance.json"
    source.write_text(json.dumps(doc))
    args = ("--solution", str(source), "--listener-port", "exampleport80=0", "--input-command-port", "0")
    with Daemon(tmp_path / "data", *args) as d:
        d.wait_state("Running")
        assert d.request("PUT", "/devices/dev001", {"deviceConfiguration": "examplemotion"})[0] == 201

        def device() -> dict[str, Any]:
            return d.request("GET", "/devices/dev001")[1]  # type: ignore[no-any-return]

        first = until(device, lambda dv: "lasttick" in dv["attributes"], within=20)["attributes"]["lasttick"]
        second = until(device, lambda dv: dv["attributes"].get("lasttick", first) > first)["attributes"]["lasttick"]
        assert second.endswith("Z") and second > first  # ISO 8601 firing times, one a second
        records = d.request("GET", "/messages?deviceId=dev001&limit=5")[1]
        assert records and all(r["listener"] == "timer" and r["messageId"] == "everysecond" for r in records)
        assert device()["propertyBag"]["_system.timers"]["examplemotion/everysecond"] > 0
        morning = datetime.fromtimestamp(device()["propertyBag"]["_system.timers"]["examplemotion/morning"],
                                         ZoneInfo("America/New_York"))
        assert (morning.hour, morning.minute) == (6, 30) and morning.timestamp() - time.time() < 86400
        assert device()["lastSeen"] is None  # a timer is not the device calling in
    with Daemon(tmp_path / "data", *args) as d:
        d.wait_state("Running")
        before = d.request("GET", "/devices/dev001")[1]["attributes"]["lasttick"]
        until(lambda: d.request("GET", "/devices/dev001")[1],
              lambda dv: dv["attributes"]["lasttick"] > before, within=10)
