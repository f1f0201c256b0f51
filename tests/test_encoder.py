"""The encoder core and FlagModel: reference parity, pooling, ordering, OOM back-off, devices."""
from __future__ import annotations

import resource
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from evalkit import EvalkitError, FlagModel
from evalkit.models.encoder import Core, CoreConfig, EmbedHead, keep_freed_memory, pool

INSTR = "Represent this sentence for searching relevant passages: "
QUERIES = ["the bank card", "a king and the queen of the river city", "music", "happy sad good bad film about the king"]
DOCS = ["the protein of the cell is a gene", "a", "money transfer to the bank account balance is good for the city"] * 3


def reference_bge(path, texts, instruction=None):
    """The BGE model card's plain-transformers recipe: CLS of the last hidden state, L2-normalised."""
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path).eval()
    if instruction:
        texts = [instruction + q for q in texts]
    enc = tok(texts, padding=True, truncation=True, return_tensors="pt", max_length=512)
    with torch.no_grad():
        out = model(**enc)
    return torch.nn.functional.normalize(out[0][:, 0], p=2, dim=1).numpy()


def test_encode_queries_matches_bge_reference(tiny_bert):
    m = FlagModel(str(tiny_bert), query_instruction_for_retrieval=INSTR, batch_size=3)
    got = m.encode_queries(QUERIES)
    assert got.dtype == np.float32 and got.shape == (len(QUERIES), 32)
    np.testing.assert_allclose(got, reference_bge(tiny_bert, QUERIES, INSTR), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_encode_corpus_never_gets_the_instruction(tiny_bert):
    m = FlagModel(str(tiny_bert), query_instruction_for_retrieval=INSTR)
    np.testing.assert_allclose(m.encode_corpus(DOCS), reference_bge(tiny_bert, DOCS), atol=1e-5)
    np.testing.assert_allclose(m.encode(DOCS), reference_bge(tiny_bert, DOCS), atol=1e-5)
    one = m.encode_corpus({"title": "the cell", "text": "a gene"})
    np.testing.assert_allclose(one, reference_bge(tiny_bert, ["the cell a gene"])[0], atol=1e-5)


def test_order_and_batch_size_do_not_change_vectors(tiny_bert):
    texts = QUERIES + DOCS
    a = FlagModel(str(tiny_bert), batch_size=1).encode(texts)
    b = FlagModel(str(tiny_bert), batch_size=64).encode(texts)
    np.testing.assert_allclose(a, b, atol=1e-5)
    rev = FlagModel(str(tiny_bert), batch_size=2).encode(texts[::-1])
    np.testing.assert_allclose(rev[::-1], a, atol=1e-5)
    single = FlagModel(str(tiny_bert)).encode(texts[1])
    assert single.shape == (32,)


def test_outputs_fetched_from_the_device_in_groups_keep_their_order(tiny_bert, monkeypatch):
    """Head outputs wait on the device and come back FETCH_BYTES at a time: any grouping, the same rows."""
    import evalkit.models.encoder as enc

    texts = QUERIES + DOCS
    at_end = FlagModel(str(tiny_bert), batch_size=2).encode(texts)
    monkeypatch.setattr(enc, "FETCH_BYTES", 3 * 2 * 32 * 4)  # every third batch of 2 rows
    np.testing.assert_array_equal(FlagModel(str(tiny_bert), batch_size=2).encode(texts), at_end)


def test_mean_pooling_equals_sentence_transformers_minilm(minilm_path):
    from sentence_transformers import SentenceTransformer

    texts = ["A man is playing a guitar.", "The new movie is awesome", "short", "Mutation adds new genetic variation " * 30]
    ref = SentenceTransformer(str(minilm_path), device="cpu").encode(texts, batch_size=2, convert_to_numpy=True)
    got = FlagModel(str(minilm_path), pooling_method="mean", max_length=256, batch_size=2).encode(texts)
    np.testing.assert_allclose(got, ref, atol=1e-5)


def test_catalog_name_resolves_offline_to_the_packaged_minilm(minilm_path):
    got = FlagModel("all-MiniLM-L6-v2", pooling_method="mean", max_length=256).encode(["hello world"])
    ref = FlagModel(str(minilm_path), pooling_method="mean", max_length=256).encode(["hello world"])
    np.testing.assert_array_equal(got, ref)


def test_last_token_pooling_left_and_right_padding_agree():
    torch.manual_seed(0)
    h = torch.randn(3, 5, 4)
    right = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
    expected = torch.stack([h[0, 2], h[1, 4], h[2, 0]])
    torch.testing.assert_close(pool(h, right, "last_token"), expected)
    left = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [0, 0, 0, 0, 1]])
    torch.testing.assert_close(pool(h, left, "last_token"), h[:, -1])
    mean = pool(h, right, "mean")
    torch.testing.assert_close(mean[0], h[0, :3].mean(0))


