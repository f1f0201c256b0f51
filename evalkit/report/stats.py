"""Paired significance tests on per-item scores (seeded; two-sided), after ranx's compare.

- `randomization_test(a, b)`: Fisher's paired randomisation test on per-item scores whose mean is
  the main score (per-query nDCG@10, per-item correctness): the sign of each item's difference is
  flipped at random; p = share of flips whose |mean difference| reaches the observed one.
- `bootstrap_test(stat, a, b, gold)`: paired bootstrap over items for scores that are a statistic
  over the whole set (Spearman over STS pairs, AP over pair-classification pairs): the same
  resampled items are scored for both runs; p = share of resampled differences, shifted by the
  observed difference, at least as far from zero as the observed difference (Efron & Tibshirani, ch. 16).
Both add one to numerator and denominator, so p is never 0.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SEED = 42
N_PERMUTATIONS = 10000
N_BOOTSTRAP = 1000


@dataclass
class TestResult:
    test: str
    n: int  # items
    a: float  # statistic of run A on the items (0..1)
    b: float
    p: float
    samples: int

    @property
    def delta(self) -> float:
        return self.b - self.a


def randomization_test(a, b, n: int = N_PERMUTATIONS, seed: int = SEED) -> TestResult:
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise ValueError("paired scores must be two equal-length, non-empty lists")
    d = b - a
    observed = abs(d.mean())
    rng = np.random.default_rng(seed)
    hits = 0
    chunk = max(1, min(n, 4_000_000 // max(1, d.size)))
    done = 0
    while done < n:
        k = min(chunk, n - done)
        signs = rng.integers(0, 2, size=(k, d.size), dtype=np.int8) * 2 - 1
        means = np.abs((signs * d).mean(axis=1))
        hits += int((means >= observed - 1e-12).sum())
        done += k
    return TestResult("paired randomisation", int(d.size), float(a.mean()), float(b.mean()), (hits + 1) / (n + 1), n)


def _rank_rows(x: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    return rankdata(x, axis=1)


def _corr_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    x = x - x.mean(axis=1, keepdims=True)
    y = y - y.mean(axis=1, keepdims=True)
    den = np.sqrt((x * x).sum(axis=1) * (y * y).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return (x * y).sum(axis=1) / den


def correlation_rows(stat: str, pred: np.ndarray, gold: np.ndarray) -> np.ndarray:
    """Spearman (Pearson of average ranks, as scipy.stats.spearmanr) or Pearson, row by row."""
    if stat == "spearman":
        return _corr_rows(_rank_rows(pred), _rank_rows(gold))
    if stat == "pearson":
        return _corr_rows(pred, gold)
    raise ValueError(stat)


def bootstrap_test(stat: str, a, b, gold, n: int = N_BOOTSTRAP, seed: int = SEED, *, higher_a: bool = True,
                   higher_b: bool = True) -> TestResult:
    """`stat`: spearman | pearson (STS), kendall (regression) or pair_ap | pair_accuracy | pair_f1 | ...
    (pair classification, mteb's metric code, one similarity function per run: the one that gave that
    run its max)."""
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    gold = np.asarray(gold, dtype=float)
    m = gold.size
    if not (a.size == b.size == m) or m < 2:
        raise ValueError("paired scores and gold must be equal-length lists of at least 2 items")
    rng = np.random.default_rng(seed)
    if stat in ("spearman", "pearson"):
        full_a = float(correlation_rows(stat, a[None], gold[None])[0])
        full_b = float(correlation_rows(stat, b[None], gold[None])[0])
        deltas = []
        chunk = max(1, min(n, 2_000_000 // m))
        done = 0
        while done < n:
            k = min(chunk, n - done)
            idx = rng.integers(0, m, size=(k, m))
            g = gold[idx]
            deltas.append(correlation_rows(stat, b[idx], g) - correlation_rows(stat, a[idx], g))
            done += k
        deltas = np.concatenate(deltas)
    elif stat == "kendall":
        from evalkit.items import kendall

        full_a, full_b = kendall(a, gold), kendall(b, gold)
        deltas = np.empty(n)
        for i in range(n):
            idx = rng.integers(0, m, size=m)
            deltas[i] = kendall(b[idx], gold[idx]) - kendall(a[idx], gold[idx])
    elif stat.startswith("pair_"):
        from evalkit.items import pair_statistic

        metric = stat[len("pair_"):]
        n = min(n, max(200, int(2e7 // m)))  # mteb's metric code per resample: fewer resamples on big pair sets
        full_a = pair_statistic(metric, a, gold, higher_a)
        full_b = pair_statistic(metric, b, gold, higher_b)
        deltas = np.empty(n)
        for i in range(n):
            idx = rng.integers(0, m, size=m)
            g = gold[idx]
            if g.min() == g.max():
                deltas[i] = np.nan
                continue
            deltas[i] = pair_statistic(metric, b[idx], g, higher_b) - pair_statistic(metric, a[idx], g, higher_a)
    else:
        raise ValueError(f"unknown statistic {stat!r}")
    deltas = deltas[np.isfinite(deltas)]
    observed = full_b - full_a
    hits = int((np.abs(deltas - observed) >= abs(observed) - 1e-12).sum())
    return TestResult(f"paired bootstrap ({stat})", int(m), full_a, full_b, (hits + 1) / (deltas.size + 1), int(deltas.size))
