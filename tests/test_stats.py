"""Bootstrap folds and paired t-tests (Table 18), checked against direct computation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from benchmarks.stats import OVERALL, bootstrap, compare, fold_indices, stars


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
