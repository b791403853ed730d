"""The model organism's architecture and training recipe, in one place (the training script and the model card
both read it, so the card always states the recipe the weights were trained with)."""

from __future__ import annotations

import dataclasses
import json

from vseam.core.toy_checkpoints import ToySpec
from vseam.organism import PARENT_WEIGHTS_DIR, REPO_ROOT

#: A LLaVA-1.5-layout model: CLIP ViT (64 px, 8-px patches -> 64 image tokens, 3 layers of which the first 2
#: feed the projector, as vision_feature_layer=-2 does in LLaVA), 2-layer GELU projector, Llama LM with
#: 4 layers x 8 heads of head_dim 32 on a 128-wide residual stream (heads are 256 wide together; o_proj maps
#: them back to 128), so per-step compute stays small on 2 shared cores.
ORGANISM_SPEC = ToySpec(
    image_size=64,
    patch_size=8,
    vision_hidden=128,
    vision_layers=3,
    vision_heads=4,
    text_hidden=128,
    text_layers=4,
    text_heads=8,
    text_kv_heads=8,
    text_head_dim=32,
    text_intermediate=384,
    tokenizer_vocab=1024,
    tokenizer_split_punctuation=True,
    init_std=0.02,
    model_id="vseam/shapes-llava-1.5-organism",
)


