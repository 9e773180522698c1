"""Delimited text (NuvIoT "Delimited" content type): one-character delimiter, optional quoted text.

Rules (docs/parsing.md §Delimited): one trailing line break is not part of the last value; values are
not trimmed; with ``quoted`` a value that starts with ``"`` or ``'`` runs to the matching quote, the quotes
are stripped and ``\\n \\r \\t \\\\ \\" \\'`` are unescaped inside it (text between the closing quote and the
next delimiter is kept after the quoted part). An unterminated quote is ``invalid_delimited``.
"""

from __future__ import annotations

from runtime.core.parsing.errors import INVALID_DELIMITED, INVALID_LOCATOR, ParseError, shown

_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "\\": "\\", '"': '"', "'": "'"}


def check_delimiter(delimiter: str | None) -> str:
    if delimiter is None or delimiter == "":
        return ","
    if delimiter in ("\\t", "tab"):
        return "\t"
    if len(delimiter) != 1:
        raise ParseError(INVALID_LOCATOR, f"delimiter {shown(delimiter)} must be one character")
    return delimiter


def split_delimited(text: str, delimiter: str, quoted: bool) -> list[str]:
    if text.endswith("\n"):
        text = text[:-2] if text.endswith("\r\n") else text[:-1]
    if not quoted or ('"' not in text and "'" not in text):
        return text.split(delimiter)
    values: list[str] = []
    i, n = 0, len(text)
    while True:
        if i < n and text[i] in "\"'":
            quote = text[i]
            i += 1
            chars: list[str] = []
            while True:
                if i >= n:
                    raise ParseError(
                        INVALID_DELIMITED, f"unterminated {quote} quote in value {len(values) + 1}"
                    )
                c = text[i]
                if c == "\\" and i + 1 < n and text[i + 1] in _ESCAPES:
                    chars.append(_ESCAPES[text[i + 1]])
                    i += 2
                elif c == quote:
                    i += 1
                    break
                else:
                    chars.append(c)
                    i += 1
            end = text.find(delimiter, i)
            tail = text[i:] if end < 0 else text[i:end]
            values.append("".join(chars) + tail)
        else:
            end = text.find(delimiter, i)
            values.append(text[i:] if end < 0 else text[i:end])
        if end < 0:
            return values
        i = end + 1
