"""The report's Markdown: grid.md (the grid table beside the papers' numbers) and report.md.

Paper numbers come from resweep.paper, each with its source, kind (single run, best of N, mean +-
std, median of N, runs not stated), shortcut option and recipe: CIFAR-10 Table 6 of He et al. (CVPR
2016, ResNets with option A and basic blocks) and Tables 3-4 of He et al. (ECCV 2016, original and
pre-activation units; option A at 110 layers, projections (B) for the bottleneck nets). The papers
give no table for plain CIFAR nets, so plain rows get none. Beside each number that has one, the
difference ours - paper with its 95 % interval, like with like (resweep.stats).
"""

from __future__ import annotations

from datetime import datetime, timezone

import pandas as pd

from orchestrator.results.report.findings import Finding, vs_paper
from orchestrator.results.report.load import ReportData, grid_with_best, max_epochs
from resweep import stats
from resweep.paper import PAPER_EPOCHS, net_label, references
from resweep.pooling import GROUP_AXES


_VS = {"mean_std": "our mean vs mean", "median_of": "our median vs median", "single_run": "our mean vs single run",
       "unstated": "our mean vs one run"}


def _vs_paper(r, refs) -> str:
    """'ours - paper' of the first reference that has an interval (mean, median or single run),
    saying what is set against what."""
    for ref in refs:
        if ref.kind == "best_of":
            continue
        d = vs_paper(r, ref)
        if d is None:
            return f"cannot be judged ({stats.no_interval(r.test_err_std, int(r.n_seeds))})"
        return f"{_VS[ref.kind]}: {d.text('')}"
    return ""


def _params(n) -> str:
    return "n/a" if n is None or pd.isna(n) else f"{n / 1e6:.2f}M"


def grid_table(data: ReportData) -> str:
    """The grid as a Markdown table: mean ± std over seeds of the final errors, and the paper's
    Table 6 beside the rows it has (the paper columns only when some row has them)."""
    g = grid_with_best(data)
    if g.empty:
        return ("No trial has finished yet, so there is no grid of final errors "
                f"({len(data.trials)} trials, statuses: {_statuses(data)}).\n")
    params = data.trials.groupby(GROUP_AXES)["params_count"].max().rename("params").reset_index()
    g = g.merge(params, on=GROUP_AXES, how="left")
    g = g.assign(_plain=g["shortcut"] != "none").sort_values(
        ["dataset", "model", "block", "_plain", "shortcut", "depth"])
    papers = [references(r.dataset, r.model, r.depth, r.block, r.shortcut,
                         batch_size=128 if pd.isna(r.batch_size) else int(r.batch_size)) for r in g.itertuples()]
    with_paper = any(papers)
    show_data = g["dataset"].nunique() > 1 or g["model"].nunique() > 1
    head = (["dataset", "model"] if show_data else []) + [
        "net", "depth", "block", "shortcut", "seeds", "params", "train err (%)", "test err (%)"]
    head += ["best seed (%)", "paper test err (%)", "paper params", "ours − paper (points, 95 % CI)"] if with_paper else []
    rows = []
    for r, paper in zip(g.itertuples(), papers):
        row = ([r.dataset, r.model] if show_data else []) + [
            net_label(r.depth, r.block, r.shortcut, with_shortcut=False), str(r.depth), r.block,
            r.shortcut, str(r.n_seeds), _params(r.params),
            stats.mean_std(r.train_err_mean, r.train_err_std, r.n_seeds, scale=100),
            stats.mean_std(r.test_err_mean, r.test_err_std, r.n_seeds, scale=100)]
        if with_paper:
            best = stats.mean_std(r.test_err_best, None, scale=100)
            row += ([best, "; ".join(ref.text for ref in paper), f"{paper[0].params_m:.2f}M", _vs_paper(r, paper)]
                    if paper else ["", "", "", ""])
        rows.append(row)
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    notes = [f"Final errors at the last recorded epoch of each finished trial, mean ± std over "
             f"seeds ({_statuses(data)})."]
    if with_paper:
        epochs = max_epochs(data)
        notes.append("Paper: He et al. (2016): CVPR Table 6 (CIFAR-10, option A, basic blocks; single runs, "
                     "ResNet-110 best of 5 and mean ± std of 5) and ECCV Tables 3-4 (CIFAR-10/100; original and "
                     "pre-activation units, option A at 110 layers and B for the bottleneck nets; medians of 5 "
                     "with mean ± std where Table 4 gives them, other rows runs not stated), "
                     f"~{PAPER_EPOCHS} epochs at batch 128. Like with like: a best of N beside our best seed "
                     "(not judged), our mean against a mean ± std (Welch's t), our median against a median, our "
                     "mean against a single run or a number of unstated kind taken as one run (the paper's "
                     "runs taken to vary as our seeds; resweep.stats)"
                     + (f"; this sweep trained {epochs} epochs, so expect higher errors."
                        if epochs and epochs < PAPER_EPOCHS else "."))
    else:
        notes.append("No paper numbers: the papers' CIFAR tables (CVPR Table 6: ResNets with option-A "
                     "shortcuts and basic blocks; ECCV Tables 3-4: original and pre-activation units, A at 110 "
                     "layers, B at 164/1001) have none of this grid's rows.")
    return "\n".join(lines) + "\n\n" + "\n".join(notes) + "\n"


