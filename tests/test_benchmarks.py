"""mteb's benchmarks by name (issue 25, part 1): `--suite "MTEB(eng, v2)"` is mteb's own selection of
text tasks (versions, subsets, splits), registered and mirrored tasks keeping their data and pools."""
from __future__ import annotations

import logging
from pathlib import Path

import pytest

from evalkit import EvalkitError
from evalkit.tasks import Registry


def test_a_benchmark_by_name_is_mtebs_selection():
    import mteb

    bench = mteb.get_benchmark("MTEB(eng, v2)")
    specs = Registry().suite("MTEB(eng, v2)")
    assert [s.name for s in specs] == [t.metadata.name for t in bench.tasks] and len(specs) == 41
    by_name = {s.name: s for s in specs}
    for t in bench.tasks:
        s = by_name[t.metadata.name]
        assert s.type == t.metadata.type and s.eval_splits == list(t.eval_splits)
        assert s.subsets == (list(t.hf_subsets) if t.metadata.is_multilingual else None)
    # the tasks mirrored in the data folder run from it, as mteb's task; the rest are the hub's
    local = sorted(s.name for s in specs if s.source == "local")
    assert {"STS12", "STS13", "STS14", "STSBenchmark", "Banking77Classification", "TweetSentimentExtractionClassification",
            "AmazonCounterfactualClassification", "TwitterURLCorpus"} <= set(local)
    assert by_name["AmazonCounterfactualClassification"].subsets == ["en"]
    assert by_name["Banking77Classification"].fewshot == {"split": "train"}  # tasks/offline.yaml's pool kept
    assert "STS22.v2" in by_name and by_name["STS22.v2"].source == "hub"


def test_non_text_tasks_are_left_out_in_one_line(caplog):
    with caplog.at_level(logging.WARNING, logger="evalkit"):
        specs = Registry().suite("MIEB(eng)")
    assert all(s.type for s in specs) and len(specs) == 1
    (line,) = [r.getMessage() for r in caplog.records if "left out" in r.getMessage()]
    assert line.startswith("mteb benchmark MIEB(eng): 124 tasks are not text alone, left out: ")


def test_unknown_suite_names_both_kinds():
    with pytest.raises(EvalkitError, match=r"unknown suite 'MTEB\(eng, v9\)'.*mteb.get_benchmarks\(\)"):
        Registry().suite("MTEB(eng, v9)")


def test_list_suites_shows_mtebs_benchmarks(capsys):
    from evalkit.cli import main

    assert main(["list", "suites"]) == 0
    out = capsys.readouterr().out
    assert "offline-en" in out and "MTEB(eng, v2)     41 tasks" in out


def test_dry_run_of_a_benchmark_names_each_task_without_data_in_one_line(tiny_bert, shared_data, capsys, monkeypatch, tmp_path):
    """MTEB(eng, v2) here: its 41 units planned, the mirrored tasks estimated (two of them here), each task whose data
    cannot be had (hub only, the hub unreachable) one line; with the hub offline (HF_HUB_OFFLINE=1, the
    HF cache empty) each says its data could not be loaded. No traceback, nothing written."""
    from evalkit.cli import main

    root = tmp_path / "data"  # two of the eight mirrored tasks: their data are read, the rest say why not
    root.mkdir()
    for name in ("STS12", "STSBenchmark"):
        (root / name).symlink_to(Path(shared_data) / name, target_is_directory=True)
    monkeypatch.setenv("EVALKIT_DATA", str(root))
    for offline in ("0", "1"):
        monkeypatch.setenv("HF_HUB_OFFLINE", offline)
        assert main(["run", "--model", str(tiny_bert), "--suite", "MTEB(eng, v2)", "--dry-run", "--output", str(tmp_path / "r")]) == 0
        cap = capsys.readouterr()
        assert "Traceback" not in cap.out + cap.err and not (tmp_path / "r").exists()
        assert cap.out.startswith("plan: 41 units")
        missing = [line for line in cap.out.splitlines() if line.rstrip().endswith("no data")]
        head = next(line for line in cap.out.splitlines() if "cannot be read here" in line)
        reasons = cap.out.split(head, 1)[1].splitlines()[1:len(missing) + 1]
        assert head.startswith(f"{len(missing)} tasks cannot be read here") and len(missing) == 41 - 2
        assert all(r.startswith("  task ") and ("hub" in r) for r in reasons), reasons
        estimated = [line.split()[1] for line in cap.out.splitlines()
                     if line.startswith(f"{tiny_bert.name} ") and not line.rstrip().endswith("no data")]
        assert sorted(estimated) == ["STS12", "STSBenchmark"]
