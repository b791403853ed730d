"""What training the model organism costs on this machine: each kind of training step timed at 1 and at 2 torch
threads, side by side in one run, and a recipe chain's minutes projected from them against issue 15's budget.

    .venv/bin/python -m vseam.organism.budget [--chain v2-staged,v2-priors] [--threads 1,2] [--steps 10]
    .venv/bin/python -m vseam.organism.budget --set text_heads=8 [--set FIELD=VALUE ...]   (price a recipe first)

The committed weights come from a chain: `--preset v2-staged` trains the parent (`weights-v2-staged/`) from
scratch, and the default preset (`v2-priors`) trains the committed weights from that parent. The budget asks for
the whole chain in 60 minutes on 2 CPU cores.

How: for each step kind of the chain (tower-only steps of phase 1 and of a stage's tower retraining, phase 2's
descriptions, phase 3's frozen-tower questions, phase 4's end-to-end questions) a `Trainer` is built with the recipe
of the stage that adds the most steps of that kind (its step counts cut to `--steps`, on a small pool of training
scenes: a step's cost does not depend on the pool's size) and the trainer's own loops run `--steps` steps after 2
warm-up steps, once per thread count in turn. Validation passes (700 questions; the one that ends each kind's timed
question steps), the tower features of the training pool and rendering training scenes are timed on their own. A
chain's projection is, per preset, steps x seconds per step of each kind + validation passes x their time + features
of the pool, summed over the presets; rendering the extra contact scenes counts in its preset, rendering the pool
(which `training.json`'s `minutes` leaves out: it runs before training) on a row of its own. Early stopping at
`target_val_acc` is ignored (every step counted). Where a committed checkpoint was trained by a preset of the chain,
its recorded minutes (one thread) stand beside the projection. `--set` changes a recipe field in every preset of the
chain, so a recipe can be priced before anyone trains it; a step costs the same whatever the weights, so no starting
checkpoint is loaded.

The last line is one JSON object with every figure. A benchmark, not a test; it lives with the organism rather than
in `benchmarks/` because it drives the organism's trainer, which the stage packages may not import.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import pathlib
import sys
import tempfile
import time

import numpy as np

KINDS = ("tower", "caption", "qa", "finetune")
BUDGET_MINUTES = 60.0


@dataclasses.dataclass
class ChainPart:
    """One preset's training: steps of each kind, validation passes, scenes rendered / featurised."""

    preset: str
    steps: dict
    evals: int
    pool_scenes: int
    contact_scenes: int
    features: int
    #: the stage (index into the preset's stages, 0 = the recipe itself) whose settings time each kind
    stage_of: dict
    #: minutes recorded by a committed checkpoint this preset trained (one thread), if any
    recorded_minutes: float | None = None
    #: the training world its scenes are rendered in
    world: str = "v2"


def _segments_evals(start: int, end: int, every: int) -> int:
    """Validation passes of a question loop from step `start` to `end`: every `every` steps and at the end."""
    if end <= start:
        return 0
    n = end // every - start // every
    return n + (end % every != 0)


def plan(preset_name: str, overrides: dict | None = None) -> ChainPart:
    """What the preset `preset_name` (with recipe fields `overrides`) trains, counted from its recipe and stages."""
    from vseam.organism.recipe import preset

    base = preset(preset_name, **(overrides or {}))
    n_stages = len(base.stage_overrides()) + 1
    recs = [base.at_stage(k) for k in range(n_stages)]
    from_scratch = not base.init_from
    steps = dict.fromkeys(KINDS, 0)
    best = {k: (0, 0) for k in KINDS}  # kind -> (most steps a stage added, that stage)
    evals = 0
    prev = dict(qa=0, finetune=0, tower=0)
    for k, r in enumerate(recs):
        added = {
            "qa": (r.qa_steps - prev["qa"]) if from_scratch else 0,
            "finetune": r.finetune_steps - prev["finetune"],
            "tower": r.tower_steps - prev["tower"],
        }
        if k == 0 and from_scratch:
            added["tower"] += r.vision_steps
            steps["caption"] = r.caption_steps
            best["caption"] = (r.caption_steps, 0)
        for kind, n in added.items():
            steps[kind] += n
            if n > best[kind][0]:
                best[kind] = (n, k)
        evals += _segments_evals(prev["qa"], prev["qa"] + added["qa"], r.eval_every)
        evals += _segments_evals(prev["finetune"], r.finetune_steps, r.eval_every)
        prev = dict(qa=prev["qa"] + added["qa"], finetune=r.finetune_steps, tower=r.tower_steps)
    last = recs[-1]
    # every run renders its pool of training scenes (a run from a checkpoint samples its questions there too)
    return ChainPart(preset=preset_name, steps=steps, evals=evals, pool_scenes=last.train_scenes, world=last.world,
                     contact_scenes=last.contact_scenes,
                     features=last.train_scenes if (steps["qa"] or steps["caption"]) else 0,
                     stage_of={k: v[1] for k, v in best.items()},
                     recorded_minutes=_recorded_minutes(preset_name, overrides))


