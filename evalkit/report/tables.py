"""Leaderboard tables: result entries x a benchmark -> per-task scores -> column averages.

Aggregation never lies (see also tasks/benchmarks.yaml):
- a task's score is the mean of its metric over the benchmark's splits x subsets, x100; if any of
  those split/subset scores is absent the task is missing for that row (with the reason kept);
- a column's score is the mean over its tasks, each task weighing the same; when some tasks are
  missing the cell is partial (n of N tasks) and every renderer marks it so ("61.32 (11/12)"),
  or hides it (partial="hide"); a cell with no task at all is missing ("-");
- a benchmark with `rounding:` (the model cards' tables) rounds each task score to 2 decimals before
  averaging and rounds the mean as the card's tool did (evalkit/report/benchmarks.py, ROUNDINGS);
- a published row from a results repository takes each task from the first of its source folders
  (in precedence order) that has a score for the benchmark's selection; the row's label names the
  folders used, and `Table.provenance()` says which task came from where and where the folders not
  used disagree. A file without an mteb version or from mteb < 1.11 counts its task type's main
  metric of that time (published.LEGACY_MAIN), and a wanted `dev` split is read from `validation`
  (or the reverse) where the file has only that one.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from evalkit.report.benchmarks import MODEL_COLUMNS, Benchmark
from evalkit.report.sources import Entry


@dataclass
class TaskScore:
    task: str
    value: float | None  # x100, None when missing
    parts: dict[str, float] = field(default_factory=dict)  # "split/subset" -> x100
    reason: str = ""
    path: Path | None = None
    source: str = ""  # the source folder it came from (rows from a results repository)
    notes: list[str] = field(default_factory=list)  # how its file was read, when not plainly
    others: dict[str, float] = field(default_factory=dict)  # source folder -> its score, for the folders not used
    unusable: dict[str, str] = field(default_factory=dict)  # source folder -> why it gives no score


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
    display_label: str = ""  # set for rows from a results repository (names the source folders used)

    @property
    def label(self) -> str:
        return self.display_label or self.entry.label

    @property
    def sources_used(self) -> list[str]:
        """The source folders this row's scores come from, in precedence order."""
        used = {ts.source for ts in self.tasks.values() if ts.value is not None and ts.source}
        return [f.name for f in self.entry.sources if f.name in used]

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
            rec = {"Model": r.label, "published": r.entry.published, "revision": r.entry.revision or "", "variant": r.entry.variant or "",
                   "sources": " + ".join(r.sources_used)}
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

    def provenance(self) -> list[dict]:
        """For each published row from a results repository: its model folder, the precedence order,
        and per source folder what it is, the tasks taken from it, and where a folder not used for a
        task has another score for it (shown at 2 decimals); how unusual files were read."""
        from evalkit.report.published import LEGACY_MAIN, source_label

        out = []
        for r in self.rows:
            if not r.entry.candidates:
                continue
            tasks = self.benchmark.tasks
            folders = []
            for f in r.entry.sources:
                used = [t for t in tasks if r.tasks[t].value is not None and r.tasks[t].source == f.name]
                differs = [
                    (t, r.tasks[t].value, r.tasks[t].others[f.name]) for t in tasks
                    if r.tasks[t].value is not None and f.name in r.tasks[t].others
                    and f"{r.tasks[t].value:.2f}" != f"{r.tasks[t].others[f.name]:.2f}"
                ]
                unusable = [f"{t} ({r.tasks[t].unusable[f.name]})" for t in tasks if f.name in r.tasks[t].unusable]
                folders.append({
                    "name": source_label(f.name), "kind": f.kind, "describe": f.describe(), "tasks": used,
                    "has": sum(1 for t in tasks if t in f.tasks), "differs": differs, "unusable": unusable,
                    "skipped": [s for s in f.skipped if s.split(":", 1)[0].removesuffix(".json") in tasks
                                or s.split(":", 1)[0].removesuffix(".json") in r.entry.candidates],
                })
            legacy_types = [] if self.benchmark.leaderboard == "mteb" else sorted({  # mteb's loader reads them there
                self.benchmark.types.get(t) or "?" for t in tasks
                if r.tasks[t].value is not None and any(c.legacy and c.source == r.tasks[t].source for c in r.entry.candidates.get(t, []))
            })
            out.append({
                "label": r.label,
                "folder": r.entry.meta.get("folder", ""),
                "order": " > ".join(source_label(f.name) for f in r.entry.sources),
                "folders": folders,
                "notes": [f"{t}: {'; '.join(r.tasks[t].notes)}" for t in tasks if r.tasks[t].value is not None and r.tasks[t].notes],
                "legacy": [f"{ty} {LEGACY_MAIN[ty]}" for ty in legacy_types if ty in LEGACY_MAIN],
                "missing": [f"{t} ({r.tasks[t].reason})" for t in tasks if r.tasks[t].value is None and t in r.entry.candidates],
            })
        return out

    @property
    def scored_tasks(self) -> list[str]:
        """The tasks the columns average (an mteb benchmark's table leaves out those no row has)."""
        left_out = self.benchmark.info.get("left_out") or ()
        return [t for t in self.benchmark.tasks if t not in left_out]

    def missing_notes(self) -> list[str]:
        notes = []
        tasks = self.scored_tasks
        for r in self.rows:
            miss = [t for t in tasks if r.tasks[t].value is None]
            if miss and len(miss) < len(tasks):
                notes.append(f"{r.label}: no score for {len(miss)} of {len(tasks)} tasks ({', '.join(miss)})")
        return notes


