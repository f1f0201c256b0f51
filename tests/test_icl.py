"""FlagICLModel (bge-en-icl): parity with the seeds' plain-transformers reference, examples, padding,
truncation, the cache, and the runner path (mteb adapter + few-shot prefix) giving the same vectors."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from evalkit import EvalkitError, FlagICLModel

TASK = "Given a web search query, retrieve relevant passages that answer the query."
EXAMPLES = [
    {"instruct": TASK, "query": "what is a bank card", "response": "a bank card is a card for money in the bank account"},
    {"instruct": "Retrieve relevant passages.", "query": "the king of the city", "response": "the king and the queen of the river city"},
    {"query": "happy music", "response": "a good film with happy music"},  # no instruct: FlagEmbedding falls back to the task
]
QUERIES = [
    "how much protein is in the cell",
    "money transfer",
    "the queen",
    "a search for the science of the gene and the protein of the cell in the city by the river",
]
DOCS = [
    "the protein of the cell is a gene",
    "a",
    "money transfer to the bank account balance is good for the city",
    "the king and the queen of the river city were happy with the music and the film",
    "bank",
]
EXTRA_TEXT = ["Retrieve relevant passages that support or refute the claim."]


# ----------------------------------------------------------------------------- a tiny bge-en-icl
@pytest.fixture(scope="module")
def icl_decoder(tmp_path_factory):
    """A random 2-layer Mistral with a word-level tokenizer in which `<instruct>`, `<query>` and
    `<response>` are single tokens and `<s>`/`</s>` are BOS/EOS, like bge-en-icl's.

    (conftest's `tiny_decoder` builds its pre-tokenizer with a plain-string Split pattern, which the
    tokenizers library matches literally: every text there becomes one `<unk>`, so it cannot show
    truncation or formatting. This one uses a Regex.)"""
    import re

    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import MistralConfig, MistralForCausalLM, PreTrainedTokenizerFast

    from tests.conftest import WORDS

    folder = tmp_path_factory.mktemp("icl-mistral")
    text = " ".join([TASK, *QUERIES, *DOCS, *(e["query"] + " " + e["response"] for e in EXAMPLES), *EXTRA_TEXT])
    words = list(dict.fromkeys(WORDS + re.findall(r"\w+", text)))
    chars = list("abcdefghijklmnopqrstuvwxyz0123456789.,:;!?'\"-<>/()\n ")
    vocab = {t: i for i, t in enumerate(dict.fromkeys(["<unk>", "<s>", "</s>", "<instruct>", "<query>", "<response>"] + words + chars))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"<instruct>|<query>|<response>|\w+|[^\w]"), behavior="isolated")
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", 1)])
    tok.decoder = decoders.Fuse()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="</s>",
                                   padding_side="right", model_max_length=4096)
    fast.save_pretrained(folder)
    torch.manual_seed(3)
    cfg = MistralConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                        num_key_value_heads=2, max_position_embeddings=4096, bos_token_id=1, eos_token_id=2, pad_token_id=2, sliding_window=None)
    MistralForCausalLM(cfg).eval().save_pretrained(folder)
    return folder


# ----------------------------------------------------------------------------- the seeds' reference
def get_detailed_instruct(task_description: str, query: str) -> str:
    return f"<instruct>{task_description}\n<query>{query}"


def get_detailed_example(task_description: str, query: str, response: str) -> str:
    return f"<instruct>{task_description}\n<query>{query}\n<response>{response}"


def get_new_queries(queries, query_max_len, examples_prefix, tokenizer):
    inputs = tokenizer(
        queries,
        max_length=query_max_len
        - len(tokenizer("<s>", add_special_tokens=False)["input_ids"])
        - len(tokenizer("\n<response></s>", add_special_tokens=False)["input_ids"]),
        return_token_type_ids=False,
        truncation=True,
        return_tensors=None,
        add_special_tokens=False,
    )
    prefix_ids = tokenizer(examples_prefix, add_special_tokens=False)["input_ids"]
    suffix_ids = tokenizer("\n<response>", add_special_tokens=False)["input_ids"]
    new_max_length = (len(prefix_ids) + len(suffix_ids) + query_max_len + 8) // 8 * 8 + 8
    new_queries = tokenizer.batch_decode(inputs["input_ids"])
    for i in range(len(new_queries)):
        new_queries[i] = examples_prefix + new_queries[i] + "\n<response>"
    return new_max_length, new_queries


def last_token_pool(last_hidden_states, attention_mask):
    left_padding = attention_mask[:, -1].sum() == attention_mask.shape[0]
    if left_padding:
        return last_hidden_states[:, -1]
    sequence_lengths = attention_mask.sum(dim=1) - 1
    batch_size = last_hidden_states.shape[0]
    return last_hidden_states[torch.arange(batch_size, device=last_hidden_states.device), sequence_lengths]


def reference(path, queries, documents, examples, padding_side, query_max_len=512, doc_max_len=512, task=TASK):
    """The bge-en-icl model card's code, verbatim in its steps."""
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.padding_side = padding_side
    model = AutoModel.from_pretrained(path).eval()
    examples = [get_detailed_example(e.get("instruct", task), e["query"], e["response"]) for e in examples]
    examples_prefix = "\n\n".join(examples) + "\n\n" if examples else ""
    queries = [get_detailed_instruct(task, q) for q in queries]
    new_query_max_len, new_queries = get_new_queries(queries, query_max_len, examples_prefix, tokenizer)
    query_batch_dict = tokenizer(new_queries, max_length=new_query_max_len, padding=True, truncation=True, return_tensors="pt")
    doc_batch_dict = tokenizer(documents, max_length=doc_max_len, padding=True, truncation=True, return_tensors="pt")
    with torch.no_grad():
        q = last_token_pool(model(**query_batch_dict).last_hidden_state, query_batch_dict["attention_mask"])
        d = last_token_pool(model(**doc_batch_dict).last_hidden_state, doc_batch_dict["attention_mask"])
    return torch.nn.functional.normalize(q, p=2, dim=1).numpy(), torch.nn.functional.normalize(d, p=2, dim=1).numpy(), new_queries


