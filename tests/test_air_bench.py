"""AIR-Bench datasets (issue 5): loaded from a mirror in AIR-Bench's hub layout as mteb retrieval
tasks, scored by mteb, shown in the AIR-Bench tables; bad mirrors and an unreachable hub end in one line.

No AIR-Bench data is on this machine (hub only). The faithful check uses the real SciFact data
rewritten into AIR-Bench's layout under the wiki QA name: the same texts through the AIR-Bench
loader must give exactly SciFact's mteb score (64.51; 69.58 on the default run's slice,
tests/offline_run.py) and need no new vector."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from evalkit.cli import main
from tests.conftest import md_table, write_jsonl
from tests.offline_run import SCIFACT

WIKI = "AIR-Bench-qa-wiki-en"
VERSION = "AIR-Bench_24.04"


def hub_layout(root: Path, repo: str, version: str, dataset: str, corpus, queries: dict, qrels: dict) -> Path:
    """A dataset as `huggingface-cli download` leaves AIR-Bench's repositories: <repo>/<version>/<dataset>/
    corpus.jsonl and <split>_queries.jsonl, the judgements in qrels-<repo> (test) and qrels-<repo>-dev
    (dev) as <split>_qrels.jsonl. `queries` and `qrels` map a split to its rows."""
    folder = root / "AIR-Bench" / repo / version / dataset
    write_jsonl(folder / "corpus.jsonl", corpus)
    for split, rows in queries.items():
        write_jsonl(folder / f"{split}_queries.jsonl", rows)
    for split, rows in qrels.items():
        qrepo = f"qrels-{repo}-dev" if split == "dev" else f"qrels-{repo}"
        write_jsonl(root / "AIR-Bench" / qrepo / version / dataset / f"{split}_qrels.jsonl", rows)
    return root


def mirror_from_beir(beir: Path, root: Path) -> Path:
    """SciFact's BEIR folder written as AIR-Bench/qa_wiki_en's hub files (QA datasets are `default`)."""
    corpus = [json.loads(line) for line in (beir / "corpus.jsonl").open(encoding="utf-8")]
    queries = [json.loads(line) for line in (beir / "queries.jsonl").open(encoding="utf-8")]
    rows = [line.rstrip("\n").split("\t") for line in (beir / "qrels" / "test.tsv").open(encoding="utf-8")][1:]
    # AIR-Bench documents have no title: the text is what mteb encodes for a titled BEIR document
    return hub_layout(
        root, "qa_wiki_en", VERSION, "default",
        [{"id": d["_id"], "text": (d.get("title", "") + " " + d["text"]).strip()} for d in corpus],
        {"test": [{"id": q["_id"], "text": q["text"]} for q in queries]},
        {"test": [{"qid": q, "docid": d, "relevance": int(s)} for q, d, s in rows if q]},
    )


@pytest.mark.real
def test_air_bench_mirror_scores_like_mteb_and_fills_the_table(tmp_path, monkeypatch, shared_data, killed_offline_en, capsys):
    data = tmp_path / "data"
    mirror_from_beir(shared_data / "SciFact", data)
    monkeypatch.setenv("EVALKIT_DATA", str(data))
    cache = tmp_path / "cache"
    shutil.copytree(killed_offline_en["cache"], cache)  # holds SciFact's vectors from the offline-en run
    out = tmp_path / "results"
    rc = main(["run", "--model", "all-MiniLM-L6-v2", "--tasks", WIKI, "--output", str(out), "--cache-dir", str(cache), "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 0, err
    (path,) = out.rglob(f"{WIKI}.json")
    doc = json.loads(path.read_text())
    assert doc["task_name"] == WIKI and doc["evalkit"]["data_source"] == "air-bench"
    scores = doc["scores"]["test"][0]
    assert scores["main_score"] == scores["ndcg_at_10"]
    # the same texts as SciFact: every vector from the cache, the score mteb's on SciFact
    assert doc["evalkit"]["work"]["encoded_texts"] == 0 and doc["evalkit"]["work"]["cached_texts"] == SCIFACT["docs"] + 300
    (sci,) = killed_offline_en["out"].rglob("SciFact.json")
    sci_scores = json.loads(sci.read_text())["scores"]["test"][0]
    assert round(100 * scores["ndcg_at_10"], 2) == SCIFACT["score"]
    for m in ("ndcg_at_10", "recall_at_10", "map_at_100", "recall_at_1000"):
        assert scores[m] == pytest.approx(sci_scores[m], abs=1e-6), m
    items = json.loads(path.with_name(f"{WIKI}.items.json").read_text())
    assert items["available"] and items["splits"]["test/default"]["matches"]

    # the AIR-Bench QA table: this run in the wiki column, ALL marked partial
    rc = main(["report", "--results", str(out), "--benchmark", "air-bench-qa-en", "--format", "md", "--out", str(tmp_path / "rep" / "air")])
    assert rc == 0
    text = (tmp_path / "rep" / "air.md").read_text()
    head = next(line for line in text.splitlines() if line.startswith("| Model"))
    row = next(line for line in text.splitlines() if "all-MiniLM-L6-v2" in line)
    cells = dict(zip([c.strip() for c in head.strip("|").split("|")], [c.strip() for c in row.strip("|").split("|")]))
    wiki = f"{SCIFACT['score']:.2f}"
    assert cells["wiki"] == wiki and cells["ALL (8)"] == f"{wiki} (1/8)" and cells["web"] == "-"


def small_mirror(root: Path, corpus=None, queries=None, qrels=None, drop=()):
    corpus = corpus if corpus is not None else [{"id": f"d{i}", "text": f"the gene {i}"} for i in range(4)]
    queries = queries if queries is not None else [{"id": "q1", "text": "a gene"}, {"id": "q2", "text": "the cell"}]
    qrels = qrels if qrels is not None else [{"qid": "q1", "docid": "d1", "relevance": 1}, {"qid": "q2", "docid": "d2", "relevance": 1}]
    hub_layout(root, "qa_wiki_en", VERSION, "default", corpus, {"test": queries}, {"test": qrels})
    folder = root / "AIR-Bench" / "qa_wiki_en" / VERSION / "default"
    for name, path in (("corpus", folder / "corpus.jsonl"), ("queries", folder / "test_queries.jsonl"),
                       ("qrels", root / "AIR-Bench" / "qrels-qa_wiki_en" / VERSION / "default" / "test_qrels.jsonl")):
        if name in drop:
            path.unlink()
    return root


CASES = [
    ("no copy, hub unreachable", lambda r: r, "no copy at"),
    ("empty corpus", lambda r: small_mirror(r, corpus=[]), "corpus.jsonl is empty"),
    ("qrels naming unknown documents", lambda r: small_mirror(r, qrels=[{"qid": "q1", "docid": "x9", "relevance": 1}]), "1 unknown document ids"),
    ("missing queries file", lambda r: small_mirror(r, drop=("queries",)), "missing data file"),
    ("qrels without relevance", lambda r: small_mirror(r, qrels=[{"qid": "q1", "docid": "d1"}]), "has no relevance column"),
    ("duplicate query ids", lambda r: small_mirror(r, queries=[{"id": "q1", "text": "a"}, {"id": "q1", "text": "b"}]), "1 duplicate ids"),
]


@pytest.mark.parametrize("name,make,message", CASES, ids=[c[0] for c in CASES])
def test_air_bench_bad_data_is_one_line(name, make, message, tmp_path, monkeypatch, capsys, tiny_bert):
    import evalkit.tasks

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    monkeypatch.setitem(evalkit.tasks.hub._HUB_STATE, "https://huggingface.co", False)  # unreachable, whatever the machine
    data = tmp_path / "data"
    data.mkdir()
    make(data)
    monkeypatch.setenv("EVALKIT_DATA", str(data))
    out = tmp_path / "results"
    rc = main(["run", "--model", str(tiny_bert), "--tasks", WIKI, "--output", str(out)])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert rc == 2
    assert len(err) == 1 and message in err[0] and "Traceback" not in err[0], err
    assert not list(out.rglob(f"{WIKI}.json"))


# ----------------------------------------------------------------------------- AIR-Bench's own package
FINANCE = "AIR-Bench-24.05-qa-finance-en"  # 24.05 QA: dev (public judgements) and test (the leaderboard's)
V5 = "AIR-Bench_24.05"
K = [1, 3, 5, 10, 50, 100, 1000]


def synthetic_finance(root: Path, with_test_qrels: bool = True, repo: str = "qa_finance_en", version: str = V5,
                      splits=(("dev", 7), ("test", 5))) -> Path:
    """A QA dataset (24.05 finance unless told) made here in the hub's layout: 150 documents, dev and
    test queries, each judged with one or two relevant documents and hard negatives (relevance 0), as
    AIR-Bench's are."""
    import random

    rng = random.Random(5)
    words = "bond yield equity market rate bank loan credit price share fund risk asset cash debt tax profit trade".split()
    corpus = [{"id": f"doc-{i}", "text": " ".join(rng.choice(words) for _ in range(8 + i % 9))} for i in range(150)]
    queries = {s: [{"id": f"{s}-q{i}", "text": " ".join(rng.choice(words) for _ in range(4))} for i in range(n)] for s, n in splits}
    qrels = {}
    for s, qs in queries.items():
        rows = []
        for i, q in enumerate(qs):
            docs = rng.sample(range(150), 5)
            rows += [{"qid": q["id"], "docid": f"doc-{d}", "relevance": int(j < 1 + i % 2)} for j, d in enumerate(docs)]
        qrels[s] = rows
    if not with_test_qrels:
        del qrels["test"]
    return hub_layout(root, repo, version, "default", corpus, queries, qrels)


