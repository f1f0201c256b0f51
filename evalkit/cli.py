"""evalkit's command line: run, list, cache, report, compare, regress."""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from evalkit.errors import EvalkitError

log = logging.getLogger("evalkit")


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def _task_specs(args):
    from evalkit.tasks import Registry

    reg = Registry()
    if bool(args.suite) == bool(args.tasks):
        raise EvalkitError("give exactly one of --suite NAME or --tasks A,B,DIR (evalkit list suites|tasks)")
    if args.suite:
        return reg.suite(args.suite)
    names = [t.strip() for t in args.tasks.split(",") if t.strip()]
    if not names:
        raise EvalkitError("--tasks is empty")
    return [reg.task(n) for n in names]


def plan_of(args):
    """The run as data, every input checked (evalkit.api.plan); nothing written yet."""
    from evalkit import api

    if args.fewshot is not None and args.fewshot_compare:
        raise EvalkitError("give --fewshot K or --fewshot-compare K1,K2,..., not both")
    api.check_ray(args.ray, args.ray_workers)
    return api.plan(
        args.model, _task_specs(args), output=args.output, fewshot=args.fewshot if args.fewshot is not None else args.fewshot_compare,
        selector=args.selector, selector_model=args.selector_model, reranker=args.reranker, first_stage=args.first_stage,
        top_k=args.top_k, m3_modes=args.m3_mode, kind=args.kind, batch_size=args.batch_size, dtype=args.dtype, device=args.device,
        cache=not args.no_cache, cache_dir=args.cache_dir, seed=args.seed, overwrite=args.overwrite, search=args.search,
        recipe=args.recipe, pooling=args.pooling, max_length=args.max_length, query_instruction=args.query_instruction,
        revision=args.revision, trust_remote_code=args.trust_remote_code or None, dry_run=args.dry_run, attention=args.attention,
    )


def cmd_run(args) -> int:
    from evalkit import api
    from evalkit.progress import Progress

    plan = plan_of(args)
    if args.dry_run:
        from evalkit.estimate import estimate, format_estimate

        print(format_estimate(plan, estimate(plan)), end="")
        return 0
    for note in plan.notes:
        print(f"evalkit: {note}", file=sys.stderr)
    progress = Progress()
    try:
        outcomes = api.run(plan, ray=args.ray, ray_workers=args.ray_workers, ray_shard_above=args.ray_shard_above, progress=progress).outcomes
    finally:
        progress.close()
    if any(o.status != "failed" for o in outcomes):
        print_outcomes(outcomes)
        for line in recipe_lines(plan):  # what made these vectors, as each result file records it (evalkit.recipe)
            print(line)
    runs = variant_runs(outcomes)
    if len(runs) > 1:
        print(comparison_table(runs), end="")
    failed = [o for o in outcomes if o.status == "failed"]
    if failed and len(outcomes) > 1:
        print(f"evalkit: {len(failed)} of {len(outcomes)} units failed: {', '.join(o.unit.label for o in failed)}", file=sys.stderr)
    return 2 if failed else 0


def recipe_lines(plan) -> list[str]:
    """One line per embedder of the plan: its recipe and where it came from."""
    from evalkit.models.recipes import summary

    specs = dict.fromkeys(u.model.spec for u in plan.units if u.role != "rerank")
    return [summary(spec) for spec in specs]


def variant_runs(outcomes) -> dict:
    """{row label: [result files]} of the embedder's variants (few-shot settings, M3 modes), for the
    comparison table: one row per setting, or per mode (and setting) when M3 modes ran."""
    with_m3 = any(o.unit.role == "m3" for o in outcomes)
    out: dict = {}
    for o in outcomes:
        u = o.unit
        if u.role == "rerank" or o.status == "failed" or (u.fewshot is None and u.m3 is None):
            continue
        label = u.fewshot.label if u.fewshot is not None else "0-shot"
        if with_m3:
            mode = u.m3.label if u.m3 is not None else "dense"
            label = mode if label == "0-shot" else f"{mode}, {label}"
        out.setdefault(label, []).append(u.path)
    return out


