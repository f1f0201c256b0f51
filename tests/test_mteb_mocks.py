"""Conformance with mteb's own mock tasks (mteb.mocks, shipped in the mteb wheel): through
evalkit.evaluate, every text mock task of MOCK_TASK_TEST_GRID scores metric for metric as plain
mteb.evaluate does with a sentence-transformers model of the same tiny folder (mteb's own wrapper);
a cross-encoder likewise on the reranking mocks, through mteb's CrossEncoder wrapper. The mocks'
data are a few rows each, so the whole grid takes seconds."""
from __future__ import annotations

import math

import pytest

from tests.test_recipes import st_folder


def _scores(task_result) -> dict:
    return {f"{split}/{s['hf_subset']}": s for split, ss in task_result.scores.items() for s in ss}


def _plain(model, task) -> dict:
    import mteb

    res = mteb.evaluate(model, task, cache=None, overwrite_strategy="always", show_progress_bar=False, co2_tracker=False,
                        encode_kwargs={"batch_size": 32})
    return _scores(res.task_results[0])


def _same(mine: dict, ref: dict, where: str) -> None:
    assert mine.keys() == ref.keys(), where
    for key, r in ref.items():
        m = mine[key]
        numbers = {k for k, v in r.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        assert numbers <= set(m), (where, key, numbers - set(m))
        for k in numbers:
            a, b = m[k], r[k]
            if math.isnan(b):  # no value (mteb's nAUC of a query set with one relevance level): JSON null in a result file
                assert a is None or math.isnan(a), (where, key, k, a, b)
            else:
                assert a == pytest.approx(b, abs=1e-6), (where, key, k, a, b)


@pytest.fixture(scope="module")
def st_model(tiny_bert, tmp_path_factory):
    return st_folder(tiny_bert, tmp_path_factory.mktemp("mock-st") / "st", pooling="mean", normalize=True)


def _text_mocks():
    from mteb.mocks import MOCK_TASK_TEST_GRID

    return MOCK_TASK_TEST_GRID


@pytest.mark.parametrize("index", range(len(_text_mocks())), ids=[t.metadata.name for t in _text_mocks()])
def test_embedder_on_every_text_mock_task_scores_as_plain_mteb(index, st_model, tmp_path):
    import evalkit
    from sentence_transformers import SentenceTransformer

    mock = type(_text_mocks()[index])
    res = evalkit.evaluate(str(st_model), [mock()], output=tmp_path / "r", cache_dir=tmp_path / "c", batch_size=32)
    assert not res.failed, res.failed[0].message
    (mine,) = res.task_results
    ref = _plain(SentenceTransformer(str(st_model), device="cpu"), mock())
    _same(_scores(mine), ref, mock.__name__)
    _items_rebuild_the_scores(res, mock)


NO_ITEMS = ()  # every text type has per-item scores (not SummEval, whose deprecated evaluator averages p-values too)


def _items_rebuild_the_scores(res, mock) -> None:
    """Per-item scores exist for every type that has them (not for a parallel bitext task, whose language pairs
    share one split), and each split's rebuild from its items equals its main score."""
    from evalkit.items import load_items

    items = load_items(res.outcomes[0].unit.path)
    parallel = getattr(mock, "parallel_subsets", False)
    assert items["available"] == (mock.metadata.type not in NO_ITEMS and not parallel), items
    for key, split in items["splits"].items():  # kind none: per-item values kept, the main metric is not their mean
        assert not split["available"] or split["kind"] == "none" or split["matches"], (mock.__name__, key, split)


def test_regression_items_are_tested_by_a_kendall_bootstrap():
    """Regression's per-item predictions (every experiment the same where the training split is at most
    mteb's n_samples) rebuild mteb's Kendall tau, and two runs' are compared by a paired bootstrap."""
    import random

    from evalkit.items import _regression
    from evalkit.report.stats import bootstrap_test
    from scipy.stats import kendalltau

    rng = random.Random(1)
    gold = [rng.random() for _ in range(80)]
    a = [g + rng.gauss(0, 0.3) for g in gold]
    b = [g + rng.gauss(0, 0.05) for g in gold]

    class Task:
        label_column_name = "value"

    rec = _regression(Task(), [a] * 10, {"value": gold}, "kendalltau")
    assert rec["kind"] == "statistic" and rec["recomputed"] == pytest.approx(kendalltau(gold, a).statistic, abs=1e-12)
    test = bootstrap_test("kendall", a, b, gold, n=200)
    assert test.a == pytest.approx(rec["recomputed"]) and test.b > test.a and test.p < 0.05
    varied = _regression(Task(), [a, b], {"value": gold}, "kendalltau")
    assert not varied["available"] and "different subsamples" in varied["reason"]


RERANKING_MOCKS = ("MockRerankingTask", "MockMultilingualRerankingTask", "MockInstructionReranking", "MockMultilingualInstructionReranking")


@pytest.mark.parametrize("name", RERANKING_MOCKS)
def test_cross_encoder_on_the_reranking_mocks_scores_as_plain_mteb(name, tiny_cross_encoder, tmp_path):
    import evalkit
    from mteb.mocks import MOCK_TASK_REGISTRY
    from sentence_transformers import CrossEncoder

    mock = MOCK_TASK_REGISTRY[name]
    res = evalkit.evaluate(str(tiny_cross_encoder), [mock()], output=tmp_path / "r", cache_dir=tmp_path / "c", batch_size=32)
    assert not res.failed, res.failed[0].message
    (mine,) = res.task_results
    ref = _plain(CrossEncoder(str(tiny_cross_encoder), device="cpu"), mock())
    _same(_scores(mine), ref, name)


def test_non_text_mock_grids_are_refused_in_one_line(tmp_path, st_model):
    import evalkit
    from evalkit.errors import EvalkitError
    from mteb.mocks import MOCK_MIEB_TASK_GRID

    with pytest.raises(EvalkitError, match="not text alone") as e:
        evalkit.evaluate(str(st_model), list(MOCK_MIEB_TASK_GRID[:3]), output=tmp_path / "r")
    assert "\n" not in str(e.value)


TWO_STAGE_MOCKS = ("MockRetrievalTask", "MockMultilingualRetrievalTask", "MockInstructionRetrieval", "MockMultilingualInstructionRetrieval")


@pytest.mark.parametrize("name", TWO_STAGE_MOCKS)
def test_two_stage_on_the_retrieval_mocks_equals_mtebs_convert_to_reranking(name, st_model, tiny_cross_encoder, tmp_path):
    """evalkit's two-stage run (an embedder's top k reranked by a cross-encoder) against mteb's own
    recipe for it: mteb.evaluate the embedder with a prediction folder, `task.convert_to_reranking(folder,
    top_k)`, mteb.evaluate the cross-encoder on that; InstructionRetrieval's instruction goes with the
    query, as mteb's dataloader joins it. Both stages equal metric for metric."""
    import evalkit
    import mteb
    from mteb.mocks import MOCK_TASK_REGISTRY
    from sentence_transformers import CrossEncoder, SentenceTransformer

    mock, k = MOCK_TASK_REGISTRY[name], 2
    res = evalkit.evaluate(str(st_model), [mock()], reranker=str(tiny_cross_encoder), top_k=k, output=tmp_path / "r",
                           cache_dir=tmp_path / "c", batch_size=32)
    assert not res.failed, res.failed[0].message
    by_role = {o.unit.role: o for o in res.outcomes}
    assert set(by_role) == {"embed", "rerank"}, list(by_role)
    pred = tmp_path / "pred"
    first = mteb.evaluate(SentenceTransformer(str(st_model), device="cpu"), mock(), cache=None, overwrite_strategy="always",
                          show_progress_bar=False, co2_tracker=False, encode_kwargs={"batch_size": 32}, prediction_folder=pred)
    _same(_scores(mteb.TaskResult.from_disk(by_role["embed"].unit.path)), _scores(first.task_results[0]), f"{name} first stage")
    ref = _plain(CrossEncoder(str(tiny_cross_encoder), device="cpu"), mock().convert_to_reranking(pred, top_k=k))
    _same(_scores(mteb.TaskResult.from_disk(by_role["rerank"].unit.path)), ref, f"{name} reranked")


# ----------------------------------------------------------------------------- the mocks as own task folders
def _jsonl(path, rows) -> None:
    import json

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def _write_retrieval(folder, splits: dict) -> None:
    """mteb's RetrievalSplitData of each split in the BEIR layout of the README (queries.jsonl and corpus.jsonl
    serve every split; top_ranked/<split>.jsonl where the split has candidates)."""
    corpus, queries = {}, {}
    for split, d in splits.items():
        for r in d["corpus"]:
            corpus[r["id"]] = {"_id": r["id"], "title": r.get("title") or "", "text": r["text"]}
        for r in d["queries"]:
            queries[r["id"]] = {"_id": r["id"], "text": r["text"], **({"instruction": r["instruction"]} if "instruction" in r else {})}
        (folder / "qrels").mkdir(parents=True, exist_ok=True)
        lines = ["query-id\tcorpus-id\tscore"] + [f"{q}\t{doc}\t{s}" for q, docs in d["relevant_docs"].items() for doc, s in docs.items()]
        (folder / "qrels" / f"{split}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
        if d.get("top_ranked"):
            _jsonl(folder / "top_ranked" / f"{split}.jsonl", [{"query-id": q, "corpus-ids": list(c)} for q, c in d["top_ranked"].items()])
    _jsonl(folder / "corpus.jsonl", list(corpus.values()))
    _jsonl(folder / "queries.jsonl", list(queries.values()))


def _write_folder(mock, root):
    """A monolingual mock's data written as an own task folder in the formats the README gives for its type."""
    import json

    import yaml

    task = mock()
    task.load_data()
    typ, ds = task.metadata.type, task.dataset
    folder = root / task.metadata.name
    folder.mkdir(parents=True)
    (folder / "task.yaml").write_text(yaml.safe_dump({"name": task.metadata.name, "type": typ, "eval_splits": list(task.metadata.eval_splits)}))
    if typ in ("Retrieval", "Reranking", "InstructionRetrieval", "InstructionReranking"):
        _write_retrieval(folder, ds["default"])
        return folder
    if typ == "ZeroShotClassification":
        (folder / "candidate_labels.json").write_text(json.dumps(task.get_candidate_labels()))
    rename = {"PairClassification": {"labels": "label"}}.get(typ, {})
    for split, data in ds.items():
        _jsonl(folder / f"{split}.jsonl", [{rename.get(k, k): v for k, v in r.items()} for r in data])
    return folder


# every monolingual text mock whose data an own folder can hold and that keeps mteb's default settings for its
# type: mteb's legacy clustering (one row of many sentences) and the dialog retrieval mock (conversations as
# queries) have no folder format; the clustering mock sets its own subsampling (20 of its 20 sentences, where a
# folder has mteb's default, a fraction 0.04: a folder's clustering is checked on SIB200 and ClusTREC-Covid)
FOLDER_MOCKS = (
    "MockBitextMiningTask", "MockClassificationTask", "MockRegressionTask", "MockPairClassificationTask", "MockRerankingTask", "MockRetrievalTask", "MockSTSTask", "MockMultilabelClassification",
    "MockSummarizationTask", "MockInstructionRetrieval", "MockInstructionReranking", "MockTextZeroShotClassification",
)


FOLDER_MAIN = {"BitextMining": "f1", "MultilabelClassification": "accuracy", "PairClassification": "max_ap",
               "Summarization": "cosine_spearman", "STS": "cosine_spearman"}  # where mteb's usual main score is not its mock's


@pytest.mark.parametrize("name", FOLDER_MOCKS)
def test_every_text_type_runs_from_an_own_folder_as_mteb_scores_the_mock(name, st_model, tmp_path):
    """The mock's data written as an own task folder (task.yaml with the mock's type and splits): evalkit's
    generic task for the type scores every metric as plain mteb scores the mock; the main score is mteb's
    usual one for the type; the per-item scores rebuild it where the type has them."""
    import evalkit
    from mteb.mocks import MOCK_TASK_REGISTRY
    from sentence_transformers import SentenceTransformer

    mock = MOCK_TASK_REGISTRY[name]
    folder = _write_folder(mock, tmp_path / "data")
    res = evalkit.evaluate(str(st_model), [str(folder)], output=tmp_path / "r", cache_dir=tmp_path / "c", batch_size=32)
    assert not res.failed, res.failed[0].message
    (mine,) = res.task_results
    ref = _plain(SentenceTransformer(str(st_model), device="cpu"), mock())
    mine_scores = _scores(mine)
    main = FOLDER_MAIN.get(mock.metadata.type, mock.metadata.main_score)
    for scores in mine_scores.values():
        assert scores.pop("main_score") == scores[main], (name, main)
    for scores in ref.values():
        scores.pop("main_score")
    _same(mine_scores, ref, name)
    _items_rebuild_the_scores(res, mock)


def test_bitext_items_rebuild_sklearns_weighted_f1():
    """Per-sentence F1 of its own class: their mean is mteb's f1 (sklearn's weighted F1) for any predictions."""
    import random

    from evalkit.items import _bitext
    from sklearn.metrics import f1_score

    rng = random.Random(0)
    n = 60
    pred = [i if rng.random() < 0.6 else rng.randrange(n) for i in range(n)]
    rec = _bitext(None, {"sentence1-sentence2": [{"corpus_id": j, "score": 1.0} for j in pred]}, [None] * n, "f1")
    assert rec["recomputed"] == pytest.approx(f1_score(list(range(n)), pred, zero_division=0, average="weighted"), abs=1e-12)
    assert sum(rec["values"]["accuracy"]) == sum(p == i for i, p in enumerate(pred))
