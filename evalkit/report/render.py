"""Render a leaderboard Table as markdown, CSV or one self-contained HTML file (jinja2 templates)."""
from __future__ import annotations

import datetime
import os
from pathlib import Path

from evalkit.report.charts import grouped_bars
from evalkit.report.published import source_label
from evalkit.report.tables import Table, fewshot_series

TEMPLATES = Path(__file__).resolve().parent / "templates"
FORMATS = ("md", "html", "csv")
LEGEND = (
    "Scores x100, 2 decimals: each task's {metric}, averaged over the benchmark's splits/subsets; a column is the "
    "mean over its tasks (every task weighs the same). \"61.32 (11/12)\" is a partial mean over the 11 of 12 tasks "
    "that have a score, not comparable with complete cells; \"-\" means no score.{published}"
)


def _env():
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=jinja2.select_autoescape(["html", "j2.html", "html.j2"]),
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["mdcell"] = lambda s: str(s).replace("|", "\\|")
    return env


ROUNDING_NOTE = {
    "mteb-leaderboard": " As on the model cards (the MTEB leaderboard's way), each task score is rounded to 2 decimals "
                        "before the means, which are rounded half to even.",
    "c-mteb": " As on the model cards (C-MTEB's summarize_results.py), each task score is rounded to 2 decimals "
              "before the means, which are rounded with Python's round().",
}


MTEB_LEGEND = (
    "Scores x100, 2 decimals, aggregated as mteb's leaderboard aggregates {name}: each task's main score averaged over "
    "the benchmark's splits/subsets; Mean (Task) over the tasks, Mean (TaskType) over the task types' means; Rank (Borda) "
    "as mteb ranks. Where mteb's leaderboard shows no mean because a task has no score, the cell is partial: "
    "\"61.32 (11/12)\" (for Mean (TaskType): types); \"-\" means no score.{left_out}{published}"
)


def _legend(table: Table) -> str:
    sources = sorted({r.entry.source for r in table.rows if r.entry.published})
    if table.benchmark.leaderboard == "mteb":
        left = table.benchmark.info.get("left_out") or []
        left_out = (f" {len(left)} of the benchmark's {len(table.benchmark.tasks)} tasks have no result in any row and, as on "
                    f"mteb's leaderboard, count in no column: {', '.join(left)}." if left else "")
        published = (f" Published rows ({', '.join(sources)}) take each task from the file mteb's leaderboard takes "
                     "(its main revision, else the newest mteb version); see \"Published sources\"." if sources else "")
        groups = table.benchmark.info.get("groupings") or []
        if groups:
            left_out += f" mteb's leaderboard also shows the means of its custom grouping{'s' if len(groups) > 1 else ''} ({', '.join(groups)}); not here."
        return MTEB_LEGEND.format(name=table.benchmark.name, left_out=left_out, published=published)
    metric = table.benchmark.metric or "main score"
    if table.benchmark.metric_aliases:
        metric += f" (or {', '.join(table.benchmark.metric_aliases)})"
    published = f" Rows marked (published) are reference scores from {', '.join(sources)}." if sources else ""
    if any(r.entry.candidates for r in table.rows):
        published += (" A row read from a results repository names the source folders its scores come from"
                      " (\"published: external\"); see \"Published sources\" for each task's.")
    return LEGEND.format(metric=metric, published=published) + ROUNDING_NOTE.get(table.benchmark.rounding or "", "")


def render_markdown(table: Table) -> str:
    b = table.benchmark
    task_df = table.task_frame()
    return _env().get_template("leaderboard.md.j2").render(
        title=b.title,
        headers=table.headers,
        rows=[table.cells_text(r) for r in table.rows],
        legend=_legend(table),
        notes=table.missing_notes(),
        provenance=table.provenance(),
        tasks=b.tasks,
        task_rows=[[rec["Model"], *("-" if v is None or v != v else f"{v:.2f}" for v in (rec[t] for t in b.tasks))] for rec in task_df.to_dict("records")],
        fewshot=[{**fs, "tasks": [{**t, "cells": ["-" if v is None else f"{v:.2f}" for v in t["values"]]} for t in fs["tasks"]]}
                 for fs in fewshot_series(table)],
    )


