"""One unit of a plan, evaluated: build the mteb task, wrap the model in an adapter that satisfies
mteb 2.x's protocols (instruction, few-shot prefix, the embedding cache before the encoder core),
mteb.evaluate. Nothing is written here: the result comes back as data (an Evaluation) for the one
writer of the result folders (evalkit/run.py), in this process or on a Ray driver.

`Models` is a process's model pool: each model is set up once and kept across units (its network
loads on the first text that the cache does not hold).
"""
from __future__ import annotations

import logging
import random
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from evalkit.errors import EvalkitError
from evalkit.plan import Model, Settings, Unit

log = logging.getLogger("evalkit")


@dataclass
class Job:
    """A unit and what the writer knows that it needs: a reranked unit's candidates when they are
    already on disk (else the unit computes them and returns them as a file to write), and its first
    stage's main scores."""

    unit: Unit
    run_doc: dict | None = None
    run_path: Path | None = None  # the file run_doc was read from (a larger k's file, cut down, may serve)
    first_scores: dict | None = None


@dataclass
class Evaluation:
    doc: dict
    items: dict
    files: dict = field(default_factory=dict)  # other files to write first: {path: document} (run files)
    encoded: int = 0
    cached: int = 0
    pairs: int = 0
    seconds: float = 0.0


