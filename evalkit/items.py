"""Per-item scores kept beside each result: `<Task>.items.json`, for significance tests.

The runner wraps each mteb evaluation in `ItemRecorder(task)`: mteb writes its predictions
(`prediction_folder`) to a temporary folder, and `write()` turns them into per-item scores against
the task's gold data before the result file itself is written:

| task type | per item | main score from the items | test (evalkit/report/stats.py) |
|---|---|---|---|
| Retrieval, Reranking | per-query nDCG@10, Recall@10 and the main metric (pytrec_eval, as mteb) | mean over queries | paired randomisation |
| STS | per-pair predicted similarity + gold score | mteb's correlation over pairs | paired bootstrap over pairs |
| Classification | per-item correctness, averaged over mteb's n experiments | mean over items (accuracy) | paired randomisation |
| PairClassification | per-pair score of the best similarity function + label | mteb's max_ap / max_accuracy / ... | paired bootstrap over pairs |
| InstructionRetrieval, InstructionReranking | as Retrieval (mteb writes their per-query rankings too) | mean over queries | paired randomisation |
| Clustering | per-experiment V-measure: mteb clusters the same seeded subsamples for every model (from the result itself) | mean over experiments | paired randomisation (10 experiments: weak, min p ~ 0.002) |
| Clustering (mteb's legacy tasks: each row a fixed set of sentences, clustered once) | per-set V-measure (from the result itself) | mean over sets | paired randomisation |
| MultilabelClassification | per-item exact match of the label set, averaged over mteb's n experiments | mean over items (subset accuracy) | paired randomisation |
| BitextMining | per-sentence F1 of its own class (every gold class has one sentence, so sklearn's weighted F1 is their mean) and correctness | mean over sentences | paired randomisation |
| ZeroShotClassification | per-item correctness | mean over items (accuracy) | paired randomisation |
| Regression | per-item predicted value + gold, where every experiment trained on the same rows (a training split of at most mteb's n_samples, 2,048: the experiments then agree) | mteb's Kendall tau over items | paired bootstrap over items |
| Summarization | per-text correlation of the machine summaries' similarities with their relevance (not for mteb's deprecated evaluator, SummEval's, which averages correlations with p-values: mteb#1156) | mean over texts | paired randomisation |
| anything else | none: mteb gives no per-item values it scores by | - | "no per-item scores" |

Cost: mteb writes a retrieval task's predictions as the top 1000 documents of every query (JSON in a
temporary folder, deleted afterwards); on large retrieval tasks (MSMARCO) that file is big and takes
time to write and read. Only the per-query values are kept.

Each split/subset records `recomputed` (the main score rebuilt from the items with mteb's own
metric code) and `matches` (equal to the result's main score): compare and regress use the items
only when they match the result, so stale items never speak for a result.
"""
from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
from pathlib import Path

from evalkit.results import atomic_write_json

log = logging.getLogger("evalkit")
VERSION = 1
TOL = 2e-5  # mteb rounds retrieval metrics to 5 decimals, result files to 6
PAIR_FUNCTIONS = [  # (name in mteb's metric names, key in mteb's predictions, higher score = more similar)
    ("similarity", "similarity_scores", True),
    ("cosine", "cosine_scores", True),
    ("manhattan", "manhattan_distances", False),
    ("euclidean", "euclidean_distances", False),
    ("dot", "dot_scores", True),
]


def items_path(result_path: Path) -> Path:
    result_path = Path(result_path)
    return result_path.with_name(f"{result_path.stem}.items.json")


PREFIX = "evalkit-predictions-"


_swept: set[str] = set()  # temporary folders this process has swept


