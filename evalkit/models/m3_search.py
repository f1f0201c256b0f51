"""BGE-M3's retrieval modes in the run plan: sparse, ColBERT and hybrid search, scored by mteb.

A mode is a variant of a multi-function embedder's unit (`M3Mode`, `--m3-mode`):

- dense: the plain unit, mteb's own evaluation of the dense vectors (nothing here);
- sparse: lexical matching over the whole corpus, as an inverted index would give it: each query's
  best `top_k` documents among those sharing a token with it, computed as sparse matrix products of
  the lexical weights (`m3.lexical_matrix`), corpus chunk by corpus chunk and query block by query
  block, so memory stays bounded;
- colbert, hybrid[:w_dense,w_sparse,w_colbert]: the dense unit's top-k per query (its run file, as
  for a reranker) rescored by the ColBERT score or FlagEmbedding's weighted sum of the three. The
  hybrid's dense part is the run file's own score, so weights [1, 0, 0] give the dense ranking
  exactly. On a Reranking task every mode scores the task's own candidates.

`M3Search` is mteb 2.x's SearchProtocol (index, search, mteb_model_meta): mteb's retrieval
evaluator calls it and computes every metric, as for any other model. Its texts are mteb's (the
same data loaders as mteb's search wrapper) formatted by the unit's adapter (instruction, few-shot
prefix), so every mode sees exactly the inputs of the dense unit.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from evalkit.errors import EvalkitError
from evalkit.tasks.registry import RETRIEVAL_TYPES

log = logging.getLogger("evalkit")

M3_MODES = ("dense", "sparse", "colbert", "hybrid")
M3_TYPES = RETRIEVAL_TYPES  # where the modes other than dense are scored (an Instruction task's queries with their instruction)
DEFAULT_WEIGHTS = (0.4, 0.2, 0.4)  # dense, sparse, colbert: BGE-M3's model card
DOC_CHUNK = 4096  # documents encoded and scored per step of the sparse search
QUERY_BLOCK = 256  # queries per sparse score block: QUERY_BLOCK x DOC_CHUNK float32
RESCORE_BYTES = 1 << 30  # the most a rescoring block's candidates' ColBERT vectors can take (an upper bound from their lengths)


def _num(x: float) -> str:
    return f"{x:g}"


@dataclass(frozen=True)
class M3Mode:
    """One retrieval mode of a multi-function embedder; `weights` (dense, sparse, colbert) for hybrid."""

    name: str
    weights: tuple[float, float, float] | None = None

    def __post_init__(self):
        if self.name not in M3_MODES:
            raise EvalkitError(f"unknown M3 mode {self.name!r}: use dense, sparse, colbert or hybrid[:W_DENSE,W_SPARSE,W_COLBERT]")
        if (self.name == "hybrid") != (self.weights is not None):
            raise EvalkitError("an M3 hybrid mode takes three weights (dense, sparse, colbert), the other modes none")
        if self.weights is not None:
            if len(self.weights) != 3 or any(w < 0 for w in self.weights) or sum(self.weights) <= 0:
                raise EvalkitError(f"M3 hybrid weights are three non-negative numbers (dense, sparse, colbert) with a positive sum, got {list(self.weights)}")

    @property
    def rescores(self) -> bool:
        """Whether a retrieval task's search is the dense top-k rescored (else the whole corpus)."""
        return self.name in ("colbert", "hybrid")

    @property
    def slug(self) -> str:
        return self.name + ("-" + "-".join(_num(w) for w in self.weights) if self.weights else "")

    @property
    def label(self) -> str:
        return self.name + (" " + "/".join(_num(w) for w in self.weights) if self.weights else "")

    @property
    def outputs(self) -> tuple[bool, bool, bool]:
        """(dense, sparse, colbert): what the mode's score needs."""
        if self.name == "hybrid":
            return tuple(w > 0 for w in self.weights)
        return tuple(self.name == m for m in ("dense", "sparse", "colbert"))