def package_scores(data: Path, run_folder: Path, split: str) -> dict:
    """air-benchmark 0.1.0's Evaluator over evalkit's search results; its DataLoader reads the
    judgements from the hub layout here instead of the hub (the only part that needs the network)."""
    from air_benchmark.evaluation_utils.data_loader import DataLoader
    from air_benchmark.evaluation_utils.evaluator import Evaluator

    class LocalQrels(DataLoader):
        def load_qrels(self, task_type, domain, language, dataset_name, split="dev"):
            repo = f"qrels-{task_type}_{domain}_{language}" + ("-dev" if split == "dev" else "")
            qrels = {}
            for line in (data / "AIR-Bench" / repo / self.benchmark_version / dataset_name / f"{split}_qrels.jsonl").open():
                r = json.loads(line)
                qrels.setdefault(r["qid"], {})[r["docid"]] = r["relevance"]
            return qrels

    got = Evaluator(LocalQrels(V5)).evaluate_results(str(run_folder), k_values=K, split=split)
    return got["qa"]["finance"]["en"]["default"]


def test_air_bench_hub_layout_scores_equal_the_package(tmp_path, monkeypatch, tiny_bert, tiny_cross_encoder, capsys):
    """A 24.05 dataset exactly as downloaded runs with no renaming; every metric of every split, first
    stage and reranked, equals the air-benchmark package's evaluator on the same search results; the
    submission files and zip have the package's layout (its own zip_results.py makes the same zip)."""
    import zipfile

    data = synthetic_finance(tmp_path / "data")
    monkeypatch.setenv("EVALKIT_DATA", str(data))
    out = tmp_path / "results"
    rc = main(["run", "--model", str(tiny_bert), "--tasks", FINANCE, "--reranker", str(tiny_cross_encoder),
               "--output", str(out), "--device", "cpu"])
    assert rc == 0, capsys.readouterr().err
    base = out / "air-bench" / "search_results"
    (retriever,) = [p.name for p in base.iterdir()]
    runs = sorted(p.name for p in (base / retriever).iterdir())
    assert "NoReranker" in runs and len(runs) == 2
    (reranker,) = [r for r in runs if r != "NoReranker"]
    results = {p.parent.name if "experiments" not in p.parts else "rerank": json.loads(p.read_text())
               for p in out.rglob(f"{FINANCE}.json")}
    assert len(results) == 2
    first = next(d for k, d in results.items() if k != "rerank")
    reranked = results["rerank"]
    for doc, run in ((first, "NoReranker"), (reranked, reranker)):
        assert sorted(doc["scores"]) == ["dev", "test"]
        for split in ("dev", "test"):
            ours = doc["scores"][split][0]
            theirs = package_scores(data, base / retriever / run, split)
            assert set(theirs) == {f"{m}_at_{k}" for m in ("ndcg", "map", "recall", "precision", "mrr") for k in K}
            for metric, value in theirs.items():
                assert ours[metric] == pytest.approx(value, abs=1e-12), (run, split, metric)
            assert ours["main_score"] == ours["ndcg_at_10"]
            sub = json.loads((base / retriever / run / "qa" / "finance" / f"en_default_{split}.json").read_text())
            assert {k: sub[k] for k in ("model_name", "reranker_name", "benchmark_version", "task_type", "domain", "language", "dataset_name", "split")} == {
                "model_name": retriever, "reranker_name": run, "benchmark_version": V5, "task_type": "qa", "domain": "finance",
                "language": "en", "dataset_name": "default", "split": split}
            n_docs = {len(d) for d in sub["search_results"].values()}
            assert n_docs == ({150} if run == "NoReranker" else {100}), run  # top 1000 of 150 documents; the reranked top 100

    rc = main(["air-bench", "pack", "--results", str(out), "--retriever", retriever, "--reranker", reranker])
    assert rc == 0
    zpath = Path(capsys.readouterr().out.strip().splitlines()[-1])
    assert zpath.name == f"{retriever}_{reranker}.zip"
    import importlib.util

    spec = importlib.util.spec_from_file_location("zip_results", Path(importlib.util.find_spec("air_benchmark").origin).parents[1] / "scripts" / "zip_results.py")
    zr = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(zr)
    assert zr.zip_results(str(base), str(tmp_path / "theirs"), retriever, reranker_name=reranker)
    with zipfile.ZipFile(zpath) as ours, zipfile.ZipFile(tmp_path / "theirs" / zpath.name) as theirs:
        assert sorted(ours.namelist()) == sorted(theirs.namelist()) == ["qa/finance/en_default_test.json"]
        assert ours.read("qa/finance/en_default_test.json") == theirs.read("qa/finance/en_default_test.json")


