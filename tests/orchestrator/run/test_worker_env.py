"""The database URL (and its password) never reaches a Ray worker: a real local Ray, started by
`orchestrator.run.ray_session.start_ray` (what launch uses) in a fresh process whose RESWEEP_DB holds a password."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import tempfile
import textwrap

import pytest

SECRET_URL = "postgresql://alice:s3cr3t-pw@127.0.0.1:1/results"

SCRIPT = textwrap.dedent("""
    import os, ray
    from orchestrator.run.ray_session import start_ray

    assert start_ray(None)

    @ray.remote(num_cpus=0)
    def worker_env():
        return {k: v for k, v in os.environ.items() if "s3cr3t" in v or k == "RESWEEP_DB"}

    print("worker:", ray.get(worker_env.remote()))
    print("driver:", os.environ.get("RESWEEP_DB"))
    ray.shutdown()
""")


@pytest.mark.ray  # starts a real local Ray (in a subprocess)
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
    from orchestrator.run.ray_session import ray_session

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

    with ray_session(None) as local:
        print("task:", ray.get(ping.remote()), "local:", local)
    print("seen:", seen)
""")


@pytest.mark.ray  # starts a real local Ray (in a subprocess)
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
    assert "task: pong local: True" in out.stdout  # a Ray of the driver's own: launch stages few trials on it
    seen = ast.literal_eval(out.stdout.split("seen: ", 1)[1].strip())
    at_shutdown, after = seen["at shutdown"], seen["after"]
    assert at_shutdown["monitor"] == [-9], at_shutdown
    assert at_shutdown["raylet"] == [None] and at_shutdown["gcs_server"] == [None], at_shutdown
    assert all(code is not None for codes in after.values() for code in codes), after


WARM_SCRIPT = textwrap.dedent("""
    import sys, time, ray
    from orchestrator.run.ray_session import start_ray

    times = {}
    real_init = ray.init

    def timed_init(*args, **kwargs):
        times["init started"] = time.monotonic()
        try:
            return real_init(*args, **kwargs)
        finally:
            times["init returned"] = time.monotonic()

    ray.init = timed_init
    assert start_ray(None, warm=("warm_probe", "broken_probe"))
    times["start_ray returned"] = time.monotonic()
    assert "warm_probe" in sys.modules  # imported whole before start_ray returned
    import warm_probe
    try:
        import broken_probe
    except ImportError as exc:
        print("broken:", exc)
    print("thread:", warm_probe.THREAD)
    times.update({"probe started": warm_probe.STARTED, "probe done": warm_probe.DONE})
    print("order:", sorted(times, key=times.get))
    ray.shutdown()
""")

PROBES = {
    "warm_probe.py": "import threading, time\nSTARTED = time.monotonic()\nTHREAD = threading.current_thread().name\n"
                     "time.sleep(0.3)\nDONE = time.monotonic()\n",
    "broken_probe.py": "raise ImportError('broken_probe cannot be imported')\n",
}  # fmt: skip


@pytest.mark.ray  # starts a real local Ray (in a subprocess)
def test_the_modules_named_warm_are_imported_in_a_thread_while_ray_init_starts_a_local_ray(tmp_path):
    """start_ray(..., warm=...): the import runs off the main thread, begins before ray.init has
    returned (it overlaps Ray's start) and is complete when start_ray returns; a module that fails
    to import there fails again, with its own error, where the caller imports it."""
    for name, text in PROBES.items():
        (tmp_path / name).write_text(text)
    with tempfile.TemporaryDirectory(prefix="rw", dir="/tmp") as temp_dir:
        env = {**os.environ, "RAY_TMPDIR": temp_dir, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0",
               "RAY_ADDRESS": "", "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}  # fmt: skip
        out = subprocess.run([sys.executable, "-c", WARM_SCRIPT], env=env, capture_output=True, text=True, check=False,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "thread: resweep-warm-imports" in out.stdout
    assert "broken: broken_probe cannot be imported" in out.stdout
    order = ast.literal_eval(out.stdout.split("order: ", 1)[1].strip())
    assert order.index("probe started") < order.index("init returned")  # overlapping Ray's start
    assert order.index("probe done") < order.index("start_ray returned")


def test_importing_launch_leaves_ray_tune_to_the_background_import():
    """orchestrator.run.launch imports no Ray Tune itself (else there is nothing left to overlap with
    Ray's start): its TUNER_MODULES come in through ray_session's warm imports."""
    script = ("import sys, orchestrator.run.launch as launch; "
              "print(sorted(m for m in sys.modules if m == 'ray.tune' or m in launch.TUNER_MODULES))")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]"
