"""Exact search whose memory does not grow with queries x documents.

mteb 2.26's default full-corpus search (`SearchEncoderWrapper` without an index backend) encodes
the corpus in chunks of 50,000 documents, but scores *every* query against each chunk at once: a
[n_queries x 50,000] float32 block, plus the chunk's vectors (on an MSMARCO-sized run with a large
model that asked one user's GPU for 93 GiB).

Here the corpus is encoded chunk by chunk into a memory-mapped float32 file in a temporary folder
(`MemmapIndex`, mteb's `IndexEncoderSearchProtocol`), and the top-k is found by blocked matrix
products: `query_block` queries against `doc_chunk` documents at a time, with a running top-k per
query. Working memory is one chunk of document vectors, one [query_block x doc_chunk] score block
and the running top-k ([n_queries x (k+1)]), whatever the corpus size.

The scores are mteb's: the model's own `similarity` function scores each block, each chunk keeps
its top k+1 as mteb's chunked search does, and mteb's own `_sort_full_corpus_results` turns the
candidates into the ranked lists (ties broken by document id as there), so a task's metrics are
those of mteb's default search (tests/test_ray.py checks it).

How evalkit hands it to mteb without forking it: `BoundedSearch` *is* a `SearchEncoderWrapper`
(mteb's SearchProtocol) with an index backend; a retrieval task given a SearchProtocol model uses
it as is (mteb/abstasks/retrieval.py). The runner passes it for retrieval tasks only
(`Settings.search`, `--search`): `auto` (default) uses it for corpora above `BOUNDED_ABOVE` documents,
`memmap` always, `mteb` never. Where the run's device is a GPU, `auto` takes the bounded search for
every corpus and scores on the GPU: the query blocks and the document chunks go to the device, the
chunks stay there while they fit in `device_bytes` (a quarter of the free memory; later chunks are read
from the file again for each query block), and the running top-k is kept there, so the host never
merges candidates in a Python heap while the GPU waits. On a CPU the search is unchanged.
"""
from __future__ import annotations

import heapq
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from mteb.models.search_wrappers import SearchEncoderWrapper

log = logging.getLogger("evalkit")

BOUNDED_ABOVE = 100_000  # `auto`: corpora larger than this use the bounded search
QUERY_BLOCK = 1024
DOC_CHUNK = 16_384
SEARCH_MODES = ("auto", "memmap", "mteb")


