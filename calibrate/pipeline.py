"""`calibrate`: dataset -> stage 1 (edits, Eq-4 triples) -> stage 2 (patching, head attribution) -> head profiles.

A run lives in one directory (`--out`) and can be killed and resumed at any point; the profiles it writes depend
only on the per-triple results recorded there, so a resumed run writes byte-identical profiles:

    config.json                   the options that determine the results (`calibrate.rundir.RunDir`)
    run.json                      creation time (the profiles' `created` is pinned to it)
    stage1/                       stage 1's own resumable outputs (edited images, manifest, triple cache)
    triples.jsonl                 the Eq-4 triples stage 2 works on (after `--fraction`)
    attribution-<method>.jsonl    per attributed input: prediction, P(y), Δp for every head (append-only)
    candidates.json               AtP screen: the heads re-scored exactly (`--refine N`)
    attribution-refine.jsonl      per input: exact Δp of the candidates
    patching.jsonl                per patched triple: Δlogit [module, layer, row] and the logit lens
    patching/<group>.npz|png      Eq 3 arrays and heatmaps; logit_lens.tsv, lens_<n>.png
    profiles/<prefix>-<level>.json  one profile per semantic level (attribute, object, relation) and `all`
    report.md, report.json        counts, chosen heads, head/bbox attention overlap (Table 14), timings

Per-input work is done in fixed chunks of the triple list, so a resumed run batches exactly as an uninterrupted one.
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

from calibrate.records import Triple, read_jsonl
from calibrate.rundir import DoneLog, RunDir, atomic_write_json
from head_profiles import LEVELS, SUBTYPE_LEVEL, Fingerprint, HeadProfile, Provenance
from vseam.errors import UserError

STAGE2_KEYS = ("method", "refine", "k", "fraction", "seed", "batch", "patching", "name_prefix", "per_subtype")
AUTO_EXACT_MAX_HEADS = 256
ROLES = ("clean", "edited")


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
    return f"{t.record.dataset}:{t.record.qid}"


def subsample(triples: Sequence[Triple], fraction: float, seed: int) -> list[Triple]:
    """`--fraction`: a seeded random subset (at least one triple), kept in the original order (Table 4 studies)."""
    if not 0 < fraction <= 1:
        raise UserError(f"--fraction must be in (0, 1], got {fraction}")
    if fraction >= 1 or not triples:
        return list(triples)
    n = max(1, int(round(fraction * len(triples))))
    keep = set(np.random.RandomState(seed).permutation(len(triples))[:n].tolist())
    return [t for i, t in enumerate(triples) if i in keep]


def load_triples(path: str | pathlib.Path) -> list[Triple]:
    path = pathlib.Path(path)
    if not path.is_file():
        raise UserError(f"--triples {path}: no such file")
    try:
        triples = read_jsonl(path, Triple)
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise UserError(f"--triples {path}: not a JSONL file of triples ({e})") from None
    seen = set()
    for i, t in enumerate(triples):
        if t.record.answer not in ("yes", "no"):
            raise UserError(f"--triples {path}: line {i + 1} ({t.record.qid}) has answer {t.record.answer!r}, need yes/no")
        k = triple_key(t)
        if k in seen:
            raise UserError(f"--triples {path}: line {i + 1}: duplicate question id {k}")
        seen.add(k)
    return triples


def groups_of(t: Triple, per_subtype: bool) -> list[str]:
    """The profile groups a triple counts in: its level, optionally its subtype, and `all`."""
    out = []
    level = SUBTYPE_LEVEL.get(t.record.subtype or "")
    if level:
        out.append(level)
        if per_subtype:
            out.append(f"{level}/{t.record.subtype}")
    out.append("all")
    return out


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


def _inputs_of(chunk: Sequence[tuple[int, Triple]]):
    """Attributed inputs of a chunk: every triple's clean and edited image, target = the clean answer y."""
    keys, images, questions, answers, meta = [], [], [], [], []
    for _, t in chunk:
        for role in ROLES:
            path = t.pair.clean_image if role == "clean" else t.pair.edited_image
            keys.append(f"{triple_key(t)}:{role}")
            images.append(_load_image(path, f"triple {triple_key(t)} ({role})"))
            questions.append(t.record.question)
            answers.append(t.record.answer)
            meta.append({"triple": triple_key(t), "role": role, "subtype": t.record.subtype})
    return keys, images, questions, answers, meta


