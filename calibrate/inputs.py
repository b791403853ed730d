"""Which inputs head attribution scores (paper Eq 6-7), and against which answer.

Eq 7 averages each head's effect Δp over the inputs the model answers correctly (D_correct) and incorrectly
(D_incorrect). Three ways to choose those inputs (`--attribute-on`):

* ``clean`` (default; the authors' released code): every calibration question on its clean image, target = the
  dataset's ground-truth answer; the unedited model's yes/no prediction puts it in D_correct or D_incorrect. The
  negative heads are then the heads whose removal fixes questions the model gets wrong — what rescaling needs.
* ``clean+edited``: the same, plus each accepted edited image scored against *its own* true answer (exact from
  the scene for the `shapes` world, the flipped yes/no answer elsewhere: the edit was made to flip it).
* ``eq4-pairs``: both images of every Eq-4 triple, both against the *clean* answer y (the edited image is then
  "incorrect" exactly because the model saw the edit). The negative heads are the heads that read the edited
  region: an analysis of where the answer comes from, not a way to improve accuracy.

A question contributes one *unit* (its inputs: one or two images); attribution runs over fixed chunks of units so
that a resumed run batches exactly as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from vseam.calibrate.records import EditedPair, Triple, VQARecord
from vseam.core.errors import UserError

SPLITS = ("clean", "clean+edited", "eq4-pairs")
DEFAULT_SPLIT = "clean"
AGGREGATES = ("mean", "gain")
DEFAULT_AGGREGATE = "mean"

SPLIT_NOTES = {
    "clean": "Eq 7 split (authors' code): every calibration question on its clean image, target = its ground-truth "
             "answer; D_correct / D_incorrect = questions the unedited model answers right / wrong (yes/no prediction).",
    "clean+edited": "Eq 7 split: every calibration question on its clean image and each accepted edited image, each "
                    "scored against its own true answer; D_correct / D_incorrect by the unedited model's prediction.",
    "eq4-pairs": "Eq 7 split 'eq4-pairs': both images of every Eq-4 triple are attributed with the clean question's "
                 "answer y as the target; the clean images form D_correct and the edited ones D_incorrect, so the "
                 "negative heads are those that read the edited region (an analysis; not for improving accuracy).",
}


@dataclasses.dataclass(frozen=True)
class Input:
    """One attributed (image, question, target answer)."""

    key: str  # "<dataset>:<qid>:<role>", the row key of the attribution logs
    question_key: str  # "<dataset>:<qid>"
    role: str  # clean | edited
    image: str
    question: str
    answer: str  # yes | no: the target y of Eq 6
    subtype: str | None


Unit = list[Input]


def question_key(record: VQARecord) -> str:
    return f"{record.dataset}:{record.qid}"


def _input(record: VQARecord, role: str, image: str, answer: str) -> Input:
    qk = question_key(record)
    return Input(f"{qk}:{role}", qk, role, image, record.question, answer, record.subtype)


def flipped(answer: str) -> str:
    return {"yes": "no", "no": "yes"}[answer]


def edited_answer(pair: EditedPair) -> str:
    """The true answer of the original question on the edited image."""
    record = pair.record
    if record.dataset == "shapes" and (record.meta or {}).get("scene_spec") is not None:
        from vseam.calibrate.datasets.shapes import counterfactual

        return counterfactual(record).answer  # exact: read off the edited scene
    return flipped(record.answer)  # every yes/no edit is made to flip the answer


def build_units(split: str, records: Sequence[VQARecord], pairs: Sequence[EditedPair] = (),
                triples: Sequence[Triple] = ()) -> list[Unit]:
    """The attribution units of `split`: clean questions (plus edited images), or Eq-4 triples."""
    if split not in SPLITS:
        raise UserError(f"--attribute-on {split}: choose one of {', '.join(SPLITS)}")
    if split == "eq4-pairs":
        return [[_input(t.record, "clean", t.pair.clean_image, t.record.answer),
                 _input(t.record, "edited", t.pair.edited_image, t.record.answer)] for t in triples]
    edited = {question_key(p.record): p for p in pairs} if split == "clean+edited" else {}
    units = []
    for r in records:
        if not r.is_binary:
            continue
        unit = [_input(r, "clean", r.image, r.answer)]
        pair = edited.get(question_key(r))
        if pair is not None:
            unit.append(_input(r, "edited", pair.edited_image, edited_answer(pair)))
        units.append(unit)
    return units


def hold_out(records: Sequence[VQARecord], fraction: float, seed: int) -> tuple[list[VQARecord], list[VQARecord]]:
    """(attribution part, held-out part): a seeded `fraction` of each subtype's questions is held out for
    choosing K and the strength (`--select-on`); both parts keep the records' order."""
    if not 0 < fraction < 1:
        raise UserError(f"--select-on must be in (0, 1), got {fraction}")
    by_subtype: dict[str, list[int]] = {}
    for i, r in enumerate(records):
        by_subtype.setdefault(r.subtype or "-", []).append(i)
    held: set[int] = set()
    for n, (subtype, idx) in enumerate(sorted(by_subtype.items())):
        rng = np.random.default_rng([seed, 5003, n])
        take = int(round(fraction * len(idx)))
        held.update(idx[int(j)] for j in rng.permutation(len(idx))[:take])
    return ([r for i, r in enumerate(records) if i not in held], [r for i, r in enumerate(records) if i in held])


def subsample(items: Sequence, fraction: float, seed: int) -> list:
    """`--fraction`: a seeded random subset (at least one item), kept in the original order (Table 4 studies)."""
    if not 0 < fraction <= 1:
        raise UserError(f"--fraction must be in (0, 1], got {fraction}")
    if fraction >= 1 or not items:
        return list(items)
    n = max(1, int(round(fraction * len(items))))
    keep = set(np.random.RandomState(seed).permutation(len(items))[:n].tolist())
    return [t for i, t in enumerate(items) if i in keep]


def sample_correct(units: Sequence[Unit], correct: dict[str, bool], max_correct: int, seed: int) -> list[Unit]:
    """`--max-correct N`: every unit with an incorrectly answered input, and a seeded sample of at most N of each
    subtype's units whose inputs are all answered correctly; the units keep their order. `correct`: input key ->
    whether the unedited model answers it right. Eq 7 averages each subset, so sampling D_correct leaves its mean
    unbiased; D_incorrect is kept whole."""
    if max_correct < 1:
        raise UserError(f"--max-correct must be >= 1, got {max_correct}")
    right: dict[str, list[int]] = {}
    keep: set[int] = set()
    for i, unit in enumerate(units):
        if all(correct[inp.key] for inp in unit):
            right.setdefault(unit[0].subtype or "-", []).append(i)
        else:
            keep.add(i)
    for n, (subtype, idx) in enumerate(sorted(right.items())):
        rng = np.random.default_rng([seed, 7001, n])
        keep.update(idx[int(j)] for j in rng.permutation(len(idx))[:max_correct])
    return [u for i, u in enumerate(units) if i in keep]


__all__ = ["AGGREGATES", "Input", "SPLITS", "SPLIT_NOTES", "Unit", "build_units", "edited_answer", "hold_out",
           "question_key", "sample_correct", "subsample"]
