"""`calibrate`: dataset -> stage 1 (edits, Eq-4 triples) -> stage 2 (patching, head attribution) -> head profiles.

Which inputs head attribution scores is `--attribute-on` (`calibrate.inputs`): by default every calibration
question on its clean image, split into D_correct / D_incorrect by the unedited model's answer (the authors' code);
the Eq-4 triples drive activation patching, the logit lens and the Table-14 overlap. `--select-on F` chooses K and
the strength α per profile on a held-out part of the calibration questions (`calibrate.strength`).

A run lives in one directory (`--out`) and can be killed and resumed at any point; the profiles it writes depend
only on the per-input results recorded there, so a resumed run writes byte-identical profiles:

    config.json                   the options that determine the results (`calibrate.rundir.RunDir`)
    run.json                      creation time (the profiles' `created` is pinned to it)
    stage1/                       stage 1's own resumable outputs (edited images, manifest, triple cache)
    triples.jsonl                 the Eq-4 triples of the attributed questions (patching, logit lens)
    inputs.jsonl                  the attributed inputs (image, question, target answer), after `--fraction`
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

import argparse
import dataclasses
import datetime as _dt
import json
import pathlib
import time
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from calibrate.inputs import (AGGREGATES, DEFAULT_AGGREGATE, DEFAULT_SPLIT, SPLIT_NOTES, SPLITS, Unit, build_units,
                              hold_out, question_key, subsample)
from calibrate.records import Triple, VQARecord, read_jsonl, write_jsonl
from calibrate.rundir import DoneLog, RunDir, atomic_write_json
from calibrate.strength import DEFAULT_K_GRID, STRENGTHS, GridResult
from head_profiles import LEVELS, SUBTYPE_LEVEL, Fingerprint, HeadProfile, Provenance, Selection
from vseam.errors import UserError

STAGE2_KEYS = ("method", "refine", "k", "fraction", "seed", "batch", "patching", "name_prefix", "per_subtype",
               "attribute_on", "aggregate", "select_on", "k_grid")
AUTO_EXACT_MAX_HEADS = 256
#: below this many incorrectly answered inputs, a group's negative heads rest on thin evidence (the report warns)
MIN_INCORRECT = 30


# ---- run directory ----------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Run:
    """The calibration run directory: a `calibrate.rundir.RunDir` (config.json, append-only logs) + creation time."""

    rundir: RunDir
    created: str

    @property
    def path(self) -> pathlib.Path:
        return self.rundir.root

    def sub(self, *parts: str) -> pathlib.Path:
        p = self.rundir.path(*parts)
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def log(self, name: str) -> DoneLog:
        return self.rundir.log(name, key="key")


def open_run(path: str | pathlib.Path, config: dict, restart: bool = False) -> Run:
    """Create the run dir or resume it (a different configuration is refused, naming the field; `restart` clears
    the logs). The creation time is recorded once in run.json: profiles carry it, so a resumed run's are identical."""
    rundir = RunDir(path, config, restart=restart)
    meta_path = rundir.path("run.json")
    meta = None
    if meta_path.exists() and not restart:
        try:
            meta = json.loads(meta_path.read_text())
        except json.JSONDecodeError as e:
            raise UserError(f"{meta_path}: not valid JSON ({e.msg}); remove it or use --restart") from None
    if not meta or "created" not in meta:
        meta = {"created": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()}
        atomic_write_json(meta_path, meta)
    return Run(rundir, meta["created"])


# ---- triples ----------------------------------------------------------------------------------------------------


def triple_key(t: Triple) -> str:
    return question_key(t.record)


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


def groups_of(subtype: str | None, per_subtype: bool) -> list[str]:
    """The profile groups a question counts in: its level, optionally its subtype, and `all`."""
    out = []
    level = SUBTYPE_LEVEL.get(subtype or "")
    if level:
        out.append(level)
        if per_subtype:
            out.append(f"{level}/{subtype}")
    out.append("all")
    return out


def group_order(groups) -> list[str]:
    """Levels first (paper order), then per-subtype groups, then `all`."""
    groups = set(groups)
    return [g for g in LEVELS if g in groups and g != "all"] + sorted(g for g in groups if "/" in g) + (
        ["all"] if "all" in groups else [])


