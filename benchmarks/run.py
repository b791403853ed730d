"""One evaluation run: records → requests per profile → answers → metrics, significance and the report files.

Layout of the output directory:

    responses.jsonl     the answer cache (re-runs ask only what is missing; shared by every profile and task)
    predictions.jsonl   one line per (profile, item): reply, parsed prediction, correctness
    report.json         every figure; report.md a readable table; report.png a bar chart
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import pathlib
from typing import Sequence

from vseam.benchmarks import cocoqa, gqa, pope
from vseam.benchmarks.client import Endpoint, Request, ResponseCache, Sampling, ask_all, check_server
from vseam.benchmarks.task import Answer, score
from vseam.core.errors import UserError
from vseam.core.vocab import SEMANTIC_LEVELS

TASKS = {m.NAME: m for m in (pope, cocoqa, gqa)}
CACHE_FILE = "responses.jsonl"
PREDICTIONS_FILE = "predictions.jsonl"


@dataclasses.dataclass(frozen=True)
class Arm:
    """One compared configuration: a label for tables (strategy name or profile name) and the served profile.

    by_level: semantic level → profile, when each level has its own profile (the paper's Table 3 edits attribute
    questions with the attribute heads, and so on); records of other levels use `profile`.
    """

    label: str
    profile: str
    by_level: dict[str, str] | None = None

    def profile_for(self, record) -> str:
        if not self.by_level:
            return self.profile
        try:
            return self.by_level[record.level or ""]
        except KeyError:
            raise UserError(f"{self.label}: no profile for question {record.qid} of level {record.level!r} "
                            f"(profiles given for {', '.join(self.by_level)})") from None

    def profiles(self) -> list[str]:
        return sorted(set(self.by_level.values())) if self.by_level else [self.profile]

    def describe(self) -> str:
        if not self.by_level:
            return self.profile
        return ", ".join(f"{lv}: {p}" for lv, p in self.by_level.items())


@dataclasses.dataclass
class EvalConfig:
    task: str
    endpoint: Endpoint
    arms: list[Arm]
    out_dir: pathlib.Path
    reference: str | None = None  # label of the arm the significance tests compare against the others
    concurrency: int = 8
    retries: int = 5
    timeout: float = 120.0
    max_consecutive_failures: int = 20
    max_tokens: int | None = None
    constrain: bool = False  # binary tasks: restrict replies to the yes/no words (vLLM structured outputs)
    folds: int = 1000
    fold_size: int = 100
    seed: int = 0
    #: level at which the paper's claim is judged (reference ahead of the unedited arm, McNemar p below it, no level
    #: behind; `stats.claim_verdict`); the report carries the verdict when exactly one arm is the unedited model
    claim_alpha: float = 0.001
    progress: bool | None = None
    check_server: bool = True
    refresh: bool = False

    def __post_init__(self):
        labels = [a.label for a in self.arms]
        if len(set(labels)) != len(labels):
            raise UserError(f"--profile: each profile may be evaluated once, got {labels}")
        if self.reference is not None and self.reference not in labels:
            raise UserError(f"--reference {self.reference}: not among the evaluated {labels}")
        if not 0 < self.claim_alpha < 1:
            raise UserError(f"--claim-alpha must lie strictly between 0 and 1, got {self.claim_alpha}")
        for flag, value, least in (("--concurrency", self.concurrency, 1), ("--retries", self.retries, 0),
                                   ("--folds", self.folds, 2), ("--fold-size", self.fold_size, 1),
                                   ("--max-failures", self.max_consecutive_failures, 1),
                                   ("--max-tokens", self.max_tokens or 1, 1), ("--timeout", self.timeout, 1e-9)):
            if value < least:
                raise UserError(f"{flag} must be at least {least:g}, got {value}")


def arms_for(strategies: Sequence[str] = (), profiles: Sequence[str] | None = None, reference: str | None = None
             ) -> tuple[list[Arm], str | None, list[str] | None]:
    """The arms of a run, its reference label, and the semantic levels the arms cover (None: all levels).

    strategies: one manifest (file or directory from `vseam eval strategies`), or one LEVEL=MANIFEST per level
                (each level edited with its own profile's strategies, as in Table 3)
    profiles:   further single profiles to compare (default: only `none` when no strategies are given)
    reference:  the label tested against all others (default: `rescaling` when strategies are given)
    """
    from vseam.benchmarks.strategies import RESCALING, read_manifest

    arms: list[Arm] = []
    levels = None
    labels: list[str] = []
    specs = list(strategies)
    per_level = [s for s in specs if "=" in s]
    if per_level and len(per_level) != len(specs):
        raise UserError("--strategies: give either one manifest, or one LEVEL=MANIFEST per level, not both")
    if len(specs) > 1 and not per_level:
        raise UserError("--strategies: several manifests need a level each (attribute=..., object=..., relation=...)")
    if per_level:
        manifests = {}
        for spec in per_level:
            level, path = spec.split("=", 1)
            if level not in SEMANTIC_LEVELS:
                raise UserError(f"--strategies {spec}: level must be attribute, object or relation")
            if level in manifests:
                raise UserError(f"--strategies: level {level} given twice")
            manifests[level] = read_manifest(path)
        labels = [s for s in next(iter(manifests.values())) if all(s in m for m in manifests.values())]
        for s in labels:
            by_level = {lv: m[s] for lv, m in manifests.items()}
            names = set(by_level.values())
            arms.append(Arm(label=s, profile=names.pop()) if names == {"none"} else
                        Arm(label=s, profile="per level", by_level=by_level))
        levels = list(manifests)
    elif specs:
        manifest = read_manifest(specs[0])
        arms += [Arm(label=s, profile=p) for s, p in manifest.items()]
        labels = list(manifest)
    if specs and reference is None and RESCALING in labels:
        reference = RESCALING
    for p in profiles or ([] if specs else ["none"]):
        arms.append(Arm(label=p, profile=p))
    return arms, reference, levels


def task_module(name: str):
    try:
        return TASKS[name]
    except KeyError:
        raise UserError(f"unknown task {name!r}; known: {', '.join(TASKS)}") from None


def load_records(task: str, data: Sequence[str], images: str | None, limit: int | None = None, seed: int = 0,
                 dataset: str | None = None, **options):
    """Records of `task` from the dataset files or directories (via `vseam.calibrate.datasets`).

    Returns (records, excluded, skipped): what the task evaluates, what the task leaves out by reason (e.g. COCO-QA's
    number type), and what the loader could not use by reason (malformed entries, missing images).
    `limit` applies to the union of all `data` paths (seeded, stratified by subtype); `options` go to the loader.
    `dataset` reads another registered dataset of the same shape (GQA's seven subtypes from the `shapes` world).
    """
    from vseam.calibrate.datasets import LoadResult, load_dataset, select_records

    mod = task_module(task)
    if not data:
        raise UserError("--data: give at least one dataset file or directory")
    name = dataset or mod.DATASET
    if name not in getattr(mod, "DATASETS", (mod.DATASET,)):
        raise UserError(f"--dataset {name}: {task} reads {', '.join(getattr(mod, 'DATASETS', (mod.DATASET,)))}")
    merged = LoadResult(records=[], source=name)
    for path in data:
        merged.merge(load_dataset(name, path=path, images=images, seed=seed,
                                  **{k: v for k, v in options.items() if v is not None}))
    kept, excluded = mod.select(merged.records)
    merged.records = kept
    records = select_records(merged, limit=limit, seed=seed) if limit is not None else kept
    skipped = {reason: {"count": n, "examples": merged.skipped_ids.get(reason, [])}
               for reason, n in merged.skipped.items()}
    return records, excluded, skipped


def detect_family(endpoint: Endpoint, name: str = "auto"):
    """The model family: given by name, else from the server (`/v1/head_profiles` fingerprint, `/v1/models` root)."""
    from vseam.core.families import FAMILIES, family_for, read_config

    if name != "auto":
        if name not in FAMILIES:
            raise UserError(f"--family {name}: unknown; known: {', '.join(FAMILIES)}")
        return FAMILIES[name]
    from vseam.benchmarks.client import served_models, served_profiles

    for prof in (served_profiles(endpoint) or {"data": []})["data"]:
        arch = (prof.get("fingerprint") or {}).get("architecture")
        if arch:
            try:
                return family_for({"architectures": [arch]})
            except ValueError:
                pass
    for m in served_models(endpoint):
        if m.get("id") != endpoint.model:
            continue
        root = pathlib.Path(str(m.get("root") or m.get("id")))
        if (root / "config.json").is_file():
            try:
                return family_for(read_config(root))
            except ValueError as e:
                raise UserError(f"--model {endpoint.model}: {e}") from None
    raise UserError(f"--model {endpoint.model}: cannot tell its model family from the server; pass --family "
                    f"({' or '.join(FAMILIES)})")


def build_requests(mod, family, records, arms: Sequence[Arm]) -> list[Request]:
    reqs = []
    for arm in arms:
        for r in records:
            reqs.append(Request(qid=r.qid, profile=arm.profile_for(r), prompt=mod.prompt(family, r),
                                image=pathlib.Path(r.image)))
    return reqs


def evaluate(cfg: EvalConfig, records, family, data_info: dict | None = None) -> dict:
    """Ask, score, test and write the report; returns the report dict (also written as report.json)."""
    from vseam.benchmarks import report as report_mod
    from vseam.benchmarks.client import NONE_PROFILE
    from vseam.benchmarks.stats import bootstrap, claim_verdict, paired_tests

    mod = task_module(cfg.task)
    if not records:
        raise UserError(f"{cfg.task}: no records to evaluate")
    qids = [r.qid for r in records]
    if len(set(qids)) != len(qids):
        dup = next(q for q in qids if qids.count(q) > 1)
        raise UserError(f"{cfg.task}: question id {dup!r} occurs more than once in the data")
    if cfg.check_server:
        check_server(cfg.endpoint, sorted({p for a in cfg.arms for p in a.profiles()}))
    cfg.out_dir.mkdir(parents=True, exist_ok=True)
    cache = ResponseCache(cfg.out_dir / CACHE_FILE, read=not cfg.refresh)
    choices = mod.choices(family) if cfg.constrain else None
    if cfg.constrain and not choices:
        raise UserError(f"--constrain: {cfg.task} is open-ended; only binary tasks can restrict the reply")
    sampling = Sampling(max_tokens=cfg.max_tokens or mod.MAX_TOKENS, choices=tuple(choices) if choices else None)
    requests = build_requests(mod, family, records, cfg.arms)
    outcomes = asyncio.run(ask_all(
        requests, cfg.endpoint, family, cache, sampling=sampling, concurrency=cfg.concurrency, retries=cfg.retries,
        timeout=cfg.timeout, max_consecutive_failures=cfg.max_consecutive_failures, progress=cfg.progress, desc=f"{cfg.task} x {len(cfg.arms)} profiles"))

    answers: dict[str, list[Answer]] = {}
    for k, arm in enumerate(cfg.arms):
        chunk = outcomes[k * len(records):(k + 1) * len(records)]
        answers[arm.label] = [
            score(r, o.reply, mod.parse, mod.is_correct, mod.category(r), error=o.error) for r, o in zip(records, chunk)
        ]
    with open(cfg.out_dir / PREDICTIONS_FILE, "w") as fh:
        for arm in cfg.arms:
            for r, a in zip(records, answers[arm.label]):
                row = {"label": arm.label, "profile": arm.profile_for(r)} | a.to_json()
                fh.write(json.dumps(row, sort_keys=True) + "\n")

    metrics = {arm.label: mod.metrics(answers[arm.label]) for arm in cfg.arms}
    significance = tests = claim = None
    if cfg.reference is not None and len(cfg.arms) > 1:
        paired = paired_correctness(answers, mod.bootstrap_category)
        order = list(mod.headline(metrics[cfg.arms[0].label]))  # the task's own category order
        paired = dict(sorted(paired.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order)))
        baselines = [a.label for a in cfg.arms if a.label != cfg.reference]
        tests = paired_tests(paired, reference=cfg.reference, baselines=baselines, seed=cfg.seed)
        significance = bootstrap(paired, reference=cfg.reference, baselines=baselines,
                                 folds=cfg.folds, fold_size=cfg.fold_size, seed=cfg.seed)
        unedited = [a.label for a in cfg.arms if a.profile == NONE_PROFILE and not a.by_level and a.label in baselines]
        if len(unedited) == 1:
            claim = claim_verdict(tests, unedited[0], cfg.claim_alpha)
    unique = [o for o in outcomes if not o.shared]
    failed = [o for o in unique if o.error]
    from vseam import __version__
    from vseam.head_profiles import now_iso

    report = {
        "task": cfg.task,
        "model": cfg.endpoint.model,
        "base_url": cfg.endpoint.base_url,
        "profile_via": cfg.endpoint.profile_via,
        "family": family.name,
        "created": now_iso(),
        "vseam_version": __version__,
        "data": (data_info or {}) | {"records": len(records)},
        "arms": [dataclasses.asdict(a) for a in cfg.arms],
        "sampling": sampling.as_dict(),
        "requests": {
            "items": len(outcomes),
            "unique": len(unique),
            "from_cache": sum(o.cached for o in unique),
            "asked": sum(not o.cached for o in unique),
            "failed": sum(o.error is not None for o in unique),
            "first_errors": [o.error for o in failed[:5]],
        },
        "metrics": metrics,
        "headline": {label: mod.headline(m) for label, m in metrics.items()},
        "paired_tests": tests,
        "claim": claim,
        "significance": significance,
    }
    report_mod.write_report(report, cfg.out_dir)
    return report


def paired_correctness(answers: dict[str, list[Answer]], category_of) -> dict[str, dict[str, list[bool]]]:
    """category → label → correctness, over the items every label completed (item order shared by all labels)."""
    labels = list(answers)
    n = len(answers[labels[0]])
    out: dict[str, dict[str, list[bool]]] = {}
    for i in range(n):
        row = [answers[lb][i] for lb in labels]
        if any(a.failed for a in row):
            continue
        cat = category_of(row[0])
        if cat is None:
            continue
        for lb, a in zip(labels, row):
            out.setdefault(cat, {}).setdefault(lb, []).append(a.correct)
    return out
