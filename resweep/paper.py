"""The papers' vocabulary: the grid's axes, what a net is called (in the report, on the dashboard,
on the console), and the reference numbers, each with its source, its kind, its shortcut option and
the recipe it was trained with.

A reference is compared like with like (resweep.stats.vs_reference, whose docstring has the
intervals): a mean +- std over runs with our mean over seeds (Welch), a median with our median, a
single run (or a number of unstated kind) with our mean as one more run, a best of N shown beside
our best seed and not judged. What a kind means:

- ``single_run``: one training run (CVPR Table 6 for every depth but 110: its text says ResNet-110
  was run 5 times, so the others were run once);
- ``best_of``: the lowest test error of `runs` runs (CVPR Table 6, ResNet-110: 6.43 %);
- ``mean_std``: the mean and standard deviation over `runs` runs (CVPR Table 6, ResNet-110:
  6.61 +- 0.16; ECCV Table 4's brackets);
- ``median_of``: the median of `runs` runs (ECCV Table 4's caption: "Our results are the median
  of 5 runs with mean±std in the brackets");
- ``unstated``: the paper does not say (ECCV Tables 2 and 3 print one number per net, without a
  caption on runs): judged as if one run, the widest interval of the kinds it could be.

Each reference carries `source`: the paper (or README), the table, its row and column as printed,
and the sentence that says what kind of number it is; tests/resweep/test_paper.py reads it.

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

Kind = Literal["single_run", "best_of", "mean_std", "median_of", "unstated"]

CVPR2016 = "He et al. 2016 (CVPR)"  # "Deep Residual Learning for Image Recognition", arXiv:1512.03385
ECCV2016 = "He et al. 2016 (ECCV)"  # "Identity Mappings in Deep Residual Networks", arXiv:1603.05027
README_1K = "github.com/KaimingHe/resnet-1k-layers README"  # the ECCV authors' Torch code

# The recipes the reference numbers were trained with (the sweep files that follow one say so).
RECIPES = {
    "cvpr_cifar": (
        "CVPR 2016 Sec. 4.2: batch 128 on 2 GPUs, lr 0.1 divided by 10 at 32k and 48k iterations, "
        "training ends at 64k (164 epochs of 50k images), weight decay 1e-4, momentum 0.9, 4-pixel "
        "padding + 32x32 crops + horizontal flips, per-pixel mean subtracted; ResNet-110 (and 1202) "
        "warm up at lr 0.01 until the training error is below 80 % (about 400 iterations)"),
    "eccv_cifar": (
        "ECCV 2016 appendix: the CVPR recipe (batch 128 on 2 GPUs, lr 0.1 divided by 10 at 32k and "
        "48k iterations, weight decay 1e-4, momentum 0.9, translation + flip augmentation), with "
        "every CIFAR net warmed up at lr 0.01 for the first 400 iterations, then 0.1"),
    "eccv_code_batch64": (
        "resnet-1k-layers README: the authors' Torch code (fb.resnet.torch) with a mini-batch of 64 "
        "(to fit ResNet-1001 into memory), its usage line -batchSize 64 -nEpochs 200"),
}


@dataclass(frozen=True)
class Reference:
    """One published test error of one net, what kind of number it is, and where it is printed."""

    source: str  # paper or README, table, row and column as printed, and the words that give its kind
    dataset: str
    model: str
    depth: int
    block: str
    shortcut: str  # the option the paper's net used: CVPR's CIFAR nets A, ECCV's bottlenecks B
    test_err: float  # percent
    kind: Kind
    runs: int = 1  # how many runs the number summarises
    std: float | None = None  # mean_std: the std over those runs (percent)
    params_m: float | None = None  # parameters in millions, as the paper prints them
    recipe: str = "cvpr_cifar"  # a key of RECIPES
    batch_size: int = 128  # the recipe's mini-batch: compared only with sweeps of this batch size

    @property
    def paper(self) -> str:
        """Where it is printed, short: 'He et al. 2016 (ECCV), Table 3', 'github.com/... README'."""
        return self.source.split(":")[0]

    @property
    def text(self) -> str:
        """'6.43 (best of 5)', '6.61 ± 0.16 (mean of 5)', '8.75 (single run)', '5.46 (median of 5)',
        '5.93 (runs not stated)'."""
        if self.kind == "mean_std":
            return f"{mean_std(self.test_err, self.std)} (mean of {self.runs})"
        if self.kind == "single_run":
            return f"{self.test_err:.2f} (single run)"
        if self.kind == "unstated":
            return f"{self.test_err:.2f} (runs not stated)"
        return f"{self.test_err:.2f} ({self.kind.split('_')[0]} of {self.runs})"


_T6 = (f"{CVPR2016}, Table 6: CIFAR-10, option A (Sec. 4.2, 'we use identity shortcuts in all cases'), "
       "row ResNet-{depth}, column error (%), {printed}; {kind_words}")
_ONCE = ("one run: the caption says only 'For ResNet-110, we run it 5 times and show \"best (mean±std)\"', "
         "so the other depths were run once")


def _t6(depth: int, err: float, params: float, printed: str, kind_words: str = _ONCE, kind: Kind = "single_run",
        runs: int = 1, std=None) -> Reference:
    source = _T6.format(depth=depth, printed=printed, kind_words=kind_words)
    return Reference(source, "cifar10", "cifar", depth, "basic", "A", err, kind, runs, std, params)


_MEDIAN = "Table 4 caption: 'Our results are the median of 5 runs with mean±std in the brackets'"
_UNSTATED = "the number of runs is not stated for this table"


def _eccv(table: str, dataset: str, depth: int, block: str, shortcut: str, err: float, kind: Kind,
          params: float, words: str, runs: int = 1, std=None, recipe: str = "eccv_cifar",
          batch_size: int = 128) -> Reference:
    return Reference(f"{ECCV2016}, {table}: {words}", dataset, "cifar", depth, block, shortcut, err, kind, runs,
                     std, params, recipe, batch_size)


REFERENCES: tuple[Reference, ...] = (
    # CVPR 2016, Table 6: CIFAR-10, basic blocks, option A, the CVPR recipe.
    _t6(20, 8.75, 0.27, "8.75"),
    _t6(32, 7.51, 0.46, "7.51"),
    _t6(44, 7.17, 0.66, "7.17"),
    _t6(56, 6.97, 0.85, "6.97"),
    _t6(110, 6.43, 1.7, "6.43 (6.61±0.16)", "caption 'For ResNet-110, we run it 5 times and show \"best (mean±std)\"': the best of 5",
        "best_of", 5),
    _t6(110, 6.61, 1.7, "6.43 (6.61±0.16)", "caption 'For ResNet-110, we run it 5 times and show \"best (mean±std)\"': the mean±std of 5",
        "mean_std", 5, 0.16),
    _t6(1202, 7.93, 19.4, "7.93"),
    # ECCV 2016 repeats ResNet-110's original-unit 6.61 (Tables 1-3): it is the CVPR mean of 5 above
    # (option A), not a number of its own, so it is not filed twice.
    # ECCV 2016, pre-activation ResNet-110 (basic units): the CVPR net (option A) with the units
    # reordered; ECCV recipe.
    _eccv("Table 3", "cifar10", 110, "preact", "A", 6.37, "unstated", 1.7,
          "row CIFAR-10 ResNet-110, column pre-act unit, 6.37 (also Table 2, full pre-activation); "
          + _UNSTATED),
    # ECCV 2016, bottleneck ResNet-164 and ResNet-1001: projection shortcuts where the dimension
    # increases (appendix: "For the bottleneck ResNets, when reducing the feature map size we use
    # projection shortcuts"; resnet-pre-act.lua), so option B.
    _eccv("Table 3", "cifar10", 164, "bottleneck", "B", 5.93, "unstated", 1.7,
          "row CIFAR-10 ResNet-164, column original unit, 5.93 (also Table 2); " + _UNSTATED),
    _eccv("Table 4", "cifar10", 164, "preact_bottleneck", "B", 5.46, "median_of", 1.7,
          "row ResNet-164 [ours], CIFAR-10 column, 5.46 (Table 3: pre-act unit); " + _MEDIAN, 5),
    _eccv("Table 3", "cifar10", 1001, "bottleneck", "B", 7.61, "unstated", 10.2,
          "row CIFAR-10 ResNet-1001, column original unit, 7.61; " + _UNSTATED),
    _eccv("Table 4", "cifar10", 1001, "preact_bottleneck", "B", 4.89, "mean_std", 10.2,
          "row ResNet-1001 [ours], CIFAR-10 column, 4.92 (4.89±0.14): the bracket; " + _MEDIAN, 5, 0.14),
    _eccv("Table 4", "cifar10", 1001, "preact_bottleneck", "B", 4.92, "median_of", 10.2,
          "row ResNet-1001 [ours], CIFAR-10 column, 4.92 (4.89±0.14) (Table 3: pre-act unit); " + _MEDIAN, 5),
    # CIFAR-100, the same nets and recipe.
    _eccv("Table 3", "cifar100", 164, "bottleneck", "B", 25.16, "unstated", 1.7,
          "row CIFAR-100 ResNet-164, column original unit, 25.16; " + _UNSTATED),
    _eccv("Table 4", "cifar100", 164, "preact_bottleneck", "B", 24.33, "median_of", 1.7,
          "row ResNet-164 [ours], CIFAR-100 column, 24.33 (Table 3: pre-act unit); " + _MEDIAN, 5),
    _eccv("Table 3", "cifar100", 1001, "bottleneck", "B", 27.82, "unstated", 10.2,
          "row CIFAR-100 ResNet-1001, column original unit, 27.82; " + _UNSTATED),
    _eccv("Table 4", "cifar100", 1001, "preact_bottleneck", "B", 22.68, "mean_std", 10.2,
          "row ResNet-1001 [ours], CIFAR-100 column, 22.71 (22.68±0.22): the bracket; " + _MEDIAN, 5, 0.22),
    _eccv("Table 4", "cifar100", 1001, "preact_bottleneck", "B", 22.71, "median_of", 10.2,
          "row ResNet-1001 [ours], CIFAR-100 column, 22.71 (22.68±0.22) (Table 3: pre-act unit); " + _MEDIAN, 5),
    # ResNet-1001 with a mini-batch of 64 (Table 4's dagger row; the authors' Torch code): another
    # recipe, compared only with sweeps of batch size 64.
    Reference(f"{README_1K}: table 'CIFAR-10 test error (%): (median (mean+/-std))', row '64 (as in this "
              "code)', 4.62 (4.69+/-0.20): the bracket; ResNet-1001 (the usage line's -depth 1001; also ECCV 2016 "
              "Table 4, the row marked †)",
              "cifar10", "cifar", 1001, "preact_bottleneck", "B", 4.69, "mean_std", 5, 0.20, 10.2,
              "eccv_code_batch64", 64),
    Reference(f"{README_1K}: table 'CIFAR-10 test error (%): (median (mean+/-std))', row '64 (as in this "
              "code)', 4.62 (4.69+/-0.20): the median; ResNet-1001 (the usage line's -depth 1001); ECCV 2016 "
              + _MEDIAN + " (its row marked †)",
              "cifar10", "cifar", 1001, "preact_bottleneck", "B", 4.62, "median_of", 5, None, 10.2,
              "eccv_code_batch64", 64),
)

# He et al. 2016 (CVPR), Table 3: ImageNet ResNet-34's top-1 validation error (%, 10-crop testing)
# with shortcut options A, B and C. Not in REFERENCES: no CIFAR grid point of ours compares with
# them; the report quotes them in the shortcut options' claim.
SHORTCUT_OPTIONS_TOP1 = {"A": 25.03, "B": 24.52, "C": 24.19}

PAPER_EPOCHS = 164  # 64k iterations at batch 128: what the references were trained for

# The depth up to which plain and residual nets are comparably accurate in the papers: CVPR Sec. 4.1,
# "the 18-layer plain/residual nets are comparably accurate (Table 2)" (ImageNet); on CIFAR-10 the
# 20-layer plain net is the best plain net of Fig. 6 (left), where degradation has not set in. The
# cure (a residual net trains better than the plain net of its depth) is claimed for deeper nets.
SHALLOW_DEPTH = {"cifar": 20, "imagenet": 18}


def references(dataset: str, model: str, depth: int, block: str, shortcut: str,
               batch_size: int | None = 128) -> list[Reference]:
    """Every reference number for this configuration trained with mini-batches of `batch_size`
    (None: any), means first (none when no paper ran it)."""
    key = (dataset, model, int(depth), block, shortcut)
    found = [r for r in REFERENCES if (r.dataset, r.model, r.depth, r.block, r.shortcut) == key
             and (batch_size is None or r.batch_size == int(batch_size))]
    return sorted(found, key=lambda r: r.kind != "mean_std")


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