def print_outcomes(outcomes, out=None) -> None:
    """Every unit: its main score, the published score, the delta of a few-shot setting (to the same
    model's 0-shot unit) or of an M3 mode (to the dense unit of its setting), and the gain of a
    reranker or rescoring M3 mode over its first stage, x100."""
    from evalkit.results import published_for, published_scores

    out = out or sys.stdout
    pub = published_scores()
    by_key = {o.unit.key: o for o in outcomes}
    zero = {(o.unit.model.spec.result_name, o.task): o for o in outcomes if o.unit.role == "embed" and not o.unit.variant}
    dense = {(o.unit.model.spec.result_name, o.unit.fewshot, o.task): o for o in outcomes if o.unit.role == "embed"}
    rows = []
    for o in outcomes:
        u = o.unit
        label = u.model.name + (f" [{u.variant}]" if u.variant else "")
        if o.status == "failed":
            rows.append((o.task, label, "failed", "-", "-", "-"))
            continue
        p = published_for(pub, o.task, u.model.spec.result_name) if not u.variant else {}
        if u.role == "m3":
            z = dense.get((u.model.spec.result_name, u.fewshot, o.task))
        else:
            z = zero.get((u.model.spec.result_name, o.task)) if u.role == "embed" and u.variant else None
        fs = by_key.get(u.first_stage.key) if u.first_stage is not None else None
        for key, score in o.scores.items():
            name = o.task if len(o.scores) == 1 else f"{o.task} ({key})"
            mine = None if score is None else 100 * score
            ps = p.get(key)
            pub_s = "-" if ps is None else f"{ps:.2f}" + (f" ({round(mine - ps, 2) + 0.0:+.2f})" if mine is not None else "")
            delta = gain = "-"
            if z is not None and z.status != "failed" and z.scores.get(key) is not None and mine is not None:
                delta = f"{mine - 100 * z.scores[key]:+.2f}"
            if fs is not None and fs.status != "failed" and fs.scores.get(key) is not None and mine is not None:
                gain = f"{mine - 100 * fs.scores[key]:+.2f}"
            rows.append((name, label, _fmt(mine), pub_s, delta, gain))
    head = ("task", "model [variant]", "main score", "published", "vs 0-shot/dense", "vs first stage")
    widths = [max(len(str(r[i])) for r in rows + [head]) for i in range(len(head))]
    line = lambda r: "  ".join(str(c).ljust(w) if i < 2 else str(c).rjust(w) for i, (c, w) in enumerate(zip(r, widths)))  # noqa: E731
    print(line(head), file=out)
    for r in rows:
        print(line(r), file=out)


def comparison_table(runs: dict, fmt: str = "md") -> str:
    """evalkit.report.compare's table (deltas to the first row, paired tests) over {row label: the
    result files of this run}: a result folder may hold other tasks from other runs, and one M3
    mode's results lie in two folders (retrieval rescored from the dense top-k, reranking direct)."""
    import tempfile

    from evalkit.report.compare import compare_runs
    from evalkit.items import items_path

    with tempfile.TemporaryDirectory(prefix="evalkit-compare-") as tmp:
        dirs, names = [], []
        for i, (label, files) in enumerate(runs.items()):
            d = Path(tmp) / f"run{i}"
            d.mkdir()
            for src in files:
                if src.is_file():
                    (d / src.name).symlink_to(src.resolve())
                    it = items_path(src)
                    if it.is_file():
                        (d / it.name).symlink_to(it.resolve())
            if any(d.iterdir()):
                dirs.append(d)
                names.append(label)
        if len(dirs) < 2:
            return "evalkit: fewer than two settings have results: nothing to compare\n"
        return compare_runs(dirs, names, fmt=fmt)


def cmd_list(args) -> int:
    from evalkit.models.catalog import CATALOG
    from evalkit.tasks import Registry

    if args.what == "models":
        for name, s in CATALOG.items():
            print(f"{name:28s} {s.kind:13s} {s.pooling:10s} {s.max_length:5d}  {s.hub_id or s.local_path}")
    elif args.what == "tasks":
        for s in Registry().all_specs():
            print(f"{s.name:45s} {s.type:20s} {s.source:6s} {Path(s.origin).name}")
    else:
        import mteb

        reg = Registry()
        for name, s in reg.suites.items():
            print(f"{name:16s} {len(s['tasks']):3d} tasks  ({s['file']})")
        for b in mteb.get_benchmarks():  # --suite takes these names too
            text = sum(list(t.metadata.modalities) == ["text"] for t in b.tasks)
            print(f"{b.name:16s} {text:3d} tasks  (mteb {mteb.__version__}'s benchmark{f', {len(b.tasks) - text} non-text left out' if text < len(b.tasks) else ''})")
    return 0


