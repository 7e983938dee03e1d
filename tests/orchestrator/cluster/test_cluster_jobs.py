"""`submit`, `jobs` and `stop` against a real Ray head with token authentication on.

The module starts its own head on 127.0.0.1 (`ray start --head --block`, RAY_AUTH_MODE=token, its
own ports and temp dir) and ends it by signalling that one process group: never `ray stop`, which
would stop every Ray of this user on the machine, other tests' included.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import requests
import sqlalchemy as sa
from typer.testing import CliRunner

from db.engine import Database
from orchestrator.cluster import jobs_api, remote_sweep
from orchestrator.cli.app import app
from orchestrator.run.token import Token, find_token
from resweep.errors import UserError
from tests.orchestrator.cluster_support import write_sweep

pytestmark = pytest.mark.ray

REPO = Path(__file__).resolve().parents[3]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Head:
    def __init__(self, address: str, token: str, proc: subprocess.Popen):
        self.address, self.token, self.proc = address, token, proc

    def client(self):
        from ray.job_submission import JobSubmissionClient

        return JobSubmissionClient(self.address, headers={"Authorization": f"Bearer {self.token}"})

    def job_ids(self) -> set[str]:
        return {j.submission_id for j in self.client().list_jobs()}


@pytest.fixture(scope="module")
def head():
    token = secrets.token_hex(32)
    temp_dir = tempfile.mkdtemp(prefix="rs-ray-", dir="/tmp")  # short: Ray's socket paths have a length limit
    dashboard_port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token, RAY_USAGE_STATS_ENABLED="0")
    ports = {"--port": free_port(), "--dashboard-port": dashboard_port,
             "--dashboard-agent-listen-port": free_port(), "--dashboard-agent-grpc-port": free_port(),
             "--runtime-env-agent-port": free_port(), "--metrics-export-port": free_port(),
             "--ray-client-server-port": free_port(), "--node-manager-port": free_port(),
             "--object-manager-port": free_port()}
    ray_cli = shutil.which("ray", path=os.path.dirname(sys.executable)) or "ray"
    cmd = [ray_cli, "start", "--head", "--block", "--node-ip-address", "127.0.0.1", "--dashboard-host", "127.0.0.1",
           "--include-dashboard", "true", "--num-cpus", "1", "--num-gpus", "0", "--object-store-memory", "200000000",
           "--temp-dir", temp_dir, "--disable-usage-stats"]
    cmd += [str(x) for kv in ports.items() for x in kv]
    log = open(Path(temp_dir) / "head.log", "w")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    address = f"http://127.0.0.1:{dashboard_port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, (Path(temp_dir) / "head.log").read_text()[-3000:]
            try:
                r = requests.get(f"{address}/api/jobs/", headers={"Authorization": f"Bearer {token}"}, timeout=2)
                if r.status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, "the test's Ray head did not come up in 90 s"
            time.sleep(0.5)
        yield Head(address, token, proc)
    finally:
        # `ray start --block` shuts its node down on SIGTERM; the group kill is for anything left behind.
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=45)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        log.close()
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """No token from this machine's environment or home: each test says where its token comes from."""
    for var in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "RESWEEP_DB"):
        monkeypatch.delenv(var, raising=False)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    return home


def cli(*args: str):
    return CliRunner().invoke(app, list(args))


