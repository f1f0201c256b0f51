"""The run plan (issue 14): units for every combination, checked before anything is written; the one
loop on either executor (in this process, on Ray) writing the same files; progress lines; the dry run."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from evalkit import EvalkitError
from evalkit.cli import main
from tests.conftest import write_jsonl

WORDS = "bank card king queen music film river gene cell protein city model".split()
INSTR = "Given a question, retrieve passages that answer it"


def retrieval_folder(root: Path, name: str = "OwnRet") -> Path:
    """A user's own retrieval task with a few-shot examples file."""
    d = root / name
    docs = [f"the {w} of the city is good {i}" for i, w in enumerate(WORDS * 3)]
    write_jsonl(d / "corpus.jsonl", [{"_id": f"d{i}", "title": "", "text": t} for i, t in enumerate(docs)])
    write_jsonl(d / "queries.jsonl", [{"_id": f"q{i}", "text": f"where is the {t.split()[1]}"} for i, t in enumerate(docs[:12])])
    (d / "qrels").mkdir(parents=True, exist_ok=True)
    (d / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(f"q{i}\td{i}\t1\n" for i in range(12)))
    write_jsonl(d / "examples.jsonl", [{"query": f"what about the {w}", "response": f"the {w} is here"} for w in WORDS[:4]])
    (d / "task.yaml").write_text(f"name: {name}\ntype: Retrieval\ninstruction: {INSTR}\nfewshot: {{file: examples.jsonl}}\n")
    return d


def sts_folder(root: Path, name: str = "OwnSts") -> Path:
    d = root / name
    write_jsonl(d / "test.jsonl", [{"sentence1": f"the bank {i}", "sentence2": f"the card {i % 3}", "score": float(i % 6)} for i in range(12)])
    (d / "task.yaml").write_text(f"name: {name}\ntype: STS\n")
    return d


def result_files(root: Path) -> dict[str, dict]:
    """{path under root: scores} of every result and run file."""
    out = {}
    for p in sorted(root.rglob("*.json")):
        if p.name.endswith(".items.json"):
            continue
        doc = json.loads(p.read_text())
        out[str(p.relative_to(root))] = doc.get("scores") if "scores" in doc else doc.get("run")
    return out


# ----------------------------------------------------------------------------- plans as data
def test_units_for_fewshot_and_a_reranker(tmp_path, tiny_bert, tiny_cross_encoder):
    from evalkit.fewshot import Setting
    from evalkit.models.catalog import get_spec
    from evalkit.plan import Settings, make_plan
    from evalkit.tasks import task_from_folder

    ret, sts = task_from_folder(retrieval_folder(tmp_path)), task_from_folder(sts_folder(tmp_path))
    settings = Settings(output=tmp_path / "out")
    plan = make_plan(get_spec(str(tiny_bert)), [ret, sts], settings, fewshot=[Setting(0), Setting(2, "first_n")],
                     reranker=get_spec(str(tiny_cross_encoder)), top_k=5, check_data=False)  # OwnSts has no pool: not read here
    got = [(u.role, u.task.name, u.variant) for u in plan.units]
    assert got == [
        ("embed", "OwnRet", None), ("embed", "OwnSts", None),
        ("embed", "OwnRet", "fewshot-2-first_n"), ("embed", "OwnSts", "fewshot-2-first_n"),
        ("rerank", "OwnRet", f"rerank-{plan.units[0].model.spec.result_name}-top5"),
        ("rerank", "OwnRet", f"rerank-{plan.units[0].model.spec.result_name}-fewshot-2-first_n-top5"),
    ]
    first, rr = plan.units[2], plan.units[5]
    assert rr.first_stage == first and rr.model.kind == "reranker"  # detected from the folder's config
    assert rr.run_file() == first.folder / "OwnRet.run_top5.json"
    assert first.folder == tmp_path / "out" / first.model.spec.result_name / first.model.revision / "experiments" / "fewshot-2-first_n"
    assert plan.notes and "OwnSts (STS) gets the embedder alone" in plan.notes[0]
    assert not (tmp_path / "out").exists()  # a plan writes nothing


def test_kinds_detected_or_given(tmp_path, tiny_bert, tiny_cross_encoder, tiny_decoder):
    from evalkit.models.catalog import get_spec
    from evalkit.plan import resolve_model

    assert resolve_model(get_spec(str(tiny_bert))).kind == "embedder"
    assert resolve_model(get_spec(str(tiny_cross_encoder))).kind == "reranker"
    assert resolve_model(get_spec(str(tiny_decoder)), role="rerank").kind == "llm-reranker"
    icl = resolve_model(get_spec(str(tiny_decoder)), "icl-embedder")
    assert icl.kind == "icl-embedder" and icl.spec.pooling == "last_token"
    with pytest.raises(EvalkitError, match="unknown --kind"):
        resolve_model(get_spec(str(tiny_bert)), "poem")


