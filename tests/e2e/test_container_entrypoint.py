"""``entrypoint.sh`` run directly (no Docker engine needed): NuvIoT's container variables are mapped onto
the runtime's settings, the daemon becomes ready and logs JSON on stdout, a missing required variable
is refused with exit 2 and one line, and SIGTERM ends it with exit 0 within 10 s."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from runtime.solution_loading import demo_solution_path
from tests.support.daemon import REPO, Daemon
from tests.support.instance_api import serve_instance
from tests.support.net import free_port

pytestmark = pytest.mark.e2e

ENTRYPOINT = REPO / "entrypoint.sh"
BIN = REPO / ".venv" / "bin" / "nuviot-runtime"
NUVIOT_NAMES = ("InstanceId", "OrgId", "VersionId", "HostId", "Environment", "DeploymentType",
                "DeploymentConfig", "QueueType", "AccessKey")


def base_env(data_dir: Path, admin_port: int, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NUVIOT_") and k not in NUVIOT_NAMES}
    env.update(
        NUVIOT_RUNTIME_BIN=str(BIN),
        NUVIOT_DATA_DIR=str(data_dir),
        NUVIOT_ADMIN_HOST="127.0.0.1",
        NUVIOT_ADMIN_PORT=str(admin_port),
        NUVIOT_INPUT_COMMAND_PORT="0",
        NUVIOT_LISTENER_PORTS="restin=0",
        NUVIOT_LOG_FORMAT="json",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


class Entrypoint(Daemon):
    """The real daemon, started through ``sh entrypoint.sh``; stdout and stderr kept apart."""

    def __init__(self, data_dir: Path, env: dict[str, str]) -> None:
        super().__init__(data_dir, admin_port=int(env["NUVIOT_ADMIN_PORT"]))
        self.env = {**env, "NUVIOT_ADMIN_TOKEN": self.token}
        self.stderr: list[str] = []

    def start(self) -> None:
        self.proc = subprocess.Popen(["sh", str(ENTRYPOINT)], cwd=self.data_dir, env=self.env,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._err_reader = threading.Thread(target=self._read_err, daemon=True)
        self._err_reader.start()

    def __exit__(self, *exc: object) -> None:
        super().__exit__(*exc)
        self._err_reader.join(5)
        assert self.proc is not None
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()

    def _read_err(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for raw in self.proc.stderr:
            self.stderr.append(raw.decode(errors="replace").rstrip("\n"))


def wait_ready(d: Daemon, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            code, _ = d.request("GET", "/ready", token=None, timeout=2)
            if code == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError("never ready:\n" + "\n".join(d.lines[-30:]))


@pytest.fixture
def solution_server() -> Iterator[tuple[str, list[str]]]:
    """Serves the demo solution at NuvIoT's /api/deployment/instance/full, keeping the Authorization headers."""
    with serve_instance(demo_solution_path().read_bytes(), "application/yaml") as served:
        yield served


def test_boots_with_nuviot_variables_logs_json_and_stops_on_sigterm(tmp_path: Path) -> None:
    env = base_env(tmp_path, free_port(), InstanceId="inst-42", OrgId="org-7", HostId="host-1",
                   Environment="Production", DeploymentType="OnPremise", DeploymentConfig="SingleInstance",
                   QueueType="InMemory", AccessKey="very-secret-key-123", VersionId="")
    with Entrypoint(tmp_path, env) as d:
        wait_ready(d)
        code, status = d.request("GET", "/status")
        assert code == 200 and status["state"] == "Running"
        assert status["instanceId"] == "inst-42"  # InstanceId -> NUVIOT_INSTANCE_ID
        started = time.monotonic()
        assert d.terminate(timeout=10) == 0
        assert time.monotonic() - started < 10
        d._reader.join(5)  # type: ignore[union-attr]
    lines = [line for line in d.lines if line.strip()]
    parsed = [json.loads(line) for line in lines]  # every stdout line is one JSON object
    first = parsed[0]
    assert first["event"] == "entrypoint_started" and first["mode"] == "onpremise"
    assert (first["instanceId"], first["orgId"], first["hostId"], first["environment"]) == \
        ("inst-42", "org-7", "host-1", "Production")
    assert (first["deploymentType"], first["deploymentConfig"], first["queueType"]) == \
        ("OnPremise", "SingleInstance", "InMemory")
    assert first["accessKey"] == "set"
    changes = [(p["previous"], p["state"]) for p in parsed if p.get("event") == "state_changed"]
    assert changes[-1] == ("Stopping", "Stopped")  # SIGTERM drained to Stopped, then the process exited
    exited = [p for p in parsed if p.get("event") == "runtime_exited"]
    assert len(exited) == 1 and exited[0]["state"] == "Stopped"
    everything = "\n".join(d.lines + d.stderr)
    assert "very-secret-key-123" not in everything
    assert (tmp_path / "runtime.db").exists()


