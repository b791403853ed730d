"""Choosing K and the strength α on held-out calibration questions (`calibrate --select-on F`).

The paper fixes K = 10 heads per set and applies Eq 10 at full strength. Whether that helps a given model is an
empirical question, so `--select-on F` holds out a seeded fraction F of the calibration questions (never
evaluation data; `vseam.calibrate.inputs.hold_out`), attributes heads on the rest, and for every profile group tries
each K of a small grid and each strength α of `STRENGTHS` (scales 1 + αλ and 1 − αλ). The candidate with the
highest accuracy on the group's held-out questions wins; ties go to the smaller α, then the smaller K. α = 0 is the
unmodified model and always a candidate, so the chosen profile is never worse than the unedited model on the
held-out part.

The best of many candidates on a few dozen questions is partly luck (the winner's curse): on a 64-head organism a
relation profile that gained 8 pp on 60 held-out questions lost 6.5 pp on the test split. So by default
(`--select-significance 0.05`) the winner must also beat the unedited model on the held-out questions by an exact
one-sided McNemar test at that level, Bonferroni-corrected for the number of candidates tried; otherwise α = 0 is
kept. `--select-significance 1` keeps the plain argmax.

Every candidate's held-out accuracy is logged in the run directory (`selection.jsonl`), so a resumed run reuses it.
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from vseam.calibrate.records import VQARecord, load_image
from vseam.calibrate.rundir import DoneLog
from vseam.core.defaults import DEFAULT_K_GRID, STRENGTHS
from vseam.core.errors import UserError
from vseam.core.paired import mcnemar
from vseam.head_profiles import Fingerprint, HeadProfile

if TYPE_CHECKING:
    from vseam.calibrate.config import Stage2Config
    from vseam.calibrate.rundir import RunDir


@dataclasses.dataclass(frozen=True)
class Candidate:
    k: int
    strength: float
    accuracy: float
    n: int


@dataclasses.dataclass
class GridResult:
    """The held-out grid of one profile group and the chosen candidate."""

    group: str
    n: int  # held-out questions of the group
    unedited: float  # accuracy at α = 0
    candidates: list[Candidate]  # every (K, α > 0)
    chosen: Candidate
    strengths: tuple[float, ...] = STRENGTHS  # the α grid tried (0 included)
    #: the significance guard: the best candidate before it, its one-sided McNemar p against the unedited model and
    #: the level it had to pass (significance / candidates); None when the guard was off or α = 0 won outright
    best: Candidate | None = None
    p_value: float | None = None
    threshold: float | None = None

    def to_json(self) -> dict:
        return {
            "group": self.group,
            "held_out_questions": self.n,
            "accuracy_unedited": self.unedited,
            "chosen": dataclasses.asdict(self.chosen),
            "best_before_significance": None if self.best is None else dataclasses.asdict(self.best),
            "mcnemar_p": self.p_value,
            "threshold": self.threshold,
            "grid": [dataclasses.asdict(c) for c in self.candidates],
        }


def best(unedited: Candidate, candidates: Sequence[Candidate]) -> Candidate:
    """Highest accuracy; ties to the smaller α (the unedited model first), then the smaller K."""
    return min([unedited, *candidates], key=lambda c: (-c.accuracy, c.strength, c.k))


def gain_p_value(edited: np.ndarray, unedited: np.ndarray) -> float:
    """Exact one-sided McNemar p that `edited` answers more questions right than `unedited` (per-question bools)."""
    return mcnemar(edited, unedited, alternative="greater")["p"]


def read_images(records: Sequence[VQARecord]) -> list:
    """The records' images, each read once (an unreadable one is named by its question)."""
    return [load_image(r.image, f"question {r.qid}") for r in records]


def held_out_correct(engine, records: Sequence[VQARecord], scales: np.ndarray | None, batch: int = 16,
                     images: Sequence | None = None, pool=None) -> np.ndarray:
    """Per question: does the model (under per-head `scales`, None = unedited) answer the yes/no question right?

    `images`: the records' images already read (else they are read here); `pool`: run the batches on Ray workers
    (`vseam.calibrate.distributed.RayPool`), same batches, same numbers."""
    from vseam.calibrate.distributed import LocalRunner

    if images is None:
        images = read_images(records)
    starts = range(0, len(records), batch)
    jobs = ((images[s : s + batch], [r.question for r in records[s : s + batch]], scales) for s in starts)
    out = []
    for start, (yes, no) in zip(starts, (pool or LocalRunner(engine)).map("binary", jobs)):
        out.append((yes >= no) == np.array([r.answer == "yes" for r in records[start : start + batch]]))
    return np.concatenate(out) if out else np.zeros(0, dtype=bool)


