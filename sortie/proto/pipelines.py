"""Pipelines on the wire: steps on their own targets, data between them, reuse by content.

A client submits a ``PipelineSpec`` (``SubmitRequest.pipeline``, with the parameters' values
and ``regenerate_outputs``); the scheduler keeps ONE pipeline run record (``RunRecord.pipeline``)
whose ``steps`` say where each step is (``StepState``), and submits each step, once its inputs
exist, as a child run (``parent_id``: the pipeline, ``RunRecord.step``: the step's name, run id
``step_run_id``). Semantics follow the hosted platform's pipelines (SDK v1):

- **Data.** A ``PipelineData`` is a directory one step writes (``StepSpec.outputs``) and later
  steps read (``StepSpec.inputs``). In a step's arguments ``data_token(name)`` stands for the
  directory's local path; the agent puts the path there (``resolve_data``). After the step
  completes, its agent stores each output directory content-addressed, as a snapshot is (a
  ``Manifest`` blob and its files' blobs), and reports the manifest ids
  (``RunReport.data_outputs`` -> ``RunRecord.data_outputs``); a step that reads it gets the id
  in ``RunSpec.data_inputs`` and its agent lays the files out, fetching only missing blobs.
- **Parameters.** ``param_token(name)`` in an argument stands for a ``PipelineParameter``'s
  value; the scheduler puts the values in (``resolve_params``) before it submits the step.
- **The graph** comes from inputs and outputs, plus ``run_after``; a cycle, an input nobody
  produces or two producers of one output are refused before anything runs
  (``scheduler/pipelines/validate.py``).
- **Reuse.** A step's ``StepKey`` hashes what decides its result: its snapshot, script,
  resolved arguments, environment, container image (the reference and, for a tag, the image
  ID an agent of its target has under it when the pipeline is accepted: ``ImageLookup``) and
  the content of its inputs. With
  ``allow_reuse`` (the default) and no ``regenerate_outputs``, a step whose key matches an
  earlier completed step's (``CachedStep``, in the step-cache bucket) ends ``reused``, points
  to that run and has its outputs at once; otherwise ``StepStatus.changed`` says which parts
  of the key differ from the step's last run.
- **Failure.** A failed (or canceled) step fails the pipeline; the steps downstream of it end
  ``skipped``; independent branches finish.
"""

from __future__ import annotations

import hashlib
import re
from enum import StrEnum
from typing import Literal

import msgspec

from sortie.proto import messages  # a module import: messages imports this module too
from sortie.proto.base import Message

ParamValue = str | int | float | bool

MAX_STEPS = 1_000  # steps in one pipeline, at most
NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,62}$")  # step, data and parameter names


# --- the step lifecycle (inside a pipeline record) -------------------------------------------


class StepState(StrEnum):
    WAITING = "waiting"  # its inputs (or a run_after step) are not there yet
    RUNNING = "running"  # its run was submitted: the run's own state says the rest
    COMPLETED = "completed"
    REUSED = "reused"  # an earlier completed step had its key: that run's outputs are used
    FAILED = "failed"  # its run failed
    CANCELED = "canceled"  # its run was canceled, or the pipeline was before it started
    SKIPPED = "skipped"  # a step it depends on failed or was canceled: it never runs


# Each state -> the states it may move to. Terminal states map to nothing.
STEP_TRANSITIONS: dict[StepState, frozenset[StepState]] = {
    StepState.WAITING: frozenset(
        {
            StepState.RUNNING,  # its inputs exist and no earlier step had its key
            StepState.REUSED,  # an earlier completed step had its key (allow_reuse)
            StepState.SKIPPED,  # an upstream step failed or was canceled
            StepState.CANCELED,  # the pipeline was canceled first
        }
    ),
    StepState.RUNNING: frozenset(
        {
            StepState.COMPLETED,  # its run completed (its outputs are stored)
            StepState.FAILED,  # its run failed (after its retries)
            StepState.CANCELED,  # its run was canceled (by a user, or the pipeline's cancel)
        }
    ),
    StepState.COMPLETED: frozenset(),
    StepState.REUSED: frozenset(),
    StepState.FAILED: frozenset(),
    StepState.CANCELED: frozenset(),
    StepState.SKIPPED: frozenset(),
}
STEP_TERMINAL = frozenset(s for s, nxt in STEP_TRANSITIONS.items() if not nxt)
STEP_SUCCEEDED = frozenset({StepState.COMPLETED, StepState.REUSED})  # outputs available


