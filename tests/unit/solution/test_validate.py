"""Broken solutions, each reported by exact wire path and code; warnings kept apart from errors."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import yaml

from runtime.core.errors import SolutionError
from runtime.core.solution import codes
from runtime.core.solution.loader import load_solution, load_solution_report
from runtime.core.solution.native import native_document
from runtime.core.solution.validate import validate_document
from tests.unit.solution.conftest import no_files

Tree = dict[str, Any]
ROUTE = "solution.deviceConfigurations[0].routes[0]"


def _steps(t: Tree) -> list[Tree]:
    return t["solution"]["deviceConfigurations"][0]["routes"][0]["steps"]


def _wf(t: Tree) -> Tree:
    return t["workflows"][0]


def _set(path: str, value: Any) -> Callable[[Tree], None]:
    """Set a value by a dotted path with [i] indexes (on the tree, not the model)."""

    def apply(t: Tree) -> None:
        parts: list[Any] = []
        for seg in path.replace("]", "").split("."):
            name, *idx = seg.split("[")
            parts.append(name)
            parts += [int(i) for i in idx]
        node: Any = t
        for part in parts[:-1]:
            node = node[part]
        if value is _DELETE:
            del node[parts[-1]]
        else:
            node[parts[-1]] = value

    return apply


_DELETE = object()


def _mqtt_listener_without_host(t: Tree) -> None:
    t["solution"]["listeners"].append({"key": "mqttin", "listenerType": "mqttclient", "connectToPort": 1883})


def _duplicate_message(t: Tree) -> None:
    t["messages"].append({"key": "telemetry", "messageId": "again"})


def _duplicate_param(t: Tree) -> None:
    params = _wf(t)["outputCommands"][0]["parameters"]
    params.append(dict(params[0]))


def _json_param_on_get(t: Tree) -> None:
    _wf(t)["inputCommands"][0]["parameters"][0]["parameterLocation"] = "json"


def _mqtt_transmitter_without_host(t: Tree) -> None:
    t["transmitters"].append({"key": "mqttout", "transmitterType": "mqttclient", "connectToPort": 1883})


def _body_id_parser_without_content_type(t: Tree) -> None:
    t["solution"]["planner"]["messageTypeIdParsers"].append(
        {"key": "body", "searchLocation": "body", "jsonPath": "m"}
    )


def _two_messages_without_message_id(t: Tree) -> None:
    t["solution"]["planner"]["messageTypeIdParsers"] = []
    routes = t["solution"]["deviceConfigurations"][0]["routes"]
    routes[0]["isDefault"] = False
    routes.append({**routes[0], "key": "acks", "messageDefinition": "ackmsg"})


def _delimited_index_zero(t: Tree) -> None:
    t["messages"][0]["contentType"] = "delimited"
    for i, f in enumerate(t["messages"][0]["fields"]):
        f.pop("jsonPath", None)
        f["delimitedIndex"] = i  # NuvIoT counts from 1: the first field is wrong


CASES: list[tuple[str, Callable[[Tree], None], str, str]] = [
    ("rest listener without port", _set("solution.listeners[0].listenOnPort", _DELETE),
     "solution.listeners[0].listenOnPort", codes.LISTENER_FIELD_REQUIRED),
    ("rest listener without server type", _set("solution.listeners[0].restServerType", _DELETE),
     "solution.listeners[0].restServerType", codes.LISTENER_FIELD_REQUIRED),
    ("basic-auth rest listener without password", _set("solution.listeners[0].anonymous", False),
     "solution.listeners[0].password", codes.LISTENER_FIELD_REQUIRED),
    ("mqtt client without host", _mqtt_listener_without_host,
     "solution.listeners[1].hostName", codes.LISTENER_FIELD_REQUIRED),
    ("mqtt client without subscriptions", _mqtt_listener_without_host,
     "solution.listeners[1].mqttSubscriptions", codes.LISTENER_FIELD_REQUIRED),
    ("listener port = input command port", _set("instance.inputCommandPort", 8180),
     "solution.listeners[0].listenOnPort", codes.DUPLICATE_PORT),
    ("unknown listener type", _set("solution.listeners[0].listenerType", "carrierpigeon"),
     "solution.listeners[0].listenerType", codes.UNKNOWN_ENUM),
    ("port as a string", _set("solution.listeners[0].listenOnPort", "8180"),
     "solution.listeners[0].listenOnPort", codes.WRONG_TYPE),
    ("port out of range", _set("solution.listeners[0].listenOnPort", 70000),
     "solution.listeners[0].listenOnPort", codes.OUT_OF_RANGE),
    ("no planner", _set("solution.planner", _DELETE), "solution.planner", codes.INS_NO_PLANNER),
    ("planner without device id parsers", _set("solution.planner.deviceIdParsers", []),
     "solution.planner.deviceIdParsers", codes.PLANNER_PARSERS),
    ("no message id parsers, two messages, no default route", _two_messages_without_message_id,
     "solution.deviceConfigurations[0].routes", codes.MESSAGE_ID_NEEDED),
    ("state field without a state set", _set("messages[0].fields[2].storageType", "state"),
     "messages[0].fields[2].stateSet", codes.STATE_SET_REQUIRED),
    ("value-with-unit attribute without a unit set", _set("workflows[0].attributes[0].attributeType", "valuewithunit"),
     "workflows[0].attributes[0].unitSet", codes.UNIT_SET_REQUIRED),
    ("body field without its jsonPath", _set("messages[0].fields[0].jsonPath", _DELETE),
     "messages[0].fields[0].jsonPath", codes.FIELD_LOCATOR),
    ("delimited index 0", _delimited_index_zero, "messages[0].fields[0].delimitedIndex", codes.FIELD_LOCATOR),
    ("listener type the runtime cannot start", _set("solution.listeners[0].listenerType", "serialport"),
     "solution.listeners[0].listenerType", codes.LISTENER_NOT_RUN),
    ("a route's input translator the runtime cannot run", _set("inputTranslators[0].inputTranslatorType", "script"),
     f"{ROUTE}.steps[1].module", codes.MODULE_NOT_RUN),
    ("a custom module in a route", _set(f"{ROUTE}.steps[3].type", "custom"), f"{ROUTE}.steps[3].type",
     codes.MODULE_NOT_RUN),
    ("path parser without locator", _set("solution.planner.deviceIdParsers[0].pathLocator", _DELETE),
     "solution.planner.deviceIdParsers[0].pathLocator", codes.PARSER_LOCATOR),
    ("body id parser without content type", _body_id_parser_without_content_type,
     "solution.planner.messageTypeIdParsers[1].contentType", codes.DMA_CONTENT_TYPE_REQUIRED),
    ("unknown default listener", _set("solution.defaultListener", "nope"),
     "solution.defaultListener", codes.SLN_LISTENER_NOT_FOUND),
    ("route without message", _set(f"{ROUTE}.messageDefinition", _DELETE),
     f"{ROUTE}.messageDefinition", codes.RTE_MESSAGE_DEFINITION_NULL),
    ("route with unknown message", _set(f"{ROUTE}.messageDefinition", "nope"),
     f"{ROUTE}.messageDefinition", codes.SLN_MESSAGE_NOT_FOUND),
    ("route without steps", _set(f"{ROUTE}.steps", []), f"{ROUTE}.steps", codes.RTE_EMPTY_ROUTE),
    ("step without type", _set(f"{ROUTE}.steps[0].type", _DELETE), f"{ROUTE}.steps[0].type", codes.RTE_MODULE_EMPTY_TYPE),
    ("unknown sentinel", _set(f"{ROUTE}.steps[0].module", "nope"), f"{ROUTE}.steps[0].module", codes.SLN_SENTINEL_NOT_FOUND),
    ("unknown workflow", _set(f"{ROUTE}.steps[2].module", "nope"), f"{ROUTE}.steps[2].module", codes.WORKFLOW_NOT_FOUND),
    ("unknown transmitter", _set(f"{ROUTE}.steps[4].module", "nope"), f"{ROUTE}.steps[4].module", codes.SLN_TRANSMITTER_NOT_FOUND),
    ("next to an unknown step", _set(f"{ROUTE}.steps[0].next.to", "nope"),
     f"{ROUTE}.steps[0].next.to", codes.RTE_LINKED_MODULE_NOT_FOUND),
    ("duplicate step id", _set(f"{ROUTE}.steps[1].id", "sentinel"), f"{ROUTE}.steps[1].id", codes.DUPLICATE_STEP_ID),
    ("input mapping from an unknown field", _set(f"{ROUTE}.steps[1].next.mappings.pressure", "temperature"),
     f"{ROUTE}.steps[1].next.mappings.pressure", codes.UNKNOWN_MESSAGE_FIELD),
    ("input mapping to an unknown input", _set(f"{ROUTE}.steps[1].next.mappings.humidity", "nope"),
     f"{ROUTE}.steps[1].next.mappings.humidity", codes.UNKNOWN_MAPPING_TARGET),
    ("input mapping type mismatch", _set("messages[0].fields[1].storageType", "string"),
     f"{ROUTE}.steps[1].next.mappings.humidity", codes.INPUT_MAPPING_TYPE),
    ("output mapping type mismatch", _set("messages[1].fields[0].storageType", "string"),
     f"{ROUTE}.steps[2].next.mappings.ack.fieldMappings.counter", codes.SLN_INVALID_OUTPUT_COMMAND_MAPPING),
    ("output mapping to an unknown parameter", _set(f"{ROUTE}.steps[2].next.mappings.ack.fieldMappings.nope", "state"),
     f"{ROUTE}.steps[2].next.mappings.ack.fieldMappings.nope", codes.SLN_INVALID_OUTPUT_COMMAND_MAPPING),
    ("output mapping to an unknown message", _set(f"{ROUTE}.steps[2].next.mappings.ack.outgoingMessage", "nope"),
     f"{ROUTE}.steps[2].next.mappings.ack.outgoingMessage", codes.SLN_MESSAGE_NOT_FOUND),
    ("transmitter mapping to an unknown message", _set(f"{ROUTE}.steps[3].secondary[0].mappings.nope", ""),
     f"{ROUTE}.steps[3].secondary[0].mappings.nope", codes.SLN_MESSAGE_NOT_FOUND),
    ("json parameter on a GET command", _json_param_on_get,
     "workflows[0].inputCommands[0].parameters[0].parameterLocation", codes.JSON_PARAMETER_ON_GET),
    ("duplicate parameter key", _duplicate_param, "workflows[0].outputCommands[0].parameters[2].key", codes.DUPLICATE_PARAMETER),
    ("duplicate message key", _duplicate_message, "messages[2].key", codes.DUPLICATE_KEY),
    ("connection to an unknown attribute", _set("workflows[0].inputs[0].outgoingConnections[0].nodeKey", "nope"),
     "workflows[0].inputs[0].outgoingConnections[0].nodeKey", codes.DANGLING_CONNECTION),
    ("input command parameter type differs from attribute", _set("workflows[0].attributes[3].attributeType", "string"),
     "workflows[0].inputCommands[0].outgoingConnections[0]", codes.SLN_INVALID_INPUT_COMMAND_MAPPING),
    ("transition to an unknown state", _set("workflows[0].stateMachines[0].states[0].transitions[0].newState", "nope"),
     "workflows[0].stateMachines[0].states[0].transitions[0].newState", codes.DANGLING_CONNECTION),
    ("unknown state set", _set("messages[0].fields[2].stateSet", "nope"), "messages[0].fields[2].stateSet", codes.SLN_STATE_SET_NOT_FOUND),
    ("mqtt transmitter without host", _mqtt_transmitter_without_host, "transmitters[1].hostName", codes.TRANSMITTER_FIELD_REQUIRED),
    ("basic-auth input commands without user", _set("instance.inputCommandAnonymous", False),
     "instance.inputCommandBasicAuthUserName", codes.INSTANCE_FIELD_REQUIRED),
    ("device of an unknown configuration", _set("devices[1].deviceConfiguration", "nope"),
     "devices[1].deviceConfiguration", codes.DEVICE_CONFIG_NOT_FOUND),
    ("duplicate device id", _set("devices[1].deviceId", "thermo-001"), "devices[1].deviceId", codes.DUPLICATE_DEVICE),
]  # fmt: skip


def _problems(tree: Tree) -> set[tuple[str, str]]:
    data = yaml.safe_dump(tree, sort_keys=False).encode()
    with pytest.raises(SolutionError) as info:
        load_solution(data, source="t", env={}, read_file=no_files)
    return {(p.path, p.code) for p in info.value.problems}


@pytest.mark.parametrize(("name", "mutate", "path", "code"), CASES, ids=[c[0] for c in CASES])
def test_broken_solution(demo: Tree, name: str, mutate: Callable[[Tree], None], path: str, code: str) -> None:
    mutate(demo)
    assert (path, code) in _problems(demo)


def test_every_problem_is_reported_at_once(demo: Tree) -> None:
    by_name = {c[0]: c for c in CASES}
    picked = ["rest listener without port", "route with unknown message", "json parameter on a GET command",
              "duplicate parameter key", "device of an unknown configuration"]  # fmt: skip
    for name in picked:
        by_name[name][1](demo)
    assert {(by_name[n][2], by_name[n][3]) for n in picked} <= _problems(demo)


def test_every_model_problem_is_reported_at_once(demo: Tree) -> None:
    by_name = {c[0]: c for c in CASES}
    picked = ["port as a string", "no planner", "step without type"]
    for name in picked:
        by_name[name][1](demo)
    demo["messages"][0]["fields"][0]["storageType"] = "kelvin"
    assert _problems(demo) == {(by_name[n][2], by_name[n][3]) for n in picked} | {
        ("messages[0].fields[0].storageType", codes.UNKNOWN_ENUM)
    }


def test_warnings_are_not_errors(demo: Tree) -> None:
    demo["solution"]["listeners"] = []
    demo["solution"]["defaultListener"] = None
    loaded = load_solution_report(yaml.safe_dump(demo).encode(), source="t", env={})
    assert [(w.path, w.code) for w in loaded.warnings] == [("solution.listeners", codes.SLN_NO_LISTENERS)]


def test_no_device_configurations_warns(demo: Tree) -> None:
    demo["solution"]["deviceConfigurations"] = []
    del demo["devices"]
    doc = native_document(demo, env={}, read_file=no_files)
    report = validate_document(doc)
    assert report.ok
    assert [(w.path, w.code) for w in report.warnings] == [
        ("solution.deviceConfigurations", codes.SLN_NO_DEVICE_CONFIGS)
    ]


def test_port_zero_is_not_a_clash(demo: Tree) -> None:
    demo["solution"]["listeners"][0]["listenOnPort"] = 0
    demo["instance"]["inputCommandPort"] = 0
    load_solution(yaml.safe_dump(demo).encode(), source="t", env={})


def test_messages_without_message_id_parsers_take_the_only_route(demo: Tree) -> None:
    from runtime.core.pipeline.planner import select_route

    demo["solution"]["planner"]["messageTypeIdParsers"] = []
    demo["solution"]["deviceConfigurations"][0]["routes"][0]["isDefault"] = False
    report = load_solution_report(yaml.safe_dump(demo).encode(), source="t", env={}, read_file=no_files)
    config = report.document.solution.device_configurations[0]
    assert select_route(report.document, config, None).key == config.routes[0].key


def test_what_would_fail_every_message_says_the_fix(demo: Tree) -> None:
    _delimited_index_zero(demo)
    _set("messages[0].fields[2].storageType", "state")(demo)
    data = yaml.safe_dump(demo, sort_keys=False).encode()
    with pytest.raises(SolutionError) as info:
        load_solution(data, source="t", env={}, read_file=no_files)
    by_path = {p.path: p.message for p in info.value.problems}
    assert "set delimitedIndex to 1 for the first field" in by_path["messages[0].fields[0].delimitedIndex"]
    assert "set stateSet to one of the solution's state sets" in by_path["messages[0].fields[2].stateSet"]


def test_a_module_the_runtime_cannot_run_is_a_warning_when_no_route_uses_it(demo: Tree) -> None:
    demo["transmitters"].append({"key": "eh", "transmitterType": "azureeventhub", "hostName": "h", "hubName": "x",
                                 "accessKeyRef": "env:EH_KEY"})
    report = load_solution_report(yaml.safe_dump(demo).encode(), source="t", env={"EH_KEY": "k"}, read_file=no_files)
    assert (f"transmitters[{len(demo['transmitters']) - 1}]", codes.MODULE_NOT_RUN) in {
        (w.path, w.code) for w in report.warnings}


def test_a_message_watchdog_that_can_never_fire_is_warned_with_its_path(demo: Tree) -> None:
    """``core/health.py`` leaves such a watchdog out of the plan; validate says so (before: silently)."""
    message = demo["messages"][0]["key"]
    demo["solution"]["deviceConfigurations"][0]["messageWatchDogs"] = [
        {"key": "late", "name": "Late", "timeout": 5, "timeoutInterval": "minutes",
         "deviceMessageDefinition": message, "deviceErrorCode": "late"},
        {"key": "never", "name": "Never", "timeout": 0, "timeoutInterval": "minutes",
         "deviceMessageDefinition": message},
        {"key": "elsewhere", "name": "Elsewhere", "timeout": 1, "timeoutInterval": "hours",
         "deviceMessageDefinition": "nosuchmessage"},
    ]
    report = load_solution_report(yaml.safe_dump(demo).encode(), source="t", env={}, read_file=no_files)
    found = {(w.path, w.code): w.message for w in report.warnings if "messageWatchDogs" in w.path}
    base = "solution.deviceConfigurations[0].messageWatchDogs"
    assert set(found) == {(f"{base}[1].timeout", codes.NOT_RUN), (f"{base}[2].deviceMessageDefinition", codes.NOT_RUN)}
    assert "'never' has no timeout" in found[(f"{base}[1].timeout", codes.NOT_RUN)]
    assert repr(message) in found[(f"{base}[2].deviceMessageDefinition", codes.NOT_RUN)]
