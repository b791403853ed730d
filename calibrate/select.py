"""VQA triple selection (Eq 4): keep an edited pair when the model answers the question right on the clean image
and wrong on the edited one,

    f(x, z) = y   and   f(x, z~) != y,

with f the model's yes/no answer under the Table-8 binary prompt (the likelier of the two answer tokens), computed
in batches with the HF reference engine (`vseam.core.engine.HeadEngine.binary`). Scores are cached in a done-log keyed
by the pair's question and image contents, so re-runs only score new or changed pairs.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import pathlib
from typing import Sequence

from PIL import Image

from vseam.calibrate.records import EditedPair, Triple
from vseam.calibrate.rundir import DoneLog, RunDir


def predicted(p_yes: float, p_no: float) -> str:
    """The model's binary answer: the likelier of the two answer tokens."""
    return "yes" if p_yes >= p_no else "no"


def eq4(answer: str, pred_clean: str, pred_edited: str) -> bool:
    """Eq 4: right on the clean image, wrong on the edited one."""
    return pred_clean == answer and pred_edited != answer


def pair_key(pair: EditedPair) -> str:
    """Identity of a pair for the score cache: question + both images' bytes."""
    h = hashlib.sha256()
    h.update(pair.record.question.encode())
    for path in (pair.clean_image, pair.edited_image):
        h.update(b"\0")
        h.update(pathlib.Path(path).read_bytes())
    return f"{pair.record.qid}:{h.hexdigest()[:20]}"


@dataclasses.dataclass
class SelectionSummary:
    per_subtype: dict[str, dict[str, int]]  # subtype -> {"pairs", "clean_correct", "kept"}
    skipped: dict[str, int]  # reason -> count
    scored_this_run: int

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @property
    def kept(self) -> int:
        return sum(v["kept"] for v in self.per_subtype.values())

    def table(self) -> str:
        lines = [f"{'subtype':<12}{'pairs':>7}{'clean ok':>10}{'kept':>7}"]
        for sub, c in sorted(self.per_subtype.items()):
            lines.append(f"{sub:<12}{c['pairs']:>7}{c['clean_correct']:>10}{c['kept']:>7}")
        for reason, n in self.skipped.items():
            lines.append(f"skipped {n} ({reason})")
        return "\n".join(lines)


def _open(path: str) -> Image.Image:
    with Image.open(path) as im:
        return im.convert("RGB")


def score_pairs(engine, pairs: Sequence[EditedPair], cache: DoneLog | None, batch_size: int, progress: bool,
                pool=None) -> dict:
    """key -> cached scores {p_yes_clean, p_no_clean, p_yes_edited, p_no_edited}; scores what is missing (on the
    workers of `pool` when given: a `vseam.calibrate.distributed.RayPool`)."""
    from vseam.calibrate.distributed import LocalRunner

    keys = [pair_key(p) for p in pairs]
    have = {k: cache.get(k) for k in keys if cache is not None and k in cache}
    todo = [(k, p) for k, p in zip(keys, pairs) if k not in have]
    todo = list({k: (k, p) for k, p in todo}.values())  # the same pair twice is scored once
    bar = None
    if progress and todo:
        from tqdm import tqdm

        bar = tqdm(total=len(todo), desc="eq4", unit="pair", dynamic_ncols=True)
    chunks = [todo[start : start + batch_size] for start in range(0, len(todo), batch_size)]
    jobs = (([_open(p.clean_image) for _, p in chunk] + [_open(p.edited_image) for _, p in chunk],
             [p.record.question for _, p in chunk] * 2, None) for chunk in chunks)
    for chunk, (yes, no) in zip(chunks, (pool or LocalRunner(engine)).map("binary", jobs)):
        yes, no = yes.tolist(), no.tolist()
        n = len(chunk)
        for i, (k, p) in enumerate(chunk):
            row = {
                "id": k,
                "qid": p.record.qid,
                "p_yes_clean": yes[i],
                "p_no_clean": no[i],
                "p_yes_edited": yes[n + i],
                "p_no_edited": no[n + i],
            }
            if cache is not None:
                cache.append(row)
            have[k] = row
        if bar is not None:
            bar.update(n)
    if bar is not None:
        bar.close()
    return {"scores": have, "scored": len(todo), "keys": keys}


def select_triples(
    engine,
    pairs: Sequence[EditedPair],
    *,
    cache: DoneLog | None = None,
    batch_size: int = 8,
    progress: bool = True,
    eq4_filter: bool = True,
    pool=None,
) -> tuple[list[Triple], SelectionSummary]:
    """Eq-4 triples among `pairs` (yes/no questions only), with counts per subtype; without `eq4_filter` (a
    debugging aid for models that never satisfy Eq 4) every yes/no pair is kept as a triple. `pool`: score the
    pairs on Ray workers (`vseam.calibrate.distributed.RayPool`)."""
    skipped: collections.Counter = collections.Counter()
    binary = []
    for p in pairs:
        if p.record.answer not in ("yes", "no"):
            skipped["not a yes/no question"] += 1
        else:
            binary.append(p)
    res = score_pairs(engine, binary, cache, batch_size, progress, pool)
    counts: dict[str, dict[str, int]] = {}
    triples = []
    for key, p in zip(res["keys"], binary):
        s = res["scores"][key]
        c = counts.setdefault(p.record.subtype or "-", {"pairs": 0, "clean_correct": 0, "kept": 0})
        c["pairs"] += 1
        y = p.record.answer
        pred_clean = predicted(s["p_yes_clean"], s["p_no_clean"])
        pred_edited = predicted(s["p_yes_edited"], s["p_no_edited"])
        c["clean_correct"] += pred_clean == y
        if eq4(y, pred_clean, pred_edited) or not eq4_filter:
            c["kept"] += 1
            triples.append(
                Triple(
                    pair=p,
                    p_clean=float(s[f"p_{y}_clean"]),
                    p_edited=float(s[f"p_{y}_edited"]),
                    pred_clean=pred_clean,
                    pred_edited=pred_edited,
                )
            )
    return triples, SelectionSummary(per_subtype=counts, skipped=dict(skipped), scored_this_run=res["scored"])


def selection_run(out_dir: str | pathlib.Path, model_dir: str | pathlib.Path, *, restart: bool = False) -> RunDir:
    """A run directory for one model's Eq-4 scores (its config pins the model fingerprint)."""
    from vseam.core.families import fingerprint_of

    fp = fingerprint_of(model_dir)
    return RunDir(out_dir, {"model": fp.model_dump(mode="json"), "prompt": "binary (Table 8)"}, restart=restart)


__all__ = ["SelectionSummary", "eq4", "pair_key", "predicted", "select_triples", "selection_run"]
