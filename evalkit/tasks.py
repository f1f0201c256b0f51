"""Task registry (YAML in tasks/) and loaders that hand local data to mteb's own tasks.

A task spec names an mteb task (for metadata, splits and evaluator settings) and where its data
come from: `local` (a folder in the MANIFEST formats), `hub` (mteb loads it) or `air-bench` (an
AIR-Bench dataset, mirrored or from the hub: evalkit/air_bench.py). Local data are
checked row by row and handed to mteb in the shape its evaluator reads after its own
dataset_transform, then marked loaded.
"""
from __future__ import annotations

import csv
import json
import math
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from evalkit.errors import EvalkitError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
TYPES = ("STS", "Retrieval", "Classification", "Clustering", "PairClassification", "Reranking", "Summarization")


def tasks_dir() -> Path:
    return Path(os.environ.get("EVALKIT_TASKS") or PROJECT_ROOT / "tasks")


def data_root() -> Path | None:
    """$EVALKIT_DATA when set, else ../shared/data beside the project (or the working folder)."""
    if os.environ.get("EVALKIT_DATA"):
        return Path(os.environ["EVALKIT_DATA"]).expanduser()
    for base in (PROJECT_ROOT, Path.cwd()):
        cand = base.parent / "shared" / "data"
        if cand.is_dir():
            return cand
    return None


@dataclass
class TaskSpec:
    name: str
    type: str
    source: str = "local"  # local | hub
    mteb_task: str | None = None
    data_dir: Path | None = None
    subsets: list[str] | None = None
    eval_splits: list[str] | None = None
    instruction: str | None = None
    fewshot: dict = field(default_factory=dict)
    air_bench: dict | None = None  # source: air-bench (evalkit/air_bench.py)
    origin: str = ""

    @property
    def mteb_name(self) -> str:
        return self.mteb_task or self.name


def _spec(name: str, entry: dict, defaults: dict, origin: str) -> TaskSpec:
    entry = {**defaults, **(entry or {})}
    typ = entry.get("type")
    if typ not in TYPES:
        raise EvalkitError(f"task {name} in {origin} has type {typ!r}: use one of {', '.join(TYPES)}")
    data = entry.get("data")
    return TaskSpec(
        name=name,
        type=typ,
        source=entry.get("source", "local"),
        mteb_task=entry.get("mteb_task"),
        data_dir=Path(data) if data else None,
        subsets=entry.get("subsets"),
        eval_splits=entry.get("eval_splits"),
        instruction=entry.get("instruction"),
        fewshot=dict(entry.get("fewshot") or {}),
        air_bench=dict(entry["air_bench"]) if entry.get("air_bench") else None,
        origin=origin,
    )


class Registry:
    """All task specs and suites in the YAML files of tasks_dir()."""

    def __init__(self, folder: Path | None = None):
        self.folder = folder or tasks_dir()
        self.by_file: dict[str, dict[str, TaskSpec]] = {}
        self.suites: dict[str, dict] = {}
        for f in sorted(self.folder.glob("*.yaml")):
            try:
                doc = yaml.safe_load(f.read_text()) or {}
            except yaml.YAMLError as e:
                raise EvalkitError(f"{f} is not valid YAML: {str(e).splitlines()[0]}") from e
            defaults = doc.get("defaults") or {}
            specs = {n: _spec(n, e, defaults, str(f)) for n, e in (doc.get("tasks") or {}).items()}
            self.by_file[f.name] = specs
            for sname, s in (doc.get("suites") or {}).items():
                s = {"tasks": s} if isinstance(s, list) else dict(s)
                s["file"] = f.name
                self.suites[sname] = s

    def all_specs(self) -> list[TaskSpec]:
        return [s for specs in self.by_file.values() for s in specs.values()]

    def suite(self, name: str) -> list[TaskSpec]:
        if name not in self.suites:
            raise EvalkitError(f"unknown suite {name!r}: known suites are {', '.join(sorted(self.suites))}")
        s = self.suites[name]
        specs = self.by_file[s["file"]]
        return [specs[t] if t in specs else self.task(t) for t in s["tasks"]]

    def task(self, name_or_dir: str) -> TaskSpec:
        """A registered task name (local mirror preferred when present), an mteb task name, or a task folder."""
        p = Path(name_or_dir).expanduser()
        if p.is_dir() or "/" in name_or_dir or name_or_dir.startswith("."):
            return task_from_folder(p)
        candidates = [specs[name_or_dir] for specs in self.by_file.values() if name_or_dir in specs]
        local = [c for c in candidates if c.source == "local"]
        for c in local:
            if data_dir_of(c, must_exist=False) is not None:
                return c
        if candidates:
            return ([c for c in candidates if c.source == "hub"] or candidates)[0]
        try:
            import mteb

            t = mteb.get_task(name_or_dir)
        except Exception:
            raise EvalkitError(
                f"unknown task {name_or_dir!r}: not in tasks/*.yaml, not an mteb task and not a folder with task.yaml (evalkit list tasks)"
            ) from None
        return TaskSpec(name=name_or_dir, type=t.metadata.type, source="hub", origin="mteb")


