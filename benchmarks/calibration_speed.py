"""Head-attribution speed: naive loop vs fast exact engine vs AtP screen, same model, same inputs, one run.

    .venv/bin/python -m vseam.benchmarks.calibration_speed [--model DIR] [--source shapes|random|triples] [--inputs N]

Without --model it uses the toy model organism (`vseam/organism/weights`) if present, else builds a random tiny
LLaVA (8 layers x 8 heads, hidden 256) in a temp dir. Inputs (`--source`): --triples FILE, the shapes world
(default with the organism: clean + exact counterfactual re-render of calibration records), or random images
with binary questions. Each pair gives two inputs (clean and edited image, target = the clean answer), as in the
calibration pipeline.

Timing: after one warm-up of each method, `--rounds` rounds each run the naive loop on one input (all heads, one
forward per head), the exact engine on one batch of `--batch` inputs and AtP on the same batch, interleaved so
that load from other processes hits all three alike. Heads scored per second = inputs x L x H / time, from wall
time and from this process's CPU time; ratios are to the naive loop. Quality: the exact engine's Δp equals the
naive loop's on the naive inputs (max |diff|), and AtP's top-10 positive (−c_correct) and negative (c_incorrect)
heads over all inputs are compared with the exact engine's, also after an exact refine of AtP's top-30.
Timing uses one torch thread by default (`--threads`): with two, batch-1 forwards of the naive loop spend most of
their time waiting for the other thread whenever other processes share the cores, which inflates every ratio.
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
    from vseam.core.toy_checkpoints import ToySpec, build

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

    from vseam.calibrate.datasets.shapes import exact_pair, load_shapes

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

    from vseam.calibrate.records import Triple, read_jsonl

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


class Clock:
    """Accumulated wall and CPU seconds and heads scored for one method."""

    def __init__(self):
        self.wall = self.cpu = 0.0
        self.heads = 0

    def run(self, heads: int, fn, *args, **kw):
        w, c = time.perf_counter(), time.process_time()
        out = fn(*args, **kw)
        self.wall += time.perf_counter() - w
        self.cpu += time.process_time() - c
        self.heads += heads
        return out

    def rate(self, kind: str) -> float:
        return self.heads / max(getattr(self, kind), 1e-12)


def overlap(a: list, b: list) -> int:
    return len(set(a) & set(b))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="checkpoint directory (default: organism, else a random 8x8 tiny LLaVA)")
    ap.add_argument("--triples", help="triples.jsonl (e.g. from a calibrate run dir)")
    ap.add_argument("--source", choices=["random", "shapes", "triples"],
                    help="inputs: random images, the shapes world (default with the organism), or --triples")
    ap.add_argument("--inputs", type=int, default=32, help="inputs scored by exact and AtP (for the overlap)")
    ap.add_argument("--batch", type=int, default=16, help="inputs per batch for exact and AtP")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds")
    ap.add_argument("--top", type=int, default=10)
    ap.add_argument("--refine", type=int, default=30)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads (default 1: on a shared machine, idle-waiting threads of batch-1 "
                    "forwards distort the naive loop's time; 0 = torch's choice)")
    args = ap.parse_args(argv)

    import torch

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    from rich.console import Console
    from rich.table import Table

    from vseam.calibrate.attribution import HeadAttributor, top_heads
    from vseam.calibrate.profiles import aggregate
    from vseam.core.engine import HeadEngine

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
            images, questions, answers = triple_inputs(args.triples, max(args.inputs, args.batch))
            source = f"triples {args.triples}"
        elif source == "shapes":
            images, questions, answers = shapes_inputs(max(args.inputs, args.batch), pathlib.Path(tmp))
            source = "shapes world (calib split, exact counterfactual re-renders)"
        else:
            images, questions, answers = synthetic_inputs(max(args.inputs, args.batch))
            source = "random images"
        n, b = len(images), min(args.batch, len(images))

        # quality: all inputs through exact and AtP; the naive loop on the first rounds' inputs
        bases, exact_d, atp_d = [], [], []
        for i in range(0, n, b):
            sl = slice(i, i + b)
            base, d = attributor.exact(images[sl], questions[sl], answers[sl])
            bases.append(base.correct)
            exact_d.append(d)
            atp_d.append(attributor.atp(images[sl], questions[sl], answers[sl])[1])
        correct, d_exact, d_atp = np.concatenate(bases), np.concatenate(exact_d), np.concatenate(atp_d)

        # speed: interleaved rounds after a warm-up
        clocks = {"naive": Clock(), "exact": Clock(), "atp": Clock()}
        batch = (images[:b], questions[:b], answers[:b])
        attributor.naive(images[:1], questions[:1], answers[:1], heads=[(0, 0)])
        naive_d = []
        for r in range(args.rounds):
            j = r % n
            naive_d.append(clocks["naive"].run(L * H, attributor.naive, images[j : j + 1], questions[j : j + 1],
                                               answers[j : j + 1])[1][0])
            clocks["exact"].run(b * L * H, attributor.exact, *batch)
            clocks["atp"].run(b * L * H, attributor.atp, *batch)
        fidelity = float(max(np.abs(d_exact[r % n] - naive_d[r]).max() for r in range(args.rounds)))

    rates = {k: {"wall": c.rate("wall"), "cpu": c.rate("cpu")} for k, c in clocks.items()}
    ratio = {k: {t: rates[k][t] / rates["naive"][t] for t in ("wall", "cpu")} for k in ("exact", "atp")}
    shape = (L, H)
    s_exact = aggregate(zip(correct, d_exact), shape)
    s_atp = aggregate(zip(correct, d_atp), shape)
    k = args.top

    def tops(s, which, count):
        if which == "positive":
            return top_heads(s.c_correct, count, sign=-1.0) if s.n_correct else []
        return top_heads(s.c_incorrect, count, sign=1.0) if s.n_incorrect else []

    ov = {}
    for which in ("positive", "negative"):
        ex, at = tops(s_exact, which, k), tops(s_atp, which, k)
        candidates = set(tops(s_atp, which, args.refine))
        # refining re-scores the candidates exactly, so an exact top head survives iff it is a candidate
        ov[which] = {"exact_top": len(ex), "atp_overlap": overlap(ex, at),
                     "refined_overlap": sum(h in candidates for h in ex)}  # fmt: skip
    corr = float(np.corrcoef(d_exact.ravel(), d_atp.ravel())[0, 1]) if d_exact.std() > 0 else float("nan")

    console = Console()
    console.print(f"[bold]head attribution speed[/bold]: {model_label} ({L} layers x {H} heads = {L * H}), {source}")
    console.print(f"{n} inputs (D_correct {s_exact.n_correct}, D_incorrect {s_exact.n_incorrect}); timing: "
                  f"{args.rounds} interleaved rounds of naive x 1 input, exact and AtP x {b} inputs; "
                  f"torch threads {torch.get_num_threads()}")  # fmt: skip
    table = Table("method", "heads/s (wall)", "x naive (wall)", "heads/s (CPU)", "x naive (CPU)", "wall s")
    for key, label in (("naive", "naive loop"), ("exact", "fast exact"), ("atp", "AtP screen")):
        rw = ratio.get(key, {"wall": 1.0, "cpu": 1.0})
        table.add_row(label, f"{rates[key]['wall']:,.0f}", f"{rw['wall']:.1f}", f"{rates[key]['cpu']:,.0f}",
                      f"{rw['cpu']:.1f}", f"{clocks[key].wall:.2f}")
    console.print(table)
    console.print(f"exact vs naive: max |Δp diff| {fidelity:.1e}; AtP vs exact: correlation of Δp {corr:.3f}")
    for which in ("positive", "negative"):
        o = ov[which]
        console.print(f"top-{k} {which}: AtP {o['atp_overlap']}/{o['exact_top']}, "
                      f"after exact refine of AtP's top {args.refine}: {o['refined_overlap']}/{o['exact_top']}")
    doc = {
        "model": model_label,
        "layers": L,
        "heads": H,
        "inputs": n,
        "batch": b,
        "rounds": args.rounds,
        "threads": torch.get_num_threads(),
        "source": source,
        "heads_per_s_wall": {k_: round(v["wall"], 2) for k_, v in rates.items()},
        "heads_per_s_cpu": {k_: round(v["cpu"], 2) for k_, v in rates.items()},
        "ratio_exact_vs_naive_wall": round(ratio["exact"]["wall"], 2),
        "ratio_atp_vs_naive_wall": round(ratio["atp"]["wall"], 2),
        "ratio_exact_vs_naive_cpu": round(ratio["exact"]["cpu"], 2),
        "ratio_atp_vs_naive_cpu": round(ratio["atp"]["cpu"], 2),
        "exact_vs_naive_max_abs_diff": fidelity,
        "atp_exact_corr": round(corr, 4),
        "top": k,
        "refine": args.refine,
        "overlap": ov,
        "n_correct": s_exact.n_correct,
        "n_incorrect": s_exact.n_incorrect,
        "targets": {"exact_vs_naive": 5, "atp_vs_naive": 100, "atp_overlap": 8},
    }
    print(json.dumps(doc, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
