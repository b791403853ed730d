"""The model organism: committed weights in the llava-hf layout, held-out accuracy as stated on the model card,
training batches laid out exactly like the engine's, and a training script that runs, exports and resumes."""

from __future__ import annotations

import dataclasses
import json
import pathlib
import shutil

import numpy as np
import pytest
import torch

from vseam.calibrate.datasets import shapes as S
from vseam.organism import CARD_JSON, WEIGHTS_DIR


def _require_weights():
    if not (WEIGHTS_DIR / "config.json").exists() or not CARD_JSON.exists():
        pytest.fail(f"{WEIGHTS_DIR}: committed organism weights or card.json missing")


def test_weights_have_the_hub_layout_and_fit_the_budget():
    _require_weights()
    from vseam.core.families import fingerprint_of

    files = {p.name for p in WEIGHTS_DIR.iterdir()}
    assert {"config.json", "model.safetensors.index.json", "tokenizer.json", "preprocessor_config.json",
            "processor_config.json", "chat_template.jinja"} <= files
    size = sum(p.stat().st_size for p in WEIGHTS_DIR.iterdir())
    assert size <= 25e6, f"weights directory is {size / 1e6:.1f} MB (budget 25 MB)"
    index = json.loads((WEIGHTS_DIR / "model.safetensors.index.json").read_text())
    keys = set(index["weight_map"])
    assert any(k.startswith("language_model.model.layers.") for k in keys)
    assert any(k.startswith("vision_tower.vision_model.") for k in keys)
    assert any(k.startswith("multi_modal_projector.") for k in keys)
    fp = fingerprint_of(WEIGHTS_DIR)
    assert fp.architecture == "LlavaForConditionalGeneration" and fp.head_dim == 32
    assert fp.num_layers * fp.num_heads >= 16


def test_held_out_accuracy_matches_the_model_card():
    """Re-score the first held-out questions with the HF reference engine: the card's numbers reproduce."""
    _require_weights()
    from vseam.core.engine import HeadEngine
    from vseam.organism.card import HELD_OUT_SPLIT, QUICK_N, predict

    card = json.loads(CARD_JSON.read_text())["held_out"]
    assert card["split"] == HELD_OUT_SPLIT == "test"
    engine = HeadEngine.from_pretrained(str(WEIGHTS_DIR))
    pred, gold, subtypes, _ = predict(engine, HELD_OUT_SPLIT, QUICK_N, progress=False)
    acc = float((pred == gold).mean())
    # the same questions were scored for the card: equal up to one borderline flip (float summation order)
    assert abs(acc - card["quick"]["accuracy"]) <= 1.0 / QUICK_N + 1e-9
    # and the sample agrees with the card's full held-out accuracy within sampling error: an exact two-sided
    # binomial test at the 3-SE level (p > 0.0027; near 100% accuracy the normal approximation is too narrow)
    from scipy.stats import binomtest

    p = binomtest(int(round(acc * QUICK_N)), QUICK_N, card["overall"]).pvalue
    assert p > 0.0027, (acc, card["overall"], p)
    assert set(subtypes) == set(card["subtype"])


@pytest.fixture(scope="module")
def tiny_trainer(tmp_path_factory):
    """A few steps of the real training script on a tiny pool (architecture of the organism, fresh weights)."""
    import os

    from vseam.organism.recipe import Recipe
    from vseam.organism.train import Trainer

    root = tmp_path_factory.mktemp("organism")
    old = os.environ.get("VSEAM_CACHE")
    os.environ["VSEAM_CACHE"] = str(root / "cache")
    try:
        recipe = Recipe(train_scenes=40, vision_steps=3, vision_batch=8, caption_steps=2, qa_steps=4, finetune_steps=2, batch=4,
                        warmup=2, eval_every=2, val_size=14, target_val_acc=1.1)
        trainer = Trainer(recipe, root / "work", progress=False)
        yield trainer, recipe, root
    finally:
        if old is None:
            os.environ.pop("VSEAM_CACHE", None)
        else:
            os.environ["VSEAM_CACHE"] = old


@pytest.mark.slow
def test_heads_are_redundant_and_every_subtype_is_learned(capsys):
    """Issue points 1 and 2 on the committed weights, on the 700 held-out `test` questions: every subtype >= 85%,
    and zeroing as many random heads as the demo's paper-exact profiles touch (K = 4 positive + 4 negative), or
    as many as the most a chosen profile may touch (HEAD_BUDGET = 10: the demo's K grid stops at 5), changes
    accuracy by < 1 pp on average over 5 seeds (< 2 pp for the worst seed). 20 heads, what the demo's object
    profile touched before the grid was cut, miss it (model card: -2.74 pp, worst -7.00)."""
    _require_weights()
    from vseam.core.engine import HeadEngine
    from vseam.organism.robustness import HEAD_BUDGET, MATCHED_COUNT, removal_curve, table

    torch.set_num_threads(1)
    engine = HeadEngine.from_pretrained(str(WEIGHTS_DIR))
    res = removal_curve(engine, n=700, counts=(MATCHED_COUNT, HEAD_BUDGET), seeds=5, progress=False)
    with capsys.disabled():
        print("\nper subtype (test, n=700): " + ", ".join(f"{k} {100 * v:.1f}%" for k, v in res["base_detail"]["subtype"].items()))
        print("\n".join(table(res)))
    low = {k: v for k, v in res["base_detail"]["subtype"].items() if v < 0.85}
    assert not low, f"subtypes under 85% held-out: {low}"
    for count in (MATCHED_COUNT, HEAD_BUDGET):
        row = res["curve"][str(count)]
        changes = [100 * (r["accuracy"] - res["base"]) for r in row["runs"]]
        assert abs(float(np.mean(changes))) < 1.0, (count, changes)
        assert max(abs(c) for c in changes) < 2.0, (count, changes)


def test_removal_curve_scores_the_split_it_is_asked_for():
    """The curve can be taken on `val` (to choose a recipe) as well as on `test` (to report): each run zeroes its
    count of distinct heads and is scored on that split's own questions."""
    _require_weights()
    from vseam.core.engine import HeadEngine
    from vseam.organism.robustness import removal_curve

    torch.set_num_threads(1)
    engine = HeadEngine.from_pretrained(str(WEIGHTS_DIR))
    val = removal_curve(engine, n=14, counts=(0, 2), seeds=2, progress=False, split="val")
    assert val["split"] == "val" and val["n"] == 14
    runs = val["curve"]["2"]["runs"]
    assert [len(set(map(tuple, r["heads"]))) for r in runs] == [2, 2] and runs[0]["heads"] != runs[1]["heads"]
    assert 0.0 <= val["curve"]["2"]["worst"] <= val["curve"]["2"]["mean"] <= 1.0
    items = [S.generate("val", i) for i in range(14)]  # the unedited score is that of val's own questions
    out = engine.binary([S.render_image(sc) for sc, _ in items], [q.text for _, q in items])
    own = float(np.mean((out["yes"] > out["no"]).numpy() == np.asarray([q.answer == "yes" for _, q in items])))
    assert val["base"] == own


