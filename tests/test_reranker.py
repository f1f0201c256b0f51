"""Rerankers (issue 4): reference parity of FlagReranker / FlagLLMReranker on tiny random models,
OOM back-off, the mteb CrossEncoder adapter, and a real two-stage run on SciFact
(all-MiniLM-L6-v2 first stage, tiny random rerankers over its top 100)."""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from evalkit import FlagLLMReranker, FlagReranker
from evalkit.errors import EvalkitError
from tests.offline_run import SCIFACT

PAIRS = [
    ("what is a protein", "a protein is a gene product in the cell"),
    ("bank", "the river bank is good for music and film, the city has a bank and a king"),
    ("query", "passage"),
    ("the science of the cell and the gene and the protein in the king's city", "yes"),
    ("money transfer to my account", "card balance transfer: the bank moved money to the account of the queen"),
    ("sad film", "a happy film about a sad king, a queen, music, a river and a city with a bank and an account"),
    ("is it good", "no"),
]


# ----------------------------------------------------------------------------- references
def seeds_cross_encoder_reference(path: Path, pairs, normalize=False) -> list[float]:
    """The seeds' plain-transformers reranker snippet (BGE model card)."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path).eval()
    with torch.no_grad():
        inputs = tokenizer([list(p) for p in pairs], padding=True, truncation=True, return_tensors="pt", max_length=512)
        scores = model(**inputs, return_dict=True).logits.view(-1).float()
    if normalize:
        scores = torch.sigmoid(scores)
    return scores.tolist()


def flagembedding_llm_reference(path: Path, pairs, max_length=512, batch_size=3) -> list[float]:
    """FlagEmbedding's BaseLLMReranker.compute_score_single_gpu input construction, on plain transformers:
    "A: "/"B: " instructions, query cut to 3/4 of max_length, [bos]+query and "\\n"+passage joined by
    prepare_for_model(only_second) within max_length + len(sep) + len(prompt), then "\\n" + prompt;
    batches padded by tokenizer.pad(pad_to_multiple_of=8); score = last-token logit of "Yes"."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    pairs = [("A: " + q, "B: " + p) for q, p in pairs]
    q_in = tok([q for q, _ in pairs], return_tensors=None, add_special_tokens=False, max_length=max_length * 3 // 4, truncation=True)
    p_in = tok([p for _, p in pairs], return_tensors=None, add_special_tokens=False, max_length=max_length, truncation=True)
    prompt = "Given a query A and a passage B, determine whether the passage contains an answer to the query by providing a prediction of either 'Yes' or 'No'."
    prompt_inputs = tok(prompt, return_tensors=None, add_special_tokens=False)["input_ids"]
    sep_inputs = tok("\n", return_tensors=None, add_special_tokens=False)["input_ids"]
    encode_max_length = max_length + len(sep_inputs) + len(prompt_inputs)
    yes_loc = tok("Yes", add_special_tokens=False)["input_ids"][0]

    def prepare_for_model(ids, pair_ids, max_length):
        # transformers 4.x PreTrainedTokenizerBase.prepare_for_model(..., truncation='only_second',
        # add_special_tokens=False) + truncate_sequences (transformers 5's fast tokenizers dropped it)
        total_len = len(ids) + len(pair_ids)
        if max_length and total_len > max_length:
            num_tokens_to_remove = total_len - max_length
            if len(pair_ids) > num_tokens_to_remove:
                pair_ids = pair_ids[:-num_tokens_to_remove] if tok.truncation_side == "right" else pair_ids[num_tokens_to_remove:]
        return {"input_ids": ids + pair_ids}

    items = []
    for q, p in zip(q_in["input_ids"], p_in["input_ids"]):
        if tok.bos_token_id is not None and tok.bos_token_id != tok.pad_token_id:
            item = prepare_for_model([tok.bos_token_id] + q, sep_inputs + p, encode_max_length)
        else:
            item = prepare_for_model(q, sep_inputs + p, encode_max_length)
        ids = item["input_ids"] + sep_inputs + prompt_inputs
        items.append({"input_ids": ids, "attention_mask": [1] * len(ids)})
    scores = []
    with torch.no_grad():
        for s in range(0, len(items), batch_size):
            batch = tok.pad(items[s : s + batch_size], padding=True, max_length=encode_max_length, pad_to_multiple_of=8, return_tensors="pt")
            logits = model(**batch, output_hidden_states=True).logits
            mask = batch["attention_mask"]
            if mask[:, -1].sum() == mask.shape[0]:
                last = logits[:, -1, :]
            else:
                lengths = mask.sum(dim=1) - 1
                last = torch.stack([logits[i, lengths[i], :] for i in range(logits.shape[0])])
            scores.extend(last[:, yes_loc].float().tolist())
    return scores


# ----------------------------------------------------------------------------- FlagReranker
@pytest.fixture(scope="module")
def spread_cross_encoder(tiny_cross_encoder, tmp_path_factory) -> Path:
    """tiny_cross_encoder with its classifier scaled up: its logits spread over several units, so that
    scores in the wrong order could not pass a 1e-5 comparison (the raw tiny model's all lie near 0.013)."""
    import torch
    from transformers import AutoModelForSequenceClassification

    folder = tmp_path_factory.mktemp("spread-reranker")
    for f in tiny_cross_encoder.iterdir():
        if f.is_file():
            shutil.copy(f, folder / f.name)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_cross_encoder)
    with torch.no_grad():
        model.classifier.weight.mul_(300.0)
    model.save_pretrained(folder)
    return folder


