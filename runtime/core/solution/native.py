"""The native solution form (reference/nuviot-runtime.md §8): YAML or JSON, camelCase, references by key.

Reading is in three steps, each reporting ``Problem``s rather than raising library errors:
1. ``parse_tree``: size cap, UTF-8, JSON or *safe* YAML (no Python tags; only ``true``/``false`` are booleans,
   so ``on``/``off``/``yes``/``no`` stay strings; dates stay strings; alias bombs and recursive aliases refused).
2. ``expand_variables``: ``${VAR}`` and ``${VAR:-default}`` in string values (``$${`` is a literal ``${``).
   Script fields (keys ending in ``script``) are left alone: ``${x}`` there is a JavaScript template literal.
3. ``resolve_secret_refs``: every ``xxxRef: env:NAME`` / ``xxxRef: file:/path`` becomes the ``xxx`` value.
Then ``wire.build_document`` validates the tree into the model.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping

import yaml

from runtime.core.errors import Problem, SolutionError
from runtime.core.solution import codes
from runtime.core.solution.model import SolutionDocument
from runtime.core.solution.wire import Loc, build_document, format_path

MAX_SOLUTION_BYTES = 16 * 1024 * 1024
MAX_YAML_NODES = 2_000_000  # after alias expansion, for a document that uses aliases
ReadFile = Callable[[str], bytes]

_BOOL = re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")


class _SafeLoader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2-style booleans and no timestamp resolution."""


_SafeLoader.yaml_implicit_resolvers = {
    first: [
        (tag, rx)
        for tag, rx in resolvers
        if tag not in ("tag:yaml.org,2002:bool", "tag:yaml.org,2002:timestamp")
    ]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_SafeLoader.add_implicit_resolver("tag:yaml.org,2002:bool", _BOOL, list("tTfF"))


def _line(line0: int, col0: int) -> str:
    return f"line {line0 + 1}, column {col0 + 1}"


def _expanded_size(root: yaml.Node, limit: int) -> int:
    """Node count with every alias expanded (memoised, so a bomb is counted, not built). Raises on cycles."""
    memo: dict[int, int] = {}
    active: set[int] = set()

    def size(node: yaml.Node) -> int:
        key = id(node)
        if key in memo:
            return memo[key]
        if key in active:
            raise _RecursiveAliasError
        active.add(key)
        total = 1
        if isinstance(node, yaml.SequenceNode):
            for child in node.value:
                total += size(child)
                if total > limit:
                    break
        elif isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                total += size(k) + size(v)
                if total > limit:
                    break
        active.discard(key)
        memo[key] = total
        return total

    return size(root)


class _RecursiveAliasError(Exception):
    pass


def _own_nodes(root: yaml.Node) -> int:
    seen: set[int] = set()
    stack = [root]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)
        elif isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                stack.extend((k, v))
    return len(seen)


def _load_yaml(text: str) -> object:
    loader = _SafeLoader(text)
    try:
        try:
            node = loader.get_single_node()
        except yaml.composer.ComposerError as exc:
            if "single document" in f"{exc.context} {exc.problem}":
                raise SolutionError(
                    [Problem("", codes.NOT_A_DOCUMENT, "expected one YAML document, found several")]
                ) from None
            raise
        if node is None:
            return None
        own = _own_nodes(node)
        limit = min(MAX_YAML_NODES, 10 * own + 100_000)
        try:
            if _expanded_size(node, limit) > limit:
                raise SolutionError(
                    [
                        Problem(
                            "",
                            codes.ALIAS_BOMB,
                            f"YAML aliases expand to more than {limit} nodes; refusing to load",
                        )
                    ]
                )
        except _RecursiveAliasError:
            raise SolutionError(
                [Problem("", codes.ALIAS_BOMB, "a YAML alias refers to itself (recursive structure)")]
            ) from None
        return loader.construct_document(node)
    finally:
        loader.dispose()


def parse_tree(data: bytes, *, max_bytes: int = MAX_SOLUTION_BYTES) -> dict[str, object]:
    """Bytes -> plain Python tree (dict/list/str/int/float/bool/None), or ``SolutionError``.

    Keys are text as JSON gives them; a YAML key that is not (``1:``) is left for the model to report."""
    if len(data) > max_bytes:
        raise SolutionError(
            [
                Problem(
                    "", codes.TOO_LARGE, f"the solution is {len(data)} bytes; the limit is {max_bytes} bytes"
                )
            ]
        )
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SolutionError(
            [Problem("", codes.NOT_TEXT, f"the solution is not UTF-8 text (byte {exc.start})")]
        ) from None
    if not text.strip():
        raise SolutionError([Problem("", codes.NOT_A_DOCUMENT, "the solution file is empty")])
    try:
        if text.lstrip()[:1] in ("{", "["):
            try:
                tree = json.loads(text)
            except json.JSONDecodeError as exc:
                raise SolutionError(
                    [Problem(_line(exc.lineno - 1, exc.colno - 1), codes.SYNTAX, f"invalid JSON: {exc.msg}")]
                ) from None
        else:
            try:
                tree = _load_yaml(text)
            except yaml.constructor.ConstructorError as exc:
                mark = exc.problem_mark
                where = _line(mark.line, mark.column) if mark else ""
                raise SolutionError(
                    [Problem(where, codes.YAML_TAG, f"YAML not allowed: {exc.problem}")]
                ) from None
            except yaml.MarkedYAMLError as exc:
                mark = exc.problem_mark
                where = _line(mark.line, mark.column) if mark else ""
                raise SolutionError(
                    [Problem(where, codes.SYNTAX, f"invalid YAML: {exc.problem or exc}")]
                ) from None
            except yaml.YAMLError as exc:
                raise SolutionError([Problem("", codes.SYNTAX, f"invalid YAML: {exc}")]) from None
    except RecursionError:
        raise SolutionError([Problem("", codes.SYNTAX, "the solution is nested too deeply")]) from None
    if not isinstance(tree, dict):
        raise SolutionError(
            [Problem("", codes.NOT_A_DOCUMENT, "the solution must be a mapping at the top level")]
        )
    return tree


