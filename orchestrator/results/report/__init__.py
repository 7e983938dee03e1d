"""`python -m orchestrator report NAME`: a sweep turned into figures, tables and findings.

    load.py      read the sweep through db.queries (seeds are pooled by resweep.pooling)
    findings.py  the paper's claims checked against the numbers
    figures.py   curves.png (Fig. 6) and responses.png (Fig. 7)
    document.py  grid.md and report.md
"""

from __future__ import annotations

from pathlib import Path

from orchestrator.results.report.document import grid_table, report_markdown
from orchestrator.results.report.figures import curves_png, responses_png
from orchestrator.results.report.findings import Finding, all_findings
from orchestrator.results.report.load import grid_with_best, load, max_epochs
from resweep import pooling

__all__ = ["Finding", "write_report"]


def write_report(engine, name: str, out_dir: Path, *, database: str) -> list[Path]:
    """Write curves.png, responses.png (when probed), grid.md and report.md; return their paths.

    `database` names the database in messages and in report.md (a redacted URL). Nothing is
    written unless the sweep exists and has results.
    """
    data = load(engine, name, database)
    found = all_findings(grid_with_best(data), pooling.response_summary(data.layers, data.trials), max_epochs(data))
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [curves_png(data, out_dir / "curves.png")]
    responses = responses_png(data, out_dir / "responses.png")
    if responses is None:
        (out_dir / "responses.png").unlink(missing_ok=True)  # a stale one would mislead
    else:
        written.append(responses)
    (out_dir / "grid.md").write_text(f"# Grid: sweep `{name}`\n\n" + grid_table(data))
    (out_dir / "report.md").write_text(
        report_markdown(data, found, has_responses=responses is not None, database=database))
    return written + [out_dir / "grid.md", out_dir / "report.md"]
