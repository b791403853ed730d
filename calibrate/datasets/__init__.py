"""Dataset loaders: one module per file format, each yielding `vseam.calibrate.records.VQARecord`s.

A loader is a function `loader(**options) -> LoadResult` registered under a dataset name with
`@register_dataset("name")`. Callers go through `load_dataset(name, **options)`, which also applies the selection
options every dataset shares (subtypes, binary-only, boxes-required, yes/no balancing, fraction, limit, seed), so a
loader only parses its format. Records that cannot be used (malformed entries, missing images, missing boxes...)
are never fatal: they are counted by reason in `LoadResult.skipped` with the first few ids as examples.

Registered names: `gqa` (official GQA files or V-SEAM's released subsets), `pope`, `cocoqa`, and `shapes` (the
synthetic world).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import pathlib
import random
from collections import defaultdict
from typing import Callable, Iterable

from vseam.calibrate.records import VQARecord
from vseam.core.vocab import SUBTYPES
from vseam.core.errors import UserError

#: how many example ids to keep per skip reason
EXAMPLES_PER_REASON = 5


@dataclasses.dataclass
class LoadResult:
    """What a loader produced: the usable records and, per reason, how many entries were skipped (+ first ids)."""

    records: list[VQARecord]
    skipped: dict[str, int] = dataclasses.field(default_factory=dict)
    skipped_ids: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    source: str = ""

    def skip(self, reason: str, qid: object) -> None:
        """Count one unusable entry under `reason`, remembering its id if it is among the first few."""
        self.skipped[reason] = self.skipped.get(reason, 0) + 1
        ids = self.skipped_ids.setdefault(reason, [])
        if len(ids) < EXAMPLES_PER_REASON:
            ids.append(str(qid))

    def merge(self, other: "LoadResult") -> None:
        self.records.extend(other.records)
        for reason, n in other.skipped.items():
            self.skipped[reason] = self.skipped.get(reason, 0) + n
            ids = self.skipped_ids.setdefault(reason, [])
            ids.extend(other.skipped_ids.get(reason, [])[: EXAMPLES_PER_REASON - len(ids)])

    @property
    def total_skipped(self) -> int:
        return sum(self.skipped.values())

    def summary(self) -> str:
        """One human-readable paragraph: kept count, then each skip reason with its count and example ids."""
        lines = [f"{self.source or 'dataset'}: {len(self.records)} records"]
        for reason, n in sorted(self.skipped.items(), key=lambda kv: -kv[1]):
            ids = ", ".join(self.skipped_ids.get(reason, []))
            lines.append(f"  skipped {n} ({reason}), e.g. {ids}")
        return "\n".join(lines)


Loader = Callable[..., LoadResult]

#: dataset name -> loader
DATASETS: dict[str, Loader] = {}

#: modules whose import registers loaders
_LOADER_MODULES = ("gqa", "pope", "cocoqa", "shapes")


def register_dataset(name: str) -> Callable[[Loader], Loader]:
    """Decorator: make `loader` available as `load_dataset(name, ...)`."""

    def deco(fn: Loader) -> Loader:
        if name in DATASETS and DATASETS[name] is not fn:
            raise ValueError(f"dataset {name!r} is registered twice ({DATASETS[name].__module__}, {fn.__module__})")
        DATASETS[name] = fn
        return fn

    return deco


@functools.cache
def _import_loaders() -> None:
    for mod in _LOADER_MODULES:
        importlib.import_module(f"{__name__}.{mod}")


def available() -> list[str]:
    _import_loaders()
    return sorted(DATASETS)


def load_dataset(
    name: str,
    *,
    subtypes: Iterable[str] | None = None,
    binary_only: bool = False,
    require_boxes: bool = False,
    balance: bool = False,
    fraction: float | None = None,
    limit: int | None = None,
    seed: int = 0,
    **options,
) -> LoadResult:
    """Load dataset `name` with its own `options` (paths etc.), then apply the shared selection options (the
    keyword arguments of `select_records`, spelled out here too so that a caller sees them in one place).

    subtypes:      keep only these subtypes (e.g. {"color", "spatial"})
    binary_only:   keep only yes/no questions
    require_boxes: keep only records with at least one box (editing needs one)
    balance:       subsample so that each subtype has as many "yes" as "no" records (subtypes with only one of the
                   two answers, like most V-SEAM subsets, are kept whole)
    fraction:      keep a random fraction (0, 1] of the records (per subtype, seeded)
    limit:         keep at most this many records (after everything else; seeded, stratified by subtype)
    """
    _import_loaders()
    if name not in DATASETS:
        raise UserError(f"unknown dataset {name!r}; available: {', '.join(sorted(DATASETS))}")
    result = DATASETS[name](**options)
    if not result.source:
        result.source = name
    result.records = select_records(
        result,
        subtypes=subtypes,
        binary_only=binary_only,
        require_boxes=require_boxes,
        balance=balance,
        fraction=fraction,
        limit=limit,
        seed=seed,
    )
    return result


def select_records(
    result: LoadResult,
    *,
    subtypes: Iterable[str] | None = None,
    binary_only: bool = False,
    require_boxes: bool = False,
    balance: bool = False,
    fraction: float | None = None,
    limit: int | None = None,
    seed: int = 0,
) -> list[VQARecord]:
    """The shared selection step (see `load_dataset`). Filtered-out records are counted in `result.skipped`.

    Deterministic for a given seed, and the kept records stay in their original order.
    """
    if fraction is not None and not 0 < fraction <= 1:
        raise UserError(f"--fraction must be in (0, 1], got {fraction}")
    if limit is not None and limit < 0:
        raise UserError(f"--limit must be >= 0, got {limit}")
    wanted = None
    if subtypes:
        wanted = {s.lower() for s in subtypes}
        unknown = wanted - set(SUBTYPES) - {r.subtype for r in result.records}
        if unknown:
            raise UserError(f"unknown subtype(s) {sorted(unknown)}; V-SEAM subtypes are {', '.join(SUBTYPES)}")
    kept = []
    for r in result.records:
        if wanted is not None and r.subtype not in wanted:
            continue  # not asked for: not a skip
        if binary_only and not r.is_binary:
            result.skip("not a yes/no question", r.qid)
        elif require_boxes and not r.boxes:
            result.skip("no boxes", r.qid)
        else:
            kept.append(r)
    rng = random.Random(seed)
    if balance:
        kept = _balance(kept, rng, result)
    if fraction is not None and fraction < 1:
        kept = _stratified_sample(kept, lambda n: max(1, round(n * fraction)) if n else 0, rng)
    if limit is not None and limit < len(kept):
        kept = _limit(kept, limit, rng)
    return kept


def _by_subtype(records: list[VQARecord]) -> dict[str | None, list[int]]:
    groups: dict[str | None, list[int]] = defaultdict(list)
    for i, r in enumerate(records):
        groups[r.subtype].append(i)
    return groups


def _balance(records: list[VQARecord], rng: random.Random, result: LoadResult) -> list[VQARecord]:
    keep: set[int] = set()
    for _, idx in sorted(_by_subtype(records).items(), key=lambda kv: str(kv[0])):
        yes = [i for i in idx if records[i].answer == "yes"]
        no = [i for i in idx if records[i].answer == "no"]
        other = [i for i in idx if records[i].answer not in ("yes", "no")]
        if not yes or not no:  # nothing to balance against: the subtype is kept as it is
            keep.update(idx)
            continue
        n = min(len(yes), len(no))
        keep.update(rng.sample(yes, n) + rng.sample(no, n) + other)
    out = []
    for i, r in enumerate(records):
        if i in keep:
            out.append(r)
        else:
            result.skip("dropped to balance yes/no", r.qid)
    return out


def _stratified_sample(records: list[VQARecord], count_of: Callable[[int], int], rng) -> list[VQARecord]:
    keep: set[int] = set()
    for _, idx in sorted(_by_subtype(records).items(), key=lambda kv: str(kv[0])):
        keep.update(rng.sample(idx, min(len(idx), count_of(len(idx)))))
    return [r for i, r in enumerate(records) if i in keep]


def _limit(records: list[VQARecord], limit: int, rng: random.Random) -> list[VQARecord]:
    """`limit` records spread over the subtypes as evenly as their sizes allow."""
    groups = _by_subtype(records)
    order = {k: rng.sample(v, len(v)) for k, v in sorted(groups.items(), key=lambda kv: str(kv[0]))}
    keep: list[int] = []
    while len(keep) < limit:
        for k in order:
            if order[k] and len(keep) < limit:
                keep.append(order[k].pop())
    keep_set = set(keep)
    return [r for i, r in enumerate(records) if i in keep_set]


# ---- helpers shared by the loaders ---------------------------------------------------------------------------


def existing_path(path: str | pathlib.Path, what: str) -> pathlib.Path:
    p = pathlib.Path(path).expanduser()
    if not p.exists():
        raise UserError(f"{p}: {what} not found")
    return p


def found_image(result: LoadResult, images: pathlib.Path | None, candidates: Iterable[str], qid: object) -> str | None:
    """The image file of an entry (see `resolve_image`), or None after counting the entry as "missing image"."""
    image, found = resolve_image(images, candidates)
    if not found:
        result.skip("missing image", qid)
        return None
    return image


def resolve_image(images: pathlib.Path | None, candidates: Iterable[str]) -> tuple[str, bool]:
    """(path, found) for the first candidate file name that exists in `images`; without an images dir, the first
    candidate unresolved and counted as found (the caller did not ask for image checks)."""
    names = list(candidates)
    if images is None:
        return names[0], True
    for name in names:
        p = images / name
        if p.is_file():
            return str(p.resolve()), True
    return str(images / names[0]), False


__all__ = [
    "DATASETS",
    "LoadResult",
    "available",
    "found_image",
    "load_dataset",
    "register_dataset",
    "resolve_image",
    "select_records",
]
