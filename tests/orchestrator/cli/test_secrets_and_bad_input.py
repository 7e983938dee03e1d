"""Hostile and mistaken input through the real commands: a database password of any shape is
never printed, an object store's credentials and query string are never echoed, and every bad
input is one line on stderr, exit status 2, with no traceback and nothing created (no database
file made by a command that then refuses, no directory left by an export that failed)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from db.engine import get_engine
from orchestrator.cli.app import app
from tests.db.known import make_sweep
from tests.orchestrator.conftest import run_cli

GOOD = """\
name: n1
dataset: synthetic
model: cifar
synthetic: {num_train: 64, num_test: 32, image_size: 8}
grid:
  depth: [8]
  shortcut: [none]
train:
  epochs: 1
"""

# Every piece of every password says SECRET; the characters between them end a URL's parts.
PASSWORDS = [
    "SECRET1/SECRET2",
    "SECRET1@SECRET2",
    "SECRET1%2FSECRET2",
    "SECRET1:SECRET2",
    "SECRET1?SECRET2#SECRET3",
    "SECRET1/SECRET2@SECRET3:SECRET4&SECRET5",
]
SHAPES = [
    "postgresql://u:{pw}@127.0.0.1:1/x",  # port 1: connection refused at once, the URL in the error
    "postgresql://u:{pw}@127.0.0.1:99x/x",  # a bad port: refused before connecting
    "mysql://u:{pw}@127.0.0.1/x",  # an unsupported backend
    "postgresql://u@127.0.0.1:1/x?sslmode=disable&password={pw}",
]
HOSTILE_URLS = [shape.format(pw=pw) for shape in SHAPES for pw in PASSWORDS]


def invoke(*args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(app, list(args), env=env)


def assert_one_line_refusal(result, *hidden: str) -> str:
    """Exit 2, one `error:` line on stderr, nothing on stdout, none of `hidden` anywhere."""
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert "Traceback" not in result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert result.stdout == ""
    for text in hidden:
        assert text not in result.output, result.output
    return lines[0]


@pytest.fixture
def sweep_file(tmp_path) -> Path:
    path = tmp_path / "good.yaml"
    path.write_text(GOOD)
    return path


@pytest.fixture
def experiment_dir(tmp_path) -> Path:
    """A directory `db import` takes for a sweep's results (it holds an experiment state file)."""
    path = tmp_path / "results" / "n1"
    path.mkdir(parents=True)
    (path / "experiment_state-2026-01-01_00-00-00.json").write_text("{}")
    return path


def commands(tmp_path: Path, sweep_file: Path, experiment_dir: Path) -> dict[str, list[str]]:
    """Every command that takes --db, with arguments that reach the database."""
    return {
        "launch": ["launch", str(sweep_file)],
        "launch --resume": ["launch", str(sweep_file), "--resume"],
        "resume": ["resume", "n1"],
        "status": ["status"],
        "status NAME": ["status", "n1"],
        "query": ["query", "SELECT 1"],
        "report": ["report", "n1", "--out", str(tmp_path / "report")],
        "export": ["export", "n1", "--out", str(tmp_path / "export")],
        "model": ["model", "1", "--out", str(tmp_path / "m.pt")],
        "db upgrade": ["db", "upgrade"],
        "db import": ["db", "import", str(experiment_dir)],
        "submit": ["submit", str(sweep_file), "--address", "http://127.0.0.1:1"],
    }


@pytest.mark.parametrize("command", ["launch", "launch --resume", "resume", "status", "status NAME", "query",
                                     "report", "export", "model", "db upgrade", "db import", "submit"])