# ---- stage 2 ----------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Stage2Config:
    method: str = "auto"  # auto | exact | atp | naive
    refine: int | None = None  # AtP: re-score this many candidates per set and group exactly (None: 3K)
    k: int = 10
    fraction: float = 1.0
    seed: int = 0
    batch: int = 4  # triples per chunk (2 inputs each)
    patching: int = 16  # triples to patch (0: no patching)
    name_prefix: str = "gqa"
    per_subtype: bool = False
    attribute_on: str = DEFAULT_SPLIT  # clean | clean+edited | eq4-pairs (calibrate.inputs)
    aggregate: str = DEFAULT_AGGREGATE  # mean (Eq 7) | gain (released script)
    select_on: float | None = None  # held-out fraction for choosing K and α (None: K = k, α = 1)
    k_grid: tuple[int, ...] = DEFAULT_K_GRID

    def resolved_method(self, num_heads_total: int) -> str:
        if self.method != "auto":
            return self.method
        return "exact" if num_heads_total <= AUTO_EXACT_MAX_HEADS else "atp"

    def refine_n(self) -> int:
        return 3 * self.k if self.refine is None else self.refine


def _load_image(path: str, what: str):
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except (OSError, ValueError) as e:
        raise UserError(f"{what}: cannot read image {path} ({e})") from None


def _images_of(chunk: Sequence[Unit]):
    inputs = [inp for unit in chunk for inp in unit]
    images = [_load_image(inp.image, f"input {inp.key}") for inp in inputs]
    return inputs, images


def _chunks(units: Sequence[Unit], size: int) -> list[list[Unit]]:
    return [list(units[i : i + size]) for i in range(0, len(units), size)]


def _progress(total: int, desc: str, unit: str = "question"):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True, leave=True)


def attribute_all(
    attributor, units: Sequence[Unit], log: DoneLog, method: str, batch: int, desc: str,
    heads: Sequence[tuple[int, int]] | None = None,
) -> None:
    """Score every input of every unit with `method` (heads: exact re-scoring of candidates only)."""
    bar = _progress(len(units), desc)
    for chunk in _chunks(units, batch):
        keys = [inp.key for unit in chunk for inp in unit]
        if all(k in log for k in keys):
            bar.update(len(chunk))
            continue
        inputs, images = _images_of(chunk)
        questions, answers = [i.question for i in inputs], [i.answer for i in inputs]
        if heads is not None:
            base, delta = attributor.exact(images, questions, answers, heads=heads)
        else:
            base, delta = attributor.score(method, images, questions, answers)
        items = []
        for i, inp in enumerate(inputs):
            item = {
                "key": inp.key,
                "question": inp.question_key,
                "role": inp.role,
                "subtype": inp.subtype,
                "answer": inp.answer,
                "p": float(base.p[i]),
                "pred": base.preds[i],
                "correct": bool(base.correct[i]),
            }
            if heads is None:
                item["delta"] = delta[i].tolist()
            else:
                item["heads"] = [[l, h, float(delta[i, l, h])] for l, h in heads]
            items.append(item)
        for item in items:  # a chunk cut short by a kill is recomputed whole (same batch), only new rows are logged
            if item["key"] not in log:
                log.append(item)
        bar.update(len(chunk))
    bar.close()


def _deltas(units: Sequence[Unit], logs: Sequence[DoneLog], shape) -> dict[str, tuple[bool, np.ndarray]]:
    """key -> (correct, Δp [L, H]) with refined entries (if a refine log is given) replacing screen values."""
    screen = logs[0]
    refine = logs[1] if len(logs) > 1 else None
    out = {}
    for unit in units:
        for inp in unit:
            item = screen.get(inp.key)
            if item is None:
                raise RuntimeError(f"no attribution result for {inp.key} in {screen.path}")
            d = np.asarray(item["delta"], dtype=np.float64).reshape(shape)
            if refine is not None:
                r = refine.get(inp.key)
                if r is None:
                    raise RuntimeError(f"no refined result for {inp.key} in {refine.path}")
                for l, h, v in r["heads"]:
                    d[int(l), int(h)] = v
            out[inp.key] = (bool(item["correct"]), d)
    return out


