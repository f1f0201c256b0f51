"""Reports: leaderboard tables (markdown, CSV, HTML read back from headless Chromium), benchmark
definitions, published rows, per-item scores and `evalkit compare` with significance tests.

Test data, said plainly:
- STSBenchmark is run for real, once per session, with all-MiniLM-L6-v2 (the smoke suite; its
  result and per-item files are the runner's own).
- The other 11 offline-en result files are synthesised: the real STSBenchmark file is copied into
  the same JSON layout with the scores of ../shared/data/MANIFEST.md's "mteb 2.26 here" column
  written in (running all 12 tasks would take minutes). Every expected number below is computed
  from those files (or from published_scores.json) by this test, not by evalkit.
- Published rows are ../shared/data/published_scores.json (bge-small/base/large-en-v1.5 and others).
"""
from __future__ import annotations

import copy
import json
import shutil
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path
from statistics import mean

import pytest

from evalkit.cli import main
from tests.conftest import md_table

ROOT = Path(__file__).resolve().parent.parent
MODEL_DIR = "sentence-transformers__all-MiniLM-L6-v2"
MODEL = "sentence-transformers/all-MiniLM-L6-v2"

# MANIFEST.md, "mteb 2.26 here" column (all-MiniLM-L6-v2 on the mirrored data), as stored (0..1)
SYNTHETIC = {
    "STS12": {"test/default": 0.7237},
    "STS13": {"test/default": 0.8060},
    "STS14": {"test/default": 0.7559},
    "STS16": {"test/default": 0.7899},
    "SciFact": {"test/default": 0.6451},
    "Banking77Classification": {"test/default": 0.8004},
    "AmazonCounterfactualClassification": {"validation/en": 0.6146, "test/en": 0.6364},
    "TweetSentimentExtractionClassification": {"test/default": 0.5404},
    "SIB200Classification": {"test/eng_Latn": 0.7216},
    "SIB200ClusteringS2S": {"test/eng_Latn": 0.4245},
    "TwitterURLCorpus": {"test/default": 0.8470},
}
OFFLINE_EN = ["STSBenchmark", "STS12", "STS13", "STS14", "STS16", "SciFact", "Banking77Classification",
              "AmazonCounterfactualClassification", "TweetSentimentExtractionClassification", "SIB200Classification",
              "SIB200ClusteringS2S", "TwitterURLCorpus"]
TYPES = {"STSBenchmark": "STS", "STS12": "STS", "STS13": "STS", "STS14": "STS", "STS16": "STS", "SciFact": "Retrieval",
         "Banking77Classification": "Classification", "AmazonCounterfactualClassification": "Classification",
         "TweetSentimentExtractionClassification": "Classification", "SIB200Classification": "Classification",
         "SIB200ClusteringS2S": "Clustering", "TwitterURLCorpus": "PairClassification"}
# the benchmark's selection, written out independently of evalkit: test split, the task's subset
SELECT = {"AmazonCounterfactualClassification": "test/en", "SIB200Classification": "test/eng_Latn", "SIB200ClusteringS2S": "test/eng_Latn"}
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run"]


# ----------------------------------------------------------------------------- shared data
def smoke_run(tmp_path_factory) -> Path:
    """The real smoke run (all-MiniLM-L6-v2, STSBenchmark), made once per session; its run folder."""
    base = tmp_path_factory.getbasetemp() / "smoke-minilm"
    done = list(base.glob(f"results/{MODEL_DIR}/*/STSBenchmark.json"))
    if not done:
        rc = main(["run", "--model", "all-MiniLM-L6-v2", "--suite", "smoke", "--output", str(base / "results"),
                   "--cache-dir", str(base / "cache")])
        assert rc == 0
        done = list(base.glob(f"results/{MODEL_DIR}/*/STSBenchmark.json"))
    assert len(done) == 1
    return done[0].parent


def write_result(folder: Path, template: dict, task: str, scores: dict[str, float]) -> Path:
    """A result file in mteb's TaskResult layout with the given main scores ("split/subset" -> 0..1)."""
    doc = copy.deepcopy(template)
    doc["task_name"] = task
    doc["scores"] = {}
    for key, v in scores.items():
        split, subset = key.split("/")
        doc["scores"].setdefault(split, []).append({"main_score": v, "hf_subset": subset, "languages": ["eng-Latn"]})
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{task}.json"
    path.write_text(json.dumps(doc, indent=2))
    return path