def test_no_command_prints_a_database_password_of_any_shape(command, tmp_path, sweep_file, experiment_dir):
    args = commands(tmp_path, sweep_file, experiment_dir)[command]
    for url in HOSTILE_URLS:
        for given in (["--db", url], []):  # on the command line, and in $RESWEEP_DB
            result = invoke(*args, *given, env=None if given else {"RESWEEP_DB": url})
            line = assert_one_line_refusal(result, "SECRET")
            if command != "submit":  # submit names the unreachable Ray address, not the database
                assert "***" in line or "more than one '@'" in line, (url, line)
    assert not (tmp_path / "report").exists() and not (tmp_path / "export").exists()


def _refused(url: str) -> bool:
    from db.engine import resolve_url
    from db.errors import BadUrlError

    try:
        resolve_url(url)
    except BadUrlError:
        return True
    return False


@pytest.mark.parametrize("url", [u for u in HOSTILE_URLS if _refused(u)])
def test_the_dashboard_command_refuses_a_bad_url_without_its_password(url):
    # A well-formed URL starts the server, which reports the database on its page (tests/dashboard).
    assert_one_line_refusal(invoke("dashboard", "--db", url), "SECRET")


@pytest.mark.parametrize("password", PASSWORDS)
def test_cluster_scripts_hold_the_password_only_where_the_driver_reads_it(password, sweep_file):
    url = f"postgresql://u:{password}@db.example:5432/x"
    result = invoke("slurm", str(sweep_file), "--nodes", "1", "--gpus-per-node", "0", "--db", url)
    if result.exit_code == 2:  # an '@' in the password: refused in one line
        assert_one_line_refusal(result, "SECRET")
        return
    assert result.exit_code == 0, result.output
    leaking = [line for line in result.stdout.splitlines() if "SECRET" in line]
    assert [line.split("=", 1)[0] for line in leaking] == ["DB_URL"]  # the driver's --db, nowhere else
    assert "SECRET" not in result.stderr
    manifest = invoke("k8s", str(sweep_file), "--workers", "0", "--db", url)
    assert manifest.exit_code == 0, manifest.output
    leaking = [line.strip() for line in manifest.stdout.splitlines() if "SECRET" in line]
    assert len(leaking) == 1 and leaking[0].startswith("url: ")  # the Secret's url, given to the head as $RESWEEP_DB


@pytest.mark.parametrize("url", [
    "mysql://u:Se/cretPW1@127.0.0.1/x",
    "postgresql://u:Se/cretPW1@127.0.0.1:99x/x",
    "postgresql://u:Se/cret@PW1@host/x",
    "postgresql://u:Se/cretPW1@127.0.0.1:1/x",
])  # fmt: skip
def test_status_in_its_own_process_never_prints_the_password(url, tmp_path):
    done = run_cli("status", "--db", url, cwd=tmp_path, timeout=120)
    assert done.returncode == 2 and done.stdout == ""
    assert len(done.stderr.splitlines()) == 1 and done.stderr.startswith("error: ")
    assert "cret" not in done.stderr and "PW1" not in done.stderr


# --- Object-store URIs --------------------------------------------------------------------------

S3_WITH_SECRETS = [
    "s3://bkt/p?endpoint_override=127.0.0.1:1&scheme=http&access_key=AKIA&secret_key=XYZZY",
    "s3://bkt/p?session_token=XYZZY",
    "s3://AKIA:XY/ZZY@bkt/p",
]


@pytest.mark.parametrize("uri", S3_WITH_SECRETS)
def test_a_results_uri_with_credentials_is_refused_unechoed_and_creates_no_database(uri, tmp_path, sweep_file):
    db = tmp_path / "new.db"
    for args in (["launch", str(sweep_file), "--db", str(db), "--results", uri],
                 ["submit", str(sweep_file), "--db", f"sqlite:///{db}", "--results", uri,
                  "--address", "http://127.0.0.1:1"],
                 ["slurm", str(sweep_file), "--nodes", "1", "--gpus-per-node", "0", "--db", f"sqlite:///{db}",
                  "--results", uri],
                 ["k8s", str(sweep_file), "--db", f"sqlite:///{db}", "--results", uri, "--aws-secret", "aws"],
                 ["db", "import", uri, "--db", str(db)]):  # fmt: skip
        line = assert_one_line_refusal(invoke(*args), "XY", "AKIA")
        assert "credentials do not belong in the URI" in line, line
    env_given = invoke("launch", str(sweep_file), "--db", str(db), env={"RESWEEP_RESULTS": uri})
    assert_one_line_refusal(env_given, "XY", "AKIA")
    assert not db.exists()


