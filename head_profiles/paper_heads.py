"""The attention heads the V-SEAM paper publishes, transcribed as data, and the generator of `head_profiles/paper/`.

Source: "V-SEAM: Visual Semantic Editing and Attention Modulating for Causal Interpretability of Vision-Language
Models" (Wang, Hu, Jiang), Table 2 (heads shared by every task of a semantic level) and Table 13 (top-10 positive
and negative heads per task), for LLaVA-1.5-7B and InstructBLIP-Vicuna-7B. Indices are 0-based exactly as printed
(the tables use L0..L31 and H0..H31), which is also the profile format's convention.

The paper publishes head identities, not λ and not the raw scores c(h, l). The shipped profiles are therefore the
paper's removal baselines of its Table 3, never a rescaling with invented λ:

- ``<model>-<target>-wo-negative``: the published negative heads removed (listed as negative, λ = 1, scale 0);
- ``<model>-<target>-wo-positive``: the published positive heads removed. Removal is "negative with λ = 1" in the
  profile format, so these heads also sit in the profile's ``negative`` list although the paper calls them positive.

``<target>`` is a semantic level (Table 2: attribute, object, relation) or a task (Table 13: color, material,
indoor, animal, vehicle, action, spatial). To compare a calibration with the paper's positive/negative split, use
the published sets directly: ``vseam profile compare mine.json paper:llava-color``.

Irregularities of the printed tables are kept verbatim in TABLE_2/TABLE_13 and resolved by `paper_heads()`;
`RECORDED_DUPLICATES`, `RECORDED_SHORT_LISTS` and `RECORDED_IN_BOTH_SETS` state them explicitly (a test checks that
they are exactly what the data shows):

- InstructBLIP Indoor and Animal positives print L23 H30 twice: kept once, so those lists have 9 distinct heads;
- InstructBLIP Spatial negatives print only 9 heads;
- InstructBLIP Color lists L6 H10, L10 H7, L10 H23, L11 H26 and Material lists L11 H27 as both positive and
  negative (the text calls the two kinds mutually exclusive). Each shipped profile removes one of the two sets, so
  both profiles stay valid; `paper:` references report these heads in both sets.
- Table 2 is exactly the intersection of the Table 13 lists of each level's tasks (checked by a test), so its
  profiles record k = 10, the K those lists were cut at.

Regenerate the shipped files after editing the data: ``python -m vseam.head_profiles.paper_heads`` (``--check`` only
reports drift and exits 1 when files differ).
"""

from __future__ import annotations

import argparse
import pathlib
import sys
from dataclasses import dataclass

from vseam.head_profiles.model import Fingerprint, Head, HeadProfile, ProfileError, Provenance, Scope
from vseam.core.vocab import SEMANTIC_LEVELS, SUBTYPE_LEVEL, SUBTYPES

Pair = tuple[int, int]

PAPER_DIR = pathlib.Path(__file__).with_name("paper")
PAPER_TITLE = "V-SEAM (Wang, Hu, Jiang)"

#: the checkpoints the paper's heads were found in. LLaVA's LM vocabulary (32064) is that of the hub config; for
#: InstructBLIP the hub config's LM vocabulary could not be confirmed offline (32001 at conversion, possibly padded
#: later), so it is left null, which fingerprint matching ignores.
FINGERPRINTS: dict[str, Fingerprint] = {
    "llava": Fingerprint(
        architecture="LlavaForConditionalGeneration",
        model_id="llava-hf/llava-1.5-7b-hf",
        num_layers=32,
        num_heads=32,
        head_dim=128,
        hidden_size=4096,
        vocab_size=32064,
    ),
    "instructblip": Fingerprint(
        architecture="InstructBlipForConditionalGeneration",
        model_id="Salesforce/instructblip-vicuna-7b",
        num_layers=32,
        num_heads=32,
        head_dim=128,
        hidden_size=4096,
        vocab_size=None,
    ),
}
MODEL_NAMES = {"llava": "LLaVA-1.5-7B", "instructblip": "InstructBLIP-Vicuna-7B"}

