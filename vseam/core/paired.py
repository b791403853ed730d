"""Paired comparison of two answer sets on the same questions: the exact McNemar test.

One implementation, used where a choice is made (calibration's K/α selection guard) and where results are
reported (the evaluation stage's significance tables).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

ALTERNATIVES = ("two-sided", "greater", "less")


def mcnemar(ref: Sequence[bool], base: Sequence[bool], alternative: str = "two-sided") -> dict:
    """Exact McNemar test of paired outcomes: b = questions only `ref` answers right, c = only `base`;
    p = binomial test of b against Binomial(b + c, 1/2) (1 when b + c = 0). `alternative="greater"` asks whether
    `ref` is right more often than `base`."""
    from scipy import stats as sps

    if alternative not in ALTERNATIVES:
        raise ValueError(f"alternative {alternative!r}: choose from {ALTERNATIVES}")
    r, q = np.asarray(ref, dtype=bool), np.asarray(base, dtype=bool)
    if r.shape != q.shape:
        raise ValueError(f"paired outcomes of different lengths ({len(r)} vs {len(q)})")
    b, c = int((r & ~q).sum()), int((~r & q).sum())
    p = float(sps.binomtest(b, b + c, 0.5, alternative=alternative).pvalue) if b + c else 1.0
    return {"n": int(len(r)), "ref_only": b, "base_only": c, "p": min(1.0, p)}
