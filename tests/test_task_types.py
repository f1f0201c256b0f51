"""Every MTEB task type from a folder (issue 16): reranking folders in both layouts of
../shared/data/MANIFEST.md, summarization folders, the ClusTREC-Covid mirror, own folders resolved
from the working folder, and hub suites' tasks run from a mirror under the data root.

Each score is checked against plain mteb 2.26 run on the same rows, built here independently of
evalkit's readers: mteb's own AbsTaskReranking conversion of `{query, positive, negative}` rows,
mteb's task handed the retrieval layout with `top_ranked` (MANIFEST's recipe), mteb's summarization
task handed the rows, each scored with sentence-transformers models (mteb's wrappers).
The reranking data are built from SciFact: each judged query's relevant documents are its
positives, its top TF-IDF non-relevant documents its negatives.
"""
from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import write_jsonl
from tests.offline_run import N_NEG, REAL_DATA, doc_text  # N_NEG TF-IDF negatives per query: 300 queries, ~1,800 candidate pairs
from tests.offline_run import scifact_candidates as scifact_candidates_of

MAX_LEN = 64  # tokens: keeps the tiny models' pairs quick
METRICS = ("map_at_1000", "mrr_at_10", "ndcg_at_10", "recall_at_1", "precision_at_3")


# ----------------------------------------------------------------------------- SciFact as reranking data
@pytest.fixture(scope="module")
def scifact_candidates():
    """SciFact's judged test queries with candidates: relevant documents, then the top N_NEG
    non-relevant ones by TF-IDF cosine over the whole corpus (a lexical first stage), best first.
    The session's SciFact slice holds exactly these documents (tests/offline_run.py)."""
    return scifact_candidates_of(REAL_DATA / "SciFact", N_NEG)


# the tiny models' parity checks against plain mteb read the first 60 judged queries (about 360 candidate
# documents): the same code paths as all 300; the real MiniLM below keeps all 300 for its published-style numbers
TINY_QUERIES = 60


def first(sc, n: int) -> dict:
    """The same data with the first n queries only."""
    return {**sc, "candidates": dict(list(sc["candidates"].items())[:n])}


def rows_of(sc) -> list[dict]:
    return [
        {"query": sc["queries"][q], "positive": [doc_text(sc["corpus"][d]) for d in pos], "negative": [doc_text(sc["corpus"][d]) for d in neg]}
        for q, (pos, neg) in sc["candidates"].items()
    ]


def write_rows_folder(folder: Path, sc, mteb_task: str | None = "SciDocsRR", name: str = "SciFactRR") -> Path:
    write_jsonl(folder / "test.jsonl", rows_of(sc))
    (folder / "task.yaml").write_text(f"name: {name}\ntype: Reranking\n" + (f"mteb_task: {mteb_task}\n" if mteb_task else ""))
    return folder


def write_top_ranked_folder(folder: Path, sc, mteb_task: str | None = "SciDocsRR", name: str = "SciFactTR") -> Path:
    used = sorted({d for pos, neg in sc["candidates"].values() for d in pos + neg}, key=int)
    write_jsonl(folder / "corpus.jsonl", [{"_id": d, "title": sc["corpus"][d].get("title", ""), "text": sc["corpus"][d]["text"]} for d in used])
    write_jsonl(folder / "queries.jsonl", [{"_id": q, "text": sc["queries"][q]} for q in sc["candidates"]])
    (folder / "qrels").mkdir(parents=True, exist_ok=True)
    lines = ["query-id\tcorpus-id\tscore"] + [f"{q}\t{d}\t{s}" for q in sc["candidates"] for d, s in sc["qrels"][q].items()]
    (folder / "qrels" / "test.tsv").write_text("\n".join(lines) + "\n")
    write_jsonl(folder / "top_ranked.jsonl", [{"query-id": q, "corpus-ids": pos + neg} for q, (pos, neg) in sc["candidates"].items()])
    (folder / "task.yaml").write_text(f"name: {name}\ntype: Reranking\n" + (f"mteb_task: {mteb_task}\n" if mteb_task else ""))
    return folder


# ----------------------------------------------------------------------------- plain mteb
def st_embedder(path: Path):
    from sentence_transformers import SentenceTransformer

    m = SentenceTransformer(str(path), device="cpu")  # a plain BERT folder: mean pooling
    m.max_seq_length = MAX_LEN
    return m


def flag_cross_encoder(spec):
    """The cross-encoder as mteb's CrossEncoderProtocol: evalkit's FlagEmbedding-compatible reranker
    (its parity with FlagEmbedding's own code is tests/test_reranker.py's), handed to mteb as is; the
    candidates, the pairs and the scoring are mteb's. (sentence-transformers' CrossEncoder truncates
    a pair differently from FlagEmbedding's rerankers, so it is not the reference for these models.)"""
    from evalkit.models.reranker import RerankerAdapter, load_reranker
    from evalkit.plan import resolve_model

    m = resolve_model(spec, role="rerank")
    return RerankerAdapter(m.spec, load_reranker(m.spec, dtype="fp32", batch_size=32, devices="cpu", path=m.path, revision=m.revision))