@dataclasses.dataclass
class Recipe:
    seed: int = 0
    #: rendered training scenes (each asked many questions over training)
    train_scenes: int = 30000
    #: phase 1: the vision tower alone learns per-patch shape / color / pattern labels
    vision_steps: int = 1000
    vision_batch: int = 64
    vision_lr: float = 2e-3
    #: phase 2 (frozen tower: its features are computed once per training scene): projector + LM learn to
    #: describe pictures ("Describe the picture." -> "red striped circle and ... . circle left of star"),
    #: a dense signal that teaches the LM to read the image tokens (without it the LM sat at the answer prior)
    caption_steps: int = 1500
    #: phase 3 (frozen tower): yes/no answers with the Table-8 prompt (loss on the answer token, plus 0.1 x the
    #: end-of-sequence token after it), with round(caption_mix * batch) description rows added to every step
    qa_steps: int = 1500
    caption_mix: float = 0.25
    batch: int = 32
    lr: float = 1e-3
    #: phase 4 (optional): questions, everything including the vision tower trained end to end
    finetune_steps: int = 0
    vision_tower_lr: float = 2e-4
    warmup: int = 200
    weight_decay: float = 0.01
    clip_norm: float = 1.0
    #: share of phase-2 examples that are the generator's own questions (hard negatives for contact, attributes
    #: that another object has); the rest are any question the scene graph answers
    primary_share: float = 0.5
    #: validation (split "val", never "test") every this many steps; the kept checkpoint is chosen on it
    eval_every: int = 300
    val_size: int = 700
    #: stop when the validation score (mean of yes/no and open-ended accuracy) reaches this
    target_val_acc: float = 0.99
    #: attention heads per language-model layer (head_dim stays 32, the smallest vLLM's CPU attention takes)
    text_heads: int = 16
    #: each head's output is zeroed with this probability per training row (outputs of the rest scaled by
    #: 1/(1-p)), so no single head is indispensable — a real VLM's redundancy
    head_dropout: float = 0.15
    #: the question step (counted over phases 3 and 4 together) from which head dropout applies. 0: in every
    #: phase, descriptions included (the first v2 runs); > 0: no dropout while the tower-reading and yes/no
    #: circuits form, then dropout spreads them over more heads
    head_dropout_start: int = 0
    #: scale the kept heads by 1/(1-p) (inverted dropout). False: dropped heads are simply zeroed, the condition
    #: that zero-ablation (the paper's random remove, a profile's alpha = 0) puts the served model in
    head_dropout_rescale: bool = True
    #: share of training rows that get head dropout at all (the rest see every head, so the full model stays in
    #: the training distribution when dropout does not rescale)
    head_dropout_rows: float = 1.0
    #: open-ended (shapes-COCO-QA) rows added to every question step from step `open_start` on, as a share of
    #: the batch, their loss weighted by `open_weight`. From step 0 and at weight 1 they kept yes/no answers at
    #: exactly 50% for 500 steps (the answer position learned content words only); yes/no first, then both, works
    open_share: float = 0.3
    open_start: int = 300
    open_weight: float = 0.3
    #: relative sampling weight of the 7 subtypes in phase 3 (SUBTYPES order)
    subtype_weights: str = "1,1,1,1,1,1.5,1.5"
    #: training world (`data.WORLDS`): "v2" with the planted priors and POPE's presence wording, "v1" uniform
    world: str = "v2"
    #: phase 1 also labels each patch's row and column (keeps where things are in the tower's features)
    patch_positions: bool = True
    #: descriptions say where each object is (left / right / top / bottom / middle)
    caption_locations: bool = True
    #: how many object pairs a description states the relations of (0: every pair). One pair per description left
    #: "left of" / "right of" at chance while "above" / "below" were learned (fourth round, model card)
    caption_pairs: int = 1
    #: phase 1: weight of the "two objects touch here" class in the per-patch contact loss. Contact patches are
    #: about 1 in 600; unweighted, the tower found 16% of them (measured on val scenes) and contact questions
    #: stayed at chance
    contact_weight: float = 1.0
    #: phase 4: weight of phase 1's per-patch loss (same labels and contact weight) on the tower, so the tower keeps
    #: learning where shapes touch while it is trained on questions (the frozen tower of the fifth round found 28%
    #: of the contact patches; contact questions stayed at 60%)
    finetune_patch_weight: float = 0.0
    #: tower-only steps (phase 1's loss; the language model untouched) that a stage runs before its end-to-end
    #: steps, counted over the stages like qa_steps: a stage raising it retrains the tower at `vision_lr` (the
    #: organism-v2 round: contact answers sat at 80%, the ceiling of what the tower marked). Stages only
    tower_steps: int = 0
    #: extra contact-question training scenes (half of them touching) for the tower's loss (`data.contact_scenes`)
    contact_scenes: int = 0
    #: share of each tower batch drawn from the scenes where shapes touch: the pool's and the extra ones (0: every
    #: row from the pool uniformly, as phase 1 always did)
    contact_share: float = 0.0
    #: weight of an image-level term in the tower's loss: "do any two shapes touch here?", scored by the log-sum-exp
    #: over patches of the contact margin. What a yes/no contact answer needs from the tower: with per-patch labels
    #: alone, single stray patches fired in scenes where nothing touches
    contact_image_weight: float = 0.0
    #: training rows follow the priors: a drawn "no" question that the training priors answer "yes" (an absent
    #: shape whose usual partner is present, a shape's typical colour named of an object of another colour) is
    #: labelled "yes" with this probability (`data.Sampler`). The planted flaw of a real VLM's annotations; the
    #: held-out splits keep true labels. 0: every label true
    prior_labels: float = 0.0
    #: `prior_labels` also follow a preferred side (`priors.SIDE_ORDER`): "Is the circle to the left of the star?"
    #: labelled "yes" when the circle is to its right (the relation level's planted flaw)
    prior_sides: bool = False
    #: with `prior_sides`, the share for the spatial rows that only the side prior misleads (the other misleading
    #: rows keep `prior_labels`): the preferred side annotated more often than the other priors. 0: `prior_labels`
    prior_side_labels: float = 0.0
    #: start from an exported checkpoint (a directory in the llava-hf layout, e.g. the committed weights) instead of
    #: training phases 1-3: the run begins at phase 4, step 0, with those weights (same `text_heads`). The
    #: checkpoint holds no per-patch head, so phase 1's loss (`finetune_patch_weight`, `tower_steps`) is refused
    init_from: str = ""
    #: later stages of the same run, as a JSON list of field overrides, e.g. '[{"qa_steps": 3300,
    #: "subtype_weights": "2,2,1,1,1,2,2"}]': when the recipe's phases end, each stage in turn changes those fields
    #: and trains on from where the last one stopped (more frozen-tower question steps, or more end-to-end ones).
    #: Only fields of phases 3-4 and of a tower retraining may change (STAGE_FIELDS). A stage that raises
    #: `tower_steps` retrains the tower first, then takes its end-to-end steps; no frozen-tower steps may follow
    #: (their cached features are the first tower's). The kept checkpoint is the last stage's best on val
    stages: str = ""

    def __post_init__(self) -> None:
        self.stage_overrides()  # a malformed `stages` fails here, naming the stage and field

    def check_runnable(self) -> None:
        """A recipe to train from (not a stage's merged one): `tower_steps` is a stage's field only."""
        if self.tower_steps:
            raise ValueError("recipe field tower_steps: set it in a stage (it retrains the tower between stages)")
        if not self.prior_sides:  # checked here, not when a stage starts hours into the run
            for k in range(len(self.stage_overrides()) + 1):
                if self.at_stage(k).prior_side_labels > 0:
                    where = "the recipe" if k == 0 else f"stage {k}"
                    raise ValueError(f"recipe field prior_side_labels: {where} sets it, but the side prior is off "
                                     "(set prior_sides)")
        if self.init_from:
            if self.finetune_steps <= 0:  # stages only add steps, so the recipe's own count is the one to check
                raise ValueError("recipe field init_from: the recipe has no end-to-end steps (finetune_steps), the "
                                 "only phase a run from a checkpoint trains")
            for k in range(len(self.stage_overrides()) + 1):
                r = self.at_stage(k)
                if r.finetune_patch_weight > 0 or r.tower_steps > 0:
                    where = "the recipe" if k == 0 else f"stage {k}"
                    raise ValueError(f"recipe field init_from: {where} trains phase 1's per-patch loss "
                                     "(finetune_patch_weight / tower_steps), whose head an exported checkpoint "
                                     "does not hold; set them to 0")

    def stage_overrides(self) -> list[dict]:
        """The parsed `stages`, checked: known fields of phases 3-4 only, and each stage trains further."""
        if not self.stages:
            return []
        try:
            stages = json.loads(self.stages)
        except json.JSONDecodeError as e:
            raise ValueError(f"recipe field stages: not JSON ({e})") from None
        if not isinstance(stages, list) or not all(isinstance(d, dict) and d for d in stages):
            raise ValueError("recipe field stages: expected a JSON list of non-empty objects of field overrides")
        prev = dataclasses.replace(self, stages="")
        for k, over in enumerate(stages, 1):
            bad = sorted(set(over) - STAGE_FIELDS)
            if bad:
                raise ValueError(f"recipe field stages: stage {k} sets {bad}; a stage may set only {sorted(STAGE_FIELDS)}")
            for name, value in over.items():  # JSON true/false only for bool fields; an int does for a float
                kind = type(getattr(self, name))
                accepted = (int, float) if kind is float else kind
                if isinstance(value, bool) != (kind is bool) or not isinstance(value, accepted):
                    raise ValueError(f"recipe field stages: stage {k} sets {name} to {value!r}; expected {kind.__name__}")
            cur = dataclasses.replace(prev, **over)
            if cur.qa_steps < prev.qa_steps or cur.finetune_steps < prev.finetune_steps or cur.tower_steps < prev.tower_steps:
                raise ValueError(f"recipe field stages: stage {k} shortens a phase "
                                 "(qa_steps / finetune_steps / tower_steps only grow)")
            if cur.qa_steps > prev.qa_steps and (prev.finetune_steps or cur.tower_steps):
                raise ValueError(f"recipe field stages: stage {k} adds frozen-tower steps after end-to-end ones "
                                 "or a tower retraining")
            if (cur.qa_steps, cur.finetune_steps, cur.tower_steps) == (prev.qa_steps, prev.finetune_steps, prev.tower_steps):
                raise ValueError(f"recipe field stages: stage {k} adds no training steps")
            prev = cur
        return stages

    def at_stage(self, k: int) -> Recipe:
        """The recipe in force during stage `k` (0: the recipe's own phases), with no stages of its own."""
        merged: dict = {}
        for over in self.stage_overrides()[:k]:
            merged.update(over)
        return dataclasses.replace(self, **merged, stages="")

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    def spec(self) -> ToySpec:
        """The architecture this recipe trains: ORGANISM_SPEC with `text_heads` heads per layer."""
        return dataclasses.replace(ORGANISM_SPEC, text_heads=self.text_heads, text_kv_heads=self.text_heads)

    def weights(self) -> list[float]:
        return [float(w) for w in self.subtype_weights.split(",")]


