"""AIR-Bench's metrics, as its evaluation package defines them (air-benchmark 0.1.0,
air_benchmark/evaluation_utils/utils.py and evaluator.py's compute_metrics):

- nDCG, MAP, Recall and P at k in {1, 3, 5, 10, 50, 100, 1000}: pytrec_eval's ndcg_cut, map_cut,
  recall and P over the judgements (relevance 0 included) and the search results, the mean over the
  queries pytrec_eval returns, rounded to 5 decimals;
- MRR@k: per query the reciprocal rank of the first document judged relevant (> 0) among its top k,
  summed and divided by the number of judged queries, rounded to 5 decimals;
- named `ndcg_at_10`, `map_at_10`, `recall_at_10`, `precision_at_10`, `mrr_at_10`, ... as there.

Over the same search results these are the package's numbers (tests/test_air_bench.py runs its
Evaluator on evalkit's submission files). One case where a run differs from the package's own run:
mteb leaves out a query with no relevant document before it searches (mteb 2.26's
_filter_queries_without_positives), while AIR-Bench searches it and counts it as 0 in every metric.
AIR-Bench generates each query from a relevant passage, so its datasets have no such query; its MRR
divides by every judged query, as here.
"""
from __future__ import annotations

K_VALUES = (1, 3, 5, 10, 50, 100, 1000)


def scores(qrels: dict[str, dict[str, int]], results: dict[str, dict[str, float]], k_values=K_VALUES) -> dict[str, float]:
    import pytrec_eval

    ks = ",".join(str(k) for k in k_values)
    measures = {f"ndcg_cut.{ks}", f"map_cut.{ks}", f"recall.{ks}", f"P.{ks}"}
    per_query = pytrec_eval.RelevanceEvaluator(qrels, measures).evaluate(results)
    out: dict[str, float] = {}
    n = len(per_query)
    for name, key in (("ndcg_at", "ndcg_cut"), ("map_at", "map_cut"), ("recall_at", "recall"), ("precision_at", "P")):
        for k in k_values:
            out[f"{name}_{k}"] = round(sum(s[f"{key}_{k}"] for s in per_query.values()) / n, 5) if n else 0.0
    top = max(k_values)
    ranked = {q: sorted(d.items(), key=lambda kv: kv[1], reverse=True)[:top] for q, d in results.items()}
    for k in k_values:
        total = 0.0
        for q, hits in ranked.items():
            relevant = {d for d, r in qrels.get(q, {}).items() if r > 0}
            total += next((1.0 / rank for rank, (d, _) in enumerate(hits[:k], 1) if d in relevant), 0.0)
        out[f"mrr_at_{k}"] = round(total / len(qrels), 5) if qrels else 0.0
    return out
