"""One value converter, NuvIoT's rules, every caller (issue 12, done-when 3).

The rules are NuvIoT's ``MessageValue.Validate`` (LagoVista/Runtime
``src/LagoVista.IoT.Runtime.Core/Models/PEM/MessageValue.cs``; its tests
``tests/LagoVista.IoT.Core.Runtime.Tests/Messaging/MessageValueTests.cs`` give the first rows: "1234" valid,
"1234AB" and "1234.45" not integers (MGV1008), "1234AB" not a decimal (MGV1009), "32.f" not a value with unit
(MGV1004), "doesntexist" not a state (MGV1007), a state without a state set (MGV1006), "2017-10-08T03:30.000Z"
not a date-time (MGV1011)) applied to the text .NET holds for a JSON value (``true`` -> "True").

One table, four callers: device message fields (the input translator's converter), workflow values (inputs,
attributes), input-command parameters (the workflow engine) and system messages. Device messages and workflow
values follow NuvIoT; input commands and system messages also take what docs/fidelity.md lists ("lenient").
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from runtime.core.errors import StageError
from runtime.core.parsing.convert import make_converter
from runtime.core.parsing.errors import ParseError
from runtime.core.pipeline.typed import convert as workflow_convert
from runtime.core.pipeline.workflow import WorkflowEngine
from runtime.core.solution.enums import ParameterType as P
from runtime.core.solution.model import InputCommand, Parameter, StateDef, StateSet, Unit, UnitSet, Workflow
from runtime.core.system_messages import coerce
from runtime.core.values import dotnet_text

STATES = StateSet(key="states", states=(StateDef(key="state1", name="State One"), StateDef(key="state2")))
UNITS = UnitSet(key="temps", units=(Unit(key="c", is_default=True),))
STRICT, LENIENT = "strict", "lenient"


def device(ptype: P, raw: Any) -> Any:
    return make_converter(ptype, state_set=STATES, unit_set=UNITS)(raw)


def workflow(ptype: P, raw: Any) -> Any:
    return workflow_convert(raw, ptype, STATES)


def input_command(ptype: P, raw: Any) -> Any:
    command = InputCommand(key="cmd", parameters=(Parameter(key="p", parameter_type=ptype, state_set="states"),))
    engine = WorkflowEngine(Workflow(key="wf", input_commands=(command,)), state_sets={"states": STATES})
    return engine.convert_parameters(command, {"p": raw})["p"]


def system_message(ptype: P, raw: Any) -> Any:
    return coerce(raw, ptype, "p")


CALLERS: dict[str, tuple[str, Callable[[P, Any], Any]]] = {
    "device message": (STRICT, device),
    "workflow value": (STRICT, workflow),
    "input command": (LENIENT, input_command),
    "system message": (LENIENT, system_message),
}

# (type, raw, what NuvIoT gives (a value, or the error code), what the lenient callers give when different)
TABLE: list[tuple[P, Any, Any, Any]] = [
    # MessageValueTests
    (P.INTEGER, "1234", 1234, None),
    (P.INTEGER, "1234AB", "MGV1008", None),
    (P.INTEGER, "1234.45", "MGV1008", None),
    (P.DECIMAL, "1234.54", 1234.54, None),
    (P.DECIMAL, "1234AB", "MGV1009", None),
    (P.VALUE_WITH_UNIT, "32.5", 32.5, None),
    (P.VALUE_WITH_UNIT, "32.f", "MGV1004", None),
    # int.TryParse: Int32, no thousands separators, no decimals; a whole JSON number is written "3" by .NET
    (P.INTEGER, " -42 ", -42, None),
    (P.INTEGER, "1,234", "MGV1008", None),
    (P.INTEGER, "2147483648", "MGV1008", None),
    (P.INTEGER, 2147483647, 2147483647, None),
    (P.INTEGER, 3.0, 3, None),
    (P.INTEGER, "3.0", "MGV1008", 3),
    (P.INTEGER, True, "MGV1008", None),
    # decimal.TryParse (NumberStyles.Number): thousands separators and a trailing sign, no exponent
    (P.DECIMAL, "1,234.5", 1234.5, None),
    (P.DECIMAL, "5-", -5.0, None),
    (P.DECIMAL, "1e3", "MGV1009", None),
    (P.DECIMAL, 21.5, 21.5, None),
    (P.DECIMAL, False, "MGV1009", None),
    # double.TryParse for values with a unit: an exponent too
    (P.VALUE_WITH_UNIT, "1e3", 1000.0, None),
    # bool.TryParse
    (P.TRUE_FALSE, "True", True, None),
    (P.TRUE_FALSE, " false ", False, None),
    (P.TRUE_FALSE, True, True, None),
    (P.TRUE_FALSE, "yes", "MGV1004", True),
    (P.TRUE_FALSE, "1", "MGV1004", True),
    (P.TRUE_FALSE, 0, "MGV1004", False),
    (P.TRUE_FALSE, "maybe", "MGV1004", None),
    # strings as .NET writes them
    (P.STRING, True, "True", None),
    (P.STRING, 3.0, "3", None),
    (P.STRING, 21.5, "21.5", None),
    (P.STRING, "text", "text", None),
]
STATE_AND_DATE: list[tuple[P, Any, Any, Any]] = [
    # exact state keys
    (P.STATE, "state1", "state1", None),
    (P.STATE, "doesntexist", "MGV1007", None),
    (P.STATE, "STATE1", "MGV1007", "state1"),
    (P.STATE, "State One", "MGV1007", "state1"),
    # dates
    (P.DATETIME, "2017-10-08T03:30:00.000Z", "2017-10-08T03:30:00.000Z", None),
    (P.DATETIME, "2017-10-08T03:30.000Z", "MGV1011", None),
    (P.DATETIME, "2017-10-08T03:30:90.000Z", "MGV1011", None),
    (P.GEOLOCATION, "22.234512,-122.423413", "22.234512,-122.423413", None),
    (P.GEOLOCATION, "92.234512,-122.423413", "MGV1011", None),
    (P.GEOLOCATION, "22.234512,-122.4234dd13", "MGV1010", None),
]


def outcome(fn: Callable[[P, Any], Any], ptype: P, raw: Any) -> Any:
    try:
        return fn(ptype, raw)
    except (ParseError, StageError, ValueError) as exc:
        text = str(exc)
        return next((code for code in ("MGV1004", "MGV1006", "MGV1007", "MGV1008", "MGV1009", "MGV1010",
                                       "MGV1011") if code in text), text)


# system-message properties keep states, dates and locations as they come: those rows are not theirs
CASES = [(caller, *row) for caller in CALLERS for row in TABLE] + [
    (caller, *row) for caller in CALLERS if caller != "system message" for row in STATE_AND_DATE]


@pytest.mark.parametrize(("caller", "ptype", "raw", "nuviot", "lenient"), CASES,
                         ids=[f"{c}-{t.value}:{r!r}" for c, t, r, _, _ in CASES])
def test_every_caller_converts_by_nuviots_rules(caller: str, ptype: P, raw: Any, nuviot: Any, lenient: Any) -> None:
    mode, fn = CALLERS[caller]
    expected = lenient if mode == LENIENT and lenient is not None else nuviot
    got = outcome(fn, ptype, raw)
    assert got == expected and type(got) is type(expected)


def test_a_state_without_its_state_set_is_mgv1006_for_messages_and_workflow_values() -> None:
    with pytest.raises(ParseError) as info:
        make_converter(P.STATE)("state1")
    assert info.value.code == "MGV1006"
    with pytest.raises(ValueError, match="MGV1006"):
        workflow_convert("state1", P.STATE, None)


@pytest.mark.parametrize(("value", "text"), [
    (True, "True"), (False, "False"), (3.0, "3"), (21.5, "21.5"), (1e-05, "1E-05"), (0.0001, "0.0001"),
    (1e16, "1E+16"), (-7, "-7"), ({"a": 1}, '{"a":1}'),
])
def test_dotnet_text(value: Any, text: str) -> None:
    assert dotnet_text(value) == text