def test_air_bench_without_test_judgements_scores_dev_and_packs_test(tmp_path, monkeypatch, tiny_bert, tiny_cross_encoder, capsys, caplog):
    """Without the leaderboard's test judgements (gated) the public dev split is scored and test is
    searched, first stage and reranked, with one warning: its search results are the submission."""
    import zipfile

    import evalkit.tasks

    monkeypatch.setitem(evalkit.tasks.hub._HUB_STATE, "https://huggingface.co", False)
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    data = synthetic_finance(tmp_path / "data", with_test_qrels=False)
    monkeypatch.setenv("EVALKIT_DATA", str(data))
    out = tmp_path / "results"
    assert main(["run", "--model", str(tiny_bert), "--tasks", FINANCE, "--reranker", str(tiny_cross_encoder), "--output", str(out),
                 "--device", "cpu"]) == 0
    warned = [r.getMessage() for r in caplog.records if "not scored" in r.getMessage()]
    assert len(warned) == 1 and "split test is searched, not scored" in warned[0] and "test_qrels.jsonl" in warned[0], warned
    docs = [json.loads(p.read_text()) for p in out.rglob(f"{FINANCE}.json")]
    assert len(docs) == 2 and all(list(d["scores"]) == ["dev"] for d in docs)
    base = out / "air-bench" / "search_results"
    (retriever,) = [p.name for p in base.iterdir()]
    for run, n in (("NoReranker", 150), (next(p.name for p in (base / retriever).iterdir() if p.name != "NoReranker"), 100)):
        sub = json.loads((base / retriever / run / "qa" / "finance" / "en_default_test.json").read_text())
        assert len(sub["search_results"]) == 5 and {len(d) for d in sub["search_results"].values()} == {n}, run
    capsys.readouterr()
    assert main(["air-bench", "pack", "--results", str(out)]) == 0
    with zipfile.ZipFile(capsys.readouterr().out.strip()) as z:
        assert z.namelist() == ["qa/finance/en_default_test.json"]


