"""The trackers' mirrors and the model files of real sweeps, read back with each tool's own reader.

The session's tiny sweep on scikit-learn's digits (conftest.py: plain-8 and ResNet-8 A, 2 epochs,
probes every epoch), launched once through the real command line on the session's Ray cluster
with `loggers: [tensorboard, {mlflow: {log_model: true}}, wandb]`: TensorBoard is read with its own
EventAccumulator and HParams plugin protos, MLflow with MlflowClient (a local SQLite store),
W&B offline runs with `wandb leet inspect --json` (wandb's reader of its .wandb transaction logs).
A second sweep is stopped with Ctrl-C while its trials train, for the model of an interrupted trial.
"""

from __future__ import annotations

import json
import signal
import subprocess
import textwrap
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from resweep.paper import GRID_AXES as AXES
from tests.orchestrator.conftest import run_cli, start_cli
from tests.orchestrator.results.conftest import EPOCHS, NAME, DigitsSweep
from tests.orchestrator.run.test_sweeps_e2e import rows

pytestmark = [pytest.mark.ray, pytest.mark.slow]

RAY_INTERNALS = ("done", "pid", "should_checkpoint", "training_iteration", "time_this_iter_s", "config")


class Sweep:
    def __init__(self, root: Path, url: str, mlflow_uri: str, out: str):
        self.root, self.url, self.mlflow_uri, self.out = root, url, mlflow_uri, out
        self.results = root / "results" / NAME

    def trials(self) -> dict[str, dict]:
        """label -> the trial's id, key, config, final test error and per-epoch test errors."""
        from resweep.paper import trial_label

        out = {}
        for trial_id, key, config, final in rows(
                self.url, "SELECT t.id, t.trial_key, t.config, r.final_test_err FROM trials t "
                          "JOIN trial_results r ON r.trial_id = t.id"):
            config = json.loads(config) if isinstance(config, str) else config
            errs = rows(self.url, "SELECT epoch, value FROM metrics WHERE trial_id = :t AND name = 'test_err' "
                                  "ORDER BY epoch", t=trial_id)
            layers = rows(self.url, "SELECT epoch, layer, name, std FROM layer_stats WHERE trial_id = :t", t=trial_id)
            out[trial_label(config)] = {"id": trial_id, "key": key, "config": config, "final_test_err": final,
                                        "test_err": dict(errs), "layers": layers}
        return out


@pytest.fixture(scope="module")
def sweep(digits_sweep: DigitsSweep) -> Sweep:
    return Sweep(digits_sweep.root, digits_sweep.url, digits_sweep.mlflow_uri, digits_sweep.out)


# --- W&B ------------------------------------------------------------------------------------------


