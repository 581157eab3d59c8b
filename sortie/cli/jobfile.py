"""Job files: `sortie run submit -f job.yml`, a run spec written as YAML.

One definition, :class:`JobFile`, is the file's shape: it decodes the file (msgspec, unknown
keys refused) and generates ``docs/jobfile.schema.json`` (``python -m sortie.cli.jobfile``).
A job file does not have a conversion of its own: :func:`flag_defaults` turns it into the
defaults of `sortie run submit`'s flags, so the flags given on the command line override it
and the run is built by the same ``ScriptRunConfig`` the flags build (``runconfig.run_spec``
after it). Paths in the file are relative to the file.

Every error names the file, the line and the field (``job.yml:7: resources.gpus: expected an
integer, got 'two'``); an unknown key names the keys it is close to.
"""

from __future__ import annotations

import difflib
import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import msgspec
import yaml

from sortie.client import sweep_text
from sortie.client.sweep_space import SweepConfigError, choice
from sortie.proto.sweeps import Expression

Text = Annotated[str, msgspec.Meta(min_length=1)]
_T = TypeVar("_T")
Scalar = str | int | float  # YAML reads `4` and `0.5` as numbers: they are passed as text


class JobFileError(ValueError):
    """A job file that cannot be used: the message says where (file:line), which field, and
    what was wrong."""