def one_line(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


# --- the whole way: submit --follow, results in PostgreSQL, jobs lists it ---


@pytest.mark.postgres
@pytest.mark.slow
def test_submit_follow_runs_the_sweep_and_its_results_land_in_postgres(head, pg_url, tmp_path, clean_env):
    sweep = write_sweep(tmp_path, "cluster-e2e")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(RAY_AUTH_TOKEN=head.token, HOME=str(clean_env), RAY_USAGE_STATS_ENABLED="0")
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator", "submit", str(sweep), "--address", head.address, "--db", pg_url,
         "--results", str(tmp_path / "results"), "--follow"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "submitted resweep-cluster-e2e-" in proc.stdout and "(1 trials)" in proc.stdout
    assert "Sweep cluster-e2e finished" in proc.stdout  # the driver's own output, streamed
    assert proc.stdout.rstrip().endswith("SUCCEEDED")
    assert head.token not in out
    assert "Uploading package" not in proc.stderr  # Ray's client chatter is kept quiet

    engine = sa.create_engine(pg_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text(
                "SELECT status, epochs, depth, shortcut, final_test_err FROM trial_results WHERE sweep = 'cluster-e2e'"
            )).all()
            sweep_row = conn.execute(
                sa.text("SELECT status, git_commit FROM sweeps WHERE name = 'cluster-e2e'")
            ).one()
    finally:
        engine.dispose()
    assert sweep_row.status == "finished"
    # The job ran from a copy without .git: the submitter's commit still reaches the sweep row.
    head_commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                                 check=True).stdout.strip()
    assert sweep_row.git_commit == head_commit
    assert [(r.status, r.epochs, r.depth, r.shortcut) for r in rows] == [("terminated", 2, 8, "A")]
    assert 0.0 <= rows[0].final_test_err <= 1.0

    listed = cli("jobs", "--address", head.address, "--token-file", str(_token_file(tmp_path, head.token)))
    assert listed.exit_code == 0, listed.output
    line = next(l for l in listed.stdout.splitlines() if l.startswith("resweep-cluster-e2e-"))
    assert " SUCCEEDED " in line and " cluster-e2e " in line
    assert head.token not in listed.output
    # The entrypoint is shown with the database password hidden (this one has none) and the URL intact.
    assert "launch sweeps/submitted/cluster-e2e.yaml --db postgresql+psycopg://postgres@" in line


def test_follow_exits_1_when_the_job_fails_and_shows_why(head, tmp_path, clean_env, monkeypatch):
    # The head cannot reach this database: the driver ends with its one-line error, the job FAILS.
    monkeypatch.setenv("RAY_AUTH_TOKEN", head.token)
    dead_db = f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere"
    result = cli("submit", str(write_sweep(tmp_path, "cluster-fails")), "--address", head.address, "--db", dead_db,
                 "--results", str(tmp_path / "results"), "--follow")
    assert result.exit_code == 1, result.output
    assert "error: " in result.stdout and "127.0.0.1" in result.stdout  # the driver's own message, streamed
    assert result.stdout.rstrip().endswith("FAILED")
    assert head.token not in result.output


def _token_file(directory: Path, token: str) -> Path:
    path = directory / "token"
    path.write_text(token + "\n")
    path.chmod(0o600)
    return path


# --- refusals: one line, exit 2, nothing run ---


def test_submit_without_a_token_is_refused_and_nothing_runs(head, tmp_path, clean_env):
    before = head.job_ids()
    result = cli("submit", str(write_sweep(tmp_path)), "--address", head.address, "--db", f"sqlite:///{tmp_path}/r.db")
    assert result.exit_code == 2
    assert one_line(result) == (f"error: {head.address}: the Ray cluster requires a token and none was found; pass "
                                "--token-file FILE, set RAY_AUTH_TOKEN, or put it in ~/.ray/auth_token (on the head "
                                "node, `ray get-auth-token` prints it)")
    assert result.stdout == ""
    assert head.job_ids() == before


def test_submit_with_a_wrong_token_file_is_refused_without_showing_either_token(head, tmp_path, clean_env):
    wrong = secrets.token_hex(32)
    before = head.job_ids()
    result = cli("submit", str(write_sweep(tmp_path)), "--address", head.address, "--db", f"sqlite:///{tmp_path}/r.db",
                 "--token-file", str(_token_file(tmp_path, wrong)))
    assert result.exit_code == 2
    line = one_line(result)
    assert f"refused the token from --token-file {tmp_path / 'token'}" in line
    assert wrong not in result.output and head.token not in result.output
    assert head.job_ids() == before


def test_a_wrong_token_in_the_environment_is_refused_too(head, tmp_path, clean_env, monkeypatch):
    monkeypatch.setenv("RAY_AUTH_TOKEN", "not-the-token")
    result = cli("jobs", "--address", head.address)
    assert result.exit_code == 2
    assert "refused the token from $RAY_AUTH_TOKEN" in one_line(result) and "not-the-token" not in result.output


