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
from tests.offline_run import SCIFACT

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

    import threading

    monkeypatch.setattr(m3mod, "SLICE_FLOATS", 2000)  # several Core.run slices, each padded to its own longest
    core = m3.embedder.core
    tokenized, real = [], core.tokenize
    monkeypatch.setattr(core, "tokenize", lambda t, ml: tokenized.append((len(t), threading.current_thread().name)) or real(t, ml))
    again = m3.encode(ref["sentences"], return_sparse=True, return_colbert_vecs=True, batch_size=1, max_length=64)
    # at batch size 1 a slice holds 4 texts, each tokenised in the background one slice ahead of the device
    assert [n for n, _ in tokenized] == [4] * (len(ref["sentences"]) // 4) + [len(ref["sentences"]) % 4] * bool(len(ref["sentences"]) % 4)
    assert all(name.startswith("evalkit-ahead") for _, name in tokenized)
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


def test_widths_rounded_up_as_on_a_gpu_keep_the_three_outputs(encoded, ref):
    """A GPU pads a batch to a multiple of PAD_MULTIPLE, past its slice's longest text: the lexical weights
    and ColBERT vectors are cut back to the slice's width, the outputs unchanged (a CPU core set so)."""
    from evalkit.models.encoder import PAD_MULTIPLE

    m = BGEM3FlagModel(str(MODEL), use_fp16=False, devices="cpu")
    m.embedder.core.pad_multiple = PAD_MULTIPLE
    lengths = [len(f["input_ids"]) for f in m.embedder.core.tokenize(ref["sentences"], 64)]
    assert any(k % PAD_MULTIPLE for k in lengths)
    again = m.encode(ref["sentences"], return_dense=True, return_sparse=True, return_colbert_vecs=True, **ref["encode_kwargs"])
    m.close()
    assert np.abs(again["dense_vecs"] - encoded["dense_vecs"]).max() <= TOL
    assert lexical_diff(again["lexical_weights"], encoded["lexical_weights"]) <= TOL
    assert all(a.shape == b.shape for a, b in zip(again["colbert_vecs"], encoded["colbert_vecs"]))
    assert max(np.abs(a - b).max() for a, b in zip(again["colbert_vecs"], encoded["colbert_vecs"])) <= TOL


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


def test_lexical_weights_persist_in_the_cache(tmp_path, ref):
    """A pass that computes lexical weights stores them (token ids and weights, in order); a later
    request for lexical weights alone, from another model object on the same cache (another run),
    takes them from there, identical, and encodes nothing. Another max length or another sparse head
    is another namespace."""
    import torch

    from evalkit.cache import EmbeddingCache
    from evalkit.models.m3 import _pack_lexical, _unpack_lexical

    texts = ref["sentences"]
    cache = EmbeddingCache(tmp_path / "cache")
    first = BGEM3FlagModel(str(MODEL), use_fp16=False, devices="cpu", passage_max_length=64, cache=cache)
    full = first.encode(texts, return_dense=False, return_sparse=True, return_colbert_vecs=True)["lexical_weights"]
    first.close()
    again = BGEM3FlagModel(str(MODEL), use_fp16=False, devices="cpu", passage_max_length=64, cache=cache)
    lex = again.encode(texts + texts[:2], return_dense=False, return_sparse=True)["lexical_weights"]
    assert again.embedder.counts["encoded"] == 0 and again.embedder.counts["cached"] == len(set(texts))
    assert [list(d.items()) for d in lex] == [list(d.items()) for d in full + full[:2]]  # same ids, order and float32 values
    assert _unpack_lexical(_pack_lexical({})) == {}
    again.encode(texts, max_length=32, return_dense=False, return_sparse=True)
    assert again.embedder.counts["encoded"] == len(set(texts))
    again.close()
    folder = tmp_path / "model"  # the same folder with another sparse head: encoded again
    shutil.copytree(MODEL, folder)
    n = len(set(texts))
    for changed, encoded in ((False, n), (False, 0), (True, n)):
        if changed:
            state = torch.load(folder / "sparse_linear.pt", weights_only=True)
            torch.save({k: v * 2 for k, v in state.items()}, folder / "sparse_linear.pt")
        m = BGEM3FlagModel(str(folder), use_fp16=False, devices="cpu", passage_max_length=64, cache=cache)
        got = m.encode(texts, return_dense=False, return_sparse=True)["lexical_weights"]
        assert m.embedder.counts["encoded"] == encoded, changed
        m.close()
    assert lexical_diff(got, full) > TOL


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
    from evalkit.evaluation import Models
    from evalkit.plan import Settings, resolve_model

    models = Models(Settings(batch_size=4, use_cache=False))
    model = resolve_model(local)
    m = models.m3(model)
    assert m.embedder is models.embedder(model)  # one network for the dense unit and the other modes
    assert m.embedder.max_length == 64 and m.query_max_length == 64 and m.embedder.dtype == "fp32"
    out = m.encode_queries(["what is bge m3?"], return_sparse=True)
    assert out["dense_vecs"].shape == (1, 32) and len(out["lexical_weights"]) == 1
    models.close()


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


# ----------------------------------------------------------------------------- the run plan's modes
def _search_inputs(tmp_path):
    from evalkit.evaluation import Models
    from evalkit.models.adapters import EmbeddingAdapter
    from evalkit.models.catalog import get_spec
    from evalkit.plan import Settings, resolve_model
    from evalkit.rerank import load_task_data, splits_of
    from evalkit.tasks import build_task, task_from_folder
    from tests.test_plan import retrieval_folder

    ts = task_from_folder(retrieval_folder(tmp_path))
    task = load_task_data(build_task(ts), ts)
    ((subset, split, data),) = list(splits_of(task))
    models = Models(Settings(batch_size=4, use_cache=False))
    model = resolve_model(get_spec(str(MODEL)))
    m3 = models.m3(model)
    ctx = dict(task_metadata=task.metadata, hf_split=split, hf_subset=subset)
    return models, m3, EmbeddingAdapter(model.spec, m3.embedder), data, ctx


def test_search_modes_equal_the_pairwise_scores(tmp_path, monkeypatch):
    """M3Search (what mteb's retrieval evaluator calls for a mode) gives FlagEmbedding's pairwise
    scores: sparse over the whole corpus (its best documents among those sharing a token), ColBERT
    and the hybrid over given candidates. Blocks of at most 2 queries and a few candidates here,
    so that the blocking is exercised (the other tests run the default sizes)."""
    from mteb.types import PromptType

    import evalkit.models.m3_search as m3_search
    from evalkit.models.m3_search import M3Mode, M3Search

    monkeypatch.setattr(m3_search, "QUERY_BLOCK", 2)
    monkeypatch.setattr(m3_search, "RESCORE_BYTES", 7 * 40 * 4 * 32)  # ~7 candidates of these ~40-character texts
    seen_blocks = []
    blocks = m3_search._blocks
    monkeypatch.setattr(m3_search, "_blocks", lambda *a: (seen_blocks.append(b) or b for b in blocks(*a)))
    models, m3, adapter, data, ctx = _search_inputs(tmp_path)
    probe = M3Search(adapter, m3, M3Mode("sparse"))
    q_ids, d_ids = list(data["queries"]["id"]), list(data["corpus"]["id"])
    q_texts = probe._texts(data["queries"], PromptType.query, 4, **ctx)
    d_texts = probe._texts(data["corpus"], PromptType.document, 4, **ctx)
    q = m3.encode(q_texts, return_sparse=True, return_colbert_vecs=True)
    d = m3.encode(d_texts, return_sparse=True, return_colbert_vecs=True)
    lex = m3.compute_lexical_matching_score(q["lexical_weights"], d["lexical_weights"])
    col = np.array([[float(m3.colbert_score(a, b)) for b in d["colbert_vecs"]] for a in q["colbert_vecs"]])
    dense = q["dense_vecs"] @ d["dense_vecs"].T
    kw = dict(encode_kwargs={"batch_size": 4}, **ctx)

    def run(mode, **extra):
        s = M3Search(adapter, m3, mode)
        s.index(data["corpus"], **kw)
        return s.search(data["queries"], **kw, **extra)

    got = run(M3Mode("sparse"), top_k=5)
    for i, qid in enumerate(q_ids):
        positive = np.sort(lex[i][lex[i] > 0])[::-1][:5]
        assert len(got[qid]) == len(positive) and np.allclose(sorted(got[qid].values(), reverse=True), positive, atol=TOL)
        assert all(abs(s - lex[i][d_ids.index(doc)]) <= TOL for doc, s in got[qid].items())
    everything = {qid: list(d_ids) for qid in q_ids}
    hybrid = (0.4 * dense + 0.2 * lex + 0.4 * col) / 1.0
    for mode, want in ((M3Mode("colbert"), col), (M3Mode("sparse"), lex), (M3Mode("hybrid", (0.4, 0.2, 0.4)), hybrid)):
        got = run(mode, top_k=len(d_ids), top_ranked=everything)
        for i, qid in enumerate(q_ids):
            assert np.abs(np.array([got[qid][doc] for doc in d_ids]) - want[i]).max() <= TOL, mode
    some = {qid: d_ids[(3 * i) % 30 : (3 * i) % 30 + 5] for i, qid in enumerate(q_ids)}  # overlapping candidate sets
    got = run(M3Mode("colbert"), top_k=5, top_ranked=some)
    for i, qid in enumerate(q_ids):
        assert list(got[qid]) == some[qid] and all(abs(got[qid][doc] - col[i][d_ids.index(doc)]) <= TOL for doc in some[qid])
    assert max(map(len, seen_blocks)) == 2 and min(map(len, seen_blocks)) == 1  # several queries a block, and a query alone
    models.close()


def _result(path: Path) -> dict:
    doc = json.loads(path.read_text())
    return {split: [{k: v for k, v in e.items() if k != "previous_results_model_meta"} for e in entries] for split, entries in doc["scores"].items()}


def test_scifact_in_every_mode(tmp_path, capsys):
    """The issue's run: SciFact with the tiny M3 in every mode, one result each, the comparison
    table across modes. The hybrid with weights [1, 0, 0] rescoring the dense top 100 is the dense
    result: the same main score and every metric at a cutoff up to 100; past it (the @1000 metrics)
    and the nAUC spreads, which use every returned score, only the top 100 are there to count."""
    from evalkit.cli import main

    out = tmp_path / "out"
    args = ["run", "--model", str(MODEL), "--tasks", "SciFact", "--m3-mode", "all", "--m3-mode", "hybrid:1,0,0",
            "--output", str(out), "--cache-dir", str(tmp_path / "cache")]
    assert main(args) == 0
    text = capsys.readouterr().out
    (dense,) = out.glob("*/*/SciFact.json")
    folder = dense.parent
    runs = {p.parent.name: p for p in folder.glob("experiments/*/SciFact.json")}
    assert sorted(runs) == ["m3-colbert-top100", "m3-hybrid-0.4-0.2-0.4-top100", "m3-hybrid-1-0-0-top100", "m3-sparse"]
    assert (folder / "SciFact.run_top100.json").is_file()
    (hybrid,), (plain,) = _result(runs["m3-hybrid-1-0-0-top100"])["test"], _result(dense)["test"]
    same = {k for k in plain if not k.startswith("nauc_") and (k.split("_at_")[-1].isdigit() and int(k.split("_at_")[-1]) <= 100)}
    assert len(same) > 30 and {k: hybrid[k] for k in same} == {k: plain[k] for k in same}
    assert hybrid["main_score"] == plain["main_score"] and hybrid["recall_at_1000"] < plain["recall_at_1000"]
    meta = json.loads(runs["m3-colbert-top100"].read_text())["evalkit"]
    assert meta["m3"] == {"mode": "colbert", "weights": None} and meta["first_stage"]["top_k"] == 100
    # one network pass per text for the modes: the sparse unit's pass kept every output, so ColBERT
    # and the hybrid take theirs from it (the hybrid [1, 0, 0] needs none: the run file's scores)
    work = {name: json.loads(p.read_text())["evalkit"]["work"] for name, p in runs.items()}
    assert work["m3-sparse"]["encoded_texts"] == SCIFACT["docs"] + 300  # the session's SciFact (tests/offline_run.py)
    assert all(w["encoded_texts"] == 0 for name, w in work.items() if name != "m3-sparse"), work
    assert work["m3-colbert-top100"]["cached_texts"] == work["m3-hybrid-0.4-0.2-0.4-top100"]["cached_texts"] > 300
    table, tests = text.split("## Compare")[1].split("### Paired significance (vs dense")
    rows = [line.split("|")[1].strip() for line in table.splitlines() if line.startswith("| ")]
    assert rows[1:] == ["dense", "sparse", "colbert", "hybrid 0.4/0.2/0.4", "hybrid 1/0/0"]  # after the head
    assert len([line for line in tests.splitlines() if line.startswith("| dense |")]) == 4


def test_modes_are_units_of_the_plan(tmp_path, capsys):
    from evalkit.cli import main
    from evalkit.fewshot import Setting
    from evalkit.models.catalog import get_spec
    from evalkit.models.m3_search import parse_m3_modes
    from evalkit.plan import Settings, make_plan
    from evalkit.tasks import task_from_folder
    from tests.test_plan import retrieval_folder, sts_folder

    ret, sts = task_from_folder(retrieval_folder(tmp_path)), task_from_folder(sts_folder(tmp_path))
    spec, settings = get_spec(str(MODEL)), Settings(output=tmp_path / "o")
    plan = make_plan(spec, [ret, sts], settings, m3_modes=parse_m3_modes("sparse"))
    assert [(u.task.name, u.variant) for u in plan.units] == [("OwnRet", "m3-sparse"), ("OwnSts", None)]
    assert plan.notes == ["M3's sparse mode scores retrieval and reranking tasks: OwnSts gets the dense vectors alone"]
    plan = make_plan(spec, [ret], settings, m3_modes=parse_m3_modes(["colbert", "hybrid:1,0,0"]), top_k=20,
                     fewshot=[Setting(0), Setting(2, seed=42)])
    assert [u.variant for u in plan.units] == [
        None, "m3-colbert-top20", "m3-hybrid-1-0-0-top20",
        "fewshot-2-random-s42", "fewshot-2-random-s42-m3-colbert-top20", "fewshot-2-random-s42-m3-hybrid-1-0-0-top20"]
    assert plan.units[1].first_stage == plan.units[0] and plan.units[5].first_stage == plan.units[3]
    assert plan.units[4].setting_label == "M3 colbert of the dense top 20, 2-shot random (seed 42)"
    assert [m.label for m in parse_m3_modes("all")] == ["dense", "sparse", "colbert", "hybrid 0.4/0.2/0.4"]
    out = tmp_path / "out"  # the sparse, colbert and hybrid modes need a retrieval or reranking task
    assert main(["run", "--model", str(MODEL), "--tasks", str(sts_folder(tmp_path)), "--m3-mode", "sparse", "--output", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "scored on Retrieval, Reranking, InstructionRetrieval and InstructionReranking tasks" in err[0] and not out.exists()


def test_modes_with_few_shot_locally_and_on_ray(tmp_path, ray_local, capsys):
    """Every mode composes with few-shot queries, and Ray writes the same files as this process."""
    from evalkit.cli import main
    from tests.test_plan import result_files, retrieval_folder

    task = retrieval_folder(tmp_path)
    args = ["run", "--model", str(MODEL), "--tasks", str(task), "--m3-mode", "all", "--fewshot", "2", "--top-k", "10",
            "--cache-dir", str(tmp_path / "cache")]
    assert main([*args, "--output", str(tmp_path / "local")]) == 0
    assert main([*args, "--output", str(tmp_path / "ray"), "--ray", "local", "--ray-workers", "2"]) == 0
    capsys.readouterr()
    local = result_files(tmp_path / "local")
    assert sorted(Path(k).parent.name for k in local) == [
        "fewshot-2-random-s42", "fewshot-2-random-s42", "fewshot-2-random-s42-m3-colbert-top10",
        "fewshot-2-random-s42-m3-hybrid-0.4-0.2-0.4-top10", "fewshot-2-random-s42-m3-sparse"]
    assert result_files(tmp_path / "ray") == local
    doc = json.loads(next((tmp_path / "local").rglob("fewshot-2-random-s42-m3-sparse/OwnRet.json")).read_text())["evalkit"]
    assert doc["fewshot"]["k"] == 2 and doc["m3"]["mode"] == "sparse"


def test_a_rerun_takes_the_lexical_weights_from_the_cache(tmp_path, capsys):
    """A second run of every mode (the same cache) encodes nothing for the sparse unit:
    its lexical weights persist. ColBERT vectors do not, so the colbert unit's pass encodes the
    queries and their candidates (and the hybrid takes them from it). The files are identical."""
    from evalkit.cli import main
    from tests.test_plan import result_files, retrieval_folder

    task = retrieval_folder(tmp_path)
    args = ["run", "--model", str(MODEL), "--tasks", str(task), "--m3-mode", "all", "--top-k", "5", "--cache-dir", str(tmp_path / "cache"),
            "--output", str(tmp_path / "a")]

    def dry_run() -> dict:  # unit -> (cached, tokens to encode), as --dry-run estimates them
        capsys.readouterr()
        assert main([*args, "--dry-run", "--overwrite"]) == 0
        rows = [line.split() for line in capsys.readouterr().out.splitlines() if line.startswith("model ")]
        return {r[1] if r[1].startswith("[") else "dense": (int(r[-4]), int(r[-3].replace(",", ""))) for r in rows}

    before = dry_run()  # one M3 pass (the sparse unit's) serves the later modes
    assert before["[m3-sparse]"][0] == 0 and before["[m3-sparse]"][1] > 0
    assert before["[m3-colbert-top5]"] == before["[m3-hybrid-0.4-0.2-0.4-top5]"] == (48, 0)
    assert main(args) == 0
    after = dry_run()  # lexical weights cached; ColBERT counted as if every document were a candidate (an upper bound)
    assert after["dense"] == after["[m3-sparse]"] == (48, 0) and after["[m3-hybrid-0.4-0.2-0.4-top5]"] == (48, 0)
    assert after["[m3-colbert-top5]"] == (0, before["[m3-sparse]"][1])
    assert main([*args, "--output", str(tmp_path / "b")]) == 0  # the last --output wins
    capsys.readouterr()
    work = {p.parent.name: json.loads(p.read_text())["evalkit"]["work"] for p in (tmp_path / "b").rglob("experiments/*/OwnRet.json")}
    assert work["m3-sparse"]["encoded_texts"] == 0 and work["m3-sparse"]["cached_texts"] == 12 + 36
    assert 12 < work["m3-colbert-top5"]["encoded_texts"] < 12 + 36  # the queries and their candidates, not the corpus
    assert work["m3-hybrid-0.4-0.2-0.4-top5"]["encoded_texts"] == 0
    assert result_files(tmp_path / "a") == result_files(tmp_path / "b")


def test_modes_on_a_reranking_task_score_its_own_candidates(tmp_path, capsys):
    """A Reranking task: every mode scores the task's candidates (no first stage); the hybrid
    [1, 0, 0] computes the dense scores itself there, and gives mteb's dense result."""
    from evalkit.cli import main
    from tests.conftest import write_jsonl
    from tests.test_plan import WORDS

    folder = tmp_path / "OwnRR"
    write_jsonl(folder / "test.jsonl", [
        {"query": f"what is the {w}", "positive": [f"the {w} is good"], "negative": [f"the {v} is bad" for v in WORDS if v != w][:5]}
        for w in WORDS
    ])
    (folder / "task.yaml").write_text("name: OwnRR\ntype: Reranking\n")
    out = tmp_path / "out"
    assert main(["run", "--model", str(MODEL), "--tasks", str(folder), "--m3-mode", "all,hybrid:1,0,0", "--output", str(out),
                 "--cache-dir", str(tmp_path / "cache")]) == 0
    capsys.readouterr()
    (dense,) = out.glob("*/*/OwnRR.json")
    runs = {p.parent.name: p for p in dense.parent.glob("experiments/*/OwnRR.json")}
    assert sorted(runs) == ["m3-colbert", "m3-hybrid-0.4-0.2-0.4", "m3-hybrid-1-0-0", "m3-sparse"]
    main_score = lambda p: json.loads(p.read_text())["scores"]["test"][0]["main_score"]  # noqa: E731
    assert main_score(runs["m3-hybrid-1-0-0"]) == pytest.approx(main_score(dense), abs=1e-9)
    assert len({main_score(p) for p in runs.values()}) > 1  # the modes do differ



@pytest.mark.parametrize("typ", ["InstructionRetrieval", "InstructionReranking"])
def test_modes_on_instruction_tasks_read_each_query_with_its_instruction(typ, tmp_path, capsys, monkeypatch):
    """An own InstructionRetrieval folder (the colbert and hybrid modes rescore the dense unit's top k)
    and an InstructionReranking one (every mode scores the task's candidates): every mode runs, each
    query reaches the modes as `<text> <instruction>` (mteb's dataloader), and the hybrid [1, 0, 0]
    gives the dense unit's score."""
    import evalkit.models.m3_search as m3_search
    from evalkit.cli import main
    from tests.conftest import write_jsonl
    from tests.test_plan import retrieval_folder

    folder = retrieval_folder(tmp_path, "OwnInstr")
    queries = [json.loads(line) for line in (folder / "queries.jsonl").read_text().splitlines()]
    write_jsonl(folder / "queries.jsonl", [{**q, "instruction": f"ignore documents about {q['_id']}"} for q in queries])
    if typ == "InstructionReranking":
        write_jsonl(folder / "top_ranked.jsonl", [{"query-id": q["_id"], "corpus-ids": [f"d{(i + j) % 36}" for j in range(6)]}
                                                  for i, q in enumerate(queries)])
    (folder / "task.yaml").write_text(f"name: OwnInstr\ntype: {typ}\n")
    seen = []
    texts = m3_search.M3Search._texts
    monkeypatch.setattr(m3_search.M3Search, "_texts", lambda self, data, pt, *a, **kw: seen.extend(r := texts(self, data, pt, *a, **kw)) or r)
    out = tmp_path / "out"
    assert main(["run", "--model", str(MODEL), "--tasks", str(folder), "--m3-mode", "all,hybrid:1,0,0", "--top-k", "10",
                 "--output", str(out), "--cache-dir", str(tmp_path / "cache")]) == 0, capsys.readouterr().err
    capsys.readouterr()
    (dense,) = out.glob("*/*/OwnInstr.json")
    runs = {p.parent.name: p for p in dense.parent.glob("experiments/*/OwnInstr.json")}
    top = "-top10" if typ == "InstructionRetrieval" else ""
    assert sorted(runs) == sorted([f"m3-colbert{top}", f"m3-hybrid-0.4-0.2-0.4{top}", f"m3-hybrid-1-0-0{top}", "m3-sparse"]), sorted(runs)
    main_score = lambda p: json.loads(p.read_text())["scores"]["test"][0]["main_score"]  # noqa: E731
    assert main_score(runs[f"m3-hybrid-1-0-0{top}"]) == pytest.approx(main_score(dense), abs=1e-9)
    assert sum("ignore documents about q3" in t for t in seen) >= 1, seen[:3]


def test_the_memo_serves_later_modes_and_respects_its_budget(tmp_path, ref):
    """In a run, an M3 pass keeps every output (lexical weights, dense and ColBERT vectors) for the
    later modes; past the memo's byte budget texts are simply encoded again, with the same outputs."""
    from evalkit.models.m3 import M3Memo

    models, m3, *_ = _search_inputs(tmp_path)
    texts = ref["sentences"]
    assert m3.memo is not None
    for budget, again in ((0, len(texts)), (None, 0)):
        m3.memo = M3Memo(budget)
        first = m3.encode_texts(texts, 64, 4, dense=True, sparse=True, colbert=True)
        before = m3.embedder.counts["encoded"]
        second = m3.encode_texts(texts, 64, 4, dense=False, sparse=False, colbert=True)
        assert m3.embedder.counts["encoded"] - before == again
        assert all(np.array_equal(a, b) for a, b in zip(first["colbert_vecs"], second["colbert_vecs"]))
        lex = m3.encode_texts(texts, 64, 4, dense=False, sparse=True)["lexical_weights"]
        assert lexical_diff(lex, first["lexical_weights"]) == 0
    assert m3.memo.nbytes > 0 and len(m3.memo.rows) == len(set(texts))
    models.close()
