"""Published rows from the public MTEB results repository (`embeddings-benchmark/results`), whatever
mteb version wrote its files.

Layout: `<root>/[results/]<model folder>/<source folder>/<Task>.json` (+ `model_meta.json`). A source
folder is one of
- `external`: the model authors' own scores (what model cards print), no mteb version;
- `no_revision_available`: early results without a model revision (for the C-MTEB models: the C-MTEB
  authors' own files, mteb 1.1);
- a model revision (40 hex digits): a later run, usually a re-run by the repository's maintainers with
  a newer mteb; its scores can differ from the authors' and cover other tasks or subsets.

Every file is read into one shape, {"split/subset": {metric: value in 0..1}}:
- mteb >= 1.11 files: `scores: {split: [{hf_subset, metric: value, ...}]}`; metric groups nested as
  `{"cos_sim": {"ap": ...}}` (mteb < 1.12.48) are flattened to `cosine_ap`;
- mteb 1.0-1.10 files: metrics keyed by split (`{"dev": {"ndcg_at_10": ...}}`), per subset where the
  task has subsets (`{"test": {"zh": {"cos_sim": {"spearman": ...}}}}`), no main score;
- metric names in mteb 2's spelling (`cos_sim_spearman` -> `cosine_spearman`);
- a file on the 0-100 scale (some converted `external` files) is divided by 100: it is recognised by
  a score that cannot exceed 1 on the 0-1 scale (accuracy, AP, nDCG@k, V-measure, ...) being above 1;
- old task names in mteb 2's (`CMedQAv1` -> `CMedQAv1-reranking`: mteb's own renaming table, then a
  case-insensitive match against mteb's task registry);
- CQADupstack is one task, `CQADupstackRetrieval`: the mean of its twelve sub-forum files where a
  source folder has all twelve, else the folder's aggregate file (never an aggregate that is only the
  mean of the sub-forums the folder has, when that is fewer than twelve).

Which metric is a file's main score depends on when it was written: a file without an mteb version or
from mteb < 1.11 (mteb's own cut-off for "historic" results) carries no main score, or one that a later
conversion filled in with that day's definition; its main score is the metric that was the task type's
main score then (LEGACY_MAIN: cosine AP for pair classification, MAP for reranking, cosine Spearman
for STS and summarization, ...). That is how the MTEB leaderboard and the C-MTEB tables of the time
computed them (`evalkit/report/tables.py` applies it, knowing each task's type from the benchmark).

Precedence (`--published-source`): one row per model folder; each task comes from the first source
folder, in the order given, that has a score for it as the benchmark selects it.
- `authors` (default): `external`, `no_revision_available`, any other named folder, then the revision
  folders (the newest mteb version first);
- `reruns`: the other way round: the revision folders (the newest mteb version first), any other
  folder, `no_revision_available`, then `external`;
- `mteb` (the default for mteb's benchmarks): per task, the file mteb's leaderboard takes
  (`BenchmarkResults.join_revisions`: the model's main revision in mteb's registry, then files with an
  mteb version, the newest first, then a real revision), whether or not it has the benchmark's selection;
- a comma-separated list of folder names (a revision may be abbreviated to 7+ characters): only those,
  in that order.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from evalkit.errors import EvalkitError

AUTHORS = "external"
EARLY = "no_revision_available"
SOURCE_SPECS = ("authors", "reruns", "mteb")

# The main metric of each task type in mteb < 1.11, in mteb 2's metric spelling (the old files say
# cos_sim.ap, cos_sim.spearman, map: mteb 1.x's PairClassification main_score "ap" meant the cosine AP;
# its Reranking "map" is mteb 2's map_at_1000).
LEGACY_MAIN = {
    "Retrieval": "ndcg_at_10",
    "Reranking": "map",
    "STS": "cosine_spearman",
    "Summarization": "cosine_spearman",
    "PairClassification": "cosine_ap",
    "Classification": "accuracy",
    "MultilabelClassification": "accuracy",
    "Clustering": "v_measure",
    "BitextMining": "f1",
}
LEGACY_BEFORE = (1, 11)

CQADUPSTACK = "CQADupstackRetrieval"
CQADUPSTACK_FORUMS = tuple(
    f"CQADupstack{f}Retrieval" for f in
    ("Android", "English", "Gaming", "Gis", "Mathematica", "Physics", "Programmers", "Stats", "Tex", "Unix", "Webmasters", "Wordpress")
)

# mteb's own table (mteb.results.task_result.renamed_tasks) is used when importable; these are the
# renamings the C-MTEB files need if it is not.
_RENAMED = {"CMedQAv1": "CMedQAv1-reranking", "CMedQAv2": "CMedQAv2-reranking"}
_META_KEYS = {"dataset_revision", "mteb_dataset_name", "mteb_version", "task_name", "evaluation_time",
              "kg_co2_emissions", "evaluation_phases", "scores"}
_GROUPS = {"cos_sim": "cosine", "cosine": "cosine", "euclidean": "euclidean", "manhattan": "manhattan", "dot": "dot",
           "max": "max", "similarity": "similarity"}
_NOT_SUBSETS = set(_GROUPS) | {"v_measures", "evaluation_time"}
_NON_METRIC = {"hf_subset", "languages", "evaluation_time", "mteb_version", "kg_co2_emissions"}
_BOUNDED = re.compile(
    r"^(main_score|accuracy|f1|ap|v_measure|map|mrr"
    r"|(cosine|euclidean|manhattan|dot|max|similarity)_(accuracy|f1|ap|precision|recall|spearman|pearson)"
    r"|(ndcg|map|mrr|recall|precision)_at_\d+)$"
)
_HEX = re.compile(r"^[0-9a-f]{7,40}$")


@dataclass
class Candidate:
    """One task's scores in one source folder."""
    task: str  # mteb 2's name
    source: str  # the source folder's name
    scores: dict[str, dict[str, float]]  # "split/subset" -> {metric: value in 0..1}
    path: Path
    legacy: bool  # no mteb version or mteb < 1.11: main score = LEGACY_MAIN[type]
    mteb_version: str | None = None
    notes: list[str] = field(default_factory=list)  # how the file was read, when not plainly


