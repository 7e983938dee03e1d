"""Sweeps as Ray jobs on a running cluster: submit, follow, list and stop them over the Jobs API.

The job is the usual driver, `python -m orchestrator launch SWEEP --db URL`, run on the head node
with a copy of the project as its working directory and the sweep file inside that copy.

Clusters started with `RAY_AUTH_MODE=token` (Ray >= 2.52) refuse requests without their token.
Ray's own client attaches a token only when this process itself runs in token mode; resweep
instead finds the token (--token-file, $RAY_AUTH_TOKEN, $RAY_AUTH_TOKEN_PATH, ~/.ray/auth_token)
and hands it to `JobSubmissionClient(headers=...)` as `Authorization: Bearer ...`, which the
client keeps as given (ray/_private/authentication/http_token_authentication.py). The token is
never printed: `Token` hides it from repr/str, errors name only where it came from, and the
followed log stream has it masked should the job ever echo it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import shlex
import shutil
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import requests

from orchestrator.run import ray_compat
from orchestrator.run.token import TOKEN_HELP, Token
from orchestrator.cluster.remote_sweep import PROJECT_DIR, RemoteSweep, launch_command, sweep_path_in_project
from orchestrator.run.provenance import PACKAGES
from resweep.errors import UserError
from orchestrator.run.provenance import git_state

DEFAULT_ADDRESS = "http://127.0.0.1:8265"
# Tune's state and checkpoints, on the head (launch expands ~ there). Not the job's working
# directory, which Ray deletes with the cluster: `submit --resume` needs them.
DEFAULT_RESULTS = "~/resweep-results"
CONNECT_TIMEOUT_S = 5.0  # an address where nothing answers fails in seconds, not minutes
# Ray refuses working directories above this (ray_constants.DASHBOARD_CLIENT_MAX_SIZE).
MAX_PACKAGE_BYTES = 100 * 1024**2

# Left out of the job's copy of the project: results, data, caches and anything secret.
EXCLUDED_TOP = {"results", "reports", "data", "test-artifacts", "build", "dist", ".resweep", ".git"}
EXCLUDED_ANYWHERE = {"__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache", "node_modules", ".ipynb_checkpoints"}
EXCLUDED_SUFFIXES = (".db", ".db-wal", ".db-shm", ".pyc", ".egg-info")
# Ray applies these ignore files itself; the copy must not lose the sweep file to one of them.
IGNORE_FILES = {".gitignore", ".rayignore"}
EXCLUDED_NESTED = {"benchmarks/out"}

TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}


def resolve_address(address: str | None) -> str:
    """--address, else $RAY_API_SERVER_ADDRESS / $RAY_ADDRESS when they are HTTP, else the local head."""
    if not address:
        for var in ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS"):
            if os.environ.get(var, "").startswith(("http://", "https://")):
                address = os.environ[var]
                break
    address = (address or DEFAULT_ADDRESS).strip().rstrip("/")
    if "://" not in address:
        address = f"http://{address}"
    if not address.startswith(("http://", "https://")):
        raise UserError(f"--address {address}: not the head's dashboard URL (allowed: http://HEAD:8265)")
    return address


# --- the connection ---


class Cluster:
    """A JobSubmissionClient whose failures a user can cause become one-line `UserError`s."""

    def __init__(self, address: str | None, token: Token | None):
        self.address = resolve_address(address)
        self.token = token
        self._check()
        from ray.job_submission import JobSubmissionClient

        # Ray's client logs each upload and websocket close at INFO; resweep says what matters itself.
        for name in ray_compat.JOB_CLIENT_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)

        with self.errors(), _without_address_env():
            self.client = JobSubmissionClient(self.address, headers=token.headers if token else None)

    def _check(self) -> None:
        """One quick authenticated request, so that each way to fail has its own clear line."""
        try:
            r = requests.get(f"{self.address}/api/version", headers=self.token.headers if self.token else None,
                             timeout=CONNECT_TIMEOUT_S)
        except requests.exceptions.Timeout:
            raise self._unreachable(f"no answer within {CONNECT_TIMEOUT_S:.0f} s") from None
        except requests.exceptions.ConnectionError as exc:
            raise self._unreachable(_connection_reason(exc)) from None
        if r.status_code in (401, 403):
            raise self._refused(r.status_code)
        if r.status_code != 200 or "ray_version" not in r.text:
            raise UserError(f"{self.address}: answers, but not as a Ray dashboard (HTTP {r.status_code} "
                            "for /api/version); give the head's dashboard URL, by default port 8265")

    def _unreachable(self, reason: str) -> UserError:
        return UserError(f"{self.address}: no Ray cluster answers there ({reason}); start one or give the "
                         "head's dashboard URL (--address http://HEAD:8265)")

    def _refused(self, status: int) -> UserError:
        if self.token is None or status == 401:
            return UserError(f"{self.address}: the Ray cluster requires a token and none was found; pass "
                             f"--token-file FILE, set RAY_AUTH_TOKEN, or put it in ~/.ray/auth_token ({TOKEN_HELP})")
        return UserError(f"{self.address}: the Ray cluster refused the token from {self.token.source}; "
                         f"use that cluster's token ({TOKEN_HELP})")

    @contextmanager
    def errors(self) -> Iterator[None]:
        from ray.exceptions import AuthenticationError

        try:
            yield
        except AuthenticationError as exc:
            raise self._refused(401 if "required" in str(exc).lower() else 403) from None
        except requests.exceptions.ConnectionError as exc:
            raise self._unreachable(_connection_reason(exc)) from None

    # --- jobs ---

    def submit(self, sweep: RemoteSweep, *, resume: bool = False, results: str = DEFAULT_RESULTS,
               python: str = "python") -> str:
        """Send the project and the sweep; start the driver on the head. Returns the job id."""
        import tempfile

        with tempfile.TemporaryDirectory(prefix="resweep-job-") as tmp:
            workdir = Path(tmp) / "resweep"
            sweep_rel = stage_project(sweep, workdir)
            entrypoint = shlex.join(launch_command(sweep_rel, sweep.db_url, resume=resume, results=results,
                                                   python=python))
            job_id = f"resweep-{sweep.spec.name}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"
            with self.errors():
                try:
                    return self.client.submit_job(
                        entrypoint=entrypoint,
                        submission_id=job_id,
                        runtime_env={"working_dir": str(workdir), "env_vars": _job_env()},
                        metadata={"resweep_sweep": sweep.spec.name, "resweep_db": sweep.db_shown},
                    )
                except RuntimeError as exc:
                    why = self.mask(_first_line(exc)).replace(sweep.db_url, sweep.db_shown)
                    raise UserError(f"{self.address}: the cluster did not take the job: {why}") from None

    def follow(self, job_id: str, write: Callable[[str], None]) -> str:
        """Stream the job's logs until it ends; returns its final status."""

        pending = ""  # a token split across two chunks must still be masked: write whole lines only

        async def tail() -> None:
            nonlocal pending
            async for chunk in self.client.tail_job_logs(job_id):
                lines, _, pending = (pending + chunk).rpartition("\n")
                if lines:
                    write(self.mask(lines + "\n"))

        with self.errors():
            try:
                asyncio.run(tail())
            except Exception as exc:  # the stream broke (head gone, network); the status says the rest
                pending += f"\nresweep: the log stream ended early ({_first_line(exc)})\n"
            if pending:
                write(self.mask(pending if pending.endswith("\n") else pending + "\n"))
            return self.wait(job_id)

    def wait(self, job_id: str, timeout_s: float = 60.0) -> str:
        """The job's status once it is final (the log stream can close a moment before)."""
        deadline = time.monotonic() + timeout_s
        while True:
            status = str(self.status(job_id))
            if status in TERMINAL or time.monotonic() > deadline:
                return status
            time.sleep(0.5)

    def status(self, job_id: str) -> str:
        with self.errors():
            try:
                return str(self.client.get_job_status(job_id).value)
            except RuntimeError as exc:
                raise self._no_job(job_id, exc) from None

    def jobs(self) -> list:
        """Every job the cluster knows, oldest first (ray JobDetails)."""
        with self.errors():
            return sorted(self.client.list_jobs(), key=lambda j: j.start_time or 0)

    def stop(self, job_id: str) -> bool:
        """Ask the job to stop; False when it had already ended."""
        with self.errors():
            try:
                return bool(self.client.stop_job(job_id))
            except RuntimeError as exc:
                raise self._no_job(job_id, exc) from None

    def _no_job(self, job_id: str, exc: Exception) -> UserError:
        if "404" in str(exc) or "does not exist" in str(exc):
            return UserError(f"{self.address}: no job {job_id} (list them with: python -m orchestrator jobs "
                             f"--address {self.address})")
        return UserError(f"{self.address}: {_first_line(exc)}")

    def alive_nodes(self) -> int:
        """How many nodes of the cluster are alive (Ray's state API on the dashboard)."""
        try:
            r = requests.get(f"{self.address}/api/v0/nodes", params={"limit": 10000},
                             headers=self.token.headers if self.token else None, timeout=CONNECT_TIMEOUT_S * 2)
            rows = r.json()["data"]["result"]["result"]
        except (requests.exceptions.RequestException, ValueError, KeyError, TypeError):
            return 0  # unknown: the driver's own pre-flight check on the cluster still runs
        return sum(row.get("state") == "ALIVE" for row in rows)

    def results_for(self, results: str | None) -> str:
        """--results (or $RESWEEP_RESULTS) as given; without one, the head's ~/resweep-results,
        which only a one-node cluster can use: refused on more nodes."""
        results = results or os.environ.get("RESWEEP_RESULTS") or None
        if results:
            return results
        nodes = self.alive_nodes()
        if nodes > 1:
            raise UserError(f"{self.address}: the cluster has {nodes} nodes, and the default --results "
                            f"{DEFAULT_RESULTS} is a directory on the head that its workers cannot see; pass "
                            "--results s3://BUCKET/PREFIX (object storage, AWS_* set on every node) or "
                            "--results /PATH on a filesystem every node mounts")
        return DEFAULT_RESULTS

    def mask(self, text: str) -> str:
        return text.replace(self.token.value, "***") if self.token else text


