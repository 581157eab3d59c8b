"""Engines a machine can hand runs to: a Slurm cluster (its login node attached) and a Spark
cluster (its head node attached). Wire types and their checks; pure.

An attached machine with an ``engine`` runs no script itself: its agent (on the login or head
node, reached over the same SSH link as any attached machine) submits each run to the engine,
follows it, and collects its output (``agents.executors.slurm`` / ``.spark``). The engine
decides where the run goes; Sortie does not place it on the engine's nodes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Literal

import msgspec

from sortie.proto.base import Message

EngineKind = Literal["slurm", "spark"]

# Slurm partition/account/QOS names, Spark conf keys: what each tool accepts, and no shell or
# script metacharacters (they are written into a batch script and an argv)
_SLURM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_SPARK_KEY = re.compile(r"^spark\.[A-Za-z0-9_.-]{1,200}$")
_SPARK_SUBMIT = re.compile(r"^/?[A-Za-z0-9_.+-]+(/[A-Za-z0-9_.+-]+)*$")
_SPARK_MASTER = re.compile(r"^(yarn|local(\[[0-9*]+\])?|spark://[A-Za-z0-9_.-]+:[0-9]{1,5})$")


class EngineBase(Message, frozen=True, kw_only=True, tag_field="engine"):
    """What every engine has (nothing yet): variants tagged by ``engine``."""


class SlurmEngine(EngineBase, frozen=True, kw_only=True, tag="slurm"):
    """A Slurm cluster, reached through its login node. None: Slurm's default."""

    partition: str | None = None
    account: str | None = None
    qos: str | None = None


class SparkEngine(EngineBase, frozen=True, kw_only=True, tag="spark"):
    """A Spark cluster, reached through its head node (``spark-submit`` runs there)."""

    master: str = "yarn"  # spark://HOST:PORT, yarn, or local[N]
    conf: dict[str, str] = {}  # --conf KEY=VALUE for every application
    submit: str = "spark-submit"  # the launcher on the head node: a name on PATH or a path
    ui_port: int = 8080  # the standalone master's web UI (its /json: workers, applications)


Engine = SlurmEngine | SparkEngine


class EngineJob(Message, frozen=True, kw_only=True):
    """An attempt as its engine sees it, from the agent's reports: the engine's job id, its
    state in the engine's own words, and why it waits (Slurm's reason, e.g. ``Resources``)."""

    engine: EngineKind
    job_id: str
    state: str  # e.g. "PENDING", "RUNNING" (Slurm), "SUBMITTED", "RUNNING" (Spark)
    reason: str | None = None
    since: float  # when the engine job reached ``state``


def kind_of(engine: Engine) -> EngineKind:
    """The engine's tag ("slurm", "spark")."""
    return "slurm" if isinstance(engine, SlurmEngine) else "spark"


def problem(engine: Engine) -> str | None:
    """Why ``engine`` cannot be used, or None; says what to write instead."""
    match engine:
        case SlurmEngine():
            for flag, value in (
                ("--partition", engine.partition),
                ("--account", engine.account),
                ("--qos", engine.qos),
            ):
                if value is not None and not _SLURM_NAME.match(value):
                    return (
                        f"{flag} {value[:80]!r} is not a Slurm name: use letters, digits, "
                        "'_', '.' and '-' (at most 64), starting with a letter or digit"
                    )
        case SparkEngine():
            if not _SPARK_MASTER.match(engine.master):
                return (
                    f"--master {engine.master[:80]!r} is not valid: use spark://HOST:PORT, "
                    "yarn, or local[N]"
                )
            for key, value in engine.conf.items():
                if not _SPARK_KEY.match(key):
                    return (
                        f"--conf key {key[:80]!r} is not valid: Spark settings are named "
                        "spark.SOMETHING (letters, digits, '_', '.', '-')"
                    )
                if "\n" in value or "\0" in value:
                    return f"--conf {key}: the value must be one line"
            if not _SPARK_SUBMIT.match(engine.submit):
                return (
                    f"--submit {engine.submit[:80]!r} is not valid: give spark-submit's name on "
                    "PATH or its absolute path (no spaces or shell characters)"
                )
            if not 1 <= engine.ui_port <= 65535:
                return f"--ui-port {engine.ui_port} is not a port: use 1-65535 (the master's UI)"
    return None


def spark_conf(pairs: Iterable[str]) -> dict[str, str]:
    """Spark settings given as ``KEY=VALUE`` (the CLI's ``--conf`` flags, the dashboard's conf
    lines); a ValueError for one without ``=`` or a key."""
    conf: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--conf takes KEY=VALUE, got {pair[:80]!r}")
        conf[key] = value
    return conf


def engine_of(
    kind: EngineKind,
    *,
    partition: str | None = None,
    account: str | None = None,
    qos: str | None = None,
    master: str | None = None,
    conf: Iterable[str] = (),
    submit: str | None = None,
    ui_port: int | None = None,
) -> Engine:
    """The engine ``kind`` names from its settings (None: the engine's default), as the CLI's
    `compute attach --type slurm|spark` flags and the dashboard's attach form give them; a
    ValueError saying what to write instead for a value the engine would not take."""
    engine: Engine
    if kind == "slurm":
        engine = SlurmEngine(partition=partition, account=account, qos=qos)
    else:
        engine = SparkEngine(conf=spark_conf(conf))
        engine = msgspec.structs.replace(
            engine,
            master=engine.master if master is None else master,
            submit=engine.submit if submit is None else submit,
            ui_port=engine.ui_port if ui_port is None else ui_port,
        )
    if (why := problem(engine)) is not None:
        raise ValueError(why)
    return engine