def render_csv(table: Table) -> str:
    return table.frame().to_csv(index=False)


def _rel(path: Path | None, base: Path) -> str | None:
    if path is None:
        return None
    try:
        return Path(os.path.relpath(Path(path).resolve(), base.resolve())).as_posix()
    except ValueError:
        return Path(path).resolve().as_uri()


def render_html(table: Table, out_dir: Path | None = None) -> str:
    b = table.benchmark
    base = Path(out_dir) if out_dir is not None else Path.cwd()
    rows = []
    for i, r in enumerate(table.rows):
        cells = []
        for col, cell in zip(b.columns, r.cells):
            hide = cell.partial and table.partial == "hide"
            cells.append({
                "text": cell.text(table.partial),
                "value": "" if cell.value is None or hide else f"{cell.value:.6f}",
                "state": "missing" if cell.missing else ("partial" if cell.partial else "complete"),
                "n": cell.n, "total": cell.total, "column": col.label,
            })
        tasks = []
        for t in b.tasks:
            ts = r.tasks[t]
            tasks.append({
                "task": t, "type": b.types.get(t, "?"), "selection": b.selection(t),
                "text": "-" if ts.value is None else f"{ts.value:.2f}",
                "value": "" if ts.value is None else f"{ts.value:.6f}",
                "parts": ", ".join(f"{k} {v:.2f}" for k, v in ts.parts.items()),
                "reason": ts.reason, "link": _rel(ts.path, base),
                "source": source_label(ts.source) if ts.source else "",
                "notes": "; ".join(ts.notes),
            })
        rows.append({"id": f"row-{i}", "label": r.label, "published": r.entry.published, "info": [r.info.get(m, "-") for m in b.model_columns],
                     "cells": cells, "tasks": tasks, "revision": r.entry.revision or "", "variant": r.entry.variant or ""})

    # per-type chart: the columns that are not the overall average
    chart_cols = [i for i, c in enumerate(b.columns) if set(c.tasks) != set(b.tasks) or len(b.columns) == 1]
    type_chart = ""
    if table.rows and chart_cols:
        type_chart = grouped_bars(
            [b.columns[i].label for i in chart_cols], [r.label for r in table.rows],
            [[(r.cells[i].value if not (r.cells[i].partial and table.partial == "hide") else None, r.cells[i].partial,
               f"{r.cells[i].n}/{r.cells[i].total} tasks") for r in table.rows] for i in chart_cols],
            title=f"{b.title}: score per column", chart_id="type-chart",
        )
    fewshot_charts = []
    for fs in fewshot_series(table):
        fewshot_charts.append(grouped_bars(
            [t["task"] for t in fs["tasks"]], fs["series"],
            [[(v, False, "") for v in t["values"]] for t in fs["tasks"]],
            title=f"{fs['model']}: zero-shot vs few-shot", chart_id=f"fewshot-{len(fewshot_charts)}",
        ))
    return _env().get_template("leaderboard.html.j2").render(
        title=b.title, benchmark=b.name, headers=table.headers, n_info=len(b.model_columns), rows=rows,
        legend=_legend(table), notes=table.missing_notes(), type_chart=type_chart, fewshot_charts=fewshot_charts,
        provenance=table.provenance(), has_sources=any(r.entry.candidates for r in table.rows),
        generated=datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
    )


def render(table: Table, fmt: str, out_dir: Path | None = None) -> str:
    if fmt == "md":
        return render_markdown(table)
    if fmt == "csv":
        return render_csv(table)
    if fmt == "html":
        return render_html(table, out_dir)
    raise ValueError(f"format {fmt!r}: use one of {', '.join(FORMATS)}")
