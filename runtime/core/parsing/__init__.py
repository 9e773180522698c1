"""Pure parsing core: message view, locators, binary/text readers, NuvIoT type conversion.

Used by the planner (id parsers), the sentinel (security fields) and the input translator (message
fields). The choices made where NuvIoT's docs are silent or conflict are in docs/parsing.md.

The names below are loaded on first use, so that importing one submodule (``parsing.errors``, as
``runtime/core/values.py`` does) does not import them all.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

# the type checker sees the real names (re-exported: __all__ below); at run time __getattr__ loads them on first use
if TYPE_CHECKING:
    from runtime.core.parsing.errors import ParseError  # noqa: F401
    from runtime.core.parsing.fields import FieldReader, message_readers  # noqa: F401
    from runtime.core.parsing.locate import MISSING, BinaryCursor, as_text, compile_locator, locator_for  # noqa: F401
    from runtime.core.parsing.patterns import compile_regex, dotnet_to_python  # noqa: F401
    from runtime.core.parsing.view import MessageView  # noqa: F401

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


def __getattr__(name: str) -> object:  # names typed by the imports above
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
