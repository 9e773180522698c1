"""NuvIoT's DeploymentInstance document: what ``GET {api}/api/deployment/instance/full`` returns.

LagoVista/Deployments ``InstanceRuntimeController.GetFullInstanceAsync`` serialises
``InvokeResult<DeploymentInstance>`` with Newtonsoft (``TypeNameHandling.Auto``, nulls left out):
``{"Result": {DeploymentInstance}, "Successful": true, "Errors": [], ...}``. The instance
(``LagoVista.IoT.Deployment.Models/DeploymentInstance.cs``) carries the full Solution in ``Solution.Value``
(``DeploymentInstanceManager.LoadFullInstanceAsync``), its device repository in ``DeviceRepository.Value``,
the settings values as ``SettingsValues: [AttributeValue{Key, Value, ...}]`` and the input-command server's
port, SSL flag, anonymous flag and Basic credentials.

This module recognises the document, unwraps it and hands the export reader the instance and the solution;
the instance fields are read by the same model-driven conversion as the solution (``nuviot._ExportReader``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeGuard

from runtime.core.errors import Problem
from runtime.core.solution import codes

_INSTANCE_ONLY = ("DeviceRepository", "InputCommandPort", "NuvIoTEdition", "SettingsValues", "PrimaryHost")
# read by ``fix_instance`` rather than the generic conversion (their shape is not a reference to follow)
READ_APART = frozenset({"TimeZone"})


def _is_eh(value: object) -> bool:
    return isinstance(value, dict) and ("HasValue" in value or ("Text" in value and "Id" in value))


def unwrap_invoke_result(tree: object) -> tuple[object, list[Problem]]:
    """``{"Result": X, "Successful": ...}`` -> X (with the server's errors as problems); anything else as is."""
    if not (isinstance(tree, dict) and isinstance(tree.get("Result"), dict)
            and ("Successful" in tree or "Errors" in tree)):
        return tree, []
    problems = []
    errors = tree.get("Errors") or []
    if tree.get("Successful") is False or errors:
        for i, err in enumerate(errors if isinstance(errors, list) else []):
            code = err.get("ErrorCode") if isinstance(err, dict) else None
            text = err.get("Message") if isinstance(err, dict) else str(err)
            problems.append(Problem(f"Errors[{i}]", codes.EXPORT_SERVER_ERROR,
                                    f"the server answered with an error: {code + ' ' if code else ''}{text}"))
        if not problems:
            problems.append(Problem("Successful", codes.EXPORT_SERVER_ERROR, "the server answered Successful: false"))
    return tree["Result"], problems


def is_deployment_instance(tree: object) -> TypeGuard[dict[str, object]]:
    """A DeploymentInstance: its ``$type`` says so, or a ``Solution`` EntityHeader next to instance-only fields."""
    if not isinstance(tree, dict):
        return False
    kind = tree.get("$type")
    if isinstance(kind, str) and ".DeploymentInstance," in kind:
        return True
    return _is_eh(tree.get("Solution")) and any(k in tree for k in _INSTANCE_ONLY)


def solution_of(instance: Mapping[str, object]) -> tuple[dict[str, object] | None, list[Problem]]:
    """The Solution inside ``Solution.Value``, or a problem saying how to get the full document."""
    header = instance.get("Solution")
    value = header.get("Value") if isinstance(header, dict) else None
    if isinstance(value, dict):
        return value, []
    return None, [Problem("Solution", codes.EXPORT_UNRESOLVED,
                          "the DeploymentInstance carries its Solution only as a reference (no Value); "
                          "use the full document, GET {api}/api/deployment/instance/full")]


def fix_instance(raw: Mapping[str, object], converted: dict[str, object]) -> dict[str, object]:
    """What the generic conversion cannot know: a bare repository header, AttributeValue lists, null values."""
    repo = raw.get("DeviceRepository")
    if isinstance(repo, dict) and not isinstance(repo.get("Value"), dict):
        ident = repo.get("Id")
        converted["deviceRepository"] = {k: v for k, v in {
            "key": repo.get("Key") or ident, "name": repo.get("Text"), "id": ident,
        }.items() if isinstance(v, str) and v}
    values = raw.get("SettingsValues")
    if isinstance(values, list):
        converted["settingsValues"] = {
            str(v["Key"]): "" if v.get("Value") is None else str(v["Value"])
            for v in values if isinstance(v, dict) and isinstance(v.get("Key"), str)
        }
    zone = raw.get("TimeZone")
    if isinstance(zone, dict):  # EntityHeader {Id: "UTC", Text: "(UTC) Coordinated Universal Time"}
        ident = zone.get("Id") or zone.get("Key")
        if isinstance(ident, str) and ident:
            converted["timeZone"] = ident
    elif isinstance(zone, str) and zone:
        converted["timeZone"] = zone
    if not converted.get("key"):
        converted.pop("key", None)
    return converted
