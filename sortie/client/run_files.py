"""A submitted run's metrics, logs and files as Azure ML v1's ``Run`` hands them out: the
async halves of ``SubmittedRun.get_details_with_logs``, ``download_file``,
``download_files`` and ``get_portal_url`` (``sortie/client/sdk.py``).

Every download goes through ``Client.download`` (one downloader): these only say which
artifacts go where.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from sortie.bus.profile import read_profile
from sortie.client.client import Client, ClientError


def log_name(rank: int, ranked: bool) -> str:
    """The name of a node's log in ``logFiles`` (v1's ``user_logs/`` names)."""
    return f"user_logs/std_log_process_{rank}.txt" if ranked else "user_logs/std_log.txt"


async def log_files(client: Client, run_id: str) -> dict[str, str]:
    """{log file name: its text so far}: one file per node (Sortie's own lines marked
    ``[sortie]``, as `sortie run logs` shows them)."""
    ranked = (await client.get_run(run_id)).spec.node_count > 1
    lines: dict[str, list[str]] = {}
    async for rank, line in client.logs(run_id):
        mark = "[sortie] " if line.stream == "system" else ""
        lines.setdefault(log_name(rank, ranked), []).append(f"{mark}{line.text}")
    return {name: "".join(f"{t}\n" for t in text) for name, text in lines.items()}


async def _artifact_paths(client: Client, run_id: str) -> list[str]:
    return [a.path for a in (await client.get_run(run_id)).artifacts]


async def _one(client: Client, run_id: str, name: str, out: Path) -> Path:
    """Artifact ``name`` written to the file ``out``."""
    written = await client.download(
        run_id, out.parent, place=lambda p: out.name if p == name else None
    )
    return written[0]


async def download_file(
    client: Client, run_id: str, name: str, output_file_path: str | Path | None
) -> Path:
    """Artifact ``name`` to ``output_file_path`` (a folder that exists: into it, under the
    artifact's file name; None: that name in the current folder)."""
    name = name.strip("/")
    if name not in await _artifact_paths(client, run_id):
        raise ClientError(
            f"run {run_id} has no file {name!r}: get_file_names() (or `sortie run show`) lists "
            "its files"
        )
    out = Path(output_file_path) if output_file_path is not None else Path.cwd()
    if out.is_dir():
        out = out / PurePosixPath(name).name
    return await _one(client, run_id, name, out)


async def download_files(  # the choices of Azure ML v1's download_files
    client: Client,
    run_id: str,
    prefix: str,
    output_directory: Path,
    output_paths: list[str] | None,
    *,
    append_prefix: bool,
) -> list[Path]:
    """The artifacts under ``prefix`` into ``output_directory`` at their paths (with
    ``prefix`` taken off unless ``append_prefix``), or each to its ``output_paths`` entry."""
    if output_paths is None:

        def place(path: str) -> str:
            return path if append_prefix else path.removeprefix(prefix).lstrip("/")

        return await client.download(run_id, output_directory, prefix=prefix, place=place)
    names = [p for p in await _artifact_paths(client, run_id) if p.startswith(prefix)]
    if len(names) != len(output_paths):
        raise ClientError(
            f"output_paths names {len(output_paths)} files but {len(names)} artifacts of run "
            f"{run_id} start with {prefix!r}: give one path per artifact, in the order "
            "get_file_names() lists them"
        )
    return [
        await _one(client, run_id, n, Path(o)) for n, o in zip(names, output_paths, strict=True)
    ]


def portal_url(run_id: str) -> str | None:
    """The run's page on the dashboard the profile names (``dashboard_url``), if any."""
    profile = read_profile() or {}
    base = profile.get("dashboard_url")
    if not isinstance(base, str) or not base:
        return None
    return f"{base.rstrip('/')}/runs/{run_id}"
