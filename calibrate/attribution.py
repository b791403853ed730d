"""Head attribution (paper Eq 5-7): the effect on P(correct answer) of mean-ablating each attention head.

For an input (question x, image z, correct answer y), head h of layer l is masked by replacing its output at
`HEAD_OUT` with the mean of the layer's other heads (Eq 5, `vseam.core.hooks.mean_of_other_heads`), and

    Δp_h^l = p(y | x, z; Ã_h^l) − p(y | x, z)                                            (Eq 6)

Three ways to get Δp for every head, all returning arrays shaped [inputs, layers, heads]:

* `naive`  — the reference: one full forward per (input, head) with the `HeadEngine` mean-ablation edit.
* `exact`  — the same numbers, fast: one recorded forward per batch of inputs, then for each layer l the H
             ablations of that layer (for every input) go as one batch through layers l..L-1 only, starting from
             the recorded head outputs of layer l (its attention is not recomputed) and evaluating the last layer
             and the LM head at the answer position alone (`vseam.calibrate.replay`).
* `atp`    — attribution patching: one forward + one backward give ∂p/∂A_h^l at every position; the first-order
             estimate of Δp is Σ_t <Ã_h^l(t) − A_h^l(t), ∂p/∂A_h^l(t)>. `exact(..., heads=...)` re-scores chosen
             candidates exactly (`--refine N`).

y is a yes/no answer word; its token is the family's answer token. The prediction on an input is the larger of
P(yes) and P(no), which decides whether the input belongs to D_correct or D_incorrect (Eq 7, see
`vseam.calibrate.profiles`).

`attribute_units` runs a method over a calibration run's inputs in fixed chunks and records one row per input in
the run directory (`deltas_from_logs` reads them back), so a killed run resumes with the same batches.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import TYPE_CHECKING, Iterator, Sequence

import numpy as np
import torch
from PIL import Image

from vseam.calibrate.records import load_image
from vseam.calibrate.replay import Recording, Replayer
from vseam.core.engine import HeadEdits, HeadEngine, apply_head_edits
from vseam.core.hooks import mean_of_other_heads, split_heads

if TYPE_CHECKING:
    from vseam.calibrate.inputs import Unit
    from vseam.calibrate.rundir import DoneLog

METHODS = ("naive", "exact", "atp")


@dataclasses.dataclass
class Baseline:
    """The unedited model on a batch of inputs."""

    p: np.ndarray  # [B] P(y) of each row's correct answer
    p_yes: np.ndarray  # [B]
    p_no: np.ndarray  # [B]
    answers: list[str]

    @property
    def preds(self) -> list[str]:
        return ["yes" if y >= n else "no" for y, n in zip(self.p_yes, self.p_no)]

    @property
    def correct(self) -> np.ndarray:
        return np.array([p == a for p, a in zip(self.preds, self.answers)], dtype=bool)


def _check_answers(answers: Sequence[str]) -> list[str]:
    out = []
    for a in answers:
        a = str(a).strip().lower()
        if a not in ("yes", "no"):
            raise ValueError(f"head attribution needs yes/no answers, got {a!r}")
        out.append(a)
    return out


class HeadAttributor:
    """Scores every attention head of a `HeadEngine`'s language model by Eq 6, three ways (see module doc)."""

    def __init__(self, engine: HeadEngine, max_rows: int = 64, fast: bool = True):
        self.engine = engine
        self.replayer = Replayer(engine, fast=fast)
        self.max_rows = max(1, int(max_rows))
        self.L, self.H = engine.num_layers, engine.num_heads
        ids = engine.answer_ids()
        self.answer_token = {"yes": ids["yes"], "no": ids["no"]}

    # ---- inputs --------------------------------------------------------------------------------------------------
    def encode(self, images: Sequence[Image.Image], questions: Sequence[str]) -> dict:
        """Table-8 binary prompts for (image, question) pairs, left-padded into one batch."""
        fam = self.engine.family
        return self.engine.encode(list(images), [fam.binary_text(q) for q in questions])

    def _answer_ids(self, answers: Sequence[str]) -> torch.Tensor:
        return torch.tensor([self.answer_token[a] for a in _check_answers(answers)], dtype=torch.long)

    def _baseline_from_logits(self, logits: torch.Tensor, answers: Sequence[str]) -> Baseline:
        probs = torch.softmax(logits.float(), dim=-1)
        ids = self._answer_ids(answers)
        p = probs.gather(1, ids[:, None])[:, 0]
        return Baseline(
            p=p.double().numpy(),
            p_yes=probs[:, self.answer_token["yes"]].double().numpy(),
            p_no=probs[:, self.answer_token["no"]].double().numpy(),
            answers=_check_answers(answers),
        )

    def _head_list(self, heads: Sequence[tuple[int, int]] | None) -> dict[int, list[int]]:
        """{layer: [heads]} for the heads to score (all when None), validated."""
        if heads is None:
            return {l: list(range(self.H)) for l in range(self.L)}
        by_layer: dict[int, list[int]] = {}
        for l, h in heads:
            if not (0 <= l < self.L and 0 <= h < self.H):
                raise ValueError(f"head L{l}.H{h} does not exist in a {self.L}x{self.H} model")
            by_layer.setdefault(int(l), [])
            if h not in by_layer[l]:
                by_layer[l].append(int(h))
        return {l: sorted(hs) for l, hs in sorted(by_layer.items())}

    def baseline(self, images: Sequence[Image.Image], questions: Sequence[str], answers: Sequence[str]) -> Baseline:
        """The unedited model's answer on each input (one plain forward per `max_rows` inputs), no head scored."""
        answers = _check_answers(answers)
        logits = [self.engine.next_token_logprobs(self.encode(images[i : i + self.max_rows],
                                                              questions[i : i + self.max_rows]))
                  for i in range(0, len(images), self.max_rows)]
        return self._baseline_from_logits(torch.cat(logits), answers)  # log-probs are valid logits

    # ---- the reference: one ablation per forward ------------------------------------------------------------------
    def naive(
        self,
        images: Sequence[Image.Image],
        questions: Sequence[str],
        answers: Sequence[str],
        heads: Sequence[tuple[int, int]] | None = None,
    ) -> tuple[Baseline, np.ndarray]:
        """Δp [B, L, H] by one full forward (vision tower included) per input and head; NaN for unscored heads."""
        answers = _check_answers(answers)
        by_layer = self._head_list(heads)
        delta = np.full((len(images), self.L, self.H), np.nan)
        logits = []
        for b, (img, q, a) in enumerate(zip(images, questions, answers)):
            batch = self.encode([img], [q])
            base = self.engine.next_token_logprobs(batch)
            logits.append(base)
            p0 = base[0, self.answer_token[a]].exp().item()
            for l, hs in by_layer.items():
                for h in hs:
                    mask = torch.zeros(1, self.L, self.H, dtype=torch.bool)
                    mask[0, l, h] = True
                    lp = self.engine.next_token_logprobs(batch, HeadEdits(mean_ablate=mask))
                    delta[b, l, h] = lp[0, self.answer_token[a]].exp().item() - p0
        return self._baseline_from_logits(torch.cat(logits), answers), delta  # log-probs are valid logits

    # ---- fast exact engine ---------------------------------------------------------------------------------------
    def record(self, images: Sequence[Image.Image], questions: Sequence[str]) -> Recording:
        return self.replayer.record(self.encode(images, questions), head_out=True)

    def exact(
        self,
        images: Sequence[Image.Image],
        questions: Sequence[str],
        answers: Sequence[str],
        heads: Sequence[tuple[int, int]] | None = None,
        recording: Recording | None = None,
    ) -> tuple[Baseline, np.ndarray]:
        """Δp [B, L, H] equal to `naive` (fp32, ≤ 1e-5); NaN for heads not in `heads` (default: all)."""
        answers = _check_answers(answers)
        rec = recording if recording is not None else self.record(images, questions)
        base = self._baseline_from_logits(rec.logits, answers)
        ids = self._answer_ids(answers)
        B = rec.batch
        delta = np.full((B, self.L, self.H), np.nan)
        for l, hs in self._head_list(heads).items():
            jobs = [(b, h) for b in range(B) for h in hs]
            for start in range(0, len(jobs), self.max_rows):
                chunk = jobs[start : start + self.max_rows]
                mask = torch.zeros(len(chunk), self.L, self.H, dtype=torch.bool)
                for r, (_, h) in enumerate(chunk):
                    mask[r, l, h] = True
                rows = torch.tensor([b for b, _ in chunk], dtype=torch.long)
                edits = HeadEdits(mean_ablate=mask)
                if rec.head_out is not None and self.replayer.fast:  # start inside layer l (see vseam.calibrate.replay)
                    a = apply_head_edits(rec.head_out[l].index_select(0, rows), l, edits, self.H)
                    logits = self.replayer.resume_from_head_out(rec, l, rows, a)
                else:
                    with self.engine.edits(edits):
                        logits = self.replayer.resume(rec, l, rows)
                p = torch.softmax(logits, dim=-1).gather(1, ids[rows][:, None])[:, 0].double().numpy()
                for r, (b, h) in enumerate(chunk):
                    delta[b, l, h] = p[r] - base.p[b]
        return base, delta

    # ---- attribution patching ------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _grad_taps(self) -> Iterator[dict[int, tuple[torch.Tensor, torch.Tensor]]]:
        """During the block, each layer's HEAD_OUT becomes x + z with a zero leaf z; yields {layer: (x, z)}."""
        taps: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

        def make(layer):
            def pre_hook(module, args):
                x = args[0]
                z = torch.zeros_like(x, requires_grad=True)
                taps[layer] = (x.detach(), z)
                return (x + z,) + tuple(args[1:])

            return pre_hook

        model = self.engine.model
        saved = [(p, p.requires_grad) for p in model.parameters()]
        handles = [
            self.engine.family.o_proj(layer).register_forward_pre_hook(make(i))
            for i, layer in enumerate(self.replayer.layers)
        ]
        try:
            for p, _ in saved:
                p.requires_grad_(False)
            yield taps
        finally:
            for h in handles:
                h.remove()
            for p, flag in saved:
                p.requires_grad_(flag)

    def atp(
        self, images: Sequence[Image.Image], questions: Sequence[str], answers: Sequence[str]
    ) -> tuple[Baseline, np.ndarray]:
        """First-order estimates of Δp [B, L, H] from one forward and one backward pass over the batch."""
        answers = _check_answers(answers)
        batch = self.encode(images, questions)
        ids = self._answer_ids(answers)
        engine = self.engine
        with self._grad_taps() as taps, engine.edits(None), torch.enable_grad():
            out = engine.model(**engine._forward_inputs(batch), use_cache=False, logits_to_keep=1)
            logits = out.logits[:, -1, :].float()
            p = torch.softmax(logits, dim=-1).gather(1, ids[:, None])[:, 0]
            layers = sorted(taps)
            grads = torch.autograd.grad(p.sum(), [taps[l][1] for l in layers], allow_unused=True)
        est = np.zeros((len(answers), self.L, self.H))
        with torch.no_grad():
            for l, g in zip(layers, grads):
                if g is None:  # this layer cannot reach the answer position (never happens in a causal LM)
                    continue
                a = split_heads(taps[l][0], self.H).double()  # [B, T, H, D]
                diff = mean_of_other_heads(a) - a
                est[:, l, :] = (diff * split_heads(g, self.H).double()).sum(dim=(1, 3)).numpy()
        return self._baseline_from_logits(logits.detach(), answers), est

    # ---- one entry point -----------------------------------------------------------------------------------------
    def score(
        self,
        method: str,
        images: Sequence[Image.Image],
        questions: Sequence[str],
        answers: Sequence[str],
        heads: Sequence[tuple[int, int]] | None = None,
    ) -> tuple[Baseline, np.ndarray]:
        if method == "naive":
            return self.naive(images, questions, answers, heads)
        if method == "exact":
            return self.exact(images, questions, answers, heads)
        if method == "atp":
            if heads is not None:
                raise ValueError("atp scores all heads; use exact(..., heads=...) to refine candidates")
            return self.atp(images, questions, answers)
        raise ValueError(f"unknown attribution method {method!r}; choose from {', '.join(METHODS)}")


