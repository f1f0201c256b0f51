"""Run a model over tasks with mteb's evaluators; write one result file per task; skip what is done."""
from __future__ import annotations

import fcntl
import json
import logging
import os
import random
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from evalkit.errors import EvalkitError
from evalkit.results import atomic_write_json, read_result, result_dir

log = logging.getLogger("evalkit")


@dataclass
class RunOptions:
    output: Path = Path("results")
    overwrite: bool = False
    batch_size: int = 64
    dtype: str | None = None
    device: str | None = None
    use_cache: bool = True
    cache_dir: Path | None = None
    variant: str | None = None
    seed: int = 42
    # (task_spec, mteb_task) -> per-text prefix function for the adapter, or None (see evalkit.fewshot)
    prefix_factory: Callable | None = None
    extra_meta: dict = field(default_factory=dict)
    # retrieval search: auto (bounded memmap search above evalkit.search.BOUNDED_ABOVE documents) | memmap | mteb
    search: str = "auto"


@dataclass
class Outcome:
    task: str
    type: str
    status: str  # done | skipped | failed
    scores: dict = field(default_factory=dict)  # "split/subset" -> main score (0..1)
    message: str = ""
    path: Path | None = None
    encoded: int = 0
    cached: int = 0
    seconds: float = 0.0


