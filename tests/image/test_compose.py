"""Issue 19: examples/docker-compose.yml agrees with the image it builds (EXPOSE, VOLUME, HEALTHCHECK, USER),
and its runtime service, with its environment and files, runs in that image against a real broker."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import aiomqtt
import yaml

from tests.image.checks import Ports, admin_token, request, stops_on_sigterm, wait_ready
from tests.image.harness import REPO, Container, Image
from tests.support.mosquitto import Mosquitto

COMPOSE = REPO / "examples" / "docker-compose.yml"


def runtime_service() -> tuple[dict[str, Any], dict[str, Any]]:
    doc = yaml.safe_load(COMPOSE.read_text())
    return doc, doc["services"]["runtime"]


def volumes(service: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """(source, target, read-only) of each short-syntax volume entry."""
    out = []
    for entry in service.get("volumes", []):
        source, target, *mode = str(entry).split(":")
        out.append((source, target, "ro" in mode))
    return out


def seconds(duration: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    return sum(float(n) * units[u] for n, u in re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", duration))


def test_compose_agrees_with_the_image(image: Image) -> None:
    doc, rt = runtime_service()
    services = doc["services"]
    build = rt["build"] if isinstance(rt["build"], dict) else {"context": rt["build"]}
    dockerfile = (COMPOSE.parent / build["context"] / build.get("dockerfile", "Dockerfile")).resolve()
    assert dockerfile == REPO / "Dockerfile", f"the runtime is built from {dockerfile}"
    # USER: the image's non-root user, not overridden
    assert "user" not in rt or str(rt["user"]).split(":")[0] == image.user.split(":")[0]
    assert image.user.split(":")[0] not in ("0", "root")
    # EXPOSE: every published container port is one the image exposes, and the admin API is published
    published = {int(str(p).rsplit(":", 1)[-1].split("/")[0]) for p in rt.get("ports", [])}
    assert published <= image.exposed, f"published {published}, the image exposes {image.exposed}"
    assert 8181 in published
    # VOLUME: the image's data volume is a named volume of this file; bind-mounted files exist, read-only
    mounted = volumes(rt)
    data = [(s, t) for s, t, _ in mounted if t == image.volumes[0]]
    assert data and data[0][0] in (doc.get("volumes") or {}), f"{image.volumes[0]} is not a named volume: {mounted}"
    for source, target, read_only in mounted:
        if source.startswith((".", "/")):
            assert (COMPOSE.parent / source).exists(), f"{source} (mounted at {target}) does not exist"
            assert read_only, f"{source} should be mounted read-only"
    env = {k: str(v) for k, v in (rt.get("environment") or {}).items()}
    assert env.get("NUVIOT_DATA_DIR", image.env["NUVIOT_DATA_DIR"]) == image.volumes[0]
    solution = env["NUVIOT_SOLUTION"]
    assert any(solution == t or solution.startswith(t.rstrip("/") + "/") for _, t, _ in mounted), solution
    # HEALTHCHECK: the image's own applies (not disabled; a compose test, if any, is the image's)
    check = rt.get("healthcheck") or {}
    assert not check.get("disable") and check.get("test") not in (["NONE"], "NONE")
    assert check.get("test") in (None, image.healthcheck), (check.get("test"), image.healthcheck)
    assert image.healthcheck and image.healthcheck[0] in ("CMD", "CMD-SHELL")
    # SIGTERM drains within 10 s: compose must wait at least that long before SIGKILL
    assert seconds(str(rt.get("stop_grace_period", "10s"))) >= 10
    # every host name the runtime is given is a service of this file
    assert set(rt.get("depends_on") or []) <= set(services)
    assert env["MQTT_HOST"] in services and urlsplit(env["NUVIOT_CONTROL_MQTT"]).hostname in services


def test_compose_runtime_service_runs_in_the_image(image: Image, run_image: Callable[..., Container],
                                                    mosquitto: Mosquitto) -> None:
    """The runtime service as compose starts it: its environment and its solution file, the `mosquitto`
    service name resolving to a real broker (on a free port here); a telemetry message in gives the
    workflow's fan command out."""
    _, rt = runtime_service()
    env = {k: str(v) for k, v in rt["environment"].items()}
    env["MQTT_PORT"] = str(mosquitto.port)  # compose's broker port is 1883; the test's broker has its own
    control = urlsplit(env["NUVIOT_CONTROL_MQTT"])
    env["NUVIOT_CONTROL_MQTT"] = f"{control.scheme}://{control.hostname}:{mosquitto.port}"
    ports = Ports()
    files = {target: (COMPOSE.parent / source).resolve() for source, target, _ in volumes(rt)
             if source.startswith((".", "/"))}
    c = run_image(env={**env, **ports.env()}, files=files, hosts={env["MQTT_HOST"]: mosquitto.host})
    wait_ready(c, ports)
    token = admin_token(c)
    code, status = request("GET", ports.admin_url + "/status", token=token)
    assert code == 200 and status["state"] == "Running", status
    assert status["instanceId"] == env["NUVIOT_INSTANCE_ID"] and status["solution"]["key"] == "mqtttelemetry"

    async def telemetry_gives_a_fan_command() -> dict[str, Any]:
        async with aiomqtt.Client(mosquitto.host, mosquitto.port, identifier="image-compose-fan") as client:
            await client.subscribe("devices/fan-001/commands/#", qos=1)
            async with asyncio.timeout(20):
                while True:  # the listener may still be subscribing: send until the command comes back
                    await client.publish("devices/fan-001/telemetry",
                                         json.dumps({"temperature": 31.5, "humidity": 55, "fan": "auto"}), qos=1)
                    try:
                        async with asyncio.timeout(1.5):
                            async for message in client.messages:
                                return json.loads(bytes(message.payload))  # type: ignore[arg-type]
                    except TimeoutError:
                        continue

    command = asyncio.run(telemetry_gives_a_fan_command())
    assert command.get("state") is True, command
    stops_on_sigterm(c)
