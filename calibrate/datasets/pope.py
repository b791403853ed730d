"""POPE (object-hallucination probing): `coco_pope_{random,popular,adversarial}.json`.

Despite the extension the files are JSON Lines, one question per line: question_id, image (a COCO file name),
text (the question), label (yes/no). The split named in the file name becomes the record's subtype; qids are
`<split>-<question_id>` so the three splits can be loaded together.
"""

from __future__ import annotations

import json
import pathlib

from vseam.calibrate.datasets import LoadResult, existing_path, register_dataset, found_image
from vseam.calibrate.records import VQARecord
from vseam.core.errors import UserError

SPLITS = ("random", "popular", "adversarial")


def split_of(path: pathlib.Path) -> str:
    stem = path.stem.lower()
    for s in SPLITS:
        if stem.endswith(s):
            return s
    return stem


def _rows(path: pathlib.Path, result: LoadResult):
    """(line label, row dict or None) for a JSONL file; also accepts a plain JSON list."""
    text = path.read_text()
    if text.lstrip().startswith("["):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as e:
            raise UserError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
        for i, row in enumerate(rows):
            yield f"{path.name}[{i}]", row
        return
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            yield f"{path.name}:{lineno}", json.loads(line)
        except json.JSONDecodeError:
            yield f"{path.name}:{lineno}", None


@register_dataset("pope")
def load_pope(path: str | pathlib.Path, *, images: str | pathlib.Path | None = None) -> LoadResult:
    """Load POPE from one split file or a directory of `coco_pope_*.json` files.

    images: the COCO val2014 images dir; when given, questions whose image is missing are skipped.
    """
    root = existing_path(path, "POPE file or directory")
    img_dir = existing_path(images, "images directory") if images is not None else None
    files = [root] if root.is_file() else sorted(root.glob("*pope*.json")) or sorted(root.glob("*.json*"))
    if not files:
        raise UserError(f"{root}: no POPE files (coco_pope_*.json)")
    result = LoadResult(records=[], source=f"pope {root}")
    for path in files:
        split = split_of(path)
        for where, row in _rows(path, result):
            if not isinstance(row, dict) or not all(k in row for k in ("question_id", "image", "text", "label")):
                result.skip("malformed entry", where)
                continue
            label = str(row["label"]).strip().lower()
            qid = f"{split}-{row['question_id']}"
            if label not in ("yes", "no"):
                result.skip("label is not yes/no", qid)
                continue
            image = found_image(result, img_dir, [str(row["image"])], qid)
            if image is None:
                continue
            result.records.append(
                VQARecord(
                    qid=qid,
                    dataset="pope",
                    question=str(row["text"]).strip(),
                    answer=label,
                    image=image,
                    subtype=split,
                    meta={"question_id": row["question_id"], "split": split, "file": path.name},
                )
            )
    return result
