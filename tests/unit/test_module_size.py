"""The house rule a newcomer relies on (STYLE: modules under ~400 lines, 600 at most): no module of the
runtime grows past 600 lines unnoticed (issue 16 item 7)."""

from __future__ import annotations

from pathlib import Path

import runtime

LIMIT = 600


def test_no_runtime_module_is_over_600_lines() -> None:
    root = Path(runtime.__file__).parent
    sizes = {str(p.relative_to(root.parent)): len(p.read_text(encoding="utf-8").splitlines())
             for p in root.rglob("*.py")}
    assert len(sizes) > 50  # the tree was found
    over = {path: n for path, n in sizes.items() if n > LIMIT}
    assert not over, f"modules over {LIMIT} lines (split them by cohesion): {over}"
