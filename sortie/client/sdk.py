"""The Python SDK, in the shape users of hosted ML platforms know.

    ws = Workspace.connect()
    rc = RunConfiguration(target="local")
    rc.environment.python.user_managed_dependencies = False
    rc.environment.python.pip_packages = ["scikit-learn"]
    run = Experiment(ws, "digits").submit(ScriptRunConfig(
        source_directory="examples/sklearn-digits", script="train.py", run_config=rc))
    run.wait_for_completion(show_output=True)

Synchronous on the surface; underneath, one event loop thread per Workspace drives the same
async client the CLI uses (so it also works inside notebooks that run their own loop).
"""

from __future__ import annotations

import asyncio
import builtins
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Self, TypeVar

import msgspec

from sortie.client import model_store, run_files
from sortie.client.client import Client, RequestRefused, echo_line
from sortie.client.metric_shape import shaped
from sortie.client.models import Model
from sortie.client.pipeline_submit import PipelineOptions
from sortie.client.pipelines import (
    Pipeline,
    PipelineData,
    PipelineParameter,
    PythonScriptStep,
)
from sortie.client.runconfig import (
    DockerSettings,
    EnvironmentSection,
    PythonSection,
    RunConfiguration,
    ScriptRunConfig,
)
from sortie.client.strict import Strict
from sortie.client.sweep_space import (
    choice,
    lognormal,
    loguniform,
    normal,
    qlognormal,
    qloguniform,
    qnormal,
    quniform,
    randint,
    uniform,
)
from sortie.client.sweeps import (
    AshaPolicy,
    BanditPolicy,
    BayesianParameterSampling,
    GridParameterSampling,
    HyperDriveConfig,
    MedianStoppingPolicy,
    NoTerminationPolicy,
    PrimaryMetricGoal,
    RandomParameterSampling,
    TruncationSelectionPolicy,
)
from sortie.client.views import as_dict, compute_view, machine_view, run_view
from sortie.client.wait_notes import WaitNotes
from sortie.proto import messages as m
from sortie.proto.agent_env import problem as agent_env_problem
from sortie.proto.engines import Engine, SlurmEngine, SparkEngine
from sortie.proto.engines import problem as engine_problem
from sortie.proto.states import TERMINAL
from sortie.proto.waiting import shown_state

__all__ = [
    "AshaPolicy",
    "BanditPolicy",
    "BayesianParameterSampling",
    "ClusterConfiguration",
    "ComputeTarget",
    "DockerSettings",
    "EnvironmentSection",
    "Experiment",
    "GridParameterSampling",
    "HyperDriveConfig",
    "MedianStoppingPolicy",
    "NoTerminationPolicy",
    "Pipeline",
    "PipelineData",
    "PipelineParameter",
    "PrimaryMetricGoal",
    "PythonScriptStep",
    "PythonSection",
    "RandomParameterSampling",
    "RemoteAttachConfiguration",
    "RemoteCompute",
    "RunConfiguration",
    "RunFailed",
    "ScriptRunConfig",
    "SubmittedRun",
    "TruncationSelectionPolicy",
    "Workspace",
    "choice",
    "lognormal",
    "loguniform",
    "normal",
    "qlognormal",
    "qloguniform",
    "qnormal",
    "quniform",
    "randint",
    "uniform",
]

T = TypeVar("T")


class RunFailed(RuntimeError):
    """wait_for_completion(raise_on_error=True) on a run that did not complete."""


