"""The trackers users already run, as mirrors: Ray Tune's own logger callbacks for a sweep's
`loggers:` (TensorBoard, MLflow, Weights & Biases), beside the recorder.

The database stays the record; these copy each result into the tool, shaped as the study is:
- one run per trial, named by its label and seed (`ResNet-56 A seed 1`, resweep.paper.trial_label;
  with the Ray trial id after it when labels repeat: an Optuna search, grid repeats);
- the trial's flat config as the run's parameters (TensorBoard: HParams for every axis and
  hyperparameter), tagged with resweep's trial id (`trials.id`), Ray's trial id and the sweep;
- per epoch (the step) the metrics the database keeps (db.models.METRIC_NAMES, params_count), and on
  probe epochs one series per layer: `layer_std/NNN_<module>` and `layer_mean/NNN_<module>`
  (NNN: the layer's 0-based order in the forward pass, as layer_stats.layer). Ray's internals
  (done, pid, should_checkpoint, config/* repeated as metrics, timers) stay out.

Each is configured the way its tool is configured everywhere else, by its environment variables on
the driver:
- tensorboard: event files in `results/NAME/tensorboard/<run name>/` (`tensorboard --logdir
  results/NAME/tensorboard`);
- mlflow: `MLFLOW_TRACKING_URI` (MLflow 3's default: sqlite:///mlflow.db in the working directory;
  its file store `./mlruns` is refused unless MLFLOW_ALLOW_FILE_STORE=true), one experiment named
  after the sweep; `{mlflow: {log_model: true}}` adds each trial's final model as the artifact
  `model/model.pt` (the file `python -m orchestrator model` writes, README "Model files");
- wandb: `WANDB_PROJECT` (default: the sweep's name), `WANDB_API_KEY` or `wandb login`; offline runs
  (`WANDB_MODE=offline`) are in `results/NAME/<trial dir>/wandb/offline-run-*`, or under
  `$WANDB_DIR/wandb/` when WANDB_DIR is set, complete when `launch` returns (`wandb sync` them).

Ray stages a trial's files in its session directory (/tmp/ray/session_*) and uploads them to the
results as it goes; a tracker's last writes can land after Tune's last upload (W&B's logging actors
finish on their own time), so each mirror uploads its own files once more when the experiment ends,
after they are complete.

The spec has checked that each package is installed (orchestrator/run/spec.py, LOGGER_PACKAGES).
The W&B mirror's one private Ray name (its logging actors' options) is behind
orchestrator.run.ray_compat.set_wandb_actor_options.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from typing import Any

from ray.tune.logger import LoggerCallback, TBXLoggerCallback

from db.models import METRIC_NAMES
from orchestrator.run import ray_compat
from orchestrator.run.spec import SweepSpec
from orchestrator.run.stops import STOPS
from resweep.paper import trial_label

TENSORBOARD_DIR = "tensorboard"  # in the sweep's results: one directory per run


def logger_callbacks(spec: SweepSpec, trial_ids: Mapping[str, int] | None = None) -> list[Any]:
    """One Ray Tune callback per entry of the spec's `loggers`, in the order given. `trial_ids`:
    Ray's trial id -> resweep's (trials.id), as the recorder learns them (its runs are tagged with it)."""
    study = Study(spec, trial_ids if trial_ids is not None else {})
    return [_callback(name, options, study) for name, options in logger_entries(spec).items()]


def logger_entries(spec: SweepSpec) -> dict[str, dict[str, Any]]:
    """The spec's loggers as name -> options (`mlflow` and `{mlflow: {log_model: true}}` alike)."""
    out: dict[str, dict[str, Any]] = {}
    for entry in spec.loggers:
        if isinstance(entry, str):
            out.setdefault(entry, {})
        else:
            for name, options in entry.model_dump().items():
                out[name] = {**out.get(name, {}), **options}
    return out


def _callback(name: str, options: dict[str, Any], study: Study) -> Any:
    if name == "tensorboard":
        return TensorBoardMirror(study)
    if name == "mlflow":
        return MlflowMirror(study, **options)
    if name == "wandb":
        return WandbMirror(study)
    raise ValueError(f"unknown logger {name!r}")


