"""The one trial config: frozen, typed, one default per hyperparameter, its dict JSON-ready."""

from __future__ import annotations

import json

import pydantic
import pytest

from resweep.config import Synthetic, TrialConfig


def test_the_config_is_frozen():
    cfg = TrialConfig()
    with pytest.raises(pydantic.ValidationError):
        cfg.lr = 0.5


def test_an_unknown_key_is_refused_by_name():
    with pytest.raises(ValueError, match=r"unknown trial config keys \['epoch'\]"):
        TrialConfig.from_dict({"epoch": 3})


@pytest.mark.parametrize("key, value", [("lr", 0), ("momentum", 1.0), ("precision", "fp16"), ("depth", "x"),
                                        ("probes_every", 0), ("checkpoint_every", 0), ("batch_size", 0)])
def test_a_value_out_of_its_range_is_refused(key, value):
    with pytest.raises(ValueError, match=key):
        TrialConfig.from_dict({key: value})


def test_the_defaults_that_used_to_drift_have_one_value_each():
    # The sweep file's values: no milestones, probes every 10 epochs (and at least every 1), 512
    # synthetic training images.
    cfg = TrialConfig()
    assert cfg.lr_milestones == () and cfg.probes_every == 10 and Synthetic().num_train == 512
    assert TrialConfig.from_dict({"lr_milestones": None}).lr_milestones == ()


def test_its_dict_is_json_ready_and_carries_synthetic_only_when_given():
    plain = TrialConfig(lr_milestones=(2, 4)).as_dict()
    assert plain["lr_milestones"] == [2, 4] and "synthetic" not in plain
    assert set(plain) == set(TrialConfig.model_fields) - {"synthetic"}
    made = TrialConfig(dataset="synthetic", synthetic={"num_train": 64}).as_dict()
    assert made["synthetic"] == {"num_train": 64, "num_test": 256, "image_size": 32, "channels": 3, "num_classes": 10}
    assert json.loads(json.dumps(made)) == made
    assert TrialConfig.from_dict(made) == TrialConfig(dataset="synthetic", synthetic={"num_train": 64})  # round trip


def test_nesterov_is_off_by_default():
    assert TrialConfig().nesterov is False and TrialConfig.from_dict({"nesterov": True}).nesterov is True