class MemmapIndex:
    """mteb's IndexEncoderSearchProtocol over a memory-mapped float32 matrix on disk.

    `stats` records the largest score block and document chunk that a search held, so a test can
    check the memory bound by instrumenting rather than by timing."""

    def __init__(self, folder: str | Path | None = None, *, query_block: int = QUERY_BLOCK, doc_chunk: int = DOC_CHUNK, k_offset: int = 1,
                 device: str = "cpu", device_bytes: int | None = None):
        if int(query_block) < 1 or int(doc_chunk) < 1:
            raise ValueError("query_block and doc_chunk must be positive")
        # chunks kept on `device` between query blocks, up to device_bytes (None: a quarter of a GPU's free memory,
        # nothing on a CPU, whose chunks are read from the page cache anyway)
        self.device, self.device_bytes = str(device), device_bytes
        self._resident: dict[int, Any] = {}
        self.parent = Path(folder) if folder else None
        self.query_block, self.doc_chunk, self.k_offset = int(query_block), int(doc_chunk), int(k_offset)
        self._dir: Path | None = None
        self.path: Path | None = None
        self.ids: list[str] = []
        self.dim: int | None = None
        self.stats = {"max_score_block": 0, "max_doc_rows": 0, "score_blocks": 0, "documents": 0}

    # -- storage
    def _ensure_file(self, dim: int) -> None:
        if self._dir is None:
            if self.parent is not None:
                self.parent.mkdir(parents=True, exist_ok=True)
            self._dir = Path(tempfile.mkdtemp(prefix="evalkit-index-", dir=self.parent))
            self.path = self._dir / "corpus.f32"
            self.path.touch()
            self.dim = dim
        elif dim != self.dim:
            raise ValueError(f"document vectors of dimension {dim} added to an index of dimension {self.dim}")

    def add_documents(self, embeddings, idxs) -> None:
        """Append vectors (float32 rows) and their ids; the vectors go to disk, not to memory."""
        arr = _to_numpy(embeddings)
        if arr.ndim != 2:
            raise ValueError(f"document embeddings must be 2-d, got shape {arr.shape}")
        idxs = list(idxs)
        if len(idxs) != arr.shape[0]:
            raise ValueError(f"{arr.shape[0]} vectors for {len(idxs)} ids")
        self._ensure_file(arr.shape[1])
        with open(self.path, "ab") as f:
            f.write(np.ascontiguousarray(arr, dtype=np.float32).tobytes())
        self.ids.extend(idxs)
        self.stats["documents"] = len(self.ids)

    def __len__(self) -> int:
        return len(self.ids)

    def _rows(self, lo: int, hi: int) -> np.ndarray:
        """Rows [lo, hi) copied out of a mapping that is closed again, so the pages leave the
        process's resident memory."""
        mm = np.memmap(self.path, dtype=np.float32, mode="r", offset=lo * self.dim * 4, shape=(hi - lo, self.dim))
        try:
            return np.array(mm)
        finally:
            del mm

    def _take(self, rows: list[int]) -> np.ndarray:
        mm = np.memmap(self.path, dtype=np.float32, mode="r", shape=(len(self.ids), self.dim))
        try:
            return np.array(mm[np.asarray(rows, dtype=np.int64)])
        finally:
            del mm

    # -- search
    def search(self, embeddings, top_k: int, similarity_fn, top_ranked=None, query_idx_to_id=None):
        """(top-k values, top-k row indices) per query: full corpus, or the query's `top_ranked` candidates
        (then indices point into that query's candidate list, as mteb expects)."""
        import torch

        queries = _to_numpy(embeddings)
        if top_ranked is not None:
            return self._rerank(queries, top_k, similarity_fn, top_ranked, query_idx_to_id)
        n_docs, nq = len(self.ids), queries.shape[0]
        if n_docs == 0 or nq == 0:
            return [[] for _ in range(nq)], [[] for _ in range(nq)]
        keep = top_k + self.k_offset
        values: list[list[float]] = []
        indices: list[list[int]] = []
        for q0 in range(0, nq, self.query_block):
            qb = torch.as_tensor(queries[q0 : q0 + self.query_block]).to(self.device)
            best_v = best_i = None
            for d0 in range(0, n_docs, self.doc_chunk):
                d1 = min(d0 + self.doc_chunk, n_docs)
                docs = self._chunk(d0, d1)
                scores = _block_scores(similarity_fn, qb, docs)
                self._note(scores, d1 - d0)
                v, i = torch.topk(scores, min(keep, scores.shape[1]), dim=1, largest=True)
                i = i + d0
                del scores, docs
                if best_v is None:
                    best_v, best_i = v, i
                else:
                    cat_v, cat_i = torch.cat([best_v, v], dim=1), torch.cat([best_i, i], dim=1)
                    best_v, pos = torch.topk(cat_v, min(keep, cat_v.shape[1]), dim=1, largest=True)
                    best_i = torch.gather(cat_i, 1, pos)
            values.extend(best_v.cpu().tolist())
            indices.extend(best_i.cpu().tolist())
        return values, indices

    def _chunk(self, lo: int, hi: int):
        """Document rows [lo, hi): numpy on a CPU; on another device a tensor there, kept while the budget allows."""
        if self.device == "cpu" and not self.device_bytes:
            return self._rows(lo, hi)
        import torch

        if lo in self._resident:
            return self._resident[lo]
        docs = torch.from_numpy(self._rows(lo, hi)).to(self.device)
        if self.device_bytes is None:
            self.device_bytes = torch.cuda.mem_get_info(self.device)[0] // 4 if self.device.startswith("cuda") else 0
        held = sum(t.numel() for t in self._resident.values()) * 4
        if held + docs.numel() * 4 <= self.device_bytes:
            self._resident[lo] = docs
            self.stats["resident_rows"] = self.stats.get("resident_rows", 0) + (hi - lo)
        return docs

    def _rerank(self, queries, top_k, similarity_fn, top_ranked, query_idx_to_id):
        import torch

        row_of = {d: r for r, d in enumerate(self.ids)}
        values, indices = [], []
        for q_idx in range(queries.shape[0]):
            ranked = top_ranked.get(query_idx_to_id[q_idx], []) if query_idx_to_id is not None else []
            if not ranked:
                values.append([])
                indices.append([])
                continue
            docs = self._take([row_of[d] for d in ranked])
            scores = torch.as_tensor(similarity_fn(torch.as_tensor(queries[q_idx : q_idx + 1]), docs))
            self._note(scores, len(ranked))
            v, i = torch.topk(scores, min(top_k, len(ranked)), dim=1, largest=True)
            values.append(v[0].cpu().tolist())
            indices.append(i[0].cpu().tolist())
        return values, indices

    def _note(self, scores, doc_rows: int) -> None:
        s = self.stats
        s["score_blocks"] += 1
        s["max_score_block"] = max(s["max_score_block"], int(scores.numel()))
        s["max_doc_rows"] = max(s["max_doc_rows"], int(doc_rows))

    def clear(self) -> None:
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
        self._resident = {}
        self._dir = self.path = self.dim = None
        self.ids = []

    def __del__(self):
        try:
            self.clear()
        except Exception:
            pass


