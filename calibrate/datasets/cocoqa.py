"""COCO-QA: the original release (four parallel text files per split) and V-SEAM's CSV subsets.

Original release: a directory with `questions.txt`, `answers.txt`, `img_ids.txt`, `types.txt`, one item per line
(types: 0 object, 1 number, 2 color, 3 location), usually in `train/` and `test/` sub-directories.
V-SEAM CSVs (`color_coco_qa.csv`, `count_coco_qa.csv`, `location_coco_qa.csv`): an unnamed index column, then the
COCO image id, the question and the answer; the subtype comes from the file name.
"""

from __future__ import annotations

import csv
import pathlib

from vseam.calibrate.datasets import LoadResult, existing_path, register_dataset, found_image
from vseam.calibrate.records import VQARecord
from vseam.core.errors import UserError

TYPES = {"0": "object", "1": "number", "2": "color", "3": "location"}
#: V-SEAM CSV file-name prefix -> subtype
CSV_SUBTYPES = {"color": "color", "count": "number", "number": "number", "location": "location", "object": "object"}
RELEASE_FILES = ("questions.txt", "answers.txt", "img_ids.txt", "types.txt")


def image_candidates(image_id: str) -> list[str]:
    try:
        n = int(image_id)
    except ValueError:
        return [image_id]
    return [f"{n:012d}.jpg", f"COCO_train2014_{n:012d}.jpg", f"COCO_val2014_{n:012d}.jpg"]


def _record(qid, question, answer, image_id, subtype, img_dir, result, meta) -> None:
    question, answer, image_id = question.strip(), answer.strip().lower(), image_id.strip()
    if not question or not answer or not image_id:
        result.skip("malformed entry", qid)
        return
    image = found_image(result, img_dir, image_candidates(image_id), qid)
    if image is None:
        return
    result.records.append(
        VQARecord(
            qid=qid,
            dataset="cocoqa",
            question=question,
            answer=answer,
            image=image,
            subtype=subtype,
            meta={"image_id": image_id, **meta},
        )
    )


def load_release(directory: pathlib.Path, img_dir, result: LoadResult, split: str) -> None:
    columns = []
    for name in RELEASE_FILES:
        p = directory / name
        if not p.is_file():
            raise UserError(f"{directory}: COCO-QA release file {name} is missing")
        columns.append(p.read_text().splitlines())
    lengths = {name: len(col) for name, col in zip(RELEASE_FILES, columns)}
    if len(set(lengths.values())) != 1:
        raise UserError(f"{directory}: COCO-QA files have different line counts {lengths}")
    for i, (q, a, img, t) in enumerate(zip(*columns)):
        qid = f"{split}-{i}"
        subtype = TYPES.get(t.strip())
        if subtype is None:
            result.skip("unknown question type", qid)
            continue
        _record(qid, q, a, img, subtype, img_dir, result, {"split": split, "line": i + 1})


def load_csv(path: pathlib.Path, img_dir, result: LoadResult) -> None:
    prefix = path.stem.lower().split("_")[0]
    subtype = CSV_SUBTYPES.get(prefix)
    if subtype is None:
        raise UserError(f"{path}: cannot tell the question type from the file name (expected color_/count_/location_)")
    with open(path, newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None or len(header) < 4:
            raise UserError(f"{path}: expected a header with index, image id, question, answer columns")
        for lineno, row in enumerate(reader, 2):
            qid = f"{subtype}-{row[0] if row else lineno}"
            if len(row) < 4:
                result.skip("malformed entry", f"{path.name}:{lineno}")
                continue
            _record(qid, row[2], row[3], row[1], subtype, img_dir, result, {"file": path.name, "index": row[0]})


@register_dataset("cocoqa")
def load_cocoqa(
    path: str | pathlib.Path, *, images: str | pathlib.Path | None = None, split: str = "test"
) -> LoadResult:
    """Load COCO-QA from a V-SEAM CSV, a directory of them, or an original release directory.

    split:  for a release directory with `train/` and `test/` sub-directories, which one to read
    images: the COCO images dir; when given, questions whose image is missing are skipped
    """
    root = existing_path(path, "COCO-QA file or directory")
    img_dir = existing_path(images, "images directory") if images is not None else None
    result = LoadResult(records=[], source=f"cocoqa {root}")
    if root.is_file():
        load_csv(root, img_dir, result)
    elif (root / "questions.txt").is_file():
        load_release(root, img_dir, result, root.name)
    elif (root / split / "questions.txt").is_file():
        load_release(root / split, img_dir, result, split)
    else:
        csvs = sorted(root.glob("*.csv"))
        if not csvs:
            raise UserError(f"{root}: no COCO-QA files (questions.txt/answers.txt/img_ids.txt/types.txt or *.csv)")
        for p in csvs:
            load_csv(p, img_dir, result)
    return result
