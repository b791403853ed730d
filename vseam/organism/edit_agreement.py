"""How close stage 1's SAM-based edits come to the `shapes` world's exact counterfactuals.

    .venv/bin/python -m vseam.organism.edit_agreement [--n 12] [--split calib] [--json FILE]

On real photos there is no ground truth for an edit; in the shapes world there is: the scene re-rendered with the
one change (`shapes.counterfactual`). For the records a mask-based editor of stage 1 can handle — recolor (color
questions), remove (object questions answered yes), mirror (spatial questions) — this runs the same steps as
`vseam edit` (SAM mask of the record's box -> editor, with the dataset's counterfactual question) and compares:

* mask IoU       SAM's mask vs the exact mask of the edited object (before the edit)
* changed IoU    pixels the editor changed vs pixels the exact re-render changed (|Δ| > 24 in any channel)
* agreement      share of the exact edit's changed pixels where the editor's result is within 24 of the truth
* outside        share of pixels outside the exact changed region that the editor altered
* hit target     share of edits whose SAM mask overlaps the region the exact edit changes (right object)

Editors that cannot make an edit (e.g. no mirror position flips the relation) are counted as failed.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np
from PIL import Image

#: editor -> which records it is the stage-1 editor for
EDITOR_RECORDS = {
    "recolor": lambda r: r.subtype == "color",
    "remove": lambda r: r.subtype in ("animal", "vehicle", "indoor") and r.answer == "yes",
    "mirror": lambda r: r.subtype == "spatial",
}


def compare(n: int = 12, split: str = "calib", images: str | None = None, progress: bool = True) -> dict:
    from tqdm import tqdm

    from vseam.calibrate.datasets import shapes
    from vseam.calibrate.edit import dataset_counterfactual
    from vseam.calibrate.editors import EditError, default_editors, masks_for
    from vseam.calibrate.masks import BoxSegmenter, iou

    pool = shapes.load_shapes(split, limit=max(70, 14 * n), images=images)
    editors = default_editors()
    segmenter = BoxSegmenter()
    rows = []
    todo = [(name, r) for name, keep in EDITOR_RECORDS.items() for r in [x for x in pool if keep(x)][:n]]
    for name, r in tqdm(todo, desc="SAM edits vs exact re-renders", disable=not progress):
        editor = editors[name]
        cf = dataset_counterfactual(r)
        with Image.open(r.image) as im:
            clean = im.convert("RGB")
        exact = shapes.counterfactual(r)
        target = shapes.object_mask(shapes.scene_of(r).get(exact.edit["object"]))
        row = {"editor": name, "qid": r.qid, "subtype": r.subtype}
        try:
            mask, _ = masks_for(editor, r, cf, clean, segmenter.segment)
            edited = editor(clean, mask, r, cf)
        except EditError as e:
            rows.append({**row, "error": str(e)})
            continue
        row.update(shapes.compare_edit(r, edited))
        row["mask_iou"] = float(iou(mask, target))
        row["target_hit"] = bool((mask & exact.changed).any())
        rows.append(row)
    summary = {}
    for name in EDITOR_RECORDS:
        ok = [x for x in rows if x["editor"] == name and "error" not in x]
        failed = [x for x in rows if x["editor"] == name and "error" in x]
        summary[name] = {
            "n": len(ok) + len(failed),
            "failed": len(failed),
            **{k: float(np.mean([x[k] for x in ok])) if ok else None
               for k in ("mask_iou", "changed_iou", "region_agreement", "outside_changed", "target_hit")},
        }
    return {"split": split, "per_editor": summary, "rows": rows}


def table(result: dict) -> str:
    lines = ["| editor (subtype) | n | failed | SAM mask IoU | changed-pixel IoU | agreement in exact region | "
             "changed outside | hit target |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    what = {"recolor": "color", "remove": "object, yes", "mirror": "spatial"}

    def f(v):
        return "-" if v is None else f"{v:.2f}"

    for name, s in result["per_editor"].items():
        lines.append(f"| {name} ({what[name]}) | {s['n']} | {s['failed']} | {f(s['mask_iou'])} | {f(s['changed_iou'])} | "
                     f"{f(s['region_agreement'])} | {f(s['outside_changed'])} | {f(s['target_hit'])} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m vseam.organism.edit_agreement", description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=12, help="records per editor")
    p.add_argument("--split", default="calib")
    p.add_argument("--images", help="where the split's images are written (default: the vseam cache)")
    p.add_argument("--json", help="write every number here")
    args = p.parse_args(argv)
    res = compare(args.n, args.split, args.images)
    print(table(res))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(res, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
