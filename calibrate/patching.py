"""Activation patching (paper Eq 1-3), its heatmaps (Figs 3-4) and a logit-lens table (Fig 5).

For a triple (question x, clean image z, edited image z̃, answer y) and a module τ ∈ {att, mlp} of layer l, the
module's output in the edited run is replaced by the clean run's output at a set of token positions I (Eq 1);
the rest of the model runs on, and

    Δℓ_τ^l = ℓ̂_τ^l(x, z̃, y) − ℓ(x, z̃, y)                                                    (Eq 2)

is the change of the answer token's logit. "att" is the attention block's output (o_proj output, before the
residual add) and "mlp" the MLP block's output. The position sets ("rows") are: all image-token positions at
once (`[image]`, the tokens an image edit corrupts), then each text position after the image, one at a time (the
question tokens of Fig 4, up to the answer position). All rows of one (τ, l) go through layers l..L-1 as one
batch, resumed from the edited run's recorded layer input (`vseam.calibrate.replay`).

Eq 3, s(τ, l), averages Δℓ over triples. Prompts differ in length only in the question, so text rows are aligned
on their offset from the answer position (the instruction suffix is the same for every triple).

The logit lens projects each module's output at the answer position of the clean run through the final norm and
the LM head and keeps the top tokens.

`patch_triples` runs the patcher over a calibration run's Eq-4 triples (one logged row per triple, resumable) and
writes the arrays, heatmaps and logit-lens files per profile group.
"""

from __future__ import annotations

import collections
import dataclasses
import pathlib
from typing import TYPE_CHECKING, Any, Iterable, Sequence

import numpy as np
import torch
from PIL import Image

from vseam.calibrate.records import Triple, load_image
from vseam.calibrate.replay import Replayer
from vseam.core.engine import HeadEngine

if TYPE_CHECKING:
    from vseam.calibrate.rundir import RunDir

MODULES = ("att", "mlp")
IMAGE_ROW = "[image]"
LENS_TOP = 5


@dataclasses.dataclass
class PatchResult:
    """Eq 2 for one triple: delta[τ, l, r] for module τ (att, mlp), layer l and row r (see module doc)."""

    rows: list[str]  # row labels: "[image]" then the text tokens after the image
    delta: np.ndarray  # [2, L, R]
    logit_clean: float  # ℓ(x, z, y)
    logit_edited: float  # ℓ(x, z̃, y)
    lens: dict[str, list[list[tuple[str, float]]]]  # module -> per layer: top tokens (clean run, answer position)

    def to_json(self) -> dict:
        return {
            "rows": self.rows,
            "delta": self.delta.tolist(),
            "logit_clean": self.logit_clean,
            "logit_edited": self.logit_edited,
            "lens": {m: [[[t, v] for t, v in layer] for layer in per] for m, per in self.lens.items()},
        }

    @staticmethod
    def from_json(d: dict) -> "PatchResult":
        return PatchResult(
            rows=list(d["rows"]),
            delta=np.asarray(d["delta"], dtype=np.float64),
            logit_clean=float(d["logit_clean"]),
            logit_edited=float(d["logit_edited"]),
            lens={m: [[(t, float(v)) for t, v in layer] for layer in per] for m, per in d["lens"].items()},
        )


