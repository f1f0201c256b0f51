"""Two-stage retrieve-then-rerank evaluation.

Retrieval task:  the first-stage embedder runs through the ordinary runner (its result written as
                 usual); its top-k per query is saved beside that result as a run file,
                 <output>/<embedder>/<rev>/<Task>.run_top<k>.json, computed by mteb's own search
                 code on the embedder's (cached) vectors, so its scores are mteb's. The task is then
                 built again with `top_ranked` = that top-k, and mteb's retrieval evaluator scores the
                 reranker over exactly those candidates. The reranked result goes to
                 <output>/<reranker>/<rev>/experiments/rerank-<embedder>-top<k>/<Task>.json and
                 records its first stage. A run file that exists is reused (a smaller k is cut from a
                 larger file), so a second reranker on the same first stage encodes no corpus again.
Reranking task:  it carries its own candidate lists; the reranker runs on them directly and its
                 result goes to the reranker's own folder. With an embedder given, the embedder is
                 scored on the same task as the "first stage" column.
"""
from __future__ import annotations

import logging
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

from evalkit.errors import EvalkitError
from evalkit.items import ItemRecorder
from evalkit.models.reranker import RERANKER_KINDS
from evalkit.results import atomic_write_json, main_scores, read_result, result_dir
from evalkit.runner import Outcome, RunOptions, folder_lock, set_seeds, versions

log = logging.getLogger("evalkit")

RUN_KIND = "evalkit-run"
DIRECT_TYPES = ("Reranking",)
TWO_STAGE_TYPES = ("Retrieval",)


@dataclass
class RerankOutcome:
    task: str
    type: str
    first_stage: Outcome | None = None  # the embedder's own result on the task (None: no first stage)
    reranked: Outcome | None = None
    run_file: Path | None = None
    run_reused: bool = False  # the run file existed and no first-stage text was encoded for it
    first_stage_encoded: int = 0  # texts the first stage encoded in this call (result + run file)
    pairs: int = 0  # (query, passage) pairs the reranker scored in this call

    @property
    def status(self) -> str:
        return self.reranked.status if self.reranked is not None else "failed"

    @property
    def message(self) -> str:
        for o in (self.reranked, self.first_stage):
            if o is not None and o.status == "failed":
                return o.message
        return ""


# ----------------------------------------------------------------------------- model kinds
def _architectures(spec) -> list[str]:
    """The `architectures` of a local model folder's config.json (no hub access; [] when unknown)."""
    from evalkit.models.loading import read_json

    if spec.hub_id is not None or not spec.local_path or spec.local_path.startswith("pypi:"):
        return []  # catalog and hub models: their kind is what the catalog says
    return [str(a) for a in read_json(Path(spec.local_path) / "config.json").get("architectures") or []]


def is_reranker(spec) -> bool:
    """A catalog reranker, or a local folder holding a sequence-classification (cross-encoder) model."""
    return spec.kind in RERANKER_KINDS or any(a.endswith("ForSequenceClassification") for a in _architectures(spec))


def as_reranker(spec):
    """`spec` in the reranker role: its kind made explicit (a local causal LM is an LLM reranker)."""
    if spec.kind in RERANKER_KINDS:
        return spec
    from evalkit.models.catalog import ALIASES, CATALOG

    if spec.hub_id in ALIASES or (spec.hub_id is not None and spec.name in CATALOG):
        raise EvalkitError(f"{spec.name} is an {spec.kind}, not a reranker: give a cross-encoder or LLM reranker (evalkit list models)")
    archs = _architectures(spec)
    kind = "llm-reranker" if any(a.endswith("ForCausalLM") for a in archs) else "reranker"
    return replace(spec, kind=kind)


def as_first_stage(spec):
    if is_reranker(spec):
        raise EvalkitError(f"{spec.name} is a reranker, not an embedder: the first stage must be an embedder (e.g. all-MiniLM-L6-v2)")
    return spec