def cmd_cache(args) -> int:
    from evalkit.cache import EmbeddingCache

    cache = EmbeddingCache(args.cache_dir)
    if args.action == "stats":
        rows = cache.stats()
        print(f"cache: {cache.path}")
        for r in rows:
            what = "M3 lexical weights" if r.get("output") == "m3-lexical-weights" else "vectors"
            print(f"{r['namespace']}  {r.get('model', '?')}@{str(r.get('revision', '?'))[:12]} {r.get('pooling')} {r.get('dtype')} max_length={r.get('max_length')}: {r['vectors']} {what}, {r['bytes'] / 1e6:.1f} MB")
        print(f"total: {sum(r['vectors'] for r in rows)} entries")
    else:
        n = cache.clear()
        print(f"cleared {n} vectors from {cache.path}")
    return 0


def add_model_args(p):
    p.add_argument("--model", required=True, help="catalog name, hub id or local folder")
    p.add_argument("--pooling", help="cls | mean | max | mean_sqrt_len_tokens | weightedmean | last_token, or several joined by +")
    p.add_argument("--recipe", help="encode --model as this recipe says: a catalog model's name (its authors' run), "
                   "sentence-transformers (the folder's own config), mteb (mteb's implementation) or mteb:HUB_ID")
    p.add_argument("--max-length", type=int)
    p.add_argument("--query-instruction")
    p.add_argument("--revision")
    p.add_argument("--trust-remote-code", action="store_true")


