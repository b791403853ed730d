"""shapes-POPE and shapes-COCO-QA: the two public benchmarks' formats, built on held-out `shapes` scenes, so
`vseam eval pope` and `vseam eval cocoqa` run on the model organism unchanged.

    python -m vseam.calibrate.datasets.shapes.benchmarks --out runs/shapes-bench [--images 150]

* shapes-POPE (`shapes_pope_{random,popular,adversarial}.json`, POPE's JSON Lines: question_id, image, text,
  label): scenes with two objects; per scene the two present shapes ("yes") and two absent ones ("no"), chosen as
  POPE chooses them — at random, the most frequent shapes of the *training* scenes (popular), or the shapes that
  co-occur most with the present ones in the training scenes (adversarial; the organism's planted co-occurrence
  prior makes this split hard, as COCO's does for real VLMs).
* shapes-COCO-QA (`{color,object,location}_coco_qa.csv`, V-SEAM's CSV layout: index, image id, question, answer):
  one open-ended question of each type per scene (`open_questions`).

Scenes come from their own seeds (never the train/val/calib/test streams) and are drawn without the training
priors; frequencies for POPE's popular/adversarial splits are counted on `train` scenes, as POPE counts COCO's.
"""

from __future__ import annotations

import argparse
import collections
import csv
import itertools
import json
import pathlib
import sys

import numpy as np

from vseam.calibrate.datasets.shapes.open_questions import TYPES as OPEN_TYPES, open_questions
from vseam.calibrate.datasets.shapes.questions import _fill, _Retry, generate
from vseam.calibrate.datasets.shapes.world import SHAPES, Scene, render_image

BENCH_SEEDS = {"pope": 41, "cocoqa": 43}
POPE_SPLITS = ("random", "popular", "adversarial")
POPE_TEXT = "Is there a {} in the image?"
#: objects per shapes-POPE scene and absent shapes asked per scene and split
POPE_PRESENT, POPE_ABSENT = 2, 2


def bench_scene(kind: str, index: int, seed: int, n_objects: int) -> Scene:
    """Scene `index` of a benchmark's own stream: `n_objects` distinct shapes, uniform colours and patterns."""
    rng = np.random.default_rng([BENCH_SEEDS[kind], seed, index])
    for _ in range(200):
        try:
            objs = _fill(rng, [], [], set(), n_objects)
        except _Retry:
            continue
        if len(objs) == n_objects:
            return Scene(tuple(objs), int(rng.integers(2**31)))
    raise RuntimeError(f"shapes-{kind}: could not lay out scene {index}")


def train_statistics(n: int = 1500, seed: int = 0) -> dict:
    """Shape frequencies and pairwise co-occurrence counts over the first `n` training scenes."""
    freq, co = collections.Counter(), collections.Counter()
    for i in range(n):
        shapes = sorted({o.shape for o in generate("train", i, seed)[0].objects})
        freq.update(shapes)
        co.update(itertools.permutations(shapes, 2))
    return {"scenes": n, "frequency": dict(freq), "cooccurrence": {f"{a}|{b}": c for (a, b), c in co.items()}}


def pope_absent(split: str, present: list[str], stats: dict, rng: np.random.Generator) -> list[str]:
    """The absent shapes a POPE split asks about for a scene holding `present`."""
    absent = [s for s in SHAPES if s not in present]
    if split == "random":
        return [absent[i] for i in sorted(rng.choice(len(absent), size=POPE_ABSENT, replace=False))]
    if split == "popular":
        key = lambda s: (-stats["frequency"].get(s, 0), s)  # noqa: E731
    else:
        key = lambda s: (-sum(stats["cooccurrence"].get(f"{p}|{s}", 0) for p in present), s)  # noqa: E731
    return sorted(absent, key=key)[:POPE_ABSENT]


def _image(folder: pathlib.Path, name: str, scene: Scene) -> str:
    path = folder / name
    if not path.exists():
        render_image(scene).save(path)
    return name


def write_pope(out: str | pathlib.Path, n_images: int = 150, seed: int = 0, stats: dict | None = None) -> dict:
    """Write shapes-POPE's three split files and their images under `out`; returns a summary."""
    out = pathlib.Path(out)
    images = out / "images"
    images.mkdir(parents=True, exist_ok=True)
    stats = stats or train_statistics(seed=seed)
    rows = {s: [] for s in POPE_SPLITS}
    for i in range(n_images):
        scene = bench_scene("pope", i, seed, POPE_PRESENT)
        name = _image(images, f"shapes_pope_{i:05d}.png", scene)
        present = [o.shape for o in scene.objects]
        rng = np.random.default_rng([BENCH_SEEDS["pope"], seed, i, 1])
        for split in POPE_SPLITS:
            asked = [(s, "yes") for s in present] + [(s, "no") for s in pope_absent(split, present, stats, rng)]
            for shape, label in asked:
                rows[split].append({"question_id": len(rows[split]) + 1, "image": name,
                                    "text": POPE_TEXT.format(shape), "label": label})
    for split, lines in rows.items():
        (out / f"shapes_pope_{split}.json").write_text("".join(json.dumps(r) + "\n" for r in lines))
    return {"images": n_images, "questions": {s: len(v) for s, v in rows.items()}, "train_statistics": stats}


def write_cocoqa(out: str | pathlib.Path, n_images: int = 150, seed: int = 0) -> dict:
    """Write shapes-COCO-QA's three CSVs (one question of each type per scene) and their images under `out`."""
    out = pathlib.Path(out)
    images = out / "images"
    images.mkdir(parents=True, exist_ok=True)
    rows = {t: [] for t in OPEN_TYPES}
    answers = {t: collections.Counter() for t in OPEN_TYPES}
    for i in range(n_images):
        rng = np.random.default_rng([BENCH_SEEDS["cocoqa"], seed, i, 1])
        scene = bench_scene("cocoqa", i, seed, int(rng.integers(2, 5)))
        name = _image(images, f"shapes_cocoqa_{i:05d}.png", scene)
        by_type = collections.defaultdict(list)
        for t, q, a in open_questions(scene):
            by_type[t].append((q, a))
        for t in OPEN_TYPES:
            if by_type[t]:
                q, a = by_type[t][int(rng.integers(len(by_type[t])))]
                rows[t].append([len(rows[t]), name, q, a])
                answers[t][a] += 1
    for t, lines in rows.items():
        with open(out / f"{t}_coco_qa.csv", "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["", "image_id", "question", "answer"])
            w.writerows(lines)
    return {"images": n_images, "questions": {t: len(v) for t, v in rows.items()},
            "answers": {t: dict(c) for t, c in answers.items()}}


def write_all(out: str | pathlib.Path, n_images: int = 150, seed: int = 0) -> dict:
    """Both benchmarks under `out`/pope and `out`/cocoqa (reused when already written with the same settings)."""
    out = pathlib.Path(out)
    manifest = out / "manifest.json"
    want = {"n_images": n_images, "seed": seed}
    if manifest.exists():
        old = json.loads(manifest.read_text())
        if old.get("settings") == want:
            return old
    summary = {"settings": want, "pope": write_pope(out / "pope", n_images, seed),
               "cocoqa": write_cocoqa(out / "cocoqa", n_images, seed)}
    manifest.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m vseam.calibrate.datasets.shapes.benchmarks",
                                description="write shapes-POPE and shapes-COCO-QA")
    p.add_argument("--out", required=True)
    p.add_argument("--images", type=int, default=150, help="scenes per benchmark")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    s = write_all(args.out, args.images, args.seed)
    print(json.dumps({"pope": s["pope"]["questions"], "cocoqa": s["cocoqa"]["questions"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
