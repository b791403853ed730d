"""A small GQA dataset in V-SEAM's released subset format, drawn by code (no binary files in the repo).

`write_vseam_gqa(out)` writes `out/questions/{Color,Material,Animal,Vehicle,Spatial,Action}.json` (Color as an
object keyed by question id, the others as lists, like the real subsets) and `out/images/<imageId>.jpg`: flat
scenes with one or two objects drawn inside their `object_positions` boxes.
"""

from __future__ import annotations

import json
import pathlib

import numpy as np
from PIL import Image, ImageDraw

W, H = 96, 80
COLORS = {"red": (210, 30, 30), "blue": (30, 60, 210), "green": (40, 170, 60), "yellow": (220, 200, 40)}


def _scene(seed: int, boxes: list[tuple[int, int, int, int]], fills: list[tuple[int, int, int]]) -> Image.Image:
    rng = np.random.RandomState(seed)
    base = np.full((H, W, 3), 150, dtype=np.int16) + rng.randint(-12, 12, size=(H, W, 3))
    img = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for (x, y, w, h), fill in zip(boxes, fills):
        draw.rectangle([x, y, x + w - 1, y + h - 1], fill=fill)
    return img


def _entry(qid: str, image_id: str, question: str, answer: str, full: str, names: list[str], boxes, detailed: str):
    ops = [{"operation": "select", "dependencies": [], "argument": f"{names[0]} ({int(qid[-3:]) + 1000})"}]
    return {
        "question": question,
        "imageId": image_id,
        "answer": answer,
        "fullAnswer": full,
        "isBalanced": True,
        "types": {"detailed": detailed, "semantic": "attr", "structural": "verify"},
        "semantic": ops,
        "question_id": qid,
        "relevant_objects": names,
        "object_positions": [{"x": x, "y": y, "w": w, "h": h} for x, y, w, h in boxes],
    }


def write_vseam_gqa(out: str | pathlib.Path, per_subtype: int = 2) -> tuple[pathlib.Path, pathlib.Path]:
    """Write the fixture; returns (questions dir, images dir)."""
    out = pathlib.Path(out)
    qdir, idir = out / "questions", out / "images"
    qdir.mkdir(parents=True, exist_ok=True)
    idir.mkdir(parents=True, exist_ok=True)
    files: dict[str, list] = {k: [] for k in ("Color", "Material", "Animal", "Vehicle", "Spatial", "Action")}
    n = 0
    for i in range(per_subtype):
        color = list(COLORS)[i % len(COLORS)]
        specs = [
            ("Color", f"Is the box {color}?", "Yes", f"The box is {color}.", ["box"],
             [(30 + 4 * i, 20, 36, 30)], [COLORS[color]], "verifyAttr"),
            ("Material", "Is the table made of wood?", "Yes", "The table is made of wood.", ["table"],
             [(16, 36, 60, 24)], [(140, 90, 40)], "verifyAttr"),
            ("Animal", "Is there a dog in this picture?", "Yes", "Yes, there is a dog in this picture.", ["dog"],
             [(20 + 6 * i, 18, 30, 34)], [(90, 60, 30)], "exist"),
            ("Vehicle", "Is there a car in this picture?", "Yes", "Yes, there is a car in this picture.", ["car"],
             [(40, 30 + 4 * i, 44, 22)], [(30, 60, 200)], "exist"),
            ("Spatial", "Is the cup to the left of the plate?", "Yes", "Yes, the cup is to the left of the plate.",
             ["cup", "plate"], [(8, 30, 20, 20), (60, 28, 28, 24)], [(200, 40, 40), (230, 230, 230)], "relS"),
            ("Action", "Is the man holding the bag?", "Yes", "Yes, the man is holding the bag.", ["man", "bag"],
             [(20, 10, 24, 60), (40, 40, 20, 20)], [(60, 60, 60), (200, 160, 40)], "relO"),
        ]
        for fname, q, a, full, names, boxes, fills, detailed in specs:
            qid = f"9{n:05d}"
            image_id = f"23{n:05d}"
            _scene(n, boxes, fills).save(idir / f"{image_id}.jpg", quality=95)
            files[fname].append(_entry(qid, image_id, q, a, full, names, boxes, detailed))
            n += 1
    for fname, entries in files.items():
        data = {e["question_id"]: e for e in entries} if fname == "Color" else entries
        (qdir / f"{fname}.json").write_text(json.dumps(data, indent=2))
    return qdir, idir
