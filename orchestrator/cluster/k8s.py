"""A sweep as a KubeRay RayJob: `python -m orchestrator k8s SWEEP.yaml` prints the manifest.

Three documents, for `kubectl apply -f`:
- a ConfigMap holding the sweep file, mounted into the head pod;
- a Secret holding the database URL (it may carry a password), given to the head pod as
  $RESWEEP_DB; only the head needs it, since the driver alone writes results;
- a RayJob: KubeRay starts a Ray cluster (one head, N workers, token authentication on through
  `authOptions`, KubeRay >= 1.5.1), runs the driver `python -m orchestrator launch` on it, and
  deletes the cluster when the job ends.

A pod's termination (eviction, deletion, a node drain) stops the driver as Ctrl-C would: the
head's preStop hook sends the driver SIGTERM (its PID is in DRIVER_PID_FILE, see
orchestrator/run/stops.py) and waits until it has exited, within the pod's grace period; Tune saves
its state and the sweep reads `interrupted`, ready for `resume`.

With worker pods, Tune's results cannot stay in the head pod (the workers write their
checkpoints there and cannot reach it): `--results s3://...` with `--aws-secret` (a Secret of
AWS_* keys, given to every pod), or `--results-claim` (a ReadWriteMany PersistentVolumeClaim,
mounted on every pod at RESULTS_MOUNT). A manifest that would fail at the first checkpoint is
refused.

The image must hold resweep and its dependencies on Ray 2.60 (see docs/cluster.md).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

import yaml

from orchestrator.cluster.remote_sweep import RemoteSweep
from resweep.errors import UserError

RAY_VERSION = "2.60.0"
SWEEP_DIR = "/home/ray/resweep-sweep"  # where the ConfigMap is mounted in the head pod
SWEEP_KEY = "sweep.yaml"
DRIVER_PID_FILE = "/tmp/resweep-driver.pid"  # written by the driver on the head (RESWEEP_PID_FILE)
STOP_GRACE_S = 180  # the head pod's grace period: the driver's clean stop must fit in it
# The head's preStop hook: a clean stop of the driver, then wait for it (no driver: nothing to do).
PRE_STOP = (f'f={DRIVER_PID_FILE}; [ -s "$f" ] || exit 0; pid=$(cat "$f"); '
            'kill -TERM "$pid" 2>/dev/null || exit 0; '
            # an exited driver its parent has not reaped yet (a zombie, state Z) counts as gone
            'while kill -0 "$pid" 2>/dev/null && [ "$(cut -d" " -f3 /proc/$pid/stat 2>/dev/null)" != Z ]; '
            'do sleep 1; done')
RESULTS_MOUNT = "/mnt/resweep-results"  # where --results-claim is mounted on every pod


@dataclass(frozen=True)
class K8sOptions:
    image: str = "resweep:latest"
    workers: int = 1
    gpus_per_worker: int = 0
    cpus_per_worker: int = 4
    memory_per_worker: str = "16Gi"
    results: str | None = None  # a URI, or a path (in the pods)
    aws_secret: str | None = None  # a Secret whose keys are AWS_* variables, for every pod
    results_claim: str | None = None  # a ReadWriteMany PVC for the results, on every pod

    @property
    def results_location(self) -> str | None:
        return RESULTS_MOUNT if self.results_claim else self.results

    def check(self) -> None:
        self._check_results()
        if self.workers < 0:
            raise UserError(f"--workers {self.workers}: cannot be negative (allowed: 0 or more)")
        if self.gpus_per_worker < 0:
            raise UserError(f"--gpus-per-worker {self.gpus_per_worker}: cannot be negative (allowed: 0 or more)")
        if not self.image or any(c.isspace() for c in self.image):
            raise UserError(f"--image {self.image!r}: not a container image reference (e.g. registry/resweep:0.1)")


    def _check_results(self) -> None:
        from orchestrator.run.storage import is_uri, shown

        if self.results_claim and self.results:
            raise UserError(f"--results {shown(self.results)} and --results-claim {self.results_claim}: give one (with a "
                            f"claim, the results are at {RESULTS_MOUNT} on every pod)")
        for flag, value in (("--aws-secret", self.aws_secret), ("--results-claim", self.results_claim)):
            if value is not None and not re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", value):
                raise UserError(f"{flag} {value!r}: not a Kubernetes object name (lower case, digits, '-', '.')")
        uri = self.results is not None and is_uri(self.results)
        if self.workers > 0 and not (uri or self.results_claim):
            raise UserError(f"--workers {self.workers}: Tune's results would stay in the head pod, where the worker "
                            "pods cannot write their checkpoints (every trial would fail at its first one); pass "
                            "--results s3://BUCKET/PREFIX with --aws-secret SECRET (a Secret of AWS_* keys), or "
                            "--results-claim CLAIM (a ReadWriteMany PersistentVolumeClaim)")
        if uri and self.results.startswith(("s3://", "s3a://")) and self.aws_secret is None:
            raise UserError(f"--results {shown(self.results)}: the pods need S3 credentials; pass --aws-secret SECRET, a "
                            "Secret with AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY (and AWS_ENDPOINT_URL, AWS_REGION "
                            "as needed), given to every pod")


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
    if opts.results_location:
        entrypoint += f" --results {shlex.quote(opts.results_location)}"
    env_from = [{"secretRef": {"name": opts.aws_secret}}] if opts.aws_secret else []
    mounts = [{"name": "results", "mountPath": RESULTS_MOUNT}] if opts.results_claim else []
    volumes = ([{"name": "results", "persistentVolumeClaim": {"claimName": opts.results_claim}}]
               if opts.results_claim else [])
    head = {
        "rayStartParams": {"dashboard-host": "0.0.0.0"},
        "template": {"spec": {
            "containers": [{
                "name": "ray-head",
                "image": opts.image,
                "env": [{"name": "RESWEEP_DB", "valueFrom": {"secretKeyRef": {"name": f"{name}-db", "key": "url"}}},
                        {"name": "RESWEEP_PID_FILE", "value": DRIVER_PID_FILE}],
                "lifecycle": {"preStop": {"exec": {"command": ["/bin/sh", "-c", PRE_STOP]}}},
                "ports": [{"containerPort": 6379, "name": "gcs-server"},
                          {"containerPort": 8265, "name": "dashboard"},
                          {"containerPort": 10001, "name": "client"}],
                "resources": {"requests": {"cpu": "2", "memory": "8Gi"}, "limits": {"cpu": "2", "memory": "8Gi"}},
                "volumeMounts": [{"name": "sweep", "mountPath": SWEEP_DIR, "readOnly": True}, *mounts],
                **({"envFrom": env_from} if env_from else {}),
            }],
            "volumes": [{"name": "sweep", "configMap": {"name": f"{name}-sweep"}}, *volumes],
            "terminationGracePeriodSeconds": STOP_GRACE_S,
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
        "template": {"spec": {
            "containers": [{
                "name": "ray-worker",
                "image": opts.image,
                "resources": {"requests": dict(limits), "limits": limits},
                **({"envFrom": env_from} if env_from else {}),
                **({"volumeMounts": mounts} if mounts else {}),
            }],
            **({"volumes": volumes} if volumes else {}),
        }},
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
