"""Significance of a strategy's gain over baselines: paired bootstrap folds and a paired t-test (paper Table 18).

For each category (e.g. a semantic level), `folds` folds of `fold_size` items are drawn with replacement from
the items every compared strategy answered (seeded; the same draw for the reference and all baselines, so the
comparison is paired). In each fold the accuracy of the reference and of a baseline is computed; Δ = reference −
baseline in percentage points. Reported per (category, baseline): mean Δ, SD of Δ (ddof 1), and the paired
t-test of the fold accuracies (`scipy.stats.ttest_rel`, equivalent to a one-sample t-test of Δ) with its
two-sided p. "Overall" pools the folds of all categories (3 × 1,000 folds for three levels), as in the paper.
"""

from __future__ import annotations

import math
import zlib
from typing import Mapping, Sequence

import numpy as np

OVERALL = "Overall"


def fold_indices(n_items: int, folds: int, fold_size: int, seed: int, category: str) -> np.ndarray:
    """[folds, fold_size] item indices drawn with replacement; the same (seed, category) gives the same draw."""
    if n_items <= 0:
        raise ValueError(f"category {category!r}: no items to resample")
    rng = np.random.default_rng([seed, zlib.crc32(category.encode())])
    return rng.integers(0, n_items, size=(folds, fold_size))


def stars(p: float | None) -> str:
    if p is None or not math.isfinite(p):
        return "n/a"
    return "***" if p < 0.001 else "**" if p < 0.01 else "*" if p < 0.05 else "n.s."


def _finite(x: float) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def compare(ref_acc: np.ndarray, base_acc: np.ndarray) -> dict:
    """Δ statistics for paired per-fold accuracies (fractions in [0, 1]); figures in percentage points."""
    from scipy import stats as sps

    delta = (np.asarray(ref_acc, dtype=float) - np.asarray(base_acc, dtype=float)) * 100.0
    sd = float(delta.std(ddof=1)) if len(delta) > 1 else float("nan")
    if len(delta) > 1 and sd > 0:
        res = sps.ttest_rel(ref_acc, base_acc)
        t, p = float(res.statistic), float(res.pvalue)
    elif len(delta) > 1 and float(delta.mean()) != 0.0:  # every fold differs by the same non-zero amount
        t, p = math.copysign(math.inf, float(delta.mean())), 0.0
    else:  # no variation and no difference: the test is undefined
        t, p = float("nan"), float("nan")
    return {
        "folds": int(len(delta)),
        "mean_delta_pp": float(delta.mean()),
        "sd_pp": _finite(sd),
        "t": None if math.isnan(t) else (t if math.isfinite(t) else ("inf" if t > 0 else "-inf")),
        "p": _finite(p),
        "significance": stars(_finite(p)),
    }


def bootstrap(
    correct: Mapping[str, Mapping[str, Sequence[bool]]],
    reference: str,
    baselines: Sequence[str],
    folds: int = 1000,
    fold_size: int = 100,
    seed: int = 0,
) -> dict:
    """Bootstrap comparison of `reference` against each baseline, per category and overall.

    correct: category → strategy → per-item correctness, aligned across strategies (item i is the same question
    for every strategy of that category). Returns {"config": ..., "categories": {category: {baseline: stats}}}.
    """
    per_cat: dict[str, dict[str, dict]] = {}
    pooled: dict[str, tuple[list, list]] = {b: ([], []) for b in baselines}
    for category, by_strategy in correct.items():
        missing = [s for s in (reference, *baselines) if s not in by_strategy]
        if missing:
            raise ValueError(f"category {category!r}: no results for {missing}")
        ref = np.asarray(by_strategy[reference], dtype=float)
        lengths = {s: len(by_strategy[s]) for s in (reference, *baselines)}
        if len(set(lengths.values())) != 1:
            raise ValueError(f"category {category!r}: strategies answered different numbers of items {lengths}")
        if len(ref) == 0:
            continue
        idx = fold_indices(len(ref), folds, fold_size, seed, category)
        ref_acc = ref[idx].mean(axis=1)
        per_cat[category] = {}
        for b in baselines:
            base_acc = np.asarray(by_strategy[b], dtype=float)[idx].mean(axis=1)
            per_cat[category][b] = compare(ref_acc, base_acc) | {"items": int(len(ref))}
            pooled[b][0].append(ref_acc)
            pooled[b][1].append(base_acc)
    if len(per_cat) > 1:
        per_cat[OVERALL] = {
            b: compare(np.concatenate(r), np.concatenate(a)) | {"items": sum(v[b]["items"] for v in per_cat.values())}
            for b, (r, a) in pooled.items()
        }
    return {
        "config": {"reference": reference, "baselines": list(baselines), "folds": folds, "fold_size": fold_size,
                   "seed": seed, "resampling": "with replacement", "test": "scipy.stats.ttest_rel (two-sided)"},
        "categories": per_cat,
    }
