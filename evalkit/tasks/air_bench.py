"""AIR-Bench datasets as mteb retrieval tasks, read and scored as AIR-Bench's own package does.

The task table (tasks/air-bench.yaml) is air-benchmark 0.1.0's `air_benchmark/tasks/`: every dataset
of AIR-Bench_24.04 and AIR-Bench_24.05 in every language, with its splits and sizes
(tests/test_air_bench_table.py holds the two equal).

Data, as the hub publishes them (the package's DataLoader):
  documents and queries  dataset `AIR-Bench/<task_type>_<domain>_<lang>`, config `<version>`, splits
                         `corpus_<name>` and `queries_<name>_<split>` (24.04: `queries_<name>`)
  judgements             `AIR-Bench/qrels-<repo>` (test; gated: the leaderboard's) and
                         `AIR-Bench/qrels-<repo>-dev` (24.05 dev, public), split `qrels_<name>_<split>`
                         (24.04: `qrels_<name>`)
with `<name>` the dataset's name, "-" written "_". A snapshot of those repositories as downloaded
(`huggingface-cli download AIR-Bench/<repo> --repo-type dataset --local-dir <data>/AIR-Bench/<repo>`)
is read as it is, files named by the hub:
  <data>/AIR-Bench/<repo>/<version>/<dataset>/corpus.jsonl, <split>_queries.jsonl
  <data>/AIR-Bench/qrels-<repo>[-dev]/<version>/<dataset>/<split>_qrels.jsonl
(`<dataset>` as the table spells it, or with "_" for "-"). The hub is asked only for what has no
local copy. A split whose judgements are neither here nor given by the hub (the gated test
judgements, the leaderboard's) is searched but not scored, with one warning: its search results
are what AIR-Bench takes as a submission (`task.unjudged`; evalkit/air_bench_submission.py). A task
with no judged split at all writes a result with no scores beside its submission files.

Scoring (AIR-Bench's protocol): mteb searches the top 1000 (`k_values` up to 1000), and the metrics
are AIR-Bench's (evalkit/tasks/air_bench_metrics.py: pytrec_eval over k in 1 3 5 10 50 100 1000,
means rounded to 5 decimals, its own MRR), written over mteb's values of the same names; the main
score is the leaderboard's metric of the task type: nDCG@10 for QA, Recall@10 for Long-Doc. The
search results of each split are kept on the task (`search_results`) for the submission files
(evalkit/air_bench_submission.py).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from evalkit.errors import EvalkitError

log = logging.getLogger("evalkit")
_warned: set[tuple[str, str]] = set()

HUB_ORG = "AIR-Bench"
VERSIONS = ("AIR-Bench_24.04", "AIR-Bench_24.05")
TASK_TYPES = ("qa", "long-doc")
MAIN_METRIC = {"qa": "ndcg_at_10", "long-doc": "recall_at_10"}  # the leaderboard's columns
LANGS = {
    "en": "eng-Latn", "zh": "cmn-Hans", "ar": "ara-Arab", "bn": "ben-Beng", "de": "deu-Latn", "es": "spa-Latn",
    "fa": "fas-Arab", "fr": "fra-Latn", "hi": "hin-Deva", "id": "ind-Latn", "ja": "jpn-Jpan", "ko": "kor-Hang",
    "ru": "rus-Cyrl",
}


@dataclass(frozen=True)
class Source:
    version: str
    task_type: str  # qa | long-doc
    domain: str
    lang: str
    dataset: str
    splits: tuple[str, ...] = ("test",)

    @property
    def repo(self) -> str:
        return f"{self.task_type}_{self.domain}_{self.lang}"

    def qrels_repo(self, split: str) -> str:
        return f"qrels-{self.repo}-dev" if split == "dev" else f"qrels-{self.repo}"

    def hub_split(self, what: str, split: str | None = None) -> str:
        """The hub's split name (the package's DataLoader): corpus, queries or qrels."""
        name = self.dataset.replace("-", "_")
        if what == "corpus" or self.version == "AIR-Bench_24.04":
            return f"{what}_{name}"
        return f"{what}_{name}_{split}"

    def folder(self, root: Path, repo: str) -> Path | None:
        """<root>/AIR-Bench/<repo>/<version>/<dataset> as downloaded (the table's spelling, or "_" for "-")."""
        base = Path(root) / HUB_ORG / repo / self.version
        for name in dict.fromkeys((self.dataset, self.dataset.replace("-", "_"))):
            if (base / name).is_dir():
                return base / name
        return None

    def where(self, root: Path | None, repo: str) -> str:
        return f"{root or '<data folder>'}/{HUB_ORG}/{repo}/{self.version}/{self.dataset}"


def source_of(spec) -> Source:
    ab = spec.air_bench or {}
    missing = [k for k in ("version", "task_type", "domain", "lang", "dataset") if not ab.get(k)]
    if missing:
        raise EvalkitError(f"task {spec.name} in {spec.origin}: `air_bench:` needs {', '.join(missing)}")
    if ab["task_type"] not in TASK_TYPES:
        raise EvalkitError(f"task {spec.name}: air_bench task_type must be qa or long-doc, got {ab['task_type']!r}")
    if ab["version"] not in VERSIONS:
        raise EvalkitError(f"task {spec.name}: AIR-Bench version {ab['version']!r} unknown (use {', '.join(VERSIONS)})")
    if ab["lang"] not in LANGS:
        raise EvalkitError(f"task {spec.name}: AIR-Bench language {ab['lang']!r} unknown to evalkit (use {', '.join(LANGS)})")
    splits = tuple(spec.eval_splits or ("test",))
    return Source(str(ab["version"]), str(ab["task_type"]), str(ab["domain"]), str(ab["lang"]), str(ab["dataset"]), splits)


# ----------------------------------------------------------------------------- reading
def _hub_rows(repo: str, version: str, split: str) -> tuple[list[dict], str]:
    import datasets

    ds = datasets.load_dataset(f"{HUB_ORG}/{repo}", version, split=split)
    return [dict(r) for r in ds], f"hub {HUB_ORG}/{repo} ({version}, split {split})"


def _gated(err: BaseException) -> bool:
    text = f"{type(err).__name__} {err}".lower()
    return any(s in text for s in ("gated", "401", "403", "unauthorized", "forbidden", "authenticat"))


def _need(rows: list[dict], where: str, cols: tuple[str, ...]) -> None:
    for i, r in enumerate(rows, 1):
        miss = [c for c in cols if c not in r]
        if miss:
            raise EvalkitError(f"{where}: row {i} has no {', '.join(miss)} column (expected {', '.join(cols)})")


class _Reader:
    """Where each file of one dataset comes from: the local snapshot, else the hub."""

    def __init__(self, spec, src: Source):
        from evalkit.tasks.hub import hub_offline_mode, hub_reachable
        from evalkit.tasks.registry import data_root

        self.spec, self.src, self.root = spec, src, data_root()
        self.local = src.folder(self.root, src.repo) if self.root is not None else None
        self._hub = None if self.local is not None else (not hub_offline_mode() and hub_reachable())
        if self.local is None and not self._hub:
            raise EvalkitError(
                f"task {spec.name}: no copy at {src.where(self.root, src.repo)} and the Hugging Face hub cannot be reached: "
                f"download {HUB_ORG}/{src.repo} there as it is (huggingface-cli download {HUB_ORG}/{src.repo} --repo-type dataset "
                f"--local-dir <data folder>/{HUB_ORG}/{src.repo}), its judgements beside it as {HUB_ORG}/{src.qrels_repo(src.splits[0])}"
            )

    def hub_ok(self) -> bool:
        if self._hub is None:
            from evalkit.tasks.hub import hub_offline_mode, hub_reachable

            self._hub = not hub_offline_mode() and hub_reachable()
        return self._hub

    def texts(self, what: str, split: str | None = None) -> tuple[list[dict], str]:
        from evalkit.tasks.formats import read_jsonl

        if self.local is not None:
            path = self.local / ("corpus.jsonl" if what == "corpus" else f"{split}_queries.jsonl")
            return read_jsonl(path), str(path)
        try:
            return _hub_rows(self.src.repo, self.src.version, self.src.hub_split(what, split))
        except Exception as e:
            raise EvalkitError(
                f"task {self.spec.name}: hub {HUB_ORG}/{self.src.repo} ({self.src.version}, split {self.src.hub_split(what, split)}) "
                f"could not be loaded ({type(e).__name__}): download it into the data folder as {self.src.where(self.root, self.src.repo)}"
            ) from e

    def qrels(self, split: str) -> tuple[list[dict] | None, str]:
        """The split's judgement rows and where they came from; (None, why) where there are none to be had."""
        from evalkit.tasks.formats import read_jsonl

        repo = self.src.qrels_repo(split)
        folder = self.src.folder(self.root, repo) if self.root is not None else None
        if folder is not None and (folder / f"{split}_qrels.jsonl").is_file():
            path = folder / f"{split}_qrels.jsonl"
            return read_jsonl(path), str(path)
        local = f"{self.src.where(self.root, repo)}/{split}_qrels.jsonl"
        if not self.hub_ok():
            return None, f"no {local} and the hub cannot be reached"
        try:
            return _hub_rows(repo, self.src.version, self.src.hub_split("qrels", split))
        except Exception as e:
            if _gated(e):
                return None, (f"AIR-Bench keeps these judgements for its leaderboard ({HUB_ORG}/{repo} is gated): request access "
                              f"on the hub and log in (HF_TOKEN), or put them at {local}")
            return None, f"hub {HUB_ORG}/{repo} could not be loaded ({type(e).__name__}) and there is no {local}"


def load(spec, src: Source) -> tuple[dict, dict, dict]:
    """({split: mteb's retrieval split data}, {split: its judgements as read}) for every split of the
    dataset whose judgements are at hand, and {split: its data} for the splits to search only."""
    from evalkit.tasks.formats import retrieval_split

    reader = _Reader(spec, src)
    judged: dict[str, tuple[list[dict], str]] = {}
    for split in src.splits:
        rows, where = reader.qrels(split)
        if rows is None:
            if (spec.name, split) not in _warned:  # once per process: a task's data are read for the check and the run
                _warned.add((spec.name, split))
                log.warning("task %s: split %s is searched, not scored: %s; its search results go to the submission "
                            "files (evalkit air-bench pack)", spec.name, split, where)
        else:
            judged[split] = (rows, where)
    corpus, cwhere = reader.texts("corpus")
    _need(corpus, cwhere, ("id", "text"))
    docs = [(str(r["id"]), "", r["text"]) for r in corpus]
    out, qrels_of, unjudged, shared = {}, {}, {}, None
    for split in src.splits:
        queries, qwhere = reader.texts("queries", split)
        _need(queries, qwhere, ("id", "text"))
        qs = [(str(r["id"]), r["text"]) for r in queries]
        if split not in judged:
            unjudged[split] = retrieval_split(docs, qs, None, corpus_where=cwhere, queries_where=qwhere, corpus_dataset=shared)
            shared = unjudged[split]["corpus"]
            continue
        rows, rwhere = judged[split]
        _need(rows, rwhere, ("qid", "docid", "relevance"))
        qrels: dict[str, dict[str, int]] = {}
        for i, r in enumerate(rows, 1):
            try:
                rel = int(float(r["relevance"]))
            except (TypeError, ValueError):
                raise EvalkitError(f"{rwhere}: row {i}: relevance {r['relevance']!r} is not a number") from None
            qrels.setdefault(str(r["qid"]), {})[str(r["docid"])] = rel
        out[split] = retrieval_split(docs, qs, qrels, corpus_where=cwhere, queries_where=qwhere, qrels_where=rwhere, corpus_dataset=shared)
        shared = out[split]["corpus"]  # one corpus for every split (24.05 msmarco: 8.9 M documents)
        qrels_of[split] = {q: dict(d) for q, d in qrels.items()}
    return out, qrels_of, unjudged


# ----------------------------------------------------------------------------- the task
def _task_class(base):
    from evalkit.tasks.air_bench_metrics import K_VALUES, scores

    class AIRBenchTask(base):
        """An mteb retrieval task scored by AIR-Bench's metrics (see the module doc)."""

        k_values = K_VALUES

        def task_specific_scores(self, scores_, qrels, results, hf_split, hf_subset):
            self.search_results[hf_split] = results
            return scores(self.judgements[hf_split], results)

    return AIRBenchTask


def build(spec):
    """The mteb task for an AIR-Bench spec, data loaded."""
    import mteb.abstasks as at
    from mteb.abstasks.task_metadata import TaskMetadata

    src = source_of(spec)
    data, judgements, unjudged = load(spec, src)
    splits = [s for s in src.splits if s in data]  # mteb scores these; `unjudged` ones are searched only
    meta = TaskMetadata(
        name=spec.name,
        description=f"AIR-Bench {src.version} {src.task_type} {src.domain} ({src.lang}): {src.dataset}",
        dataset={"path": f"{HUB_ORG}/{src.repo}", "revision": src.version},
        type="Retrieval", category="t2t", modalities=["text"], eval_splits=splits, eval_langs=[LANGS[src.lang]],
        main_score=MAIN_METRIC[src.task_type],
    )
    task = type("AIRBench_" + src.task_type.replace("-", ""), (_task_class(at.AbsTaskRetrieval),), {"metadata": meta})()
    task.dataset = {"default": data}
    task.data_loaded = True
    task.judgements, task.unjudged, task.search_results, task.air_bench = judgements, unjudged, {}, src
    return task