class BoundedSearch(SearchEncoderWrapper):
    """mteb's SearchEncoderWrapper whose corpus is encoded chunk by chunk into a `MemmapIndex`.

    mode `auto`: corpora of at most `bounded_above` documents take mteb's default path unchanged."""

    def __init__(self, model, *, mode: str = "memmap", bounded_above: int = BOUNDED_ABOVE, folder: str | Path | None = None,
                 query_block: int = QUERY_BLOCK, doc_chunk: int = DOC_CHUNK, device: str = "cpu"):
        if mode not in ("auto", "memmap"):
            raise ValueError(f"BoundedSearch mode must be auto or memmap, got {mode!r}")
        self.mode, self.bounded_above = mode, int(bounded_above)
        self.memmap = MemmapIndex(folder, query_block=query_block, doc_chunk=doc_chunk, device=device)
        super().__init__(model, index_backend=self.memmap)  # mteb's corpus_chunk_size (50k) where `auto` leaves mteb's path
        self.used_bounded: list[bool] = []

    def index(self, corpus, *, task_metadata, hf_split: str, hf_subset: str, encode_kwargs, num_proc: int | None = None, **kwargs: Any) -> None:
        from mteb._create_dataloaders import create_dataloader
        from mteb.types import PromptType

        self.task_corpus = corpus
        bounded = self.mode == "memmap" or len(corpus) > self.bounded_above
        self.used_bounded.append(bounded)
        self.memmap.clear()
        if not bounded:  # mteb's own chunked search, untouched
            self.index_backend = None
            return
        self.index_backend = self.memmap
        for start in range(0, len(corpus), self.memmap.doc_chunk):
            part = corpus.select(range(start, min(start + self.memmap.doc_chunk, len(corpus))))
            loader = create_dataloader(
                part, task_metadata=task_metadata, prompt_type=PromptType.document,
                batch_size=encode_kwargs.get("batch_size", 32), num_proc=num_proc,
            )
            vecs = self.model.encode(loader, task_metadata=task_metadata, hf_split=hf_split, hf_subset=hf_subset,
                                     prompt_type=PromptType.document, **encode_kwargs)
            self.memmap.add_documents(vecs, part["id"])
            del vecs


    def _sort_full_corpus_results(self, *, sub_corpus_ids, **kwargs):
        # mteb hands over the corpus's lazy `id` column; one arrow lookup per candidate costs
        # 20 s on SciFact (300 queries x 1001 candidates): a plain list, the same ids
        return super()._sort_full_corpus_results(sub_corpus_ids=list(sub_corpus_ids), **kwargs)


