"""BGE-M3 (evalkit.BGEM3FlagModel): dense, lexical and ColBERT outputs and every compute_score mode
equal FlagEmbedding 1.4.2's BGEM3FlagModel to 1e-5, on a tiny random M3 kept in tests/data/m3.

The reference outputs in tests/data/m3/reference.{json,npz} were made by FlagEmbedding itself, which
needs transformers 4, in a separate environment; regenerate them (and the tiny model) with

    python3 -m venv /tmp/flagenv
    /tmp/flagenv/bin/pip install torch==2.13.0 'transformers<5' FlagEmbedding==1.4.2
    /tmp/flagenv/bin/python tests/data/m3/make_reference.py
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from evalkit import BGEM3FlagModel, EvalkitError

DATA = Path(__file__).resolve().parent / "data" / "m3"
MODEL = DATA / "model"
TOL = 1e-5


@pytest.fixture(scope="module")
def ref() -> dict:
    doc = json.loads((DATA / "reference.json").read_text())
    arrays = np.load(DATA / "reference.npz")
    doc["dense_vecs"] = arrays["dense_vecs"]
    doc["colbert_vecs"] = np.split(arrays["colbert_vecs"], np.cumsum(arrays["colbert_lengths"])[:-1])
    return doc


@pytest.fixture(scope="module")
def m3() -> BGEM3FlagModel:
    model = BGEM3FlagModel(str(MODEL), use_fp16=False, devices="cpu")
    yield model
    model.close()


@pytest.fixture(scope="module")
def encoded(m3, ref) -> dict:
    return m3.encode(ref["sentences"], return_dense=True, return_sparse=True, return_colbert_vecs=True, **ref["encode_kwargs"])


def lexical_diff(a: list[dict], b: list[dict]) -> float:
    """Largest weight difference; the token sets must be equal."""
    worst = 0.0
    for x, y in zip(a, b, strict=True):
        assert set(x) == set(y)
        worst = max([worst] + [abs(float(x[k]) - float(y[k])) for k in x])
    return worst


def test_same_token_ids_as_flagembedding(m3, ref):
    ml = ref["encode_kwargs"]["max_length"]
    assert [m3.tokenizer(s, truncation=True, max_length=ml)["input_ids"] for s in ref["sentences"]] == ref["input_ids"]


def test_encode_equals_flagembedding(encoded, ref):
    dense = encoded["dense_vecs"]
    assert dense.dtype == np.float32 and dense.shape == ref["dense_vecs"].shape
    assert np.abs(dense - ref["dense_vecs"]).max() <= TOL
    assert lexical_diff(encoded["lexical_weights"], ref["lexical_weights"]) <= TOL
    assert [c.shape for c in encoded["colbert_vecs"]] == [c.shape for c in ref["colbert_vecs"]]
    assert max(np.abs(a - b).max() for a, b in zip(encoded["colbert_vecs"], ref["colbert_vecs"])) <= TOL


def test_lexical_weights_leave_out_special_tokens_and_keep_the_max(m3, encoded, ref):
    tok = m3.tokenizer
    special = {str(i) for i in (tok.cls_token_id, tok.eos_token_id, tok.pad_token_id, tok.unk_token_id)}
    unk = str(tok.unk_token_id)
    assert any(int(unk) in ids for ids in ref["input_ids"])  # the data do have <unk> tokens
    for lw, ids in zip(encoded["lexical_weights"], ref["input_ids"]):
        assert not special & set(lw)
        assert all(float(w) > 0 for w in lw.values())
        assert set(lw) <= {str(i) for i in ids}
    # "bank bank bank money money transfer": one weight per distinct token
    assert len(encoded["lexical_weights"][3]) <= 3
    # ColBERT: one vector per token after CLS, unit length
    for c, ids in zip(encoded["colbert_vecs"], ref["input_ids"]):
        assert c.shape[0] == len(ids) - 1
        np.testing.assert_allclose(np.linalg.norm(c, axis=1), 1.0, atol=1e-5)


def test_compute_score_equals_flagembedding(m3, ref):
    got = m3.compute_score([tuple(p) for p in ref["pairs"]], weights_for_different_modes=ref["weights"], **ref["score_kwargs"])
    assert list(got) == ["colbert", "sparse", "dense", "sparse+dense", "colbert+sparse+dense"]
    for mode, want in ref["compute_score"].items():
        assert np.abs(np.array(got[mode]) - np.array(want)).max() <= TOL, mode
    default = m3.compute_score(ref["pairs"][:5], **ref["score_kwargs"])
    for mode, want in ref["compute_score_default_weights"].items():
        assert np.abs(np.array(default[mode]) - np.array(want)).max() <= TOL, mode
    one = m3.compute_score(tuple(ref["pairs"][0]), weights_for_different_modes=ref["weights"], **ref["score_kwargs"])
    assert isinstance(one["dense"], float) and abs(one["dense"] - ref["compute_score"]["dense"][0]) <= TOL


def test_compute_score_counts_flagembeddings_colbert_padding(m3, ref):
    """Pair 13 is a one-word passage batched with a long one: FlagEmbedding's zero padding vectors
    lift a negative best match to 0, and so does evalkit; the plain colbert_score does not."""
    pairs, kw = ref["pairs"], ref["score_kwargs"]
    q = m3.encode([p[0] for p in pairs], return_dense=False, return_colbert_vecs=True, max_length=kw["max_query_length"])
    p = m3.encode([p[1] for p in pairs], return_dense=False, return_colbert_vecs=True, max_length=kw["max_passage_length"])
    plain = [float(m3.colbert_score(a, b)) for a, b in zip(q["colbert_vecs"], p["colbert_vecs"])]
    assert abs(plain[13] - ref["compute_score"]["colbert"][13]) > 1e-3
    assert np.abs(np.delete(np.array(plain) - np.array(ref["compute_score"]["colbert"]), 13)).max() <= TOL


def test_pairwise_helpers_equal_flagembedding(m3, encoded, ref):
    lw, col = encoded["lexical_weights"], encoded["colbert_vecs"]
    lex = m3.compute_lexical_matching_score(lw[:6], lw[6:])
    assert lex.shape == (6, 6) and np.abs(lex - np.array(ref["lexical_matching_0_5_vs_6_11"])).max() <= TOL
    assert abs(m3.compute_lexical_matching_score(lw[0], lw[6]) - ref["lexical_matching_0_5_vs_6_11"][0][0]) <= TOL
    cs = np.array([[float(m3.colbert_score(col[i], col[j])) for j in range(6, 12)] for i in range(6)])
    assert np.abs(cs - np.array(ref["colbert_score_0_5_vs_6_11"])).max() <= TOL
    with pytest.raises(EvalkitError):
        m3.compute_lexical_matching_score(lw[0], lw[6:])


def test_corpus_helpers_match_the_pairwise_scores(m3, encoded, ref):
    from evalkit.models.m3 import colbert_scores, hybrid_scores, lexical_matrix

    lw, col, dense = encoded["lexical_weights"], encoded["colbert_vecs"], encoded["dense_vecs"]
    Q, D = lexical_matrix(lw[:6], m3.vocab_size), lexical_matrix(lw[6:], m3.vocab_size)
    assert Q.shape == (6, m3.vocab_size)
    np.testing.assert_allclose((Q @ D.T).toarray(), ref["lexical_matching_0_5_vs_6_11"], atol=TOL)
    many = np.stack([colbert_scores(col[i], col[6:]) for i in range(6)])
    np.testing.assert_allclose(many, ref["colbert_score_0_5_vs_6_11"], atol=TOL)
    d = dense[:6] @ dense[6:].T
    assert np.array_equal(hybrid_scores(d, None, None, [1, 0, 0]), d.astype(np.float32))
    s = ref["compute_score"]
    np.testing.assert_allclose(
        hybrid_scores(s["dense"], s["sparse"], s["colbert"], ref["weights"]), s["colbert+sparse+dense"], atol=1e-6
    )
    with pytest.raises(EvalkitError):
        hybrid_scores(d, None, None, [1, 1, 0])


def test_batches_and_slices_do_not_change_the_outputs(m3, encoded, ref, monkeypatch):
    import evalkit.models.m3 as m3mod

    monkeypatch.setattr(m3mod, "SLICE_FLOATS", 2000)  # several Core.run slices, each padded to its own longest
    again = m3.encode(ref["sentences"], return_sparse=True, return_colbert_vecs=True, batch_size=1, max_length=64)
    assert np.abs(again["dense_vecs"] - encoded["dense_vecs"]).max() <= TOL
    assert lexical_diff(again["lexical_weights"], encoded["lexical_weights"]) <= TOL
    assert max(np.abs(a - b).max() for a, b in zip(again["colbert_vecs"], encoded["colbert_vecs"])) <= TOL
    dense_only = m3.encode(ref["sentences"], max_length=64)
    assert dense_only["lexical_weights"] is None and dense_only["colbert_vecs"] is None
    assert np.abs(dense_only["dense_vecs"] - encoded["dense_vecs"]).max() <= TOL
    single = m3.encode(ref["sentences"][2], return_sparse=True, return_colbert_vecs=True, max_length=64)
    assert single["dense_vecs"].shape == (32,) and isinstance(single["lexical_weights"], dict)
    assert single["colbert_vecs"].shape == encoded["colbert_vecs"][2].shape
    empty = m3.encode([], return_sparse=True, return_colbert_vecs=True)
    assert empty["dense_vecs"].shape[0] == 0 and empty["lexical_weights"] == [] and empty["colbert_vecs"] == []
    assert m3.compute_score([]) == []


def test_dense_vectors_of_a_full_pass_fill_the_cache(tmp_path, ref):
    from evalkit.cache import EmbeddingCache

    cache = EmbeddingCache(tmp_path / "cache")
    m = BGEM3FlagModel(str(MODEL), use_fp16=False, devices="cpu", passage_max_length=64, cache=cache)
    full = m.encode(ref["sentences"], return_sparse=True, return_colbert_vecs=True)
    assert m.embedder.counts["encoded"] == len(ref["sentences"])
    dense = m.encode(ref["sentences"])["dense_vecs"]  # all from the cache now
    assert m.embedder.counts["cached"] == len(ref["sentences"]) and m.embedder.counts["encoded"] == len(ref["sentences"])
    assert np.abs(dense - full["dense_vecs"]).max() <= TOL
    m.close()


def test_heads_are_needed_only_for_sparse_and_colbert(tmp_path, ref):
    folder = tmp_path / "no-heads"
    shutil.copytree(MODEL, folder)
    for f in ("colbert_linear.pt", "sparse_linear.pt"):
        (folder / f).unlink()
    m = BGEM3FlagModel(str(folder), use_fp16=False, devices="cpu")
    assert m.encode(ref["sentences"][:2], max_length=64)["dense_vecs"].shape == (2, 32)
    with pytest.raises(EvalkitError, match="colbert_linear.pt"):
        m.encode(ref["sentences"][:2], return_sparse=True)
    with pytest.raises(EvalkitError):
        m.encode(ref["sentences"][:2], return_dense=False)
    m.close()


def test_catalog_and_run_plan_entry_points():
    from evalkit.models.catalog import get_spec
    from evalkit.models.m3 import is_multi_function

    spec = get_spec("bge-m3")
    assert (spec.hub_id, spec.pooling, spec.max_length, spec.normalize) == ("BAAI/bge-m3", "cls", 8192, True)
    assert spec.kind == "embedder" and is_multi_function(spec)  # dense evaluation runs as for any embedder
    assert is_multi_function(get_spec("BAAI/bge-m3"))
    assert not is_multi_function(get_spec("bge-small-en-v1.5"))
    local = get_spec(str(MODEL), max_length=64)
    assert is_multi_function(local)
    m = BGEM3FlagModel.from_spec(local, devices="cpu", batch_size=4)
    assert m.embedder.max_length == 64 and m.query_max_length == 64 and m.embedder.dtype == "fp32"
    out = m.encode_queries(["what is bge m3?"], return_sparse=True)
    assert out["dense_vecs"].shape == (1, 32) and len(out["lexical_weights"]) == 1
    m.close()


def test_two_devices_and_oom_back_off(encoded, ref):
    """The M3 head runs in the core's worker processes (two CPU workers stand in for two GPUs) and
    under its out-of-memory back-off like any other head."""
    m = BGEM3FlagModel(str(MODEL), use_fp16=False, devices=["cpu", "cpu"], batch_size=2)
    two = m.encode(ref["sentences"], return_sparse=True, return_colbert_vecs=True, max_length=64)
    m.close()
    assert np.abs(two["dense_vecs"] - encoded["dense_vecs"]).max() <= TOL
    assert lexical_diff(two["lexical_weights"], encoded["lexical_weights"]) <= TOL
    assert max(np.abs(a - b).max() for a, b in zip(two["colbert_vecs"], encoded["colbert_vecs"])) <= TOL

    m = BGEM3FlagModel(str(MODEL), use_fp16=False, devices="cpu", batch_size=8)
    net = m.model
    real, calls = net.forward, []

    def forward(*a, **kw):
        calls.append(kw["input_ids"].shape[0])
        if kw["input_ids"].shape[0] > 2:
            raise RuntimeError("CUDA out of memory (simulated)")
        return real(*a, **kw)

    net.forward = forward
    again = m.encode(ref["sentences"], return_sparse=True, return_colbert_vecs=True, max_length=64)
    assert max(calls) > 2 and m.core.config.stats["oom_retries"] > 0
    assert lexical_diff(again["lexical_weights"], encoded["lexical_weights"]) <= TOL
    assert max(np.abs(a - b).max() for a, b in zip(again["colbert_vecs"], encoded["colbert_vecs"])) <= TOL
