"""Issue 19: the image built from the Dockerfile as it is, run as its user with its environment, entrypoint
and command: ready, healthy by its own HEALTHCHECK, processing the demo, taking an input command, serving
the built-in MQTT listener, started by NuvIoT's `docker run` line, private data, no root, SIGTERM exit 0."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import aiomqtt
import pytest

from tests.image.checks import (
    Ports,
    admin_token,
    assert_nothing_runs_as_root,
    assert_private_data,
    attribute,
    image_uid,
    request,
    stops_on_sigterm,
    wait_ready,
)
from tests.image.harness import REPO, Container, Image, Podman
from tests.support.instance_api import serve_instance
from tests.support.net import free_port

HERE = Path(__file__).resolve().parent
DEMO = REPO / "runtime" / "demo" / "solution.yaml"
MIB = 1024 * 1024
# The final image on the official python:3.12-slim is about 200 MiB; the Debian stand-in base is larger
# than the official one. What the Dockerfile adds (mosquitto, the venv, the user) is the part kept down.
MAX_ADDED_MIB = 120
MAX_TOTAL_MIB = 350


# -- the image itself ---------------------------------------------------------------------------------


def test_image_is_lean_and_holds_the_whole_package(image: Image, podman: Podman) -> None:
    total, added = image.size / MIB, (image.size - image.base_size) / MIB
    print(f"\nimage size {total:.0f} MiB; {added:.0f} MiB above the base {image.base}")
    assert added <= MAX_ADDED_MIB, f"the Dockerfile adds {added:.0f} MiB (limit {MAX_ADDED_MIB})"
    assert total <= MAX_TOTAL_MIB, f"the image is {total:.0f} MiB (limit {MAX_TOTAL_MIB})"
    assert image_uid(image) == 10001
    with podman.image_root(image.tag) as root:
        path_dirs = next(v for k, v in image.env.items() if k == "PATH").split(":")
        compilers = [f"{d}/{cc}" for d in path_dirs for cc in ("gcc", "cc", "c++", "g++", "make", "ld")
                     if (root / d.lstrip("/") / cc).exists()]
        assert compilers == [], f"compilers in the image: {compilers}"
        leftovers = [p for p in ("root/.cache", "wheels", "src", "opt/venv/bin/pip") if (root / p).exists()]
        leftovers += [str(p.relative_to(root)) for pattern in
                      ("var/cache/apt/*.bin", "var/cache/apt/archives/*.deb", "var/lib/apt/lists/*_Packages*",
                       "opt/**/*.whl", "data/*")
                      for p in root.glob(pattern)]
        assert leftovers == [], f"caches or build leftovers in the image: {leftovers}"
        (package,) = root.glob("opt/venv/lib/python3*/site-packages/runtime")
        installed = {p.relative_to(package).as_posix() for p in package.rglob("*") if p.is_file()}
        data_dir = root / image.volumes[0].lstrip("/")
        assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700 and data_dir.stat().st_uid == 10001
        passwd = (root / "etc" / "passwd").read_text()
        assert any(line.split(":")[2] == "10001" for line in passwd.splitlines())
        assert (root / "usr" / "sbin" / "mosquitto").exists()
    # every data file of the package (demo solution, SQL, JS, static pages...) is in the installed package
    wanted = {p.relative_to(REPO / "runtime").as_posix() for p in (REPO / "runtime").rglob("*")
              if p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts}
    assert wanted, "expected package data under runtime/"
    missing = wanted - installed
    assert not missing, f"package data missing from the image (pyproject package-data?): {sorted(missing)}"


# -- running it -----------------------------------------------------------------------------------------


def test_demo_runs_as_the_image_user_healthy_private_and_stops_on_sigterm(
        image: Image, run_image: Callable[..., Container]) -> None:
    uid = image_uid(image)
    ports = Ports("restin")
    c = run_image(env=ports.env())  # the image's CMD: the packaged demo
    wait_ready(c, ports)
    assert json.loads(c.lines[0])["event"] == "entrypoint_started"

    health = c.healthcheck()
    assert health.returncode == 0, f"HEALTHCHECK failed: {health.stdout}{health.stderr}"

    # one demo message, end to end: the REST reply is the workflow's "ack" outgoing message
    code, reply = request("POST", f"http://127.0.0.1:{ports.listeners['restin']}/devices/thermo-001/telemetry",
                          {"temperature": 18.5, "humidity": 40, "mode": "heat"}, timeout=10)
    assert code == 200 and reply["status"] == "ok" and reply["counter"] == 1, reply
    # an input command, then the device's attribute through the admin API (token from the volume)
    code, _ = request("GET", f"http://127.0.0.1:{ports.commands}/thermostat/telemetry/thermostatwf/setpoint/"
                             "thermo-001?value=21.5", timeout=10)
    assert code in (200, 202), code  # accepted: the command runs through the device's workflow
    token = admin_token(c)
    assert attribute(ports, token, "thermo-001", "targettemperature", 21.5) == 21.5, c.output()
    code, status = request("GET", ports.admin_url + "/status", token=token)
    assert code == 200 and status["state"] == "Running" and status["solution"]["key"] == "demo"

    # the console page and its static files come from the package data installed in the image
    page = urllib.request.urlopen(urllib.request.Request(ports.admin_url + "/ui"), timeout=5)
    assert page.status == 200 and b"<html" in page.read().lower()
    script = urllib.request.urlopen(urllib.request.Request(ports.admin_url + "/ui/static/app.js"), timeout=5)
    assert script.status == 200 and script.read()

    assert_nothing_runs_as_root(c, uid, {"nuviot-runtime"})
    assert_private_data(c, uid)
    stops_on_sigterm(c)
    assert_private_data(c, uid)
    logged = [json.loads(line) for line in c.lines if line.startswith("{")]
    assert any(e.get("event") == "state_changed" and e.get("to") == "Stopped" for e in logged) or \
        any(e.get("event") == "runtime_exited" for e in logged), c.output()


def test_healthcheck_fails_when_the_admin_api_does_not_answer(
        image: Image, run_image: Callable[..., Container]) -> None:
    ports = Ports("restin")
    c = run_image(env=ports.env())
    wait_ready(c, ports)
    wrong = c.exec(["env", f"NUVIOT_ADMIN_PORT={free_port()}", *image.healthcheck[1:]])
    assert wrong.returncode != 0  # the check can fail: it really asks the admin API
    stops_on_sigterm(c)


def test_builtin_mqtt_listener_runs_mosquitto_inside_as_the_image_user(
        image: Image, run_image: Callable[..., Container]) -> None:
    uid = image_uid(image)
    ports = Ports("builtin")
    c = run_image(env={**ports.env(), "NUVIOT_SOLUTION": "/solutions/builtin-mqtt.yaml"},
                  files={"/solutions/builtin-mqtt.yaml": HERE / "fixtures" / "builtin-mqtt.yaml"})
    wait_ready(c, ports)
    token = admin_token(c)
    status = request("GET", ports.admin_url + "/status", token=token)[1]
    builtin = next(lst for lst in status["listeners"] if lst["key"] == "builtin")
    assert builtin["port"] == ports.listeners["builtin"], builtin

    async def publish() -> None:
        async with aiomqtt.Client("127.0.0.1", builtin["port"], identifier="image-device-m1") as device:
            await device.publish("meters/m1/reading", json.dumps({"value": 42}), qos=1)

    asyncio.run(publish())
    assert attribute(ports, token, "m1", "last", 42) == 42, c.output()
    assert_nothing_runs_as_root(c, uid, {"nuviot-runtime", "mosquitto"})
    assert_private_data(c, uid)
    stops_on_sigterm(c)
    assert_private_data(c, uid)  # with what mosquitto wrote as it stopped (its persistence file)


@pytest.fixture
def nuviot_api() -> Iterator[tuple[str, list[str]]]:
    """NuvIoT's GET /api/deployment/instance/full on loopback, serving the packaged demo solution."""
    with serve_instance(DEMO.read_bytes(), "application/yaml") as served:
        yield served


