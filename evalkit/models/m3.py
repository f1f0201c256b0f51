"""BGE-M3, the multi-function embedder: dense vectors, sparse lexical weights and ColBERT vectors.

`BGEM3FlagModel` keeps FlagEmbedding's public API (``encode``, ``encode_queries``, ``encode_corpus``,
``compute_lexical_matching_score``, ``colbert_score``, ``compute_score``), so BGE-M3 model-card code
runs unchanged, and equals FlagEmbedding 1.4.2 to 1e-5 (tests/test_m3.py, on a tiny random M3).

It runs on the same encoder core as every other model (tokenise, length-sorted batches, per-batch
padding, OOM back-off, one worker per device): one network pass gives every output asked for
through `M3Head`, the head type for M3. The two heads load from ``colbert_linear.pt`` (Linear(hidden,
hidden)) and ``sparse_linear.pt`` (Linear(hidden, 1), then ReLU) beside the weights, as BAAI/bge-m3
ships them (fetched from the hub beside a hub snapshot that lacks them). The dense vectors alone go
through an ordinary `Embedder` (CLS, normalised) with the embedding cache, so dense evaluation is
exactly what it is for any other embedder; a pass that also computes the sparse or ColBERT outputs
puts its dense vectors into that same cache. Lexical weights go into that cache too, in a namespace
of their own (the Embedder's fields, the max length and the sparse head's fingerprint), so a later
run's sparse mode encodes nothing; ColBERT vectors (4 KiB a token on bge-m3) are not persisted. In a
run (`from_spec`), an `M3Memo` keeps every output of a pass for the modes that come after it, so
each text goes through the network once for all of them.

For retrieval over a whole corpus (the run plan's BGE-M3 modes) use the array helpers below rather
than the pairwise FlagEmbedding calls: `lexical_matrix` (lexical weights -> a CSR matrix, so sparse
search is one sparse matrix product), `colbert_scores` (one query's ColBERT score against many
candidates at once) and `hybrid_scores` (FlagEmbedding's weighted sum of the three).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from evalkit.errors import EvalkitError
from evalkit.models.encoder import ahead, longest_by_chars, pool

log = logging.getLogger("evalkit")

HEAD_FILES = ("colbert_linear.pt", "sparse_linear.pt")
MODES = ("dense", "sparse", "colbert")
SCORE_KEYS = ("colbert", "sparse", "dense", "sparse+dense", "colbert+sparse+dense")
# head outputs (float32 values) per call of Core.run: an encode is cut into length-sorted slices so
# that ColBERT outputs padded to a slice's longest text stay bounded (512 MiB) on long corpora
SLICE_FLOATS = 1 << 27
LEXICAL_RECORD = 8  # bytes a kept token's lexical weight takes in the cache: its id (int32) and weight (float32)
_UNUSED_TOKENS = ("cls_token", "eos_token", "pad_token", "unk_token")  # left out of the lexical weights


# ----------------------------------------------------------------------------- the head
def _load_linear(path: str):
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        out_f, in_f = state["weight"].shape
        lin = torch.nn.Linear(in_f, out_f)
        lin.load_state_dict(state)
    except Exception as e:
        raise EvalkitError(f"cannot load the M3 head {path}: {type(e).__name__}: {e}") from e
    return lin.eval()


def m3_modules(model, colbert_path: str, sparse_path: str):
    """The (colbert, sparse) linears beside `model`: loaded once per network (and process), on the
    network's device and in its dtype (fp16 when the core halved the weights, as FlagEmbedding does)."""
    key = (colbert_path, sparse_path)
    held = getattr(model, "_evalkit_m3_heads", None)  # a plain tuple attribute, not a registered submodule
    if held is None or held[0] != key:
        p = next(model.parameters())
        mods = tuple(_load_linear(f).to(device=p.device, dtype=p.dtype) for f in key)
        held = (key, *mods)
        model._evalkit_m3_heads = held
    return held[1], held[2]


@dataclass(frozen=True)
class M3Head:
    """One row per text: ``[dense (hidden) | token weights (width) | ColBERT vectors ((width-1) x dim)]``,
    each part only where asked for, the token parts zero-padded to `width` (the longest input of
    this `Core.run` call), so that every batch's rows have the same length.

    As FlagEmbedding computes them: dense = the pooled (CLS) state, L2-normalised; token weights =
    relu(sparse_linear(state)) at every position; ColBERT = colbert_linear(state) of every position
    but the first (CLS), times the attention mask, L2-normalised (padding stays zero).
    """

    colbert_path: str
    sparse_path: str
    width: int
    dense: bool = True
    sparse: bool = False
    colbert: bool = False
    normalize: bool = True
    pooling: str = "cls"

    def __call__(self, model, batch: dict):
        import torch
        import torch.nn.functional as F

        out = model(**batch, return_dict=True)
        hidden = out.last_hidden_state
        mask = batch["attention_mask"]
        n = mask.shape[0]
        parts = []
        if self.dense:  # EmbedHead's arithmetic, so these vectors can share the dense cache
            vec = pool(hidden, mask, self.pooling).float()
            parts.append(F.normalize(vec, p=2, dim=-1) if self.normalize else vec)
        if self.sparse or self.colbert:
            colbert_lin, sparse_lin = m3_modules(model, self.colbert_path, self.sparse_path)
        if self.sparse:
            weights = torch.relu(sparse_lin(hidden)).squeeze(-1).float()
            parts.append(_to_width(weights, self.width))
        if self.colbert:
            vecs = colbert_lin(hidden[:, 1:]).float() * mask[:, 1:][:, :, None].float()
            if self.normalize:
                vecs = F.normalize(vecs, dim=-1)
            parts.append(_to_width(vecs, self.width - 1).reshape(n, -1))
        return torch.cat(parts, dim=1)


