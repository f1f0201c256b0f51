"""Few-shot evaluation: pools, the evaluated-split guard, selectors, prefixes, settings, the CLI, and a
real run of all-MiniLM-L6-v2 on SIB200Classification and Banking77 (0 vs 3 examples, random and
similar selection) that proves no example came from the evaluated split."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from evalkit import EvalkitError
from evalkit.cli import main
from evalkit.fewshot import (
    Example, ExamplePool, FewshotFactory, Setting, build_pools, load_examples_file, make_selector, norm, settings_from_args,
)
from evalkit.models.icl import examples_prefix
from tests.conftest import write_jsonl
from tests.offline_run import run_in_process

INSTR = "Classify the bank query."


# ----------------------------------------------------------------------------- helpers
def task_folder(root: Path, name: str, typ: str, files: dict, fewshot: str | None = "{split: train}", extra: str = "") -> Path:
    d = root / name
    for fname, rows in files.items():
        if fname.endswith(".jsonl"):
            write_jsonl(d / fname, rows)
        else:
            (d / fname).parent.mkdir(parents=True, exist_ok=True)
            (d / fname).write_text(rows if isinstance(rows, str) else json.dumps(rows))
    y = f"name: {name}\ntype: {typ}\ninstruction: {INSTR}\n" + (f"fewshot: {fewshot}\n" if fewshot else "") + extra
    (d / "task.yaml").write_text(y)
    return d


def built(folder: Path):
    from evalkit.tasks import build_task, task_from_folder

    ts = task_from_folder(folder)
    return ts, build_task(ts)


CLS_TRAIN = [{"text": f"the bank card {w} {i}", "label": lab} for i, (w, lab) in enumerate(
    [("money", "money"), ("transfer", "money"), ("balance", "money"), ("king", "royal"), ("queen", "royal"), ("city", "royal"),
     ("music", "art"), ("film", "art"), ("happy", "art"), ("sad", "art"), ("good", "money"), ("bad", "royal")])]
CLS_TEST = [{"text": f"a test query {w}", "label": lab} for w, lab in [("money", "money"), ("king", "royal"), ("film", "art"),
                                                                      ("bank", "money"), ("queen", "royal"), ("music", "art")]]
CLS_TEST.append({"text": CLS_TRAIN[0]["text"].upper(), "label": "money"})  # a train text that is also evaluated


def cls_task(root: Path, **kw) -> Path:
    return task_folder(root, kw.pop("name", "Cls"), "Classification", {"train.jsonl": CLS_TRAIN, "test.jsonl": CLS_TEST}, **kw)


def pool_of(items, eval_keys=(), task="T") -> ExamplePool:
    exs = [Example(q, r, split="train", row=i, source="split:train") for i, (q, r) in enumerate(items)]
    return ExamplePool(task, "default", exs, "split:train", ("test",), frozenset(norm(t) for t in eval_keys))


# ----------------------------------------------------------------------------- prefix format
def test_examples_prefix_is_flagembeddings():
    exs = [{"instruct": "I1", "query": "q1", "response": "r1"}, {"query": "q2", "response": "r2"}]
    assert examples_prefix(exs, "TASK") == "<instruct>I1\n<query>q1\n<response>r1\n\n<instruct>TASK\n<query>q2\n<response>r2\n\n"
    assert examples_prefix([], "TASK") == "" and examples_prefix(None) == ""
    assert examples_prefix([Example("q", "r")], "T") == "<instruct>T\n<query>q\n<response>r\n\n"


def test_examples_file_json_and_jsonl(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps([{"query": "q", "response": "r"}, {"instruct": "i", "query": "q2", "response": "r2"}]))
    write_jsonl(tmp_path / "b.jsonl", [{"query": "q", "response": "r"}])
    a = load_examples_file(tmp_path / "a.json")
    assert [(e.instruct, e.query, e.response, e.row, e.split) for e in a] == [(None, "q", "r", 0, None), ("i", "q2", "r2", 1, None)]
    assert len(load_examples_file(tmp_path / "b.jsonl")) == 1
    (tmp_path / "c.json").write_text(json.dumps([{"query": "q"}]))
    with pytest.raises(EvalkitError, match="needs string `query` and `response`"):
        load_examples_file(tmp_path / "c.json")
    (tmp_path / "d.json").write_text("{not json")
    with pytest.raises(EvalkitError, match="not JSON"):
        load_examples_file(tmp_path / "d.json")


# ----------------------------------------------------------------------------- pools and the guard
def test_classification_pool_from_train_drops_evaluated_texts(tmp_path):
    ts, task = built(cls_task(tmp_path))
    (pool,) = build_pools(ts, task).values()
    assert pool.source == "split:train" and pool.eval_splits == ("test",)
    assert pool.dropped == 1 and len(pool.items) == len(CLS_TRAIN) - 1  # the train text that is also a test text
    assert all(ex.split == "train" and CLS_TRAIN[ex.row] == {"text": ex.query, "label": ex.response} for ex in pool.items)
    assert not any(norm(ex.query) in {norm(r["text"]) for r in CLS_TEST} for ex in pool.items)


def test_pool_rules_for_sts_pairs_and_retrieval(tmp_path):
    sts = task_folder(tmp_path, "S", "STS", {
        "train.jsonl": [{"sentence1": f"a{i}", "sentence2": f"b{i}", "score": s} for i, s in enumerate([5, 4.5, 1, 0, 4])],
        "test.jsonl": [{"sentence1": "x", "sentence2": "y", "score": 3}, {"sentence1": "b0", "sentence2": "z", "score": 2}]})
    ts, task = built(sts)
    (pool,) = build_pools(ts, task).values()
    assert [(e.query, e.response) for e in pool.items] == [("a1", "b1"), ("a4", "b4")]  # >= 4 of 0-5; a0/b0: b0 is evaluated
    ts.fewshot = {"split": "train", "min_score": 0.5}
    assert len(next(iter(build_pools(ts, task).values())).items) == 3

    pairs = task_folder(tmp_path, "P", "PairClassification", {
        "train.jsonl": [{"sentence1": f"p{i}", "sentence2": f"q{i}", "label": i % 2} for i in range(6)],
        "test.jsonl": [{"sentence1": "x", "sentence2": "y", "label": 1}, {"sentence1": "u", "sentence2": "v", "label": 0}]})
    ts, task = built(pairs)
    assert [(e.query, e.response) for e in next(iter(build_pools(ts, task).values())).items] == [("p1", "q1"), ("p3", "q3"), ("p5", "q5")]

    ret = task_folder(tmp_path, "R", "Retrieval", {
        "corpus.jsonl": [{"_id": f"d{i}", "title": "T" if i == 1 else "", "text": f"doc {i}"} for i in range(4)],
        "queries.jsonl": [{"_id": f"q{i}", "text": f"query {i}"} for i in range(4)],
        "qrels/test.tsv": "query-id\tcorpus-id\tscore\nq0\td0\t1\nq1\td1\t1\n",
        "qrels/dev.tsv": "query-id\tcorpus-id\tscore\nq2\td2\t1\nq3\td1\t2\nq3\td3\t1\nq1\td0\t1\n"}, fewshot="{split: dev}", extra="eval_splits: [test]\n")
    ts, task = built(ret)
    (pool,) = build_pools(ts, task).values()
    # a query with its most relevant passage; q1 is judged in the evaluated split: left out
    assert [(e.query, e.response) for e in pool.items] == [("query 2", "doc 2"), ("query 3", "T doc 1")] and pool.dropped == 1


def test_pool_errors_are_one_clear_line(tmp_path):
    ts, task = built(cls_task(tmp_path, name="EvalSplit", fewshot="{split: test}"))
    with pytest.raises(EvalkitError, match="pool split 'test' is evaluated"):
        build_pools(ts, task)
    ts, task = built(task_folder(tmp_path, "Clu", "Clustering", {"test.json": {"sentences": [f"s{i}" for i in range(60)], "labels": ["x", "y"] * 30}}))
    with pytest.raises(EvalkitError, match="no 'train' split"):
        build_pools(ts, task)
    ts, task = built(task_folder(tmp_path, "NoPool", "STS", {"test.jsonl": [{"sentence1": "a", "sentence2": "b", "score": s} for s in (1, 2)]}, fewshot=None))
    with pytest.raises(EvalkitError, match="has no few-shot pool"):
        build_pools(ts, task)
    ts, task = built(cls_task(tmp_path, name="Keys", fewshot="{split: train, shots: 3}"))
    with pytest.raises(EvalkitError, match="unknown `fewshot:` keys"):
        build_pools(ts, task)
    # an examples file that holds an evaluated text is an error, never silently used
    d = cls_task(tmp_path, name="BadFile", fewshot="{file: ex.json}")
    (d / "ex.json").write_text(json.dumps([{"query": "fine", "response": "art"}, {"query": "A test query  KING", "response": "royal"}]))
    ts, task = built(d)
    with pytest.raises(EvalkitError, match="is a text of the evaluated split"):
        build_pools(ts, task)


def test_every_handed_out_example_is_checked(tmp_path):
    """The guard runs on each example given to an input: a pool item from the evaluated split
    (however it got there) stops the run with EvalkitError."""
    from evalkit.models.catalog import get_spec

    ts, task = built(cls_task(tmp_path))
    pool = ExamplePool("T", "default", [Example("x", "y", split="train", row=0)], "split:train", ("test",), frozenset({"a test"}))
    pool.check(pool.items[0])
    for bad in (Example("x", "y", split="test", row=3), Example("A  Test", "y", split="train", row=1)):
        with pytest.raises(EvalkitError, match="evaluated split"):
            pool.check(bad)

    class Emb:  # the prefixer only needs these of an embedder here
        path, max_length, config = None, None, type("C", (), {"trust_remote_code": False})()

    prefixer = FewshotFactory(Setting(2, "first_n"), get_spec("all-MiniLM-L6-v2"), Emb())(ts, task)
    assert prefixer("a test query film", "a test query film", None, "test", "default").endswith("a test query film")
    (pool,) = prefixer.pools.values()
    pool.items.insert(0, Example("sneaked in", "money", split="test", row=0))
    with pytest.raises(EvalkitError, match="comes from the evaluated split 'test'"):
        prefixer("a test query film", "a test query film", None, "test", "default")


# ----------------------------------------------------------------------------- selectors
def test_fixed_first_n_and_random_selectors():
    items = [(f"q{i}", f"r{i}") for i in range(10)] + [("q1", "dup")]
    pool = pool_of(items)
    first = make_selector("first_n", 3)
    assert [e.query for e in first.select(pool, "something")] == ["q0", "q1", "q2"]
    assert [e.query for e in first.select(pool, " Q1 ")] == ["q0", "q2", "q3"]  # never the input itself
    with pytest.raises(EvalkitError, match="uses the task's examples file"):
        make_selector("fixed", 3).prepare(pool)
    filed = ExamplePool("T", "default", [Example(q, r, row=i, source="file:x") for i, (q, r) in enumerate(items)], "file:x", ("test",))
    fixed = make_selector("fixed", 2)
    fixed.prepare(filed)
    assert [e.query for e in fixed.select(filed, "zzz")] == ["q0", "q1"]

    def rand(seed, text, p=pool):
        sel = make_selector("random", 4, seed)
        sel.prepare(p)
        return [e.query for e in sel.select(p, text)]

    a = rand(42, "input one")
    assert len(a) == len(set(a)) == 4
    assert rand(42, "input two") == a == rand(42, "input one")  # one seeded draw per task, the same for every input
    assert rand(7, "input one") != a  # the seed matters
    assert a[0] not in rand(42, a[0])  # an input that is one of the examples gets another in its place
    with pytest.raises(EvalkitError, match="unknown selector"):
        make_selector("nearest", 3)


def test_similar_selector_nearest_last_and_never_itself():
    vocab = ["bank", "card", "king", "queen", "music", "film"]

    def embed(texts):
        return np.array([[t.split().count(w) for w in vocab] for t in texts], dtype=np.float32)

    pool = pool_of([("bank card", "money"), ("king queen", "royal"), ("music film", "art"), ("bank bank card", "money"), ("queen", "royal")])
    sel = make_selector("similar", 2, embed=embed)
    sel.prepare(pool, ["card bank"])
    assert [e.query for e in sel.select(pool, "card bank")] == ["bank bank card", "bank card"]  # nearest last
    assert sel.misses == 0
    assert [e.query for e in sel.select(pool, "bank card")] == ["king queen", "bank bank card"]  # not itself; ties by pool order
    assert sel.misses == 0
    assert [e.query for e in sel.select(pool, "film music music")] == ["bank card", "music film"]  # a 0-similarity tie: pool order
    assert sel.misses == 1  # an input not seen in prepare() is embedded on the fly


def test_prefix_for_ordinary_embedders_fits_the_max_length(tmp_path, tiny_bert):
    """A non-ICL model gets the same example prefix before its usual input; examples that would push
    the input past the model's max length are dropped (farthest first), never the input."""
    from evalkit.models.catalog import get_spec
    from evalkit.models.embedder import Embedder

    ts, task = built(cls_task(tmp_path))
    spec = get_spec(str(tiny_bert))
    emb = Embedder(tiny_bert, max_length=512)
    p = FewshotFactory(Setting(3, "first_n"), spec, emb)(ts, task)
    out = p("a test query money", "a test query money", None, "test", "default")
    assert out == examples_prefix([Example(r["text"], r["label"]) for r in CLS_TRAIN[1:4]], INSTR) + "a test query money"
    short = FewshotFactory(Setting(3, "first_n"), spec, Embedder(tiny_bert, max_length=60))(ts, task)
    out = short("a test query money", "a test query money", None, "test", "default")
    assert out.endswith("\n\na test query money") and 0 < out.count("<response>") < 3
    assert len(emb.tokenizer(out)["input_ids"]) <= 60
    assert short.info["stats"]["fewer_than_k"] == 1