def plain_scores(model, task) -> dict:
    import mteb

    res = mteb.evaluate(model, task, cache=None, overwrite_strategy="always", show_progress_bar=False, co2_tracker=False,
                        encode_kwargs={"batch_size": 32})
    tr = res.task_results[0]
    return {f"{sp}/{s['hf_subset']}": s for sp, ss in tr.scores.items() for s in ss}


def plain_rows_task(rows: list[dict], mteb_name: str = "SciDocsRR", monkeypatch=None):
    """mteb's own reading of {query, positive, negative} rows: its AbsTaskReranking conversion."""
    import mteb
    from datasets import Dataset, DatasetDict
    from mteb.abstasks.text import reranking

    meta = mteb.get_task(mteb_name).metadata

    class RowsTask(reranking.AbsTaskReranking):
        metadata = meta

    monkeypatch.setattr(reranking, "OLD_FORMAT_RERANKING_TASKS", [*reranking.OLD_FORMAT_RERANKING_TASKS, mteb_name])
    task = RowsTask()
    task.transform_old_dataset_format(DatasetDict({"test": Dataset.from_list(rows)}))
    return task


def plain_top_ranked_task(sc, mteb_name: str = "SciDocsRR"):
    """mteb's task handed the retrieval layout with top_ranked (MANIFEST's recipe)."""
    import mteb
    from datasets import Dataset

    used = sorted({d for pos, neg in sc["candidates"].values() for d in pos + neg}, key=int)
    corpus = Dataset.from_dict({
        "id": used, "title": [sc["corpus"][d].get("title", "") for d in used], "text": [sc["corpus"][d]["text"] for d in used],
    })
    qs = list(sc["candidates"])
    queries = Dataset.from_dict({"id": qs, "text": [sc["queries"][q] for q in qs]})
    task = mteb.get_task(mteb_name, eval_splits=["test"])
    task.dataset = {"default": {"test": {
        "corpus": corpus, "queries": queries, "relevant_docs": {q: dict(sc["qrels"][q]) for q in qs},
        "top_ranked": {q: pos + neg for q, (pos, neg) in sc["candidates"].items()},
    }}}
    task.data_loaded = True
    return task


# ----------------------------------------------------------------------------- evalkit
def settings(tmp_path, **kw):
    from evalkit.plan import Settings

    return Settings(output=tmp_path / "results", cache_dir=tmp_path / "cache", device="cpu", dtype="fp32", **kw)


def tiny_specs(tiny_bert, tiny_cross_encoder):
    from evalkit.models.catalog import get_spec

    return get_spec(str(tiny_bert), pooling="mean", max_length=MAX_LEN), get_spec(str(tiny_cross_encoder), max_length=MAX_LEN)


def run_folder(folder, tmp_path, embedder, reranker=None) -> dict:
    """evalkit on one task folder: {role: result document}."""
    from evalkit.run import evaluate
    from evalkit.tasks import Registry

    ts = Registry().task(str(folder))
    outs = evaluate(embedder, [ts], settings(tmp_path), **({"reranker": reranker} if reranker is not None else {}))
    assert [o.status for o in outs] == ["done"] * len(outs), [o.message for o in outs]
    return {o.unit.role: json.loads(o.unit.path.read_text()) for o in outs}


def assert_same(mine: dict, plain: dict, metrics=METRICS, tol=1e-6):
    for m in metrics:
        assert mine[m] == pytest.approx(plain[m], abs=tol), (m, mine[m], plain[m])


