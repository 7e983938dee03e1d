"""The KubeRay manifest from `orchestrator k8s`: valid YAML with what a RayJob needs."""

from __future__ import annotations

import shlex

import pytest
import yaml
from typer.testing import CliRunner

from db.engine import Database
from orchestrator.cluster import k8s, remote_sweep
from orchestrator.cli.app import app
from tests.orchestrator.cluster_support import write_sweep

DB = "postgresql://resweep:hunter2@db.example/resweep"
S3 = ["--results", "s3://lab-results/resweep", "--aws-secret", "lab-s3"]  # results every worker pod can write


def documents(args: list[str], results: list[str] = S3) -> dict[str, dict]:
    result = CliRunner().invoke(app, ["k8s", *args, *results])
    assert result.exit_code == 0, result.output
    return {d["kind"]: d for d in yaml.safe_load_all(result.stdout)}


def test_manifest_is_a_configmap_a_secret_and_a_rayjob(tmp_path):
    docs = documents([str(write_sweep(tmp_path)), "--db", DB])
    assert set(docs) == {"ConfigMap", "Secret", "RayJob"}
    job = docs["RayJob"]
    assert job["apiVersion"] == "ray.io/v1" and job["metadata"]["name"] == "resweep-cluster-tiny"
    spec = job["spec"]
    assert shlex.split(spec["entrypoint"])[:5] == ["python", "-m", "orchestrator", "launch",
                                                   "/home/ray/resweep-sweep/sweep.yaml"]
    cluster_spec = spec["rayClusterSpec"]
    assert cluster_spec["authOptions"] == {"mode": "token"}
    assert cluster_spec["headGroupSpec"]["template"]["spec"]["containers"][0]["name"] == "ray-head"
    (workers,) = cluster_spec["workerGroupSpecs"]
    assert workers["replicas"] == 1 and workers["template"]["spec"]["containers"][0]["image"] == "resweep:latest"
    assert spec["shutdownAfterJobFinishes"] is True


