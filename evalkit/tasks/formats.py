"""The local data formats of ../shared/data/MANIFEST.md: readers that check every row, and the
generic mteb task that carries data which borrow no mteb task."""
from __future__ import annotations

import csv
import json
import math
from collections import Counter
from pathlib import Path

from evalkit.errors import EvalkitError
from evalkit.tasks.registry import TaskSpec

def read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        raise EvalkitError(f"missing data file {path}")
    rows = []
    with path.open(encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise EvalkitError(f"{path}:{i}: malformed JSON line ({e.msg}): fix or remove that line") from None
            if not isinstance(row, dict):
                raise EvalkitError(f"{path}:{i}: expected a JSON object per line")
            rows.append(row)
    return rows


def _need(rows: list[dict], path: Path, cols: tuple[str, ...]) -> None:
    for i, r in enumerate(rows, 1):
        missing = [c for c in cols if c not in r]
        if missing:
            raise EvalkitError(f"{path}: row {i} has no {', '.join(missing)} column (expected {', '.join(cols)})")


def _split_file(folder: Path, split: str) -> Path:
    return folder / f"{split}.jsonl"


def load_sts(folder: Path, split: str, min_score: float, max_score: float):
    from datasets import Dataset

    path = _split_file(folder, split)
    rows = read_jsonl(path)
    _need(rows, path, ("sentence1", "sentence2", "score"))
    bad = []
    for i, r in enumerate(rows, 1):
        s = r["score"]
        ok = isinstance(s, (int, float)) and not isinstance(s, bool) and math.isfinite(s) and min_score - 1e-9 <= s <= max_score + 1e-9
        if not ok:
            bad.append((i, s))
    if bad:
        i, s = bad[0]
        raise EvalkitError(
            f"{path}: {len(bad)} STS scores are non-numeric or outside [{min_score}, {max_score}] (first: row {i}, {s!r})"
        )
    if not rows:
        raise EvalkitError(f"{path} has no rows: an STS split needs scored sentence pairs")
    if len({float(r["score"]) for r in rows}) < 2:
        raise EvalkitError(
            f"{path}: all {len(rows)} scores are {rows[0]['score']!r}: the Spearman correlation is undefined unless the scores differ"
        )
    return Dataset.from_dict(
        {"sentence1": [r["sentence1"] for r in rows], "sentence2": [r["sentence2"] for r in rows], "score": [float(r["score"]) for r in rows]}
    )


def list_columns(ds):
    """The same Dataset, whose `ds[column]` is a plain list read once.

    datasets 5 returns a lazy Arrow column that mteb's classification code (undersampling, sklearn)
    reads element by element; a list reads at Python speed and changes no score.
    """
    from datasets import Dataset

    class ListColumnDataset(Dataset):
        def __getitem__(self, key):
            if isinstance(key, str):
                cols = self.__dict__.setdefault("_evalkit_columns", {})
                if key not in cols:
                    cols[key] = list(super().__getitem__(key))
                return cols[key]
            return super().__getitem__(key)

    return ListColumnDataset(ds.data, info=ds.info, split=ds.split, indices_table=ds._indices, fingerprint=ds._fingerprint)


def load_classification(folder: Path, split: str):
    from datasets import Dataset

    path = _split_file(folder, split)
    rows = read_jsonl(path)
    _need(rows, path, ("text", "label"))
    if not rows:
        raise EvalkitError(f"{path} is empty: a classification split needs labelled texts")
    kinds = set()
    for i, r in enumerate(rows, 1):
        kind = label_kind(r["label"])
        if kind is None:
            raise EvalkitError(f"{path}: row {i} has the label {r['label']!r}: a class label must be a string or an integer")
        kinds.add(kind)
    if len(kinds) > 1:
        raise EvalkitError(f"{path}: labels mix strings and numbers: give every class label the same type")
    return list_columns(Dataset.from_dict({"text": [r["text"] for r in rows], "label": [r["label"] for r in rows]}))


def label_kind(label) -> str | None:
    """'string' or 'number' for a usable class label (sklearn's classes), None for anything else."""
    if isinstance(label, str):
        return "string"
    if isinstance(label, (bool, int)) or (isinstance(label, float) and math.isfinite(label) and label.is_integer()):
        return "number"
    return None


def load_pairs(folder: Path, split: str):
    from datasets import Dataset

    path = _split_file(folder, split)
    rows = read_jsonl(path)
    _need(rows, path, ("sentence1", "sentence2", "label"))
    bad = [i for i, r in enumerate(rows, 1) if r["label"] not in (0, 1) or isinstance(r["label"], bool)]
    if bad:
        raise EvalkitError(f"{path}: {len(bad)} labels are not 0 or 1 (first: row {bad[0]})")
    if not rows:
        raise EvalkitError(f"{path} has no rows: a pair classification split needs labelled sentence pairs")
    if len({int(r["label"]) for r in rows}) < 2:
        raise EvalkitError(
            f"{path}: all {len(rows)} labels are {int(rows[0]['label'])}: pair classification needs both 0 and 1 "
            "(average precision is undefined or trivially 1 otherwise)"
        )
    return Dataset.from_dict(
        {"sentence1": [r["sentence1"] for r in rows], "sentence2": [r["sentence2"] for r in rows], "labels": [int(r["label"]) for r in rows]}
    )


def load_clustering(folder: Path, split: str):
    from datasets import Dataset

    path = folder / f"{split}.json"
    if not path.is_file():
        raise EvalkitError(f"missing data file {path}")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise EvalkitError(f"{path}:{e.lineno}: malformed JSON ({e.msg})") from None
    if not isinstance(doc, dict) or "sentences" not in doc or "labels" not in doc:
        raise EvalkitError(f"{path}: expected an object with `sentences` and `labels`")
    if len(doc["sentences"]) != len(doc["labels"]):
        raise EvalkitError(f"{path}: {len(doc['sentences'])} sentences but {len(doc['labels'])} labels")
    if not doc["sentences"]:
        raise EvalkitError(f"{path}: no sentences")
    if len({json.dumps(x, sort_keys=True) for x in doc["labels"]}) < 2:
        raise EvalkitError(
            f"{path}: all {len(doc['labels'])} sentences have the label {doc['labels'][0]!r}: clustering needs at least 2 labels "
            "(the V-measure is trivially 1 otherwise)"
        )
    ds = Dataset.from_dict({"sentences": list(doc["sentences"]), "labels": list(doc["labels"])})
    return ds.class_encode_column("labels")


def load_retrieval(folder: Path, split: str) -> dict:
    corpus_rows = read_jsonl(folder / "corpus.jsonl")
    query_rows = read_jsonl(folder / "queries.jsonl")
    _need(corpus_rows, folder / "corpus.jsonl", ("_id", "text"))
    _need(query_rows, folder / "queries.jsonl", ("_id", "text"))
    qrels_path = folder / "qrels" / f"{split}.tsv"
    if not qrels_path.is_file():
        raise EvalkitError(f"missing data file {qrels_path}")
    qrels: dict[str, dict[str, int]] = {}
    with qrels_path.open(encoding="utf-8") as f:
        reader = csv.reader(f, delimiter="\t")
        header = next(reader, None)
        if header is None or [h.strip() for h in header[:3]] != ["query-id", "corpus-id", "score"]:
            raise EvalkitError(f"{qrels_path}: first line must be the header `query-id<TAB>corpus-id<TAB>score`")
        for i, row in enumerate(reader, 2):
            if not row:
                continue
            if len(row) < 3:
                raise EvalkitError(f"{qrels_path}:{i}: expected 3 tab-separated columns")
            try:
                score = int(float(row[2]))
            except ValueError:
                raise EvalkitError(f"{qrels_path}:{i}: score {row[2]!r} is not a number") from None
            qrels.setdefault(row[0], {})[row[1]] = score
    return retrieval_split(
        [(str(r["_id"]), r.get("title") or "", r["text"]) for r in corpus_rows],
        [(str(r["_id"]), r["text"]) for r in query_rows],
        qrels,
        corpus_where=str(folder / "corpus.jsonl"),
        queries_where=str(folder / "queries.jsonl"),
        qrels_where=str(qrels_path),
    )


def retrieval_split(corpus: list[tuple], queries: list[tuple], qrels: dict, *, corpus_where: str, queries_where: str, qrels_where: str) -> dict:
    """mteb's retrieval split data from (id, title, text) documents, (id, text) queries and
    {query: {doc: relevance}}, after the checks every retrieval source must pass."""
    from datasets import Dataset

    if not corpus:
        raise EvalkitError(f"{corpus_where} is empty: a retrieval task needs documents")
    if not queries:
        raise EvalkitError(f"{queries_where} is empty: a retrieval task needs queries")
    for where, rows in ((corpus_where, corpus), (queries_where, queries)):
        dup = [k for k, n in Counter(r[0] for r in rows).items() if n > 1]
        if dup:
            raise EvalkitError(f"{where}: {len(dup)} duplicate ids (first: {dup[0]!r})")
    if not qrels or not any(docs for docs in qrels.values()):
        raise EvalkitError(f"{qrels_where} has no judgements")
    if not any(score > 0 for docs in qrels.values() for score in docs.values()):
        n = sum(len(docs) for docs in qrels.values())
        raise EvalkitError(
            f"{qrels_where}: none of its {n} judgements is positive (score > 0): no query has a relevant document, "
            "so every score would be 0"
        )
    doc_ids = {r[0] for r in corpus}
    query_ids = {r[0] for r in queries}
    unknown_q = [q for q in qrels if q not in query_ids]
    unknown_d = {d for docs in qrels.values() for d in docs if d not in doc_ids}
    if unknown_q or unknown_d:
        raise EvalkitError(
            f"{qrels_where} names {len(unknown_q)} unknown query ids and {len(unknown_d)} unknown document ids "
            f"(first: {(unknown_q or sorted(unknown_d))[0]!r}): judgements must refer to the queries and the corpus"
        )
    docs = Dataset.from_dict({"id": [r[0] for r in corpus], "title": [r[1] for r in corpus], "text": [r[2] for r in corpus]})
    qs = Dataset.from_dict({"id": [r[0] for r in queries], "text": [r[1] for r in queries]})
    return {"corpus": docs, "queries": qs, "relevant_docs": qrels, "top_ranked": None}


def generic_task(spec: TaskSpec, splits: list[str], dataset: dict | None = None, description: str | None = None, lang: str = "eng-Latn"):
    """An mteb task for a task that borrows no mteb task (a user's folder, an AIR-Bench dataset)."""
    import mteb.abstasks as at
    from mteb.abstasks.task_metadata import TaskMetadata

    base, main = {
        "STS": (at.AbsTaskSTS, "cosine_spearman"),
        "Retrieval": (at.AbsTaskRetrieval, "ndcg_at_10"),
        "Classification": (at.AbsTaskClassification, "accuracy"),
        "Clustering": (at.AbsTaskClustering, "v_measure"),
        "PairClassification": (at.AbsTaskPairClassification, "max_ap"),
    }.get(spec.type, (None, None))
    if base is None:
        raise EvalkitError(f"task {spec.name}: type {spec.type} needs `mteb_task:` naming an mteb task to borrow its evaluator")
    meta = TaskMetadata(
        name=spec.name,
        description=description or f"User task from {spec.data_dir}",
        dataset=dataset or {"path": str(spec.data_dir), "revision": "local"},
        type=spec.type,
        category="t2t",
        modalities=["text"],
        eval_splits=splits,
        eval_langs=[lang],
        main_score=main,
    )
    return type(f"UserTask_{spec.type}", (base,), {"metadata": meta})()