def parse_m3_modes(values) -> list[M3Mode]:
    """`--m3-mode` values (each a comma list; `all` = dense, sparse, colbert, hybrid) -> modes, in
    order, each once. A hybrid's weights follow it: `hybrid:0.4,0.2,0.4` (default 0.4, 0.2, 0.4)."""
    modes: list[M3Mode] = []
    for value in [values] if isinstance(values, str) else list(values or []):
        tokens = [t.strip() for t in str(value).split(",") if t.strip()]
        i = 0
        while i < len(tokens):
            tok = tokens[i].lower()
            i += 1
            if tok == "all":
                modes += [M3Mode("dense"), M3Mode("sparse"), M3Mode("colbert"), M3Mode("hybrid", DEFAULT_WEIGHTS)]
            elif tok == "hybrid":
                modes.append(M3Mode("hybrid", DEFAULT_WEIGHTS))
            elif tok.startswith("hybrid:"):
                raw = [tok.split(":", 1)[1]] + tokens[i : i + 2]
                i += 2
                try:
                    w = tuple(float(x) for x in raw)
                except ValueError:
                    w = ()
                if len(w) != 3:
                    raise EvalkitError(f"--m3-mode hybrid takes three weights, as hybrid:0.4,0.2,0.4 (dense, sparse, colbert), got {','.join(raw)!r}")
                modes.append(M3Mode("hybrid", w))
            else:
                modes.append(M3Mode(tok))
    if not modes:
        raise EvalkitError("--m3-mode is empty: give dense, sparse, colbert, hybrid[:W1,W2,W3] or all")
    return list(dict.fromkeys(modes))