def test_sweep_file_travels_in_the_configmap_mounted_on_the_head(tmp_path):
    sweep = write_sweep(tmp_path)
    docs = documents([str(sweep), "--db", DB])
    assert docs["ConfigMap"]["data"]["sweep.yaml"] == sweep.read_text()
    head = docs["RayJob"]["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    assert head["volumes"] == [{"name": "sweep", "configMap": {"name": docs["ConfigMap"]["metadata"]["name"]}}]
    assert head["containers"][0]["volumeMounts"][0]["mountPath"] == "/home/ray/resweep-sweep"


def test_database_url_is_in_a_secret_not_in_the_entrypoint(tmp_path):
    docs = documents([str(write_sweep(tmp_path)), "--db", DB])
    assert docs["Secret"]["stringData"]["url"] == remote_sweep.remote_db_url(Database(DB))
    spec = docs["RayJob"]["spec"]
    assert "hunter2" not in spec["entrypoint"] and "$RESWEEP_DB" not in spec["entrypoint"]
    assert '"${RESWEEP_DB:?' in spec["entrypoint"]
    env = spec["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["env"]
    assert env[0] == {"name": "RESWEEP_DB", "valueFrom": {"secretKeyRef": {"name": docs["Secret"]["metadata"]["name"],
                                                                          "key": "url"}}}


def test_gpu_limits_and_worker_count_when_asked(tmp_path):
    docs = documents([str(write_sweep(tmp_path)), "--db", DB, "--gpus-per-worker", "2", "--workers", "4",
                      "--image", "registry.example/resweep:0.1"])
    (workers,) = docs["RayJob"]["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    container = workers["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert workers["replicas"] == workers["minReplicas"] == workers["maxReplicas"] == 4
    assert container["image"] == "registry.example/resweep:0.1"


def test_no_gpu_limit_without_gpus(tmp_path):
    docs = documents([str(write_sweep(tmp_path)), "--db", DB])
    (workers,) = docs["RayJob"]["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    assert "nvidia.com/gpu" not in workers["template"]["spec"]["containers"][0]["resources"]["limits"]


def test_names_are_valid_kubernetes_names():
    assert k8s.k8s_name("CIFAR10_depth.v2") == "resweep-cifar10-depth-v2"
    assert len(k8s.k8s_name("x" * 100)) <= 63 - len("-sweep")


@pytest.mark.parametrize("args, message", [
    (["--workers", "-1"], "--workers -1"),
    (["--gpus-per-worker", "-2"], "--gpus-per-worker -2"),
    (["--db", "sqlite:///local.db"], "PostgreSQL URL"),
    (["--aws-secret", "Not_A_Name", "--results", "s3://b/p"], "--aws-secret 'Not_A_Name'"),
])
def test_bad_options_are_refused_in_one_line(tmp_path, args, message):
    db = [] if "--db" in args else ["--db", DB]
    results = [] if "--results" in args else S3
    result = CliRunner().invoke(app, ["k8s", str(write_sweep(tmp_path)), *args, *db, *results])
    assert result.exit_code == 2 and result.stdout == ""
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_the_head_pod_stops_the_driver_cleanly_before_it_goes(tmp_path):
    """preStop runs before the kubelet's SIGTERM: it stops the driver (whose PID file the env names)
    and waits for it, within a grace period long enough for Tune to save its state. That the hook's
    command really does so is tested on a real driver in test_stops.py."""
    docs = documents([str(write_sweep(tmp_path)), "--db", DB])
    head = docs["RayJob"]["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    (container,) = head["containers"]
    assert {"name": "RESWEEP_PID_FILE", "value": k8s.DRIVER_PID_FILE} in container["env"]
    assert container["lifecycle"]["preStop"]["exec"]["command"] == ["/bin/sh", "-c", k8s.PRE_STOP]
    assert head["terminationGracePeriodSeconds"] >= 120


@pytest.mark.parametrize("results, message", [
    ([], "--workers 1: Tune's results would stay in the head pod"),
    (["--results", "/home/ray/results"], "--workers 1: Tune's results would stay in the head pod"),
    (["--results", "s3://lab-results/resweep"], "--aws-secret SECRET"),
    (["--results", "s3://b/p", "--results-claim", "shared"], "give one"),
])
def test_a_manifest_whose_workers_could_not_checkpoint_is_refused(tmp_path, results, message):
    result = CliRunner().invoke(app, ["k8s", str(write_sweep(tmp_path)), "--db", DB, *results])
    assert result.exit_code == 2 and result.stdout == ""
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_object_store_results_reach_every_pod_through_the_aws_secret(tmp_path):
    docs = documents([str(write_sweep(tmp_path)), "--db", DB, "--workers", "2"])
    spec = docs["RayJob"]["spec"]
    assert shlex.split(spec["entrypoint"])[-2:] == ["--results", "s3://lab-results/resweep"]
    cluster_spec = spec["rayClusterSpec"]
    pods = [cluster_spec["headGroupSpec"], *cluster_spec["workerGroupSpecs"]]
    for pod in pods:
        assert pod["template"]["spec"]["containers"][0]["envFrom"] == [{"secretRef": {"name": "lab-s3"}}]
    assert "AWS_SECRET_ACCESS_KEY" not in yaml.safe_dump_all(docs.values())  # only the Secret's name


def test_a_readwritemany_claim_is_mounted_on_every_pod(tmp_path):
    docs = documents([str(write_sweep(tmp_path)), "--db", DB], results=["--results-claim", "lab-results"])
    spec = docs["RayJob"]["spec"]
    assert shlex.split(spec["entrypoint"])[-2:] == ["--results", k8s.RESULTS_MOUNT]
    cluster_spec = spec["rayClusterSpec"]
    for pod in [cluster_spec["headGroupSpec"], *cluster_spec["workerGroupSpecs"]]:
        pod_spec = pod["template"]["spec"]
        assert {"name": "results", "persistentVolumeClaim": {"claimName": "lab-results"}} in pod_spec["volumes"]
        assert {"name": "results", "mountPath": k8s.RESULTS_MOUNT} in pod_spec["containers"][0]["volumeMounts"]


def test_a_head_only_cluster_keeps_its_results_in_the_head_pod(tmp_path):
    docs = documents([str(write_sweep(tmp_path)), "--db", DB, "--workers", "0"], results=[])
    assert "--results" not in docs["RayJob"]["spec"]["entrypoint"]
