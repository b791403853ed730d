"""The calibration run report: counts, chosen heads, Eq-3 patching peaks, head/bbox attention overlap (Table 14).

Head/bbox overlap (paper appendix F, Table 14): for a chosen head, the attention it pays from the answer position
to the image tokens whose patch lies inside the asked-about box(es), divided by the attention it pays to all image
tokens, averaged over the attributed questions' clean images. Patches are weighted by the fraction of their area the boxes cover,
in the coordinates of the model's own image crop. It needs image tokens with a spatial layout (LLaVA's patch grid,
`family.image_grid`); InstructBLIP's query tokens have none, and the report says so.
"""

from __future__ import annotations

import contextlib
import json
import pathlib
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from vseam.calibrate.records import Box, VQARecord
from vseam.head_profiles import HeadProfile
from vseam.core.engine import HeadEngine


def _size_get(obj: Any, key: str):
    if obj is None:
        return None
    if isinstance(obj, dict):
        return obj.get(key)
    return getattr(obj, key, None)


def crop_geometry(image_processor: Any, width: int, height: int) -> tuple[float, float, float, float, float, float]:
    """(scale_x, scale_y, offset_x, offset_y, crop_w, crop_h): original pixels -> the model's input crop.

    Resize (shortest edge, or to a fixed height x width) followed by an optional centre crop, as CLIP-style image
    processors do.
    """
    size = getattr(image_processor, "size", None)
    shortest = _size_get(size, "shortest_edge")
    if shortest:
        s = float(shortest) / min(width, height)
        new_w, new_h = width * s, height * s
        sx = sy = s
    else:
        new_w = float(_size_get(size, "width") or width)
        new_h = float(_size_get(size, "height") or height)
        sx, sy = new_w / width, new_h / height
    crop = getattr(image_processor, "crop_size", None)
    if getattr(image_processor, "do_center_crop", False) and crop is not None:
        cw, ch = float(_size_get(crop, "width")), float(_size_get(crop, "height"))
        ox, oy = (new_w - cw) / 2.0, (new_h - ch) / 2.0
    else:
        cw, ch, ox, oy = new_w, new_h, 0.0, 0.0
    return sx, sy, ox, oy, cw, ch


def box_coverage(boxes: Sequence[Box], image_size: tuple[int, int], image_processor: Any, grid: tuple[int, int]) -> np.ndarray:
    """[rows, cols] fraction of each patch's area inside any of the boxes (union approximated by the maximum)."""
    rows, cols = grid
    sx, sy, ox, oy, cw, ch = crop_geometry(image_processor, *image_size)
    cov = np.zeros((rows, cols))
    pw, ph = cw / cols, ch / rows
    for b in boxes:
        x0, y0, x1, y1 = b.xyxy()
        x0, x1 = x0 * sx - ox, x1 * sx - ox
        y0, y1 = y0 * sy - oy, y1 * sy - oy
        for r in range(rows):
            oy_ = max(0.0, min(y1, (r + 1) * ph) - max(y0, r * ph))
            if oy_ <= 0:
                continue
            for c in range(cols):
                ox_ = max(0.0, min(x1, (c + 1) * pw) - max(x0, c * pw))
                if ox_ > 0:
                    cov[r, c] = max(cov[r, c], (ox_ * oy_) / (pw * ph))
    return cov


@contextlib.contextmanager
def _eager_attention(engine: HeadEngine) -> Iterator[dict[int, torch.Tensor]]:
    """Run the model with eager attention and collect each LM layer's attention probabilities [B, H, T, T]."""
    model = engine.model
    before = model.config._attn_implementation
    caps: dict[int, torch.Tensor] = {}
    handles = []

    def make(i):
        def hook(module, args, output):
            if isinstance(output, tuple) and len(output) > 1 and output[1] is not None:
                caps[i] = output[1].detach()

        return hook

    model.set_attn_implementation("eager")
    try:
        for i, layer in enumerate(engine.family.lm_layers(model)):
            handles.append(layer.self_attn.register_forward_hook(make(i)))
        yield caps
    finally:
        for h in handles:
            h.remove()
        model.set_attn_implementation(before)


@torch.no_grad()
def record_overlap(engine: HeadEngine, record: VQARecord, grid: tuple[int, int]) -> np.ndarray | None:
    """[L, H] share of each head's image attention (answer position, clean image) that falls inside the boxes."""
    from PIL import Image

    if not record.boxes:
        return None
    with Image.open(record.image) as im:
        image = im.convert("RGB")
    batch = engine.encode([image], [engine.family.binary_text(record.question)])
    image_pos = engine.family.image_positions(batch["input_ids"], engine.model.config)[0]
    n = int(image_pos.sum())
    if n != grid[0] * grid[1]:
        return None
    cov = torch.as_tensor(box_coverage(record.boxes, image.size, engine.processor.image_processor, grid).ravel())
    with _eager_attention(engine) as caps:
        engine.next_token_logprobs(batch)
    out = np.zeros((len(caps), engine.num_heads))
    for l in sorted(caps):
        a = caps[l][0, :, -1, :].double()[:, image_pos]  # [H, n] attention to image tokens
        total = a.sum(dim=-1)
        inside = (a * cov[None, :]).sum(dim=-1)
        out[l] = torch.where(total > 0, inside / total, torch.zeros_like(total)).numpy()
    return out


