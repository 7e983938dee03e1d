"""What a page chooses for the reader before they choose: the axes that colour and split the
curves, one colour per net, and the labels of nets from several sweeps. Plain pandas, no
Streamlit.

Choices are made from the chosen sweeps as a whole, never from what the filters keep, so a net
keeps its colour on every page and under every filter.

Big sweeps: the pages that pool every trial's curve or layer records (Curves, Layer responses)
read at most DRAWN trials by default, up to the same number of each net, spread evenly over its
seeds (`drawn`). A net's mean over 50 of its seeds is what its mean over 1,000 would show, and
reading every value of 20,000 trials (four million for two curves of 100 epochs) takes longer
than a page may; the page says how many trials it drew, and the reader can ask for all of them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from plotly.colors import qualitative

from dashboard.aggregate import NET, ONE_PANEL, order_key
from resweep.paper import PLAIN, group_label
from resweep.pooling import GROUP_AXES

PALETTE = qualitative.D3 + qualitative.Dark2 + qualitative.Set1
SWEEP = "sweep"
KEY = [SWEEP, *GROUP_AXES]  # one net of one sweep
COLOUR_NET = "net"  # colour choice: every net its own colour
SPLITS = {"plain|residual": NET, "shortcut": "shortcut", "block": "block", "depth": "depth",
          "dataset": "dataset", "model": "model", "sweep": SWEEP, ONE_PANEL: ""}  # fmt: skip
COLOURS = [COLOUR_NET, "depth", "shortcut", "block", "dataset", "model", SWEEP]
DRAWN = 1000  # trials a pooling page reads by default: 0.2 M values of two 100-epoch curves
LISTED = 1000  # trials the Trial page's menu lists at most: one of 20,000 costs the browser seconds
POOL_SAMPLE, POOL_ALL = "spread", "all"  # the reader's choice where the cap binds (text == URL value)


def varying(frame: pd.DataFrame, axes: list[str] = KEY) -> list[str]:
    """The axes (sweep included) that take more than one value in `frame`."""
    return [a for a in axes if a in frame and frame[a].nunique(dropna=False) > 1]


def default_split(trials: pd.DataFrame) -> str:
    """The panels that show the study: plain | residual where both are there (the paper's Fig. 6),
    else the block or the shortcut where it varies, else the sweeps, else one panel."""
    shortcuts = set(trials["shortcut"])
    if PLAIN in shortcuts and len(shortcuts) > 1:
        return "plain|residual"
    vary = varying(trials)
    for axis in ("block", "shortcut", "dataset", "model", SWEEP):
        if axis in vary:
            return axis
    return ONE_PANEL


def sweep_order(trials: pd.DataFrame) -> dict[str, int]:
    """The sweeps in the order they were chosen (the frame's order)."""
    return {s: i for i, s in enumerate(dict.fromkeys(trials[SWEEP]))}


def _key_order(trials: pd.DataFrame):
    rank = sweep_order(trials)
    return lambda key: (rank.get(key[0], 0), *map(order_key, key[1:]))


def colours(trials: pd.DataFrame, colour: str) -> dict:
    """Colour of every value of `colour` among the chosen sweeps' trials (unfiltered): with
    `net`, of every (sweep, dataset, model, depth, block, shortcut); else of the axis's values."""
    if colour == COLOUR_NET:
        nets = trials[KEY].drop_duplicates()  # a few nets of 20,000 trials: tuples of those only
        keys = sorted(set(nets.itertuples(index=False, name=None)), key=_key_order(trials))
    elif colour == SWEEP:
        keys = list(sweep_order(trials))
    else:
        keys = sorted(set(trials[colour]), key=order_key)
    return {k: PALETTE[i % len(PALETTE)] for i, k in enumerate(keys)}


def colour_of(row: pd.Series | dict, colour: str, palette: dict) -> str:
    key = tuple(row[a] for a in KEY) if colour == COLOUR_NET else row[colour]
    return palette.get(key, PALETTE[0])


def label(row: pd.Series | dict, vary: list[str]) -> str:
    """A net's name with what else varies among the nets shown, and its sweep when several are."""
    name = group_label(row, [a for a in vary if a != SWEEP])
    return f"{name} · {row[SWEEP]}" if SWEEP in vary else name


def with_looks(frame: pd.DataFrame, everything: pd.DataFrame, colour: str) -> pd.DataFrame:
    """`frame` (one row per net and more) with the `label` and `colour` of each row's net, the
    labels naming what varies among the nets in `frame`, the colours fixed by `everything`."""
    palette = colours(everything, colour)
    vary = varying(frame)
    nets = frame[KEY].drop_duplicates()
    looks = nets.assign(
        label=[label(r, vary) for _, r in nets.iterrows()],
        colour=[colour_of(r, colour, palette) for _, r in nets.iterrows()],
    )
    return frame.merge(looks, on=KEY, how="left")


def per_net(trials: pd.DataFrame, budget: int | None = None) -> int:
    """How many trials of each net (sweep and grid point) a pooling page draws: the budget
    (default DRAWN) shared equally by the nets, at least two (a band needs two seeds)."""
    budget = DRAWN if budget is None else budget
    nets = trials[[a for a in KEY if a in trials]].drop_duplicates().shape[0]
    return max(2, budget // max(nets, 1))


def drawn(trials: pd.DataFrame, cap: int) -> pd.DataFrame:
    """At most `cap` trials of each net, spread evenly over its seeds (the lowest and the highest
    seed always among them), in the frame's order; the frame itself when no net has more."""
    keys = [a for a in KEY if a in trials]
    sizes = trials.groupby(keys, sort=False, dropna=False)["trial_id"].transform("size")
    if (sizes <= cap).all():
        return trials
    order = trials.sort_values([*keys, "seed", "trial_id"], kind="stable")
    rank = order.groupby(keys, sort=False, dropna=False).cumcount().to_numpy()
    size = sizes.loc[order.index].to_numpy()
    # evenly spaced ranks 0 .. size-1: rank r is kept where it is the rounded position of some pick
    step = np.where(size > cap, (size - 1) / np.maximum(cap - 1, 1), 1.0)
    pick = np.rint(np.rint(rank / step) * step) == rank
    return trials.loc[np.sort(order.index[pick | (size <= cap)])]


def listed_trials(ids: list[int], wanted: list) -> list[int]:
    """The trials a menu lists: the first LISTED of `ids`, then any of `wanted` (the trial the
    URL names, the session's) that is among `ids` but not among those."""
    listed = ids[:LISTED]
    known, shown = set(ids), set(listed)
    more = sorted({int(w) for w in wanted if str(w).isdigit() and int(w) in known and int(w) not in shown})
    return listed + more
