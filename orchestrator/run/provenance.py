"""Which code a sweep runs: the project's directory and the git state recorded with the sweep."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

# The directory that holds resweep's packages: a checkout, or site-packages for an installed wheel.
PROJECT_DIR = Path(__file__).resolve().parents[2]
# What a sweep's driver imports, so what a job sent from an installed copy carries (pyproject.toml's
# packages less benchmarks/; tests/orchestrator/cluster/test_wheel.py checks the two agree).
PACKAGES = ("resweep", "orchestrator", "trainers", "db", "dashboard")


def git_state() -> tuple[str | None, bool | None]:
    """The commit of the code running the sweep and whether tracked files differ from it.

    A sweep sent with `submit` runs from a copy of the project without `.git`; `submit` passes the
    submitter's state in RESWEEP_GIT_COMMIT / RESWEEP_GIT_DIRTY, which then take precedence.
    """
    if os.environ.get("RESWEEP_GIT_COMMIT"):
        dirty = os.environ.get("RESWEEP_GIT_DIRTY")
        return os.environ["RESWEEP_GIT_COMMIT"], None if dirty is None else dirty == "1"
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_DIR, capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=PROJECT_DIR,
                                capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None, None
    return commit or None, bool(status.strip())
