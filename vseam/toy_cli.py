"""`vseam toy-model`: build a tiny random-weight checkpoint with a real model's layout."""

from __future__ import annotations

import argparse
import dataclasses


def cmd_toy_model(args) -> int:
    from vseam.core.toy_checkpoints import ToySpec, build

    spec = ToySpec(**{k: v for k, v in vars(args).items() if k in {f.name for f in dataclasses.fields(ToySpec)} and v is not None})
    build(args.arch, args.out, seed=args.seed, spec=spec)
    print(f"wrote tiny {args.arch} checkpoint to {args.out}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("toy-model", help="build a tiny random checkpoint laid out like the real hub model")
    p.add_argument("--arch", required=True, choices=["llava", "instructblip"])
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--text-layers", dest="text_layers", type=int)
    p.add_argument("--text-heads", dest="text_heads", type=int)
    p.add_argument("--text-hidden", dest="text_hidden", type=int)
    p.add_argument("--image-size", dest="image_size", type=int)
    p.add_argument("--init-std", dest="init_std", type=float)
    p.set_defaults(func=cmd_toy_model)
