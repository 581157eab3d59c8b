"""One run configuration: what a user asks of a run, and its one conversion to ``RunSpec``.

The SDK's users build a ``ScriptRunConfig`` (the hosted platforms' shape: a ``RunConfiguration``
with environment sections they set field by field); ``sortie run submit`` builds the same
object from its flags; ``Client.submit`` takes it and calls :func:`run_spec`. So a setting added
here reaches the CLI, the SDK and the wire through one function, instead of three hand-copied
shapes that drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from sortie.client import envspec
from sortie.client.conda import CondaDependencies
from sortie.client.snapshot import normalise_script
from sortie.client.strict import Strict
from sortie.proto import messages as m
from sortie.proto.process_input import argument_problem, env_name_problem, env_value_problem


class RunConfigError(ValueError):
    """A run configuration that cannot be submitted as given (says what to change)."""


class NamedTarget(Protocol):
    """A compute target object (``sdk.ComputeTarget``): usable wherever a target name is."""

    name: str


@dataclass
class PythonSection(Strict):
    """``rc.environment.python``: the agent's own interpreter, or one Sortie builds."""

    user_managed_dependencies: bool = True
    interpreter_path: str | None = None
    pip_packages: list[str] = field(default_factory=list)
    requirements_file: str | None = None
    conda_dependencies_file: str | None = None
    conda_dependencies: CondaDependencies = field(default_factory=CondaDependencies)

    def to_spec(self) -> m.PythonEnvironment:
        conda = None if self.conda_dependencies.is_empty() else self.conda_dependencies
        given = [
            x
            for x in (self.requirements_file, self.conda_dependencies_file, conda)
            if x is not None
        ]
        if self.user_managed_dependencies:
            if self.pip_packages or given:
                raise RunConfigError(
                    "packages were given but user_managed_dependencies is True: set it to "
                    "False to have Sortie build the environment"
                )
            return envspec.user_managed(self.interpreter_path)
        if len(given) + bool(self.pip_packages) > 1:
            raise RunConfigError(
                "give one of pip_packages, requirements_file, conda_dependencies_file or "
                "conda_dependencies"
            )
        if self.requirements_file:
            return envspec.from_requirements(Path(self.requirements_file))
        if self.conda_dependencies_file:
            return envspec.from_conda_file(Path(self.conda_dependencies_file))
        if conda is not None:
            return conda.to_spec()
        return envspec.from_pip(list(self.pip_packages))


@dataclass
class DockerSettings(Strict):
    """``rc.environment.docker``: run in a container from ``base_image``."""

    enabled: bool = False
    base_image: str | None = None
    gpu_support: bool = False
    shm_size: str | None = None
    arguments: list[str] = field(default_factory=list)

    def to_spec(self) -> m.DockerSection:
        if self.enabled and not self.base_image:
            raise RunConfigError(
                "docker is enabled (environment.docker.enabled or DockerConfiguration("
                "use_docker=True)) but environment.docker.base_image is not set: name the "
                "image to run in"
            )
        return m.DockerSection(
            enabled=self.enabled,
            base_image=self.base_image,
            gpu_support=self.gpu_support,
            shm_size=self.shm_size,
            arguments=list(self.arguments),
        )


@dataclass
class DockerConfiguration(Strict):
    """``rc.docker``: whether the run uses a container (overrides
    ``environment.docker.enabled``), with the container's options."""

    use_docker: bool | None = None
    shared_volumes: bool | None = None  # recorded; a run's directory is always mounted
    arguments: list[str] | None = None
    shm_size: str | None = None


@dataclass
class AmlComputeSection(Strict):
    """``rc.amlcompute``: with target ``"amlcompute"``, a temporary cluster of ``vm_size``
    nodes is made for the run and deleted when it ends (v1's ``AmlComputeConfiguration``,
    whose field names these are)."""

    vm_size: str | None = None
    vm_priority: str = "dedicated"
    _cluster_max_node_count: int = 1

    def to_spec(self) -> m.AmlComputeSpec | None:
        if self.vm_size is None:
            return None
        if self.vm_priority not in ("dedicated", "lowpriority"):
            raise RunConfigError(
                f"amlcompute.vm_priority must be 'dedicated' or 'lowpriority' "
                f"(got {self.vm_priority!r})"
            )
        if self._cluster_max_node_count < 1:
            raise RunConfigError("amlcompute._cluster_max_node_count must be at least 1")
        return m.AmlComputeSpec(
            vm_size=self.vm_size,
            vm_priority=self.vm_priority,  # type: ignore[arg-type]  # a NodePriority: checked above
            max_nodes=self._cluster_max_node_count,
        )


@dataclass
class EnvironmentSection(Strict):
    """The run's environment: Python and container. Named and versioned when it is an
    ``Environment`` of the v1 layer; its variables reach the run (the run's own win)."""

    python: PythonSection = field(default_factory=PythonSection)
    docker: DockerSettings = field(default_factory=DockerSettings)
    name: str | None = None
    version: str | None = None
    environment_variables: dict[str, str] = field(default_factory=dict)


