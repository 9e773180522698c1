"""The native reader: examples, ${VAR} expansion, secret references, safe YAML, limits."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from runtime.core.errors import SolutionError
from runtime.core.solution import codes
from runtime.core.solution.enums import ListenerType, QoS
from runtime.core.solution.loader import load_solution, load_solution_report
from runtime.core.solution.model import SolutionDocument
from runtime.core.solution.native import parse_tree
from tests.unit.solution.conftest import DEMO, EXAMPLES, REPO, no_files


def _load(
    data: bytes, env: dict[str, str] | None = None, read_file: Callable[[str], bytes] = no_files
) -> SolutionDocument:
    return load_solution(data, source="test", env=env or {}, read_file=read_file)


def _problems(
    data: bytes, env: dict[str, str] | None = None, read_file: Callable[[str], bytes] = no_files
) -> set[tuple[str, str]]:
    with pytest.raises(SolutionError) as info:
        _load(data, env, read_file)
    return {(p.path, p.code) for p in info.value.problems}


def _yaml(tree: Any) -> bytes:
    return yaml.safe_dump(tree, sort_keys=False).encode()


def test_demo_is_valid_without_warnings() -> None:
    loaded = load_solution_report(DEMO.read_bytes(), source=str(DEMO), env={})
    doc = loaded.document
    assert loaded.form == "native" and loaded.warnings == ()
    (lst,) = doc.solution.listeners
    assert (lst.listener_type, lst.listen_on_port, lst.anonymous, lst.keep_alive_to_send_reply) == (
        ListenerType.REST, 8180, True, True,
    )  # fmt: skip
    assert doc.instance.input_command_port == 8182
    assert [d.device_id for d in doc.devices] == ["thermo-001", "thermo-002"]
    wf = doc.workflow_by_key["thermostatwf"]
    assert wf.state_machine_by_key["heater"].initial_state == "idle"
    assert wf.state_machine_by_key["heater"].events == ("heat", "off")  # "off" quoted: no YAML 1.1 boolean
    assert wf.input_command_by_key["setpoint"].parameters[0].parameter_location.value == "querystring"


def test_examples_copy_of_demo() -> None:
    assert (REPO / "examples" / "demo.yaml").read_text() == DEMO.read_text()


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_valid(path: Path) -> None:
    loaded = load_solution_report(path.read_bytes(), source=str(path), env={})
    assert loaded.warnings == ()


def test_mqtt_example_defaults_and_env() -> None:
    data = (REPO / "examples" / "mqtt-telemetry.yaml").read_bytes()
    doc = _load(data)
    lst = doc.solution.listeners[0]
    assert (lst.host_name, lst.connect_to_port) == ("127.0.0.1", 1883)
    assert lst.mqtt_subscriptions[0].topic == "devices/+/telemetry"
    assert lst.mqtt_subscriptions[0].qos is QoS.QOS1
    assert doc.message_by_key["setfan"].topic == "devices/~deviceid~/commands/~messageid~"
    doc = _load(data, {"MQTT_HOST": "broker.lan", "MQTT_PORT": "8883"})
    assert (doc.solution.listeners[0].host_name, doc.solution.listeners[0].connect_to_port) == (
        "broker.lan",
        8883,
    )
    assert doc.transmitters[0].connect_to_port == 8883


def test_json_equivalent_loads_identically(demo: dict[str, Any], as_json: Callable[[Any], bytes]) -> None:
    assert _load(as_json(demo)) == _load(_yaml(demo))


# --------------------------------------------------------------------------- ${VAR}


def test_env_expansion(demo: dict[str, Any]) -> None:
    demo["solution"]["name"] = "Site ${SITE} (${REGION:-eu})"
    demo["solution"]["listeners"][0]["listenOnPort"] = "${PORT:-9000}"
    demo["solution"]["listeners"][0]["defaultResponse"] = "cost $${PRICE}"
    doc = _load(_yaml(demo), {"SITE": "north"})
    assert doc.solution.name == "Site north (eu)"
    assert doc.solution.listeners[0].listen_on_port == 9000
    assert doc.solution.listeners[0].default_response == "cost ${PRICE}"


def test_env_missing_names_the_path(demo: dict[str, Any]) -> None:
    demo["solution"]["listeners"][0]["hostName"] = "${NOPE}"
    demo["solution"]["listeners"][0]["listenOnPort"] = "${NOPORT}"
    assert _problems(_yaml(demo)) == {
        ("solution.listeners[0].hostName", codes.ENV_MISSING),
        ("solution.listeners[0].listenOnPort", codes.ENV_MISSING),
    }


def test_env_value_of_wrong_type(demo: dict[str, Any]) -> None:
    demo["solution"]["listeners"][0]["listenOnPort"] = "${PORT}"
    assert _problems(_yaml(demo), {"PORT": "eighty"}) == {
        ("solution.listeners[0].listenOnPort", codes.ENV_BAD_VALUE)
    }


def test_scripts_are_not_expanded(demo: dict[str, Any]) -> None:
    script = "function onSet(value) { logConsole(`got ${value}`); }"
    demo["workflows"][0]["inputs"][0]["onSetScript"] = script
    doc = _load(_yaml(demo))
    assert doc.workflows[0].inputs[0].on_set_script == script


# --------------------------------------------------------------------------- secrets


def test_secret_refs_resolve(demo: dict[str, Any]) -> None:
    lst = demo["solution"]["listeners"][0]
    lst.update(anonymous=False, userName="dev", passwordRef="env:REST_PASSWORD")
    demo["instance"].update(inputCommandAnonymous=False, inputCommandBasicAuthUserName="op",
                            inputCommandBasicAuthPasswordRef="file:/run/secrets/ic")  # fmt: skip
    demo["devices"][0]["primaryAccessKeyRef"] = "env:DEV1_KEY"
    files = {"/run/secrets/ic": b"s3cret-file\n"}
    doc = _load(_yaml(demo), {"REST_PASSWORD": "pw", "DEV1_KEY": "k1"}, lambda p: files[p])
    assert doc.solution.listeners[0].password is not None
    assert doc.solution.listeners[0].password.get_secret_value() == "pw"
    assert doc.instance.input_command_basic_auth_password is not None
    assert doc.instance.input_command_basic_auth_password.get_secret_value() == "s3cret-file"
    assert doc.devices[0].primary_access_key is not None
    assert doc.devices[0].primary_access_key.get_secret_value() == "k1"
    assert "pw" not in repr(doc)


def test_secret_refs_unresolvable(demo: dict[str, Any]) -> None:
    lst = demo["solution"]["listeners"][0]
    lst.update(anonymous=False, userName="dev", passwordRef="env:MISSING_PW")
    demo["instance"]["inputCommandBasicAuthPasswordRef"] = "file:/nope"
    demo["devices"][0]["primaryAccessKeyRef"] = "vault:x"
    demo["devices"][1]["primaryAccessKey"] = "inline"
    demo["devices"][1]["primaryAccessKeyRef"] = "env:X"
    assert _problems(_yaml(demo), {"X": "x"}) == {
        ("solution.listeners[0].passwordRef", codes.SECRET_UNRESOLVED),
        ("instance.inputCommandBasicAuthPasswordRef", codes.SECRET_UNRESOLVED),
        ("devices[0].primaryAccessKeyRef", codes.SECRET_REF_INVALID),
        ("devices[1].primaryAccessKeyRef", codes.SECRET_TWICE),
    }


# --------------------------------------------------------------------------- safety and syntax


def test_yaml_alias_bomb_is_refused() -> None:
    bomb = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 10):
        prev = chr(ord("a") + i - 1)
        name = chr(ord("a") + i)
        bomb.append(f"{name}: &{name} [{', '.join(['*' + prev] * 10)}]")
    data = ("\n".join(bomb) + "\nsolution: {key: s, planner: {key: p}}\n").encode()
    with pytest.raises(SolutionError) as info:
        parse_tree(data)
    assert [p.code for p in info.value.problems] == [codes.ALIAS_BOMB]


def test_recursive_alias_is_refused() -> None:
    with pytest.raises(SolutionError) as info:
        parse_tree(b"a: &a [*a]\n")
    assert [p.code for p in info.value.problems] == [codes.ALIAS_BOMB]


def test_small_aliases_are_fine(demo: dict[str, Any]) -> None:
    text = yaml.safe_dump(demo, sort_keys=False)
    text = text.replace("sentinels:\n", "x-anchor: &anon {key: anonymous, name: Anonymous}\nsentinels:\n", 1)
    assert _load(text.encode()).sentinels[0].key == "anonymous"


def test_size_cap_before_parsing() -> None:
    with pytest.raises(SolutionError) as info:
        parse_tree(b"{" + b" " * 100, max_bytes=50)
    assert [p.code for p in info.value.problems] == [codes.TOO_LARGE]
    with pytest.raises(SolutionError) as info:
        _load(b"#" * (16 * 1024 * 1024 + 1))
    assert [p.code for p in info.value.problems] == [codes.TOO_LARGE]


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b'{"solution": {"key": "x", "planner": {"ke', codes.SYNTAX),  # truncated JSON
        (b"solution:\n  key: [unclosed\n", codes.SYNTAX),  # truncated YAML
        (b"\xff\xfe\x00garbage", codes.NOT_TEXT),
        (b"- just\n- a list\n", codes.NOT_A_DOCUMENT),
        (b"", codes.NOT_A_DOCUMENT),
        (b"a: 1\n---\nb: 2\n", codes.NOT_A_DOCUMENT),
        (b"a: !!python/object/apply:os.system [echo hi]\n", codes.YAML_TAG),
        (b"[" * 100_000, codes.SYNTAX),
    ],
    ids=["truncated-json", "truncated-yaml", "not-utf8", "list", "empty", "two-docs", "python-tag", "deep"],
)
def test_unreadable(data: bytes, code: str) -> None:
    with pytest.raises(SolutionError) as info:
        _load(data)
    assert [p.code for p in info.value.problems] == [code]


def test_syntax_problem_names_the_line() -> None:
    with pytest.raises(SolutionError) as info:
        _load(b'{\n  "solution": {\n    "key": "x",\n')
    (p,) = info.value.problems
    assert p.path.startswith("line 4")


def test_yaml_11_booleans_stay_strings(demo: dict[str, Any]) -> None:
    text = yaml.safe_dump(demo, sort_keys=False).replace("name: Demo Thermostat", "name: no", 1)
    assert _load(text.encode()).solution.name == "no"
