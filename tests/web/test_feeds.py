"""A feed asks once per tick however many pages follow it, and not at all when none does."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from sortie.web.feeds import Feed


async def test_one_request_serves_every_follower_and_none_is_made_without_them() -> None:
    asked: list[int] = []

    async def fetch() -> int:
        asked.append(len(asked) + 1)
        return len(asked)

    feed = Feed(fetch, every_s=3600)  # only pokes ask again
    pages = [feed.follow() for _ in range(5)]
    assert [await anext(p) for p in pages] == [1] * 5
    feed.poke()
    assert [await anext(p) for p in pages] == [2] * 5
    assert asked == [1, 2]
    for p in pages:
        await close(p)
    feed.poke()
    await asyncio.sleep(0)
    assert asked == [1, 2]  # nobody follows: nothing asked
    late = feed.follow()
    assert await anext(late) == 3  # a new follower starts it again, with a fresh answer
    await close(late)


async def test_an_unchanged_answer_is_not_sent_again() -> None:
    answers = iter(["a", "a", "b"])

    async def fetch() -> str:
        return next(answers)

    feed = Feed(fetch, every_s=3600)
    page = feed.follow()
    assert await anext(page) == "a"
    feed.poke()  # "a" again: not sent
    await asyncio.sleep(0.01)
    feed.poke()
    assert await anext(page) == "b"
    await close(page)


async def test_what_a_page_read_for_itself_is_known_so_the_change_back_is_sent() -> None:
    # a cluster created and deleted between two ticks: the page drew "pool" from its own
    # read after the create; the feed had sent "none" and reads "none" again after the delete
    answers = iter(["none", "pool", "none"])

    async def fetch() -> str:
        return next(answers)

    feed = Feed(fetch, every_s=3600)
    page = feed.follow()
    assert await anext(page) == "none"
    assert await feed.now() == "pool"  # the page's read after its action
    assert await anext(page) == "pool"  # the followers are told too
    feed.poke()
    assert await asyncio.wait_for(anext(page), 30) == "none"  # news again: sent
    await close(page)


async def test_a_read_with_nobody_following_is_not_kept() -> None:
    answers = iter(["a", "b"])

    async def fetch() -> str:
        return next(answers)

    feed = Feed(fetch, every_s=3600)
    assert await feed.now() == "a"
    page = feed.follow()
    assert await anext(page) == "b"  # the first follower gets a fresh answer, not a kept one
    await close(page)


async def test_a_fetch_that_raises_is_asked_again_at_the_next_tick() -> None:
    calls: list[int] = []

    async def fetch() -> str:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("a bug")
        return "fine"

    feed = Feed(fetch, every_s=0.01)
    page = feed.follow()
    assert await asyncio.wait_for(anext(page), 30) == "fine"
    await close(page)


async def close(page: AsyncIterator[object]) -> None:
    aclose = getattr(page, "aclose", None)
    assert aclose is not None
    with contextlib.suppress(StopAsyncIteration):
        await aclose()
