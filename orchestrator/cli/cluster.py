"""Commands that run sweeps on clusters: submit, jobs, stop (Ray Jobs API), slurm, k8s."""

from __future__ import annotations

import datetime as dt
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from db.engine import Database, redact
from orchestrator.cluster import jobs_api, k8s, remote_sweep, slurm
from orchestrator.run.storage import refuse_credentials
from orchestrator.run.token import find_token
from orchestrator.cli.options import DbOption, TokenFileOption, user_errors
from orchestrator.results.tables import jobs_lines

DashboardAddressOption = typer.Option(  # the Jobs API's URL, not the Ray address launch joins
    "--address",
    help="The Ray head's dashboard URL, http://HEAD:8265 (default: $RAY_ADDRESS if HTTP, else http://127.0.0.1:8265).",
    show_default=False,
)
SweepArg = typer.Argument(help="The sweep file (YAML).", show_default=False)


def submit_cmd(
    sweep: Annotated[Path, SweepArg],
    address: Annotated[Optional[str], DashboardAddressOption] = None,
    db: Optional[str] = DbOption,
    follow: Annotated[bool, typer.Option(
        "--follow", help="Stream the job's logs until it ends; exit with its outcome.")] = False,
    token_file: Annotated[Optional[Path], TokenFileOption] = None,
    resume: Annotated[bool, typer.Option(
        "--resume", help="Continue a sweep of the same name already in the database.")] = False,
    results: Annotated[Optional[str], typer.Option(
        "--results", show_default=False,
        help="Where Tune's state and checkpoints go: s3://BUCKET/PREFIX or a path every node shares (default: "
             f"$RESWEEP_RESULTS, else {jobs_api.DEFAULT_RESULTS} on the head, only for a one-node cluster).")] = None,
) -> None:
    """Run a sweep as a Ray job on a running cluster (its driver runs on the head node)."""
    with user_errors():
        refuse_credentials(results or os.environ.get("RESWEEP_RESULTS") or "")
        remote = remote_sweep.prepare(sweep, Database(db))
        ray_cluster = jobs_api.Cluster(address, find_token(token_file))
        job_id = ray_cluster.submit(remote, resume=resume, results=ray_cluster.results_for(results))
        where = ray_cluster.address
        typer.echo(f"submitted {job_id} to {where}: sweep '{remote.spec.name}' "
                   f"({remote.spec.num_trials} trials), results in {remote.db_shown}")
        if not follow:
            typer.echo(f"follow it: ray job logs --follow {job_id} --address {where}\n"
                       f"stop it:   python -m orchestrator stop {job_id} --address {where}")
            return
        try:
            status = ray_cluster.follow(job_id, _write)
        except KeyboardInterrupt:
            typer.echo(f"\nstopped following; {job_id} goes on (stop it: python -m orchestrator stop {job_id} "
                       f"--address {where})", err=True)
            raise typer.Exit(130) from None
    typer.echo(f"job {job_id} {status}")
    raise typer.Exit(0 if status == "SUCCEEDED" else 1)


def _write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def jobs_cmd(
    address: Annotated[Optional[str], DashboardAddressOption] = None,
    token_file: Annotated[Optional[Path], TokenFileOption] = None,
) -> None:
    """List the jobs a Ray cluster knows, with their status."""
    with user_errors():
        ray_cluster = jobs_api.Cluster(address, find_token(token_file))
        jobs = ray_cluster.jobs()
    if not jobs:
        typer.echo(f"no jobs on {ray_cluster.address}")
        return
    rows = [("JOB", "STATUS", "STARTED", "ENDED", "SWEEP", "ENTRYPOINT")]
    for j in jobs:
        meta = j.metadata or {}
        rows.append((j.submission_id or j.job_id or "-", str(j.status.value), _when(j.start_time), _when(j.end_time),
                     meta.get("resweep_sweep", "-"), _shown_entrypoint(j.entrypoint, ray_cluster)))
    for line in jobs_lines(rows):
        typer.echo(line)


def _when(ms: int | None) -> str:
    return dt.datetime.fromtimestamp(ms / 1000).strftime("%Y-%m-%d %H:%M:%S") if ms else "-"


def _shown_entrypoint(entrypoint: str, ray_cluster: jobs_api.Cluster) -> str:
    """The entrypoint with database passwords (and the token, were it ever there) hidden."""
    words = [redact(w) if "://" in w else w for w in (entrypoint or "").split(" ")]
    return ray_cluster.mask(" ".join(words))