class _Section(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pass


class PythonFile(_Section, frozen=True, kw_only=True):
    """``environment.python``: an interpreter used as is, or packages Sortie installs."""

    user_managed_dependencies: Annotated[
        bool | None,
        msgspec.Meta(
            description="true: use the interpreter as is; false: Sortie builds an environment "
            "(default: false when packages are given)"
        ),
    ] = None
    interpreter_path: Annotated[
        str | None, msgspec.Meta(description="the interpreter on the agent (user-managed)")
    ] = None
    pip_packages: Annotated[list[Text], msgspec.Meta(description="requirement specifiers")] = []
    requirements_file: Annotated[
        str | None, msgspec.Meta(description="a requirements.txt, relative to this file")
    ] = None
    conda_dependencies_file: Annotated[
        str | None,
        msgspec.Meta(description="a conda-style YAML (its pip: section), relative to this file"),
    ] = None


class DockerFile(_Section, frozen=True, kw_only=True):
    """``environment.docker``: run in a container."""

    enabled: bool = False
    base_image: str | None = None
    gpu_support: bool = False
    shm_size: Annotated[
        str | None, msgspec.Meta(description="the container's shared memory, e.g. 2g")
    ] = None
    arguments: Annotated[
        list[Text], msgspec.Meta(description="extra docker-run options, e.g. --ipc=host")
    ] = []


class EnvironmentFile(_Section, frozen=True, kw_only=True):
    python: PythonFile = PythonFile()
    docker: DockerFile = DockerFile()


class ResourcesFile(_Section, frozen=True, kw_only=True):
    cpus: Annotated[float, msgspec.Meta(gt=0)] = 1.0
    memory: Annotated[float, msgspec.Meta(ge=0, description="GB")] | None = None
    memory_mb: Annotated[int, msgspec.Meta(ge=0)] = 0
    gpus: Annotated[int, msgspec.Meta(ge=0)] = 0
    gpu_type: Annotated[
        str | None, msgspec.Meta(description="e.g. H100: matched within the GPU's name")
    ] = None


class AmlComputeFile(_Section, frozen=True, kw_only=True):
    """``amlcompute``: with ``target: amlcompute``, the temporary cluster made for the run."""

    vm_size: Annotated[str | None, msgspec.Meta(description="its nodes' size")] = None
    vm_priority: Literal["dedicated", "lowpriority"] = "dedicated"
    max_nodes: Annotated[int, msgspec.Meta(ge=1)] = 1


class SweepFile(_Section, frozen=True, kw_only=True):
    """``sweep:``: a hyperparameter sweep of the job (`sortie sweep submit -f`): each trial
    runs the job with its parameters appended to ``arguments`` (``--NAME VALUE``)."""

    space: Annotated[
        dict[str, str | list[Scalar]],
        msgspec.Meta(
            description="parameter name -> an expression: loguniform(-6, -1), uniform(0, 1), "
            "choice(16, 32), randint(10), quniform/qloguniform(min, max, q), normal/lognormal/"
            "qnormal/qlognormal(mu, sigma[, q]); a list is a choice of its values",
            min_length=1,
        ),
    ]
    sampling: Literal["random", "grid", "bayesian"] = "random"
    seed: Annotated[
        Annotated[int, msgspec.Meta(ge=0)] | None,
        msgspec.Meta(description="random/bayesian: the seed (default: one chosen at submit)"),
    ] = None
    policy: Annotated[
        str,
        msgspec.Meta(
            description="early termination: none, bandit(slack_factor=0.1, "
            "evaluation_interval=1, delay_evaluation=0), median(evaluation_interval=1, "
            "delay_evaluation=0), truncation(truncation_percentage=20), asha(grace_period=1, "
            "reduction_factor=3)"
        ),
    ] = "none"
    primary_metric: Annotated[
        Text, msgspec.Meta(description="the metric the script logs (run.log(NAME, value))")
    ]
    goal: Literal["maximize", "minimize"]
    max_total_trials: Annotated[int, msgspec.Meta(ge=1)]
    max_concurrent_trials: Annotated[int, msgspec.Meta(ge=1)] | None = None
    max_duration_minutes: Annotated[float, msgspec.Meta(gt=0)] | None = 10080


class JobFile(_Section, frozen=True, kw_only=True):
    """A run spec: what `sortie run submit` takes as flags, as a file (with ``sweep:``, a
    sweep of it: `sortie sweep submit`)."""

    source_directory: Annotated[
        str, msgspec.Meta(description="the folder to snapshot, relative to this file")
    ] = "."
    script: Annotated[
        str | None, msgspec.Meta(description="the script's path inside source_directory")
    ] = None
    arguments: list[Scalar] = []
    target: Text = "local"
    experiment: Text = "default"
    environment: EnvironmentFile = EnvironmentFile()
    resources: ResourcesFile = ResourcesFile()
    node_count: Annotated[int, msgspec.Meta(ge=1)] = 1
    processes_per_node: Annotated[int, msgspec.Meta(ge=1)] = 1  # Slurm targets only
    priority: int = 0
    environment_variables: dict[str, Scalar] = {}
    secret_environment_variables: Annotated[
        list[Text],
        msgspec.Meta(
            description="names of variables passed from the submitter's environment; their "
            "values are never stored or shown"
        ),
    ] = []
    max_run_duration_seconds: Annotated[float, msgspec.Meta(gt=0)] | None = None
    max_retries: Annotated[int, msgspec.Meta(ge=0)] = 0
    constraints: Annotated[
        dict[str, Scalar], msgspec.Meta(description="agent labels the run needs")
    ] = {}
    dedicated_only: bool = False
    strategy: Literal["binpack", "spread"] = "binpack"
    tags: Annotated[dict[str, Scalar], msgspec.Meta(description="the run's tags")] = {}
    queue_timeout_seconds: Annotated[
        Annotated[float, msgspec.Meta(gt=0)] | None,
        msgspec.Meta(description="fail the run (queue_timeout) if still queued after this long"),
    ] = None
    amlcompute: AmlComputeFile = AmlComputeFile()
    sweep: SweepFile | None = None


# --- reading ---------------------------------------------------------------------------------


class Located:
    """The file's YAML nodes, to say on which line a value (or key) was written."""

    def __init__(self, name: str, root: yaml.Node) -> None:
        self.name, self.root = name, root

    def line(self, path: tuple[str | int, ...], *, key: bool = False) -> int:
        node = self.root
        for i, step in enumerate(path):
            child = _child(node, step, key=key and i == len(path) - 1)
            if child is None:
                break
            node = child
        return node.start_mark.line + 1

    def error(self, path: tuple[str | int, ...], text: str, *, key: bool = False) -> JobFileError:
        where = _dotted(path)
        field = f" {where}:" if where else ""
        return JobFileError(f"{self.name}:{self.line(path, key=key)}:{field} {text}")


def _child(node: yaml.Node, step: str | int, *, key: bool) -> yaml.Node | None:
    if isinstance(node, yaml.MappingNode) and isinstance(step, str):
        for k, v in node.value:
            if k.value == step:
                return k if key else v  # type: ignore[no-any-return]  # yaml is untyped
    if isinstance(node, yaml.SequenceNode) and isinstance(step, int) and step < len(node.value):
        return node.value[step]  # type: ignore[no-any-return]  # yaml is untyped
    return None


def _dotted(path: tuple[str | int, ...]) -> str:
    out = ""
    for step in path:
        out += f"[{step}]" if isinstance(step, int) else (f".{step}" if out else step)
    return out


def load(path: Path) -> JobFile:
    """The job file at ``path``, checked. Raises :class:`JobFileError`."""
    data, where = read_yaml(
        path, "job file", "script:, source_directory:, target:, ...", "docs/jobfile.schema.json"
    )
    job = decode(data, where, JobFile)
    check_job(job, where)
    return job


def decode(data: dict[str, Any], where: Located, root: type[_T]) -> _T:
    """``data`` as a ``root`` struct; an error names the line and the field."""
    try:
        return msgspec.convert(data, root)
    except msgspec.ValidationError as exc:
        raise _explain(str(exc), data, where, root) from None


def read_yaml(path: Path, what: str, keys: str, schema: str) -> tuple[dict[str, Any], Located]:
    """The mapping a YAML file holds and where its values are (``what``: the kind of file,
    ``keys``: some of its keys, ``schema``: its schema's path, for the errors)."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise JobFileError(f"cannot read the {what} {path}: {exc.strerror or exc}") from None
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        data = loader.construct_document(root) if root is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f":{mark.line + 1}" if mark is not None else ""
        raise JobFileError(f"{path}{line}: not valid YAML: {exc.problem or exc}") from None
    except yaml.YAMLError as exc:
        raise JobFileError(f"{path}: not valid YAML: {exc}") from None
    finally:
        loader.dispose()
    if root is None or not isinstance(data, dict):
        raise JobFileError(f"{path}:1: a {what} is a mapping of settings ({keys}); see {schema}")
    return data, Located(str(path), root)


_AT = re.compile(r"^(?P<what>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)
_STEP = re.compile(r"\.(\w+)|\[(\d+)\]|\[\.\.\.\]")
_UNKNOWN = re.compile(r"^Object contains unknown field `(?P<key>[^`]*)`$")
_EXPECTED = re.compile(r"^Expected `(?P<want>[^`]*)`, got `(?P<got>[^`]*)`")
_KINDS = {
    "int": "an integer",
    "float": "a number",
    "str": "a string",
    "bool": "true or false",
    "array": "a list",
    "object": "a mapping",
}


def _explain(message: str, data: object, where: Located, root: type = JobFile) -> JobFileError:
    """msgspec's error in the file's terms: the line, the dotted field, what was expected."""
    match = _AT.match(message)
    assert match is not None  # the pattern matches any text
    what, raw = match["what"], match["path"] or ""
    path: tuple[str | int, ...] = tuple(
        name if name else int(index)
        for name, index in (m.groups() for m in _STEP.finditer(raw))
        if name or index
    )
    if unknown := _UNKNOWN.match(what):
        key = unknown["key"]
        known = _field_names(path, root)
        close = difflib.get_close_matches(key, known, n=3, cutoff=0.6)
        hint = f"did you mean {' or '.join(close)}?" if close else f"known: {', '.join(known)}"
        return where.error((*path, key), f"unknown key; {hint}", key=True)
    if expected := _EXPECTED.match(what):
        wants = [_KINDS.get(w, w) for w in expected["want"].split(" | ") if w != "null"]
        if "a number" in wants and "an integer" in wants:
            wants.remove("an integer")
        want = ", ".join(wants[:-1]) + f" or {wants[-1]}" if len(wants) > 1 else wants[0]
        if raw.endswith("[...]"):  # a mapping's value: msgspec does not say which key
            return where.error(path, f"every value must be {want}")
        return where.error(path, f"expected {want}, got {_shown(_value_at(data, path))}")
    info = _type_at(path, root)
    if what.startswith("Invalid enum value") and isinstance(info, msgspec.inspect.LiteralType):
        choices = ", ".join(repr(v) for v in info.values)
        got = _shown(_value_at(data, path))
        return where.error(path, f"expected one of {choices}, got {got}")
    text = re.sub(r"`(\w+)`", lambda t: _KINDS.get(t[1], t[1]), what)
    return where.error(path, text[:1].lower() + text[1:])


def _shown(value: object) -> str:
    """A value as the file spelled it, near enough: YAML's true/false, quoted text."""
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "null"}[value]
    return repr(value)


