"""`sortie up --schedulers 2`: two schedulers as child processes, one leading and one standing
by; after a kill -9 of the leader one leads at the next epoch, a run submitted meanwhile
completes once, and the killed one is started again (two schedulers again)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sortie.bus.broker import free_port
from tests.e2e.conftest import Installation, isolated_env, start_up, stop_up


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Installation]:
    port = free_port()
    env = isolated_env(tmp_path)
    log = tmp_path / "up.log"
    data = tmp_path / "data"
    proc = start_up(data, port, env, log, "--schedulers", "2")
    inst = Installation(
        url=f"nats://127.0.0.1:{port}", data_dir=data, env=env, process=proc, log=log
    )
    try:
        yield inst
    finally:
        stop_up(proc, timeout=60)


def schedulers(inst: Installation) -> list[dict[str, Any]]:
    got = inst.json("status")
    assert isinstance(got, dict)
    return list(got["schedulers"])


def until_roles(
    inst: Installation, pred: Any, what: str, timeout: float = 90
) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        found = schedulers(inst)
        if pred(found):
            return found
        assert inst.process.poll() is None, inst.log.read_text()[-3000:]
        assert time.monotonic() < deadline, f"{what}: {found}\n{inst.log.read_text()[-3000:]}"
        time.sleep(0.5)


def test_a_killed_leader_is_replaced_at_the_next_epoch_and_started_again(
    pair: Installation, tmp_path: Path
) -> None:
    first = until_roles(
        pair, lambda s: [x["role"] for x in s] == ["leader", "standby"], "one leader, one standby"
    )
    leader, standby = first
    assert leader["epoch"] == 1 and leader["pid"] != standby["pid"]
    assert {leader["pid"], standby["pid"]}.isdisjoint({pair.process.pid})  # children

    os.kill(leader["pid"], signal.SIGKILL)
    src = tmp_path / "src"
    src.mkdir()
    (src / "train.py").write_text("from sortie import Run\nRun.get_context().log('loss', 0.5)\n")
    # submitted while nobody leads: the client retries with its submission id until one does
    out = pair.cli("run", "submit", str(src), "--script", "train.py", "--wait", check=True)
    assert "Completed" in out.stderr, out.stderr

    after = until_roles(
        pair,
        lambda s: [x["role"] for x in s] == ["leader", "standby"] and s[0]["epoch"] == 2,
        "the standby leads at epoch 2 and the killed one stands by again",
    )
    # the killed one was started again in its seat (its data directory, which no live
    # scheduler holds), so it may take the lease back at once; or the standby's lease wait
    # ended first: either way one leads at epoch 2, the other stands by, none is the dead one
    pids = {x["pid"] for x in after}
    assert leader["pid"] not in pids and standby["pid"] in pids and len(pids) == 2
    runs = pair.json("run", "list")
    assert isinstance(runs, list) and len(runs) == 1 and runs[0]["state"] == "Completed"
    log = pair.log.read_text()
    assert "scheduler exited; starting it again" in log
    assert "leader: epoch 2" in log
