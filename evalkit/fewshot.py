"""Few-shot (in-context) evaluation: example pools, selectors, query prefixes, zero- vs few-shot runs.

Pool      where a task's examples come from (`fewshot:` in the task's YAML):
            file: PATH      FlagEmbedding's format, a JSON list (or JSONL) of {instruct, query, response};
                            a missing instruct means the task's instruction
            split: NAME     a rule over another split of the task's own data:
                              Retrieval            a query and its (most) relevant passage
                              Classification       the text and its label name (default split: train)
                              Clustering           the sentence and its label name
                              STS                  sentence1 and sentence2 of a pair scored >= min_score
                                                   (default: 80% of the task's scale, 4 of 0-5)
                              PairClassification   sentence1 and sentence2 of a positive pair
          An English AIR-Bench 24.04 task (no train split) without `fewshot:` has bge-en-icl's authors'
          3 examples as its pool (evalkit.models.recipes.air_bench_examples).
          An example never comes from a split being evaluated: a pool split that is evaluated is an
          error, pool items whose text is also an evaluated text are dropped (a file that holds one
          is an error), and every example handed to a query is checked again (`ExamplePool.check`).
Selector  which K examples a given input gets: `authors` (the model recipe's own examples of the task,
          in their file order: bge-en-icl's research/llm_dense_retriever/examples; the default for a model
          whose recipe has them), `fixed` (the task's examples file, in file order), `first_n`
          (the pool's first K), `random` (K items drawn once per task and subset with the seed, as
          bge-en-icl's evaluation samples its demonstrations per task), all three the same for every
          input; `similar` (per input: the K pool items nearest to it under a selector embedder,
          all-MiniLM-L6-v2 by default; the nearest is put last, next to the input). No input is ever
          its own example (it gets the next candidate instead), and no example appears twice.
Prefix    bge-en-icl's: `<instruct>{i}\\n<query>{q}\\n<response>{r}` joined by a blank line, plus one.
          An in-context model (catalog kind icl-embedder) gets exactly the seeds' query format (see
          evalkit.models.icl). Any other embedder gets the same prefix before its usual input; where
          prefix + input would pass the model's max length, the examples farthest from the input are
          dropped first, so the input itself is never truncated away (counted as `fewer_than_k`).
Inputs    what mteb encodes with prompt_type "query" or None gets examples; documents never do.
          As in FlagEmbedding's ICL evaluation, every input of a symmetric task is a query: both
          sentences of STS and pair tasks, clustering sentences, and for classification BOTH the
          training texts of mteb's logistic regression and the evaluated texts (so the classifier is
          trained and tested in the same input format). Training texts draw their examples from the
          training split too, never themselves.
Settings  each (K, selector, seed, selector model) is its own result set: zero-shot in the plain
          result folder, few-shot in results/<model>/<rev>/experiments/<variant>/ (e.g.
          `fewshot-3-random-s42`), with K, selector, seed, selector model, pool source and counts
          under "evalkit" -> "fewshot" in every result file. `evalkit run --fewshot-compare 0,3,5`
          runs the settings one after the other and prints evalkit.report.compare's table (one row
          per setting, deltas to the first = zero-shot). Documents are the same texts in every
          setting, so the embedding cache encodes them once.
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from evalkit.errors import EvalkitError
from evalkit.models.icl import EXAMPLE_FORMAT, examples_prefix
from evalkit.tasks.registry import SEARCH_TYPES

log = logging.getLogger("evalkit")

SELECTORS = ("fixed", "first_n", "random", "similar", "authors")
DEFAULT_SELECTOR_MODEL = "all-MiniLM-L6-v2"
POOL_KEYS = ("file", "split", "min_score")
SYMMETRIC = ("STS", "PairClassification")  # the example's response is an input text too


def norm(text) -> str:
    """The key under which two texts count as the same input (whitespace and case folded)."""
    return " ".join(str(text).split()).casefold()


@dataclass(frozen=True)
class Example:
    query: str
    response: str
    instruct: str | None = None
    split: str | None = None  # the task split it was taken from; None for an examples file
    row: int | None = None  # its row in that split (or its index in the file)
    source: str = ""

    def as_dict(self) -> dict:
        return {"instruct": self.instruct, "query": self.query, "response": self.response}


# ----------------------------------------------------------------------------- pools
@dataclass
class ExamplePool:
    task: str
    subset: str
    items: list[Example]
    source: str  # "file:<path>" | "split:<name>"
    eval_splits: tuple[str, ...]
    eval_keys: frozenset = frozenset()  # norm() of every evaluated input text
    symmetric: bool = False
    dropped: int = 0  # rule items left out because their text is an evaluated text

    def check(self, ex: Example) -> None:
        """Raise EvalkitError if `ex` comes from an evaluated split or is an evaluated text."""
        if ex.split is not None and ex.split in self.eval_splits:
            raise EvalkitError(
                f"task {self.task}: a few-shot example (row {ex.row}) comes from the evaluated split {ex.split!r}: "
                "examples must come from another split"
            )
        texts = (ex.query, ex.response) if self.symmetric else (ex.query,)
        if any(norm(t) in self.eval_keys for t in texts):
            raise EvalkitError(
                f"task {self.task}: a few-shot example ({ex.source or 'pool'} row {ex.row}: {ex.query[:60]!r}) is a text of the "
                f"evaluated split(s) {', '.join(self.eval_splits)}: examples must come from another split"
            )

    def describe(self) -> dict:
        return {"source": self.source, "size": len(self.items), "dropped_as_evaluated_text": self.dropped}


def _multilingual(task) -> bool:
    return bool(getattr(task.metadata, "is_multilingual", False))


def _eval_splits(task) -> list[str]:
    return list(getattr(task, "eval_splits", None) or task.metadata.eval_splits)


def _split_data(ts, task, subset: str, split: str):
    """One split of the task's data in mteb's shape: from the loaded task when it holds the split,
    else from the local data folder."""
    from evalkit.tasks import formats as T
    from evalkit.tasks.build import split_present
    from evalkit.tasks.registry import data_dir_of

    ds = task.dataset if getattr(task, "data_loaded", False) else None
    if ds is not None:
        node = ds.get(subset) if ts.type == "Retrieval" or _multilingual(task) else ds
        if node is not None and split in node:
            return node[split]
    if ts.source != "local":
        raise EvalkitError(
            f"task {ts.name}: its split {split!r} is not loaded from the hub: give the task a few-shot examples file (`fewshot: {{file: ...}}`)"
        )
    folder = data_dir_of(ts)
    if _multilingual(task) and (folder / subset).is_dir():
        folder = folder / subset
    if not split_present(folder, ts.type, split):
        raise EvalkitError(
            f"task {ts.name}: no {split!r} split in {folder} to draw few-shot examples from: "
            "set `fewshot: {split: ...}` to a split that exists, or give an examples file (`fewshot: {file: ...}`)"
        )
    if ts.type == "Classification":
        return T.load_classification(folder, split)
    if ts.type == "STS":
        return T.load_sts(folder, split, getattr(task, "min_score", 0), getattr(task, "max_score", 5))
    if ts.type == "PairClassification":
        return T.load_pairs(folder, split)
    if ts.type == "Clustering":
        return T.load_clustering(folder, split)
    if ts.type == "Retrieval":
        return T.load_retrieval(folder, split)
    raise EvalkitError(f"task {ts.name}: few-shot examples for {ts.type} tasks need an examples file (`fewshot: {{file: ...}}`)")


def _flat(values) -> list[str]:
    out = []
    for v in values:
        if isinstance(v, (list, tuple)):
            out.extend(str(x) for x in v)
        else:
            out.append(str(v))
    return out


def _column(data, name):
    return list(data[name])


def _label_names(data, col: str, values) -> list[str]:
    feat = getattr(data, "features", {}).get(col) if hasattr(data, "features") else None
    names = getattr(feat, "names", None)
    if names:
        return [names[v] if isinstance(v, (int, np.integer)) and 0 <= int(v) < len(names) else str(v) for v in values]
    return [str(v) for v in values]


def input_texts(ts, task, data) -> list[str]:
    """The texts of one split that mteb encodes as queries / symmetric inputs."""
    if ts.type in SEARCH_TYPES:  # the queries this split judges (a BEIR queries file serves every split)
        judged = {str(q) for q, docs in (data["relevant_docs"] or {}).items() if docs}
        texts = _column(data["queries"], "text")
        if "instruction" in getattr(data["queries"], "column_names", ()):  # as mteb reads a query with its instruction
            texts = [t if i is None else f"{t} {i}" for t, i in zip(texts, _column(data["queries"], "instruction"))]
        return [str(t) for q, t in zip(_column(data["queries"], "id"), texts) if str(q) in judged]
    if ts.type in ("Classification", "MultilabelClassification", "Regression", "ZeroShotClassification"):
        return _flat(_column(data, getattr(task, "input_column_name", "text")))
    if ts.type == "Clustering":
        return _flat(_column(data, "sentences"))
    if ts.type in ("STS", "BitextMining"):
        c1, c2 = getattr(task, "column_names", ("sentence1", "sentence2"))
        return _flat(_column(data, c1)) + _flat(_column(data, c2))
    if ts.type == "PairClassification":
        return _flat(_column(data, getattr(task, "input1_column_name", "sentence1"))) + _flat(_column(data, getattr(task, "input2_column_name", "sentence2")))
    return []


def rule_examples(ts, task, data, split: str, cfg: dict) -> list[Example]:
    """The examples the task type's rule makes of one (non-evaluated) split."""
    src = f"split:{split}"
    if ts.type == "Classification":
        tcol, lcol = getattr(task, "input_column_name", "text"), getattr(task, "label_column_name", "label")
        texts, labels = _column(data, tcol), _column(data, lcol)
        names = _label_names(data, lcol, labels)
        return [Example(str(t), n, split=split, row=i, source=src) for i, (t, n) in enumerate(zip(texts, names))]
    if ts.type == "Clustering":
        texts, labels = _column(data, "sentences"), _column(data, "labels")
        names = _label_names(data, "labels", labels)
        return [Example(str(t), n, split=split, row=i, source=src) for i, (t, n) in enumerate(zip(texts, names))]
    if ts.type == "STS":
        lo, hi = float(getattr(task, "min_score", 0)), float(getattr(task, "max_score", 5))
        thr = float(cfg.get("min_score", lo + 0.8 * (hi - lo)))
        c1, c2 = getattr(task, "column_names", ("sentence1", "sentence2"))
        rows = zip(_column(data, c1), _column(data, c2), _column(data, "score"))
        return [Example(str(a), str(b), split=split, row=i, source=src) for i, (a, b, s) in enumerate(rows) if float(s) >= thr]
    if ts.type == "PairClassification":
        c1, c2 = getattr(task, "input1_column_name", "sentence1"), getattr(task, "input2_column_name", "sentence2")
        lcol = getattr(task, "label_column_name", "labels")
        rows = zip(_column(data, c1), _column(data, c2), _column(data, lcol))
        return [Example(str(a), str(b), split=split, row=i, source=src) for i, (a, b, lab) in enumerate(rows) if int(lab) == 1]
    if ts.type == "Retrieval":
        corpus, queries, rel = data["corpus"], data["queries"], data["relevant_docs"]
        docs = {}
        titles = _column(corpus, "title") if "title" in corpus.column_names else [""] * len(corpus)
        for did, title, text in zip(_column(corpus, "id"), titles, _column(corpus, "text")):
            docs[str(did)] = (str(title or "") + " " + str(text)).strip()
        out = []
        for i, (qid, q) in enumerate(zip(_column(queries, "id"), _column(queries, "text"))):
            judged = [(s, d) for d, s in (rel.get(str(qid)) or {}).items() if s > 0 and d in docs]
            if judged:
                best = max(judged, key=lambda x: x[0])[1]
                out.append(Example(str(q), docs[best], split=split, row=i, source=src))
        return out
    raise EvalkitError(f"task {ts.name}: no few-shot rule for {ts.type} tasks: give an examples file (`fewshot: {{file: ...}}`)")


