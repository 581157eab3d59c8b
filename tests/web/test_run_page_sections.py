"""The run page's sections in a real browser against a real `sortie up`: a retried run's
timeline with both attempts and their reasons; a run's git checkout (commit, branch, dirty,
remote without its credentials), tags and properties; a container run's docker settings; and
a two-node gang's logs, rank by rank."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.web.conftest import Dashboard

# fails on its first attempt, passes on the next (the agent says which: SORTIE_ATTEMPT)
FLAKY = """\
import os, sys
if os.environ["SORTIE_ATTEMPT"] == "1":
    print("first try: failing", flush=True)
    sys.exit(3)
print("second try: fine", flush=True)
"""

TAGGED = """\
from sortie import Run
run = Run.get_context()
run.add_properties({"dataset": "imagenet-mini"})
print("tagged", flush=True)
"""

RANKS = """\
import os
rank = os.environ["RANK"]
for i in range(3):
    print(f"hello {i} from rank {rank}", flush=True)
"""

TOKEN = "ghp_tokenNeverShown123"


def submit(dashboard: Dashboard, src: Path, script: str, *extra: str) -> str:
    proc = dashboard.cli(
        "run", "submit", str(src), "--script", script, "--python", sys.executable,
        "--output", "json", *extra,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return str(json.loads(proc.stdout.splitlines()[0])["run_id"])


def git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
        check=True,
        capture_output=True,
    )


def kv(page: Page, table: str) -> dict[str, str]:
    """A key-value table of the page, as its rows read."""
    rows = page.locator(f"{table} tr").all()
    cells = [r.locator("td").all_inner_texts() for r in rows]
    return {c[0]: c[1] for c in cells if len(c) == 2}


def test_a_retried_run_shows_both_attempts_and_their_reasons(
    dashboard: Dashboard, page: Page, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "train.py").write_text(FLAKY)
    run_id = submit(dashboard, src, "train.py", "--max-retries", "1")
    dashboard.cli("run", "wait", run_id, check=True, timeout=180)

    page.goto(f"{dashboard.base}/runs/{run_id}")
    expect(page.locator("#run-state")).to_have_text("Completed")
    expect(page.locator("#run-attempt")).to_have_text("2")
    rows = page.locator("#timeline tr")
    expect(rows.last).to_contain_text("Completed")
    # attempt, state, at, after, reason: each attempt's number heads its first row
    timeline = [r.locator("td").all_inner_texts() for r in rows.all()]
    firsts = [(i, row[0]) for i, row in enumerate(timeline) if row[0]]
    assert [n for _, n in firsts] == ["1", "2"], timeline
    second = firsts[1][0]
    first_states = [row[1] for row in timeline[:second]]
    second_states = [row[1] for row in timeline[second:]]
    assert first_states[0] == "Queued" and "Running" in first_states, timeline
    # queued again, saying why; then run to the end
    assert second_states[0] == "Queued" and second_states[-1] == "Completed", timeline
    assert timeline[second][4] == "retry 1 of 1 after exit_code: script exited with code 3"
    expect(rows.nth(second)).to_have_class("attempt-start")
    # both attempts' output, in order
    page.click('#run-tabs a[data-tab="logs"]')
    expect(page.locator("#log-status")).to_have_text("end of output")
    shown = page.locator("#log").inner_text()
    assert shown.index("first try: failing") < shown.index("second try: fine")


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A git checkout on branch ``feature/x`` with one commit, an uncommitted change, and an
    ``origin`` whose URL holds a token."""
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "feature/x")
    (repo / "train.py").write_text(TAGGED)
    git(repo, "add", "train.py")
    git(repo, "commit", "-q", "-m", "first")
    git(repo, "remote", "add", "origin", f"https://ci-bot:{TOKEN}@git.example.com/team/repo.git")
    (repo / "train.py").write_text(TAGGED + "# changed, not committed\n")
    return repo


