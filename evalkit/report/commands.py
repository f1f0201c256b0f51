"""The `report`, `compare` and `regress` subcommands (registered by evalkit/cli.py)."""
from __future__ import annotations

import sys
from pathlib import Path

from evalkit.errors import EvalkitError


def _write(text: str, out: Path | None, suffix: str) -> Path | None:
    from evalkit.results import atomic_write_text

    if out is None:
        sys.stdout.write(text)
        return None
    path = Path(out)
    if path.suffix != suffix:
        path = path.with_name(path.name + suffix)
    atomic_write_text(path, text)
    return path


def cmd_report(args) -> int:
    from evalkit.report import make_report

    results = Path(args.results)
    if not results.is_dir():
        raise EvalkitError(f"results folder {results} does not exist: run `evalkit run ...` first or give --results DIR")
    out = Path(args.out) if args.out else None
    published = [Path(p) for p in args.with_published or []]
    out_dir = (out.parent if out is not None else Path.cwd())
    text = make_report(results, args.benchmark, published, args.format, out_dir=out_dir, partial=args.partial,
                       published_source=args.published_source)
    path = _write(text, out, "." + args.format)
    if path is not None:
        print(f"wrote {path}", file=sys.stderr)
    return 0


def cmd_compare(args) -> int:
    from evalkit.report.compare import compare_runs

    labels = [s.strip() for s in args.labels.split(",")] if args.labels else None
    text = compare_runs([Path(r) for r in args.runs], labels, fmt=args.format, alpha=args.alpha)
    path = _write(text, Path(args.out) if args.out else None, "." + args.format)
    if path is not None:
        print(f"wrote {path}", file=sys.stderr)
    return 0


def cmd_regress(args) -> int:
    from evalkit.report.regress import junit_xml, markdown, regress

    o = regress(Path(args.baseline), Path(args.results), tolerance=args.tolerance, alpha=args.alpha,
                require_significance=args.require_significance)
    sys.stdout.write(markdown(o))
    if args.junit:
        from evalkit.results import atomic_write_text

        atomic_write_text(Path(args.junit), junit_xml(o))
        print(f"wrote {args.junit}", file=sys.stderr)
    for model, variant, task in o.failed_tasks:
        print(f"evalkit: regression: {task} ({model.replace('__', '/')}{' [' + variant + ']' if variant else ''})", file=sys.stderr)
    return o.exit_code


def add_report_commands(sub) -> None:
    from evalkit.report.benchmarks import DEFAULT_BENCHMARK
    from evalkit.report.regress import DEFAULT_TOLERANCE

    rp = sub.add_parser("report", help="leaderboard tables (markdown, HTML, CSV) from a results folder")
    rp.add_argument("--results", default="results", help="folder of model folders (default: results)")
    rp.add_argument("--benchmark", default=DEFAULT_BENCHMARK,
                    help=f"a benchmark of tasks/benchmarks.yaml, or any of mteb's by its name (\"MTEB(eng, v2)\"), aggregated as "
                         f"mteb's leaderboard does (default: {DEFAULT_BENCHMARK})")
    rp.add_argument("--with-published", action="append", metavar="FILE_OR_DIR",
                    help="published reference scores: a published_scores.json, or a clone of the MTEB results repository "
                         "(or some of its model folders; files of any mteb version) (repeatable)")
    rp.add_argument("--published-source", default=None, metavar="ORDER",
                    help="which source folder of a results repository each task comes from, first that has it: "
                         "authors (the default for evalkit's benchmarks: external, no_revision_available, then the revision "
                         "folders), reruns (the revision folders first), mteb (the default for mteb's benchmarks: the file "
                         "mteb's leaderboard takes), or a comma-separated list of folder names / revisions (only those)")
    rp.add_argument("--format", choices=["md", "html", "csv"], default="md")
    rp.add_argument("--out", help="output path without suffix, e.g. reports/leaderboard (default: stdout)")
    rp.add_argument("--partial", choices=["mark", "hide"], default="mark",
                    help="averages over incomplete groups: show marked with n/N (default) or hide")
    rp.set_defaults(func=cmd_report)

    cp = sub.add_parser("compare", help="compare runs task by task, with paired significance tests")
    cp.add_argument("runs", nargs="+", metavar="RUN", help="run folders: results/<model>/<revision>[/experiments/<variant>]")
    cp.add_argument("--labels", help="comma-separated labels, one per run")
    cp.add_argument("--format", choices=["md", "csv", "json"], default="md")
    cp.add_argument("--alpha", type=float, default=0.05)
    cp.add_argument("--out", help="output path without suffix (default: stdout)")
    cp.set_defaults(func=cmd_compare)

    rg = sub.add_parser("regress", help="CI gate: exit 1 when a main score drops below a baseline")
    rg.add_argument("--baseline", required=True, metavar="DIR_OR_FILE", help="results folder, run folder, result file or published-scores JSON")
    rg.add_argument("--results", default="results")
    rg.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE, help="allowed drop in points of main score x100 (default 0.1)")
    rg.add_argument("--alpha", type=float, default=0.05, help="significance level of the per-item test")
    rg.add_argument("--require-significance", action="store_true",
                    help="where per-item scores exist, fail only drops that are also significant")
    rg.add_argument("--junit", metavar="FILE", help="write JUnit XML here")
    rg.set_defaults(func=cmd_regress)