def group_scores(units: Sequence[Unit], deltas: dict, shape, per_subtype: bool, aggregate: str = "mean"
                 ) -> dict[str, Any]:
    """group -> (Eq-7 HeadScores, subtypes) over the inputs of the group's questions."""
    from calibrate.profiles import aggregate as eq7

    members: dict[str, list] = {}
    subtypes: dict[str, set] = {}
    for unit in units:
        subtype = unit[0].subtype
        for g in groups_of(subtype, per_subtype):
            for inp in unit:
                members.setdefault(g, []).append(deltas[inp.key])
            if subtype:
                subtypes.setdefault(g, set()).add(subtype)
    return {g: (eq7(members[g], shape, aggregate), sorted(subtypes.get(g, set()))) for g in group_order(members)}


def candidates_from_screen(scores: dict[str, Any], n: int) -> list[tuple[int, int]]:
    """Union over groups of the top-n heads by −c_correct and by c_incorrect (AtP estimates)."""
    from calibrate.attribution import top_heads

    chosen: set[tuple[int, int]] = set()
    for s, _ in scores.values():
        if s.n_correct:
            chosen.update(top_heads(s.c_correct, n, sign=-1.0))
        if s.n_incorrect:
            chosen.update(top_heads(s.c_incorrect, n, sign=1.0))
    return sorted(chosen)


def _provenance(run: Run, cfg: Stage2Config, method_label: str, dataset: str) -> Provenance:
    from vseam import __version__

    return Provenance(
        method=method_label,
        dataset=dataset,
        fraction=cfg.fraction,
        seed=cfg.seed,
        tool_version=__version__,
        created=run.created,
        notes=SPLIT_NOTES[cfg.attribute_on],
        split=cfg.attribute_on,
        aggregate=cfg.aggregate,
    )


def profile_name(cfg: Stage2Config, group: str) -> str:
    return f"{cfg.name_prefix}-{group.replace('/', '-')}"


def write_profiles(
    run: Run, scores: dict[str, Any], fingerprint: Fingerprint, cfg: Stage2Config, method_label: str,
    dataset: str, allowed: np.ndarray | None, say: Callable[[str], None],
    chosen: dict[str, GridResult] | None = None,
) -> list[pathlib.Path]:
    """One profile per group: K = cfg.k at α = 1 (Eq 10), or the held-out choice of `chosen` (`--select-on`),
    which also writes the fixed-K, α = 1 profile under profiles/paper/."""
    from calibrate.profiles import EmptyProfileError, build_profile

    written, reasons = [], []
    for stale in sorted(run.path.joinpath("profiles").rglob("*.json")):  # e.g. from before --restart
        stale.unlink()
    pv = _provenance(run, cfg, method_label, dataset)
    for group, (s, subtypes) in scores.items():
        level = group.split("/")[0]
        name = profile_name(cfg, group)
        grid = (chosen or {}).get(group)
        try:
            if grid is None:
                profile = build_profile(name, fingerprint, level, subtypes, s, pv, k=cfg.k, allowed=allowed)
            else:
                sel = Selection(held_out_fraction=cfg.select_on, held_out_questions=grid.n, k_grid=list(cfg.k_grid),
                                strength_grid=list(STRENGTHS), accuracy_unedited=grid.unedited,
                                accuracy_chosen=grid.chosen.accuracy)
                profile = build_profile(name, fingerprint, level, subtypes, s,
                                        pv.model_copy(update={"selection": sel}), k=grid.chosen.k, allowed=allowed)
                profile = profile.model_copy(update={"strength": grid.chosen.strength})
                paper = build_profile(f"{name}-paper", fingerprint, level, subtypes, s, pv, k=cfg.k, allowed=allowed)
                paper.save(run.sub("profiles", "paper", f"{name}.json"))
        except EmptyProfileError as e:
            reasons.append(str(e))
            say(f"skipped {e}")
            continue
        written.append(profile.save(run.sub("profiles", f"{name}.json")))
        how = "" if grid is None else f"; K={grid.chosen.k}, α={grid.chosen.strength:g} chosen on {grid.n} held-out"
        say(
            f"wrote {written[-1]} ({len(profile.positive)} positive, {len(profile.negative)} negative heads; "
            f"n_correct={s.n_correct}, n_incorrect={s.n_incorrect}{how})"
        )
    if not written:
        raise UserError("no profile written: " + ("; ".join(reasons) or "no attributed inputs"))
    return written


