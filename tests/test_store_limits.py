"""The store limit (issue I, item 7): sizes, shares, and a real nats-server started with a
small ``max_file_store`` whose bulk streams get their shares: a full stream refuses (never
truncates), a refused publish gives up after a bounded retry, reports still fit, and the
message says what is full and how full."""

from __future__ import annotations

import dataclasses
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from nats.js.api import DiscardPolicy

from sortie.agents.publisher import publish_acked
from sortie.bus.blobcommit import BlobCommits
from sortie.bus.blobs import put_blob, sha256_bytes
from sortie.bus.broker import BrokerProcess, free_port, start_broker
from sortie.bus.connection import Bus, open_bus
from sortie.bus.retention import Retention, apply_retention
from sortie.bus.store_limits import (
    BLOBS_STREAM,
    MIB,
    SHARES,
    FullBound,
    StoreFull,
    StreamUse,
    apply_store_limits,
    budget,
    derive_store_limit,
    full_message,
    parse_size,
    store_uses,
    until_stored,
)
from sortie.proto import codec, subjects
from sortie.proto import messages as m
from sortie.proto.states import RunState

LIMIT = 16 * MIB


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("300MB", 300 * MIB),
        ("300M", 300 * MIB),
        ("2G", 2 * 1024 * MIB),
        ("512MiB", 512 * MIB),
        ("1.5K", 1536),
        ("1048576", MIB),
        (" 64 mb ", 64 * MIB),
    ],
)
def test_parse_size(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "lots", "-5MB", "5XB", "MB"])
def test_parse_size_refuses_what_is_not_a_size(text: str) -> None:
    with pytest.raises(ValueError, match="is not a size"):
        parse_size(text)


def test_shares_leave_room_for_reports_and_kv() -> None:
    assert sum(SHARES.values()) <= 0.9
    assert sum(budget(LIMIT).values()) <= LIMIT * 0.9


def test_full_bound_gives_up_by_count_or_by_time() -> None:
    by_count = FullBound(tries=3, window_s=100)
    assert [by_count.refused(t) for t in (0.0, 1.0, 2.0)] == [False, False, True]
    by_time = FullBound(tries=100, window_s=5)
    assert [by_time.refused(t) for t in (10.0, 12.0, 15.0)] == [False, False, True]


