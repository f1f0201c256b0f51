"""Recipes: how a model's inputs become the vectors its published scores were made from.

A recipe is the part of a ModelSpec that decides the vectors (pooling, max length, normalisation,
Dense layers, lower-casing, the instruction or prompt of each input kind, examples), with the source
of each value. Where it comes from:

- a catalog name (`--model bge-base-en-v1.5`, or `--recipe bge-base-en-v1.5` on your own folder): the
  catalog entry, which names the run whose published scores it reproduces (`recipe_source`);
- `sentence-transformers`, the default for a folder or hub id outside the catalog: the folder's own
  sentence-transformers files (evalkit/models/st_folder.py); a folder without them gets evalkit's
  defaults ("defaults": CLS pooling, normalised, max length 512, as FlagEmbedding's FlagModel), or,
  asked for by name, what SentenceTransformer(folder) builds for it (mean pooling, not normalised);
- `mteb` / `mteb:HUB_ID`: mteb's own implementation of the model (what the leaderboard's re-runs use):
  its ModelMeta's sentence-transformers loader with its `model_prompts`, over the folder's files.

Flags (`--pooling`, `--max-length`, `--query-instruction`, ...) win over any recipe.
"""
from __future__ import annotations

import fnmatch
import functools
import hashlib
import json
import re
from dataclasses import replace
from pathlib import Path

from evalkit.errors import EvalkitError
from evalkit.tasks.registry import RETRIEVAL_TYPES  # the types with a query side and a document side

DATA = Path(__file__).resolve().parent / "recipe_data"
FOLDER_RECIPES = ("sentence-transformers", "mteb")
# what a folder's files leave unsaid
FOLDER_DEFAULTS = {"similarity": "cosine", "dense": (), "lowercase": False, "include_prompt": True, "default_prompt": None}
RECIPE_FIELDS = (
    "kind", "pooling", "max_length", "normalize", "query_instruction", "instruction_types", "instruction_tasks",
    "query_instruction_format", "query_prefix", "passage_prefix", "task_instructions", "padding_side", "instruction_map",
    "examples", "lowercase", "dense", "prompts", "default_prompt", "similarity", "include_prompt", "recipe_source",
)


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name.replace("/", "__"))


def with_recipe(spec, recipe: str, catalog_spec=None):
    """`spec` under the recipe named `recipe`: `catalog_spec`'s (the catalog entry of that name, which
    evalkit.models.catalog.get_spec looks up), or a folder recipe (sentence-transformers, mteb,
    mteb:HUB_ID), finished by `resolve` once the model's folder is known."""
    own = spec.recipe
    if catalog_spec is not None:
        src, key = catalog_spec, catalog_spec.name
        spec = replace(spec, **{f: getattr(src, f) for f in RECIPE_FIELDS}, recipe=key,
                       sources=tuple((f, f"recipe {key}") for f in ("pooling", "max_length", "normalize", "instruction")))
    elif recipe in FOLDER_RECIPES or recipe.startswith("mteb:"):
        spec = replace(spec, recipe=recipe)
    else:
        raise EvalkitError(f"unknown recipe {recipe!r}: use a catalog model's name (evalkit list models), sentence-transformers, mteb or mteb:HUB_ID")
    if spec.recipe != own and not (own is None and spec.recipe == "sentence-transformers"):
        spec = replace(spec, recipe_variant=f"recipe-{_slug(spec.recipe)}")
    return spec


def resolve(spec, path: Path):
    """The spec with its recipe complete for the model folder `path`: a folder recipe read from the
    folder's files (and mteb's ModelMeta), then the flags applied again (they win)."""
    if spec.recipe is None or spec.recipe in FOLDER_RECIPES or spec.recipe.startswith("mteb:"):
        spec = _from_folder(spec, Path(path))
    if spec.flags:
        spec = replace(spec, **dict(spec.flags), sources=_merge(spec.sources, {k: "flag" for k, _ in spec.flags}))
        if spec.prompts is not None and spec.query_instruction is not None:  # a prompt recipe: the flag is its query prompt
            prompts = {**dict(spec.prompts), "query": spec.query_instruction}
            spec = replace(spec, prompts=tuple(sorted(prompts.items())), query_instruction=None,
                           sources=_merge(spec.sources, {"prompts": "flag --query-instruction as the query prompt"}))
    from evalkit.models.encoder import POOLINGS

    if any(p not in POOLINGS for p in str(spec.pooling).split("+")):
        raise EvalkitError(f"unknown pooling {spec.pooling!r}: use one of {', '.join(POOLINGS)}, or several joined by +")
    return spec


