"""Profiles written by `calibrate` load in `vseam serve` and act there exactly as in the HF reference engine."""

from __future__ import annotations

import openai
import pytest

from vseam.calibrate.cli import main
from vseam.head_profiles import load_profile
from planted_heads import DISTRACTOR, POSITIVE, build_planted, clean_image, edited_image
from test_pipeline import calibrate_argv, make_triples
from vllm_server import image_data_url, running_server, token_logprobs, vseam_serve

pytestmark = [pytest.mark.vllm, pytest.mark.timeout(1200)]
TOL = 1e-4


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    model = build_planted(tmp_path_factory.mktemp("planted"))
    triples = make_triples(tmp_path_factory.mktemp("triples"), 6)
    out = tmp_path_factory.mktemp("run")
    # eq4-pairs: the profile damps the distractor, so the edited image's answer moves a long way (a strong check)
    assert main(calibrate_argv(model, triples, out, "--patching", "0", "-k", "2", "--attribute-on", "eq4-pairs")) == 0
    return model, sorted((out / "profiles").glob("*.json"))


def test_calibrated_profiles_serve(calibrated):
    from vseam.core.engine import HeadEdits, HeadEngine

    model, profiles = calibrated
    assert [p.stem for p in profiles] == ["gqa-all", "gqa-attribute", "gqa-object", "gqa-relation"]
    prof = load_profile(profiles[0])
    assert prof.positive[0].key == POSITIVE and prof.negative[0].key == DISTRACTOR

    engine = HeadEngine.from_pretrained(str(model))
    yes = engine.answer_ids()["yes"]
    question = engine.family.binary_text("Is the object red?")
    images = {"clean": clean_image(50), "edited": edited_image(50)}
    want = {}
    for name, img in images.items():
        batch = engine.encode([img], [question])
        want[name, "none"] = engine.next_token_logprobs(batch)[0]
        want[name, prof.name] = engine.next_token_logprobs(batch, HeadEdits.from_scales(prof.scales(), 1))[0]
    # on the edited image the profile removes the distractor and doubles the answer head: "No" turns towards "Yes"
    assert float(want["edited", prof.name][yes]) > float(want["edited", "none"][yes]) + 1.0

    with running_server(vseam_serve(str(model), profiles), timeout=600) as (base, log):
        client = openai.OpenAI(base_url=f"{base}/v1", api_key="none")
        worst = 0.0
        for (name, profile), ref in want.items():
            body = {**engine.family.chat_extra_body, "return_tokens_as_token_ids": True,
                    "vllm_xargs": {"head_profile": profile}}
            resp = client.chat.completions.create(
                model=str(model), messages=engine.family.chat_messages(question, image_data_url(images[name])),
                max_tokens=1, temperature=0, logprobs=True, top_logprobs=5, extra_body=body,
            )
            got = token_logprobs(resp.choices[0])[0]
            assert yes in got, (name, profile)
            worst = max(worst, max(abs(lp - float(ref[tid])) for tid, lp in got.items()))
        print(f"calibrated profiles through vseam serve: max |server - HF| = {worst:.2e}")
        assert worst <= TOL