POLARITIES = ("positive", "negative")
#: K of the paper's top-K selection (Table 13 lists the top 10 of each task)
TOP_K = 10
#: fixed so that regenerating the files is reproducible (the drift test compares bytes)
TRANSCRIBED_WITH = "0.1.0"
TRANSCRIBED_AT = "2026-11-24T00:00:00+00:00"

# ---- the transcription: (layer, head) in the order printed, duplicates and all -----------------------------------
TABLE_2: dict[str, dict[str, dict[str, tuple[Pair, ...]]]] = {
    "llava": {
        "attribute": {
            "positive": ((16, 1), (15, 7), (22, 11)),
            "negative": ((31, 11), (30, 11), (29, 11)),
        },
        "object": {
            "positive": ((0, 11), (26, 11), (11, 7)),
            "negative": ((31, 11), (30, 11), (29, 11), (12, 2), (7, 2), (9, 27)),
        },
        "relation": {
            "positive": ((13, 8), (14, 15)),
            "negative": ((31, 11), (30, 11), (29, 11), (0, 11)),
        },
    },
    "instructblip": {
        "attribute": {
            "positive": ((11, 27), (6, 30)),
            "negative": ((0, 30), (10, 23), (6, 7), (6, 10), (7, 2), (30, 30)),
        },
        "object": {
            "positive": ((11, 28), (7, 20), (23, 30), (12, 31)),
            "negative": ((0, 30), (6, 10), (10, 9), (30, 30), (12, 25)),
        },
        "relation": {
            "positive": ((23, 16), (15, 22), (31, 19), (11, 5), (9, 28), (7, 19), (8, 28)),
            "negative": ((12, 25), (10, 12), (6, 27), (30, 30)),
        },
    },
}