def task_from_folder(folder: Path) -> TaskSpec:
    if not folder.is_dir():
        raise EvalkitError(f"task folder {folder} does not exist")
    y = folder / "task.yaml"
    if not y.is_file():
        raise EvalkitError(f"task folder {folder} has no task.yaml: add one with at least `name:` and `type:`")
    try:
        doc = yaml.safe_load(y.read_text()) or {}
    except yaml.YAMLError as e:
        raise EvalkitError(f"{y} is not valid YAML: {str(e).splitlines()[0]}") from e
    if not isinstance(doc, dict) or "type" not in doc:
        raise EvalkitError(f"{y} must give `type:` ({' | '.join(TYPES)})")
    spec = _spec(str(doc.get("name") or folder.name), doc, {"source": "local"}, str(y))
    spec.data_dir = folder
    return spec


def data_dir_of(spec: TaskSpec, must_exist: bool = True) -> Path | None:
    if spec.data_dir is not None:
        d = spec.data_dir if spec.data_dir.is_absolute() else (data_root() or Path.cwd()) / spec.data_dir
    else:
        root = data_root()
        d = root / spec.name if root is not None else None
    if d is None or not d.is_dir():
        if not must_exist:
            return None
        where = d if d is not None else "(no data folder: ../shared/data is absent and EVALKIT_DATA is unset)"
        raise EvalkitError(f"data of task {spec.name} not found at {where}: set EVALKIT_DATA to the folder holding {spec.name}/")
    return d


# ----------------------------------------------------------------------------- reading files
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
        raise EvalkitError(f"{path} is empty")
    return list_columns(Dataset.from_dict({"text": [r["text"] for r in rows], "label": [r["label"] for r in rows]}))


def load_pairs(folder: Path, split: str):
    from datasets import Dataset

    path = _split_file(folder, split)
    rows = read_jsonl(path)
    _need(rows, path, ("sentence1", "sentence2", "label"))
    bad = [i for i, r in enumerate(rows, 1) if r["label"] not in (0, 1) or isinstance(r["label"], bool)]
    if bad:
        raise EvalkitError(f"{path}: {len(bad)} labels are not 0 or 1 (first: row {bad[0]})")
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
    if not qrels:
        raise EvalkitError(f"{qrels_where} has no judgements")
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


# ----------------------------------------------------------------------------- building mteb tasks
def _split_present(folder: Path, typ: str, split: str) -> bool:
    if typ == "Retrieval":
        return (folder / "qrels" / f"{split}.tsv").is_file()
    if typ == "Clustering":
        return (folder / f"{split}.json").is_file()
    return (folder / f"{split}.jsonl").is_file()


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


_HUB_STATE: dict[str, bool] = {}