def test_full_message_names_the_full_part_and_how_full() -> None:
    uses = [
        StreamUse(stream=BLOBS_STREAM, used=MIB, limit=8 * MIB),
        StreamUse(stream=subjects.STREAM_LOGS, used=4 * MIB - 1000, limit=4 * MIB),
        StreamUse(stream=subjects.STREAM_METRICS, used=0, limit=MIB),
    ]
    assert full_message(uses) == (
        "the Sortie store is full: run logs use 4.0 MB of 4.0 MB (JetStream max_bytes); "
        "free space with `sortie gc` or raise `sortie up --store-limit`"
    )
    assert "no room for outputs/x (9.0 MB): blobs (snapshots and outputs) use 1.0 MB of " in (
        full_message(uses, blob=("outputs/x", 9 * MIB))
    )
    nothing_limited = [StreamUse(stream=BLOBS_STREAM, used=300 * MIB, limit=-1)]
    assert "300.0 MB used and the broker refuses more (JetStream max_file_store)" in (
        full_message(nothing_limited)
    )


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 64 MiB tmpfs (the tests run as root; elsewhere this test cannot run)."""
    path = tmp_path / "disk"
    path.mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(path)]
    if subprocess.run(mount, capture_output=True, check=False).returncode != 0:
        pytest.skip("mounting a tmpfs is not permitted here")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_the_default_limit_is_the_disk_less_a_reserve_counting_the_store_itself(
    tmpfs: Path,
) -> None:
    store = tmpfs / "jetstream"
    assert derive_store_limit(store) == 64 * MIB - 16 * MIB  # a tenth of 64 MiB < 16 MiB
    (store / "blk").write_bytes(b"x" * (8 * MIB))  # what the store holds is its own
    assert derive_store_limit(store) == 48 * MIB
    (tmpfs / "other").write_bytes(b"x" * (8 * MIB))  # what others hold is not
    assert derive_store_limit(store) == 40 * MIB


@pytest.fixture
def small_broker(tmp_path: Path) -> Iterator[BrokerProcess]:
    proc = start_broker(tmp_path / "nats", port=free_port(), sync_always=False, store_limit=LIMIT)
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
async def small_bus(small_broker: BrokerProcess) -> AsyncIterator[Bus]:
    b = await open_bus(small_broker.url, "test", create=True)
    commits = BlobCommits(b.blobs)  # blobs are stored through a scheduler's commit
    await commits.start()
    try:
        await apply_store_limits(b.js, LIMIT)
        yield b
    finally:
        await commits.stop()
        await b.close()


def test_the_broker_config_carries_the_store_limit(small_broker: BrokerProcess) -> None:
    conf = (small_broker.data_dir / "nats-server.conf").read_text()
    assert f"max_file_store: {LIMIT}" in conf


async def test_full_logs_give_up_after_a_bounded_retry_and_reports_still_fit(
    small_bus: Bus,
) -> None:
    js = small_bus.js
    uses = {u.stream: u for u in await store_uses(js)}
    assert uses[subjects.STREAM_LOGS].limit == budget(LIMIT)[subjects.STREAM_LOGS]
    chunk = b"x" * (256 * 1024)
    with pytest.raises(StoreFull, match=r"the Sortie store is full: run logs use 3\.\d MB of 4\.0"):
        for i in range(64):  # 16 MB: four times the logs' share
            await publish_acked(js, subjects.logs("r1", "a1"), chunk, msg_id=f"l{i}")
    stored = (await js.stream_info(subjects.STREAM_LOGS)).state.messages
    assert 0 < stored < 16  # refused, not truncated: the first lines are kept
    first = await js.get_msg(subjects.STREAM_LOGS, seq=1)
    assert first.data == chunk
    report = m.RunReport(
        agent_id="a1", incarnation="i", run_id="r1", attempt=1, state=RunState.FAILED, at=1.0
    )
    await publish_acked(js, subjects.report("a1"), codec.encode(report), msg_id="rep")


async def test_a_blob_without_room_is_refused_before_it_is_sent(small_bus: Bus) -> None:
    js = small_bus.js
    big = b"y" * (10 * MIB)  # more than the blobs' share (8.8 MB)
    with pytest.raises(StoreFull, match=r"no room for big\.bin \(10\.0 MB\)"):
        await until_stored(
            js, lambda: put_blob(small_bus.blobs, sha256_bytes(big), big), "big.bin", len(big)
        )
    assert (await js.stream_info(BLOBS_STREAM)).state.bytes == 0  # nothing half-sent
    small = b"z" * 1000
    await until_stored(
        js, lambda: put_blob(small_bus.blobs, sha256_bytes(small), small), "small", len(small)
    )


async def test_limits_never_go_below_what_a_stream_holds(broker: BrokerProcess) -> None:
    bus = await open_bus(broker.url, "test", create=True)
    try:
        js = bus.js
        for i in range(12):
            await js.publish(subjects.logs("r1", "a1"), b"x" * (512 * 1024), headers={"i": str(i)})
        held = (await js.stream_info(subjects.STREAM_LOGS)).state.bytes
        await apply_store_limits(js, LIMIT)  # the logs' share (4 MB) is less than they hold
        info = await js.stream_info(subjects.STREAM_LOGS)
        assert info.state.messages == 12 and info.config.max_bytes == held
        uses = {u.stream: u for u in await store_uses(js)}
        assert uses[subjects.STREAM_LOGS].full
    finally:
        await bus.close()


async def test_a_later_start_moves_the_shares_and_a_smaller_own_limit_stays(
    broker: BrokerProcess,
) -> None:
    bus = await open_bus(broker.url, "test", create=True)
    try:
        js = bus.js
        info = await js.stream_info(subjects.STREAM_METRICS)
        retention = dataclasses.replace(info.config, max_bytes=MIB, discard=DiscardPolicy.OLD)
        await js.update_stream(retention)  # a size limit of the stream's own
        own = {subjects.STREAM_METRICS: MIB}  # the scheduler passes retention's sizes
        await apply_store_limits(js, LIMIT, own)
        await apply_store_limits(js, 4 * LIMIT, own)  # restarted with a larger limit
        logs = (await js.stream_info(subjects.STREAM_LOGS)).config
        assert logs.max_bytes == budget(4 * LIMIT)[subjects.STREAM_LOGS]
        assert logs.discard == DiscardPolicy.NEW
        metrics = (await js.stream_info(subjects.STREAM_METRICS)).config
        assert (metrics.max_bytes, metrics.discard) == (MIB, DiscardPolicy.OLD)
        await apply_store_limits(js, LIMIT, own)  # and with a smaller one again
        logs = (await js.stream_info(subjects.STREAM_LOGS)).config
        assert logs.max_bytes == budget(LIMIT)[subjects.STREAM_LOGS]
    finally:
        await bus.close()


async def test_retention_within_its_share_drops_the_oldest_and_a_larger_one_gives_way(
    small_broker: BrokerProcess,
) -> None:
    """What the scheduler does at start: the shares first, then retention on what they leave
    to it, so every share still fits the store and nothing is refused its reservation."""
    bus = await open_bus(small_broker.url, "test", create=True)
    try:
        shares = budget(LIMIT)
        retention = Retention(  # logs: within their share; metrics: far over theirs
            logs_max_age_s=3600,
            logs_max_bytes=shares[subjects.STREAM_LOGS] // 2,
            metrics_max_age_s=7200,
            metrics_max_bytes=10**12,
        )
        capped = await apply_store_limits(bus.js, LIMIT, retention.byte_limits())
        await apply_retention(bus.js, retention, capped)
        got = {
            s: (await bus.js.stream_info(s)).config
            for s in (BLOBS_STREAM, subjects.STREAM_LOGS, subjects.STREAM_METRICS)
        }
        assert (got[BLOBS_STREAM].max_bytes, got[BLOBS_STREAM].discard) == (
            shares[BLOBS_STREAM],
            DiscardPolicy.NEW,
        )
        logs = got[subjects.STREAM_LOGS]
        assert (logs.max_age, logs.max_bytes, logs.discard) == (
            3600,
            shares[subjects.STREAM_LOGS] // 2,
            DiscardPolicy.OLD,
        )
        metrics = got[subjects.STREAM_METRICS]
        assert (metrics.max_age, metrics.max_bytes, metrics.discard) == (
            7200,
            shares[subjects.STREAM_METRICS],
            DiscardPolicy.NEW,
        )
    finally:
        await bus.close()
