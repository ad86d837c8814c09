"""Identifiers: the ones tranche makes (time-ordered, URL-safe, with a readable prefix) and the one shape every
identifier the platform accepts must have."""

from __future__ import annotations

import os
import re
import time

from tranche.shared.errors import ValidationError

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford base32, lower case


def _base32(value: int, width: int) -> str:
    chars = []
    for _ in range(width):
        chars.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def new_id(prefix: str) -> str:
    """A new id like ``bat_01hx3k...``: 48 bits of milliseconds then 80 random bits, so ids sort by time."""
    millis = time.time_ns() // 1_000_000
    return f"{prefix}_{_base32(millis, 10)}{_base32(int.from_bytes(os.urandom(10), 'big'), 16)}"


# The identifiers clients choose (lenders, investors) and those tranche makes (portfolios, batches, ...) share one
# shape: safe in a URL path segment, a file name and a log line. A letter or digit first, so that no id is "." or
# ".." or starts like an option; then letters, digits, "_", "-" and "."; at most 64 characters.
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$"
ID_MAX_LENGTH = 64
_ID = re.compile(ID_PATTERN)


def check_id(value: str, *, field: str, kind: str = "id") -> str:
    """``value`` if it is a valid identifier, else a :class:`ValidationError` naming ``field``.

    The message echoes at most a short prefix of what it refuses, so that a hostile value cannot make the error
    (or the log line that records it) large.
    """
    if _ID.fullmatch(value):
        return value
    shown = value[:32] + ("…" if len(value) > 32 else "")
    raise ValidationError(
        f"{kind} {shown!r} is not a valid identifier: 1 to {ID_MAX_LENGTH} letters, digits, '_', '-' or '.', "
        "starting with a letter or digit",
        field=field,
    )
