"""Scale-out on Ray: (model, task) evaluations on model actors, large corpora encoded in shards.

`evalkit run ... --ray [auto|local|ADDRESS]` hands `RayExecutor` to the runner (evalkit/runner.py
`run_tasks(executor=...)`); everything else about a run stays the local one:

- The driver (this process) takes the result folder's lock, skips finished tasks, and is the one
  writer: every actor returns its result and per-item documents as data, and the driver writes
  them atomically in the local layout. A driver that dies resumes like a local run.
- One `ModelWorker` actor per GPU (or `--ray-workers N` on CPUs) holds one Embedder, loaded once
  (lazily: not at all when every vector is cached) and reused across tasks.
- A retrieval task whose corpus has more than `shard_above` documents is first cut into shards that
  the actors encode in parallel, with exactly the texts mteb will ask for (mteb's corpus
  dataloader, then the adapter's formatting), into their embedding cache. The shard vectors also
  travel back through Ray's object store to the actor that evaluates the task, which stores any it
  lacks in its own cache: so the evaluation finds every corpus vector cached whether or not the
  nodes share a cache folder (SQLite's WAL mode must not be put on a network filesystem, so each
  node keeps its own cache; see the README).
- Actors are created with `max_restarts` / `max_task_retries`: a worker process that dies is
  restarted by Ray and its unit of work retried; the run still finishes.
"""
from __future__ import annotations

import dataclasses
import logging
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


def _absolute(ts):
    """Task specs whose local paths do not depend on the driver's working folder."""
    if ts.data_dir is not None and not Path(ts.data_dir).is_absolute():
        from evalkit.tasks import data_dir_of

        d = data_dir_of(ts, must_exist=False)
        if d is not None:
            return dataclasses.replace(ts, data_dir=d.resolve())
    return ts


def corpus_texts(task, adapter, batch_size: int = 32) -> list[str]:
    """The distinct document texts that mteb will ask `adapter` to encode for a retrieval task, in
    order: mteb's own corpus dataloader (PromptType.document, title + text as mteb joins them), then
    the adapter's formatting, as EmbeddingAdapter.encode does."""
    from mteb._create_dataloaders import create_dataloader
    from mteb.types import PromptType

    if not getattr(task, "data_loaded", False):
        task.load_data(num_proc=None)
    task.convert_v1_dataset_format_to_v2(num_proc=None)
    ds = task.dataset
    subsets = list(task.hf_subsets) if getattr(task, "hf_subsets", None) else list(ds)
    out: dict[str, None] = {}
    for subset in subsets:
        for split in task.eval_splits:
            data = ds[split] if (subset not in ds and subset == "default") else ds[subset][split]
            loader = create_dataloader(data["corpus"], task_metadata=task.metadata, prompt_type=PromptType.document, batch_size=batch_size)
            texts = [t for batch in loader for t in batch["text"]]
            out.update(dict.fromkeys(adapter.format_inputs(texts, task.metadata, PromptType.document, hf_split=split, hf_subset=subset)))
    return list(out)