TABLE_13: dict[str, dict[str, dict[str, tuple[Pair, ...]]]] = {
    "llava": {
        "color": {
            "positive": ((6, 19), (26, 15), (16, 4), (11, 29), (15, 7), (16, 1), (0, 11), (22, 11), (7, 23),
                (24, 11)),
            "negative": ((31, 11), (30, 11), (29, 11), (9, 12), (26, 11), (7, 27), (15, 26), (10, 18), (10, 1),
                (15, 3)),
        },
        "material": {
            "positive": ((12, 23), (16, 1), (3, 14), (13, 8), (6, 17), (9, 22), (14, 18), (22, 11), (8, 15), (15, 7)),
            "negative": ((30, 11), (31, 11), (29, 11), (11, 29), (3, 11), (2, 11), (4, 11), (9, 24), (10, 16),
                (7, 12)),
        },
        "indoor": {
            "positive": ((0, 11), (0, 23), (26, 11), (7, 20), (2, 16), (1, 17), (14, 18), (6, 26), (22, 11), (11, 7)),
            "negative": ((31, 11), (30, 11), (29, 11), (12, 2), (7, 2), (2, 11), (10, 11), (9, 27), (12, 29),
                (12, 13)),
        },
        "animal": {
            "positive": ((0, 11), (26, 11), (1, 2), (11, 3), (11, 7), (2, 2), (6, 8), (15, 11), (10, 26), (11, 1)),
            "negative": ((31, 11), (30, 11), (12, 2), (29, 11), (2, 31), (7, 2), (9, 27), (7, 9), (5, 0), (7, 1)),
        },
        "vehicle": {
            "positive": ((0, 11), (26, 11), (8, 11), (2, 2), (1, 2), (11, 7), (10, 15), (11, 17), (13, 4), (11, 1)),
            "negative": ((31, 11), (30, 11), (29, 11), (12, 2), (9, 30), (11, 30), (9, 27), (12, 29), (7, 2),
                (12, 13)),
        },
        "action": {
            "positive": ((16, 1), (26, 11), (1, 16), (13, 8), (8, 13), (8, 10), (12, 16), (14, 15), (5, 16),
                (13, 24)),
            "negative": ((31, 11), (30, 11), (29, 11), (12, 14), (10, 1), (1, 4), (12, 2), (5, 19), (0, 11), (2, 11)),
        },
        "spatial": {
            "positive": ((10, 17), (14, 15), (15, 18), (18, 17), (10, 14), (8, 27), (9, 28), (2, 23), (13, 8),
                (8, 20)),
            "negative": ((31, 11), (30, 11), (29, 11), (0, 11), (15, 23), (15, 10), (15, 4), (3, 11), (6, 14),
                (1, 16)),
        },
    },
    "instructblip": {
        "color": {
            "positive": ((11, 26), (10, 7), (6, 30), (9, 17), (10, 9), (6, 10), (10, 23), (6, 27), (11, 27),
                (11, 11)),
            "negative": ((0, 30), (10, 23), (6, 7), (29, 30), (11, 26), (6, 10), (10, 7), (7, 2), (30, 30), (9, 18)),
        },
        "material": {
            "positive": ((23, 30), (7, 5), (6, 30), (11, 5), (8, 21), (7, 19), (11, 27), (5, 28), (11, 20), (12, 6)),
            "negative": ((0, 30), (10, 23), (6, 10), (7, 2), (30, 30), (10, 12), (13, 19), (11, 27), (6, 7), (15, 5)),
        },
        "indoor": {
            "positive": ((23, 30), (11, 23), (7, 20), (11, 28), (23, 30), (9, 0), (12, 31), (6, 29), (11, 6),
                (7, 19)),
            "negative": ((0, 30), (8, 27), (6, 10), (30, 30), (12, 25), (10, 9), (13, 19), (14, 25), (30, 4),
                (10, 8)),
        },
        "animal": {
            "positive": ((23, 30), (5, 28), (23, 30), (9, 0), (11, 28), (15, 22), (7, 20), (7, 13), (7, 11),
                (12, 31)),
            "negative": ((0, 30), (6, 10), (10, 9), (0, 28), (12, 25), (13, 28), (10, 12), (30, 30), (6, 7), (5, 16)),
        },
        "vehicle": {
            "positive": ((23, 30), (7, 20), (11, 28), (12, 22), (11, 5), (12, 31), (10, 10), (8, 13), (9, 28),
                (31, 19)),
            "negative": ((0, 30), (6, 10), (10, 9), (30, 30), (12, 25), (7, 4), (6, 7), (6, 27), (8, 27), (10, 12)),
        },
        "action": {
            "positive": ((23, 16), (3, 30), (8, 28), (15, 22), (10, 11), (11, 5), (9, 28), (7, 19), (10, 6),
                (31, 19)),
            "negative": ((6, 27), (12, 25), (10, 9), (7, 3), (6, 10), (10, 0), (10, 12), (30, 30), (30, 4), (7, 27)),
        },
        "spatial": {
            "positive": ((23, 16), (15, 22), (31, 19), (11, 5), (11, 28), (10, 1), (7, 19), (9, 28), (5, 30),
                (8, 28)),
            "negative": ((10, 10), (12, 25), (6, 27), (13, 19), (0, 30), (12, 27), (5, 23), (30, 30), (10, 12)),
        },
    },
}

# ---- what the printed tables do not get right (stated, and checked against the data by a test) ------------------
#: entries printed more than once in one list: (model, task, set) -> the repeated heads (kept once)
RECORDED_DUPLICATES: dict[tuple[str, str, str], tuple[Pair, ...]] = {
    ("instructblip", "indoor", "positive"): ((23, 30),),
    ("instructblip", "animal", "positive"): ((23, 30),),
}
#: Table 13 lists with fewer than TOP_K printed entries: (model, task, set) -> entries printed
RECORDED_SHORT_LISTS: dict[tuple[str, str, str], int] = {
    ("instructblip", "spatial", "negative"): 9,
}
#: Table 13 heads printed as both positive and negative for the same task: (model, task) -> heads
RECORDED_IN_BOTH_SETS: dict[tuple[str, str], tuple[Pair, ...]] = {
    ("instructblip", "color"): ((6, 10), (10, 7), (10, 23), (11, 26)),
    ("instructblip", "material"): ((11, 27),),
}