@dataclass
class SourceFolder:
    name: str
    path: Path
    tasks: dict[str, Candidate] = field(default_factory=dict)
    versions: set[str] = field(default_factory=set)  # the mteb versions of its files
    unversioned: int = 0  # files without an mteb version
    skipped: list[str] = field(default_factory=list)  # "file: why"
    meta: dict = field(default_factory=dict)  # model_meta.json
    # the folder's files as they are, where evalkit reads a task otherwise (the CQADupstack aggregate
    # file); mteb's leaderboard reads these (the `mteb` precedence)
    as_files: dict[str, Candidate] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        if self.name == AUTHORS:
            return "authors"
        if self.name == EARLY:
            return "early"
        return "revision" if _HEX.match(self.name) else "other"

    def describe(self) -> str:
        vers = ", ".join(f"mteb {v}" for v in sorted(self.versions, key=_version_key))
        if self.unversioned:
            n = self.unversioned
            vers += (", " if vers else "") + ("no mteb version" if not self.versions else f"{n} file{'s' if n > 1 else ''} without an mteb version")
        what = {
            "authors": "the model authors' own scores",
            "early": "early results without a model revision",
            "revision": f"results for model revision {self.name}",
            "other": "results",
        }[self.kind]
        return f"{source_label(self.name)}: {what} ({vers})"


def source_label(name: str) -> str:
    return name[:7] if _HEX.match(name) else name


def _version_key(v: str | None) -> tuple:
    m = re.match(r"^\s*v?(\d+(?:\.\d+)*)", v or "")
    return tuple(int(x) for x in m.group(1).split(".")) if m else ()


def is_legacy(version) -> bool:
    """mteb's own rule for historic results: no version, or a version before 1.11."""
    key = _version_key(version if isinstance(version, str) else None)
    return not key or key < LEGACY_BEFORE


@lru_cache(maxsize=None)
def _registry() -> tuple[dict[str, str], dict[str, str]]:
    """(mteb's renamed tasks, lower-case name -> mteb name); empty where mteb is not importable."""
    renamed = dict(_RENAMED)
    names: dict[str, str] = {}
    try:
        from mteb.results.task_result import renamed_tasks

        renamed.update(renamed_tasks)
    except Exception:
        pass
    try:
        from mteb.get_tasks import _TASKS_REGISTRY

        names = {k.lower(): k for k in _TASKS_REGISTRY}
    except Exception:
        pass
    return renamed, names


def canonical_task(name: str) -> str:
    """A task name as mteb 2 spells it (old names renamed, case fixed); unknown names unchanged."""
    renamed, names = _registry()
    if name in renamed:
        return renamed[name]
    if not names or name in names.values():
        return name
    return names.get(name.lower(), name)


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _metric_name(name: str) -> str:
    return "cosine_" + name[len("cos_sim_"):] if name.startswith("cos_sim_") else name