def test_overlap_reads_the_presence_questions_of_the_split_it_is_asked_for(tmp_path):
    """Table 14 can be taken on `test2` (the third look's split) as well as on `test`: every pair is an object-level
    question of that split whose scene holds the asked shape's training partner, outside the question's boxes."""
    from vseam.calibrate.datasets.shapes.oracle import parse_question
    from vseam.calibrate.datasets.shapes.priors import TRAIN_PRIORS
    from vseam.organism.overlap import prior_records

    for split in ("test", "test2"):
        pairs = prior_records(70, tmp_path / split, split)
        assert pairs, split
        for rec, box in pairs:
            assert rec.qid.startswith(f"shapes-{split}-") and rec.subtype in ("animal", "vehicle", "indoor")
            partner = S.scene_of(rec).by_shape(TRAIN_PRIORS.partners[parse_question(rec.question)[1]])
            assert partner is not None and box == S.object_box(partner) and partner.id not in rec.meta["targets"]
    assert {r.qid for r, _ in prior_records(70, tmp_path / "a", "test2")}.isdisjoint(
        {r.qid for r, _ in prior_records(70, tmp_path / "b", "test")})


def test_single_head_costs_zero_one_head_at_a_time():
    """Each entry is the accuracy change with that head alone zeroed (checked against the engine directly for two
    heads), per subtype too; `worst` lists the costliest heads first."""
    _require_weights()
    from vseam.core.engine import HeadEngine
    from vseam.organism.robustness import single_head_costs, single_table

    torch.set_num_threads(1)
    engine = HeadEngine.from_pretrained(str(WEIGHTS_DIR))
    res = single_head_costs(engine, n=21, progress=False, split="val")
    L, H = engine.num_layers, engine.num_heads
    assert np.asarray(res["change_pp"]).shape == (L, H)
    items = [S.generate("val", i) for i in range(21)]
    imgs, qs = [S.render_image(sc) for sc, _ in items], [q.text for _, q in items]
    gold = np.asarray([q.answer == "yes" for _, q in items])
    sub = np.asarray([q.subtype for _, q in items])

    def correct(scales):
        out = engine.binary(imgs, qs, scales=scales)
        return (out["yes"] > out["no"]).numpy() == gold

    base = correct(None)
    assert res["base"] == float(base.mean())
    for l, h in [(0, 0), (L - 1, H - 1)]:
        scales = np.ones((L, H), np.float32)
        scales[l, h] = 0.0
        got = correct(scales)
        assert res["change_pp"][l][h] == pytest.approx(100 * (got.mean() - base.mean()), abs=0.01)
        k = sub[0]
        assert res["subtype_change_pp"][k][l][h] == pytest.approx(100 * (got[sub == k].mean() - base[sub == k].mean()), abs=0.01)
    costs = [w["change_pp"] for w in res["worst"]]
    assert costs == sorted(costs) and costs[0] == pytest.approx(min(min(r) for r in res["change_pp"]), abs=0.01)
    assert len(single_table(res)) == 2 + L + 4


def test_training_batches_equal_the_engine_encoding(tiny_trainer):
    """What the model is trained on is exactly what HeadEngine (calibration) and the chat API feed it."""
    from vseam.core.engine import HeadEngine

    trainer, _, _ = tiny_trainer
    engine = HeadEngine(trainer.model, trainer.processor)
    try:
        imgs, qs = [], []
        for i in range(5):
            scene, q = S.generate("val", i)
            imgs.append(scene)
            qs.append(q.text)
        ours = trainer.enc.batch(np.stack([S.render(s) for s in imgs]), qs)
        ref = engine.encode([S.render_image(s) for s in imgs], [engine.family.binary_text(q) for q in qs])
        for key in ("input_ids", "attention_mask", "position_ids"):
            assert torch.equal(ours[key], ref[key]), key
        assert torch.allclose(ours["pixel_values"], ref["pixel_values"], atol=1e-6)
        assert engine.answer_ids() == {"yes": trainer.enc.yes_id, "no": trainer.enc.no_id}
        # training rows also carry the answer token, after the prompt exactly as the engine encodes it
        answers = [True, False, True, True, False]
        taught = trainer.enc.batch(np.stack([S.render(s) for s in imgs]), qs, answers=answers)
        expect = torch.tensor([trainer.enc.yes_id if a else trainer.enc.no_id for a in answers])
        assert torch.equal(taught["input_ids"][:, -1], expect)
        assert torch.equal(taught["input_ids"][:, :-1], ref["input_ids"])
        assert trainer.enc.eos_id == trainer.processor.tokenizer.eos_token_id == 2
    finally:
        engine.close()


def test_open_ended_rows_are_what_the_cocoqa_task_sends(tiny_trainer):
    """Open-ended training rows: the family's short-answer prompt with its system line (exactly the engine's
    encoding of what `vseam eval cocoqa` sends), then the answer word's tokens and end-of-sequence."""
    from vseam.calibrate.datasets.shapes.open_questions import open_questions
    from vseam.core.engine import HeadEngine

    trainer, _, _ = tiny_trainer
    engine = HeadEngine(trainer.model, trainer.processor)
    try:
        scenes = [S.generate("val", i)[0] for i in range(3)]
        qa = [open_questions(s)[0] for s in scenes]
        b, n_tgt = trainer.enc.open_batch(np.stack([S.render(s) for s in scenes]), [q for _, q, _ in qa],
                                          [a for _, _, a in qa])
        fam = engine.family
        ref = engine.encode([S.render_image(s) for s in scenes], [fam.short_answer_text(q) for _, q, _ in qa],
                            system=fam.short_answer_system)
        tok = trainer.processor.tokenizer
        for r, (_, _, a) in enumerate(qa):
            ids = b["input_ids"][r][b["attention_mask"][r].bool()].tolist()
            want = ref["input_ids"][r][ref["attention_mask"][r].bool()].tolist()
            answer = tok(" " + a, add_special_tokens=False)["input_ids"]
            assert ids == want + answer + [trainer.enc.eos_id] and n_tgt[r] == len(answer) + 1
            assert tok.decode(answer).strip() == a
    finally:
        engine.close()


