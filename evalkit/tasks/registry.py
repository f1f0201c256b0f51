"""The task registry: task specs from the YAML files in tasks/, suites, and task folders."""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import yaml

from evalkit.errors import EvalkitError

log = logging.getLogger("evalkit")
PROJECT_ROOT = Path(__file__).resolve().parent.parent.parent
TYPES = (
    "STS", "Retrieval", "Classification", "Clustering", "PairClassification", "Reranking", "Summarization", "BitextMining",
    "MultilabelClassification", "Regression", "ZeroShotClassification", "InstructionRetrieval", "InstructionReranking",
)  # what a folder or task YAML can declare (evalkit/tasks/build.py reads each)
# a query side and a document side: mteb's dataset {subset: {split: RetrievalSplitData}}, queries instructed
RETRIEVAL_TYPES = ("Retrieval", "Reranking", "InstructionRetrieval", "InstructionReranking")
SEARCH_TYPES = ("Retrieval", "InstructionRetrieval")  # of those, the ones whose corpus is searched (no candidates given)


_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's, where PyYAML has it: the task table is ~100 tasks
_YAML: dict[str, tuple[tuple, object]] = {}


def read_yaml(path: Path):
    """A YAML file's content, parsed once per version of the file (callers must not change it).
    yaml.YAMLError where it is not valid YAML."""
    path = Path(path)
    st = path.stat()
    key, stamp = str(path.resolve()), (st.st_mtime_ns, st.st_size)
    hit = _YAML.get(key)
    if hit is None or hit[0] != stamp:
        hit = _YAML[key] = (stamp, yaml.load(path.read_text(encoding="utf-8"), Loader=_LOADER))
    return hit[1]


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
    source: str = "local"  # local | hub | air-bench | object
    mteb_task: str | None = None
    data_dir: Path | None = None
    subsets: list[str] | None = None
    eval_splits: list[str] | None = None
    instruction: str | None = None
    fewshot: dict = field(default_factory=dict)
    air_bench: dict | None = None  # source: air-bench (evalkit/tasks/air_bench.py)
    origin: str = ""
    task_object: object = field(default=None, repr=False, compare=False)  # source: object (an mteb task given as it is)

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
        subsets=list(entry["subsets"]) if entry.get("subsets") else None,  # copies: the parsed YAML is shared (read_yaml)
        eval_splits=list(entry["eval_splits"]) if entry.get("eval_splits") else None,
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
                doc = read_yaml(f) or {}
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
        """evalkit's suite `name` (tasks/*.yaml), else mteb's benchmark of that name."""
        if name not in self.suites:
            specs = self.mteb_benchmark(name)
            if specs is None:
                raise EvalkitError(
                    f"unknown suite {name!r}: evalkit's suites are {', '.join(sorted(self.suites))}, "
                    "and mteb's benchmarks are named as mteb.get_benchmarks() spells them, e.g. 'MTEB(eng, v2)' (evalkit list suites)"
                )
            return specs
        s = self.suites[name]
        specs = self.by_file[s["file"]]
        return [mirrored(specs[t]) if t in specs else self.task(t) for t in s["tasks"]]

    def mteb_benchmark(self, name: str) -> list[TaskSpec] | None:
        """The text tasks of mteb's benchmark `name` with mteb's own selection (mteb_tasks); None when
        mteb has no such benchmark."""
        import mteb

        try:
            bench = mteb.get_benchmark(name)
        except Exception:
            return None
        return self.mteb_tasks(list(bench.tasks), f"mteb benchmark {name}")

    def mteb_tasks(self, tasks: list, origin: str) -> list[TaskSpec]:
        """mteb task objects -> specs with mteb's own selection (each task's version, subsets and splits).
        A task that mteb registers under its name runs by that name: a task registered here keeps its
        instruction and few-shot pool, and a mirror under the data root is read offline. Any other
        object (mteb's mock tasks, a user's own class) runs as it is. Tasks that are not text alone are
        left out, named in one line; none left is an error."""
        specs, other = [], []
        for t in tasks:
            meta = t.metadata
            if list(meta.modalities) != ["text"]:
                other.append(meta.name)
                continue
            if not registered(t):
                specs.append(TaskSpec(name=meta.name, type=meta.type, source="object", task_object=t, origin=origin))
                continue
            subsets = list(t.hf_subsets) if meta.is_multilingual else None
            base = self._named(meta.name) or TaskSpec(name=meta.name, type=meta.type, source="hub", origin="mteb")
            specs.append(mirrored(replace(base, subsets=subsets, eval_splits=list(t.eval_splits), origin=base.origin or origin)))
        if other and not specs:
            raise EvalkitError(f"{origin}: {', '.join(other)} {'are' if len(other) > 1 else 'is'} not text alone: evalkit evaluates text models")
        if other:
            log.warning("%s: %d task%s not text alone, left out: %s", origin, len(other), "s are" if len(other) > 1 else " is", ", ".join(other))
        if not specs:
            raise EvalkitError(f"{origin} has no task")
        return specs

    def task(self, name_or_dir: str) -> TaskSpec:
        """A task folder written as a path (`./X`, `dir/X`, `/abs/X`, `~/X`), else a registered task
        name (local mirror preferred when present), an mteb task name, or a folder X in the working
        folder. A bare name that is both a task and a folder here runs the task, and says so."""
        if is_path(name_or_dir):
            return task_from_folder(Path(name_or_dir).expanduser())
        here = Path(name_or_dir)
        folder_here = here.is_dir() and (here / "task.yaml").is_file()
        spec = self._named(name_or_dir)
        if spec is None:
            if here.is_dir():  # no task has this name: the folder here (its task.yaml is checked there)
                return task_from_folder(here)
            raise EvalkitError(
                f"unknown task {name_or_dir!r}: not in tasks/*.yaml, not an mteb task and not a folder with task.yaml "
                "(evalkit list tasks; write a folder as a path: ./NAME)"
            )
        if folder_here:
            log.warning(
                "task %s: running the %s task %s, not the folder ./%s here: write the folder as a path (./%s) to run it",
                name_or_dir, "registered" if spec.origin != "mteb" else "mteb", name_or_dir, name_or_dir, name_or_dir,
            )
        return spec

    def _named(self, name: str) -> TaskSpec | None:
        """The registered task `name` (a local spec whose data are here first), else mteb's task, else None."""
        candidates = [specs[name] for specs in self.by_file.values() if name in specs]
        for c in candidates:
            if c.source == "local" and data_dir_of(c, must_exist=False) is not None:
                return c
        if candidates:
            return mirrored(([c for c in candidates if c.source == "hub"] or candidates)[0])
        try:
            import mteb

            t = mteb.get_task(name)
        except Exception:
            return None
        return mirrored(TaskSpec(name=name, type=t.metadata.type, source="hub", origin="mteb"))