def check_plan(first_spec, rr_spec, task_specs, top_k: int) -> None:
    """Everything that can be wrong before a model is loaded, as one line."""
    if top_k is None or int(top_k) < 1:
        raise EvalkitError(f"--top-k must be a positive integer, got {top_k!r}")
    if rr_spec.kind not in RERANKER_KINDS:
        raise EvalkitError(f"{rr_spec.name} is not a reranker")
    if not task_specs:
        raise EvalkitError("no tasks to run")
    other = [f"{t.name} ({t.type})" for t in task_specs if t.type not in TWO_STAGE_TYPES + DIRECT_TYPES]
    if other:
        raise EvalkitError(f"rerankers are scored on Retrieval and Reranking tasks only, not on {', '.join(other)}: leave those out of --tasks")
    if first_spec is None:
        need = [t.name for t in task_specs if t.type in TWO_STAGE_TYPES]
        if need:
            raise EvalkitError(
                f"{rr_spec.name} is a reranker and retrieval task{'s' if len(need) > 1 else ''} {', '.join(need)} "
                f"need{'' if len(need) > 1 else 's'} candidates from a first stage: add --first-stage EMBEDDER "
                f"(e.g. --first-stage all-MiniLM-L6-v2), or run --model EMBEDDER --reranker {rr_spec.name}"
            )


def rerank_variant(first_spec, top_k: int, first_variant: str | None = None) -> str:
    """The experiment name of a reranked result: which first stage, which k."""
    name = first_spec.result_name + (f"-{first_variant}" if first_variant else "")
    return f"rerank-{name}-top{int(top_k)}"


# ----------------------------------------------------------------------------- run files
def run_file_path(folder: Path, task: str, top_k: int) -> Path:
    return Path(folder) / f"{task}.run_top{int(top_k)}.json"


def read_run_file(path: Path) -> dict | None:
    """A complete, valid run file's content, or None."""
    import json

    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or doc.get("kind") != RUN_KIND or not isinstance(doc.get("run"), dict):
        return None
    if not isinstance(doc.get("top_k"), int) or not doc["run"]:
        return None
    for splits in doc["run"].values():
        if not isinstance(splits, dict) or not all(isinstance(q, dict) for q in splits.values()):
            return None
    return doc


def find_run_file(folder: Path, task: str, top_k: int) -> tuple[Path, dict] | None:
    """The run file for `top_k`, or the smallest one with a larger k cut down to `top_k`."""
    import re

    found = []
    for p in Path(folder).glob(f"{task}.run_top*.json"):
        m = re.fullmatch(re.escape(task) + r"\.run_top(\d+)\.json", p.name)
        if m and int(m.group(1)) >= top_k:
            found.append((int(m.group(1)), p))
    for k, p in sorted(found):
        doc = read_run_file(p)
        if doc is None or doc["top_k"] != k:
            continue
        if k > top_k:
            doc = {**doc, "top_k": top_k, "cut_from": p.name, "run": cut_run(doc["run"], top_k)}
        return p, doc
    return None


def cut_run(run: dict, top_k: int) -> dict:
    """The best `top_k` documents per query (stable for equal scores: the stored order wins)."""
    out: dict = {}
    for subset, splits in run.items():
        out[subset] = {}
        for split, queries in splits.items():
            out[subset][split] = {
                qid: dict(sorted(docs.items(), key=lambda kv: -kv[1])[:top_k]) for qid, docs in queries.items()
            }
    return out


def top_ranked_of(run_split: dict) -> dict[str, list[str]]:
    """mteb's top_ranked ({query: [doc ids, best first]}) from one split of a run."""
    return {qid: [d for d, _ in sorted(docs.items(), key=lambda kv: -kv[1])] for qid, docs in run_split.items()}


