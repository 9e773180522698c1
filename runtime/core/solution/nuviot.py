"""The NuvIoT export form: the JSON NuvIoT serialises (PascalCase, Newtonsoft ``$type``, EntityHeader).

The reader turns it into the native wire tree (camelCase, references by key) and lets ``wire.build_document``
validate it, so both forms end in the same model with the same problem paths.

Rules
- Field names are matched case-insensitively against the model's camelCase names (``ListenOnPort``,
  ``KeepAliveToSendReplyTimeoutMS``, ``RESTListenerType`` all find their field); anything else is ignored
  (audit fields, diagram locations, ``$type``), as NuvIoT's own loader does.
- ``EntityHeader {Id, Text, Key?, Value?, HasValue}``: for an enum the string ``Id`` is the value, never the
  ordinal ``Value``. For an entity the resolved ``Value`` is taken, collected into its library (messages,
  workflows, sentinels, translators, transmitters, state sets, unit sets, data streams; deduplicated by key,
  a key with two different contents is a problem) and referenced by key.
- Routes: ``PipelineModules`` become ``steps`` (``RouteModuleConfig.Id`` -> step id, ``PrimaryOutput`` ->
  ``next``, ``SecondaryOutputs`` -> ``secondary``); mappings per edge as model.RouteConnection documents; the
  output translator -> transmitter mapping names the outgoing message by its hex id, converted to its key.
- The export has no instance section: the default instance's key is the solution key. A DeploymentInstance
  document (``instance_doc``: what a NuvIoT container downloads) carries one, with the Solution inside.
"""

from __future__ import annotations

import enum
import types
from collections.abc import Iterable, Mapping
from typing import Annotated, TypeGuard, Union, cast, get_args, get_origin

from pydantic import BaseModel, SecretStr

from runtime.core.errors import Problem, SolutionError
from runtime.core.solution import codes, instance_doc
from runtime.core.solution import model as m
from runtime.core.solution.enums import PipelineModuleType, RestListenerType
from runtime.core.solution.export_names import IGNORED, IGNORED_BY_MODEL, STEP_KEYS, field_names
from runtime.core.solution.model import SolutionDocument
from runtime.core.solution.wire import build_document

EXPORT_TOP_KEYS = ("Listeners", "Planner", "DeviceConfigurations")

# library (wire name) and model by the field that references it / by route step type
_LIBRARY_OF_FIELD: dict[str, tuple[str, type[BaseModel]]] = {
    "message_definition": ("messages", m.MessageDefinition),
    "outgoing_message": ("messages", m.MessageDefinition),
    "state_set": ("stateSets", m.StateSet),
    "custom_status_type": ("stateSets", m.StateSet),
    "unit_set": ("unitSets", m.UnitSet),
}
_LIBRARY_OF_STEP: dict[PipelineModuleType, tuple[str, type[BaseModel]]] = {
    PipelineModuleType.SENTINEL: ("sentinels", m.Sentinel),
    PipelineModuleType.INPUT_TRANSLATOR: ("inputTranslators", m.InputTranslator),
    PipelineModuleType.WORKFLOW: ("workflows", m.Workflow),
    PipelineModuleType.OUTPUT_TRANSLATOR: ("outputTranslators", m.OutputTranslator),
    PipelineModuleType.TRANSMITTER: ("transmitters", m.Transmitter),
    PipelineModuleType.DATA_STREAM: ("dataStreams", m.DataStream),
}
_LIBRARIES = ("messages", "workflows", "sentinels", "inputTranslators", "outputTranslators", "transmitters",
              "stateSets", "unitSets", "dataStreams")  # fmt: skip
_REST_LISTENER_ORDINALS = (
    RestListenerType.PIPELINE_MODULE,
    RestListenerType.INPUT_COMMAND_LISTENER,
    RestListenerType.ACME_LISTENER,
)