def _chunks(triples: Sequence[Triple], size: int) -> list[list[tuple[int, Triple]]]:
    indexed = list(enumerate(triples))
    return [indexed[i : i + size] for i in range(0, len(indexed), size)]


def _progress(total: int, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="triple", dynamic_ncols=True, leave=True)


def attribute_all(
    attributor, triples: Sequence[Triple], log: DoneLog, method: str, batch: int, desc: str,
    heads: Sequence[tuple[int, int]] | None = None,
) -> None:
    """Score every input of every triple with `method` (heads: exact re-scoring of candidates only)."""
    chunks = _chunks(triples, batch)
    bar = _progress(len(triples), desc)
    for chunk in chunks:
        keys = [f"{triple_key(t)}:{r}" for _, t in chunk for r in ROLES]
        if all(k in log for k in keys):
            bar.update(len(chunk))
            continue
        _, images, questions, answers, meta = _inputs_of(chunk)
        if heads is not None:
            base, delta = attributor.exact(images, questions, answers, heads=heads)
        else:
            base, delta = attributor.score(method, images, questions, answers)
        items = []
        for i, key in enumerate(keys):
            item = {
                "key": key,
                **meta[i],
                "answer": answers[i],
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


def _deltas(triples: Sequence[Triple], logs: Sequence[DoneLog], shape) -> dict[str, tuple[bool, np.ndarray]]:
    """key -> (correct, Δp [L, H]) with refined entries (if a refine log is given) replacing screen values."""
    screen = logs[0]
    refine = logs[1] if len(logs) > 1 else None
    out = {}
    for t in triples:
        for role in ROLES:
            key = f"{triple_key(t)}:{role}"
            item = screen.get(key)
            if item is None:
                raise RuntimeError(f"no attribution result for {key} in {screen.path}")
            d = np.asarray(item["delta"], dtype=np.float64).reshape(shape)
            if refine is not None:
                r = refine.get(key)
                if r is None:
                    raise RuntimeError(f"no refined result for {key} in {refine.path}")
                for l, h, v in r["heads"]:
                    d[int(l), int(h)] = v
            out[key] = (bool(item["correct"]), d)
    return out


def group_scores(triples: Sequence[Triple], deltas: dict, shape, per_subtype: bool) -> dict[str, Any]:
    from calibrate.profiles import aggregate

    members: dict[str, list] = {}
    subtypes: dict[str, set] = {}
    for t in triples:
        for g in groups_of(t, per_subtype):
            for role in ROLES:
                members.setdefault(g, []).append(deltas[f"{triple_key(t)}:{role}"])
            if t.record.subtype:
                subtypes.setdefault(g, set()).add(t.record.subtype)
    order = [g for g in LEVELS if g in members and g != "all"] + sorted(g for g in members if "/" in g) + ["all"]
    return {g: (aggregate(members[g], shape), sorted(subtypes.get(g, set()))) for g in order if g in members}


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


def write_profiles(
    run: Run, scores: dict[str, Any], fingerprint: Fingerprint, cfg: Stage2Config, method_label: str,
    dataset: str, allowed: np.ndarray | None, say: Callable[[str], None],
) -> list[pathlib.Path]:
    from calibrate.profiles import SPLIT_NOTE, EmptyProfileError, build_profile
    from vseam import __version__

    written, reasons = [], []
    for stale in sorted(run.path.joinpath("profiles").glob("*.json")):  # e.g. from before --restart
        stale.unlink()
    for group, (s, subtypes) in scores.items():
        level = group.split("/")[0]
        name = f"{cfg.name_prefix}-{group.replace('/', '-')}"
        pv = Provenance(
            method=method_label,
            dataset=dataset,
            fraction=cfg.fraction,
            seed=cfg.seed,
            tool_version=__version__,
            created=run.created,
            notes=SPLIT_NOTE,
        )
        try:
            profile = build_profile(name, fingerprint, level, subtypes, s, pv, k=cfg.k, allowed=allowed)
        except EmptyProfileError as e:
            reasons.append(str(e))
            say(f"skipped {e}")
            continue
        written.append(profile.save(run.sub("profiles", f"{name}.json")))
        say(
            f"wrote {written[-1]} ({len(profile.positive)} positive, {len(profile.negative)} negative heads; "
            f"n_correct={s.n_correct}, n_incorrect={s.n_incorrect})"
        )
    if not written:
        raise UserError("no profile written: " + ("; ".join(reasons) or "no triples"))
    return written


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
        for g in groups_of(t, per_subtype):
            by_group.setdefault(g, []).append((key, res))
    out = {}
    order = [g for g in LEVELS if g in by_group and g != "all"] + sorted(g for g in by_group if "/" in g) + ["all"]
    for g in order:
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
            action.help = "stage 2: attribute a seeded random fraction of the Eq-4 triples (Table 4 studies)"
        elif action.dest == "seed":
            action.help = "seed of the record sampling and of --fraction (default 0)"
    g = p.add_argument_group("stage 2: patching, head attribution, profiles")
    g.add_argument("--out", help="run directory (created, or resumed); default runs/<dataset>-<model>")
    g.add_argument("--triples", help="skip stage 1: a triples.jsonl (e.g. from another run) to attribute")
    g.add_argument(
        "--method", default="auto", choices=["auto", "exact", "atp", "naive"],
        help=f"head attribution: exact engine, AtP screen (+ --refine), naive loop; auto = exact up to "
        f"{AUTO_EXACT_MAX_HEADS} heads, else atp",
    )
    g.add_argument("--refine", type=int, help="atp: re-score the top N heads per set and group exactly (default 3K; 0 = off)")
    g.add_argument("--k", "-k", type=int, default=10, help="top-K positive and negative heads per profile")
    g.add_argument("--batch", type=int, default=4, help="triples per attribution batch")
    g.add_argument("--max-rows", type=int, default=32,
                   help="rows (input x ablated head, or patched position) per replay batch; lower it to save memory")
    g.add_argument("--patching", type=int, default=16, help="activation-patch this many triples (0 = skip)")
    g.add_argument("--name-prefix", help="profile names are <prefix>-<level>; default: the dataset name")
    g.add_argument("--per-subtype", action="store_true", help="also write one profile per subtype (Table 13)")
    g.add_argument("--overlap-triples", type=int, default=32, help="triples used for the head/bbox overlap table")
    g.add_argument(
        "--no-eq4-filter", action="store_true",
        help="debugging: keep every edited pair as a triple, even when the edit does not flip the model",
    )
    g.add_argument("--restart", action="store_true", help="discard the run dir's recorded results and start over")
    g.add_argument("--device", default="cpu")
    g.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])


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
    config.update(dataset=args.dataset, model=str(model_ref), triples=args.triples, limit=args.limit,
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
        stage1 = {"source": str(args.triples), "triples": len(all_triples)}
    else:
        all_triples, stage1 = run_stage1(args, run, engine, model_dir, say)
    timings["stage1_s"] = time.time() - t0
    triples = subsample(all_triples, cfg.fraction, cfg.seed)
    from calibrate.records import write_jsonl

    write_jsonl(run.sub("triples.jsonl"), triples)
    counts = _subtype_counts(triples)
    say(f"stage 2 on {len(triples)} triples (of {len(all_triples)}): " + ", ".join(f"{k}={v}" for k, v in counts.items()))
    if not triples:
        raise UserError(
            "no Eq-4 triples to attribute (the model never answers right on a clean image and wrong on its edit); "
            "nothing to calibrate. Use more data, a model that answers the questions, or --no-eq4-filter to debug"
        )

    # ---- stage 2: patching ----
    t0 = time.time()
    patch_summaries = {}
    if cfg.patching:
        patcher = ActivationPatcher(engine, max_rows=args.max_rows)
        patch_summaries = run_patching(patcher, triples, run, cfg.patching, cfg.per_subtype)
    timings["patching_s"] = time.time() - t0

    # ---- stage 2: attribution ----
    t0 = time.time()
    attributor = HeadAttributor(engine, max_rows=args.max_rows)
    shape = (attributor.L, attributor.H)
    method = cfg.resolved_method(attributor.L * attributor.H)
    screen = run.log(f"attribution-{method}")
    attribute_all(attributor, triples, screen, method, cfg.batch, f"head attribution ({method})")
    logs = [screen]
    allowed = None
    method_label = {"exact": "mean-ablation exact", "naive": "mean-ablation naive", "atp": "mean-ablation atp"}[method]
    if method == "atp" and cfg.refine_n() > 0:
        screen_scores = group_scores(triples, _deltas(triples, [screen], shape), shape, cfg.per_subtype)
        cand_path = run.sub("candidates.json")
        candidates = candidates_from_screen(screen_scores, cfg.refine_n())
        if cand_path.exists():
            stored = [tuple(x) for x in json.loads(cand_path.read_text())["heads"]]
            if stored != candidates:
                raise UserError(f"{cand_path}: candidates differ from the recorded screen; the run dir is inconsistent")
        else:
            atomic_write_json(cand_path, {"refine": cfg.refine_n(), "heads": [list(c) for c in candidates]})
        refine = run.log("attribution-refine")
        attribute_all(attributor, triples, refine, "exact", cfg.batch, f"exact refine of {len(candidates)} heads",
                      heads=candidates)
        logs.append(refine)
        allowed = np.zeros(shape, dtype=bool)
        for l, h in candidates:
            allowed[l, h] = True
        method_label = f"mean-ablation atp screen + exact refine of top {cfg.refine_n()}"
    timings["attribution_s"] = time.time() - t0
    scores = group_scores(triples, _deltas(triples, logs, shape), shape, cfg.per_subtype)

    # ---- profiles ----
    paths = write_profiles(run, scores, fingerprint, cfg, method_label, args.dataset, allowed, say)
    profiles = [HeadProfile.model_validate_json(p.read_text()) for p in paths]

    # ---- report ----
    t0 = time.time()
    overlap = report_mod.head_bbox_overlap(engine, triples, profiles, max_triples=args.overlap_triples)
    timings["overlap_s"] = time.time() - t0
    timings["total_s"] = time.time() - t_start
    report_mod.write_report(
        run, model=str(model_ref), dataset=args.dataset, stage1=stage1, counts=counts, scores=scores,
        profiles=profiles, paths=paths, patching=patch_summaries, overlap=overlap, timings=timings, method=method_label,
        triples_total=len(all_triples),
    )
    say(f"wrote {run.path / 'report.md'}")
    return 0


def _subtype_counts(triples: Sequence[Triple]) -> dict[str, int]:
    out: dict[str, int] = {}
    for t in triples:
        out[t.record.subtype or "-"] = out.get(t.record.subtype or "-", 0) + 1
    return dict(sorted(out.items()))


def run_stage1(args, run: Run, engine, model_dir: pathlib.Path, say) -> tuple[list[Triple], dict]:
    """Stage 1 (issue 5): dataset -> counterfactual questions, masks, edits, quality gate -> Eq-4 triples.

    Runs `calibrate.edit.EditJob` into <run>/stage1/edits and `calibrate.select` into <run>/stage1/triples (both
    resumable run dirs of their own). The quality gate's feature-drift check uses the calibrated model's own
    vision tower (the engine already loaded). `--fraction` is left to stage 2.
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
    return triples, stage1


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
