"""The head-profile format: the one contract between `calibrate` (writer) and `serve`/`patches` (readers).

A profile names attention heads of a model's language model and how to rescale their outputs, following the
paper's Eq 8-10: positive heads are amplified by (1 + λ), negative heads damped by (1 − λ), with λ ∈ [0, 1].
A head is removed (scale 0) by listing it as negative with λ = 1. An optional strength α scales every λ
(1 + αλ, 1 − αλ): α = 1 (or absent) is Eq 10 exactly, α = 0 is the unmodified model.

Heads are addressed by the intervention point named in `vseam.core.hooks.HEAD_OUT`: the input of layer l's `o_proj`,
viewed as [tokens, heads, head_dim]. Layer and head indices are 0-based and global (not per tensor-parallel rank).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import pathlib
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from vseam.core.vocab import ScopeLevel

SCHEMA_VERSION = 1


class ProfileError(ValueError):
    """A profile is malformed or does not fit the model it is applied to. The message names file and field."""


class Fingerprint(BaseModel):
    """What a profile was made for. Two fingerprints match when architecture and shapes agree."""

    model_config = ConfigDict(extra="forbid")

    architecture: str = Field(description="HF architecture class, e.g. LlavaForConditionalGeneration")
    model_id: str = Field(description="hub id or local name of the checkpoint the heads were found in")
    num_layers: int = Field(gt=0, description="language-model decoder layers")
    num_heads: int = Field(gt=0, description="attention (query) heads per layer")
    head_dim: int = Field(gt=0)
    hidden_size: int | None = Field(default=None, gt=0)
    vocab_size: int | None = Field(default=None, gt=0)

    def mismatches(self, other: "Fingerprint") -> list[str]:
        """Fields that differ in a way that makes head indices meaningless on `other`."""
        out = []
        for name in ("architecture", "num_layers", "num_heads", "head_dim", "hidden_size", "vocab_size"):
            mine, theirs = getattr(self, name), getattr(other, name)
            if mine is not None and theirs is not None and mine != theirs:
                out.append(f"fingerprint.{name}: profile has {mine!r}, model has {theirs!r}")
        return out


class Head(BaseModel):
    """One selected head: its position, its rescaling factor λ (Eq 9) and its raw importance score c (Eq 7/8)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    layer: int = Field(ge=0)
    head: int = Field(ge=0)
    lam: float = Field(alias="lambda", description="λ in [0, 1]")
    score: float | None = Field(default=None, description="raw c(h,l) from attribution; null when hand-written")

    @field_validator("lam")
    @classmethod
    def _lam_in_range(cls, v: float) -> float:
        if not math.isfinite(v):
            raise ValueError(f"λ must be finite, got {v}")
        if not 0.0 <= v <= 1.0:
            raise ValueError(f"λ must lie in [0, 1], got {v}")
        return v

    @field_validator("score")
    @classmethod
    def _score_finite(cls, v: float | None) -> float | None:
        if v is not None and not math.isfinite(v):
            raise ValueError(f"score must be finite, got {v}")
        return v

    @property
    def key(self) -> tuple[int, int]:
        return (self.layer, self.head)

    def label(self) -> str:
        return f"L{self.layer}.H{self.head}"


class Scope(BaseModel):
    """Which semantics the heads were selected for."""

    model_config = ConfigDict(extra="forbid")

    level: ScopeLevel
    subtypes: list[str] = Field(default_factory=list, description="e.g. ['color', 'material']")


class Selection(BaseModel):
    """K and strength α chosen by accuracy on a held-out part of the calibration questions (never evaluation data)."""

    model_config = ConfigDict(extra="forbid")

    held_out_fraction: float = Field(gt=0, lt=1)
    held_out_questions: int = Field(ge=0)
    k_grid: list[int]
    strength_grid: list[float]
    accuracy_unedited: float | None = Field(default=None, ge=0, le=1, description="held-out accuracy, α = 0")
    accuracy_chosen: float | None = Field(default=None, ge=0, le=1, description="held-out accuracy, chosen K and α")
    significance: float | None = Field(default=None, gt=0, le=1, description="level the best (K, α) had to beat α = 0 "
                                       "at (one-sided McNemar, Bonferroni over the grid); 1 or None: plain argmax")
    mcnemar_p: float | None = Field(default=None, ge=0, le=1, description="the best (K, α)'s p against α = 0 on the "
                                    "held-out questions (None: α = 0 was best outright or no guard)")