def stop_cmd(
    job: Annotated[str, typer.Argument(help="The job id, as `jobs` lists it.", show_default=False)],
    address: Annotated[Optional[str], DashboardAddressOption] = None,
    token_file: Annotated[Optional[Path], TokenFileOption] = None,
) -> None:
    """Stop a job on a Ray cluster (its sweep can be continued with `launch --resume`)."""
    with user_errors():
        ray_cluster = jobs_api.Cluster(address, find_token(token_file))
        stopped = ray_cluster.stop(job)
        status = ray_cluster.status(job)
    typer.echo(f"{job}: stop requested (now {status})" if stopped else f"{job}: already ended ({status})")


def slurm_cmd(
    sweep: Annotated[Path, SweepArg],
    nodes: Annotated[int, typer.Option("--nodes", help="Nodes to allocate; Ray's head runs on the first.")],
    gpus_per_node: Annotated[int, typer.Option("--gpus-per-node", help="GPUs per node (0 for CPU nodes).")],
    partition: Annotated[Optional[str], typer.Option("--partition", help="Slurm partition.")] = None,
    time: Annotated[Optional[str], typer.Option("--time", help="Time limit, e.g. 2-00:00:00.")] = None,
    account: Annotated[Optional[str], typer.Option("--account", help="Slurm account to charge.")] = None,
    cpus_per_node: Annotated[Optional[int], typer.Option(
        "--cpus-per-node", help="CPUs per node (default: whole nodes, --exclusive).")] = None,
    db: Optional[str] = DbOption,
    results: Annotated[Optional[str], typer.Option(
        "--results", show_default=False,
        help="Tune's state and checkpoints: a path every node shares or s3://BUCKET/PREFIX (default: results/ in "
             "the project directory, which Slurm's nodes share).")] = None,
) -> None:
    """Print an sbatch script that runs the sweep on a Ray cluster inside a Slurm allocation."""
    with user_errors():
        refuse_credentials(results or os.environ.get("RESWEEP_RESULTS") or "")
        remote = remote_sweep.prepare(sweep, Database(db))
        script = slurm.render(remote, slurm.SlurmOptions(
            nodes=nodes, gpus_per_node=gpus_per_node, partition=partition, time=time, account=account,
            cpus_per_node=cpus_per_node, results=results or os.environ.get("RESWEEP_RESULTS") or None))
    typer.echo(script, nl=False)


def k8s_cmd(
    sweep: Annotated[Path, SweepArg],
    image: Annotated[str, typer.Option("--image", help="Container image with resweep installed.")] = "resweep:latest",
    gpus_per_worker: Annotated[int, typer.Option("--gpus-per-worker", help="GPUs per worker pod.")] = 0,
    workers: Annotated[int, typer.Option("--workers", help="Worker pods.")] = 1,
    db: Optional[str] = DbOption,
    results: Annotated[Optional[str], typer.Option(
        "--results", show_default=False,
        help="Tune's state and checkpoints: s3://BUCKET/PREFIX (with --aws-secret) for a cluster with workers "
             "(default: $RESWEEP_RESULTS; a path in the head pod only without workers).")] = None,
    aws_secret: Annotated[Optional[str], typer.Option(
        "--aws-secret", show_default=False,
        help="A Secret whose keys are AWS_* variables (AWS_ACCESS_KEY_ID, ...), given to every pod.")] = None,
    results_claim: Annotated[Optional[str], typer.Option(
        "--results-claim", show_default=False,
        help=f"A ReadWriteMany PersistentVolumeClaim for the results, mounted on every pod at {k8s.RESULTS_MOUNT}.",
    )] = None,
) -> None:
    """Print a KubeRay RayJob manifest that runs the sweep on Kubernetes."""
    with user_errors():
        refuse_credentials(results or os.environ.get("RESWEEP_RESULTS") or "")
        remote = remote_sweep.prepare(sweep, Database(db))
        text = k8s.manifest(remote, k8s.K8sOptions(
            image=image, workers=workers, gpus_per_worker=gpus_per_worker,
            results=results or os.environ.get("RESWEEP_RESULTS") or None, aws_secret=aws_secret,
            results_claim=results_claim))
    typer.echo(text, nl=False)
