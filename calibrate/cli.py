"""Command line of the calibration home: `vseam edit` (stage 1 editing), `vseam triples` (Eq-4 selection) and the
`calibrate` console script (the full pipeline, `calibrate.pipeline`).

`add_edit_arguments` / `edit_job_from_args` are shared with the pipeline command so both take the same flags.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
from typing import Sequence

from vseam.errors import UserError

EDITOR_CHOICES = ("auto", "recolor", "remove", "mirror", "diffusion", "render")


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def add_dataset_arguments(p: argparse.ArgumentParser, required: bool = True) -> None:
    g = p.add_argument_group("dataset")
    g.add_argument("--dataset", required=required, help="registered dataset name (gqa, pope, cocoqa, shapes)")
    g.add_argument("--data", help="dataset file or directory (e.g. ../shared/data/vseam-gqa)")
    g.add_argument("--images", help="images directory")
    g.add_argument("--scene-graphs", help="GQA scene graphs JSON (official questions need it for boxes)")
    g.add_argument("--dataset-option", action="append", default=[], metavar="KEY=VALUE",
                   help="extra loader option (repeatable), e.g. format=official or split=calib")  # fmt: skip
    g.add_argument("--subtypes", type=_csv, help="comma-separated subtypes to keep (color,material,...)")
    g.add_argument("--limit", type=int, help="at most this many records (spread over subtypes)")
    g.add_argument("--fraction", type=float, help="keep this random fraction of the records")
    g.add_argument("--seed", type=int, default=0, help="seed of the record sampling (default 0)")
    g.add_argument("--balance", action="store_true", help="balance yes/no answers within each subtype")


def dataset_options(args) -> dict:
    opts: dict = {}
    for item in args.dataset_option or []:
        if "=" not in item:
            raise UserError(f"--dataset-option {item!r}: expected KEY=VALUE")
        k, v = item.split("=", 1)
        opts[k.strip().replace("-", "_")] = v
    for flag, key in (("data", "path"), ("images", "images"), ("scene_graphs", "scene_graphs")):
        if getattr(args, flag, None):
            opts[key] = getattr(args, flag)
    return opts


def load_records(args):
    from calibrate.datasets import load_dataset

    try:
        return load_dataset(
            args.dataset,
            subtypes=args.subtypes,
            binary_only=True,
            require_boxes=args.dataset != "shapes",
            balance=args.balance,
            fraction=args.fraction,
            limit=args.limit,
            seed=args.seed,
            **dataset_options(args),
        )
    except TypeError as e:  # an option the loader does not take
        raise UserError(f"dataset {args.dataset}: {e}") from None


def add_edit_arguments(p: argparse.ArgumentParser) -> None:
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
    g.add_argument("--model", help="VLM checkpoint whose vision tower scores feature drift (skipped if absent)")
    g.add_argument("--min-cosine", type=float, default=0.85, help="minimum clean/edited feature cosine")
    g.add_argument("--contact-sheet", type=int, default=8, help="pairs shown in contact_sheet.png")


def _rewriter(args):
    from calibrate.counterfactual import LLMRewriter, RuleRewriter

    if bool(args.llm_base_url) != bool(args.llm_model):
        raise UserError("--llm-base-url and --llm-model go together")
    if not args.llm_base_url:
        return RuleRewriter(), {"method": "rules"}
    from calibrate.masks import cache_dir

    cache = args.llm_cache or str(cache_dir() / "counterfactuals")
    rw = LLMRewriter(args.llm_base_url, args.llm_model, cache, api_key_env=args.llm_api_key_env)
    from calibrate.counterfactual import PROMPT_VERSION

    return rw, {"method": "llm", "model": args.llm_model, "prompt_version": PROMPT_VERSION}


def edit_job_from_args(args, out_dir: str | os.PathLike, *, extra_config: dict | None = None):
    """(EditJob, LoadResult) for parsed `add_dataset_arguments` + `add_edit_arguments` flags."""
    from calibrate.edit import EditJob
    from calibrate.editors import default_editors
    from calibrate.masks import BoxSegmenter
    from calibrate.quality import Thresholds, VisionFeatures
    from calibrate.rundir import RunDir

    loaded = load_records(args)
    rewriter, rewriter_cfg = _rewriter(args)
    thresholds = Thresholds(min_cosine=args.min_cosine)
    editors = default_editors(args.inpaint_model, args.dilation, steps=args.inpaint_steps)
    config = {
        "dataset": args.dataset,
        "dataset_options": {k: str(v) for k, v in dataset_options(args).items()},
        "selection": {"subtypes": args.subtypes, "limit": args.limit, "fraction": args.fraction,
                      "seed": args.seed, "balance": args.balance},  # fmt: skip
        "editor": args.editor,
        "sam": {"checkpoint": args.sam_checkpoint, "type": args.sam_type},
        "inpaint": {"model": args.inpaint_model, "steps": args.inpaint_steps} if args.inpaint_model else None,
        "dilation": args.dilation,
        "counterfactual": rewriter_cfg,
        "vision_model": str(pathlib.Path(args.model).resolve()) if args.model else None,
        "thresholds": thresholds.to_json(),
        **(extra_config or {}),
    }
    run = RunDir(out_dir, config, restart=getattr(args, "restart", False))
    features = VisionFeatures.from_pretrained(args.model) if args.model else None
    job = EditJob(
        run,
        rewriter=rewriter,
        editors=editors,
        segmenter=lambda: BoxSegmenter(args.sam_checkpoint, args.sam_type),
        features=features,
        thresholds=thresholds,
        editor=None if args.editor == "auto" else args.editor,
        contact_sheet=args.contact_sheet,
        progress=not getattr(args, "no_progress", False),
    )
    return job, loaded


def cmd_edit(args) -> int:
    job, loaded = edit_job_from_args(args, args.out)
    print(loaded.summary(), file=sys.stderr)
    done = sum(1 for r in loaded.records if r.qid in job.manifest or r.qid in job.rejected)
    if done:
        print(f"resuming {args.out}: {done} of {len(loaded.records)} records already done", file=sys.stderr)
    summary = job.run_all(loaded.records)
    print(summary.table())
    return 0


def cmd_triples(args) -> int:
    from calibrate.edit import MANIFEST
    from calibrate.records import EditedPair, read_jsonl, write_jsonl
    from calibrate.rundir import atomic_write_json
    from calibrate.select import select_triples, selection_run
    from vseam.engine import HeadEngine

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


def register(sub) -> None:
    p = sub.add_parser("edit", help="stage 1: counterfactual questions, SAM masks, local edits, quality gate",
                       description="Edit the asked-about region of each image so that the answer flips; resumable.")  # fmt: skip
    add_dataset_arguments(p)
    add_edit_arguments(p)
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

    try:  # the full pipeline, when its module is present
        from calibrate import pipeline
    except ModuleNotFoundError as e:
        if e.name != "calibrate.pipeline":
            raise
        return
    if hasattr(pipeline, "add_arguments") and hasattr(pipeline, "cmd_calibrate"):
        p = sub.add_parser("calibrate", help="dataset -> edits -> Eq-4 triples -> head profiles")
        pipeline.add_arguments(p)
        p.set_defaults(func=pipeline.cmd_calibrate)


def main(argv: Sequence[str] | None = None) -> int:
    """The `calibrate` console script: the full pipeline."""
    from calibrate import pipeline

    return pipeline.main(argv)


if __name__ == "__main__":
    sys.exit(main())