class _Loop:
    """A private event loop on a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True, name="sortie")
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)


def _open(
    url: str | None, creds: str | Path | None, tls_ca: str | Path | None
) -> tuple[Client, _Loop]:
    """A connected client and the loop thread that drives it."""
    loop = _Loop()
    try:
        client = loop.run(
            Client.connect(
                url,
                name="sortie-sdk",
                creds=Path(creds) if creds is not None else None,
                tls_ca=Path(tls_ca) if tls_ca is not None else None,
            )
        )
    except BaseException:
        loop.close()
        raise
    return client, loop


class Workspace:
    """A connection to one Sortie installation."""

    def __init__(self, client: Client, loop: _Loop) -> None:
        self._client = client
        self._loop = loop

    @classmethod
    def connect(
        cls,
        url: str | None = None,
        *,
        creds: str | Path | None = None,
        tls_ca: str | Path | None = None,
    ) -> Workspace:
        """Connect to what `sortie up` started (or ``url`` / SORTIE_URL), with its profile's
        credentials (or ``creds`` / SORTIE_CREDS, and ``tls_ca`` / SORTIE_TLS_CA)."""
        ws = cls.__new__(cls)  # not cls(...): a subclass may have a constructor of its own
        Workspace.__init__(ws, *_open(url, creds, tls_ca))
        return ws

    def close(self) -> None:
        self._loop.run(self._client.close())
        self._loop.close()

    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def url(self) -> str:
        return self._client.bus.url

    def compute_targets(self) -> dict[str, int]:
        """Known compute target names and how many live agents serve each."""
        return {t.name: t.agents for t in self._loop.run(self._client.targets())}

    def get_run(self, run_id: str) -> SubmittedRun:
        rec = self._loop.run(self._client.get_run(run_id))
        return SubmittedRun(self, rec.run_id)

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self._loop.run(coro)


class Experiment:
    def __init__(self, workspace: Workspace, name: str) -> None:
        self.workspace = workspace
        self.name = name

    def submit(
        self,
        config: ScriptRunConfig | HyperDriveConfig | Pipeline,
        tags: dict[str, str] | None = None,
        *,
        submission_id: str | None = None,
        regenerate_outputs: bool = False,
        pipeline_parameters: dict[str, Any] | None = None,
    ) -> SubmittedRun:
        """Queue a run, or a sweep (a ``HyperDriveConfig``: returns a ``SweepRun``, whose
        trials are child runs), or a pipeline (a ``Pipeline``: returns a ``PipelineRun``,
        whose steps' runs are child runs; ``pipeline_parameters``: values for its
        ``PipelineParameter``s; ``regenerate_outputs``: run every step, reuse none).
        Submitting again with the same ``submission_id`` returns the same run (the client
        retries by itself on timeouts and while the scheduler restarts).

        Raises ``sortie.client.snapshot.SnapshotError`` when the source directory cannot be
        snapshotted (a file deleted or changed mid-submit is named),
        ``sortie.client.runconfig.RunConfigError`` for arguments or variables a process cannot
        receive (a NUL byte), ``sortie.client.client.RequestRefused`` when the scheduler
        refuses the run, and ``sortie.client.client.StoreFullError`` when the Sortie store is
        full; the message says what to do, as `sortie run submit` prints it. ``tags``: the
        run's tags from the start."""
        ws = self.workspace
        if isinstance(config, Pipeline):
            options = config.options(
                self.name,
                pipeline_parameters=pipeline_parameters,
                regenerate_outputs=regenerate_outputs,
                tags=tags,
                submission_id=submission_id,
            )
            return self._submit_pipeline(config, options)
        sweep = config.to_spec() if isinstance(config, HyperDriveConfig) else None
        script = config.run_config if isinstance(config, HyperDriveConfig) else config
        assert script is not None  # to_spec refuses a sweep without one
        sub = ws._run(
            ws._client.submit(
                script, experiment=self.name, submission_id=submission_id, tags=tags, sweep=sweep
            )
        )
        for w in sub.warnings:
            print(f"warning: {w}", file=sys.stderr)
        if isinstance(config, HyperDriveConfig):
            run = self._sweep_run_of(sub.run_id, config)
        else:
            run = self._run_of(sub.run_id)
        run.snapshot = sub.snapshot
        return run

    def _submit_pipeline(self, pipeline: Pipeline, options: PipelineOptions) -> SubmittedRun:
        from sortie.client.pipeline_submit import submit_pipeline

        ws = self.workspace
        configs = pipeline.to_configs()
        sub = ws._run(submit_pipeline(ws._client, pipeline.pipeline_name(), configs, options))
        for w in sub.warnings:
            print(f"warning: {w}", file=sys.stderr)
        run = self._pipeline_run_of(sub.run_id, pipeline)
        run.snapshot = sub.snapshot
        return run

    def get_runs(
        self,
        type: str | None = None,
        tags: str | dict[str, str] | None = None,
        properties: str | dict[str, str] | None = None,
        include_children: bool = False,
    ) -> list[SubmittedRun]:
        """The experiment's runs, newest first: with ``tags`` / ``properties`` (a key, or a
        dict of key -> value) only those that have them; children only with
        ``include_children``. ``type`` is accepted and ignored (every run is a script run)."""
        ws = self.workspace
        return [
            self._run_of(r.run_id)
            for r in ws._run(ws._client.list_runs(self.name))
            if (include_children or r.parent_id is None)
            and _has(r.tags, tags)
            and _has(r.properties, properties)
        ]

    def _run_of(self, run_id: str) -> SubmittedRun:
        """The object for one of this experiment's runs (the v1 layer's is its ``Run``)."""
        return SubmittedRun(self.workspace, run_id)

    def _sweep_run_of(self, run_id: str, config: HyperDriveConfig | None = None) -> SubmittedRun:
        """The object for one of this experiment's sweeps (the v1 layer's: ``HyperDriveRun``)."""
        from sortie.client.sweep_run import SweepRun  # it builds on this module

        return SweepRun(self, run_id, config)

    def _pipeline_run_of(self, run_id: str, pipeline: Pipeline | None = None) -> SubmittedRun:
        """The object for one of this experiment's pipeline runs (the v1 layer's:
        ``PipelineRun`` of ``azureml.pipeline.core``)."""
        from sortie.client.pipeline_run import PipelineRun  # it builds on this module

        return PipelineRun(self, run_id, pipeline)


