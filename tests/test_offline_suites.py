"""Real model, real data, real mteb: the offline suites give the scores mteb 2.26 gives on the same
files (../shared/data/MANIFEST.md), and a run killed at random moments resumes to the same scores.

One session-scoped run of offline-en with all-MiniLM-L6-v2 (fp32, cold embedding cache) is killed
with SIGKILL at several random moments and resumed each time; every test here reads its results.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from evalkit.results import main_scores
from tests.offline_run import EN_TASKS, FULL, MTEB_226_HERE, ZH_TASKS, result_files, results_by_task, run_in_process

pytestmark = [pytest.mark.slow, pytest.mark.real]


def test_offline_en_equals_mteb_226(killed_offline_en):
    res = results_by_task(killed_offline_en["out"])
    assert sorted(res) == sorted(EN_TASKS)
    for task in EN_TASKS:
        got = {k: 100 * v for k, v in main_scores(res[task]).items()}
        assert got.keys() == MTEB_226_HERE[task].keys(), task
        for k, want in MTEB_226_HERE[task].items():
            assert abs(got[k] - want) <= 0.05, (task, k, got[k], want)


def test_result_files_are_mteb_task_results_with_provenance(killed_offline_en):
    from mteb import TaskResult

    for f in result_files(killed_offline_en["out"]):
        tr = TaskResult.from_disk(f)
        doc = json.loads(f.read_text())
        meta = doc["evalkit"]
        assert meta["model_revision"] == "8b3219a92973c328a8e22fadcfa821b5dc75636a"
        assert meta["seed"] == 42 and meta["dtype"] == "fp32"
        assert {"mteb", "torch", "transformers"} <= set(meta["versions"])
        assert tr.task_name == doc["task_name"]
    # mteb's ResultCache layout: <model>/<revision>/<Task>.json
    assert (killed_offline_en["out"] / "sentence-transformers__all-MiniLM-L6-v2" / "8b3219a92973c328a8e22fadcfa821b5dc75636a" / "SciFact.json").is_file()


def test_resumed_run_equals_a_clean_run(killed_offline_en, tmp_path):
    """A clean, uninterrupted run (vectors from a copy of the cache, so only scoring is redone) gives
    identical main scores: resume changes nothing, and two runs with the same arguments agree."""
    cache = tmp_path / "cache"
    shutil.copytree(killed_offline_en["cache"], cache)
    clean = tmp_path / "clean"
    quick = [t for t in EN_TASKS if t.startswith(("STS", "SIB200", "SciFact", "Amazon"))]
    # the CLI as a user runs it (not in debug mode), in a process that then says which heavy packages it imported
    probe = ("import sys; from evalkit.cli import main; rc = main(sys.argv[1:]); "
             "print('imported:', *[m for m in ('sentence_transformers', 'transformers') if m in sys.modules], file=sys.stderr); sys.exit(rc)")
    p = subprocess.run([sys.executable, "-c", probe, "run", "--model", "all-MiniLM-L6-v2", "--tasks", ",".join(quick), "--output", str(clean),
                        "--cache-dir", str(cache)], capture_output=True, text=True, env={k: v for k, v in os.environ.items() if k != "EVALKIT_DEBUG"})
    assert p.returncode == 0, p.stderr[-3000:]
    a, b = results_by_task(killed_offline_en["out"]), results_by_task(clean)
    assert sorted(b) == sorted(quick)
    for task in b:
        assert main_scores(a[task]) == main_scores(b[task]), task
    # every vector came from the cache: nothing encoded, and transformers never even imported, so no
    # model loaded; nor sentence-transformers, whose classes mteb.evaluate asks about
    # (evalkit.evaluation.avoid_sentence_transformers_import), nor transformers to quiet it (cli._quiet)
    assert p.stderr.count("(0 texts encoded") == len(quick), p.stderr[-3000:]
    assert p.stderr.rstrip().endswith("imported:"), p.stderr[-300:]


def test_finished_tasks_are_skipped(killed_offline_en, capsys):
    from evalkit.cli import main

    assert main(["run", "--model", "all-MiniLM-L6-v2", "--tasks", ",".join(EN_TASKS), "--output", str(killed_offline_en["out"]),
                 "--cache-dir", str(killed_offline_en["cache"])]) == 0
    assert capsys.readouterr().err.count("already done") == len(EN_TASKS)


def test_offline_zh_runs_and_equals_mteb_226(tmp_path):
    out = tmp_path / "zh"
    what = ["--suite", "offline-zh"] if FULL else ["--tasks", ",".join(ZH_TASKS)]
    run_in_process("run", "--model", "all-MiniLM-L6-v2", *what, "--output", str(out), "--cache-dir", str(tmp_path / "c"))
    res = results_by_task(out)
    assert sorted(res) == sorted(ZH_TASKS)
    for task in ZH_TASKS:
        got = {k: 100 * v for k, v in main_scores(res[task]).items()}
        for k, want in MTEB_226_HERE[task].items():
            assert abs(got[k] - want) <= 0.05, (task, k, got[k], want)


def test_user_task_folder_equals_the_registered_task(tmp_path, shared_data, killed_offline_en):
    """A user's own folder holding STSBenchmark's data, borrowing mteb's STSBenchmark settings,
    scores exactly like the registered task; without `mteb_task` the generic STS evaluator agrees too.
    The vectors come from a copy of the offline-en cache (the same texts, the same model)."""
    shutil.copytree(killed_offline_en["cache"], tmp_path / "c")
    for name, extra in (("Mine", "mteb_task: STSBenchmark\n"), ("MineGeneric", "")):
        d = tmp_path / name
        d.mkdir()
        shutil.copy(shared_data / "STSBenchmark" / "test.jsonl", d / "test.jsonl")
        (d / "task.yaml").write_text(f"name: {name}\ntype: STS\n{extra}")
    out = tmp_path / "r"
    run_in_process("run", "--model", "all-MiniLM-L6-v2", "--tasks", f"STSBenchmark,{tmp_path / 'Mine'},{tmp_path / 'MineGeneric'}",
                   "--output", str(out), "--cache-dir", str(tmp_path / "c"))
    res = results_by_task(out)
    want = MTEB_226_HERE["STSBenchmark"]["test/default"]
    for task in ("STSBenchmark", "Mine", "MineGeneric"):
        assert abs(100 * main_scores(res[task])["test/default"] - want) <= 0.05, task