def select_strength(engine, run: Run, scores: dict[str, Any], held: Sequence[VQARecord], fingerprint: Fingerprint,
                    cfg: Stage2Config, method_label: str, dataset: str, allowed: np.ndarray | None,
                    say: Callable[[str], None]) -> dict[str, GridResult]:
    """`--select-on`: per group, held-out accuracy of every (K, α); the chosen candidate (`calibrate.strength`)."""
    from calibrate.profiles import EmptyProfileError, build_profile
    from calibrate.strength import choose

    pv = _provenance(run, cfg, method_label, dataset)
    log = run.log("selection")
    out: dict[str, GridResult] = {}
    for group, (s, subtypes) in scores.items():
        members = [r for r in held if group in groups_of(r.subtype, cfg.per_subtype)]
        if not members:
            say(f"--select-on: no held-out question in group {group}; it keeps K={cfg.k}, α=1")
            continue
        profiles = {}
        for k in cfg.k_grid:
            try:
                profiles[k] = build_profile(profile_name(cfg, group), fingerprint, group.split("/")[0], subtypes, s,
                                            pv, k=k, allowed=allowed)
            except EmptyProfileError:
                break  # no head qualifies at any K
        if not profiles:
            continue
        bar = _progress(1 + len(profiles) * (len(STRENGTHS) - 1), f"select K, α ({group}, {len(members)} held out)",
                        unit="candidate")
        res = choose(engine, group, members, profiles, log, on_progress=lambda: bar.update(1))
        bar.close()
        out[group] = res
        say(f"{group}: held-out accuracy {res.unedited:.3f} unedited, {res.chosen.accuracy:.3f} with K={res.chosen.k} "
            f"α={res.chosen.strength:g} ({len(members)} questions)")
    return out


def run_patching(patcher, triples: Sequence[Triple], run: Run, limit: int, per_subtype: bool) -> dict:
    from calibrate.patching import PatchResult, heatmap, lens_figure, save_arrays, summarise, write_lens_table

    chosen = list(triples)[:limit]
    if not chosen:
        return {}
    log = run.log("patching")
    bar = _progress(len(chosen), "activation patching")
    for t in chosen:
        key = triple_key(t)
        if key not in log:
            clean = _load_image(t.pair.clean_image, f"triple {key} (clean)")
            edited = _load_image(t.pair.edited_image, f"triple {key} (edited)")
            res = patcher.patch(clean, edited, t.record.question, t.record.answer)
            log.append({"key": key, "subtype": t.record.subtype, **res.to_json()})
        bar.update(1)
    bar.close()
    results = [(triple_key(t), PatchResult.from_json(log.get(triple_key(t)))) for t in chosen]
    by_group: dict[str, list] = {}
    for t, (key, res) in zip(chosen, results):
        for g in groups_of(t.record.subtype, per_subtype):
            by_group.setdefault(g, []).append((key, res))
    out = {}
    for g in group_order(by_group):
        items = by_group[g]
        summary = summarise([r for _, r in items])
        slug = g.replace("/", "-")
        save_arrays(summary, run.sub("patching", f"{slug}.npz"), keys=[k for k, _ in items])
        heatmap(summary, run.sub("patching", f"{slug}.png"), title=f"activation patching: {g} ({summary.n} triples)")
        out[g] = summary
    write_lens_table(results, run.sub("patching", "logit_lens.tsv"))
    for i, (key, res) in enumerate(results[:3]):
        lens_figure(res, run.sub("patching", f"lens_{i}.png"), title=f"logit lens, {key}")
    return out