def set_seeds(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# ----------------------------------------------------------------------------- models
class Models:
    """This process's models, each set up once: embedders, in-context embedders, rerankers and
    few-shot selector embedders. `progress` (evalkit/progress.py) is told about loading and encoding."""

    def __init__(self, settings: Settings, progress=None, throwaway_cache: bool = False):
        self.settings = settings
        self.progress = progress
        self._models: dict = {}
        self._cache = None
        self._tmp = None
        if settings.use_cache or throwaway_cache:
            from evalkit.cache import EmbeddingCache

            if not settings.use_cache:  # --no-cache with a reranker: the run file costs no second encoding
                self._tmp = tempfile.TemporaryDirectory(prefix="evalkit-cache-")
            self._cache = EmbeddingCache(self._tmp.name if self._tmp else settings.cache_dir)

    def embedder(self, model: Model):
        key = ("embed", model.spec)
        if key not in self._models:
            from evalkit.models.embedder import Embedder
            from evalkit.models.icl import ICLEmbedder

            spec, s = model.spec, self.settings
            common = dict(normalize=spec.normalize, dtype=s.dtype or spec.dtype, batch_size=s.batch_size, devices=s.device,
                          padding_side=spec.padding_side, trust_remote_code=spec.trust_remote_code, cache=self._cache,
                          model_id=spec.hub_id or spec.name, revision=model.revision, lowercase=spec.lowercase, dense=spec.dense,
                          attention=s.attention)
            if model.kind == "icl-embedder":
                emb = ICLEmbedder(model.path, query_max_length=spec.max_length, passage_max_length=spec.max_length, **common)
            else:
                emb = Embedder(model.path, pooling=spec.pooling, max_length=spec.max_length, **common)
            emb.progress = self.progress
            self._models[key] = emb
        return self._models[key]

    def reranker(self, model: Model):
        key = ("rerank", model.spec)
        if key not in self._models:
            from evalkit.models.reranker import load_reranker

            s = self.settings
            rr = load_reranker(model.spec, dtype=s.dtype, batch_size=s.batch_size, devices=s.device, path=model.path, revision=model.revision,
                               attention=s.attention)
            rr.progress = self.progress
            self._models[key] = rr
        return self._models[key]

    def m3(self, model: Model):
        """A multi-function embedder's sparse and ColBERT functions, on its pool embedder's network."""
        key = ("m3", model.spec)
        if key not in self._models:
            from evalkit.models.m3 import BGEM3FlagModel

            self._models[key] = BGEM3FlagModel.from_spec(model.spec, self.embedder(model))
        return self._models[key]

    def selector(self, name: str, evaluated):
        """The embedder that ranks few-shot examples: the evaluated model's own when it is the same."""
        from evalkit.models.catalog import get_spec
        from evalkit.plan import resolve_model

        sel = self.embedder(resolve_model(get_spec(name)))
        return evaluated if sel.namespace == evaluated.namespace else sel

    def close(self) -> None:
        for m in self._models.values():
            try:
                m.close()
            except Exception:
                pass
        self._models.clear()
        if self._cache is not None:
            self._cache.close()
            self._cache = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


# ----------------------------------------------------------------------------- one unit
def evaluate_unit(job: Job, settings: Settings, models: Models) -> Evaluation:
    """Evaluate one unit with mteb; EvalkitError on bad input. Nothing is written."""
    role = job.unit.role
    return _rerank(job, settings, models) if role == "rerank" else _m3(job, settings, models) if role == "m3" else _embed(job.unit, settings, models)


def _phase(models: Models, what: str) -> None:
    if models.progress is not None:
        models.progress.phase(what)


def _read(unit: Unit, settings: Settings, models: Models):
    """Seeds set, the unit's mteb task with its data read: (task, the unit's start, seconds reading)."""
    from evalkit.tasks import build_task

    t0 = time.perf_counter()
    set_seeds(settings.seed)
    _phase(models, "reading data")
    task = build_task(unit.task)
    return task, t0, time.perf_counter() - t0


def _embedding_adapter(unit: Unit, task, models: Models):
    """The adapter of an embedder unit: its instruction and, for a few-shot setting or an in-context
    model, its prefixer (rebuilt from the unit's data wherever the unit runs)."""
    from evalkit.fewshot import FewshotFactory, Setting
    from evalkit.models.adapters import EmbeddingAdapter

    ts, spec = unit.task, unit.model.spec
    emb = models.embedder(unit.model)
    prefixer = None
    st = unit.fewshot or Setting(0)
    if st.k > 0 or unit.model.kind == "icl-embedder":
        sel = models.selector(st.model, emb) if st.selector == "similar" and st.k > 0 else None
        prefixer = FewshotFactory(st, spec, emb, sel)(ts, task)
    adapter = EmbeddingAdapter(spec, emb, task_instructions={ts.name: ts.instruction} if ts.instruction else None, prefix_fn=prefixer)
    return adapter, prefixer


def _work(emb, before: tuple[dict, dict]) -> tuple[dict, float]:
    """What the embedder `emb` did since `before` (its counts and stats, copied): the result's work
    record, and the encoder's seconds."""
    counts, stats = before
    work = {
        "encoded_texts": emb.counts["encoded"] - counts["encoded"],
        "cached_texts": emb.counts["cached"] - counts["cached"],
        "encoded_tokens": emb.config.stats["tokens"] - stats["tokens"],
    }
    return work, emb.config.stats["seconds"] - stats["seconds"]


def _embedder_meta(emb) -> dict:
    return {"pooling": emb.pooling, "max_length": emb.max_length, "dtype": emb.dtype, "weights": emb.namespace_fields["weights"]}


def _embed(unit: Unit, settings: Settings, models: Models) -> Evaluation:
    from evalkit.air_bench_submission import retriever_name, search_only_document, search_unjudged, submission_files
    from evalkit.search import search_model_for
    from evalkit.items import ItemRecorder
    from evalkit.models.recipes import describe
    from evalkit.results import result_document

    task, t0, t_data = _read(unit, settings, models)
    emb = models.embedder(unit.model)
    before = dict(emb.counts), dict(emb.config.stats)
    adapter, prefixer = _embedding_adapter(unit, task, models)
    with ItemRecorder(task) as rec:  # <Task>.items.json: per-item scores (evalkit/items.py)
        res = run_mteb(adapter, task, unit.task, settings, prediction_folder=rec.folder) if task.eval_splits else None
        if getattr(task, "unjudged", None):  # AIR-Bench splits without judgements here: searched for the submission
            search_unjudged(search_model_for(adapter, task, settings), task, settings.batch_size)
        work, encode = _work(emb, before)
        total = time.perf_counter() - t0
        meta = _meta(unit, settings, work, _seconds(total, t_data, encode))
        meta.update(**_embedder_meta(emb), instruction=unit.task.instruction if unit.model.spec.task_instructions else None,
                    recipe=describe(unit.model.spec, unit.task))
        if prefixer is not None:
            meta["fewshot"] = prefixer.info
        doc = result_document(res, meta) if res is not None else search_only_document(unit, task, meta)
        items = rec.items(doc)  # from the document as written (scores rounded as mteb writes them)
    files = submission_files(task, settings.output, retriever_name(unit))  # AIR-Bench's layout, for its tasks
    return Evaluation(doc, items, files, work["encoded_texts"], work["cached_texts"], 0, total)


def _candidates(job: Job, settings: Settings, models: Models, task):
    """(the task with each query's candidates attached, the first stage's run, the run file to write
    when the unit computed it, its first stage's record, the texts the first stage encoded); a unit
    without a first stage: (task, None, {}, None, 0)."""
    from evalkit import rerank
    from evalkit.results import versions
    from evalkit.tasks import build_task

    unit = job.unit
    if unit.first_stage is None:
        return task, None, {}, None, 0
    files: dict = {}
    encoded = 0
    run_doc = job.run_doc
    if run_doc is None:  # the first stage's top-k: its cached vectors, mteb's search
        _phase(models, f"top {unit.top_k} of {unit.first_stage.model.name}")
        fs = unit.first_stage
        emb = models.embedder(fs.model)
        before = emb.counts["encoded"]
        ft = build_task(fs.task)
        adapter, _ = _embedding_adapter(fs, ft, models)
        t1 = time.perf_counter()
        run = rerank.build_run(adapter, ft, fs.task, settings.batch_size, unit.top_k)
        encoded = emb.counts["encoded"] - before
        run_doc = {
            "kind": rerank.RUN_KIND,
            "task": unit.task.name,
            "top_k": unit.top_k,
            "first_stage": {
                "model": fs.model.name, "hub_id": fs.model.spec.hub_id, "result_name": fs.model.spec.result_name,
                "revision": fs.model.revision, "variant": fs.variant, "result_file": fs.path.name,
                "main_scores": job.first_scores,
            },
            "versions": versions(),
            "seconds": round(time.perf_counter() - t1, 2),
            "run": run,
        }
        files[unit.run_file()] = run_doc
    run_path = job.run_path or unit.run_file()
    task = rerank.attach_candidates(task, unit.task, run_doc, unit.top_k, run_path)
    out_root = Path(settings.output)
    first_meta = {
        **run_doc["first_stage"],
        "top_k": unit.top_k,
        "run_file": str(_rel(run_path, out_root)),
        "cut_from": run_doc.get("cut_from"),
        "result_path": str(_rel(unit.first_stage.path, out_root)),
        "main_scores": job.first_scores or run_doc["first_stage"].get("main_scores"),
    }
    return task, run_doc, files, first_meta, encoded


def _rerank(job: Job, settings: Settings, models: Models) -> Evaluation:
    from evalkit import rerank
    from evalkit.air_bench_submission import retriever_name, search_only_document, search_unjudged, submission_files
    from evalkit.items import ItemRecorder
    from evalkit.models.reranker import RerankerAdapter
    from evalkit.results import result_document

    unit = job.unit
    task, t0, t_data = _read(unit, settings, models)
    task, run_doc, files, first_meta, encoded = _candidates(job, settings, models, task)
    rr = models.reranker(unit.model)
    before, scored_before = rr.counts["pairs"], rr.config.stats["seconds"]
    t_rr = time.perf_counter()
    adapter = RerankerAdapter(unit.model.spec, rr)
    with ItemRecorder(task) as rec:  # per-query scores, for compare/regress
        res = run_mteb(adapter, task, unit.task, settings, prediction_folder=rec.folder) if task.eval_splits else None
        if run_doc is not None:  # AIR-Bench splits without judgements: the first stage's candidates, reranked
            candidates = {split: rerank.top_ranked_of(q) for split, q in run_doc["run"].get("default", {}).items()}
            search_unjudged(adapter, task, settings.batch_size, unit.top_k, candidates)
        pairs = rr.counts["pairs"] - before
        total = time.perf_counter() - t0
        seconds = _seconds(total, t_data, rr.config.stats["seconds"] - scored_before)  # "encode": the reranker's network time
        seconds["first_stage_top_k"] = round(t_rr - t0 - t_data, 3)
        meta = _meta(unit, settings, {"reranked_pairs": int(pairs), "first_stage_encoded_texts": encoded}, seconds)
        meta.update(kind=unit.model.kind, weights=rr.weights, max_length=rr.max_length, dtype=rr.dtype, first_stage=first_meta)
        doc = result_document(res, meta) if res is not None else search_only_document(unit, task, meta)
        items = rec.items(doc)
    if unit.first_stage is not None:
        files.update(submission_files(task, settings.output, retriever_name(unit.first_stage), unit.model.spec.result_name))
    return Evaluation(doc, items, files, encoded, 0, pairs, total)


def _m3(job: Job, settings: Settings, models: Models) -> Evaluation:
    """A multi-function embedder's sparse, colbert or hybrid mode (evalkit/models/m3_search.py):
    mteb's retrieval evaluation of an M3Search, over the whole corpus or the dense unit's top-k."""
    from evalkit.air_bench_submission import retriever_name, search_only_document, search_unjudged, submission_files
    from evalkit.models.recipes import describe
    from evalkit.items import ItemRecorder
    from evalkit.models.m3_search import M3Search
    from evalkit.results import result_document

    unit = job.unit
    task, t0, t_data = _read(unit, settings, models)
    task, run_doc, files, first_meta, encoded = _candidates(job, settings, models, task)
    run = run_doc["run"] if run_doc is not None else None
    m3 = models.m3(unit.model)
    emb = m3.embedder
    before = dict(emb.counts), dict(emb.config.stats)
    adapter, prefixer = _embedding_adapter(unit, task, models)
    t_m3 = time.perf_counter()
    with ItemRecorder(task) as rec:
        res = run_mteb(M3Search(adapter, m3, unit.m3, run), task, unit.task, settings, prediction_folder=rec.folder) if task.eval_splits else None
        if getattr(task, "unjudged", None):  # AIR-Bench splits without judgements here: searched for the submission
            search_unjudged(M3Search(adapter, m3, unit.m3, run), task, settings.batch_size)
        work, encode = _work(emb, before)
        work["first_stage_encoded_texts"] = encoded
        total = time.perf_counter() - t0
        seconds = _seconds(total, t_data, encode)
        if unit.first_stage is not None:
            seconds["first_stage_top_k"] = round(t_m3 - t0 - t_data, 3)
        meta = _meta(unit, settings, work, seconds)
        meta.update(**_embedder_meta(emb), recipe=describe(unit.model.spec, unit.task), m3={"mode": unit.m3.name, "weights": list(unit.m3.weights) if unit.m3.weights else None}, first_stage=first_meta)
        if prefixer is not None:
            meta["fewshot"] = prefixer.info
        doc = result_document(res, meta) if res is not None else search_only_document(unit, task, meta)
        items = rec.items(doc)
    files.update(submission_files(task, settings.output, retriever_name(unit)))  # AIR-Bench's layout, for its tasks
    return Evaluation(doc, items, files, work["encoded_texts"] + encoded, work["cached_texts"], 0, total)


def _meta(unit: Unit, settings: Settings, work: dict, seconds: dict) -> dict:
    spec = unit.model.spec
    return {
        "model": spec.name,
        "hub_id": spec.hub_id,
        "kind": unit.model.kind,
        "model_revision": unit.model.revision,
        "batch_size": int(settings.batch_size),
        "seed": settings.seed,
        "variant": unit.variant,
        "data_source": unit.task.source,
        "work": work,
        "seconds": seconds,
    }


def _seconds(total: float, data: float, encode: float) -> dict:
    """The time breakdown of a unit: reading data, encoding, and the rest (mteb's search / scoring)."""
    return {"total": round(total, 3), "data": round(data, 3), "encode": round(encode, 3), "scoring": round(max(0.0, total - data - encode), 3)}


def _rel(path: Path | None, root: Path):
    if path is None:
        return None
    try:
        return Path(path).resolve().relative_to(Path(root).resolve())
    except ValueError:
        return Path(path)


def avoid_sentence_transformers_import() -> None:
    """mteb.evaluate's `_sanitize_model` imports sentence-transformers, and with it transformers' model
    code (about 2 s of a fully cached run, which loads no model), only to ask whether the model is one
    of its classes. No object can be an instance of a class from a package not yet imported, so while
    it is not, a model that carries its own ModelMeta (every evalkit adapter) takes the branch mteb
    would take for it anyway (returned as it is, with its meta's name and revision). Once
    sentence-transformers is imported, and for any other model, mteb's own function decides."""
    import importlib
    import sys

    from mteb.models.model_meta import ModelMeta

    module = importlib.import_module("mteb.evaluate")
    sanitize = module._sanitize_model
    if getattr(sanitize, "evalkit", False):
        return

    def _sanitize_model(model):
        meta = getattr(model, "mteb_model_meta", None)
        if "sentence_transformers" not in sys.modules and isinstance(meta, ModelMeta):
            return model, meta, meta.name, meta.revision
        return sanitize(model)

    _sanitize_model.evalkit = True
    module._sanitize_model = _sanitize_model


def run_mteb(model, task, ts, settings: Settings, prediction_folder=None):
    """mteb.evaluate on one task: the adapter (or the memory-bounded search around it), one TaskResult."""
    import mteb

    from evalkit.search import search_model_for

    avoid_sentence_transformers_import()
    try:
        result = mteb.evaluate(
            search_model_for(model, task, settings), task, cache=None, overwrite_strategy="always", raise_error=True,
            show_progress_bar=False, prediction_folder=prediction_folder, co2_tracker=False,
            encode_kwargs={"batch_size": int(settings.batch_size), "show_progress_bar": False},
        )
    except EvalkitError:
        raise
    except Exception as e:
        if ts.source == "hub":
            from evalkit.tasks.hub import hub_load_error

            raise hub_load_error(ts, e) from e
        raise
    if not result.task_results:
        raise EvalkitError(f"task {ts.name}: mteb returned no result")
    return result.task_results[0]