def _merge(sources, new: dict) -> tuple:
    d = dict(sources)
    d.update(new)
    return tuple(d.items())


def _from_folder(spec, path: Path):
    from evalkit.models.loading import read_json
    from evalkit.models.st_folder import read_folder

    st = read_folder(path)
    fields: dict = {}
    sources: dict = {}
    name = spec.recipe or ("sentence-transformers" if st is not None else "defaults")
    as_st = st is not None or name != "defaults"  # sentence-transformers (and so mteb) loads a plain folder too
    if st is None and name == "defaults":
        fields.update(pooling="cls", normalize=True)
        sources.update(pooling="evalkit default (no sentence-transformers files)", normalize="evalkit default")
    elif st is None:  # what SentenceTransformer(folder) builds for a plain transformers folder
        fields.update(pooling="mean", normalize=False)
        sources.update(pooling="sentence-transformers' default for a folder without modules.json (mean)",
                       normalize="sentence-transformers' default (no Normalize)")
    else:
        for f, (value, src) in st.items():
            fields[f] = value
            sources[f] = src
    if "max_length" not in fields:  # sentence-transformers without max_seq_length: the tokenizer's; evalkit's default: 512
        n = read_json(path / "tokenizer_config.json").get("model_max_length") if as_st else None
        if isinstance(n, (int, float)) and 0 < n < 1_000_000:
            fields["max_length"], sources["max_length"] = int(n), "tokenizer_config.json model_max_length"
        else:
            fields["max_length"], sources["max_length"] = 512, "evalkit default"
    source = f"the folder's sentence-transformers config ({path.name})" if st is not None else "evalkit's defaults"
    # sentence-transformers keeps a query and a document prompt, empty unless the folder gives them
    folder_prompts = {"query": "", "document": "", **dict(fields.get("prompts") or ())}
    if name.startswith("mteb"):
        hub = name[5:] if name.startswith("mteb:") else spec.hub_id
        fields["prompts"], how = mteb_prompts(hub, folder_prompts, spec.name)
        sources["prompts"] = how
        source = f"mteb's implementation of {hub} ({how}) over {source}"
    elif as_st:
        fields["prompts"] = tuple(sorted(folder_prompts.items()))
    # a folder recipe decides everything: nothing of a catalog recipe's instruction rule is left over
    fields.update(query_instruction=None, query_prefix="", passage_prefix="", instruction_tasks=None, instruction_map=None, examples=None)
    fields = {**FOLDER_DEFAULTS, **fields}
    return replace(spec, **fields, recipe=name, recipe_source=source, sources=_merge(spec.sources, sources))


def mteb_prompts(hub_id: str | None, folder_prompts: dict, model_name: str) -> tuple[tuple, str]:
    """The prompts mteb 2.26's implementation gives the model: its ModelMeta's `model_prompts` where it
    has some (they replace the folder's, sentence-transformers' empty query and document prompts too),
    else the folder's (mteb's _resolve_model_prompts)."""
    if not hub_id:
        raise EvalkitError(f"--recipe mteb needs the model's hub id to find mteb's implementation: {model_name} has none; use --recipe mteb:HUB_ID")
    import mteb

    try:
        meta = mteb.get_model_meta(hub_id)
    except Exception:
        meta = None
    if meta is None:
        raise EvalkitError(f"mteb has no implementation of {hub_id}: use --recipe sentence-transformers (the folder's own config)")
    loader = getattr(meta.loader, "__name__", str(meta.loader))
    if meta.loader is not None and loader != "SentenceTransformerEncoderWrapper":
        raise EvalkitError(f"mteb runs {hub_id} through its own {loader}; evalkit reproduces mteb's sentence-transformers loader only")
    given = dict((meta.loader_kwargs or {}).get("model_prompts") or {})
    if given:
        return tuple(sorted((str(k), str(v)) for k, v in given.items())), f"mteb ModelMeta {hub_id} model_prompts"
    return tuple(sorted(folder_prompts.items())), "the folder's prompts (mteb's ModelMeta gives none)"


