"""The local data formats of ../shared/data/MANIFEST.md: readers that check every row, and the
generic mteb task that carries data which borrow no mteb task."""
from __future__ import annotations

import csv
import itertools
import json
import math
from collections import Counter
from pathlib import Path

from evalkit.errors import EvalkitError
from evalkit.tasks.registry import TaskSpec

_ROWS_IDS = itertools.count()  # a unique task name per conversion of reranking rows


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


def read_json(path: Path, why: str = ""):
    """A JSON file's content; one line where it is missing (with `why` it is needed) or malformed."""
    if not path.is_file():
        raise EvalkitError(f"missing data file {path}" + (f": {why}" if why else ""))
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise EvalkitError(f"{path}:{e.lineno}: malformed JSON ({e.msg})") from None


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
    doc = read_json(path)
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


def _rows(folder: Path, split: str, cols: tuple[str, ...], texts: tuple[str, ...], empty: str) -> tuple[Path, list[dict]]:
    """`<split>.jsonl`'s rows, each with `cols` and strings in `texts`; `empty`: what a split needs, said when it has no row."""
    path = _split_file(folder, split)
    rows = read_jsonl(path)
    _need(rows, path, cols)
    for i, r in enumerate(rows, 1):
        for c in texts:
            if not isinstance(r[c], str):
                raise EvalkitError(f"{path}: row {i}: `{c}` must be a string, got {type(r[c]).__name__}")
    if not rows:
        raise EvalkitError(f"{path} is empty: {empty}")
    return path, rows


def load_bitext(folder: Path, split: str):
    """`<split>.jsonl` rows {sentence1, sentence2}: sentence2 of row i translates sentence1 of row i
    (mteb's BitextMining columns; each sentence1 is matched against all sentence2)."""
    from datasets import Dataset

    path, rows = _rows(folder, split, ("sentence1", "sentence2"), ("sentence1", "sentence2"), "a bitext split needs sentence pairs")
    if len(rows) < 2:
        raise EvalkitError(f"{path}: {len(rows)} pairs: bitext mining needs at least 2 (each sentence is matched among all of them)")
    return Dataset.from_dict({c: [r[c] for r in rows] for c in ("sentence1", "sentence2")})


def load_multilabel(folder: Path, split: str):
    """`<split>.jsonl` rows {text, label: [...]} (mteb's MultilabelClassification: a list of class labels per text)."""
    from datasets import Dataset

    path, rows = _rows(folder, split, ("text", "label"), ("text",), "a multilabel classification split needs labelled texts")
    kinds = set()
    for i, r in enumerate(rows, 1):
        if not isinstance(r["label"], list):
            raise EvalkitError(f"{path}: row {i}: `label` must be a list of class labels, got {r['label']!r:.60}")
        for x in r["label"]:
            kind = label_kind(x)
            if kind is None:
                raise EvalkitError(f"{path}: row {i} has the label {x!r}: a class label must be a string or an integer")
            kinds.add(kind)
    if len(kinds) > 1:
        raise EvalkitError(f"{path}: labels mix strings and numbers: give every class label the same type")
    return list_columns(Dataset.from_dict({"text": [r["text"] for r in rows], "label": [list(r["label"]) for r in rows]}))


def load_regression(folder: Path, split: str):
    """`<split>.jsonl` rows {text, value} (mteb's Regression: a number per text)."""
    from datasets import Dataset

    path, rows = _rows(folder, split, ("text", "value"), ("text",), "a regression split needs texts with values")
    for i, r in enumerate(rows, 1):
        v = r["value"]
        if not (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)):
            raise EvalkitError(f"{path}: row {i}: `value` must be a finite number, got {v!r}")
    if len({float(r["value"]) for r in rows}) < 2:
        raise EvalkitError(f"{path}: all {len(rows)} values are {rows[0]['value']!r}: Kendall's tau is undefined unless the values differ")
    return list_columns(Dataset.from_dict({"text": [r["text"] for r in rows], "value": [float(r["value"]) for r in rows]}))


CANDIDATE_LABELS = "candidate_labels.json"


def load_candidate_labels(folder: Path) -> list[str]:
    """`candidate_labels.json`: the texts a zero-shot classifier embeds, one per class (a JSON list of strings)."""
    path = folder / CANDIDATE_LABELS
    labels = read_json(path, "a zero-shot classification folder lists its classes' texts there")
    if not isinstance(labels, list) or len(labels) < 2 or not all(isinstance(x, str) for x in labels):
        raise EvalkitError(f"{path}: expected a JSON list of at least 2 strings (one text per class)")
    if len(set(labels)) != len(labels):
        raise EvalkitError(f"{path}: a candidate label is listed twice")
    return labels


