"""GQA question entries as both GQA formats write them (official files and V-SEAM's subsets): reading the file,
its entries, the image file names, the objects the functional program mentions, and the record built from an
entry. Shared by `vseam.calibrate.datasets.gqa` and `vseam.calibrate.datasets.vseam_gqa`.
"""

from __future__ import annotations

import json
import pathlib
import re
from typing import Any

from vseam.calibrate.records import Box, VQARecord
from vseam.core.errors import UserError

#: "name (123)" / "name (-)" in program arguments; group 1 = name, group 2 = object id or "-"
_ARG_OBJ = re.compile(r"^\s*(.*?)\s*\(([^()]*)\)\s*$")

IMAGE_SUFFIXES = (".jpg", ".png", ".jpeg")


def read_json(path: pathlib.Path) -> Any:
    try:
        with open(path) as fh:
            return json.load(fh)
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    except OSError as e:
        raise UserError(f"{path}: cannot read ({e.strerror})") from None


def entries_of(data: Any, path: pathlib.Path) -> list[tuple[str | None, Any]]:
    """(key, entry) pairs of a GQA-style file: a dict keyed by question id, or a list of entries."""
    if isinstance(data, dict):
        return list(data.items())
    if isinstance(data, list):
        return [(None, e) for e in data]
    raise UserError(f"{path}: expected a list of questions or an object keyed by question id")


def image_candidates(image_id: str) -> list[str]:
    return [f"{image_id}{s}" for s in IMAGE_SUFFIXES]


def program_ops(entry: dict) -> list[tuple[str, str]]:
    """The functional program as (operation, argument) pairs."""
    ops = []
    for op in entry.get("semantic") or []:
        if isinstance(op, dict):
            ops.append((str(op.get("operation", "")), str(op.get("argument", ""))))
    return ops


def program_object_ids(entry: dict) -> list[str]:
    """Object ids mentioned by the program, in order of first mention ("-" = not in the image, left out)."""
    out: list[str] = []
    for _, arg in program_ops(entry):
        m = _ARG_OBJ.match(arg)
        if not m:
            continue
        for oid in m.group(2).split(","):
            oid = oid.strip()
            if oid and oid != "-" and oid not in out:
                out.append(oid)
    return out


def arg_object(arg: str) -> tuple[str, str | None]:
    """(name, object id or None) of a program argument like "dog (123)" or "dog (-)"."""
    m = _ARG_OBJ.match(arg)
    if not m:
        return arg.strip(), None
    oid = m.group(2).strip()
    return m.group(1), (None if oid in ("", "-") else oid)


def make_record(
    qid: str,
    entry: dict,
    subtype: str | None,
    boxes: list[Box],
    image: str,
    *,
    scene: dict | None = None,
    meta: dict | None = None,
) -> VQARecord:
    return VQARecord(
        qid=str(qid),
        dataset="gqa",
        question=str(entry["question"]).strip(),
        answer=str(entry["answer"]).strip().lower(),
        image=image,
        subtype=subtype,
        boxes=boxes,
        full_answer=entry.get("fullAnswer"),
        scene=scene,
        meta={
            "image_id": str(entry.get("imageId", "")),
            "program": entry.get("semanticStr") or "",
            "types": entry.get("types") or {},
            **(meta or {}),
        },
    )