def test_head_dropout_zeroes_whole_heads_in_training_only(tiny_trainer):
    trainer, recipe, _ = tiny_trainer
    o_proj = trainer.model.model.language_model.layers[0].self_attn.o_proj
    seen = {}
    handle = o_proj.register_forward_pre_hook(lambda m, args: seen.__setitem__("x", args[0].detach().clone()))
    try:
        x = torch.ones(64, 3, trainer.spec.text_heads * trainer.spec.text_head_dim)
        torch.manual_seed(0)
        o_proj.train()
        o_proj(x)
        heads = seen["x"].view(64, 3, trainer.spec.text_heads, -1)
        kept = 1.0 / (1.0 - recipe.head_dropout)
        per_head = heads[:, 0, :, 0]  # one value per (row, head): 0 or 1/(1-p), equal across positions and dims
        assert bool(((per_head == 0) | ((per_head - kept).abs() < 1e-6)).all())
        assert torch.equal(heads, per_head[:, None, :, None].expand_as(heads))
        assert abs(float((per_head == 0).float().mean()) - recipe.head_dropout) < 0.05
        o_proj.eval()
        o_proj(x)
        assert torch.equal(seen["x"], x)
    finally:
        handle.remove()
        trainer.model.train()


def test_head_dropout_waits_for_its_question_step(tiny_trainer):
    """With `head_dropout_start` > 0, heads are kept whole in the description phase and before that question
    step, and dropped from it on."""
    trainer, recipe, _ = tiny_trainer
    o_proj = trainer.model.model.language_model.layers[0].self_attn.o_proj
    seen = {}
    handle = o_proj.register_forward_pre_hook(lambda m, args: seen.__setitem__("x", args[0].detach().clone()))
    saved_recipe, saved_state = trainer.recipe, dict(trainer.state)
    try:
        trainer.recipe = dataclasses.replace(recipe, head_dropout_start=5)
        x = torch.ones(64, 3, trainer.spec.text_heads * trainer.spec.text_head_dim)
        o_proj.train()
        dropped = {}
        for phase, step in [("caption", 10), ("qa", 4), ("qa", 5), ("finetune", 7)]:
            trainer.state.update(phase=phase, step=step)
            torch.manual_seed(0)
            o_proj(x)
            dropped[(phase, step)] = float((seen["x"] == 0).float().mean())
        assert dropped[("caption", 10)] == 0.0 and dropped[("qa", 4)] == 0.0, dropped
        assert abs(dropped[("qa", 5)] - recipe.head_dropout) < 0.05, dropped
        assert abs(dropped[("finetune", 7)] - recipe.head_dropout) < 0.05, dropped
        # the start counts question steps over phases 3 and 4 together: a start past the last frozen-tower step
        # keeps phase 3 whole and drops heads from that step of phase 4 on
        trainer.recipe = dataclasses.replace(recipe, head_dropout_start=recipe.qa_steps + 3)
        for phase, step in [("qa", recipe.qa_steps), ("finetune", 2), ("finetune", 3)]:
            trainer.state.update(phase=phase, step=step)
            torch.manual_seed(0)
            o_proj(x)
            dropped[(phase, step)] = float((seen["x"] == 0).float().mean())
        assert dropped[("qa", recipe.qa_steps)] == 0.0 and dropped[("finetune", 2)] == 0.0, dropped
        assert abs(dropped[("finetune", 3)] - recipe.head_dropout) < 0.05, dropped
    finally:
        trainer.recipe = saved_recipe
        trainer.state.clear()
        trainer.state.update(saved_state)
        handle.remove()
        trainer.model.train()


def test_head_dropout_can_zero_without_rescaling_in_a_share_of_rows(tiny_trainer):
    """`head_dropout_rescale` off: dropped heads are zeroed and kept ones pass unscaled (what zero-ablation does to
    the served model); `head_dropout_rows`: the other rows keep every head."""
    trainer, recipe, _ = tiny_trainer
    o_proj = trainer.model.model.language_model.layers[0].self_attn.o_proj
    seen = {}
    handle = o_proj.register_forward_pre_hook(lambda m, args: seen.__setitem__("x", args[0].detach().clone()))
    saved = trainer.recipe
    try:
        trainer.recipe = dataclasses.replace(recipe, head_dropout=0.3, head_dropout_rescale=False, head_dropout_rows=0.5)
        x = torch.ones(2000, 2, trainer.spec.text_heads * trainer.spec.text_head_dim)
        torch.manual_seed(0)
        o_proj.train()
        o_proj(x)
        per_head = seen["x"].view(2000, 2, trainer.spec.text_heads, -1)[:, 0, :, 0]
        assert bool(((per_head == 0) | (per_head == 1)).all())  # zeroed or untouched, never rescaled
        # half the rows may drop heads (at 0.3 each), so 0.15 of all head outputs are zeroed ...
        assert abs(float((per_head == 0).float().mean()) - 0.15) < 0.02
        # ... and the rows that keep every head are the spared half plus the dropping rows that drew no zero
        whole = float((per_head == 1).all(1).float().mean())
        assert abs(whole - (0.5 + 0.5 * 0.7 ** trainer.spec.text_heads)) < 0.04, whole
    finally:
        trainer.recipe = saved
        handle.remove()
        trainer.model.train()


def test_finetune_patch_loss_is_phase_ones_loss_on_the_batch_scenes(tiny_trainer, monkeypatch):
    """`finetune_patch_weight` w > 0 adds w x phase 1's per-patch loss, on the scenes of the phase-4 batch, to the
    loss that step optimises (everything else equal); at 0 that loss is not computed."""
    from vseam.organism.train import Trainer

    _, recipe, root = tiny_trainer
    seen = {}
    for weight in (0.0, 5.0):
        r = dataclasses.replace(recipe, finetune_steps=1, finetune_patch_weight=weight, head_dropout=0.0)
        t = Trainer(r, root / f"work-patch-{weight}", progress=False)
        t.state.update(phase="finetune", step=0)
        calls, drawn, stepped = [], [], []
        real_patch, real_sample, real_step = t.vision_loss, t.sampler.sample, t._lm_step
        monkeypatch.setattr(t, "vision_loss", lambda idx: calls.append((idx, real_patch(idx))) or calls[-1][1])
        monkeypatch.setattr(t.sampler, "sample", lambda n: drawn.append(real_sample(n)) or drawn[-1])
        monkeypatch.setattr(t, "_lm_step", lambda loss, f: stepped.append(loss.item()) or real_step(loss, f))
        torch.manual_seed(0)
        t.run_qa("finetune")
        seen[weight] = (calls, drawn, stepped)
    assert seen[0.0][0] == []
    (idx, (patch_loss, _)), = seen[5.0][0]
    assert np.array_equal(idx, seen[5.0][1][0][0]) and np.array_equal(seen[0.0][1][0][0], seen[5.0][1][0][0])
    assert seen[5.0][2][0] == pytest.approx(seen[0.0][2][0] + 5.0 * patch_loss.item(), rel=1e-5)