def cmd_air_bench_pack(args) -> int:
    from evalkit.air_bench_submission import pack

    print(pack(Path(args.results), args.retriever, args.reranker, Path(args.out) if args.out else None))
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="evalkit", description="Evaluate embedders and rerankers with mteb's official scoring.")
    ap.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = ap.add_subparsers(dest="cmd", required=True)

    r = sub.add_parser("run", help="evaluate a model on a suite or tasks")
    add_model_args(r)
    r.add_argument("--suite")
    r.add_argument("--tasks", help="comma-separated task names or task folders")
    r.add_argument("--output", default="results")
    r.add_argument("--batch-size", type=int, default=64)
    r.add_argument("--dtype", choices=["fp32", "fp16", "bf16"])
    r.add_argument("--device", default=None, help="auto | cpu | cuda | cuda:0,cuda:1")
    r.add_argument("--attention", choices=["auto", "packed", "padded"], default="auto",
                   help="packed: a batch's texts joined into one sequence, no padding in the network (BERT, XLM-R, Mistral, "
                        "Qwen, Llama types); padded: each text padded to its batch's longest; auto: packed on a GPU where the model allows")
    r.add_argument("--overwrite", action="store_true")
    r.add_argument("--no-cache", action="store_true")
    r.add_argument("--cache-dir")
    r.add_argument("--seed", type=int, default=42)
    r.add_argument("--reranker", help="rerank the top-k of --model (an embedder) with this reranker")
    r.add_argument("--first-stage", help="with a reranker as --model: the embedder whose top-k it reranks")
    r.add_argument("--top-k", type=int, default=100, help="candidates per query handed to the reranker (default 100)")
    r.add_argument("--fewshot", type=int, metavar="K", help="K in-context examples per query (bge-en-icl format), its own result set")
    r.add_argument("--selector", help="how examples are chosen: fixed | first_n | random | similar (default random; "
                   "a comma list with --fewshot-compare)")
    r.add_argument("--selector-model", help="the embedder that --selector similar ranks examples with (default all-MiniLM-L6-v2)")
    r.add_argument("--fewshot-compare", metavar="K1,K2,..", help="run each K (e.g. 0,3,5) and print the comparison table")
    r.add_argument("--ray", nargs="?", const="auto", metavar="auto|local|ADDRESS",
                   help="run the tasks on Ray: the cluster this machine joined (auto, the default), a new local instance, or HOST:PORT of a head node")
    r.add_argument("--ray-workers", type=int, metavar="N", help="model actors on Ray (default: one per GPU, else one per CPU up to 8)")
    r.add_argument("--ray-shard-above", type=int, metavar="DOCS",
                   help="with --ray: retrieval corpora above DOCS documents are encoded in shards on all workers first (default 50000)")
    r.add_argument("--search", choices=["auto", "memmap", "mteb"], default="auto",
                   help="retrieval search: memory-bounded memmap search (memmap; auto above 100k documents) or mteb's own (mteb)")
    r.add_argument("--m3-mode", action="append", metavar="MODES",
                   help="a multi-function embedder's retrieval modes, each its own result set: dense, sparse, colbert, "
                        "hybrid[:W_DENSE,W_SPARSE,W_COLBERT] (default 0.4,0.2,0.4) or all; a comma list, or repeat the option. "
                        "colbert and hybrid rescore the dense top-k (--top-k)")
    r.add_argument("--kind", choices=["embedder", "icl-embedder", "reranker", "llm-reranker"],
                   help="what --model is, for a folder or hub id outside the catalog (default: from its config)")
    r.add_argument("--dry-run", action="store_true", help="print the plan and an estimate of its time; write nothing")
    r.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")
    r.set_defaults(func=cmd_run)

    li = sub.add_parser("list", help="list models, tasks or suites")
    li.add_argument("what", choices=["models", "tasks", "suites"])
    li.set_defaults(func=cmd_list)

    c = sub.add_parser("cache", help="embedding cache: stats or clear")
    c.add_argument("action", choices=["stats", "clear"])
    c.add_argument("--cache-dir")
    c.set_defaults(func=cmd_cache)

    ab = sub.add_parser("air-bench", help="AIR-Bench: pack a run's search results for the leaderboard")
    ab_sub = ab.add_subparsers(dest="air_bench_cmd", required=True)
    pk = ab_sub.add_parser("pack", help="zip the test search results of one retriever (+ reranker) as AIR-Bench's "
                                        "scripts/zip_results.py does: <retriever>_<reranker>.zip, ready to submit")
    pk.add_argument("--results", default="results", help="the run's output folder (its air-bench/search_results/)")
    pk.add_argument("--retriever", help="the retriever's folder there (default: the only one)")
    pk.add_argument("--reranker", default="NoReranker", help="the reranker's folder (default: NoReranker, the retriever's own top 1000)")
    pk.add_argument("--out", help="where the zip goes (default: <results>/air-bench/zipped_results)")
    pk.set_defaults(func=cmd_air_bench_pack)

    from evalkit.report.commands import add_report_commands

    add_report_commands(sub)  # report, compare, regress
    return ap


def main(argv=None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    debug = bool(getattr(args, "debug", False)) or os.environ.get("EVALKIT_DEBUG") == "1"
    logging.basicConfig(level=logging.INFO if debug else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not debug:
        _quiet()
    import signal

    def _terminate(signum, frame):  # SIGTERM (a job scheduler, `kill`) ends the run as Ctrl-C does
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _terminate)
    try:
        return args.func(args)
    except EvalkitError as e:
        if debug:
            raise
        print(f"evalkit: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `evalkit list tasks | head`: the reader left, nothing is wrong
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print("evalkit: interrupted; finished units are kept, run the same command again to resume", file=sys.stderr)
        return 130


def _quiet() -> None:
    import warnings

    warnings.filterwarnings("ignore")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    # huggingface_hub's bars, and transformers' (it reads this at import): nothing here imports transformers
    # just to quiet it, since a fully cached run never loads it
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if "transformers" in sys.modules:  # imported already (a notebook, a test): it read the variable then
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    for name in ("mteb", "transformers", "datasets", "sentence_transformers", "huggingface_hub", "httpx"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        import datasets

        datasets.disable_progress_bars()
    except Exception:
        pass


if __name__ == "__main__":
    sys.exit(main())
