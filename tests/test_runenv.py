"""The run context (standard library only) spells the same variables as proto's contract."""

from pathlib import Path

from sortie.client import run_context
from sortie.proto import runenv


def test_run_context_reads_the_variables_the_agent_sets() -> None:
    names = {k: v for k, v in vars(runenv).items() if k.startswith("ENV_")}
    assert names
    assert {k: getattr(run_context, k) for k in names} == names


def test_the_shim_imports_nothing_of_sortie() -> None:
    source = Path(run_context.__file__).read_text()
    assert "from sortie" not in source and "import sortie" not in source
