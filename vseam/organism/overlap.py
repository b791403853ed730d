"""Paper Table 14 on the organism, with the planted prior: where do a profile's positive and negative heads look?

    .venv/bin/python -m vseam.organism.overlap PROFILE [PROFILE ...] [--weights DIR] [--n 700] [--split test]

For a held-out split's (`test`, or `test2`) object-presence questions whose scene also holds the asked shape's
training *partner* (the co-occurrence prior of `shapes.priors`), each head's attention from the answer position over the
image tokens is split into the share on the asked-about object (the record's box: the shape asked about, or the
same-group shape an edit turns into it) and the share on the prior-carrying partner. The paper's claim (Table 14):
positive heads look at the target; negative heads look elsewhere.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import sys

import numpy as np

from vseam.organism import WEIGHTS_DIR


def prior_records(n: int, images_dir: pathlib.Path, split: str = "test"):
    """(record with the target box, partner box) for the presence questions among the first `n` of a held-out
    split whose scene holds the asked shape's partner."""
    from vseam.calibrate.datasets.shapes import make_record, object_box, scene_of
    from vseam.calibrate.datasets.shapes.oracle import parse_question
    from vseam.calibrate.datasets.shapes.priors import TRAIN_PRIORS
    from vseam.core.vocab import SUBTYPE_LEVEL

    out = []
    for i in range(n):
        rec = make_record(split, i, images_dir=images_dir)
        if SUBTYPE_LEVEL.get(rec.subtype) != "object":
            continue
        asked = parse_question(rec.question)[1]
        partner = TRAIN_PRIORS.partners[asked]
        obj = scene_of(rec).by_shape(partner)
        if obj is not None and obj.id not in rec.meta["targets"]:
            out.append((rec, object_box(obj)))
    return out


def overlap_table(engine, profiles, pairs) -> dict:
    """Mean attention share (%) of each profile's positive / negative heads (and of all heads) on the target and
    on the prior-carrying partner."""
    from vseam.calibrate.report import record_overlap

    grid = engine.family.image_grid(engine.model.config)
    on_target, on_prior = [], []
    for rec, partner_box in pairs:
        t = record_overlap(engine, rec, grid)
        p = record_overlap(engine, dataclasses.replace(rec, boxes=[partner_box]), grid)
        if t is not None and p is not None:
            on_target.append(t), on_prior.append(p)
    target, prior = np.stack(on_target), np.stack(on_prior)  # [N, L, H]
    table = {"questions": len(on_target), "all heads": {"target": float(100 * target.mean()),
                                                          "prior": float(100 * prior.mean())}, "profiles": {}}
    for prof in profiles:
        row = {}
        for set_name in ("positive", "negative"):
            heads = getattr(prof, set_name)
            if heads:
                row[set_name] = {
                    "heads": len(heads),
                    "target": float(100 * np.mean([target[:, h.layer, h.head].mean() for h in heads])),
                    "prior": float(100 * np.mean([prior[:, h.layer, h.head].mean() for h in heads])),
                }
        table["profiles"][prof.name] = row
    return table


def lines(table: dict) -> list[str]:
    out = [f"{table['questions']} held-out presence questions whose scene holds the asked shape's training partner",
           "", "| profile | heads | on the asked-about object | on the prior's partner object |", "|---|---|---|---|"]
    for name, row in table["profiles"].items():
        for set_name, r in row.items():
            out.append(f"| {name} | {set_name} ({r['heads']}) | {r['target']:.1f}% | {r['prior']:.1f}% |")
    a = table["all heads"]
    out.append(f"| (every head) | all | {a['target']:.1f}% | {a['prior']:.1f}% |")
    return out


def main(argv: list[str] | None = None) -> int:
    import tempfile

    import torch

    from vseam.calibrate.datasets.shapes import EVAL_SPLITS
    from vseam.core.engine import HeadEngine
    from vseam.head_profiles import load_profile

    p = argparse.ArgumentParser(prog="python -m vseam.organism.overlap", description=__doc__.split("\n")[0])
    p.add_argument("profiles", nargs="+")
    p.add_argument("--weights", default=str(WEIGHTS_DIR))
    p.add_argument("--n", type=int, default=700)
    p.add_argument("--split", choices=EVAL_SPLITS, default="test", help="the held-out split read")
    p.add_argument("--json")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    engine = HeadEngine.from_pretrained(args.weights)
    with tempfile.TemporaryDirectory() as tmp:
        table = overlap_table(engine, [load_profile(x) for x in args.profiles], prior_records(args.n, pathlib.Path(tmp), args.split))
    print("\n".join(lines(table)))
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(table, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
