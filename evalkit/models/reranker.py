"""Rerankers: (query, passage) -> relevance score, on the same encoder core as the embedders.

`FlagReranker` is a cross-encoder (AutoModelForSequenceClassification; score = ``logits.view(-1)``),
`FlagLLMReranker` a decoder LLM scored by the logit of "Yes" after FlagEmbedding's prompt. Both keep
FlagEmbedding's public API (``compute_score``), so BGE model-card code runs unchanged, and both hand
their batches to `Core`: length-sorted, padded per batch, OOM back-off, input order restored.

`RerankerAdapter` satisfies mteb 2.x's CrossEncoderProtocol: mteb's retrieval evaluator hands it the
(query, candidate) pairs of a task's `top_ranked` lists and scores what it returns.
"""
from __future__ import annotations

import functools
import logging
import math
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from evalkit.errors import EvalkitError
from evalkit.models.encoder import Core, CoreConfig, LogitHead, TokenLogitHead, resolve_devices, resolve_dtype

log = logging.getLogger("evalkit")

RERANKER_KINDS = ("reranker", "llm-reranker")
LLM_PROMPT = (
    "Given a query A and a passage B, determine whether the passage contains an answer to the query "
    "by providing a prediction of either 'Yes' or 'No'."
)


def sigmoid(x: float) -> float:
    # FlagEmbedding: float(1 / (1 + np.exp(-x))), without the overflow warning for large negative x
    return float(1.0 / (1.0 + math.exp(-x))) if x >= 0 else float(math.exp(x) / (1.0 + math.exp(x)))


def _pairs(sentence_pairs) -> tuple[list[tuple[str, str]], bool]:
    """(pairs, single): one pair (q, p) or a list of pairs; rejects anything else with one line."""
    if isinstance(sentence_pairs, tuple) and len(sentence_pairs) == 2 and all(isinstance(s, str) for s in sentence_pairs):
        return [sentence_pairs], True
    if isinstance(sentence_pairs, list) and len(sentence_pairs) == 2 and all(isinstance(s, str) for s in sentence_pairs):
        return [tuple(sentence_pairs)], True  # FlagEmbedding: ['query', 'passage'] is one pair
    try:
        pairs = [tuple(p) for p in sentence_pairs]
    except TypeError:
        pairs = None
    if pairs is None or any(len(p) != 2 or not all(isinstance(s, str) for s in p) for p in pairs):
        raise EvalkitError("compute_score takes one (query, passage) pair of strings or a list of such pairs")
    return pairs, False


def join_only_second(first: list[int], second: list[int], max_length: int, side: str = "right") -> list[int]:
    """``prepare_for_model(first, second, truncation="only_second", max_length=..., add_special_tokens=False)``
    of transformers 4.x (which FlagEmbedding calls; transformers 5's fast tokenizers no longer have it):
    the second sequence loses the overflow from its end (its start for ``truncation_side="left"``); when
    the overflow is as long as the whole second sequence, transformers logs an error and cuts nothing."""
    n = len(first) + len(second) - max_length
    if n > 0 and len(second) > n:
        second = second[:-n] if side == "right" else second[n:]
    return list(first) + list(second)


# ----------------------------------------------------------------------------- tokenisation
CHUNK = 256  # distinct texts per tokenizer call: bounds the tokenizer's own memory on long documents


def token_ids(tok, texts) -> list[list[int]]:
    """Each text's ids without special tokens, untruncated."""
    return [x for s in range(0, len(texts), CHUNK)
            for x in tok(texts[s : s + CHUNK], add_special_tokens=False, truncation=False, verbose=False)["input_ids"]]


def distinct_token_ids(tok, texts, keep: int, ids_of: Callable | None = None) -> dict[str, tuple[list[int], int]]:
    """text -> (its ids without special tokens, cut to the `keep` tokens truncation could retain, full length).

    Each distinct text is tokenised once and without truncation: a reranking run pairs every query
    with ~100 documents and every document with several queries, and the tokenizer's own truncation
    of long pairs (overflow windows) costs several times the encoding itself, in time and memory.
    `ids_of(texts)`: their `token_ids` (default: with `tok`, here; a core's threads: Core.in_threads).
    """
    left = getattr(tok, "truncation_side", "right") == "left"
    uniq = list(dict.fromkeys(texts))
    out: dict[str, tuple[list[int], int]] = {}
    for t, x in zip(uniq, ids_of(uniq) if ids_of is not None else token_ids(tok, uniq)):
        out[t] = ((x[-keep:] if keep > 0 else []) if left else x[: max(keep, 0)], len(x))
    return out