def test_air_bench_24_04_without_judgements_is_searched_for_its_submission(tmp_path, monkeypatch, tiny_bert, capsys):
    """24.04 has test only, its judgements the leaderboard's: the run searches, writes a result with no
    scores (naming the searched split) beside the submission file, and resumes as done."""
    import evalkit.tasks

    monkeypatch.setitem(evalkit.tasks.hub._HUB_STATE, "https://huggingface.co", False)
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    data = synthetic_finance(tmp_path / "data", with_test_qrels=False, repo="qa_wiki_en", version=VERSION, splits=(("test", 4),))
    monkeypatch.setenv("EVALKIT_DATA", str(data))
    out = tmp_path / "results"
    args = ["run", "--model", str(tiny_bert), "--tasks", WIKI, "--output", str(out), "--device", "cpu"]
    assert main([*args, "--dry-run", "--no-cache"]) == 0  # the estimate counts what the search encodes: 4 queries, 150 documents
    assert re.search(rf"{WIKI}\s+154\s+154\s", capsys.readouterr().out)
    assert main(args) == 0
    assert "searched, no judgements here to score" in capsys.readouterr().err
    (path,) = out.rglob(f"{WIKI}.json")
    doc = json.loads(path.read_text())
    assert doc["scores"] == {} and doc["evalkit"]["searched_only"] == ["test"] and doc["task_name"] == WIKI
    (sub,) = (out / "air-bench" / "search_results").rglob("*.json")
    assert sub.relative_to(out / "air-bench" / "search_results").parts[1:] == ("NoReranker", "qa", "wiki", "en_default_test.json")
    assert main(args) == 0
    assert "already done" in capsys.readouterr().err


