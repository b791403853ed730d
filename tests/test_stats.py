"""Bootstrap folds and paired t-tests (Table 18), checked against direct computation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from vseam.benchmarks.stats import (OVERALL, bootstrap, compare, fold_indices, mcnemar, paired_bootstrap_ci, paired_tests,
                             stars)


def test_compare_matches_the_t_formula():
    rng = np.random.default_rng(3)
    ref = rng.uniform(0.7, 0.9, 500)
    base = ref - rng.normal(0.05, 0.02, 500)
    s = compare(ref, base)
    delta = (ref - base) * 100
    assert s["folds"] == 500
    assert s["mean_delta_pp"] == pytest.approx(delta.mean())
    assert s["sd_pp"] == pytest.approx(delta.std(ddof=1))
    t = delta.mean() / (delta.std(ddof=1) / math.sqrt(len(delta)))
    assert s["t"] == pytest.approx(t)
    assert s["p"] == pytest.approx(2 * sps.t.sf(abs(t), df=len(delta) - 1), rel=1e-6, abs=1e-300)
    assert s["significance"] == "***"


def test_paper_row_is_reproduced_by_the_formula():
    # Table 18, Attribute vs original: mean 7.92 pp, SD 2.96 pp over 1,000 folds → t ≈ 84.6 (paper prints 84.79,
    # computed from unrounded figures)
    rng = np.random.default_rng(0)
    d = rng.normal(size=1000)
    d = (d - d.mean()) / d.std(ddof=1) * 2.96 + 7.92
    s = compare(d / 100, np.zeros(1000))
    assert s["t"] == pytest.approx(7.92 / (2.96 / math.sqrt(1000)), rel=1e-9)
    assert 84 < s["t"] < 85.5


def test_degenerate_comparisons():
    same = compare(np.full(10, 0.8), np.full(10, 0.8))
    assert same["mean_delta_pp"] == 0 and same["t"] is None and same["p"] is None and same["significance"] == "n/a"
    const = compare(np.ones(10), np.zeros(10))
    assert const["mean_delta_pp"] == 100 and const["t"] == "inf" and const["p"] == 0.0


def test_stars():
    assert [stars(p) for p in (1e-5, 0.005, 0.02, 0.2, None)] == ["***", "**", "*", "n.s.", "n/a"]


def test_fold_indices_are_seeded():
    a = fold_indices(50, 1000, 100, seed=0, category="attribute")
    assert a.shape == (1000, 100) and a.min() >= 0 and a.max() < 50
    assert np.array_equal(a, fold_indices(50, 1000, 100, seed=0, category="attribute"))
    assert not np.array_equal(a, fold_indices(50, 1000, 100, seed=1, category="attribute"))
    assert not np.array_equal(a, fold_indices(50, 1000, 100, seed=0, category="object"))
    with pytest.raises(ValueError, match="no items"):
        fold_indices(0, 10, 10, 0, "x")


def test_bootstrap_is_paired_and_pools_overall():
    rng = np.random.default_rng(1)
    n = 300
    base = rng.random(n) < 0.7
    ref = base | (rng.random(n) < 0.3)  # the reference fixes some of the baseline's mistakes, never breaks one
    data = {
        "attribute": {"rescaling": ref[:200].tolist(), "original": base[:200].tolist(), "same": ref[:200].tolist()},
        "relation": {"rescaling": ref[200:].tolist(), "original": base[200:].tolist(), "same": ref[200:].tolist()},
    }
    out = bootstrap(data, "rescaling", ["original", "same"], folds=1000, fold_size=100, seed=7)
    cats = out["categories"]
    assert set(cats) == {"attribute", "relation", OVERALL}
    # recompute the attribute row from the documented draw
    idx = fold_indices(200, 1000, 100, seed=7, category="attribute")
    r_acc = ref[:200][idx].mean(axis=1)
    b_acc = base[:200][idx].mean(axis=1)
    want = compare(r_acc, b_acc)
    assert cats["attribute"]["original"]["mean_delta_pp"] == pytest.approx(want["mean_delta_pp"])
    assert cats["attribute"]["original"]["t"] == pytest.approx(want["t"])
    # paired: the reference never loses an item, so no fold can have a negative Δ
    assert cats["attribute"]["original"]["mean_delta_pp"] > 0 and cats["attribute"]["original"]["p"] < 1e-3
    assert cats["attribute"]["same"]["mean_delta_pp"] == 0 and cats["attribute"]["same"]["p"] is None
    ov = cats[OVERALL]["original"]
    assert ov["folds"] == 2000 and ov["items"] == 300
    assert ov["mean_delta_pp"] == pytest.approx(
        (cats["attribute"]["original"]["mean_delta_pp"] + cats["relation"]["original"]["mean_delta_pp"]) / 2)
    assert out["config"]["folds"] == 1000 and out["config"]["fold_size"] == 100 and out["config"]["seed"] == 7
    # the same seed gives the same numbers
    again = bootstrap(data, "rescaling", ["original", "same"], folds=1000, fold_size=100, seed=7)
    assert again == out


def test_bootstrap_rejects_misaligned_input():
    with pytest.raises(ValueError, match="different numbers"):
        bootstrap({"a": {"r": [True, False], "b": [True]}}, "r", ["b"])
    with pytest.raises(ValueError, match="no results"):
        bootstrap({"a": {"r": [True]}}, "r", ["b"])


# ---- the paired tests whose p-values mean something -----------------------------------------------------------


def test_mcnemar_matches_hand_computed_binomial_p():
    # 10 questions: ref right where base is wrong on 4 (items 0-3), base right where ref is wrong on 1 (item 4)
    ref = [True, True, True, True, False, True, False, True, True, False]
    base = [False, False, False, False, True, True, False, True, True, False]
    t = mcnemar(ref, base)
    assert (t["n"], t["ref_only"], t["base_only"]) == (10, 4, 1)
    # two-sided exact binomial, b = 4 of n = 5 discordant: P(X <= 1) + P(X >= 4) = (1 + 5 + 5 + 1) / 32
    assert t["p"] == pytest.approx(12 / 32)
    # 9 discordant, all for ref: 2 / 2**9
    assert mcnemar([True] * 9 + [False], [False] * 9 + [False])["p"] == pytest.approx(2 / 512)
    # no discordant question: no evidence either way
    assert mcnemar([True, False], [True, False])["p"] == 1.0
    with pytest.raises(ValueError, match="different lengths"):
        mcnemar([True], [True, False])


def test_paired_bootstrap_ci_matches_the_exact_bootstrap_distribution():
    """For 4 questions with differences (pp) +100, 0, 0, -100 the bootstrap distribution of the mean can be
    enumerated: the mean of 4 draws from {+100, 0, 0, -100} is 25 * (wins - losses)."""
    import itertools

    ref = [True, True, False, False]
    base = [False, True, False, True]
    d = [100.0, 0.0, 0.0, -100.0]
    means = np.array([np.mean(c) for c in itertools.product(d, repeat=4)])  # all 256 equally likely draws
    want_lo, want_hi = np.quantile(means, [0.025, 0.975])
    # by hand: P(mean = -100) = (1/4)^4 = 0.4%, P(mean = -75) = 4 (1/4)^3 (1/2) = 3.1%, so the 2.5% point is -75
    assert (want_lo, want_hi) == (-75.0, 75.0)
    ci = paired_bootstrap_ci(ref, base, resamples=20_000, seed=3)
    assert ci["diff_pp"] == 0.0 and (ci["ci_low_pp"], ci["ci_high_pp"]) == (want_lo, want_hi)
    # every question moves the same way: the interval collapses onto the difference
    same = paired_bootstrap_ci([True] * 5, [False] * 5, resamples=500)
    assert (same["diff_pp"], same["ci_low_pp"], same["ci_high_pp"]) == (100.0, 100.0, 100.0)
    # seeded
    assert paired_bootstrap_ci(ref, base, resamples=300, seed=1) == paired_bootstrap_ci(ref, base, resamples=300, seed=1)


def test_paired_tests_per_category_and_overall():
    data = {
        "attribute": {"rescaling": [True, True, True, False], "original": [False, True, True, False]},
        "relation": {"rescaling": [True, False, False], "original": [True, True, False]},
    }
    out = paired_tests(data, "rescaling", ["original"], resamples=2000, seed=0)
    cats = out["categories"]
    assert set(cats) == {"attribute", "relation", OVERALL}
    assert (cats["attribute"]["original"]["ref_only"], cats["attribute"]["original"]["base_only"]) == (1, 0)
    assert cats["attribute"]["original"]["diff_pp"] == pytest.approx(25.0)
    ov = cats[OVERALL]["original"]
    assert (ov["n"], ov["ref_only"], ov["base_only"]) == (7, 1, 1) and ov["p"] == 1.0 and ov["diff_pp"] == 0.0
    assert ov["ci_low_pp"] <= 0.0 <= ov["ci_high_pp"]


def test_fold_t_test_p_shrinks_with_folds_not_data():
    """Why the paper's procedure is kept only as a label: the same 200 questions, 10x more folds, a p-value many
    orders of magnitude smaller; the McNemar p of the same data does not move."""
    base = np.arange(200) >= 60  # 70% right
    ref = base.copy()
    ref[:8] = True  # ref fixes 8 questions ...
    ref[100:104] = False  # ... and breaks 4: +2 pp
    assert mcnemar(ref, base)["p"] == pytest.approx(0.3876953125)  # 2 * P(X >= 8), X ~ Binomial(12, 1/2)
    data = {"a": {"r": ref.tolist(), "b": base.tolist()}}
    few = bootstrap(data, "r", ["b"], folds=100, fold_size=100)["categories"]["a"]["b"]["p"]
    many = bootstrap(data, "r", ["b"], folds=1000, fold_size=100)["categories"]["a"]["b"]["p"]
    assert many < few / 1e3
    assert mcnemar(ref, base)["p"] > 0.05


def _levels(fixed: dict, broken: dict, n: int = 200) -> dict:
    """Per-level paired outcomes: `fixed[lv]` questions only the reference answers right, `broken[lv]` only the
    baseline, the rest right under both."""
    out = {}
    for lv in ("attribute", "object", "relation"):
        f, b = fixed.get(lv, 0), broken.get(lv, 0)
        ref = [True] * f + [False] * b + [True] * (n - f - b)
        base = [False] * f + [True] * b + [True] * (n - f - b)
        out[lv] = {"rescaling": ref, "original": base}
    return out


def test_claim_is_met_only_with_a_significant_overall_gain_and_no_level_behind():
    from vseam.benchmarks.stats import claim_sentence, claim_verdict

    tests = paired_tests(_levels({"object": 36}, {"object": 5}), "rescaling", ["original"], resamples=200)
    v = claim_verdict(tests, "original", alpha=0.0005)
    assert v["met"] and v["reasons"] == [] and v["behind"] == []
    assert (v["n"], v["fixed"], v["broken"]) == (600, 36, 5)
    assert v["p"] == pytest.approx(sps.binomtest(36, 41, 0.5).pvalue)
    assert v["diff_pp"] == pytest.approx(31 / 600 * 100)
    assert claim_sentence(v).startswith("claim met at p < 0.0005")

    # the first look: the same direction, 20 fixed / 5 broken, p = 0.004: below 0.01, not below 0.001
    weak = paired_tests(_levels({"object": 20}, {"object": 5}), "rescaling", ["original"], resamples=200)
    assert claim_verdict(weak, "original", alpha=0.01)["met"]
    miss = claim_verdict(weak, "original", alpha=0.001)
    assert not miss["met"] and len(miss["reasons"]) == 1 and "0.00408" in miss["reasons"][0]
    assert "claim not met at p < 0.001" in claim_sentence(miss)

    # significant overall, but one level loses: not met, and the level is named
    mixed = paired_tests(_levels({"object": 40, "attribute": 1}, {"object": 2, "attribute": 3}), "rescaling",
                         ["original"], resamples=200)
    v = claim_verdict(mixed, "original")
    assert v["p"] < 0.001 and not v["met"] and v["behind"] == ["attribute"]
    assert "behind on attribute (-1.00 pp)" in v["reasons"]

    # behind overall: both reasons
    worse = paired_tests(_levels({"object": 2}, {"object": 30}), "rescaling", ["original"], resamples=200)
    v = claim_verdict(worse, "original")
    assert not v["met"] and v["reasons"][0].startswith("not ahead overall") and v["behind"] == ["object"]


def test_claim_verdict_refuses_what_it_cannot_judge():
    from vseam.benchmarks.stats import claim_verdict

    tests = paired_tests(_levels({"object": 3}, {}), "rescaling", ["original"], resamples=50)
    with pytest.raises(ValueError, match="baseline 'w/o positive'"):
        claim_verdict(tests, "w/o positive")
    for alpha in (0, 1, -0.1):
        with pytest.raises(ValueError, match="claim alpha"):
            claim_verdict(tests, "original", alpha=alpha)
