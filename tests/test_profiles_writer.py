"""Eq 7-9: aggregation over D_correct / D_incorrect, disjoint top-K selection, λ normalisation, profile writing."""

from __future__ import annotations

import numpy as np
import pytest

from vseam.calibrate.profiles import EmptyProfileError, HeadScores, aggregate, build_profile, normalise, select_heads
from vseam.head_profiles import Fingerprint, Provenance, parse_profile

FP = Fingerprint(architecture="LlavaForConditionalGeneration", model_id="t", num_layers=2, num_heads=3, head_dim=32)
PV = Provenance(method="mean-ablation exact", tool_version="0", created="2025-01-01T00:00:00+00:00")


def scores(c_correct, c_incorrect, n=(1, 1)):
    return HeadScores(np.array(c_correct, float), np.array(c_incorrect, float), *n)


def test_aggregate_is_eq7():
    d1, d2, d3 = (np.full((2, 3), v) for v in (0.1, 0.3, -0.2))
    d2[1, 2] = -0.5
    s = aggregate([(True, d1), (True, d2), (False, d3)], (2, 3))
    assert (s.n_correct, s.n_incorrect) == (2, 1)
    np.testing.assert_allclose(s.c_correct, (d1 + d2) / 2)
    np.testing.assert_allclose(s.c_incorrect, d3)
    only_correct = aggregate([(True, d1)], (2, 3))
    assert only_correct.n_incorrect == 0 and np.isnan(only_correct.c_incorrect).all()
    with pytest.raises(ValueError, match="shape"):
        aggregate([(True, np.zeros((3, 3)))], (2, 3))
    with pytest.raises(ValueError, match="NaN"):
        aggregate([(True, np.full((2, 3), np.nan))], (2, 3))


def test_normalise_is_min_max_with_degenerate_case():
    assert normalise([0.2, 0.6, 0.4]) == pytest.approx([0.0, 1.0, 0.5])
    assert normalise([0.3]) == [1.0]
    assert normalise([0.3, 0.3]) == [1.0, 1.0]
    assert normalise([]) == []


def test_selection_is_top_k_disjoint_and_eligible():
    # -c_correct (positive value): L0.H0 .5, L0.H1 .4, L0.H2 .1, L1.H0 -.2 (not eligible), L1.H1 .3, L1.H2 0
    c_correct = [[-0.5, -0.4, -0.1], [0.2, -0.3, 0.0]]
    # c_incorrect (negative value): L0.H1 .9 beats its positive .4 -> goes negative; L0.H0 .2 < .5 stays positive
    c_incorrect = [[0.2, 0.9, -0.1], [0.05, 0.0, 0.3]]
    pos, neg = select_heads(scores(c_correct, c_incorrect), k=2)
    assert [(s.layer, s.head) for s in pos] == [(0, 0), (1, 1)]
    assert [(s.layer, s.head) for s in neg] == [(0, 1), (1, 2)]
    assert [s.c for s in pos] == pytest.approx([0.5, 0.3]) and [s.lam for s in pos] == [1.0, 0.0]
    assert not {(s.layer, s.head) for s in pos} & {(s.layer, s.head) for s in neg}

    pos, neg = select_heads(scores(c_correct, c_incorrect), k=10)  # K larger than the eligible heads
    assert [(s.layer, s.head) for s in pos] == [(0, 0), (1, 1), (0, 2)]
    assert [(s.layer, s.head) for s in neg] == [(0, 1), (1, 2), (1, 0)]
    assert [s.lam for s in neg] == pytest.approx([1.0, (0.3 - 0.05) / (0.9 - 0.05), 0.0])

    allowed = np.array([[False, True, True], [True, True, True]])
    pos, _ = select_heads(scores(c_correct, c_incorrect), k=1, allowed=allowed)
    assert [(s.layer, s.head) for s in pos] == [(1, 1)]


def test_ties_break_by_layer_then_head():
    pos, neg = select_heads(scores([[-0.2, -0.2, 0], [-0.2, 0, 0]], [[0, 0, 0], [0, 0, 0]]), k=2)
    assert [(s.layer, s.head) for s in pos] == [(0, 0), (0, 1)] and neg == []
    assert [s.lam for s in pos] == [1.0, 1.0]


def test_build_profile_validates_and_scales_follow_eq10(tmp_path):
    s = scores([[-0.5, -0.4, -0.1], [0.2, -0.3, 0.0]], [[0.2, 0.9, -0.1], [0.05, 0.0, 0.3]], n=(7, 5))
    prof = build_profile("gqa-attribute", FP, "attribute", ["color", "material", "color"], s, PV, k=2)
    assert prof.provenance.n_correct == 7 and prof.provenance.n_incorrect == 5
    assert prof.scope.subtypes == ["color", "material"]
    scales = prof.scales()
    assert scales[0, 0] == pytest.approx(2.0) and scales[1, 1] == pytest.approx(1.0)  # λ = 1 and λ = 0
    assert scales[0, 1] == pytest.approx(0.0) and scales[1, 2] == pytest.approx(1.0)  # negative: 1 − λ
    path = prof.save(tmp_path / "p.json")
    again = parse_profile(path.read_text(), source=str(path))
    assert again == prof
    assert [h.score for h in again.positive] == pytest.approx([0.5, 0.3])


def test_empty_profiles_are_refused():
    with pytest.raises(EmptyProfileError, match="no attributed inputs"):
        build_profile("x", FP, "all", [], scores(np.zeros((2, 3)), np.zeros((2, 3)), n=(0, 0)), PV)
    flat = scores(np.full((2, 3), 0.01), np.full((2, 3), -0.01), n=(3, 3))
    with pytest.raises(EmptyProfileError, match="no head qualifies"):
        build_profile("x", FP, "all", [], flat, PV)