def _value_at(data: object, path: tuple[str | int, ...]) -> object:
    for step in path:
        if isinstance(data, dict) and isinstance(step, str):
            data = data.get(step)
        elif isinstance(data, list) and isinstance(step, int) and step < len(data):
            data = data[step]
    return data


def _type_at(path: tuple[str | int, ...], root: type = JobFile) -> msgspec.inspect.Type | None:
    """The declared type of the field at ``path`` (None past a mapping)."""
    info: msgspec.inspect.Type = msgspec.inspect.type_info(root)
    for step in path:
        if isinstance(info, msgspec.inspect.UnionType):  # an optional section (sweep:)
            info = next((t for t in info.types if isinstance(t, msgspec.inspect.StructType)), info)
        if isinstance(info, msgspec.inspect.ListType) and isinstance(step, int):
            info = info.item_type  # a list of sections (a pipeline's steps:)
            continue
        if not isinstance(info, msgspec.inspect.StructType):
            return None
        fields = {f.name: f.type for f in info.fields}
        if step not in fields:
            return None
        info = fields[step]
    return info


def _field_names(path: tuple[str | int, ...], root: type = JobFile) -> list[str]:
    """The keys the section at ``path`` takes (for "did you mean")."""
    info = _type_at(path, root)
    if isinstance(info, msgspec.inspect.UnionType):  # an optional section (sweep:)
        info = next((t for t in info.types if isinstance(t, msgspec.inspect.StructType)), info)
    return [f.name for f in info.fields] if isinstance(info, msgspec.inspect.StructType) else []


