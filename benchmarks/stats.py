"""Significance of a strategy's gain over baselines.

Two kinds of test, both on the same paired per-question outcomes (item i is the same question for every strategy):

* `paired_tests` — what the p-values should be read from: an exact McNemar test (two-sided binomial test on the
  questions exactly one of the two strategies answers right) and a 95% paired-bootstrap confidence interval of the
  accuracy difference (questions resampled with replacement, percentile interval).
* `bootstrap` — the paper's Table-18 procedure, reproduced for comparison with the paper. It draws many folds and
  runs a t-test on the fold accuracies as if they were independent samples; they are resamples of the same
  questions, so its p-value shrinks as folds are added, whatever the amount of data.

Paper Table-18 procedure: for each category (e.g. a semantic level), `folds` folds of `fold_size` items are drawn with replacement from
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

from vseam.core.paired import mcnemar  # noqa: F401  (re-exported: the reports' paired test)

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


def _aligned(category: str, by_strategy: Mapping[str, Sequence[bool]], reference: str, baselines: Sequence[str]
             ) -> np.ndarray:
    """The reference's outcomes of one category, after checking every strategy answered the same items."""
    missing = [s for s in (reference, *baselines) if s not in by_strategy]
    if missing:
        raise ValueError(f"category {category!r}: no results for {missing}")
    lengths = {s: len(by_strategy[s]) for s in (reference, *baselines)}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"category {category!r}: strategies answered different numbers of items {lengths}")
    return np.asarray(by_strategy[reference], dtype=float)


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
        ref = _aligned(category, by_strategy, reference, baselines)
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
                   "seed": seed, "resampling": "with replacement", "test": "scipy.stats.ttest_rel (two-sided)",
                   "procedure": PAPER_PROCEDURE},
        "categories": per_cat,
    }


PAPER_PROCEDURE = ("paper Table-18 procedure: t-test on bootstrap folds (p shrinks with the number of folds, "
                   "not with the data)")


def paired_bootstrap_ci(ref: Sequence[bool], base: Sequence[bool], resamples: int = 10_000, seed: int = 0,
                        level: float = 0.95, category: str = "") -> dict:
    """Percentile confidence interval (pp) of accuracy(ref) − accuracy(base), questions resampled with replacement
    (the same draw for both strategies: paired)."""
    r, q = np.asarray(ref, dtype=float), np.asarray(base, dtype=float)
    if r.shape != q.shape or len(r) == 0:
        raise ValueError(f"paired outcomes must be non-empty and aligned ({len(r)} vs {len(q)})")
    d = (r - q) * 100.0
    rng = np.random.default_rng([seed, zlib.crc32(category.encode()), 17])
    means = np.empty(resamples)
    for start in range(0, resamples, 1000):  # bounded memory for large question sets
        stop = min(resamples, start + 1000)
        means[start:stop] = d[rng.integers(0, len(d), size=(stop - start, len(d)))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2])
    return {"diff_pp": float(d.mean()), "ci_low_pp": float(lo), "ci_high_pp": float(hi), "level": level,
            "resamples": resamples}


def paired_tests(
    correct: Mapping[str, Mapping[str, Sequence[bool]]],
    reference: str,
    baselines: Sequence[str],
    resamples: int = 10_000,
    seed: int = 0,
) -> dict:
    """McNemar p and the paired-bootstrap CI of `reference` − each baseline, per category and over all questions."""
    per_cat: dict[str, dict[str, dict]] = {}
    pooled: dict[str, tuple[list, list]] = {b: ([], []) for b in baselines}
    for category, by_strategy in correct.items():
        ref = list(_aligned(category, by_strategy, reference, baselines))
        if not ref:
            continue
        per_cat[category] = {}
        for b in baselines:
            base = list(by_strategy[b])
            per_cat[category][b] = mcnemar(ref, base) | paired_bootstrap_ci(ref, base, resamples, seed, category=category)
            pooled[b][0].extend(ref)
            pooled[b][1].extend(base)
    if len(per_cat) > 1:
        per_cat[OVERALL] = {b: mcnemar(r, q) | paired_bootstrap_ci(r, q, resamples, seed, category=OVERALL)
                            for b, (r, q) in pooled.items()}
    return {
        "config": {"reference": reference, "baselines": list(baselines), "resamples": resamples, "seed": seed,
                   "tests": "exact McNemar (two-sided binomial on discordant questions); 95% paired-bootstrap "
                            "percentile CI of the accuracy difference"},
        "categories": per_cat,
    }


def claim_verdict(tests: Mapping, baseline: str, alpha: float = 0.001) -> dict:
    """The paper's claim judged on `paired_tests` output: the reference answers more questions right than `baseline`
    over all of them, with exact McNemar p < `alpha`, and no category has a lower accuracy under the reference
    (point estimates). Categories are the semantic levels in the reports; with one category it is the whole set."""
    if not 0 < alpha < 1:
        raise ValueError(f"claim alpha {alpha}: expected a level in (0, 1)")
    cats = tests.get("categories", {})
    per = {c: t[baseline] for c, t in cats.items() if baseline in t}
    if not per:
        raise ValueError(f"paired tests hold no comparison with baseline {baseline!r}")
    over_name = OVERALL if OVERALL in per else next(iter(per))
    over = per[over_name]
    behind = sorted(c for c, t in per.items() if c != OVERALL and t["diff_pp"] < 0)
    reasons = []
    if not over["diff_pp"] > 0:
        reasons.append(f"not ahead overall ({over['diff_pp']:+.2f} pp)")
    if not over["p"] < alpha:
        reasons.append(f"McNemar p = {over['p']:.3g} is not below {alpha:g}")
    if behind:
        reasons.append("behind on " + ", ".join(f"{c} ({per[c]['diff_pp']:+.2f} pp)" for c in behind))
    return {"reference": tests.get("config", {}).get("reference"), "baseline": baseline, "alpha": alpha,
            "n": over["n"], "diff_pp": over["diff_pp"], "p": over["p"], "fixed": over["ref_only"],
            "broken": over["base_only"], "behind": behind, "met": not reasons, "reasons": reasons}


def claim_sentence(verdict: Mapping) -> str:
    """One line for a log or a README: the verdict with the figures it rests on."""
    head = (f"{verdict['reference']} vs {verdict['baseline']} on {verdict['n']} questions: {verdict['diff_pp']:+.2f} pp "
            f"({verdict['fixed']} fixed, {verdict['broken']} broken), McNemar p = {verdict['p']:.3g}")
    if verdict["met"]:
        return f"claim met at p < {verdict['alpha']:g} with no level behind — {head}"
    return f"claim not met at p < {verdict['alpha']:g} ({'; '.join(verdict['reasons'])}) — {head}"