class StepTransitionError(ValueError):
    pass


def step_transition(current: StepState, new: StepState) -> StepState:
    """``new`` if the table allows it; anything else is refused."""
    if new not in STEP_TRANSITIONS[current]:
        raise StepTransitionError(f"step cannot go from {current} to {new}")
    return new


# --- what a client submits -------------------------------------------------------------------


class StepSpec(Message, frozen=True, kw_only=True):
    """One step (v1's ``PythonScriptStep``). ``run`` is the step's run as any run's spec (its
    own snapshot, script, target, environment, resources); its ``arguments`` may hold
    ``data_token``s and ``param_token``s; its ``experiment`` and ``tags`` are the pipeline's."""

    name: str  # unique in the pipeline (NAME_RE): the step's run id is step_run_id(...)
    run: messages.RunSpec
    inputs: list[str] = []  # PipelineData names it reads (each produced by one other step)
    outputs: list[str] = []  # PipelineData names it writes (produced by no other step)
    run_after: list[str] = []  # steps that must succeed first though no data links them
    allow_reuse: bool = True


class PipelineSpec(Message, frozen=True, kw_only=True):
    """A pipeline as submitted (v1's ``Pipeline``). Immutable once accepted."""

    name: str  # shown in lists; with the experiment, names the steps' last runs for reuse
    steps: list[StepSpec]
    parameters: dict[str, ParamValue] = {}  # PipelineParameter name -> default value
    description: str = ""


class PipelineRequest(Message, frozen=True, kw_only=True):
    """``SubmitRequest.pipeline``. With it, the request's ``spec`` is the pipeline run's own
    record: its ``experiment``, ``tags`` and ``submission_id`` count; its ``script`` is the
    pipeline's name and its ``snapshot_id`` the first step's (a pipeline run runs nothing)."""

    spec: PipelineSpec
    parameters: dict[str, ParamValue] = {}  # values for this submission (others: defaults)
    regenerate_outputs: bool = False  # run every step: reuse nothing
    rerun_of: str | None = None  # `sortie pipeline rerun RUN`: the pipeline run resubmitted


# --- what the scheduler keeps ----------------------------------------------------------------


class StepKey(Message, frozen=True, kw_only=True, omit_defaults=True):
    """What decides a step's result. Two steps with equal keys give equal outputs, so the
    second can reuse the first's (``digest``). ``omit_defaults``: a key without variables
    encodes (and digests) as it did before ``env`` was a part, so stored reuse still holds."""

    snapshot_id: str
    script: str
    arguments: list[str]  # parameters put in; data tokens kept (their content is in inputs)
    environment: str  # sha256 of the encoded ``Environment`` (python, conda, pip, variables)
    image: str | None  # the container image as given (None: no container)
    inputs: dict[str, str]  # PipelineData name -> manifest id of its content
    # the run's environment variables: name -> value, and a secret one's name -> None (its
    # value is never in a key); v1's params arrive here as AML_PARAMETER_<name>
    env: dict[str, str | None] = {}
    # the image ID ``image`` (a tag) named on an agent of the step's target when the pipeline
    # was accepted (``ImageLookup``); None: no container, a reference pinned by digest
    # (``pinned``), or no agent told. Part of "image" in ``changed``.
    image_id: str | None = None

    def digest(self) -> str:
        return hashlib.sha256(msgspec.msgpack.encode(self)).hexdigest()


KEY_PARTS = ("snapshot_id", "script", "arguments", "environment", "image", "env", "inputs")


def pinned(reference: str) -> bool:
    """A reference that names its image by content (``name@sha256:...``): it needs no lookup."""
    return "@sha256:" in reference


class ImageLookup(Message, frozen=True, kw_only=True):
    """A container step's image reference (a tag) as the scheduler looked it up when it
    accepted the pipeline: the image ID one live agent of the step's target has under it
    (``ImageFound``), or why there is none. A step without an ID is never reused: it runs."""

    image_id: str | None = None
    problem: str | None = None  # why no ID: no agent answered, none has it, its engine failed


def environment_digest(env: messages.Environment) -> str:
    return hashlib.sha256(msgspec.msgpack.encode(env)).hexdigest()


