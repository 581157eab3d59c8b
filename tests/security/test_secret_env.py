"""Secret environment variables: they reach the run and nothing else.

The pure checks and reprs, the scheduler's owner-only store, the agent's side, and the real
scheduler (real broker, simulated agent) keeping the values across its own restart so a
requeued run still gets them. `test_secret_canary_e2e.py` follows one canary through a real
`sortie up`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
from collections.abc import AsyncIterator
from pathlib import Path, PurePath

import pytest
import structlog

from sortie.agents.attempt import ChildEnv, child_env, missing_secrets
from sortie.bus.broker import BrokerProcess
from sortie.bus.connection import Bus
from sortie.cli.common import UsageError
from sortie.cli.submit import secret_env as _secret_env
from sortie.client.client import Client
from sortie.client.sdk import RunConfiguration, ScriptRunConfig
from sortie.proto import codec
from sortie.proto import messages as m
from sortie.proto.states import RunState
from sortie.scheduler import core, run_secrets
from sortie.scheduler.daemon import SchedulerConfig, run_scheduler
from sortie.scheduler.model import SchedulerState
from sortie.scheduler.reconcile import Timing
from sortie.scheduler.validate import check_secrets, check_spec
from tests.builders import heartbeat, spec
from tests.harness import FakeAgent

CANARY = "canary-7f3a9c1e-do-not-leak"
SECRET = m.SecretEnv(values={"API_TOKEN": CANARY})


def secret_config() -> RunConfiguration:
    return RunConfiguration(secret_environment_variables={"API_TOKEN": CANARY})


CFG = core.Config(timing=Timing(lease_s=10, assign_ack_s=3))


def secret_spec(**kw: object) -> m.RunSpec:
    return spec(secret_env_names=["API_TOKEN"], **kw)


# --- pure --------------------------------------------------------------------------------------


def test_reprs_name_the_variables_never_the_values() -> None:
    assign = m.Assign(run_id="r", attempt=1, incarnation="i", spec=secret_spec(), secret_env=SECRET)
    shown = [
        repr(SECRET),
        repr(m.SubmitRequest(spec=secret_spec(), secret_env=SECRET)),
        repr(assign),
        repr(core.SendToAgent("a1", assign, "r")),
        repr(core.SaveRunSecret(run_id="r", secret=SECRET)),
        repr(ScriptRunConfig(source_directory=".", script="t.py", run_config=secret_config())),
        repr(RunConfiguration(secret_environment_variables={"API_TOKEN": CANARY})),
    ]
    for text in shown:
        assert CANARY not in text
    assert "API_TOKEN" in shown[0]


@pytest.mark.parametrize(
    ("names", "env_vars", "secret", "why"),
    [
        (["API_TOKEN"], {}, None, "without a value: API_TOKEN"),
        ([], {}, {"API_TOKEN": CANARY}, "not named: API_TOKEN"),
        (["API_TOKEN"], {}, {"OTHER": CANARY}, "without a value: API_TOKEN; not named: OTHER"),
        (["API_TOKEN"], {}, {"API_TOKEN": CANARY + "\x00"}, "contains a NUL byte"),
        (["SORTIE_RUN_ID"], {}, {"SORTIE_RUN_ID": CANARY}, "SORTIE_* names are reserved"),
        (["1BAD"], {}, {"1BAD": CANARY}, "is not valid"),
        (["API_TOKEN", "API_TOKEN"], {}, {"API_TOKEN": CANARY}, "named twice"),
        (["API_TOKEN"], {"API_TOKEN": "plain"}, {"API_TOKEN": CANARY}, "also given as a plain"),
    ],
)
def test_bad_secret_requests_are_refused_without_echoing_values(
    names: list[str], env_vars: dict[str, str], secret: dict[str, str] | None, why: str
) -> None:
    s = spec(secret_env_names=names, env_vars=env_vars)
    given = m.SecretEnv(values=secret) if secret is not None else None
    problem = check_spec(s, {"local"}) or check_secrets(s, given)
    assert problem is not None and why in problem.message
    assert CANARY not in problem.message


def test_a_nul_in_a_plain_value_is_refused_before_it_reaches_an_agent() -> None:
    problem = check_spec(spec(env_vars={"A": "x\x00y"}), {"local"})
    assert problem is not None and "NUL" in problem.message


def test_the_core_keeps_values_off_the_record_and_hands_them_to_the_daemon() -> None:
    s = SchedulerState(started_at=0.0)
    core.handle(s, core.HeartbeatSeen(heartbeat=heartbeat()), 0.0, CFG)
    check = m.SubmitRequest(spec=secret_spec(), validate_only=True, secret_env=SECRET)
    cmds = core.handle(s, core.Submitted(request=check, run_id="r0", reply_to="x"), 0.0, CFG)
    assert [type(c).__name__ for c in cmds] == ["Reply"] and not s.runs
    req = m.SubmitRequest(spec=secret_spec(), secret_env=SECRET)
    cmds = core.handle(s, core.Submitted(request=req, run_id="r1", reply_to="x"), 0.0, CFG)
    assert [c for c in cmds if isinstance(c, core.SaveRunSecret)] == [
        core.SaveRunSecret(run_id="r1", secret=SECRET)
    ]
    cmds += core.decide(s, 1.0, CFG)
    (assign,) = [c.command for c in cmds if isinstance(c, core.SendToAgent)]
    assert isinstance(assign, m.Assign) and assign.secret_env is None  # added by the daemon
    record = codec.encode(s.runs["r1"])
    assert CANARY.encode() not in record and b"API_TOKEN" in record
    for c in cmds:
        if isinstance(c, core.Reply):
            assert CANARY.encode() not in codec.encode(c.message)
        if isinstance(c, core.Log):
            assert CANARY not in repr(c)


def test_the_run_gets_the_values_and_a_missing_value_fails_clearly() -> None:
    env = child_env(
        {"HOME": "/h"},
        secret_spec(env_vars={"PLAIN": "1"}),
        ChildEnv(
            run_id="r",
            attempt=1,
            metrics_file=PurePath("/m"),
            outputs_dir=PurePath("/o"),
            runtime_dir=PurePath("/rt"),
            secret_env=SECRET,
        ),
    )
    assert env["API_TOKEN"] == CANARY and env["PLAIN"] == "1"
    ok = m.Assign(run_id="r", attempt=1, incarnation="i", spec=secret_spec(), secret_env=SECRET)
    assert missing_secrets(ok) is None
    lost = m.Assign(run_id="r", attempt=2, incarnation="i", spec=secret_spec())
    why = missing_secrets(lost)
    assert why is not None and "API_TOKEN" in why and "submit the run again" in why


def test_the_cli_takes_values_from_the_environment_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("API_TOKEN", CANARY)
    assert _secret_env(["API_TOKEN"]) == {"API_TOKEN": CANARY}
    with pytest.raises(UsageError) as err:
        _secret_env([f"API_TOKEN={CANARY}"])
    assert "never taken from the command line" in str(err.value) and CANARY not in str(err.value)
    monkeypatch.delenv("API_TOKEN")
    with pytest.raises(UsageError, match=r"\$API_TOKEN is not set"):
        _secret_env(["API_TOKEN"])


def test_the_store_is_owner_only_and_keyed_by_run_id(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        run_secrets.save(tmp_path, "r1", SECRET)
    finally:
        os.umask(old)
    d = tmp_path / run_secrets.DIRNAME
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    assert stat.S_IMODE((d / "r1.json").stat().st_mode) == 0o600
    (d / "r2.json").write_bytes(b"\x80 not json")
    (d / "..bad.json").write_bytes(codec.encode(SECRET))
    kept, unreadable = run_secrets.load_all(tmp_path)
    assert kept == {"r1": SECRET} and sorted(unreadable) == ["..bad.json", "r2.json"]
    run_secrets.delete(tmp_path, "r1")
    assert not (d / "r1.json").exists()
    with pytest.raises(ValueError, match="run id"):
        run_secrets.save(tmp_path, "../escape", SECRET)


# --- the real scheduler ------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def scheduler(url: str, data_dir: Path) -> AsyncIterator[None]:
    stop = asyncio.Event()
    ready = asyncio.Event()
    cfg = SchedulerConfig(
        url=url,
        data_dir=data_dir,
        timing=Timing(lease_s=1.5, assign_ack_s=1.0, kill_grace_s=0.5),
        tick_s=0.2,
    )
    task = asyncio.create_task(run_scheduler(cfg, stop, ready))
    await asyncio.wait_for(ready.wait(), 10)
    try:
        yield
    finally:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 10)


async def next_assign(agent: FakeAgent) -> m.Assign:
    while True:
        cmd = await agent.next_command(timeout=15)
        if isinstance(cmd, m.Assign):
            return cmd


async def test_values_survive_a_scheduler_restart_and_leave_with_the_run(
    broker: BrokerProcess, bus: Bus, tmp_path: Path
) -> None:
    data_dir = tmp_path / "scheduler"
    secret_file = data_dir / run_secrets.DIRNAME / "{}.json"
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "t.py").write_text("print(1)\n")
    with structlog.testing.capture_logs() as logged:
        async with scheduler(broker.url, data_dir):
            agent = FakeAgent(bus, "sim-1")
            await agent.start()
            async with await Client.connect(broker.url) as client:
                config = ScriptRunConfig(
                    source_directory=tmp_path / "src", script="t.py", run_config=secret_config()
                )
                sub = await client.submit(config)
            first = await next_assign(agent)
            assert first.run_id == sub.run_id and first.secret_env == SECRET
            path = Path(str(secret_file).format(sub.run_id))
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
            await agent.stop()
        # a new scheduler on the same data directory; the agent comes back as a new incarnation
        async with scheduler(broker.url, data_dir):
            reborn = FakeAgent(bus, "sim-1", incarnation="inc-2")
            await reborn.start()
            second = await next_assign(reborn)
            assert (second.run_id, second.attempt) == (sub.run_id, 2)
            assert second.secret_env == SECRET
            for state in (RunState.STARTING, RunState.RUNNING, RunState.FINALIZING):
                await reborn.report(sub.run_id, 2, state)
            await reborn.report(sub.run_id, 2, RunState.COMPLETED, exit_code=0)
            for _ in range(100):
                if not path.exists():
                    break
                await asyncio.sleep(0.1)
            assert not path.exists(), "the values outlived the run"
            await reborn.stop()
        stored = (await bus.runs.get(sub.run_id)).value or b""
        assert b"API_TOKEN" in stored and CANARY.encode() not in stored
    assert any(e["event"] == "run queued" for e in logged)  # the daemon's log was captured
    assert CANARY not in repr(logged)
