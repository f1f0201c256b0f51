"""In-context embedders (bge-en-icl): queries carry a task instruction and a prefix of examples.

A query becomes, exactly as the seeds' reference code (the bge-en-icl model card, FlagEmbedding's
ICL embedder) makes it:

1. ``<instruct>{task}\\n<query>{query}`` (the query alone when there is no instruction),
2. tokenised without special tokens and truncated to the query budget left after ``<s>`` and
   ``\\n<response></s>``, then decoded back to text,
3. ``examples_prefix + decoded + "\\n<response>"``, where examples_prefix is the examples
   ``<instruct>{i}\\n<query>{q}\\n<response>{r}`` joined by a blank line and followed by one
   (empty without examples),
4. tokenised with special tokens and truncated at ``new_max_length =
   (len(prefix_ids) + len(suffix_ids) + query_max_length + 8) // 8 * 8 + 8``.

Documents get nothing: tokenised as they are at the passage length. Both sides are then encoded by
the shared core (length-sorted batches, left or right padding, last-token pooling, L2 norm).

`ICLEmbedder` is an Embedder (same cache, dedup, lazy loading) that knows the query budget of each
query text it formatted; `FlagICLModel` is FlagEmbedding's public class on top of it.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np

from evalkit.errors import EvalkitError
from evalkit.models.embedder import Embedder
from evalkit.models.encoder import Core

log = logging.getLogger("evalkit")

QUERY_FORMAT = "<instruct>{}\n<query>{}"
EXAMPLE_FORMAT = "<instruct>{}\n<query>{}\n<response>{}"
SUFFIX = "\n<response>"
BOS_TEXT = "<s>"
SUFFIX_EOS_TEXT = "\n<response></s>"


def new_max_length(prefix_len: int, suffix_len: int, query_max_length: int) -> int:
    """The seeds' rounded token limit for a query with a prefix of `prefix_len` tokens."""
    return (prefix_len + suffix_len + query_max_length + 8) // 8 * 8 + 8


class ICLEmbedder(Embedder):
    """An Embedder whose query texts are built by `icl_queries` (reference truncation and limits).

    Texts that `icl_queries` did not build (documents) are tokenised at the passage length.
    """

    def __init__(self, path: str | Path, *, query_max_length: int = 512, passage_max_length: int = 512, pooling: str = "last_token", **kw):
        if pooling != "last_token":
            raise EvalkitError(f"an in-context embedder pools the last token, not {pooling!r}: drop --pooling")
        super().__init__(path, pooling=pooling, max_length=passage_max_length, **kw)
        if int(query_max_length) < 1:
            raise EvalkitError(f"query max length must be a positive integer, got {query_max_length!r}")
        self.query_max_length = int(query_max_length)
        from evalkit.cache import namespace_key

        # queries are built and limited differently from a plain embedder's inputs: own namespace
        self.namespace_fields = {**self.namespace_fields, "input_format": "icl-reference"}
        self.namespace = namespace_key(self.namespace_fields)
        self._limits: dict[str, int] = {}  # query text -> its new_max_length
        self._tok = None
        self._ntok: dict[str, int] = {}

    # -- formatting
    @property
    def text_tokenizer(self):
        """The tokenizer, without loading the network when the core is not loaded yet."""
        if self._core is not None:
            return self._core.tokenizer
        if self._tok is None:
            from evalkit.models.loading import load_tokenizer

            self._tok = load_tokenizer(self.path, self.config.padding_side, self.config.trust_remote_code)
        return self._tok

    def _count(self, text: str) -> int:
        n = self._ntok.get(text)
        if n is None:
            n = len(self.text_tokenizer(text, add_special_tokens=False)["input_ids"])
            if len(self._ntok) < 10000:
                self._ntok[text] = n
        return n

    def icl_queries(self, texts: Sequence[str], prefixes: Sequence[str] | str = "", query_max_length: int | None = None) -> list[str]:
        """The model inputs for `texts` (already in `<instruct>..\\n<query>..` form) after `prefixes`."""
        tok = self.text_tokenizer
        qmax = int(query_max_length or self.query_max_length)
        budget = qmax - self._count(BOS_TEXT) - self._count(SUFFIX_EOS_TEXT)
        if budget < 1:
            raise EvalkitError(f"query max length {qmax} leaves no room for the query after <s> and \\n<response></s>: raise it")
        if isinstance(prefixes, str):
            prefixes = [prefixes] * len(texts)
        if len(prefixes) != len(texts):
            raise EvalkitError(f"{len(texts)} queries but {len(prefixes)} example prefixes")
        enc = tok(list(texts), max_length=budget, return_token_type_ids=False, truncation=True, return_tensors=None, add_special_tokens=False)
        decoded = tok.batch_decode(enc["input_ids"])
        suffix_len = self._count(SUFFIX)
        out = []
        for prefix, body in zip(prefixes, decoded):
            text = prefix + body + SUFFIX
            limit = new_max_length(self._count(prefix) if prefix else 0, suffix_len, qmax)
            old = self._limits.get(text)
            self._limits[text] = limit if old is None else max(old, limit)
            out.append(text)
        return out

    def icl_query(self, text: str, prefix: str = "") -> str:
        return self.icl_queries([text], [prefix])[0]

    # -- encoding: the shared core, whose tokenisation applies each query's own limit
    @property
    def core(self) -> Core:
        if self._core is None:
            log.info("loading %s on %s (%s)", self.path, ",".join(self.devices), self.dtype)
            self._core = ICLCore(self.config, self.devices, limits=self._limits)
        return self._core


