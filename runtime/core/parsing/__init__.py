"""Pure parsing core: message view, locators, binary/text readers, NuvIoT type conversion.

Used by the planner (id parsers), the sentinel (security fields) and the input translator (message
fields). The choices made where NuvIoT's docs are silent or conflict are in docs/parsing.md.

The names below are loaded on first use, so that importing one submodule (``parsing.errors``, as
``runtime/core/values.py`` does) does not import them all.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "ParseError": "errors",
    "FieldReader": "fields",
    "message_readers": "fields",
    "MISSING": "locate",
    "BinaryCursor": "locate",
    "as_text": "locate",
    "compile_locator": "locate",
    "locator_for": "locate",
    "compile_regex": "patterns",
    "dotnet_to_python": "patterns",
    "MessageView": "view",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