class ActivationPatcher:
    """Runs Eq 1-2 for one triple at a time on a `HeadEngine`'s language model."""

    def __init__(self, engine: HeadEngine, max_rows: int = 64, lens_top: int = LENS_TOP):
        self.engine = engine
        self.family = engine.family
        self.replayer = Replayer(engine)
        self.layers = self.replayer.layers
        self.max_rows = max(1, int(max_rows))
        self.lens_top = lens_top
        self.answer_token = engine.answer_ids()

    def module(self, kind: str, layer: int) -> torch.nn.Module:
        if kind == "att":
            return self.family.o_proj(self.layers[layer])
        if kind == "mlp":
            return self.family.mlp(self.layers[layer])
        raise ValueError(f"unknown module {kind!r}; choose from {MODULES}")

    def _token_label(self, tid: int) -> str:
        tok = self.engine.tokenizer.convert_ids_to_tokens(int(tid))
        return str(tok).replace("▁", " ").strip() or repr(str(tok))

    @torch.no_grad()
    def _clean_outputs(self, batch: dict) -> tuple[dict[str, list[torch.Tensor]], torch.Tensor]:
        """Every module's output in the clean run ([T, d] per layer) and the clean next-token logits."""
        outs: dict[str, list] = {m: [None] * len(self.layers) for m in MODULES}

        def make(kind, i):
            def hook(module, args, output):
                out = output[0] if isinstance(output, tuple) else output
                outs[kind][i] = out[0].detach().clone()

            return hook

        handles = [
            self.module(kind, i).register_forward_hook(make(kind, i)) for kind in MODULES for i in range(len(self.layers))
        ]
        try:
            with self.engine.edits(None):
                raw = self.engine.model(**self.engine._forward_inputs(batch), use_cache=False, logits_to_keep=1)
        finally:
            for h in handles:
                h.remove()
        return outs, raw.logits[0, -1].float()

    def _rows(self, input_ids: torch.Tensor) -> tuple[list[str], torch.Tensor]:
        """Row labels and a [R, T] mask of the positions each row patches."""
        image = self.family.image_positions(input_ids[None], self.engine.model.config)[0]
        if not bool(image.any()):
            raise ValueError("the prompt has no image tokens; nothing to patch")
        T = input_ids.shape[0]
        last_image = int(torch.nonzero(image)[-1])
        labels = [IMAGE_ROW]
        masks = [image.clone()]
        for t in range(last_image + 1, T):
            m = torch.zeros(T, dtype=torch.bool)
            m[t] = True
            masks.append(m)
            labels.append(self._token_label(input_ids[t]))
        return labels, torch.stack(masks)

    @torch.no_grad()
    def lens(self, outs: dict[str, list[torch.Tensor]]) -> dict[str, list[list[tuple[str, float]]]]:
        """Logit lens at the answer position: top tokens of norm + LM head applied to each module's output."""
        result = {}
        for kind in MODULES:
            vecs = torch.stack([o[-1] for o in outs[kind]])  # [L, d]
            logits = self.replayer.lm_head(self.replayer.norm(vecs[:, None, :]))[:, 0, :].float()
            top = torch.topk(logits, self.lens_top, dim=-1)
            result[kind] = [
                [(self._token_label(i), float(v)) for i, v in zip(idx.tolist(), val.tolist())]
                for idx, val in zip(top.indices, top.values)
            ]
        return result

    @torch.no_grad()
    def patch(self, clean: Image.Image, edited: Image.Image, question: str, answer: str) -> PatchResult:
        answer = str(answer).strip().lower()
        if answer not in self.answer_token:
            raise ValueError(f"activation patching needs a yes/no answer, got {answer!r}")
        y = self.answer_token[answer]
        text = self.family.binary_text(question)
        clean_batch = self.engine.encode([clean], [text])
        edited_batch = self.engine.encode([edited], [text])
        ids = clean_batch["input_ids"][0]
        if not torch.equal(ids, edited_batch["input_ids"][0]):
            raise ValueError("clean and edited prompts tokenize differently; cannot patch position by position")
        outs, clean_logits = self._clean_outputs(clean_batch)
        rec = self.replayer.record(edited_batch)
        labels, masks = self._rows(ids)
        R = len(labels)
        delta = np.zeros((len(MODULES), len(self.layers), R))
        for k, kind in enumerate(MODULES):
            for l in range(len(self.layers)):
                for start in range(0, R, self.max_rows):
                    rows = masks[start : start + self.max_rows]
                    logits = self._patched_logits(rec, kind, l, outs[kind][l], rows)
                    delta[k, l, start : start + len(rows)] = (logits[:, y] - rec.logits[0, y]).double().numpy()
        return PatchResult(
            rows=labels,
            delta=delta,
            logit_clean=float(clean_logits[y]),
            logit_edited=float(rec.logits[0, y]),
            lens=self.lens(outs),
        )

    def _patched_logits(self, rec, kind: str, layer: int, clean_out: torch.Tensor, rows: torch.Tensor):
        def hook(module, args, output):
            out = output[0] if isinstance(output, tuple) else output
            mask = rows.to(out.device)[:, :, None]  # [R, T, 1]
            patched = torch.where(mask, clean_out[None].to(out.dtype), out)
            return (patched,) + tuple(output[1:]) if isinstance(output, tuple) else patched

        handle = self.module(kind, layer).register_forward_hook(hook)
        try:
            return self.replayer.resume(rec, layer, torch.zeros(len(rows), dtype=torch.long), answer_only=True)
        finally:
            handle.remove()


