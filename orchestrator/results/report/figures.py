"""The report's figures, drawn like the paper's: Fig. 6 (training curves) and Fig. 7 (responses).

Figures are built on `matplotlib.figure.Figure` and saved through the Agg canvas, never through
pyplot, so drawing needs no display and leaves no global state behind.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib
import pandas as pd

matplotlib.use("Agg")

from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from orchestrator.results.report.load import ReportData  # noqa: E402
from resweep import pooling  # noqa: E402
from resweep.paper import PLAIN, RESIDUAL, net_label  # noqa: E402

SHORTCUT_ORDER = {s: i for i, s in enumerate((PLAIN, *RESIDUAL))}
SHORTCUT_STYLE = {"none": "--", "A": "-", "B": "-.", "C": ":"}
PANEL_TITLE = {"none": "Plain nets", "A": "ResNets, option A", "B": "ResNets, option B",
               "C": "ResNets, option C"}
DPI = 150


BLOCK_MARKER = {"basic": None, "bottleneck": "s", "preact": "o", "preact_bottleneck": "^"}
RESPONSE_LABEL = ("response std (after the BN that normalises the conv, before ReLU/addition;\n"
                  "residual preact units: the branch output before the addition)")


def depth_colours(depths) -> dict[int, tuple]:
    """One colour per depth, the same in every panel and figure (tab10, shallow to deep)."""
    cmap = matplotlib.colormaps["tab10"]
    return {d: cmap(i % 10) for i, d in enumerate(sorted(set(int(x) for x in depths)))}


def net_colours(keys) -> dict[tuple, tuple]:
    """One colour per (depth, block): nets of one depth built from different blocks differ in
    colour too, not only in marker (tab10, then tab20, in depth order)."""
    pairs = sorted({(int(d), b) for d, b, *_ in keys})
    cmap = matplotlib.colormaps["tab10" if len(pairs) <= 10 else "tab20"]
    return {p: cmap(i % cmap.N) for i, p in enumerate(pairs)}


def _panels(frame) -> list[tuple[str, str]]:
    keys = {(b, s) for b, s in zip(frame["block"], frame["shortcut"])}
    return sorted(keys, key=lambda k: (SHORTCUT_ORDER[k[1]], k[0]))


def _panel_title(block: str, shortcut: str, many_blocks: bool) -> str:
    title = PANEL_TITLE[shortcut]
    return f"{title} ({block} blocks)" if many_blocks or block != "basic" else title


def _error_ylim(values) -> float:
    """Top of the error axis (%): room for the curves once they settle, so the differences the
    figure is about are visible (Fig. 6 likewise cuts off the first epochs' high errors)."""
    top = float(values.max()) if len(values) else math.nan
    if not math.isfinite(top):  # nothing but NaN (diverged trials): show the whole range
        return 100.0
    return min(100.0, max(5.0, math.ceil(1.3 * 100 * top / 5) * 5))


def curves_png(data: ReportData, path: Path) -> Path:
    """curves.png: one panel per kind of net; training error thin dashed, test error bold."""
    train, test = (pooling.curve_bands(data.metric(m), data.trials) for m in ("train_err", "test_err"))
    both = pd.concat([f for f in (train, test) if not f.empty], ignore_index=True)
    panels = _panels(both)
    colours = depth_colours(both["depth"])
    many_blocks = both["block"].nunique() > 1
    last = int(both["epoch"].max())
    settled = both[both["epoch"] >= last / 4] if last >= 8 else both
    top = _error_ylim(settled["mean"] + settled["std"].fillna(0))
    n_seeds = int(data.trials.groupby(["depth", "block", "shortcut"]).size().max())

    cols = 2 if len(panels) == 4 else min(3, len(panels))  # 4 panels: a 2 x 2 grid
    rows = math.ceil(len(panels) / cols)
    fig = Figure(figsize=(5.4 * cols, 0.4 + 4.2 * rows), layout="constrained")
    grid = fig.subplots(rows, cols, sharey=True, squeeze=False)
    axes = grid.ravel()
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    for ax, (block, shortcut) in zip(axes, panels):
        handles = []
        for depth in sorted(colours):
            sel = lambda f: f[(f["depth"] == depth) & (f["block"] == block)  # noqa: E731
                              & (f["shortcut"] == shortcut)].sort_values("epoch")
            tr, te = sel(train), sel(test)
            if tr.empty and te.empty:
                continue
            c = colours[depth]
            for f, lw, ls, alpha in ((tr, 1.0, "--", 0.10), (te, 2.2, "-", 0.18)):
                if f.empty:
                    continue
                x, m, s = f["epoch"], 100 * f["mean"], 100 * f["std"].fillna(0)
                ax.plot(x, m, color=c, lw=lw, ls=ls)
                if (f["n"] > 1).any():
                    ax.fill_between(x, m - s, m + s, color=c, alpha=alpha, lw=0)
            handles.append(Line2D([], [], color=c, lw=2.2,
                                  label=net_label(depth, "basic", shortcut, with_shortcut=False)))
        handles += [Line2D([], [], color="0.3", lw=1.0, ls="--", label="training error"),
                    Line2D([], [], color="0.3", lw=2.2, label="test error")]
        ax.legend(handles=handles, loc="upper right", fontsize=8, framealpha=0.9)
        ax.set_title(_panel_title(block, shortcut, many_blocks), fontsize=11)
        ax.set_xlabel("epoch")
        ax.set_xlim(1, max(last, 2))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylim(0, top)
        ax.grid(alpha=0.3)
    for ax in grid[:, 0]:
        ax.set_ylabel("error (%)")
    band = f", mean ± 1 std over {n_seeds} seeds" if n_seeds > 1 else ""
    fig.suptitle(f"{data.name}: training and test error on {_dataset(data)}{band}", fontsize=12)
    return _save(fig, path)


def responses_png(data: ReportData, path: Path) -> Path | None:
    """responses.png: layer response std in forward order and sorted by magnitude (Fig. 7)."""
    prof = pooling.layer_profiles(data.layers, data.trials)
    if prof.empty:
        return None
    fig = Figure(figsize=(11, 4.8), layout="constrained")
    ax_order, ax_sorted = fig.subplots(1, 2, sharey=True)
    keys = prof.groupby(["depth", "block", "shortcut"]).size().index
    keys = sorted(keys, key=lambda k: (SHORTCUT_ORDER[k[2]] > 0, k[0], SHORTCUT_ORDER[k[2]], k[1]))
    colours = net_colours(keys)
    for depth, block, shortcut in keys:
        p = prof[(prof["depth"] == depth) & (prof["block"] == block)
                 & (prof["shortcut"] == shortcut)].sort_values("layer")
        # colour: depth and block; line style: shortcut; marker: block (every net its own look)
        marker = BLOCK_MARKER.get(block) or ("." if len(p) <= 12 else None)
        style = dict(color=colours[int(depth), block], ls=SHORTCUT_STYLE[shortcut], lw=1.6, marker=marker,
                     markersize=3.5, markevery=max(1, len(p) // 12))
        ax_order.plot(p["layer"] + 1, p["mean"], label=net_label(depth, block, shortcut), **style)
        ax_sorted.plot(range(1, len(p) + 1), p["mean"].sort_values(ascending=False).to_numpy(),
                       **style)
    ax_order.set_title("layers in forward order", fontsize=11)
    ax_order.set_xlabel("layer index (3×3 conv, forward order)")
    ax_sorted.set_title("sorted by magnitude", fontsize=11)
    ax_sorted.set_xlabel("rank (largest response first)")
    ax_order.set_ylabel(RESPONSE_LABEL, fontsize=8.5)
    for ax in (ax_order, ax_sorted):
        ax.set_ylim(bottom=0)
        ax.set_xlim(left=1)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    ax_order.legend(fontsize=8, loc="best", framealpha=0.9)
    epochs = sorted(set(int(e) for e in prof["epoch"]))
    at = f"epoch {epochs[0]}" if len(epochs) == 1 else f"epochs {epochs[0]}-{epochs[-1]}"
    n = int(prof["n"].max())
    seeds = f", mean over {n} seeds" if n > 1 else ""
    fig.suptitle(f"{data.name}: layer responses on the {_dataset(data)} test set ({at}{seeds})",
                 fontsize=12)
    return _save(fig, path)


def _dataset(data: ReportData) -> str:
    names = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "digits": "digits",
             "synthetic": "synthetic data"}
    return " / ".join(names.get(d, d) for d in sorted(set(data.trials["dataset"])))


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=DPI)
    return path
