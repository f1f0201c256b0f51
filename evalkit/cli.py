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


def _model_spec(args):
    from evalkit.models.catalog import get_spec

    return get_spec(
        args.model, pooling=args.pooling, max_length=args.max_length, query_instruction=args.query_instruction,
        revision=args.revision, trust_remote_code=args.trust_remote_code or None,
    )


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


def run_options(args):
    from evalkit.runner import RunOptions

    return RunOptions(
        output=Path(args.output), overwrite=args.overwrite, batch_size=args.batch_size, dtype=args.dtype,
        device=args.device, use_cache=not args.no_cache, cache_dir=Path(args.cache_dir) if args.cache_dir else None,
        seed=args.seed, search=getattr(args, "search", None) or "auto",
    )


def print_outcomes(outcomes, spec, out=sys.stdout) -> None:
    from evalkit.runner import published_for, published_scores

    pub = published_scores()
    rows = []
    for o in outcomes:
        p = published_for(pub, o.task, spec.result_name)
        if o.status == "failed":
            rows.append((o.task, o.type, "failed", "-", "-"))
            continue
        for key, score in o.scores.items():
            label = o.task if len(o.scores) == 1 else f"{o.task} ({key})"
            ps = p.get(key)
            mine = None if score is None else 100 * score
            delta = f"{mine - ps:+.2f}" if (ps is not None and mine is not None) else "-"
            rows.append((label, o.type, _fmt(mine), _fmt(ps), delta))
    head = ("task", "type", "main score", "published", "delta")
    widths = [max(len(str(r[i])) for r in rows + [head]) for i in range(5)]
    line = lambda r: "  ".join(str(c).ljust(w) if i < 2 else str(c).rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
    print(line(head), file=out)
    for r in rows:
        print(line(r), file=out)


def cmd_run(args) -> int:
    from evalkit.runner import make_embedder, run_tasks

    spec = _model_spec(args)
    specs = _task_specs(args)
    opts = run_options(args)
    from evalkit.rerank import cli_run as rerank_run, is_reranker

    fewshot = args.fewshot is not None or any((args.fewshot_compare, args.selector, args.selector_model))
    if fewshot and (args.reranker or args.first_stage or is_reranker(spec)):
        raise EvalkitError("--fewshot / --fewshot-compare evaluate an embedder: drop --reranker / --first-stage")
    if args.ray is not None and (fewshot or args.reranker or args.first_stage or is_reranker(spec) or spec.kind == "icl-embedder"):
        raise EvalkitError("--ray runs plain embedder evaluations: drop --ray for few-shot, in-context or reranker runs")
    if args.reranker or args.first_stage or is_reranker(spec):  # two-stage, or a reranker on its own tasks
        return rerank_run(args, spec, specs, opts)
    if fewshot or spec.kind == "icl-embedder":  # few-shot settings, or an in-context model (evalkit/fewshot.py)
        from evalkit.fewshot import cli_run as fewshot_run

        return fewshot_run(args, spec, specs, opts)
    embedder = make_embedder(spec, opts)
    n = len(specs)
    counter = iter(range(1, n + 1))

    def progress(o):
        i = next(counter)
        if o.status == "failed":
            print(f"evalkit: [{i}/{n}] {o.task}: {o.message}", file=sys.stderr, flush=True)
        else:
            s = ", ".join(f"{k} {100 * v:.2f}" for k, v in o.scores.items())
            extra = "already done" if o.status == "skipped" else f"{o.encoded} texts encoded, {o.cached} from cache, {o.seconds:.1f}s"
            print(f"[{i}/{n}] {o.task}: {s} ({extra})", file=sys.stderr, flush=True)

    if args.ray is not None:  # the same run, its work on a Ray cluster (evalkit/distributed.py)
        from evalkit.distributed import import_ray, run_on_ray

        import_ray()
        kw = {} if args.ray_shard_above is None else {"shard_above": args.ray_shard_above}
        outcomes = run_on_ray(spec, specs, opts, address=args.ray, workers=args.ray_workers, embedder=embedder, on_outcome=progress, **kw)
    else:
        outcomes = run_tasks(spec, specs, opts, embedder=embedder, on_outcome=progress)
    if any(o.status != "failed" for o in outcomes):
        print_outcomes(outcomes, spec)
    failed = [o for o in outcomes if o.status == "failed"]
    if failed and n > 1:
        print(f"evalkit: {len(failed)} of {n} tasks failed: {', '.join(o.task for o in failed)}", file=sys.stderr)
    return 2 if failed else 0


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
        reg = Registry()
        for name, s in reg.suites.items():
            print(f"{name:16s} {len(s['tasks']):3d} tasks  ({s['file']})")
    return 0


def cmd_cache(args) -> int:
    from evalkit.cache import EmbeddingCache

    cache = EmbeddingCache(args.cache_dir)
    if args.action == "stats":
        rows = cache.stats()
        print(f"cache: {cache.path}")
        for r in rows:
            print(f"{r['namespace']}  {r.get('model', '?')}@{str(r.get('revision', '?'))[:12]} {r.get('pooling')} {r.get('dtype')} max_length={r.get('max_length')}: {r['vectors']} vectors, {r['bytes'] / 1e6:.1f} MB")
        print(f"total: {sum(r['vectors'] for r in rows)} vectors")
    else:
        n = cache.clear()
        print(f"cleared {n} vectors from {cache.path}")
    return 0


def add_model_args(p):
    p.add_argument("--model", required=True, help="catalog name, hub id or local folder")
    p.add_argument("--pooling", choices=["cls", "mean", "last_token"])
    p.add_argument("--max-length", type=int)
    p.add_argument("--query-instruction")
    p.add_argument("--revision")
    p.add_argument("--trust-remote-code", action="store_true")


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
    r.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")
    r.set_defaults(func=cmd_run)

    li = sub.add_parser("list", help="list models, tasks or suites")
    li.add_argument("what", choices=["models", "tasks", "suites"])
    li.set_defaults(func=cmd_list)

    c = sub.add_parser("cache", help="embedding cache: stats or clear")
    c.add_argument("action", choices=["stats", "clear"])
    c.add_argument("--cache-dir")
    c.set_defaults(func=cmd_cache)

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
    try:
        return args.func(args)
    except EvalkitError as e:
        if debug:
            raise
        print(f"evalkit: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("evalkit: interrupted; finished tasks are kept, run the same command again to resume", file=sys.stderr)
        return 130


def _quiet() -> None:
    import warnings

    warnings.filterwarnings("ignore")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    for name in ("mteb", "transformers", "datasets", "sentence_transformers", "huggingface_hub", "httpx"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        import datasets

        datasets.disable_progress_bars()
    except Exception:
        pass
    try:
        from transformers.utils import logging as tlog

        tlog.set_verbosity_error()
        tlog.disable_progress_bar()
    except Exception:
        pass


if __name__ == "__main__":
    sys.exit(main())