# ----------------------------------------------------------------------------- settings and the CLI
def test_setting_names_and_argument_errors():
    from types import SimpleNamespace as NS

    assert Setting(0).variant is None and Setting(0).label == "0-shot"
    assert Setting(3, "random", 42).variant == "fewshot-3-random-s42"
    assert Setting(3, "similar").variant == "fewshot-3-similar-all-MiniLM-L6-v2"
    assert Setting(5, "similar", selector_model="BAAI/bge-small-en-v1.5").variant == "fewshot-5-similar-BAAI__bge-small-en-v1.5"
    assert Setting(2, "first_n").variant == "fewshot-2-first_n"

    def args(**kw):
        return NS(**{"fewshot": None, "fewshot_compare": None, "selector": None, "selector_model": None, "seed": 42, **kw})

    got = settings_from_args(args(fewshot_compare="0,3,5", selector="random,similar", seed=7), None)
    assert [(s.k, s.selector, s.seed) for s in got] == [(0, "random", 7), (3, "random", 7), (3, "similar", 7), (5, "random", 7), (5, "similar", 7)]
    assert settings_from_args(args(fewshot=2), None) == [Setting(2, "random", 42)]
    for bad, msg in [(dict(fewshot=1, fewshot_compare="0,1"), "not both"), (dict(selector="random"), "need --fewshot"),
                     (dict(fewshot=1, selector="best"), "unknown selector"), (dict(fewshot_compare="0,x"), "such as 0,3,5"),
                     (dict(fewshot=2, selector_model="m"), "--selector similar"), (dict(fewshot=-1), "0 or more"),
                     (dict(fewshot=2, selector="random,similar"), "one --selector")]:
        with pytest.raises(EvalkitError, match=msg):
            settings_from_args(args(**bad), None)


