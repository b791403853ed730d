"""`vseam eval pope|cocoqa|gqa ...` (evaluate served profiles through the OpenAI API) and `vseam eval strategies`."""

from __future__ import annotations

import argparse
import os
import pathlib
import sys

from vseam.core.errors import UserError


def _arms(args) -> tuple[list, str | None, list[str] | None]:
    """The compared arms, the reference label and the covered levels from --strategies/--profile/--reference."""
    from vseam.benchmarks.run import arms_for

    return arms_for(args.strategies or [], args.profile, args.reference)


def cmd_eval(args) -> int:
    from vseam.benchmarks.client import Endpoint
    from vseam.benchmarks.run import EvalConfig, detect_family, evaluate, load_records

    endpoint = Endpoint(base_url=args.base_url, model=args.model, api_key=args.api_key, profile_via=args.profile_via)
    arms, reference, levels = _arms(args)
    out = pathlib.Path(args.out or f"vseam-eval/{args.task}")
    cfg = EvalConfig(
        task=args.task, endpoint=endpoint, arms=arms, out_dir=out, reference=reference,
        concurrency=args.concurrency, retries=args.retries, timeout=args.timeout, max_tokens=args.max_tokens,
        max_consecutive_failures=args.max_failures, constrain=args.constrain,
        folds=args.folds, fold_size=args.fold_size, seed=args.seed, claim_alpha=args.claim_alpha,
        progress=False if args.no_progress else None, check_server=not args.skip_check, refresh=args.refresh,
    )
    subtypes = getattr(args, "subtypes", None)
    from vseam.calibrate.config import loader_options

    options = {"scene_graphs": getattr(args, "scene_graphs", None),
               "subtypes": [t.strip() for t in subtypes.split(",") if t.strip()] if subtypes else None}
    options |= loader_options(args.dataset_option)
    records, excluded, skipped = load_records(args.task, args.data, args.images, limit=args.limit, seed=args.seed,
                                              dataset=getattr(args, "dataset", None), **options)
    for reason, info in skipped.items():
        print(f"skipped {info['count']} questions ({reason}), e.g. {', '.join(info['examples'])}", file=sys.stderr)
    if levels is not None:
        outside = [r for r in records if r.level not in levels]
        if outside:
            excluded[f"level not in --strategies ({', '.join(levels)})"] = len(outside)
            records = [r for r in records if r.level in levels]
    family = detect_family(endpoint, args.family)
    data_info = {"files": [str(p) for p in args.data], "images": args.images, "excluded": excluded,
                 "skipped": skipped, "limit": args.limit}
    try:
        report = evaluate(cfg, records, family, data_info=data_info)
    except KeyboardInterrupt:
        print(f"\ninterrupted: answers so far are cached in {out}; run the same command again to resume")
        return 130
    print((out / "report.md").read_text())
    req = report["requests"]
    print(f"wrote {out}/report.json, report.md, report.png ({req['asked']} asked, {req['from_cache']} from cache, "
          f"{req['failed']} failed)")
    return 0 if not req["failed"] else 2


