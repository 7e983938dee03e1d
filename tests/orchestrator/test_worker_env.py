"""The database URL (and its password) never reaches a Ray worker: a real local Ray, started by
`orchestrator.ray_session.start_ray` (what launch uses) in a fresh process whose RESWEEP_DB holds a password."""

from __future__ import annotations

import ast
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


STOP_SCRIPT = textwrap.dedent("""
    import ray
    from orchestrator.ray_session import ray_session

    seen = {}
    real_shutdown = ray.shutdown

    def watched_shutdown(*args, **kwargs):
        processes = {kind: [info.process for info in infos]
                     for kind, infos in ray._private.worker._global_node.all_processes.items()}
        seen["at shutdown"] = {kind: [p.poll() for p in ps] for kind, ps in processes.items()}
        real_shutdown(*args, **kwargs)
        seen["after"] = {kind: [p.poll() for p in ps] for kind, ps in processes.items()}

    ray.shutdown = watched_shutdown

    @ray.remote(num_cpus=0)
    def ping():
        return "pong"

    with ray_session(None):
        print("task:", ray.get(ping.remote()))
    print("seen:", seen)
""")


def test_a_local_ray_ends_whole_with_its_autoscaler_monitor_killed_before_the_rest():
    """stop_local_ray: the monitor (which would stall ray.shutdown a second trying to reach the
    GCS that Ray stops before it) is gone when ray.shutdown starts, while the raylet and GCS still
    run and are left to ray.shutdown's graceful stop; afterwards no process of the node is left."""
    with tempfile.TemporaryDirectory(prefix="rw", dir="/tmp") as temp_dir:
        env = {**os.environ, "RAY_TMPDIR": temp_dir, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0",
               "RAY_ADDRESS": ""}  # fmt: skip
        out = subprocess.run([sys.executable, "-c", STOP_SCRIPT], env=env, capture_output=True, text=True, check=False,
                             timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    assert "task: pong" in out.stdout
    seen = ast.literal_eval(out.stdout.split("seen: ", 1)[1].strip())
    at_shutdown, after = seen["at shutdown"], seen["after"]
    assert at_shutdown["monitor"] == [-9], at_shutdown
    assert at_shutdown["raylet"] == [None] and at_shutdown["gcs_server"] == [None], at_shutdown
    assert all(code is not None for codes in after.values() for code in codes), after
