"""From a wire tree (camelCase dicts) to a ``SolutionDocument``, with pydantic errors as ``Problem``s.

Problem paths are wire paths with indexes, e.g. ``solution.listeners[0].listenOnPort``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from runtime.core.errors import Problem, SolutionError
from runtime.core.solution import codes
from runtime.core.solution.model import SolutionDocument

Loc = tuple[str | int, ...]

_UNION_TAGS = frozenset({"str", "int", "float", "bool", "OutputCommandMapping", "constrained-int", "none"})
_SPECIAL_MISSING: dict[tuple[str | int, ...], tuple[str, str]] = {
    ("solution", "planner"): (
        codes.INS_NO_PLANNER,
        "Your solution does not appear to have a Planner configured.",
    ),
}


def format_path(loc: Sequence[str | int]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _clean_loc(loc: Sequence[str | int]) -> Loc:
    return tuple(p for p in loc if not (isinstance(p, str) and (p in _UNION_TAGS or "[" in p)))


def _problem_for(err: ErrorDetails) -> Problem:
    loc = _clean_loc(err["loc"])
    path = format_path(loc)
    kind = str(err["type"])
    last = loc[-1] if loc else ""
    if kind == "missing":
        special = _SPECIAL_MISSING.get(loc[:2] if len(loc) == 2 else ())
        if special:
            return Problem(path, special[0], special[1])
        if last == "messageDefinition":
            return Problem(path, codes.RTE_MESSAGE_DEFINITION_NULL, "the route has no message definition")
        in_step = len(loc) >= 3 and loc[-3] == "steps"
        if in_step and last == "type":
            return Problem(path, codes.RTE_MODULE_EMPTY_TYPE, "the route step has no type")
        if in_step and last == "module":
            return Problem(path, codes.RTE_MODULE_EMPTY_MODULE, "the route step has no module")
        return Problem(path, codes.MISSING, f"required field {last!r} is missing")
    if kind == "enum":
        expected = err.get("ctx", {}).get("expected", "")
        return Problem(
            path, codes.UNKNOWN_ENUM, f"unknown id {err.get('input')!r}; expected one of {expected}"
        )
    if kind in {"greater_than_equal", "less_than_equal", "greater_than", "less_than"}:
        return Problem(path, codes.OUT_OF_RANGE, str(err["msg"]).lower())
    if kind.endswith("_type") or kind.endswith("_parsing") or kind in {"model_attributes_type"}:
        return Problem(
            path, codes.WRONG_TYPE, f"{str(err['msg']).lower()} (got {type(err.get('input')).__name__})"
        )
    return Problem(path, codes.INVALID_VALUE, str(err["msg"]))


def validation_problems(exc: ValidationError) -> list[Problem]:
    """One problem per path (a union reports each member; keep the first)."""
    seen: dict[str, Problem] = {}
    for err in exc.errors():
        p = _problem_for(err)
        seen.setdefault(p.path, p)
    return list(seen.values())


def _get(tree: object, loc: Loc) -> object:
    """The node at ``loc`` (a location pydantic reported in this tree: keys of mappings, indexes of lists)."""
    node = tree
    for part in loc:
        if isinstance(node, list) and isinstance(part, int):
            node = node[part]
        elif isinstance(node, dict):
            node = node[part]
        else:
            raise KeyError(format_path(loc))
    return node


def _set(tree: object, loc: Loc, value: object) -> None:
    parent = _get(tree, loc[:-1])
    last = loc[-1]
    if isinstance(parent, list) and isinstance(last, int):
        parent[last] = value
    elif isinstance(parent, dict):
        parent[last] = value
    else:
        raise KeyError(format_path(loc))


_TRUE = {"true", "True", "TRUE", "1"}
_FALSE = {"false", "False", "FALSE", "0"}


def _coerce(kind: str, text: str) -> int | float | bool:
    if kind == "int_type":
        return int(text.strip())
    if kind == "float_type":
        return float(text.strip())
    if kind == "bool_type":
        t = text.strip()
        if t in _TRUE:
            return True
        if t in _FALSE:
            return False
    raise ValueError(text)


def build_document(tree: object, *, expanded: Mapping[Loc, str] | None = None) -> SolutionDocument:
    """Validate a wire tree into the model, or raise ``SolutionError`` with every problem.

    ``expanded`` maps the locations of strings that came from ``${VAR}`` expansion to their text: where the
    model wants a number or a boolean there, the text is converted (``connectToPort: ${MQTT_PORT:-1883}``).
    """
    if not isinstance(tree, dict):
        raise SolutionError(
            [Problem("", codes.NOT_A_DOCUMENT, "the solution must be a mapping at the top level")]
        )
    expanded = dict(expanded or {})
    for _attempt in range(3):
        try:
            return SolutionDocument.model_validate(tree)
        except ValidationError as exc:
            fixes: list[tuple[Loc, object]] = []
            problems: list[Problem] = []
            for err in exc.errors():
                loc = tuple(err["loc"])
                if loc in expanded and err["type"] in {"int_type", "float_type", "bool_type"}:
                    try:
                        fixes.append((loc, _coerce(str(err["type"]), expanded.pop(loc))))
                    except ValueError:
                        want = str(err["type"]).removesuffix("_type")
                        problems.append(
                            Problem(
                                format_path(loc),
                                codes.ENV_BAD_VALUE,
                                f"the variable's value is not a valid {want}",
                            )
                        )
            if problems or not fixes:
                bad = {p.path for p in problems}
                problems += [p for p in validation_problems(exc) if p.path not in bad]
                raise SolutionError(problems) from None
            for loc, value in fixes:
                _set(tree, loc, value)
    return SolutionDocument.model_validate(tree)