def head_bbox_overlap(
    engine: HeadEngine, records: Sequence[VQARecord], profiles: Sequence[HeadProfile], max_images: int = 32
) -> dict:
    """Table 14 for every profile: mean overlap (%) of its positive and negative heads over its group's questions
    (the first `max_images` questions with boxes, clean images)."""
    grid = engine.family.image_grid(engine.model.config)
    if grid is None:
        return {"available": False, "reason": f"{engine.family.name} image tokens have no spatial layout"}
    per_q: dict[str, np.ndarray] = {}
    for r in records:
        if len(per_q) >= max_images:
            break
        ov = record_overlap(engine, r, grid)
        if ov is not None:
            per_q[f"{r.dataset}:{r.qid}"] = ov
    if not per_q:
        return {"available": False, "reason": "no question with boxes and a full image-token grid"}
    level_of = {f"{r.dataset}:{r.qid}": (r.level, r.subtype) for r in records}
    table = {}
    for p in profiles:
        keys = [
            k for k in per_q
            if p.scope.level == "all"
            or (level_of[k][0] == p.scope.level and (not p.scope.subtypes or level_of[k][1] in p.scope.subtypes))
        ]
        if not keys:
            continue
        stack = np.stack([per_q[k] for k in keys])  # [N, L, H]
        row = {"images": len(keys)}
        for set_name in ("positive", "negative"):
            heads = getattr(p, set_name)
            row[set_name] = (
                float(100.0 * np.mean([stack[:, h.layer, h.head].mean() for h in heads])) if heads else None
            )
        row["all_heads"] = float(100.0 * stack.mean())
        table[p.name] = row
    return {"available": True, "grid": list(grid), "images": len(per_q), "profiles": table}


# ---- writing -----------------------------------------------------------------------------------------------------


def _fmt(v, spec=".1f") -> str:
    return "-" if v is None else format(v, spec)


def _stage1_lines(stage1: dict) -> list[str]:
    """Stage 1 counts: records, edits (accepted / rejected by reason), Eq-4 selection per subtype."""
    out = []
    if "source" in stage1:
        what = "triples" if "triples" in stage1 else "questions"
        return [f"- {what} read from `{stage1['source']}`: {stage1.get(what)}"]
    out.append(f"- records: {stage1.get('records')}")
    for reason, n in (stage1.get("records_skipped") or {}).items():
        out.append(f"  - skipped {n}: {reason}")
    out.append(f"- edits accepted: {stage1.get('edits_accepted')} (contact sheet: `{stage1.get('contact_sheet')}`)")
    for key, label in (("edits_rejected", "rejected"), ("edits_pending", "pending")):
        for reason, n in (stage1.get(key) or {}).items():
            out.append(f"  - {label} {n}: {reason}")
    per = stage1.get("eq4_per_subtype")
    if per:
        out += ["", "| subtype | edited pairs | clean answered right | Eq-4 triples |", "|---|---|---|---|"]
        for sub, c in sorted(per.items()):
            out.append(f"| {sub} | {c['pairs']} | {c['clean_correct']} | {c['kept']} |")
    elif "eq4_filter" in stage1:
        out.append(f"- Eq-4 filter {stage1['eq4_filter']}: {stage1.get('kept')} of {stage1.get('pairs')} pairs used")
    return out


