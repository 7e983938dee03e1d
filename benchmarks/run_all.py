"""Run every benchmark module in benchmarks/, print one table, write one JSON file.

    python -m benchmarks [--quick] [--only NAME[,NAME]] [--skip NAME[,NAME]] [--out FILE]

Each module runs in its own Python process (a crash, a leaked Ray or a timeout costs only that
module), one after another so they do not compete for the CPUs. A module follows the convention
in benchmarks/common.py (`run(quick) -> list[dict]`); one without `run` but with a command line
is run as `python -m benchmarks.NAME --json [--quick]` and its JSON rows are read from stdout.

A module that fails is reported by name with the exception it ended with, and the exit status is
1. The modules in NEEDS_CUDA measure a GPU: on a machine without one they run their CPU logic
check (it proves their code still works), and each gets a row saying that its GPU figures were
not measured and why. tests/benchmarks/test_run_all.py runs `--quick` over every module.
"""

from __future__ import annotations

import argparse
import collections
import importlib
import json
import math
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

from benchmarks.common import (REPO, env_without_ray_noise, git_commit, parent_pids, process_tree,
                               result)

PACKAGE = REPO / "benchmarks"
# benchmarks/*.py that are not benchmarks: the runner's own files, and the trial hooks that the
# benchmarks and the fault tests set in workers (no run(), no --json: nothing to run).
NOT_BENCHMARKS = {"__init__", "__main__", "run_all", "common", "trial_hooks"}
# Modules whose figures are a GPU's, and what they measure there. Without a CUDA device they run
# their CPU logic check instead (so their code is still exercised) and say what was not measured.
NEEDS_CUDA = {
    "gpu_suite": "the GPU-resident loader and bf16 against a DataLoader in fp32, trials sharing one GPU",
    "gpu_trainers": "the GPU-resident data path against the host one, on a GPU",
    "precision": "bf16 against fp32 training throughput on a GPU",
}
DEFAULT_OUT = PACKAGE / "out" / "results.json"
TIMEOUT_S = {True: 600, False: 3600}  # per module, by quick
QUICK_BUDGET_S = 60  # common.py: a module's quick run "must finish in well under a minute"
TAIL_LINES = 400  # of a module's output, kept to find the exception it ended with


def discover() -> list[str]:
    """The benchmark modules: every benchmarks/*.py except NOT_BENCHMARKS and _private ones."""
    return sorted(p.stem for p in PACKAGE.glob("*.py")
                  if p.stem not in NOT_BENCHMARKS and not p.stem.startswith("_"))


def cuda_present() -> bool:
    """Whether torch sees a CUDA device (asked in a child: the runner itself imports no torch)."""
    probe = subprocess.run([sys.executable, "-c", "import torch; print(torch.cuda.is_available())"],
                           cwd=REPO, capture_output=True, text=True, timeout=300)
    return probe.stdout.strip() == "True"


def run_module(name: str, quick: bool, timeout_s: float) -> tuple[list[dict], float, str | None]:
    """Run one module in a child process: (rows, seconds, error line or None).

    The child's output is echoed to our stderr as it comes (stdout is the table); its tail is kept
    so that a failure names the exception the module ended with."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "rows.json"
        cmd = [sys.executable, "-m", "benchmarks.run_all", "--child", name, "--out", str(out)]
        if quick:
            cmd.append("--quick")
        tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=REPO, env=env_without_ray_noise(), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, errors="replace")
        echo = threading.Thread(target=_echo, args=(proc.stdout, tail), daemon=True)
        echo.start()
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _kill_tree(proc.pid)
            proc.wait()
            return [], time.perf_counter() - t0, f"timed out after {timeout_s:.0f} s"
        finally:
            echo.join(timeout=10)  # a grandchild that outlives the child may hold the pipe open
        seconds = time.perf_counter() - t0
        if proc.returncode != 0 or not out.exists():
            return [], seconds, f"exit status {proc.returncode}: {error_line(list(tail))}"
        return json.loads(out.read_text()), seconds, None


def _echo(stream, tail: collections.deque) -> None:
    for line in stream:
        sys.stderr.write(line)
        tail.append(line.rstrip("\n"))
    sys.stderr.flush()


def _kill_tree(pid: int) -> None:
    """SIGKILL a timed-out child and everything it started (its Ray, its subprocesses)."""
    for p in process_tree([pid], parent_pids()):
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass


def error_line(lines: list[str]) -> str:
    """What a failed module's output says went wrong: the exception line of each traceback in it,
    in the order printed (a cause before what it led to, " -> "), else its last non-empty line."""
    found, in_traceback = [], False
    for line in lines:
        if line.startswith("Traceback (most recent call last):"):
            in_traceback = True
        elif in_traceback and line.strip() and not line[0].isspace():
            in_traceback = False
            if line not in found:
                found.append(line)
    if found:
        return " -> ".join(found)
    rest = [line for line in lines if line.strip()]
    return rest[-1].strip() if rest else "no output"


def not_measured(name: str, cuda: bool | None) -> str | None:
    """Why a module's figures were not measured here (a GPU module without a CUDA device), or None."""
    if name not in NEEDS_CUDA or cuda:
        return None
    return f"needs a CUDA device, none here: its CPU logic check ran; not measured: {NEEDS_CUDA[name]}"


