"""Head-attribution speed: naive loop vs fast exact engine vs AtP screen, same model, same inputs, one run.

    .venv/bin/python -m benchmarks.calibration_speed [--model DIR] [--triples FILE] [--inputs N]

Without --model it uses the toy model organism (`vseam/organism/weights`) if present, else builds a random tiny
LLaVA (8 layers x 8 heads, hidden 256) in a temp dir. Inputs (`--source`): --triples FILE, the shapes world
(default with the organism: clean + exact counterfactual re-render of calibration records), or random images
with binary questions. Each pair gives two inputs (clean and edited image, target = the clean answer), as in the
calibration pipeline.

Reported per method: heads scored per second (inputs x L x H / wall time, after one warm-up), the ratio to the
naive loop, and for AtP the overlap of its top-10 positive (−c_correct) and negative (c_incorrect) heads with the
exact engine's, and the same after an exact refine of its top-30 candidates. The naive loop runs on a subset of
the inputs (it is slow); on that subset the exact engine's Δp must equal the naive loop's (max |diff| reported).
The last line is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import tempfile
import time

import numpy as np

ORGANISM = pathlib.Path(__file__).resolve().parents[1] / "vseam" / "organism" / "weights"
QUESTIONS = [
    "Is the circle red?",
    "Is there a dog in this picture?",
    "Is the cup to the left of the plate?",
    "Is the table made of wood?",
    "Is the man riding the horse?",
    "Is there a bus in this picture?",
]


def default_model(tmp: pathlib.Path) -> tuple[pathlib.Path, str]:
    if (ORGANISM / "config.json").exists():
        return ORGANISM, "toy model organism"
    from vseam.toy_checkpoints import ToySpec, build

    out = tmp / "tiny-llava-8x8"
    build("llava", out, seed=0, spec=ToySpec(text_layers=8, text_heads=8, text_kv_heads=8, text_hidden=256,
                                             text_intermediate=512))
    return out, "random tiny LLaVA 8x8 (organism not present)"


def synthetic_inputs(n: int, seed: int = 0):
    rng = np.random.RandomState(seed)
    from PIL import Image

    images, questions, answers = [], [], []
    for i in range(n):
        arr = (rng.rand(64, 64, 3) * 255).astype("uint8")
        images.append(Image.fromarray(arr))
        questions.append(QUESTIONS[i % len(QUESTIONS)])
        answers.append("yes" if i % 2 == 0 else "no")
    return images, questions, answers


def shapes_inputs(n: int, tmp: pathlib.Path):
    """Clean + exactly re-rendered edited image of the first shapes calibration records (no Eq-4 filter: the
    inputs split into D_correct / D_incorrect by the model's own predictions, as in attribution)."""
    from PIL import Image

    from calibrate.datasets.shapes import exact_pair, load_shapes

    images, questions, answers = [], [], []
    for record in load_shapes("calib", limit=(n + 1) // 2, images=tmp / "shapes"):
        pair = exact_pair(record, tmp / "shapes-edited")
        for p in (pair.clean_image, pair.edited_image):
            with Image.open(p) as im:
                images.append(im.convert("RGB"))
            questions.append(record.question)
            answers.append(record.answer)
    return images[:n], questions[:n], answers[:n]


def triple_inputs(path: str, n: int):
    from PIL import Image

    from calibrate.records import Triple, read_jsonl

    images, questions, answers = [], [], []
    for t in read_jsonl(path, Triple):
        for p in (t.pair.clean_image, t.pair.edited_image):
            with Image.open(p) as im:
                images.append(im.convert("RGB"))
            questions.append(t.record.question)
            answers.append(t.record.answer)
        if len(images) >= n:
            break
    return images[:n], questions[:n], answers[:n]


def timed(fn, *args, repeat: int = 1, warm=None, **kw):
    if warm is not None:
        warm()
    else:
        fn(*args, **kw)  # warm-up
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn(*args, **kw)
        best = min(best, time.perf_counter() - t0)
    return best, out


def batched(fn, images, questions, answers, batch):
    bases, deltas = [], []
    for i in range(0, len(images), batch):
        b, d = fn(images[i : i + batch], questions[i : i + batch], answers[i : i + batch])
        bases.append(b)
        deltas.append(d)
    correct = np.concatenate([b.correct for b in bases])
    return correct, np.concatenate(deltas)


def overlap(a: list, b: list) -> int:
    return len(set(a) & set(b))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="checkpoint directory (default: organism, else a random 8x8 tiny LLaVA)")
    ap.add_argument("--triples", help="triples.jsonl (e.g. from a calibrate run dir); default: random inputs")
    ap.add_argument("--source", choices=["random", "shapes", "triples"],
                    help="inputs: random images, the shapes world (default with the organism), or --triples")
    ap.add_argument("--inputs", type=int, default=32, help="inputs for exact and AtP")
    ap.add_argument("--naive-inputs", type=int, default=2, help="inputs for the naive loop (a prefix)")
    ap.add_argument("--batch", type=int, default=16, help="inputs per batch for exact and AtP")
    ap.add_argument("--repeat", type=int, default=2, help="timed repetitions of exact and AtP (best is reported)")
    ap.add_argument("--top", type=int, default=10)
    ap.add_argument("--refine", type=int, default=30)
    ap.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    args = ap.parse_args(argv)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from rich.console import Console
    from rich.table import Table

    from calibrate.attribution import HeadAttributor, top_heads
    from calibrate.profiles import aggregate
    from vseam.engine import HeadEngine

    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        if args.model:
            model_dir, model_label = pathlib.Path(args.model), str(args.model)
        else:
            model_dir, model_label = default_model(pathlib.Path(tmp))
        engine = HeadEngine.from_pretrained(str(model_dir))
        attributor = HeadAttributor(engine, max_rows=256)
        L, H = attributor.L, attributor.H
        source = args.source or ("triples" if args.triples else "shapes" if model_dir == ORGANISM else "random")
        if source == "triples":
            if not args.triples:
                ap.error("--source triples needs --triples FILE")
            images, questions, answers = triple_inputs(args.triples, args.inputs)
            source = f"triples {args.triples}"
        elif source == "shapes":
            images, questions, answers = shapes_inputs(args.inputs, pathlib.Path(tmp))
            source = "shapes world (calib split, exact counterfactual re-renders)"
        else:
            images, questions, answers = synthetic_inputs(args.inputs)
            source = "random images"
        n = len(images)
        m = min(args.naive_inputs, n)

        warm = lambda: attributor.naive(images[:1], questions[:1], answers[:1], heads=[(0, 0), (L - 1, H - 1)])
        t_naive, (b_naive, d_naive) = timed(attributor.naive, images[:m], questions[:m], answers[:m], warm=warm)
        t_exact, (correct, d_exact) = timed(batched, attributor.exact, images, questions, answers, args.batch,
                                            repeat=args.repeat)
        t_atp, (correct_atp, d_atp) = timed(batched, attributor.atp, images, questions, answers, args.batch,
                                            repeat=args.repeat)
        fidelity = float(np.abs(d_exact[:m] - d_naive).max())

    hps = {"naive": m * L * H / t_naive, "exact": n * L * H / t_exact, "atp": n * L * H / t_atp}
    shape = (L, H)
    s_exact = aggregate(zip(correct, d_exact), shape)
    s_atp = aggregate(zip(correct_atp, d_atp), shape)
    k = args.top

    def tops(s, sign_key):
        if sign_key == "positive":
            return top_heads(s.c_correct, k, sign=-1.0) if s.n_correct else []
        return top_heads(s.c_incorrect, k, sign=1.0) if s.n_incorrect else []

    ov = {}
    for key in ("positive", "negative"):
        ex, at = tops(s_exact, key), tops(s_atp, key)
        cands = (top_heads(s_atp.c_correct, args.refine, -1.0) if key == "positive" else
                 top_heads(s_atp.c_incorrect, args.refine, 1.0)) if ex else []
        refined = [h for h in ex if h in set(cands)]  # refine re-scores candidates exactly: keeps exact's order
        ov[key] = {"exact_top": len(ex), "atp_overlap": overlap(ex, at), "refined_overlap": len(refined)}
    flat = np.corrcoef(d_exact.ravel(), d_atp.ravel())[0, 1] if d_exact.std() > 0 else float("nan")

    console = Console()
    console.print(f"[bold]head attribution speed[/bold]: {model_label} ({L} layers x {H} heads), {source}")
    console.print(f"inputs: {n} (naive loop: {m}), batch {args.batch}; D_correct {s_exact.n_correct}, "
                  f"D_incorrect {s_exact.n_incorrect}; torch threads {torch.get_num_threads()}")
    table = Table("method", "heads/s", "x naive", "wall s", "inputs")
    for name, t, count in (("naive loop", t_naive, m), ("fast exact", t_exact, n), ("AtP screen", t_atp, n)):
        key = name.split()[0].lower().replace("fast", "exact")
        key = {"naive": "naive", "exact": "exact", "atp": "atp"}[key]
        table.add_row(name, f"{hps[key]:,.0f}", f"{hps[key] / hps['naive']:.1f}", f"{t:.3f}", str(count))
    console.print(table)
    console.print(f"exact vs naive max |Δp diff|: {fidelity:.2e}; AtP vs exact correlation of Δp: {flat:.3f}")
    for key in ("positive", "negative"):
        o = ov[key]
        console.print(f"top-{k} {key}: AtP overlap {o['atp_overlap']}/{o['exact_top']}, "
                      f"after exact refine of top {args.refine}: {o['refined_overlap']}/{o['exact_top']}")
    doc = {
        "model": model_label,
        "layers": L,
        "heads": H,
        "inputs": n,
        "naive_inputs": m,
        "batch": args.batch,
        "source": source,
        "heads_per_s": {k_: round(v, 2) for k_, v in hps.items()},
        "ratio_exact_vs_naive": round(hps["exact"] / hps["naive"], 2),
        "ratio_atp_vs_naive": round(hps["atp"] / hps["naive"], 2),
        "exact_vs_naive_max_abs_diff": fidelity,
        "atp_exact_corr": round(float(flat), 4),
        "top": k,
        "overlap": ov,
        "n_correct": s_exact.n_correct,
        "n_incorrect": s_exact.n_incorrect,
        "targets": {"exact_vs_naive": 5, "atp_vs_naive": 100, "atp_overlap": 8},
    }
    print(json.dumps(doc, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