def versions() -> dict:
    import importlib.metadata as md

    out = {}
    for pkg in ("evalkit", "mteb", "torch", "transformers", "sentence-transformers", "datasets", "scikit-learn", "numpy"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def set_seeds(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@contextmanager
def folder_lock(folder: Path):
    """One writer per result folder: a second run on the same folder stops with a clear message."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fh = open(folder / ".lock", "a+")
    except OSError as e:
        raise EvalkitError(f"cannot write to {folder} ({e.strerror}): choose a writable --output folder") from e
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.seek(0)
        holder = fh.read().strip() or "another process"
        fh.close()
        raise EvalkitError(f"{folder} is being written by another evalkit run ({holder}): wait for it or use another --output") from None
    fh.seek(0)
    fh.truncate()
    fh.write(f"pid {os.getpid()}")
    fh.flush()
    try:
        yield
    finally:
        fcntl.flock(fh, fcntl.LOCK_UN)
        fh.close()


def make_embedder(spec, opts: RunOptions):
    from evalkit.cache import EmbeddingCache
    from evalkit.models.embedder import Embedder

    cache = EmbeddingCache(opts.cache_dir) if opts.use_cache else None
    return Embedder(
        spec.locate(), pooling=spec.pooling, normalize=spec.normalize, max_length=spec.max_length,
        dtype=opts.dtype or spec.dtype, batch_size=opts.batch_size, devices=opts.device,
        padding_side=spec.padding_side, trust_remote_code=spec.trust_remote_code, cache=cache,
        model_id=spec.hub_id or spec.name, revision=spec.revision,
    )


@dataclass
class Evaluation:
    """One task's evaluation as data: the result document and its per-item scores, ready to be
    written by the one writer of the result folder (this process, or a Ray driver)."""
    doc: dict
    items: dict
    encoded: int = 0
    cached: int = 0
    seconds: float = 0.0


def evaluate_task(spec, ts, opts: RunOptions, embedder, extra_meta: dict | None = None) -> Evaluation:
    """Evaluate one task with mteb; nothing is written (see write_evaluation). EvalkitError on bad input."""
    import mteb

    from evalkit.models.adapters import EmbeddingAdapter
    from evalkit.items import ItemRecorder
    from evalkit.tasks import build_task

    t0 = time.time()
    before = dict(embedder.counts)
    stats_before = dict(embedder.config.stats)
    set_seeds(opts.seed)
    task = build_task(ts)
    prefix_fn = opts.prefix_factory(ts, task) if opts.prefix_factory else None
    adapter = EmbeddingAdapter(spec, embedder, task_instructions={ts.name: ts.instruction} if ts.instruction else None, prefix_fn=prefix_fn)
    with ItemRecorder(task) as rec:  # <Task>.items.json: per-item scores (evalkit/items.py)
        res = _evaluate(mteb, adapter, task, ts, opts, prediction_folder=rec.folder)
        items = rec.items(res)  # as data: written by write_evaluation, here or on a Ray driver
    work = {
        "encoded_texts": embedder.counts["encoded"] - before["encoded"],
        "cached_texts": embedder.counts["cached"] - before["cached"],
        "encoded_tokens": embedder.config.stats["tokens"] - stats_before["tokens"],
        "encode_seconds": round(embedder.config.stats["seconds"] - stats_before["seconds"], 3),
    }
    doc = _result_doc(res, spec, embedder, opts, ts, work)
    if extra_meta:
        doc["evalkit"].update(extra_meta)
    return Evaluation(doc, items, work["encoded_texts"], work["cached_texts"], time.time() - t0)


def write_evaluation(path: Path, ev: Evaluation) -> None:
    """Per-item scores first, then the result, each atomically: a result file never lacks its items."""
    from evalkit.items import items_path

    atomic_write_json(items_path(path), ev.items)
    atomic_write_json(path, ev.doc)


def local_executor(spec, opts: RunOptions, embedder):
    """Evaluate pending tasks one after the other in this process (the default executor)."""

    def run(pending):
        for ts in pending:
            try:
                yield ts, evaluate_task(spec, ts, opts, embedder)
            except EvalkitError as e:
                yield ts, e

    return run


def run_tasks(spec, task_specs, opts: RunOptions, embedder=None, on_outcome: Callable | None = None, executor: Callable | None = None) -> list[Outcome]:
    """Evaluate `spec` on each task; a task's failure is recorded and the others still run.

    Where the work runs is a choice: `executor(pending_task_specs)` (an iterable) yields `(task_spec, Evaluation |
    EvalkitError)` in any order (default: `local_executor`, in this process; evalkit.distributed's
    RayExecutor runs them on a Ray cluster). This process holds the folder lock, skips finished
    tasks and writes every result itself."""
    from evalkit.results import main_scores

    if opts.batch_size is None or int(opts.batch_size) < 1:
        raise EvalkitError(f"batch size must be a positive integer, got {opts.batch_size!r}")
    embedder = embedder or make_embedder(spec, opts)
    executor = executor or local_executor(spec, opts, embedder)
    folder = result_dir(opts.output, spec.result_name, embedder.revision, opts.variant)
    outcomes: list[Outcome] = []
    with folder_lock(folder):
        for stale in folder.glob(".*.tmp"):  # left by a run killed mid-write; never read as results
            stale.unlink(missing_ok=True)

        def pending():  # lazily: a local run reports a skipped task in its place in the list
            for ts in task_specs:
                path = folder / f"{ts.name}.json"
                done = None if opts.overwrite else read_result(path)
                if done is None:
                    yield ts
                    continue
                out = Outcome(ts.name, ts.type, "skipped", main_scores(done), "already done", path)
                outcomes.append(out)
                on_outcome and on_outcome(out)

        for ts, ev in executor(pending()):
            path = folder / f"{ts.name}.json"
            if isinstance(ev, EvalkitError):
                out = Outcome(ts.name, ts.type, "failed", message=str(ev))
            else:
                write_evaluation(path, ev)
                out = Outcome(ts.name, ts.type, "done", main_scores(ev.doc), "", path, ev.encoded, ev.cached, ev.seconds)
                log.info("%s: %d texts encoded, %d from cache, %.1fs", ts.name, out.encoded, out.cached, out.seconds)
            outcomes.append(out)
            on_outcome and on_outcome(out)
    order = {ts.name: i for i, ts in reversed(list(enumerate(task_specs)))}
    return sorted(outcomes, key=lambda o: order.get(o.task, len(order)))  # in the tasks' order, wherever they ran


def _evaluate(mteb, adapter, task, ts, opts, prediction_folder=None):
    try:
        from evalkit.search import search_model_for

        result = mteb.evaluate(
            search_model_for(adapter, task, opts), task, cache=None, overwrite_strategy="always", raise_error=True, show_progress_bar=False,
            prediction_folder=prediction_folder,
            co2_tracker=False, encode_kwargs={"batch_size": int(opts.batch_size), "show_progress_bar": False},
        )
    except EvalkitError:
        raise
    except Exception as e:
        if ts.source == "hub":
            raise EvalkitError(
                f"task {ts.name}: its data could not be loaded from the Hugging Face hub ({type(e).__name__}): "
                "mirror it into the data folder (EVALKIT_DATA) or run where the hub is reachable"
            ) from e
        raise
    if not result.task_results:
        raise EvalkitError(f"task {ts.name}: mteb returned no result")
    return result.task_results[0]


def _result_doc(res, spec, embedder, opts: RunOptions, ts, work: dict) -> dict:
    doc = res.model_dump(mode="json")
    doc["date"] = res.date.timestamp() if res.date else None
    res._round_scores(doc["scores"], 6)
    doc["evalkit"] = {
        "model": spec.name,
        "hub_id": spec.hub_id,
        "model_revision": embedder.revision,
        "weights": embedder.namespace_fields["weights"],
        "pooling": embedder.pooling,
        "max_length": embedder.max_length,
        "dtype": embedder.dtype,
        "batch_size": int(opts.batch_size),
        "seed": opts.seed,
        "variant": opts.variant,
        "data_source": ts.source,
        "instruction": ts.instruction if spec.task_instructions else None,
        "versions": versions(),
        "work": work,
        **opts.extra_meta,
    }
    return doc


def published_scores() -> dict:
    from evalkit.tasks import data_root

    root = data_root()
    if root is None or not (root / "published_scores.json").is_file():
        return {}
    try:
        return json.loads((root / "published_scores.json").read_text())
    except ValueError:
        return {}


def published_for(pub: dict, task: str, result_name: str) -> dict[str, float]:
    """{'split/subset': score x100} of the published record, if any."""
    return {k: v["main_score"] for k, v in pub.get(task, {}).get(result_name, {}).items()}