class _Timer:
    """A trainer for one step kind, with validation passes timed apart from the steps."""

    def __init__(self, preset_name: str, stage: int, kind: str, pool: int, work: pathlib.Path,
                 overrides: dict | None = None):
        from vseam.organism.recipe import preset
        from vseam.organism.train import Trainer

        rec = preset(preset_name, **(overrides or {})).at_stage(stage)
        # a step costs the same whatever the weights, so a preset's starting checkpoint is not loaded
        rec = dataclasses.replace(rec, stages="", tower_steps=0, train_scenes=pool, eval_every=10**9, init_from="",
                                  contact_scenes=min(rec.contact_scenes, 200),
                                  finetune_steps=max(rec.finetune_steps, 1),
                                  head_dropout_start=0 if kind in ("qa", "finetune") else rec.head_dropout_start)
        self.kind, self.eval_seconds = kind, []
        self.trainer = Trainer(rec, work, progress=False)
        trainer_eval = self.trainer.evaluate

        def timed_eval(ev, batch_size: int = 100):
            t0 = time.perf_counter()
            out = trainer_eval(ev, batch_size)
            self.eval_seconds.append(time.perf_counter() - t0)
            return out

        self.trainer.evaluate = timed_eval
        if kind in ("caption", "qa"):
            self.trainer.features = self.trainer.cache_features()
        # frozen-tower question steps add open-ended rows from `open_start` on, as most of them do
        self.done = rec.open_start if kind == "qa" else 0
        self._rng = np.random.default_rng(0)

    def _to(self, total: int) -> None:
        t, r = self.trainer, self.trainer.recipe
        if self.kind == "tower":
            t.state["step"] = self.done
            t._train_tower(total, 0, self._rng, "tower", "tower")
        elif self.kind == "caption":
            t.recipe = dataclasses.replace(r, caption_steps=total)
            t.state.update(phase="caption", step=self.done)
            t.run_caption()
        else:
            field = "qa_steps" if self.kind == "qa" else "finetune_steps"
            t.recipe = dataclasses.replace(r, **{field: total})
            t.state.update(phase=self.kind, step=self.done, done=False)
            t.run_qa(self.kind)
        self.done = total

    def seconds_per_step(self, steps: int) -> float:
        """Wall seconds per step over `steps` steps after 2 warm-up steps (validation passes excluded)."""
        self._to(self.done + 2)
        n_eval = len(self.eval_seconds)
        t0 = time.perf_counter()
        self._to(self.done + steps)
        return (time.perf_counter() - t0 - sum(self.eval_seconds[n_eval:])) / steps


def _render_seconds(n: int, tmp: pathlib.Path, world: str) -> tuple[float, float]:
    """Seconds per training scene rendered (pool) and per contact scene in training world `world`, into a fresh
    cache."""
    from vseam.organism import data as D

    t0 = time.perf_counter()
    D.build_pool(n, seed=12345, cache_dir=tmp / "pool", progress=False, world=world)
    pool = (time.perf_counter() - t0) / n
    t0 = time.perf_counter()
    D.contact_scenes(n, seed=12345, start=10**6, world=world, cache_dir=tmp / "contact", progress=False)
    return pool, (time.perf_counter() - t0) / n


def _recorded_minutes(preset_name: str, overrides: dict | None = None) -> float | None:
    """Minutes recorded in a committed checkpoint that this preset trained, if any (`training.json`: its recipe
    agrees with the preset's on every field it records)."""
    from vseam.organism import PARENT_WEIGHTS_DIR, WEIGHTS_DIR
    from vseam.organism.recipe import preset

    mine = preset(preset_name, **(overrides or {})).to_json()
    for d in (WEIGHTS_DIR, PARENT_WEIGHTS_DIR):
        meta = d / "training.json"
        if meta.is_file():
            doc = json.loads(meta.read_text())
            if all(mine.get(k) == v for k, v in doc.get("recipe", {}).items()):
                return doc.get("minutes")
    return None