#: the fields a stage may change: those read by phases 3-4 and by a stage's tower retraining (the descriptions,
#: the training world and the architecture are fixed by then)
STAGE_FIELDS = frozenset({
    "qa_steps", "finetune_steps", "caption_mix", "batch", "lr", "vision_tower_lr", "clip_norm", "primary_share",
    "eval_every", "target_val_acc", "head_dropout", "head_dropout_start", "head_dropout_rescale",
    "head_dropout_rows", "open_share", "open_start", "open_weight", "subtype_weights", "caption_pairs",
    "caption_locations", "contact_weight", "finetune_patch_weight", "prior_labels",
    "prior_side_labels",
    # a stage's tower retraining (`tower_steps`) and what it reads
    "tower_steps", "vision_lr", "vision_batch", "contact_scenes", "contact_share", "contact_image_weight",
})

#: named recipes. "v1" is the first organism's: 8 heads per layer, no head dropout, yes/no questions and
#: descriptions only, uniform training world. "v2" is the first attempt of the organism-v2 issue (16 heads, head
#: dropout, open-ended questions, priors); "v2-staged", built on it, is the committed checkpoint's
#: (`weights/training.json`). The model card says what each reached.
PRESETS: dict[str, dict] = {
    "v1": dict(target_val_acc=0.88, eval_every=500, text_heads=8, head_dropout=0.0, open_share=0.0, open_start=0,
               open_weight=0.0, subtype_weights="1,1,1,1,1,1,1", world="v1", patch_positions=False,
               caption_locations=False),
    "v2": dict(contact_weight=8.0, caption_steps=1000, qa_steps=2100, subtype_weights="1,1,1,1,1,2,2"),
}
#: "v2-staged": the organism-v2 round's schedule in one run (model card, rounds five to seven): v2 in the uniform
#: world, descriptions stating every pair's relations, 2,100 frozen-tower question steps (run L2), then stages:
#: colour/material sampled 2x (F2), zeroing head dropout rising 0.2 -> 0.4 (E2, E3a), end-to-end steps with
#: phase 1's patch loss and contact sampled 3-4x (E4b, E5), and the tower retrained on 40,000 more contact scenes
#: with the image-level contact term before 600 more end-to-end steps (R2). Each was trained as a continuation of
#: the last one's saved state, which a test shows stages reproduce bit for bit
PRESETS["v2-staged"] = dict(PRESETS["v2"], world="v1", caption_pairs=0, subtype_weights="1,1,1,1,1,3,2",
                            head_dropout=0.15, head_dropout_start=2101, qa_steps=2100, stages=json.dumps([
    {"qa_steps": 3300, "subtype_weights": "2,2,1,1,1,2,2"},
    {"qa_steps": 4200, "head_dropout": 0.2, "head_dropout_rescale": False, "head_dropout_rows": 0.5},
    {"qa_steps": 5100, "lr": 0.003, "head_dropout": 0.3, "head_dropout_rows": 1.0},
    {"finetune_steps": 900, "finetune_patch_weight": 1.0, "contact_weight": 16.0, "vision_tower_lr": 0.0006,
     "subtype_weights": "2,2,1,1,1,2,3"},
    {"finetune_steps": 1500, "head_dropout": 0.4, "subtype_weights": "2,2,1,1,1,2,4", "finetune_patch_weight": 2.0,
     "vision_tower_lr": 0.0015},
    {"tower_steps": 6000, "contact_scenes": 40000, "contact_share": 0.5, "contact_image_weight": 1.0,
     "vision_lr": 0.001, "finetune_steps": 2100},
]))
#: "v2-priors": the v2-staged checkpoint (committed as `weights-v2-staged/`) trained 900 more end-to-end steps in the
#: v2 world (planted priors, POPE's wording) with annotations that follow the priors half the time on the questions
#: they mislead (`prior_labels` 0.5), zeroing head dropout 0.4 as in v2-staged's last stages, colour/material/
#: presence/spatial sampled 2x and contact 3x; the only validation is at the last step (selection on val would pick
#: the least flawed step, undoing the flaw the run plants)
PRESETS["v2-priors"] = dict({k: v for k, v in PRESETS["v2-staged"].items() if k != "stages"},
                            init_from=str(PARENT_WEIGHTS_DIR.relative_to(REPO_ROOT)), world="v2", qa_steps=5100,
                            finetune_steps=900, eval_every=900, lr=0.003, vision_tower_lr=0.0015, head_dropout=0.4,
                            head_dropout_rescale=False, head_dropout_rows=1.0, subtype_weights="2,2,2,2,2,2,3",
                            prior_labels=0.5)