# ---- the command ------------------------------------------------------------------------------------------------


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Stage 1's dataset and editing flags (shared with `vseam edit`) plus the stage-2 flags."""
    from calibrate.cli import add_dataset_arguments, add_edit_arguments

    add_dataset_arguments(p)
    add_edit_arguments(p)
    for action in p._actions:  # the same flags mean slightly different things here
        if action.dest == "model":
            action.required = True
            action.help = ("llava | instructblip (the hub models, from the local HF cache) or a checkpoint "
                           "directory; also scores edit drift in the quality gate")
        elif action.dest == "fraction":
            action.default = 1.0
            action.help = "stage 2: attribute a seeded random fraction of the calibration questions (Table 4 studies)"
        elif action.dest == "seed":
            action.help = "seed of the record sampling and of --fraction (default 0)"
    g = p.add_argument_group("stage 2: patching, head attribution, profiles")
    g.add_argument("--out", help="run directory (created, or resumed); default runs/<dataset>-<model>")
    g.add_argument("--triples", help="skip stage 1: a triples.jsonl (e.g. from another run); its questions are the "
                                     "calibration questions")
    g.add_argument("--questions", help="skip stage 1: a JSONL of question records (clean images) to calibrate on; "
                                       "no edits, so no Eq-4 triples and no patching")
    g.add_argument("--attribute-on", choices=SPLITS, default=DEFAULT_SPLIT,
                   help="Eq-7 inputs: clean (default, the authors' split: every question on its clean image, "
                        "target = its answer, D_correct/D_incorrect by the unedited model's answer), clean+edited "
                        "(also each edited image against its own true answer), eq4-pairs (both images of each "
                        "Eq-4 triple against the clean answer: the heads that read the edited region)")
    g.add_argument("--aggregate", choices=AGGREGATES, default=DEFAULT_AGGREGATE,
                   help="Eq 7: mean (the paper's signed mean, default) or gain (the released script: only drops on "
                        "D_correct, only gains on D_incorrect)")
    g.add_argument("--select-on", type=float, metavar="F",
                   help="hold out a seeded fraction F of the calibration questions and choose K (from --k-grid) "
                        "and the strength α (0, .25, .5, .75, 1) per profile by accuracy on them; without it "
                        "K = -k and α = 1 (the paper)")
    g.add_argument("--k-grid", type=_ints, default=DEFAULT_K_GRID, metavar="K,K,...",
                   help=f"--select-on: the K values tried (default {','.join(map(str, DEFAULT_K_GRID))})")
    g.add_argument(
        "--method", default="auto", choices=["auto", "exact", "atp", "naive"],
        help=f"head attribution: exact engine, AtP screen (+ --refine), naive loop; auto = exact up to "
        f"{AUTO_EXACT_MAX_HEADS} heads, else atp",
    )
    g.add_argument("--refine", type=int, help="atp: re-score the top N heads per set and group exactly (default 3K; 0 = off)")
    g.add_argument("--k", "-k", type=int, default=10, help="top-K positive and negative heads per profile")
    g.add_argument("--batch", type=int, default=4, help="questions per attribution batch")
    g.add_argument("--max-rows", type=int, default=32,
                   help="rows (input x ablated head, or patched position) per replay batch; lower it to save memory")
    g.add_argument("--patching", type=int, default=16, help="activation-patch this many triples (0 = skip)")
    g.add_argument("--name-prefix", help="profile names are <prefix>-<level>; default: the dataset name")
    g.add_argument("--per-subtype", action="store_true", help="also write one profile per subtype (Table 13)")
    g.add_argument("--overlap-triples", type=int, default=32,
                   help="clean images (attributed questions with boxes) used for the head/bbox overlap table")
    g.add_argument(
        "--no-eq4-filter", action="store_true",
        help="debugging: keep every edited pair as a triple, even when the edit does not flip the model",
    )
    g.add_argument("--restart", action="store_true", help="discard the run dir's recorded results and start over")
    g.add_argument("--device", default="cpu")
    g.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])


def _ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(sorted({int(t) for t in text.split(",") if t.strip()}))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"K values must be >= 1, got {text!r}")
    return values


def resolve_model(model: str) -> tuple[pathlib.Path, str]:
    from vseam.families import DEFAULT_MODEL_IDS, resolve_model_dir

    target = DEFAULT_MODEL_IDS.get(model, model)
    try:
        return resolve_model_dir(target), target
    except FileNotFoundError as e:
        hint = " (download it into the Hugging Face cache first)" if model in DEFAULT_MODEL_IDS else ""
        raise UserError(f"--model {model}: {e}{hint}") from None


