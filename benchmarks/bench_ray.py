"""Scale-out benchmark (issue 8): local vs Ray, and the memory of exact search.

1. Wall time of `evalkit run` on a few offline-en tasks with all-MiniLM-L6-v2: locally and on a
   local Ray instance with 2 workers, each with a cold embedding cache in a temporary folder
   (speedup = local / Ray), then both again on the warm cache (the model is never loaded: what is
   left is Ray's overhead: starting the instance and the actors, shipping results).
2. Peak resident memory of SciFact's evaluation with the bounded (memmap) search vs mteb's default
   search, each in its own process (os.wait4's ru_maxrss), on the warm cache, with the largest score
   block each allocates; then the same for a synthetic search (random vectors) large enough for the
   difference to show: mteb scores all queries against 50k documents at once.

    .venv/bin/python benchmarks/bench_ray.py [--tasks STS12,STS13,STSBenchmark,SciFact] [--workers 2]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EVALKIT = [sys.executable, "-m", "evalkit.cli"]


def run_child(cmd: list[str]) -> tuple[int, float, str]:
    """(exit code, wall seconds, stdout) of one child process."""
    t0 = time.time()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    out, err = p.communicate()
    if p.returncode != 0:
        sys.stderr.write(err[-3000:])
    return p.returncode, time.time() - t0, out


def run_wait4(cmd: list[str]) -> tuple[int, float, float, str]:
    """As run_child, with the child's own peak RSS from os.wait4 (per child, not cumulative)."""
    t0 = time.time()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        p = subprocess.Popen(cmd, stdout=out, stderr=err, text=True, cwd=ROOT)
        _, status, ru = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if p.returncode != 0:
            sys.stderr.write(err.read()[-3000:])
        return p.returncode, time.time() - t0, ru.ru_maxrss / 1024, out.read()


def scores_of(folder: Path) -> dict:
    from evalkit.results import main_scores, scan

    return {r.task: main_scores(r.doc) for r in scan(folder)}


SEARCH_CHILD = r"""
import json, sys
from pathlib import Path
from evalkit.evaluation import Job, Models, evaluate_unit
from evalkit.models.catalog import get_spec
from evalkit.plan import Settings, make_plan
from evalkit.tasks import Registry
from evalkit import search
mode, cache = sys.argv[1], sys.argv[2]
blocks = []
real = search.MemmapIndex._note
search.MemmapIndex._note = lambda self, s, n: (blocks.append(int(s.numel())), real(self, s, n))
opts = Settings(output=Path(cache) / "unused", cache_dir=Path(cache), search=mode)
(unit,) = make_plan(get_spec("all-MiniLM-L6-v2"), [Registry().task("SciFact")], opts).units
ev = evaluate_unit(Job(unit), opts, Models(opts))
print(json.dumps({"ndcg_at_10": ev.doc["scores"]["test"][0]["ndcg_at_10"], "encoded": ev.encoded, "max_block": max(blocks) if blocks else None}))
"""

SYNTH_CHILD = r"""
import json, sys, resource
import numpy as np, torch
from mteb.similarity_functions import cos_sim
from evalkit.search import MemmapIndex, default_search_topk
mode, n_docs, n_q, dim = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rng = np.random.default_rng(0)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
if mode == "memmap":
    idx = MemmapIndex()
    for s in range(0, n_docs, 10000):  # as the chunked index(): vectors go to disk chunk by chunk
        idx.add_documents(rng.standard_normal((min(10000, n_docs - s), dim), dtype=np.float32), [f"d{i}" for i in range(s, min(s + 10000, n_docs))])
    q = rng.standard_normal((n_q, dim), dtype=np.float32)
    v, i = idx.search(q, 100, cos_sim)
    block = idx.stats["max_score_block"]
else:
    docs = rng.standard_normal((n_docs, dim), dtype=np.float32)  # mteb holds a 50k chunk's vectors
    q = rng.standard_normal((n_q, dim), dtype=np.float32)
    default_search_topk(q, docs, [f"d{i}" for i in range(n_docs)], 100, cos_sim)
    block = n_q * min(n_docs, 50000)
print(json.dumps({"max_block": block, "baseline_mib": base}))
"""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tasks", default="STS12,STS13,STSBenchmark,SciFact")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--shard-above", type=int, default=2000, help="Ray runs: corpora above this many documents are encoded in shards on all workers")
    ap.add_argument("--synthetic", default="100000,4000,384", help="docs,queries,dim of the synthetic search ('' to skip)")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.pop("RAY_ADDRESS", None)
    tmp = Path(tempfile.mkdtemp(prefix="evalkit-bench-ray-"))
    base = ["run", "--model", "all-MiniLM-L6-v2", "--tasks", args.tasks]
    rows = []
    ray = ["--ray", "local", "--ray-workers", str(args.workers), "--ray-shard-above", str(args.shard_above)]
    for label, cache, extra in [
        ("local, cold cache", "c-local", []),
        (f"Ray local, {args.workers} workers, cold cache", "c-ray", ray),
        ("local, warm cache", "c-local", []),
        (f"Ray local, {args.workers} workers, warm cache", "c-ray", ray),
    ]:
        out = tmp / f"r{len(rows)}"
        rc, wall, _ = run_child([*EVALKIT, *base, "--output", str(out), "--cache-dir", str(tmp / cache), *extra])
        rows.append((label, rc, wall, scores_of(out)))
        print(f"{label:38s} {wall:7.1f} s  (exit {rc})", flush=True)
    (_, _, lc, s_local), (_, _, rc_, s_ray), (_, _, lw, _), (_, _, rw, _) = rows
    same = s_local == s_ray
    print(f"\nlocal vs Ray ({args.workers} workers, corpora above {args.shard_above} documents sharded), {args.tasks}: speedup {lc / rc_:.2f}x on a cold cache; "
          f"Ray overhead {rw - lw:+.1f} s on a warm cache (start + actors + results); scores identical: {same}")

    if "SciFact" in args.tasks.split(","):
        print("\nSciFact evaluation, warm cache, one process each (peak RSS from os.wait4):")
        for mode in ("mteb", "memmap"):
            rc, wall, rss, out = run_wait4([sys.executable, "-c", SEARCH_CHILD, mode, str(tmp / "c-local")])
            info = json.loads(out.strip().splitlines()[-1]) if rc == 0 else {}
            block = info.get("max_block") or (300 * 5183 if mode == "mteb" else None)
            print(f"  search {mode:6s}: peak RSS {rss:7.1f} MiB, largest score block {block} floats, nDCG@10 {info.get('ndcg_at_10')}, {wall:.1f} s", flush=True)
    if args.synthetic:
        n_docs, n_q, dim = (int(x) for x in args.synthetic.split(","))
        print(f"\nsynthetic exact search, {n_docs} docs x {n_q} queries x {dim} dims, top 100 (peak RSS from os.wait4):")
        for mode in ("mteb", "memmap"):
            rc, wall, rss, out = run_wait4([sys.executable, "-c", SYNTH_CHILD, mode, str(n_docs), str(n_q), str(dim)])
            info = json.loads(out.strip().splitlines()[-1]) if rc == 0 else {}
            print(f"  search {mode:6s}: peak RSS {rss:7.1f} MiB (after imports {info.get('baseline_mib', 0):.0f} MiB), "
                  f"largest score block {info.get('max_block')} floats, {wall:.1f} s", flush=True)
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
