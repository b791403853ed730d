"""`vseam profile ...`: validate, show, build from a hand-written head list, print scales, compare, bake, export a LoRA."""

from __future__ import annotations

import argparse
import json

from vseam.head_profiles.heads import parse_heads
from vseam.head_profiles.model import ProfileError, Provenance, Scope, load_profile
from vseam.core.vocab import LEVELS


def _fingerprint(model: str):
    from vseam.core.families import fingerprint_of

    try:
        return fingerprint_of(model)
    except (OSError, ValueError) as e:
        raise ProfileError(f"--model {model}: {e}") from None


def cmd_validate(args) -> int:
    profile = load_profile(args.file)
    if args.model:
        profile.check_fits(_fingerprint(args.model), source=args.file)
    fp = profile.fingerprint
    where = f" and fits {args.model}" if args.model else ""
    print(
        f"{args.file}: valid profile '{profile.name}' for {fp.model_id} "
        f"({len(profile.positive)} positive, {len(profile.negative)} negative heads){where}"
    )
    return 0


def cmd_show(args) -> int:
    from rich.console import Console
    from rich.table import Table

    p = load_profile(args.file)
    fp, pv = p.fingerprint, p.provenance
    console = Console()
    console.print(f"[bold]{p.name}[/bold]  scope={p.scope.level} {','.join(p.scope.subtypes) or ''}  K={p.k}  "
                  f"strength α={p.alpha:g}{'' if p.strength is not None else ' (Eq 10)'}")
    console.print(
        f"model {fp.model_id} ({fp.architecture}): {fp.num_layers} layers x {fp.num_heads} heads x {fp.head_dim}"
    )
    console.print(
        f"made by {pv.method} on {pv.dataset or '-'}: correct={pv.n_correct} incorrect={pv.n_incorrect} "
        f"fraction={pv.fraction} seed={pv.seed} vseam {pv.tool_version} at {pv.created}"
    )
    if pv.split or pv.aggregate:
        console.print(f"Eq-7 inputs: {pv.split or '-'}, aggregation: {pv.aggregate or '-'}")
    if pv.selection:
        sel = pv.selection
        console.print(f"K and α chosen on {sel.held_out_questions} held-out calibration questions "
                      f"({sel.held_out_fraction:g} of them): accuracy {sel.accuracy_unedited} unedited -> "
                      f"{sel.accuracy_chosen} chosen (K grid {sel.k_grid}, α grid {sel.strength_grid})")
    if pv.notes:
        console.print(f"notes: {pv.notes}")
    table = Table("set", "head", "λ", "score c", "scale")
    scales = p.scales()
    for set_name, heads in (("positive", p.positive), ("negative", p.negative)):
        for h in heads:
            score = "-" if h.score is None else f"{h.score:+.4g}"
            table.add_row(set_name, h.label(), f"{h.lam:.3f}", score, f"{scales[h.layer, h.head]:.3f}")
    console.print(table)
    return 0


def cmd_scales(args) -> int:
    p = load_profile(args.file)
    doc = {
        "num_layers": p.fingerprint.num_layers,
        "num_heads": p.fingerprint.num_heads,
        "strength": p.alpha,
        "scales": [[l, h, s] for l, h, s in p.scale_entries()],
    }
    print(json.dumps(doc))
    return 0


def cmd_from_heads(args) -> int:
    fp = _fingerprint(args.model)
    positive = parse_heads(args.positive, "--positive")
    negative = parse_heads(args.negative, "--negative")
    data = dict(
        name=args.name,
        fingerprint=fp.model_dump(),
        scope=Scope(level=args.level, subtypes=args.subtypes.split(",") if args.subtypes else []).model_dump(),
        k=max(len(positive), len(negative)),
        positive=[h.model_dump(by_alias=True) for h in positive],
        negative=[h.model_dump(by_alias=True) for h in negative],
        provenance=Provenance.new("hand-written", notes=args.notes).model_dump(),
    )
    from vseam.head_profiles.model import parse_profile

    profile = parse_profile(data, source=args.out)
    profile.save(args.out)
    print(f"wrote {args.out}: '{profile.name}' with {len(positive)} positive, {len(negative)} negative heads")
    return 0