def _to_width(t, width: int):
    """[n, w, ...] -> [n, width, ...]: zeros appended, or the positions past `width` cut. Those are padding
    either way: BGE-M3 pads on the right, and a GPU rounds a batch's width up to a multiple of 16 past the
    slice's longest text (`Core.width`)."""
    import torch.nn.functional as F

    w = t.shape[1]
    if w >= width:
        return t[:, :width]
    return F.pad(t, (0, 0) * (t.dim() - 2) + (0, width - w))


# ----------------------------------------------------------------------------- scoring helpers
def lexical_matching_score(lw1: dict, lw2: dict):
    """FlagEmbedding's sparse score of two lexical-weight dicts: the sum of the products of the
    weights of the tokens they share."""
    score = 0
    for token, weight in lw1.items():
        if token in lw2:
            score += weight * lw2[token]
    return score


def colbert_scores(q_vecs: np.ndarray, docs: Sequence[np.ndarray]) -> np.ndarray:
    """float32 [len(docs)]: `colbert_score(q_vecs, d)` for every candidate d at once (the mean over the
    query's vectors of its best dot product among the candidate's vectors)."""
    q = np.asarray(q_vecs, dtype=np.float32)
    if len(docs) == 0:
        return np.zeros((0,), np.float32)
    lengths = np.fromiter((len(d) for d in docs), dtype=np.int64, count=len(docs))
    if (lengths == 0).any():
        raise EvalkitError("colbert_scores: a candidate has no ColBERT vectors")
    sims = q @ np.concatenate([np.asarray(d, dtype=np.float32) for d in docs]).T  # [nq, sum(lengths)]
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    best = np.maximum.reduceat(sims, starts, axis=1)  # [nq, len(docs)]
    return (best.sum(axis=0) / np.float32(max(1, q.shape[0]))).astype(np.float32)


def lexical_matrix(lexical_weights: Sequence[dict], vocab_size: int):
    """scipy.sparse CSR float32 [len(lexical_weights), vocab_size]; ``Q @ D.T`` gives every sparse
    (lexical matching) score of queries Q against documents D in one product."""
    import scipy.sparse as sp

    indptr = np.zeros(len(lexical_weights) + 1, dtype=np.int64)
    indices, data = [], []
    for i, lw in enumerate(lexical_weights):
        indptr[i + 1] = indptr[i] + len(lw)
        indices.extend(int(k) for k in lw)
        data.extend(lw.values())
    return sp.csr_matrix(
        (np.asarray(data, dtype=np.float32), np.asarray(indices, dtype=np.int64), indptr),
        shape=(len(lexical_weights), int(vocab_size)),
    )


def hybrid_scores(dense, sparse, colbert, weights: Sequence[float] = (1.0, 1.0, 1.0)) -> np.ndarray:
    """FlagEmbedding's ``colbert+sparse+dense``: (w_dense * dense + w_sparse * sparse + w_colbert * colbert)
    / sum(weights), float32. Weights [1, 0, 0] give the dense scores exactly. A part whose weight is 0
    may be None."""
    w = [float(x) for x in weights]
    if len(w) != 3 or sum(w) == 0:
        raise EvalkitError(f"M3 weights are three numbers (dense, sparse, colbert) with a non-zero sum, got {list(weights)!r}")
    total = None
    for wi, part in zip(w, (dense, sparse, colbert)):
        if wi == 0:
            continue
        if part is None:
            raise EvalkitError("hybrid_scores: a mode with a non-zero weight has no scores")
        term = np.asarray(part, dtype=np.float32) * wi
        total = term if total is None else total + term
    return (total / sum(w)).astype(np.float32)


def has_m3_heads(folder: str | Path) -> bool:
    return all((Path(folder) / f).is_file() for f in HEAD_FILES)


def is_multi_function(spec, path: str | Path | None = None) -> bool:
    """Whether a catalog spec is an M3 model: the catalog says so, or its folder (`path`, the model
    as located; else a local spec's own folder) has both heads."""
    if spec.extra.get("multi_function"):
        return True
    if path is None and spec.local_path and not str(spec.local_path).startswith("pypi:"):
        path = spec.local_path
    return path is not None and has_m3_heads(path)