def top_heads(scores: np.ndarray, n: int, sign: float = 1.0) -> list[tuple[int, int]]:
    """The n heads with the largest sign*score ([L, H] array, NaN ignored), ties broken by (layer, head)."""
    s = np.where(np.isfinite(scores), sign * scores, -np.inf)
    order = sorted(((-s[l, h], l, h) for l in range(s.shape[0]) for h in range(s.shape[1])))
    return [(l, h) for v, l, h in order[:n] if np.isfinite(v)]


# ---- a calibration run's inputs ----------------------------------------------------------------------------------


def _progress(total: int, desc: str, unit: str = "question"):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True, leave=True)


def score_chunk(attributor: HeadAttributor, images, questions, answers, method: str,
                heads: Sequence[tuple[int, int]] | None) -> tuple[Baseline, np.ndarray]:
    """One chunk's baseline and Δp: every head by `method`, or (heads given) the exact re-score of those heads."""
    if heads is not None:
        return attributor.exact(images, questions, answers, heads=heads)
    return attributor.score(method, images, questions, answers)


def _answer_row(inp, base: Baseline, i: int) -> dict:
    """The log fields of input `inp` (row `i` of `base`): which question, the unedited model's answer and P(y)."""
    return {"key": inp.key, "question": inp.question_key, "subtype": inp.subtype, "answer": inp.answer,
            "p": float(base.p[i]), "pred": base.preds[i], "correct": bool(base.correct[i])}


