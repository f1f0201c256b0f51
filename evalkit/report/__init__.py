"""Reports over results/: leaderboards (markdown, CSV, HTML), run comparisons with significance
tests, and the regression gate.

- benchmarks.py  benchmark definitions from tasks/benchmarks.yaml (columns, splits, metric)
- sources.py     rows: evalkit's result folders, published scores (JSON or an MTEB results clone)
- published.py   the public MTEB results repository's files, any mteb version; source folders' precedence
- tables.py      aggregation that never averages over a partial group without saying so
- render.py      markdown / CSV / self-contained HTML (jinja2 templates in templates/, inline SVG charts)
- (evalkit/items.py, in the core: per-item scores kept beside each result, <Task>.items.json, read here)
- stats.py       paired randomisation test and paired bootstrap (seeded)
- compare.py     `evalkit compare`: runs side by side, deltas, p-values
- regress.py     `evalkit regress`: the CI gate against a committed baseline, JUnit XML
"""
from __future__ import annotations

from pathlib import Path


def make_report(results: Path, benchmark: str | None = None, published: list[Path] | None = None, fmt: str = "md",
                out_dir: Path | None = None, partial: str = "mark", published_source: str | None = None) -> str:
    """The leaderboard of `benchmark` (default offline-en) over the runs in `results` and the
    published sources, rendered as `fmt` (md | csv | html). `published_source` orders a results
    repository's source folders (authors | reruns | mteb | folder names, see evalkit/report/published.py;
    default: mteb for one of mteb's benchmarks, else authors)."""
    from evalkit.report.benchmarks import DEFAULT_BENCHMARK
    from evalkit.report.mteb_leaderboard import find_benchmark
    from evalkit.report.render import render
    from evalkit.report.sources import load_published, load_runs
    from evalkit.report.tables import build_table

    bench = find_benchmark(benchmark or DEFAULT_BENCHMARK)
    entries = load_runs(results)
    for p in published or []:
        entries += load_published(p, published_source or ("mteb" if bench.leaderboard == "mteb" else "authors"))
    table = build_table(entries, bench, partial=partial)
    if not table.rows:
        from evalkit.errors import EvalkitError

        raise EvalkitError(
            f"no scores for benchmark {bench.name} under {results}{' or in ' + ', '.join(map(str, published)) if published else ''}: "
            f"run `evalkit run --suite ...` first, add --with-published FILE, or pick another --benchmark"
        )
    return render(table, fmt, out_dir)
