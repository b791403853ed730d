"""The organism training-budget benchmark's arithmetic (`vseam.organism.budget`): what a preset trains (steps per
kind, validation passes) and how measured step costs become a chain's projected minutes. The timings themselves
are the benchmark's job."""

from __future__ import annotations

import pytest

from vseam.organism.budget import ChainPart, _recorded_minutes, _segments_evals, plan, project


def test_validation_passes_fall_every_eval_every_steps_and_at_each_loop_end():
    assert _segments_evals(0, 2100, 300) == 7
    assert _segments_evals(0, 1000, 300) == 4  # 300, 600, 900 and the end
    assert _segments_evals(2100, 3300, 300) == 4
    assert _segments_evals(900, 1000, 300) == 1  # only the end
    assert _segments_evals(500, 500, 300) == 0


def test_the_parent_preset_counts_every_stage_of_its_chain():
    part = plan("v2-staged")
    # phase 1's 1,000 tower steps + the last stage's 6,000 tower-retraining steps; frozen-tower questions up to the
    # fourth stage's 5,100; end-to-end questions up to the last stage's 2,100
    assert part.steps == {"tower": 7000, "caption": 1000, "qa": 5100, "finetune": 2100}
    # question loops: 0-2100 (7), 2100-3300 (4), 3300-4200 (3), 4200-5100 (3); end to end 0-900 (3), 900-1500 (2),
    # 1500-2100 (2)
    assert part.evals == 24
    assert (part.pool_scenes, part.contact_scenes, part.features, part.world) == (30000, 40000, 30000, "v1")
    # each kind is timed with the settings of the stage adding most of it
    assert part.stage_of == {"tower": 6, "caption": 0, "qa": 0, "finetune": 4}


def test_a_preset_from_a_checkpoint_trains_only_its_end_to_end_steps():
    part = plan("v2-priors")
    assert part.steps == {"tower": 0, "caption": 0, "qa": 0, "finetune": 900}
    assert part.evals == 1
    # it still renders its pool (its questions are sampled there), in the priors world; no features are cached
    assert (part.pool_scenes, part.contact_scenes, part.features, part.world) == (30000, 0, 0, "v2")


def test_the_committed_checkpoints_recorded_minutes_are_found_by_their_recipes():
    assert _recorded_minutes("v2-staged") == pytest.approx(214.9)
    assert _recorded_minutes("v2-priors") == pytest.approx(16.4)
    assert _recorded_minutes("v1") is None


def test_projection_is_steps_times_seconds_plus_validation_features_and_rendering():
    parent = ChainPart("p", {"tower": 100, "caption": 10, "qa": 50, "finetune": 20}, evals=3, pool_scenes=1000,
                       contact_scenes=200, features=1000, stage_of={}, world="v1")
    child = ChainPart("c", {"tower": 0, "caption": 0, "qa": 0, "finetune": 30}, evals=1, pool_scenes=500,
                      contact_scenes=0, features=0, stage_of={}, world="v2")
    per_step = {1: {"p:tower": 0.5, "p:caption": 2.0, "p:qa": 1.0, "p:finetune": 3.0, "c:finetune": 2.0},
                2: {"p:tower": 0.25, "p:caption": 1.0, "p:qa": 0.5, "p:finetune": 2.0, "c:finetune": 1.0}}
    fig = project([parent, child], per_step, eval_s={1: 10.0, 2: 6.0}, feature_s={1: 0.01, 2: 0.005},
                  render_pool={"v1": 0.03, "v2": 0.04}, render_contact={"v1": 0.06, "v2": 0.5})
    p1 = 100 * 0.5 + 10 * 2.0 + 50 * 1.0 + 20 * 3.0 + 3 * 10.0 + 1000 * 0.01 + 200 * 0.06
    c1 = 30 * 2.0 + 10.0
    assert fig["chain"][0]["projected_minutes"]["1"] == pytest.approx(p1 / 60)
    assert fig["chain"][1]["projected_minutes"]["1"] == pytest.approx(c1 / 60)
    # each part's pool is rendered in its own world
    assert fig["chain"][0]["pool_render_minutes"] == pytest.approx(1000 * 0.03 / 60)
    assert fig["chain"][1]["pool_render_minutes"] == pytest.approx(500 * 0.04 / 60)
    total1 = (p1 + c1 + 1000 * 0.03 + 500 * 0.04) / 60
    assert fig["chain_with_pool_render_minutes"]["1"] == pytest.approx(total1)
    assert fig["over_budget_ratio"]["1"] == pytest.approx(total1 / 60)
    assert fig["fits_budget"] == {"1": True, "2": True}
    assert fig["speedup_2_over_1"]["p:finetune"] == pytest.approx(1.5)
    # a step kind that was not timed is an error, not a free step
    with pytest.raises(KeyError):
        project([parent], {1: {"p:tower": 0.5}}, {1: 1.0}, {1: 0.0}, {"v1": 0.0}, {"v1": 0.0})


def test_recipe_overrides_price_a_recipe_and_bad_ones_are_named():
    from vseam.organism.budget import parse_sets

    sets = parse_sets(["text_heads=8", "qa-steps=2000", "head_dropout_rescale=false", "lr=0.002"])
    assert sets == {"text_heads": 8, "qa_steps": 2000, "head_dropout_rescale": False, "lr": 0.002}
    part = plan("v2-staged", {"qa_steps": 2000, "text_heads": 8})
    assert part.steps["qa"] == 5100  # the stages still raise the frozen-tower steps to 5,100
    assert part.recorded_minutes is None  # no committed checkpoint was trained with 8 heads
    assert plan("v2-priors", {"finetune_steps": 300}).steps["finetune"] == 300
    for bad, said in ((["nope=1"], "recipe field"), (["text_heads"], "FIELD=VALUE"),
                      (["text_heads=many"], "not of type int")):
        with pytest.raises(ValueError, match=said):
            parse_sets(bad)
