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
