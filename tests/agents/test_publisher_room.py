"""Back-pressure in the publisher (agents.publisher.Batcher.room): while sends cannot finish
(the broker is away) at most ``max_waiting`` of items wait, and a producer that awaits room
before adding more stops until the broker takes them."""

from __future__ import annotations

import asyncio

from sortie.agents.publisher import Batcher


async def test_room_waits_while_sends_are_stuck_and_returns_when_they_go() -> None:
    broker_back = asyncio.Event()
    sent: list[str] = []

    async def send(batch: list[str]) -> None:  # a publish that waits for the broker
        await broker_back.wait()
        sent.extend(batch)

    batcher: Batcher[str] = Batcher(send, max_items=10, interval=0.01, weigh=len, max_waiting=100)
    produced = 0

    async def produce() -> None:
        nonlocal produced
        for _ in range(1000):
            await batcher.room()
            batcher.add("x" * 10)
            produced += 1

    producer = asyncio.create_task(produce())
    await asyncio.sleep(0.3)
    # one batch in flight (10 items) and at most 100 characters (10 items) waiting
    assert not producer.done()
    assert produced <= 10 + 10 + 1
    stuck_at = produced
    await asyncio.sleep(0.2)
    assert produced == stuck_at  # still stuck: nothing grows while the broker is away
    broker_back.set()
    await asyncio.wait_for(producer, 30)
    await batcher.close()
    assert len(sent) == 1000 and produced == 1000


async def test_without_a_bound_room_never_waits() -> None:
    async def send(_batch: list[int]) -> None:
        await asyncio.Event().wait()  # never acked

    batcher: Batcher[int] = Batcher(send, max_items=5, interval=0.01)
    for i in range(100):
        await asyncio.wait_for(batcher.room(), 1)
        batcher.add(i)
    batcher.abort()
