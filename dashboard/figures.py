"""Plotly figures of the pages, drawn from the frames of `dashboard.aggregate` (no Streamlit).

The styles follow the paper: Fig. 6 draws training error thin and dashed, test error bold;
Fig. 7 plots each 3x3 layer's response std in forward order and again sorted by magnitude.
"""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from dashboard.aggregate import GROUP_AXES, group_label, order_key, varying

PALETTE = qualitative.D3 + qualitative.Dark2
ERROR_METRICS = {"error": ("train_err", "test_err"), "loss": ("train_loss", "test_loss")}
TEST_WIDTH, TRAIN_WIDTH = 2.6, 1.1
BAND_OPACITY = 0.13


def _colour_map(values: list) -> dict:
    return {v: PALETTE[i % len(PALETTE)] for i, v in enumerate(sorted(set(values), key=order_key))}


def _rgba(hex_colour: str, alpha: float) -> str:
    h = hex_colour.lstrip("#")
    r, g, b = (int(h[i : i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r},{g},{b},{alpha})"


def curves_figure(
    bands: pd.DataFrame, *, kind: str, colour: str, split: str, log_y: bool, height: int = 480
) -> go.Figure:
    """Training (thin, dashed) and test (bold) curves per group, mean over seeds with a band of
    +- one std, one panel per value of the axis `split` ('': one panel), coloured by `colour`.

    bands: the output of `aggregate.curve_bands` (with the `net` axis added when split is net).
    """
    train_name, test_name = ERROR_METRICS[kind]
    scale = 100.0 if kind == "error" else 1.0
    panels = sorted(bands[split].unique(), key=order_key) if split else [None]
    fig = make_subplots(
        rows=1, cols=len(panels), shared_yaxes=True, horizontal_spacing=0.04,
        subplot_titles=[str(p) for p in panels] if split else None,
    )  # fmt: skip
    colours = _colour_map(bands[colour].tolist())
    vary = varying(bands)
    groups = bands.groupby(GROUP_AXES, sort=False)
    ordered = sorted(groups.groups, key=lambda k: tuple(order_key(v) for v in k))
    for key in ordered:
        g = groups.get_group(key)
        row = dict(zip(GROUP_AXES, key))
        label = group_label(row, vary)
        col = panels.index(g[split].iloc[0]) + 1 if split else 1
        hue = colours[row[colour]]
        for name, width, dash in ((test_name, TEST_WIDTH, None), (train_name, TRAIN_WIDTH, "dash")):
            line = g[g["name"] == name].sort_values("epoch")
            if line.empty:
                continue
            x, mean, std = line["epoch"], line["mean"] * scale, line["std"].fillna(0) * scale
            if (line["n"] > 1).any():
                low = (mean - std).clip(lower=1e-6) if log_y else mean - std
                fig.add_trace(go.Scatter(
                    x=pd.concat([x, x[::-1]]), y=pd.concat([mean + std, low[::-1]]),
                    mode="lines", fill="toself", fillcolor=_rgba(hue, BAND_OPACITY), line={"width": 0},
                    hoverinfo="skip", showlegend=False, legendgroup=label,
                ), row=1, col=col)  # fmt: skip
            n = int(line["n"].max())
            fig.add_trace(go.Scatter(
                x=x, y=mean, mode="lines", name=label, legendgroup=label,
                showlegend=name == test_name, line={"color": hue, "width": width, "dash": dash},
                hovertemplate=f"{label}, {name}<br>epoch %{{x}}: %{{y:.3g}} (mean of {n} seed{'s' * (n > 1)})<extra></extra>",
            ), row=1, col=col)  # fmt: skip
    y_title = "error (%)" if kind == "error" else "loss"
    fig.update_yaxes(type="log" if log_y else "linear")
    fig.update_yaxes(title_text=y_title, row=1, col=1)
    fig.update_xaxes(title_text="epoch")
    fig.update_layout(
        height=height, margin={"l": 60, "r": 20, "t": 40, "b": 50},
        legend={"title": {"text": "bold: test, dashed: train"}},
    )  # fmt: skip
    return fig


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
    fig = make_subplots(
        rows=2, cols=1, vertical_spacing=0.2,
        subplot_titles=(f"in forward order ({epoch_label})", "sorted by magnitude"),
    )  # fmt: skip
    vary = varying(profiles)
    groups = profiles.groupby(GROUP_AXES, sort=False)
    ordered = sorted(groups.groups, key=lambda k: tuple(order_key(v) for v in k))
    for i, key in enumerate(ordered):
        g = groups.get_group(key)
        row = dict(zip(GROUP_AXES, key))
        label = group_label(row, vary)
        style = {"color": PALETTE[i % len(PALETTE)], "width": 1.6, "dash": "dash" if row["shortcut"] == "none" else None}
        by_layer = g.sort_values("layer")
        by_rank = g.sort_values("rank")
        fig.add_trace(go.Scatter(
            x=by_layer["layer"] + 1, y=by_layer["std"], mode="lines", name=label, legendgroup=label,
            line=style, hovertemplate=f"{label}<br>layer %{{x}}: std %{{y:.3g}}<extra></extra>",
        ), row=1, col=1)  # fmt: skip
        fig.add_trace(go.Scatter(
            x=by_rank["rank"] + 1, y=by_rank["std"], mode="lines", name=label, legendgroup=label,
            showlegend=False, line=style, hovertemplate=f"{label}<br>rank %{{x}}: std %{{y:.3g}}<extra></extra>",
        ), row=2, col=1)  # fmt: skip
    fig.update_xaxes(title_text="layer index (original)", row=1, col=1)
    fig.update_xaxes(title_text="layer index (sorted by magnitude)", row=2, col=1)
    fig.update_yaxes(title_text="std")
    fig.update_layout(height=680, margin={"l": 60, "r": 20, "t": 40, "b": 50})
    return fig