def test_decoder_last_token_left_equals_right_padding(tiny_decoder):
    texts = ["the query", "given a web search query retrieve relevant passages", "yes"]
    r = FlagModel(str(tiny_decoder), pooling_method="last_token", padding_side="right").encode(texts)
    l = FlagModel(str(tiny_decoder), pooling_method="last_token", padding_side="left").encode(texts)
    np.testing.assert_allclose(r, l, atol=1e-5)


def test_oom_backs_off_to_smaller_batches(tiny_bert, monkeypatch):
    m = FlagModel(str(tiny_bert), batch_size=8)
    ref = m.encode(DOCS + QUERIES)
    net = m.model
    real = net.forward
    seen = []

    def forward(*a, **kw):
        n = kw["input_ids"].shape[0]
        seen.append(n)
        if n > 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1 GiB")
        return real(*a, **kw)

    monkeypatch.setattr(net, "forward", forward)
    m2 = FlagModel(str(tiny_bert), batch_size=8)
    m2.embedder._core = m.embedder.core  # same network, patched
    got = m2.encode(DOCS + QUERIES)
    np.testing.assert_allclose(got, ref, atol=1e-6)
    assert max(seen) == 7 and seen[-1] <= 2  # 7 distinct texts, first tried in one batch and m.embedder.core.config.stats["oom_retries"] >= 2


def test_oom_at_batch_size_one_is_a_clear_error(tiny_bert, monkeypatch):
    m = FlagModel(str(tiny_bert), batch_size=4)
    net = m.model

    def forward(*a, **kw):
        raise torch.OutOfMemoryError("out of memory")

    monkeypatch.setattr(net, "forward", forward)
    with pytest.raises(EvalkitError, match="out of memory .* batch size 1"):
        m.encode(["the bank"])


def test_nan_embeddings_are_refused(tiny_bert, monkeypatch):
    m = FlagModel(str(tiny_bert))
    net = m.model
    real = net.forward

    def forward(*a, **kw):
        out = real(*a, **kw)
        out.last_hidden_state[:] = float("nan")
        return out

    monkeypatch.setattr(net, "forward", forward)
    with pytest.raises(EvalkitError, match="NaN or infinite"):
        m.encode(["the bank"])


def test_batch_size_zero_is_refused(tiny_bert):
    with pytest.raises(EvalkitError, match="batch size"):
        FlagModel(str(tiny_bert), batch_size=0)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_a_cpu_core_reuses_freed_activation_memory_without_page_faults(tiny_bert):
    Core(CoreConfig(str(tiny_bert)), "cpu")  # a CPU core sets the allocator up, process-wide
    assert keep_freed_memory()

    def faults_for_ten_batches_of_12mb():
        start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(10):
            x = torch.ones(3 << 20)  # 12 MiB, as one 2048-token MiniLM feed-forward activation
            del x
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start

    faults_for_ten_batches_of_12mb()
    assert faults_for_ten_batches_of_12mb() < 300  # glibc's defaults: ~18,000 (fresh pages every time)


