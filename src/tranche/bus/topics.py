"""Topic patterns as AMQP topic exchanges read them: dot-separated words, ``*`` one word, ``#`` any number."""

from __future__ import annotations

from functools import lru_cache


def _validate(pattern: str) -> None:
    for word in pattern.split("."):
        if word not in ("*", "#") and ("*" in word or "#" in word):
            raise ValueError(f"{pattern!r}: '*' and '#' must be whole words")


@lru_cache(maxsize=4096)
def topic_matches(pattern: str, topic: str) -> bool:
    """True when ``topic`` matches ``pattern`` (``loan.*.listed`` matches ``loan.L1.listed``)."""
    _validate(pattern)
    words = pattern.split(".")
    parts = topic.split(".")

    def match(i: int, j: int) -> bool:
        if i == len(words):
            return j == len(parts)
        if words[i] == "#":
            return any(match(i + 1, k) for k in range(j, len(parts) + 1))
        if j == len(parts):
            return False
        return (words[i] == "*" or words[i] == parts[j]) and match(i + 1, j + 1)

    return match(0, 0)
