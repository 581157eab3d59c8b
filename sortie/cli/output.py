"""How the `sortie` command prints: the formats (``--output text|json|yaml``), the exit codes,
errors, tables, and the display rule for numbers.

- ``text`` is for people: tables, floats rounded (:func:`number`).
- ``json`` and ``yaml`` print the views of ``sortie.client.views`` (times as ISO 8601, UTC,
  ``Z``); a stream of items (``run logs``) is JSON lines, one object per line (YAML: one
  document per item).
- An error goes to stderr: ``sortie: MESSAGE`` in text, ``{"code": ..., "message": ...}`` in
  json and yaml, and the exit code says what kind it was (:data:`EXIT_CODES`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Literal, NoReturn

Format = Literal["text", "json", "yaml"]
FORMATS: tuple[Format, ...] = ("text", "json", "yaml")

EXIT_OK, EXIT_RUN_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
# The one table of exit codes (README's "Exit codes" repeats it for users).
EXIT_CODES = {
    EXIT_OK: "done (for `run wait` and `run submit --wait`: the run Completed)",
    EXIT_RUN_FAILED: "the run, or the operation followed (an attach), ended without success",
    EXIT_USAGE: "refused: bad input, unknown run or target, broker unreachable, access denied",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C)",
}


def add_output(p: argparse.ArgumentParser) -> None:
    """``-o/--output text|json|yaml`` on a command."""
    p.add_argument(
        "-o",
        "--output",
        choices=FORMATS,
        default="text",
        help="text for people (default); json or yaml for programs (errors too, on stderr)",
    )


class ArgvError(Exception):
    """argparse refused the command line (raised instead of its exit, so that the refusal
    can be printed in the format the command asked for)."""

    def __init__(self, usage: str, message: str) -> None:
        super().__init__(message)
        self.usage = usage


class Parser(argparse.ArgumentParser):
    """argparse, raising :class:`ArgvError` where it would print and exit (its subparsers are
    of this class too)."""

    def error(self, message: str) -> NoReturn:
        raise ArgvError(self.format_usage(), f"{self.prog}: error: {message}")


def requested_format(argv: Sequence[str]) -> str:
    """The ``--output`` a command line asks for, read before (or without) parsing it."""
    for i, arg in enumerate(argv):
        value = None
        if arg in ("-o", "--output") and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith("--output="):
            value = arg.partition("=")[2]
        elif arg.startswith("-o") and len(arg) > 2:
            value = arg[2:]
        if value in FORMATS:
            return value
    return "text"


def refuse_argv(exc: ArgvError, argv: Sequence[str]) -> int:
    """A refused command line: argparse's usage and message in text, ``{code: bad_input,
    message}`` in json and yaml. Returns the exit code."""
    fmt = requested_format(argv)
    if fmt == "text":
        sys.stderr.write(exc.usage)
        print(exc, file=sys.stderr)
    else:
        error("bad_input", str(exc), fmt)
    return EXIT_USAGE


def emit(value: object, fmt: str, *, indent: bool = True) -> None:
    """A view (or a list of views) in ``fmt`` (json or yaml) on stdout."""
    from sortie.client.views import to_json  # here: `sortie --help` needs no client library

    if fmt == "yaml":
        print(_yaml(value), end="", flush=True)
    else:
        print(to_json(value, indent=indent), flush=True)


def emit_item(value: object, fmt: str) -> None:
    """One item of a stream: a JSON line, or a YAML document."""
    from sortie.client.views import to_json

    if fmt == "yaml":
        print("---\n" + _yaml(value), end="", flush=True)
    else:
        print(to_json(value, indent=False), flush=True)


def _yaml(value: object) -> str:
    import msgspec
    import yaml  # here: 40 ms to import, and only -o yaml needs it

    return yaml.safe_dump(
        msgspec.to_builtins(value), sort_keys=False, allow_unicode=True, default_flow_style=False
    )


def error(code: str, message: str, fmt: str) -> None:
    """An error on stderr, in the command's format: ``{"code": ..., "message": ...}`` in json
    and yaml."""
    if fmt == "json":
        import json

        line = json.dumps(
            {"code": code, "message": message}, separators=(",", ":"), ensure_ascii=False
        )
        print(line, file=sys.stderr)
    elif fmt == "yaml":
        print(_yaml({"code": code, "message": message}), end="", file=sys.stderr)
    else:
        print(f"sortie: {message}", file=sys.stderr)


def number(value: object) -> str:
    """The display rule for numbers in text: floats to 6 significant digits, without float
    noise (``0.15000000000000002`` is ``0.15``); everything else as ``str``."""
    if isinstance(value, bool) or not isinstance(value, float):
        return str(value)
    if abs(value) >= 1e6 and value.is_integer():
        return f"{value:.0f}"
    return f"{value:.6g}"


def size(n: int) -> str:
    amount = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if amount < 1024 or unit == "GB":
            return f"{amount:.0f} {unit}" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1024
    return f"{n} B"


def table(rows: Sequence[Sequence[str]]) -> None:
    if not rows:
        return
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