class M3Search:
    """mteb's SearchProtocol for one M3 mode (see the module docstring).

    `adapter` is the unit's EmbeddingAdapter (inputs, model meta), `m3` a BGEM3FlagModel on the
    same network, `first_stage` the dense unit's run ({subset: {split: {query: {doc: score}}}}),
    whose scores are the hybrid's dense part where the task's candidates come from it."""

    def __init__(self, adapter, m3, mode: M3Mode, first_stage: dict | None = None):
        self.adapter, self.m3, self.mode = adapter, m3, mode
        self.first_stage = first_stage
        self.corpus = None

    @property
    def mteb_model_meta(self):
        return self.adapter.mteb_model_meta

    def index(self, corpus, *, task_metadata, hf_split: str, hf_subset: str, encode_kwargs, num_proc=None, **kwargs) -> None:
        self.corpus = corpus

    def search(self, queries, *, task_metadata, hf_split: str, hf_subset: str, top_k: int, encode_kwargs, top_ranked=None,
               num_proc=None, **kwargs) -> dict[str, dict[str, float]]:
        from mteb.types import PromptType

        ctx = dict(task_metadata=task_metadata, hf_split=hf_split, hf_subset=hf_subset)
        bs = int(encode_kwargs.get("batch_size") or self.m3.batch_size)
        q_ids = [str(x) for x in queries["id"]]
        q_texts = self._texts(queries, PromptType.query, bs, **ctx)
        d_ids = [str(x) for x in self.corpus["id"]]
        d_texts = self._texts(self.corpus, PromptType.document, bs, **ctx)
        if top_ranked is None:
            if self.mode.name != "sparse":
                raise EvalkitError(f"M3 {self.mode.name} rescores candidates: task {task_metadata.name} gave none")
            return self._sparse_search(q_ids, q_texts, d_ids, d_texts, int(top_k), bs)
        dense_scores = (self.first_stage or {}).get(hf_subset, {}).get(hf_split)
        return self._rescore(q_ids, q_texts, d_ids, d_texts, top_ranked, dense_scores, bs)

    # -- inputs, as mteb's search wrapper hands them to an encoder
    def _texts(self, data, prompt_type, bs: int, *, task_metadata, hf_split: str, hf_subset: str) -> list[str]:
        from mteb._create_dataloaders import create_dataloader

        loader = create_dataloader(data, task_metadata=task_metadata, prompt_type=prompt_type, batch_size=bs)
        texts = [t for batch in loader for t in batch["text"]]
        return self.adapter.format_inputs(texts, task_metadata, prompt_type, hf_split=hf_split, hf_subset=hf_subset)

    def _encode(self, texts: list[str], bs: int, dense=False, sparse=False, colbert=False) -> dict:
        if not (dense or sparse or colbert):  # a hybrid of the first stage's scores alone
            return {"dense_vecs": None, "lexical_weights": None, "colbert_vecs": None}
        return self.m3.encode_texts(texts, self.m3.passage_max_length, bs, dense=dense, sparse=sparse, colbert=colbert)

    # -- sparse over the whole corpus
    def _sparse_search(self, q_ids, q_texts, d_ids, d_texts, top_k: int, bs: int) -> dict:
        from evalkit.models.m3 import lexical_matrix

        vocab = self.m3.vocab_size
        q = lexical_matrix(self._encode(q_texts, bs, sparse=True)["lexical_weights"], vocab)
        best_s = [np.zeros(0, np.float32) for _ in q_ids]
        best_d = [np.zeros(0, np.int64) for _ in q_ids]
        for c0 in range(0, len(d_ids), DOC_CHUNK):
            docs_t = lexical_matrix(self._encode(d_texts[c0 : c0 + DOC_CHUNK], bs, sparse=True)["lexical_weights"], vocab).T.tocsc()
            for b0 in range(0, len(q_ids), QUERY_BLOCK):
                scores = (q[b0 : b0 + QUERY_BLOCK] @ docs_t).toarray()
                for r, row in enumerate(scores):
                    hit = np.flatnonzero(row > 0)  # an inverted index finds the documents sharing a token
                    i = b0 + r
                    s = np.concatenate([best_s[i], row[hit]])
                    d = np.concatenate([best_d[i], hit + c0])
                    keep = np.lexsort((d, -s))[:top_k]  # best first; equal scores: corpus order
                    best_s[i], best_d[i] = s[keep], d[keep]
        return {qid: {d_ids[j]: float(x) for j, x in zip(best_d[i], best_s[i])} for i, qid in enumerate(q_ids)}

    # -- every mode over given candidates
    def _rescore(self, q_ids, q_texts, d_ids, d_texts, top_ranked: dict, dense_scores: dict | None, bs: int) -> dict:
        """Block by block of queries whose candidates' ColBERT vectors can take at most RESCORE_BYTES
        (estimated from each text's length: a token per character at most, and no more than the
        max length; an upper bound for the usual tokenizers). A block's outputs (from the run's
        memo where an earlier mode computed them) are held for that block only, so memory grows
        neither with the corpus nor with long texts."""
        from evalkit.models.m3 import LEXICAL_RECORD, colbert_scores, hybrid_scores, lexical_matrix

        row_of = {d: i for i, d in enumerate(d_ids)}
        wants = [q for q in q_ids if top_ranked.get(q)]
        missing = next((d for q in wants for d in top_ranked[q] if d not in row_of), None)
        if missing is not None:
            raise EvalkitError(f"candidate {missing!r} is not in the corpus: the run file or the task's top_ranked does not match its corpus")
        need_dense, need_sparse, need_colbert = self.mode.outputs
        use_first = need_dense and dense_scores is not None  # the hybrid's dense part: the first stage's own scores
        enc_dense = need_dense and not use_first
        text_of = dict(zip(q_ids, q_texts))
        vocab = self.m3.vocab_size
        results: dict = {}
        most = self.m3.passage_max_length
        row_bytes = 4 * self.m3.colbert_dim() if need_colbert else LEXICAL_RECORD  # else a token's lexical weight
        cost = lambda d: (min(len(d_texts[row_of[d]]), most) + 1) * row_bytes  # noqa: E731
        for block in _blocks(wants, top_ranked, cost):
            cand = list(dict.fromkeys(d for q in block for d in top_ranked[q]))
            pos = {d: i for i, d in enumerate(cand)}
            do = self._encode([d_texts[row_of[d]] for d in cand], bs, enc_dense, need_sparse, need_colbert)
            qo = self._encode([text_of[q] for q in block], bs, enc_dense, need_sparse, need_colbert)
            d_sparse = lexical_matrix(do["lexical_weights"], vocab) if need_sparse else None
            q_sparse = lexical_matrix(qo["lexical_weights"], vocab) if need_sparse else None
            for r, qid in enumerate(block):
                docs = list(dict.fromkeys(top_ranked[qid]))
                rows = np.fromiter((pos[d] for d in docs), dtype=np.int64, count=len(docs))
                parts = [None, None, None]
                if use_first:
                    given = dense_scores.get(qid, {})
                    parts[0] = np.array([given[d] for d in docs], dtype=np.float32)
                elif enc_dense:
                    parts[0] = (do["dense_vecs"][rows] @ qo["dense_vecs"][r]).astype(np.float32)
                if need_sparse:
                    parts[1] = (d_sparse[rows] @ q_sparse[r].T).toarray().ravel().astype(np.float32)
                if need_colbert:
                    parts[2] = colbert_scores(qo["colbert_vecs"][r], [do["colbert_vecs"][i] for i in rows])
                if self.mode.name == "hybrid":
                    s = hybrid_scores(*parts, weights=self.mode.weights)
                else:
                    s = parts[("dense", "sparse", "colbert").index(self.mode.name)]
                results[qid] = {d: float(x) for d, x in zip(docs, s)}
        return results


def _blocks(queries: list, top_ranked: dict, cost):
    """Consecutive blocks of at most QUERY_BLOCK queries whose distinct candidates cost at most
    RESCORE_BYTES in all (a query whose own candidates cost more is a block of its own)."""
    block: list = []
    seen: set = set()
    held = 0
    for q in queries:
        new = set(top_ranked[q]) - seen
        extra = sum(cost(d) for d in new)
        if block and (len(block) >= QUERY_BLOCK or held + extra > RESCORE_BYTES):
            yield block
            block, seen, held = [], set(), 0
            new = set(top_ranked[q])
            extra = sum(cost(d) for d in new)
        block.append(q)
        seen |= new
        held += extra
    if block:
        yield block