def write_report(
    run, *, model: str, dataset: str, stage1: dict, counts: dict, scores: dict, profiles: Sequence[HeadProfile],
    paths: Sequence[pathlib.Path], patching: dict, overlap: dict, timings: dict, method: str, triples_total: int,
    split: str, aggregate: str, selection: dict | None, min_incorrect: int, triple_counts: dict,
    answered: dict | None = None,
) -> pathlib.Path:
    from vseam.calibrate.patching import MODULES, peaks

    lines = [
        f"# Calibration run `{run.root.name}`",
        "",
        f"- model: `{model}`",
        f"- dataset: `{dataset}`; created {run.created}",
        f"- attribution: {method}; Eq-7 inputs `{split}`, aggregation `{aggregate}`",
        f"- questions attributed: {sum(counts.values())} "
        + "(" + ", ".join(f"{k} {v}" for k, v in counts.items()) + f"); Eq-4 triples among them: "
        f"{sum(triple_counts.values())} (of {triples_total})",
        *([f"- `--max-correct {answered['max_correct']}`: the unedited model answered {answered['questions']} "
           f"questions and got {sum(answered['wrong'].values())} wrong ("
           + ", ".join(f"{k} {v}" for k, v in answered['wrong'].items()) + "); every wrong one and at most "
           f"{answered['max_correct']} right ones per subtype were attributed"] if answered else []),
        "",
        "## Stage 1",
        "",
    ]
    lines += _stage1_lines(stage1)
    lines += ["", "## Inputs per profile group (Eq 7)", "", "| group | D_correct | D_incorrect | subtypes |", "|---|---|---|---|"]
    thin = []
    for g, (s, subtypes) in scores.items():
        lines.append(f"| {g} | {s.n_correct} | {s.n_incorrect} | {', '.join(subtypes) or '-'} |")
        if s.n_incorrect < min_incorrect:
            thin.append(f"{g} ({s.n_incorrect})")
    if thin:
        lines += ["", f"**Warning:** the negative heads of {', '.join(thin)} rest on fewer than {min_incorrect} "
                      "incorrectly answered inputs; calibrate on more questions before trusting them."]
    if selection:
        lines += ["", "## K and strength α chosen on held-out calibration questions", "",
                  "Accuracy (%) of each candidate on the group's held-out questions (α = 0 is the unedited model); "
                  "the chosen one is marked *. Figure: `selection.png`.", ""]
        for g, res in selection.items():
            ks = sorted({c.k for c in res.candidates})
            strengths = sorted({c.strength for c in res.candidates})
            acc = {(c.k, c.strength): c.accuracy for c in res.candidates}
            lines += [f"**{g}** ({res.n} held-out questions; unedited {100 * res.unedited:.1f})", "",
                      "| K | " + " | ".join(f"α={a:g}" for a in strengths) + " |",
                      "|---|" + "---|" * len(strengths)]
            for k in ks:
                cells = []
                for a in strengths:
                    mark = "*" if (k, a) == (res.chosen.k, res.chosen.strength) else ""
                    cells.append(f"{100 * acc[(k, a)]:.1f}{mark}")
                lines.append(f"| {k} | " + " | ".join(cells) + " |")
            if res.chosen.strength == 0:
                lines.append("| chosen | α = 0 (the unedited model; no candidate beat it) |")
            lines.append("")
    lines += ["", "## Profiles", ""]
    for p, path in zip(profiles, paths):
        lines += [f"### {p.name} (`{path.relative_to(run.root)}`; K={p.k}, α={p.alpha:g})", "",
                  "| set | head | λ | c | scale |", "|---|---|---|---|---|"]
        scales = p.scales()
        for set_name in ("positive", "negative"):
            for h in getattr(p, set_name):
                lines.append(f"| {set_name} | {h.label()} | {h.lam:.3f} | {h.score:.4g} | {scales[h.layer, h.head]:.3f} |")
        lines.append("")
    lines += ["## Head/bbox attention overlap (Table 14)", ""]
    if overlap.get("available"):
        lines += [
            f"Share (%) of a head's image attention at the answer position that falls inside the question's boxes; "
            f"{overlap['images']} clean images, patch grid {overlap['grid'][0]}x{overlap['grid'][1]}.",
            "",
            "| profile | images | positive heads | negative heads | all heads |",
            "|---|---|---|---|---|",
        ]
        for name, row in overlap["profiles"].items():
            lines.append(
                f"| {name} | {row['images']} | {_fmt(row['positive'])} | {_fmt(row['negative'])} | {_fmt(row['all_heads'])} |"
            )
    else:
        lines.append(f"not available: {overlap.get('reason')}")
    lines += ["", "## Activation patching (Eq 1-3)", ""]
    patch_json = {}
    if patching:
        lines += ["| group | triples | module | best layer | best row | mean Δlogit | figure |", "|---|---|---|---|---|---|---|"]
        for g, s in patching.items():
            slug = g.replace("/", "-")
            patch_json[g] = peaks(s)
            for kind in MODULES:
                pk = patch_json[g][kind]
                lines.append(
                    f"| {g} | {s.n} | {kind} | {pk['layer']} | `{pk['row']}` | {pk['mean_delta_logit']:+.4f} "
                    f"| patching/{slug}.png |"
                )
        lines += ["", "Logit lens: `patching/logit_lens.tsv`, `patching/lens_*.png`."]
    else:
        lines.append("skipped (--patching 0, or no Eq-4 triple among the attributed questions)")
    lines += ["", "## Timings", ""] + [f"- {k}: {v:.1f}" for k, v in timings.items()] + [""]
    path = run.root / "report.md"
    path.write_text("\n".join(lines))
    doc = {
        "model": model,
        "dataset": dataset,
        "created": run.created,
        "method": method,
        "split": split,
        "aggregate": aggregate,
        "stage1": stage1,
        "questions": counts,
        "triples": triple_counts,
        "triples_total": triples_total,
        "groups": {g: {"n_correct": s.n_correct, "n_incorrect": s.n_incorrect, "subtypes": st,
                       "thin_negative_evidence": s.n_incorrect < min_incorrect} for g, (s, st) in scores.items()},
        "selection": {g: r.to_json() for g, r in (selection or {}).items()} or None,
        "profiles": [str(p.relative_to(run.root)) for p in paths],
        "overlap": overlap,
        "patching": patch_json,
        "timings": timings,
    }
    if answered:
        doc["answered"] = answered
    (run.root / "report.json").write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    return path