def test_flag_reranker_matches_seeds_snippet(tiny_cross_encoder):
    ref = seeds_cross_encoder_reference(tiny_cross_encoder, PAIRS)
    got = FlagReranker(str(tiny_cross_encoder), batch_size=2, devices="cpu").compute_score(PAIRS)
    np.testing.assert_allclose(got, ref, atol=1e-5, rtol=0)


def test_flag_reranker_parity_order_and_sigmoid(spread_cross_encoder):
    tiny_cross_encoder = spread_cross_encoder
    ref = seeds_cross_encoder_reference(tiny_cross_encoder, PAIRS)
    assert np.min(np.diff(np.sort(ref))) > 1e-3  # distinct scores: a shuffled order would not pass
    rr = FlagReranker(str(tiny_cross_encoder), batch_size=2, devices="cpu")
    got = rr.compute_score(PAIRS)  # unsorted, mixed lengths, several batches
    assert isinstance(got, list) and len(got) == len(PAIRS)
    np.testing.assert_allclose(got, ref, atol=1e-5, rtol=0)

    norm = rr.compute_score(PAIRS, normalize=True)
    np.testing.assert_allclose(norm, seeds_cross_encoder_reference(tiny_cross_encoder, PAIRS, normalize=True), atol=1e-5, rtol=0)
    np.testing.assert_allclose(norm, [1 / (1 + math.exp(-x)) for x in ref], atol=1e-6, rtol=0)

    one = rr.compute_score(PAIRS[1])  # a single pair: a float
    assert isinstance(one, float) and abs(one - ref[1]) < 1e-5
    assert isinstance(rr.compute_score(list(PAIRS[1])), float)  # ['q', 'p'] is one pair too (FlagEmbedding)
    assert rr.compute_score([PAIRS[1]]) == pytest.approx([ref[1]], abs=1e-5)  # a list of one pair: a list
    # the order of the input is the order of the output, whatever the batching
    rev = rr.compute_score(PAIRS[::-1], batch_size=3)
    np.testing.assert_allclose(rev, ref[::-1], atol=1e-5, rtol=0)
    stats = rr.core.config.stats
    assert stats["batches"] >= 4 and stats["oom_retries"] == 0
    with pytest.raises(EvalkitError):
        rr.compute_score([("only one string",)])


