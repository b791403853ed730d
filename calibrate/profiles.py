"""From per-input head effects to head profiles (paper Eq 7-9).

* Eq 7: c_correct(h, l) and c_incorrect(h, l) are the mean Δp over the inputs the model answers correctly and
  incorrectly. Which inputs those are is decided by the caller (`calibrate.inputs`: by default every calibration
  question on its clean image, split by the unedited model's answer, as in the authors' code). `aggregate="gain"`
  is the released script's variant: only probability drops count on D_correct and only gains on D_incorrect
  (means of min(0, Δp) and max(0, Δp)); the default "mean" is the paper's signed mean.
* Positive heads: the K largest −c_correct; negative heads: the K largest c_incorrect. Only heads whose removal
  actually hurts (−c_correct > 0) or helps (c_incorrect > 0) are eligible, and the two sets are disjoint: a head
  eligible for both goes to the set where its effect is larger (positive on a tie), and each set is then filled
  to K from its remaining candidates.
* Eq 8-9: the score c is |c_correct| (positive) or |c_incorrect| (negative), min-max normalised separately within
  each set to λ ∈ [0, 1]. When all scores of a set are equal (including a set of one head) every head gets λ = 1:
  each is then as important as the most important one.
"""

from __future__ import annotations

import dataclasses
from typing import Iterable, Sequence

import numpy as np

from head_profiles import Fingerprint, HeadProfile, Provenance, Scope
from head_profiles.model import Head

DEFAULT_K = 10


class EmptyProfileError(ValueError):
    """No head qualifies (no attributed inputs, or no head changes the answer probability)."""


@dataclasses.dataclass
class HeadScores:
    """Eq 7 for one group of inputs. Arrays are [L, H]; NaN when the subset is empty."""

    c_correct: np.ndarray
    c_incorrect: np.ndarray
    n_correct: int
    n_incorrect: int

    @property
    def shape(self) -> tuple[int, int]:
        return self.c_correct.shape


def aggregate(items: Iterable[tuple[bool, np.ndarray]], shape: tuple[int, int], mode: str = "mean") -> HeadScores:
    """Eq 7: mean Δp [L, H] over correctly and incorrectly answered inputs. items: (correct, delta) pairs.

    mode "gain" (the released analysis script): on correct inputs only drops count (min(0, Δp)), on incorrect
    inputs only gains (max(0, Δp)).
    """
    if mode not in ("mean", "gain"):
        raise ValueError(f"unknown Eq-7 aggregation {mode!r}; choose mean or gain")
    sums = {True: np.zeros(shape), False: np.zeros(shape)}
    counts = {True: 0, False: 0}
    for correct, delta in items:
        d = np.asarray(delta, dtype=np.float64)
        if d.shape != tuple(shape):
            raise ValueError(f"head effects have shape {d.shape}, expected {tuple(shape)}")
        if not np.isfinite(d).all():
            raise ValueError("head effects contain NaN/inf; every head must be scored on every input")
        if mode == "gain":
            d = np.minimum(d, 0.0) if correct else np.maximum(d, 0.0)
        sums[bool(correct)] += d
        counts[bool(correct)] += 1

    def mean(flag: bool) -> np.ndarray:
        return sums[flag] / counts[flag] if counts[flag] else np.full(shape, np.nan)

    return HeadScores(mean(True), mean(False), counts[True], counts[False])


@dataclasses.dataclass(frozen=True)
class Selected:
    layer: int
    head: int
    c: float  # Eq 8 score (>0)
    lam: float  # Eq 9


def _ranked(values: np.ndarray, allowed: np.ndarray) -> list[tuple[float, int, int]]:
    """(value, layer, head) with value > 0, largest first, ties by (layer, head)."""
    out = []
    L, H = values.shape
    for l in range(L):
        for h in range(H):
            v = values[l, h]
            if allowed[l, h] and np.isfinite(v) and v > 0:
                out.append((float(v), l, h))
    out.sort(key=lambda t: (-t[0], t[1], t[2]))
    return out


def normalise(scores: Sequence[float]) -> list[float]:
    """Eq 9: min-max to [0, 1]; all-equal scores (or a single one) give λ = 1."""
    if not scores:
        return []
    lo, hi = min(scores), max(scores)
    if hi <= lo:
        return [1.0 for _ in scores]
    return [min(1.0, max(0.0, (c - lo) / (hi - lo))) for c in scores]


def select_heads(
    scores: HeadScores, k: int = DEFAULT_K, allowed: np.ndarray | None = None
) -> tuple[list[Selected], list[Selected]]:
    """Top-K positive and negative heads (disjoint) with λ; `allowed` [L, H] restricts the candidates."""
    if k < 0:
        raise ValueError(f"K must be >= 0, got {k}")
    allowed = np.ones(scores.shape, dtype=bool) if allowed is None else np.asarray(allowed, dtype=bool)
    pos_value = -scores.c_correct  # Eq 8 for positive heads
    neg_value = scores.c_incorrect
    pos = _ranked(pos_value, allowed)
    neg = _ranked(neg_value, allowed)
    neg_keys = {(l, h): v for v, l, h in neg}
    pos_keys = {(l, h): v for v, l, h in pos}
    # a head eligible for both sets belongs to the one where its effect is larger
    pos = [t for t in pos if not ((t[1], t[2]) in neg_keys and neg_keys[(t[1], t[2])] > t[0])]
    neg = [t for t in neg if not ((t[1], t[2]) in pos_keys and pos_keys[(t[1], t[2])] >= t[0])]
    pos, neg = pos[:k], neg[:k]

    def finish(chosen):
        lams = normalise([c for c, _, _ in chosen])
        return [Selected(l, h, c, lam) for (c, l, h), lam in zip(chosen, lams)]

    return finish(pos), finish(neg)


def build_profile(
    name: str,
    fingerprint: Fingerprint,
    level: str,
    subtypes: Sequence[str],
    scores: HeadScores,
    provenance: Provenance,
    k: int = DEFAULT_K,
    allowed: np.ndarray | None = None,
) -> HeadProfile:
    """A validated `HeadProfile` from Eq-7 scores; raises EmptyProfileError when no head qualifies."""
    if scores.n_correct + scores.n_incorrect == 0:
        raise EmptyProfileError(f"profile '{name}': no attributed inputs")
    positive, negative = select_heads(scores, k, allowed)
    if not positive and not negative:
        raise EmptyProfileError(
            f"profile '{name}': no head qualifies (n_correct={scores.n_correct}, n_incorrect={scores.n_incorrect}; "
            "no head's removal lowers P(y) on correct inputs or raises it on incorrect ones)"
        )
    pv = provenance.model_copy(update={"n_correct": scores.n_correct, "n_incorrect": scores.n_incorrect})
    return HeadProfile(
        name=name,
        fingerprint=fingerprint,
        scope=Scope(level=level, subtypes=sorted(set(subtypes))),
        k=k,
        positive=[Head(layer=s.layer, head=s.head, lam=s.lam, score=s.c) for s in positive],
        negative=[Head(layer=s.layer, head=s.head, lam=s.lam, score=s.c) for s in negative],
        provenance=pv,
    )