def load_zeroshot(folder: Path, split: str, candidates: list[str]):
    """`<split>.jsonl` rows {text, label}: the label is a class's index in candidate_labels.json or its text
    (mteb's ZeroShotClassification maps a string label to its index)."""
    from datasets import Dataset

    path, rows = _rows(folder, split, ("text", "label"), ("text",), "a zero-shot classification split needs labelled texts")
    kinds = {type(r["label"]) for r in rows}
    for i, r in enumerate(rows, 1):
        x = r["label"]
        ok = x in candidates if isinstance(x, str) else (label_kind(x) == "number" and 0 <= int(x) < len(candidates))
        if not ok:
            raise EvalkitError(
                f"{path}: row {i} has the label {x!r}: give a class's index in {CANDIDATE_LABELS} (0..{len(candidates) - 1}) or its text"
            )
    if str in kinds and len(kinds) > 1:
        raise EvalkitError(f"{path}: labels mix texts and indices: give every label the same type")
    labels = [r["label"] if isinstance(r["label"], str) else int(r["label"]) for r in rows]
    return Dataset.from_dict({"text": [r["text"] for r in rows], "label": labels})


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
    # a query's `instruction` (mteb's InstructionRetrieval queries): kept, and mteb reads the query as
    # "<text> <instruction>" exactly as for its own instruction tasks (mteb/_create_dataloaders.py)
    with_instruction = any("instruction" in r for r in query_rows)
    for i, r in enumerate(query_rows, 1):
        if with_instruction and not (r.get("instruction") is None or isinstance(r.get("instruction"), str)):
            raise EvalkitError(f"{folder / 'queries.jsonl'}: row {i}: `instruction` must be a string or null, got {r['instruction']!r}")
    return retrieval_split(
        [(str(r["_id"]), r.get("title") or "", r["text"]) for r in corpus_rows],
        [(str(r["_id"]), r["text"], r.get("instruction")) if with_instruction else (str(r["_id"]), r["text"]) for r in query_rows],
        qrels,
        corpus_where=str(folder / "corpus.jsonl"),
        queries_where=str(folder / "queries.jsonl"),
        qrels_where=str(qrels_path),
    )


def retrieval_split(corpus: list[tuple], queries: list[tuple], qrels: dict | None, *, corpus_where: str, queries_where: str,
                    qrels_where: str = "", corpus_dataset=None) -> dict:
    """mteb's retrieval split data from (id, title, text) documents, (id, text) or (id, text, instruction)
    queries and {query: {doc: relevance}}, after the checks every retrieval source must pass. `qrels` None: a
    split to search only (AIR-Bench's test queries, whose judgements its leaderboard keeps).
    `corpus_dataset`: the corpus as another split of the same documents holds it (shared, not copied)."""
    from datasets import Dataset

    if not corpus:
        raise EvalkitError(f"{corpus_where} is empty: a retrieval task needs documents")
    if not queries:
        raise EvalkitError(f"{queries_where} is empty: a retrieval task needs queries")
    for where, rows in ((corpus_where, corpus), (queries_where, queries)):
        dup = [k for k, n in Counter(r[0] for r in rows).items() if n > 1]
        if dup:
            raise EvalkitError(f"{where}: {len(dup)} duplicate ids (first: {dup[0]!r})")
    docs = corpus_dataset if corpus_dataset is not None else Dataset.from_dict(
        {"id": [r[0] for r in corpus], "title": [r[1] for r in corpus], "text": [r[2] for r in corpus]})
    qs = {"id": [r[0] for r in queries], "text": [r[1] for r in queries]}
    if queries and len(queries[0]) > 2:  # (id, text, instruction)
        qs["instruction"] = [r[2] for r in queries]
    qs = Dataset.from_dict(qs)
    if qrels is None:
        return {"corpus": docs, "queries": qs, "relevant_docs": {}, "top_ranked": None}
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
    return {"corpus": docs, "queries": qs, "relevant_docs": qrels, "top_ranked": None}


def reranking_layout(folder: Path) -> str:
    """'retrieval' (corpus, queries, qrels/ and top_ranked) or 'rows' ({query, positive, negative} rows)."""
    return "retrieval" if (folder / "qrels").is_dir() or (folder / "top_ranked.jsonl").is_file() else "rows"


def reranking_split_present(folder: Path, split: str) -> bool:
    if reranking_layout(folder) == "retrieval":
        return (folder / "qrels" / f"{split}.tsv").is_file()
    return _split_file(folder, split).is_file()


def load_reranking(folder: Path, split: str) -> dict:
    """mteb's retrieval split data (with `top_ranked`, the candidates of each query) of a reranking
    folder in either MANIFEST layout."""
    if reranking_layout(folder) == "retrieval":
        data = load_retrieval(folder, split)
        data["top_ranked"] = load_top_ranked(folder, split, data)
        return data
    return rows_to_retrieval(load_reranking_rows(folder, split), split)