def _pair_texts(shared_data, n=60):
    """Real queries and documents of SciFact, whole and cut at random points: short and long pairs,
    queries longer than documents, both longer than any budget."""
    import random

    docs = [json.loads(line) for line in (shared_data / "SciFact" / "corpus.jsonl").open()][:n]
    queries = [json.loads(line)["text"] for line in (shared_data / "SciFact" / "queries.jsonl").open()][:n]
    rnd = random.Random(0)
    pairs = [(q, (d["title"] + " " + d["text"]).strip()) for q, d in zip(queries, docs)]
    pairs += [(d["text"][: rnd.randint(0, 900)], q[: rnd.randint(0, 120)]) for q, d in zip(queries, docs)]
    pairs += [("", "x"), ("a", ""), (queries[0], queries[0])]
    return pairs


@pytest.mark.parametrize("which", ["tiny", "roberta-style", "minilm"])
def test_pair_features_equal_the_tokenizers_pair_call(which, tiny_cross_encoder, minilm_path, shared_data):
    """FlagReranker tokenises each distinct text once and applies the tokenizer's longest-first rule and
    pair template itself: the ids must be exactly those of tokenizer(q, p, truncation=True, max_length)."""
    from tokenizers import processors
    from transformers import AutoTokenizer

    from evalkit.models.reranker import pair_features

    tok = AutoTokenizer.from_pretrained(minilm_path if which == "minilm" else tiny_cross_encoder)
    if which == "roberta-style":  # <s> A </s></s> B </s>, no token types
        cls, sep = tok.cls_token_id, tok.sep_token_id
        tok.backend_tokenizer.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] [SEP] $B [SEP]", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
        )
    pairs = _pair_texts(shared_data)
    for max_length in (512, 128, 37):
        for side in ("right", "left"):
            tok.truncation_side = side
            got = pair_features(tok, pairs, max_length)
            want = tok([p[0] for p in pairs], [p[1] for p in pairs], truncation=True, max_length=max_length)
            assert [g["input_ids"] for g in got] == want["input_ids"], (max_length, side)
            if "token_type_ids" in want:
                assert [g["token_type_ids"] for g in got] == want["token_type_ids"]
            else:
                assert all("token_type_ids" not in g for g in got)
    assert any(len(w) == 37 for w in want["input_ids"]) and any(len(w) < 37 for w in want["input_ids"])


def test_flag_reranker_oom_backoff(spread_cross_encoder, monkeypatch):
    import torch

    tiny_cross_encoder = spread_cross_encoder
    ref = seeds_cross_encoder_reference(tiny_cross_encoder, PAIRS)
    rr = FlagReranker(str(tiny_cross_encoder), batch_size=8, devices="cpu")
    model = rr.model
    forward = model.forward
    seen = []

    def fake_forward(*args, **kwargs):
        n = kwargs["input_ids"].shape[0]
        seen.append(n)
        if n > 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return forward(*args, **kwargs)

    monkeypatch.setattr(model, "forward", fake_forward)
    got = rr.compute_score(PAIRS)
    np.testing.assert_allclose(got, ref, atol=1e-5, rtol=0)
    assert seen[:3] == [7, 4, 2]  # batch 8 (all 7 pairs) fails, 4 fails, 2 fits: halved twice
    assert rr.core.config.stats["oom_retries"] == 2 and max(n for n in seen[2:]) <= 2


def test_flag_reranker_caps_max_length_at_the_position_table(tiny_cross_encoder):
    # the tiny BERT has 128 positions: a longer max_length would index past its position table
    rr = FlagReranker(str(tiny_cross_encoder), max_length=512, devices="cpu")
    assert rr.max_length == 128
    long = ("query " * 50, "passage " * 300)
    assert math.isfinite(rr.compute_score(long))


# ----------------------------------------------------------------------------- FlagLLMReranker
LLM_PROMPT = "Given a query A and a passage B, determine whether the passage contains an answer to the query by providing a prediction of either 'Yes' or 'No'."