def test_icl_dry_run_shows_the_authors_air_bench_examples(tiny_decoder, capsys):
    """bge-en-icl's authors' AIR-Bench examples (FlagEmbedding/evaluation/air_bench/examples) are the
    24.04 English datasets' few-shot pools under --selector authors: the dry run names 3 of them for
    every dataset (the Long-Doc files lower-case the K), with the one instruction every dataset gets."""
    from evalkit.models.catalog import ICL_DEFAULT

    for suite, n in (("air-bench-24.04-qa-en", 8), ("air-bench-24.04-long-doc-en", 15)):
        assert main(["run", "--model", str(tiny_decoder), "--kind", "icl-embedder", "--recipe", "bge-en-icl", "--suite", suite, "--fewshot", "3",
                     "--dry-run", "--no-cache"]) == 0
        lines = [x for x in capsys.readouterr().out.splitlines() if x.startswith("recipe bge-en-icl AIR-Bench-")]
        assert len(lines) == n, lines
        for line in lines:
            assert "3 of the authors' 3 examples (bge-en-icl/air-bench-examples/" in line and f"<instruct>{ICL_DEFAULT}" in line, line
        if n == 15:
            assert any("long-doc/healthcare-pubmed_100k-200k_1.jsonl" in x and "pubmed_100K-200K_1" in x for x in lines)
    # the issue's command, no recipe named: AIR-Bench has no train split, so the authors' examples are
    # every English 24.04 dataset's own pool, drawn by the default selector
    assert main(["run", "--model", str(tiny_decoder), "--kind", "icl-embedder", "--suite", "air-bench-24.04-qa-en", "--fewshot", "3",
                 "--dry-run", "--no-cache"]) == 0
    lines = [x for x in capsys.readouterr().out.splitlines() if x.startswith("recipe defaults AIR-Bench-")]
    assert len(lines) == 8 and all("3 examples, random from the task's pool: the authors' 3 examples (bge-en-icl/air-bench-examples/qa/" in x
                                   for x in lines), lines


