"""The built wheel installs one import package, ``sortie``: nothing that could shadow another
library's top-level name (a bare ``proto`` once overwrote proto-plus's package)."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_has_one_top_level_import_name(tmp_path: Path) -> None:
    # build from a copy: setuptools writes build/ and *.egg-info next to the sources
    src = tmp_path / "src"
    shutil.copytree(ROOT / "sortie", src / "sortie", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    uv = Path(sys.executable).parent / "uv"
    subprocess.run(
        [str(uv), "build", "--wheel", "--out-dir", str(tmp_path), str(src)],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("sortie-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/", 1)[0] for n in names if not n.split("/", 1)[0].endswith(".dist-info")}
    assert top == {"sortie"}
    # the floors are all inside it, and the runtime shim the agent copies into runs too
    for path in (
        "sortie/proto/messages.py",
        "sortie/bus/connection.py",
        "sortie/scheduler/daemon.py",
        "sortie/agents/daemon.py",
        "sortie/client/run_context.py",
        "sortie/cli/main.py",
        # the dashboard's templates and vendored assets (no CDN: served from the package)
        "sortie/web/templates/base.html",
        "sortie/web/static/sortie.js",
        "sortie/web/static/vendor/uPlot.iife.min.js",
    ):
        assert path in names
    # every page's own script and stylesheet (a view missing from the wheel loads unstyled)
    views = Path(__file__).parent.parent / "sortie" / "web" / "static" / "views"
    for view in sorted(views.iterdir()):
        path = f"sortie/web/static/views/{view.name}"
        assert path in names