def load_reranking_rows(folder: Path, split: str):
    """`<split>.jsonl` rows {query, positive: [...], negative: [...]}, checked."""
    from datasets import Dataset

    path = _split_file(folder, split)
    rows = read_jsonl(path)
    _need(rows, path, ("query", "positive", "negative"))
    with_instruction = next((i for i, r in enumerate(rows, 1) if "instruction" in r), None)
    if with_instruction is not None:
        raise EvalkitError(
            f"{path}: row {with_instruction} has an `instruction`, which mteb's conversion of these rows does not read: "
            "write the folder in the retrieval layout (queries.jsonl with `instruction`, qrels/, top_ranked.jsonl)"
        )
    if not rows:
        raise EvalkitError(f"{path} has no rows: a reranking split needs {{query, positive, negative}} rows")
    for i, r in enumerate(rows, 1):
        if not isinstance(r["query"], str):
            raise EvalkitError(f"{path}: row {i}: `query` must be a string, got {type(r['query']).__name__}")
        for col in ("positive", "negative"):
            v = r[col]
            if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
                raise EvalkitError(f"{path}: row {i}: `{col}` must be a list of strings (the candidate passages), got {v!r:.60}")
    usable = sum(1 for r in rows if r["positive"] and r["negative"])
    if usable == 0:
        raise EvalkitError(
            f"{path}: none of its {len(rows)} rows has both a positive and a negative passage: mteb drops such rows, "
            "so nothing would be scored"
        )
    return Dataset.from_dict({c: [r[c] for r in rows] for c in ("query", "positive", "negative")})


def rows_to_retrieval(rows, split: str) -> dict:
    """mteb's own conversion of its old reranking format (AbsTaskReranking.transform_old_dataset_format:
    rows lacking positives or negatives dropped, query ids `<split>_query<i>`, one corpus entry per
    (query, candidate) with the positives first, top_ranked = each query's candidates), so the data
    are exactly what mteb makes of the same rows."""
    from types import SimpleNamespace

    from datasets import DatasetDict
    from mteb.abstasks.text import reranking

    name = f"evalkit-rows-{next(_ROWS_IDS)}"

    class OldFormat:  # what transform_old_dataset_format reads of its task
        metadata = SimpleNamespace(name=name, dataset={})
        hf_subsets = ["default"]
        _process_example = reranking.AbsTaskReranking._process_example

    shim = OldFormat()
    reranking.OLD_FORMAT_RERANKING_TASKS.append(name)
    try:
        reranking.AbsTaskReranking.transform_old_dataset_format(shim, DatasetDict({split: rows}))
    finally:
        reranking.OLD_FORMAT_RERANKING_TASKS.remove(name)
    data = shim.dataset["default"][split]
    return {
        "corpus": data["corpus"], "queries": data["queries"],
        "relevant_docs": {q: dict(d) for q, d in data["relevant_docs"].items()},
        "top_ranked": {q: list(d) for q, d in data["top_ranked"].items()},
    }


def load_top_ranked(folder: Path, split: str, data: dict) -> dict[str, list[str]]:
    """`top_ranked/<split>.jsonl`, else `top_ranked.jsonl`: rows {query-id, corpus-ids: [...]}, checked
    against the queries, the corpus and the judgements of `data`."""
    path = folder / "top_ranked" / f"{split}.jsonl"
    if not path.is_file():
        path = folder / "top_ranked.jsonl"
    rows = read_jsonl(path)
    _need(rows, path, ("query-id", "corpus-ids"))
    query_ids = set(data["queries"]["id"])
    doc_ids = set(data["corpus"]["id"])
    top: dict[str, list[str]] = {}
    for i, r in enumerate(rows, 1):
        q, docs = str(r["query-id"]), r["corpus-ids"]
        if not isinstance(docs, list) or not docs:
            raise EvalkitError(f"{path}: row {i}: `corpus-ids` must be a non-empty list of document ids")
        docs = [str(d) for d in docs]
        if q in top:
            raise EvalkitError(f"{path}: row {i}: query {q!r} is listed twice: give each query one candidate list")
        if q not in query_ids:
            raise EvalkitError(f"{path}: row {i}: unknown query id {q!r} (not in queries.jsonl)")
        unknown = [d for d in docs if d not in doc_ids]
        if unknown:
            raise EvalkitError(f"{path}: row {i}: {len(unknown)} unknown document ids (first: {unknown[0]!r}): candidates must be in corpus.jsonl")
        if len(set(docs)) != len(docs):
            raise EvalkitError(f"{path}: row {i}: query {q!r} lists a candidate twice")
        top[q] = docs
    judged = [q for q, d in data["relevant_docs"].items() if any(v > 0 for v in d.values())]
    missing = [q for q in judged if q not in top]
    if missing:
        raise EvalkitError(
            f"{path}: {len(missing)} of the {len(judged)} queries judged in qrels/{split}.tsv have no candidates "
            f"(first: {missing[0]!r}): give each a `corpus-ids` list, or drop its judgements"
        )
    return top


