"""Benchmark definitions (tasks/benchmarks.yaml): task list, columns, splits, metric.

See the header of tasks/benchmarks.yaml for the fields and for how cells are averaged.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from evalkit.errors import EvalkitError

DEFAULT_BENCHMARK = "offline-en"
MODEL_COLUMNS = ("Dimension", "Sequence Length")
# How the model cards' tables were computed: every task score rounded to 2 decimals (x100) first,
# then the mean, rounded to 2 decimals, the two tools breaking ties their own way.
#   mteb-leaderboard  the MTEB leaderboard (model cards' MTEB table): Python round() per task, pandas
#                     mean, pandas round(2) (numpy: round half to even on the binary value x 100)
#   c-mteb            C-MTEB's summarize_results.py (model cards' C-MTEB tables): round(x * 100, 2) per
#                     task, round(sum / n, 2)
ROUNDINGS = ("mteb-leaderboard", "c-mteb")


@dataclass
class Column:
    name: str
    tasks: list[str]
    count: bool = False
    kind: str = "tasks"  # "types": the mean of the benchmark's per-type columns (mteb's Mean (TaskType))

    @property
    def label(self) -> str:
        return f"{self.name} ({len(self.tasks)})" if self.count else self.name


@dataclass
class Benchmark:
    name: str
    title: str
    tasks: list[str]
    types: dict[str, str]  # task -> type
    columns: list[Column]
    splits: list[str] = field(default_factory=lambda: ["test"])
    overrides: dict[str, dict] = field(default_factory=dict)
    subsets: dict[str, list[str]] = field(default_factory=dict)  # task -> subsets (from the task specs)
    metric: str | None = None  # None: the result's main_score
    metric_aliases: list[str] = field(default_factory=list)  # other names of `metric`, tried in order
    rounding: str | None = None  # None: exact means; else one of ROUNDINGS
    main_metric: str | None = None  # the tasks' main metric where mteb does not know them (AIR-Bench)
    model_columns: list[str] = field(default_factory=list)
    info: dict = field(default_factory=dict)
    leaderboard: str | None = None  # "mteb": one of mteb's benchmarks, aggregated as its leaderboard does

    def splits_of(self, task: str) -> list[str] | None:
        """The splits that count, or None for 'every split present'."""
        o = self.overrides.get(task, {}).get("splits") or self.splits
        return list(o) if o else None

    def subsets_of(self, task: str) -> list[str] | None:
        """The subsets that count, or None for 'every subset present'."""
        o = self.overrides.get(task, {}).get("subsets")
        return list(o) if o else self.subsets.get(task)

    def selection(self, task: str) -> str:
        subs = self.subsets_of(task)
        spl = self.splits_of(task)
        return f"{'+'.join(spl) if spl else 'all splits'} / {'+'.join(subs) if subs else 'all subsets'}"


def benchmarks_file() -> Path:
    from evalkit.tasks import tasks_dir

    return tasks_dir() / "benchmarks.yaml"


def _load_doc() -> dict:
    from evalkit.tasks.registry import read_yaml

    path = benchmarks_file()
    if not path.is_file():
        raise EvalkitError(f"no benchmark definitions at {path}: tasks/benchmarks.yaml is part of evalkit")
    try:
        doc = read_yaml(path) or {}
    except yaml.YAMLError as e:
        raise EvalkitError(f"{path} is not valid YAML: {str(e).splitlines()[0]}") from e
    return doc.get("benchmarks") or {}


def names() -> list[str]:
    return list(_load_doc())


def load_benchmark(name: str) -> Benchmark:
    doc = _load_doc()
    if name not in doc:
        raise EvalkitError(f"unknown benchmark {name!r}: known benchmarks are {', '.join(doc)} (tasks/benchmarks.yaml)")
    b = doc[name] or {}
    where = f"benchmark {name} in {benchmarks_file()}"
    types: dict[str, str] = {}
    subsets: dict[str, list[str]] = {}
    if b.get("suite"):
        from evalkit.tasks import Registry

        reg = Registry()
        if b["suite"] not in reg.suites:
            raise EvalkitError(f"{where}: suite {b['suite']!r} is not defined in tasks/*.yaml")
        specs = reg.suite(b["suite"])
        tasks = [s.name for s in specs]
        for s in specs:
            types[s.name] = s.type
            if s.subsets:
                subsets[s.name] = list(s.subsets)
    elif b.get("tasks"):
        tasks = [str(t) for t in b["tasks"]]
    else:
        tasks = []
    suite_tasks = list(tasks)  # `tasks: suite` in a column: these, without add_tasks
    # tasks beyond the suite's: {Task: {type: T, subsets: [...]}}
    for t, spec in (b.get("add_tasks") or {}).items():
        spec = spec or {}
        if not spec.get("type"):
            raise EvalkitError(f"{where}: add_tasks: {t} needs a `type:`")
        if t not in tasks:
            tasks.append(str(t))
        types[str(t)] = str(spec["type"])
        if spec.get("subsets"):
            subsets[str(t)] = [str(x) for x in spec["subsets"]]
    rounding = b.get("rounding")
    if rounding is not None and rounding not in ROUNDINGS:
        raise EvalkitError(f"{where}: rounding {rounding!r}: use one of {', '.join(ROUNDINGS)} (or leave it out)")
    metric = b.get("metric")
    metrics = [str(m) for m in metric] if isinstance(metric, list) else ([str(metric)] if metric else [])
    task_type = b.get("task_type")
    columns = []
    show_counts = bool(b.get("show_counts", False))
    for c in b.get("columns") or []:
        cname = str(c.get("name") or "")
        if not cname:
            raise EvalkitError(f"{where}: a column has no name")
        if c.get("tasks") == "all":
            ctasks = None  # filled below, once every task is known
        elif c.get("tasks") == "suite":
            if not b.get("suite"):
                raise EvalkitError(f"{where}: column {cname!r} has `tasks: suite` but the benchmark names no suite")
            ctasks = list(suite_tasks)
        elif c.get("tasks"):
            ctasks = [str(t) for t in c["tasks"]]
        elif c.get("type"):
            ctasks = [t for t in tasks if types.get(t, task_type) == c["type"]]
        else:
            raise EvalkitError(f"{where}: column {cname!r} needs `type:` or `tasks:`")
        columns.append((cname, ctasks, c.get("count", show_counts)))
    # tasks named only in columns (AIR-Bench: the columns are the definition)
    for _, ctasks, _ in columns:
        for t in ctasks or []:
            if t not in tasks:
                tasks.append(t)
    for t in tasks:
        types.setdefault(t, task_type or "?")
    cols = [Column(n, list(ct) if ct is not None else list(tasks), bool(cnt)) for n, ct, cnt in columns]
    if not cols:
        cols = [Column("Average", list(tasks), True)]
    bad = [m for m in b.get("model_columns") or [] if m not in MODEL_COLUMNS]
    if bad:
        raise EvalkitError(f"{where}: unknown model column {bad[0]!r} (use {', '.join(MODEL_COLUMNS)})")
    return Benchmark(
        name=name,
        title=str(b.get("title") or name),
        tasks=tasks,
        types=types,
        columns=cols,
        splits=list(b.get("splits") or ["test"]),
        overrides=dict(b.get("overrides") or {}),
        subsets=subsets,
        metric=metrics[0] if metrics else None,
        metric_aliases=metrics[1:],
        rounding=rounding,
        main_metric=b.get("main_metric"),
        model_columns=list(b.get("model_columns") or []),
        info={k: b[k] for k in ("version", "hub") if k in b},
    )


def ad_hoc(tasks: list[str], types: dict[str, str], name: str = "results") -> Benchmark:
    """A benchmark over whatever tasks are given (compare/regress): every split and subset counts."""
    return Benchmark(
        name=name, title=name, tasks=list(tasks), types=dict(types), columns=[Column("Average", list(tasks), True)], splits=[],
    )