def module_summary(modules: list[dict], quick: bool) -> str:
    """One line per module: its seconds, and whether it failed, measured less, or ran long."""
    width = max((len(m["module"]) for m in modules), default=0)
    out = ["modules (seconds):"]
    for m in modules:
        says = []
        if m["error"]:
            says.append(f"FAILED: {m['error']}")
        if m.get("not_measured"):
            says.append("GPU figures not measured (needs a CUDA device)")
        if quick and m["seconds"] > QUICK_BUDGET_S:
            says.append(f"quick run over common.py's {QUICK_BUDGET_S} s")
        out.append(f"  {m['module']:<{width}} {m['seconds']:7.1f}  {'; '.join(says)}".rstrip())
    out.append(f"  {'total':<{width}} {sum(m['seconds'] for m in modules):7.1f}")
    return "\n".join(out)


def _child(name: str, quick: bool, out: Path) -> None:
    """In the child: call the module's run(quick), its adapter below, or its --json command line."""
    module = importlib.import_module(f"benchmarks.{name}")
    if hasattr(module, "run"):
        rows = module.run(quick)
    elif name in ADAPTERS:
        rows = ADAPTERS[name](quick)
    else:
        cmd = [sys.executable, "-m", f"benchmarks.{name}", "--json"] + (["--quick"] if quick else [])
        proc = subprocess.run(cmd, cwd=REPO, text=True, capture_output=True, check=True)
        sys.stderr.write(proc.stderr)
        rows = _rows_from_stdout(proc.stdout)
    out.write_text(json.dumps([_normalise(r) for r in rows], default=float))


# Modules with a command line of their own instead of run(quick): how to call them and read them.


