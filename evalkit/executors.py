"""Where units run: `LocalExecutor` (this process) or `RayExecutor` (model actors on a Ray cluster).

Both take jobs (evalkit/evaluation.py Job: a unit and its inputs) with `submit` and hand back
`(job, Evaluation | EvalkitError)` with `next`, in any order; evalkit/run.py, the one loop, decides
what is ready and writes every result. Every unit kind runs on either: embedders, in-context models,
rerankers (cross-encoder and LLM), few-shot settings and two-stage runs.

On Ray:
- The driver (this process) takes the result folders' locks, skips finished units, and is the one
  writer: every actor returns its result, per-item and run-file documents as data, and the driver
  writes them atomically in the local layout. A driver that dies resumes like a local run.
- One `ModelWorker` actor per GPU (or `--ray-workers N` on CPUs) keeps a model pool
  (evaluate.Models): each model it needs is set up once, loaded lazily (not at all when every
  vector is cached) and kept across units. Few-shot prefixes are rebuilt from the unit's data.
- A retrieval unit whose corpus has more than `shard_above` documents is first cut into shards that
  the actors encode in parallel, with exactly the texts mteb will ask for (mteb's corpus
  dataloader, then the adapter's formatting), into their embedding cache. The shard vectors also
  travel back through Ray's object store to the actor that evaluates the unit, which stores any it
  lacks in its own cache: so the evaluation finds every corpus vector cached whether or not the
  nodes share a cache folder (SQLite's WAL mode must not be put on a network filesystem, so each
  node keeps its own cache; see the README).
- Actors are created with `max_restarts` / `max_task_retries`: a worker process that dies is
  restarted by Ray and its unit of work retried; the run still finishes.
"""
from __future__ import annotations

import dataclasses
import logging
from collections import deque
import math
import os
import socket
from pathlib import Path

from evalkit.errors import EvalkitError

log = logging.getLogger("evalkit")

SHARD_ABOVE = 50_000  # retrieval corpora larger than this are encoded in shards before the evaluation
SHARD_SIZE = 25_000
MAX_RESTARTS = 4
ENV_PASSED = ("EVALKIT_DATA", "HF_HUB_OFFLINE", "HF_HOME", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "TOKENIZERS_PARALLELISM", "EVALKIT_DEBUG")


