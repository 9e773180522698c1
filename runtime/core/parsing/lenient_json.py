"""JSON as leniently as Newtonsoft's ``JToken.Parse`` reads it, for bodies strict JSON refuses.

NuvIoT reads message bodies with Newtonsoft, which accepts single-quoted strings (NuvIoT's own sample
messages: ``{'motion':'on'}``), trailing commas, ``//`` and ``/* */`` comments and unquoted property names.
``normalise`` rewrites such text into strict JSON; it is only called after the strict parser (orjson) failed,
so strict JSON stays on the fast path. It raises ``ValueError`` for an unterminated string or comment.
"""

from __future__ import annotations

_SPACE = frozenset(" \t\r\n")
_IDENT_START = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_$")
_IDENT = _IDENT_START | frozenset("0123456789")


def normalise(text: str) -> str:
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == '"':
            end = _string_end(text, i, '"')
            out.append(text[i:end])
            i = end
        elif c == "'":
            end = _string_end(text, i, "'")
            out.append(_requote(text[i + 1 : end - 1]))
            i = end
        elif c == "/" and i + 1 < n and text[i + 1] in "/*":
            i = _skip_comment(text, i)
        elif c == ",":  # a trailing comma (after a value, before ``}`` or ``]``) is dropped
            j = _next_significant(text, i + 1)
            if j >= n or text[j] not in "}]" or _last_significant(out) in "{[,":
                out.append(c)
            i += 1
        elif c in _IDENT_START:
            j = i + 1
            while j < n and text[j] in _IDENT:
                j += 1
            word = text[i:j]
            k = _next_significant(text, j)
            out.append(f'"{word}"' if k < n and text[k] == ":" else word)
            i = j
        else:
            out.append(c)
            i += 1
    return "".join(out)


def _last_significant(out: list[str]) -> str:
    for piece in reversed(out):
        stripped = piece.rstrip()
        if stripped:
            return stripped[-1]
    return ""


def _string_end(text: str, start: int, quote: str) -> int:
    """The index after the closing quote of the string opening at ``start``."""
    i, n = start + 1, len(text)
    while i < n:
        c = text[i]
        if c == "\\":
            i += 2
        elif c == quote:
            return i + 1
        else:
            i += 1
    raise ValueError("unterminated string")


def _requote(inner: str) -> str:
    """The body of a single-quoted string as a double-quoted JSON string (``\\'`` -> ``'``, ``"`` escaped)."""
    chars: list[str] = ['"']
    i, n = 0, len(inner)
    while i < n:
        c = inner[i]
        if c == "\\" and i + 1 < n:
            chars.append("'" if inner[i + 1] == "'" else inner[i : i + 2])
            i += 2
            continue
        chars.append('\\"' if c == '"' else c)
        i += 1
    chars.append('"')
    return "".join(chars)


def _skip_comment(text: str, i: int) -> int:
    if text[i + 1] == "/":
        end = text.find("\n", i + 2)
        return len(text) if end < 0 else end
    end = text.find("*/", i + 2)
    if end < 0:
        raise ValueError("unterminated comment")
    return end + 2


def _next_significant(text: str, i: int) -> int:
    n = len(text)
    while i < n:
        if text[i] in _SPACE:
            i += 1
        elif text[i] == "/" and i + 1 < n and text[i + 1] in "/*":
            i = _skip_comment(text, i)
        else:
            return i
    return n
