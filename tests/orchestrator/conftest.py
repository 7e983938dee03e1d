"""One real local Ray for the whole test session, and helpers to drive the real command line.

The cluster is started once (2 CPUs, no dashboard). Sweeps launched through the CLI run in their
own driver process and join it with `--address`, so each driver can be killed for real while
the trials' workers belong to the shared cluster. RESWEEP_TEST_FAULT_DIR is set before
`ray.init`, so every worker the cluster starts inherits it: a test drops a marker file there to
make a trial's process die at a given epoch (benchmarks/trial_hooks.py, through the trainable's
$RESWEEP_TRIAL_HOOK).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class RayCluster:
    address: str  # GCS address for `--address`
    fault_dir: Path  # $RESWEEP_TEST_FAULT_DIR of every worker


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory) -> RayCluster:
    fault_dir = tmp_path_factory.mktemp("faults")
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    os.environ["RESWEEP_TEST_FAULT_DIR"] = str(fault_dir)  # before ray.init: workers inherit it
    os.environ["RESWEEP_TRIAL_HOOK"] = "benchmarks.trial_hooks:crash_if_asked"
    import ray

    context = ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield RayCluster(address=context.address_info["gcs_address"], fault_dir=fault_dir)
    finally:
        ray.shutdown()
        os.environ.pop("RESWEEP_TEST_FAULT_DIR", None)
        os.environ.pop("RESWEEP_TRIAL_HOOK", None)


@pytest.fixture
def fault_dir(ray_cluster) -> Path:
    """The workers' fault directory, emptied after the test (no marker outlives its test)."""
    yield ray_cluster.fault_dir
    for marker in ray_cluster.fault_dir.iterdir():
        marker.unlink()


def cli_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This environment for a `python -m orchestrator` child, then the variables of `extra`."""
    env = dict(os.environ)
    env.pop("RESWEEP_DB", None)
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return {**env, **(extra or {})}


def run_cli(*args: str, cwd: Path, timeout: float = 240, env: dict[str, str] | None = None
            ) -> subprocess.CompletedProcess:
    """`python -m orchestrator ARGS` in its own process (`env`: variables added to its
    environment); returns when it exits."""
    return subprocess.run([sys.executable, "-m", "orchestrator", *args], cwd=cwd, env=cli_env(env),
                          capture_output=True, text=True, timeout=timeout)


def start_cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """`python -m orchestrator ARGS` in the background (to be killed or interrupted); `env`:
    variables added to its environment."""
    return subprocess.Popen([sys.executable, "-m", "orchestrator", *args], cwd=cwd, env=cli_env(env),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_for(condition, *, timeout: float, what: str, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the driver exited ({proc.returncode}) before {what}:\n{proc.stdout.read()}")
        time.sleep(0.5)
    if proc is not None:
        proc.send_signal(signal.SIGKILL)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
