"""A stale cancel for a run's current attempt (sent on the agent's command subject with full
rights, as a script holding the scheduler's credentials could) must not strand the record:
the attempt's end is reported, the run is requeued, and `sortie run cancel` ends it."""

from __future__ import annotations

import asyncio
from pathlib import Path

from sortie.bus.connection import BusAuth, connect
from sortie.proto import codec, subjects
from sortie.proto import messages as m
from sortie.proto.leadership import Leadership
from tests.e2e.conftest import Installation, shared_dir, wait_until


async def forge_stale_cancel(installation: Installation, agent_id: str, run_id: str) -> None:
    nc = await connect(installation.url, "forger", auth=BusAuth(creds=installation.scheduler_creds))
    try:
        # in the leader's epoch, as the scheduler sends it (an older one the agent refuses)
        kv = await nc.jetstream().key_value(subjects.KV_LEADERSHIP)
        leader = codec.decode(Leadership, (await kv.get(subjects.LEADER_KEY)).value or b"")
        cancel = m.Cancel(run_id=run_id, attempt=1, reason="stale", epoch=leader.epoch)
        await nc.publish(subjects.agent_commands(agent_id), codec.encode(cancel))
        await nc.flush()
    finally:
        await nc.close()


def shown(installation: Installation, run_id: str) -> dict[str, object]:
    out = installation.json("run", "show", run_id)
    assert isinstance(out, dict)
    return out


def test_a_stale_cancel_for_the_current_attempt_requeues_the_run_and_cancel_ends_it(
    installation: Installation, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    ledger = shared_dir(installation.data_dir.parent) / f"ledger-{tmp_path.name}"
    (src / "t.py").write_text(
        "import os, time\n"
        f"open({str(ledger)!r}, 'a').write(f\"start {{os.environ['SORTIE_ATTEMPT']}}\\n\")\n"
        "time.sleep(600)\n"
    )
    sub = installation.json("run", "submit", str(src), "--script", "t.py")
    assert isinstance(sub, dict)
    run_id = str(sub["run_id"])
    wait_until(lambda: shown(installation, run_id)["state"] == "Running", 60, 0.3)
    agent_id = str(shown(installation, run_id)["agent_id"])

    asyncio.run(forge_stale_cancel(installation, agent_id, run_id))

    # the agent reported the end of the attempt it stopped: the run runs again, not
    # left Running with no process
    wait_until(lambda: ledger.read_text().splitlines() == ["start 1", "start 2"], 60, 0.3)
    run = shown(installation, run_id)
    assert run["attempt"] == 2, run
    history = run["history"]
    assert isinstance(history, list)
    given_back = [h for h in history if h["state"] == "Queued" and h.get("reason")]
    assert len(given_back) == 1, history
    assert given_back[0]["reason"] == "lost", given_back
    logs = installation.cli("run", "logs", run_id, check=True).stdout
    assert "the scheduler told the agent to stop this attempt as stale" in logs, logs

    installation.cli("run", "cancel", run_id, check=True)
    done = installation.cli("run", "wait", run_id, timeout=60)
    assert done.returncode == 1 and "Canceled" in done.stderr, done
    assert shown(installation, run_id)["state"] == "Canceled"