class Study:
    """What every mirror says of a trial: its run's name, tags, parameters and metrics."""

    def __init__(self, spec: SweepSpec, trial_ids: Mapping[str, int]):
        self.sweep = spec.name
        self.epochs = spec.train.epochs
        self.trial_ids = trial_ids
        # A grid point is one trial unless the grid repeats or a searcher picks the points.
        self.unique_labels = spec.search.algorithm == "grid" and spec.search.num_samples == 1

    def run_name(self, trial: Any) -> str:
        label = trial_label(trial.config)
        return label if self.unique_labels else f"{label} ({trial.trial_id})"

    def trial_id(self, trial: Any) -> int | None:
        return self.trial_ids.get(trial.trial_id)

    def tags(self, trial: Any) -> dict[str, str]:
        tags = {"resweep.sweep": self.sweep, "resweep.trial_key": trial.trial_id}
        if self.trial_id(trial) is not None:
            tags["resweep.trial_id"] = str(self.trial_id(trial))
        return tags

    def params(self, trial: Any) -> dict[str, Any]:
        """The trial's flat config (every axis and hyperparameter) as plain scalars: lists and
        mappings as JSON text, None left out."""
        return {k: (json.dumps(v) if isinstance(v, (list, tuple, dict)) else v)
                for k, v in sorted(trial.config.items()) if v is not None and k != "callbacks"}

    def metrics(self, result: dict[str, Any]) -> dict[str, float]:
        """The epoch's values the database keeps, and one value per layer on probe epochs."""
        out = {name: float(result[name]) for name in (*METRIC_NAMES, "params_count")
               if isinstance(result.get(name), (int, float)) and not isinstance(result.get(name), bool)}
        for record in result.get("layer_stats") or []:
            key = f"{int(record['layer']):03d}_{record['name']}"
            out[f"layer_std/{key}"] = float(record["std"])
            out[f"layer_mean/{key}"] = float(record["mean"])
        return out

    def ended_status(self, trial: Any, failed: bool) -> str:
        """FAILED, KILLED (stopped by Ctrl-C or a store failure before its last epoch) or FINISHED."""
        if failed:
            return "FAILED"
        if STOPS.requested and (trial.last_result or {}).get("epoch", 0) < self.epochs:
            return "KILLED"
        return "FINISHED"


def _upload(trial: Any, local_dir: str, remote_dir: str) -> None:
    """Copy `local_dir` (on the driver) to `remote_dir` on the trial's storage (a path or an object
    store), unless they are the same directory."""
    import pyarrow.fs as pafs

    fs = trial.storage.storage_filesystem
    if not os.path.isdir(local_dir):
        return
    if isinstance(fs, pafs.LocalFileSystem) and os.path.realpath(local_dir) == os.path.realpath(remote_dir):
        return
    fs.create_dir(remote_dir, recursive=True)
    pafs.copy_files(local_dir, remote_dir, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs)


# --- TensorBoard ---------------------------------------------------------------------------------


class TensorBoardMirror(TBXLoggerCallback):
    """tensorboardX event files, one directory per run: scalars per epoch and the HParams plugin's
    session (every axis and hyperparameter of the trial) for TensorBoard's HParams tab."""

    def __init__(self, study: Study):
        super().__init__()
        self.study = study
        self._writers: dict[Any, Any] = {}

    def _dirs(self, trial: Any) -> tuple[str, str]:
        name = self.study.run_name(trial)
        return (os.path.join(trial.local_experiment_path, TENSORBOARD_DIR, name),
                "/".join([trial.remote_experiment_path.rstrip("/"), TENSORBOARD_DIR, name]))

    def log_trial_start(self, trial: Any) -> None:
        from tensorboardX import SummaryWriter
        from tensorboardX.summary import hparams

        if trial in self._writers:
            return
        writer = SummaryWriter(self._dirs(trial)[0], flush_secs=30)
        experiment, start, _ = hparams(self.study.params(trial), {name: None for name in METRIC_NAMES})
        writer.file_writer.add_summary(experiment)
        writer.file_writer.add_summary(start)
        self._writers[trial] = writer

    def log_trial_result(self, iteration: int, trial: Any, result: dict) -> None:
        if trial not in self._writers:
            self.log_trial_start(trial)
        writer, step = self._writers[trial], int(result.get("epoch", iteration))
        for key, value in self.study.metrics(result).items():
            writer.add_scalar(key, value, global_step=step)
        writer.flush()

    def log_trial_end(self, trial: Any, failed: bool = False) -> None:
        from tensorboardX.summary import hparams

        writer = self._writers.pop(trial, None)
        if writer is None:
            return
        if not failed:
            _, _, end = hparams(self.study.params(trial), {})
            writer.file_writer.add_summary(end)
        writer.close()
        _upload(trial, *self._dirs(trial))

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        for trial in list(self._writers):
            self._writers.pop(trial).close()
        for trial in trials:
            _upload(trial, *self._dirs(trial))


