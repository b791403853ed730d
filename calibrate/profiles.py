"""From per-input head effects to head profiles (paper Eq 7-9).

* Eq 7: c_correct(h, l) and c_incorrect(h, l) are the mean Δp over the inputs the model answers correctly and
  incorrectly. Which inputs those are is decided by the caller (`vseam.calibrate.inputs`: by default every calibration
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

A calibration run writes one profile per group of questions (`groups_of`: its semantic level, optionally its
subtype, and `all`) into its run directory (`write_profiles`).
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

import numpy as np

from vseam.core.defaults import DEFAULT_K
from vseam.core.errors import UserError
from vseam.core.vocab import ALL, SEMANTIC_LEVELS, SUBTYPE_LEVEL
from vseam.head_profiles import Fingerprint, HeadProfile, Provenance, Scope, Selection
from vseam.head_profiles.model import Head

if TYPE_CHECKING:
    from vseam.calibrate.config import Stage2Config
    from vseam.calibrate.inputs import Unit
    from vseam.calibrate.rundir import RunDir
    from vseam.calibrate.strength import GridResult


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


# ---- groups of questions -----------------------------------------------------------------------------------------


def groups_of(subtype: str | None, per_subtype: bool) -> list[str]:
    """The profile groups a question counts in: its level, optionally its subtype, and `all`."""
    out = []
    level = SUBTYPE_LEVEL.get(subtype or "")
    if level:
        out.append(level)
        if per_subtype:
            out.append(f"{level}/{subtype}")
    out.append(ALL)
    return out


def group_order(groups) -> list[str]:
    """Levels first (paper order), then per-subtype groups, then `all`."""
    groups = set(groups)
    return [g for g in SEMANTIC_LEVELS if g in groups] + sorted(g for g in groups if "/" in g) + (
        [ALL] if ALL in groups else [])


def group_scores(units: Sequence[Unit], deltas: dict, shape, per_subtype: bool, aggregate_mode: str = "mean"
                 ) -> dict[str, tuple[HeadScores, list[str]]]:
    """group -> (Eq-7 scores, subtypes) over the inputs of the group's questions; deltas: key -> (correct, Δp)."""
    members: dict[str, list] = {}
    subtypes: dict[str, set] = {}
    for unit in units:
        subtype = unit[0].subtype
        for g in groups_of(subtype, per_subtype):
            for inp in unit:
                members.setdefault(g, []).append(deltas[inp.key])
            if subtype:
                subtypes.setdefault(g, set()).add(subtype)
    return {g: (aggregate(members[g], shape, aggregate_mode), sorted(subtypes.get(g, set())))
            for g in group_order(members)}


# ---- writing a run's profiles ------------------------------------------------------------------------------------


def profile_name(cfg: Stage2Config, group: str) -> str:
    return f"{cfg.name_prefix}-{group.replace('/', '-')}"


def run_provenance(run: RunDir, cfg: Stage2Config, method_label: str, dataset: str) -> Provenance:
    """How a calibration run's profiles were made (creation time pinned to the run's, so a resume is identical)."""
    from vseam.calibrate.inputs import SPLIT_NOTES

    notes = SPLIT_NOTES[cfg.attribute_on]
    if cfg.max_correct is not None:
        notes += (f" D_correct is a seeded sample of at most {cfg.max_correct} correctly answered questions per "
                  f"subtype (--max-correct); D_incorrect is every incorrectly answered one.")
    return Provenance.new(method_label, dataset=dataset, fraction=cfg.fraction, seed=cfg.seed, created=run.created,
                          notes=notes, split=cfg.attribute_on, aggregate=cfg.aggregate)


def write_profiles(
    run: RunDir, scores: dict[str, Any], fingerprint: Fingerprint, cfg: Stage2Config, method_label: str,
    dataset: str, allowed: np.ndarray | None, say: Callable[[str], None],
    chosen: dict[str, GridResult] | None = None,
) -> list[pathlib.Path]:
    """One profile per group: K = cfg.k at α = 1 (Eq 10), or the held-out choice of `chosen` (`--select-on`),
    which also writes the fixed-K, α = 1 profile under profiles/paper/."""
    written, reasons = [], []
    for stale in sorted(run.path("profiles").rglob("*.json")):  # e.g. from before --restart
        stale.unlink()
    pv = run_provenance(run, cfg, method_label, dataset)
    for group, (s, subtypes) in scores.items():
        level = group.split("/")[0]
        name = profile_name(cfg, group)
        grid = (chosen or {}).get(group)
        try:
            if grid is None:
                profile = build_profile(name, fingerprint, level, subtypes, s, pv, k=cfg.k, allowed=allowed)
            else:
                sel = Selection(held_out_fraction=cfg.select_on, held_out_questions=grid.n, k_grid=list(cfg.k_grid),
                                strength_grid=list(grid.strengths), accuracy_unedited=grid.unedited,
                                accuracy_chosen=grid.chosen.accuracy, significance=cfg.select_significance,
                                mcnemar_p=grid.p_value)
                profile = build_profile(name, fingerprint, level, subtypes, s,
                                        pv.model_copy(update={"selection": sel}), k=grid.chosen.k, allowed=allowed)
                profile = profile.model_copy(update={"strength": grid.chosen.strength})
                paper = build_profile(f"{name}-paper", fingerprint, level, subtypes, s, pv, k=cfg.k, allowed=allowed)
                paper.save(run.sub("profiles", "paper", f"{name}.json"))
        except EmptyProfileError as e:
            reasons.append(str(e))
            say(f"skipped {e}")
            continue
        written.append(profile.save(run.sub("profiles", f"{name}.json")))
        how = "" if grid is None else f"; K={grid.chosen.k}, α={grid.chosen.strength:g} chosen on {grid.n} held-out"
        say(
            f"wrote {written[-1]} ({len(profile.positive)} positive, {len(profile.negative)} negative heads; "
            f"n_correct={s.n_correct}, n_incorrect={s.n_incorrect}{how})"
        )
    if not written:
        raise UserError("no profile written: " + ("; ".join(reasons) or "no attributed inputs"))
    return written