def cmd_strategies(args) -> int:
    from vseam.benchmarks.strategies import read_manifest, write_strategies

    try:
        path = write_strategies(args.profile, args.out, seed=args.seed, random_count=args.random_count)
    except ValueError as e:
        raise UserError(f"{args.profile}: {e}") from None
    for strategy, name in read_manifest(path).items():
        print(f"{strategy:>14}: {name}")
    profiles = sorted(p for p in pathlib.Path(args.out).glob("*.json") if p.name != path.name)
    print(f"wrote {path}; serve them with: vseam serve MODEL " + " ".join(f"--head-profile {p}" for p in profiles))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    from vseam.benchmarks.run import TASKS

    p = sub.add_parser("eval", help="evaluate served head profiles through the OpenAI API (POPE, COCO-QA, GQA)")
    ps = p.add_subparsers(dest="eval_cmd", required=True)
    for task in TASKS:
        t = ps.add_parser(task, help=f"evaluate {task} against an OpenAI-compatible server")
        t.set_defaults(func=cmd_eval, task=task)
        t.add_argument("--base-url", required=True, help="server URL, e.g. http://127.0.0.1:8000/v1 (/v1 is added if missing)")
        t.add_argument("--model", required=True, help="served model name")
        t.add_argument("--api-key", default=os.environ.get("OPENAI_API_KEY", "EMPTY"))
        t.add_argument("--profile", action="append", help="head profile to evaluate (repeatable; default: none)")
        t.add_argument("--strategies", action="append",
                       help="strategies.json (or its directory) from `vseam eval strategies`: evaluate the five "
                            "Table-3 strategies, reference = rescaling. GQA: repeat as LEVEL=DIR to edit each "
                            "semantic level with its own profile's strategies (attribute=..., object=..., relation=...)")
        t.add_argument("--reference", help="label compared against all others in the significance tests")
        t.add_argument("--claim-alpha", type=float, default=0.001,
                       help="level of the report's verdict on the paper's claim: the reference ahead of the unedited "
                            "arm (profile none) with McNemar p below it and no category behind (default 0.001)")
        t.add_argument("--profile-via", choices=["xargs", "model"], default="xargs",
                       help="pick the profile by vllm_xargs (default) or by model name MODEL:NAME")
        t.add_argument("--family", default="auto", help="model family (llava, instructblip); default: ask the server")
        t.add_argument("--data", action="append", required=True,
                       help="dataset file or directory (repeatable; for --dataset shapes the split name)")
        t.add_argument("--images", help="directory the dataset's image names are relative to")
        if task == "gqa":
            t.add_argument("--dataset", default="gqa", choices=["gqa", "shapes"],
                           help="gqa (official files or V-SEAM subsets) or shapes (the synthetic world; --data "
                                "names the split, e.g. test)")
            t.add_argument("--scene-graphs", help="official *_sceneGraphs.json (optional)")
            t.add_argument("--subtypes", help="comma-separated subtypes to evaluate (default: all seven)")
        t.add_argument("--dataset-option", action="append", default=[], metavar="KEY=VALUE",
                       help="extra loader option (repeatable), e.g. format=official, size=70 for shapes")
        t.add_argument("--limit", type=int, help="evaluate at most this many records")
        t.add_argument("--out", help=f"output directory (default vseam-eval/{task})")
        t.add_argument("--concurrency", type=int, default=8, help="requests in flight (default 8)")
        t.add_argument("--retries", type=int, default=5, help="retries per request with backoff (default 5)")
        t.add_argument("--timeout", type=float, default=120.0, help="seconds per request attempt")
        t.add_argument("--max-failures", type=int, default=20,
                       help="stop after this many failed requests in a row (default 20)")
        t.add_argument("--max-tokens", type=int, help="generation budget (default: the task's)")
        t.add_argument("--constrain", action="store_true",
                       help="binary tasks: let the server generate only the yes/no words (vLLM structured outputs "
                            "'choice'); off by default, as in the paper")
        t.add_argument("--folds", type=int, default=1000, help="bootstrap folds (default 1000)")
        t.add_argument("--fold-size", type=int, default=100, help="items per bootstrap fold (default 100)")
        t.add_argument("--seed", type=int, default=0)
        t.add_argument("--refresh", action="store_true", help="ask again even when an answer is cached")
        t.add_argument("--skip-check", action="store_true", help="do not query /v1/models and /v1/head_profiles first")
        t.add_argument("--no-progress", action="store_true")

    s = ps.add_parser("strategies", help="write the Table-3 strategy profiles of a calibrated profile")
    s.add_argument("profile", help="calibrated profile JSON (the 'rescaling' strategy)")
    s.add_argument("--out", required=True, help="directory for the profiles and strategies.json")
    s.add_argument("--seed", type=int, default=0, help="seed of the random-remove draw")
    s.add_argument("--random-count", type=int, help="heads removed at random (default max(|P+|, |P-|))")
    s.set_defaults(func=cmd_strategies)