def _sweep_predictions() -> None:
    """Remove the prediction folders of processes that are gone (a run killed mid-unit): once per
    process and temporary folder, not for every unit."""
    root = tempfile.gettempdir()
    if root in _swept:
        return
    _swept.add(root)
    for d in Path(root).glob(f"{PREFIX}*-*"):
        pid = d.name[len(PREFIX):].split("-", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(d, ignore_errors=True)
        except OSError:
            pass


class ItemRecorder:
    """Around one `mteb.evaluate`: a temporary prediction folder, and the task's data kept loaded
    until the per-item scores are written (mteb unloads data it loaded itself)."""

    def __init__(self, task):
        self.task = task
        self.folder: Path | None = None
        self._unload = None

    def __enter__(self) -> ItemRecorder:
        _sweep_predictions()
        self.folder = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-"))
        if not getattr(self.task, "data_loaded", True) and hasattr(self.task, "unload_data"):
            self._unload = self.task.unload_data
            self.task.unload_data = lambda: None  # deferred to __exit__
        return self

    def __exit__(self, *exc) -> None:
        if self._unload is not None:
            del self.task.unload_data
            try:
                self._unload()
            except Exception:
                pass
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)

    def items(self, result) -> dict:
        """The per-item document for `result` (mteb's TaskResult or its JSON document); never raises
        for the run's sake: per-item scores are a by-product."""
        doc = result if isinstance(result, dict) else result.model_dump(mode="json")
        try:
            return collect(self.task, doc, self.folder)
        except Exception as e:
            log.warning("%s: per-item scores not kept (%s: %s)", doc.get("task_name"), type(e).__name__, e)
            return _unavailable(doc, f"per-item scores could not be computed ({type(e).__name__}: {e})")

    def write(self, result_path: Path, result) -> Path:
        """Write `<Task>.items.json` beside `result_path` (atomically) for `result`."""
        path = items_path(result_path)
        atomic_write_json(path, self.items(result))
        return path


def _unavailable(doc: dict, reason: str, typ: str | None = None) -> dict:
    return {"version": VERSION, "task": doc.get("task_name"), "type": typ, "available": False, "reason": reason, "splits": {}}


def _split_data(task, split: str, subset: str):
    ds = task.dataset
    if ds is None:
        return None
    if subset == "default" and subset not in ds:
        return ds[split]
    return ds[subset][split]


def collect(task, doc: dict, folder: Path | None) -> dict:
    from evalkit.results import main_scores

    typ = task.metadata.type
    if typ == "Clustering":
        return _clustering(doc, task.metadata.main_score)
    handler = {
        "Retrieval": _retrieval, "Reranking": _retrieval, "InstructionRetrieval": _retrieval, "InstructionReranking": _retrieval,
        "STS": _sts, "Classification": _classification, "PairClassification": _pairs, "MultilabelClassification": _multilabel,
        "BitextMining": _bitext, "ZeroShotClassification": _zeroshot, "Regression": _regression, "Summarization": _summarization,
    }.get(typ)
    if handler is None:
        return _unavailable(doc, f"mteb keeps no per-item scores for {typ} tasks (the score is computed over the whole set)", typ)
    path = task._predictions_path(folder) if folder is not None else None
    if path is None or not Path(path).is_file():
        return _unavailable(doc, "mteb wrote no predictions for this task", typ)
    preds = json.loads(Path(path).read_text(encoding="utf-8"))
    main = task.metadata.main_score
    out = {"version": VERSION, "task": doc.get("task_name"), "type": typ, "main_metric": main, "available": True, "splits": {}}
    for key, score in main_scores(doc).items():
        split, subset = key.split("/", 1)
        p = (preds.get(subset) or {}).get(split)
        data = _split_data(task, split, subset)
        if p is None or data is None:
            out["splits"][key] = {"available": False, "reason": "no predictions or no gold data for this split"}
            continue
        rec = handler(task, p, data, main)
        rec["main_score"] = score
        r = rec.get("recomputed")
        rec["matches"] = r is not None and score is not None and abs(r - score) <= TOL
        out["splits"][key] = rec
    out["available"] = any(s.get("available") for s in out["splits"].values())
    if not out["available"]:
        out["reason"] = "; ".join(sorted({s.get("reason", "") for s in out["splits"].values()})) or "no split has per-item scores"
    return out


def _num(x) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


# ----------------------------------------------------------------------------- per task type
_RETRIEVAL_MEASURES = {"ndcg_at_": "ndcg_cut_", "map_at_": "map_cut_", "recall_at_": "recall_", "precision_at_": "P_", "hit_rate_at_": "success_"}


def _trec_name(metric: str) -> str | None:
    for prefix, trec in _RETRIEVAL_MEASURES.items():
        if metric.startswith(prefix) and metric[len(prefix):].isdigit():
            return trec + metric[len(prefix):]
    return None


