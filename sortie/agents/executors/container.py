"""The container executor: a run's script in a container of its image (``environment.
docker.enabled``), instead of the agent's Python environment.

It prepares the image (the base image as is when the Python is user-managed, else an
environment image built on it, :mod:`agents.container_images`) and lays the attempt's files
out inside the container: the snapshot read-only at :data:`C_WORK`, its ``outputs/``
writable over it, a pipeline step's data at :data:`C_DATA` (inputs read-only), and the
run-context module, the metrics pipe, the stop-reason file and the hostfile at fixed paths.
The container sees the run's variables only (with those paths), never the agent's own
environment; the GPUs it is given are numbered from 0 inside.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from sortie.agents.engine import check_engine, open_docker
from sortie.agents.envcache import EnvHold
from sortie.agents.executors import ExecutorError, Job, Launch, OnOutput, RunView, Say
from sortie.agents.executors import container_run as cr
from sortie.agents.pipeline_data import IN, OUT

# where a container run finds its parts
C_WORK = PurePosixPath("/sortie/work")
C_OUTPUTS = C_WORK / "outputs"
C_RUNTIME = PurePosixPath("/sortie/runtime")
C_METRICS = PurePosixPath("/sortie/metrics")
C_STOP_REASON = PurePosixPath("/sortie/stop-reason")
C_HOSTFILE = PurePosixPath("/sortie/hostfile")
C_DATA = PurePosixPath("/sortie/data")  # a pipeline step's data (agents.pipeline_data)


def data_mounts(data: Path | None) -> list[cr.Mount]:
    """A pipeline step's data at :data:`C_DATA`: its inputs read-only, its outputs writable."""
    if data is None:
        return []
    root = data.resolve()
    return [
        cr.Mount(root / IN, str(C_DATA / IN), read_only=True),
        cr.Mount(root / OUT, str(C_DATA / OUT), read_only=False),
    ]


@dataclass(frozen=True)
class ContainerExecutor:
    """Runs scripts in containers of the engine at ``docker_host``."""

    docker_host: str
    images_dir: Path | None = None  # where uses of environment images are recorded (held)

    async def prepare(self, job: Job, say: Say) -> PreparedContainer:
        image, python, hold, base_id = await self._image(job, say)
        return PreparedContainer(
            job=job,
            image=image,
            python=python,
            docker_host=self.docker_host,
            image_hold=hold,
            image_id=base_id,
        )

    async def _image(self, job: Job, say: Say) -> tuple[str, str, EnvHold | None, str]:
        """The image to run in, the Python inside it, the hold on an environment image, and
        the ID of the image ``docker.base_image`` names."""
        section = job.spec.environment.docker
        py = job.spec.environment.python
        if not section.base_image:
            raise ExecutorError(
                "docker.enabled is set but docker.base_image is not: name the image to run in"
            )
        cr.parse_arguments(list(section.arguments))  # refused before anything starts
        cr.parse_size(section.shm_size)
        docker = open_docker(self.docker_host)
        try:
            await check_engine(docker, self.docker_host)
            if py.user_managed:
                base_id = await cr.check_image(docker, section.base_image)
                return section.base_image, py.interpreter or "python3", None, base_id
            # imported here: agents that never run containers never load the image builder
            from sortie.agents import container_images, image_cache

            try:
                if self.images_dir is None:
                    built = await container_images.ensure_env_image(
                        docker, section.base_image, py, log=say
                    )
                    return built.tag, built.python, None, built.base_id
                built, hold = await image_cache.ensure_held(
                    docker, self.images_dir, section.base_image, py, say
                )
                return built.tag, built.python, hold, built.base_id
            except container_images.ImageError as exc:
                raise ExecutorError(exc.message, exc.kind) from exc
            except image_cache.ImageEvicted as exc:
                raise ExecutorError(str(exc)) from exc
        finally:
            await docker.close()


@dataclass(frozen=True, kw_only=True)
class PreparedContainer:
    job: Job
    image: str
    python: str
    docker_host: str
    noun: str = "container"
    image_hold: EnvHold | None = None  # until the container exists (image_cache.ensure_held)
    image_id: str | None = None  # the ID of the image docker.base_image named (prepare)

    @property
    def where(self) -> str:
        return f" in a container of {self.image}"

    def _passed(self, gpus: list[int] | None) -> bool:
        """Are the run's GPUs passed into the container?"""
        spec = self.job.spec
        return bool(gpus) and (spec.environment.docker.gpu_support or spec.resources.gpus > 0)

    def view(self, gpus: list[int] | None) -> RunView:
        # inside, the GPUs passed are numbered from 0; an agent without GPUs sets nothing
        inner: list[int] | None = None
        if gpus is not None:
            inner = list(range(len(gpus))) if self._passed(gpus) else []
        return RunView(
            base_env={},  # never the agent's own environment
            workdir=C_WORK,
            outputs_dir=C_OUTPUTS,
            runtime_dir=C_RUNTIME,
            metrics_file=C_METRICS,
            stop_reason_file=C_STOP_REASON,
            hostfile=C_HOSTFILE,
            gpus=inner,
            data_dir=C_DATA if self.job.files.data is not None else None,
        )

    async def start(
        self, launch: Launch, gpus: list[int] | None, on_output: OnOutput
    ) -> cr.ContainerExecution:
        try:
            return await cr.start_container(launch, self._container(gpus), on_output)
        finally:  # the container (or nothing) uses the image now: the engine keeps it
            if self.image_hold is not None:
                self.image_hold.close()

    def _container(self, gpus: list[int] | None) -> cr.ContainerSpec:
        """The container's mounts, labels and options (bind-mounted files made first)."""
        job, files = self.job, self.job.files
        section = job.spec.environment.docker
        outputs = files.workdir / "outputs"
        outputs.mkdir(exist_ok=True)
        files.stop_reason.write_text("")  # bind-mounted: it must exist first
        return cr.ContainerSpec(
            image=self.image,
            mounts=[
                cr.Mount(files.workdir.resolve(), str(C_WORK), read_only=True),
                cr.Mount(outputs.resolve(), str(C_OUTPUTS), read_only=False),
                cr.Mount(files.runtime_dir, str(C_RUNTIME), read_only=True),
                cr.Mount(files.metrics, str(C_METRICS), read_only=False),
                cr.Mount(files.stop_reason, str(C_STOP_REASON), read_only=True),
                cr.Mount(files.hostfile, str(C_HOSTFILE), read_only=True),
                *data_mounts(files.data),
            ],
            workdir=str(C_WORK),
            gpus=list(gpus) if self._passed(gpus) and gpus else None,
            shm_size=section.shm_size,
            arguments=list(section.arguments),
            labels={
                cr.LABEL_RUN_ID: job.run_id,
                cr.LABEL_ATTEMPT: str(job.attempt),
                cr.LABEL_AGENT: job.agent_id,
                cr.LABEL_INCARNATION: job.incarnation,
            },
            docker_host=self.docker_host,
        )
