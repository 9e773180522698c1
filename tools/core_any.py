"""Fails when a function signature under runtime/core/ mentions ``Any`` (issue 16 item 4), listing each.

mypy's ``disallow_any_explicit`` (pyproject.toml) keeps most core modules so, but cannot be set for the pydantic
model modules (it counts every BaseModel subclass as an explicit ``Any``); this check covers every module.
Usage: ``python tools/core_any.py [root]`` (``make lint`` runs it).
"""

from __future__ import annotations

import ast
import pathlib
import sys


def _mentions_any(node: ast.expr) -> bool:
    for sub in ast.walk(node):
        if isinstance(sub, ast.Name) and sub.id == "Any":
            return True
        if isinstance(sub, ast.Attribute) and sub.attr == "Any":
            return True
        if isinstance(sub, ast.Constant) and isinstance(sub.value, str) and "Any" in sub.value:
            return True  # a quoted annotation
    return False


def signatures_with_any(root: pathlib.Path) -> list[str]:
    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            a = node.args
            params = [*a.posonlyargs, *a.args, *a.kwonlyargs, *(x for x in (a.vararg, a.kwarg) if x)]
            annotations = [p.annotation for p in params if p.annotation is not None]
            if node.returns is not None:
                annotations.append(node.returns)
            if any(_mentions_any(ann) for ann in annotations):
                found.append(f"{path}:{node.lineno} {node.name}")
    return found


def main() -> int:
    root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "runtime/core")
    found = signatures_with_any(root)
    for line in found:
        print(f"{line}: Any in a core signature")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
