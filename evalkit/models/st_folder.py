"""A sentence-transformers folder read as sentence-transformers reads it.

`modules.json` lists the modules; evalkit reproduces this pipeline and nothing else:

    Transformer  (sentence_bert_config.json: max_seq_length, do_lower_case)
    Pooling      (1_Pooling/config.json: cls, mean, max, mean_sqrt_len_tokens, weightedmean, lasttoken,
                  several of them concatenated in that order, as sentence-transformers does)
    Dense ...    (each a linear layer and its activation, applied to the pooled vector in order)
    Normalize    (L2, last)

and `config_sentence_transformers.json`: its prompts, default prompt and similarity function. Any
other module (a CNN, an LSTM, a Router, a static embedding, ...) or setting evalkit cannot reproduce
is refused in one line that names it, never guessed.

`read_folder(path)` returns the spec fields it gives with their source (a file of the folder), or
None when the folder has no modules.json (a plain transformers checkpoint).
"""
from __future__ import annotations

import json
from pathlib import Path

from evalkit.errors import EvalkitError
from evalkit.models.encoder import ACTIVATIONS

# sentence-transformers' pooling mode names -> evalkit's, in the order Pooling concatenates them
POOLING_MODES = {
    "cls": "cls", "max": "max", "mean": "mean", "mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "weightedmean": "weightedmean", "lasttoken": "last_token",
}
LEGACY_POOLING_KEYS = {
    "pooling_mode_cls_token": "cls", "pooling_mode_max_tokens": "max", "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens", "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}
SIMILARITIES = ("cosine", "dot")


def _kind(module_type: str) -> str:
    """'sentence_transformers.models.Pooling' (any version's path) -> 'Pooling'."""
    return str(module_type).rsplit(".", 1)[-1]


def _json(path: Path) -> dict:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise EvalkitError(f"cannot read {path} ({e.strerror})") from e
    except ValueError as e:
        raise EvalkitError(f"{path} is not valid JSON ({e})") from e
    return doc


def pooling_of(config: dict, where: Path) -> str:
    """1_Pooling/config.json -> evalkit's pooling ('mean', 'cls', ..., or 'mean+max' for several)."""
    modes = config.get("pooling_mode")
    if modes is None:
        modes = [m for key, m in LEGACY_POOLING_KEYS.items() if config.get(key)]
    if isinstance(modes, str):
        modes = [modes]
    if not modes:
        raise EvalkitError(f"{where} sets no pooling mode: give one of {', '.join(POOLING_MODES)}")
    bad = [m for m in modes if m not in POOLING_MODES]
    if bad:
        raise EvalkitError(f"{where}: pooling mode {bad[0]!r} is not one evalkit reproduces ({', '.join(POOLING_MODES)})")
    return "+".join(POOLING_MODES[m] for m in modes)


def read_folder(path: Path) -> dict | None:
    """{field: (value, source)} for the spec, from the folder's sentence-transformers files; None
    when it has none. Raises EvalkitError for a module or setting evalkit cannot reproduce."""
    path = Path(path)
    mfile = path / "modules.json"
    if not mfile.is_file():
        return None
    modules = _json(mfile)
    if not isinstance(modules, list) or not modules:
        raise EvalkitError(f"{mfile} lists no modules")
    kinds = [_kind(m.get("type", "")) for m in modules]
    out: dict = {}
    if kinds[0] != "Transformer":
        raise EvalkitError(f"{mfile}: the first module is {modules[0].get('type')}, not a Transformer: evalkit cannot reproduce this model")
    cfg_name = "sentence_bert_config.json"
    tcfg_path = path / (modules[0].get("path") or "") / cfg_name
    if tcfg_path.is_file():
        tcfg = _json(tcfg_path)
        if tcfg.get("max_seq_length"):
            out["max_length"] = (int(tcfg["max_seq_length"]), f"{cfg_name} max_seq_length")
        if tcfg.get("do_lower_case"):
            out["lowercase"] = (True, f"{cfg_name} do_lower_case")
    seen_pooling, dense = False, []
    for m, kind in zip(modules[1:], kinds[1:]):
        folder = path / (m.get("path") or "")
        where = f"{m.get('path') or '.'}/config.json"
        if kind == "Pooling":
            if seen_pooling or dense:
                raise EvalkitError(f"{mfile}: a second Pooling module ({m.get('path')}) is not something evalkit reproduces")
            pcfg = _json(folder / "config.json")
            out["pooling"] = (pooling_of(pcfg, folder / "config.json"), f"{where} pooling")
            if pcfg.get("include_prompt") is False:
                out["include_prompt"] = (False, f"{where} include_prompt")
            seen_pooling = True
        elif kind == "Dense":
            if not seen_pooling:
                raise EvalkitError(f"{mfile}: a Dense module ({m.get('path')}) before pooling works on tokens: evalkit cannot reproduce it")
            dcfg = _json(folder / "config.json")
            act = dcfg.get("activation_function", "torch.nn.modules.activation.Tanh")
            if act not in ACTIVATIONS:
                raise EvalkitError(f"{folder}/config.json: activation {act!r} is not one evalkit reproduces ({', '.join(sorted(set(ACTIVATIONS.values())))})")
            if not any((folder / f).is_file() for f in ("model.safetensors", "pytorch_model.bin")):
                raise EvalkitError(f"Dense module {folder} has no weights (model.safetensors or pytorch_model.bin)")
            dense.append(str(m.get("path")))
        elif kind == "Normalize":
            if m is not modules[-1]:
                raise EvalkitError(f"{mfile}: Normalize is followed by other modules: evalkit normalises last")
            out["normalize"] = (True, "modules.json Normalize")
        else:
            raise EvalkitError(f"{mfile}: module {m.get('type')} ({m.get('path') or m.get('name')}) is not one evalkit reproduces "
                               "(Transformer, Pooling, Dense, Normalize)")
    if not seen_pooling:
        raise EvalkitError(f"{mfile} has no Pooling module: evalkit cannot tell how to make one vector of the tokens")
    out.setdefault("normalize", (False, "modules.json (no Normalize)"))
    if dense:
        out["dense"] = (tuple(dense), "modules.json Dense")
    ccfg_path = path / "config_sentence_transformers.json"
    if ccfg_path.is_file():
        ccfg = _json(ccfg_path)
        prompts = {str(k): ("" if v is None else str(v)) for k, v in (ccfg.get("prompts") or {}).items()}
        if prompts:
            out["prompts"] = (tuple(sorted(prompts.items())), "config_sentence_transformers.json prompts")
        default = ccfg.get("default_prompt_name")
        if default is not None:
            if default not in prompts:
                raise EvalkitError(f"{ccfg_path}: default_prompt_name {default!r} is not one of its prompts ({', '.join(prompts) or 'none'})")
            out["default_prompt"] = (str(default), "config_sentence_transformers.json default_prompt_name")
        sim = ccfg.get("similarity_fn_name")
        if sim is not None:
            if sim not in SIMILARITIES:
                raise EvalkitError(f"{ccfg_path}: similarity {sim!r} is not one evalkit reproduces ({', '.join(SIMILARITIES)})")
            out["similarity"] = (str(sim), "config_sentence_transformers.json similarity_fn_name")
    if out.get("include_prompt", (True,))[0] is False and any(v for _, v in out.get("prompts", ((), ""))[0]):
        raise EvalkitError(f"{path}: its pooling leaves the prompt's tokens out (include_prompt: false); evalkit does not reproduce that")
    return out
