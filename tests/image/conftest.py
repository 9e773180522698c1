"""The image test (``make image-test``): builds the image once per session and runs it per test.

These tests need root, podman and a few minutes; they run through ``make image-test`` (which ``make
test`` calls), that sets ``NUVIOT_IMAGE_TEST=1``. A plain ``pytest`` deselects them and says so.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.image.checks import STOP_SECONDS
from tests.image.harness import Container, Image, Podman, build, choose_run_mode, remove_stale

HERE = Path(__file__).resolve().parent
ENABLED = os.environ.get("NUVIOT_IMAGE_TEST") == "1"
_report: list[str] = []


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if ENABLED:
        return
    mine = [item for item in items if HERE in Path(str(item.fspath)).resolve().parents]
    if mine:
        items[:] = [item for item in items if item not in mine]
        config.hook.pytest_deselected(items=mine)
        _report.append(f"tests/image: {len(mine)} image tests deselected: they run with `make image-test` "
                       "(part of `make test`)")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for line in _report:
        terminalreporter.write_line(line, bold=True)
    if STOP_SECONDS:
        terminalreporter.write_line("SIGTERM to exit 0: " + ", ".join(f"{s:.2f} s" for s in STOP_SECONDS))


@pytest.fixture(scope="session")
def podman() -> Podman:
    tool = Podman()
    remove_stale(tool)
    return tool


@pytest.fixture(scope="session")
def image(podman: Podman) -> Image:
    built = build(podman, [])
    choose_run_mode(podman, built)
    mib = 1024 * 1024
    base = "the Debian stand-in (test device)" if built.standin else "the official image"
    _report.append(f"image {built.tag}: {built.size / mib:.0f} MiB, of which {(built.size - built.base_size) / mib:.0f}"
                   f" MiB above the base {built.base} ({base}, {built.base_size / mib:.0f} MiB)"
                   + (f"; built in {built.build_seconds:.0f} s" if built.build_seconds else ""))
    _report.append(f"image runs: {built.run_mode} ({built.run_mode_reason})")
    _report.extend(built.notes)
    return built


@pytest.fixture
def run_image(podman: Podman, image: Image) -> Iterator[Callable[..., Container]]:
    """Start the image (the test's `-e` variables, optional args instead of CMD, read-only files); every
    container is stopped, unmounted and removed at the end, whatever happened."""
    started: list[Container] = []

    def start(env: dict[str, str] | None = None, args: list[str] | None = None,
              files: dict[str, Path] | None = None, hosts: dict[str, str] | None = None) -> Container:
        container = Container(podman, image, env=env, args=args, files=files, hosts=hosts)
        started.append(container)
        return container.start()

    yield start
    for container in started:
        container.close()
