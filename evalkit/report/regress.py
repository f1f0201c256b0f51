"""`evalkit regress`: the CI gate. Fails (exit 1) when a task's main score drops against a baseline.

Baseline: a results folder (`<model>/<revision>/<Task>.json`, as results/baseline/), one run folder,
one result file, or a published-scores JSON. Each baseline task is matched to the current results of
the same model and variant (the same revision preferred) and compared split/subset by split/subset
on the main score x100: a drop of more than `tolerance` points, or a baseline task without a current
result, fails that task. Where both sides kept per-item scores that reproduce their results, the
drop also gets a paired significance test (reported; with require_significance=True a drop that is
not significant at `alpha` only warns). Prints a markdown summary; writes JUnit XML (one testcase per
task) for CI systems.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from evalkit.errors import EvalkitError
from evalkit.report.compare import ALPHA, fmt_p, load_run, paired_test, run_files
from evalkit.items import load_items
from evalkit.report.sources import Entry, load_published_json, load_runs
from evalkit.results import read_result

DEFAULT_TOLERANCE = 0.1


@dataclass
class Check:
    model: str
    variant: str | None
    task: str
    key: str
    baseline: float | None  # x100
    current: float | None
    status: str = "pass"  # pass | fail | warn
    message: str = ""
    significance: str = ""

    @property
    def delta(self) -> float | None:
        return None if self.baseline is None or self.current is None else self.current - self.baseline


@dataclass
class Outcome:
    checks: list[Check] = field(default_factory=list)
    baseline: str = ""
    results: str = ""
    tolerance: float = DEFAULT_TOLERANCE
    notes: list[str] = field(default_factory=list)

    @property
    def failed_tasks(self) -> list[tuple[str, str | None, str]]:
        out = []
        for c in self.checks:
            k = (c.model, c.variant, c.task)
            if c.status == "fail" and k not in out:
                out.append(k)
        return out

    @property
    def exit_code(self) -> int:
        return 1 if self.failed_tasks else 0


def load_baseline(path: Path) -> list[Entry]:
    path = Path(path)
    if path.is_file():
        doc = read_result(path)
        if doc is not None:  # one result file: its run folder, this task only
            e = load_run(path.parent)
            task = doc["task_name"]
            e.scores = {task: e.scores[task]}
            e.paths = {task: e.paths[task]}
            return [e]
        return load_published_json(path)
    if path.is_dir():
        if run_files(path):
            return [load_run(path)]
        entries = load_runs(path)
        if not entries and (path / "results").is_dir():
            entries = load_runs(path / "results")
        if entries:
            return entries
        raise EvalkitError(f"baseline {path} holds no result files: give a results folder, a run folder, a result file or a published-scores JSON")
    raise EvalkitError(f"baseline {path} not found: give a results folder (e.g. results/baseline), a run folder or a JSON file")


def _match(base: Entry, current: list[Entry]) -> Entry | None:
    same = [e for e in current if e.model == base.model and e.variant == base.variant]
    if not same:
        return None
    exact = [e for e in same if e.revision == base.revision]
    return (exact or same)[0]


def regress(baseline: Path, results: Path, tolerance: float = DEFAULT_TOLERANCE, alpha: float = ALPHA,
            require_significance: bool = False) -> Outcome:
    if tolerance < 0:
        raise EvalkitError(f"tolerance must be >= 0, got {tolerance}")
    base_entries = load_baseline(baseline)
    current = load_runs(results)
    out = Outcome(baseline=str(baseline), results=str(results), tolerance=tolerance)
    for be in base_entries:
        ce = _match(be, current)
        if ce is not None and be.revision and ce.revision != be.revision:
            out.notes.append(f"{be.display_model}: baseline revision {be.revision[:12]}, current {ce.revision[:12]}")
        for task in sorted(be.scores):
            bitems = load_items(be.paths[task]) if not be.published and task in be.paths else None
            citems = load_items(ce.paths[task]) if ce is not None and task in ce.paths else None
            for key, vals in sorted(be.scores[task].items()):
                b = vals.get("main_score")
                if b is None:
                    continue
                cur = (ce.scores.get(task) or {}).get(key, {}).get("main_score") if ce is not None else None
                c = Check(be.model, be.variant, task, key, 100 * b, None if cur is None else 100 * cur)
                if ce is None:
                    c.status, c.message = "fail", f"no current results for {be.display_model}{' [' + be.variant + ']' if be.variant else ''} under {results}"
                elif cur is None:
                    c.status, c.message = "fail", f"no current score for {task} {key}"
                else:
                    drop = c.baseline - c.current
                    sig = paired_test(bitems, citems, key, b, cur, "the baseline", "the current run")
                    if sig.result is not None:
                        r = sig.result
                        word = "significant" if r.p < alpha else "not significant"
                        c.significance = f"{word} (p={fmt_p(r.p)}, {r.test}, {r.n} items)"
                    else:
                        c.significance = sig.note
                    if drop > tolerance + 1e-9:
                        c.status = "fail"
                        c.message = f"{task} {key}: {c.baseline:.2f} -> {c.current:.2f} ({-drop:+.2f} points, tolerance {tolerance:g})"
                        if require_significance and sig.result is not None and sig.result.p >= alpha:
                            c.status = "warn"
                            c.message += ": not significant, not failing (--require-significance)"
                    else:
                        c.message = f"{c.delta:+.2f} points"
                out.checks.append(c)
    if not out.checks:
        raise EvalkitError(f"baseline {baseline} has no main scores to check")
    return out


def markdown(o: Outcome) -> str:
    tasks = {(c.model, c.variant, c.task) for c in o.checks}
    failed = o.failed_tasks
    head = (f"## evalkit regress: {len(failed)} of {len(tasks)} tasks regressed" if failed
            else f"## evalkit regress: no regression in {len(tasks)} tasks")
    lines = [head, "", f"baseline `{o.baseline}` vs results `{o.results}`; tolerance {o.tolerance:g} points (main score x100)", "",
             "| Model | Task | Split/subset | Baseline | Current | Δ | Per-item test | Status |",
             "|:---|:---|:---|---:|---:|---:|:---|:---|"]
    for c in o.checks:
        model = c.model.replace("__", "/") + (f" [{c.variant}]" if c.variant else "")
        cur = "-" if c.current is None else f"{c.current:.2f}"
        d = "-" if c.delta is None else f"{c.delta:+.2f}"
        lines.append(f"| {model} | {c.task} | {c.key} | {c.baseline:.2f} | {cur} | {d} | {c.significance or '-'} | {c.status.upper()} |")
    if failed:
        lines += ["", "Regressions:"]
        lines += [f"- {c.model.replace('__', '/')}: {c.message}" for c in o.checks if c.status == "fail"]
    warns = [c for c in o.checks if c.status == "warn"]
    if warns:
        lines += ["", "Warnings:"] + [f"- {c.message}" for c in warns]
    if o.notes:
        lines += ["", "Notes:"] + [f"- {n}" for n in o.notes]
    return "\n".join(lines) + "\n"


def junit_xml(o: Outcome) -> str:
    """JUnit XML: one testcase per (model, variant, task); a failure element names what dropped."""
    cases: dict[tuple, list[Check]] = {}
    for c in o.checks:
        cases.setdefault((c.model, c.variant, c.task), []).append(c)
    n_fail = sum(1 for cs in cases.values() if any(c.status == "fail" for c in cs))
    suites = ET.Element("testsuites", name="evalkit regress", tests=str(len(cases)), failures=str(n_fail), errors="0")
    suite = ET.SubElement(suites, "testsuite", name="evalkit regress", tests=str(len(cases)), failures=str(n_fail), errors="0",
                          skipped="0", time="0")
    props = ET.SubElement(suite, "properties")
    for k, v in (("baseline", o.baseline), ("results", o.results), ("tolerance", f"{o.tolerance:g}")):
        ET.SubElement(props, "property", name=k, value=v)
    for (model, variant, task), cs in cases.items():
        classname = "evalkit.regress." + model.replace(".", "_") + (f".{variant.replace('.', '_')}" if variant else "")
        tc = ET.SubElement(suite, "testcase", classname=classname, name=task, time="0")
        detail = "\n".join(
            f"{c.key}: baseline {c.baseline:.2f}, current {'-' if c.current is None else f'{c.current:.2f}'}"
            f"{'' if c.delta is None else f' ({c.delta:+.2f})'}; {c.significance or 'no per-item test'}; {c.status}"
            for c in cs
        )
        fails = [c for c in cs if c.status == "fail"]
        if fails:
            f = ET.SubElement(tc, "failure", message="; ".join(c.message for c in fails), type="regression")
            f.text = detail
        ET.SubElement(tc, "system-out").text = detail
    ET.indent(suites)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"