@pytest.fixture(scope="module")
def word_decoder(tmp_path_factory) -> Path:
    """A random 2-layer Mistral whose word-level tokenizer knows every word of PAIRS and of the prompt,
    "Yes" included, so that each pair has its own input and "Yes" its own logit."""
    import re

    import torch
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, processors
    from transformers import MistralConfig, MistralForCausalLM, PreTrainedTokenizerFast

    folder = tmp_path_factory.mktemp("word-mistral")
    text = " ".join([LLM_PROMPT, "A: B: Yes No"] + [t for p in PAIRS for t in p])
    words = sorted(set(re.findall(r"\w+|[^\w\s]", text))) + ["\n"]
    vocab = {t: i for i, t in enumerate(["<unk>", "<s>", "</s>"] + words)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(r"[ \t]+"), behavior="removed"), pre_tokenizers.Split(Regex(r"\w+|[^\w]"), behavior="isolated")]
    )
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", 1)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="</s>", model_max_length=4096)
    fast.save_pretrained(folder)
    torch.manual_seed(3)
    cfg = MistralConfig(
        vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=4096, bos_token_id=1, eos_token_id=2, pad_token_id=2, sliding_window=None,
    )
    model = MistralForCausalLM(cfg).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(50.0)  # spread the logits: scores in the wrong order could not pass 1e-5
    model.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("which", ["word_decoder", "tiny_decoder"])
def test_flag_llm_reranker_matches_flagembedding(which, request):
    path = request.getfixturevalue(which)
    pairs = PAIRS + [("the cell " * 30, "a protein " * 80)]  # the last one is truncated (query to 3/4 budget, passage to only_second)
    ref = flagembedding_llm_reference(path, pairs, max_length=64, batch_size=3)
    rr = FlagLLMReranker(str(path), max_length=64, batch_size=2, devices="cpu")
    got = rr.compute_score(pairs)
    np.testing.assert_allclose(got, ref, atol=1e-5, rtol=0)
    # normalize and a single pair
    assert rr.compute_score(pairs[0], normalize=True) == pytest.approx(1 / (1 + math.exp(-ref[0])), abs=1e-6)
    # left padding (how a Gemma tokenizer may come): the same scores (causal model, masked pads, RoPE)
    left = FlagLLMReranker(str(path), max_length=64, batch_size=4, devices="cpu", padding_side="left")
    np.testing.assert_allclose(left.compute_score(pairs), ref, atol=1e-4, rtol=0)
    if which != "word_decoder":
        return
    assert np.min(np.diff(np.sort(ref))) > 1e-3  # distinct scores: the order of the output is checked
    # the input is FlagEmbedding's: [bos] "A: q" "\n" "B: p" "\n" prompt
    tok = rr.tokenizer
    ids = rr.features([("A: " + PAIRS[0][0], "B: " + PAIRS[0][1])], 64)[0]["input_ids"]
    q = tok("A: " + PAIRS[0][0], add_special_tokens=False)["input_ids"]
    p = tok("B: " + PAIRS[0][1], add_special_tokens=False)["input_ids"]
    sep = tok("\n", add_special_tokens=False)["input_ids"]
    prompt = tok(LLM_PROMPT, add_special_tokens=False)["input_ids"]
    assert ids == [tok.bos_token_id] + q + sep + p + sep + prompt
    assert rr.yes_id == tok.convert_tokens_to_ids("Yes") != tok.unk_token_id
    # truncation budgets: query to 48 tokens, then the passage to fill max_length + len(sep) + len(prompt)
    longest = rr.features([("A: " + pairs[-1][0], "B: " + pairs[-1][1])], 64)[0]["input_ids"]
    assert len(longest) == 64 + len(sep) + len(prompt) + len(sep) + len(prompt)
    assert longest[1 : 1 + 48] == tok("A: " + pairs[-1][0], add_special_tokens=False)["input_ids"][:48]