# ----------------------------------------------------------------------------- reranking: rows layout
def test_reranking_rows_with_mteb_task_score_what_plain_mteb_gives(scifact_candidates, tiny_bert, tiny_cross_encoder, tmp_path, monkeypatch):
    """SciFact as {query, positive, negative} rows, `mteb_task: SciDocsRR`: an embedder and a
    cross-encoder (scoring the candidates directly) each give plain mteb's scores on the same rows."""
    emb, ce = tiny_specs(tiny_bert, tiny_cross_encoder)
    scifact_candidates = first(scifact_candidates, TINY_QUERIES)
    folder = write_rows_folder(tmp_path / "SciFactRR", scifact_candidates)
    got = run_folder(folder, tmp_path, emb, ce)
    e, r = got["embed"], got["rerank"]
    assert e["task_name"] == r["task_name"] == "SciFactRR"
    assert e["evalkit"]["data_source"] == "local" and r["evalkit"]["first_stage"] is None
    es, rs = e["scores"]["test"][0], r["scores"]["test"][0]
    # SciDocsRR's settings: main score MAP@1000
    assert es["main_score"] == es["map_at_1000"] and rs["main_score"] == rs["map_at_1000"]
    # the reranker scored each query's candidates, nothing else: one pair per (query, candidate)
    assert r["evalkit"]["work"]["reranked_pairs"] == sum(len(p) + len(n) for p, n in scifact_candidates["candidates"].values())

    rows = rows_of(scifact_candidates)
    assert_same(es, plain_scores(st_embedder(tiny_bert), plain_rows_task(rows, monkeypatch=monkeypatch))["test/default"])
    assert_same(rs, plain_scores(flag_cross_encoder(ce), plain_rows_task(rows, monkeypatch=monkeypatch))["test/default"])
    # not a trivial score: the embedder and the reranker disagree, and neither is perfect
    assert 0 < es["map_at_1000"] < 1 and 0 < rs["map_at_1000"] < 1 and es["map_at_1000"] != rs["map_at_1000"]


def test_reranking_rows_conversion_is_mtebs(scifact_candidates, monkeypatch):
    """The data evalkit hands mteb are what mteb's AbsTaskReranking makes of the rows: rows without
    positives or negatives dropped, the same ids, texts, judgements and candidate lists."""
    from evalkit.tasks.formats import rows_to_retrieval
    from datasets import Dataset

    rows = rows_of(scifact_candidates)[:40]
    rows[3] = {**rows[3], "negative": []}  # dropped by mteb's rule
    rows[7] = {**rows[7], "positive": []}
    plain = plain_rows_task(rows, monkeypatch=monkeypatch).dataset["default"]["test"]
    mine = rows_to_retrieval(Dataset.from_list(rows), "test")
    assert mine["corpus"].to_dict() == plain["corpus"].to_dict()
    assert mine["queries"].to_dict() == plain["queries"].to_dict()
    assert len(mine["queries"]) == 38
    assert mine["relevant_docs"] == {q: dict(d) for q, d in plain["relevant_docs"].items()}
    assert mine["top_ranked"] == {q: list(d) for q, d in plain["top_ranked"].items()}


# ----------------------------------------------------------------------------- reranking: top_ranked layout
def test_reranking_top_ranked_layout_scores_what_plain_mteb_gives(scifact_candidates, tiny_bert, tiny_cross_encoder, tmp_path):
    """The retrieval layout plus top_ranked.jsonl: embedder and cross-encoder give plain mteb's scores,
    and the embedder's equal those of the same candidates given as rows."""
    emb, ce = tiny_specs(tiny_bert, tiny_cross_encoder)
    scifact_candidates = first(scifact_candidates, TINY_QUERIES)
    got = run_folder(write_top_ranked_folder(tmp_path / "SciFactTR", scifact_candidates), tmp_path, emb, ce)
    es, rs = got["embed"]["scores"]["test"][0], got["rerank"]["scores"]["test"][0]
    assert es["main_score"] == es["map_at_1000"]
    assert_same(es, plain_scores(st_embedder(tiny_bert), plain_top_ranked_task(scifact_candidates))["test/default"])
    assert_same(rs, plain_scores(flag_cross_encoder(ce), plain_top_ranked_task(scifact_candidates))["test/default"])
    # the same candidates as rows (titles joined to the text, as mteb reads a retrieval corpus): same ranking
    rows = run_folder(write_rows_folder(tmp_path / "rows" / "SciFactRR", scifact_candidates), tmp_path / "rows", emb)
    assert rows["embed"]["scores"]["test"][0]["map_at_1000"] == pytest.approx(es["map_at_1000"], abs=1e-6)


def test_generic_reranking_folder_uses_map_at_1000(scifact_candidates, tiny_bert, tmp_path, monkeypatch):
    """No `mteb_task:`: a generic reranking task, main score MAP@1000 as mteb 2.26's reranking tasks,
    the same scores as with SciDocsRR's settings; a reranker given as --model runs alone on it."""
    from evalkit.models.catalog import get_spec

    scifact_candidates = first(scifact_candidates, TINY_QUERIES)
    folder = write_rows_folder(tmp_path / "MyRerank", scifact_candidates, mteb_task=None, name="MyRerank")
    emb = get_spec(str(tiny_bert), pooling="mean", max_length=MAX_LEN)
    got = run_folder(folder, tmp_path, emb)["embed"]
    s = got["scores"]["test"][0]
    assert got["task_name"] == "MyRerank" and s["main_score"] == s["map_at_1000"]
    plain = plain_scores(st_embedder(tiny_bert), plain_rows_task(rows_of(scifact_candidates), monkeypatch=monkeypatch))["test/default"]
    assert_same(s, plain)


