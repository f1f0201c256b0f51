"""Adapters that satisfy mteb 2.x's EncoderProtocol around evalkit's Embedder.

The adapter decides the model's input for (text, task, prompt_type): the catalog's query
instruction only where the model's recipe puts it (BGE: retrieval queries), e5-style prefixes,
a task's own instruction for instruction-following models, and few-shot example prefixes.
Documents never get an instruction or examples.
"""
from __future__ import annotations

import logging
from typing import Any, Callable

import numpy as np

from evalkit.models.catalog import ModelSpec

log = logging.getLogger("evalkit")


def _prompt_kind(prompt_type) -> str | None:
    if prompt_type is None:
        return None
    return getattr(prompt_type, "value", str(prompt_type))


def model_meta(spec: ModelSpec, revision: str, **fallback: Any):
    """mteb's ModelMeta for the spec: mteb's own record where it knows the model, else a minimal
    one (name, max tokens, framework, plus `fallback`); either way with the revision evaluated."""
    from mteb.models.model_meta import ModelMeta

    meta = None
    if spec.hub_id:
        try:
            import mteb

            meta = mteb.get_model_meta(spec.hub_id)
        except Exception:
            meta = None
    if meta is None:
        meta = ModelMeta.create_empty(
            {"name": spec.hub_id or f"local/{spec.name}", "max_tokens": spec.max_length, "framework": ["PyTorch"], **fallback}
        )
    return meta.model_copy(update={"revision": revision, "loader": None})


def build_model_meta(spec: ModelSpec, revision: str, embed_dim: int | None = None):
    """An embedder's ModelMeta (see model_meta)."""
    use_instructions = bool(spec.task_instructions) or spec.query_instruction is not None or bool(spec.instruction_map)
    return model_meta(spec, revision, similarity_fn_name=spec.similarity, embed_dim=embed_dim, use_instructions=use_instructions)


class EmbeddingAdapter:
    """mteb EncoderProtocol over an Embedder. `prefix_fn(text, model_input, task_metadata, hf_split,
    hf_subset)`, when given, returns the model input with a per-query few-shot prefix applied (`text`
    is the raw input, `model_input` the same after instruction / prefix; see evalkit.fewshot)."""

    def __init__(self, spec: ModelSpec, embedder, *, task_instructions: dict[str, str] | None = None, prefix_fn: Callable | None = None):
        self.spec = spec
        self.embedder = embedder
        self.task_instructions = dict(task_instructions or {})
        self.prefix_fn = prefix_fn
        self._meta = build_model_meta(spec, embedder.revision)

    # -- mteb protocol
    @property
    def mteb_model_meta(self):
        return self._meta

    def encode(self, inputs, *, task_metadata, hf_split: str, hf_subset: str, prompt_type=None, **kwargs: Any) -> np.ndarray:
        texts = [t for batch in inputs for t in batch["text"]]
        formatted = self.format_inputs(texts, task_metadata, prompt_type, hf_split=hf_split, hf_subset=hf_subset)
        return self.embedder.embed(formatted, kwargs.get("batch_size"))

    def similarity(self, embeddings1, embeddings2):
        from mteb.similarity_functions import cos_sim, dot_score

        return (dot_score if self.spec.similarity == "dot" else cos_sim)(embeddings1, embeddings2)

    def similarity_pairwise(self, embeddings1, embeddings2):
        from mteb.similarity_functions import pairwise_cos_sim, pairwise_dot_score

        return (pairwise_dot_score if self.spec.similarity == "dot" else pairwise_cos_sim)(embeddings1, embeddings2)

    # -- input formatting
    def format_inputs(self, texts: list[str], task_metadata, prompt_type, *, hf_split: str = "", hf_subset: str = "") -> list[str]:
        """The model inputs: the recipe's prefix (evalkit.models.recipes.input_prefix), then the few-shot
        prefixer on every input but documents."""
        from evalkit.models.recipes import input_prefix

        kind = _prompt_kind(prompt_type)
        prefix = input_prefix(self.spec, task_metadata, kind, self.task_instructions.get(task_metadata.name))
        out = [prefix + t for t in texts] if prefix else list(texts)
        if self.prefix_fn is not None and kind != "document":
            out = [self.prefix_fn(t, x, task_metadata, hf_split, hf_subset) for t, x in zip(texts, out)]
        return out