def wandb_records(run_file: Path) -> list[dict]:
    done = subprocess.run(["wandb", "leet", "inspect", "--json", str(run_file)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]


def test_every_wandb_offline_run_is_complete_in_its_trials_results_directory(sweep):
    trials = sweep.trials()
    by_key = {t["key"]: (label, t) for label, t in trials.items()}
    runs = sorted(p for p in sweep.results.glob("*/wandb/offline-run-*") if not p.is_symlink())
    assert len(runs) == len(trials) == 2
    for run in runs:
        (run_file,) = run.glob("run-*.wandb")
        records = wandb_records(run_file)
        kinds = [r["type"] for r in records]
        assert kinds[0] == "header" and "exit" in kinds, kinds  # the whole run, through wandb.finish()
        (info,) = [r["run"] for r in records if r["type"] == "run"]
        label, trial = by_key[info["run_id"]]
        assert info["display_name"] == label
        assert set(info["tags"]) == {f"sweep:{NAME}", f"trial_id:{trial['id']}"}
        config = info["config"]["update"]
        assert {k: config[k]["value"] if isinstance(config[k], dict) else config[k] for k in AXES} == {
            k: trial["config"][k] for k in AXES}
        history = [r["history"]["item"] for r in records if r["type"] == "history"]
        assert [h["epoch"] for h in history] == list(range(1, EPOCHS + 1))  # every epoch
        assert {h["epoch"]: h["test_err"] for h in history} == trial["test_err"]
        assert all(len([k for k in h if k.startswith("layer_std/")]) == 7 for h in history)  # 7 3x3 convs
        assert not {k for h in history for k in h} & set(RAY_INTERNALS)


def test_launch_prints_no_error_line_for_the_wandb_logging_actors(sweep):
    assert "_WandbLoggingActor" not in sweep.out and "max_restarts" not in sweep.out


# --- TensorBoard ----------------------------------------------------------------------------------


def test_tensorboard_names_runs_by_label_and_its_hparams_plugin_lists_every_axis(sweep):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    trials = sweep.trials()
    logdir = sweep.results / "tensorboard"
    assert sorted(p.name for p in logdir.iterdir()) == sorted(trials)  # one run per trial, by its label
    for label, trial in trials.items():
        acc = EventAccumulator(str(logdir / label))
        acc.Reload()
        content = acc.PluginTagToContent("hparams")
        experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
        assert {h.name for h in experiment.hparam_infos} >= {*AXES, "lr", "batch_size", "epochs", "weight_decay"}
        start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
        values = start.session_start_info.hparams
        assert (values["depth"].number_value, values["block"].string_value, values["shortcut"].string_value,
                values["seed"].number_value) == tuple(trial["config"][k] for k in AXES)
        assert "_hparams_/session_end_info" in content
        scalars = acc.Scalars("test_err")
        assert {s.step: s.value for s in scalars} == pytest.approx(trial["test_err"], rel=1e-6)  # float32
        tags = acc.Tags()["scalars"]
        assert len([t for t in tags if t.startswith("layer_std/")]) == 7
        assert not [t for t in tags if t.split("/")[-1] in RAY_INTERNALS or t.startswith(("ray/", "config/"))]


# --- MLflow ---------------------------------------------------------------------------------------


def test_mlflow_runs_are_named_by_label_tagged_with_the_trial_id_and_hold_the_layer_responses(sweep):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=sweep.mlflow_uri)
    runs = client.search_runs([client.get_experiment_by_name(NAME).experiment_id])
    trials = sweep.trials()
    assert sorted(r.info.run_name for r in runs) == sorted(trials)
    for run in runs:
        trial = trials[run.info.run_name]
        assert run.info.status == "FINISHED"
        assert (run.data.tags["resweep.trial_id"], run.data.tags["resweep.sweep"],
                run.data.tags["resweep.trial_key"]) == (str(trial["id"]), NAME, trial["key"])
        assert {k: run.data.params[k] for k in AXES} == {k: str(trial["config"][k]) for k in AXES}
        history = client.get_metric_history(run.info.run_id, "test_err")
        assert {m.step: m.value for m in history} == trial["test_err"]
        for epoch, layer, name, std in trial["layers"]:  # one series per layer, a value at each probe
            series = client.get_metric_history(run.info.run_id, f"layer_std/{layer:03d}_{name}")
            assert {m.step: m.value for m in series}[epoch] == std
        assert len({(layer, name) for _, layer, name, _ in trial["layers"]}) == 7
        assert not set(run.data.metrics) & set(RAY_INTERNALS)
        assert not [k for k in run.data.metrics if k.startswith("config/")]


def test_mlflow_holds_each_trials_final_model_when_asked(sweep, tmp_path):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=sweep.mlflow_uri)
    for run in client.search_runs([client.get_experiment_by_name(NAME).experiment_id]):
        trial = sweep.trials()[run.info.run_name]
        local = client.download_artifacts(run.info.run_id, "model/model.pt", str(tmp_path / run.info.run_id))
        saved = torch.load(local, weights_only=True)
        assert saved["format"] == "resweep-model/1" and saved["epoch"] == EPOCHS and saved["trial_id"] == trial["id"]
        assert _error(rebuild(saved), saved, trial["config"]) == trial["final_test_err"]


# --- Model files: a plain PyTorch rebuild ----------------------------------------------------------