def _load_task_data(task, ts):
    """Make sure an mteb task has its data in mteb's v2 retrieval layout (hub tasks load here)."""
    if not task.data_loaded:
        try:
            task.load_data()
        except Exception as e:
            raise EvalkitError(
                f"task {ts.name}: its data could not be loaded from the Hugging Face hub ({type(e).__name__}): "
                "mirror it into the data folder (EVALKIT_DATA) or run where the hub is reachable"
            ) from e
    if hasattr(task, "convert_v1_dataset_format_to_v2"):
        task.convert_v1_dataset_format_to_v2(num_proc=None)
    return task


def _splits(task):
    subsets = list(task.hf_subsets) if getattr(task, "hf_subsets", None) else list(task.dataset.keys())
    for subset in subsets:
        if subset not in task.dataset:
            continue
        for split in task.eval_splits:
            if split in task.dataset[subset]:
                yield subset, split, task.dataset[subset][split]


def build_run(first_spec, embedder, ts, opts: RunOptions, top_k: int) -> dict:
    """{subset: {split: {query: {doc: score}}}}: the first stage's top-k, by mteb's own search code.

    mteb's SearchEncoderWrapper does the full-corpus search exactly as in the first stage's evaluation,
    on the same adapter (same inputs, same similarity), so the scores are mteb's; the vectors come from
    the embedding cache that the first stage has just filled.
    """
    from mteb.models.search_wrappers import SearchEncoderWrapper

    from evalkit.models.adapters import EmbeddingAdapter
    from evalkit.tasks import build_task

    set_seeds(opts.seed)
    task = _load_task_data(build_task(ts), ts)
    prefix_fn = opts.prefix_factory(ts, task) if opts.prefix_factory else None
    adapter = EmbeddingAdapter(first_spec, embedder, task_instructions={ts.name: ts.instruction} if ts.instruction else None, prefix_fn=prefix_fn)
    encode_kwargs = {"batch_size": int(opts.batch_size), "show_progress_bar": False}
    run: dict = {}
    for subset, split, data in _splits(task):
        search = SearchEncoderWrapper(adapter)
        common = {"task_metadata": task.metadata, "hf_split": split, "hf_subset": subset, "encode_kwargs": encode_kwargs}
        search.index(data["corpus"], **common)
        res = search.search(data["queries"], top_k=int(top_k), top_ranked=None, **common)
        run.setdefault(subset, {})[split] = {
            qid: dict(sorted(((d, float(s)) for d, s in docs.items()), key=lambda kv: -kv[1])) for qid, docs in res.items()
        }
    if not run:
        raise EvalkitError(f"task {ts.name}: no split to retrieve from")
    return run


# ----------------------------------------------------------------------------- the pipeline
def _reranker_doc(res, rr_spec, reranker, opts: RunOptions, ts, first: dict | None, pairs: int) -> dict:
    doc = res.model_dump(mode="json")
    doc["date"] = res.date.timestamp() if res.date else None
    res._round_scores(doc["scores"], 6)
    doc["evalkit"] = {
        "model": rr_spec.name,
        "hub_id": rr_spec.hub_id,
        "kind": rr_spec.kind,
        "model_revision": reranker.revision,
        "weights": reranker.weights,
        "max_length": reranker.max_length,
        "dtype": reranker.dtype,
        "batch_size": int(opts.batch_size),
        "seed": opts.seed,
        "variant": opts.variant,
        "data_source": ts.source,
        "first_stage": first,
        "work": {"reranked_pairs": int(pairs)},
        "versions": versions(),
        **opts.extra_meta,
    }
    return doc


