"""Plotly figures of the pages, drawn from the frames of `resweep.pooling` and `dashboard.aggregate`
(no Streamlit).

The styles follow the paper: Fig. 6 draws training error thin and dashed, test error bold;
Fig. 7 plots each 3x3 layer's response std in forward order and again sorted by magnitude.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative

from dashboard.aggregate import order_key, varying
from resweep.paper import PLAIN, group_label
from resweep.pooling import GROUP_AXES

PALETTE = qualitative.D3 + qualitative.Dark2
ERROR_METRICS = {"error": ("train_err", "test_err"), "loss": ("train_loss", "test_loss")}
TEST_WIDTH, TRAIN_WIDTH = 2.6, 1.1
BAND_OPACITY = 0.13


def _colour_map(values: list) -> dict:
    return {v: PALETTE[i % len(PALETTE)] for i, v in enumerate(sorted(set(values), key=order_key))}


def _sort_column(column: pd.Series) -> pd.Series:
    """Axis values in order_key order; metric names test before train (the bold line first)."""
    if column.name == "name":
        key = lambda n: (0 if n.startswith("test") else 1, n)  # noqa: E731
    elif column.name in GROUP_AXES:
        key = order_key
    else:
        return column
    rank = {value: i for i, value in enumerate(sorted(column.unique(), key=key))}
    return column.map(rank)


def _rgba(hex_colour: str, alpha: float) -> str:
    h = hex_colour.lstrip("#")
    r, g, b = (int(h[i : i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r},{g},{b},{alpha})"


def _panels_side_by_side(titles: list[str], gap: float = 0.04) -> dict:
    """Layout of len(titles) panels in a row sharing one y axis (x, x2, ...; y, y2, ...), each
    titled unless its title is empty.

    Built by hand: plotly's make_subplots and per-trace subplot lookups cost more than half a
    second for the hundred-odd traces of a big sweep.
    """
    n = len(titles)
    width = (1 - gap * (n - 1)) / n
    layout: dict = {}
    for i, title in enumerate(titles):
        suffix = "" if i == 0 else str(i + 1)
        left = i * (width + gap)
        layout[f"xaxis{suffix}"] = {"domain": [left, left + width], "anchor": f"y{suffix}"}
        layout[f"yaxis{suffix}"] = {"anchor": f"x{suffix}", **({"matches": "y", "showticklabels": False} if i else {})}
    layout["annotations"] = [
        {"text": t, "x": i * (width + gap) + width / 2, "y": 1.0, "xref": "paper", "yref": "paper",
         "xanchor": "center", "yanchor": "bottom", "showarrow": False, "font": {"size": 15}}
        for i, t in enumerate(titles) if t
    ]  # fmt: skip
    return layout


def curves_figure(
    bands: pd.DataFrame, *, kind: str, colour: str, split: str, log_y: bool, height: int = 480
) -> go.Figure:
    """Training (thin, dashed) and test (bold) curves per group, mean over seeds with a band of
    +- one std, one panel per value of the axis `split` ('': one panel), coloured by `colour`.

    bands: the output of `resweep.pooling.curve_bands` (with the `net` axis added when split is net).
    """
    train_name, test_name = ERROR_METRICS[kind]
    scale = 100.0 if kind == "error" else 1.0
    panels = sorted(bands[split].unique(), key=order_key) if split else [None]
    layout = _panels_side_by_side([str(p) if split else "" for p in panels])
    colours = _colour_map(bands[colour].tolist())
    vary = varying(bands)
    ordered = bands.sort_values([*GROUP_AXES, "name", "epoch"], key=_sort_column)
    traces = []
    # one pass over (group, metric): test before train so the legend entry is the bold line
    for (*key, name), line in ordered.groupby([*GROUP_AXES, "name"], sort=False):
        if name not in (test_name, train_name):
            continue
        row = dict(zip(GROUP_AXES, key))
        label = group_label(row, vary)
        i = panels.index(line[split].iloc[0]) if split else 0
        axes = {"xaxis": f"x{i + 1 if i else ''}", "yaxis": f"y{i + 1 if i else ''}"}
        hue = colours[row[colour]]
        width, dash = (TEST_WIDTH, None) if name == test_name else (TRAIN_WIDTH, "dash")
        x = line["epoch"].to_numpy()
        mean = line["mean"].to_numpy() * scale
        std = np.nan_to_num(line["std"].to_numpy(dtype=float)) * scale
        n = int(line["n"].max())
        if n > 1:
            low = (mean - std).clip(min=1e-6) if log_y else mean - std
            traces.append({
                "type": "scatter", "x": np.concatenate([x, x[::-1]]),
                "y": np.concatenate([mean + std, low[::-1]]), "mode": "lines", "fill": "toself",
                "fillcolor": _rgba(hue, BAND_OPACITY), "line": {"width": 0}, "hoverinfo": "skip",
                "showlegend": False, "legendgroup": label, **axes,
            })  # fmt: skip
        traces.append({
            "type": "scatter", "x": x, "y": mean, "mode": "lines", "name": label, "legendgroup": label,
            "showlegend": name == test_name, "line": {"color": hue, "width": width, "dash": dash},
            "hovertemplate": f"{label}, {name}<br>epoch %{{x}}: %{{y:.3g}} (mean of {n} seed{'s' * (n > 1)})<extra></extra>",
            **axes,
        })  # fmt: skip
    for name, axis in layout.items():
        if name.startswith("xaxis"):
            axis.update(title={"text": "epoch"}, dtick=1 if bands["epoch"].max() <= 12 else None)
        if name.startswith("yaxis"):
            axis.update(type="log" if log_y else "linear")
    layout["yaxis"]["title"] = {"text": "error (%)" if kind == "error" else "loss"}
    layout.update(
        height=height, margin={"l": 60, "r": 20, "t": 40, "b": 50},
        legend={"title": {"text": "bold: test, dashed: train"}},
    )  # fmt: skip
    return go.Figure(data=traces, layout=layout)


def grid_heatmap(means: pd.DataFrame, texts: pd.DataFrame, *, value: str, rows: str, cols: str) -> go.Figure:
    """A heatmap of the pivoted means (error %), each cell annotated with mean +- std."""
    y = [" / ".join(map(str, i)) if isinstance(i, tuple) else str(i) for i in means.index]
    x = [str(c) for c in means.columns]
    fig = go.Figure(go.Heatmap(
        z=means.to_numpy(dtype=float), x=x, y=y, text=texts.to_numpy(), texttemplate="%{text}",
        colorscale="YlOrRd", colorbar={"title": {"text": f"{value} (%)"}},
        hovertemplate=f"{rows} %{{y}}, {cols} %{{x}}: %{{text}} %<extra></extra>", xgap=2, ygap=2,
    ))  # fmt: skip
    fig.update_xaxes(title_text=cols, type="category")
    fig.update_yaxes(title_text=rows if means.index.nlevels == 1 else " / ".join(means.index.names),
                     type="category", autorange="reversed")
    fig.update_layout(height=max(260, 60 + 44 * len(y)), margin={"l": 60, "r": 20, "t": 20, "b": 50})
    return fig


def layer_figure(profiles: pd.DataFrame, *, epoch_label: str) -> go.Figure:
    """The paper's Fig. 7: response std per 3x3 layer, top in forward order, bottom sorted
    descending; plain nets dashed, residual nets solid, one colour per group."""
    vary = varying(profiles)
    groups = profiles.groupby(GROUP_AXES, sort=False)
    ordered = sorted(groups.groups, key=lambda k: tuple(order_key(v) for v in k))
    traces = []
    for i, key in enumerate(ordered):
        g = groups.get_group(key)
        row = dict(zip(GROUP_AXES, key))
        label = group_label(row, vary)
        style = {"color": PALETTE[i % len(PALETTE)], "width": 1.6, "dash": "dash" if row["shortcut"] == PLAIN else None}
        by_layer = g.sort_values("layer")  # mean: the response std averaged over seeds
        by_rank = g.sort_values("rank")
        traces += [
            {"type": "scatter", "x": by_layer["layer"].to_numpy() + 1, "y": by_layer["mean"].to_numpy(),
             "mode": "lines", "name": label, "legendgroup": label, "line": style,
             "hovertemplate": f"{label}<br>layer %{{x}}: std %{{y:.3g}}<extra></extra>"},
            {"type": "scatter", "x": by_rank["rank"].to_numpy() + 1, "y": by_rank["mean"].to_numpy(),
             "mode": "lines", "name": label, "legendgroup": label, "showlegend": False, "line": style,
             "hovertemplate": f"{label}<br>rank %{{x}}: std %{{y:.3g}}<extra></extra>",
             "xaxis": "x2", "yaxis": "y2"},
        ]  # fmt: skip
    title = {"xref": "paper", "yref": "paper", "x": 0.5, "xanchor": "center", "yanchor": "bottom",
             "showarrow": False, "font": {"size": 15}}  # fmt: skip
    layout = {
        "xaxis": {"domain": [0, 1], "anchor": "y", "title": {"text": "layer index (original)"}},
        "yaxis": {"domain": [0.6, 1], "anchor": "x", "title": {"text": "std"}},
        "xaxis2": {"domain": [0, 1], "anchor": "y2", "title": {"text": "layer index (sorted by magnitude)"}},
        "yaxis2": {"domain": [0, 0.4], "anchor": "x2", "title": {"text": "std"}},
        "annotations": [{**title, "text": f"in forward order ({epoch_label})", "y": 1.0},
                        {**title, "text": "sorted by magnitude", "y": 0.4}],
        "height": 680, "margin": {"l": 60, "r": 20, "t": 40, "b": 50},
    }  # fmt: skip
    return go.Figure(data=traces, layout=layout)
