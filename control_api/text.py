"""What text from a client may contain, decided once for every field of every request.

PostgreSQL refuses NUL in ``text`` (so a NUL would be a 500 on one backend and stored on the
other); other control characters corrupt logs, calendar files and terminals; bidirectional
embeddings, overrides and isolates (U+202A-U+202E, U+2066-U+2069) make a name or a message read
differently from what it is ("Trojan Source").  Line breaks and tabs are fine in multi-line
fields (descriptions, chat) and refused in single-line ones (titles, names).  Bidirectional
*marks* (U+200E, U+200F, U+061C) stay allowed: right-to-left names need them.
"""

from __future__ import annotations

import re
from typing import Any

_FORBIDDEN = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_LINE_BREAKS = re.compile(r"[\t\n\r\u2028\u2029]")


def text_problem(value: str, *, multiline: bool = True) -> str | None:
    """Why ``value`` may not be stored, or None.  The message never quotes the value."""
    bad = _FORBIDDEN.search(value)
    if bad is not None:
        kind = "bidirectional control" if ord(bad.group()) > 0x9F else "control character"
        return f"must not contain the {kind} U+{ord(bad.group()):04X}"
    if not multiline and _LINE_BREAKS.search(value):
        return "must be a single line (no line breaks or tabs)"
    return None


def first_text_problem(value: Any) -> str | None:
    """The first problem in any string inside ``value`` (strings, lists, dict keys and values)."""
    if isinstance(value, str):
        return text_problem(value)
    if isinstance(value, (list, tuple, set, frozenset)):
        return next((p for p in map(first_text_problem, value) if p), None)
    if isinstance(value, dict):
        return next((p for k, v in value.items() for p in (first_text_problem(k), first_text_problem(v)) if p), None)
    return None