class Provenance(BaseModel):
    """How the profile was made."""

    model_config = ConfigDict(extra="forbid")

    method: str = Field(description="e.g. 'mean-ablation exact', 'atp+refine', 'hand-written', 'paper table 13'")
    dataset: str | None = None
    n_correct: int | None = Field(default=None, ge=0, description="|D_correct| used for c_correct")
    n_incorrect: int | None = Field(default=None, ge=0, description="|D_incorrect| used for c_incorrect")
    fraction: float | None = Field(default=None, gt=0, le=1)
    seed: int | None = None
    tool_version: str
    created: str = Field(description="ISO-8601 UTC timestamp")
    notes: str | None = None
    split: str | None = Field(
        default=None, description="Eq-7 inputs: 'clean' (authors' split), 'clean+edited' or 'eq4-pairs'"
    )
    aggregate: str | None = Field(default=None, description="Eq-7 aggregation: 'mean' (paper) or 'gain' (released code)")
    selection: Selection | None = Field(default=None, description="how K and the strength were chosen (held out)")

    @classmethod
    def new(cls, method: str, created: str | None = None, tool_version: str | None = None, **fields) -> "Provenance":
        """A provenance stamped with this vseam's version and the current time (unless given)."""
        from vseam import __version__

        return cls(method=method, tool_version=tool_version or __version__, created=created or now_iso(), **fields)


