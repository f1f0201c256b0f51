"""`make bench-gpu`: evalkit's encoder core on a GPU (issue 19, item 4; issue 27, item 6).

Measures, on the GPU(s) torch sees:
- the GPU's bf16 / fp16 matmul peak (8192^3 products) beside the datasheet's dense peak;
- encode throughput (tokens/s, achieved TFLOP/s, share of the peak) of evalkit's Embedder and of
  sentence-transformers' `SentenceTransformer.encode` on the same texts, for
  * a bge-large-sized encoder (BERT, 24 layers, hidden 1024, 16 heads, FFN 4096; max length 512)
    on short queries (10-20 words) and SciFact-length documents (200-500 tokens), and
  * a bge-en-icl-sized decoder (Mistral-7B shape: hidden 4096, 32 layers, 32 heads, 8 KV heads,
    FFN 14336) through evalkit's in-context embedder (queries in bge-en-icl's
    `<instruct>..\\n<query>..\\n<response>` form), on short queries, SciFact-length documents and
    8192-token documents;
  each on a mixed-length set as well, evalkit both packed (`--attention packed`: no padding, varlen
  attention) and padded, peak GPU memory beside each;
  both with random weights built from a transformers config (speed does not depend on the weights),
  saved with save_pretrained beside a word-level tokenizer made with `tokenizers`, loaded from that
  folder exactly as `evalkit run --model FOLDER` loads a model;
- multi-GPU scaling of the encoder where torch sees more than one GPU;
- the score change of the real all-MiniLM-L6-v2 on the offline suite under `--dtype fp16` against
  fp32 (`evalkit run`, per task main score).

Tokens are the tokenizer's tokens of each text after truncation, special tokens included, padding
excluded. FLOPs are the useful ones: 2 x (parameters outside the embeddings) per token, plus
attention's 4 x layers x hidden x length^2 per text (half of that for the causal decoder).

    .venv/bin/python benchmarks/bench_gpu.py                   # everything, on the GPU(s)
    .venv/bin/python benchmarks/bench_gpu.py --quick           # smaller sets (~5 min of GPU on an H100)
    .venv/bin/python benchmarks/bench_gpu.py --device cpu --tiny   # check the script without a GPU
    .venv/bin/python benchmarks/bench_gpu.py --lease --results benchmarks/RESULTS.md   # sized for one lease
    make bench-gpu ARGS="--quick --json /tmp/bench_gpu.json"

`--lease` is sized for one device lease (under 8 minutes on one H100/H200 with its warm-ups): bf16 only,
the quick sets, the MiniLM's fp16 scores against the recorded fp32 ones; `--results FILE` appends the
tables, with the GPU, driver, torch and transformers versions, to FILE (benchmarks/RESULTS.md).
The device machine reaches no package registry: what it lacks travels as wheels in the carried tree
(benchmarks/RESULTS.md, "GPU", says which ones the last lease needed).
"""
from __future__ import annotations

import argparse
import gc
import importlib
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Each side as its users run it (tokenizers reads the variable at each call; set, so that forks do not warn):
# evalkit as its CLI, which turns the tokeniser's own threads off and tokenises large inputs in threads of its
# own on a GPU (evalkit.models.encoder.tokenizer_threads); sentence-transformers with them on (what an unset
# variable means). bench_model switches it between the two.
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
EVALKIT_TOKENIZER_ENV = os.environ["TOKENIZERS_PARALLELISM"]
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parent.parent

# Dense (no sparsity) bf16/fp16 tensor-core peaks from the vendors' datasheets, TFLOP/s; the first
# key found in torch.cuda.get_device_name() wins, so the more specific names come first.
DATASHEET_PEAK = [
    ("H200", 989.4), ("H100 NVL", 835.0), ("H100 PCIe", 756.0), ("H100", 989.4), ("H800", 989.4),
    ("GH200", 989.4), ("B200", 2250.0), ("B100", 1750.0), ("A100", 312.0), ("A800", 312.0),
    ("L40S", 362.1), ("L40", 181.0), ("L4", 121.0), ("A10G", 70.0), ("A10", 125.0), ("A6000", 154.8),
    ("RTX 4090", 165.2), ("V100", 125.0), ("T4", 65.0),
]

# all-MiniLM-L6-v2 fp32 on a CPU with mteb 2.26 (the reference column of ../shared/data/MANIFEST.md,
# equal to evalkit's fp32 run), main score x100: the fp32 side when --minilm-ref recorded
RECORDED_FP32 = {
    "STSBenchmark": {"test/default": 82.03}, "STS12": {"test/default": 72.37}, "STS13": {"test/default": 80.60},
    "STS14": {"test/default": 75.59}, "STS16": {"test/default": 78.99}, "SciFact": {"test/default": 64.51},
    "Banking77Classification": {"test/default": 80.04},
    "AmazonCounterfactualClassification": {"validation/en": 61.46, "test/en": 63.64},
    "TweetSentimentExtractionClassification": {"test/default": 54.04}, "SIB200Classification": {"test/eng_Latn": 72.16},
    "SIB200ClusteringS2S": {"test/eng_Latn": 42.45}, "TwitterURLCorpus": {"test/default": 84.70},
}