def test_selection_skips_weights_trained_before_the_dropout_start(tiny_trainer):
    """With a dropout start, the exported checkpoint is never one that never saw head dropout; without one (or
    without dropout) every question-phase checkpoint may be chosen, as before."""
    trainer, recipe, _ = tiny_trainer
    saved = trainer.recipe
    try:
        trainer.recipe = dataclasses.replace(recipe, head_dropout=0.15, head_dropout_start=1200)
        assert [trainer._selectable("qa", s) for s in (900, 1200, 1500)] == [False, False, True]
        trainer.recipe = dataclasses.replace(recipe, head_dropout=0.15, head_dropout_start=recipe.qa_steps + 300)
        assert not trainer._selectable("qa", recipe.qa_steps) and not trainer._selectable("finetune", 300)
        assert trainer._selectable("finetune", 600)
        for r in (dataclasses.replace(recipe, head_dropout=0.15, head_dropout_start=0),
                  dataclasses.replace(recipe, head_dropout=0.0, head_dropout_start=1200)):
            trainer.recipe = r
            assert trainer._selectable("qa", 300) and trainer._selectable("qa", 1500)
    finally:
        trainer.recipe = saved


def test_cached_feature_path_equals_the_model_forward(tiny_trainer):
    """Phase 2 trains through precomputed tower features: that must be LlavaForConditionalGeneration's forward."""
    trainer, _, _ = tiny_trainer
    idx = np.arange(4)
    qs = [trainer.pool.questions[q] for q in trainer.pool.primary_q[idx]]
    b = trainer.enc.batch(trainer.pool.images[idx], qs)
    trainer.model.eval()  # no head dropout: both paths deterministic
    try:
        with torch.no_grad():
            full = trainer.answer_logits(b)
            cached = trainer.logits_from_features(trainer.vision_features(trainer.pool.images[idx]), b)
    finally:
        trainer.model.train()
    assert torch.allclose(full, cached, atol=1e-5), (full - cached).abs().max()


def test_descriptions_state_as_many_pairs_as_asked():
    """`pairs` relations blocks: 1 (the first organisms' draw), k random pairs, or 0 = every relation of the scene
    graph, each stated once."""
    from vseam.organism.data import caption, scene_facts

    facts = next(f for f in (scene_facts(S.generate("train", i, priors=None)[0]) for i in range(50))
                 if len({(a, b) for a, _, b in f["relations"]}) >= 6)
    every = {" ".join(r) for r in facts["relations"]}
    stated = lambda text: text.split(" . ")[1].split(" , ")
    rng = np.random.default_rng(1)
    assert sorted(stated(caption(facts, rng, pairs=0))) == sorted(every)
    for k in (1, 3):
        for _ in range(5):
            rels = stated(caption(facts, rng, pairs=k))
            assert set(rels) <= every and len(set(rels)) == len(rels)
            pairs = {(r.split()[0], r.split()[-1]) for r in rels}
            assert len(pairs) == k
            # every relation of each chosen pair is stated
            assert {r for r in every if (r.split()[0], r.split()[-1]) in pairs} == set(rels)


def test_descriptions_state_the_scene(tiny_trainer):
    from vseam.organism.data import caption, scene_facts

    scene, q = S.generate("train", 5)  # a spatial question: two objects in a clear relation
    facts = scene_facts(scene)
    rng = np.random.default_rng(0)
    text = caption(facts, rng)
    words = text.replace(" . ", " , ").split()
    from vseam.calibrate.datasets.shapes.open_questions import location_word

    for o in scene.objects:
        assert {o.color, o.texture, o.shape, location_word(o)} <= set(words)
        # each object's words are followed by where it is
        assert f"{o.shape} {location_word(o)}" in text or f" {o.shape} " in text.split(" . ")[0] + " "
    assert " . " in text and ("left of" in text or "right of" in text or "above" in text or "below" in text)
    trainer, _, _ = tiny_trainer
    b, n_tgt = trainer.enc.caption_batch([text])
    ids = b["input_ids"][0].tolist()
    assert ids[-1] == trainer.enc.eos_id and n_tgt[0] == len(trainer.processor.tokenizer(" " + text, add_special_tokens=False)["input_ids"]) + 1


