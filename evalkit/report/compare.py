"""`evalkit compare RUN_A RUN_B [RUN_C ...]`: runs side by side, deltas to the first, p-values.

A RUN is one result folder: `results/<model>/<revision>` or `.../experiments/<variant>`.
One row per run, one column per task (its main score x100, mean over the run's splits/subsets)
plus the average; every later run shows its delta to the first. For each later run against the
first, a paired significance test on the per-item scores kept beside the results
(`<Task>.items.json`, see evalkit/items.py and stats.py), so "B is better" comes with a
p-value; where no per-item scores exist the table says so instead of guessing.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from evalkit.errors import EvalkitError
from evalkit.report.benchmarks import ad_hoc
from evalkit.items import TOL, load_items
from evalkit.report.sources import Entry, doc_scores
from evalkit.report.tables import aggregate, task_score
from evalkit.results import read_result

ALPHA = 0.05


def run_files(folder: Path) -> list[Path]:
    return [
        p for p in sorted(Path(folder).glob("*.json"))
        if not p.name.startswith(".") and p.name != "model_meta.json" and not p.name.endswith(".items.json")
    ]


def load_run(folder: Path, label: str | None = None, published: bool = False) -> Entry:
    """The results of one run folder as an Entry (model, revision and variant from its path)."""
    folder = Path(folder)
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        raise EvalkitError(f"run folder {folder} {what}: give results/<model>/<revision> or .../experiments/<variant>")
    if folder.parent.name == "experiments":
        variant, revision, model = folder.name, folder.parent.parent.name, folder.parent.parent.parent.name
    else:
        variant, revision, model = None, folder.name, folder.parent.name
    e = Entry(label=label or "", model=model, revision=revision, variant=variant, published=published, source=str(folder))
    for path in run_files(folder):
        doc = read_result(path)
        if doc is None:
            continue
        e.scores[doc["task_name"]] = doc_scores(doc)
        e.paths[doc["task_name"]] = path
        if (doc.get("evalkit") or {}).get("max_length"):
            e.meta.setdefault("max_length", doc["evalkit"]["max_length"])
    if not e.scores:
        raise EvalkitError(
            f"{folder} holds no result files (<Task>.json): give a run folder such as results/<model>/<revision> "
            "or results/<model>/<revision>/experiments/<variant>"
        )
    if not e.label:
        e.label = e.display_model + (f" [{variant}]" if variant else "")
    return e


# ----------------------------------------------------------------------------- significance
@dataclass
class Significance:
    key: str  # split/subset
    result: object | None  # stats.TestResult
    note: str = ""

    @property
    def p(self) -> float | None:
        return None if self.result is None else self.result.p


def _usable(items: dict | None, key: str, score: float | None, who: str) -> tuple[dict | None, str]:
    if items is None:
        return None, f"no per-item scores for {who} (no .items.json)"
    if not items.get("available", False) and not items.get("splits"):
        return None, f"no per-item scores: {items.get('reason', 'not kept')}"
    rec = (items.get("splits") or {}).get(key)
    if rec is None or not rec.get("available", False):
        reason = (rec or {}).get("reason") or items.get("reason") or f"none for {key}"
        return None, f"no per-item scores: {reason}"
    if rec.get("kind") == "none":
        return None, f"no per-item test: {rec.get('reason', '')}"
    r = rec.get("recomputed")
    if r is None or score is None or abs(r - score) > TOL:
        return None, f"per-item scores of {who} do not reproduce its result (stale .items.json?)"
    return rec, ""


def paired_test(items_a: dict | None, items_b: dict | None, key: str, score_a: float | None, score_b: float | None,
                who_a: str = "A", who_b: str = "B") -> Significance:
    """Paired test of B against A on one split/subset; scores are the result files' (0..1)."""
    import evalkit.report.stats as stats

    ra, why = _usable(items_a, key, score_a, who_a)
    if ra is None:
        return Significance(key, None, why)
    rb, why = _usable(items_b, key, score_b, who_b)
    if rb is None:
        return Significance(key, None, why)
    if ra.get("metric") != rb.get("metric") or ra.get("kind") != rb.get("kind"):
        return Significance(key, None, f"per-item scores measure different things ({ra.get('metric')} vs {rb.get('metric')})")
    try:
        if ra["kind"] == "mean":
            if list(map(str, ra["ids"])) != list(map(str, rb["ids"])):
                return Significance(key, None, "the runs scored different items (ids differ): no paired test")
            m = ra["metric"]
            return Significance(key, stats.randomization_test(ra["values"][m], rb["values"][m]))
        if ra["n"] != rb["n"] or any(abs(float(x) - float(y)) > 1e-9 for x, y in zip(ra["gold"], rb["gold"])):
            return Significance(key, None, "the runs scored different items (gold differs): no paired test")
        stat = ra["statistic"]
        if stat != rb["statistic"]:
            return Significance(key, None, "different statistics")
        return Significance(key, stats.bootstrap_test(
            stat, ra["pred"], rb["pred"], ra["gold"], higher_a=ra.get("higher_is_similar", True), higher_b=rb.get("higher_is_similar", True),
        ))
    except (KeyError, ValueError, TypeError) as e:
        return Significance(key, None, f"per-item scores unreadable ({type(e).__name__}: {e})")