# ---- Eq 3 and figures -------------------------------------------------------------------------------------------


@dataclasses.dataclass
class PatchSummary:
    """Eq 3 over a set of triples: s[τ, l, r] with text rows aligned on their offset from the answer position."""

    rows: list[str]  # "[image]" then text rows, first to last (the last is the answer position)
    s: np.ndarray  # [2, L, R] mean Δℓ (NaN where no triple has that row)
    count: np.ndarray  # [R] triples contributing to each row
    per_triple: np.ndarray  # [N, 2, L, R] aligned Δℓ, NaN-padded
    n: int


def summarise(results: Sequence[PatchResult]) -> PatchSummary:
    if not results:
        raise ValueError("no patching results to summarise")
    L = results[0].delta.shape[1]
    width = max(len(r.rows) - 1 for r in results)  # text rows
    R = 1 + width
    per = np.full((len(results), len(MODULES), L, R), np.nan)
    votes: list[collections.Counter] = [collections.Counter() for _ in range(R)]
    for i, r in enumerate(results):
        n_text = len(r.rows) - 1
        per[i, :, :, 0] = r.delta[:, :, 0]
        per[i, :, :, R - n_text :] = r.delta[:, :, 1:]
        votes[0][r.rows[0]] += 1
        for j, label in enumerate(r.rows[1:]):
            votes[R - n_text + j][label] += 1
    count = np.isfinite(per[:, 0, 0, :]).sum(axis=0)
    with np.errstate(invalid="ignore"):
        s = np.nansum(per, axis=0) / np.where(count > 0, count, np.nan)[None, None, :]
    rows = [v.most_common(1)[0][0] if v else "" for v in votes]
    return PatchSummary(rows=rows, s=s, count=count, per_triple=per, n=len(results))


def save_arrays(summary: PatchSummary, path: str | pathlib.Path, keys: Sequence[str] = ()) -> pathlib.Path:
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        path,
        s=summary.s,
        count=summary.count,
        per_triple=summary.per_triple,
        rows=np.array(summary.rows),
        modules=np.array(MODULES),
        triples=np.array(list(keys)),
    )
    return path


def heatmap(summary: PatchSummary, path: str | pathlib.Path, title: str = "") -> pathlib.Path:
    """Figs 3-4: rows × layers Δlogit, attention (green) and MLP (blue) side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    L, R = summary.s.shape[1], summary.s.shape[2]
    fig, axes = plt.subplots(1, 2, figsize=(2.5 + 0.35 * L * 2, 1.2 + 0.3 * R), squeeze=False)
    from matplotlib.colors import CenteredNorm

    for k, (kind, cmap) in enumerate(zip(MODULES, ("PiYG", "RdBu"))):  # green / blue = patching restores y
        ax = axes[0][k]
        data = summary.s[k].T  # [R, L]
        im = ax.imshow(data, aspect="auto", cmap=cmap, norm=CenteredNorm(vcenter=0.0))
        ax.set_title(f"{'attention' if kind == 'att' else 'MLP'}")
        ax.set_xlabel("layer")
        ax.set_xticks(range(L))
        ax.set_yticks(range(R))
        ax.set_yticklabels(summary.rows if k == 0 else [""] * R, fontsize=7)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="Δ logit")
    fig.suptitle(title or f"activation patching, {summary.n} triples")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def lens_rows(key: str, result: PatchResult) -> Iterable[tuple]:
    for kind, per in result.lens.items():
        for l, layer in enumerate(per):
            for rank, (tok, val) in enumerate(layer, start=1):
                yield (key, kind, l, rank, tok, val)


def write_lens_table(items: Sequence[tuple[str, PatchResult]], path: str | pathlib.Path) -> pathlib.Path:
    """Fig 5 as a table: triple, module, layer, rank, token, logit (tab-separated)."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fh.write("triple\tmodule\tlayer\trank\ttoken\tlogit\n")
        for key, res in items:
            for row in lens_rows(key, res):
                fh.write("\t".join(str(x) if not isinstance(x, float) else f"{x:.4f}" for x in row) + "\n")
    return path


