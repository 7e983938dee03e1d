"""Sweep files: every shipped one validates; every mistake is reported, all at once, one line each."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from orchestrator.run.spec import SpecError, depth_allowed, load_spec, parse_spec
from resweep.config import TrialConfig

SWEEPS = sorted((Path(__file__).resolve().parents[3] / "sweeps").glob("*.yaml"))

GOOD = """
name: tiny
dataset: synthetic
model: cifar
synthetic: {num_train: 64, num_test: 32, image_size: 8, channels: 3, num_classes: 4}
grid:
  depth: [8, 14]
  shortcut: [none, A]
  seed: [0, 1]
train:
  epochs: 3
  lr_milestones: [2]
"""


def problems(text: str) -> list[str]:
    with pytest.raises(SpecError) as info:
        parse_spec(textwrap.dedent(text), "bad.yaml")
    return info.value.problems


def edit(**sections: str) -> str:
    """GOOD with some top-level sections replaced (`key=None` removes the key)."""
    lines, skip = [], False
    for line in textwrap.dedent(GOOD).strip().splitlines():
        top = line.split(":")[0] if line and not line.startswith(" ") else None
        if top is not None:
            skip = top in sections
            if skip and sections[top] is not None:
                lines.append(textwrap.dedent(sections[top]).strip())
        if not skip:
            lines.append(line)
    lines += [textwrap.dedent(v).strip() for k, v in sections.items()
              if v is not None and not any(x.startswith(f"{k}:") for x in textwrap.dedent(GOOD).splitlines())]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("path", SWEEPS, ids=[p.name for p in SWEEPS])
def test_every_shipped_sweep_file_validates(path):
    spec, text = load_spec(path)
    assert spec.num_trials >= 5
    assert text == path.read_text()


def test_shipped_sweeps_are_the_ones_the_readme_promises():
    assert {p.name for p in SWEEPS} >= {
        "quickstart.yaml", "depth.yaml", "shortcuts.yaml", "bottleneck.yaml", "responses.yaml", "tune-lr.yaml",
    }


def test_cifar_sweep_files_say_how_long_they_take_and_where_the_data_is():
    for path in SWEEPS:
        spec, text = load_spec(path)
        if spec.dataset.startswith("cifar"):
            assert "GPU" in text and "Time:" in text, path.name
            assert "Data:" in text and "cifar-10-batches-py" in text, path.name


def test_quickstart_is_the_promised_small_study():
    spec, _ = load_spec(next(p for p in SWEEPS if p.name == "quickstart.yaml"))
    assert spec.dataset == "digits" and spec.model == "cifar"
    assert spec.grid.depth == [20, 56] and spec.grid.shortcut == ["none", "A"]
    # three seeds: with two, Welch's t has 1 degree of freedom and the report cannot call degradation
    assert spec.grid.block == ["basic"] and len(spec.grid.seed) == 3
    assert 10 <= spec.train.epochs <= 20 and spec.train.max_train_samples == 1000


def test_depth_sweep_has_the_papers_table6_recipe():
    spec, _ = load_spec(next(p for p in SWEEPS if p.name == "depth.yaml"))
    assert spec.grid.depth == [20, 32, 44, 56, 110] and spec.grid.shortcut == ["none", "A"]
    assert len(spec.grid.seed) == 3 and spec.train.epochs == 164 and spec.train.lr_milestones == [82, 123]
    warm = [p for p in spec.points() if spec.trial_config(p)["warmup_lr"] is not None]
    assert {p["depth"] for p in warm} == {110}
    assert spec.trial_config(warm[0])["warmup_until_train_err"] == 0.8


def test_responses_sweep_is_exactly_the_five_nets_of_fig7():
    spec, _ = load_spec(next(p for p in SWEEPS if p.name == "responses.yaml"))
    nets = {(p["depth"], p["shortcut"]) for p in spec.points()}
    assert nets == {(20, "none"), (56, "none"), (20, "A"), (56, "A"), (110, "A")}
    assert spec.probes.every == 1


def test_a_minimal_sweep_file_gives_every_other_key_the_trial_configs_default():
    spec = parse_spec("name: m\ndataset: cifar10\nmodel: cifar\ngrid: {depth: [20]}\ntrain: {epochs: 3}\n")
    config = spec.trial_config(spec.points()[0])
    assert config == TrialConfig(dataset="cifar10", model="cifar", depth=20, epochs=3).as_dict()
    assert list(config)[-4:] == ["depth", "block", "shortcut", "seed"]  # the Tune config's order: axes last


# Every key of a sweep file that reaches the trial config, each away from its default, and the flat
# config it must give. A new TrialConfig field fails the last assertion until it is added here.
EVERY_KEY = """
name: every
dataset: synthetic
data_dir: /tmp/resweep-every
model: imagenet
synthetic: {num_train: 64, num_test: 32, image_size: 64, channels: 1, num_classes: 4}
grid: {depth: [50], block: [bottleneck], shortcut: [C], seed: [5]}
train:
  epochs: 7
  batch_size: 32
  lr: 0.2
  momentum: 0.8
  nesterov: true
  weight_decay: 5.0e-4
  lr_milestones: [3, 6]
  warmup: {lr: 0.01, until_train_err: 0.7, max_iterations: 9}
  precision: bf16
  augment: false
  val_size: 16
  max_train_samples: 48