def attribute_units(
    attributor: HeadAttributor | None, units: Sequence[Unit], log: DoneLog, method: str, batch: int, desc: str,
    heads: Sequence[tuple[int, int]] | None = None, pool=None,
) -> None:
    """Score every input of every unit with `method` into `log` (heads: exact re-scoring of candidates only).

    Units go in fixed chunks of `batch`; a chunk already logged is skipped, one cut short by a kill is recomputed
    whole (same batch) and only its new rows are logged. With a `pool` (`vseam.calibrate.distributed`) the same
    chunks are scored by its Ray workers and logged as they finish."""
    bar = _progress(len(units), desc)
    todo: list[tuple[int, list]] = []  # (units in the chunk, its inputs)
    for start in range(0, len(units), batch):
        chunk = units[start : start + batch]
        inputs = [inp for unit in chunk for inp in unit]
        if all(inp.key in log for inp in inputs):
            bar.update(len(chunk))
        else:
            todo.append((len(chunk), inputs))

    def record(inputs, base: Baseline, delta: np.ndarray) -> None:
        for i, inp in enumerate(inputs):
            if inp.key in log:
                continue
            item = {**_answer_row(inp, base, i), "role": inp.role}
            if heads is None:
                item["delta"] = delta[i].tolist()
            else:
                item["heads"] = [[l, h, float(delta[i, l, h])] for l, h in heads]
            log.append(item)

    # the arguments of each chunk still to do, images read lazily; with a pool (a
    # `vseam.calibrate.distributed.RayPool`) the driver reads the images and ships them to the workers
    jobs = (([load_image(i.image, f"input {i.key}") for i in inputs], [i.question for i in inputs],
             [i.answer for i in inputs], method, heads) for _, inputs in todo)
    if pool is None:
        results = enumerate(score_chunk(attributor, *args) for args in jobs)
    else:
        results = pool.map_unordered("score", jobs)
    for index, (base, delta) in results:
        n_units, inputs = todo[index]
        record(inputs, base, delta)
        bar.update(n_units)
    bar.close()