def test_token_from_the_default_file_in_home_is_used(head, clean_env):
    (clean_env / ".ray").mkdir()
    (clean_env / ".ray" / "auth_token").write_text(head.token)
    result = cli("jobs", "--address", head.address)
    assert result.exit_code == 0, result.output
    assert head.token not in result.output


def test_an_address_where_nothing_listens_fails_in_seconds(tmp_path, clean_env):
    address = f"http://127.0.0.1:{free_port()}"
    start = time.monotonic()
    result = cli("submit", str(write_sweep(tmp_path)), "--address", address, "--db", f"sqlite:///{tmp_path}/r.db")
    assert time.monotonic() - start < 10
    assert result.exit_code == 2
    assert one_line(result) == (f"error: {address}: no Ray cluster answers there (connection refused); start one or "
                                "give the head's dashboard URL (--address http://HEAD:8265)")


def test_a_relative_sqlite_database_is_refused_before_contacting_the_cluster(tmp_path, clean_env):
    # The address is dead: the refusal must come first, from the URL alone.
    result = cli("submit", str(write_sweep(tmp_path)), "--address", f"http://127.0.0.1:{free_port()}",
                 "--db", "sqlite:///resweep.db")
    assert result.exit_code == 2
    line = one_line(result)
    assert "would keep the results on the cluster's head node" in line and "PostgreSQL URL" in line
    assert "absolute path on a filesystem every node shares" in line


def test_an_invalid_sweep_is_refused_before_anything_is_sent(head, tmp_path, clean_env, monkeypatch):
    monkeypatch.setenv("RAY_AUTH_TOKEN", head.token)
    bad = tmp_path / "bad.yaml"
    bad.write_text(write_sweep(tmp_path).read_text().replace("block: [basic]", "block: [wide]"))
    before = head.job_ids()
    result = cli("submit", str(bad), "--address", head.address, "--db", f"sqlite:///{tmp_path}/r.db")
    assert result.exit_code == 2
    assert "grid.block[0]: 'wide' is not allowed" in result.stderr
    assert head.job_ids() == before


# --- stop, and the log stream never shows the token ---


def test_stop_ends_a_running_job(head, clean_env, monkeypatch):
    monkeypatch.setenv("RAY_AUTH_TOKEN", head.token)
    job_id = head.client().submit_job(entrypoint="sleep 120")
    result = cli("stop", job_id, "--address", head.address)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"{job_id}: stop requested")
    ray_cluster = jobs_api.Cluster(head.address, find_token())
    assert ray_cluster.wait(job_id, timeout_s=30) == "STOPPED"
    again = cli("stop", job_id, "--address", head.address)
    assert again.exit_code == 0 and "already ended (STOPPED)" in again.stdout


def test_stop_of_an_unknown_job_is_one_line(head, clean_env, monkeypatch):
    monkeypatch.setenv("RAY_AUTH_TOKEN", head.token)
    result = cli("stop", "no-such-job", "--address", head.address)
    assert result.exit_code == 2
    assert one_line(result).startswith(f"error: {head.address}: no job no-such-job")


def test_followed_logs_mask_the_token(head, clean_env, monkeypatch):
    monkeypatch.setenv("RAY_AUTH_TOKEN", head.token)
    job_id = head.client().submit_job(entrypoint='echo "the job says $ECHO_ME"',
                                      runtime_env={"env_vars": {"ECHO_ME": head.token}})
    chunks: list[str] = []
    status = jobs_api.Cluster(head.address, find_token()).follow(job_id, chunks.append)
    text = "".join(chunks)
    assert status == "SUCCEEDED"
    assert "the job says ***" in text and head.token not in text


# --- where the token comes from; what the job's copy of the project holds ---


def test_token_sources_in_order(tmp_path, clean_env, monkeypatch):
    assert find_token() is None
    (clean_env / ".ray").mkdir()
    (clean_env / ".ray" / "auth_token").write_text("from-home\n")
    assert find_token().value == "from-home"
    path_file = tmp_path / "by-path"
    path_file.write_text("from-path")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(path_file))
    assert find_token().value == "from-path"
    monkeypatch.setenv("RAY_AUTH_TOKEN", "from-env")
    assert find_token().source == "$RAY_AUTH_TOKEN"
    flag = _token_file(tmp_path, "from-flag")
    token = find_token(flag)
    assert token.value == "from-flag" and token.source == f"--token-file {flag}"
    assert "from-flag" not in repr(token) and "from-flag" not in str(token)