def _has(entries: dict[str, str], wanted: str | dict[str, str] | None) -> bool:
    if wanted is None:
        return True
    if isinstance(wanted, str):
        return wanted in entries
    return all(entries.get(k) == v for k, v in wanted.items())


class SubmittedRun:
    """A run seen from outside it (what Experiment.submit returns)."""

    def __init__(self, workspace: Workspace, run_id: str) -> None:
        self.workspace = workspace
        self.id = run_id
        self.snapshot: Any = None

    def __repr__(self) -> str:
        return f"SubmittedRun(id={self.id!r})"

    def _record(self) -> m.RunRecord:
        return self.workspace._run(self.workspace._client.get_run(self.id))

    def get_status(self) -> str:
        return str(shown_state(self._record()))

    def get_details(self) -> dict[str, Any]:
        ws = self.workspace
        rec = self._record()
        return as_dict(run_view(rec, ws._run(ws._client.metrics(self.id))))

    def get_metrics(
        self,
        name: str | None = None,
        recursive: bool = False,
        run_type: str | None = None,
        populate: bool = False,
    ) -> dict[str, Any]:
        """name -> value, a list of values when the metric was logged more than once, or
        column -> values for a table (``log_row``, ``log_table``); ``name``: that metric
        only; ``recursive``: {run id: metrics} of this run and its descendants."""
        ws = self.workspace
        mine = shaped(ws._run(ws._client.metric_points(self.id)), name)
        if not recursive:
            return mine
        out: dict[str, Any] = {self.id: mine}
        for child in self.get_children():
            out.update(child.get_metrics(name, recursive=True))
        return out

    # tags, properties, children ---------------------------------------------------------

    def tag(self, key: str, value: str | None = None) -> None:
        """Tag the run (``value`` None: an empty value)."""
        self.set_tags({key: "" if value is None else value})

    def set_tags(self, tags: dict[str, str] | builtins.list[str] | str) -> None:
        """Set tags: a dict of key -> value, or tag names alone (empty values)."""
        named = dict.fromkeys([tags] if isinstance(tags, str) else tags, "")
        given = tags if isinstance(tags, dict) else named
        ws = self.workspace
        ws._run(ws._client.tag_run(self.id, {str(k): str(v) for k, v in given.items()}))

    def get_tags(self) -> dict[str, str]:
        return dict(self._record().tags)

    def add_properties(self, properties: dict[str, str]) -> None:
        """Add properties; a property once set cannot be changed (RequestRefused)."""
        ws = self.workspace
        clean = {str(k): str(v) for k, v in properties.items()}
        ws._run(ws._client.tag_run(self.id, {}, clean))

    def get_properties(self) -> dict[str, str]:
        return dict(self._record().properties)

    def get_children(
        self,
        recursive: bool = False,
        tags: str | dict[str, str] | None = None,
        properties: str | dict[str, str] | None = None,
        type: str | None = None,
        status: str | None = None,
    ) -> builtins.list[SubmittedRun]:
        """The run's child runs (oldest first), filtered as ``Experiment.get_runs``."""
        ws = self.workspace
        found: builtins.list[SubmittedRun] = []
        for rec in ws._run(ws._client.children(self.id)):
            wanted = _has(rec.tags, tags) and _has(rec.properties, properties)
            if wanted and (status is None or str(rec.state) == status):
                found.append(SubmittedRun(ws, rec.run_id))
            if recursive:
                found += SubmittedRun(ws, rec.run_id).get_children(True, tags, properties)
        return found

    @property
    def parent(self) -> SubmittedRun | None:
        parent_id = self._record().parent_id
        return None if parent_id is None else SubmittedRun(self.workspace, parent_id)

    def get_file_names(self) -> list[str]:
        return [a.path for a in self._record().artifacts]

    def cancel(self) -> str:
        reply = self.workspace._run(self.workspace._client.cancel(self.id))
        return str(reply.state)

    # --- metrics, logs, files and models (Azure ML v1's names: sortie/client/run_files.py) ---

    def get_details_with_logs(self) -> dict[str, Any]:
        """get_details() plus 'logFiles': {log file name: its text}, as v1 returns them."""
        ws = self.workspace
        details = self.get_details()
        details["logFiles"] = ws._run(run_files.log_files(ws._client, self.id))
        return details

    def download_file(
        self,
        name: str,
        output_file_path: str | Path | None = None,
        _validate_checksum: bool = False,  # every blob is verified against its hash anyway
    ) -> Path:
        """Download artifact ``name`` (e.g. "outputs/model.pkl") to ``output_file_path``
        (a file, or an existing folder to put it in; default: its name in the current
        folder); returns where it was written."""
        ws = self.workspace
        return ws._run(run_files.download_file(ws._client, self.id, name, output_file_path))

    def download_files(  # noqa: PLR0917  # Azure ML v1's signature
        self,
        prefix: str | None = None,
        output_directory: str | Path | None = None,
        output_paths: list[str] | None = None,
        batch_size: int = 100,  # v1 downloads in batches; blobs are fetched one by one here
        append_prefix: bool = True,
        timeout_seconds: float | None = None,  # v1's; no deadline here
    ) -> list[Path]:
        """Download the artifacts under ``prefix`` (all by default) into ``output_directory``
        (default: the current folder), each at its artifact path, or, with
        ``append_prefix=False``, at its path with ``prefix`` taken off; ``output_paths``:
        a local path for each artifact instead, in the order of get_file_names()."""
        ws = self.workspace
        return ws._run(
            run_files.download_files(
                ws._client,
                self.id,
                prefix or "",
                Path(output_directory) if output_directory is not None else Path.cwd(),
                output_paths,
                append_prefix=append_prefix,
            )
        )

    def register_model(  # noqa: PLR0913, PLR0917  # Azure ML v1's signature
        self,
        model_name: str,
        model_path: str | None = None,
        tags: Mapping[str, object] | None = None,
        properties: Mapping[str, object] | None = None,
        model_framework: str | None = None,
        model_framework_version: str | None = None,
        description: str | None = None,
        datasets: object = None,  # no datasets in Sortie
        sample_input_dataset: object = None,  # no datasets in Sortie
        sample_output_dataset: object = None,  # no datasets in Sortie
        resource_configuration: object = None,  # no deployment in Sortie
        **kwargs: Any,  # v1 takes more keywords; none matters here
    ) -> Model:
        """Register this run's artifact ``model_path`` (a file, or a folder such as
        "outputs"; default: ``model_name``) as the next version of ``model_name``. The run's
        stored artifact blobs are reused: nothing is uploaded."""
        ws = self.workspace
        request = model_store.make_request(
            model_name,
            run_id=self.id,
            run_path=model_path,
            tags=tags,
            properties=properties,
            description=description,
            framework=model_framework,
            framework_version=model_framework_version,
        )
        return Model._of(ws, ws._run(model_store.register(ws._client, request)))

    def get_portal_url(self) -> str | None:
        """The run's page on the dashboard, when the `sortie up` profile names one
        (``dashboard_url``: `sortie up` serves one); None otherwise."""
        return run_files.portal_url(self.id)

    def wait_for_completion(
        self, show_output: bool = False, raise_on_error: bool = True
    ) -> dict[str, Any]:
        """Block until the run ends; with show_output, stream its output from the first line."""
        ws = self.workspace

        async def go() -> m.RunRecord:
            if not show_output:
                return await ws._client.wait(self.id)
            ranked = (await ws._client.get_run(self.id)).spec.node_count > 1
            # why it waits (its target has no agent), printed while the output is followed
            waited = asyncio.ensure_future(ws._client.wait(self.id, _print_wait_notes()))
            try:
                async for rank, line in ws._client.logs(self.id, follow=True):
                    echo_line(line, rank if ranked else None)
                return await waited
            finally:
                waited.cancel()

        rec = ws._run(go())
        assert rec.state in TERMINAL
        if raise_on_error and rec.state != "Completed":
            why = f": {rec.error.kind}: {rec.error.message}" if rec.error else ""
            raise RunFailed(f"run {self.id} ended {rec.state}{why}")
        return as_dict(run_view(rec, ws._run(ws._client.metrics(self.id))))


