"""A calibration run, stage by stage: dataset -> stage 1 (edits, Eq-4 triples) -> stage 2 (patching, head
attribution, K and strength) -> head profiles and the report. `calibrate(config)` runs it from Python; the
`calibrate` command (`vseam.calibrate.cli`) builds the `CalibrateConfig` from its flags.

Which inputs head attribution scores is `--attribute-on` (`vseam.calibrate.inputs`): by default every calibration
question on its clean image, split into D_correct / D_incorrect by the unedited model's answer (the authors' code);
the Eq-4 triples drive activation patching and the logit lens. `--select-on F` chooses K and the strength α per
profile on a held-out part of the calibration questions (`vseam.calibrate.strength`).

A run lives in one directory (`--out`, a `vseam.calibrate.rundir.RunDir`) and can be killed and resumed at any
point; the profiles it writes depend only on the per-input results recorded there, so a resumed run writes
byte-identical profiles:

    config.json                   the options that determine the results
    run.json                      creation time (the profiles' `created` is pinned to it)
    stage1/                       stage 1's own resumable outputs (edited images, manifest, triple cache)
    triples.jsonl                 the Eq-4 triples of the attributed questions (patching, logit lens)
    predictions.jsonl             `--max-correct`: the unedited model's answer on every attributable input
    inputs.jsonl                  the attributed inputs (image, question, target answer), after `--fraction` and
                                  `--max-correct`
    held_out.jsonl                `--select-on`: the held-out calibration questions
    attribution-<method>.jsonl    per attributed input: prediction, P(y), Δp for every head (append-only)
    candidates.json               AtP screen: the heads re-scored exactly (`--refine N`)
    attribution-refine.jsonl      per input: exact Δp of the candidates
    selection.jsonl, selection.png  `--select-on`: held-out accuracy of every (K, α) per group
    patching.jsonl                per patched triple: Δlogit [module, layer, row] and the logit lens
    patching/<group>.npz|png      Eq 3 arrays and heatmaps; logit_lens.tsv, lens_<n>.png
    profiles/<prefix>-<level>.json  one profile per semantic level (attribute, object, relation) and `all`
    profiles/paper/<prefix>-<level>.json  `--select-on`: the same heads at the fixed `-k` and α = 1 (Eq 10)
    report.md, report.json        counts, chosen heads, head/bbox attention overlap (Table 14), timings

Per-input work is done in fixed chunks of the inputs, so a resumed run batches exactly as an uninterrupted one.
"""

from __future__ import annotations

import contextlib

import dataclasses
import json
import pathlib
import time
from typing import Callable, Iterable, Sequence

import numpy as np

from vseam.calibrate.config import CalibrateConfig
from vseam.calibrate.inputs import Unit, build_units, hold_out, question_key, subsample
from vseam.calibrate.records import EditedPair, Triple, VQARecord, read_jsonl, write_jsonl
from vseam.calibrate.rundir import RunDir
from vseam.core.defaults import MIN_INCORRECT
from vseam.core.errors import UserError
from vseam.core.files import atomic_write_json

Say = Callable[[str], None]
#: `--max-correct`: units per unedited forward chunk (fixed, so that a resumed run batches the same)
PREDICT_CHUNK = 64


def _say(msg: str) -> None:
    print(msg, flush=True)


# ---- inputs that replace stage 1 ---------------------------------------------------------------------------------