def registered(task) -> bool:
    """Whether mteb's registry gives this very task (its class) under the task's name."""
    import mteb

    try:
        return type(mteb.get_task(task.metadata.name)) is type(task)
    except Exception:
        return False


def is_path(name: str) -> bool:
    """Whether a --tasks entry is written as a folder path rather than a task name."""
    return name.startswith((".", "~", "/")) or "/" in name or os.sep in name or Path(name).is_absolute()


def mirrored(spec: TaskSpec) -> TaskSpec:
    """A hub task whose data are mirrored under the data root (<root>/<name>/, in a MANIFEST layout)
    runs offline from the mirror, scored by the same mteb task."""
    if spec.source != "hub" or spec.data_dir is not None:
        return spec
    root = data_root()
    if root is None or not (root / spec.name).is_dir():
        return spec
    return replace(spec, source="local", mteb_task=spec.mteb_name)


def task_from_folder(folder: Path) -> TaskSpec:
    """The task of a folder with a task.yaml; a relative folder is taken from the working folder, and
    a relative `data:` in its task.yaml from the folder itself. The spec keeps absolute paths, so it
    means the same from any working folder (and on a Ray worker)."""
    where = folder if folder.is_absolute() else f"{folder} ({Path.cwd() / folder})"
    if not folder.is_dir():
        raise EvalkitError(f"task folder {where} does not exist")
    folder = folder.resolve()
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
    if spec.source != "local":
        raise EvalkitError(f"{y}: a task folder holds its own data: leave out `source:` (or give `source: local`)")
    data = doc.get("data")
    spec.data_dir = (folder / Path(str(data)).expanduser()).resolve() if data else folder
    if not spec.data_dir.is_dir():
        raise EvalkitError(f"{y}: `data: {data}` is not a folder ({spec.data_dir}): give it relative to {folder}, or absolute")
    log.info("task %s: the folder %s%s", spec.name, spec.data_dir, f" (mteb's {spec.mteb_task})" if spec.mteb_task else "")
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