@pytest.fixture(scope="module")
def offline_results(tmp_path_factory) -> Path:
    """results/ with one offline-en run of all-MiniLM-L6-v2 (STSBenchmark real, 11 synthesised) and a
    few-shot variant with two tasks."""
    run = smoke_run(tmp_path_factory)
    root = tmp_path_factory.mktemp("offline-results") / "results"
    dest = root / MODEL_DIR / run.name
    dest.mkdir(parents=True)
    for f in ("STSBenchmark.json", "STSBenchmark.items.json"):
        shutil.copy(run / f, dest / f)
    template = json.loads((run / "STSBenchmark.json").read_text())
    for task, scores in SYNTHETIC.items():
        write_result(dest, template, task, scores)
    shot = dest / "experiments" / "fewshot-2-demo"
    write_result(shot, template, "STSBenchmark", {"test/default": 0.8350})
    write_result(shot, template, "STS12", {"test/default": 0.7400})
    return root


def file_scores(results: Path) -> dict[str, float]:
    """Task -> score x100 read straight from the run's files, with the benchmark's selection."""
    folder = next((results / MODEL_DIR).iterdir())
    out = {}
    for task in OFFLINE_EN:
        doc = json.loads((folder / f"{task}.json").read_text())
        key = SELECT.get(task, "test/default")
        split, subset = key.split("/")
        out[task] = 100 * next(s["main_score"] for s in doc["scores"][split] if s["hf_subset"] == subset)
    return out


def published(task: str, model: str, key: str = "test/default") -> float | None:
    pub = json.loads((ROOT.parent / "shared" / "data" / "published_scores.json").read_text())
    rec = pub.get(task, {}).get(model, {}).get(key)
    return None if rec is None else rec["main_score"]


def f2(x: float) -> str:
    return f"{x:.2f}"


def report(tmp_path, results, fmt, *extra) -> str:
    out = tmp_path / f"lb-{fmt}"
    assert main(["report", "--results", str(results), "--format", fmt, "--out", str(out), *extra]) == 0
    return Path(f"{out}.{fmt}").read_text()


PUB = str(ROOT.parent / "shared" / "data" / "published_scores.json")