def _retrieval(task, results: dict, data, main: str) -> dict:
    import pytrec_eval

    qrels = data["relevant_docs"]
    results = {q: dict(d) for q, d in results.items()}
    if getattr(task, "ignore_identical_ids", False):
        for q, docs in results.items():
            docs.pop(q, None)
    if getattr(task, "skip_first_result", False):
        results = {q: dict(sorted(d.items(), key=lambda x: x[1], reverse=True)[1:]) for q, d in results.items()}
    metrics = ["ndcg_at_10", "recall_at_10"]
    if main not in metrics and _trec_name(main):
        metrics.append(main)
    trec = {m: _trec_name(m) for m in metrics}
    measures = {".".join(t.rsplit("_", 1)) for t in trec.values()}  # ndcg_cut_10 -> ndcg_cut.10
    evaluator = pytrec_eval.RelevanceEvaluator(qrels, measures)
    scores = evaluator.evaluate(results)
    ids = sorted(scores)
    values = {m: [float(scores[q][trec[m]]) for q in ids] for m in metrics}
    rec = {"available": True, "kind": "mean", "unit": "query", "ids": ids, "values": values, "n": len(ids)}
    if main in values and ids:
        rec["metric"] = main
        rec["recomputed"] = sum(values[main]) / len(ids)
    else:
        rec.update(kind="none", reason=f"the main metric {main} is not a mean of per-query scores that pytrec_eval gives")
    return rec


_STS_FIELDS = {"cosine": "cosine_scores", "manhattan": "manhattan_distances", "euclidean": "euclidean_distances"}


def _sts(task, p: dict, data, main: str) -> dict:
    gold = [float(task._normalize(x)) for x in data["score"]]
    prefix, _, corr = main.rpartition("_")
    field = _STS_FIELDS.get(prefix) if prefix else ("similarity_scores" if p.get("similarity_scores") is not None else "cosine_scores")
    if corr not in ("spearman", "pearson") or field is None or p.get(field) is None:
        return {"available": False, "reason": f"main metric {main} is not a correlation evalkit can rebuild from pairs"}
    pred = [float(x) for x in p[field]]
    if len(pred) != len(gold):
        return {"available": False, "reason": f"{len(pred)} predictions for {len(gold)} gold pairs"}
    recomputed = _num(task._calculate_scores(p, gold)[main])
    return {
        "available": True, "kind": "statistic", "statistic": corr, "unit": "pair", "metric": main, "field": field,
        "n": len(gold), "pred": pred, "gold": gold, "recomputed": recomputed,
    }


def _clustering(doc: dict, main: str) -> dict:
    """mteb's clustering score is the mean over n experiments on subsamples drawn with the task's seed,
    the same for every model: the per-experiment scores pair up across runs. mteb's legacy clustering
    tasks (AbsTaskClusteringLegacy) score each row of a split, a fixed set of sentences, once: their
    per-set V-measures (a list where the new tasks keep one list per level) pair up the same way."""
    out = {"version": VERSION, "task": doc.get("task_name"), "type": "Clustering", "main_metric": main, "available": False, "splits": {}}
    per_field = {"v_measure": "v_measures"}.get(main)
    for split, rows in (doc.get("scores") or {}).items():
        for row in rows:
            key = f"{split}/{row.get('hf_subset', 'default')}"
            levels = row.get(per_field) if per_field else None
            if isinstance(levels, list):
                levels, unit = {"sets": levels}, "cluster set"
            else:
                unit = "experiment"
            if not isinstance(levels, dict) or len(levels) != 1:
                out["splits"][key] = {"available": False, "reason": f"no single-level per-experiment {main} in mteb's result (hierarchical or other metric)"}
                continue
            (values,) = levels.values()
            values = [float(v) for v in values]
            score = row.get("main_score")
            r = sum(values) / len(values) if values else None
            out["splits"][key] = {
                "available": bool(values), "kind": "mean", "unit": unit, "ids": list(range(len(values))), "n": len(values),
                "values": {main: values}, "metric": main, "recomputed": r, "main_score": score,
                "matches": r is not None and score is not None and abs(r - score) <= TOL,
            }
    out["available"] = any(s.get("available") for s in out["splits"].values())
    if not out["available"]:
        out["reason"] = "; ".join(sorted({s.get("reason", "") for s in out["splits"].values()})) or "no split has per-experiment scores"
    return out


def _same_label(a, b) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return float(a) == float(b)
    return str(a) == str(b)


def _per_experiment(preds, n: int) -> bool:
    """mteb's predictions of a trained task are one list of n per-item values per experiment."""
    return isinstance(preds, list) and bool(preds) and all(isinstance(x, list) and len(x) == n for x in preds)


