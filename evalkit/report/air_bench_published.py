"""Published rows from AIR-Bench's own result files (its leaderboard's `eval_results` repository).

The leaderboard (AIR-Bench/leaderboard, src/read_evals.py) reads, per retriever and reranker, a JSON
list of `{config, results}` records, one per task type and metric:
  config   {retrieval_model, retrieval_model_link, reranking_model, reranking_model_link, task
            (qa | long-doc), metric (ndcg_at_10, recall_at_10, ...), timestamp, is_anonymous, revision}
  results  [{domain, lang, dataset, value}], value in 0..1 (the leaderboard shows it x100)
laid out as eval_results/<version>/<retriever>/<reranker>/results*.json (files without a version
folder are 24.04's, the leaderboard's first version). Each (version, task type, domain, lang, dataset)
is evalkit's task of tasks/air-bench.yaml; its test split holds every metric given, and its main
score is the leaderboard's metric of the task type. One row per retriever + reranker, as plain data
(evalkit/report/sources.py makes the report's rows of them).
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from evalkit.errors import EvalkitError

VERSION = re.compile(r"^AIR-Bench_\d\d\.\d\d$")
DEFAULT_VERSION = "AIR-Bench_24.04"


def is_record_list(doc) -> bool:
    return isinstance(doc, list) and bool(doc) and all(isinstance(r, dict) and "config" in r and "results" in r for r in doc)


def result_files(path: Path) -> list[Path]:
    """The AIR-Bench result files at `path` (a file or a folder), or [] if it holds none."""
    path = Path(path)
    cands = [path] if path.is_file() else sorted(path.rglob("*.json")) if path.is_dir() else []
    out = []
    for f in cands:
        try:
            with f.open("rb") as fh:  # a list, where mteb's result files are objects: read only those
                if not fh.read(256).lstrip().startswith(b"["):
                    continue
            if is_record_list(json.loads(f.read_text(encoding="utf-8"))):
                out.append(f)
        except (OSError, ValueError):
            continue
    return out


def _tasks() -> dict[tuple, str]:
    from evalkit.tasks import Registry

    return {(a["version"], a["task_type"], a["domain"], a["lang"], str(a["dataset"])): s.name
            for s in Registry().all_specs() if s.source == "air-bench" and (a := s.air_bench)}


def load(path: Path) -> list[dict]:
    """One published row per retriever + reranker in AIR-Bench's files: {label, model, hub_name,
    revision, scores: {task: {"test/default": {metric: value}}}, paths: {task: file}} (the report's
    Entry fields, evalkit/report/sources.py)."""
    from evalkit.tasks.air_bench import MAIN_METRIC

    files = result_files(path)
    if not files:
        raise EvalkitError(f"{path} holds no AIR-Bench result files (a JSON list of {{config, results}} records)")
    tasks = _tasks()
    rows: dict[tuple[str, str], dict] = {}
    for f in files:
        version = next((p for p in reversed(f.parent.parts) if VERSION.match(p)), DEFAULT_VERSION)
        for i, rec in enumerate(json.loads(f.read_text(encoding="utf-8"))):
            cfg = rec["config"] or {}
            try:
                retriever, reranker, task_type, metric = cfg["retrieval_model"], cfg["reranking_model"], cfg["task"], cfg["metric"]
            except (KeyError, TypeError) as e:
                raise EvalkitError(f"{f}: record {i}: its config has no {e}") from None
            row = rows.get((retriever, reranker))
            if row is None:
                name = retriever if reranker in (None, "NoReranker") else f"{retriever} + {reranker}"
                row = rows[(retriever, reranker)] = {"label": f"{name} (published: AIR-Bench)", "model": str(retriever), "hub_name": name,
                                                     "revision": cfg.get("revision"), "scores": {}, "paths": {}}
            for r in rec["results"] or []:
                try:
                    task = tasks.get((version, task_type, r["domain"], r["lang"], str(r["dataset"])))
                    value = float(r["value"])
                except (KeyError, TypeError, ValueError):
                    raise EvalkitError(f"{f}: record {i}: a result needs domain, lang, dataset and a numeric value: {r}") from None
                if task is None:
                    continue  # a dataset evalkit's table does not have (another version's)
                scores = row["scores"].setdefault(task, {}).setdefault("test/default", {})
                scores[metric] = value
                if metric == MAIN_METRIC.get(task_type):
                    scores["main_score"] = value
                row["paths"][task] = f
    return list(rows.values())
