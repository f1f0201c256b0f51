"""AIR-Bench's submission files: every AIR-Bench unit's search results, in the package's layout.

air-benchmark 0.1.0's Evaluator writes, for each split, the search results of a retriever (its top
1000) and of a retriever + reranker (the reranked top 100) as
  <search_results>/<retriever>/<reranker or NoReranker>/<task_type>/<domain>/<lang>_<dataset>_<split>.json
  {model_name, reranker_name, benchmark_version, task_type, domain, language, dataset_name, split,
   search_results: {qid: {docid: score}}}
and its scripts/zip_results.py zips <retriever>/<reranker> (every file but the *dev.json ones, paths
relative to that folder) as <retriever>_<reranker>.zip, which the leaderboard takes.

evalkit writes the same files under <output>/air-bench/search_results/ beside each AIR-Bench result
(the retriever named as its result folder: the model's result name, plus `-<variant>` for a few-shot
or other experiment) and `evalkit air-bench pack` zips them as zip_results.py does.
"""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

from evalkit.errors import EvalkitError

FOLDER = Path("air-bench") / "search_results"
NO_RERANKER = "NoReranker"


def retriever_name(unit) -> str:
    return unit.model.spec.result_name + (f"-{unit.variant}" if unit.variant else "")


def search_unjudged(search_model, task, batch_size: int, top_k: int | None = None, candidates: dict | None = None) -> list[str]:
    """Search the splits of an AIR-Bench task that have no judgements here (its `unjudged`) with
    mteb's own RetrievalEvaluator search, as a scored split is searched, into `task.search_results`:
    an embedder's top 1000 (a SearchProtocol model, as mteb would wrap it), or a cross-encoder over
    `candidates` ({split: {query: [document ids]}}, the first stage's top-k). The splits searched."""
    from mteb._evaluators.retrieval_evaluator import RetrievalEvaluator
    from mteb.models.search_wrappers import SearchCrossEncoderWrapper, SearchEncoderWrapper
    from mteb.timing import TimingStack

    done = []
    for split, data in (getattr(task, "unjudged", None) or {}).items():
        top_ranked = None
        if candidates is not None:
            top_ranked = candidates.get(split)
            if top_ranked is None:
                continue  # a first stage run before this split was searched
        if hasattr(search_model, "search"):
            model = search_model
        elif hasattr(search_model, "predict"):
            model = SearchCrossEncoderWrapper(search_model)
        else:
            model = SearchEncoderWrapper(search_model)
        ev = RetrievalEvaluator(data["corpus"], data["queries"], task_metadata=task.metadata, hf_split=split, hf_subset="default",
                                top_k=int(top_k or task._top_k), top_ranked=top_ranked, timer=TimingStack())
        task.search_results[split] = ev(model, encode_kwargs={"batch_size": int(batch_size), "show_progress_bar": False})
        done.append(split)
    return done


def search_only_document(unit, task, meta: dict) -> dict:
    """The result of an AIR-Bench unit none of whose splits has judgements here: mteb's result
    layout with no scores, the searched splits named (they are in the submission files)."""
    import time

    import mteb

    from evalkit.results import versions

    return {
        "dataset_revision": task.metadata.dataset["revision"], "task_name": unit.task.name, "mteb_version": mteb.__version__,
        "scores": {}, "evaluation_time": meta.get("seconds", {}).get("total"), "kg_co2_emissions": None, "date": time.time(),
        "evalkit": {**meta, "searched_only": sorted(task.search_results), "versions": versions()},
    }


def submission_files(task, out_root: Path, retriever: str, reranker: str = NO_RERANKER) -> dict[Path, dict]:
    """{path: document} of each split the task searched (an AIR-Bench task: evalkit/tasks/air_bench.py)."""
    src = getattr(task, "air_bench", None)
    if src is None:
        return {}
    files = {}
    for split, results in task.search_results.items():
        path = Path(out_root) / FOLDER / retriever / reranker / src.task_type / src.domain / f"{src.lang}_{src.dataset}_{split}.json"
        files[path] = {
            "model_name": retriever, "reranker_name": reranker, "benchmark_version": src.version,
            "task_type": src.task_type, "domain": src.domain, "language": src.lang, "dataset_name": src.dataset,
            "split": split, "search_results": results,
        }
    return files


def pack(results: Path, retriever: str | None, reranker: str = NO_RERANKER, out: Path | None = None) -> Path:
    """Zip <results>/air-bench/search_results/<retriever>/<reranker> as zip_results.py does; the zip's path."""
    from evalkit.tasks.air_bench import TASK_TYPES
    from evalkit.tasks.registry import Registry

    base = Path(results) / FOLDER
    have = sorted(p.name for p in base.iterdir() if p.is_dir()) if base.is_dir() else []
    if retriever is None:
        if len(have) != 1:
            raise EvalkitError(f"{base}: {'no search results' if not have else 'search results of ' + ', '.join(have)}: name one with --retriever")
        retriever = have[0]
    folder = base / retriever / reranker
    if not folder.is_dir():
        runs = sorted(p.name for p in (base / retriever).iterdir()) if (base / retriever).is_dir() else []
        raise EvalkitError(f"no search results at {folder}" + (f" (there: {', '.join(runs)}; --reranker names one)" if runs else
                                                                 f" (retrievers there: {', '.join(have) or 'none'})"))
    domains = {(s.air_bench or {}).get("domain") for s in Registry().all_specs() if s.source == "air-bench"}
    for tt in folder.iterdir():
        if tt.name not in TASK_TYPES:
            raise EvalkitError(f"{tt}: not an AIR-Bench task type ({', '.join(TASK_TYPES)})")
        for dom in tt.iterdir():
            if dom.name not in domains:
                raise EvalkitError(f"{dom}: not an AIR-Bench domain ({', '.join(sorted(d for d in domains if d))})")
    files = sorted(p for p in folder.rglob("*.json") if not p.name.endswith("dev.json"))
    if not files:
        raise EvalkitError(f"{folder}: no test search results to submit (dev results are scored here, not submitted)")
    for p in files:
        try:
            doc = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise EvalkitError(f"{p}: not a search results file ({e})") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("search_results"), dict):
            raise EvalkitError(f"{p}: not a search results file (no search_results)")
    out = Path(out) if out else Path(results) / "air-bench" / "zipped_results"
    out.mkdir(parents=True, exist_ok=True)
    target = out / f"{retriever}_{reranker}.zip"
    tmp = target.with_name(target.name + ".part")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
        for p in files:
            z.write(p, p.relative_to(folder).as_posix())
    tmp.replace(target)
    return target