def _db_bench(quick: bool) -> list[dict]:
    """benchmarks/db_bench.py: `--json PATH` writes {backends: [{backend, ingest, queries,
    side_by_side}]}; quick: its own --quick sizes, SQLite only."""
    size = ["--quick", "--backend", "sqlite"] if quick else []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "db_bench.json"
        subprocess.run([sys.executable, "-m", "benchmarks.db_bench", "--json", str(path), *size],
                       cwd=REPO, check=True, stdout=2)
        doc = json.loads(path.read_text())
    rows = []
    for b in doc["backends"]:
        for r in b["ingest"]:
            n = r["results_per_transaction"]
            # Its baselines have changed names; prefer the bare upsert (the same SQL, by hand).
            base = next((k, r[k]) for k in ("bare_upsert_rows_per_s", "bare_insert_rows_per_s",
                                            "bare_rows_per_s") if k in r)
            what = {"bare_upsert_rows_per_s": "bare DBAPI upsert, same SQL",
                    "bare_insert_rows_per_s": "bare DBAPI INSERT"}.get(base[0], "bare DBAPI")
            note = (f"bare plain INSERT: {r['bare_insert_rows_per_s']:,.0f} rows/s"
                    if base[0] != "bare_insert_rows_per_s" and "bare_insert_rows_per_s" in r
                    else None)
            rows.append(result(f"{b['backend']}: ingest, {r['mode']} ({n} result{'s' * (n > 1)} "
                               "a transaction)", r["writes_rows_per_s"], "rows/s", what, base[1],
                               note=note))
        if "bytes_per_point" in b:
            bp = b["bytes_per_point"]
            rows.append(result(f"{b['backend']}: bytes per stored point ({bp['points']:,} points)",
                               bp["metric_values"], "B", "the layout before migration 0007",
                               bp["old_metrics"]))
        rows += _side_by_side_rows(b)
        queries = {q["query"]: q for q in b["queries"]}
        bare = queries.pop("bare: filter", None)
        for q in queries.values():
            if q["query"].startswith(("bare: ", "before 0007: ")):
                continue  # in the side-by-side rows above
            if q["query"].startswith("trials(sweep, depth") and bare is not None:
                rows.append(result(f"{b['backend']}: {q['query']} ({b['metric_rows']:,} metric rows)",
                                   q["median_ms"], "ms", "bare DBAPI: the view with a WHERE", bare["median_ms"],
                                   note=f"CPU {q['median_cpu_ms']:.1f} ms vs {bare['median_cpu_ms']:.1f} ms"))
                continue
            rows.append(result(f"{b['backend']}: {q['query']} ({b['metric_rows']:,} metric rows)",
                               q["median_ms"], "ms", "300 ms budget", 300.0))
    return rows


def _side_by_side_rows(b: dict) -> list[dict]:
    """db_bench's stores side by side: each one's figure against resweep's in the same run."""
    side, be, rows = b.get("side_by_side"), b["backend"], []
    if not side:
        return rows
    size = f"{b['trials']:,} trials x {b['epochs']} epochs"
    for query, row in side["queries_ms"].items():
        for store in ("bare", "before_0007", *b.get("rivals", {})):
            label = {"bare": "bare SQL", "before_0007": "bare SQL, layout before 0007"}.get(store, store)
            note = None if row[store] is not None else f"gave up after {b['rival_timeout_s']:.0f} s"
            rows.append(result(f"{be}: {query} ({size}), {label}", row[store], "ms", "resweep (db.queries)",
                               row["resweep"], note=note))
    for store, rate in side["per_epoch_points_per_s"].items():
        if store != "resweep":
            rows.append(result(f"{be}: per-epoch ingest, {store}", rate, "points/s", "resweep (record_result)",
                               side["per_epoch_points_per_s"]["resweep"]))
    for store, size_b in side.get("bytes_per_point", {}).items():
        if store != "resweep":
            rows.append(result(f"{be}: bytes per stored point ({size}), {store}", size_b, "B",
                               "resweep (metric_values)", side["bytes_per_point"]["resweep"]))
    return rows


ADAPTERS = {"db_bench": _db_bench}


def _rows_from_stdout(text: str) -> list[dict]:
    """The last JSON document on stdout: a list of rows, or an object holding one."""
    for start in [i for i, ch in enumerate(text) if ch in "[{"][::-1]:
        try:
            doc = json.loads(text[start:])
        except ValueError:
            continue
        if isinstance(doc, dict):
            doc = doc.get("results") or doc.get("rows") or [doc]
        return list(doc)
    raise ValueError("no JSON rows on stdout")


def _normalise(row: dict) -> dict:
    """Fill a row out to the convention (ratio computed when missing)."""
    r = result(str(row.get("name")), _num(row.get("value")), str(row.get("unit") or ""),
               row.get("baseline"), _num(row.get("baseline_value")), row.get("note"))
    if row.get("ratio") is not None:
        r["ratio"] = _num(row["ratio"])
    return r


def _num(x) -> float | None:
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(x) else x


def fmt(x: float | None) -> str:
    if x is None:
        return "-"
    if x == 0:
        return "0"
    a = abs(x)
    return f"{x:,.0f}" if a >= 1000 else f"{x:.3g}" if a >= 0.01 else f"{x:.2e}"