def project(parts: list[ChainPart], per_step: dict[int, dict[str, float]], eval_s: dict[int, float],
            feature_s: dict[int, float], render_pool: dict[str, float], render_contact: dict[str, float]) -> dict:
    """Every figure of the run and each preset's projected minutes per thread count: steps x seconds per step
    (`per_step[threads]["preset:kind"]`) + validation passes x `eval_s` + the pool's tower features + rendering
    the extra contact scenes; rendering the pool itself on a row of its own (`pool_render_minutes`)."""
    threads = sorted(per_step)
    figures = {"threads": threads, "budget_minutes": BUDGET_MINUTES, "render_seconds_per_scene": render_pool,
               "contact_render_seconds_per_scene": render_contact,
               "seconds_per_step": {str(t): per_step[t] for t in threads},
               "eval_seconds": {str(t): eval_s[t] for t in threads if t in eval_s},
               "feature_seconds_per_scene": {str(t): feature_s[t] for t in threads if t in feature_s},
               "speedup_2_over_1": {}, "chain": []}
    if 1 in per_step and 2 in per_step:
        figures["speedup_2_over_1"] = {k: per_step[1][k] / per_step[2][k] for k in per_step[1] if k in per_step[2]}
    total, data_minutes = dict.fromkeys(threads, 0.0), 0.0
    for part in parts:
        entry = {"preset": part.preset, "steps": part.steps, "evals": part.evals, "pool_scenes": part.pool_scenes,
                 "contact_scenes": part.contact_scenes, "recorded_minutes_1_thread": part.recorded_minutes,
                 "projected_minutes": {}}
        for t in threads:
            sec = sum(n * per_step[t][f"{part.preset}:{k}"] for k, n in part.steps.items() if n)
            sec += part.evals * eval_s.get(t, 0.0) + part.features * feature_s.get(t, 0.0)
            sec += part.contact_scenes * render_contact[part.world]
            entry["projected_minutes"][str(t)] = sec / 60
            total[t] += sec / 60
        entry["pool_render_minutes"] = part.pool_scenes * render_pool[part.world] / 60
        data_minutes += entry["pool_render_minutes"]
        figures["chain"].append(entry)
    figures["chain_projected_minutes"] = {str(t): total[t] for t in threads}
    figures["chain_with_pool_render_minutes"] = {str(t): total[t] + data_minutes for t in threads}
    figures["fits_budget"] = {str(t): total[t] + data_minutes <= BUDGET_MINUTES for t in threads}
    figures["over_budget_ratio"] = {str(t): (total[t] + data_minutes) / BUDGET_MINUTES for t in threads}
    return figures


def parse_sets(items: list[str]) -> dict:
    """`--set FIELD=VALUE` items as recipe field overrides, each VALUE read as its field's type."""
    from vseam.organism.recipe import field_readers

    readers = field_readers()
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or name not in readers:
            raise ValueError(f"--set {item!r}: expected FIELD=VALUE with FIELD a recipe field "
                             f"({', '.join(sorted(readers))})")
        try:
            out[name] = readers[name](value.strip())
        except ValueError:
            raise ValueError(f"--set {item!r}: {value!r} is not of type {readers[name].__name__}") from None
    return out


def _thread_counts(text: str) -> list[int]:
    """`--threads` as a list of counts."""
    try:
        return [int(t) for t in text.split(",")]
    except ValueError:
        raise ValueError(f"--threads {text!r}: expected comma-separated thread counts, e.g. 1,2") from None


