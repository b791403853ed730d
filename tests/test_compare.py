"""`vseam profile compare`: overlaps of two hand-made profiles against numbers computed by hand, and the paper refs."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from vseam.head_profiles import parse_profile
from vseam.head_profiles.compare import compare, head_sets_of, load_head_sets
from vseam.head_profiles.paper_heads import PAPER_DIR

FP = {"architecture": "LlavaForConditionalGeneration", "model_id": "vseam/test", "num_layers": 4, "num_heads": 8,
      "head_dim": 32}


def write(tmp_path, name, positive, negative):
    doc = {
        "name": name,
        "fingerprint": FP,
        "scope": {"level": "all"},
        "k": 4,
        "positive": [{"layer": l, "head": h, "lambda": lam} for l, h, lam in positive],
        "negative": [{"layer": l, "head": h, "lambda": lam} for l, h, lam in negative],
        "provenance": {"method": "hand-written", "tool_version": "0", "created": "2026-01-01T00:00:00+00:00"},
    }
    path = tmp_path / f"{name}.json"
    path.write_text(parse_profile(doc).to_json())
    return path


@pytest.fixture
def pair(tmp_path):
    # A: positive {L1.H2, L3.H0, L2.H5}, negative {L0.H7, L1.H1}
    # B: positive {L1.H2, L2.H5, L0.H0, L3.H3}, negative {L0.H7, L3.H0}   (λ differ on purpose: not compared)
    a = write(tmp_path, "a", [(1, 2, 0.9), (3, 0, 0.1), (2, 5, 0.5)], [(0, 7, 1.0), (1, 1, 0.2)])
    b = write(tmp_path, "b", [(1, 2, 0.3), (2, 5, 0.0), (0, 0, 1.0), (3, 3, 0.7)], [(0, 7, 0.4), (3, 0, 0.6)])
    return a, b


def vseam(*args):
    return subprocess.run([sys.executable, "-m", "vseam.cli", *args], capture_output=True, text=True)


def test_compare_json_gives_hand_computed_overlaps(pair):
    a, b = pair
    res = vseam("profile", "compare", str(a), str(b), "--json")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    # positive: shared {L1.H2, L2.H5} = 2, union 3 + 4 - 2 = 5, Jaccard 2/5
    assert doc["positive"] == {
        "count_a": 3, "count_b": 4, "shared": 2, "union": 5, "jaccard": 0.4,
        "fraction_of_a_in_b": pytest.approx(2 / 3), "fraction_of_b_in_a": 0.5,
        "shared_heads": ["L1.H2", "L2.H5"], "only_in_a": ["L3.H0"], "only_in_b": ["L0.H0", "L3.H3"],
    }
    # negative: shared {L0.H7} = 1, union 2 + 2 - 1 = 3, Jaccard 1/3
    assert doc["negative"] == {
        "count_a": 2, "count_b": 2, "shared": 1, "union": 3, "jaccard": pytest.approx(1 / 3),
        "fraction_of_a_in_b": 0.5, "fraction_of_b_in_a": 0.5,
        "shared_heads": ["L0.H7"], "only_in_a": ["L1.H1"], "only_in_b": ["L3.H0"],
    }
    # L3.H0 is positive in A and negative in B
    assert doc["crossed_a_positive_b_negative"] == ["L3.H0"] and doc["crossed_a_negative_b_positive"] == []
    assert doc["fingerprint_mismatches"] == []
    assert doc["a"] == {"source": str(a), "name": "a", "model_id": "vseam/test", "positive": 3, "negative": 2}

    # swapping A and B swaps the one-sided figures and nothing else
    swapped = json.loads(vseam("profile", "compare", str(b), str(a), "--json").stdout)
    assert swapped["positive"]["only_in_a"] == ["L0.H0", "L3.H3"] and swapped["positive"]["jaccard"] == 0.4
    assert swapped["crossed_a_negative_b_positive"] == ["L3.H0"] and swapped["crossed_a_positive_b_negative"] == []


def test_compare_text_output(pair):
    a, b = pair
    res = vseam("profile", "compare", str(a), str(b))
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0] == f"A: {a} ('a', vseam/test): 3 positive, 2 negative"
    assert "positive: A 3, B 4, shared 2, union 5, Jaccard 0.400, A found in B 0.667, B found in A 0.500" in lines
    assert "negative: A 2, B 2, shared 1, union 3, Jaccard 0.333, A found in B 0.500, B found in A 0.500" in lines
    assert "  only in B: L0.H0 L3.H3" in lines
    assert lines[-1] == "crossed: L3.H0 (A positive, B negative)"
    assert "warning" not in res.stdout


def test_identical_and_empty_sets(tmp_path):
    a = write(tmp_path, "only-pos", [(0, 1, 1.0), (2, 2, 0.5)], [])
    c = compare(load_head_sets(str(a)), load_head_sets(str(a)))
    assert c.positive.jaccard == 1.0 and c.positive.only_in_a == [] and c.positive.only_in_b == []
    # no negative heads on either side: the Jaccard index is undefined, reported as null
    assert c.negative.union == 0 and c.negative.jaccard is None and c.negative.fraction_of_b_in_a is None
    b = write(tmp_path, "only-neg", [], [(3, 7, 1.0)])
    c = compare(load_head_sets(str(a)), load_head_sets(str(b)))
    assert c.positive.jaccard == 0.0 and c.positive.fraction_of_a_in_b == 0.0 and c.positive.fraction_of_b_in_a is None
    assert c.negative.jaccard == 0.0 and c.negative.only_in_b == ["L3.H7"]


def test_paper_references_and_shipped_files(tmp_path):
    paper = load_head_sets("paper:llava-color")
    assert len(paper.positive) == len(paper.negative) == 10
    assert paper.fingerprint.model_id == "llava-hf/llava-1.5-7b-hf"
    # the shipped 'w/o negative' baseline removes exactly the paper's negative set
    shipped = head_sets_of(parse_profile((PAPER_DIR / "llava-color-wo-negative.json").read_text()), "shipped")
    c = compare(shipped, paper)
    assert c.negative.jaccard == 1.0 and c.positive.count_a == 0 and c.positive.count_b == 10
    assert c.fingerprint_mismatches == []
    # Table 2's shared attribute heads are a subset of Table 13's color heads
    c = compare(load_head_sets("paper:llava-attribute"), paper)
    assert (c.positive.shared, c.positive.fraction_of_a_in_b, c.positive.jaccard) == (3, 1.0, 0.3)
    # InstructBLIP color prints four heads as both positive and negative: they show up as crossed with itself
    blip = load_head_sets("paper:instructblip-color")
    assert compare(blip, blip).crossed_a_positive_b_negative == ["L6.H10", "L10.H7", "L10.H23", "L11.H26"]

    # a profile for another model: compared, with a warning that indices do not correspond
    mine = write(tmp_path, "mine", [(1, 2, 0.5)], [])
    res = vseam("profile", "compare", str(mine), "paper:llava-color")
    assert res.returncode == 0 and "warning: A and B were made for different models" in res.stdout
    assert "fingerprint.num_layers: profile has 4, model has 32" in res.stdout


def test_bad_references_are_one_line_errors(tmp_path):
    res = vseam("profile", "compare", "paper:llava-colour", str(PAPER_DIR / "llava-color-wo-negative.json"))
    assert res.returncode == 1 and "paper:llava-colour: no such paper head list" in res.stderr
    assert "paper:llava-color," in res.stderr and "Traceback" not in res.stderr
    res = vseam("profile", "compare", str(tmp_path / "missing.json"), "paper:llava-color")
    assert res.returncode == 1 and f"{tmp_path / 'missing.json'}: cannot read profile" in res.stderr
