"""mteb's benchmarks as leaderboard tables, aggregated the way mteb 2.26's leaderboard aggregates them
(`Benchmark._create_summary_table` in mteb/benchmarks/_create_table.py, over the frame that
`BenchmarkResults` builds in mteb/results/benchmark_results.py):

- the tasks are the benchmark's, each with its eval splits and the subsets the benchmark selects (the
  task objects mteb's benchmark holds, after its language filter; an aggregate task its `default`);
- a task's score is the mean of its main score over those splits x subsets that the row has; the row
  has no score for the task (mteb nulls it) when it has fewer of them than the number of splits times
  the number of subsets that any row has (`apply_coverage`): a split no row has does not count;
- the columns are the benchmark's aggregations: Mean (Task) over the tasks, Mean (TaskType) over the
  per-type means, then one column per task type. Where a task of a mean has no score mteb shows
  nothing; here the cell is partial, marked n/N (for Mean (TaskType): types);
- a task that no row has a result file for is left out of every column (mteb's table has a column
  only for the tasks it has results for); the table says which;
- Rank (Borda): for each task, every row scores (number of rows - its rank among the rows that have the
  task, ties averaged), from the mean of whatever splits x subsets it has; the rank orders the sums,
  ties sharing the better rank; rows are sorted by it;
- a published row from a results repository takes each task from the file mteb's `join_revisions`
  takes (`published.mteb_order`), whether or not that file has the benchmark's selection; a file older
  than mteb 1.11 is read by mteb's own loader (`published.mteb_main_scores`).

mteb's leaderboard drops rows of models its registry does not know; here every row stays, and is ranked.
A benchmark's custom groupings (LongEmbed's context lengths, BRIGHT's document lengths) add columns on
mteb's leaderboard that are not shown here (the legend says so); benchmarks that mteb ranks otherwise
(Mean (Subset), public/private means) are refused in one line.
"""
from __future__ import annotations

import dataclasses
from functools import lru_cache

from evalkit.errors import EvalkitError
from evalkit.report.benchmarks import Benchmark, Column

MEAN_TASK, MEAN_TASK_TYPE, RANK = "Mean (Task)", "Mean (TaskType)", "Rank (Borda)"
SUPPORTED = ("mean_task", "mean_task_type", "task_types")


@lru_cache(maxsize=None)
def _mteb_benchmark(name: str):
    import mteb

    try:
        return mteb.get_benchmark(name)
    except Exception:
        return None


def is_mteb_benchmark(name: str) -> bool:
    return _mteb_benchmark(name) is not None


def mteb_benchmark_names() -> list[str]:
    import mteb

    return [b.name for b in mteb.get_benchmarks()]


def find_benchmark(name: str) -> Benchmark:
    """A benchmark of tasks/benchmarks.yaml, else one of mteb's (its name as mteb spells it, or an alias)."""
    from evalkit.report.benchmarks import load_benchmark, names

    if name in names():
        return load_benchmark(name)
    if not is_mteb_benchmark(name):
        raise EvalkitError(f"unknown benchmark {name!r}: neither in tasks/benchmarks.yaml ({', '.join(names())}) nor one of "
                           f"mteb's benchmarks (`evalkit list suites` lists them)")
    return load(name)