# ----------------------------------------------------------------------------- the mteb adapter
def test_reranker_adapter_is_an_mteb_cross_encoder(tiny_cross_encoder):
    import mteb
    from mteb.models.models_protocols import CrossEncoderProtocol, EncoderProtocol, SearchProtocol
    from torch.utils.data import DataLoader
    from datasets import Dataset

    from evalkit.models.catalog import get_spec
    from evalkit.models.reranker import RerankerAdapter, load_reranker
    from evalkit.plan import resolve_model

    spec = resolve_model(get_spec(str(tiny_cross_encoder))).spec
    assert spec.kind == "reranker"
    rr = load_reranker(spec, devices="cpu")
    adapter = RerankerAdapter(spec, rr)
    assert isinstance(adapter, CrossEncoderProtocol)
    assert not isinstance(adapter, EncoderProtocol) and not isinstance(adapter, SearchProtocol)
    assert "cross-encoder" in adapter.mteb_model_meta.model_type
    assert adapter.mteb_model_meta.revision == rr.revision
    q = DataLoader(Dataset.from_dict({"text": [p[0] for p in PAIRS]}), batch_size=3)
    d = DataLoader(Dataset.from_dict({"text": [p[1] for p in PAIRS]}), batch_size=3)
    meta = mteb.get_task("SciFact").metadata
    got = adapter.predict(q, d, task_metadata=meta, hf_split="test", hf_subset="default")
    np.testing.assert_allclose(got, seeds_cross_encoder_reference(tiny_cross_encoder, PAIRS), atol=1e-5, rtol=0)
    assert rr.counts["pairs"] == len(PAIRS)


def _tiny_reranking_task():
    """A small mteb Reranking task (its own candidate lists), data given in memory."""
    import mteb
    from datasets import Dataset

    base = mteb.get_task("SciDocsRR", eval_splits=["test"])
    corpus = Dataset.from_dict({"id": [f"d{i}" for i in range(6)], "title": [""] * 6, "text": [p[1] for p in PAIRS[:6]]})
    queries = Dataset.from_dict({"id": ["q0", "q1", "q2"], "text": [PAIRS[0][0], PAIRS[1][0], PAIRS[4][0]]})
    qrels = {"q0": {"d0": 1}, "q1": {"d1": 1, "d5": 1}, "q2": {"d4": 1}}
    top = {"q0": ["d0", "d1", "d2", "d3"], "q1": ["d1", "d2", "d5"], "q2": ["d3", "d4", "d5", "d0"]}
    base.dataset = {"default": {"test": {"corpus": corpus, "queries": queries, "relevant_docs": qrels, "top_ranked": top}}}
    base.data_loaded = True
    return base, top


def test_reranker_alone_on_a_reranking_task(tiny_cross_encoder, tmp_path, monkeypatch):
    from evalkit.models.catalog import get_spec
    from evalkit.plan import Settings, make_plan
    from evalkit.run import evaluate
    from evalkit.tasks import TaskSpec

    calls = []

    def fake_build_task(ts):
        task, top = _tiny_reranking_task()
        calls.append(top)
        return task

    monkeypatch.setattr("evalkit.tasks.build_task", fake_build_task)
    spec = get_spec(str(tiny_cross_encoder))
    ts = TaskSpec(name="SciDocsRR", type="Reranking", source="local")
    settings = Settings(output=tmp_path / "results", device="cpu", batch_size=4)
    out = evaluate(spec, [ts], settings)
    assert [o.status for o in out] == ["done"] and out[0].unit.first_stage is None and out[0].unit.role == "rerank"
    path = out[0].path
    # the reranker's own folder, no experiment variant: the task's candidates are its own
    assert path.parent.parent == tmp_path / "results" / spec.result_name
    assert out[0].pairs == 4 + 3 + 4
    doc = json.loads(path.read_text())
    assert doc["evalkit"]["first_stage"] is None and doc["evalkit"]["kind"] == "reranker"
    assert doc["task_name"] == "SciDocsRR" and 0 <= doc["scores"]["test"][0]["main_score"] <= 1
    # a retrieval task without a first stage, a task a reranker cannot score, a bad k: one clear line each
    with pytest.raises(EvalkitError, match="--first-stage"):
        make_plan(spec, [TaskSpec(name="SciFact", type="Retrieval")], settings)
    with pytest.raises(EvalkitError, match="Retrieval, Reranking, InstructionRetrieval and InstructionReranking tasks only"):
        make_plan(spec, [TaskSpec(name="STS12", type="STS")], settings)
    with pytest.raises(EvalkitError, match="top-k"):
        make_plan(get_spec("all-MiniLM-L6-v2"), [ts], settings, reranker=spec, top_k=0)


