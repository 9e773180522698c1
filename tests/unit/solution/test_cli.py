"""``validate`` and ``import`` as the CLI runs them."""

from __future__ import annotations

import io
import json
from pathlib import Path

from runtime.core.solution.loader import load_solution
from runtime.solution_cli import import_main, validate_main
from tests.unit.solution.conftest import DEMO


def test_validate_ok() -> None:
    out = io.StringIO()
    assert validate_main(str(DEMO), out=out) == 0
    assert out.getvalue().startswith(f"{DEMO}: ok (native; solution demo version 1.0;")


def test_validate_prints_path_code_message(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(
        json.dumps({"solution": {"key": "x", "listeners": [{"key": "l", "listenerType": "rest"}]}})
    )
    out = io.StringIO()
    assert validate_main(str(bad), out=out) == 1
    assert out.getvalue().splitlines() == [
        "solution.planner: INS1002 Your solution does not appear to have a Planner configured.",
    ]


def test_validate_missing_file(tmp_path: Path) -> None:
    out = io.StringIO()
    assert validate_main(str(tmp_path / "nope.yaml"), out=out) == 1
    assert out.getvalue().startswith(f"{tmp_path / 'nope.yaml'}: PYRT1000 cannot read the file")


def test_validate_export_prints_warnings(motion_fixture_path: Path) -> None:
    out = io.StringIO()
    assert validate_main(str(motion_fixture_path), out=out) == 0
    lines = out.getvalue().splitlines()
    assert any(": warning PYRT2080 data stream simpletable: type azuretablestorage" in line for line in lines)
    assert lines[-1].startswith(f"{motion_fixture_path}: ok (nuviot-export; solution motionhandler")


def test_import_writes_native_yaml(motion_fixture_path: Path, tmp_path: Path) -> None:
    target = tmp_path / "out" / "motion.yaml"
    out = io.StringIO()
    assert import_main(str(motion_fixture_path), str(target), out=out) == 0
    text = target.read_text()
    assert text.startswith("# Native nuviot-runtime solution, imported from nuviot-motionhandler-2018.json.")
    doc = load_solution(text.encode(), source=str(target), env={})
    assert doc == load_solution(motion_fixture_path.read_bytes(), source="x", env={})
    out2 = io.StringIO()
    assert validate_main(str(target), out=out2) == 0


def test_import_of_a_broken_export(tmp_path: Path) -> None:
    src = tmp_path / "broken.json"
    src.write_text('{"$type": "x", "Key": "s", "Listeners": [')
    out = io.StringIO()
    assert import_main(str(src), str(tmp_path / "o.yaml"), out=out) == 1
    assert "PYRT1003" in out.getvalue()
    assert not (tmp_path / "o.yaml").exists()
