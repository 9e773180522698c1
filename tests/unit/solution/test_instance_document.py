"""NuvIoT's DeploymentInstance document (``GET {api}/api/deployment/instance/full``) as a solution source.

Names from LagoVista/Deployments ``src/LagoVista.IoT.Deployment.Models/DeploymentInstance.cs`` (and
``DeploymentInstanceCredentials.cs``), LagoVista/DeviceManagement ``AttributeValue.cs`` and
``DeviceRepository.cs``, LagoVista/Core ``Validation/InvokeResult.cs`` (the ``{Result, Successful, Errors}``
wrapper the controller serialises). The fixture's solution is LagoVista/StarterKit ``OrgInitializer``'s
"Example - Motion" app.
"""

from __future__ import annotations

import argparse
import copy
import io
import json
from pathlib import Path
from typing import Any

import pytest

from runtime.core.errors import SolutionError
from runtime.core.solution import codes
from runtime.core.solution.enums import DeploymentType, QueueType, RepositoryType, WorkingStorage
from runtime.core.solution.loader import load_solution_report
from runtime.settings import add_run_arguments, load_settings
from runtime.solution_cli import import_main, validate_main

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "nuviot-deployment-instance.json"


def fixture() -> dict[str, Any]:
    return json.loads(FIXTURE.read_bytes())


def load(tree: Any) -> Any:
    return load_solution_report(json.dumps(tree).encode(), source="t", env={})


def test_the_invoke_result_and_the_bare_instance_both_load_with_the_instance_settings() -> None:
    for tree in (fixture(), fixture()["Result"]):
        loaded = load(tree)
        assert loaded.form == "nuviot-instance" and loaded.warnings == ()
        inst = loaded.document.instance
        assert (inst.key, inst.id) == ("examplemotion", "1A2B3C4D5E6F47A8B9C0D1E2F3A4B5C6")
        assert inst.deployment_type is DeploymentType.MANAGED and inst.queue_type is QueueType.IN_MEMORY
        assert inst.working_storage is WorkingStorage.LOCAL and inst.time_zone == "Eastern Standard Time"
        assert (inst.input_command_port, inst.input_command_ssl, inst.input_command_anonymous) == (8082, False, False)
        assert inst.input_command_basic_auth_user_name == "motionops"
        assert inst.input_command_basic_auth_password is not None
        assert inst.input_command_basic_auth_password.get_secret_value() == "Sesame-4-motion"
        assert inst.settings_values == {"example1": "45"}
        assert inst.device_repository.key == "trial"
        assert inst.device_repository.repository_type is RepositoryType.LOCAL
        assert [c.user_id for c in inst.credentials] == ["svc-dashboard"]
        sol = loaded.document.solution
        assert sol.key == "examplemotion" and sol.planner.key == "exampleplanner"
        assert [r.key for r in sol.device_configurations[0].routes] == ["examplemotion"]


def test_a_repository_given_only_as_a_header_and_null_setting_values_are_read() -> None:
    tree = fixture()
    inst = tree["Result"]
    inst["DeviceRepository"] = {"Id": "5A6B7C8D9E0F41A2B3C4D5E6F7A8B9C0", "Text": "Trial repo"}
    inst["SettingsValues"] = [{"Key": "example2", "Value": None}]
    doc = load(tree).document
    assert (doc.instance.device_repository.key, doc.instance.device_repository.name) == (
        "5A6B7C8D9E0F41A2B3C4D5E6F7A8B9C0", "Trial repo")
    assert doc.instance.settings_values == {"example2": ""}


def test_an_unsuccessful_answer_and_a_solution_without_value_say_what_is_wrong() -> None:
    tree = {"Result": {"Key": "x"}, "Successful": False,
            "Errors": [{"ErrorCode": "DEP1001", "Message": "instance not found"}]}
    with pytest.raises(SolutionError) as exc:
        load(tree)
    assert any(p.code == codes.EXPORT_SERVER_ERROR and "DEP1001 instance not found" in p.message
               for p in exc.value.problems)

    tree = fixture()
    del tree["Result"]["Solution"]["Value"]
    with pytest.raises(SolutionError) as exc:
        load(tree)
    first = exc.value.problems[0]
    assert first.path == "Solution" and first.code == codes.EXPORT_UNRESOLVED
    assert "/api/deployment/instance/full" in first.message