def cmd_bake(args) -> int:
    from vseam.head_profiles.portable import BAKED_FILE, bake

    r = bake(args.file, args.model, args.out)
    print(f"wrote {r.out}: o_proj of layers {r.changed_layers} scaled in {', '.join(r.rewritten) or 'no file'}; "
          f"{r.linked} files hard-linked, {r.copied} copied; provenance in {BAKED_FILE}")
    return 0


def cmd_export_lora(args) -> int:
    from vseam.head_profiles.portable import export_lora

    r = export_lora(args.file, args.model, args.out, max_rank=args.max_rank)
    used = {l: n for l, n in r.layer_ranks.items() if n}
    print(f"wrote {r.out}: LoRA adapter of rank {r.rank} on {len(r.modules)} o_proj modules "
          f"(layer ranks {used}), {r.bytes / 2**20:.1f} MiB; serve it with vLLM --enable-lora "
          f"--max-lora-rank >= {r.rank}")
    return 0


def cmd_schema(args) -> int:
    from vseam.head_profiles.model import json_schema, write_schema

    if args.write:
        print(f"wrote {write_schema()}")
    else:
        print(json.dumps(json_schema(), indent=2, sort_keys=True))
    return 0


def cmd_compare(args) -> int:
    from vseam.head_profiles.compare import compare, load_head_sets, render_json, render_text

    result = compare(load_head_sets(args.a), load_head_sets(args.b))
    print(render_json(result) if args.json else render_text(result))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("profile", help="inspect, validate and write head profiles")
    ps = p.add_subparsers(dest="profile_cmd", required=True)

    v = ps.add_parser("validate", help="check a profile file (and that it fits --model)")
    v.add_argument("file")
    v.add_argument("--model", help="checkpoint directory (or hub id in the local cache) the profile must fit")
    v.set_defaults(func=cmd_validate)

    s = ps.add_parser("show", help="print a readable table of heads and scales")
    s.add_argument("file")
    s.set_defaults(func=cmd_show)

    sc = ps.add_parser("scales", help="print the derived per-head scales (Eq 10) as JSON")
    sc.add_argument("file")
    sc.set_defaults(func=cmd_scales)

    f = ps.add_parser("from-heads", help="write a profile from a hand-written head list")
    f.add_argument("--model", required=True, help="checkpoint directory whose fingerprint the profile gets")
    f.add_argument("--name", required=True)
    f.add_argument("--positive", default="", help='e.g. "L11.H28=0.8,L7.H20=0.5" (λ defaults to 1)')
    f.add_argument("--negative", default="", help='e.g. "L0.H30=1.0"; λ=1 removes the head')
    f.add_argument("--level", default="all", choices=LEVELS)
    f.add_argument("--subtypes", default="", help="comma-separated, e.g. color,material")
    f.add_argument("--notes", default=None)
    f.add_argument("--out", required=True)
    f.set_defaults(func=cmd_from_heads)

    c = ps.add_parser("compare", help="overlap of the positive and negative head sets of two profiles")
    c.add_argument("a", help="profile file, or paper:<model>-<target> (e.g. paper:llava-color) for the paper's heads")
    c.add_argument("b", help="profile file, or paper:<model>-<target>")
    c.add_argument("--json", action="store_true", help="print the comparison as JSON")
    c.set_defaults(func=cmd_compare)

    b = ps.add_parser("bake", help="write a copy of a checkpoint with the profile multiplied into its o_proj weights")
    b.add_argument("file", help="head profile JSON")
    b.add_argument("--model", required=True, help="checkpoint directory (or hub id in the local cache)")
    b.add_argument("--out", required=True, help="new checkpoint directory (must not exist or be empty)")
    b.set_defaults(func=cmd_bake)

    lo = ps.add_parser("export-lora", help="write the profile as a PEFT LoRA adapter on the language model's o_proj")
    lo.add_argument("file", help="head profile JSON")
    lo.add_argument("--model", required=True, help="checkpoint directory (or hub id in the local cache)")
    lo.add_argument("--out", required=True, help="adapter directory (must not exist or be empty)")
    lo.add_argument("--max-rank", type=int, default=512,
                    help="refuse adapters above this rank (default 512, the largest vLLM accepts)")
    lo.set_defaults(func=cmd_export_lora)

    j = ps.add_parser("schema", help="print (or --write) the JSON schema of the profile format")
    j.add_argument("--write", action="store_true", help="regenerate head_profiles/schema.json")
    j.set_defaults(func=cmd_schema)
