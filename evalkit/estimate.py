"""`evalkit run ... --dry-run`: the plan, the texts it would encode (distinct, already cached), their
tokens, and a time estimated from a rate measured on this machine. Writes nothing under --output
and nothing to the embedding cache (an existing cache is only read).

Texts per unit are those mteb encodes: a retrieval task's judged queries and its corpus (title and
text joined as mteb joins them), both sentences of STS and pair tasks, clustering sentences, and for
classification the evaluated split plus the training split (mteb draws its training samples from
it, so that count is an upper bound). Few-shot inputs carry examples that are chosen while the unit
runs: they are counted as not cached, with their tokens times (k + 1). A multi-function
embedder's modes share one network pass per text in a run (the M3 memo): the sparse unit counts as
cached the texts whose lexical weights the cache holds; the first rescoring unit (colbert, hybrid)
counts the texts the sparse unit does not encode in this run, all of them as if its candidates were
the whole corpus (an upper bound: it encodes the queries and their candidates only); later
rescoring units encode nothing. A reranker unit scores queries x top-k pairs. The rate is measured
by encoding (or scoring) a small sample of the run's own uncached inputs with the model, so the
estimate includes loading the model but no real work.
"""
from __future__ import annotations

import random
import time
from dataclasses import dataclass, field

from evalkit.errors import EvalkitError
from evalkit.plan import Plan, Unit
from evalkit.tasks.build import TRAINED
from evalkit.tasks.registry import RETRIEVAL_TYPES, SEARCH_TYPES

SAMPLE = 256


@dataclass
class UnitEstimate:
    unit: Unit
    texts: int = 0  # inputs mteb hands to the model
    distinct: int = 0
    cached: int = 0
    tokens: int = 0  # tokens of the distinct, uncached inputs (pairs for a reranker)
    pairs: int = 0
    seconds: float | None = None
    done: bool = False  # a finished result exists: a run skips this unit


@dataclass
class Estimate:
    units: list[UnitEstimate] = field(default_factory=list)
    rates: dict = field(default_factory=dict)  # model name -> tokens per second (measured)


def _inputs(unit: Unit, task, adapter) -> list[str]:
    """The model inputs of an embedder unit, formatted as the adapter formats them (no examples)."""
    from mteb.types import PromptType

    from evalkit.executors import corpus_texts
    from evalkit.fewshot import _split_data, input_texts

    ts = unit.task
    subsets = list(task.hf_subsets) if getattr(task, "hf_subsets", None) else ["default"]
    splits = list(getattr(task, "eval_splits", None) or task.metadata.eval_splits)
    if ts.type in TRAINED:
        splits = list(dict.fromkeys([getattr(task, "train_split", "train"), *splits]))
    out: list[str] = []
    kind = PromptType.query if ts.type in RETRIEVAL_TYPES else None
    for subset in subsets:
        for split in splits:
            try:
                texts = input_texts(ts, task, _split_data(ts, task, subset, split))
            except Exception:  # a split not loaded, or a task type whose inputs are not counted here (Reranking, Summarization)
                continue
            out += adapter.format_inputs(texts, task.metadata, kind, hf_split=split, hf_subset=subset)
    unjudged = [("default", split, data) for split, data in (getattr(task, "unjudged", None) or {}).items()]
    for _, split, data in unjudged:  # an AIR-Bench split searched, not scored: all its queries
        queries = [str(t) for t in data["queries"]["text"]]
        out += adapter.format_inputs(queries, task.metadata, kind, hf_split=split, hf_subset="default")
    if ts.type in SEARCH_TYPES:
        out += corpus_texts(task, adapter, extra=unjudged)
    return out


