"""Checks on a submitted RunSpec that need no I/O.

Each failure says what was wrong and what to do.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping

from sortie.proto import messages as m
from sortie.proto.notes import check_entries
from sortie.proto.paths import check_relpath
from sortie.proto.process_input import (
    argument_problem,
    env_name_problem,
    env_value_problem,
    spec_text_problem,
)

EXPERIMENT_RULE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,99}$")
SHA256 = re.compile(r"^[0-9a-f]{64}$")
SUBMISSION_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
# the scheduler's own limit on a snapshot's total bytes, in MB (scheduler/snapshot_check.py)
SNAPSHOT_LIMIT_ENV = "SORTIE_SNAPSHOT_LIMIT_MB"


def check_submission_id(value: str) -> str | None:
    if SUBMISSION_ID.match(value):
        return None
    return (
        f"submission id {value[:140]!r} is not valid: use 1-128 letters, digits, '-', '_', "
        "'.' or ':', starting with a letter or digit"
    )


def check_experiment_name(name: str) -> str | None:
    if EXPERIMENT_RULE.match(name):
        return None
    return (
        f"experiment name {name!r} is not valid: use 1-100 letters, digits, '-' or '_', "
        "starting with a letter or digit"
    )


def check_spec(spec: m.RunSpec, known_targets: Collection[str]) -> m.ErrorReply | None:
    """Return the first problem with ``spec`` as an ErrorReply, or None if it is acceptable."""
    if (why := _name_problem(spec)) is not None:
        return m.ErrorReply(code="bad_request", message=why)
    if spec.target not in known_targets:
        known = ", ".join(sorted(known_targets)) or "none"
        return m.ErrorReply(
            code="unknown_target",
            message=(
                f"unknown compute target {spec.target!r}; known targets: {known}. "
                "Use one of those, or start an agent for it with "
                f"`sortie agent --target {spec.target}`."
            ),
        )
    why = (
        _run_problem(spec)
        or spec_text_problem(spec)
        or _env_var_problem(spec)
        or _environment_problem(spec)
        or check_entries("tag", spec.tags)
    )
    return None if why is None else m.ErrorReply(code="bad_request", message=why)


def check_manifest(
    manifest: m.Manifest, limit_bytes: int, stored: Mapping[str, int | None]
) -> str | None:
    """Why a snapshot cannot be run: a negative size, more bytes in all than the scheduler's
    limit, or an entry whose size is not its blob's. ``stored``: the stored size of the blobs
    that were looked up (None: not stored); entries not in it are left to the agent, which
    checks every one before the run starts."""
    if any(e.size < 0 for e in manifest.files):
        return "the snapshot's manifest has a negative file size: submit with an unmodified client"
    total = sum(e.size for e in manifest.files)
    if total > limit_bytes:
        return (
            f"the snapshot holds {total:,} bytes, more than this scheduler's limit of "
            f"{limit_bytes:,}: leave large files out (.amlignore), or raise the limit where the "
            f"scheduler runs ({SNAPSHOT_LIMIT_ENV}, in MB)"
        )
    for e in manifest.files:
        size = stored.get(e.sha256)
        if size is not None and size != e.size:
            return (
                f"the manifest says {e.path!r} holds {e.size:,} bytes, but its blob holds "
                f"{size:,}: submit again with an unmodified client"
            )
    return None


def _name_problem(spec: m.RunSpec) -> str | None:
    """The experiment name and the submission id."""
    if (why := check_experiment_name(spec.experiment)) is not None:
        return why
    if spec.submission_id is not None:
        return check_submission_id(spec.submission_id)
    return None


def _run_problem(spec: m.RunSpec) -> str | None:
    """What runs, from which snapshot, for how long, with what resources."""
    if (why := check_relpath(spec.script)) is not None:
        return f"script path is not valid: {why}; give a path inside the source directory"
    if not SHA256.match(spec.snapshot_id):
        return "snapshot_id must be the 64-hex sha256 of the manifest"
    if spec.snapshot_files < 0 or spec.snapshot_bytes < 0:
        return "snapshot_files and snapshot_bytes must not be negative"
    if (why := argument_problem(spec.arguments)) is not None:
        return why
    if spec.max_duration_s is not None and spec.max_duration_s <= 0:
        return "max_duration_s must be a positive number of seconds"
    if spec.queue_timeout_s is not None and not spec.queue_timeout_s > 0:
        return "queue_timeout_s must be a positive number of seconds (--queue-timeout SECONDS)"
    return _resources_problem(spec)


def _resources_problem(spec: m.RunSpec) -> str | None:
    res = spec.resources
    if res.cpus < 0 or res.memory_mb < 0 or res.gpus < 0:
        return "resources must not be negative"
    if spec.processes_per_node < 1:
        return "processes_per_node must be at least 1"
    return None


def _env_var_problem(spec: m.RunSpec) -> str | None:
    """The names and values of the plain and secret environment variables."""
    why = env_name_problem([*spec.env_vars, *spec.secret_env_names]) or env_value_problem(
        spec.env_vars
    )
    if why is not None:
        return why
    names = spec.secret_env_names
    if len(set(names)) != len(names) or set(names) & set(spec.env_vars):
        return (
            "a secret environment variable is named twice, or also given as a plain one: "
            "give each name once"
        )
    return None


def _environment_problem(spec: m.RunSpec) -> str | None:
    """The docker and python environment settings."""
    docker = spec.environment.docker
    if docker.enabled and not (docker.base_image or "").strip():
        return "docker.enabled needs a base image (--docker-image IMAGE / base_image)"
    py = spec.environment.python
    if py.user_managed and (py.pip or py.conda):
        return (
            "a user-managed environment cannot list packages: set user_managed=False to "
            "have Sortie build the environment, or install them into your interpreter"
        )
    return None


def check_secrets(spec: m.RunSpec, secret: m.SecretEnv | None) -> m.ErrorReply | None:
    """The secret values must be exactly those the spec names. Messages name variables,
    never values."""
    given = set(secret.values) if secret is not None else set()
    wanted = set(spec.secret_env_names)
    if given != wanted:
        missing = ", ".join(sorted(wanted - given)) or "none"
        extra = ", ".join(sorted(given - wanted)) or "none"
        return m.ErrorReply(
            code="bad_request",
            message=(
                "secret environment variables do not match the run's secret_env_names "
                f"(without a value: {missing}; not named: {extra}): send a value for each name"
            ),
        )
    if secret is not None and (why := env_value_problem(secret.values, secret=True)):
        return m.ErrorReply(code="bad_request", message=why)
    return None


def unstored_file(manifest: m.Manifest, stored: Mapping[str, int | None]) -> str | None:
    """The first file whose blob was looked up (``stored``) and is not stored, said so that the
    client uploads every file again: its manifest was stored without them (by another
    uploader), so the client's "manifest stored, so are its files" does not hold."""
    for e in manifest.files:
        if e.sha256 in stored and stored[e.sha256] is None:
            return (
                f"the blob of {e.path!r} ({e.sha256[:12]}) is not in the store: upload the "
                "snapshot's files before submitting"
            )
    return None