def _print_wait_notes() -> Callable[[m.RunRecord], None]:
    notes = WaitNotes()

    def seen(rec: m.RunRecord) -> None:
        if (line := notes.seen(rec, time.time())) is not None:
            print(line, flush=True)

    return seen


@dataclass
class ClusterConfiguration:
    """What ``ComputeTarget.create`` makes: an autoscaling cluster (AmlCompute's shape)."""

    vm_size: str
    max_nodes: int
    min_nodes: int = 0
    idle_seconds_before_scaledown: float = 120.0
    vm_priority: str = "dedicated"
    provider: str = "process"

    def to_spec(self) -> m.ClusterConfig:
        if self.vm_priority not in ("dedicated", "lowpriority"):
            raise ValueError("vm_priority must be 'dedicated' or 'lowpriority'")
        if self.provider != "process":
            raise ValueError(
                f"provider {self.provider!r}: the SDK creates process clusters; create an ssh "
                "pool with `sortie compute create --provider ssh`"
            )
        return m.ProcessCluster(
            vm_size=self.vm_size,
            max_nodes=self.max_nodes,
            min_nodes=self.min_nodes,
            idle_seconds_before_scaledown=self.idle_seconds_before_scaledown,
            vm_priority=self.vm_priority,  # type: ignore[arg-type]  # a NodePriority: checked above
        )


