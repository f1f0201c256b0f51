"""Packed batches: a batch's texts joined into one sequence, so no padding token passes through the network.

The linear layers, norms and embeddings see only real tokens. Attention is the one place where texts
must not see each other; it goes through transformers' attention interface as `evalkit_packed`:
- on a GPU in fp16/bf16 with torch's `varlen_attn` (FlashAttention over the cumulative lengths, no
  padding anywhere);
- elsewhere (a CPU, fp32) each layer's queries, keys and values are gathered into a padded block and
  scored by SDPA with a per-text key mask (and the causal mask for decoders), then scattered back.
  The attention's arithmetic is then the padded path's, on the same widths, while everything around
  it runs on the real tokens only. A batch whose texts all have one length (documents cut at
  max_length) is its blocks already: no gather, no scatter, no key mask. The gathers and the causal
  band are built once per batch (`Segments`), not per layer.

Each text gets its own position ids (0.., or padding_idx+1.. for XLM-R/RoBERTa, as they number
positions), and the last hidden state is unpacked into the padded layout the tokenizer would have
made (its padding side), so every head (pooling, M3's parts, a classifier on the first token, an LLM's
token logit) works on it unchanged. `tests/test_packing.py` holds it to the padded path.

Served: the model types in PACKED_TYPES (bge-*, bge-m3, MiniLM, e5, bge-en-icl, the XLM-R/BERT rerankers,
Mistral/Qwen/Llama embedders and LLM rerankers), loaded without remote code.
Anything else keeps the padded path.
"""
from __future__ import annotations

import contextvars
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

ATTENTION = "evalkit_packed"
ATTENTION_MODES = ("auto", "packed", "padded")
# transformers model types whose attention modules call ALL_ATTENTION_FUNCTIONS and whose other layers
# act on each token alone (checked against the padded path for bert, xlm-roberta and mistral in the tests)
ENCODER_TYPES = {"bert": 0, "xlm-roberta": None, "roberta": None}  # position offset: None = padding_idx + 1
DECODER_TYPES = {"mistral", "qwen2", "qwen3", "llama"}
PACKED_TYPES = set(ENCODER_TYPES) | DECODER_TYPES
# the classifier heads whose input is the first token's state (the unpacked padded hidden state goes in)
CLASSIFIERS = {"BertForSequenceClassification", "XLMRobertaForSequenceClassification", "RobertaForSequenceClassification"}

_SEGMENTS: contextvars.ContextVar = contextvars.ContextVar("evalkit_packed_segments")


def packable(model, kind: str) -> str | None:
    """None where `model` can run packed, else why not (one phrase)."""
    cfg = model.config
    mtype = getattr(cfg, "model_type", None)
    if mtype not in PACKED_TYPES:
        return f"model type {mtype!r} is not one the packed path serves ({', '.join(sorted(PACKED_TYPES))})"
    if type(model).__module__.startswith("transformers_modules"):
        return "the model runs remote code"
    if kind == "reranker" and type(model).__name__ not in CLASSIFIERS:
        return f"{type(model).__name__}'s head is not one the packed path applies"
    return None


def register() -> None:
    """Make `evalkit_packed` an attention implementation transformers knows (idempotent)."""
    from transformers import AttentionInterface

    AttentionInterface.register(ATTENTION, packed_attention)


@dataclass
class Segments:
    """Where each text of a packed batch lies: `cu` its cumulative lengths (int32, on the device), `valid` [n, width]
    its real tokens, left-aligned (the attention's own layout, whatever the tokenizer's padding side), `gather`
    [n * width] each block position's place in the packed sequence (padding points at 0, masked) and `keep` [T]
    each real token's place among the block positions. A batch whose texts are all one length (long documents
    cut at max_length) needs neither: its packed sequence is its blocks."""

    cu: Any
    max_len: int
    gather: Any
    valid: Any
    keep: Any
    _masks: dict = field(default_factory=dict)

    @property
    def uniform(self) -> bool:
        return self.keep.shape[0] == self.gather.shape[0]

    def mask(self, causal: bool, window: int | None):
        """SDPA's boolean mask [n, 1, width, width] (None: none needed), built once per batch for every layer."""
        import torch

        if (causal, window) not in self._masks:
            mask = None if self.uniform else self.valid[:, None, None, :]  # keys: the text's own tokens
            if causal:
                rows = torch.arange(self.valid.shape[1], device=self.valid.device)
                back = rows[:, None] - rows[None, :]
                band = (back >= 0) if window is None else ((back >= 0) & (back < window))
                mask = band[None, None] if mask is None else mask & band
            self._masks[causal, window] = mask
        return self._masks[causal, window]

    def blocks(self, t):
        """[1, heads, T, d] -> [n, heads, width, d]: each text's tokens in its own padded block."""
        n, width = self.valid.shape
        t = t[0].transpose(0, 1)  # [T, heads, d]
        if not self.uniform:
            t = t.index_select(0, self.gather)
        return t.reshape(n, width, t.shape[1], t.shape[2]).transpose(1, 2)

    def unblock(self, out):
        """[n, heads, width, d] -> [1, T, heads, d]: the real tokens back in the packed order."""
        out = out.transpose(1, 2).reshape(-1, out.shape[1], out.shape[3])
        return (out if self.uniform else out.index_select(0, self.keep)).unsqueeze(0)