def main(argv: list[str] | None = None) -> int:
    import torch

    p = argparse.ArgumentParser(prog="python -m vseam.organism.budget", description=__doc__.split("\n")[0])
    p.add_argument("--chain", default="v2-staged,v2-priors", help="presets trained one after the other")
    p.add_argument("--threads", default="1,2", help="torch thread counts to time, comma-separated")
    p.add_argument("--steps", type=int, default=10, help="timed steps per kind and thread count (after 2 warm-up)")
    p.add_argument("--pool", type=int, default=600, help="training scenes of the timing trainers' pool")
    p.add_argument("--render", type=int, default=200, help="scenes rendered to time rendering")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="a recipe field for every preset of the chain, to price a recipe before training it "
                        "(e.g. --set text_heads=8); repeatable")
    args = p.parse_args(argv)
    try:
        threads = _thread_counts(args.threads)
        overrides = parse_sets(args.set)
        parts = [plan(name.strip(), overrides) for name in args.chain.split(",")]
    except ValueError as e:
        p.error(str(e))
    if args.steps < 1 or args.pool < 64 or not threads or min(threads) < 1:
        p.error("--steps >= 1, --pool >= 64 and thread counts >= 1")

    t_start = time.perf_counter()
    per_step: dict[int, dict[str, float]] = {t: {} for t in threads}
    eval_s: dict[int, list[float]] = {t: [] for t in threads}
    feature_s: dict[int, float] = {}
    # the trainers' validation lines go to stderr with the progress, so stdout holds the table and the JSON line
    with tempfile.TemporaryDirectory() as tmp_s, contextlib.redirect_stdout(sys.stderr):
        tmp = pathlib.Path(tmp_s)
        render_pool, render_contact = {}, {}
        for world in sorted({part.world for part in parts}):
            render_pool[world], render_contact[world] = _render_seconds(args.render, tmp / f"world-{world}", world)
        # one timing trainer per preset and step kind, with the settings of the stage that runs most of that kind
        for part in parts:
            for kind in KINDS:
                if not part.steps[kind]:
                    continue
                key = f"{part.preset}:{kind}"
                timer = _Timer(part.preset, part.stage_of[kind], kind, args.pool, tmp / key.replace(":", "-"),
                               overrides)
                for t in threads:
                    torch.set_num_threads(t)
                    per_step[t][key] = timer.seconds_per_step(args.steps)
                    print(f"  {key:<20} {t} thread(s): {per_step[t][key]:.3f} s/step", file=sys.stderr, flush=True)
                    if kind in ("qa", "finetune"):  # the validation pass that ended the timed question steps
                        eval_s[t].append(timer.eval_seconds[-1])
                    if kind == "qa" and t not in feature_s:  # the pool's tower features
                        tr = timer.trainer
                        t0 = time.perf_counter()
                        for i in range(0, len(tr.pool.images), 256):
                            tr.vision_features(tr.pool.images[i : i + 256])
                        feature_s[t] = (time.perf_counter() - t0) / len(tr.pool.images)
    torch.set_num_threads(threads[0])

    figures = project(parts, per_step, {t: float(np.mean(v)) for t, v in eval_s.items() if v}, feature_s,
                      render_pool, render_contact)
    figures.update(steps_timed=args.steps, chain_presets=[part.preset for part in parts], overrides=overrides)
    data_minutes = sum(entry["pool_render_minutes"] for entry in figures["chain"])
    figures["benchmark_seconds"] = time.perf_counter() - t_start

    head = "".join(f"{f'{t} thread(s)':>14}" for t in threads)
    print(f"\nseconds per step (timed {args.steps} steps after 2 warm-up, fp32)\n{'preset:kind':<22}{head}")
    for key in per_step[threads[0]]:
        print(f"{key:<22}" + "".join(f"{per_step[t][key]:>14.3f}" for t in threads))
    print(f"{'validation pass (700)':<22}"
          + "".join(f"{np.mean(eval_s[t]) if eval_s[t] else float('nan'):>14.1f}" for t in threads))
    print(f"{'features per scene':<22}" + "".join(f"{feature_s.get(t, float('nan')):>14.4f}" for t in threads))
    for world in render_pool:
        print(f"rendering, world {world}: {render_pool[world] * 1000:.1f} ms per pool scene, "
              f"{render_contact[world] * 1000:.1f} ms per contact scene")
    if figures["speedup_2_over_1"]:
        print("2 threads over 1: " + ", ".join(f"{k} {v:.2f}x" for k, v in figures["speedup_2_over_1"].items()))
    print(f"\nprojected minutes (budget {BUDGET_MINUTES:.0f} for the whole chain)")
    print(f"{'preset':<22}{head}{'recorded (1)':>14}")
    for entry in figures["chain"]:
        rec = entry["recorded_minutes_1_thread"]
        print(f"{entry['preset']:<22}" + "".join(f"{entry['projected_minutes'][str(t)]:>14.1f}" for t in threads)
              + f"{rec if rec is not None else '-':>14}")
    print(f"{'+ rendering the pool':<22}" + "".join(f"{data_minutes:>14.1f}" for _ in threads))
    print(f"{'chain':<22}" + "".join(f"{figures['chain_with_pool_render_minutes'][str(t)]:>14.1f}" for t in threads))
    print(json.dumps(figures, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
