"""evalkit's Python entry, in the spirit of `mteb.evaluate`: a model and tasks in, the results out.

    import evalkit, mteb
    res = evalkit.evaluate("all-MiniLM-L6-v2", ["STSBenchmark"])
    res.to_dataframe()                                    # one row per unit, split and subset, x100
    evalkit.evaluate("bge-en-icl", mteb.get_benchmark("MTEB(eng, v2)"), fewshot=[0, 3])

`plan` turns the arguments into a checked plan (evalkit/plan.py: nothing loads, nothing is written);
`run` executes one, here or on Ray; `evaluate` is both. The command line (`evalkit run`) is a thin
caller of these: each keyword is a flag of `evalkit run` with its dashes as underscores.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from types import SimpleNamespace

from evalkit.errors import EvalkitError

log = logging.getLogger("evalkit")


# ----------------------------------------------------------------------------- models
def model_spec(model, *, recipe=None, pooling=None, max_length=None, query_instruction=None, revision=None,
               trust_remote_code=None, normalize=None):
    """A catalog name, hub id, folder (str or Path), ModelSpec, or FlagEmbedding-style object ->
    its ModelSpec; the keywords are flags and win over any recipe."""
    from evalkit.models.catalog import ModelSpec, get_spec, with_flags

    flags = dict(pooling=pooling, max_length=max_length, query_instruction=query_instruction, revision=revision,
                 trust_remote_code=trust_remote_code, normalize=normalize)
    if isinstance(model, (str, Path)):
        return get_spec(str(model), recipe=recipe, **flags)
    if isinstance(model, ModelSpec):
        return with_flags(model, recipe, **flags)
    name = getattr(model, "model_name_or_path", None)
    if isinstance(name, (str, Path)):
        return _flag_object_spec(model, str(name), recipe, flags)
    raise EvalkitError(
        f"model {type(model).__name__} is not one evalkit can evaluate: give a catalog name, hub id or folder, "
        "a ModelSpec, or a FlagEmbedding-style model (FlagModel, FlagICLModel, BGEM3FlagModel, FlagReranker, ...)"
    )


def _flag_object_spec(obj, name: str, recipe, flags: dict):
    """A FlagEmbedding (or evalkit) model object: the model it was built from, encoded with the settings
    it holds (query instruction and its format, pooling, normalisation, max length); flags win."""
    from evalkit.models.catalog import get_spec

    cls = type(obj).__name__
    kind = ("llm-reranker" if "LLM" in cls or "Layerwise" in cls else "reranker") if "Reranker" in cls else (
        "icl-embedder" if "ICL" in cls else "embedder")
    if kind == "icl-embedder" and getattr(obj, "examples_for_task", None):
        raise EvalkitError(f"{cls} holds examples_for_task: give the examples as a task's few-shot pool, or fewshot=K with the recipe's own")
    held = {"max_length": getattr(obj, "passage_max_length", None) or getattr(obj, "max_length", None)}
    if kind in ("embedder", "icl-embedder"):
        held.update(query_instruction=getattr(obj, "query_instruction_for_retrieval", None),
                    query_instruction_format=getattr(obj, "query_instruction_format", None),
                    normalize=getattr(obj, "normalize_embeddings", None))
    if kind == "embedder":  # an in-context embedder pools the last token, always
        held["pooling"] = getattr(obj, "pooling_method", None)
    spec = get_spec(name, recipe=recipe, **{**held, **{k: v for k, v in flags.items() if v is not None}})  # a flag given wins
    return replace(spec, kind=kind) if spec.kind != kind else spec


# ----------------------------------------------------------------------------- tasks
def task_specs(tasks, registry=None) -> list:
    """Task names, folders, suite or mteb benchmark names, mteb task objects, an mteb Benchmark, or
    TaskSpecs (one, or any list of them) -> task specs. A string that names a suite (evalkit's or
    mteb's benchmark) is the suite's tasks; any other string is a task name or a folder."""
    from evalkit.tasks import Registry, TaskSpec

    reg = registry or Registry()
    items = [tasks] if isinstance(tasks, (str, Path, TaskSpec)) or _is_task(tasks) or _is_benchmark(tasks) else list(tasks)
    out: list = []
    for t in items:
        if isinstance(t, TaskSpec):
            out.append(t)
        elif isinstance(t, Path):
            out.append(reg.task(str(t) if "/" in str(t) else f"./{t}"))
        elif isinstance(t, str):
            out.extend(reg.suite(t) if t in reg.suites or _mteb_benchmark_name(t) else [reg.task(t)])
        elif _is_benchmark(t):
            out.extend(reg.mteb_tasks(list(t.tasks), f"mteb benchmark {t.name}"))
        elif _is_task(t):
            out.extend(reg.mteb_tasks([t], "an mteb task object"))
        else:
            raise EvalkitError(f"task {t!r} is not a task: give names, folders, suite or benchmark names, or mteb task objects")
    if not out:
        raise EvalkitError("no tasks given")
    return out


def _is_task(t) -> bool:
    try:
        from mteb.abstasks import AbsTask
    except ImportError:  # pragma: no cover - mteb is a dependency
        return False
    return isinstance(t, AbsTask)


def _is_benchmark(t) -> bool:
    from mteb import Benchmark

    return isinstance(t, Benchmark)


def _mteb_benchmark_name(name: str) -> bool:
    import mteb

    try:
        mteb.get_benchmark(name)
    except Exception:
        return False
    return True


# ----------------------------------------------------------------------------- the run
def plan(model, tasks, *, output="results", fewshot=None, selector=None, selector_model=None, reranker=None,
         first_stage=None, top_k=100, m3_modes=None, kind=None, batch_size=64, dtype=None, device=None, cache=True,
         cache_dir=None, seed=42, overwrite=False, search="auto", recipe=None, pooling=None, max_length=None,
         query_instruction=None, revision=None, trust_remote_code=None, dry_run=False, attention="auto"):
    """The checked plan of a run (evalkit/plan.py): every task's data read, every model found, every
    combination allowed or refused in one line (EvalkitError); nothing loaded, nothing written.

    fewshot: K (examples per input: its own result set) or a list of Ks to compare (0 = zero-shot);
    selector: fixed | first_n | random | similar | authors, or a list to compare; m3_modes: "all" or a
    list of dense, sparse, colbert, hybrid[:W,W,W]. `dry_run`: tasks whose data cannot be had here are
    noted in the plan's `unreadable` (one line each) instead of stopping at the first."""
    from evalkit.fewshot import settings_from_args
    from evalkit.models.m3_search import parse_m3_modes
    from evalkit.plan import Settings, make_plan

    settings = Settings(
        output=Path(output), overwrite=overwrite, batch_size=batch_size, dtype=dtype, device=device, use_cache=bool(cache),
        cache_dir=Path(cache_dir) if cache_dir else None, seed=seed, search=search or "auto", attention=attention or "auto",
    )
    spec = model_spec(model, recipe=recipe, pooling=pooling, max_length=max_length, query_instruction=query_instruction,
                      revision=revision, trust_remote_code=trust_remote_code)
    if reranker is not None and first_stage is not None:
        raise EvalkitError("give --reranker (with an embedder as --model) or --first-stage (with a reranker as --model), not both")
    compare = isinstance(fewshot, (list, tuple, str))  # Ks to compare ("0,3" as the command line writes them)
    shots = SimpleNamespace(
        fewshot=None if compare else fewshot,
        fewshot_compare=(fewshot if isinstance(fewshot, str) else ",".join(str(k) for k in fewshot)) if compare else None,
        selector=",".join(selector) if isinstance(selector, (list, tuple)) else selector, selector_model=selector_model, seed=seed,
    )
    return make_plan(
        spec, task_specs(tasks), settings, kind=kind, fewshot=settings_from_args(shots, spec),
        reranker=model_spec(reranker) if reranker is not None else None,
        first_stage=model_spec(first_stage) if first_stage is not None else None, top_k=top_k,
        m3_modes=parse_m3_modes(m3_modes) if m3_modes else None, check_data="collect" if dry_run else True,
    )


def check_ray(ray, ray_workers) -> None:
    if ray_workers is not None and ray is None:
        raise EvalkitError("--ray-workers sets the actors of --ray: add --ray")


def run(the_plan, *, ray=None, ray_workers=None, ray_shard_above=None, progress=None) -> "Results":
    """Execute a plan: in this process, or on Ray (`ray`: auto | local | HOST:PORT) with `ray_workers`
    model actors. Finished units are skipped; a unit's failure is recorded and the others still run."""
    from evalkit.run import execute

    check_ray(ray, ray_workers)
    executor = None
    if ray is not None:
        from evalkit.executors import RayExecutor, import_ray

        import_ray()
        kw = {} if ray_shard_above is None else {"shard_above": ray_shard_above}
        executor = RayExecutor(the_plan.settings, address=ray, workers=ray_workers, throwaway_cache=the_plan.throwaway_cache, **kw).start()
    try:
        outcomes = execute(the_plan, executor, progress)
    finally:
        if executor is not None:
            executor.close()
    return Results(the_plan, outcomes)


def evaluate(model, tasks, *, ray=None, ray_workers=None, ray_shard_above=None, progress=False, **options) -> "Results":
    """Evaluate `model` on `tasks` with mteb's evaluators and write mteb-format result files under
    `output` (default results/); returns the Results. `options` are `plan`'s keywords; `progress=True`
    prints evalkit's progress lines on stderr."""
    from evalkit.progress import Progress

    check_ray(ray, ray_workers)
    the_plan = plan(model, tasks, **options)
    for note in the_plan.notes:  # what the command line prints before a run
        log.warning("evalkit: %s", note)
    bar = Progress() if progress else None
    try:
        return run(the_plan, ray=ray, ray_workers=ray_workers, ray_shard_above=ray_shard_above, progress=bar)
    finally:
        if bar is not None:
            bar.close()


# ----------------------------------------------------------------------------- results
@dataclass
class Results:
    """What a run gave: one Outcome per unit (evalkit/run.py), in the plan's order."""

    plan: object
    outcomes: list

    def __iter__(self):
        return iter(self.outcomes)

    def __len__(self) -> int:
        return len(self.outcomes)

    @property
    def failed(self) -> list:
        return [o for o in self.outcomes if o.status == "failed"]

    def rows(self) -> list[dict]:
        """One row per unit and scored split/subset: model, variant, task, type, split, subset,
        main score x100 (as leaderboards print it), status and the result file."""
        out = []
        for o in self.outcomes:
            u = o.unit
            base = {"model": u.model.name, "variant": u.variant or "", "task": o.task, "type": o.type}
            for key, score in (o.scores.items() if o.scores else [("", None)]):
                split, _, subset = key.partition("/")
                out.append({**base, "split": split, "subset": subset, "main_score": None if score is None else 100 * score,
                            "status": o.status, "path": str(u.path) if o.status != "failed" else "", "message": o.message})
        return out

    def to_dataframe(self):
        import pandas as pd

        return pd.DataFrame(self.rows())

    def main_score(self, task: str, variant: str | None = None, model: str | None = None) -> float:
        """The main score x100 of `task` (of `variant`, `model` where several ran); one split and subset."""
        got = [r for r in self.rows() if r["task"] == task and (variant is None or r["variant"] == variant)
               and (model is None or r["model"] == model) and r["main_score"] is not None]
        if len(got) != 1:
            raise KeyError(f"{task}: {len(got)} scores match; name the variant, model (or read rows())")
        return got[0]["main_score"]

    @property
    def task_results(self) -> list:
        """mteb's TaskResult of every finished unit, read from the result files."""
        from mteb import TaskResult

        return [TaskResult.from_disk(o.unit.path) for o in self.outcomes if o.status != "failed"]

    def __repr__(self) -> str:
        lines = []
        for r in self.rows():
            who = r["model"] + (f" [{r['variant']}]" if r["variant"] else "")
            where = "/".join(x for x in (r["split"], r["subset"]) if x)
            score = "failed" if r["status"] == "failed" else f"{r['main_score']:.2f}"
            lines.append(f"{r['task']} {where} {who}: {score}")
        return "Results(\n  " + "\n  ".join(lines) + "\n)"