def label(pair: Pair) -> str:
    return f"L{pair[0]}.H{pair[1]}"


def _dedupe(pairs: tuple[Pair, ...]) -> tuple[tuple[Pair, ...], tuple[Pair, ...]]:
    """Keep the first occurrence of each head (paper order); return (kept, repeated)."""
    kept: list[Pair] = []
    repeated: list[Pair] = []
    for p in pairs:
        (repeated if p in kept else kept).append(p)
    return tuple(kept), tuple(repeated)


@dataclass(frozen=True)
class PaperHeads:
    """One model's row of Table 2 (a semantic level) or Table 13 (a task), with repeated entries dropped."""

    model: str
    target: str
    table: int
    positive: tuple[Pair, ...]
    negative: tuple[Pair, ...]
    printed: dict[str, int]
    repeated: dict[str, tuple[Pair, ...]]

    @property
    def ref(self) -> str:
        """How to name this row: `<model>-<target>`, e.g. llava-color (usable as `paper:llava-color`)."""
        return f"{self.model}-{self.target}"

    @property
    def level(self) -> str:
        return self.target if self.table == 2 else SUBTYPE_LEVEL[self.target]

    @property
    def subtypes(self) -> list[str]:
        if self.table == 2:
            return [s for s in SUBTYPES if SUBTYPE_LEVEL[s] == self.target]
        return [self.target]

    @property
    def in_both(self) -> tuple[Pair, ...]:
        return tuple(sorted(set(self.positive) & set(self.negative)))

    def heads(self, polarity: str) -> tuple[Pair, ...]:
        return self.positive if polarity == "positive" else self.negative


def _row(model: str, target: str, table: int, printed: dict[str, tuple[Pair, ...]]) -> PaperHeads:
    kept, repeated = {}, {}
    for pol in POLARITIES:
        kept[pol], repeated[pol] = _dedupe(printed[pol])
    return PaperHeads(
        model=model,
        target=target,
        table=table,
        positive=kept["positive"],
        negative=kept["negative"],
        printed={pol: len(printed[pol]) for pol in POLARITIES},
        repeated={pol: rep for pol, rep in repeated.items() if rep},
    )


def paper_heads() -> list[PaperHeads]:
    """Every published row: per model, Table 2's three levels, then Table 13's seven tasks (paper order)."""
    rows = []
    for model in FINGERPRINTS:
        for level in SEMANTIC_LEVELS:
            rows.append(_row(model, level, 2, TABLE_2[model][level]))
        for task, printed in TABLE_13[model].items():
            rows.append(_row(model, task, 13, printed))
    return rows


def paper_ref(ref: str) -> PaperHeads:
    """The published row named `ref` ("llava-color" or "paper:llava-color")."""
    key = ref.removeprefix("paper:")
    rows = {r.ref: r for r in paper_heads()}
    if key not in rows:
        raise ProfileError(f"{ref}: no such paper head list (known: {', '.join('paper:' + k for k in rows)})")
    return rows[key]


