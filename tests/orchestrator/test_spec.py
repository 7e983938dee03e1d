"""Sweep files: every shipped one validates; every mistake is reported, all at once, one line each."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from orchestrator.spec import SpecError, depth_allowed, load_spec, parse_spec

SWEEPS = sorted((Path(__file__).resolve().parents[2] / "sweeps").glob("*.yaml"))

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
    assert spec.grid.block == ["basic"] and len(spec.grid.seed) == 2
    assert 10 <= spec.train.epochs <= 20


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


def test_flat_trial_config_has_exactly_the_trainers_keys():
    from trainers.trainable import DEFAULTS

    spec = parse_spec(GOOD)
    config = spec.trial_config(spec.points()[0])
    assert set(config) == set(DEFAULTS)
    assert config["synthetic"] == {"num_train": 64, "num_test": 32, "image_size": 8, "channels": 3, "num_classes": 4}
    assert config["probes_every"] == 10 and config["checkpoint_every"] == 1


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
