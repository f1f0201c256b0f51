"""The encoder core shared by every model class.

Tokenise slice by slice, one slice ahead of the device in a background thread (`Core.run_ahead`, and
BGE-M3's own slices), sort each slice by length (longest first, so an out-of-memory shows at once),
pad each batch only to its own longest member (on a CPU a batch also holds at most CPU_BATCH_TOKENS padded tokens:
small batches stay in cache, 20% faster in fp32 on long texts here than 64 rows of 256 tokens; on a
GPU a batch is filled to a token budget sized from the free memory, its width rounded up to a multiple
of PAD_MULTIPLE) or pack its texts into one sequence with no padding at all (evalkit/models/packing.py:
`--attention packed`, the default on a GPU where the model allows it), run the network (CPU bf16: under
autocast, the linear layers' weights stored in bf16; on a GPU, fp16/bf16 weights loaded in that dtype),
apply a head (pooling + normalisation for embedders, logits for rerankers), restore the input order.
Out-of-memory halves the batch and retries; several devices get one worker process each.
"""
from __future__ import annotations

import copy
import functools
import logging
import os
import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from evalkit.errors import EvalkitError

log = logging.getLogger("evalkit")

DTYPES = ("fp32", "fp16", "bf16")
CPU_BATCH_TOKENS = 2048
PAD_MULTIPLE = 16  # a GPU's padded widths: multiples of 16
GPU_MAX_ROWS = 4096
GPU_MEMORY_SHARE = 0.5  # of the free memory after loading, for one batch's activations
FETCH_BYTES = 64 << 20  # head outputs kept on the device before they are copied back together
TOKENIZER_THREADS = 8  # at most, on a GPU host (tokenizer_threads)
TOKENIZER_PART = 256  # inputs per tokeniser thread at least
POOLINGS = ("cls", "mean", "last_token", "max", "mean_sqrt_len_tokens", "weightedmean")  # "a+b": both, concatenated


# ----------------------------------------------------------------------------- devices and dtypes
def resolve_devices(devices: str | Sequence[str] | None) -> list[str]:
    import torch

    if devices is None or devices == "auto" or devices == []:
        if torch.cuda.is_available():
            return [f"cuda:{i}" for i in range(torch.cuda.device_count())]
        return ["cpu"]
    if isinstance(devices, str):
        devices = [d.strip() for d in devices.split(",") if d.strip()]
    out = []
    for d in devices:
        if d == "cuda":
            if not torch.cuda.is_available():
                raise EvalkitError("--device cuda was asked for but torch sees no CUDA device: use --device cpu")
            out.extend(f"cuda:{i}" for i in range(torch.cuda.device_count()))
        elif isinstance(d, int) or str(d).isdigit():
            out.append(f"cuda:{d}")
        else:
            out.append(str(d))
    return out


def resolve_dtype(dtype: str | None, device: str) -> str:
    dtype = (dtype or "fp32").lower().replace("float32", "fp32").replace("float16", "fp16").replace("bfloat16", "bf16")
    if dtype not in DTYPES:
        raise EvalkitError(f"unknown dtype {dtype!r}: use one of {', '.join(DTYPES)}")
    if dtype == "fp16" and device.startswith("cpu"):
        raise EvalkitError("fp16 is for GPUs; on a CPU use --dtype bf16 (fast with AMX) or fp32")
    return dtype


BF16_UNITS = ("amx_bf16", "avx512_bf16")  # CPU flags of bf16 matrix units: without them torch emulates bf16 matmuls
# `make bench` (benchmarks/bench.py) on a 2-core AMD EPYC with AVX2 only (issue 27): --dtype bf16 at 0.43x plain
# mteb's fp32 speed, five times slower than evalkit's fp32; with AVX-512 BF16 3.9x and with AMX more (RESULTS.md)
AVX2_ONLY_BF16 = "0.43x plain mteb's fp32 speed and a fifth of evalkit's fp32 (make bench on an AMD EPYC with AVX2 only)"


