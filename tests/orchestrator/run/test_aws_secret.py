"""An AWS secret in the driver's environment reaches no file of Ray's, no actor of Ray's and no
result of Tune's: real `launch` processes on a real Ray, then a search for the secret.

Ray Tune (2.60) copies the driver's AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN
and AWS_SECURITY_TOKEN into every trainable's runtime_env, which Ray writes in plain text to its
session's logs/runtime_env_agent.log (mode 644) and keeps in the GCS's actor table
(orchestrator/run/ray_compat.py's credentials_out_of_runtime_env keeps them out). Each test sets
unique markers as the credentials and searches every byte of what the run left behind.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.orchestrator.conftest import run_cli
from tests.orchestrator.run.test_sweeps_e2e import rows, sweep_file


def ray_test(test):
    """A test that runs a sweep on a real Ray (slow)."""
    return pytest.mark.ray(pytest.mark.slow(test))


def credentials() -> dict[str, str]:
    """AWS_* credentials, each a marker no other test or process uses."""
    tag = secrets.token_hex(8)
    return {"AWS_ACCESS_KEY_ID": f"AKIDMARK{tag}", "AWS_SECRET_ACCESS_KEY": f"secret-marker-{tag}",
            "AWS_SESSION_TOKEN": f"token-marker-{tag}"}


def secret_markers(env: dict[str, str]) -> list[bytes]:
    return [env[k].encode() for k in ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")]


def files_holding(root: Path, markers: list[bytes]) -> list[str]:
    """Every file under `root` (logs, sockets' neighbours, spilled objects, results) holding a marker."""
    found = []
    for dirpath, _, names in os.walk(root):
        for name in names:
            path = Path(dirpath) / name
            if path.is_symlink() or not path.is_file():
                continue
            try:
                data = path.read_bytes()
            except OSError:
                continue
            found += [f"{path}: {m.decode()}" for m in markers if m in data]
    return found


def own_ray_env(temp_dir: str, extra: dict[str, str]) -> dict[str, str]:
    """A driver that starts a local Ray of its own, in `temp_dir` (so its whole temp directory
    is ours to search)."""
    return {"RAY_TMPDIR": temp_dir, "RAY_ADDRESS": "", "RAY_AUTH_MODE": "disabled", **extra}


@ray_test
def test_a_launch_on_its_own_local_ray_leaves_no_aws_secret_in_rays_temp_directory(tmp_path):
    env = credentials()
    path = sweep_file(tmp_path, "aws-local", epochs=1, shortcut="[none]", num_train=64)
    url = f"sqlite:///{tmp_path / 'resweep.db'}"
    with tempfile.TemporaryDirectory(prefix="rs", dir="/tmp") as temp_dir:  # short: Ray's socket paths
        done = run_cli("launch", str(path), "--db", url, "--results", str(tmp_path / "results"), cwd=tmp_path,
                       env=own_ray_env(temp_dir, env), timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
        sessions = list(Path(temp_dir).glob("ray/session_*/logs/runtime_env_agent.log"))
        assert sessions, "the search would not see Ray's session: it is not where RAY_TMPDIR put it"
        leaks = files_holding(Path(temp_dir), secret_markers(env))
    assert rows(url, "SELECT status FROM sweeps") == [("finished",)]
    assert leaks == []
    assert files_holding(tmp_path, secret_markers(env)) == []  # Tune's results, the database
    assert not any(m.decode() in done.stdout + done.stderr for m in secret_markers(env))


@ray_test
def test_a_launch_joined_to_a_cluster_leaves_no_aws_secret_in_its_session_or_its_actor_table(tmp_path, ray_cluster):
    import ray

    env = credentials()
    path = sweep_file(tmp_path, "aws-joined", epochs=1, shortcut="[none]", num_train=64)
    url = f"sqlite:///{tmp_path / 'resweep.db'}"
    done = run_cli("launch", str(path), "--db", url, "--address", ray_cluster.address, "--results",
                   str(tmp_path / "results"), cwd=tmp_path, env=env, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    # The GCS's actor table, every actor ever created on the cluster, as the GCS serialises it.
    actors = ray._private.state.state._connect_and_get_accessor().get_actor_table(None, None)
    assert any(b"run_trial" in actor for actor in actors), "the sweep's trainable is not in the table searched"
    assert [m for m in secret_markers(env) if any(m in actor for actor in actors)] == []
    session = Path(ray._private.worker._global_node.get_session_dir_path())
    assert (session / "logs" / "runtime_env_agent.log").exists()
    assert files_holding(session, secret_markers(env)) == []
    assert files_holding(tmp_path, secret_markers(env)) == []


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def s3(tmp_path):
    """moto's S3 server (from PyPI; no real S3 is reachable from a test machine) on the loopback,
    with a bucket; yields (the AWS_* variables for it, with marker credentials, and the bucket)."""
    port = free_port()
    env = {**credentials(), "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_REGION": "us-east-1"}
    server = subprocess.Popen([str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        import boto3

        client = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1",
                              aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                              aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"])
        for _ in range(120):
            try:
                client.create_bucket(Bucket="rsw-aws")
                break
            except Exception:  # not listening yet
                time.sleep(0.25)
        else:
            raise RuntimeError("moto's S3 server did not start")
        yield env, client, "rsw-aws"
    finally:
        server.terminate()
        server.wait(timeout=30)


@ray_test
def test_results_on_s3_work_with_the_secret_kept_out_of_ray_and_the_results(tmp_path, s3):
    """Trials upload their checkpoints themselves, so workers need the credentials: a local Ray's
    workers have them from the environment they inherit, not from a runtime_env."""
    env, client, bucket = s3
    path = sweep_file(tmp_path, "aws-s3", epochs=2, shortcut="[none]", num_train=64)
    url = f"sqlite:///{tmp_path / 'resweep.db'}"
    with tempfile.TemporaryDirectory(prefix="rs", dir="/tmp") as temp_dir:
        done = run_cli("launch", str(path), "--db", url, "--results", f"s3://{bucket}/sweeps", cwd=tmp_path,
                       env=own_ray_env(temp_dir, env), timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
        leaks = files_holding(Path(temp_dir), secret_markers(env))
    assert rows(url, "SELECT status, storage_path FROM sweeps") == [("finished", f"s3://{bucket}/sweeps/aws-s3")]
    assert rows(url, "SELECT count(*) FROM metrics WHERE name = 'test_err'") == [(2,)]
    keys = [o["Key"] for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
            for o in page.get("Contents", [])]
    assert any("/checkpoint_" in k for k in keys), keys  # written by the trial's worker
    assert any(k.rsplit("/", 1)[-1].startswith("experiment_state") for k in keys), keys
    assert leaks == []
    in_results = [k for k in keys if any(m in client.get_object(Bucket=bucket, Key=k)["Body"].read()
                                         for m in secret_markers(env))]
    assert in_results == []
    assert files_holding(tmp_path, secret_markers(env)) == []