def test_cli_compare_on_a_retrieval_task_encodes_documents_once(tmp_path, tiny_bert, capsys):
    """`--fewshot-compare 0,1,2` with a tiny model: three result sets, the setting in every result
    file, the comparison table, and each few-shot setting encodes only its queries (documents come
    from the cache)."""
    docs = [f"the {w} of the city is good" for w in ("bank", "card", "king", "queen", "music", "film", "river", "gene")]
    d = task_folder(tmp_path, "Ret", "Retrieval", {
        "corpus.jsonl": [{"_id": f"d{i}", "title": "", "text": t} for i, t in enumerate(docs)],
        "queries.jsonl": [{"_id": f"q{i}", "text": f"where is the {t.split()[1]}"} for i, t in enumerate(docs)],
        "qrels/test.tsv": "query-id\tcorpus-id\tscore\n" + "".join(f"q{i}\td{i}\t1\n" for i in range(4)),
        "qrels/dev.tsv": "query-id\tcorpus-id\tscore\n" + "".join(f"q{i}\td{i}\t1\n" for i in range(4, 8))}, fewshot="{split: dev}", extra="eval_splits: [test]\n")
    out = tmp_path / "results"
    assert main(["run", "--model", str(tiny_bert), "--tasks", str(d), "--output", str(out), "--fewshot-compare", "0,1,2",
                 "--selector", "first_n", "--seed", "3"]) == 0
    cap = capsys.readouterr()
    counts = {v or "0-shot": c for v, c in re.findall(r"\] \S+(?: \[([^\]]+)\])? Ret: test/default [-\d.]+ \((\d+ texts encoded, \d+ from cache)", cap.err)}
    counts = {k.replace("fewshot-", "").replace("-first_n", "-shot first_n"): c for k, c in counts.items()}
    assert counts["0-shot"] == f"{len(docs) + 4} texts encoded, 0 from cache"  # mteb encodes the 4 judged queries
    for lab in ("1-shot first_n", "2-shot first_n"):
        assert counts[lab] == f"4 texts encoded, {len(docs)} from cache"  # the queries; documents from the cache
    assert re.search(r"\| 0-shot \| [\d.]+ \| [\d.]+ \|", cap.out)
    assert re.search(r"\| 2-shot first_n \| [\d.]+ \([+-][\d.]+\) \|", cap.out)
    files = sorted(out.rglob("Ret.json"))
    assert sorted(f.parent.name for f in files if f.parent.parent.name == "experiments") == ["fewshot-1-first_n", "fewshot-2-first_n"]
    for f in [f for f in files if f.parent.parent.name == "experiments"]:
        meta = json.loads(f.read_text())["evalkit"]
        fs = meta["fewshot"]
        assert meta["variant"] == f.parent.name and meta["seed"] == 3
        assert (fs["selector"], fs["seed"], fs["pool"]["default"]["source"], fs["eval_splits"]) == ("first_n", 3, "split:dev", ["test"])
        assert fs["k"] == int(f.parent.name.split("-")[1]) and fs["stats"]["example_sources"] == {"dev": 4 * fs["k"]}
    (plain,) = [f for f in files if f.parent.parent.name != "experiments"]
    assert "fewshot" not in json.loads(plain.read_text())["evalkit"]  # zero-shot: the plain result, as without few-shot