def _cut(ids: list[int], n: int, left: bool) -> list[int]:
    if n >= len(ids):
        return ids
    return (ids[len(ids) - n :] if n > 0 else []) if left else ids[:n]


def pair_template(tok):
    """How the tokenizer joins a pair: [("special", id, type) | ("first", type) | ("second", type)], or None.

    Read off the tokenizer's own encoding of a probe pair (its post-processor: [CLS] a [SEP] b [SEP],
    <s> a </s></s> b </s>, ...); None where the encoding does not show it plainly.
    """
    try:
        enc = tok("a", "b")
        encoding = enc.encodings[0]
    except Exception:
        return None
    if encoding is None:
        return None
    ids, types, seqs = encoding.ids, encoding.type_ids, encoding.sequence_ids
    a = tok("a", add_special_tokens=False)["input_ids"]
    b = tok("b", add_special_tokens=False)["input_ids"]
    template, i = [], 0
    while i < len(ids):
        if seqs[i] is None:
            template.append(("special", ids[i], types[i]))
            i += 1
            continue
        j = i
        while j < len(ids) and seqs[j] == seqs[i]:
            j += 1
        if len(set(types[i:j])) != 1:
            return None
        template.append(("first" if seqs[i] == 0 else "second", types[i]))
        if ids[i:j] != (a if seqs[i] == 0 else b):
            return None
        i = j
    if [t[0] for t in template if t[0] != "special"] != ["first", "second"]:
        return None
    return template


def longest_first(n1: int, n2: int, budget: int) -> tuple[int, int]:
    """The lengths tokenizers' LongestFirst truncation keeps of a pair (tokenizers/src/utils/truncation.rs)."""
    if n1 + n2 <= budget:
        return n1, n2
    swap = n1 > n2
    if swap:
        n1, n2 = n2, n1
    n2 = n1 if n1 > budget else max(n1, budget - n1)
    if n1 + n2 > budget:
        n1 = budget // 2
        n2 = n1 + budget % 2
    return (n2, n1) if swap else (n1, n2)


def pair_features(tok, pairs, max_length: int, ids_of: Callable | None = None) -> list[dict] | None:
    """Exactly ``tokenizer(firsts, seconds, truncation=True, max_length=max_length)`` (longest-first), per
    pair, without special-casing any model: distinct texts tokenised once (`ids_of`: distinct_token_ids),
    the tokenizer's truncation rule and its own pair template applied to the ids. None where the template
    cannot be read."""
    template = pair_template(tok)
    if template is None:
        return None
    n_special = sum(1 for t in template if t[0] == "special")
    budget = max_length - n_special
    if budget <= 0:
        return None
    left = getattr(tok, "truncation_side", "right") == "left"
    with_types = "token_type_ids" in getattr(tok, "model_input_names", ())
    firsts = distinct_token_ids(tok, [p[0] for p in pairs], budget, ids_of)
    seconds = distinct_token_ids(tok, [p[1] for p in pairs], budget, ids_of)
    feats = []
    for q, d in pairs:
        (qi, n1), (di, n2) = firsts[q], seconds[d]
        k1, k2 = longest_first(n1, n2, budget)
        parts = {"first": _cut(qi, k1, left), "second": _cut(di, k2, left)}
        ids: list[int] = []
        types: list[int] = []
        for t in template:
            if t[0] == "special":
                ids.append(t[1])
                types.append(t[2])
            else:
                ids.extend(parts[t[0]])
                types.extend([t[1]] * len(parts[t[0]]))
        feats.append({"input_ids": ids, "token_type_ids": types} if with_types else {"input_ids": ids})
    return feats