def test_cpu_batches_hold_a_token_budget_and_give_the_same_vectors(tiny_bert):
    """Rows per batch shrink as texts grow so that rows x padded width stays within the budget;
    the vectors do not depend on the batching."""
    texts = [" ".join(["bank"] * n) for n in (100, 60, 30, 12, 5, 3, 2, 1)] * 2
    free = Core(CoreConfig(str(tiny_bert), batch_size=16, max_batch_tokens=10**6))
    feats = free.tokenize(texts, 128)
    ref = free.run(feats, EmbedHead("cls"))
    assert free.config.stats["batches"] == 1
    core = Core(CoreConfig(str(tiny_bert), batch_size=16, max_batch_tokens=128), model=free.model, tokenizer=free.tokenizer)
    shapes = []
    real = core.model.forward
    core.model.forward = lambda *a, **kw: shapes.append(tuple(kw["input_ids"].shape)) or real(*a, **kw)
    np.testing.assert_allclose(core.run(feats, EmbedHead("cls")), ref, atol=1e-6)
    assert all(rows * width <= 128 or rows == 1 for rows, width in shapes), shapes
    assert shapes[0][0] == 1 and max(rows for rows, _ in shapes) > 4  # one long text alone, many short ones together
    assert Core(CoreConfig(str(tiny_bert)), model=free.model, tokenizer=free.tokenizer).max_batch_tokens == 2048  # the CPU default


def test_tokenize_keeps_only_what_the_network_needs(minilm_path):
    """A single text's token types are all 0 for BERT: left out (the network takes zeros, the same
    bits); a pair keeps them; the attention mask is built per batch, never kept per text."""
    core = Core(CoreConfig(str(minilm_path)))
    single = core.tokenize(QUERIES, 32)
    assert all(set(f) == {"input_ids"} for f in single)
    pairs = core.tokenize([(q, d) for q, d in zip(QUERIES, DOCS)], 32)
    assert all(set(f) == {"input_ids", "token_type_ids"} and any(f["token_type_ids"]) for f in pairs)
    zeros = [{**f, "token_type_ids": [0] * len(f["input_ids"])} for f in single]
    np.testing.assert_array_equal(core.run(single, EmbedHead("cls")), core.run(zeros, EmbedHead("cls")))


def test_two_devices_give_the_same_vectors(tiny_bert):
    """One worker process per device (here two CPU workers stand in for two GPUs)."""
    texts = [f"{w} the bank {i}" for i, w in enumerate(["king", "queen", "river", "city"] * 5)]
    one = FlagModel(str(tiny_bert), batch_size=4, devices="cpu").encode(texts)
    m = FlagModel(str(tiny_bert), batch_size=4, devices=["cpu", "cpu"])
    two = m.encode(texts)
    m.stop_self_pool()
    np.testing.assert_allclose(one, two, atol=1e-6)


def test_bf16_is_close_to_fp32(minilm_path):
    texts = ["A man is playing a guitar.", "The new movie is awesome", "Mutation adds new genetic variation " * 10]
    a = FlagModel(str(minilm_path), pooling_method="mean", dtype="fp32").encode(texts)
    b = FlagModel(str(minilm_path), pooling_method="mean", dtype="bf16").encode(texts)
    assert (np.sum(a * b, axis=1) > 0.99).all()
    with pytest.raises(EvalkitError, match="fp16 is for GPUs"):
        FlagModel(str(minilm_path), dtype="fp16", devices="cpu")


def test_duplicates_are_encoded_once(tiny_bert):
    m = FlagModel(str(tiny_bert))
    out = m.encode(["a", "b", "a", "a"])
    np.testing.assert_array_equal(out[0], out[2])
    assert m.embedder.core.config.stats["texts"] == 2


def _tied_decoder(folder, tiny_decoder):
    """tiny_decoder's network with its lm_head tied to the input embeddings (as Gemma and Qwen2 rerankers are)."""
    import shutil

    from transformers import AutoConfig, MistralForCausalLM

    shutil.copytree(tiny_decoder, folder)
    cfg = AutoConfig.from_pretrained(folder)
    cfg.tie_word_embeddings = True
    torch.manual_seed(4)
    model = MistralForCausalLM(cfg).eval()
    assert model.lm_head.weight is model.model.embed_tokens.weight
    model.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("case", ["embedder", "cross-encoder", "decoder", "tied-lm-head", "m3"])
