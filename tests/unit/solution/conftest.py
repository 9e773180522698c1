from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[3]
DEMO = REPO / "runtime" / "demo" / "solution.yaml"
EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))


@pytest.fixture(scope="session")
def demo_tree() -> dict[str, Any]:
    return yaml.safe_load(DEMO.read_text())


@pytest.fixture
def demo(demo_tree: dict[str, Any]) -> dict[str, Any]:
    """A fresh, mutable copy of the demo solution's tree."""
    return copy.deepcopy(demo_tree)


@pytest.fixture(scope="session")
def export_bytes() -> bytes:
    local = REPO / "tests" / "fixtures" / "nuviot-motionhandler-2018.json"
    return local.read_bytes()


@pytest.fixture
def export(export_bytes: bytes) -> dict[str, Any]:
    return json.loads(export_bytes)


def no_files(path: str) -> bytes:
    raise FileNotFoundError(path)


@pytest.fixture
def as_json() -> Callable[[Any], bytes]:
    return lambda tree: json.dumps(tree).encode()
