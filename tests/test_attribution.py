"""Head attribution (Eq 5-7): fast exact engine == naive loop, AtP is the true first-order term, planted heads."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vseam.calibrate.attribution import HeadAttributor, top_heads
from vseam.calibrate.profiles import aggregate, select_heads
from conftest import random_image
from planted_heads import DISTRACTOR, POSITIVE, build_planted, clean_image, edited_image
from vseam.core.engine import HeadEngine
from vseam.core.hooks import mean_of_other_heads, split_heads

QUESTIONS = ["Is the cat red?", "Is there a dog in this picture?", "Is the small cup to the left of the plate?"]
ANSWERS = ["yes", "no", "yes"]


@pytest.fixture(scope="module")
def attributor(tiny_dir):
    return HeadAttributor(HeadEngine.from_pretrained(str(tiny_dir)), max_rows=5)


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    path = build_planted(tmp_path_factory.mktemp("planted-llava"))
    return HeadAttributor(HeadEngine.from_pretrained(str(path)))


def test_exact_engine_equals_naive_loop(attributor):
    images = [random_image(i) for i in range(3)]
    base_n, naive = attributor.naive(images, QUESTIONS, ANSWERS)
    base_e, exact = attributor.exact(images, QUESTIONS, ANSWERS)  # one padded batch, rows chunked by 5
    assert naive.shape == exact.shape == (3, attributor.L, attributor.H)
    assert np.isfinite(exact).all()
    assert np.abs(exact - naive).max() <= 1e-5
    assert np.abs(base_e.p - base_n.p).max() <= 1e-6
    assert np.abs(naive).max() > 1e-5, "ablations must change P(y), or the comparison says nothing"
    assert base_e.preds == base_n.preds


def test_full_layer_replay_equals_the_fast_path(attributor):
    """The fast path (start inside layer l, answer-only last layer) is on, and the plain replay agrees with it."""
    images = [random_image(i) for i in range(2)]
    assert attributor.replayer.fast
    plain = HeadAttributor(attributor.engine, max_rows=7, fast=False)
    _, fast = attributor.exact(images, QUESTIONS[:2], ANSWERS[:2])
    _, slow = plain.exact(images, QUESTIONS[:2], ANSWERS[:2])
    assert plain.record(images, QUESTIONS[:2]).head_out is None
    assert np.abs(fast - slow).max() <= 1e-6


def test_exact_engine_scores_only_requested_heads(attributor):
    images = [random_image(7)]
    heads = [(attributor.L - 1, 1), (0, attributor.H - 1)]
    _, some = attributor.exact(images, QUESTIONS[:1], ANSWERS[:1], heads=heads)
    _, every = attributor.naive(images, QUESTIONS[:1], ANSWERS[:1])
    scored = np.isfinite(some[0])
    assert {(int(l), int(h)) for l, h in zip(*np.nonzero(scored))} == set(heads)
    assert np.abs(some[0][scored] - every[0][scored]).max() <= 1e-5
    with pytest.raises(ValueError, match="does not exist"):
        attributor.exact(images, QUESTIONS[:1], ANSWERS[:1], heads=[(attributor.L, 0)])
    with pytest.raises(ValueError, match="yes/no"):
        attributor.exact(images, QUESTIONS[:1], ["maybe"])


def _partial_ablation_prob(attributor, image, question, answer, layer, head, eps):
    """P(y) with head (layer, head) moved a fraction eps of the way to its Eq-5 replacement."""
    engine = attributor.engine
    H = attributor.H

    def pre_hook(module, args):
        a = split_heads(args[0], H).clone()
        a[..., head, :] += eps * (mean_of_other_heads(a)[..., head, :] - a[..., head, :])
        return (a.reshape(args[0].shape),)

    o_proj = engine.family.o_proj(attributor.replayer.layers[layer])
    handle = o_proj.register_forward_pre_hook(pre_hook)
    try:
        lp = engine.next_token_logprobs(attributor.encode([image], [question]))
    finally:
        handle.remove()
    return lp[0, attributor.answer_token[answer]].double().exp().item()


def test_atp_is_the_first_order_term_of_mean_ablation(attributor):
    image, q, a = random_image(3), QUESTIONS[2], ANSWERS[2]
    _, est = attributor.atp([image], [q], [a])
    assert est.shape == (1, attributor.L, attributor.H) and np.abs(est).max() > 0
    eps = 1e-2
    for layer, head in [(0, 0), (attributor.L - 1, attributor.H - 1), (attributor.L - 1, 1)]:
        plus = _partial_ablation_prob(attributor, image, q, a, layer, head, eps)
        minus = _partial_ablation_prob(attributor, image, q, a, layer, head, -eps)
        slope = (plus - minus) / (2 * eps)  # central difference of P(y) along Ã - A
        assert slope == pytest.approx(est[0, layer, head], rel=2e-2, abs=1e-6), (layer, head)


def test_planted_heads_rank_first(planted):
    """Ablating the planted head costs the most on clean inputs; ablating the distractor gains the most on edited."""
    n = 4
    images = [clean_image(i) for i in range(n)] + [edited_image(i) for i in range(n)]
    questions = [QUESTIONS[i % len(QUESTIONS)] for i in range(2 * n)]
    answers = ["yes"] * (2 * n)
    base, exact = planted.exact(images, questions, answers)
    assert list(base.correct) == [True] * n + [False] * n
    scores = aggregate(zip(base.correct, exact), (planted.L, planted.H))
    positive, negative = select_heads(scores, k=3)
    assert (positive[0].layer, positive[0].head) == POSITIVE
    assert (negative[0].layer, negative[0].head) == DISTRACTOR
    assert positive[0].lam == 1.0 and negative[0].lam == 1.0
    assert positive[0].c > 5 * max((s.c for s in positive[1:]), default=0.0), "the planted head dominates"

    _, naive = planted.naive(images[:1] + images[-1:], questions[:1] + questions[-1:], ["yes", "yes"])
    assert np.abs(naive - exact[[0, -1]]).max() <= 1e-5

    # the first-order screen finds them too
    _, est = planted.atp(images, questions, answers)
    atp_scores = aggregate(zip(base.correct, est), (planted.L, planted.H))
    assert top_heads(atp_scores.c_correct, 1, sign=-1.0) == [POSITIVE]
    assert top_heads(atp_scores.c_incorrect, 1) == [DISTRACTOR]


def test_score_dispatch(attributor):
    images, q, a = [random_image(5)], QUESTIONS[:1], ANSWERS[:1]
    _, e = attributor.score("exact", images, q, a)
    _, n = attributor.score("naive", images, q, a)
    assert np.abs(e - n).max() <= 1e-5
    with pytest.raises(ValueError, match="unknown attribution method"):
        attributor.score("magic", images, q, a)
    with pytest.raises(ValueError, match="refine"):
        attributor.score("atp", images, q, a, heads=[(0, 0)])
    torch.testing.assert_close(torch.tensor(e), torch.tensor(n), atol=1e-5, rtol=0)


def test_a_fast_path_that_disagrees_with_the_model_is_switched_off(attributor, monkeypatch):
    from vseam.calibrate.replay import Replayer

    broken = Replayer(attributor.engine)
    monkeypatch.setattr(broken, "_answer_only", lambda block, hidden, kw: hidden[:, -1:] * 2.0)
    batch = attributor.encode([random_image(0)], QUESTIONS[:1])
    with pytest.warns(UserWarning, match="fast replay deviates"):
        broken.record(batch, head_out=True)
    assert not broken.fast