# ----------------------------------------------------------------------------- markdown / csv
def test_markdown_offline_en_with_published_rows(offline_results, tmp_path):
    text = report(tmp_path, offline_results, "md", "--benchmark", "offline-en", "--with-published", PUB)
    head, rows = md_table(text)
    assert head == ["Model", "Dimension", "Sequence Length", "Average (12)", "Retrieval (1)", "Clustering (1)",
                    "Pair Classification (1)", "STS (5)", "Classification (4)"]
    col = {h: i for i, h in enumerate(head)}
    mine = file_scores(offline_results)
    by_type = lambda t: [mine[k] for k in OFFLINE_EN if TYPES[k] == t]
    r = rows[MODEL]
    assert r[col["Dimension"]] == "384" and r[col["Sequence Length"]] == "256"
    assert r[col["Average (12)"]] == f2(mean(mine.values()))  # complete: a plain number
    assert r[col["STS (5)"]] == f2(mean(by_type("STS")))
    assert r[col["Classification (4)"]] == f2(mean(by_type("Classification")))  # AmazonCounterfactual: test/en only
    assert r[col["Retrieval (1)"]] == "64.51" and r[col["Pair Classification (1)"]] == "84.70"

    # published bge rows: SIB200Classification has no published score -> partial, marked with the count
    for size, dim in (("small", "384"), ("base", "768"), ("large", "1024")):
        key = f"BAAI__bge-{size}-en-v1.5"
        pr = rows[f"BAAI/bge-{size}-en-v1.5 (published)"]
        vals = {t: published(t, key, SELECT.get(t, "test/default")) for t in OFFLINE_EN}
        have = [v for v in vals.values() if v is not None]
        assert vals["SIB200Classification"] is None and len(have) == 11
        assert pr[col["Average (12)"]] == f"{mean(have):.2f} (11/12)"
        cls = [vals[t] for t in OFFLINE_EN if TYPES[t] == "Classification" and vals[t] is not None]
        assert pr[col["Classification (4)"]] == f"{mean(cls):.2f} (3/4)"
        assert pr[col["STS (5)"]] == f2(mean(vals[t] for t in OFFLINE_EN if TYPES[t] == "STS"))
        assert pr[col["Dimension"]] == dim and pr[col["Sequence Length"]] == "512"
    # the published all-MiniLM-L6-v2 row is complete
    pm = rows[f"{MODEL} (published)"]
    assert pm[col["Average (12)"]] == f2(mean(published(t, MODEL_DIR, SELECT.get(t, "test/default")) for t in OFFLINE_EN))
    # the few-shot variant has 2 of 12 tasks: never averaged as if complete
    assert rows[f"{MODEL} [fewshot-2-demo]"][col["Average (12)"]] == f"{mean([83.50, 74.00]):.2f} (2/12)"
    assert rows[f"{MODEL} [fewshot-2-demo]"][col["Retrieval (1)"]] == "-"
    assert "partial mean" in text and "(published)" in text
    # complete rows first, then partial ones by number of tasks
    order = list(rows)
    assert order.index(MODEL) < order.index("BAAI/bge-large-en-v1.5 (published)") < order.index(f"{MODEL} [fewshot-2-demo]")
    # zero-shot vs few-shot section
    _, fs = md_table(text, "### Zero-shot vs few-shot")
    assert fs["STSBenchmark"][1:] == [f2(mine["STSBenchmark"]), "83.50"]

    csv = report(tmp_path, offline_results, "csv", "--with-published", PUB)
    import io

    import pandas as pd

    df = pd.read_csv(io.StringIO(csv)).set_index("Model")
    assert df.loc["BAAI/bge-small-en-v1.5 (published)", "Average (12) tasks"] == "11/12"
    assert df.loc[MODEL, "Average (12) tasks"] == "12/12"
    assert abs(df.loc[MODEL, "Average (12)"] - mean(mine.values())) < 0.006


def test_benchmark_definitions_have_the_seed_columns(offline_results, tmp_path):
    text = report(tmp_path, offline_results, "md", "--benchmark", "mteb-eng-v1")
    head, rows = md_table(text)
    assert " | ".join(head) == ("Model | Dimension | Sequence Length | Average (56) | Retrieval (15) | Clustering (11) | "
                                "Pair Classification (3) | Reranking (4) | STS (10) | Summarization (1) | Classification (12)")
    mine = file_scores(offline_results)
    present = [t for t in OFFLINE_EN if t not in ("SIB200Classification", "SIB200ClusteringS2S")]  # the 10 MTEB tasks
    r = dict(zip(head, rows[MODEL]))
    # the model cards' way (rounding: mteb-leaderboard): task scores rounded to 2 decimals, then the mean
    # rounded half to even
    import numpy as np

    assert r["Average (56)"] == f"{float(np.round(np.mean([round(mine[t], 2) for t in present]), 2)):.2f} (10/56)"
    assert r["Summarization (1)"] == "-" and r["Reranking (4)"] == "-"
    assert r["STS (10)"].endswith("(5/10)") and r["Pair Classification (3)"] == "84.70 (1/3)"

    from evalkit.report.benchmarks import load_benchmark, names

    assert {"mteb-eng-v1", "cmteb", "air-bench-qa-en", "air-bench-longdoc-en", "beir", "offline-en", "offline-zh", "smoke"} <= set(names())
    cm = load_benchmark("cmteb")
    assert [c.label for c in cm.columns] == ["Avg", "Retrieval", "STS", "PairClassification", "Classification", "Reranking", "Clustering"]
    assert len(cm.tasks) == 31 and [len(c.tasks) for c in cm.columns] == [31, 8, 7, 2, 6, 4, 4]
    mt = load_benchmark("mteb-eng-v1")
    assert mt.splits_of("MSMARCO") == ["dev"] and mt.subsets_of("AmazonCounterfactualClassification") == ["en"]
    assert len(load_benchmark("beir").tasks) == 15