def _classification(task, preds, data, main: str) -> dict:
    gold = list(data[getattr(task, "label_column_name", "label")])
    if not _per_experiment(preds, len(gold)):
        return {"available": False, "reason": "mteb's predictions are not one label per test item per experiment (cross-validation or multilabel)"}
    if any(isinstance(g, list) for g in gold):
        return {"available": False, "reason": "multilabel gold labels"}
    correct = [sum(_same_label(run[i], gold[i]) for run in preds) / len(preds) for i in range(len(gold))]
    rec = {
        "available": True, "kind": "mean", "unit": "item", "ids": list(range(len(gold))), "n": len(gold),
        "experiments": len(preds), "values": {"accuracy": correct}, "gold": [g if isinstance(g, (int, float, str)) else str(g) for g in gold],
    }
    if main == "accuracy":
        rec["metric"] = "accuracy"
        rec["recomputed"] = sum(correct) / len(correct) if correct else None
    else:
        rec.update(kind="none", reason=f"the main metric {main} is not a mean over items (per-item correctness kept)")
    return rec


def _per_item(values: dict, main: str, unit: str, extra: dict | None = None) -> dict:
    """A record of per-item values whose mean is the score for each metric in `values`."""
    n = len(next(iter(values.values())))
    rec = {"available": True, "kind": "mean", "unit": unit, "ids": list(range(n)), "n": n, "values": values, **(extra or {})}
    if main in values and n:
        rec["metric"] = main
        rec["recomputed"] = sum(values[main]) / n
    else:
        rec.update(kind="none", reason=f"the main metric {main} is not a mean over items (per-item {', '.join(values)} kept)")
    return rec


def _multilabel(task, preds, data, main: str) -> dict:
    """mteb's multilabel accuracy is the classifier's subset accuracy (the whole label set right), per experiment."""
    from sklearn.preprocessing import MultiLabelBinarizer

    gold = MultiLabelBinarizer().fit_transform(list(data[getattr(task, "label_column_name", "label")])).tolist()
    if not _per_experiment(preds, len(gold)):
        return {"available": False, "reason": "mteb's predictions are not one label set per test item per experiment (a subsampled test split)"}
    exact = [sum([int(v) for v in run[i]] == gold[i] for run in preds) / len(preds) for i in range(len(gold))]
    return _per_item({"accuracy": exact}, main, "item", {"experiments": len(preds)})


def _bitext(task, p: dict, data, main: str) -> dict:
    if "gold" in getattr(data, "column_names", ()):
        return {"available": False, "reason": "a gold alignment column (BUCC): sentences are not matched one to one"}
    if not (isinstance(p, dict) and len(p) == 1):
        return {"available": False, "reason": "mteb's predictions are not one list of nearest neighbours (parallel subsets)"}
    (neighbours,) = p.values()
    pred = [int(x["corpus_id"]) for x in neighbours]
    n = len(pred)
    predicted_as = [0] * n
    for j in pred:
        if 0 <= j < n:
            predicted_as[j] += 1
    correct = [float(pred[i] == i) for i in range(n)]
    # class i: tp = correct[i], fn = 1 - tp, fp = the other sentences predicted as i
    f1 = [2 * tp / (2 * tp + (predicted_as[i] - tp) + (1 - tp)) for i, tp in enumerate(correct)]
    return _per_item({"f1": f1, "accuracy": correct}, main, "sentence")


def _zeroshot(task, probs, data, main: str) -> dict:
    import numpy as np

    labels = task._normalize_labels(list(data[task.label_column_name]), task.get_candidate_labels())
    pred = np.asarray(probs).argmax(1).tolist() if probs else []
    if len(pred) != len(labels):
        return {"available": False, "reason": f"{len(pred)} predictions for {len(labels)} items"}
    return _per_item({"accuracy": [float(a == int(b)) for a, b in zip(pred, labels)]}, main, "item")


def _summarization(task, p: dict, data, main: str) -> dict:
    """mteb's summarization score: per text, the correlation of its machine summaries' best similarity to a
    human summary with their relevance; the mean over the texts it scores (those whose relevance varies)."""
    from mteb._evaluators.text.summarization_evaluator import DeprecatedSummarizationEvaluator
    from scipy.stats import pearsonr, spearmanr

    evaluator = getattr(task, "evaluator", None)
    if isinstance(evaluator, type) and issubclass(evaluator, DeprecatedSummarizationEvaluator):
        return {"available": False, "reason": "mteb's deprecated summarization evaluator averages correlations with their p-values (mteb#1156): not a mean over texts"}
    prefix, _, corr = main.rpartition("_")
    field = {"cosine": "cosine_scores", "dot": "dot_scores", "": "similarity_scores"}.get(prefix)
    if corr not in ("spearman", "pearson") or field is None or p.get(field) is None:
        return {"available": False, "reason": f"main metric {main} is not a per-text correlation evalkit can rebuild"}
    f = spearmanr if corr == "spearman" else pearsonr
    values = [float(f(h, s).statistic) for h, s in zip(p["human_scores"], p[field])]
    return _per_item({main: values}, main, "text")


