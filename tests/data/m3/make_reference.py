"""Build the tiny random BGE-M3 in tests/data/m3/model and FlagEmbedding's own outputs for it.

tests/test_m3.py checks evalkit's BGEM3FlagModel against these outputs (to 1e-5) without needing
FlagEmbedding. FlagEmbedding 1.4.2 needs transformers 4, so this runs in its own environment:

    python3 -m venv /tmp/flagenv
    /tmp/flagenv/bin/pip install torch==2.13.0 'transformers<5' FlagEmbedding==1.4.2
    /tmp/flagenv/bin/python tests/data/m3/make_reference.py

It rewrites tests/data/m3/model/ (an XLM-RoBERTa-style encoder, 2 layers of width 32, with a
WordPiece tokenizer whose special tokens are <s> (cls), </s> (eos/sep), <pad> and <unk>, and the two
M3 heads saved as colbert_linear.pt (Linear(32, 32)) and sparse_linear.pt (Linear(32, 1)) the way
the real BAAI/bge-m3 ships them) and tests/data/m3/reference.{json,npz}. Everything is fp32 on CPU
and seeded: a rerun with the same versions writes the same bytes.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
MODEL = HERE / "model"
WORDS = (
    "the a of and to in is was for on that with as by at from this be are or an it which his her their "
    "query passage document answer question model embedding retrieval search science cell protein gene "
    "bank card money transfer account balance sport music film city river king queen good bad happy sad "
    "what how why does do lexical dense sparse colbert vector token weight score"
).split()
SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]  # XLM-RoBERTa's ids 0..3 (+ mask)

# a dozen texts of very different lengths: repeated words (their weight is the max over the
# repeats), characters outside the vocabulary (<unk>, left out of the lexical weights), one text
# longer than every max_length used below (truncated), one of a single word
SENTENCES = [
    "what is bge m3?",
    "the cell protein gene",
    "dense, sparse and colbert: one model gives a dense vector, lexical weights and colbert vectors.",
    "bank bank bank money money transfer",
    "how does the king of the city answer the question of the queen?",
    "music",
    "a film about a river € and a city ✓ with happy and sad people in it",
    "lexical weight of a token is the max weight over its repeats: token token token weight",
    " ".join(["retrieval search for the relevant passage of a document with a query"] * 8),
    "science",
    "the account balance of his card was good, the balance of her card was bad",
    "why do sport and music make people happy? 42 reasons.",
]
QUERIES = ["what is bge m3?", "bank money transfer", "the king and the queen", "music film", "protein gene science", "colbert € vector"]
PASSAGES = [
    SENTENCES[2],
    SENTENCES[3],
    SENTENCES[4],
    SENTENCES[6],
    SENTENCES[1],
    SENTENCES[8],
]
# every query with two passages (its own and another), then one-word passages in a batch with a
# long one (so padded in FlagEmbedding's compute_score): 16 pairs, batches of 4 in input order
PAIRS = (
    [[q, PASSAGES[i]] for i, q in enumerate(QUERIES)]
    + [[q, PASSAGES[(i + 3) % len(PASSAGES)]] for i, q in enumerate(QUERIES)]
    + [[QUERIES[1], SENTENCES[8]], [QUERIES[2], SENTENCES[5]], [QUERIES[5], SENTENCES[9]], [QUERIES[0], SENTENCES[5]]]
)
WEIGHTS = [0.4, 0.2, 0.4]
ENCODE_KW = dict(batch_size=4, max_length=64)
SCORE_KW = dict(batch_size=4, max_query_length=16, max_passage_length=48)


def build_model(folder: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast, XLMRobertaConfig, XLMRobertaModel

    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    chars = list("abcdefghijklmnopqrstuvwxyz0123456789.,:;!?'\"-<>/()")
    tokens = list(dict.fromkeys(SPECIALS + WORDS + chars + [f"##{c}" for c in chars]))  # "a" is a word and a char
    vocab = {t: i for i, t in enumerate(tokens)}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="<unk>", max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", vocab["<s>"]), ("</s>", vocab["</s>"])],
    )
    tok.decoder = decoders.WordPiece()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", cls_token="<s>", eos_token="</s>", sep_token="</s>",
        pad_token="<pad>", unk_token="<unk>", mask_token="<mask>", model_max_length=128,
    )
    fast.save_pretrained(folder)

    torch.manual_seed(0)
    cfg = XLMRobertaConfig(
        vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=130, type_vocab_size=1, pad_token_id=1, bos_token_id=0, eos_token_id=2,
        initializer_range=0.2,
    )
    model = XLMRobertaModel(cfg).eval()
    model.save_pretrained(folder, safe_serialization=True)
    colbert = torch.nn.Linear(32, 32)
    sparse = torch.nn.Linear(32, 1)
    # centre the ColBERT head on the mean token state: a random encoder's token states share a large
    # common part, which would make every ColBERT cosine positive; centred, some query tokens match
    # no passage token positively, which is where FlagEmbedding's compute_score counts the zero
    # vectors of a passage's padding (see evalkit/models/m3.py, compute_score)
    with torch.no_grad():
        enc = fast(SENTENCES, padding=True, truncation=True, max_length=64, return_tensors="pt")
        hidden = model(**enc).last_hidden_state
        mask = enc["attention_mask"].unsqueeze(-1).float()
        mean = (hidden * mask).sum((0, 1)) / mask.sum()
        colbert.bias.copy_(-colbert.weight @ mean)
    torch.save(colbert.state_dict(), folder / "colbert_linear.pt")
    torch.save(sparse.state_dict(), folder / "sparse_linear.pt")


def main() -> None:
    import FlagEmbedding
    import transformers
    from FlagEmbedding import BGEM3FlagModel

    build_model(MODEL)
    m = BGEM3FlagModel(str(MODEL), use_fp16=False, devices="cpu", normalize_embeddings=True)
    enc = m.encode(SENTENCES, return_dense=True, return_sparse=True, return_colbert_vecs=True, **ENCODE_KW)
    scores = m.compute_score(PAIRS, weights_for_different_modes=WEIGHTS, **SCORE_KW)
    default_scores = m.compute_score(PAIRS[:5], **SCORE_KW)  # weights None: [1, 1, 1]
    lw = [{k: float(v) for k, v in d.items()} for d in enc["lexical_weights"]]
    colbert = enc["colbert_vecs"]
    # the pairwise helpers on encode's outputs: sentences 0..5 against 6..11
    lex = m.compute_lexical_matching_score(enc["lexical_weights"][:6], enc["lexical_weights"][6:])
    col = np.array([[float(m.colbert_score(colbert[i], colbert[j])) for j in range(6, 12)] for i in range(6)])
    ids = [m.tokenizer(s, truncation=True, max_length=ENCODE_KW["max_length"])["input_ids"] for s in SENTENCES]

    (HERE / "reference.json").write_text(json.dumps({
        "made_by": f"FlagEmbedding {FlagEmbedding.__version__ if hasattr(FlagEmbedding, '__version__') else '1.4.2'}, "
                   f"transformers {transformers.__version__}, torch {torch.__version__}",
        "sentences": SENTENCES, "pairs": PAIRS, "weights": WEIGHTS, "encode_kwargs": ENCODE_KW, "score_kwargs": SCORE_KW,
        "input_ids": ids,
        "lexical_weights": lw,
        "compute_score": {k: [float(x) for x in v] for k, v in scores.items()},
        "compute_score_default_weights": {k: [float(x) for x in v] for k, v in default_scores.items()},
        "lexical_matching_0_5_vs_6_11": lex.tolist(),
        "colbert_score_0_5_vs_6_11": col.tolist(),
    }, indent=1, ensure_ascii=False) + "\n")
    np.savez_compressed(
        HERE / "reference.npz",
        dense_vecs=np.asarray(enc["dense_vecs"], dtype=np.float32),
        colbert_vecs=np.concatenate(colbert).astype(np.float32),
        colbert_lengths=np.array([len(c) for c in colbert], dtype=np.int64),
    )
    print("wrote", MODEL, HERE / "reference.json", HERE / "reference.npz")


if __name__ == "__main__":
    main()
