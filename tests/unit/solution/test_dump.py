"""parse(dump(doc)) == doc, and secrets never leave in clear."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from runtime.core.solution.dump import dump_native, to_native, to_yaml, yaml_text
from runtime.core.solution.loader import load_solution
from runtime.core.solution.model import SolutionDocument
from tests.unit.solution.conftest import EXAMPLES


def _load(data: bytes, env: dict[str, str] | None = None) -> SolutionDocument:
    return load_solution(data, source="t", env=env or {})


def test_fixture_round_trip(export_bytes: bytes) -> None:
    doc = _load(export_bytes)
    text = to_yaml(doc)
    again = _load(text.encode())
    assert again == doc
    assert "$type" not in text and "HasValue" not in text
    assert "ListenOnPort" not in text and "listenOnPort: 6010" in text


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_round_trip(path: Path) -> None:
    doc = _load(path.read_bytes())
    assert _load(to_yaml(doc).encode()) == doc
    assert _load(yaml.safe_dump(to_native(doc)).encode()) == doc


def test_secrets_become_refs(demo: dict[str, Any]) -> None:
    demo["solution"]["listeners"][0].update(anonymous=False, userName="dev", password="hunter2-listener")
    demo["instance"].update(inputCommandAnonymous=False, inputCommandBasicAuthUserName="op",
                            inputCommandBasicAuthPassword="hunter2-ic")  # fmt: skip
    demo["devices"][0]["primaryAccessKey"] = "hunter2-device"
    doc = _load(yaml.safe_dump(demo).encode())
    dump = dump_native(doc)
    text = yaml_text(dump)
    assert "hunter2" not in text
    assert {s.path: s.env_name for s in dump.secrets} == {
        "instance.inputCommandBasicAuthPassword": "INSTANCE_INPUT_COMMAND_BASIC_AUTH_PASSWORD",
        "solution.listeners[0].password": "SOLUTION_LISTENERS_RESTIN_PASSWORD",
        "devices[0].primaryAccessKey": "DEVICES_THERMO_001_PRIMARY_ACCESS_KEY",
    }
    assert dump.data["solution"]["listeners"][0]["passwordRef"] == "env:SOLUTION_LISTENERS_RESTIN_PASSWORD"
    assert "SOLUTION_LISTENERS_RESTIN_PASSWORD" in text.split("\n", 3)[1] + text  # listed in the header
    assert _load(text.encode(), dump.secret_env()) == doc


def test_dollar_brace_survives(demo: dict[str, Any]) -> None:
    demo["solution"]["name"] = "literal $${NOT_A_VAR}"
    doc = _load(yaml.safe_dump(demo).encode())
    assert doc.solution.name == "literal ${NOT_A_VAR}"
    assert _load(to_yaml(doc).encode()) == doc


def test_scripts_written_as_blocks(demo: dict[str, Any]) -> None:
    text = to_yaml(_load(yaml.safe_dump(demo).encode()))
    assert "preHandlerScript: |" in text
