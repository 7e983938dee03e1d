"""The database URL (and its password) never reaches a Ray worker: a real local Ray, started by
`orchestrator.ray_session.start_ray` (what launch uses) in a fresh process whose RESWEEP_DB holds a password."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import textwrap

SECRET_URL = "postgresql://alice:s3cr3t-pw@127.0.0.1:1/results"

SCRIPT = textwrap.dedent("""
    import os, ray
    from orchestrator.ray_session import start_ray

    assert start_ray(None)

    @ray.remote(num_cpus=0)
    def worker_env():
        return {k: v for k, v in os.environ.items() if "s3cr3t" in v or k == "RESWEEP_DB"}

    print("worker:", ray.get(worker_env.remote()))
    print("driver:", os.environ.get("RESWEEP_DB"))
    ray.shutdown()
""")


def test_workers_of_the_local_ray_do_not_get_the_database_url():
    with tempfile.TemporaryDirectory(prefix="rw", dir="/tmp") as temp_dir:
        env = {**os.environ, "RESWEEP_DB": SECRET_URL, "RAY_TMPDIR": temp_dir, "RAY_AUTH_MODE": "disabled",
               "RAY_USAGE_STATS_ENABLED": "0", "RAY_ADDRESS": ""}  # fmt: skip
        out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "worker: {}" in out.stdout
    assert f"driver: {SECRET_URL}" in out.stdout  # the driver keeps it: it is the one writer