def test_the_authors_examples_are_the_pool_of_any_model(tmp_path, monkeypatch, tiny_decoder, capsys):
    """No recipe named: a 3-shot run of an in-context embedder on an English 24.04 dataset draws its
    examples from the authors' file, the task's only pool (AIR-Bench has no train split)."""
    data = synthetic_finance(tmp_path / "data", repo="qa_wiki_en", version=VERSION, splits=(("test", 6),))
    monkeypatch.setenv("EVALKIT_DATA", str(data))
    out = tmp_path / "results"
    assert main(["run", "--model", str(tiny_decoder), "--kind", "icl-embedder", "--tasks", WIKI, "--fewshot", "3", "--output", str(out),
                 "--device", "cpu", "--no-cache"]) == 0, capsys.readouterr().err
    (doc,) = [json.loads(p.read_text()) for p in out.rglob(f"{WIKI}.json")]
    shots = doc["evalkit"]["fewshot"]
    assert shots["k"] == 3 and shots["selector"] == "random" and shots["pool"]["default"]["source"].endswith("air-bench-examples/qa/wiki.jsonl")


def test_seeds_experiment_fewshot_compare_with_a_reranker(tmp_path, monkeypatch, tiny_decoder, tiny_cross_encoder, capsys):
    """The seeds' experiment on an AIR-Bench 24.04 dataset (made here in the hub's layout): an
    in-context embedder zero-shot against 3-shot with its authors' examples, each reranked; the
    examples come from the authors' file (`pos` as the response), and each setting has its own
    submission folders, first stage and reranked."""
    data = synthetic_finance(tmp_path / "data", repo="qa_wiki_en", version=VERSION, splits=(("test", 6),))
    monkeypatch.setenv("EVALKIT_DATA", str(data))
    out = tmp_path / "results"
    rc = main(["run", "--model", str(tiny_decoder), "--recipe", "bge-en-icl", "--tasks", WIKI, "--fewshot-compare", "0,3",
               "--reranker", str(tiny_cross_encoder), "--output", str(out), "--device", "cpu", "--no-cache"])
    assert rc == 0, capsys.readouterr().err
    docs = [json.loads(p.read_text()) for p in out.rglob(f"{WIKI}.json")]
    assert len(docs) == 4  # 0-shot, 3-shot, each reranked
    shots = [d["evalkit"]["fewshot"] for d in docs if d["evalkit"].get("fewshot", {}).get("k") == 3]
    assert len(shots) == 1 and shots[0]["pool"]["default"]["source"].endswith("air-bench-examples/qa/wiki.jsonl")
    base = out / "air-bench" / "search_results"
    retrievers = sorted(p.name for p in base.iterdir())
    assert len(retrievers) == 2 and retrievers[1] == f"{retrievers[0]}-fewshot-3-authors", retrievers
    for r in retrievers:
        assert sorted(p.name for p in (base / r).iterdir())[0] == "NoReranker" and len(list((base / r).iterdir())) == 2
        assert {p.relative_to(base / r).as_posix().split("/", 1)[1] for p in (base / r).rglob("*.json")} == {"qa/wiki/en_default_test.json"}
    # the seeds' table: zero- and few-shot rows of the model side by side, with rows from AIR-Bench's own files
    pub = tmp_path / "eval_results" / VERSION
    domains = ["wiki", "web", "news", "healthcare", "law", "finance", "arxiv", "msmarco"]
    for i, (retr, rer) in enumerate((("e5-mistral-7b-instruct", "NoReranker"), ("bge-m3", "bge-reranker-v2-m3"))):
        recs = [{"config": {"retrieval_model": retr, "retrieval_model_link": None, "reranking_model": rer, "reranking_model_link": None,
                            "task": "qa", "metric": metric, "timestamp": "2024-05-12T12:24:02Z", "is_anonymous": False, "revision": "abc"},
                 "results": [{"domain": d, "lang": "en", "dataset": "default", "value": round(base + 0.01 * j + 0.1 * i, 5)} for j, d in enumerate(domains)]}
                for metric, base in (("ndcg_at_10", 0.4), ("recall_at_10", 0.6))]
        (pub / retr / rer).mkdir(parents=True)
        (pub / retr / rer / "results_2024-05-12.json").write_text(json.dumps(recs))
    rc = main(["report", "--results", str(out), "--benchmark", "air-bench-qa-en", "--with-published", str(tmp_path / "eval_results"),
               "--format", "md", "--out", str(tmp_path / "rep" / "air")])
    assert rc == 0, capsys.readouterr().err
    cols, table = md_table((tmp_path / "rep" / "air.md").read_text())
    assert cols[cols.index("wiki"):] == domains + ["ALL (8)"]
    rows = {k: dict(zip(cols, v)) for k, v in table.items()}
    e5 = next(v for k, v in rows.items() if k.startswith("e5-mistral-7b-instruct"))
    m3 = next(v for k, v in rows.items() if k.startswith("bge-m3 + bge-reranker-v2-m3"))
    assert e5["wiki"] == "40.00" and e5["msmarco"] == "47.00" and e5["ALL (8)"] == "43.50"  # nDCG@10, the domains' mean
    assert m3["wiki"] == "50.00" and m3["ALL (8)"] == "53.50"
    ours = [k for k in rows if "tiny" in k or "fewshot" in k]
    assert any("fewshot-3-authors" in k for k in ours) and any("fewshot" not in k for k in ours), rows.keys()


