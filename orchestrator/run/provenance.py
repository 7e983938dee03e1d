"""Which code a sweep runs: the project's directory and the git state recorded with the sweep."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

# The directory that holds the orchestrator/, trainers/ and db/ packages: what a job needs to run.
PROJECT_DIR = Path(__file__).resolve().parent.parent


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
