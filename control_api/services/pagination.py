"""Opaque keyset cursors: the sort key of the last item, base64url-encoded JSON."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

from control_api.errors import invalid


def encode_cursor(*values: Any) -> str:
    raw = json.dumps([v if isinstance(v, (int, float)) else str(v) for v in values])
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def aware_datetime(value: str) -> datetime:
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        raise ValueError("naive datetime in cursor")
    return parsed


def decode_cursor(cursor: str, converters: tuple[Callable[[Any], Any], ...]) -> list[Any]:
    """Decode a cursor whose values must pass ``converters``; a bad cursor is a 422."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        values = json.loads(base64.urlsafe_b64decode(padded.encode()))
        if not isinstance(values, list) or len(values) != len(converters):
            raise ValueError("wrong shape")
        return [kind(value) for kind, value in zip(converters, values, strict=True)]
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        raise invalid("cursor is not valid", code="invalid_cursor") from None