def test_a_runs_git_checkout_tags_and_properties(
    dashboard: Dashboard, page: Page, checkout: Path
) -> None:
    commit = subprocess.run(
        ["git", "-C", str(checkout), "rev-parse", "HEAD"], check=True, capture_output=True,
        text=True,
    ).stdout.strip()  # fmt: skip
    run_id = submit(dashboard, checkout, "train.py", "--tag", "team=vision", "--tag", "stage=dev")
    dashboard.cli("run", "wait", run_id, check=True, timeout=180)

    page.goto(f"{dashboard.base}/runs/{run_id}")
    expect(page.locator("#run-state")).to_have_text("Completed")
    git_rows = kv(page, "#run-git")
    assert git_rows == {
        "commit": f"{commit} dirty",
        "branch": "feature/x",
        "remote": "https://git.example.com/team/repo.git",  # its token left out
    }
    expect(page.locator("#run-git .state")).to_have_text("dirty")
    assert kv(page, "#run-tags") == {
        "team": "vision",
        "stage": "dev",
        "dataset (property)": "imagenet-mini",  # set by the script while it ran
    }
    assert TOKEN not in page.content()


def test_a_container_runs_docker_settings(dashboard: Dashboard, page: Page, tmp_path: Path) -> None:
    """Not run: the local agent has no container engine, so it stays queued, settings shown."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "train.py").write_text("print('in a container')\n")
    proc = dashboard.cli(
        "run", "submit", str(src), "--script", "train.py", "--output", "json",
        "--docker-image", "python:3.11-slim", "--docker-shm-size", "2g",
        "--docker-arg=--ipc=host",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run_id = str(json.loads(proc.stdout.splitlines()[0])["run_id"])
    try:
        page.goto(f"{dashboard.base}/runs/{run_id}")
        expect(page.locator("#run-state")).to_have_text("Queued")
        config = kv(page, "#run-config")
        assert config["docker"] == "python:3.11-slim (shm 2g, --ipc=host)"
        expect(page.locator("#cli-command")).to_contain_text(
            "--docker-image python:3.11-slim --docker-shm-size 2g --docker-arg=--ipc=host"
        )
    finally:
        dashboard.cli("run", "cancel", run_id)


def test_a_gangs_logs_rank_by_rank(dashboard: Dashboard, page: Page, tmp_path: Path) -> None:
    """Two nodes of a local cluster (local agents started for it), each printing its rank."""
    dashboard.cli(
        "compute", "create", "gang", "--vm-size", "local_small", "--max-nodes", "2",
        "--idle-seconds-before-scaledown", "2", check=True,
    )  # fmt: skip
    src = tmp_path / "src"
    src.mkdir()
    (src / "dist.py").write_text(RANKS)
    run_id = submit(dashboard, src, "dist.py", "--target", "gang", "--node-count", "2")
    dashboard.cli("run", "wait", run_id, check=True, timeout=240)

    page.goto(f"{dashboard.base}/runs/{run_id}#logs")
    log, pick = page.locator("#log"), page.locator("#log-rank")
    assert pick.locator("option").all_inner_texts() == ["all", "0", "1"]
    # all ranks: each line says whose it is
    expect(page.locator("#log-status")).to_have_text("end of output")
    for rank in (0, 1):
        expect(log).to_contain_text(f"[{rank}] hello 0 from rank {rank}")
    for rank, other in ((1, 0), (0, 1)):
        pick.select_option(str(rank))
        expect(page.locator("#log-status")).to_have_text("end of output")
        expect(log).to_contain_text(f"hello 2 from rank {rank}")
        shown = [t for t in log.inner_text().splitlines() if t.startswith("hello")]
        assert shown == [f"hello {i} from rank {rank}" for i in range(3)]
        assert f"from rank {other}" not in log.inner_text()
        # the download is that rank's too
        with page.expect_download() as got:
            page.click("#log-download")
        text = Path(got.value.path()).read_text()
        assert f"hello 0 from rank {rank}" in text and f"from rank {other}" not in text
