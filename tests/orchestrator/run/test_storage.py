"""--results: a local path made absolute, a URI kept as given, $RESWEEP_RESULTS as the default."""

from __future__ import annotations

import pytest

from orchestrator.run import storage
from resweep.errors import UserError


def test_a_relative_path_is_made_absolute_here(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(storage.RESULTS_ENV, raising=False)
    assert storage.resolve(None) == str(tmp_path / "results")
    assert storage.resolve("out/r") == str(tmp_path / "out" / "r")
    assert storage.resolve(f"file://{tmp_path}/x") == str(tmp_path / "x")


def test_the_environment_gives_the_default(tmp_path, monkeypatch):
    monkeypatch.setenv(storage.RESULTS_ENV, "s3://lab/resweep/")
    assert storage.resolve(None) == "s3://lab/resweep"
    assert storage.resolve(str(tmp_path)) == str(tmp_path)  # --results wins


def test_uris_are_kept_and_joined():
    assert storage.resolve("gs://bucket/prefix") == "gs://bucket/prefix"
    assert storage.join("s3://lab/resweep", "depth") == "s3://lab/resweep/depth"
    assert storage.is_uri("s3://b/p") and not storage.is_uri("/data/results")


def test_credentials_in_the_uri_are_refused_without_being_echoed():
    with pytest.raises(UserError) as caught:
        storage.resolve("s3://AKIAXXX:topsecret@lab/resweep")
    assert "AWS_ACCESS_KEY_ID" in str(caught.value) and "topsecret" not in str(caught.value)


def test_exists_on_local_paths(tmp_path):
    assert storage.exists(str(tmp_path))
    assert not storage.exists(str(tmp_path / "missing"))


def test_a_finished_sweep_keeps_each_trials_newest_checkpoint_only(tmp_path):
    sweep = tmp_path / "sweep"
    for trial, indices in (("train_trial_a", (0, 1, 2, 10)), ("train_trial_b", (0,))):
        for i in indices:
            (sweep / trial / f"checkpoint_{i:06d}").mkdir(parents=True)
            (sweep / trial / f"checkpoint_{i:06d}" / "checkpoint.pt").write_bytes(b"x" * 100)
        (sweep / trial / "result.json").write_text("{}\n")
    (sweep / "experiment_state-2026.json").write_text("{}")
    assert storage.prune_checkpoints(str(sweep)) == (3, 300)
    assert sorted(p.name for p in (sweep / "train_trial_a").iterdir()) == ["checkpoint_000010", "result.json"]
    assert sorted(p.name for p in (sweep / "train_trial_b").iterdir()) == ["checkpoint_000000", "result.json"]
    assert (sweep / "experiment_state-2026.json").exists()
    assert storage.prune_checkpoints(str(tmp_path / "gone")) == (0, 0)