def test_offline_zh_published_rows_never_borrow_another_metric(tmp_path):
    """bge-*-zh published rows carry old metric-qualified keys: STS 'cos_sim.spearman' is mteb 2's
    main score (cosine_spearman) and counts; Ocnli's 'cos_sim.ap'/'max_ap' is not (main: max_accuracy)."""
    empty = tmp_path / "results"
    empty.mkdir()
    text = report(tmp_path, empty, "md", "--benchmark", "offline-zh", "--with-published", PUB)
    head, rows = md_table(text)
    r = dict(zip(head, rows["BAAI/bge-large-zh-v1.5 (published)"]))
    sts = [78.70, 74.33, 62.94, 44.36]  # STSB, LCQMC, BQ (test), AFQMC (validation)
    assert r["STS (4)"] == f2(mean(sts))
    assert r["Avg (5)"] == f"{mean(sts):.2f} (4/5)"
    assert r["PairClassification (1)"] == "-"


def test_air_bench_tables_from_published_rows_and_results(tmp_path, offline_results):
    """AIR-Bench is hub-only: rows come from results or published rows named as tasks/benchmarks.yaml says."""
    from evalkit.report.benchmarks import load_benchmark

    qa = load_benchmark("air-bench-qa-en")
    ld = load_benchmark("air-bench-longdoc-en")
    pub = {}
    for i, t in enumerate(qa.tasks):
        pub[t] = {"BAAI__bge-m3": {"test/default": {"main_score": 50 + i}}}
        if t != "AIR-Bench-qa-msmarco-en":
            pub[t]["BAAI__bge-small-en-v1.5"] = {"test/default": {"main_score": 40 + i}}
    for i, t in enumerate(ld.tasks):  # Long-Doc reads Recall@10, not the main score (nDCG@10)
        pub[t] = {"BAAI__bge-m3": {"test/default": {"main_score": 10.0, "recall_at_10": 60 + i}}}
    pfile = tmp_path / "air.json"
    pfile.write_text(json.dumps(pub))
    # one of our own runs on one QA dataset
    run = next((offline_results / MODEL_DIR).iterdir())
    template = json.loads((run / "STSBenchmark.json").read_text())
    res = tmp_path / "results"
    p = write_result(res / MODEL_DIR / run.name, template, "AIR-Bench-qa-wiki-en", {"test/default": 0.5})
    doc = json.loads(p.read_text())
    doc["scores"]["test"][0].update(ndcg_at_10=0.5, recall_at_10=0.7)
    p.write_text(json.dumps(doc))

    text = report(tmp_path, res, "md", "--benchmark", "air-bench-qa-en", "--with-published", str(pfile))
    head, rows = md_table(text)
    assert head == ["Model", "wiki", "web", "news", "healthcare", "law", "finance", "arxiv", "msmarco", "ALL (8)"]
    assert rows["BAAI/bge-m3 (published)"][-1] == f2(mean(50 + i for i in range(8)))
    assert rows["BAAI/bge-small-en-v1.5 (published)"][-1] == f"{mean(40 + i for i in range(7)):.2f} (7/8)"
    assert rows[MODEL][1] == "50.00" and rows[MODEL][-1] == "50.00 (1/8)"

    text = report(tmp_path, res, "md", "--benchmark", "air-bench-longdoc-en", "--with-published", str(pfile))
    head, rows = md_table(text)
    assert head == ["Model", "arxiv (4)", "book (2)", "healthcare (5)", "law (4)", "ALL (15)"]
    r = rows["BAAI/bge-m3 (published)"]
    arxiv = next(c for c in ld.columns if c.name == "arxiv").tasks
    assert r[1] == f2(mean(60 + ld.tasks.index(t) for t in arxiv)) and r[-1] == f2(mean(60 + i for i in range(15)))


