"""Issue 12, done-when 1: the DeploymentInstance document a NuvIoT container downloads runs unchanged.

``tests/fixtures/nuviot-deployment-instance.json`` is what ``GET {api}/api/deployment/instance/full`` answers
(LagoVista/Deployments ``InstanceRuntimeController.GetFullInstanceAsync``: ``InvokeResult<DeploymentInstance>``
serialised by Newtonsoft, nulls left out), with the names of ``LagoVista.IoT.Deployment.Models/
DeploymentInstance.cs``, ``DeploymentInstanceCredentials.cs`` and LagoVista/DeviceManagement
``AttributeValue.cs``/``DeviceRepository.cs``. Its solution is the "Example - Motion" app NuvIoT creates for
every new organisation (LagoVista/StarterKit ``Managers/OrgInitializer.cs``: ``AddDefaultMessage``,
``AddDeviceWorkflow``, ``AddPlanner``, ``AddPort80Listener``, ``CreateSolutionAsync``, ``CreateInstanceAsync``):
planner ``/api/{messageidinpath}/*`` and ``/api/*/{deviceidinpath}``, message ``motion`` with a String field
``motion``, workflow input and attribute ``motionstatus`` with the starter app's own onSet script.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import http as call
from tests.support.daemon import Daemon
from tests.support.instance_api import serve_instance

pytestmark = pytest.mark.e2e

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "nuviot-deployment-instance.json"


@pytest.fixture
def instance_api() -> Iterator[tuple[str, list[str]]]:
    """NuvIoT's endpoint, answering the fixture to the instance's access key only."""
    with serve_instance(FIXTURE.read_bytes(), "application/json; charset=utf-8",
                        access_key="instance-key-1") as served:
        yield served


def test_the_full_instance_document_runs_and_its_settings_show_with_their_source(
    tmp_path: Path, instance_api: tuple[str, list[str]]
) -> None:
    api, seen = instance_api
    d = Daemon(tmp_path, "--solution", f"{api}/api/deployment/instance/full",
               "--listener-port", "exampleport80=0", "--input-command-port", "0",
               env={"NUVIOT_ACCESS_KEY": "instance-key-1", "NUVIOT_QUEUE_TYPE": "InMemory"})
    with d:
        status = d.wait_state("Running")
        assert seen and seen[0].startswith("/api/deployment/instance/full")
        assert status["instanceId"] == "examplemotion"
        assert status["solution"]["key"] == "examplemotion"
        inst = status["instance"]
        assert inst["instanceId"] == {"value": "examplemotion", "source": "document"}
        # flag > environment > document > default
        assert inst["inputCommandPort"] == {"value": 0, "source": "flag"}  # the document says 8082
        assert inst["queueType"] == {"value": "inmemory", "source": "environment"}
        assert inst["deploymentType"] == {"value": "managed", "source": "document"}
        assert inst["edition"] == {"value": "container", "source": "document"}
        assert inst["timeZone"] == {"value": "Eastern Standard Time", "source": "document", "zone": "America/New_York"}
        assert inst["logStorage"] == {"value": "local", "source": "document"}
        assert inst["workingStorage"] == {"value": "local", "source": "document"}
        assert inst["inputCommandAnonymous"] == {"value": False, "source": "document"}
        assert inst["inputCommandUser"] == {"value": "motionops", "source": "document"}
        assert inst["credentials"] == {"value": 1, "source": "document"}
        assert inst["deviceRepository"]["value"]["key"] == "trial"
        assert inst["settings"] == {"example1": {"value": "45", "source": "document"},
                                    "example2": {"value": "32", "source": "default"}}
        assert "Sesame-4-motion" not in json.dumps(status) and "dashboard-secret-1" not in "\n".join(d.lines)

        # the starter app's device and its sample message (OrgInitializer AddDefaultMessage)
        assert d.request("PUT", "/devices/dev001", {"deviceConfiguration": "examplemotion", "name": "Motion Sensor 1"})[0] == 201
        rest = f"http://127.0.0.1:{status['listeners'][0]['port']}"
        code, body, _ = call("POST", f"{rest}/api/motion/dev001", {"motion": "on"},
                             {"Content-Type": "application/json"})
        assert code in (200, 202), body
        device = d.request("GET", "/devices/dev001")[1]
        assert device["attributes"]["motionstatus"] == "on"
        records = d.request("GET", "/messages?deviceId=dev001&limit=1")[1]
        assert records[0]["messageId"] == "motion" and records[0]["status"].startswith("Completed")
        # Newtonsoft's reading (single quotes, a trailing comma) and .NET's text for a boolean in a String
        # field: the starter app's onSet compares with 'True' and reads IoTDevice.name
        code, body, _ = call("POST", f"{rest}/api/motion/dev001", b"{'motion': true,}",
                             {"Content-Type": "application/json"})
        assert code in (200, 202), body
        assert d.request("GET", "/devices/dev001")[1]["attributes"]["motionstatus"] == "True"

        # the input-command server asks for the document's Basic credentials
        code, _, headers = call("GET", f"http://127.0.0.1:{status['inputCommandPort']}/examplemotion/examplemotion/"
                                       "examplemotion/nosuch/dev001")
        assert code == 401 and "Basic" in headers.get("WWW-Authenticate", "")


def test_without_message_id_parsers_the_only_route_takes_every_message(tmp_path: Path) -> None:
    """NuvIoT does not require message-id parsers (DeviceConfiguration.FindRoute falls back to the default
    route); with one message the runtime takes its route."""
    doc = json.loads(FIXTURE.read_bytes())
    doc["Result"]["Solution"]["Value"]["Planner"]["Value"]["MessageTypeIdParsers"] = []
    source = tmp_path / "instance.json"
    source.write_text(json.dumps(doc))
    with Daemon(tmp_path / "data", "--solution", str(source), "--listener-port", "exampleport80=0",
                "--input-command-port", "0") as d:
        status = d.wait_state("Running")
        assert d.request("PUT", "/devices/dev002", {"deviceConfiguration": "examplemotion"})[0] == 201
        rest = f"http://127.0.0.1:{status['listeners'][0]['port']}"
        code, body, _ = call("POST", f"{rest}/api/anything/dev002", {"motion": "off"})
        assert code in (200, 202), body
        assert d.request("GET", "/devices/dev002")[1]["attributes"]["motionstatus"] == "off"