@pytest.mark.parametrize("extra,msg", [
    (["--reranker", "all-MiniLM-L6-v2"], "not a reranker"),
    (["--first-stage", "all-MiniLM-L6-v2"], "--first-stage names the embedder of a reranker"),
    (["--reranker", "bge-reranker-base", "--first-stage", "all-MiniLM-L6-v2"], "not both"),
    (["--top-k", "0", "--reranker", "bge-reranker-base"], "--top-k must be a positive integer"),
    (["--ray-workers", "2"], "add --ray"),
    (["--kind", "reranker", "--fewshot", "2"], "add --first-stage EMBEDDER"),
    (["--m3-mode", "sparse"], "has no M3 heads"),
    (["--m3-mode", "hybrid:1,2"], "hybrid takes three weights"),
    (["--m3-mode", "bm25"], "unknown M3 mode"),
    (["--m3-mode", "hybrid:0,0,0"], "positive sum"),
    (["--m3-mode", "sparse", "--kind", "reranker"], "is a reranker"),
])
def test_combinations_that_cannot_work_are_one_line_before_anything_runs(extra, msg, tmp_path, tiny_bert, capsys):
    out = tmp_path / "out"
    rc = main(["run", "--model", str(tiny_bert), "--tasks", str(retrieval_folder(tmp_path)), "--output", str(out), *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and msg in err[0], err
    assert not out.exists()


# ----------------------------------------------------------------------------- one loop, any executor
def test_fewshot_compare_and_rerank_compose_locally_and_on_ray(tmp_path, tiny_cross_encoder, ray_local, capsys):
    """The issue's command on a user's own retrieval folder: the zero-shot and 2-shot first stages,
    both reranked; the same command on Ray writes the same files with the same scores."""
    task = retrieval_folder(tmp_path)
    args = ["run", "--model", "all-MiniLM-L6-v2", "--tasks", str(task), "--fewshot-compare", "0,2", "--reranker", str(tiny_cross_encoder),
            "--top-k", "10", "--cache-dir", str(tmp_path / "cache")]
    assert main([*args, "--output", str(tmp_path / "local")]) == 0
    cap = capsys.readouterr()
    local = result_files(tmp_path / "local")
    names = sorted(Path(k).parent.name + "/" + Path(k).name for k in local)
    rr = "rerank-sentence-transformers__all-MiniLM-L6-v2"
    assert names == sorted([
        "8b3219a92973c328a8e22fadcfa821b5dc75636a/OwnRet.json", "8b3219a92973c328a8e22fadcfa821b5dc75636a/OwnRet.run_top10.json",
        "fewshot-2-random-s42/OwnRet.json", "fewshot-2-random-s42/OwnRet.run_top10.json",
        f"{rr}-top10/OwnRet.json", f"{rr}-fewshot-2-random-s42-top10/OwnRet.json",
    ])
    # the closing table: every unit, with the few-shot delta and the rerank gain
    rows = [line.split() for line in cap.out.splitlines() if line.startswith("OwnRet")]
    assert len(rows) == 4
    zero, two = float(rows[0][2]), float(rows[1][3])
    assert rows[1][2] == "[fewshot-2-random-s42]" and float(rows[1][-1 if rows[1][-1] != "-" else -2]) == pytest.approx(two - zero, abs=0.011)
    assert float(rows[3][-1]) == pytest.approx(float(rows[3][3]) - two, abs=0.011)  # gain over its own (2-shot) first stage
    fs_doc = json.loads(next((tmp_path / "local").rglob(f"{rr}-fewshot-2-random-s42-top10/OwnRet.json")).read_text())["evalkit"]
    assert fs_doc["first_stage"]["variant"] == "fewshot-2-random-s42" and set(fs_doc["seconds"]) >= {"total", "data", "encode", "scoring"}

    assert main([*args, "--output", str(tmp_path / "ray"), "--ray", "local", "--ray-workers", "2"]) == 0
    capsys.readouterr()
    assert result_files(tmp_path / "ray") == local  # file by file, the same scores and the same candidates


def test_icl_model_with_examples_locally_and_on_ray(tmp_path, tiny_decoder, ray_local, capsys):
    task = retrieval_folder(tmp_path)
    args = ["run", "--model", str(tiny_decoder), "--kind", "icl-embedder", "--tasks", str(task), "--fewshot", "2", "--cache-dir", str(tmp_path / "c")]
    assert main([*args, "--output", str(tmp_path / "local")]) == 0
    assert main([*args, "--output", str(tmp_path / "ray"), "--ray", "local", "--ray-workers", "1"]) == 0  # one unit: one actor
    capsys.readouterr()
    local = result_files(tmp_path / "local")
    assert len(local) == 1 and result_files(tmp_path / "ray") == local
    doc = json.loads(next((tmp_path / "ray").rglob("OwnRet.json")).read_text())["evalkit"]
    assert doc["fewshot"]["input_format"] == "icl" and doc["fewshot"]["k"] == 2 and doc["kind"] == "icl-embedder" and "ray" in doc


def test_a_failed_first_stage_fails_its_reranked_unit(tmp_path, tiny_bert, tiny_cross_encoder):
    """Data that break after planning (the plan read them; the unit's own read fails): the first
    stage fails with one line, the reranked unit fails with it, nothing half-written is left."""
    from evalkit.models.catalog import get_spec
    from evalkit.plan import Settings, make_plan
    from evalkit.run import execute
    from evalkit.tasks import task_from_folder

    d = retrieval_folder(tmp_path)
    plan = make_plan(get_spec(str(tiny_bert)), [task_from_folder(d)], Settings(output=tmp_path / "out"), reranker=get_spec(str(tiny_cross_encoder)))
    (d / "corpus.jsonl").write_text("")
    first, reranked = execute(plan)
    assert first.status == "failed" and "corpus" in first.message
    assert reranked.status == "failed" and reranked.message.startswith("first stage failed:")
    assert not list((tmp_path / "out").rglob("*.json"))


# ----------------------------------------------------------------------------- progress and the dry run
@pytest.mark.real
def test_cold_sts12_prints_progress_with_an_eta(killed_offline_en):
    """stderr is not a terminal: plain progress lines naming the task, with tokens/s and an ETA (the
    offline-en fixture runs STS12 cold on its own first, with a line every 2 s of silence)."""
    run = killed_offline_en["cold_sts12"]
    lines = [line for line in run["stderr"].splitlines() if "STS12: encoding" in line]
    assert len(lines) >= 2, run["stderr"]
    for line in lines:
        assert re.search(r"STS12: encoding \d+/\d+ texts, [\d,]+ tokens/s, ETA (\d+m)?\d+s", line), line
    assert re.search(r"^STS12 .* 72\.37", run["stdout"], re.M)  # and the score is mteb's


@pytest.mark.real
def test_dry_run_estimates_and_writes_nothing(tmp_path, capsys, killed_offline_en):
    """offline-en against a copy of the offline-en run's cache: counts, what is cached already, tokens
    and a measured rate for the rest; nothing under --output and the cache unchanged."""
    import shutil
    import sqlite3

    from tests.offline_run import FULL, SCIFACT

    out, cache = tmp_path / "out", tmp_path / "c"
    shutil.copytree(killed_offline_en["cache"], cache)

    def digest():
        with sqlite3.connect(cache / "embeddings.sqlite3") as db:
            return db.execute("SELECT ns, count(*), sum(length(vec)) FROM vectors GROUP BY ns").fetchall()

    before = digest()
    assert main(["run", "--model", "all-MiniLM-L6-v2", "--suite", "offline-en", "--output", str(out), "--cache-dir", str(cache), "--dry-run"]) == 0
    cap = capsys.readouterr()
    assert not out.exists() and digest() == before
    from evalkit.tasks import Registry

    assert re.search(rf"^plan: {len(Registry().suite('offline-en'))} units", cap.out, re.M)
    n = SCIFACT["docs"] + 300
    assert re.search(rf"all-MiniLM-L6-v2 SciFact\s+{n}\s+{n}\s+{n}\s+0\s+-\s+0s", cap.out), cap.out  # all cached
    assert FULL or re.search(r"all-MiniLM-L6-v2 TwitterURLCorpus\s+\d+\s+\d+\s+0\s+[1-9][\d,]+\s+-\s+\S+", cap.out), cap.out  # not in CI's run
    assert re.search(r"all-MiniLM-L6-v2: [\d,]+ tokens/s measured here", cap.out)
    assert re.search(r"estimated encoding time: (\d+h)?\d+m\d+s", cap.out)
