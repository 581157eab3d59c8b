"""A stop ends a task even when one cancel is lost (Python 3.11's ``asyncio.wait_for`` loses a
cancel that arrives as its timeout fires; a loop around it then runs on)."""

from __future__ import annotations

import asyncio

import pytest

from sortie.bus.tasks import stop_task


async def test_a_task_that_lost_a_cancel_is_cancelled_again_until_it_ends() -> None:
    lost = 0

    async def loop_losing_the_first_cancel() -> None:
        nonlocal lost
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                if lost:
                    raise
                lost += 1  # as wait_for does when its timeout fires with the cancel

    task = asyncio.create_task(loop_losing_the_first_cancel())
    await asyncio.sleep(0)
    await asyncio.wait_for(stop_task(task, every_s=0.05), timeout=5)
    assert task.cancelled() and lost == 1


async def test_what_the_task_raised_is_raised() -> None:
    async def fails() -> None:
        raise ValueError("broken")

    task = asyncio.create_task(fails())
    await asyncio.sleep(0)
    with pytest.raises(ValueError, match="broken"):
        await stop_task(task)
