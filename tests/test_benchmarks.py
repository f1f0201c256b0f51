"""mteb's benchmarks by name (issue 25, part 1): `--suite "MTEB(eng, v2)"` is mteb's own selection of
text tasks (versions, subsets, splits), registered and mirrored tasks keeping their data and pools."""
from __future__ import annotations

import logging

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
    assert line.startswith("MIEB(eng): 124 tasks are not text alone, left out: ")


def test_unknown_suite_names_both_kinds():
    with pytest.raises(EvalkitError, match=r"unknown suite 'MTEB\(eng, v9\)'.*mteb.get_benchmarks\(\)"):
        Registry().suite("MTEB(eng, v9)")


def test_list_suites_shows_mtebs_benchmarks(capsys):
    from evalkit.cli import main

    assert main(["list", "suites"]) == 0
    out = capsys.readouterr().out
    assert "offline-en" in out and "MTEB(eng, v2)     41 tasks" in out