def load_summarization(folder: Path, split: str, min_score: float | None = None, max_score: float | None = None):
    """`<split>.jsonl` rows {text, human_summaries: [...], machine_summaries: [...], relevance: [...]},
    checked; relevance within [min_score, max_score] where the task fixes them."""
    from datasets import Dataset

    path = _split_file(folder, split)
    rows = read_jsonl(path)
    cols = ("text", "human_summaries", "machine_summaries", "relevance")
    _need(rows, path, cols)
    if not rows:
        raise EvalkitError(f"{path} has no rows: a summarization split needs texts with scored machine summaries")
    scored = 0
    for i, r in enumerate(rows, 1):
        if not isinstance(r["text"], str):
            raise EvalkitError(f"{path}: row {i}: `text` must be a string")
        for col in ("human_summaries", "machine_summaries"):
            v = r[col]
            if not isinstance(v, list) or not v or not all(isinstance(x, str) for x in v):
                raise EvalkitError(f"{path}: row {i}: `{col}` must be a non-empty list of strings")
        rel = r["relevance"]
        if not isinstance(rel, list) or len(rel) != len(r["machine_summaries"]):
            raise EvalkitError(
                f"{path}: row {i}: `relevance` must be a list with one score per machine summary "
                f"({len(r['machine_summaries'])}), got {rel!r:.60}"
            )
        for x in rel:
            ok = isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
            if ok and min_score is not None and max_score is not None:
                ok = min_score - 1e-9 <= x <= max_score + 1e-9
            if not ok:
                where = f" or outside [{min_score}, {max_score}]" if min_score is not None else ""
                raise EvalkitError(f"{path}: row {i}: relevance {x!r} is not a number{where}")
        scored += len(set(rel)) > 1
    if scored == 0:
        raise EvalkitError(
            f"{path}: in every row the machine summaries have equal relevance: mteb skips such texts (their correlation "
            "is undefined), so nothing would be scored"
        )
    return Dataset.from_dict({c: [r[c] if c != "relevance" else [float(x) for x in r[c]] for r in rows] for c in cols})


def generic_task(spec: TaskSpec, splits: list[str], dataset: dict | None = None, description: str | None = None,
                 lang: str = "eng-Latn", attrs: dict | None = None):
    """An mteb task for a task that borrows no mteb task (a user's folder, an AIR-Bench dataset), with
    mteb's main score for the type (that of most of mteb's own tasks of it; of its mock task where mteb
    has no text task of the type). `attrs`: class attributes (a zero-shot task's candidate labels)."""
    import mteb.abstasks as at
    from mteb.abstasks.text.bitext_mining import AbsTaskBitextMining
    from mteb.abstasks.task_metadata import TaskMetadata

    base, main = {
        "STS": (at.AbsTaskSTS, "cosine_spearman"),
        "Retrieval": (at.AbsTaskRetrieval, "ndcg_at_10"),
        "Classification": (at.AbsTaskClassification, "accuracy"),
        "Clustering": (at.AbsTaskClustering, "v_measure"),
        "PairClassification": (at.AbsTaskPairClassification, "max_ap"),
        # mteb 2.26's reranking tasks are retrieval tasks with candidates (top_ranked), scored by MAP@1000
        "Reranking": (at.AbsTaskRetrieval, "map_at_1000"),
        "Summarization": (at.AbsTaskSummarization, "cosine_spearman"),
        "BitextMining": (AbsTaskBitextMining, "f1"),
        "MultilabelClassification": (at.AbsTaskMultilabelClassification, "accuracy"),
        "Regression": (at.AbsTaskRegression, "kendalltau"),
        "ZeroShotClassification": (at.AbsTaskZeroShotClassification, "accuracy"),
        # mteb's InstructionRetrieval/-Reranking are retrieval tasks whose queries carry an instruction; mteb's
        # own mocks score them by nDCG@10 (its FollowIR tasks' p-MRR needs their paired instructions: borrow one)
        "InstructionRetrieval": (at.AbsTaskRetrieval, "ndcg_at_10"),
        "InstructionReranking": (at.AbsTaskRetrieval, "ndcg_at_10"),
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
    return type(f"UserTask_{spec.type}", (base,), {"metadata": meta, **(attrs or {})})()