REPORT: dict = {}
JSON_PATH: Path | None = None


def save_report() -> None:
    if JSON_PATH is not None:
        JSON_PATH.parent.mkdir(parents=True, exist_ok=True)
        JSON_PATH.write_text(json.dumps(REPORT, indent=1, default=str))


T0 = time.perf_counter()


def say(*a) -> None:
    print(f"[{time.perf_counter() - T0:5.0f}s]", *a, flush=True)


# ----------------------------------------------------------------------------- sizes
SIZES = {
    #            encoder                       decoder
    "full":  dict(enc_q=20000, enc_d=4000, dec_q=4000, dec_d=1000, dec_l=32, long_len=8192, repeats=2),
    "quick": dict(enc_q=8000, enc_d=2000, dec_q=1500, dec_d=400, dec_l=12, long_len=8192, repeats=1),
    "tiny":  dict(enc_q=64, enc_d=24, dec_q=16, dec_d=8, dec_l=2, long_len=256, repeats=1),
}
SIZES["lease"] = dict(SIZES["quick"], dec_l=8)
ATTENTION = ("packed", "padded")
BATCH = {"query": 256, "doc": 64, "dec_query": 64, "dec_doc": 16, "dec_long": 2}


# ----------------------------------------------------------------------------- environment
def device_info(device: str) -> dict:
    import torch

    info = {
        "python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
        "host": platform.node(), "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
    for mod in ("transformers", "sentence_transformers", "tokenizers"):
        try:
            info[mod] = __import__(mod).__version__
        except Exception as e:  # pragma: no cover - reported, not fatal
            info[mod] = f"missing ({type(e).__name__})"
    if device == "cuda":
        n = torch.cuda.device_count()
        props = torch.cuda.get_device_properties(0)
        info.update(
            gpu=torch.cuda.get_device_name(0), gpus=n, gpu_names=[torch.cuda.get_device_name(i) for i in range(n)],
            gpu_memory_gib=round(props.total_memory / 2**30, 1), sms=props.multi_processor_count,
            capability=f"{props.major}.{props.minor}",
        )
        try:
            smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,clocks.max.sm,power.limit", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=20)
            info["nvidia_smi"] = smi.stdout.strip()
        except Exception:
            pass
    else:
        info.update(gpu=None, gpus=0, cpu=platform.processor() or platform.machine(), cores=os.cpu_count())
    return info


def datasheet_peak(name: str | None) -> float | None:
    for key, tflops in DATASHEET_PEAK:
        if name and key in name:
            return tflops
    return None


def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def matmul_peak(device: str, dtype_name: str, n: int, reps: int) -> float:
    """TFLOP/s of an n^3 product on random data (mean of `reps` after 3 warm-ups)."""
    import torch

    from evalkit.models.encoder import torch_dtype

    dt = torch_dtype(dtype_name)
    a = torch.randn(n, n, device=device, dtype=dt)
    b = torch.randn(n, n, device=device, dtype=dt)
    for _ in range(3):
        a @ b
    sync(device)
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(device)
    s = (time.perf_counter() - t) / reps
    del a, b
    return 2 * n**3 / s / 1e12


# ----------------------------------------------------------------------------- models and texts
VOCAB = 30000  # words w0 .. w29999; each is one token of both tokenizers


def word_tokenizer(folder: Path, kind: str, model_max_length: int):
    """A word-level fast tokenizer: BERT-style ([CLS] .. [SEP]) or Mistral-style (<s> .., eos </s>)."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    if kind == "bert":
        specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    else:
        specials = ["<unk>", "<s>", "</s>", "<instruct>", "<query>", "<response>"]
    words = [f"w{i}" for i in range(VOCAB)] + list(".,:;!?'\"-<>/()")
    vocab = {t: i for i, t in enumerate(specials + words)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token=specials[1] if kind == "bert" else "<unk>"))
    # whitespace goes, <instruct>/<query>/<response> stay whole, then words and punctuation
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.WhitespaceSplit(),
        pre_tokenizers.Split(Regex(r"<instruct>|<query>|<response>|\w+|[^\w]"), behavior="isolated"),
    ])
    if kind == "bert":
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
            special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
        )
        fast = PreTrainedTokenizerFast(
            tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]",
            mask_token="[MASK]", model_max_length=model_max_length,
        )
    else:
        tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", 1)])
        fast = PreTrainedTokenizerFast(
            tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="</s>",
            padding_side="right", model_max_length=model_max_length,
        )
    fast.save_pretrained(folder)
    return fast


def build_encoder(folder: Path, tiny: bool) -> dict:
    """bge-large's shape (BertModel, 24 x 1024, 16 heads, FFN 4096, 512 positions), random weights."""
    import torch
    from transformers import BertConfig, BertModel

    tok = word_tokenizer(folder, "bert", 512)
    dims = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=256) if tiny else \
        dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096)
    cfg = BertConfig(vocab_size=len(tok), max_position_embeddings=512, type_vocab_size=2, **dims)
    torch.manual_seed(0)
    model = BertModel(cfg).eval()
    model.save_pretrained(folder)
    body = sum(p.numel() for n, p in model.named_parameters() if not n.startswith(("embeddings.", "pooler.")))
    total = sum(p.numel() for p in model.parameters())
    del model
    return {"params": total, "body_params": body, "layers": cfg.num_hidden_layers, "hidden": cfg.hidden_size, "causal": False}