@dataclass
class RemoteAttachConfiguration(Strict):
    """What ``ComputeTarget.attach`` attaches: a machine reached over SSH (with ``engine``:
    a Slurm login node or a Spark head node, which hands its runs to that engine)."""

    address: str
    username: str
    ssh_port: int = 22
    password: str | None = field(default=None, repr=False)
    private_key_file: str | None = None
    private_key_passphrase: str | None = field(default=None, repr=False)
    known_hosts: str | None = None
    trust_new_host_key: bool = False
    advertised_url: str | None = None
    agent_env: dict[str, str] | None = None  # proxy/CA variables for the remote agent
    engine: Engine | None = None  # SlurmCompute / SparkCompute.attach_configuration set it

    def to_request(self, name: str) -> m.ComputeAttach:
        if (self.password is None) == (self.private_key_file is None):
            raise ValueError("give either password or private_key_file")
        env = dict(self.agent_env or {})
        if (why := agent_env_problem(env)) is not None:
            raise ValueError(why)
        if self.engine is not None and (why := engine_problem(self.engine)) is not None:
            raise ValueError(why.replace("--", ""))  # set after attach_configuration
        if self.private_key_file is not None:
            secret = m.SshSecret(
                private_key=Path(self.private_key_file).expanduser().read_text(),
                passphrase=self.private_key_passphrase,
            )
            auth: Literal["key", "password"] = "key"
        else:
            secret = m.SshSecret(password=self.password)
            auth = "password"
        known = str(Path(self.known_hosts).expanduser().resolve()) if self.known_hosts else None
        login = m.SshLogin(
            username=self.username,
            ssh_port=self.ssh_port,
            auth=auth,
            known_hosts=known,
            trust_new_host_key=self.trust_new_host_key,
        )
        return m.ComputeAttach(
            name=name,
            vm=m.VmConfig(
                address=self.address,
                ssh=login,
                advertised_url=self.advertised_url,
                agent_env=env,
                engine=self.engine,
            ),
            secret=secret,
        )