def estimate(plan: Plan) -> Estimate:
    from evalkit.evaluation import Models
    from evalkit.models.adapters import EmbeddingAdapter
    from evalkit.results import read_result
    from evalkit.tasks import build_task

    settings = plan.settings
    if settings.use_cache:
        from evalkit.cache import default_root

        root = settings.cache_dir or default_root()
        if not (root.expanduser() / "embeddings.sqlite3").is_file():
            settings = _no_cache(settings)  # nothing cached yet: do not create a cache to find that out
    models = Models(settings)
    est = Estimate()
    samples: dict[str, list] = {}
    tasks: dict[str, object] = dict(plan.read)  # what the dry run's check read already
    m3_passes: dict[tuple, dict] = {}  # (task, few-shot setting) -> what its M3 units encode in this run
    try:
        for u in plan.units:
            e = UnitEstimate(u)
            est.units.append(e)
            if not settings.overwrite and read_result(u.path) is not None:
                e.done, e.seconds = True, 0.0
                continue
            if u.task.name in plan.unreadable:
                continue
            try:
                task = tasks[u.task.name] = _loaded(u.task, tasks[u.task.name] if u.task.name in tasks else build_task(u.task))
            except EvalkitError as err:
                plan.unreadable[u.task.name] = str(err)
                continue
            if u.role in ("embed", "m3"):
                emb = models.embedder(u.model)
                adapter = EmbeddingAdapter(u.model.spec, emb, task_instructions={u.task.name: u.task.instruction} if u.task.instruction else None)
                inputs = _inputs(u, task, adapter)
                distinct = list(dict.fromkeys(inputs))
                k = u.fewshot.k if u.fewshot is not None else 0
                if u.role == "m3":
                    cached = _m3_done(models.m3(u.model), u, distinct, m3_passes.setdefault((u.task.name, u.fewshot), {}))
                else:
                    cached = emb.cache.get_many(emb.namespace, distinct) if emb.cache is not None and k == 0 else {}
                todo = [t for i, t in enumerate(distinct) if i not in cached]
                e.texts, e.distinct, e.cached = len(inputs), len(distinct), len(cached)
                e.tokens = _tokens(emb, todo) * (k + 1)
                samples.setdefault(u.model.name, []).extend(todo[:SAMPLE * 4])
            else:
                from evalkit.fewshot import _split_data, input_texts

                n_queries = 0
                for subset in (list(task.hf_subsets) if getattr(task, "hf_subsets", None) else ["default"]):
                    for split in task.eval_splits:
                        try:
                            n_queries += len(input_texts(u.task, task, _split_data(u.task, task, subset, split)))
                        except Exception:
                            pass
                e.pairs = n_queries * int(u.top_k or 0) if u.first_stage is not None else 0
        for name, texts in samples.items():
            if not texts:
                continue
            unit = next(x for x in plan.units if x.model.name == name and x.role == "embed")
            est.rates[name] = _measure(models.embedder(unit.model), texts)
        for e in est.units:
            if e.seconds is None and e.unit.role in ("embed", "m3"):
                rate = est.rates.get(e.unit.model.name)
                e.seconds = e.tokens / rate if rate else 0.0
    finally:
        models.close()
    return est


def _loaded(ts, task):
    """A hub task with its data loaded (mteb loads them when it runs): one line when they cannot be had."""
    if ts.source == "hub" and not getattr(task, "data_loaded", False):
        from evalkit.tasks.hub import hub_load_error

        try:
            task.load_data()
        except Exception as e:
            raise hub_load_error(ts, e) from e
    return task


def _m3_done(m3, unit: Unit, distinct: list[str], passes: dict) -> set[int]:
    """The inputs of an M3 unit that cost no network pass: lexical weights in the cache (the sparse
    unit), or texts an earlier M3 unit of the same task and setting encodes in this run (the memo)."""
    if unit.m3.rescores and passes.get("rescored"):
        return set(range(len(distinct)))  # the first rescoring unit's pass covers the candidates
    done: set[int] = set()
    if unit.m3.name == "sparse" and (unit.fewshot is None or unit.fewshot.k == 0):
        done = set(m3.cached_lexical(distinct))
    seen = passes.setdefault("encoded", set())
    done |= {i for i, t in enumerate(distinct) if t in seen}
    seen.update(t for i, t in enumerate(distinct) if i not in done)
    passes["rescored"] = passes.get("rescored") or unit.m3.rescores
    return done


def _no_cache(settings):
    from dataclasses import replace

    return replace(settings, use_cache=False)