# ----------------------------------------------------------------------------- the command line
def test_cli_reranker_without_first_stage_fails_before_loading(monkeypatch, capsys, tmp_path):
    from evalkit import cli

    def no_loading(*a, **k):
        raise AssertionError("the model must not be looked up")

    monkeypatch.setattr("evalkit.models.loading.resolve_model_path", no_loading)
    monkeypatch.setattr("evalkit.models.loading.load_network", no_loading)
    rc = cli.main(["run", "--model", "bge-reranker-base", "--tasks", "SciFact", "--output", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and "--first-stage" in err[0] and err[0].startswith("evalkit: error:")
    assert not (tmp_path / "r").exists()

    rc = cli.main(["run", "--model", "all-MiniLM-L6-v2", "--reranker", "bge-small-en-v1.5", "--tasks", "SciFact", "--output", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "not a reranker" in err[0]
    rc = cli.main(["run", "--model", "bge-reranker-base", "--first-stage", "bge-reranker-large", "--tasks", "SciFact", "--output", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "must be an embedder" in err[0]
    rc = cli.main(["run", "--model", "all-MiniLM-L6-v2", "--reranker", "bge-reranker-base", "--top-k", "0", "--tasks", "SciFact", "--output", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "--top-k" in err[0]


# ----------------------------------------------------------------------------- SciFact, two stages
@pytest.fixture(scope="module")
def scifact_two_stage(tmp_path_factory, tiny_cross_encoder, shared_data):
    """all-MiniLM-L6-v2 on SciFact (fp32, encoded cold: the offline-en run whose cache held these vectors
    runs only in `make test-real`) then the tiny cross-encoder over its top 100: done once."""
    import time

    from evalkit.models.catalog import get_spec
    from evalkit.models.reranker import RerankerAdapter
    from evalkit.plan import Settings, resolve_model
    from evalkit.run import evaluate
    from evalkit.tasks import Registry

    root = tmp_path_factory.mktemp("scifact-rerank")
    opts = Settings(output=root / "results", cache_dir=root / "cache", device="cpu", batch_size=64, dtype="fp32")
    first = resolve_model(get_spec("all-MiniLM-L6-v2"))
    rr = get_spec(str(tiny_cross_encoder), max_length=32)  # 32 tokens: keeps 30000 pairs quick
    ts = Registry().task("SciFact")
    captured = []
    predict = RerankerAdapter.predict

    def spy(self, inputs1, inputs2, **kw):  # what mteb handed the reranker, and what it answered
        scores = predict(self, inputs1, inputs2, **kw)
        qs = [t for b in inputs1 for t in b["text"]]
        ds = [t for b in inputs2 for t in b["text"]]
        captured.append((qs, ds, np.asarray(scores)))
        return scores

    mp = pytest.MonkeyPatch()
    mp.setattr(RerankerAdapter, "predict", spy)
    t0 = time.time()
    try:
        out = evaluate(first.spec, [ts], opts, reranker=rr, top_k=100)
    finally:
        mp.undo()
    return {"root": root, "opts": opts, "first": first, "rr": rr, "ts": ts, "out": out, "captured": captured, "seconds": time.time() - t0}


@pytest.mark.real
def test_scifact_first_stage_and_run_file(scifact_two_stage):
    from mteb._evaluators.retrieval_metrics import calculate_retrieval_scores

    from evalkit.tasks import build_task

    s = scifact_two_stage
    fo, o = s["out"]
    assert fo.status == "done" and fo.encoded + fo.cached == SCIFACT["docs"] + 300
    # the first stage is the ordinary result: right folder, published score
    assert fo.path.parent == s["root"] / "results" / s["first"].spec.result_name / s["first"].revision
    assert fo.scores["test/default"] == pytest.approx(SCIFACT["score"] / 100, abs=5e-4)
    # its run file: beside the result, exactly 100 candidates for each of the 300 queries, best first
    assert o.unit.run_file() == fo.path.parent / "SciFact.run_top100.json" and o.run_file == "SciFact.run_top100.json"
    assert o.encoded == 0  # the run file encoded nothing: the vectors came from the cache
    doc = json.loads(o.unit.run_file().read_text())
    run = doc["run"]["default"]["test"]
    assert doc["top_k"] == 100 and doc["first_stage"]["model"] == "all-MiniLM-L6-v2" and len(run) == 300
    assert all(len(docs) == 100 for docs in run.values())
    assert all(list(d.values()) == sorted(d.values(), reverse=True) for d in run.values())
    # its scores are mteb's: scoring the run file with mteb's metrics gives the first stage's nDCG@10
    task = build_task(s["ts"])
    qrels = task.dataset["default"]["test"]["relevant_docs"]
    scores = calculate_retrieval_scores({q: run[q] for q in qrels}, qrels, [10, 100], False)
    ndcg = scores[1]
    first_doc = json.loads(fo.path.read_text())["scores"]["test"][0]
    assert ndcg["NDCG@10"] == pytest.approx(first_doc["ndcg_at_10"], abs=1e-6)
    assert scores[3]["Recall@100"] == pytest.approx(first_doc["recall_at_100"], abs=1e-6)


@pytest.mark.real
def test_scifact_reranked_by_mteb_over_the_candidates(scifact_two_stage):
    from mteb._evaluators.retrieval_metrics import calculate_retrieval_scores

    from evalkit.tasks import build_task

    s = scifact_two_stage
    fo, r = s["out"]
    assert r.status == "done"
    variant = r.unit.variant
    assert variant == "rerank-sentence-transformers__all-MiniLM-L6-v2-top100"
    assert r.path.parent == s["root"] / "results" / s["rr"].result_name / r.path.parent.parent.parent.name / "experiments" / variant
    doc = json.loads(r.path.read_text())
    fs = doc["evalkit"]["first_stage"]
    assert fs["model"] == "all-MiniLM-L6-v2" and fs["top_k"] == 100 and fs["run_file"].endswith("SciFact.run_top100.json")
    assert fs["main_scores"]["test/default"] == pytest.approx(SCIFACT["score"] / 100, abs=5e-4)
    assert doc["scores"]["test"][0]["previous_results_model_meta"]["model_name"] == "sentence-transformers/all-MiniLM-L6-v2"
    # mteb handed the reranker exactly the run file's candidates: 300 x 100 pairs
    run = json.loads(r.unit.run_file().read_text())["run"]["default"]["test"]
    task = build_task(s["ts"])
    data = task.dataset["default"]["test"]
    qtext = dict(zip(data["queries"]["id"], data["queries"]["text"]))
    dtext = {i: (t + " " + x).strip() if t else x.strip() for i, t, x in zip(data["corpus"]["id"], data["corpus"]["title"], data["corpus"]["text"])}
    (qs, ds, scores), = s["captured"]
    assert r.pairs == len(qs) == 300 * 100
    want = sorted((qtext[q], dtext[d]) for q, docs in run.items() for d in docs)
    assert sorted(zip(qs, ds)) == want
    # the reranked metrics are mteb's on that candidate set: the same recall at 100 (and at 1000) as
    # the first stage, and nDCG@10 equal to mteb's metric on the reranker's own scores
    first = json.loads(fo.path.read_text())["scores"]["test"][0]
    main = doc["scores"]["test"][0]
    assert main["recall_at_100"] == pytest.approx(first["recall_at_100"], abs=1e-6)
    assert main["recall_at_1000"] == pytest.approx(first["recall_at_100"], abs=1e-6)
    qid_of = {t: i for i, t in qtext.items()}
    did_of = {t: i for i, t in dtext.items()}
    results: dict = {}
    for q, d, sc in zip(qs, ds, scores):
        results.setdefault(qid_of[q], {})[did_of[d]] = float(sc)
    ndcg = calculate_retrieval_scores(results, data["relevant_docs"], [10], False)[1]["NDCG@10"]
    assert main["ndcg_at_10"] == pytest.approx(ndcg, abs=1e-6)
    assert main["ndcg_at_10"] != pytest.approx(first["ndcg_at_10"], abs=1e-4)  # a random reranker reorders
    # per-query scores beside the result, rebuilt from mteb's predictions to the same nDCG@10
    items = json.loads(r.path.with_name("SciFact.items.json").read_text())
    rec = items["splits"]["test/default"]
    assert items["available"] and rec["matches"] and rec["n"] == 300
    assert rec["recomputed"] == pytest.approx(main["ndcg_at_10"], abs=1e-6)


@pytest.mark.real
def test_second_reranker_reuses_the_first_stage(scifact_two_stage, tiny_decoder, capsys):
    """A second reranker (the tiny LLM reranker) over the same first stage: no text encoded, the
    first-stage model not even loaded; then the CLI with the other spelling cuts top 10 from the file."""
    from evalkit import cli
    from evalkit.executors import LocalExecutor
    from evalkit.models.catalog import get_spec
    from evalkit.plan import make_plan
    from evalkit.run import execute

    s = scifact_two_stage
    opts = s["opts"]
    # top 20, cut from the top-100 file (6,000 pairs: the LLM reranker's feature building is Python, per pair)
    plan = make_plan(s["first"].spec, [s["ts"]], opts, reranker=get_spec(str(tiny_decoder), max_length=48), top_k=20)
    rr2 = plan.units[1].model
    assert rr2.kind == "llm-reranker"  # a causal LM named as a reranker
    ex = LocalExecutor(opts)
    try:
        fo, o = execute(plan, ex)
        assert not [k for k in ex.models._models if k[0] == "embed"]  # the first-stage model was never even set up
    finally:
        ex.close()
    assert fo.status == "skipped" and o.run_file == "SciFact.run_top100.json (reused)" and o.encoded == 0
    assert o.status == "done" and o.pairs == 300 * 20
    assert o.path.parent.name == "rerank-sentence-transformers__all-MiniLM-L6-v2-top20"
    assert json.loads(o.path.read_text())["evalkit"]["first_stage"]["cut_from"] == "SciFact.run_top100.json"
    assert o.path.parts[-5] == rr2.spec.result_name
    # the first stage's folder holds its result and one run file
    folder = fo.path.parent
    assert (folder / "SciFact.json").is_file() and [p.name for p in folder.glob("SciFact.run_top*.json")] == ["SciFact.run_top100.json"]

    # --model RERANKER --first-stage EMBEDDER, top 10 cut from the top-100 file; the table shows the gain
    rc = cli.main([
        "run", "--model", str(s["rr"].local_path), "--first-stage", "all-MiniLM-L6-v2", "--tasks", "SciFact",
        "--top-k", "10", "--max-length", "32", "--output", str(opts.output), "--cache-dir", str(opts.cache_dir), "--device", "cpu",
    ])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    lines = cap.out.strip().splitlines()
    assert lines[0].split() == ["task", "model", "[variant]", "main", "score", "published", "vs", "0-shot/dense", "vs", "first", "stage"]
    first_row, rr_row = lines[1].split(), lines[2].split()
    assert first_row[:3] == ["SciFact", "all-MiniLM-L6-v2", f"{SCIFACT['score']:.2f}"]
    assert rr_row[2] == "[rerank-sentence-transformers__all-MiniLM-L6-v2-top10]"
    assert float(rr_row[-1]) == pytest.approx(float(rr_row[3]) - SCIFACT["score"], abs=0.011)
    assert "SciFact.run_top100.json (reused)" in cap.err and "already done" in cap.err
    rdir = Path(opts.output) / s["rr"].result_name
    assert len(list(rdir.glob("*/experiments/rerank-sentence-transformers__all-MiniLM-L6-v2-top10/SciFact.json"))) == 1
    assert not (folder / "SciFact.run_top10.json").exists()  # cut from the top-100 file, nothing new written
