"""Shipped profiles of the paper's heads: the transcription against the paper text, the files against the generator,
validation, and refusal on a model with another fingerprint."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest

from vseam.head_profiles import ProfileError, load_profile
from vseam.core.vocab import SUBTYPE_LEVEL
from vseam.head_profiles.paper_heads import (
    PAPER_DIR,
    RECORDED_DUPLICATES,
    RECORDED_IN_BOTH_SETS,
    RECORDED_SHORT_LISTS,
    TABLE_2,
    TABLE_13,
    TOP_K,
    build_profiles,
    drift,
    paper_heads,
    paper_ref,
    write_profiles,
)

from conftest import SHARED

MODELS = ("llava", "instructblip")
LEVELS = ("attribute", "object", "relation")
TASKS = ("color", "material", "indoor", "animal", "vehicle", "action", "spatial")
SHIPPED = sorted(PAPER_DIR.glob("*.json"))


# ---- an independent reading of the paper's tables ---------------------------------------------------------------
def _paper_text() -> str:
    for path in sorted((SHARED / "paper").glob("*.txt")):
        text = path.read_text()
        if "Table 13:" in text and "Table 2:" in text:
            return text
    pytest.skip("the paper text is not present in ../shared/paper")


def _heads(cell: str) -> tuple[tuple[int, int], ...]:
    """Both notations of the paper: 'L16.H1' (Table 2) and 'L6 H19' (Table 13)."""
    return tuple((int(l), int(h)) for l, h in re.findall(r"L(\d+)[. ]H(\d+)", cell))


def _block(text: str, start: str, end: str) -> list[str]:
    lines = text.splitlines()
    i = next(k for k, line in enumerate(lines) if line.startswith(start))
    j = next(k for k in range(i, len(lines)) if lines[k].startswith(end))
    return lines[i:j]


@pytest.fixture(scope="module")
def paper_tables():
    text = _paper_text()
    table2: dict = {m: {} for m in MODELS}
    for line in _block(text, "Semantic Type\t", "Table 2:"):
        cells = [c for c in line.split("\t") if c.strip()]
        if cells and cells[0].lower() in LEVELS:
            assert len(cells) == 5, line
            level = cells[0].lower()
            table2["llava"][level] = {"positive": _heads(cells[1]), "negative": _heads(cells[2])}
            table2["instructblip"][level] = {"positive": _heads(cells[3]), "negative": _heads(cells[4])}
    table13: dict = {m: {} for m in MODELS}
    for line in _block(text, "VQA Task (Dataset)", "Table 13:"):
        m = re.match(r"^(\w+) (Attribute|Object|Relation) (Positive|Negative)\t([^\t]*)\t([^\t]*)$", line)
        if m:
            task, level, pol = m[1].lower(), m[2].lower(), m[3].lower()
            assert SUBTYPE_LEVEL[task] == level, line
            for model, cell in zip(MODELS, (m[4], m[5])):
                table13[model].setdefault(task, {})[pol] = _heads(cell)
    return table2, table13


def test_transcription_matches_the_paper_text(paper_tables):
    table2, table13 = paper_tables
    for model in MODELS:
        assert sorted(table2[model]) == sorted(LEVELS)
        assert sorted(table13[model]) == sorted(TASKS)
        for level in LEVELS:
            assert TABLE_2[model][level] == table2[model][level], (model, level)
        for task in TASKS:
            for pol in ("positive", "negative"):
                assert TABLE_13[model][task][pol] == table13[model][task][pol], (model, task, pol)
    n_printed = sum(len(v) for t in (TABLE_2, TABLE_13) for m in t.values() for r in m.values() for v in r.values())
    assert n_printed == 49 + 279  # every head the two tables print (Table 2 + Table 13), duplicates included


def test_every_shipped_head_is_the_papers(paper_tables):
    """Read each shipped file back and check its heads against the paper text (not against the data module)."""
    table2, table13 = paper_tables
    assert len(SHIPPED) == 2 * len(MODELS) * (len(LEVELS) + len(TASKS))
    for path in SHIPPED:
        m = re.fullmatch(r"(llava|instructblip)-(\w+)-wo-(positive|negative)\.json", path.name)
        assert m, path.name
        model, target, removed = m[1], m[2], m[3]
        printed = (table2 if target in LEVELS else table13)[model][target][removed]
        distinct = tuple(dict.fromkeys(printed))  # paper order, repeated entries once
        p = load_profile(path)
        assert p.name == path.stem
        assert [h.key for h in p.negative] == list(distinct), path.name
        assert p.positive == []
        assert p.provenance.method == f"paper table {2 if target in LEVELS else 13}"


def test_table2_is_the_intersection_of_the_table13_lists_of_each_level():
    for model in MODELS:
        for level in LEVELS:
            tasks = [t for t in TASKS if SUBTYPE_LEVEL[t] == level]
            for pol in ("positive", "negative"):
                shared = set.intersection(*(set(TABLE_13[model][t][pol]) for t in tasks))
                assert set(TABLE_2[model][level][pol]) == shared, (model, level, pol)


def test_recorded_irregularities_are_exactly_those_of_the_data():
    dups, short, both = {}, {}, {}
    for model in MODELS:
        for task, row in TABLE_13[model].items():
            for pol, printed in row.items():
                repeated = tuple(p for i, p in enumerate(printed) if p in printed[:i])
                if repeated:
                    dups[(model, task, pol)] = repeated
                if len(printed) != TOP_K:
                    short[(model, task, pol)] = len(printed)
            common = tuple(sorted(set(row["positive"]) & set(row["negative"])))
            if common:
                both[(model, task)] = common
    assert dups == RECORDED_DUPLICATES == {
        ("instructblip", "indoor", "positive"): ((23, 30),),
        ("instructblip", "animal", "positive"): ((23, 30),),
    }
    assert short == RECORDED_SHORT_LISTS == {("instructblip", "spatial", "negative"): 9}
    assert both == RECORDED_IN_BOTH_SETS
    # and the rows the generator uses have them resolved
    assert len(paper_ref("instructblip-indoor").positive) == 9
    assert len(paper_ref("paper:instructblip-animal").positive) == 9
    assert paper_ref("instructblip-animal").repeated == {"positive": ((23, 30),)}
    assert len(paper_ref("instructblip-spatial").negative) == 9
    assert paper_ref("instructblip-color").in_both == ((6, 10), (10, 7), (10, 23), (11, 26))
    # ... and said in the shipped files
    notes = load_profile(PAPER_DIR / "instructblip-indoor-wo-positive.json").provenance.notes
    assert "L23.H30 twice" in notes
    notes = load_profile(PAPER_DIR / "instructblip-spatial-wo-negative.json").provenance.notes
    assert "only 9 heads" in notes
    notes = load_profile(PAPER_DIR / "instructblip-color-wo-negative.json").provenance.notes
    assert "L6.H10, L10.H7, L10.H23, L11.H26 among this task's positive heads" in notes


def test_shipped_files_are_exactly_the_generator_output(tmp_path):
    assert drift() == []
    assert sorted(p.name for p in SHIPPED) == sorted(build_profiles())
    # the generator writes the same bytes, and replaces a folder's stale files
    (tmp_path / "stale.json").write_text("{}")
    written = write_profiles(tmp_path)
    assert len(written) == len(SHIPPED) and not (tmp_path / "stale.json").exists()
    for path in SHIPPED:
        assert (tmp_path / path.name).read_bytes() == path.read_bytes()
    (tmp_path / "llava-color-wo-negative.json").write_text("{}")
    assert drift(tmp_path) == [f"{tmp_path / 'llava-color-wo-negative.json'}: differs from the transcription"]
    res = subprocess.run(
        [sys.executable, "-m", "vseam.head_profiles.paper_heads", "--check", "--out", str(tmp_path)],
        capture_output=True, text=True,
    )
    assert res.returncode == 1 and "1 file(s) out of date" in res.stdout


def test_shipped_profiles_are_removal_baselines_of_the_real_models():
    rows = {r.ref: r for r in paper_heads()}
    for path in SHIPPED:
        p = load_profile(path)  # validates
        fp = p.fingerprint
        assert (fp.num_layers, fp.num_heads, fp.head_dim, fp.hidden_size) == (32, 32, 128, 4096)
        assert fp.model_id in ("llava-hf/llava-1.5-7b-hf", "Salesforce/instructblip-vicuna-7b")
        assert fp.architecture.lower().startswith(path.name.split("-")[0])
        # never an invented λ or score: every listed head is removed (Eq 10 with λ = 1 gives scale 0)
        assert p.negative and all(h.lam == 1.0 and h.score is None for h in p.negative)
        scales = p.scales()
        assert np.count_nonzero(scales == 0.0) == len(p.negative) and np.count_nonzero(scales != 1.0) == len(p.negative)
        row = rows[path.stem.rsplit("-wo-", 1)[0]]
        assert p.scope.level == row.level and p.scope.subtypes == row.subtypes and p.k == TOP_K
        removed = path.stem.rsplit("-", 1)[1]
        assert f"'w/o {removed}'" in p.provenance.notes and "no lambda was invented" in p.provenance.notes
    attr = load_profile(PAPER_DIR / "llava-attribute-wo-positive.json")
    assert attr.scope.model_dump() == {"level": "attribute", "subtypes": ["color", "material"]}
    assert [h.label() for h in attr.negative] == ["L16.H1", "L15.H7", "L22.H11"]
    spatial = load_profile(PAPER_DIR / "llava-spatial-wo-negative.json")
    assert spatial.scope.model_dump() == {"level": "relation", "subtypes": ["spatial"]}


def vseam(*args):
    return subprocess.run([sys.executable, "-m", "vseam.cli", *args], capture_output=True, text=True)


def _real_config_dir(tmp_path, family: str):
    """A config.json with the real checkpoint's layout (no weights): what `--model` reads for a fingerprint."""
    cfg = {
        "llava": {
            "architectures": ["LlavaForConditionalGeneration"],
            "model_type": "llava",
            "_name_or_path": "llava-hf/llava-1.5-7b-hf",
            "text_config": {"model_type": "llama", "vocab_size": 32064},
        },
        "instructblip": {
            "architectures": ["InstructBlipForConditionalGeneration"],
            "model_type": "instructblip",
            "_name_or_path": "Salesforce/instructblip-vicuna-7b",
            "text_config": {"model_type": "llama", "vocab_size": 32001},
        },
    }[family]
    out = tmp_path / family
    out.mkdir()
    (out / "config.json").write_text(json.dumps(cfg))
    return out


