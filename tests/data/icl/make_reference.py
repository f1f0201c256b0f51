"""Build the tiny random Mistral in tests/data/icl/model and FlagEmbedding 1.4.2's FlagICLModel outputs
for it, given bge-en-icl's own instructions and examples (evalkit/models/recipe_data/bge-en-icl).

tests/test_recipes.py checks evalkit against these outputs (to 1e-5) without needing FlagEmbedding,
which needs transformers 4, so this runs in its own environment:

    python3 -m venv /tmp/flagenv
    /tmp/flagenv/bin/pip install torch==2.13.0 'transformers<5' FlagEmbedding==1.4.2
    /tmp/flagenv/bin/python tests/data/icl/make_reference.py

For each task below, FlagICLModel(model, query_instruction_for_retrieval=<the task's instruction>,
examples_for_task=<its first K authors' examples as {instruct, query, response}>) encodes the queries
(encode_queries) and the documents (encode_corpus). fp32 on CPU, seeded: a rerun writes the same bytes.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
MODEL = HERE / "model"
DATA = HERE.parents[2] / "evalkit" / "models" / "recipe_data" / "bge-en-icl"
WORDS = (
    "the a of and to in is was for on that with as by at from this be are or an it which his her their "
    "query passage document answer question model embedding retrieval search science cell protein gene "
    "bank card money transfer account balance sport music film city river king queen good bad happy sad "
    "yes no instruct response given web retrieve relevant passages that answers claim documents support refute"
).split()
# (task, instruction, examples K): three task types, a long examples prefix (SciFact's responses)
TASKS = [
    ("SciFact", "Given a scientific claim, retrieve documents that support or refute the claim.", 3),
    ("Banking77Classification", "Given a online banking query, find the corresponding intents.", 2),
    ("STS12", "Retrieve semantically similar text.", 1),
]
QUERIES = ["the cell protein gene", "how do i transfer money from my card to the bank account?", "music",
           " ".join(["a claim about science and the relevant documents that support it"] * 12)]
DOCS = ["the king and the queen of the city", "bank card money", "science"]


def make_model() -> None:
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import MistralConfig, MistralModel, PreTrainedTokenizerFast

    shutil.rmtree(MODEL, ignore_errors=True)
    specials = ["<unk>", "<s>", "</s>"]
    chars = list("abcdefghijklmnopqrstuvwxyz0123456789.,:;!?'\"-<>/()\n ")
    vocab = {t: i for i, t in enumerate(specials + WORDS + ["<instruct>", "<query>", "<response>"] + chars)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(pattern=Regex(r"<instruct>|<query>|<response>|\w+|[^\w]"), behavior="isolated")
    tok.post_processor = processors.TemplateProcessing(single="<s> $A </s>", pair="<s> $A $B </s>", special_tokens=[("<s>", 1), ("</s>", 2)])
    tok.decoder = decoders.Fuse()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="</s>",
                                   padding_side="left", model_max_length=4096)
    fast.save_pretrained(MODEL)
    torch.manual_seed(3)
    cfg = MistralConfig(vocab_size=max(vocab.values()) + 1, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                        num_key_value_heads=2, max_position_embeddings=4096, bos_token_id=1, eos_token_id=2, pad_token_id=2, sliding_window=None)
    MistralModel(cfg).eval().save_pretrained(MODEL, safe_serialization=True)


def main() -> None:
    from FlagEmbedding import FlagICLModel

    make_model()
    out, arrays = {"tasks": []}, {}
    for task, instruction, k in TASKS:
        examples = json.loads((DATA / "mteb-examples" / f"{task}.json").read_text())[:k]
        m = FlagICLModel(str(MODEL), query_instruction_for_retrieval=instruction,
                         examples_for_task=[{"instruct": instruction, **e} for e in examples], use_fp16=False, devices="cpu",
                         batch_size=2, query_max_length=512, passage_max_length=512)
        arrays[f"{task}_queries"] = np.asarray(m.encode_queries(QUERIES), dtype=np.float32)
        arrays[f"{task}_docs"] = np.asarray(m.encode_corpus(DOCS), dtype=np.float32)
        out["tasks"].append({"task": task, "instruction": instruction, "k": k})
    import FlagEmbedding
    import transformers

    out.update(queries=QUERIES, docs=DOCS, versions={"FlagEmbedding": "1.4.2", "transformers": transformers.__version__,
                                                      "torch": torch.__version__, "flag_module": FlagEmbedding.__file__.split("site-packages/")[-1]})
    (HERE / "reference.json").write_text(json.dumps(out, indent=1) + "\n")
    np.savez(HERE / "reference.npz", **arrays)


if __name__ == "__main__":
    main()