class ICLCore(Core):
    """The shared encoder core; a text that `ICLEmbedder.icl_queries` built is truncated at its own
    `new_max_length`, any other text (a document) at the length asked for."""

    def __init__(self, config, devices=None, *, limits: dict[str, int], **kw):
        super().__init__(config, devices, **kw)
        self.limits = limits

    def tokenize(self, texts, max_length: int) -> list[dict]:
        if not len(texts) or isinstance(texts[0], (tuple, list)):
            return super().tokenize(texts, max_length)
        limits = [self.limits.get(t, max_length) for t in texts]
        feats: list[dict] = [None] * len(texts)  # type: ignore[list-item]
        for limit in sorted(set(limits)):
            idx = [i for i, lim in enumerate(limits) if lim == limit]
            for i, f in zip(idx, super().tokenize([texts[i] for i in idx], limit)):
                feats[i] = f
        return feats


def examples_prefix(examples, default_instruct: str | None = None, example_format: str = EXAMPLE_FORMAT) -> str:
    """FlagEmbedding's `set_examples` prefix: formatted examples joined by a blank line, plus one; '' for none.

    `examples` are dicts {instruct, query, response} or objects with those attributes; a missing
    instruct falls back to `default_instruct` (FlagEmbedding: query_instruction_for_retrieval).
    """
    parts = []
    for ex in examples or []:
        get = ex.get if isinstance(ex, dict) else (lambda k, d=None, _e=ex: getattr(_e, k, d))
        instruct = get("instruct", None)
        if instruct is None:
            instruct = default_instruct
        parts.append(example_format.format(instruct, get("query", ""), get("response", "")))
    return "\n\n".join(parts) + "\n\n" if parts else ""


class FlagICLModel:
    """``FlagEmbedding.FlagICLModel``: bge-en-icl style embeddings, on evalkit's core. As on the model card:

        m = FlagICLModel("BAAI/bge-en-icl", query_instruction_for_retrieval=task, examples_for_task=examples)
        q, d = m.encode_queries(queries), m.encode_corpus(documents)
    """

    def __init__(
        self,
        model_name_or_path: str,
        query_instruction_for_retrieval: str | None = None,
        examples_for_task: list[dict] | None = None,
        use_fp16: bool = False,
        query_max_length: int = 512,
        passage_max_length: int = 512,
        batch_size: int = 256,
        devices=None,
        query_instruction_format: str = QUERY_FORMAT,
        examples_instruction_format: str = EXAMPLE_FORMAT,
        normalize_embeddings: bool = True,
        pooling_method: str = "last_token",
        trust_remote_code: bool = False,
        dtype: str | None = None,
        cache=None,
        padding_side: str | None = None,
        attention: str = "auto",
        **_ignored,
    ):
        from evalkit.models.encoder import resolve_devices
        from evalkit.models.flag import _model_path, flag_dtype

        self.model_name_or_path = str(model_name_or_path)  # as FlagEmbedding keeps it (evalkit.evaluate reads it)
        path, spec = _model_path(model_name_or_path)
        devs = resolve_devices(devices)
        dtype = flag_dtype(dtype, use_fp16, devs[0])
        if padding_side is None and spec is not None:
            padding_side = spec.padding_side
        self.query_instruction_for_retrieval = query_instruction_for_retrieval
        self.query_instruction_format = query_instruction_format
        self.examples_instruction_format = examples_instruction_format
        self.examples_for_task = examples_for_task
        self.query_max_length, self.passage_max_length = int(query_max_length), int(passage_max_length)
        self.batch_size = batch_size
        self.embedder = ICLEmbedder(
            path, query_max_length=query_max_length, passage_max_length=passage_max_length, pooling=pooling_method,
            normalize=normalize_embeddings, dtype=dtype, batch_size=batch_size, devices=devs, padding_side=padding_side,
            trust_remote_code=trust_remote_code, cache=cache, model_id=(spec.hub_id if spec else None),
            revision=(spec.revision if spec else None), attention=attention,
        )
        self.prefix = ""
        self.suffix = SUFFIX
        self.set_examples()

    @property
    def tokenizer(self):
        return self.embedder.text_tokenizer

    @property
    def model(self):
        return self.embedder.core.model

    def set_examples(self, examples_for_task: list[dict] | None = None) -> None:
        """Use `examples_for_task` (or, given None, the constructor's examples; none -> no prefix)."""
        examples = examples_for_task if examples_for_task is not None else self.examples_for_task
        self.prefix = examples_prefix(examples, self.query_instruction_for_retrieval, self.examples_instruction_format)

    def _query_texts(self, queries) -> list[str]:
        from evalkit.models.flag import _texts

        texts = _texts(queries)
        if self.query_instruction_for_retrieval is not None:
            texts = [self.query_instruction_format.format(self.query_instruction_for_retrieval, q) for q in texts]
        return texts

    def encode_queries(self, queries, batch_size: int | None = None, max_length: int | None = None, **_kw) -> np.ndarray:
        single = isinstance(queries, str)
        texts = self.embedder.icl_queries(self._query_texts(queries), self.prefix, max_length or self.query_max_length)
        out = self.embedder.embed(texts, batch_size or self.batch_size)
        return out[0] if single else out

    def encode_corpus(self, corpus, batch_size: int | None = None, max_length: int | None = None, **_kw) -> np.ndarray:
        from evalkit.models.flag import _texts

        single = isinstance(corpus, (str, dict))
        out = self.embedder.embed(_texts(corpus), batch_size or self.batch_size, max_length or self.passage_max_length)
        return out[0] if single else out

    def encode(self, sentences, batch_size: int | None = None, max_length: int | None = None, **_kw) -> np.ndarray:
        """Plain inputs, no instruction and no examples (FlagEmbedding's `encode`)."""
        return self.encode_corpus(sentences, batch_size, max_length)

    def stop_self_pool(self):
        self.embedder.close()
