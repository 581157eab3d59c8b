"""The `sortie` commands: one line each, naming the module that builds and runs the command.

A command's module is imported only when that command is given, so `sortie run list` loads
the run commands and the client library, not the daemons, the dashboard or `sortie gc`'s
engine client. The names and help lines are here, so that `sortie --help` lists every command
without importing any of them.

A new command is one entry in :data:`COMMANDS`::

    "sweep": Command("...", "sortie.cli.sweeps", "add_sweep", "run_sweep", Calls.CLIENT),

where ``add_sweep(sub)`` calls ``sub.add_parser("sweep", ...)`` and adds its arguments to
the parser that call returns (``help=`` there is not used: the help line is the entry's),
and ``run_sweep`` is called as :class:`Calls` says.
"""

from __future__ import annotations

import argparse
import importlib
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    _SubParsers = argparse._SubParsersAction[argparse.ArgumentParser]
else:  # not subscriptable at run time
    _SubParsers = argparse._SubParsersAction


class Calls(StrEnum):
    """How a command's handler is called; each returns the exit code."""

    ARGS = "args"  # run(args) -> int: daemons, local files, its own connections
    ASYNC = "async"  # async run(args) -> int, in a fresh event loop
    CLIENT = "client"  # async run(client, args) -> int, with a connected sortie Client


@dataclass(frozen=True)
class Command:
    help: str  # the line `sortie --help` shows
    module: str  # where the builder and the handler are
    add: str  # add(sub, **options): sub.add_parser(NAME) gives the command's parser
    run: str  # the handler, called as ``calls`` says
    calls: Calls = Calls.ARGS


_DAEMONS = "sortie.cli.daemons"

COMMANDS: dict[str, Command] = {
    "up": Command(
        "start broker, scheduler and a local agent on this machine", _DAEMONS, "add_up", "run_up"
    ),
    "auth": Command(
        "broker credentials: authority, per-role credentials, list, revoke; dashboard tokens",
        "sortie.cli.credentials",
        "add_auth",
        "run_auth",
    ),
    "scheduler": Command(
        "run the scheduler alone against a broker",
        _DAEMONS,
        "add_scheduler",
        "run_scheduler_command",
    ),
    "agent": Command(
        "run an agent (--target NAME), or list and administer agents",
        _DAEMONS,
        "add_agent",
        "run_agent_command",
    ),
    "compute": Command(
        "compute targets: managed clusters",
        "sortie.cli.compute",
        "add_compute",
        "run_compute",
        Calls.CLIENT,
    ),
    "status": Command(
        "computes, agents, queue and active runs at a glance",
        "sortie.cli.status",
        "add_status",
        "run_status",
        Calls.CLIENT,
    ),
    "run": Command(
        "submit and inspect runs", "sortie.cli.run_command", "add_run", "run_run", Calls.CLIENT
    ),
    "model": Command(
        "the model registry: register, list, show, download",
        "sortie.cli.models",
        "add_model",
        "run_model",
        Calls.CLIENT,
    ),
    "sweep": Command(
        "hyperparameter sweeps: submit, list, show, trials, cancel",
        "sortie.cli.sweeps",
        "add_sweep",
        "run_sweep",
    ),
    "pipeline": Command(
        "pipelines: submit a pipeline file, list, show (steps, reuse), cancel, rerun",
        "sortie.cli.pipelines",
        "add_pipeline",
        "run_pipeline",
    ),
    "gc": Command(
        "delete what nothing needs: unreferenced blobs, old run dirs, unused environments",
        "sortie.cli.gc",
        "add_gc",
        "run_gc",
        Calls.ASYNC,
    ),
    "workspace": Command(
        "this installation as a workspace (for SDK v1 code)",
        "sortie.cli.workspace",
        "add_workspace",
        "run_workspace",
    ),
    "web": Command(
        "serve the dashboard (a broker client: runs anywhere that reaches the broker)",
        "sortie.cli.web",
        "add_web",
        "run_web",
    ),
}


def load(module: str, name: str) -> Any:
    """``module.name``, importing the module now (the first time)."""
    return getattr(importlib.import_module(module), name)


class _OneCommand(_SubParsers):
    """What a command's builder is handed as ``sub``: ``add_parser(name)`` gives back the parser
    already listed for the command (with the builder's description, epilog, usage)."""

    def __init__(self, parser: argparse.ArgumentParser) -> None:
        super().__init__(option_strings=[], prog=parser.prog, parser_class=type(parser))
        self._parser = parser

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        for key in ("description", "epilog", "usage", "formatter_class"):
            if key in kwargs:
                setattr(self._parser, key, kwargs[key])
        return self._parser


class LazyCommands(_SubParsers):
    """The commands' subparsers: all listed with their help lines; a command's arguments are
    added (its module imported) when the command line names it. ``options``: keyword
    arguments for a command's builder (e.g. a job file's settings for `run`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.options: dict[str, dict[str, object]] = {}
        self._built: set[str] = set()

    def build(self, name: str) -> argparse.ArgumentParser:
        """The command's parser with its arguments (added once)."""
        parser = self._name_parser_map[name]
        if name not in self._built:
            command = COMMANDS[name]
            if command.calls is Calls.CLIENT:  # before its module imports nats and structlog
                from sortie.bus.lean import import_for_client

                import_for_client()
            load(command.module, command.add)(_OneCommand(parser), **self.options.get(name, {}))
            self._built.add(name)
        return parser

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        if values and values[0] in COMMANDS:  # an unknown one: argparse refuses it
            self.build(values[0])
        super().__call__(parser, namespace, values, option_string)


def add_commands(parser: argparse.ArgumentParser) -> LazyCommands:
    """Every command of :data:`COMMANDS` as a subcommand of ``parser`` (arguments added lazily)."""
    sub = parser.add_subparsers(
        action=LazyCommands, dest="command", required=True, metavar="COMMAND"
    )
    assert isinstance(sub, LazyCommands)
    for name, command in COMMANDS.items():
        sub.add_parser(name, help=command.help)
    return sub
