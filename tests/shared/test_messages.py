from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import ClassVar

import pytest

from tranche.bus import EventCodec, InProcessBus
from tranche.bus.dispatch import subscribe_handlers, topic_patterns
from tranche.shared.messages import Event, bind


@dataclass(frozen=True, slots=True)
class ThingHappened(Event):
    topic_template: ClassVar[str] = "thing.{owner}.{kind}"
    owner: str
    kind: str
    size: int


def test_an_event_names_its_topic_from_its_fields() -> None:
    assert ThingHappened("acme", "big", 3).topic == "thing.acme.big"
    assert ThingHappened.topic_patterns() == ("thing.*.*",)


def test_bind_injects_dependencies_by_parameter_name() -> None:
    seen: list[tuple[int, str]] = []

    def record(event: ThingHappened, sink: list[tuple[int, str]], label: str = "default") -> None:
        sink.append((event.size, label))

    bound = bind({ThingHappened: [record]}, sink=seen, unused=object())
    bound[ThingHappened][0](ThingHappened("a", "b", 7))
    assert seen == [(7, "default")]


def test_bind_refuses_a_handler_whose_dependency_nothing_provides() -> None:
    def needs_store(event: ThingHappened, store: object) -> None: ...

    with pytest.raises(TypeError, match="needs store"):
        bind({ThingHappened: [needs_store]})


def test_a_class_that_is_not_an_event_cannot_be_subscribed() -> None:
    with pytest.raises(TypeError, match="not an Event"):
        topic_patterns([int])


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_subscribed_handlers_receive_the_events_of_their_class() -> None:
    codec = EventCodec()
    seen: list[ThingHappened] = []
    async with InProcessBus() as bus:
        await subscribe_handlers(bus, codec, {ThingHappened: [seen.append]}, group="things")
        event = ThingHappened("acme", "big", 3)
        await bus.publish(codec.to_message(event, event.topic))
        await bus.publish(codec.to_message(ThingHappened("acme", "small", 1), "thing.acme.small"))
        for _ in range(100):
            if len(seen) == 2:
                break
            await asyncio.sleep(0.01)
    assert seen == [event, ThingHappened("acme", "small", 1)]