def run_rerank(
    first_spec,
    rr_spec,
    task_specs,
    opts: RunOptions,
    top_k: int = 100,
    *,
    embedder=None,
    reranker=None,
    on_first_stage: Callable | None = None,
    on_outcome: Callable | None = None,
) -> list[RerankOutcome]:
    """First stage (when given) on every task, then the reranker; one RerankOutcome per task.

    A task's failure is recorded and the other tasks still run.
    """
    import mteb

    from evalkit.models.reranker import RerankerAdapter, load_reranker
    from evalkit.runner import _evaluate, make_embedder, run_tasks
    from evalkit.tasks import build_task

    top_k = int(top_k) if top_k is not None else None
    if first_spec is not None:
        first_spec = as_first_stage(first_spec)
    check_plan(first_spec, rr_spec, task_specs, top_k)
    if opts.batch_size is None or int(opts.batch_size) < 1:
        raise EvalkitError(f"batch size must be a positive integer, got {opts.batch_size!r}")
    # find the reranker before the (long) first stage: a missing model fails now, not in ten minutes
    reranker = reranker or load_reranker(rr_spec, dtype=opts.dtype, batch_size=opts.batch_size, devices=opts.device)
    outcomes = {ts.name: RerankOutcome(ts.name, ts.type) for ts in task_specs}
    runs: dict[str, dict] = {}

    with ExitStack() as stack:
        # ---- first stage: the ordinary runner, then the run files
        if first_spec is not None:
            embedder = embedder or make_embedder(first_spec, opts)
            if embedder.cache is None:  # --no-cache: a throwaway cache, so the run file costs no second encoding
                from evalkit.cache import EmbeddingCache

                tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="evalkit-rerank-"))
                embedder.cache = EmbeddingCache(tmp)

                def _drop_cache(e=embedder):
                    e.cache.close()
                    e.cache = None

                stack.callback(_drop_cache)
            folder = result_dir(opts.output, first_spec.result_name, embedder.revision, opts.variant)
            for fo in run_tasks(first_spec, task_specs, opts, embedder=embedder, on_outcome=on_first_stage):
                ro = outcomes[fo.task]
                ro.first_stage = fo
                ro.first_stage_encoded = fo.encoded
                if ro.type not in TWO_STAGE_TYPES or fo.status == "failed":
                    continue
                ts = next(t for t in task_specs if t.name == fo.task)
                try:
                    found = find_run_file(folder, ts.name, top_k) if fo.status == "skipped" else None
                    if found is not None:
                        ro.run_file, doc = found
                        ro.run_reused = True
                    else:
                        before = embedder.counts["encoded"]
                        t0 = time.time()
                        run = build_run(first_spec, embedder, ts, opts, top_k)
                        ro.first_stage_encoded += embedder.counts["encoded"] - before
                        doc = {
                            "kind": RUN_KIND,
                            "task": ts.name,
                            "top_k": top_k,
                            "first_stage": {
                                "model": first_spec.name, "hub_id": first_spec.hub_id, "result_name": first_spec.result_name,
                                "revision": embedder.revision, "variant": opts.variant, "result_file": fo.path.name if fo.path else None,
                                "main_scores": fo.scores,
                            },
                            "versions": versions(),
                            "seconds": round(time.time() - t0, 2),
                            "run": run,
                        }
                        ro.run_file = run_file_path(folder, ts.name, top_k)
                        with folder_lock(folder):
                            atomic_write_json(ro.run_file, doc)
                    runs[ts.name] = doc
                except EvalkitError as e:
                    ro.reranked = Outcome(ts.name, ts.type, "failed", message=f"first stage run file: {e}")

        # ---- the reranker: over the run files (retrieval) or the task's own candidates (reranking)
        variant = rerank_variant(first_spec, top_k, opts.variant) if first_spec is not None else None
        groups: dict[Path, list] = {}
        for ts in task_specs:
            ro = outcomes[ts.name]
            if ro.reranked is not None:  # failed above
                continue
            if ts.type in TWO_STAGE_TYPES and ts.name not in runs:
                ro.reranked = Outcome(ts.name, ts.type, "failed", message=f"first stage failed: {ro.message or 'no result'}")
                continue
            v = variant if ts.type in TWO_STAGE_TYPES else None
            groups.setdefault(result_dir(opts.output, rr_spec.result_name, reranker.revision, v), []).append((ts, v))

        for rfolder, items in groups.items():
            with folder_lock(rfolder):
                for ts, v in items:
                    ro = outcomes[ts.name]
                    t0 = time.time()
                    path = rfolder / f"{ts.name}.json"
                    done = None if opts.overwrite else read_result(path)
                    if done is not None:
                        ro.reranked = Outcome(ts.name, ts.type, "skipped", main_scores(done), "already done", path)
                    else:
                        before = reranker.counts["pairs"]
                        try:
                            set_seeds(opts.seed)
                            task = build_task(ts)
                            first_meta = None
                            if ts.type in TWO_STAGE_TYPES:
                                doc = runs[ts.name]
                                task = _load_task_data(task, ts)
                                for subset, split, data in _splits(task):
                                    split_run = doc["run"].get(subset, {}).get(split)
                                    if split_run is None:
                                        raise EvalkitError(f"run file {ro.run_file} has no {subset}/{split}: delete it and run again")
                                    data["top_ranked"] = top_ranked_of(split_run)
                                task._top_k = top_k
                                fs = doc["first_stage"]
                                # mteb's own record of a reranked first stage (as its convert_to_reranking does)
                                task._previous_results_model_meta = {"model_name": fs.get("hub_id") or fs["model"], "revision": fs["revision"]}
                                out_root = Path(opts.output)
                                first_meta = {
                                    **fs,
                                    "top_k": top_k,
                                    "run_file": str(_rel(ro.run_file, out_root)),
                                    "cut_from": doc.get("cut_from"),
                                    "result_path": str(_rel(ro.first_stage.path, out_root)) if ro.first_stage and ro.first_stage.path else None,
                                    "main_scores": ro.first_stage.scores if ro.first_stage else fs.get("main_scores"),
                                }
                            adapter = RerankerAdapter(rr_spec, reranker)
                            with ItemRecorder(task) as items:  # per-query scores, for compare/regress
                                res = _evaluate(mteb, adapter, task, ts, replace(opts, variant=v), prediction_folder=items.folder)
                                items.write(path, res)
                            rdoc = _reranker_doc(res, rr_spec, reranker, replace(opts, variant=v), ts, first_meta, reranker.counts["pairs"] - before)
                            atomic_write_json(path, rdoc)
                            ro.reranked = Outcome(ts.name, ts.type, "done", main_scores(rdoc), "", path)
                        except EvalkitError as e:
                            ro.reranked = Outcome(ts.name, ts.type, "failed", message=str(e))
                        ro.pairs = reranker.counts["pairs"] - before
                    ro.reranked.seconds = time.time() - t0
                    if ro.reranked.status == "done":
                        log.info("%s: %d pairs reranked, %.1fs", ts.name, ro.pairs, ro.reranked.seconds)
        result = [outcomes[ts.name] for ts in task_specs]
        for ro in result:
            on_outcome and on_outcome(ro)
    return result


