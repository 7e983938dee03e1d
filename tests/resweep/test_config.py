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


# --- the rules that span fields and the bounds: checked wherever a TrialConfig is made ---


def rule_errors(**config) -> dict[str, str]:
    """{field: message} of the problems TrialConfig(**config) has."""
    with pytest.raises(pydantic.ValidationError) as info:
        TrialConfig(**config)
    return {".".join(map(str, e["loc"])): e["msg"] for e in info.value.errors()}


@pytest.mark.parametrize("config, field, message", [
    ({"depth": 21}, "depth", "21 is not a depth of cifar nets with basic blocks (allowed: 6n+2 = 8, 14,"),
    ({"model": "imagenet", "depth": 20}, "depth", "20 is not a depth of imagenet nets with basic blocks (allowed: 18, 34)"),
    ({"model": "imagenet", "depth": 50, "block": "preact_bottleneck"}, "depth",
     "pre-activation units are for model cifar"),
    ({"model": "imagenet", "depth": 18, "dataset": "digits"}, "model",
     "imagenet's stem and stages shrink images 32-fold; digits's 8x8 images are too small"),
    ({"model": "imagenet", "depth": 18, "dataset": "synthetic", "synthetic": {"image_size": 16}}, "model",
     "synthetic's 16x16 images are too small"),
    ({"epochs": 3, "lr_milestones": (2, 5)}, "lr_milestones", "[2, 5] (allowed: epochs from 1 to epochs = 3)"),
    ({"lr_milestones": (0,)}, "lr_milestones", "[0] (allowed: epochs from 1 to epochs = 164)"),
    ({"lr_milestones": (4, 2)}, "lr_milestones", "[4, 2] (allowed: strictly increasing epochs)"),
    ({"nesterov": True, "momentum": 0}, "nesterov", "true needs a momentum above 0 (momentum is 0.0;"),
    ({"zero_init_residual": True, "block": "preact", "depth": 20}, "zero_init_residual",
     "zeroes the last BN of each residual branch, and preact units end in a conv"),
])  # fmt: skip
def test_a_trial_config_made_anywhere_is_refused_when_a_rule_across_fields_breaks(config, field, message):
    errors = rule_errors(**config)
    assert list(errors) == [field] and message in errors[field]
    with pytest.raises(ValueError, match=field):  # the stored-config path too
        TrialConfig.from_dict(config)


def test_every_broken_rule_is_reported_at_once_each_at_its_field():
    errors = rule_errors(depth=21, epochs=3, lr_milestones=(5,), nesterov=True, momentum=0.0,
                         block="preact", zero_init_residual=True)
    assert list(errors) == ["depth", "lr_milestones", "nesterov", "zero_init_residual"]


def test_a_rules_message_names_other_fields_as_the_validation_context_says():
    with pytest.raises(pydantic.ValidationError) as info:
        TrialConfig.model_validate({"nesterov": True, "momentum": 0, "epochs": 3, "lr_milestones": [9]},
                                   context={"key": lambda field: f"train.{field}"})
    messages = [e["msg"] for e in info.value.errors()]
    assert "(allowed: epochs from 1 to train.epochs = 3)" in messages[0]
    assert "(train.momentum is 0.0;" in messages[1]


def test_the_rules_accept_what_the_papers_train():
    for config in [{"depth": 110}, {"depth": 1202}, {"depth": 164, "block": "preact_bottleneck"},
                   {"model": "imagenet", "depth": 50, "block": "bottleneck", "dataset": "cifar10", "zero_init_residual": True},
                   {"epochs": 164, "lr_milestones": (82, 123), "nesterov": True, "momentum": 0.9}]:
        TrialConfig(**config)


@pytest.mark.parametrize("key, value", [
    ("lr", float("inf")), ("lr", float("nan")), ("warmup_lr", float("inf")), ("momentum", float("inf")),
    ("momentum", float("nan")), ("weight_decay", float("inf")), ("weight_decay", 2.0),
    ("epochs", 10**20), ("epochs", 100_001), ("batch_size", 10**20), ("batch_size", 2**20 + 1),
    ("depth", 6_000_000_002), ("depth", 5_006), ("seed", 2**31), ("seed", -1),
    ("val_size", 10**20), ("max_train_samples", 10**20), ("probes_every", 10**20), ("checkpoint_every", 10**20),
])  # fmt: skip
def test_numbers_no_study_would_use_are_refused(key, value):
    errors = rule_errors(**{key: value})
    assert list(errors) == [key]


def test_the_caps_themselves_are_accepted():
    from resweep.config import MAX_BATCH_SIZE, MAX_EPOCHS, MAX_SEED

    cfg = TrialConfig(epochs=MAX_EPOCHS, batch_size=MAX_BATCH_SIZE, seed=MAX_SEED, depth=5_000, weight_decay=1.0)
    assert (cfg.epochs, cfg.batch_size, cfg.depth) == (100_000, 1_048_576, 5_000)


def test_the_depth_cap_is_the_model_builders_too():
    from resweep.paper import MAX_DEPTH, depth_allowed, stage_units

    assert depth_allowed("cifar", "basic", MAX_DEPTH) and not depth_allowed("cifar", "basic", MAX_DEPTH + 6)
    with pytest.raises(ValueError, match="more than the 5,000 layers"):
        stage_units("cifar", 6_000_000_002, "basic")


def test_image_size_comes_from_the_one_table_or_the_synthetic_shape():
    assert TrialConfig(dataset="digits").image_size == 8 and TrialConfig(dataset="cifar100").image_size == 32
    assert TrialConfig(dataset="synthetic", synthetic={"image_size": 12}).image_size == 12
