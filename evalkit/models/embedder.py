"""Text -> vector, with the embedding cache in front of the encoder core.

An Embedder knows everything that changes a vector (its cache namespace) without loading the
network; the network is loaded on the first text that the cache does not hold, so a run whose
vectors are all cached never loads the model.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np

from evalkit.errors import EvalkitError
from evalkit.models.encoder import EmbedHead, Core, CoreConfig, POOLINGS, load_dense, longest_by_chars, resolve_devices, resolve_dtype

log = logging.getLogger("evalkit")
COMMIT_EVERY = 1024  # texts encoded between two cache commits at most...
COMMIT_TOKENS = 65536  # ...or tokens (long documents): what a killed run loses is at most one such slice
CHARS_PER_TOKEN = 4  # a slice's tokens are estimated from its characters before it is tokenised (English text)


class Embedder:
    def __init__(
        self,
        path: str | Path,
        *,
        pooling: str = "cls",
        normalize: bool = True,
        max_length: int = 512,
        dtype: str | None = None,
        batch_size: int = 256,
        devices=None,
        padding_side: str | None = None,
        trust_remote_code: bool = False,
        cache=None,
        model_id: str | None = None,
        revision: str | None = None,
        lowercase: bool = False,
        dense: Sequence[str] = (),
        attention: str = "auto",
    ):
        from evalkit.models.loading import folder_revision, model_positions

        if any(p not in POOLINGS for p in str(pooling).split("+")):
            raise EvalkitError(f"unknown pooling {pooling!r}: use one of {', '.join(POOLINGS)}")
        if batch_size is None or int(batch_size) < 1:
            raise EvalkitError(f"batch size must be a positive integer, got {batch_size!r}")
        self.path = Path(path)
        self.pooling, self.normalize, self.max_length = pooling, normalize, int(max_length)
        limit = model_positions(self.path)
        if limit is not None and self.max_length > limit:  # longer inputs would index past the position table
            log.info("%s takes at most %d positions: max_length %d lowered to %d", self.path.name, limit, self.max_length, limit)
            self.max_length = limit
        self.devices = resolve_devices(devices)
        self.dtype = resolve_dtype(dtype, self.devices[0])
        # the attention mode changes no vector beyond float noise (tests/test_packing.py): not in the namespace
        self.config = CoreConfig(str(self.path), "embedder", self.dtype, int(batch_size), padding_side, trust_remote_code,
                                 lowercase=bool(lowercase), attention=attention)
        self.dense = tuple(dense)
        self.head = EmbedHead(pooling, normalize, tuple(load_dense(self.path / d) for d in self.dense))
        self.cache = cache
        self.revision = revision or folder_revision(self.path)
        self.namespace_fields = {
            "model": model_id or str(self.path),
            "revision": self.revision,
            "weights": folder_revision(self.path),
            "pooling": pooling,
            "normalize": normalize,
            "max_length": self.max_length,
            "dtype": self.dtype,
            "padding_side": padding_side,
        }
        # only where set, so that the caches made before these existed keep their keys
        if lowercase:
            self.namespace_fields["lowercase"] = True
        if self.dense:
            import hashlib

            h = hashlib.sha256()
            for w, b, act in self.head.dense:
                h.update(w.numpy().tobytes())
                h.update(b"" if b is None else b.numpy().tobytes())
                h.update(act.encode())
            self.namespace_fields["dense"] = [list(self.dense), h.hexdigest()[:16]]
        from evalkit.cache import namespace_key

        self.namespace = namespace_key(self.namespace_fields)
        self._core: Core | None = None
        self.counts = {"encoded": 0, "cached": 0, "duplicates": 0}
        self.progress = None  # evalkit.progress.Progress: told about loading and encoding

    @property
    def core(self) -> Core:
        if self._core is None:
            log.info("loading %s on %s (%s)", self.path, ",".join(self.devices), self.dtype)
            if self.progress is not None:
                self.progress.phase(f"loading {self.namespace_fields['model']} on {','.join(self.devices)} ({self.dtype})")
            self._core = Core(self.config, self.devices)
        return self._core

    @property
    def tokenizer(self):
        return self.core.tokenizer

    def embed(self, texts: Sequence[str], batch_size: int | None = None, max_length: int | None = None) -> np.ndarray:
        """float32 [n, dim]; each distinct text encoded at most once, cached vectors reused."""
        texts = [t if isinstance(t, str) else str(t) for t in texts]
        if batch_size is not None and int(batch_size) < 1:
            raise EvalkitError(f"batch size must be a positive integer, got {batch_size!r}")
        uniq: dict[str, int] = {}
        inverse = np.fromiter((uniq.setdefault(t, len(uniq)) for t in texts), dtype=np.int64, count=len(texts))
        distinct = list(uniq)
        self.counts["duplicates"] += len(texts) - len(distinct)
        ml = int(max_length or self.max_length)
        use_cache = self.cache is not None and ml == self.max_length
        found = self.cache.get_many(self.namespace, distinct) if use_cache else {}
        missing = [i for i in range(len(distinct)) if i not in found]
        vectors: np.ndarray | None = None
        if missing:
            if use_cache:
                self.cache.register(self.namespace, self.namespace_fields)
            texts_m = [distinct[i] for i in missing]
            core = self.core
            core.on_batch = self.progress.tracker(len(texts_m)) if self.progress is not None else None

            def done(idx, out):  # each slice checked and committed to the cache: a killed run keeps every finished one
                nonlocal vectors
                part_texts = [texts_m[i] for i in idx]
                self.check_finite(out, part_texts)
                if vectors is None:
                    vectors = np.empty((len(distinct), out.shape[1]), dtype=np.float32)
                vectors[np.asarray([missing[i] for i in idx], dtype=np.int64)] = out
                if use_cache:
                    self.cache.put_many(self.namespace, part_texts, out)

            # longest first (by characters: each slice is tokenised one ahead of the device, so no token is
            # counted before the first batch), in slices of a few full batches per device, closed at the commit sizes
            order = longest_by_chars(texts_m)
            slices = list(_slices(order, [len(t) // CHARS_PER_TOKEN + 1 for t in texts_m], core.slice_rows(batch_size)))
            core.run_ahead(texts_m, lambda part: core.tokenize(part, ml), self.head, batch_size, slices, done)
            core.on_batch = None
            if self.progress is not None:
                self.progress.phase(f"{len(texts_m)} texts encoded, {len(found)} from the cache; mteb scores")
        for i, v in found.items():
            if vectors is None:
                vectors = np.empty((len(distinct), v.shape[0]), dtype=np.float32)
            vectors[i] = v
        self.counts["encoded"] += len(missing)
        self.counts["cached"] += len(found)
        if vectors is None:
            return np.zeros((0, 0), dtype=np.float32)
        return vectors[inverse]

    def encode_uncached(self, texts: Sequence[str], batch_size: int | None = None, max_length: int | None = None) -> np.ndarray:
        """Vectors of `texts` straight from the network (no cache, no dedup), tokenised ahead as `embed` does."""
        texts, ml, core = list(texts), int(max_length or self.max_length), self.core
        out = core.run_ahead(texts, lambda part: core.tokenize(part, ml), self.head, batch_size,
                             core.slices(longest_by_chars(texts), batch_size))
        return self.check_finite(out, texts)

    def check_finite(self, out: np.ndarray, texts: Sequence[str]) -> np.ndarray:
        """`out`, refused in one line where the network gave a NaN or infinite vector."""
        bad = ~np.isfinite(out).all(axis=1)
        if bad.any():
            raise EvalkitError(
                f"model {self.namespace_fields['model']} produced NaN or infinite embeddings for {int(bad.sum())} of {len(texts)} texts "
                f"(first: {texts[int(np.argmax(bad))][:60]!r}): try --dtype fp32 or check the weights"
            )
        return out

    def close(self):
        if self._core is not None:
            self._core.close()


def _slices(order: list[int], lengths: list[int], least: int):
    """`order` cut into the slices that are encoded and committed to the cache one by one: each at
    least `least` texts (a few full batches per device), then closed at COMMIT_EVERY texts or
    COMMIT_TOKENS tokens."""
    start, tokens = 0, 0
    for j, i in enumerate(order):
        tokens += lengths[i]
        n = j + 1 - start
        if n >= least and (n >= COMMIT_EVERY or tokens >= COMMIT_TOKENS):
            yield order[start : j + 1]
            start, tokens = j + 1, 0
    if start < len(order):
        yield order[start:]
