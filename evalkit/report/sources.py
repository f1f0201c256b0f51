"""Where table rows come from: evalkit's own result folders and published reference scores.

Every row is an Entry: one model (at one revision, in one variant) with, per task, the scores of
each split/subset as {metric: value in 0..1}. Three sources:

- a results folder (`results/<model>/<revision>/<Task>.json`, variants under `experiments/<variant>/`),
- a published-scores JSON in the format of ../shared/data/published_scores.json:
  `{task: {model: {"split/subset": {"main_score": x100, ...}}}}`; a key "split/subset(metric)" says
  that its main_score is that metric (old mteb results); other numeric fields are further metrics (x100),
- a clone of the public MTEB results repository, or a copy of some of its model folders (its
  `results/` subfolder is used when present): files of every mteb version, one row per model folder,
  each task from the first source folder in the precedence order (evalkit/report/published.py).
Published rows are marked published and labelled "(published)"; rows from a results repository say
which source folders they use: "BAAI/bge-base-en-v1.5 (published: external)".
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from evalkit.errors import EvalkitError
from evalkit.results import ResultRecord, scan

FEWSHOT = re.compile(r"(?:^|-)fewshot-(\d+)(?:-|$)")  # also under another recipe: recipe-<name>-fewshot-3-...
_NON_METRIC = {"hf_subset", "languages", "mteb_version", "model_revision", "evaluation_time"}


@dataclass
class Entry:
    label: str
    model: str  # the result folder name: org__name
    revision: str | None = None
    variant: str | None = None
    published: bool = False
    source: str = ""
    # task -> "split/subset" -> {metric: value in 0..1}; metric "main_score" is the task's main score
    scores: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    # task -> "split/subset" -> the metric named in a published key "split/subset(metric)"
    qualified: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    paths: dict[str, Path] = field(default_factory=dict)  # task -> the file the scores come from
    meta: dict = field(default_factory=dict)  # max_length, evalkit model name, ...
    # rows from a results repository: task -> its candidates (published.Candidate), in precedence
    # order, and the source folders (published.SourceFolder) in that order
    candidates: dict[str, list] = field(default_factory=dict)
    sources: list = field(default_factory=list)

    @property
    def display_model(self) -> str:
        return self.meta.get("hub_name") or self.model.replace("__", "/")

    @property
    def fewshot_k(self) -> int | None:
        m = FEWSHOT.search(self.variant or "")
        return int(m.group(1)) if m else None


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def doc_scores(doc: dict) -> dict[str, dict[str, float]]:
    """{"split/subset": {metric: value}} of an mteb result document (values as stored, 0..1)."""
    out: dict[str, dict[str, float]] = {}
    for split, entries in (doc.get("scores") or {}).items():
        for s in entries:
            key = f"{split}/{s.get('hf_subset', 'default')}"
            out[key] = {k: float(v) for k, v in s.items() if k not in _NON_METRIC and _finite(v)}
    return out


def _label(model: str, revision: str | None, variant: str | None, published: bool, ambiguous_rev: bool) -> str:
    name = model.replace("__", "/")
    if ambiguous_rev and revision:
        name += f"@{revision[:7]}"
    if variant:
        name += f" [{variant}]"
    if published:
        name += " (published)"
    return name


def entries_from_records(records: list[ResultRecord], published: bool, source: str) -> list[Entry]:
    groups: dict[tuple, Entry] = {}
    revs: dict[tuple, set] = {}
    for r in records:
        revs.setdefault((r.model, r.variant), set()).add(r.revision)
    for r in records:
        key = (r.model, r.revision, r.variant)
        e = groups.get(key)
        if e is None:
            e = groups[key] = Entry(
                label=_label(r.model, r.revision, r.variant, published, len(revs[(r.model, r.variant)]) > 1),
                model=r.model, revision=r.revision, variant=r.variant, published=published, source=source,
            )
        e.scores[r.task] = doc_scores(r.doc)
        e.paths[r.task] = r.path
        ek = r.doc.get("evalkit") or {}
        for k in ("max_length", "model", "hub_id", "dtype", "pooling"):
            if ek.get(k) is not None:
                e.meta.setdefault(k, ek[k])
    return list(groups.values())


def load_runs(results: Path) -> list[Entry]:
    """One entry per model/revision/variant folder under `results` (evalkit's own runs)."""
    return entries_from_records(scan(Path(results)), published=False, source=str(results))


_QUAL = re.compile(r"^(?P<key>[^()]+)\((?P<metric>[^()]+)\)$")


def normalize_metric(name: str) -> str:
    """Old mteb metric names ("cos_sim.spearman") in mteb 2's spelling ("cosine_spearman")."""
    name = name.strip()
    for old, new in (("cos_sim.", "cosine_"), ("euclidean.", "euclidean_"), ("manhattan.", "manhattan_"), ("dot.", "dot_")):
        if name.startswith(old):
            return new + name[len(old):]
    return name


def load_published_json(path: Path) -> list[Entry]:
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as e:
        raise EvalkitError(f"cannot read published scores {path} ({e.strerror})") from e
    except ValueError as e:
        raise EvalkitError(f"{path} is not valid JSON ({e}): expected {{task: {{model: {{'split/subset': {{main_score}}}}}}}}") from e
    if not isinstance(doc, dict):
        raise EvalkitError(f"{path}: expected {{task: {{model: {{'split/subset': {{main_score}}}}}}}}")
    entries: dict[str, Entry] = {}
    for task, models in doc.items():
        if not isinstance(models, dict):
            raise EvalkitError(f"{path}: task {task!r} must map model names to scores")
        for model, keys in models.items():
            if not isinstance(keys, dict):
                raise EvalkitError(f"{path}: {task} / {model} must map 'split/subset' to {{main_score: ...}}")
            e = entries.get(model)
            if e is None:
                e = entries[model] = Entry(
                    label=_label(model, None, None, True, False), model=model, published=True, source=str(path)
                )
            for key, rec in keys.items():
                if not isinstance(rec, dict):
                    continue
                vals = {k: float(v) / 100 for k, v in rec.items() if k not in _NON_METRIC and _finite(v)}
                if not vals:
                    continue
                m = _QUAL.match(key)
                if m:
                    metric = normalize_metric(m.group("metric"))
                    if "main_score" in vals:
                        e.qualified.setdefault(task, {}).setdefault(m.group("key"), {})[metric] = vals["main_score"]
                    continue
                e.scores.setdefault(task, {})[key] = vals
                e.paths[task] = Path(path)
                if rec.get("model_revision"):
                    e.meta.setdefault("revisions", {})[task] = rec["model_revision"]
            if task in e.qualified:
                e.paths.setdefault(task, Path(path))
    return list(entries.values())


def load_published_repository(path: Path, spec: str = "authors") -> list[Entry]:
    """One published row per model folder of a results repository (any mteb version's files); each
    task's candidates in the precedence order `spec` (see evalkit/report/published.py)."""
    import evalkit.report.published as pub

    pub.check_spec(spec)
    root = pub.repository_root(Path(path))
    entries = []
    seen: set[str] = set()
    for mf in pub.model_folders(root):
        folders = [pub.read_source_folder(s) for s in sorted(mf.iterdir()) if s.is_dir() and not s.name.startswith(".")]
        folders = [f for f in folders if f.tasks]
        seen.update(f.name for f in folders)
        ordered = pub.order_sources(folders, spec)
        if not ordered:
            continue
        e = Entry(label="", model=mf.name, published=True, source=str(path), sources=ordered)
        # the model's facts (hub name, dimension, length) from the authors' model_meta.json first
        meta = next((f.meta for f in pub.order_sources(folders, "authors") if f.meta.get("name")), {})
        if meta.get("name"):
            e.meta["hub_name"] = str(meta["name"])
        for f in ordered:
            tasks = {**f.tasks, **f.as_files} if spec == "mteb" else f.tasks
            if spec == "mteb" and pub.CQADUPSTACK not in f.as_files:
                tasks.pop(pub.CQADUPSTACK, None)  # mteb reads the aggregate file, never a mean of the sub-forums
            for task, c in tasks.items():
                e.candidates.setdefault(task, []).append(c)
        if spec == "mteb":  # per task, mteb's choice first, and only it counts (tables.task_score)
            main = pub.mteb_main_revision(e.display_model)
            e.candidates = {t: pub.mteb_order(cs, main) for t, cs in e.candidates.items()}
            e.meta["first_only"] = True
        for task, cs in e.candidates.items():
            e.scores[task], e.paths[task] = cs[0].scores, cs[0].path
        for k in ("embed_dim", "max_tokens"):
            if _finite(meta.get(k)):
                e.meta[k] = int(meta[k])
        e.meta["folder"] = str(mf)
        e.label = f"{e.display_model} (published: {' + '.join(pub.source_label(f.name) for f in ordered)})"
        entries.append(e)
    if not entries:
        if not seen:
            raise EvalkitError(f"{path} holds no result files in the layout <model>/<source folder>/<Task>.json")
        raise EvalkitError(
            f"--published-source {spec}: no such source folder in {path} (its folders: {', '.join(sorted(seen)[:8])}"
            f"{', ...' if len(seen) > 8 else ''})"
        )
    return entries


def _air_bench_entry(row: dict, path: Path) -> Entry:
    e = Entry(label=row["label"], model=row["model"], published=True, source=str(path), scores=row["scores"], paths=row["paths"])
    e.meta["hub_name"] = row["hub_name"]
    if row.get("revision"):
        e.meta["revision"] = row["revision"]
    return e


def load_published(path: Path, spec: str = "authors") -> list[Entry]:
    """Published rows from a published-scores JSON, a results-layout folder (an MTEB results
    repository clone, or some of its model folders), `spec` choosing the source folders' precedence,
    or AIR-Bench's leaderboard result files (evalkit/report/air_bench_published.py)."""
    from evalkit.report.air_bench_published import load as load_air_bench, result_files

    path = Path(path)
    if result_files(path):  # AIR-Bench's leaderboard files
        return [_air_bench_entry(row, path) for row in load_air_bench(path)]
    if path.is_file():
        return load_published_json(path)
    if path.is_dir():
        return load_published_repository(path, spec)
    raise EvalkitError(f"published scores {path} not found: give a published_scores.json or a results folder")
