"""The CI regression gate: `evalkit regress` against the committed baseline (results/baseline/,
all-MiniLM-L6-v2 on the smoke suite, made with `evalkit run --model all-MiniLM-L6-v2 --suite smoke
--output results/baseline`).

A fresh smoke run is made for real once per session (shared with tests/test_report.py through the
session's temporary folder). Lowered and degraded runs are edited copies of it, said where made.
"""
from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from evalkit.cli import main

ROOT = Path(__file__).resolve().parent.parent
BASELINE = ROOT / "results" / "baseline"
MODEL_DIR = "sentence-transformers__all-MiniLM-L6-v2"


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


def copy_results(run: Path, dest: Path) -> Path:
    """A results folder holding a copy of `run` (result and per-item files); the copy's run folder."""
    folder = dest / run.parent.name / run.name
    folder.mkdir(parents=True)
    for f in run.glob("*.json"):
        shutil.copy(f, folder / f.name)
    return folder


def set_score(path: Path, delta: float) -> float:
    doc = json.loads(path.read_text())
    entry = doc["scores"]["test"][0]
    entry["main_score"] = round(entry["main_score"] + delta, 6)
    path.write_text(json.dumps(doc))
    return entry["main_score"]


def junit(path: Path) -> ET.Element:
    root = ET.parse(path).getroot()  # valid XML or this raises
    assert root.tag == "testsuites"
    return root


def test_the_committed_baseline_is_the_smoke_suite():
    (run,) = [p.parent for p in BASELINE.glob(f"{MODEL_DIR}/*/STSBenchmark.json")]
    doc = json.loads((run / "STSBenchmark.json").read_text())
    assert round(100 * doc["scores"]["test"][0]["main_score"], 2) == 82.03  # MANIFEST.md's reference
    assert doc["evalkit"]["model"] == "all-MiniLM-L6-v2"
    items = json.loads((run / "STSBenchmark.items.json").read_text())
    assert items["splits"]["test/default"]["matches"] and items["splits"]["test/default"]["n"] == 1379
    assert not list(BASELINE.rglob(".lock"))


def test_a_fresh_smoke_run_passes_the_gate(tmp_path_factory, tmp_path, capsys):
    run = smoke_run(tmp_path_factory)
    xml = tmp_path / "regress.xml"
    rc = main(["regress", "--baseline", str(BASELINE), "--results", str(run.parent.parent), "--junit", str(xml)])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "no regression in 1 tasks" in out and "| STSBenchmark | test/default | 82.03 | 82.03 |" in out
    assert "| not significant (p=" in out  # same model, same data: the per-item scores agree
    root = junit(xml)
    cases = root.findall(".//testcase")
    assert [c.get("name") for c in cases] == ["STSBenchmark"] and root.find(".//failure") is None


def test_a_score_lowered_by_half_a_point_fails_and_names_the_task(tmp_path_factory, tmp_path, capsys):
    run = copy_results(smoke_run(tmp_path_factory), tmp_path / "results")
    set_score(run / "STSBenchmark.json", -0.005)  # 0.5 points of main score x100
    xml = tmp_path / "regress.xml"
    rc = main(["regress", "--baseline", str(BASELINE), "--results", str(tmp_path / "results"), "--junit", str(xml)])
    cap = capsys.readouterr()
    assert rc == 1
    assert "1 of 1 tasks regressed" in cap.out and "STSBenchmark test/default: 82.03 -> 81.53 (-0.50 points, tolerance 0.1)" in cap.out
    assert "evalkit: regression: STSBenchmark" in cap.err
    # the per-item scores still say 82.03: they are not taken as evidence for the edited score
    assert "do not reproduce its result" in cap.out
    (case,) = junit(xml).findall(".//testcase")
    assert case.get("name") == "STSBenchmark" and case.find("failure") is not None
    assert "-0.50 points" in case.find("failure").get("message")
    # a looser tolerance lets it through
    assert main(["regress", "--baseline", str(BASELINE), "--results", str(tmp_path / "results"), "--tolerance", "0.6"]) == 0