def head_files(folder: Path, repo_id: str | None = None, revision: str | None = None) -> tuple[str, str]:
    """Paths of colbert_linear.pt and sparse_linear.pt: beside the weights, else from the hub (a hub
    snapshot that evalkit fetched holds only what dense vectors need)."""
    import os

    paths = [Path(folder) / f for f in HEAD_FILES]
    if all(p.is_file() for p in paths):
        return str(paths[0]), str(paths[1])
    missing = [p.name for p in paths if not p.is_file()]
    if repo_id:
        from huggingface_hub import hf_hub_download

        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
        got = []
        for f in HEAD_FILES:
            try:
                got.append(hf_hub_download(repo_id, f, revision=revision, local_files_only=True))
                continue
            except Exception:
                pass
            if offline:
                break
            try:
                got.append(hf_hub_download(repo_id, f, revision=revision))
            except Exception as e:
                raise EvalkitError(
                    f"{repo_id}: cannot fetch its M3 head {f} from the hub ({type(e).__name__}): copy {', '.join(missing)} "
                    f"into {folder}, or ask for dense vectors only"
                ) from e
        if len(got) == 2:
            return got[0], got[1]
    raise EvalkitError(
        f"{folder} has no {' or '.join(missing)}: BGE-M3's sparse and ColBERT heads ship beside its weights "
        "(colbert_linear.pt, sparse_linear.pt); copy them there, or ask for dense vectors only"
    )


# ----------------------------------------------------------------------------- what a run's passes computed
class Ragged:
    """Float32 arrays of one width and any length, appended to a temporary file and read back
    through a memmap (remapped when the file has grown): ColBERT vectors off the heap."""

    def __init__(self, dim: int):
        import tempfile

        self.dim = dim
        self.file = tempfile.TemporaryFile(prefix="evalkit-m3-")
        self.offsets = [0]
        self._mm = None

    def add(self, a) -> int:
        """Append one [rows, dim] array; its index for `get`."""
        self.file.write(np.ascontiguousarray(a, dtype=np.float32).tobytes())
        self.offsets.append(self.offsets[-1] + len(a))
        return len(self.offsets) - 2

    def get(self, i: int) -> np.ndarray:
        lo, hi = self.offsets[i], self.offsets[i + 1]
        if hi == lo:
            return np.zeros((0, self.dim), dtype=np.float32)
        if self._mm is None or self._mm.shape[0] < hi:
            self.file.flush()
            self._mm = np.memmap(self.file, dtype=np.float32, mode="r", shape=(self.offsets[-1], self.dim))
        return self._mm[lo:hi]

    @property
    def nbytes(self) -> int:
        return self.offsets[-1] * self.dim * 4

    def close(self) -> None:
        self._mm = None
        self.file.close()


class M3Memo:
    """Every output of the M3 passes of a run, per (text, max length), so that each text goes through
    the network once whatever modes ask for it (sparse over the corpus, then ColBERT and the hybrid
    over candidates): lexical weights in memory, dense and ColBERT vectors in temporary files, up to
    `budget` bytes in all (EVALKIT_M3_MEMO_GB, default 8); past it, texts are encoded again."""

    def __init__(self, budget: int | None = None):
        import os

        self.budget = int(budget if budget is not None else float(os.environ.get("EVALKIT_M3_MEMO_GB", "8")) * 2**30)
        self.lex: dict = {}
        self.rows: dict = {}  # key -> (dense row, colbert row)
        self._dense: Ragged | None = None
        self._colbert: Ragged | None = None
        self.lex_bytes = 0

    @property
    def nbytes(self) -> int:
        return self.lex_bytes + sum(r.nbytes for r in (self._dense, self._colbert) if r is not None)

    def has(self, key) -> bool:
        return key in self.rows

    def put(self, keys, dense, lex, cols) -> None:
        if self._dense is None:
            self._dense, self._colbert = Ragged(dense.shape[1]), Ragged(cols[0].shape[1] if cols else 1)
        for j, key in enumerate(keys):
            size = dense.shape[1] * 4 + len(cols[j]) * self._colbert.dim * 4 + 64 * len(lex[j])
            if key in self.rows or self.nbytes + size > self.budget:
                continue
            try:
                d, c = self._dense.add(dense[j : j + 1]), self._colbert.add(cols[j])
            except OSError as e:  # a full temporary folder: the run goes on, later modes encode again
                log.warning("the M3 memo stops keeping outputs (%s): later modes encode their texts again", e.strerror or e)
                self.budget = 0
                return
            self.rows[key] = (d, c)
            self.lex[key] = lex[j]
            self.lex_bytes += 64 * len(lex[j])

    def get(self, key):
        d, c = self.rows[key]
        return self._dense.get(d)[0], self.lex[key], self._colbert.get(c)

    def close(self) -> None:
        for r in (self._dense, self._colbert):
            if r is not None:
                r.close()
        self.rows.clear()
        self.lex.clear()