def lens_figure(result: PatchResult, path: str | pathlib.Path, title: str = "") -> pathlib.Path:
    """Fig 5 for one triple: per module, top tokens (rows) per layer (columns), coloured by logit."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = pathlib.Path(path)
    L = len(result.lens["att"])
    top = len(result.lens["att"][0])
    fig, axes = plt.subplots(2, 1, figsize=(1.5 + 1.0 * L, 1.0 + 0.9 * top), squeeze=False)
    for k, (kind, cmap) in enumerate(zip(MODULES, ("Greens", "Blues"))):
        ax = axes[k][0]
        vals = np.array([[v for _, v in layer] for layer in result.lens[kind]]).T  # [top, L]
        ax.imshow(vals, aspect="auto", cmap=cmap)
        for l in range(L):
            for r in range(top):
                ax.text(l, r, result.lens[kind][l][r][0][:8], ha="center", va="center", fontsize=6)
        ax.set_title(f"logit lens: {'attention' if kind == 'att' else 'MLP'}", fontsize=9)
        ax.set_xticks(range(L))
        ax.set_yticks(range(top))
        ax.set_yticklabels([f"top {r + 1}" for r in range(top)], fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def peaks(summary: PatchSummary) -> dict[str, Any]:
    """Where patching restores the answer most, per module: {module: {layer, row, mean_delta_logit}}."""
    out = {}
    for k, kind in enumerate(MODULES):
        flat = np.where(np.isfinite(summary.s[k]), summary.s[k], -np.inf)
        l, r = np.unravel_index(int(np.argmax(flat)), flat.shape)
        out[kind] = {"layer": int(l), "row": summary.rows[r], "mean_delta_logit": float(summary.s[k, l, r])}
    return out


# ---- a calibration run's triples ---------------------------------------------------------------------------------


def patch_triples(patcher: ActivationPatcher, triples: Sequence[Triple], run: RunDir, limit: int, per_subtype: bool
                  ) -> dict[str, PatchSummary]:
    """Patch the first `limit` triples (logged per triple in `patching.jsonl`); group summaries, arrays, heatmaps
    (`patching/<group>.npz|png`) and the logit lens (`logit_lens.tsv`, `lens_<n>.png`)."""
    from tqdm import tqdm

    from vseam.calibrate.inputs import question_key
    from vseam.calibrate.profiles import group_order, groups_of

    chosen = list(triples)[:limit]
    if not chosen:
        return {}
    log = run.log("patching", key="key")
    for t in tqdm(chosen, desc="activation patching", unit="triple", dynamic_ncols=True):
        key = question_key(t.record)
        if key not in log:
            clean = load_image(t.pair.clean_image, f"triple {key} (clean)")
            edited = load_image(t.pair.edited_image, f"triple {key} (edited)")
            res = patcher.patch(clean, edited, t.record.question, t.record.answer)
            log.append({"key": key, "subtype": t.record.subtype, **res.to_json()})
    results = [(question_key(t.record), PatchResult.from_json(log.get(question_key(t.record)))) for t in chosen]
    by_group: dict[str, list] = {}
    for t, (key, res) in zip(chosen, results):
        for g in groups_of(t.record.subtype, per_subtype):
            by_group.setdefault(g, []).append((key, res))
    out = {}
    for g in group_order(by_group):
        items = by_group[g]
        summary = summarise([r for _, r in items])
        slug = g.replace("/", "-")
        save_arrays(summary, run.sub("patching", f"{slug}.npz"), keys=[k for k, _ in items])
        heatmap(summary, run.sub("patching", f"{slug}.png"), title=f"activation patching: {g} ({summary.n} triples)")
        out[g] = summary
    write_lens_table(results, run.sub("patching", "logit_lens.tsv"))
    for i, (key, res) in enumerate(results[:3]):
        lens_figure(res, run.sub("patching", f"lens_{i}.png"), title=f"logit lens, {key}")
    return out