# ---- the shipped profiles -----------------------------------------------------------------------------------
def _notes(row: PaperHeads, removed: str) -> str:
    kept = "negative" if removed == "positive" else "positive"
    what = (
        f"Table 2 ({row.level} level: the heads shared by the top-{TOP_K} lists of every {row.level} task, "
        f"{', '.join(row.subtypes)})"
        if row.table == 2
        else f"Table 13 ({row.target} task, top-{TOP_K} list)"
    )
    heads = row.heads(removed)
    parts = [
        f"Removal baseline 'w/o {removed}' of the V-SEAM paper for {MODEL_NAMES[row.model]}: the {len(heads)} "
        f"{removed} heads of {what}, each removed (listed as negative with lambda=1, scale 0).",
    ]
    if removed == "positive":
        parts.append(
            "These are the paper's POSITIVE heads; they sit in the 'negative' list only because removal is "
            "'negative with lambda=1' in the profile format."
        )
    parts.append(
        "The paper publishes head identities only, not lambda or scores: no lambda was invented and scores are "
        "null; for rescaling (Eq 10) calibrate the model with vseam. The paper does not say whether its removal "
        "zeroes a head or replaces it by the mean of the other heads (Eq 5); this profile zeroes it."
    )
    for pair in row.repeated.get(removed, ()):
        parts.append(f"The table prints {label(pair)} twice in this list; it is kept once.")
    if row.table == 13 and row.printed[removed] < TOP_K:
        parts.append(f"The table prints only {row.printed[removed]} heads for this list (top-{TOP_K} expected).")
    if row.in_both:
        parts.append(
            f"The table also lists {', '.join(label(p) for p in row.in_both)} among this task's {kept} heads."
        )
    parts.append(f"Compare a calibration with the published sets: vseam profile compare FILE paper:{row.ref}")
    return " ".join(parts)


def profile_for(row: PaperHeads, removed: str) -> HeadProfile:
    """The paper's 'w/o `removed`' baseline for one row: those heads removed (negative, λ = 1), score null."""
    if removed not in POLARITIES:
        raise ValueError(f"removed must be one of {POLARITIES}, got {removed!r}")
    return HeadProfile(
        name=f"{row.ref}-wo-{removed}",
        fingerprint=FINGERPRINTS[row.model],
        scope=Scope(level=row.level, subtypes=row.subtypes),
        k=TOP_K,
        positive=[],
        negative=[Head(layer=l, head=h, lam=1.0) for l, h in row.heads(removed)],
        provenance=Provenance(
            method=f"paper table {row.table}",
            dataset="GQA subsets of the V-SEAM paper (its Sec 5.1)",
            tool_version=TRANSCRIBED_WITH,
            created=TRANSCRIBED_AT,
            notes=_notes(row, removed),
        ),
    )


def build_profiles() -> dict[str, HeadProfile]:
    """File name -> profile, for every shipped file (both baselines of every row)."""
    out = {}
    for row in paper_heads():
        for removed in ("negative", "positive"):
            p = profile_for(row, removed)
            out[f"{p.name}.json"] = p
    return out


def drift(out_dir: pathlib.Path = PAPER_DIR) -> list[str]:
    """How the files in `out_dir` differ from what the transcription produces (empty when they agree)."""
    expected = build_profiles()
    problems = []
    for fname, profile in expected.items():
        path = out_dir / fname
        if not path.is_file():
            problems.append(f"{path}: missing")
        elif path.read_text() != profile.to_json():
            problems.append(f"{path}: differs from the transcription")
    for path in sorted(out_dir.glob("*.json")):
        if path.name not in expected:
            problems.append(f"{path}: not produced by the transcription")
    return problems


def write_profiles(out_dir: pathlib.Path = PAPER_DIR) -> list[pathlib.Path]:
    """Write every shipped profile into `out_dir` and delete *.json files there that the transcription no longer
    produces (the folder belongs to this generator)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    expected = build_profiles()
    for path in out_dir.glob("*.json"):
        if path.name not in expected:
            path.unlink()
    return [profile.save(out_dir / fname) for fname, profile in expected.items()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m vseam.head_profiles.paper_heads", description="write the paper's head profiles (Tables 2 and 13)"
    )
    parser.add_argument("--out", type=pathlib.Path, default=PAPER_DIR, help="output folder (default: %(default)s)")
    parser.add_argument("--check", action="store_true", help="only report files that differ; exit 1 if any")
    args = parser.parse_args(argv)
    if args.check:
        problems = drift(args.out)
        for line in problems:
            print(line)
        print("paper profiles are up to date" if not problems else f"{len(problems)} file(s) out of date")
        return 1 if problems else 0
    paths = write_profiles(args.out)
    print(f"wrote {len(paths)} profiles to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
