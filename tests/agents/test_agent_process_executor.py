"""The process executor and the metrics pipe, with real processes."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

from sortie.agents.attempt import ChildEnv, child_env, write_runtime
from sortie.agents.executors import Launch, Outcome
from sortie.agents.executors.process import ProcessExecution, start_process
from sortie.agents.metrics_fifo import MetricsFifo, parse_metric
from sortie.proto import messages as m


class Lines:
    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []

    def __call__(self, stream: str, text: str) -> None:
        self.items.append((stream, text))


async def start(
    tmp_path: Path, script: str, *, grace: float = 5.0, max_s: float | None = None
) -> tuple[ProcessExecution, Lines]:
    path = tmp_path / "s.sh"
    path.write_text(script)
    lines = Lines()
    launch = Launch(
        argv=["sh", str(path)],
        cwd=tmp_path,
        env=dict(os.environ),
        kill_grace_s=grace,
        max_duration_s=max_s,
    )
    return await start_process(launch, lines), lines


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


async def wait_for_file(path: Path, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return path.read_text()
        await asyncio.sleep(0.02)
    raise AssertionError(f"{path} never appeared")


async def test_exit_codes_and_output(tmp_path: Path) -> None:
    ex, lines = await start(tmp_path, "echo out; echo err >&2; printf 'no newline'; exit 3\n")
    outcome = await ex.wait()
    assert outcome.exit_code == 3 and not outcome.timed_out and not outcome.stopped
    assert ("stdout", "out") in lines.items and ("stderr", "err") in lines.items
    assert ("stdout", "no newline") in lines.items
    ex, _ = await start(tmp_path, "exit 0\n")
    assert (await ex.wait()).exit_code == 0


async def test_stop_kills_the_whole_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "pids"
    ex, _ = await start(
        tmp_path, f"sh -c 'sleep 300 & echo $! > {pidfile}; wait' &\nwait\n", grace=5.0
    )
    grandchild = int((await wait_for_file(pidfile)).strip())
    assert alive(grandchild)
    await ex.stop()
    outcome = await ex.wait()
    # SIGTERM was enough: the group ended by it, before the 5 s grace brought SIGKILL
    assert outcome.stopped and outcome.exit_code == -signal.SIGTERM
    await asyncio.sleep(0.2)
    assert not alive(grandchild)


async def test_sigkill_after_grace_for_a_script_that_traps_sigterm(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    ex, _ = await start(
        tmp_path,
        f"trap 'echo ignored' TERM\necho 1 > {ready}\nwhile true; do sleep 0.1; done\n",
        grace=1.0,
    )
    await wait_for_file(ready)
    t0 = time.monotonic()
    await ex.stop()
    outcome = await ex.wait()
    elapsed = time.monotonic() - t0
    assert elapsed >= 0.9  # SIGKILL came only once the 1 s grace was over
    assert outcome.exit_code == -9


async def test_max_duration_times_out(tmp_path: Path) -> None:
    ex, _ = await start(tmp_path, "sleep 30\n", grace=1.0, max_s=0.5)
    outcome = await ex.wait()
    assert outcome.timed_out and not outcome.stopped


async def test_metrics_through_the_fifo_with_the_runtime_shim(tmp_path: Path) -> None:
    runtime = tmp_path / "runtime"
    write_runtime(runtime)
    script = tmp_path / "train.py"
    script.write_text(
        "from sortie import Run\n"
        "run = Run.get_context()\n"
        "run.log('acc', 0.9)\n"
        "for i in range(50):\n"
        "    run.log('loss', 1.0 / (i + 1), step=i)\n"
        "import os\n"
        "with open(os.environ['SORTIE_METRICS_FILE'], 'a') as fh:\n"
        "    fh.write('garbage\\n')\n"
        "print('done')\n"
    )
    got: list[bytes] = []
    fifo = MetricsFifo(tmp_path / "m.fifo", got.append)
    fifo.open()
    spec = m.RunSpec(experiment="e", script="train.py", snapshot_id="s")
    env = child_env(
        {k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
        spec,
        ChildEnv(
            run_id="r1",
            attempt=1,
            metrics_file=fifo.path,
            outputs_dir=tmp_path / "outputs",
            runtime_dir=runtime,
        ),
    )
    # -S: no site-packages, so `sortie` can only come from the runtime shim
    launch = Launch(argv=[sys.executable, "-S", str(script)], cwd=tmp_path, env=env)
    lines = Lines()
    ex = await start_process(launch, lines)
    outcome = await ex.wait()
    fifo.close()
    assert outcome.exit_code == 0, lines.items
    assert ("stdout", "done") in lines.items
    parsed = [parse_metric(b) for b in got]
    points = [p for p in parsed if isinstance(p, m.MetricPoint)]
    assert points[0].name == "acc" and points[0].value == 0.9
    assert [p.step for p in points[1:]] == list(range(50))
    assert sum(isinstance(p, str) for p in parsed) == 1
    assert not fifo.path.exists()


async def test_stop_reason_is_written_before_sigterm(tmp_path: Path) -> None:
    reason = tmp_path / "stop-reason"
    ready = tmp_path / "ready"
    script = tmp_path / "s.sh"
    script.write_text(
        f"trap 'echo \"reason=$(cat {reason})\"; exit 0' TERM\n"
        f"echo 1 > {ready}\nwhile true; do sleep 0.1; done\n"
    )

    async def run(stop_with: str | None, max_s: float | None) -> tuple[Outcome, Lines]:
        reason.unlink(missing_ok=True)
        ready.unlink(missing_ok=True)
        launch = Launch(
            argv=["sh", str(script)],
            cwd=tmp_path,
            env=dict(os.environ),
            kill_grace_s=5.0,
            max_duration_s=max_s,
            stop_reason_file=reason,
        )
        lines = Lines()
        ex = await start_process(launch, lines)
        await wait_for_file(ready)
        if stop_with is not None:
            await ex.stop(stop_with, grace_s=1.0)
            await ex.stop("canceled")  # idempotent: the first reason stays
        return await ex.wait(), lines

    outcome, lines = await run("preempted", None)
    assert ("stdout", "reason=preempted") in lines.items and outcome.stopped
    assert reason.read_text().strip() == "preempted"
    outcome, lines = await run(None, 1.0)
    assert ("stdout", "reason=timeout") in lines.items
    assert outcome.timed_out and not outcome.stopped


async def test_stop_after_exit_is_not_a_stop(tmp_path: Path) -> None:
    # a stop that comes after the script ended on its own (a preemption racing the end of
    # the script): the outcome says the script ran to its end
    ex, _ = await start(tmp_path, "exit 0\n")
    deadline = time.monotonic() + 5
    while ex.proc.returncode is None:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    await ex.stop("preempted")
    outcome = await ex.wait()
    assert outcome.exit_code == 0 and not outcome.stopped
