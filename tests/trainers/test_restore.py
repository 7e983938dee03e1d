"""Trained models back out of checkpoints (no database, no Ray: a checkpoint directory and a config)."""

from __future__ import annotations

import io

import pytest
import torch

from trainers.restore import (CheckpointNotFound, load_model, load_model_file, model_file, restored_result,
                              save_model_file, with_result)
from trainers.trainable import CHECKPOINT_FILE, LocalReporter, train

CONFIG = {"dataset": "synthetic", "model": "cifar", "depth": 8, "block": "basic", "shortcut": "B", "seed": 3,
          "epochs": 2, "batch_size": 32, "augment": False, "probes_every": 2,
          "synthetic": {"num_train": 64, "num_test": 32, "image_size": 8, "channels": 3, "num_classes": 4}}


@pytest.fixture(scope="module")
def checkpoint_dir(tmp_path_factory):
    """A trained trial's last checkpoint, laid out as Tune lays it (checkpoint.pt in a directory)."""
    reporter = LocalReporter()
    train(CONFIG, reporter, device="cpu")
    directory = tmp_path_factory.mktemp("checkpoint_000001")
    (directory / CHECKPOINT_FILE).write_bytes(reporter.checkpoint)
    return directory


def test_a_checkpoint_holds_the_result_reported_with_it(checkpoint_dir):
    """What a restored trial reports again first (trainers.trainable.train): the last epoch's
    result, layer_stats included, read back with weights_only=True."""
    state = torch.load(checkpoint_dir / CHECKPOINT_FILE, weights_only=True)
    again = restored_result(state)
    assert again["epoch"] == state["loop"]["epoch"] == 2
    assert {"train_err", "test_err", "params_count", "layer_stats"} <= set(again)
    assert again["layer_stats"][0]["layer"] == 0 and isinstance(again["layer_stats"][0]["std"], float)


def test_results_go_into_checkpoints_as_plain_values_and_old_checkpoints_have_none():
    import numpy as np

    result = {"epoch": 3, "train_err": np.float32(0.25), "lr": torch.tensor(0.1), "layer_stats": [{"std": np.float64(2.0)}]}
    state = with_result({"loop": {"epoch": 3}}, result)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    loaded = torch.load(io.BytesIO(buffer.getvalue()), weights_only=True)
    assert restored_result(loaded) == {"epoch": 3, "train_err": 0.25, "lr": pytest.approx(0.1), "layer_stats": [{"std": 2.0}]}
    assert restored_result({"loop": {"epoch": 3}}) is None and restored_result(None) is None  # saved before results went in


def test_load_model_builds_the_trained_net_in_eval_mode(checkpoint_dir):
    model = load_model(str(checkpoint_dir), CONFIG)
    state = torch.load(checkpoint_dir / CHECKPOINT_FILE, weights_only=True)["loop"]["model"]
    assert not model.training
    assert model.fc.out_features == 4 and model.conv1.in_channels == 3
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def test_a_file_uri_reads_the_same_checkpoint(checkpoint_dir):
    x = torch.randn(2, 3, 8, 8)
    by_path, by_uri = load_model(str(checkpoint_dir), CONFIG), load_model(checkpoint_dir.as_uri(), CONFIG)
    assert torch.equal(by_path(x), by_uri(x))


def test_a_missing_checkpoint_says_where_it_looked(tmp_path):
    gone = tmp_path / "results" / "sweep" / "trial" / "checkpoint_000001"
    with pytest.raises(CheckpointNotFound) as info:
        load_model(str(gone), CONFIG)
    assert str(info.value) == f"{gone}/{CHECKPOINT_FILE}: no checkpoint there; the results directory was moved or removed"
    assert len(str(info.value).splitlines()) == 1


def test_model_file_is_one_weights_only_file_that_builds_the_same_net(checkpoint_dir, tmp_path):
    path = tmp_path / "net.pt"
    written = save_model_file(path, str(checkpoint_dir), CONFIG, trial_id=7)
    saved = torch.load(path, weights_only=True)
    assert written.keys() == saved.keys() and written["epoch"] == saved["epoch"]
    assert saved["trial_id"] == 7 and saved["epoch"] == 2 and saved["config"]["shortcut"] == "B"
    assert saved["input_mean"].shape == (1, 3, 8, 8)
    x = torch.randn(2, 3, 8, 8)
    assert torch.equal(load_model_file(path)(x), load_model(str(checkpoint_dir), CONFIG)(x))
    buffer = io.BytesIO()
    torch.save(model_file(str(checkpoint_dir), CONFIG), buffer)
    assert torch.load(io.BytesIO(buffer.getvalue()), weights_only=True)["format"] == "resweep-model/1"


def test_a_file_that_is_not_a_model_file_is_refused(tmp_path):
    torch.save({"weights": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a resweep model file"):
        load_model_file(tmp_path / "other.pt")


@pytest.fixture
def s3(monkeypatch):
    """moto's S3 server on the loopback (no real object store is reachable from a test machine),
    configured the standard way: the AWS_* variables pyarrow and Ray read."""
    import socket

    from moto.server import ThreadedMotoServer

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    for key, value in {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "test",
                       "AWS_SECRET_ACCESS_KEY": "test", "AWS_REGION": "us-east-1",
                       "AWS_EC2_METADATA_DISABLED": "true"}.items():
        monkeypatch.setenv(key, value)
    try:
        yield
    finally:
        server.stop()


def test_a_checkpoint_in_an_object_store_loads_through_its_uri(checkpoint_dir, s3):
    import pyarrow.fs

    filesystem, _ = pyarrow.fs.FileSystem.from_uri("s3://results?allow_bucket_creation=true")
    filesystem.create_dir("results")  # the bucket
    with filesystem.open_output_stream(f"results/sweep/trial/checkpoint_000001/{CHECKPOINT_FILE}") as out:
        out.write((checkpoint_dir / CHECKPOINT_FILE).read_bytes())
    x = torch.randn(2, 3, 8, 8)
    remote = load_model("s3://results/sweep/trial/checkpoint_000001", CONFIG)
    assert torch.equal(remote(x), load_model(str(checkpoint_dir), CONFIG)(x))
    with pytest.raises(CheckpointNotFound, match=r"^s3://results/sweep/gone/checkpoint.pt: "):
        load_model("s3://results/sweep/gone", CONFIG)
