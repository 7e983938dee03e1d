"""The papers' vocabulary: the grid's axes, what a net is called (in the report, on the dashboard,
on the console), and the reference numbers, each with what kind of number it is.

A reference is compared like with like (resweep.stats.vs_reference): a mean over runs with our
mean over seeds, a best of N runs with our best seed, a median with our median. What a kind means:

- ``single_run``: one training run (He et al. 2016, Table 6, for every depth but 110: its caption
  says ResNet-110 was run 5 times, so the others were run once);
- ``best_of``: the lowest test error of `runs` runs (Table 6, ResNet-110: 6.43 %);
- ``mean_std``: the mean and standard deviation over `runs` runs (Table 6, ResNet-110: 6.61 +- 0.16);
- ``median_of``: the median of `runs` runs (He et al., ECCV 2016: "we report the median accuracy of
  5 runs for each architecture on CIFAR").

Errors are test errors in percent, as the papers print them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Literal, Mapping

from resweep.stats import mean_std

# --- Names: the grid's axes and what the papers call a net ---------------------------------------

AXES = ("dataset", "model", "depth", "block", "shortcut", "seed")  # a trial's grid axes, in display order
GROUP_AXES = AXES[:-1]  # a grid point: a trial's axes without its seed (seeds are pooled over)
GRID_AXES = AXES[2:]  # a sweep file's grid: depth, block, shortcut, seed (one dataset and model a sweep)
PLAIN = "none"  # the shortcut of a plain net: none
RESIDUAL = ("A", "B", "C")  # the shortcut options, in Table 3's order (its error falls A -> B -> C)
PREACT_OF = {"basic": "preact", "bottleneck": "preact_bottleneck"}  # original unit -> pre-activation (ECCV 2016)


def net_name(depth: Any, shortcut: Any) -> str:
    """'plain-20' or 'ResNet-56': a net of this depth without or with shortcuts, as the papers say it."""
    return f"{'plain' if shortcut == PLAIN else 'ResNet'}-{depth}"


def _with(name: str, extras: Iterable[str]) -> str:
    extras = list(extras)
    return f"{name} ({', '.join(extras)})" if extras else name


def net_label(depth: Any, block: str, shortcut: str, *, with_shortcut: bool = True) -> str:
    """A net in the report's words: plain-20, ResNet-56 (A), ResNet-50 (B, bottleneck); the shortcut
    left out with `with_shortcut=False`, the basic block always."""
    extras = [shortcut] if shortcut != PLAIN and with_shortcut else []
    return _with(net_name(depth, shortcut), extras + ([block] if block != "basic" else []))


def group_label(row: Mapping[str, Any], varying_axes: Iterable[str]) -> str:
    """A grid point among others on a dashboard page: its net's name plus each other axis that
    varies there ('ResNet-56 (A)', 'plain-20 (bottleneck)', 'ResNet-20 (dataset cifar100, B)')."""
    extras = [
        str(row[a]) if a in ("block", "shortcut") else f"{a} {row[a]}"
        for a in varying_axes
        if a != "depth" and not (a == "shortcut" and row["shortcut"] == PLAIN)
    ]
    return _with(net_name(row["depth"], row["shortcut"]), extras)


def trial_label(config: Mapping[str, Any] | None) -> str:
    """One trial on the console: plain-56 seed 1, ResNet-110 A seed 0, ResNet-56 bottleneck B seed 2,
    ResNet-56 preact A seed 0 (every block but the basic one is named)."""
    if not config:  # Tune's Result of a trial that never reported has no config
        return "a trial that never reported"
    label = net_name(config.get("depth"), config.get("shortcut"))
    if config.get("block") not in (None, "basic"):
        label += f" {config.get('block')}"
    if config.get("shortcut") != PLAIN:
        label += f" {config.get('shortcut')}"
    return f"{label} seed {config.get('seed')}"


# --- Reference numbers ---------------------------------------------------------------------------

Kind = Literal["single_run", "best_of", "mean_std", "median_of"]

CVPR2016 = "He et al. 2016 (CVPR), Table 6"
ECCV2016 = "He et al. 2016 (ECCV), Table 4"


@dataclass(frozen=True)
class Reference:
    """One published test error of one net, and what kind of number it is."""

    source: str  # paper and table
    dataset: str
    model: str
    depth: int
    block: str
    shortcut: str
    test_err: float  # percent
    kind: Kind
    runs: int = 1  # how many runs the number summarises
    std: float | None = None  # mean_std: the std over those runs (percent)
    params_m: float | None = None  # parameters in millions, as the paper prints them

    @property
    def text(self) -> str:
        """'6.43 (best of 5)', '6.61 ± 0.16 (mean of 5)', '8.75 (single run)', '5.46 (median of 5)'."""
        if self.kind == "mean_std":
            return f"{mean_std(self.test_err, self.std)} (mean of {self.runs})"
        if self.kind == "single_run":
            return f"{self.test_err:.2f} (single run)"
        return f"{self.test_err:.2f} ({self.kind.split('_')[0]} of {self.runs})"


def _t6(depth: int, err: float, params: float, kind: Kind = "single_run", runs: int = 1, std=None) -> Reference:
    return Reference(CVPR2016, "cifar10", "cifar", depth, "basic", "A", err, kind, runs, std, params)


def _t4(depth: int, block: str, err: float, params: float) -> Reference:
    return Reference(ECCV2016, "cifar10", "cifar", depth, block, "B", err, "median_of", 5, None, params)


REFERENCES: tuple[Reference, ...] = (
    _t6(20, 8.75, 0.27),
    _t6(32, 7.51, 0.46),
    _t6(44, 7.17, 0.66),
    _t6(56, 6.97, 0.85),
    _t6(110, 6.43, 1.7, "best_of", 5),
    _t6(110, 6.61, 1.7, "mean_std", 5, 0.16),
    _t6(1202, 7.93, 19.4),
    # ECCV 2016 Table 4, CIFAR-10, original vs pre-activation units; projection shortcuts where the
    # shape changes (its code), so they are filed under shortcut B. (Table 5's 4.62 % for
    # ResNet-1001 is a different recipe, batch 64, and is not here.)
    _t4(110, "basic", 6.61, 1.7),
    _t4(110, "preact", 6.37, 1.7),
    _t4(164, "bottleneck", 5.93, 1.7),
    _t4(164, "preact_bottleneck", 5.46, 1.7),
    _t4(1001, "bottleneck", 7.61, 10.2),
    _t4(1001, "preact_bottleneck", 4.92, 10.2),
)

# He et al. 2016 (CVPR), Table 3: ImageNet ResNet-34's top-1 validation error (%, 10-crop testing)
# with shortcut options A, B and C. Not in REFERENCES: no CIFAR grid point of ours compares with
# them; the report quotes them in the shortcut options' claim.
SHORTCUT_OPTIONS_TOP1 = {"A": 25.03, "B": 24.52, "C": 24.19}

PAPER_EPOCHS = 164  # 64k iterations at batch 128: what the references were trained for


def references(dataset: str, model: str, depth: int, block: str, shortcut: str) -> list[Reference]:
    """Every reference number for this configuration (none when no paper ran it)."""
    key = (dataset, model, int(depth), block, shortcut)
    return [r for r in REFERENCES if (r.dataset, r.model, r.depth, r.block, r.shortcut) == key]


# --- Depth rules: which depths each family of nets has ----------------------------------------------
# One home for them: trainers/models.py builds its stages from `stage_units`, and the sweep file's
# validation (orchestrator/run/spec.py) checks a grid's depths with `depth_allowed`, without torch.

# Layers per residual unit of a CIFAR net: depth = 3 stages * n units * layers + the stem + the fc,
# so basic (and preact) units make 6n+2, bottlenecks (and preact_bottleneck) 9n+2.
CIFAR_LAYERS_PER_UNIT = {"basic": 2, "bottleneck": 3, "preact": 2, "preact_bottleneck": 3}
PREACT_BLOCKS = ("preact", "preact_bottleneck")  # pre-activation units (ECCV 2016): CIFAR layout only
# The deepest CIFAR net built here, about 4x the papers' deepest (ResNet-1202). A net's cost grows
# linearly with its depth: at batch 128 training keeps roughly 15 MB of activations a layer for the
# backward pass, so 5,000 layers (about 80 M parameters) is about what one 80 GB GPU holds. A
# deeper net (`depth: [6000000002]`) is a typo, refused before a model is built.
MAX_DEPTH = 5_000
# An ImageNet net's depth -> (its block, units per stage): CVPR 2016, Table 1.
IMAGENET_LAYERS = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}


def imagenet_depths(block: str) -> tuple[int, ...]:
    """The depths of ImageNet nets built from `block` units (none for pre-activation units)."""
    return tuple(d for d, (b, _) in IMAGENET_LAYERS.items() if b == block)


def stage_units(model: str, depth: int, block: str) -> list[int]:
    """Residual units per stage of a `model` net of `depth` layers built from `block` units, or a
    ValueError naming what is allowed."""
    if model == "cifar":
        if depth > MAX_DEPTH:
            raise ValueError(f"depth {depth} is more than the {MAX_DEPTH:,} layers a cifar net may have here")
        layers_per_unit = CIFAR_LAYERS_PER_UNIT[block]
        n, rest = divmod(depth - 2, 3 * layers_per_unit)
        if n < 1 or rest:
            form = "6n+2 (20, 32, 44, 56, 110, ...)" if layers_per_unit == 2 else "9n+2 (29, 47, 164, 1001, ...)"
            raise ValueError(f"depth {depth} is not a cifar net with {block} blocks: depth must be {form}")
        return [n, n, n]
    if block in PREACT_BLOCKS:
        raise ValueError(f"{block} blocks exist here for cifar nets only, not {model}")
    expected = IMAGENET_LAYERS.get(depth)
    if expected is None or expected[0] != block:
        allowed = ", ".join(f"{d} ({b})" for d, (b, _) in IMAGENET_LAYERS.items())
        raise ValueError(f"imagenet has no {block} net of depth {depth}: allowed depths (block) are {allowed}")
    return list(expected[1])


def depth_allowed(model: str, block: str, depth: int) -> bool:
    """Whether a `model` net built from `block` blocks can have `depth` weighted layers."""
    try:
        stage_units(model, depth, block)
    except ValueError:
        return False
    return True


def allowed_depths(model: str, block: str) -> str:
    """The depths a `model` net of `block` units can have, as a sweep file's error shows them."""
    if model == "imagenet":
        return ", ".join(map(str, imagenet_depths(block))) or "none: pre-activation units are for model cifar"
    k = 3 * CIFAR_LAYERS_PER_UNIT[block]
    return f"{k}n+2 = " + ", ".join(str(k * n + 2) for n in range(1, 9)) + ", ..."