def is_export(tree: object) -> bool:
    """NuvIoT's form: a top-level ``$type`` or PascalCase ``Listeners``/``Planner``/``DeviceConfigurations``,
    a DeploymentInstance, or either wrapped in NuvIoT's ``InvokeResult`` (``{"Result": ..., "Successful": ...}``)."""
    inner = instance_doc.unwrap_invoke_result(tree)[0]
    if inner is not tree:
        return True
    return isinstance(tree, dict) and (
        "$type" in tree or any(k in tree for k in EXPORT_TOP_KEYS) or instance_doc.is_deployment_instance(tree)
    )


def export_form(tree: object) -> str:
    """``nuviot-instance`` for a DeploymentInstance document, else ``nuviot-export``."""
    inner = instance_doc.unwrap_invoke_result(tree)[0]
    return "nuviot-instance" if instance_doc.is_deployment_instance(inner) else "nuviot-export"


def _is_eh(value: object) -> TypeGuard[dict[str, object]]:
    return isinstance(value, dict) and ("HasValue" in value or ("Text" in value and "Id" in value))


def _strip(tp: object) -> object:
    while get_origin(tp) is Annotated:
        tp = get_args(tp)[0]
    return tp


def _non_none(tp: object) -> object:
    tp = _strip(tp)
    if get_origin(tp) in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return _strip(args[0])
    return tp


def _ikey(d: Mapping[str, object], alias: str) -> str | None:
    """The export key for a model alias, matched case-insensitively (``id`` preferred over ``Id``)."""
    if alias in d:
        return alias
    want = alias.lower()
    found = None
    for k in d:
        if k.lower() == want:
            if k == "id":
                return k
            found = found or k
    return found


