"""`sortie model register|list|show|download`: the model registry from the command line
(``sortie/client/model_store.py`` does the work; the SDK's ``Model`` is the same calls)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sortie.client import model_store
from sortie.client.client import Client
from sortie.client.model_store import TagFilter, WebserviceException
from sortie.client.views import iso, to_json
from sortie.proto import messages as m


def _pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE")
    return key, value


def _filter(text: str) -> TagFilter:
    """``KEY`` (the tag is there) or ``KEY=VALUE`` (it has that value)."""
    key, sep, value = text.partition("=")
    return [key, value] if sep else key


def add_model(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    actions = sub.add_parser("model").add_subparsers(
        dest="model_command", required=True, metavar="ACTION"
    )
    reg = actions.add_parser("register", help="register the next version of a model")
    reg.add_argument("name", help="letters, digits, '-', '_' or '.'")
    reg.add_argument(
        "path",
        help="a file or folder on this machine; with --run, a file or folder among the "
        "run's artifacts (e.g. outputs/model.pkl or outputs)",
    )
    reg.add_argument("--run", metavar="RUN_ID", help="register the run's artifacts (no upload)")
    reg.add_argument("--tag", type=_pair, action="append", default=[], metavar="KEY=VALUE")
    reg.add_argument("--property", type=_pair, action="append", default=[], metavar="KEY=VALUE")
    reg.add_argument("--description", default=None)
    lst = actions.add_parser("list", help="registered versions, by name, newest first")
    lst.add_argument("--name", default=None)
    lst.add_argument("--tag", type=_filter, action="append", default=[], metavar="KEY[=VALUE]")
    lst.add_argument("--latest", action="store_true", help="only the newest version per name")
    show = actions.add_parser("show", help="one version: files and lineage")
    show.add_argument("model", metavar="NAME[:VERSION]", help="default: the newest version")
    dl = actions.add_parser("download", help="write a version's files under DEST")
    dl.add_argument("model", metavar="NAME[:VERSION]", help="default: the newest version")
    dl.add_argument("dest", type=Path)
    dl.add_argument("--exist-ok", action="store_true", help="overwrite files already there")
    for p in (reg, lst, show, dl):
        p.add_argument("--output", choices=("text", "json"), default="text")


def _ref(text: str) -> tuple[str, int | None]:
    name, sep, version = text.rpartition(":")
    if not sep:
        return text, None
    if not version.isdigit():
        raise WebserviceException(f"{text!r} is not NAME or NAME:VERSION (a version is 1, 2, ...)")
    return name, int(version)


def _text(rec: m.ModelRecord) -> str:
    lines = [
        f"model {rec.name}:{rec.version}",
        f"  created      {iso(rec.created_at)}",
    ]
    if rec.description:
        lines.append(f"  description  {rec.description}")
    for label, values in (("tag", rec.tags), ("property", rec.properties)):
        lines += [f"  {label:<12} {k}={v}" for k, v in sorted(values.items())]
    if rec.run_id:
        lines.append(f"  run          {rec.run_id} (experiment {rec.experiment})")
        lines.append(f"  snapshot     {rec.snapshot_id}")
    if rec.git_commit:
        lines.append(f"  git commit   {rec.git_commit}")
    lines.append(f"  files        {len(rec.files)}, {sum(f.size for f in rec.files)} bytes")
    lines += [f"    {f.path}  {f.size}" for f in rec.files]
    return "\n".join(lines)


def _print(records: list[m.ModelRecord], output: str, *, one: bool) -> None:
    if output == "json":
        views = [model_store.model_dict(r) for r in records]
        print(to_json(views[0] if one else views))
    elif one:
        print(_text(records[0]))
    else:
        print(f"{'NAME':<24} {'VERSION':>7}  {'CREATED':<24} {'RUN':<28} TAGS")
        for r in records:
            tags = ",".join(f"{k}={v}" for k, v in sorted(r.tags.items()))
            print(
                f"{r.name:<24} {r.version:>7}  {iso(r.created_at):<24} {r.run_id or '-':<28} {tags}"
            )


async def _register(client: Client, args: argparse.Namespace) -> m.ModelRecord:
    model_store.check_model_name(args.name)
    files = None if args.run else await model_store.upload_files(client, Path(args.path))
    request = model_store.make_request(
        args.name,
        files=files,
        run_id=args.run,
        run_path=args.path if args.run else None,
        tags=dict(args.tag),
        properties=dict(args.property),
        description=args.description,
    )
    return await model_store.register(client, request)


async def run_model(client: Client, args: argparse.Namespace) -> int:
    """One `sortie model` action; errors are ``ClientError``s the CLI prints (exit 2)."""
    if args.model_command == "register":
        _print([await _register(client, args)], args.output, one=True)
    elif args.model_command == "list":
        found = model_store.select(
            await model_store.all_models(client), name=args.name, tags=args.tag, latest=args.latest
        )
        _print(found, args.output, one=False)
        if not found and args.output == "text":
            print("no registered models match", file=sys.stderr)
    else:
        name, version = _ref(args.model)
        rec = await model_store.get_model(client, name, version)
        if args.model_command == "show":
            _print([rec], args.output, one=True)
        else:
            path = await model_store.download(client, rec, args.dest, args.exist_ok)
            if args.output == "json":
                print(to_json({"model": f"{rec.name}:{rec.version}", "path": str(path)}))
            else:
                print(path)
    return 0