def check_job(job: JobFile, where: Located) -> None:
    """What the types alone do not say: one way to get the Python environment, memory given
    once, a container image when containers are enabled."""
    py = job.environment.python
    section = ("environment", "python")
    packages = [
        name
        for name, given in (
            ("pip_packages", bool(py.pip_packages)),
            ("requirements_file", py.requirements_file is not None),
            ("conda_dependencies_file", py.conda_dependencies_file is not None),
        )
        if given
    ]
    if len(packages) > 1:
        raise where.error(section, f"give one of {' or '.join(packages)}, not both", key=True)
    if packages and (py.user_managed_dependencies or py.interpreter_path):
        raise where.error(
            section,
            f"{packages[0]} is for an environment Sortie builds; drop interpreter_path and "
            "user_managed_dependencies: true, or drop the packages",
            key=True,
        )
    if py.user_managed_dependencies is False and not packages:
        raise where.error(
            section,
            "user_managed_dependencies: false needs pip_packages, requirements_file or "
            "conda_dependencies_file",
            key=True,
        )
    docker = job.environment.docker
    if docker.enabled and not docker.base_image:
        raise where.error(("environment", "docker"), "enabled: true needs base_image", key=True)
    if job.resources.memory is not None and job.resources.memory_mb:
        raise where.error(("resources",), "give memory (GB) or memory_mb, not both", key=True)
    if job.sweep is not None:
        _check_sweep(job.sweep, where)


