"""Every private Ray name resweep uses, in one place.

Ray 2.60 offers no public API for these; each is wrapped here so that a Ray upgrade is one file
to read, and tests/orchestrator/run/test_ray_compat.py fails by name when one of them moves.
Written for Ray 2.60 (`RAY_VERSION`, which that test checks against the installed Ray).
"""

from __future__ import annotations

import collections
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

RAY_VERSION = "2.60"

# What ray.init imports that Tune's modules import as well (orchestrator.run.ray_session imports
# them before its background import starts, so no module is imported by two threads at once).
RAY_INIT_IMPORTS = ("ray._common.usage.usage_lib", "ray.dashboard")

# Loggers of Ray's job client that report each upload and websocket close at INFO.
JOB_CLIENT_LOGGERS = ("ray.dashboard.modules.dashboard_sdk", "ray.dashboard.modules.job.sdk",
                      "ray._private.runtime_env.packaging")


# --- storage and Tune's saved state ------------------------------------------------------------


def fs_and_path(uri: str) -> tuple[Any, str]:
    """pyarrow's filesystem and the path within it for a local path or a URI (s3://bucket/prefix):
    Tune's own resolution of storage paths, so results are read and written where Tune does."""
    from ray.train._internal.storage import get_fs_and_path

    return get_fs_and_path(uri)


def loads_experiment_state(data: bytes) -> dict[str, Any]:
    """Tune's experiment state file (experiment_state-*.json) as Tune itself reads it."""
    from ray.tune.utils.serialization import _loads_with_cloudpickle

    return _loads_with_cloudpickle(data)


def newest_experiment_state(fs: Any, experiment_dir: str) -> str | None:
    """The path of the newest experiment_state-*.json in `experiment_dir` (None if there is none)."""
    from ray.tune.execution.experiment_state import _find_newest_experiment_checkpoint

    return _find_newest_experiment_checkpoint(experiment_path=experiment_dir, fs=fs)


def set_callbacks(tuner: Any, callbacks: list) -> None:
    """Give a restored Tuner this run's callbacks in place of those pickled at launch."""
    tuner._local_tuner.get_run_config().callbacks = callbacks


@contextmanager
def results_without_dataframes() -> Iterator[None]:
    """For the block, the results a Tuner's fit returns read no trial's result file.

    At the end of a run Tune builds an ExperimentAnalysis for the ResultGrid, which reads every
    trial's result.json into a pandas DataFrame (`Result.metrics_dataframe`): about 1.6 ms a
    one-epoch trial, longer with more epochs, so the end of a sweep grows with its trials (1.6 s
    at 1,000). resweep reads none of them (the recorder has every result in the database; the
    ResultGrid serves only each trial's last result, config and error), so each trial gets an
    empty frame."""
    from ray.tune.analysis.experiment_analysis import ExperimentAnalysis

    fetch = ExperimentAnalysis._fetch_trial_dataframes
    ExperimentAnalysis._fetch_trial_dataframes = _no_dataframes
    try:
        yield
    finally:
        ExperimentAnalysis._fetch_trial_dataframes = fetch


def _no_dataframes(analysis: Any) -> dict[str, Any]:
    from pandas import DataFrame

    return {trial.trial_id: DataFrame() for trial in analysis.trials}


# --- Tune's usage tag of a run's callbacks -----------------------------------------------------
# ray.air._internal.usage.tag_callbacks calls _count_callbacks, which tells Tune's built-in tracker
# loggers apart by importing each integration, and with it wandb and mlflow when they are
# installed: on the driver's main thread before the first trial, every sweep, telemetry on or
# off. A callback can only be an instance of one of these classes if its module was imported,
# so while none is, the same counts come from the class names alone; once one is (`loggers:
# [wandb]`), Ray's own count runs.
TRACKER_CALLBACKS = {
    "ray.air.integrations.wandb": "WandbLoggerCallback",
    "ray.air.integrations.mlflow": "MLflowLoggerCallback",
    "ray.air.integrations.comet": "CometLoggerCallback",
    "ray.tune.logger.aim": "AimLoggerCallback",
}


