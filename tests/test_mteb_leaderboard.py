"""mteb's benchmarks as leaderboard tables (issue 25, item 2): `evalkit report --benchmark "MTEB(eng, v2)"`
aggregates as mteb's leaderboard does. The reference is mteb 2.26's own table code run in the test
on the same files: `ResultCache.load_results(tasks=benchmark)` over ../shared/published-results, then
`BenchmarkResults.get_benchmark_result()` (the leaderboard's `_create_summary_table`) and the per-task
table; every cell, every rank, every row mteb shows is compared, unrounded. No score is written here.
"""
from __future__ import annotations

import math
import warnings
from pathlib import Path

import pytest

from evalkit.cli import main
from tests.conftest import md_table

SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "published-results"
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/published-results is not here")


def _null(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def mteb_tables(name: str, folder: Path, tmp_path: Path):
    """mteb's summary and per-task tables (pandas) for the result files under `folder`."""
    import mteb

    root = tmp_path / "mteb-cache"
    root.mkdir()
    (root / "results").symlink_to(folder, target_is_directory=True)
    bench = mteb.get_benchmark(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = mteb.ResultCache(cache_path=root).load_results(tasks=bench, include_remote=False, require_model_meta=False)
        summary = res.get_benchmark_result()
        per_task = bench._create_per_task_table(res._to_results_df(bench.tasks)).to_pandas()
    return summary, per_task


def evalkit_table(name: str, published: list[Path], results: Path | None = None):
    from evalkit.report.mteb_leaderboard import load
    from evalkit.report.sources import load_published, load_runs
    from evalkit.report.tables import build_table

    entries = load_runs(results) if results else []
    for p in published:
        entries += load_published(p, "mteb")
    return build_table(entries, load(name))


def assert_equal_to_mteb(table, summary, per_task) -> None:
    rows = {r.entry.display_model: r for r in table.rows}
    assert set(summary["Model"]) <= set(rows), (list(summary["Model"]), list(rows))
    cols = {c.name: i for i, c in enumerate(table.benchmark.columns)}
    mteb_cols = [c for c in summary.columns if c.startswith("Mean (") or c in set(table.benchmark.types.values())]
    assert set(mteb_cols) == set(cols), (mteb_cols, list(cols))
    for rec in summary.to_dict("records"):
        r = rows[rec["Model"]]
        assert int(r.info["Rank (Borda)"]) == int(rec["Rank (Borda)"]), rec["Model"]
        for c in mteb_cols:
            cell = r.cells[cols[c]]
            if _null(rec[c]):
                assert not cell.complete, (rec["Model"], c, cell)
            else:
                assert cell.complete and abs(cell.value - 100 * rec[c]) < 1e-9, (rec["Model"], c, cell, rec[c])
    # the per-task table: the same tasks have columns, the same scores
    tasks = [c for c in per_task.columns if c not in ("Model", "_experiment_id")]
    assert set(tasks) == set(table.scored_tasks)
    for rec in per_task.to_dict("records"):
        r = rows[rec["Model"]]
        for t in tasks:
            v = r.tasks[t].value
            assert (v is None) == _null(rec[t]), (rec["Model"], t, v, rec[t], r.tasks[t].reason)
            assert v is None or abs(v - 100 * rec[t]) < 1e-9, (rec["Model"], t, v, rec[t])
    # mteb's order: by rank
    assert [r.entry.display_model for r in table.rows if r.entry.display_model in set(summary["Model"])] == list(summary["Model"])


@needs_shared
@pytest.mark.parametrize("name", ["MTEB(eng, v2)", "MTEB(eng, v1)", "MTEB(cmn, v1)"])
def test_published_rows_equal_mtebs_own_leaderboard_table(name, tmp_path):
    """The published files of seven models: mteb's table and evalkit's agree on every cell and rank.
    What it exercises: mteb's choice of file per task (main revision first: the maintainers' re-runs of
    the bge-*-en-v1.5, the authors' files for the rest), mteb's reading of mteb < 1.11 files (C-MTEB's,
    whose Reranking files have no main score mteb can find), the aggregate CQADupstack file (one of them
    the mean of 11 sub-forums) that mteb takes, MultilingualSentiment's test split that no file has
    (mteb does not count it), and the 14 tasks of MTEB(eng, v2) that no file has (left out of every mean)."""
    summary, per_task = mteb_tables(name, SHARED, tmp_path)
    assert len(summary) == 3
    table = evalkit_table(name, [SHARED])
    assert_equal_to_mteb(table, summary, per_task)
    extra = {r.entry.display_model for r in table.rows} - set(summary["Model"])
    # mteb's leaderboard joins its rows to its registry of embedding models and drops the reranker's
    # row; evalkit keeps every row (it is ranked among the others, as mteb ranks it before the join)
    assert extra <= {"BAAI/bge-reranker-base"}


def _synthetic(tmp_path: Path) -> Path:
    """A results folder of four models mteb knows, on five MTEB(eng, v2) tasks: ties, a missing task,
    and a fifth model with nothing of the benchmark."""
    import json

    scores = {  # model -> task -> {subset: score}
        "sentence-transformers/all-MiniLM-L6-v2": {"STS12": {"default": 0.7}, "STS13": {"default": 0.8}, "Banking77Classification": {"default": 0.8},
                                                   "SprintDuplicateQuestions": {"default": 0.9}},
        "BAAI/bge-small-en-v1.5": {"STS12": {"default": 0.7}, "STS13": {"default": 0.85}, "Banking77Classification": {"default": 0.85},
                                   "SprintDuplicateQuestions": {"default": 0.95}, "ArguAna": {"default": 0.6}},
        "intfloat/e5-small-v2": {"STS12": {"default": 0.75}, "STS13": {"default": 0.8}, "Banking77Classification": {"default": 0.8},
                                 "ArguAna": {"default": 0.5}},
        "thenlper/gte-small": {"STS12": {"default": 0.72}, "STS13": {"default": 0.81}, "Banking77Classification": {"default": 0.79},
                               "SprintDuplicateQuestions": {"default": 0.93}, "ArguAna": {"default": 0.55}},
        "BAAI/bge-base-zh-v1.5": {"LCQMC": {"default": 0.7}},
    }
    root = tmp_path / "results"
    for model, tasks in scores.items():
        d = root / model.replace("/", "__") / "0123456789abcdef0123456789abcdef01234567"
        d.mkdir(parents=True)
        for task, subs in tasks.items():
            doc = {"dataset_revision": "x", "task_name": task, "mteb_version": "2.26.24", "evaluation_time": 1.0, "kg_co2_emissions": None,
                   "scores": {"test": [{"hf_subset": s, "languages": ["eng-Latn"], "main_score": v} for s, v in subs.items()]}}
            (d / f"{task}.json").write_text(json.dumps(doc))
    return root


def test_ties_missing_tasks_and_subsets_equal_mteb(tmp_path):
    """Made here, as mteb's results layout: Borda ties, a task one row lacks (its means are partial
    where mteb shows none), a row that is all of another benchmark (dropped by both)."""
    folder = _synthetic(tmp_path)
    summary, per_task = mteb_tables("MTEB(eng, v2)", folder, tmp_path)
    table = evalkit_table("MTEB(eng, v2)", [folder])
    assert len(summary) == 4 and len(table.rows) == 4
    assert_equal_to_mteb(table, summary, per_task)
    e5 = next(r for r in table.rows if r.entry.display_model == "intfloat/e5-small-v2")
    assert e5.cells[0].text() == f"{e5.cells[0].value:.2f} (4/5)"  # mteb: no Mean (Task)


@needs_shared
def test_the_command_prints_mtebs_table(tmp_path, capsys):
    """`evalkit report --benchmark "MTEB(eng, v2)" --with-published ...`, as a user types it: mteb's
    columns, mteb's precedence by default, the tasks no row has named in the legend."""
    (tmp_path / "results").mkdir()
    assert main(["report", "--results", str(tmp_path / "results"), "--benchmark", "MTEB(eng, v2)", "--with-published", str(SHARED)]) == 0
    out = capsys.readouterr().out
    head, rows = md_table(out)
    assert head[:6] == ["Model", "Rank (Borda)", "Dimension", "Sequence Length", "Mean (Task)", "Mean (TaskType)"]
    assert [r[1] for r in rows.values()] == ["1", "2", "3"]
    assert "14 of the benchmark's 41 tasks have no result in any row" in out and "Touche2020Retrieval.v3" in out
    summary, _ = mteb_tables("MTEB(eng, v2)", SHARED, tmp_path)
    for rec in summary.to_dict("records"):
        (row,) = [r for label, r in rows.items() if label.startswith(rec["Model"] + " ")]
        assert row[4] == f"{round(100 * rec['Mean (Task)'], 2):.2f}"


def test_unknown_and_unsupported_benchmarks_are_one_line(tmp_path, capsys):
    (tmp_path / "r").mkdir()
    assert main(["report", "--results", str(tmp_path / "r"), "--benchmark", "MTEB(nowhere, v9)"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown benchmark 'MTEB(nowhere, v9)'" in err[0]
    for name, why in (("HUME(v1)", "mean_subset"), ("RTEB(beta)", "RtebBenchmark")):
        assert main(["report", "--results", str(tmp_path / "r"), "--benchmark", name]) != 0
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and why in err[0], err
