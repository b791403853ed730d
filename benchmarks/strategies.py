"""The head-editing strategies of the paper's Table 3, written as head profiles so one server serves them all.

From a calibrated profile P with positive heads P+ and negative heads P−:

=================  ==========================  ==========================================================
strategy           profile name                heads
=================  ==========================  ==========================================================
original           ``none``                    none (the unmodified model; no file is written)
w/o negative       ``<P>-wo-negative``         every head of P− removed (listed as negative with λ = 1)
w/o positive       ``<P>-wo-positive``         every head of P+ removed (listed as negative with λ = 1)
random remove      ``<P>-random-remove``       n heads removed, drawn (seeded) from heads in neither set
rescaling          ``<P>``                     P itself (Eq 10: 1 + λ on P+, 1 − λ on P−)
=================  ==========================  ==========================================================

n defaults to max(|P+|, |P−|): the paper removes the top-K heads of one polarity in each ablation and drops the
same number at random. A manifest (`strategies.json`) maps each strategy to its profile name so `vseam eval
--strategies` knows which served profile is which and which one is the reference of the significance tests.
"""

from __future__ import annotations

import json
import pathlib

import numpy as np

from vseam.head_profiles import Head, HeadProfile, Provenance, load_profile

ORIGINAL, WO_NEGATIVE, WO_POSITIVE, RANDOM_REMOVE, RESCALING = (
    "original", "w/o negative", "w/o positive", "random remove", "rescaling")
#: the order of Table 3
STRATEGIES = (ORIGINAL, WO_NEGATIVE, WO_POSITIVE, RANDOM_REMOVE, RESCALING)
MANIFEST = "strategies.json"


def _removed(heads: list[tuple[int, int]]) -> list[Head]:
    return [Head(layer=l, head=h, lam=1.0) for l, h in heads]


def _derived(base: HeadProfile, suffix: str, negative: list[Head], note: str) -> HeadProfile:
    pv = base.provenance
    return HeadProfile(
        name=f"{base.name}-{suffix}",
        fingerprint=base.fingerprint,
        scope=base.scope,
        k=len(negative),
        positive=[],
        negative=negative,
        provenance=Provenance.new(
            f"strategy '{suffix}' of profile '{base.name}'", dataset=pv.dataset, n_correct=pv.n_correct,
            n_incorrect=pv.n_incorrect, fraction=pv.fraction, seed=pv.seed, tool_version=pv.tool_version, notes=note,
        ),
    )


def random_heads(profile: HeadProfile, count: int, seed: int) -> list[tuple[int, int]]:
    """`count` distinct heads drawn (seeded) from the heads that are in neither set of `profile`, sorted."""
    fp = profile.fingerprint
    chosen = {h.key for h in profile.positive} | {h.key for h in profile.negative}
    pool = [(l, h) for l in range(fp.num_layers) for h in range(fp.num_heads) if (l, h) not in chosen]
    if count > len(pool):
        raise ValueError(
            f"random remove: cannot draw {count} heads from the {len(pool)} heads outside profile "
            f"'{profile.name}' ({fp.num_layers}x{fp.num_heads} heads, {len(chosen)} selected)")
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(pool), size=count, replace=False)
    return sorted(pool[int(i)] for i in picks)


def strategy_profiles(profile: HeadProfile, seed: int = 0, random_count: int | None = None) -> dict[str, HeadProfile | None]:
    """The five Table-3 strategies of `profile`: strategy name → profile (None for `original`)."""
    n = max(len(profile.positive), len(profile.negative)) if random_count is None else random_count
    if n < 0:
        raise ValueError(f"random remove: count must be >= 0, got {n}")
    rand = random_heads(profile, n, seed)
    return {
        ORIGINAL: None,
        WO_NEGATIVE: _derived(profile, "wo-negative", _removed([h.key for h in profile.negative]),
                              "Table 3 'w/o negative': the negative heads removed (scale 0)"),
        WO_POSITIVE: _derived(profile, "wo-positive", _removed([h.key for h in profile.positive]),
                              "Table 3 'w/o positive': the positive heads removed (scale 0)"),
        RANDOM_REMOVE: _derived(profile, "random-remove", _removed(rand),
                                f"Table 3 'random remove': {n} heads outside both sets removed, seed {seed}"),
        RESCALING: profile,
    }


def write_strategies(source: str | pathlib.Path, out_dir: str | pathlib.Path, seed: int = 0,
                     random_count: int | None = None) -> pathlib.Path:
    """Write the strategy profiles of the profile file `source` into `out_dir`, plus the manifest; return it."""
    profile = load_profile(source)
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names: dict[str, str] = {}
    files: dict[str, str] = {}
    for strategy, prof in strategy_profiles(profile, seed=seed, random_count=random_count).items():
        if prof is None:
            names[strategy] = "none"
            continue
        path = prof.save(out / f"{prof.name}.json")
        names[strategy] = prof.name
        files[strategy] = path.name
    manifest = {"source": str(source), "reference": RESCALING, "seed": seed, "profiles": names, "files": files}
    path = out / MANIFEST
    path.write_text(json.dumps(manifest, indent=2) + "\n")
    return path


def read_manifest(path: str | pathlib.Path) -> dict[str, str]:
    """strategy → profile name from a manifest written by `write_strategies` (a directory means its manifest)."""
    from vseam.core.errors import UserError

    path = pathlib.Path(path)
    if path.is_dir():
        path = path / MANIFEST
    try:
        doc = json.loads(path.read_text())
    except OSError as e:
        raise UserError(f"{path}: cannot read strategies manifest ({e.strerror})") from None
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    profiles = doc.get("profiles") if isinstance(doc, dict) else None
    if not isinstance(profiles, dict) or not all(isinstance(v, str) for v in profiles.values()):
        raise UserError(f"{path}: field 'profiles' must map strategy names to profile names")
    unknown = sorted(set(profiles) - set(STRATEGIES))
    if unknown:
        raise UserError(f"{path}: field 'profiles': unknown strategies {unknown}; known: {list(STRATEGIES)}")
    return {s: profiles[s] for s in STRATEGIES if s in profiles}
