"""The task registry: task specs from the YAML files in tasks/, suites, and task folders."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from evalkit.errors import EvalkitError

PROJECT_ROOT = Path(__file__).resolve().parent.parent.parent
TYPES = ("STS", "Retrieval", "Classification", "Clustering", "PairClassification", "Reranking", "Summarization")


def tasks_dir() -> Path:
    return Path(os.environ.get("EVALKIT_TASKS") or PROJECT_ROOT / "tasks")


def data_root() -> Path | None:
    """$EVALKIT_DATA when set, else ../shared/data beside the project (or the working folder)."""
    if os.environ.get("EVALKIT_DATA"):
        return Path(os.environ["EVALKIT_DATA"]).expanduser()
    for base in (PROJECT_ROOT, Path.cwd()):
        cand = base.parent / "shared" / "data"
        if cand.is_dir():
            return cand
    return None


@dataclass
class TaskSpec:
    name: str
    type: str
    source: str = "local"  # local | hub
    mteb_task: str | None = None
    data_dir: Path | None = None
    subsets: list[str] | None = None
    eval_splits: list[str] | None = None
    instruction: str | None = None
    fewshot: dict = field(default_factory=dict)
    air_bench: dict | None = None  # source: air-bench (evalkit/air_bench.py)
    origin: str = ""

    @property
    def mteb_name(self) -> str:
        return self.mteb_task or self.name


def _spec(name: str, entry: dict, defaults: dict, origin: str) -> TaskSpec:
    entry = {**defaults, **(entry or {})}
    typ = entry.get("type")
    if typ not in TYPES:
        raise EvalkitError(f"task {name} in {origin} has type {typ!r}: use one of {', '.join(TYPES)}")
    data = entry.get("data")
    return TaskSpec(
        name=name,
        type=typ,
        source=entry.get("source", "local"),
        mteb_task=entry.get("mteb_task"),
        data_dir=Path(data) if data else None,
        subsets=entry.get("subsets"),
        eval_splits=entry.get("eval_splits"),
        instruction=entry.get("instruction"),
        fewshot=dict(entry.get("fewshot") or {}),
        air_bench=dict(entry["air_bench"]) if entry.get("air_bench") else None,
        origin=origin,
    )


class Registry:
    """All task specs and suites in the YAML files of tasks_dir()."""

    def __init__(self, folder: Path | None = None):
        self.folder = folder or tasks_dir()
        self.by_file: dict[str, dict[str, TaskSpec]] = {}
        self.suites: dict[str, dict] = {}
        for f in sorted(self.folder.glob("*.yaml")):
            try:
                doc = yaml.safe_load(f.read_text()) or {}
            except yaml.YAMLError as e:
                raise EvalkitError(f"{f} is not valid YAML: {str(e).splitlines()[0]}") from e
            defaults = doc.get("defaults") or {}
            specs = {n: _spec(n, e, defaults, str(f)) for n, e in (doc.get("tasks") or {}).items()}
            self.by_file[f.name] = specs
            for sname, s in (doc.get("suites") or {}).items():
                s = {"tasks": s} if isinstance(s, list) else dict(s)
                s["file"] = f.name
                self.suites[sname] = s

    def all_specs(self) -> list[TaskSpec]:
        return [s for specs in self.by_file.values() for s in specs.values()]

    def suite(self, name: str) -> list[TaskSpec]:
        if name not in self.suites:
            raise EvalkitError(f"unknown suite {name!r}: known suites are {', '.join(sorted(self.suites))}")
        s = self.suites[name]
        specs = self.by_file[s["file"]]
        return [specs[t] if t in specs else self.task(t) for t in s["tasks"]]

    def task(self, name_or_dir: str) -> TaskSpec:
        """A registered task name (local mirror preferred when present), an mteb task name, or a task folder."""
        p = Path(name_or_dir).expanduser()
        if p.is_dir() or "/" in name_or_dir or name_or_dir.startswith("."):
            return task_from_folder(p)
        candidates = [specs[name_or_dir] for specs in self.by_file.values() if name_or_dir in specs]
        local = [c for c in candidates if c.source == "local"]
        for c in local:
            if data_dir_of(c, must_exist=False) is not None:
                return c
        if candidates:
            return ([c for c in candidates if c.source == "hub"] or candidates)[0]
        try:
            import mteb

            t = mteb.get_task(name_or_dir)
        except Exception:
            raise EvalkitError(
                f"unknown task {name_or_dir!r}: not in tasks/*.yaml, not an mteb task and not a folder with task.yaml (evalkit list tasks)"
            ) from None
        return TaskSpec(name=name_or_dir, type=t.metadata.type, source="hub", origin="mteb")


def task_from_folder(folder: Path) -> TaskSpec:
    if not folder.is_dir():
        raise EvalkitError(f"task folder {folder} does not exist")
    y = folder / "task.yaml"
    if not y.is_file():
        raise EvalkitError(f"task folder {folder} has no task.yaml: add one with at least `name:` and `type:`")
    try:
        doc = yaml.safe_load(y.read_text()) or {}
    except yaml.YAMLError as e:
        raise EvalkitError(f"{y} is not valid YAML: {str(e).splitlines()[0]}") from e
    if not isinstance(doc, dict) or "type" not in doc:
        raise EvalkitError(f"{y} must give `type:` ({' | '.join(TYPES)})")
    spec = _spec(str(doc.get("name") or folder.name), doc, {"source": "local"}, str(y))
    spec.data_dir = folder.resolve()  # a folder named on the command line is relative to the working folder
    return spec


def data_dir_of(spec: TaskSpec, must_exist: bool = True) -> Path | None:
    if spec.data_dir is not None:
        d = spec.data_dir if spec.data_dir.is_absolute() else (data_root() or Path.cwd()) / spec.data_dir
    else:
        root = data_root()
        d = root / spec.name if root is not None else None
    if d is None or not d.is_dir():
        if not must_exist:
            return None
        where = d if d is not None else "(no data folder: ../shared/data is absent and EVALKIT_DATA is unset)"
        raise EvalkitError(f"data of task {spec.name} not found at {where}: set EVALKIT_DATA to the folder holding {spec.name}/")
    return d