def build_decoder(folder: Path, tiny: bool, device: str, long_len: int) -> dict:
    """Mistral-7B's shape (hidden 4096, 32 layers, 32 heads, 8 KV heads, FFN 14336), random bf16 weights.

    Built on the device itself (initialising 7B parameters on the CPU takes minutes), saved in bf16
    (~14.5 GB) like the released checkpoints."""
    import torch
    from transformers import MistralConfig, MistralModel

    tok = word_tokenizer(folder, "mistral", max(long_len, 512))
    dims = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, intermediate_size=224) if tiny else \
        dict(hidden_size=4096, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8, intermediate_size=14336)
    cfg = MistralConfig(
        vocab_size=32000, max_position_embeddings=32768, bos_token_id=1, eos_token_id=2, pad_token_id=2,
        sliding_window=None, rms_norm_eps=1e-5, rope_theta=10000.0, **dims,
    )
    assert len(tok) <= cfg.vocab_size
    torch.manual_seed(0)
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device(device if device.startswith("cuda") else "cpu"):
            model = MistralModel(cfg).eval()
    finally:
        torch.set_default_dtype(old)
    model.config.torch_dtype = torch.bfloat16
    model.save_pretrained(folder)
    body = sum(p.numel() for n, p in model.named_parameters() if "embed_tokens" not in n)
    total = sum(p.numel() for p in model.parameters())
    del model
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return {"params": total, "body_params": body, "layers": cfg.num_hidden_layers, "hidden": cfg.hidden_size, "causal": True}


def words(rng: random.Random, n: int) -> str:
    return " ".join(f"w{rng.randrange(VOCAB)}" for _ in range(n))


def make_mixes(sz: dict, which: str) -> dict[str, list[str]]:
    """Synthetic texts with realistic token-length mixes (each word is one token)."""
    rng = random.Random(19)

    def mixed(n: int) -> list[str]:  # a retrieval run's texts: 60% queries, 25% passages, 15% documents
        return [words(rng, rng.randint(*(10, 20) if u < 0.6 else (50, 150) if u < 0.85 else (200, 500)))
                for u in (rng.random() for _ in range(n))]

    if which == "encoder":
        return {
            "queries 10-20 tok": [words(rng, rng.randint(10, 20)) for _ in range(sz["enc_q"])],
            "SciFact docs 200-500 tok": [words(rng, rng.randint(200, 500)) for _ in range(sz["enc_d"])],
            MIXED: mixed(sz["enc_d"] * 2),
        }
    return {
        "queries 10-20 tok": [words(rng, rng.randint(10, 20)) for _ in range(sz["dec_q"])],
        "SciFact docs 200-500 tok": [words(rng, rng.randint(200, 500)) for _ in range(sz["dec_d"])],
        MIXED: mixed(sz["dec_d"] * 2),
        f"long docs {sz['long_len']} tok": [words(rng, sz["long_len"] + 64) for _ in range(sz["dec_l"])],
    }


MIXED = "mixed 10-500 tok"


def useful_flops(lengths, spec: dict) -> float:
    attn = (2.0 if spec["causal"] else 4.0) * spec["layers"] * spec["hidden"]
    return float(sum(2.0 * spec["body_params"] * n + attn * n * n for n in lengths))


# ----------------------------------------------------------------------------- timing
def peak_mem(device: str) -> float | None:
    import torch

    if device.startswith("cuda"):
        return round(max(torch.cuda.max_memory_allocated(i) for i in range(torch.cuda.device_count())) / 2**30, 1)
    return None