def test_a_results_uri_that_cannot_be_opened_is_one_line_without_its_query_string(tmp_path, sweep_file):
    db = tmp_path / "new.db"
    result = invoke("launch", str(sweep_file), "--db", str(db), "--results",
                    "gopher://bkt/p?endpoint_override=hidden.example:1&region=somewhere")
    line = assert_one_line_refusal(result, "hidden.example", "somewhere")
    assert "gopher://bkt/p/n1?..." in line
    assert not db.exists()


# --- Files that are not databases, numbers past any id, --out where nothing can be written -------


@pytest.fixture
def not_a_database(tmp_path) -> Path:
    path = tmp_path / "notes.db"
    path.write_text("these are notes, not a SQLite database\n" * 20)
    return path


@pytest.mark.parametrize("command", ["launch", "status", "status NAME", "report", "export", "model", "db upgrade",
                                     "db import", "resume"])
def test_a_file_that_is_not_a_database_is_one_line_naming_it(command, not_a_database, tmp_path, sweep_file,
                                                           experiment_dir):
    before = not_a_database.read_bytes()
    args = commands(tmp_path, sweep_file, experiment_dir)[command]
    line = assert_one_line_refusal(invoke(*args, "--db", str(not_a_database)))
    assert f"cannot open sqlite:///{not_a_database}: file is not a database" in line
    assert not_a_database.read_bytes() == before
    assert not list(tmp_path.glob("notes.db-*"))  # no -wal, no -shm


def test_a_file_that_is_not_a_database_in_its_own_process(not_a_database, tmp_path):
    done = run_cli("status", "--db", str(not_a_database), cwd=tmp_path, timeout=120)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert str(not_a_database) in done.stderr and "file is not a database" in done.stderr


@pytest.fixture
def known_sqlite(tmp_path) -> str:
    url = f"sqlite:///{tmp_path / 'known.db'}"
    engine = get_engine(url)
    make_sweep(engine)
    engine.dispose()
    return url


@pytest.mark.parametrize("trial_id", ["999999999999999999999999", "9223372036854775808", "0", "-1",
                                      "1" + "0" * 400])
def test_a_trial_id_no_database_can_hold_is_one_line(trial_id, known_sqlite, tmp_path):
    result = invoke("model", "--out", str(tmp_path / "m.pt"), "--db", known_sqlite, "--", trial_id)
    line = assert_one_line_refusal(result)
    assert line.startswith("error: model: no trial ")
    assert trial_id.startswith("-") or "trial ids are 1 to 9223372036854775807" in line  # "-1": not an id, no key
    assert len(line) < 400 and not (tmp_path / "m.pt").exists()


@pytest.mark.postgres
def test_a_trial_id_past_bigint_is_one_line_on_postgresql(pg_url, tmp_path):
    get_engine(pg_url).dispose()
    result = invoke("model", "999999999999999999999999", "--out", str(tmp_path / "m.pt"), "--db", pg_url)
    assert "no trial 999999999999999999999999" in assert_one_line_refusal(result)