def test_cli_fewshot_errors(tmp_path, tiny_bert, capsys):
    d = task_folder(tmp_path, "Sts", "STS", {"test.jsonl": [{"sentence1": f"the bank {i}", "sentence2": "the card", "score": i % 5} for i in range(8)]}, fewshot=None)
    out = tmp_path / "results"
    assert main(["run", "--model", str(tiny_bert), "--tasks", str(d), "--output", str(out), "--fewshot", "2"]) == 2
    assert "has no few-shot pool: add `fewshot:" in capsys.readouterr().err
    assert not list(out.rglob("Sts.json"))
    for extra, msg in [(["--fewshot", "2", "--fewshot-compare", "0,2"], "not both"), (["--selector", "similar"], "need --fewshot"),
                       (["--fewshot", "2", "--reranker", "bge-reranker-base"], "rerankers are scored on Retrieval, Reranking, InstructionRetrieval and InstructionReranking tasks only")]:
        assert main(["run", "--model", str(tiny_bert), "--tasks", str(d), "--output", str(out), *extra]) == 2
        err = capsys.readouterr().err
        assert msg in err and len(err.strip().splitlines()) == 1


# ----------------------------------------------------------------------------- a real run
def banking_subset(root: Path, data: Path, labels_every: int = 4, train_per: int = 12, test_per: int = 4) -> Path:
    """Banking77Classification cut down to every 4th intent (20 of 77), 12 train and 4 test texts each:
    mteb's own task (its evaluator and settings) on real data, small enough for a unit test on 2 cores
    (the full task takes over 2 minutes per setting here: 7696 texts to encode and 77-class fits)."""
    def rows(split):
        return [json.loads(x) for x in (data / "Banking77Classification" / f"{split}.jsonl").read_text().splitlines() if x.strip()]

    train, test = rows("train"), rows("test")
    keep = sorted({r["label"] for r in train})[::labels_every]

    def pick(rs, n):
        seen, out = {}, []
        for r in rs:
            if r["label"] in keep and seen.get(r["label"], 0) < n:
                seen[r["label"]] = seen.get(r["label"], 0) + 1
                out.append(r)
        return out

    d = root / "Banking77Subset"
    write_jsonl(d / "train.jsonl", pick(train, train_per))
    write_jsonl(d / "test.jsonl", pick(test, test_per))
    (d / "task.yaml").write_text("name: Banking77Subset\ntype: Classification\nmteb_task: Banking77Classification\n"
                                 "instruction: Given a online banking query, find the corresponding intents.\nfewshot: {split: train}\n")
    return d


