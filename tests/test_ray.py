"""Scale-out (issue 8): the memory-bounded search, corpus pre-encoding, and suites on a local Ray
instance (2 CPUs) with the result files written by the driver, a killed worker included."""
from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import write_jsonl

WORDS = "the a gene cell protein bank card money river king queen music film city science model search query".split()


def gen_retrieval_task(root: Path, n_docs: int = 400, n_queries: int = 90, name: str = "GenRet") -> Path:
    """A BEIR-style task folder (as tests/test_errors.py's retrieval_task) with generated texts."""
    rng = np.random.default_rng(7)
    d = root / name
    docs = [{"_id": f"d{i}", "title": " ".join(rng.choice(WORDS, 2)) if i % 3 else "", "text": " ".join(rng.choice(WORDS, 8)) + f" {i}"} for i in range(n_docs)]
    queries = [{"_id": f"q{i}", "text": " ".join(rng.choice(WORDS, 4))} for i in range(n_queries)]
    write_jsonl(d / "corpus.jsonl", docs)
    write_jsonl(d / "queries.jsonl", queries)
    (d / "qrels").mkdir(parents=True, exist_ok=True)
    rows = "".join(f"q{i}\td{(7 * i + j) % n_docs}\t1\n" for i in range(n_queries) for j in range(2))
    (d / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + rows)
    (d / "task.yaml").write_text(f"name: {name}\ntype: Retrieval\n")
    return d


def _spec_and_task(model: Path, task_dir: Path):
    from evalkit.models.catalog import get_spec
    from evalkit.tasks import Registry

    return get_spec(str(model)), Registry().task(str(task_dir))


def _opts(tmp: Path, **kw):
    from evalkit.plan import Settings

    kw.setdefault("cache_dir", tmp / "cache")
    return Settings(output=tmp / "results", batch_size=32, **kw)


def run_tasks(spec, specs, settings, **plan_kw):
    """The local run of `specs` (make_plan + execute in this process)."""
    from evalkit.run import evaluate

    return evaluate(spec, specs, settings, **plan_kw)


def run_on_ray(spec, specs, settings, *, address="local", workers=2, check_data=True, **kw):
    """The same plan on Ray actors (the driver, this process, writes every result)."""
    from evalkit.executors import RayExecutor
    from evalkit.plan import make_plan
    from evalkit.run import execute

    plan = make_plan(spec, specs, settings, check_data=check_data)
    ex = RayExecutor(settings, address=address, workers=workers, **kw)
    try:
        return execute(plan, ex.start())
    finally:
        ex.close()


# ----------------------------------------------------------------------------- bounded search
def test_memmap_index_equals_mteb_default_topk_on_random_vectors(tmp_path):
    from mteb.similarity_functions import cos_sim

    from evalkit.search import MemmapIndex, default_search_topk

    rng = np.random.default_rng(0)
    docs = rng.standard_normal((1000, 16)).astype(np.float32)
    docs[500] = docs[10]  # an exact tie across chunks
    ids = [f"doc{i:04d}" for i in range(len(docs))]
    queries = rng.standard_normal((70, 16)).astype(np.float32)
    idx = MemmapIndex(tmp_path, query_block=16, doc_chunk=128)
    for s in range(0, len(docs), 300):  # added in pieces, as the chunked index() does
        idx.add_documents(docs[s : s + 300], ids[s : s + 300])
    assert idx.path.stat().st_size == docs.nbytes
    values, rows = idx.search(queries, 10, cos_sim)
    # mteb's own merge of the candidates (SearchEncoderWrapper._sort_full_corpus_results's logic)
    import heapq

    mine = []
    for q in range(len(queries)):
        h = []
        for s, r in zip(values[q], rows[q]):
            (heapq.heappush if len(h) < 10 else heapq.heappushpop)(h, (s, ids[r]))
        mine.append(sorted(h, reverse=True))
    ref = [sorted(h, reverse=True) for h in default_search_topk(queries, docs, ids, 10, cos_sim)]
    assert [[d for _, d in m] for m in mine] == [[d for _, d in r] for r in ref]
    np.testing.assert_allclose([[s for s, _ in m] for m in mine], [[s for s, _ in r] for r in ref], rtol=0, atol=1e-6)
    # the bound: never more than query_block x doc_chunk scores, nor more than doc_chunk vectors, at once
    assert idx.stats["max_score_block"] == 16 * 128
    assert idx.stats["max_doc_rows"] == 128
    assert idx.stats["score_blocks"] == 5 * 8  # ceil(70/16) query blocks x ceil(1000/128) chunks
    path = idx.path
    idx.clear()
    assert not path.exists()


