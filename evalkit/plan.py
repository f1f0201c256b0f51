"""A run as data: the units (one per result file) and the settings, built and checked before any
model loads or anything is written.

    unit = (model, task, variant)
    variant = a few-shot setting (k, selector, seed, selector model); for a multi-function embedder
              (BGE-M3) its mode (sparse, colbert, hybrid; dense is the plain unit); for a reranker,
              or an M3 mode that rescores, its first stage (another unit) and top-k; zero-shot plain
              embedding is the empty variant

`make_plan` reads and validates every task's data, resolves every model (its folder and revision,
so every result path is known), and refuses a combination that cannot work in one line
(EvalkitError). Nothing here loads a network or touches the output folder: bad input leaves it
byte for byte as it was.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path

from evalkit.errors import EvalkitError
from evalkit.fewshot import Setting
from evalkit.models.m3_search import M3_TYPES, M3Mode
from evalkit.results import result_dir
from evalkit.tasks.registry import SEARCH_TYPES

log = logging.getLogger("evalkit")

EMBEDDER_KINDS = ("embedder", "icl-embedder")
RERANKER_KINDS = ("reranker", "llm-reranker")
KINDS = EMBEDDER_KINDS + RERANKER_KINDS
TWO_STAGE_TYPES = SEARCH_TYPES  # a reranker reorders a first stage's top-k
DIRECT_TYPES = ("Reranking", "InstructionReranking")  # a reranker scores the task's own candidates
SEARCH_MODES = ("auto", "memmap", "mteb")


@dataclass(frozen=True)
class Settings:
    """How every unit runs: plain values, never changed during a run."""

    output: Path = Path("results")
    overwrite: bool = False
    batch_size: int = 64
    dtype: str | None = None
    device: str | None = None
    use_cache: bool = True
    cache_dir: Path | None = None
    seed: int = 42
    search: str = "auto"  # retrieval search: auto | memmap | mteb (evalkit/search.py)
    attention: str = "auto"  # the encoder's batches: auto | packed | padded (evalkit/models/packing.py)
    query_block: int | None = None  # memmap search blocks (tests, benchmarks); None: search.py's defaults
    doc_chunk: int | None = None

    def __post_init__(self):
        if self.batch_size is None or isinstance(self.batch_size, bool) or int(self.batch_size) < 1:
            raise EvalkitError(f"batch size must be a positive integer, got {self.batch_size!r}")
        if self.search not in SEARCH_MODES:
            raise EvalkitError(f"unknown search {self.search!r}: use one of {', '.join(SEARCH_MODES)}")
        from evalkit.models.packing import ATTENTION_MODES

        if self.attention not in ATTENTION_MODES:
            raise EvalkitError(f"unknown attention {self.attention!r}: use one of {', '.join(ATTENTION_MODES)}")


@dataclass(frozen=True)
class Model:
    """A resolved model: its spec (kind made explicit), its folder and the revision its results go under."""

    spec: object  # evalkit.models.catalog.ModelSpec
    path: Path
    revision: str

    @property
    def kind(self) -> str:
        return self.spec.kind

    @property
    def name(self) -> str:
        return self.spec.name


@dataclass(frozen=True)
class Unit:
    """One result file: `model` on `task` under a variant."""

    model: Model
    task: object  # evalkit.tasks.TaskSpec
    fewshot: Setting | None = None  # embedder units: the few-shot setting (k=0: zero-shot)
    m3: M3Mode | None = None  # a multi-function embedder's sparse / colbert / hybrid mode (None: dense)
    first_stage: Unit | None = None  # a reranker's (or rescoring M3 mode's) retrieval unit: the dense unit whose top-k it reorders
    top_k: int | None = None
    folder: Path = field(default=Path("."), compare=False)

    @property
    def role(self) -> str:
        """embed | m3 (a multi-function embedder's mode other than dense) | rerank"""
        if self.model.kind in RERANKER_KINDS:
            return "rerank"
        return "m3" if self.m3 is not None else "embed"

    @property
    def variant(self) -> str | None:
        """The result-set name under <model>/<revision>/experiments/ (None: the plain folder)."""
        if self.role == "rerank":
            if self.first_stage is None:
                return None
            fs = self.first_stage
            name = fs.model.spec.result_name + (f"-{fs.variant}" if fs.variant else "")
            return f"rerank-{name}-top{int(self.top_k)}"
        shots = self.fewshot.variant if self.fewshot is not None else None
        recipe = self.model.spec.recipe_variant  # another recipe than the model's own: an experiment of its own
        if recipe:
            shots = f"{recipe}-{shots}" if shots else recipe
        if self.m3 is None:
            return shots
        mode = f"m3-{self.m3.slug}" + (f"-top{int(self.top_k)}" if self.first_stage is not None else "")
        return f"{shots}-{mode}" if shots else mode

    @property
    def path(self) -> Path:
        return self.folder / f"{self.task.name}.json"

    @property
    def key(self) -> str:
        return f"{self.model.spec.result_name}/{self.variant or '-'}/{self.task.name}"

    @property
    def label(self) -> str:
        """What a person reads in progress lines and tables: model [variant] task."""
        return f"{self.model.name}{f' [{self.variant}]' if self.variant else ''} {self.task.name}"

    @property
    def setting_label(self) -> str:
        if self.role == "rerank":
            return f"reranked top {self.top_k} of {self.first_stage.setting_label}" if self.first_stage else "own candidates"
        shots = self.fewshot.label if self.fewshot is not None else "0-shot"
        if self.m3 is None:
            return shots
        mode = f"M3 {self.m3.label}" + (f" of the dense top {self.top_k}" if self.first_stage is not None else "")
        return mode + (f", {shots}" if shots != "0-shot" else "")

    def run_file(self) -> Path | None:
        """Where a reranked (or rescoring M3) unit's candidates, its first stage's top-k, are kept."""
        if self.first_stage is None:
            return None
        return self.first_stage.folder / f"{self.task.name}.run_top{int(self.top_k)}.json"


@dataclass
class Plan:
    units: list[Unit]
    settings: Settings
    notes: list[str] = field(default_factory=list)  # what the plan left out and why, for the user
    unreadable: dict = field(default_factory=dict)  # a dry run's tasks whose data cannot be had here: name -> the one line
    read: dict = field(default_factory=dict, repr=False, compare=False)  # a dry run's checked mteb tasks, which its estimate reuses

    @property
    def folders(self) -> list[Path]:
        return sorted({u.folder for u in self.units})

    @property
    def throwaway_cache(self) -> bool:
        """--no-cache with a reranker: a temporary cache, so a run file costs no second encoding."""
        return not self.settings.use_cache and any(u.first_stage is not None for u in self.units)


# ----------------------------------------------------------------------------- models
def _architectures(path: Path) -> list[str]:
    from evalkit.models.loading import read_json

    return [str(a) for a in read_json(Path(path) / "config.json").get("architectures") or []]


def detect_kind(spec, path: Path, role: str | None = None) -> str:
    """The kind of a model outside the catalog, from its config's architectures: a sequence
    classifier is a cross-encoder reranker; a causal LM named as a reranker is an LLM reranker
    (as --model it stays an embedder unless --kind icl-embedder says otherwise)."""
    archs = _architectures(path)
    if any(a.endswith("ForSequenceClassification") for a in archs):
        return "reranker"
    if role == "rerank" and any(a.endswith("ForCausalLM") for a in archs):
        return "llm-reranker"
    return spec.kind


def known_kind(spec, kind: str | None = None, role: str | None = None) -> str | None:
    """A model's kind when it is known without looking for the model: --kind, or the catalog's."""
    from evalkit.models.catalog import ALIASES, CATALOG

    if kind is not None:
        if kind not in KINDS:
            raise EvalkitError(f"unknown --kind {kind!r}: use one of {', '.join(KINDS)}")
        return kind
    return spec.kind if (spec.name in CATALOG or spec.hub_id in ALIASES) else None


def resolve_model(spec, kind: str | None = None, role: str | None = None) -> Model:
    """Locate the model (one line if it cannot be had), make its kind explicit, read its revision."""
    from evalkit.models.catalog import ALIASES, CATALOG
    from evalkit.models.loading import folder_revision

    if kind is not None and kind not in KINDS:
        raise EvalkitError(f"unknown --kind {kind!r}: use one of {', '.join(KINDS)}")
    path = spec.locate()
    in_catalog = spec.name in CATALOG or spec.hub_id in ALIASES
    if kind is None:
        kind = spec.kind if in_catalog else detect_kind(spec, path, role)
    spec = replace(spec, kind=kind) if kind != spec.kind else spec
    if kind in EMBEDDER_KINDS:
        from evalkit.models.recipes import resolve

        spec = resolve(spec, Path(path))  # the folder's own recipe where it has no other; flags win
    if kind == "icl-embedder" and spec.pooling != "last_token":
        spec = replace(spec, pooling="last_token")
    return Model(spec, Path(path), spec.revision or folder_revision(Path(path)))


# ----------------------------------------------------------------------------- the plan
def make_plan(
    model,
    task_specs: list,
    settings: Settings,
    *,
    kind: str | None = None,
    fewshot: list[Setting] | None = None,
    reranker=None,
    reranker_kind: str | None = None,
    first_stage=None,
    top_k: int = 100,
    m3_modes: list[M3Mode] | None = None,
    check_data: bool | str = True,
) -> Plan:
    """The units of `model` (a ModelSpec) on `task_specs`, with few-shot settings and a reranker.

    - an embedder (or in-context embedder) `model`: one unit per few-shot setting and task; with
      `reranker`, each retrieval unit is also reranked (top_k of it) and each reranking task is
      scored by the reranker on its own candidates;
    - a reranker `model`: with `first_stage` (an embedder spec), as above with the roles swapped;
      alone, its reranking tasks;
    - `m3_modes` (a multi-function embedder `model`): per retrieval and reranking task one unit per
      mode; sparse searches the whole corpus, colbert and hybrid rescore the dense unit's top_k
      (which joins the plan), dense is the plain unit.
    """
    if not task_specs:
        raise EvalkitError("no tasks to run")
    dup = sorted({t.name for t in task_specs if sum(u.name == t.name for u in task_specs) > 1})
    if dup:
        raise EvalkitError(f"task {dup[0]} is named twice: each task's result is one file, give it once")
    if top_k is None or isinstance(top_k, bool) or int(top_k) < 1:
        raise EvalkitError(f"--top-k must be a positive integer, got {top_k!r}")
    top_k = int(top_k)
    notes: list[str] = []
    if settings.dtype:  # bf16 on a CPU without bf16 matrix units: slower than fp32, said before anything runs
        from evalkit.models.encoder import cpu_bf16_note

        bf16 = cpu_bf16_note(settings.dtype, settings.device)
        if bf16:
            notes.append(bf16)

    if reranker is not None or first_stage is not None:  # before any model is looked for: the combination itself
        rerankable = [t for t in task_specs if t.type in TWO_STAGE_TYPES + DIRECT_TYPES]
        if not rerankable:
            other = ", ".join(f"{t.name} ({t.type})" for t in task_specs)
            raise EvalkitError(f"rerankers are scored on Retrieval, Reranking, InstructionRetrieval and InstructionReranking tasks only, not on {other}: add one, or drop --reranker / --first-stage")
    # the roles, from what is known without looking for any model (catalog kinds, --kind); a model
    # outside the catalog is looked for here to read its kind from its config
    main_kind = known_kind(model, kind) or resolve_model(model, kind).kind
    modes = list(m3_modes or [])
    if modes:
        if main_kind != "embedder":
            raise EvalkitError(f"--m3-mode sets the retrieval modes of a multi-function embedder (bge-m3) given as --model; {model.name} is a {main_kind}")
        if any(m.name != "dense" for m in modes) and not any(t.type in M3_TYPES for t in task_specs):
            other = ", ".join(f"{t.name} ({t.type})" for t in task_specs)
            raise EvalkitError(f"M3's sparse, colbert and hybrid modes are scored on Retrieval, Reranking, InstructionRetrieval and InstructionReranking tasks, not on {other}: add one, or give --m3-mode dense")
    if main_kind in RERANKER_KINDS:
        if reranker is not None:
            raise EvalkitError(f"--model {model.name} is a reranker: with --reranker, --model names the first-stage embedder")
        if fewshot and any(s.k > 0 for s in fewshot) and first_stage is None:
            raise EvalkitError("--fewshot / --fewshot-compare set the examples of an embedder's queries: add --first-stage EMBEDDER for a reranker")
        rr_kind = main_kind
        emb_kind = (known_kind(first_stage, None, "embed") or resolve_model(first_stage, None, "embed").kind) if first_stage is not None else None
        emb_name = first_stage.name if first_stage is not None else None
        rr_name = model.name
    else:
        if first_stage is not None:
            raise EvalkitError(f"--first-stage names the embedder of a reranker given as --model; {model.name} is an {main_kind}: use --reranker")
        emb_kind, emb_name = main_kind, model.name
        rr_kind = (known_kind(reranker, reranker_kind, "rerank") or resolve_model(reranker, reranker_kind, "rerank").kind) if reranker is not None else None
        rr_name = reranker.name if reranker is not None else None
    if emb_kind is not None and emb_kind not in EMBEDDER_KINDS:
        raise EvalkitError(f"{emb_name} is a {emb_kind}, not an embedder: the first stage must be an embedder (e.g. all-MiniLM-L6-v2)")
    if rr_kind is not None and rr_kind not in RERANKER_KINDS:
        raise EvalkitError(f"{rr_name} is an {rr_kind}, not a reranker: give a cross-encoder or LLM reranker (evalkit list models)")
    if rr_kind is not None:
        other = [f"{t.name} ({t.type})" for t in task_specs if t.type not in TWO_STAGE_TYPES + DIRECT_TYPES]
        if other and emb_kind is None:
            raise EvalkitError(f"rerankers are scored on Retrieval, Reranking, InstructionRetrieval and InstructionReranking tasks only, not on {', '.join(other)}: leave those out of --tasks")
        if other:
            notes.append(f"{rr_name} reranks retrieval and reranking tasks: {', '.join(other)} get{'s' if len(other) == 1 else ''} the embedder alone")
        if emb_kind is None:
            need = [t.name for t in task_specs if t.type in TWO_STAGE_TYPES]
            if need:
                raise EvalkitError(
                    f"{rr_name} is a reranker and retrieval task{'s' if len(need) > 1 else ''} {', '.join(need)} "
                    f"need{'' if len(need) > 1 else 's'} candidates from a first stage: add --first-stage EMBEDDER "
                    f"(e.g. --first-stage all-MiniLM-L6-v2), or run --model EMBEDDER --reranker {rr_name}"
                )

    # now every model is looked for (one line if one cannot be had) and its revision read
    main = resolve_model(model, kind)
    if main.kind in RERANKER_KINDS:
        rr, emb = main, (resolve_model(first_stage, None, "embed") if first_stage is not None else None)
    else:
        emb = main
        rr = resolve_model(reranker, reranker_kind, "rerank") if reranker is not None else None

    m3_extra = [m for m in modes if m.name != "dense"]  # the modes that are units of their own
    if modes:
        from evalkit.models.m3 import is_multi_function

        if not is_multi_function(emb.spec, emb.path):
            raise EvalkitError(
                f"--m3-mode needs a multi-function model (bge-m3, or a folder with colbert_linear.pt and sparse_linear.pt "
                f"beside its weights): {emb.name} has no M3 heads"
            )
        other = [t.name for t in task_specs if t.type not in M3_TYPES]
        if m3_extra and other:
            n = len(m3_extra)
            notes.append(f"M3's {', '.join(m.label for m in m3_extra)} mode{'s' if n > 1 else ''} score{'' if n > 1 else 's'} retrieval and reranking tasks: {', '.join(other)} get{'s' if len(other) == 1 else ''} the dense vectors alone")
        if m3_extra and rr is not None:
            notes.append(f"{rr.name} reranks the dense first stage: the M3 modes' results are not reranked again")

    settings_list = list(fewshot or [Setting(0, seed=settings.seed)])
    if any(s.k > 0 and s.selector != "authors" for s in settings_list):  # a recipe's own examples serve any task they exist for
        bad = [t.name for t in task_specs if t.type not in ("Retrieval", "Classification", "Clustering", "STS", "PairClassification")]
        if bad:
            raise EvalkitError(f"few-shot examples are defined for Retrieval, Classification, Clustering, STS and pair tasks, not {', '.join(bad)}")
    out = Path(settings.output)
    units: list[Unit] = []

    def unit(model: Model, ts, **kw) -> Unit:
        u = Unit(model, ts, **kw)
        return replace(u, folder=result_dir(out, model.spec.result_name, model.revision, u.variant))

    for st in settings_list if emb is not None else []:
        for ts in task_specs:
            if rr is not None and emb is not main and ts.type not in TWO_STAGE_TYPES:
                continue  # --model RERANKER --first-stage E: E runs only where it feeds the reranker
            extra = m3_extra if ts.type in M3_TYPES else []
            two_stage = ts.type in TWO_STAGE_TYPES
            # the dense unit: asked for, the first stage of a rescoring mode or of a reranker, or all this task gets
            dense = None
            if not extra or any(m.name == "dense" for m in modes) or (two_stage and (rr is not None or any(m.rescores for m in extra))):
                dense = unit(emb, ts, fewshot=st)
                units.append(dense)
            for m in extra:
                if m.rescores and two_stage:
                    units.append(unit(emb, ts, fewshot=st, m3=m, first_stage=dense, top_k=top_k))
                else:
                    units.append(unit(emb, ts, fewshot=st, m3=m))
    if rr is not None:
        for ts in task_specs:
            if ts.type in DIRECT_TYPES:
                units.append(unit(rr, ts))
        for fs in [u for u in units if u.role == "embed" and u.task.type in TWO_STAGE_TYPES]:
            units.append(unit(rr, fs.task, first_stage=fs, top_k=top_k))

    plan = Plan(units, settings, notes)
    if check_data:
        check_tasks(plan, collect=check_data == "collect")
    return plan


def check_tasks(plan: Plan, collect: bool = False) -> None:
    """Read and validate every task's data (and its few-shot pool where a setting needs one), and
    resolve every selector model: what can be wrong with the input fails here, before a model loads.
    `collect` (a dry run): a task whose data cannot be had is noted in plan.unreadable, one line each,
    and the others are still checked."""
    from evalkit.fewshot import authors_examples, build_pools
    from evalkit.models.catalog import get_spec
    from evalkit.tasks import build_task

    tasks: dict[str, object] = {}
    pooled: set[str] = set()
    for u in plan.units:
        ts = u.task
        if ts.name in plan.unreadable:
            continue
        if ts.name not in tasks:
            try:
                tasks[ts.name] = build_task(ts)  # reads and checks local data; a hub task checks that the hub is usable
            except EvalkitError as e:
                if not collect:
                    raise
                plan.unreadable[ts.name] = str(e)
                continue
        st = u.fewshot
        if st is not None and st.k > 0 and (ts.name, st.selector == "authors") not in pooled:
            pooled.add((ts.name, st.selector == "authors"))
            build_pools(ts, tasks[ts.name], authors_examples(u.model.spec, ts) if st.selector == "authors" else None)
        if st is not None and st.k > 0 and st.selector == "similar":
            sel = resolve_model(get_spec(st.model))
            if sel.kind != "embedder":
                raise EvalkitError(f"--selector-model {st.model} is a {sel.kind}: the selector must be an ordinary embedder")
    if collect:  # a dry run: its estimate reads the same data; they are read once
        plan.read = tasks