def sib200_subset(root: Path, data: Path, train_per: int = 30, test_per: int = 10) -> Path:
    """SIB200Classification (eng_Latn) cut to 30 train and 10 test texts per topic (210 and 70 of 701
    and 204): mteb's own task on real data; the full task's zero-shot score (72.16) is checked by the
    offline-en run."""
    d = root / "SIB200Subset"
    for split, n in (("train", train_per), ("test", test_per)):
        rows = [json.loads(x) for x in (data / "SIB200Classification" / "eng_Latn" / f"{split}.jsonl").read_text().splitlines() if x.strip()]
        seen: dict = {}
        keep = [r for r in rows if (seen.setdefault(r["label"], 0) < n, seen.__setitem__(r["label"], seen[r["label"]] + 1))[0]]
        write_jsonl(d / "eng_Latn" / f"{split}.jsonl", keep)
    (d / "task.yaml").write_text("name: SIB200Subset\ntype: Classification\nmteb_task: SIB200Classification\nsubsets: [eng_Latn]\n"
                                 "eval_splits: [test]\ninstruction: Classify the topic of a given sentence.\nfewshot: {split: train}\n")
    return d


@pytest.fixture(scope="module")
def real_run(tmp_path_factory, shared_data, killed_offline_en):
    """all-MiniLM-L6-v2 on subsets of SIB200Classification and Banking77, 0 and 3 examples per input
    under random and similar selection, in one `evalkit run --fewshot-compare`. The embedding cache
    starts as a copy of the offline-en run's: the zero-shot inputs are there."""
    import shutil
    import time

    import evalkit.fewshot as F

    root = tmp_path_factory.mktemp("fewshot-real")
    shutil.copytree(killed_offline_en["cache"], root / "cache")
    bank, sib = banking_subset(root, shared_data), sib200_subset(root, shared_data)
    factories = []
    init = F.FewshotFactory.__init__

    def recording_init(self, *a, **kw):
        init(self, *a, **kw)
        factories.append(self)

    t0 = time.time()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(F.FewshotFactory, "__init__", recording_init)
        run = run_in_process("run", "--model", "all-MiniLM-L6-v2", "--tasks", f"{sib},{bank}", "--output", str(root / "results"),
                             "--cache-dir", str(root / "cache"), "--fewshot-compare", "0,3", "--selector", "random,similar", "--seed", "42",
                             check=False)
    print(f"\n{run.stderr}{run.stdout}(real run: {time.time() - t0:.0f}s)")
    return {"code": run.returncode, "out": run.stdout, "err": run.stderr, "results": root / "results", "bank": bank, "sib": sib,
            "factories": factories}