@pytest.mark.parametrize("content, message", [(None, "no such file"), ("  \n", "the token file is empty")])
def test_unusable_token_file_is_one_line(tmp_path, clean_env, content, message):
    path = tmp_path / "token"
    if content is not None:
        path.write_text(content)
    result = cli("jobs", "--address", f"http://127.0.0.1:{free_port()}", "--token-file", str(path))
    assert result.exit_code == 2
    assert one_line(result).startswith(f"error: --token-file {path}: {message}")


def test_the_jobs_copy_of_the_project_leaves_out_results_data_and_secrets(tmp_path, monkeypatch):
    project = tmp_path / "project"
    for rel in ("pyproject.toml", "orchestrator/__init__.py", "orchestrator/__pycache__/x.pyc", "trainers/a.py",
                "results/s/state.json", "reports/r.png", "data/cifar.bin", ".git/HEAD", "resweep.db",
                ".venv/pyvenv.cfg", "env2/pyvenv.cfg", ".resweep/slurm-1/ray_auth_token", "benchmarks/out/x.csv",
                "benchmarks/b.py", "sweeps/mine.yaml", ".gitignore", "docs/data/keep.md"):
        (project / rel).parent.mkdir(parents=True, exist_ok=True)
        (project / rel).write_text("x")
    (project / "sweeps" / "mine.yaml").write_text(write_sweep(tmp_path).read_text())
    monkeypatch.setattr(jobs_api, "PROJECT_DIR", project)
    monkeypatch.setattr(remote_sweep, "PROJECT_DIR", project)

    inside = remote_sweep.prepare(project / "sweeps" / "mine.yaml", Database(f"sqlite:///{tmp_path}/r.db"))
    rel = jobs_api.stage_project(inside, tmp_path / "staged")
    staged = {p.relative_to(tmp_path / "staged").as_posix() for p in (tmp_path / "staged").rglob("*") if p.is_file()}
    assert rel == "sweeps/mine.yaml"
    assert staged == {"pyproject.toml", "orchestrator/__init__.py", "trainers/a.py", "benchmarks/b.py",
                      "sweeps/mine.yaml", "docs/data/keep.md"}

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    outside = remote_sweep.prepare(write_sweep(elsewhere), Database(f"sqlite:///{tmp_path}/r.db"))
    rel = jobs_api.stage_project(outside, tmp_path / "staged2")
    assert rel == "sweeps/submitted/cluster-tiny.yaml"
    assert (tmp_path / "staged2" / rel).read_text() == outside.text


def test_the_address_option_beats_ray_address_in_the_environment(monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", "http://10.0.0.9:8265")
    assert jobs_api.resolve_address("http://127.0.0.1:1234/") == "http://127.0.0.1:1234"
    assert jobs_api.resolve_address(None) == "http://10.0.0.9:8265"
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.9:6379")  # a GCS address, not a dashboard: ignored
    assert jobs_api.resolve_address(None) == jobs_api.DEFAULT_ADDRESS
    assert jobs_api.resolve_address("head:8265") == "http://head:8265"
    with pytest.raises(UserError, match="not the head's dashboard URL"):
        jobs_api.resolve_address("ray://head:10001")


def test_a_token_split_across_log_chunks_is_still_masked():
    from ray.job_submission import JobStatus

    class Client:  # the two calls `follow` makes, as the Jobs API answers them
        async def tail_job_logs(self, job_id):
            for chunk in ["line one\nthe token abcdef", "123456 was here\nno newline at the end"]:
                yield chunk

        def get_job_status(self, job_id):
            return JobStatus.SUCCEEDED

    ray_cluster = object.__new__(jobs_api.Cluster)  # no connection needed for this
    ray_cluster.address, ray_cluster.client = "http://x:8265", Client()
    ray_cluster.token = Token("abcdef123456", "t")
    out: list[str] = []
    assert ray_cluster.follow("job", out.append) == "SUCCEEDED"
    assert "".join(out) == "line one\nthe token *** was here\nno newline at the end\n"
