"""Which function a script's hook calls (pure): NuvIoT's own name, or the one function the script declares.

This runtime calls some hooks by names NuvIoT does not publish (``onEnter`` for ``State.TransitionInAction``,
``map`` for ``Connection.Script``, ``evaluate`` for a business rule; ``onTransition`` for a
``StateTransition.TransitionAction``, whose template NuvIoT names ``transitionAction``). A NuvIoT export's script
declares whatever function NuvIoT's template declared, so for those hooks: the expected name when the script
defines it; else the one top-level function it declares (``validate`` says so, PYRT2095); several and none
expected is a ``validate`` error. Hooks with a name NuvIoT documents (``onSet``, ``onArrive``, ``onExecute``,
``preHandler``, ``postHandler``, ``getOutputMessage``) stay strict. docs/scripting.md, docs/fidelity.md.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# the hooks whose function name is this runtime's choice, by the name it expects
RELAXED = frozenset({"onEnter", "onTransition", "map", "evaluate"})

_IDENT = r"[A-Za-z_$][\w$]*"
_FUNCTION = re.compile(rf"(?<![\w$.])(?:async\s+)?function\s*\*?\s*({_IDENT})\s*\(")
_BINDING = re.compile(rf"(?<![\w$.])(?:var|let|const)\s+({_IDENT})")
_ASSIGN = re.compile(rf"(?<![\w$.])({_IDENT})\s*=(?![=>])")
_OPEN, _CLOSE = "([{", ")]}"


def _top_level(source: str) -> str:
    """``source`` with comments, string and template literals and everything inside brackets blanked out."""
    out: list[str] = []
    depth, i, n = 0, 0, len(source)
    while i < n:
        ch = source[i]
        two = source[i:i + 2]
        if two == "//":
            j = source.find("\n", i)
            i = n if j < 0 else j
            continue
        if two == "/*":
            j = source.find("*/", i + 2)
            i = n if j < 0 else j + 2
            out.append(" ")
            continue
        if ch in "'\"`":
            j = i + 1
            while j < n and source[j] != ch:
                j += 2 if source[j] == "\\" else 1
            i = j + 1
            out.append(" ")
            continue
        if ch in _OPEN:
            if depth == 0:
                out.append(ch)  # keep "name(" visible for the function pattern
            depth += 1
        elif ch in _CLOSE:
            depth = max(0, depth - 1)
            out.append(" ")
        elif depth == 0:
            out.append(ch)
        i += 1
    return "".join(out)


def top_level_functions(source: str) -> list[str]:
    """The names of the function declarations at a script's top level, in order, each once."""
    names: list[str] = []
    for m in _FUNCTION.finditer(_top_level(source)):
        if m.group(1) not in names:
            names.append(m.group(1))
    return names


def defines(source: str, name: str) -> bool:
    """Whether the script's top level binds ``name`` (``function name``, ``var/let/const name``, ``name =``)."""
    top = _top_level(source)
    return any(m.group(1) == name for p in (_FUNCTION, _BINDING, _ASSIGN) for m in p.finditer(top))


@dataclass(frozen=True, slots=True)
class HookFunction:
    """What a hook's script calls: ``name``; ``declared`` the top-level functions found.

    ``renamed``: the script does not define the expected name and ``name`` is its one function (a warning);
    ``ambiguous``: several functions, none expected, nothing is called (an error).
    """

    name: str
    expected: str
    declared: tuple[str, ...]
    defined: bool = True  # the script binds the expected name

    @property
    def renamed(self) -> bool:
        return self.name != self.expected

    @property
    def ambiguous(self) -> bool:
        return not self.defined and not self.renamed and len(self.declared) > 1


def hook_function(source: str, expected: str) -> HookFunction:
    """The function a hook whose expected name is ``expected`` calls in ``source`` (strict unless RELAXED)."""
    if expected not in RELAXED:
        return HookFunction(expected, expected, ())
    declared = tuple(top_level_functions(source))
    if expected in declared or defines(source, expected):
        return HookFunction(expected, expected, declared)
    if len(declared) == 1:
        return HookFunction(declared[0], expected, declared, defined=False)
    return HookFunction(expected, expected, declared, defined=False)
