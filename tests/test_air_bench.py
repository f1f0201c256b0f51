"""AIR-Bench datasets (issue 5): loaded from a mirror in AIR-Bench's hub layout as mteb retrieval
tasks, scored by mteb, shown in the AIR-Bench tables; bad mirrors and an unreachable hub end in one line.

No AIR-Bench data is on this machine (hub only). The faithful check uses the real SciFact data
rewritten into AIR-Bench's layout under the wiki QA name: the same texts through the AIR-Bench
loader must give exactly SciFact's mteb score (64.51; 69.58 on the default run's slice,
tests/offline_run.py) and need no new vector."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from evalkit.cli import main
from tests.conftest import write_jsonl
from tests.offline_run import SCIFACT

WIKI = "AIR-Bench-qa-wiki-en"
LAYOUT = Path("AIR-Bench") / "qa_wiki_en" / "AIR-Bench_24.04"


def mirror_from_beir(beir: Path, root: Path) -> Path:
    """SciFact's BEIR folder written as AIR-Bench/qa_wiki_en's hub splits (QA datasets are `default`)."""
    folder = root / LAYOUT
    corpus = [json.loads(line) for line in (beir / "corpus.jsonl").open(encoding="utf-8")]
    queries = [json.loads(line) for line in (beir / "queries.jsonl").open(encoding="utf-8")]
    # AIR-Bench documents have no title: the text is what mteb encodes for a titled BEIR document
    write_jsonl(folder / "corpus_default.jsonl", [{"id": d["_id"], "text": (d.get("title", "") + " " + d["text"]).strip()} for d in corpus])
    write_jsonl(folder / "queries_default.jsonl", [{"id": q["_id"], "text": q["text"]} for q in queries])
    rows = [line.rstrip("\n").split("\t") for line in (beir / "qrels" / "test.tsv").open(encoding="utf-8")][1:]
    write_jsonl(folder / "qrels_default.jsonl", [{"qid": q, "docid": d, "relevance": int(s)} for q, d, s in rows if q])
    return folder


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
    folder = root / LAYOUT
    corpus = corpus if corpus is not None else [{"id": f"d{i}", "text": f"the gene {i}"} for i in range(4)]
    queries = queries if queries is not None else [{"id": "q1", "text": "a gene"}, {"id": "q2", "text": "the cell"}]
    qrels = qrels if qrels is not None else [{"qid": "q1", "docid": "d1", "relevance": 1}, {"qid": "q2", "docid": "d2", "relevance": 1}]
    for name, rows in (("corpus", corpus), ("queries", queries), ("qrels", qrels)):
        if name not in drop:
            write_jsonl(folder / f"{name}_default.jsonl", rows)
    folder.mkdir(parents=True, exist_ok=True)
    return root


CASES = [
    ("no mirror, hub unreachable", lambda r: r, "no mirror at"),
    ("empty corpus", lambda r: small_mirror(r, corpus=[]), "corpus_default.jsonl is empty"),
    ("qrels naming unknown documents", lambda r: small_mirror(r, qrels=[{"qid": "q1", "docid": "x9", "relevance": 1}]), "1 unknown document ids"),
    ("missing qrels file", lambda r: small_mirror(r, drop=("qrels",)), "missing data file"),
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
