"""Real model, real data, real mteb: the offline suites give the scores mteb 2.26 gives on the same
files (../shared/data/MANIFEST.md), and a run killed at random moments resumes to the same scores.

One session-scoped run of offline-en with all-MiniLM-L6-v2 (fp32, cold embedding cache) is killed
with SIGKILL at several random moments and resumed each time; every test here reads its results.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from evalkit.results import main_scores, read_result

EVALKIT = [sys.executable, "-m", "evalkit.cli"]
# "mteb 2.26 here" column of ../shared/data/MANIFEST.md (all-MiniLM-L6-v2, fp32, CPU), x100
MTEB_226 = {
    "STSBenchmark": {"test/default": 82.03},
    "STS12": {"test/default": 72.37},
    "STS13": {"test/default": 80.60},
    "STS14": {"test/default": 75.59},
    "STS16": {"test/default": 78.99},
    "SciFact": {"test/default": 64.51},
    "Banking77Classification": {"test/default": 80.04},
    "AmazonCounterfactualClassification": {"validation/en": 61.46, "test/en": 63.64},
    "TweetSentimentExtractionClassification": {"test/default": 54.04},
    "SIB200Classification": {"test/eng_Latn": 72.16},
    "SIB200ClusteringS2S": {"test/eng_Latn": 42.45},
    "TwitterURLCorpus": {"test/default": 84.70},
    "STSB": {"test/default": 37.80},
    "LCQMC": {"test/default": 23.85},
    "BQ": {"test/default": 23.84},
    "AFQMC": {"validation/default": 8.59},
    "Ocnli": {"validation/default": 53.28},
}
OFFLINE_EN = [
    "STSBenchmark", "STS12", "STS13", "STS14", "STS16", "SciFact", "Banking77Classification",
    "AmazonCounterfactualClassification", "TweetSentimentExtractionClassification", "SIB200Classification",
    "SIB200ClusteringS2S", "TwitterURLCorpus",
]
OFFLINE_ZH = ["STSB", "LCQMC", "BQ", "AFQMC", "Ocnli"]
pytestmark = pytest.mark.slow


def run_cli(*args, env=None, check=True):
    p = subprocess.run([*EVALKIT, *args], capture_output=True, text=True, env={**os.environ, **(env or {})})
    if check and p.returncode != 0:
        raise AssertionError(f"evalkit {' '.join(args)} failed ({p.returncode}):\n{p.stderr[-3000:]}")
    return p


def results_by_task(folder: Path) -> dict[str, dict]:
    out = {}
    for f in folder.rglob("*.json"):
        doc = read_result(f)
        if doc is not None and "experiments" not in f.parts:
            out[doc["task_name"]] = doc
    return out


def assert_no_half_written(folder: Path) -> None:
    for f in folder.rglob("*.json"):
        assert read_result(f) is not None, f"{f} is not a complete result"


@pytest.fixture(scope="session")
def killed_offline_en(tmp_path_factory):
    """offline-en, killed with SIGKILL at 3 random moments and resumed until it finishes."""
    base = tmp_path_factory.mktemp("offline-en")
    out, cache = base / "results", base / "cache"
    seed = int(os.environ.get("EVALKIT_KILL_SEED", time.time_ns() % 10_000))
    rng = random.Random(seed)
    kills = []
    args = ["run", "--model", "all-MiniLM-L6-v2", "--suite", "offline-en", "--output", str(out), "--cache-dir", str(cache)]
    for _ in range(3):
        delay = rng.uniform(6, 75)
        p = subprocess.Popen([*EVALKIT, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            p.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
            kills.append(round(delay, 1))
        assert_no_half_written(out)
    final = run_cli(*args)
    print(f"\nkill seed {seed}: killed after {kills} s; final run:\n{final.stderr}")
    return {"out": out, "cache": cache, "kills": kills, "seed": seed, "final_stderr": final.stderr}


def test_offline_en_equals_mteb_226(killed_offline_en):
    res = results_by_task(killed_offline_en["out"])
    assert sorted(res) == sorted(OFFLINE_EN)
    for task in OFFLINE_EN:
        got = {k: 100 * v for k, v in main_scores(res[task]).items()}
        assert got.keys() == MTEB_226[task].keys(), task
        for k, want in MTEB_226[task].items():
            assert abs(got[k] - want) <= 0.05, (task, k, got[k], want)


def test_result_files_are_mteb_task_results_with_provenance(killed_offline_en):
    from mteb import TaskResult

    for f in killed_offline_en["out"].rglob("*.json"):
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
    run_cli("run", "--model", "all-MiniLM-L6-v2", "--suite", "offline-en", "--output", str(clean), "--cache-dir", str(cache))
    a, b = results_by_task(killed_offline_en["out"]), results_by_task(clean)
    assert a.keys() == b.keys()
    for task in a:
        assert main_scores(a[task]) == main_scores(b[task]), task


def test_finished_tasks_are_skipped_and_warm_runs_do_not_load_the_model(killed_offline_en, tmp_path):
    p = run_cli("run", "--model", "all-MiniLM-L6-v2", "--suite", "offline-en", "--output", str(killed_offline_en["out"]),
                "--cache-dir", str(killed_offline_en["cache"]))
    assert p.stderr.count("already done") == len(OFFLINE_EN)
    # a warm re-run with --overwrite gets every vector from the cache: nothing is encoded
    p = run_cli("run", "--model", "all-MiniLM-L6-v2", "--tasks", "STSBenchmark,SIB200ClusteringS2S", "--overwrite",
                "--output", str(tmp_path / "warm"), "--cache-dir", str(killed_offline_en["cache"]), env={"EVALKIT_DEBUG": "1"})
    assert "0 texts encoded" in p.stderr and "loading " not in p.stderr


def test_offline_zh_runs_and_equals_mteb_226(tmp_path):
    out = tmp_path / "zh"
    run_cli("run", "--model", "all-MiniLM-L6-v2", "--suite", "offline-zh", "--output", str(out), "--cache-dir", str(tmp_path / "c"))
    res = results_by_task(out)
    assert sorted(res) == sorted(OFFLINE_ZH)
    for task in OFFLINE_ZH:
        got = {k: 100 * v for k, v in main_scores(res[task]).items()}
        for k, want in MTEB_226[task].items():
            assert abs(got[k] - want) <= 0.05, (task, k, got[k], want)


def test_user_task_folder_equals_the_registered_task(tmp_path, shared_data):
    """A user's own folder holding STSBenchmark's data, borrowing mteb's STSBenchmark settings,
    scores exactly like the registered task; without `mteb_task` the generic STS evaluator agrees too."""
    for name, extra in (("Mine", "mteb_task: STSBenchmark\n"), ("MineGeneric", "")):
        d = tmp_path / name
        d.mkdir()
        shutil.copy(shared_data / "STSBenchmark" / "test.jsonl", d / "test.jsonl")
        (d / "task.yaml").write_text(f"name: {name}\ntype: STS\n{extra}")
    out = tmp_path / "r"
    run_cli("run", "--model", "all-MiniLM-L6-v2", "--tasks", f"STSBenchmark,{tmp_path / 'Mine'},{tmp_path / 'MineGeneric'}",
            "--output", str(out), "--cache-dir", str(tmp_path / "c"))
    res = results_by_task(out)
    want = MTEB_226["STSBenchmark"]["test/default"]
    for task in ("STSBenchmark", "Mine", "MineGeneric"):
        assert abs(100 * main_scores(res[task])["test/default"] - want) <= 0.05, task
