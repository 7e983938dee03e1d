"""orchestrator/run/ray_compat.py holds every private Ray name resweep uses; these tests fail by
name when the pinned Ray moves one of them, so an upgrade is one file to read again."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
from pathlib import Path
from types import SimpleNamespace

import ray

from orchestrator.run import ray_compat


def test_the_installed_ray_is_the_one_the_adapter_was_written_for():
    assert ray.__version__.startswith(ray_compat.RAY_VERSION + "."), (
        f"Ray {ray.__version__}: orchestrator/run/ray_compat.py was written for {ray_compat.RAY_VERSION}")


def test_every_private_module_and_name_the_adapter_uses_exists():
    expected = {
        "ray.train._internal.storage": ["get_fs_and_path"],
        "ray.tune.utils.serialization": ["_loads_with_cloudpickle"],
        "ray.tune.execution.experiment_state": ["_find_newest_experiment_checkpoint"],
        "ray.air._internal.usage": ["_count_callbacks", "tag_callbacks"],
        "ray.tune.utils.callback": ["DEFAULT_CALLBACK_CLASSES"],
        "ray._private.worker": ["_global_node"],
        "ray._private.ray_constants": ["PROCESS_TYPE_MONITOR"],
        "ray.core.generated.gcs_service_pb2": ["GetClusterIdRequest"],
        "ray.core.generated.gcs_service_pb2_grpc": ["NodeInfoGcsServiceStub"],
        "ray._raylet": ["AuthenticationTokenLoader", "Config"],
        "ray.tune.execution.class_cache": ["ENV_VARS_TO_PROPAGATE"],
        "ray.tune.analysis.experiment_analysis": ["ExperimentAnalysis"],
        **{name: [] for name in ray_compat.RAY_INIT_IMPORTS},
    }
    missing = [f"{module}.{name}" for module, names in expected.items()
               for name in names if not hasattr(importlib.import_module(module), name)]
    assert missing == []
    # set_wandb_actor_options; read, not imported (importing it imports wandb, which changes
    # how the callback count runs for the rest of this process).
    wandb_source = Path(importlib.util.find_spec("ray.air.integrations.wandb").origin).read_text()
    assert "_logger_actor_cls = _WandbLoggingActor" in wandb_source
    assert "if not self._remote_logger_class:" in wandb_source
    assert hasattr(ray.tune.Tuner, "_local_tuner") or "_local_tuner" in ray.tune.Tuner.__init__.__code__.co_names


def test_storage_paths_resolve_as_tune_resolves_them(tmp_path):
    import pyarrow.fs as pafs

    fs, path = ray_compat.fs_and_path(str(tmp_path))
    assert isinstance(fs, pafs.LocalFileSystem) and path == str(tmp_path)


def test_the_callback_count_by_name_is_put_back_after_the_block(monkeypatch):
    from ray.air._internal import usage

    # As in a fresh driver: no tracker integration imported yet. (A bare Tuner run earlier in this
    # process imports them: Ray's own count does.)
    for module in ray_compat.TRACKER_CALLBACKS:
        monkeypatch.delitem(sys.modules, module, raising=False)
    before = usage._count_callbacks
    with ray_compat.callbacks_counted_by_name():
        assert usage._count_callbacks is ray_compat.count_callbacks_by_name
    assert usage._count_callbacks is before
    # Once one is imported, Ray's own count runs.
    monkeypatch.setitem(sys.modules, next(iter(ray_compat.TRACKER_CALLBACKS)), object())
    with ray_compat.callbacks_counted_by_name():
        assert usage._count_callbacks is before


def test_tune_copies_no_aws_variable_into_a_trainables_runtime_env_inside_the_block():
    """Tune's actor class cache reads ENV_VARS_TO_PROPAGATE when it builds a trainable's actor
    class: inside the block the AWS_* names are gone from it (and Tune would copy them without)."""
    from ray.tune.execution import class_cache

    before = class_cache.ENV_VARS_TO_PROPAGATE
    assert "AWS_SECRET_ACCESS_KEY" in before  # what Ray 2.60 does; the adapter exists for this
    assert "ENV_VARS_TO_PROPAGATE" in class_cache._ActorClassCache.get.__code__.co_names  # read at call time
    with ray_compat.credentials_out_of_runtime_env():
        assert not {n for n in class_cache.ENV_VARS_TO_PROPAGATE if n.startswith("AWS_")}
        assert class_cache.ENV_VARS_TO_PROPAGATE == {n for n in before if not n.startswith("AWS_")}
    assert class_cache.ENV_VARS_TO_PROPAGATE is before


def test_tunes_results_read_no_result_file_in_the_block_and_do_again_after(tmp_path):
    from ray.tune.analysis.experiment_analysis import ExperimentAnalysis

    fetch = ExperimentAnalysis._fetch_trial_dataframes
    # Tune's ExperimentAnalysis reads the frames when it is built, through this method.
    assert "self._fetch_trial_dataframes()" in inspect.getsource(ExperimentAnalysis.__init__)

    analysis = SimpleNamespace(trials=[SimpleNamespace(trial_id="t1")])
    with ray_compat.results_without_dataframes():
        frames = ExperimentAnalysis._fetch_trial_dataframes(analysis)
        assert list(frames) == ["t1"] and frames["t1"].empty
    assert ExperimentAnalysis._fetch_trial_dataframes is fetch
