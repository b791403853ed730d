"""Train the model organism: a tiny LLaVA-1.5 that answers yes/no questions about `shapes` scenes.

    nice -n 10 .venv/bin/python -m vseam.organism.train [--work DIR] [--export vseam/organism/weights]

Phases (see `recipe.Recipe`):

1. vision pre-training: the CLIP tower, read at LLaVA's feature layer (-2), learns per-patch shape / color /
   pattern / contact labels through a throw-away linear head;
2. descriptions, on frozen vision features (computed once per training scene; the image features are placed
   into the token embeddings exactly as `LlavaModel` does, so this is the model's own forward pass minus the
   frozen tower): "Describe the picture." -> the objects' words and some relations, loss on every word — the
   dense signal that gets the language model reading the image (answers alone left it at the prior);
3. question answering on the frozen features: the answer token of the Table-8 yes/no prompt (plus the
   end-of-sequence token after it, so the served model stops after "Yes"/"No"), balanced over the 7 subtypes
   and yes/no, with some description rows mixed into every step;
4. optional end-to-end fine-tuning of everything on questions.

A recipe's `stages` continue the run after that with some phase-3/4 fields changed (more frozen-tower steps with
other subtype weights, then end-to-end steps with head dropout, a retraining of the tower alone on more scenes
where shapes touch, ...), so a schedule is one command. The default preset (`v2-staged`) is such a schedule: it
reproduces the committed weights in about 3.5 hours of one CPU thread.

Validation uses the "val" split only (never "test", which the model card and the demo hold out); training stops at
`target_val_acc` so the organism keeps room to improve. The run is seeded, checkpoints to `--work` every
`eval_every` steps and resumes from there. The result is exported in the llava-hf layout (sharded safetensors with
the hub's key names, processor, tokenizer, chat template) so HF, the calibrator and vLLM load it unchanged.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import pathlib
import shutil
import sys
import time

import numpy as np
import torch
from tqdm import tqdm

from vseam.core.files import atomic_write_with
from vseam.organism import WEIGHTS_DIR
from vseam.organism import data as D
from vseam.organism.recipe import COMMITTED_PRESET, PRESETS, Recipe, field_readers, preset


def _lr_factor(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


class Trainer:
    def __init__(self, recipe: Recipe, work: pathlib.Path, progress: bool = True):
        from vseam.core.toy_checkpoints import build

        #: `base` is the recipe as given (what checkpoints and the export record); `recipe` is the one in force,
        #: that of the current stage (`Recipe.stages`)
        recipe.check_runnable()
        self.base, self.recipe, self.work, self.progress = recipe, recipe.at_stage(0), work, progress
        work.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(recipe.seed)
        self.init_dir = work / "init"
        self.spec = recipe.spec()
        self.model, self.processor = build("llava", self.init_dir, seed=recipe.seed, spec=self.spec)
        self.model.train()
        self._head_dropout_hooks()
        self.enc = D.Encoder(self.processor)
        self.pool = D.build_pool(recipe.train_scenes, recipe.seed, progress=progress, world=recipe.world)
        self.val = D.eval_set("val", recipe.val_size, recipe.seed)
        self.sampler = D.Sampler(self.pool, recipe.primary_share, recipe.seed, recipe.weights(),
                                 prior_labels=self.recipe.prior_labels, prior_sides=recipe.prior_sides,
                                 prior_side_labels=self.recipe.prior_side_labels)
        vcfg = self.model.config.vision_config
        grid = vcfg.image_size // vcfg.patch_size
        self.patch_sizes = (len(D.PATCH_SHAPES), len(D.PATCH_COLORS), len(D.PATCH_TEXTURES), 2)
        if recipe.patch_positions:
            self.patch_sizes += (grid, grid)
        self.patch_head = torch.nn.Linear(vcfg.hidden_size, sum(self.patch_sizes))
        self.features: torch.Tensor | None = None
        self._touching: tuple | None = None
        self.state = {"phase": "vision", "step": 0, "best": None, "done": False}
        if recipe.init_from:
            self._load_init(init_path(recipe.init_from))
            self.state["phase"] = "finetune"
        self.log_path = work / "log.jsonl"
        self._make_optimizers()
        self._resume()
        if self.state.get("stage", 0):
            self._use(self.base.at_stage(self.state["stage"]))
        self._clock = time.time()

    def _load_init(self, path: pathlib.Path) -> None:
        """Take the weights of the exported checkpoint `path` (recipe field init_from)."""
        from transformers import LlavaForConditionalGeneration

        if not (path / "config.json").is_file():
            raise ValueError(f"recipe field init_from: {path} is not an exported checkpoint (no config.json)")
        loaded = LlavaForConditionalGeneration.from_pretrained(path, torch_dtype=torch.float32)
        try:
            self.model.load_state_dict(loaded.state_dict())
        except RuntimeError as e:
            raise ValueError(f"recipe field init_from: {path} does not fit this recipe's architecture "
                             f"(text_heads={self.spec.text_heads}): {str(e).splitlines()[0]}") from None

    def _head_dropout_hooks(self) -> None:
        """Zero each head's output (the o_proj input slice) with probability `head_dropout`, in a share
        `head_dropout_rows` of the rows, in training mode only and from question step `head_dropout_start` on when
        that is > 0; the kept heads are scaled by 1/(1-p) as dropout does unless `head_dropout_rescale` is off."""
        if all(self.base.at_stage(k).head_dropout <= 0 for k in range(len(self.base.stage_overrides()) + 1)):
            return
        n_heads, head_dim = self.spec.text_heads, self.spec.text_head_dim

        def hook(module, args):
            r = self.recipe
            if not module.training or r.head_dropout <= 0:
                return None
            if r.head_dropout_start > 0 and (self.question_step() or 0) < r.head_dropout_start:
                return None
            x = args[0]
            gain = 1 / (1 - r.head_dropout) if r.head_dropout_rescale else 1.0
            keep = (torch.rand(x.shape[0], 1, n_heads, 1) >= r.head_dropout).to(x.dtype) * gain
            if r.head_dropout_rows < 1.0:  # rows outside the share keep every head at scale 1
                keep[torch.rand(x.shape[0]) >= r.head_dropout_rows] = 1.0
            return (x.view(*x.shape[:-1], n_heads, head_dim).mul(keep).view_as(x),) + tuple(args[1:])

        for layer in self.model.model.language_model.layers:
            layer.self_attn.o_proj.register_forward_pre_hook(hook)

    def question_step(self, phase: str | None = None, step: int | None = None) -> int | None:
        """Steps of question training so far, counted over phases 3 and 4 together (None before phase 3)."""
        phase = self.state["phase"] if phase is None else phase
        step = self.state["step"] if step is None else step
        if phase == "qa":
            return step
        return self.recipe.qa_steps + step if phase == "finetune" else None

    # ---- optimisers & checkpoints ----------------------------------------------------------------------------
    def _make_optimizers(self) -> None:
        r = self.recipe
        vt = self.model.model.vision_tower
        self.opt_vision = torch.optim.AdamW(
            list(vt.parameters()) + list(self.patch_head.parameters()), lr=r.vision_lr, weight_decay=r.weight_decay
        )
        vt_ids = {id(p) for p in vt.parameters()}
        rest = [p for p in self.model.parameters() if id(p) not in vt_ids]
        self.opt_qa = torch.optim.AdamW(
            [{"params": list(vt.parameters()), "lr": r.vision_tower_lr}, {"params": rest, "lr": r.lr}],
            weight_decay=r.weight_decay,
        )
        for g in self.opt_qa.param_groups:
            g["base_lr"] = g["lr"]

    def _ckpt_path(self) -> pathlib.Path:
        return self.work / "state.pt"

    def save(self) -> None:
        now = time.time()
        self.state["seconds"] = self.state.get("seconds", 0.0) + now - self._clock
        self._clock = now
        blob = {
            "recipe": self.base.to_json(),
            "state": self.state,
            "model": self.model.state_dict(),
            "patch_head": self.patch_head.state_dict(),
            "opt_vision": self.opt_vision.state_dict(),
            "opt_qa": self.opt_qa.state_dict(),
            "sampler": self.sampler.state(),
            "torch_rng": torch.get_rng_state(),
        }
        atomic_write_with(self._ckpt_path(), lambda fh: torch.save(blob, fh))

    def _resume(self) -> None:
        path = self._ckpt_path()
        if not path.exists():
            return
        blob = torch.load(path, weights_only=False)
        if blob["recipe"] != self.base.to_json():
            raise SystemExit(f"{path}: checkpoint was made with another recipe; use --fresh or another --work dir")
        self.model.load_state_dict(blob["model"])
        self.patch_head.load_state_dict(blob["patch_head"])
        self.opt_vision.load_state_dict(blob["opt_vision"])
        self.opt_qa.load_state_dict(blob["opt_qa"])
        self.sampler.set_state(blob["sampler"])
        torch.set_rng_state(blob["torch_rng"])
        self.state = blob["state"]
        print(f"resuming from {path}: phase {self.state['phase']}, step {self.state['step']}")

    def log(self, **row) -> None:
        with open(self.log_path, "a") as fh:
            fh.write(json.dumps(row, sort_keys=True) + "\n")

    def _lm_step(self, loss: torch.Tensor, lr_factor: float) -> None:
        """One optimiser step of phases 2-4: every group at its base learning rate x `lr_factor`, clipped."""
        for g in self.opt_qa.param_groups:
            g["lr"] = g["base_lr"] * lr_factor
        self.opt_qa.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.recipe.clip_norm)
        self.opt_qa.step()

    # ---- phase 1 ---------------------------------------------------------------------------------------------
    def vision_loss(self, idx: np.ndarray) -> tuple[torch.Tensor, float]:
        """Phase 1's loss on training scenes `idx` of the pool."""
        return self.tower_loss(self.pool.images[idx], self.pool.labels[idx])

    def tower_loss(self, images: np.ndarray, labels: np.ndarray) -> tuple[torch.Tensor, float]:
        """Per-patch cross-entropy of each label kind (contact class weighted by `contact_weight`), plus
        `contact_image_weight` x the image-level contact term; and the foreground patch accuracy of shape, colour
        and pattern."""
        pix = self.enc.pixels(images)
        layer = self.model.config.vision_feature_layer
        feats = self.model.model.vision_tower(pixel_values=pix, output_hidden_states=True).hidden_states[layer][:, 1:]
        logits = self.patch_head(feats)
        labels = torch.from_numpy(labels)  # [B, 6, P]
        loss, acc = 0.0, []
        for k, part in enumerate(torch.split(logits, self.patch_sizes, dim=-1)):
            y = labels[:, k]
            weight = None
            if k == 3 and self.recipe.contact_weight != 1.0:
                weight = torch.tensor([1.0, self.recipe.contact_weight])
            loss = loss + torch.nn.functional.cross_entropy(part.reshape(-1, part.shape[-1]), y.reshape(-1), weight=weight)
            if k == 3 and self.recipe.contact_image_weight > 0:
                touch = torch.logsumexp(part[..., 1] - part[..., 0], dim=1)  # [B]: does anything touch?
                loss = loss + self.recipe.contact_image_weight * torch.nn.functional.binary_cross_entropy_with_logits(
                    touch, y.any(1).to(touch.dtype))
            if k < 3:
                fg = y > 0
                acc.append(float((part.argmax(-1)[fg] == y[fg]).float().mean()))
        return loss, float(np.mean(acc))

    def _tower_batch(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """A tower batch: uniform over the pool, or with a share `contact_share` of scenes where shapes touch."""
        r = self.recipe
        if r.contact_share <= 0:
            idx = rng.integers(len(self.pool.images), size=r.vision_batch)
            return self.pool.images[idx], self.pool.labels[idx]
        images, labels = self.touching_scenes()
        if not len(images):
            raise ValueError(f"recipe field contact_share = {r.contact_share}: no training scene has shapes that "
                             f"touch (pool of {len(self.pool.images)}); set contact_scenes to add some")
        n_touch = round(r.contact_share * r.vision_batch)
        t, idx = rng.integers(len(images), size=n_touch), rng.integers(len(self.pool.images), size=r.vision_batch - n_touch)
        return (np.concatenate([images[t], self.pool.images[idx]]), np.concatenate([labels[t], self.pool.labels[idx]]))

    def touching_scenes(self) -> tuple[np.ndarray, np.ndarray]:
        """Images and labels of the training scenes where shapes touch: the pool's, plus those of `contact_scenes`
        more contact-question scenes (drawn past the pool's records)."""
        r = self.recipe
        if self._touching is None or self._touching[0] != r.contact_scenes:
            mine = self.pool.labels[:, 3].any(1)
            images, labels = self.pool.images[mine], self.pool.labels[mine]
            if r.contact_scenes:
                ei, el = D.contact_scenes(r.contact_scenes, r.seed, start=len(self.pool.images), world=r.world,
                                          progress=self.progress)
                keep = el[:, 3].any(1)
                images, labels = np.concatenate([images, ei[keep]]), np.concatenate([labels, el[keep]])
            self._touching = (r.contact_scenes, images, labels)
        return self._touching[1], self._touching[2]

    def _train_tower(self, total: int, start: int, rng: np.random.Generator, desc: str, phase: str) -> None:
        """Tower-only steps (phase 1's loss, `opt_vision` at `vision_lr` with warm-up and cosine decay over
        steps `start`..`total`) from the state's step up to `total`; resumable at every save."""
        r = self.recipe
        bar = tqdm(total=total, initial=self.state["step"], desc=desc, disable=not self.progress)
        while self.state["step"] < total:
            step = self.state["step"]
            for g in self.opt_vision.param_groups:
                g["lr"] = r.vision_lr * _lr_factor(step - start, total - start, 100)
            loss, acc = self.tower_loss(*self._tower_batch(rng))
            self.opt_vision.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.model.vision_tower.parameters(), r.clip_norm)
            self.opt_vision.step()
            self.state["step"] = step + 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}", fg_acc=f"{acc:.2f}")
            if (step + 1) % 100 == 0:
                self.log(phase=phase, step=step + 1, loss=loss.item(), fg_patch_acc=acc)
            if (step + 1) % r.eval_every == 0:
                self.save()
        bar.close()

    def run_vision(self) -> None:
        r = self.recipe
        rng = np.random.default_rng([r.seed, 99, self.state["step"]])
        self._train_tower(r.vision_steps, 0, rng, "phase 1: vision", "vision")
        self.state.update(phase="caption", step=0)
        self.save()

    def run_tower(self) -> None:
        """A stage's tower retraining (`tower_steps`), then on to its end-to-end steps where phase 4 stood."""
        r = self.recipe
        rng = np.random.default_rng([r.seed, 98, self.state["step"]])
        self._train_tower(r.tower_steps, self.state["tower_from"], rng, "stage: tower retraining", "tower")
        self.state.update(phase="finetune", step=self.state.pop("finetune_at"))
        self.state.pop("tower_from")
        self.save()

    # ---- phase 2 ---------------------------------------------------------------------------------------------
    @torch.no_grad()
    def vision_features(self, images: np.ndarray) -> torch.Tensor:
        """The tower's selected features ([B, P, D], before the projector) as LlavaModel selects them."""
        cfg = self.model.config
        out = self.model.model.vision_tower(pixel_values=self.enc.pixels(images), output_hidden_states=True)
        feats = out.hidden_states[cfg.vision_feature_layer]
        return feats[:, 1:] if cfg.vision_feature_select_strategy == "default" else feats

    def cache_features(self) -> torch.Tensor:
        """Features of every training scene under the current (frozen) tower; cached in the work dir."""
        if self.features is not None:
            return self.features
        path = self.work / f"features-{self.recipe.vision_steps}.pt"
        if path.exists():
            return torch.load(path)
        chunks = []
        for i in tqdm(range(0, len(self.pool.images), 256), desc="vision features", disable=not self.progress):
            chunks.append(self.vision_features(self.pool.images[i : i + 256]))
        feats = torch.cat(chunks)
        atomic_write_with(path, lambda fh: torch.save(feats, fh))
        return feats

    def logits_from_features(self, feats: torch.Tensor, batch: dict, keep: int = 1) -> torch.Tensor:
        """Answer-position logits with precomputed tower features: LlavaModel's own steps (projector, image
        features scattered into the embeddings at the <image> positions, language model, lm_head)."""
        ids = batch["input_ids"]
        embeds = self.model.get_input_embeddings()(ids)
        image = self.model.model.multi_modal_projector(feats)
        mask = (ids == self.model.config.image_token_id).unsqueeze(-1).expand_as(embeds)
        embeds = embeds.masked_scatter(mask, image.reshape(-1, image.shape[-1]).to(embeds.dtype))
        out = self.model(inputs_embeds=embeds, attention_mask=batch["attention_mask"],
                         position_ids=batch["position_ids"], use_cache=False, logits_to_keep=keep)
        return out.logits[:, -1, :] if keep == 1 else out.logits

    def caption_loss(self, n: int) -> torch.Tensor:
        """Mean cross-entropy over the description tokens (+ eos) of `n` random training scenes."""
        idx = self.sampler.rng.integers(len(self.pool.images), size=n)
        caps = [D.caption(json.loads(self.pool.facts[i]), self.sampler.rng, self.recipe.caption_locations,
                          self.recipe.caption_pairs) for i in idx]
        b, n_tgt = self.enc.caption_batch(caps)
        return self.sequence_loss(self._features_of(idx), b, n_tgt)

    def open_loss(self, n: int) -> torch.Tensor:
        """Mean cross-entropy over the answer tokens (+ eos) of `n` open-ended questions."""
        idx, qs, ans = self.sampler.sample_open(n)
        b, n_tgt = self.enc.open_batch(self.pool.images[idx], [self.pool.questions[q] for q in qs], ans)
        return self.sequence_loss(self._features_of(idx), b, n_tgt)

    def _features_of(self, idx: np.ndarray) -> torch.Tensor:
        """Tower features of training scenes `idx`: the cache while the tower is frozen (phases 2-3), else computed
        live from the current tower (phase 4, where its description and open-ended rows keep those skills while
        the tower learns from the yes/no rows; no gradient flows into the tower from them)."""
        if self.features is not None:
            return self.features[torch.from_numpy(idx)]
        return self.vision_features(self.pool.images[idx])

    def sequence_loss(self, feats: torch.Tensor, b: dict, n_tgt: list[int]) -> torch.Tensor:
        """Cross-entropy over each row's last `n_tgt` tokens (the target and its end-of-sequence)."""
        keep = max(n_tgt) + 1
        logits = self.logits_from_features(feats, b, keep=keep)
        ids = b["input_ids"][:, -keep:]
        pred, tgt = logits[:, :-1], ids[:, 1:]
        valid = torch.zeros_like(tgt, dtype=torch.bool)
        for r, k in enumerate(n_tgt):
            valid[r, keep - 1 - k :] = True
        per = torch.nn.functional.cross_entropy(pred.reshape(-1, pred.shape[-1]).float(), tgt.reshape(-1), reduction="none")
        return (per * valid.reshape(-1)).sum() / valid.sum()

    def run_caption(self) -> None:
        r = self.recipe
        self.features = self.cache_features()
        bar = tqdm(total=r.caption_steps, initial=self.state["step"], desc="phase 2: descriptions", disable=not self.progress)
        ema, t0 = None, time.time()
        while self.state["step"] < r.caption_steps:
            step = self.state["step"]
            loss = self.caption_loss(r.batch)
            self._lm_step(loss, _lr_factor(step, r.caption_steps, r.warmup))
            ema = loss.item() if ema is None else 0.98 * ema + 0.02 * loss.item()
            self.state["step"] = step + 1
            bar.update(1)
            bar.set_postfix(loss=f"{ema:.3f}")
            if (step + 1) % 100 == 0:
                self.log(phase="caption", step=step + 1, loss=ema, sec=round(time.time() - t0, 1))
            if (step + 1) % r.eval_every == 0:
                self.save()
        bar.close()
        self.state.update(phase="qa", step=0)
        self.save()

    # ---- question answering (phases 3 and 4) --------------------------------------------------------------
    def answer_logits(self, batch: dict, keep: int = 1) -> torch.Tensor:
        """Logits of the last `keep` positions ([B, V] for keep=1, else [B, keep, V])."""
        out = self.model(**batch, use_cache=False, logits_to_keep=keep)
        return out.logits[:, -1, :] if keep == 1 else out.logits

    @torch.no_grad()
    def evaluate(self, ev: D.EvalSet, batch_size: int = 100) -> dict:
        """Yes/no accuracy (overall, per subtype and level), open-ended accuracy per type (every answer token and
        the end-of-sequence token predicted greedily), and `score`, their mean (what selection uses)."""
        self.model.eval()
        p_yes, open_ok = [], []
        for i in range(0, len(ev.questions), batch_size):
            b = self.enc.batch(ev.images[i : i + batch_size], ev.questions[i : i + batch_size])
            lp = torch.log_softmax(self.answer_logits(b).float(), -1)
            p_yes.append((lp[:, self.enc.yes_id] > lp[:, self.enc.no_id]).numpy())
            if ev.open_questions:
                ob, n_tgt = self.enc.open_batch(ev.images[i : i + batch_size], ev.open_questions[i : i + batch_size],
                                                ev.open_answers[i : i + batch_size])
                keep = max(n_tgt) + 1
                logits = self.answer_logits(ob, keep=keep)
                pred, tgt = logits[:, :-1].argmax(-1), ob["input_ids"][:, -keep:][:, 1:]
                for r, k in enumerate(n_tgt):
                    open_ok.append(bool((pred[r, -k:] == tgt[r, -k:]).all()))
        self.model.train()
        pred = np.concatenate(p_yes)
        out = D.summarize(pred == ev.yes, ev.subtypes, ev.questions)
        if open_ok:
            ok, types = np.asarray(open_ok), np.asarray(ev.open_types)
            out["open"] = {t: float(ok[types == t].mean()) for t in D.OPEN_TYPES if (types == t).any()}
            out["open_overall"] = float(ok.mean())
        # selection: yes/no accuracy, averaged with open-ended accuracy when the recipe trains open-ended answers
        out["score"] = (out["overall"] + out["open_overall"]) / 2 if self.recipe.open_share > 0 else out["overall"]
        return out

    def run_qa(self, phase: str) -> None:
        """Phase "qa" (frozen tower, cached features) or "finetune" (end to end), resumable at any step."""
        r = self.recipe
        total = r.qa_steps if phase == "qa" else r.finetune_steps
        frozen = phase == "qa"
        if frozen:
            self.features = self.cache_features()
        scale = 1.0 if frozen else 0.3
        warmup = r.warmup if frozen else max(1, r.warmup // 4)
        label = "phase 3: questions (frozen tower)" if frozen else "phase 4: questions, end to end"
        bar = tqdm(total=total, initial=self.state["step"], desc=label, disable=not self.progress)
        ema_loss, ema_acc, t0 = None, None, time.time()
        while self.state["step"] < total and not self.state["done"]:
            step = self.state["step"]
            scenes, qs, ys = self.sampler.sample(r.batch)
            # each row is prompt + answer token: the answer is predicted at the prompt's last position, and the
            # end-of-sequence token right after it (so generation stops after "Yes"/"No")
            b = self.enc.batch(self.pool.images[scenes], [self.pool.questions[q] for q in qs], answers=ys)
            target = torch.where(torch.from_numpy(ys), self.enc.yes_id, self.enc.no_id)
            if frozen:
                both = self.logits_from_features(self.features[torch.from_numpy(scenes)], b, keep=2)
            else:
                both = self.answer_logits(b, keep=2)
            logits = both[:, 0]
            loss = torch.nn.functional.cross_entropy(logits.float(), target)
            loss = loss + 0.1 * torch.nn.functional.cross_entropy(
                both[:, 1].float(), torch.full_like(target, self.enc.eos_id))
            n_cap = round(r.caption_mix * r.batch)
            if n_cap:
                loss = loss + r.caption_mix * self.caption_loss(n_cap)
            n_open = round(r.open_share * r.batch)
            if n_open and (step >= r.open_start or not frozen):
                loss = loss + r.open_weight * self.open_loss(n_open)
            if not frozen and r.finetune_patch_weight > 0:  # the tower keeps its per-patch labels (contact first)
                loss = loss + r.finetune_patch_weight * self.vision_loss(scenes)[0]
            self._lm_step(loss, _lr_factor(step, total, warmup) * scale)
            with torch.no_grad():
                acc = float(((logits[:, self.enc.yes_id] > logits[:, self.enc.no_id]) == torch.from_numpy(ys)).float().mean())
            ema_loss = loss.item() if ema_loss is None else 0.98 * ema_loss + 0.02 * loss.item()
            ema_acc = acc if ema_acc is None else 0.98 * ema_acc + 0.02 * acc
            self.state["step"] = step + 1
            bar.update(1)
            bar.set_postfix(loss=f"{ema_loss:.3f}", acc=f"{ema_acc:.2f}")
            if (step + 1) % 100 == 0:
                self.log(phase=phase, step=step + 1, loss=ema_loss, train_acc=ema_acc, sec=round(time.time() - t0, 1))
            if (step + 1) % r.eval_every == 0 or step + 1 == total:
                res = self.evaluate(self.val)
                self.log(phase=f"{phase}-val", step=step + 1, **res)
                msg = " ".join([*(f"{k}={v:.2f}" for k, v in res["subtype"].items()),
                                *(f"open-{k}={v:.2f}" for k, v in res.get("open", {}).items()),
                                *(f"{D.CAPTION_RELATIONS[k].replace(' ', '-')}={v:.2f}" for k, v in res["relation"].items())])
                tqdm.write(f"[val {phase} step {step + 1}] yes/no={res['overall']:.3f} "
                           f"open={res.get('open_overall', float('nan')):.3f} {msg}")
                if self._selectable(phase, step + 1) and (
                        self.state["best"] is None or res["score"] > self.state["best"].get("score", -1)):
                    self.state["best"] = {"phase": phase, "step": step + 1, **res}
                    torch.save(self.model.state_dict(), self.work / "best.pt")
                if res["score"] >= r.target_val_acc:
                    self.state["done"] = True
                self.save()
        bar.close()

    def _selectable(self, phase: str, step: int) -> bool:
        """Whether the weights after `step` steps of `phase` may be exported: with a head-dropout start, only those
        trained with dropout (else the selection could pick a checkpoint that never saw it)."""
        r = self.recipe
        return not (r.head_dropout > 0 and r.head_dropout_start > 0 and self.question_step(phase, step) <= r.head_dropout_start)

    def _use(self, recipe: Recipe) -> None:
        """Put a stage's recipe in force: the sampler's subtype weights and primary share, and the optimiser's
        base learning rates (its saved state would otherwise bring back the old ones)."""
        self.recipe = recipe
        self.sampler.set_weights(recipe.weights())
        self.sampler.primary_share = recipe.primary_share
        self.sampler.set_prior_labels(recipe.prior_labels, recipe.prior_side_labels)
        tower, rest = self.opt_qa.param_groups
        tower["base_lr"], rest["base_lr"] = recipe.vision_tower_lr, recipe.lr

    def next_stage(self) -> None:
        """Start the next stage where the last one stopped: back in phase 3 at its last step if the stage adds
        frozen-tower steps, in a tower retraining if it adds tower steps (then on in phase 4), else on in phase 4.
        Selection starts afresh (the stage's own best on val is kept)."""
        k = self.state.get("stage", 0) + 1
        prev, new = self.recipe, self.base.at_stage(k)
        if new.qa_steps > prev.qa_steps:
            self.state.update(phase="qa", step=prev.qa_steps)
        elif new.tower_steps > prev.tower_steps:  # back to phase 4 where it stood once the tower is retrained
            at = self.state["step"] if self.state["phase"] == "finetune" else 0
            self.state.update(phase="tower", step=prev.tower_steps, tower_from=prev.tower_steps, finetune_at=at)
        self.state.update(stage=k, best=None)
        self._use(new)
        self.log(phase="stage", stage=k, step=self.state["step"], **self.base.stage_overrides()[k - 1])
        self.save()

    def run(self) -> None:
        self._run_phases()
        while not self.state["done"] and self.state.get("stage", 0) < len(self.base.stage_overrides()):
            self.next_stage()
            self._run_phases()

    def _run_phases(self) -> None:
        if self.state["phase"] == "vision":
            self.run_vision()
        if self.state["phase"] == "tower":
            self.run_tower()
        if self.state["phase"] == "caption":
            self.run_caption()
        if self.state["phase"] == "qa":
            self.run_qa("qa")
            self.features = None
            if not self.state["done"]:
                self.state.update(phase="finetune", step=0)
                self.save()
        if self.state["phase"] == "finetune" and not self.state["done"]:
            self.run_qa("finetune")
        self.features = None


def init_path(init_from: str) -> pathlib.Path:
    """Recipe field init_from as a directory: as given, or else relative to the repository root (the presets name
    the committed parent checkpoint that way, so they work from any working directory)."""
    from vseam.organism import REPO_ROOT

    path = pathlib.Path(init_from)
    return path if path.is_absolute() or path.exists() else REPO_ROOT / path


def export(trainer: Trainer, out: pathlib.Path) -> dict:
    """Write the selected weights in the llava-hf layout to `out` (plus training metadata)."""
    from vseam.core.toy_checkpoints import llava_hub_key, write_sharded

    best = trainer.work / "best.pt"
    state = torch.load(best) if best.exists() and trainer.state["best"] is not None else trainer.model.state_dict()
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("model-*.safetensors"):
        old.unlink()
    for f in trainer.init_dir.iterdir():
        if f.suffix == ".safetensors" or f.name == "model.safetensors.index.json":
            continue
        shutil.copy(f, out / f.name)
    write_sharded({llava_hub_key(k): v.detach().clone() for k, v in state.items()}, out)
    meta = {
        "recipe": trainer.base.to_json(),
        "spec": dataclasses.asdict(trainer.spec),
        "selected": trainer.state["best"],
        "minutes": round(trainer.state.get("seconds", 0.0) / 60, 1),
        "world": D.shapes.world_description(),
        "world_fingerprint": D.shapes.fingerprint(),
        "torch": torch.__version__,
    }
    if trainer.base.init_from:  # the lineage: what the starting checkpoint was trained with
        init_meta = init_path(trainer.base.init_from) / "training.json"
        meta["init"] = json.loads(init_meta.read_text()) if init_meta.is_file() else None
    D.json_dump(meta, out / "training.json")
    return meta


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m vseam.organism.train", description=__doc__.split("\n")[0])
    p.add_argument("--work", default=str(D.shapes.default_images_dir().parent / "organism" / "run"), help="checkpoints, logs (resumable)")
    p.add_argument("--export", default=str(WEIGHTS_DIR), help="where the final checkpoint is written")
    p.add_argument("--fresh", action="store_true", help="discard an existing checkpoint in --work")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (default 1: the committed weights were trained with 1, and only that count "
                        "reproduces them bit for bit; 2 ran 1.7x faster on an idle 2-core machine, but its weights "
                        "differ in the last bits: 2.5e-4 at most after 30 steps)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--preset", default=COMMITTED_PRESET, choices=sorted(PRESETS),
                   help=f"named recipe (default {COMMITTED_PRESET}: the committed weights'); fields below override it")
    for name, read in field_readers().items():
        p.add_argument("--" + name.replace("_", "-"), default=None, type=read)
    args = p.parse_args(argv)
    try:
        recipe = preset(args.preset, **{f.name: getattr(args, f.name) for f in dataclasses.fields(Recipe)
                                       if getattr(args, f.name) is not None})
    except ValueError as e:
        p.error(str(e))
    torch.set_num_threads(args.threads)
    work = pathlib.Path(args.work)
    if args.fresh and work.exists():
        shutil.rmtree(work)
    trainer = Trainer(recipe, work, progress=not args.no_progress)
    trainer.run()
    meta = export(trainer, pathlib.Path(args.export))
    print(f"exported to {args.export}: selected step {meta['selected'] and meta['selected']['step']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