def packed_attention(module, query, key, value, attention_mask=None, scaling=None, dropout=0.0, sliding_window=None, **_kw):
    """transformers' attention-interface signature: query [1, heads, T, d], key/value [1, kv_heads, T, d];
    returns ([1, T, heads, d], None). A decoder's sliding window is kept (a key at most window-1 back)."""
    import torch
    import torch.nn.functional as F

    seg: Segments = _SEGMENTS.get()
    causal = bool(getattr(module, "is_causal", False))
    window = int(sliding_window) if causal and sliding_window and sliding_window < seg.max_len else None
    gqa = key.shape[1] != query.shape[1]
    if query.is_cuda and query.dtype in (torch.float16, torch.bfloat16) and _varlen() is not None:
        q, k, v = (t[0].transpose(0, 1) for t in (query, key, value))  # [T, heads, d]
        out = _varlen()(q, k, v, seg.cu, seg.cu, seg.max_len, seg.max_len, scale=scaling, enable_gqa=gqa,
                        window_size=(-1 if window is None else window - 1, 0) if causal else (-1, -1))
        return out.unsqueeze(0), None
    q, k, v = (seg.blocks(t) for t in (query, key, value))
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=seg.mask(causal, window), scale=scaling, enable_gqa=gqa)
    return seg.unblock(out), None


_VARLEN: list = []


def _varlen():
    if not _VARLEN:
        try:
            from torch.nn.attention.varlen import varlen_attn
        except ImportError:  # an older torch: the gathered SDPA serves
            varlen_attn = None
        _VARLEN.append(varlen_attn)
    return _VARLEN[0]


class Packed:
    """Builds a packed batch and runs a model on it, handing the heads what the padded path would."""

    def __init__(self, model, kind: str, left: bool):
        register()
        self.model, self.kind, self.left = model, kind, left
        mtype = model.config.model_type
        self.encoder = mtype in ENCODER_TYPES
        offset = ENCODER_TYPES.get(mtype, 0)
        self.offset = int(model.config.pad_token_id) + 1 if offset is None else offset
        model.set_attn_implementation(ATTENTION)

    def batch(self, feats: Sequence[dict]) -> dict:
        """The packed inputs of `feats`, with the padded layout's attention mask (for the heads) and the
        unpacking indices."""
        import torch

        lengths = np.fromiter((len(f["input_ids"]) for f in feats), dtype=np.int64, count=len(feats))
        width, total = int(lengths.max()), int(lengths.sum())
        starts = np.concatenate([[0], np.cumsum(lengths)])
        ids = np.concatenate([np.asarray(f["input_ids"], dtype=np.int64) for f in feats])
        positions = np.arange(total, dtype=np.int64) - np.repeat(starts[:-1], lengths) + self.offset
        cols = np.arange(width)
        valid = cols[None, :] < lengths[:, None]  # left-aligned: the attention's layout
        gather = np.where(valid, starts[:-1, None] + cols[None, :], 0).reshape(-1)
        keep = np.flatnonzero(valid)
        # the tokenizer's layout for the heads: real tokens left or right, `total` (a zero row) at padding
        layout = valid[:, ::-1] if self.left else valid
        shift = (width - lengths)[:, None] if self.left else 0
        unpack = np.where(layout, starts[:-1, None] + cols[None, :] - shift, total)
        out = {"input_ids": torch.from_numpy(ids[None]), "position_ids": torch.from_numpy(positions[None]),
               "attention_mask": torch.from_numpy(layout.astype(np.int64)),
               "_cu": torch.from_numpy(starts.astype(np.int32)), "_gather": torch.from_numpy(gather),
               "_valid": torch.from_numpy(valid), "_keep": torch.from_numpy(keep), "_unpack": torch.from_numpy(unpack)}
        if "token_type_ids" in feats[0]:
            out["token_type_ids"] = torch.from_numpy(np.concatenate([np.asarray(f["token_type_ids"], dtype=np.int64) for f in feats])[None])
        elif self.encoder:  # BERT's buffered zeros stop at max_position_embeddings, the packed row does not
            out["token_type_ids"] = torch.zeros((1, total), dtype=torch.int64)
        return out

    def __call__(self, **batch):
        """The model's output on a packed batch, unpacked: last_hidden_state [n, width, hidden] (embedders),
        logits [n] (cross-encoders) or [n, width, vocab] (LLM rerankers)."""
        import torch
        from transformers.modeling_outputs import BaseModelOutput, CausalLMOutput, SequenceClassifierOutput

        seg = Segments(batch["_cu"], int(batch["attention_mask"].shape[1]), batch["_gather"], batch["_valid"], batch["_keep"])
        inputs = {k: batch[k] for k in ("input_ids", "position_ids", "token_type_ids") if k in batch}
        base = self.model if self.kind == "embedder" else self.model.base_model
        if not self.encoder:
            inputs["use_cache"] = False
        token = _SEGMENTS.set(seg)
        try:
            out = base(**inputs, return_dict=True)
        finally:
            _SEGMENTS.reset(token)
        hidden = out.last_hidden_state[0]
        hidden = torch.cat([hidden, hidden.new_zeros(1, hidden.shape[-1])])[batch["_unpack"]]
        if self.kind == "embedder":
            return BaseModelOutput(last_hidden_state=hidden)
        if self.kind == "reranker":  # BERT: pooler, dropout, classifier; XLM-R/RoBERTa: a head on the first token
            pooler = getattr(base, "pooler", None)
            head_in = hidden if pooler is None else self.model.dropout(pooler(hidden))
            return SequenceClassifierOutput(logits=self.model.classifier(head_in))
        return CausalLMOutput(logits=self.model.get_output_embeddings()(hidden))

    def __getattr__(self, name):  # heads that reach into the model (M3's linear layers) find it
        if name == "model":
            raise AttributeError(name)
        return getattr(self.model, name)