def reset_mem(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        for i in range(torch.cuda.device_count()):
            torch.cuda.reset_peak_memory_stats(i)


def timed(fn, device: str, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        sync(device)
        t = time.perf_counter()
        fn()
        sync(device)
        best = min(best, time.perf_counter() - t)
    return best


def row(model: str, impl: str, dtype: str, mix: str, lengths, seconds: float, spec: dict, peaks: dict, extra=None) -> dict:
    tokens = int(sum(lengths))
    tflops = useful_flops(lengths, spec) / seconds / 1e12
    r = {
        "model": model, "impl": impl, "dtype": dtype, "mix": mix, "texts": len(lengths), "tokens": tokens,
        "seconds": round(seconds, 3), "tokens_per_s": round(tokens / seconds), "tflops": round(tflops, 2),
        "pct_datasheet": round(100 * tflops / peaks["datasheet"], 1) if peaks.get("datasheet") else None,
        "pct_measured": round(100 * tflops / peaks[dtype], 1) if peaks.get(dtype) else None,
    }
    r.update(extra or {})
    say(f"  {impl:22s} {dtype:4s} {mix:26s} {len(lengths):6d} texts {tokens:9d} tok {seconds:8.2f} s "
        f"{r['tokens_per_s']:9d} tok/s {tflops:8.2f} TFLOP/s "
        f"{'' if r['pct_datasheet'] is None else str(r['pct_datasheet']) + '% of datasheet'} "
        f"{'' if r['pct_measured'] is None else str(r['pct_measured']) + '% of measured'}")
    REPORT.setdefault("rows", []).append(r)
    save_report()
    return r


def free(device: str) -> None:
    import torch

    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


def evalkit_embedder(folder: Path, kind: str, dtype: str, devices, max_length: int, attention: str = "auto"):
    if kind == "decoder":
        from evalkit.models.icl import ICLEmbedder

        return ICLEmbedder(folder, query_max_length=512, passage_max_length=max_length, dtype=dtype, devices=devices,
                           padding_side="right", batch_size=BATCH["dec_doc"], attention=attention)
    from evalkit.models.embedder import Embedder

    return Embedder(folder, pooling="cls", max_length=max_length, dtype=dtype, devices=devices, batch_size=BATCH["doc"],
                    attention=attention)


def batch_for(kind: str, mix: str) -> int:
    if kind == "encoder":
        return BATCH["query"] if mix.startswith(("queries", "mixed")) else BATCH["doc"]
    return BATCH["dec_query"] if mix.startswith("queries") else BATCH["dec_long"] if mix.startswith("long") else BATCH["dec_doc"]


WARMUP_FULL = True


def warmup_slice(texts: list[str], bs: int) -> list[str]:
    return texts if WARMUP_FULL else texts[: max(2 * bs, 2)]


def bench_model(kind: str, name: str, folder: Path, spec: dict, mixes: dict, dtypes, device: str, peaks: dict,
                repeats: int, max_length: int, with_st: bool, st_dtypes=None) -> None:
    """evalkit's Embedder (ICLEmbedder for the decoder) and sentence-transformers, each dtype, each mix."""
    import torch

    from evalkit.models.encoder import torch_dtype

    devices = ["cuda:0"] if device == "cuda" else ["cpu"]
    inputs: dict[str, list[str]] = {}
    for dtype, attention in ((d, a) for d in dtypes for a in ATTENTION):
        if attention == "padded" and dtype != dtypes[0]:
            continue  # the padded path once, at the first dtype: the comparison, not a grid
        impl = f"evalkit {attention}"
        reset_mem(device)
        t = time.perf_counter()
        try:
            os.environ["TOKENIZERS_PARALLELISM"] = EVALKIT_TOKENIZER_ENV
            emb = evalkit_embedder(folder, kind, dtype, devices, max_length, attention)
            emb.core  # load now, outside the timed region
        except Exception as e:
            say(f"  {impl} {dtype}: could not load: {type(e).__name__}: {e}")
            REPORT.setdefault("errors", []).append(f"{name} {impl} {dtype} load: {e}")
            continue
        load_s = time.perf_counter() - t
        say(f"  {impl} {dtype}: loaded in {load_s:.1f} s (weights {next(emb.core.model.parameters()).dtype}, "
            f"{'packed' if emb.core.packer is not None else 'padded'}, batches of {emb.core.max_batch_tokens} tokens at most)")
        for mix, texts in mixes.items():
            if kind == "decoder" and mix.startswith("queries"):
                # bge-en-icl's query format, built and truncated as evalkit builds it
                texts = emb.icl_queries([f"<instruct>Given a web search query, retrieve relevant passages that answer the query.\n<query>{q}"
                                         for q in texts])
            inputs[mix] = texts
            lengths = token_lengths(emb.core, name, mix, texts, max_length)
            bs = batch_for(kind, mix)
            try:
                # warm-up: one whole pass, so that every batch shape has been seen once (cuDNN's attention
                # builds a plan per new shape: a first pass over short queries took 3-6x a second one)
                emb.encode_uncached(warmup_slice(texts, bs), batch_size=bs)
                s = timed(lambda: emb.encode_uncached(texts, batch_size=bs), device, repeats)
            except Exception as e:
                say(f"  {impl} {dtype} {mix}: {type(e).__name__}: {str(e)[:300]}")
                REPORT.setdefault("errors", []).append(f"{name} {impl} {dtype} {mix}: {e}")
                continue
            row(name, impl, dtype, mix, lengths, s, spec, peaks,
                {"batch": bs, "batch_tokens": emb.core.max_batch_tokens, "load_s": round(load_s, 1), "peak_gib": peak_mem(device),
                 "oom_retries": emb.config.stats["oom_retries"]})
        emb.close()
        emb = None
        free(device)
        last_of_dtype = attention == ATTENTION[-1] or dtype != dtypes[0]
        if not last_of_dtype or not with_st or (st_dtypes is not None and dtype not in st_dtypes):
            continue
        # sentence-transformers on the same texts, the model in the same dtype (its usual way: the weights cast)
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as e:
            say(f"  sentence-transformers missing ({e}): no comparison")
            with_st = False
            continue
        reset_mem(device)
        os.environ["TOKENIZERS_PARALLELISM"] = "true"  # until the next evalkit load
        st_dtype = torch.float32 if dtype == "fp32" else torch_dtype(dtype)
        t = time.perf_counter()
        try:
            try:
                st = SentenceTransformer(str(folder), device=devices[0], model_kwargs={"dtype": st_dtype})
            except TypeError:
                st = SentenceTransformer(str(folder), device=devices[0], model_kwargs={"torch_dtype": st_dtype})
            st.to(st_dtype)
            st.max_seq_length = max_length
        except Exception as e:
            say(f"  sentence-transformers {dtype}: could not load: {type(e).__name__}: {e}")
            REPORT.setdefault("errors", []).append(f"{name} st {dtype} load: {e}")
            continue
        load_s = time.perf_counter() - t
        say(f"  sentence-transformers {dtype}: loaded in {load_s:.1f} s")
        tok = st.tokenizer
        for mix, texts in inputs.items():
            lengths = [len(x) for x in tok(texts, truncation=True, max_length=max_length)["input_ids"]]
            bs = batch_for(kind, mix)
            try:
                st.encode(warmup_slice(texts, bs), batch_size=bs, convert_to_tensor=True, show_progress_bar=False)
                s = timed(lambda: st.encode(texts, batch_size=bs, convert_to_tensor=True, show_progress_bar=False), device, repeats)
            except Exception as e:
                say(f"  sentence-transformers {dtype} {mix}: {type(e).__name__}: {str(e)[:300]}")
                REPORT.setdefault("errors", []).append(f"{name} st {dtype} {mix}: {e}")
                free(device)
                continue
            row(name, "sentence-transformers", dtype, mix, lengths, s, spec, peaks,
                {"batch": bs, "load_s": round(load_s, 1), "peak_gib": peak_mem(device)})
        st = None
        free(device)


def token_lengths(core, model: str, mix: str, texts: list[str], max_length: int) -> list[int]:
    """Each text's tokens. The first time per model and mix, also the tokeniser's tokens/s alone on them, in one
    thread and in the core's `tokenizer_threads` (issue 27, item 3: the device should never wait for it)."""
    key = f"{model} / {mix}"
    timed_before = key in REPORT.setdefault("tokenizer", {})
    threads, got = core.tokenizer_threads, {}
    try:
        for n in (threads,) if timed_before else dict.fromkeys((1, threads)):
            core.tokenizer_threads = n
            t = time.perf_counter()
            lengths = [len(f["input_ids"]) for s in range(0, len(texts), 16384) for f in core.tokenize(texts[s : s + 16384], max_length)]
            got[n] = round(sum(lengths) / (time.perf_counter() - t))
    finally:
        core.tokenizer_threads = threads
    if not timed_before:
        REPORT["tokenizer"][key] = got
        say(f"  tokeniser alone, {mix}: " + ", ".join(f"{n} thread(s) {v / 1e3:.0f}k tok/s" for n, v in got.items()))
    return lengths


def bench_scaling(folder: Path, spec: dict, texts: list[str], peaks: dict, repeats: int) -> None:
    import torch

    n = torch.cuda.device_count()
    if n < 2:
        say("1 GPU: no scaling measured")
        REPORT["scaling"] = "1 GPU: no scaling measured"
        return
    counts = sorted({k for k in (1, 2, 4, 8, n) if k <= n})
    base = None
    for k in counts:
        emb = evalkit_embedder(folder, "encoder", "fp16", [f"cuda:{i}" for i in range(k)], 512)
        lengths = [len(f["input_ids"]) for f in emb.core.tokenize(texts, 512)]
        emb.encode_uncached(texts[: 64 * k * 2], batch_size=BATCH["doc"])  # warm-up (starts the workers)
        s = timed(lambda: emb.encode_uncached(texts, batch_size=BATCH["doc"]), "cuda", repeats)
        base = base or s
        row("bge-large-shape", f"evalkit {k} GPU", "fp16", "SciFact docs 200-500 tok", lengths, s, spec,
            {**peaks, "datasheet": (peaks.get("datasheet") or 0) * k or None, "fp16": (peaks.get("fp16") or 0) * k or None},
            {"gpus": k, "speedup": round(base / s, 2), "efficiency": round(base / s / k, 2)})
        emb.close()
        emb = None
        free("cuda")


# ----------------------------------------------------------------------------- the real MiniLM
def main_scores(folder: Path) -> dict[str, dict[str, float]]:
    out = {}
    for f in sorted(folder.rglob("*.json")):
        if f.name.endswith(".items.json") or "experiments" in f.parts:
            continue
        try:
            doc = json.loads(f.read_text())
        except ValueError:
            continue
        if "scores" not in doc or "task_name" not in doc:
            continue
        out[doc["task_name"]] = {f"{sp}/{s.get('hf_subset', 'default')}": 100 * s["main_score"] for sp, ss in doc["scores"].items() for s in ss}
    return out


def bench_minilm(args) -> None:
    try:
        importlib.import_module("mteb")  # its scores come from a subprocess; fail here, before the runs
    except Exception as e:
        msg = f"MiniLM fp16 score change not measured: mteb cannot be imported here ({type(e).__name__}: {e})"
        say(msg)
        REPORT["minilm"] = msg
        return
    dtypes = ["fp16"] if args.minilm_ref == "recorded" else ["fp32", "fp16"]
    if args.device == "cpu":
        dtypes = [d.replace("fp16", "bf16") for d in dtypes]  # evalkit allows fp16 on GPUs only
    scores, times = {}, {}
    work = Path(tempfile.mkdtemp(prefix="bench-gpu-minilm-"))
    for dtype in dtypes:
        cmd = [sys.executable, "-m", "evalkit.cli", "run", "--model", args.minilm_model, "--suite", args.minilm_suite,
               "--dtype", dtype, "--device", args.device, "--output", str(work / dtype), "--no-cache"]
        if args.minilm_tasks:
            cmd = [c for c in cmd if c not in ("--suite", args.minilm_suite)] + ["--tasks", args.minilm_tasks]
        say("  $ " + " ".join(cmd[1:]))
        t = time.perf_counter()
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=args.minilm_timeout,
                           env={**os.environ, "TOKENIZERS_PARALLELISM": EVALKIT_TOKENIZER_ENV})
        times[dtype] = round(time.perf_counter() - t, 1)
        if p.returncode != 0:
            msg = f"evalkit run --dtype {dtype} failed ({p.returncode}): {(p.stderr or p.stdout).strip()[-1500:]}"
            say("  " + msg)
            REPORT["minilm"] = msg
            save_report()
            return
        scores[dtype] = main_scores(work / dtype)
        say(f"  {dtype}: {len(scores[dtype])} tasks in {times[dtype]} s (whole process)")
    ref_name = dtypes[0] if len(dtypes) == 2 else "fp32 recorded (CPU, mteb 2.26)"
    ref = scores[dtypes[0]] if len(dtypes) == 2 else RECORDED_FP32
    low = scores[dtypes[-1]]
    rows = []
    say(f"\n| task | split/subset | {ref_name} | {dtypes[-1]} | change |\n|---|---|---|---|---|")
    for task in sorted(low, key=lambda t: list(RECORDED_FP32).index(t) if t in RECORDED_FP32 else 99):
        for key in sorted(set(ref.get(task, {})) | set(low[task]), reverse=True):
            a, b = ref.get(task, {}).get(key), low.get(task, {}).get(key)
            d = None if a is None or b is None else b - a
            rows.append({"task": task, "split": key, "ref": a, "low": b, "delta": d})
            fmt = lambda v, p=2: "-" if v is None else f"{v:+.{p}f}" if p == 3 else f"{v:.{p}f}"
            say(f"| {task} | {key} | {fmt(a)} | {fmt(b, 4)} | {fmt(d, 3)} |")
    deltas = [abs(r["delta"]) for r in rows if r["delta"] is not None]
    if deltas:
        say(f"max |change| {max(deltas):.3f} points over {len(deltas)} scores")
    REPORT["minilm"] = {"ref": ref_name, "dtype": dtypes[-1], "rows": rows, "seconds": times,
                        "max_abs_delta": max(deltas) if deltas else None}
    save_report()


# ----------------------------------------------------------------------------- RESULTS.md
def results_markdown() -> str:
    """This run's tables as a RESULTS.md section: per model, one row per mix, one column per implementation
    and dtype (tokens/s, share of the measured peak, peak GiB), then the MiniLM's score changes."""
    info = REPORT.get("device", {})
    lines = [f"\n## GPU, `bench_gpu.py {' '.join(sys.argv[1:])}`, {info.get('date', '')}\n",
             f"{info.get('gpu')} x {info.get('gpus')} ({info.get('nvidia_smi', '')}); torch {info.get('torch')} "
             f"(CUDA {info.get('cuda')}), transformers {info.get('transformers')}, sentence-transformers "
             f"{info.get('sentence_transformers')}; matmul peak " + ", ".join(f"{k} {v}" for k, v in REPORT.get("peaks", {}).items()) + " TFLOP/s.",
             "Each cell: tokens/s · % of the measured peak of its dtype · peak GiB.\n"]
    rows = REPORT.get("rows", [])
    for model in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == model]
        cols = list(dict.fromkeys((r["impl"], r["dtype"]) for r in mine))
        lines += [f"**{model}**\n", "| mix | texts / tokens | " + " | ".join(f"{i} {d}" for i, d in cols) + " |",
                  "|---|---|" + "---|" * len(cols)]
        for mix in dict.fromkeys(r["mix"] for r in mine):
            cells = {(r["impl"], r["dtype"]): r for r in mine if r["mix"] == mix}
            first = next(iter(cells.values()))
            lines.append(f"| {mix} | {first['texts']} / {first['tokens']:,} | " + " | ".join(
                "-" if c not in cells else f"{cells[c]['tokens_per_s'] / 1000:.1f}k · {cells[c]['pct_measured']}% · {cells[c]['peak_gib']}"
                for c in cols) + " |")
        lines.append("")
    if REPORT.get("tokenizer"):
        lines += ["**The tokeniser alone** (evalkit's Core.tokenize, slices of 16,384 texts; tokens/s)\n",
                  "| model / mix | one thread | its threads |", "|---|---|---|"]
        lines += [f"| {k} | {v.get(1, 0) / 1e3:.0f}k | " + ", ".join(f"{n}: {x / 1e3:.0f}k" for n, x in v.items() if n != 1) + " |"
                  for k, v in REPORT["tokenizer"].items()]
        lines.append("")
    minilm = REPORT.get("minilm")
    if isinstance(minilm, dict):
        lines += [f"**all-MiniLM-L6-v2, {minilm['dtype']} against {minilm['ref']}** (main score x100; max |change| "
                  f"{minilm['max_abs_delta']:.3f})\n", "| task | split/subset | ref | low | change |", "|---|---|---|---|---|"]
        lines += [f"| {r['task']} | {r['split']} | {r['ref']} | {r['low']:.4f} | {r['delta']:+.3f} |" for r in minilm["rows"]
                  if r["low"] is not None and r["delta"] is not None]
    elif minilm:
        lines.append(f"MiniLM: {minilm}")
    for e in REPORT.get("errors", []):
        lines.append(f"- error: {str(e)[:300]}")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- main