def choose(
    engine,
    group: str,
    records: Sequence[VQARecord],
    profiles: dict[int, HeadProfile],
    log: DoneLog,
    strengths: Sequence[float] = STRENGTHS,
    on_progress: Callable[[], None] | None = None,
    significance: float | None = None,
    pool=None,
) -> GridResult:
    """Evaluate every (K, α) on `records` (the group's held-out questions) and pick the best (see `best`); with
    `significance` < 1, keep it only if it beats the unedited model at that level / the number of candidates
    (exact one-sided McNemar on the held-out questions), else choose α = 0.

    profiles: K -> the group's Eq-10 profile with that K (λ as calibrated, no strength); `pool`: evaluate on Ray
    workers (`vseam.calibrate.distributed.RayPool`)."""
    right: dict[tuple[int, float], np.ndarray] = {}  # (K, α) -> per held-out question: answered right?
    images: list = []  # the held-out images, read once for all candidates (when one is still to evaluate)

    def accuracy(k: int, strength: float, key: str, scales: np.ndarray | None) -> float:
        row = log.get(key)
        if row is None:
            if not images:
                images.extend(read_images(records))
            correct = held_out_correct(engine, records, scales, images=images, pool=pool)
            row = {"key": key, "group": group, "n": len(records), "correct": int(correct.sum()),
                   "accuracy": float(correct.mean()) if len(records) else 0.0,
                   "right": "".join("1" if c else "0" for c in correct)}
            log.append(row)
        if len(row.get("right", "")) != len(records):
            raise UserError(f"{log.path}: the row {key!r} has no per-question results for the {len(records)} "
                            "held-out questions; remove that line to score it again")
        right[k, strength] = np.array([c == "1" for c in row["right"]], dtype=bool)
        if on_progress is not None:
            on_progress()
        return float(row["accuracy"])

    base = accuracy(0, 0.0, f"{group}|unedited", None)
    unedited = Candidate(k=0, strength=0.0, accuracy=base, n=len(records))
    candidates = []
    for k, profile in sorted(profiles.items()):
        for a in strengths:
            if a == 0:
                continue
            scaled = profile.model_copy(update={"strength": float(a)})
            acc = accuracy(k, float(a), f"{group}|k={k}|strength={a:g}", scaled.scales())
            candidates.append(Candidate(k=k, strength=float(a), accuracy=acc, n=len(records)))
    chosen = best(unedited, candidates)
    top, p_value, threshold = None, None, None
    if significance is not None and significance < 1 and chosen.strength > 0:
        top = chosen
        threshold = significance / len(candidates)
        p_value = gain_p_value(right[chosen.k, chosen.strength], right[0, 0.0])
        if p_value >= threshold:
            chosen = unedited
    if chosen.k == 0:  # the unedited model won: keep the smallest K's heads, at strength 0
        chosen = dataclasses.replace(chosen, k=min(profiles))
    return GridResult(group=group, n=len(records), unedited=base, candidates=candidates, chosen=chosen,
                      strengths=tuple(strengths), best=top, p_value=p_value, threshold=threshold)


def select_strength(engine, run: RunDir, scores: dict[str, Any], held: Sequence[VQARecord], fingerprint: Fingerprint,
                    cfg: Stage2Config, method_label: str, dataset: str, allowed: np.ndarray | None,
                    say: Callable[[str], None], pool=None) -> dict[str, GridResult]:
    """`--select-on`: per profile group, the held-out accuracy of every (K, α) and the chosen candidate (on the
    workers of `pool` when given)."""
    from tqdm import tqdm

    from vseam.calibrate.profiles import EmptyProfileError, build_profile, groups_of, profile_name, run_provenance

    pv = run_provenance(run, cfg, method_label, dataset)
    log = run.log("selection", key="key")
    out: dict[str, GridResult] = {}
    for group, (s, subtypes) in scores.items():
        if cfg.select_only and group not in cfg.select_only:
            say(f"--select-only: group {group} is not selected for; it keeps K={cfg.k}, α=1")
            continue
        members = [r for r in held if group in groups_of(r.subtype, cfg.per_subtype)]
        if not members:
            say(f"--select-on: no held-out question in group {group}; it keeps K={cfg.k}, α=1")
            continue
        profiles = {}
        for k in cfg.k_grid:
            try:
                profiles[k] = build_profile(profile_name(cfg, group), fingerprint, group.split("/")[0], subtypes, s,
                                            pv, k=k, allowed=allowed)
            except EmptyProfileError:
                break  # no head qualifies at any K
        if not profiles:
            continue
        bar = tqdm(total=1 + len(profiles) * (len(STRENGTHS) - 1), unit="candidate", dynamic_ncols=True,
                   desc=f"select K, α ({group}, {len(members)} held out)")
        res = choose(engine, group, members, profiles, log, on_progress=lambda: bar.update(1),
                     significance=cfg.select_significance, pool=pool)
        bar.close()
        out[group] = res
        guard = ""
        if res.p_value is not None:
            verdict = "kept" if res.chosen.strength > 0 else "not significant: α = 0 kept"
            guard = (f"; best K={res.best.k} α={res.best.strength:g} at {res.best.accuracy:.3f}, McNemar p = "
                     f"{res.p_value:.3g} vs {res.threshold:.3g} ({verdict})")
        say(f"{group}: held-out accuracy {res.unedited:.3f} unedited, {res.chosen.accuracy:.3f} with K={res.chosen.k} "
            f"α={res.chosen.strength:g} ({len(members)} questions){guard}")
    return out


def grid_figure(results: Sequence[GridResult], path: pathlib.Path) -> pathlib.Path | None:
    """Held-out accuracy against α, one line per K, one panel per group (the unedited model dashed)."""
    if not results:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(3.2 * len(results), 2.8), squeeze=False, dpi=110)
    for ax, res in zip(axes[0], results):
        ks = sorted({c.k for c in res.candidates})
        for k in ks:
            pts = sorted((c.strength, c.accuracy) for c in res.candidates if c.k == k)
            xs = [0.0] + [x for x, _ in pts]
            ys = [res.unedited] + [y for _, y in pts]
            ax.plot(xs, [100 * y for y in ys], marker="o", ms=3, label=f"K={k}")
        ax.axhline(100 * res.unedited, color="gray", ls="--", lw=0.8)
        ax.scatter([res.chosen.strength], [100 * res.chosen.accuracy], s=60, facecolors="none", edgecolors="k", zorder=5)
        ax.set_title(f"{res.group} (n={res.n})", fontsize=9)
        ax.set_xlabel("strength α")
        ax.set_ylabel("held-out accuracy (%)")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


__all__ = ["Candidate", "DEFAULT_K_GRID", "GridResult", "STRENGTHS", "best", "choose", "gain_p_value", "grid_figure",
           "held_out_correct", "read_images", "select_strength"]