probes: {every: 2}
fault_tolerance: {checkpoint_every: 3}
model_options: {stride_in: 3x3, zero_init_residual: true}
"""
EVERY_CONFIG = {
    "dataset": "synthetic", "data_dir": "/tmp/resweep-every", "model": "imagenet", "epochs": 7, "batch_size": 32,
    "lr": 0.2, "momentum": 0.8, "nesterov": True, "weight_decay": 5.0e-4, "lr_milestones": [3, 6], "warmup_lr": 0.01,
    "warmup_until_train_err": 0.7, "warmup_max_iterations": 9, "warmup_iterations": None, "precision": "bf16", "augment": False,
    "val_size": 16, "max_train_samples": 48, "probes_every": 2, "checkpoint_every": 3, "stride_in": "3x3",
    "zero_init_residual": True,
    "synthetic": {"num_train": 64, "num_test": 32, "image_size": 64, "channels": 1, "num_classes": 4},
    "depth": 50, "block": "bottleneck", "shortcut": "C", "seed": 5,
}  # fmt: skip


def test_every_trial_config_field_is_set_from_its_key_in_the_sweep_file():
    spec = parse_spec(EVERY_KEY)
    config = spec.trial_config(spec.points()[0])
    assert config == EVERY_CONFIG
    assert TrialConfig.from_dict(config).as_dict() == config  # what the trainer reads is what was stored
    defaults = TrialConfig(synthetic={}).as_dict()
    # warmup_iterations excludes warmup_until_train_err: its key is set in
    # test_a_warmup_is_fixed_or_decided_by_the_error_at_the_files_keys
    assert sorted(k for k in TrialConfig.model_fields if config[k] == defaults[k]) == ["warmup_iterations"]


def test_nesterov_is_a_train_key_off_by_default_and_only_true_or_false():
    assert parse_spec(GOOD).base_config()["nesterov"] is False  # a file without it: plain momentum, as before
    on = parse_spec(edit(train="train:\n  epochs: 3\n  nesterov: true"))
    assert all(on.trial_config(p)["nesterov"] is True for p in on.points())
    assert problems(edit(train="train:\n  epochs: 3\n  nesterov: 'yes'")) == [
        "bad.yaml: train.nesterov: expected true or false, got 'yes'"]
    # torch.optim.SGD refuses Nesterov without momentum: said before any trial starts, not in each.
    assert problems(edit(train="train:\n  epochs: 3\n  nesterov: true\n  momentum: 0")) == [
        "bad.yaml: train.nesterov: true needs a momentum above 0 (train.momentum is 0.0; "
        "allowed: nesterov false, or momentum > 0)"]


def test_the_sweep_files_keys_take_type_bounds_and_default_from_the_trial_config():
    from orchestrator.run import spec as spec_module

    overridden = {"train.epochs", "train.warmup.lr", "train.warmup.max_iterations"}
    sections = {"train": spec_module.Train, "train.warmup": spec_module.Warmup, "probes": spec_module.Probes,
                "fault_tolerance": spec_module.FaultTolerance, "model_options": spec_module.ModelOptions}
    checked = 0
    for field, info in TrialConfig.model_fields.items():
        section, _, key = spec_module.file_key(field).rpartition(".")
        if section not in sections:
            continue
        in_file = sections[section].model_fields[key]
        assert in_file.metadata == info.metadata, field
        if f"{section}.{key}" not in overridden:
            assert in_file.default == info.default, field
        checked += 1
    assert checked == len(TrialConfig.model_fields) - 8  # all but dataset, data_dir, model, synthetic, the axes
    assert spec_module.Train.model_fields["epochs"].is_required()
    assert spec_module.Warmup.model_fields["max_iterations"].default == 400


def test_grid_points_are_the_product_in_order():
    spec = parse_spec(GOOD)
    assert spec.num_trials == 8
    assert spec.points()[:2] == [
        {"depth": 8, "block": "basic", "shortcut": "none", "seed": 0},
        {"depth": 8, "block": "basic", "shortcut": "none", "seed": 1},
    ]


def test_data_dir_is_made_absolute_for_the_workers():
    spec = parse_spec(edit(data_dir="data_dir: ~/somewhere"))
    assert spec.base_config()["data_dir"].startswith("/") and "~" not in spec.base_config()["data_dir"]


@pytest.mark.parametrize("model, block, depth, ok", [
    ("cifar", "basic", 20, True), ("cifar", "basic", 110, True), ("cifar", "basic", 21, False),
    ("cifar", "bottleneck", 29, True), ("cifar", "bottleneck", 56, True), ("cifar", "bottleneck", 32, False),
    ("imagenet", "basic", 18, True), ("imagenet", "basic", 50, False), ("imagenet", "bottleneck", 152, True),
    ("imagenet", "bottleneck", 34, False), ("cifar", "basic", 2, False),
    ("cifar", "preact", 110, True), ("cifar", "preact", 164, True), ("cifar", "preact", 1001, False),
    ("cifar", "preact_bottleneck", 164, True), ("cifar", "preact_bottleneck", 1001, True),
    ("cifar", "preact_bottleneck", 110, True), ("cifar", "preact_bottleneck", 1202, False),
    ("imagenet", "preact_bottleneck", 50, False), ("imagenet", "preact", 18, False),
])
def test_depth_rule_agrees_with_the_model_builder(model, block, depth, ok):
    from trainers.models import build_model

    assert depth_allowed(model, block, depth) is ok
    if ok:
        build_model(model, depth, block, "B", 10)
    else:
        with pytest.raises(ValueError):
            build_model(model, depth, block, "B", 10)


# --- one class of mistake each: the line names the file, the key, what is wrong, what is allowed


def test_unknown_key_lists_the_allowed_ones():
    (line,) = problems(edit(grid="grid:\n  depth: [8]\n  colour: [red]"))
    assert line == "bad.yaml: grid.colour: unknown key (allowed: depth, block, shortcut, seed, exclude)"


def test_unknown_top_level_key():
    (line,) = problems(edit(epochs="epochs: 3"))
    assert line.startswith("bad.yaml: epochs: unknown key (allowed: name, dataset, data_dir, model, grid, train,")


def test_wrong_type_is_named():
    (line,) = problems(edit(grid="grid:\n  depth: [8]\n  seed: [0, 'one']"))
    assert line == "bad.yaml: grid.seed[1]: expected a whole number, got 'one'"


def test_value_outside_a_choice_lists_the_choices():
    (line,) = problems(edit(grid="grid:\n  depth: [8]\n  shortcut: [D]"))
    assert line == "bad.yaml: grid.shortcut[0]: 'D' is not allowed (allowed: none, A, B, C)"


def test_missing_required_key():
    (line,) = problems(edit(model=None))
    assert line == "bad.yaml: model: missing (this key is required)"


def test_depth_the_family_cannot_have():
    (line,) = problems(edit(grid="grid:\n  depth: [8, 21]"))
    assert line.startswith("bad.yaml: grid.depth: 21 is not a depth of cifar nets with basic blocks "
                           "(allowed: 6n+2 = 8, 14, 20,")


def test_depth_checked_per_block_type():
    (line,) = problems(edit(grid="grid:\n  depth: [14]\n  block: [basic, bottleneck]"))
    assert "14 is not a depth of cifar nets with bottleneck blocks (allowed: 9n+2 = 11, 20, 29," in line


def test_imagenet_depths():
    (line,) = problems(edit(model="model: imagenet", synthetic="synthetic: {image_size: 64}",
                            grid="grid:\n  depth: [18, 20]"))
    assert line == "bad.yaml: grid.depth: 20 is not a depth of imagenet nets with basic blocks (allowed: 18, 34)"


def test_digits_through_an_imagenet_stem_is_refused():
    (line,) = problems(edit(dataset="dataset: digits", synthetic=None, model="model: imagenet",
                            grid="grid:\n  depth: [18]"))
    assert line.startswith("bad.yaml: model: imagenet's stem and stages shrink images 32-fold; "
                           "digits's 8x8 images are too small (allowed: model: cifar")


def test_probes_every_below_one():
    (line,) = problems(edit(probes="probes: {every: 0}"))
    assert line == "bad.yaml: probes.every: 0 is out of range (allowed: >= 1)"


def test_empty_grid_axis():
    (line,) = problems(edit(grid="grid:\n  depth: []"))
    assert line == "bad.yaml: grid.depth: empty (allowed: a list of at least one value)"


def test_reversed_search_bounds():
    (line,) = problems(edit(search="search:\n  space:\n    lr: {log_uniform: [0.5, 0.01]}"))
    assert line == ("bad.yaml: search.space.lr.log_uniform: bounds [0.5, 0.01] are reversed or equal "
                    "(allowed: [low, high], low < high)")


def test_milestones_beyond_the_last_epoch():
    (line,) = problems(edit(train="train:\n  epochs: 3\n  lr_milestones: [2, 5]"))
    assert line == "bad.yaml: train.lr_milestones: [2, 5] (allowed: epochs from 1 to train.epochs = 3)"


def test_validation_metric_without_a_validation_split():
    (line,) = problems(edit(search="search: {metric: val_err}"))
    assert line.startswith("bad.yaml: search.metric: val_err needs a validation split (set train.val_size > 0")


def test_exclude_that_matches_nothing():
    (line,) = problems(edit(grid="grid:\n  depth: [8]\n  exclude: [{depth: 14}]"))
    assert line == "bad.yaml: grid.exclude[0]: {'depth': 14} matches no grid point"


def test_key_given_twice():
    (line,) = problems(GOOD + "name: again\n")
    assert line.startswith("bad.yaml: line 13: not valid YAML: key 'name' is given twice")


def test_not_yaml_at_all():
    (line,) = problems("name: [unclosed\n")
    assert line.startswith("bad.yaml: line 2: not valid YAML:")


def test_every_problem_is_reported_at_once():
    lines = problems("""
        name: bad name
        dataset: digits
        model: imagenet
        grid:
          depth: [20]
          block: [basic, fancy]
          shortcut: []
        train: {epochs: 2, lr_milestones: [3]}
        probes: {every: 0}
        search:
          space:
            lr: {uniform: [1.0, 0.1]}
        colour: red
    """)
    keys = [line.split(": ")[1] for line in lines]
    assert keys == ["name", "grid.block[1]", "grid.shortcut", "probes.every", "colour", "grid.depth", "model",
                    "train.lr_milestones", "search.space.lr.uniform"]
    assert all(line.startswith("bad.yaml: ") and "\n" not in line for line in lines)


def test_missing_file_is_one_line(tmp_path):
    with pytest.raises(SpecError) as info:
        load_spec(tmp_path / "nope.yaml")
    assert info.value.problems == [f"{tmp_path / 'nope.yaml'}: no such file (give the path of a sweep YAML file)"]


def test_rename_sets_the_parsed_name_and_keeps_every_other_byte():
    from orchestrator.run.spec import rename

    text = "# my sweep\nname: old   # the old name\ndataset: synthetic\nmodel: cifar\n" \
           "grid: {depth: [8]}\ntrain: {epochs: 1}\n"
    spec, new_text = rename(text, "s.yaml", "1e3")  # a name YAML would read as a number unquoted
    assert spec.name == "1e3"
    assert new_text == text.replace("name: old", 'name: "1e3"')


@pytest.mark.parametrize("bad", ["x\\", "a\nb: 1", "x#y", "x y", "", ".hidden"])
def test_rename_refuses_what_is_not_a_name(bad):
    from resweep.errors import UserError
    from orchestrator.run.spec import rename

    with pytest.raises(UserError, match="not a usable sweep name"):
        rename("name: old\n", "s.yaml", bad)

# --- precision, warm-up cap, pre-activation blocks (issue 14) ---


def test_precision_defaults_to_fp32_and_is_in_every_trial_config():
    spec = parse_spec(GOOD)
    assert spec.train.precision == "fp32"
    assert {spec.trial_config(p)["precision"] for p in spec.points()} == {"fp32"}
    bf16 = parse_spec(edit(train="train: {epochs: 3, precision: bf16}"))
    assert bf16.trial_config(bf16.points()[0])["precision"] == "bf16"


def test_unknown_precision_is_one_line_with_the_choices():
    assert problems(edit(train="train: {epochs: 3, precision: fp16}")) == [
        "bad.yaml: train.precision: 'fp16' is not allowed (allowed: fp32, bf16)"]


def test_warmup_cap_defaults_to_400_and_follows_the_warmed_depths():
    spec = parse_spec(edit(train="train: {epochs: 3, warmup: {lr: 0.01, until_train_err: 0.8, depths: [14]}}"))
    configs = {p["depth"]: spec.trial_config(p) for p in spec.points()}
    assert configs[14]["warmup_max_iterations"] == 400 and configs[14]["warmup_lr"] == 0.01
    assert configs[8]["warmup_max_iterations"] is None and configs[8]["warmup_lr"] is None
    capped = parse_spec(edit(train="train: {epochs: 3, warmup: {lr: 0.01, until_train_err: 0.8, max_iterations: 7}}"))
    assert capped.base_config()["warmup_max_iterations"] == 7
    uncapped = parse_spec(edit(train="train: {epochs: 3, warmup: {lr: 0.01, until_train_err: 0.8, max_iterations: null}}"))
    assert uncapped.base_config()["warmup_max_iterations"] is None
    assert problems(edit(train="train: {epochs: 3, warmup: {lr: 0.01, until_train_err: 0.8, max_iterations: 0}}")) == [
        "bad.yaml: train.warmup.max_iterations: 0 is out of range (allowed: >= 1)"]


def test_preact_blocks_validate_with_their_depth_rules():
    spec = parse_spec(edit(grid="grid: {depth: [8, 11], block: [preact, preact_bottleneck], shortcut: [A],"
                                " exclude: [{depth: 8, block: preact_bottleneck}, {depth: 11, block: preact}]}"))
    assert {(p["depth"], p["block"]) for p in spec.points()} == {(8, "preact"), (11, "preact_bottleneck")}
    assert problems(edit(grid="grid: {depth: [11], block: [preact]}")) == [
        "bad.yaml: grid.depth: 11 is not a depth of cifar nets with preact blocks (allowed: 6n+2 = 8, 14, 20, 26, "
        "32, 38, 44, 50, ...)"]


def test_preact_on_imagenet_and_zero_init_with_preact_are_refused():
    lines = problems("""
        name: x
        dataset: synthetic
        model: imagenet
        synthetic: {image_size: 32}
        grid: {depth: [50], block: [preact_bottleneck]}
        train: {epochs: 1}
        model_options: {zero_init_residual: true}
    """)
    assert lines == [
        "bad.yaml: grid.depth: 50 is not a depth of imagenet nets with preact_bottleneck blocks (allowed: none: "
        "pre-activation units are for model cifar)",
        "bad.yaml: model_options.zero_init_residual: zeroes the last BN of each residual branch, and "
        "preact_bottleneck units end in a conv (allowed: false with pre-activation blocks)",
    ]


PAPER_FILES = ["depth.yaml", "shortcuts.yaml", "bottleneck.yaml", "responses.yaml", "resnet1202.yaml", "preact.yaml"]


@pytest.mark.parametrize("name", PAPER_FILES)
def test_paper_reproduction_files_train_in_fp32_and_cap_the_warmup_at_400(name):
    spec, text = load_spec(next(p for p in SWEEPS if p.name == name))
    assert spec.train.precision == "fp32" and "precision: fp32" in text
    assert spec.train.epochs == 164 and spec.train.lr_milestones == [82, 123] and spec.train.batch_size == 128
    if spec.train.warmup is not None and spec.train.warmup.iterations is None:
        assert spec.train.warmup.max_iterations == 400 and "max_iterations: 400" in text


def test_resnet1202_file_is_table6s_last_row_with_its_warmup():
    spec, _ = load_spec(next(p for p in SWEEPS if p.name == "resnet1202.yaml"))
    assert {(p["depth"], p["block"], p["shortcut"]) for p in spec.points()} == {(110, "basic", "A"), (1202, "basic", "A")}
    configs = [spec.trial_config(p) for p in spec.points()]
    assert all(c["warmup_lr"] == 0.01 and c["warmup_until_train_err"] == 0.8 for c in configs)


def test_preact_files_compare_original_and_preactivation_units():
    spec, _ = load_spec(next(p for p in SWEEPS if p.name == "preact.yaml"))
    assert spec.dataset == "cifar10"
    assert {(p["depth"], p["block"]) for p in spec.points()} == {
        (110, "basic"), (110, "preact"), (164, "bottleneck"), (164, "preact_bottleneck"),
        (1001, "bottleneck"), (1001, "preact_bottleneck")}
    small, _ = load_spec(next(p for p in SWEEPS if p.name == "preact-digits.yaml"))
    assert small.dataset == "digits" and small.resources.gpu == 0 and len(small.grid.seed) == 3
    assert {p["block"] for p in small.points()} == {"basic", "preact"} and len(small.grid.depth) == 2


# --- numbers a user would not mean, and the trial config's rules at the file's keys ---------------

BIG = "100000000000000000000"  # 10^20 (YAML reads 1e20 without a dot as a string)


@pytest.mark.parametrize("sections, line", [
    ({"train": "train: {epochs: 3, lr: .inf}"}, "train.lr: expected a finite number, got inf"),
    ({"train": "train: {epochs: 3, lr: .nan}"}, "train.lr: expected a finite number, got nan"),
    ({"train": "train: {epochs: 3, warmup: {lr: .inf, until_train_err: 0.8}}"},
     "train.warmup.lr: expected a finite number, got inf"),
    ({"train": f"train: {{epochs: {BIG}}}"}, f"train.epochs: {BIG} is out of range (allowed: <= 100000)"),
    ({"train": f"train: {{epochs: 3, batch_size: {BIG}}}"},
     f"train.batch_size: {BIG} is out of range (allowed: <= 1048576)"),
    ({"grid": "grid: {depth: [8, 6000000002]}"}, "grid.depth[1]: 6000000002 is out of range (allowed: <= 5000)"),
    ({"grid": f"grid: {{depth: [8], seed: [{BIG}]}}"}, f"grid.seed[0]: {BIG} is out of range (allowed: <= 2147483647)"),
    ({"train": "train: {epochs: 3, momentum: .inf}"}, "train.momentum: expected a finite number, got inf"),
    ({"train": "train: {epochs: 3, momentum: 1.5}"}, "train.momentum: 1.5 is out of range (allowed: < 1.0)"),
    ({"train": "train: {epochs: 3, weight_decay: .inf}"}, "train.weight_decay: expected a finite number, got inf"),
    ({"train": "train: {epochs: 3, weight_decay: 2}"}, "train.weight_decay: 2 is out of range (allowed: <= 1.0)"),
    ({"train": f"train: {{epochs: 3, val_size: {BIG}}}"}, f"train.val_size: {BIG} is out of range (allowed: <= 100000000)"),
    ({"train": f"train: {{epochs: 3, max_train_samples: {BIG}}}"},
     f"train.max_train_samples: {BIG} is out of range (allowed: <= 100000000)"),
    ({"probes": f"probes: {{every: {BIG}}}"}, f"probes.every: {BIG} is out of range (allowed: <= 100000)"),
    ({"resources": "resources: {cpu: .inf}"}, "resources.cpu: expected a finite number, got inf"),
    ({"resources": "resources: {gpu: 1000}"}, "resources.gpu: 1000 is out of range (allowed: <= 64.0)"),
    ({"search": "search:\n  space:\n    lr: {log_uniform: [0.01, .inf]}"},
     "search.space.lr.log_uniform[1]: expected a finite number, got inf"),
    ({"search": "search:\n  space:\n    batch_size: {choice: [64, 2097152]}"},
     "search.space.batch_size.choice[1]: 2097152 is out of range (allowed: <= 1048576)"),
    ({"scheduler": "scheduler: {type: asha, reduction_factor: .inf}"},
     "scheduler.reduction_factor: expected a finite number, got inf"),
])  # fmt: skip
def test_a_number_no_study_would_use_is_one_line_at_its_key(sections, line):
    assert problems(edit(**sections)) == [f"bad.yaml: {line}"]


def test_the_trial_configs_rules_are_reported_at_the_files_keys_beside_other_problems():
    lines = problems(edit(train="train: {epochs: 0, lr_milestones: [5], nesterov: true, momentum: 0, lr: .inf}",
                          model_options="model_options: {zero_init_residual: true}",
                          grid="grid: {depth: [8, 14], block: [preact, basic]}"))
    assert lines == [
        "bad.yaml: train.epochs: 0 is out of range (allowed: >= 1)",
        "bad.yaml: train.lr: expected a finite number, got inf",
        # the milestones are not judged against epochs that are themselves wrong
        "bad.yaml: train.nesterov: true needs a momentum above 0 (train.momentum is 0.0; allowed: nesterov false, "
        "or momentum > 0)",
        "bad.yaml: model_options.zero_init_residual: zeroes the last BN of each residual branch, and preact units "
        "end in a conv (allowed: false with pre-activation blocks)",
    ]


def test_a_rule_over_a_missing_key_waits_for_that_key():
    lines = problems(edit(train="train: {lr_milestones: [500]}"))
    assert lines == ["bad.yaml: train.epochs: missing (this key is required)"]


def test_one_home_for_the_grid_axes_the_search_metrics_and_the_trial_cap():
    import inspect

    from db.models import METRIC_NAMES
    from orchestrator.cli.run import launch
    from orchestrator.run import spec as spec_module
    from resweep.paper import AXES, GRID_AXES

    assert spec_module.AXES is GRID_AXES and set(GRID_AXES) < set(AXES)
    assert set(spec_module.Metric.__args__) == {n for n in METRIC_NAMES if n.endswith(("_err", "_loss"))}
    assert problems(edit(search="search: {metric: lr}"))[0].startswith("bad.yaml: search.metric: 'lr' is not allowed")
    assert inspect.signature(launch).parameters["max_trials"].default == spec_module.DEFAULT_MAX_TRIALS


def test_the_eccv_files_warm_up_for_a_fixed_number_of_iterations_with_the_papers_shortcuts():
    # ECCV 2016's appendix: lr 0.01 for the first 400 iterations of every CIFAR net, whatever the error
    # (CVPR's "until the training error is below 80 %" ended after 8-26 iterations on digits).
    spec, text = load_spec(next(p for p in SWEEPS if p.name == "preact.yaml"))
    configs = [spec.trial_config(p) for p in spec.points()]
    assert len(configs) == 18
    assert all((c["warmup_lr"], c["warmup_iterations"], c["warmup_until_train_err"]) == (0.01, 400, None)
               for c in configs)
    assert {(c["depth"], c["shortcut"]) for c in configs} == {(110, "A"), (164, "B"), (1001, "B")}
    assert "at the beginning 400 iterations" in text and "ECCV" in text.splitlines()[1]
    small, _ = load_spec(next(p for p in SWEEPS if p.name == "preact-digits.yaml"))
    assert {(c["warmup_iterations"], c["warmup_until_train_err"]) for c in map(small.trial_config, small.points())} == {
        (12, None)}


def test_a_warmup_is_fixed_or_decided_by_the_error_at_the_files_keys():
    fixed = parse_spec(edit(train="train: {epochs: 3, warmup: {lr: 0.01, iterations: 7}}"))
    assert (fixed.base_config()["warmup_iterations"], fixed.base_config()["warmup_until_train_err"]) == (7, None)
    both = problems(edit(train="train: {epochs: 3, warmup: {lr: 0.01, iterations: 7, until_train_err: 0.8}}"))
    assert len(both) == 1 and both[0].startswith("bad.yaml: train.warmup.iterations: a fixed warm-up of 7 iterations")
    assert "allowed: one of train.warmup.iterations and train.warmup.until_train_err" in both[0]
    endless = problems(edit(train="train: {epochs: 3, warmup: {lr: 0.01}}"))
    assert len(endless) == 1 and "a warm-up needs its end" in endless[0] and endless[0].startswith("bad.yaml: train.warmup")
