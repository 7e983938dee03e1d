"""resweep installed from its wheel (`pip install .`, not editable) works away from the checkout.

The wheel is built from this checkout and installed into a fresh virtual environment (its
dependencies taken from this interpreter's site-packages: torch alone is gigabytes). From a
directory outside the checkout, the installed command line runs the bundled quickstart (cut to
one short trial), and `submit` from the installed copy stages every package the job imports and
runs it on a real local Ray head through the Jobs API.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml

from orchestrator.run.provenance import PACKAGES
from tests.orchestrator.cluster.test_cluster_jobs import head  # noqa: F401 (a fixture: a token Ray head)

REPO = Path(__file__).resolve().parents[3]


def test_a_job_carries_every_package_the_wheel_installs_but_the_benchmarks():
    include = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    assert set(PACKAGES) == {name.rstrip("*") for name in include} - {"benchmarks"}


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The venv's python, with resweep installed from a freshly built wheel."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"  # a copy: setuptools builds in the source tree (build/, *.egg-info)
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(
        ".git", "build", "dist", "results", "*.egg-info", "__pycache__", ".pytest_cache", "*.db", "out"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(root / "dist"), str(source)], check=True, capture_output=True, timeout=300)
    (wheel,) = (root / "dist").glob("resweep-*.whl")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "-q", str(wheel)], check=True,
                   capture_output=True, timeout=300)
    return python


def run(python: Path, *args: str, cwd: Path, env: dict | None = None, timeout: int = 300):
    base = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "RESWEEP_DB") and not k.startswith("RAY_")}
    base.update(RAY_USAGE_STATS_ENABLED="0", **(env or {}))
    return subprocess.run([str(python), *args], cwd=cwd, env=base, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
@pytest.mark.ray
def test_the_installed_wheel_imports_itself_and_runs_the_bundled_quickstart_from_any_directory(installed, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = run(installed, "-c", "import sys, importlib; print('\\n'.join(importlib.import_module(p).__file__ "
                "for p in sys.argv[1:]))", *PACKAGES, cwd=elsewhere)
    assert where.returncode == 0, where.stderr
    site = Path(run(installed, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])",
                    cwd=elsewhere).stdout.strip())
    assert all(Path(line).is_relative_to(site) for line in where.stdout.split()), where.stdout
    assert (site / "db" / "migrations" / "versions").is_dir()

    bundled = installed.parent.parent / "share" / "resweep" / "sweeps" / "quickstart.yaml"
    spec = yaml.safe_load(bundled.read_text())
    spec.update(name="wheel-quickstart")
    spec["grid"].update(depth=[8], shortcut=["A"], seed=[0])
    spec["train"].update(epochs=1, lr_milestones=[], max_train_samples=256)
    spec["probes"] = {"every": 1}
    sweep = elsewhere / "quickstart.yaml"
    sweep.write_text(yaml.safe_dump(spec))
    db = f"sqlite:///{elsewhere / 'resweep.db'}"
    launched = run(installed, "-m", "orchestrator", "launch", "quickstart.yaml", "--db", db, "--results",
                   str(elsewhere / "results"), cwd=elsewhere)
    assert launched.returncode == 0, launched.stdout[-2000:] + launched.stderr[-3000:]
    status = run(installed.parent / "resweep", "status", "wheel-quickstart", "--db", db, cwd=elsewhere)
    assert status.returncode == 0 and "terminated" in status.stdout, status.stdout + status.stderr
    engine = sa.create_engine(db)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT epochs FROM trial_results")).scalar_one() == 1
    engine.dispose()


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.postgres
def test_submit_from_the_installed_wheel_stages_every_package_and_the_job_runs(installed, head, pg_url,  # noqa: F811
                                                                                 tmp_path):
    from tests.orchestrator.cluster_support import write_sweep

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    sweep = write_sweep(elsewhere, "wheel-submit")
    staged = run(installed, "-c", (
        "import sys; from pathlib import Path\n"
        "from db.engine import Database\n"
        "from orchestrator.cluster import jobs_api, remote_sweep\n"
        "prepared = remote_sweep.prepare(sys.argv[1], Database(sys.argv[2]))\n"
        "rel = jobs_api.stage_project(prepared, Path(sys.argv[3]))\n"
        "print(rel)"), str(sweep), pg_url, str(tmp_path / "staged"), cwd=elsewhere)
    assert staged.returncode == 0, staged.stderr
    for package in PACKAGES:
        assert (tmp_path / "staged" / package / "__init__.py").is_file(), package
    assert (tmp_path / "staged" / "db" / "migrations" / "versions").is_dir()
    assert (tmp_path / "staged" / staged.stdout.strip()).read_text() == sweep.read_text()

    submitted = run(installed, "-m", "orchestrator", "submit", str(sweep), "--address", head.address, "--db", pg_url,
                    "--results", str(tmp_path / "results"), "--follow", cwd=elsewhere,
                    env={"RAY_AUTH_TOKEN": head.token, "HOME": str(tmp_path)}, timeout=400)
    assert submitted.returncode == 0, submitted.stdout[-3000:] + submitted.stderr[-2000:]
    engine = sa.create_engine(pg_url)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT status FROM sweeps WHERE name = 'wheel-submit'")).scalar_one() == "finished"
    engine.dispose()
