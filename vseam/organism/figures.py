"""The README's two pictures, drawn from a finished `make demo` run directory.

    .venv/bin/python -m vseam.organism.figures [--run runs/demo] [--out docs]

* `demo-heads.png`: each level's chosen profile on the organism's layer × head grid (positive heads amplified,
  negative heads damped), titled with the heads' attention share on the asked-about object (calibrate's Table-14
  overlap);
* `demo-accuracy.png`: held-out accuracy per strategy and level, shapes-POPE per split and shapes-COCO-QA per type.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

import numpy as np


def head_map(run: pathlib.Path, out: pathlib.Path) -> pathlib.Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    from vseam.head_profiles import load_profile

    demo = json.loads((run / "demo.json").read_text())
    overlap = json.loads((run / "calibrate" / "report.json").read_text()).get("overlap", {}).get("profiles", {})
    levels = list(demo["profiles"])
    fig, axes = plt.subplots(1, len(levels), figsize=(4.2 * len(levels), 2.6), squeeze=False)
    for ax, level in zip(axes[0], levels):
        prof = load_profile(demo["profiles"][level])
        L, H = prof.fingerprint.num_layers, prof.fingerprint.num_heads
        grid = np.zeros((L, H))
        for h in prof.positive:
            grid[h.layer, h.head] = 1
        for h in prof.negative:
            grid[h.layer, h.head] = -1
        ax.imshow(grid, cmap=ListedColormap(["#c0392b", "#eeeeee", "#2471a3"]), vmin=-1, vmax=1, aspect="auto")
        ax.set_xticks(range(H))
        ax.set_xticklabels([str(h) if h % 4 == 0 else "" for h in range(H)], fontsize=7)
        ax.set_yticks(range(L))
        ax.set_xlabel("head")
        ax.set_ylabel("layer")
        ov = overlap.get(prof.name, {})
        fmt = lambda v: "-" if v is None else f"{v:.0f}%"  # noqa: E731
        ax.set_title(f"{level}: K={prof.k}, α={prof.alpha}\nbox overlap +{fmt(ov.get('positive'))} "
                     f"−{fmt(ov.get('negative'))} all {fmt(ov.get('all_heads'))}", fontsize=8)
    fig.suptitle("chosen profiles: blue = positive (×(1+αλ)), red = negative (×(1−αλ))", fontsize=9)
    fig.tight_layout()
    path = out / "demo-heads.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def accuracy_chart(run: pathlib.Path, out: pathlib.Path) -> pathlib.Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    main = json.loads((run / "eval" / "report.json").read_text())
    source = (main.get("data", {}).get("files") or ["shapes:test"])[0].replace(":", " ")
    panels = [(f"{source} (yes/no)", main["headline"], ["attribute", "object", "relation", "avg"])]
    pope = run / "eval" / "pope" / "report.json"
    if pope.exists():
        panels.append(("shapes-POPE", json.loads(pope.read_text())["headline"], ["random", "popular", "adversarial"]))
    coco = run / "eval" / "cocoqa"
    if coco.exists():
        merged: dict[str, dict] = {}
        for kind in ("color", "object", "location"):
            rep = coco / kind / "report.json"
            if rep.exists():
                for label, row in json.loads(rep.read_text())["headline"].items():
                    merged.setdefault(label, {})[kind] = row.get(kind)
        panels.append(("shapes-COCO-QA", merged, ["color", "object", "location"]))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.2), squeeze=False)
    for ax, (title, headline, cats) in zip(axes[0], panels):
        labels = list(headline)
        width = 0.8 / len(labels)
        for k, label in enumerate(labels):
            vals = [100 * (headline[label].get(c) or 0) for c in cats]
            ax.bar(np.arange(len(cats)) + k * width - 0.4 + width / 2, vals, width, label=label)
        if all(not (headline[label].get(c) or 0) for label in labels for c in cats):
            ax.text(len(cats) / 2 - 0.5, 50, "every arm 0%", ha="center", fontsize=9)
        ax.set_xticks(range(len(cats)))
        ax.set_xticklabels(cats, fontsize=8)
        ax.set_ylim(0, 100)
        ax.set_title(title, fontsize=9)
        ax.set_ylabel("accuracy (%)")
    axes[0][0].legend(fontsize=6, loc="lower left")
    fig.tight_layout()
    path = out / "demo-accuracy.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m vseam.organism.figures", description=__doc__.split("\n")[0])
    p.add_argument("--run", default="runs/demo")
    p.add_argument("--out", default="docs")
    args = p.parse_args(argv)
    run, out = pathlib.Path(args.run), pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for path in (head_map(run, out), accuracy_chart(run, out)):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