def test_m3_modes_write_their_own_submissions(tmp_path, monkeypatch, capsys):
    """A multi-function embedder's sparse mode is a retriever of its own in AIR-Bench's layout: dev
    scored (equal to the package's evaluator on its search results), test searched for submission."""
    import evalkit.tasks

    monkeypatch.setitem(evalkit.tasks.hub._HUB_STATE, "https://huggingface.co", False)
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    data = synthetic_finance(tmp_path / "data", with_test_qrels=False)
    monkeypatch.setenv("EVALKIT_DATA", str(data))
    out = tmp_path / "results"
    model = Path(__file__).resolve().parent / "data" / "m3" / "model"
    assert main(["run", "--model", str(model), "--tasks", FINANCE, "--m3-mode", "sparse", "--output", str(out), "--device", "cpu"]) == 0, \
        capsys.readouterr().err
    base = out / "air-bench" / "search_results"
    retrievers = sorted(p.name for p in base.iterdir())
    assert retrievers == ["model-m3-sparse"], retrievers  # the model folder's name and the mode's variant
    sparse = base / retrievers[0] / "NoReranker"
    assert sorted(p.name for p in (sparse / "qa" / "finance").iterdir()) == ["en_default_dev.json", "en_default_test.json"]
    (doc,) = [json.loads(p.read_text()) for p in out.rglob(f"{FINANCE}.json") if "m3-sparse" in str(p)]
    theirs = package_scores(data, sparse, "dev")
    for metric, value in theirs.items():
        assert doc["scores"]["dev"][0][metric] == pytest.approx(value, abs=1e-12), metric