def test_bf16_keeps_linear_weights_in_bf16_with_autocasts_bits(case, request, tmp_path):
    """--dtype bf16 stores the linear layers' weights in bf16 (half the memory) and gives, bit for bit,
    what autocast over the fp32 weights gives; parameters a Linear shares with an embedding stay fp32."""
    from evalkit.models.encoder import LogitHead, TokenLogitHead
    from evalkit.models.m3 import M3Head, head_files

    texts = QUERIES + DOCS + ["the cell " * 40]
    kind, head = "embedder", EmbedHead("cls")
    if case == "embedder":
        path = request.getfixturevalue("tiny_bert")
    elif case == "cross-encoder":
        path, kind, head = request.getfixturevalue("tiny_cross_encoder"), "reranker", LogitHead()
        texts = [(q, d) for q in QUERIES for d in DOCS[:3]]
    elif case == "decoder":
        path, head = request.getfixturevalue("tiny_decoder"), EmbedHead("last_token")
    elif case == "tied-lm-head":
        path, kind, head = _tied_decoder(tmp_path / "tied", request.getfixturevalue("tiny_decoder")), "llm-reranker", TokenLogitHead(5)
    else:
        path = Path(__file__).resolve().parent / "data" / "m3" / "model"  # the tiny M3 of test_m3.py
        head = M3Head(*head_files(path), width=64, dense=True, sparse=True, colbert=True)
    ref_core = Core(CoreConfig(str(path), kind=kind, dtype="fp32"), "cpu")
    feats = ref_core.tokenize(texts, 64)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast over the fp32 weights, as before
        ref = ref_core.run(feats, head, batch_size=4)
    core = Core(CoreConfig(str(path), kind=kind, dtype="bf16"), "cpu")
    got = core.run(feats, head, batch_size=4)
    np.testing.assert_array_equal(got, ref)
    assert not np.array_equal(got, ref_core.run(feats, head, batch_size=4))  # and it is bf16, not fp32

    linears = [m for m in core.model.modules() if isinstance(m, torch.nn.Linear)]
    embeddings = [m for m in core.model.modules() if isinstance(m, torch.nn.Embedding)]
    assert linears and embeddings and all(e.weight.dtype == torch.float32 for e in embeddings)
    tied = case == "tied-lm-head"
    assert all(m.weight.dtype == (torch.float32 if tied and m is core.model.lm_head else torch.bfloat16) for m in linears)
    if tied:
        assert core.model.lm_head.weight is core.model.model.embed_tokens.weight
    held = sum(p.numel() * p.element_size() for p in core.model.parameters())
    fp32 = sum(p.numel() * p.element_size() for p in ref_core.model.parameters())
    linear_bytes = sum(p.numel() * 2 for m in linears if m.weight.dtype == torch.bfloat16 for p in m.parameters())
    assert held == fp32 - linear_bytes


AVX2_ONLY = {"fpu", "sse4_2", "avx", "avx2", "fma"}  # an AMD EPYC without AVX-512 (issue 27)


@pytest.mark.parametrize("flags, dtype, device, warned", [
    (AVX2_ONLY, "bf16", "cpu", True),
    (AVX2_ONLY | {"avx512f"}, "bfloat16", None, True),
    (AVX2_ONLY | {"avx512f", "avx512_bf16"}, "bf16", "cpu", False),
    (AVX2_ONLY | {"amx_bf16", "amx_tile"}, "bf16", "cpu", False),
    (AVX2_ONLY, "fp32", "cpu", False),
    (AVX2_ONLY, None, "cpu", False),
    (AVX2_ONLY, "bf16", "cuda:0", False),
])
def test_bf16_on_a_cpu_without_bf16_units_is_said_in_one_line(flags, dtype, device, warned):
    from evalkit.models.encoder import cpu_bf16_note

    note = cpu_bf16_note(dtype, device, flags)
    assert (note is not None) == warned, note
    if warned:
        assert "\n" not in note and "use --dtype fp32" in note and "avx2" in note and "0.43x" in note, note


