"""Pure parsing core: message view, locators, binary/text readers, NuvIoT type conversion.

Used by the planner (id parsers), the sentinel (security fields) and the input translator (message
fields). The choices made where NuvIoT's docs are silent or conflict are in docs/parsing.md.
"""

from runtime.core.parsing.errors import ParseError
from runtime.core.parsing.fields import FieldReader, message_readers
from runtime.core.parsing.locate import MISSING, BinaryCursor, as_text, compile_locator, locator_for
from runtime.core.parsing.patterns import compile_regex, dotnet_to_python
from runtime.core.parsing.view import MessageView

__all__ = [
    "MISSING",
    "BinaryCursor",
    "FieldReader",
    "MessageView",
    "ParseError",
    "as_text",
    "compile_locator",
    "compile_regex",
    "dotnet_to_python",
    "locator_for",
    "message_readers",
]