@pytest.mark.slow
@pytest.mark.real
def test_real_run_zero_vs_three_shot_table(real_run):
    assert real_run["code"] == 0, real_run["err"]
    table = real_run["out"].split("###")[0]  # the score table, not the significance table below it
    rows = {m.group(1): m.group(2) for m in re.finditer(r"^\| ([^|]+?) \| (.+) \|$", table, re.M)}
    assert {"0-shot", "3-shot random (seed 42)", "3-shot similar (all-MiniLM-L6-v2)"} <= set(rows)
    assert re.search(r"\| Run \| Banking77Subset \| SIB200Subset \| Average \(2\) \|", table)
    for lab in ("3-shot random (seed 42)", "3-shot similar (all-MiniLM-L6-v2)"):
        assert re.fullmatch(r"[\d.]+ \([+-][\d.]+\) \| [\d.]+ \([+-][\d.]+\) \| [\d.]+ \([+-][\d.]+\)", rows[lab])
    # the document side: zero-shot inputs are reused from the cache by the similar selector (same model)
    assert re.search(r"\[fewshot-3-similar-all-MiniLM-L6-v2\] \S+: .*\(\d+ texts encoded, [1-9]\d* from cache", real_run["err"])


@pytest.mark.slow
@pytest.mark.real
def test_real_run_no_example_from_the_evaluated_split(real_run, shared_data):
    """Every example handed to every input was a train row (the row it claims to be), never a test text,
    never the input itself; the result files say the same."""
    data = {
        "SIB200Subset": real_run["sib"] / "eng_Latn",
        "Banking77Subset": real_run["bank"],
    }
    rows = {t: {s: [json.loads(x) for x in (d / f"{s}.jsonl").read_text().splitlines() if x.strip()] for s in ("train", "test")} for t, d in data.items()}
    checked = 0
    fewshot_factories = [f for f in real_run["factories"] if f.setting.k > 0]  # one per (setting, task) unit
    assert sorted({f.setting.selector for f in fewshot_factories}) == ["random", "similar"]
    for sel in ("random", "similar"):
        assert sorted(t for f in fewshot_factories if f.setting.selector == sel for t in f.prefixers) == sorted(data)
    for f in fewshot_factories:
        for task, p in f.prefixers.items():
            test_texts = {norm(r["text"]) for r in rows[task]["test"]}
            train = rows[task]["train"]
            by_split = {}
            for split, subset, text, exs in p.records:
                by_split[split] = by_split.get(split, 0) + 1
                for ex in exs:
                    assert ex.split == "train" and ex.split not in p.pools[subset].eval_splits
                    assert train[ex.row]["text"] == ex.query and train[ex.row]["label"] == ex.response
                    assert norm(ex.query) not in test_texts
                    assert norm(ex.query) != norm(text)
                    checked += 1
            assert by_split["test"] == len(rows[task]["test"]) and by_split["train"] > 0  # both sides of the classifier
            meta = json.loads(next(real_run["results"].rglob(f"{f.setting.variant}/{task}.json")).read_text())["evalkit"]["fewshot"]
            assert set(meta["stats"]["example_sources"]) == {"train"} and meta["eval_splits"] == ["test"]
    assert checked > 2000


