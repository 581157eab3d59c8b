"""The `sortie` command line. Each command is a thin layer over sortie.client.

The commands are listed in ``cli/commands.py``; only the one given is imported (with what it
imports), so that a client command starts quickly. Keep this module's own imports light.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from sortie.bus.logs import LEVELS
from sortie.cli.commands import COMMANDS, Calls, add_commands, load
from sortie.cli.common import UsageError, with_client
from sortie.cli.output import EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, ArgvError, Parser, refuse_argv
from sortie.cli.output import error as print_error

__all__ = ["UsageError", "main"]


def _parser(submit_defaults: dict[str, object] | None = None) -> argparse.ArgumentParser:
    """The whole command line: global options, then the commands (each one's arguments are
    added when it is given; ``submit_defaults``: a job file's settings, as `sortie run
    submit`'s defaults)."""
    p = Parser(prog="sortie", description="Run training scripts on your own machines.")
    _global_options(p)
    commands = add_commands(p)
    if submit_defaults:
        commands.options["run"] = {"submit_defaults": submit_defaults}
        commands.options["sweep"] = {"submit_defaults": submit_defaults}
    return p


def _global_options(p: argparse.ArgumentParser) -> None:
    """Where the broker is, how to trust it, and the log level."""
    p.add_argument("--url", help="broker URL (default: SORTIE_URL, then the `sortie up` profile)")
    p.add_argument(
        "--creds",
        type=Path,
        metavar="FILE",
        help="broker credentials (default: SORTIE_CREDS, then the `sortie up` profile's)",
    )
    p.add_argument(
        "--tls-ca",
        type=Path,
        metavar="PEM",
        help="CA that signed the broker's TLS certificate (default: SORTIE_TLS_CA, then the "
        "profile's)",
    )
    p.add_argument(
        "--tls-hostname",
        metavar="NAME",
        help="check the broker's certificate against NAME (when connecting through a tunnel)",
    )
    p.add_argument("--log-level", choices=LEVELS, default="info")


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    script_args: list[str] = []
    if "--" in args_list:
        cut = args_list.index("--")
        args_list, script_args = args_list[:cut], args_list[cut + 1 :]
    try:
        args = _parser().parse_args(args_list)
    except ArgvError as exc:
        return refuse_argv(exc, args_list)
    try:
        return _dispatch(_with_job_file(args, args_list), script_args)
    except ArgvError as exc:  # the second parse, with a job file's settings as defaults
        return refuse_argv(exc, args_list)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # the reader went away (e.g. `| head`): stop quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except Exception as exc:
        if not _refused(exc):
            raise
        print_error(_error_code(exc), str(exc), getattr(args, "output", "text"))
        return EXIT_USAGE


# Errors the user sees as a refusal (exit 2, a message), by module and name. A module the
# command did not import cannot have raised its error, so none is imported to check.
_REFUSED: tuple[tuple[str, str], ...] = (
    ("sortie.web.settings", "WebError"),
    ("sortie.cli.common", "UsageError"),
    ("sortie.cli.jobfile", "JobFileError"),
    ("sortie.client.client", "ClientError"),
    ("sortie.client.snapshot", "SnapshotError"),
    ("sortie.client.envspec", "EnvSpecError"),
    ("sortie.client.runconfig", "RunConfigError"),
    ("sortie.client.sweep_space", "SweepConfigError"),
    ("sortie.bus.errors", "BrokerUnreachable"),
    ("sortie.bus.errors", "NotInitialised"),
    ("sortie.bus.errors", "AccessDenied"),
    ("sortie.bus.auth", "AuthError"),
    ("sortie.bus.metrics_http", "MetricsPortError"),
)
# The `code` of an error in json/yaml mode, by the error's type (the first that matches).
_ERROR_CODES: tuple[tuple[str, str, str], ...] = (
    ("sortie.bus.errors", "BrokerUnreachable", "unreachable"),
    ("sortie.client.client", "NoScheduler", "unreachable"),
    ("sortie.bus.errors", "AccessDenied", "access_denied"),
    ("sortie.bus.errors", "NotInitialised", "not_initialised"),
    ("sortie.client.client", "NotFound", "not_found"),
    ("sortie.client.client", "ClientError", "refused"),
)


def _is(exc: Exception, module: str, name: str) -> bool:
    loaded = sys.modules.get(module)
    return loaded is not None and isinstance(exc, getattr(loaded, name))


def _refused(exc: Exception) -> bool:
    return any(_is(exc, module, name) for module, name in _REFUSED)


def _error_code(exc: Exception) -> str:
    if _is(exc, "sortie.client.client", "RequestRefused"):
        return str(exc.code)  # type: ignore[attr-defined]
    return next((code for mod, kind, code in _ERROR_CODES if _is(exc, mod, kind)), "bad_input")


def _with_job_file(args: argparse.Namespace, argv: list[str]) -> argparse.Namespace:
    """`sortie run submit -f JOB.yml` (and `sortie sweep submit -f`): the command line parsed
    again with the file's settings as the defaults, so that the flags given override them. A
    Python environment or memory flag replaces the file's whole choice of it."""
    submits = getattr(args, "run_command", None) or getattr(args, "sweep_command", None)
    if submits != "submit" or args.job_file is None:
        return args
    from sortie.cli.jobfile import MEMORY_FLAGS, PYTHON_FLAGS, flag_defaults, load

    job = load(args.job_file)
    if args.command == "run" and job.sweep is not None:
        raise UsageError(
            f"{args.job_file} has a sweep: section: submit it with `sortie sweep submit -f "
            f"{args.job_file}` (or remove the section to submit one run)"
        )
    defaults = flag_defaults(job, args.job_file.parent)
    for group in (PYTHON_FLAGS, MEMORY_FLAGS):
        if any(getattr(args, dest) is not None for dest in group):
            for dest in group:
                defaults.pop(dest)
    if args.source_dir is not None:
        defaults.pop("source_dir")
    return _parser(defaults).parse_args(argv)


def _dispatch(args: argparse.Namespace, script_args: list[str]) -> int:
    """The command's handler, called as its entry in ``cli/commands.py`` says."""
    submits = getattr(args, "run_command", None) or getattr(args, "sweep_command", None)
    if script_args and submits != "submit":
        raise UsageError(
            "`--` is only for `sortie run submit` and `sortie sweep submit` (arguments for the "
            "script)"
        )
    args.script_args = script_args
    command = COMMANDS[args.command]  # its module is imported (cli/commands.py: LazyCommands)
    from sortie.bus.logs import configure

    configure(args.log_level)
    run = load(command.module, command.run)
    if command.calls is Calls.CLIENT:
        return with_client(args, lambda client: run(client, args))
    if command.calls is Calls.ASYNC:
        import asyncio

        return int(asyncio.run(run(args)))
    return int(run(args))


if __name__ == "__main__":
    sys.exit(main())