def kendall(pred, gold) -> float:
    """Kendall's tau-b of predictions against gold values, as mteb's regression scores it (scipy's kendalltau)."""
    from scipy.stats import kendalltau

    return float(kendalltau(gold, pred).statistic)


def _regression(task, preds, data, main: str) -> dict:
    """mteb's regression score is the mean over experiments of Kendall's tau between the test values and
    the predicted ones; where every experiment predicts the same values (each trained on the whole
    training split) that mean is one tau over items, which a bootstrap over items can test."""
    gold = [float(x) for x in data[getattr(task, "label_column_name", "value")]]
    if not _per_experiment(preds, len(gold)):
        return {"available": False, "reason": "mteb's predictions are not one value per test item per experiment"}
    if main != "kendalltau":
        return {"available": False, "reason": f"main metric {main} is not Kendall's tau"}
    pred = [float(x) for x in preds[0]]
    if any(max(abs(float(x) - y) for x, y in zip(run, pred)) > 1e-9 for run in preds[1:]):
        return {"available": False, "reason": "the experiments trained on different subsamples: the score is a mean of taus, not one over items"}
    return {
        "available": True, "kind": "statistic", "statistic": "kendall", "unit": "item", "metric": main,
        "n": len(gold), "pred": pred, "gold": gold, "recomputed": _num(kendall(pred, gold)),
    }


def pair_statistic(metric: str, scores, labels, higher_is_similar: bool) -> float:
    """mteb's own pair-classification metric code for one similarity function."""
    import numpy as np
    from mteb.abstasks.pair_classification import AbsTaskPairClassification as T
    from sklearn.metrics import average_precision_score

    labels = np.asarray(labels, dtype=np.int64)
    scores = np.asarray(scores, dtype=float)
    if metric == "ap":
        return float(average_precision_score(labels, scores * (1 if higher_is_similar else -1)))
    if metric == "accuracy":
        return float(T._find_best_acc_and_threshold(None, scores, labels, higher_is_similar)[0])
    f1, precision, recall, _ = T._find_best_f1_and_threshold(None, scores, labels, higher_is_similar)
    return float({"f1": f1, "precision": precision, "recall": recall}[metric])


def _pairs(task, p: dict, data, main: str) -> dict:
    if len(data) == 1 and isinstance(data[0][task.label_column_name], list):  # mteb v1 single-row layout
        from datasets import Dataset

        data = Dataset.from_dict(data[0])
    labels = [int(x) for x in data[task.label_column_name]]
    function, _, metric = main.partition("_")  # max_ap: the best function; similarity_ap, cosine_f1 ...: that one
    names = [name for name, _, _ in PAIR_FUNCTIONS]
    if function != "max" and function not in names:
        return {"available": False, "reason": f"main metric {main} is neither a max over similarity functions nor one function's"}
    if metric not in ("ap", "accuracy", "f1", "precision", "recall"):
        return {"available": False, "reason": f"main metric {main} unknown to evalkit"}
    best = None
    for name, key, hib in PAIR_FUNCTIONS:
        if function not in ("max", name) or p.get(key) is None or len(p[key]) != len(labels):
            continue
        v = pair_statistic(metric, p[key], labels, hib)
        if best is None or v > best[0]:
            best = (v, name, key, hib)
    if best is None:
        return {"available": False, "reason": "no similarity scores in mteb's predictions"}
    v, name, key, hib = best
    return {
        "available": True, "kind": "statistic", "statistic": f"pair_{metric}", "unit": "pair", "metric": main,
        "function": name, "higher_is_similar": hib, "n": len(labels), "pred": [float(x) for x in p[key]], "gold": labels,
        "recomputed": v,
    }


# ----------------------------------------------------------------------------- reading
def load_items(result_path: Path) -> dict | None:
    path = items_path(result_path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None