def table(rows: list[dict]) -> str:
    head = ["benchmark", "measure", "value", "unit", "baseline", "baseline value", "ratio"]
    body = [[r["module"], r["name"], fmt(r["value"]), r["unit"], r.get("baseline") or "-",
             fmt(r.get("baseline_value")),
             "-" if r.get("ratio") is None else f"{r['ratio']:.2f}x"] for r in rows]
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h)
              for i, h in enumerate(head)]
    line = lambda cells: "  ".join(c.ljust(w) if i < 2 or i in (3, 4) else c.rjust(w)  # noqa: E731
                                   for i, (c, w) in enumerate(zip(cells, widths))).rstrip()
    out = [line(head), line(["-" * w for w in widths])] + [line(b) for b in body]
    notes = [f"  [{r['module']}] {r['name']}: {r['note']}" for r in rows if r.get("note")]
    return "\n".join(out + (["", "notes:"] + notes if notes else []))


def markdown(rows: list[dict]) -> str:
    """The table as Markdown, for docs/performance.md."""
    out = ["| benchmark | measure | value | baseline (same run) | ratio |", "|---|---|---:|---|---:|"]
    for r in rows:
        base = (f"{r['baseline']}: {fmt(r.get('baseline_value'))} {r['unit']}"
                if r.get("baseline") and r.get("baseline_value") is not None else "-")
        ratio = "-" if r.get("ratio") is None else f"{r['ratio']:.2f}x"
        out.append(f"| {r['module']} | {r['name']} | {fmt(r['value'])} {r['unit']} | {base} | "
                   f"{ratio} |")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="small sizes: a check, rough numbers")
    p.add_argument("--only", default="", help="comma-separated module names to run")
    p.add_argument("--skip", default="", help="comma-separated module names to leave out")
    p.add_argument("--out", type=Path, default=None, help=f"JSON file (default {DEFAULT_OUT})")
    p.add_argument("--timeout", type=float, default=None, help="seconds per module")
    p.add_argument("--markdown", type=Path, default=None, help="also write the table as Markdown")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        _child(args.child, args.quick, args.out)
        return 0

    names = discover()
    only = {n for n in args.only.split(",") if n}
    skip = {n for n in args.skip.split(",") if n}
    unknown = (only | skip) - set(names)
    if unknown:
        p.error(f"no benchmark module(s) {', '.join(sorted(unknown))}; there are: {', '.join(names)}")
    names = [n for n in names if (not only or n in only) and n not in skip]
    timeout_s = args.timeout or TIMEOUT_S[args.quick]
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    load = os.getloadavg()
    cuda = cuda_present() if set(names) & set(NEEDS_CUDA) else None
    rows, modules = [], []
    for name in names:
        print(f"== {name}{' (quick)' if args.quick else ''}", file=sys.stderr, flush=True)
        got, seconds, error = run_module(name, args.quick, timeout_s)
        missing = not_measured(name, cuda)
        modules.append({"module": name, "seconds": round(seconds, 1), "error": error,
                        "not_measured": missing})
        rows += [{"module": name, **r} for r in got]
        if error:
            rows.append({"module": name, **result("(failed)", None, "", note=error)})
        if missing:
            rows.append({"module": name, **result("(GPU figures not measured)", None, "", note=missing)})
    print(table(rows))
    print("\n" + module_summary(modules, args.quick))
    out = args.out or DEFAULT_OUT
    out.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "command": "python -m benchmarks" + " ".join([""] + (argv if argv is not None else sys.argv[1:])),
        "quick": args.quick,
        "started": started,
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "git_commit": git_commit(),
        "machine": {"python": platform.python_version(), "platform": platform.platform(),
                    "cpus": os.cpu_count(), "load_average_at_start": load,
                    "load_average_at_end": os.getloadavg()},
        "modules": modules,
        "results": rows,
    }
    out.write_text(json.dumps(doc, indent=2, default=float) + "\n")
    if args.markdown:
        args.markdown.write_text(markdown(rows))
    print(f"\nwrote {out}", file=sys.stderr)
    return 1 if any(m["error"] for m in modules) else 0


if __name__ == "__main__":
    raise SystemExit(main())