def _rel(path: Path | None, root: Path):
    if path is None:
        return None
    try:
        return Path(path).resolve().relative_to(Path(root).resolve())
    except ValueError:
        return Path(path)


# ----------------------------------------------------------------------------- the command line
def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def print_rerank_table(outcomes: list[RerankOutcome], first_spec, rr_spec, top_k: int, out=None) -> None:
    """Per task (and split/subset): first-stage score, reranked score and the gain, x100."""
    out = out or sys.stdout
    if first_spec is not None:
        print(f"first stage: {first_spec.name} (top {top_k})  ->  reranker: {rr_spec.name}", file=out)
    head = ("task", "type", "first stage", "reranked", "gain")
    rows = []
    for o in outcomes:
        fs = o.first_stage.scores if o.first_stage is not None and o.first_stage.status != "failed" else {}
        rr = o.reranked.scores if o.reranked is not None and o.reranked.status != "failed" else {}
        keys = list(dict.fromkeys([*rr, *fs]))
        if not keys:
            rows.append((o.task, o.type, "failed" if o.first_stage is not None and o.first_stage.status == "failed" else "-", "failed", "-"))
            continue
        for key in keys:
            label = o.task if len(keys) == 1 else f"{o.task} ({key})"
            a = 100 * fs[key] if fs.get(key) is not None else None
            b = 100 * rr[key] if rr.get(key) is not None else None
            gain = f"{b - a:+.2f}" if a is not None and b is not None else "-"
            rows.append((label, o.type, _fmt(a), _fmt(b) if o.reranked is None or o.reranked.status != "failed" else "failed", gain))
    widths = [max(len(str(r[i])) for r in rows + [head]) for i in range(5)]
    line = lambda r: "  ".join(str(c).ljust(w) if i < 2 else str(c).rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
    print(line(head), file=out)
    for r in rows:
        print(line(r), file=out)


def cli_run(args, spec, task_specs, opts: RunOptions) -> int:
    """`evalkit run` with --reranker / --first-stage, or with a reranker as --model."""
    from evalkit.models.catalog import get_spec

    top_k = getattr(args, "top_k", 100)
    rr_name, fs_name = getattr(args, "reranker", None), getattr(args, "first_stage", None)
    if rr_name and fs_name:
        raise EvalkitError("give --reranker (with an embedder as --model) or --first-stage (with a reranker as --model), not both")
    if rr_name:  # --model EMBEDDER --reranker RERANKER
        if is_reranker(spec):
            raise EvalkitError(f"--model {spec.name} is a reranker: with --reranker, --model names the first-stage embedder")
        first, rr = spec, as_reranker(get_spec(rr_name))
    elif fs_name:  # --model RERANKER --first-stage EMBEDDER
        rr, first = as_reranker(spec), as_first_stage(get_spec(fs_name))
    else:  # --model RERANKER alone: reranking tasks only
        rr, first = as_reranker(spec), None
    check_plan(first, rr, task_specs, top_k)

    n = len(task_specs)
    fcount, rcount = iter(range(1, n + 1)), iter(range(1, n + 1))

    def first_progress(o):
        i = next(fcount)
        if o.status == "failed":
            print(f"evalkit: first stage [{i}/{n}] {o.task}: {o.message}", file=sys.stderr, flush=True)
        else:
            s = ", ".join(f"{k} {100 * v:.2f}" for k, v in o.scores.items())
            extra = "already done" if o.status == "skipped" else f"{o.encoded} texts encoded, {o.cached} from cache, {o.seconds:.1f}s"
            print(f"first stage [{i}/{n}] {o.task}: {s} ({extra})", file=sys.stderr, flush=True)

    def progress(o: RerankOutcome):
        i = next(rcount)
        r = o.reranked
        if o.status == "failed":
            print(f"evalkit: rerank [{i}/{n}] {o.task}: {o.message}", file=sys.stderr, flush=True)
            return
        s = ", ".join(f"{k} {100 * v:.2f}" for k, v in r.scores.items())
        if r.status == "skipped":
            extra = "already done"
        else:
            extra = f"{o.pairs} pairs, {r.seconds:.1f}s"
            if o.run_file is not None:
                extra += f", candidates from {o.run_file.name}" + (" (reused)" if o.run_reused else "")
        print(f"rerank [{i}/{n}] {o.task}: {s} ({extra})", file=sys.stderr, flush=True)

    outcomes = run_rerank(first, rr, task_specs, opts, top_k, on_first_stage=first_progress, on_outcome=progress)
    print_rerank_table(outcomes, first, rr, top_k)
    failed = [o for o in outcomes if o.status == "failed"]
    if failed:
        print(f"evalkit: {len(failed)} of {n} tasks failed: {', '.join(o.task for o in failed)}", file=sys.stderr)
        return 2
    return 0