def _tokens(emb, texts: list[str]) -> int:
    if not texts:
        return 0
    from evalkit.models.loading import load_tokenizer

    tok = load_tokenizer(emb.path, emb.config.padding_side, emb.config.trust_remote_code)
    ids = tok(texts, truncation=True, max_length=emb.max_length, add_special_tokens=True)["input_ids"]
    return int(sum(len(x) for x in ids))


def _measure(emb, texts: list[str]) -> float:
    """Tokens per second of `emb` on a sample of `texts` (the network loads here; nothing is cached)."""
    sample = random.Random(0).sample(texts, min(SAMPLE, len(texts)))
    emb.encode_uncached(sample[:32])  # warm-up: first-call costs are not the rate
    t0 = time.perf_counter()
    emb.encode_uncached(sample)
    seconds = time.perf_counter() - t0
    return _tokens(emb, sample) / max(seconds, 1e-6)


def format_estimate(plan: Plan, est: Estimate) -> str:
    from evalkit.progress import hms

    lines = [f"plan: {len(plan.units)} units, results under {plan.settings.output}"]
    for note in plan.notes:
        lines.append(f"  note: {note}")
    head = ("unit", "texts", "distinct", "cached", "tokens to encode", "pairs", "estimate")
    rows = []
    for e in est.units:
        if e.done:
            rows.append((e.unit.label, "-", "-", "-", "-", "-", "done"))
            continue
        if e.unit.task.name in plan.unreadable:
            rows.append((e.unit.label, "-", "-", "-", "-", "-", "no data"))
            continue
        sec = "?" if e.seconds is None else hms(e.seconds)
        rows.append((e.unit.label, str(e.texts), str(e.distinct), str(e.cached), f"{e.tokens:,}", str(e.pairs or "-"), sec))
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(len(head))]
    fmt = lambda r: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))  # noqa: E731
    lines.append(fmt(head))
    lines += [fmt(r) for r in rows]
    lines += task_recipe_lines(plan)
    if plan.unreadable:
        lines.append(f"{len(plan.unreadable)} task{'s' if len(plan.unreadable) > 1 else ''} cannot be read here (a run stops at the first):")
        lines += [f"  {message}" for message in plan.unreadable.values()]
    for name, rate in est.rates.items():
        lines.append(f"{name}: {rate:,.0f} tokens/s measured here on a sample of this run's texts")
    known = [e.seconds for e in est.units if e.seconds is not None]
    total = sum(known)
    unknown = [e for e in est.units if e.seconds is None]
    tail = f" (+ {len(unknown)} reranker units, not estimated)" if unknown else ""
    lines.append(f"estimated encoding time: {hms(total)}{tail}; mteb's own scoring comes on top. Nothing was written.")
    return "\n".join(lines) + "\n"


def task_recipe_lines(plan: Plan) -> list[str]:
    """Per embedder and task: what goes before each input kind under its recipe, and the examples a
    few-shot setting takes (the authors' file, with its count, or the task's pool)."""
    from evalkit.fewshot import authors_pool
    from evalkit.models.recipes import DATA, describe, examples_count

    lines, seen = [], set()
    for u in plan.units:
        if u.role == "rerank":
            continue
        spec, ts = u.model.spec, u.task
        key = (spec, ts.name, u.fewshot)
        if key in seen:
            continue
        seen.add(key)
        d = describe(spec, ts)
        inputs = "; ".join(f"{kind}: {text!r}" for kind, text in d["inputs"].items())
        shots = ""
        if u.fewshot is not None and u.fewshot.k > 0:
            if u.fewshot.selector == "authors":
                ex = d.get("examples") or {}
                shots = f"; {min(u.fewshot.k, ex.get('count', 0))} of the authors' {ex.get('count', 0)} examples ({ex.get('file')})"
            else:
                shots = f"; {u.fewshot.k} examples, {u.fewshot.selector} from the task's pool"
                pool = authors_pool(ts)
                if pool is not None:
                    shots += f": the authors' {examples_count(pool)} examples ({pool.relative_to(DATA)})"
        elif d.get("examples"):
            shots = f"; the authors' examples: {d['examples']['count']} ({d['examples']['file']}, used with --fewshot K)"
        lines.append(f"recipe {d['name']} {ts.name} [{u.fewshot.label if u.fewshot else '0-shot'}]: {inputs}{shots}")
    return lines
