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


@pytest.mark.parametrize("uri", [
    "s3://lab/resweep?region=x&secret_key=XYZZY",
    "s3://lab/resweep?access_key=AKIA&SECRET_KEY=XYZZY",
    "s3://lab/resweep?session_token=XYZZY",
    "gs://lab/resweep?access_token=XYZZY",
    "s3://AKIA:XY/ZZY@lab/resweep",  # an AWS secret may hold '/': no '@' before the first '/'
    "s3://AKIA:XY?ZZY@lab/resweep",
])  # fmt: skip
def test_credentials_anywhere_in_a_uri_are_refused_without_being_echoed(uri, monkeypatch):
    with pytest.raises(UserError) as caught:
        storage.resolve(uri)
    assert "XY" not in str(caught.value) and "AWS_SECRET_ACCESS_KEY" in str(caught.value)
    monkeypatch.setenv(storage.RESULTS_ENV, uri)
    with pytest.raises(UserError):
        storage.resolve(None)


def test_a_uris_query_string_is_never_shown():
    assert storage.shown("s3://lab/resweep/depth?endpoint_override=minio:9000&scheme=http") == "s3://lab/resweep/depth?..."
    assert storage.shown("s3://AKIA:TOP/SE?CRET@lab/p?x=1") == "s3://***@lab/p?..."
    assert storage.shown("/data/results/depth") == "/data/results/depth"


def test_joins_keep_a_uris_query_string_at_the_end():
    location = storage.resolve("s3://lab/resweep/?endpoint_override=127.0.0.1:9000&scheme=http")
    assert location == "s3://lab/resweep?endpoint_override=127.0.0.1:9000&scheme=http"
    experiment = storage.join(location, "depth")
    assert experiment == "s3://lab/resweep/depth?endpoint_override=127.0.0.1:9000&scheme=http"
    assert storage.parent(experiment) == location
    assert storage.parent("/data/results/depth") == "/data/results" and storage.parent("/depth") == "/"
    fs, path = storage.filesystem(experiment)
    assert path == "lab/resweep/depth"  # pyarrow reads the endpoint from the query, not the path


def test_an_unopenable_uri_is_one_line_without_its_query_string():
    with pytest.raises(UserError) as caught:
        storage.exists("gopher://lab/resweep?endpoint_override=hidden.example:1")
    assert "hidden.example" not in str(caught.value) and "gopher://lab/resweep?..." in str(caught.value)
