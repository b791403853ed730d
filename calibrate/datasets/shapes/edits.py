"""Exact counterfactuals of `shapes` records (the scene re-rendered with the one change that flips the answer), and
how close another edit (e.g. stage 1's SAM mask + editor) comes to one."""

from __future__ import annotations

import dataclasses
import pathlib

import numpy as np
from PIL import Image

from vseam.calibrate.datasets.shapes.loader import scene_of
from vseam.calibrate.datasets.shapes.oracle import answer_from_graph
from vseam.calibrate.datasets.shapes.questions import apply_edit
from vseam.calibrate.datasets.shapes.world import Scene, render, scene_graph
from vseam.calibrate.records import EditedPair, VQARecord

@dataclasses.dataclass
class ExactEdit:
    """The exact edit of a record: the scene re-rendered with the one change that flips the answer."""

    question: str  # counterfactual question (the semantic unit swapped)
    answer: str  # answer of the ORIGINAL question on the edited image
    image: Image.Image
    scene: Scene
    graph: dict
    changed: np.ndarray  # H×W bool: pixels that differ from the clean render
    edit: dict


def counterfactual(record: VQARecord) -> ExactEdit:
    scene = scene_of(record)
    edit = record.meta["edit"]
    edited = apply_edit(scene, edit)
    clean, cf = render(scene), render(edited)
    graph = scene_graph(edited)
    return ExactEdit(
        question=record.meta["counterfactual"],
        answer=answer_from_graph(graph, record.subtype, record.question),
        image=Image.fromarray(cf, "RGB"),
        scene=edited,
        graph=graph,
        changed=(clean != cf).any(axis=2),
        edit=edit,
    )


def exact_pair(record: VQARecord, out_dir: str | pathlib.Path) -> EditedPair:
    """An `EditedPair` whose edited image is the exact re-render (editor "render"), written under `out_dir`."""
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cf = counterfactual(record)
    img_path, mask_path = out / f"{record.qid}.edited.png", out / f"{record.qid}.mask.png"
    cf.image.save(img_path)
    Image.fromarray(cf.changed.astype(np.uint8) * 255, "L").save(mask_path)
    return EditedPair(
        record=record,
        counterfactual=cf.question,
        clean_image=record.image,
        edited_image=str(img_path.resolve()),
        mask=str(mask_path.resolve()),
        editor="render",
        quality={"changed_pixels": int(cf.changed.sum())},
    )


def compare_edit(record: VQARecord, edited: Image.Image | np.ndarray | str, tol: int = 24) -> dict:
    """How close an edit (e.g. stage 1's SAM mask + editor) comes to the exact counterfactual of `record`.

    changed_iou:       IoU of the pixel sets each edit changed (a pixel is changed when a channel moves > tol)
    pixel_agreement:   share of all pixels within tol of the exact edited image
    region_agreement:  the same share inside the exact edit's changed region
    outside_changed:   share of pixels outside the exact changed region that the edit altered
    """
    if isinstance(edited, (str, pathlib.Path)):
        edited = Image.open(edited)
    e = np.asarray(edited.convert("RGB") if isinstance(edited, Image.Image) else edited).astype(np.int16)
    clean = render(scene_of(record)).astype(np.int16)
    if e.shape != clean.shape:
        raise ValueError(f"record {record.qid}: edited image is {e.shape[1]}×{e.shape[0]}, the scene is {clean.shape[1]}×{clean.shape[0]}")
    cf = counterfactual(record)
    exact = np.asarray(cf.image).astype(np.int16)
    theirs = (np.abs(e - clean) > tol).any(axis=2)
    ours = (np.abs(exact - clean) > tol).any(axis=2)
    union = (theirs | ours).sum()
    agree = (np.abs(e - exact) <= tol).all(axis=2)
    return {
        "changed_iou": float((theirs & ours).sum() / union) if union else 1.0,
        "pixel_agreement": float(agree.mean()),
        "region_agreement": float(agree[ours].mean()) if ours.any() else 1.0,
        "outside_changed": float(theirs[~ours].mean()),
    }
