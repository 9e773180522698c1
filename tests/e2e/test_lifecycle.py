"""Issue 2: the daemon walks the instance lifecycle, with the real process, its admin API and SQLite."""

from __future__ import annotations

import socket
import sqlite3
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import http
from tests.support.daemon import Daemon
from tests.support.net import free_port

pytestmark = pytest.mark.e2e


def listener_port(status: dict, key: str) -> int:
    return next(lst["port"] for lst in status["listeners"] if lst["key"] == key)


def test_default_run_pause_start_stop_start_and_sigterm(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with Daemon(data, "--listener-port", "restin=0", "--input-command-port", "0") as d:
        status = d.wait_state("Running")
        assert status["solution"]["key"] == "demo"
        assert http("GET", d.base + "/ready")[0] == 200
        assert http("GET", d.base + "/health")[0] == 200
        rest = listener_port(status, "restin")
        icp = status["inputCommandPort"]
        code, body, _ = http("POST", f"http://127.0.0.1:{rest}/devices/thermo-001/telemetry", {"temperature": 20.5})
        assert code == 200 and body["counter"] == 1

        # pause: status and commands still served, data refused, input commands still run
        code, body = d.request("POST", "/control/pause")
        assert code == 202 and body["state"] in ("Pausing", "Paused")
        d.wait_state("Paused")
        code, body = d.request("POST", "/control/pause")
        assert code == 409 and body["error"]["code"] == "DEP1006"
        assert http("GET", d.base + "/ready")[0] == 503
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", rest), timeout=1).close()
        code, body, _ = http("GET", f"http://127.0.0.1:{icp}/thermostat/telemetry/thermostatwf/setpoint/thermo-001?value=24")
        assert code == 202, body
        assert d.request("GET", "/devices/thermo-001")[1]["attributes"]["targettemperature"] == 24.0

        # start: back to Running, data flows again
        assert d.request("POST", "/control/start")[0] == 202
        status = d.wait_state("Running")
        rest = listener_port(status, "restin")
        code, body, _ = http("POST", f"http://127.0.0.1:{rest}/devices/thermo-001/telemetry", {"temperature": 21.0})
        assert code == 200 and body["counter"] == 2

        # stop: listeners and input commands closed, admin API up; then start again
        assert d.request("POST", "/control/stop")[0] == 202
        d.wait_state("Stopped")
        code, body = d.request("POST", "/control/stop")
        assert code == 409 and body["error"]["code"] == "DEP1018"
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", icp), timeout=1).close()
        assert d.request("POST", "/control/start")[0] == 202
        status = d.wait_state("Running")
        assert status["counters"]["processed"] == 3  # two telemetry messages + one input command

        events = d.request("GET", "/events?limit=100")[1]
        walked = [e["to"] for e in reversed(events)]
        assert walked == ["StartingRuntime", "Initializing", "Starting", "Running", "Pausing", "Paused",
                          "Starting", "Running", "Stopping", "Stopped", "Starting", "Running"]

        started = time.monotonic()
        assert d.terminate(timeout=10) == 0
        assert time.monotonic() - started < 10
    logs = d.json_lines()
    changes = [(line.get("previous"), line.get("state")) for line in logs if line.get("event") == "state_changed"]
    assert changes[-1] == ("Stopping", "Stopped")
    with sqlite3.connect(data / "runtime.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert db.execute("SELECT count(*) FROM messages").fetchone()[0] == 3
        assert db.execute("SELECT to_state FROM events ORDER BY seq DESC LIMIT 1").fetchone()[0] == "Stopped"


def test_admin_api_needs_the_token_and_never_logs_it(tmp_path: Path) -> None:
    with Daemon(tmp_path / "data", "--listener-port", "restin=0", "--input-command-port", "0") as d:
        d.wait_state("Running")
        code, body = d.request("GET", "/status", token=None)
        assert code == 401 and body["error"]["code"] == "unauthorized"
        code, body = d.request("POST", "/control/pause", token="wrong-" + d.token)
        assert code == 401
        assert d.request("GET", "/status")[1]["state"] == "Running"  # nothing happened
        code, body = d.request("POST", "/control/explode")
        assert code == 404 and body["error"]["code"] == "unknown_verb"
        code, body = d.request("GET", "/messages?limit=abc")
        assert code == 400 and body["error"]["code"] == "bad_limit"
        code, body = d.request("PUT", "/devices/x1", {"deviceConfiguration": "nope"})
        assert code == 400 and body["error"]["code"] == "unknown_device_configuration"
        assert d.request("PUT", "/devices/x1", {"deviceConfiguration": "thermostat", "accessKey": "s3cret"})[0] == 201
        dev = d.request("GET", "/devices/x1")[1]
        assert "s3cret" not in str(dev) and dev["hasAccessKey"] is True
        assert d.request("DELETE", "/devices/x1")[0] == 204
        assert d.request("GET", "/devices/x1")[0] == 404
        text = "\n".join(d.lines)
    assert d.token not in text and "s3cret" not in text
    assert any(line.get("event") == "admin_unauthorized" for line in d.json_lines())


def test_bad_solution_gives_failed_to_initialize_and_reload_recovers(tmp_path: Path) -> None:
    solution = tmp_path / "solution.yaml"
    solution.write_text("solution:\n  key: broken\n  listeners:\n    - key: r1\n      listenerType: rest\n")
    with Daemon(tmp_path / "data", "--solution", str(solution)) as d:
        status = d.wait_state("FailedToInitialize")
        assert "solution.planner" in status["reason"] or "listenOnPort" in status["reason"]
        events = d.request("GET", "/events")[1]
        assert events[0]["to"] == "FailedToInitialize" and events[0]["reason"] == status["reason"]
        assert http("GET", d.base + "/health")[0] == 200
        assert http("GET", d.base + "/ready")[0] == 503
        good = Path(__file__).resolve().parents[2] / "runtime" / "demo" / "solution.yaml"
        solution.write_text(good.read_text().replace("listenOnPort: 8180", "listenOnPort: 0")
                            .replace("inputCommandPort: 8182", "inputCommandPort: 0"))
        assert d.request("POST", "/control/reload")[0] == 202
        d.wait_state("Running")


def test_busy_port_gives_failed_to_start_naming_the_port(tmp_path: Path) -> None:
    port = free_port()
    with socket.socket() as blocker:
        blocker.bind(("0.0.0.0", port))
        blocker.listen()
        with Daemon(tmp_path / "data", "--listener-port", f"restin={port}", "--input-command-port", "0") as d:
            status = d.wait_state("FailedToStart")
            assert str(port) in status["reason"] and "restin" in status["reason"]
            code, _body = d.request("POST", "/control/pause")
            assert code == 409
    # the port is free again: start recovers (a fresh daemon would also do)


def test_reload_swaps_a_valid_solution_and_keeps_the_old_one_on_a_bad_one(tmp_path: Path) -> None:
    demo = Path(__file__).resolve().parents[2] / "runtime" / "demo" / "solution.yaml"
    solution = tmp_path / "solution.yaml"
    solution.write_text(demo.read_text())
    env = {"NUVIOT_ADMIN_TOKEN": ""}  # unset: the daemon generates one into the data dir
    d = Daemon(tmp_path / "data", "--solution", str(solution), "--listener-port", "restin=0",
               "--input-command-port", "0", env=env)
    with d:
        token_file = tmp_path / "data" / "admin-token"
        deadline = time.monotonic() + 10
        while not token_file.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert oct(token_file.stat().st_mode & 0o777) == "0o600"
        d.token = token_file.read_text().strip()
        d.wait_state("Running")

        # a broken version: the old solution keeps running, the reason is reported, no transition
        events_before = len(d.request("GET", "/events")[1])
        solution.write_text(demo.read_text().replace("messageDefinition: telemetry", "messageDefinition: nosuch"))
        assert d.request("POST", "/control/reload")[0] == 202
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            status = d.request("GET", "/status")[1]
            if status.get("lastReload"):
                break
            time.sleep(0.05)
        assert status["state"] == "Running" and status["lastReload"]["ok"] is False
        assert "nosuch" in status["lastReload"]["error"]
        assert len(d.request("GET", "/events")[1]) == events_before

        # a valid new version: swapped through Initializing -> Starting -> Running
        solution.write_text(demo.read_text().replace('version: "1.0"', 'version: "1.1"'))
        assert d.request("POST", "/control/reload")[0] == 202
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            status = d.request("GET", "/status")[1]
            if status["state"] == "Running" and status["solution"]["version"] == "1.1":
                break
            time.sleep(0.05)
        assert status["solution"]["version"] == "1.1" and status["lastReload"]["ok"] is True
        assert [e["to"] for e in d.request("GET", "/events?limit=3")[1]] == ["Running", "Starting", "Initializing"]

        code, metrics, _ = http("GET", d.base + "/metrics")
        assert code == 200
        assert 'nuviot_instance_state{state="Running"} 1.0' in metrics
        assert 'nuviot_state_transitions_total{from_state="Initializing",to_state="Starting"}' in metrics
        assert "nuviot_messages_processed_total" in metrics