def verdict(sig: list[Significance], alpha: float = ALPHA, a: str = "A", b: str = "B") -> str:
    tested = [s for s in sig if s.result is not None]
    if not tested:
        notes = sorted({s.note for s in sig if s.note})
        return "; ".join(notes) or "no per-item scores"
    parts = []
    for s in tested:
        r = s.result
        where = f"{s.key}: " if len(sig) > 1 else ""
        if r.p < alpha:
            word = f"{b} better" if r.delta > 0 else f"{b} worse"
        else:
            word = "no significant difference"
        parts.append(f"{where}{word} (p={fmt_p(r.p)})")
    for s in sig:
        if s.result is None and len(sig) > 1:
            parts.append(f"{s.key}: {s.note}")
    return "; ".join(parts)


def fmt_p(p: float | None) -> str:
    if p is None:
        return "-"
    return f"{p:.4f}" if p >= 1e-4 else f"{p:.1e}"


# ----------------------------------------------------------------------------- the comparison
def _x100(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def compare_runs(folders: list[Path], labels: list[str] | None = None, fmt: str = "md", alpha: float = ALPHA) -> str:
    """Compare run folders: markdown (default), csv or json. The first run is the reference."""
    if len(folders) < 2:
        raise EvalkitError("compare needs at least two run folders")
    if labels is not None and len(labels) != len(folders):
        raise EvalkitError(f"{len(labels)} labels for {len(folders)} runs: give one label per run")
    if fmt not in ("md", "csv", "json"):
        raise EvalkitError(f"compare format {fmt!r}: use md, csv or json")
    entries = [load_run(f, labels[i] if labels else None) for i, f in enumerate(folders)]
    seen: dict[str, int] = {}
    for i, e in enumerate(entries):  # distinct labels: the same model twice gets its variant / folder
        if e.label in seen:
            e.label = f"{e.label} ({Path(folders[i]).name})"
        seen[e.label] = i
    tasks: list[str] = []
    for e in entries:
        tasks += [t for t in e.scores if t not in tasks]
    bench = ad_hoc(tasks, {}, "compare")
    scores = [{t: task_score(e, bench, t) for t in tasks} for e in entries]
    avgs = [aggregate(s, tasks) for s in scores]
    ref = entries[0]

    rows = []
    for i, e in enumerate(entries):
        row = {"run": e.label, "folder": str(folders[i]), "tasks": {}, "average": avgs[i].value, "average_tasks": f"{avgs[i].n}/{avgs[i].total}"}
        for t in tasks:
            v = scores[i][t].value
            d = None if i == 0 or v is None or scores[0][t].value is None else v - scores[0][t].value
            row["tasks"][t] = {"score": v, "delta": d}
        both = avgs[i].complete and avgs[0].complete
        row["average_delta"] = None if i == 0 or not both else avgs[i].value - avgs[0].value
        rows.append(row)

    tests = []
    items_cache: dict[tuple[int, str], dict | None] = {}

    def items_of(i: int, t: str):
        if (i, t) not in items_cache:
            p = entries[i].paths.get(t)
            items_cache[(i, t)] = load_items(p) if p else None
        return items_cache[(i, t)]

    for i in range(1, len(entries)):
        for t in tasks:
            sa, sb = entries[0].scores.get(t), entries[i].scores.get(t)
            if not sa or not sb:
                continue
            sig = []
            for key in [k for k in sa if k in sb]:
                va, vb = sa[key].get("main_score"), sb[key].get("main_score")
                sig.append(paired_test(items_of(0, t), items_of(i, t), key, va, vb, ref.label, entries[i].label))
            if not sig:
                continue
            tested = [s for s in sig if s.result is not None]
            tests.append({
                "a": ref.label, "b": entries[i].label, "task": t,
                "score_a": scores[0][t].value, "score_b": scores[i][t].value,
                "delta": None if scores[0][t].value is None or scores[i][t].value is None else scores[i][t].value - scores[0][t].value,
                "test": tested[0].result.test if tested else "-",
                "n": tested[0].result.n if tested else None,
                "samples": tested[0].result.samples if tested else None,
                "p": tested[0].result.p if len(tested) == 1 else None,  # several splits: see p_by_split / verdict
                "p_by_split": {s.key: s.p for s in sig},
                "verdict": verdict(sig, alpha, "A", "B"),
            })

    if fmt == "json":
        return json.dumps({"runs": rows, "tests": tests, "alpha": alpha, "tasks": tasks}, indent=2, default=str) + "\n"
    if fmt == "csv":
        import pandas as pd

        recs = []
        for r in rows:
            rec = {"run": r["run"], "folder": r["folder"]}
            for t in tasks:
                rec[t] = None if r["tasks"][t]["score"] is None else round(r["tasks"][t]["score"], 4)
                rec[f"{t} delta"] = None if r["tasks"][t]["delta"] is None else round(r["tasks"][t]["delta"], 4)
            rec["Average"] = None if r["average"] is None else round(r["average"], 4)
            rec["Average tasks"] = r["average_tasks"]
            recs.append(rec)
        return pd.DataFrame.from_records(recs).to_csv(index=False)
    return _markdown(rows, tests, tasks, alpha)


def _markdown(rows, tests, tasks, alpha) -> str:
    n = len(tasks)
    lines = ["## Compare", "", f"| Run | {' | '.join(tasks)} | Average ({n}) |", "|:---|" + "---:|" * (n + 1)]
    for i, r in enumerate(rows):
        cells = []
        for t in tasks:
            c = r["tasks"][t]
            s = _x100(c["score"])
            if i > 0 and c["delta"] is not None:
                s += f" ({c['delta']:+.2f})"
            cells.append(s)
        avg = _x100(r["average"])
        k, tot = r["average_tasks"].split("/")
        if k != tot and r["average"] is not None:
            avg += f" ({r['average_tasks']})"
        if i > 0 and r["average_delta"] is not None:
            avg += f" ({r['average_delta']:+.2f})"
        lines.append(f"| {r['run']} | {' | '.join(cells)} | {avg} |")
    lines += [
        "",
        "Main scores x100 (mean over each run's splits/subsets); (+d) = delta to the first run. An average marked (n/N) "
        "covers only the tasks that run has and carries no delta.",
    ]
    if tests:
        lines += ["", f"### Paired significance (vs {rows[0]['run']}, alpha {alpha})", "",
                  "| A | B | Task | Score A | Score B | Δ (B−A) | Test | Items | p | Verdict |", "|:---|:---|:---|---:|---:|---:|:---|---:|---:|:---|"]
        for t in tests:
            d = "-" if t["delta"] is None else f"{t['delta']:+.2f}"
            lines.append(
                f"| {t['a']} | {t['b']} | {t['task']} | {_x100(t['score_a'])} | {_x100(t['score_b'])} | {d} | {t['test']} | "
                f"{t['n'] if t['n'] is not None else '-'} | {fmt_p(t['p'])} | {t['verdict']} |"
            )
        lines += ["", "Tests: paired randomisation (10000 sign flips) on per-query / per-item scores; paired bootstrap "
                      "(1000 resamples, fewer for pair sets over 20000 pairs: see the json output) for set-level statistics "
                      "(Spearman over STS pairs, AP / accuracy over pairs); seed 42, two-sided."]
    return "\n".join(lines) + "\n"