def test_validate_accepts_them_for_the_real_layout_and_refuses_a_tiny_checkpoint(
    tmp_path, tiny_llava_dir, tiny_instructblip_dir
):
    from vseam.core.families import fingerprint_of

    tiny = {"llava": fingerprint_of(tiny_llava_dir), "instructblip": fingerprint_of(tiny_instructblip_dir)}
    real = {f: fingerprint_of(_real_config_dir(tmp_path, f)) for f in MODELS}
    for path in SHIPPED:
        p = load_profile(path)
        family = path.name.split("-")[0]
        p.check_fits(real[family])
        for fp in tiny.values():
            with pytest.raises(ProfileError, match=rf"{re.escape(str(path))}: profile '{p.name}' .* does not fit"):
                p.check_fits(fp, source=str(path))

    llava = PAPER_DIR / "llava-color-wo-negative.json"
    blip = PAPER_DIR / "instructblip-relation-wo-positive.json"
    for path, family in ((llava, "llava"), (blip, "instructblip")):
        res = vseam("profile", "validate", str(path))
        assert res.returncode == 0 and f"valid profile '{path.stem}'" in res.stdout, res.stderr
        res = vseam("profile", "validate", str(path), "--model", str(tmp_path / family))
        assert res.returncode == 0 and "and fits" in res.stdout, res.stderr

    res = vseam("profile", "validate", str(llava), "--model", str(tiny_llava_dir))
    assert res.returncode == 1 and res.stdout == ""
    err = res.stderr.strip()
    assert err.startswith(f"error: {llava}: profile 'llava-color-wo-negative' was made for llava-hf/llava-1.5-7b-hf")
    assert "fingerprint.num_layers: profile has 32, model has 2" in err
    assert "fingerprint.num_heads: profile has 32, model has 4" in err
    assert "fingerprint.head_dim: profile has 128, model has 32" in err
    assert "Traceback" not in err and len(err.splitlines()) == 1

    res = vseam("profile", "validate", str(blip), "--model", str(tiny_llava_dir))
    assert res.returncode == 1
    assert ("fingerprint.architecture: profile has 'InstructBlipForConditionalGeneration', "
            "model has 'LlavaForConditionalGeneration'") in res.stderr
