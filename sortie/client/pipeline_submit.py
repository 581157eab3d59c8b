"""Submitting a pipeline: each step's source directory snapshotted (once per directory) and
uploaded as a run's is, the steps' specs gathered into one ``PipelineRequest``.

The SDK's ``Pipeline`` (native and v1) and `sortie pipeline submit` build ``StepConfig``s and
call :func:`submit_pipeline`; `sortie pipeline rerun` calls :func:`rerun_pipeline`.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from sortie.proto import messages as m
from sortie.proto import pipelines as p

if TYPE_CHECKING:
    from sortie.client import snapshot as snap
    from sortie.client.client import Client, Submission
    from sortie.client.runconfig import ScriptRunConfig


@dataclass(frozen=True)
class StepConfig:
    """One step as a client describes it: ``config`` is the step's run (its arguments may
    hold ``pipelines.data_token(name)`` and ``pipelines.param_token(name)``)."""

    name: str
    config: ScriptRunConfig
    inputs: Sequence[str] = ()
    outputs: Sequence[str] = ()
    run_after: Sequence[str] = ()
    allow_reuse: bool = True


@dataclass(frozen=True)
class PipelineOptions:
    """What a pipeline submission says beyond its steps."""

    experiment: str = "default"
    parameters: dict[str, p.ParamValue] | None = None  # declared: name -> default value
    values: dict[str, p.ParamValue] | None = None  # this submission's values
    regenerate_outputs: bool = False
    tags: dict[str, str] | None = None
    submission_id: str | None = None
    description: str = ""


async def submit_pipeline(
    client: Client, name: str, steps: Sequence[StepConfig], options: PipelineOptions
) -> Submission:
    """Snapshot and upload every step's source directory, then submit the pipeline; the
    submission's run id is the pipeline run's. Refusals as ``Client.submit``'s (the scheduler
    checks the graph before anything is stored: ``RequestRefused``)."""
    from sortie.client.client import SnapshotSummary, Submission

    plans, request = _pipeline_request(name, steps, options)
    await client.check_request(request)
    uploaded_files = uploaded_bytes = 0
    for plan in plans.values():
        result = await client.upload_plan(plan)
        uploaded_files += result.uploaded_files
        uploaded_bytes += result.uploaded_bytes
    accepted = await client.submit_request(request)
    return Submission(
        run_id=accepted.run_id,
        snapshot=SnapshotSummary(
            id=request.spec.snapshot_id,
            files=sum(pl.files for pl in plans.values()),
            bytes=sum(pl.total_bytes for pl in plans.values()),
            uploaded_files=uploaded_files,
            uploaded_bytes=uploaded_bytes,
        ),
        warnings=[w for pl in plans.values() for w in pl.warnings],
    )


async def check_pipeline(
    client: Client, name: str, steps: Sequence[StepConfig], options: PipelineOptions
) -> None:
    """Ask the scheduler whether it would accept the pipeline (``RequestRefused`` says what
    it would refuse); the source directories are hashed, nothing is uploaded or stored."""
    _, request = _pipeline_request(name, steps, options)
    await client.check_request(request)


async def rerun_pipeline(client: Client, run_id: str) -> str:
    """Submit a pipeline run's pipeline again with the same parameters, reusing every step
    whose key is unchanged (so it resumes after a failure); the new pipeline run's id."""
    rec = await client.get_run(run_id)
    if rec.pipeline is None:
        from sortie.client.client import ClientError

        raise ClientError(f"{run_id} is not a pipeline run: `sortie run resubmit` reruns a run")
    pipe = rec.pipeline
    spec = msgspec.structs.replace(rec.spec, submission_id=uuid.uuid4().hex)
    request = m.SubmitRequest(
        spec=spec,
        pipeline=p.PipelineRequest(spec=pipe.spec, parameters=pipe.parameters, rerun_of=run_id),
    )
    return (await client.submit_request(request)).run_id


def _pipeline_request(
    name: str, steps: Sequence[StepConfig], options: PipelineOptions
) -> tuple[dict[Path, snap.SnapshotPlan], m.SubmitRequest]:
    """The snapshot plans of the steps' source directories, and the pipeline's request."""
    plans, specs = _step_specs(steps, options.experiment)
    spec = p.PipelineSpec(
        name=name,
        steps=specs,
        parameters=dict(options.parameters or {}),
        description=options.description,
    )
    return plans, _request(spec, options, specs[0].run.snapshot_id if specs else "")


def _step_specs(
    steps: Sequence[StepConfig], experiment: str
) -> tuple[dict[Path, snap.SnapshotPlan], list[p.StepSpec]]:
    """Each step's spec, and the snapshot plan of each distinct source directory."""
    from sortie.client import snapshot as snap
    from sortie.client.gitinfo import git_info
    from sortie.client.runconfig import Source, check_process_input, run_spec

    plans: dict[Path, snap.SnapshotPlan] = {}
    sources: dict[Path, Source] = {}
    specs: list[p.StepSpec] = []
    for step in steps:
        check_process_input(step.config)
        source_dir = Path(step.config.source_directory).resolve()
        if source_dir not in plans:
            plan = snap.build_manifest(source_dir)
            snapshot_id, _ = snap.encode_manifest(plan.manifest)
            plans[source_dir] = plan
            sources[source_dir] = Source(
                snapshot_id=snapshot_id,
                files=plan.files,
                bytes=plan.total_bytes,
                git=git_info(source_dir),
            )
        snap.check_script(plans[source_dir], step.config.script)
        run = run_spec(
            step.config, sources[source_dir], experiment=experiment, submission_id=uuid.uuid4().hex
        )
        specs.append(
            p.StepSpec(
                name=step.name,
                run=run,
                inputs=list(step.inputs),
                outputs=list(step.outputs),
                run_after=list(step.run_after),
                allow_reuse=step.allow_reuse,
            )
        )
    return plans, specs


def _request(spec: p.PipelineSpec, options: PipelineOptions, snapshot_id: str) -> m.SubmitRequest:
    """The pipeline run's own spec (proto/pipelines.PipelineRequest says which fields count)
    and the pipeline."""
    own = m.RunSpec(
        experiment=options.experiment,
        script=spec.name,
        snapshot_id=snapshot_id,
        submission_id=options.submission_id or uuid.uuid4().hex,
        tags={str(k): str(v) for k, v in (options.tags or {}).items()},
    )
    return m.SubmitRequest(
        spec=own,
        pipeline=p.PipelineRequest(
            spec=spec,
            parameters=dict(options.values or {}),
            regenerate_outputs=options.regenerate_outputs,
        ),
    )
