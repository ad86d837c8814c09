"""JSON for frozen dataclass events, exact for the types tranche's events use.

``Decimal`` travels as a string (never a float), ``date``/``datetime`` as ISO 8601, enums as their value,
tuples and lists as arrays, nested dataclasses as objects. Decoding reads the dataclass's type hints, so
``tuple[Bid, ...]`` comes back as a tuple of ``Bid`` and ``Decimal`` as ``Decimal``.

    codec = EventCodec(OfferMatched, LoanFunded)
    message = codec.to_message(event, "offer.L1.matched")
    assert codec.from_message(message) == event
"""

from __future__ import annotations

import dataclasses
import enum
import json
import types
import typing
import uuid
from collections.abc import Mapping
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from functools import cache
from typing import Any, TypeVar

from tranche.bus.errors import CodecError, UnknownEventTypeError
from tranche.bus.message import HeaderValue, Message

T = TypeVar("T")


def to_jsonable(value: Any) -> Any:
    """A value made of JSON types only, following the rules in the module docstring."""
    if value is None or isinstance(value, bool | int | str | float):
        return value
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, enum.Enum):
        return to_jsonable(value.value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(key): to_jsonable(item) for key, item in value.items()}
    if isinstance(value, tuple | list | set | frozenset):
        return [to_jsonable(item) for item in value]
    raise CodecError(f"cannot encode a {type(value).__name__} as JSON")


@cache
def _field_names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))


def _default(value: Any) -> Any:
    """What :func:`to_jsonable` makes of a value the JSON encoder does not know, one level deep: the encoder
    (in C) walks the rest, which matters for events that carry a thousand loans."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {name: _in_one_pass(getattr(value, name)) for name in _field_names(type(value))}
    if isinstance(value, Decimal | uuid.UUID):
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, set | frozenset):
        return list(value)
    raise CodecError(f"cannot encode a {type(value).__name__} as JSON")


def _in_one_pass(value: Any) -> Any:
    """A tuple or list of instances of one dataclass (a thousand loans of an event, say) as dicts, made in one
    pass instead of a call back from the encoder for each; any other value as it is."""
    if type(value) in (tuple, list) and value:
        cls = type(value[0])
        if dataclasses.is_dataclass(cls) and all(type(item) is cls for item in value):
            names = _field_names(cls)
            return [{name: getattr(item, name) for name in names} for item in value]
    return value


def encode(value: Any) -> bytes:
    """``value`` as compact UTF-8 JSON bytes."""
    try:
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=_default)
    except (TypeError, ValueError):  # a key the encoder does not take (a date, say): the slow, general way
        text = json.dumps(to_jsonable(value), separators=(",", ":"), ensure_ascii=False)
    return text.encode()


@cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def from_jsonable(tp: Any, data: Any, *, where: str = "") -> Any:
    """Rebuild a value of type ``tp`` from what :func:`to_jsonable` made of it."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any or tp is object:
        return data
    if origin is typing.Union or origin is types.UnionType:
        if data is None and type(None) in args:
            return None
        problems = []
        for option in (a for a in args if a is not type(None)):
            try:
                return from_jsonable(option, data, where=where)
            except CodecError as error:
                problems.append(error.message)
        raise CodecError(
            f"{where or 'value'}: {data!r} fits none of {tp}: {'; '.join(problems)}", field=where
        )
    if origin is typing.Literal:
        if data in args:
            return data
        raise CodecError(f"{where or 'value'}: {data!r} is not one of {args}", field=where)
    if origin in (tuple, list, set, frozenset):
        if not isinstance(data, list):
            raise CodecError(f"{where or 'value'}: expected an array, got {type(data).__name__}", field=where)
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            if args and len(args) != len(data):
                raise CodecError(f"{where or 'value'}: expected {len(args)} items", field=where)
            items = (
                [from_jsonable(a, d, where=where) for a, d in zip(args, data, strict=False)] if args else data
            )
            return tuple(items)
        item_type = args[0] if args else Any
        return origin(from_jsonable(item_type, d, where=where) for d in data)
    if origin is dict or tp is dict:
        if not isinstance(data, dict):
            raise CodecError(f"{where or 'value'}: expected an object", field=where)
        value_type = args[1] if len(args) == 2 else Any
        return {key: from_jsonable(value_type, item, where=where) for key, item in data.items()}
    if not isinstance(tp, type):
        raise CodecError(f"{where or 'value'}: unsupported type {tp!r}", field=where)
    try:
        return _from_plain(tp, data, where)
    except (ValueError, TypeError, InvalidOperation) as error:
        raise CodecError(
            f"{where or 'value'}: cannot read {data!r} as {tp.__name__}: {error}", field=where
        ) from None


