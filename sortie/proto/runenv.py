"""The environment contract between an agent and the script it runs: the variables the agent
sets for every run. The script side reads them in ``sortie/client/run_context.py``, which must
stay standard-library only (the agent copies it into each run as the package ``sortie``), so it
spells the same names itself; ``tests/test_runenv.py`` keeps the two equal.
"""

from __future__ import annotations

ENV_RUN_ID = "SORTIE_RUN_ID"
ENV_ATTEMPT = "SORTIE_ATTEMPT"
ENV_EXPERIMENT = "SORTIE_EXPERIMENT"
ENV_TARGET = "SORTIE_TARGET"
ENV_METRICS_FILE = "SORTIE_METRICS_FILE"
ENV_OUTPUTS_DIR = "SORTIE_OUTPUTS_DIR"
ENV_HOSTFILE = "SORTIE_HOSTFILE"  # every node of the run, one "HOST slots=1" line per rank
ENV_STOP_REASON_FILE = "SORTIE_STOP_REASON_FILE"
ENV_NODE_PRIORITY = "SORTIE_NODE_PRIORITY"
ENV_TAGS = "SORTIE_TAGS"  # the run's tags at submit, as a JSON object (set when it has some)

# Where the script-side module lives inside the installed ``sortie`` package; the agent copies
# its source (a file, not an import: agents sit beside the client library, never above it).
RUN_CONTEXT_RESOURCE = ("client", "run_context.py")

# A folder of the run's outputs/ where the script puts the files it uploads under names
# outside outputs/ (``Run.upload_file("logs/y.txt", ...)``): the agent uploads
# ``outputs/.sortie-uploads/logs/y.txt`` as the artifact ``logs/y.txt``.
UPLOADS_DIR = ".sortie-uploads"

# Beside it, so that v1 code's ``from sortie.azureml.core import Run`` (and ``.core.run``)
# works inside a run: these files re-export the script-side ``Run`` (standard library only,
# like it). Relative path under the run's ``sortie`` package -> source.
_REEXPORT = '''"""The script-side v1 Run API inside a Sortie run (see ``sortie.Run``)."""

from sortie import Experiment, Run

__all__ = ["Experiment", "Run"]
'''
RUNTIME_SHIM: dict[str, str] = {
    "azureml/__init__.py": '"""Azure ML v1 names inside a Sortie run."""\n',
    "azureml/core/__init__.py": _REEXPORT,
    "azureml/core/run.py": _REEXPORT,
}
