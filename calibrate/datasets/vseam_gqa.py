"""V-SEAM's released GQA subsets: one JSON file per subtype (`Color.json`, `Material.json`, `Animal.json`,
`Vehicle.json`, `Indoor.json`, `Spatial.json`, `Action.json`).

Each file is a list of GQA question entries, or an object keyed by question id, rewritten by V-SEAM into yes/no
questions and extended with `object_positions` (boxes of the objects involved, in the order the functional program
mentions them), `involved_objects` / `relevant_objects` (their names) and usually `question_id`. Loaded through the
`gqa` dataset (format detected automatically).
"""

from __future__ import annotations

import pathlib

from vseam.calibrate.datasets import LoadResult, found_image
from vseam.calibrate.datasets.gqa_entries import entries_of, image_candidates, make_record, program_object_ids, read_json
from vseam.calibrate.records import Box
from vseam.core.vocab import SUBTYPES
from vseam.core.errors import UserError


def subset_subtype(path: pathlib.Path) -> str | None:
    """The subtype a subset file is named after (`Color.json` -> "color"), else None."""
    stem = path.stem.lower()
    return stem if stem in SUBTYPES else None


def subset_files(directory: pathlib.Path) -> list[pathlib.Path]:
    """The V-SEAM subset files in a directory, in SUBTYPES order."""
    found = {subset_subtype(p): p for p in directory.glob("*.json") if subset_subtype(p)}
    return [found[s] for s in SUBTYPES if s in found]


def _boxes(entry: dict) -> list[Box]:
    positions = entry.get("object_positions")
    if positions is None:
        return []
    if not isinstance(positions, list):
        raise ValueError("object_positions is not a list")
    boxes = [Box.from_dict(p) for p in positions]
    if any(b.w <= 0 or b.h <= 0 for b in boxes):
        raise ValueError("empty box")
    return boxes


def load_subsets(
    files: list[pathlib.Path],
    scene_graphs: dict | None,
    images: pathlib.Path | None,
    result: LoadResult,
    *,
    subtype: str | None = None,
) -> None:
    seen: set[str] = set()
    for path in files:
        file_subtype = subtype or subset_subtype(path)
        if file_subtype is None:
            raise UserError(
                f"{path}: cannot tell the subtype from the file name; name it after one of {', '.join(SUBTYPES)} "
                "or pass subtype=..."
            )
        if file_subtype not in SUBTYPES:
            raise UserError(f"{path}: unknown subtype {file_subtype!r}; expected one of {', '.join(SUBTYPES)}")
        for key, entry in entries_of(read_json(path), path):
            qid = entry.get("question_id", key) if isinstance(entry, dict) else key
            if qid is None:
                qid = f"{path.name}[{len(seen)}]"
            qid = str(qid)
            if not isinstance(entry, dict) or not all(k in entry for k in ("question", "answer", "imageId")):
                result.skip("malformed entry", qid)
                continue
            if qid in seen:
                result.skip("duplicate question id", qid)
                continue
            seen.add(qid)
            try:
                boxes = _boxes(entry)
            except (KeyError, TypeError, ValueError):
                result.skip("malformed box", qid)
                continue
            image_id = str(entry["imageId"])
            image = found_image(result, images, image_candidates(image_id), qid)
            if image is None:
                continue
            ids = program_object_ids(entry)
            scene = None
            graph = (scene_graphs or {}).get(image_id)
            if graph is not None:
                objects = graph.get("objects") or {}
                scene = {
                    "width": graph.get("width"),
                    "height": graph.get("height"),
                    "objects": {i: objects[i] for i in ids if i in objects},
                }
            names = entry.get("involved_objects") or entry.get("relevant_objects") or []
            meta = {"objects": [str(n) for n in names], "object_ids": ids, "subset": path.name}
            result.records.append(make_record(qid, entry, file_subtype, boxes, image, scene=scene, meta=meta))
