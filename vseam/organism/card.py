"""Held-out accuracy of the model organism and its model card.

    .venv/bin/python -m vseam.organism.card [--weights DIR] [--n 1400]

Scores the committed checkpoint with the HF reference engine (`vseam.core.engine.HeadEngine`: the same prompt
rendering, padding and answer tokens the calibrator uses) on the "test" split of the `shapes` world — the split
neither training nor checkpoint selection saw — and writes `card.json` (every number) and `MODEL_CARD.md`.
A prediction is "yes" when P(Yes) > P(No) at the answer position.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

import numpy as np

from vseam.organism import CARD_JSON, MODEL_CARD, WEIGHTS_DIR

HELD_OUT_SPLIT = "test"
SEEDS_TEXT = "5 seeds of random heads per count; the paper's Table 3 loses 0.15 pp for 10 of 1,024 heads"
#: the first records of the held-out split scored by the quick test (tests/test_organism.py)
QUICK_N = 140


def predict(engine, split: str, n: int, seed: int = 0, batch: int = 50, progress: bool = True):
    """(yes-predictions, gold yes, subtypes, P(yes|yes,no)) of the first `n` generator questions of `split`."""
    from tqdm import tqdm

    from vseam.calibrate.datasets import shapes

    preds, gold, subtypes, pyes = [], [], [], []
    for start in tqdm(range(0, n, batch), desc=f"scoring {split}", disable=not progress):
        imgs, qs = [], []
        for i in range(start, min(n, start + batch)):
            scene, q = shapes.generate(split, i, seed)
            imgs.append(shapes.render_image(scene))
            qs.append(q.text)
            gold.append(q.answer == "yes")
            subtypes.append(q.subtype)
        out = engine.binary(imgs, qs)
        y, no = out["yes"].numpy(), out["no"].numpy()
        preds.append(y > no)
        pyes.append(y / (y + no))
    return np.concatenate(preds), np.asarray(gold), subtypes, np.concatenate(pyes)


def prior_breakdown(correct: np.ndarray, split: str, seed: int = 0, sides: bool = False) -> dict:
    """Accuracy on held-out questions where the training prior agrees with the truth vs where it misleads (with the
    side prior on spatial questions when the weights were trained with it, `sides`)."""
    from vseam.calibrate.datasets import shapes
    from vseam.calibrate.datasets.shapes.priors import training_priors

    priors = training_priors(sides)

    groups: dict[str, list[bool]] = {"prior agrees": [], "prior misleads": []}
    for i, ok in enumerate(correct):
        scene, q = shapes.generate(split, i, seed)
        says = priors.says_yes(q.subtype, q.text, {o.shape for o in scene.objects})
        if says is not None:
            groups["prior agrees" if says == (q.answer == "yes") else "prior misleads"].append(bool(ok))
    return {k: {"n": len(v), "accuracy": float(np.mean(v)) if v else None} for k, v in groups.items()}


def training_of(weights: pathlib.Path) -> dict:
    """The checkpoint's training.json (its recipe under "recipe"), or {} when it has none."""
    path = pathlib.Path(weights) / "training.json"
    return json.loads(path.read_text()) if path.exists() else {}


def evaluate(weights: pathlib.Path, n: int, progress: bool = True) -> dict:
    import torch

    from vseam.core.engine import HeadEngine
    from vseam.organism.data import summarize

    torch.set_num_threads(1)
    engine = HeadEngine.from_pretrained(str(weights))
    pred, gold, subtypes, pyes = predict(engine, HELD_OUT_SPLIT, n, progress=progress)
    correct = pred == gold
    res = summarize(correct, subtypes)
    res["split"] = HELD_OUT_SPLIT
    res["yes_rate"] = float(pred.mean())
    res["quick"] = {"n": QUICK_N, "accuracy": float(correct[:QUICK_N].mean())}
    res["mean_confidence"] = float(np.mean(np.where(gold, pyes, 1 - pyes)))
    sides = bool(training_of(weights).get("recipe", {}).get("prior_sides"))
    res["priors"] = prior_breakdown(correct, HELD_OUT_SPLIT, sides=sides)
    return res