class ModelWorker:
    """One model on one device (a Ray actor; plain object in tests). Holds an Embedder across tasks."""

    def __init__(self, spec, opts, num_threads: int | None = None):
        self.spec, self.opts = spec, opts
        self.pid = os.getpid()
        self._embedder = None
        self._texts: dict[str, list[str]] = {}
        self.current: str | None = None
        self.done: list[str] = []
        if num_threads:
            import torch

            torch.set_num_threads(int(num_threads))

    @property
    def embedder(self):
        if self._embedder is None:
            from evalkit.runner import make_embedder

            self._embedder = make_embedder(self.spec, self.opts)
        return self._embedder

    def status(self) -> dict:
        return {"pid": self.pid, "task": self.current, "done": list(self.done), "model_loaded": self._embedder is not None and self._embedder._core is not None}

    def _corpus(self, ts) -> list[str]:
        if ts.name not in self._texts:
            from evalkit.models.adapters import EmbeddingAdapter
            from evalkit.tasks import build_task

            adapter = EmbeddingAdapter(self.spec, self.embedder, task_instructions={ts.name: ts.instruction} if ts.instruction else None)
            self._texts = {ts.name: corpus_texts(build_task(ts), adapter, int(self.opts.batch_size))}  # keep one task's texts
        return self._texts[ts.name]

    def corpus_size(self, ts) -> int:
        self.current = f"{ts.name} (corpus)"
        try:
            return len(self._corpus(ts))
        finally:
            self.current = None

    def encode_shard(self, ts, lo: int, hi: int):
        """Encode documents [lo, hi) of the task's corpus into this worker's cache; return ((lo, hi), vectors)."""
        self.current = f"{ts.name} [{lo}:{hi}]"
        try:
            texts = self._corpus(ts)[lo:hi]
            return (lo, hi), self.embedder.embed(texts)
        finally:
            self.current = None

    def evaluate(self, ts, meta: dict, *shards):
        """Evaluate one task; returns ("done", Evaluation) or ("failed", message). `shards`: (lo, hi),
        vectors, (lo, hi), vectors, ... of a pre-encoded corpus, stored in this worker's cache where missing."""
        from evalkit.runner import evaluate_task

        self.current = ts.name
        shards = [(*shards[j], shards[j + 1]) for j in range(0, len(shards), 2)]
        try:
            stored = self._store_shards(ts, shards) if shards else 0
            meta = {**meta, "ray": {**meta.get("ray", {}), "worker_pid": self.pid, "node": socket.gethostname()}}
            if shards:
                meta["ray"].update(corpus_shards=len(shards), shard_vectors_stored=stored)
            ev = evaluate_task(self.spec, ts, self.opts, self.embedder, extra_meta=meta)
            self.done.append(ts.name)
            return "done", ev
        except EvalkitError as e:
            return "failed", str(e)
        finally:
            self.current = None

    def _store_shards(self, ts, shards) -> int:
        emb = self.embedder
        if emb.cache is None:
            return 0
        texts = self._corpus(ts)
        stored = 0
        for lo, hi, vecs in shards:
            part = texts[lo:hi]
            have = emb.cache.get_many(emb.namespace, part)
            miss = [i for i in range(len(part)) if i not in have]
            if miss:
                emb.cache.register(emb.namespace, emb.namespace_fields)
                emb.cache.put_many(emb.namespace, [part[i] for i in miss], vecs[miss])
                stored += len(miss)
        self._texts.pop(ts.name, None)
        return stored