def _job_env() -> dict[str, str]:
    """The driver's environment: unbuffered output for `--follow`, and the code's git state, which
    the job's copy of the project (no .git) cannot tell."""
    env = {"PYTHONUNBUFFERED": "1"}
    commit, dirty = git_state()
    if commit is not None and dirty is not None:
        env.update(RESWEEP_GIT_COMMIT=commit, RESWEEP_GIT_DIRTY="1" if dirty else "0")
    return env


@contextmanager
def _without_address_env() -> Iterator[None]:
    """Ray lets $RAY_ADDRESS override the address it is given; the --address given must win."""
    saved = {v: os.environ.pop(v) for v in ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS") if v in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


def _connection_reason(exc: Exception) -> str:
    text = str(exc)
    if "Name or service not known" in text or "nodename nor servname" in text or "NameResolution" in text:
        return "the host name does not resolve"
    if "refused" in text.lower():
        return "connection refused"
    if "timed out" in text.lower():
        return f"no answer within {CONNECT_TIMEOUT_S:.0f} s"
    return "cannot connect"


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


# --- the job's working directory ---


def stage_project(sweep: RemoteSweep, workdir: Path) -> str:
    """Copy the project (code, no results/data/secrets) to `workdir` with the sweep file inside.

    Returns the sweep's path relative to `workdir`: where it was in the project, or
    `sweeps/submitted/NAME` for a file from elsewhere.
    """
    if (PROJECT_DIR / "pyproject.toml").is_file():
        shutil.copytree(PROJECT_DIR, workdir, ignore=_ignore, symlinks=True)
    else:  # resweep installed as packages (site-packages): take just those
        workdir.mkdir(parents=True)
        for name in PACKAGES:
            if (PROJECT_DIR / name).is_dir():
                shutil.copytree(PROJECT_DIR / name, workdir / name, ignore=_ignore, symlinks=True)
    rel = sweep_path_in_project(sweep.path) or f"sweeps/submitted/{sweep.path.name}"
    target = workdir / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(sweep.text)  # exactly the text that was validated
    _check_size(workdir)
    return rel


def _ignore(directory: str, names: list[str]) -> set[str]:
    here = Path(directory).resolve()
    top = here == PROJECT_DIR
    rel = here.relative_to(PROJECT_DIR) if here.is_relative_to(PROJECT_DIR) else None
    out = set()
    for name in names:
        path = here / name
        if (
            (top and name in EXCLUDED_TOP)
            or name in EXCLUDED_ANYWHERE
            or name in IGNORE_FILES
            or name.endswith(EXCLUDED_SUFFIXES)
            or (rel is not None and (rel / name).as_posix() in EXCLUDED_NESTED)
            or (path.is_dir() and (path / "pyvenv.cfg").exists())  # a virtual environment
        ):
            out.add(name)
    return out


def _check_size(workdir: Path) -> None:
    sizes: dict[str, int] = {}
    for p in workdir.rglob("*"):
        if p.is_file() and not p.is_symlink():
            top = p.relative_to(workdir).parts[0]
            sizes[top] = sizes.get(top, 0) + p.stat().st_size
    total = sum(sizes.values())
    if total > MAX_PACKAGE_BYTES:
        big = ", ".join(f"{k} ({v / 1024**2:.0f} MiB)" for k, v in sorted(sizes.items(), key=lambda kv: -kv[1])[:3])
        raise UserError(f"{PROJECT_DIR}: the project is {total / 1024**2:.0f} MiB, more than Ray's "
                        f"{MAX_PACKAGE_BYTES // 1024**2} MiB for a job; move large files out of it (largest: {big})")
