"""Back-pressure on a real process's output (executors.process with Launch.output_room): while
there is no room the script blocks on its pipe; once its leader exits, what is left in the
pipe is read at once, so nothing is lost when the broker is away as a script ends."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from sortie.agents.executors import Launch
from sortie.agents.executors.process import start_process

BIG = "import sys\nfor i in range(20000):\n    sys.stdout.write(f'{i:06d} ' + 'z' * 93 + '\\n')\n"


def _launch(tmp_path: Path, script: str, room: asyncio.Event) -> Launch:
    path = tmp_path / "s.py"
    path.write_text(script)
    return Launch(
        argv=[sys.executable, "-S", str(path)],
        cwd=tmp_path,
        env=dict(os.environ),
        output_room=room.wait,
    )


async def test_no_room_blocks_the_script_and_room_lets_it_finish(tmp_path: Path) -> None:
    room = asyncio.Event()
    lines: list[str] = []
    execution = await start_process(_launch(tmp_path, BIG, room), lambda _s, t: lines.append(t))
    await asyncio.sleep(1.5)
    # 2 MB does not fit the pipe and one read: the script waits on its write
    assert execution.proc.returncode is None
    assert len(lines) < 20000
    room.set()
    outcome = await asyncio.wait_for(execution.wait(), 60)
    assert outcome.exit_code == 0
    assert len(lines) == 20000 and lines[-1].startswith("019999 ")


async def test_what_is_left_after_the_script_exits_is_read_without_room(tmp_path: Path) -> None:
    room = asyncio.Event()  # never set: the broker stays away
    lines: list[str] = []
    small = "print('first')\nprint('last')\n"
    execution = await start_process(_launch(tmp_path, small, room), lambda _s, t: lines.append(t))
    outcome = await asyncio.wait_for(execution.wait(), 30)
    assert outcome.exit_code == 0
    assert lines == ["first", "last"]