@pytest.mark.slow
@pytest.mark.real
def test_real_run_records_selector_and_seed(real_run):
    files = {p.parent.name + "/" + p.stem: json.loads(p.read_text()) for p in real_run["results"].rglob("*.json")
             if not p.name.endswith(".items.json") and p.name != "model_meta.json"}
    for variant, sel in (("fewshot-3-random-s42", "random"), ("fewshot-3-similar-all-MiniLM-L6-v2", "similar")):
        for task in ("SIB200Subset", "Banking77Subset"):
            ev = files[f"{variant}/{task}"]["evalkit"]
            fs = ev["fewshot"]
            assert (ev["variant"], ev["seed"], fs["k"], fs["selector"], fs["seed"]) == (variant, 42, 3, sel, 42)
            assert fs["pool"][("eng_Latn" if task.startswith("SIB") else "default")]["source"] == "split:train"
            assert fs["input_format"] == "prefix" and fs["sample"]["model_input"].startswith("<instruct>")
            if sel == "similar":
                assert fs["selector_model"] == {"name": "all-MiniLM-L6-v2", "model": "sentence-transformers/all-MiniLM-L6-v2",
                                                "revision": "8b3219a92973c328a8e22fadcfa821b5dc75636a"}
            else:
                assert fs["selector_model"] is None