# ----------------------------------------------------------------------------- parity
@pytest.mark.parametrize("padding_side", ["right", "left"])
@pytest.mark.parametrize("with_examples", [False, True])
def test_queries_and_corpus_match_the_reference(icl_decoder, padding_side, with_examples):
    examples = EXAMPLES if with_examples else None
    ref_q, ref_d, ref_texts = reference(icl_decoder, QUERIES, DOCS, examples or [], padding_side)
    m = FlagICLModel(str(icl_decoder), query_instruction_for_retrieval=TASK, examples_for_task=examples, batch_size=2, padding_side=padding_side)
    assert m.tokenizer.padding_side == padding_side
    q, d = m.encode_queries(QUERIES), m.encode_corpus(DOCS)
    assert q.shape == (len(QUERIES), 32) and q.dtype == np.float32
    np.testing.assert_allclose(q, ref_q, atol=1e-5)
    np.testing.assert_allclose(d, ref_d, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1.0, atol=1e-5)
    # the exact model input, character for character
    assert m.embedder.icl_queries([f"<instruct>{TASK}\n<query>{x}" for x in QUERIES], m.prefix) == ref_texts
    if with_examples:
        assert ref_texts[0].startswith(f"<instruct>{TASK}\n<query>what is a bank card\n<response>a bank card")
        assert "\n\n<instruct>Retrieve relevant passages.\n<query>the king" in ref_texts[0]
        assert f"<instruct>{TASK}\n<query>happy music\n<response>a good film with happy music\n\n<instruct>{TASK}\n<query>how much" in ref_texts[0]
    else:
        assert ref_texts[0] == f"<instruct>{TASK}\n<query>how much protein is in the cell\n<response>"
    # batch size and order change nothing
    np.testing.assert_allclose(m.encode_queries(QUERIES[::-1], batch_size=64)[::-1], ref_q, atol=1e-5)


@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_truncated_queries_match_the_reference(icl_decoder, padding_side):
    """A short query budget: the query (not the examples) is truncated, then decoded, as the seeds do."""
    ref_q, _, ref_texts = reference(icl_decoder, QUERIES, DOCS[:1], EXAMPLES, padding_side, query_max_len=40, doc_max_len=6)
    m = FlagICLModel(str(icl_decoder), query_instruction_for_retrieval=TASK, examples_for_task=EXAMPLES, query_max_length=40,
                     passage_max_length=6, batch_size=3, padding_side=padding_side)
    np.testing.assert_allclose(m.encode_queries(QUERIES), ref_q, atol=1e-5)
    assert ref_texts[3].endswith("<query>a search for the \n<response>")  # the long query lost its tail, the suffix stays
    assert ref_texts[3].startswith(m.prefix)  # and the examples are never cut
    ref_d = reference(icl_decoder, ["x"], DOCS, [], padding_side, doc_max_len=6)[1]
    np.testing.assert_allclose(m.encode_corpus(DOCS), ref_d, atol=1e-5)