class _ExportReader:
    def __init__(self, export: Mapping[str, object]) -> None:
        self.export = export
        self.problems: list[Problem] = []
        self.warnings: list[Problem] = []
        self.libs: dict[str, dict[str, tuple[dict[str, object], str]]] = {name: {} for name in _LIBRARIES}
        self.id_to_key: dict[str, str] = {}
        self.fixups: list[tuple[dict[str, object], str, str]] = []  # (mappings, message id, path)
        self._index_ids(export)

    # ---------------------------------------------------------------- helpers
    def _index_ids(self, node: object) -> None:
        stack = [node]
        while stack:
            cur = stack.pop()
            if isinstance(cur, dict):
                ident = cur.get("id") or cur.get("Id")
                key = cur.get("Key")
                if isinstance(ident, str) and isinstance(key, str) and key and not _is_eh(cur):
                    self.id_to_key.setdefault(ident.upper(), key)
                stack.extend(cur.values())
            elif isinstance(cur, list):
                stack.extend(cur)

    def problem(self, path: str, code: str, message: str) -> None:
        self.problems.append(Problem(path, code, message))

    def collect(self, library: str, cls: type[BaseModel], value: Mapping[str, object], path: str) -> str | None:
        converted = self.model(cls, value, path)
        key = converted.get("key")
        if not isinstance(key, str) or not key:
            self.problem(path, codes.EXPORT_UNRESOLVED, f"a {cls.__name__} without a Key")
            return None
        seen = self.libs[library].get(key)
        if seen is None:
            self.libs[library][key] = (converted, path)
        elif seen[0] != converted:
            self.problem(
                path,
                codes.EXPORT_CONFLICT,
                f"{library} key {key!r} is defined again with different content (first at {seen[1]})",
            )
        return key

    def reference(self, value: object, field: str, path: str) -> str | None:
        """An EntityHeader (or plain entity) in a key-reference field -> the key; resolved values are collected."""
        inner = value.get("Value") if isinstance(value, dict) else None
        if isinstance(inner, dict):
            lib = _LIBRARY_OF_FIELD.get(field)
            if lib is not None:
                return self.collect(lib[0], lib[1], inner, path)
            key = inner.get("Key")
            if isinstance(key, str):
                return key
        if isinstance(value, dict):
            for name in ("Key", "key"):
                if isinstance(value.get(name), str) and value[name]:
                    return str(value[name])
            ident = value.get("Id") or value.get("id")
            if isinstance(ident, str) and ident:
                return self.id_to_key.get(ident.upper(), ident)
        self.problem(path, codes.EXPORT_UNRESOLVED, "a reference without Id, Key or Value")
        return None

    # ---------------------------------------------------------------- generic, model-driven conversion
    def value(self, raw: object, tp: object, field: str, path: str) -> object:
        if raw is None:
            return None
        tp = _non_none(tp)
        origin = get_origin(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            if _is_eh(raw) and isinstance(raw.get("Value"), dict):
                raw = raw["Value"]
            return self.model(tp, raw, path)
        if origin is tuple:
            if not isinstance(raw, list):
                self.problem(path, codes.EXPORT_SHAPE, f"expected a list, got {type(raw).__name__}")
                return None
            item = get_args(tp)[0]
            return [self.value(v, item, field, f"{path}[{i}]") for i, v in enumerate(raw)]
        if isinstance(tp, type) and issubclass(tp, enum.Enum):
            return self.enum_id(raw, tp, path)
        if tp is SecretStr:
            return raw
        if tp is str:
            if isinstance(raw, dict):
                return self.reference(raw, field, path)
            if isinstance(raw, int | float) and not isinstance(raw, bool):
                return str(raw)  # e.g. ConfigurationVersion, a double in NuvIoT
            return raw
        if origin is dict and isinstance(raw, list):
            return {kv.get("Key"): kv.get("Value") for kv in raw if isinstance(kv, dict)}
        return raw

    def enum_id(self, raw: object, tp: type[enum.Enum], path: str) -> object:
        if isinstance(raw, dict):
            ident = raw.get("Id")
            if isinstance(ident, str) and ident:
                return ident
            self.problem(
                path,
                codes.EXPORT_ORDINAL_ONLY,
                "an enum EntityHeader without its string Id (ordinals are not used)",
            )
            return None
        if tp is RestListenerType and isinstance(raw, int) and not isinstance(raw, bool):
            if 0 <= raw < len(_REST_LISTENER_ORDINALS):  # a plain int enum in NuvIoT
                return _REST_LISTENER_ORDINALS[raw].value
        if isinstance(raw, int) and not isinstance(raw, bool):
            self.problem(
                path, codes.EXPORT_ORDINAL_ONLY, f"enum given as ordinal {raw}; NuvIoT's string id is needed"
            )
            return None
        return raw

    def model(self, cls: type[BaseModel], raw: object, path: str) -> dict[str, object]:
        if not isinstance(raw, dict):
            self.problem(
                path, codes.EXPORT_SHAPE, f"expected an object for {cls.__name__}, got {type(raw).__name__}"
            )
            return {}
        out: dict[str, object] = {}
        used: set[str] = set()
        for name, info in cls.model_fields.items():
            alias = info.alias or name
            sub = f"{path}.{alias}" if path else alias
            if cls is m.Route and name == "steps":
                modules = raw.get("PipelineModules")
                if modules is not None:
                    used.add("PipelineModules")
                    out[alias] = self.steps(modules, sub)
                continue
            src = None
            for candidate in field_names(alias, info):
                src = _ikey(raw, candidate)
                if src is not None:
                    break
            if src is None:
                continue
            used.add(src)
            converted = self.value(raw[src], info.annotation, name, sub)
            if converted is not None:
                out[alias] = converted
        self.unmapped(cls, raw, used, path)
        return out

    def unmapped(self, cls: type[BaseModel], raw: Mapping[str, object], used: set[str], path: str) -> None:
        """Every property with content that no field took: a warning, never a silent drop (PYRT2090)."""
        ignored = IGNORED | IGNORED_BY_MODEL.get(cls, frozenset())
        for key, value in raw.items():
            if key in used or key.lower() in ignored or value in (None, "", [], {}, False):
                continue
            if isinstance(value, dict) and value.get("HasValue") is False:
                continue
            sub = f"{path}.{key}" if path else key
            self.warnings.append(Problem(sub, codes.NOT_SUPPORTED,
                                         f"not supported: {cls.__name__}.{key} is not read by this runtime"))

    # ---------------------------------------------------------------- routes
    def steps(self, modules: object, path: str) -> list[dict[str, object]]:
        if not isinstance(modules, list):
            self.problem(path, codes.EXPORT_SHAPE, "PipelineModules must be a list")
            return []
        type_of: dict[str, str] = {}
        for pm in modules:
            if isinstance(pm, dict) and isinstance(pm.get("Id"), str):
                type_of[pm["Id"]] = str(self.enum_id(pm.get("ModuleType"), PipelineModuleType, path) or "")
        steps = []
        for i, pm in enumerate(modules):
            sub = f"{path}[{i}]"
            if not isinstance(pm, dict):
                self.problem(sub, codes.EXPORT_SHAPE, "a pipeline module must be an object")
                continue
            self.unmapped_step(pm, sub)
            step: dict[str, object] = {}
            if pm.get("Id") is not None:
                step["id"] = pm["Id"]
            if pm.get("Name"):
                step["name"] = pm["Name"]
            step_type = (
                self.enum_id(pm.get("ModuleType"), PipelineModuleType, f"{sub}.type")
                if pm.get("ModuleType")
                else None
            )
            if step_type is not None:
                step["type"] = step_type
            module = self.step_module(pm.get("Module"), step_type, f"{sub}.module")
            if module is not None:
                step["module"] = module
            primary = pm.get("PrimaryOutput")
            if isinstance(primary, dict) and primary.get("Id"):
                step["next"] = self.connection(primary, step_type, type_of, f"{sub}.next")
            secondary = [
                self.connection(so, step_type, type_of, f"{sub}.secondary[{j}]")
                for j, so in enumerate(pm.get("SecondaryOutputs") or [])
                if isinstance(so, dict) and so.get("Id")
            ]
            if secondary:
                step["secondary"] = secondary
            steps.append(step)
        return steps

    def unmapped_step(self, pm: Mapping[str, object], path: str) -> None:
        """RouteModuleConfig properties the steps do not take (``IncomingMappings``, ...): PYRT2090 when not empty."""
        for key, value in pm.items():
            if key in STEP_KEYS or key.lower() in IGNORED or value in (None, "", [], {}, False):
                continue
            self.warnings.append(Problem(f"{path}.{key}", codes.NOT_SUPPORTED,
                                         f"not supported: RouteModuleConfig.{key} is not read by this runtime"))

    def step_module(self, raw: object, step_type: object, path: str) -> str | None:
        if raw is None:
            return None
        inner = raw.get("Value") if isinstance(raw, dict) else None
        lib = (
            _LIBRARY_OF_STEP.get(PipelineModuleType(cast(str, step_type)))  # one of its values: a str
            if step_type in set(PipelineModuleType)
            else None
        )
        if isinstance(inner, dict) and lib is not None:
            return self.collect(lib[0], lib[1], inner, path)
        return self.reference(raw, "module", path)

    def connection(self, raw: Mapping[str, object], src: object, type_of: dict[str, str], path: str) -> dict[str, object]:
        to = raw["Id"]
        out: dict[str, object] = {"to": to}
        if raw.get("Name"):
            out["name"] = raw["Name"]
        dst = type_of.get(to) if isinstance(to, str) else None  # type_of's keys are str
        mappings: dict[str, object] = {}
        for i, kv in enumerate(cast("Iterable[object]", raw.get("Mappings") or [])):  # a list in an export
            sub = f"{path}.mappings[{i}]"
            if not isinstance(kv, dict) or not isinstance(kv.get("Key"), str):
                self.problem(sub, codes.EXPORT_SHAPE, "a mapping must be {Key, Value} with a string Key")
                continue
            key, value = kv["Key"], kv.get("Value")
            if isinstance(value, dict) and "OutgoingDeviceMessage" in value:
                mappings[key] = self.output_command_mapping(value, f"{path}.mappings.{key}")
            elif src == PipelineModuleType.OUTPUT_TRANSLATOR and dst == PipelineModuleType.TRANSMITTER:
                mappings[key] = ""
                self.fixups.append((mappings, key, sub))
            else:
                mappings[key] = "" if value is None else (value if isinstance(value, str) else str(value))
        if mappings:
            out["mappings"] = mappings
        return out

    def output_command_mapping(self, raw: Mapping[str, object], path: str) -> dict[str, object]:
        out: dict[str, object] = {}
        msg = raw.get("OutgoingDeviceMessage")
        if msg is not None:
            key = self.reference(msg, "outgoing_message", f"{path}.outgoingMessage")
            if key is not None:
                out["outgoingMessage"] = key
        fields = cast("Iterable[object]", raw.get("FieldMappings") or [])  # a list in an export
        out["fieldMappings"] = {
            kv["Key"]: "" if kv.get("Value") is None else str(kv["Value"])
            for kv in fields
            if isinstance(kv, dict) and isinstance(kv.get("Key"), str)
        }
        return out

    def apply_fixups(self) -> None:
        by_id = {
            str(c.get("id", "")).upper(): k for k, (c, _) in self.libs["messages"].items() if c.get("id")
        }
        for mappings, ident, path in self.fixups:
            key = by_id.get(ident.upper())
            if key is None and ident in self.libs["messages"]:
                continue  # already a key
            if key is None:
                self.problem(path, codes.EXPORT_UNKNOWN_MESSAGE_ID, f"no outgoing message has id {ident}")
                continue
            value = mappings.pop(ident)
            mappings[key] = value

    # ---------------------------------------------------------------- document
    def tree(self) -> dict[str, object]:
        root, problems = instance_doc.unwrap_invoke_result(self.export)
        self.problems += problems
        instance: dict[str, object] = {}
        solution_raw: object = root
        if instance_doc.is_deployment_instance(root):
            solution_raw, problems = instance_doc.solution_of(root)
            self.problems += problems
            plain = {k: v for k, v in root.items() if k not in instance_doc.READ_APART}
            instance = instance_doc.fix_instance(root, self.model(m.Instance, plain, "instance"))
        solution = self.model(m.Solution, solution_raw, "solution") if solution_raw is not None else {}
        self.apply_fixups()
        instance.setdefault("key", solution.get("key"))
        instance.setdefault("name", solution.get("name", ""))
        doc: dict[str, object] = {"schemaVersion": 1, "instance": instance, "solution": solution}
        for name in _LIBRARIES:
            doc[name] = [entry for entry, _ in self.libs[name].values()]
        return doc


def export_tree(export: Mapping[str, object]) -> dict[str, object]:
    """NuvIoT's export JSON (parsed) -> the native wire tree. Raises ``SolutionError`` on shape problems."""
    reader = _ExportReader(export)
    tree = reader.tree()
    if reader.problems:
        raise SolutionError(reader.problems)
    return tree


def export_document(export: Mapping[str, object]) -> SolutionDocument:
    """NuvIoT's export JSON (parsed) -> the document (model-validated, not cross-checked)."""
    return export_report(export)[0]


def export_report(export: Mapping[str, object]) -> tuple[SolutionDocument, tuple[Problem, ...]]:
    """The document and the reader's warnings (properties not read: PYRT2090)."""
    reader = _ExportReader(export)
    tree = reader.tree()
    try:
        doc = build_document(tree)
    except SolutionError as exc:
        raise SolutionError(reader.problems + list(exc.problems)) from None
    if reader.problems:
        raise SolutionError(reader.problems)
    return doc, _once(reader.warnings)


def _once(warnings: list[Problem]) -> tuple[Problem, ...]:
    """One warning per message: a library entity read again for another route, or sibling nodes, repeat it."""
    first: dict[str, Problem] = {}
    more: dict[str, int] = {}
    for w in warnings:
        if w.message in first:
            more[w.message] = more.get(w.message, 0) + 1
        else:
            first[w.message] = w
    return tuple(
        Problem(w.path, w.code, f"{w.message} (and {more[msg]} more)") if msg in more else w
        for msg, w in first.items()
    )
