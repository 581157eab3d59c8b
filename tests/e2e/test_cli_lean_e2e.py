"""A client command loads only what it needs (issue K item 7: `sortie run list` as a command in
300 ms): against a real `sortie up`, `sortie run list` lists the run and has imported neither
the daemons, the dashboard, the other commands, nor aiohttp and rich; every command is still
listed and has its own help; a ws:// URL still connects (nats-py gets aiohttp back then)."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from sortie.bus.broker import free_port, nats_server_binary
from sortie.cli import main as cli_main
from sortie.cli.commands import COMMANDS
from tests.e2e.conftest import REPO, SORTIE, Installation, isolated_env, wait_until

# sortie.cli.main.main in a child process that writes, at exit, the modules it imported.
WRAPPER = textwrap.dedent(
    """
    import json, sys
    from sortie.cli.main import main
    code = main(sys.argv[2:])
    with open(sys.argv[1], "w") as f:
        json.dump(sorted(sys.modules), f)
    sys.exit(code)
    """
)
# Not for a client command: daemons, the dashboard, the v1 layer, the other commands' modules,
# snapshots and job files (submit's), nats-py's websockets and structlog's console.
NOT_LOADED = (
    "aiohttp",
    "rich",
    "yaml",
    "pathspec",
    "aiodocker",
    "asyncssh",
    "starlette",
    "uvicorn",
    "sortie.scheduler",
    "sortie.agents",
    "sortie.web",
    "sortie.azureml",
    "sortie.embedded",
    "sortie.client.snapshot",
    "sortie.client.runconfig",
    "sortie.cli.daemons",
    "sortie.cli.compute",
    "sortie.cli.submit",
    "sortie.cli.gc",
    "sortie.cli.models",
    "sortie.cli.credentials",
    "sortie.cli.web",
    "sortie.cli.workspace",
    "sortie.cli.status",
    "sortie.cli.jobfile",
    "sortie.cli.sweeps",
)


def _loaded(inst: Installation, tmp_path: Path, *argv: str) -> tuple[list[str], str]:
    """The modules `sortie ARGV` imported, and what it printed."""
    wrapper, modules = tmp_path / "wrapper.py", tmp_path / "modules.json"
    wrapper.write_text(WRAPPER)
    proc = subprocess.run(
        [sys.executable, str(wrapper), str(modules), *argv],
        env=inst.env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(modules.read_text()), proc.stdout


def test_run_list_loads_only_the_client(installation: Installation, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "hello.py").write_text("print('hello')\n")
    submitted = installation.json(
        "run", "submit", str(src), "--script", "hello.py", "--python", sys.executable
    )
    assert isinstance(submitted, dict)
    run_id = submitted["run_id"]
    wait_until(lambda: installation.cli("run", "wait", run_id).returncode == 0, timeout=60)

    modules, out = _loaded(installation, tmp_path, "run", "list", "--limit", "50")
    rows = out.splitlines()
    assert rows[0].split() == ["RUN", "ID", "EXPERIMENT", "TARGET", "STATE", "ATTEMPT", "CREATED"]
    assert any(r.split()[:4] == [run_id, "default", "local", "Completed"] for r in rows[1:])
    loaded = [
        name for name in modules if any(name == n or name.startswith(n + ".") for n in NOT_LOADED)
    ]
    assert loaded == []
    assert "sortie.cli.run_list" in modules and "nats" in modules  # it did list them

    modules, out = _loaded(installation, tmp_path, "run", "list", "--output", "json")
    assert run_id in [r["run_id"] for r in json.loads(out)]
    assert "aiohttp" not in modules and "rich" not in modules


def test_help_lists_every_command_and_each_has_its_own() -> None:
    proc = subprocess.run(
        [*SORTIE, "--help"], capture_output=True, text=True, timeout=60, check=True
    )
    listed = " ".join(proc.stdout.split())  # argparse wraps help lines
    for name, command in COMMANDS.items():
        assert f"{name} {command.help}" in listed, name
    for name in COMMANDS:  # one child each: a command's arguments are built when it is given
        one = subprocess.run(
            [*SORTIE, name, "--help"], capture_output=True, text=True, timeout=60, check=False
        )
        assert one.returncode == 0, (name, one.stderr)
        assert one.stdout.startswith(f"usage: sortie {name}"), (name, one.stdout)
    sub = subprocess.run(
        [*SORTIE, "run", "list", "--help"], capture_output=True, text=True, timeout=60
    )
    assert sub.returncode == 0 and "--limit" in sub.stdout


def test_refusals_name_real_errors() -> None:
    """main's tables of errors name them by module and class (so that checking one imports
    nothing): each name must be there."""
    for module, name in cli_main._REFUSED:
        assert isinstance(getattr(importlib.import_module(module), name), type), name
    for module, name, _code in cli_main._ERROR_CODES:
        assert isinstance(getattr(importlib.import_module(module), name), type), name


@pytest.fixture
def websocket_broker(tmp_path: Path):
    """A bare nats-server with JetStream and a websocket listener (no Sortie on it)."""
    port, ws_port = free_port(), free_port()
    conf = tmp_path / "ws.conf"
    conf.write_text(
        f'listen: 127.0.0.1:{port}\njetstream {{ store_dir: "{tmp_path / "js"}" }}\n'
        f"websocket {{ listen: 127.0.0.1:{ws_port}, no_tls: true }}\n"
    )
    proc = subprocess.Popen(
        [nats_server_binary(), "-c", str(conf)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield f"ws://127.0.0.1:{ws_port}"
    finally:
        proc.terminate()
        proc.wait(10)


def test_a_websocket_url_still_connects(websocket_broker: str, tmp_path: Path) -> None:
    """A client command imports nats-py without aiohttp; a ws:// URL gets it back: the
    command reaches the broker (which has no Sortie on it, and says so)."""
    env = isolated_env(tmp_path)

    def attempt() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*SORTIE, "--url", websocket_broker, "run", "list"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def reached() -> subprocess.CompletedProcess[str] | None:
        proc = attempt()  # the broker may still be starting (without aiohttp: never reached)
        return proc if "cannot reach" not in proc.stderr else None

    proc = wait_until(reached, timeout=10)
    assert proc is not None, attempt().stderr
    assert proc.returncode == 2 and "has no Sortie state yet" in proc.stderr, proc.stderr
