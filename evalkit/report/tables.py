"""Leaderboard tables: result entries x a benchmark -> per-task scores -> column averages.

Aggregation never lies (see also tasks/benchmarks.yaml):
- a task's score is the mean of its metric over the benchmark's splits x subsets, x100; if any of
  those split/subset scores is absent the task is missing for that row (with the reason kept);
- a column's score is the mean over its tasks, each task weighing the same; when some tasks are
  missing the cell is partial (n of N tasks) and every renderer marks it so ("61.32 (11/12)"),
  or hides it (partial="hide"); a cell with no task at all is missing ("-").
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from evalkit.report.benchmarks import Benchmark
from evalkit.report.sources import Entry


@dataclass
class TaskScore:
    task: str
    value: float | None  # x100, None when missing
    parts: dict[str, float] = field(default_factory=dict)  # "split/subset" -> x100
    reason: str = ""
    path: Path | None = None


@dataclass
class Cell:
    value: float | None  # x100: mean over the tasks present
    n: int
    total: int

    @property
    def complete(self) -> bool:
        return self.total > 0 and self.n == self.total

    @property
    def partial(self) -> bool:
        return 0 < self.n < self.total

    @property
    def missing(self) -> bool:
        return self.n == 0

    def text(self, partial: str = "mark") -> str:
        if self.missing or self.value is None:
            return "-"
        if self.partial:
            return "-" if partial == "hide" else f"{self.value:.2f} ({self.n}/{self.total})"
        return f"{self.value:.2f}"


@dataclass
class Row:
    entry: Entry
    tasks: dict[str, TaskScore]
    cells: list[Cell]
    info: dict[str, str] = field(default_factory=dict)  # model columns

    @property
    def label(self) -> str:
        return self.entry.label

    def sort_key(self):
        c = self.cells[0] if self.cells else Cell(None, 0, 0)
        state = 0 if c.complete else (1 if c.partial else 2)
        return (state, -c.n, -(c.value if c.value is not None else -math.inf), self.label)


@dataclass
class Table:
    benchmark: Benchmark
    rows: list[Row]
    partial: str = "mark"

    @property
    def headers(self) -> list[str]:
        return ["Model", *self.benchmark.model_columns, *(c.label for c in self.benchmark.columns)]

    def cells_text(self, row: Row) -> list[str]:
        return [row.label, *(row.info.get(m, "-") for m in self.benchmark.model_columns), *(c.text(self.partial) for c in row.cells)]

    def frame(self):
        """The table as a pandas DataFrame: value columns (x100, partial means included) and, for each
        column, '<label> tasks' = 'n/N' so that a partial mean can never pass for a complete one."""
        import pandas as pd

        recs = []
        for r in self.rows:
            rec = {"Model": r.label, "published": r.entry.published, "revision": r.entry.revision or "", "variant": r.entry.variant or ""}
            for m in self.benchmark.model_columns:
                rec[m] = r.info.get(m, "")
            for col, cell in zip(self.benchmark.columns, r.cells):
                hide = cell.partial and self.partial == "hide"
                rec[col.label] = None if (cell.value is None or hide) else round(cell.value, 2)
                rec[f"{col.label} tasks"] = f"{cell.n}/{cell.total}"
            recs.append(rec)
        return pd.DataFrame.from_records(recs)

    def task_frame(self):
        """Per-task scores (x100), one row per table row, one column per task."""
        import pandas as pd

        recs = []
        for r in self.rows:
            rec = {"Model": r.label}
            for t in self.benchmark.tasks:
                ts = r.tasks.get(t)
                rec[t] = None if ts is None or ts.value is None else round(ts.value, 2)
            recs.append(rec)
        return pd.DataFrame.from_records(recs, columns=["Model", *self.benchmark.tasks])

    def missing_notes(self) -> list[str]:
        notes = []
        for r in self.rows:
            miss = [t for t in self.benchmark.tasks if r.tasks[t].value is None]
            if miss and len(miss) < len(self.benchmark.tasks):
                notes.append(f"{r.label}: no score for {len(miss)} of {len(self.benchmark.tasks)} tasks ({', '.join(miss)})")
        return notes


@lru_cache(maxsize=None)
def mteb_main_metric(task: str) -> str | None:
    try:
        import mteb

        return mteb.get_task(task).metadata.main_score
    except Exception:
        return None


@lru_cache(maxsize=None)
def mteb_model_meta(name: str):
    try:
        import mteb

        return mteb.get_model_meta(name)
    except Exception:
        return None


def _value(vals: dict | None, qual: dict | None, metric: str | None, task: str, main: str | None = None) -> float | None:
    """The score of `metric` (None: the main score) in one split/subset. `main` names the tasks' main
    metric where mteb does not know the task (AIR-Bench); a published main_score counts as `metric`
    only when the task's main metric is `metric`."""
    if metric is None:
        if vals and "main_score" in vals:
            return vals["main_score"]
        if qual:
            mm = mteb_main_metric(task) or main
            return qual.get(mm) if mm else None
        return None
    if vals and metric in vals:
        return vals[metric]
    if qual and metric in qual:
        return qual[metric]
    if vals and "main_score" in vals and (mteb_main_metric(task) or main) == metric:
        return vals["main_score"]
    return None


