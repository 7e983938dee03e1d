"""The report's Markdown: grid.md (the grid table beside the paper's) and report.md.

Paper numbers are CIFAR-10 Table 6 of He et al. (2016): ResNets with option-A shortcuts and basic
blocks, trained 64k iterations (about 164 epochs at batch 128 on 45k images). The paper gives no
table for plain CIFAR nets, so plain rows get none.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone

import pandas as pd

from orchestrator.report.data import CONFIG, ReportData
from orchestrator.report.findings import Finding, label

# depth -> (params in millions, test error %). 110: best of 5 runs (mean 6.61 ± 0.16).
TABLE6 = {20: (0.27, 8.75), 32: (0.46, 7.51), 44: (0.66, 7.17), 56: (0.85, 6.97),
          110: (1.7, 6.43), 1202: (19.4, 7.93)}
PAPER_EPOCHS = 164


def paper_row(dataset: str, model: str, depth: int, block: str, shortcut: str):
    """(params M, test error %) of Table 6 when this configuration is one the paper ran."""
    if (dataset, model, block, shortcut) == ("cifar10", "cifar", "basic", "A"):
        return TABLE6.get(int(depth))
    return None


def _pm(mean: float, std: float, n: int) -> str:
    if mean is None or math.isnan(mean):
        return "n/a"
    if n > 1 and std is not None and not math.isnan(std):
        return f"{100 * mean:.2f} ± {100 * std:.2f}"
    return f"{100 * mean:.2f}"


def _params(n) -> str:
    return "n/a" if n is None or pd.isna(n) else f"{n / 1e6:.2f}M"


def grid_table(data: ReportData) -> str:
    """The grid as a Markdown table: mean ± std over seeds of the final errors, and the paper's
    Table 6 beside the rows it has (the paper columns only when some row has them)."""
    g = data.grid
    if g.empty:
        return ("No trial has finished yet, so there is no grid of final errors "
                f"({len(data.trials)} trials, statuses: {_statuses(data)}).\n")
    params = data.trials.groupby(CONFIG)["params_count"].max().rename("params").reset_index()
    g = g.merge(params, on=CONFIG, how="left")
    g = g.assign(_plain=g["shortcut"] != "none").sort_values(
        ["dataset", "model", "block", "_plain", "shortcut", "depth"])
    papers = [paper_row(r.dataset, r.model, r.depth, r.block, r.shortcut) for r in g.itertuples()]
    with_paper = any(papers)
    show_data = g["dataset"].nunique() > 1 or g["model"].nunique() > 1
    head = (["dataset", "model"] if show_data else []) + [
        "net", "depth", "block", "shortcut", "seeds", "params", "train err (%)", "test err (%)"]
    head += ["paper test err (%)", "paper params"] if with_paper else []
    rows = []
    for r, paper in zip(g.itertuples(), papers):
        row = ([r.dataset, r.model] if show_data else []) + [
            label(r.depth, r.block, r.shortcut, with_shortcut=False), str(r.depth), r.block,
            r.shortcut, str(r.n_seeds), _params(r.params),
            _pm(r.train_err_mean, r.train_err_std, r.n_seeds),
            _pm(r.test_err_mean, r.test_err_std, r.n_seeds)]
        if with_paper:
            row += [f"{paper[1]:.2f}", f"{paper[0]:.2f}M"] if paper else ["", ""]
        rows.append(row)
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    notes = [f"Final errors at the last recorded epoch of each finished trial, mean ± std over "
             f"seeds ({_statuses(data)})."]
    if with_paper:
        epochs = _epochs(data)
        notes.append("Paper: He et al. (2016), CIFAR-10 Table 6 (option A, basic blocks, ~"
                     f"{PAPER_EPOCHS} epochs; ResNet-110 is the best of 5 runs, mean 6.61 ± 0.16)"
                     + (f"; this sweep trained {epochs} epochs, so expect higher errors."
                        if epochs and epochs < PAPER_EPOCHS else "."))
    else:
        notes.append("No paper numbers: the paper's CIFAR-10 table (Table 6) has ResNets with "
                     "option-A shortcuts and basic blocks on CIFAR-10 only, and none of this "
                     "grid's rows is one of them.")
    return "\n".join(lines) + "\n\n" + "\n".join(notes) + "\n"


def _epochs(data: ReportData) -> int | None:
    e = data.trials.get("epochs")
    return None if e is None or e.dropna().empty else int(e.max())


def _max_seeds(data: ReportData) -> int:
    return int(data.trials.groupby(CONFIG).size().max())


def _statuses(data: ReportData) -> str:
    counts = data.trials["status"].value_counts()
    return ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "n/a"
    h, rest = divmod(int(round(seconds)), 3600)
    m, s = divmod(rest, 60)
    return f"{h} h {m:02d} min" if h else f"{m} min {s:02d} s"


def findings_markdown(findings: list[Finding], data: ReportData) -> str:
    if not findings and data.grid.empty:
        return ("No trial has finished yet, and the findings compare finished trials' final "
                f"errors ({_statuses(data)}); report again when trials have finished.\n")
    if not findings:
        return ("This sweep holds none of the comparisons the paper's findings need (plain nets "
                "at two depths, plain and residual nets at one depth, two shortcut options at "
                "one depth, or layer responses of plain and residual nets).\n")
    out = []
    for f in findings:
        out.append(f"- **{f.status.capitalize()}**: {f.claim}")
        out += [f"  - {line}" for line in f.evidence]
    return "\n".join(out) + "\n"


def report_markdown(data: ReportData, findings: list[Finding], *, has_responses: bool,
                    database: str) -> str:
    """report.md: what was run, what it found, the figures and the grid."""
    when = lambda t: "n/a" if t is None else t.strftime("%Y-%m-%d %H:%M:%S UTC")  # noqa: E731
    commit = data.git_commit or "unknown (not launched from a git checkout)"
    if data.git_commit and data.git_dirty:
        commit += " (with uncommitted changes)"
    run_time = (_duration(data.run_time_s) if data.run_time_s is not None
                else f"n/a (sweep status {data.status})")
    lines = [
        f"# Report: sweep `{data.name}`",
        "",
        f"- status: {data.status}; trials: {len(data.trials)} ({_statuses(data)})",
        f"- launched {when(data.created_at)}, finished {when(data.finished_at)}; "
        f"run time {run_time}",
        f"- training time summed over trials (epoch_time_s): {_duration(data.training_time_s)}",
        f"- code: git commit {commit}",
        f"- database: {database}",
        f"- written {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} by "
        f"`python -m orchestrator report {data.name}`",
        "",
        "## Findings (He et al. 2016)",
        "",
        findings_markdown(findings, data),
        "## Training curves (cf. Fig. 6)",
        "",
        "![training and test error per epoch](curves.png)",
        "",
        "Thin dashed lines: training error; bold lines: test error; one colour per depth"
        + ("; lines are the mean over seeds, bands ± 1 std." if _max_seeds(data) > 1 else "."),
        "",
    ]
    if has_responses:
        lines += ["## Layer responses (cf. Fig. 7)", "",
                  "![layer response std](responses.png)", "",
                  "Standard deviation of each 3×3 conv layer's output after BN and before ReLU "
                  "or the addition, on the test set, at the last probed epoch; left in forward "
                  "order, right sorted by magnitude.", ""]
    lines += ["## Grid (also in grid.md)", "", grid_table(data),
              "## Sweep file", "", "```yaml", data.spec.rstrip(), "```", ""]
    return "\n".join(lines)