def test_a_real_drop_gets_a_significance_test(tmp_path_factory, tmp_path, capsys):
    """A degraded run made by adding noise to the run's per-item cosine similarities and rescoring
    it with the same Spearman correlation (result and per-item files kept consistent)."""
    from scipy.stats import spearmanr

    run = copy_results(smoke_run(tmp_path_factory), tmp_path / "results")
    items = json.loads((run / "STSBenchmark.items.json").read_text())
    rec = items["splits"]["test/default"]
    rng = np.random.default_rng(0)
    rec["pred"] = (np.asarray(rec["pred"]) + rng.normal(0, 0.1, rec["n"])).tolist()
    s = float(spearmanr(rec["pred"], rec["gold"])[0])
    rec["recomputed"] = rec["main_score"] = s
    (run / "STSBenchmark.items.json").write_text(json.dumps(items))
    doc = json.loads((run / "STSBenchmark.json").read_text())
    doc["scores"]["test"][0]["main_score"] = s
    (run / "STSBenchmark.json").write_text(json.dumps(doc))
    rc = main(["regress", "--baseline", str(BASELINE), "--results", str(tmp_path / "results")])
    out = capsys.readouterr().out
    assert rc == 1 and "FAIL" in out
    assert "| significant (p=" in out and "paired bootstrap (spearman), 1379 items" in out


def test_junit_has_one_testcase_per_task_and_missing_tasks_fail(tmp_path_factory, tmp_path, capsys):
    """A three-task baseline made from copies of the smoke result (STS12/STS13 are renamed copies)."""
    run = smoke_run(tmp_path_factory)
    base = copy_results(run, tmp_path / "baseline")
    cur = copy_results(run, tmp_path / "results")
    for folder in (base, cur):
        for name in ("STS12", "STS13"):
            doc = json.loads((folder / "STSBenchmark.json").read_text())
            doc["task_name"] = name
            (folder / f"{name}.json").write_text(json.dumps(doc))
    set_score(cur / "STS12.json", -0.002)  # -0.2: beyond the 0.1 tolerance
    set_score(cur / "STS13.json", -0.0005)  # -0.05: within it
    xml = tmp_path / "r.xml"
    assert main(["regress", "--baseline", str(tmp_path / "baseline"), "--results", str(tmp_path / "results"), "--junit", str(xml)]) == 1
    out = capsys.readouterr().out
    assert "1 of 3 tasks regressed" in out
    root = junit(xml)
    cases = {c.get("name"): c for c in root.findall(".//testcase")}
    assert set(cases) == {"STS12", "STS13", "STSBenchmark"}
    assert cases["STS12"].find("failure") is not None and cases["STS13"].find("failure") is None
    assert root.find("testsuite").get("tests") == "3" and root.find("testsuite").get("failures") == "1"
    # a task the current run lacks is a failure too
    (cur / "STS13.json").unlink()
    assert main(["regress", "--baseline", str(tmp_path / "baseline"), "--results", str(tmp_path / "results"), "--junit", str(xml)]) == 1
    assert "no current score for STS13" in capsys.readouterr().out
    assert junit(xml).find(".//testcase[@name='STS13']/failure") is not None


@pytest.mark.parametrize("form", ["published-json", "result-file", "run-folder"])
def test_other_baseline_forms(form, tmp_path_factory, tmp_path, capsys):
    run = smoke_run(tmp_path_factory)
    if form == "published-json":
        baseline = tmp_path / "published.json"
        baseline.write_text(json.dumps({"STSBenchmark": {MODEL_DIR: {"test/default": {"main_score": 82.03}}}}))
    elif form == "result-file":
        baseline = next(BASELINE.glob(f"{MODEL_DIR}/*/STSBenchmark.json"))
    else:
        baseline = next(BASELINE.glob(f"{MODEL_DIR}/*"))
    assert main(["regress", "--baseline", str(baseline), "--results", str(run.parent.parent)]) == 0
    assert "no regression in 1 tasks" in capsys.readouterr().out


def test_bad_baselines_are_one_line_errors(tmp_path, capsys):
    assert main(["regress", "--baseline", str(tmp_path / "none")]) == 2
    (tmp_path / "empty").mkdir()
    assert main(["regress", "--baseline", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(e.startswith("evalkit: error: baseline") for e in err)