class StepStatus(Message, frozen=True, kw_only=True):
    """One step on its pipeline's record."""

    state: StepState = StepState.WAITING
    run_id: str | None = None  # its run (RUNNING and after), or the reused one (REUSED)
    key: StepKey | None = None  # set when it left WAITING for RUNNING or REUSED
    # which KEY_PARTS (and which inputs, as "inputs.NAME") differ from this step's last run
    # (``last_key``); [] when it was reused; None when there was no earlier run to compare
    changed: list[str] | None = None
    outputs: dict[str, str] = {}  # PipelineData name -> manifest id (COMPLETED, REUSED)
    reason: str | None = None  # why it was skipped, failed, canceled, or ran again
    # why it ran instead of being reused: "allow_reuse is off", "regenerate_outputs",
    # "no earlier run", "key changed"
    ran_because: str | None = None


class Pipeline(Message, frozen=True, kw_only=True):
    """A pipeline's spec and progress, on its run record."""

    spec: PipelineSpec
    parameters: dict[str, ParamValue] = {}  # the values used (defaults with this submit's)
    regenerate_outputs: bool = False
    rerun_of: str | None = None
    steps: dict[str, StepStatus] = {}  # every step by name, in the spec's order
    # each container step whose image is a tag (not ``pinned``), by name: its image ID as
    # looked up when the pipeline was accepted (the scheduler's daemon asks an agent)
    images: dict[str, ImageLookup] = {}


class CachedStep(Message, frozen=True, kw_only=True):
    """A completed step, in the step-cache bucket under its key's digest: what a later step
    with the same key reuses."""

    run_id: str
    outputs: dict[str, str]  # PipelineData name -> manifest id
    completed_at: float


class LastKey(Message, frozen=True, kw_only=True):
    """A step's key at its last run, in the step-cache bucket under ``last_key_id``: what the
    next run's ``StepStatus.changed`` is said against."""

    run_id: str
    key: StepKey


# the step-cache bucket's two kinds of entry, told apart by their keys' prefix
CACHED_PREFIX = "key."  # CachedStep, under cache_id
LAST_PREFIX = "last."  # LastKey, under last_key_id


def last_key_id(experiment: str, pipeline: str, step: str) -> str:
    """The step-cache key of a step's ``LastKey`` (safe for a KV key whatever the names)."""
    raw = f"{experiment}\0{pipeline}\0{step}".encode()
    return LAST_PREFIX + hashlib.sha256(raw).hexdigest()


def cache_id(key: StepKey) -> str:
    """The step-cache key of the ``CachedStep`` of a step with ``key``."""
    return CACHED_PREFIX + key.digest()


def step_run_id(pipeline_run_id: str, step: str) -> str:
    """A step's run id: the pipeline's and the step's name, so a step submitted again after a
    restart is the same run, never a second one."""
    return f"{pipeline_run_id}_{step}"


# --- tokens in arguments ---------------------------------------------------------------------

_DATA = re.compile(r"\{sortie-data:([A-Za-z][A-Za-z0-9_-]{0,62})\}")
_PARAM = re.compile(r"\{sortie-param:([A-Za-z][A-Za-z0-9_-]{0,62})\}")


def data_token(name: str) -> str:
    """What stands in a step's argument for PipelineData ``name``'s local path."""
    return f"{{sortie-data:{name}}}"


def param_token(name: str) -> str:
    """What stands in a step's argument for PipelineParameter ``name``'s value."""
    return f"{{sortie-param:{name}}}"


def data_names(arguments: list[str]) -> list[str]:
    """The PipelineData names the arguments mention, in order, once each."""
    return list(dict.fromkeys(n for a in arguments for n in _DATA.findall(a)))


def param_names(arguments: list[str]) -> list[str]:
    return list(dict.fromkeys(n for a in arguments for n in _PARAM.findall(a)))


def resolve_params(arguments: list[str], values: dict[str, ParamValue]) -> list[str]:
    """The arguments with each parameter token replaced by its value (a bool as True/False,
    as Python's ``str``). Every name must be in ``values`` (validate checks it first)."""
    return [_PARAM.sub(lambda m: str(values[m.group(1)]), a) for a in arguments]


def resolve_data(arguments: list[str], paths: dict[str, str]) -> list[str]:
    """The arguments with each data token replaced by the directory's local path (the agent's
    last step before it starts the process)."""
    return [_DATA.sub(lambda m: paths[m.group(1)], a) for a in arguments]


StepOutcome = Literal["completed", "failed", "canceled"]
