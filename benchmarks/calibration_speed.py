"""Head-attribution speed: naive loop vs fast exact engine vs AtP screen, same model, same inputs, one run.

    .venv/bin/python -m vseam.benchmarks.calibration_speed [--model DIR] [--source shapes|random|triples] [--inputs N]
    .venv/bin/python -m vseam.benchmarks.calibration_speed --layout llava-7b [--workers 1,2]

`--layout llava-7b` builds (with the toy-checkpoint builder) a random LLaVA with LLaVA-1.5-7B's head layout — 32
layers x 32 heads, 576 image tokens from a 336-px tower with 14-px patches — at a width this CPU can run (LM
hidden 256, head_dim 16; vision hidden 64, 2 layers). The naive loop then runs on a sample of heads
(`--naive-heads`) and its per-head cost is extrapolated to all 1,024 heads (reported as such). The run also
projects the paper's job (12,647 questions x 1,024 heads on LLaVA-1.5-7B) to GPU-hours per method from the
measured cost ratios and the FLOPs of one 7B forward at that sequence length (the arithmetic is printed).
`--workers 1,2` times the same attribution job (exact, fixed chunks) on 1 and on 2 Ray workers and checks that
both give identical Δp.

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


#: LLaVA-1.5-7B's head layout at a CPU-sized width
LAYOUTS = {"llava-7b": dict(image_size=336, patch_size=14, vision_hidden=64, vision_layers=2, vision_heads=4,
                            text_hidden=256, text_layers=32, text_heads=32, text_kv_heads=32, text_head_dim=16,
                            text_intermediate=512, model_id="vseam/random-llava-7b-layout")}

#: the paper's calibration job and the hardware the projection assumes
PAPER_QUESTIONS = 12_647
LLAVA7B_PARAMS = 6.74e9  # Vicuna-7B language model
CLIP_L336_PARAMS = 0.30e9  # CLIP ViT-L/14-336 vision tower (577 tokens)
GPU_FLOPS = 312e12 * 0.4  # A100 bf16 dense peak x an assumed 40% utilisation


def projection(ratios: dict[str, float], seq_len: int, lines: list[str]) -> dict:
    """GPU-hours of the paper's job per method, from the naive loop's forward count and measured cost ratios."""
    lm = 2 * LLAVA7B_PARAMS * seq_len  # FLOPs of one LM forward (2 x params per token)
    vision = 2 * CLIP_L336_PARAMS * 577
    forward_s = (lm + vision) / GPU_FLOPS
    naive_forwards = PAPER_QUESTIONS * (1024 + 1)  # one per head plus the unedited forward
    naive_h = naive_forwards * forward_s / 3600
    lines += [
        f"one LLaVA-1.5-7B forward at {seq_len} tokens: 2 x {LLAVA7B_PARAMS:.2e} x {seq_len} + "
        f"2 x {CLIP_L336_PARAMS:.1e} x 577 = {lm + vision:.3e} FLOP; at {GPU_FLOPS / 1e12:.0f} TFLOP/s "
        f"(A100 bf16 x 40%) = {forward_s * 1e3:.1f} ms",
        f"naive: {PAPER_QUESTIONS:,} questions x 1,025 forwards = {naive_forwards:,} forwards = {naive_h:,.1f} GPU-h",
    ]
    out = {"forward_flops": lm + vision, "forward_s": forward_s, "gpu_flops_assumed": GPU_FLOPS,
           "gpu_hours": {"naive": naive_h}}
    for method, r in ratios.items():
        out["gpu_hours"][method] = naive_h / r
        lines.append(f"{method}: {naive_h:,.1f} / {r:.1f} (measured ratio to naive) = {naive_h / r:,.2f} GPU-h")
    return out


def synthetic_inputs(n: int, seed: int = 0, size: int = 64):
    rng = np.random.RandomState(seed)
    from PIL import Image

    images, questions, answers = [], [], []
    for i in range(n):
        arr = (rng.rand(size, size, 3) * 255).astype("uint8")
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

    def run(self, scored: int, fn, *args, **kw):
        """Time `fn(*args, **kw)`, which scores `scored` (input, head) pairs."""
        w, c = time.perf_counter(), time.process_time()
        out = fn(*args, **kw)
        self.wall += time.perf_counter() - w
        self.cpu += time.process_time() - c
        self.heads += scored
        return out

    def rate(self, kind: str) -> float:
        return self.heads / max(getattr(self, kind), 1e-12)


def overlap(a: list, b: list) -> int:
    return len(set(a) & set(b))


def ray_scaling(model_dir: pathlib.Path, images, questions, answers, batch: int, counts: list[int],
                heads=None) -> dict:
    """Seconds to score the same inputs (exact, chunks of `batch`) on each worker count; Δp must agree."""
    from vseam.calibrate.distributed import RayPool, WorkerSpec

    chunks = [(images[i : i + batch], questions[i : i + batch], answers[i : i + batch])
              for i in range(0, len(images), batch)]
    out, first = {}, None
    for n in counts:
        with RayPool(WorkerSpec(model_dir=str(model_dir), max_rows=256), n) as pool:
            pool.pids()  # every worker has loaded its model copy
            t0 = time.perf_counter()
            results = dict(pool.map_unordered("score", (chunk + ("exact", heads) for chunk in chunks)))
            seconds = time.perf_counter() - t0
        deltas = np.concatenate([results[i][1] for i in range(len(chunks))])
        same = True if first is None else bool(np.array_equal(first, deltas))
        first = deltas if first is None else first
        out[n] = {"seconds": seconds, "threads_per_worker": pool.spec.threads, "identical_to_first": same}
    return out


def tops_for_refine(attributor, correct, d_atp, n: int) -> list[tuple[int, int]]:
    """AtP's top-n positive and top-n negative heads over the inputs: the heads an exact refine re-scores."""
    from vseam.calibrate.attribution import top_heads
    from vseam.calibrate.profiles import aggregate

    s = aggregate(zip(correct, d_atp), (attributor.L, attributor.H))
    heads = top_heads(s.c_correct, n, sign=-1.0) if s.n_correct else []
    return heads + (top_heads(s.c_incorrect, n, sign=1.0) if s.n_incorrect else [])


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
    ap.add_argument("--layout", choices=sorted(LAYOUTS), help="build a random model with this real head layout")
    ap.add_argument("--naive-heads", type=int, default=0,
                    help="naive loop on this many sampled heads, per-head cost extrapolated (default: all heads; "
                         "32 with --layout)")
    ap.add_argument("--workers", default="", help="e.g. 1,2: time the same exact job on that many Ray workers")
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
        elif args.layout:
            from vseam.core.toy_checkpoints import ToySpec, build

            model_dir = pathlib.Path(tmp) / args.layout
            build("llava", model_dir, seed=0, spec=ToySpec(**LAYOUTS[args.layout]))
            model_label = f"random LLaVA with {args.layout}'s head layout (32x32 heads, 576 image tokens)"
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
            size = LAYOUTS[args.layout]["image_size"] if args.layout else 64
            images, questions, answers = synthetic_inputs(max(args.inputs, args.batch), size=size)
            source = "random images"
        n, b = len(images), min(args.batch, len(images))

        all_heads = [(l, h) for l in range(L) for h in range(H)]
        n_naive = args.naive_heads or (32 if args.layout else L * H)
        rng = np.random.RandomState(0)
        sample = sorted(all_heads[i] for i in rng.choice(len(all_heads), min(n_naive, len(all_heads)), replace=False))
        # on a real head layout the exact engine, like the naive loop, runs on the head sample only (all 1,024 heads
        # of a 32-layer model at 600 tokens take hours on this CPU); its per-head cost is extrapolated the same way
        exact_heads = sample if args.layout else None
        # quality: all inputs through exact and AtP; the naive loop on the first rounds' inputs
        bases, exact_d, atp_d = [], [], []
        for i in range(0, n, b):
            sl = slice(i, i + b)
            base, d = attributor.exact(images[sl], questions[sl], answers[sl], heads=exact_heads)
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
            naive_d.append((j, clocks["naive"].run(len(sample), attributor.naive, images[j : j + 1],
                                                   questions[j : j + 1], answers[j : j + 1], heads=sample)[1][0]))
            clocks["exact"].run(b * len(exact_heads or all_heads), attributor.exact, *batch, heads=exact_heads)
            clocks["atp"].run(b * L * H, attributor.atp, *batch)
        fidelity = float(max(abs(d_exact[j][l, h] - d[l, h]) for j, d in naive_d for l, h in sample))
        seq_len = int(attributor.encode(images[:1], questions[:1])["input_ids"].shape[1])
        # the projection is for LLaVA-1.5-7B: its 576 image tokens plus this prompt's text tokens
        text_tokens = seq_len - int(getattr(engine.model.config, "image_seq_length", 0) or 0)
        llava7b_len = 576 + text_tokens
        # AtP + refine: the screen on every input, then an exact pass restricted to the refine candidates
        refine_heads = sorted(set(tops_for_refine(attributor, correct, d_atp, args.refine)))
        refine_clock = Clock()
        refine_clock.run(b * L * H, attributor.exact, *batch, heads=refine_heads)
        workers = [int(x) for x in args.workers.split(",") if x.strip()]
        scaling = ray_scaling(model_dir, images, questions, answers, b, workers, exact_heads) if workers else {}

    rates = {k: {"wall": c.rate("wall"), "cpu": c.rate("cpu")} for k, c in clocks.items()}
    ratio = {k: {t: rates[k][t] / rates["naive"][t] for t in ("wall", "cpu")} for k in ("exact", "atp")}
    # AtP + refine per input: the AtP screen's time plus the exact pass over the refine candidates
    per_input = {k: clocks[k].wall / max(clocks[k].heads / (L * H), 1e-12) for k in clocks}
    refine_per_input = refine_clock.wall / b
    naive_per_input = per_input["naive"]  # extrapolated: per sampled head x L*H
    ratio_atp_refine = naive_per_input / (per_input["atp"] + refine_per_input)
    proj_lines: list[str] = []
    proj = projection({"exact": ratio["exact"]["wall"], "atp": ratio["atp"]["wall"],
                       "atp+refine": ratio_atp_refine}, llava7b_len, proj_lines)
    shape = (L, H)
    # (on a real layout exact scored the head sample only; the other heads are NaN and count as 0 here)
    s_exact = aggregate(zip(correct, np.nan_to_num(d_exact)), shape)
    s_atp = aggregate(zip(correct, d_atp), shape)
    k = args.top

    def tops(s, which, count):
        if which == "positive":
            return top_heads(s.c_correct, count, sign=-1.0) if s.n_correct else []
        return top_heads(s.c_incorrect, count, sign=1.0) if s.n_incorrect else []

    ov: dict = {}
    if exact_heads is None:
        for which in ("positive", "negative"):
            ex, at = tops(s_exact, which, k), tops(s_atp, which, k)
            candidates = set(tops(s_atp, which, args.refine))
            # refining re-scores the candidates exactly, so an exact top head survives iff it is a candidate
            ov[which] = {"exact_top": len(ex), "atp_overlap": overlap(ex, at),
                         "refined_overlap": sum(h in candidates for h in ex)}  # fmt: skip
        corr = float(np.corrcoef(d_exact.ravel(), d_atp.ravel())[0, 1]) if d_exact.std() > 0 else float("nan")
    else:  # exact Δp exists on the head sample only: compare there; top-10 recall needs every head (not measured)
        ls, hs = np.array(sample).T
        a, e = d_atp[:, ls, hs].ravel(), d_exact[:, ls, hs].ravel()
        corr = float(np.corrcoef(e, a)[0, 1]) if e.std() > 0 else float("nan")
        ov = {which: None for which in ("positive", "negative")}

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
        if o is None:
            console.print(f"top-{k} {which}: not measured on this layout (needs exact Δp of all {L * H} heads)")
            continue
        console.print(f"top-{k} {which}: AtP {o['atp_overlap']}/{o['exact_top']}, "
                      f"after exact refine of AtP's top {args.refine}: {o['refined_overlap']}/{o['exact_top']}")
    what = "naive loop and exact engine" if exact_heads is not None else "naive loop"
    console.print(f"{what} timed on {len(sample)} of {L * H} heads; per-head cost extrapolated to all heads "
                  f"(naive per input: {naive_per_input:.2f} s extrapolated)")
    console.print(f"AtP + exact refine of {len(refine_heads)} candidate heads: {ratio_atp_refine:.1f}x naive (wall)")
    console.print("[bold]projection to the paper's calibration job[/bold] (12,647 questions x 1,024 heads, LLaVA-1.5-7B):")
    for line in proj_lines:
        console.print("  " + line)
    if scaling:
        base = scaling[min(scaling)]["seconds"]
        for k_, v in scaling.items():
            v["speedup_vs_first"] = base / v["seconds"]
            console.print(f"Ray workers {k_}: {v['seconds']:.2f} s ({v['threads_per_worker']} threads each), "
                          f"{v['speedup_vs_first']:.2f}x; Δp identical to {min(scaling)} worker(s): "
                          f"{v['identical_to_first']}")
    doc = {
        "model": model_label,
        "layout": args.layout,
        "seq_len": seq_len,
        "naive_heads_sampled": len(sample),
        "naive_extrapolated": len(sample) < L * H,
        "exact_extrapolated": exact_heads is not None,
        "ratio_atp_refine_vs_naive_wall": round(ratio_atp_refine, 2),
        "refine_heads": len(refine_heads),
        "projection": proj,
        "ray_workers": {str(k_): v for k_, v in scaling.items()},
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
        "targets": {"exact_vs_naive": 5, "atp_vs_naive": 100, "atp_overlap": 8, "refined_overlap": 9,
                    "atp_refine_gpu_hours": 2, "ray_2_vs_1": 1.7},
    }
    print(json.dumps(doc, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