def test_device_resident_chunks_search_as_the_file(tmp_path):
    """The GPU search's chunk handling (chunks kept on the device up to a budget, the rest read again for
    each query block), run with the CPU as the device: the same candidates and scores as the plain search."""
    from mteb.similarity_functions import cos_sim

    from evalkit.search import MemmapIndex

    rng = np.random.default_rng(1)
    docs = rng.standard_normal((1000, 16)).astype(np.float32)
    queries = rng.standard_normal((70, 16)).astype(np.float32)
    plain = MemmapIndex(tmp_path / "a", query_block=16, doc_chunk=128)
    held = MemmapIndex(tmp_path / "b", query_block=16, doc_chunk=128, device="cpu", device_bytes=3 * 128 * 16 * 4)
    for idx in (plain, held):
        idx.add_documents(docs, [f"d{i}" for i in range(len(docs))])
    assert held.search(queries, 10, cos_sim) == plain.search(queries, 10, cos_sim)
    assert held.stats["resident_rows"] == 3 * 128 and len(held._resident) == 3  # the budget: three chunks
    held.clear()
    assert held._resident == {}


def exact_unit_vectors(v: np.ndarray) -> np.ndarray:
    """Each row as a unit vector of exactly representable entries: +-1/4 at its 16 largest components
    (by magnitude, with their signs), 0 elsewhere. Its norm is exactly 1 and every dot product of two
    such rows (a multiple of 1/16) is exact in float32, so no BLAS can round it differently."""
    v = np.asarray(v, dtype=np.float32)
    top = np.argsort(-np.abs(v), axis=1, kind="stable")[:, :16]
    out = np.zeros_like(v)
    np.put_along_axis(out, top, np.where(np.take_along_axis(v, top, axis=1) >= 0, 0.25, -0.25).astype(np.float32), axis=1)
    return out


def test_bounded_search_gives_mteb_scores_on_a_task(tiny_bert, tmp_path, monkeypatch):
    """Same task, mteb's default search vs the memmap search in small blocks: same metrics, same
    per-query scores, and the largest score block allocated is query_block x doc_chunk.

    The tiny model's vectors pass through exact_unit_vectors first. On the raw vectors, whose scores
    are full of near-ties, the two searches agreed exactly with MKL's AVX-512 kernels but not with its
    AVX2 ones (ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2: ndcg_at_100 0.0591 against
    0.05915), because BLAS may round a dot product differently in a 32 x 100 block than in mteb's
    90 x 400 one: the searches' logic is what is compared, not BLAS's last bits."""
    from evalkit import search
    from evalkit.models.adapters import EmbeddingAdapter

    task_dir = gen_retrieval_task(tmp_path, n_docs=400, n_queries=90)
    spec, ts = _spec_and_task(tiny_bert, task_dir)
    real_encode = EmbeddingAdapter.encode
    monkeypatch.setattr(EmbeddingAdapter, "encode", lambda self, *a, **kw: exact_unit_vectors(real_encode(self, *a, **kw)))
    blocks = []
    real_note = search.MemmapIndex._note
    monkeypatch.setattr(search.MemmapIndex, "_note", lambda self, scores, n: (blocks.append(tuple(scores.shape)), real_note(self, scores, n)))
    # one cache: both searches score the very same vectors (encoding the corpus in other batches
    # would change them in the last bits, and random tiny-model scores are full of near-ties)
    cache = tmp_path / "cache"
    ref = run_tasks(spec, [ts], _opts(tmp_path / "mteb", search="mteb", cache_dir=cache))[0]
    assert not blocks  # mteb's own path: the bounded index was never used
    got = run_tasks(spec, [ts], _opts(tmp_path / "mm", search="memmap", query_block=32, doc_chunk=100, cache_dir=cache))[0]
    assert ref.status == got.status == "done"
    assert blocks and max(a * b for a, b in blocks) == 32 * 100 and all(a <= 32 and b <= 100 for a, b in blocks)
    assert len(blocks) == 3 * 4  # ceil(90/32) x ceil(400/100)
    d_ref, d_got = json.loads(ref.path.read_text()), json.loads(got.path.read_text())
    _diff = {k: (v, d_got["scores"]["test"][0].get(k)) for k, v in d_ref["scores"]["test"][0].items() if d_got["scores"]["test"][0].get(k) != v}
    assert d_ref["scores"] == d_got["scores"], _diff
    i_ref = json.loads(ref.path.with_name("GenRet.items.json").read_text())
    i_got = json.loads(got.path.with_name("GenRet.items.json").read_text())
    assert i_ref["splits"] == i_got["splits"]
    assert 0 < d_ref["scores"]["test"][0]["ndcg_at_10"] < 1  # the quantised vectors still rank
    # auto: this small corpus takes mteb's path unchanged
    blocks.clear()
    auto = run_tasks(spec, [ts], _opts(tmp_path / "auto", cache_dir=cache))[0]
    assert not blocks and json.loads(auto.path.read_text())["scores"] == d_ref["scores"]