def _flatten(d: dict, prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            if k in _GROUPS and not prefix:
                out.update(_flatten(v, _GROUPS[k] + "_"))
        elif _finite(v) and k not in _NON_METRIC:
            out.setdefault(_metric_name(prefix + k), float(v))
    return out


def _split_scores(split: dict) -> dict[str, dict[str, float]]:
    """An old-layout split: {metric...} (one subset) or {subset: {metric...}}."""
    subsets = {k: v for k, v in split.items() if isinstance(v, dict) and k not in _NOT_SUBSETS}
    if subsets:
        return {k: _flatten(v) for k, v in subsets.items()}
    return {"default": _flatten(split)}


def doc_to_scores(doc: dict) -> dict[str, dict[str, float]]:
    """{"split/subset": {metric: value}} of a result document of any mteb version (as stored)."""
    out: dict[str, dict[str, float]] = {}
    if isinstance(doc.get("scores"), dict):
        for split, entries in doc["scores"].items():
            if isinstance(entries, dict):  # a split written as {subset: {...}}
                entries = [{**v, "hf_subset": k} for k, v in entries.items() if isinstance(v, dict)]
            for s in entries if isinstance(entries, list) else []:
                if isinstance(s, dict):
                    vals = _flatten(s)
                    if vals:
                        out[f"{split}/{s.get('hf_subset', 'default')}"] = vals
        return out
    for split, v in doc.items():
        if split in _META_KEYS or not isinstance(v, dict):
            continue
        for sub, vals in _split_scores(v).items():
            if vals:
                out[f"{split}/{sub}"] = vals
    return out


def on_100_scale(scores: dict[str, dict[str, float]]) -> bool:
    """True when a score that cannot exceed 1 on the 0-1 scale is above 1."""
    return any(abs(v) > 1.0 + 1e-9 for vals in scores.values() for k, v in vals.items() if _BOUNDED.match(k))


def read_file(path: Path, source: str) -> Candidate | str:
    """One result file as a Candidate, or the reason it is not one."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as e:
        return f"unreadable ({e.strerror})"
    except ValueError:
        return "not valid JSON"
    if not isinstance(doc, dict):
        return "not a result document"
    name = str(doc.get("task_name") or doc.get("mteb_dataset_name") or Path(path).stem)
    task = canonical_task(name)
    scores = doc_to_scores(doc)
    if not scores:
        return "no scores"
    version = doc.get("mteb_version") if isinstance(doc.get("mteb_version"), str) else None
    c = Candidate(task, source, scores, Path(path), is_legacy(version), version)
    if task != name:
        c.notes.append(f"{Path(path).name} is the old name of {task}")
    if on_100_scale(scores):
        c.scores = {k: {m: v / 100.0 for m, v in vals.items()} for k, vals in scores.items()}
        c.notes.append("scores on the 0-100 scale, divided by 100")
    return c


def _mean_of(cands: list[Candidate]) -> dict[str, dict[str, float]]:
    """Per split/subset, the mean of each metric that every candidate has."""
    keys = set.intersection(*(set(c.scores) for c in cands))
    out = {}
    for k in sorted(keys):
        metrics = set.intersection(*(set(c.scores[k]) for c in cands))
        out[k] = {m: sum(c.scores[k][m] for c in cands) / len(cands) for m in sorted(metrics)}
    return out


def _cqadupstack(folder: SourceFolder) -> None:
    forums = [folder.tasks[t] for t in CQADUPSTACK_FORUMS if t in folder.tasks]
    agg = folder.tasks.get(CQADUPSTACK)
    if len(forums) == len(CQADUPSTACK_FORUMS):
        mean = _mean_of(forums)
        if mean:
            c = Candidate(CQADUPSTACK, folder.name, mean, folder.path, any(f.legacy for f in forums),
                          forums[0].mteb_version, [f"mean of the {len(forums)} CQADupstack sub-forum files"])
            folder.tasks[CQADUPSTACK] = c
            return
    if agg is not None and forums:
        mean = _mean_of(forums)
        same = all(
            k in mean and all(abs(mean[k][m] - v) < 1e-6 for m, v in vals.items() if m in mean[k])
            for k, vals in agg.scores.items()
        )
        if same:
            del folder.tasks[CQADUPSTACK]
            folder.skipped.append(f"{agg.path.name}: the mean of only {len(forums)} of the {len(CQADUPSTACK_FORUMS)} sub-forums")
        else:
            agg.notes.append(f"the folder's aggregate file; its {len(forums)} sub-forum files (of {len(CQADUPSTACK_FORUMS)}) average otherwise")


def read_source_folder(path: Path) -> SourceFolder:
    folder = SourceFolder(path.name, path)
    for p in sorted(path.glob("*.json")):
        if p.name.startswith("."):
            continue
        if p.name == "model_meta.json":
            try:
                meta = json.loads(p.read_text(encoding="utf-8"))
                folder.meta = meta if isinstance(meta, dict) else {}
            except (OSError, ValueError):
                pass
            continue
        c = read_file(p, path.name)
        if isinstance(c, str):
            folder.skipped.append(f"{p.name}: {c}")
            continue
        task = c.task
        if task in folder.tasks:  # two files for one task (old and new name): keep the newer format
            old = folder.tasks[task]
            if not (old.legacy and not c.legacy):
                folder.skipped.append(f"{p.name}: a second file for {task}")
                continue
            folder.skipped.append(f"{old.path.name}: a second file for {task}")
        folder.tasks[task] = c
        if c.mteb_version:
            folder.versions.add(c.mteb_version)
        else:
            folder.unversioned += 1
    if CQADUPSTACK in folder.tasks:
        folder.as_files[CQADUPSTACK] = folder.tasks[CQADUPSTACK]
    _cqadupstack(folder)
    return folder


def mteb_order(cands: list[Candidate], main_revision: str | None) -> list[Candidate]:
    """One task's files in the order mteb's `BenchmarkResults.join_revisions` prefers them (it keeps
    the first): priority 1000 for the model's main revision, 100 for a file with an mteb version, 10
    for a real revision (not external or no_revision_available), then the newest mteb version."""
    def key(c: Candidate):
        prio = (1000 * (bool(main_revision) and c.source == main_revision) + 100 * bool(_version_key(c.mteb_version))
                + 10 * (c.source not in (AUTHORS, EARLY)))
        v = _version_key(c.mteb_version)
        return (-prio, not v, tuple(-x for x in v))
    return sorted(cands, key=key)


@lru_cache(maxsize=None)
def mteb_main_revision(model: str) -> str | None:
    """The model's main revision in mteb's model registry (None where mteb does not know it)."""
    try:
        import mteb

        return mteb.get_model_meta(model).revision
    except Exception:
        return None


@lru_cache(maxsize=None)
def mteb_main_scores(path: Path) -> dict[str, dict[str, float]]:
    """A file's main scores as mteb's own loader reads them (`TaskResult.from_disk`, which converts
    the files of mteb < 1.11): {"split/subset": {"main_score": value}}; a split/subset whose main
    score mteb does not find is left out."""
    from mteb import TaskResult

    out = {}
    for split, items in TaskResult.from_disk(Path(path)).scores.items():
        for it in items:
            if _finite(it.get("main_score")):
                out[f"{split}/{it.get('hf_subset', 'default')}"] = {"main_score": float(it["main_score"])}
    return out


def order_sources(folders: list[SourceFolder], spec: str = "authors") -> list[SourceFolder]:
    """The source folders of one model in precedence order (see the module's docstring; `mteb`
    orders by folder here, each task's files then by `mteb_order`)."""
    spec = (spec or "authors").strip()
    if spec in SOURCE_SPECS:
        rank = {"authors": 0, "early": 1, "other": 2, "revision": 3}
        if spec in ("reruns", "mteb"):
            rank = {"revision": 0, "other": 1, "early": 2, "authors": 3}
        newest = {f.name: max((_version_key(v) for v in f.versions), default=()) for f in folders}
        # among revision folders the newest mteb version first (a folder without any version last)
        return sorted(folders, key=lambda f: (rank[f.kind], not newest[f.name], tuple(-x for x in newest[f.name]), f.name))
    out = []
    for want in (s.strip() for s in spec.split(",")):
        if not want:
            continue
        match = [f for f in folders if f.name == want or (len(want) >= 7 and _HEX.match(f.name) and f.name.startswith(want))]
        out += [f for f in match if f not in out]
    return out


def check_spec(spec: str) -> None:
    wants = [w.strip() for w in (spec or "authors").split(",")]
    for want in wants:
        if want in SOURCE_SPECS and len(wants) > 1:
            raise EvalkitError(f"--published-source {spec}: '{want}' cannot be combined with folder names")
        if not re.fullmatch(r"[\w.-]+", want):
            raise EvalkitError(
                f"--published-source {spec}: '{want}' is neither authors, reruns, mteb nor a source folder's name "
                "(external, no_revision_available, a model revision of 7 to 40 hex digits)"
            )


def repository_root(path: Path) -> Path:
    """The folder of model folders: the clone's `results/` when present."""
    return path / "results" if (path / "results").is_dir() else path


def model_folders(root: Path) -> list[Path]:
    """Model folders under `root`: folders with source folders holding .json files; `root` itself when
    it is one model's folder."""
    def is_model(p: Path) -> bool:
        return any(s.is_dir() and any(s.glob("*.json")) for s in p.iterdir())

    subs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    models = [p for p in subs if is_model(p)]
    if not models and subs and any(root.glob("*/*.json")):
        return [root]
    return models