def _read_yes_no_jsonl(path: str | pathlib.Path, flag: str, kind, what: str) -> list:
    """Rows of `kind` from a JSONL file given with `flag`: every question yes/no, no question id twice."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise UserError(f"{flag} {path}: no such file")
    try:
        items = read_jsonl(path, kind)
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise UserError(f"{flag} {path}: not a JSONL file of {what} ({e})") from None
    seen = set()
    for i, item in enumerate(items):
        record = item.record if isinstance(item, Triple) else item
        if record.answer not in ("yes", "no"):
            raise UserError(f"{flag} {path}: line {i + 1} ({record.qid}) has answer {record.answer!r}, need yes/no")
        k = question_key(record)
        if k in seen:
            raise UserError(f"{flag} {path}: line {i + 1}: duplicate question id {k}")
        seen.add(k)
    return items


def load_triples(path: str | pathlib.Path) -> list[Triple]:
    """`--triples`: Eq-4 triples (e.g. another run's triples.jsonl); their questions are the calibration questions."""
    return _read_yes_no_jsonl(path, "--triples", Triple, "triples")


def load_questions(path: str | pathlib.Path) -> list[VQARecord]:
    """`--questions`: calibration questions as a JSONL of records (e.g. another run's held_out.jsonl)."""
    return _read_yes_no_jsonl(path, "--questions", VQARecord, "question records")


def resolve_model(model: str) -> tuple[pathlib.Path, str]:
    """(checkpoint directory, model reference) of `--model`: llava | instructblip | hub id in the cache | directory."""
    from vseam.core.families import DEFAULT_MODEL_IDS, resolve_model_dir

    target = DEFAULT_MODEL_IDS.get(model, model)
    try:
        return resolve_model_dir(target, download=True), target
    except FileNotFoundError as e:
        raise UserError(f"--model {model}: {e}") from None


# ---- before any model loads ----------------------------------------------------------------------------------------


def preflight(config: CalibrateConfig) -> None:
    """Refuse, naming the flag that fixes it, a run whose inputs cannot work (checked before any model loads)."""
    if config.triples or config.questions:
        for flag, path in (("--triples", config.triples), ("--questions", config.questions)):
            if path and not pathlib.Path(path).is_file():
                raise UserError(f"{flag} {path}: no such file")
        return
    ds = config.dataset
    if ds.name == "shapes":  # the synthetic world renders its own pictures
        return
    if not ds.data:
        raise UserError(f"--dataset {ds.name} needs --data: its question file or directory (e.g. "
                        f"../shared/data/vseam-gqa for V-SEAM's released GQA subsets)")
    if not pathlib.Path(ds.data).exists():
        raise UserError(f"--data {ds.data}: no such file or directory")
    if not ds.images:
        raise UserError(f"--dataset {ds.name}: stage 1 edits the pictures, so it needs --images DIR (the folder of "
                        f"the dataset's images); or skip stage 1 with --questions FILE or --triples FILE")
    if not pathlib.Path(ds.images).is_dir():
        raise UserError(f"--images {ds.images}: not a directory")


def check_edits(summary, config: CalibrateConfig) -> None:
    """After stage 1's edits: when none was accepted, stop with the real cause and the flag that fixes it."""
    if summary.accepted or not summary.total:
        return
    reasons = sorted({**summary.pending, **summary.rejected}.items(), key=lambda kv: -kv[1])
    causes = "; ".join(f"{n} x {reason}" for reason, n in reasons[:3]) or "no reason recorded"
    hints = []
    text = " ".join(r for r, _ in reasons).lower()
    if "image" in text and ("unreadable" in text or "missing" in text or "not found" in text):
        hints.append(f"check --images {config.dataset.images} (the records' images were not found there)")
    if "inpaint" in text or "diffusion" in text:
        hints.append("these subtypes need the diffusion editor: pass --inpaint-model DIR, or keep other subtypes "
                     "with --subtypes")
    needs_edits = config.stage2.attribute_on != "clean"
    if needs_edits or hints:
        raise UserError(f"stage 1 accepted no edit of the {summary.total} records ({causes})"
                        + (": " + "; ".join(hints) if hints else ""))


# ---- stage 1 -----------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Stage1:
    """What stage 1 hands on: the calibration records, the accepted edits, the Eq-4 triples, and its counts."""

    records: list[VQARecord]
    pairs: list[EditedPair]
    triples: list[Triple]
    counts: dict


def run_stage1(config: CalibrateConfig, run: RunDir, engine, model_dir: pathlib.Path, say: Say = _say,
               pool=None) -> Stage1:
    """Dataset -> counterfactual questions, masks, edits, quality gate -> Eq-4 triples (or what `--triples` /
    `--questions` give instead).

    Runs `vseam.calibrate.edit` into <run>/stage1/edits and `vseam.calibrate.select` into <run>/stage1/triples
    (resumable run dirs of their own). The quality gate's drift check uses the calibrated model's own vision tower
    (the engine already loaded). Records are loaded whole: `--fraction` is stage 2's. `pool`: Ray workers for the
    Eq-4 scoring (`vseam.calibrate.distributed.RayPool`).
    """
    if config.triples:
        triples = load_triples(config.triples)
        return Stage1([t.record for t in triples], [t.pair for t in triples], triples,
                      {"source": str(config.triples), "triples": len(triples)})
    if config.questions:
        records = load_questions(config.questions)
        return Stage1(records, [], [], {"source": str(config.questions), "questions": len(records)})

    from vseam.calibrate.edit import edit_job
    from vseam.calibrate.quality import VisionFeatures
    from vseam.calibrate.select import select_triples, selection_run

    dataset = dataclasses.replace(config.dataset, fraction=None)
    job, loaded = edit_job(dataset, config.edit, run.path("stage1", "edits"), restart=config.restart,
                           features=VisionFeatures.from_engine(engine),
                           extra_config={"vision_model": str(model_dir.resolve())})
    say(loaded.summary())
    if not loaded.records:
        raise UserError(f"dataset {dataset.name}: no usable records ({loaded.summary()})")
    summary = job.run_all(loaded.records)
    say(summary.table())
    check_edits(summary, config)
    wanted = {r.qid: i for i, r in enumerate(loaded.records)}
    pairs = sorted((p for p in job.pairs() if p.record.qid in wanted), key=lambda p: wanted[p.record.qid])
    sel_run = selection_run(run.path("stage1", "triples"), model_dir, restart=config.restart)
    triples, sel = select_triples(engine, pairs, cache=sel_run.log("scores"), batch_size=8,
                                  eq4_filter=not config.no_eq4_filter, pool=pool)
    if config.no_eq4_filter:
        selection = {"eq4_filter": "off (--no-eq4-filter)", "pairs": len(pairs), "kept": len(triples)}
        say(f"--no-eq4-filter: all {len(triples)} edited yes/no pairs are used as triples")
    else:
        say(sel.table())
        selection = {"eq4_per_subtype": sel.per_subtype, "eq4_skipped": sel.skipped, "kept": sel.kept}
    counts = {"records": len(loaded.records), "records_skipped": loaded.skipped, "edits_accepted": summary.accepted,
              "edits_rejected": summary.rejected, "edits_pending": summary.pending,
              "contact_sheet": summary.contact_sheet, **selection}
    return Stage1(loaded.records, pairs, triples, counts)


# ---- stage 2 -----------------------------------------------------------------------------------------------------


def subtype_counts(subtypes: Iterable[str | None]) -> dict[str, int]:
    out: dict[str, int] = {}
    for s in subtypes:
        out[s or "-"] = out.get(s or "-", 0) + 1
    return dict(sorted(out.items()))


@dataclasses.dataclass
class Attributed:
    """Stage 2's inputs: the attributed units, the held-out questions, and the Eq-4 triples among the attributed."""

    questions: list[VQARecord]
    units: list[Unit]
    held: list[VQARecord]
    triples: list[Triple]
    #: `--max-correct`: how many questions the unedited model answered, and which subtypes it got wrong how often
    answered: dict | None = None


def calibration_inputs(config: CalibrateConfig, stage1: Stage1, run: RunDir, say: Say = _say) -> Attributed:
    """The held-out part (`--select-on`), the attributed inputs (`--attribute-on`, `--fraction`), written to the run
    directory; refuses a run with nothing to attribute."""
    cfg = config.stage2
    questions = [r for r in stage1.records if r.is_binary]
    held: list[VQARecord] = []
    if cfg.select_on is not None:
        questions, held = hold_out(questions, cfg.select_on, cfg.seed)
        write_jsonl(run.sub("held_out.jsonl"), held)
        say(f"--select-on {cfg.select_on:g}: {len(held)} calibration questions held out for choosing K and α")
    kept = {question_key(r) for r in questions}
    units = build_units(cfg.attribute_on, questions, stage1.pairs,
                        [t for t in stage1.triples if question_key(t.record) in kept])
    units = subsample(units, cfg.fraction, cfg.seed)
    triples = write_attributed(run, units, stage1.triples)
    counts = subtype_counts(u[0].subtype for u in units)
    say(f"stage 2 on {len(units)} questions ({sum(len(u) for u in units)} inputs, Eq-7 split {cfg.attribute_on}; "
        f"{len(triples)} Eq-4 triples): " + ", ".join(f"{k}={v}" for k, v in counts.items()))
    if not units:
        if cfg.attribute_on == "eq4-pairs":
            raise UserError(
                "no Eq-4 triples to attribute (the model never answers right on a clean image and wrong on its edit); "
                "--attribute-on eq4-pairs needs them. Use --attribute-on clean (the default), more data, or "
                "--no-eq4-filter to debug")
        raise UserError(f"no yes/no calibration questions to attribute ({len(stage1.records)} records loaded)")
    return Attributed(questions, units, held, triples)


def write_attributed(run: RunDir, units: Sequence[Unit], triples: Sequence[Triple]) -> list[Triple]:
    """inputs.jsonl and triples.jsonl of the attributed units (the triples of their questions, returned)."""
    attributed = {u[0].question_key for u in units}
    kept = [t for t in triples if question_key(t.record) in attributed]
    write_jsonl(run.sub("triples.jsonl"), kept)
    write_jsonl(run.sub("inputs.jsonl"), [dataclasses.asdict(i) for u in units for i in u])
    return kept


def sample_correct_units(config: CalibrateConfig, engine, inputs: Attributed, run: RunDir, say: Say = _say,
                         pool=None) -> Attributed:
    """`--max-correct N`: answer every attributed question once with the unedited model (predictions.jsonl), then
    keep every incorrectly answered one and at most N correctly answered ones per subtype (on the workers of
    `pool` when given)."""
    from vseam.calibrate.attribution import HeadAttributor, predict_units
    from vseam.calibrate.inputs import sample_correct

    cfg = config.stage2
    if cfg.max_correct is None:
        return inputs
    log = run.log("predictions", key="key")
    predict_units(HeadAttributor(engine, max_rows=config.max_rows), inputs.units, log, PREDICT_CHUNK, pool=pool)
    correct = {row["key"]: bool(row["correct"]) for row in log}
    units = sample_correct(inputs.units, correct, cfg.max_correct, cfg.seed)
    triples = write_attributed(run, units, inputs.triples)
    wrong = subtype_counts(u[0].subtype for u in units if not all(correct[i.key] for i in u))
    say(f"--max-correct {cfg.max_correct}: {len(units)} of {len(inputs.units)} questions attributed, every one "
        f"answered wrong (" + ", ".join(f"{k}={v}" for k, v in wrong.items()) + ") and at most "
        f"{cfg.max_correct} answered right per subtype")
    answered = {"questions": len(inputs.units), "wrong": wrong, "max_correct": cfg.max_correct}
    return Attributed(inputs.questions, units, inputs.held, triples, answered)


@dataclasses.dataclass
class Scores:
    """Eq-7 scores per group, the method that produced them, and the heads AtP + refine allows (None: all)."""

    groups: dict
    method_label: str
    allowed: np.ndarray | None


def attribute(config: CalibrateConfig, engine, units: Sequence[Unit], run: RunDir, say: Say = _say,
              pool=None) -> Scores:
    """Head attribution (Eq 5-7) of every input into the run directory's logs, then the Eq-7 scores per group.

    `pool`: a `vseam.calibrate.distributed.RayPool` scoring the same chunks on Ray workers (None: this process)."""
    from vseam.calibrate.attribution import HeadAttributor, attribute_units, candidates_from_screen, deltas_from_logs
    from vseam.calibrate.profiles import group_scores

    cfg = config.stage2
    attributor = HeadAttributor(engine, max_rows=config.max_rows)
    shape = (attributor.L, attributor.H)
    method = cfg.resolved_method(attributor.L * attributor.H)
    screen = run.log(f"attribution-{method}", key="key")
    attribute_units(attributor, units, screen, method, cfg.batch, f"head attribution ({method})", pool=pool)
    logs = [screen]
    allowed = None
    method_label = {"exact": "mean-ablation exact", "naive": "mean-ablation naive", "atp": "mean-ablation atp"}[method]
    if method == "atp" and cfg.refine_n() > 0:
        screen_scores = group_scores(units, deltas_from_logs(units, [screen], shape), shape, cfg.per_subtype,
                                     cfg.aggregate)
        cand_path = run.sub("candidates.json")
        candidates = candidates_from_screen(screen_scores, cfg.refine_n())
        if cand_path.exists():
            stored = [tuple(x) for x in json.loads(cand_path.read_text())["heads"]]
            if stored != candidates:
                raise UserError(f"{cand_path}: candidates differ from the recorded screen; the run dir is inconsistent")
        else:
            atomic_write_json(cand_path, {"refine": cfg.refine_n(), "heads": [list(c) for c in candidates]})
        refine = run.log("attribution-refine", key="key")
        attribute_units(attributor, units, refine, "exact", cfg.batch, f"exact refine of {len(candidates)} heads",
                        heads=candidates, pool=pool)
        logs.append(refine)
        allowed = np.zeros(shape, dtype=bool)
        for l, h in candidates:
            allowed[l, h] = True
        method_label = f"mean-ablation atp screen + exact refine of top {cfg.refine_n()}"
    groups = group_scores(units, deltas_from_logs(units, logs, shape), shape, cfg.per_subtype, cfg.aggregate)
    for g, (s, _) in groups.items():
        if s.n_incorrect < MIN_INCORRECT:
            say(f"warning: group {g}: the negative heads rest on {s.n_incorrect} incorrectly answered inputs "
                f"(fewer than {MIN_INCORRECT}); use more calibration questions")
    return Scores(groups, method_label, allowed)


# ---- the whole run -----------------------------------------------------------------------------------------------


@contextlib.contextmanager
def worker_pool(config: CalibrateConfig, model_dir, say: Say = _say):
    """Ray workers for the model passes of a run (Eq-4 scoring, `--max-correct` answers, head attribution, the K / α
    grid) when `--workers N` asks for them (else None: everything runs in this process)."""
    if not config.workers:
        yield None
        return
    from vseam.calibrate.distributed import RayPool, WorkerSpec

    spec = WorkerSpec(model_dir=str(model_dir), dtype=config.dtype, max_rows=config.max_rows, device=config.device)
    with RayPool(spec, config.workers, config.ray_address) as pool:
        where = f"Ray cluster {config.ray_address}" if config.ray_address else "a local Ray"
        say(f"Eq-4 scoring, answers, head attribution and the K / α grid on {config.workers} Ray workers ({where}; "
            f"{pool.spec.device}, {pool.spec.threads} threads each)")
        yield pool


def calibrate(config: CalibrateConfig, say: Say = _say) -> pathlib.Path:
    """Run (or resume) a calibration; returns the run directory (profiles in profiles/, report.md)."""
    import torch

    from vseam.calibrate import report as report_mod
    from vseam.calibrate.patching import ActivationPatcher, patch_triples
    from vseam.calibrate.profiles import write_profiles
    from vseam.calibrate.strength import grid_figure, select_strength
    from vseam.core.engine import HeadEngine
    from vseam.core.families import fingerprint_of
    from vseam.head_profiles import HeadProfile

    t_start = time.time()
    preflight(config)
    if config.workers:
        from vseam.calibrate.distributed import import_ray

        import_ray()  # before any model loads: without Ray, say how to get it
    model_dir, model_ref = resolve_model(config.model)
    cfg = config.stage2
    run = RunDir(config.run_dir(model_ref), config.run_json(model_ref), restart=config.restart)
    say(f"calibrate: run dir {run.root} (created {run.created})")
    fingerprint = fingerprint_of(model_ref)
    engine = HeadEngine.from_pretrained(str(model_dir), dtype=getattr(torch, config.dtype), device=config.device)
    timings: dict[str, float] = {}

    with worker_pool(config, model_dir, say) as pool:
        t0 = time.time()
        stage1 = run_stage1(config, run, engine, model_dir, say, pool=pool)
        timings["stage1_s"] = time.time() - t0
        inputs = sample_correct_units(config, engine, calibration_inputs(config, stage1, run, say), run, say,
                                      pool=pool)

        t0 = time.time()
        patch_summaries = {}
        if cfg.patching and inputs.triples:
            patcher = ActivationPatcher(engine, max_rows=config.max_rows)
            patch_summaries = patch_triples(patcher, inputs.triples, run, cfg.patching, cfg.per_subtype)
        elif cfg.patching:
            say("activation patching skipped: no Eq-4 triples among the attributed questions")
        timings["patching_s"] = time.time() - t0

        t0 = time.time()
        scores = attribute(config, engine, inputs.units, run, say, pool=pool)
        timings["attribution_s"] = time.time() - t0

        chosen = None
        if cfg.select_on is not None:
            t0 = time.time()
            chosen = select_strength(engine, run, scores.groups, inputs.held, fingerprint, cfg, scores.method_label,
                                     config.dataset.name, scores.allowed, say, pool=pool)
            timings["selection_s"] = time.time() - t0
            grid_figure(list(chosen.values()), run.sub("selection.png"))

    paths = write_profiles(run, scores.groups, fingerprint, cfg, scores.method_label, config.dataset.name,
                           scores.allowed, say, chosen=chosen)
    profiles = [HeadProfile.model_validate_json(p.read_text()) for p in paths]

    t0 = time.time()
    by_key = {question_key(r): r for r in inputs.questions}
    overlap_records = [by_key[u[0].question_key] for u in inputs.units]
    overlap = report_mod.head_bbox_overlap(engine, overlap_records, profiles, max_images=config.overlap_images)
    timings["overlap_s"] = time.time() - t0
    timings["total_s"] = time.time() - t_start
    report_mod.write_report(
        run, model=str(model_ref), dataset=config.dataset.name, stage1=stage1.counts,
        counts=subtype_counts(u[0].subtype for u in inputs.units), scores=scores.groups, profiles=profiles, paths=paths,
        patching=patch_summaries, overlap=overlap, timings=timings, method=scores.method_label,
        triples_total=len(stage1.triples), split=cfg.attribute_on, aggregate=cfg.aggregate, selection=chosen,
        min_incorrect=MIN_INCORRECT, triple_counts=subtype_counts(t.record.subtype for t in inputs.triples),
        answered=inputs.answered,
    )
    say(f"wrote {run.path('report.md')}")
    return run.root


__all__ = ["Attributed", "Scores", "Stage1", "attribute", "calibrate", "calibration_inputs", "load_questions",
           "load_triples", "resolve_model", "run_stage1", "subtype_counts"]