class RemoteCompute:
    """An existing machine attached over SSH (the hosted platform's RemoteCompute)."""

    @staticmethod
    def attach_configuration(  # noqa: PLR0913, PLR0917  # the hosted SDK's signature, kept for its users' scripts
        address: str,
        username: str,
        ssh_port: int = 22,
        password: str | None = None,
        private_key_file: str | None = None,
        private_key_passphrase: str | None = None,
        known_hosts: str | None = None,
        trust_new_host_key: bool = False,
        advertised_url: str | None = None,
        agent_env: dict[str, str] | None = None,
        engine: Engine | None = None,
    ) -> RemoteAttachConfiguration:
        return RemoteAttachConfiguration(
            address=address,
            username=username,
            ssh_port=ssh_port,
            password=password,
            private_key_file=private_key_file,
            private_key_passphrase=private_key_passphrase,
            known_hosts=known_hosts,
            trust_new_host_key=trust_new_host_key,
            advertised_url=advertised_url,
            agent_env=agent_env,
            engine=engine,
        )


_E = TypeVar("_E", SlurmEngine, SparkEngine)


def _checked(engine: _E) -> _E:
    """The engine, or a ValueError saying what to write instead."""
    if (why := engine_problem(engine)) is not None:
        raise ValueError(why.replace("--", ""))  # the CLI's flag is the SDK's argument
    return engine


class SlurmCompute:
    """A Slurm cluster, attached through its login node: runs are submitted with sbatch (a
    run of node_count N is one N-node job), and Slurm places them."""

    @staticmethod
    def attach_configuration(  # noqa: PLR0913, PLR0917  # RemoteCompute's, and Slurm's three
        address: str,
        ssh_port: int = 22,
        username: str = "",
        password: str | None = None,
        private_key_file: str | None = None,
        private_key_passphrase: str | None = None,
        partition: str | None = None,
        account: str | None = None,
        qos: str | None = None,
        **sortie_options: Any,
    ) -> RemoteAttachConfiguration:
        """How to reach the login node, and the partition, account and QOS every run is
        submitted with (None: Slurm's default). ``sortie_options``: RemoteCompute's
        (``known_hosts``, ``trust_new_host_key``, ``agent_env``, ...)."""
        if not username:
            raise ValueError("give username= (the login node's user who submits the jobs)")
        return RemoteCompute.attach_configuration(
            address=address,
            username=username,
            ssh_port=ssh_port,
            password=password,
            private_key_file=private_key_file,
            private_key_passphrase=private_key_passphrase,
            engine=_checked(SlurmEngine(partition=partition, account=account, qos=qos)),
            **sortie_options,
        )


class SparkCompute:
    """A Spark cluster, attached through its head node: runs go to spark-submit."""

    @staticmethod
    def attach_configuration(  # noqa: PLR0913, PLR0917  # RemoteCompute's, and Spark's
        address: str,
        ssh_port: int = 22,
        username: str = "",
        password: str | None = None,
        private_key_file: str | None = None,
        private_key_passphrase: str | None = None,
        master: str = "yarn",
        conf: Mapping[str, str] | None = None,
        submit: str = "spark-submit",
        ui_port: int = 8080,
        **sortie_options: Any,
    ) -> RemoteAttachConfiguration:
        """How to reach the head node, the master spark-submit sends runs to (spark://HOST:PORT,
        yarn, local[N]), the ``conf`` settings every run gets, the head node's ``submit``
        (spark-submit's name on PATH or its path) and a standalone master's ``ui_port``."""
        if not username:
            raise ValueError("give username= (the head node's user who runs spark-submit)")
        return RemoteCompute.attach_configuration(
            address=address,
            username=username,
            ssh_port=ssh_port,
            password=password,
            private_key_file=private_key_file,
            private_key_passphrase=private_key_passphrase,
            engine=_checked(
                SparkEngine(master=master, conf=dict(conf or {}), submit=submit, ui_port=ui_port)
            ),
            **sortie_options,
        )