# ----------------------------------------------------------------------------- instructions
@functools.cache
def _instruction_table(name: str) -> dict:
    f = DATA / name / "instructions_full.json"
    try:
        return json.loads(f.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise EvalkitError(f"the instruction table of recipe {name} ({f}) cannot be read: {e}") from e


def mapped_instruction(table: str, task_name: str, task_type: str, type_default: bool = True) -> str | None:
    """FlagEmbedding's get_task_def_by_task_name_and_type over the table: by type and name, the
    CQADupstack sub-forums, then (with `type_default`) the type-level default (STS, Summarization,
    BitextMining)."""
    d = _instruction_table(table)
    if task_name in (d.get(task_type) or {}):
        return d[task_type][task_name]
    for group, value in d.items():  # a name listed under another type (mteb moved some tasks between types)
        if not group.startswith("_") and task_name in value:
            return value[task_name]
    if task_name.lower().startswith("cqadupstack"):
        sub = d.get("_cqadupstack_subsets") or {}
        return sub.get(task_name) or next(iter(sub.values()), None)
    return (d.get("_type_level_defaults") or {}).get(task_type) if type_default else None


def instruction_for(spec, task_name: str, task_type: str, task_instruction: str | None = None) -> str | None:
    """The instruction a query (or a symmetric input, for an instruction-following model) of this task
    gets under `spec`'s recipe, or None: the recipe's own table, then the task's `instruction:` (for a
    model that follows task instructions), then the recipe's query instruction where its rule applies."""
    if spec.prompts is not None:
        return None  # a prompt recipe: see prompt_for
    if spec.instruction_map:  # the task's own entry in the recipe's table, else the task's, else the table's type default
        found = mapped_instruction(spec.instruction_map, task_name, task_type, type_default=False)
        if found:
            return found
    if spec.task_instructions and task_instruction:
        return task_instruction
    if spec.instruction_map:
        found = mapped_instruction(spec.instruction_map, task_name, task_type)
        if found:
            return found
    if spec.query_instruction and task_type in spec.instruction_types:
        if spec.instruction_tasks is None or any(fnmatch.fnmatchcase(task_name, p) for p in spec.instruction_tasks):
            return spec.query_instruction
    return None


def prompt_for(spec, task_metadata, prompt_type: str | None) -> str:
    """The prompt text that plain mteb 2.26 with sentence-transformers puts before an input: mteb's
    get_prompt_name over the model's prompts (validated as mteb validates them); where it finds none,
    mteb passes no prompt and sentence-transformers falls back: encode_query to a `query` prompt,
    encode_document to a `document` prompt, and encode (or those two without theirs) to the default prompt."""
    from mteb.models.abs_encoder import get_prompt_name
    from mteb.types import PromptType

    prompts = dict(spec.prompts or ())
    name = get_prompt_name(_valid_prompts(tuple(spec.prompts or ())), task_metadata, PromptType(prompt_type) if prompt_type else None)
    if name is not None:
        return prompts[name] or ""
    if prompt_type in ("query", "document") and prompt_type in prompts:
        return prompts[prompt_type] or ""
    if spec.default_prompt is not None:
        return prompts.get(spec.default_prompt) or ""
    return ""


@functools.lru_cache(maxsize=64)
def _valid_prompts(prompts: tuple) -> dict:
    from mteb.models.abs_encoder import AbsEncoder

    valid, _ = AbsEncoder.validate_task_to_prompt_name(dict(prompts), raise_for_invalid_keys=False)
    return dict(valid or {})


# ----------------------------------------------------------------------------- examples
def examples_file(spec, task) -> Path | None:
    """The recipe's own few-shot examples of a task (a TaskSpec, or a task's name), or None.

    bge-en-icl's authors ship them for MTEB (research/llm_dense_retriever/examples: `<Task>.json`,
    CQADupstack's sub-forums sharing CQADupstackRetrieval.json) and for English AIR-Bench 24.04
    (FlagEmbedding/evaluation/air_bench/examples: `qa/<domain>.jsonl`, `long-doc/<domain>-<dataset>.jsonl`
    with the dataset's name lower-cased, `{query, pos}` lines whose `pos` is the response)."""
    if not spec.examples:
        return None
    name = task if isinstance(task, str) else task.name
    if not isinstance(task, str) and getattr(task, "air_bench", None):
        return air_bench_examples(task, spec.examples)
    folder = DATA / spec.examples / "mteb-examples"
    name = "CQADupstackRetrieval" if name.lower().startswith("cqadupstack") else name
    f = folder / f"{name}.json"
    return f if f.is_file() else None


def air_bench_examples(task, examples: str = "bge-en-icl") -> Path | None:
    """The `examples` recipe's few-shot examples of an AIR-Bench task (a TaskSpec), or None: bge-en-icl's
    authors ship 3 for each English 24.04 dataset (`qa/<domain>.jsonl`, `long-doc/<domain>-<dataset>.jsonl`,
    the dataset's name lower-cased). AIR-Bench has no train split, so these are also the tasks' own
    few-shot pool (evalkit/fewshot.py, build_pools)."""
    ab = getattr(task, "air_bench", None) or {}
    if ab.get("version") != "AIR-Bench_24.04" or ab.get("lang") != "en":
        return None
    stem = ab["domain"] if ab["task_type"] == "qa" else f"{ab['domain']}-{str(ab['dataset']).lower()}"
    f = DATA / examples / "air-bench-examples" / ab["task_type"] / f"{stem}.jsonl"
    return f if f.is_file() else None


def examples_count(path: Path) -> int:
    """How many examples a JSON list or JSON-lines file holds."""
    text = Path(path).read_text(encoding="utf-8")
    return len(json.loads(text)) if text.lstrip().startswith("[") else sum(1 for line in text.splitlines() if line.strip())


def file_hash(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


# ----------------------------------------------------------------------------- the record
def describe(spec, ts=None) -> dict:
    """The recipe as the result file's `evalkit.recipe` records it (and the run prints it); with `ts`
    (a TaskSpec) also the inputs and the examples of that task."""
    d = {
        "name": spec.recipe or "defaults",
        "source": spec.recipe_source or None,
        "pooling": spec.pooling,
        "max_length": spec.max_length,
        "normalize": spec.normalize,
        "similarity": spec.similarity,
    }
    if spec.dense:
        d["dense"] = list(spec.dense)
    if spec.lowercase:
        d["lowercase"] = True
    if ts is not None:
        d["inputs"] = inputs_of(spec, ts.name, ts.type, ts.instruction)
        f = examples_file(spec, ts)
        if f is not None:
            d["examples"] = {"file": str(f.relative_to(DATA)), "sha256": file_hash(f), "count": examples_count(f)}
    d["sources"] = dict(spec.sources) or None
    return d


def input_prefix(spec, task_metadata, kind: str | None, task_instruction: str | None = None) -> str:
    """What the recipe puts before an input of `kind` (query, document, or None: a symmetric task's
    input) of the task: the prompt plain mteb would give (a prompt recipe); else a document's passage
    prefix, the instruction where the recipe's rule puts one (a BGE-style retrieval instruction on
    queries only), or the query prefix. Every instruction format puts the text last."""
    if spec.prompts is not None:
        return prompt_for(spec, task_metadata, kind)
    if kind == "document":
        return spec.passage_prefix
    instr = None
    if kind == "query" or task_metadata.type not in RETRIEVAL_TYPES:
        instr = instruction_for(spec, task_metadata.name, task_metadata.type, task_instruction)
        if instr is not None and not spec.task_instructions and kind != "query":
            instr = None  # a BGE-style retrieval instruction is for queries only
    return spec.query_instruction_format.format(instr, "") if instr is not None else spec.query_prefix


def summary(spec) -> str:
    """One line: the recipe `spec` encodes with and where it came from (the run prints it)."""
    d = describe(spec)
    extra = f", Dense {'+'.join(d['dense'])}" if d.get("dense") else ""
    extra += ", lower-cased" if d.get("lowercase") else ""
    return (f"recipe of {spec.name}: {d['name']} ({d['pooling']} pooling, max length {d['max_length']}, "
            f"{'normalised' if d['normalize'] else 'not normalised'}, {d['similarity']}{extra}): {d['source'] or 'evalkit defaults'}")


def inputs_of(spec, task_name: str, task_type: str, task_instruction: str | None = None) -> dict:
    """What goes before each input kind of the task: {"query": ..., "document": ...} ("" for nothing)."""
    meta = _Meta(task_name, task_type)
    if task_type in RETRIEVAL_TYPES:
        return {kind: input_prefix(spec, meta, kind, task_instruction) for kind in ("query", "document")}
    return {"input": input_prefix(spec, meta, None, task_instruction)}


class _Meta:
    """The two fields of an mteb TaskMetadata that prompt selection reads."""

    def __init__(self, name: str, type_: str):
        self.name, self.type = name, type_