def test_pre_encoded_corpus_is_not_encoded_again(tiny_bert, tmp_path):
    """corpus_texts() gives exactly the document texts mteb asks for: once they are in the cache, the
    evaluation encodes only the queries."""
    from evalkit.evaluation import Job, Models, evaluate_unit
    from evalkit.executors import corpus_texts
    from evalkit.models.adapters import EmbeddingAdapter
    from evalkit.plan import make_plan
    from evalkit.tasks import build_task

    task_dir = gen_retrieval_task(tmp_path, n_docs=300, n_queries=40)
    spec, ts = _spec_and_task(tiny_bert, task_dir)
    opts = _opts(tmp_path)
    (unit,) = make_plan(spec, [ts], opts).units
    models = Models(opts)
    emb = models.embedder(unit.model)
    texts = corpus_texts(build_task(ts), EmbeddingAdapter(unit.model.spec, emb), 32)
    assert len(texts) == 300
    emb.embed(texts[:150])
    emb.embed(texts[150:])
    models.close()
    ev = evaluate_unit(Job(unit), opts, Models(opts))
    n_queries = len({json.loads(line)["text"] for line in (task_dir / "queries.jsonl").read_text().splitlines()})
    assert ev.doc["evalkit"]["work"]["encoded_texts"] == n_queries
    assert ev.doc["evalkit"]["work"]["cached_texts"] == 300


# ----------------------------------------------------------------------------- Ray
def test_ray_shards_a_large_corpus_and_a_bad_task_fails_alone(ray_local, tiny_bert, tmp_path):
    """A corpus past the shard threshold is encoded in shards on both workers and its evaluation
    encodes no document, with the local run's scores. A task that fails on a worker (here: an empty
    corpus, found while sizing it for shards; the plan did not read the data, as if it changed after
    planning) is one failed outcome with evalkit's one-line message, and the other task is written
    as usual. One run on the same actors checks both."""
    from evalkit.tasks import Registry

    task_dir = gen_retrieval_task(tmp_path, n_docs=400, n_queries=60)
    bad = gen_retrieval_task(tmp_path, n_docs=60, n_queries=10, name="BadRet")
    (bad / "corpus.jsonl").write_text("")
    spec, ts = _spec_and_task(tiny_bert, task_dir)
    opts = _opts(tmp_path / "ray")
    out = run_on_ray(spec, [Registry().task(str(bad)), ts], opts, address="local", workers=2, shard_above=100, shard_size=80, check_data=False)
    assert [(o.task, o.status) for o in out] == [("BadRet", "failed"), ("GenRet", "done")]
    assert "\n" not in out[0].message and "corpus" in out[0].message, out[0].message
    assert not list(tmp_path.rglob("BadRet*.json"))
    good = out[1]
    doc = json.loads(good.path.read_text())
    n_queries = len({json.loads(line)["text"] for line in (task_dir / "queries.jsonl").read_text().splitlines()})
    assert doc["evalkit"]["ray"]["corpus_shards"] == 5 and doc["evalkit"]["ray"]["workers"] == 2
    assert doc["evalkit"]["work"]["encoded_texts"] == n_queries  # 0 documents encoded during the evaluation
    assert doc["evalkit"]["work"]["cached_texts"] == 400
    local = run_tasks(spec, [ts], _opts(tmp_path / "local"))[0]
    ref = json.loads(local.path.read_text())
    for split, subsets in ref["scores"].items():
        for a, b in zip(subsets, doc["scores"][split]):
            assert b["main_score"] == pytest.approx(a["main_score"], abs=1e-5)
    assert good.path.with_name("GenRet.items.json").is_file()
    # a driver started again skips what is done, as a local run does
    again = run_on_ray(spec, [ts], opts, address="local", workers=2)
    assert [o.status for o in again] == ["skipped"] and again[0].scores == good.scores


