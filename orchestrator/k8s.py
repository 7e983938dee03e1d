"""A sweep as a KubeRay RayJob: `python -m orchestrator k8s SWEEP.yaml` prints the manifest.

Three documents, for `kubectl apply -f`:
- a ConfigMap holding the sweep file, mounted into the head pod;
- a Secret holding the database URL (it may carry a password), given to the head pod as
  $RESWEEP_DB; only the head needs it, since the driver alone writes results;
- a RayJob: KubeRay starts a Ray cluster (one head, N workers, token authentication on through
  `authOptions`, KubeRay >= 1.5.1), runs the driver `python -m orchestrator launch` on it, and
  deletes the cluster when the job ends.

The image must hold resweep and its dependencies on Ray 2.60 (see docs/cluster.md).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

import yaml

from orchestrator.cluster import RemoteSweep
from orchestrator.errors import UserError

RAY_VERSION = "2.60.0"
SWEEP_DIR = "/home/ray/resweep-sweep"  # where the ConfigMap is mounted in the head pod
SWEEP_KEY = "sweep.yaml"


@dataclass(frozen=True)
class K8sOptions:
    image: str = "resweep:latest"
    workers: int = 1
    gpus_per_worker: int = 0
    cpus_per_worker: int = 4
    memory_per_worker: str = "16Gi"

    def check(self) -> None:
        if self.workers < 0:
            raise UserError(f"--workers {self.workers}: cannot be negative (allowed: 0 or more)")
        if self.gpus_per_worker < 0:
            raise UserError(f"--gpus-per-worker {self.gpus_per_worker}: cannot be negative (allowed: 0 or more)")
        if not self.image or any(c.isspace() for c in self.image):
            raise UserError(f"--image {self.image!r}: not a container image reference (e.g. registry/resweep:0.1)")


def k8s_name(sweep_name: str) -> str:
    """A DNS-1123 label from a sweep name (lower case, digits, '-'), short enough for pod names."""
    name = re.sub(r"[^a-z0-9-]+", "-", sweep_name.lower()).strip("-")[:40].rstrip("-")
    return f"resweep-{name or 'sweep'}"


def manifest(sweep: RemoteSweep, opts: K8sOptions) -> str:
    """The YAML (three documents) that runs `sweep` on Kubernetes through KubeRay."""
    opts.check()
    name = k8s_name(sweep.spec.name)
    labels = {"app.kubernetes.io/name": "resweep", "resweep/sweep": name.removeprefix("resweep-")}
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": f"{name}-sweep", "labels": labels},
        "data": {SWEEP_KEY: sweep.text},
    }
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": f"{name}-db", "labels": labels},
        "type": "Opaque",
        "stringData": {"url": sweep.db_url},
    }
    # The entrypoint runs in a shell on the head: ${RESWEEP_DB:?} fails loudly if the Secret is missing.
    entrypoint = (f"python -m orchestrator launch {shlex.quote(f'{SWEEP_DIR}/{SWEEP_KEY}')} "
                  '--db "${RESWEEP_DB:?the database URL comes from the Secret ' + f'{name}-db' + '}"')
    head = {
        "rayStartParams": {"dashboard-host": "0.0.0.0"},
        "template": {"spec": {
            "containers": [{
                "name": "ray-head",
                "image": opts.image,
                "env": [{"name": "RESWEEP_DB", "valueFrom": {"secretKeyRef": {"name": f"{name}-db", "key": "url"}}}],
                "ports": [{"containerPort": 6379, "name": "gcs-server"},
                          {"containerPort": 8265, "name": "dashboard"},
                          {"containerPort": 10001, "name": "client"}],
                "resources": {"requests": {"cpu": "2", "memory": "8Gi"}, "limits": {"cpu": "2", "memory": "8Gi"}},
                "volumeMounts": [{"name": "sweep", "mountPath": SWEEP_DIR, "readOnly": True}],
            }],
            "volumes": [{"name": "sweep", "configMap": {"name": f"{name}-sweep"}}],
        }},
    }
    worker_resources = {"cpu": str(opts.cpus_per_worker), "memory": opts.memory_per_worker}
    limits = dict(worker_resources)
    if opts.gpus_per_worker:
        limits["nvidia.com/gpu"] = str(opts.gpus_per_worker)
    workers = {
        "groupName": "workers",
        "replicas": opts.workers,
        "minReplicas": opts.workers,
        "maxReplicas": opts.workers,
        "rayStartParams": {},
        "template": {"spec": {"containers": [{
            "name": "ray-worker",
            "image": opts.image,
            "resources": {"requests": dict(limits), "limits": limits},
        }]}},
    }
    ray_job = {
        "apiVersion": "ray.io/v1",
        "kind": "RayJob",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "entrypoint": entrypoint,
            "runtimeEnvYAML": yaml.safe_dump({"env_vars": {"PYTHONUNBUFFERED": "1"}}),
            "shutdownAfterJobFinishes": True,
            "ttlSecondsAfterFinished": 600,
            "rayClusterSpec": {
                "rayVersion": RAY_VERSION,
                "authOptions": {"mode": "token"},
                "headGroupSpec": head,
                "workerGroupSpecs": [workers],
            },
        },
    }
    header = (f"# resweep sweep '{sweep.spec.name}' as a KubeRay RayJob: {opts.workers} worker(s) x "
              f"{opts.gpus_per_worker} GPU(s), results in {sweep.db_shown}.\n"
              f"# Apply with `kubectl apply -f THIS_FILE`; follow with `kubectl logs -f job/{name}`.\n")
    return header + yaml.safe_dump_all([config_map, secret, ray_job], sort_keys=False, width=1000)