def cpu_flags() -> set[str] | None:
    """This CPU's feature flags (/proc/cpuinfo), None where they cannot be read."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return None


def cpu_bf16_note(dtype: str | None, device: str | None, flags: set[str] | None = None) -> str | None:
    """One line saying bf16 is a trap on this CPU (no bf16 matrix units), for a bf16 run on the CPU; else None."""
    if (dtype or "").lower().replace("bfloat16", "bf16") != "bf16":
        return None
    if not all(d.startswith("cpu") for d in resolve_devices(device)):
        return None
    flags = cpu_flags() if flags is None else flags
    if flags is None or flags & set(BF16_UNITS):
        return None
    has = " and ".join(f for f in ("avx512f", "avx2") if f in flags) or "neither AVX-512 nor AVX2"
    return (f"--dtype bf16 is slow on this CPU: it has no bf16 matrix units (no {' or '.join(BF16_UNITS)} flag; {has}), "
            f"so torch emulates them, measured at {AVX2_ONLY_BF16}: use --dtype fp32")


@functools.cache
def keep_freed_memory() -> bool:
    """Make glibc keep freed activation buffers for the next batch instead of handing them back.

    By default glibc serves a block over its (moving) mmap threshold with fresh pages and trims
    the heap top after each free, so every batch touches its activations' pages anew: 700k page
    faults and ~7% of the time on the first pass over SciFact here. Blocks up to 32 MiB (glibc's
    cap) now come from the heap, and the heap keeps up to 1 GiB free at its top. Process-wide; a
    no-op where there is no glibc. Returns whether it took effect; set once per process.
    """
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library already loaded in this process
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3
    settings = ((m_mmap_threshold, 32 << 20), (m_trim_threshold, 1 << 30), (m_top_pad, 64 << 20))
    return all(mallopt(key, value) == 1 for key, value in settings)


def torch_dtype(name: str):
    import torch

    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[name]


def store_linears(model, dtype) -> None:
    """Autocast's own arithmetic with its casts done once: every nn.Linear's weight and bias are kept
    in `dtype`, the lower precision autocast would cast them to on each forward pass anyway, so the
    outputs stay bit for bit those of autocast over fp32 weights (tested). Embeddings, norms, every
    parameter a Linear shares with another module (a tied lm_head) and quantized (integer) layers
    stay as they are. A 7B decoder then holds 14 GB of weights in bf16 instead of 28."""
    import torch

    elsewhere = {id(p) for m in model.modules() if not isinstance(m, torch.nn.Linear) for p in m.parameters(recurse=False)}
    for m in model.modules():
        own = list(m.parameters(recurse=False))
        if isinstance(m, torch.nn.Linear) and all(p.is_floating_point() and id(p) not in elsewhere for p in own):
            m.to(dtype)


def gpu_batch_tokens(model, device: str, kind: str) -> int:
    """A GPU batch's token budget: half the free memory after loading over an upper bound of one token's live
    activations in a layer (the hidden state a few times over, the FFN's intermediate, the fp32 head output;
    an LLM reranker's logits over the vocabulary), between 1024 and 2^20 tokens, in steps of 1024. The OOM
    back-off stays behind it."""
    import torch

    cfg = getattr(model, "config", None)
    hidden = int(getattr(cfg, "hidden_size", 1024) or 1024)
    ffn = int(getattr(cfg, "intermediate_size", 4 * hidden) or 4 * hidden)
    size = next(model.parameters()).element_size()
    per_token = (8 * hidden + 2 * ffn) * size + 4 * hidden
    if kind == "llm-reranker":
        per_token += 4 * int(getattr(cfg, "vocab_size", 32000) or 32000)
    free = torch.cuda.mem_get_info(device)[0]
    return max(1024, min(1 << 20, int(GPU_MEMORY_SHARE * free / per_token)) // 1024 * 1024)


def is_oom(err: BaseException) -> bool:
    import torch

    if isinstance(err, getattr(torch, "OutOfMemoryError", ())):
        return True
    return isinstance(err, (RuntimeError, MemoryError)) and (
        "out of memory" in str(err).lower() or isinstance(err, MemoryError)
    )


def tokenizer_threads(devices: Sequence[str]) -> int:
    """Threads that tokenise for a run on `devices`. On GPUs the host's cores are otherwise idle, and one
    tokeniser thread (about 0.26M tokens/s on SciFact's documents here) is slower than one GPU encodes a
    bge-large (about 0.7M tokens/s at half an H100's bf16 peak): the host's cores but one per device (its
    feeding thread), at most TOKENIZER_THREADS. On a CPU one: the cores are the device's."""
    if not all(d.startswith("cuda") for d in devices):
        return 1
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, min(TOKENIZER_THREADS, cores - len(devices)))


def ahead(items: Sequence, work: Callable, background: bool = True):
    """(item, work(item)) for each of `items` in turn, with the next item's work running in a background
    thread while the caller uses this one's (issue 27: the next slice is tokenised while the device encodes
    this one, so the first batch waits for one slice's tokens, not for all of them). Fast tokenizers and
    torch both release the GIL while they work. Where `background` is False, or for a single item, the work
    runs in this thread. An error in the work surfaces when its item's turn comes."""
    if not background or len(items) < 2:
        for item in items:
            yield item, work(item)
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1, thread_name_prefix="evalkit-ahead") as pool:
        pending = pool.submit(work, items[0])
        for j, item in enumerate(items):
            done = pending.result()
            if j + 1 < len(items):
                pending = pool.submit(work, items[j + 1])
            yield item, done


# ----------------------------------------------------------------------------- heads
@dataclass(frozen=True)
class EmbedHead:
    """Pool the last hidden state, apply sentence-transformers Dense layers (`dense`: (weight, bias or
    None, activation name), float32 CPU tensors, moved to each device once), optionally L2-normalise
    (float32)."""

    pooling: str = "cls"
    normalize: bool = True
    dense: tuple = field(default=(), compare=False)
    _on_device: dict = field(default_factory=dict, compare=False, repr=False)  # device -> the dense layers there

    def __call__(self, model, batch: dict) -> Any:
        import torch

        out = model(**batch)
        hidden = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
        vec = pool(hidden, batch["attention_mask"], self.pooling).float()
        if self.dense:
            if vec.device not in self._on_device:
                self._on_device[vec.device] = [(w.to(vec.device), None if b is None else b.to(vec.device), activation(a))
                                               for w, b, a in self.dense]
            for w, b, act in self._on_device[vec.device]:
                vec = act(torch.nn.functional.linear(vec, w, b))
        if self.normalize:
            vec = torch.nn.functional.normalize(vec, p=2, dim=-1)
        return vec


# the torch.nn activations a sentence-transformers Dense layer may end in, by the class path its config names
ACTIVATIONS = {
    "torch.nn.modules.activation.Tanh": "Tanh", "torch.nn.Tanh": "Tanh", "torch.nn.modules.linear.Identity": "Identity",
    "torch.nn.Identity": "Identity", "torch.nn.modules.activation.ReLU": "ReLU", "torch.nn.ReLU": "ReLU",
    "torch.nn.modules.activation.GELU": "GELU", "torch.nn.GELU": "GELU", "torch.nn.modules.activation.Sigmoid": "Sigmoid",
    "torch.nn.Sigmoid": "Sigmoid",
}


def activation(name: str):
    """A Dense layer's activation function, by the class path of ACTIVATIONS its config names."""
    import torch

    if name not in ACTIVATIONS:
        raise EvalkitError(f"activation {name!r} is not one evalkit reproduces ({', '.join(sorted(set(ACTIVATIONS.values())))})")
    return {"Tanh": torch.tanh, "Identity": lambda x: x, "ReLU": torch.relu, "GELU": torch.nn.functional.gelu,
            "Sigmoid": torch.sigmoid}[ACTIVATIONS[name]]


def load_dense(folder: Path) -> tuple:
    """A sentence-transformers Dense module folder -> (weight, bias or None, activation name)."""
    import json

    import torch

    cfg = json.loads((folder / "config.json").read_text())
    if (folder / "model.safetensors").is_file():
        from safetensors.torch import load_file

        state = load_file(str(folder / "model.safetensors"))
    else:
        state = torch.load(str(folder / "pytorch_model.bin"), map_location="cpu", weights_only=True)
    w = state["linear.weight"].float()
    b = state["linear.bias"].float() if "linear.bias" in state else None
    return w, b, cfg.get("activation_function", "torch.nn.modules.activation.Tanh")


@dataclass(frozen=True)
class LogitHead:
    """A cross-encoder's relevance logit, one per pair (``logits.view(-1)``)."""

    def __call__(self, model, batch: dict) -> Any:
        return model(**batch, return_dict=True).logits.view(-1).float()


@dataclass(frozen=True)
class TokenLogitHead:
    """An LLM reranker's score: the logit of one vocabulary token at the last position."""

    token_id: int

    def __call__(self, model, batch: dict) -> Any:
        logits = model(**batch, return_dict=True).logits
        mask = batch["attention_mask"]
        if bool((mask[:, -1] == 1).all()):
            last = logits[:, -1, :]
        else:
            import torch

            idx = mask.sum(dim=1) - 1
            last = logits[torch.arange(logits.shape[0], device=logits.device), idx]
        return last[:, self.token_id].float()


def pool(hidden, mask, method: str):
    """sentence-transformers' Pooling: one mode, or several joined by '+' (concatenated in that order)."""
    import torch

    if "+" in method:
        return torch.cat([pool(hidden, mask, m) for m in method.split("+")], dim=-1)
    if method == "max":
        return hidden.masked_fill(mask.unsqueeze(-1) == 0, float("-inf")).max(dim=1).values
    if method == "mean_sqrt_len_tokens":
        m = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * m).sum(dim=1) / torch.sqrt(m.sum(dim=1).clamp(min=1e-9))
    if method == "weightedmean":  # positions 1..n of the real tokens (left padding shifts them)
        m = mask.unsqueeze(-1).to(hidden.dtype)
        weights = torch.arange(1, hidden.shape[1] + 1, device=hidden.device, dtype=hidden.dtype).view(1, -1, 1)
        weights = weights - mask.to(torch.int32).argmax(dim=1).view(-1, 1, 1).to(hidden.dtype)
        wm = m * weights
        return (hidden * wm).sum(dim=1) / wm.sum(dim=1).clamp(min=1e-9)
    if method == "cls":  # the first real token (sentence-transformers' rule; left padding moves it)
        if bool((mask[:, 0] == 1).all()):
            return hidden[:, 0]
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), mask.to(torch.int32).argmax(dim=1)]
    if method == "mean":
        m = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1e-9)
    if method == "last_token":
        if bool((mask[:, -1] == 1).all()):  # left padding: the last position is every row's last token
            return hidden[:, -1]
        idx = mask.sum(dim=1) - 1
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), idx]
    raise EvalkitError(f"unknown pooling {method!r}: use one of {', '.join(POOLINGS)}")