def _from_plain(tp: type, data: Any, where: str) -> Any:
    if dataclasses.is_dataclass(tp):
        if not isinstance(data, dict):
            raise CodecError(f"{where or tp.__name__}: expected an object", field=where)
        hints = _hints(tp)
        values = {}
        for f in dataclasses.fields(tp):
            if f.init and f.name in data:
                values[f.name] = from_jsonable(hints[f.name], data[f.name], where=f.name)
        return tp(**values)
    if issubclass(tp, enum.Enum):
        return tp(data)
    if tp is Decimal:
        if not isinstance(data, str | int):
            raise TypeError("a Decimal travels as a string")
        return Decimal(data)
    if tp is datetime:
        return datetime.fromisoformat(data)
    if tp is date:
        return date.fromisoformat(data)
    if tp is uuid.UUID:
        return uuid.UUID(data)
    if tp is bool:
        if not isinstance(data, bool):
            raise TypeError("not a boolean")
        return data
    if tp is int:
        if isinstance(data, bool) or not isinstance(data, int):
            raise TypeError("not an integer")
        return data
    if tp is float:
        if isinstance(data, bool) or not isinstance(data, int | float):
            raise TypeError("not a number")
        return float(data)
    if tp is str:
        if not isinstance(data, str):
            raise TypeError("not a string")
        return data
    raise CodecError(f"{where or 'value'}: unsupported type {tp.__name__}", field=where)


def decode(tp: type[T], body: bytes) -> T:
    """The ``tp`` encoded in ``body`` by :func:`encode`."""
    try:
        data = json.loads(body)
    except ValueError as error:
        raise CodecError(f"not JSON: {error}") from None
    result: T = from_jsonable(tp, data)
    return result


class EventCodec:
    """Turns registered event classes into messages and back; the message ``type`` names the class."""

    def __init__(self, *event_types: type) -> None:
        self._by_name: dict[str, type] = {}
        self._names: dict[type, str] = {}
        for event_type in event_types:
            self.register(event_type)

    def register(self, event_type: type[T], *, name: str | None = None) -> type[T]:
        """Register an event class (usable as a decorator); ``name`` defaults to the class name."""
        if not dataclasses.is_dataclass(event_type):
            raise CodecError(f"{event_type!r} is not a dataclass")
        type_name = name or event_type.__name__
        known = self._by_name.get(type_name)
        if known is not None and known is not event_type:
            raise CodecError(f"two event types are called {type_name!r}", record=type_name)
        self._by_name[type_name] = event_type
        self._names[event_type] = type_name
        return event_type

    def type_name(self, event: object) -> str:
        name = self._names.get(type(event))
        if name is None:
            raise UnknownEventTypeError(
                f"{type(event).__name__} is not registered with the codec", record=type(event).__name__
            )
        return name

    def to_message(
        self,
        event: object,
        routing_key: str = "",
        *,
        message_id: str | None = None,
        headers: Mapping[str, HeaderValue] | None = None,
    ) -> Message:
        properties: dict[str, Any] = {"routing_key": routing_key, "type": self.type_name(event)}
        if message_id is not None:
            properties["message_id"] = message_id
        if headers:
            properties["headers"] = dict(headers)
        return Message(body=encode(event), **properties)

    def from_message(self, message: Message) -> Any:
        event_type = self._by_name.get(message.type)
        if event_type is None:
            raise UnknownEventTypeError(f"no event type {message.type!r} is registered", record=message.type)
        try:
            return decode(event_type, message.body)
        except CodecError as error:
            raise CodecError(error.message, record=message.message_id, field=error.field) from None
