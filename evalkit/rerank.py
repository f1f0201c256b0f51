"""Two-stage retrieve-then-rerank: the first stage's candidates (run files) and how a reranked
task gets them.

Retrieval task:  the first-stage embedder's unit runs as any other (its result written as usual);
                 its top-k per query is kept beside that result as a run file,
                 <output>/<embedder>/<rev>[/experiments/<variant>]/<Task>.run_top<k>.json, computed
                 by mteb's own search code on the embedder's (cached) vectors, so its scores are
                 mteb's. The task is then built again with `top_ranked` = that top-k, and mteb's
                 retrieval evaluator scores the reranker over exactly those candidates. The reranked
                 result goes to <output>/<reranker>/<rev>/experiments/rerank-<embedder>[-<variant>]-top<k>/
                 and records its first stage. A run file that exists is reused (a smaller k is cut
                 from a larger file), so a second reranker on the same first stage encodes nothing.
Reranking task:  it carries its own candidate lists; the reranker scores them directly and its
                 result goes to the reranker's own folder.
"""
from __future__ import annotations

import logging
from pathlib import Path

from evalkit.errors import EvalkitError

log = logging.getLogger("evalkit")

RUN_KIND = "evalkit-run"


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


def load_task_data(task, ts):
    """Make sure an mteb task has its data in mteb's v2 retrieval layout (hub tasks load here)."""
    if not task.data_loaded:
        try:
            task.load_data()
        except Exception as e:
            from evalkit.tasks.hub import hub_load_error

            raise hub_load_error(ts, e) from e
    if hasattr(task, "convert_v1_dataset_format_to_v2"):
        task.convert_v1_dataset_format_to_v2(num_proc=None)
    return task


def splits_of(task):
    subsets = list(task.hf_subsets) if getattr(task, "hf_subsets", None) else list(task.dataset.keys())
    for subset in subsets:
        if subset not in task.dataset:
            continue
        for split in task.eval_splits:
            if split in task.dataset[subset]:
                yield subset, split, task.dataset[subset][split]


def build_run(adapter, task, ts, batch_size: int, top_k: int) -> dict:
    """{subset: {split: {query: {doc: score}}}}: the first stage's top-k, by mteb's own search code.

    mteb's SearchEncoderWrapper does the full-corpus search exactly as in the first stage's evaluation,
    on an adapter with the same inputs and similarity, so the scores are mteb's; the vectors come
    from the embedding cache that the first stage has filled.
    """
    from mteb.models.search_wrappers import SearchEncoderWrapper

    task = load_task_data(task, ts)
    encode_kwargs = {"batch_size": int(batch_size), "show_progress_bar": False}
    run: dict = {}
    # an AIR-Bench task's splits without judgements here are searched too: their reranked top-k is its submission
    unjudged = [("default", split, data) for split, data in (getattr(task, "unjudged", None) or {}).items()]
    for subset, split, data in [*splits_of(task), *unjudged]:
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


def attach_candidates(task, ts, run_doc: dict, top_k: int, run_file: Path | None = None):
    """The task with each split's `top_ranked` = the run's candidates, as mteb's reranking reads them."""
    task = load_task_data(task, ts)
    for subset, split, data in splits_of(task):
        split_run = run_doc["run"].get(subset, {}).get(split)
        if split_run is None:
            raise EvalkitError(f"run file {run_file} has no {subset}/{split}: delete it and run again")
        data["top_ranked"] = top_ranked_of(split_run)
    task._top_k = int(top_k)
    fs = run_doc.get("first_stage") or {}
    # mteb's own record of a reranked first stage (as its convert_to_reranking does)
    task._previous_results_model_meta = {"model_name": fs.get("hub_id") or fs.get("model"), "revision": fs.get("revision")}
    return task