@lru_cache(maxsize=None)
def mteb_main_metric(task: str) -> str | None:
    try:
        import mteb

        return mteb.get_task(task).metadata.main_score
    except Exception:
        return None


@lru_cache(maxsize=None)
def mteb_task_type(task: str) -> str | None:
    try:
        import mteb

        return mteb.get_task(task).metadata.type
    except Exception:
        return None


@lru_cache(maxsize=None)
def mteb_model_meta(name: str):
    try:
        import mteb

        return mteb.get_model_meta(name)
    except Exception:
        return None


def _value(vals: dict | None, qual: dict | None, metric: str | None, task: str, main: str | None = None,
           legacy_main: str | None = None, aliases: list[str] | tuple = ()) -> float | None:
    """The score of `metric` (None: the main score) in one split/subset. `main` names the tasks' main
    metric where mteb does not know the task (AIR-Bench); a published main_score counts as `metric`
    only when the task's main metric is `metric`. `legacy_main`: the file predates mteb 1.11 and its
    main score is this metric (published.LEGACY_MAIN of the task's type), whatever main_score says.
    `aliases`: other names of `metric`, tried in order."""
    if metric is None:
        if vals:
            if legacy_main and legacy_main in vals:
                return vals[legacy_main]
            if "main_score" in vals:
                return vals["main_score"]
            if legacy_main is not None:  # an old file without a main score: today's main metric, if it has it
                mm = mteb_main_metric(task) or main
                return vals.get(mm) if mm else None
        if qual:
            mm = mteb_main_metric(task) or main
            return qual.get(mm) if mm else None
        return None
    for m in (metric, *aliases):
        if vals and m in vals:
            return vals[m]
        if qual and m in qual:
            return qual[m]
    if vals and "main_score" in vals and legacy_main is None and (mteb_main_metric(task) or main) == metric:
        return vals["main_score"]
    return None


_SPLIT_ALIASES = {"dev": "validation", "validation": "dev"}


def _scores_of(scores: dict, qual: dict, path: Path | None, bench: Benchmark, task: str, legacy: bool = False) -> TaskScore:
    """A task's score from one set of split/subset scores (one result file, or a published record)."""
    if not scores and not qual:
        return TaskScore(task, None, reason="no result", path=path)
    legacy_main = None
    if legacy:
        from evalkit.report.published import LEGACY_MAIN

        ttype = bench.types.get(task)
        if not ttype or ttype == "?":
            ttype = mteb_task_type(task)
        legacy_main = LEGACY_MAIN.get(ttype or "", "")
    present = set(scores) | set(qual)
    present_splits = {k.split("/", 1)[0] for k in present}
    splits = bench.splits_of(task) or sorted(present_splits)
    wanted_subsets = bench.subsets_of(task)
    parts: dict[str, float] = {}
    missing: list[str] = []
    for split in splits:
        if split not in present_splits and _SPLIT_ALIASES.get(split) in present_splits and bench.leaderboard != "mteb":
            split = _SPLIT_ALIASES[split]  # mteb 1.x's name of the same split
        subsets = wanted_subsets or sorted({k.split("/", 1)[1] for k in present if k.split("/", 1)[0] == split})
        if not subsets:
            missing.append(f"{split}/*")
            continue
        for sub in subsets:
            key = f"{split}/{sub}"
            v = _value(scores.get(key), qual.get(key), bench.metric, task, bench.main_metric, legacy_main, bench.metric_aliases)
            if v is None:
                missing.append(key)
            else:
                parts[key] = 100.0 * v
    if missing:
        what = bench.metric or "main score"
        return TaskScore(task, None, parts, f"no {what} for {', '.join(missing)}", path)
    return TaskScore(task, sum(parts.values()) / len(parts), parts, "", path)


def task_score(entry: Entry, bench: Benchmark, task: str) -> TaskScore:
    """The task's score in this row; for a row from a results repository, from the first source
    folder that has one (the others' scores kept in `others`)."""
    cands = entry.candidates.get(task)
    if not cands:
        return _scores_of(entry.scores.get(task) or {}, entry.qualified.get(task) or {}, entry.paths.get(task), bench, task)
    chosen: TaskScore | None = None
    rest: list[TaskScore] = []
    first_only = entry.meta.get("first_only", False)  # mteb's choice of file, whatever it holds
    for c in cands:
        scores, legacy = c.scores, c.legacy
        if legacy and bench.leaderboard == "mteb" and c.path.is_file():
            from evalkit.report.published import mteb_main_scores

            scores, legacy = mteb_main_scores(c.path), False  # mteb's reading of an old file
        ts = _scores_of(scores, {}, c.path, bench, task, legacy=legacy)
        ts.source, ts.notes = c.source, list(c.notes)
        if chosen is None and (ts.value is not None or first_only):
            chosen = ts
        else:
            rest.append(ts)
    if chosen is None:
        from evalkit.report.published import source_label

        why = "; ".join(f"{source_label(t.source)}: {t.reason}" for t in rest)
        return TaskScore(task, None, reason=why, path=rest[0].path if rest else None,
                         unusable={t.source: t.reason for t in rest})
    chosen.others = {t.source: t.value for t in rest if t.value is not None}
    chosen.unusable = {t.source: t.reason for t in rest if t.value is None}
    return chosen