# --------------------------------------------------------------------------- ${VAR} expansion

_VAR = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _is_script_key(key: object) -> bool:
    return isinstance(key, str) and key.lower().endswith("script")


def expand_variables(tree: object, env: Mapping[str, str]) -> tuple[object, dict[Loc, str], list[Problem]]:
    """A copy of ``tree`` with variables expanded; the locations that changed; one problem per missing variable."""
    expanded: dict[Loc, str] = {}
    problems: list[Problem] = []

    def expand_str(text: str, loc: Loc) -> str:
        if "${" not in text:
            return text

        def repl(m: re.Match[str]) -> str:
            if m.group(0) == "$${":
                return "${"
            name, default = m.group(1), m.group(2)
            value = env.get(name)
            if value:
                return value
            if default is not None:
                return default
            if value is not None:  # set but empty, no default: empty is what the user set
                return value
            problems.append(
                Problem(
                    format_path(loc),
                    codes.ENV_MISSING,
                    f"environment variable {name} is not set and has no default",
                )
            )
            return m.group(0)

        out = _VAR.sub(repl, text)
        expanded[loc] = out
        return out

    def walk(node: object, loc: Loc) -> object:
        if isinstance(node, dict):
            return {k: (v if _is_script_key(k) else walk(v, (*loc, k))) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v, (*loc, i)) for i, v in enumerate(node)]
        if isinstance(node, str):
            return expand_str(node, loc)
        return node

    return walk(tree, ()), expanded, problems


# --------------------------------------------------------------------------- secret references


def resolve_secret_ref(
    ref: object, env: Mapping[str, str], read_file: ReadFile
) -> tuple[str | None, str, str]:
    """``env:NAME`` or ``file:/path`` -> (value, code, message); value is None when it cannot be resolved."""
    if not isinstance(ref, str) or ":" not in ref:
        return None, codes.SECRET_REF_INVALID, "a secret reference must be 'env:NAME' or 'file:/path'"
    scheme, _, where = ref.partition(":")
    if scheme == "env" and where:
        value = env.get(where)
        if value is None:
            return None, codes.SECRET_UNRESOLVED, f"environment variable {where} is not set"
        return value, "", ""
    if scheme == "file" and where:
        try:
            raw = read_file(where)
        except (OSError, KeyError) as exc:
            return None, codes.SECRET_UNRESOLVED, f"cannot read secret file {where}: {type(exc).__name__}"
        try:
            return raw.decode("utf-8").rstrip("\r\n"), "", ""
        except UnicodeDecodeError:
            return None, codes.SECRET_UNRESOLVED, f"secret file {where} is not UTF-8 text"
    return (
        None,
        codes.SECRET_REF_INVALID,
        f"unknown secret reference {scheme!r}; use 'env:NAME' or 'file:/path'",
    )


def resolve_secret_refs(tree: object, env: Mapping[str, str], read_file: ReadFile) -> list[Problem]:
    """Replace each ``xxxRef`` key by ``xxx`` (in place). Returns the problems."""
    problems: list[Problem] = []

    def walk(node: object, loc: Loc) -> None:
        if isinstance(node, dict):
            for key in list(node):
                value = node[key]
                if isinstance(key, str) and len(key) > 3 and key.endswith("Ref"):
                    target = key[:-3]
                    path = format_path((*loc, key))
                    if node.get(target) is not None:
                        problems.append(
                            Problem(path, codes.SECRET_TWICE, f"give either {target} or {key}, not both")
                        )
                        continue
                    secret, code, message = resolve_secret_ref(value, env, read_file)
                    if secret is None:
                        problems.append(Problem(path, code, message))
                        continue
                    del node[key]
                    node[target] = secret
                else:
                    walk(value, (*loc, key))
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, (*loc, i))

    walk(tree, ())
    return problems


def native_document(tree: object, *, env: Mapping[str, str], read_file: ReadFile) -> SolutionDocument:
    """A parsed native tree -> document (variables, secrets, model). Raises ``SolutionError`` with all problems."""
    tree, expanded, problems = expand_variables(tree, env)
    problems += resolve_secret_refs(tree, env, read_file)
    try:
        doc = build_document(tree, expanded=expanded)
    except SolutionError as exc:
        reported = {p.path for p in problems}
        raise SolutionError(problems + [p for p in exc.problems if p.path not in reported]) from None
    if problems:
        raise SolutionError(problems)
    return doc


def read_native(data: bytes, *, env: Mapping[str, str], read_file: ReadFile) -> SolutionDocument:
    return native_document(parse_tree(data), env=env, read_file=read_file)