def test_standalone_runs_the_packaged_demo(tmp_path: Path) -> None:
    with Entrypoint(tmp_path, base_env(tmp_path, free_port())) as d:
        wait_ready(d)
        code, status = d.request("GET", "/status")
        assert code == 200 and status["state"] == "Running" and status["solution"]["key"] == "demo"
        assert status["instanceId"] == "demo"
        assert d.terminate(timeout=10) == 0
    assert json.loads(d.lines[0])["mode"] == "standalone"


def test_managed_derives_the_solution_url_and_sends_the_access_key(
        tmp_path: Path, solution_server: tuple[str, list[str]]) -> None:
    api, seen = solution_server
    env = base_env(tmp_path, free_port(), InstanceId="inst-m", OrgId="org-7", Environment="Production",
                   DeploymentType="managed", AccessKey="k-managed", NUVIOT_API_URL=api + "/")
    with Entrypoint(tmp_path, env) as d:
        wait_ready(d)
        code, status = d.request("GET", "/status")
        assert code == 200 and status["instanceId"] == "inst-m" and status["state"] == "Running"
        assert d.terminate(timeout=10) == 0
    assert seen and seen[0].startswith("/api/deployment/instance/full")
    assert seen[0].endswith("Bearer k-managed")  # AccessKey -> NUVIOT_ACCESS_KEY
    assert json.loads(d.lines[0])["solution"] == api + "/api/deployment/instance/full"


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        ({"DeploymentType": "managed", "AccessKey": "k", "NUVIOT_SOLUTION": "http://x/s"}, "InstanceId"),
        ({"DeploymentType": "Managed", "InstanceId": "i", "NUVIOT_SOLUTION": "http://x/s"}, "AccessKey"),
        ({"DeploymentType": "cloud", "InstanceId": "i", "AccessKey": "k"}, "solution URL"),
        ({"DeploymentType": "managed", "InstanceId": "i", "AccessKey": "k", "NUVIOT_SOLUTION": "/a/file"},
         "http(s) URL"),
        ({"DeploymentType": "kubernetes"}, "DeploymentType 'kubernetes'"),
        ({"NUVIOT_WORKING_STORAGE": "cloud"}, "NUVIOT_CLOUD_URL"),
    ],
)
def test_refuses_when_a_required_variable_is_missing(tmp_path: Path, extra: dict[str, str], needle: str) -> None:
    env = base_env(tmp_path, free_port(), **extra)
    proc = subprocess.run(["sh", str(ENTRYPOINT)], env=env, capture_output=True, timeout=10, cwd=tmp_path)
    err = proc.stderr.decode().strip()
    assert proc.returncode == 2
    assert len(err.splitlines()) == 1 and err.startswith("nuviot-runtime: refusing to start:")
    assert needle in err
    assert proc.stdout == b""  # nothing was started
    assert not (tmp_path / "runtime.db").exists()


def test_nuviot_settings_win_over_nuviot_container_names(tmp_path: Path) -> None:
    fake = tmp_path / "fake-runtime"
    fake.write_text('#!/bin/sh\necho "ARGS $*"\nenv\n')
    fake.chmod(0o755)
    env = base_env(tmp_path, 0, InstanceId="from-nuviot", NUVIOT_INSTANCE_ID="from-setting", VersionId="3.1",
                   QueueType="Kafka", NUVIOT_RUNTIME_BIN=str(fake))
    proc = subprocess.run(["sh", str(ENTRYPOINT), "--log-level", "debug"], env=env, capture_output=True,
                          timeout=10, cwd=tmp_path)
    assert proc.returncode == 0
    out = proc.stdout.decode().splitlines()
    assert "ARGS run --log-level debug" in out  # exec <bin> run "$@"
    assert "NUVIOT_INSTANCE_ID=from-setting" in out
    assert "NUVIOT_SOLUTION_VERSION=3.1" in out and "NUVIOT_QUEUE_TYPE=Kafka" in out


def test_tools_pass_through_without_instance_checks(tmp_path: Path) -> None:
    env = base_env(tmp_path, 0, DeploymentType="managed")  # would be refused for `run`
    proc = subprocess.run(["sh", str(ENTRYPOINT), "validate", str(demo_solution_path())], env=env,
                          capture_output=True, timeout=60, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr.decode()
    assert b"entrypoint_started" not in proc.stdout


def test_data_dir_becomes_private_and_files_0600(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    data.chmod(0o755)  # as a bind mount the runtime's user owns might come
    with Entrypoint(data, base_env(data, free_port())) as d:
        wait_ready(d)
        assert d.terminate(timeout=10) == 0
    assert (data.stat().st_mode & 0o777) == 0o700
    written = [p for p in data.rglob("*") if p.is_file()]
    assert any(p.name == "runtime.db" for p in written)
    for path in written:
        assert (path.stat().st_mode & 0o777) == 0o600, f"{path.name} is {oct(path.stat().st_mode & 0o777)}"