@pytest.mark.real
def test_ray_offline_en_equals_local_run_with_a_worker_killed(ray_local, killed_offline_en, tmp_path):
    """offline-en (CI's task list) with the real MiniLM on 2 Ray workers, one of them killed while it
    evaluates a task: every task finishes, with exactly the local run's scores and files."""
    from evalkit.models.catalog import get_spec
    from evalkit.results import main_scores
    from evalkit.tasks import Registry
    from tests.offline_run import EN_TASKS, results_by_task

    cache = tmp_path / "cache"
    shutil.copytree(killed_offline_en["cache"], cache)
    spec = get_spec("all-MiniLM-L6-v2")
    reg = Registry()
    specs = [reg.task(t) for t in EN_TASKS]
    opts = _opts(tmp_path, cache_dir=cache)
    actors, box = [], {}

    def driver():
        try:
            box["out"] = run_on_ray(spec, specs, opts, address="local", workers=2, on_start=actors.extend)
        except BaseException as e:  # noqa: BLE001
            box["error"] = e

    th = threading.Thread(target=driver, daemon=True)
    th.start()
    killed = None
    deadline = time.time() + 240
    while killed is None and th.is_alive() and time.time() < deadline:
        if actors:
            for a in actors:
                st = ray_local.get(a.status.options(concurrency_group="control").remote(), timeout=30)
                if st["task"] and st["done"]:  # mid-unit, after it finished at least one
                    os.kill(st["pid"], signal.SIGKILL)
                    killed = st
                    break
        time.sleep(0.5)
    th.join(timeout=400)
    assert not th.is_alive(), "the Ray run did not finish"
    assert "error" not in box, box.get("error")
    assert killed is not None, "no worker was caught mid-task"
    out = box["out"]
    assert [o.status for o in out] == ["done"] * len(EN_TASKS), [(o.task, o.message) for o in out]

    local = results_by_task(killed_offline_en["out"])
    mine = results_by_task(opts.output)
    assert set(mine) == set(EN_TASKS)
    for t in EN_TASKS:
        assert main_scores(mine[t]) == main_scores(local[t]), t
        assert mine[t]["scores"] == local[t]["scores"], t
        assert mine[t]["evalkit"]["ray"]["workers"] == 2
        assert set(mine[t]) == set(local[t]) and set(mine[t]["evalkit"]) - set(local[t]["evalkit"]) == {"ray"}
    task_killed = killed["task"].split(" ")[1]  # "<model> <task>[ (corpus)| [lo:hi]]"
    assert mine[task_killed]["evalkit"]["ray"]["worker_pid"] != killed["pid"]  # redone by the restarted worker
    assert mine[task_killed]["evalkit"]["work"]["encoded_texts"] == 0
    # the same files, in the same layout, as the local run (the driver wrote them)
    rel = lambda root: sorted(str(p.relative_to(root)) for p in root.rglob("*.json") if not p.name.startswith("."))  # noqa: E731
    assert rel(opts.output) == rel(killed_offline_en["out"])


# ----------------------------------------------------------------------------- command line
def test_cli_ray_local_end_to_end(ray_local, tiny_bert, tmp_path):
    """The command line with --ray, on the session's local instance (a driver process that starts its
    own instance with --ray local is test_faults' killed-driver test), then the same command without Ray."""
    from evalkit.cli import main

    task_dir = gen_retrieval_task(tmp_path, n_docs=120, n_queries=30)
    base = ["run", "--model", str(tiny_bert), "--tasks", str(task_dir), "--cache-dir", str(tmp_path / "c")]
    assert main([*base, "--output", str(tmp_path / "ray"), "--ray", "local", "--ray-workers", "2"]) == 0
    assert main([*base, "--output", str(tmp_path / "local")]) == 0  # the same command in this process, without Ray
    (a,) = (tmp_path / "ray").rglob("GenRet.json")
    (b,) = (tmp_path / "local").rglob("GenRet.json")
    assert a.relative_to(tmp_path / "ray") == b.relative_to(tmp_path / "local")
    da, db = json.loads(a.read_text()), json.loads(b.read_text())
    assert da["scores"] == db["scores"] and "ray" in da["evalkit"] and "ray" not in db["evalkit"]
    n_queries = len({json.loads(line)["text"] for line in (task_dir / "queries.jsonl").read_text().splitlines()})
    assert da["evalkit"]["work"]["encoded_texts"] == 120 + n_queries  # on the Ray workers, into the same cache...
    assert db["evalkit"]["work"]["encoded_texts"] == 0  # ...which then served the local run


def test_cli_ray_errors_are_one_line(tiny_bert, tmp_path, capsys, monkeypatch):
    from evalkit.cli import main

    task_dir = gen_retrieval_task(tmp_path, n_docs=20, n_queries=5)
    args = ["run", "--model", str(tiny_bert), "--tasks", str(task_dir), "--output", str(tmp_path / "r")]
    assert main([*args, "--ray", "127.0.0.1:9"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("evalkit: error: the Ray cluster at 127.0.0.1:9 cannot be reached"), err
    assert main([*args, "--ray", "not an address"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("evalkit: error: --ray 'not an address' is not an address"), err
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    assert main([*args, "--ray"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("evalkit: error: --ray needs Ray: pip install"), err
    assert not list((tmp_path / "r").rglob("*.json"))