NOTES = """\
## Organism v2: what the committed checkpoint meets, and what it does not

The committed weights are organism v2 with planted flaws, `--preset v2-priors` (the default): the v2-staged
checkpoint (committed beside it as `weights-v2-staged/`, trained in the uniform world; seventh round, below)
trained 900 more end-to-end steps in the v2 training world, whose scenes carry the priors and whose annotations
follow them half the time where they mislead (`prior_labels` 0.5: "Is there a square?" labelled "yes" when the
square is missing but its usual partner, the circle, is there; "Is the circle red?" labelled "yes" of a circle of
another colour). Against the issue (held-out `test` split; tables above):

* **Point 1 (redundant heads): met at the sizes the demo's profiles touch since the third look; the size the
  first two looks used misses it.** Zeroing 8 random heads of 64 (as many as the demo's paper-exact profiles
  touch) changes accuracy by +0.06 pp on average over 5 seeds, -1.14 pp for the worst seed (targets: < 1 and
  < 2); the parent lost 0.31 pp (worst 1.29). Zeroing 10 costs 0.31 pp, worst 0.71 (val: 0.14, worst 1.00).
  Ten is the most heads a demo profile may touch since the third look (K <= 5; the object profile it chooses,
  K = 5, touches exactly 10). The object profile of the first two looks (K = 10) touched 20 heads, and zeroing
  20 random heads costs 2.74 pp on average, 7.00 pp for the worst seed (table above). At that size the organism
  is not as redundant as the issue asks: 20 heads are 31% of its 64, where on LLaVA-1.5-7B they would be 2% of
  1,024. On `test2`, the split of the third look, zeroing 10 heads changes accuracy by +1.00 pp (every seed
  gains, +0.86 to +1.14), so it sits at the band's edge, as a gain.
* **Point 2 (every subtype learned): met.** 87.5-98.5% on each of the 7 subtypes of the 1,400 test questions
  (87-97% on the first 700, which the demo and the removal curve use); the parent was at 95.5-100%. The planted flaw costs about 6 pp overall.
* **Point 3 (planted priors): partly met.** The errors sit where the priors mislead: of the first 700 test
  questions, the 84 "no" questions that the priors answer "yes" are answered right 64.3% of the time, the other
  316 colour and presence questions 96.5% (one-sided Fisher p = 2e-14; the parent: 97.6% and 98.4%, p = 0.45),
  so 30 of the 64 errors are on those 84 questions. shapes-POPE's adversarial split is now its hardest (93.3% against 95.0% on random, with
  the yes-ratio rising from 52.5% to 54.2%). The demo's 4,900 calibration questions (3,430 not held out) hold
  111 / 164 / 24 wrongly answered attribute / object / relation inputs, all of which go into Eq 7 (the parent:
  8 / 1 / 3 of 700). Not met in full: "a few hundred per level" is reached nowhere (the object level comes
  closest), and the relation level carries no prior. Where those errors sit (the same 3,430 questions): 144 of
  the object level's 164 are on the 351 presence questions the co-occurrence prior misleads (41% wrong there, 1.8%
  elsewhere), but only 12 of the attribute level's 111 are the colour prior's. Balanced colour questions rarely
  name a shape's typical colour of an object of another colour (37 of 490), and the other 99 attribute errors are
  misread colours (36) and materials (63). This is why rescaling finds nothing to fix at the attribute level.
  A ceiling set by point 2: with every subtype at 85% or more, those 3,430 questions (490 per subtype) can hold
  at most 147 / 220 / 147 wrong attribute / object / relation inputs, so "a few hundred per level" needs more
  calibration questions than the demo's 10 minutes hold, whatever the priors; the object level is at 75% of its
  ceiling, attribute 76%, relation 16%.
* **Point 7 (budgets): the weights (10 MB of 30) and `make demo` (9.4 and 8.6 minutes of 10 on this machine, two
  fresh runs) are met; reproducing the weights in 60 minutes is missed for the whole chain, met for the last
  step.**
  `python -m vseam.organism.train` (the default preset) reproduces the committed weights bit for bit from the
  committed parent in 17 minutes of one thread; the parent itself took 215 minutes (`--preset v2-staged`). The
  demo met its budget once its calibration ran on both cores and the server loaded beside it (16.6 minutes
  before, the same profiles and figures).
  What the whole chain costs on both cores (fourteenth round; `python -m vseam.organism.budget` times each kind of
  training step at 1 and 2 threads in one run and projects the chain): **256 minutes on one thread, 157 on two, 2.6
  times the budget** (253 and 158 in an earlier run). Per step, 1 / 2 threads: tower 0.22 / 0.16 s, descriptions
  1.90 / 1.04, frozen-tower questions 1.28 / 0.75, end-to-end questions 1.49 / 0.89 (1.3-1.8 times faster on two); a
  validation pass 13.1 / 7.5 s; rendering the two 30,000-scene pools (one per world) 2.9 + 2.7 minutes. The
  projection of the parent on one thread (229 minutes) is 7% above its recorded 215, of the last step (21.2) 29%
  above its recorded 16.4: this shared machine ran that step in 1.40-1.48 s where that day's run took 1.09 s. Steps
  are compute-bound: a question step is a forward and backward pass over 50 rows of 93-111 tokens, 64 of them image
  tokens, about 50-60 GFLOP by a count of the matrix products. Simply halving the schedule did not work: the same
  chain with every step count halved, on two threads, kept yes/no answers at 50.0% at every validation pass up to
  question step 1,800 (stopped there, 36 minutes in, 7 of them beside a benchmark run). Its head dropout began at
  step 1,051, before yes/no verification had formed, and the fourth round found that dropout before those circuits
  form keeps verification at chance; the full chain trains 2,100 question steps without dropout first. Meeting the
  budget needs a cheaper step (fewer image tokens or a narrower model), which means new weights. Fewer heads alone
  are not enough: with 8 heads per layer (`--set text_heads=8`, v1's layout, which failed point 1) the same chain
  projects at 111 minutes on two threads.
  `--threads 2` is 1.7 times faster but does not reproduce the committed weights bit for bit (they differ by up to
  2.5e-4 after 30 steps), so the default stays at one thread.

Twelfth round (the same checkpoint; a third look, with profiles inside point 1). The second look's object
profile scaled 20 heads, more than the organism can lose at random within point 1. The rule for a third look
was committed before its code and run (`docs/claim-third-look.md`). The demo's K grid is cut so that a profile
touches at most 10 heads (K in 1, 2, 4, 5), and the look is judged at p < 0.001 on 1,400 questions of `test2`,
a new held-out split of its own seed: the second rule had closed `test` to new profiles. The calibration
chose object K = 5, alpha = 1 (held-out object accuracy 90.5% -> 93.8% on 630 questions, p = 5e-5) and
alpha = 0 for attribute and relation. On the 1,400 `test2` questions rescaling answers 93.36% against 90.93%
(+2.43 pp, 95% CI +1.64 to +3.29; 34 fixed, 0 broken; McNemar p = 1e-10): object 87.67% -> 93.33%, attribute
and relation unchanged. On the demo's default 700: +2.86 pp, 20 fixed, 0 broken, p = 2e-6. **The claim is met
with the profile inside the organism's redundancy.** Amplifying the positive heads alone (w/o negative) does as
well (0.00 pp against rescaling, 18 / 18). The Table-14 overlap above is still the K = 10 profile's. The K = 5
profile on the 145 matching `test2` questions (`python -m vseam.organism.overlap PROFILE --split test2`): positive
heads 11.3% on the asked-about object and 11.4% on the partner, negative heads 9.0% and 8.3%, every head 12.1% and
12.3%. Positive heads look at the objects more than negative ones, but not more than the average head, and not
at the target more than at the partner: weaker than the paper's Table 14.

Tenth round (the same checkpoint and the same calibration; a second, larger test look). The ninth round's 700 test
questions had about 40% power to show its effect at p < 0.001. The rule for a second look was written down and
committed before it ran (`docs/claim-preregistration.md`): the first 1,400 test questions, the demo's defaults
otherwise, the claim met only at p < 0.0005 (0.001 halved for two looks) with no level behind. `python -m
vseam.demo --test-size 1400` (add `--claim-alpha 0.0005` for the verdict at that level) chose the same profiles
(object K = 10, alpha = 1; alpha = 0 elsewhere). On the 1,400 questions rescaling answers 94.00% against 91.79%
(+2.21 pp, 95% CI +1.36 to +3.14; 36 fixed, 5 broken; two-sided exact McNemar p = 8e-7): object 89.83% -> 95.00%
(600 questions), attribute and relation unchanged. The 700 questions never answered before, on their own: 92.71% ->
95.00%, 16 fixed, 0 broken, p = 3e-5. **The claim is met on the GQA-style test under the pre-registered rule**,
with the gain carried by the object level alone; attribute and relation keep alpha = 0, so "no level worse" holds
because nothing changes there.

Ninth round (the same checkpoint; calibration on a budget). With 2,100 calibration questions the significance
guard had 180-270 held-out questions per level and proved nothing (eighth round, below). `calibrate
--max-correct N` answers every calibration question once and attributes every wrongly answered one and at most N
right ones per subtype (Eq 7 averages each subset, so the sample leaves D_correct's mean unbiased), and
`--select-only` skips choosing for the `all` profile the demo does not serve; in the same 10 minutes the demo
now calibrates on 4,900 questions (`--max-correct 100`: 999 attributed inputs, 299 of them wrong). The size was
set by the budget: 5,600 took 10.0 minutes (602 s), 4,900 took 9.3. The guard keeps the object level at K = 10,
alpha = 1 (held-out object accuracy 90.5% -> 94.3% on 630 questions, p = 2e-5) and alpha = 0 for attribute
(best K = 4, alpha = 0.5: p = 0.13) and relation. On the 700 test questions: rescaling 92.78% against 91.11%
(+2.14 pp, 20 fixed, 5 broken, McNemar p = 0.004), object +5.0 pp, attribute and relation unchanged; shapes-POPE
94.31% -> 96.53% (16 fixed, 0 broken, p = 3e-5; adversarial 93.33% -> 96.67%, yes-ratio 54.2% -> 50.8%). So the
claim's direction holds with no level worse, but p = 0.004 misses the 0.001 bar on the GQA-style test (it is met
on shapes-POPE). Test results were also seen for two runs not kept: 6,300 questions without `--max-correct`
(18 minutes, over budget; +2.14 pp, p = 0.004) and 5,600 (10.0 minutes; +1.86 pp, 19 fixed, 6 broken, p = 0.015);
the kept size is the budget's, not the better test result. Where the heads look (Table 14 above): the chosen
object profile's 10 positive heads put 14.6% of their image attention on the asked-about object and 12.9% on the
partner, its 10 negative heads 9.7% and 9.6%, against 12.9% and 12.0% for the average head: positive heads look
at the target more than the average head and negative heads look less at both objects (elsewhere, as the paper
says), but not at the prior's partner in particular; the paper-exact profile (K = 4) shows no such pattern.
A flaw for the relation level was tried and not kept: `--preset v3-sides` (annotations that also follow a
preferred side, `prior_sides`, trained from the same parent the same way) reached val spatial 99% and relation
97% at its last step, so it planted no spatial errors; it was judged on val before any demo ran on it.
Eleventh round: the side prior annotated at a share of its own (`prior_side_labels`; presets `v3-sides-0.75` and
`v3-sides-1.0`, the other priors at 0.5, same parent, 900 steps) did plant spatial errors, all in "to the left of"
at 0.75: val spatial 95% / 90%, relation 93.0% / 91.5%, every subtype at least 86%. Neither was kept, by the
rule fixed before they ran (val only): zeroing 8 random heads cost 1.17 / 1.37 pp on average (worst seed 3.43 /
4.71) against 0.34 (worst 2.71) for the committed weights on the same val questions. The stronger prior took
redundancy with it: zeroed alone, four heads of v3-sides-0.75 cost 1.3-2.3 pp on val, against one head (0.0,
2.6 pp) of the committed weights. More head dropout (0.5, same rule) lost material instead (val 78%) and planted
no spatial errors (97%).

Eighth round (this checkpoint). A model that reads the image well ignores priors that are only in the scenes:
600 end-to-end steps of the parent in the priors world planted no errors (val 98.6%). Real VLMs also learn from
annotations that say what is expected rather than what is there. With such annotations on the questions the
priors mislead, 900 steps from the parent (zeroing head dropout 0.4 as in its last stages; validation only at the
last step, since choosing a step on val would pick the least flawed one): at `prior_labels` 0.5, val 91.7% and
test 90.9%; at 0.7, val 84.9% with vehicle 73% and indoor 75%, below point 2's bar. Through the demo
(`make demo`, calibrating on 2,100 calib questions): original 91.11% on the 700 test questions. The significance
guard kept alpha = 0 at every level (the best held-out candidate, object K = 1 at alpha = 1, fixed 10 and broke
3 of 270: one-sided p = 0.046 before the guard's correction for 16 candidates), so rescaling = original. The
paper-exact profiles (K = 4, alpha = 1) gain 4.33 pp on the object level (17 fixed, 4 broken, McNemar
p = 0.007), where the co-occurrence flaw is, lose 3.5 pp on attribute (n.s.) and gain 0.28 pp overall (n.s.).
Removing the object level's negative heads (w/o negative) lifts shapes-POPE to 95.8% on every split, adversarial
included (+2.5 pp there). **The paper's claim (rescaling > original overall, p < 0.001, no level worse) is not
shown**; what is shown is the mechanism on the level where the flaw was planted. Where the heads look (Table 14
above, 138 held-out presence questions whose scene holds the asked shape's partner): the paper-exact object
profile's positive heads put 9.6% of their image attention on the asked-about object and 7.9% on the partner,
its negative heads 10.4% and 8.6%, so the paper's pattern (positive heads on the target, negative heads
elsewhere) does not appear here either.

Seventh round (the parent checkpoint, `weights-v2-staged/`). E5's contact answers had levelled off at 80% with its tower at 81% on the
question "does any patch mark a contact?" (200 val contact questions). More steps on the pool's contact scenes
alone did not help: the tower learned those ~2,100 scenes by heart (training loss 0.02) and still found under
half of the touching patches of val scenes. What helped was data: tower-only steps (`tower_steps`) with half of
each batch from 20,000-40,000 extra contact-question scenes (`contact_scenes`, `contact_share`) and an
image-level "does anything touch?" term (`contact_image_weight`) raised the tower to 96-97% on that question
(R1: 4,000 steps, 20,000 scenes; R2: 6,000 steps, 40,000 scenes). 600 more end-to-end steps then gave, on val,
action 95% for both and 97.3% / 98.1% overall; 8 random heads cost 0.34 / 0.20 pp (worst seed 1.29 / 0.71).
R2 (the parent) was kept on those val numbers; on test it scores 97.4% (700 questions; 98.2% on 1,400,
subtypes 95.5-100%), and 2 / 4 / 8 / 16 random heads cost 0.31 / -0.14 / 0.31 / 1.09 pp (R1 on
test: 96.4%, action 91%, 8 heads -0.63 pp with worst seed -2.29). Single-head costs of R1 on val are all at
most 1.14 pp (head 0.0, colour and material).

The parent through the demo (4.4 minutes, 700 calib questions): original 97.06% on the 700 test questions, and
rescaling equals it,
because the significance guard kept alpha = 0 for every level (K = 1; 8 / 1 / 3 wrong answers among the
attribute / object / relation calibration inputs). The paper-exact profiles (K = 4, alpha = 1) scored 97.22%
(+0.16 pp, n.s.), w/o positive 95.22%. shapes-POPE 82.5% on every split (precision 100%, recall 65%, yes-ratio
32.5%: the uniform world never asked POPE's "... in the image?" wording); shapes-COCO-QA colour 100%, object
96.6%, location 91.7%. The paper's claim was not shown on the parent: a model this accurate and without
planted priors leaves a profile almost nothing to fix, which is what the eighth round addressed.

## Organism v2, rounds one to six (`--preset v2` and its continuations)

The issue asks for a redundant organism that learns all 7 subtypes (>= 85% each), carries planted priors and
answers open-ended questions. Two v2 runs were trained here. The first (phases 1-2 once, then phase-3 variants from the same
phase-2 checkpoint; 1,500 description and 1,500 question steps; 4 x 16 heads of head_dim 32, head dropout 0.15, training priors on):

* **Head dropout buys redundancy.** The v2 checkpoint (qa step 1500) loses 0.46 pp for 2 random heads of 64
  (worst seed 2.43), 1.06 pp for 8 (worst 1.71) and 0.80 pp for 16 (worst 4.14) on the 700 test questions;
  this v1 checkpoint loses 9.4 / 10.6 / 22.7 pp. The < 1 pp target for 8 heads is missed by 0.06 pp.
* **Open-ended rows from the first question step block yes/no.** With 10 open-ended rows per step at full
  weight from step 0, yes/no validation accuracy stayed at exactly 48.6-50.0% for 300-500 steps (with or
  without head dropout) while open-ended colour reached 75-87%. Yes/no first (open rows from step 300 at weight
  0.3, the v2 default) moved it: 59.0 / 64.0 / 66.1 / 70.7% at steps 600 / 900 / 1200 / 1500.
* **The colour prior is a shortcut.** 78.8% of the training colour questions are answered right by "yes iff the
  asked colour is the shape's typical colour" with no look at the image (49.8% on the test split). Attribute
  yes/no sat at 50% up to step 900 in every prior-carrying run although open-ended colour was at 88%, and
  reached 95% (val) only at step 1500; the first organism, without priors, learned it on the way to 95%.
  Next: a weaker prior (about 0.3) or one on a subset of shapes.
* **Held-out (test, n=700) at step 1500:** color 69%, material 70%, animal 91%, vehicle 87%, indoor 86%,
  spatial 58%, action 54% (73.6% overall); open-ended on val: color 95%, object 78%, location 85%.
  Relations stayed at chance in every run, as in v1, despite patch row/column labels and location words.
* **Second run (`--preset v2` as now: contact-class weight 8 in phase 1, 1,000 description steps, 2,100
  question steps, spatial and action sampled 2x; the colour prior lowered to 0.35 for this run only, the
  world keeps 0.6).** Val at step 2100: yes/no 72.7% (color 56%, material 53%, animal 97%, vehicle 98%, indoor
  98%, spatial 49%, action 58%); open-ended color 100%, object 92%, location 91%. 74.5 minutes on one thread
  with a second job on the other core. The contact weight raised the tower's recall of touching patches from
  16% to 47% (32 contact patches in 300 val scenes) and action from 48% to 58%. The weaker prior did not help
  colour. The finding: the organism *names* the colour (100%) but cannot *verify* it ("Is the circle red?"
  56%), where v1 verifies colour at 95%. Which v2 change costs yes/no verification (16 heads, head dropout,
  open-ended rows, the priors) was not isolated: no ablation was run. A 800-step relation-only fine-tune of the first
  run's checkpoint kept spatial at 44-62% (loss 0.69-0.72). Next: yes/no rows with the named attribute as
  the answer's cue (e.g. "Is the circle red?" trained next to "What colour is the circle?" on the same scene),
  head dropout from a later step, and a relation curriculum on two-object scenes.
* **Third round (this stop; nothing committed).** (a) The colour prior leaked into the question text: "yes"
  questions name the object's colour, usually the typical one, and "no" questions almost never could, so
  P(yes | the typical colour is asked) was 0.94 on training questions. Now "no" questions about an object not in
  its typical colour name the typical colour (`Priors.counter_prior_questions`), which brings it to the scene
  prior (0.62). (b) Controls with `--head-dropout 0`: the priors world reached 75.7% val at step 2,100 (colour
  81%, spatial 41%); the uniform v1 world 89.1% (colour 97%, material 94%, spatial 66%, action 71%; open-ended
  100 / 95 / 90%). So the priors, not the 16 heads or the open-ended rows, cost most of the accuracy. Without head
  dropout the uniform-world model is not redundant: on the test split 2 / 4 / 8 / 16 random heads of 64 cost
  0.06 / 0.89 / 5.29 / 7.71 pp (worst seed 12.6 pp for 8). (c) Priors world with the leak removed, head dropout
  only from question step 900 (one run forked at step 900 into two): dropout 0.15 reached 74.3% val (colour 68%,
  material 75%, spatial 45%, action 56%; open-ended 97 / 85 / 88%) and loses 0.34 / 5.26 pp for 4 / 8 heads on
  val (worst seed 8.0); dropout 0.3 reached 72.4% and loses 0.20 / 1.80 pp (worst 4.7). Without the leak, colour
  verification still sat at 50% until step 1,200 (F2, with it: until 1,500). Head dropout from step 0 (first
  round) gave the most redundancy (1.06 pp for 8 heads) and late dropout less; no recipe met both points here.
* **Fourth round (nothing committed).** The uniform-world run without dropout (89.1% val) continued end to end
  (phase 4: tower trained too, with head dropout 0.15, descriptions and open-ended rows kept) for 1,200 steps:
  val 89.7% (colour 96%, material 96%, animal 98%, vehicle 100%, indoor 100%, spatial 62%, action 76%; open-ended
  100 / 97 / 89%). Training the tower raised action from 71% to 76% and did not raise spatial (69% at the fork, 62% after). Random
  heads of 64 zeroed on val: 2 / 4 / 8 / 16 change accuracy by +0.31 / 0.00 / -2.71 / -4.46 pp (worst seed -9.4 pp for 8), against
  -5.29 pp for 8 without dropout (test split). So late dropout halves the cost of 8 heads but leaves single heads
  that matter; spatial relations are the subtype no recipe here taught past 71%. Split by relation word (285
  spatial questions among the first 2,000 of val), this model answers "above" 100% and "below" 98% but "to the
  left of" 64% and "to the right of" 25% (it says "no" to 91% of the true ones). v1 is at chance on all four
  (44-53%). The image tokens reach the language model in raster order, so which object comes first in the
  sequence gives the vertical relation for free; the horizontal one needs the tower's column features compared,
  and no run here learned that. A recipe for spatial >= 85% has to teach left/right (for example more horizontal
  questions, or descriptions that state them); `summarize` now reports accuracy per relation word.
  A control in the same uniform world with head dropout 0.15 from step 0 (G1's recipe plus dropout, 77.9
  minutes) reached 72.1% val at step 2,100: animal 98%, vehicle 100%, indoor 100%, but colour 57%, material 50%,
  spatial 50%, action 50%, while it names colours (open-ended 100 / 96 / 85%). So head dropout from the start is
  what keeps yes/no verification at chance (the second round's open question); the priors are not needed for it.
  Dropout has to come after the yes/no circuits form, as in the fourth-round run.
* **Fifth round (nothing committed): descriptions that state every pair's relations.** Every earlier run
  stated the relations of one random pair per description. `--caption-pairs 0` states every relation of the scene
  graph (about 20 for 4 objects). Run L2: `--preset v2 --world v1 --caption-pairs 0 --subtype-weights
  1,1,1,1,1,3,2 --head-dropout 0.15 --head-dropout-start 2101`, so no dropout in phase 3. At question step 900
  it scored spatial 88% on val (left / right 100%); at step 2,100, spatial 84% (left 97, right 100, above 60,
  below 62), colour 52%, material 54%, action 56%, overall 77.3%. The same recipe with 3 pairs per description
  (L1) kept spatial at 55% (left 48, right 55; overall 73.3%). So stating every pair teaches the horizontal
  relations that the fourth round missed. The vertical ones, which the fourth round had learned, move between
  40% and 92% from one checkpoint to the next. Three continuations of L2 from question step 2,100 (test split,
  n=700):
  * L2's own phase 4 (end to end, dropout 0.15, 900 steps): val 81.7%; test 82.3% (colour 65, material 70,
    animal 100, vehicle 99, indoor 97, spatial 77 with above / below 55, action 68). Zeroing 2 / 4 / 8 / 16
    random heads of 64 costs 1.03 / 0.86 / 1.69 / 6.46 pp (worst seed 2.14 / 1.29 / 4.14 / 22.29).
  * F1, phase 4 for 1,200 steps with colour and material sampled 2x: val 87.9%; test 89.6% (colour 94,
    material 89, animal 100, vehicle 98, indoor 100, spatial 83, action 63). 8 heads cost 3.54 pp (worst 9.0).
  * F2, phase 3 continued to step 3,300 (frozen tower, colour and material 2x, dropout 0.15 from step 2,101):
    val 89.6% (spatial 95: left / right 100, above 84, below 92); test 89.4% (colour 90, material 90, animal
    100, vehicle 99, indoor 99, spatial 88, action 60). 2 / 4 / 8 / 16 heads cost -0.37 / 0.20 / 1.69 / 8.03 pp
    (worst 0.29 / 1.14 / 5.86 / 28.0).
  F2 is the closest any run here came to the issue's points 1-2: six subtypes are at 88% or more on held-out
  data. It misses on two counts. Action (contact) is at 60% (the tower finds few touching patches; see below). And 8
  heads cost 1.69 pp (worst 5.86), where the target is < 1 (worst < 2). Colour and material verification moved
  only after their sampling weight was doubled (52 -> 86-91% on val within 900-1,200 steps). F1 and F2 are forks
  of L2's checkpoint with recipe fields changed at step 2,100 (recipe `stages` now express such a schedule).
  F3 forked F1 for 600 more end-to-end steps with dropout 0.25 and spatial and action sampled 3x. Test: 89.6%
  (colour 94, material 87, animal 100, vehicle 99, indoor 97, spatial 84, action 66), and 8 heads cost 2.34 pp
  (worst 7.57). Heavier dropout late in training did not buy redundancy, and action did not move.
* **Sixth round (nothing committed): why action and redundancy miss, and two new levers.** All runs continue F2
  (test split, n = 700; 5 seeds per count).
  * Contact is limited by the tower. F2's tower is the frozen phase-1 tower; with its phase-1 patch head on the
    200 contact questions of the first 1,400 val questions, it marks 28% of the patches where shapes touch (0.15%
    false alarms), and "some patch is marked" answers at best 79% of those questions right. 1,500 more phase-1
    steps at contact weight 16 (a diagnostic, T1) raise that to 56% of patches and 86% of questions.
  * E2, phase 3 continued to step 4,200 with `--head-dropout 0.2 --head-dropout-rescale false
    --head-dropout-rows 0.5` (zeroed heads, kept heads unscaled, half the rows): val 92.4%; test 94.1% (colour
    98, material 91, animal 100, vehicle 99, indoor 99, spatial 98, action 74). 2 / 4 / 8 / 16 heads cost
    1.23 / 0.91 / 2.46 / 9.97 pp (worst 3.43 / 1.71 / 5.86 / 31.14).
  * E1, 900 end-to-end steps with phase 1's patch loss kept on the tower (`--finetune-patch-weight 1`, contact
    weight 16), action sampled 3x, the same dropout as E2: val 93.3%; test 94.1% (action 73). 8 heads cost
    2.66 pp (worst 8.00). Its tower marks 55% of contact patches after 300 steps, but action did not pass E2's.
    (It asked for tower learning rate 6e-4; the resumed optimiser state kept 2e-4, a bug that recipe stages fix.)
  * Zeroing each head alone (`python -m vseam.organism.robustness --single`, val): on E2, 62 of the 64 heads
    cost at most 1.1 pp each; head 0.12 costs 11.6 pp (every subtype) and head 0.7 5.9 pp (colour 34 pp). A
    random 8 of 64 holds a given head with probability 1/8, so these two heads alone account for about 2.2 of
    the 2.46 pp that 8 heads cost.
  * E3a, phase 3 continued to step 5,100 with head dropout 0.3 on every row, zeroed and unscaled, at learning
    rate 3e-3: val 91.3%; test 92.3% (colour 95, material 88, animal 100, vehicle 99, indoor 100, spatial 99,
    action 65). 2 / 4 / 8 / 16 heads cost 0.77 / 0.17 / 1.20 / 3.40 pp (worst 3.43 / 0.43 / 2.29 / 7.14). E3b,
    the same with kept heads rescaled by 1/(1-p): test 92.1%, 8 heads 1.23 pp (worst 3.00). Heavier dropout at a
    higher learning rate halves the cost of 8 heads; action fell back to 65%.
  * Zeroing each head alone on E3a (val): head 0.12 now costs 0.86 pp (11.6 on E2); head 0.7 still costs
    2.14 pp (colour 18 pp); the other 62 cost at most 1.0 pp.
  * E4a, E3a continued to step 6,000 with dropout 0.4 (zeroing) and action sampled 3x; kept step 5,700 (val):
    test 91.6% (colour 95, material 86, animal 100, vehicle 98, indoor 99, spatial 98, action 65). 2 / 4 / 8 / 16
    heads cost 0.20 / -0.60 / 0.66 / 1.54 pp (worst 1.14 / -0.14 / 2.14 / 3.14).
  * **E4b**, E3a then 900 end-to-end steps with phase 1's patch loss on the tower (weight 1, contact weight 16,
    tower learning rate 6e-4), dropout 0.3 (zeroing) and action sampled 3x: val 94.0% (action 74); **test 94.6%:
    colour 100, material 89, animal 100, vehicle 98, indoor 100, spatial 99, action 76. 2 / 4 / 8 / 16 heads cost
    0.46 / 0.14 / 0.77 / 2.20 pp (worst 2.29 / 0.57 / 2.29 / 4.86).** Point 1's mean (< 1 pp) is met, its worst
    seed (< 2 pp) is missed by 0.29 pp (2 questions of 700); point 2 is met on six subtypes and missed on action
    (76%). So the weights stay v1 and the strict xfail stays.
  * **E5**, E4b then 600 more end-to-end steps with dropout 0.4 (zeroing), action sampled 4x, patch weight 2 and
    tower learning rate 1.5e-3: val 95.0% (action 78); **test 94.9%: colour 95, material 92, animal 100, vehicle
    98, indoor 99, spatial 100, action 80. 2 / 4 / 8 / 16 heads cost 0.34 / 0.06 / 0.43 / 1.66 pp (worst 2.29 /
    0.57 / 1.71 / 2.71).** This meets point 1 (8 heads: mean < 1 pp, worst seed < 2 pp). Point 2 is still
    missed on action (80%), so the weights stay v1.
  * E6, E5 then 600 more end-to-end steps with action sampled 5x, patch weight 3 and tower learning rate 3e-3;
    kept step 1,800 (val 94.3%, action 76): test 94.4% (action 81); 8 heads cost 0.43 pp (worst 2.00, on the
    limit). No gain over E5: action seems to level off near 80% with this tower.
  * E5 through the demo (`python -m vseam.demo --model <E5>`, default sizes: 700 calib questions of which 210 are
    held out to choose K and α, 700 test questions, all through vLLM's OpenAI server). Original 94.86%;
    rescaling = original, because the guard kept α = 0 at every level (the best candidate on the held-out calib
    part was +0.5 pp overall, McNemar p = 0.5). Paper-exact profiles (K = 4, α = 1): +0.29 pp (p = 0.84);
    random remove +0.14 pp (n.s.); w/o positive −1.71 pp (p = 0.02 in rescaling's favour). shapes-POPE 84.6% on
    every split (precision 98.8, recall 70.0, yes-ratio 35%; E5 was trained in the uniform world, so POPE's
    presence wording is new to it); shapes-COCO-QA 100 / 96.6 / 91.7%. The Eq-7 split had 23 incorrectly
    answered calibration inputs in all (10 / 3 / 10 per level), not the few hundred point 3 asks for: E5 carries
    no planted priors. So the paper's claim (rescaling > original) is not shown on E5 either: a model this
    accurate and without priors leaves a profile almost no errors to fix.
  * The forks of this round were hand-made continuations of saved states. The same kind of schedule is now one
    command with recipe stages, e.g. E2's: `python -m vseam.organism.train --preset v2 --world v1
    --caption-pairs 0 --subtype-weights 1,1,1,1,1,3,2 --head-dropout 0.15 --head-dropout-start 2101 --stages
    '[{"qa_steps": 3300, "subtype_weights": "2,2,1,1,1,2,2"}, {"qa_steps": 4200, "head_dropout": 0.2,
    "head_dropout_rescale": false, "head_dropout_rows": 0.5}]'`. A test shows that stages train bit for bit what
    such continuations train; that command itself was not re-run end to end here (about 100 minutes).
* **Time.** Phases 1-2 took 11 + 30 minutes and phase 3 41 minutes on one thread each with another training
  job on the second core: about 83 minutes, over the 60-minute budget.

## What worked, what did not (v1, the first organism)

Measured here while building the recipe (train accuracy is an EMA over batches of 32; val = split `val`):

* **Questions alone, from scratch, stay at the prior.** A 3M-parameter probe trained end to end sat at the answer
  prior for ~1,000 steps and reached 65/74/43-57% color/object/spatial after 1,600 steps. Here, even with a
  pre-trained vision tower (next point), training on yes/no answers alone left the language model at exactly 50%
  validation accuracy (a constant answer) after 1,500 steps; neither re-scaling the text embeddings to the image
  tokens' size, nor a language-model loss on the question tokens, nor an object-presence-only curriculum moved it
  much within 600-800 steps (presence only: 60% train accuracy after 650 steps).
* **Vision pre-training first.** Phase 1 trains only the CLIP tower, read at LLaVA's feature layer (-2), to label
  every 8-px patch with the shape / color / pattern of the object covering it and whether two shapes touch in it
  (a throw-away linear head): ~95% foreground patch accuracy in ~1,000 steps.
* **Descriptions before questions (what got the LM off the prior).** Phase 2 asks "Describe the picture." and
  trains on every word of a randomly ordered description ("striped red circle and star blue plain . circle left
  of star"), like LLaVA's caption alignment stage. Each description gives ~15 supervised words, most of them a
  single look-up in the image (after "red", which pattern does the red object have?). After 600 description
  steps, question answering reached 66% train accuracy in 600 steps, where it had stayed at 50% without them.
* **A tokenizer that splits punctuation (what got attributes and relations off 50%).** The first organisms used
  the toy BPE tokenizer, whose merges glue "?" to the last word: "Is the circle red?" ends in the token
  `▁red?`, which never occurs in a description (`▁red`), while presence questions ("... in this picture?") end
  in `▁picture?` and name the object with the plain `▁circle`. Those models reached 93-97% on the three
  object subtypes but exactly 50% on color, material, spatial and action (P(yes) ≈ 0.47 ± 0.02 for every such
  question, i.e. a constant answer), even after 400 extra steps on color questions alone, from the trained
  LM or from a re-initialised one, and with an attention-supervision loss tried on top (the object-name token's
  attention pushed onto that object's patches). Splitting punctuation the way Llama's tokenizer does
  (`ToySpec.tokenizer_split_punctuation`) makes every word the same token in questions and descriptions.
* **Relations are not learned yet.** With the split tokenizer, validation accuracy went 67% -> 78% -> 82% at QA
  steps 500 / 1000 / 1500, all of it from the attribute and object subtypes; spatial (left/right/above/below
  of two named objects) and action (touching) stayed at 46-53%. A longer phase 3 or an end-to-end phase 4 was
  not tried for lack of time. Calibration therefore finds no Eq-4 triples at the relation level, and the demo
  serves relation questions the combined profile.
* **Frozen tower, cached features.** Phases 2-3 train projector + LM on the tower's features computed once per
  training scene (the tower's forward/backward skipped; the forward is otherwise LLaVA's own, checked in
  `tests/test_organism.py`).
* **One CPU thread.** With other jobs on the 2 cores, `torch.set_num_threads(1)` was ~7× faster per step
  than 2 threads (OpenMP threads spin against each other under contention).
* **End-of-sequence after the answer.** A small loss on `</s>` after "Yes"/"No" makes the served model stop there,
  so replies parse cleanly through the API.
* **Stopping on validation, not test.** Training stops when the "val" split reaches the recipe's
  `target_val_acc` (or the step budget ends, keeping the best val checkpoint), so the organism stays inside the
  70-92% band the issue asks for and rescaling has room to help; the "test" split was never used for a choice.
"""