# --- MLflow --------------------------------------------------------------------------------------


class MlflowMirror(LoggerCallback):
    """One MLflow run per trial through MLflow's own client, as Ray's MLflowLoggerCallback does it
    but shaped by the study (a resumed sweep's trial continues its run, found by its
    `resweep.trial_key` tag); `log_model` adds the final model as an artifact. (mlflow is imported
    in `setup`, when the run starts: 3 s of imports that a sweep without it does not pay.)"""

    def __init__(self, study: Study, log_model: bool = False):
        self.study = study
        self.log_model = log_model
        self.tracking_uri = os.environ.get("MLFLOW_TRACKING_URI")
        self.experiment_name = study.sweep
        self._runs: dict[Any, str] = {}
        self._tagged: set[str] = set()

    def setup(self, *args: Any, **kwargs: Any) -> None:
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=self.tracking_uri)
        experiment = self.client.get_experiment_by_name(self.experiment_name)
        self.experiment_id = (experiment.experiment_id if experiment is not None
                              else self.client.create_experiment(self.experiment_name))

    def log_trial_start(self, trial: Any) -> None:
        from mlflow.entities import Param

        if trial in self._runs:
            return
        found = self.client.search_runs([self.experiment_id], max_results=1,
                                        filter_string=f"tags.`resweep.trial_key` = '{trial.trial_id}'")
        if found:
            run_id = found[0].info.run_id
            self.client.update_run(run_id, status="RUNNING")
        else:
            run_id = self.client.create_run(self.experiment_id, run_name=self.study.run_name(trial),
                                            tags=self.study.tags(trial)).info.run_id
            params = [Param(k, str(v)) for k, v in self.study.params(trial).items()]
            for start in range(0, len(params), 100):  # MLflow's batch limit
                self.client.log_batch(run_id, params=params[start:start + 100])
        self._runs[trial] = run_id
        self._tag(trial)

    def _tag(self, trial: Any) -> None:
        """resweep's trial id, once the recorder has it (at once, unless the database is away)."""
        run_id = self._runs[trial]
        if run_id not in self._tagged and self.study.trial_id(trial) is not None:
            self.client.set_tag(run_id, "resweep.trial_id", str(self.study.trial_id(trial)))
            self._tagged.add(run_id)

    def log_trial_result(self, iteration: int, trial: Any, result: dict) -> None:
        from mlflow.entities import Metric

        if trial not in self._runs:
            self.log_trial_start(trial)
        self._tag(trial)
        now, step = int(time.time() * 1000), int(result.get("epoch", iteration))
        metrics = [Metric(k, v, now, step) for k, v in self.study.metrics(result).items()]
        for start in range(0, len(metrics), 1000):  # MLflow's batch limit
            self.client.log_batch(self._runs[trial], metrics=metrics[start:start + 1000])

    def log_trial_end(self, trial: Any, failed: bool = False) -> None:
        run_id = self._runs.pop(trial, None)
        if run_id is None:
            return
        if self.log_model and not failed and trial.checkpoint is not None:
            self._log_model(trial, run_id)
        self.client.set_terminated(run_id, self.study.ended_status(trial, failed))

    def _log_model(self, trial: Any, run_id: str) -> None:
        """The model file of the trial's latest checkpoint (README "Model files") as `model/model.pt`."""
        import tempfile

        from orchestrator.run.storage import checkpoint_uri
        from trainers.restore import save_model_file  # torch: only with log_model

        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "model.pt")
            about = {"trial_id": self.study.trial_id(trial)} if self.study.trial_id(trial) is not None else {}
            save_model_file(path, checkpoint_uri(trial.checkpoint), dict(trial.config), sweep=self.study.sweep,
                            trial_key=trial.trial_id, **about)
            self.client.log_artifact(run_id, path, artifact_path="model")


