"""``nuviot-runtime test-message``: the dry run against a solution file that no daemon has loaded."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "runtime" / "demo" / "solution.yaml"
MOTION = REPO / "tests" / "fixtures" / "nuviot-motionhandler-2018.json"

pytestmark = pytest.mark.e2e


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "runtime", "test-message", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=60)


def test_demo_message_prints_each_stage_and_exits_0(tmp_path: Path) -> None:
    payload = tmp_path / "msg.json"
    payload.write_text(json.dumps({"temperature": 22.5, "humidity": 40, "mode": "heat"}))
    done = cli("--solution", str(DEMO), "--listener", "restin", "--path", "/devices/thermo-001/telemetry",
               "--payload", f"@{payload}")
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert [line.split()[0] for line in lines[:-1]] == [
        "planner", "sentinel", "inputtranslator", "inputtranslator", "inputtranslator", "workflow", "workflow",
        "workflow", "workflow", "workflow", "workflow", "outputtranslator", "transmitter"]
    assert "temperature (decimal) = 22.5" in done.stdout
    assert 'thermostatwf: state machine heater: null -> "heating"' in done.stdout
    assert "would send ackmsg with originallistener (originallistener)" in done.stdout
    assert lines[-1].startswith("result: Completed (none: no device state saved")


def test_a_nuviot_export_with_a_device_given_on_the_command_line_and_json_output() -> None:
    done = cli("--solution", str(MOTION), "--listener", "rest6010", "--path", "/sensor/md001/motion001",
               "--header", "Content-Type=application/json", "--device", "md001=genericmd", "--json",
               "--payload", json.dumps({"motion": "true", "level": 2, "temperature": 21.5, "itemstatus": "ison"}))
    assert done.returncode == 0, done.stdout + done.stderr
    answer = json.loads(done.stdout)
    assert answer["ok"] and answer["deviceId"] == "md001"
    assert answer["stages"][-1]["output"]["wouldSend"][0]["payload"] == '{"status":"ok","process":1}'


def test_the_datastream_step_shows_the_row_it_would_write() -> None:
    """The 2018 export's hottub route ends in a data-stream step (simpletable): the dry run names the row."""
    message = {"status": "ok", "setpoint": 38, "temperature": 37.5, "heater": "on"}
    args = ("--solution", str(MOTION), "--listener", "rest6010", "--path", "/sensor/ht001/hottubmsg01",
            "--header", "Content-Type=application/json", "--device", "ht001=hottub", "--payload", json.dumps(message))
    done = cli(*args, "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    stages = json.loads(done.stdout)["stages"]
    assert [s["stage"] for s in stages][-4:] == ["workflow", "datastream", "outputtranslator", "transmitter"]
    assert stages[-3]["output"]["wouldWrite"] == [
        {"stream": "simpletable", "op": "add", "row": {"deviceId": "ht001", "temperature": 37.5}}]
    text = cli(*args)
    assert 'would add a row of data stream simpletable: {"deviceId":"ht001","temperature":37.5}' in text.stdout


def test_a_stop_exits_1_and_bad_arguments_exit_2(tmp_path: Path) -> None:
    done = cli("--solution", str(DEMO), "--listener", "restin", "--path", "/devices/ghost/telemetry",
               "--payload", "{}")
    assert done.returncode == 1
    assert "planner           STOPPED  CouldNotFindDevice: device 'ghost' is not in the device repository" in done.stdout
    done = cli("--solution", str(DEMO), "--listener", "nope", "--path", "/x", "--payload", "{}")
    assert done.returncode == 2 and "test-message: unknown_listener: no listener 'nope'" in done.stderr
    done = cli("--solution", str(tmp_path / "missing.yaml"), "--listener", "restin", "--path", "/x")
    assert done.returncode == 2 and "cannot read the file" in done.stderr and not done.stdout
    done = cli("--solution", str(DEMO), "--listener", "restin", "--path", "/x", "--topic", "t")
    assert done.returncode == 2 and "not allowed with argument" in done.stderr


def test_an_mqtt_solution_names_the_mqtt_transmitter_and_connects_to_no_broker() -> None:
    # MQTT_PORT points at a port nobody listens on: the dry run never connects anywhere
    example = REPO / "examples" / "mqtt-telemetry.yaml"
    done = subprocess.run([sys.executable, "-m", "runtime", "test-message", "--solution", str(example),
                           "--listener", "mqttin", "--topic", "devices/fan-001/telemetry", "--payload",
                           '{"temperature": 27.5, "humidity": 55, "fan": "auto"}'],
                          cwd=REPO, capture_output=True, text=True, timeout=60, env={**os.environ, "MQTT_PORT": "1"})
    assert done.returncode == 0, done.stdout + done.stderr
    assert 'fanwf: state machine mode: null -> "automatic"' in done.stdout
    assert ("would send setfan with mqttout (mqttclient) to topic devices/fan-001/commands/setfan"
            in done.stdout)