def stage2_config(args) -> Stage2Config:
    if args.k < 1:
        raise UserError(f"--k must be >= 1, got {args.k}")
    if args.batch < 1:
        raise UserError(f"--batch must be >= 1, got {args.batch}")
    if args.refine is not None and args.refine < 0:
        raise UserError(f"--refine must be >= 0, got {args.refine}")
    if not 0 < args.fraction <= 1:
        raise UserError(f"--fraction must be in (0, 1], got {args.fraction}")
    if args.select_on is not None and not 0 < args.select_on < 1:
        raise UserError(f"--select-on must be in (0, 1), got {args.select_on}")
    return Stage2Config(
        method=args.method,
        refine=args.refine,
        k=args.k,
        fraction=args.fraction,
        seed=args.seed,
        batch=args.batch,
        patching=max(0, args.patching),
        name_prefix=args.name_prefix or args.dataset,
        per_subtype=args.per_subtype,
        attribute_on=args.attribute_on,
        aggregate=args.aggregate,
        select_on=args.select_on,
        k_grid=tuple(args.k_grid) if args.select_on is not None else (),
    )


def cmd_calibrate(args) -> int:
    import torch

    from calibrate import report as report_mod
    from calibrate.attribution import HeadAttributor
    from calibrate.patching import ActivationPatcher
    from vseam.engine import HeadEngine
    from vseam.families import fingerprint_of

    t_start = time.time()
    model_dir, model_ref = resolve_model(args.model)
    cfg = stage2_config(args)
    out = args.out or f"runs/{args.dataset}-{pathlib.Path(str(model_ref)).name}"
    config = {k: getattr(cfg, k) for k in STAGE2_KEYS}
    config["k_grid"] = list(cfg.k_grid)
    if args.triples and args.questions:
        raise UserError("--triples and --questions both replace stage 1; give one of them")
    config.update(dataset=args.dataset, model=str(model_ref), triples=args.triples, questions=args.questions,
                  limit=args.limit,
                  no_eq4_filter=bool(args.no_eq4_filter))
    run = open_run(out, config, restart=args.restart)

    def say(msg: str) -> None:
        print(msg, flush=True)

    say(f"calibrate: run dir {run.path} (created {run.created})")
    fingerprint = fingerprint_of(model_ref)
    dtype = getattr(torch, args.dtype)
    engine = HeadEngine.from_pretrained(str(model_dir), dtype=dtype, device=args.device)
    timings: dict[str, float] = {}

    # ---- stage 1 ----
    t0 = time.time()
    if args.triples:
        all_triples = load_triples(args.triples)
        records, pairs = [t.record for t in all_triples], [t.pair for t in all_triples]
        stage1 = {"source": str(args.triples), "triples": len(all_triples)}
    elif args.questions:
        records, pairs, all_triples = load_questions(args.questions), [], []
        stage1 = {"source": str(args.questions), "questions": len(records)}
    else:
        records, pairs, all_triples, stage1 = run_stage1(args, run, engine, model_dir, say)
    timings["stage1_s"] = time.time() - t0

    # ---- the calibration questions: held-out part (--select-on), attributed inputs (--fraction) ----
    questions = [r for r in records if r.is_binary]
    held: list[VQARecord] = []
    if cfg.select_on is not None:
        questions, held = hold_out(questions, cfg.select_on, cfg.seed)
        write_jsonl(run.sub("held_out.jsonl"), held)
        say(f"--select-on {cfg.select_on:g}: {len(held)} calibration questions held out for choosing K and α")
    kept = {question_key(r) for r in questions}
    units = build_units(cfg.attribute_on, questions, pairs, [t for t in all_triples if question_key(t.record) in kept])
    units = subsample(units, cfg.fraction, cfg.seed)
    attributed = {u[0].question_key for u in units}
    triples = [t for t in all_triples if triple_key(t) in attributed]
    write_jsonl(run.sub("triples.jsonl"), triples)
    write_jsonl(run.sub("inputs.jsonl"), [dataclasses.asdict(i) for u in units for i in u])
    counts = _subtype_counts(u[0].subtype for u in units)
    say(f"stage 2 on {len(units)} questions ({sum(len(u) for u in units)} inputs, Eq-7 split {cfg.attribute_on}; "
        f"{len(triples)} Eq-4 triples): " + ", ".join(f"{k}={v}" for k, v in counts.items()))
    if not units:
        if cfg.attribute_on == "eq4-pairs":
            raise UserError(
                "no Eq-4 triples to attribute (the model never answers right on a clean image and wrong on its edit); "
                "--attribute-on eq4-pairs needs them. Use --attribute-on clean (the default), more data, or "
                "--no-eq4-filter to debug")
        raise UserError(f"no yes/no calibration questions to attribute ({len(records)} records loaded)")

    # ---- stage 2: patching ----
    t0 = time.time()
    patch_summaries = {}
    if cfg.patching and triples:
        patcher = ActivationPatcher(engine, max_rows=args.max_rows)
        patch_summaries = run_patching(patcher, triples, run, cfg.patching, cfg.per_subtype)
    elif cfg.patching:
        say("activation patching skipped: no Eq-4 triples among the attributed questions")
    timings["patching_s"] = time.time() - t0

    # ---- stage 2: attribution ----
    t0 = time.time()
    attributor = HeadAttributor(engine, max_rows=args.max_rows)
    shape = (attributor.L, attributor.H)
    method = cfg.resolved_method(attributor.L * attributor.H)
    screen = run.log(f"attribution-{method}")
    attribute_all(attributor, units, screen, method, cfg.batch, f"head attribution ({method})")
    logs = [screen]
    allowed = None
    method_label = {"exact": "mean-ablation exact", "naive": "mean-ablation naive", "atp": "mean-ablation atp"}[method]
    if method == "atp" and cfg.refine_n() > 0:
        screen_scores = group_scores(units, _deltas(units, [screen], shape), shape, cfg.per_subtype, cfg.aggregate)
        cand_path = run.sub("candidates.json")
        candidates = candidates_from_screen(screen_scores, cfg.refine_n())
        if cand_path.exists():
            stored = [tuple(x) for x in json.loads(cand_path.read_text())["heads"]]
            if stored != candidates:
                raise UserError(f"{cand_path}: candidates differ from the recorded screen; the run dir is inconsistent")
        else:
            atomic_write_json(cand_path, {"refine": cfg.refine_n(), "heads": [list(c) for c in candidates]})
        refine = run.log("attribution-refine")
        attribute_all(attributor, units, refine, "exact", cfg.batch, f"exact refine of {len(candidates)} heads",
                      heads=candidates)
        logs.append(refine)
        allowed = np.zeros(shape, dtype=bool)
        for l, h in candidates:
            allowed[l, h] = True
        method_label = f"mean-ablation atp screen + exact refine of top {cfg.refine_n()}"
    timings["attribution_s"] = time.time() - t0
    scores = group_scores(units, _deltas(units, logs, shape), shape, cfg.per_subtype, cfg.aggregate)
    for g, (s, _) in scores.items():
        if s.n_incorrect < MIN_INCORRECT:
            say(f"warning: group {g}: the negative heads rest on {s.n_incorrect} incorrectly answered inputs "
                f"(fewer than {MIN_INCORRECT}); use more calibration questions")

    # ---- K and strength on the held-out part ----
    chosen = None
    if cfg.select_on is not None:
        t0 = time.time()
        chosen = select_strength(engine, run, scores, held, fingerprint, cfg, method_label, args.dataset, allowed, say)
        timings["selection_s"] = time.time() - t0
        from calibrate.strength import grid_figure

        grid_figure(list(chosen.values()), run.sub("selection.png"))

    # ---- profiles ----
    paths = write_profiles(run, scores, fingerprint, cfg, method_label, args.dataset, allowed, say, chosen=chosen)
    profiles = [HeadProfile.model_validate_json(p.read_text()) for p in paths]

    # ---- report ----
    t0 = time.time()
    by_key = {question_key(r): r for r in questions}
    overlap_records = [by_key[u[0].question_key] for u in units]
    overlap = report_mod.head_bbox_overlap(engine, overlap_records, profiles, max_images=args.overlap_triples)
    timings["overlap_s"] = time.time() - t0
    timings["total_s"] = time.time() - t_start
    report_mod.write_report(
        run, model=str(model_ref), dataset=args.dataset, stage1=stage1, counts=counts, scores=scores,
        profiles=profiles, paths=paths, patching=patch_summaries, overlap=overlap, timings=timings, method=method_label,
        triples_total=len(all_triples), split=cfg.attribute_on, aggregate=cfg.aggregate,
        selection=chosen, min_incorrect=MIN_INCORRECT, triple_counts=_subtype_counts(t.record.subtype for t in triples),
    )
    say(f"wrote {run.path / 'report.md'}")
    return 0