def test_nuviot_start_line(image: Image, run_image: Callable[..., Container],
                           nuviot_api: tuple[str, list[str]]) -> None:
    """reference/nuviot-runtime.md §1.5: `docker run -e InstanceId= -e OrgId= -e VersionId= -e HostId=
    -e Environment= -e DeploymentType= -e DeploymentConfig= -e QueueType= -e AccessKey= image`, with the
    solution fetched from NuvIoT's API (here a local server; NUVIOT_API_URL says where)."""
    api, seen = nuviot_api
    key = "nuviot-access-key-" + os.urandom(6).hex()
    ports = Ports("restin")
    env = {"InstanceId": "inst-img-1", "OrgId": "org-7", "VersionId": "1.0", "HostId": "host-3",
           "Environment": "Production", "DeploymentType": "Managed", "DeploymentConfig": "SingleInstance",
           "QueueType": "InMemory", "AccessKey": key, "NUVIOT_API_URL": api, **ports.env()}
    c = run_image(env=env)
    wait_ready(c, ports)
    token = admin_token(c)
    code, status = request("GET", ports.admin_url + "/status", token=token)
    assert code == 200 and status["state"] == "Running" and status["instanceId"] == "inst-img-1", status
    assert seen and seen[0].startswith("/api/deployment/instance/full") and seen[0].endswith(f"Bearer {key}")
    first = json.loads(c.lines[0])
    assert (first["mode"], first["instanceId"], first["deploymentType"], first["accessKey"]) == \
        ("managed", "inst-img-1", "Managed", "set")
    code, reply = request("POST", f"http://127.0.0.1:{ports.listeners['restin']}/devices/thermo-002/telemetry",
                          {"temperature": 25.0, "humidity": 50, "mode": "heat"}, timeout=10)
    assert code == 200 and reply["status"] == "ok", reply
    stops_on_sigterm(c)
    assert key not in "\n".join(c.lines + c.stderr)  # the access key is never logged
    assert key not in "".join(p.read_text(errors="replace") for p in c.volume.rglob("*.json*") if p.is_file())


def test_refuses_a_managed_start_without_its_access_key(image: Image,
                                                         run_image: Callable[..., Container]) -> None:
    c = run_image(env={"InstanceId": "i", "DeploymentType": "managed", "NUVIOT_API_URL": "http://127.0.0.1:9"})
    code = c.proc.wait(timeout=60)  # type: ignore[union-attr]
    assert code == 2, c.output()
    assert len(c.stderr) == 1 and "AccessKey" in c.stderr[0], c.stderr