def default_search_topk(query_embeddings, doc_embeddings, doc_ids, top_k: int, similarity_fn, chunk: int = 50_000):
    """mteb 2.26's default scoring of pre-computed vectors (all queries x one 50k chunk at a time,
    top k+1 per chunk, heap merge): the reference that benchmarks and tests compare against."""
    import torch

    heaps: list[list[tuple[float, str]]] = [[] for _ in range(len(query_embeddings))]
    for c0 in range(0, len(doc_ids), chunk):
        scores = torch.as_tensor(similarity_fn(query_embeddings, doc_embeddings[c0 : c0 + chunk]))
        v, i = torch.topk(scores, min(top_k + 1, scores.shape[1]), dim=1, largest=True)
        for q, (vals, idx) in enumerate(zip(v.tolist(), i.tolist())):
            for s, j in zip(vals, idx):
                item = (s, doc_ids[c0 + j])
                if len(heaps[q]) < top_k:
                    heapq.heappush(heaps[q], item)
                else:
                    heapq.heappushpop(heaps[q], item)
        del scores
    return heaps


def search_model_for(adapter, task, opts):
    """What the runner hands to mteb.evaluate for `task`: `adapter` itself, or a BoundedSearch
    around it for retrieval tasks (see the module docstring). With `auto`, a task whose data are
    loaded and whose corpora are all small gets `adapter` itself: mteb's path, unchanged."""
    mode = getattr(opts, "search", "auto") or "auto"
    if mode not in SEARCH_MODES:
        from evalkit.errors import EvalkitError

        raise EvalkitError(f"unknown search {mode!r}: use one of {', '.join(SEARCH_MODES)}")
    plain_encoder = hasattr(adapter, "encode") and not hasattr(adapter, "predict") and not hasattr(adapter, "search")
    if mode == "mteb" or task.metadata.type != "Retrieval" or not plain_encoder:
        return adapter
    above = getattr(opts, "bounded_above", BOUNDED_ABOVE)
    from evalkit.models.encoder import resolve_devices

    device = resolve_devices(getattr(opts, "device", None))[0]
    if device.startswith("cuda"):  # the top-k on the GPU for every corpus (module docstring)
        above = 0
    if mode == "auto":
        size = largest_corpus(task)
        if size is not None and size <= above:
            return adapter
    return BoundedSearch(adapter, mode=mode, bounded_above=above, device=device,
                         query_block=getattr(opts, "query_block", None) or QUERY_BLOCK, doc_chunk=getattr(opts, "doc_chunk", None) or DOC_CHUNK)


def largest_corpus(task) -> int | None:
    """The largest corpus among a loaded retrieval task's subsets and splits; None when not loaded."""
    ds = getattr(task, "dataset", None)
    if not getattr(task, "data_loaded", False) or not isinstance(ds, dict):
        return None
    sizes = []
    try:
        for sub in ds.values():
            for split in (sub.values() if isinstance(sub, dict) else []):
                corpus = split.get("corpus") if isinstance(split, dict) else None
                if corpus is not None:
                    sizes.append(len(corpus))
    except Exception:
        return None
    return max(sizes) if sizes else None


def _block_scores(similarity_fn, q, docs):
    """similarity_fn(q, docs), computed as a matrix-matrix product even for a single row or column:
    BLAS takes another (matrix-vector) kernel for those, whose last bits differ from the blocks'."""
    import torch

    nq, nd = q.shape[0], docs.shape[0]
    if nq == 1:
        q = torch.cat([q, q])
    if nd == 1:
        docs = torch.cat([docs, docs]) if isinstance(docs, torch.Tensor) else np.concatenate([docs, docs])
    return torch.as_tensor(similarity_fn(q, docs))[:nq, :nd]


def _to_numpy(x) -> np.ndarray:
    try:
        import torch

        if isinstance(x, torch.Tensor):
            return x.detach().cpu().float().numpy()
    except ImportError:
        pass
    return np.asarray(x, dtype=np.float32)