class _Reranker:
    """What both rerankers share: resolve the model, load the core on first use, run a head."""

    kind = "reranker"

    def __init__(
        self, model_name_or_path, *, use_fp16: bool, use_bf16: bool = False, dtype: str | None, max_length: int,
        batch_size: int, devices, normalize: bool, trust_remote_code: bool, padding_side: str | None,
        query_instruction_for_rerank: str | None, query_instruction_format: str,
        passage_instruction_for_rerank: str | None, passage_instruction_format: str,
        revision: str | None = None, model_id: str | None = None, attention: str = "auto",
    ):
        from evalkit.models.flag import _model_path, flag_dtype
        from evalkit.models.loading import folder_revision, model_positions

        if batch_size is None or int(batch_size) < 1:
            raise EvalkitError(f"batch size must be a positive integer, got {batch_size!r}")
        if max_length is None or int(max_length) < 1:
            raise EvalkitError(f"max_length must be a positive integer, got {max_length!r}")
        self.model_name_or_path = str(model_name_or_path)  # as FlagEmbedding keeps it (evalkit.evaluate reads it)
        path, spec = _model_path(str(model_name_or_path))
        self.path = Path(path)
        self.devices = resolve_devices(devices)
        self.dtype = resolve_dtype(flag_dtype(dtype, use_fp16, self.devices[0], use_bf16), self.devices[0])
        self.batch_size = int(batch_size)
        self.normalize = bool(normalize)
        self.query_instruction_for_rerank = query_instruction_for_rerank
        self.query_instruction_format = query_instruction_format
        self.passage_instruction_for_rerank = passage_instruction_for_rerank
        self.passage_instruction_format = passage_instruction_format
        self.model_id = model_id or (spec.hub_id if spec else None) or str(model_name_or_path)
        self.revision = revision or (spec.revision if spec and spec.revision else None) or folder_revision(self.path)
        self.weights = folder_revision(self.path)
        self.config = CoreConfig(str(self.path), self.kind, self.dtype, self.batch_size, padding_side, trust_remote_code, attention=attention)
        limit = model_positions(self.path)
        self.max_length = int(max_length)
        if limit is not None and self.max_length > limit:
            log.warning("%s takes at most %d positions: max_length %d lowered to %d", self.path.name, limit, self.max_length, limit)
            self.max_length = limit
        self._core: Core | None = None
        self.counts = {"pairs": 0}
        self.progress = None  # evalkit.progress.Progress: told about loading and scoring

    @property
    def core(self) -> Core:
        if self._core is None:
            log.info("loading reranker %s on %s (%s)", self.path, ",".join(self.devices), self.dtype)
            if self.progress is not None:
                self.progress.phase(f"loading reranker {self.model_id} on {','.join(self.devices)} ({self.dtype})")
            self._core = Core(self.config, self.devices)
        return self._core

    @property
    def tokenizer(self):
        return self.core.tokenizer

    @property
    def model(self):
        return self.core.model

    def _instructed(self, pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """FlagEmbedding's get_detailed_inputs: instructions on the query and/or the passage."""
        qi, pi = self.query_instruction_for_rerank, self.passage_instruction_for_rerank
        if qi is None and pi is None:
            return pairs
        return [
            (
                self.query_instruction_format.format(qi, q) if qi is not None else q,
                self.passage_instruction_format.format(pi, p) if pi is not None else p,
            )
            for q, p in pairs
        ]

    def compute_score(self, sentence_pairs, normalize: bool | None = None, batch_size: int | None = None, max_length: int | None = None, **kwargs):
        """A float for one (query, passage) pair, a list of floats for a list of pairs (in input order)."""
        pairs, single = _pairs(sentence_pairs)
        if batch_size is not None and int(batch_size) < 1:
            raise EvalkitError(f"batch size must be a positive integer, got {batch_size!r}")
        ml = int(max_length or self.max_length)
        scores = self.score_pairs(self._instructed(pairs), batch_size, ml, **kwargs) if pairs else np.zeros((0,), np.float32)
        self.counts["pairs"] += len(pairs)
        out = [float(s) for s in scores]
        if self.normalize if normalize is None else normalize:
            out = [sigmoid(s) for s in out]
        return out[0] if single else out

    def score_pairs(self, pairs, batch_size, max_length, **kwargs) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def close(self) -> None:
        if self._core is not None:
            self._core.close()

    def stop_self_pool(self):
        self.close()


class FlagReranker(_Reranker):
    """``FlagEmbedding.FlagReranker``: a cross-encoder's logit per (query, passage) pair.

    Input as the model card's reference code builds it: ``tokenizer(q, p, truncation=True,
    max_length=max_length)`` (longest-first truncation), score ``logits.view(-1).float()``.
    """

    kind = "reranker"

    def __init__(
        self,
        model_name_or_path: str,
        use_fp16: bool = False,
        max_length: int = 512,
        batch_size: int = 128,
        devices=None,
        normalize: bool = False,
        query_instruction_for_rerank: str | None = None,
        query_instruction_format: str = "{}{}",
        passage_instruction_for_rerank: str | None = None,
        passage_instruction_format: str = "{}{}",
        trust_remote_code: bool = False,
        dtype: str | None = None,
        padding_side: str | None = None,
        revision: str | None = None,
        model_id: str | None = None,
        attention: str = "auto",
        **_ignored,
    ):
        super().__init__(
            model_name_or_path, use_fp16=use_fp16, dtype=dtype, max_length=max_length, batch_size=batch_size,
            devices=devices, normalize=normalize, trust_remote_code=trust_remote_code, padding_side=padding_side,
            query_instruction_for_rerank=query_instruction_for_rerank, query_instruction_format=query_instruction_format,
            passage_instruction_for_rerank=passage_instruction_for_rerank, passage_instruction_format=passage_instruction_format,
            revision=revision, model_id=model_id, attention=attention,
        )

    def features(self, pairs, max_length: int) -> list[dict]:
        """The model's input per pair: what ``tokenizer(q, p, truncation=True, max_length=...)`` gives."""
        ids_of = functools.partial(self.core.in_threads, token_ids)  # on a GPU host, in threads
        feats = pair_features(self.tokenizer, list(pairs), int(max_length), ids_of)
        if feats is None:  # a tokenizer whose pair template cannot be read: its own pair call
            feats = self.core.tokenize(list(pairs), int(max_length))
        return feats

    def score_pairs(self, pairs, batch_size=None, max_length=None, **_kw) -> np.ndarray:
        ml = int(max_length or self.max_length)
        return self.core.run_ahead(list(pairs), lambda part: self.features(part, ml), LogitHead(), batch_size)


class FlagLLMReranker(_Reranker):
    """``FlagEmbedding.FlagLLMReranker`` (bge-reranker-v2-gemma): the logit of "Yes" at the last position.

    Input, as FlagEmbedding builds it: the query "A: {q}" (at most ``query_max_length`` = 3/4 of
    ``max_length`` tokens unless given) and the passage "B: {p}" (at most ``max_length``), tokenised
    without special tokens; ``[bos] + query`` (bos only where the tokenizer has one distinct from its
    pad token) and ``"\\n" + passage`` joined as ``prepare_for_model`` joins them with ``only_second`` truncation
    to ``max_length + len(sep) + len(prompt)``, then ``"\\n" + prompt`` appended.
    """

    kind = "llm-reranker"

    def __init__(
        self,
        model_name_or_path: str,
        use_fp16: bool = False,
        use_bf16: bool = False,
        max_length: int = 512,
        query_max_length: int | None = None,
        batch_size: int = 128,
        devices=None,
        normalize: bool = False,
        prompt: str | None = None,
        query_instruction_for_rerank: str | None = "A: ",
        query_instruction_format: str = "{}{}",
        passage_instruction_for_rerank: str | None = "B: ",
        passage_instruction_format: str = "{}{}",
        trust_remote_code: bool = False,
        dtype: str | None = None,
        padding_side: str | None = None,
        revision: str | None = None,
        model_id: str | None = None,
        attention: str = "auto",
        **_ignored,
    ):
        super().__init__(
            model_name_or_path, use_fp16=use_fp16, use_bf16=use_bf16, dtype=dtype, max_length=max_length,
            batch_size=batch_size, devices=devices, normalize=normalize, trust_remote_code=trust_remote_code,
            padding_side=padding_side, query_instruction_for_rerank=query_instruction_for_rerank,
            query_instruction_format=query_instruction_format, passage_instruction_for_rerank=passage_instruction_for_rerank,
            passage_instruction_format=passage_instruction_format, revision=revision, model_id=model_id, attention=attention,
        )
        self.query_max_length = query_max_length
        self.prompt = prompt

    @property
    def yes_id(self) -> int:
        return self.tokenizer("Yes", add_special_tokens=False)["input_ids"][0]

    def features(self, pairs: Sequence[tuple[str, str]], max_length: int, query_max_length: int | None = None, prompt: str | None = None) -> list[dict]:
        """Token ids per pair, exactly as FlagEmbedding's BaseLLMReranker builds them."""
        tok = self.tokenizer
        qml = query_max_length or self.query_max_length or max_length * 3 // 4
        # = tok(texts, add_special_tokens=False, max_length=..., truncation=True), each distinct text once
        qids = distinct_token_ids(tok, [q for q, _ in pairs], qml)
        pids = distinct_token_ids(tok, [p for _, p in pairs], max_length)
        queries = [qids[q][0] for q, _ in pairs]
        passages = [pids[p][0] for _, p in pairs]
        prompt_ids = tok(prompt or self.prompt or LLM_PROMPT, add_special_tokens=False)["input_ids"]
        sep_ids = tok("\n", add_special_tokens=False)["input_ids"]
        budget = max_length + len(sep_ids) + len(prompt_ids)
        bos = tok.bos_token_id if tok.bos_token_id is not None and tok.bos_token_id != tok.pad_token_id else None
        side = getattr(tok, "truncation_side", "right")
        head = [bos] if bos is not None else []
        tail = sep_ids + prompt_ids
        return [{"input_ids": join_only_second(head + q, sep_ids + p, budget, side) + tail} for q, p in zip(queries, passages)]

    def score_pairs(self, pairs, batch_size=None, max_length=None, query_max_length=None, prompt=None, **_kw) -> np.ndarray:
        ml = int(max_length or self.max_length)
        return self.core.run_ahead(list(pairs), lambda part: self.features(part, ml, query_max_length, prompt),
                                   TokenLogitHead(self.yes_id), batch_size)


def load_reranker(spec, *, dtype: str | None = None, batch_size: int = 128, devices=None, max_length: int | None = None,
                  path=None, revision: str | None = None, attention: str = "auto"):
    """The reranker for a spec of kind reranker or llm-reranker (`path`: its folder, when already
    located); the model loads on first use."""
    if spec.kind not in RERANKER_KINDS:
        raise EvalkitError(f"{spec.name} is an {spec.kind}, not a reranker: give a cross-encoder or LLM reranker")
    cls = FlagLLMReranker if spec.kind == "llm-reranker" else FlagReranker
    return cls(
        str(path or spec.locate()), max_length=max_length or spec.max_length, batch_size=batch_size, devices=devices,
        dtype=dtype or spec.dtype, trust_remote_code=spec.trust_remote_code, padding_side=spec.padding_side,
        revision=revision or spec.revision, model_id=spec.hub_id or spec.name, attention=attention,
    )


# ----------------------------------------------------------------------------- mteb
def reranker_model_meta(spec, revision: str):
    """mteb's ModelMeta for a reranker: mteb's own record where it has one, else a minimal cross-encoder record."""
    from evalkit.models.adapters import model_meta

    return model_meta(spec, revision, model_type=["cross-encoder"], use_instructions=False)


def _texts(loader) -> list[str]:
    """The "text" column of an mteb dataloader, read column-wise where its dataset allows."""
    ds = getattr(loader, "dataset", None)
    cols = getattr(ds, "column_names", None)
    if cols is not None and "text" in cols:
        return [str(t) for t in ds["text"]]
    return [str(t) for batch in loader for t in batch["text"]]


class RerankerAdapter:
    """mteb CrossEncoderProtocol over a FlagReranker / FlagLLMReranker."""

    def __init__(self, spec, reranker: _Reranker):
        self.spec = spec
        self.reranker = reranker
        self._meta = reranker_model_meta(spec, reranker.revision)

    @property
    def mteb_model_meta(self):
        return self._meta

    def predict(self, inputs1, inputs2, *, task_metadata, hf_split: str, hf_subset: str, prompt_type=None, **kwargs: Any) -> np.ndarray:
        queries, docs = _texts(inputs1), _texts(inputs2)
        if len(queries) != len(docs):
            raise EvalkitError(f"mteb gave {len(queries)} queries but {len(docs)} documents to rerank")
        if not queries:
            return np.zeros((0,), dtype=np.float32)
        pairs = self.reranker._instructed(list(zip(queries, docs)))
        progress = self.reranker.progress
        core = self.reranker.core
        core.on_batch = progress.tracker(len(pairs), "pairs") if progress is not None else None
        try:
            scores = self.reranker.score_pairs(pairs, None, None)
        finally:
            core.on_batch = None
        self.reranker.counts["pairs"] += len(pairs)
        bad = ~np.isfinite(scores)
        if bad.any():
            raise EvalkitError(
                f"reranker {self.spec.name} produced NaN or infinite scores for {int(bad.sum())} of {len(pairs)} pairs: try --dtype fp32 or check the weights"
            )
        return scores
