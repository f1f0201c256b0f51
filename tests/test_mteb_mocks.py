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