def hub_offline_mode() -> bool:
    return any(os.environ.get(v, "0") not in ("0", "", "false", "False") for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face hub answers a TCP connect (asked once per process)."""
    import socket
    from urllib.parse import urlparse

    url = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    if url not in _HUB_STATE:
        host = urlparse(url).hostname or "huggingface.co"
        try:
            socket.create_connection((host, 443), timeout=timeout).close()
            _HUB_STATE[url] = True
        except OSError:
            _HUB_STATE[url] = False
    return _HUB_STATE[url]


def build_task(spec: TaskSpec):
    """The mteb task for `spec`, with local data loaded (hub tasks load their own data when run)."""
    import mteb

    if spec.source == "air-bench":
        from evalkit import air_bench

        return air_bench.build(spec)
    if spec.source == "hub":
        if not hub_offline_mode() and not hub_reachable():
            raise EvalkitError(
                f"task {spec.name} loads its data from the Hugging Face hub, which cannot be reached: "
                "mirror it into the data folder (EVALKIT_DATA), or set HF_HUB_OFFLINE=1 if it is in your HF cache"
            )
        try:
            kw = {}
            if spec.subsets:
                kw["hf_subsets"] = spec.subsets
            if spec.eval_splits:
                kw["eval_splits"] = spec.eval_splits
            return mteb.get_task(spec.mteb_name, **kw)
        except Exception as e:
            raise EvalkitError(f"task {spec.name}: mteb does not know {spec.mteb_name!r} ({e})") from e

    folder = data_dir_of(spec)
    if spec.mteb_task is not None or spec.data_dir is None:
        try:
            base = mteb.get_task(spec.mteb_name)
        except Exception as e:
            raise EvalkitError(f"task {spec.name}: mteb does not know {spec.mteb_name!r}: give a valid `mteb_task:` or none") from e
        if base.metadata.type != spec.type and not (spec.type == "Retrieval" and base.metadata.type == "Reranking"):
            raise EvalkitError(f"task {spec.name} is declared {spec.type} but mteb's {spec.mteb_name} is {base.metadata.type}")
        multilingual = base.metadata.is_multilingual
    else:
        base, multilingual = None, False

    if multilingual:
        subsets = spec.subsets or sorted(p.name for p in folder.iterdir() if p.is_dir())
        unknown = [s for s in subsets if s not in base.hf_subsets]
        if unknown:
            raise EvalkitError(f"task {spec.name}: subsets {unknown} are not among mteb's {spec.mteb_name} subsets")
        folders = {s: folder / s for s in subsets}
        for s, f in folders.items():
            if not f.is_dir():
                raise EvalkitError(f"task {spec.name}: missing subset folder {f}")
    else:
        subsets = ["default"]
        folders = {"default": folder}

    wanted = spec.eval_splits or (list(base.metadata.eval_splits) if base is not None else ["test", "validation", "dev"])
    first = next(iter(folders.values()))
    splits = [s for s in wanted if _split_present(first, spec.type, s)]
    if not splits:
        expected = ", ".join(wanted)
        raise EvalkitError(f"task {spec.name}: no data file for any of its splits ({expected}) in {first}")
    if spec.eval_splits:
        for s in spec.eval_splits:
            if not _split_present(first, spec.type, s):
                raise EvalkitError(f"task {spec.name}: missing data file for split {s} in {first}")

    if base is None:
        task = generic_task(spec, splits)
    else:
        kw: dict[str, Any] = {"eval_splits": splits}
        if multilingual:
            kw["hf_subsets"] = subsets
        task = mteb.get_task(spec.mteb_name, **kw)
        if spec.name != spec.mteb_name:
            task.metadata = task.metadata.model_copy(update={"name": spec.name})

    data = {s: _load_subset(task, spec.type, f, splits) for s, f in folders.items()}
    if spec.type == "Retrieval":
        task.dataset = data
    else:
        task.dataset = data if multilingual else data["default"]
    task.data_loaded = True
    return task


def _load_subset(task, typ: str, folder: Path, splits: list[str]):
    from datasets import DatasetDict

    if typ == "Retrieval":
        return {s: load_retrieval(folder, s) for s in splits}
    if typ == "STS":
        lo, hi = getattr(task, "min_score", 0), getattr(task, "max_score", 5)
        return DatasetDict({s: load_sts(folder, s, lo, hi) for s in splits})
    if typ == "PairClassification":
        return DatasetDict({s: load_pairs(folder, s) for s in splits})
    if typ == "Clustering":
        return DatasetDict({s: load_clustering(folder, s) for s in splits})
    if typ == "Classification":
        needed = list(dict.fromkeys([getattr(task, "train_split", "train"), *splits]))
        return DatasetDict({s: load_classification(folder, s) for s in needed})
    raise EvalkitError(f"task type {typ} cannot be read from a local folder yet: give `source: hub`")