def test_the_bf16_note_is_in_the_plan_before_anything_runs(tiny_bert, tmp_path, monkeypatch, caplog, capsys):
    import evalkit
    from evalkit import api, cli
    from evalkit.models import encoder
    from tests.test_task_types import sts_folder

    monkeypatch.setattr(encoder, "cpu_flags", lambda: set(AVX2_ONLY))
    task = sts_folder(tmp_path / "OwnSTS")
    the_plan = api.plan(str(tiny_bert), [str(task)], dtype="bf16", device="cpu", output=tmp_path / "r")
    assert any("--dtype bf16 is slow on this CPU" in n for n in the_plan.notes), the_plan.notes
    assert not (tmp_path / "r").exists()  # said before anything runs
    assert cli.main(["run", "--model", str(tiny_bert), "--tasks", str(task), "--dtype", "bf16", "--device", "cpu",
                     "--output", str(tmp_path / "r"), "--dry-run"]) == 0
    assert "note: --dtype bf16 is slow on this CPU" in capsys.readouterr().out
    with caplog.at_level("WARNING", logger="evalkit"):
        evalkit.evaluate(str(tiny_bert), [str(task)], dtype="bf16", device="cpu", output=tmp_path / "r", cache=False)
    assert any("--dtype bf16 is slow on this CPU" in r.getMessage() for r in caplog.records)


def test_gpu_token_budget_is_sized_from_free_memory(monkeypatch):
    """gpu_batch_tokens with the free memory given (no GPU here): half of it over one token's activations."""
    from types import SimpleNamespace

    import torch

    from evalkit.models.encoder import gpu_batch_tokens

    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (8 << 30, 16 << 30))
    large = SimpleNamespace(config=SimpleNamespace(hidden_size=1024, intermediate_size=4096, vocab_size=32000),
                            parameters=lambda: iter([torch.zeros(1, dtype=torch.bfloat16)]))
    per_token = (8 * 1024 + 2 * 4096) * 2 + 4 * 1024  # bf16 activations + the fp32 head output
    assert gpu_batch_tokens(large, "cuda:0", "embedder") == int(0.5 * (8 << 30) / per_token) // 1024 * 1024 == 115712
    # an LLM reranker's fp32 logits over the vocabulary count too
    assert gpu_batch_tokens(large, "cuda:0", "llm-reranker") == int(0.5 * (8 << 30) / (per_token + 4 * 32000)) // 1024 * 1024
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (1 << 20, 16 << 30))
    assert gpu_batch_tokens(large, "cuda:0", "embedder") == 1024  # never below 1024


def test_widths_rounded_up_as_on_a_gpu_give_the_same_vectors(tiny_bert):
    """A GPU pads to multiples of PAD_MULTIPLE: the extra padding is masked, the vectors stay (a CPU core set so)."""
    from evalkit.models.encoder import PAD_MULTIPLE, Core, CoreConfig, EmbedHead

    texts = [" ".join(["query passage"] * k) for k in range(1, 30)]
    core = Core(CoreConfig(str(tiny_bert), "embedder", batch_size=8), ["cpu"])
    plain = core.run(core.tokenize(texts, 64), EmbedHead("mean"))
    core.pad_multiple = PAD_MULTIPLE
    feats = core.tokenize(texts, 64)
    assert core.pad(feats[:3])["input_ids"].shape[1] % PAD_MULTIPLE == 0
    np.testing.assert_allclose(core.run(feats, EmbedHead("mean")), plain, rtol=0, atol=1e-6)