def test_published_rows_from_a_results_clone(tmp_path, offline_results):
    run = next((offline_results / MODEL_DIR).iterdir())
    template = json.loads((run / "STSBenchmark.json").read_text())
    clone = tmp_path / "mteb-results"
    write_result(clone / "results" / "BAAI__bge-small-en-v1.5" / "5c38ec7c405e", template, "STSBenchmark", {"test/default": 0.8586})
    text = report(tmp_path, offline_results, "md", "--benchmark", "smoke", "--with-published", str(clone))
    _, rows = md_table(text)
    assert rows["BAAI/bge-small-en-v1.5 (published: 5c38ec7)"][1] == "85.86"  # the source folder it comes from
    assert rows[MODEL][1] == f2(file_scores(offline_results)["STSBenchmark"])


def test_report_errors_are_one_line(tmp_path, capsys):
    assert main(["report", "--results", str(tmp_path / "nope")]) == 2
    assert main(["report", "--results", str(tmp_path), "--benchmark", "no-such"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "does not exist" in err[0] and "unknown benchmark 'no-such'" in err[1]


# ----------------------------------------------------------------------------- HTML in Chromium
class _Leaderboard(HTMLParser):
    """Rows of <table id="leaderboard"> in the DOM that Chromium dumped (after the page's JS ran)."""

    def __init__(self):
        super().__init__()
        self.table_attrs: dict = {}
        self.in_table = False
        self.rows: list[dict] = []
        self.cell = None
        self.links: list[str] = []
        self.svgs: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table" and a.get("id") == "leaderboard":
            self.in_table, self.table_attrs = True, a
        elif tag == "svg":
            self.svgs.append(a.get("id", ""))
        elif tag == "a" and a.get("href", "").endswith(".json"):
            self.links.append(a["href"])
        elif self.in_table and tag == "tr" and "data-label" in a:
            self.rows.append({"label": a["data-label"], "cells": []})
        elif self.in_table and tag == "td" and self.rows:
            self.cell = {"class": a.get("class", ""), "value": a.get("data-value"), "text": ""}
            self.rows[-1]["cells"].append(self.cell)

    def handle_endtag(self, tag):
        if tag == "table" and self.in_table:
            self.in_table = False
        if tag == "td":
            self.cell = None

    def handle_data(self, data):
        if self.cell is not None:
            self.cell["text"] += data


def chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.fail("chromium is not installed: run `make browser` (apt-get install -y chromium)")
    return exe


def test_html_report_renders_in_headless_chromium(offline_results, tmp_path):
    out = tmp_path / "html" / "leaderboard"
    assert main(["report", "--results", str(offline_results), "--format", "html", "--out", str(out), "--with-published", PUB]) == 0
    page = Path(f"{out}.html")
    html = page.read_text()
    bare = html.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "http://" not in bare and "https://" not in bare and "<link" not in bare  # nothing to fetch: no CDN
    with tempfile.TemporaryDirectory(prefix="evalkit-chromium-") as profile:
        dom = subprocess.run([chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom", page.as_uri()],
                             capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    p = _Leaderboard()
    p.feed(dom.stdout)
    # the page's script ran: it sorted the leaderboard by its first score column
    assert p.table_attrs.get("data-sorted-by") == "Average (12)" and p.table_attrs.get("data-sort-order") == "desc"
    rows = {r["label"]: r for r in p.rows}
    assert {MODEL, f"{MODEL} (published)", "BAAI/bge-small-en-v1.5 (published)", "BAAI/bge-base-en-v1.5 (published)",
            "BAAI/bge-large-en-v1.5 (published)", f"{MODEL} [fewshot-2-demo]"} == set(rows)

    # numbers read back from the rendered page = numbers computed from the result files
    mine = file_scores(offline_results)
    cells = [c for c in rows[MODEL]["cells"] if "score" in c["class"]]
    expected = [mean(mine.values()), mine["SciFact"], mine["SIB200ClusteringS2S"], mine["TwitterURLCorpus"],
                mean(mine[t] for t in OFFLINE_EN if TYPES[t] == "STS"), mean(mine[t] for t in OFFLINE_EN if TYPES[t] == "Classification")]
    assert [c["text"].strip() for c in cells] == [f2(x) for x in expected]
    assert all(abs(float(c["value"]) - x) < 1e-4 for c, x in zip(cells, expected))
    small = [c for c in rows["BAAI/bge-small-en-v1.5 (published)"]["cells"] if "score" in c["class"]]
    assert "partial" in small[0]["class"] and small[0]["text"].strip().endswith("(11/12)")
    # sorted by the page's JS: complete rows first (by average, descending), then partial rows
    labels = [r["label"] for r in p.rows]
    complete = [l for l in labels if "complete" in [c for c in rows[l]["cells"] if "score" in c["class"]][0]["class"]]
    assert labels[: len(complete)] == complete
    avgs = [float([c for c in rows[l]["cells"] if "score" in c["class"]][0]["value"]) for l in complete]
    assert avgs == sorted(avgs, reverse=True)
    # charts: per type and zero-shot vs few-shot, inline SVG
    assert "type-chart" in p.svgs and "fewshot-0" in p.svgs
    # drill-down links are relative and lead to the result files
    run = next((offline_results / MODEL_DIR).iterdir())
    targets = {(page.parent / href).resolve() for href in p.links if not href.startswith("file:")}
    assert (run / "STSBenchmark.json").resolve() in targets and (run / "SciFact.json").resolve() in targets

    shot = ROOT / "reports" / "test-report-offline-en.png"
    shot.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="evalkit-chromium-") as profile:
        r = subprocess.run([chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--screenshot={shot}",
                            "--window-size=1400,1000", "--hide-scrollbars", page.as_uri()], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and int.from_bytes(data[16:20], "big") == 1400 and len(data) > 20_000


# ----------------------------------------------------------------------------- per-item scores, compare
def _folder_tasks(root: Path) -> list[Path]:
    """Tiny user tasks of five types (task folders with task.yaml)."""
    import random

    rnd = random.Random(0)
    words = "bank card money transfer account balance sport music film city river king queen good bad happy sad".split()
    sent = lambda n=5: " ".join(rnd.choice(words) for _ in range(n))
    out = []

    def jsonl(path, rows):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))

    d = root / "ItemsSTS"
    jsonl(d / "test.jsonl", [{"sentence1": sent(), "sentence2": sent(), "score": rnd.uniform(0, 5)} for _ in range(40)])
    (d / "task.yaml").write_text("name: ItemsSTS\ntype: STS\n")
    out.append(d)
    d = root / "ItemsRetrieval"
    jsonl(d / "corpus.jsonl", [{"_id": f"d{i}", "title": "", "text": sent(8)} for i in range(30)])
    jsonl(d / "queries.jsonl", [{"_id": f"q{i}", "text": sent(3)} for i in range(12)])
    (d / "qrels").mkdir()
    (d / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(f"q{i}\td{(i * 7 + j) % 30}\t1\n" for i in range(12) for j in range(2)))
    (d / "task.yaml").write_text("name: ItemsRetrieval\ntype: Retrieval\n")
    out.append(d)
    d = root / "ItemsClassification"
    for split, n in (("train", 60), ("test", 30)):
        jsonl(d / f"{split}.jsonl", [{"text": sent(), "label": i % 3} for i in range(n)])
    (d / "task.yaml").write_text("name: ItemsClassification\ntype: Classification\n")
    out.append(d)
    d = root / "ItemsPairs"
    jsonl(d / "test.jsonl", [{"sentence1": sent(), "sentence2": sent(), "label": i % 2} for i in range(40)])
    (d / "task.yaml").write_text("name: ItemsPairs\ntype: PairClassification\n")
    out.append(d)
    d = root / "ItemsClustering"
    d.mkdir()
    (d / "test.json").write_text(json.dumps({"sentences": [sent() for _ in range(100)], "labels": [i % 3 for i in range(100)]}))  # mteb clusters 4%: 4 sentences
    (d / "task.yaml").write_text("name: ItemsClustering\ntype: Clustering\n")
    out.append(d)
    return out


def test_per_item_scores_are_kept_and_reproduce_the_main_score(tmp_path, tiny_bert, capsys):
    folders = _folder_tasks(tmp_path / "tasks")
    out = tmp_path / "results"
    assert main(["run", "--model", str(tiny_bert), "--tasks", ",".join(map(str, folders)), "--output", str(out),
                 "--cache-dir", str(tmp_path / "cache")]) == 0
    run = next(out.glob("*/*"))
    kinds = {}
    for task in ("ItemsSTS", "ItemsRetrieval", "ItemsClassification", "ItemsPairs", "ItemsClustering"):
        doc = json.loads((run / f"{task}.json").read_text())
        items = json.loads((run / f"{task}.items.json").read_text())
        (key, rec), = items["splits"].items()
        score = doc["scores"]["test"][0]["main_score"]
        assert rec["available"] and rec["matches"] and abs(rec["recomputed"] - score) < 2e-5, (task, rec.get("recomputed"), score)
        kinds[task] = rec["kind"]
        if task == "ItemsRetrieval":
            assert rec["n"] == 12 and len(rec["values"]["ndcg_at_10"]) == 12  # per-query nDCG@10
        if task == "ItemsClassification":
            assert rec["experiments"] == 10 and len(rec["values"]["accuracy"]) == 30
        if task == "ItemsClustering":  # mteb's per-experiment V-measures, the same seeded subsamples for every model
            assert rec["unit"] == "experiment" and rec["values"]["v_measure"] == doc["scores"]["test"][0]["v_measures"]["Level 0"]
    assert kinds == {"ItemsSTS": "statistic", "ItemsRetrieval": "mean", "ItemsClassification": "mean", "ItemsPairs": "statistic", "ItemsClustering": "mean"}

    # a run compared with itself: every paired test finds nothing
    capsys.readouterr()
    assert main(["compare", str(run), str(run), "--format", "json"]) == 0
    res = json.loads(capsys.readouterr().out)
    by_task = {t["task"]: t for t in res["tests"]}
    for task in ("ItemsSTS", "ItemsRetrieval", "ItemsClassification", "ItemsPairs", "ItemsClustering"):
        assert by_task[task]["p"] > 0.5 and "no significant difference" in by_task[task]["verdict"], by_task[task]


def test_compare_real_runs_with_a_p_value(tmp_path_factory, tmp_path, tiny_bert, capsys):
    """all-MiniLM-L6-v2 vs a random tiny BERT on STSBenchmark: the paired bootstrap over the 1379 pairs
    says the tiny model is worse, with p < 0.01; without per-item scores the table says so."""
    from evalkit.report.compare import compare_runs

    minilm = smoke_run(tmp_path_factory)
    out = tmp_path / "results"
    assert main(["run", "--model", str(tiny_bert), "--max-length", "128", "--tasks", "STSBenchmark", "--output", str(out),
                 "--cache-dir", str(tmp_path / "c")]) == 0
    tiny = next(out.glob("*/*"))
    res = json.loads(compare_runs([minilm, tiny], ["minilm", "tiny"], fmt="json"))
    (t,) = res["tests"]
    assert t["task"] == "STSBenchmark" and t["delta"] < -10 and t["p"] < 0.01 and t["verdict"].startswith("B worse")
    assert t["test"] == "paired bootstrap (spearman)" and t["n"] == 1379
    assert res["runs"][1]["tasks"]["STSBenchmark"]["delta"] == pytest.approx(t["delta"])

    md = compare_runs([tiny, minilm], ["tiny", "minilm"])
    head, rows = md_table(md)
    assert head == ["Run", "STSBenchmark", "Average (1)"]
    assert rows["minilm"][1].startswith(f2(100 * json.loads((minilm / "STSBenchmark.json").read_text())["scores"]["test"][0]["main_score"]))
    assert "(+" in rows["minilm"][1]
    _, sig = md_table(md, "### Paired significance")
    assert "B better (p=" in sig["tiny"][-1]

    bare = tmp_path / "bare" / MODEL_DIR / "rev"
    bare.mkdir(parents=True)
    shutil.copy(minilm / "STSBenchmark.json", bare)
    res = json.loads(compare_runs([bare, tiny], fmt="json"))
    assert res["tests"][0]["p"] is None and "no per-item scores" in res["tests"][0]["verdict"]
    # the CLI
    capsys.readouterr()
    assert main(["compare", str(minilm), str(tiny), "--labels", "minilm,tiny"]) == 0
    assert "B worse (p=" in capsys.readouterr().out
    assert main(["compare", str(minilm)]) == 2