def import_ray():
    try:
        import ray
    except ImportError:
        raise EvalkitError("--ray needs Ray: pip install 'evalkit[ray]' (or pip install ray) on this machine and on every node") from None
    return ray


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail fast (one line) when a host:port cluster address does not answer."""
    target = address.split("://", 1)[-1]
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise EvalkitError(f"--ray {address!r} is not an address: use auto, local or HOST:PORT of a head node (ray start --head)")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as e:
        raise EvalkitError(f"the Ray cluster at {address} cannot be reached ({e.strerror or e}): start it with `ray start --head` there, "
                           "or use --ray local") from None


def connect(address: str | None = "auto", *, num_cpus: int | None = None) -> dict:
    """Join (or start) a Ray instance. `local`: a new instance on this machine; `auto`: the cluster this
    machine belongs to (RAY_ADDRESS or a running `ray start`), else a new local one; HOST:PORT: that
    cluster. Reuses an instance this process already joined. EvalkitError when it cannot be had."""
    ray = import_ray()
    address = address or "auto"
    if address not in ("auto", "local") and not address.startswith("ray://"):
        _check_reachable(address)
    if ray.is_initialized():
        return {"address": address, "started": False}
    env = {k: os.environ[k] for k in ENV_PASSED if k in os.environ}
    from evalkit.tasks import data_root

    root = data_root()
    if root is not None:
        env.setdefault("EVALKIT_DATA", str(root.resolve()))
    kw = dict(include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": env}, logging_level=logging.WARNING)
    try:
        if address == "local":
            ray.init(address="local", num_cpus=num_cpus, **kw)
        elif address == "auto":
            try:
                ray.init(address="auto", **kw)
            except (ConnectionError, RuntimeError):
                ray.init(address="local", num_cpus=num_cpus, **kw)
        else:
            ray.init(address=address, **kw)
    except EvalkitError:
        raise
    except Exception as e:
        raise EvalkitError(f"cannot join the Ray cluster at {address} ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}): "
                           "check `ray status` there, or use --ray local") from None
    return {"address": address, "started": True}


def _absolute(unit):
    """A unit whose task's local paths do not depend on the driver's working folder."""
    def fix(ts):
        if ts.data_dir is not None and not Path(ts.data_dir).is_absolute():
            from evalkit.tasks import data_dir_of

            d = data_dir_of(ts, must_exist=False)
            if d is not None:
                return dataclasses.replace(ts, data_dir=d.resolve())
        return ts

    fs = _absolute(unit.first_stage) if unit.first_stage is not None else None
    return dataclasses.replace(unit, task=fix(unit.task), first_stage=fs)


def corpus_texts(task, adapter, batch_size: int = 32, extra=()) -> list[str]:
    """The distinct document texts that mteb will ask `adapter` to encode for a retrieval task, in
    order: mteb's own corpus dataloader (PromptType.document, title + text as mteb joins them), then
    the adapter's formatting, as EmbeddingAdapter.encode does. `extra`: more (subset, split, data)
    to count (an AIR-Bench task's splits searched but not scored)."""
    from mteb._create_dataloaders import create_dataloader
    from mteb.types import PromptType

    if not getattr(task, "data_loaded", False):
        task.load_data(num_proc=None)
    task.convert_v1_dataset_format_to_v2(num_proc=None)
    ds = task.dataset
    subsets = list(task.hf_subsets) if getattr(task, "hf_subsets", None) else list(ds)
    out: dict[str, None] = {}
    splits = [(subset, split, ds[split] if (subset not in ds and subset == "default") else ds[subset][split])
              for subset in subsets for split in task.eval_splits]
    for subset, split, data in [*splits, *extra]:
        loader = create_dataloader(data["corpus"], task_metadata=task.metadata, prompt_type=PromptType.document, batch_size=batch_size)
        texts = [t for batch in loader for t in batch["text"]]
        out.update(dict.fromkeys(adapter.format_inputs(texts, task.metadata, PromptType.document, hf_split=split, hf_subset=subset)))
    return list(out)


# ----------------------------------------------------------------------------- in this process
class LocalExecutor:
    """Units one after the other in this process, on one model pool."""

    def __init__(self, settings, progress=None, throwaway_cache: bool = False):
        from evalkit.evaluation import Models

        self.settings, self.progress = settings, progress
        self.models = Models(settings, progress, throwaway_cache)
        self._queue: list = []
        self.info: dict = {}

    def submit(self, job, position: str = "") -> None:
        self._queue.append((job, position))

    def next(self):
        from evalkit.evaluation import evaluate_unit

        job, position = self._queue.pop(0)
        if self.progress is not None:
            self.progress.unit_start(job.unit.label, position)
        try:
            return job, evaluate_unit(job, self.settings, self.models)
        except EvalkitError as e:
            return job, e

    def close(self) -> None:
        self.models.close()


# ----------------------------------------------------------------------------- on Ray
class ModelWorker:
    """A model pool on one device (a Ray actor; a plain object in tests): evaluates any unit."""

    def __init__(self, settings, num_threads: int | None = None, throwaway_cache: bool = False):
        from evalkit.evaluation import Models

        self.settings = settings
        self.pid = os.getpid()
        self.models = Models(settings, None, throwaway_cache)
        self._texts: dict[str, list[str]] = {}
        self.current: str | None = None
        self.done: list[str] = []
        # what every unit needs, imported now: the actors are started together and import side by side,
        # where each one's first unit would otherwise wait for its own imports in turn (mteb: ~5 s of CPU)
        import importlib

        import torch

        importlib.import_module("mteb")

        if num_threads:
            torch.set_num_threads(int(num_threads))

    def status(self) -> dict:
        loaded = any(getattr(m, "_core", None) is not None for m in self.models._models.values())
        return {"pid": self.pid, "task": self.current, "done": list(self.done), "model_loaded": loaded}

    def _corpus(self, unit) -> list[str]:
        if unit.key not in self._texts:
            from evalkit.models.adapters import EmbeddingAdapter
            from evalkit.tasks import build_task

            ts = unit.task
            adapter = EmbeddingAdapter(unit.model.spec, self.models.embedder(unit.model), task_instructions={ts.name: ts.instruction} if ts.instruction else None)
            self._texts = {unit.key: corpus_texts(build_task(ts), adapter, int(self.settings.batch_size))}  # keep one unit's texts
        return self._texts[unit.key]

    def corpus_size(self, unit) -> int:
        self.current = f"{unit.label} (corpus)"
        try:
            return len(self._corpus(unit))
        finally:
            self.current = None

    def encode_shard(self, unit, lo: int, hi: int):
        """Encode documents [lo, hi) of the unit's corpus into this worker's cache; return ((lo, hi), vectors)."""
        self.current = f"{unit.label} [{lo}:{hi}]"
        try:
            texts = self._corpus(unit)[lo:hi]
            return (lo, hi), self.models.embedder(unit.model).embed(texts)
        finally:
            self.current = None

    def evaluate(self, job, meta: dict, *shards):
        """Evaluate one unit; returns ("done", Evaluation) or ("failed", message). `shards`: (lo, hi),
        vectors, (lo, hi), vectors, ... of a pre-encoded corpus, stored in this worker's cache where missing."""
        from evalkit.evaluation import evaluate_unit

        self.current = job.unit.label
        shards = [(*shards[j], shards[j + 1]) for j in range(0, len(shards), 2)]
        try:
            stored = self._store_shards(job.unit, shards) if shards else 0
            ray_meta = {**meta.get("ray", {}), "worker_pid": self.pid, "node": socket.gethostname()}
            if shards:
                ray_meta.update(corpus_shards=len(shards), shard_vectors_stored=stored)
            ev = evaluate_unit(job, self.settings, self.models)
            ev.doc["evalkit"]["ray"] = ray_meta
            self.done.append(job.unit.key)
            return "done", ev
        except EvalkitError as e:
            return "failed", str(e)
        finally:
            self.current = None

    def _store_shards(self, unit, shards) -> int:
        emb = self.models.embedder(unit.model)
        if emb.cache is None:
            return 0
        texts = self._corpus(unit)
        stored = 0
        for lo, hi, vecs in shards:
            part = texts[lo:hi]
            have = emb.cache.get_many(emb.namespace, part)
            miss = [i for i in range(len(part)) if i not in have]
            if miss:
                emb.cache.register(emb.namespace, emb.namespace_fields)
                emb.cache.put_many(emb.namespace, [part[i] for i in miss], vecs[miss])
                stored += len(miss)
        self._texts.pop(unit.key, None)
        return stored


class RayExecutor:
    """Units on Ray model actors. Dynamic dispatch: each actor holds one piece of work at a time and
    gets the next as it frees up; corpus shards go first, and a sharded unit's evaluation is queued
    once its shards are all encoded. `on_start(actors)` is called once the actors exist (tests use
    it to kill one)."""

    def __init__(self, settings, *, address: str = "auto", workers: int | None = None, shard_above: int = SHARD_ABOVE,
                 shard_size: int = SHARD_SIZE, max_restarts: int = MAX_RESTARTS, on_start=None, throwaway_cache: bool = False):
        if workers is not None and int(workers) < 1:
            raise EvalkitError(f"--ray-workers must be a positive integer, got {workers!r}")
        self.settings, self.address = settings, address or "auto"
        self.workers, self.shard_above, self.shard_size = workers, int(shard_above), int(shard_size)
        self.max_restarts = int(max_restarts)
        self.on_start = on_start
        self.throwaway_cache = throwaway_cache
        self.actors: list = []
        self.info: dict = {}
        self._queue = None
        self._free = None
        self._inflight: dict = {}
        self._shards_left: dict[str, list] = {}
        self._failed: set[str] = set()
        self._ready: list = []

    def _placement(self, ray) -> tuple[int, dict]:
        """(actors, resources of one actor): one per GPU, else `workers` sharing the CPUs (fractions
        where there are more actors than devices, so that every actor can be placed)."""
        res = ray.cluster_resources()
        gpus, cpus = int(res.get("GPU", 0)), max(1, int(res.get("CPU", 1)))
        if gpus:
            n = self.workers or gpus
            return n, {"num_gpus": 1 if n <= gpus else gpus / n, "num_cpus": min(1, cpus / n)}
        n = self.workers or min(cpus, 8)
        return n, {"num_cpus": cpus // n if n <= cpus else cpus / n}

    def start(self):
        ray = import_ray()
        self.info = connect(self.address)
        n, resources = self._placement(ray)
        s = self.settings
        settings = dataclasses.replace(s, cache_dir=Path(s.cache_dir).expanduser().resolve() if s.cache_dir else None)
        if resources.get("num_gpus"):
            settings = dataclasses.replace(settings, device="cuda")  # Ray shows each actor its own GPU
        Actor = ray.remote(  # "control": status() answers while a unit of work runs
            max_restarts=self.max_restarts, max_task_retries=self.max_restarts, concurrency_groups={"control": 1}, **resources,
        )(ModelWorker)
        threads = None if resources.get("num_gpus") else max(1, int(resources["num_cpus"]))
        self.actors = [Actor.remote(settings, threads, self.throwaway_cache) for _ in range(n)]
        ray.get([a.__ray_ready__.remote() for a in self.actors])
        self.info.update(workers=n, resources=resources, cluster=ray.get_runtime_context().gcs_address)
        self._queue, self._free = deque(), deque(range(n))
        if self.on_start:
            self.on_start(self.actors)
        return self

    @property
    def meta(self) -> dict:
        return {"ray": {"address": self.address, "cluster": self.info.get("cluster"), "workers": self.info.get("workers")}}

    def submit(self, job, position: str = "") -> None:
        if not self.actors:
            self.start()
        job = dataclasses.replace(job, unit=_absolute(job.unit))
        sharded = job.unit.role == "embed" and job.unit.task.type == "Retrieval" and self.shard_above >= 0
        self._queue.append(("size" if sharded else "eval", job, ()))
        self._dispatch()

    def _dispatch(self) -> None:
        while self._free and self._queue:
            kind, job, extra = self._queue.popleft()
            i = self._free.popleft()
            a = self.actors[i]
            if kind == "size":
                ref = a.corpus_size.remote(job.unit)
            elif kind == "shard":  # two results: (lo, hi), which the driver waits on, and the vectors, which it never fetches
                ref, vecs = a.encode_shard.options(num_returns=2).remote(job.unit, *extra)
                extra = (*extra, vecs)
            else:
                ref = a.evaluate.remote(job, self.meta, *extra)
            self._inflight[ref] = (kind, job, i, extra)

    def next(self):
        """The next finished unit: (job, Evaluation | EvalkitError)."""
        ray = import_ray()
        while True:
            if self._ready:
                return self._ready.pop(0)
            if not self._inflight:
                raise RuntimeError("RayExecutor.next() with nothing submitted")
            done, _ = ray.wait(list(self._inflight), num_returns=1)
            ref = done[0]
            kind, job, i, extra = self._inflight.pop(ref)
            self._free.append(i)
            key = job.unit.key
            try:
                value = ray.get(ref)
            except (ray.exceptions.RayActorError, ray.exceptions.RayTaskError) as e:
                if isinstance(e, ray.exceptions.RayActorError):
                    error = EvalkitError(f"{job.unit.label}: its Ray worker died {self.max_restarts + 1} times ({type(e).__name__}); run again to resume")
                else:
                    cause = e.as_instanceof_cause() if hasattr(e, "as_instanceof_cause") else e
                    if not isinstance(cause, EvalkitError):
                        raise cause from None
                    error = EvalkitError(str(getattr(e, "cause", cause)))
                if key not in self._failed:  # one outcome per unit, however many of its shards fail
                    self._failed.add(key)
                    self._ready.append((job, error))
                self._shards_left.pop(key, None)
                self._queue = deque(q for q in self._queue if q[1].unit.key != key)
                self._dispatch()
                continue
            if kind == "size":
                n = int(value)
                if n > self.shard_above:
                    per = max(1, min(self.shard_size, math.ceil(n / len(self.actors))))
                    bounds = [(lo, min(lo + per, n)) for lo in range(0, n, per)]
                    log.info("%s: %d documents in %d shards on %d workers", job.unit.label, n, len(bounds), len(self.actors))
                    self._shards_left[key] = [len(bounds), []]
                    self._queue.extendleft(("shard", job, b) for b in reversed(bounds))
                else:
                    self._queue.appendleft(("eval", job, ()))
            elif kind == "shard":
                left = self._shards_left.get(key)
                if left is not None:
                    left[0] -= 1
                    left[1].extend([ref, extra[-1]])  # the vectors stay in Ray's object store until the evaluation takes them
                    if left[0] == 0:
                        self._queue.appendleft(("eval", job, tuple(left[1])))
                        del self._shards_left[key]
            else:
                status, payload = value
                self._ready.append((job, EvalkitError(payload) if status == "failed" else payload))
            self._dispatch()

    def close(self):
        if not self.actors and not self.info:
            return
        ray = import_ray()
        for a in self.actors:
            try:
                ray.kill(a, no_restart=True)
            except Exception:
                pass
        self.actors = []
        if self.info.get("started") and ray.is_initialized():
            ray.shutdown()
