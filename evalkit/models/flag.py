"""FlagEmbedding's public classes, on evalkit's core: BGE model-card code runs unchanged."""
from __future__ import annotations


import numpy as np

from evalkit.models.embedder import Embedder


def _model_path(model_name_or_path: str):
    """A catalog name, hub id or folder -> (folder, catalog spec or None)."""
    from evalkit.models.catalog import CATALOG, ALIASES, get_spec

    key = ALIASES.get(model_name_or_path, model_name_or_path)
    spec = get_spec(model_name_or_path) if key in CATALOG else None
    if spec is not None:
        return spec.locate(), spec
    from evalkit.models.loading import resolve_model_path

    return resolve_model_path(model_name_or_path), None


def flag_dtype(dtype: str | None, use_fp16: bool, device: str, use_bf16: bool = False) -> str:
    """`dtype` where given, else FlagEmbedding's rule: fp16 only off the CPU, bf16 where asked."""
    if dtype is not None:
        return dtype
    if use_fp16 and not device.startswith("cpu"):
        return "fp16"
    return "bf16" if use_bf16 else "fp32"


def _texts(items) -> list[str]:
    if isinstance(items, (str, dict)):
        items = [items]
    out = []
    for it in items:
        if isinstance(it, dict):  # FlagEmbedding accepts {"title", "text"} documents
            out.append((it.get("title", "") + " " + it.get("text", "")).strip())
        else:
            out.append(it)
    return out


class FlagModel:
    """``FlagEmbedding.FlagModel``: CLS (or mean / last-token) pooled, L2-normalised embeddings."""

    def __init__(
        self,
        model_name_or_path: str,
        query_instruction_for_retrieval: str | None = None,
        pooling_method: str = "cls",
        normalize_embeddings: bool = True,
        use_fp16: bool = False,
        max_length: int = 512,
        batch_size: int = 256,
        devices=None,
        query_instruction_format: str = "{}{}",
        trust_remote_code: bool = False,
        dtype: str | None = None,
        cache=None,
        padding_side: str | None = None,
        attention: str = "auto",
        **_ignored,
    ):
        from evalkit.models.encoder import resolve_devices

        self.model_name_or_path = str(model_name_or_path)  # as FlagEmbedding keeps it (evalkit.evaluate reads it)
        path, spec = _model_path(model_name_or_path)
        devs = resolve_devices(devices)
        dtype = flag_dtype(dtype, use_fp16, devs[0])
        self.query_instruction_for_retrieval = query_instruction_for_retrieval
        self.pooling_method, self.normalize_embeddings, self.max_length = pooling_method, normalize_embeddings, max_length
        self.query_instruction_format = query_instruction_format
        self.batch_size = batch_size
        self.embedder = Embedder(
            path, pooling=pooling_method, normalize=normalize_embeddings, max_length=max_length, dtype=dtype,
            batch_size=batch_size, devices=devs, padding_side=padding_side, trust_remote_code=trust_remote_code,
            cache=cache, model_id=(spec.hub_id if spec else None), revision=(spec.revision if spec else None), attention=attention,
        )

    @property
    def tokenizer(self):
        return self.embedder.tokenizer

    @property
    def model(self):
        return self.embedder.core.model

    def encode(self, sentences, batch_size: int | None = None, max_length: int | None = None, **_ignored) -> np.ndarray:
        single = isinstance(sentences, str)
        out = self.embedder.embed(_texts(sentences), batch_size or self.batch_size, max_length)
        return out[0] if single else out

    def encode_queries(self, queries, batch_size: int | None = None, max_length: int | None = None, **kw) -> np.ndarray:
        single = isinstance(queries, str)
        texts = _texts(queries)
        if self.query_instruction_for_retrieval is not None:
            texts = [self.query_instruction_format.format(self.query_instruction_for_retrieval, q) for q in texts]
        out = self.embedder.embed(texts, batch_size or self.batch_size, max_length)
        return out[0] if single else out

    def encode_corpus(self, corpus, batch_size: int | None = None, max_length: int | None = None, **kw) -> np.ndarray:
        single = isinstance(corpus, (str, dict))
        out = self.embedder.embed(_texts(corpus), batch_size or self.batch_size, max_length)
        return out[0] if single else out

    def stop_self_pool(self):
        self.embedder.close()