def _max_seeds(data: ReportData) -> int:
    return int(data.trials.groupby(GROUP_AXES).size().max())


def _statuses(data: ReportData) -> str:
    counts = data.trials["status"].value_counts()
    return ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "n/a"
    h, rest = divmod(int(round(seconds)), 3600)
    m, s = divmod(rest, 60)
    return f"{h} h {m:02d} min" if h else f"{m} min {s:02d} s"


def warmup_markdown(data: ReportData) -> str:
    """Where each warmed-up trial's warm-up ended (the `warmup_iterations` metric), or ''."""
    ended = data.curves[data.curves["name"] == "warmup_iterations"]
    warm = [t for t in data.trials.itertuples()
            if isinstance(t.config, dict) and t.config.get("warmup_lr") is not None]
    if not warm:
        return ""
    at = ended.set_index("trial_id")["value"].to_dict()
    lines = []
    for t in sorted(warm, key=lambda t: (t.depth, t.block, t.shortcut, t.seed)):
        cap = t.config.get("warmup_max_iterations")
        until = t.config.get("warmup_until_train_err")
        if t.trial_id in at:
            n = int(at[t.trial_id])
            why = "the cap" if cap is not None and n >= cap else f"running training error < {100 * until:.0f} %"
            lines.append(f"- {net_label(t.depth, t.block, t.shortcut)} seed {t.seed}: lr {t.config['warmup_lr']} for "
                         f"{n} iterations, ended by {why}")
        else:
            lines.append(f"- {net_label(t.depth, t.block, t.shortcut)} seed {t.seed}: still warming up at its last "
                         "recorded epoch")
    return ("Decided per iteration on a running training error, capped at "
            f"{warm[0].config.get('warmup_max_iterations')} iterations (trainers/loop.py):\n\n"
            + "\n".join(lines) + "\n")


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
    warm = warmup_markdown(data)
    if warm:
        lines += ["## Warm-up", "", warm]
    if has_responses:
        lines += ["## Layer responses (cf. Fig. 7)", "",
                  "![layer response std](responses.png)", "",
                  "Standard deviation of each 3×3 conv layer's output after the BN that normalises "
                  "it and before ReLU or the addition (in a residual pre-activation unit, whose last "
                  "conv meets the shortcut before any BN, the branch output just before the addition), "
                  "on the test set, at the last probed epoch; left in forward order, right sorted by "
                  "magnitude. One colour per net (depth and block), one line style per shortcut, one "
                  "marker per block.", ""]
    lines += ["## Grid (also in grid.md)", "", grid_table(data),
              "## Sweep file", "", "```yaml", data.spec.rstrip(), "```", ""]
    return "\n".join(lines)
