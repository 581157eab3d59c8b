"""`sortie scheduler`'s timing flags reach the scheduler's ``Timing``; left out, the default."""

from __future__ import annotations

from sortie.cli.daemons import _timing
from sortie.cli.main import _parser
from sortie.scheduler.reconcile import Timing


def test_flags_left_out_keep_the_defaults() -> None:
    args = _parser().parse_args(["scheduler"])
    assert _timing(args) == Timing()


def test_each_flag_sets_its_setting() -> None:
    args = _parser().parse_args(
        ["scheduler", "--lease", "4", "--kill-grace", "3", "--report-grace", "7.5", "--unheld", "9"]
    )
    assert _timing(args) == Timing(lease_s=4, kill_grace_s=3, report_grace_s=7.5, unheld_s=9)


def test_one_flag_leaves_the_others_alone() -> None:
    args = _parser().parse_args(["scheduler", "--unheld", "120"])
    timing = _timing(args)
    assert timing.unheld_s == 120
    assert timing.report_grace_s == Timing().report_grace_s
    assert timing.lease_s == Timing().lease_s
