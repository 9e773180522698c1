"""Write a document back in the native form (camelCase, keys, enum ids), secrets never in clear.

Every secret becomes ``xxxRef: env:NAME`` with a NAME made from where it sits (``TRANSMITTERS_MQTTOUT_PASSWORD``);
``NativeDump.secrets`` lists them. Defaults are left out, ``${`` in plain strings is written ``$${`` so the
reader does not expand it, and reading the dump (with those variables set) gives back an equal document.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import cast

import yaml
from pydantic import SecretStr

from runtime.core.solution.model import SolutionDocument


@dataclass(frozen=True, slots=True)
class SecretPlaceholder:
    path: str  # wire path of the secret, e.g. transmitters[0].password
    env_name: str  # the variable the dump refers to (``passwordRef: env:<env_name>``)
    value: SecretStr  # so a caller can provide the variable; never printed

    @property
    def ref(self) -> str:
        return f"env:{self.env_name}"


@dataclass(frozen=True, slots=True)
class NativeDump:
    data: dict[str, object]
    secrets: tuple[SecretPlaceholder, ...]

    def secret_env(self) -> dict[str, str]:
        """The environment that makes this dump load back with its secrets."""
        return {s.env_name: s.value.get_secret_value() for s in self.secrets}


def _env_part(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", text)).strip("_").upper()


def _is_script_key(key: object) -> bool:
    return isinstance(key, str) and key.lower().endswith("script")


def dump_native(doc: SolutionDocument) -> NativeDump:
    raw = doc.model_dump(by_alias=True, exclude_defaults=True)
    raw.setdefault("schemaVersion", doc.schema_version)
    raw.setdefault("solution", {})
    secrets: list[SecretPlaceholder] = []
    used: set[str] = set()

    def name_for(parts: list[str]) -> str:
        base = "_".join(p for p in (_env_part(x) for x in parts) if p) or "SECRET"
        name, n = base, 2
        while name in used:
            name, n = f"{base}_{n}", n + 1
        used.add(name)
        return name

    def walk(node: object, path: str, parts: list[str], script: bool) -> object:
        if isinstance(node, dict):
            out: dict[str, object] = {}
            for key, value in node.items():
                sub = f"{path}.{key}" if path else str(key)
                if isinstance(value, SecretStr):
                    env_name = name_for([*parts, key])
                    secrets.append(SecretPlaceholder(sub, env_name, value))
                    out[f"{key}Ref"] = f"env:{env_name}"
                else:
                    out[key] = walk(value, sub, [*parts, key], _is_script_key(key))
            return out
        if isinstance(node, list | tuple):
            items = []
            for i, value in enumerate(node):
                ident = value.get("key") or value.get("deviceId") if isinstance(value, dict) else None
                items.append(walk(value, f"{path}[{i}]", [*parts, str(ident if ident else i)], script))
            return items
        if isinstance(node, enum.Enum):
            return node.value
        if isinstance(node, str) and not script:
            return node.replace("${", "$${")
        return node

    data = cast(dict[str, object], walk(raw, "", [], False))  # a dict walks to a dict
    return NativeDump(data, tuple(secrets))


def to_native(doc: SolutionDocument) -> dict[str, object]:
    """The native wire tree (plain dicts and lists); secrets as ``xxxRef: env:NAME``."""
    return dump_native(doc).data


class _Dumper(yaml.SafeDumper):
    pass


def _str_representer(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    if "\n" in value:
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", value)


_Dumper.add_representer(str, _str_representer)


def yaml_text(dump: NativeDump, *, header: str | None = None) -> str:
    lines = [f"# {line}" for line in (header or "").splitlines()]
    if dump.secrets:
        lines.append("# Secrets are not written here; set these variables (or edit the *Ref lines):")
        lines += [f"#   {s.env_name}  ({s.path})" for s in dump.secrets]
    body = yaml.dump(dump.data, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=120)
    return ("\n".join(lines) + "\n" if lines else "") + body


def to_yaml(doc: SolutionDocument, *, header: str | None = None) -> str:
    return yaml_text(dump_native(doc), header=header)