# plain mteb 2.26 (its sentence-transformers wrapper, fp32, CPU) on the same SciFact rows, by hand:
# `mteb.evaluate(SentenceTransformer(all-MiniLM-L6-v2), <AbsTaskReranking with SciDocsRR's metadata>)`
# after mteb's own transform_old_dataset_format of the rows; the top_ranked layout gave the same.
MINILM_SCIFACT_RR = {"map_at_1000": 0.72706, "mrr_at_10": 0.731056, "ndcg_at_10": 0.79651, "recall_at_1": 0.55967, "precision_at_3": 0.3}


@pytest.mark.slow
@pytest.mark.real
def test_real_minilm_on_scifact_rows_equals_plain_mteb(scifact_candidates, killed_offline_en, tmp_path):
    """all-MiniLM-L6-v2 on the SciFact rows: plain mteb's scores. The rows hold SciFact's documents as
    mteb's retrieval reads them, so every vector comes from the offline-en run's cache."""
    import shutil

    from evalkit.models.catalog import get_spec

    shutil.copytree(killed_offline_en["cache"], tmp_path / "cache")
    doc = run_folder(write_rows_folder(tmp_path / "SciFactRR", scifact_candidates), tmp_path, get_spec("all-MiniLM-L6-v2"))["embed"]
    assert doc["evalkit"]["work"]["encoded_texts"] == 0 and doc["evalkit"]["dtype"] == "fp32"
    assert_same(doc["scores"]["test"][0], MINILM_SCIFACT_RR)


# ----------------------------------------------------------------------------- summarization
def summarization_rows(shared_data, n_texts=40, per_text=6) -> list[dict]:
    """Real sentences (STSBenchmark): each text's machine summaries are sentence2 of `per_text` pairs,
    their relevance the pairs' gold scores; the human summaries are their sentence1s."""
    pairs = [json.loads(line) for line in (shared_data / "STSBenchmark" / "test.jsonl").open(encoding="utf-8")]
    rows = []
    for i in range(n_texts):
        chunk = pairs[i * per_text:(i + 1) * per_text]
        rows.append({
            "text": " ".join(p["sentence1"] for p in chunk),
            "human_summaries": [chunk[0]["sentence1"], chunk[1]["sentence1"]],
            "machine_summaries": [p["sentence2"] for p in chunk],
            "relevance": [round(p["score"], 2) for p in chunk],
        })
    return rows


def test_summarization_folder_scores_what_plain_mteb_gives(shared_data, tiny_bert, tmp_path):
    import mteb
    from datasets import Dataset, DatasetDict
    from mteb.abstasks import AbsTaskSummarization
    from mteb.abstasks.task_metadata import TaskMetadata

    from evalkit.models.catalog import get_spec

    rows = summarization_rows(shared_data)
    emb = get_spec(str(tiny_bert), pooling="mean", max_length=MAX_LEN)
    # with SummEval's settings (its evaluator, relevance in [0, 5])
    borrowed = tmp_path / "MySummEval"
    write_jsonl(borrowed / "test.jsonl", rows)
    (borrowed / "task.yaml").write_text("name: MySummEval\ntype: Summarization\nmteb_task: SummEval\n")
    s = run_folder(borrowed, tmp_path / "a", emb)["embed"]["scores"]["test"][0]
    task = mteb.get_task("SummEval")
    task.dataset, task.data_loaded = DatasetDict({"test": Dataset.from_list(rows)}), True
    plain = plain_scores(st_embedder(tiny_bert), task)["test/default"]
    keys = ("cosine_spearman", "cosine_pearson", "spearman", "pearson")  # dot: evalkit normalises, the plain BERT folder does not
    assert s["main_score"] == s["cosine_spearman"]
    assert_same(s, plain, keys)

    # generic (no mteb_task): mteb's current summarization evaluator, main score cosine_spearman
    generic = tmp_path / "MySumm"
    write_jsonl(generic / "test.jsonl", rows)
    (generic / "task.yaml").write_text("name: MySumm\ntype: Summarization\n")
    g = run_folder(generic, tmp_path / "b", emb)["embed"]["scores"]["test"][0]
    rel = [x for r in rows for x in r["relevance"]]

    class Plain(AbsTaskSummarization):
        metadata = TaskMetadata(name="MySumm", description="d", dataset={"path": "x", "revision": "1"}, type="Summarization",
                                category="t2t", modalities=["text"], eval_splits=["test"], eval_langs=["eng-Latn"], main_score="cosine_spearman")
        min_score, max_score = min(rel), max(rel)

    t2 = Plain()
    t2.dataset, t2.data_loaded = DatasetDict({"test": Dataset.from_list(rows)}), True
    assert g["main_score"] == g["cosine_spearman"]
    assert_same(g, plain_scores(st_embedder(tiny_bert), t2)["test/default"], keys)
    assert g["cosine_spearman"] != s["cosine_spearman"]  # SummEval keeps mteb's deprecated evaluator