# ----------------------------------------------------------------------------- the model class
class BGEM3FlagModel:
    """``FlagEmbedding.BGEM3FlagModel`` on evalkit's core.

    ``encode`` returns ``{"dense_vecs": float32 [n, hidden] or None, "lexical_weights": [{token id
    (str): float32 weight}] or None, "colbert_vecs": [float32 [tokens - 1, dim]] or None}`` (one
    item instead of a list for a single string). Lexical weights: the positive ReLU weights per
    token id, the max over a token's repeats, the tokenizer's cls, eos, pad and unk tokens left out.
    ColBERT vectors: one per token after CLS (the eos token included), normalised.

    evalkit's additions: `dtype` (fp32 | fp16 | bf16; default FlagEmbedding's rule: fp16 only off
    the CPU), `cache` (an EmbeddingCache for the dense vectors and lexical weights), `embedder` (an Embedder already set
    up for this folder, whose network and cache are then shared), `from_spec` for the run plan.
    """

    def __init__(
        self,
        model_name_or_path: str,
        normalize_embeddings: bool = True,
        use_fp16: bool = True,
        use_bf16: bool = False,
        query_instruction_for_retrieval: str | None = None,
        query_instruction_format: str = "{}{}",
        devices=None,
        pooling_method: str = "cls",
        trust_remote_code: bool = False,
        cache_dir: str | None = None,
        colbert_dim: int = -1,
        batch_size: int = 256,
        query_max_length: int = 512,
        passage_max_length: int = 512,
        return_dense: bool = True,
        return_sparse: bool = False,
        return_colbert_vecs: bool = False,
        truncate_dim: int | None = None,
        *,
        dtype: str | None = None,
        cache=None,
        padding_side: str | None = None,
        model_id: str | None = None,
        revision: str | None = None,
        embedder=None,
        attention: str = "auto",
        **_ignored,
    ):
        from evalkit.models.embedder import Embedder
        from evalkit.models.encoder import resolve_devices
        from evalkit.models.flag import _model_path, flag_dtype
        from evalkit.models.loading import model_positions

        if truncate_dim is not None:
            raise EvalkitError("BGEM3FlagModel: truncate_dim is not supported by evalkit; leave it out")
        for name, v in (("batch size", batch_size), ("query_max_length", query_max_length), ("passage_max_length", passage_max_length)):
            if v is None or int(v) < 1:
                raise EvalkitError(f"{name} must be a positive integer, got {v!r}")
        self.model_name_or_path = str(model_name_or_path)  # as FlagEmbedding keeps it (evalkit.evaluate reads it)
        path, spec = _model_path(str(model_name_or_path))
        self.path = Path(path)
        self.repo_id = (spec.hub_id if spec else None) or (None if Path(str(model_name_or_path)).expanduser().exists() else str(model_name_or_path))
        self.revision = revision or (spec.revision if spec else None)
        devs = resolve_devices(devices)
        self.normalize_embeddings = bool(normalize_embeddings)
        self.pooling_method = pooling_method
        self.query_instruction_for_retrieval = query_instruction_for_retrieval
        self.query_instruction_format = query_instruction_format
        self.batch_size = int(batch_size)
        self.query_max_length = int(query_max_length)
        self.passage_max_length = int(passage_max_length)
        self.return_dense, self.return_sparse, self.return_colbert_vecs = return_dense, return_sparse, return_colbert_vecs
        self.max_positions = model_positions(self.path)
        self.embedder = embedder or Embedder(
            self.path, pooling=pooling_method, normalize=self.normalize_embeddings, max_length=self._cap(self.passage_max_length),
            dtype=flag_dtype(dtype, use_fp16, devs[0], use_bf16), batch_size=self.batch_size, devices=devs,
            padding_side=padding_side, trust_remote_code=trust_remote_code, cache=cache,
            model_id=model_id or (spec.hub_id if spec else None), revision=self.revision, attention=attention,
        )
        self._heads: tuple[str, str] | None = None
        self._colbert_dim: int | None = None
        self._unused: set[int] | None = None
        self._lex_ns: dict[int, tuple[str, dict]] = {}
        self.memo: M3Memo | None = None  # set by from_spec: the run plan's modes share their passes

    @classmethod
    def from_spec(cls, spec, embedder) -> "BGEM3FlagModel":
        """For the run plan: a catalog spec (bge-m3, or a local M3 folder) around the Embedder that the
        run's model pool already holds for it (evaluate.Models), so the network loads once, the dense
        vectors share its cache, and queries and passages both get its max length."""
        self = cls(
            str(embedder.path), normalize_embeddings=embedder.normalize, use_fp16=False, devices=embedder.devices,
            pooling_method=embedder.pooling, batch_size=embedder.config.batch_size, query_max_length=embedder.max_length,
            passage_max_length=embedder.max_length, revision=embedder.revision, embedder=embedder,
        )
        self.memo = M3Memo()
        if spec.hub_id:
            self.repo_id = spec.hub_id
        return self

    # -- what FlagEmbedding exposes
    @property
    def tokenizer(self):
        return self.embedder.tokenizer

    @property
    def model(self):
        return self.embedder.core.model

    @property
    def core(self):
        return self.embedder.core

    @property
    def vocab_size(self) -> int:
        return int(self.model.config.vocab_size)

    def stop_self_pool(self):
        self.close()

    def close(self):
        self.embedder.close()
        if self.memo is not None:
            self.memo.close()

    # -- encoding
    def encode(
        self, sentences, batch_size: int | None = None, max_length: int | None = None, return_dense: bool | None = None,
        return_sparse: bool | None = None, return_colbert_vecs: bool | None = None, **_ignored,
    ) -> dict:
        return self._encode(
            sentences, batch_size, max_length or self.passage_max_length, return_dense, return_sparse, return_colbert_vecs
        )

    def encode_queries(
        self, queries, batch_size: int | None = None, max_length: int | None = None, return_dense: bool | None = None,
        return_sparse: bool | None = None, return_colbert_vecs: bool | None = None, **_ignored,
    ) -> dict:
        from evalkit.models.flag import _texts

        single = isinstance(queries, str)
        texts = _texts(queries)
        if self.query_instruction_for_retrieval is not None:
            fmt = self.query_instruction_format.replace("\\n", "\n")
            texts = [fmt.format(self.query_instruction_for_retrieval, q) for q in texts]
        return self._encode(
            texts[0] if single else texts, batch_size, max_length or self.query_max_length, return_dense, return_sparse,
            return_colbert_vecs,
        )

    def encode_corpus(
        self, corpus, batch_size: int | None = None, max_length: int | None = None, return_dense: bool | None = None,
        return_sparse: bool | None = None, return_colbert_vecs: bool | None = None, **_ignored,
    ) -> dict:
        return self._encode(
            corpus, batch_size, max_length or self.passage_max_length, return_dense, return_sparse, return_colbert_vecs
        )

    def _encode(self, sentences, batch_size, max_length, dense, sparse, colbert) -> dict:
        from evalkit.models.flag import _texts

        dense = self.return_dense if dense is None else dense
        sparse = self.return_sparse if sparse is None else sparse
        colbert = self.return_colbert_vecs if colbert is None else colbert
        if not (dense or sparse or colbert):
            raise EvalkitError("BGEM3FlagModel.encode: ask for at least one of return_dense, return_sparse, return_colbert_vecs")
        if batch_size is not None and int(batch_size) < 1:
            raise EvalkitError(f"batch size must be a positive integer, got {batch_size!r}")
        single = isinstance(sentences, (str, dict))
        texts = [t if isinstance(t, str) else str(t) for t in _texts(sentences)]
        out = self.encode_texts(texts, max_length, batch_size, dense=dense, sparse=sparse, colbert=colbert)
        if single:
            out = {k: (v[0] if v is not None else None) for k, v in out.items()}
        return out

    def encode_texts(
        self, texts: Sequence[str], max_length: int | None = None, batch_size: int | None = None, *, dense: bool = True,
        sparse: bool = False, colbert: bool = False,
    ) -> dict:
        """The outputs asked for, for `texts` as they are (no instruction): ``dense_vecs`` float32
        [n, hidden] (None when not asked for), ``lexical_weights`` a list of dicts, ``colbert_vecs`` a
        list of float32 [tokens - 1, dim]. Each distinct text is encoded once; dense alone goes
        through the Embedder and its cache, lexical weights alone come from the cache where it holds
        them, and any other request is one pass of the network (which stores its lexical weights)."""
        ml = self._cap(int(max_length or self.passage_max_length))
        bs = int(batch_size or self.batch_size)
        if not (sparse or colbert):
            return {"dense_vecs": self.embedder.embed(list(texts), bs, ml), "lexical_weights": None, "colbert_vecs": None}
        if len(texts) == 0:
            return {
                "dense_vecs": np.zeros((0, 0), dtype=np.float32) if dense else None,
                "lexical_weights": [] if sparse else None,
                "colbert_vecs": [] if colbert else None,
            }
        uniq: dict[str, int] = {}
        inverse = [uniq.setdefault(t, len(uniq)) for t in texts]
        distinct = list(uniq)
        self.embedder.counts["duplicates"] += len(texts) - len(distinct)
        cached: dict[int, dict] = {}
        if not (dense or colbert):  # the sparse unit: lexical weights alone
            cached = {i: _unpack_lexical(b) for i, b in self.cached_lexical(distinct, ml).items()}
            self.embedder.counts["cached"] += len(cached)
        todo = [t for i, t in enumerate(distinct) if i not in cached]
        dense_u, lex_u, col_u = self._encode_distinct(todo, ml, bs, dense, sparse, colbert) if todo else (None, [], None)
        if cached:
            new = iter(lex_u)
            lex_u = [cached[i] if i in cached else next(new) for i in range(len(distinct))]
        return {
            "dense_vecs": dense_u[np.asarray(inverse, dtype=np.int64)] if dense else None,
            "lexical_weights": [lex_u[i] for i in inverse] if sparse else None,
            "colbert_vecs": [col_u[i] for i in inverse] if colbert else None,
        }

    def _encode_distinct(self, texts: list[str], ml: int, bs: int, dense: bool, sparse: bool, colbert: bool):
        if self.memo is not None:
            return self._memo_run(texts, ml, bs, colbert)
        return self._tracked_run(texts, ml, bs, dense, sparse, colbert)

    def cached_lexical(self, texts: Sequence[str], max_length: int | None = None) -> dict[int, bytes]:
        """Index in `texts` -> the lexical weights the cache holds for it at `max_length` (default the
        passage max length, capped as encoding caps it), packed (`_unpack_lexical`); {} without a cache."""
        ns = self.lexical_namespace(self._cap(int(max_length or self.passage_max_length)))
        return self.embedder.cache.get_blobs(ns[0], texts, unit=LEXICAL_RECORD) if ns is not None else {}

    def lexical_namespace(self, ml: int) -> tuple[str, dict] | None:
        """The embedding cache's namespace for this network's lexical weights at max length `ml`: the
        Embedder's fields (model, weights, dtype, ...) and the sparse head's own fingerprint. None
        without a cache. Lexical weights are small (LEXICAL_RECORD bytes a kept token) and persist across runs;
        ColBERT vectors (4 KiB a token on bge-m3) do not."""
        emb = self.embedder
        if emb.cache is None:
            return None
        if ml not in self._lex_ns:
            import hashlib

            from evalkit.cache import namespace_key

            head = hashlib.sha256(Path(self.head_paths()[1]).read_bytes()).hexdigest()[:16]
            fields = {**emb.namespace_fields, "max_length": ml, "output": "m3-lexical-weights", "sparse_head": head}
            self._lex_ns[ml] = (namespace_key(fields), fields)
        return self._lex_ns[ml]

    def _tracked_run(self, texts: list[str], ml: int, bs: int, dense: bool, sparse: bool, colbert: bool, **kw):
        progress = self.embedder.progress
        self.core.on_batch = progress.tracker(len(texts)) if progress is not None else None
        try:
            return self._run(texts, ml, bs, dense, sparse, colbert, **kw)
        finally:
            self.core.on_batch = None

    def _memo_run(self, texts: list[str], ml: int, bs: int, colbert: bool):
        """Every output of `texts`, from the memo where an earlier pass computed them; the rest in one
        pass computing all three (the heads cost little beside the network), each slice kept in the
        memo as it is done. ColBERT vectors stay off the heap unless asked for and over the budget."""
        memo = self.memo
        todo = [t for t in texts if not memo.has((t, ml))]
        spill: dict = {}  # asked-for ColBERT vectors that did not fit the memo

        def keep(idx, d, lex, cols):
            keys = [(todo[i], ml) for i in idx]
            memo.put(keys, d, lex, cols)
            if colbert:
                spill.update({k: c for k, c in zip(keys, cols) if not memo.has(k)})

        d_new = lex_new = None
        if todo:
            # the dense vectors computed here stay out of the embedding cache: the dense unit's own (the
            # Embedder's batches) are what a run file and mteb's dense evaluation read, in any unit order
            d_new, lex_new, _ = self._tracked_run(todo, ml, bs, True, True, True, on_slice=keep, keep_colbert=False, cache_dense=False)
        pos = {t: i for i, t in enumerate(todo)}
        self.embedder.counts["cached"] += len(texts) - len(todo)
        got = []
        for t in texts:
            if (t, ml) in spill or (t in pos and not memo.has((t, ml))):  # this pass's, not kept
                got.append((d_new[pos[t]], lex_new[pos[t]], spill.get((t, ml))))
            else:
                got.append(memo.get((t, ml)))
        return np.stack([g[0] for g in got]), [g[1] for g in got], [g[2] for g in got]

    def _run(self, texts: list[str], ml: int, bs: int, dense: bool, sparse: bool, colbert: bool, on_slice=None,
             keep_colbert: bool = True, cache_dense: bool = True):
        """The outputs asked for, slice by slice of at most SLICE_FLOATS head floats; `on_slice(indices,
        dense rows, lexical weights, ColBERT vectors)` sees each slice as it is done, and with
        `keep_colbert` False the ColBERT vectors are left to it (not kept for the return). Dense
        vectors go into the embedding cache unless `cache_dense` is False."""
        emb = self.embedder
        core = emb.core
        colbert_path, sparse_path = self.head_paths()
        hidden = int(core.model.config.hidden_size)
        cdim = self.colbert_dim()
        unused = self.unused_token_ids()
        n = len(texts)
        dense_out = np.zeros((n, hidden), dtype=np.float32) if dense else None
        lex: list = [None] * n
        cols: list = [None] * n
        use_cache = cache_dense and dense and emb.cache is not None and ml == emb.max_length
        if use_cache:
            emb.cache.register(emb.namespace, emb.namespace_fields)
        lex_ns = self.lexical_namespace(ml) if sparse else None
        if lex_ns is not None:
            emb.cache.register(*lex_ns)

        def parts():  # (indices, width, token features): slices longest first by characters, each tokenised one
            # ahead of the device (as Core.run_ahead does), sorted by its tokens and cut at SLICE_FLOATS head floats
            for chunk, chunk_feats in ahead(core.slices(longest_by_chars(texts), bs),
                                            lambda c: core.tokenize([texts[i] for i in c], ml), core.tokenize_ahead):
                feats = dict(zip(chunk, chunk_feats))  # this slice's, by input index
                order = sorted(chunk, key=lambda i: -len(feats[i]["input_ids"]))
                start = 0
                while start < len(order):
                    width = len(feats[order[start]]["input_ids"])
                    per_row = hidden * dense + width * sparse + (width - 1) * cdim * colbert
                    idx = order[start : start + max(1, SLICE_FLOATS // max(1, per_row))]
                    yield idx, width, feats
                    start += len(idx)

        for idx, width, feats in parts():
            head = M3Head(colbert_path, sparse_path, width, dense, sparse, colbert, self.normalize_embeddings, self.pooling_method)
            out = core.run([feats[i] for i in idx], head, bs)
            off = 0
            if dense:
                vecs = emb.check_finite(out[:, :hidden], [texts[i] for i in idx])
                dense_out[np.asarray(idx, dtype=np.int64)] = vecs
                if use_cache:
                    emb.cache.put_many(emb.namespace, [texts[i] for i in idx], vecs)
                off = hidden
            part = []
            for r, i in enumerate(idx):
                ids = feats[i]["input_ids"]
                k = len(ids)
                if sparse:
                    lex[i] = _token_weights(out[r, off : off + k], ids, unused)
                if colbert:
                    c0 = off + width * sparse
                    part.append(out[r, c0 : c0 + (k - 1) * cdim].reshape(k - 1, cdim).copy())
                    if keep_colbert:
                        cols[i] = part[-1]
            if lex_ns is not None:  # committed slice by slice: a killed run keeps every finished one
                emb.cache.put_blobs(lex_ns[0], [texts[i] for i in idx], [_pack_lexical(lex[i]) for i in idx])
            if on_slice is not None:
                on_slice(idx, dense_out[np.asarray(idx, dtype=np.int64)] if dense else None, [lex[i] for i in idx], part)
            emb.counts["encoded"] += len(idx)
        return dense_out, lex, cols

    def _cap(self, ml: int) -> int:
        if self.max_positions is not None and ml > self.max_positions:
            log.info("%s takes at most %d positions: max_length %d lowered to %d", self.path.name, self.max_positions, ml, self.max_positions)
            return self.max_positions
        return ml

    def head_paths(self) -> tuple[str, str]:
        if self._heads is None:
            self._heads = head_files(self.path, self.repo_id, self.revision)
        return self._heads

    def colbert_dim(self) -> int:
        if self._colbert_dim is None:
            self._colbert_dim = int(_load_linear(self.head_paths()[0]).out_features)
        return self._colbert_dim

    def unused_token_ids(self) -> set[int]:
        """FlagEmbedding's tokens that get no lexical weight: the tokenizer's cls, eos, pad and unk."""
        if self._unused is None:
            tok = self.tokenizer
            ids = set()
            for name in _UNUSED_TOKENS:
                token = getattr(tok, name, None)
                if token is not None:
                    ids.add(int(tok.convert_tokens_to_ids(str(token))))
            self._unused = ids
        return self._unused

    # -- scoring, as FlagEmbedding
    def convert_id_to_token(self, lexical_weights):
        single = isinstance(lexical_weights, dict)
        items = [lexical_weights] if single else lexical_weights
        out = [{self.tokenizer.decode([int(i)]): w for i, w in item.items()} for item in items]
        return out[0] if len(out) == 1 else out

    def compute_lexical_matching_score(self, lexical_weights_1, lexical_weights_2):
        """A float for two dicts; a numpy [len(1), len(2)] matrix for two lists of dicts."""
        if isinstance(lexical_weights_1, dict) and isinstance(lexical_weights_2, dict):
            return lexical_matching_score(lexical_weights_1, lexical_weights_2)
        if isinstance(lexical_weights_1, list) and isinstance(lexical_weights_2, list):
            return np.array([[lexical_matching_score(a, b) for b in lexical_weights_2] for a in lexical_weights_1])
        raise EvalkitError("compute_lexical_matching_score takes two dicts of lexical weights, or two lists of them")

    def colbert_score(self, q_reps, p_reps):
        """FlagEmbedding's ColBERT score of two texts' vectors (a 0-d torch tensor, as FlagEmbedding's)."""
        import torch

        q, p = torch.from_numpy(np.asarray(q_reps)), torch.from_numpy(np.asarray(p_reps))
        token_scores = torch.einsum("in,jn->ij", q, p)
        scores, _ = token_scores.max(-1)
        return torch.sum(scores) / q.size(0)

    def compute_score(
        self, sentence_pairs, batch_size: int | None = None, max_query_length: int | None = None,
        max_passage_length: int | None = None, weights_for_different_modes: Sequence[float] | None = None, **_ignored,
    ) -> dict:
        """``{"colbert", "sparse", "dense", "sparse+dense", "colbert+sparse+dense"}`` -> a list of
        floats per pair (a float each for one pair), weights [w_dense, w_sparse, w_colbert] (default
        [1, 1, 1]).

        As FlagEmbedding's: its pairs go in batches of `batch_size` in input order, and a passage
        shorter than the longest passage of its batch is padded with zero ColBERT vectors, which
        take part in each query token's max (a query token whose best match is negative scores 0
        there). evalkit encodes each distinct text once, in its own length-sorted batches, and
        reproduces that rule from the lengths, so its scores equal FlagEmbedding's.
        """
        from evalkit.models.reranker import _pairs

        if isinstance(sentence_pairs, list) and len(sentence_pairs) == 0:
            return []
        pairs, single = _pairs(sentence_pairs)
        bs = int(batch_size or self.batch_size)
        if bs < 1:
            raise EvalkitError(f"batch size must be a positive integer, got {batch_size!r}")
        if weights_for_different_modes is None:
            w = [1.0, 1.0, 1.0]
        else:
            w = [float(x) for x in weights_for_different_modes]
            if len(w) != 3:
                raise EvalkitError(f"weights_for_different_modes are three numbers (dense, sparse, colbert), got {weights_for_different_modes!r}")
        q = self.encode_texts([p[0] for p in pairs], max_query_length or self.query_max_length, bs, dense=True, sparse=True, colbert=True)
        p = self.encode_texts([p[1] for p in pairs], max_passage_length or self.passage_max_length, bs, dense=True, sparse=True, colbert=True)
        n = len(pairs)
        dense = np.einsum("ij,ij->i", q["dense_vecs"], p["dense_vecs"]).astype(np.float32)
        sparse = np.array(
            [lexical_matching_score(a, b) for a, b in zip(q["lexical_weights"], p["lexical_weights"])], dtype=np.float32
        )
        plen = np.array([len(v) for v in p["colbert_vecs"]], dtype=np.int64)
        colbert = np.empty(n, dtype=np.float32)
        for b0 in range(0, n, bs):
            longest = plen[b0 : b0 + bs].max()
            for i in range(b0, min(n, b0 + bs)):
                qv = q["colbert_vecs"][i]
                best = (qv @ p["colbert_vecs"][i].T).max(axis=1)
                if plen[i] < longest:  # FlagEmbedding's zero padding vectors
                    best = np.maximum(best, np.float32(0))
                colbert[i] = best.sum(dtype=np.float32) / np.float32(len(qv))
        scores = {
            "colbert": colbert,
            "sparse": sparse,
            "dense": dense,
            "sparse+dense": (sparse * w[1] + dense * w[0]) / (w[1] + w[0]),
            "colbert+sparse+dense": (colbert * w[2] + sparse * w[1] + dense * w[0]) / sum(w),
        }
        out = {k: np.asarray(scores[k], dtype=np.float32).tolist() for k in SCORE_KEYS}
        return {k: v[0] for k, v in out.items()} if single else out


def _pack_lexical(weights: dict) -> bytes:
    """Lexical weights as the cache keeps them: the token ids (int32), then their weights (float32), in order."""
    return np.fromiter(map(int, weights), dtype=np.int32, count=len(weights)).tobytes() + np.fromiter(
        weights.values(), dtype=np.float32, count=len(weights)).tobytes()


def _unpack_lexical(blob: bytes) -> dict:
    k = len(blob) // LEXICAL_RECORD
    ids = np.frombuffer(blob, dtype=np.int32, count=k)
    return dict(zip(map(str, ids.tolist()), np.frombuffer(blob, dtype=np.float32, offset=4 * k)))


def _token_weights(weights: np.ndarray, ids: Sequence[int], unused: set[int]) -> dict:
    """{token id (str): weight}: positive weights only, special tokens left out, the max over a
    token's repeats, in order of first appearance (FlagEmbedding's _process_token_weights)."""
    ids_a = np.asarray(ids, dtype=np.int64)
    keep = weights > 0
    if unused:
        keep &= ~np.isin(ids_a, np.fromiter(unused, dtype=np.int64))
    if not keep.any():
        return {}
    ids_k, w_k = ids_a[keep], weights[keep].astype(np.float32)
    uniq, first, inv = np.unique(ids_k, return_index=True, return_inverse=True)
    best = np.zeros(len(uniq), dtype=np.float32)
    np.maximum.at(best, inv, w_k)
    seq = np.argsort(first, kind="stable")
    return {str(int(uniq[j])): best[j] for j in seq}