class PlainUnit(torch.nn.Module):
    """One post-activation unit as the file's architecture says (basic block, shortcut none or A)."""

    def __init__(self, cin: int, cout: int, stride: int, shortcut: str, padding: str):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = torch.nn.BatchNorm2d(cout)
        self.conv2 = torch.nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = torch.nn.BatchNorm2d(cout)
        self.stride, self.extra, self.shortcut, self.padding = stride, cout - cin, shortcut, padding

    def forward(self, x):
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        if self.shortcut == "A":
            s = x[:, :, ::self.stride, ::self.stride]
            if self.padding == "after":  # the input's channels, then the zeros
                s = F.pad(s, (0, 0, 0, 0, 0, self.extra))
            else:  # split on both sides, the other convention in circulation
                s = F.pad(s, (0, 0, 0, 0, self.extra // 2, self.extra - self.extra // 2))
            out = out + s
        return F.relu(out)


class PlainNet(torch.nn.Module):
    def __init__(self, arch: dict, shortcut: str, in_channels: int, classes: int, padding: str):
        super().__init__()
        stages, cin = arch["stages"], arch["stages"][0]["width"]
        self.conv1 = torch.nn.Conv2d(in_channels, cin, 3, 1, 1, bias=False)
        self.bn1 = torch.nn.BatchNorm2d(cin)
        for stage in stages:
            units = []
            for j in range(stage["units"]):
                units.append(PlainUnit(cin, stage["width"], stage["stride"] if j == 0 else 1, shortcut, padding))
                cin = stage["width"]
            setattr(self, stage["module"], torch.nn.Sequential(*units))
        self.stages = [s["module"] for s in stages]
        self.fc = torch.nn.Linear(cin, classes)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        for name in self.stages:
            x = getattr(self, name)(x)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def rebuild(saved: dict, padding: str | None = None) -> torch.nn.Module:
    """The net of a model file, built by plain PyTorch from the file's config alone."""
    config, weights = saved["config"], saved["state_dict"]
    arch = config["architecture"]
    assert arch["layout"] == "cifar" and config["block"] == "basic"
    assert arch["block_order"][:5] == ["conv1 (3x3, stride)", "bn1", "relu", "conv2 (3x3)", "bn2"]
    net = PlainNet(arch, config["shortcut"], weights["conv1.weight"].shape[1], weights["fc.weight"].shape[0],
                   padding or arch["shortcut_padding"])
    net.load_state_dict(weights)
    return net.eval()


def _error(net: torch.nn.Module, saved: dict, config: dict) -> float:
    """The net's error on the trial's test split, inputs minus the file's input_mean."""
    from trainers.data import load_data  # the data only: the net above is not resweep's

    data = load_data(config["dataset"], augment=False)
    x, y = data.test.x, data.test.y
    assert torch.equal(data.mean, saved["input_mean"])
    with torch.no_grad():
        return int((net(x).argmax(1) != y).sum()) / len(y)


def test_a_net_rebuilt_by_plain_pytorch_from_the_model_files_config_reproduces_the_test_error(sweep):
    for label, trial in sweep.trials().items():
        out = sweep.root / "models" / f"{trial['id']}.pt"
        done = run_cli("model", str(trial["id"]), "--db", sweep.url, "--out", str(out), cwd=sweep.root)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "last recorded epoch" not in done.stdout  # the file holds the trial's last epoch
        saved = torch.load(out, weights_only=True)
        assert saved["epoch"] == EPOCHS
        assert _error(rebuild(saved), saved, trial["config"]) == trial["final_test_err"], label
        if trial["config"]["shortcut"] == "A":  # the convention is what makes it work
            assert _error(rebuild(saved, padding="both"), saved, trial["config"]) != trial["final_test_err"]


# --- An interrupted trial's model -----------------------------------------------------------------


def test_the_model_of_a_ctrl_c_trial_is_its_last_recorded_epoch_and_one_never_started_says_so(
        tmp_path, ray_cluster):
    name = "stopped-digits"
    path = tmp_path / f"{name}.yaml"
    path.write_text(textwrap.dedent(f"""\
        name: {name}
        dataset: digits
        model: cifar
        grid: {{depth: [8], shortcut: [A], seed: [0, 1, 2]}}
        train: {{epochs: 6, batch_size: 64, lr: 0.05, augment: false}}
        probes: {{every: 6}}
        resources: {{cpu: 1}}
        fault_tolerance: {{max_failures: 0, checkpoint_every: 1}}
        """))
    url = f"sqlite:///{tmp_path / 'r.db'}"
    driver = start_cli("launch", str(path), "--db", url, "--address", ray_cluster.address, cwd=tmp_path)
    # Ctrl-C the moment a trial's 2nd checkpoint is on storage: its result, and Tune's registration
    # of the checkpoint, come after, so the stop lands between them as often as the timing allows.
    deadline = time.monotonic() + 240
    while not list((tmp_path / "results" / name).glob("*/checkpoint_000001/checkpoint.pt")):
        assert time.monotonic() < deadline and driver.poll() is None, "no trial reached its 2nd checkpoint"
        time.sleep(0.002)
    driver.send_signal(signal.SIGINT)
    out, _ = driver.communicate(timeout=180)
    assert driver.returncode == 130, out

    checked = 0
    for trial_id, status, uri, started in rows(
            url, "SELECT id, status, checkpoint_uri, started_at FROM trials ORDER BY id"):
        model = tmp_path / f"{trial_id}.pt"
        done = run_cli("model", str(trial_id), "--db", url, "--out", str(model), cwd=tmp_path)
        last = rows(url, "SELECT max(epoch) FROM metrics WHERE trial_id = :t", t=trial_id)[0][0]
        if uri is None:
            assert done.returncode == 2 and not model.exists()
            # A trial Ray started and the stop ended before its first epoch has no metrics yet,
            # but it did start: the message says so from the start the database recorded.
            why = "it never started" if started is None else "it ended before its first checkpoint"
            assert done.stderr.strip().endswith(f"(status {status}; {why})"), done.stderr
            continue
        assert done.returncode == 0, done.stdout + done.stderr
        saved = torch.load(model, weights_only=True)
        # Every epoch is checkpointed: the newest checkpoint is the last recorded epoch.
        assert saved["epoch"] == last, (done.stdout, uri)
        recorded = rows(url, "SELECT value FROM metrics WHERE trial_id = :t AND epoch = :e AND name = 'test_err'",
                        t=trial_id, e=last)[0][0]
        assert _error(rebuild(saved), saved, saved["config"]) == recorded
        checked += 1
    assert checked >= 1
    assert any(status == "pending" and uri is None for _, status, uri in
               rows(url, "SELECT id, status, checkpoint_uri FROM trials"))  # the third waited for a CPU


# --- Exports and query output ---------------------------------------------------------------------


def test_an_export_over_an_earlier_export_replaces_every_file_and_refuses_other_files(sweep):
    import pyarrow.parquet as pq

    out = sweep.root / "export"
    for fmt in ("csv", "parquet"):
        done = run_cli("export", NAME, "--format", fmt, "--out", str(out), "--db", sweep.url, cwd=sweep.root)
        assert done.returncode == 0, done.stdout + done.stderr
    names = ["trials", "metrics", "metrics_wide", "layer_stats"]
    assert sorted(p.name for p in out.iterdir()) == sorted([*(f"{n}.parquet" for n in names), "sweep.json"])
    assert json.loads((out / "sweep.json").read_text())["export"]["format"] == "parquet"
    # No trial failed: `error` is all missing, and still a string column.
    assert str(pq.read_schema(out / "trials.parquet").field("error").type) == "string"

    other = sweep.root / "notes"
    other.mkdir()
    (other / "mine.txt").write_text("keep")
    refused = run_cli("export", NAME, "--format", "csv", "--out", str(other), "--db", sweep.url, cwd=sweep.root)
    assert refused.returncode == 2 and "holds files that are not an export's (mine.txt)" in refused.stderr
    assert [p.name for p in other.iterdir()] == ["mine.txt"]


def _json_times(url: str, cwd: Path) -> list[str]:
    done = run_cli("query", "SELECT created_at, finished_at FROM sweeps", "--format", "json", "--db", url, cwd=cwd)
    assert done.returncode == 0, done.stdout + done.stderr
    return [v for row in json.loads(done.stdout) for v in row.values()]


@pytest.mark.postgres
def test_query_json_writes_timestamps_as_iso_8601_utc_on_sqlite_and_postgresql(sweep, pg_url):
    imported = run_cli("db", "import", str(sweep.results), "--db", pg_url, cwd=sweep.root)
    assert imported.returncode == 0, imported.stdout + imported.stderr
    import datetime as dt

    for url in (sweep.url, pg_url):
        times = _json_times(url, sweep.root)
        assert times and all(dt.datetime.fromisoformat(t).utcoffset() == dt.timedelta(0) for t in times), times
        assert all("T" in t and t.endswith("+00:00") for t in times), times