# ----------------------------------------------------------------------------- bad rows: one line each
def _bad(tmp_path, typ, files: dict, yaml_extra=""):
    folder = tmp_path / "Bad"
    for name, content in files.items():
        p = folder / name
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, list):
            write_jsonl(p, content)
        else:
            p.write_text(content)
    (folder / "task.yaml").write_text(f"name: Bad\ntype: {typ}\n{yaml_extra}")
    return folder


RETR = {
    "corpus.jsonl": [{"_id": "d1", "text": "a"}, {"_id": "d2", "text": "b"}],
    "queries.jsonl": [{"_id": "q1", "text": "x"}, {"_id": "q2", "text": "y"}],
    "qrels/test.tsv": "query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t1\n",
}
BAD = {
    "positive not a list": ("Reranking", {"test.jsonl": [{"query": "q", "positive": "a doc", "negative": ["b"]}]}, "must be a list of strings"),
    "no usable row": ("Reranking", {"test.jsonl": [{"query": "q", "positive": ["a"], "negative": []}]}, "has both a positive and a negative"),
    "no query column": ("Reranking", {"test.jsonl": [{"positive": ["a"], "negative": ["b"]}]}, "has no query column"),
    "unknown candidate": ("Reranking", {**RETR, "top_ranked.jsonl": [{"query-id": "q1", "corpus-ids": ["d1", "d9"]}, {"query-id": "q2", "corpus-ids": ["d2"]}]},
                          "unknown document ids (first: 'd9')"),
    "judged query without candidates": ("Reranking", {**RETR, "top_ranked.jsonl": [{"query-id": "q1", "corpus-ids": ["d1", "d2"]}]},
                                        "have no candidates (first: 'q2')"),
    "no top_ranked": ("Reranking", {**RETR, "qrels/test.tsv": RETR["qrels/test.tsv"]}, "top_ranked.jsonl"),
    "relevance per summary": ("Summarization", {"test.jsonl": [{"text": "t", "human_summaries": ["h"], "machine_summaries": ["a", "b"], "relevance": [1]}]},
                              "one score per machine summary"),
    "equal relevance": ("Summarization", {"test.jsonl": [{"text": "t", "human_summaries": ["h"], "machine_summaries": ["a", "b"], "relevance": [2, 2]}]},
                        "equal relevance"),
    "instruction in reranking rows": ("Reranking", {"test.jsonl": [{"query": "q", "instruction": "find it", "positive": ["a"], "negative": ["b"]}]},
                                      "does not read"),
    "instruction reranking as rows": ("InstructionReranking", {"test.jsonl": [{"query": "q", "positive": ["a"], "negative": ["b"]}]},
                                      "retrieval layout"),
    "instruction retrieval without instructions": ("InstructionRetrieval", RETR, "no query has an `instruction`"),
    "bitext of one pair": ("BitextMining", {"test.jsonl": [{"sentence1": "a", "sentence2": "b"}]}, "at least 2"),
    "multilabel label not a list": ("MultilabelClassification", {"train.jsonl": [{"text": "a", "label": 1}], "test.jsonl": [{"text": "a", "label": [1]}]},
                                    "must be a list of class labels"),
    "regression value not a number": ("Regression", {"train.jsonl": [{"text": "a", "value": "high"}], "test.jsonl": [{"text": "a", "value": 1}]},
                                      "must be a finite number"),
    "zero-shot label not a candidate": ("ZeroShotClassification", {"candidate_labels.json": '["sports", "politics"]',
                                                                   "test.jsonl": [{"text": "a", "label": "weather"}]}, "index in candidate_labels.json"),
    "zero-shot without candidates": ("ZeroShotClassification", {"test.jsonl": [{"text": "a", "label": 0}]}, "candidate_labels.json"),
    "relevance outside SummEval's range": ("Summarization", {"test.jsonl": [{"text": "t", "human_summaries": ["h"], "machine_summaries": ["a", "b"], "relevance": [2, 7]}]},
                                           "outside [0, 5]"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_rows_are_one_line(case, tmp_path):
    from evalkit.errors import EvalkitError
    from evalkit.tasks import build_task, task_from_folder

    typ, files, want = BAD[case]
    extra = "mteb_task: SummEval\n" if "SummEval" in case else ""
    with pytest.raises(EvalkitError) as e:
        build_task(task_from_folder(_bad(tmp_path, typ, files, extra)))
    msg = str(e.value)
    assert want in msg and "\n" not in msg and msg.startswith("task Bad:"), msg


# ----------------------------------------------------------------------------- own folders
def sts_folder(folder: Path, name="OwnSTS", mteb_task=None, data=None) -> Path:
    rows = [{"sentence1": f"the gene {i}", "sentence2": f"a gene {i % 3}", "score": float(i % 5)} for i in range(12)]
    target = folder / data if data else folder
    write_jsonl(target / "test.jsonl", rows)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "task.yaml").write_text(f"name: {name}\ntype: STS\n" + (f"mteb_task: {mteb_task}\n" if mteb_task else "") + (f"data: {data}\n" if data else ""))
    return folder


@pytest.mark.parametrize("mteb_task", [None, "STSBenchmark"])
def test_a_relative_folder_works_from_any_working_folder(tmp_path, monkeypatch, mteb_task):
    from evalkit.tasks import Registry, build_task

    folder = sts_folder(tmp_path / "proj" / "tasks" / "OwnSTS", mteb_task=mteb_task)
    other = tmp_path / "elsewhere"
    other.mkdir()
    for cwd, name in ((tmp_path / "proj", "tasks/OwnSTS"), (tmp_path / "proj" / "tasks", "./OwnSTS"), (folder, "."),
                      (other, "../proj/tasks/OwnSTS"), (other, str(folder))):
        monkeypatch.chdir(cwd)
        ts = Registry().task(name)
        assert ts.data_dir == folder.resolve() and ts.data_dir.is_absolute(), (cwd, name)
        monkeypatch.chdir(other)  # the spec means the same folder once the working folder changes
        task = build_task(ts)
        assert len(task.dataset["test"]) == 12 and task.metadata.name == "OwnSTS"
    # `data:` in task.yaml is relative to the folder holding task.yaml
    sub = sts_folder(tmp_path / "proj" / "Split", name="Split", mteb_task=mteb_task, data="files/v1")
    monkeypatch.chdir(other)
    ts = Registry().task("../proj/Split")
    assert ts.data_dir == (sub / "files" / "v1").resolve()
    assert len(build_task(ts).dataset["test"]) == 12


def test_a_relative_folder_runs_from_the_command_line_in_another_folder(tiny_bert, tmp_path, monkeypatch, capsys):
    """`evalkit run --tasks my/Task` (no mteb_task) from a working folder away from the project and the
    data root: the folder is found, the score is mteb's STS score of the rows."""
    from evalkit.cli import main

    work = tmp_path / "work"
    sts_folder(work / "my" / "OwnSTS")
    monkeypatch.chdir(work)
    monkeypatch.setenv("EVALKIT_DATA", str(tmp_path / "nodata"))  # not where the folder is
    cmd = ["run", "--model", str(tiny_bert), "--pooling", "mean", "--tasks", "my/OwnSTS",
           "--output", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache")]
    assert main(cmd) == 0, capsys.readouterr().err
    (res,) = (tmp_path / "out").rglob("OwnSTS.json")
    assert -1 <= json.loads(res.read_text())["scores"]["test"][0]["main_score"] <= 1
    capsys.readouterr()
    assert main([c if c != "my/OwnSTS" else "my/Missing" for c in cmd]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(work / "my" / "Missing") in err, err


def test_a_bare_name_is_the_registered_task_and_a_path_the_folder(tmp_path, monkeypatch, caplog, shared_data):
    from evalkit.tasks import Registry

    monkeypatch.chdir(tmp_path)
    sts_folder(tmp_path / "STSBenchmark", name="STSBenchmark")  # a folder named like a registered task
    sts_folder(tmp_path / "OnlyHere", name="OnlyHere")
    reg = Registry()
    with caplog.at_level(logging.INFO, logger="evalkit"):
        ts = reg.task("STSBenchmark")
    assert ts.data_dir is None and ts.source == "local"  # the registered mirror
    note = [r.getMessage() for r in caplog.records if "STSBenchmark" in r.getMessage()]
    assert len(note) == 1 and "./STSBenchmark" in note[0] and "registered" in note[0], note
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="evalkit"):
        assert reg.task("./STSBenchmark").data_dir == (tmp_path / "STSBenchmark").resolve()
        assert reg.task("OnlyHere").data_dir == (tmp_path / "OnlyHere").resolve()  # no task has the name
    said = " ".join(r.getMessage() for r in caplog.records)
    assert str(tmp_path / "STSBenchmark") in said and str(tmp_path / "OnlyHere") in said


def test_the_command_line_says_which_one_ran(tmp_path, tiny_bert):
    """The note is one line on stderr; the dry run then lists the registered task's data."""
    sts_folder(tmp_path / "STSBenchmark", name="STSBenchmark")
    cmd = [sys.executable, "-m", "evalkit.cli", "run", "--model", str(tiny_bert), "--max-length", "128", "--tasks", "STSBenchmark",
           "--output", str(tmp_path / "out"), "--dry-run"]
    p = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    lines = [line for line in p.stderr.splitlines() if "STSBenchmark" in line]
    assert len(lines) == 1 and "registered task STSBenchmark" in lines[0] and "./STSBenchmark" in lines[0], p.stderr


# ----------------------------------------------------------------------------- hub suites from a mirror
def test_mteb_eng_and_cmteb_reranking_and_summarization_run_from_a_mirror(scifact_candidates, shared_data, tiny_bert, tiny_cross_encoder, tmp_path, monkeypatch):
    """SciDocsRR (rows), StackOverflowDupQuestions (top_ranked layout), SummEval and cmteb's
    T2Reranking (dev rows) mirrored under the data root: their suites run them as mteb's tasks,
    offline, with mteb's names and main scores; tasks not mirrored stay hub tasks."""
    from evalkit.run import evaluate
    from evalkit.tasks import Registry

    root = tmp_path / "data"
    sc = first(scifact_candidates, 60)
    write_rows_folder(root / "SciDocsRR", sc)
    write_top_ranked_folder(root / "StackOverflowDupQuestions", sc)
    write_jsonl(root / "SummEval" / "test.jsonl", summarization_rows(shared_data, n_texts=10))
    write_jsonl(root / "T2Reranking" / "dev.jsonl", rows_of(sc)[:30])
    for f in ("SciDocsRR", "StackOverflowDupQuestions"):
        (root / f / "task.yaml").unlink()  # a mirror is plain data
    monkeypatch.setenv("EVALKIT_DATA", str(root))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    reg = Registry()
    eng = {s.name: s for s in reg.suite("mteb-eng-v1")}
    cm = {s.name: s for s in reg.suite("cmteb")}
    for name in ("SciDocsRR", "StackOverflowDupQuestions", "SummEval"):
        assert eng[name].source == "local" and eng[name].mteb_name == name
    assert cm["T2Reranking"].source == "local" and eng["AskUbuntuDupQuestions"].source == "hub" and cm["MMarcoReranking"].source == "hub"
    assert reg.task("SciDocsRR").source == "local"  # by name too
    emb, ce = tiny_specs(tiny_bert, tiny_cross_encoder)
    tasks = [eng["SciDocsRR"], eng["StackOverflowDupQuestions"], eng["SummEval"], cm["T2Reranking"]]
    outs = evaluate(emb, tasks, settings(tmp_path), reranker=ce)
    assert all(o.status == "done" for o in outs), [o.message for o in outs]
    got = {(o.unit.role, o.task): json.loads(o.unit.path.read_text()) for o in outs}
    assert sorted(got) == sorted([("embed", t.name) for t in tasks] + [("rerank", t.name) for t in tasks if t.type == "Reranking"])
    for (role, name), doc in got.items():
        split = "dev" if name == "T2Reranking" else "test"
        s = doc["scores"][split][0]
        assert doc["task_name"] == name and doc["evalkit"]["data_source"] == "local"
        assert s["main_score"] == s["cosine_spearman" if name == "SummEval" else "map_at_1000"], (role, name)
    # the two layouts of the same candidates, scored by the same models: the same MAP
    for role in ("embed", "rerank"):
        a = got[(role, "SciDocsRR")]["scores"]["test"][0]["map_at_1000"]
        b = got[(role, "StackOverflowDupQuestions")]["scores"]["test"][0]["map_at_1000"]
        assert a == pytest.approx(b, abs=1e-6), role


# ----------------------------------------------------------------------------- ClusTREC-Covid
def test_clustrec_covid_is_registered_with_both_subsets(shared_data):
    """The mirror is read as mteb's ClusTREC-Covid: both subsets (names with spaces), 2284 texts each,
    50 topics, the files' row order (mteb's subsampling depends on it), mteb's subset order."""
    from evalkit.tasks import Registry, build_task

    reg = Registry()
    ts = reg.task("ClusTREC-Covid")
    assert ts in reg.suite("offline-en") and ts.source == "local"
    task = build_task(ts)
    assert task.metadata.name == "ClusTREC-Covid" and task.metadata.main_score == "v_measure"
    assert task.hf_subsets == ["title and abstract", "title"]  # the order mteb evaluates them in, one random state
    for sub in ("title", "title and abstract"):
        raw = json.loads((shared_data / "ClusTREC-Covid" / sub / "test.json").read_text(encoding="utf-8"))
        ds = task.dataset[sub]["test"]
        assert ds["sentences"] == raw["sentences"] and len(ds) == 2284
        names = ds.features["labels"].names
        assert len(names) == 50 and [names[i] for i in ds["labels"]] == raw["labels"]


def test_each_clustrec_subset_is_scored_as_mtebs_task_limited_to_it(shared_data, tiny_bert, tmp_path, monkeypatch):
    """What mteb clusters for each subset is what mteb's ClusTREC-Covid limited to that subset
    clusters (the MANIFEST's reference recipe): the same 4% sample and the same random state for
    k-means' bootstrap. Checked without the k-means itself (tens of seconds a subset on 2 cores): the
    bootstrap is recorded and stubbed. In one plain mteb task `title` would draw after `title and
    abstract` and get another sample; that is what the check would see if evalkit did the same."""
    import mteb
    import mteb.abstasks.clustering as clustering
    from datasets import Dataset, DatasetDict

    from evalkit.models.catalog import get_spec
    from evalkit.run import evaluate
    from evalkit.tasks import Registry

    seen: list[tuple] = []

    def bootstrap(embeddings, labels, *, rng_state, **kw):
        seen.append((len(embeddings), [lab[0] for lab in labels], rng_state.getstate()))
        return {"v_measure": {"Level 0": [0.5]}, "ami": {"Level 0": [0.5]}}, {"Level 0": [[0] * len(labels)]}

    monkeypatch.setattr(clustering, "_evaluate_clustering_bootstrapped", bootstrap)
    emb = get_spec(str(tiny_bert), pooling="mean", max_length=MAX_LEN)
    (out,) = evaluate(emb, [Registry().task("ClusTREC-Covid")], settings(tmp_path))
    assert out.status == "done", out.message
    mine, seen[:] = list(seen), []

    def plain(subsets):
        task = mteb.get_task("ClusTREC-Covid", hf_subsets=subsets, eval_splits=["test"])
        data = {}
        for sub in subsets:
            raw = json.loads((shared_data / "ClusTREC-Covid" / sub / "test.json").read_text(encoding="utf-8"))
            data[sub] = DatasetDict({"test": Dataset.from_dict(raw).class_encode_column("labels")})
        task.dataset, task.data_loaded = data, True
        plain_scores(st_embedder(tiny_bert), task)
        got, seen[:] = list(seen), []
        return got

    ref = plain(["title and abstract"]) + plain(["title"])
    assert [(n, labs) for n, labs, _ in mine] == [(n, labs) for n, labs, _ in ref] and mine[0][0] == 91
    assert [st for *_, st in mine] == [st for *_, st in ref]
    shared = plain(["title and abstract", "title"])  # one task, one random state: title's sample differs
    assert shared[0][1] == ref[0][1] and shared[1][1] != ref[1][1]


# ----------------------------------------------------------------------------- a query's instruction
def test_a_query_instruction_in_a_retrieval_folder_is_read_as_mteb_reads_it(tiny_bert, tmp_path):
    """A retrieval folder's queries may carry `instruction` (mteb's InstructionRetrieval queries):
    it is kept and the query is read as mteb reads its own instruction tasks, "<text> <instruction>",
    so the scores equal those of the same folder with the instruction written into the text, and
    differ from the folder without it. A non-string instruction is one line."""
    from evalkit.cli import main
    from evalkit.models.catalog import get_spec

    words = "gene cell protein virus blood heart brain bone skin lung liver kidney muscle nerve".split()
    corpus = [{"_id": f"d{i}", "title": "", "text": " ".join(words[(i + j) % len(words)] for j in range(5))} for i in range(30)]
    instr = {f"q{i}": "find the passage about " + words[(3 * i + 7) % len(words)] for i in range(8)}
    base = [{"_id": f"q{i}", "text": f"{words[i]} {words[(i + 2) % len(words)]}"} for i in range(8)]

    def folder(name, queries):
        f = tmp_path / name
        write_jsonl(f / "corpus.jsonl", corpus)
        write_jsonl(f / "queries.jsonl", queries)
        (f / "qrels").mkdir()
        (f / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(f"q{i}\td{(4 * i) % 30}\t1\n" for i in range(8)))
        (f / "task.yaml").write_text(f"name: {name}\ntype: Retrieval\n")
        return f

    spec = get_spec(str(tiny_bert), pooling="mean", max_length=MAX_LEN)
    with_field = run_folder(folder("WithInstruction", [{**q, "instruction": instr[q["_id"]]} for q in base]), tmp_path / "a", spec)
    written = run_folder(folder("Written", [{**q, "text": q["text"] + " " + instr[q["_id"]]} for q in base]), tmp_path / "b", spec)
    plain = run_folder(folder("Without", base), tmp_path / "c", spec)
    mine, ref, none = (d["embed"]["scores"]["test"][0] for d in (with_field, written, plain))
    assert_same(mine, ref, ("ndcg_at_10", "map_at_100", "recall_at_10", "mrr_at_10"), tol=0)
    assert any(mine[m] != none[m] for m in ("ndcg_at_10", "map_at_100", "mrr_at_10"))

    bad = folder("BadInstruction", [{**base[0], "instruction": 3}, *base[1:]])
    assert main(["run", "--model", str(tiny_bert), "--tasks", str(bad), "--output", str(tmp_path / "d")]) == 2