def test_set_examples_and_no_instruction(icl_decoder):
    m = FlagICLModel(str(icl_decoder), query_instruction_for_retrieval=TASK, examples_for_task=EXAMPLES[:1])
    with_one = m.encode_queries(QUERIES)
    assert m.prefix == get_detailed_example(TASK, EXAMPLES[0]["query"], EXAMPLES[0]["response"]) + "\n\n"
    m.set_examples(EXAMPLES)
    assert m.prefix.count("<response>") == 3
    np.testing.assert_allclose(m.encode_queries(QUERIES), reference(icl_decoder, QUERIES, DOCS, EXAMPLES, "right")[0], atol=1e-5)
    m.set_examples()  # None -> back to the constructor's examples
    np.testing.assert_allclose(m.encode_queries(QUERIES), with_one, atol=1e-6)
    # no instruction: the query is used as it is, still followed by \n<response>
    plain = FlagICLModel(str(icl_decoder))
    assert plain.prefix == ""
    assert plain.embedder.icl_query("the queen") == "the queen\n<response>"
    single = plain.encode_queries("the queen")
    assert single.shape == (32,)
    # documents never see the instruction or the examples: same vectors with or without them
    np.testing.assert_allclose(m.encode_corpus(DOCS), plain.encode_corpus(DOCS), atol=1e-6)
    np.testing.assert_allclose(m.encode(DOCS), plain.encode_corpus(DOCS), atol=1e-6)


def test_budget_too_small_is_one_clear_error(icl_decoder):
    m = FlagICLModel(str(icl_decoder), query_instruction_for_retrieval=TASK, query_max_length=3)
    with pytest.raises(EvalkitError, match="leaves no room"):
        m.encode_queries(QUERIES)
    with pytest.raises(EvalkitError, match="last token"):
        FlagICLModel(str(icl_decoder), pooling_method="cls")


def test_cache_reuses_icl_vectors(icl_decoder, isolated_cache):
    from evalkit.cache import EmbeddingCache

    m = FlagICLModel(str(icl_decoder), query_instruction_for_retrieval=TASK, examples_for_task=EXAMPLES, cache=EmbeddingCache())
    a = np.concatenate([m.encode_queries(QUERIES), m.encode_corpus(DOCS)])
    assert m.embedder.counts["encoded"] == len(QUERIES) + len(DOCS)
    m2 = FlagICLModel(str(icl_decoder), query_instruction_for_retrieval=TASK, examples_for_task=EXAMPLES, cache=EmbeddingCache())
    b = np.concatenate([m2.encode_queries(QUERIES), m2.encode_corpus(DOCS)])
    assert m2.embedder.counts == {"encoded": 0, "cached": len(QUERIES) + len(DOCS), "duplicates": 0}
    assert m2.embedder._core is None  # all from cache: the network was never loaded
    np.testing.assert_array_equal(a, b)


def icl_task(folder):
    """A tiny local retrieval task with an instruction and a FlagEmbedding-format examples file."""
    import json

    from tests.conftest import write_jsonl

    write_jsonl(folder / "corpus.jsonl", [{"_id": f"d{i}", "title": "", "text": t} for i, t in enumerate(DOCS)])
    write_jsonl(folder / "queries.jsonl", [{"_id": f"q{i}", "text": t} for i, t in enumerate(QUERIES)])
    (folder / "qrels").mkdir()
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(f"q{i}\td{i}\t1\n" for i in range(len(QUERIES))))
    (folder / "examples.json").write_text(json.dumps(EXAMPLES))
    (folder / "task.yaml").write_text(f"name: ICLRetrieval\ntype: Retrieval\ninstruction: {TASK}\nfewshot: {{file: examples.json}}\n")
    return folder


