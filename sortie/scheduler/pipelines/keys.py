"""A step's key (what decides its result, so what its reuse is decided by) and which parts
of it changed since the step's last run. Pure."""

from __future__ import annotations

from collections.abc import Mapping

from sortie.proto.pipelines import KEY_PARTS, StepKey, StepSpec, environment_digest


def step_key(
    step: StepSpec,
    resolved_arguments: list[str],
    inputs: Mapping[str, str],
    image_id: str | None = None,
) -> StepKey:
    """``resolved_arguments``: the step's arguments with parameters put in and data tokens
    kept (a token names the data; what the data holds is in ``inputs``: PipelineData name ->
    manifest id of its content).

    The environment part is ``environment_digest`` of the run's whole ``Environment``: the
    Python section (user_managed, interpreter, pip and conda lists, python_version, channels)
    and the container section (enabled, base_image, gpu_support, shm_size, docker arguments).
    The env part is the run's variables, names and values (v1's params are among them as
    ``AML_PARAMETER_<name>``); a secret variable counts by its name alone (name -> None):
    its value is never put in a key. Not in the key: the target, resources, priority,
    limits and tags (where a step runs does not change what it computes). ``image`` is the
    container image as given, None without a container; ``image_id`` (the ID an agent has
    under a tag, from ``ImageLookup``) is what makes a re-pointed tag a changed image."""
    run = step.run
    docker = run.environment.docker
    return StepKey(
        snapshot_id=run.snapshot_id,
        script=run.script,
        arguments=list(resolved_arguments),
        environment=environment_digest(run.environment),
        image=docker.base_image if docker.enabled else None,
        image_id=image_id if docker.enabled else None,
        env=_env(run.env_vars, run.secret_env_names),
        # sorted: the digest encodes the dict in order, and order must not change the key
        inputs={name: inputs[name] for name in sorted(inputs)},
    )


def _env(env_vars: Mapping[str, str], secret_names: list[str]) -> dict[str, str | None]:
    """Sorted by name, as the digest encodes the dict in order; a secret's value left out."""
    out: dict[str, str | None] = dict(env_vars)
    out.update(dict.fromkeys(secret_names))
    return {name: out[name] for name in sorted(out)}


def changed(old: StepKey, new: StepKey) -> list[str]:
    """The ``KEY_PARTS`` that differ, in that order; for inputs, ``"inputs.NAME"`` for each
    input (by name) that differs, was added or went away; ``"image"`` when the reference or
    the image ID under it differs (a tag re-pointed to another image)."""
    out: list[str] = []
    for part in KEY_PARTS:
        if part == "inputs":
            names = sorted(old.inputs.keys() | new.inputs.keys())
            out += [f"inputs.{n}" for n in names if old.inputs.get(n) != new.inputs.get(n)]
        elif part == "image":
            if (old.image, old.image_id) != (new.image, new.image_id):
                out.append(part)
        elif getattr(old, part) != getattr(new, part):
            out.append(part)
    return out