def main(argv=None) -> int:
    global JSON_PATH, WARMUP_FULL
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=["cuda", "cpu"], default="cuda", help="cuda (default): all GPUs torch sees; cpu: only to check the script")
    ap.add_argument("--quick", action="store_true", help="smaller text sets, one timed pass (~5 min of GPU on an H100)")
    ap.add_argument("--lease", action="store_true", help="sized for one device lease: the quick sets, bf16 only, MiniLM fp16 "
                    "against the recorded fp32 scores (under 8 minutes on an H100/H200)")
    ap.add_argument("--results", default=None, help="append this run's tables to this markdown file (benchmarks/RESULTS.md)")
    ap.add_argument("--tiny", action="store_true", help="2-layer models and a few texts: checks the script, measures nothing")
    ap.add_argument("--only", default="peak,encoder,decoder,scaling,minilm", help="comma-separated parts to run (default: all)")
    ap.add_argument("--dtypes", default=None, help="encoder dtypes (default fp16,bf16 on a GPU, fp32,bf16 on a CPU)")
    ap.add_argument("--decoder-dtypes", default=None, help="decoder dtypes (default bf16,fp16; --quick: bf16)")
    ap.add_argument("--decoder-st-dtypes", default=None, help="dtypes of the decoder's sentence-transformers runs (default: --decoder-dtypes)")
    ap.add_argument("--no-st", action="store_true", help="skip the sentence-transformers comparison")
    ap.add_argument("--short-warmup", action="store_true", help="warm up on two batches instead of one whole pass (first passes are slow)")
    ap.add_argument("--minilm-model", default="all-MiniLM-L6-v2")
    ap.add_argument("--minilm-suite", default="offline-en")
    ap.add_argument("--minilm-tasks", default=None, help="instead of the suite (e.g. STSBenchmark)")
    ap.add_argument("--minilm-ref", choices=["gpu", "recorded"], default="gpu",
                    help="fp32 side of the score change: gpu (run it here, default) or recorded (the CPU fp32 scores, equal to mteb 2.26)")
    ap.add_argument("--minilm-timeout", type=int, default=1200)
    ap.add_argument("--workdir", default=None, help="where the random models are saved (default: a temporary folder, removed)")
    ap.add_argument("--json", default=None, help="also write every number to this JSON file")
    args = ap.parse_args(argv)
    if args.lease:
        args.quick = True
        args.dtypes = args.dtypes or "bf16"
        args.decoder_dtypes = args.decoder_dtypes or "bf16"
        args.minilm_ref = "recorded"
        args.only = args.only.replace(",scaling", "")
    JSON_PATH = Path(args.json) if args.json else None
    parts = {p.strip() for p in args.only.split(",") if p.strip()}
    WARMUP_FULL = not args.short_warmup

    import torch
    import transformers

    transformers.utils.logging.disable_progress_bar()
    if args.device == "cuda" and not torch.cuda.is_available():
        print(f"bench_gpu: no GPU: torch {torch.__version__} sees no CUDA device (CUDA build: {torch.version.cuda}); "
              "run it on a machine with a GPU and a CUDA build of torch, or check the script with --device cpu --tiny", file=sys.stderr)
        return 2
    sz = SIZES["tiny" if args.tiny else "lease" if args.lease else "quick" if args.quick else "full"]
    info = device_info(args.device)
    REPORT.update(device=info, args=vars(args), sizes=sz, batch=BATCH)
    if args.device == "cuda":
        say(f"device: {info['gpu']} x {info['gpus']} ({info['gpu_memory_gib']} GiB, {info['sms']} SMs, sm_{info['capability'].replace('.', '')}); "
            f"torch {info['torch']}, CUDA {info['cuda']}; transformers {info['transformers']}, "
            f"sentence-transformers {info['sentence_transformers']}; {info.get('nvidia_smi', '')}")
    else:
        say(f"device: CPU ({info['cpu']}, {info['cores']} cores); torch {info['torch']}; transformers {info['transformers']}, "
            f"sentence-transformers {info['sentence_transformers']} -- a check of the script, not a GPU measurement")
    save_report()

    peaks = {"datasheet": datasheet_peak(info.get("gpu"))}
    if "peak" in parts:
        n, reps = (8192, 20) if args.device == "cuda" and not args.tiny else (512, 3)
        for dt in (["bf16", "fp16"] if args.device == "cuda" else ["fp32", "bf16"]):
            peaks[dt] = round(matmul_peak(args.device, dt, n, reps), 1)
        say(f"matmul peak ({n}^3, random data): " + ", ".join(f"{k} {v} TFLOP/s" for k, v in peaks.items() if k != "datasheet")
            + f"; datasheet dense bf16/fp16: {peaks['datasheet'] or 'unknown for this device'}")
        free(args.device)
    REPORT["peaks"] = peaks
    save_report()

    enc_dtypes = (args.dtypes or ("fp16,bf16" if args.device == "cuda" else "fp32,bf16")).split(",")
    dec_dtypes = (args.decoder_dtypes or ("bf16" if args.quick or args.device == "cpu" else "bf16,fp16")).split(",")
    tmp = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="bench-gpu-"))
    t_start = time.perf_counter()
    try:
        if "encoder" in parts or "scaling" in parts:
            folder = tmp / "bge-large-shape"
            folder.mkdir(parents=True, exist_ok=True)
            t = time.perf_counter()
            spec = build_encoder(folder, args.tiny)
            REPORT["encoder_spec"] = spec
            say(f"\nencoder (bge-large shape): {spec['params'] / 1e6:.0f}M parameters, {spec['body_params'] / 1e6:.0f}M outside the embeddings; built in {time.perf_counter() - t:.1f} s")
            mixes = make_mixes(sz, "encoder")
            if "encoder" in parts:
                bench_model("encoder", "bge-large-shape", folder, spec, mixes, enc_dtypes, args.device, peaks, sz["repeats"], 512, not args.no_st)
            if "scaling" in parts:
                if args.device == "cuda":
                    bench_scaling(folder, spec, mixes["SciFact docs 200-500 tok"], peaks, sz["repeats"])
                else:
                    say("CPU: no scaling measured")
        if "minilm" in parts:  # before the decoder, the longest part
            say(f"\nreal all-MiniLM-L6-v2 on {args.minilm_tasks or args.minilm_suite}: {'bf16' if args.device == 'cpu' else 'fp16'} against fp32")
            bench_minilm(args)
        if "decoder" in parts:
            folder = tmp / "mistral-7b-shape"
            folder.mkdir(parents=True, exist_ok=True)
            t = time.perf_counter()
            spec = build_decoder(folder, args.tiny, args.device, sz["long_len"])
            REPORT["decoder_spec"] = {**spec, "build_s": round(time.perf_counter() - t, 1)}
            say(f"\ndecoder (Mistral-7B shape): {spec['params'] / 1e9:.2f}B parameters, {spec['body_params'] / 1e9:.2f}B outside the embeddings; "
                f"built and saved in {time.perf_counter() - t:.1f} s")
            bench_model("decoder", "mistral-7b-shape", folder, spec, make_mixes(sz, "decoder"), dec_dtypes, args.device, peaks,
                        sz["repeats"], sz["long_len"], not args.no_st,
                        args.decoder_st_dtypes.split(",") if args.decoder_st_dtypes else None)
    finally:
        if not args.workdir:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
    say(f"\ntotal {time.perf_counter() - t_start:.0f} s after the matmul peak")
    save_report()
    if args.results:
        with open(args.results, "a") as f:
            f.write(results_markdown())
        say(f"tables appended to {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