def test_patch_labels_name_the_object_under_each_patch():
    from vseam.organism.data import PATCH_COLORS, PATCH_SHAPES, PATCH_TEXTURES, patch_labels

    scene, _ = S.generate("train", 3)
    labels = patch_labels(scene, 8)
    assert labels.shape == (6, 64) and len(scene.objects) >= 2
    assert labels[4].tolist() == [p // 8 for p in range(64)] and labels[5].tolist() == [p % 8 for p in range(64)]
    for o in scene.objects:  # every object: the patch it covers most carries its words
        cover = S.object_mask(o).reshape(8, 8, 8, 8).sum(axis=(1, 3)).ravel()
        p = int(cover.argmax())
        assert cover[p] >= 40, (o.shape, int(cover[p]))
        assert PATCH_SHAPES[labels[0, p]] == o.shape
        assert PATCH_COLORS[labels[1, p]] == o.color
        assert PATCH_TEXTURES[labels[2, p]] == o.texture
    assert (labels[0] == 0).sum() > 20  # most of the picture is background
    assert labels[3].sum() == 0  # no contact question: nothing touches
    from vseam.organism.data import contact_pixels

    scene, q = S.generate("train", 6)  # index 6: an "action" question answered yes, so two shapes touch
    assert q.subtype == "action" and q.answer == "yes"
    contact = patch_labels(scene, 8)[3]
    assert 0 < contact.sum() <= 4 and contact_pixels(scene).any()


def test_training_runs_exports_and_resumes(tiny_trainer):
    from transformers import LlavaForConditionalGeneration

    from vseam.organism.train import Trainer, export

    trainer, recipe, root = tiny_trainer
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.run()
    assert trainer.state["phase"] == "finetune" and trainer.state["step"] == recipe.finetune_steps
    assert trainer.state["best"] is not None and trainer.state["best"]["n"] == recipe.val_size
    changed = [k for k, v in trainer.model.state_dict().items() if not torch.equal(v, before[k])]
    assert any("vision_tower" in k for k in changed) and any("language_model" in k for k in changed)
    log = [json.loads(line) for line in (root / "work" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if r["phase"] == "qa-val"] == [2, 4]
    assert [r["step"] for r in log if r["phase"] == "finetune-val"] == [2]
    assert (root / "work" / f"features-{recipe.vision_steps}.pt").exists()
    # phase 4's description and open-ended rows read the tower as it is now, not the frozen tower's cache
    assert trainer.features is None
    idx = np.array([0, 1])
    live, cached = trainer._features_of(idx), torch.load(root / "work" / f"features-{recipe.vision_steps}.pt")[idx]
    assert torch.equal(live, trainer.vision_features(trainer.pool.images[idx])) and not torch.allclose(live, cached)

    out = root / "export"
    meta = export(trainer, out)
    assert meta["selected"]["step"] in (2, 4)
    model = LlavaForConditionalGeneration.from_pretrained(out)
    best = torch.load(root / "work" / "best.pt")
    got = dict(model.state_dict())
    assert all(torch.equal(got[k], v) for k, v in best.items() if k in got)

    # a new trainer on the same work dir resumes where the last one stopped (nothing left to do)
    again = Trainer(recipe, root / "work", progress=False)
    assert again.state == trainer.state
    for k, v in again.model.state_dict().items():
        assert torch.equal(v, trainer.model.state_dict()[k]), k


def test_default_preset_is_the_committed_weights_recipe():
    """`python -m vseam.organism.train` with no flags trains the committed weights' recipe: every field the
    checkpoint's training.json records equals the default preset's, and the architecture matches config.json."""
    _require_weights()
    from vseam.organism.recipe import COMMITTED_PRESET, preset

    recorded = json.loads((WEIGHTS_DIR / "training.json").read_text())["recipe"]
    ours = preset(COMMITTED_PRESET)
    assert {k: getattr(ours, k) for k in recorded} == recorded
    cfg = json.loads((WEIGHTS_DIR / "config.json").read_text())["text_config"]
    assert ours.spec().text_heads == cfg["num_attention_heads"] and ours.spec().text_head_dim == cfg["head_dim"]


def test_v1_world_draws_uniform_scenes_and_the_worlds_own_wording():
    from vseam.organism.data import caption, scene_facts

    differ = 0
    for i in range(14):
        uniform, _ = S.generate("train", i, priors=None)
        assert uniform == S.generate("train", i, priors=None)[0]
        differ += uniform != S.generate("train", i)[0]
    assert differ >= 7  # the v2 training world (priors) draws other scenes
    scene, _ = S.generate("train", 5, priors=None)
    texts = [t for _, t, _ in S.all_questions(scene, pope_wording=False)]
    assert not any(t.endswith(" in the image?") for t in texts)
    assert any(t.endswith(" in the image?") for _, t, _ in S.all_questions(scene))
    words = caption(scene_facts(scene), np.random.default_rng(0), locations=False).split(" . ")[0].split(" and ")
    assert all(len(w.split()) == 3 for w in words)


def test_summary_splits_spatial_accuracy_by_relation_word():
    """Per relation word, the share of the spatial questions answered right (others do not count)."""
    from vseam.organism.data import relation_word, summarize

    questions = ["Is the circle to the left of the star?", "Is the star above the cross?", "Is the cross red?",
                 "Is the circle to the left of the cross?", "Is the star to the right of the cross?"]
    subtypes = ["spatial", "spatial", "color", "spatial", "spatial"]
    correct = np.array([True, False, False, False, True])
    res = summarize(correct, subtypes, questions)
    assert res["relation"] == {"to the left of": 0.5, "to the right of": 1.0, "above": 0.0}
    assert res["subtype"]["spatial"] == 0.5 and "relation" not in summarize(correct, subtypes)
    with pytest.raises(ValueError, match="no spatial relation"):
        relation_word("Is the cross red?")


def _fork(src: pathlib.Path, dst: pathlib.Path, recipe, **state) -> None:
    """What a hand-made continuation does: the saved state under a new recipe, selection started afresh."""
    blob = torch.load(src / "state.pt", weights_only=False)
    blob["recipe"] = recipe.to_json()
    blob["state"].update(best=None, **state)
    dst.mkdir(parents=True)
    torch.save(blob, dst / "state.pt")
    shutil.copytree(src / "init", dst / "init")
    for f in src.glob("features-*.pt"):
        shutil.copy(f, dst / f.name)


def test_stages_continue_the_run_as_hand_made_continuations_do(tiny_trainer):
    """A recipe with `stages` trains, in one run, exactly what running its phases and then continuing the saved
    state under each stage's fields trains (same weights, bit for bit): more frozen-tower steps with other subtype
    weights, then end-to-end steps with zeroing head dropout. A run stopped mid-stage resumes in that stage."""
    from vseam.organism.recipe import Recipe
    from vseam.organism.train import Trainer

    _, recipe, root = tiny_trainer
    base = dataclasses.replace(recipe, qa_steps=4, finetune_steps=0)
    one = {"qa_steps": 6, "subtype_weights": "3,1,1,1,1,1,1", "open_weight": 0.5}
    two = {"finetune_steps": 2, "head_dropout": 0.3, "head_dropout_rescale": False, "head_dropout_rows": 0.5}
    staged = dataclasses.replace(base, stages=json.dumps([one, two]))

    whole = Trainer(staged, root / "staged", progress=False)
    whole.run()
    assert (whole.state["stage"], whole.state["phase"], whole.state["step"]) == (2, "finetune", 2)
    log = [json.loads(line) for line in (root / "staged" / "log.jsonl").read_text().splitlines()]
    assert [(r["stage"], r["step"]) for r in log if r["phase"] == "stage"] == [(1, 4), (2, 0)]
    assert [r["step"] for r in log if r["phase"] == "qa-val"] == [2, 4, 6]
    assert whole.state["best"]["phase"] == "finetune"  # selection restarted in the last stage

    first = Trainer(base, root / "hand-0", progress=False)
    first.run()
    rec1 = dataclasses.replace(base, **one)
    _fork(root / "hand-0", root / "hand-1", rec1, phase="qa", step=4)
    second = Trainer(rec1, root / "hand-1", progress=False)
    second.run()
    rec2 = dataclasses.replace(rec1, **two)
    _fork(root / "hand-1", root / "hand-2", rec2)
    third = Trainer(rec2, root / "hand-2", progress=False)
    third.run()
    ours, theirs = whole.model.state_dict(), third.model.state_dict()
    assert all(torch.equal(v, theirs[k]) for k, v in ours.items())

    # resuming: a trainer stopped right after entering stage 1 picks that stage's fields up again
    mid = Trainer(staged, root / "mid", progress=False)
    mid._run_phases()
    mid.next_stage()
    again = Trainer(staged, root / "mid", progress=False)
    assert again.recipe == Recipe(**{**base.to_json(), **one})
    assert list(again.sampler.subtype_p) == list(np.asarray([3, 1, 1, 1, 1, 1, 1]) / 9)
    assert (again.state["phase"], again.state["step"]) == ("qa", 4)


def test_stages_change_the_learning_rates_they_name(tiny_trainer):
    """A saved optimiser state carries the old base learning rates; a stage that sets `lr` / `vision_tower_lr`
    trains at its own (the hand-made continuations of the fifth round silently kept the old ones)."""
    from vseam.organism.train import Trainer

    _, recipe, root = tiny_trainer
    staged = dataclasses.replace(recipe, qa_steps=2, finetune_steps=0,
                                 stages=json.dumps([{"finetune_steps": 1, "lr": 5e-4, "vision_tower_lr": 7e-4}]))
    t = Trainer(staged, root / "lr", progress=False)
    t.run()
    assert [g["base_lr"] for g in t.opt_qa.param_groups] == [7e-4, 5e-4]
    again = Trainer(staged, root / "lr", progress=False)
    assert [g["base_lr"] for g in again.opt_qa.param_groups] == [7e-4, 5e-4]


def test_a_stage_can_retrain_the_tower_on_touching_scenes_then_train_on_end_to_end(tiny_trainer):
    """A stage that raises `tower_steps` first trains the tower alone (the language model and projector stay
    bit for bit as they were), on batches with the asked share of scenes where shapes touch, then takes its
    end-to-end steps from where phase 4 stood. A run stopped inside the tower retraining resumes there."""
    from vseam.organism.train import Trainer

    _, recipe, root = tiny_trainer
    stage = {"tower_steps": 3, "contact_scenes": 6, "contact_share": 0.5, "contact_image_weight": 1.0,
             "vision_lr": 1e-3, "finetune_steps": 4}
    staged = dataclasses.replace(recipe, qa_steps=2, finetune_steps=2, stages=json.dumps([stage]))
    t = Trainer(staged, root / "tower-stage", progress=False)
    t._run_phases()
    assert (t.state["phase"], t.state["step"]) == ("finetune", 2)
    before = {k: v.clone() for k, v in t.model.state_dict().items()}
    t.next_stage()
    assert (t.state["phase"], t.state["step"], t.state["finetune_at"]) == ("tower", 0, 2)
    images, labels = t.touching_scenes()
    assert len(images) >= 3 and bool(labels[:, 3].any(1).all())  # 6 more contact scenes, half of them touching
    drawn = []
    real = t.tower_loss
    t.tower_loss = lambda im, lab: drawn.append(lab) or real(im, lab)
    t.state["step"] = 1
    t.save()
    again = Trainer(staged, root / "tower-stage", progress=False)  # resumes inside the retraining
    assert (again.state["phase"], again.state["step"]) == ("tower", 1)
    t.run_tower()
    assert len(drawn) == 2 and all(int(lab[:, 3].any(1).sum()) >= round(0.5 * staged.vision_batch) for lab in drawn)
    after = t.model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("model.vision_tower.") for k in changed)
    assert (t.state["phase"], t.state["step"]) == ("finetune", 2)
    t._run_phases()
    assert (t.state["phase"], t.state["step"]) == ("finetune", 4)


def test_a_touching_share_without_touching_scenes_is_refused_naming_the_field(tiny_trainer):
    trainer, recipe, _ = tiny_trainer
    saved, saved_touching, labels = trainer.recipe, trainer._touching, trainer.pool.labels
    try:
        trainer.recipe = dataclasses.replace(recipe, contact_share=0.5, contact_scenes=0)
        trainer._touching = None
        trainer.pool.labels = labels.copy()
        trainer.pool.labels[:, 3] = 0  # a pool where nothing touches
        with pytest.raises(ValueError, match="contact_share = 0.5: no training scene has shapes that touch"):
            trainer._tower_batch(np.random.default_rng(0))
    finally:
        trainer.recipe, trainer._touching, trainer.pool.labels = saved, saved_touching, labels


def test_the_image_level_contact_term_adds_its_weighted_log_loss(tiny_trainer):
    """`contact_image_weight` w adds w x the binary cross-entropy of "some pair touches" (log-sum-exp over patches
    of the contact logit margin) to the tower's per-patch loss; at 0 the loss is the per-patch one."""
    trainer, recipe, _ = tiny_trainer
    saved = trainer.recipe
    images, labels = trainer.pool.images[:6], trainer.pool.labels[:6].copy()
    labels[0, 3, 10] = 1  # one scene with a touching patch, the rest without
    labels[1:, 3] = 0
    try:
        trainer.recipe = dataclasses.replace(recipe, contact_image_weight=0.0)
        with torch.no_grad():
            plain, _ = trainer.tower_loss(images, labels)
            trainer.recipe = dataclasses.replace(recipe, contact_image_weight=2.5)
            both, _ = trainer.tower_loss(images, labels)
            layer = trainer.model.config.vision_feature_layer
            feats = trainer.model.model.vision_tower(pixel_values=trainer.enc.pixels(images),
                                                     output_hidden_states=True).hidden_states[layer][:, 1:]
            contact = torch.split(trainer.patch_head(feats), trainer.patch_sizes, dim=-1)[3]
        margin = (contact[..., 1] - contact[..., 0]).double().numpy()
        score = np.log(np.exp(margin).sum(1))
        y = np.array([1.0, 0, 0, 0, 0, 0])
        bce = -np.mean(y * np.log(1 / (1 + np.exp(-score))) + (1 - y) * np.log(1 - 1 / (1 + np.exp(-score))))
        assert both.item() == pytest.approx(plain.item() + 2.5 * bce, rel=1e-4)
    finally:
        trainer.recipe = saved


def test_tower_steps_belong_to_stages(tmp_path):
    from vseam.organism.recipe import Recipe, preset
    from vseam.organism.train import Trainer

    with pytest.raises(ValueError, match="tower_steps: set it in a stage"):
        preset("v2", tower_steps=100)
    with pytest.raises(ValueError, match="tower_steps: set it in a stage"):
        Trainer(Recipe(tower_steps=100), tmp_path, progress=False)


@pytest.mark.parametrize("stages, words", [
    ("[{\"text_heads\": 8}]", "may set only"),
    ("[{\"qa_steps\": 1}]", "shortens"),
    ("[{\"finetune_steps\": 2}, {\"qa_steps\": 9000}]", "frozen-tower steps after end-to-end"),
    ("[{\"tower_steps\": 5}, {\"qa_steps\": 9000}]", "or a tower retraining"),
    ("[{\"tower_steps\": 5}, {\"tower_steps\": 4, \"finetune_steps\": 2}]", "shortens"),
    ("[{\"lr\": 0.1}]", "adds no training steps"),
    ("[{\"qa_steps\": \"many\"}]", "expected int"),
    ("{\"qa_steps\": 9000}", "JSON list"),
    ("[{qa_steps: 9000}]", "not JSON"),
])
def test_malformed_stages_are_refused_naming_the_problem(stages, words):
    from vseam.organism.recipe import Recipe

    with pytest.raises(ValueError, match="recipe field stages") as err:
        Recipe(stages=stages)
    assert words in str(err.value)


def test_priors_name_the_questions_they_answer_wrongly():
    from vseam.calibrate.datasets.shapes.priors import TRAIN_PRIORS as P

    typical = P.typical_color["circle"]
    other = next(c for c in S.COLORS if c != typical)
    assert P.says_yes("color", f"Is the circle {typical}?", {"circle"})
    assert P.says_yes("color", f"Is the circle {other}?", {"circle"}) is False
    partner = P.partners["square"]
    group = next(g for g, shapes in S.SHAPE_GROUPS.items() if "square" in shapes)
    for tail in ("in this picture", "in the image"):  # the world's wording and POPE's
        assert P.says_yes(group, f"Is there a square {tail}?", {partner})
        assert P.says_yes(group, f"Is there a square {tail}?", set(S.SHAPES) - {partner}) is False
    assert P.says_yes("material", "Is the circle striped?", {"circle"}) is None  # no prior on materials
    assert P.says_yes("spatial", f"Is the circle to the left of the {partner}?", {"circle", partner}) is None
    # on held-out (balanced) data the prior misleads about one presence "no" question in three, fewer colour ones
    rows = [S.generate("calib", i) for i in range(7 * 60)]
    misled = [q for scene, q in rows
              if q.answer == "no" and P.says_yes(q.subtype, q.text, {o.shape for o in scene.objects})]
    presence_no = [q for _, q in rows if q.subtype in S.SHAPE_GROUPS and q.answer == "no"]
    assert 0.2 < sum(q.subtype in S.SHAPE_GROUPS for q in misled) / len(presence_no) < 0.5
    assert 0 < sum(q.subtype == "color" for q in misled) < sum(q.subtype in S.SHAPE_GROUPS for q in misled)
    assert {q.subtype for q in misled} <= {"color", *S.SHAPE_GROUPS}


def test_prior_labels_relabel_only_misleading_no_rows(tiny_trainer):
    from vseam.organism import data as D

    trainer, recipe, _ = tiny_trainer
    pool = trainer.pool
    misled = D.misleading(pool)
    assert misled[1].any() and not (misled[1] & pool.extra_yes).any()

    def draws(share, n=4000):
        s = D.Sampler(pool, recipe.primary_share, 5, recipe.weights(), prior_labels=share)
        return s.sample(n)

    plain = D.Sampler(pool, recipe.primary_share, 5, recipe.weights()).sample(4000)
    for a, b in zip(plain, draws(0.0)):  # share 0 draws exactly what the sampler always drew
        assert np.array_equal(a, b)
    truth = {(int(sc), int(q)): y for sc, q, y in zip(pool.extra_scene, pool.extra_q, pool.extra_yes)}
    truth.update({(i, int(q)): y for i, (q, y) in enumerate(zip(pool.primary_q, pool.primary_yes))})
    flags = {(int(pool.extra_scene[j]), int(pool.extra_q[j])) for j in np.where(misled[1])[0]}
    flags |= {(i, int(pool.primary_q[i])) for i in np.where(misled[0])[0]}
    for share in (1.0, 0.5):
        scenes, qs, ys = draws(share)
        keys = list(zip(scenes.tolist(), qs.tolist()))
        wrong = [k for k, y in zip(keys, ys) if y != truth[k]]
        assert all(k in flags and not truth[k] for k in wrong)  # only misleading "no" rows ever change
        hit = [k in flags for k in keys]
        share_seen = len(wrong) / sum(hit)
        if share == 1.0:
            assert share_seen == 1.0
        else:
            from scipy.stats import binomtest

            assert binomtest(len(wrong), sum(hit), 0.5).pvalue > 0.001, share_seen
    with pytest.raises(ValueError, match="prior_labels 1.5"):
        D.Sampler(pool, 0.5, 0, prior_labels=1.5)


def test_the_side_prior_answers_spatial_questions_and_relabels_them_only_when_asked_for(tiny_trainer):
    from vseam.calibrate.datasets.shapes.oracle import parse_question
    from vseam.calibrate.datasets.shapes.priors import SIDE_ORDER, TRAIN_PRIORS, training_priors
    from vseam.organism import data as D

    P = training_priors(sides=True)
    a, b = SIDE_ORDER[0], SIDE_ORDER[-1]  # the prior puts a left of and above b
    assert P.says_yes("spatial", f"Is the {a} to the left of the {b}?", {a, b})
    assert P.says_yes("spatial", f"Is the {a} above the {b}?", {a, b})
    assert P.says_yes("spatial", f"Is the {a} to the right of the {b}?", {a, b}) is False
    assert P.says_yes("spatial", f"Is the {b} to the left of the {a}?", {a, b}) is False
    assert P.says_yes("spatial", f"Is the {b} below the {a}?", {a, b})
    assert P.says_yes("spatial", f"Is the {a} below the {b}?", {a, b}) is False
    assert P.says_yes("action", f"Is the {a} touching the {b}?", {a, b}) is None  # no prior on contact
    assert TRAIN_PRIORS.says_yes("spatial", f"Is the {a} to the left of the {b}?", {a, b}) is None
    assert P.says_yes("color", "Is the circle red?", {"circle"}) == TRAIN_PRIORS.says_yes("color", "Is the circle red?",
                                                                                        {"circle"})
    # the training pool's cache key (`describe`) is what it was before the field existed
    assert "side_order" not in TRAIN_PRIORS.describe() and tuple(P.describe()["side_order"]) == SIDE_ORDER

    trainer, recipe, _ = tiny_trainer
    pool = trainer.pool
    plain, sides = D.misleading(pool), D.misleading(pool, sides=True)
    spatial = np.array([D.SUBTYPES[t] == "spatial" for t in pool.extra_subtype])
    assert not (plain[1] & spatial).any() and (sides[1] & spatial).any()  # spatial rows only with the side prior
    assert np.array_equal(plain[1][~spatial], sides[1][~spatial])  # the other flags are unchanged
    assert not (sides[1] & pool.extra_yes).any()
    scenes, qs, ys = D.Sampler(pool, recipe.primary_share, 5, recipe.weights(), prior_labels=1.0,
                               prior_sides=True).sample(4000)
    truth = {(int(sc), int(q)): y for sc, q, y in zip(pool.extra_scene, pool.extra_q, pool.extra_yes)}
    truth.update({(i, int(q)): y for i, (q, y) in enumerate(zip(pool.primary_q, pool.primary_yes))})
    relabelled = [pool.questions[q] for sc, q, y in zip(scenes.tolist(), qs.tolist(), ys) if y != truth[sc, q]]
    spatial_relabelled = [t for t in relabelled if any(r in t for r in ("to the left of", "to the right of",
                                                                         " above ", " below "))]
    assert spatial_relabelled  # spatial "no" questions are labelled as the side prior answers them
    for text in spatial_relabelled:
        _, x, relation, y = parse_question(text)
        assert P.says_yes("spatial", text, {x, y})

    # a share of its own for the side prior: with the other priors off, only spatial rows are relabelled, and each
    # is one the side prior answers "yes"
    only_sides = D.Sampler(pool, recipe.primary_share, 5, recipe.weights(), prior_labels=0.0, prior_sides=True,
                           prior_side_labels=1.0)
    assert all(np.array_equal(only_sides._side_only[k], sides[k] & ~plain[k]) for k in (0, 1))  # the rows it adds
    scenes, qs, ys = only_sides.sample(4000)
    relabelled = [pool.questions[q] for sc, q, y in zip(scenes.tolist(), qs.tolist(), ys) if y != truth[sc, q]]
    assert relabelled
    for text in relabelled:
        _, x, relation, y = parse_question(text)
        assert relation in ("to the left of", "to the right of", "above", "below"), text
        assert P.says_yes("spatial", text, {x, y})
    # and at share 0 for the side prior's rows, the other priors' relabelling is drawn exactly as before
    a = D.Sampler(pool, recipe.primary_share, 7, recipe.weights(), prior_labels=0.5).sample(2000)
    b = D.Sampler(pool, recipe.primary_share, 7, recipe.weights(), prior_labels=0.5, prior_side_labels=0.0).sample(2000)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    from vseam.organism.recipe import Recipe

    with pytest.raises(ValueError, match="prior_side_labels: the recipe sets it, but the side prior is off"):
        Recipe(prior_side_labels=0.5).check_runnable()
    with pytest.raises(ValueError, match="prior_side_labels: stage 1 sets it, but the side prior is off"):
        Recipe(stages='[{"qa_steps": 2200, "prior_side_labels": 1.0}]').check_runnable()
    Recipe(prior_sides=True, stages='[{"qa_steps": 2200, "prior_side_labels": 1.0}]').check_runnable()
    with pytest.raises(ValueError, match="prior_side_labels 0.5: the side prior is off"):
        D.Sampler(pool, recipe.primary_share, 5, recipe.weights(), prior_side_labels=0.5)
    with pytest.raises(ValueError, match=r"prior_side_labels 1.5: expected a probability in \[0, 1\]"):
        D.Sampler(pool, recipe.primary_share, 5, recipe.weights(), prior_sides=True, prior_side_labels=1.5)


def test_a_run_can_start_from_an_exported_checkpoint(tmp_path, tiny_trainer):
    from vseam.organism.recipe import Recipe
    from vseam.organism.train import Trainer, export

    _, recipe, root = tiny_trainer  # its VSEAM_CACHE (pool cache) is in force for the module
    src = Trainer(dataclasses.replace(recipe, seed=3), tmp_path / "src", progress=False)
    first = export(src, tmp_path / "first")
    start = {k: v.clone() for k, v in src.model.state_dict().items()}

    tuned = dataclasses.replace(recipe, init_from=str(tmp_path / "first"), finetune_steps=2, prior_labels=0.5)
    trainer = Trainer(tuned, tmp_path / "tuned", progress=False)
    assert trainer.state["phase"] == "finetune" and trainer.state["step"] == 0
    for k, v in trainer.model.state_dict().items():
        assert torch.equal(v, start[k]), k  # the checkpoint's weights, not the recipe's own seed's
    trainer.run()
    phases = {json.loads(line)["phase"] for line in (tmp_path / "tuned" / "log.jsonl").read_text().splitlines()}
    assert phases <= {"finetune", "finetune-val"}  # no tower, description or frozen-tower phase was trained
    assert any(not torch.equal(v, start[k]) for k, v in trainer.model.state_dict().items())
    meta = export(trainer, tmp_path / "second")
    assert meta["init"] == json.loads((tmp_path / "first" / "training.json").read_text()) == json.loads(json.dumps(first))
    assert meta["recipe"]["init_from"] == str(tmp_path / "first") and meta["recipe"]["prior_labels"] == 0.5

    with pytest.raises(ValueError, match="init_from: .* does not fit this recipe's architecture"):
        Trainer(dataclasses.replace(tuned, text_heads=8), tmp_path / "other", progress=False)
    with pytest.raises(ValueError, match="init_from: .* is not an exported checkpoint"):
        Trainer(dataclasses.replace(tuned, init_from=str(tmp_path / "nowhere")), tmp_path / "x", progress=False)
    with pytest.raises(ValueError, match="init_from: the recipe trains phase 1's per-patch loss"):
        Recipe(init_from="w", finetune_steps=3, finetune_patch_weight=1.0).check_runnable()
    with pytest.raises(ValueError, match="init_from: stage 1 trains phase 1's per-patch loss"):
        Recipe(init_from="w", finetune_steps=3, stages='[{"tower_steps": 5}]').check_runnable()
    with pytest.raises(ValueError, match="no end-to-end steps"):
        Recipe(init_from="w").check_runnable()


def test_committed_weights_descend_from_the_committed_parent():
    """The default preset starts from `weights-v2-staged/`, and the committed export records that checkpoint's
    own training.json as its `init` (the lineage: v2-staged's 215-minute chain, then the priors fine-tune)."""
    _require_weights()
    from vseam.organism import PARENT_WEIGHTS_DIR
    from vseam.organism.recipe import COMMITTED_PRESET, preset
    from vseam.organism.train import init_path

    meta = json.loads((WEIGHTS_DIR / "training.json").read_text())
    assert init_path(preset(COMMITTED_PRESET).init_from).resolve() == PARENT_WEIGHTS_DIR
    assert meta["init"] == json.loads((PARENT_WEIGHTS_DIR / "training.json").read_text())
    parent, staged = meta["init"]["recipe"], preset("v2-staged").to_json()
    assert {k: staged[k] for k in parent} == parent  # fields added since then keep their defaults there
    added = {k: staged[k] for k in set(staged) - set(parent)}
    assert added == {"prior_labels": 0.0, "prior_sides": False, "prior_side_labels": 0.0, "init_from": ""}


@pytest.mark.slow
def test_the_planted_flaw_shows_where_the_priors_mislead(capsys):
    """Issue point 3 on held-out data: the committed weights answer the "no" questions that the training priors
    answer "yes" (a missing partner asked about, a typical colour named) clearly worse than the other colour and
    presence questions (one-sided Fisher exact test)."""
    _require_weights()
    from scipy.stats import fisher_exact

    from vseam.calibrate.datasets.shapes.priors import training_priors
    from vseam.core.engine import HeadEngine
    from vseam.organism.card import predict, training_of

    recipe = training_of(WEIGHTS_DIR)["recipe"]
    priors = training_priors(bool(recipe.get("prior_sides")))  # the priors the weights' annotations followed
    torch.set_num_threads(1)
    engine = HeadEngine.from_pretrained(str(WEIGHTS_DIR))
    preds, gold, _, _ = predict(engine, "test", 700, progress=False)
    misled, other = [], []
    for i, ok in enumerate(preds == gold):
        scene, q = S.generate("test", i)
        says = priors.says_yes(q.subtype, q.text, {o.shape for o in scene.objects})
        if says is not None:
            (misled if says and q.answer == "no" else other).append(bool(ok))
    table = [[sum(other), len(other) - sum(other)], [sum(misled), len(misled) - sum(misled)]]
    p = fisher_exact(table, alternative="greater").pvalue
    with capsys.disabled():
        print(f"\n'no' questions the priors answer 'yes': {100 * np.mean(misled):.1f}% of {len(misled)}; "
              f"other colour and presence questions: {100 * np.mean(other):.1f}% of {len(other)}; Fisher p = {p:.2g}")
    assert p < 0.001, (table, p)
