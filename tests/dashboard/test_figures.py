"""The figures without Streamlit: many nets, bands in every palette colour."""

from __future__ import annotations

import pandas as pd

from dashboard import choices, figures
from dashboard.aggregate import with_net


def test_curves_of_many_nets_draw_a_band_in_every_palette_colour():
    # 24 nets (past D3's ten hex colours into the rgb() palettes), two seeds' spread each
    nets = [{"sweep": "s", "dataset": "cifar10", "model": "cifar", "depth": 8 + 6 * i, "block": "basic",
             "shortcut": s} for i in range(12) for s in ("none", "A")]  # fmt: skip
    bands = pd.DataFrame([{**n, "name": name, "epoch": e, "mean": 0.5 / e, "std": 0.1, "n": 2}
                          for n in nets for name in ("train_err", "test_err") for e in (1, 2, 3)])
    bands = choices.with_looks(with_net(bands), bands, choices.COLOUR_NET)
    assert bands["colour"].nunique() == 24 and any(c.startswith("rgb") for c in bands["colour"])
    fig = figures.curves_figure(bands, kind="error", split="net", log_y=False)
    fills = [t.fillcolor for t in fig.data if t.fill == "toself"]
    assert len(fills) == 48 and all(f.startswith("rgba(") for f in fills)


def test_layer_responses_take_a_column_per_depth_while_four_fit():
    def profiles(depths):
        rows = [{"sweep": "s", "dataset": "cifar10", "model": "cifar", "depth": d, "block": "basic", "shortcut": s,
                 "layer": i, "rank": i, "mean": 1.0 + (s == "none"), "epoch": 3}
                for d in depths for s in ("none", "A") for i in range(d - 1)]  # fmt: skip
        frame = pd.DataFrame(rows)
        return choices.with_looks(frame, frame, choices.COLOUR_NET)

    two = figures.layer_figure(profiles([20, 56]), epoch_label="epoch 3")
    assert [a.text for a in two.layout.annotations][::2] == ["20 layers, forward order (epoch 3)",
                                                             "56 layers, forward order (epoch 3)"]
    assert {t.xaxis for t in two.data if t.name == "plain-20"} == {"x", "x2"}  # its own column
    six = figures.layer_figure(profiles([8, 14, 20, 26, 32, 38]), epoch_label="epoch 3")
    assert [a.text for a in six.layout.annotations] == ["forward order (epoch 3)", "sorted by magnitude"]
    # the finding compares plain and residual nets of the same depth, as the data has them
    assert figures.response_finding(profiles([20])) == (
        "Here, at 20 layers, the residual nets' responses average 1, smaller than the plain nets' 2.")