def task_score(entry: Entry, bench: Benchmark, task: str) -> TaskScore:
    scores = entry.scores.get(task) or {}
    qual = entry.qualified.get(task) or {}
    path = entry.paths.get(task)
    if not scores and not qual:
        return TaskScore(task, None, reason="no result", path=path)
    present = set(scores) | set(qual)
    splits = bench.splits_of(task) or sorted({k.split("/", 1)[0] for k in present})
    wanted_subsets = bench.subsets_of(task)
    parts: dict[str, float] = {}
    missing: list[str] = []
    for split in splits:
        subsets = wanted_subsets or sorted({k.split("/", 1)[1] for k in present if k.split("/", 1)[0] == split})
        if not subsets:
            missing.append(f"{split}/*")
            continue
        for sub in subsets:
            key = f"{split}/{sub}"
            v = _value(scores.get(key), qual.get(key), bench.metric, task, bench.main_metric)
            if v is None:
                missing.append(key)
            else:
                parts[key] = 100.0 * v
    if missing:
        what = bench.metric or "main score"
        return TaskScore(task, None, parts, f"no {what} for {', '.join(missing)}", path)
    return TaskScore(task, sum(parts.values()) / len(parts), parts, "", path)


def aggregate(tasks: dict[str, TaskScore], names: list[str]) -> Cell:
    vals = [tasks[t].value for t in names if tasks[t].value is not None]
    return Cell(sum(vals) / len(vals) if vals else None, len(vals), len(names))


def model_info(entry: Entry, bench: Benchmark) -> dict[str, str]:
    if not bench.model_columns:
        return {}
    meta = mteb_model_meta(entry.display_model)
    dim = getattr(meta, "embed_dim", None) if meta is not None else None
    seq = entry.meta.get("max_length") or (getattr(meta, "max_tokens", None) if meta is not None else None)
    out = {"Dimension": str(int(dim)) if dim else "-", "Sequence Length": str(int(seq)) if seq else "-"}
    return {k: out[k] for k in bench.model_columns}


def build_table(entries: list[Entry], bench: Benchmark, partial: str = "mark", keep_empty: bool = False) -> Table:
    rows = []
    for e in entries:
        tasks = {t: task_score(e, bench, t) for t in bench.tasks}
        if not keep_empty and all(ts.value is None for ts in tasks.values()):
            continue  # nothing of this benchmark (e.g. a Chinese model's rows in an English table)
        cells = [aggregate(tasks, c.tasks) for c in bench.columns]
        rows.append(Row(e, tasks, cells, model_info(e, bench)))
    rows.sort(key=Row.sort_key)
    return Table(bench, rows, partial)


def fewshot_series(table: Table) -> list[dict]:
    """Zero-shot vs few-shot: for each model/revision with `fewshot-<k>-...` variants, the scores of
    each task that a few-shot variant has, beside the zero-shot run's (the run without a variant)."""
    out = []
    groups: dict[tuple, list[Row]] = {}
    for r in table.rows:
        if not r.entry.published:
            groups.setdefault((r.entry.model, r.entry.revision), []).append(r)
    for (model, rev), rows in groups.items():
        shots = sorted((r for r in rows if r.entry.fewshot_k is not None), key=lambda r: (r.entry.fewshot_k, r.entry.variant))
        if not shots:
            continue
        zero = next((r for r in rows if r.entry.variant is None), None)
        series = ([("zero-shot", zero)] if zero else []) + [(r.entry.variant, r) for r in shots]
        tasks = [t for t in table.benchmark.tasks if any(r.tasks[t].value is not None for r in shots)]
        out.append({
            "model": model.replace("__", "/"),
            "revision": rev,
            "series": [name for name, _ in series],
            "tasks": [{"task": t, "values": [r.tasks[t].value for _, r in series]} for t in tasks],
        })
    return out
