"""The one loop: run a plan's units on an executor and write their results.

It takes the lock of every result folder of the plan (a second run on the same folders stops with
one line), skips finished units (a valid result file exists: `--overwrite` redoes them), runs a
reranked unit only after its first stage, hands each unit's inputs to the executor (this process
or Ray), writes what comes back atomically (run files, then per-item scores, then the result, so a
result file never lacks its companions), and reports progress with an ETA. A unit's failure is
recorded and the others still run; a unit whose first stage failed fails with it.
"""
from __future__ import annotations

import fcntl
import logging
import os
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from evalkit.errors import EvalkitError
from evalkit.evaluation import Evaluation, Job
from evalkit.plan import Plan, Unit
from evalkit.results import atomic_write_json, main_scores, read_result

log = logging.getLogger("evalkit")


@dataclass
class Outcome:
    unit: Unit
    status: str  # done | skipped | failed
    scores: dict = field(default_factory=dict)  # "split/subset" -> main score (0..1)
    message: str = ""
    encoded: int = 0
    cached: int = 0
    pairs: int = 0
    seconds: float = 0.0
    run_file: str | None = None  # reranked units: where the candidates came from, and whether they were reused

    @property
    def task(self) -> str:
        return self.unit.task.name

    @property
    def type(self) -> str:
        return self.unit.task.type

    @property
    def path(self) -> Path:
        return self.unit.path


@contextmanager
def folder_lock(folder: Path):
    """One writer per result folder: a second run on the same folder stops with a clear message."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fh = open(folder / ".lock", "a+")
    except OSError as e:
        raise EvalkitError(f"cannot write to {folder} ({e.strerror}): choose a writable --output folder") from e
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.seek(0)
        holder = fh.read().strip() or "another process"
        fh.close()
        raise EvalkitError(f"{folder} is being written by another evalkit run ({holder}): wait for it or use another --output") from None
    fh.seek(0)
    fh.truncate()
    fh.write(f"pid {os.getpid()}")
    fh.flush()
    try:
        yield
    finally:
        fcntl.flock(fh, fcntl.LOCK_UN)
        fh.close()


def write_evaluation(unit: Unit, ev: Evaluation) -> None:
    """Run files, then per-item scores, then the result, each atomically."""
    from evalkit.items import items_path

    for path, doc in ev.files.items():
        atomic_write_json(path, doc)
    atomic_write_json(items_path(unit.path), ev.items)
    atomic_write_json(unit.path, ev.doc)


def execute(plan: Plan, executor=None, progress=None, on_outcome=None) -> list[Outcome]:
    """Run every unit of `plan` that is not finished; one Outcome per unit, in the plan's order."""
    from evalkit.executors import LocalExecutor
    from evalkit.rerank import find_run_file

    own = executor is None
    executor = executor or LocalExecutor(plan.settings, progress, throwaway_cache=plan.throwaway_cache)
    outcomes: dict[str, Outcome] = {}
    n = len(plan.units)
    t0 = time.perf_counter()
    ran: list[float] = []

    def finish(o: Outcome) -> None:
        outcomes[o.unit.key] = o
        if o.status == "done":
            ran.append(o.seconds)
        if progress is not None:
            progress.line(outcome_line(o, len(outcomes), n, _eta(plan, outcomes, ran)))
        if on_outcome is not None:
            on_outcome(o)

    try:
        with ExitStack() as stack:
            for folder in plan.folders:
                stack.enter_context(folder_lock(folder))
                for stale in folder.glob(".*.tmp"):  # left by a run killed mid-write; never read as results
                    stale.unlink(missing_ok=True)
            waiting: list[Unit] = []
            for u in plan.units:
                done = None if plan.settings.overwrite else read_result(u.path)
                if done is not None:
                    finish(Outcome(u, "skipped", main_scores(done), "already done"))
                else:
                    waiting.append(u)
            inflight = 0
            while waiting or inflight:
                for u in list(waiting):
                    fs = outcomes.get(u.first_stage.key) if u.first_stage is not None else None
                    if u.first_stage is not None and fs is None:
                        continue  # its first stage has not finished yet
                    waiting.remove(u)
                    if fs is not None and fs.status == "failed":
                        finish(Outcome(u, "failed", message=f"first stage failed: {fs.message}"))
                        continue
                    job = Job(u)
                    if fs is not None:
                        job.first_scores = fs.scores
                        found = find_run_file(u.first_stage.folder, u.task.name, u.top_k)
                        if found is not None:
                            job.run_path, job.run_doc = found
                    executor.submit(job, f"[{len(outcomes) + inflight + 1}/{n}] ")
                    inflight += 1
                if not inflight:
                    continue
                job, ev = executor.next()
                inflight -= 1
                u = job.unit
                if isinstance(ev, EvalkitError):
                    finish(Outcome(u, "failed", message=str(ev)))
                    continue
                write_evaluation(u, ev)
                run_file = None
                if u.first_stage is not None:
                    run_file = f"{job.run_path.name} (reused)" if job.run_path is not None else u.run_file().name
                log.info("%s: %d texts encoded, %d from cache, %d pairs, %.1fs", u.label, ev.encoded, ev.cached, ev.pairs, ev.seconds)
                finish(Outcome(u, "done", main_scores(ev.doc), "", ev.encoded, ev.cached, ev.pairs, ev.seconds, run_file))
    finally:
        if own:
            executor.close()
    log.info("plan of %d units finished in %.1fs", n, time.perf_counter() - t0)
    return [outcomes[u.key] for u in plan.units]


def _eta(plan: Plan, outcomes: dict, ran: list[float]) -> float | None:
    """Seconds left: the mean time of the units run so far times the units left."""
    left = len(plan.units) - len(outcomes)
    if not left or not ran:
        return None
    return left * sum(ran) / len(ran)


def outcome_line(o: Outcome, i: int, n: int, eta: float | None = None) -> str:
    from evalkit.progress import hms

    head = f"[{i}/{n}] {o.unit.label}"
    if o.status == "failed":
        return f"evalkit: {head}: {o.message}"
    s = ", ".join(f"{k} {100 * v:.2f}" for k, v in o.scores.items()) or "searched, no judgements here to score"
    if o.status == "skipped":
        extra = "already done"
    elif o.unit.role == "rerank":
        extra = f"{o.pairs} pairs, {o.seconds:.1f}s" + (f", candidates from {o.run_file}" if o.run_file else "")
    else:
        extra = f"{o.encoded} texts encoded, {o.cached} from cache, {o.seconds:.1f}s"
    tail = f"; about {hms(eta)} left" if eta is not None else ""
    return f"{head}: {s} ({extra}){tail}"


def evaluate(model, task_specs, settings, *, executor=None, progress=None, **plan_kw) -> list[Outcome]:
    """make_plan + execute, for code and tests: `model` a ModelSpec, `plan_kw` make_plan's options
    (kind, fewshot, reranker, first_stage, top_k)."""
    from evalkit.plan import make_plan

    return execute(make_plan(model, task_specs, settings, **plan_kw), executor, progress)