# ----------------------------------------------------------------------------- the core
@dataclass
class CoreConfig:
    """Everything needed to build the same core again in a worker process."""

    path: str
    kind: str = "embedder"  # embedder | reranker | llm-reranker
    dtype: str = "fp32"
    batch_size: int = 256
    padding_side: str | None = None
    trust_remote_code: bool = False
    max_batch_tokens: int | None = None  # rows x padded width per batch; None: CPU_BATCH_TOKENS on a CPU, gpu_batch_tokens on a GPU
    lowercase: bool = False  # sentence-transformers' do_lower_case: a Lowercase normaliser before the tokenizer's own
    attention: str = "auto"  # packed | padded | auto (evalkit/models/packing.py: packed where the model allows it)
    stats: dict = field(default_factory=lambda: {"texts": 0, "tokens": 0, "batches": 0, "oom_retries": 0, "seconds": 0.0})


class Core:
    """Tokeniser + network on one or more devices; `run` turns token lists into head outputs."""

    def __init__(self, config: CoreConfig, devices: str | Sequence[str] | None = None, *, tokenizer=None, model=None):
        from evalkit.models.loading import load_network, load_tokenizer

        if config.batch_size is None or int(config.batch_size) < 1:
            raise EvalkitError(f"batch size must be a positive integer, got {config.batch_size!r}")
        self.config = config
        self.devices = resolve_devices(devices)
        self.device = self.devices[0]
        self.dtype = resolve_dtype(config.dtype, self.device)
        path = Path(config.path)
        self.tokenizer = tokenizer or load_tokenizer(path, config.padding_side, config.trust_remote_code, config.lowercase)
        if config.padding_side is not None:
            self.tokenizer.padding_side = config.padding_side
        on_cpu, gpu = self.device.startswith("cpu"), self.device.startswith("cuda")
        # on a GPU a half-precision run loads its weights in that dtype (as sentence-transformers does): no fp32
        # copy anywhere, no autocast casts of norms and embeddings on each pass (issue 27)
        self.whole_dtype = self.dtype if self.dtype != "fp32" and gpu else None
        loaded = model or load_network(path, config.kind, config.trust_remote_code,
                                       dtype=torch_dtype(self.whole_dtype) if self.whole_dtype else None)
        self.model = loaded.eval()
        if self.whole_dtype:
            self.model.to(torch_dtype(self.whole_dtype))  # a model handed in, or parameters the checkpoint kept in fp32
        elif self.dtype == "fp16":  # FlagEmbedding's use_fp16: the weights themselves in half precision, halved
            self.model.half()  # before the move, so the device never holds the fp32 copy (7B: 28 GB, not 14)
        elif self.dtype == "bf16":  # a CPU: autocast over linears stored in bf16
            store_linears(self.model, torch_dtype("bf16"))  # still under autocast: the same bits, half the memory
        self.model.to(self.device)
        self.batch_size = int(config.batch_size)
        self.max_batch_tokens = config.max_batch_tokens or (
            CPU_BATCH_TOKENS if on_cpu else gpu_batch_tokens(self.model, self.device, config.kind) if gpu else None)
        self.pad_multiple = PAD_MULTIPLE if gpu else 1  # few distinct shapes on a GPU (kernel set-ups, allocator)
        self.max_rows = GPU_MAX_ROWS if gpu else None  # a GPU's batches are filled to the token budget
        if on_cpu:
            keep_freed_memory()
        self.packer = self._packer(config.attention)
        self.tokenize_ahead = True  # the next slice tokenised in a background thread while this one runs (`ahead`)
        self.tokenizer_threads = tokenizer_threads(self.devices)  # `tokenize` splits large inputs over that many
        self._tokenizers: list = []  # their own copies of the tokeniser (a fast tokeniser is not to be shared by threads)
        self._tokenizer_lock = threading.Lock()
        self._pool = None
        self.on_batch: Callable | None = None  # on_batch(rows, tokens) after each batch (evalkit/progress.py)

    def _packer(self, mode: str):
        """The packed path's runner where `mode` and the model allow it, else None (the padded path)."""
        from evalkit.models.packing import ATTENTION_MODES, Packed, packable

        if mode not in ATTENTION_MODES:
            raise EvalkitError(f"unknown attention {mode!r}: use one of {', '.join(ATTENTION_MODES)}")
        if mode == "padded" or (mode == "auto" and not self.device.startswith("cuda")):
            return None
        why = packable(self.model, self.config.kind)
        if why is not None:
            if mode == "packed":
                raise EvalkitError(f"--attention packed cannot run {self.config.path}: {why}; use --attention padded or auto")
            log.info("%s runs padded: %s", self.config.path, why)
            return None
        try:  # a transformers that cannot take a registered attention implementation: padded, or one line
            return Packed(self.model, self.config.kind, self.tokenizer.padding_side == "left")
        except (ValueError, TypeError, AttributeError, ImportError) as e:
            if mode == "packed":
                raise EvalkitError(f"--attention packed cannot run {self.config.path}: transformers refused it ({e}); "
                                   "use --attention padded or auto") from e
            log.info("%s runs padded: transformers refused the packed attention (%s)", self.config.path, e)
            return None

    # -- tokenisation
    def tokenize(self, texts: Sequence[str] | Sequence[tuple[str, str]], max_length: int) -> list[dict]:
        """Token features of `texts` (or pairs), in their order (in threads where there are many: `in_threads`)."""
        single_types = self._single_types  # the probe, on the shared tokeniser, before any thread starts
        return self.in_threads(lambda tok, part: self._tokenize(tok, part, max_length, single_types), texts)

    def in_threads(self, work: Callable, items: Sequence) -> list:
        """work(tokenizer, part) over `items` cut into up to `tokenizer_threads` parts of TOKENIZER_PART or more,
        run side by side, each part on its own copy of the tokeniser (fast tokenisers release the GIL; one
        shared by threads can fail with "Already borrowed" while another changes its truncation); the parts'
        lists joined in order. Too few items for two parts: one call, here, on the core's own tokeniser."""
        n = min(self.tokenizer_threads, len(items) // TOKENIZER_PART)
        if n < 2:
            return list(work(self.tokenizer, items))
        from concurrent.futures import ThreadPoolExecutor

        step = -(-len(items) // n)
        parts = [items[s : s + step] for s in range(0, len(items), step)]
        with self._tokenizer_lock:  # one such call at a time: each copy serves one part
            try:
                while len(self._tokenizers) < len(parts):
                    self._tokenizers.append(copy.deepcopy(self.tokenizer))
            except Exception as e:  # a remote-code tokeniser that cannot be copied: one thread, as on a CPU
                log.info("%s: its tokeniser cannot be copied (%s: %s); tokenising in one thread", self.config.path, type(e).__name__, e)
                self.tokenizer_threads, self._tokenizers = 1, []
                return list(work(self.tokenizer, items))
            with ThreadPoolExecutor(len(parts), thread_name_prefix="evalkit-tokenize") as pool:
                return [x for out in pool.map(work, self._tokenizers, parts) for x in out]

    def _tokenize(self, tokenizer, texts, max_length: int, single_types: bool) -> list[dict]:
        # only what pad() uses: it builds the attention mask itself, and a single text's token types
        # only where its template gives some token a type other than 0 (a model given none takes
        # zeros). Half the tokeniser's time on short texts goes into building the lists left out.
        kw = {"truncation": True, "max_length": max_length, "padding": False, "return_attention_mask": False}
        if len(texts) and isinstance(texts[0], (tuple, list)):
            first = [t[0] for t in texts]
            second = [t[1] for t in texts]
            enc = tokenizer(first, second, **kw)
        else:
            enc = tokenizer(list(texts), return_token_type_ids=single_types, **kw)
        keys = [k for k in ("input_ids", "token_type_ids") if k in enc]
        return [{k: enc[k][i] for k in keys} for i in range(len(texts))]

    @functools.cached_property
    def _single_types(self) -> bool:
        """Whether the tokeniser gives any token of a single text a type other than 0 (the template
        is the same for every text, so one probe tells)."""
        return any(self.tokenizer("a").get("token_type_ids") or ())

    def pad(self, feats: Sequence[dict]) -> dict:
        import torch

        n = len(feats)
        width = self.width(max(len(f["input_ids"]) for f in feats))
        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        left = self.tokenizer.padding_side == "left"
        ids = np.full((n, width), pad_id, dtype=np.int64)
        mask = np.zeros((n, width), dtype=np.int64)
        types = np.zeros((n, width), dtype=np.int64) if "token_type_ids" in feats[0] else None
        for i, f in enumerate(feats):
            k = len(f["input_ids"])
            sl = slice(width - k, width) if left else slice(0, k)
            ids[i, sl] = f["input_ids"]
            mask[i, sl] = 1
            if types is not None:
                types[i, sl] = f["token_type_ids"]
        batch = {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask)}
        if types is not None:
            batch["token_type_ids"] = torch.from_numpy(types)
        return batch

    def width(self, longest: int) -> int:
        """A padded batch's width: its longest input, rounded up to `pad_multiple` (the packed path pads nothing)."""
        m = 1 if self.packer is not None else self.pad_multiple
        return -(-longest // m) * m

    # -- running
    def rows(self, feats: Sequence[dict], start: int, bs: int) -> int:
        """How many texts from `start` (sorted longest first) make the next batch."""
        if not self.max_batch_tokens:
            return bs
        return max(1, min(bs, self.max_batch_tokens // max(1, self.width(len(feats[start]["input_ids"])))))

    def run(self, feats: Sequence[dict], head: Callable, batch_size: int | None = None) -> np.ndarray:
        """Head outputs for `feats`, in their order, as float32 numpy."""
        if batch_size is not None and int(batch_size) < 1:
            raise EvalkitError(f"batch size must be a positive integer, got {batch_size!r}")
        if len(feats) == 0:
            return np.zeros((0,), dtype=np.float32)
        t0 = time.perf_counter()
        order = sorted(range(len(feats)), key=lambda i: -len(feats[i]["input_ids"]))
        sorted_feats = [feats[i] for i in order]
        bs = int(batch_size or self.batch_size)
        if self.max_rows:  # a GPU: the token budget makes the batches, at most max_rows rows (OOM halves it)
            bs = max(bs, self.max_rows)
        if len(self.devices) > 1 and len(feats) > bs:
            outs = self._run_parallel(sorted_feats, head, bs)
        else:
            outs = self._run_sorted(sorted_feats, head, bs)
        result = np.empty_like(outs)
        result[np.asarray(order)] = outs
        self.config.stats["texts"] += len(feats)
        self.config.stats["tokens"] += int(sum(len(f["input_ids"]) for f in feats))
        self.config.stats["seconds"] += time.perf_counter() - t0
        return result

    def slice_rows(self, batch_size: int | None = None) -> int:
        """The inputs a slice of `run_ahead` holds at least: a few full batches per device."""
        return 4 * max(int(batch_size or self.batch_size), self.max_rows or 0) * len(self.devices)

    def slices(self, order: Sequence[int], batch_size: int | None = None) -> list[Sequence[int]]:
        """`order` (input indices) cut into slices of `slice_rows`."""
        size = self.slice_rows(batch_size)
        return [order[s : s + size] for s in range(0, len(order), size)]

    def run_ahead(self, inputs: Sequence, features: Callable, head: Callable, batch_size: int | None = None,
                  slices: Sequence[Sequence[int]] | None = None, on_slice: Callable | None = None) -> np.ndarray | None:
        """Head outputs for `inputs` (texts or pairs), in their order, with `features` (a list of inputs -> their
        token features) run one slice ahead of the device (`ahead`), so the first batch waits for one slice's
        tokens only; `run` sorts each slice by its tokens. `slices`: the input indices of each slice, in turn; by
        default the inputs in their own order, in slices of `slice_rows` (a reranker's pairs come grouped by
        query, so each query is tokenised in one slice, once: `pair_features` tokenises distinct texts once).
        `on_slice(indices, outputs)` sees each slice as it is done and keeps what it needs: the outputs are then
        not gathered here (a 20M-document corpus's vectors held once), and None is returned."""
        if slices is None:
            slices = self.slices(list(range(len(inputs))), batch_size)
        result = None
        for idx, feats in ahead(slices, lambda idx: features([inputs[i] for i in idx]), self.tokenize_ahead):
            out = self.run(feats, head, batch_size)
            if on_slice is not None:
                on_slice(idx, out)
                continue
            if result is None:
                result = np.empty((len(inputs),) + out.shape[1:], dtype=out.dtype)
            result[np.asarray(idx, dtype=np.int64)] = out
        if on_slice is None and result is None:
            return np.zeros((0,), dtype=np.float32)
        return result

    def _run_sorted(self, feats: Sequence[dict], head: Callable, bs: int) -> np.ndarray:
        import torch

        chunks: list[np.ndarray] = []
        # head outputs stay on the device until FETCH_BYTES of them are there (or the end): fetching
        # each batch's would make this thread wait for the device before it pads and launches the next
        pending: list = []
        pending_bytes = 0
        start = 0
        ac_dtype = None if self.dtype in ("fp32", "fp16") or self.whole_dtype else torch_dtype(self.dtype)
        device_type = self.device.split(":")[0]
        pinned = device_type == "cuda"  # copies from pinned memory do not make the host wait either
        while start < len(feats):
            part = feats[start : start + self.rows(feats, start, bs)]
            host = self.packer.batch(part) if self.packer is not None else self.pad(part)
            batch = {k: (v.pin_memory() if pinned else v).to(self.device, non_blocking=pinned) for k, v in host.items()}
            try:
                with torch.inference_mode(), (
                    torch.autocast(device_type, dtype=ac_dtype) if ac_dtype is not None else nullcontext()
                ):
                    out = head(self.model if self.packer is None else self.packer, batch)
                pending.append(out.detach().float())
                pending_bytes += 4 * pending[-1].numel()
                if pending_bytes >= FETCH_BYTES:
                    chunks += [t.cpu().numpy() for t in pending]
                    pending, pending_bytes = [], 0
            except Exception as err:
                if not is_oom(err):
                    raise
                del batch
                if device_type == "cuda":
                    torch.cuda.empty_cache()
                if len(part) == 1:
                    raise EvalkitError(
                        f"out of memory on {self.device} even at batch size 1 (longest input {len(part[0]['input_ids'])} tokens): "
                        "lower --max-length, use --dtype bf16/fp16, or a device with more memory"
                    ) from err
                # halve the batch size; where the token budget had already made the failed batch
                # shorter than that, halve the failed batch instead
                bs = max(1, bs // 2 if bs // 2 < len(part) else len(part) // 2)
                self.config.stats["oom_retries"] += 1
                log.warning("out of memory on %s: retrying with batch size %d", self.device, bs)
                continue
            self.config.stats["batches"] += 1
            start += len(part)
            if self.on_batch is not None:
                self.on_batch(len(part), sum(len(f["input_ids"]) for f in part))
        chunks += [t.cpu().numpy() for t in pending]
        return np.concatenate(chunks, axis=0)

    # -- several devices: one worker process per device
    def _run_parallel(self, feats: Sequence[dict], head: Callable, bs: int) -> np.ndarray:
        if self._pool is None:
            import torch.multiprocessing as mp

            ctx = mp.get_context("spawn")
            self._pool = [_Worker(ctx, self.config, d) for d in self.devices]
        batches, start = [], 0
        while start < len(feats):
            batches.append(feats[start : start + self.rows(feats, start, bs)])
            start += len(batches[-1])
        # deal whole batches round-robin so every device gets long and short ones
        shares = [[j for j in range(len(batches)) if j % len(self._pool) == w] for w in range(len(self._pool))]
        for w, idxs in zip(self._pool, shares):
            w.send([f for j in idxs for f in batches[j]], head, bs)
        results = [w.receive() for w in self._pool]
        if self.on_batch is not None:
            self.on_batch(len(feats), sum(len(f["input_ids"]) for f in feats))
        parts: list[np.ndarray | None] = [None] * len(batches)
        for idxs, res in zip(shares, results):
            pos = 0
            for j in idxs:
                parts[j] = res[pos : pos + len(batches[j])]
                pos += len(batches[j])
        return np.concatenate(parts, axis=0)

    def close(self) -> None:
        for w in self._pool or []:
            w.stop()
        self._pool = None

    def __del__(self):  # pragma: no cover - best effort
        try:
            self.close()
        except Exception:
            pass


def longest_by_chars(texts: Sequence[str]) -> list[int]:
    """The indices of `texts`, longest first by characters: the order in which texts are sliced before any is
    tokenised (`Core.run_ahead`'s slices; each is then sorted by its tokens)."""
    return sorted(range(len(texts)), key=lambda i: -len(texts[i]))


class _Worker:
    def __init__(self, ctx, config: CoreConfig, device: str):
        self.inq, self.outq = ctx.Queue(), ctx.Queue()
        self.proc = ctx.Process(target=_worker_main, args=(config, device, self.inq, self.outq), daemon=True)
        self.proc.start()

    def send(self, feats, head, bs):
        self.inq.put((list(feats), head, bs))

    def receive(self) -> np.ndarray:
        kind, payload = self.outq.get()
        if kind == "error":
            raise EvalkitError(payload)
        return payload

    def stop(self):
        if self.proc.is_alive():
            self.inq.put(None)
            self.proc.join(timeout=10)


def _worker_main(config: CoreConfig, device: str, inq, outq):  # pragma: no cover - runs in a subprocess
    try:
        core = Core(CoreConfig(**{**config.__dict__, "stats": {"texts": 0, "tokens": 0, "batches": 0, "oom_retries": 0, "seconds": 0.0}}), [device])
    except Exception as e:
        outq.put(("error", f"worker on {device} could not load the model: {e}"))
        return
    while True:
        job = inq.get()
        if job is None:
            return
        feats, head, bs = job
        try:
            outq.put(("ok", core._run_sorted(feats, head, bs) if feats else np.zeros((0,), np.float32)))
        except Exception as e:
            outq.put(("error", f"worker on {device}: {type(e).__name__}: {e}"))