def settings_for(argv: list[str], env: dict[str, str]) -> Any:
    parser = argparse.ArgumentParser()
    add_run_arguments(parser)
    return load_settings(parser.parse_args(argv), env)


@pytest.mark.parametrize(
    ("argv", "env", "doc_value", "expected"),
    [
        (["--queue-type", "kafka"], {"NUVIOT_QUEUE_TYPE": "RabbitMQ"}, "servicebus", ("kafka", "flag")),
        ([], {"NUVIOT_QUEUE_TYPE": "RabbitMQ"}, "servicebus", ("rabbitmq", "environment")),
        ([], {}, "servicebus", ("servicebus", "document")),
        ([], {}, None, ("inmemory", "default")),
    ],
)
def test_queue_type_follows_flag_environment_document_default(
    argv: list[str], env: dict[str, str], doc_value: str | None, expected: tuple[str, str]
) -> None:
    tree = copy.deepcopy(fixture())
    if doc_value is None:
        del tree["Result"]["QueueType"]
    else:
        tree["Result"]["QueueType"] = {"Id": doc_value, "Text": doc_value}
    doc = load(tree).document
    assert tuple(settings_for(argv, env).instance_status(doc)["queueType"].values()) == expected


def test_document_cloud_storage_without_a_cloud_url_works_locally_and_says_so() -> None:
    tree = fixture()
    tree["Result"]["WorkingStorage"] = {"Id": "cloud", "Text": "Cloud"}
    doc = load(tree).document
    status = settings_for([], {}).instance_status(doc)
    assert status["workingStorage"]["value"] == "local" and "NUVIOT_CLOUD_URL" in status["workingStorage"]["note"]
    with_url = settings_for(["--cloud-url", "http://127.0.0.1:9"], {})
    assert with_url.effective_working_storage(doc) is WorkingStorage.CLOUD
    assert settings_for(["--input-command-port", "9000"], {}).effective_input_command_port(doc) == 9000
    assert settings_for([], {}).effective_input_command_port(doc) == 8082


def test_validate_and_import_take_the_instance_document(tmp_path: Path) -> None:
    out = io.StringIO()
    assert validate_main(str(FIXTURE), out=out) == 0
    assert "ok (nuviot-instance; solution examplemotion" in out.getvalue()
    target = tmp_path / "native.yaml"
    out = io.StringIO()
    assert import_main(str(FIXTURE), str(target), out=out) == 0, out.getvalue()
    text = target.read_text()
    assert "inputCommandBasicAuthPasswordRef: env:" in text and "Sesame-4-motion" not in text
    assert "timeZone: Eastern Standard Time" in text and "example1: '45'" in text


def test_instance_settings_the_runtime_does_not_act_on_are_warned_with_their_path() -> None:
    tree = fixture()
    inst = tree["Result"]
    inst["InputCommandSSL"] = True
    inst["QueueType"] = {"Id": "kafka", "Text": "Kafka"}
    inst["DeviceRepository"]["Value"]["RepositoryType"] = {"Id": "nuviot", "Text": "NuvIoT"}
    warnings = {(w.path, w.code) for w in load(tree).warnings}
    assert warnings == {
        ("instance.inputCommandSSL", codes.INSTANCE_NOT_APPLIED),
        ("instance.queueType", codes.INSTANCE_NOT_APPLIED),
        ("instance.deviceRepository.repositoryType", codes.INSTANCE_NOT_APPLIED),
    }
    inst["QueueType"] = {"Id": "rabbitmq", "Text": "RabbitMQ"}  # the Cluster edition's queue: no warning
    assert ("instance.queueType", codes.INSTANCE_NOT_APPLIED) not in {(w.path, w.code) for w in load(tree).warnings}


def test_validate_reports_a_script_that_would_fail_the_start(tmp_path: Path) -> None:
    tree = fixture()
    route = tree["Result"]["Solution"]["Value"]["DeviceConfigurations"][0]["Value"]["Routes"][0]
    route["PipelineModules"][2]["Module"]["Value"]["Attributes"][0]["OnSetScript"] = (
        "function onSet(value) { Attributes.motionstatus = ; }")
    source = tmp_path / "instance.json"
    source.write_text(json.dumps(tree))
    out = io.StringIO()
    assert validate_main(str(source), out=out) == 1
    assert "motionstatus" in out.getvalue() and "SyntaxError" in out.getvalue()
