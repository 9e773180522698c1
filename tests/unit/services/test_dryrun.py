"""The dry run (services/dryrun.py): the real dispatcher with recording ports, on the packaged demo."""

from __future__ import annotations

import json
from typing import Any

import pytest

from runtime.adapters.scripting.engine import build_solution_scripts
from runtime.core.devices import Device
from runtime.core.solution.loader import load_solution_report
from runtime.services.dryrun import DryRunMessage, DryRunRequestError, run_dry
from runtime.solution_loading import demo_solution_path

DOC = load_solution_report(demo_solution_path().read_bytes(), source="demo", env={},
                           read_file=lambda p: b"").document
TELEMETRY = json.dumps({"temperature": 22.5, "humidity": 40, "mode": "heat"}).encode()


@pytest.fixture
def devices() -> dict[str, Device]:
    return {"thermo-001": Device("thermo-001", "thermostat", attributes={"counter": 4},
                                 state_machines={"heater": "idle"})}


def dry(devices: dict[str, Device], message: DryRunMessage) -> dict[str, Any]:
    return run_dry(DOC, build_solution_scripts(DOC), devices.get, message)


def test_every_stage_in_order_and_the_live_device_is_untouched(devices: dict[str, Device]) -> None:
    live = devices["thermo-001"]
    answer = dry(devices, DryRunMessage("restin", TELEMETRY, path="/devices/thermo-001/telemetry"))
    assert answer["ok"] and answer["status"] == "Completed"
    assert [s["stage"] for s in answer["stages"]] == ["planner", "sentinel", "inputtranslator", "workflow",
                                                      "outputtranslator", "transmitter"]
    workflow = answer["stages"][3]["output"]["workflows"][0]
    assert workflow["attributes"]["counter"] == {"from": 4, "to": 5}
    assert workflow["stateMachines"] == {"heater": {"from": "idle", "to": "heating"}}
    sent = answer["stages"][5]["output"]["wouldSend"]
    assert [(m["transmitter"], json.loads(m["payload"])) for m in sent] == [
        ("originallistener", {"status": "ok", "counter": 5, "state": "heating"})]
    assert devices["thermo-001"] is live
    assert (live.attributes, live.state_machines, live.last_seen) == ({"counter": 4}, {"heater": "idle"}, None)


def test_a_second_dry_run_starts_from_the_same_state(devices: dict[str, Device]) -> None:
    message = DryRunMessage("restin", TELEMETRY, path="/devices/thermo-001/telemetry")
    first, second = dry(devices, message), dry(devices, message)
    assert first["stages"][3] == second["stages"][3]


@pytest.mark.parametrize(("payload", "path", "stage", "code"), [
    (TELEMETRY, "/devices/ghost/telemetry", "planner", "CouldNotFindDevice"),
    (b"not json", "/devices/thermo-001/telemetry", "inputtranslator", "invalid_json"),
    (b'{"temperature": "warm"}', "/devices/thermo-001/telemetry", "inputtranslator", "MGV1009"),
    (b'{"humidity": 101}', "/devices/thermo-001/telemetry", "inputtranslator", "value_out_of_range"),
])
def test_where_it_stops(devices: dict[str, Device], payload: bytes, path: str, stage: str, code: str) -> None:
    answer = dry(devices, DryRunMessage("restin", payload, path=path))
    assert answer["ok"] is False and answer["status"] == "Failed"
    last = answer["stages"][-1]
    assert (last["stage"], last["ok"], last["error"]["code"]) == (stage, False, code)
    assert all(s["ok"] for s in answer["stages"][:-1])


def test_a_system_message_is_answered_without_saving(devices: dict[str, Device]) -> None:
    answer = dry(devices, DryRunMessage("restin", b"", topic="nuviot/srvr/dvcsrvc/thermo-001/online"))
    assert answer["ok"] and answer["stages"][0]["stage"] == "system"
    assert devices["thermo-001"].property_bag == {}


@pytest.mark.parametrize(("body", "code"), [
    ({"payload": "x", "path": "/p"}, "missing_listener"),
    ({"listener": "restin", "payload": 3, "path": "/p"}, "bad_field"),
    ({"listener": "restin", "payloadBase64": "***", "path": "/p"}, "bad_payload"),
    ({"listener": "restin", "headers": {"a": 1}, "path": "/p"}, "bad_field"),
    ("text", "bad_body"),
])
def test_bad_requests_name_the_problem(body: Any, code: str) -> None:
    with pytest.raises(DryRunRequestError) as err:
        DryRunMessage.from_json(body)
    assert err.value.code == code


def test_unknown_listener_and_missing_address(devices: dict[str, Device]) -> None:
    with pytest.raises(DryRunRequestError, match="known: restin") as err:
        dry(devices, DryRunMessage("mqttin", TELEMETRY, topic="t"))
    assert err.value.code == "unknown_listener"
    with pytest.raises(DryRunRequestError) as err:
        dry(devices, DryRunMessage("restin", TELEMETRY))
    assert err.value.code == "missing_address"


def test_a_path_with_a_query_string_and_base64_payload() -> None:
    message = DryRunMessage.from_json({"listener": "restin", "path": "/devices/thermo-001/telemetry?x=1",
                                     "payloadBase64": "eyJ0ZW1wZXJhdHVyZSI6IDF9", "headers": {"X-A": "b"}})
    assert message.payload == b'{"temperature": 1}' and message.headers == {"X-A": "b"}
    answer = run_dry(DOC, build_solution_scripts(DOC), {"thermo-001": Device("thermo-001", "thermostat")}.get,
                     message)
    assert answer["ok"] and answer["stages"][2]["output"]["fields"] == [
        {"key": "temperature", "name": "Temperature", "type": "decimal", "value": 1.0}]