def load(name: str) -> Benchmark:
    """`name` (as mteb spells it, or one of its aliases) as a Benchmark with leaderboard="mteb"; its
    columns are made per table (build_table), from the tasks that have results."""
    mb = _mteb_benchmark(name)
    if mb is None:
        raise EvalkitError(f"unknown benchmark {name!r}: neither in tasks/benchmarks.yaml nor one of mteb's benchmarks")
    from mteb.benchmarks.benchmark import Benchmark as MtebBenchmark

    if type(mb)._create_summary_table is not MtebBenchmark._create_summary_table or mb.summary_sort_column is not None:
        raise EvalkitError(f"benchmark {mb.name}: mteb's leaderboard ranks it by its own rules ({type(mb).__name__}), which "
                           f"evalkit's tables do not follow (they follow mteb's default: Mean (Task), Mean (TaskType), Rank (Borda))")
    aggs = [getattr(a, "value", None) for a in mb.aggregations]
    other = [v for v in aggs if v is not None and v not in SUPPORTED]
    if other:
        raise EvalkitError(
            f"benchmark {mb.name}: mteb's leaderboard aggregates it by {', '.join(other)}, which evalkit's tables do not "
            f"compute (they compute Mean (Task), Mean (TaskType) and the per-type means)"
        )
    groupings = [str(getattr(a, "name", a)) for a, v in zip(mb.aggregations, aggs) if v is None]
    tasks, types, overrides = [], {}, {}
    for t in mb.tasks:
        n = t.metadata.name
        tasks.append(n)
        types[n] = t.metadata.type
        overrides[n] = {"splits": list(t.eval_splits), "subsets": ["default"] if t.is_aggregate else list(t.hf_subsets)}
    return Benchmark(
        name=mb.name, title=mb.display_name or mb.name, tasks=tasks, types=types, columns=[], splits=[],
        overrides=overrides, leaderboard="mteb", model_columns=[RANK, "Dimension", "Sequence Length"], info={"aggregations": [v for v in aggs if v], "groupings": groupings},
    )


def columns(bench: Benchmark, present: list[str]) -> tuple[list[Column], list[Column]]:
    """The benchmark's columns over the tasks that have results, in mteb's order (means, then types)."""
    aggs = bench.info.get("aggregations", SUPPORTED)
    cols = []
    if "mean_task" in aggs:
        cols.append(Column(MEAN_TASK, list(present)))
    types = list(dict.fromkeys(bench.types[t] for t in present))
    by_type = [Column(ty, [t for t in present if bench.types[t] == ty]) for ty in types]
    if "mean_task_type" in aggs:
        cols.append(Column(MEAN_TASK_TYPE, [], kind="types"))
    if "task_types" in aggs:
        cols += by_type
    return cols, by_type


def with_columns(bench: Benchmark, present: list[str]) -> tuple[Benchmark, list[Column]]:
    cols, by_type = columns(bench, present)
    return dataclasses.replace(bench, columns=cols, info={**bench.info, "left_out": [t for t in bench.tasks if t not in present]}), by_type


def apply_coverage(rows: list[dict], tasks: list[str]) -> None:
    """mteb's completeness rule (`_incomplete_task_pairs`), applied to every row's TaskScores (all
    rows, those without any score too): a task's score is the mean of the splits x subsets the row
    has, None when it has fewer than (splits any row has) x (subsets any row has)."""
    for t in tasks:
        keys = [k for r in rows for k in r[t].parts]
        need = len({k.split("/", 1)[0] for k in keys}) * len({k.split("/", 1)[1] for k in keys})
        for r in rows:
            ts = r[t]
            if not ts.parts:
                continue
            if len(ts.parts) >= need:
                ts.value, ts.reason = sum(ts.parts.values()) / len(ts.parts), ""
            else:
                ts.value = None
                ts.reason = f"{len(ts.parts)} of the {need} splits x subsets that rows have here (mteb counts it missing)"


def borda_ranks(rows, tasks: list[str]) -> list[int]:
    """mteb's Rank (Borda) of each row over `tasks` (see the module's docstring)."""
    n = len(rows)
    points = [0.0] * n
    for t in tasks:
        have = [(i, sum(ts.parts.values()) / len(ts.parts)) for i, r in enumerate(rows)
                for ts in [r.tasks[t]] if ts.parts]
        ordered = sorted(have, key=lambda p: -p[1])
        j = 0
        while j < len(ordered):  # average ranks (1-based) over ties
            k = j
            while k + 1 < len(ordered) and ordered[k + 1][1] == ordered[j][1]:
                k += 1
            for i, _ in ordered[j:k + 1]:
                points[i] += n - (j + k + 2) / 2
            j = k + 1
    return [1 + sum(1 for q in points if q > p) for p in points]
