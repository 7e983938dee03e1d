"""Plotly figures of the pages, drawn from the frames of `resweep.pooling` and `dashboard.aggregate`
(no Streamlit).

The styles follow the paper: Fig. 6 draws training error thin and dashed, test error bold;
Fig. 7 plots each 3x3 layer's response std in forward order and again sorted by magnitude.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from dashboard.aggregate import order_key
from resweep.paper import PLAIN
from resweep.pooling import GROUP_AXES

ERROR_METRICS = {"error": ("train_err", "test_err"), "loss": ("train_loss", "test_loss")}
TEST_WIDTH, TRAIN_WIDTH = 2.6, 1.1
MAX_DEPTH_COLUMNS = 4  # Layer responses: one column of panels per depth, up to this many depths
BAND_OPACITY = 0.13


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


def _rgba(colour: str, alpha: float) -> str:
    """A plotly colour, '#rrggbb' or 'rgb(r, g, b)' (the palettes past D3's ten are the latter), with `alpha`."""
    if colour.startswith("rgb"):
        r, g, b = (int(float(v)) for v in colour[colour.index("(") + 1 : colour.index(")")].split(",")[:3])
    else:
        h = colour.lstrip("#")
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


def placeholder() -> go.Figure:
    """An empty figure 10 pixels high (Plotly's least): no axes, no margins, nothing to see."""
    hidden = {"visible": False}
    return go.Figure(layout={"height": 10, "margin": {"l": 0, "r": 0, "t": 0, "b": 0}, "xaxis": hidden,
                             "yaxis": hidden, "paper_bgcolor": "rgba(0,0,0,0)", "plot_bgcolor": "rgba(0,0,0,0)"})


def curves_figure(bands: pd.DataFrame, *, kind: str, split: str, log_y: bool, height: int = 480) -> go.Figure:
    """Training (thin, dashed) and test (bold) curves per net, mean over seeds with a band of
    +- one std clipped to the possible range (errors 0-100 %, losses above 0), one panel per
    value of the axis `split` ('': one panel).

    bands: `resweep.pooling.curve_bands` per sweep with `sweep`, the `net` axis and each net's
    `label` and `colour` (dashboard.choices.with_looks).
    """
    train_name, test_name = ERROR_METRICS[kind]
    scale = 100.0 if kind == "error" else 1.0
    top = 100.0 if kind == "error" else np.inf
    panels = sorted(bands[split].unique(), key=order_key) if split else [None]
    layout = _panels_side_by_side([str(p) if split else "" for p in panels])
    keys = ["sweep", *GROUP_AXES]
    rank = {s: i for i, s in enumerate(dict.fromkeys(bands["sweep"]))}
    ordered = bands.assign(_sweep=bands["sweep"].map(rank)).sort_values(
        ["_sweep", *GROUP_AXES, "name", "epoch"], key=_sort_column)
    positive = ordered.loc[ordered["mean"] > 0, "mean"]
    floor = float(positive.min()) * scale / 10 if len(positive) else 1e-6  # a log axis's band bottom
    traces = []
    # one pass over (net, metric): test before train so the legend entry is the bold line
    for (*_key, name), line in ordered.groupby(["_sweep", *keys, "name"], sort=False):
        if name not in (test_name, train_name):
            continue
        label, hue = line["label"].iloc[0], line["colour"].iloc[0]
        i = panels.index(line[split].iloc[0]) if split else 0
        axes = {"xaxis": f"x{i + 1 if i else ''}", "yaxis": f"y{i + 1 if i else ''}"}
        width, dash = (TEST_WIDTH, None) if name == test_name else (TRAIN_WIDTH, "dash")
        x = line["epoch"].to_numpy()
        mean = line["mean"].to_numpy(dtype=float) * scale
        std = np.nan_to_num(line["std"].to_numpy(dtype=float)) * scale
        n = int(line["n"].max())
        if n > 1:
            low = (mean - std).clip(min=floor if log_y else 0.0)
            high = (mean + std).clip(max=top)
            traces.append({
                "type": "scatter", "x": np.concatenate([x, x[::-1]]),
                "y": np.concatenate([high, low[::-1]]), "mode": "lines", "fill": "toself",
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
            if kind == "error" and not log_y:
                axis.update(rangemode="tozero")
    layout["yaxis"]["title"] = {"text": "error (%)" if kind == "error" else "loss"}
    layout.update(
        height=height, margin={"l": 60, "r": 20, "t": 40, "b": 50},
        legend={"title": {"text": "bold: test, dashed: train"}},
    )  # fmt: skip
    return go.Figure(data=traces, layout=layout)


def grid_heatmap(means: pd.DataFrame, texts: pd.DataFrame, *, value: str, rows: str, cols: str) -> go.Figure:
    """A heatmap of the pivoted means (error %), each cell annotated with mean +- std, on a scale
    anchored at 0 and 100 %: 2.1 and 2.4 % look alike, as they should beside 64 % (whether two
    cells differ is the differences table's to say, with its interval)."""
    y = [" / ".join(map(str, i)) if isinstance(i, tuple) else str(i) for i in means.index]
    x = [str(c) for c in means.columns]
    fig = go.Figure(go.Heatmap(
        z=means.to_numpy(dtype=float), x=x, y=y, text=texts.to_numpy(), texttemplate="%{text}",
        colorscale="YlOrRd", zmin=0.0, zmax=100.0, colorbar={"title": {"text": f"{value} (%)"}},
        hovertemplate=f"{rows} %{{y}}, {cols} %{{x}}: %{{text}} %<extra></extra>", xgap=2, ygap=2,
    ))  # fmt: skip
    fig.update_xaxes(title_text=cols, type="category")
    fig.update_yaxes(title_text=rows if means.index.nlevels == 1 else " / ".join(means.index.names),
                     type="category", autorange="reversed")
    fig.update_layout(height=max(260, 60 + 44 * len(y)), margin={"l": 60, "r": 20, "t": 20, "b": 50})
    return fig


def layer_figure(profiles: pd.DataFrame, *, epoch_label: str) -> go.Figure:
    """The paper's Fig. 7: response std per 3x3 layer, top in forward order, bottom sorted
    descending; one column of panels per depth, so a 20-layer net is not drawn under the first
    20 layers of a deeper one; plain nets dashed, residual nets solid, one colour per net.

    profiles: `resweep.pooling.layer_profiles` with `sweep`, `label` and `colour` (dashboard.choices).
    """
    depths = sorted(profiles["depth"].unique())
    # a column per depth while they fit side by side; more depths share one (their lines differ in length)
    columns = [[d] for d in depths] if len(depths) <= MAX_DEPTH_COLUMNS else [depths]
    gap = 0.05
    width = (1 - gap * (len(columns) - 1)) / len(columns)
    keys = ["sweep", *GROUP_AXES]
    traces, layout, shown = [], {}, set()
    title = {"xref": "paper", "yref": "paper", "xanchor": "center", "yanchor": "bottom", "showarrow": False,
             "font": {"size": 14}}  # fmt: skip
    annotations = []
    for c, column in enumerate(columns):
        depth = column[0] if len(column) == 1 else None
        top, bottom = f"{2 * c + 1}", f"{2 * c + 2}"
        left = c * (width + gap)
        ax = lambda n: "" if n == "1" else n  # noqa: E731
        layout[f"xaxis{ax(top)}"] = {"domain": [left, left + width], "anchor": f"y{ax(top)}",
                                     "title": {"text": "layer (forward order)"}}
        layout[f"yaxis{ax(top)}"] = {"domain": [0.58, 1], "anchor": f"x{ax(top)}", **({"title": {"text": "std"}} if c == 0 else {})}
        layout[f"xaxis{bottom}"] = {"domain": [left, left + width], "anchor": f"y{bottom}",
                                    "title": {"text": "layer (sorted by magnitude)"}}
        layout[f"yaxis{bottom}"] = {"domain": [0, 0.4], "anchor": f"x{bottom}", **({"title": {"text": "std"}} if c == 0 else {})}
        centre = left + width / 2
        nets = f"{depth} layers, " if depth is not None else ""
        annotations += [{**title, "text": f"{nets}forward order ({epoch_label})", "x": centre, "y": 1.0},
                        {**title, "text": f"{nets}sorted by magnitude", "x": centre, "y": 0.41}]
        at_depth = profiles[profiles["depth"].isin(column)]
        for key, g in at_depth.groupby(keys, sort=False):
            row = dict(zip(keys, key))
            label, hue = g["label"].iloc[0], g["colour"].iloc[0]
            style = {"color": hue, "width": 1.8, "dash": "dash" if row["shortcut"] == PLAIN else None}
            by_layer, by_rank = g.sort_values("layer"), g.sort_values("rank")
            traces += [
                {"type": "scatter", "x": by_layer["layer"].to_numpy() + 1, "y": by_layer["mean"].to_numpy(),
                 "mode": "lines", "name": label, "legendgroup": label, "showlegend": label not in shown, "line": style,
                 "hovertemplate": f"{label}<br>layer %{{x}}: std %{{y:.3g}}<extra></extra>",
                 "xaxis": f"x{ax(top)}", "yaxis": f"y{ax(top)}"},
                {"type": "scatter", "x": by_rank["rank"].to_numpy() + 1, "y": by_rank["mean"].to_numpy(),
                 "mode": "lines", "name": label, "legendgroup": label, "showlegend": False, "line": style,
                 "hovertemplate": f"{label}<br>rank %{{x}}: std %{{y:.3g}}<extra></extra>",
                 "xaxis": f"x{bottom}", "yaxis": f"y{bottom}"},
            ]  # fmt: skip
            shown.add(label)
    layout.update(annotations=annotations, height=680, margin={"l": 60, "r": 20, "t": 40, "b": 50})
    return go.Figure(data=traces, layout=layout)


def response_finding(profiles: pd.DataFrame) -> str:
    """What the profiles show of residual vs plain responses, net against net of the same depth
    (mean over layers of the seed-mean std), or '' when no depth has both."""
    found = []
    for depth, at in profiles.groupby("depth", sort=True):
        plain = at.loc[at["shortcut"] == PLAIN, "mean"]
        residual = at.loc[at["shortcut"] != PLAIN, "mean"]
        if plain.empty or residual.empty:
            continue
        p, r = float(plain.mean()), float(residual.mean())
        word = "smaller than" if r < p else "larger than" if r > p else "equal to"
        found.append(f"at {depth} layers, the residual nets' responses average {r:.3g}, {word} the plain nets' {p:.3g}")
    return ("Here, " + "; ".join(found) + ".") if found else ""


# --- one trial ---------------------------------------------------------------------------------

TRIAL_PANELS = {  # panel title -> (metrics drawn in it, unit scale, log y)
    "error (%)": (("train_err", "test_err", "val_err"), 100.0, False),
    "loss": (("train_loss", "test_loss", "val_loss"), 1.0, True),
    "learning rate": (("lr",), 1.0, False),
    "epoch time (s)": (("epoch_time_s",), 1.0, False),
    "images / s": (("images_per_s",), 1.0, False),
}
TRIAL_STYLE = {"train": ("#1F77B4", "dash", TRAIN_WIDTH), "test": ("#D62728", None, TEST_WIDTH),
               "val": ("#2CA02C", "dot", TRAIN_WIDTH + 0.4)}  # fmt: skip


def smooth(values: np.ndarray, weight: float) -> np.ndarray:
    """An exponential moving average (TensorBoard's smoothing, debiased): weight 0 leaves the values."""
    if weight <= 0 or len(values) == 0:
        return values
    out, last, norm = np.empty(len(values)), 0.0, 0.0
    for i, v in enumerate(values):
        last, norm = last * weight + (1 - weight) * v, norm * weight + (1 - weight)
        out[i] = last / norm
    return out


def trial_figures(curves: pd.DataFrame, *, wall_time: bool, smoothing: float) -> list[tuple[str, go.Figure]]:
    """One small figure per kind of metric the trial recorded (TRIAL_PANELS and any other name),
    against epoch or wall time (minutes: the sum of epoch times so far); lines smoothed with
    `smoothing` (the raw values faint behind them)."""
    wide = curves.pivot_table(index="epoch", columns="name", values="value", aggfunc="first").sort_index()
    if wall_time and "epoch_time_s" in wide:
        x, x_title = wide["epoch_time_s"].fillna(0).cumsum().to_numpy() / 60, "wall time (min, training)"
    else:
        x, x_title = wide.index.to_numpy(), "epoch"
    panels = dict(TRIAL_PANELS)
    known = {n for names, _, _ in panels.values() for n in names}
    panels |= {name: ((name,), 1.0, False) for name in wide.columns if name not in known}
    out = []
    for title, (names, scale, log_y) in panels.items():
        present = [n for n in names if n in wide and wide[n].notna().any()]
        if not present:
            continue
        traces = []
        for name in present:
            colour, dash, width = TRIAL_STYLE.get(name.split("_")[0], ("#1F77B4", None, TEST_WIDTH))
            y = wide[name].to_numpy(dtype=float) * scale
            keep = ~np.isnan(y)
            weight = 0.0 if name == "lr" else smoothing  # a schedule, not a noisy measurement
            if log_y:  # smoothed where it is drawn: a loss of 1e8 must not hold the line up for epochs
                keep &= y > 0
                line = 10 ** smooth(np.log10(y[keep]), weight)
            else:
                line = smooth(y[keep], weight)
            if weight > 0:
                traces.append({"type": "scatter", "x": x[keep], "y": y[keep], "mode": "lines", "showlegend": False,
                               "line": {"color": colour, "width": 1}, "opacity": 0.25, "hoverinfo": "skip"})
            traces.append({"type": "scatter", "x": x[keep], "y": line, "mode": "lines+markers"
                           if keep.sum() <= 30 else "lines", "name": name, "marker": {"size": 4},
                           "line": {"color": colour, "dash": dash, "width": width},
                           "hovertemplate": f"{name}<br>{x_title} %{{x:.3g}}: %{{y:.4g}}<extra></extra>"})
        whole = x_title == "epoch" and len(x) and x.max() <= 12  # few epochs: no ticks between them
        layout = {"height": 300, "margin": {"l": 55, "r": 10, "t": 30, "b": 45}, "title": {"text": title, "font": {"size": 14}},
                  "xaxis": {"title": {"text": x_title}, **({"dtick": 1} if whole else {})},
                  "yaxis": {"type": "log" if log_y else "linear", **({} if log_y else {"rangemode": "tozero"})},
                  "legend": {"orientation": "h", "y": -0.3}}  # fmt: skip
        out.append((title, go.Figure(data=traces, layout=layout)))
    return out


def trial_layers_figure(layers: pd.DataFrame) -> go.Figure:
    """One trial's response std per 3x3 layer in forward order, one line per probed epoch (the
    last bold)."""
    epochs = sorted(layers["epoch"].unique())
    traces = []
    for i, epoch in enumerate(epochs):
        at = layers[layers["epoch"] == epoch].sort_values("layer")
        last = i == len(epochs) - 1
        traces.append({"type": "scatter", "x": at["layer"].to_numpy() + 1, "y": at["std"].to_numpy(), "mode": "lines",
                       "name": f"epoch {epoch}", "line": {"width": 2.4 if last else 1.1},
                       "customdata": at["name"].to_numpy(),
                       "hovertemplate": f"epoch {epoch}<br>layer %{{x}} (%{{customdata}}): std %{{y:.3g}}<extra></extra>"})
    layout = {"height": 360, "margin": {"l": 55, "r": 10, "t": 20, "b": 45}, "xaxis": {"title": {"text": "layer (forward order)"}},
              "yaxis": {"title": {"text": "std"}}}  # fmt: skip
    return go.Figure(data=traces, layout=layout)