class ComputeTarget:
    """A named compute target (a managed cluster or an attached machine), as the hosted
    platform's SDK has it."""

    def __init__(self, workspace: Workspace, name: str) -> None:
        self.workspace = workspace
        self.name = name
        self._info: m.ComputeInfo | None = None
        self._vm: m.VmRecord | None = None
        self._leaving = False  # delete() or detach() was asked: "gone" is its end

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"

    @classmethod
    def _blank(cls, workspace: Workspace, name: str) -> Self:
        """An object for ``name`` made without asking the scheduler (not ``cls(...)``: the v1
        layer's constructor looks the target up)."""
        target = cls.__new__(cls)
        ComputeTarget.__init__(target, workspace, name)
        return target

    def _ask(self, request: m.Message) -> Any:
        return self.workspace._run(self.workspace._client.compute(request))

    @classmethod
    def create(
        cls, workspace: Workspace, name: str, configuration: ClusterConfiguration
    ) -> ComputeTarget:
        target = cls._blank(workspace, name)
        target._info = target._ask(m.ComputeCreate(name=name, cluster=configuration.to_spec())).info
        return target

    @classmethod
    def attach(
        cls, workspace: Workspace, name: str, configuration: RemoteAttachConfiguration
    ) -> ComputeTarget:
        """Start attaching a machine; ``wait_for_completion`` follows it to the end."""
        target = cls._blank(workspace, name)
        target._vm = target._ask(configuration.to_request(name)).vm
        return target

    def detach(self, keep_files: bool = False, force: bool = False) -> None:
        self._vm = self._ask(m.ComputeDetach(name=self.name, keep_files=keep_files, force=force)).vm
        self._leaving = True

    @classmethod
    def list(cls, workspace: Workspace) -> builtins.list[ComputeTarget]:
        reply = workspace._run(workspace._client.compute(m.ComputeList()))
        out = []
        for info in reply.computes:
            t = cls._blank(workspace, info.compute.name)
            t._info = info
            out.append(t)
        return out

    @staticmethod
    def supported_vmsizes(workspace: Workspace) -> builtins.list[dict[str, Any]]:
        reply = workspace._run(workspace._client.compute(m.SizesList()))
        return [msgspec.to_builtins(s) for s in reply.sizes]

    def refresh_state(self) -> None:
        reply = self._ask(m.ComputeShow(name=self.name))
        if isinstance(reply, m.VmReply):
            self._vm = reply.vm
        else:
            self._info = reply.info

    def get_status(self) -> dict[str, Any]:
        """provisioning_state, provisioning_errors, and node counts and recent decisions
        (clusters) or the attach's progress (attached machines)."""
        self.refresh_state()

        if self._vm is not None:
            return as_dict(machine_view(self._vm))
        assert self._info is not None
        return as_dict(compute_view(self._info))

    @property
    def provisioning_state(self) -> str:
        self.refresh_state()
        if self._vm is not None:
            return self._vm.provisioning_state
        assert self._info is not None
        return self._info.compute.provisioning_state

    def update(
        self,
        min_nodes: int | None = None,
        max_nodes: int | None = None,
        idle_seconds_before_scaledown: float | None = None,
    ) -> None:
        self._info = self._ask(
            m.ComputeUpdate(
                name=self.name,
                min_nodes=min_nodes,
                max_nodes=max_nodes,
                idle_seconds_before_scaledown=idle_seconds_before_scaledown,
            )
        ).info

    def delete(self, force: bool = False) -> None:
        self._info = self._ask(m.ComputeDelete(name=self.name, force=force)).info
        self._leaving = True

    def wait_for_completion(self, show_output: bool = False, timeout_s: float = 600) -> str:
        """Wait until provisioning is no longer Creating, or a delete or detach is done;
        return the provisioning state ("Deleted" or "Detached" once it is gone)."""
        deadline = time.monotonic() + timeout_s
        shown, last = 0, None
        while True:
            state = self._state_or_gone(last)
            if show_output:
                lines = self._vm.progress if self._vm is not None else []
                for line in lines[shown:]:
                    print(f"[{self.name}] {line}", flush=True)
                shown = len(lines)
                if state != last:
                    print(f"{self.name}: {state}", flush=True)
            last = state
            if state not in ("Creating", "Deleting") or time.monotonic() > deadline:
                if show_output and self._vm is not None and state == "Failed":
                    for err in self._vm.provisioning_errors[-1:]:
                        print(f"[{self.name}] {err.code}: {err.message}", flush=True)
                return state
            time.sleep(0.5)

    def _state_or_gone(self, last: str | None) -> str:
        """The provisioning state; "Deleted" / "Detached" when a target being deleted or
        detached is gone."""
        try:
            return self.provisioning_state
        except RequestRefused as exc:
            if exc.code != "not_found" or not (self._leaving or last == "Deleting"):
                raise
            return "Detached" if self._vm is not None else "Deleted"
