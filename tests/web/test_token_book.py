"""The dashboard's token book against a real nats-server: it reads the tokens there at start,
follows mints and revocations, and keeps following across a broker restart (a revocation made
while the dashboard was cut off is honoured once it is back)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import nats.errors

from sortie.bus.broker import free_port, start_broker
from sortie.bus.connection import open_bus
from sortie.client.client import Client
from sortie.proto import codec, subjects
from sortie.proto import web_tokens as wt
from sortie.web.access import Viewer
from sortie.web.tokens import TokenBook

NOW = time.time()


async def put(client: Client, token: str, *, read_only: bool = False) -> None:
    kv = await client.bus.js.key_value(subjects.KV_WEB_TOKENS)
    record = wt.WebToken(label=token[-4:], read_only=read_only, issued_at=NOW, expires_at=None)
    await kv.put(wt.token_hash(token), codec.encode(record))


async def revoke(client: Client, token: str) -> None:
    kv = await client.bus.js.key_value(subjects.KV_WEB_TOKENS)
    await kv.delete(wt.token_hash(token))


async def settles(book: TokenBook, token: str, *, known: bool) -> Viewer | None:
    """What the book says of ``token`` once it says what is expected (bounded wait)."""
    found = None
    for _ in range(150):
        found = await book.lookup(token)
        if (found is not None) is known:
            return found
        await asyncio.sleep(0.1)
    raise AssertionError(f"{token} still {'unknown' if known else 'known'}: {found}")


async def test_the_book_follows_the_bucket_across_a_broker_restart(tmp_path: Path) -> None:
    port = free_port()
    broker = start_broker(tmp_path / "nats", port=port, sync_always=False)
    bus = await open_bus(broker.url, "test", create=True)
    client = Client(bus)
    before, later, gone = wt.PREFIX + "before", wt.PREFIX + "later1", wt.PREFIX + "gone01"
    await put(client, before, read_only=True)
    await put(client, gone)
    book = TokenBook(client)
    await book.start()
    try:
        # what was there at start is known once start returns
        assert await book.lookup(before) == Viewer(
            can_act=False, session=wt.token_hash(before), label="fore"
        )
        assert (await book.lookup(gone)) is not None
        assert await book.lookup("sortie_web_unknown") is None
        assert await book.lookup("not-even-a-token") is None

        broker.stop()
        broker = start_broker(tmp_path / "nats", port=port, sync_always=False)
        for _ in range(100):
            if client.bus.nc.is_connected:
                break
            await asyncio.sleep(0.1)
        for attempt in range(50):  # JetStream answers again once it has recovered its store
            try:
                await revoke(client, gone)
                await put(client, later)
                break
            except nats.errors.TimeoutError:
                assert attempt < 49, "JetStream did not come back"
                await asyncio.sleep(0.2)
        await settles(book, gone, known=False)
        viewer = await settles(book, later, known=True)
        assert viewer is not None and viewer.can_act and viewer.label == "ter1"
        assert await book.lookup(before) is not None
    finally:
        await book.stop()
        await bus.close()
        broker.stop()
