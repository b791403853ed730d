"""Command line of the calibration home: `vseam edit` (stage 1 editing), `vseam triples` (Eq-4 selection) and
`calibrate` (= `vseam calibrate`, the whole run, `vseam.calibrate.pipeline`).

Each command turns its flags into the objects of `vseam.calibrate.config` once and hands them to the stage
functions; the dataset and editing flags are shared by `vseam edit` and `calibrate`.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
from typing import Sequence

from vseam.calibrate.config import (DTYPES, EDITOR_CHOICES, METHODS, CalibrateConfig, DatasetSpec, EditSpec,
                                    Stage2Config)
from vseam.calibrate.inputs import AGGREGATES, DEFAULT_AGGREGATE, DEFAULT_SPLIT, SPLITS
from vseam.core.defaults import AUTO_EXACT_MAX_HEADS, DEFAULT_BATCH, DEFAULT_K, DEFAULT_K_GRID
from vseam.core.errors import UserError, run_command


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def parse_k_grid(text: str) -> tuple[int, ...]:
    """`--k-grid`'s value: distinct K values >= 1, sorted (the demo's flag of the same name reads it too)."""
    try:
        values = tuple(sorted({int(t) for t in text.split(",") if t.strip()}))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"K values must be >= 1, got {text!r}")
    return values


# ---- flags -------------------------------------------------------------------------------------------------------


def add_dataset_arguments(p: argparse.ArgumentParser, fraction_default: float | None = None,
                          fraction_help: str = "keep this random fraction of the records",
                          seed_help: str = "seed of the record sampling (default 0)") -> None:
    g = p.add_argument_group("dataset")
    g.add_argument("--dataset", required=True, help="registered dataset name (gqa, pope, cocoqa, shapes)")
    g.add_argument("--data", help="dataset file or directory (e.g. ../shared/data/vseam-gqa)")
    g.add_argument("--images", help="images directory")
    g.add_argument("--scene-graphs", help="GQA scene graphs JSON (official questions need it for boxes)")
    g.add_argument("--dataset-option", action="append", default=[], metavar="KEY=VALUE",
                   help="extra loader option (repeatable), e.g. format=official or split=calib")  # fmt: skip
    g.add_argument("--subtypes", type=_csv, help="comma-separated subtypes to keep (color,material,...)")
    g.add_argument("--limit", type=int, help="at most this many records (spread over subtypes)")
    g.add_argument("--fraction", type=float, default=fraction_default, help=fraction_help)
    g.add_argument("--seed", type=int, default=0, help=seed_help)
    g.add_argument("--balance", action="store_true", help="balance yes/no answers within each subtype")


def add_edit_arguments(p: argparse.ArgumentParser, model_help: str | None) -> None:
    """The editing flags; `model_help` None leaves out --model (a command that defines its own)."""
    g = p.add_argument_group("editing")
    g.add_argument("--editor", choices=EDITOR_CHOICES, default="auto", help="force one editor (default: by subtype)")
    g.add_argument("--sam-checkpoint", help="SAM weights (default: cached MobileSAM)")
    g.add_argument("--sam-type", default="vit_t", choices=("vit_t", "vit_b", "vit_l", "vit_h"),
                   help="SAM variant of --sam-checkpoint (vit_t = MobileSAM)")  # fmt: skip
    g.add_argument("--inpaint-model", help="diffusers inpainting pipeline directory (enables the diffusion editor)")
    g.add_argument("--inpaint-steps", type=int, default=25, help="denoising steps of the diffusion editor")
    g.add_argument("--dilation", type=int, help="edit-region dilation in pixels (default 1%% of the image side)")
    g = p.add_argument_group("counterfactual questions (default: offline rules)")
    g.add_argument("--llm-base-url", help="OpenAI-compatible endpoint, e.g. http://localhost:8000/v1")
    g.add_argument("--llm-model", help="model name at that endpoint")
    g.add_argument("--llm-api-key-env", default="OPENAI_API_KEY", help="env var with the API key")
    g.add_argument("--llm-cache", help="reply cache directory (default: $VSEAM_CACHE/counterfactuals)")
    g = p.add_argument_group("quality gate")
    if model_help is not None:
        g.add_argument("--model", help=model_help)
    g.add_argument("--min-cosine", type=float, default=0.85, help="minimum clean/edited feature cosine")
    g.add_argument("--contact-sheet", type=int, default=8, help="pairs shown in contact_sheet.png")


def add_calibrate_arguments(p: argparse.ArgumentParser) -> None:
    """`calibrate`: the dataset and editing flags (stage 1) and the stage-2 flags."""
    add_dataset_arguments(
        p, fraction_default=1.0,
        fraction_help="stage 2: attribute a seeded random fraction of the calibration questions (Table 4 studies)",
        seed_help="seed of the record sampling and of --fraction (default 0)")
    add_edit_arguments(p, model_help=None)
    p.add_argument("--model", required=True,
                   help="llava | instructblip (the hub models, from the local HF cache) or a checkpoint directory; "
                        "also scores edit drift in the quality gate")
    g = p.add_argument_group("stage 2: patching, head attribution, profiles")
    g.add_argument("--out", help="run directory (created, or resumed); default runs/<dataset>-<model>")
    g.add_argument("--triples", help="skip stage 1: a triples.jsonl (e.g. from another run); its questions are the "
                                     "calibration questions")
    g.add_argument("--questions", help="skip stage 1: a JSONL of question records (clean images) to calibrate on; "
                                       "no edits, so no Eq-4 triples and no patching")
    g.add_argument("--attribute-on", choices=SPLITS, default=DEFAULT_SPLIT,
                   help="Eq-7 inputs: clean (default, the authors' split: every question on its clean image, "
                        "target = its answer, D_correct/D_incorrect by the unedited model's answer), clean+edited "
                        "(also each edited image against its own true answer), eq4-pairs (both images of each "
                        "Eq-4 triple against the clean answer: the heads that read the edited region)")
    g.add_argument("--aggregate", choices=AGGREGATES, default=DEFAULT_AGGREGATE,
                   help="Eq 7: mean (the paper's signed mean, default) or gain (the released script: only drops on "
                        "D_correct, only gains on D_incorrect)")
    g.add_argument("--select-on", type=float, metavar="F",
                   help="hold out a seeded fraction F of the calibration questions and choose K (from --k-grid) "
                        "and the strength α (0, .25, .5, .75, 1) per profile by accuracy on them; without it "
                        "K = -k and α = 1 (the paper)")
    g.add_argument("--k-grid", type=parse_k_grid, default=DEFAULT_K_GRID, metavar="K,K,...",
                   help=f"--select-on: the K values tried (default {','.join(map(str, DEFAULT_K_GRID))})")
    g.add_argument("--select-only", type=lambda t: tuple(x.strip() for x in t.split(",") if x.strip()), default=(),
                   metavar="GROUP,...",
                   help="--select-on: choose K and α only for these profile groups (e.g. attribute,object,relation); "
                        "the others keep K = -k and α = 1 (default: every group)")
    g.add_argument("--select-significance", type=float, default=0.05, metavar="P",
                   help="--select-on: keep the best (K, α) only if it beats the unedited model on the held-out "
                        "questions (exact one-sided McNemar, level P / candidates tried); else α = 0 (default "
                        "0.05; 1 = plain argmax)")
    g.add_argument("--max-correct", type=int, metavar="N",
                   help="Eq 7 on a budget: answer every calibration question once, then attribute all the "
                        "incorrectly answered ones and a seeded sample of at most N correctly answered ones per "
                        "subtype (Eq 7's means are unbiased under the sample); default: attribute every question")
    g.add_argument(
        "--method", default="auto", choices=METHODS,
        help=f"head attribution: exact engine, AtP screen (+ --refine), naive loop; auto = exact up to "
        f"{AUTO_EXACT_MAX_HEADS} heads, else atp",
    )
    g.add_argument("--refine", type=int, help="atp: re-score the top N heads per set and group exactly (default 3K; 0 = off)")
    g.add_argument("--k", "-k", type=int, default=DEFAULT_K, help="top-K positive and negative heads per profile")
    g.add_argument("--batch", type=int, default=DEFAULT_BATCH, help="questions per attribution batch")
    g.add_argument("--max-rows", type=int, default=32,
                   help="rows (input x ablated head, or patched position) per replay batch; lower it to save memory")
    g.add_argument("--patching", type=int, default=16, help="activation-patch this many triples (0 = skip)")
    g.add_argument("--name-prefix", help="profile names are <prefix>-<level>; default: the dataset name")
    g.add_argument("--per-subtype", action="store_true", help="also write one profile per subtype (Table 13)")
    g.add_argument("--overlap-triples", type=int, default=32,
                   help="clean images (attributed questions with boxes) used for the head/bbox overlap table")
    g.add_argument(
        "--no-eq4-filter", action="store_true",
        help="debugging: keep every edited pair as a triple, even when the edit does not flip the model",
    )
    g.add_argument("--restart", action="store_true", help="discard the run dir's recorded results and start over")
    g.add_argument("--workers", type=int, default=0,
                   help="run the model passes (Eq-4 scoring, --max-correct answers, head attribution, the K / α grid) "
                        "on N Ray workers, each with its own model copy; same batches, same profile (default 0: this "
                        "process; needs pip install 'vseam[ray]')")
    g.add_argument("--ray-address", help="join this Ray cluster (e.g. ray://head:10001 or auto); default a local Ray")
    g.add_argument("--device", default="cpu")
    g.add_argument("--dtype", default="float32", choices=DTYPES)


# ---- flags -> configuration --------------------------------------------------------------------------------------


def dataset_spec(args, fraction: float | None) -> DatasetSpec:
    return DatasetSpec(
        name=args.dataset, data=args.data, images=args.images, scene_graphs=args.scene_graphs,
        options=tuple(args.dataset_option or ()), subtypes=tuple(args.subtypes) if args.subtypes else None,
        limit=args.limit, fraction=fraction, seed=args.seed, balance=args.balance,
    )


def edit_spec(args, vision_model: str | None) -> EditSpec:
    return EditSpec(
        editor=args.editor, sam_checkpoint=args.sam_checkpoint, sam_type=args.sam_type,
        inpaint_model=args.inpaint_model, inpaint_steps=args.inpaint_steps, dilation=args.dilation,
        llm_base_url=args.llm_base_url, llm_model=args.llm_model, llm_api_key_env=args.llm_api_key_env,
        llm_cache=args.llm_cache, vision_model=vision_model, min_cosine=args.min_cosine,
        contact_sheet=args.contact_sheet,
    )


def calibrate_config(args) -> CalibrateConfig:
    """The one `CalibrateConfig` of a `calibrate` command line (validated; errors name the flag)."""
    stage2 = Stage2Config(
        method=args.method, refine=args.refine, k=args.k, fraction=args.fraction, seed=args.seed, batch=args.batch,
        patching=max(0, args.patching), name_prefix=args.name_prefix or args.dataset, per_subtype=args.per_subtype,
        attribute_on=args.attribute_on, aggregate=args.aggregate, select_on=args.select_on,
        k_grid=tuple(args.k_grid) if args.select_on is not None else (),
        select_significance=args.select_significance, max_correct=args.max_correct,
        select_only=tuple(args.select_only),
    )
    return CalibrateConfig(
        model=args.model, dataset=dataset_spec(args, fraction=None), edit=edit_spec(args, vision_model=None),
        stage2=stage2, out=args.out, triples=args.triples, questions=args.questions,
        no_eq4_filter=args.no_eq4_filter, restart=args.restart, max_rows=args.max_rows,
        overlap_images=args.overlap_triples, device=args.device, dtype=args.dtype,
        workers=args.workers, ray_address=args.ray_address,
    )


# ---- commands ----------------------------------------------------------------------------------------------------


def cmd_edit(args) -> int:
    from vseam.calibrate.edit import edit_job

    job, loaded = edit_job(dataset_spec(args, args.fraction), edit_spec(args, args.model), args.out,
                           restart=args.restart, progress=not args.no_progress)
    print(loaded.summary(), file=sys.stderr)
    done = sum(1 for r in loaded.records if r.qid in job.manifest or r.qid in job.rejected)
    if done:
        print(f"resuming {args.out}: {done} of {len(loaded.records)} records already done", file=sys.stderr)
    summary = job.run_all(loaded.records)
    print(summary.table())
    return 0


def cmd_triples(args) -> int:
    from vseam.calibrate.edit import MANIFEST
    from vseam.calibrate.records import EditedPair, read_jsonl, write_jsonl
    from vseam.calibrate.select import select_triples, selection_run
    from vseam.core.engine import HeadEngine
    from vseam.core.files import atomic_write_json

    manifest = pathlib.Path(args.edits) / f"{MANIFEST}.jsonl"
    if not manifest.is_file():
        raise UserError(f"{manifest}: no edit manifest (run `vseam edit --out {args.edits}` first)")
    pairs = read_jsonl(manifest, EditedPair)
    out = pathlib.Path(args.out or pathlib.Path(args.edits) / "triples")
    run = selection_run(out, args.model, restart=args.restart)
    engine = HeadEngine.from_pretrained(args.model)
    triples, summary = select_triples(engine, pairs, cache=run.log("scores"), batch_size=args.batch_size,
                                      progress=not args.no_progress)  # fmt: skip
    write_jsonl(out / "triples.jsonl", triples)
    atomic_write_json(out / "summary.json", summary.to_json())
    print(summary.table())
    print(f"{len(triples)} Eq-4 triples of {len(pairs)} edited pairs -> {out / 'triples.jsonl'}")
    return 0


def cmd_calibrate(args) -> int:
    from vseam.calibrate.pipeline import calibrate

    calibrate(calibrate_config(args))
    return 0


def register(sub) -> None:
    p = sub.add_parser("edit", help="stage 1: counterfactual questions, SAM masks, local edits, quality gate",
                       description="Edit the asked-about region of each image so that the answer flips; resumable.")  # fmt: skip
    add_dataset_arguments(p)
    add_edit_arguments(p, model_help="VLM checkpoint whose vision tower scores feature drift (skipped if absent)")
    p.add_argument("--out", required=True, help="output (run) directory; re-running resumes it")
    p.add_argument("--restart", action="store_true", help="discard the run directory's logs and start over")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_edit)

    p = sub.add_parser("triples", help="stage 1: keep the edited pairs that flip the model (Eq 4)")
    p.add_argument("--edits", required=True, help="a `vseam edit` output directory")
    p.add_argument("--model", required=True, help="VLM checkpoint directory")
    p.add_argument("--out", help="output directory (default EDITS/triples)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--restart", action="store_true", help="discard cached scores")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_triples)

    p = sub.add_parser("calibrate", help="dataset -> edits -> Eq-4 triples -> head profiles")
    add_calibrate_arguments(p)
    p.set_defaults(func=cmd_calibrate)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="calibrate", description="V-SEAM calibration: dataset -> edits -> Eq-4 triples -> head profiles"
    )
    add_calibrate_arguments(p)
    p.set_defaults(func=cmd_calibrate)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """The `calibrate` console script: the whole run."""
    args = build_parser().parse_args(argv)
    return run_command(args.func, args)


if __name__ == "__main__":
    sys.exit(main())
