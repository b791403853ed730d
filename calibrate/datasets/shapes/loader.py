"""`--dataset shapes`: records of the world's splits, their images rendered into a cache on disk."""

from __future__ import annotations

import pathlib
from typing import Any, Sequence

import numpy as np

from vseam.calibrate.datasets import LoadResult, register_dataset
from vseam.calibrate.datasets.shapes.questions import DEFAULT_SPLIT_SIZE, SPLIT_SEEDS, generate
from vseam.calibrate.datasets.shapes.world import WORLD_VERSION, Scene, object_box, render_image, scene_graph
from vseam.calibrate.records import VQARecord
from vseam.core.errors import UserError
from vseam.core.files import atomic_save_image, cache_dir
from vseam.core.vocab import SUBTYPES

DATASET = "shapes"

def default_images_dir() -> pathlib.Path:
    return cache_dir("shapes")


def qid_of(split: str, seed: int, index: int) -> str:
    return f"shapes-{split}-s{seed}-{index:06d}"


def make_record(split: str, index: int, seed: int = 0, images_dir: str | pathlib.Path | None = None, write: bool = True) -> VQARecord:
    """One `VQARecord` (image written to `images_dir`/<split>-s<seed>/<qid>.png unless it is already there)."""
    scene, q = generate(split, index, seed)
    qid = qid_of(split, seed, index)
    folder = pathlib.Path(images_dir or default_images_dir()) / f"v{WORLD_VERSION}" / f"{split}-s{seed}"
    path = folder / f"{qid}.png"
    if write and not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        atomic_save_image(path, render_image(scene))
    graph = scene_graph(scene)
    return VQARecord(
        qid=qid,
        dataset=DATASET,
        question=q.text,
        answer=q.answer,
        image=str(path.resolve()),
        subtype=q.subtype,
        boxes=[object_box(scene.get(t)) for t in q.targets],
        full_answer=q.full_answer,
        scene=graph,
        meta={
            "split": split,
            "index": index,
            "seed": seed,
            "world_version": WORLD_VERSION,
            "targets": list(q.targets),
            "scene_spec": scene.to_json(),
            "edit": q.edit,
            "counterfactual": q.counterfactual,
        },
    )


def load_shapes(
    split: str = "calib",
    limit: int | None = None,
    seed: int = 0,
    images: str | pathlib.Path | None = None,
    subtypes: Sequence[str] | None = None,
    fraction: float | None = None,
    start: int = 0,
    **_ignored: Any,
) -> list[VQARecord]:
    """Records of a split. `limit` (default: DEFAULT_SPLIT_SIZE, 700 = 100 per subtype) counts records after the
    subtype filter; `fraction` keeps that share of them (a seeded subset); images go to `images` or the cache."""
    if subtypes:
        bad = [s for s in subtypes if s not in SUBTYPES]
        if bad:
            raise ValueError(f"shapes: unknown subtype(s) {bad}; choose from {list(SUBTYPES)}")
    n = int(limit) if limit is not None else DEFAULT_SPLIT_SIZE.get(split, 700)
    wanted = set(subtypes or SUBTYPES)
    per_cycle = sum(1 for s in SUBTYPES if s in wanted)
    records, i = [], start
    while len(records) < n:
        if SUBTYPES[i % len(SUBTYPES)] in wanted:
            records.append(make_record(split, i, seed, images))
        i += 1
        if per_cycle == 0:
            break
    if fraction is not None:
        if not 0 < fraction <= 1:
            raise ValueError(f"shapes: --fraction must be in (0, 1], got {fraction}")
        rng = np.random.default_rng([seed, 7919])
        keep = sorted(rng.choice(len(records), size=max(1, int(round(fraction * len(records)))), replace=False))
        records = [records[k] for k in keep]
    return records


@register_dataset(DATASET)
def load_shapes_dataset(
    path: str | None = None,
    *,
    images: str | pathlib.Path | None = None,
    split: str | None = None,
    size: int | str | None = None,
    world_seed: int | str = 0,
) -> LoadResult:
    """`--dataset shapes`: a split of the synthetic world, rendered into `images` (default: the vseam cache).

    path (`--data`):  the split name — calib (default; for calibration), test (held out: the model card),
                      test2 (held out: the demo's evaluation), val (checkpoint selection while training) or train
    split:            the same, as a `--dataset-option split=...`
    size:             records generated for the split (default 700 = 100 per subtype; the shared --limit /
                      --fraction / --subtypes options then select from them)
    world_seed:       generator seed (a different world sample with the same vocabulary)
    """
    name = split or (str(path) if path is not None else "calib")
    name = pathlib.Path(name).name if name not in SPLIT_SEEDS else name
    if name not in SPLIT_SEEDS:
        raise UserError(f"shapes: --data/split must be one of {', '.join(SPLIT_SEEDS)} (the world's splits), got {path or split!r}")
    try:
        n = int(size) if size is not None else DEFAULT_SPLIT_SIZE.get(name, 700)
        seed = int(world_seed)
    except ValueError as e:
        raise UserError(f"shapes: size and world_seed must be integers ({e})") from None
    records = [make_record(name, i, seed, images) for i in range(n)]
    return LoadResult(records=records, source=f"shapes ({name}, {n} records, world v{WORLD_VERSION}, seed {seed})")


def scene_of(record: VQARecord) -> Scene:
    spec = (record.meta or {}).get("scene_spec")
    if spec is None:
        raise ValueError(f"record {record.qid}: not a shapes record (meta.scene_spec missing)")
    return Scene.from_json(spec)