def predict_units(attributor: HeadAttributor, units: Sequence[Unit], log: DoneLog, chunk: int, pool=None) -> None:
    """The unedited model's answer on every input of `units` into `log` (one row per input: prediction, P(y),
    correct), in fixed chunks of `chunk` units so that a resumed run batches as an uninterrupted one (on the
    workers of `pool` when given)."""
    bar = _progress(len(units), "answer every calibration question")
    todo = []
    for start in range(0, len(units), chunk):
        inputs = [inp for unit in units[start : start + chunk] for inp in unit]
        if all(inp.key in log for inp in inputs):
            bar.update(len(units[start : start + chunk]))
        else:
            todo.append((len(units[start : start + chunk]), inputs))
    jobs = (([load_image(i.image, f"input {i.key}") for i in inputs], [i.question for i in inputs],
             [i.answer for i in inputs]) for _, inputs in todo)
    bases = (attributor.baseline(*args) for args in jobs) if pool is None else pool.map("baseline", jobs)
    for (n_units, inputs), base in zip(todo, bases):
        for i, inp in enumerate(inputs):
            if inp.key not in log:
                log.append(_answer_row(inp, base, i))
        bar.update(n_units)
    bar.close()


def deltas_from_logs(units: Sequence[Unit], logs: Sequence[DoneLog], shape) -> dict[str, tuple[bool, np.ndarray]]:
    """key -> (correct, Δp [L, H]) with refined entries (a second, refine log) replacing the screen's values."""
    screen = logs[0]
    refine = logs[1] if len(logs) > 1 else None
    out = {}
    for unit in units:
        for inp in unit:
            item = screen.get(inp.key)
            if item is None:
                raise RuntimeError(f"no attribution result for {inp.key} in {screen.path}")
            d = np.asarray(item["delta"], dtype=np.float64).reshape(shape)
            if refine is not None:
                r = refine.get(inp.key)
                if r is None:
                    raise RuntimeError(f"no refined result for {inp.key} in {refine.path}")
                for l, h, v in r["heads"]:
                    d[int(l), int(h)] = v
            out[inp.key] = (bool(item["correct"]), d)
    return out


def candidates_from_screen(scores: dict, n: int) -> list[tuple[int, int]]:
    """Union over groups of the top-n heads by −c_correct and by c_incorrect (AtP estimates), sorted."""
    chosen: set[tuple[int, int]] = set()
    for s, _ in scores.values():
        if s.n_correct:
            chosen.update(top_heads(s.c_correct, n, sign=-1.0))
        if s.n_incorrect:
            chosen.update(top_heads(s.c_incorrect, n, sign=1.0))
    return sorted(chosen)