def _check_sweep(sweep: SweepFile, where: Located) -> None:
    """Every expression and the policy read as the CLI reads them (no eval)."""
    for name in sweep.space:
        try:
            sweep_param(name, sweep.space[name])
        except SweepConfigError as exc:
            raise where.error(("sweep", "space", name), str(exc)) from None
    try:
        sweep_text.policy(sweep.policy)
    except SweepConfigError as exc:
        raise where.error(("sweep", "policy"), str(exc)) from None
    try:
        sweep_text.sampling(sweep.sampling, dict(sweep_space(sweep)), sweep.seed)
    except SweepConfigError as exc:
        raise where.error(("sweep", "sampling"), str(exc)) from None


def sweep_param(name: str, value: str | list[Scalar]) -> tuple[str, Expression]:
    """One ``space:`` entry: an expression's text, or a list (a choice of its values)."""
    if isinstance(value, list):
        return name, choice(value)
    return sweep_text.param(f"{name}={value}")


def sweep_space(sweep: SweepFile) -> list[tuple[str, Expression]]:
    return [sweep_param(name, value) for name, value in sweep.space.items()]


# --- as flags --------------------------------------------------------------------------------

PYTHON_FLAGS = ("python", "pip", "requirements", "conda_file")
MEMORY_FLAGS = ("memory", "memory_mb")


def flag_defaults(job: JobFile, base: Path) -> dict[str, Any]:
    """The job as defaults of `sortie run submit`'s flags (their argparse ``dest``s), its paths
    made relative to ``base`` (the file's folder)."""
    py, docker, res = job.environment.python, job.environment.docker, job.resources
    out: dict[str, Any] = {
        "source_dir": base / job.source_directory,
        "script": job.script,
        "args": [str(a) for a in job.arguments],
        "target": job.target,
        "experiment": job.experiment,
        "python": py.interpreter_path,
        "pip": list(py.pip_packages) or None,
        "requirements": base / py.requirements_file if py.requirements_file else None,
        "conda_file": base / py.conda_dependencies_file if py.conda_dependencies_file else None,
        "env": [f"{k}={v}" for k, v in job.environment_variables.items()],
        "secret_env": list(job.secret_environment_variables),
        "max_duration": job.max_run_duration_seconds,
        "priority": job.priority,
        "cpus": res.cpus,
        "memory": res.memory,
        "memory_mb": res.memory_mb,
        "gpus": res.gpus,
        "gpu_type": res.gpu_type,
        "node_count": job.node_count,
        "processes_per_node": job.processes_per_node,
        "max_retries": job.max_retries,
        "constraint": [f"{k}={v}" for k, v in job.constraints.items()],
        "tag": [f"{k}={v}" for k, v in job.tags.items()],
        "queue_timeout": job.queue_timeout_seconds,
        "vm_size": job.amlcompute.vm_size,
        "vm_priority": job.amlcompute.vm_priority,
        "max_nodes": job.amlcompute.max_nodes,
        "dedicated_only": job.dedicated_only,
        "spread": job.strategy == "spread",
    }
    if job.sweep is not None:
        sweep = job.sweep
        out |= {
            "param": sweep_space(sweep),
            "sampling": sweep.sampling,
            "seed": sweep.seed,
            "policy": sweep_text.policy(sweep.policy),
            "metric": sweep.primary_metric,
            "goal": sweep.goal,
            "max_total": sweep.max_total_trials,
            "max_concurrent": sweep.max_concurrent_trials,
            "max_duration_minutes": sweep.max_duration_minutes,
        }
    if docker.enabled:
        out |= {
            "docker_image": docker.base_image,
            "docker_shm_size": docker.shm_size,
            "docker_arg": list(docker.arguments),
            "docker_gpus": docker.gpu_support,
        }
    return out


def schema(
    root: type = JobFile, title: str = "Sortie job file (sortie run submit -f job.yml)"
) -> str:
    """``docs/jobfile.schema.json``: the JSON Schema of :class:`JobFile` (or of ``root``)."""
    doc = msgspec.json.schema(root)
    doc = {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": title, **doc}
    return json.dumps(doc, indent=2, sort_keys=False) + "\n"


if __name__ == "__main__":
    print(schema(), end="")