@dataclass
class RunConfiguration(Strict):
    """Where a run goes, what it needs, and how it is retried (everything but the script)."""

    target: str | NamedTarget = "local"
    environment: EnvironmentSection = field(default_factory=EnvironmentSection)
    environment_variables: dict[str, str] = field(default_factory=dict)
    # name -> value, given to the run like environment_variables, but the values are never
    # stored in the run's record, shown, or logged (API keys, tokens)
    secret_environment_variables: dict[str, str] = field(default_factory=dict, repr=False)
    max_run_duration_seconds: float | None = None
    priority: int = 0
    cpus: float = 1.0
    memory_mb: int = 0
    gpus: int = 0
    gpu_type: str | None = None
    node_count: int = 1
    # ranks started on each node: more than one only on a Slurm target (Slurm's
    # --ntasks-per-node); elsewhere start more from the script (torchrun)
    processes_per_node: int = 1
    max_retries: int = 0
    constraints: dict[str, str] = field(default_factory=dict)
    dedicated_only: bool = False
    strategy: Literal["binpack", "spread"] = "binpack"  # spread: prefer the emptiest agent
    # fail the run (kind queue_timeout) if it is still queued this long
    queue_timeout_seconds: float | None = None
    amlcompute: AmlComputeSection = field(default_factory=AmlComputeSection)
    docker: DockerConfiguration | None = None


@dataclass
class ScriptRunConfig(Strict):
    """A script in a source directory, its arguments, and the run's configuration."""

    source_directory: str | Path
    script: str
    arguments: list[Any] = field(default_factory=list)
    run_config: RunConfiguration = field(default_factory=RunConfiguration)
    compute_target: str | NamedTarget | None = None  # overrides run_config.target when given


@dataclass(frozen=True, kw_only=True)
class Source:
    """What the client found in the source directory: its snapshot and its git state."""

    snapshot_id: str
    files: int
    bytes: int
    git: m.GitInfo | None


def check_process_input(config: ScriptRunConfig) -> None:
    """Refuse arguments and variables the run's process could not receive (a NUL byte, a bad
    name), by the scheduler's own rule (``proto/process_input.py``), before the snapshot is
    hashed. Raises ``RunConfigError``."""
    rc = config.run_config
    plain, secret = rc.environment_variables, rc.secret_environment_variables
    why = (
        argument_problem([str(a) for a in config.arguments])
        or env_name_problem([*plain, *secret])
        or env_value_problem(plain)
        or env_value_problem(secret, secret=True)
    )
    if why is not None:
        raise RunConfigError(why)


def run_spec(
    config: ScriptRunConfig, source: Source, *, experiment: str, submission_id: str
) -> m.RunSpec:
    """The run as the scheduler receives it. Raises ``RunConfigError`` (or ``EnvSpecError``
    for an environment file that cannot be read) for what cannot be submitted."""
    rc = config.run_config
    if rc.strategy not in ("binpack", "spread"):
        raise RunConfigError(f"strategy must be 'binpack' or 'spread' (got {rc.strategy!r})")
    return m.RunSpec(
        experiment=experiment,
        target=target_name(config.compute_target or rc.target),
        script=normalise_script(config.script),
        arguments=[str(a) for a in config.arguments],
        environment=m.Environment(python=rc.environment.python.to_spec(), docker=_docker(rc)),
        env_vars={**rc.environment.environment_variables, **rc.environment_variables},
        max_duration_s=rc.max_run_duration_seconds,
        resources=m.Resources(
            cpus=rc.cpus, memory_mb=rc.memory_mb, gpus=rc.gpus, gpu_type=rc.gpu_type
        ),
        priority=rc.priority,
        snapshot_id=source.snapshot_id,
        snapshot_files=source.files,
        snapshot_bytes=source.bytes,
        git=source.git,
        submission_id=submission_id,
        node_count=rc.node_count,
        processes_per_node=rc.processes_per_node,
        max_retries=rc.max_retries,
        constraints=dict(rc.constraints),
        dedicated_only=rc.dedicated_only,
        strategy=rc.strategy,
        secret_env_names=sorted(rc.secret_environment_variables),
        queue_timeout_s=rc.queue_timeout_seconds,
        amlcompute=rc.amlcompute.to_spec(),
    )


def target_name(target: str | NamedTarget) -> str:
    """A target given as a name or as a compute target object -> its name."""
    if isinstance(target, str):
        return target
    name = getattr(target, "name", None)
    if not isinstance(name, str):
        raise RunConfigError(
            f"target must be a compute target name or a ComputeTarget, got {type(target).__name__}"
        )
    return name


def _docker(rc: RunConfiguration) -> m.DockerSection:
    """``environment.docker``, with what ``rc.docker`` (a ``DockerConfiguration``) sets."""
    section = rc.environment.docker
    use = rc.docker
    if use is not None:
        section = DockerSettings(
            enabled=section.enabled if use.use_docker is None else use.use_docker,
            base_image=section.base_image,
            gpu_support=section.gpu_support,
            shm_size=use.shm_size or section.shm_size,
            arguments=list(section.arguments if use.arguments is None else use.arguments),
        )
    return section.to_spec()
