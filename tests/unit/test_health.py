"""Issue 12, done-when 6: device health decisions (``core/health.py``), pure: time in, events out.

Names from LagoVista/Deployments ``src/LagoVista.IoT.Deployment.Models``: ``DeviceConfiguration``
(``WatchdogEnabledDefault``, ``WatchdogSeconds``, ``ErrorCodes``, ``MessageWatchDogs``), ``MessageWatchDog.cs``
(``Timeout``, ``TimeoutInterval`` of ``TimeSpanIntervals`` {na, minutes, hours, days}, ``StartupBufferMinutes``,
``DeviceMessageDefinition``, ``DeviceErrorCode``), ``DeviceErrorCode.cs``; LagoVista/DeviceAdmin ``BusinessRule``
(a script returning true/false, tied to an error code: reference/nuviot-spec.md §2.3). The device configuration is
the "Example - Motion" app's (``tests/fixtures/nuviot-deployment-instance.json``, LagoVista/StarterKit
``OrgInitializer``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from runtime.adapters.scripting.engine import build_workflow_scripts
from runtime.core.devices import Device
from runtime.core.health import (
    ERRORS,
    MESSAGES_AT,
    expired,
    message_seen,
    next_due,
    watch_plan,
)
from runtime.core.pipeline.workflow import WorkflowEngine
from runtime.core.solution.loader import load_solution_report
from runtime.core.solution.model import SolutionDocument

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "nuviot-deployment-instance.json"
T0 = 1_800_000_000.0
HOUR = 3600.0


def document(**config: Any) -> dict[str, Any]:
    doc = json.loads(FIXTURE.read_bytes())
    doc["Result"]["Solution"]["Value"]["DeviceConfigurations"][0]["Value"].update(config)
    return doc


def load(doc: dict[str, Any]) -> SolutionDocument:
    return load_solution_report(json.dumps(doc).encode(), source="t", env={}).document


MOTION_WATCHDOG = {
    "Id": "B" * 32, "Key": "motionwd", "Name": "Motion every 12 hours", "Timeout": 12,
    "TimeoutInterval": {"Id": "hours", "Text": "Hours"}, "StartupBufferMinutes": 30,
    "DeviceMessageDefinition": {"Id": "5B3E1D4C2A1948F6B7C8D9E0F1A2B3C4", "Text": "Example - Motion Message"},
    "DeviceErrorCode": {"Id": "A" * 32, "Key": "nomotion", "Text": "No Motion"},
}


def test_a_message_watchdog_raises_its_code_when_the_message_is_late_and_the_message_clears_it() -> None:
    doc = load(document(ErrorCodes=[{"Id": "A" * 32, "Key": "nomotion", "Name": "No Motion"}],
                        MessageWatchDogs=[MOTION_WATCHDOG]))
    plan = watch_plan(doc.solution.device_configurations[0], doc.messages)
    assert plan is not None and plan.device_seconds is None  # WatchdogEnabledDefault is false
    assert [(w.message, w.seconds, w.error_code) for w in plan.messages] == [("examplemotion", 12 * HOUR, "nomotion")]
    device = Device("dev001", "examplemotion", created_at=T0 - 100 * HOUR)
    started = T0
    # silent since long before the start: due once the startup buffer is over, not at once
    assert next_due(plan, device, started) == started + 30 * 60
    assert expired(plan, device, started + 60, started) is None
    updated, events = expired(plan, device, started + 31 * 60, started) or (device, [])
    assert [(e.code, e.action, e.source) for e in events] == [("nomotion", "raised", "messagewatchdog")]
    assert updated.property_bag[ERRORS]["nomotion"]["raisedAt"] == started + 31 * 60
    assert device.property_bag == {}  # the stored device is not changed in place
    assert next_due(plan, updated, started) is None  # raised once, not again and again
    # the message arrives: noted, and its watchdog's code clears
    working = updated.copy()
    events = message_seen(plan, working, "examplemotion", started + HOUR)
    assert [(e.code, e.action) for e in events] == [("nomotion", "cleared")]
    assert working.property_bag[ERRORS] == {} and working.property_bag[MESSAGES_AT] == {"examplemotion": started + HOUR}
    assert updated.property_bag.get(ERRORS)  # the old copy is left alone
    assert next_due(plan, working, started) == started + HOUR + 12 * HOUR


def test_the_device_watchdog_counts_from_the_last_contact_and_any_message_clears_it() -> None:
    doc = load(document(WatchdogEnabledDefault=True, WatchdogSeconds=900))
    plan = watch_plan(doc.solution.device_configurations[0], doc.messages)
    assert plan is not None and plan.device_seconds == 900
    device = Device("dev001", "examplemotion", last_seen=T0)
    assert next_due(plan, device, T0 - 50) == T0 + 900
    assert expired(plan, device, T0 + 899, T0) is None
    updated, events = expired(plan, device, T0 + 900, T0) or (device, [])
    assert [(e.code, e.source) for e in events] == [("watchdog", "devicewatchdog")]
    working = updated.copy()
    events = message_seen(plan, working, "anything", T0 + 1000)
    assert [(e.code, e.action) for e in events] == [("watchdog", "cleared")]


def test_a_configuration_without_watchdogs_has_no_plan() -> None:
    doc = load(document(WatchdogEnabledDefault=False, WatchdogSeconds=900))  # seconds without the switch
    assert watch_plan(doc.solution.device_configurations[0], doc.messages) is None


def test_a_failing_business_rule_raises_its_error_code_and_a_passing_one_clears_it() -> None:
    raw = document()
    wf_raw = raw["Result"]["Solution"]["Value"]["DeviceConfigurations"][0]["Value"]["Routes"][0]["PipelineModules"][2]
    wf_raw["Module"]["Value"]["BusinessRules"] = [{
        "Key": "notjammed", "Name": "Not jammed", "ErrorCode": {"Id": "C" * 32, "Key": "jammed", "Text": "Jammed"},
        "Script": "function evaluate() { return Attributes.motionstatus !== 'jammed' ? true "
                  ": {result: false, reason: 'the sensor reports jammed'}; }",
    }]
    doc = load(raw)
    wf = doc.workflow_by_key["examplemotion"]
    engine = WorkflowEngine.for_solution(doc, wf, build_workflow_scripts(doc, wf))
    device = Device("dev001", "examplemotion", name="Motion Sensor 1")
    result = engine.run(device, {"motionstatus": "jammed"}, now=T0)
    result.apply_to(device)
    assert [(e.code, e.action, e.source, e.details) for e in result.health_events] == [
        ("jammed", "raised", "businessrule", "the sensor reports jammed")]
    assert device.property_bag[ERRORS]["jammed"]["raisedAt"] == T0
    result = engine.run(device, {"motionstatus": "on"}, now=T0 + 5)
    result.apply_to(device)
    assert [(e.code, e.action) for e in result.health_events] == [("jammed", "cleared")]
    assert device.property_bag[ERRORS] == {}
    # BusinessRule.IsEnabled unchecked (LagoVista/DeviceAdmin BusinessRule.cs): the rule is read and does not run
    wf_raw["Module"]["Value"]["BusinessRules"][0]["IsEnabled"] = False
    doc = load(raw)
    wf = doc.workflow_by_key["examplemotion"]
    assert wf.business_rules[0].is_enabled is False
    engine = WorkflowEngine.for_solution(doc, wf, build_workflow_scripts(doc, wf))
    result = engine.run(device, {"motionstatus": "jammed"}, now=T0 + 10)
    assert result.health_events == [] and result.rule_failures == []
