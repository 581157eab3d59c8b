"""`sortie sweep submit|list|show|trials|cancel`: hyperparameter sweeps from the command line.

`sweep submit` takes everything `sortie run submit` takes (the trials' run: a job file with
``-f``, or flags), and the sweep: ``--param NAME=EXPRESSION`` (repeatable), ``--sampling``,
``--seed``, ``--policy``, ``--metric``, ``--goal``, ``--max-total``, ``--max-concurrent``,
``--max-duration-minutes``, or a job file's ``sweep:`` section, which the flags override.
Expressions and policies are read by ``client/sweep_text.py`` (parsed, never evaluated), and
the sweep is built by the SDK's ``HyperDriveConfig``: one set of checks for code, flags and
files. The other commands print ``client/sweep_views.py``'s views.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from sortie.cli import output as out
from sortie.cli.common import env_vars, with_client
from sortie.cli.run_command import submit_options
from sortie.cli.runs import limit
from sortie.cli.submit import run_config_of
from sortie.client import sweep_text
from sortie.client.client import Client
from sortie.client.runconfig import ScriptRunConfig
from sortie.client.sweep_space import SweepConfigError
from sortie.client.sweep_views import (
    SweepView,
    TrialView,
    get_sweep,
    list_sweeps,
    ranked,
    sweep_of,
    sweep_summary_view,
    sweep_view,
    trials_of,
)
from sortie.client.sweeps import MAX_DURATION_MINUTES, HyperDriveConfig
from sortie.client.views import CancelView, SubmittedView
from sortie.proto import messages as m
from sortie.proto.states import TERMINAL, RunState
from sortie.proto.sweeps import Expression, SweepSpec


def _typed(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """A text parser as an argparse type (its error as argparse's)."""

    def typed(text: str) -> Any:
        try:
            return parse(text)
        except SweepConfigError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    typed.__name__ = parse.__name__
    return typed


def add_sweep(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    submit_defaults: dict[str, object] | None = None,
) -> None:
    """The `sweep` command (``submit_defaults``: a job file's settings, for `sweep submit`)."""
    actions = sub.add_parser("sweep").add_subparsers(
        dest="sweep_command", required=True, metavar="ACTION"
    )
    s = actions.add_parser(
        "submit",
        help="submit a sweep: trials of a script with sampled parameters",
        description="The trials' run as `sortie run submit` takes it (flags or -f JOB.yml); "
        "the sweep as flags or the job file's sweep: section (the flags override it). Each "
        "trial gets its parameters appended to the script's arguments (--NAME VALUE).",
    )
    submit_options(s)
    _sweep_options(s)
    s.set_defaults(**(submit_defaults or {}))
    lst = actions.add_parser("list", help="sweeps, newest first")
    lst.add_argument("--experiment")
    lst.add_argument("--limit", type=limit, metavar="N", help="the newest N sweeps only")
    show = actions.add_parser("show", help="a sweep: spec, state, best trial, stopped trials")
    trials = actions.add_parser("trials", help="a sweep's trials, best objective first")
    cancel = actions.add_parser("cancel", help="cancel a sweep and its running trials")
    for p in (show, trials, cancel):
        p.add_argument("sweep_id", metavar="SWEEP")
    for p in (lst, show, trials, cancel):
        out.add_output(p)


def _sweep_options(s: argparse.ArgumentParser) -> None:
    s.add_argument(
        "--param",
        action="append",
        type=_typed(sweep_text.param),
        default=[],
        metavar="NAME=EXPR",
        help="a parameter and how it is drawn (repeatable): 'lr=loguniform(-6,-1)', "
        "'batch=choice(16,32,64)', uniform, quniform, qloguniform, randint, normal, ...",
    )
    s.add_argument("--sampling", choices=sweep_text.SAMPLINGS, default="random")
    s.add_argument("--seed", type=int, help="random/bayesian: the seed (default: one is chosen)")
    s.add_argument(
        "--policy",
        type=_typed(sweep_text.policy),
        default=None,
        metavar="POLICY",
        help="early termination: none (default), 'bandit(slack_factor=0.1, "
        "evaluation_interval=1, delay_evaluation=0)', 'median(delay_evaluation=5)', "
        "'truncation(truncation_percentage=20)', 'asha(grace_period=1, reduction_factor=3)'",
    )
    s.add_argument("--metric", help="the primary metric: what the script logs (run.log)")
    s.add_argument("--goal", choices=("maximize", "minimize"))
    s.add_argument("--max-total", type=int, metavar="N", help="at most N trials")
    s.add_argument("--max-concurrent", type=int, metavar="N", help="at most N at once")
    s.add_argument(
        "--max-duration-minutes",
        type=float,
        default=MAX_DURATION_MINUTES,
        metavar="M",
        help="then running trials are canceled and the sweep ends "
        f"(default {MAX_DURATION_MINUTES})",
    )


def hyperdrive_config(args: argparse.Namespace, config: ScriptRunConfig) -> HyperDriveConfig:
    """The sweep the flags (and job file) describe, checked by the SDK."""
    missing = [
        flag
        for flag, value in (
            ("--param", args.param),
            ("--metric", args.metric),
            ("--goal", args.goal),
            ("--max-total", args.max_total),
        )
        if not value
    ]
    if missing:
        raise SweepConfigError(
            f"a sweep needs {', '.join(missing)} (or a sweep: section in the job file: "
            "docs/jobfile.schema.json)"
        )
    space: dict[str, Expression] = dict(args.param)  # a name given again: the last wins
    return HyperDriveConfig(
        run_config=config,
        hyperparameter_sampling=sweep_text.sampling(args.sampling, space, args.seed),
        policy=args.policy,
        primary_metric_name=args.metric,
        primary_metric_goal=args.goal,
        max_total_runs=args.max_total,
        max_concurrent_runs=args.max_concurrent,
        max_duration_minutes=args.max_duration_minutes,
    )


async def submit(
    client: Client, args: argparse.Namespace, config: ScriptRunConfig, spec: SweepSpec
) -> int:
    limit_mb = args.snapshot_limit_mb
    from sortie.cli.progress import SubmitProgress, interactive

    with SubmitProgress(enabled=interactive(args.output)) as bars:
        sub = await client.submit(
            config,
            experiment=args.experiment,
            submission_id=args.submission_id,
            tags=env_vars(args.tag, flag="--tag") or None,
            snapshot_limit_bytes=int(limit_mb * 1024 * 1024) if limit_mb else None,
            progress=bars.uploading,
            hash_progress=bars.hashing,
            sweep=spec,
        )
    for w in sub.warnings:
        print(f"warning: {w}", file=sys.stderr)
    if args.output != "text":
        out.emit(SubmittedView(run_id=sub.run_id, snapshot=sub.snapshot), args.output, indent=False)
    else:
        print(
            f"Submitted sweep {sub.run_id} to {args.target}: {spec.sampling.__struct_config__.tag} "
            f"sampling, up to {spec.max_total_trials} trials, {spec.goal} {spec.primary_metric}",
            file=sys.stderr,
            flush=True,
        )
    if not args.wait:
        return out.EXIT_OK
    rec = await client.wait(sub.run_id, None if args.output != "text" else _progress_line)
    return out.EXIT_OK if rec.state == RunState.COMPLETED else out.EXIT_RUN_FAILED


def _progress_line(rec: m.RunRecord) -> None:
    """While `sweep submit --wait`s: a line per record version (state, trials, best)."""
    sweep = rec.sweep
    if sweep is None:
        return
    best = (
        f", best {sweep.best_run_id} = {out.number(sweep.best_objective)}"
        if sweep.best_run_id is not None
        else ""
    )
    print(f"sweep {rec.run_id}: {rec.state}, {sweep.issued} trials issued{best}", flush=True)
    if rec.state in TERMINAL and sweep.ended_because:
        print(f"sweep {rec.run_id}: ended: {sweep.ended_because}", flush=True)


async def list_(client: Client, args: argparse.Namespace) -> int:
    found = await list_sweeps(client, args.experiment)
    if args.limit is not None:
        found = found[: args.limit]
    views = [sweep_summary_view(r) for r in found]
    if args.output != "text":
        out.emit(views, args.output, indent=False)
        return out.EXIT_OK
    rows = [("SWEEP", "EXPERIMENT", "STATE", "SAMPLING", "METRIC", "TRIALS", "BEST", "CREATED")]
    rows += [
        (
            v.run_id,
            v.experiment,
            str(v.state),
            v.sampling,
            f"{v.goal} {v.primary_metric}",
            f"{v.issued}/{v.max_total_trials}",
            "" if v.best_objective is None else out.number(v.best_objective),
            v.created_at or "",
        )
        for v in views
    ]
    out.table(rows)
    if not views:
        print("no sweeps", file=sys.stderr)
    return out.EXIT_OK


def _params(params: dict[str, Any]) -> str:
    return " ".join(f"{k}={out.number(v)}" for k, v in params.items())


def _show_text(view: SweepView) -> None:
    spec = view.spec
    rows: list[tuple[str, str]] = [
        ("sweep", view.run_id),
        ("state", str(view.state)),
        ("experiment", view.experiment),
        ("target", view.target),
        ("sampling", str(spec.sampling.__struct_config__.tag)),
        ("policy", str(spec.policy.__struct_config__.tag)),
        ("metric", f"{spec.goal} {spec.primary_metric}"),
        ("trials", f"{view.issued} issued of at most {spec.max_total_trials}"),
        ("created_at", view.created_at or ""),
        ("ended_at", view.ended_at or ""),
    ]
    rows += [("param", f"{n} = {e.__struct_config__.tag}") for n, e in spec.space.items()]
    rows += [("by state", f"{state}: {n}") for state, n in view.trials_by_state.items()]
    if view.best is not None:
        b = view.best
        rows.append(("best", f"{b.run_id} ({out.number(b.objective)}): {_params(b.params)}"))
    if view.ended_because:
        rows.append(("ended", view.ended_because))
    rows += [("stopped", f"{t.run_id}: {t.reason}") for t in view.early_terminated]
    out.table(rows)


async def show(client: Client, args: argparse.Namespace) -> int:
    rec = await get_sweep(client, args.sweep_id)
    view = sweep_view(rec, await trials_of(client, rec))
    if args.output != "text":
        out.emit(view, args.output)
    else:
        _show_text(view)
    return out.EXIT_OK


def _trial_rows(trials: list[TrialView]) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = [
        ("#", "TRIAL", "STATE", "OBJECTIVE", "INTERVALS", "PARAMS", "STOPPED")
    ]
    rows += [
        (
            str(t.index),
            t.run_id,
            str(t.state),
            "" if t.objective is None else out.number(t.objective),
            str(t.intervals),
            _params(t.params),
            t.stop_reason or "",
        )
        for t in trials
    ]
    return rows


async def trials(client: Client, args: argparse.Namespace) -> int:
    rec = await get_sweep(client, args.sweep_id)
    found = ranked(await trials_of(client, rec), sweep_of(rec).spec.goal)
    if args.output != "text":
        out.emit(found, args.output, indent=False)
        return out.EXIT_OK
    out.table(_trial_rows(found))
    if not found:
        print(f"sweep {rec.run_id} has no trials yet", file=sys.stderr)
    return out.EXIT_OK


async def cancel(client: Client, args: argparse.Namespace) -> int:
    await get_sweep(client, args.sweep_id)  # refuse a run that is not a sweep
    reply = await client.cancel(args.sweep_id)
    if args.output != "text":
        out.emit(CancelView(run_id=reply.run_id, state=reply.state), args.output)
    elif reply.state in TERMINAL:
        print(f"Sweep {reply.run_id}: {reply.state}")
    else:
        print(f"Sweep {reply.run_id}: cancel sent; its running trials stop after their grace")
    return out.EXIT_OK


def run_sweep(args: argparse.Namespace) -> int:
    """`sortie sweep ACTION`: its input checked before connecting, then run with a client."""
    return with_client(args, sweep_action(args, args.script_args))


def sweep_action(
    args: argparse.Namespace, script_args: list[str]
) -> Callable[[Client], Awaitable[int]]:
    """One `sortie sweep` action, its input checked now (before connecting): errors are the
    CLI's refusals (exit 2)."""
    if args.sweep_command == "submit":
        config = run_config_of(args, script_args)
        spec = hyperdrive_config(args, config).to_spec()
        return lambda client: submit(client, args, config, spec)
    if script_args:
        raise SweepConfigError("`--` is only for `sortie sweep submit` (arguments for the script)")
    handlers = {"list": list_, "show": show, "trials": trials, "cancel": cancel}
    return lambda client: handlers[args.sweep_command](client, args)