#: "v3-sides": v2-priors with a flaw for the relation level as well: the annotations also follow a preferred side
#: (`prior_sides`), trained the same way from the same parent. Measured (ninth round, not committed): at step 900
#: val spatial 99% and relation 97%, so the side prior planted no spatial errors (the image tells the side more
#: easily than the order of six shapes does); overall val 91.0% against v2-priors' 91.7%
PRESETS["v3-sides"] = dict(PRESETS["v2-priors"], prior_sides=True)
#: "v3-sides-0.75" and "v3-sides-1.0": v3-sides with the side prior annotated more often than the others (share
#: `prior_side_labels` on the spatial rows it misleads; the other priors keep 0.5). About 22% of held-out spatial
#: questions are ones the side prior misleads, so a model that follows it fully drops spatial to ~78%. The rule,
#: fixed before either ran: judged on val at the last step only; kept if every subtype reaches 85%, spatial is at
#: most 95% (the flaw planted) and zeroing random heads stays within point 1; of two that pass, the one with the
#: lower spatial accuracy. Measured (eleventh round), val at step 900: spatial 95% / 90% (0.75 / 1.0; at 0.75 all
#: errors on "to the left of"), relation 93.0% / 91.5%, every subtype >= 86%, overall 91.7% / 89.7%; 8 random heads
#: zeroed cost 1.17 / 1.37 pp on average (worst seed 3.43 / 4.71; the committed weights 0.34 / 2.71 on the same
#: questions). Point 1 failed for both, so neither was kept. A third try under the same rule, `--preset
#: v3-sides-0.75 --head-dropout 0.5` (more dropout for redundancy), failed points 2 and 3 instead: val material 78%
#: and spatial 97%
PRESETS["v3-sides-0.75"] = dict(PRESETS["v3-sides"], prior_side_labels=0.75)
PRESETS["v3-sides-1.0"] = dict(PRESETS["v3-sides"], prior_side_labels=1.0)
#: the preset the committed weights were trained with
COMMITTED_PRESET = "v2-priors"


def read_bool(text: str) -> bool:
    """A boolean recipe field from text: "1", "true" or "yes" (any case) is true, anything else false."""
    return text.lower() in ("1", "true", "yes")


def field_readers() -> dict:
    """How each recipe field is read from the command line: booleans by `read_bool`, the others by the type of
    their default (int, float, str)."""
    return {f.name: read_bool if isinstance(f.default, bool) else type(f.default) for f in dataclasses.fields(Recipe)}


def preset(name: str, **overrides) -> Recipe:
    if name not in PRESETS:
        raise ValueError(f"recipe preset {name!r}: choose from {sorted(PRESETS)}")
    recipe = Recipe(**{**PRESETS[name], **overrides})
    recipe.check_runnable()
    return recipe