class RayExecutor:
    """runner.run_tasks executor that evaluates the pending tasks on Ray model actors.

    `on_start(actors)` is called once the actors exist (tests use it to kill one)."""

    def __init__(self, spec, opts, *, address: str = "auto", workers: int | None = None, shard_above: int = SHARD_ABOVE,
                 shard_size: int = SHARD_SIZE, max_restarts: int = MAX_RESTARTS, on_start=None):
        self.spec, self.opts, self.address = spec, opts, address or "auto"
        self.workers, self.shard_above, self.shard_size = workers, int(shard_above), int(shard_size)
        self.max_restarts = int(max_restarts)
        self.on_start = on_start
        self.actors: list = []
        self.info: dict = {}

    def _plan(self, ray) -> tuple[int, dict]:
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
        n, resources = self._plan(ray)
        opts = dataclasses.replace(self.opts, cache_dir=Path(self.opts.cache_dir).expanduser().resolve() if self.opts.cache_dir else None)
        if resources.get("num_gpus"):
            opts = dataclasses.replace(opts, device="cuda")  # Ray shows each actor its own GPU
        Actor = ray.remote(  # "control": status() answers while a unit of work runs
            max_restarts=self.max_restarts, max_task_retries=self.max_restarts, concurrency_groups={"control": 1}, **resources,
        )(ModelWorker)
        threads = None if resources.get("num_gpus") else max(1, int(resources["num_cpus"]))
        self.actors = [Actor.remote(self.spec, opts, threads) for _ in range(n)]
        ray.get([a.__ray_ready__.remote() for a in self.actors])
        self.info.update(workers=n, resources=resources, cluster=ray.get_runtime_context().gcs_address)
        if self.on_start:
            self.on_start(self.actors)
        return self

    def __call__(self, pending):
        """Yield (task spec, Evaluation | EvalkitError) as units finish. Dynamic dispatch: each actor
        holds one unit at a time and gets the next as it frees up; corpus shards go first, and a
        sharded task's evaluation is queued once its shards are all encoded."""
        from collections import deque

        pending = list(pending)
        if not pending:
            return
        ray = import_ray()
        if not self.actors:
            self.start()
        meta = {"ray": {"address": self.address, "cluster": self.info.get("cluster"), "workers": self.info.get("workers")}}
        pending = [_absolute(ts) for ts in pending]
        queue = deque(("size", ts, ()) for ts in pending if ts.type == "Retrieval" and self.shard_above >= 0)
        queue.extend(("eval", ts, ()) for ts in pending if not (ts.type == "Retrieval" and self.shard_above >= 0))
        free = deque(range(len(self.actors)))
        inflight: dict = {}  # ref -> (kind, ts, actor index, extra)
        shards_left: dict[str, list] = {}  # task name -> [shards not yet encoded, refs of all its shards]
        failed: set[str] = set()

        def submit():
            while free and queue:
                kind, ts, extra = queue.popleft()
                i = free.popleft()
                a = self.actors[i]
                if kind == "size":
                    ref = a.corpus_size.remote(ts)
                elif kind == "shard":  # two results: (lo, hi), which the driver waits on, and the vectors, which it never fetches
                    ref, vecs = a.encode_shard.options(num_returns=2).remote(ts, *extra)
                    extra = (*extra, vecs)
                else:
                    ref = a.evaluate.remote(ts, meta, *extra)
                inflight[ref] = (kind, ts, i, extra)

        submit()
        while inflight:
            ready, _ = ray.wait(list(inflight), num_returns=1)
            ref = ready[0]
            kind, ts, i, extra = inflight.pop(ref)
            free.append(i)
            try:
                value = ray.get(ref)
            except (ray.exceptions.RayActorError, ray.exceptions.RayTaskError) as e:
                if isinstance(e, ray.exceptions.RayActorError):
                    error = EvalkitError(f"task {ts.name}: its Ray worker died {self.max_restarts + 1} times ({type(e).__name__}); run again to resume")
                else:
                    cause = e.as_instanceof_cause() if hasattr(e, "as_instanceof_cause") else e
                    if not isinstance(cause, EvalkitError):
                        raise cause from None
                    error = EvalkitError(str(getattr(e, "cause", cause)))
                if ts.name not in failed:  # one outcome per task, however many of its shards fail
                    failed.add(ts.name)
                    yield ts, error
                shards_left.pop(ts.name, None)
                queue = deque(q for q in queue if q[1].name != ts.name)
                submit()
                continue
            if kind == "size":
                n = int(value)
                if n > self.shard_above:
                    per = max(1, min(self.shard_size, math.ceil(n / len(self.actors))))
                    bounds = [(lo, min(lo + per, n)) for lo in range(0, n, per)]
                    log.info("%s: %d documents in %d shards on %d workers", ts.name, n, len(bounds), len(self.actors))
                    shards_left[ts.name] = [len(bounds), []]
                    queue.extendleft(("shard", ts, b) for b in reversed(bounds))
                else:
                    queue.appendleft(("eval", ts, ()))
            elif kind == "shard":
                left = shards_left.get(ts.name)
                if left is not None:
                    left[0] -= 1
                    left[1].extend([ref, extra[-1]])  # the vectors stay in Ray's object store until the evaluation takes them
                    if left[0] == 0:
                        queue.appendleft(("eval", ts, tuple(left[1])))
                        del shards_left[ts.name]
            else:
                status, payload = value
                yield ts, (EvalkitError(payload) if status == "failed" else payload)
            submit()

    def shutdown(self):
        ray = import_ray()
        for a in self.actors:
            try:
                ray.kill(a, no_restart=True)
            except Exception:
                pass
        self.actors = []
        if self.info.get("started") and ray.is_initialized():
            ray.shutdown()


def run_on_ray(spec, task_specs, opts, *, address: str = "auto", workers: int | None = None, embedder=None, on_outcome=None, **kw):
    """runner.run_tasks with the work on Ray (the driver writes every result)."""
    from evalkit.runner import make_embedder, run_tasks

    if opts.prefix_factory is not None:
        raise EvalkitError("--ray runs plain embedder evaluations: few-shot runs are not distributed yet")
    if workers is not None and int(workers) < 1:
        raise EvalkitError(f"--ray-workers must be a positive integer, got {workers!r}")
    embedder = embedder or make_embedder(spec, opts)
    ex = RayExecutor(spec, opts, address=address, workers=workers, **kw)
    try:
        return run_tasks(spec, task_specs, opts, embedder=embedder, on_outcome=on_outcome, executor=ex)
    finally:
        ex.shutdown()
