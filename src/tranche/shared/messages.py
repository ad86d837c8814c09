"""What bounded contexts say to each other: events (past tense) and commands (imperative).

Both are frozen dataclasses. An event subclasses :class:`Event` and declares where it is published with a
``topic`` template over its own fields; a command subclasses :class:`Command` and names the work queue that
carries it. Each context's public face exports ``HANDLERS``: a dict from the message classes it consumes to
plain functions, whose first parameter is the message and whose other parameters are dependencies, injected by
name once, in :func:`tranche.bootstrap.bootstrap`::

    @dataclass(frozen=True, slots=True)
    class LoansAssessed(Event):
        topic_template: ClassVar[str] = "loan.{lender_id}.assessed"
        lender_id: str
        ...

    def offer_assessed_loans(event: LoansAssessed, market: Market) -> None: ...

    HANDLERS: Handlers = {LoansAssessed: [offer_assessed_loans]}

    bound = bind(HANDLERS, market=market)   # each handler now takes the message alone

A handler must be idempotent: the bus delivers at least once, so the same message may arrive twice, or again
after a crash, and must change nothing the second time.
"""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

_PLACEHOLDER = re.compile(r"\{([a-z_][a-z0-9_]*)\}")


class Event:
    """Base of every event. ``topic_template`` names its topic with ``{field}`` placeholders."""

    __slots__ = ()
    topic_template: ClassVar[str]

    @property
    def topic(self) -> str:
        """Where this event is published, e.g. ``loan.acme.assessed``."""
        return _PLACEHOLDER.sub(lambda m: str(getattr(self, m.group(1))), self.topic_template)

    @classmethod
    def topic_patterns(cls) -> tuple[str, ...]:
        """The bus patterns that receive every event of this class (each placeholder a ``*``)."""
        return (_PLACEHOLDER.sub("*", cls.topic_template),)


class Command:
    """Base of every command. ``queue`` names the work queue that carries it to the one role that acts on it."""

    __slots__ = ()
    queue: ClassVar[str]


Handler = Callable[..., object]
Handlers = Mapping[type, Sequence[Handler]]
BoundHandler = Callable[[Any], object]


def bind(handlers: Handlers, **dependencies: object) -> dict[type, list[BoundHandler]]:
    """Each handler with its dependencies bound by parameter name, so that it takes the message alone.

    A parameter with no dependency of its name and no default is a wiring mistake, reported at start rather
    than at the first message.
    """
    bound: dict[type, list[BoundHandler]] = {}
    for message_type, functions in handlers.items():
        for function in functions:
            parameters = list(inspect.signature(function).parameters.values())[1:]
            given = {p.name: dependencies[p.name] for p in parameters if p.name in dependencies}
            missing = [
                p.name for p in parameters if p.name not in given and p.default is inspect.Parameter.empty
            ]
            if missing:
                raise TypeError(f"{function.__qualname__} needs {', '.join(missing)}, which nothing provides")
            bound.setdefault(message_type, []).append(functools.partial(function, **given))
    return bound
