"""GQA: the official question files (`*_balanced_questions.json`) with scene graphs (`*_sceneGraphs.json`), and
V-SEAM's released subsets (`vseam.calibrate.datasets.vseam_gqa`), both under the dataset name `gqa`.

Official files hold every kind of GQA question; this loader keeps the binary ones that belong to one of the seven
V-SEAM subtypes, read from each question's functional program (`semantic`):

* ``verify color: X`` / ``verify material: X``            -> color / material (box: the selected object)
* ``exist`` on a selected object named in a category list -> animal / vehicle / indoor (box: that object)
* ``verify rel: name,REL,o|s`` with REL spatial / a verb  -> spatial / action (boxes: subject, related object)

Boxes come from the scene graph of the question's image.
"""

from __future__ import annotations

import pathlib
from typing import Iterable

from vseam.calibrate.datasets import LoadResult, existing_path, register_dataset, found_image
from vseam.calibrate.datasets.gqa_entries import (arg_object, entries_of, image_candidates, make_record,
                                                  program_object_ids, program_ops, read_json)
from vseam.calibrate.datasets.vocab import category_of, is_action
from vseam.calibrate.datasets.vseam_gqa import load_subsets, subset_files
from vseam.calibrate.records import Box
from vseam.core.errors import UserError

def classify(entry: dict) -> tuple[str, list[str]] | None:
    """(subtype, ids of the objects to edit, in order) of an official binary GQA question, or None."""
    ops = program_ops(entry)
    if not ops:
        return None
    last_op, last_arg = ops[-1]
    first_select = next(((a for o, a in ops if o == "select")), None)
    if first_select is None:
        return None
    sel_name, sel_id = arg_object(first_select)
    ids = [sel_id] if sel_id else []
    if last_op in ("verify color", "verify material") and len([o for o, _ in ops if o == "select"]) == 1:
        return last_op.split()[1], ids
    if last_op == "exist" and len([o for o, _ in ops if o == "select"]) == 1:
        cat = category_of(sel_name)
        return (cat, ids) if cat else None
    if last_op == "verify rel":
        parts = last_arg.split(",")
        if len(parts) < 3:
            return None
        rel = parts[1].strip()
        rel_id = arg_object(parts[-1])[1]
        boxes = ids + ([rel_id] if rel_id and rel_id not in ids else [])
        return ("action" if is_action(rel) else "spatial"), boxes
    return None


def _load_scene_graphs(path: str | pathlib.Path | None) -> dict | None:
    if path is None:
        return None
    p = existing_path(path, "scene-graph file")
    data = read_json(p)
    if not isinstance(data, dict):
        raise UserError(f"{p}: expected an object keyed by image id")
    return data


def box_of(obj: dict) -> Box:
    return Box(float(obj["x"]), float(obj["y"]), float(obj["w"]), float(obj["h"]))


def load_official(
    files: Iterable[pathlib.Path], scene_graphs: dict | None, images: pathlib.Path | None, result: LoadResult
) -> None:
    for path in files:
        for key, entry in entries_of(read_json(path), path):
            qid = key if key is not None else (entry.get("question_id") if isinstance(entry, dict) else None)
            if not isinstance(entry, dict) or qid is None or "question" not in entry or "answer" not in entry:
                result.skip("malformed entry", qid if qid is not None else f"{path.name}[?]")
                continue
            if str(entry["answer"]).lower() not in ("yes", "no"):
                result.skip("not a yes/no question", qid)
                continue
            cls = classify(entry)
            if cls is None:
                result.skip("not one of the V-SEAM subtypes", qid)
                continue
            subtype, ids = cls
            image_id = str(entry.get("imageId", ""))
            boxes: list[Box] = []
            scene = None
            if scene_graphs is not None:
                graph = scene_graphs.get(image_id)
                if graph is None:
                    result.skip("image has no scene graph", qid)
                    continue
                objects = graph.get("objects") or {}
                try:
                    boxes = [box_of(objects[i]) for i in ids]
                except (KeyError, TypeError, ValueError):
                    result.skip("object id not in scene graph", qid)
                    continue
                scene = {
                    "width": graph.get("width"),
                    "height": graph.get("height"),
                    "objects": {i: objects[i] for i in program_object_ids(entry) if i in objects},
                }
            image = found_image(result, images, image_candidates(image_id), qid)
            if image is None:
                continue
            result.records.append(make_record(qid, entry, subtype, boxes, image, scene=scene, meta={"object_ids": ids}))


def _detect_format(files: list[pathlib.Path]) -> str:
    """"vseam" when entries carry V-SEAM's `object_positions`, else "official"."""
    for path in files:
        data = read_json(path)
        items = data.values() if isinstance(data, dict) else data if isinstance(data, list) else []
        for entry in items:
            if isinstance(entry, dict):
                return "vseam" if "object_positions" in entry else "official"
    return "official"


def _question_files(path: pathlib.Path) -> list[pathlib.Path]:
    if path.is_file():
        return [path]
    subsets = subset_files(path)
    if subsets:
        return subsets
    files = sorted(path.glob("*_questions.json")) or sorted(
        p for p in path.glob("*.json") if "scenegraph" not in p.name.lower().replace("_", "")
    )
    if not files:
        raise UserError(f"{path}: no GQA question files (*_questions.json or V-SEAM subsets like Color.json)")
    return files


@register_dataset("gqa")
def load_gqa(
    path: str | pathlib.Path,
    *,
    scene_graphs: str | pathlib.Path | None = None,
    images: str | pathlib.Path | None = None,
    format: str = "auto",
    subtype: str | None = None,
) -> LoadResult:
    """Load GQA questions.

    path:         a question file or a directory (official `*_questions.json`, or V-SEAM subsets `Color.json`...)
    scene_graphs: official `*_sceneGraphs.json` (boxes for official questions; optional extra context for subsets)
    images:       the images dir (`<imageId>.jpg`); when given, questions whose image is missing are skipped
    format:       "auto" (detect from the entries), "official" or "vseam"
    subtype:      for a single V-SEAM subset file whose name does not say its subtype
    """
    root = existing_path(path, "GQA question file or directory")
    img_dir = existing_path(images, "images directory") if images is not None else None
    files = _question_files(root)
    fmt = _detect_format(files) if format == "auto" else format
    if fmt not in ("official", "vseam"):
        raise UserError(f"unknown GQA format {format!r}; use auto, official or vseam")
    graphs = _load_scene_graphs(scene_graphs)
    result = LoadResult(records=[], source=f"gqa ({fmt}) {root}")
    if fmt == "vseam":
        load_subsets(files, graphs, img_dir, result, subtype=subtype)
    else:
        load_official(files, graphs, img_dir, result)
    return result
