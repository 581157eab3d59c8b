"""A real `sortie up` with its metrics endpoint on, for the operations tests."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from sortie.bus.broker import free_port
from tests.e2e.conftest import Installation, isolated_env, start_up, stop_up


@dataclass
class Up(Installation):
    metrics_url: str = ""


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    root = tmp_path_factory.mktemp("sortie-ops")
    port, metrics_port = free_port(), free_port()
    env = isolated_env(root)
    log = root / "up.log"
    proc = start_up(root / "data", port, env, log, "--metrics-port", str(metrics_port))
    inst = Up(
        url=f"nats://127.0.0.1:{port}",
        data_dir=root / "data",
        env=env,
        process=proc,
        log=log,
        metrics_url=f"http://127.0.0.1:{metrics_port}/metrics",
    )
    try:
        yield inst
    finally:
        stop_up(proc)
        if os.environ.get("SORTIE_TEST_SHOW_LOG"):
            print(log.read_text()[-5000:])