# --- Weights & Biases ----------------------------------------------------------------------------


class WandbMirror(LoggerCallback):
    """Ray's WandbLoggerCallback (one logging actor per trial; made in `setup`, as importing it
    imports wandb), with runs named and tagged as the study's, only the study's metrics, and every
    run complete where the module docstring says it is before the experiment ends."""

    # Passed on to the logging actors, which do not see the driver's environment.
    PASSED = (("mode", "WANDB_MODE"), ("dir", "WANDB_DIR"))

    def __init__(self, study: Study):
        self.study = study
        self.passed = {key: os.environ[var] for key, var in self.PASSED if os.environ.get(var)}
        self.ray: Any = None
        self._started: set[Any] = set()

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "ray": None, "_started": set()}  # actor handles do not outlive the run

    def setup(self, *args: Any, **kwargs: Any) -> None:
        import ray
        from ray.air.integrations.wandb import WandbLoggerCallback
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        self.ray = WandbLoggerCallback(project=os.environ.get("WANDB_PROJECT") or self.study.sweep, **self.passed)
        self.ray.setup(*args, **kwargs)

        # Ray makes its logging actors restartable forever (max_restarts=-1), and Ray's core then
        # prints an error line for each ("constructor arguments in the object store and
        # max_restarts > 0"). A restarted actor would begin a second wandb run of the trial anyway:
        # the same actor class on this node, started once.
        env = {var: os.environ[var] for var in ("WANDB_API_KEY",) if var in os.environ}
        ray_compat.set_wandb_actor_options(
            self.ray, num_cpus=0, max_restarts=0, runtime_env={"env_vars": env},
            scheduling_strategy=NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False))

    def log_trial_start(self, trial: Any) -> None:
        trial_id = self.study.trial_id(trial)
        tags = [f"sweep:{self.study.sweep}"] + ([f"trial_id:{trial_id}"] if trial_id is not None else [])
        config = {**self.study.params(trial), "resweep.sweep": self.study.sweep, "resweep.trial_key": trial.trial_id}
        if trial_id is not None:
            config["resweep.trial_id"] = trial_id
        # Ray builds wandb.init's arguments from these (name, tags, config) for this trial.
        self.ray.kwargs = {**self.passed, "name": self.study.run_name(trial), "tags": tags, "config": config}
        self.ray.log_trial_start(trial)
        self._started.add(trial)

    def log_trial_result(self, iteration: int, trial: Any, result: dict) -> None:
        # The actor logs every number it gets, at W&B's own step (0, 1, ...) as Ray's
        # `training_iteration` is left out: `epoch` is the x axis.
        clean: dict[str, Any] = {"epoch": int(result.get("epoch", iteration)), **self.study.metrics(result)}
        if self.study.trial_id(trial) is not None:
            clean["config"] = {"resweep.trial_id": self.study.trial_id(trial)}
        if trial not in self._started:
            self.log_trial_start(trial)
        self.ray.log_trial_result(iteration, trial, clean)

    def log_trial_end(self, trial: Any, failed: bool = False) -> None:
        if trial in self._started:
            self._started.discard(trial)
            self.ray.log_trial_end(trial, failed)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self.ray.on_experiment_end(trials, **info)  # waits for each actor's wandb.finish()
        if "dir" not in self.passed:  # the runs are in each trial's staged directory: upload them whole
            for trial in trials:
                _upload(trial, os.path.join(trial.local_path, "wandb"), f"{trial.path.rstrip('/')}/wandb")
