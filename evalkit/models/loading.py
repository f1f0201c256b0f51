"""Find a model's files (local folder, Hugging Face cache or hub) and load tokenizer and network.

Every failure ends in an EvalkitError that names the model and what to do about it.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from evalkit.errors import EvalkitError

WEIGHT_FILES = (
    "model.safetensors",
    "pytorch_model.bin",
    "model.safetensors.index.json",
    "pytorch_model.bin.index.json",
)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "tokenizer.model", "sentencepiece.bpe.model")


def check_model_folder(path: Path) -> None:
    if not (path / "config.json").is_file():
        raise EvalkitError(f"model folder {path} has no config.json: point --model at a folder saved with save_pretrained()")
    if not any((path / f).is_file() for f in WEIGHT_FILES):
        raise EvalkitError(
            f"model folder {path} has no weights ({', '.join(WEIGHT_FILES[:2])}): copy the weights there or re-save the model"
        )
    if not any((path / f).is_file() for f in TOKENIZER_FILES):
        raise EvalkitError(f"model folder {path} has no tokenizer files (tokenizer.json, vocab.txt, ...): save the tokenizer beside the weights")


def resolve_model_path(name_or_path: str, revision: str | None = None) -> Path:
    """Local folder as is; otherwise a hub id, from the local HF cache first, then the hub."""
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not path.is_dir():
            raise EvalkitError(f"model path {path} is a file, not a folder with config.json, weights and tokenizer")
        check_model_folder(path)
        return path
    if name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1:
        raise EvalkitError(f"model folder {name_or_path} does not exist")
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import HFValidationError
    except ImportError as e:  # pragma: no cover - huggingface_hub ships with transformers
        raise EvalkitError(f"huggingface_hub is missing ({e}): pip install huggingface_hub") from e
    patterns = ["*.json", "*.safetensors", "*.txt", "*.model", "1_Pooling/*", "*_Dense/*", "*_Normalize/*"]
    try:
        local = snapshot_download(name_or_path, revision=revision, local_files_only=True, allow_patterns=patterns)
    except HFValidationError as e:
        raise EvalkitError(f"unknown model {name_or_path!r}: not a catalog name (evalkit list models), a local folder or a hub id") from e
    except Exception:
        local = None
    if local is None:
        if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
            raise EvalkitError(
                f"model {name_or_path} is not in the local Hugging Face cache (HF_HOME={hf_home()}) and HF_HUB_OFFLINE is set: "
                "download it on a connected machine and copy its cache, or pass a local folder"
            )
        try:
            local = snapshot_download(name_or_path, revision=revision, allow_patterns=patterns)
        except Exception as e:
            kind = type(e).__name__
            raise EvalkitError(
                f"model {name_or_path} is neither a local folder nor in the Hugging Face cache (HF_HOME={hf_home()}), "
                f"and the hub cannot be reached ({kind}): set HF_HOME to a cache that holds it, or pass a local folder"
            ) from e
    path = Path(local)
    check_model_folder(path)
    return path


def hf_home() -> str:
    return os.environ.get("HF_HOME", str(Path.home() / ".cache" / "huggingface"))


def folder_revision(path: Path) -> str:
    """The hub commit of a cache snapshot, else a fingerprint of config and weights (name, size, head)."""
    if path.parent.name == "snapshots" and len(path.name) == 40:
        return path.name
    h = hashlib.sha256()
    h.update((path / "config.json").read_bytes())
    for f in sorted(path.glob("*")):
        if f.is_file() and (f.suffix in (".safetensors", ".bin") or f.name in TOKENIZER_FILES):
            h.update(f.name.encode())
            h.update(str(f.stat().st_size).encode())
            with f.open("rb") as fh:
                h.update(fh.read(1 << 20))
    return "local-" + h.hexdigest()[:12]


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def load_tokenizer(path: Path, padding_side: str | None = None, trust_remote_code: bool = False, lowercase: bool = False):
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust_remote_code)
    except Exception as e:
        raise EvalkitError(f"cannot load the tokenizer of {path}: {type(e).__name__}: {e}") from e
    if lowercase:
        lowercase_tokenizer(tok, path)
    if padding_side is not None:
        tok.padding_side = padding_side
    if tok.pad_token_id is None:
        if tok.eos_token is not None:
            tok.pad_token = tok.eos_token
        elif tok.unk_token is not None:
            tok.pad_token = tok.unk_token
    return tok


def lowercase_tokenizer(tok, path) -> None:
    """sentence-transformers' do_lower_case (its Transformer module): a Lowercase normaliser put before
    the fast tokenizer's own, unless it already lower-cases."""
    if not getattr(tok, "is_fast", False):
        raise EvalkitError(f"{path}: do_lower_case needs a fast tokenizer (tokenizer.json)")
    from tokenizers.normalizers import Lowercase, Sequence

    backend = tok.backend_tokenizer
    norm = backend.normalizer
    text = repr(norm)
    if "Lowercase" in text or "lowercase=True" in text:
        return
    backend.normalizer = Sequence([Lowercase()] + ([norm] if norm is not None else []))


def load_network(path: Path, kind: str = "embedder", trust_remote_code: bool = False, dtype=None):
    """AutoModel for embedders, AutoModelForSequenceClassification for cross-encoders,
    AutoModelForCausalLM for LLM rerankers; fp32 weights unless `dtype` (a torch dtype) is given
    (transformers 5 would otherwise load the checkpoint's own dtype; `dtype` is its name for the old
    `torch_dtype`), eval mode."""
    import torch
    from transformers import AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification

    cls = {"embedder": AutoModel, "reranker": AutoModelForSequenceClassification, "llm-reranker": AutoModelForCausalLM}[kind]
    try:
        model = cls.from_pretrained(str(path), dtype=dtype or torch.float32, trust_remote_code=trust_remote_code)
    except Exception as e:
        raise EvalkitError(f"cannot load the model in {path}: {type(e).__name__}: {e}") from e
    return model.eval()


def model_positions(path: Path) -> int | None:
    """The longest input the network's position table takes (None when unbounded or unknown)."""
    cfg = read_json(Path(path) / "config.json")
    n = cfg.get("max_position_embeddings")
    if not isinstance(n, int) or n <= 0:
        return None
    if cfg.get("model_type") in ("roberta", "xlm-roberta", "camembert", "xlm-roberta-xl"):
        n -= int(cfg.get("pad_token_id") or 1) + 1  # RoBERTa's positions start after the padding index
    return n