def count_callbacks_by_name(callbacks: list | None) -> dict[str, int]:
    """Ray's `_count_callbacks` for callbacks none of which is a tracker integration's."""
    from ray.tune import Callback
    from ray.tune.logger import LoggerCallback
    from ray.tune.utils.callback import DEFAULT_CALLBACK_CLASSES

    built_in = {*TRACKER_CALLBACKS.values(), *(cls.__name__ for cls in DEFAULT_CALLBACK_CLASSES)}
    counts: collections.defaultdict[str, int] = collections.defaultdict(int)
    for callback in callbacks or []:
        if not isinstance(callback, Callback):
            continue
        name = type(callback).__name__
        if name in built_in:
            counts[name] += 1
        else:
            counts["CustomLoggerCallback" if isinstance(callback, LoggerCallback) else "CustomCallback"] += 1
    return counts


@contextmanager
def callbacks_counted_by_name() -> Iterator[None]:
    """For the block, Ray's callback count without the tracker imports (see TRACKER_CALLBACKS)."""
    from ray.air._internal import usage

    ray_count = getattr(usage, "_count_callbacks", None)
    if ray_count is None or any(module in sys.modules for module in TRACKER_CALLBACKS):
        yield
        return
    usage._count_callbacks = count_callbacks_by_name
    try:
        yield
    finally:
        usage._count_callbacks = ray_count


# --- what Tune puts in its trainables' runtime_env ---------------------------------------------
# Tune's actor class cache (ray.tune.execution.class_cache) copies AWS_ACCESS_KEY_ID,
# AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN and AWS_SECURITY_TOKEN from the driver's environment
# into the runtime_env of every trainable actor. Ray logs a runtime_env in plain text (the
# session's logs/runtime_env_agent.log, mode 644) and keeps it in its actor table, for anyone
# who can read the node's /tmp or reach the cluster. Workers take the credentials from their own
# environment instead: a local Ray's inherits the driver's at ray.init (never written anywhere),
# a cluster's nodes have their own (docs/security.md).


@contextmanager
def credentials_out_of_runtime_env() -> Iterator[None]:
    """For the block, Tune copies no AWS_* variable into its trainables' runtime_env."""
    from ray.tune.execution import class_cache

    propagated = class_cache.ENV_VARS_TO_PROPAGATE
    class_cache.ENV_VARS_TO_PROPAGATE = {name for name in propagated if not name.startswith("AWS_")}
    try:
        yield
    finally:
        class_cache.ENV_VARS_TO_PROPAGATE = propagated


# --- W&B's logging actors --------------------------------------------------------------------


def set_wandb_actor_options(callback: Any, **options: Any) -> None:
    """Make a WandbLoggerCallback start its per-trial logging actors with `options` (ray.remote's)
    instead of Ray's own (max_restarts=-1, for which Ray's core prints an error line per actor).
    Ray 2.60 builds the actor class once, in _start_logging_actor, unless one is already set."""
    import ray

    callback._remote_logger_class = ray.remote(**options)(callback._logger_actor_cls)


# --- the local Ray's processes and a token cluster ----------------------------------------------


def local_monitor_processes() -> list[Any]:
    """The Popen objects of the autoscaler monitor of the Ray this process started, if any."""
    import ray

    node = getattr(ray._private.worker, "_global_node", None)
    infos = getattr(node, "all_processes", {}).get(ray._private.ray_constants.PROCESS_TYPE_MONITOR, [])
    return [info.process for info in infos if getattr(info, "process", None) is not None]


def gcs_unauthenticated(address: str, metadata: tuple, timeout_s: float) -> bool:
    """One GetClusterId call to the GCS at `address` (HOST:PORT): True when it answers
    UNAUTHENTICATED; grpc.RpcError for any other failure."""
    import grpc
    from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc

    with grpc.insecure_channel(address) as channel:
        stub = gcs_service_pb2_grpc.NodeInfoGcsServiceStub(channel)
        try:
            stub.GetClusterId(gcs_service_pb2.GetClusterIdRequest(), timeout=timeout_s, metadata=metadata)
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.UNAUTHENTICATED:
                return True
            raise
    return False


def reload_auth_settings() -> None:
    """Make an imported Ray take new RAY_AUTH_* settings: Ray read its config and cached the token
    (or its absence) when it was imported. What Ray's own tests do
    (ray/_private/authentication_test_utils.py)."""
    from ray._raylet import AuthenticationTokenLoader, Config

    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()
