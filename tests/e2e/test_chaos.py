"""The chaos harness (tests/chaos.py) in its small CI setting.

A larger setting is documented in tests/chaos.py and README.md ("Reliability"):
``.venv/bin/python -m tests.chaos --runs 400 --seconds 240 --agents 4 --seed 7``.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest

from tests.chaos import Chaos, Settings


@pytest.mark.timeout(400)
async def test_chaos_small_setting_loses_nothing_and_runs_nothing_twice(tmp_path: Path) -> None:
    settings = Settings(runs=30, seconds=30.0, agents=3, seed=11, fault_every_s=3.0)
    report = await Chaos(tmp_path, settings).run()
    shown = json.dumps(asdict(report), indent=1)
    print(shown)  # the counts, for the CI log
    assert report.accepted == report.submitted == 30, shown
    assert sum(report.faults.values()) >= 5, shown
    # a run whose agent died while it was finalizing (its script had ended) fails "lost"
    assert set(report.states) <= {"Completed", "Failed(lost)"}, shown
    assert report.states.get("Completed", 0) >= 25, shown
    assert report.ok, shown
    assert 1 <= report.max_concurrent <= 2, shown


@pytest.mark.timeout(400)
async def test_chaos_with_two_schedulers_survives_leader_kills_and_pauses(tmp_path: Path) -> None:
    settings = Settings(runs=30, seconds=30.0, agents=3, seed=5, fault_every_s=3.0, schedulers=2)
    report = await Chaos(tmp_path, settings).run()
    shown = json.dumps(asdict(report), indent=1)
    print(shown)
    assert report.accepted == report.submitted == 30, shown
    leader_faults = report.faults.get("leader_kill", 0) + report.faults.get("leader_pause", 0)
    assert leader_faults >= 1 and report.leader_epochs >= 1 + leader_faults, shown
    assert "scheduler" not in report.faults  # every scheduler fault aimed at the leader
    assert set(report.states) <= {"Completed", "Failed(lost)"}, shown
    assert report.states.get("Completed", 0) >= 25, shown
    assert report.ok, shown
    assert report.longest_leaderless_s > 0, shown
