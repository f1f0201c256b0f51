"""The packed path (evalkit/models/packing.py) against the padded one: a batch's texts joined into one
sequence must give every head the outputs the padded batch gives, to 1e-5 in fp32, for every pooling,
both padding sides, pairs for cross-encoders, an LLM reranker's token logit, the ICL prefix, BGE-M3's
three outputs and a decoder's sliding window. Each check also counts the packed attention's calls, so
it cannot pass by running the padded path twice."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from evalkit.errors import EvalkitError
from evalkit.models import packing
from evalkit.models.encoder import POOLINGS, Core, CoreConfig, EmbedHead, LogitHead, TokenLogitHead
from tests.conftest import WORDS, make_bpe_tokenizer, make_wordpiece_tokenizer

TOL = 1e-5
M3_MODEL = Path(__file__).parent / "data" / "m3" / "model"


@pytest.fixture
def calls():
    """How often the packed attention ran (each Packed registers `packing.packed_attention` as `evalkit_packed`)."""
    seen = [0]
    real = packing.packed_attention

    def counting(*a, **kw):
        seen[0] += 1
        return real(*a, **kw)

    packing.packed_attention = counting
    yield seen
    packing.packed_attention = real
    packing.register()  # the real function again, for whatever runs next


def texts(n=40, longest=30, seed=0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, int(rng.integers(1, longest)))) for _ in range(n)]


def both(folder, kind, head, inputs, calls, padding_side=None, max_length=64, batch_size=8):
    """(padded outputs, packed outputs) of the same inputs and batches."""
    out = []
    for mode in ("padded", "packed"):
        before = calls[0]
        core = Core(CoreConfig(str(folder), kind, padding_side=padding_side, attention=mode, batch_size=batch_size), ["cpu"])
        out.append(core.run(core.tokenize(inputs, max_length), head))
        assert (calls[0] > before) == (mode == "packed"), mode
    return out


@pytest.fixture(scope="module")
def tiny_xlmr(tmp_path_factory) -> Path:
    """An XLM-R encoder (positions from padding_idx + 1) and its sequence classifier, in one folder each."""
    import torch
    from transformers import XLMRobertaConfig, XLMRobertaForSequenceClassification, XLMRobertaModel

    root = tmp_path_factory.mktemp("tiny-xlmr")
    for name, cls, seed in (("embedder", XLMRobertaModel, 3), ("reranker", XLMRobertaForSequenceClassification, 4)):
        folder = root / name
        folder.mkdir()
        tok = make_wordpiece_tokenizer(folder)
        torch.manual_seed(seed)
        cfg = XLMRobertaConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                               max_position_embeddings=130, pad_token_id=0, num_labels=1)
        cls(cfg).eval().save_pretrained(folder)
    return root


@pytest.fixture(scope="module")
def windowed_decoder(tmp_path_factory) -> Path:
    """A Mistral whose sliding window (6) is shorter than its inputs."""
    import torch
    from transformers import MistralConfig, MistralModel

    folder = tmp_path_factory.mktemp("tiny-mistral-window")
    tok = make_bpe_tokenizer(folder)
    torch.manual_seed(5)
    cfg = MistralConfig(vocab_size=max(tok.get_vocab().values()) + 1, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, pad_token_id=2, sliding_window=6)
    MistralModel(cfg).eval().save_pretrained(folder)
    return folder


@pytest.mark.parametrize("pooling", POOLINGS + ("cls+mean",))
def test_encoders_packed_equal_padded_for_every_pooling(pooling, tiny_bert, tiny_xlmr, calls):
    for folder in (tiny_bert, tiny_xlmr / "embedder"):
        padded, packed = both(folder, "embedder", EmbedHead(pooling), texts(), calls)
        assert np.abs(padded - packed).max() <= TOL, folder.name


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("pooling", ["last_token", "mean", "cls", "weightedmean"])
def test_decoder_packed_equals_padded_on_either_side(side, pooling, tiny_decoder, windowed_decoder, calls):
    for folder in (tiny_decoder, windowed_decoder):
        padded, packed = both(folder, "embedder", EmbedHead(pooling), texts(), calls, padding_side=side)
        assert np.abs(padded - packed).max() <= TOL, folder.name


@pytest.mark.parametrize("side", ["left", "right"])
def test_batches_of_one_length_packed_as_padded(side, tiny_bert, tiny_xlmr, tiny_decoder, windowed_decoder, calls):
    """Texts cut at max_length (long documents) make batches whose texts all have one length: the packed
    sequence is then its blocks, with no gather, no key mask (only a decoder's causal band) and no scatter."""
    long = texts(24, longest=10, seed=3)
    long = [t + " " + " ".join(WORDS[:12]) for t in long]  # every one past max_length's 10 tokens
    seen = []
    real_blocks = packing.Segments.blocks

    def blocks(self, t):
        seen.append(self.uniform)
        return real_blocks(self, t)

    packing.Segments.blocks = blocks
    try:
        for folder in (tiny_bert, tiny_xlmr / "embedder", tiny_decoder, windowed_decoder):
            for pooling in ("mean", "cls", "last_token"):
                padded, packed = both(folder, "embedder", EmbedHead(pooling), long, calls, padding_side=side, max_length=10)
                assert np.abs(padded - packed).max() <= TOL, (folder.name, pooling)
    finally:
        packing.Segments.blocks = real_blocks
    assert seen and all(seen)


def test_cross_encoders_score_pairs_packed_as_padded(tiny_cross_encoder, tiny_xlmr, calls):
    t = texts()
    pairs = list(zip(t, t[::-1]))
    for folder in (tiny_cross_encoder, tiny_xlmr / "reranker"):  # BERT's pooler + classifier; XLM-R's head on the first token
        padded, packed = both(folder, "reranker", LogitHead(), pairs, calls)
        assert np.abs(padded - packed).max() <= TOL, folder.name


@pytest.mark.parametrize("side", ["left", "right"])
def test_llm_reranker_token_logit_packed_as_padded(side, tiny_decoder, calls):
    t = texts()
    padded, packed = both(tiny_decoder, "llm-reranker", TokenLogitHead(7), list(zip(t, t[::-1])), calls, padding_side=side)
    assert np.abs(padded - packed).max() <= TOL


def test_icl_queries_with_examples_packed_as_padded(tiny_decoder, calls):
    from evalkit.models.icl import FlagICLModel

    examples = [{"instruct": "Given a question, retrieve passages", "query": q, "response": r}
                for q, r in zip(texts(3, 8, seed=1), texts(3, 12, seed=2))]
    out = []
    for mode in ("padded", "packed"):
        m = FlagICLModel(str(tiny_decoder), query_instruction_for_retrieval="Given a question, retrieve passages",
                         examples_for_task=examples, devices="cpu", attention=mode, batch_size=8)
        out.append((m.encode_queries(texts(20)), m.encode_corpus(texts(20, seed=3))))
    assert calls[0] > 0
    for a, b in zip(*out):
        assert np.abs(a - b).max() <= TOL


def test_m3_dense_sparse_and_colbert_packed_as_padded(calls):
    from evalkit.models.m3 import BGEM3FlagModel

    import json

    t = json.loads((M3_MODEL.parent / "reference.json").read_text())["sentences"]
    out = []
    for mode in ("padded", "packed"):
        m = BGEM3FlagModel(str(M3_MODEL), use_fp16=False, devices="cpu", attention=mode, batch_size=8)
        out.append(m.encode(t, return_dense=True, return_sparse=True, return_colbert_vecs=True))
        m.close()
    assert calls[0] > 0
    (a, b) = out
    assert np.abs(a["dense_vecs"] - b["dense_vecs"]).max() <= TOL
    for x, y in zip(a["lexical_weights"], b["lexical_weights"], strict=True):
        assert x and set(x) == set(y) and max(abs(float(x[k]) - float(y[k])) for k in x) <= TOL
    for x, y in zip(a["colbert_vecs"], b["colbert_vecs"], strict=True):
        assert x.shape == y.shape and np.abs(x - y).max() <= TOL


def test_real_minilm_packed_equals_padded(minilm_path, calls):
    """The real all-MiniLM-L6-v2 (mean pooling) on real STS sentences, in its own batches of 64."""
    from tests.offline_run import REAL_DATA

    rows = (REAL_DATA / "STSBenchmark" / "test.jsonl").read_text().splitlines()[:150]
    import json

    sents = [json.loads(r)["sentence1"] for r in rows] + [json.loads(r)["sentence2"] for r in rows]
    padded, packed = both(minilm_path, "embedder", EmbedHead("mean"), sents, calls, max_length=256, batch_size=64)
    assert np.abs(padded - packed).max() <= TOL


def test_attention_modes_choose_and_refuse_in_one_line(tiny_bert, tmp_path):
    import torch
    from transformers import DistilBertConfig, DistilBertModel

    # auto on a CPU: the padded path (the packed one is for GPUs there); packed where asked
    assert Core(CoreConfig(str(tiny_bert), "embedder"), ["cpu"]).packer is None
    assert Core(CoreConfig(str(tiny_bert), "embedder", attention="packed"), ["cpu"]).packer is not None
    folder = tmp_path / "distil"
    folder.mkdir()
    tok = make_wordpiece_tokenizer(folder)
    torch.manual_seed(0)
    DistilBertModel(DistilBertConfig(vocab_size=len(tok), dim=32, n_layers=1, n_heads=4, hidden_dim=64)).save_pretrained(folder)
    with pytest.raises(EvalkitError, match="--attention packed cannot run .*model type 'distilbert'"):
        Core(CoreConfig(str(folder), "embedder", attention="packed"), ["cpu"])
    assert Core(CoreConfig(str(folder), "embedder", attention="auto"), ["cpu"]).packer is None
    with pytest.raises(EvalkitError, match="unknown attention 'flat'"):
        Core(CoreConfig(str(tiny_bert), "embedder", attention="flat"), ["cpu"])
    from evalkit.plan import Settings

    with pytest.raises(EvalkitError, match="unknown attention 'flat': use one of auto, packed, padded"):
        Settings(attention="flat")


def test_a_run_with_attention_packed_scores_as_padded(tiny_bert, tmp_path, calls):
    """--attention reaches the encoder through evalkit.evaluate (the command line's path): a retrieval mock
    and an STS mock score the same packed and padded."""
    import evalkit
    from mteb.mocks import MockRetrievalTask, MockSTSTask

    scores = {}
    for mode in ("padded", "packed"):
        before = calls[0]
        res = evalkit.evaluate(str(tiny_bert), [MockRetrievalTask(), MockSTSTask()], output=tmp_path / mode,
                               cache_dir=tmp_path / f"c-{mode}", attention=mode)
        assert res.plan.settings.attention == mode and (calls[0] > before) == (mode == "packed")
        scores[mode] = [(r["task"], r["main_score"]) for r in res.rows()]
    assert {t for t, _ in scores["packed"]} == {"MockRetrievalTask", "MockSTSTask"}
    for (ta, a), (tb, b) in zip(scores["padded"], scores["packed"], strict=True):
        assert ta == tb and abs(a - b) <= 1e-4