def resolve_examples_file(ts, name: str) -> Path:
    from evalkit.tasks import data_root, tasks_dir

    p = Path(name).expanduser()
    if p.is_absolute():
        cands = [p]
    else:
        bases = [Path(ts.origin).parent if ts.origin else None, tasks_dir(), data_root(), Path.cwd()]
        cands = [b / p for b in bases if b is not None]
    for c in cands:
        if c.is_file():
            return c
    raise EvalkitError(f"task {ts.name}: few-shot examples file {name} not found (looked in {', '.join(str(c.parent) for c in cands)})")


def load_examples_file(path: Path) -> list[Example]:
    """FlagEmbedding's examples: a JSON list (or JSON lines) of {instruct?, query, response} (or {query, pos},
    its AIR-Bench examples' form, `pos` being the response)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise EvalkitError(f"cannot read few-shot examples file {path} ({e.strerror})") from e
    try:
        doc = json.loads(text)
        rows = doc if isinstance(doc, list) else [doc] if isinstance(doc, dict) else None  # a dict: JSON lines of one line
    except json.JSONDecodeError:
        try:
            rows = [json.loads(line) for line in text.splitlines() if line.strip()]
        except json.JSONDecodeError as e:
            raise EvalkitError(f"{path}: not JSON or JSON lines ({e.msg} at line {e.lineno})") from None
    if not rows:
        raise EvalkitError(f"{path}: expected a non-empty JSON list of {{instruct, query, response}} objects")
    out = []
    for i, r in enumerate(rows):
        response = r.get("response", r.get("pos")) if isinstance(r, dict) else None  # `pos`: FlagEmbedding's AIR-Bench examples
        if not isinstance(r, dict) or not isinstance(r.get("query"), str) or not isinstance(response, str):
            raise EvalkitError(f"{path}: example {i} needs string `query` and `response` (or `pos`) fields (and an optional `instruct`)")
        instruct = r.get("instruct")
        out.append(Example(r["query"], response, instruct if isinstance(instruct, str) else None, split=None, row=i, source=f"file:{path}"))
    return out


def authors_pool(ts) -> Path | None:
    """The few-shot pool of a task without `fewshot:` that has no split to draw from, where a model's
    authors ship one: English AIR-Bench 24.04 (no train split) -> bge-en-icl's authors' 3 examples;
    a model without an instruction of its own gets theirs with them (catalog.ICL_DEFAULT: their AIR-Bench
    runner gives one instruction to every dataset)."""
    if ts.fewshot or not getattr(ts, "air_bench", None):
        return None
    from evalkit.models.recipes import air_bench_examples

    return air_bench_examples(ts)


def build_pools(ts, task, examples_file: Path | None = None) -> dict[str, ExamplePool]:
    """One pool per subset that the task evaluates (see the module doc for the rules); `examples_file`
    (a recipe's own examples of the task) takes the place of the task's `fewshot:` pool."""
    cfg = {"file": str(examples_file)} if examples_file is not None else dict(ts.fewshot or {})
    if not cfg and authors_pool(ts) is not None:
        cfg = {"file": str(authors_pool(ts))}
    unknown = sorted(set(cfg) - set(POOL_KEYS))
    if unknown:
        raise EvalkitError(f"task {ts.name}: unknown `fewshot:` keys {unknown}: use {', '.join(POOL_KEYS)}")
    if "file" in cfg and "split" in cfg:
        raise EvalkitError(f"task {ts.name}: `fewshot:` gives both `file` and `split`: choose one pool")
    if not getattr(task, "data_loaded", False):
        task.load_data()
    evals = _eval_splits(task)
    split = cfg.get("split")
    if "file" not in cfg and split is None:
        if ts.type == "Classification":
            split = getattr(task, "train_split", "train")
        else:
            raise EvalkitError(
                f"task {ts.name} has no few-shot pool: add `fewshot: {{split: NAME}}` (a split other than {', '.join(evals)}) "
                "or `fewshot: {file: examples.json}` to its YAML"
            )
    if split is not None and split in evals:
        raise EvalkitError(
            f"task {ts.name}: the few-shot pool split {split!r} is evaluated in this run ({', '.join(evals)}): "
            "examples must come from another split"
        )
    file_items = load_examples_file(resolve_examples_file(ts, cfg["file"])) if "file" in cfg else None
    subsets = list(task.hf_subsets) if (_multilingual(task) or ts.type == "Retrieval") else ["default"]
    pools = {}
    for subset in subsets:
        keys = set()
        for s in evals:
            keys.update(norm(t) for t in input_texts(ts, task, _split_data(ts, task, subset, s)))
        symmetric = ts.type in SYMMETRIC
        pool = ExamplePool(ts.name, subset, [], "", tuple(evals), frozenset(keys), symmetric)
        if file_items is not None:
            pool.items, pool.source = list(file_items), file_items[0].source
            for ex in pool.items:
                pool.check(ex)  # a curated file that holds an evaluated text is an error, not silently fixed
        else:
            items = rule_examples(ts, task, _split_data(ts, task, subset, split), split, cfg)
            kept = [ex for ex in items if not any(norm(t) in keys for t in ((ex.query, ex.response) if symmetric else (ex.query,)))]
            pool.items, pool.source, pool.dropped = kept, f"split:{split}", len(items) - len(kept)
            if pool.dropped:
                log.info("%s/%s: %d pool items dropped: their text is an evaluated text", ts.name, subset, pool.dropped)
        if not pool.items:
            raise EvalkitError(f"task {ts.name}: the few-shot pool ({pool.source}) of subset {subset} is empty")
        pools[subset] = pool
    return pools


# ----------------------------------------------------------------------------- selectors
class Selector:
    """Picks `k` examples of a pool for one input text; never the input itself, never one twice."""

    name = ""

    def __init__(self, k: int, seed: int = 42):
        self.k, self.seed = int(k), int(seed)

    def prepare(self, pool: ExamplePool, texts: Sequence[str] = ()) -> None:
        """Called once per pool before selection, with the input texts expected (may be empty)."""

    def candidates(self, pool: ExamplePool, text: str):
        """Pool indices in preference order (may be lazy)."""
        raise NotImplementedError

    def select(self, pool: ExamplePool, text: str) -> list[Example]:
        me = norm(text)
        seen, out = set(), []
        for i in self.candidates(pool, text):
            ex = pool.items[i]
            key = norm(ex.query)
            if key == me or key in seen:
                continue
            seen.add(key)
            out.append(ex)
            if len(out) == self.k:
                break
        return out


class FixedSelector(Selector):
    """The task's examples file, in file order: FlagEmbedding's `examples_for_task`."""

    name = "fixed"

    def prepare(self, pool, texts=()):
        if not pool.source.startswith("file:"):
            raise EvalkitError(
                f"task {pool.task}: selector `fixed` uses the task's examples file (`fewshot: {{file: ...}}`); its pool is {pool.source}: "
                "use --selector first_n, random or similar"
            )

    def candidates(self, pool, text):
        return range(len(pool.items))


class AuthorsSelector(FixedSelector):
    """The model recipe's own examples of the task, in their file order (bge-en-icl's authors')."""

    name = "authors"


def authors_examples(spec, ts) -> Path:
    """The recipe's examples file of task `ts`, or one line saying there is none."""
    from evalkit.models.recipes import examples_file

    f = examples_file(spec, ts)
    if f is None:
        what = f"{spec.name}'s recipe ({spec.recipe}) has no examples of task {ts.name}" if spec.examples else f"{spec.name}'s recipe ({spec.recipe}) has no examples of its own"
        raise EvalkitError(f"--selector authors: {what}: use --selector random, first_n or similar (the task's own pool)")
    return f


class FirstNSelector(Selector):
    """The pool's first K items (file order, or split order for a rule-built pool)."""

    name = "first_n"

    def candidates(self, pool, text):
        return range(len(pool.items))


class RandomSelector(Selector):
    """K pool items drawn once per task and subset (seeded), the same for every input, as
    bge-en-icl's evaluation samples its demonstrations per task. An input that is itself one of them
    gets the next item of the same seeded draw instead."""

    name = "random"

    def __init__(self, k: int, seed: int = 42):
        super().__init__(k, seed)
        self.orders: dict[int, np.ndarray] = {}

    def prepare(self, pool, texts=()):
        digest = int.from_bytes(hashlib.sha256(f"{pool.task}/{pool.subset}".encode()).digest()[:8], "little")
        self.orders[id(pool)] = np.random.default_rng([self.seed, digest]).permutation(len(pool.items))

    def candidates(self, pool, text):
        if id(pool) not in self.orders:
            self.prepare(pool)
        return (int(i) for i in self.orders[id(pool)])


class SimilarSelector(Selector):
    """The K pool items nearest to the input under a selector embedder (cosine); nearest last."""

    name = "similar"

    def __init__(self, k: int, seed: int = 42, embed: Callable[[list[str]], np.ndarray] | None = None):
        super().__init__(k, seed)
        if embed is None:
            raise EvalkitError("selector `similar` needs a selector embedder")
        self.embed = embed
        self.vectors: dict[str, np.ndarray] = {}
        self.pool_matrix: dict[int, np.ndarray] = {}
        self.misses = 0

    def _vecs(self, texts: Sequence[str]) -> None:
        todo = list(dict.fromkeys(t for t in texts if t not in self.vectors))
        if todo:
            vecs = np.asarray(self.embed(todo), dtype=np.float32)
            vecs = vecs / np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
            self.vectors.update(zip(todo, vecs))

    def prepare(self, pool, texts=()):
        self._vecs([ex.query for ex in pool.items] + list(texts))
        self.pool_matrix[id(pool)] = np.stack([self.vectors[ex.query] for ex in pool.items])

    def candidates(self, pool, text):
        if text not in self.vectors:
            self.misses += 1
            self._vecs([text])
        sims = self.pool_matrix[id(pool)] @ self.vectors[text]
        m = min(len(sims), self.k + 8)
        top = np.argpartition(-sims, m - 1)[:m] if m < len(sims) else np.arange(len(sims))
        order = sorted(top.tolist(), key=lambda i: (-float(sims[i]), i))
        yield from order
        if m < len(sims):  # only reached when the nearest held the input itself or duplicates
            first = set(order)
            yield from sorted((i for i in range(len(sims)) if i not in first), key=lambda i: (-float(sims[i]), i))

    def select(self, pool, text):
        return super().select(pool, text)[::-1]  # nearest example last, next to the input


def make_selector(name: str, k: int, seed: int = 42, embed: Callable | None = None) -> Selector:
    classes = {"fixed": FixedSelector, "first_n": FirstNSelector, "random": RandomSelector, "similar": SimilarSelector, "authors": AuthorsSelector}
    if name not in classes:
        raise EvalkitError(f"unknown selector {name!r}: use one of {', '.join(SELECTORS)}")
    if name == "similar":
        return SimilarSelector(k, seed, embed)
    return classes[name](k, seed)


# ----------------------------------------------------------------------------- settings
def _safe(name: str) -> str:
    base = Path(name).name if ("/" in name and Path(name).expanduser().exists()) else name.replace("/", "__")
    return re.sub(r"[^A-Za-z0-9._-]+", "_", base)


@dataclass(frozen=True)
class Setting:
    """One few-shot setting: K examples per input, chosen by `selector`."""

    k: int
    selector: str = "random"
    seed: int = 42
    selector_model: str | None = None  # `similar` only; None = all-MiniLM-L6-v2

    def __post_init__(self):
        if self.k < 0:
            raise EvalkitError(f"few-shot K must be 0 or more, got {self.k}")
        if self.selector not in SELECTORS:
            raise EvalkitError(f"unknown selector {self.selector!r}: use one of {', '.join(SELECTORS)}")

    @property
    def model(self) -> str | None:
        return (self.selector_model or DEFAULT_SELECTOR_MODEL) if self.selector == "similar" else None

    @property
    def variant(self) -> str | None:
        """The result-set name: None (the plain folder) for zero-shot."""
        if self.k == 0:
            return None
        v = f"fewshot-{self.k}-{self.selector}"
        if self.selector == "random":
            v += f"-s{self.seed}"
        if self.selector == "similar":
            v += "-" + _safe(self.model)
        return v

    @property
    def label(self) -> str:
        if self.k == 0:
            return "0-shot"
        extra = f" (seed {self.seed})" if self.selector == "random" else f" ({_safe(self.model)})" if self.selector == "similar" else ""
        return f"{self.k}-shot {self.selector}{extra}"


class Prefixer:
    """The adapter's `prefix_fn` for one task: (text, formatted, task_metadata, hf_split, hf_subset) -> input."""

    def __init__(self, setting: Setting, pools: dict[str, ExamplePool], selector: Selector | None, instruct: str | None,
                 embedder, icl: bool, info: dict, max_length: int | None = None, record: bool = True):
        self.setting, self.pools, self.selector, self.instruct = setting, pools, selector, instruct
        self.embedder, self.icl, self.info = embedder, icl, info
        self.max_length = max_length
        self._tok = None
        self.records: list[tuple[str, str, str, tuple[Example, ...]]] = [] if record else None  # (split, subset, text, examples)

    def _tokens(self, text: str) -> int:
        if self._tok is None:
            from evalkit.models.loading import load_tokenizer

            self._tok = load_tokenizer(self.embedder.path, None, self.embedder.config.trust_remote_code)
        return len(self._tok(text, add_special_tokens=True, truncation=False)["input_ids"])

    def examples_for(self, text: str, hf_split: str, hf_subset: str) -> list[Example]:
        if self.setting.k == 0:
            return []
        pool = self.pools.get(hf_subset) or (next(iter(self.pools.values())) if len(self.pools) == 1 else None)
        if pool is None:
            raise EvalkitError(f"task {self.info.get('task')}: no few-shot pool for subset {hf_subset!r}")
        exs = self.selector.select(pool, text)
        for ex in exs:
            pool.check(ex)  # the guard, for every example handed out
        return exs

    def __call__(self, text: str, formatted: str, task_metadata=None, hf_split: str = "", hf_subset: str = "") -> str:
        exs = self.examples_for(text, hf_split, hf_subset)
        if self.icl:
            out = self.embedder.icl_query(formatted, examples_prefix(exs, self.instruct))
        else:
            out = examples_prefix(exs, self.instruct) + formatted
            while exs and self.max_length and self._tokens(out) > self.max_length:
                exs = exs[1:]  # the example farthest from the input goes first
                out = examples_prefix(exs, self.instruct) + formatted
        st = self.info["stats"]
        st["inputs"][hf_split] = st["inputs"].get(hf_split, 0) + 1
        for ex in exs:
            key = ex.split or "file"
            st["example_sources"][key] = st["example_sources"].get(key, 0) + 1
        if len(exs) < self.setting.k:
            st["fewer_than_k"] += 1
        if self.records is not None:
            self.records.append((hf_split, hf_subset, text, tuple(exs)))
        if "sample" not in self.info and exs:
            self.info["sample"] = {"split": hf_split, "input": text[:300], "model_input": out[:2000]}
        return out


class FewshotFactory:
    """One setting's prefixes: (task_spec, mteb_task) -> Prefixer, the adapter's `prefix_fn`.

    The Prefixer's `info` holds the setting and the task's pool, and the selection counts filled in
    while mteb encodes; it goes into the result file under "evalkit" -> "fewshot".
    """

    def __init__(self, setting: Setting, spec, embedder, selector_embedder=None):
        self.setting, self.spec, self.embedder = setting, spec, embedder
        self.selector_embedder = selector_embedder
        self.icl = spec.kind == "icl-embedder"
        if self.icl and not hasattr(embedder, "icl_query"):
            raise EvalkitError(f"{spec.name} is an in-context embedder: run it with evalkit.models.icl.ICLEmbedder")
        self.prefixers: dict[str, Prefixer] = {}

    def _selector_meta(self) -> dict | None:
        if self.setting.selector != "similar" or self.setting.k == 0:
            return None
        e = self.selector_embedder
        return {
            "name": self.setting.model,
            "model": getattr(e, "namespace_fields", {}).get("model") if e is not None else None,
            "revision": getattr(e, "revision", None),
        }

    def __call__(self, ts, task) -> Prefixer:
        st = self.setting
        info = {
            "k": st.k, "selector": st.selector if st.k else None, "seed": st.seed, "selector_model": self._selector_meta(),
            "input_format": "icl" if self.icl else "prefix", "example_format": EXAMPLE_FORMAT,
            "example_order": "nearest last" if st.selector == "similar" else "selector order",
            "task": ts.name, "pool": {}, "eval_splits": _eval_splits(task),
            "stats": {"inputs": {}, "example_sources": {}, "fewer_than_k": 0},
        }
        from evalkit.models.recipes import instruction_for

        instruct = instruction_for(self.spec, ts.name, ts.type, ts.instruction) or ts.instruction or self.spec.query_instruction
        if instruct is None and authors_pool(ts) is not None:
            from evalkit.models.catalog import ICL_DEFAULT

            instruct = ICL_DEFAULT  # the one instruction bge-en-icl's AIR-Bench runner gives every dataset, with these examples
        pools, selector = {}, None
        if st.k > 0:
            pools = build_pools(ts, task, authors_examples(self.spec, ts) if st.selector == "authors" else None)
            info["pool"] = {s: p.describe() for s, p in pools.items()}
            if instruct is None and any(ex.instruct is None for p in pools.values() for ex in p.items):
                raise EvalkitError(f"task {ts.name} has no instruction for its few-shot examples: add `instruction:` to its YAML")
            embed = None
            if st.selector == "similar":
                sel = self.selector_embedder
                if sel is None:
                    raise EvalkitError("selector `similar` needs a selector embedder (--selector-model)")
                embed = lambda texts: sel.embed(list(texts))  # noqa: E731
            selector = make_selector(st.selector, st.k, st.seed, embed)
            for subset, pool in pools.items():
                expected = []
                if st.selector == "similar":  # batch the selector's vectors of every evaluated input up front
                    for s in info["eval_splits"]:
                        expected += input_texts(ts, task, _split_data(ts, task, subset, s))
                selector.prepare(pool, expected)
        max_length = None if self.icl else getattr(self.embedder, "max_length", None)
        p = Prefixer(st, pools, selector, instruct, self.embedder, self.icl, info, max_length)
        self.prefixers[ts.name] = p
        return p


# ----------------------------------------------------------------------------- the command line
def parse_ks(text: str) -> list[int]:
    try:
        ks = [int(x) for x in str(text).split(",") if x.strip()]
    except ValueError:
        raise EvalkitError(f"--fewshot-compare {text!r}: give example counts such as 0,3,5") from None
    if not ks or any(k < 0 for k in ks):
        raise EvalkitError(f"--fewshot-compare {text!r}: give example counts (0 or more) such as 0,3,5")
    return list(dict.fromkeys(ks))


def settings_from_args(args, spec) -> list[Setting]:
    k, compare = getattr(args, "fewshot", None), getattr(args, "fewshot_compare", None)
    sel_arg, sel_model = getattr(args, "selector", None), getattr(args, "selector_model", None)
    seed = int(getattr(args, "seed", 42))
    if k is not None and compare:
        raise EvalkitError("give --fewshot K or --fewshot-compare K1,K2,..., not both")
    default = "authors" if getattr(spec, "examples", None) else "random"  # a recipe with its own examples uses them
    selectors = [s.strip() for s in (sel_arg or default).split(",") if s.strip()]
    for s in selectors:
        if s not in SELECTORS:
            raise EvalkitError(f"unknown selector {s!r}: use one of {', '.join(SELECTORS)}")
    if k is None and not compare:
        if sel_arg or sel_model:
            raise EvalkitError("--selector and --selector-model need --fewshot K or --fewshot-compare K1,K2,...")
        return [Setting(0, seed=seed)]
    if sel_model and "similar" not in selectors:
        raise EvalkitError("--selector-model names the embedder of --selector similar")
    ks = parse_ks(compare) if compare else [int(k)]
    if k is not None and len(selectors) > 1:
        raise EvalkitError("--fewshot K takes one --selector; compare several with --fewshot-compare 0,K --selector random,similar")
    if k is not None and k < 0:
        raise EvalkitError(f"--fewshot {k}: give 0 or more examples")
    out = [Setting(0, seed=seed)] if 0 in ks else []
    out += [Setting(x, s, seed, sel_model if s == "similar" else None) for x in ks if x > 0 for s in selectors]
    return out