def _subtype_counts(subtypes: Iterable[str | None]) -> dict[str, int]:
    out: dict[str, int] = {}
    for s in subtypes:
        out[s or "-"] = out.get(s or "-", 0) + 1
    return dict(sorted(out.items()))


def run_stage1(args, run: Run, engine, model_dir: pathlib.Path, say
               ) -> tuple[list[VQARecord], list, list[Triple], dict]:
    """Stage 1: dataset -> counterfactual questions, masks, edits, quality gate -> Eq-4 triples.

    Runs `calibrate.edit.EditJob` into <run>/stage1/edits and `calibrate.select` into <run>/stage1/triples (both
    resumable run dirs of their own). The quality gate's feature-drift check uses the calibrated model's own
    vision tower (the engine already loaded). `--fraction` is left to stage 2. Returns (records, accepted edited
    pairs, Eq-4 triples, stage-1 counts).
    """
    from calibrate.cli import edit_job_from_args
    from calibrate.quality import VisionFeatures
    from calibrate.select import score_pairs, select_triples, selection_run

    edit_args = argparse.Namespace(**{**vars(args), "fraction": None, "model": None})
    job, loaded = edit_job_from_args(edit_args, run.path / "stage1" / "edits",
                                     extra_config={"vision_model": str(model_dir.resolve())})
    job.features = VisionFeatures.from_engine(engine)
    say(loaded.summary())
    if not loaded.records:
        raise UserError(f"dataset {args.dataset}: no usable records ({loaded.summary()})")
    summary = job.run_all(loaded.records)
    say(summary.table())
    wanted = {r.qid: i for i, r in enumerate(loaded.records)}
    pairs = sorted((p for p in job.pairs() if p.record.qid in wanted), key=lambda p: wanted[p.record.qid])
    sel_run = selection_run(run.path / "stage1" / "triples", model_dir, restart=args.restart)
    if args.no_eq4_filter:
        res = score_pairs(engine, pairs, sel_run.log("scores"), batch_size=8, progress=True)
        triples = []
        for key, p in zip(res["keys"], pairs):
            if p.record.answer not in ("yes", "no"):
                continue
            sc, y = res["scores"][key], p.record.answer
            pred = lambda role: "yes" if sc[f"p_yes_{role}"] >= sc[f"p_no_{role}"] else "no"  # noqa: E731
            triples.append(Triple(p, float(sc[f"p_{y}_clean"]), float(sc[f"p_{y}_edited"]), pred("clean"), pred("edited")))
        selection = {"eq4_filter": "off (--no-eq4-filter)", "pairs": len(pairs), "kept": len(triples)}
        say(f"--no-eq4-filter: all {len(triples)} edited yes/no pairs are used as triples")
    else:
        triples, sel = select_triples(engine, pairs, cache=sel_run.log("scores"), batch_size=8)
        say(sel.table())
        selection = {"eq4_per_subtype": sel.per_subtype, "eq4_skipped": sel.skipped, "kept": sel.kept}
    stage1 = {
        "records": len(loaded.records),
        "records_skipped": loaded.skipped,
        "edits_accepted": summary.accepted,
        "edits_rejected": summary.rejected,
        "edits_pending": summary.pending,
        "contact_sheet": summary.contact_sheet,
        **selection,
    }
    return loaded.records, pairs, triples, stage1


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="calibrate", description="V-SEAM calibration: dataset -> edits -> Eq-4 triples -> head profiles"
    )
    add_arguments(p)
    p.set_defaults(func=cmd_calibrate)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from vseam.cli import run as run_command

    args = build_parser().parse_args(argv)
    return run_command(args.func, args)


if __name__ == "__main__":
    raise SystemExit(main())