def test_ahead_runs_the_next_items_work_in_the_background_and_keeps_order_and_errors():
    import threading

    from evalkit.models.encoder import ahead

    where = []

    def work(x):
        where.append(threading.current_thread().name)
        if x == 3:
            raise ValueError("bad item 3")
        return x * x

    got = []
    with pytest.raises(ValueError, match="bad item 3"):
        for item, out in ahead([0, 1, 2, 3, 4], work):
            got.append((item, out))
    assert got == [(0, 0), (1, 1), (2, 4)]  # the error surfaces at its own item's turn, after the ones before it
    assert where and all(name.startswith("evalkit-ahead") for name in where)
    where.clear()
    assert list(ahead([1, 2], work, background=False)) == [(1, 1), (2, 4)]
    assert where == [threading.current_thread().name] * 2


def test_an_embedder_tokenises_each_slice_ahead_of_the_device_with_the_same_vectors(tiny_bert, monkeypatch):
    """The first slice runs as soon as its own tokens are there: when it does, at most one more slice has been
    tokenised (the one ahead), not the whole input; the vectors are those of tokenising everything first."""
    from evalkit.models import embedder as embedder_module
    from evalkit.models.embedder import Embedder

    monkeypatch.setattr(embedder_module, "COMMIT_EVERY", 8)
    texts = [f"{w} " * (1 + i % 7) + str(i) for i, w in enumerate((QUERIES + DOCS) * 4)]
    emb = Embedder(tiny_bert, batch_size=2)
    core = emb.core
    events = []
    real_tokenize, real_run = core.tokenize, core.run
    monkeypatch.setattr(core, "tokenize", lambda t, ml: events.append("tok") or real_tokenize(t, ml))
    monkeypatch.setattr(core, "run", lambda feats, head, bs=None: events.append("run") or real_run(feats, head, bs))
    got = emb.embed(texts)
    assert events.count("tok") == events.count("run") == -(-len(texts) // 8)
    assert events.index("run") <= 2  # tokenised: the first slice, at most the next one
    want = real_run(real_tokenize(texts, emb.max_length), emb.head)
    np.testing.assert_allclose(got, want, atol=1e-6)
    np.testing.assert_allclose(emb.encode_uncached(texts), want, atol=1e-6)


def test_a_reranker_tokenises_its_pairs_slice_by_slice_ahead_with_the_same_scores(tiny_cross_encoder, monkeypatch):
    """Pairs are tokenised a slice (a few full batches) ahead of the device, in their own order (each query's
    candidates together, so its text is tokenised once); the scores come back in the pairs' order, equal to
    tokenising them all first."""
    from evalkit.models.encoder import LogitHead
    from evalkit.models.reranker import FlagReranker

    reranker = FlagReranker(str(tiny_cross_encoder), batch_size=2)
    pairs = [(q, d) for q in QUERIES for d in DOCS]  # 36 pairs, slices of 4 x 2 rows
    sliced, parts = [], []
    real = reranker.features
    monkeypatch.setattr(reranker, "features", lambda part, ml: sliced.append(len(part)) or parts.append(list(part)) or real(part, ml))
    got = np.asarray(reranker.compute_score(pairs))
    assert sliced == [8, 8, 8, 8, 4]
    assert parts == [pairs[s : s + 8] for s in range(0, len(pairs), 8)]  # in the pairs' own order
    want = reranker.core.run(real(pairs, reranker.max_length), LogitHead())
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_tokenizer_threads_on_a_gpu_host_and_one_on_a_cpu(monkeypatch):
    from evalkit.models import encoder

    monkeypatch.setattr(encoder.os, "sched_getaffinity", lambda pid: set(range(16)))
    assert encoder.tokenizer_threads(["cpu"]) == 1  # the CPU's cores are the device's
    assert encoder.tokenizer_threads(["cuda:0"]) == 8  # 15 idle cores, capped
    monkeypatch.setattr(encoder.os, "sched_getaffinity", lambda pid: set(range(6)))
    assert encoder.tokenizer_threads(["cuda:0", "cuda:1"]) == 4  # a core per device feeds it
    monkeypatch.setattr(encoder.os, "sched_getaffinity", lambda pid: {0})
    assert encoder.tokenizer_threads(["cuda:0"]) == 1


@pytest.mark.parametrize("which", ["texts", "pairs"])
def test_tokenising_in_threads_gives_the_features_of_one_call(tiny_bert, tiny_cross_encoder, monkeypatch, which):
    """Large inputs are tokenised in parts on `tokenizer_threads` threads, each on its own copy of the
    tokeniser: the same features in the same order as one call, texts or pairs."""
    import threading

    from evalkit.models import encoder
    from evalkit.models.encoder import Core, CoreConfig

    monkeypatch.setattr(encoder, "TOKENIZER_PART", 4)
    path, kind = (tiny_bert, "embedder") if which == "texts" else (tiny_cross_encoder, "reranker")
    core = Core(CoreConfig(str(path), kind), "cpu")
    inputs = [f"{w} " * (1 + i % 9) + str(i) for i, w in enumerate((QUERIES + DOCS) * 3)]
    if which == "pairs":
        inputs = [(q, d) for q, d in zip(inputs, reversed(inputs))]
    assert core.tokenizer_threads == 1
    want = core.tokenize(inputs, 12)  # one call (a CPU core's default), some texts cut at 12 tokens
    assert not core._tokenizers
    core.tokenizer_threads = 3
    used = []
    real = Core._tokenize

    def spy(self, tokenizer, texts, max_length, single_types):
        used.append((threading.current_thread().name, id(tokenizer), len(texts)))
        return real(self, tokenizer, texts, max_length, single_types)

    monkeypatch.setattr(Core, "_tokenize", spy)
    for _ in range(2):  # the copies are made once and kept
        assert core.tokenize(inputs, 12) == want
    assert len(core._tokenizers) == 3 and all(t is not core.tokenizer for t in core._tokenizers)
    step = -(-len(inputs) // 3)
    assert sorted(n for _, _, n in used) == sorted([step, step, len(inputs) - 2 * step] * 2)  # three parts per call
    assert all(name.startswith("evalkit-tokenize") for name, _, _ in used)
    assert len({tok for _, tok, _ in used[:3]}) == 3 and {tok for _, tok, _ in used} == {id(t) for t in core._tokenizers}
    assert core.tokenize(inputs[:7], 12) == want[:7]  # too few for parts: one call, here, on the core's own
    assert used[6:] == [(threading.current_thread().name, id(core.tokenizer), 7)]
    if which == "texts":  # a tokeniser that cannot be copied (remote code): one thread, the same features
        core._tokenizers = []
        monkeypatch.setattr(encoder.copy, "deepcopy", lambda x: (_ for _ in ()).throw(TypeError("cannot pickle 'Foo'")))
        assert core.tokenize(inputs, 12) == want and core.tokenizer_threads == 1


def test_a_reranker_tokenises_its_distinct_texts_in_threads_with_the_same_features(tiny_cross_encoder, monkeypatch):
    """A cross-encoder's pairs are built from each distinct text's ids (reranker.pair_features); on a GPU
    host those ids come from Core.in_threads: the same features as tokenising them in one call."""
    from evalkit.models import encoder
    from evalkit.models.reranker import FlagReranker

    monkeypatch.setattr(encoder, "TOKENIZER_PART", 4)
    reranker = FlagReranker(str(tiny_cross_encoder), batch_size=2)
    texts = [f"{w} " * (1 + i % 9) + str(i) for i, w in enumerate((QUERIES + DOCS) * 3)]
    pairs = [(q, d) for q in texts[:6] for d in texts[6:]]
    want = reranker.features(pairs, 24)
    reranker.core.tokenizer_threads = 3
    parts = []
    real = encoder.Core.in_threads
    monkeypatch.setattr(encoder.Core, "in_threads", lambda self, work, items: parts.append(len(items)) or real(self, work, items))
    assert reranker.features(pairs, 24) == want
    assert parts == [6, len(texts) - 6] and len(reranker.core._tokenizers) == 3  # queries: one call; documents: three parts