def test_export_below_a_file_or_under_proc_and_sys_is_one_line_and_makes_nothing(known_sqlite, tmp_path):
    a_file = tmp_path / "a-file"
    a_file.write_text("keep me\n")
    for out in (a_file, a_file / "below", a_file / "below" / "deeper"):
        line = assert_one_line_refusal(invoke("export", "known", "--out", str(out), "--db", known_sqlite))
        assert f"--out {out}: {a_file} is a file" in line
    assert a_file.read_text() == "keep me\n"
    for out in (Path("/proc/resweep-export/x"), Path("/sys/resweep-export"), Path("/proc/self/resweep-export")):
        line = assert_one_line_refusal(invoke("export", "known", "--out", str(out), "--db", known_sqlite))
        assert line.startswith(f"error: --out {out}: ") and "give a directory you can write" in line
        assert not out.exists() and not out.parent.exists() or out.parent in (Path("/proc"), Path("/sys"),
                                                                               Path("/proc/self"))
    nested = tmp_path / "new" / "dirs" / "export"
    done = invoke("export", "known", "--out", str(nested), "--db", known_sqlite)
    assert done.exit_code == 0, done.output
    assert sorted(p.name for p in nested.iterdir()) == ["layer_stats.csv", "metrics.csv", "metrics_wide.csv",
                                                        "sweep.json", "trials.csv"]


def test_export_that_fails_after_making_its_directory_leaves_none(known_sqlite, tmp_path, monkeypatch):
    import orchestrator.results.export as export

    def full_disk(engine, trials, ids, staging, fmt):  # the disk fills while the tables are written
        (staging / f"metrics.{fmt}").write_text("half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(export, "_write_tables", full_disk)
    out = tmp_path / "new" / "export"
    line = assert_one_line_refusal(invoke("export", "known", "--out", str(out), "--db", known_sqlite))
    assert line == f"error: --out {out}: cannot write there (No space left on device); give a directory you " \
                   "can write, new or existing"
    assert not (tmp_path / "new").exists()


# --- Nothing created by a command that refuses --------------------------------------------------


def test_commands_that_refuse_leave_no_new_database_file(tmp_path, sweep_file):
    db = tmp_path / "never.db"
    refusals = [
        ["db", "import", str(tmp_path / "missing")],
        ["db", "import", str(tmp_path)],  # a directory without a sweep's results
        ["db", "import", "gopher://x/y"],
        ["launch", str(sweep_file), "--results", "gopher://bkt/p"],
        ["launch", str(sweep_file), "--resume"],
        ["resume", "n1"],
        ["status"],
        ["status", "n1"],
        ["query", "SELECT * FROM sweeps"],
        ["report", "n1"],
        ["export", "n1", "--out", str(tmp_path / "export")],
        ["model", "1", "--out", str(tmp_path / "m.pt")],
    ]
    for args in refusals:
        assert_one_line_refusal(invoke(*args, "--db", str(db)))
        assert not db.exists() and not list(tmp_path.glob("never.db*")), args
    assert not (tmp_path / "export").exists() and not (tmp_path / "m.pt").exists()


def test_query_limit_is_bounded(known_sqlite):
    for limit in ("0", "-1", "100001", "1" + "0" * 40):
        line = assert_one_line_refusal(invoke("query", "SELECT 1", "--db", known_sqlite, f"--limit={limit}"))
        assert "give 1 to 100000 rows" in line and len(line) < 300
    big = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT 100005) SELECT x FROM c"
    done = invoke("query", big, "--db", known_sqlite, "--limit", "100000", "-f", "csv")
    assert done.exit_code == 0 and len(done.stdout.splitlines()) == 1 + 100_000
    assert "output cut at 100000 rows; `python -m orchestrator export NAME` writes whole tables" in done.stderr
    done = invoke("query", big, "--db", known_sqlite, "--limit", "3", "-f", "csv")
    assert "output cut at 3 rows; --limit N shows more (up to 100000)" in done.stderr


def test_a_sweep_file_refusal_comes_before_any_database(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(GOOD.replace("dataset: synthetic", "dataset: nope"))
    db = tmp_path / "never.db"
    assert_one_line_refusal(invoke("launch", str(bad), "--db", str(db)))
    assert not db.exists()