def priors_lines(label_share: float = 0.0, sides: bool = False) -> list[str]:
    """The planted training priors as a table (what the model can over-use, and where held-out data tests it),
    with the annotations that follow them when the recipe plants those (`prior_labels`)."""
    from vseam.calibrate.datasets.shapes.priors import TRAIN_PRIORS as P

    lines = ["| prior (training data only) | strength | held-out questions it misleads |", "|---|---|---|"]
    lines.append("| typical colour: " + ", ".join(f"{s} {c}" for s, c in P.typical_color.items())
                 + f" | {P.color_strength:.0%} of objects whose colour is not fixed by the question | colour questions "
                 "about an object of another colour; shapes-COCO-QA colour |")
    pairs = sorted({tuple(sorted(x)) for x in P.partners.items()})
    lines.append("| co-occurrence: " + ", ".join(f"{a} + {b}" for a, b in pairs)
                 + f" | the partner is added {P.partner_strength:.0%} of the time | presence questions about a "
                 "missing partner; shapes-POPE adversarial |")
    lines.append("| frequency: " + ", ".join(f"{s} ×{w:g}" for s, w in P.shape_weights.items())
                 + " | relative weights of distractor shapes | shapes-POPE popular |")
    if label_share:
        lines.append("| annotations that follow the two priors above: a \"no\" question they answer \"yes\" is "
                     f"labelled \"yes\" | {label_share:.0%} of such training questions | \"no\" colour questions "
                     "naming the shape's typical colour; presence questions about a missing partner |")
    if label_share and sides:
        from vseam.calibrate.datasets.shapes.priors import SIDE_ORDER

        lines.append("| preferred side, in the annotations only: " + " < ".join(SIDE_ORDER) + " (left to right, top to "
                     f"bottom); a spatial \"no\" question it answers \"yes\" is labelled \"yes\" | {label_share:.0%} of "
                     "such training questions | spatial questions whose pair sits the other way round |")
    return lines