def round_task(value: float | None, rounding: str | None) -> float | None:
    """A task score (x100) as the card's tool kept it: round(x, 2) for both tools."""
    return value if value is None or rounding is None else round(value, 2)


def mean_of(vals: list[float], rounding: str | None = None) -> float:
    if rounding == "mteb-leaderboard":
        import numpy as np

        return float(np.round(np.mean(np.asarray(vals, dtype=np.float64)), 2))
    if rounding == "c-mteb":
        return round(sum(vals) / len(vals), 2)
    return sum(vals) / len(vals)


def aggregate(tasks: dict[str, TaskScore], names: list[str], rounding: str | None = None) -> Cell:
    vals = [tasks[t].value for t in names if tasks[t].value is not None]
    return Cell(mean_of(vals, rounding) if vals else None, len(vals), len(names))


def _cells(tasks: dict[str, TaskScore], bench: Benchmark, by_type: list | None = None) -> list[Cell]:
    """The row's cells; a `types` column (mteb's Mean (TaskType)) is the mean of the complete per-type
    means, n/N counting types."""
    cells = []
    for c in bench.columns:
        if c.kind == "types":
            types = [aggregate(tasks, t.tasks) for t in by_type or []]
            vals = [t.value for t in types if t.complete]
            cells.append(Cell(mean_of(vals) if vals else None, len(vals), len(types)))
        else:
            cells.append(aggregate(tasks, c.tasks, bench.rounding))
    return cells


def model_info(entry: Entry, bench: Benchmark) -> dict[str, str]:
    if not any(m in MODEL_COLUMNS for m in bench.model_columns):
        return {}
    meta = None if entry.meta.get("embed_dim") and entry.meta.get("max_tokens") else mteb_model_meta(entry.display_model)
    dim = entry.meta.get("embed_dim") or (getattr(meta, "embed_dim", None) if meta is not None else None)
    seq = entry.meta.get("max_length") or entry.meta.get("max_tokens") or (getattr(meta, "max_tokens", None) if meta is not None else None)
    out = {"Dimension": str(int(dim)) if dim else "-", "Sequence Length": str(int(seq)) if seq else "-"}
    return {k: out[k] for k in bench.model_columns if k in out}


def build_table(entries: list[Entry], bench: Benchmark, partial: str = "mark", keep_empty: bool = False) -> Table:
    scored = [(e, {t: task_score(e, bench, t) for t in bench.tasks}) for e in entries]
    by_type = None
    if bench.leaderboard == "mteb":  # its columns: the tasks that have a result file in any row
        from evalkit.report.mteb_leaderboard import apply_coverage, with_columns

        apply_coverage([tasks for _, tasks in scored], bench.tasks)
        bench, by_type = with_columns(bench, [t for t in bench.tasks if any(t in e.scores or t in e.qualified for e, _ in scored)])
    rows = []
    for e, tasks in scored:
        if not keep_empty and all(ts.value is None for ts in tasks.values()):
            continue  # nothing of this benchmark (e.g. a Chinese model's rows in an English table)
        if bench.rounding:
            for ts in tasks.values():
                ts.value = round_task(ts.value, bench.rounding)
        row = Row(e, tasks, _cells(tasks, bench, by_type), model_info(e, bench))
        if e.candidates:
            from evalkit.report.published import source_label

            used = row.sources_used
            authors = {f.name for f in e.sources if f.kind in ("authors", "early")}
            moved = [
                t for t, ts in tasks.items() if ts.value is not None and ts.source not in authors
                and any(a in ts.others and f"{ts.others[a]:.2f}" != f"{ts.value:.2f}" for a in authors)
            ]
            row.display_label = f"{e.display_model} (published: {' + '.join(source_label(s) for s in used) or 'nothing'}"
            if moved:
                row.display_label += f"; differs from the authors' scores on {len(moved)} task{'s' if len(moved) > 1 else ''}"
            row.display_label += ")"
        rows.append(row)
    rows.sort(key=Row.sort_key)
    if bench.leaderboard == "mteb":
        from evalkit.report.mteb_leaderboard import RANK, borda_ranks

        for r, rank in zip(rows, borda_ranks(rows, [t for t in bench.tasks if t not in bench.info["left_out"]])):
            r.info[RANK] = str(rank)
        rows.sort(key=lambda r: (int(r.info[RANK]), r.label))
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