class HeadProfile(BaseModel):
    """A named set of positive and negative heads with λ, for one model fingerprint."""

    model_config = ConfigDict(extra="forbid")

    schema_version: Literal[1] = SCHEMA_VERSION
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$", description="used in requests; 'none'/'auto' are reserved")
    fingerprint: Fingerprint
    scope: Scope
    k: int = Field(ge=0, description="top-K used when selecting each set")
    positive: list[Head] = Field(default_factory=list, description="scaled by 1 + λ (Eq 10)")
    negative: list[Head] = Field(default_factory=list, description="scaled by 1 − λ (Eq 10)")
    strength: float | None = Field(
        default=None, ge=0, le=1, description="α: scales are 1 + αλ and 1 − αλ; absent = 1 (Eq 10 exactly)"
    )
    provenance: Provenance

    @field_validator("name")
    @classmethod
    def _not_reserved(cls, v: str) -> str:
        if v.lower() in ("none", "auto"):
            raise ValueError(f"'{v}' is reserved for requests (unmodified model / routing)")
        return v

    @model_validator(mode="after")
    def _heads_consistent(self) -> "HeadProfile":
        fp = self.fingerprint
        problems = []
        for set_name in ("positive", "negative"):
            seen: set[tuple[int, int]] = set()
            for i, h in enumerate(getattr(self, set_name)):
                where = f"{set_name}[{i}] ({h.label()})"
                if h.layer >= fp.num_layers:
                    problems.append(f"{where}: layer {h.layer} out of range for {fp.num_layers} layers")
                if h.head >= fp.num_heads:
                    problems.append(f"{where}: head {h.head} out of range for {fp.num_heads} heads")
                if h.key in seen:
                    problems.append(f"{where}: duplicate head in {set_name}")
                seen.add(h.key)
        both = {h.key for h in self.positive} & {h.key for h in self.negative}
        for layer, head in sorted(both):
            problems.append(f"positive/negative: L{layer}.H{head} is in both sets")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    # ---- Eq 10 -------------------------------------------------------------------------------------------------
    @property
    def alpha(self) -> float:
        """The strength α (1 when the profile carries none)."""
        return 1.0 if self.strength is None else float(self.strength)

    def scales(self) -> np.ndarray:
        """Per-head output multipliers, shape [num_layers, num_heads]: 1 + αλ (positive), 1 − αλ (negative), else 1."""
        a = self.alpha
        s = np.ones((self.fingerprint.num_layers, self.fingerprint.num_heads), dtype=np.float64)
        for h in self.positive:
            s[h.layer, h.head] = 1.0 + a * h.lam
        for h in self.negative:
            s[h.layer, h.head] = 1.0 - a * h.lam
        return s

    def scale_entries(self) -> list[tuple[int, int, float]]:
        """The non-identity scales as sorted (layer, head, scale) triples."""
        s = self.scales()
        return [(int(l), int(h), float(s[l, h])) for l, h in zip(*np.nonzero(s != 1.0))]

    @property
    def num_heads_selected(self) -> int:
        return len(self.positive) + len(self.negative)

    # ---- fit to a model ---------------------------------------------------------------------------------------
    def check_fits(self, model_fp: Fingerprint, source: str = "profile") -> None:
        """Refuse to apply this profile to a model whose fingerprint differs (raises ProfileError)."""
        bad = self.fingerprint.mismatches(model_fp)
        if bad:
            raise ProfileError(
                f"{source}: profile '{self.name}' was made for {self.fingerprint.model_id} "
                f"({self.fingerprint.architecture}, {self.fingerprint.num_layers}x{self.fingerprint.num_heads} heads) "
                f"and does not fit {model_fp.model_id}: " + "; ".join(bad)
            )

    # ---- I/O -----------------------------------------------------------------------------------------------------
    def to_json(self) -> str:
        doc = self.model_dump(mode="json", by_alias=True)
        # optional fields added after the first release stay out of the file when unset, so profiles written
        # without them are byte-identical to those of earlier versions
        if doc.get("strength") is None:
            doc.pop("strength", None)
        for key in _LATER_PROVENANCE_FIELDS:
            if doc["provenance"].get(key) is None:
                doc["provenance"].pop(key, None)
        return json.dumps(doc, indent=2, sort_keys=False) + "\n"

    def content_hash(self) -> str:
        """sha256 of the profile's JSON (as `to_json` writes it): what a server or a baked checkpoint records."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()

    def save(self, path: str | pathlib.Path) -> pathlib.Path:
        from vseam.core.files import atomic_write_text

        path = pathlib.Path(path)
        atomic_write_text(path, self.to_json())
        return path


_LATER_PROVENANCE_FIELDS = ("split", "aggregate", "selection")


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def _format_validation_error(err: ValidationError, source: str) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "positive/negative"
        msg = e["msg"].removeprefix("Value error, ")
        lines.append(f"{source}: field '{loc}': {msg}")
    return "\n".join(lines)


def parse_profile(data: dict | str, source: str = "<profile>") -> HeadProfile:
    """Validate a profile given as a dict or JSON text; errors name `source` and the offending field."""
    if isinstance(data, str):
        try:
            data = json.loads(data)
        except json.JSONDecodeError as e:
            raise ProfileError(f"{source}: not valid JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
    if not isinstance(data, dict):
        raise ProfileError(f"{source}: a profile must be a JSON object, got {type(data).__name__}")
    try:
        return HeadProfile.model_validate(data)
    except ValidationError as e:
        raise ProfileError(_format_validation_error(e, source)) from None


def load_profile(path: str | pathlib.Path) -> HeadProfile:
    path = pathlib.Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ProfileError(f"{path}: cannot read profile ({e.strerror})") from None
    return parse_profile(text, source=str(path))


def json_schema() -> dict:
    schema = HeadProfile.model_json_schema(by_alias=True)
    schema["$id"] = "https://vseam.dev/schemas/head-profile-v1.json"
    schema["title"] = "V-SEAM head profile"
    return schema


SCHEMA_PATH = pathlib.Path(__file__).with_name("schema.json")


def write_schema(path: pathlib.Path = SCHEMA_PATH) -> pathlib.Path:
    path.write_text(json.dumps(json_schema(), indent=2, sort_keys=True) + "\n")
    return path