def write_card(res: dict, weights: pathlib.Path, removal: dict | None = None, overlap: dict | None = None) -> None:
    from vseam.organism.recipe import ORGANISM_SPEC
    from vseam.organism.overlap import lines as overlap_lines
    from vseam.organism.robustness import table as removal_table

    training = training_of(weights)
    cfg = json.loads((weights / "config.json").read_text())
    idx = json.loads((weights / "model.safetensors.index.json").read_text())
    n_params = idx["metadata"]["total_size"] // 4
    size_mb = sum(p.stat().st_size for p in weights.glob("*.safetensors")) / 1e6
    card = {"held_out": res, "training": training, "parameters": n_params, "weights_mb": round(size_mb, 2),
            "model_id": cfg.get("_name_or_path"), "random_removal": removal, "prior_overlap": overlap}
    CARD_JSON.write_text(json.dumps(card, indent=2, sort_keys=True) + "\n")

    tc, vc = cfg["text_config"], cfg["vision_config"]
    rec = training.get("recipe", {})
    sel = training.get("selected") or {}
    lines = [
        "# Model card: the vseam model organism (`shapes` LLaVA)",
        "",
        "A LLaVA-1.5-architecture VLM small enough to train on 2 CPU cores, trained here on the synthetic `shapes`",
        "world (`calibrate/datasets/shapes.py`) so that the whole V-SEAM loop can run offline: `make demo`.",
        "Checkpoint: `vseam/organism/weights/` (llava-hf layout: sharded safetensors with the hub's key names,",
        "processor, tokenizer, chat template); HF transformers, the calibrator and vLLM load it as they load",
        "`llava-hf/llava-1.5-7b-hf`.",
        "",
        "## Architecture",
        "",
        f"* vision: CLIP ViT, {vc['image_size']} px, {vc['patch_size']}-px patches "
        f"({(vc['image_size'] // vc['patch_size']) ** 2} image tokens), {vc['num_hidden_layers']} layers × "
        f"{vc['num_attention_heads']} heads, width {vc['hidden_size']}; features from layer -2 (LLaVA default)",
        "* projector: 2-layer GELU MLP",
        f"* language model: Llama, {tc['num_hidden_layers']} layers × {tc['num_attention_heads']} heads of "
        f"head_dim {tc['head_dim']} (width {tc['hidden_size']}, MLP {tc['intermediate_size']}), "
        f"vocabulary {tc['vocab_size']} (BPE trained on `vseam.core.toy_checkpoints.tokenizer_corpus()`)",
        f"* {n_params / 1e6:.2f}M parameters, {size_mb:.1f} MB (fp32)",
        f"* model id `{ORGANISM_SPEC.model_id}`",
        "",
        "## Training (`python -m vseam.organism.train`, recipe in `vseam/organism/recipe.py`)",
        "",
        f"* seed {rec.get('seed')}; {rec.get('train_scenes')} rendered training scenes (split `train`)",
        f"* phase 1: {rec.get('vision_steps')} steps of per-patch shape/color/pattern/contact labelling by the "
        f"vision tower (batch {rec.get('vision_batch')}, AdamW lr {rec.get('vision_lr')})",
        f"* phase 2: {rec.get('caption_steps')} steps of picture descriptions on the frozen tower's features "
        f"(batch {rec.get('batch')}, AdamW lr {rec.get('lr')}, warm-up {rec.get('warmup')}, cosine, clip "
        f"{rec.get('clip_norm')})",
        f"* phase 3: up to {rec.get('qa_steps')} steps of yes/no answers with the Table-8 prompt (batch "
        f"{rec.get('batch')} + {round(rec.get('caption_mix', 0) * rec.get('batch', 0))} description rows), loss on the "
        "answer token and 0.1 x on the end-of-sequence token after it"
        + (f"; phase 4: {rec.get('finetune_steps')} end-to-end steps" if rec.get("finetune_steps") else ""),
        *([f"* phase 3 also trains {round(rec.get('open_share', 0) * rec.get('batch', 0))} open-ended rows per step "
           f"from step {rec.get('open_start')} on, loss weight {rec.get('open_weight')} (shapes-COCO-QA's color / "
           "object / location questions with the short-answer prompt; every answer token and end-of-sequence); "
           f"subtype weights {rec.get('subtype_weights')}",
           f"* head dropout {rec.get('head_dropout')}: each language-model head's output is zeroed with that "
           "probability per row (the redundancy a real VLM has), "
           + (f"from question step {rec['head_dropout_start']} on (phases 3-4)" if rec.get("head_dropout_start")
              else "in phases 2-3")] if rec.get("open_share") else []),
        *([f"* started from the checkpoint `{rec['init_from']}` (its recipe: `training.json` under `init`), so "
           f"phases 1-3 were not trained here: {rec.get('finetune_steps')} end-to-end steps only, in the "
           f"{rec.get('world')} training world"] if rec.get("init_from") else []),
        *([f"* annotations that follow the priors: a training question whose true answer is \"no\" but which the "
           f"planted priors answer \"yes\" is labelled \"yes\" {rec['prior_labels']:.0%} of the time "
           "(recipe field `prior_labels`; held-out labels are true)"] if rec.get("prior_labels") else []),
        *([f"* then {len(json.loads(rec['stages']))} stages, each continuing where the last stopped and changing "
           "these fields: " + "; ".join(json.dumps(st) for st in json.loads(rec["stages"]))] if rec.get("stages") else []),
        f"* kept: the best validation checkpoint, {sel.get('phase')} step {sel.get('step')}, validation yes/no "
        f"accuracy {(sel.get('overall') or 0) * 100:.1f}%"
        + (f", open-ended {(sel.get('open_overall') or 0) * 100:.1f}%" if sel.get("open") else "")
        + f" (split `val`, n={sel.get('n')}); "
        + (f"{training['minutes']} minutes of training" if training.get("minutes") else
           "about 30 minutes on one CPU thread in all"),
        "",
        f"## Held-out accuracy (split `{res['split']}`, n={res['n']}, never used for training or selection)",
        "",
        "| subtype | level | accuracy |",
        "| --- | --- | --- |",
    ]
    from vseam.core.vocab import SUBTYPE_LEVEL

    for s, acc in res["subtype"].items():
        lines.append(f"| {s} | {SUBTYPE_LEVEL[s]} | {acc * 100:.1f}% |")
    for lv, acc in res["level"].items():
        lines.append(f"| **{lv}** | | {acc * 100:.1f}% |")
    lines += [
        f"| **overall** | | **{res['overall'] * 100:.1f}%** |",
        "",
        f"Yes-rate of the predictions: {res['yes_rate'] * 100:.1f}% (the data are 50/50). Mean probability of the",
        f"correct answer (renormalised over Yes/No): {res['mean_confidence']:.3f}.",
        "",
        *(["Open-ended accuracy on the validation split at the kept step (answer tokens greedy, teacher-forced): "
           + ", ".join(f"{k} {v * 100:.1f}%" for k, v in sel["open"].items()) + ".", ""] if sel.get("open") else
          ["Open-ended questions: not trained (this recipe has none); it answers them Yes/No.", ""]),
        *(["## Planted flaws (training distribution only; every held-out split is balanced)", "",
           *priors_lines(rec.get("prior_labels", 0.0), bool(rec.get("prior_sides"))), ""] if rec.get("world") == "v2" else
          ["## Planted flaws", "",
           "None: this checkpoint was trained on the uniform v1 training world (recipe field `world`); the priors of "
           "`calibrate/datasets/shapes/priors.py` belong to the v2 recipe. The split below is a control.", ""]),
        *([f"Held-out colour and presence questions (split `{res['split']}`): "
           + "; ".join(f"{k}: {100 * v['accuracy']:.1f}% of {v['n']}" for k, v in res["priors"].items()
                       if v["accuracy"] is not None) + ".", ""] if res.get("priors") else []),
        *([f"## Random head removal (split `{removal['split']}`, n={removal['n']}, {SEEDS_TEXT})", "",
           *removal_table(removal), ""] if removal else []),
        *(["## Where positive and negative heads look (paper Table 14, with the planted prior)", "",
            *overlap_lines(overlap), ""] if overlap else []),
        f"Regenerate this card: `.venv/bin/python -m vseam.organism.card --n {res['n']}"
        + (" --overlap-profiles PROFILE..." if overlap else "") + "`.",
        "",
        NOTES,
    ]
    MODEL_CARD.write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m vseam.organism.card", description=__doc__.split("\n")[0])
    p.add_argument("--weights", default=str(WEIGHTS_DIR))
    p.add_argument("--n", type=int, default=1400, help="held-out questions (a multiple of 7 keeps subtypes equal)")
    p.add_argument("--no-removal", dest="removal", action="store_false", help="skip the random head-removal curve")
    p.add_argument("--overlap-profiles", nargs="*", default=[],
                   help="profiles (e.g. the demo's) whose heads' attention on the target vs the prior's object goes on the card")
    args = p.parse_args(argv)
    res = evaluate(pathlib.Path(args.weights), args.n)
    removal = None
    if args.removal:
        import torch

        from vseam.core.engine import HeadEngine
        from vseam.organism.robustness import removal_curve

        torch.set_num_threads(1)
        removal = removal_curve(HeadEngine.from_pretrained(args.weights), n=min(args.n, 700))
        for row in removal["curve"].values():
            row.pop("base_detail", None)
    overlap = None
    if args.overlap_profiles:
        import tempfile

        from vseam.core.engine import HeadEngine
        from vseam.head_profiles import load_profile
        from vseam.organism.overlap import overlap_table, prior_records

        with tempfile.TemporaryDirectory() as tmp:
            overlap = overlap_table(HeadEngine.from_pretrained(args.weights),
                                    [load_profile(x) for x in args.overlap_profiles],
                                    prior_records(min(args.n, 700), pathlib.Path(tmp)))
    write_card(res, pathlib.Path(args.weights), removal, overlap)
    print(json.dumps({k: res[k] for k in ("overall", "subtype", "level")}, indent=1))
    print(f"wrote {CARD_JSON} and {MODEL_CARD}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