def test_runner_path_equals_flag_icl_model(icl_decoder, tmp_path):
    """Through the mteb adapter, with the few-shot prefix function (fixed examples from the task's
    file), the query inputs and so the vectors are FlagICLModel's with those examples; documents stay
    plain; and a whole run writes the setting into its result file."""
    from mteb.types import PromptType

    from evalkit.fewshot import FewshotFactory, Setting
    from evalkit.models.adapters import EmbeddingAdapter
    from evalkit.models.catalog import get_spec
    from evalkit.models.icl import ICLEmbedder
    from evalkit.plan import Settings
    from evalkit.run import evaluate
    from evalkit.tasks import build_task, task_from_folder

    folder = icl_task(tmp_path / "icltask")
    ts = task_from_folder(folder)
    task = build_task(ts)
    spec = get_spec(str(icl_decoder), kind="icl-embedder", pooling="last_token", task_instructions=True,
                    query_instruction_format="<instruct>{}\n<query>{}")
    emb = ICLEmbedder(icl_decoder, batch_size=2)
    factory = FewshotFactory(Setting(k=3, selector="fixed"), spec, emb)
    prefixer = factory(ts, task)
    adapter = EmbeddingAdapter(spec, emb, task_instructions={ts.name: TASK}, prefix_fn=prefixer)
    batches = [{"text": QUERIES[:2]}, {"text": QUERIES[2:]}]
    kw = dict(task_metadata=task.metadata, hf_split="test", hf_subset="default")
    got_q = adapter.encode(batches, prompt_type=PromptType.query, **kw)
    got_d = adapter.encode([{"text": DOCS}], prompt_type=PromptType.document, **kw)
    m = FlagICLModel(str(icl_decoder), query_instruction_for_retrieval=TASK, examples_for_task=EXAMPLES)
    np.testing.assert_allclose(got_q, m.encode_queries(QUERIES), atol=1e-5)
    np.testing.assert_allclose(got_d, m.encode_corpus(DOCS), atol=1e-5)
    meta = prefixer.info
    assert meta["selector"] == "fixed" and meta["k"] == 3 and meta["input_format"] == "icl"
    assert meta["pool"]["default"]["source"] == f"file:{folder / 'examples.json'}"
    assert meta["stats"]["inputs"] == {"test": 4} and meta["stats"]["example_sources"] == {"file": 12}

    # zero-shot for an ICL model still gets the reference query format (suffix, truncation), no examples
    zero = FewshotFactory(Setting(k=0), spec, emb)
    adapter0 = EmbeddingAdapter(spec, emb, task_instructions={ts.name: TASK}, prefix_fn=zero(ts, task))
    got0 = adapter0.encode(batches, prompt_type=PromptType.query, **kw)
    np.testing.assert_allclose(got0, FlagICLModel(str(icl_decoder), query_instruction_for_retrieval=TASK).encode_queries(QUERIES), atol=1e-5)

    # a whole run (the plan's two units): the result file records the setting, and the documents came from the cache
    outs = evaluate(spec, [ts], Settings(output=tmp_path / "results", batch_size=2), fewshot=[Setting(k=0), Setting(k=2, selector="first_n")])
    for st, out in zip((Setting(k=0), Setting(k=2, selector="first_n")), outs):
        assert out.status == "done", out.message
        doc = __import__("json").loads(out.path.read_text())
        assert doc["evalkit"]["fewshot"]["k"] == st.k and doc["evalkit"]["variant"] == st.variant
    assert out.path.parent.name == "fewshot-2-first_n" and out.cached == len(DOCS) and out.encoded == len(QUERIES)


def test_cli_runs_an_icl_model_zero_and_few_shot(icl_decoder, tmp_path, monkeypatch, capsys):
    """`evalkit run` on a catalog in-context model (bge-en-icl's spec on the tiny decoder): zero-shot
    already uses the ICL query format (recorded as such), the few-shot setting is its own result set,
    documents are encoded once, and the comparison table is printed."""
    import json
    from dataclasses import replace

    from evalkit.cli import main
    from evalkit.models import catalog

    spec = replace(catalog.CATALOG["bge-en-icl"], name="tiny-icl", hub_id=None, local_path=str(icl_decoder), revision=None)
    monkeypatch.setitem(catalog.CATALOG, "tiny-icl", spec)
    folder = icl_task(tmp_path / "icltask")
    out = tmp_path / "results"
    assert main(["run", "--model", "tiny-icl", "--tasks", str(folder), "--output", str(out), "--fewshot-compare", "0,2",
                 "--selector", "fixed", "--batch-size", "2"]) == 0
    cap = capsys.readouterr()
    assert "tiny-icl ICLRetrieval: test/default" in cap.err and f"({len(QUERIES) + len(DOCS)} texts encoded, 0 from cache" in cap.err
    assert "tiny-icl [fewshot-2-fixed] ICLRetrieval" in cap.err and f"({len(QUERIES)} texts encoded, {len(DOCS)} from cache" in cap.err
    assert "| 0-shot |" in cap.out and "| 2-shot fixed |" in cap.out
    (zero,) = out.glob("tiny-icl/*/ICLRetrieval.json")
    (two,) = out.glob("tiny-icl/*/experiments/fewshot-2-fixed/ICLRetrieval.json")
    z, t = json.loads(zero.read_text())["evalkit"], json.loads(two.read_text())["evalkit"]
    assert (z["fewshot"]["k"], z["fewshot"]["input_format"], z["instruction"]) == (0, "icl", TASK)
    assert (t["fewshot"]["k"], t["fewshot"]["selector"], t["fewshot"]["stats"]["example_sources"]) == (2, "fixed", {"file": 2 * len(QUERIES)})
    m = FlagICLModel(str(icl_decoder), query_instruction_for_retrieval=TASK, examples_for_task=EXAMPLES[:2])
    sample = t["fewshot"]["sample"]
    assert sample["model_input"] == m.embedder.icl_query(f"<instruct>{TASK}\n<query>{sample['input']}", m.prefix)
